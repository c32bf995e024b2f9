"""Local sync's checkpoints: per stream and shard, the last sequence number fully processed.

A small JSON file, replaced atomically (write, fsync, rename) after every batch, so a crash
leaves either the old or the new state and a restart resumes after the last processed record.
Keyed by stream ARN: moto gives every table's shard the same id, and a re-created table gets
a new stream. A lock beside the file keeps two local syncs from sharing it.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import SettingsError

FORMAT_VERSION = 1
TRIM_HORIZON, LATEST = "TRIM_HORIZON", "LATEST"


@dataclass
class ShardState:
    #: Where reading starts while there is no checkpoint.
    start: str = TRIM_HORIZON
    #: The last sequence number processed (acknowledged or sent to the on-failure destination).
    checkpoint: str | None = None
    #: Closed and read to its end: its children may be read.
    finished: bool = False


class Checkpoints:
    """The state file, loaded once, saved after each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._streams: dict[str, dict[str, ShardState]] = {}
        self._lock: IO[str] | None = None

    def open(self) -> "Checkpoints":
        """Lock and load the file (a missing file is an empty state). Errors name ``--state``."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = open(f"{self.path}.lock", "a", encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"--state {self.path}: cannot create it here ({exc.strerror})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise SettingsError(f"--state {self.path} is in use by another local sync") from None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self
        except OSError as exc:
            raise SettingsError(f"--state {self.path}: cannot read it ({exc.strerror})") from None
        self._streams = _parse(text, self.path)
        return self

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def knows(self, stream_arn: str) -> bool:
        return stream_arn in self._streams

    def shards(self, stream_arn: str) -> dict[str, ShardState]:
        """The mutable shard states of one stream (created empty)."""
        return self._streams.setdefault(stream_arn, {})

    def save(self) -> None:
        """Write the whole state atomically."""
        body = {
            "version": FORMAT_VERSION,
            "streams": {
                arn: {"shards": {shard: asdict(state) for shard, state in shards.items()}}
                for arn, shards in self._streams.items()
            },
        }
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _parse(text: str, path: Path) -> dict[str, dict[str, ShardState]]:
    try:
        body: Any = json.loads(text)
        if body.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown version {body.get('version')!r}")
        return {
            arn: {shard: ShardState(**state) for shard, state in stream["shards"].items()}
            for arn, stream in body["streams"].items()
        }
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise SettingsError(f"--state {path} is not a local sync state file ({exc}); move it away to start over") from None
