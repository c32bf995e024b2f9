"""The repository stands alone: nothing in it reads a path outside it, except the caches the README
documents, and the README links nothing outside it.

A fresh clone has no sibling folders: a test that read ``../shared/events`` passed beside our
checkouts and collected nothing in a user's clone. Two checks, both fast:

* the sources (product code, scripts, benchmarks, tests, Makefile, CI, infra, docs) are read for
  paths that climb out of the repository or name a place outside it;
* a slice of the suite that reads files (the sample events, the settings, the CLIs) runs under an
  audit hook (``sys.addaudithook``) that records every file opened outside the repository, the
  temporary directory, the Python installation and the system's own configuration.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()

#: What is read: every text source of the repository (not the sample data, nor what tools
#: install into it: .venv, infra/node_modules, infra/layer).
SCANNED = ("indexer", "replay", "scripts", "bench", "tests", "infra", "docs", ".ci")
SUFFIXES = {".py", ".sh", ".md", ".yml", ".yaml", ".toml", ".json", ".txt", ""}
SKIPPED_PARTS = {"node_modules", "layer", ".serverless", "__pycache__", "data"}

#: Places outside the repository the code may name, each documented in the README (the test
#: below checks that): the distribution cache, and the tools the README says are needed.
DOCUMENTED_OUTSIDE = {
    "/var/cache/dynamodb-es-indexer": "the Elasticsearch/OpenSearch distribution cache (as root)",
    "~/.cache/dynamodb-es-indexer": "the same cache for other users",
    "/usr/lib/jvm": "where a Java ≥ 17 is looked for when JAVA_HOME is unset",
    "~/.pyenv/versions": "where a CPython 3.12 is looked for to run the Lambda zips",
}
#: Not places to read: executables and system paths named as such.
SYSTEM = ("/usr/bin/env", "/var/tmp", "/usr/local/bin:/usr/bin:/bin", "/usr/sbin/useradd", "/usr/sbin/nologin", "/dev/null", "/proc/", "/tmp")
#: Top-level directories that are never part of a clone: naming one is reading outside it.
_OUTSIDE = re.compile(r"(?<![\w.:/-])(~/[^\s\"'`)\],;]*|/(?:work|home|root|mnt|media|srv|opt|data|shared|etc|var|usr)\b[^\s\"'`)\],;]*)")
_PARENTS = re.compile(r"parents\[(\d+)\]")
_CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+)")
#: ``path / ".."`` or ``os.path.join(path, "..")``: a climb whose start the scanner cannot see.
_DOTDOT = re.compile(r"""(?:/\s*|join\([^)]*,\s*)["']\.\.["']""")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _sources() -> list[Path]:
    found = [ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / "README.md"]
    for top in SCANNED:
        # Skipped folders are pruned, not walked and filtered: make test runs test modules side by
        # side, and npm or pip may be filling infra/node_modules or infra/layer meanwhile.
        for folder, subfolders, files in os.walk(ROOT / top):
            subfolders[:] = sorted(name for name in subfolders if name not in SKIPPED_PARTS)
            for name in sorted(files):
                path = Path(folder, name)
                if (path.is_file() and path.suffix in SUFFIXES and path != HERE
                        and name != "package-lock.json"):
                    found.append(path)
    return found


def _strings(path: Path, text: str) -> list[tuple[int, str]]:
    """(line, text) of what a file could use as a path: Python string literals that are not
    docstrings, or the other files' lines that are not comments."""
    if path.suffix != ".py":
        return [(n, line) for n, line in enumerate(text.splitlines(), 1)
                if not line.lstrip().startswith("#") and path.suffix != ".md"]
    tree = ast.parse(text)
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def _allowed(place: str) -> bool:
    return place.startswith(SYSTEM) or any(
        place == known or place.startswith(known + "/") or place.startswith(known + "*") for known in DOCUMENTED_OUTSIDE
    )


def problems_in(path: Path) -> list[str]:
    """Every path in ``path`` that reaches outside the repository (and is not a documented cache)."""
    relative = path.relative_to(ROOT)
    text = path.read_text(encoding="utf-8")
    found = []
    for number, source in _strings(path, text):
        where = f"{relative}:{number}"
        for match in _OUTSIDE.finditer(source):
            if not _allowed(match.group(1)):
                found.append(f"{where}: names {match.group(1)!r}, outside the repository")
        for match in _CLIMB.finditer(source):
            if match.group(1).count("../") >= len(relative.parts):
                found.append(f"{where}: {match.group(0)!r} climbs out of the repository")
    if path.suffix == ".py":
        for number, line in enumerate(text.splitlines(), 1):
            for match in _DOTDOT.finditer(line):
                found.append(f"{relative}:{number}: a '..' path component: name the place from the repository root")
            for match in _PARENTS.finditer(line):
                if int(match.group(1)) >= len(relative.parts):
                    found.append(f"{relative}:{number}: parents[{match.group(1)}] is above the repository root")
    return found


def test_no_source_names_a_path_outside_the_repository():
    problems = [problem for path in _sources() for problem in problems_in(path)]
    assert problems == []


def test_the_check_finds_what_it_is_for(tmp_path, monkeypatch):
    """The scanner itself: each way out it must catch, and what it must let pass."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "tests").mkdir()
    bad = tmp_path / "tests" / "test_x.py"
    bad.write_text(
        "from pathlib import Path\n"
        "EVENTS = Path(__file__).resolve().parents[2] / 'shared' / 'events'\n"
        "OTHER = Path(__file__).parent / '..' / '..' / 'shared'\n"
        "SIBLING = '../../shared/events/lambda_event_moto.json'\n"
        "ABSOLUTE = '/work/shared/events'\n"
        "HOME = '~/notes.txt'\n"
        "FINE = [Path(__file__).resolve().parents[1], '/var/cache/dynamodb-es-indexer/x', '/tmp/x', '../data']\n"
        "def f():\n    '''Docstrings may mention /work/shared.'''\n"
    )
    found = "\n".join(problems_in(bad))
    for expected in ("parents[2]", "'..' path component", "'../../'", "'/work/shared/events'", "'~/notes.txt'"):
        assert expected in found
    assert len(problems_in(bad)) == 6, found  # '..' twice; nothing from FINE or the docstring


def test_every_outside_place_the_code_may_name_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [place for place in DOCUMENTED_OUTSIDE if place not in readme] == []


def test_the_readme_links_only_into_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = _LINK.findall(readme)
    assert links, "the README links its docs"
    outside = [link for link in links if "://" in link or link.startswith(("/", "~", "mailto:"))]
    assert outside == []
    for link in links:
        target = link.split("#", 1)[0]
        if target:
            resolved = (ROOT / target).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), link


def test_docs_link_only_to_files_that_exist_in_the_repository():
    for doc in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "tests" / "data" / "README.md"]:
        for link in _LINK.findall(doc.read_text(encoding="utf-8")):
            target = link.split("#", 1)[0]
            if target and "://" not in target:
                resolved = (doc.parent / target).resolve()
                assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{doc.name}: {link}"


# -- the audit ----------------------------------------------------------------------------------

#: The slice of the suite that reads the sample events and the settings, and the CLIs' --help.
AUDITED = ["tests/test_convert.py", "tests/test_records.py", "tests/test_convert_equivalence.py",
           "tests/test_settings.py", "tests/test_cli.py"]
#: Property tests of pure conversion that open no file and take most of the slice's time.
NOT_AUDITED = "not (any_valid_image or the_fast_path_gives_what or a_bad_value_anywhere)"

_AUDIT_PLUGIN = '''
import json, os, sys
ALLOWED = json.loads(os.environ["STANDS_ALONE_ALLOWED"])
OUT = os.environ["STANDS_ALONE_REPORT"]
seen = set()

def hook(event, args):
    if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path in seen or any(path == root or path.startswith(root.rstrip("/") + "/") for root in ALLOWED):
        return
    seen.add(path)
    with open(OUT, "a", encoding="utf-8") as report:
        report.write(path + "\\n")

sys.addaudithook(hook)
'''


def _allowed_roots(tmp: Path) -> list[str]:
    """Where a test may open files: the repository, temporary files, the Python installation
    and its packages, the documented caches, and the system's own files that libraries read
    (devices, /proc, /sys, /etc: certificates, time zones, mime types, users)."""
    import site

    roots = {str(ROOT), tempfile.gettempdir(), str(tmp), sys.prefix, sys.base_prefix, sys.exec_prefix,
             *site.getsitepackages(), site.getusersitepackages(), "/dev", "/proc", "/sys", "/etc"}
    roots |= {os.path.expanduser(place) for place in DOCUMENTED_OUTSIDE}
    roots |= {os.path.realpath(root) for root in list(roots)}
    return sorted(roots)


def _audited(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``python argv...`` with the audit hook installed; (the run, the files opened outside)."""
    plugin = tmp_path / "stands_alone_audit.py"
    plugin.write_text(_AUDIT_PLUGIN)
    report = tmp_path / "opened-outside.txt"
    report.touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
           "STANDS_ALONE_ALLOWED": json.dumps(_allowed_roots(tmp_path)), "STANDS_ALONE_REPORT": str(report)}
    run = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return run, report.read_text().splitlines()


def test_the_audit_records_a_file_opened_outside_the_allowed_places(tmp_path):
    outside = "/nonexistent-stands-alone-check/events.json"
    run, opened = _audited(tmp_path, "-c", f"import stands_alone_audit\ntry:\n    open({outside!r})\nexcept OSError:\n    pass\n"
                                          f"open({str(ROOT / 'README.md')!r}).close()")
    assert run.returncode == 0, run.stderr
    assert opened == [outside]


def test_the_suite_reads_nothing_outside_the_repository(tmp_path):
    """Run the slice that reads files under an audit hook on ``open``; every file opened
    outside the allowed roots is a failure."""
    run, opened = _audited(tmp_path, "-m", "pytest", "-q", "-p", "stands_alone_audit", "-p", "no:cacheprovider",
                           "-m", "not es", "-k", NOT_AUDITED, "--basetemp", str(tmp_path / "basetemp"), *AUDITED)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
    assert opened == []
