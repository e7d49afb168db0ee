"""Shared fixtures. End-to-end tests start `coupons-local serve` the way a user does and talk HTTP."""

from __future__ import annotations

import json
import os
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


@dataclass
class LocalStack:
    """A running `coupons-local serve` process and ways to talk to it."""

    port: int
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    _tokens: dict[tuple[str, str | None, bool, bool], str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, check=check, timeout=600)

    def info(self) -> dict[str, Any]:
        return dict(json.loads(self.cli("info", "--port", str(self.port)).stdout))

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
        return HttpResult(status, response_headers, parsed, payload)

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

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_stack(env: dict[str, str] | None = None, *, seed: bool = True, timeout: float = 120) -> LocalStack:
    port = free_port()
    args = [CLI, "serve", "--port", str(port)] + ([] if seed else ["--no-seed"])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})}, cwd=ROOT)
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
            stack.stop()
            raise RuntimeError("coupons-local serve did not become ready:\n" + "".join(stack.output[-50:]))
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
