"""Shared fixtures. End-to-end tests start `coupons-local serve` the way a user does and talk HTTP."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "coupons-local")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


# --- plaintext codes (issue 17, finding 3) --------------------------------------------------------
# Every code a test sends to a local stack (request bodies and `?code=`, the codes admin answers
# return, CSV uploads, codes a test names with `record_codes`) is looked for when the stack stops:
# in every item of every table, every event the bus ever carried (the local archive queue) and the
# stack's captured stdout/stderr (the functions' logs). A hit fails the stack's fixture teardown,
# so the session fails. Codes are compared normalised (upper-case, spaces and dashes removed) in a
# haystack normalised the same way, so `summer-25-vip`, `SUMMER25VIP` and `Summer 25 VIP` all match.
# Ids, blind indexes and ciphertexts are random: a code too short to be told from them by chance is
# not looked for (under 8 characters, or under 12 when it is all hex digits; tests use longer codes).
MIN_CODE_CHARS = 8
MIN_HEX_CODE_CHARS = 12
_NOT_IN_CODES = re.compile(r"[\s-]+")


def normalised_code(code: str) -> str | None:
    """The form a code is looked for in, or None when it is too short to be told from random text."""
    norm = _NOT_IN_CODES.sub("", code).upper()
    if not re.fullmatch(r"[A-Z0-9_]+", norm) or len(norm) < MIN_CODE_CHARS:
        return None
    if re.fullmatch(r"[0-9A-F]+", norm) and len(norm) < MIN_HEX_CODE_CHARS:
        return None
    return norm


def codes_in(value: Any) -> list[str]:
    """The codes a request or an answer carries: `code` and `codes` at any depth."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "error" and isinstance(inner, dict):
                continue  # the error envelope's `code` is ours (TRY_AGAIN, ...), logged by design
            if key == "code" and isinstance(inner, str):
                found.append(inner)
            elif key == "codes" and isinstance(inner, list):
                found.extend(c for c in inner if isinstance(c, str))
            else:
                found.extend(codes_in(inner))
    elif isinstance(value, list):
        for inner in value:
            found.extend(codes_in(inner))
    return found


def csv_codes(body: bytes) -> list[str]:
    """The `code` column of a CSV upload (a file without that header names no code: record it by hand)."""
    import csv
    import io

    try:
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    except (UnicodeDecodeError, csv.Error):
        return []
    if not rows:
        return []
    header = [name.strip().lower() for name in rows[0]]
    if "code" not in header:
        return []
    column = header.index("code")
    return [row[column] for row in rows[1:] if len(row) > column and row[column].strip()]


def served_logs(output: list[str]) -> str:
    """What `coupons-local serve` wrote, but the "Try it" help it prints once ready (its examples use the
    demo codes: documentation, not a log of what the stack did)."""
    kept, in_help = [], False
    for line in output:
        if line.startswith("ready: "):
            in_help = True
        elif in_help and line.strip() == "Stop with Ctrl-C.":
            in_help = False
            continue
        if not in_help:
            kept.append(line)
    return "".join(kept)


def _haystack(text: str) -> str:
    return _NOT_IN_CODES.sub("", text.upper())


def plaintext_hits(codes: set[str], sources: list[tuple[str, str]]) -> list[str]:
    """Where each code appears in the sources (name, text), with a little context."""
    wanted = {norm: code for code in codes if (norm := normalised_code(code))}
    hits = []
    for where, text in sources:
        hay = _haystack(text)
        for norm, code in sorted(wanted.items()):
            at = hay.find(norm)
            if at >= 0:
                hits.append(f"{code!r} in {where}: ...{hay[max(0, at - 120):at + len(norm) + 60]}...")
    return hits


@dataclass
class LocalStack:
    """A running `coupons-local serve` process and ways to talk to it."""

    port: int
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    _tokens: dict[tuple[str, str | None, bool, bool], str] = field(default_factory=dict)
    codes: set[str] = field(default_factory=set)  # every code sent to this stack (see plaintext_code_hits)
    archived: list[str] = field(default_factory=list)  # events read from the stack's archive queue so far
    _info: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, check=check, timeout=600)

    def info(self) -> dict[str, Any]:
        if self._info is None:  # the same for the stack's whole life
            self._info = dict(json.loads(self.cli("info", "--port", str(self.port)).stdout))
        return dict(self._info)

    def token(self, user: str, *, email: str | None = None, admin: bool = False,
              email_verified: bool = True) -> str:
        """`coupons-local token`: the email is verified unless `email_verified=False`."""
        key = (user, email, admin, email_verified)
        if key not in self._tokens:
            args = ["token", "--user", user] + (["--email", email] if email else []) + (["--admin"] if admin else [])
            args += [] if email_verified else ["--email-unverified"]
            self._tokens[key] = self.cli(*args).stdout.strip()
        return self._tokens[key]

    @property
    def admin_token(self) -> str:
        return self.token("test-admin", email="admin@example.com", admin=True)

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                raw: bytes | None = None, headers: dict[str, str] | None = None) -> HttpResult:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        self._record_request(path, body, raw)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, response_headers, payload = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, response_headers, payload = error.code, dict(error.headers), error.read()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        self.record_codes(*codes_in(parsed))  # an admin answer names the code (a generated one too)
        return HttpResult(status, response_headers, parsed, payload)

    # --- plaintext codes -----------------------------------------------------------------------

    def record_codes(self, *codes: str) -> None:
        """Codes this stack must never store, publish or log in plaintext (checked when it stops)."""
        self.codes.update(c for c in codes if isinstance(c, str) and c.strip())

    def record_csv(self, body: bytes) -> None:
        self.record_codes(*csv_codes(body))

    def _record_request(self, path: str, body: Any, raw: bytes | None) -> None:
        import urllib.parse

        if raw is not None:
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):  # the tests send malformed and absurdly deep bodies too
                body = None
        with contextlib.suppress(RecursionError):
            self.record_codes(*codes_in(body))
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        self.record_codes(*query.get("code", []))

    def archived_events(self) -> list[str]:
        """Every event the bus carried so far (the local archive queue is drained into `archived`)."""
        info = self.info()
        if not info.get("event_archive_url"):
            return self.archived
        sqs = self.boto("sqs")
        while True:
            messages = sqs.receive_message(QueueUrl=info["event_archive_url"], MaxNumberOfMessages=10,
                                           VisibilityTimeout=60, WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                return self.archived
            self.archived.extend(m["Body"] for m in messages)
            sqs.delete_message_batch(QueueUrl=info["event_archive_url"], Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])

    def settle_events(self, quiet_seconds: float = 3.0, timeout: float = 60.0) -> None:
        """Wait until no new event has reached the archive for `quiet_seconds` (the publisher is done)."""
        deadline = time.monotonic() + timeout
        seen, quiet_since = len(self.archived_events()), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_seconds:
            time.sleep(0.5)
            count = len(self.archived_events())
            if count != seen:
                seen, quiet_since = count, time.monotonic()

    def table_dumps(self) -> list[tuple[str, str]]:
        """Every item of every table, as JSON text per table (a Scan: this is a test, not a request path)."""
        dynamodb = self.boto("dynamodb")
        dumps = []
        for key, table in self.info()["tables"].items():
            items = [item for page in dynamodb.get_paginator("scan").paginate(TableName=table)
                     for item in page["Items"]]
            text = json.dumps(items, default=lambda b: base64.b64encode(bytes(b)).decode())
            dumps.append((f"table {key} ({len(items)} items)", text))
        return dumps

    def plaintext_code_hits(self) -> list[str]:
        """Where a recorded code appears in plaintext: tables, events, logs (empty when nowhere)."""
        sources: list[tuple[str, str]] = []
        if self.process.poll() is None:
            self.settle_events()
            sources.extend(self.table_dumps())
        sources.append((f"events ({len(self.archived)} archived)", "\n".join(self.archived)))
        sources.append(("the stack's logs (stdout/stderr)", served_logs(self.output)))
        return plaintext_hits(self.codes, sources)

    def admin(self, method: str, path: str, body: Any = None) -> HttpResult:
        return self.request(method, path, body, token=self.admin_token)

    def create_coupon(self, **fields: Any) -> dict[str, Any]:
        result = self.admin("POST", "/coupons", fields)
        assert result.status == 201, result.body
        return dict(result.body)

    def boto(self, service: str) -> Any:
        import boto3

        info = self.info()
        return boto3.client(service, endpoint_url=info["aws_endpoint"], region_name=info["region"],
                            aws_access_key_id="local", aws_secret_access_key="local")

    def stop(self, *, audit: bool = True) -> None:
        """Stop the stack; first look for every code it was sent in its tables, events and logs,
        and fail (after stopping it) if one is there in plaintext."""
        hits = self.plaintext_code_hits() if audit and self.codes else []
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.codes.clear()  # audited once
        assert not hits, "plaintext codes found:\n" + "\n".join(hits)


def start_stack(env: dict[str, str] | None = None, *, seed: bool = True, timeout: float = 120) -> LocalStack:
    port = free_port()
    args = [CLI, "serve", "--port", str(port)] + ([] if seed else ["--no-seed"])
    # Functions log at INFO, as on AWS (CDK's POWERTOOLS_LOG_LEVEL), so the plaintext audit sees what
    # CloudWatch would keep.
    level = {"POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO")}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **level, **(env or {})}, cwd=ROOT)
    stack = LocalStack(port, process)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.output.append(line)
            if line.startswith("ready: "):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            stack.stop(audit=False)
            raise RuntimeError("coupons-local serve did not become ready:\n" + "".join(stack.output[-50:]))
    if seed:
        from coupons_local.seed import DEMO_COUPONS

        stack.record_codes(*(str(c["code"]) for c in DEMO_COUPONS))
    return stack


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """One local stack per test process, with the demo coupons and default configuration."""
    running = start_stack()
    yield running
    running.stop()


@pytest.fixture
def make_stack() -> Iterator[Any]:
    """Start extra stacks with their own configuration (stopped after the test)."""
    started: list[LocalStack] = []

    def factory(env: dict[str, str] | None = None, *, seed: bool = False) -> LocalStack:
        started.append(start_stack(env, seed=seed))
        return started[-1]

    yield factory
    for running in started:
        running.stop()


def unique(prefix: str = "T") -> str:
    """A code nobody else in this run uses."""
    import secrets

    return f"{prefix}{secrets.token_hex(6).upper()}"


# --- integration: the real adapters against moto in-process, provisioned from resources.py ---


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto in-process, the local stack's resources, and the functions' environment; patched as the
    local stack's emulator is (BatchGetItem answers unordered, as DynamoDB's are)."""
    from coupons import wiring
    from coupons_local import moto_patches
    from coupons_local.provision import function_environment, provision
    from moto import mock_aws

    moto_patches.apply()

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        provisioned = provision()
        for key, value in function_environment(provisioned, {}).items():
            monkeypatch.setenv(key, value)
        wiring.reset()
        yield provisioned
        wiring.reset()
    os.environ.pop("AWS_ENDPOINT_URL", None)


class CallCounter:
    """Counts AWS API calls per service and operation with botocore's event hooks."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls[f"{model.service_model.service_name}:{model.name}"] += 1

    def attach(self, *services: str) -> CallCounter:
        from coupons.adapters import aws

        for service in services:
            aws.client(service).meta.events.register("before-call.*.*", self)
        return self

    def by_service(self, service: str) -> int:
        return sum(n for key, n in self.calls.items() if key.startswith(f"{service}:"))


@pytest.fixture
def count_calls(aws_env: Any) -> CallCounter:
    return CallCounter()
