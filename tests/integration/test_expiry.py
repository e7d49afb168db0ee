"""The expiry sweep and the outbox publisher against moto: real tables, index, stream and bus."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import boto3
from coupons import events, expiry, wiring
from coupons.adapters import aws
from coupons.adapters.event_bus import change_of
from coupons.adapters.expiry_store import DynamoExpiryStore
from coupons.clock import utcnow
from coupons.models import CouponCreate, CouponUpdate
from coupons.settings import get_settings
from coupons_infra import resources as r
from coupons_local.gateway import FunctionHost

STREAMS_ENDPOINT = "https://streams.dynamodb.us-east-1.amazonaws.com"  # moto's in-process streams host


def create(**fields: Any) -> dict[str, Any]:
    return wiring.admin_service().create(CouponCreate.model_validate(fields), "admin-1")


def raw_item(coupon_id: str) -> dict[str, Any]:
    store = wiring.coupon_store()
    pointer = store.get_pointer(coupon_id)
    assert pointer is not None
    found = boto3.client("dynamodb").get_item(TableName="coupons", Key={
        "pk": {"S": f"CODE#{pointer['code_hash']}"}, "sk": {"S": "COUPON"}}).get("Item")
    assert found is not None
    return found


def stream_records(table: str = "coupons") -> list[dict[str, Any]]:
    """Every record of the table's stream so far, in the shape Lambda delivers."""
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams", endpoint_url=STREAMS_ENDPOINT)
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            records += [{**rec, "eventSourceARN": arn,
                         "dynamodb": {**rec["dynamodb"], "ApproximateCreationDateTime": 0}}
                        for rec in page["Records"]]
            iterator = page.get("NextShardIterator")
    return records


def published(records: list[dict[str, Any]]) -> list[events.ContractEvent]:
    tables = {"coupons": "coupons", "guards": "coupons-guards", "jobs": "coupons-jobs"}
    return [e for e in (events.to_event(change_of(rec, tables)) for rec in records) if e is not None]


def test_the_sweep_expires_exactly_the_coupons_past_their_end_across_pages_idempotently(aws_env: Any) -> None:
    # Given coupons due (active and paused), not yet due, and deleted, spread over the four shards
    now = utcnow()
    started = now - timedelta(days=2)
    due = [create(discount_value=5, starts_at=started, expires_at=now - timedelta(minutes=n + 1))["id"]
           for n in range(9)]
    paused = create(discount_value=5, starts_at=started, expires_at=now - timedelta(seconds=30), status="disabled")
    due.append(paused["id"])
    later = [create(discount_value=5, starts_at=started, expires_at=now + timedelta(minutes=n + 1))["id"]
             for n in range(4)]
    gone = create(discount_value=5, starts_at=started, expires_at=now - timedelta(hours=1))["id"]
    wiring.admin_service().delete(gone, "admin-1")
    store = DynamoExpiryStore(boto3.client("dynamodb"), aws_env.tables["coupons"])

    # When a run is cut short by its time budget (two pages of one)
    budget = iter([False, False])
    partial = expiry.sweep(store, now, page_size=1, out_of_time=lambda: next(budget, True))
    assert partial.complete is False and 0 < partial.expired <= 2

    # And the next run goes through the rest, two coupons a page
    first = expiry.sweep(store, now, page_size=2)

    # Then exactly the due ones are expired, in more than one page per shard
    assert (partial.expired + first.expired, first.unchanged, first.complete) == (10, 0, True)
    assert first.pages > store.shards
    service = wiring.admin_service()
    for coupon_id in due:
        item = raw_item(coupon_id)
        assert item["status"]["S"] == "expired" and item["gsi1pk"]["S"] == "STATUS#expired"
        assert "gsi3pk" not in item and "gsi3sk" not in item
        assert service.get(coupon_id)["status"] == "expired"
    for coupon_id in later:
        assert raw_item(coupon_id)["status"]["S"] == "active"
    listed = {c["id"] for c in service.list(status="expired", campaign_id=None, code=None, limit=100,
                                             cursor=None)["items"]}
    assert set(due) <= listed

    # And running it again (or late) changes nothing more
    again = expiry.sweep(store, now, page_size=2)
    assert (again.expired, again.unchanged) == (0, 0)

    # And the stream publishes one CouponExpired per due coupon, however often the sweep ran
    expired_events = [e for e in published(stream_records()) if e.detail_type == "CouponExpired"]
    assert sorted(e.detail["coupon_id"] for e in expired_events) == sorted(due)
    assert all(e.detail["actor"] == "system:expiry-sweep" for e in expired_events)
    assert {e.detail["previous_status"] for e in expired_events} == {"active", "disabled"}

    # And a coupon extended between the sweep's read of the index and its write is left alone
    hour = now + timedelta(hours=1)
    shard = int(raw_item(later[0])["gsi3pk"]["S"].split("#")[1])
    items, _ = store.due(shard, hour, 10, None)
    read = next(i for i in items if i["coupon_id"] == later[0])
    service.update(later[0], CouponUpdate(expires_at=now + timedelta(days=3)), "admin-2")
    assert store.expire(read, hour) is False
    assert raw_item(later[0])["status"]["S"] == "active"

    # And an hour later the other not-yet-due ones go too
    later_run = expiry.sweep(store, hour, page_size=3)
    assert later_run.expired == len(later) - 1


def drain(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    out = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_the_publisher_function_puts_events_on_the_bus_and_parks_what_it_could_not(
        aws_env: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PUBLISH_RETRY_SECONDS", "0.2")  # refused events are retried this long (10 s by default)
    get_settings.cache_clear()
    # Given committed changes on the coupons stream: a create, an edit, a pause and a delete
    coupon = create(code="STREAMED-1", discount_type="FIXED", discount_value=500, currency="USD")
    service = wiring.admin_service()
    service.update(coupon["id"], CouponUpdate(max_uses=5), "admin-2")
    service.update(coupon["id"], CouponUpdate(status="disabled"), "admin-2")
    service.delete(coupon["id"], "admin-3")
    records = stream_records()
    host, publisher = FunctionHost(), r.function("publisher")

    # When the publisher gets them as one batch
    assert host.invoke(publisher, {"Records": records}) == {"batchItemFailures": []}

    # Then exactly these events reach the bus (and the tap queue), none with the code
    got = drain(aws_env.event_queue_url)
    assert [(e["source"], e["detail-type"]) for e in got] == [
        ("coupons", "CouponCreated"), ("coupons", "CouponUpdated"), ("coupons", "CouponUpdated"),
        ("coupons", "CouponDeleted")]
    assert [e["detail"].get("actor") for e in got] == ["admin-1", "admin-2", "admin-2", "admin-3"]
    assert got[1]["detail"]["changed"] == ["max_uses"] and got[2]["detail"]["changed"] == ["status"]
    assert "STREAMED" not in json.dumps(got)

    # And when the bus refuses everything, every event is parked in the undelivered-events queue with
    # its body and no record goes back to the stream (issue 17: before, they were retried, then skipped)
    monkeypatch.setattr(aws.client("events"), "put_events",  # the client the publisher holds
                        lambda **_: {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure"}]})
    answer = host.invoke(publisher, {"Records": records})
    assert answer == {"batchItemFailures": []}
    assert drain(aws_env.event_queue_url) == []
    parked = drain(aws_env.queues["undelivered-events"])
    assert sorted(((m["detail_type"], json.loads(m["detail"])) for m in parked), key=str) == sorted(
        ((e["detail-type"], e["detail"]) for e in got), key=str)
