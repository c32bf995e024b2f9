"""The local engine as a process pool: the CLI as a process against a moto server (whose export is
completed to AWS's layout by tests/export_layout.py) and the real Elasticsearch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from conftest import moto_process, point_boto3_at
from tables import create_table, put_items

pytestmark = pytest.mark.es

ITEMS = 300
BUCKET = "exports"


@pytest.fixture(scope="session")
def export_server():
    yield from moto_process(script=str(Path(__file__).with_name("export_layout.py")))


@pytest.fixture
def table(export_server, es_url, es_client, monkeypatch):
    point_boto3_at(export_server, monkeypatch)
    alias = f"pool-{uuid.uuid4().hex[:8]}"
    name = f"T{alias.replace('-', '')}"
    create_table(name, sort_key=None)
    boto3.client("dynamodb").update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    put_items(name, [{"pk": {"S": f"k{n:04d}"}, "v": {"N": str(n)}} for n in range(ITEMS)])
    env = {**os.environ, "TABLE_NAME": name, "INDEX_NAME": alias, "ELASTICSEARCH_URL": es_url,
           "TARGETS_TTL_SECONDS": "0.5", "LOG_LEVEL": "WARNING"}
    env.pop("REPLAY_WORKERS", None)
    yield alias, env
    es_client.indices.delete(index=f"{alias}-*", ignore_unavailable=True, allow_no_indices=True)


def replay(env, *flags):
    return subprocess.run([sys.executable, "-m", "replay", *flags], env=env, capture_output=True, text=True,
                          timeout=300)


def serving(es, alias):
    return sorted(es.indices.get_alias(name=alias).body)


def indexed(es, alias) -> int:
    es.indices.refresh(index=alias)
    return es.count(index=alias)["count"]


def test_an_export_loaded_by_two_worker_processes_fills_the_alias(table, es_client):
    alias, env = table
    done = replay(env, "--full", "--source", "export", "--export-bucket", BUCKET, "--export-prefix", "r",
                  "--export-poll", "0.2", "--workers", "2", "--bulk-size", "20", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "export complete: 6 files, 300 items" in done.stdout
    assert f"scanned {ITEMS} items" in done.stdout and f"{ITEMS} written" in done.stdout
    assert indexed(es_client, alias) == ITEMS
    verify = replay(env, "--verify", "--no-progress")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def worker_processes(parent: int) -> list[int]:
    """The pool's processes (not multiprocessing's resource tracker) of the replay ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def start_pool(env) -> tuple[subprocess.Popen, list[int]]:
    """A slow replay on two worker processes, once both exist; the process and their pids."""
    process = subprocess.Popen([sys.executable, "-m", "replay", "--full", "--workers", "2", "--rate", "40",
                                "--bulk-size", "10", "--no-progress"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
        workers = worker_processes(process.pid)
        time.sleep(0.1)
    assert len(workers) == 2, "the pool never started"
    return process, workers


def gone(pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, waiting for init to reap it
            return True
        time.sleep(0.1)
    return False


def test_kill_9_of_the_orchestrator_takes_its_worker_processes_with_it(table, es_client):
    alias, env = table
    assert replay(env, "--full", "--no-progress").returncode == 0
    before = serving(es_client, alias)
    process, workers = start_pool(env)
    process.kill()
    process.communicate(timeout=60)
    assert all(gone(pid) for pid in workers)
    assert serving(es_client, alias) == before
    rerun = replay(env, "--full", "--workers", "2", "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert indexed(es_client, alias) == ITEMS


def test_kill_9_of_a_worker_process_leaves_the_alias_unchanged_and_a_rerun_converges(table, es_client):
    alias, env = table
    assert replay(env, "--full", "--no-progress").returncode == 0
    before = serving(es_client, alias)
    process, workers = start_pool(env)
    os.kill(workers[0], 9)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert "a worker process died" in err
    assert serving(es_client, alias) == before
    assert indexed(es_client, alias) == ITEMS
    assert worker_processes(process.pid) == []

    rerun = replay(env, "--full", "--workers", "2", "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert serving(es_client, alias) != before
    assert indexed(es_client, alias) == ITEMS
    assert sorted(es_client.indices.get(index=f"{alias}-*").body) == serving(es_client, alias)


@pytest.mark.parametrize("source", ["scan", "export"])
def test_a_pool_rebuild_while_writers_and_live_sync_run_ends_equal_to_the_table(table, es_url, monkeypatch,
                                                                                 source):
    from types import SimpleNamespace

    from indexer import handler as lambda_handler
    from tables import live_writes
    from test_replay import alias_equals_table

    alias, env = table
    name = f"W{alias.replace('-', '')}"
    create_table(name)
    boto3.client("dynamodb").update_continuous_backups(
        TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    put_items(name, [{"pk": {"S": f"k{n}"}, "sk": {"N": "0"}, "v": {"N": "0"}} for n in range(150)])
    queue = boto3.client("sqs").create_queue(QueueName=f"dlq-{alias}")["QueueUrl"]
    for variable, value in {"INDEX_NAME": alias, "ELASTICSEARCH_URL": es_url, "DLQ_URL": queue,
                            "TARGETS_TTL_SECONDS": "0.5"}.items():
        monkeypatch.setenv(variable, value)
    lambda_handler.reset()
    flags = ["--source", source, "--export-bucket", BUCKET, "--export-prefix", "w", "--export-poll", "0.2"] \
        if source == "export" else ["--segments", "3"]
    with live_writes(name, seed=11, keys=180) as follower:
        done = replay({**env, "TABLE_NAME": name}, "--full", "--workers", "2", "--bulk-size", "10", "--no-progress",
                      *flags)
    assert done.returncode == 0, done.stderr
    assert follower.failures == []
    lambda_handler.reset()
    alias_equals_table(SimpleNamespace(table=name, es_url=es_url, alias=alias))
