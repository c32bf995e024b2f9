"""The adapters a replay command needs, built from settings, with fail-fast checks."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Mapping

from indexer import logs
from indexer.errors import SettingsError
from indexer.handler import elasticsearch_client
from indexer.search import ElasticsearchStore
from indexer.settings import Settings

from . import table as tables


@dataclass
class Wiring:
    settings: Settings
    es: Any
    store: ElasticsearchStore
    dynamodb: Any
    table: tables.TableInfo
    alias: str


def wire(env: Mapping[str, str], exact_numbers: bool = False) -> Wiring:
    """Settings, a reachable cluster and an existing table, or one clear SettingsError."""
    settings = Settings.from_env(env, require=("TABLE_NAME",))
    logs.configure(settings.log_level, to_stderr=True)
    assert settings.table_name is not None and settings.index_name is not None
    es = elasticsearch_client(settings, exact_numbers=exact_numbers)
    check_cluster(es, settings.elasticsearch_url)
    dynamodb = tables.client()
    table = tables.describe(dynamodb, settings.table_name)
    return Wiring(settings, es, ElasticsearchStore(es), dynamodb, table, settings.index_name)


def check_cluster(es: Any, url: str) -> None:
    """Fail fast, in one line, when the cluster cannot be reached or refuses us."""
    from elasticsearch import ApiError, TransportError

    try:
        es.options(request_timeout=10).cluster.health()
    except ApiError as exc:
        raise SettingsError(
            f"Elasticsearch at {url} answered {exc.meta.status} ({exc.message}): check ELASTICSEARCH_URL and credentials"
        ) from None
    except TransportError as exc:
        raise SettingsError(f"cannot reach Elasticsearch at {url} (ELASTICSEARCH_URL): {type(exc).__name__}") from None
