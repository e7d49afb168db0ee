"""Abuse defences over HTTP: uniform 404s, lockouts per user and per IP, fraud flags, the global domain list.

One stack with small limits (3 failures per user, 15 per IP, an 8-second window, 3
distinct users per IP) and ALLOWED_DOMAINS=example.com. The tests share that stack's
IP (127.0.0.1) and run in order in one worker.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from checkout_helpers import customer, dynamodb, redeem, validate
from conftest import HttpResult, LocalStack, start_stack, unique

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("lockouts")]

PER_USER, PER_IP, WINDOW, DISTINCT = 3, 15, 8, 3


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalStack]:
    running = start_stack({
        "FAILED_ATTEMPTS_PER_USER": str(PER_USER), "FAILED_ATTEMPTS_PER_IP": str(PER_IP),
        "FAILED_ATTEMPT_WINDOW_SECONDS": str(WINDOW), "FRAUD_DISTINCT_USERS_PER_IP": str(DISTINCT),
        "ALLOWED_DOMAINS": "example.com",
    }, seed=False)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def valid_code(guarded: LocalStack) -> str:
    code = unique("GOOD-")
    guarded.create_coupon(code=code, discount_value=10, uses_per_user=None)
    return code


def shopper() -> str:
    return customer(unique("shopper-"), email=f"{unique('s')}@example.com")


def retry_after(result: HttpResult) -> int:
    headers = {k.lower(): v for k, v in result.headers.items()}
    assert (result.status, result.error_code) == (429, "RATE_LIMITED"), result.body
    seconds = int(headers["retry-after"])
    assert 1 <= seconds <= 2 * WINDOW + 1
    return seconds


def guard_items(stack: LocalStack, pk: str) -> list[dict[str, Any]]:
    client, table = dynamodb(stack, "guards")
    return list(client.query(TableName=table, KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": {"S": pk}}, ConsistentRead=True)["Items"])


def start_of_a_bucket() -> None:
    """Wait for a fresh window bucket, so that the guesses that follow are all counted in full.

    (The sliding window weighs the previous bucket less as time passes: guesses straddling a
    bucket edge would count a little under their number, which is right but not what a test
    of "exactly the limit" wants.)
    """
    time.sleep(WINDOW - time.time() % WINDOW + 0.05)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def at_once(calls: list[Callable[[], HttpResult]]) -> list[HttpResult]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_40_parallel_wrong_guesses_by_one_user_get_no_more_404s_than_the_limit(
        guarded: LocalStack, valid_code: str) -> None:
    # (First in the module: this IP has no failures yet, so only the user's limit binds.)
    token = shopper()
    start_of_a_bucket()  # (a burst straddling a bucket edge may get fewer than the limit, never more)
    # When one customer sends 40 wrong guesses at once
    answers = at_once([lambda: validate(guarded, token, unique("BURST-")) for _ in range(40)])
    # Then exactly the limit were answered 404, every other one 429 with a Retry-After
    assert Counter((a.status, a.error_code) for a in answers) == Counter(
        {(404, "COUPON_NOT_FOUND"): PER_USER, (429, "RATE_LIMITED"): 40 - PER_USER})
    for answer in answers:
        if answer.status == 429:
            retry_after(answer)
    # And the customer is locked out, valid code or not, and flagged once
    retry_after(validate(guarded, token, valid_code))
    flags = [i for i in guard_items(guarded, f"FRAUD#{today()}")
             if i["kind"]["S"] == "lockout" and i.get("user_id", {}).get("S") == locked_user(token)]
    assert len(flags) == 1 and int(flags[0]["limit"]["N"]) == PER_USER


def test_unknown_malformed_and_deleted_codes_get_the_same_404_and_count_as_guesses(
        guarded: LocalStack, valid_code: str) -> None:
    # Given a deleted coupon and a customer
    gone = unique("GONE-")
    coupon = guarded.create_coupon(code=gone, discount_value=10)
    assert guarded.admin("DELETE", f"/coupons/{coupon['id']}").status == 204
    token = shopper()
    start_of_a_bucket()
    # When the customer tries an unknown, a malformed and a deleted code
    answers = [validate(guarded, token, unique("NOPE-")), redeem(guarded, token, "!!not a code!!"),
               validate(guarded, token, gone.lower())]
    # Then the three answers are byte for byte the same 404
    assert {(a.status, a.raw) for a in answers} == {(404, answers[0].raw)}
    assert answers[0].body == {"error": {"code": "COUPON_NOT_FOUND", "message": "No such coupon."}}
    assert {a.headers.get("Content-Type") for a in answers} == {"application/json"}
    # And they were three failed guesses: this user is now locked out, even with a valid code
    locked = validate(guarded, token, valid_code)
    wait = retry_after(locked)
    assert retry_after(redeem(guarded, token, valid_code)) >= 1
    # While another customer (same IP, under its limit) is not
    assert validate(guarded, shopper(), valid_code).status == 200
    # And the lockout was recorded, without any code
    flags = [i for i in guard_items(guarded, f"FRAUD#{today()}") if i["kind"]["S"] == "lockout"]
    assert any(f["scope"]["S"] == "user" and f["user_id"]["S"] == locked_user(token) for f in flags)
    assert gone.upper() not in json.dumps(flags).upper()
    # Until the window frees up
    time.sleep(wait)
    assert validate(guarded, token, valid_code).status == 200


def locked_user(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def test_an_ip_past_its_limit_is_locked_for_everyone_valid_code_or_not(guarded: LocalStack, valid_code: str) -> None:
    failed_before = sum(int(i["count"]["N"]) for i in guard_items(guarded, f"FAILED#{today()}"))
    start_of_a_bucket()
    # Given guesses from many users of one IP, each under the per-user limit
    answers = []
    for _ in range(PER_IP):
        token = shopper()
        for _ in range(PER_USER - 1):
            answers.append(validate(guarded, token, unique("GUESS-")))
            if answers[-1].status == 429:
                break
        if answers[-1].status == 429:
            break
    # Then once the IP is past its limit, every request from it is refused
    assert answers[-1].status == 429 and {a.status for a in answers[:-1]} == {404}
    newcomer = shopper()
    wait = retry_after(validate(guarded, newcomer, valid_code))
    retry_after(redeem(guarded, newcomer, valid_code))
    # And the failures were counted for the reports, and the IP lockout flagged
    failed_after = sum(int(i["count"]["N"]) for i in guard_items(guarded, f"FAILED#{today()}"))
    assert failed_after - failed_before == len(answers) - 1
    flags = guard_items(guarded, f"FRAUD#{today()}")
    assert any(f["kind"]["S"] == "lockout" and f["scope"]["S"] == "ip" and f["ip"]["S"] == "127.0.0.1"
               for f in flags)
    assert "lockout" in fraud_event_kinds(guarded, "lockout")
    # Until the window frees up
    time.sleep(wait)
    assert validate(guarded, newcomer, valid_code).status == 200


def test_one_ip_redeeming_for_many_users_is_flagged_and_published(guarded: LocalStack) -> None:
    code = unique("MANY-")
    guarded.create_coupon(code=code, discount_value=10, uses_per_user=None)
    for _ in range(DISTINCT):
        assert redeem(guarded, shopper(), code).status == 201
    flags = [f for f in guard_items(guarded, f"FRAUD#{today()}") if f["kind"]["S"] == "many_users_one_ip"]
    assert len(flags) == 1 and flags[0]["ip"]["S"] == "127.0.0.1" and int(flags[0]["count"]["N"]) == DISTINCT
    # The outbox publishes the flag as a FraudSuspected event on the bus
    assert "many_users_one_ip" in fraud_event_kinds(guarded, "many_users_one_ip")


def fraud_event_kinds(stack: LocalStack, wanted: str) -> set[str]:
    """Drain the stack's event tap until a FraudSuspected event of that kind arrives (or 30 s)."""
    sqs = stack.boto("sqs")
    queue = stack.info()["event_queue_url"]
    kinds: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and wanted not in kinds:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            event = json.loads(message["Body"])
            if event.get("detail-type") == "FraudSuspected":
                kinds.add(event["detail"]["kind"])
                assert "code" not in event["detail"]
    return kinds


def test_the_global_domain_list_restricts_every_coupon(guarded: LocalStack, valid_code: str) -> None:
    outsider = customer(unique("out-"), email="someone@other.example")
    assert validate(guarded, outsider, valid_code).error_code == "DOMAIN_NOT_ALLOWED"
    assert validate(guarded, customer(unique("anon-")), valid_code).error_code == "DOMAIN_NOT_ALLOWED"
    # A coupon's own list and the global one both apply
    corp = unique("CORP-")
    guarded.create_coupon(code=corp, discount_value=10, allowed_domains=["corp.example"])
    assert validate(guarded, shopper(), corp).error_code == "DOMAIN_NOT_ALLOWED"
    assert validate(guarded, customer(unique("c-"), email="x@corp.example"), corp).error_code == "DOMAIN_NOT_ALLOWED"


def test_40_parallel_wrong_guesses_from_one_ip_get_no_more_404s_than_the_limit(guarded: LocalStack) -> None:
    # Given an IP with no failure in this window or the previous one
    start_of_a_bucket()
    start_of_a_bucket()
    failed_before = sum(int(i["count"]["N"]) for i in guard_items(guarded, f"FAILED#{today()}"))
    # When 40 customers behind it send one wrong guess each, at once
    tokens = [shopper() for _ in range(40)]
    answers = at_once([lambda t=t: redeem(guarded, t, unique("IPBURST-")) for t in tokens])
    # Then exactly the IP's limit were answered 404, and only those were counted as failures
    assert Counter((a.status, a.error_code) for a in answers) == Counter(
        {(404, "COUPON_NOT_FOUND"): PER_IP, (429, "RATE_LIMITED"): 40 - PER_IP})
    failed_after = sum(int(i["count"]["N"]) for i in guard_items(guarded, f"FAILED#{today()}"))
    assert failed_after - failed_before == PER_IP
    # Leave the IP free for whatever runs next
    time.sleep(max(retry_after(a) for a in answers if a.status == 429))
