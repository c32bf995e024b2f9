"""How an alias maps onto physical indices, and which of them the live path must write.

Users search the alias ``INDEX_NAME``; it is *filtered* so tombstones never show. Behind it
is one physical index. During a rebuild a second alias, ``<alias>-rebuild``, names the index
being built, and the live path writes every change to both (see the replay protocol).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from .errors import ClusterError
from .records import RESERVED_FIELD
from .search import Store
from .settings import DEFAULT_TARGETS_TTL

log = structlog.get_logger("indexer.layout")

#: How long the live path trusts its view of the targets. A rebuild must wait longer than
#: this after announcing its index before it starts scanning.
TARGETS_TTL_SECONDS = DEFAULT_TARGETS_TTL

#: The key under ``_meta`` where a rebuild records its state and when its scan started.
META_KEY = "dynamodb_es_indexer"
#: Under ``META_KEY``: the TARGETS_TTL_SECONDS the index's creator assumed live writers use.
TTL_KEY = "targets_ttl_seconds"

ALIAS_FILTER: dict[str, Any] = {"bool": {"must_not": [{"term": {f"{RESERVED_FIELD}.deleted": True}}]}}

BOOKKEEPING_MAPPING: dict[str, Any] = {
    "properties": {
        "seq": {"type": "keyword"},
        "deleted": {"type": "boolean"},
        "at": {"type": "date", "format": "epoch_millis"},
        "read": {"type": "date", "format": "epoch_millis"},
    }
}

#: DynamoDB has one number type, so every number is mapped ``double``. Elasticsearch's own
#: dynamic mapping would make the first integer seen a ``long`` (then truncate later decimals,
#: reject integers past 2^63 and refuse an NS like [-2, 1.5]) and decimals a 32-bit ``float``.
#: ``_source`` keeps every digit either way; pass a mapping to choose otherwise.
NUMBER_TEMPLATES: list[dict[str, Any]] = [
    {"integers_as_double": {"match_mapping_type": "long", "mapping": {"type": "double"}}},
    {"decimals_as_double": {"match_mapping_type": "double", "mapping": {"type": "double"}}},
]


def rebuild_alias(alias: str) -> str:
    return f"{alias}-rebuild"


def initial_index(alias: str) -> str:
    """The physical index the first writer creates: a fixed name, so racing writers agree."""
    return f"{alias}-initial"


def index_body(mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings and mappings for a new physical index: the user's, plus the bookkeeping field
    and (unless the user brings their own dynamic templates) numbers mapped as ``double``."""
    body = copy.deepcopy(mapping) if mapping else {}
    mappings = body.setdefault("mappings", {})
    properties = mappings.setdefault("properties", {})
    properties[RESERVED_FIELD] = copy.deepcopy(BOOKKEEPING_MAPPING)
    mappings.setdefault("dynamic_templates", copy.deepcopy(NUMBER_TEMPLATES))
    return body


@dataclass(frozen=True)
class AliasIndices:
    """The physical indices behind an alias: those it serves, and those being rebuilt for it."""

    serving: list[str]
    rebuilding: list[str]

    def writes(self) -> list[str]:
        """Every index a change to the alias must be written to, serving first."""
        return self.serving + [index for index in self.rebuilding if index not in self.serving]


def alias_indices(store: Store, alias: str, timeout: float) -> AliasIndices:
    """What ``alias`` and its rebuild alias point at now (one ``_alias`` lookup; creates nothing)."""
    by_index = store.aliases([alias, rebuild_alias(alias)], timeout)
    return AliasIndices(
        serving=sorted(index for index, names in by_index.items() if alias in names),
        rebuilding=sorted(index for index, names in by_index.items() if rebuild_alias(alias) in names),
    )


@dataclass
class Targets:
    """Physical indices to write for each alias, looked up lazily and cached briefly."""

    store: Store
    #: Index body for an index this creates on first write; None for the default mapping.
    mapping: dict[str, Any] | None = None
    clock: Callable[[], float] = time.monotonic
    ttl: float = TARGETS_TTL_SECONDS
    _cache: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    _snapshots: dict[str, dict[str, int]] = field(default_factory=dict)
    _ttl_caps: dict[str, float] = field(default_factory=dict)

    def indices(self, alias: str, timeout: float) -> list[str]:
        cached = self._cache.get(alias)
        now = self.clock()
        # Never trust a view longer than the serving index says replays wait for.
        if cached and now - cached[0] < min(self.ttl, self._ttl_caps.get(alias, self.ttl)):
            return cached[1]
        found = self._lookup(alias, timeout)
        self._cache[alias] = (now, found)
        return found

    def snapshots(self, alias: str) -> dict[str, int]:
        """Index → when the scan that built it started (ms), for the indices last looked up."""
        return self._snapshots.get(alias, {})

    def invalidate(self, alias: str | None = None) -> None:
        if alias is None:
            self._cache.clear()
            self._snapshots.clear()
        else:
            self._cache.pop(alias, None)
            self._snapshots.pop(alias, None)

    def _lookup(self, alias: str, timeout: float) -> list[str]:
        found = alias_indices(self.store, alias, timeout)
        if not found.serving:
            self._bootstrap(alias, timeout)
            found = alias_indices(self.store, alias, timeout)
        if not found.serving:
            raise ClusterError(f"alias {alias!r} has no index behind it after creating one")
        writes = found.writes()
        # One more request per lookup (not per record): the rebuilt indices' scan start times,
        # and the TTL replays assume for live writers.
        definitions = self.store.definitions(writes, timeout)
        self._snapshots[alias] = snapshot_times(definitions)
        recorded = [ttl for index, ttl in ttls_recorded(definitions).items() if index in found.serving]
        if recorded and min(recorded) < self.ttl:
            log.warning("targets_ttl_capped", alias=alias, configured=self.ttl, recorded=min(recorded))
        self._ttl_caps[alias] = min(recorded, default=self.ttl)
        return writes

    def _bootstrap(self, alias: str, timeout: float) -> None:
        """First write to a fresh cluster: create the physical index with the alias on it."""
        if self.store.is_concrete_index(alias, timeout):
            raise ClusterError(
                f"INDEX_NAME {alias!r} is a concrete index, not an alias; move it behind an alias "
                "with `python -m replay --full --migrate`"
            )
        body = index_body(self.mapping)
        body["mappings"]["_meta"] = {META_KEY: {TTL_KEY: self.ttl}}
        body["aliases"] = {alias: {"filter": ALIAS_FILTER, "is_write_index": True}}
        self.store.create_index(initial_index(alias), body, timeout)


def snapshot_times(definitions: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Index → ``snapshot_started`` (ms) from each index definition's ``_meta``, where a rebuild
    recorded when its scan started."""
    times: dict[str, int] = {}
    for index, body in definitions.items():
        meta = ((body.get("mappings") or {}).get("_meta") or {}).get(META_KEY) or {}
        started = meta.get("snapshot_started") if isinstance(meta, dict) else None
        if type(started) in (int, float):
            times[index] = int(started * 1000)
    return times


def ttls_recorded(definitions: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Index → the TARGETS_TTL_SECONDS recorded in its ``_meta`` by whoever created it."""
    found: dict[str, float] = {}
    for index, body in definitions.items():
        meta = ((body.get("mappings") or {}).get("_meta") or {}).get(META_KEY) or {}
        ttl = meta.get(TTL_KEY) if isinstance(meta, dict) else None
        if type(ttl) in (int, float) and ttl > 0:
            found[index] = float(ttl)
    return found


@dataclass
class FixedTargets:
    """Targets that are always the given indices: a rebuild writes only to the index it builds."""

    names: list[str]

    def indices(self, alias: str, timeout: float) -> list[str]:
        return list(self.names)

    def invalidate(self, alias: str | None = None) -> None:
        return None

    def snapshots(self, alias: str) -> dict[str, int]:
        return {}
