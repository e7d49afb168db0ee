"""Checkout use cases: validate a code against an order, redeem it, read and roll back redemptions.

Cost per request (DynamoDB calls; KMS never, the keyring is cached per container):

- validate: 1 BatchGetItem (coupon under every key version, the customer's usage of it,
  the failure counters of the customer, the shopper's IP and the server client, those
  that apply); the first read of a code in a container adds 1 GetItem (the usage is kept
  by coupon id; see checkout_store, "Usage by coupon id"). A failed guess adds one
  conditional UpdateItem per counter (counted before it is answered) and the day's total.
- redeem: the same read, then 1 TransactWriteItems (redemption record, counter,
  usage) on the success path; a user's first redemption from an IP in a window
  adds 1 UpdateItem (the IP's distinct users).
- rollback: 1 GetItem + 1 TransactWriteItems.

Who the checkout is for comes from coupons.shoppers: the caller's own person, or the
customer (or guest) a server names. Failed guesses count per customer, per shopper IP and
per server client (a server's own IP is never a shopper's).

Failed guesses are counted first and answered after: the store's conditional increment
decides whether a guess still fits under every subject's limit (404) or not
(429), so a burst of parallel guesses whose reads all saw no failure still gets no more
than the limit of 404s (see guards, "Counting under concurrency"). The check on the read
is only a fast path that answers 429 sooner; it never lets a guess through.

Caps hold in the store: the transaction's conditions re-check everything the read
saw (status, dates, the coupon's version, the cap, the user's uses), so a lost
race fails the transaction and is retried from what the failed conditions
returned (ReturnValuesOnConditionCheckFailure=ALL_OLD), never over-admitted.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .adapters.checkout_store import (
    Cancelled,
    CheckoutStore,
    Snapshot,
    StoreBusy,
    cap_value,
    fraud_flag,
)
from .adapters.coupon_store import coupon_record
from .clock import epoch, iso, parse_iso, utcnow
from .codes import normalise
from .crypto import CodeCipher, refreshed
from .errors import (
    AlreadyRolledBack,
    CouponNotFound,
    Forbidden,
    IdempotencyConflict,
    RateLimited,
    RedemptionNotFound,
    RuleViolation,
    TryAgain,
    rule_violation,
)
from .guards import Policy, crosses, distinct_users
from .lockouts import FailedGuesses, Subject
from .models import RedeemRequest, ValidateRequest
from .pricing import Attempt, Quote, Terms, Usage, evaluate, lines_of
from .settings import Settings
from .shoppers import Caller, Shopper, shopper_of

# Hashed in place of a malformed code so that the lookup does the same work; lower-case,
# so never a normalised code, so never stored.
PLACEHOLDER = "malformed-code"
REDEMPTION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://coupons.invalid/redemptions")
LOGICAL_ATTEMPTS = 8  # lost races (another writer changed what the read saw), re-decided from ALL_OLD
BUSY_ATTEMPTS = 4  # throttling / TransactionConflict / timeouts before answering 503
BACKOFF_BASE_SECONDS = 0.02
RETRY_AFTER_SECONDS = 1
EXHAUSTED_HINT_SECONDS = 30  # how long "every shard was empty" is believed without trying again
SHARD_VIEW_SECONDS = 1.0  # how long a container steers by its last read of a hot coupon's shards


class Signals(Protocol):
    def count(self, name: str, value: int = 1) -> None: ...


class _NoSignals:
    def count(self, name: str, value: int = 1) -> None:
        return None


@dataclass(frozen=True)
class Redeemed:
    view: dict[str, Any]
    created: bool  # False: a replay of an order already redeemed (200, nothing counted again)


def redemption_id(coupon_id: str, order_id: str, owner: str) -> str:
    """Deterministic: the same order of the same caller on the same coupon is the same redemption.

    `owner` is whose order ids these are (Shopper.order_owner: `user:<sub>` or `client:<client_id>`):
    another caller's identical order id is another order (issue 12). An order id has no newline.
    """
    return str(uuid.uuid5(REDEMPTION_NAMESPACE, f"{coupon_id}\n{owner}\n{order_id}"))


def order_fingerprint(user_id: str | None, request: RedeemRequest) -> str:
    """Who, where and what: a replay must match it, a different order under the same id must not."""
    lines = sorted([i.product_id, i.category, i.unit_price, i.quantity] for i in request.order.items)
    canonical = json.dumps({"user": user_id, "channel": request.channel, "currency": request.order.currency,
                            "items": lines}, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def order_totals(item: dict[str, Any]) -> dict[str, int]:
    """The order a redemption belongs to (issue 12); computed for a record stored before they were kept."""
    subtotal = int(item.get("order_subtotal") or 0)
    shipping = int(item.get("shipping_amount") or 0)
    total = item.get("total_after_discount")
    return {"order_subtotal": subtotal, "shipping_amount": shipping,
            "total_after_discount": int(total) if total is not None
            else subtotal + shipping - int(item["discount_amount"])}


def redemption_view(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "redemption_id": item["redemption_id"],
        "coupon_id": item["coupon_id"],
        "order_id": item["order_id"],
        "user_id": item.get("user_id"),
        "discount_amount": int(item["discount_amount"]),
        "currency": item["currency"],
        **order_totals(item),
        "status": item["status"],
        "redeemed_at": parse_iso(item["redeemed_at"]),
        "channel": item.get("channel"),
        "rolled_back_at": parse_iso(item["rolled_back_at"]) if item.get("rolled_back_at") else None,
    }


def _is_redemption_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class CheckoutService:
    def __init__(self, store: CheckoutStore, cipher: Callable[[], CodeCipher], settings: Settings, *,
                 clock: Callable[[], datetime] = utcnow, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, signals: Signals | None = None) -> None:
        self._store = store
        self._cipher = cipher
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._signals = signals or _NoSignals()
        self.policy = Policy(settings.failed_attempts_per_user, settings.failed_attempts_per_ip,
                             settings.failed_attempt_window_seconds, settings.failed_attempts_per_client)
        self._guesses = FailedGuesses(store, self.policy, self._signals, self._backoff)
        # coupon id -> (when read, cap, shard -> remaining): this container's last read of a hot coupon's shards
        self._shard_views: dict[str, tuple[float, int, dict[int, int]]] = {}

    # --- validate --------------------------------------------------------------------------

    def validate(self, request: ValidateRequest, caller: Caller) -> dict[str, Any]:
        who = shopper_of(request.customer, caller)
        now = self._clock()
        snapshot = self._guarded_read(request.code, who, now, ip_users=False)
        quote = self._quote(snapshot, request, who, now)
        return quote.as_response()

    # --- redeem ----------------------------------------------------------------------------

    def redeem(self, request: RedeemRequest, caller: Caller) -> Redeemed:
        who = shopper_of(request.customer, caller)
        now = self._clock()
        snapshot = self._guarded_read(request.code, who, now, ip_users=True)
        ip_users = (snapshot.ip_users_previous, snapshot.ip_users_current)
        fingerprint = order_fingerprint(who.user_id, request)
        attempt_id = uuid.uuid4().hex  # tells our own committed-but-unacknowledged write from a replay
        search = _ShardSearch()
        busy = 0
        logical = 0
        while logical < LOGICAL_ATTEMPTS:
            coupon = snapshot.coupon
            if coupon is None:
                raise CouponNotFound()  # deleted between our reads: not a guess, not counted
            rid = redemption_id(coupon["coupon_id"], request.order_id, who.order_owner)
            try:
                quote = self._quote(snapshot, request, who, now)
                shard = self._pick_shard(coupon, search, now)
            except RuleViolation as violation:
                return self._replay_or(rid, fingerprint, attempt_id, violation)
            except (_Reread, StoreBusy) as reason:
                busy = self._backoff(busy) if isinstance(reason, StoreBusy) else busy
                logical += 1
                snapshot = self._reread(request.code, who)
                continue
            record = self._record(rid, coupon, quote, request, who, fingerprint, now, shard)
            record["attempt_id"] = attempt_id
            try:
                self._store.commit_redemption(record, coupon=coupon, now=now, shard=shard)
            except StoreBusy:
                busy = self._backoff(busy)
                snapshot = self._reread(request.code, who)
                continue
            except Cancelled as cancelled:
                if cancelled.failed(0):  # this order was redeemed already: a replay, or a different order
                    return self._replay(cancelled.old(0), fingerprint, attempt_id)
                if cancelled.failed(1) and shard is not None and not cancelled.failed(2):
                    # That shard is empty. Read them all (consistently) once, then try only those with room:
                    # "exhausted" is said only when every shard has been seen empty.
                    search.tried.add(shard)
                    if not search.fresh:
                        try:
                            search.room = self._shard_room(coupon, now, fresh=True)
                            search.fresh = True
                        except StoreBusy:
                            busy = self._backoff(busy)
                    continue
                logical += 1
                if cancelled.failed(1):
                    old = cancelled.old(1)
                    if shard is not None:
                        search.tried.add(shard)
                    elif old is None or old.get("coupon_id") != coupon["coupon_id"]:
                        snapshot = self._reread(request.code, who)  # deleted or re-coded under us
                    else:
                        snapshot.coupon = coupon_record(old)  # re-decide from the coupon as it is
                if cancelled.failed(2):
                    snapshot.usage = cancelled.old(2)  # this user's uses as they are now
                continue
            self._after_redemption(who, now, ip_users)
            return Redeemed(self._view_of_record(record), created=True)
        raise TryAgain(retry_after=RETRY_AFTER_SECONDS)

    def _record(self, rid: str, coupon: dict[str, Any], quote: Quote, request: RedeemRequest, who: Shopper,
                fingerprint: str, now: datetime, shard: int | None) -> dict[str, Any]:
        return {
            "redemption_id": rid,
            "coupon_id": coupon["coupon_id"],
            "campaign_id": coupon.get("campaign_id"),
            "code_hash": coupon["code_hash"],
            "order_id": request.order_id,
            "order_fingerprint": fingerprint,
            "user_id": who.user_id,  # None: a guest
            "ip": who.ip,  # the shopper's: a server's own IP is never recorded as one
            "user_agent": who.user_agent,
            "caller": who.caller,  # customer | admin | server
            "client_id": who.client_id,
            "channel": request.channel,
            "discount_type": quote.discount_type,
            "discount_amount": quote.discount_amount,
            "currency": quote.currency,
            "order_subtotal": quote.order_subtotal,
            "shipping_amount": 0,  # orders carry no shipping yet
            "total_after_discount": quote.total_after_discount,
            "eligible_subtotal": quote.eligible_subtotal,
            "status": "redeemed",
            "redeemed_at": now,
            "shard": shard,
        }

    @staticmethod
    def _view_of_record(record: dict[str, Any]) -> dict[str, Any]:
        view = {k: record[k] for k in ("redemption_id", "coupon_id", "order_id", "user_id", "discount_amount",
                                       "currency", "order_subtotal", "shipping_amount", "total_after_discount",
                                       "status", "redeemed_at", "channel")}
        view["rolled_back_at"] = None
        return view

    def _replay_or(self, rid: str, fingerprint: str, attempt_id: str, violation: RuleViolation) -> Redeemed:
        """A rule says no; but if this very order was redeemed already, the answer is that redemption."""
        existing = self._with_busy_retry(lambda: self._store.get_redemption(rid))
        if existing is None:
            raise violation
        return self._replay(existing, fingerprint, attempt_id)

    @staticmethod
    def _replay(existing: dict[str, Any] | None, fingerprint: str, attempt_id: str) -> Redeemed:
        if existing is None:
            raise TryAgain(retry_after=RETRY_AFTER_SECONDS)
        if existing.get("order_fingerprint") != fingerprint:
            raise IdempotencyConflict()
        if existing.get("status") == "rolled_back":
            raise AlreadyRolledBack()  # a 200 saying "rolled_back" reads as success to a client checking the status
        # Our own earlier try may have committed before its answer was lost (a timeout): still a 201.
        return Redeemed(redemption_view(existing), created=existing.get("attempt_id") == attempt_id)

    def _after_redemption(self, who: Shopper, now: datetime, ip_users: tuple[set[str], set[str]]) -> None:
        """Count the IP's distinct users; flag the IP once it redeems for too many of them."""
        self._signals.count("Redemptions")
        threshold = self._settings.fraud_distinct_users_per_ip
        previous, current = ip_users
        if who.user_id is None or who.ip is None or who.user_id in current or len(current) >= threshold:
            return
        bucket = self.policy.bucket(now.timestamp())
        after = self._store.add_ip_user(ip=who.ip, user_id=who.user_id, bucket=bucket,
                                        window=self.policy.window, cap=threshold)
        if after is None:
            return
        before_count = distinct_users(previous, after - {who.user_id})
        after_count = distinct_users(previous, after)
        if crosses(threshold, before_count, after_count):
            self._store.put_flag(fraud_flag(kind="many_users_one_ip", scope="ip", subject=who.ip, bucket=bucket,
                                            now=now, count=after_count, limit=threshold, window=self.policy.window,
                                            client_id=who.client_id))
            self._signals.count("FraudSuspected")

    # --- hot coupons -----------------------------------------------------------------------

    def is_hot(self, coupon: dict[str, Any]) -> bool:
        max_uses = coupon.get("max_uses")
        return bool(coupon.get("shards")) or (
            max_uses is not None and max_uses >= self._settings.hot_coupon_threshold)

    def _pick_shard(self, coupon: dict[str, Any], search: _ShardSearch, now: datetime) -> int | None:
        """The shard this redemption decrements (None: the coupon's own counter does the job)."""
        if not self.is_hot(coupon):
            return None
        shards = coupon.get("shards")
        if not shards:
            try:
                self._store.init_shards(coupon, self._settings.hot_coupon_shards)
                coupon["shards"] = shards = {"n": self._settings.hot_coupon_shards,
                                             "cap": cap_value(coupon.get("max_uses"))}
                coupon["version"] = int(coupon.get("version") or 0) + 1  # the split bumped it
            except Cancelled as cancelled:  # another request split it first: go on with its split
                old = cancelled.old(0)
                if old is None or old.get("coupon_id") != coupon["coupon_id"] or not old.get("shards"):
                    raise _Reread() from None
                coupon.update(coupon_record(old))
                shards = coupon["shards"]
        if int(shards["cap"]) != cap_value(coupon.get("max_uses")):
            items = self._store.read_shards(coupon["coupon_id"], int(shards["n"]))
            try:
                self._store.rebalance_shards(coupon, items, coupon.get("max_uses"))
            except Cancelled:
                raise _Reread() from None
            raise _Reread()
        if coupon.get("max_uses") is None:  # split, then made unlimited: shards only count
            return self._rng.randrange(int(shards["n"]))
        if search.room is None:
            try:  # steer by this container's recent read of the shards (read again once a second)
                search.room = self._shard_room(coupon, now, fresh=False)
            except StoreBusy:
                search.room = {n: 1 for n in range(int(shards["n"]))}  # blind: any shard
        left = [n for n, room in sorted(search.room.items()) if room > 0 and n not in search.tried]
        if not left and not search.fresh:  # the view may be old: only a consistent read of now decides
            search.room, search.fresh = self._shard_room(coupon, now, fresh=True), True
            left = [n for n, room in sorted(search.room.items()) if room > 0 and n not in search.tried]
        if not left:
            self._store.mark_exhausted(coupon, now)
            raise rule_violation("COUPON_EXHAUSTED")
        # The fuller the likelier: every shard keeps its share of what is left, so they all drain
        # together and none takes much more than 1/n of the traffic, even in the last second.
        return self._rng.choices(left, weights=[search.room[n] for n in left])[0]

    def _shard_room(self, coupon: dict[str, Any], now: datetime, *, fresh: bool) -> dict[int, int]:
        """shard -> remaining, from this container's view when recent enough, else a consistent read."""
        cap = cap_value(coupon.get("max_uses"))
        at = now.timestamp()
        view = self._shard_views.get(coupon["coupon_id"])
        if not fresh and view is not None and view[1] == cap and 0 <= at - view[0] < SHARD_VIEW_SECONDS:
            return view[2]
        items = self._store.read_shards(coupon["coupon_id"], int(coupon["shards"]["n"]))
        room = {int(i["shard"]): int(i["remaining"]) for i in items}
        self._shard_views[coupon["coupon_id"]] = (at, cap, room)
        return room

    def _usage(self, snapshot: Snapshot, now: datetime) -> Usage:
        coupon = snapshot.coupon
        assert coupon is not None
        shards = coupon.get("shards")
        if not shards:
            return Usage(redeemed_count=int(coupon.get("redeemed_count", 0)), user_uses=snapshot.user_uses())
        cap = cap_value(coupon.get("max_uses"))
        hinted = (cap != -1 and int(shards.get("cap", -2)) == cap and int(shards.get("exhausted_cap", -2)) == cap
                  and epoch(now) - int(shards.get("exhausted_at", 0)) < EXHAUSTED_HINT_SECONDS)
        return Usage(user_uses=snapshot.user_uses(), exhausted=hinted)

    # --- shared steps ----------------------------------------------------------------------

    def _quote(self, snapshot: Snapshot, request: ValidateRequest, who: Shopper, now: datetime) -> Quote:
        assert snapshot.coupon is not None
        attempt = Attempt(channel=request.channel, email_domain=who.email_domain, currency=request.order.currency,
                          lines=lines_of([i.model_dump() for i in request.order.items]), now=now,
                          global_domains=frozenset(self._settings.allowed_domains), guest=who.is_guest)
        return evaluate(Terms.from_record(snapshot.coupon), attempt, self._usage(snapshot, now))

    def _hashes(self, code: str) -> tuple[bool, list[str]]:
        normalised = normalise(code)
        cipher = self._cipher()
        return normalised is not None, cipher.lookup_indexes(normalised or PLACEHOLDER)

    def _guarded_read(self, code: str, who: Shopper, now: datetime, *, ip_users: bool) -> Snapshot:
        """The one read; then 429 if this customer, IP or client is locked out, 404 (counted) if no such code."""
        well_formed, hashes = self._hashes(code)
        bucket = self.policy.bucket(now.timestamp())
        snapshot = self._with_busy_retry(lambda: self._store.read(hashes, who.user_id, ip=who.ip, bucket=bucket,
                                                                  ip_users=ip_users, client=who.client_id))
        verdict = self.policy.verdict_of([(s.scope, snapshot.counts(s.scope), s.limit)
                                          for s in self._subjects(who, snapshot)], now.timestamp())
        if verdict.locked:
            raise RateLimited(retry_after=verdict.retry_after)
        if snapshot.coupon is None and self._keyring_was_stale():  # malformed too: one cost for every miss
            return self._guarded_read(code, who, now, ip_users=ip_users)  # look again under every version
        if snapshot.coupon is None or not well_formed:
            self._failed_guess(who, now, snapshot, bucket)
            raise CouponNotFound()
        return snapshot

    def _keyring_was_stale(self) -> bool:
        """A function without kms:GenerateDataKey that started before the active key version existed
        searched the older versions only. Before a miss counts as a failed guess, see whether that
        version exists now (one Query; one KMS Decrypt if it does): its codes are then looked up too."""
        cipher = self._cipher()
        return not cipher.complete and refreshed(self._cipher).versions != cipher.versions

    def _subjects(self, who: Shopper, snapshot: Snapshot) -> list[Subject]:
        """Whose failures a guess counts for: the server client, the customer, the shopper's IP.

        The client first: a server past its limit (the likeliest to be, guessing for a whole shop) is
        refused before it counts, even for a moment, against a customer or an address."""
        named = [("client", who.client_id, self.policy.per_client), ("user", who.user_id, self.policy.per_user),
                 ("ip", who.ip, self.policy.per_ip)]
        return [Subject(scope, name, snapshot.window(scope), limit)  # type: ignore[arg-type]
                for scope, name, limit in named if name is not None]

    def _failed_guess(self, who: Shopper, now: datetime, snapshot: Snapshot, bucket: int) -> None:
        """Count the failed guess first (lockouts.FailedGuesses); returns only if it may be answered 404."""
        self._guesses.count(self._subjects(who, snapshot), now, client_id=who.client_id)

    def _reread(self, code: str, who: Shopper) -> Snapshot:
        _, hashes = self._hashes(code)
        return self._with_busy_retry(lambda: self._store.read(hashes, who.user_id))

    def _backoff(self, busy: int) -> int:
        """Sleep with full jitter before another try; 503 once the budget is spent."""
        if busy + 1 >= BUSY_ATTEMPTS:
            raise TryAgain(retry_after=RETRY_AFTER_SECONDS)
        self._sleep(self._rng.uniform(0, BACKOFF_BASE_SECONDS * 2 ** busy))
        return busy + 1

    def _with_busy_retry(self, call: Callable[[], Any]) -> Any:
        busy = 0
        while True:
            try:
                return call()
            except StoreBusy:
                busy = self._backoff(busy)

    # --- reading and rolling back ----------------------------------------------------------

    def _visible(self, rid: str, who: Caller) -> dict[str, Any]:
        if not _is_redemption_id(rid):
            raise RedemptionNotFound()
        item = self._with_busy_retry(lambda: self._store.get_redemption(rid))
        # A server may read any (the shop's checkouts are its own: contract, "a deployment serves one shop")
        trusted = who.is_admin or getattr(who, "client_id", None) is not None
        if item is None or not (trusted or item.get("user_id") == who.user_id):
            raise RedemptionNotFound()  # someone else's redemption does not exist for you
        return dict(item)

    def get_redemption(self, rid: str, who: Caller) -> dict[str, Any]:
        return redemption_view(self._visible(rid, who))

    def rollback(self, rid: str, who: Caller) -> dict[str, Any]:
        """Rolling back is the shop's call (a refund, a cancelled order): servers and admins only."""
        item = self._visible(rid, who)
        if not (who.is_admin or getattr(who, "client_id", None) is not None):
            raise Forbidden("Only the shop rolls a redemption back (a refund or a cancelled order).")
        if item["status"] == "rolled_back":
            return redemption_view(item)
        now = self._clock()
        counter: tuple[str, Any] | None = ("shard", int(item["shard"])) if item.get("shard") is not None \
            else ("coupon", item["code_hash"])
        usage = item.get("user_id") is not None  # a guest's redemption used no one's per-customer count
        clear_hint = item["code_hash"] if item.get("shard") is not None else None
        busy = 0
        for _ in range(LOGICAL_ATTEMPTS):
            try:
                self._store.commit_rollback(item, actor=who.user_id, now=now, counter=counter, usage=usage,
                                            clear_hint=clear_hint)
            except StoreBusy:
                busy = self._backoff(busy)
                continue
            except Cancelled as cancelled:
                if cancelled.failed(0):
                    current = cancelled.old(0)
                    if current is not None and current.get("status") == "rolled_back":
                        return redemption_view(current)  # a parallel call did it: once is enough
                    raise TryAgain(retry_after=RETRY_AFTER_SECONDS) from None
                index = 1
                if counter is not None:
                    if cancelled.failed(index):
                        counter = self._counter_after(counter, cancelled.old(index), item)
                        if counter is not None and counter[0] == "shard" and clear_hint is None:
                            # split since this use was taken: it goes back to shard 0, and the coupon's
                            # "every shard empty" hint must go with it, or the use stays refused
                            clear_hint = item["code_hash"]
                    index += 1
                if usage:
                    if cancelled.failed(index):
                        usage = False  # no use of this customer's left on the coupon: nothing to give back
                    index += 1
                if clear_hint is not None and cancelled.failed(index):
                    clear_hint = None
                continue
            self._signals.count("Rollbacks")
            item.update(status="rolled_back", rolled_back_at=iso(now), rolled_back_by=who.user_id)
            return redemption_view(item)
        raise TryAgain(retry_after=RETRY_AFTER_SECONDS)

    def _counter_after(self, counter: tuple[str, Any], old: dict[str, Any] | None,
                       item: dict[str, Any]) -> tuple[str, Any] | None:
        """Where the use goes back after the first guess failed (the coupon moved, split or went)."""
        if counter[0] == "shard":
            return None  # the shard is gone or already at zero
        if old is not None and old.get("coupon_id") == item["coupon_id"]:
            return ("shard", 0) if old.get("shards") else None  # split since: shard 0 holds the old count
        pointer = self._with_busy_retry(lambda: self._store.get_pointer(item["coupon_id"]))
        if pointer is None or pointer.get("deleted_at") or pointer.get("code_hash") == counter[1]:
            return None  # the coupon was deleted: no counter to give back to
        return ("coupon", pointer["code_hash"])  # re-coded: its item moved

    def my_redemptions(self, who: Caller, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """`GET /me/redemptions`: the caller's own, newest first (whoever made them: they or a server)."""
        items, next_cursor = self._with_busy_retry(
            lambda: self._store.list_by_user(who.user_id, limit=limit, cursor=cursor))
        return {"items": [redemption_view(i) for i in items], "next_cursor": next_cursor}

    def list_redemptions(self, coupon_id: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
        pointer = self._with_busy_retry(lambda: self._store.get_pointer(coupon_id))
        if pointer is None:
            raise CouponNotFound()
        items, next_cursor = self._store.list_by_coupon(coupon_id, limit=limit, cursor=cursor)
        return {"items": [redemption_view(i) for i in items], "next_cursor": next_cursor}


@dataclass
class _ShardSearch:
    """One redemption's walk over a hot coupon's shards."""

    tried: set[int] = field(default_factory=set)  # found empty by a failed condition
    room: dict[int, int] | None = None  # shard -> remaining, as last read
    fresh: bool = False  # `room` comes from a consistent read made by this request


class _Reread(Exception):
    """The coupon changed shape under us (split into shards, cap changed): read it again."""
