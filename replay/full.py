"""``python -m replay --full``: rebuild the index from a table scan while writes go on.

The protocol (README, "Replay while live"):

1. Create a new physical index and name it the rebuild target (alias ``<alias>-rebuild``), then
   wait longer than the live path caches its targets: from then on every live change is written
   to the serving index *and* to the new one, through the same ordering guard, deletes as
   tombstones.
2. Scan the table (parallel segments, consistent reads) and write each item to the new index
   only where nothing exists yet (``create``), as a snapshot older than any stream record:
   whatever is there came from the live path, which also delivers every later change in order —
   except what was written while live writers switched, before every one wrote to both: that
   is replaced by the item's state, and swept once the scan is done (replay/transition.py).
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

import structlog

from indexer.apply import BULK_MAX_BYTES, Deadline, RetryPolicy, apply
from indexer.errors import ClusterError, RecordError, ReplayAborted, RetryableError, SettingsError
from indexer.ids import document_id
from indexer.layout import (
    ALIAS_FILTER, META_KEY, TTL_KEY, FixedTargets, alias_indices, index_body, rebuild_alias, ttls_recorded,
)
from indexer.records import SNAPSHOT_SEQUENCE, Change, upsert
from indexer.search import Store
from indexer.settings import mapping_file

from . import sources
from . import table as tables
from .buildsettings import building_body, restored
from .progress import Progress
from .transition import Replaced, Transition, sweep
from .units import check_read
from .wiring import Wiring, wire

if TYPE_CHECKING:
    from .units import Unit

log = structlog.get_logger("replay.full")

HEARTBEAT_SECONDS = 10.0
#: A building index whose heartbeat is older than this belongs to a replay that died.
ORPHAN_AFTER_SECONDS = 60.0


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
    #: scan (parallel Scan) or export (ExportTableToPointInTime to S3).
    source: str = "scan"
    #: local (a process pool here) or stepfunctions (the deployed state machine).
    engine: str = "local"
    #: Worker processes (None: REPLAY_WORKERS, else the number of cores).
    workers: int | None = None
    bulk_bytes: int = BULK_MAX_BYTES
    export_bucket: str | None = None
    export_prefix: str | None = None
    export_kms_key: str | None = None
    export_poll: float = 10.0
    state_machine_arn: str | None = None
    follow_poll: float = 5.0


Say = Callable[[str], None]


def silent(line: str) -> None:
    """A ``say`` that says nothing (the CLI passes one that prints)."""


@dataclass
class Counts:
    scanned: int = 0
    created: int = 0
    stale: int = 0
    replaced: int = 0
    read_again: int = 0
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
    if meta.get("execution"):  # built by the Step Functions engine: alive while its execution runs
        from .statemachine import execution_running

        return execution_running(str(meta["execution"]))
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
    #: Documents written while live writers switched to the new index, replaced by the item's
    #: state (replay/transition.py), and how many of those items were read again for it.
    replaced: int = 0
    read_again: int = 0

    def lines(self) -> list[str]:
        rate = self.scanned / self.seconds if self.seconds > 0 else 0.0
        lines = [f"alias {self.alias!r} now serves {self.index}",
                 f"scanned {self.scanned} items in {self.seconds:.1f}s ({rate:.0f} items/s): {self.created} written, "
                 f"{self.stale} already newer from live writes, {len(self.failed)} not indexable"]
        if self.replaced:
            lines.append(f"replaced {self.replaced} transition documents (written while live writers switched "
                         f"to the new index; {self.read_again} read again from the table)")
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


def run(options: FullOptions, env: Mapping[str, str], say: Say = silent) -> Any:
    """Rebuild the alias's index from the table; ``say`` narrates each step as it happens.
    The result has ``lines()`` and ``failed`` (a :class:`Rebuilt` for the local engine)."""
    sources.check_flags(options)
    if options.engine == "stepfunctions":
        from .stepfunctions import run as run_in_step_functions

        return run_in_step_functions(options, env, say)
    w = wire(env)
    sources.check_table(options, w)
    mapping = _load_mapping(options, w)
    if w.table.stream_arn is None:
        say(f"warning: table {w.table.name!r} has no stream: live sync cannot follow it; "
            "the rebuilt index will go stale")
        log.warning("table_without_stream", table=w.table.name)
    clear_the_way(w, options.migrate, say)
    return Rebuild(w, options, mapping, say, env).run()


def clear_the_way(w: Wiring, migrate: bool, say: Say = silent) -> None:
    """Refuse to start beside a running build or over a concrete index (unless ``migrate``);
    remove what interrupted builds left."""
    found = existing(w)
    if found.concrete and not migrate:
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


@dataclass(frozen=True)
class Written:
    """What one bulk of snapshots did to the new index."""

    created: int
    #: Already there: the live path wrote the item first, and its version wins.
    stale: int
    #: (document id, reason) of items the cluster refused (e.g. a mapping conflict).
    refused: list[tuple[str, str]]
    #: Documents written while live writers switched to the index, replaced (replay/transition.py).
    replaced: int = 0
    #: Of those, the ones whose item was read from the table again.
    read_again: int = 0


def snapshot_changes(alias: str, table: tables.TableInfo,
                     items: list[dict[str, Any]]) -> tuple[list[Change], list[tuple[str, str]]]:
    """Items read from the table (a scan page or an export file) as snapshot writes, and the
    (key, reason) of those that cannot become one. The one place a snapshot is made: the local
    engine's processes and the Step Functions worker both come here."""
    changes: list[Change] = []
    refused: list[tuple[str, str]] = []
    for item in items:
        try:
            doc_id = document_id(table.keys_of(item))
            changes.append(upsert(alias, doc_id, item, SNAPSHOT_SEQUENCE))
        except (RecordError, KeyError) as exc:
            reason = exc.message if isinstance(exc, RecordError) else f"missing key attribute {exc}"
            refused.append((str({k: item.get(k) for k in table.key_names}), reason))
    return changes, refused


def write_snapshots(store: Store, index: str, changes: list[Change], policy: RetryPolicy,
                    max_bytes: int = BULK_MAX_BYTES, sleep: Callable[[float], None] = time.sleep,
                    transition: Transition | None = None) -> Written:
    """Write snapshots to the index being built, each only where nothing is there yet (the guard);
    ReplayAborted when the cluster keeps failing, so the alias is never moved over a gap.

    With ``transition``, a snapshot that finds a document written while live writers were
    switching to the index replaces it instead of losing to it (replay/transition.py)."""
    result = apply(changes, store, FixedTargets([index]), Deadline.after(600), policy, sleep=sleep,
                   max_bytes=max_bytes)
    if result.unresolved:
        raise ReplayAborted(f"{len(result.unresolved)} documents could not be written: {result.last_error}")
    refused = [(change.doc_id, f"{error.kind}: {error.message}") for change, error in result.dead]
    replaced = Replaced()
    if transition is not None and result.stale:
        replaced = transition.replace(store, index, [change.doc_id for change in result.stale], policy, sleep)
    return Written(len(result.applied), len(result.stale) - replaced.count, refused + replaced.refused,
                   replaced.count, replaced.read_again)


def building_meta(w: Wiring, ttl: float, **owner: Any) -> dict[str, Any]:
    """The ``_meta`` a build starts with: who owns it (``owner``: host and pid, or a Step Functions
    execution), a run id that tells it from an index re-created under its name, the targets TTL the
    live path was told (the next replay waits as long), and ``snapshot_started``.

    ``snapshot_started`` starts as the creation time: every item a source reads is read later, so
    it is a safe lower bound for the snapshot rule (indexer/actions.py) from the first instant the
    live path can see the build; the engines move it up to the scan start or the export time."""
    now = time.time()
    return {"state": "building", "table": w.table.name, **owner, "run": uuid.uuid4().hex, "started": now,
            "heartbeat": now, "snapshot_started": now, TTL_KEY: ttl}


@dataclass(frozen=True)
class Building:
    """An index created as the rebuild target, and what the swap must check and restore."""

    index: str
    #: The cluster's uuid of the index at creation ("" when it could not be read back).
    uuid: str
    #: ``run`` of its ``_meta``: a name re-created by a stray write never carries it.
    run: str
    #: The settings the mapping asked for, to put back before the swap.
    asked: dict[str, Any]


def create_building(w: Wiring, index: str, mapping: dict[str, Any] | None, meta: dict[str, Any]) -> Building:
    """Create ``index`` as the rebuild target (bulk-load settings, ``meta`` in its ``_meta``)."""
    # No replicas and no periodic refresh while bulk loading; restored before the swap.
    body, asked = building_body(index_body(mapping))
    body["mappings"]["_meta"] = {META_KEY: meta}
    body["aliases"] = {rebuild_alias(w.alias): {}}
    w.store.create_index(index, body, 60)
    created = _uuid(w.store.indices(index, 30).get(index, {}))
    log.info("rebuild_started", index=index, alias=w.alias, table=w.table.name)
    return Building(index, created, str(meta.get("run", "")), asked)


def record_meta(w: Wiring, index: str, **changes: Any) -> None:
    """Update fields of a build's ``_meta`` (read, changed, written whole: ``_meta`` is replaced
    as one object). For the engines without a heartbeat holding the meta."""
    meta = _meta(w.store.indices(index, 30).get(index, {}))
    meta.update(changes, heartbeat=time.time())
    w.store.put_meta(index, {META_KEY: meta}, 30)


def still_ours(w: Wiring, building: Building) -> None:
    """Refuse to swap onto anything but this run's own build: a rerun may have deleted it as
    orphaned while we were paused, and a stray write re-created the name."""
    body = w.store.indices(building.index, 30).get(building.index)
    if body is None:
        raise ReplayAborted(f"{building.index} was deleted while this replay ran (another replay "
                            "took it for orphaned); the alias was not moved")
    if _uuid(body) != building.uuid or _meta(body).get("run") != building.run:
        raise ReplayAborted(f"{building.index} is no longer the index this replay built (it was deleted and "
                            "re-created while this replay was paused); the alias was not moved")


def serves(w: Wiring, index: str) -> bool:
    """Whether the alias now points at ``index``."""
    return index in w.store.aliases([w.alias], 30)


def swap_alias(w: Wiring, building: Building) -> list[str]:
    """Settings back (what the mapping asked, else the replaced index's), refresh, check the build
    is still ours, then move the alias to it in one ``_aliases`` call; the indices it left."""
    index = building.index
    found = existing(w)
    previous = w.store.indices(found.serving[0], 30) if found.serving else {}
    previous_settings = next(iter(previous.values()), {}).get("settings", {}).get("index")
    w.store.put_settings(index, restored(building.asked, previous_settings), 60)
    w.store.refresh(index, 300)
    still_ours(w, building)
    found = existing(w)  # the serving index may have been created meanwhile by the live path
    # ``must_exist`` makes the call fail as a whole when our index lost its rebuild alias
    # (deleted and re-created) or an old index lost the alias (another replay swapped).
    actions: list[dict[str, Any]] = [
        {"add": {"index": index, "alias": w.alias, "filter": ALIAS_FILTER, "is_write_index": True}},
        {"remove": {"index": index, "alias": rebuild_alias(w.alias), "must_exist": True}},
    ]
    actions += [{"remove": {"index": old, "alias": w.alias, "must_exist": True}} for old in found.serving]
    if found.concrete:
        actions.append({"remove_index": {"index": w.alias}})
    try:
        w.store.update_aliases(actions, 60)
    except RetryableError:
        # The answer was lost, not necessarily the swap: look before deciding it failed.
        if not serves(w, index):
            raise
    log.info("alias_swapped", alias=w.alias, index=index, previous=found.serving)
    return found.serving


def abandon_build(w: Wiring, index: str, say: Say = silent) -> None:
    """Interrupted or failed: drop the half-built index, unless the alias already serves it
    (the swap landed and only its answer or a later step failed) or we cannot tell."""
    try:
        if serves(w, index):
            say(f"replay stopped after the swap; alias {w.alias!r} serves {index}")
            return
        w.store.delete_indices([index], 60)
        say(f"replay stopped; {index} removed; alias {w.alias!r} unchanged")
    except (RetryableError, ClusterError) as exc:
        say(f"replay stopped; could not remove {index} ({exc}); the next run will")


def retire(w: Wiring, old: list[str], wait: float, say: Say = silent) -> None:
    """Delete the indices the alias left, once live writers' target caches (``wait``) have expired."""
    if not old:
        return
    time.sleep(wait)
    try:
        w.store.delete_indices(old, 60)
    except (RetryableError, ClusterError) as exc:
        # The swap is done; an old index left over is listed as kept and can be deleted by hand.
        say(f"could not delete the previous index {', '.join(old)} ({exc}); delete it by hand")
        log.warning("retire_failed", indices=old, error=str(exc))


class Rebuild:
    def __init__(self, w: Wiring, options: FullOptions, mapping: dict[str, Any] | None, say: Say = silent,
                 env: Mapping[str, str] | None = None) -> None:
        self.w = w
        self.env = dict(env if env is not None else os.environ)
        self.options = options
        self.mapping = mapping
        self.say = say
        self.index = new_index_name(w.alias, datetime.now(timezone.utc))
        self.building: Building | None = None
        self.counts = Counts()
        self.stop = threading.Event()
        self.policy = RetryPolicy.of(w.settings)
        self.wait = announce_wait(w, say)
        #: When the source started reading (S, seconds), once the announce wait is over.
        self.started: float | None = None

    def run(self) -> Rebuilt:
        previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
        heartbeat: _Heartbeat | None = None
        try:
            try:
                # Inside the abandon path: a create whose answer was lost, or a failure right
                # after it, must not leave an index that looks like a live replay's build.
                heartbeat = self._create()
                self._announce(heartbeat)
                units, expected = sources.planned(self.options, self.w, self.stop, self.say)
                progress = Progress(f"replay {self.w.table.name}",
                                    self.w.table.item_count if expected is None else expected,
                                    enabled=self.options.progress)
                try:
                    self._load(units, expected, progress)
                finally:
                    progress.close()
                self._sweep()
                heartbeat.stopped.set()
                old = self._swap()
            except BaseException:
                self.stop.set()
                if heartbeat is not None:
                    heartbeat.stopped.set()
                abandon_build(self.w, self.index, self.say)
                raise
            # From here on the alias serves the new index: nothing may delete it.
            self._mark_complete(heartbeat)
            if not self.options.keep_old:
                retire(self.w, old, self.wait, self.say)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return self._report(old, progress.elapsed())

    def _create(self) -> _Heartbeat:
        w = self.w
        meta = building_meta(w, self.wait - 1.0, host=socket.gethostname(), pid=os.getpid())
        self.building = create_building(w, self.index, self.mapping, meta)
        self.say(f"building {self.index} for alias {w.alias!r} from table {w.table.name!r}")
        heartbeat = _Heartbeat(w.store, self.index, meta)
        heartbeat.start()
        return heartbeat

    def _announce(self, heartbeat: _Heartbeat) -> None:
        """Wait until every live writer has seen the rebuild target (their cache has expired),
        then record when the source starts reading: every item a scan reads, and the export
        (its ExportTime is taken right after this), is at least that recent."""
        wait = self.wait
        self.say(f"waiting {wait:.0f}s for live writers to start writing to {self.index} too")
        if self.stop.wait(wait):
            raise KeyboardInterrupt
        self.started = time.time()
        heartbeat.beat(snapshot_started=self.started)

    def _load(self, units: list[Unit], expected: int | None, progress: Progress) -> None:
        """Every unit through the local engine; for an export, the counts must add up."""
        from .engines import run_local, workers_from
        from .worker import Target, Worker

        w, options = self.w, self.options
        workers = options.workers or workers_from(self.env)
        target = Target(self.index, w.alias, w.table, options.bulk_size, options.bulk_bytes,
                        options.rate / workers if options.rate else None,
                        None if self.started is None else int(self.started * 1000))
        inline = lambda: Worker(target, w.store, w.dynamodb, sources.s3_client(), self.policy)  # noqa: E731
        done = run_local(units, target, self.env, workers, self.policy, progress, inline, self.stop)
        c = self.counts
        c.scanned, c.created, c.stale = done.read, done.created, done.stale
        c.replaced, c.read_again = done.replaced, done.read_again
        for key, reason in done.refused:
            self._failed(key, reason)
        check_read(expected, done.read)

    def _sweep(self) -> None:
        """The transition documents no snapshot met, replaced (replay/transition.py)."""
        swept = sweep(self.w, self.index, self.policy)
        c = self.counts
        c.replaced, c.read_again = c.replaced + swept.count, c.read_again + swept.read_again
        for key, reason in swept.refused:
            self._failed(key, reason)

    def _failed(self, key: str, reason: str) -> None:
        with self.counts.lock:
            self.counts.failed.append((key, reason))
        log.warning("item_not_indexed", key=key, reason=reason[:500])

    def _swap(self) -> list[str]:
        if self.building is None or self.stop.is_set():
            raise ReplayAborted("the load was stopped before it finished")
        return swap_alias(self.w, self.building)

    def _mark_complete(self, heartbeat: _Heartbeat) -> None:
        try:
            heartbeat.beat(state="complete", finished=time.time())
        except (RetryableError, ClusterError) as exc:  # the alias moved; the mark is only a label
            log.warning("complete_mark_failed", index=self.index, error=str(exc))

    def _report(self, old: list[str], seconds: float) -> Rebuilt:
        c = self.counts
        rate = c.scanned / seconds if seconds > 0 else 0.0
        log.info("replay_done", alias=self.w.alias, index=self.index, scanned=c.scanned, created=c.created,
                 stale=c.stale, replaced=c.replaced, read_again=c.read_again, failed=len(c.failed), seconds=round(seconds, 2), items_per_second=round(rate, 1))
        return Rebuilt(alias=self.w.alias, index=self.index, scanned=c.scanned, created=c.created, stale=c.stale,
                       failed=list(c.failed), seconds=seconds, previous=old, kept_previous=self.options.keep_old,
                       replaced=c.replaced, read_again=c.read_again)


def _uuid(body: Mapping[str, Any]) -> str:
    return str(((body.get("settings") or {}).get("index") or {}).get("uuid", ""))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
