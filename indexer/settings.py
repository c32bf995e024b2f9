"""One settings object, read from the environment and validated once.

Every error names the variable and what to do, in one line (the CLIs print it and exit 2).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import SettingsError
from .records import alias_problem

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
BACKENDS = ("elasticsearch", "opensearch")
AUTH_MODES = ("none", "basic", "api_key", "sigv4")
SIGV4_SERVICES = ("es", "aoss")
_AWS_HOST = re.compile(r".*\.([a-z0-9-]+)\.(es|aoss)\.amazonaws\.com")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    elasticsearch_url: str = "http://localhost:9200"
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    search_backend: str = "elasticsearch"
    #: How requests are authenticated: none, basic, api_key, or sigv4 (Amazon OpenSearch Service).
    search_auth: str = "none"
    aws_region: str | None = None
    sigv4_service: str = "es"
    table_name: str | None = None
    #: The alias users search; None means "the table name of each record's stream, lower-cased".
    index_name: str | None = None
    dlq_url: str | None = None
    #: Settings and mappings for an index the indexer creates (``{"mappings": ..., "settings": ...}``).
    index_mapping: dict[str, Any] | None = None
    log_level: str = "INFO"
    request_timeout: float = 30.0
    retry_max_attempts: int = 10
    #: Time budget when there is no Lambda context to ask (local runs).
    time_budget: float = 60.0
    #: How long the live path trusts its lookup of the indices to write; a rebuild waits longer.
    targets_ttl: float = 15.0

    def __repr__(self) -> str:  # never print secrets
        return (
            f"Settings(elasticsearch_url={self.elasticsearch_url!r}, index_name={self.index_name!r}, "
            f"table_name={self.table_name!r}, dlq_url={self.dlq_url!r}, backend={self.search_backend!r}, "
            f"auth={self.search_auth!r})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, require: tuple[str, ...] = ()) -> "Settings":
        """Settings from ``env`` (default ``os.environ``); ``require`` names variables that this
        entry point cannot do without, e.g. ``("DLQ_URL",)`` for the handler."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        for name in require:
            if get(name) is None:
                raise SettingsError(f"{name} is required: {_REQUIRED_HELP.get(name, 'set it')}")

        url = get("ELASTICSEARCH_URL") or cls.elasticsearch_url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                f"ELASTICSEARCH_URL must be an http:// or https:// URL such as http://localhost:9200, got {url!r}"
            )
        if parts.username or parts.password:
            raise SettingsError(
                "ELASTICSEARCH_URL must not hold credentials: use ELASTICSEARCH_API_KEY or "
                "ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD"
            )
        username, password = get("ELASTICSEARCH_USERNAME"), get("ELASTICSEARCH_PASSWORD")
        if bool(username) != bool(password):
            raise SettingsError("ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD must be set together")
        verify = (get("ELASTICSEARCH_VERIFY_CERTS") or "true").lower()
        if verify not in _TRUE | _FALSE:
            raise SettingsError(f"ELASTICSEARCH_VERIFY_CERTS must be true or false, got {verify!r}")
        ca_certs = get("ELASTICSEARCH_CA_CERTS")
        if ca_certs and not os.path.isfile(ca_certs):
            raise SettingsError(f"ELASTICSEARCH_CA_CERTS names no file: {ca_certs!r}")

        backend = (get("SEARCH_BACKEND") or "elasticsearch").lower()
        if backend not in BACKENDS:
            raise SettingsError(f"SEARCH_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}")
        api_key = get("ELASTICSEARCH_API_KEY")
        aws_host = _AWS_HOST.fullmatch(parts.hostname or "")
        auth = (get("SEARCH_AUTH") or (
            "api_key" if api_key else "basic" if username
            else "sigv4" if backend == "opensearch" and aws_host else "none")).lower()
        if auth not in AUTH_MODES:
            raise SettingsError(f"SEARCH_AUTH must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
        if auth == "api_key" and not api_key:
            raise SettingsError("SEARCH_AUTH=api_key needs ELASTICSEARCH_API_KEY")
        if auth == "basic" and not username:
            raise SettingsError("SEARCH_AUTH=basic needs ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD")
        if auth == "api_key" and backend == "opensearch":
            raise SettingsError("ELASTICSEARCH_API_KEY is an Elasticsearch feature: OpenSearch takes basic auth or SigV4")
        if auth == "sigv4" and backend != "opensearch":
            raise SettingsError("SEARCH_AUTH=sigv4 signs for Amazon OpenSearch Service: set SEARCH_BACKEND=opensearch")
        region = get("AWS_REGION") or get("AWS_DEFAULT_REGION") or (aws_host.group(1) if aws_host else None)
        if auth == "sigv4" and not region:
            raise SettingsError("AWS_REGION is required to sign requests with SigV4 (SEARCH_AUTH=sigv4)")
        service = (get("SIGV4_SERVICE") or (aws_host.group(2) if aws_host else "es")).lower()
        if service not in SIGV4_SERVICES:
            raise SettingsError(f"SIGV4_SERVICE must be es or aoss, got {service!r}")

        table = get("TABLE_NAME")
        index = get("INDEX_NAME") or (table.lower() if table else None)
        if index is not None:
            problem = alias_problem(index)
            if problem:
                source = "INDEX_NAME" if get("INDEX_NAME") else "TABLE_NAME (lower-cased, as the default INDEX_NAME)"
                raise SettingsError(f"{source} {index!r} cannot name an Elasticsearch alias: {problem}")

        dlq_url = get("DLQ_URL")
        if dlq_url and not urlsplit(dlq_url).scheme.startswith("http"):
            raise SettingsError(f"DLQ_URL must be an SQS queue URL (https://...), got {dlq_url!r}")

        mapping = _mapping(get("INDEX_MAPPING"), "INDEX_MAPPING")

        level = (get("LOG_LEVEL") or "INFO").upper()
        if level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")

        return cls(
            elasticsearch_url=url.rstrip("/"),
            api_key=api_key,
            username=username,
            password=password,
            ca_certs=ca_certs,
            verify_certs=verify in _TRUE,
            search_backend=backend,
            search_auth=auth,
            aws_region=region,
            sigv4_service=service,
            table_name=table,
            index_name=index,
            dlq_url=dlq_url,
            index_mapping=mapping,
            log_level=level,
            request_timeout=_positive(get, "ELASTICSEARCH_TIMEOUT", 30.0),
            retry_max_attempts=int(_positive(get, "RETRY_MAX_ATTEMPTS", 10)),
            time_budget=_positive(get, "TIME_BUDGET_SECONDS", 60.0),
            targets_ttl=_positive(get, "TARGETS_TTL_SECONDS", 15.0),
        )


_REQUIRED_HELP = {
    "DLQ_URL": "set it to the URL of the SQS queue that receives records that cannot be indexed",
    "TABLE_NAME": "set it to the DynamoDB table to read",
}


def _positive(get, name: str, default: float) -> float:  # type: ignore[no-untyped-def]
    text = get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {text!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be greater than 0, got {text!r}")
    return value


def _mapping(text: str | None, name: str) -> dict[str, Any] | None:
    """An index body from inline JSON or from the JSON file it names."""
    if text is None:
        return None
    source = "its value"
    if not text.startswith("{"):
        source = text
        try:
            with open(text, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise SettingsError(f"{name} is neither JSON nor a readable file: {exc.strerror}: {source!r}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name}: {source} is not valid JSON ({exc})") from None
    return mapping_body(body, name)


def mapping_body(body: Any, name: str) -> dict[str, Any]:
    """``body`` checked to be an index body with only ``settings`` and ``mappings``."""
    if not isinstance(body, dict) or not body or set(body) - {"settings", "mappings"}:
        raise SettingsError(f'{name} must be a JSON object with "settings" and/or "mappings"')
    return body
