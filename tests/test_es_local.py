"""Tests for scripts/es_local.py, the local Elasticsearch/OpenSearch launcher.

The ES tests start real servers (~8-10 s each), so one lifecycle test walks
a private instance through start / idempotent start / stop / restart /
fresh restart instead of paying for a start per assertion.  The same for
OpenSearch (~13-17 s a start), which is driven over plain HTTP (urllib):
elasticsearch-py's product check rejects OpenSearch, and opensearch-py is
not a dependency.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import es_local
import pytest
from elasticsearch import Elasticsearch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "es_local.py"


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return True
    return False


def unique_name(prefix: str = "pytest-t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    """One JSON request to a local server (never through an HTTP proxy)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with _no_proxy.open(req, timeout=30) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------
# CLI and argument handling (no server needed)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [[], ["start"], ["stop"], ["status"], ["url"], ["fetch"], ["remove"]]
)
def test_cli_help_exits_0(args: list[str]) -> None:
    r = run_cli(*args, "--help", timeout=30)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["start", "--bogus"],
        ["frobnicate"],
        [],
        ["start", "--port", "not-a-number"],
        ["start", "--name", "../escape"],
        ["start", "--name", "ok", "--heap", "lots"],
        ["fetch", "--version", "latest"],
        ["start", "--distribution", "solr"],
        ["fetch", "--distribution", "opensearch", "--version", "2.x"],
    ],
)
def test_cli_bad_usage_exits_2(args: list[str]) -> None:
    r = run_cli(*args, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.strip()


def test_cli_status_and_url_of_unknown_instance_exit_1_and_stop_is_noop() -> None:
    name = unique_name()
    for cmd in ("status", "url"):
        r = run_cli(cmd, "--name", name, timeout=30)
        assert r.returncode == 1
        assert r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1
    assert run_cli("stop", "--name", name, timeout=30).returncode == 0
    assert es_local.is_running(name) is None


def test_invalid_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError):
        es_local.start(name="../etc")
    with pytest.raises(ValueError):
        es_local.start(name="x", heap="-1")
    with pytest.raises(ValueError):
        es_local.ensure_distribution("8.x")
    with pytest.raises(ValueError, match="distribution"):
        es_local.start(name="x", distribution="solr")
    with pytest.raises(ValueError, match="distribution"):
        es_local.ensure_distribution(distribution="solr")


def test_instance_metadata_without_distribution_is_elasticsearch() -> None:
    """instance.json files written before OpenSearch support stay usable."""
    meta = {"name": "old", "url": "http://127.0.0.1:9", "port": 9, "data_dir": "/d", "log_file": "/l"}
    inst = es_local._instance_from_meta(meta, pid=1)
    assert (inst.distribution, inst.version) == ("elasticsearch", es_local.DEFAULT_VERSION)


def test_opensearch_jvm_options_get_instance_paths(tmp_path: Path) -> None:
    """bin/opensearch runs the JVM in the read-only distribution home, where
    jvm.options' relative gc log cannot be created (the JVM then refuses to start)."""
    paths = es_local._Paths(tmp_path / "inst")
    text = (
        "-XX:HeapDumpPath=data\n"
        "-XX:ErrorFile=logs/hs_err_pid%p.log\n"
        "8:-Xloggc:logs/gc.log\n"
        "9-:-Xlog:gc*,gc+age=trace,safepoint:file=logs/gc.log:utctime,pid,tags:filecount=32\n"
        "-Djava.io.tmpdir=${OPENSEARCH_TMPDIR}\n"
    )
    logs = paths.logs
    assert es_local._instance_jvm_options(text, paths) == (
        f"-XX:HeapDumpPath={logs}\n"
        f"-XX:ErrorFile={logs}/hs_err_pid%p.log\n"
        f"8:-Xloggc:{logs}/gc.log\n"
        f"9-:-Xlog:gc*,gc+age=trace,safepoint:file={logs}/gc.log:utctime,pid,tags:filecount=32\n"
        "-Djava.io.tmpdir=${OPENSEARCH_TMPDIR}\n"
    )
    es_style = "-XX:ErrorFile=hs_err_pid%p.log\n-Xlog:gc*:file=gc.log:utctime\n"
    assert es_local._instance_jvm_options(es_style, paths) == es_style


def test_find_java_finds_17_or_newer() -> None:
    home = es_local.find_java(17)
    assert (home / "bin" / "java").exists()
    assert (es_local._java_major(home) or 0) >= 17


def test_find_java_for_opensearch_2_rejects_java_24_and_newer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenSearch 2.x installs a Security Manager, which Java 24 removed."""
    lowest, highest = es_local._java_range("opensearch", "2.19.6")
    assert highest is not None and highest < 24
    home = es_local.find_java(lowest, highest, env_var="OPENSEARCH_JAVA_HOME")
    assert lowest <= (es_local._java_major(home) or 0) <= highest
    try:
        newest = es_local.find_java(24)
    except es_local.LaunchError:
        pytest.skip("no Java >= 24 on this machine")
    monkeypatch.setenv("OPENSEARCH_JAVA_HOME", str(newest))
    with pytest.raises(es_local.LaunchError, match="OPENSEARCH_JAVA_HOME=.* is not a Java 11..23"):
        es_local.find_java(lowest, highest, env_var="OPENSEARCH_JAVA_HOME")


def test_claim_gives_concurrent_holders_distinct_names() -> None:
    base = unique_name()
    with es_local.claim(base) as first:
        with es_local.claim(base) as second:
            assert (first, second) == (base, f"{base}-2")
    with es_local.claim(base) as again:  # released on exit, so reusable
        assert again == base
    for n in (base, f"{base}-2"):
        (es_local.cache_dir() / "instances" / f"{n}.claim").unlink()


def test_unzip_without_unzip_command_keeps_modes_and_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat
    import zipfile

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        exe = zipfile.ZipInfo("top/bin/run")
        exe.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(exe, "#!/bin/sh\n")
        link = zipfile.ZipInfo("top/bin/alias")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "run")
        zf.writestr("top/README", "plain")
    monkeypatch.setattr(es_local.shutil, "which", lambda _cmd: None)
    dest = tmp_path / "out"
    dest.mkdir()
    es_local._unzip(archive, dest)
    assert os.access(dest / "top/bin/run", os.X_OK)
    assert os.readlink(dest / "top/bin/alias") == "run"
    assert (dest / "top/README").read_text() == "plain"


def test_start_on_busy_port_fails_fast_without_launching() -> None:
    name = unique_name()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        try:
            with pytest.raises(es_local.LaunchError, match="already in use"):
                es_local.start(name=name, port=busy, timeout=30)
        finally:
            es_local.remove(name)


@pytest.mark.es
def test_launch_failure_reports_log_tail() -> None:
    """A server that cannot start surfaces ES's own error, not just 'failed'."""
    name = unique_name()
    try:
        with pytest.raises(es_local.LaunchError) as exc:
            es_local.start(name=name, heap="1k", timeout=60)
        assert "Too small" in str(exc.value)  # the JVM's complaint, from the log tail
        assert es_local.is_running(name) is None
        r = run_cli("start", "--name", name, "--heap", "1k", "--timeout", "60")
        assert r.returncode == 1
        assert r.stdout == ""
        # Progress lines may precede it, but the error itself is one line.
        lines = r.stderr.strip().splitlines()
        assert [ln for ln in lines if "error" in ln.lower()] == lines[-1:], r.stderr
        assert lines[-1].startswith("es_local: error: ") and "launcher.out" in lines[-1]
    finally:
        es_local.remove(name)


# --------------------------------------------------------------------------
# Real servers
# --------------------------------------------------------------------------


@pytest.mark.es
def test_session_cluster_is_healthy_and_usable(es_client: Elasticsearch) -> None:
    assert es_client.cluster.health()["status"] in ("yellow", "green")
    index = unique_name("es-local-smoke")
    es_client.index(index=index, id="1", document={"k": "v"}, refresh=True)
    assert es_client.get(index=index, id="1")["_source"] == {"k": "v"}
    es_client.indices.delete(index=index)


@pytest.mark.es
def test_private_instance_lifecycle(private_es, es_client: Elasticsearch) -> None:
    name, url, port = private_es.name, private_es.url, private_es.port
    assert url == f"http://127.0.0.1:{port}"

    # Healthy, and usable with the real client.
    assert es_local.wait_healthy(url, timeout=60)["status"] in ("yellow", "green")
    with Elasticsearch(url, request_timeout=30) as es:
        es.index(index="docs", id="a", document={"title": "persist me"}, refresh=True)
        hits = es.search(index="docs", query={"match": {"title": "persist"}})["hits"]
        assert [h["_id"] for h in hits["hits"]] == ["a"]

    # Idempotent start: same process, from the API and from another process.
    running = es_local.is_running(name)
    assert running is not None and running.port == port
    assert (running.distribution, running.version) == ("elasticsearch", es_local.DEFAULT_VERSION)
    again = es_local.start(name=name)
    assert (again.pid, again.url) == (running.pid, url)
    r = run_cli("start", "--name", name)
    assert (r.returncode, r.stdout) == (0, url + "\n"), r.stderr
    r = run_cli("status", "--name", name)
    assert r.returncode == 0 and url in r.stdout
    assert run_cli("url", "--name", name).stdout == url + "\n"
    with pytest.raises(es_local.LaunchError, match="already running"):
        es_local.start(name=name, port=port + 1 if port < 65535 else port - 1)

    # Stop: the port refuses connections; the shared cluster keeps serving.
    private_es.stop()
    assert refuses_connections(port)
    assert es_local.is_running(name) is None
    assert run_cli("status", "--name", name).returncode == 1
    assert es_client.cluster.health()["status"] in ("yellow", "green")
    private_es.stop()  # no-op when already stopped

    # Restart: same URL, same data.
    restarted = private_es.start()
    assert restarted.url == url
    assert restarted.pid != running.pid
    with Elasticsearch(url, request_timeout=30) as es:
        assert es.get(index="docs", id="a")["_source"] == {"title": "persist me"}

    # fresh=True on a running instance: restarted with its data wiped.
    wiped = es_local.start(name=name, fresh=True)
    assert wiped.pid != restarted.pid
    assert wiped.url == url
    with Elasticsearch(url, request_timeout=30) as es:
        assert not es.indices.exists(index="docs")


# --------------------------------------------------------------------------
# OpenSearch
# --------------------------------------------------------------------------


@pytest.mark.es
def test_each_distribution_and_version_has_its_own_home() -> None:
    os_home = es_local.ensure_distribution(distribution="opensearch")
    es_home = es_local.ensure_distribution()
    assert os_home == es_local.cache_dir() / f"opensearch-{es_local.DEFAULT_VERSIONS['opensearch']}"
    assert es_home == es_local.cache_dir() / f"elasticsearch-{es_local.DEFAULT_VERSION}"
    assert (os_home / "bin" / "opensearch").is_file()
    assert (es_home / "bin" / "elasticsearch").is_file()
    r = run_cli("fetch", "--distribution", "opensearch")
    assert (r.returncode, r.stdout) == (0, f"{os_home}\n"), r.stderr


@pytest.mark.es
def test_opensearch_instance_lifecycle() -> None:
    """Start from the CLI, index and search, stop, restart with the data kept."""
    name = unique_name("pytest-os")
    try:
        r = run_cli("start", "--name", name, "--distribution", "opensearch")
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+\n", r.stdout), r.stdout
        url = r.stdout.strip()
        inst = es_local.is_running(name)
        assert inst is not None and inst.url == url
        assert (inst.distribution, inst.version) == ("opensearch", es_local.DEFAULT_VERSIONS["opensearch"])
        assert "distribution=opensearch" in run_cli("status", "--name", name).stdout

        # It is really OpenSearch, healthy, and indexes and searches.
        assert http_json("GET", url + "/")["version"]["distribution"] == "opensearch"
        assert es_local.wait_healthy(url, timeout=60)["status"] in ("yellow", "green")
        http_json("PUT", url + "/docs/_doc/a?refresh=true", {"title": "persist me"})
        found = http_json("POST", url + "/docs/_search", {"query": {"match": {"title": "persist"}}})
        assert [h["_id"] for h in found["hits"]["hits"]] == ["a"]

        # Idempotent with the same distribution; the other one is refused.
        again = es_local.start(name=name, distribution="opensearch")
        assert (again.pid, again.url) == (inst.pid, url)
        with pytest.raises(es_local.LaunchError, match="distribution opensearch .*remove it first"):
            es_local.start(name=name)

        # Stop: the port refuses connections.
        es_local.stop(name)
        assert refuses_connections(inst.port)
        assert es_local.is_running(name) is None
        # A stopped OpenSearch instance is not silently reopened by Elasticsearch.
        with pytest.raises(es_local.LaunchError, match="holds opensearch data"):
            es_local.start(name=name, distribution="elasticsearch")

        # Restart: same URL, same data.
        restarted = es_local.start(name=name, distribution="opensearch")
        assert restarted.url == url and restarted.pid != inst.pid
        assert http_json("GET", url + "/docs/_doc/a")["_source"] == {"title": "persist me"}

        es_local.remove(name)
        assert refuses_connections(inst.port)
        assert not (es_local.cache_dir() / "instances" / name).exists()
    finally:
        es_local.remove(name)


@pytest.mark.es
def test_opensearch_node_dying_while_booting_fails_fast_with_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenSearch's ``-d`` returns before the node starts: a node that then
    dies must fail the start at once, quoting its error, not after the timeout."""
    real = es_local._node_settings
    monkeypatch.setattr(
        es_local, "_node_settings", lambda *a: [*real(*a), "-E", "no.such.setting=1"]
    )
    name = unique_name("pytest-os")
    try:
        with pytest.raises(es_local.LaunchError) as exc:
            es_local.start(name=name, distribution="opensearch", timeout=600)
        # Failed because the node died, not because the (long) wait for health ran out.
        assert "server process exited before" in str(exc.value)
        assert "not healthy within" not in str(exc.value)
        assert "unknown setting [no.such.setting]" in str(exc.value)
        assert str(exc.value).startswith(f"OpenSearch instance {name!r}")
        assert es_local.is_running(name) is None
    finally:
        es_local.remove(name)
