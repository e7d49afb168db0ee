"""Finance reports over the local stack: the daily CSV, summary.json and the API agree to the cent."""

from __future__ import annotations

import csv
import io
import json
import secrets
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
from conftest import LocalStack, unique
from coupons.adapters.checkout_store import CheckoutStore
from coupons.adapters.dynamo import to_item
from coupons_local import tokens


def order(currency: str, price: int) -> dict[str, Any]:
    return {"currency": currency, "items": [{"product_id": "p-1", "category": "bags", "unit_price": price,
                                             "quantity": 1}]}


def client(info: dict[str, Any], service: str) -> Any:
    return boto3.client(service, endpoint_url=info["aws_endpoint"], region_name=info["region"],
                        aws_access_key_id="local", aws_secret_access_key="local")


def test_a_day_in_two_currencies_and_three_channels_reconciles_across_csv_summary_and_api(
        stack: LocalStack) -> None:
    # Given three coupons: dollars off, euros off, and 10 % off in either currency
    usd = stack.create_coupon(code=unique("USD"), discount_type="FIXED", discount_value=500, currency="USD",
                              campaign_id="finance-usd")
    eur = stack.create_coupon(code=unique("EUR"), discount_type="FIXED", discount_value=700, currency="EUR")
    pct = stack.create_coupon(code=unique("PCT"), discount_value=10, campaign_id="finance-pct")
    mine = {usd["id"], eur["id"], pct["id"]}

    # When customers redeem on web, mobile and pos, some roll back, and one guesses a code
    plan = [(usd, "web", order("USD", 2000), False), (usd, "mobile", order("USD", 2000), True),
            (usd, "pos", order("USD", 2000), False), (eur, "web", order("EUR", 3000), False),
            (eur, "pos", order("EUR", 3000), True), (pct, "mobile", order("USD", 4000), False),
            (pct, "web", order("EUR", 2500), False)]
    redeemed: dict[str, tuple[dict[str, Any], str, bool]] = {}  # id -> (response, channel, rolled back)
    for n, (coupon, channel, basket, roll_back) in enumerate(plan):
        token = tokens.issue(unique("buyer"))
        result = stack.request("POST", "/redemptions", {"code": coupon["code"], "channel": channel,
                                                        "order": basket, "order_id": f"fin-{n}"}, token=token)
        assert result.status == 201, result.body
        redeemed[result.body["redemption_id"]] = (result.body, channel, roll_back)
        if roll_back:
            back = stack.request("POST", f"/redemptions/{result.body['redemption_id']}/rollback",
                                 token=stack.admin_token)  # issue 12: admins and servers roll back
            assert back.status == 200 and back.body["status"] == "rolled_back"
    guess = stack.request("POST", "/redemptions", {"code": unique("GUESS"), "channel": "web",
                                                   "order": order("USD", 100), "order_id": "fin-x"},
                          token=tokens.issue(unique("guesser")))
    assert guess.status == 404
    day = datetime.now(UTC).date().isoformat()
    assert {body["redeemed_at"][:10] for body, _, _ in redeemed.values()} == {day}

    # And the daily report runs for today, and finance asks the API for the same day
    info = stack.info()
    ran = json.loads(stack.cli("run", "daily-report", "--date", day, "--port", str(stack.port)).stdout)
    api = stack.admin("GET", f"/reports/summary?from={day}&to={day}")
    assert api.status == 200, api.body
    s3 = client(info, "s3")
    bucket = info["buckets"]["reports"]

    def read(name: str) -> tuple[bytes, str]:
        found = s3.get_object(Bucket=bucket, Key=f"daily/{day}/{name}")
        return found["Body"].read(), found["ContentType"]

    csv_bytes, csv_type = read("redemptions.csv")
    summary = json.loads(read("summary.json")[0])
    chart, chart_type = read("chart.html")
    flags, flags_type = read("suspicious.csv")

    # Then summary.json is exactly the API's answer for that day (today is never kept: it is not over)
    assert summary == api.body
    assert ran["rows"] == summary["redemptions"] + summary["rollbacks"] and ran["aggregate_stored"] is False
    assert flags_type.startswith("text/csv") and flags.decode().splitlines()[0] == \
        "at,kind,scope,user_id,ip,count,limit,window_seconds,client_id"  # issue 12: the client
    assert len(flags.decode().splitlines()) - 1 == summary["suspicious_count"] >= len(summary["suspicious"])

    # And the CSV rows add up to it to the cent, per currency, per channel and in count
    assert csv_type.startswith("text/csv") and chart_type.startswith("text/html") and b"<svg" in chart
    rows = list(csv.DictReader(io.StringIO(csv_bytes.decode("utf-8"))))
    # (contract v2, issue 12: the order's subtotal and total after discount appended)
    assert list(rows[0]) == ["at", "event", "redemption_id", "coupon_id", "campaign_id", "user_id", "order_id",
                             "channel", "currency", "discount_amount", "order_subtotal", "total_after_discount"]
    net: dict[str, int] = defaultdict(int)
    by_channel: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        net[row["currency"]] += int(row["discount_amount"])
        by_channel[row["channel"]][row["currency"]] += int(row["discount_amount"])
    assert dict(net) == summary["discount_totals"]
    assert Counter(r["event"] for r in rows) == Counter(redeemed=summary["redemptions"],
                                                        rolled_back=summary["rollbacks"])
    for channel, totals in summary["by_channel"].items():
        assert {c: v for c, v in by_channel[channel].items()} == totals["discount_totals"], channel

    # And my own redemptions are there exactly: one row each, a negative row per rollback
    my_rows = sorted((r["redemption_id"], r["event"], r["channel"], r["currency"], int(r["discount_amount"]))
                     for r in rows if r["coupon_id"] in mine)
    expected = []
    for rid, (body, channel, rolled_back) in redeemed.items():
        expected.append((rid, "redeemed", channel, body["currency"], body["discount_amount"]))
        if rolled_back:
            expected.append((rid, "rolled_back", channel, body["currency"], -body["discount_amount"]))
    assert my_rows == sorted(expected)
    # Each row describes its whole order, a rollback row too (the order's amounts are not negated)
    for row in (r for r in rows if r["coupon_id"] in mine):
        body = redeemed[row["redemption_id"]][0]
        assert (int(row["order_subtotal"]), int(row["total_after_discount"])) == \
            (body["order_subtotal"], body["total_after_discount"]), row
    coupons = {c["coupon_id"]: c for c in summary["by_coupon"] if c["coupon_id"] in mine}
    assert coupons[usd["id"]] == {"coupon_id": usd["id"], "campaign_id": "finance-usd", "redemptions": 3,
                                  "rollbacks": 1, "discount_totals": {"USD": 1000}}
    assert coupons[eur["id"]] == {"coupon_id": eur["id"], "campaign_id": None, "redemptions": 2,
                                  "rollbacks": 1, "discount_totals": {"EUR": 700}}
    assert coupons[pct["id"]] == {"coupon_id": pct["id"], "campaign_id": "finance-pct", "redemptions": 2,
                                  "rollbacks": 0, "discount_totals": {"EUR": 250, "USD": 400}}
    assert summary["failed_attempts"] >= 1

    # And the coupon's own page shows its usage (two uses left counted after one rollback)
    view = stack.admin("GET", f"/coupons/{usd['id']}").body
    last = max(body["redeemed_at"] for body, _, _ in redeemed.values() if body["coupon_id"] == usd["id"])
    assert view["usage"] == {"redeemed_count": 2, "remaining_uses": None, "utilisation": None,
                             "last_redeemed_at": last.replace("+00:00", "Z")}


def test_the_summary_route_is_for_admins_and_checks_its_dates(stack: LocalStack) -> None:
    customer = tokens.issue(unique("nosy"))
    assert stack.request("GET", "/reports/summary?from=2026-01-01&to=2026-01-02", token=customer).status == 403
    assert stack.request("GET", "/reports/summary?from=2026-01-01&to=2026-01-02").status == 401
    for query, field in (("from=2026-01-02&to=2026-01-01", "to"), ("to=2026-01-01", "from"),
                         ("from=2026-02-30&to=2026-03-01", "from"), ("from=2025-01-01&to=2026-01-02", "to"),
                         ("from=2026-01-01&to=2026-01-01&extra=1", None)):
        result = stack.admin("GET", f"/reports/summary?{query}")
        if field is None:
            assert result.status == 200, result.body  # unknown query parameters are ignored, as on any GET
            continue
        assert (result.status, result.error_code) == (400, "VALIDATION_ERROR"), query
        assert result.body["error"]["details"][0]["field"] == field


def seed_redemption(dynamodb: Any, table: str, day: date, amount: int, coupon_id: str) -> None:
    """A redemption of a past day, written as the checkout store writes it (the API only redeems today)."""
    rid = str(uuid.uuid4())
    item = CheckoutStore(None, table, "").redemption_item({
        "redemption_id": rid, "coupon_id": coupon_id, "campaign_id": "past", "code_hash": "ab" * 32,
        "order_id": f"o-{rid}", "user_id": "u-past", "channel": "pos", "discount_type": "FIXED",
        "discount_amount": amount, "currency": "USD", "order_subtotal": 10_000, "status": "redeemed",
        "redeemed_at": datetime(day.year, day.month, day.day, 12, tzinfo=UTC)})
    dynamodb.put_item(TableName=table, Item=to_item(item))


def test_a_past_day_is_kept_by_the_daily_job_and_the_summary_reads_it_from_there(stack: LocalStack) -> None:
    # Given a past day (one nobody else uses) with two redemptions, and its daily report run
    info = stack.info()
    dynamodb = client(info, "dynamodb")
    coupons_table, reports_table = info["tables"]["coupons"], info["tables"]["reports"]
    day = datetime.now(UTC).date() - timedelta(days=40 + secrets.randbelow(300))
    coupon = unique("past-")
    seed_redemption(dynamodb, coupons_table, day, 300, coupon)
    seed_redemption(dynamodb, coupons_table, day, 450, coupon)
    ran = json.loads(stack.cli("run", "daily-report", "--date", day.isoformat(), "--port", str(stack.port)).stdout)
    assert ran["aggregate_stored"] is True and ran["redemptions"] >= 2
    key = {"pk": {"S": f"DAYS#{day.isoformat()[:7]}"}, "sk": {"S": day.isoformat()}}
    assert "Item" in dynamodb.get_item(TableName=reports_table, Key=key)

    # When finance asks for that day: the kept aggregate answers, exactly summary.json
    query = f"/reports/summary?from={day.isoformat()}&to={day.isoformat()}"
    first = stack.admin("GET", query)
    assert first.status == 200, first.body
    s3 = client(info, "s3")
    kept_json = json.loads(s3.get_object(Bucket=info["buckets"]["reports"],
                                         Key=f"daily/{day.isoformat()}/summary.json")["Body"].read())
    assert first.body == kept_json
    mine = next(c for c in first.body["by_coupon"] if c["coupon_id"] == coupon)
    assert (mine["redemptions"], mine["discount_totals"]) == (2, {"USD": 750})

    # Then a raw item slipped in behind its back does not change a kept day (a settled day is final) ...
    seed_redemption(dynamodb, coupons_table, day, 1000, coupon)
    assert stack.admin("GET", query).body == first.body

    # ... and a day whose aggregate is gone (a gap) is computed live, exactly, and kept again
    dynamodb.delete_item(TableName=reports_table, Key=key)
    again = stack.admin("GET", query)
    assert again.status == 200, again.body
    mine = next(c for c in again.body["by_coupon"] if c["coupon_id"] == coupon)
    assert (mine["redemptions"], mine["discount_totals"]) == (3, {"USD": 1750})
    assert again.body["redemptions"] == first.body["redemptions"] + 1
    assert "Item" in dynamodb.get_item(TableName=reports_table, Key=key)
