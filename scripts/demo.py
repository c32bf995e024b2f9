"""The README's first command: the whole product on one machine, from S3 upload to search result.

Starts a local Elasticsearch and a moto server (S3, DynamoDB with Streams, SQS), creates the
``images-in`` bucket, the ``Assets`` table with its stream and the dead-letter queue, and starts
local sync (``python -m indexer sync``) as a process. Then it uploads and deletes objects
(calling the sample application's S3 handlers as S3 notifications would: moto does not invoke
functions), writes, updates and deletes items directly, and after each change polls the alias
until search shows the new state, with the time it took. It ends with ``python -m replay
--full`` (while local sync keeps running) and ``--verify``, and stops every process it started
by PID. Exits non-zero, naming the step, if any step fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import es_local  # noqa: E402
import moto_local  # noqa: E402

BUCKET, TABLE = "images-in", "Assets"
#: How long one change, or local sync's start, may take before the demo calls it a failure: a
#: bound against a hang, not a speed requirement (make test runs the demo on busy machines).
CHANGE_TIMEOUT = 180.0
#: How long live writers cache the rebuild target; short here so the replay step is quick.
TARGETS_TTL = "2"
SHOWN_FIELDS = ("size", "content_type", "metadata", "tags")


class StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def note(text: str) -> None:
    print(f"   {text}", flush=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Name the step any failure inside belongs to."""
    say(name)
    try:
        yield
    except StepFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - reported with the step's name, and the demo exits 1
        raise StepFailed(name, f"{type(exc).__name__}: {exc}") from exc


def stop_process(process: subprocess.Popen[Any], name: str, timeout: float = 30) -> int:
    """SIGTERM by PID, then SIGKILL if it does not go; its exit code."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            note(f"{name} (pid {process.pid}) ignored SIGTERM; killing it")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
    return int(process.returncode)


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.processes: dict[str, subprocess.Popen[Any]] = {}
        self.es_name: str | None = None
        self.alias = "assets"
        self.es: Any = None
        self.sync_log = work / "local-sync.log"
        self.sequencer = time.time_ns()

    # -- setting up --------------------------------------------------------------------------

    def start_elasticsearch(self, name: str) -> str:
        external = os.environ.get("ELASTICSEARCH_URL")
        if external:
            with step(f"using the Elasticsearch at {external} (ELASTICSEARCH_URL)"):
                es_local.wait_healthy(external, timeout=10)
                self.alias = f"demo-assets-{uuid.uuid4().hex[:6]}"  # never touch the cluster's own indices
                return external
        with step("starting a local Elasticsearch (fetched once with Maven, cached)"):
            started = time.perf_counter()
            instance = es_local.start(name=name, fresh=True)
            self.es_name = name
            note(f"{instance.url} ready in {time.perf_counter() - started:.1f}s (pid {instance.pid})")
            return instance.url

    def start_moto(self) -> str:
        with step("starting moto server (S3, DynamoDB with Streams, SQS)"):
            try:
                process, url = moto_local.start()
            except moto_local.MotoError as exc:
                raise StepFailed("starting moto server", str(exc)) from None
            self.processes["moto server"] = process
            note(f"{url} (pid {process.pid})")
            return url

    def create_resources(self) -> str:
        import boto3

        with step(f"creating bucket {BUCKET}, table {TABLE} with a NEW_AND_OLD_IMAGES stream, queue indexer-dlq"):
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            boto3.client("dynamodb").create_table(
                TableName=TABLE, KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            )
            return str(boto3.client("sqs").create_queue(QueueName="indexer-dlq")["QueueUrl"])

    def start_sync(self) -> None:
        command = [sys.executable, "-m", "indexer", "sync", "--table", TABLE,
                   "--state", str(self.work / "local-sync.json"), "--poll-interval", "0.1", "--metrics-every", "5"]
        with step("starting local sync: python -m indexer sync --table Assets (Lambda's event source mapping, locally)"):
            log = open(self.sync_log, "w", encoding="utf-8")
            process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "LOG_LEVEL": "INFO"})
            log.close()
            self.processes["local sync"] = process
            deadline = time.monotonic() + CHANGE_TIMEOUT
            while "local_sync_started" not in self.sync_log.read_text(encoding="utf-8"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise StepFailed("starting local sync", f"it did not start: {self.sync_tail()}")
                time.sleep(0.1)
            note(f"pid {process.pid}, JSON logs in {self.sync_log}")

    def metric_lines(self) -> list[dict[str, Any]]:
        """The handler's EMF lines in local sync's log so far (one per invocation)."""
        try:
            text = self.sync_log.read_text(encoding="utf-8")
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]

    def handler_lag(self, seen: int) -> str:
        """What the invocations after the first ``seen`` measured: the worst replication lag."""
        deadline = time.monotonic() + 10
        while len(self.metric_lines()) <= seen and time.monotonic() < deadline:
            time.sleep(0.05)  # the line follows the write it measures by a moment
        new = self.metric_lines()[seen:]
        lags = [line["ReplicationLag"] for line in new if "ReplicationLag" in line]
        if not lags:
            return "handler metrics: no write measured"
        return (f"handler metrics: ReplicationLag {max(lags):.0f} ms over {len(new)} invocation(s) "
                "(table write -> acknowledged by search; record times are whole seconds, as Lambda gives them)")

    def sync_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.sync_log.read_text(encoding="utf-8").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- changes and what search shows -------------------------------------------------------

    def docs(self) -> dict[str, dict[str, Any]]:
        if not self.es.indices.exists_alias(name=self.alias):
            return {}
        self.es.indices.refresh(index=self.alias)
        hits = self.es.search(index=self.alias, size=100, query={"match_all": {}})["hits"]["hits"]
        return {hit["_id"]: {k: v for k, v in hit["_source"].items() if k != "_ddb"} for hit in hits}

    def change(self, name: str, action: Callable[[], None], expected: Callable[[dict[str, dict[str, Any]]], bool]) -> None:
        """Make a change, then poll search until it shows; print the documents and the time."""
        with step(name):
            seen = len(self.metric_lines())
            started = time.perf_counter()
            action()
            while True:
                docs = self.docs()
                if expected(docs):
                    break
                if time.perf_counter() - started > CHANGE_TIMEOUT:
                    raise StepFailed(name, f"search did not show the change within {CHANGE_TIMEOUT:.0f}s; "
                                           f"search has {sorted(docs)}; local sync log: {self.sync_tail()}")
                time.sleep(0.05)
            note(f"visible in search after {(time.perf_counter() - started) * 1000:.0f} ms")
            note(self.handler_lag(seen))
            for doc_id in sorted(docs):
                shown = {k: docs[doc_id][k] for k in SHOWN_FIELDS if k in docs[doc_id]}
                note(f"{doc_id:<28} {json.dumps(shown, ensure_ascii=False)}")
            if not docs:
                note("(no documents)")

    def next_sequencer(self) -> str:
        self.sequencer += 1
        return f"{self.sequencer:X}"

    def upload(self, key: str, size: int, content_type: str, metadata: dict[str, str] | None = None) -> None:
        import boto3

        from indexer.sampleapp import s3assets

        s3 = boto3.client("s3")
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"\0" * size, ContentType=content_type, Metadata=metadata or {})
        etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        event = s3assets.object_event("ObjectCreated:Put", BUCKET, key, sequencer=self.next_sequencer(), size=size, etag=etag)
        s3assets.created(event, None)

    def remove(self, key: str) -> None:
        import boto3

        from indexer.sampleapp import s3assets

        boto3.client("s3").delete_object(Bucket=BUCKET, Key=key)
        s3assets.deleted(s3assets.object_event("ObjectRemoved:Delete", BUCKET, key, sequencer=self.next_sequencer()), None)

    # -- the run -----------------------------------------------------------------------------

    def run(self, es_name: str) -> None:
        from elasticsearch import Elasticsearch

        es_url = self.start_elasticsearch(es_name)
        moto_url = self.start_moto()
        os.environ.update(
            AWS_ENDPOINT_URL=moto_url, AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
            AWS_DEFAULT_REGION="us-east-1", ELASTICSEARCH_URL=es_url, TABLE_NAME=TABLE, INDEX_NAME=self.alias,
            TARGETS_TTL_SECONDS=TARGETS_TTL, LOG_LEVEL="WARNING",
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB",
                     "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB_STREAMS"):
            os.environ.pop(name, None)
        os.environ["DLQ_URL"] = self.create_resources()
        self.es = Elasticsearch(es_url, request_timeout=30)
        self.start_sync()

        cat, dog, doc = "images/cat.jpg", "images/dog.png", "docs/ünïcode — 日本.txt"
        def upload_three() -> None:
            self.upload(cat, 48213, "image/jpeg", {"owner": "ann"})
            self.upload(dog, 1024, "image/png")
            self.upload(doc, 12, "text/plain")

        self.change(
            "3 objects uploaded to s3://images-in: S3 handler -> table -> stream -> local sync -> handler -> search",
            upload_three, lambda docs: set(docs) == {cat, dog, doc} and docs[cat].get("metadata") == {"owner": "ann"},
        )
        self.change("1 object deleted from s3://images-in: its item and its document go",
                    lambda: self.remove(dog), lambda docs: set(docs) == {cat, doc})
        self.change("an item written directly to the table", lambda: self.put_item("notes/todo.txt"),
                    lambda docs: set(docs) == {cat, doc, "notes/todo.txt"})
        self.change("an item updated in the table (tags added to images/cat.jpg)", lambda: self.tag(cat, "cute", "animal"),
                    lambda docs: docs.get(cat, {}).get("tags") == ["animal", "cute"])
        self.change("an item deleted from the table", lambda: self.delete_item("notes/todo.txt"),
                    lambda docs: set(docs) == {cat, doc})
        self.compare("table and index agree")
        self.replay(["--full"], "python -m replay --full: rebuild the index behind the alias while local sync runs")
        self.compare("after the rebuild, table and index still agree")
        self.replay(["--verify"], "python -m replay --verify: audit the index against the table")

    def put_item(self, key: str) -> None:
        import boto3

        boto3.client("dynamodb").put_item(TableName=TABLE, Item={
            "key": {"S": key}, "size": {"N": "5"}, "content_type": {"S": "text/plain"},
        })

    def tag(self, key: str, *tags: str) -> None:
        import boto3

        boto3.client("dynamodb").update_item(
            TableName=TABLE, Key={"key": {"S": key}}, UpdateExpression="SET tags = :t",
            ExpressionAttributeValues={":t": {"SS": list(tags)}},
        )

    def delete_item(self, key: str) -> None:
        import boto3

        boto3.client("dynamodb").delete_item(TableName=TABLE, Key={"key": {"S": key}})

    def compare(self, name: str) -> None:
        import boto3

        with step(name):
            items = boto3.client("dynamodb").scan(TableName=TABLE, ConsistentRead=True)["Count"]
            docs = len(self.docs())
            note(f"table {TABLE} has {items} items, the alias {self.alias} shows {docs} documents")
            if items != docs:
                raise StepFailed(name, f"{items} items but {docs} documents")

    def replay(self, flags: list[str], name: str) -> None:
        with step(name):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "replay", *flags, "--no-progress"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=600)
            for line in done.stdout.splitlines():
                note(line)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise StepFailed(name, f"python -m replay {' '.join(flags)} exited {done.returncode}: {last}")
            note(f"done in {time.perf_counter() - started:.1f}s")

    def stop_sync(self) -> None:
        process = self.processes.pop("local sync", None)
        if process is None:
            return
        with step(f"stopping local sync (SIGTERM to pid {process.pid}: it finishes its batch and saves its checkpoint)"):
            code = stop_process(process, "local sync")
            stopped = [json.loads(line) for line in self.sync_log.read_text(encoding="utf-8").splitlines()
                       if '"local_sync_stopped"' in line]
            if code != 0 or not stopped:
                raise StepFailed("stopping local sync", f"exit {code}: {self.sync_tail()}")
            note(f"stopped: {stopped[-1]['invocations']} invocations, {stopped[-1]['acknowledged']} records delivered")

    def shut_down(self) -> None:
        """Stop everything this run started, by PID; never raises."""
        for name, process in reversed(list(self.processes.items())):
            say(f"stopping {name} (pid {process.pid})")
            stop_process(process, name)
            note("stopped")
        if self.es is not None and self.es_name is None:
            from elasticsearch import ApiError, TransportError

            try:  # an external cluster: remove the demo's own indices, by name
                for index in self.es.indices.get(index=f"{self.alias}*", expand_wildcards="all"):
                    self.es.indices.delete(index=index)
            except (ApiError, TransportError) as exc:
                note(f"could not remove the demo's indices {self.alias}*: {exc}")
        if self.es_name is not None:
            say("stopping Elasticsearch")
            es_local.stop(self.es_name)
            note("stopped")


def main() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="indexer-demo-") as work, es_local.claim("demo") as es_name:
        demo = Demo(Path(work))
        try:
            demo.run(es_name)
            demo.stop_sync()
        except StepFailed as failure:
            print(f"\nDEMO FAILED at step: {failure.step}\n   {failure.reason}", flush=True)
            print(f"demo failed at step: {failure.step}: {failure.reason}", file=sys.stderr)
            return 1
        finally:
            demo.shut_down()
    say(f"demo done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
