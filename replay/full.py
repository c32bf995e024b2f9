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

import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

import structlog

from indexer.apply import BULK_MAX_BYTES, Deadline, RetryPolicy, apply
from indexer.errors import ClusterError, RecordError, ReplayAborted, RetryableError, SettingsError
from indexer.ids import document_id
from indexer.layout import ALIAS_FILTER, FixedTargets, alias_indices, index_body, rebuild_alias
from indexer.records import SNAPSHOT_SEQUENCE, Change, upsert
from indexer.search import Store
from indexer.settings import mapping_body

from . import sources
from . import table as tables
from .buildsettings import building_body, restored
from .progress import Progress
from .units import check_read
from .wiring import Wiring, wire

if TYPE_CHECKING:
    from .units import Unit

log = structlog.get_logger("replay.full")

META_KEY = "dynamodb_es_indexer"
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
        if meta.get("state") == "building":
            (running if _alive(meta, now) else orphans).append(name)
        elif meta.get("state") == "complete":
            kept.append(name)
    return Existing(serving, concrete, orphans, running, kept)


@dataclass(frozen=True)
class Orphans:
    """``--list-orphans``: what an alias serves and what interrupted or kept rebuilds left."""

    alias: str
    found: Existing

    def lines(self) -> list[str]:
        lines = [f"alias {self.alias!r} serves: {', '.join(self.found.serving) or '(nothing)'}"]
        for label, names in (("orphaned (interrupted rebuild)", self.found.orphans),
                             ("being built by a running replay", self.found.running),
                             ("kept from earlier rebuilds (--keep-old)", self.found.kept)):
            lines += [f"{label}: {name}" for name in names]
        return lines


def list_orphans(env: Mapping[str, str]) -> Orphans:
    """``--list-orphans``: what interrupted or kept rebuilds left behind."""
    w = wire(env)
    return Orphans(w.alias, existing(w))


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
    try:
        with open(options.mapping, encoding="utf-8") as handle:
            body = json.load(handle)
    except OSError as exc:
        raise SettingsError(f"--mapping: cannot read {options.mapping!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--mapping: {options.mapping!r} is not valid JSON ({exc})") from None
    return mapping_body(body, "--mapping")


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
    for orphan in found.orphans:
        log.warning("removing_orphan", index=orphan)
        say(f"removing {orphan}, left by an interrupted replay")
        w.store.delete_indices([orphan], 60)


@dataclass(frozen=True)
class Written:
    """What one bulk of snapshots did to the new index."""

    created: int
    #: Already there: the live path wrote the item first, and its version wins.
    stale: int
    #: (document id, reason) of items the cluster refused (e.g. a mapping conflict).
    refused: list[tuple[str, str]]


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
                    max_bytes: int = BULK_MAX_BYTES, sleep: Callable[[float], None] = time.sleep) -> Written:
    """Write snapshots to the index being built, each only where nothing is there yet (the guard);
    ReplayAborted when the cluster keeps failing, so the alias is never moved over a gap."""
    result = apply(changes, store, FixedTargets([index]), Deadline.after(600), policy, sleep=sleep,
                   max_bytes=max_bytes)
    if result.unresolved:
        raise ReplayAborted(f"{len(result.unresolved)} documents could not be written: {result.last_error}")
    refused = [(change.doc_id, f"{error.kind}: {error.message}") for change, error in result.dead]
    return Written(len(result.applied), len(result.stale), refused)


def create_building(w: Wiring, index: str, mapping: dict[str, Any] | None, meta: dict[str, Any]) -> dict[str, Any]:
    """Create ``index`` as the rebuild target (bulk-load settings, ``meta`` in its ``_meta``);
    the settings the mapping asked for, to restore before the swap."""
    # No replicas and no periodic refresh while bulk loading; restored before the swap.
    body, asked = building_body(index_body(mapping))
    body["mappings"]["_meta"] = {META_KEY: meta}
    body["aliases"] = {rebuild_alias(w.alias): {}}
    w.store.create_index(index, body, 60)
    log.info("rebuild_started", index=index, alias=w.alias, table=w.table.name)
    return asked


def swap_alias(w: Wiring, index: str, asked: Mapping[str, Any]) -> list[str]:
    """Settings back (``asked``: what the mapping set), refresh, then move the alias to ``index``
    in one ``_aliases`` call; the indices it left."""
    found = existing(w)  # the serving index may have been created meanwhile by the live path
    previous = w.store.indices(found.serving[0], 30) if found.serving else {}
    previous_settings = next(iter(previous.values()), {}).get("settings", {}).get("index")
    w.store.put_settings(index, restored(asked, previous_settings), 60)
    w.store.refresh(index, 300)
    actions: list[dict[str, Any]] = [
        {"add": {"index": index, "alias": w.alias, "filter": ALIAS_FILTER, "is_write_index": True}},
        {"remove": {"index": index, "alias": rebuild_alias(w.alias)}},
    ]
    actions += [{"remove": {"index": old, "alias": w.alias}} for old in found.serving]
    if found.concrete:
        actions.append({"remove_index": {"index": w.alias}})
    w.store.update_aliases(actions, 60)
    log.info("alias_swapped", alias=w.alias, index=index, previous=found.serving)
    return found.serving


class Rebuild:
    def __init__(self, w: Wiring, options: FullOptions, mapping: dict[str, Any] | None, say: Say = silent,
                 env: Mapping[str, str] | None = None) -> None:
        self.w = w
        self.env = dict(env if env is not None else os.environ)
        self.options = options
        self.mapping = mapping
        self.say = say
        self.index = new_index_name(w.alias, datetime.now(timezone.utc))
        self.counts = Counts()
        self.stop = threading.Event()
        self.policy = RetryPolicy.of(w.settings)

    def run(self) -> Rebuilt:
        previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
        heartbeat = self._create()
        try:
            self._announce()
            units, expected = sources.planned(self.options, self.w, self.stop, self.say)
            progress = Progress(f"replay {self.w.table.name}", self.w.table.item_count if expected is None else expected,
                                enabled=self.options.progress)
            try:
                self._load(units, expected, progress)
            finally:
                progress.close()
            heartbeat.stopped.set()
            old = self._swap(heartbeat)
        except BaseException:
            self.stop.set()
            heartbeat.stopped.set()
            self._abandon()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self._retire(old)
        return self._report(old, progress.elapsed())

    def _create(self) -> _Heartbeat:
        w = self.w
        meta = {"state": "building", "table": w.table.name, "host": socket.gethostname(),
                "pid": os.getpid(), "started": time.time(), "heartbeat": time.time()}
        self.asked_settings = create_building(w, self.index, self.mapping, meta)
        self.say(f"building {self.index} for alias {w.alias!r} from table {w.table.name!r}")
        heartbeat = _Heartbeat(w.store, self.index, meta)
        heartbeat.start()
        return heartbeat

    def _announce(self) -> None:
        """Wait until every live writer has seen the rebuild target (their cache has expired)."""
        wait = self.w.settings.targets_ttl + 1.0
        self.say(f"waiting {wait:.0f}s for live writers to start writing to {self.index} too")
        if self.stop.wait(wait):
            raise KeyboardInterrupt

    def _load(self, units: list[Unit], expected: int | None, progress: Progress) -> None:
        """Every unit through the local engine; for an export, the counts must add up."""
        from .engines import run_local, workers_from
        from .worker import Target, Worker

        w, options = self.w, self.options
        workers = options.workers or workers_from(self.env)
        target = Target(self.index, w.alias, w.table, options.bulk_size, options.bulk_bytes,
                        options.rate / workers if options.rate else None)
        inline = lambda: Worker(target, w.store, w.dynamodb, sources.s3_client(), self.policy)  # noqa: E731
        done = run_local(units, target, self.env, workers, self.policy, progress, inline, self.stop)
        c = self.counts
        c.scanned, c.created, c.stale = done.read, done.created, done.stale
        for key, reason in done.refused:
            self._failed(key, reason)
        check_read(expected, done.read)

    def _failed(self, key: str, reason: str) -> None:
        with self.counts.lock:
            self.counts.failed.append((key, reason))
        log.warning("item_not_indexed", key=key, reason=reason[:500])

    def _swap(self, heartbeat: _Heartbeat) -> list[str]:
        old = swap_alias(self.w, self.index, self.asked_settings)
        heartbeat.beat(state="complete", finished=time.time())
        return old

    def _abandon(self) -> None:
        """Interrupted or failed: the alias never moved; drop the half-built index."""
        try:
            self.w.store.delete_indices([self.index], 60)
            self.say(f"replay stopped; {self.index} removed; alias {self.w.alias!r} unchanged")
        except (RetryableError, ClusterError) as exc:
            self.say(f"replay stopped; could not remove {self.index} ({exc}); the next run will")

    def _retire(self, old: list[str]) -> None:
        if not old or self.options.keep_old:
            return
        # Live writers may still hold the old index in their target cache for a while.
        time.sleep(self.w.settings.targets_ttl + 1.0)
        self.w.store.delete_indices(old, 60)

    def _report(self, old: list[str], seconds: float) -> Rebuilt:
        c = self.counts
        rate = c.scanned / seconds if seconds > 0 else 0.0
        log.info("replay_done", alias=self.w.alias, index=self.index, scanned=c.scanned, created=c.created,
                 stale=c.stale, failed=len(c.failed), seconds=round(seconds, 2), items_per_second=round(rate, 1))
        return Rebuilt(alias=self.w.alias, index=self.index, scanned=c.scanned, created=c.created, stale=c.stale,
                       failed=list(c.failed), seconds=seconds, previous=old, kept_previous=self.options.keep_old)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
