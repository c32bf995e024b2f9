"""Keeps an Elasticsearch alias equal to a DynamoDB table by applying its stream as an ordered log."""

__version__ = "0.1.0"
