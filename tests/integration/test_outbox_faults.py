"""The outbox when EventBridge misbehaves (issue 17): moto's bus with injected throttling and
partial failures, the real publisher and replay functions, the real undelivered-events queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from coupons import events, wiring
from coupons.adapters.event_bus import change_of
from coupons.models import CouponCreate, CouponUpdate
from coupons_infra import resources as r
from coupons_local.faults import PutEventsFaults
from coupons_local.gateway import FunctionHost

STREAMS_ENDPOINT = "https://streams.dynamodb.us-east-1.amazonaws.com"  # moto's in-process streams host
TABLES = {"coupons": "coupons", "guards": "coupons-guards", "jobs": "coupons-jobs"}


@pytest.fixture
def outbox(aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # The publisher retries a refused event for 1 s here (10 s by default), so a test is quick.
    monkeypatch.setenv("PUBLISH_RETRY_SECONDS", "1")
    wiring.reset()
    faults = PutEventsFaults(seed=17).install()
    yield aws_env, faults
    faults.uninstall()


def stream_records(table: str = "coupons") -> list[dict[str, Any]]:
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


def expected_events(records: list[dict[str, Any]]) -> dict[str, events.ContractEvent]:
    found = (events.to_event(change_of(rec, TABLES)) for rec in records)
    return {e.detail["event_id"]: e for e in found if e is not None}


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


def depth(queue_url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def some_changes() -> list[dict[str, Any]]:
    service = wiring.admin_service()
    for n in range(3):
        coupon = service.create(CouponCreate.model_validate(
            {"code": f"OUTBOX-{n}", "discount_type": "FIXED", "discount_value": 500, "currency": "USD"}), "admin-1")
        service.update(coupon["id"], CouponUpdate(max_uses=5 + n), "admin-2")
    service.delete(coupon["id"], "admin-3")
    return stream_records()


def test_a_bus_throttled_past_the_publisher_s_retries_parks_every_event_and_the_stream_moves_on(outbox: Any) -> None:
    provisioned, faults = outbox
    # Given committed changes on the coupons stream (3 creates, 3 edits, a delete)
    records = some_changes()
    want = expected_events(records)
    assert len(want) == 7
    # And an EventBridge that throttles every PutEvents for far longer than the publisher retries
    faults.throttle_seconds = 3600
    host = FunctionHost()

    # When the publisher gets the batch
    answer = host.invoke(r.function("publisher"), {"Records": records})

    # Then no record is reported failed: the stream moves on
    assert answer == {"batchItemFailures": []}
    assert faults.throttled_calls >= 2  # it did retry
    assert drain(provisioned.event_queue_url) == []
    # And every event sits in the undelivered-events queue with its full entry and event_id
    queue = provisioned.queues["undelivered-events"]
    parked = drain(queue)
    assert sorted(m["event_id"] for m in parked) == sorted(want)
    for message in parked:
        event = want[message["event_id"]]
        assert (message["source"], message["detail_type"]) == ("coupons", event.detail_type)
        assert json.loads(message["detail"]) == event.detail
        assert message["reason"] == "ThrottlingException"
    assert "OUTBOX" not in json.dumps(parked)  # the code is never in a parked event either


def test_replay_publishes_the_parked_events_and_deletes_only_what_went_through(outbox: Any) -> None:
    provisioned, faults = outbox
    records = some_changes()
    want = expected_events(records)
    queue = provisioned.queues["undelivered-events"]
    host = FunctionHost()
    # Given every event parked by a throttled bus
    faults.throttle_seconds = 3600
    assert host.invoke(r.function("publisher"), {"Records": records}) == {"batchItemFailures": []}
    assert depth(queue) == len(want)

    # When the replay runs while the bus is still throttled
    still_down = host.invoke(r.function("replay_events"), {})
    # Then nothing is deleted and it says so
    assert (still_down["replayed"], still_down["complete"]) == (0, False)
    assert depth(queue) == len(want)

    # When the bus is back but refuses a third of the entries, and the replay runs until done
    faults.end_throttle()
    faults.fail_rate = 0.34
    runs = [host.invoke(r.function("replay_events"), {})]
    while not runs[-1]["complete"] and len(runs) < 30:
        runs.append(host.invoke(r.function("replay_events"), {}))
    # Then every event reached the bus, each with the body the committed change maps to
    got = drain(provisioned.event_queue_url)
    bodies: dict[str, set[str]] = {}
    for event in got:
        bodies.setdefault(event["detail"]["event_id"], set()).add(
            json.dumps([event["source"], event["detail-type"], event["detail"]], sort_keys=True))
    assert set(bodies) == set(want)
    for event_id, seen in bodies.items():
        assert seen == {json.dumps(["coupons", want[event_id].detail_type, want[event_id].detail], sort_keys=True)}
    # And the queue is empty: a message is deleted once its event went through, not before
    assert depth(queue) == 0
    assert sum(run["replayed"] for run in runs) >= len(want)
    assert runs[-1]["complete"] is True
    assert faults.refused_entries > 0  # the partial failures did happen


def test_partial_failures_within_the_retry_time_publish_everything_and_park_nothing(outbox: Any) -> None:
    provisioned, faults = outbox
    records = some_changes()
    want = expected_events(records)
    # Given a bus that refuses about half the entries of every call (each retry is a new draw)
    faults.fail_rate = 0.5
    # When the publisher gets the batch
    answer = FunctionHost().invoke(r.function("publisher"), {"Records": records})
    # Then its retries got every event through and nothing was parked
    assert answer == {"batchItemFailures": []}
    got = drain(provisioned.event_queue_url)
    assert {e["detail"]["event_id"] for e in got} == set(want)
    assert depth(provisioned.queues["undelivered-events"]) == 0
    assert faults.refused_entries > 0


def test_when_the_queue_cannot_take_them_either_the_records_go_back_to_the_stream(
        outbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, faults = outbox
    records = some_changes()
    faults.throttle_seconds = 3600
    from coupons.adapters import aws

    def refuse(**_: Any) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "gone"}},
                          "SendMessageBatch")

    monkeypatch.setattr(aws.client("sqs"), "send_message_batch", refuse)
    answer = FunctionHost().invoke(r.function("publisher"), {"Records": records})
    # Then the first record with an event and every later one go back to the stream: nothing is dropped
    first = next(i for i, rec in enumerate(records) if events.to_event(change_of(rec, TABLES)) is not None)
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == [
        rec["dynamodb"]["SequenceNumber"] for rec in records[first:]]
