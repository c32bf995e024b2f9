"""A moto server on a free loopback port, for the demo, the tests and the benchmarks.

Standard library only (it is imported by scripts that run before anything else is set up);
moto itself must be importable by ``python``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request


class MotoError(Exception):
    """The server did not come up."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(python: str = sys.executable, timeout: float = 30.0, script: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``moto.server`` (or ``script``, a file that patches moto and runs its server with
    the same arguments) on 127.0.0.1; the process and its URL, once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [python, *([script] if script else ["-m", "moto.server"]), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1).read()
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise MotoError(f"moto server did not answer on {url}") from None
            time.sleep(0.2)


def reset(url: str) -> None:
    """Forget every resource (a fresh account), without restarting."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).read()
