"""Issue 17 end to end: a throttled, then flaky, EventBridge during a 2,000-code generation and 200
redemptions loses no event.

The stack injects the faults (COUPONS_LOCAL_PUTEVENTS_FAULTS): every PutEvents is refused with
ThrottlingException for THROTTLE_SECONDS from the first event on (the issue's minute;
`COUPONS_E2E_THROTTLE_SECONDS=15` is a quicker run), then 5% of the entries are refused one by one. The publisher retries a
batch for 2 s here (PUBLISH_RETRY_SECONDS; 10 s by default) and, once a batch gave up, for 1 s, so
the window outlasts its retries many times over and whole batches really go to the
undelivered-events queue (hundreds of events, not one). The stream poller delivers records across
items out of commit order (4 lanes). At the end `coupons-local run replay-events` drains that queue,
and the events on the bus, after dropping repeats by event_id, are exactly the events of the changes
committed to the tables' streams: none missing, none extra, one body each.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from conftest import LocalStack, unique
from coupons import events
from coupons.adapters.event_bus import change_of
from coupons_local import tokens
from coupons_local.faults import FAULTS_ENV
from coupons_local.workers_events import lambda_record

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("events-faults")]

THROTTLE_SECONDS = float(os.environ.get("COUPONS_E2E_THROTTLE_SECONDS", "60"))
PUBLISH_RETRY_SECONDS = 2.0
ORDER = {"currency": "USD", "items": [{"product_id": "p-1", "category": "shoes", "unit_price": 4000,
                                       "quantity": 1}]}


class Aws:
    def __init__(self, stack: LocalStack) -> None:
        self.info = stack.info()
        self.sqs = self.client("sqs")

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.info["aws_endpoint"], region_name=self.info["region"],
                            aws_access_key_id="local", aws_secret_access_key="local")

    def drain(self, url: str, into: list[dict[str, Any]]) -> int:
        """Move every message now visible in the queue into `into`; how many."""
        moved = 0
        while True:
            messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return moved
            into.extend(json.loads(m["Body"]) for m in messages)
            self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(messages)])
            moved += len(messages)

    def depth(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(v) for v in attributes.values())

    def committed_events(self) -> dict[str, events.ContractEvent]:
        """The event of every change committed to the three tables' streams, by event_id."""
        streams = self.client("dynamodbstreams")
        dynamodb = self.client("dynamodb")
        tables: dict[str, str] = self.info["tables"]
        found: dict[str, events.ContractEvent] = {}
        for physical in tables.values():
            arn = dynamodb.describe_table(TableName=physical)["Table"].get("LatestStreamArn")
            if arn is None:
                continue  # a table without a stream (kept report days, idempotency records) publishes nothing
            for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
                iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                while iterator:
                    page = streams.get_records(ShardIterator=iterator, Limit=1000)
                    for record in page["Records"]:
                        event = events.to_event(change_of(lambda_record(record, arn), tables))
                        if event is not None:
                            found[event.detail["event_id"]] = event
                    if not page["Records"]:
                        break
                    iterator = page.get("NextShardIterator")
        return found


def body(source: str, detail_type: str, detail: dict[str, Any]) -> str:
    return json.dumps([source, detail_type, detail], sort_keys=True)


def test_a_throttled_then_flaky_bus_loses_no_event_of_a_generation_and_200_redemptions(make_stack: Any) -> None:
    assert THROTTLE_SECONDS > PUBLISH_RETRY_SECONDS, "the throttle must outlast the publisher's retries"
    stack = make_stack({FAULTS_ENV: f"throttle={THROTTLE_SECONDS:g}s,fail=0.05,seed=17",
                        "PUBLISH_RETRY_SECONDS": str(PUBLISH_RETRY_SECONDS)})
    aws = Aws(stack)
    tap, undelivered = aws.info["event_queue_url"], aws.info["queues"]["undelivered-events"]
    window_opened = time.monotonic()

    # Given 10 coupons of 50 uses (the first one's event opens the throttle window)
    coupons = [stack.create_coupon(code=unique("THR"), discount_type="FIXED", discount_value=500, currency="USD",
                                   max_uses=50, campaign_id="faults") for _ in range(10)]

    # When a 2,000-code generation runs while 200 shoppers redeem, all within the throttle window
    campaign = unique("gen").lower()
    started = stack.admin("POST", f"/campaigns/{campaign}/codes", {
        "count": 2000, "pattern": "THR-####-####-####",
        "template": {"discount_type": "FIXED", "discount_value": 500, "currency": "USD", "max_uses": 1}})
    assert started.status == 202, started.body
    job_id = started.body["job_id"]

    def redeem(i: int) -> str:
        coupon = coupons[i % len(coupons)]
        token = tokens.issue(f"thr-shopper-{i}", email=f"shopper{i}@example.com")
        answer = stack.request("POST", "/redemptions", {"code": coupon["code"], "channel": "web", "order": ORDER,
                                                        "order_id": f"thr-order-{i}"}, token=token)
        assert answer.status == 201, answer.body
        return str(answer.body["redemption_id"])

    with ThreadPoolExecutor(4) as pool:
        redemption_ids = set(pool.map(redeem, range(200)))
    deadline = time.monotonic() + 400
    while (job := stack.admin("GET", f"/jobs/{job_id}").body)["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert (job["status"], job["total"]) == ("succeeded", 2000)
    committed = aws.committed_events()  # every write is committed now

    # And, once the throttle is over, the operator replays the undelivered events until none wait
    got: list[dict[str, Any]] = []
    replays: list[dict[str, Any]] = []
    most_waiting = 0
    deadline = time.monotonic() + 300
    while True:
        aws.drain(tap, got)
        waiting = aws.depth(undelivered)
        most_waiting = max(most_waiting, waiting)
        missing = set(committed) - {e["detail"]["event_id"] for e in got}
        if not missing and not waiting:
            break
        assert time.monotonic() < deadline, f"{len(missing)} events never arrived; {waiting} waiting"
        if waiting and time.monotonic() > window_opened + THROTTLE_SECONDS + 2:
            ran = stack.cli("run", "replay-events", "--port", str(stack.port), check=False)
            replays.append(json.loads(ran.stdout or ran.stderr))
        time.sleep(1)
    time.sleep(3)  # anything late (a duplicate) still counts
    aws.drain(tap, got)

    # Then the undelivered-events queue was really used, and the replay emptied it
    assert most_waiting >= 50 and sum(r["replayed"] for r in replays) >= 50, (most_waiting, replays)
    # and nothing went to a dead-letter queue: neither the stream's (records skipped) nor the queue's
    dlqs = ("coupons-publisher-dlq", "coupons-undelivered-events-dlq")
    assert {n: aws.depth(aws.sqs.get_queue_url(QueueName=n)["QueueUrl"]) for n in dlqs} == dict.fromkeys(dlqs, 0)
    assert aws.depth(undelivered) == 0

    # And after dropping repeats by event_id, the bus carried exactly the committed changes' events
    seen: dict[str, set[str]] = {}
    for event in got:
        seen.setdefault(event["detail"]["event_id"], set()).add(
            body(event["source"], event["detail-type"], event["detail"]))
    assert set(seen) == set(committed)
    for event_id, bodies in seen.items():  # never two bodies for one event_id
        want = committed[event_id]
        assert bodies == {body(want.source, want.detail_type, want.detail)}, event_id
    duplicates = len(got) - len(seen)
    print(f"events: {len(seen)} distinct, {duplicates} repeats; parked at most {most_waiting}; replays {replays}")

    # And they are the workload's: 2,010 coupons created, 200 redemptions, the job's completion
    kinds = Counter(committed[e].detail_type for e in seen)
    assert kinds["CouponCreated"] == 2010 and kinds["CouponRedeemed"] == 200
    assert kinds["BulkGenerationCompleted"] == 1
    assert {committed[e].detail["redemption_id"] for e in seen
            if committed[e].detail_type == "CouponRedeemed"} == redemption_ids
    assert sum(1 for e in seen if committed[e].detail.get("campaign_id") == campaign
               and committed[e].detail_type == "CouponCreated") == 2000
