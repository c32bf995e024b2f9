"""Index settings for a bulk load, and the ones to put back before the new index serves.

While building, nobody searches the new index: no replicas (each document is written once, not
once per copy) and no periodic refresh. Before the swap they go back to what the user's mapping
says, else what the index being replaced had, else the cluster's default.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

#: Setting → value while building.
WHILE_BUILDING: dict[str, Any] = {"refresh_interval": "-1", "number_of_replicas": 0}
#: Settings worth carrying over from the index being replaced when the mapping is silent.
INHERITED = ("number_of_replicas",)


def _pop(settings: dict[str, Any], name: str) -> tuple[bool, Any]:
    """Take ``name`` out of index settings in any of the three spellings Elasticsearch accepts."""
    found, value = False, None
    nested = settings.get("index")
    if isinstance(nested, dict) and name in nested:
        found, value = True, nested.pop(name)
    for key in (name, f"index.{name}"):
        if key in settings:
            found, value = True, settings.pop(key)
    return found, value


def building_body(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``body`` with the bulk-load settings, and the settings the user asked for (to restore)."""
    body = copy.deepcopy(body)
    settings = body.setdefault("settings", {})
    asked: dict[str, Any] = {}
    for name, value in WHILE_BUILDING.items():
        found, wanted = _pop(settings, name)
        if found:
            asked[name] = wanted
    index = settings.setdefault("index", {})
    index.update(WHILE_BUILDING)
    return body, asked


def restored(asked: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``index`` settings to put before the swap: asked-for, else the replaced index's
    (``previous``: its ``settings.index``), else None (the cluster's default)."""
    out: dict[str, Any] = {}
    for name in WHILE_BUILDING:
        if name in asked:
            out[name] = asked[name]
        elif name in INHERITED and previous and name in previous:
            out[name] = previous[name]
        else:
            out[name] = None
    return {"index": out}
