"""The checkout's DynamoDB access: one read, one transaction (the guards table's writes: guard_store).

Coupons table (besides the coupon items of coupon_store):

- usage         pk=USAGE#<coupon_id>       sk=USER#<sub>   coupon_id, uses
                (<sub>: the customer's id, whether they call with their own token or a server
                names them in `customer.id`: one person for every limit; a guest has none)
- redemption    pk=REDEMPTION#<id>         sk=REDEMPTION   id = uuid5(coupon_id, order_id)
                gsi1 CREDEEM#<coupon_id> / <redeemed_at>#<id>       redemptions of a coupon
                gsi2 UREDEEM#<sub> / <redeemed_at>#<id>              redemptions of a customer (none for a guest)
                gsi3 DAY#<YYYY-MM-DD>#<0..DAY_SHARDS-1> / <at>#<id>  redemptions of a UTC day
                gsi4 RBDAY#<YYYY-MM-DD>#<shard> / <at>#<id>          rollbacks of a UTC day
- shard         pk=SHARD#<coupon_id>#<nn>  sk=SHARD        remaining, redeemed (hot coupons only)

  A sharded coupon item carries one map `shards` = {n, cap, exhausted_at?, exhausted_cap?}.
  Shards have their own partition keys (write sharding needs distinct partitions) and are
  keyed by coupon id, so a re-code does not orphan them. Every write of that map (split,
  rebalance, exhausted hint and its clearing) bumps the coupon's `version` (coupon_store), so
  an admin edit or re-code that read the coupon before it fails and re-reads instead of
  writing back a coupon without its marker; the split, rebalance and hint are themselves
  guarded by the version they read.

Usage by coupon id, found in the one read
    A customer's uses belong to the coupon, not to its code: a new code (an admin's answer
    to a leaked one) keeps every count. But the read finds the coupon by its code's blind
    index, before its id is known. So each container keeps a bounded map blind index ->
    coupon id, learned from the coupons it has read (`CouponIds`). When the map knows the
    code, the one BatchGetItem reads the coupon and `USAGE#<id>` together; when it does
    not, or the coupon found under the code is another one (deleted and re-created, or the
    code moved to another coupon), one GetItem reads the right usage item after it. The
    read is exact either way; the map only saves the second call. It never has to be
    right: the redeem transaction's usage condition enforces the limit on the item of the
    coupon being redeemed, whatever the read said.

    The BatchGetItem always names one usage key per lookup index (the known id's, or a key
    that never exists), so for an unknown, a deleted and a known code it has the same shape.

Guards table: see guard_store.
"""

from __future__ import annotations

import random
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..clock import epoch, iso
from ..errors import TryAgain
from ..guards import Counts, Window
from .coupon_store import code_pk, coupon_record, id_pk, version_guard, version_of
from .dynamo import Item, StoreBusy, busy_or, error_code, from_item, key, paged_query, to_item, to_value
from .guard_store import GuardStore, fail_key, fraud_flag, ip_users_key, window_of

__all__ = ["Cancelled", "CheckoutStore", "Snapshot", "StoreBusy", "cap_value", "fraud_flag"]

DAY_SHARDS = 8  # gsi3/gsi4 day partitions; the reports read every one of them
BATCH_GET_ATTEMPTS = 4
COUPON_IDS_CACHED = 10_000  # blind index -> coupon id, per container (about 1 MB)
_CONFLICT_CODES = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
                   "RequestLimitExceeded", "InternalServerError", "TransactionInProgress"}


@dataclass
class Cancelled(Exception):
    """A transaction whose conditions failed: per item, the reason and the item as it was (ALL_OLD)."""

    reasons: list[tuple[str | None, Item | None]]

    def failed(self, index: int) -> bool:
        return index < len(self.reasons) and self.reasons[index][0] == "ConditionalCheckFailed"

    def old(self, index: int) -> Item | None:
        return self.reasons[index][1] if index < len(self.reasons) else None


def usage_key(coupon_id: str, user_id: str) -> dict[str, Any]:
    return key(f"USAGE#{coupon_id}", f"USER#{user_id}")


def no_usage_key(code_hash: str, user_id: str) -> dict[str, Any]:
    """A usage key that never exists ('#' is in no coupon id): pads the read to its usual shape."""
    return key(f"USAGE#none#{code_hash}", f"USER#{user_id}")


def redemption_key(redemption_id: str) -> dict[str, Any]:
    return key(f"REDEMPTION#{redemption_id}", "REDEMPTION")


def shard_key(coupon_id: str, shard: int) -> dict[str, Any]:
    return key(f"SHARD#{coupon_id}#{shard:02d}", "SHARD")


def coupon_key(code_hash: str) -> dict[str, Any]:
    return key(code_pk(code_hash), "COUPON")


def day_shard(redemption_id: str) -> int:
    return zlib.crc32(redemption_id.encode()) % DAY_SHARDS


def day_of(moment: datetime) -> str:
    return iso(moment)[:10]


@dataclass
class Snapshot:
    """What the read found."""

    coupon: dict[str, Any] | None = None  # a coupon record (coupon_store.coupon_record)
    usage: Item | None = None  # this user's usage item of that coupon (None: not used yet)
    user: Counts = field(default_factory=Counts)  # failures, as of the request's bucket
    ip: Counts = field(default_factory=Counts)
    client: Counts = field(default_factory=Counts)
    user_window: Window | None = None  # the failure counters as stored (the write's conditions start from them)
    ip_window: Window | None = None
    client_window: Window | None = None
    ip_users_previous: set[str] = field(default_factory=set)
    ip_users_current: set[str] = field(default_factory=set)

    def window(self, scope: str) -> Window | None:
        return {"user": self.user_window, "ip": self.ip_window, "client": self.client_window}[scope]

    def counts(self, scope: str) -> Counts:
        return {"user": self.user, "ip": self.ip, "client": self.client}[scope]

    def user_uses(self) -> int:
        """This user's uses of the found coupon."""
        if self.coupon is None or self.usage is None or self.usage.get("coupon_id") != self.coupon["coupon_id"]:
            return 0
        return int(self.usage.get("uses", 0))


class CouponIds:
    """A bounded, thread-safe map blind index -> coupon id, learned from the coupons read (least recent out)."""

    def __init__(self, size: int = COUPON_IDS_CACHED) -> None:
        self._size = size
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, code_hash: str) -> str | None:
        with self._lock:
            found = self._ids.get(code_hash)
            if found is not None:
                self._ids.move_to_end(code_hash)
            return found

    def learn(self, code_hash: str, coupon_id: str) -> None:
        with self._lock:
            self._ids[code_hash] = coupon_id
            self._ids.move_to_end(code_hash)
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)


class CheckoutStore(GuardStore):
    def __init__(self, dynamodb: Any, coupons_table: str, guards_table: str,
                 rng: random.Random | None = None, coupon_ids: CouponIds | None = None) -> None:
        super().__init__(dynamodb, guards_table, rng)
        self._coupons = coupons_table
        self.coupon_ids = coupon_ids or CouponIds()

    # --- the one read of validate / redeem -------------------------------------------------

    def read(self, code_hashes: Sequence[str], user_id: str | None, *, ip: str | None = None,
             bucket: int | None = None, ip_users: bool = False, client: str | None = None) -> Snapshot:
        """Coupon, usage and guard counters in one BatchGetItem (both tables).

        Plus one GetItem for the usage when this container does not know the code's coupon
        id yet (see "Usage by coupon id" above). A guest (no `user_id`) has no usage and no
        customer counter; a call without a shopper IP no IP counter; only a server a client one.
        """
        usage_keys: list[dict[str, Any]] = []
        named: set[str] = set()
        for h in code_hashes if user_id is not None else ():
            assert user_id is not None
            known = self.coupon_ids.get(h)
            if known is not None and known not in named:  # two indexes of one coupon: name it once
                named.add(known)
                usage_keys.append(usage_key(known, user_id))
            else:
                usage_keys.append(no_usage_key(h, user_id))
        request: dict[str, Any] = {self._coupons: {"Keys": [coupon_key(h) for h in code_hashes] + usage_keys}}
        subjects = [(scope, name) for scope, name in (("user", user_id), ("ip", ip), ("client", client))
                    if name is not None] if bucket is not None else []
        guard_keys = [fail_key(scope, name) for scope, name in subjects]
        if bucket is not None and guard_keys and ip_users and ip is not None and user_id is not None:
            guard_keys += [ip_users_key(ip, bucket), ip_users_key(ip, bucket - 1)]
        if guard_keys:
            request[self._guards] = {"Keys": guard_keys}
        found = self._batch_get(request)
        snapshot = Snapshot()
        usages: dict[str, Item] = {}
        for raw in found.get(self._coupons, []):
            item = from_item(raw)
            if item is None:
                continue
            if item["sk"] == "COUPON":
                snapshot.coupon = coupon_record(item)
            else:
                usages[item["pk"].removeprefix("USAGE#")] = item
        if snapshot.coupon is not None and user_id is not None:
            coupon_id = snapshot.coupon["coupon_id"]
            if coupon_id in named:
                snapshot.usage = usages.get(coupon_id)
            else:  # not known here yet, or the code now belongs to another coupon: read its usage
                snapshot.usage = self._get(usage_key(coupon_id, user_id), consistent=False)
                self.coupon_ids.learn(snapshot.coupon["code_hash"], coupon_id)
        guards = {(i["pk"], i["sk"]): i for i in (from_item(raw) for raw in found.get(self._guards, [])) if i}
        for scope, name in subjects:
            k = fail_key(scope, name)
            stored = window_of(guards.get((k["pk"]["S"], k["sk"]["S"])))
            counts = stored.counts_at(bucket) if stored is not None and bucket is not None else Counts()
            setattr(snapshot, f"{scope}_window", stored)
            setattr(snapshot, scope, counts)
        if bucket is not None and ip_users and ip is not None and user_id is not None:
            for b, target in ((bucket, snapshot.ip_users_current), (bucket - 1, snapshot.ip_users_previous)):
                k = ip_users_key(ip, b)
                target.update(guards.get((k["pk"]["S"], k["sk"]["S"]), {}).get("users", set()))
        return snapshot

    def _batch_get(self, request: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        responses: dict[str, list[dict[str, Any]]] = {}
        pending = request
        for _ in range(BATCH_GET_ATTEMPTS):
            try:
                page = self._db.batch_get_item(RequestItems=pending)
            except (ClientError, BotoCoreError) as error:
                raise self._busy_or(error) from error
            for table, items in page.get("Responses", {}).items():
                responses.setdefault(table, []).extend(items)
            pending = page.get("UnprocessedKeys") or {}
            if not pending:
                return responses
        raise StoreBusy("unprocessed keys after retries")

    # --- redemptions -----------------------------------------------------------------------

    def _get(self, item_key: dict[str, Any], *, consistent: bool) -> Item | None:
        try:
            raw = self._db.get_item(TableName=self._coupons, Key=item_key, ConsistentRead=consistent)
        except (ClientError, BotoCoreError) as error:
            raise self._busy_or(error) from error
        return from_item(raw.get("Item"))

    def get_redemption(self, redemption_id: str) -> Item | None:
        return self._get(redemption_key(redemption_id), consistent=True)

    def redemption_item(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The stored form of a new redemption, with its index keys (a guest's has no customer index)."""
        at = record["redeemed_at"]
        rid = record["redemption_id"]
        sort = f"{iso(at)}#{rid}"
        values = {
            **record,
            "pk": f"REDEMPTION#{rid}",
            "sk": "REDEMPTION",
            "entity": "redemption",
            "redeemed_at": iso(at),
            "gsi1pk": f"CREDEEM#{record['coupon_id']}",
            "gsi1sk": sort,
            "gsi3pk": f"DAY#{day_of(at)}#{day_shard(rid)}",
            "gsi3sk": sort,
        }
        if record.get("user_id") is not None:
            values.update(gsi2pk=f"UREDEEM#{record['user_id']}", gsi2sk=sort)
        return values

    def commit_redemption(self, record: Mapping[str, Any], *, coupon: Mapping[str, Any], now: datetime,
                          shard: int | None) -> None:
        """The redemption in one TransactWriteItems: record, counter (coupon or shard), usage.

        Item order (the caller reads Cancelled by index): 0 redemption, 1 counter, 2 usage.
        The usage item is the coupon's (keyed by its id), incremented only while below
        `uses_per_user`: that condition, not the read, is what holds the per-customer limit.
        A guest's redemption has no usage item (a guest may use only coupons without that limit).

        On the coupon's own counter, the transaction re-checks that the coupon is still the
        version read (coupon_store.version_guard): every edit, sweep or split since bumps it,
        whereas a counter change does not (the counter has its own condition). The version
        rather than `updated_at`: it moves on every such write, including two edits within the
        same clock tick. Exhausted-hint writes bump it too, but only on sharded coupons, which
        this path refuses anyway (`attribute_not_exists(shards)`); the sharded path conditions on
        its shard only, never on the coupon item, so neither hints nor edits contend with it.
        """
        cid = coupon["coupon_id"]
        now_values = {":now": to_value(epoch(now)), ":one": to_value(1), ":cid": to_value(cid)}
        items: list[dict[str, Any]] = [{"Put": {
            "TableName": self._coupons,
            "Item": to_item(self.redemption_item(record)),
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }}]
        if shard is None:
            guard, versions = version_guard(version_of(coupon))
            condition = ("coupon_id = :cid AND #status = :active AND starts_epoch <= :now AND expires_epoch > :now "
                         f"AND {guard} AND attribute_not_exists(shards)")
            values = {**now_values, ":active": to_value("active"), ":zero": to_value(0),
                      ":seen_version": versions[":seen_version"]}
            if coupon.get("max_uses") is not None:
                condition += " AND redeemed_count < :max"
                values[":max"] = to_value(coupon["max_uses"])
            items.append({"Update": {
                "TableName": self._coupons,
                "Key": coupon_key(coupon["code_hash"]),
                "UpdateExpression": "SET redeemed_count = if_not_exists(redeemed_count, :zero) + :one",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }})
        else:
            capped = coupon.get("max_uses") is not None  # a split coupon made unlimited only counts
            items.append({"Update": {
                "TableName": self._coupons,
                "Key": shard_key(cid, shard),
                "UpdateExpression": "SET remaining = remaining - :one, redeemed = redeemed + :one" if capped
                                    else "SET redeemed = redeemed + :one",
                "ConditionExpression": "coupon_id = :cid AND remaining >= :one" if capped
                                       else "coupon_id = :cid",
                "ExpressionAttributeValues": {":one": to_value(1), ":cid": to_value(cid)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }})
        if record.get("user_id") is None:
            if coupon.get("uses_per_user") is not None:
                raise ValueError("a guest cannot redeem a coupon with a per-customer limit")
            self._transact(items)
            return
        limit = coupon.get("uses_per_user")
        usage: dict[str, Any] = {
            "TableName": self._coupons,
            "Key": usage_key(cid, record["user_id"]),
            "UpdateExpression": "SET uses = if_not_exists(uses, :zero) + :one, coupon_id = :cid, "
                                "updated_at = :at, entity = :entity",
            "ExpressionAttributeValues": {":zero": to_value(0), ":one": to_value(1), ":cid": to_value(cid),
                                          ":at": to_value(iso(now)), ":entity": to_value("usage")},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if limit is not None:
            usage["ConditionExpression"] = "attribute_not_exists(uses) OR uses < :limit"
            usage["ExpressionAttributeValues"][":limit"] = to_value(limit)
        items.append({"Update": usage})
        self._transact(items)

    def commit_rollback(self, redemption: Mapping[str, Any], *, actor: str, now: datetime,
                        counter: tuple[str, Any] | None, usage: bool, clear_hint: str | None) -> None:
        """Flip the redemption to rolled_back and give its uses back, in one transaction.

        `counter` is ("coupon", code_hash) or ("shard", n) or None (the coupon is gone).
        Item order: 0 redemption, then counter, usage, hint when present (see `rollback_order`).
        """
        rid = redemption["redemption_id"]
        cid = redemption["coupon_id"]
        at = iso(now)
        items: list[dict[str, Any]] = [{"Update": {
            "TableName": self._coupons,
            "Key": redemption_key(rid),
            "UpdateExpression": "SET #status = :rolled, rolled_back_at = :at, rolled_back_by = :by, "
                                "gsi4pk = :g4pk, gsi4sk = :g4sk",
            "ConditionExpression": "#status = :redeemed",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":rolled": to_value("rolled_back"), ":redeemed": to_value("redeemed"), ":at": to_value(at),
                ":by": to_value(actor), ":g4pk": to_value(f"RBDAY#{day_of(now)}#{day_shard(rid)}"),
                ":g4sk": to_value(f"{at}#{rid}"),
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }}]
        if counter is not None and counter[0] == "coupon":
            items.append({"Update": {
                "TableName": self._coupons,
                "Key": coupon_key(counter[1]),
                "UpdateExpression": "SET redeemed_count = redeemed_count - :one",
                "ConditionExpression": "coupon_id = :cid AND redeemed_count >= :one AND attribute_not_exists(shards)",
                "ExpressionAttributeValues": {":one": to_value(1), ":cid": to_value(cid)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }})
        elif counter is not None:
            items.append({"Update": {
                "TableName": self._coupons,
                "Key": shard_key(cid, int(counter[1])),
                "UpdateExpression": "SET remaining = remaining + :one, redeemed = redeemed - :one",
                "ConditionExpression": "coupon_id = :cid AND redeemed >= :one",
                "ExpressionAttributeValues": {":one": to_value(1), ":cid": to_value(cid)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }})
        if usage:
            items.append({"Update": {
                "TableName": self._coupons,
                "Key": usage_key(cid, redemption["user_id"]),
                "UpdateExpression": "SET uses = uses - :one, updated_at = :at",
                "ConditionExpression": "coupon_id = :cid AND uses >= :one",
                "ExpressionAttributeValues": {":one": to_value(1), ":cid": to_value(cid), ":at": to_value(at)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }})
        if clear_hint is not None:
            items.append({"Update": {
                "TableName": self._coupons,
                "Key": coupon_key(clear_hint),
                "UpdateExpression": "REMOVE shards.exhausted_at, shards.exhausted_cap ADD version :one",
                "ConditionExpression": "coupon_id = :cid AND attribute_exists(shards)",
                "ExpressionAttributeValues": {":cid": to_value(cid), ":one": to_value(1)},
            }})
        self._transact(items)

    def list_by_coupon(self, coupon_id: str, *, limit: int, cursor: str | None) -> tuple[list[Item], str | None]:
        return paged_query(self._db, table=self._coupons, index="gsi1",
                           partitions=[("gsi1pk", f"CREDEEM#{coupon_id}", None, None)],
                           limit=limit, cursor=cursor, scan_forward=False)

    def list_by_user(self, user_id: str, *, limit: int, cursor: str | None) -> tuple[list[Item], str | None]:
        """A customer's redemptions, newest first (gsi2; a cursor from another partition is refused)."""
        return paged_query(self._db, table=self._coupons, index="gsi2",
                           partitions=[("gsi2pk", f"UREDEEM#{user_id}", None, None)],
                           limit=limit, cursor=cursor, scan_forward=False)

    def get_pointer(self, coupon_id: str) -> Item | None:
        return self._get(key(id_pk(coupon_id), "COUPON"), consistent=True)

    # --- hot coupons: shards ---------------------------------------------------------------

    def init_shards(self, coupon: Mapping[str, Any], count: int) -> None:
        """Split the remaining cap across `count` shard items, once, atomically with the coupon's marker.

        Shard 0 also takes over the uses counted before the split, so that
        Σ remaining + Σ redeemed = cap from the first moment on. Guarded by the coupon's version
        as read (a pause or edit since fails it) and bumps it.
        """
        cap = int(coupon["max_uses"])
        seen = int(coupon.get("redeemed_count", 0))
        left = max(0, cap - seen)
        shares = [left // count + (1 if i < left % count else 0) for i in range(count)]
        guard, versions = version_guard(version_of(coupon))
        items: list[dict[str, Any]] = [{"Update": {
            "TableName": self._coupons,
            "Key": coupon_key(coupon["code_hash"]),
            "UpdateExpression": "SET shards = :shards, version = :next_version",
            "ConditionExpression": "coupon_id = :cid AND attribute_not_exists(shards) AND redeemed_count = :seen "
                                   f"AND max_uses = :cap AND {guard}",
            "ExpressionAttributeValues": {":shards": to_value({"n": count, "cap": cap_value(cap)}),
                                          ":cid": to_value(coupon["coupon_id"]), ":seen": to_value(seen),
                                          ":cap": to_value(cap), **versions},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }}]
        for index, share in enumerate(shares):
            items.append({"Put": {
                "TableName": self._coupons,
                "Item": to_item({**shard_key_plain(coupon["coupon_id"], index), "entity": "shard",
                                 "coupon_id": coupon["coupon_id"], "shard": index, "remaining": share,
                                 "redeemed": seen if index == 0 else 0}),
                "ConditionExpression": "attribute_not_exists(pk)",
            }})
        self._transact(items)

    def read_shards(self, coupon_id: str, count: int) -> list[Item]:
        """Every shard of a coupon, in shard order (missing ones left out)."""
        keys = [shard_key(coupon_id, i) for i in range(count)]
        found = self._batch_get({self._coupons: {"Keys": keys, "ConsistentRead": True}})
        items = [i for i in (from_item(raw) for raw in found.get(self._coupons, [])) if i]
        return sorted(items, key=lambda i: int(i["shard"]))

    def rebalance_shards(self, coupon: Mapping[str, Any], shards: list[Item], new_cap: int | None) -> None:
        """Re-split the remaining cap after an admin changed max_uses (optimistic: fails on any race).

        Guarded by the coupon's version as read, and bumps it.
        """
        redeemed = sum(int(s["redeemed"]) for s in shards)
        left = 0 if new_cap is None else max(0, new_cap - redeemed)
        n = len(shards)
        shares = [left // n + (1 if i < left % n else 0) for i in range(n)]
        old = coupon["shards"]
        guard, versions = version_guard(version_of(coupon))
        items: list[dict[str, Any]] = [{"Update": {
            "TableName": self._coupons,
            "Key": coupon_key(coupon["code_hash"]),
            "UpdateExpression": "SET shards = :shards, version = :next_version",
            "ConditionExpression": f"coupon_id = :cid AND shards.cap = :old AND {guard}",
            "ExpressionAttributeValues": {":shards": to_value({"n": int(old["n"]), "cap": cap_value(new_cap)}),
                                          ":old": to_value(old["cap"]), ":cid": to_value(coupon["coupon_id"]),
                                          **versions},
        }}]
        for shard, share in zip(shards, shares, strict=True):
            items.append({"Update": {
                "TableName": self._coupons,
                "Key": shard_key(coupon["coupon_id"], int(shard["shard"])),
                "UpdateExpression": "SET remaining = :share",
                "ConditionExpression": "remaining = :r AND redeemed = :d",
                "ExpressionAttributeValues": {":share": to_value(share), ":r": to_value(shard["remaining"]),
                                              ":d": to_value(shard["redeemed"])},
            }})
        self._transact(items)

    def mark_exhausted(self, coupon: Mapping[str, Any], now: datetime) -> None:
        """Best effort: remember that every shard was found empty (a hint for validate and redeem).

        Guarded by the coupon's version as read: a rollback (which clears the hint and bumps the
        version) or an edit since then means the shards seen empty may not be any more.
        """
        shards = coupon["shards"]
        guard, versions = version_guard(version_of(coupon))
        try:
            self._db.update_item(
                TableName=self._coupons, Key=coupon_key(coupon["code_hash"]),
                UpdateExpression="SET shards.exhausted_at = :at, shards.exhausted_cap = :cap, "
                                 "version = :next_version",
                ConditionExpression=f"coupon_id = :cid AND shards.cap = :cap AND {guard}",
                ExpressionAttributeValues={":at": to_value(epoch(now)), ":cap": to_value(shards.get("cap")),
                                           ":cid": to_value(coupon["coupon_id"]), **versions},
            )
        except (ClientError, BotoCoreError):
            return

    def shard_totals(self, coupon: Mapping[str, Any]) -> tuple[int, int] | None:
        """(Σ redeemed, Σ remaining) of a sharded coupon; None when it is not sharded."""
        shards = coupon.get("shards")
        if not shards:
            return None
        items = self.read_shards(coupon["coupon_id"], int(shards["n"]))
        return sum(int(i["redeemed"]) for i in items), sum(int(i["remaining"]) for i in items)

    # --- plumbing --------------------------------------------------------------------------

    def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            self._db.transact_write_items(TransactItems=items)
        except (ClientError, BotoCoreError) as error:
            if error_code(error) == "TransactionCanceledException":
                assert isinstance(error, ClientError)
                reasons = error.response.get("CancellationReasons") or []
                codes = [r.get("Code") for r in reasons]
                if any(c in _CONFLICT_CODES for c in codes):
                    raise StoreBusy("transaction conflict") from error
                if not any(c == "ConditionalCheckFailed" for c in codes):
                    raise
                raise Cancelled([(r.get("Code") if r.get("Code") not in (None, "None") else None,
                                  from_item(r.get("Item"))) for r in reasons]) from error
            raise self._busy_or(error) from error

    @staticmethod
    def _busy_or(error: Exception) -> Exception:
        return busy_or(error)


UNCAPPED = -1  # `shards.cap` of a sharded coupon whose max_uses was since set to null


def cap_value(cap: int | None) -> int:
    return UNCAPPED if cap is None else int(cap)


def shard_key_plain(coupon_id: str, shard: int) -> dict[str, str]:
    k = shard_key(coupon_id, shard)
    return {"pk": k["pk"]["S"], "sk": k["sk"]["S"]}


def counted(coupons: Any, record: dict[str, Any]) -> dict[str, Any]:
    """A coupon record whose `redeemed_count` is right for a hot coupon too (the admin view reads it).

    A sharded coupon counts its redemptions on its shards, not on the coupon item (which
    would make that item the hot key again); its count is their sum, read here: one
    BatchGetItem, only for sharded coupons. `coupons` is the CouponStore the record came from.
    """
    if not record.get("shards"):
        return record
    store = CheckoutStore(coupons._db, coupons._table, "")
    try:
        totals = store.shard_totals(record)
    except StoreBusy:
        raise TryAgain(retry_after=1) from None
    if totals is None:
        return record
    return {**record, "redeemed_count": totals[0]}
