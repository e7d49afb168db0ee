"""Finance reports at 100,000 redemptions a day: the daily report, and a year's summary.

Items are made by the checkout store's own `redemption_item` (5 % rolled back the
same day), so they have the exact stored shape and index keys.

1. **100,000 redemptions through the real DynamoDB adapter.** `DynamoReportSource`
   (8 + 8 sharded day-index partitions, 1 MB pages, merge, decoding) reads them from
   `WireIndex`, an in-memory stand-in that answers Query with DynamoDB JSON pages
   exactly as DynamoDB pages them; the report writes its CSV, summary.json and chart
   to a sink that counts bytes. Timed, then run again under tracemalloc for the peak
   heap of the report itself (the stored items are allocated before tracing starts).
   `GET /reports/summary` for that day is timed the same way.
2. **A 365-day `GET /reports/summary`** (issue 17): the daily job keeps the day's aggregate
   through the real `DynamoAggregateStore` (into `AggregateTable`, an in-memory reports
   table answering Query/PutItem/BatchWriteItem in wire format with 1 MB pages); the 364
   days before it are kept as that same real aggregate re-keyed to each day (what the
   01:00 job leaves; building 36.5 million redemptions is not needed to measure the read).
   The range ending on that day, at 23:00 (so the 100,000 redemptions of "today" are read
   live), and the range ending the day before (all kept), are timed with their Query counts;
   then the same with 5,000 different coupons every day (1.8 million coupons in the year:
   the merge grows with coupons per day, not redemptions). The old way re-read every day:
   its Query count is one day's times 365, its time one day's times 365.
3. **The same path end to end through moto** (seeded with BatchWriteItem; the
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
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

REDEMPTIONS = int(os.environ.get("BENCH_REPORT_REDEMPTIONS", "100000"))
MOTO_REDEMPTIONS = int(os.environ.get("BENCH_REPORT_MOTO_REDEMPTIONS", "2000"))
ROLLBACK_SHARE = 0.05
DAY = date(2026, 3, 14)
PAGE_BYTES = 1024 * 1024  # DynamoDB's Query page
NEXT_1AM = timedelta(days=1, hours=1)  # when the daily job runs for a day
RANGE_DAYS = 365
CHURN_COUPONS = 5000  # the heavier year: this many different coupons every day


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

    @contextmanager
    def open_stream(self, key: str, content_type: str) -> Iterator[Any]:
        sizes = self.sizes
        sizes[key] = 0

        class Stream:
            def write(self, data: bytes) -> None:
                sizes[key] += len(data)

        yield Stream()


def _wire_size(wire: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it, near enough (binary attributes by their length)."""
    return sum(len(name) + (len(value["B"]) if "B" in value else len(json.dumps(value)))
               for name, value in wire.items())


class AggregateTable:
    """The reports table in memory: Query (pk, sk BETWEEN), PutItem, BatchWriteItem, in wire format."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.queries = 0

    def put_item(self, **request: Any) -> dict[str, Any]:
        item = request["Item"]
        old = self.items.get((item["pk"]["S"], item["sk"]["S"]))
        self.items[(item["pk"]["S"], item["sk"]["S"])] = item
        return {"Attributes": old} if old and request.get("ReturnValues") == "ALL_OLD" else {}

    def batch_write_item(self, **request: Any) -> dict[str, Any]:
        for writes in request["RequestItems"].values():
            for write in writes:
                if "PutRequest" in write:
                    self.put_item(Item=write["PutRequest"]["Item"])
                else:
                    key = write["DeleteRequest"]["Key"]
                    self.items.pop((key["pk"]["S"], key["sk"]["S"]), None)
        return {"UnprocessedItems": {}}

    def query(self, **request: Any) -> dict[str, Any]:
        self.queries += 1
        values = request["ExpressionAttributeValues"]
        pk, low, high = values[":pk"]["S"], values[":low"]["S"], values[":high"]["S"]
        start = request.get("ExclusiveStartKey", {}).get("sk", {}).get("S", "")
        rows = sorted((sk, item) for (p, sk), item in self.items.items() if p == pk and low <= sk <= high
                      and sk > start)
        page: list[dict[str, Any]] = []
        used = 0
        for _sk, item in rows:
            size = _wire_size(item)
            if page and used + size > PAGE_BYTES:
                return {"Items": page, "LastEvaluatedKey": {"pk": {"S": pk}, "sk": {"S": page[-1]["sk"]["S"]}}}
            page.append(item)
            used += size
        return {"Items": page}


class Tables:
    """One DynamoDB client for the report: the day indexes (WireIndex) and the reports table."""

    def __init__(self, index: WireIndex, reports: AggregateTable) -> None:
        self.index, self.reports = index, reports
        self.index_queries = 0

    def query(self, **request: Any) -> dict[str, Any]:
        if request["TableName"] == "coupons-reports":
            return self.reports.query(**request)
        self.index_queries += 1
        return self.index.query(**request)

    def put_item(self, **request: Any) -> dict[str, Any]:
        return self.reports.put_item(**request)

    def batch_write_item(self, **request: Any) -> dict[str, Any]:
        return self.reports.batch_write_item(**request)


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
    from coupons import report_files
    from coupons.adapters import aws
    from coupons.adapters.dynamo import chunks, to_item
    from coupons.adapters.report_store import DynamoAggregateStore, DynamoReportSource, S3ReportSink
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
            result = report_files.daily_report(source, S3ReportSink(s3, "coupons-reports"), DAY,
                                               store=DynamoAggregateStore(dynamodb, "coupons-reports"),
                                               now=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + NEXT_1AM)
            elapsed = time.perf_counter() - started
            stored = s3.list_objects_v2(Bucket="coupons-reports", Prefix=f"daily/{DAY.isoformat()}/")
            assert len(stored.get("Contents", [])) == 4
            assert result["redemptions"] == MOTO_REDEMPTIONS and result["aggregate_stored"]
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


def _at(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _timed_summary(source: Any, store: Any, tables: Tables, first: date, last: date) -> dict[str, Any]:
    """One GET /reports/summary at 23:00 on DAY: wall, CPU, Queries per table, then its peak heap."""
    from coupons import report_range

    def ask() -> dict[str, Any]:
        return report_range.summary(source, first, last, store=store, now=_at(DAY, 23),
                               budget_seconds=report_range.SUMMARY_BUDGET_SECONDS)

    gc.collect()
    kept_before, index_before = tables.reports.queries, tables.index_queries
    started, cpu = time.perf_counter(), time.process_time()
    body = ask()
    figures: dict[str, Any] = {"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                               "kept": tables.reports.queries - kept_before,
                               "live": tables.index_queries - index_before}
    gc.collect()
    tracemalloc.start()
    ask()
    figures["peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    figures["body"] = body
    return figures


def _year(source: Any, store: Any, tables: Tables, day_totals: dict[str, int], one_day: dict[str, float]
          ) -> dict[str, object]:
    """Issue 17: a 365-day range from kept days (plus today live), and what re-reading every day costs."""
    from coupons import reports

    kept = reports.Aggregate.from_kept(store.load(DAY, DAY)[DAY])
    for n in range(1, RANGE_DAYS + 1):  # the 365 days before DAY, as the 01:00 job leaves them
        store.save(DAY - timedelta(days=n), kept)
    _progress("365 days kept")
    year_to_today = _timed_summary(source, store, tables, DAY - timedelta(days=RANGE_DAYS - 1), DAY)
    assert year_to_today["body"]["redemptions"] == RANGE_DAYS * REDEMPTIONS
    assert year_to_today["body"]["discount_totals"] == {c: RANGE_DAYS * v for c, v in day_totals.items()}
    year_kept = _timed_summary(source, store, tables, DAY - timedelta(days=RANGE_DAYS), DAY - timedelta(days=1))
    assert year_kept["body"]["redemptions"] == RANGE_DAYS * REDEMPTIONS and year_kept["live"] == 0

    rng = random.Random(11)
    for n in range(1, RANGE_DAYS + 1):  # the heavier year: different coupons every day
        day = DAY - timedelta(days=n)
        churn = reports.Aggregate(total=reports.Totals(20 * CHURN_COUPONS, 0, {"USD": 0}))
        for k in range(CHURN_COUPONS):
            amount = rng.randrange(100, 100_000)
            churn.by_coupon[f"{day.isoformat()}-{k:05d}-{rng.getrandbits(64):016x}"] = reports.Totals(
                20, 0, {"USD": amount})
            churn.total.discount["USD"] += amount
        churn.by_channel["web"] = reports.Totals(churn.total.redemptions, 0, dict(churn.total.discount))
        store.save(day, churn)
    _progress(f"365 days of {CHURN_COUPONS} coupons kept")
    churned = _timed_summary(source, store, tables, DAY - timedelta(days=RANGE_DAYS), DAY - timedelta(days=1))
    assert churned["body"]["redemptions"] == RANGE_DAYS * 20 * CHURN_COUPONS
    assert churned["body"]["by_coupon_truncated"] is True

    return {
        "365-day summary, 364 kept days + today's 100,000 live, wall (s)": round(year_to_today["wall"], 2),
        "  CPU (s)": round(year_to_today["cpu"], 2),
        "  Queries: kept days (month partitions, 1 MB pages)": year_to_today["kept"],
        "  Queries: today's day index (16 partitions + 2 guards)": year_to_today["live"],
        "  peak Python heap (MB)": round(year_to_today["peak"] / 1e6, 1),
        "365-day summary ending yesterday, all 365 days kept, wall (s)": round(year_kept["wall"], 2),
        "  CPU (s) ": round(year_kept["cpu"], 2),
        "  Queries (all on kept days) ": year_kept["kept"],
        "  peak Python heap (MB) ": round(year_kept["peak"] / 1e6, 1),
        f"same, {CHURN_COUPONS} different coupons every day (1.8 M in the year), wall (s)":
            round(churned["wall"], 2),
        "  CPU (s)  ": round(churned["cpu"], 2),
        "  Queries  ": churned["kept"],
        "  peak Python heap (MB)  ": round(churned["peak"] / 1e6, 1),
        "before (every day re-read): Queries for 365 days (one day's x 365)": one_day["queries"] * RANGE_DAYS,
        "before: wall for 365 days (one day's x 365, s)": round(one_day["wall"] * RANGE_DAYS),
    }


def run() -> dict[str, object]:
    from coupons import report_files, report_range
    from coupons.adapters.report_store import DynamoAggregateStore, DynamoReportSource

    started = time.perf_counter()
    index = WireIndex(_items(REDEMPTIONS))
    built = time.perf_counter() - started
    _progress(f"{REDEMPTIONS} redemptions indexed")
    tables = Tables(index, AggregateTable())
    source = DynamoReportSource(tables, "coupons", "coupons-guards")
    store = DynamoAggregateStore(tables, "coupons-reports")

    gc.collect()
    sink = CountingSink()
    started, cpu = time.perf_counter(), time.process_time()
    result = report_files.daily_report(source, sink, DAY, store=store, now=_at(DAY) + NEXT_1AM)
    report_seconds, report_cpu = time.perf_counter() - started, time.process_time() - cpu
    assert result["aggregate_stored"]
    gc.collect()
    tracemalloc.start()
    report_files.daily_report(source, CountingSink(), DAY)
    _, report_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    queries_before = tables.index_queries
    started, cpu = time.perf_counter(), time.process_time()
    summary = report_range.summary(source, DAY, DAY)
    summary_seconds, summary_cpu = time.perf_counter() - started, time.process_time() - cpu
    day_queries = tables.index_queries - queries_before
    assert summary["redemptions"] == REDEMPTIONS
    assert summary["discount_totals"] == result["discount_totals"]
    gc.collect()
    tracemalloc.start()
    report_range.summary(source, DAY, DAY)
    _, summary_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pages = sum(-(-sum(r[2] for r in rows) // PAGE_BYTES) for rows in index.partitions.values())
    _progress("report done; now a year's summary")
    year = _year(source, store, tables, result["discount_totals"], {"queries": day_queries, "wall": summary_seconds})
    del index, source, tables, store
    _progress("year done; now through moto")

    figures: dict[str, object] = {
        "redemptions in the day (5 % rolled back the same day)": REDEMPTIONS,
        "CSV rows (redemptions + rollbacks)": result["rows"],
        "CSV size (MB)": round(sink.sizes[f"daily/{DAY.isoformat()}/redemptions.csv"] / 1e6, 1),
        "day-index Query pages read (16 partitions, 1 MB pages)": pages,
        "building the in-memory wire index (s, not part of the report)": round(built, 1),
        "daily report: CSVs + summary.json + chart + kept day, wall (s)": round(report_seconds, 2),
        "  CPU time of the report (s)": round(report_cpu, 2),
        "  peak Python heap of the report (MB)": round(report_peak / 1e6, 1),
        "GET /reports/summary for that day, read live, wall (s)": round(summary_seconds, 2),
        "  CPU time of the summary (s)": round(summary_cpu, 2),
        "  Queries of the summary (day index + guards)": day_queries,
        "  peak Python heap of the summary (MB)": round(summary_peak / 1e6, 1),
    }
    figures.update(year)
    figures.update(_through_moto())
    return figures


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<80} {value}")
