"""``python -m replay --full``: rebuild the index from a table scan while writes go on.

The protocol (README, "Replay while live"):

1. Create a new physical index and name it the rebuild target (alias ``<alias>-rebuild``), then
   wait longer than the live path caches its targets: from then on every live change is written
   to the serving index *and* to the new one, through the same ordering guard, deletes as
   tombstones.
2. Scan the table (parallel segments, consistent reads) and write each item to the new index
   only where nothing exists yet (``create``), as a snapshot older than any stream record:
   whatever is there came from the live path, which also delivers every later change in order.
3. When the scan is done, move the alias in one ``_aliases`` call, drop the rebuild alias and,
   after the live path's cache has expired, the old index (unless ``--keep-old``).

Search keeps answering from the old index until the atomic swap. An interrupted run leaves
the alias untouched; the next run removes what it left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import structlog

from indexer.apply import Deadline, RetryPolicy, apply
from indexer.errors import ClusterError, RecordError, ReplayAborted, RetryableError, SettingsError
from indexer.ids import document_id
from indexer.layout import (
    ALIAS_FILTER, META_KEY, TTL_KEY, FixedTargets, alias_indices, index_body, rebuild_alias, ttls_recorded,
)
from indexer.records import SNAPSHOT_SEQUENCE, Change, upsert
from indexer.search import Store
from indexer.settings import mapping_file

from . import table as tables
from .progress import Progress
from .wiring import Wiring, wire

log = structlog.get_logger("replay.full")

HEARTBEAT_SECONDS = 10.0
#: A building index whose heartbeat is older than this belongs to a replay that died.
ORPHAN_AFTER_SECONDS = 60.0
#: Test hook: the path of a file the scan waits for after each written page, until it exists.
HOLD_VARIABLE = "REPLAY_HOLD_FILE"


@dataclass(frozen=True)
class FullOptions:
    """``--full``: how to rebuild. Each field is the flag of the same name (``replay.cli``
    builds this from the flags given); the defaults here are the flags' defaults."""

    segments: int = tables.DEFAULT_SEGMENTS
    bulk_size: int = 1000
    #: Items read per second, at most (None: as fast as the table answers).
    rate: float | None = None
    #: A JSON file with settings and mappings for the new index (None: ``INDEX_MAPPING``).
    mapping: str | None = None
    keep_old: bool = False
    migrate: bool = False
    clean_orphans: bool = False
    progress: bool = True


Say = Callable[[str], None]


def silent(line: str) -> None:
    """A ``say`` that says nothing (the CLI passes one that prints)."""


@dataclass
class Counts:
    scanned: int = 0
    created: int = 0
    stale: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(frozen=True)
class Existing:
    """The alias's indices as found before a rebuild."""

    serving: list[str]
    concrete: bool
    orphans: list[str]
    running: list[str]
    kept: list[str]


def new_index_name(alias: str, now: datetime) -> str:
    return f"{alias}-r{now:%Y%m%d%H%M%S%f}"[:-3]


def _meta(index_meta: Mapping[str, Any]) -> dict[str, Any]:
    return (index_meta.get("mappings", {}).get("_meta") or {}).get(META_KEY) or {}


def _alive(meta: Mapping[str, Any], now: float) -> bool:
    """Whether the replay that is building an index is still running."""
    if meta.get("host") == socket.gethostname() and isinstance(meta.get("pid"), int):
        try:
            os.kill(meta["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return now - float(meta.get("heartbeat", 0)) < ORPHAN_AFTER_SECONDS


def existing(w: Wiring) -> Existing:
    """What the alias points at, and which rebuilt indices are orphaned, running or kept."""
    alias = w.alias
    serving = alias_indices(w.store, alias, 30).serving
    concrete = not serving and w.store.is_concrete_index(alias, 30)
    indices = w.store.indices(f"{alias}-r*", 30)
    now = time.time()
    orphans, running, kept = [], [], []
    for name, body in sorted(indices.items()):
        if name in serving:
            continue
        meta = _meta(body)
        if not meta:
            # No bookkeeping at all: auto-created by a stray write to a build deleted meanwhile
            # (an abandoned one); every index a replay creates carries its _meta from the start.
            orphans.append(name)
        elif meta.get("state") == "building":
            (running if _alive(meta, now) else orphans).append(name)
        elif meta.get("state") == "complete":
            kept.append(name)
    return Existing(serving, concrete, orphans, running, kept)


@dataclass(frozen=True)
class Orphans:
    """``--list-orphans``: what an alias serves and what interrupted or kept rebuilds left."""

    alias: str
    found: Existing
    #: The orphans deleted (``--clean-orphans``).
    removed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"removing {name}, left by an interrupted replay" for name in self.removed]
        lines.append(f"alias {self.alias!r} serves: {', '.join(self.found.serving) or '(nothing)'}")
        for label, names in (("orphaned (interrupted rebuild)", self.found.orphans),
                             ("being built by a running replay", self.found.running),
                             ("kept from earlier rebuilds (--keep-old)", self.found.kept)):
            lines += [f"{label}: {name}" for name in names]
        return lines


def list_orphans(env: Mapping[str, str], clean: bool = False) -> Orphans:
    """``--list-orphans``: what interrupted or kept rebuilds left behind; with ``clean``
    (``--clean-orphans``), the orphans are deleted first."""
    w = wire(env)
    found = existing(w)
    if not clean:
        return Orphans(w.alias, found)
    removed = remove_orphans(w, found)
    return Orphans(w.alias, existing(w), removed)


def remove_orphans(w: Wiring, found: Existing, say: Say = silent) -> list[str]:
    """Delete the indices that dead replays (or stray writes to their builds) left behind."""
    for orphan in found.orphans:
        log.warning("removing_orphan", index=orphan)
        say(f"removing {orphan}, left by an interrupted replay")
        w.store.delete_indices([orphan], 60)
    return list(found.orphans)


def scan_page_size(bulk_size: int, rate: float | None, segments: int) -> int:
    """Items per scan request. A page is read at once, so with ``--rate`` a page holds about one
    second of a segment's share: the reads stay smooth, not a burst of a thousand then a wait."""
    size = min(bulk_size, 1000)
    if rate:
        size = max(1, min(size, int(rate / segments)))
    return size


def announce_wait(w: Wiring, say: Say = silent) -> float:
    """How long live writers may keep an old view of the targets, plus a second.

    Our TARGETS_TTL_SECONDS is the operator's shell's; the deployed handler's may differ. The
    handler records its own in the index it creates and caps its cache at what the serving
    index records, so waiting for the longest of ours and the recorded ones is enough."""
    own = w.settings.targets_ttl
    definitions = w.store.definitions(alias_indices(w.store, w.alias, 30).serving, 30)
    longest = max([own, *ttls_recorded(definitions).values()])
    if longest > own:
        say(f"warning: TARGETS_TTL_SECONDS here is {own:g}s but the live path was told {longest:g}s; "
            f"waiting for {longest:g}s")
        log.warning("targets_ttl_mismatch", here=own, recorded=longest)
    return longest + 1.0


@dataclass(frozen=True)
class Rebuilt:
    """What a finished rebuild did."""

    alias: str
    index: str
    scanned: int
    created: int
    stale: int
    #: (item key, reason) of the items that could not become documents.
    failed: list[tuple[str, str]]
    seconds: float
    #: The indices the alias served before the swap, and whether they were kept.
    previous: list[str]
    kept_previous: bool

    def lines(self) -> list[str]:
        rate = self.scanned / self.seconds if self.seconds > 0 else 0.0
        lines = [f"alias {self.alias!r} now serves {self.index}",
                 f"scanned {self.scanned} items in {self.seconds:.1f}s ({rate:.0f} items/s): {self.created} written, "
                 f"{self.stale} already newer from live writes, {len(self.failed)} not indexable"]
        if self.previous:
            lines.append(f"previous index {', '.join(self.previous)} {'kept' if self.kept_previous else 'deleted'}")
        lines += [f"  not indexed: {key}: {reason[:300]}" for key, reason in self.failed[:10]]
        return lines


def _load_mapping(options: FullOptions, w: Wiring) -> dict[str, Any] | None:
    if not options.mapping:
        return w.settings.index_mapping
    return mapping_file(options.mapping, "--mapping")


class _Heartbeat(threading.Thread):
    """Keeps the building index's ``_meta`` fresh so a rerun can tell we are alive."""

    def __init__(self, store: Store, index: str, meta: dict[str, Any]) -> None:
        super().__init__(daemon=True, name="replay-heartbeat")
        self.store, self.index, self.meta = store, index, meta
        self.stopped = threading.Event()

    def beat(self, **changes: Any) -> None:
        self.meta.update(changes, heartbeat=time.time())
        self.store.put_meta(self.index, {META_KEY: self.meta}, 30)

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except (RetryableError, ClusterError) as exc:  # the next beat retries; the scan goes on
                log.warning("heartbeat_failed", error=str(exc))


def run(options: FullOptions, env: Mapping[str, str], say: Say = silent) -> Rebuilt:
    """Rebuild the alias's index from the table; ``say`` narrates each step as it happens."""
    w = wire(env)
    mapping = _load_mapping(options, w)
    if w.table.stream_arn is None:
        say(f"warning: table {w.table.name!r} has no stream: live sync cannot follow it; "
            "the rebuilt index will go stale")
        log.warning("table_without_stream", table=w.table.name)
    found = existing(w)
    if found.concrete and not options.migrate:
        raise SettingsError(
            f"INDEX_NAME {w.alias!r} is a concrete index, not an alias: rerun with --migrate to rebuild "
            "behind an alias of that name (the concrete index is deleted at the swap)"
        )
    if found.running:
        raise SettingsError(
            f"another replay is building {', '.join(found.running)} (its heartbeat is recent); "
            "wait for it to finish"
        )
    remove_orphans(w, found, say)
    return Rebuild(w, options, mapping, say).run()


class Rebuild:
    def __init__(self, w: Wiring, options: FullOptions, mapping: dict[str, Any] | None, say: Say = silent) -> None:
        self.w = w
        self.options = options
        self.mapping = mapping
        self.say = say
        self.index = new_index_name(w.alias, datetime.now(timezone.utc))
        #: Tells this run's index from another created under the same name (auto-created by a
        #: stray write after a rerun deleted ours as orphaned).
        self.run_id = uuid.uuid4().hex
        self.uuid = ""
        self.counts = Counts()
        self.stop = threading.Event()
        self.policy = RetryPolicy.of(w.settings)
        self.wait = announce_wait(w, say)

    def run(self) -> Rebuilt:
        previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
        heartbeat: _Heartbeat | None = None
        try:
            try:
                # Inside the abandon path: a create whose answer was lost, or a failure right
                # after it, must not leave an index that looks like a live replay's build.
                heartbeat = self._create()
                self._announce(heartbeat)
                progress = Progress(f"replay {self.w.table.name}", self.w.table.item_count,
                                    enabled=self.options.progress)
                try:
                    self._scan(progress)
                finally:
                    progress.close()
                heartbeat.stopped.set()
                old = self._swap()
            except BaseException:
                self.stop.set()
                if heartbeat is not None:
                    heartbeat.stopped.set()
                self._abandon()
                raise
            # From here on the alias serves the new index: nothing may delete it.
            self._mark_complete(heartbeat)
            self._retire(old)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return self._report(old, progress.elapsed())

    def _create(self) -> _Heartbeat:
        w = self.w
        body = index_body(self.mapping)
        settings = body.setdefault("settings", {})
        # No periodic refresh while bulk loading; restored before the swap.
        settings.setdefault("index", {})["refresh_interval"] = "-1"
        meta = {"state": "building", "table": w.table.name, "host": socket.gethostname(),
                "pid": os.getpid(), "run": self.run_id, "started": time.time(), "heartbeat": time.time(),
                TTL_KEY: self.wait - 1.0}
        body["mappings"]["_meta"] = {META_KEY: meta}
        body["aliases"] = {rebuild_alias(w.alias): {}}
        w.store.create_index(self.index, body, 60)
        self.uuid = _uuid(w.store.indices(self.index, 30).get(self.index, {}))
        log.info("rebuild_started", index=self.index, alias=w.alias, table=w.table.name)
        self.say(f"building {self.index} for alias {w.alias!r} from table {w.table.name!r}")
        heartbeat = _Heartbeat(w.store, self.index, meta)
        heartbeat.start()
        return heartbeat

    def _announce(self, heartbeat: _Heartbeat) -> None:
        """Wait until every live writer has seen the rebuild target (their cache has expired),
        then record when the scan starts: every item it reads is at least that recent."""
        wait = self.wait
        self.say(f"waiting {wait:.0f}s for live writers to start writing to {self.index} too")
        if self.stop.wait(wait):
            raise KeyboardInterrupt
        heartbeat.beat(snapshot_started=time.time())

    def _scan(self, progress: Progress) -> None:
        segments = self.options.segments
        rate = self.options.rate
        limiter = tables.RateLimiter(rate)
        page_size = scan_page_size(self.options.bulk_size, rate, segments)
        with ThreadPoolExecutor(max_workers=segments, thread_name_prefix="scan") as pool:
            futures = [pool.submit(self._segment, n, segments, page_size, limiter, progress)
                       for n in range(segments)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self.stop.set()
                raise

    def _segment(self, segment: int, segments: int, page_size: int, limiter: tables.RateLimiter,
                 progress: Progress) -> None:
        w = self.w
        pending: list[dict[str, Any]] = []
        pages = tables.scan_segment(w.dynamodb, w.table.name, segment, segments, page_size, limiter, self.stop)
        for page in pages:
            with self.counts.lock:
                self.counts.scanned += len(page)
            pending += page
            if len(pending) >= self.options.bulk_size:
                self.write_snapshot(pending, progress, len(page))
                pending = []
                self._hold_for_tests()
            else:
                progress.advance(len(page))
        if pending:
            self.write_snapshot(pending, progress, 0)

    def write_snapshot(self, items: list[dict[str, Any]], progress: Progress, scanned: int) -> None:
        """Write scanned items (DynamoDB JSON) to the new index as snapshots: each lands only
        where the live path has written nothing. Any rebuild source calls this."""
        w = self.w
        changes: list[Change] = []
        for item in items:
            try:
                doc_id = document_id(w.table.keys_of(item))
                changes.append(upsert(w.alias, doc_id, item, SNAPSHOT_SEQUENCE))
            except (RecordError, KeyError) as exc:
                reason = exc.message if isinstance(exc, RecordError) else f"missing key attribute {exc}"
                self._failed(str({k: item.get(k) for k in w.table.key_names}), reason)
        result = apply(changes, w.store, FixedTargets([self.index]), Deadline.after(600), self.policy)
        if result.unresolved:
            raise ReplayAborted(f"{len(result.unresolved)} documents could not be written: {result.last_error}")
        for change, error in result.dead:
            self._failed(change.doc_id, f"{error.kind}: {error.message}")
        with self.counts.lock:
            self.counts.created += len(result.applied)
            self.counts.stale += len(result.stale)
        progress.advance(scanned, created=len(result.applied), live_newer=len(result.stale))

    def _hold_for_tests(self) -> None:
        """With REPLAY_HOLD_FILE set, every segment waits after each written page until that
        file exists: tests interrupt a replay that is provably mid-scan, never racing the scan."""
        hold = os.environ.get(HOLD_VARIABLE)
        if not hold or os.path.exists(hold):
            return
        log.warning("replay_holding", file=hold, written=self.counts.created)
        while not os.path.exists(hold) and not self.stop.wait(0.05):
            pass

    def _failed(self, key: str, reason: str) -> None:
        with self.counts.lock:
            self.counts.failed.append((key, reason))
        log.warning("item_not_indexed", key=key, reason=reason[:500])

    def _still_ours(self) -> None:
        """Refuse to swap onto anything but this run's own, complete build: a rerun may have
        deleted it as orphaned while we were paused, and a stray write re-created the name."""
        body = self.w.store.indices(self.index, 30).get(self.index)
        if body is None:
            raise ReplayAborted(f"{self.index} was deleted while this replay ran (another replay "
                                "took it for orphaned); the alias was not moved")
        if _uuid(body) != self.uuid or _meta(body).get("run") != self.run_id:
            raise ReplayAborted(f"{self.index} is no longer the index this replay built (it was deleted and "
                                "re-created while this replay was paused); the alias was not moved")
        if self.stop.is_set():
            raise ReplayAborted("the scan was stopped before it finished")

    def _swap(self) -> list[str]:
        """Move the alias to the new index in one call; returns the indices it left."""
        w = self.w
        w.store.put_settings(self.index, {"index": {"refresh_interval": None}}, 60)
        w.store.refresh(self.index, 300)
        self._still_ours()
        found = existing(w)  # the serving index may have been created meanwhile by the live path
        # ``must_exist`` makes the call fail as a whole when our index lost its rebuild alias
        # (deleted and re-created) or an old index lost the alias (another replay swapped).
        actions: list[dict[str, Any]] = [
            {"add": {"index": self.index, "alias": w.alias, "filter": ALIAS_FILTER, "is_write_index": True}},
            {"remove": {"index": self.index, "alias": rebuild_alias(w.alias), "must_exist": True}},
        ]
        actions += [{"remove": {"index": old, "alias": w.alias, "must_exist": True}} for old in found.serving]
        if found.concrete:
            actions.append({"remove_index": {"index": w.alias}})
        try:
            w.store.update_aliases(actions, 60)
        except RetryableError:
            # The answer was lost, not necessarily the swap: look before deciding it failed.
            if not self._serving():
                raise
        log.info("alias_swapped", alias=w.alias, index=self.index, previous=found.serving)
        return found.serving

    def _serving(self) -> bool:
        """Whether the alias now points at this run's index."""
        return self.index in self.w.store.aliases([self.w.alias], 30)

    def _mark_complete(self, heartbeat: _Heartbeat) -> None:
        try:
            heartbeat.beat(state="complete", finished=time.time())
        except (RetryableError, ClusterError) as exc:  # the alias moved; the mark is only a label
            log.warning("complete_mark_failed", index=self.index, error=str(exc))

    def _abandon(self) -> None:
        """Interrupted or failed: drop the half-built index, unless the alias already serves it
        (the swap landed and only its answer or a later step failed) or we cannot tell."""
        try:
            if self._serving():
                self.say(f"replay stopped after the swap; alias {self.w.alias!r} serves {self.index}")
                return
            self.w.store.delete_indices([self.index], 60)
            self.say(f"replay stopped; {self.index} removed; alias {self.w.alias!r} unchanged")
        except (RetryableError, ClusterError) as exc:
            self.say(f"replay stopped; could not remove {self.index} ({exc}); the next run will")

    def _retire(self, old: list[str]) -> None:
        if not old or self.options.keep_old:
            return
        # Live writers may still hold the old index in their target cache for a while.
        time.sleep(self.wait)
        try:
            self.w.store.delete_indices(old, 60)
        except (RetryableError, ClusterError) as exc:
            # The swap is done; an old index left over is listed as kept and can be deleted by hand.
            self.say(f"could not delete the previous index {', '.join(old)} ({exc}); delete it by hand")
            log.warning("retire_failed", indices=old, error=str(exc))

    def _report(self, old: list[str], seconds: float) -> Rebuilt:
        c = self.counts
        rate = c.scanned / seconds if seconds > 0 else 0.0
        log.info("replay_done", alias=self.w.alias, index=self.index, scanned=c.scanned, created=c.created,
                 stale=c.stale, failed=len(c.failed), seconds=round(seconds, 2), items_per_second=round(rate, 1))
        return Rebuilt(alias=self.w.alias, index=self.index, scanned=c.scanned, created=c.created, stale=c.stale,
                       failed=list(c.failed), seconds=seconds, previous=old, kept_previous=self.options.keep_old)


def _uuid(body: Mapping[str, Any]) -> str:
    return str(((body.get("settings") or {}).get("index") or {}).get("uuid", ""))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
