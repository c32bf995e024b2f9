"""Failure types, split by what the caller must do about them.

Every exception class the product raises on purpose lives here, so a caller can see the whole
hierarchy in one place and the CLIs can map each branch to one exit code
(``indexer.cliutil``): :class:`SettingsError` is bad flags or settings (2), :class:`ClusterError`
an unreachable or refusing search cluster (3), any other :class:`IndexerError` a run that failed
(1). :class:`RetryableError` is the one "try again" type: whoever catches it waits and repeats.
"""

from __future__ import annotations

from typing import Any


class IndexerError(Exception):
    """Base of every failure this package raises on purpose."""


# -- configuration ------------------------------------------------------------------------------


class SettingsError(IndexerError):
    """A setting is missing or invalid; the message names it and says what to do."""


class TableNotFound(SettingsError):
    """The table named by TABLE_NAME (or --table) does not exist where boto3 points."""


# -- one record ---------------------------------------------------------------------------------


class RecordError(IndexerError):
    """One stream record cannot be indexed as it is: it goes to the dead-letter queue.

    `kind` is a short machine-readable class for the dead-letter message
    (e.g. ``malformed_record``, ``unconvertible_value``, ``document_parsing_exception``).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class ConversionError(RecordError):
    """A DynamoDB value that cannot become JSON; the message names the attribute path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__("unconvertible_value", f"attribute {path}: {reason}")
        self.path = path


# -- try again ----------------------------------------------------------------------------------


class RetryableError(IndexerError):
    """A transient failure (connection, timeout, throttling, 429, 502/503/504, an expired shard
    iterator): the same call may succeed later, so the caller waits and tries again."""


class ReadbackFailed(RetryableError):
    """Redrive could not read a record back (throttling, network, permissions): the message stays
    in the queue for a later run."""


class TableMissing(ReadbackFailed):
    """The record's table does not exist (any more) where boto3 points."""


# -- the search cluster -------------------------------------------------------------------------


class ClusterError(IndexerError):
    """The cluster cannot be reached or refused the request for a reason retrying in this
    invocation won't fix (authentication, an alias that is a concrete index, a malformed
    request). Nothing is acknowledged: Lambda redelivers the batch once the cause is fixed."""


class AuthError(ClusterError):
    """The cluster refused our credentials (401) or their rights (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpError(ClusterError):
    """A non-2xx answer that is neither transient nor an authentication failure."""

    def __init__(self, status: int, body: Any, what: str) -> None:
        self.status = status
        self.body = body
        reason = body.get("error") if isinstance(body, dict) else body
        if isinstance(reason, dict):
            reason = f"{reason.get('type')}: {reason.get('reason')}"
        super().__init__(f"{what}: the cluster answered {status} ({str(reason)[:300]})")


class MissingIndex(IndexerError):
    """A target index no longer exists: targets must be looked up again before writing."""


# -- queues, streams, rebuilds ------------------------------------------------------------------


class DeadLetterError(IndexerError):
    """The dead-letter queue could not take a message; the record must be retried by Lambda."""


class QueueError(IndexerError):
    """SQS refused or could not be reached while redriving; the run stops (exit 1)."""


class StreamGone(IndexerError):
    """The stream no longer exists (the table was deleted, or its stream disabled)."""


class RangeGone(IndexerError):
    """A dead-lettered range's records are no longer in the stream (or never were)."""


class Refused(IndexerError):
    """A dead letter this redrive run must not apply: the stream does not vouch for it."""


class ReplayAborted(IndexerError):
    """The rebuild could not finish (the cluster kept failing); the alias was not moved."""


class ExportError(ReplayAborted):
    """A table export failed, or its files do not match its manifest; the alias was not moved."""
