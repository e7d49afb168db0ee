"""Lockouts per customer, per shopper IP and per server client (issue 12), over HTTP.

A server's own IP is never a shopper's: a shop backend guessing for many customers from its one
address locks out none of them (and not the address), only itself, at its own, much higher limit.
One stack with small limits: 3 per customer, 5 per IP, 8 per client, a 12-second window. Every
test uses its own clients, customers and IPs; customers calling with their own token come from
127.0.0.1, the servers' address here too.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from checkout_helpers import ORDER, customer, validate
from conftest import HttpResult, LocalStack, start_stack, unique
from coupons_local import tokens

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("server-lockouts")]

PER_USER, PER_IP, PER_CLIENT, WINDOW = 3, 5, 8, 12


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalStack]:
    running = start_stack({
        "FAILED_ATTEMPTS_PER_USER": str(PER_USER), "FAILED_ATTEMPTS_PER_IP": str(PER_IP),
        "FAILED_ATTEMPTS_PER_CLIENT": str(PER_CLIENT), "FAILED_ATTEMPT_WINDOW_SECONDS": str(WINDOW),
    }, seed=False)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def valid_code(guarded: LocalStack) -> str:
    code = unique("GOOD-")
    guarded.create_coupon(code=code, discount_value=10, uses_per_user=None)
    return code


def fresh_bucket() -> None:
    """Start at the beginning of a window bucket, so every guess below counts in full."""
    time.sleep(WINDOW - time.time() % WINDOW + 0.05)


def check(stack: LocalStack, token: str, code: str, who: dict[str, Any] | None = None) -> HttpResult:
    body: dict[str, Any] = {"code": code, "channel": "web", "order": ORDER}
    if who is not None:
        body["customer"] = who
    return stack.request("POST", "/coupons/validate", body, token=token)


def status(result: HttpResult) -> tuple[int, str | None]:
    return result.status, result.error_code


NOT_FOUND, LOCKED = (404, "COUPON_NOT_FOUND"), (429, "RATE_LIMITED")


def test_a_shop_backend_guessing_for_many_customers_locks_out_only_itself(guarded: LocalStack,
                                                                         valid_code: str) -> None:
    backend = tokens.issue_access(unique("backend-"))
    fresh_bucket()
    # Given more guesses than the per-IP limit, from one server address, each for another customer
    answers = [status(check(guarded, backend, unique("NOPE"), {"id": unique("c-")})) for _ in range(PER_CLIENT)]
    assert answers == [NOT_FOUND] * PER_CLIENT  # past PER_IP already: the server's address is not counted
    # Then the client's own limit locks the client, valid code or not
    for code in (unique("NOPE"), valid_code):
        locked = check(guarded, backend, code, {"id": unique("c-")})
        assert status(locked) == LOCKED and 1 <= int(locked.headers["Retry-After"]) <= 2 * WINDOW
    # And nobody else: another server, and a customer calling from the same address (127.0.0.1)
    assert check(guarded, tokens.issue_access(unique("pos-")), valid_code, {"id": unique("c-")}).status == 200
    assert validate(guarded, customer(), valid_code).status == 200


def test_the_shoppers_ip_a_server_names_is_counted_as_that_shoppers(guarded: LocalStack, valid_code: str) -> None:
    pos = tokens.issue_access(unique("pos-"))
    ip, other_ip = "198.51.100.77", "198.51.100.78"
    fresh_bucket()
    answers = [status(check(guarded, pos, unique("NOPE"), {"id": unique("c-"), "ip": ip})) for _ in range(PER_IP)]
    assert answers == [NOT_FOUND] * PER_IP
    # That address is locked out for any customer, valid code or not; the next address is not
    assert status(check(guarded, pos, valid_code, {"id": unique("c-"), "ip": ip})) == LOCKED
    assert status(check(guarded, pos, valid_code, {"ip": ip})) == LOCKED  # a guest from there too
    assert check(guarded, pos, valid_code, {"id": unique("c-"), "ip": other_ip}).status == 200
    # (one spelling per address: the IPv6 form of another address is counted under its own key)
    assert check(guarded, pos, valid_code, {"id": unique("c-"), "ip": "2001:DB8::1"}).status == 200


def test_a_customer_is_one_person_for_the_lockout_through_a_server_and_their_own_token(
        guarded: LocalStack, valid_code: str) -> None:
    backend = tokens.issue_access(unique("backend-"))
    person = unique("cust-")
    fresh_bucket()
    answers = [status(check(guarded, backend, unique("NOPE"), {"id": person})) for _ in range(PER_USER)]
    assert answers == [NOT_FOUND] * PER_USER
    # The customer's own token is locked out too (the same person), valid code or not
    assert status(validate(guarded, customer(person), valid_code)) == LOCKED
    assert status(check(guarded, backend, valid_code, {"id": person})) == LOCKED
    # Other customers of the same server are not
    assert check(guarded, backend, valid_code, {"id": unique("c-")}).status == 200
    assert validate(guarded, customer(), valid_code).status == 200


def test_suspicious_in_the_report_names_the_client(guarded: LocalStack) -> None:
    client_id = unique("crawler-")
    crawler = tokens.issue_access(client_id)
    person = unique("cust-")
    fresh_bucket()
    for _ in range(PER_USER):  # locks the customer out, through this client
        assert status(check(guarded, crawler, unique("NOPE"), {"id": person})) == NOT_FOUND
    for _ in range(PER_CLIENT - PER_USER):  # then the client itself
        assert status(check(guarded, crawler, unique("NOPE"), {"id": unique("c-")})) == NOT_FOUND
    assert status(check(guarded, crawler, unique("NOPE"), {"id": unique("c-")})) == LOCKED
    today = datetime.now(UTC).date().isoformat()
    report = guarded.admin("GET", f"/reports/summary?from={today}&to={today}")
    assert report.status == 200, report.body
    mine = [s for s in report.body["suspicious"] if s.get("client_id") == client_id]
    assert {(s["kind"], s["scope"]) for s in mine} == {("lockout", "user"), ("lockout", "client")}, mine
    assert next(s for s in mine if s["scope"] == "user")["user_id"] == person
    assert next(s for s in mine if s["scope"] == "client")["limit"] == PER_CLIENT
    # and the day's suspicious.csv has a client_id column naming it
    guarded.cli("run", "daily-report", "--date", today, "--port", str(guarded.port))
    info = guarded.info()
    s3 = guarded.boto("s3")
    text = s3.get_object(Bucket=info["buckets"]["reports"], Key=f"daily/{today}/suspicious.csv")["Body"].read()
    rows = list(csv.DictReader(io.StringIO(text.decode())))
    assert {(r["scope"], r["client_id"]) for r in rows if r["client_id"] == client_id} == \
        {("user", client_id), ("client", client_id)}
