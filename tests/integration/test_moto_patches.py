"""The local stack's TransactWriteItems correction: same answers as moto, cost of the items touched only."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from coupons_local import moto_patches
from moto import mock_aws

TABLE = "patched"


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert moto_patches.apply()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        yield client


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "x"}}


def _get(client: Any, pk: str) -> dict[str, Any] | None:
    return client.get_item(TableName=TABLE, Key=_key(pk), ConsistentRead=True).get("Item")


def _stream_records(client: Any) -> list[Any]:
    from moto.dynamodb.models import dynamodb_backends

    shard = dynamodb_backends["123456789012"]["us-east-1"].get_table(TABLE).stream_shard
    return list(shard.items)


def test_the_patch_is_pinned_to_the_moto_version() -> None:
    import moto

    assert moto.__version__ == moto_patches.PINNED_MOTO_VERSION, "re-check moto_patches against this moto"
    from moto.dynamodb.models import DynamoDBBackend

    assert moto_patches.apply() and DynamoDBBackend.transact_write_items is moto_patches._transact_write_items


def test_a_committed_transaction_writes_every_item(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={**_key("counter"), "n": {"N": "1"}})
    dynamodb.put_item(TableName=TABLE, Item={**_key("gone"), "n": {"N": "1"}})
    dynamodb.transact_write_items(TransactItems=[
        {"Update": {"TableName": TABLE, "Key": _key("counter"), "UpdateExpression": "SET n = n + :one",
                    "ConditionExpression": "n < :max", "ExpressionAttributeValues": {":one": {"N": "1"},
                                                                                    ":max": {"N": "5"}}}},
        {"Put": {"TableName": TABLE, "Item": {**_key("new"), "v": {"S": "a"}},
                 "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Delete": {"TableName": TABLE, "Key": _key("gone")}},
        {"ConditionCheck": {"TableName": TABLE, "Key": _key("other-check"),
                            "ConditionExpression": "attribute_not_exists(pk)"}},
    ])
    assert _get(dynamodb, "counter")["n"] == {"N": "2"}  # type: ignore[index]
    assert _get(dynamodb, "new") is not None and _get(dynamodb, "other-check") is None
    assert _get(dynamodb, "gone") is None


def test_a_cancelled_transaction_leaves_everything_and_the_stream_as_it_was(dynamodb: Any) -> None:
    # Given items in every state a transaction can change
    dynamodb.put_item(TableName=TABLE, Item={**_key("counter"), "n": {"N": "1"}, "tag": {"S": "keep"}})
    dynamodb.put_item(TableName=TABLE, Item={**_key("doomed"), "n": {"N": "7"}})
    dynamodb.put_item(TableName=TABLE, Item={**_key("guard"), "n": {"N": "9"}})
    records_before = len(_stream_records(dynamodb))
    # When a transaction updates, creates and deletes, then fails its last condition
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(TransactItems=[
            {"Update": {"TableName": TABLE, "Key": _key("counter"),
                        "UpdateExpression": "SET n = n + :one REMOVE tag",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            {"Put": {"TableName": TABLE, "Item": {**_key("fresh"), "v": {"S": "a"}}}},
            {"Update": {"TableName": TABLE, "Key": _key("created-by-update"), "UpdateExpression": "SET v = :v",
                        "ExpressionAttributeValues": {":v": {"S": "x"}}}},
            {"Delete": {"TableName": TABLE, "Key": _key("doomed")}},
            {"Update": {"TableName": TABLE, "Key": _key("guard"), "UpdateExpression": "SET n = :zero",
                        "ConditionExpression": "n < :max", "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                        "ExpressionAttributeValues": {":zero": {"N": "0"}, ":max": {"N": "5"}}}},
        ])
    # Then moto's answer is unchanged: the reasons per item, ALL_OLD for the failed one
    reasons = raised.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "None", "None", "None", "ConditionalCheckFailed"]
    assert reasons[4]["Item"]["n"] == {"N": "9"}
    # And nothing changed: the in-place update, the new items, the deleted one, the stream
    assert _get(dynamodb, "counter") == {**_key("counter"), "n": {"N": "1"}, "tag": {"S": "keep"}}
    assert _get(dynamodb, "fresh") is None and _get(dynamodb, "created-by-update") is None
    assert _get(dynamodb, "doomed") == {**_key("doomed"), "n": {"N": "7"}}
    assert _get(dynamodb, "guard") == {**_key("guard"), "n": {"N": "9"}}
    assert len(_stream_records(dynamodb)) == records_before
    # And the table still works afterwards (a later write streams as usual)
    dynamodb.put_item(TableName=TABLE, Item={**_key("after"), "v": {"S": "z"}})
    assert len(_stream_records(dynamodb)) == records_before + 1


def test_duplicate_keys_are_still_refused_and_undone(dynamodb: Any) -> None:
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(TransactItems=[
            {"Put": {"TableName": TABLE, "Item": {**_key("twice"), "v": {"S": "a"}}}},
            {"Put": {"TableName": TABLE, "Item": {**_key("twice"), "v": {"S": "b"}}}},
        ])
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert _get(dynamodb, "twice") is None


def test_a_transaction_costs_the_same_on_a_big_table(dynamodb: Any) -> None:
    # Given a table of 1,000 items (moto's own method deep-copies all of them per transaction)
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends["123456789012"]["us-east-1"]
    for i in range(1000):  # straight into the emulator: the HTTP round trips are not under test
        backend.put_item(TABLE, {**_key(f"filler-{i}"), "blob": {"S": "x" * 200}})
    items = [{"Update": {"TableName": TABLE, "Key": _key("hot"), "UpdateExpression": "ADD n :one",
                         "ExpressionAttributeValues": {":one": {"N": "1"}}}}]

    def timed(method: Any) -> float:
        samples = []
        for _ in range(3):
            started = time.perf_counter()
            method(backend, items)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    # When the same transaction runs through moto's method and through the patch
    patched = timed(moto_patches._transact_write_items)
    unpatched = timed(moto_patches.original)
    # Then the patch is far cheaper (it copies one item, not 1,000), and both applied their writes
    assert patched * 5 < unpatched, (patched, unpatched)
    assert _get(dynamodb, "hot")["n"] == {"N": "6"}  # type: ignore[index]


def test_a_query_on_the_tables_key_answers_as_moto_does_from_its_partition_only(dynamodb: Any) -> None:
    from moto.dynamodb.models.table import Table

    # Given several partitions and a bigger table around them
    for pk in ("a", "b"):
        for i in range(7):
            dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "sk": {"S": f"s{i:02d}"}, "n": {"N": str(i)}})
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends["123456789012"]["us-east-1"]
    for i in range(1000):
        backend.put_item(TABLE, {"pk": {"S": f"filler-{i}"}, "sk": {"S": "x"}})
    requests = [
        {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}}},
        {"KeyConditionExpression": "pk = :p AND sk BETWEEN :x AND :y",
         "ExpressionAttributeValues": {":p": {"S": "b"}, ":x": {"S": "s02"}, ":y": {"S": "s05"}},
         "ScanIndexForward": False},
        {"KeyConditionExpression": "pk = :p", "FilterExpression": "n > :two", "Limit": 3,
         "ExpressionAttributeValues": {":p": {"S": "a"}, ":two": {"N": "2"}}},
        {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "nobody"}}},
    ]

    def pages(request: dict[str, Any]) -> list[Any]:
        found, start = [], None
        while True:
            page = dynamodb.query(TableName=TABLE, **request, **({"ExclusiveStartKey": start} if start else {}))
            found.append((page["Items"], page.get("LastEvaluatedKey")))
            start = page.get("LastEvaluatedKey")
            if not start:
                return found

    # When the same queries run through the patch and through moto's own method
    patched = [pages(r) for r in requests]
    assert Table.query is moto_patches._partition_query
    Table.query = moto_patches._partition_query.original  # type: ignore[attr-defined, method-assign]
    try:
        unpatched = [pages(r) for r in requests]
    finally:
        Table.query = moto_patches._partition_query  # type: ignore[method-assign]
    # Then the answers are identical, page for page
    assert patched == unpatched
    assert [sum(len(items) for items, _ in p) for p in patched] == [7, 4, 4, 0]  # Limit applies before the filter
    assert len(patched[2]) > 1


# --- BatchGetItem as DynamoDB answers it: unordered, sometimes in part ---------------------------


def _batch(client: Any, pks: list[str], **extra: Any) -> dict[str, Any]:
    return dict(client.batch_get_item(RequestItems={TABLE: {"Keys": [_key(pk) for pk in pks], **extra}}))


def _pks(answer: dict[str, Any]) -> list[str]:
    return [item["pk"]["S"] for item in answer["Responses"].get(TABLE, [])]


def test_batch_get_item_answers_in_a_new_order_each_call(dynamodb: Any) -> None:
    # Given 30 items, asked for in one order
    pks = [f"item-{n:02d}" for n in range(30)]
    for pk in pks:
        dynamodb.put_item(TableName=TABLE, Item={**_key(pk), "n": {"N": "1"}})
    moto_patches.configure()  # unseeded, as `coupons-local serve` runs by default
    # When they are read ten times
    orders = [_pks(_batch(dynamodb, pks)) for _ in range(10)]
    # Then every answer is whole, never in the order asked, and not twice the same
    assert all(sorted(order) == pks for order in orders)
    assert pks not in orders and len({tuple(order) for order in orders}) == 10


def test_a_seed_makes_the_orders_reproducible(dynamodb: Any) -> None:
    pks = [f"seeded-{n:02d}" for n in range(12)]
    for pk in pks:
        dynamodb.put_item(TableName=TABLE, Item={**_key(pk), "n": {"N": "1"}})
    moto_patches.configure(seed=42)
    first = [_pks(_batch(dynamodb, pks)) for _ in range(3)]
    moto_patches.configure(seed=42)
    assert [_pks(_batch(dynamodb, pks)) for _ in range(3)] == first
    moto_patches.configure()


def test_partial_answers_leave_at_most_half_unprocessed_and_a_retry_reads_the_rest(dynamodb: Any) -> None:
    pks = [f"part-{n:02d}" for n in range(20)]
    for pk in pks:
        dynamodb.put_item(TableName=TABLE, Item={**_key(pk), "n": {"N": "1"}})
    unkind = moto_patches.configure(seed=3, unprocessed=1.0)
    read: list[str] = []
    pending: dict[str, Any] = {TABLE: {"Keys": [_key(pk) for pk in [*pks, "absent"]], "ConsistentRead": True}}
    calls = 0
    while pending:
        asked = len(pending[TABLE]["Keys"])
        page = dynamodb.batch_get_item(RequestItems=pending)
        calls += 1
        read += _pks(page)
        pending = page.get("UnprocessedKeys") or {}
        if asked > 1:  # a partial answer leaves some keys, never more than half
            assert 1 <= len(pending[TABLE]["Keys"]) <= asked // 2
            assert pending[TABLE]["ConsistentRead"] is True  # unprocessed keys come back as asked
        else:
            assert not pending
    # Then every item was read exactly once, in a few calls
    assert sorted(read) == pks and calls <= 6 and unkind.partial == calls - 1
    moto_patches.configure()


def test_the_environment_sets_the_seed_and_the_share_of_partial_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(moto_patches.BATCH_SEED_ENV, "7")
    monkeypatch.setenv(moto_patches.BATCH_UNPROCESSED_ENV, "0.25")
    unkind = moto_patches.BatchGetUnkindness.from_environment()
    assert (unkind.seed, unkind.unprocessed) == (7, 0.25)
    monkeypatch.delenv(moto_patches.BATCH_SEED_ENV)
    monkeypatch.delenv(moto_patches.BATCH_UNPROCESSED_ENV)
    default = moto_patches.BatchGetUnkindness.from_environment()
    assert default.unprocessed == 0.0 and default.seed != moto_patches.BatchGetUnkindness.from_environment().seed


# --- S3 ETags as an SSE-KMS bucket gives them: not the content's MD5 ---------------------------------


def test_the_same_bytes_uploaded_twice_get_two_etags_that_reads_agree_with() -> None:
    import hashlib

    assert moto_patches.apply()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="etags")
        body = b"code,discount_value\r\nA-1,10\r\n"
        first = s3.put_object(Bucket="etags", Key="a.csv", Body=body)["ETag"]
        second = s3.put_object(Bucket="etags", Key="b.csv", Body=body)["ETag"]
        # Then neither is the MD5 of the bytes, and they differ
        assert first != second and hashlib.md5(body, usedforsecurity=False).hexdigest() not in (first.strip('"'), second.strip('"'))
        # and every read of the object agrees with its own ETag
        assert s3.head_object(Bucket="etags", Key="a.csv")["ETag"] == first
        assert s3.get_object(Bucket="etags", Key="a.csv", IfMatch=first)["Body"].read() == body
        with pytest.raises(ClientError):
            s3.get_object(Bucket="etags", Key="a.csv", IfMatch=second)
        assert {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="etags")["Contents"]} == \
            {"a.csv": first, "b.csv": second}
        # and a multipart upload still completes from its parts' ETags
        upload = s3.create_multipart_upload(Bucket="etags", Key="m.csv")["UploadId"]
        part = s3.upload_part(Bucket="etags", Key="m.csv", UploadId=upload, PartNumber=1, Body=body)["ETag"]
        done = s3.complete_multipart_upload(Bucket="etags", Key="m.csv", UploadId=upload,
                                            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})
        assert done["ETag"].endswith('-1"')
