"""``python -m replay ... --metrics``: each command's summary as one EMF line, on the real
Elasticsearch and moto."""

from __future__ import annotations

import pytest
from test_redrive import put as table_put, things  # noqa: F401 - things is a fixture

import emf_spec
from stream_events import put
from replay import cli
from tables import put_items
from test_replay import rebuild, serving  # noqa: F401  (the fixture)

pytestmark = pytest.mark.es


def only_document(out: str, command: str) -> dict:
    (document,) = emf_spec.documents(out)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["Alias", "Command"]] and document["Command"] == command
    assert directive["Namespace"] == "DynamoDBIndexer"
    return document


def items(count: int) -> list[dict]:
    return [{"pk": {"S": f"k{n}"}, "sk": {"N": str(n)}, "v": {"S": "ok"}} for n in range(count)]


def test_full_reports_what_it_scanned_and_wrote(rebuild, capsys):  # noqa: F811
    put_items(rebuild.table, items(12))
    assert cli.main(["--full", "--no-progress", "--metrics"]) == 0
    document = only_document(capsys.readouterr().out, "full")
    assert document["Alias"] == rebuild.alias
    assert {k: document[k] for k in ("ItemsScanned", "DocumentsWritten", "DocumentsStale", "ItemsFailed")} == {
        "ItemsScanned": 12, "DocumentsWritten": 12, "DocumentsStale": 0, "ItemsFailed": 0}
    assert document["Duration"] > 0


def test_without_the_flag_no_line_is_printed(rebuild, capsys):  # noqa: F811
    put_items(rebuild.table, items(3))
    assert cli.main(["--full", "--no-progress"]) == 0
    assert cli.main(["--verify", "--no-progress"]) == 0
    assert emf_spec.documents(capsys.readouterr().out) == []


def test_verify_reports_drift_and_what_fix_repaired(rebuild, capsys):  # noqa: F811
    put_items(rebuild.table, items(6))
    assert cli.main(["--full", "--no-progress"]) == 0
    (index,) = serving(rebuild)
    rebuild.es.delete(index=index, id="k1|1", refresh=True)
    rebuild.es.index(index=index, id="ghost|0", document={"pk": "ghost", "sk": 0, "_ddb": {"seq": "0" * 40}},
                     refresh=True)
    capsys.readouterr()
    assert cli.main(["--verify", "--no-progress", "--metrics"]) == 1
    found = only_document(capsys.readouterr().out, "verify")
    assert (found["Drift"], found["DocumentsMissing"], found["DocumentsDiffering"], found["DocumentsExtra"]) == (2, 1, 0, 1)
    assert "DocumentsFixed" not in found
    assert cli.main(["--verify", "--fix", "--no-progress", "--metrics"]) == 0
    fixed = only_document(capsys.readouterr().out, "verify")
    assert (fixed["Drift"], fixed["DocumentsFixed"], fixed["DocumentsNotFixed"]) == (2, 2, 0)
    assert cli.main(["--verify", "--no-progress", "--metrics"]) == 0
    assert only_document(capsys.readouterr().out, "verify")["Drift"] == 0


def test_redrive_reports_messages_by_outcome(sync, things, capsys):
    # Real stream records of the run's table: redrive trusts only what the stream vouches for.
    sync.deliver(table_put("b", 1, age=1))
    sync.deliver(table_put("b", 2, age="thirty"))  # dead-lettered: "age" is a number
    sync.deliver(table_put("b", 5, age=50))  # a newer change: the dead letter is now stale
    capsys.readouterr()
    assert cli.main(["--redrive", "--no-progress", "--metrics"]) == 0
    document = only_document(capsys.readouterr().out, "redrive")
    assert document["Alias"] == sync.alias
    assert (document["Messages"], document["MessagesStale"], document["MessagesRedriven"],
            document["MessagesFailedAgain"]) == (1, 1, 0, 0)


def test_metrics_is_refused_where_there_is_no_summary(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--list-orphans", "--metrics"])
    assert exited.value.code == 2
    assert "--metrics belongs to --full / --verify / --redrive" in capsys.readouterr().err
