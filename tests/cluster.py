"""A backend-neutral REST client for test assertions, for Elasticsearch and OpenSearch alike.

The product talks to clusters through its own store; tests check the result independently,
with plain HTTP. The methods mirror the elasticsearch-py 8 calls the tests use (keyword
arguments, ``.body`` on responses) so a test reads the same whichever backend runs it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from typing import Any


class ClusterHTTPError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {str(body)[:500]}")
        self.status = status
        self.body = body
        self.meta = type("Meta", (), {"status": status})()


class Body(dict):
    """A JSON object response; ``.body`` is itself (as elasticsearch-py's ApiResponse)."""

    @property
    def body(self) -> "Body":
        return self


def _flag(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class _Indices:
    def __init__(self, cluster: "Cluster") -> None:
        self._c = cluster

    def refresh(self, index: str) -> Body:
        return self._c.call("POST", f"/{index}/_refresh")

    def delete(self, index: str, ignore_unavailable: bool = False, allow_no_indices: bool | None = None) -> Body:
        params = {"ignore_unavailable": ignore_unavailable}
        if allow_no_indices is not None:
            params["allow_no_indices"] = allow_no_indices
        return self._c.call("DELETE", f"/{index}", params)

    def exists(self, index: str) -> bool:
        return self._c.call("HEAD", f"/{index}") is not None

    def exists_alias(self, name: str) -> bool:
        return self._c.call("HEAD", f"/_alias/{name}") is not None

    def get(self, index: str, ignore_unavailable: bool = False, allow_no_indices: bool | None = None) -> Body:
        params = {"ignore_unavailable": ignore_unavailable}
        if allow_no_indices is not None:
            params["allow_no_indices"] = allow_no_indices
        return self._c.call("GET", f"/{index}", params)

    def get_alias(self, name: str, index: str | None = None) -> Body:
        return self._c.call("GET", f"/{index}/_alias/{name}" if index else f"/_alias/{name}")

    def create(self, index: str, **body: Any) -> Body:
        return self._c.call("PUT", f"/{index}", body=body or None)

    def put_mapping(self, index: str, **body: Any) -> Body:
        return self._c.call("PUT", f"/{index}/_mapping", body=body)

    def get_mapping(self, index: str) -> Body:
        return self._c.call("GET", f"/{index}/_mapping")

    def update_aliases(self, actions: list[dict[str, Any]]) -> Body:
        return self._c.call("POST", "/_aliases", body={"actions": actions})

    def stats(self, index: str, metric: str | None = None) -> Body:
        return self._c.call("GET", f"/{index}/_stats/{metric}" if metric else f"/{index}/_stats")


class _ClusterApi:
    def __init__(self, cluster: "Cluster") -> None:
        self._c = cluster

    def health(self, **params: Any) -> Body:
        return self._c.call("GET", "/_cluster/health", params)


class Cluster:
    """Plain-HTTP client for one cluster URL; ``exact=True`` parses decimals as Decimal."""

    def __init__(self, url: str, exact: bool = False, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.exact = exact
        self.timeout = timeout
        self.indices = _Indices(self)
        self.cluster = _ClusterApi(self)

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        query = urllib.parse.urlencode({k: _flag(v) for k, v in (params or {}).items()})
        url = f"{self.url}{urllib.parse.quote(path, safe='/,*_-.|+%')}" + (f"?{query}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"content-type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if method == "HEAD" and exc.code == 404:
                return None
            raw = exc.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ClusterHTTPError(exc.code, parsed) from None
        if method == "HEAD":
            return True
        parsed = json.loads(raw, parse_float=Decimal if self.exact else float) if raw else {}
        return Body(parsed) if isinstance(parsed, dict) else parsed

    def search(self, index: str, query: dict[str, Any] | None = None, size: int = 10, **body: Any) -> Body:
        return self.call("POST", f"/{index}/_search", body={"query": query or {"match_all": {}}, "size": size, **body})

    def count(self, index: str, query: dict[str, Any] | None = None) -> Body:
        return self.call("POST", f"/{index}/_count", body={"query": query} if query else None)

    def get(self, index: str, id: str) -> Body:
        return self.call("GET", f"/{index}/_doc/{urllib.parse.quote(id, safe='')}")

    def mget(self, index: str, ids: list[str]) -> Body:
        return self.call("POST", f"/{index}/_mget", body={"ids": ids})

    def index(self, index: str, id: str, document: dict[str, Any], refresh: bool = False) -> Body:
        return self.call("PUT", f"/{index}/_doc/{urllib.parse.quote(id, safe='')}", {"refresh": refresh}, document)

    def delete(self, index: str, id: str, refresh: bool = False) -> Body:
        return self.call("DELETE", f"/{index}/_doc/{urllib.parse.quote(id, safe='')}", {"refresh": refresh})

    def close(self) -> None:
        pass
