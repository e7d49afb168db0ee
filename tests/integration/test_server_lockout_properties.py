"""Property test (issue 12): lockouts per customer, per shopper IP and per server client, under any interleaving.

Guesses by server clients (for a named customer or a guest, with or without a shopper IP) and by
customers with their own tokens race; hypothesis picks the order of every AWS call (interleave.py).
The invariants, per subject (each client, each customer, each shopper IP):

- no more failures are answered 404 than its limit, and its counter holds exactly those;
- a customer is one subject whether a server names them or they call with their own token;
- a server's own address is never counted: only the shopper IPs the servers name, and the
  customers' own addresses;
- every 429 has a reason: one of the guess's subjects was at its limit when it was refused.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import boto3
from coupons import wiring
from coupons.adapters import aws
from coupons.adapters.checkout_store import CheckoutStore
from coupons.checkout import CheckoutService
from coupons.errors import CouponNotFound, RateLimited
from coupons.http import Identity
from coupons.models import ValidateRequest
from coupons.settings import get_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interleave import Interleaver
from test_checkout_store import ORDER, aws_env

__all__ = ["aws_env"]  # a fixture, used by name

_runs = itertools.count()
WINDOW = 10
MOMENT = 1_900_000_000 + 5  # mid-bucket; the bucket before is empty, so the estimate is the count
SERVER_ADDRESS = "10.77.0.1"  # where every server call comes from


def guess(code: str, customer: dict[str, Any] | None) -> ValidateRequest:
    body: dict[str, Any] = {"code": code, "channel": "web", "order": ORDER}
    if customer is not None:
        body["customer"] = customer
    return ValidateRequest.model_validate(body)


def server(client_id: str) -> Identity:
    return Identity(user_id=f"client:{client_id}", email=None, groups=frozenset(), ip=SERVER_ADDRESS,
                    user_agent="pos/1.0", client_id=client_id, scopes=frozenset({"coupons/checkout"}))


def person(user: str, ip: str) -> Identity:
    return Identity(user_id=user, email=None, groups=frozenset(), ip=ip, user_agent="app/1.0")


# (who: a client index, or -1 for the customer's own token; customer index or None; shopper IP index or None)
GUESS = st.tuples(st.integers(-1, 1), st.one_of(st.none(), st.integers(0, 2)), st.one_of(st.none(), st.integers(0, 1)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), per_user=st.integers(1, 3), per_ip=st.integers(1, 4), per_client=st.integers(1, 5),
       guesses=st.lists(GUESS, min_size=2, max_size=9))
def test_no_subject_gets_more_404s_than_its_limit_and_servers_addresses_are_never_counted(
        aws_env: Any, data: st.DataObject, per_user: int, per_ip: int, per_client: int,
        guesses: list[tuple[int, int | None, int | None]]) -> None:
    run = next(_runs)
    clients = [f"r{run}-client{n}" for n in range(2)]
    customers = [f"r{run}-cust{n}" for n in range(3)]
    ips = [f"203.0.{run % 250}.{n + 1}" for n in range(2)]
    wiring.cipher()  # the keyring is warm: the actors make DynamoDB calls only
    interleaver = Interleaver(aws.client("dynamodb"))
    s = get_settings().model_copy(update={
        "failed_attempts_per_user": per_user, "failed_attempts_per_ip": per_ip,
        "failed_attempts_per_client": per_client, "failed_attempt_window_seconds": WINDOW})
    store = CheckoutStore(interleaver.client, s.coupons_table, s.guards_table)
    at = datetime.fromtimestamp(MOMENT, UTC)
    subjects_of: dict[str, list[tuple[str, str]]] = {}  # guess -> its (scope, subject)s
    actors = {}
    for n, (who, cust, ip) in enumerate(guesses):
        name = f"guess-{n}"
        if who == -1:  # the customer's own token, from their own address (or a guest: a customer with no name)
            user = customers[cust if cust is not None else 0]
            address = ips[ip if ip is not None else 0]
            caller, body = person(user, address), None
            subjects_of[name] = [("user", user), ("ip", address)]
        else:
            caller = server(clients[who])
            body = {k: v for k, v in (("id", None if cust is None else customers[cust]),
                                      ("ip", None if ip is None else ips[ip])) if v is not None}
            subjects_of[name] = [("client", clients[who])] + [(scope, body[key]) for scope, key in
                                                              (("user", "id"), ("ip", "ip")) if key in body]
        checkout = CheckoutService(store, wiring.cipher, s, clock=lambda: at, sleep=lambda _: None)
        actors[name] = (lambda c=checkout, caller=caller, body=body, n=n:
                        c.validate(guess(f"NOPE{run}X{n}", body), caller))
    results = interleaver.run(actors, lambda waiting: data.draw(st.sampled_from(waiting)))
    answers = {name: type(outcome) for name, outcome in results.items()}
    assert set(answers.values()) <= {CouponNotFound, RateLimited}, (results, interleaver.trace)
    limits = {"user": per_user, "ip": per_ip, "client": per_client}
    context = (per_user, per_ip, per_client, guesses, results, interleaver.trace)
    counted: dict[tuple[str, str], int] = {}
    for scope, subject in {pair for pairs in subjects_of.values() for pair in pairs} | {("ip", SERVER_ADDRESS)}:
        stored = boto3.client("dynamodb").get_item(
            TableName=s.guards_table, Key={"pk": {"S": f"FAIL#{scope}#{subject}"}, "sk": {"S": "WINDOW"}},
            ConsistentRead=True).get("Item")
        count = int(stored["current"]["N"]) if stored else 0
        answered = sum(1 for name, pairs in subjects_of.items()
                       if (scope, subject) in pairs and answers[name] is CouponNotFound)
        assert count == answered, (scope, subject, count, answered, context)  # every 404 counted, nothing else
        assert count <= limits[scope], (scope, subject, context)
        counted[(scope, subject)] = count
    assert counted[("ip", SERVER_ADDRESS)] == 0, context  # a server's own address is never a shopper's
    refused = [name for name, kind in answers.items() if kind is RateLimited]
    for name in refused:
        # A reason: one of its subjects was full when it was refused. That counter held this run's 404s
        # and, perhaps, the counts of other guesses in flight that were refused in the end (taken back).
        pairs = subjects_of[name]
        assert any(counted[pair] + sum(pair in subjects_of[other] for other in refused if other != name)
                   >= limits[pair[0]] for pair in pairs), (name, context)
