"""The adapters a replay command needs, built from settings, with fail-fast checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from indexer import logs
from indexer.backends import check_cluster, store_for
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
    table_name, alias = settings.required("table_name"), settings.required("index_name")
    store = store_for(settings, exact_numbers=exact_numbers)
    check_cluster(store, settings.elasticsearch_url)
    dynamodb = tables.client()
    table = tables.describe(dynamodb, table_name)
    return Wiring(settings, store, dynamodb, table, alias)
