"""Run every benchmark, collect their figures in bench/results.json and draw docs/benchmarks.png.

The five benchmarks (handler, convert, coldstart, memory, replay) each print their own runs
and medians; this collects their ``--json`` output together with the machine and the
versions, and plots ours beside the ceiling (or floor) and the goal, one panel each. The
handler, conversion, cold-start and memory benchmarks share one local Elasticsearch (or
``--es-url``); the replay benchmark starts its own, as it does when run alone. A benchmark
that misses its goal is reported, not failed; one that crashes makes the exit status 1.
Needs matplotlib for the plot (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

BENCH = Path(__file__).resolve().parent
NAMES = ("handler", "convert", "coldstart", "memory", "replay")
USES_ES = {"handler", "coldstart", "memory"}

#: Flags per benchmark: the full run, and --quick for a look in a few minutes.
FULL = {
    "handler": ["--runs", "21"],
    "convert": ["--images", "10000", "--runs", "11"],
    "coldstart": ["--runs", "15"],
    "memory": ["--runs", "3"],
    "replay": ["--items", "20000", "--runs", "3"],
}
QUICK = {
    "handler": ["--runs", "5"],
    "convert": ["--images", "10000", "--runs", "3"],
    "coldstart": ["--runs", "11"],
    "memory": ["--runs", "1"],
    "replay": ["--items", "2000", "--runs", "1"],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and items: a first look, not the published figures")
    parser.add_argument("--only", action="append", choices=NAMES, metavar="NAME",
                        help=f"run only this benchmark (repeatable; one of {', '.join(NAMES)})")
    parser.add_argument("--skip", action="append", choices=NAMES, default=[], metavar="NAME",
                        help="leave this benchmark out (repeatable)")
    parser.add_argument("--results", default=str(BENCH / "results.json"), metavar="FILE",
                        help="where to write the collected figures (default: bench/results.json)")
    parser.add_argument("--plot", default=str(BENCH.parent / "docs" / "benchmarks.png"), metavar="FILE",
                        help="where to draw the plot (default: docs/benchmarks.png)")
    parser.add_argument("--no-plot", action="store_true", help="collect the figures only")
    parser.add_argument("--plot-only", action="store_true", help="run nothing: redraw the plot from --results")
    common.add_es_flag(parser)
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    """What the figures were measured on; the load average says how busy it was."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    return {"nproc": os.cpu_count(), "memory_gib": round(total_kb / 1024 / 1024, 1), "cpu": model,
            "kernel": platform.release(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def versions(es_url: str | None) -> dict[str, str]:
    import urllib.request

    import boto3
    import elasticsearch
    import es_local
    import orjson

    found = {"python": platform.python_version(), "elasticsearch_client": elasticsearch.__versionstr__,
             "orjson": orjson.__version__, "boto3": boto3.__version__,
             "elasticsearch_server": es_local.DEFAULT_VERSION}
    if es_url:
        with urllib.request.urlopen(f"{es_url}/_nodes/_local?filter_path=nodes.*.version", timeout=10) as answer:
            found["elasticsearch_server"] = next(iter(json.load(answer)["nodes"].values()))["version"]
    return found


def run(name: str, flags: list[str], es_url: str | None, scratch: Path) -> dict[str, Any] | None:
    """Run one benchmark with its output on the terminal; its figures, or None if it failed."""
    out = scratch / f"{name}.json"
    command = [sys.executable, str(BENCH / f"{name}_bench.py"), *flags, "--json", str(out)]
    if name in USES_ES and es_url:
        command += ["--es-url", es_url]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=str(BENCH.parent))
    if done.returncode != 0 or not out.exists():
        print(f"=== {name} failed (exit {done.returncode})", flush=True)
        return None
    figures = json.loads(out.read_text())
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only:
        results = json.loads(Path(args.results).read_text())
        draw(results, Path(args.plot))
        print(f"plot drawn to {args.plot} from {args.results}")
        print(summary(results))
        return 0
    chosen = [name for name in (args.only or NAMES) if name not in args.skip]
    flags = QUICK if args.quick else FULL
    results: dict[str, Any] = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "machine": machine(), "benchmarks": {},
    }
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        before_replay = [name for name in chosen if name != "replay"]
        if before_replay:
            with common.elasticsearch(args.es_url) as es_url:
                results["versions"] = versions(es_url)
                for name in before_replay:
                    figures = run(name, flags[name], es_url, Path(scratch))
                    if figures is None:
                        failed.append(name)
                    else:
                        results["benchmarks"][name] = figures
        else:
            results["versions"] = versions(None)
        if "replay" in chosen:  # starts its own Elasticsearch, fresh, as when it runs alone
            figures = run("replay", flags["replay"], None, Path(scratch))
            if figures is None:
                failed.append("replay")
            else:
                figures.setdefault("benchmark", "replay")
                results["benchmarks"]["replay"] = figures
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.only or args.skip:
        results = merged(Path(args.results), results)
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures written to {args.results}")
    if not args.no_plot and results["benchmarks"]:
        draw(results, Path(args.plot))
        print(f"plot drawn to {args.plot}")
    print(summary(results))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def merged(path: Path, partial: dict[str, Any]) -> dict[str, Any]:
    """A partial run's figures put into the results already in ``path`` (each benchmark keeps
    its own ``measured_at``), so one benchmark can be re-run without re-running all."""
    if not path.exists():
        return partial
    results = json.loads(path.read_text())
    results.setdefault("benchmarks", {}).update(partial["benchmarks"])
    results["updated_at"] = partial["measured_at"]
    return results


def summary(results: dict[str, Any]) -> str:
    """The results as a Markdown table (docs/benchmarks.md holds the published one)."""
    lines = ["", "| benchmark | ours | reference | ours vs reference | goal | |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, f in results["benchmarks"].items():
        if name == "handler" and "hot" in f:
            for workload, reference, ratio in (("cold", "mget_bulk", "ratio_mget_bulk"), ("hot", "bulk", "ratio_bulk")):
                w = f[workload]
                label = "mget + helpers.bulk" if reference == "mget_bulk" else "helpers.bulk"
                verdict = "met" if w["met"] else "**missed**"
                lines.append(f"| handler, {workload} | {w['median_ms']['ours']} ms | {w['median_ms'][reference]} ms "
                             f"({label}) | {w[ratio]}x | {w['goal']} | {verdict} |")
            continue
        if name == "handler":
            row = (f"{f['ours_ms']} ms", f"{f['ceiling_ms']} ms (helpers.bulk)", f"{f['ratio']}x", f["goal"], f["met"])
        elif name == "convert":
            row = (f"{f['ours_images_per_s']:,} images/s", f"{f['ceiling_images_per_s']:,} images/s (TypeDeserializer)",
                   f"{f['ratio']}x (CPU {f['ratio_cpu']}x)", f["goal"], f["met"])
        elif name == "coldstart":
            row = (f"{f['ours_import_ms']} ms", f"{f['floor_import_ms']} ms (import boto3, elasticsearch)",
                   f"{f['difference_ms']:+} ms", f["goal"], f["met"])
        elif name == "memory":
            row = (f"{f['ours_peak_mb']} MB", f"{f['floor_peak_mb']} MB (hand-written)",
                   f"{f['ours_peak_mb'] - f['floor_peak_mb']:+.1f} MB", f["goal"], f["met"])
        else:
            row = (f"{f['replay_docs_per_s']:,} docs/s", f"{f['ceiling_docs_per_s']:,} docs/s (scan + bulk)",
                   f"{f['ratio_scan_write']}x", "none set", None)
        ours, reference, ratio, goal, met = row
        verdict = "" if met is None else ("met" if met else "**missed**")
        lines.append(f"| {name} | {ours} | {reference} | {ratio} | {goal} | {verdict} |")
    return "\n".join(lines)


def draw(results: dict[str, Any], path: Path) -> None:
    """One panel per benchmark: ours beside its ceiling or floor, the goal as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [name for name in NAMES if name in results["benchmarks"]]
    if "hot" in results["benchmarks"].get("handler", {}):
        panels.insert(panels.index("handler") + 1, "handler_hot")
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.2), squeeze=False)
    ours_color, reference_color, extra_color = "#2f6db3", "#9a9a9a", "#c9c9c9"
    for axis, name in zip(axes[0], panels):
        f = results["benchmarks"][name.removesuffix("_hot")]
        goal = None
        if name.startswith("handler") and "hot" in f:
            w = f["hot" if name == "handler_hot" else "cold"]
            m = w["median_ms"]
            bars = [("ours", m["ours"], ours_color), ("helpers\n.bulk", m["bulk"], reference_color),
                    ("mget +\nbulk", m["mget_bulk"], reference_color), ("hand-\nwritten", m["hand_written"], extra_color)]
            reference = m["mget_bulk"] if name == "handler" else m["bulk"]
            goal, unit = reference * w["goal_ratio"], "ms (lower is better)"
            title = "Handler, cold batch" if name == "handler" else "Handler, hot keys (100 items)"
            f = w
        elif name == "handler":
            bars = [("ours", f["ours_ms"], ours_color), ("ceiling\nhelpers.bulk", f["ceiling_ms"], reference_color)]
            goal, title, unit = f["ceiling_ms"] * f["goal_ratio"], "Handler, 1,000 records", "ms (lower is better)"
        elif name == "convert":
            bars = [("ours", f["ours_images_per_s"] / 1000, ours_color),
                    ("ceiling\nTypeDeserializer\n+ json", f["ceiling_images_per_s"] / 1000, reference_color)]
            if "walk_cpu_us_per_image" in f:  # the pure-Python floor, for scale
                bars.append(("tag walk\nalone (CPU)", 1000 / f["walk_cpu_us_per_image"], extra_color))
            goal, title = f["ceiling_images_per_s"] * f["goal_ratio"] / 1000, "Conversion to bulk lines"
            unit = "thousand images/s (higher is better)"
        elif name == "coldstart":
            bars = [("ours\nimport", f["ours_import_ms"], ours_color),
                    ("floor\nimport", f["floor_import_ms"], reference_color),
                    ("ours\n+ 1st call", f["ours_import_plus_first_ms"], extra_color),
                    ("floor\n+ 1st call", f["floor_import_plus_first_ms"], extra_color)]
            goal, title, unit = f["floor_import_ms"] + f["goal_ms"], "Cold start", "ms (lower is better)"
        elif name == "memory":
            bars = [("ours\npeak", f["ours_peak_mb"], ours_color), ("ours\nevent parsed", f["ours_event_mb"], extra_color),
                    ("ours\nimports", f["ours_baseline_mb"], extra_color),
                    ("hand-written\npeak", f["floor_peak_mb"], reference_color)]
            goal, title, unit = f["goal_mb"], "Memory, 6 MB event", "MB peak RSS (lower is better)"
        else:
            bars = [("replay\nscan+write", f["replay_docs_per_s"], ours_color),
                    ("ceiling\nscan+bulk", f["ceiling_docs_per_s"], reference_color),
                    ("replay\nend to end", f["replay_end_to_end_docs_per_s"], extra_color)]
            title, unit = f"Replay, {f['items']:,} items (moto server)", "docs/s (higher is better)"
        labels, values, colors = zip(*bars)
        drawn = axis.bar(range(len(values)), values, color=colors)
        axis.bar_label(drawn, labels=[f"{v:,.1f}" if v < 100 else f"{v:,.0f}" for v in values], fontsize=8)
        axis.set_xticks(range(len(values)), labels, fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel(unit, fontsize=8)
        if goal is not None:
            verdict = "met" if f.get("met") else "missed"
            axis.axhline(goal, color="#c0392b", linestyle="--", linewidth=1)
            axis.text(len(values) - 0.5, goal, f"goal ({verdict})", color="#c0392b", fontsize=7, ha="right", va="bottom")
        axis.margins(y=0.15)
    when = results.get("measured_at", "")
    machine = results.get("machine", {})
    figure.suptitle(f"dynamodb-es-indexer benchmarks, {machine.get('nproc')} cores, {machine.get('cpu')}, {when}",
                    fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
