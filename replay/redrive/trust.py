"""What one redrive run accepts from its queue: records of one table's streams, for one alias.

Anyone allowed to send to the dead-letter queue controls the messages' content, so nothing in a
message may pick the table to read, the region, the account or the index to write. A run is
bound to ``TABLE_NAME`` (its ARN, so its account and region, as DynamoDB reports it) and to the
alias ``INDEX_NAME``; a message naming anything else is *refused*: reported, moved as is to the
parking queue when there is one, otherwise left in the queue. Pure: the ARN is resolved by the
caller (``Readback.table_arn``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .messages import DeadLetter, StreamRange


@dataclass(frozen=True)
class Binding:
    """The one table (by ARN) and the one alias a redrive run serves."""

    table: str
    #: ``arn:<partition>:dynamodb:<region>:<account>:table/<table>``, from DescribeTable.
    table_arn: str
    alias: str

    @property
    def region(self) -> str:
        return self.table_arn.split(":")[3]

    def stream_problem(self, arn: Any) -> str | None:
        """Why ``arn`` is not a stream of the bound table, or None when it is."""
        prefix = f"{self.table_arn}/stream/"
        if type(arn) is not str:
            return f"it names no stream of table {self.table} (expected {prefix}...)"
        label = arn[len(prefix):]
        if not arn.startswith(prefix) or not label or "/" in label or len(arn) > 1024:
            return (f"{arn[:200]!r} is not a stream of table {self.table!r} in this run's account and region "
                    f"({prefix}...)")
        return None

    def record_problem(self, record: Any) -> str | None:
        """Why a dead-lettered record is not one of the bound table's, or None when it is.

        A record that is not even an object has no table to check: it fails as malformed."""
        if type(record) is not dict:
            return None
        problem = self.stream_problem(record.get("eventSourceARN"))
        if problem:
            return f"eventSourceARN: {problem}"
        region = record.get("awsRegion", self.region)
        if region != self.region:
            return f"awsRegion {str(region)[:40]!r} is not the table's region {self.region!r}"
        return None

    def message_problem(self, found: DeadLetter | StreamRange) -> str | None:
        """Why a message must not be applied by this run, or None when nothing in it names
        another table, stream, region, account or index."""
        if isinstance(found, StreamRange):
            problem = self.stream_problem(found.stream_arn)
            return f"streamArn: {problem}" if problem else None
        named = found.body.get("index")
        if named is not None and named != self.alias:
            return f"index {str(named)[:120]!r} is not this run's alias {self.alias!r}"
        return self.record_problem(found.record)

