"""Bulk jobs that must end (issue 17, finding 6), against moto through the real adapters and functions.

- Finalising is bounded: no queue message reads more than about one 8 MiB part of a job's work
  objects, whatever the size of its results (a 5 GB file's results were read by one invocation).
- Sustained throttling backs off for longer and the job survives it (it was failed after ~2.5 min).
- A run cut off by Lambda's timeout raises nothing: the watchdog gives such a job up.
- A failed job still writes the partial results (import) or export (generation) it has.

Messages go through the real SQS queue (moto) and the real `csv_import` / `generate_codes` handlers
where the retry policy matters; botocore hooks record the delays asked of SQS and deliver at once,
adding them to a simulated clock instead of sleeping.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from coupons import bulk_wiring
from coupons.adapters import aws
from coupons.adapters.dynamo import translate
from coupons.clock import utcnow
from coupons.generation import GenerationRequest
from coupons.jobs import MAX_RECEIVES
from coupons.settings import get_settings
from coupons_infra import resources as r
from coupons_local import moto_patches, moto_speedups
from coupons_local.gateway import FunctionHost
from coupons_local.workers_bulk import sqs_event
from test_bulk_store import campaign_count, import_body, mixed_rows, results, results_text, upload


@pytest.fixture(scope="module")
def moto_stack() -> Iterator[Any]:
    """moto in-process with the local stack's resources, once for this module (tests use their own keys)."""
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
def bulk(moto_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    bulk_wiring.reset()
    yield moto_stack
    for queue in moto_stack.queues.values():  # leave no message to the next test
        empty(queue)
    bulk_wiring.reset()


def empty(queue_url: str) -> int:
    """Delete every message of a queue (PurgeQueue may run once a minute only); how many there were."""
    sqs, count = aws.client("sqs"), 0
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            count += 1
    return count


def configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bulk_wiring.reset()


def small_parts(monkeypatch: pytest.MonkeyPatch, part_bytes: int) -> None:
    """Multipart parts of `part_bytes` instead of 8 MiB (and moto's 5 MiB minimum lowered to match), so a
    few hundred rows make results of several parts."""
    import importlib

    for name in ("coupons.adapters.bulk_store", "coupons.adapters.bulk_objects"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # before issue 17 the constant lived in bulk_store alone
            continue
        if hasattr(module, "MULTIPART_PART_BYTES"):
            monkeypatch.setattr(module, "MULTIPART_PART_BYTES", part_bytes)
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", part_bytes)
    bulk_wiring.reset()


def empty_into_list(queue_url: str) -> list[dict[str, Any]]:
    """Every message of a queue, received and deleted."""
    sqs, found = aws.client("sqs"), []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


def job_of(provisioned: Any, name: str) -> dict[str, Any]:
    marker = json.loads(results_text(provisioned, f"results/{name}.json"))
    item = bulk_wiring.job_table().get(marker["job_id"])
    assert item is not None
    return item


class Queue:
    """The real SQS queue of a worker function, driven as Lambda's event source mapping drives it; the
    delays asked of SQS (message delays, visibility back-offs) go on a simulated clock instead."""

    def __init__(self, provisioned: Any, function: str) -> None:
        self.function = r.function(function)
        assert self.function.queue
        self.url = provisioned.queues[self.function.queue]
        self.sqs = aws.client("sqs")
        self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self.host = FunctionHost()
        self.delays: list[int] = []  # every visibility back-off asked for, in order
        self.seconds = 0.0  # the simulated clock
        self.sqs.meta.events.register("provide-client-params.sqs.*", self._deliver_now)

    def close(self) -> None:
        self.sqs.meta.events.unregister("provide-client-params.sqs.*", self._deliver_now)

    def _deliver_now(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "ChangeMessageVisibility" and params.get("VisibilityTimeout"):
            self.delays.append(int(params["VisibilityTimeout"]))
            params["VisibilityTimeout"] = 0

    def send(self, body: dict[str, Any]) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps(body))

    def run(self, *, until: Any, rounds: int = 200) -> int:
        """Deliver messages one at a time until `until()` holds; the number of deliveries."""
        delivered = 0
        for _ in range(rounds):
            if until():
                return delivered
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=1, AttributeNames=["All"],
                                                MessageAttributeNames=["All"]).get("Messages", [])
            if not messages:
                return delivered
            delivered += 1
            before = len(self.delays)
            try:
                answer = self.host.invoke(self.function, sqs_event(messages, self.arn))
                failed = {f["itemIdentifier"] for f in (answer or {}).get("batchItemFailures", [])}
            except Exception:  # Powertools raises when every record failed: all of them come back
                failed = {messages[0]["MessageId"]}
            if messages[0]["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=messages[0]["ReceiptHandle"])
            self.seconds += max(self.delays[before:], default=0)
        return delivered


@pytest.fixture
def recorded_delays(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The DelaySeconds of every message sent (they are delivered at once: the tests keep the time)."""
    from coupons.adapters import bulk_store

    sender = bulk_store.QueueSender
    delays: list[int] = []
    real_send = sender.send

    def send(self: Any, queue_url: str, messages: Any, **kwargs: Any) -> int:
        delays.append(int(kwargs.pop("delay_seconds", 0)))
        return int(real_send(self, queue_url, messages))

    monkeypatch.setattr(sender, "send", send)
    return delays


# --- finalising is bounded --------------------------------------------------------------------------


def test_finalising_a_large_result_reads_about_one_part_per_message(bulk: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5 GB file's results are ~100,000 work parts; they were all read by the last range's invocation,
    which cannot finish within Lambda's 15 minutes. Scaled down: 32 KiB parts for 8 MiB ones."""
    part = 32 * 1024
    small_parts(monkeypatch, part)
    configure(monkeypatch, IMPORT_RANGE_BYTES="8192", IMPORT_CHECKPOINT_ROWS="25")
    # Given an import whose results are about ten parts
    rows, _ = mixed_rows("fin1", 3000)
    event = upload(bulk, "incoming/large.csv", import_body(rows))
    service = bulk_wiring.import_service()
    read: dict[str, int] = {"bytes": 0}
    real_stream = service._objects.stream

    def counting_stream(bucket: str, key: str, **kwargs: Any) -> Iterator[bytes]:
        for chunk in real_stream(bucket, key, **kwargs):
            if key.startswith("work/"):
                read["bytes"] += len(chunk)
            yield chunk

    monkeypatch.setattr(service._objects, "stream", counting_stream)
    # When every message is handled, each one counted on its own; the planning of the assembly runs twice
    # (a redelivered last range) and its part messages come twice, in any order
    per_message = []
    pending = [event]
    sqs, url = aws.client("sqs"), bulk.queues["imports"]
    replanned = False
    while pending:
        for message in pending:
            read["bytes"] = 0
            service.handle(message)
            per_message.append(read["bytes"])
        pending = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for received in batch:
                pending.append(json.loads(received["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=received["ReceiptHandle"])
        parts = [m for m in pending if m.get("type") == "import-assemble"]
        if parts and not replanned:
            replanned = True
            service.maybe_finish(parts[0]["job_id"])  # plans again: the same upload, the same groups
            again = empty_into_list(url)
            assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, parts))
            pending += again + parts[:2]
            random.Random(3).shuffle(pending)
    assert replanned
    # Then the results are whole and in order
    got = results(bulk, "results/large.csv")
    assert got[0] == ["row", "status", "coupon_id", "error"] and [r[0] for r in got[1:]] == [
        str(i) for i in range(1, 3001)]
    assert len(results_text(bulk, "results/large.csv")) > 4 * part
    assert job_of(bulk, "large.csv")["status"] == "succeeded"
    # and no message read much more than one part of the work objects
    assert max(per_message) <= 2 * part, sorted(per_message)[-5:]
    # and nothing is left behind: no open multipart upload, no work object
    s3 = aws.client("s3")
    assert s3.list_multipart_uploads(Bucket=bulk.buckets["imports"]).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=bulk.buckets["imports"], Prefix="work/").get("KeyCount") == 0


# --- throttling -------------------------------------------------------------------------------------


def throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                       operation)


def test_sustained_throttling_backs_off_for_longer_and_the_job_survives(
        bulk: Any, monkeypatch: pytest.MonkeyPatch, recorded_delays: list[int]) -> None:
    """Every delivery throttled for 20 minutes: the job used to be failed on the 5th receive, after
    10 + 20 + 40 + 80 s of back-off (~2.5 minutes)."""
    configure(monkeypatch, IMPORT_CHECKPOINT_ROWS="10")
    rows, expected = mixed_rows("thr1", 30)
    event = upload(bulk, "incoming/throttled.csv", import_body(rows))
    queue = Queue(bulk, "csv_import")
    try:
        writer = bulk_wiring.batch_writer()
        real = writer._transact

        def transact(items: Any) -> Any:
            if queue.seconds + sum(recorded_delays) < 20 * 60:  # DynamoDB keeps throttling for 20 minutes
                raise translate(throttled("TransactWriteItems"))  # what the writer makes of it
            return real(items)

        monkeypatch.setattr(writer, "_transact", transact)
        queue.send(event)
        deliveries = queue.run(until=lambda: _finished(bulk, "throttled.csv"))
    finally:
        queue.close()
    waited = queue.seconds + sum(recorded_delays)
    job = job_of(bulk, "throttled.csv")
    assert job["status"] == "succeeded", (job.get("error"), deliveries, recorded_delays, queue.delays)
    assert waited >= 20 * 60 and deliveries > MAX_RECEIVES
    # backing off for longer each time (30 s, 1, 2, 4, 8 min, then 15 min; the second half of each is jitter)
    assert len(recorded_delays) >= 5 and max(recorded_delays) <= 900
    assert all(recorded_delays[n] >= 15 * 2 ** n for n in range(5)), recorded_delays
    assert [r[1] for r in results(bulk, "results/throttled.csv")[1:]] == expected


def _finished(provisioned: Any, name: str) -> bool:
    try:
        return job_of(provisioned, name)["status"] in ("succeeded", "failed")
    except ClientError:
        return False


# --- failing jobs keep what they did ----------------------------------------------------------------


def test_an_import_failing_on_its_last_receive_writes_its_partial_results(bulk: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, IMPORT_CHECKPOINT_ROWS="20")
    rows, expected = mixed_rows("part1", 60)
    event = upload(bulk, "incoming/partial.csv", import_body(rows))
    service = bulk_wiring.import_service()
    real = service._writer._transact
    calls = {"n": 0}

    def breaks_after_the_first_checkpoint(items: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:  # one transaction per checkpoint of 20 rows
            raise RuntimeError("a bug, every time")
        return real(items)

    monkeypatch.setattr(service._writer, "_transact", breaks_after_the_first_checkpoint)
    # When every delivery fails after the first checkpoint, up to the last one
    for receive_count in range(1, MAX_RECEIVES + 1):
        with pytest.raises(RuntimeError):
            service.handle(event, receive_count=receive_count)
    # Then the job failed, and its results file has the rows it processed and says it stopped
    job = job_of(bulk, "partial.csv")
    assert job["status"] == "failed" and "failed repeatedly (RuntimeError)" in job["error"]
    got = results(bulk, "results/partial.csv")
    assert got[0] == ["row", "status", "coupon_id", "error"]
    assert [r[0] for r in got[1:21]] == [str(i) for i in range(1, 21)]
    assert [r[1] for r in got[1:21]] == expected[:20]
    assert got[-1][0] == "0" and "the import stopped" in got[-1][3] and "not imported" in got[-1][3]
    assert len(got) == 1 + 20 + 1 and job["processed"] == 20
    marker = json.loads(results_text(bulk, "results/partial.csv.json"))
    assert marker["status"] == "failed" and marker["created"] == expected[:20].count("created")
    assert campaign_count("part1") == expected[:20].count("created")


def test_a_generation_job_failing_on_a_batch_exports_the_codes_it_created(bulk: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, GENERATION_BATCH_SIZE="20")
    service = bulk_wiring.generation_service()
    job_id = service.start("genfail", GenerationRequest.model_validate(
        {"count": 60, "template": {"discount_value": 5}, "pattern": "GF-####-####-####"}), "alice")
    sqs, url = aws.client("sqs"), bulk.queues["generation"]

    def drain() -> list[dict[str, Any]]:
        found = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return found

    (plan,) = drain()
    service.handle(plan)
    batches = sorted(drain(), key=lambda m: m["batch"])
    # Given batches 0 and 2 done, and batch 1 failing on every delivery
    service.handle(batches[0])
    service.handle(batches[2])
    real = service._writer.write
    monkeypatch.setattr(service._writer, "write", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    for receive_count in range(1, MAX_RECEIVES + 1):
        with pytest.raises(RuntimeError):
            service.handle(batches[1], receive_count=receive_count)
    monkeypatch.setattr(service._writer, "write", real)
    for message in drain():  # whatever the give-up sent (a large export is assembled in parts)
        service.handle(message)
    # Then the job failed, and its export has the 40 codes it did create, with a presigned URL
    job = bulk_wiring.job_service().get(job_id)
    assert job["status"] == "failed" and "failed repeatedly" in job["result"]["error"]
    assert job["result"]["created"] == 40 and job["result"]["export_url"].startswith("http")
    export = aws.client("s3").get_object(Bucket=job["result"]["export_bucket"], Key=job["result"]["export_key"])
    assert export["ServerSideEncryption"] == "aws:kms"
    lines = list(csv.reader(io.StringIO(export["Body"].read().decode())))
    assert lines[0] == ["code", "coupon_id"] and len(lines) == 41
    assert campaign_count("genfail") == 40
    admin = bulk_wiring.wiring.admin_service()
    for code, coupon_id in lines[1::13]:
        found = admin.find_by_code(code)
        assert found is not None and found["id"] == coupon_id


# --- a run that times out -------------------------------------------------------------------------------


class Killed(BaseException):
    """Lambda's timeout: the run stops where it is, no `except Exception` runs."""


def test_a_job_whose_runs_time_out_is_given_up_by_the_watchdog_with_its_partial_results(
        bulk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from coupons.bulk_watchdog import JobWatchdog

    configure(monkeypatch, IMPORT_CHECKPOINT_ROWS="20", JOB_STALL_SECONDS="3600")
    rows, expected = mixed_rows("tmo1", 60)
    event = upload(bulk, "incoming/timeout.csv", import_body(rows))
    service = bulk_wiring.import_service()
    real = service._writer._transact
    calls = {"n": 0}

    def times_out_after_the_first_checkpoint(items: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:  # one transaction per checkpoint of 20 rows
            raise Killed()
        return real(items)

    monkeypatch.setattr(service._writer, "_transact", times_out_after_the_first_checkpoint)
    # Given every delivery cut off by the timeout, until the message goes to the dead-letter queue
    for receive_count in range(1, MAX_RECEIVES + 1):
        with pytest.raises(Killed):
            service.handle(event, receive_count=receive_count)
    job = job_of(bulk, "timeout.csv")
    assert job["status"] == "running"  # nothing gave it up: a timeout raises nothing
    monkeypatch.setattr(service._writer, "_transact", real)
    # When the watchdog runs before the job has stalled long enough, nothing happens
    settings = get_settings()
    soon = JobWatchdog(jobs=bulk_wiring.job_table(), queue=bulk_wiring.queue_sender(), settings=settings,
                       clock=lambda: utcnow() + timedelta(minutes=59))
    assert job["job_id"] not in soon.run()["given_up"]
    # When it runs an hour later
    later = JobWatchdog(jobs=bulk_wiring.job_table(), queue=bulk_wiring.queue_sender(), settings=settings,
                        clock=lambda: utcnow() + timedelta(minutes=61))
    assert job["job_id"] in later.run()["given_up"]
    # Then its give-up message makes the worker keep what the job did and fail it
    sqs, url = aws.client("sqs"), bulk.queues["imports"]
    (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    service.handle(json.loads(message["Body"]))
    job = job_of(bulk, "timeout.csv")
    assert job["status"] == "failed" and "no progress for 1 h" in job["error"]
    assert "gsi1pk" not in job  # out of the active-jobs index
    got = results(bulk, "results/timeout.csv")
    assert [r[1] for r in got[1:21]] == expected[:20] and got[-1][0] == "0"
    # and a job that is given up but whose partial results never come is failed at the next stall
    assert job["job_id"] not in later.run()["given_up"]


def test_a_given_up_job_whose_results_never_come_is_failed_at_the_next_stall(bulk: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from coupons.bulk_watchdog import JobWatchdog

    configure(monkeypatch, JOB_STALL_SECONDS="600", GENERATION_BATCH_SIZE="10")
    service = bulk_wiring.generation_service()
    job_id = service.start("genlost", GenerationRequest.model_validate(
        {"count": 30, "template": {"discount_value": 5}}), "alice")
    assert empty(bulk.queues["generation"]) == 1  # its plan message is lost
    jobs, queue = bulk_wiring.job_table(), bulk_wiring.queue_sender()

    def watchdog(minutes: int) -> JobWatchdog:
        return JobWatchdog(jobs=jobs, queue=queue, settings=get_settings(),
                           clock=lambda: utcnow() + timedelta(minutes=minutes))

    assert watchdog(11).run()["given_up"] == [job_id]
    assert empty(bulk.queues["generation"]) == 1  # and so is the give-up message
    assert watchdog(15).run() == {"active": 1, "given_up": [], "failed": []}  # it moved at minute 11
    assert watchdog(22).run()["failed"] == [job_id]
    job = bulk_wiring.job_service().get(job_id)
    assert job["status"] == "failed" and "could not be assembled" in job["result"]["error"]
    assert watchdog(60).run()["active"] == 0


def test_a_job_that_moves_while_the_watchdog_looks_at_it_is_left_alone(bulk: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog reads a stalled-looking job; a worker commits progress before the watchdog's update
    lands (forced here): the give-up is conditional on the updated_at it read, so nothing happens."""
    from coupons.bulk_watchdog import JobWatchdog

    configure(monkeypatch, JOB_STALL_SECONDS="600")
    service = bulk_wiring.generation_service()
    job_id = service.start("genmove", GenerationRequest.model_validate(
        {"count": 5, "template": {"discount_value": 5}}), "alice")
    jobs = bulk_wiring.job_table()
    later = utcnow() + timedelta(minutes=11)

    class ProgressAfterRead:
        def __getattr__(self, name: str) -> Any:
            return getattr(jobs, name)

        def get(self, wanted: str) -> Any:
            item = jobs.get(wanted)
            jobs.update(wanted, {"updated_at": (later - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
            return item

    watchdog = JobWatchdog(jobs=ProgressAfterRead(), queue=bulk_wiring.queue_sender(),  # type: ignore[arg-type]
                           settings=get_settings(), clock=lambda: later)
    assert watchdog.run()["given_up"] == []
    job = jobs.get(job_id)
    assert job is not None and job["status"] == "queued" and "failing" not in job
