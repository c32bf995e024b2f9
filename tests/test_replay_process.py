"""The replay CLI as a process: killed with -9 or interrupted mid-scan, the alias never moves,
and a rerun converges and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from tables import create_table, put_items

pytestmark = pytest.mark.es

ITEMS = 400


@pytest.fixture
def table(aws_server, es_url, es_client, monkeypatch):
    alias = f"proc-{uuid.uuid4().hex[:8]}"
    name = f"T{alias.replace('-', '')}"
    create_table(name, sort_key=None)
    put_items(name, [{"pk": {"S": f"k{n:04d}"}, "v": {"N": str(n)}} for n in range(ITEMS)])
    env = {**os.environ, "TABLE_NAME": name, "INDEX_NAME": alias, "ELASTICSEARCH_URL": es_url,
           "TARGETS_TTL_SECONDS": "0.5", "AWS_ENDPOINT_URL": aws_server, "LOG_LEVEL": "WARNING"}
    yield alias, env
    es_client.indices.delete(index=f"{alias}-*", ignore_unavailable=True, allow_no_indices=True)


def replay(env, *flags, **kwargs):
    return subprocess.run([sys.executable, "-m", "replay", *flags], env=env, capture_output=True, text=True,
                          timeout=300, **kwargs)


def _default_sigint() -> None:
    """The replay answers Ctrl-C even when the tests run where SIGINT is ignored (a background
    job of a non-interactive shell, whose children inherit the ignored signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def start_held_replay():
    """Starts a replay that holds its scan after the first written page (REPLAY_HOLD_FILE never
    appears), so a signal always finds it mid-scan, however fast or slow the machine. A replay
    still running when its test ends (a signal it ignored, a failed assertion) is killed, so it
    never outlives the session."""
    started: list[subprocess.Popen] = []

    def start(env, tmp_path):
        held = {**env, "REPLAY_HOLD_FILE": str(tmp_path / "never-created")}
        process = subprocess.Popen([sys.executable, "-m", "replay", "--full", "--bulk-size", "20", "--no-progress"],
                                   env=held, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_default_sigint)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait()


class Stderr(threading.Thread):
    """Collects a process's stderr; ``holding`` is set when the replay says it holds mid-scan."""

    def __init__(self, process):
        super().__init__(daemon=True)
        self.process, self.lines, self.holding = process, [], threading.Event()
        self.start()

    def run(self):
        for line in self.process.stderr:
            self.lines.append(line)
            if '"replay_holding"' in line:
                self.holding.set()

    def text(self):
        self.join(60)
        return "".join(self.lines)


def building_index(process, es, alias, serving, timeout=120.0):
    """Wait until the replay says it holds mid-scan; its new index's name."""
    process.err = Stderr(process)
    if not process.err.holding.wait(timeout):
        process.kill()
        raise AssertionError(f"the replay never reached its hold: {process.err.text()}")
    names = [n for n in es.indices.get(index=f"{alias}-r*", ignore_unavailable=True,
                                       allow_no_indices=True).body if n not in serving]
    assert len(names) == 1, names
    return names[0]


def serving(es, alias):
    return sorted(es.indices.get_alias(name=alias).body)


def test_kill_9_mid_scan_leaves_the_alias_serving_and_a_rerun_converges(table, es_client, tmp_path, start_held_replay):
    alias, env = table
    assert replay(env, "--full", "--no-progress").returncode == 0
    before = serving(es_client, alias)
    process = start_held_replay(env, tmp_path)
    building = building_index(process, es_client, alias, before)
    process.kill()
    process.wait()
    assert serving(es_client, alias) == before
    es_client.indices.refresh(index=alias)
    assert es_client.count(index=alias)["count"] == ITEMS  # search keeps answering, complete
    listed = replay(env, "--list-orphans")
    assert listed.returncode == 0 and f"orphaned (interrupted rebuild): {building}" in listed.stdout

    rerun = replay(env, "--full", "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert f"removing {building}, left by an interrupted replay" in rerun.stdout
    after = serving(es_client, alias)
    assert after != before and after[0] != building
    remaining = es_client.indices.get(index=f"{alias}-*").body
    assert sorted(remaining) == after  # no orphan, old index dropped
    es_client.indices.refresh(index=alias)
    assert es_client.count(index=alias)["count"] == ITEMS
    verify = replay(env, "--verify", "--no-progress")
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_mid_scan_removes_the_half_built_index(table, es_client, tmp_path, start_held_replay, signum):
    alias, env = table
    assert replay(env, "--full", "--no-progress").returncode == 0
    before = serving(es_client, alias)
    process = start_held_replay(env, tmp_path)
    building = building_index(process, es_client, alias, before)
    process.send_signal(signum)
    process.wait(60)
    err = process.err.text()
    assert process.returncode == 130, err
    assert "alias still points at the complete index" in err
    assert serving(es_client, alias) == before
    assert not es_client.indices.exists(index=building)


def test_a_replay_stopped_past_the_orphan_timeout_resumes_without_swapping(table, es_client, tmp_path,
                                                                          start_held_replay,
                                                                          monkeypatch):
    """SIGSTOP on replay A mid-scan; replay B takes A's build for orphaned, deletes it and
    completes; SIGCONT and A's scan goes on: A must fail without touching B's index."""
    from replay import cli
    from replay import full as replay_full

    alias, env = table
    assert replay(env, "--full", "--no-progress").returncode == 0
    before = serving(es_client, alias)
    process = start_held_replay(env, tmp_path)
    building = building_index(process, es_client, alias, before)
    process.send_signal(signal.SIGSTOP)
    try:
        for name in ("TABLE_NAME", "INDEX_NAME", "ELASTICSEARCH_URL", "TARGETS_TTL_SECONDS", "AWS_ENDPOINT_URL"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.setattr(replay_full, "ORPHAN_AFTER_SECONDS", 0.0)  # A's heartbeat is now "old"
        assert cli.main(["--full", "--no-progress"]) == 0
        b_index = serving(es_client, alias)
        assert building not in b_index and b_index != before
    finally:
        process.send_signal(signal.SIGCONT)
    (tmp_path / "never-created").touch()  # A's scan goes on: its writes re-create its index name
    assert process.wait(120) == 1, process.err.text()
    assert "no longer the index this replay built" in process.err.text() or "was deleted" in process.err.text()
    assert serving(es_client, alias) == b_index
    assert sorted(es_client.indices.get(index=f"{alias}-*").body) == b_index
    es_client.indices.refresh(index=alias)
    assert es_client.count(index=alias)["count"] == ITEMS


def test_help_and_bad_flags(table):
    _, env = table
    shown = replay(env, "--help")
    assert shown.returncode == 0 and "--full" in shown.stdout and "--verify" in shown.stdout
    bad = replay(env, "--full", "--segments", "zero")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--segments" in bad.stderr
