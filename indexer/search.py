"""The Elasticsearch adapter: the only module that talks to the cluster.

Library exceptions are translated here into :class:`RetryableError` (try again) or
:class:`ClusterError` (stop and let Lambda redeliver), so the rest of the code never sees them.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

from .actions import Current, current_of
from .records import RESERVED_FIELD
from .errors import ClusterError, IndexerError, RetryableError

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class MissingIndex(IndexerError):
    """A target index no longer exists: targets must be looked up again before writing."""


class Store(Protocol):
    """What the indexer needs from a search cluster."""

    def current(self, pairs: Sequence[tuple[str, str]], timeout: float) -> dict[tuple[str, str], Current | None]: ...

    def bulk(self, body: bytes, timeout: float) -> dict[str, Any]: ...

    def aliases(self, names: Sequence[str], timeout: float) -> dict[str, list[str]]: ...

    def create_index(self, name: str, body: dict[str, Any], timeout: float) -> bool: ...

    def is_concrete_index(self, name: str, timeout: float) -> bool: ...

    # Administration, for replay and verify.
    def health(self, timeout: float) -> None: ...

    def indices(self, pattern: str, timeout: float) -> dict[str, dict[str, Any]]: ...

    def put_meta(self, index: str, meta: dict[str, Any], timeout: float) -> None: ...

    def put_settings(self, index: str, settings: dict[str, Any], timeout: float) -> None: ...

    def refresh(self, index: str, timeout: float) -> None: ...

    def delete_indices(self, names: Sequence[str], timeout: float) -> None: ...

    def update_aliases(self, actions: list[dict[str, Any]], timeout: float) -> None: ...

    def documents(self, index: str, ids: Sequence[str], timeout: float,
                  includes: Sequence[str] | None = None) -> list[dict[str, Any]]: ...

    def scan(self, index: str, timeout: float) -> Iterator[dict[str, Any]]: ...


def _translate(exc: Exception, what: str) -> Exception:
    """The package's exception for a client exception raised while doing ``what``."""
    from elasticsearch import ApiError, ConnectionError, ConnectionTimeout, TransportError

    if isinstance(exc, (ConnectionError, ConnectionTimeout)):
        return RetryableError(f"{what}: cannot reach Elasticsearch ({type(exc).__name__}: {exc})")
    if isinstance(exc, ApiError):
        status = exc.meta.status if exc.meta is not None else 0
        if status in RETRY_STATUSES or status >= 500:
            return RetryableError(f"{what}: Elasticsearch answered {status} ({exc.message})")
        if status in (401, 403):
            return ClusterError(
                f"{what}: Elasticsearch refused the credentials ({status}); check "
                "ELASTICSEARCH_API_KEY or ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD"
            )
        return ClusterError(f"{what}: Elasticsearch answered {status} ({exc.message}: {exc.info})")
    if isinstance(exc, TransportError):
        return RetryableError(f"{what}: {type(exc).__name__}: {exc}")
    raise exc


class ElasticsearchStore:
    """:class:`Store` over an ``elasticsearch.Elasticsearch`` client (8.x)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def _call(self, timeout: float) -> Any:
        return self._client.options(request_timeout=max(timeout, 0.1))

    def current(self, pairs: Sequence[tuple[str, str]], timeout: float) -> dict[tuple[str, str], Current | None]:
        from elasticsearch import ApiError, TransportError

        if not pairs:
            return {}
        docs = [{"_index": index, "_id": doc_id} for index, doc_id in pairs]
        try:
            response = self._call(timeout).mget(docs=docs, source_includes=[f"{RESERVED_FIELD}.seq"])
        except (ApiError, TransportError) as exc:
            raise _translate(exc, "reading current documents") from exc
        found: dict[tuple[str, str], Current | None] = {}
        for pair, doc in zip(pairs, response["docs"]):
            error = doc.get("error")
            if error:
                kind = error.get("type") if isinstance(error, dict) else str(error)
                if kind == "index_not_found_exception":
                    raise MissingIndex(f"index {pair[0]!r} does not exist")
                raise RetryableError(f"reading {pair[0]}/{pair[1]}: {kind}")
            found[pair] = current_of(doc)
        return found

    def bulk(self, body: bytes, timeout: float) -> dict[str, Any]:
        from elasticsearch import ApiError, TransportError

        try:
            return self._call(timeout).bulk(operations=body).body
        except (ApiError, TransportError) as exc:
            raise _translate(exc, "bulk write") from exc

    def aliases(self, names: Sequence[str], timeout: float) -> dict[str, list[str]]:
        """Index → the aliases among ``names`` that point at it (missing names are left out)."""
        from elasticsearch import ApiError, NotFoundError, TransportError

        try:
            response = self._call(timeout).indices.get_alias(name=",".join(names))
            body = response.body
        except NotFoundError as exc:
            # 404 when some names are missing; the body still lists the ones that exist.
            body = exc.body if isinstance(exc.body, dict) else {}
        except (ApiError, TransportError) as exc:
            raise _translate(exc, "looking up aliases") from exc
        return {
            index: sorted(entry.get("aliases", {}))
            for index, entry in body.items()
            if isinstance(entry, dict) and entry.get("aliases")
        }

    def create_index(self, name: str, body: dict[str, Any], timeout: float) -> bool:
        """Create an index; False when it already exists (another writer won the race)."""
        from elasticsearch import ApiError, TransportError

        try:
            self._call(timeout).indices.create(index=name, **body)
        except ApiError as exc:
            if exc.meta.status == 400 and "resource_already_exists_exception" in str(exc.info):
                return False
            raise _translate(exc, f"creating index {name}") from exc
        except TransportError as exc:
            raise _translate(exc, f"creating index {name}") from exc
        return True

    def is_concrete_index(self, name: str, timeout: float) -> bool:
        from elasticsearch import ApiError, TransportError

        try:
            response = self._call(timeout).indices.get(index=name, ignore_unavailable=True)
        except (ApiError, TransportError) as exc:
            raise _translate(exc, f"looking up index {name}") from exc
        return name in response.body

    # Administration, for replay and verify ------------------------------------------------

    def _admin(self, what: str, call: Any) -> Any:
        from elasticsearch import ApiError, TransportError

        try:
            return call()
        except (ApiError, TransportError) as exc:
            raise _translate(exc, what) from exc

    def health(self, timeout: float) -> None:
        self._admin("checking cluster health", lambda: self._call(timeout).cluster.health())

    def indices(self, pattern: str, timeout: float) -> dict[str, dict[str, Any]]:
        """Index name → its definition (mappings with ``_meta``, settings, aliases)."""
        return dict(self._admin(f"listing {pattern}", lambda: self._call(timeout).indices.get(
            index=pattern, ignore_unavailable=True, allow_no_indices=True)).body)

    def put_meta(self, index: str, meta: dict[str, Any], timeout: float) -> None:
        self._admin(f"updating {index} _meta", lambda: self._call(timeout).indices.put_mapping(index=index, meta=meta))

    def put_settings(self, index: str, settings: dict[str, Any], timeout: float) -> None:
        self._admin(f"updating {index} settings",
                    lambda: self._call(timeout).indices.put_settings(index=index, settings=settings))

    def refresh(self, index: str, timeout: float) -> None:
        self._admin(f"refreshing {index}", lambda: self._call(timeout).indices.refresh(index=index))

    def delete_indices(self, names: Sequence[str], timeout: float) -> None:
        if names:
            self._admin(f"deleting {', '.join(names)}", lambda: self._call(timeout).indices.delete(
                index=",".join(names), ignore_unavailable=True))

    def update_aliases(self, actions: list[dict[str, Any]], timeout: float) -> None:
        self._admin("moving aliases", lambda: self._call(timeout).indices.update_aliases(actions=actions))

    def documents(self, index: str, ids: Sequence[str], timeout: float,
                  includes: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Raw ``mget`` entries (tombstones included: mget ignores alias filters)."""
        if not ids:
            return []
        options: dict[str, Any] = {"index": index, "ids": list(ids)}
        if includes is not None:
            options["source_includes"] = list(includes)
        return list(self._admin(f"reading from {index}", lambda: self._call(timeout).mget(**options))["docs"])

    def scan(self, index: str, timeout: float) -> Iterator[dict[str, Any]]:
        """Every hit the index (or alias, filter applied) shows, by scroll."""
        from elasticsearch import ApiError, TransportError, helpers

        try:
            yield from helpers.scan(self._call(timeout), index=index, query={"query": {"match_all": {}}}, size=1000)
        except (ApiError, TransportError) as exc:
            raise _translate(exc, f"scrolling {index}") from exc
