"""The fault sweep: every cluster call that ``replay --full``, ``--verify --fix`` and
``--redrive`` make, failed in turn, and the invariants checked after each.

The list of calls is not written down here: a clean run of each command through the fault
proxy records it (method and path, index names generalized), so a call added to the code is
swept without a new test. Each call is failed before it reaches the cluster (a 503) and, for
writes, after the cluster applied it (the connection drops: the caller cannot tell). After
each fault: the alias serves one complete index equal to the table (the new one or the one it
served before), nothing acknowledged is lost, and a clean rerun converges.
"""

from __future__ import annotations

import os
import re

import boto3
import pytest

from faults import Call, FaultProxy, Rule
from indexer import deadletter
from indexer.errors import RecordError
from replay import cli
from replay import full as replay_full
from replay.redrive import engine as redrive_engine
from tables import put_items
from test_redrive import stream_records
from test_replay import alias_equals_table, rebuild, serving  # noqa: F401 (fixture)

pytestmark = pytest.mark.es

ITEMS = 6


@pytest.fixture
def swept(rebuild, es_url, monkeypatch):
    """A small table, rebuilt once, with the product talking to the cluster through a proxy."""
    proxy = FaultProxy(es_url)
    monkeypatch.setenv("ELASTICSEARCH_URL", proxy.url)
    monkeypatch.setenv("TARGETS_TTL_SECONDS", "0.1")
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "3")
    monkeypatch.setattr(redrive_engine, "RECEIVE_WAIT_SECONDS", 0)
    rebuild.configure()
    put_items(rebuild.table, [{"pk": {"S": f"k{n}"}, "sk": {"N": str(n)}, "v": {"N": str(n)}}
                              for n in range(ITEMS)])
    assert cli.main(["--full", "--no-progress"]) == 0
    rebuild.proxy = proxy
    try:
        yield rebuild
    finally:
        proxy.close()


def kind(call: Call, alias: str) -> tuple[str, str]:
    """A call with this run's index names generalized: ``{build}`` for a rebuilt index."""
    path = re.sub(re.escape(alias) + r"-(r[0-9]+|initial)", "{index}", call.path)
    return call.method, path.replace(alias, "{alias}")


def pattern(path: str, alias: str) -> str:
    """The regex matching every concrete path of a generalized one."""
    text = re.escape(path).replace(re.escape("{index}"), re.escape(alias) + r"-(r[0-9]+|initial)")
    return "^" + text.replace(re.escape("{alias}"), re.escape(alias)) + "$"


def recorded(sync, command) -> list[tuple[str, str]]:
    """The distinct calls a clean run of ``command`` makes, in first-seen order."""
    sync.proxy.clear()
    assert command() == 0
    seen: dict[tuple[str, str], None] = {}
    for call in sync.proxy.calls():
        seen.setdefault(kind(call, sync.alias), None)
    return list(seen)


def faults(calls: list[tuple[str, str]]) -> list[tuple[str, str, bool]]:
    """Each call failed before it reaches the cluster; each write also after it was applied."""
    return [(method, path, after) for method, path in calls for after in (False, True)
            if not after or method != "GET"]


def sweep(sync, calls, command, prepare, check) -> None:
    problems: list[str] = []
    for method, path, after in faults(calls):
        prepare()
        sync.proxy.clear()
        rule = sync.proxy.add(Rule(method, pattern(path, sync.alias), action="drop" if after else "fail",
                                   after=after))
        try:
            command()
        except SystemExit:
            pass
        sync.proxy.clear()
        if not rule.fired:
            problems.append(f"{method} {path}: the faulted run never made this call")
        try:
            check()
        except AssertionError as exc:
            problems.append(f"{method} {path} {'after' if after else 'before'} the cluster: {exc}")
    assert not problems, "\n".join(problems)


def only_serving_or_kept(sync) -> None:
    """Nothing stray: every index of the alias is served, or a complete build kept aside."""
    found = replay_full.existing(replay_full.wire(os.environ))
    assert len(found.serving) == 1, found
    assert not found.orphans and not found.running, found


def test_replay_full_survives_a_fault_at_every_cluster_call(swept):
    full = lambda: cli.main(["--full", "--segments", "1", "--no-progress"])  # noqa: E731
    calls = recorded(swept, full)
    assert ("POST", "/_aliases") in calls and ("POST", "/_bulk") in calls

    def check() -> None:
        alias_equals_table(swept)  # the new index, or the one served before: complete either way
        only_serving_or_kept(swept)
        assert full() == 0  # a clean rerun converges
        alias_equals_table(swept)
        only_serving_or_kept(swept)

    sweep(swept, calls, full, prepare=lambda: None, check=check)


def test_verify_fix_survives_a_fault_at_every_cluster_call(swept):
    fix = lambda: cli.main(["--verify", "--fix", "--no-progress"])  # noqa: E731
    (index,) = serving(swept)

    def plant() -> None:
        swept.es.index(index=index, id="k1|1", refresh=True,
                       document={"pk": "k1", "sk": 1, "v": 99, "_ddb": {"seq": "0" * 40}})
        swept.es.index(index=index, id="ghost|0", refresh=True,
                       document={"pk": "ghost", "sk": 0, "_ddb": {"seq": "0" * 40}})

    plant()
    calls = recorded(swept, fix)
    assert ("POST", "/_bulk") in calls

    def check() -> None:
        assert fix() == 0
        assert cli.main(["--verify", "--no-progress"]) == 0
        alias_equals_table(swept)

    sweep(swept, calls, fix, prepare=plant, check=check)


def test_redrive_survives_a_fault_at_every_cluster_call(swept):
    redrive = lambda: cli.main(["--redrive", "--no-progress"])  # noqa: E731
    sqs = boto3.client("sqs")
    keys = {"pk": {"S": "k2"}, "sk": {"N": "2"}}
    (index,) = serving(swept)

    def queued() -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=swept.queue_url, AttributeNames=["All"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    # Redrive accepts only records of its own table's streams (replay/redrive/trust.py).
    dynamodb = boto3.client("dynamodb")
    stream_arn = dynamodb.describe_table(TableName=swept.table)["Table"]["LatestStreamArn"]

    def prepare() -> None:
        swept.es.delete(index=index, id="k2|2", refresh=True)
        # A real record of the run's table: redrive applies only what its stream vouches for.
        dynamodb.put_item(TableName=swept.table, Item={**keys, "v": {"N": "2"}})
        stream_record = stream_records(stream_arn)[1][-1]
        body = deadletter.encoded(deadletter.message(
            deadletter.Letter(stream_record, RecordError("document_parsing_exception", "refused earlier")),
            deadletter.now()))
        sqs.send_message(QueueUrl=swept.queue_url, MessageBody=body)

    prepare()
    calls = recorded(swept, redrive)
    assert ("POST", "/_bulk") in calls

    def check() -> None:
        # Nothing acknowledged is lost: the letter was applied, or it is still in the queue.
        assert "k2|2" in swept.docs() or queued() == 1
        assert redrive() == 0
        assert queued() == 0
        alias_equals_table(swept)

    sweep(swept, calls, redrive, prepare=prepare, check=check)
