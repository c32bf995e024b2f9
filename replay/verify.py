"""``python -m replay --verify [--fix]``: compare the table with what the alias shows.

Three kinds of drift: items missing from the index, documents whose source differs from the
item's current image, and documents with no item. A scan races with live writes, so every
candidate is read again (item and document) before it is reported. ``--fix`` writes the table's
current state through the ordering guard, as if it were a record just newer than what the index
holds: a late stale record still loses to it, any real newer change still wins over it.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any, Mapping

import structlog

from indexer.apply import Deadline, RetryPolicy, apply
from indexer.errors import RecordError
from indexer.ids import document_id
from indexer.records import RESERVED_FIELD, SNAPSHOT_SEQUENCE, Change, document_of, tombstone, upsert
from indexer.layout import Targets

from . import table as tables
from .progress import Progress
from .wiring import Wiring, wire

log = structlog.get_logger("replay.verify")


@dataclass(frozen=True)
class VerifyOptions:
    """``--verify``: how to audit. Each field is the flag of the same name (``replay.cli``
    builds this from the flags given); the defaults here are the flags' defaults."""

    segments: int = tables.DEFAULT_SEGMENTS
    fix: bool = False
    #: Keys shown per kind of drift.
    sample: int = 10
    progress: bool = True

RECHECK_LIMIT = 100_000
_EXACT = Context(prec=200)


def canonical(value: Any) -> Any:
    """A form in which equal DynamoDB values are equal Python values: numbers as normalized
    Decimals (``1.50`` = ``1.5`` = JSON ``1.5``), maps with sorted keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        # A wide context: the default one would round 38-digit numbers to 28 digits.
        return "\x00N:" + (str(number.normalize(_EXACT)) if number else "0")  # never equal to a string
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return repr(value)


def digest(document: Mapping[str, Any]) -> str:
    """A short fingerprint of a document without bookkeeping, equal for equal content."""
    content = {key: value for key, value in document.items() if key != RESERVED_FIELD}
    text = json.dumps(canonical(content), sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha1(text.encode("ascii")).hexdigest()


@dataclass
class Drift:
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)  # doc_id -> Keys
    differing: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # doc_id -> Keys if known
    unconvertible: list[tuple[str, str]] = field(default_factory=list)

    def total(self) -> int:
        return len(self.missing) + len(self.differing) + len(self.extra)


def table_digests(w: Wiring, segments: int, progress_enabled: bool) -> tuple[dict[str, tuple[str, dict]], list]:
    """doc_id -> (digest, Keys) for every item; plus items that cannot become documents."""
    import threading

    found: dict[str, tuple[str, dict]] = {}
    bad: list[tuple[str, str]] = []
    lock = threading.Lock()
    progress = Progress(f"scan {w.table.name}", w.table.item_count, enabled=progress_enabled)
    stop = threading.Event()
    limiter = tables.RateLimiter(None)

    def segment(n: int) -> None:
        for page, _ in tables.scan_pages(w.dynamodb, w.table.name, n, segments, 1000, limiter, stop):
            local = []
            for item in page:
                keys = w.table.keys_of(item)
                try:
                    local.append((document_id(keys), digest(document_of(item)), keys))
                except RecordError as exc:
                    with lock:
                        bad.append((json.dumps(keys, default=str), exc.message))
            with lock:
                for doc_id, fingerprint, keys in local:
                    found[doc_id] = (fingerprint, keys)
            progress.advance(len(page))

    try:
        with ThreadPoolExecutor(max_workers=segments) as pool:
            for future in [pool.submit(segment, n) for n in range(segments)]:
                future.result()
    finally:
        progress.close()
    return found, bad


def find_drift(w: Wiring, segments: int, progress_enabled: bool) -> Drift:
    expected, bad = table_digests(w, segments, progress_enabled)
    drift = Drift(unconvertible=bad)
    seen: set[str] = set()
    for hit in w.store.scan(w.alias, 120):
        doc_id = hit["_id"]
        seen.add(doc_id)
        entry = expected.get(doc_id)
        if entry is None:
            drift.extra[doc_id] = tables.keys_claimed(w.table, doc_id, hit["_source"])
        elif entry[0] != digest(hit["_source"]):
            drift.differing[doc_id] = entry[1]
    for doc_id, (_, keys) in expected.items():
        if doc_id not in seen:
            drift.missing[doc_id] = keys
    return _recheck(w, drift)


def hidden_by_alias(source: Mapping[str, Any]) -> bool:
    """Whether the alias filter (``_ddb.deleted`` is true) hides a document with this source.

    mget ignores alias filters, so this judges as the filter does: the field as Elasticsearch
    expands dotted names (``{"_ddb": {"deleted": ...}}`` or ``{"_ddb.deleted": ...}``), and a
    boolean term query matches ``true`` and ``"true"`` alike."""
    values = [(source.get(RESERVED_FIELD) or {}).get("deleted") if isinstance(source.get(RESERVED_FIELD), dict)
              else None, source.get(f"{RESERVED_FIELD}.deleted")]
    for value in values:
        for one in value if isinstance(value, list) else [value]:
            if one is True or one == "true":
                return True
    return False


def _current_document(w: Wiring, doc_id: str) -> dict[str, Any] | None:
    """What the alias shows for ``doc_id`` (None for nothing or a document the alias hides)."""
    (doc,) = w.store.documents(w.alias, [doc_id], 30)
    source = doc.get("_source") if doc.get("found") else None
    if source is None or hidden_by_alias(source):
        return None
    return source


def _item_digest(item: dict[str, Any]) -> str | None:
    """The digest of the document an item becomes; None when it cannot become one."""
    try:
        return digest(document_of(item))
    except RecordError:
        return None


def _recheck(w: Wiring, drift: Drift) -> Drift:
    """Drop candidates that a write in flight during the scan explains: compare again, now."""
    confirmed = Drift(unconvertible=drift.unconvertible)
    candidates = [("missing", k, v) for k, v in drift.missing.items()]
    candidates += [("differing", k, v) for k, v in drift.differing.items()]
    candidates += [("extra", k, v) for k, v in drift.extra.items()]
    for _, doc_id, keys in candidates[:RECHECK_LIMIT]:
        item = tables.get_item(w.dynamodb, w.table.name, keys) if keys else None
        document = _current_document(w, doc_id)
        if item is None and document is None:
            continue
        if item is None:
            confirmed.extra[doc_id] = keys
        elif document is None:
            confirmed.missing[doc_id] = keys
        elif _item_digest(item) != digest(document):
            confirmed.differing[doc_id] = keys
    return confirmed


def fix(w: Wiring, drift: Drift) -> tuple[int, int]:
    """Write the table's current state for every drifted document; (fixed, still failing)."""
    changes: list[Change] = []
    refused = 0
    ids = list(drift.missing) + list(drift.differing) + list(drift.extra)
    keys_by_id = {**drift.missing, **drift.differing, **drift.extra}
    stored = w.store.documents(w.alias, ids, 60, includes=[f"{RESERVED_FIELD}.seq"])
    for position, (doc_id, doc) in enumerate(zip(ids, stored)):
        # The repair carries the stored sequence and wins only that tie: "stored + 1" could be
        # the very number of the next real change (nothing promises a gap), which would then
        # look stale and be dropped.
        sequence = SNAPSHOT_SEQUENCE
        if doc.get("found"):
            text = ((doc.get("_source") or {}).get(RESERVED_FIELD) or {}).get("seq", "")
            sequence = int(text) if isinstance(text, str) and text.isdigit() else SNAPSHOT_SEQUENCE
        keys = keys_by_id[doc_id]
        item = tables.get_item(w.dynamodb, w.table.name, keys) if keys else None
        try:
            if item is None:
                change = tombstone(w.alias, doc_id, sequence, position)
            else:
                change = upsert(w.alias, doc_id, item, sequence, position)
        except RecordError as exc:  # the item cannot become a document: nothing to write
            log.warning("fix_failed", doc_id=doc_id, reason=exc.message[:300])
            refused += 1
            continue
        change.repair = True
        changes.append(change)
    targets = Targets(w.store, mapping=w.settings.index_mapping, ttl=w.settings.targets_ttl)
    result = apply(changes, w.store, targets, Deadline.after(300), RetryPolicy.of(w.settings))
    for change, error in result.dead:
        log.warning("fix_failed", doc_id=change.doc_id, reason=error.message[:300])
    failing = len(result.dead) + len(result.unresolved) + refused
    return len(result.applied) + len(result.stale), failing


def report(drift: Drift, sample: int) -> list[str]:
    lines = [
        f"missing from the index: {len(drift.missing)}",
        f"differing from the table: {len(drift.differing)}",
        f"in the index but not the table: {len(drift.extra)}",
    ]
    for label, found in (("missing", drift.missing), ("differing", drift.differing), ("extra", drift.extra)):
        for doc_id in sorted(found)[:sample]:
            lines.append(f"  {label}: {doc_id}")
    if drift.unconvertible:
        lines.append(f"items that cannot become documents: {len(drift.unconvertible)}")
        lines += [f"  {key}: {reason}" for key, reason in drift.unconvertible[:sample]]
    return lines


@dataclass(frozen=True)
class Verified:
    """What an audit found and, with ``--fix``, what it repaired."""

    alias: str
    table: str
    drift: Drift
    sample: int
    #: (fixed, still failing) when drift was found and ``--fix`` asked to repair it.
    fixed: tuple[int, int] | None = None

    def in_sync(self) -> bool:
        """True when the alias matches the table now: no drift, or all of it repaired."""
        return self.drift.total() == 0 or (self.fixed is not None and self.fixed[1] == 0)

    def lines(self) -> list[str]:
        lines = report(self.drift, self.sample)
        if self.drift.total() == 0:
            lines.append(f"alias {self.alias!r} is in sync with table {self.table!r}")
        elif self.fixed is not None:
            lines.append(f"fixed {self.fixed[0]} documents, {self.fixed[1]} could not be fixed")
        return lines


def run(options: VerifyOptions, env: Mapping[str, str]) -> Verified:
    """Compare the table with the alias; repair the drift found when ``options.fix``."""
    w = wire(env, exact_numbers=True)
    drift = find_drift(w, options.segments, options.progress)
    log.info("verify_done", alias=w.alias, missing=len(drift.missing), differing=len(drift.differing),
             extra=len(drift.extra), unconvertible=len(drift.unconvertible))
    fixed = fix(w, drift) if options.fix and drift.total() else None
    return Verified(w.alias, w.table.name, drift, options.sample, fixed)
