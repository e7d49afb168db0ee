"""Daily finance report for a day of 100,000 redemptions: time and peak memory.

The day is seeded into moto with BatchWriteItem, in the exact item shape the
checkout store writes (its own `redemption_item`), 5 % rolled back the same day.
Then, in this process:

1. the daily report against moto, end to end (every shard of the day indexes
   queried and merged, CSV streamed through a spooled file, summary.json, chart,
   S3 uploads), timed, with tracemalloc's peak over the run;
2. `GET /reports/summary` for that day (the API path, no CSV);
3. the same report over the same rows from memory: the report's own CPU and heap,
   without the emulator.

moto runs in-process (mock_aws) with two benchmark-only speed-ups, or seeding and
reading 100,000 items would take the better part of an hour: DynamoDB responses
are written with json.dumps instead of moto 5.2's generic serializer (about 0.1 ms
per attribute value), and items skip moto's quadratic 400 KB size check. Neither
changes what is stored or returned.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

REDEMPTIONS = int(os.environ.get("BENCH_REPORT_REDEMPTIONS", "100000"))
ROLLBACK_SHARE = 0.05
DAY = date(2026, 3, 14)


def _fast_moto() -> None:
    """Benchmark-only: plain JSON for DynamoDB results, no per-attribute item size re-check."""
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.responses import DynamoResult

    def execute_result(self: Any, context: Any) -> Any:
        try:
            body = json.dumps(self.result)
        except TypeError:
            return original(self, context)
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

    original = DynamoResult.execute_result
    DynamoResult.execute_result = execute_result  # type: ignore[method-assign]
    dynamo_type.LimitedSizeDict.__setitem__ = dict.__setitem__  # type: ignore[method-assign,assignment]


def _items() -> Iterator[dict[str, Any]]:
    from coupons.adapters.checkout_store import CheckoutStore, day_shard
    from coupons.clock import iso

    store = CheckoutStore(None, "coupons", "coupons-guards")
    rng = random.Random(7)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    coupons = [(str(uuid.UUID(int=rng.getrandbits(128))), f"camp-{n % 20}") for n in range(500)]
    for _ in range(REDEMPTIONS):
        coupon_id, campaign = rng.choice(coupons)
        currency = rng.choice(("USD", "EUR"))
        at = start + timedelta(seconds=rng.uniform(0, 86399))
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        item = store.redemption_item({
            "redemption_id": rid, "coupon_id": coupon_id, "campaign_id": campaign, "code_hash": "ab" * 32,
            "order_id": f"order-{rid[:8]}", "order_fingerprint": "f" * 16, "user_id": f"user-{rng.randrange(50000)}",
            "ip": "198.51.100.7", "user_agent": "bench", "channel": rng.choice(("web", "mobile", "pos")),
            "discount_type": "FIXED", "discount_amount": rng.randrange(100, 5000), "currency": currency,
            "order_subtotal": 10000, "status": "redeemed", "redeemed_at": at,
        })
        if rng.random() < ROLLBACK_SHARE:
            back = min(at + timedelta(minutes=rng.uniform(1, 120)), start + timedelta(seconds=86399))
            item.update(status="rolled_back", rolled_back_at=iso(back), rolled_back_by="bench",
                        gsi4pk=f"RBDAY#{DAY.isoformat()}#{day_shard(rid)}", gsi4sk=f"{iso(back)}#{rid}")
        yield item


def _seed(dynamodb: Any) -> float:
    from coupons.adapters.dynamo import chunks, to_item

    started = time.perf_counter()
    for batch in chunks(_items(), 25):
        request = {"coupons": [{"PutRequest": {"Item": to_item(item)}} for item in batch]}
        while request:
            request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    return time.perf_counter() - started


class MemorySource:
    """The same day, already in memory (sorted as the index returns it)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def redemptions(self, day: date) -> Iterator[dict[str, Any]]:
        return iter(sorted(self.items, key=lambda i: i["gsi3sk"]))

    def rollbacks(self, day: date) -> Iterator[dict[str, Any]]:
        return iter(sorted((i for i in self.items if i.get("gsi4sk")), key=lambda i: i["gsi4sk"]))

    def failed_attempts(self, day: date) -> int:
        return 0

    def suspicious(self, day: date) -> list[dict[str, Any]]:
        return []


class NullSink:
    def __init__(self) -> None:
        self.bytes = 0

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self.bytes += len(body)

    def put_file(self, key: str, body: IO[bytes], content_type: str) -> None:
        body.seek(0, 2)
        self.bytes += body.tell()


def run() -> dict[str, object]:
    from moto import mock_aws

    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")}
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    from coupons import reports
    from coupons.adapters import aws
    from coupons.adapters.report_store import DynamoReportSource, S3ReportSink
    from coupons_local.provision import provision

    _fast_moto()
    try:
        with mock_aws():
            aws.reset_clients()
            provision()
            dynamodb, s3 = aws.client("dynamodb"), aws.client("s3")
            seed_seconds = _seed(dynamodb)
            source = DynamoReportSource(dynamodb, "coupons", "coupons-guards")
            sink = S3ReportSink(s3, "coupons-reports")

            gc.collect()
            started = time.perf_counter()
            result = reports.daily_report(source, sink, DAY)
            report_seconds = time.perf_counter() - started
            csv_bytes = s3.head_object(Bucket="coupons-reports",
                                       Key=f"daily/{DAY.isoformat()}/redemptions.csv")["ContentLength"]
            gc.collect()
            tracemalloc.start()
            reports.daily_report(source, sink, DAY)
            _, moto_heap_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()

            started = time.perf_counter()
            summary = reports.summary(source, DAY, DAY)
            summary_seconds = time.perf_counter() - started
            assert summary["redemptions"] == REDEMPTIONS
            assert summary["discount_totals"] == result["discount_totals"]

        items = list(_items())
        started = time.perf_counter()
        reports.daily_report(MemorySource(items), NullSink(), DAY)
        memory_seconds = time.perf_counter() - started
        gc.collect()
        tracemalloc.start()
        reports.daily_report(MemorySource(items), NullSink(), DAY)
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        aws.reset_clients()
    return {
        "redemptions in the day (5 % rolled back the same day)": REDEMPTIONS,
        "rows written (redemptions + rollbacks)": result["rows"],
        "CSV size (MB)": round(csv_bytes / 1e6, 1),
        "seeding moto with BatchWriteItem (s)": round(seed_seconds, 1),
        "daily report against moto, end to end (s)": round(report_seconds, 1),
        "  peak Python heap during it, moto's pages included (MB)": round(moto_heap_peak / 1e6, 1),
        "GET /reports/summary for that day against moto (s)": round(summary_seconds, 1),
        "daily report over the same rows in memory (s)": round(memory_seconds, 2),
        "  peak Python heap of the report itself (MB)": round(heap_peak / 1e6, 1),
    }


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<70} {value}")
