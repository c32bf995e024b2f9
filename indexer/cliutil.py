"""What ``python -m indexer`` and ``python -m replay`` share: the parser, number flags and exit codes.

Standard library only (it is imported by both CLIs before anything heavy), and not shipped in
the Lambda package (``infra/serverless.yml`` leaves it out: no function parses flags).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Callable, Mapping, NoReturn, TextIO, TypeVar

from .errors import ClusterError, IndexerError, SettingsError

T = TypeVar("T")

#: Success (and, for --verify, "in sync").
EXIT_OK = 0
#: The operation ran and failed, or found drift, or left records failing.
EXIT_FAILED = 1
#: Bad flags or settings (a missing variable, a table or queue that does not exist).
EXIT_USAGE = 2
#: The search cluster cannot be reached or refused us (credentials, permissions).
EXIT_CLUSTER = 3
#: Stopped by SIGINT/SIGTERM (128 + SIGINT, the shell's convention).
EXIT_INTERRUPTED = 130

#: One line per exit code, for ``--help`` epilogs and the README.
EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILED: "failed, or found drift or left records failing",
    EXIT_USAGE: "bad flags or settings",
    EXIT_CLUSTER: "the search cluster cannot be reached or refused us",
    EXIT_INTERRUPTED: "interrupted (SIGINT/SIGTERM)",
}


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2 (argparse's
    own prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def epilog(meanings: Mapping[int, str] | None = None) -> str:
    """The "Exit status" paragraph of a command's ``--help``; ``meanings`` overrides the
    wording of some codes for that command."""
    words = {**EXIT_CODES, **(meanings or {})}
    return "Exit status: " + ", ".join(f"{code} {text}" for code, text in words.items()) + "."


def number(kind: type[int] | type[float], low: float | None = None, above: float | None = None) -> Callable[[str], float]:
    """An argparse ``type=`` for a number flag: ``kind`` (int or float), at least ``low`` or
    greater than ``above`` (both optional); bad text is one error line naming the flag."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {'whole ' if kind is int else ''}number, got {text!r}") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text!r}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be greater than {above:g}, got {text!r}")
        return value

    return parse


positive_int = number(int, above=0)
positive_float = number(float, above=0)


def options_from(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """``cls`` (a dataclass of options) from the parsed flags whose ``dest`` is one of its
    fields, plus ``given``; a flag left at None keeps the field's default, so the defaults
    live in the dataclass alone."""
    fields = {f.name for f in dataclasses.fields(cls)} - set(given)  # type: ignore[arg-type]
    flags = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    return cls(**flags, **given)


def exit_code(error: IndexerError) -> int:
    """The exit code for a failure the operation raised on purpose."""
    if isinstance(error, SettingsError):
        return EXIT_USAGE
    if isinstance(error, ClusterError):
        return EXIT_CLUSTER
    return EXIT_FAILED


def report_failure(prog: str, error: IndexerError, stream: TextIO | None = None) -> int:
    """Print ``error`` as one line on stderr; return its exit code."""
    code = exit_code(error)
    label = "failed" if code == EXIT_FAILED else "error"
    print(f"{prog}: {label}: {error}", file=stream or sys.stderr)
    return code
