"""Bulk writes, imports and generation against moto: the real adapters, real S3/SQS/DynamoDB calls.

The services are driven the way the functions drive them (S3 event notifications and queue
messages), with the queue read back from moto, so planning, ranges, checkpoints, replays,
crashes and timeouts are exercised without the HTTP stack.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import CallCounter  # type: ignore[import-not-found]
from coupons import bulk_wiring
from coupons.adapters import aws
from coupons.adapters.bulk_store import (
    CODE_TAKEN,
    CREATED,
    ID_TAKEN,
    REPLAYED,
    CouponBatchWriter,
    PendingCoupon,
)
from coupons.bulk_import import ImportService, build_record, s3_sources
from coupons.codegen import generate_code
from coupons.errors import JobNotFound
from coupons.generation import GenerationRequest, GenerationService
from coupons.jobs import derived_coupon_id, import_job_id
from coupons.models import resolve_spec
from coupons.settings import Settings, get_settings
from coupons_local import moto_patches, moto_speedups


@pytest.fixture(scope="module")
def moto_stack() -> Iterator[Any]:
    """moto in-process with the local stack's resources, once for this module (tests use their own
    keys and campaigns), patched as the local stack's emulator is."""
    from coupons_local.provision import function_environment, provision
    from moto import mock_aws

    moto_patches.apply()
    moto_speedups.apply()
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with mock_aws():
            bulk_wiring.reset()
            provisioned = provision()
            for name, value in function_environment(provisioned, {}).items():
                env.setenv(name, value)
            yield provisioned
        bulk_wiring.reset()


@pytest.fixture
def bulk(moto_stack: Any) -> Iterator[Any]:
    bulk_wiring.reset()  # settings a test changed (through monkeypatch) are read again
    yield moto_stack
    bulk_wiring.reset()


def settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bulk_wiring.reset()
    return get_settings()


def upload(provisioned: Any, key: str, body: bytes) -> dict[str, Any]:
    """Put an object and return the S3 event notification AWS would send for it."""
    bucket = provisioned.buckets["imports"]
    etag = aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag,
                                                                       "size": len(body)}}}]}


def upload_multipart(provisioned: Any, key: str, body: bytes) -> dict[str, Any]:
    """The same as `upload`, as a multipart upload: its ETag is not the MD5 of the content (nor is an
    SSE-KMS object's ETag on AWS, however it was uploaded)."""
    bucket = provisioned.buckets["imports"]
    s3 = aws.client("s3")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body)
    etag = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})["ETag"].strip('"')
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:CompleteMultipartUpload",
                         "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag,
                                                                       "size": len(body)}}}]}


def job_id_of(provisioned: Any, key: str, body: bytes) -> str:
    """The import job of these bytes under this key: derived from the content, not the ETag."""
    return import_job_id(provisioned.buckets["imports"], key, hashlib.sha256(body).hexdigest())


def drain(provisioned: Any, queue: str) -> list[dict[str, Any]]:
    url = provisioned.queues[queue]
    sqs = aws.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def results_text(provisioned: Any, key: str) -> str:
    return str(aws.client("s3").get_object(Bucket=provisioned.buckets["imports"], Key=key)["Body"].read().decode())


def results(provisioned: Any, key: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(results_text(provisioned, key))))


def campaign_count(campaign: str) -> int:
    """How many coupons the campaign holds (a COUNT query on the campaign index: no items shipped)."""
    count, start = 0, None
    while True:
        request: dict[str, Any] = {"TableName": get_settings().coupons_table, "IndexName": "gsi2",
                                   "KeyConditionExpression": "gsi2pk = :c", "Select": "COUNT",
                                   "ExpressionAttributeValues": {":c": {"S": f"CAMPAIGN#{campaign}"}}}
        if start:
            request["ExclusiveStartKey"] = start
        page = aws.client("dynamodb").query(**request)
        count += page["Count"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return count


def record(code: str, coupon_id: str) -> dict[str, Any]:
    admin = bulk_wiring.wiring.admin_service()
    from coupons.clock import utcnow

    now = utcnow()
    spec = resolve_spec({"discount_value": 10, "campaign_id": "w"}, get_settings(), now)
    return build_record(admin, spec, code=code, coupon_id=coupon_id, status="active", actor="t", now=now)


# --- the batch writer -------------------------------------------------------------------------------


class TestBatchWriter:
    def test_fifty_coupons_per_transaction_and_every_kind_of_conflict(self, bulk: Any) -> None:
        calls = CallCounter().attach("dynamodb")
        writer = bulk_wiring.batch_writer()
        # Given 120 new coupons
        rows = [PendingCoupon(i, record(f"W{i:04d}XYZ", f"id-{i}")) for i in range(120)]
        # When they are written
        outcomes = writer.write(rows, "job-a")
        # Then all are created in 3 transactions (50 + 50 + 20)
        assert {o.outcome for o in outcomes.values()} == {CREATED}
        assert calls.calls["dynamodb:TransactWriteItems"] == 3
        # Given a batch mixing replays of job-a, another job's replay, a taken code and new rows
        again = [
            PendingCoupon(0, record("W0000XYZ", "id-0")),  # job-a wrote it: a replay (same id)
            PendingCoupon(1, record("OTHERCODE1", "id-1")),  # the id exists: written before by job-a
            PendingCoupon(2, record("W0002XYZ", "fresh-2")),  # the code is taken by another coupon
            PendingCoupon(3, record("BRANDNEW3", "fresh-3")),
            PendingCoupon(4, record("BRANDNEW4", "fresh-4")),
        ]
        before = calls.calls["dynamodb:TransactWriteItems"]
        outcomes = writer.write(again, "job-a")
        assert [outcomes[i].outcome for i in range(5)] == [REPLAYED, REPLAYED, CODE_TAKEN, CREATED, CREATED]
        # the cancellation reasons name the offenders: one retry for the rest, no row-by-row pass
        assert calls.calls["dynamodb:TransactWriteItems"] - before == 2
        # and a job that did not write a pointer is told the id is taken, not that it replayed
        assert writer.write([PendingCoupon(0, record("W0000XYZ", "id-0"))], "job-b")[0].outcome == ID_TAKEN

    def test_without_cancellation_reasons_it_finds_the_offenders_row_by_row(self, bulk: Any) -> None:
        class NoReasons:
            def __init__(self, real: Any) -> None:
                self.real = real

            def transact_write_items(self, **kwargs: Any) -> Any:
                try:
                    return self.real.transact_write_items(**kwargs)
                except ClientError as error:
                    error.response.pop("CancellationReasons", None)
                    raise

            def __getattr__(self, name: str) -> Any:
                return getattr(self.real, name)

        writer = CouponBatchWriter(NoReasons(aws.client("dynamodb")), get_settings().coupons_table)
        writer.write([PendingCoupon(0, record("TAKEN-ONE", "t-1"))], "job")
        outcomes = writer.write([PendingCoupon(i, record(c, f"n-{i}")) for i, c in
                                 enumerate(["FREE-A1", "TAKEN-ONE", "FREE-B2"])], "job")
        assert [outcomes[i].outcome for i in range(3)] == [CREATED, CODE_TAKEN, CREATED]


# --- imports ----------------------------------------------------------------------------------


HEADER = "code,discount_type,discount_value,currency,campaign_id,channels"


def import_body(rows: list[str]) -> bytes:
    return ("\ufeff" + HEADER + "\r\n" + "\r\n".join(rows) + "\r\n").encode()


def mixed_rows(campaign: str, n: int) -> tuple[list[str], list[str]]:
    """n rows: valid, generated, invalid and repeated; with the status each must get."""
    rows, expected = [], []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            rows.append(f"{campaign.upper()}-{i:05d},PERCENT,10,,{campaign},web|pos")
            expected.append("created")
        elif kind == 1:
            rows.append(f",FIXED,500,usd,{campaign},")
            expected.append("created")
        elif kind == 2:
            rows.append(f"{campaign.upper()}-BAD{i},PERCENT,150,,{campaign},")
            expected.append("rejected")
        elif kind == 3:  # the code of row i-3 again, written differently
            rows.append(f"{campaign.lower()}{i - 3:05d},PERCENT,5,,{campaign},")
            expected.append("duplicate")
        else:
            rows.append(f'"=HYPERLINK(""x"")",PERCENT,10,,{campaign},')
            expected.append("rejected")
    return rows, expected


def run_import(provisioned: Any, event: dict[str, Any], *, shuffle: bool = False, **kwargs: Any) -> None:
    service = bulk_wiring.import_service()
    service.handle(event, **kwargs)
    pending = drain(provisioned, "imports")
    while pending:
        if shuffle:
            random.shuffle(pending)
        for message in pending:
            service.handle(message, **kwargs)
        pending = drain(provisioned, "imports")


class TestImport:
    def test_rows_get_their_statuses_in_order_and_a_second_upload_creates_nothing(self, bulk: Any) -> None:
        # Given an upload mixing valid, generated, invalid, repeated and formula-looking rows
        rows, expected = mixed_rows("imp1", 60)
        event = upload(bulk, "incoming/mixed.csv", import_body(rows))
        # When the import runs
        run_import(bulk, event)
        # Then every row has its status, in file order, with a coupon id when created
        got = results(bulk, "results/mixed.csv")
        assert got[0] == ["row", "status", "coupon_id", "error"]
        assert [r[0] for r in got[1:]] == [str(i) for i in range(1, 61)]
        assert [r[1] for r in got[1:]] == expected
        assert all(r[2] for r in got[1:] if r[1] == "created")
        assert all(r[3] for r in got[1:] if r[1] != "created")
        assert got[4][3] == "code: the same code is on row 1 of this file"  # row 4 repeats row 1
        created = expected.count("created")
        assert campaign_count("imp1") == created
        # and the job says the same
        job_id = job_id_of(bulk, "incoming/mixed.csv", import_body(rows))
        job = bulk_wiring.job_service().get(job_id)
        assert (job["status"], job["kind"], job["total"], job["processed"]) == ("succeeded", "import", 60, 60)
        assert job["result"]["created"] == created and job["failed"] == 60 - created
        # When the same event is delivered again, and the same bytes are uploaded under another name
        run_import(bulk, event)
        other = upload(bulk, "incoming/mixed-again.csv", import_body(rows))
        run_import(bulk, other)
        # Then nothing new exists; the copy's rows are all duplicates or rejections
        assert campaign_count("imp1") == created
        statuses = [r[1] for r in results(bulk, "results/mixed-again.csv")[1:]]
        assert statuses == ["duplicate" if s == "created" else s for s in expected]

    @pytest.mark.parametrize("range_bytes", [None, "1024"], ids=["one-range", "ranges"])
    def test_the_same_content_with_another_etag_creates_nothing_twice(self, bulk: Any, range_bytes: str | None,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        """Issue 11, hole 8: ids came from the ETag, which for SSE-KMS objects and multipart uploads is not
        a hash of the content, so a re-upload generated the codeless rows again."""
        if range_bytes:
            settings_with(monkeypatch, IMPORT_RANGE_BYTES=range_bytes, IMPORT_CHECKPOINT_ROWS="15")
        campaign = f"imp9{range_bytes or ''}"
        rows, expected = mixed_rows(campaign, 60)  # a fifth of the rows have no code
        body = import_body(rows)
        # Given a CSV uploaded once (a single PUT) and imported
        first = upload(bulk, f"incoming/{campaign}.csv", body)
        run_import(bulk, first, shuffle=True)
        created = expected.count("created")
        assert campaign_count(campaign) == created
        # When the same content is uploaded again with another ETag, under the same name and another one
        again = upload_multipart(bulk, f"incoming/{campaign}.csv", body)
        copy = upload_multipart(bulk, f"incoming/{campaign}-copy.csv", body)
        etag = lambda event: event["Records"][0]["s3"]["object"]["eTag"]  # noqa: E731
        assert etag(again) != etag(first) and etag(copy) != etag(first)
        run_import(bulk, again, shuffle=True)
        run_import(bulk, copy, shuffle=True)
        # Then nothing is created twice, rows without a code included
        assert campaign_count(campaign) == created
        statuses = [r[1] for r in results(bulk, f"results/{campaign}-copy.csv")[1:]]
        assert statuses == ["duplicate" if s == "created" else s for s in expected]

    def test_a_large_file_is_split_into_ranges_processed_in_any_order(self, bulk: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        settings_with(monkeypatch, IMPORT_RANGE_BYTES="1024", IMPORT_CHECKPOINT_ROWS="15")
        rows, expected = mixed_rows("imp2", 120)
        event = upload(bulk, "incoming/big.csv", import_body(rows))
        service = bulk_wiring.import_service()
        service.handle(event)
        messages = drain(bulk, "imports")
        assert len(messages) >= 4 and {m["type"] for m in messages} == {"import-range"}
        random.Random(7).shuffle(messages)
        for message in messages:
            service.handle(message)
        got = results(bulk, "results/big.csv")[1:]
        # Then the results are whole and in file order
        assert [r[0] for r in got] == [str(i) for i in range(1, 121)]
        # and of each repeated code (rows i and i+3) exactly one row holds it, the other names that row
        # (across parallel ranges the row written first keeps it); everything else is as in order
        statuses = [r[1] for r in got]
        for i in range(0, 120, 5):
            pair = {statuses[i], statuses[i + 3]}
            assert pair == {"created", "duplicate"}
            loser = i if statuses[i] == "duplicate" else i + 3
            winner = i + 3 if loser == i else i
            assert got[loser][3] == f"code: the same code is on row {winner + 1} of this file"
            statuses[i], statuses[i + 3] = "created", "duplicate"
        assert statuses == expected
        assert campaign_count("imp2") == expected.count("created")

    def test_a_crash_resumes_from_its_checkpoint_without_duplicates(self, bulk: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        settings_with(monkeypatch, IMPORT_CHECKPOINT_ROWS="20")
        rows, expected = mixed_rows("imp3", 60)
        event = upload(bulk, "incoming/crash.csv", import_body(rows))
        service = bulk_wiring.import_service()
        # Given a store that fails on its third transaction (after the first checkpoint)
        real = service._writer._transact
        calls = {"n": 0}

        def flaky(items: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("Lambda timed out")
            return real(items)

        monkeypatch.setattr(service._writer, "_transact", flaky)
        with pytest.raises(RuntimeError):
            service.handle(event)
        # When SQS delivers the event again
        service.handle(event, receive_count=2)
        # Then the rows are exactly as a clean run gives them, and counted once
        assert [r[1] for r in results(bulk, "results/crash.csv")[1:]] == expected
        job = bulk_wiring.job_service().get(job_id_of(bulk, "incoming/crash.csv", import_body(rows)))
        assert job["processed"] == 60 and job["result"]["created"] == expected.count("created")
        assert campaign_count("imp3") == expected.count("created")

    def test_a_checkpoint_whose_answer_was_lost_is_recognised(self, bulk: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
        # Given a commit that lands but whose answer is lost, so the SDK's retry is refused
        settings_with(monkeypatch, IMPORT_CHECKPOINT_ROWS="10")
        rows, expected = mixed_rows("imp8", 30)
        event = upload(bulk, "incoming/lost.csv", import_body(rows))
        service = bulk_wiring.import_service()
        real = service._jobs.commit
        lost = {"n": 0}

        def commit(*args: Any, **kwargs: Any) -> bool:
            landed = real(*args, **kwargs)
            lost["n"] += 1
            return landed and lost["n"] != 2

        monkeypatch.setattr(service._jobs, "commit", commit)
        # When the import runs
        service.handle(event)
        # Then it carries on past that checkpoint and finishes with every row counted once
        assert [r[1] for r in results(bulk, "results/lost.csv")[1:]] == expected
        job = bulk_wiring.job_service().get(job_id_of(bulk, "incoming/lost.csv", import_body(rows)))
        assert (job["status"], job["processed"]) == ("succeeded", 30)

    def test_near_the_timeout_it_hands_over_to_a_continuation_message(self, bulk: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        settings_with(monkeypatch, IMPORT_CHECKPOINT_ROWS="15")
        rows, expected = mixed_rows("imp4", 40)
        event = upload(bulk, "incoming/slow.csv", import_body(rows))
        service = bulk_wiring.import_service()
        service.handle(event, remaining_ms=lambda: 1_000)  # one checkpoint, then hand over
        (continuation,) = drain(bulk, "imports")
        assert continuation["type"] == "import-range"
        with pytest.raises(ClientError):  # not finished yet
            results(bulk, "results/slow.csv")
        run_import(bulk, continuation)
        assert [r[1] for r in results(bulk, "results/slow.csv")[1:]] == expected

    @pytest.mark.parametrize(("body", "words"), [
        (b"", "empty"),
        (b"code,discount_value\r\n", "no data rows"),
        (b"code,amount\r\nIMP5-A,1\r\n", "missing required column discount_value"),
        (b"code,discount_value,campaign_id,colour\r\nIMP5-B,1,imp5,red\r\n", "unknown column"),
        ("code,discount_value,campaign_id\r\nIMP5-C,1,imp5\r\nCAFÉ,1,imp5\r\n".encode("latin-1"), "UTF-8"),
        (b"code,discount_value,campaign_id\r\nIMP5-D,1,imp5\r\nX," + b"1" * 1_100_000 + b",imp5\r\n", "256 KiB"),
    ])
    def test_a_malformed_file_fails_with_a_clear_result_and_creates_nothing(self, bulk: Any, body: bytes,
                                                                            words: str) -> None:
        event = upload(bulk, "incoming/bad.csv", body)
        run_import(bulk, event)
        (header, *rows) = results(bulk, "results/bad.csv")
        assert header == ["row", "status", "coupon_id", "error"]
        assert rows and {r[1] for r in rows} == {"rejected"} and any(words in r[3] for r in rows)
        job = bulk_wiring.job_service().get(job_id_of(bulk, "incoming/bad.csv", body))
        assert job["status"] == "failed" and words in job["result"]["error"]
        assert campaign_count("imp5") == 0

    def test_an_object_replaced_before_its_import_is_left_to_its_replacement(self, bulk: Any) -> None:
        # (Before issue 11 the job id came from the ETag, so this event got a failed job; it now cannot
        # have a job at all: the id needs the content, which is gone. The new version's event imports.)
        first, second = import_body(["IMP6-A,PERCENT,10,,imp6,"]), import_body(["IMP6-B,PERCENT,10,,imp6,"])
        event = upload(bulk, "incoming/moving.csv", first)
        later = upload(bulk, "incoming/moving.csv", second)
        # When the first version's event is read after the second upload
        assert bulk_wiring.import_service().start(s3_sources(event)[0], lambda: 900_000) is None
        # Then it imports nothing and starts no job
        assert campaign_count("imp6") == 0
        with pytest.raises(JobNotFound):
            bulk_wiring.job_service().get(job_id_of(bulk, "incoming/moving.csv", first))
        # and the second version's event imports the second version
        run_import(bulk, later)
        assert [r[1] for r in results(bulk, "results/moving.csv")[1:]] == ["created"]
        assert bulk_wiring.job_service().get(job_id_of(bulk, "incoming/moving.csv", second))["status"] == "succeeded"
        assert campaign_count("imp6") == 1

    def test_a_file_without_a_header_keeps_its_codes_in_the_results_file_only(self, bulk: Any) -> None:
        """Issue 17, finding 3: `unknown column "summer-25-vip"` was the job's error, its event's and
        the marker's. The results file names the column; nothing else copies text from the file."""
        from coupons.events import Change, to_event

        codes = ["summer-25-vip", "AUTUMN-2025-GOLD", "winter_sale_99"]
        body = f"{codes[0]},PERCENT,{codes[2]}\r\n{codes[1]},PERCENT,10\r\n".encode()
        event = upload(bulk, "incoming/no-header.csv", body)
        run_import(bulk, event)
        (_, *rows) = results(bulk, "results/no-header.csv")
        assert any('unknown column "summer-25-vip"' in r[3] for r in rows)  # the results file says which
        marker = results_text(bulk, "results/no-header.csv.json")
        job_id = json.loads(marker)["job_id"]
        job = bulk_wiring.job_table().get(job_id)
        assert job is not None and job["status"] == "failed" and "unknown column" in job["error"]
        published = to_event(Change("e1", "MODIFY", "1", table="jobs", old={**job, "status": "running"}, new=job))
        assert published is not None
        view = bulk_wiring.job_service().get(job_id)
        for where, text in [("job item", json.dumps(job, default=str)), ("event", published.detail_json()),
                            ("marker", marker), ("GET /jobs", json.dumps(view))]:
            flat = text.upper().replace("-", "")
            for code in codes:
                assert code.upper().replace("-", "") not in flat, (where, code, text)


# --- generation ------------------------------------------------------------------------------------


def run_generation(provisioned: Any, service: GenerationService) -> None:
    pending = drain(provisioned, "generation")
    while pending:
        for message in pending:
            service.handle(message)
        pending = drain(provisioned, "generation")


def export_rows(job: dict[str, Any]) -> list[list[str]]:
    result = job["result"]
    body = aws.client("s3").get_object(Bucket=result["export_bucket"], Key=result["export_key"])
    assert body["ServerSideEncryption"] == "aws:kms"
    return list(csv.reader(io.StringIO(body["Body"].read().decode())))


class TestGeneration:
    def test_codes_are_unique_stored_and_exported(self, bulk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        settings_with(monkeypatch, GENERATION_BATCH_SIZE="40")
        service = bulk_wiring.generation_service()
        request = GenerationRequest.model_validate({"count": 100, "template": {"discount_value": 15},
                                                    "pattern": "GEN-####-####-####"})
        job_id = service.start("gen1", request, "alice")
        run_generation(bulk, service)
        job = bulk_wiring.job_service().get(job_id)
        assert (job["status"], job["total"], job["processed"], job["failed"]) == ("succeeded", 100, 100, 0)
        header, *rows = export_rows(job)
        assert header == ["code", "coupon_id"]
        codes = [code for code, _ in rows]
        assert len(set(codes)) == 100 and all(c.startswith("GEN-") and len(c) == 18 for c in codes)
        admin = bulk_wiring.wiring.admin_service()
        for code, coupon_id in rows[:10]:
            found = admin.find_by_code(code)
            assert found is not None and found["id"] == coupon_id and found["campaign_id"] == "gen1"
        assert campaign_count("gen1") == 100
        assert job["result"]["export_url"].startswith("http")

    def test_a_collision_is_drawn_again_and_a_redelivered_batch_writes_nothing_twice(
            self, bulk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        settings_with(monkeypatch, GENERATION_BATCH_SIZE="30")
        taken = bulk_wiring.generation_service()
        first = taken.start("gen0", GenerationRequest.model_validate(
            {"count": 1, "template": {"discount_value": 5}}), "alice")
        run_generation(bulk, taken)
        ((existing, _),) = export_rows(bulk_wiring.job_service().get(first))[1:]
        # Given a code source whose first draw is a code that exists already
        draws = iter([existing])
        base = bulk_wiring.generation_service()
        service = GenerationService(admin=bulk_wiring.wiring.admin_service(), cipher=bulk_wiring.wiring.cipher,
                                    writer=base._writer, jobs=base._jobs, objects=base._objects,
                                    queue=base._queue, settings=get_settings(),
                                    code_source=lambda pattern: next(draws, None) or generate_code(pattern))
        job_id = service.start("gen2", GenerationRequest.model_validate(
            {"count": 60, "template": {"discount_value": 5}}), "alice")
        service.handle(drain(bulk, "generation")[0])  # the plan
        batches = drain(bulk, "generation")
        # and a first batch whose delivery dies after its writes, before its checkpoint
        real_put = service._objects.put
        monkeypatch.setattr(service._objects, "put", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError):
            service.handle(batches[0])
        monkeypatch.setattr(service._objects, "put", real_put)
        # When every batch is delivered (the first one again)
        for message in batches:
            service.handle(message, receive_count=2)
        # Then 60 distinct codes exist for the campaign, none of them the taken one, all exported
        job = bulk_wiring.job_service().get(job_id)
        assert (job["status"], job["processed"], job["result"]["created"]) == ("succeeded", 60, 60)
        codes = [code for code, _ in export_rows(job)[1:]]
        assert len(set(codes)) == 60 and existing not in codes
        assert campaign_count("gen2") == 60


def test_derived_ids_make_bulk_rows_idempotent_across_id_formats(bulk: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_with(monkeypatch, COUPON_ID_FORMAT="alphanumeric")
    service: ImportService = bulk_wiring.import_service()
    body = import_body(["IMP7-A,PERCENT,10,,imp7,"])
    service.handle(upload(bulk, "incoming/alnum.csv", body))
    (row,) = results(bulk, "results/alnum.csv")[1:]
    digest = hashlib.sha256(body).hexdigest()
    assert row[2] == derived_coupon_id(settings.coupon_id_format, f"import/{bulk.buckets['imports']}/{digest}/1")
    assert len(row[2]) == 20
