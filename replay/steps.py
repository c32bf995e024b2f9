"""The Step Functions engine's steps Lambda: prepare, plan, finish and abandon a rebuild.

``handler`` dispatches on ``event["step"]`` (replay/statemachine.py passes it). Every step is the
local engine's logic from replay/full.py and replay/sources.py, called from a Lambda instead of a
shell: the same index body, the same announce wait (a Wait state), the same swap. The build
records its execution's ARN in the index's ``_meta``, so the orphan check of a local run knows
the build is alive while the execution runs. The swap's checks are the local engine's too: the
build must still be the index prepare created (same uuid and run id), a lost swap answer is
checked against the alias, and abandon never deletes an index the alias serves.
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from typing import Any, Mapping

import orjson
import structlog

from indexer.apply import RetryPolicy
from indexer.errors import ClusterError, ExportError, RetryableError, SettingsError

from . import export as exports
from . import sources
from .full import (
    Building, abandon_build, announce_wait, building_meta, clear_the_way, create_building, new_index_name,
    record_meta, retire, swap_alias,
)
from .mapresults import RESULTS_PREFIX, unit_totals
from .statemachine import loaded_totals
from .transition import sweep
from .units import scan_units, unit_to_wire
from .wiring import Wiring, wire

log = structlog.get_logger("replay.steps")

EXPORT_POLL_SECONDS = 60
#: Where an export goes in the rebuild bucket when the request names no bucket.
EXPORT_PREFIX = "exports"


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    step = event.get("step")
    if step == "prepare":
        return prepare(event.get("request") or {}, str(event.get("execution") or ""), os.environ)
    build = event.get("build") or {}
    if step == "plan":
        return plan(build, event.get("plan") or {}, os.environ)
    if step == "finish":
        return finish(build, event.get("plan") or {}, event.get("loaded"), os.environ)
    if step == "abandon":
        return abandon(build, event.get("error"), os.environ)
    raise SettingsError(f"unknown step {step!r}")


def _wired(env: Mapping[str, str]) -> Wiring:
    return wire(env)


def prepare(request: Mapping[str, Any], execution: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Clear the way, create the index as the rebuild target; the build every later step gets."""
    w = _wired(env)
    source = str(request.get("source", "scan"))
    if source not in ("scan", "export"):
        raise SettingsError(f"source must be scan or export, got {source!r}")
    units_bucket = request.get("units_bucket") or env.get("REBUILD_BUCKET")
    if not units_bucket:
        raise SettingsError("REBUILD_BUCKET (or units_bucket) must name the bucket for the units file")
    # Without a bucket of its own, the export goes where the deployed roles may write it
    # (infra/serverless.yml grants exports/ in the rebuild bucket, nothing else).
    export_bucket = request.get("export_bucket") or units_bucket
    export_prefix = request.get("export_prefix") or (EXPORT_PREFIX if export_bucket == units_bucket else None)
    # The deployment's key (param rebuildExportKmsKeyArn), the one its roles may encrypt and
    # decrypt exports with, unless the request names another.
    export_kms_key = request.get("export_kms_key") or env.get("REBUILD_EXPORT_KMS_KEY") or None
    if source == "export":
        exports.check_point_in_time(w.dynamodb, w.table.name)
    clear_the_way(w, bool(request.get("migrate")))
    index = new_index_name(w.alias, datetime.now(timezone.utc))
    wait = announce_wait(w)
    building = create_building(w, index, w.settings.index_mapping, building_meta(w, wait - 1.0, execution=execution))
    return {
        "index": index, "alias": w.alias, "asked": building.asked, "uuid": building.uuid, "run": building.run,
        "wait_seconds": math.ceil(wait),
        "table": {"name": w.table.name, "key_names": list(w.table.key_names), "key_types": w.table.key_types,
                  "item_count": w.table.item_count},
        "source": source, "segments": int(request.get("segments", 64)),
        "bulk_size": int(request.get("bulk_size", 1000)),
        "export_bucket": export_bucket, "export_prefix": export_prefix,
        "export_kms_key": export_kms_key, "units_bucket": units_bucket,
    }


def plan(build: Mapping[str, Any], previous: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The units file in S3, once there is one to read: at once for a scan; for an export, after
    starting it (the Wait state's first round) and polling until it completed."""
    units_key = f"rebuilds/{build['index']}/units.json"
    w = _wired(env)
    if build["source"] == "scan":
        # The Announce wait is over: the scan reads every item after this instant.
        record_meta(w, build["index"], snapshot_started=time.time())
        units = [unit_to_wire(unit) for unit in scan_units(int(build["segments"]))]
        return _planned(build, units_key, units, None)
    if not previous.get("export_arn"):
        at = datetime.now(timezone.utc)
        started = exports.start(w.dynamodb, sources.table_arn(w), build["export_bucket"], build.get("export_prefix"),
                                build.get("export_kms_key"), at)
        # The export shows the table as of ``at``: its items are at least that recent.
        record_meta(w, build["index"], snapshot_started=at.timestamp())
        log.info("export_started", export=started["ExportArn"])
        return {"ready": False, "export_arn": started["ExportArn"], "wait_seconds": EXPORT_POLL_SECONDS}
    described = w.dynamodb.describe_export(ExportArn=previous["export_arn"])["ExportDescription"]
    if described.get("ExportStatus") == "FAILED":
        raise ExportError(f"export {previous['export_arn']} failed: {described.get('FailureMessage')}")
    if described.get("ExportStatus") != "COMPLETED":
        return {**previous, "ready": False}
    found, _ = exports.plan(sources.s3_client(), described)
    return _planned(build, units_key, [unit_to_wire(unit) for unit in found], sum(u.item_count for u in found))


def _building(build: Mapping[str, Any]) -> Building:
    return Building(str(build["index"]), str(build.get("uuid", "")), str(build.get("run", "")),
                    dict(build.get("asked") or {}))


def _planned(build: Mapping[str, Any], key: str, units: list[dict[str, Any]], expected: int | None) -> dict[str, Any]:
    sources.s3_client().put_object(Bucket=build["units_bucket"], Key=key, Body=orjson.dumps(units))
    return {"ready": True, "units_bucket": build["units_bucket"], "units_key": key, "units": len(units),
            "expected": expected}


def finish(build: Mapping[str, Any], planned: Mapping[str, Any], loaded: Any,
           env: Mapping[str, str]) -> dict[str, Any]:
    """Read the units' totals where the Map's ResultWriter put them (``loaded`` says where),
    check every unit reported and the counts add up, then swap; the report."""
    units = int(planned["units"])
    results = unit_totals(sources.s3_client(), loaded, build["units_bucket"], RESULTS_PREFIX, units)
    totals = loaded_totals(results, units, planned.get("expected"))
    w = _wired(env)
    swept = sweep(w, build["index"], RetryPolicy.of(w.settings))
    totals.replaced, totals.read_again = totals.replaced + swept.count, totals.read_again + swept.read_again
    for key, reason in swept.refused:
        log.warning("item_not_indexed", key=key, reason=reason[:500])
    old = swap_alias(w, _building(build))
    # From here on the alias serves the new index: a failure below must not abandon it.
    try:
        record_meta(w, build["index"], state="complete", finished=time.time())
    except (RetryableError, ClusterError) as exc:  # the alias moved; the mark is only a label
        log.warning("complete_mark_failed", index=build["index"], error=str(exc))
    # Live writers may still hold the old index in their target cache for a while.
    retire(w, old, float(build.get("wait_seconds", w.settings.targets_ttl + 1.0)))
    report = {"alias": w.alias, "index": build["index"], "previous": old, "read": totals.read,
              "created": totals.created, "stale": totals.stale, "replaced": totals.replaced,
              "read_again": totals.read_again}
    log.info("replay_done", **report)
    return report


def abandon(build: Mapping[str, Any], error: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """A unit or a step failed: drop the half-built index, unless the alias already serves it
    (Finish's swap landed and a later call failed)."""
    w = _wired(env)
    abandon_build(w, build["index"])
    log.warning("rebuild_abandoned", index=build["index"], error=str(error)[:500])
    return {"abandoned": build["index"]}
