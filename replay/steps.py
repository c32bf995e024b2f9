"""The Step Functions engine's steps Lambda: prepare, plan, finish and abandon a rebuild.

``handler`` dispatches on ``event["step"]`` (replay/statemachine.py passes it). Every step is the
local engine's logic from replay/full.py and replay/sources.py, called from a Lambda instead of a
shell: the same index body, the same announce wait (a Wait state), the same swap. The build
records its execution's ARN in the index's ``_meta``, so the orphan check of a local run knows
the build is alive while the execution runs.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

import orjson
import structlog

from indexer.errors import ExportError, SettingsError

from . import export as exports
from . import sources
from .full import META_KEY, clear_the_way, create_building, new_index_name, swap_alias
from .statemachine import loaded_totals
from .units import scan_units, unit_to_wire
from .wiring import Wiring, wire

log = structlog.get_logger("replay.steps")

EXPORT_POLL_SECONDS = 60


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    step = event.get("step")
    if step == "prepare":
        return prepare(event.get("request") or {}, str(event.get("execution") or ""), os.environ)
    build = event.get("build") or {}
    if step == "plan":
        return plan(build, event.get("plan") or {}, os.environ)
    if step == "finish":
        return finish(build, event.get("plan") or {}, event.get("loaded") or [], os.environ)
    if step == "abandon":
        return abandon(build, event.get("error"), os.environ)
    raise SettingsError(f"unknown step {step!r}")


def _wired(env: Mapping[str, str]) -> Wiring:
    return wire(env)


def prepare(request: Mapping[str, Any], execution: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Clear the way, create the index as the rebuild target; the build every later step gets."""
    from datetime import datetime, timezone

    w = _wired(env)
    source = str(request.get("source", "scan"))
    if source not in ("scan", "export"):
        raise SettingsError(f"source must be scan or export, got {source!r}")
    if source == "export":
        if not request.get("export_bucket"):
            raise SettingsError("source export needs export_bucket")
        exports.check_point_in_time(w.dynamodb, w.table.name)
    units_bucket = request.get("units_bucket") or env.get("REBUILD_BUCKET")
    if not units_bucket:
        raise SettingsError("REBUILD_BUCKET (or units_bucket) must name the bucket for the units file")
    clear_the_way(w, bool(request.get("migrate")))
    index = new_index_name(w.alias, datetime.now(timezone.utc))
    meta = {"state": "building", "table": w.table.name, "execution": execution, "started": time.time(),
            "heartbeat": time.time()}
    asked = create_building(w, index, w.settings.index_mapping, meta)
    return {
        "index": index, "alias": w.alias, "asked": asked, "wait_seconds": int(w.settings.targets_ttl + 1),
        "table": {"name": w.table.name, "key_names": list(w.table.key_names), "key_types": w.table.key_types,
                  "item_count": w.table.item_count},
        "source": source, "segments": int(request.get("segments", 64)),
        "bulk_size": int(request.get("bulk_size", 1000)),
        "export_bucket": request.get("export_bucket"), "export_prefix": request.get("export_prefix"),
        "export_kms_key": request.get("export_kms_key"), "units_bucket": units_bucket,
    }


def plan(build: Mapping[str, Any], previous: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The units file in S3, once there is one to read: at once for a scan; for an export, after
    starting it (the Wait state's first round) and polling until it completed."""
    units_key = f"rebuilds/{build['index']}/units.json"
    if build["source"] == "scan":
        units = [unit_to_wire(unit) for unit in scan_units(int(build["segments"]))]
        return _planned(build, units_key, units, None)
    w = _wired(env)
    if not previous.get("export_arn"):
        started = exports.start(w.dynamodb, sources.table_arn(w), build["export_bucket"], build.get("export_prefix"),
                                build.get("export_kms_key"))
        log.info("export_started", export=started["ExportArn"])
        return {"ready": False, "export_arn": started["ExportArn"], "wait_seconds": EXPORT_POLL_SECONDS}
    described = w.dynamodb.describe_export(ExportArn=previous["export_arn"])["ExportDescription"]
    if described.get("ExportStatus") == "FAILED":
        raise ExportError(f"export {previous['export_arn']} failed: {described.get('FailureMessage')}")
    if described.get("ExportStatus") != "COMPLETED":
        return {**previous, "ready": False}
    found, _ = exports.plan(sources.s3_client(), described)
    return _planned(build, units_key, [unit_to_wire(unit) for unit in found], sum(u.item_count for u in found))


def _planned(build: Mapping[str, Any], key: str, units: list[dict[str, Any]], expected: int | None) -> dict[str, Any]:
    sources.s3_client().put_object(Bucket=build["units_bucket"], Key=key, Body=orjson.dumps(units))
    return {"ready": True, "units_bucket": build["units_bucket"], "units_key": key, "units": len(units),
            "expected": expected}


def finish(build: Mapping[str, Any], planned: Mapping[str, Any], loaded: list[Any],
           env: Mapping[str, str]) -> dict[str, Any]:
    """Check every unit reported and the counts add up, then swap; the report."""
    totals = loaded_totals(loaded, int(planned["units"]), planned.get("expected"))
    w = _wired(env)
    old = swap_alias(w, build["index"], build.get("asked") or {})
    w.store.put_meta(build["index"], {META_KEY: {"state": "complete", "table": w.table.name,
                                                 "finished": time.time()}}, 30)
    # Live writers may still hold the old index in their target cache for a while.
    time.sleep(w.settings.targets_ttl + 1.0)
    w.store.delete_indices(old, 60)
    report = {"alias": w.alias, "index": build["index"], "previous": old, "read": totals.read,
              "created": totals.created, "stale": totals.stale}
    log.info("replay_done", **report)
    return report


def abandon(build: Mapping[str, Any], error: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """A unit or a step failed: drop the half-built index; the alias never moved."""
    w = _wired(env)
    w.store.delete_indices([build["index"]], 60)
    log.warning("rebuild_abandoned", index=build["index"], error=str(error)[:500])
    return {"abandoned": build["index"]}
