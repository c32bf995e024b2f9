"""The README's first command: the demo runs end to end and shows the index following the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.es
ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_shows_writes_updates_and_deletes_reaching_search():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "three items written: 3 stream records" in out
    assert '"tags": ["animal", "cute"]' in out
    assert "table has 2 items, the index alias shows 2 documents" in out
    assert "stopped" in out
