"""Bulk end to end through `coupons-local serve`: uploads to the emulated S3, the S3 notification,
SQS, the import and generation workers, the jobs API, presigned export URLs.

One stack of its own (bulk jobs write thousands of coupons and events; other tests' tap queue and
timings stay out of it), with small import ranges so the 1,000-row upload is split into ranges that
run in parallel, as a large file is on AWS.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from conftest import LocalStack, start_stack, unique
from coupons_local import tokens

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("bulk")]

RANGE_BYTES = 24 * 1024
ORDER = {"currency": "USD", "items": [{"product_id": "p1", "category": "shoes", "unit_price": 10_000,
                                       "quantity": 1}]}


class Bulk:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        info = stack.info()
        self.buckets = info["buckets"]
        self.queues = info["queues"]
        self.s3 = self._client(info, "s3")
        self.sqs = self._client(info, "sqs")
        self.dynamodb = self._client(info, "dynamodb")
        self.coupons_table = info["tables"]["coupons"]
        self.customer = tokens.issue("bulk-shopper", email="shopper@example.com")

    @staticmethod
    def _client(info: dict[str, Any], service: str) -> Any:
        return boto3.client(service, endpoint_url=info["aws_endpoint"], region_name=info["region"],
                            aws_access_key_id="local", aws_secret_access_key="local")

    def upload(self, name: str, body: bytes) -> str:
        self.stack.record_csv(body)  # its codes must never reach a table, an event or a log
        return str(self.s3.put_object(Bucket=self.buckets["imports"], Key=f"incoming/{name}", Body=body)["ETag"])

    def upload_multipart(self, name: str, body: bytes) -> str:
        """The same bytes with another ETag (not their MD5), as SSE-KMS objects always have on AWS."""
        self.stack.record_csv(body)
        bucket, key = self.buckets["imports"], f"incoming/{name}"
        upload_id = self.s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        part = self.s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body)
        return str(self.s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})["ETag"])

    def result(self, name: str, *, timeout: float = 240) -> tuple[list[list[str]], dict[str, Any]]:
        """results/<name> once the job is over, and the job (found through results/<name>.json)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                marker = json.loads(self.s3.get_object(Bucket=self.buckets["imports"],
                                                       Key=f"results/{name}.json")["Body"].read())
                job = self.stack.admin("GET", f"/jobs/{marker['job_id']}").body
                if job["status"] in ("succeeded", "failed"):
                    obj = self.s3.get_object(Bucket=self.buckets["imports"], Key=f"results/{name}")
                    assert obj["Metadata"]["job-id"] == job["job_id"]
                    return list(csv.reader(io.StringIO(obj["Body"].read().decode()))), job
            except self.s3.exceptions.NoSuchKey:
                pass
            assert time.monotonic() < deadline, f"no result for {name}"
            time.sleep(0.5)

    def queues_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.queues["imports"], AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            if not any(int(v) for v in attributes.values()):
                return
            assert time.monotonic() < deadline
            time.sleep(0.5)

    def campaign_size(self, campaign: str) -> int:
        """Coupons in a campaign: a COUNT query on the emulated table's campaign index (no items shipped)."""
        pages = self.dynamodb.get_paginator("query").paginate(
            TableName=self.coupons_table, IndexName="gsi2", KeyConditionExpression="gsi2pk = :c",
            ExpressionAttributeValues={":c": {"S": f"CAMPAIGN#{campaign}"}}, Select="COUNT")
        return sum(page["Count"] for page in pages)

    def validates(self, code: str) -> bool:
        answer = self.stack.request("POST", "/coupons/validate", {"code": code, "channel": "web", "order": ORDER},
                                    token=self.customer)
        assert answer.status in (200, 422), answer.body
        return answer.status == 200 and answer.body["valid"] is True


@pytest.fixture(scope="module")
def bulk() -> Iterator[Bulk]:
    stack = start_stack({"IMPORT_RANGE_BYTES": str(RANGE_BYTES), "IMPORT_CHECKPOINT_ROWS": "100"}, seed=False)
    try:
        yield Bulk(stack)
    finally:
        stack.stop()


# --- the 1,000-row upload --------------------------------------------------------------------------

INVALID = [  # (the cells between the code and the campaign, what the error names)
    ("PERCENT,abc,,,", "discount_value"),
    ("PERCENT,150,,,", "discount_value"),
    ("FIXED,500,,,", "currency"),
    ("FIXED,500,XYZ,,", "currency"),
    ("FIXED,12.5,USD,,", "discount_value"),
    ("PERCENT,10,,2027-01-01T00:00:00,", "expires_at"),
    ("PERCENT,10,,2001-01-01T00:00:00Z,", "expires_at"),
    ("PERCENT,10,,,sms", "channels.0"),
    ("PERCENT,10,,,web,extra", "the row has"),
    ("PERCENT,10,,", "the row has"),
    ("percent,10,,,", "discount_type"),
]


def thousand_rows(tag: str, existing: list[str]) -> tuple[bytes, list[str], list[tuple[int, int]], dict[int, str]]:
    """1,000 rows of every kind; their statuses; the (first, repeat) row pairs; words each error has."""
    header = "code,discount_type,discount_value,currency,expires_at,channels,campaign_id"
    rows: list[str] = []
    expected: list[str] = []
    errors: dict[int, str] = {}
    pairs: list[tuple[int, int]] = []
    for i in range(1000):
        block = i % 20
        code = f"{tag}-{i:04d}"
        if block < 10:  # valid, with an explicit code
            rows.append(f"{code},PERCENT,{5 + block},,2030-01-01T00:00:00Z,web|pos,{tag}")
            expected.append("created")
        elif block == 10:  # an empty code is generated
            rows.append(f",FIXED,700,usd,,,{tag}")
            expected.append("created")
        elif block == 11:  # the code of the row 11 above, written another way: a repeat in the file
            rows.append(f"{tag.lower()}{i - 11:04d},PERCENT,5,,,,{tag}")
            expected.append("duplicate")
            pairs.append((i - 11 + 1, i + 1))
        elif block == 12:  # a code that existed before the upload
            rows.append(f"{existing[(i // 20) % len(existing)]},PERCENT,5,,,,{tag}")
            expected.append("duplicate")
            errors[i + 1] = "code: a coupon with this code exists already"
        elif block == 13:  # a spreadsheet formula where the code goes
            rows.append(f'"=HYPERLINK(""http://x"")",PERCENT,5,,,,{tag}')
            expected.append("rejected")
            errors[i + 1] = "code: "
        else:  # invalid values of every kind
            cells, words = INVALID[(i // 20 + block) % len(INVALID)]
            rows.append(f"{code},{cells},{tag}")
            expected.append("rejected")
            errors[i + 1] = words
    body = ("\ufeff" + header + "\r\n" + "\r\n".join(rows) + "\r\n").encode()
    return body, expected, pairs, errors


def test_a_thousand_rows_get_exact_statuses_and_a_second_upload_creates_nothing(bulk: Bulk) -> None:
    tag = unique("BLK")
    existing = [bulk.stack.create_coupon(code=f"{tag}-OLD{n}", discount_value=5)["code"] for n in range(5)]
    body, expected, pairs, errors = thousand_rows(tag, existing)
    assert len(body) > 2 * RANGE_BYTES  # split into ranges processed in parallel

    # When marketing uploads it
    first_etag = bulk.upload(f"{tag}.csv", body)
    rows, job = bulk.result(f"{tag}.csv")

    # Then every row has its status, in file order
    assert rows[0] == ["row", "status", "coupon_id", "error"]
    rows = rows[1:]
    assert [r[0] for r in rows] == [str(n) for n in range(1, 1001)]
    statuses = [r[1] for r in rows]
    for first, repeat in pairs:  # one of the two holds the code, the other names it
        a, b = rows[first - 1], rows[repeat - 1]
        assert {a[1], b[1]} == {"created", "duplicate"}
        loser, winner = (a, b) if a[1] == "duplicate" else (b, a)
        assert loser[3] == f"code: the same code is on row {winner[0]} of this file"
        statuses[first - 1], statuses[repeat - 1] = "created", "duplicate"
    assert statuses == expected
    for row in rows:
        assert bool(row[2]) == (row[1] == "created")
        assert bool(row[3]) == (row[1] != "created")
        assert not row[3].startswith(("=", "+", "-", "@"))
        assert errors.get(int(row[0]), "") in row[3], row
    created = expected.count("created")
    assert (job["status"], job["kind"], job["total"], job["processed"]) == ("succeeded", "import", 1000, 1000)
    assert job["result"]["created"] == created and job["failed"] == 1000 - created

    # and the created coupons work at checkout: explicit codes, and generated ones read back by id
    for row in (rows[0], rows[9], rows[500]):
        assert bulk.validates(f"{tag}-{int(row[0]) - 1:04d}")
    generated = [r for r in rows if int(r[0]) % 20 == 11]
    for row in generated[:3]:
        coupon = bulk.stack.admin("GET", f"/coupons/{row[2]}").body
        assert coupon["campaign_id"] == tag and coupon["discount_type"] == "FIXED"
        assert bulk.validates(coupon["code"])
    found = bulk.stack.admin("GET", f"/coupons?code={tag.lower()}-0003").body["items"]
    assert [c["id"] for c in found] == [rows[3][2]]

    # When the same object is uploaded again, the same bytes with another ETag (issue 11, hole 8), and
    # the same bytes under another name with another ETag
    bulk.upload(f"{tag}.csv", body)
    assert bulk.upload_multipart(f"{tag}.csv", body) != first_etag
    assert bulk.upload_multipart(f"{tag}-again.csv", body) != first_etag
    again, _ = bulk.result(f"{tag}-again.csv")
    bulk.queues_idle()
    # Then nothing is created twice, generated codes included
    assert bulk.campaign_size(tag) == created
    assert all(r[1] in ("duplicate", "rejected") for r in again[1:])
    assert [r[1] for r in again[1:]].count("duplicate") == created + expected.count("duplicate")


# --- malformed files ----------------------------------------------------------------------------


MALFORMED = {  # name: (body, words of the results file, words of the job's error)
    "latin1.csv": ("code,discount_value,campaign_id\r\nBADA-1,5,{c}\r\nCAFÉ-2,5,{c}\r\n".encode("latin-1"),
                   "not valid UTF-8", "not valid UTF-8"),
    "no-value.csv": (b"code,discount_type,campaign_id\r\nBADB-1,PERCENT,{c}\r\n", "missing required column",
                     "missing required column"),
    # The results file names the column; the job (and its event) never copy text from the file (issue 17).
    "extra.csv": (b"code,discount_value,campaign_id,colour\r\nBADC-1,5,{c},red\r\n", 'unknown column "colour"',
                  "unknown column"),
    "long-line.csv": (b"code,discount_value,campaign_id\r\nBADD-1,5,{c}\r\nBADD-2,5,{c}" + b"9" * 1_048_576
                      + b"\r\n", "longer than 256 KiB", "longer than 256 KiB"),
    "empty.csv": (b"", "the file is empty", "the file is empty"),
    "header-only.csv": (b"code,discount_value,campaign_id\r\n", "no data rows", "no data rows"),
}


def test_malformed_files_get_a_clear_result_and_create_nothing(bulk: Bulk) -> None:
    campaign = unique("bad").lower()
    folder = unique("m")
    for name, (body, _, _) in MALFORMED.items():
        bulk.upload(f"{folder}/{name}", body.replace(b"{c}", campaign.encode()))
    for name, (_, words, job_words) in MALFORMED.items():
        rows, job = bulk.result(f"{folder}/{name}")
        assert rows[0] == ["row", "status", "coupon_id", "error"], name
        assert rows[1:] and all(r[1] == "rejected" and not r[2] for r in rows[1:]), name
        assert any(words in r[3] for r in rows[1:]), (name, rows)
        assert job["status"] == "failed" and job_words in job["result"]["error"], name
        assert "colour" not in json.dumps(job), name
    assert bulk.campaign_size(campaign) == 0


def test_a_file_without_a_header_keeps_its_codes_out_of_the_job_its_event_and_the_logs(bulk: Bulk) -> None:
    """Issue 17, finding 3: the first row of a file without a header was read as the header, and
    `unknown column "summer-25-vip"` became the job's error, its BulkImportCompleted event and the
    bus archive's copy of it. The code belongs in the results file only."""
    campaign = unique("nohdr").lower()
    first, second = f"{unique('summer-')}-vip".lower(), unique("AUTUMN-")
    bulk.stack.record_codes(first, second)
    # Given a CSV uploaded without its header row, a code first
    bulk.upload(f"{campaign}.csv", f"{first},PERCENT,10\r\n{second},PERCENT,5\r\n".encode())
    rows, job = bulk.result(f"{campaign}.csv")
    # Then the job fails, and the results file (only) names the column it did not know
    assert job["status"] == "failed" and "unknown column" in job["result"]["error"], job
    assert any(f'unknown column "{first}"' in r[3] for r in rows[1:]), rows
    # and once its BulkImportCompleted event is out, no table, event or log line holds either code
    deadline = time.monotonic() + 60
    while not any(job["job_id"] in event for event in bulk.stack.archived_events()):
        assert time.monotonic() < deadline, "no BulkImportCompleted event"
        time.sleep(0.5)
    assert bulk.stack.plaintext_code_hits() == []


# --- generation ------------------------------------------------------------------------------------


def test_a_generation_job_of_two_thousand_codes(bulk: Bulk) -> None:
    campaign = unique("gen").lower()
    started = bulk.stack.admin("POST", f"/campaigns/{campaign}/codes", {
        "count": 2000, "pattern": "E2E-####-####-####",
        "template": {"discount_type": "FIXED", "discount_value": 500, "currency": "USD", "max_uses": 1}})
    assert started.status == 202 and set(started.body) == {"job_id"}
    job_id = started.body["job_id"]

    progress = []
    deadline = time.monotonic() + 300
    while True:
        job = bulk.stack.admin("GET", f"/jobs/{job_id}").body
        progress.append(job["processed"])
        if job["status"] in ("succeeded", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert (job["status"], job["kind"], job["total"], job["failed"]) == ("succeeded", "generate", 2000, 0)
    assert progress == sorted(progress) and progress[-1] == 2000
    assert job["result"]["created"] == 2000 and job["result"]["export_key"].endswith(".csv")

    # The export is readable with a plain GET of the presigned URL
    with urllib.request.urlopen(job["result"]["export_url"], timeout=60) as response:
        lines = list(csv.reader(io.StringIO(response.read().decode())))
    assert lines[0] == ["code", "coupon_id"]
    codes = [code for code, _ in lines[1:]]
    bulk.stack.record_codes(*codes)  # only the export may hold them
    assert len(codes) == 2000 and len(set(codes)) == 2000
    assert all(re.fullmatch(r"E2E-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", c)
               for c in codes)
    assert len({coupon_id for _, coupon_id in lines[1:]}) == 2000
    for code in codes[::250]:
        assert bulk.validates(code)
    assert bulk.campaign_size(campaign) == 2000


def test_a_job_whose_messages_never_come_is_given_up_by_the_watchdog(make_stack: Any) -> None:
    """Issue 17, finding 6: a job whose runs time out (or whose messages sit in a dead-letter queue)
    stayed `queued`/`running` forever. The watchdog (every second here, stall after 3 s) gives it up,
    and the worker still writes the export it has (no code yet: just the header) before failing it."""
    stack = make_stack({"JOB_STALL_SECONDS": "3", "COUPONS_LOCAL_SCHEDULE_EVERY_SECONDS": "job-watchdog=1"})
    bulk = Bulk(stack)
    queue = bulk.queues["generation"]
    # Given a generation job whose plan message will not be delivered for 15 minutes
    bulk.sqs.set_queue_attributes(QueueUrl=queue, Attributes={"DelaySeconds": "900"})
    campaign = unique("stuck").lower()
    started = stack.admin("POST", f"/campaigns/{campaign}/codes", {"count": 50, "template": {"discount_value": 5}})
    assert started.status == 202
    bulk.sqs.set_queue_attributes(QueueUrl=queue, Attributes={"DelaySeconds": "0"})
    job_id = started.body["job_id"]
    # When nothing happens to it for longer than JOB_STALL_SECONDS
    deadline = time.monotonic() + 90
    while (job := stack.admin("GET", f"/jobs/{job_id}").body)["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    # Then it is failed, saying why, with the export it has
    assert job["status"] == "failed" and "no progress for 3 s" in job["result"]["error"], job
    assert job["result"]["created"] == 0
    with urllib.request.urlopen(job["result"]["export_url"], timeout=60) as response:
        assert response.read() == b"code,coupon_id\r\n"
    # and its BulkGenerationCompleted says so
    deadline = time.monotonic() + 60
    while not (done := [json.loads(e) for e in stack.archived_events() if job_id in e]):
        assert time.monotonic() < deadline, "no BulkGenerationCompleted"
        time.sleep(0.5)
    assert [(e["detail-type"], e["detail"]["status"]) for e in done] == [("BulkGenerationCompleted", "failed")]


def test_the_jobs_api_refuses_what_it_should(bulk: Bulk) -> None:
    stack = bulk.stack
    good = {"count": 10, "template": {"discount_value": 10}}
    assert stack.request("POST", "/campaigns/c1/codes", good, token=bulk.customer).error_code == "FORBIDDEN"
    assert stack.request("POST", "/campaigns/c1/codes", good).error_code == "UNAUTHENTICATED"
    for body, field in [
        ({**good, "count": 0}, "count"),
        ({**good, "count": 1_000_001}, "count"),
        ({**good, "template": {"discount_value": 10, "code": "MINE-1"}}, "template.code"),
        ({**good, "pattern": "SALE-####"}, "pattern"),
        ({**good, "template": {"discount_value": 250}}, "template.discount_value"),
        ({**good, "prefix": "X"}, "prefix"),
    ]:
        answer = stack.admin("POST", "/campaigns/c1/codes", body)
        assert answer.status == 400 and answer.error_code == "VALIDATION_ERROR", answer.body
        assert field in {d["field"] for d in answer.body["error"]["details"]}, answer.body
    # a malformed campaign id is a 404 like an unknown one (contract v2)
    malformed = stack.admin("POST", "/campaigns/bad%21campaign/codes", good)
    assert (malformed.status, malformed.error_code) == (404, "CAMPAIGN_NOT_FOUND"), malformed.body
    for job_id in ("imp-0000", "gen-unknown", "..%2F..%2Fetc"):
        answer = stack.admin("GET", f"/jobs/{job_id}")
        assert answer.status == 404 and answer.error_code in ("JOB_NOT_FOUND", "NOT_FOUND"), answer.body
    assert stack.admin("GET", "/jobs/imp-0000").error_code == "JOB_NOT_FOUND"
    assert stack.request("GET", "/jobs/imp-0000", token=bulk.customer).error_code == "FORBIDDEN"
    paths = stack.request("GET", "/openapi.json").body["paths"]
    assert "/campaigns/{campaign_id}/codes" in paths and "/jobs/{job_id}" in paths
