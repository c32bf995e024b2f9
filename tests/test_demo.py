"""The README's first command: the demo runs end to end, shows every change reaching search,
runs replay and verify, and leaves none of the processes it started behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.es
ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    """Running (a zombie has exited: it only waits for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def test_the_demo_follows_s3_and_table_changes_into_search_then_replays_verifies_and_cleans_up():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    steps = [line[3:] for line in out.splitlines() if line.startswith("== ")]
    assert any(s.startswith("3 objects uploaded to s3://images-in") for s in steps)
    assert any(s.startswith("1 object deleted") for s in steps)
    assert any(s.startswith("python -m replay --full") for s in steps)
    assert any(s.startswith("python -m replay --verify") for s in steps)
    assert len(re.findall(r"visible in search after \d+ ms", out)) == 5
    # The handler's own figure for each change (its EMF lines in local sync's log).
    assert len(re.findall(r"handler metrics: ReplicationLag \d+ ms", out)) == 5
    assert '"tags": ["animal", "cute"]' in out
    assert "docs/ünïcode — 日本.txt" in out
    assert len(re.findall(r"table Assets has 2 items, the alias \S+ shows 2 documents", out)) == 2
    assert re.search(r"stopped: \d+ invocations, \d+ records delivered", out)
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", out) + re.findall(r"^   pid (\d+),", out, re.M)]
    assert len(pids) >= 2 and not [pid for pid in pids if alive(pid)]


def test_a_failing_step_is_named_and_exits_non_zero(tmp_path):
    # An Elasticsearch that is not there: the demo must say which step failed, and exit 1.
    env = {**os.environ, "ELASTICSEARCH_URL": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env=env,
    )
    assert done.returncode == 1
    assert "demo failed at step: using the Elasticsearch at http://127.0.0.1:9" in done.stderr
