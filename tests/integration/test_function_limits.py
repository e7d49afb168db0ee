"""Issue 17: the local function host enforces Lambda's limits (timeout, 6 MB response, /tmp).

Real parts: the local stack's FunctionHost loads each test function from its own handler.py, the
real Gateway serves it over WSGI, the SQS and stream pollers drive it, and AWS is moto in-process.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from coupons_infra import resources as r
from coupons_local import limits
from coupons_local.gateway import FunctionHost, Gateway
from coupons_local.workers_bulk import QueuePoller
from coupons_local.workers_events import StreamPoller
from werkzeug.test import Client

ROOT = Path(__file__).resolve().parents[2]

HANDLERS = {
    # sleeps past its timeout, writing before and (it tries) after its deadline
    "sleepy": """
        import time, boto3
        def lambda_handler(event, context):
            db = boto3.client("dynamodb")
            db.put_item(TableName="coupons-jobs", Item={"pk": {"S": "before"}, "sk": {"S": "x"}})
            try:
                time.sleep(event.get("sleep", 1.5))
            except Exception:
                pass  # an `except Exception` must not keep a timed-out invocation alive
            try:
                db.put_item(TableName="coupons-jobs", Item={"pk": {"S": "after"}, "sk": {"S": "x"}})
            except Exception:
                db.put_item(TableName="coupons-jobs", Item={"pk": {"S": "swallowed"}, "sk": {"S": "x"}})
            return {"statusCode": 200, "body": "{}"}
    """,
    # a thread the invocation starts is fenced too
    "spawner": """
        import threading, time, boto3
        def lambda_handler(event, context):
            def later():
                time.sleep(0.8)
                boto3.client("dynamodb").put_item(TableName="coupons-jobs",
                                                  Item={"pk": {"S": "from-thread"}, "sk": {"S": "x"}})
            threading.Thread(target=later).start()
            return {"statusCode": 200, "body": "{}"}
    """,
    "spin": """
        def lambda_handler(event, context):
            n = 0
            while True:
                n += 1
    """,
    "big": """
        import json
        def lambda_handler(event, context):
            size = json.loads(event["body"])["size"]
            return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": "x" * size}
    """,
    "notjson": """
        def lambda_handler(event, context):
            return {"statusCode": 200, "body": object()}
    """,
    "quick": """
        import time
        def lambda_handler(event, context):
            return {"statusCode": 200, "body": str(context.get_remaining_time_in_millis())}
    """,
    # writes to /tmp; says what happened (and where)
    "scratch": """
        import errno, os, tempfile
        def lambda_handler(event, context):
            how, size, keep = event["how"], event["size"], event.get("keep", False)
            data = b"z" * size
            try:
                if how == "open":
                    path = os.path.join(tempfile.gettempdir(), event.get("name", "scratch.bin"))
                    with open(path, "wb") as handle:
                        handle.write(data)
                    if not keep:
                        os.remove(path)
                elif how == "text":
                    with open(os.path.join(tempfile.gettempdir(), "t.txt"), "w") as handle:
                        handle.write("z" * size)
                elif how == "temporary":
                    with tempfile.TemporaryFile() as handle:
                        handle.write(data)
                        handle.flush()
                elif how == "named":
                    with tempfile.NamedTemporaryFile() as handle:
                        handle.write(data)
                        handle.flush()
                elif how == "spooled":
                    with tempfile.SpooledTemporaryFile(max_size=1024) as handle:
                        handle.write(data)
                        handle.flush()
                return {"ok": True, "tmp": tempfile.gettempdir()}
            except OSError as error:
                return {"ok": False, "errno": error.errno, "tmp": tempfile.gettempdir()}
    """,
}


def make_function(name: str, *, timeout: int = 30, tmp_mb: int = 512, route: bool = False,
                  **more: Any) -> r.Function:
    routes = (r.Route("POST", f"/{name}", public=True),) if route else ()
    return r.Function(name=name, description=f"test {name}", routes=routes, timeout_seconds=timeout,
                      ephemeral_storage_mb=tmp_mb, **more)


@pytest.fixture
def functions_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, code in HANDLERS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text(textwrap.dedent(code))
    monkeypatch.setattr(r, "FUNCTIONS_DIR", tmp_path)
    return tmp_path


def keys_in(table: str) -> set[str]:
    # A test may scan: it reads everything stored to prove what is not there.
    return {i["pk"]["S"] for i in boto3.client("dynamodb").scan(TableName=table)["Items"]}


def wait_until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def lambda_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"lambda-{name}"]


# --- timeouts -------------------------------------------------------------------------------


def test_timeouts_come_from_resources_and_can_be_shortened_for_tests() -> None:
    assert limits.Limits({}).timeout_of(r.function("admin")) == r.function("admin").timeout_seconds == 10
    assert limits.Limits({}).timeout_of(r.function("generate_codes")) == 900
    shorter = limits.Limits({limits.TIMEOUTS_ENV: "admin=0.2,jobs=1"})
    assert (shorter.timeout_of(r.function("admin")), shorter.timeout_of(r.function("jobs"))) == (0.2, 1.0)
    assert shorter.timeout_of(r.function("redeem")) == 10
    assert limits.Limits({limits.TIMEOUTS_ENV: "0.5"}).timeout_of(r.function("reports")) == 0.5


def test_an_api_call_past_its_timeout_is_a_504_envelope_at_the_deadline(
        aws_env: Any, functions_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a route whose function sleeps past its (shortened) timeout
    sleepy = make_function("sleepy", route=True)
    monkeypatch.setattr(r, "FUNCTIONS", (sleepy,))
    monkeypatch.setenv(limits.TIMEOUTS_ENV, "sleepy=0.5")
    host = FunctionHost()
    host.handler(sleepy)  # the init (import) is not part of the invocation's time
    client = Client(Gateway(host, {}, "secret"))
    # When it is called
    started = time.monotonic()
    answer = client.post("/sleepy", json={"sleep": 1.5})
    elapsed = time.monotonic() - started
    # Then the gateway answers 504 in the envelope at the deadline, not when the function ends
    assert answer.status_code == 504
    body = json.loads(answer.data)
    assert body["error"]["code"] == "INTERNAL_ERROR" and "timeout" in body["error"]["message"]
    assert elapsed < 1.2
    # ... and nothing the function did after its deadline is committed, even what it tried to
    # do from `except Exception`; what it wrote before is (as on AWS)
    wait_until(lambda: not lambda_threads("sleepy"))
    time.sleep(0.2)
    assert keys_in("coupons-jobs") == {"before"}


def test_threads_an_invocation_started_are_fenced_at_its_deadline(
        aws_env: Any, functions_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawner = make_function("spawner")
    monkeypatch.setenv(limits.TIMEOUTS_ENV, "spawner=0.3")
    host = FunctionHost()
    assert host.invoke(spawner, {})["statusCode"] == 200  # the handler itself returned in time
    time.sleep(1.5)  # its thread wrote after the deadline: on Lambda the container was frozen
    assert "from-thread" not in keys_in("coupons-jobs")


def test_a_busy_loop_is_stopped_at_its_deadline(functions_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spin = make_function("spin")
    monkeypatch.setenv(limits.TIMEOUTS_ENV, "spin=0.3")
    with pytest.raises(limits.FunctionTimedOut):
        FunctionHost().invoke(spin, {})
    wait_until(lambda: not lambda_threads("spin"), timeout=5)


def test_the_context_tells_the_remaining_time_of_the_timeout(functions_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(limits.TIMEOUTS_ENV, "quick=2")
    remaining = int(FunctionHost().invoke(make_function("quick"), {})["body"])
    assert 1000 < remaining <= 2000


def test_a_timed_out_sqs_invocation_fails_and_the_message_comes_back(
        aws_env: Any, functions_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a queue consumer that times out
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="limits-test", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"sleep": 1.0}))
    consumer = make_function("sleepy", queue="limits-test")
    monkeypatch.setenv(limits.TIMEOUTS_ENV, "sleepy=0.3")
    stack = SimpleNamespace(functions=FunctionHost())
    poller = QueuePoller(stack, consumer, url)  # type: ignore[arg-type]
    # When the poller delivers it
    assert poller.poll_once() is True
    # Then the message was not deleted: it is received again after the visibility timeout
    time.sleep(1.2)
    again = sqs.receive_message(QueueUrl=url, AttributeNames=["All"]).get("Messages", [])
    assert len(again) == 1 and again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_timed_out_stream_invocation_is_retried_then_sent_to_the_dlq(
        aws_env: Any, functions_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName="limits-stream-dlq")["QueueUrl"]
    consumer = make_function("sleepy", stream_retry_attempts=1)
    monkeypatch.setenv(limits.TIMEOUTS_ENV, "sleepy=0.2")
    calls: list[int] = []
    host = FunctionHost()
    host.after_invoke = lambda: calls.append(1)
    stack = SimpleNamespace(functions=host, stopping=threading.Event())
    poller = StreamPoller(stack, consumer, "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/1",  # type: ignore[arg-type]
                          dlq)
    record = {"eventID": "1", "eventName": "INSERT", "dynamodb": {"SequenceNumber": "100"}}
    assert poller.deliver([{**record, "sleep": 0.5}]) == 1  # given up on after the retries
    assert len(calls) == 2  # the first attempt and one retry, both timed out
    [dead] = sqs.receive_message(QueueUrl=dlq).get("Messages", [])
    assert json.loads(dead["Body"])["first_sequence_number"] == "100"


# --- the 6 MB response cap ------------------------------------------------------------------


def test_a_response_over_6_mb_is_a_502_envelope(functions_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = make_function("big", route=True)
    notjson = make_function("notjson", route=True)
    monkeypatch.setattr(r, "FUNCTIONS", (big, notjson))
    client = Client(Gateway(FunctionHost(), {}, "secret"))
    fits = client.post("/big", json={"size": 6 * 1024 * 1024 - 1024})
    assert fits.status_code == 200 and len(fits.data) == 6 * 1024 * 1024 - 1024
    over = client.post("/big", json={"size": 6 * 1024 * 1024})  # plus the JSON around it: over the cap
    assert over.status_code == 502
    assert json.loads(over.data)["error"]["code"] == "INTERNAL_ERROR"
    assert "6291456" in json.loads(over.data)["error"]["message"]
    broken = client.post("/notjson", json={})
    assert broken.status_code == 502 and json.loads(broken.data)["error"]["code"] == "INTERNAL_ERROR"


def test_a_worker_response_over_6_mb_fails_the_invocation(functions_dir: Path) -> None:
    with pytest.raises(limits.ResponseTooLarge):
        FunctionHost().invoke(make_function("big"), {"body": json.dumps({"size": 7 * 1024 * 1024})})


# --- /tmp -----------------------------------------------------------------------------------

MB = 1024 * 1024


@pytest.mark.parametrize("how", ["open", "text", "temporary", "named", "spooled"])
def test_writing_past_the_functions_tmp_budget_fails_with_enospc(functions_dir: Path, how: str) -> None:
    # Given a function with 1 MB of ephemeral storage
    scratch = make_function("scratch", tmp_mb=1)
    host = FunctionHost()
    # Then writing half of it works, and writing past it fails in the function with ENOSPC
    fits = host.invoke(scratch, {"how": how, "size": MB // 2})
    assert fits["ok"] is True, fits
    over = host.invoke(scratch, {"how": how, "size": MB + 1})
    assert (over["ok"], over["errno"]) == (False, errno.ENOSPC)
    # ... in a directory of the function's own, not the machine's /tmp
    assert "scratch" in over["tmp"] and over["tmp"] != "/tmp"


def test_files_left_in_tmp_count_for_the_next_invocation_of_that_container(functions_dir: Path) -> None:
    scratch = make_function("scratch", tmp_mb=1)
    host = FunctionHost()
    assert host.invoke(scratch, {"how": "open", "size": 700 * 1024, "keep": True, "name": "a"})["ok"]
    # a warm container's /tmp keeps what it was left: 700 KB + 400 KB is past 1 MB
    assert host.invoke(scratch, {"how": "open", "size": 400 * 1024, "name": "b"})["errno"] == errno.ENOSPC
    # a function with the default 512 MB is not affected by another's budget
    roomy = dataclasses.replace(scratch, ephemeral_storage_mb=512)
    assert host.invoke(roomy, {"how": "open", "size": 2 * MB, "name": "c"})["ok"]


def test_concurrent_invocations_get_their_own_tmp(functions_dir: Path) -> None:
    scratch = make_function("scratch", tmp_mb=1)
    limits_ = limits.Limits({})
    first, second = limits_.slots(scratch).acquire(), limits_.slots(scratch).acquire()
    assert first != second
    limits_.slots(scratch).release(first, discard=False)
    assert limits_.slots(scratch).acquire() == first  # reused, like a warm container


def test_functions_use_tempfile_not_a_literal_tmp_path() -> None:
    # The budget is enforced in the directory tempfile gives; a literal "/tmp" would escape it.
    sources = [*ROOT.glob("functions/*/handler.py"), *ROOT.glob("layers/domain/python/coupons/**/*.py")]
    assert sources
    offenders = [str(p) for p in sources if '"/tmp' in p.read_text() or "'/tmp" in p.read_text()]
    assert offenders == []


def test_every_function_declares_its_ephemeral_storage() -> None:
    for function in r.FUNCTIONS:
        assert 512 <= function.ephemeral_storage_mb <= 10240, function.name
