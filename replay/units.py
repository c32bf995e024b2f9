"""Units of work of a rebuild: one export data file or one scan segment, as plain JSON-able data.

A unit says where to read and where to resume; a worker (replay/worker.py) loads it into the index
being built within a time budget and answers with a :class:`Done`, whose ``continuation`` is the
same unit moved past what was loaded. The same shapes travel through a process pool's pipes and
through Step Functions' Distributed Map, so they are dicts with a ``kind`` on the wire.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Union

from indexer.errors import ReplayAborted, SettingsError


@dataclass(frozen=True)
class ScanUnit:
    """One segment of a parallel Scan; ``start_key`` is the ``ExclusiveStartKey`` to resume at."""

    segment: int
    segments: int
    start_key: dict[str, Any] | None = None
    kind: str = "scan"

    def resumed(self, start_key: dict[str, Any]) -> "ScanUnit":
        return replace(self, start_key=start_key)


@dataclass(frozen=True)
class ExportUnit:
    """One data file of a table export, its manifest's item count and checksum; ``skip`` lines
    were loaded by an earlier slice (the file is re-read and re-checked whole every time)."""

    bucket: str
    key: str
    item_count: int
    md5: str
    skip: int = 0
    kind: str = "export"

    def resumed(self, skip: int) -> "ExportUnit":
        return replace(self, skip=skip)


Unit = Union[ScanUnit, ExportUnit]


@dataclass
class Done:
    """What a worker did with one slice of a unit."""

    read: int = 0
    created: int = 0
    #: Already in the index: written first by the live path (or by an earlier run of the unit).
    stale: int = 0
    #: (key, reason) of items that could not be indexed.
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: Where to resume, when the time budget ran out first; None when the unit is finished.
    continuation: Unit | None = None
    #: Documents written while live writers switched to the index, replaced (replay/transition.py).
    replaced: int = 0
    #: Of those, the ones whose item was read from the table again.
    read_again: int = 0

    def add(self, other: "Done") -> None:
        self.read += other.read
        self.created += other.created
        self.stale += other.stale
        self.refused += other.refused
        self.replaced += other.replaced
        self.read_again += other.read_again


def unit_to_wire(unit: Unit) -> dict[str, Any]:
    return asdict(unit)


def unit_from_wire(data: Any) -> Unit:
    """A unit from its JSON form; SettingsError on anything else (it may come from a state machine)."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"a unit of work must be an object, got {type(data).__name__}")
    try:
        if data.get("kind") == "scan":
            unit: Unit = ScanUnit(int(data["segment"]), int(data["segments"]), data.get("start_key") or None)
            if not 0 <= unit.segment < unit.segments:
                raise ValueError("segment out of range")
            return unit
        if data.get("kind") == "export":
            return ExportUnit(str(data["bucket"]), str(data["key"]), int(data["item_count"]),
                              str(data["md5"]), int(data.get("skip", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SettingsError(f"malformed unit of work ({exc}): {str(dict(data))[:200]}") from None
    raise SettingsError(f"unknown unit kind {data.get('kind')!r}")


def done_to_wire(done: Done) -> dict[str, Any]:
    return {"read": done.read, "created": done.created, "stale": done.stale,
            "replaced": done.replaced, "read_again": done.read_again,
            "refused": [list(pair) for pair in done.refused],
            "continuation": unit_to_wire(done.continuation) if done.continuation else None}


def done_from_wire(data: Mapping[str, Any]) -> Done:
    continuation = data.get("continuation")
    return Done(int(data["read"]), int(data["created"]), int(data["stale"]),
                [(str(k), str(r)) for k, r in data.get("refused", [])],
                unit_from_wire(continuation) if continuation else None,
                int(data.get("replaced", 0)), int(data.get("read_again", 0)))


def check_read(expected: int | None, read: int) -> None:
    """An export's items read must add up to its manifest before the alias may move."""
    if expected is not None and read != expected:
        raise ReplayAborted(f"the export's manifest lists {expected} items but {read} were read")


def scan_units(segments: int) -> list[ScanUnit]:
    """A parallel Scan as units: one per segment."""
    return [ScanUnit(segment, segments) for segment in range(segments)]
