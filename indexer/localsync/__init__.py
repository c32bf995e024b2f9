"""Local sync (``python -m indexer sync``): Lambda's event source mapping for a table's stream, run on one machine.

Not part of the Lambda package: it emulates what AWS runs around the function.
"""
