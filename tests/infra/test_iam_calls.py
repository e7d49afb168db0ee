"""Every AWS call each function makes is granted to that function's role, and every grant is used.

moto enforces no IAM: a function calling an action its role lacks works locally and fails on AWS
(issue 11, "what let these through"). Here a local stack of its own runs with
`COUPONS_LOCAL_CALL_LOG` (coupons_local.calllog: botocore's before-parameter-build hook, per
function, each invocation in a fresh container) through a scenario touching every function: admin
CRUD and lookups, validate (also before any coupon exists), redeem of a hot coupon, replays,
rollback, a coupon's redemptions, the reports API, a CSV import split into ranges (S3 -> SQS ->
csv_import), a generation job with its export link, the expiry sweep, the daily report, and the
stream -> publisher -> bus path. BatchGetItem answers unordered and often in part meanwhile.

Then the CDK app is built and, per function:

- each logged call becomes the authorisations IAM checks (tests/infra/iam_check.py) and each one
  must be allowed by that function's role (resources mapped through resources.py, the definitions
  the local stack and CDK share), except the DENIED_BY_DESIGN entries below;
- each grant of the role (an action on a resource pattern) must be used by some call, or be in
  UNUSED_BY_DESIGN with the reason it is there.

Both lists are checked both ways: an entry that no longer matches anything fails the test too, so
the lists cannot go stale.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import iam_check  # type: ignore[import-not-found]
import pytest
from conftest import LocalStack, start_stack, unique  # type: ignore[import-not-found]
from coupons_infra import resources as r
from coupons_local import tokens
from coupons_local.stack import state_file

pytestmark = [pytest.mark.infra, pytest.mark.e2e, pytest.mark.xdist_group("iam")]
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

ORDER = {"currency": "USD", "items": [{"product_id": "p1", "category": "shoes", "unit_price": 10_000,
                                       "quantity": 1}]}

# Calls a function makes that its role does not allow, on purpose: AWS refuses them and the code
# handles the refusal. Each entry: (function, need pattern) -> why. The test fails when one of these
# stops happening: then delete the entry.
DENIED_BY_DESIGN: dict[tuple[str, str], str] = {
    ("validate", "kms:GenerateDataKey on arn:key/data*"):
        "a function without kms:GenerateDataKey that finds the active key version not stored yet tries "
        "to create it; AWS refuses and it keeps a read-only keyring (crypto.unwrap_keyring). moto enforces "
        "no IAM, so locally the attempt succeeds (validate runs first in the scenario; redeem would too)",
    ("validate", "dynamodb:PutItem on arn:table/coupons*"):
        "the same attempt's second step, saving the wrapped key: reached locally only because moto "
        "granted the GenerateDataKey that AWS refuses",
}


# Grants no call of the scenario used, and why each is there. Patterns over Grant.label
# ("<action> <resource>[ via <service>]", a table grant being "dynamodb:read"/"dynamodb:write"), per
# function ("*": every function).
UNUSED_BY_DESIGN: dict[tuple[str, str], str] = {
    ("job_watchdog", "dynamodb:* arn:table/jobs"):
        "marks a stalled job failing, then failed (conditional UpdateItem after a read); no job stalls in the "
        "scenario (tests/integration/test_bulk_jobs.py and the watchdog e2e test stall one)",
    ("job_watchdog", "sqs:SendMessage arn:queue/*"): "tells a stalled job's workers to give it up; none stalls here",
    ("publisher", "sqs:SendMessage arn:queue/undelivered-events"):
        "parks what EventBridge refuses past the retries; the scenario's bus refuses nothing "
        "(tests/e2e/test_events_faults_e2e.py throttles it and sees the parking)",
    ("replay_events", "events:PutEvents arn:bus/events"): "publishes parked events; none are parked here",
    ("replay_events", "sqs:DeleteMessage arn:queue/undelivered-events"): "deletes replayed events; none here",
    ("replay_events", "sqs:GetQueueAttributes arn:queue/undelivered-events"):
        "part of the consume grant (CDK's grantConsumeMessages); the replay only receives and deletes",
    ("*", "dynamodb:read arn:table/idempotency"):
        "Powertools' idempotency layer reads a record back (GetItem) only when its conditional PutItem "
        "did not return the existing one (ReturnValuesOnConditionCheckFailure); DynamoDB returns it",
    ("*", "logs:* arn:logs/*"): "the Lambda runtime writes the function's own log group, not the SDK",
    ("*", "xray:* *"): "active tracing: the runtime sends the segments",
    ("*", "kms:* arn:key/data via dynamodb"):
        "DynamoDB uses the tables' customer-managed key itself, on the caller's behalf: no SDK call shows it",
    ("*", "sqs:* arn:dlq/*"):
        "dead-letter queues and on-failure destinations: Lambda (or the event source mapping) sends what "
        "failed with the function's role; nothing fails in the scenario",
    ("*", "sqs:GetQueueUrl arn:queue/*"): "part of CDK's SQS event source grant (grantConsumeMessages)",
    ("*", "sqs:ChangeMessageVisibility arn:queue/*"):
        "a failed message comes back sooner (QueueSender.retry_later); nothing fails in the scenario",
    ("*", "kms:GenerateDataKey arn:key/data"):
        "creates the code keyring when none exists, and the new version after a rotation "
        "(crypto.unwrap_keyring); in the scenario another function created it first",
    ("csv_import", "s3:GetObjectVersion arn:bucket/imports/incoming/*"):
        "the S3 notification of a versioned bucket (every bucket on AWS) names the version to read; the "
        "local buckets are not versioned",
    ("csv_import", "s3:ListBucket arn:bucket/imports"):
        "lets S3 answer 404 NoSuchKey, not 403, for an upload gone before its import read it (ObjectChanged)",
    ("jobs", "s3:ListBucket arn:bucket/exports"): "a 404, not a 403, for an export that is gone (expired)",
    ("csv_import", "s3:AbortMultipartUpload arn:bucket/imports/results/*"):
        "a results file over 8 MB is assembled as a multipart upload (BulkObjects.concatenate), aborted "
        "if that fails",
    ("generate_codes", "s3:AbortMultipartUpload arn:bucket/exports/exports/*"):
        "an export over 8 MB is a multipart upload (BulkObjects.concatenate), aborted if that fails",
    ("daily_report", "s3:AbortMultipartUpload arn:bucket/reports/*"):
        "a day's CSV over 8 MB goes up as a multipart upload (upload_fileobj), aborted if that fails",
    ("daily_report", "kms:Decrypt arn:key/data via s3"):
        "the parts of a multipart upload to an SSE-KMS bucket are decrypted to complete it",
    ("publisher", "dynamodb:ListStreams *"): "the stream event source mapping's grant (CDK grantStreamRead)",
}


@pytest.fixture(scope="module")
def call_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("calls") / "calls.jsonl"
    stack = start_stack({
        "COUPONS_LOCAL_CALL_LOG": str(path),
        "COUPONS_LOCAL_BATCH_SEED": "11", "COUPONS_LOCAL_BATCH_UNPROCESSED": "0.3",
        "IMPORT_RANGE_BYTES": "1024", "IMPORT_CHECKPOINT_ROWS": "10", "GENERATION_BATCH_SIZE": "10",
        "HOT_COUPON_THRESHOLD": "50", "HOT_COUPON_SHARDS": "4", "FRAUD_DISTINCT_USERS_PER_IP": "2",
    }, seed=False)
    try:
        Scenario(stack).run()
    finally:
        stack.stop()
    yield [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Scenario:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        # What `coupons-local info` prints, and the control secret `coupons-local run` uses: read from
        # the stack's state file here, not through the CLI (a Python start-up per call).
        self.info = json.loads(state_file(stack.port).read_text())
        self.s3 = self.client("s3")
        self.sqs = self.client("sqs")
        self.day = datetime.now(UTC).strftime("%Y-%m-%d")
        self.admin_token = tokens.issue("iam-admin", email="admin@example.com", admin=True)

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.info["aws_endpoint"], region_name=self.info["region"],
                            aws_access_key_id="local", aws_secret_access_key="local")

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        # creates carry an Idempotency-Key, as a retrying client's would (the idempotency table's grant)
        # and each is retried once with the same key (a replay: the stored answer is read back)
        if method == "POST" and (path == "/coupons" or path.endswith("/codes")):
            headers = {"Idempotency-Key": unique("key-")}
            first = self.stack.request(method, path, body, token=self.admin_token, headers=headers)
            again = self.stack.request(method, path, body, token=self.admin_token, headers=headers)
            assert (again.status, again.body) == (first.status, first.body), (first.body, again.body)
            return again
        return self.stack.request(method, path, body, token=self.admin_token)

    def create_coupon(self, **fields: Any) -> dict[str, Any]:
        return dict(self.ok(self.admin("POST", "/coupons", fields), 201))

    def customer(self, user: str) -> str:
        return tokens.issue(user, email=f"{user}@example.com")

    def run_job(self, job: str, payload: dict[str, Any] | None = None) -> Any:
        """`coupons-local run <job>`: the stack's control route."""
        request = urllib.request.Request(
            f"{self.stack.url}/_local/run/{job}", data=json.dumps(payload or {}).encode(), method="POST",
            headers={"X-Local-Control": self.info["control_secret"], "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def ok(self, result: Any, *statuses: int) -> Any:
        assert result.status in (statuses or (200,)), (result.status, result.body)
        return result.body

    def run(self) -> None:
        stack = self.stack
        # validate before any coupon (and so before any keyring) exists: a failed guess
        self.ok(stack.request("POST", "/coupons/validate", {"code": "NOPE-1", "channel": "web", "order": ORDER},
                              token=self.customer("early")), 404)
        self.ok(stack.request("GET", "/openapi.json"))
        self.ok(stack.request("GET", "/console"))
        # a coupon that ends in a second: the expiry sweep below finds it past its end
        now = datetime.now(UTC)
        self.create_coupon(discount_value=5, starts_at=(now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           expires_at=(now + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        # admin CRUD and every lookup
        campaign = unique("iam").lower()
        hot = self.create_coupon(code=unique("IAM"), discount_value=10, max_uses=100, campaign_id=campaign)
        other = self.create_coupon(discount_value=5, campaign_id=campaign)
        self.ok(self.admin("GET", f"/coupons?code={hot['code']}"))
        self.ok(self.admin("GET", f"/coupons?campaign_id={campaign}&limit=5"))
        self.ok(self.admin("GET", "/coupons?status=active&limit=5"))
        self.ok(self.admin("GET", f"/coupons/{hot['id']}"))
        self.ok(self.admin("PUT", f"/coupons/{other['id']}", {"discount_value": 6}))
        self.ok(self.admin("DELETE", f"/coupons/{other['id']}"), 204)
        # checkout: validate, redeem a hot coupon from three users of one IP (a fraud flag), replay, roll back
        body = {"code": hot["code"], "channel": "web", "order": ORDER}
        self.ok(stack.request("POST", "/coupons/validate", body, token=self.customer("ann")))
        redemptions = []
        for user in ("ann", "ben", "cat"):
            order = {**body, "order_id": f"{user}-1"}
            redemptions.append(self.ok(stack.request("POST", "/redemptions", order, token=self.customer(user)), 201))
        self.ok(stack.request("POST", "/redemptions", {**body, "order_id": "ann-1"}, token=self.customer("ann")))
        first = redemptions[0]["redemption_id"]
        self.ok(stack.request("GET", f"/redemptions/{first}", token=self.customer("ann")))
        self.ok(stack.request("GET", "/me/redemptions", token=self.customer("ann")))  # issue 12
        self.ok(self.admin("POST", f"/redemptions/{first}/rollback"))  # issue 12: the shop rolls back
        self.ok(self.admin("GET", f"/coupons/{hot['id']}/redemptions"))
        self.ok(self.admin("GET", f"/reports/summary?from={self.day}&to={self.day}"))
        self.import_csv(campaign)
        self.generate(campaign)
        self.expire()
        ran = self.run_job("daily-report", {"date": self.day})
        assert ran and "error" not in ran, ran
        # settled days: the summary computes and keeps them, then reads them kept; the daily job keeps its day
        settled = [(datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%d") for n in (3, 2)]
        for _ in range(2):
            self.ok(self.admin("GET", f"/reports/summary?from={settled[0]}&to={settled[1]}"))
        ran = self.run_job("daily-report", {"date": settled[1]})
        assert ran and "error" not in ran, ran
        self.events_arrive()
        ran = self.run_job("job-watchdog")  # no job is stalled: it lists the active jobs and leaves them
        assert ran is not None and "error" not in ran, ran
        ran = self.run_job("replay-events", {"max_seconds": 5})  # nothing parked: it drains an empty queue
        assert ran is not None and "error" not in ran, ran

    def import_csv(self, campaign: str) -> None:
        rows = [f"{campaign.upper()}-{n:03d},PERCENT,10,{campaign}" if n % 3 else f",PERCENT,10,{campaign}"
                for n in range(60)]
        body = ("code,discount_type,discount_value,campaign_id\r\n" + "\r\n".join(rows) + "\r\n").encode()
        assert len(body) > 2 * 1024  # several ranges, through the queue
        name = f"{campaign}.csv"
        self.s3.put_object(Bucket=self.info["buckets"]["imports"], Key=f"incoming/{name}", Body=body)
        deadline = time.monotonic() + 120
        while True:
            try:
                marker = json.loads(self.s3.get_object(Bucket=self.info["buckets"]["imports"],
                                                       Key=f"results/{name}.json")["Body"].read())
                if marker.get("status") == "succeeded":
                    break
            except self.s3.exceptions.NoSuchKey:
                pass
            assert time.monotonic() < deadline, "the import did not finish"
            time.sleep(0.5)
        result = self.s3.get_object(Bucket=self.info["buckets"]["imports"], Key=f"results/{name}")
        rows_out = list(csv.reader(io.StringIO(result["Body"].read().decode())))[1:]
        assert [row[1] for row in rows_out] == ["created"] * 60
        self.ok(self.admin("GET", f"/jobs/{marker['job_id']}"))

    def generate(self, campaign: str) -> None:
        started = self.ok(self.admin("POST", f"/campaigns/{campaign}/codes", {
            "count": 25, "template": {"discount_type": "FIXED", "discount_value": 100, "currency": "USD"}}), 202)
        deadline = time.monotonic() + 120
        while (job := self.ok(self.admin("GET", f"/jobs/{started['job_id']}")))["status"] != "succeeded":
            assert job["status"] != "failed" and time.monotonic() < deadline, job
            time.sleep(0.5)
        with urllib.request.urlopen(job["result"]["export_url"], timeout=30) as export:
            assert len(export.read().decode().splitlines()) == 26

    def expire(self) -> None:
        ran = self.run_job("expiry-sweep")
        assert ran.get("expired", 0) >= 1, ran

    def events_arrive(self) -> None:
        """The publisher turned the stream into events: the redemption, the import's completion, the flag."""
        want = {"CouponRedeemed", "RedemptionRolledBack", "BulkImportCompleted", "BulkGenerationCompleted",
                "CouponExpired", "FraudSuspected", "CouponDeleted"}
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while not want <= seen:
            assert time.monotonic() < deadline, f"events missing: {want - seen}"
            for message in self.sqs.receive_message(QueueUrl=self.info["event_queue_url"], MaxNumberOfMessages=10,
                                                    WaitTimeSeconds=1).get("Messages", []):
                seen.add(json.loads(message["Body"])["detail-type"])
                self.sqs.delete_message(QueueUrl=self.info["event_queue_url"], ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="module")
def stack_roles() -> Any:
    """The CDK app (no cdk-nag, no bundling): its stack, whose role policies are resolved as synthesis
    writes them (test_stack.py checks they equal the synthesised template's)."""
    from coupons_infra.stack import CouponsStack, build_app

    app = build_app(context={"aws:cdk:bundling-stacks": []}, nag=False)
    return next(c for c in app.node.children if isinstance(c, CouponsStack))


def needs_by_function(calls: list[dict[str, Any]]) -> dict[str, set[iam_check.Need]]:
    found: dict[str, set[iam_check.Need]] = defaultdict(set)
    for entry in calls:
        if entry["function"] is not None:
            found[entry["function"]].update(iam_check.needs(entry))
    return found


@pytest.fixture(scope="module")
def needs(call_log: list[dict[str, Any]]) -> dict[str, set[iam_check.Need]]:
    return needs_by_function(call_log)


@pytest.fixture(scope="module")
def roles(stack_roles: Any) -> dict[str, list[iam_check.Statement]]:
    return {f.name: iam_check.role_statements(stack_roles, f.name) for f in r.FUNCTIONS}


def test_the_scenario_ran_every_function_that_calls_aws(call_log: list[dict[str, Any]]) -> None:
    called = {entry["function"] for entry in call_log} - {None}
    for function in r.FUNCTIONS:
        if function.grants or function.queue or function.stream_of:
            assert function.name in called, f"the scenario never ran {function.name}"
        else:  # the OpenAPI document and the console pages: no AWS at all
            assert function.name not in called, function.name


def test_only_the_stack_itself_calls_aws_outside_a_function(call_log: list[dict[str, Any]]) -> None:
    """A call no function claims would escape the check: only the stack's provisioning and wiring may."""
    wiring = {"CreateTable", "UpdateTimeToLive", "CreateKey", "CreateAlias", "CreateBucket", "CreateQueue",
              "GetQueueAttributes", "CreateEventBus", "PutRule", "PutTargets", "PutBucketNotificationConfiguration"}
    stray = {f"{e['service']}.{e['operation']}" for e in call_log if e["function"] is None
             and e["operation"] not in wiring}
    assert not stray


def test_every_call_of_a_function_is_allowed_by_its_role(needs: dict[str, set[iam_check.Need]],
                                                        roles: dict[str, list[iam_check.Statement]]) -> None:
    denied: dict[tuple[str, str], iam_check.Need] = {}
    for function, wanted in needs.items():
        for need in wanted:
            if not iam_check.allowed(roles[function], need):
                denied[(function, str(need))] = need
    known = {key: [d for d in denied if d[0] == key[0] and iam_check.glob(key[1], d[1])] for key in DENIED_BY_DESIGN}
    unexplained = sorted(d for d in denied if not any(d in matched for matched in known.values()))
    assert not unexplained, "calls the role does not allow (they fail on AWS):\n" + "\n".join(
        f"  {f}: {n}" for f, n in unexplained)
    gone = [key for key, matched in known.items() if not matched]
    assert not gone, f"DENIED_BY_DESIGN entries that no longer happen (delete them): {gone}"


def test_every_grant_of_a_role_is_used_or_explained(needs: dict[str, set[iam_check.Need]],
                                                    roles: dict[str, list[iam_check.Statement]]) -> None:
    unused: set[tuple[str, str]] = set()
    for function, statements in roles.items():
        for grant in iam_check.grants(statements):
            if not any(grant.used_by(need) for need in needs.get(function, ())):
                unused.add((function, grant.label))

    def explained(item: tuple[str, str]) -> list[tuple[str, str]]:
        return [key for key in UNUSED_BY_DESIGN
                if iam_check.glob(key[0], item[0]) and iam_check.glob(key[1], item[1])]

    unexplained = sorted(item for item in unused if not explained(item))
    assert not unexplained, "grants no call used (remove them, or say why they are needed):\n" + "\n".join(
        f"  {f}: {label}" for f, label in unexplained)
    used_entries = {key for item in unused for key in explained(item)}
    assert set(UNUSED_BY_DESIGN) <= used_entries, \
        f"UNUSED_BY_DESIGN entries that match no unused grant (delete them): {set(UNUSED_BY_DESIGN) - used_entries}"


def test_no_stream_consumer_can_unwrap_the_code_keys(roles: dict[str, list[iam_check.Statement]]) -> None:
    """The coupons stream carries the wrapped code keys and the codes' ciphertext: a stream consumer may
    read the stream (DynamoDB decrypts it) but never unwrap a code key itself (issue 17, finding 4)."""
    unwrap = iam_check.Need("kms:Decrypt", "arn:key/data", (("kms:EncryptionContext:key_version", "1"),
                                                            ("kms:EncryptionContext:purpose", "coupon-codes")))
    stream_read = iam_check.Need("dynamodb:GetRecords", "arn:table/coupons/stream/STREAM")
    for function in (f for f in r.FUNCTIONS if f.stream_of):
        assert iam_check.allowed(roles[function.name], stream_read), function.name
        assert not iam_check.allowed(roles[function.name], unwrap), function.name
    holders = [f.name for f in r.FUNCTIONS if ("key", "kms", "decrypt") in f.grants]
    assert holders and all(iam_check.allowed(roles[name], unwrap) for name in holders)
