"""Daily finance report for a day of 100,000 redemptions: time and peak memory.

Items are made by the checkout store's own `redemption_item` (5 % rolled back the
same day), so they have the exact stored shape and index keys.

1. **100,000 redemptions through the real DynamoDB adapter.** `DynamoReportSource`
   (8 + 8 sharded day-index partitions, 1 MB pages, merge, decoding) reads them from
   `WireIndex`, an in-memory stand-in that answers Query with DynamoDB JSON pages
   exactly as DynamoDB pages them; the report writes its CSV, summary.json and chart
   to a sink that counts bytes. Timed, then run again under tracemalloc for the peak
   heap of the report itself (the stored items are allocated before tracing starts).
   `GET /reports/summary` for that day is timed the same way.
2. **The same path end to end through moto** (seeded with BatchWriteItem; the
   report's S3 uploads go to moto too), at `BENCH_REPORT_MOTO_REDEMPTIONS` (default
   2,000). moto's Query looks at every item of the table and sorts them for each
   page, so its cost grows with the square of the day's size: 10,000 redemptions
   already take minutes and 100,000 hours. That is the emulator's cost, not the
   report's; DynamoDB serves a partition page in milliseconds.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

REDEMPTIONS = int(os.environ.get("BENCH_REPORT_REDEMPTIONS", "100000"))
MOTO_REDEMPTIONS = int(os.environ.get("BENCH_REPORT_MOTO_REDEMPTIONS", "2000"))
ROLLBACK_SHARE = 0.05
DAY = date(2026, 3, 14)
PAGE_BYTES = 1024 * 1024  # DynamoDB's Query page


def _items(count: int) -> Iterator[dict[str, Any]]:
    from coupons.adapters.checkout_store import CheckoutStore, day_shard
    from coupons.clock import iso

    store = CheckoutStore(None, "coupons", "coupons-guards")
    rng = random.Random(7)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    coupons = [(str(uuid.UUID(int=rng.getrandbits(128))), f"camp-{n % 20}") for n in range(500)]
    for _ in range(count):
        coupon_id, campaign = rng.choice(coupons)
        at = start + timedelta(seconds=rng.uniform(0, 86399))
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        item = store.redemption_item({
            "redemption_id": rid, "coupon_id": coupon_id, "campaign_id": campaign, "code_hash": "ab" * 32,
            "order_id": f"order-{rid[:8]}", "order_fingerprint": "f" * 16, "user_id": f"user-{rng.randrange(50000)}",
            "ip": "198.51.100.7", "user_agent": "bench", "channel": rng.choice(("web", "mobile", "pos")),
            "discount_type": "FIXED", "discount_amount": rng.randrange(100, 5000),
            "currency": rng.choice(("USD", "EUR")), "order_subtotal": 10000, "status": "redeemed",
            "redeemed_at": at,
        })
        if rng.random() < ROLLBACK_SHARE:
            back = min(at + timedelta(minutes=rng.uniform(1, 120)), start + timedelta(seconds=86399))
            item.update(status="rolled_back", rolled_back_at=iso(back), rolled_back_by="bench",
                        gsi4pk=f"RBDAY#{DAY.isoformat()}#{day_shard(rid)}", gsi4sk=f"{iso(back)}#{rid}")
        yield item


def _progress(what: str) -> None:
    print(f"   .. {what} ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)


class WireIndex:
    """Query over gsi3/gsi4 (and empty guards partitions) in DynamoDB's wire format and paging."""

    def __init__(self, items: Iterator[dict[str, Any]]) -> None:
        from coupons.adapters.dynamo import to_item

        self.partitions: dict[tuple[str, str], list[tuple[str, dict[str, Any], int]]] = {}
        for item in items:
            wire = to_item(item)
            size = len(json.dumps(wire))
            for index in ("gsi3", "gsi4"):
                if item.get(f"{index}pk"):
                    self.partitions.setdefault((index, item[f"{index}pk"]), []).append(
                        (item[f"{index}sk"], wire, size))
        for rows in self.partitions.values():
            rows.sort(key=lambda row: row[0])

    def query(self, **request: Any) -> dict[str, Any]:
        index = request.get("IndexName", "")
        value = request["ExpressionAttributeValues"][":pk"]["S"]
        rows = self.partitions.get((index, value), [])
        start = request.get("ExclusiveStartKey")
        position = 0
        if start:
            after = start[f"{index}sk"]["S"]
            position = next((n for n, row in enumerate(rows) if row[0] > after), len(rows))
        page, used = [], 0
        while position < len(rows) and used + rows[position][2] <= PAGE_BYTES:
            page.append(rows[position][1])
            used += rows[position][2]
            position += 1
        answer: dict[str, Any] = {"Items": page, "Count": len(page)}
        if position < len(rows):
            answer["LastEvaluatedKey"] = {f"{index}sk": {"S": rows[position - 1][0]}}
        return answer


class CountingSink:
    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self.sizes[key] = len(body)

    def put_file(self, key: str, body: IO[bytes], content_type: str) -> None:
        body.seek(0, 2)
        self.sizes[key] = body.tell()


def _fast_moto() -> None:
    """Benchmark-only: plain JSON for DynamoDB results, no per-attribute item size re-check.

    moto 5.2's generic response serializer costs about 0.1 ms per attribute value and its
    400 KB item check is quadratic in the attributes; neither changes what is stored or returned.
    """
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.responses import DynamoResult

    original = DynamoResult.execute_result

    def execute_result(self: Any, context: Any) -> Any:
        try:
            body = json.dumps(self.result)
        except TypeError:
            return original(self, context)
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

    DynamoResult.execute_result = execute_result  # type: ignore[method-assign]
    dynamo_type.LimitedSizeDict.__setitem__ = dict.__setitem__  # type: ignore[method-assign,assignment]


def _through_moto() -> dict[str, object]:
    from coupons import reports
    from coupons.adapters import aws
    from coupons.adapters.dynamo import chunks, to_item
    from coupons.adapters.report_store import DynamoReportSource, S3ReportSink
    from coupons_local.provision import provision
    from moto import mock_aws

    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")}
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    _fast_moto()
    try:
        with mock_aws():
            aws.reset_clients()
            provision()
            dynamodb, s3 = aws.client("dynamodb"), aws.client("s3")
            started = time.perf_counter()
            for batch in chunks(_items(MOTO_REDEMPTIONS), 25):
                request = {"coupons": [{"PutRequest": {"Item": to_item(item)}} for item in batch]}
                while request:
                    request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            seeded = time.perf_counter() - started
            _progress(f"moto seeded with {MOTO_REDEMPTIONS}")
            source = DynamoReportSource(dynamodb, "coupons", "coupons-guards")
            started = time.perf_counter()
            result = reports.daily_report(source, S3ReportSink(s3, "coupons-reports"), DAY)
            elapsed = time.perf_counter() - started
            stored = s3.list_objects_v2(Bucket="coupons-reports", Prefix=f"daily/{DAY.isoformat()}/")
            assert len(stored.get("Contents", [])) == 3
            assert result["redemptions"] == MOTO_REDEMPTIONS
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        aws.reset_clients()
    return {
        f"moto: seeding {MOTO_REDEMPTIONS} redemptions with BatchWriteItem (s)": round(seeded, 1),
        f"moto: daily report for {MOTO_REDEMPTIONS} redemptions, end to end incl. S3 (s)": round(elapsed, 1),
    }


def run() -> dict[str, object]:
    from coupons import reports
    from coupons.adapters.report_store import DynamoReportSource

    started = time.perf_counter()
    index = WireIndex(_items(REDEMPTIONS))
    built = time.perf_counter() - started
    _progress(f"{REDEMPTIONS} redemptions indexed")
    source = DynamoReportSource(index, "coupons", "coupons-guards")

    gc.collect()
    sink = CountingSink()
    started, cpu = time.perf_counter(), time.process_time()
    result = reports.daily_report(source, sink, DAY)
    report_seconds, report_cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.collect()
    tracemalloc.start()
    reports.daily_report(source, CountingSink(), DAY)
    _, report_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    started, cpu = time.perf_counter(), time.process_time()
    summary = reports.summary(source, DAY, DAY)
    summary_seconds, summary_cpu = time.perf_counter() - started, time.process_time() - cpu
    assert summary["redemptions"] == REDEMPTIONS
    assert summary["discount_totals"] == result["discount_totals"]
    gc.collect()
    tracemalloc.start()
    reports.summary(source, DAY, DAY)
    _, summary_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pages = sum(-(-sum(r[2] for r in rows) // PAGE_BYTES) for rows in index.partitions.values())
    del index, source
    _progress("report done; now through moto")

    figures: dict[str, object] = {
        "redemptions in the day (5 % rolled back the same day)": REDEMPTIONS,
        "CSV rows (redemptions + rollbacks)": result["rows"],
        "CSV size (MB)": round(sink.sizes[f"daily/{DAY.isoformat()}/redemptions.csv"] / 1e6, 1),
        "day-index Query pages read (16 partitions, 1 MB pages)": pages,
        "building the in-memory wire index (s, not part of the report)": round(built, 1),
        "daily report: CSV + summary.json + chart, wall (s)": round(report_seconds, 2),
        "  CPU time of the report (s)": round(report_cpu, 2),
        "  peak Python heap of the report (MB)": round(report_peak / 1e6, 1),
        "GET /reports/summary for that day, wall (s)": round(summary_seconds, 2),
        "  CPU time of the summary (s)": round(summary_cpu, 2),
        "  peak Python heap of the summary (MB)": round(summary_peak / 1e6, 1),
    }
    figures.update(_through_moto())
    return figures


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<80} {value}")
