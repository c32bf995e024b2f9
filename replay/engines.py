"""The local engine: units of work on a pool of processes (conversion uses every core).

Processes, not threads: converting DynamoDB JSON to documents is CPU work under the GIL, so one
Python process uses one core whatever ``--segments`` says. Each pool process builds its own
clients once, then runs units through :class:`replay.worker.Worker`; a unit that comes back with a
continuation is queued again. Any failure — a unit that raises, a worker process killed — stops
the pool and propagates, so the caller never swaps the alias over a gap.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Mapping

import structlog

from indexer.apply import RetryPolicy
from indexer.errors import ReplayAborted, SettingsError

from .progress import Progress
from .sources import s3_client
from .units import Done, Unit, done_from_wire, done_to_wire, unit_from_wire, unit_to_wire
from .worker import SharedBackoff, Target, Worker

log = structlog.get_logger("replay.engines")

#: A pool process hands a unit back (with a continuation) after this long, so no unit pins a
#: process for hours and progress is never more than this stale.
SLICE_SECONDS = 120.0

_worker: Worker | None = None


def workers_from(env: Mapping[str, str]) -> int:
    """REPLAY_WORKERS, else the number of cores; SettingsError naming the variable when bad."""
    text = env.get("REPLAY_WORKERS")
    if not text:
        return os.cpu_count() or 1
    try:
        workers = int(text)
    except ValueError:
        workers = 0
    if workers < 1:
        raise SettingsError(f"REPLAY_WORKERS must be a whole number of at least 1, got {text!r}")
    return workers


def run_local(units: list[Unit], target: Target, env: Mapping[str, str], workers: int, policy: RetryPolicy,
              progress: Progress, inline: Callable[[], Worker], stop: threading.Event) -> Done:
    """Load every unit; the summed counts. ``workers == 1`` runs in this process (``inline()``
    builds its worker from the caller's clients); more start a pool of that many processes."""
    if workers == 1:
        worker = inline()
        worker.report = lambda read, created, stale: progress.advance(read, created=created, live_newer=stale)
        worker.stop = stop
        total = Done()
        pending = list(units)
        while pending:
            done = worker.run(pending.pop(0))
            total.add(done)
            if done.continuation is not None:
                pending.append(done.continuation)
        return total
    return _run_pool(units, target, dict(env), workers, policy, progress, stop)


def _run_pool(units: list[Unit], target: Target, env: dict[str, str], workers: int, policy: RetryPolicy,
              progress: Progress, stop: threading.Event) -> Done:
    # spawn: a forked child would inherit the parent's threads' locks and open connections.
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    backoff = context.Value("d", 0.0)
    drained = threading.Event()
    drainer = threading.Thread(target=_drain, args=(reports, progress, drained), daemon=True, name="replay-progress")
    drainer.start()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init,
                               initargs=(env, target, policy, backoff, reports, os.getpid()))
    total = Done()
    running: dict[Future, Unit] = {}
    try:
        for unit in units:
            running[pool.submit(_run_unit, unit_to_wire(unit), SLICE_SECONDS)] = unit
        while running:
            finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            if stop.is_set():
                raise KeyboardInterrupt
            for future in finished:
                running.pop(future)
                done = done_from_wire(future.result())
                total.add(done)
                if done.continuation is not None:
                    running[pool.submit(_run_unit, unit_to_wire(done.continuation), SLICE_SECONDS)] = done.continuation
    except BrokenProcessPool:
        raise ReplayAborted("a worker process died; nothing was swapped: rerun to rebuild") from None
    except BaseException:
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        drained.set()
        drainer.join(5)
    return total


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's processes now (a slice may run for minutes); they hold nothing to undo."""
    pool.shutdown(wait=False, cancel_futures=True)
    for child in multiprocessing.active_children():
        child.terminate()


def _drain(reports: Any, progress: Progress, drained: threading.Event) -> None:
    while not drained.is_set():
        try:
            read, created, stale = reports.get(timeout=0.5)
        except queue.Empty:
            continue
        progress.advance(read, created=created, live_newer=stale)


def _init(env: dict[str, str], target: Target, policy: RetryPolicy, backoff: Any, reports: Any, parent: int) -> None:
    """A pool process: die with the orchestrator, leave Ctrl-C to it, build clients once."""
    global _worker
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from indexer import logs
    from indexer.backends import store_for
    from indexer.settings import Settings

    from . import table as tables

    settings = Settings.from_env(env, require=("TABLE_NAME",))
    logs.configure(settings.log_level, to_stderr=True)
    _worker = Worker(target, store_for(settings), tables.client(), s3_client(), policy,
                     SharedBackoff(backoff), lambda read, created, stale: reports.put((read, created, stale)))


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the orchestrator dies (kill -9 included)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the orchestrator died before prctl took effect
        os._exit(1)


def _run_unit(unit: dict[str, Any], budget: float) -> dict[str, Any]:
    if _worker is None:
        raise ReplayAborted("worker process was not initialised")
    return done_to_wire(_worker.run(unit_from_wire(unit), budget))
