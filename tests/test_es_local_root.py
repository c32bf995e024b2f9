"""scripts/es_local.py as root, against the account it runs the server as.

The server's account can write in the instance's data, logs, tmp and config folders and plant
symlinks there. Each test plants one where the launcher works as root and checks the launcher
refuses or does not follow it, and that nothing outside changed. Run as root (CI is root);
skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import es_local
import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the launcher's root path runs only as root")


@pytest.fixture
def place(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A root-owned folder the server's account can enter (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="es-local-root-", dir="/var/tmp"))
    base.chmod(0o755)
    monkeypatch.setenv("ES_LOCAL_CACHE", str(base / "cache"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def user() -> object:
    return es_local._run_as_user()


def distribution(place: Path) -> Path:
    """A distribution home with a config folder, as the unpacked zip has."""
    home = place / "cache" / "elasticsearch-0.0.0"
    (home / "config").mkdir(parents=True)
    (home / "config" / "jvm.options").write_text("-Xlog:gc*:file=logs/gc.log\n")
    (home / "config" / "elasticsearch.yml").write_text("# defaults\n")
    for folder in (place / "cache", home, home / "config"):
        folder.chmod(0o755)
    for file in (home / "config").iterdir():
        file.chmod(0o644)
    return home


def outside(place: Path) -> tuple[Path, Path]:
    """A root-only folder and file the server's account must never get."""
    folder = place / "outside"
    folder.mkdir(mode=0o700)
    secret = folder / "secret"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    return folder, secret


def fingerprint(*paths: Path) -> list[tuple[int, int, int, bytes | None]]:
    found = []
    for path in paths:
        st = os.lstat(path)
        found.append((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), path.read_bytes() if path.is_file() else None))
    return found


def instance(place: Path) -> es_local._Paths:
    paths = es_local._Paths(place / "cache" / "instances" / "victim")
    paths.root.mkdir(parents=True)
    paths.root.parent.chmod(0o755)
    return paths


@pytest.mark.parametrize("folder", ["data", "logs", "tmp", "config"])
def test_an_instance_folder_that_is_a_symlink_is_refused_and_its_target_untouched(place, user, folder):
    home = distribution(place)
    target, secret = outside(place)
    paths = instance(place)
    before = fingerprint(target, secret)
    getattr(paths, folder).symlink_to(target)

    with pytest.raises(es_local.LaunchError, match="symlink"):
        es_local._prepare_instance(home, paths, user)

    assert fingerprint(target, secret) == before


def test_a_symlink_planted_inside_config_gives_the_server_account_nothing(place, user):
    home = distribution(place)
    _, secret = outside(place)
    paths = instance(place)
    paths.config.mkdir()
    os.chown(paths.config, user.pw_uid, user.pw_gid)
    (paths.config / "jvm.options").symlink_to(secret)
    os.lchown(paths.config / "jvm.options", user.pw_uid, user.pw_gid)
    before = fingerprint(secret)

    with pytest.raises(es_local.LaunchError):  # the copy, as that account, cannot write there
        es_local._prepare_instance(home, paths, user)

    assert fingerprint(secret) == before


@pytest.mark.parametrize("folder", ["data", "logs", "tmp"])
def test_a_symlink_planted_inside_a_server_folder_is_never_chowned(place, user, folder):
    home = distribution(place)
    _, secret = outside(place)
    paths = instance(place)
    getattr(paths, folder).mkdir()
    (getattr(paths, folder) / "planted").symlink_to(secret)
    before = fingerprint(secret)

    es_local._prepare_instance(home, paths, user)

    assert fingerprint(secret) == before
    assert os.lstat(paths.root).st_uid == 0  # the instance root stays root's
    assert os.lstat(getattr(paths, folder)).st_uid == user.pw_uid
    assert (paths.config / "jvm.options").read_text() == f"-Xlog:gc*:file={paths.logs}/gc.log\n"


def test_links_planted_in_the_instance_root_are_not_followed(place, user):
    _, secret = outside(place)
    paths = instance(place)
    paths.meta.with_suffix(".json.tmp").symlink_to(secret)
    paths.launcher_out.symlink_to(secret)
    before = fingerprint(secret)
    inst = es_local.Instance(name="victim", url="http://127.0.0.1:1", pid=1, port=1,
                             data_dir=paths.data, log_file=paths.logs / "x.log")

    es_local._write_meta(paths, inst)
    with pytest.raises(es_local.LaunchError, match="refusing to follow"):
        with es_local._append(paths.launcher_out):
            pass

    assert fingerprint(secret) == before
    assert json.loads(paths.meta.read_text())["name"] == "victim"


def test_a_pid_file_that_is_a_link_is_not_read(place):
    paths = instance(place)
    paths.logs.mkdir()
    (place / "pid").write_text("1\n")
    paths.pidfile.symlink_to(place / "pid")

    assert es_local._read_pidfile(paths) is None


@pytest.mark.parametrize("owner, mode", [("server", 0o755), ("root", 0o777)], ids=["not-root-s", "world-writable"])
def test_a_cache_folder_root_does_not_own_alone_is_refused(place, user, owner, mode):
    cache = place / "cache"
    cache.mkdir(mode=mode)
    cache.chmod(mode)
    if owner == "server":
        os.chown(cache, user.pw_uid, user.pw_gid)

    with pytest.raises(es_local.LaunchError, match="not a directory owned by root"):
        es_local.start("victim", timeout=5)

    assert list(cache.iterdir()) == []  # nothing fetched or created in it


def test_the_server_gets_none_of_the_caller_s_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "root's key")
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "root's api key")
    monkeypatch.setenv("LANG", "C.UTF-8")

    env = es_local._server_env()

    assert env == {"LANG": "C.UTF-8", "PATH": es_local._SERVER_PATH}


def test_sigkill_goes_only_to_a_pid_that_is_still_the_instance(place, monkeypatch):
    """The server ignored SIGTERM, then its pid was recycled: the launcher must not SIGKILL
    whatever holds the pid now."""
    paths = instance(place)
    paths.meta.write_text(json.dumps({"pid": 4242}))
    still_ours = iter([True])  # the instance when stop starts; another process afterwards
    sent: list[int] = []
    monkeypatch.setattr(es_local, "_pid_is_instance", lambda pid, p: next(still_ours, False))
    monkeypatch.setattr(es_local, "_pid_alive", lambda pid: True)
    monkeypatch.setattr(es_local.os, "kill", lambda pid, sig: sent.append(sig))

    es_local._stop_locked("victim", paths, timeout=0)

    assert sent == [signal.SIGTERM]
