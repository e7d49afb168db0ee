"""Events over the whole local stack: the stream outbox, the bus, the tap queue, the schedules."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from conftest import unique
from coupons_local import tokens

ORDER = {"currency": "USD", "items": [{"product_id": "p-1", "category": "shoes", "unit_price": 4000,
                                       "quantity": 1}]}


def client(info: dict[str, Any], service: str) -> Any:
    return boto3.client(service, endpoint_url=info["aws_endpoint"], region_name=info["region"],
                        aws_access_key_id="local", aws_secret_access_key="local")


class Tap:
    """The queue that receives every event on the bus (`coupons-local info` names it)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.sqs = client(info, "sqs")
        self.url = info["event_queue_url"]

    def drain(self, want: int, *, settle: float = 1.5, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every event until `want` arrived and nothing more came for `settle` seconds."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=1).get("Messages", [])
            for message in messages:
                got.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            if messages:
                quiet_since = time.monotonic()
            elif len(got) >= want and time.monotonic() - quiet_since >= settle:
                break
        return got


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_each_committed_change_publishes_exactly_its_event_and_no_code(make_stack: Any) -> None:
    # Given a stack of its own (nothing else writes to it) whose schedules fire every 2 seconds
    stack = make_stack({"COUPONS_LOCAL_SCHEDULE_EVERY_SECONDS": "expiry-sweep=2"})
    customer = tokens.issue("shopper-1", email="shopper@example.com")
    info = stack.info()
    tap = Tap(info)
    code, new_code = unique("EVT"), unique("EVT")
    now = datetime.now(UTC)

    # When an admin creates a coupon that ends in a few seconds
    short = stack.create_coupon(discount_value=5, starts_at=iso(now - timedelta(hours=2)),
                                expires_at=iso(now + timedelta(seconds=3)))

    # And creates, edits and re-codes another
    coupon = stack.create_coupon(code=code, discount_type="FIXED", discount_value=500, currency="USD",
                                 campaign_id="events", max_uses=5)
    cid = coupon["id"]
    assert stack.admin("PUT", f"/coupons/{cid}", {"max_uses": 10}).status == 200
    assert stack.admin("PUT", f"/coupons/{cid}", {"code": new_code}).status == 200

    # And a customer redeems it, replays the same order, fails twice, and rolls back
    body = {"code": new_code.lower(), "channel": "mobile", "order": ORDER, "order_id": "order-1"}
    redeemed = stack.request("POST", "/redemptions", body, token=customer)
    assert redeemed.status == 201, redeemed.body
    assert stack.request("POST", "/redemptions", body, token=customer).status == 200  # replay: nothing new
    unknown = stack.request("POST", "/redemptions", {**body, "code": unique("NOPE"), "order_id": "order-2"},
                            token=customer)
    assert unknown.status == 404
    mismatch = stack.request("POST", "/redemptions", {**body, "order_id": "order-3",
                                                      "order": {**ORDER, "currency": "EUR"}}, token=customer)
    assert mismatch.status == 422
    rid = redeemed.body["redemption_id"]
    # the shop's backend refunds it (issue 12: customers may not roll back)
    shop = tokens.issue_access("shop-backend")
    assert stack.request("POST", f"/redemptions/{rid}/rollback", token=shop).status == 200
    assert stack.request("POST", f"/redemptions/{rid}/rollback", token=shop).status == 200  # no-op

    # And the admin deletes it, while the short-lived coupon ran out and the hourly sweep (every 2 s here) found it
    assert stack.admin("DELETE", f"/coupons/{cid}").status == 204

    # Then the tap queue gets exactly these events
    got = tap.drain(want=8)
    kinds = Counter((e["detail-type"], e["detail"].get("coupon_id")) for e in got)
    assert kinds == Counter({
        ("CouponCreated", cid): 1, ("CouponUpdated", cid): 2, ("CouponRedeemed", cid): 1,
        ("RedemptionRolledBack", cid): 1, ("CouponDeleted", cid): 1,
        ("CouponCreated", short["id"]): 1, ("CouponExpired", short["id"]): 1,
    }), got
    assert all(e["source"] == "coupons" for e in got)
    by_type = {e["detail-type"]: e["detail"] for e in got if e["detail"].get("coupon_id") == cid}
    assert by_type["CouponRedeemed"]["redemption_id"] == rid
    assert (by_type["CouponRedeemed"]["discount_amount"], by_type["CouponRedeemed"]["currency"]) == (500, "USD")
    assert (by_type["CouponRedeemed"]["channel"], by_type["CouponRedeemed"]["order_id"]) == ("mobile", "order-1")
    assert by_type["CouponRedeemed"]["user_id"] == "shopper-1"
    assert by_type["RedemptionRolledBack"]["actor"] == "client:shop-backend"  # the server that refunded it
    assert by_type["CouponDeleted"]["actor"] == "test-admin"
    assert sorted(tuple(e["detail"]["changed"]) for e in got if e["detail-type"] == "CouponUpdated") == [
        ("code",), ("max_uses",)]
    assert len({e["detail"]["event_id"] for e in got}) == len(got)

    # And no event carries the code in any spelling, nor its blind index
    text = json.dumps(got)
    pointer = client(info, "dynamodb").get_item(TableName=info["tables"]["coupons"],
                                              Key={"pk": {"S": f"COUPON#{cid}"}, "sk": {"S": "COUPON"}})["Item"]
    for secret in (code, new_code, code.lower(), new_code.lower(), pointer["code_hash"]["S"]):
        assert secret not in text

    # And `coupons-local run expiry-sweep` finds nothing left to do (the schedule already did it)
    ran = json.loads(stack.cli("run", "expiry-sweep", "--port", str(stack.port)).stdout)
    assert (ran["expired"], ran["complete"]) == (0, True)
    assert stack.admin("GET", f"/coupons/{short['id']}").body["status"] == "expired"
    assert tap.drain(want=0, settle=1.0, timeout=5) == []
