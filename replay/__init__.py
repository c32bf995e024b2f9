"""Batch operations on the index: full rebuild from the table, audit, dead-letter redrive."""
