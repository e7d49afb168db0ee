"""Issue 17 (findings 2 and 8a) against moto: per-day aggregates in their table, the report streamed to S3.

The summary route and the daily job run through their Lambda handlers, on the real adapters.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest
from coupons import report_range, reports
from coupons.adapters import aws
from coupons.adapters.checkout_store import CheckoutStore, day_shard
from coupons.adapters.dynamo import to_item
from coupons.adapters.report_store import S3ReportSink, default_source
from coupons.clock import iso, utcnow
from coupons_infra import resources as r
from coupons_local.gateway import FunctionHost
from coupons_local.tokens import ADMIN_ISSUER

ADMIN = {"sub": "finance-1", "cognito:groups": "coupon-admins", "iss": ADMIN_ISSUER}  # the admin pool's token


def seed(table: str, day: date, n: int, *, coupon: str = "c-1", amount: int = 250, rolled_back_on: date | None = None,
         hour: int = 10) -> None:
    """A redemption as the checkout store writes it (and its rollback, made on another day)."""
    at = datetime(day.year, day.month, day.day, hour, n % 60, tzinfo=UTC)
    rid = f"00000000-0000-4000-8000-{day.toordinal():06d}{n:06d}"
    item = CheckoutStore(None, table, "").redemption_item({
        "redemption_id": rid, "coupon_id": coupon, "campaign_id": "spring", "code_hash": "ab" * 32,
        "order_id": f"o-{rid}", "user_id": f"u-{n}", "channel": ("web", "mobile", "pos")[n % 3],
        "discount_type": "FIXED", "discount_amount": amount, "currency": ("USD", "EUR")[n % 2],
        "order_subtotal": 10_000, "status": "redeemed", "redeemed_at": at})
    if rolled_back_on is not None:
        back = iso(datetime(rolled_back_on.year, rolled_back_on.month, rolled_back_on.day, 9, tzinfo=UTC))
        item.update(status="rolled_back", rolled_back_at=back, rolled_back_by="admin",
                    gsi4pk=f"RBDAY#{rolled_back_on.isoformat()}#{day_shard(rid)}", gsi4sk=f"{back}#{rid}")
    boto3.client("dynamodb").put_item(TableName=table, Item=to_item(item))


def summary_event(first: date, last: date) -> dict[str, Any]:
    query = {"from": first.isoformat(), "to": last.isoformat()}
    return {
        "resource": "/reports/summary", "path": "/reports/summary", "httpMethod": "GET",
        "headers": {}, "multiValueHeaders": {}, "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()}, "pathParameters": None,
        "isBase64Encoded": False, "body": None,
        "requestContext": {"resourcePath": "/reports/summary", "httpMethod": "GET", "stage": "test",
                           "requestId": "r1", "identity": {"sourceIp": "10.1.1.1", "userAgent": "t"},
                           # issue 12: the token authorizer's context (an ID token's claims, flat)
                           "authorizer": {"token_use": "id", "exp": "4102444800", **ADMIN}},
    }


def test_a_40_day_range_once_its_days_are_kept_reads_a_partition_per_month_and_today_live(
        aws_env: Any, count_calls: Any) -> None:
    # Given 40 days of redemptions, some rolled back days later, and the daily job run for each past day
    table = aws_env.tables["coupons"]
    today = utcnow().date()
    first = today - timedelta(days=39)
    for offset in range(40):
        day = first + timedelta(days=offset)
        seed(table, day, 1, coupon=f"c-{offset % 7}", amount=100 + offset)
        back = day + timedelta(days=3)
        seed(table, day, 2, coupon="c-x", amount=55, rolled_back_on=back if back <= today else None)
    host = FunctionHost()
    for offset in range(39):
        ran = host.invoke(r.function("daily_report"), {"date": (first + timedelta(days=offset)).isoformat()})
        assert ran["rows"] >= 2
    expected = report_range.summary(default_source(), first, today)  # every day re-read: the old way

    # When finance asks for the 40 days
    count_calls.attach("dynamodb", "s3")
    response = host.invoke(r.function("reports"), summary_event(first, today))

    # Then the answer is the full re-read, from a Query per month partition plus today's live day
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"]) == json.loads(json.dumps(expected))
    queries = count_calls.calls["dynamodb:Query"]
    assert queries <= 3 + 2 * 18, f"{queries} Queries for 40 days (18 a day re-read)"
    assert count_calls.by_service("s3") == 0


def aggregate(coupons: int, *, salt: int = 0) -> reports.Aggregate:
    total = reports.Aggregate()
    for n in range(coupons):
        total.add(reports.Row(at="2026-03-01T10:00:00.000000Z", event="redeemed", redemption_id=f"r-{n}",
                              coupon_id=f"coupon-{n:05d}-{'x' * 40}", campaign_id=f"campaign-{n % 9}", user_id="u",
                              order_id="o", channel="web", currency="USD", discount_amount=n + salt))
    total.failed_attempts = 3 + salt
    return total


def test_aggregates_round_trip_in_chunks_and_a_damaged_one_is_not_trusted(aws_env: Any,
                                                                            count_calls: Any) -> None:
    from coupons.adapters.report_store import DynamoAggregateStore

    client = aws.client("dynamodb")
    table = aws_env.tables["reports"]
    store = DynamoAggregateStore(client, table, chunk_bytes=4096)
    feb, mar = date(2026, 2, 27), date(2026, 3, 2)
    big, small = aggregate(400), aggregate(1)
    store.save(feb, big)
    store.save(mar, small)
    items = client.query(TableName=table, KeyConditionExpression="pk = :pk",
                         ExpressionAttributeValues={":pk": {"S": "DAYS#2026-02"}})["Items"]
    assert len(items) > 5  # a header and its chunks, each far below DynamoDB's 400 KB
    assert max(len(i["data"]["B"]) for i in items) <= 4096

    count_calls.attach("dynamodb")
    loaded = store.load(date(2026, 2, 1), date(2026, 3, 31))
    assert count_calls.calls["dynamodb:Query"] == 2  # one per month partition
    assert {d: reports.Aggregate.from_kept(k).to_dict() for d, k in loaded.items()} == {
        feb: big.to_dict(), mar: small.to_dict()}
    assert store.load(date(2026, 2, 28), date(2026, 3, 1)) == {}

    # A rewrite with other content replaces the old chunks; a missing chunk makes the day untrusted
    store.save(feb, aggregate(300, salt=1))
    assert reports.Aggregate.from_kept(store.load(feb, feb)[feb]).to_dict() == aggregate(300, salt=1).to_dict()
    after = client.query(TableName=table, KeyConditionExpression="pk = :pk",
                         ExpressionAttributeValues={":pk": {"S": "DAYS#2026-02"}})["Items"]
    assert len({i["sk"]["S"].split("#")[1] for i in after if "#" in i["sk"]["S"]}) == 1  # one generation left
    chunk = next(i for i in after if "#" in i["sk"]["S"])
    client.delete_item(TableName=table, Key={"pk": chunk["pk"], "sk": chunk["sk"]})
    assert store.load(feb, feb) == {}


class Parts:
    """Sizes of the bodies sent with UploadPart and PutObject (botocore's request parameters)."""

    def __init__(self) -> None:
        self.parts: list[int] = []
        self.puts: list[int] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        body = params.get("Body")
        size = len(body) if isinstance(body, bytes | bytearray) else -1
        (self.parts if model.name == "UploadPart" else self.puts).append(size)


def watch(s3: Any) -> Parts:
    parts = Parts()
    s3.meta.events.register("provide-client-params.s3.UploadPart", parts)
    s3.meta.events.register("provide-client-params.s3.PutObject", parts)
    return parts


def test_a_large_object_streams_in_multipart_parts_of_at_least_5_mb(aws_env: Any) -> None:
    s3 = aws.client("s3")
    bucket = aws_env.buckets["reports"]
    parts = watch(s3)
    piece = b"2026-03-14T10:00:00.000000Z,redeemed,abc,def\r\n" * 1400  # ~64 KB
    with S3ReportSink(s3, bucket).open_stream("daily/x/redemptions.csv", "text/csv; charset=utf-8") as out:
        for _ in range(300):  # ~19 MB
            out.write(piece)
    stored = s3.get_object(Bucket=bucket, Key="daily/x/redemptions.csv")
    assert stored["Body"].read() == piece * 300 and stored["ContentType"] == "text/csv; charset=utf-8"
    assert len(parts.parts) >= 3 and parts.puts == []
    assert all(size >= 5 * 1024 * 1024 for size in parts.parts[:-1])
    assert max(parts.parts) <= 16 * 1024 * 1024  # memory: one part at a time


def test_a_small_object_is_one_put_and_a_failed_stream_leaves_nothing(aws_env: Any) -> None:
    s3 = aws.client("s3")
    bucket = aws_env.buckets["reports"]
    parts = watch(s3)
    sink = S3ReportSink(s3, bucket)
    with sink.open_stream("daily/y/small.csv", "text/csv") as out:
        out.write(b"a,b\r\n")
    assert s3.get_object(Bucket=bucket, Key="daily/y/small.csv")["Body"].read() == b"a,b\r\n"
    assert parts.parts == [] and len(parts.puts) == 1

    with pytest.raises(RuntimeError), sink.open_stream("daily/y/broken.csv", "text/csv") as out:
        for _ in range(200):
            out.write(b"x" * 65536)  # ~13 MB: parts already uploaded
        raise RuntimeError("the source failed half-way")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="daily/y/broken")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
