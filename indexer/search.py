"""The search-cluster seam: one store written once against the REST API, two transports.

Every cluster call the product makes (the guard's ``mget`` and ``bulk``, alias lookups, index
administration for replay) is a REST request written here once. A transport sends it with the
backend's own client — ``elasticsearch`` (which refuses OpenSearch) or ``opensearch-py`` (which
signs for Amazon OpenSearch Service) — and translates that client's exceptions into ours:
:class:`RetryableError` (try again), :class:`ClusterError` (stop; Lambda redelivers), or
:class:`HttpError` for answers the store interprets (404, 400).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, Sequence
from urllib.parse import quote

from .actions import Current, current_of
from .errors import AuthError, ClusterError, HttpError, IndexerError, MissingIndex, RetryableError
from .records import RESERVED_FIELD

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_JSON = "application/json"
_NDJSON = "application/x-ndjson"


def failure(status: int, body: Any, what: str) -> IndexerError:
    """Our exception for a non-2xx answer to ``what``."""
    if status in RETRY_STATUSES or status >= 500:
        return RetryableError(f"{what}: the cluster answered {status}")
    if status in (401, 403):
        return AuthError(
            status,
            f"{what}: the cluster refused the credentials ({status}); check ELASTICSEARCH_API_KEY, "
            "ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD, ELASTICSEARCH_SECRET_ARN or the function's IAM role",
        )
    return HttpError(status, body, what)


class Transport(Protocol):
    """Sends one REST request with a backend's client; raises only our exception types."""

    def request(self, method: str, path: str, what: str, timeout: float, *,
                params: Mapping[str, Any] | None = None, body: Any = None, ndjson: bool = False) -> Any: ...


class ElasticsearchTransport:
    """Requests through ``elasticsearch.Elasticsearch`` (8.x)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def request(self, method: str, path: str, what: str, timeout: float, *,
                params: Mapping[str, Any] | None = None, body: Any = None, ndjson: bool = False) -> Any:
        from elasticsearch import ApiError, TransportError

        headers = {"accept": _JSON}
        if body is not None:
            headers["content-type"] = _NDJSON if ndjson else _JSON
        try:
            response = self.client.options(request_timeout=max(timeout, 0.1)).perform_request(
                method, path, params=dict(params or {}), headers=headers, body=body)
        except ApiError as exc:
            raise failure(exc.meta.status if exc.meta is not None else 0, exc.body, what) from exc
        except TransportError as exc:  # connection refused, timeouts, TLS
            raise RetryableError(f"{what}: cannot reach the cluster ({type(exc).__name__}: {exc})") from exc
        return response.body


class SearchStore:
    """Everything the indexer does to a cluster, as REST requests over a :class:`Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def _request(self, method: str, path: str, what: str, timeout: float, **options: Any) -> Any:
        return self.transport.request(method, path, what, timeout, **options)

    # The guard ------------------------------------------------------------------------------

    def current(self, pairs: Sequence[tuple[str, str]], timeout: float) -> dict[tuple[str, str], Current | None]:
        """What each (index, id) holds: its stored sequence and revision, or None."""
        if not pairs:
            return {}
        docs = [{"_index": index, "_id": doc_id} for index, doc_id in pairs]
        response = self._request("POST", "/_mget", "reading current documents", timeout,
                                 params={"_source_includes": f"{RESERVED_FIELD}.seq,{RESERVED_FIELD}.read,{RESERVED_FIELD}.at"}, body={"docs": docs})
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
        # The whole answer, on purpose: trimming it with filter_path saved us about 1 ms of
        # parsing per 1,000 items but cost the cluster more than that (bench/bulk_bench.py).
        return self._request("POST", "/_bulk", "bulk write", timeout, body=body, ndjson=True)

    # Aliases and indices -------------------------------------------------------------------

    def aliases(self, names: Sequence[str], timeout: float) -> dict[str, list[str]]:
        """Index → the aliases among ``names`` that point at it (missing names are left out)."""
        try:
            body = self._request("GET", f"/_alias/{_names(names)}", "looking up aliases", timeout)
        except HttpError as exc:
            if exc.status != 404:
                raise
            body = exc.body if isinstance(exc.body, dict) else {}  # lists the names that exist
        return {
            index: sorted(entry.get("aliases", {}))
            for index, entry in body.items()
            if isinstance(entry, dict) and entry.get("aliases")
        }

    def create_index(self, name: str, body: dict[str, Any], timeout: float) -> bool:
        """Create an index; False when it already exists (another writer won the race)."""
        try:
            self._request("PUT", f"/{_names([name])}", f"creating index {name}", timeout, body=body)
        except HttpError as exc:
            if exc.status == 400 and "resource_already_exists_exception" in str(exc.body):
                return False
            raise
        return True

    def is_concrete_index(self, name: str, timeout: float) -> bool:
        return name in self.indices(name, timeout)

    def health(self, timeout: float) -> None:
        self._request("GET", "/_cluster/health", "checking cluster health", timeout)

    def indices(self, pattern: str, timeout: float) -> dict[str, dict[str, Any]]:
        """Index name → its definition (mappings with ``_meta``, settings, aliases)."""
        return dict(self._request("GET", f"/{_names([pattern])}", f"listing {pattern}", timeout,
                                  params={"ignore_unavailable": "true", "allow_no_indices": "true"}))

    def definitions(self, names: Sequence[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Index name → its definition, for the named indices that exist."""
        if not names:
            return {}
        return dict(self._request("GET", f"/{_names(names)}", "reading index definitions", timeout,
                                  params={"ignore_unavailable": "true", "allow_no_indices": "true"}))

    def put_meta(self, index: str, meta: dict[str, Any], timeout: float) -> None:
        self._request("PUT", f"/{_names([index])}/_mapping", f"updating {index} _meta", timeout,
                      body={"_meta": meta})

    def put_settings(self, index: str, settings: dict[str, Any], timeout: float) -> None:
        self._request("PUT", f"/{_names([index])}/_settings", f"updating {index} settings", timeout, body=settings)

    def refresh(self, index: str, timeout: float) -> None:
        self._request("POST", f"/{_names([index])}/_refresh", f"refreshing {index}", timeout)

    def delete_indices(self, names: Sequence[str], timeout: float) -> None:
        if names:
            self._request("DELETE", f"/{_names(names)}", f"deleting {', '.join(names)}", timeout,
                          params={"ignore_unavailable": "true"})

    def update_aliases(self, actions: list[dict[str, Any]], timeout: float) -> None:
        """Apply alias actions; raises when any action failed, even inside a 200 answer (a
        ``remove`` of a missing alias fails there while the other actions still apply)."""
        body = self._request("POST", "/_aliases", "moving aliases", timeout, body={"actions": actions})
        if isinstance(body, dict) and body.get("errors"):
            failed = [entry for entry in body.get("action_results", []) if entry.get("status", 200) >= 300]
            raise ClusterError(f"moving aliases: some actions failed: {str(failed)[:500]}")

    # Reading documents ----------------------------------------------------------------------

    def documents(self, index: str, ids: Sequence[str], timeout: float,
                  includes: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Raw ``mget`` entries (tombstones included: mget ignores alias filters)."""
        if not ids:
            return []
        params = {"_source_includes": ",".join(includes)} if includes is not None else None
        return list(self._request("POST", f"/{_names([index])}/_mget", f"reading from {index}", timeout,
                                  params=params, body={"ids": list(ids)})["docs"])

    def scan(self, index: str, timeout: float, query: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every hit the index (or alias, filter applied) shows — those ``query`` matches, when
        given — by scroll."""
        page = self._request("POST", f"/{_names([index])}/_search", f"scrolling {index}", timeout,
                             params={"scroll": "2m"},
                             body={"size": 1000, "sort": ["_doc"], "query": query or {"match_all": {}}})
        scroll_id = page.get("_scroll_id")
        try:
            while page["hits"]["hits"]:
                yield from page["hits"]["hits"]
                page = self._request("POST", "/_search/scroll", f"scrolling {index}", timeout,
                                     body={"scroll": "2m", "scroll_id": scroll_id})
                scroll_id = page.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                try:
                    self._request("DELETE", "/_search/scroll", "clearing a scroll", timeout,
                                  body={"scroll_id": [scroll_id]})
                except (RetryableError, ClusterError):
                    pass  # an abandoned scroll expires by itself after 2 minutes


def _names(names: Sequence[str]) -> str:
    """Index names for a URL path (wildcards and commas kept)."""
    return ",".join(quote(name, safe="*-_.+") for name in names)


class ElasticsearchStore(SearchStore):
    """The store over an ``elasticsearch.Elasticsearch`` client."""

    def __init__(self, client: Any) -> None:
        super().__init__(ElasticsearchTransport(client))


#: The protocol other modules type against; :class:`SearchStore` is its implementation.
Store = SearchStore
