"""Shared pytest fixtures.

Sections:
  1. Elasticsearch (real server via scripts/es_local.py): es_url, es_client, private_es
  (further sections below it)
"""

from __future__ import annotations

import os
import threading
import urllib.parse
import uuid
from collections.abc import Iterator

import es_local  # scripts/ is on pythonpath (pyproject [tool.pytest.ini_options])
import pytest
from cluster import Cluster

# ==========================================================================
# 1. Elasticsearch
#
# The indexer is tested against a real Elasticsearch because its behaviour
# under version conflicts, bulk partial failures and outages is the point.
# Set ELASTICSEARCH_URL to use an existing cluster instead of starting one.
#
# Note: the minimal distribution answers `GET /` with 405, so `es.info()`
# fails against it; use `es.cluster.health()` for liveness checks.
# ==========================================================================

ES_START_TIMEOUT = float(os.environ.get("ES_LOCAL_START_TIMEOUT", "180"))

# Which server the session runs: SEARCH_BACKEND=opensearch starts OpenSearch
# (es_local's 2.19.6 integ-test zip) instead of Elasticsearch.  Read once at
# import, before any test's monkeypatch touches the variable.
SEARCH_BACKEND = os.environ.get("SEARCH_BACKEND", "elasticsearch")


def pytest_configure(config: pytest.Config) -> None:
    if SEARCH_BACKEND not in es_local.DISTRIBUTIONS:
        raise pytest.UsageError(
            f"SEARCH_BACKEND={SEARCH_BACKEND!r}: expected one of {', '.join(es_local.DISTRIBUTIONS)}"
        )


def _redact(url: str) -> str:
    """URL without credentials, for error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    """Base URL of the session's Elasticsearch.

    ELASTICSEARCH_URL if set (must be healthy); otherwise a local instance
    named "pytest" started with a fresh data dir and stopped at session end.
    If another live session (another terminal, an xdist worker) holds
    "pytest", this one gets "pytest-2", etc., so sessions never wipe each
    other's cluster.  State stays on disk (see es_local.cache_dir()) for
    post-mortems and is wiped by the next session's fresh start.
    """
    external = os.environ.get("ELASTICSEARCH_URL")
    if external:
        try:
            es_local.wait_healthy(external, timeout=30)
        except TimeoutError as e:
            pytest.fail(
                f"ELASTICSEARCH_URL={_redact(external)} is set but the cluster is not "
                f"reachable/healthy: {str(e).replace(external, _redact(external))}",
                pytrace=False,
            )
        yield external
        return

    # A name per backend, so alternating sessions do not wipe and switch one instance.
    base = "pytest" if SEARCH_BACKEND == "elasticsearch" else f"pytest-{SEARCH_BACKEND}"
    with es_local.claim(base) as name:
        try:
            inst = es_local.start(
                name=name, fresh=True, timeout=ES_START_TIMEOUT, distribution=SEARCH_BACKEND
            )
        except es_local.LaunchError as e:
            pytest.fail(f"could not start local {SEARCH_BACKEND}: {e}", pytrace=False)
        try:
            yield inst.url
        finally:
            es_local.stop(name)


@pytest.fixture(scope="session")
def es_client(es_url: str) -> Iterator[Cluster]:
    """Client for the session's Elasticsearch (see es_url)."""
    client = Cluster(es_url)
    try:
        yield client
    finally:
        client.close()


class PrivateES:
    """A private Elasticsearch instance a test may stop and restart.

    For tests like "Elasticsearch stopped mid-run, restarted, retry
    converges": ``stop()`` makes the port refuse connections, ``start()``
    brings it back on the same URL with the same data.  ``url`` stays valid
    (same value) while stopped, so code under test can keep pointing at it.
    """

    def __init__(self, name: str, heap: str = "512m") -> None:
        self.name = name
        self.heap = heap
        self._instance: es_local.Instance | None = None

    @property
    def instance(self) -> es_local.Instance:
        if self._instance is None:
            raise RuntimeError(f"private Elasticsearch {self.name!r} was never started")
        return self._instance

    @property
    def url(self) -> str:
        return self.instance.url

    @property
    def port(self) -> int:
        return self.instance.port

    def start(self) -> es_local.Instance:
        """Start (or restart on the same port with the same data); waits for health."""
        port = self._instance.port if self._instance is not None else None
        self._instance = es_local.start(
            name=self.name, port=port, heap=self.heap, timeout=ES_START_TIMEOUT,
            distribution=SEARCH_BACKEND,
        )
        return self._instance

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 60 s); data is kept."""
        es_local.stop(self.name)

    def is_running(self) -> bool:
        return es_local.is_running(self.name) is not None

    def client(self) -> Cluster:
        """A plain-HTTP client for this instance, whichever backend it runs."""
        return Cluster(self.url)


@pytest.fixture(scope="session")
def _private_es_of_session() -> Iterator[PrivateES]:
    """The session's one private instance (not started until a test asks for it), deleted at
    the end of the session."""
    helper = PrivateES(f"pytest-private-{uuid.uuid4().hex[:12]}")
    try:
        yield helper
    finally:
        es_local.remove(helper.name)


@pytest.fixture
def private_es(_private_es_of_session: PrivateES) -> PrivateES:
    """A running private instance, apart from the session's cluster, that the test may stop,
    restart or wipe.

    One instance serves every test of the session that asks for it (a start costs 10-30 s, and
    several tests each paid it): each test gets it running — started again if an earlier test
    left it stopped (same port, same data) — and must use names of its own in it, as it does
    in the session's cluster.
    """
    helper = _private_es_of_session
    try:
        helper.start()  # the running process itself when it is already up
    except es_local.LaunchError as e:
        pytest.fail(f"could not start private Elasticsearch: {e}", pytrace=False)
    return helper


# ==========================================================================
# End of section 1 (Elasticsearch).  Add other fixtures below.
# ==========================================================================


# ==========================================================================
# 2. The indexer wired to the real Elasticsearch and a moto SQS queue
# ==========================================================================

import json  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from stream_events import event  # noqa: E402
from indexer import handler as lambda_handler  # noqa: E402
from indexer.records import RESERVED_FIELD  # noqa: E402


class LambdaContext:
    """The part of Lambda's context the handler uses: the time left, counting down for real."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto for every AWS call made in the test."""
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # botocore otherwise sends some calls to an account endpoint moto does not intercept.
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        # In-process moto is invisible to other processes: a replay runs its one worker in-process.
        "REPLAY_WORKERS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # In-process moto answers on the caller's thread and is not thread-safe: an UpdateItem on
    # the writer thread of tests/tables.py changed an item's attributes while a BatchGetItem on
    # the live-sync thread iterated them ("dictionary changed size during iteration", seen once
    # in CI; it killed that thread). DynamoDB answers each request atomically; so does this.
    from moto.core.botocore_stubber import BotocoreStubber

    answer = BotocoreStubber.__call__

    def one_request_at_a_time(self: BotocoreStubber, event_name: str, request: Any, **kwargs: Any) -> Any:
        with _MOTO_REQUESTS:
            return answer(self, event_name, request, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", one_request_at_a_time)
    with mock_aws():
        yield


#: One in-process moto request at a time, across threads (see the ``aws`` fixture).
_MOTO_REQUESTS = threading.RLock()


@dataclass
class Sync:
    """The Lambda handler, configured through the environment as in production."""

    alias: str
    es: Cluster
    queue_url: str
    monkeypatch: pytest.MonkeyPatch
    _letters: list[dict[str, Any]] = field(default_factory=list)

    def deliver(self, *records: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return lambda_handler.handler(event(*records), context)

    def invoke(self, payload: Any, context: Any = None) -> dict[str, Any]:
        return lambda_handler.handler(payload, context)

    def configure(self, **env: str | None) -> None:
        """Change settings for the next invocation (a new container)."""
        for name, value in env.items():
            if value is None:
                self.monkeypatch.delenv(name, raising=False)
            else:
                self.monkeypatch.setenv(name, value)
        lambda_handler.reset()

    def docs(self) -> dict[str, dict[str, Any]]:
        """Every document the alias shows, by id, without bookkeeping."""
        self.es.indices.refresh(index=self.alias)
        hits = self.es.search(index=self.alias, query={"match_all": {}}, size=10_000)["hits"]["hits"]
        return {
            hit["_id"]: {k: v for k, v in hit["_source"].items() if k != RESERVED_FIELD} for hit in hits
        }

    def raw(self, doc_id: str) -> dict[str, Any] | None:
        """The stored document (tombstones included) in the index behind the alias."""
        found = self.es.mget(index=self.alias, ids=[doc_id])["docs"][0]
        return found["_source"] if found.get("found") else None

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead-letter message so far, parsed."""
        import boto3

        sqs = boto3.client("sqs")
        while True:
            got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=3600)
            messages = got.get("Messages", [])
            if not messages:
                return self._letters
            self._letters.extend(json.loads(m["Body"]) for m in messages)


@pytest.fixture
def sync(aws: None, es_client: Cluster, es_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sync]:
    """The handler on a fresh alias of the session's Elasticsearch, with a moto dead-letter queue."""
    import boto3

    alias = f"test-{uuid.uuid4().hex[:10]}"
    queue_url = boto3.client("sqs").create_queue(QueueName=f"dlq-{alias}")["QueueUrl"]
    for name in ("TABLE_NAME", "INDEX_MAPPING", "ELASTICSEARCH_API_KEY", "ELASTICSEARCH_USERNAME",
                 "ELASTICSEARCH_PASSWORD", "SEARCH_AUTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEARCH_BACKEND", SEARCH_BACKEND)
    monkeypatch.setenv("ELASTICSEARCH_URL", es_url)
    monkeypatch.setenv("INDEX_NAME", alias)
    monkeypatch.setenv("DLQ_URL", queue_url)
    lambda_handler.reset()
    try:
        yield Sync(alias, es_client, queue_url, monkeypatch)
    finally:
        lambda_handler.reset()
        es_client.indices.delete(index=f"{alias}-*", ignore_unavailable=True, allow_no_indices=True)


# ==========================================================================
# 3. moto server (a separate process, for tests that run the CLIs as subprocesses)
# ==========================================================================

def moto_process(script: str | None = None) -> Iterator[str]:
    """A moto server (or ``script``, one that patches moto first) on a free loopback port, for
    a fixture to yield from; stopped after."""
    import moto_local

    try:
        process, url = moto_local.start(script=script)
    except moto_local.MotoError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port; its URL (``aws_server`` resets it per test)."""
    yield from moto_process()


@pytest.fixture
def aws_server(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """boto3 (in this process and in subprocesses) pointed at a freshly reset moto server."""
    point_boto3_at(moto_server, monkeypatch)
    yield moto_server


def point_boto3_at(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reset the moto server at ``server`` and point boto3 (here and in subprocesses) at it."""
    import moto_local

    moto_local.reset(server)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": server,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.delenv(name, raising=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches the real cluster (through any fixture) carries the ``es`` mark,
    so ``-m "not es"`` is a true unit run and ``-m es`` the integration run."""
    for item in items:
        if "es_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.es)
