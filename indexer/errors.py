"""Failure types, split by what the caller must do about them."""

from __future__ import annotations


class IndexerError(Exception):
    """Base of every failure this package raises on purpose."""


class SettingsError(IndexerError):
    """A setting is missing or invalid; the message names it and says what to do."""


class RecordError(IndexerError):
    """One stream record cannot be indexed as it is: it goes to the dead-letter queue.

    `kind` is a short machine-readable class for the dead-letter message
    (e.g. ``malformed_record``, ``unconvertible_value``, ``document_parsing_exception``).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class RetryableError(IndexerError):
    """A transient failure (connection, timeout, 429, 502/503/504): try again later."""


class ClusterError(IndexerError):
    """The cluster refused the request for a reason retrying in this invocation won't fix
    (authentication, an alias that is a concrete index, a malformed request). Nothing is
    acknowledged: Lambda redelivers the batch once the cause is fixed."""


class DeadLetterError(IndexerError):
    """The dead-letter queue could not take a message; the record must be retried by Lambda."""
