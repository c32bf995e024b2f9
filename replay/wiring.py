"""The adapters a replay command needs, built from settings, with fail-fast checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from indexer import logs
from indexer.errors import ClusterError, RetryableError, SettingsError
from indexer.backends import store_for
from indexer.search import Store
from indexer.settings import Settings

from . import table as tables


@dataclass
class Wiring:
    settings: Settings
    store: Store
    dynamodb: Any
    table: tables.TableInfo
    alias: str


def wire(env: Mapping[str, str], exact_numbers: bool = False) -> Wiring:
    """Settings, a reachable cluster and an existing table, or one clear SettingsError."""
    settings = Settings.from_env(env, require=("TABLE_NAME",))
    logs.configure(settings.log_level, to_stderr=True)
    assert settings.table_name is not None and settings.index_name is not None
    store = store_for(settings, exact_numbers=exact_numbers)
    check_cluster(store, settings.elasticsearch_url)
    dynamodb = tables.client()
    table = tables.describe(dynamodb, settings.table_name)
    return Wiring(settings, store, dynamodb, table, settings.index_name)


def check_cluster(store: Store, url: str) -> None:
    """Fail fast, in one line, when the cluster cannot be reached or refuses us."""
    try:
        store.health(10)
    except RetryableError as exc:
        raise SettingsError(f"cannot reach the search cluster at {url} (ELASTICSEARCH_URL): {exc}") from None
    except ClusterError as exc:
        raise SettingsError(f"the search cluster at {url} refused us: {exc}") from None
