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

import argparse
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import structlog

from indexer.apply import Deadline, RetryPolicy, apply
from indexer.errors import ClusterError, RecordError, ReplayAborted, RetryableError, SettingsError
from indexer.ids import document_id
from indexer.layout import ALIAS_FILTER, FixedTargets, alias_indices, index_body, rebuild_alias
from indexer.records import SNAPSHOT_SEQUENCE, Change, upsert
from indexer.search import Store
from indexer.settings import mapping_body

from . import table as tables
from .progress import Progress
from .wiring import Wiring, wire

log = structlog.get_logger("replay.full")

META_KEY = "dynamodb_es_indexer"
HEARTBEAT_SECONDS = 10.0
#: A building index whose heartbeat is older than this belongs to a replay that died.
ORPHAN_AFTER_SECONDS = 60.0


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
        if meta.get("state") == "building":
            (running if _alive(meta, now) else orphans).append(name)
        elif meta.get("state") == "complete":
            kept.append(name)
    return Existing(serving, concrete, orphans, running, kept)


def list_orphans(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``--list-orphans``: what interrupted or kept rebuilds left behind."""
    w = wire(env)
    found = existing(w)
    print(f"alias {w.alias!r} serves: {', '.join(found.serving) or '(nothing)'}")
    for label, names in (("orphaned (interrupted rebuild)", found.orphans),
                         ("being built by a running replay", found.running),
                         ("kept from earlier rebuilds (--keep-old)", found.kept)):
        for name in names:
            print(f"{label}: {name}")
    return 0


def _load_mapping(args: argparse.Namespace, w: Wiring) -> dict[str, Any] | None:
    if not args.mapping:
        return w.settings.index_mapping
    try:
        with open(args.mapping, encoding="utf-8") as handle:
            body = json.load(handle)
    except OSError as exc:
        raise SettingsError(f"--mapping: cannot read {args.mapping!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--mapping: {args.mapping!r} is not valid JSON ({exc})") from None
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


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    w = wire(env)
    mapping = _load_mapping(args, w)
    if w.table.stream_arn is None:
        print(f"warning: table {w.table.name!r} has no stream: live sync cannot follow it; "
              "the rebuilt index will go stale", flush=True)
        log.warning("table_without_stream", table=w.table.name)
    found = existing(w)
    if found.concrete and not args.migrate:
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
        print(f"removing {orphan}, left by an interrupted replay", flush=True)
        w.store.delete_indices([orphan], 60)
    return Rebuild(w, args, mapping).run()


class Rebuild:
    def __init__(self, w: Wiring, args: argparse.Namespace, mapping: dict[str, Any] | None) -> None:
        self.w = w
        self.args = args
        self.mapping = mapping
        self.index = new_index_name(w.alias, datetime.now(timezone.utc))
        self.counts = Counts()
        self.stop = threading.Event()
        self.policy = RetryPolicy.of(w.settings)

    def run(self) -> int:
        previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
        heartbeat = self._create()
        try:
            self._announce()
            progress = Progress(f"replay {self.w.table.name}", self.w.table.item_count,
                                enabled=not self.args.no_progress)
            try:
                self._scan(progress)
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
        body = index_body(self.mapping)
        settings = body.setdefault("settings", {})
        # No periodic refresh while bulk loading; restored before the swap.
        settings.setdefault("index", {})["refresh_interval"] = "-1"
        meta = {"state": "building", "table": w.table.name, "host": socket.gethostname(),
                "pid": os.getpid(), "started": time.time(), "heartbeat": time.time()}
        body["mappings"]["_meta"] = {META_KEY: meta}
        body["aliases"] = {rebuild_alias(w.alias): {}}
        w.store.create_index(self.index, body, 60)
        log.info("rebuild_started", index=self.index, alias=w.alias, table=w.table.name)
        print(f"building {self.index} for alias {w.alias!r} from table {w.table.name!r}", flush=True)
        heartbeat = _Heartbeat(w.store, self.index, meta)
        heartbeat.start()
        return heartbeat

    def _announce(self) -> None:
        """Wait until every live writer has seen the rebuild target (their cache has expired)."""
        wait = self.w.settings.targets_ttl + 1.0
        print(f"waiting {wait:.0f}s for live writers to start writing to {self.index} too", flush=True)
        if self.stop.wait(wait):
            raise KeyboardInterrupt

    def _scan(self, progress: Progress) -> None:
        segments = self.args.segments
        limiter = tables.RateLimiter(self.args.rate)
        with ThreadPoolExecutor(max_workers=segments, thread_name_prefix="scan") as pool:
            futures = [pool.submit(self._segment, n, segments, limiter, progress) for n in range(segments)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self.stop.set()
                raise

    def _segment(self, segment: int, segments: int, limiter: tables.RateLimiter, progress: Progress) -> None:
        w = self.w
        pending: list[Change] = []
        page_size = min(self.args.bulk_size, 1000)
        for page in tables.scan_segment(w.dynamodb, w.table.name, segment, segments, page_size, limiter, self.stop):
            for item in page:
                try:
                    doc_id = document_id(w.table.keys_of(item))
                    pending.append(upsert(w.alias, doc_id, item, SNAPSHOT_SEQUENCE))
                except (RecordError, KeyError) as exc:
                    reason = exc.message if isinstance(exc, RecordError) else f"missing key attribute {exc}"
                    self._failed(str({k: item.get(k) for k in w.table.key_names}), reason)
            with self.counts.lock:
                self.counts.scanned += len(page)
            if len(pending) >= self.args.bulk_size:
                self._write(pending, progress, len(page))
                pending = []
            else:
                progress.advance(len(page))
        if pending:
            self._write(pending, progress, 0)

    def _write(self, changes: list[Change], progress: Progress, scanned: int) -> None:
        result = apply(changes, self.w.store, FixedTargets([self.index]), Deadline.after(600), self.policy)
        if result.unresolved:
            raise ReplayAborted(f"{len(result.unresolved)} documents could not be written: {result.last_error}")
        for change, error in result.dead:
            self._failed(change.doc_id, f"{error.kind}: {error.message}")
        with self.counts.lock:
            self.counts.created += len(result.applied)
            self.counts.stale += len(result.stale)
        progress.advance(scanned, created=len(result.applied), live_newer=len(result.stale))

    def _failed(self, key: str, reason: str) -> None:
        with self.counts.lock:
            self.counts.failed.append((key, reason))
        log.warning("item_not_indexed", key=key, reason=reason[:500])

    def _swap(self, heartbeat: _Heartbeat) -> list[str]:
        """Move the alias to the new index in one call; returns the indices it left."""
        w = self.w
        w.store.put_settings(self.index, {"index": {"refresh_interval": None}}, 60)
        w.store.refresh(self.index, 300)
        found = existing(w)  # the serving index may have been created meanwhile by the live path
        actions: list[dict[str, Any]] = [
            {"add": {"index": self.index, "alias": w.alias, "filter": ALIAS_FILTER, "is_write_index": True}},
            {"remove": {"index": self.index, "alias": rebuild_alias(w.alias)}},
        ]
        actions += [{"remove": {"index": old, "alias": w.alias}} for old in found.serving]
        if found.concrete:
            actions.append({"remove_index": {"index": w.alias}})
        w.store.update_aliases(actions, 60)
        heartbeat.beat(state="complete", finished=time.time())
        log.info("alias_swapped", alias=w.alias, index=self.index, previous=found.serving)
        return found.serving

    def _abandon(self) -> None:
        """Interrupted or failed: the alias never moved; drop the half-built index."""
        try:
            self.w.store.delete_indices([self.index], 60)
            print(f"replay stopped; {self.index} removed; alias {self.w.alias!r} unchanged", flush=True)
        except (RetryableError, ClusterError) as exc:
            print(f"replay stopped; could not remove {self.index} ({exc}); the next run will", flush=True)

    def _retire(self, old: list[str]) -> None:
        if not old or self.args.keep_old:
            return
        # Live writers may still hold the old index in their target cache for a while.
        time.sleep(self.w.settings.targets_ttl + 1.0)
        self.w.store.delete_indices(old, 60)

    def _report(self, old: list[str], seconds: float) -> int:
        c = self.counts
        rate = c.scanned / seconds if seconds > 0 else 0.0
        print(f"alias {self.w.alias!r} now serves {self.index}")
        print(f"scanned {c.scanned} items in {seconds:.1f}s ({rate:.0f} items/s): {c.created} written, "
              f"{c.stale} already newer from live writes, {len(c.failed)} not indexable")
        if old:
            print(f"previous index {', '.join(old)} {'kept' if self.args.keep_old else 'deleted'}")
        for key, reason in c.failed[:10]:
            print(f"  not indexed: {key}: {reason[:300]}")
        log.info("replay_done", alias=self.w.alias, index=self.index, scanned=c.scanned, created=c.created,
                 stale=c.stale, failed=len(c.failed), seconds=round(seconds, 2), items_per_second=round(rate, 1))
        return 1 if c.failed else 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
