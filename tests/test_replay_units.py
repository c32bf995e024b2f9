"""Replay's pure-ish parts: throttling back-off, the rate limit, progress, canonical comparison."""

from __future__ import annotations

import io
import threading
from decimal import Decimal

import pytest
from botocore.exceptions import ClientError

from replay import table as tables
from replay.progress import Progress
from replay.verify import canonical, digest


class ThrottlingDynamoDB:
    """Answers two scans with ProvisionedThroughputExceededException, then pages."""

    def __init__(self) -> None:
        self.calls = 0

    def scan(self, **request):
        self.calls += 1
        if self.calls <= 2:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                              "Scan")
        if "ExclusiveStartKey" not in request:
            return {"Items": [{"pk": {"S": "a"}}], "LastEvaluatedKey": {"pk": {"S": "a"}}}
        return {"Items": [{"pk": {"S": "b"}}]}


def test_the_scan_backs_off_on_throttling_and_carries_on(monkeypatch):
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda seconds: None)
    fake = ThrottlingDynamoDB()
    pages = list(tables.scan_pages(fake, "T", 0, 1, 10, tables.RateLimiter(None), threading.Event()))
    assert [item["pk"]["S"] for page, _ in pages for item in page] == ["a", "b"]
    assert [last for _, last in pages] == [{"pk": {"S": "a"}}, None]
    assert fake.calls == 4


def test_other_scan_errors_are_not_retried():
    class Broken:
        def scan(self, **request):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Scan")

    with pytest.raises(ClientError):
        list(tables.scan_pages(Broken(), "T", 0, 1, 10, tables.RateLimiter(None), threading.Event()))


def test_the_rate_limit_spaces_reads_across_segments():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = tables.RateLimiter(100, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.take(50)  # 250 items at 100/s: the last page may start at 2.0 s
    assert now[0] == pytest.approx(2.0)
    assert tables.RateLimiter(None).take(10**9) is None


def test_progress_draws_a_bar_on_a_terminal(monkeypatch):
    screen = io.StringIO()
    screen.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", screen)
    progress = Progress("replay T", 10)
    progress.advance(4, created=3)
    progress.close()
    assert "replay T" in screen.getvalue() and "4/10" in screen.getvalue() and "created=3" in screen.getvalue()


def test_progress_logs_lines_when_not_on_a_terminal(monkeypatch):
    from structlog.testing import capture_logs

    clock = iter([0.0, 20.0])
    with capture_logs() as logs:
        progress = Progress("replay T", 10, clock=lambda: next(clock))
        progress.advance(4)
    assert logs[0]["event"] == "progress" and logs[0]["done"] == 4 and logs[0]["rate"] == 0.2, logs


def test_canonical_forms_treat_equal_numbers_as_equal_and_strings_apart():
    assert canonical({"n": 1.5, "m": {"b": 1, "a": [Decimal("1.50")]}}) == canonical(
        {"m": {"a": [Decimal("1.5")], "b": Decimal("1")}, "n": Decimal("1.5")})
    assert digest({"n": 1, "_ddb": {"seq": "1"}}) == digest({"n": Decimal("1.0")})
    assert digest({"n": "1"}) != digest({"n": 1})
    assert digest({"n": 10**38}) != digest({"n": 10**38 + 1})


def test_rate_limits_items_read_per_second_smoothly():
    from replay.full import scan_page_size

    now = [0.0]
    limiter = tables.RateLimiter(10, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    reads: list[tuple[float, int]] = []

    class Table:
        def scan(self, **request):
            reads.append((now[0], request["Limit"]))
            return {"Items": [{"pk": {"S": "x"}}] * request["Limit"], "LastEvaluatedKey": {"pk": {"S": "x"}}}

    pages = tables.scan_pages(Table(), "t", 0, 2, scan_page_size(1000, 10, 2), limiter, threading.Event())
    for _ in range(8):
        next(pages)
    read = 0
    for at, limit in reads:
        read += limit
        assert read <= 10 * at + 5  # never ahead of the rate by more than one small page
    assert reads[-1][0] > 0


def test_the_live_path_caches_its_targets_no_longer_than_the_serving_index_records():
    from indexer.layout import META_KEY, TTL_KEY, Targets

    class Store:
        lookups = 0

        def aliases(self, names, timeout):
            Store.lookups += 1
            return {"a-r1": ["a"]}

        def definitions(self, names, timeout):
            return {"a-r1": {"mappings": {"_meta": {META_KEY: {TTL_KEY: 2.0}}}}}

    now = [0.0]
    targets = Targets(Store(), clock=lambda: now[0], ttl=15.0)
    assert targets.indices("a", 1) == ["a-r1"]
    now[0] = 1.0
    targets.indices("a", 1)
    assert Store.lookups == 1
    now[0] = 3.0  # past what replays wait for, well within the configured 15 s
    targets.indices("a", 1)
    assert Store.lookups == 2


def test_a_rate_limited_scan_unit_reads_pages_of_about_one_second():
    from replay.units import ScanUnit
    from replay.worker import Target, Worker

    limits: list[int] = []

    class Table:
        def scan(self, **request):
            limits.append(request["Limit"])
            return {"Items": [{"pk": {"S": "x"}}] * request["Limit"]}  # the segment's last page

    info = tables.TableInfo("t", ("pk",), {"pk": "S"}, None, None, 0)
    worker = Worker(Target("i", "a", info, bulk_size=1000, rate=10), None, Table(), None, None)
    assert [len(items) for items, _, _ in worker._scan_batches(ScanUnit(0, 1))] == [10]
    assert limits == [10]  # not a page of 1000 read at once, then a 100 s wait
