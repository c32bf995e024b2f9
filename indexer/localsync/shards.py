"""Shard lineage, as pure decisions: which shards of a stream may be read now.

DynamoDB splits and rolls shards over; a parent's records are older than its children's, so
reading a child only after its parent is done keeps every item's changes in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Shard:
    """A shard as ``DescribeStream`` lists it."""

    id: str
    parent: str | None
    starting: int
    closed: bool


def shard_of(description: dict[str, Any]) -> Shard:
    numbers = description.get("SequenceNumberRange") or {}
    return Shard(
        id=description["ShardId"],
        parent=description.get("ParentShardId") or None,
        starting=int(numbers.get("StartingSequenceNumber") or 0),
        closed=bool(numbers.get("EndingSequenceNumber")),
    )


def ready_shards(shards: Iterable[Shard], finished: set[str]) -> list[Shard]:
    """Shards that may be read now, oldest first: not finished, and whose parent is finished
    or gone from the stream (trimmed after 24 hours). A parent's records are older than its
    children's, so reading children only after their parent keeps every item's order."""
    listed = {shard.id for shard in shards}
    return sorted(
        (
            shard
            for shard in shards
            if shard.id not in finished
            and (shard.parent is None or shard.parent not in listed or shard.parent in finished)
        ),
        key=lambda shard: (shard.starting, shard.id),
    )
