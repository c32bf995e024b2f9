"""Clients and stores for the configured backend: Elasticsearch or OpenSearch.

``SEARCH_BACKEND`` picks the client library (the ``elasticsearch`` client refuses to talk to
OpenSearch). Each client is configured the same way: our own retries (none in the client),
TLS verified unless told otherwise, credentials never logged. For Amazon OpenSearch Service,
requests are signed with SigV4 from the function's own credentials (boto3's chain), refreshed
as they rotate.
"""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any, Callable, Mapping

from . import secrets
from .errors import AuthError, ClusterError, RetryableError
from .search import SearchStore, Store, Transport, failure
from .settings import Settings

_JSON = "application/json"
_NDJSON = "application/x-ndjson"


def store_for(settings: Settings, exact_numbers: bool = False) -> SearchStore:
    """The store for ``settings``; ``exact_numbers`` parses response decimals as Decimal."""
    return SearchStore(transport_for(settings, exact_numbers))


def transport_for(settings: Settings, exact_numbers: bool = False) -> Transport:
    if settings.search_auth == "secret":
        return SecretTransport(settings, exact_numbers)
    return _client_transport(settings, exact_numbers)


def _client_transport(settings: Settings, exact_numbers: bool = False) -> Transport:
    from .search import ElasticsearchTransport

    if settings.search_backend == "opensearch":
        return OpenSearchTransport(opensearch_client(settings, exact_numbers))
    return ElasticsearchTransport(elasticsearch_client(settings, exact_numbers))


def elasticsearch_client(settings: Settings, exact_numbers: bool = False) -> Any:
    """An ``elasticsearch.Elasticsearch`` client (8.x) for ``settings``."""
    from elasticsearch import Elasticsearch

    options: dict[str, Any] = {
        "request_timeout": settings.request_timeout,
        "max_retries": 0,
        "retry_on_timeout": False,
        "verify_certs": settings.verify_certs,
    }
    if settings.ca_certs:
        options["ca_certs"] = settings.ca_certs
    if not settings.verify_certs:
        options["ssl_show_warn"] = False
    if settings.search_auth == "api_key":
        options["api_key"] = settings.api_key
    elif settings.search_auth == "basic":
        options["basic_auth"] = (settings.username, settings.password)
    if exact_numbers:
        from elasticsearch.serializer import CompatibilityModeJsonSerializer, JsonSerializer

        class ExactJson(JsonSerializer):
            def json_loads(self, data: bytes) -> Any:
                return json.loads(data, parse_float=Decimal)

        class ExactCompatibilityJson(CompatibilityModeJsonSerializer):
            def json_loads(self, data: bytes) -> Any:
                return json.loads(data, parse_float=Decimal)

        options["serializers"] = {ExactJson.mimetype: ExactJson(),
                                  ExactCompatibilityJson.mimetype: ExactCompatibilityJson()}
    return Elasticsearch(settings.elasticsearch_url, **options)


def opensearch_client(settings: Settings, exact_numbers: bool = False) -> Any:
    """An ``opensearchpy.OpenSearch`` client for ``settings`` (SigV4-signed for AWS)."""
    import logging

    from opensearchpy import OpenSearch

    # It logs every non-2xx answer as a warning, including the 404s the store expects.
    logging.getLogger("opensearch").setLevel(logging.ERROR)

    options: dict[str, Any] = {
        "hosts": [settings.elasticsearch_url],
        "timeout": settings.request_timeout,
        "max_retries": 0,
        "retry_on_timeout": False,
        "verify_certs": settings.verify_certs,
        "ssl_show_warn": settings.verify_certs,
    }
    if settings.ca_certs:
        options["ca_certs"] = settings.ca_certs
    if settings.search_auth == "basic":
        options["http_auth"] = (settings.username, settings.password)
    elif settings.search_auth == "sigv4":
        options["http_auth"] = sigv4_auth(settings)
    if exact_numbers:
        from opensearchpy.serializer import JSONSerializer

        class ExactJson(JSONSerializer):
            def loads(self, s: str) -> Any:
                return json.loads(s, parse_float=Decimal)

        options["serializer"] = ExactJson()
    return OpenSearch(**options)


def sigv4_auth(settings: Settings) -> Any:
    """Signs each request with the current credentials of boto3's chain (the Lambda role)."""
    from opensearchpy import Urllib3AWSV4SignerAuth

    from . import aws

    credentials = aws.credentials()
    if credentials is None:
        raise ClusterError("SEARCH_AUTH=sigv4 but no AWS credentials were found (role, env or profile)")
    return Urllib3AWSV4SignerAuth(credentials, settings.aws_region, settings.sigv4_service)


class OpenSearchTransport:
    """Requests through ``opensearchpy.OpenSearch``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def request(self, method: str, path: str, what: str, timeout: float, *,
                params: Mapping[str, Any] | None = None, body: Any = None, ndjson: bool = False) -> Any:
        from opensearchpy.exceptions import ConnectionError as Unreachable
        from opensearchpy.exceptions import TransportError

        query = dict(params or {})
        query["request_timeout"] = max(timeout, 0.1)
        headers = {"content-type": _NDJSON if ndjson else _JSON} if body is not None else None
        try:
            return self.client.transport.perform_request(method, path, params=query, body=body, headers=headers)
        except Unreachable as exc:  # also timeouts and TLS errors
            raise RetryableError(f"{what}: cannot reach the cluster ({type(exc).__name__})") from exc
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            raise failure(status, exc.info, what) from exc


def with_credentials(settings: Settings, credentials: secrets.Credentials) -> Settings:
    """``settings`` authenticating with ``credentials`` (read from ELASTICSEARCH_SECRET_ARN)."""
    if credentials.api_key is not None:
        if settings.search_backend == "opensearch":
            raise ClusterError("the secret holds an API key, an Elasticsearch feature: OpenSearch takes a username and password")
        return replace(settings, search_auth="api_key", api_key=credentials.api_key)
    return replace(settings, search_auth="basic", username=credentials.username, password=credentials.password)


class SecretTransport:
    """Requests with the credentials in ``ELASTICSEARCH_SECRET_ARN``, read once per container;
    on a 401 the secret is read once more and, when it changed (a rotation), the request is
    sent again with the new value."""

    def __init__(self, settings: Settings, exact_numbers: bool = False, *,
                 build: Callable[[Settings, bool], Transport] = _client_transport,
                 read: Callable[..., secrets.Credentials] = secrets.credentials) -> None:
        self._settings, self._exact, self._build, self._read = settings, exact_numbers, build, read
        self._arn = settings.secret_arn or ""
        self._credentials: secrets.Credentials | None = None
        self._inner: Transport | None = None

    def request(self, method: str, path: str, what: str, timeout: float, **options: Any) -> Any:
        if self._inner is None:  # on first use: building the store reads nothing
            self._credentials = self._read(self._arn)
            self._inner = self._build(with_credentials(self._settings, self._credentials), self._exact)
        try:
            return self._inner.request(method, path, what, timeout, **options)
        except AuthError as exc:
            if exc.status != 401:
                raise
            fresh = self._read(self._arn, fresh=True)
            if fresh == self._credentials:
                raise
        self._credentials = fresh
        self._inner = self._build(with_credentials(self._settings, fresh), self._exact)
        return self._inner.request(method, path, what, timeout, **options)


def check_cluster(store: Store, url: str) -> None:
    """Fail fast, in one line, when the cluster cannot be reached or refuses us (CLIs, local
    sync: before any work starts). Raises :class:`ClusterError`: the CLIs exit 3 for it, apart
    from bad flags or settings (2), since the fix is elsewhere (the cluster, the network)."""
    try:
        store.health(10)
    except RetryableError as exc:
        raise ClusterError(f"cannot reach the search cluster at {url} (ELASTICSEARCH_URL): {exc}") from None
    except ClusterError as exc:
        raise ClusterError(f"the search cluster at {url} refused us: {exc}") from None
