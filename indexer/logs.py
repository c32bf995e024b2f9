"""Structured JSON logs (structlog): stdout in Lambda, stderr for the CLIs."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from . import redact

_to_stderr = False
_level: str | None = None


class _LineLogger:
    """Writes each rendered line to the *current* sys.stdout or sys.stderr (looked up per call,
    so redirected or captured streams are honoured)."""

    def __init__(self, *args: Any) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr if _to_stderr else sys.stdout, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def redacted(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: no URL userinfo, Authorization value or secret-named field
    reaches a log line, whoever logged it (``indexer.redact``)."""
    return {name: redact.field(name, value) for name, value in event.items()}


def configure(level: str = "INFO", to_stderr: bool = False) -> None:
    """JSON lines filtered at ``level``: on stdout in Lambda (CloudWatch parses them), on stderr
    for the CLIs, whose stdout carries their results."""
    global _to_stderr, _level
    _to_stderr = to_stderr  # read per line by _LineLogger: no reconfiguration needed
    if level == _level:
        return  # reconfiguring would also undo a test's capture_logs
    _level = level
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redacted,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=_LineLogger,
        # Not cached: caching would pin loggers made before a test captures them (capture_logs).
        cache_logger_on_first_use=False,
    )
