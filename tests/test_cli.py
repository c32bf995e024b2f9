"""The shared CLI pieces (indexer.cliutil) and the replay CLI's flag handling, without a cluster."""

from __future__ import annotations

import argparse

import pytest

from indexer import cliutil
from indexer.errors import ClusterError, HttpError, IndexerError, ReplayAborted, SettingsError, TableNotFound
from replay import cli
from replay.full import FullOptions
from replay.redrive.command import RedriveOptions
from replay.verify import VerifyOptions


@pytest.mark.parametrize(("error", "code"), [
    (SettingsError("x"), cliutil.EXIT_USAGE),
    (TableNotFound("x"), cliutil.EXIT_USAGE),
    (ClusterError("x"), cliutil.EXIT_CLUSTER),
    (HttpError(401, {}, "x"), cliutil.EXIT_CLUSTER),
    (ReplayAborted("x"), cliutil.EXIT_FAILED),
    (IndexerError("x"), cliutil.EXIT_FAILED),
])
def test_each_failure_maps_to_its_exit_code(error, code):
    assert cliutil.exit_code(error) == code


def test_exit_codes_are_distinct():
    codes = [cliutil.EXIT_OK, cliutil.EXIT_FAILED, cliutil.EXIT_USAGE, cliutil.EXIT_CLUSTER, cliutil.EXIT_INTERRUPTED]
    assert len(set(codes)) == len(codes) == len(cliutil.EXIT_CODES)


def test_a_failure_is_one_line_naming_the_program(capsys):
    assert cliutil.report_failure("prog", ClusterError("cannot reach it")) == cliutil.EXIT_CLUSTER
    assert capsys.readouterr().err == "prog: error: cannot reach it\n"
    assert cliutil.report_failure("prog", IndexerError("broke")) == cliutil.EXIT_FAILED
    assert capsys.readouterr().err == "prog: failed: broke\n"


@pytest.mark.parametrize(("parse", "text", "value"), [
    (cliutil.positive_int, "3", 3), (cliutil.positive_float, "0.5", 0.5),
    (cliutil.number(int, -1), "-1", -1), (cliutil.number(float, 0), "0", 0.0),
])
def test_number_flags_take_numbers_in_range(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize(("parse", "text", "says"), [
    (cliutil.positive_int, "0", "greater than 0"), (cliutil.positive_int, "1.5", "whole number"),
    (cliutil.positive_float, "x", "must be a number"), (cliutil.number(int, -1), "-2", "at least -1"),
])
def test_number_flags_refuse_the_rest(parse, text, says):
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        parse(text)


@pytest.mark.parametrize(("argv", "says"), [
    (["--full", "--fix"], "--fix belongs to --verify, not --full"),
    (["--full", "--dry-run"], "--dry-run belongs to --redrive, not --full"),
    (["--verify", "--bulk-size", "5"], "--bulk-size belongs to --full, not --verify"),
    (["--verify", "--queue-url", "http://q"], "--queue-url belongs to --redrive, not --verify"),
    (["--redrive", "--segments", "2"], "--segments belongs to --full / --verify, not --redrive"),
    (["--redrive", "--rate", "5"], "--rate belongs to --full, not --redrive"),
    (["--list-orphans", "--keep-old"], "--keep-old belongs to --full, not --list-orphans"),
])
def test_a_flag_of_another_mode_is_refused_with_one_line_and_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == cliutil.EXIT_USAGE
    assert err == f"python -m replay: error: {says}\n"


def test_each_mode_gets_its_options_from_its_flags_and_the_defaults_from_its_options_object():
    p = cli.parser()
    full = cli.options(FullOptions, p.parse_args(["--full", "--rate", "50", "--keep-old", "--no-progress"]))
    assert full == FullOptions(rate=50.0, keep_old=True, progress=False)
    verify = cli.options(VerifyOptions, p.parse_args(["--verify", "--fix", "--segments", "2"]))
    assert verify == VerifyOptions(fix=True, segments=2)
    redrive = cli.options(RedriveOptions, p.parse_args(["--redrive", "--max-attempts", "3", "--dry-run"]))
    assert redrive == RedriveOptions(max_attempts=3, dry_run=True)


def test_help_states_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for code in cliutil.EXIT_CODES:
        assert f" {code} " in out
