"""Credentials from Secrets Manager at run time: read once per container, again once on 401."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from stream_events import put
from indexer import secrets
from indexer.backends import SecretTransport
from indexer.errors import AuthError
from indexer.settings import Settings


@pytest.fixture
def secret(aws) -> str:
    secrets.reset()
    yield boto3.client("secretsmanager").create_secret(
        Name="search-credentials", SecretString=json.dumps({"api_key": "first-key"}))["ARN"]
    secrets.reset()


def counting() -> tuple[list[str], Any]:
    calls: list[str] = []

    def client(service: str, region: str | None) -> Any:
        real = boto3.client(service, region_name=region)

        class Counted:
            def get_secret_value(self, **kwargs: Any) -> Any:
                calls.append(kwargs["SecretId"])
                return real.get_secret_value(**kwargs)

        return Counted()

    return calls, client


def test_the_secret_is_read_once_per_container(secret):
    calls, client = counting()

    first = secrets.credentials(secret, client=client)
    again = secrets.credentials(secret, client=client)

    assert first == again == secrets.Credentials(api_key="first-key") and calls == [secret]
    assert "first-key" not in repr(first)


@pytest.mark.parametrize("text, expected", [
    ('{"api_key": "k"}', secrets.Credentials(api_key="k")),
    ('{"username": "u", "password": "p"}', secrets.Credentials(username="u", password="p")),
    ("plain-key", secrets.Credentials(api_key="plain-key")),
])
def test_the_secret_holds_an_api_key_or_a_username_and_password(text, expected):
    assert secrets.parse(text, "arn") == expected


class _Cluster:
    """A transport that accepts one API key: 401 for any other, as a cluster after rotation."""

    def __init__(self, accepted: str, built: list[str]) -> None:
        self.accepted, self.built = accepted, built

    def __call__(self, settings: Settings, exact: bool) -> Any:
        self.built.append(settings.api_key or "")
        cluster = self

        class Transport:
            def request(self, method: str, path: str, what: str, timeout: float, **options: Any) -> Any:
                if settings.api_key != cluster.accepted:
                    raise AuthError(401, f"{what}: 401")
                return {"ok": True}

        return Transport()


def secret_settings(arn: str) -> Settings:
    return Settings.from_env({"ELASTICSEARCH_URL": "https://search.example.com", "ELASTICSEARCH_SECRET_ARN": arn})


def test_a_rotated_secret_is_read_again_once_on_401_and_the_request_succeeds(secret):
    calls, client = counting()
    built: list[str] = []
    cluster = _Cluster("first-key", built)
    transport = SecretTransport(secret_settings(secret), build=cluster,
                                read=lambda arn, fresh=False: secrets.credentials(arn, fresh=fresh, client=client))
    assert transport.request("GET", "/", "health", 1) == {"ok": True}

    boto3.client("secretsmanager").put_secret_value(SecretId=secret, SecretString='{"api_key": "second-key"}')
    cluster.accepted = "second-key"

    assert transport.request("GET", "/", "health", 1) == {"ok": True}
    assert built == ["first-key", "second-key"] and len(calls) == 2


def test_a_401_with_an_unchanged_secret_fails_after_one_read(secret):
    calls, client = counting()
    cluster = _Cluster("another-key", [])
    transport = SecretTransport(secret_settings(secret), build=cluster,
                                read=lambda arn, fresh=False: secrets.credentials(arn, fresh=fresh, client=client))

    with pytest.raises(AuthError):
        transport.request("GET", "/", "health", 1)
    assert len(calls) == 2  # the first read, and one more on the 401: no loop


@pytest.mark.es
def test_the_handler_indexes_with_credentials_from_the_secret(sync, secret):
    sync.configure(ELASTICSEARCH_SECRET_ARN=secret, ELASTICSEARCH_ALLOW_INSECURE="true")

    assert sync.deliver(put("a", 1, v=1)) == {"batchItemFailures": []}

    assert sync.docs() == {"a": {"pk": "a", "v": 1}}
