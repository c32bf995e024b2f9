"""The product's main job on one machine: table writes appear in a real Elasticsearch.

Starts a local Elasticsearch, a moto DynamoDB table with its stream and an SQS dead-letter
queue, then writes, updates and deletes items, feeds the stream to the Lambda handler and
shows the search results following each change. Stops Elasticsearch by PID at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import es_local  # noqa: E402

TABLE = "Assets"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    os.environ.update(
        AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled", LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
    )
    say("starting a local Elasticsearch (fetched once with Maven, cached)")
    started = time.perf_counter()
    instance = es_local.start(name="demo", fresh=True)
    print(f"   {instance.url} ready in {time.perf_counter() - started:.1f}s (pid {instance.pid})")
    try:
        return run(instance.url)
    finally:
        say("stopping Elasticsearch")
        es_local.stop("demo")
        print("   stopped")


def run(es_url: str) -> int:
    import boto3
    from elasticsearch import Elasticsearch
    from moto import mock_aws

    from indexer import handler
    from indexer.streams import lambda_record

    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        streams = boto3.client("dynamodbstreams")
        queue = boto3.client("sqs").create_queue(QueueName="indexer-dlq")["QueueUrl"]
        say(f"creating table {TABLE} with a NEW_AND_OLD_IMAGES stream (moto)")
        table = dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]
        stream_arn = table["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        os.environ.update(ELASTICSEARCH_URL=es_url, DLQ_URL=queue, INDEX_NAME=TABLE.lower())
        es = Elasticsearch(es_url)

        def sync(step: str) -> None:
            nonlocal iterator
            started = time.perf_counter()
            got = streams.get_records(ShardIterator=iterator)
            iterator = got["NextShardIterator"]
            event = {"Records": [lambda_record(r, stream_arn) for r in got["Records"]]}
            response = handler.handler(event, None)
            es.indices.refresh(index=TABLE.lower())
            hits = sorted(es.search(index=TABLE.lower(), size=100)["hits"]["hits"], key=lambda h: h["_id"])
            took = (time.perf_counter() - started) * 1000
            say(f"{step}: {len(event['Records'])} stream records -> handler -> search ({took:.0f} ms)")
            print(f"   handler returned {json.dumps(response)}")
            for hit in hits:
                source = {k: v for k, v in hit["_source"].items() if k != "_ddb"}
                print(f"   {hit['_id']:<28} {json.dumps(source, ensure_ascii=False)}")
            if not hits:
                print("   (no documents)")

        def put(key: str, **attrs: Any) -> None:
            item = {"key": {"S": key}}
            for name, value in attrs.items():
                item[name] = {"N": str(value)} if isinstance(value, (int, float)) else {"S": value}
            dynamodb.put_item(TableName=TABLE, Item=item)

        put("images/cat.jpg", size=48213, type="image/jpeg")
        put("images/dog.png", size=1024, type="image/png")
        put("docs/ünïcode — 日本.txt", size=12, type="text/plain")
        sync("three items written")

        dynamodb.update_item(
            TableName=TABLE, Key={"key": {"S": "images/cat.jpg"}},
            UpdateExpression="SET #size = :s, tags = :t",
            ExpressionAttributeNames={"#size": "size"},
            ExpressionAttributeValues={":s": {"N": "50000"}, ":t": {"SS": ["cute", "animal"]}},
        )
        dynamodb.delete_item(TableName=TABLE, Key={"key": {"S": "images/dog.png"}})
        sync("one item updated, one deleted")

        say("the same records delivered again (Lambda retries at least once): nothing changes")
        first = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        replayed = streams.get_records(ShardIterator=first)["Records"]
        response = handler.handler({"Records": [lambda_record(r, stream_arn) for r in replayed]}, None)
        es.indices.refresh(index=TABLE.lower())
        print(f"   {len(replayed)} old records redelivered, handler returned {json.dumps(response)}; "
              f"alias still shows {es.count(index=TABLE.lower())['count']} documents")

        items = dynamodb.scan(TableName=TABLE)["Count"]
        docs = es.count(index=TABLE.lower())["count"]
        say(f"table has {items} items, the index alias shows {docs} documents")
        if items != docs:
            print("   MISMATCH", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
