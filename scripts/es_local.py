#!/usr/bin/env python3
"""Run a real, throwaway Elasticsearch (or OpenSearch) on this machine for tests, the demo and CI.

Why a real server and not a mock: the indexer's correctness depends on what
Elasticsearch actually does with versions, conflicts, refreshes and bulk
partial failures, and mocks get exactly those details wrong.

Why this file is standard-library only: CI calls ``fetch``/``start`` before
any virtualenv exists, with whatever ``python3`` (>= 3.11) the machine has.

What it does:

* Fetches the minimal Elasticsearch distribution (the "integ-test-zip": no
  bundled JDK, no ML/geoip modules, ~100 MB) with Maven -- the only network
  access -- and unpacks it once into a cache outside the repository.  The
  same for OpenSearch (``--distribution opensearch``): its integ-test-zip is
  the second search backend's test server (~55 MB, no security plugin).
* Runs any number of independent *named* instances side by side, each with
  its own ports, config dir, data dir, logs dir and pid file, so a test can
  stop and restart a private cluster while the shared one keeps serving.
* Records each instance's URL/ports/pid in ``instance.json`` so that other
  processes (``status``, ``url``, ``stop``) find it, and so that a stopped
  instance can be restarted on the same port with the same data.
* Elasticsearch and OpenSearch refuse to run as root; when invoked as root it
  creates an unprivileged system user (``esindexer`` unless ``ES_LOCAL_USER``
  says otherwise) and runs the server as that user.

What differs between the two distributions (all handled in :data:`_DISTS`
and :func:`_launch`): the launcher (``bin/opensearch``) and its environment
(``OPENSEARCH_JAVA_HOME``, ``OPENSEARCH_JAVA_OPTS``, ``OPENSEARCH_PATH_CONF``,
``OPENSEARCH_TMPDIR``); OpenSearch's ``-d`` returns as soon as the JVM is
forked, before the node starts or writes its pid file; its ``jvm.options``
names ``logs/gc.log`` relative to the distribution home, which the
unprivileged user cannot write (the JVM then refuses to start), so the
per-instance copy points those paths into the instance; 2.x needs the
Security Manager, which Java 24 removed, so it needs Java 11..23.

Layout of the cache (``$ES_LOCAL_CACHE``; default
``$HOME/.cache/dynamodb-es-indexer``, or ``/var/cache/dynamodb-es-indexer``
when running as root -- see :func:`cache_dir`)::

    elasticsearch-<version>/      unpacked distribution, shared, read-only
    opensearch-<version>/         the same for OpenSearch
    instances/<name>.lock         serialises start/stop of one instance
    instances/<name>.claim        held by a live user of the name (see claim())
    instances/<name>/instance.json
    instances/<name>/config/      per-instance ES_PATH_CONF / OPENSEARCH_PATH_CONF (keystore)
    instances/<name>/data/
    instances/<name>/logs/        es-local-<name>.log is the main log; server.pid
    instances/<name>/tmp/         ES_TMPDIR / OPENSEARCH_TMPDIR
    instances/<name>/launcher.out output of bin/elasticsearch (bin/opensearch) itself

CLI::

    python3 scripts/es_local.py fetch [--distribution D] [--version V]
    python3 scripts/es_local.py start [--name N] [--distribution elasticsearch|opensearch]
                                      [--port P] [--heap 512m] [--version V] [--fresh]
    python3 scripts/es_local.py url|status|stop|remove [--name N]

``start`` prints only the URL on stdout (progress goes to stderr).  Exit
codes: 0 ok, 1 launch/stop failure or "not running", 2 bad usage.  Errors
are one line on stderr; add ``-v`` to a command to get the log tails too.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import glob
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from typing import Any
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_VERSION",
    "DEFAULT_VERSIONS",
    "DISTRIBUTIONS",
    "Instance",
    "LaunchError",
    "cache_dir",
    "claim",
    "ensure_distribution",
    "find_java",
    "is_running",
    "remove",
    "start",
    "stop",
    "wait_healthy",
]

DEFAULT_VERSION = "8.19.21"
"""Elasticsearch version used everywhere unless overridden (client is elasticsearch-py 8.x)."""

DEFAULT_VERSIONS = {"elasticsearch": DEFAULT_VERSION, "opensearch": "2.19.6"}
"""Default server version per distribution.  OpenSearch stays on 2.x: it runs
on the machine's Java 17, where 3.x needs Java 21+."""

DISTRIBUTIONS = tuple(DEFAULT_VERSIONS)

MAVEN_GROUP = "org.elasticsearch.distribution.integ-test-zip"
MAVEN_ARTIFACT = "elasticsearch"

DEFAULT_RUN_AS_USER = "esindexer"
"""System user that runs the server when we are root (both refuse uid 0)."""


@dataclass(frozen=True)
class _Dist:
    """What differs between the Elasticsearch and OpenSearch distributions."""

    title: str
    maven_group: str
    maven_artifact: str
    launcher: str  # bin/<launcher>; also the zip's top-level dir prefix
    java_home_var: str
    java_opts_var: str
    path_conf_var: str
    tmpdir_var: str


_DISTS: dict[str, _Dist] = {
    "elasticsearch": _Dist(
        title="Elasticsearch",
        maven_group=MAVEN_GROUP,
        maven_artifact=MAVEN_ARTIFACT,
        launcher="elasticsearch",
        java_home_var="ES_JAVA_HOME",
        java_opts_var="ES_JAVA_OPTS",
        path_conf_var="ES_PATH_CONF",
        tmpdir_var="ES_TMPDIR",
    ),
    "opensearch": _Dist(
        title="OpenSearch",
        maven_group="org.opensearch.distribution.integ-test-zip",
        maven_artifact="opensearch",
        launcher="opensearch",
        java_home_var="OPENSEARCH_JAVA_HOME",
        java_opts_var="OPENSEARCH_JAVA_OPTS",
        path_conf_var="OPENSEARCH_PATH_CONF",
        tmpdir_var="OPENSEARCH_TMPDIR",
    ),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_HEAP_RE = re.compile(r"^[1-9]\d*[kKmMgG]?$")

log = logging.getLogger("es_local")


class LaunchError(RuntimeError):
    """Elasticsearch (or OpenSearch) could not be fetched, started or stopped.

    The message carries the tail of the relevant logs, because the usual
    causes (no Java, port taken, unknown setting, out of disk) are only
    visible there and CI output is often all one gets.
    """


@dataclass(frozen=True)
class Instance:
    """A running (or last-known) local Elasticsearch or OpenSearch instance."""

    name: str
    url: str
    pid: int
    port: int
    data_dir: Path
    log_file: Path
    transport_port: int = 0
    version: str = DEFAULT_VERSION
    heap: str = "512m"
    distribution: str = "elasticsearch"


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------


def cache_dir() -> Path:
    """Directory holding the unpacked distribution and instance state.

    ``$ES_LOCAL_CACHE`` wins.  Otherwise ``$HOME/.cache/dynamodb-es-indexer``
    -- except as root: Elasticsearch then runs as an unprivileged user who
    cannot enter root's home (``/root`` is normally mode 700), so root
    defaults to ``/var/cache/dynamodb-es-indexer`` instead.
    """
    env = os.environ.get("ES_LOCAL_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/cache/dynamodb-es-indexer")
    return Path.home() / ".cache" / "dynamodb-es-indexer"


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def lock(self) -> Path:
        # Beside, not inside, the instance dir so remove() can delete the dir
        # while holding the lock.
        return self.root.parent / f"{self.root.name}.lock"

    @property
    def meta(self) -> Path:
        return self.root / "instance.json"

    @property
    def pidfile(self) -> Path:
        # In logs/, which the server may write: the instance root is root's when we are root.
        return self.logs / "server.pid"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def launcher_out(self) -> Path:
        return self.root / "launcher.out"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{_cluster_name(name)}.log"


def _paths(name: str) -> _Paths:
    return _Paths(cache_dir() / "instances" / name)


def _cluster_name(name: str) -> str:
    return f"es-local-{name}"


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"invalid instance name {name!r}: use 1-64 of [A-Za-z0-9_.-], starting alphanumeric"
        )


def _check_version(version: str) -> None:
    if not _VERSION_RE.match(version):
        raise ValueError(f"invalid server version {version!r}: expected X.Y.Z")


def _dist(distribution: str) -> _Dist:
    try:
        return _DISTS[distribution]
    except KeyError:
        raise ValueError(
            f"invalid distribution {distribution!r}: expected one of {', '.join(DISTRIBUTIONS)}"
        ) from None


def _resolve(distribution: str, version: str | None) -> tuple[_Dist, str]:
    """Validated distribution spec and version (None: that distribution's default)."""
    dist = _dist(distribution)
    version = DEFAULT_VERSIONS[distribution] if version is None else version
    _check_version(version)
    return dist, version


def _check_heap(heap: str) -> None:
    if not _HEAP_RE.match(heap):
        raise ValueError(f"invalid heap size {heap!r}: expected e.g. 512m or 1g")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock: concurrent starts (xdist workers, a demo in
    another terminal) must not both launch or unpack the same thing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------
# Distribution
# --------------------------------------------------------------------------


def ensure_distribution(version: str | None = None, distribution: str = "elasticsearch") -> Path:
    """Return the unpacked distribution's home, fetching it first if needed.

    ``version=None`` means the distribution's default (:data:`DEFAULT_VERSIONS`).
    Each distribution+version gets its own directory
    (``<cache>/elasticsearch-8.19.21``, ``<cache>/opensearch-2.19.6``).

    The zip comes from Maven (``dependency:copy``), so it is verified by
    Maven, cached in the local Maven repository, and honours the machine's
    Maven settings (mirrors, proxies, custom local repository).  It is
    unpacked into a temporary directory and renamed into place, so an
    interrupted unpack never leaves a half-populated home behind.
    """
    dist, version = _resolve(distribution, version)
    top_name = f"{dist.launcher}-{version}"  # the zip's top-level directory
    cache = cache_dir()
    home = cache / top_name
    if (home / "bin" / dist.launcher).is_file():
        return home
    cache.mkdir(parents=True, exist_ok=True)
    with _flock(cache / f".{top_name}.lock"):
        if (home / "bin" / dist.launcher).is_file():
            return home
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
            tmpdir = Path(tmp)
            zip_path = _maven_fetch(dist, version, tmpdir / "zip")
            unpack = tmpdir / "unpack"
            unpack.mkdir()
            _unzip(zip_path, unpack)
            top = unpack / top_name
            if not (top / "bin" / dist.launcher).is_file():
                found = sorted(p.name for p in unpack.iterdir())
                raise LaunchError(
                    f"{zip_path.name} does not contain {top_name}/bin/{dist.launcher} "
                    f"(top level: {found})"
                )
            # Readable by the unprivileged user that runs the server when we are root.
            for p in [top, *top.rglob("*")]:
                if not p.is_symlink():
                    mode = p.stat().st_mode
                    add = stat.S_IRGRP | stat.S_IROTH
                    if p.is_dir() or mode & stat.S_IXUSR:
                        add |= stat.S_IXGRP | stat.S_IXOTH
                    p.chmod(mode | add)
            os.rename(top, home)
    log.info("unpacked %s %s into %s", dist.title, version, home)
    return home


def _maven_fetch(dist: _Dist, version: str, out_dir: Path) -> Path:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LaunchError(
            f"Maven ('mvn') is needed to fetch the {dist.title} distribution but is not on PATH"
        )
    artifact = f"{dist.maven_group}:{dist.maven_artifact}:{version}:zip"
    log.info("fetching %s with Maven", artifact)
    cmd = [
        mvn, "-q", "-B", "-Dstyle.color=never",
        "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy",
        f"-Dartifact={artifact}",
        f"-DoutputDirectory={out_dir}",
        "-Dmdep.overWriteReleases=true",
    ]  # fmt: skip
    # Run from an empty dir so a pom.xml in the caller's cwd is not picked up.
    proc = subprocess.run(
        cmd, cwd=out_dir.parent, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    zip_path = out_dir / f"{dist.maven_artifact}-{version}.zip"
    if proc.returncode != 0 or not zip_path.is_file():
        output = _tail_text(proc.stdout + proc.stderr, 30)
        raise LaunchError(
            f"mvn could not fetch {artifact} (exit {proc.returncode}):\n{output}"
        )
    return zip_path


def _unzip(zip_path: Path, dest: Path) -> None:
    """Unpack keeping Unix modes (Python's zipfile drops the executable bit)."""
    unzip = shutil.which("unzip")
    if unzip:
        proc = subprocess.run(
            [unzip, "-q", str(zip_path), "-d", str(dest)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode == 0:
            return
        log.info("unzip failed (%s); falling back to zipfile", proc.stderr.strip())
        shutil.rmtree(dest)
        dest.mkdir()
    dest_resolved = dest.resolve()
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest_resolved):
                raise LaunchError(f"refusing to unpack {info.filename!r} outside {dest}")
            mode = (info.external_attr >> 16) & 0o7777
            if stat.S_ISLNK(info.external_attr >> 16):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(zf.read(info).decode(), target)
                continue
            zf.extract(info, dest)
            if mode:
                os.chmod(target, mode)


# --------------------------------------------------------------------------
# Java
# --------------------------------------------------------------------------


def _java_range(distribution: str, version: str) -> tuple[int, int | None]:
    """(minimum, maximum or None) Java major version the server runs on."""
    major = int(version.split(".")[0])
    if distribution == "opensearch":
        # 3.x needs 21+.  1.x/2.x install a Security Manager, which Java 24
        # removed (JEP 486): they fail to start there.
        return (21, None) if major >= 3 else (11, 23)
    # Elasticsearch 8.x runs on 17+; 9.x needs 21+.
    return (21 if major >= 9 else 17), None


def _java_major(java_home: Path) -> int | None:
    """Major version of the JDK at java_home, or None if it is not a JDK."""
    java = java_home / "bin" / "java"
    if not os.access(java, os.X_OK):
        return None
    release = java_home / "release"
    with contextlib.suppress(OSError):
        m = re.search(r'^JAVA_VERSION="([^"]+)"', release.read_text(), re.M)
        if m:
            return _parse_java_version(m.group(1))
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "([^"]+)"', out)
    return _parse_java_version(m.group(1)) if m else None


def _parse_java_version(v: str) -> int | None:
    parts = v.split(".")
    try:
        major = int(parts[0])
        if major == 1 and len(parts) > 1:  # 1.8.0_x
            major = int(parts[1])
    except ValueError:
        return None
    return major


def find_java(
    minimum: int = 17, maximum: int | None = None, env_var: str = "ES_JAVA_HOME"
) -> Path:
    """Locate a JDK home with minimum <= Java <= maximum for ES_JAVA_HOME.

    The integ-test distribution has no bundled JDK, and Elasticsearch ignores
    JAVA_HOME (it then looks for the missing bundled one), so we must always
    hand it ES_JAVA_HOME (OpenSearch: OPENSEARCH_JAVA_HOME, ``env_var``).
    Order: $<env_var> (must be valid if set: an explicit choice that is
    silently ignored is worse than an error), $JAVA_HOME, the ``java`` on
    PATH, then /usr/lib/jvm/* preferring 17.
    """
    wanted = f">= {minimum}" if maximum is None else f"{minimum}..{maximum}"

    def fits(major: int | None) -> bool:
        return major is not None and major >= minimum and (maximum is None or major <= maximum)

    explicit = os.environ.get(env_var)
    if explicit:
        major = _java_major(Path(explicit))
        if not fits(major):
            raise LaunchError(
                f"{env_var}={explicit} is not a Java {wanted} home (found {major})"
            )
        return Path(explicit)
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    jvms = sorted(glob.glob("/usr/lib/jvm/*"))
    candidates += [Path(p) for p in jvms if "17" in Path(p).name]
    candidates += [Path(p) for p in jvms if "17" not in Path(p).name]
    seen: list[str] = []
    for home in candidates:
        major = _java_major(home)
        seen.append(f"{home} ({major})")
        if fits(major):
            return home
    raise LaunchError(
        f"no Java {wanted} found; set {env_var}. Looked at: {', '.join(seen) or 'nothing'}"
    )


# --------------------------------------------------------------------------
# Processes and ports
# --------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (killed daemons whose parent is
    init may linger as zombies if init is slow to reap them)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        statline = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return False
        return True  # no procfs (macOS): trust kill(0)
    except OSError:
        return True
    state = statline.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _instance_marker(paths: _Paths) -> str:
    """The server JVM's command-line argument that is unique to the instance:
    ``jvm.options`` sets ``-Djava.io.tmpdir`` from ES_TMPDIR (OPENSEARCH_TMPDIR).
    (``es.path.conf`` is not on ES's command line; ES passes it over stdin.)"""
    return f"-Djava.io.tmpdir={paths.tmp}"


def _pid_is_instance(pid: int, paths: _Paths) -> bool:
    """Guard against a recycled PID: is pid the server of this instance?"""
    if not _pid_alive(pid):
        return False
    marker = _instance_marker(paths)
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return any(a.decode(errors="replace") == marker for a in args)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        out = subprocess.run(
            ["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True
        ).stdout
    except OSError:
        return True
    return marker in out


def _instance_pids(paths: _Paths) -> list[int]:
    """Live server processes of this instance, found by their command line.

    Why: OpenSearch's ``-d`` returns once the JVM is forked, before the JVM
    writes its pid file, so the pid file alone cannot tell "still booting"
    from "died during boot".
    """
    proc = Path("/proc")
    if (proc / "self" / "cmdline").exists():
        pids = [int(d.name) for d in proc.iterdir() if d.name.isdigit()]
    else:  # no procfs (macOS)
        try:
            out = subprocess.run(
                ["ps", "-ax", "-o", "pid="], capture_output=True, text=True
            ).stdout
        except OSError:
            return []
        pids = [int(w) for w in out.split() if w.isdigit()]
    return [pid for pid in pids if pid != os.getpid() and _pid_is_instance(pid, paths)]


def _port_free(port: int) -> bool:
    """Can ES bind 127.0.0.1:port?  SO_REUSEADDR like Netty, so TIME_WAIT
    leftovers from a just-stopped instance do not count as busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(exclude: frozenset[int] | set[int] = frozenset()) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port
    raise LaunchError("could not find a free TCP port")


def _port_refuses(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return True
    return False


# --------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------

# Never route loopback health checks through an HTTP(S)_PROXY from the env.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _health_once(url: str, wait: str = "1s") -> dict:
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": "application/json"}
    netloc = parts.netloc
    if parts.username is not None:  # https://user:pass@host:9200
        netloc = netloc.rsplit("@", 1)[1]
        cred = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    req = urllib.request.Request(
        f"{base}/_cluster/health?wait_for_status=yellow&timeout={wait}", headers=headers
    )
    try:
        with _opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        # 408: wait_for_status timed out; the body still has the health.
        if e.code == 408:
            return json.loads(e.read())
        raise


class _ServerExited(Exception):
    """The server process died while we waited for it to become healthy."""


def wait_healthy(url: str, timeout: float = 60) -> dict:
    """Block until the cluster at url reports yellow or green health.

    Uses ``GET /_cluster/health`` because the minimal Elasticsearch
    distribution answers ``GET /`` with 405 (OpenSearch's answers it, but
    one probe for both keeps them alike).  Yellow is enough: single-node
    clusters never place replicas.  Returns the health document; raises
    TimeoutError with the last problem seen otherwise.
    """
    return _wait_healthy(url, timeout)


def _wait_healthy(url: str, timeout: float, alive: Callable[[], bool] | None = None) -> dict:
    """wait_healthy that gives up (_ServerExited) as soon as ``alive()`` is
    False, so a node that dies while booting fails the start at once instead
    of after the whole timeout."""
    deadline = time.monotonic() + timeout
    last = "no attempt made"
    while True:
        if alive is not None and not alive():
            raise _ServerExited(f"server process exited before {url} became healthy")
        try:
            health = _health_once(url)
            if health.get("status") in ("yellow", "green"):
                return health
            last = f"cluster status {health.get('status')!r}"
        except (OSError, ValueError) as e:  # URLError, refused, bad JSON
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not healthy within {timeout:g}s: {last}")
        time.sleep(0.25)


# --------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------


def _read_small(path: Path, limit: int = 65536) -> str:
    """A small file's text, never through a symlink (another account may have planted one
    where we read as root). Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return fh.read(limit).decode("utf-8", errors="replace")


def _read_meta(paths: _Paths) -> dict | None:
    try:
        return json.loads(_read_small(paths.meta))
    except (OSError, ValueError):
        return None


def _write_meta(paths: _Paths, inst: Instance) -> None:
    data = asdict(inst)
    data["data_dir"] = str(inst.data_dir)
    data["log_file"] = str(inst.log_file)
    tmp = paths.meta.with_suffix(".json.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a link planted there goes, its target untouched
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, paths.meta)


def _read_pidfile(paths: _Paths) -> int | None:
    try:
        return int(_read_small(paths.pidfile, 64).strip())
    except (OSError, ValueError):
        return None


def _instance_from_meta(meta: dict, pid: int) -> Instance:
    return Instance(
        name=meta["name"],
        url=meta["url"],
        pid=pid,
        port=int(meta["port"]),
        data_dir=Path(meta["data_dir"]),
        log_file=Path(meta["log_file"]),
        transport_port=int(meta.get("transport_port", 0)),
        version=meta.get("version", DEFAULT_VERSION),
        heap=meta.get("heap", "512m"),
        # instance.json files written before OpenSearch support are all ES.
        distribution=meta.get("distribution", "elasticsearch"),
    )


def is_running(name: str = "default") -> Instance | None:
    """The instance if its server process is alive, else None.

    Says nothing about health (see :func:`wait_healthy`); works from any
    process because it only reads the instance's pid and metadata files.
    """
    _check_name(name)
    paths = _paths(name)
    meta = _read_meta(paths)
    if meta is None:
        return None
    for pid in (_read_pidfile(paths), meta.get("pid")):
        if pid and _pid_is_instance(int(pid), paths):
            return _instance_from_meta(meta, int(pid))
    return None


# --------------------------------------------------------------------------
# Start / stop
# --------------------------------------------------------------------------


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tail_file(path: Path, lines: int = 40, offset: int = 0) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return ""
    return _tail_text(data.decode(errors="replace"), lines)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _run_as_user() -> pwd.struct_passwd | None:
    """None when not root; else the (created if missing) unprivileged user."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("ES_LOCAL_USER", DEFAULT_RUN_AS_USER)
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
        capture_output=True, text=True,
    )  # fmt: skip
    try:
        return pwd.getpwnam(user)  # also covers a concurrent useradd winning
    except KeyError:
        raise LaunchError(
            f"Elasticsearch/OpenSearch refuse to run as root and creating user {user!r} failed: "
            f"{proc.stderr.strip() or proc.returncode}"
        ) from None


def _check_reachable(user: pwd.struct_passwd, path: Path) -> None:
    """Fail early (instead of with an obscure Java error) if the server's
    user cannot reach the cache, e.g. ES_LOCAL_CACHE pointing into /root."""
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError:
            continue
        if st.st_uid == user.pw_uid:
            continue
        bit = stat.S_IXGRP if st.st_gid == user.pw_gid else stat.S_IXOTH
        if not st.st_mode & bit:
            raise LaunchError(
                f"user {user.pw_name!r} (which runs the server because we are root) cannot "
                f"enter {p}; point ES_LOCAL_CACHE at a directory it can reach"
            )


def _check_root_owned(path: Path, what: str) -> None:
    """As root, refuse a folder another account owns or may write: it could swap what root
    reads there, or plant a link where root writes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # created by root, below
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise LaunchError(
            f"{what} {path} is not a directory owned by root and writable only by it "
            f"(owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}): refusing to work in it as root; "
            "fix its ownership or point ES_LOCAL_CACHE at a root-owned directory"
        )


def _own_dir(path: Path, uid: int, gid: int, mode: int = 0o755) -> None:
    """``path`` as a real directory owned by uid:gid: created if missing, never through a
    symlink (lstat, lchown), never recursively: what is inside was made by its owner."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise LaunchError(f"{path} is a symlink or not a directory: refusing to use it (remove it)")
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.lchown(path, uid, gid)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode, follow_symlinks=False)


def _prepare_instance(home: Path, paths: _Paths, user: pwd.struct_passwd | None) -> None:
    """The instance's folders, safe to create as root.

    The instance root stays root's (meta, launcher output); only data, logs, tmp and config
    belong to the server's account, and root never writes inside them: the config copy runs
    as that account. A link the account planted therefore gives it nothing of root's."""
    if user is None:
        for d in (paths.root, paths.data, paths.logs, paths.tmp):
            d.mkdir(parents=True, exist_ok=True)
        _sync_config(home, paths)
        return
    _check_reachable(user, paths.root.parent)
    _check_reachable(user, home)
    _own_dir(paths.root, 0, 0)
    for d in (paths.config, paths.data, paths.logs, paths.tmp):
        _own_dir(d, user.pw_uid, user.pw_gid)
    _as_user(user, lambda: _sync_config(home, paths))


def _as_user(user: pwd.struct_passwd, work: Callable[[], None]) -> None:
    """Run ``work`` in a child process with only ``user``'s rights."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            work()
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported through the exit code
            with contextlib.suppress(Exception):
                sys.stderr.write(f"es_local: as {user.pw_name}: {exc}\n")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise LaunchError(f"preparing the instance as user {user.pw_name!r} failed (see stderr)")


def _node_settings(
    distribution: str, home: Path, name: str, paths: _Paths, port: int, transport_port: int
) -> list[str]:
    """``-E`` arguments for the node; the same keys work on both distributions."""
    settings = {
        "cluster.name": _cluster_name(name),
        "node.name": name,
        "http.host": "127.0.0.1",
        "http.port": str(port),
        "transport.host": "127.0.0.1",
        "transport.port": str(transport_port),
        # Single-node on loopback: bootstrap checks are warnings, not fatal.
        "discovery.type": "single-node",
        "path.data": str(paths.data),
        "path.logs": str(paths.logs),
        # Tests delete indices by wildcard.
        "action.destructive_requires_name": "false",
        # A nearly full CI disk must not flip indices to read-only.
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    # Only pass settings whose module/plugin exists: unknown settings are
    # fatal.  (The integ-test zips have no security plugin and no geoip.)
    if distribution == "opensearch":
        if (home / "plugins" / "opensearch-security").is_dir():
            settings["plugins.security.disabled"] = "true"
    else:
        if (home / "modules" / "x-pack-security").is_dir():
            settings["xpack.security.enabled"] = "false"
        if (home / "modules" / "ingest-geoip").is_dir():
            settings["ingest.geoip.downloader.enabled"] = "false"
    args: list[str] = []
    for k, v in settings.items():
        args += ["-E", f"{k}={v}"]
    return args


# OpenSearch's jvm.options names files relative to the JVM's working dir,
# which bin/opensearch sets to the (read-only) distribution home; a gc log
# that cannot be opened stops the JVM ("Invalid -Xlog option").
# Elasticsearch 8 runs the JVM in its logs dir and uses bare names instead.
_JVM_RELATIVE_LOGS = re.compile(r"(file=|-XX:ErrorFile=|-Xloggc:)logs/")
_JVM_RELATIVE_HEAPDUMP = re.compile(r"^((?:\d+(?:-\d*)?:)?-XX:HeapDumpPath=)data$", re.M)


def _instance_jvm_options(text: str, paths: _Paths) -> str:
    """jvm.options with the distribution-home-relative paths pointed into the instance."""
    text = _JVM_RELATIVE_LOGS.sub(lambda m: f"{m.group(1)}{paths.logs}/", text)
    return _JVM_RELATIVE_HEAPDUMP.sub(lambda m: f"{m.group(1)}{paths.logs}", text)


def _sync_config(home: Path, paths: _Paths) -> None:
    """Per-instance ES_PATH_CONF: ES writes its keystore into the config dir,
    so sharing the distribution's would make instances step on each other
    and would need a writable distribution.  (Same for OpenSearch.)"""
    shutil.copytree(home / "config", paths.config, dirs_exist_ok=True)
    jvm_options = paths.config / "jvm.options"
    if jvm_options.is_file():
        text = jvm_options.read_text()
        fixed = _instance_jvm_options(text, paths)
        if fixed != text:
            jvm_options.write_text(fixed)


def _server_pid(paths: _Paths, grace: float) -> int | None:
    """Pid of the server the launcher just started, or None if it is gone.

    Elasticsearch's ``-d`` returns after the node started, pid file written.
    OpenSearch's returns right after forking the JVM (whose exec may not
    even have happened yet), so look for the process by its command line
    for up to ``grace`` seconds before concluding it died.
    """
    end = time.monotonic() + grace
    while True:
        pid = _read_pidfile(paths)
        if pid is not None and _pid_alive(pid):
            return pid
        found = _instance_pids(paths)
        if found:
            return found[0]
        if time.monotonic() >= end:
            return None
        time.sleep(0.1)


#: The only variables the server gets from the caller's environment: the launcher as root
#: must not hand it root's AWS keys, API keys or anything pointing it elsewhere.
_PASSED_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
_SERVER_PATH = "/usr/local/bin:/usr/bin:/bin"


def _server_env() -> dict[str, str]:
    """The server's environment before its own variables are added: nearly empty."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env["PATH"] = _SERVER_PATH
    return env


@contextlib.contextmanager
def _append(path: Path) -> Iterator[Any]:
    """``path`` opened to append, never through a symlink."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise LaunchError(f"cannot open {path} to append ({exc.strerror}): refusing to follow a link there") from None
    with os.fdopen(fd, "ab") as fh:
        yield fh


def _launch(
    dist: _Dist,
    distribution: str,
    name: str,
    paths: _Paths,
    home: Path,
    java_home: Path,
    user: pwd.struct_passwd | None,
    port: int,
    transport_port: int,
    heap: str,
    version: str,
    deadline: float,
) -> Instance:
    _prepare_instance(home, paths, user)
    with contextlib.suppress(FileNotFoundError):
        paths.pidfile.unlink()

    env = _server_env()
    env.update({
        dist.java_home_var: str(java_home),
        dist.java_opts_var: f"-Xms{heap} -Xmx{heap}",
        dist.path_conf_var: str(paths.config),
        dist.tmpdir_var: str(paths.tmp),
        "HOME": str(paths.root),
    })  # fmt: skip
    if user is not None:
        env.update(USER=user.pw_name, LOGNAME=user.pw_name)
    cmd = [str(home / "bin" / dist.launcher), "-d", "-p", str(paths.pidfile)]
    cmd += _node_settings(distribution, home, name, paths, port, transport_port)

    log_file = paths.log_file(name)
    log_offset = _size(log_file)
    out_offset = _size(paths.launcher_out)

    def failure(msg: str) -> LaunchError:
        out = _tail_file(paths.launcher_out, 40, out_offset)
        es_log = _tail_file(log_file, 40, log_offset)
        # First line stands alone (the CLI prints only it unless --verbose).
        parts = [
            f"{dist.title} instance {name!r} on port {port}: {msg} "
            f"(logs: {paths.launcher_out}, {log_file})"
        ]
        if out:
            parts.append(f"--- {paths.launcher_out} (tail) ---\n{out}")
        if es_log:
            parts.append(f"--- {log_file} (tail) ---\n{es_log}")
        return LaunchError("\n".join(parts))

    log.info("starting %s %s instance %r on port %d", dist.title, version, name, port)
    with _append(paths.launcher_out) as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
        out.flush()
        extra: dict = {}
        if user is not None:
            extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        try:
            # `-d` daemonises: the launcher returns once the node is started
            # or failed (OpenSearch: once the JVM is forked), and the server
            # is not our child.  New session so a Ctrl-C in the calling
            # terminal does not reach the server.
            proc = subprocess.Popen(
                cmd, env=env, cwd=paths.root, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, **extra,
            )  # fmt: skip
        except OSError as e:
            raise failure(f"could not run {cmd[0]}: {e}") from e
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for pid in {_read_pidfile(paths), *_instance_pids(paths)}:
                if pid and _pid_is_instance(pid, paths):
                    os.kill(pid, signal.SIGKILL)
            raise failure("launcher did not finish in time") from None
    if rc != 0:
        raise failure(f"bin/{dist.launcher} exited with {rc}")
    pid = _server_pid(paths, grace=min(5.0, max(0.5, deadline - time.monotonic())))
    if pid is None:
        raise failure("server process is not running after launch")
    inst = Instance(
        name=name,
        url=f"http://127.0.0.1:{port}",
        pid=pid,
        port=port,
        data_dir=paths.data,
        log_file=log_file,
        transport_port=transport_port,
        version=version,
        heap=heap,
        distribution=distribution,
    )
    _write_meta(paths, inst)
    try:
        _wait_healthy(
            inst.url, max(1.0, deadline - time.monotonic()), alive=lambda: _pid_alive(pid)
        )
    except _ServerExited as e:
        # Let the log writer finish the stack trace we are about to quote.
        time.sleep(0.2)
        raise failure(str(e)) from None
    except TimeoutError as e:
        err = failure(str(e))
        _stop_locked(name, paths, 30)
        raise err from None
    return inst


def start(
    name: str = "default",
    port: int | None = None,
    heap: str = "512m",
    version: str | None = None,
    fresh: bool = False,
    timeout: float = 120,
    distribution: str = "elasticsearch",
) -> Instance:
    """Start (or reuse) the named instance and wait until it is healthy.

    ``distribution`` is ``"elasticsearch"`` or ``"opensearch"``;
    ``version=None`` means that distribution's default (:data:`DEFAULT_VERSIONS`).

    Idempotent: if the instance is already running with a compatible port,
    distribution, version and heap, it is returned as is (after a health
    check), so the demo, CI and tests can all call this without coordinating.
    An instance name keeps its distribution: asking for the other one is a
    LaunchError (the data dirs are not interchangeable) unless ``fresh=True``.

    ``port=None`` reuses the instance's previous port when it is free (a
    stable URL across stop/start) and otherwise picks a free one.  An
    explicit port is used as given.  The data dir is kept across restarts;
    ``fresh=True`` stops a running instance and wipes its data first.

    Raises LaunchError (with log tails) if the server cannot be started or
    does not become healthy within ``timeout`` seconds (not counting a
    first-time download of the distribution).  ValueError for bad arguments.
    """
    _check_name(name)
    _check_heap(heap)
    dist, version = _resolve(distribution, version)
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"invalid port {port}")
    deadline = time.monotonic() + timeout
    paths = _paths(name)
    if os.geteuid() == 0:  # before root creates or reads anything there
        for folder, what in ((cache_dir(), "the cache folder"), (paths.root.parent, "the instances folder")):
            _check_root_owned(folder, what)
    with _flock(paths.lock):
        running = is_running(name)
        if running is not None and fresh:
            _stop_locked(name, paths, 60)
            running = None
        if running is not None:
            mismatch = [
                f"{what} {have} (asked for {want})"
                for what, have, want in (
                    ("distribution", running.distribution, distribution),
                    ("port", running.port, port if port is not None else running.port),
                    ("version", running.version, version),
                    ("heap", running.heap, heap),
                )
                if have != want
            ]
            if mismatch:
                raise LaunchError(
                    f"instance {name!r} is already running with {', '.join(mismatch)}; "
                    + (
                        "stop it first"
                        if running.distribution == distribution
                        else "stop and remove it first (or start it with --fresh)"
                    )
                )
            try:
                wait_healthy(running.url, max(1.0, deadline - time.monotonic()))
            except TimeoutError as e:
                raise LaunchError(
                    f"instance {name!r} is running (pid {running.pid}) but not healthy: {e}\n"
                    f"--- {running.log_file} (tail) ---\n{_tail_file(running.log_file)}"
                ) from None
            return running

        prev = _read_meta(paths) or {}
        prev_dist = prev.get("distribution", "elasticsearch") if prev else distribution
        if prev_dist != distribution and not fresh:
            raise LaunchError(
                f"instance {name!r} holds {prev_dist} data, which {dist.title} cannot open; "
                f"remove it first (or start it with --fresh)"
            )
        if port is not None and not _port_free(port):  # before any download
            raise LaunchError(f"port {port} is already in use on 127.0.0.1")
        user = _run_as_user()
        if user is not None:
            _check_reachable(user, cache_dir())  # before a pointless download
        home = ensure_distribution(version, distribution)
        if user is not None:
            _check_root_owned(home, "the distribution folder")
        lowest, highest = _java_range(distribution, version)
        java_home = find_java(lowest, highest, env_var=dist.java_home_var)
        # A first-time download is not held against the health timeout.
        deadline = time.monotonic() + timeout
        if fresh:
            shutil.rmtree(paths.data, ignore_errors=True)
            if prev_dist != distribution:  # the other one's keystore and yml files
                shutil.rmtree(paths.config, ignore_errors=True)

        auto_port = port is None
        attempts = 3 if auto_port else 1
        for attempt in range(1, attempts + 1):
            if port is not None:
                http_port = port
                if not _port_free(http_port):
                    raise LaunchError(f"port {http_port} is already in use on 127.0.0.1")
            elif attempt == 1 and prev.get("port") and _port_free(int(prev["port"])):
                http_port = int(prev["port"])
            else:
                http_port = _free_port()
            tp = int(prev.get("transport_port") or 0)
            transport_port = (
                tp if tp and tp != http_port and _port_free(tp) else _free_port({http_port})
            )
            try:
                return _launch(
                    dist, distribution, name, paths, home, java_home, user, http_port,
                    transport_port, heap, version, deadline,
                )  # fmt: skip
            except LaunchError as e:
                # Someone grabbed an auto-picked port between check and bind.
                if attempt < attempts and "BindException" in str(e):
                    log.info("port race on %d/%d, retrying", http_port, transport_port)
                    prev = {}
                    continue
                raise
    raise AssertionError("unreachable")


def _stop_locked(name: str, paths: _Paths, timeout: float) -> None:
    meta = _read_meta(paths) or {}
    pids = {p for p in (_read_pidfile(paths), meta.get("pid")) if p}
    pids = {int(p) for p in pids if _pid_is_instance(int(p), paths)}
    for pid in pids:
        log.info("stopping instance %r (pid %d)", name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        # Checked again: the pid may have been recycled by another process since SIGTERM.
        if _pid_is_instance(pid, paths):
            log.info("instance %r (pid %d) ignored SIGTERM; sending SIGKILL", name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    kill_deadline = time.monotonic() + 15
    while any(_pid_is_instance(p, paths) for p in pids):
        if time.monotonic() >= kill_deadline:
            raise LaunchError(f"instance {name!r}: pids {sorted(pids)} survived SIGKILL")
        time.sleep(0.1)
    with contextlib.suppress(FileNotFoundError):
        paths.pidfile.unlink()
    # The listener goes away with the process; make sure before returning so
    # callers can rely on "stopped" meaning "connections are refused".
    port = meta.get("port")
    if pids and port:
        end = time.monotonic() + 5
        while not _port_refuses(int(port)) and time.monotonic() < end:
            time.sleep(0.1)


def stop(name: str = "default", timeout: float = 60) -> None:
    """Stop the named instance: SIGTERM, wait up to timeout, then SIGKILL.

    A no-op if it is not running.  Data and metadata are kept, so a later
    ``start(name)`` comes back on the same port with the same data.
    """
    _check_name(name)
    paths = _paths(name)
    if not paths.root.exists():
        return  # never started here; don't litter a lock file
    with _flock(paths.lock):
        _stop_locked(name, paths, timeout)


def remove(name: str, timeout: float = 60) -> None:
    """Stop the named instance and delete all of its state (data, logs)."""
    _check_name(name)
    paths = _paths(name)
    if not paths.root.exists() and not paths.lock.exists():
        return
    with _flock(paths.lock):
        _stop_locked(name, paths, timeout)
        shutil.rmtree(paths.root, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        paths.lock.unlink()


@contextlib.contextmanager
def claim(base: str, slots: int = 32) -> Iterator[str]:
    """Yield an instance name (``base``, ``base-2``, ...) no other live process holds.

    Why: every pytest session starts its cluster with ``fresh=True``; two
    sessions on one machine (two terminals, two engineers, CI jobs sharing a
    runner) using the same name would wipe and restart each other's cluster
    mid-run.  The claim is an flock held for the duration of the ``with``
    block, so it is released even if the holder crashes, and the next
    claimant reuses (and, with fresh=True, wipes) the leftover instance
    instead of leaking a new one per crashed session.
    """
    _check_name(base)
    instances = cache_dir() / "instances"
    instances.mkdir(parents=True, exist_ok=True)
    for i in range(1, slots + 1):
        name = base if i == 1 else f"{base}-{i}"
        fh = open(instances / f"{name}.claim", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        try:
            yield name
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        return
    raise LaunchError(f"all {slots} {base!r} instance names are claimed by live processes")


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="es_local.py",
        description="Run local Elasticsearch (or OpenSearch) instances for tests, the demo and CI.",
        epilog=f"Cache: {cache_dir()} (override with ES_LOCAL_CACHE).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(cmd: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(cmd, help=help, description=help)
        sp.add_argument(
            "-v", "--verbose", action="store_true",
            help="on failure, print log tails too (default: one error line)",
        )  # fmt: skip
        if cmd != "fetch":
            sp.add_argument("--name", default="default", help="instance name (default: %(default)s)")
        return sp

    def add_distribution(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--distribution", choices=DISTRIBUTIONS, default="elasticsearch",
            help="server to run (default: %(default)s)",
        )  # fmt: skip
        defaults = ", ".join(f"{v} for {d}" for d, v in DEFAULT_VERSIONS.items())
        sp.add_argument("--version", help=f"server version X.Y.Z (default: {defaults})")

    sp = add("start", "start an instance (or reuse the running one) and print its URL")
    sp.add_argument("--port", type=int, help="HTTP port (default: previous port if free, else a free one)")
    sp.add_argument("--heap", default="512m", help="JVM heap, e.g. 512m or 1g (default: %(default)s)")
    add_distribution(sp)
    sp.add_argument("--fresh", action="store_true", help="wipe the instance's data first")
    sp.add_argument("--timeout", type=float, default=120, help="seconds to wait for health (default: %(default)s)")
    sp = add("stop", "stop an instance (keeps its data); no-op if not running")
    sp.add_argument("--timeout", type=float, default=60, help="seconds before SIGKILL (default: %(default)s)")
    add("status", "exit 0 and describe the instance if it is running, else exit 1")
    add("url", "print the URL of a running instance (exit 1 if not running)")
    add("remove", "stop an instance and delete its data and logs")
    sp = add("fetch", "download and unpack the distribution only (CI warm-up)")
    add_distribution(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage
    logging.basicConfig(level=logging.INFO, format="es_local: %(message)s", stream=sys.stderr)
    try:
        if args.command == "fetch":
            print(ensure_distribution(args.version, args.distribution))
        elif args.command == "start":
            inst = start(
                args.name, port=args.port, heap=args.heap, version=args.version,
                fresh=args.fresh, timeout=args.timeout, distribution=args.distribution,
            )  # fmt: skip
            print(inst.url)
        elif args.command == "stop":
            stop(args.name, timeout=args.timeout)
        elif args.command == "remove":
            remove(args.name)
        elif args.command in ("status", "url"):
            inst = is_running(args.name)
            if inst is None:
                print(f"es_local: instance {args.name!r} is not running", file=sys.stderr)
                return 1
            if args.command == "url":
                print(inst.url)
            else:
                print(
                    f"{inst.name} running {inst.url} pid={inst.pid} "
                    f"distribution={inst.distribution} version={inst.version} "
                    f"data={inst.data_dir} log={inst.log_file}"
                )
    except ValueError as e:
        print(f"es_local: error: {e}", file=sys.stderr)
        return 2
    except (LaunchError, OSError) as e:
        msg = str(e) if args.verbose else str(e).splitlines()[0]
        print(f"es_local: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
