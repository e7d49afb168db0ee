"""The `coupons-local` command line, as the contract describes it."""

from __future__ import annotations

import json

from conftest import LocalStack, free_port


def test_info_names_the_stack_resources(stack: LocalStack) -> None:
    info = stack.info()
    assert info["api_url"] == stack.url
    assert set(info["buckets"]) == {"imports", "reports", "exports"}
    assert {"coupons", "guards", "jobs"} <= set(info["tables"])
    assert info["aws_endpoint"].startswith("http://127.0.0.1:") and info["event_queue_url"]


def test_info_for_a_port_with_no_stack_fails_clearly(stack: LocalStack) -> None:
    done = stack.cli("info", "--port", str(free_port()), check=False)
    assert done.returncode != 0 and "no local stack" in done.stderr


def test_one_token_per_user_in_order(stack: LocalStack) -> None:
    lines = stack.cli("token", "--user", "ann", "--user", "ben").stdout.split()
    assert len(lines) == 2
    import jwt

    assert [jwt.decode(t, options={"verify_signature": False})["sub"] for t in lines] == ["ann", "ben"]


def test_a_job_that_refuses_its_input_exits_non_zero(stack: LocalStack) -> None:
    done = stack.cli("run", "daily-report", "--date", "2026-13-45", "--port", str(stack.port), check=False)
    assert done.returncode == 1
    assert json.loads(done.stderr)["error"]["code"] == "VALIDATION_ERROR"
