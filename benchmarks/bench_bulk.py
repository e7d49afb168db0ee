"""Bulk import and generation: throughput, memory, DynamoDB calls, and the plan of a 1,000,000-code job.

1. **Import, CPU only** (`import_parse_validate_rows_per_s`): the per-row work of the import
   function (record split, CSV parse, the POST /coupons model, defaults, blind index and
   AES-GCM sealing, the stored item's serialisation), no store.
2. **Import through moto in-process** (`BENCH_BULK_MOTO_ROWS`, default 2,000 rows): the real
   ImportService, S3 object, transactions, checkpoints and results file; plus the DynamoDB
   write calls it made per 100 rows, counted with botocore's event hooks.
3. **Peak RSS at 20,000 and 200,000 rows**: each in its own subprocess (ru_maxrss), the real
   import pipeline streaming the CSV from a file on disk, writes answered by a store that
   keeps nothing (so the figure is the importer's own memory, not the emulator's tables).
   Streaming means the 200k figure stays within 1.2x the 20k one.
4. **Generation**: `generate_code` alone, and a job end to end through moto in-process
   (`BENCH_BULK_MOTO_CODES`, default 3,000: plan, batches, export assembly).
5. **A 1,000,000-code job's plan** at DynamoDB's limits (the README's table), computed from
   the stored item sizes measured here.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MOTO_ROWS = int(os.environ.get("BENCH_BULK_MOTO_ROWS", "2000"))
MOTO_CODES = int(os.environ.get("BENCH_BULK_MOTO_CODES", "3000"))
RSS_ROWS = (20_000, 200_000)
CPU_ROWS = 5_000
ROOT = Path(__file__).resolve().parents[1]


def csv_rows(count: int, tag: str = "B") -> Iterator[bytes]:
    yield b"code,discount_type,discount_value,currency,channels,campaign_id\r\n"
    for i in range(count):
        if i % 4 == 3:
            yield f",FIXED,500,USD,web|pos,{tag.lower()}\r\n".encode()  # a generated code
        else:
            yield f"{tag}{i:07d}-X,PERCENT,{5 + i % 50},,web,{tag.lower()}\r\n".encode()


# --- fakes that keep nothing (memory figure) ----------------------------------------------------


class NullWriter:
    transactions = 0

    def write(self, pending: list[Any], job_id: str) -> dict[int, Any]:
        from coupons.adapters.bulk_store import CREATED, WriteResult, coupon_item, pointer_item, to_item

        self.transactions += (len(pending) + 49) // 50
        for row in pending:  # serialise as the real writer does, then drop
            to_item(coupon_item(row.record))
            to_item(pointer_item(row.record, job_id, row.ref))
        return {row.ref: WriteResult(CREATED) for row in pending}


class MemoryJobs:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.items.get((job_id, "JOB"))

    def get_checkpoint(self, job_id: str, name: str) -> dict[str, Any] | None:
        return self.items.get((job_id, name))

    def create(self, job: dict[str, Any]) -> bool:
        self.items[(job["job_id"], "JOB")] = dict(job)
        return True

    def update(self, job_id: str, values: dict[str, Any], *, only_if_active: bool = True) -> bool:
        self.items[(job_id, "JOB")].update(values)
        return True

    def finish(self, job_id: str, status: str, values: dict[str, Any]) -> bool:
        return self.update(job_id, {**values, "status": status})

    def commit(self, job_id: str, checkpoint: str, *, seq: int, state: dict[str, Any], add: dict[str, int],
               values: dict[str, Any]) -> bool:
        self.items[(job_id, checkpoint)] = {**state, "seq": seq + 1}
        job = self.items[(job_id, "JOB")]
        for field, amount in add.items():
            job[field] = int(job.get(field, 0)) + amount
        job.update(values)
        return True


class FileObjects:
    """The source object read from disk in chunks; everything written is counted and dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self.keys_written: list[str] = []

    def stream(self, bucket: str, key: str, *, etag: Any = None, version_id: Any = None, start: int = 0,
               end: int | None = None) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            handle.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = handle.read(256 * 1024 if left is None else min(256 * 1024, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def put(self, bucket: str, key: str, body: bytes, **_: Any) -> None:
        self.written += len(body)
        self.keys_written.append(key)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        return [k for k in self.keys_written if k.startswith(prefix)]

    def listing(self, bucket: str, prefix: str, **_: Any) -> list[tuple[str, int]]:
        return [(k, 0) for k in self.keys(bucket, prefix)]  # their bodies were dropped

    def concatenate(self, bucket: str, dest: str, head: bytes, sources: list[str], **_: Any) -> int:
        return len(head)

    def delete(self, bucket: str, keys: list[str]) -> None:
        return None


def _stream_import(rows: int) -> dict[str, Any]:
    """Run in a subprocess: import `rows` rows from a file with the keep-nothing fakes."""
    from coupons.admin import AdminService
    from coupons.bulk_import import ImportService, SourceObject
    from coupons.crypto import CodeCipher
    from coupons.settings import Settings

    path = Path(tempfile.mkdtemp()) / "rows.csv"
    with path.open("wb") as handle:
        for line in csv_rows(rows):
            handle.write(line)
    cipher = CodeCipher({1: os.urandom(32)}, 1)
    settings = Settings(import_range_bytes=1 << 40)  # one range: the memory of one streaming run
    admin = AdminService(None, lambda: cipher, settings)  # type: ignore[arg-type]
    objects = FileObjects(path)
    service = ImportService(admin=admin, writer=NullWriter(), jobs=MemoryJobs(), objects=objects,  # type: ignore[arg-type]
                            queue=None, settings=settings)  # type: ignore[arg-type]
    started = time.perf_counter()
    job_id = service.start(SourceObject("bench", "incoming/rows.csv", "etag"), lambda: 900_000)
    elapsed = time.perf_counter() - started
    job = service._jobs.get(job_id or "")
    assert job is not None and job["status"] == "succeeded" and job["created"] == rows, job
    path.unlink()
    return {"rows": rows, "seconds": elapsed, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "file_bytes": sum(len(line) for line in csv_rows(rows))}


def peak_rss() -> dict[str, Any]:
    figures: dict[str, Any] = {}
    results = {}
    for rows in RSS_ROWS:
        out = subprocess.run([sys.executable, "-c", f"import json, benchmarks.bench_bulk as b; "
                              f"print(json.dumps(b._stream_import({rows})))"],
                             capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "POWERTOOLS_TRACE_DISABLED": "true",
                                  "POWERTOOLS_METRICS_DISABLED": "true"})
        results[rows] = json.loads(out.stdout.strip().splitlines()[-1])
        figures[f"import_peak_rss_mb_{rows // 1000}k_rows"] = round(results[rows]["maxrss_kb"] / 1024, 1)
        figures[f"import_file_mb_{rows // 1000}k_rows"] = round(results[rows]["file_bytes"] / 1e6, 1)
    small, large = (results[r]["maxrss_kb"] for r in RSS_ROWS)
    figures["import_rss_ratio_200k_over_20k (goal <= 1.2)"] = round(large / small, 3)
    figures["import_rows_per_s_no_store_200k"] = round(RSS_ROWS[1] / results[RSS_ROWS[1]]["seconds"])
    return figures


# --- CPU only -------------------------------------------------------------------------------------


def parse_validate() -> dict[str, Any]:
    from coupons.adapters.bulk_store import coupon_item, pointer_item, to_item
    from coupons.admin import AdminService
    from coupons.bulk_import import build_record, iter_records, parse_header, validate_row
    from coupons.clock import utcnow
    from coupons.codegen import generate_code
    from coupons.crypto import CodeCipher
    from coupons.settings import Settings

    cipher = CodeCipher({1: os.urandom(32)}, 1)
    settings = Settings()
    admin = AdminService(None, lambda: cipher, settings)  # type: ignore[arg-type]
    def one_pass(rows: int) -> float:
        body = b"".join(csv_rows(rows))
        started = time.perf_counter()
        records = iter_records([body[i:i + 65536] for i in range(0, len(body), 65536)])
        header = parse_header(next(records).data)
        now = utcnow()
        for n, record in enumerate(records):
            request, spec = validate_row(header, record.data, settings, now)
            built = build_record(admin, spec, code=request.code or generate_code(), coupon_id=f"id-{n}",
                                 status="active", actor="bench", now=now)
            to_item(coupon_item(built))
            to_item(pointer_item(built, "job", n))
        return time.perf_counter() - started

    one_pass(200)  # warm up: pydantic and the cipher build their state on first use
    return {"import_parse_validate_rows_per_s (CPU only, no store)": round(CPU_ROWS / one_pass(CPU_ROWS))}


# --- through moto -----------------------------------------------------------------------------


class _Moto:
    def __enter__(self) -> Any:
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true",
                           "POWERTOOLS_METRICS_DISABLED": "true"})
        os.environ.pop("AWS_ENDPOINT_URL", None)
        from coupons import bulk_wiring
        from coupons_local import moto_patches, moto_speedups
        from coupons_local.provision import function_environment, provision
        from moto import mock_aws

        moto_patches.apply()
        moto_speedups.apply()
        self.mock = mock_aws()
        self.mock.start()
        bulk_wiring.reset()
        self.provisioned = provision()
        os.environ.update(function_environment(self.provisioned, {}))
        bulk_wiring.reset()
        return self

    def __exit__(self, *_: Any) -> None:
        from coupons import bulk_wiring

        bulk_wiring.reset()
        self.mock.stop()

    def drain(self, queue: str) -> list[dict[str, Any]]:
        from coupons.adapters import aws

        sqs, url, bodies = aws.client("sqs"), self.provisioned.queues[queue], []
        while True:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


WRITES = ("TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem")


def through_moto() -> dict[str, Any]:
    from coupons import bulk_wiring
    from coupons.adapters import aws
    from coupons.generation import GenerationRequest

    figures: dict[str, Any] = {}
    with _Moto() as moto:
        calls: dict[str, int] = {}

        def count(model: Any, **_: Any) -> None:
            calls[model.name] = calls.get(model.name, 0) + 1

        aws.client("dynamodb").meta.events.register("before-call.dynamodb.*", count)
        body = b"".join(csv_rows(MOTO_ROWS, "M"))
        bucket = moto.provisioned.buckets["imports"]
        etag = aws.client("s3").put_object(Bucket=bucket, Key="incoming/bench.csv", Body=body)["ETag"].strip('"')
        event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": bucket}, "object": {"key": "incoming/bench.csv", "eTag": etag, "size": len(body)}}}]}
        started = time.perf_counter()
        bulk_wiring.import_service().handle(event)
        elapsed = time.perf_counter() - started
        writes = sum(n for name, n in calls.items() if name in WRITES)
        figures[f"import_rows_per_s_moto_in_process ({MOTO_ROWS} rows)"] = round(MOTO_ROWS / elapsed)
        figures["import_dynamodb_write_calls_per_100_rows"] = round(100 * writes / MOTO_ROWS, 2)
        figures["import_dynamodb_calls_per_100_rows (all)"] = round(100 * sum(calls.values()) / MOTO_ROWS, 2)
        figures["import_transact_write_items_per_100_rows"] = round(
            100 * calls.get("TransactWriteItems", 0) / MOTO_ROWS, 2)

        service = bulk_wiring.generation_service()
        request = GenerationRequest.model_validate({"count": MOTO_CODES, "template": {"discount_value": 10}})
        started = time.perf_counter()
        job_id = service.start("bench", request, "bench")
        pending = moto.drain("generation")
        while pending:
            for message in pending:
                service.handle(message)
            pending = moto.drain("generation")
        elapsed = time.perf_counter() - started
        job = bulk_wiring.job_service().get(job_id)
        assert job["status"] == "succeeded" and job["processed"] == MOTO_CODES, job
        figures[f"generation_codes_per_s_moto_in_process ({MOTO_CODES} codes)"] = round(MOTO_CODES / elapsed)
        figures.update(item_sizes())
    return figures


def item_sizes() -> dict[str, Any]:
    """Stored sizes of a coupon and its pointer (DynamoDB counts names + values), as generation writes them."""
    from coupons import bulk_wiring
    from coupons.adapters.bulk_store import coupon_item, pointer_item
    from coupons.bulk_import import build_record
    from coupons.clock import utcnow
    from coupons.codegen import generate_code
    from coupons.models import resolve_spec
    from coupons.settings import get_settings

    now = utcnow()
    spec = resolve_spec({"discount_value": 10, "campaign_id": "spring-2026"}, get_settings(), now)
    record = build_record(bulk_wiring.wiring.admin_service(), spec, code=generate_code(),
                          coupon_id="2c39ece7-02b4-5eb5-9357-0474aaf2ded1", status="active", actor="admin-user-1",
                          now=now)

    def size(item: dict[str, Any]) -> int:
        from coupons.adapters.dynamo import to_item

        return len(json.dumps(to_item(item), separators=(",", ":")).encode())  # an upper bound of the billed size

    return {"coupon_item_bytes (upper bound)": size(coupon_item(record)),
            "pointer_item_bytes (upper bound)": size(pointer_item(record, "gen-0123456789abcdef", 999))}


# --- generation alone and the 1M plan --------------------------------------------------------------


def generator() -> dict[str, Any]:
    from coupons.codegen import generate_code

    count = 200_000
    started = time.perf_counter()
    for _ in range(count):
        generate_code()
    return {"generate_code_per_s (####-####-####)": round(count / (time.perf_counter() - started))}


def million_plan(coupon_bytes: int, pointer_bytes: int) -> dict[str, Any]:
    codes, batch, per_tx, indexes = 1_000_000, 1000, 50, 3  # a coupon is in gsi1, gsi2 and gsi3
    coupon_kb, pointer_kb = -(-coupon_bytes // 1024), -(-pointer_bytes // 1024)
    table_wru = 2 * coupon_kb + 2 * pointer_kb  # transactional writes: 2 per KB per item
    index_wru = indexes * coupon_kb  # each index has its own capacity
    return {
        "plan_1m_batches (messages)": codes // batch,
        "plan_1m_transactions": codes // per_tx,
        "plan_1m_items_written": 2 * codes,
        "plan_1m_table_wru_per_coupon": table_wru,
        "plan_1m_index_wru_per_coupon (3 GSIs)": index_wru,
        "plan_1m_minutes_at_4000_wru_per_s (a new on-demand table)": round(codes * table_wru / 4000 / 60, 1),
        "plan_1m_minutes_at_40000_wru_per_s (the table quota)": round(codes * table_wru / 40000 / 60, 1),
        "plan_1m_write_cost_usd (on-demand, $0.625/M WRU)": round(codes * (table_wru + index_wru) * 0.625 / 1e6, 2),
    }


def run() -> dict[str, object]:
    figures: dict[str, object] = {}
    figures.update(parse_validate())
    figures.update(generator())
    figures.update(peak_rss())
    moto = through_moto()
    figures.update(moto)
    figures.update(million_plan(int(moto["coupon_item_bytes (upper bound)"]),
                                int(moto["pointer_item_bytes (upper bound)"])))
    return figures
