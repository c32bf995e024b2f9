"""DynamoDB helpers for tests: tables with streams, items of every type, a stream follower."""

from __future__ import annotations

import random
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import boto3

from indexer import handler as lambda_handler
from indexer.localsync.streams import lambda_record


def create_table(name: str, sort_key: str | None = "sk", stream: bool = True) -> dict[str, Any]:
    dynamodb = boto3.client("dynamodb")
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": "S"}]
    if sort_key:
        keys.append({"AttributeName": sort_key, "KeyType": "RANGE"})
        attributes.append({"AttributeName": sort_key, "AttributeType": "N"})
    request: dict[str, Any] = {
        "TableName": name, "KeySchema": keys, "AttributeDefinitions": attributes, "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    return dynamodb.create_table(**request)["TableDescription"]


def every_type_item(pk: str, sk: int) -> dict[str, Any]:
    return {
        "pk": {"S": pk}, "sk": {"N": str(sk)},
        "s": {"S": "héllo | # \\ 日本"}, "n": {"N": "12345678901234567890123456789012345678"},
        "d": {"N": "0.1000000000000000000000001"}, "f": {"N": "-17.5"}, "b": {"B": b"\x00\x01\xff"},
        "ss": {"SS": ["b", "a"]}, "ns": {"NS": ["3", "1.5"]}, "bs": {"BS": [b"\xff", b"\x01"]},
        "t": {"BOOL": True}, "nul": {"NULL": True},
        "m": {"M": {"inner": {"S": "x"}, "deep": {"M": {"n": {"N": "7"}}}}},
        "l": {"L": [{"S": "a"}, {"S": "b"}]}, "lm": {"L": [{"M": {"k": {"S": "v"}}}]},
    }


def put_items(table: str, items: list[dict[str, Any]]) -> None:
    dynamodb = boto3.client("dynamodb")
    for start in range(0, len(items), 25):
        chunk = items[start : start + 25]
        dynamodb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": item}} for item in chunk]})


def scan_all(table: str) -> list[dict[str, Any]]:
    dynamodb = boto3.client("dynamodb")
    items, request = [], {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class StreamFollower:
    """Live sync for tests: reads the table's stream and hands each batch to the real handler."""

    def __init__(self, table: str) -> None:
        self.streams = boto3.client("dynamodbstreams")
        self.arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
        shards = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        self.iterators = [
            self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"] for s in shards
        ]
        self.stop = threading.Event()
        self.delivered = 0
        self.failures: list[Any] = []

    def poll(self) -> int:
        """Deliver whatever the stream holds now; the number of records."""
        count = 0
        for position, iterator in enumerate(self.iterators):
            got = self.streams.get_records(ShardIterator=iterator, Limit=100)
            self.iterators[position] = got["NextShardIterator"]
            if got["Records"]:
                batch = {"Records": [lambda_record(r, self.arn) for r in got["Records"]]}
                response = lambda_handler.handler(batch, None)
                if response["batchItemFailures"]:
                    self.failures.append(response)
                count += len(got["Records"])
        self.delivered += count
        return count

    def drain(self) -> None:
        while self.poll():
            pass

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.poll():
                self.stop.wait(0.05)


@contextmanager
def live_writes(table: str, seed: int, keys: int) -> Iterator["StreamFollower"]:
    """Random puts, updates and deletes of ``keys`` items of ``table`` while the body runs, with
    live sync following the stream; stopped and drained on exit."""
    rng = random.Random(seed)
    follower = StreamFollower(table)
    follower.drain()
    stop = threading.Event()

    def writer() -> None:
        dynamodb = boto3.client("dynamodb")
        while not stop.is_set():
            key = {"pk": {"S": f"k{rng.randrange(keys)}"}, "sk": {"N": "0"}}
            action = rng.random()
            if action < 0.5:
                dynamodb.put_item(TableName=table, Item={**key, "v": {"N": str(rng.randrange(10**6))}})
            elif action < 0.8:
                dynamodb.delete_item(TableName=table, Key=key)
            else:
                dynamodb.update_item(TableName=table, Key=key, UpdateExpression="SET w = :w",
                                     ExpressionAttributeValues={":w": {"S": f"s{seed}"}})

    crashed: list[BaseException] = []

    def recording(target: Any) -> Any:
        """``target``, with what it raised kept: a dead writer or follower thread would only
        warn, and the records it had taken from the stream would be lost to the test."""
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                crashed.append(exc)
                raise
        return run

    threads = [threading.Thread(target=recording(writer)), threading.Thread(target=recording(follower.run))]
    for thread in threads:
        thread.start()
    try:
        yield follower
    finally:
        stop.set()
        follower.stop.set()
        for thread in threads:
            thread.join()
    if crashed:
        raise AssertionError(f"a live-writes thread died: {crashed[0]!r}") from crashed[0]
    follower.drain()
