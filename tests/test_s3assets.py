"""The sample application's S3 handlers against moto's S3 and DynamoDB: what an asset item
holds, and that repeated, late or out-of-order notifications leave the newest state."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from stream_events import SEQUENCE_BASE, record

from indexer.sampleapp import s3assets
from indexer.errors import SettingsError

BUCKET, TABLE = "images-in", "Assets"


@pytest.fixture
def assets(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("dynamodb").create_table(
        TableName=TABLE, KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setenv("TABLE_NAME", TABLE)
    s3assets.reset()
    yield
    s3assets.reset()


def upload(key: str, body: bytes = b"abc", **extra: Any) -> dict[str, Any]:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, **extra)
    return s3.head_object(Bucket=BUCKET, Key=key)


def created(key: str, sequencer: str) -> dict[str, int]:
    return s3assets.created(s3assets.object_event("ObjectCreated:Put", BUCKET, key, sequencer=sequencer))


def deleted(key: str, sequencer: str) -> dict[str, int]:
    return s3assets.deleted(s3assets.object_event("ObjectRemoved:Delete", BUCKET, key, sequencer=sequencer))


def item(key: str) -> dict[str, Any] | None:
    return boto3.client("dynamodb").get_item(TableName=TABLE, Key={"key": {"S": key}}, ConsistentRead=True).get("Item")


def test_an_uploaded_object_is_recorded_with_its_metadata(assets):
    key = "photos/summer 2026/ünï & co.jpg"  # S3 URL-encodes this in the notification
    head = upload(key, b"x" * 1234, ContentType="image/jpeg", Metadata={"camera": "x100", "owner": "ann"})
    event = s3assets.object_event("ObjectCreated:Put", BUCKET, key, sequencer="0055AED6DCD90281E5")
    assert event["Records"][0]["s3"]["object"]["key"] != key
    assert s3assets.created(event, None) == {"written": 1, "deleted": 0, "skipped": 0}
    got = item(key)
    assert got == {
        "key": {"S": key},
        "bucket": {"S": BUCKET},
        "size": {"N": "1234"},
        "content_type": {"S": "image/jpeg"},
        "etag": {"S": head["ETag"].strip('"')},
        "metadata": {"M": {"camera": {"S": "x100"}, "owner": {"S": "ann"}}},
        "last_modified": {"S": head["LastModified"].isoformat().replace("+00:00", "Z")},
        "event_time": {"S": event["Records"][0]["eventTime"]},
        "sequencer": {"S": "0055AED6DCD90281E5".rjust(s3assets.SEQUENCER_WIDTH, "0")},
    }


def test_a_deleted_object_is_removed(assets):
    upload("a.png")
    created("a.png", "0A")
    assert deleted("a.png", "0B") == {"written": 0, "deleted": 1, "skipped": 0}
    assert item("a.png") is None


def test_a_repeated_or_older_created_event_changes_nothing(assets):
    upload("a.png", b"new", Metadata={"v": "2"})
    created("a.png", "0B")
    before = item("a.png")
    assert created("a.png", "0B")["skipped"] == 1  # delivered twice
    assert created("a.png", "0A")["skipped"] == 1  # older, arriving late
    assert item("a.png") == before


def test_sequencers_of_different_lengths_compare_as_s3_documents(assets):
    upload("a.png")
    created("a.png", "FF")
    assert created("a.png", "100")["written"] == 1  # 0x100 > 0xFF once left-padded


def test_a_late_delete_does_not_remove_a_newer_upload(assets):
    upload("a.png")
    created("a.png", "0C")
    assert deleted("a.png", "0B")["skipped"] == 1
    assert item("a.png") is not None


def test_a_late_created_event_for_an_object_deleted_since_is_skipped(assets):
    upload("a.png")
    boto3.client("s3").delete_object(Bucket=BUCKET, Key="a.png")
    assert created("a.png", "0A") == {"written": 0, "deleted": 0, "skipped": 1}
    assert item("a.png") is None


def test_clients_are_built_on_first_use_and_reused(assets):
    assert s3assets._clients == {}
    upload("a.png")
    created("a.png", "01")
    first = dict(s3assets._clients)
    assert set(first) == {"s3", "dynamodb"}
    created("a.png", "02")
    assert all(s3assets._clients[name] is client for name, client in first.items())


def test_without_table_name_the_handler_says_what_to_set(assets, monkeypatch):
    monkeypatch.delenv("TABLE_NAME")
    with pytest.raises(SettingsError, match="TABLE_NAME is required"):
        created("a.png", "01")


def test_a_failing_write_propagates_so_lambda_retries_the_event(assets, monkeypatch):
    from botocore.exceptions import ClientError

    monkeypatch.setenv("TABLE_NAME", "NoSuchTable")
    upload("a.png")
    with pytest.raises(ClientError):
        created("a.png", "01")


def deployed_index_mapping() -> str:
    """The INDEX_MAPPING infra/serverless.yml deploys by default (its ``indexMapping`` param)."""
    text = (Path(__file__).resolve().parents[1] / "infra" / "serverless.yml").read_text(encoding="utf-8")
    match = re.search(r"^    indexMapping: '(.*)'$", text, flags=re.M)
    if match is None:
        raise AssertionError("infra/serverless.yml has no quoted indexMapping default")
    return match.group(1)


@pytest.mark.es
def test_uploaders_metadata_names_cannot_grow_the_deployed_mapping(sync):
    """Anyone who can upload chooses user-metadata names; with the deployed mapping they stay in
    _source and add no field, so they can never push the index to its field limit."""
    sync.configure(INDEX_MAPPING=deployed_index_mapping())
    images = [
        {"pk": {"S": f"obj{n}"}, "metadata": {"M": {f"name{n}_{k}": {"S": "v"} for k in range(60)}}}
        for n in range(20)  # 1,200 distinct names: past Elasticsearch's default limit of 1,000 fields
    ]
    response = sync.deliver(*[record("INSERT", {"pk": image["pk"]}, image, SEQUENCE_BASE + n)
                              for n, image in enumerate(images)])
    assert response == {"batchItemFailures": []}
    docs = sync.docs()
    assert len(docs) == 20 and docs["obj3"]["metadata"]["name3_59"] == "v"
    (mapping,) = sync.es.indices.get_mapping(sync.alias).values()
    assert "properties" not in mapping["mappings"]["properties"]["metadata"]
