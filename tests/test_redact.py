"""Secrets never reach a message or a log line: URL userinfo, Authorization values, secret fields."""

from __future__ import annotations

import json

import structlog

from indexer import logs, redact


def test_userinfo_is_stripped_from_every_url_in_a_text():
    shown = redact.url("cannot reach https://elastic:hunter2@search.example.com:9200/x (then http://k@h)")
    assert shown == "cannot reach https://***@search.example.com:9200/x (then http://***@h)"


def test_authorization_values_are_masked():
    assert redact.text("Authorization: ApiKey VnVhQ2ZHY0JDZGJr==") == "Authorization: ApiKey ***"
    assert redact.text("basic auth failed") == "basic auth failed"


def test_the_log_processor_masks_secrets_whoever_logs_them(capsys, monkeypatch):
    monkeypatch.setattr(logs, "_level", None)  # configure for real, even if a test configured it
    logs.configure("INFO")
    structlog.get_logger("t").warning("cluster_refused", url="https://elastic:hunter2@h:9200",
                                      api_key="sekrit", error="sent Basic ZWxhc3RpYzpodW50ZXIy")
    (line,) = capsys.readouterr().out.splitlines()
    logged = json.loads(line)
    assert "hunter2" not in line and "sekrit" not in line and "ZWxhc3Rp" not in line
    assert logged["url"] == "https://***@h:9200" and logged["api_key"] == "***"
