"""One settings object, read from the environment and validated once.

Every error names the variable and what to do, in one line (the CLIs print it and exit 2).
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from . import redact
from .errors import SettingsError
from .metrics import DEFAULT_NAMESPACE, namespace_problem
from .records import alias_problem

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
BACKENDS = ("elasticsearch", "opensearch")
#: ``secret``: an API key or username and password read at run time from Secrets Manager.
AUTH_MODES = ("none", "basic", "api_key", "sigv4", "secret")
#: Modes that send a secret with every request (SigV4 sends the session token).
_CREDENTIAL_MODES = frozenset({"basic", "api_key", "sigv4", "secret"})
_SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}")
SIGV4_SERVICES = ("es", "aoss")
_AWS_HOST = re.compile(r".*\.([a-z0-9-]+)\.(es|aoss)\.amazonaws\.com")
#: Defaults, defined once: the dataclass, ``from_env`` and the modules that take these values
#: without a Settings object (``indexer.apply.RetryPolicy``, ``indexer.layout.Targets``) use them.
DEFAULT_ELASTICSEARCH_URL = "http://localhost:9200"
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_RETRY_MAX_ATTEMPTS = 10
DEFAULT_TIME_BUDGET = 60.0
DEFAULT_TARGETS_TTL = 15.0
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    elasticsearch_url: str = DEFAULT_ELASTICSEARCH_URL
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
    #: ``ELASTICSEARCH_SECRET_ARN``: the Secrets Manager secret holding the credentials
    #: (``indexer.secrets``), read at run time so no credential sits in the function's
    #: configuration and a rotation needs no redeploy.
    secret_arn: str | None = None
    table_name: str | None = None
    #: The alias users search; None means "the table name of each record's stream, lower-cased".
    index_name: str | None = None
    dlq_url: str | None = None
    #: Where redrive moves messages past --max-attempts (None: the default beside DLQ_URL).
    parking_queue_url: str | None = None
    #: Settings and mappings for an index the indexer creates (``{"mappings": ..., "settings": ...}``).
    index_mapping: dict[str, Any] | None = None
    log_level: str = DEFAULT_LOG_LEVEL
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    retry_max_attempts: int = DEFAULT_RETRY_MAX_ATTEMPTS
    #: Time budget when there is no Lambda context to ask (local runs).
    time_budget: float = DEFAULT_TIME_BUDGET
    #: How long the live path trusts its lookup of the indices to write; a rebuild waits longer.
    targets_ttl: float = DEFAULT_TARGETS_TTL
    #: Print CloudWatch embedded-metric-format lines (``METRICS=off`` turns them off).
    metrics: bool = True
    metrics_namespace: str = DEFAULT_NAMESPACE
    #: The Lambda function's name (``AWS_LAMBDA_FUNCTION_NAME``, set by Lambda): a metric dimension.
    function_name: str | None = None

    def required(self, name: str) -> str:
        """The value of the optional setting ``name`` (e.g. ``"dlq_url"``) for an entry point
        that cannot do without it; SettingsError naming its variable when it is unset."""
        value = getattr(self, name)
        if value is None:
            variable = name.upper()
            raise SettingsError(f"{variable} is required: {_REQUIRED_HELP.get(variable, 'set it')}")
        return str(value)

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
        get = _reader(env)
        for name in require:
            if get(name) is None:
                raise SettingsError(f"{name} is required: {_REQUIRED_HELP.get(name, 'set it')}")

        url = get("ELASTICSEARCH_URL") or cls.elasticsearch_url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                "ELASTICSEARCH_URL must be an http:// or https:// URL such as http://localhost:9200, "
                f"got {redact.url(url)!r}"
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

        backend = (get("SEARCH_BACKEND") or cls.search_backend).lower()
        if backend not in BACKENDS:
            raise SettingsError(f"SEARCH_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}")
        api_key = get("ELASTICSEARCH_API_KEY")
        secret_arn = get("ELASTICSEARCH_SECRET_ARN")
        if secret_arn is not None and not _SECRET_ARN.fullmatch(secret_arn):
            raise SettingsError(f"ELASTICSEARCH_SECRET_ARN must be a Secrets Manager secret ARN, got {secret_arn[:200]!r}")
        if secret_arn and (api_key or username):
            raise SettingsError("ELASTICSEARCH_SECRET_ARN replaces ELASTICSEARCH_API_KEY/USERNAME/PASSWORD: set one or the other")
        aws_host = _AWS_HOST.fullmatch(parts.hostname or "")
        auth = (get("SEARCH_AUTH") or (
            "secret" if secret_arn else "api_key" if api_key else "basic" if username
            else "sigv4" if backend == "opensearch" and aws_host else "none")).lower()
        if auth not in AUTH_MODES:
            raise SettingsError(f"SEARCH_AUTH must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
        if auth == "secret" and not secret_arn:
            raise SettingsError("SEARCH_AUTH=secret needs ELASTICSEARCH_SECRET_ARN")
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
        service = (get("SIGV4_SERVICE") or (aws_host.group(2) if aws_host else cls.sigv4_service)).lower()
        if service not in SIGV4_SERVICES:
            raise SettingsError(f"SIGV4_SERVICE must be es or aoss, got {service!r}")
        _check_transport_security(auth, parts.scheme, verify in _TRUE, get)

        table = table_name(env)
        index = get("INDEX_NAME") or (table.lower() if table else None)
        if index is not None:
            problem = alias_problem(index)
            if problem:
                source = "INDEX_NAME" if get("INDEX_NAME") else "TABLE_NAME (lower-cased, as the default INDEX_NAME)"
                raise SettingsError(f"{source} {index!r} cannot name an Elasticsearch alias: {problem}")

        dlq_url = _queue_url(get, "DLQ_URL")
        parking_queue_url = _queue_url(get, "PARKING_QUEUE_URL")

        mapping = _mapping(get("INDEX_MAPPING"), "INDEX_MAPPING")

        level = log_level(env)

        metrics = (get("METRICS") or "on").lower()
        if metrics not in _TRUE | _FALSE:
            raise SettingsError(f"METRICS must be on or off, got {metrics!r}")
        namespace = get("METRICS_NAMESPACE") or DEFAULT_NAMESPACE
        problem = namespace_problem(namespace)
        if problem:
            raise SettingsError(f"METRICS_NAMESPACE {namespace!r:.80} cannot name a CloudWatch namespace: {problem}")

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
            secret_arn=secret_arn,
            table_name=table,
            index_name=index,
            dlq_url=dlq_url,
            parking_queue_url=parking_queue_url,
            index_mapping=mapping,
            log_level=level,
            request_timeout=_positive(get, "ELASTICSEARCH_TIMEOUT", DEFAULT_REQUEST_TIMEOUT),
            retry_max_attempts=int(_positive(get, "RETRY_MAX_ATTEMPTS", DEFAULT_RETRY_MAX_ATTEMPTS)),
            time_budget=_positive(get, "TIME_BUDGET_SECONDS", DEFAULT_TIME_BUDGET),
            targets_ttl=_positive(get, "TARGETS_TTL_SECONDS", DEFAULT_TARGETS_TTL),
            metrics=metrics in _TRUE,
            metrics_namespace=namespace,
            function_name=get("AWS_LAMBDA_FUNCTION_NAME"),
        )


def _check_transport_security(auth: str, scheme: str, verify: bool, get: Callable[[str], str | None]) -> None:
    """Credentials go only over TLS that is verified, unless ``ELASTICSEARCH_ALLOW_INSECURE``
    says so explicitly (a local cluster): otherwise anyone on the path reads them."""
    allow = (get("ELASTICSEARCH_ALLOW_INSECURE") or "false").lower()
    if allow not in _TRUE | _FALSE:
        raise SettingsError(f"ELASTICSEARCH_ALLOW_INSECURE must be true or false, got {allow!r}")
    if auth not in _CREDENTIAL_MODES or allow in _TRUE:
        return
    if scheme != "https":
        raise SettingsError(
            f"ELASTICSEARCH_URL is http:// but SEARCH_AUTH={auth} sends credentials: use https://, "
            "or set ELASTICSEARCH_ALLOW_INSECURE=true for a local cluster")
    if not verify:
        raise SettingsError(
            f"ELASTICSEARCH_VERIFY_CERTS=false with SEARCH_AUTH={auth} would send credentials to any server: "
            "give ELASTICSEARCH_CA_CERTS instead, or set ELASTICSEARCH_ALLOW_INSECURE=true for a local cluster")


def _reader(env: Mapping[str, str] | None) -> Callable[[str], str | None]:
    """``get(name)``: the variable's value stripped, None when unset or blank."""
    source = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = source.get(name)
        return value.strip() if value and value.strip() else None

    return get


def log_level(env: Mapping[str, str] | None = None) -> str:
    """``LOG_LEVEL``, checked: for entry points that need no other setting (local sync, the
    sample app) and for :meth:`Settings.from_env`."""
    level = (_reader(env)("LOG_LEVEL") or DEFAULT_LOG_LEVEL).upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


def table_name(env: Mapping[str, str] | None = None) -> str | None:
    """``TABLE_NAME``, or None when it is unset."""
    return _reader(env)("TABLE_NAME")


def _queue_url(get: Callable[[str], str | None], name: str) -> str | None:
    url = get(name)
    if url and not urlsplit(url).scheme.startswith("http"):
        raise SettingsError(f"{name} must be an SQS queue URL (https://...), got {url!r}")
    return url


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


#: Largest index body file read (an index body is a few kilobytes; /dev/zero never ends).
MAX_MAPPING_BYTES = 1 << 20


def _mapping(text: str | None, name: str) -> dict[str, Any] | None:
    """An index body from inline JSON (starting with ``{``) or from the JSON file it names."""
    if text is None:
        return None
    if not text.startswith("{"):
        return mapping_file(text, name)
    return mapping_body(_json(text, name, "its value"), name)


def mapping_file(path: str, name: str) -> dict[str, Any]:
    """The index body in the JSON file ``path``: a regular file of at most
    :data:`MAX_MAPPING_BYTES`, UTF-8 JSON without NaN or Infinity; one clear line otherwise."""
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise SettingsError(f"{name}: {path!r} is not a regular file")
            raw = handle.read(MAX_MAPPING_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path!r}: {exc.strerror}") from None
    if len(raw) > MAX_MAPPING_BYTES:
        raise SettingsError(f"{name}: {path!r} is larger than {MAX_MAPPING_BYTES} bytes; an index body is not")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{name}: {path!r} is not UTF-8 text") from None
    return mapping_body(_json(text, name, repr(path)), name)


def _json(text: str, name: str, source: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as exc:
        raise SettingsError(f"{name}: {source} is not valid JSON ({exc})") from None
    except RecursionError:
        raise SettingsError(f"{name}: {source} is nested too deeply to be an index body") from None


def mapping_body(body: Any, name: str) -> dict[str, Any]:
    """``body`` checked to be an index body with only ``settings`` and ``mappings``."""
    if not isinstance(body, dict) or not body or set(body) - {"settings", "mappings"}:
        raise SettingsError(f'{name} must be a JSON object with "settings" and/or "mappings"')
    return body
