"""The coupons table: coupon items, id pointers and the keyring.

Key layout (see docs/data-model.md):
- coupon        pk=CODE#<blind index>   sk=COUPON   (found by code in one GetItem)
- id pointer    pk=COUPON#<id>          sk=COUPON   (code_hash; tombstone after delete)
- wrapped key   pk=KEYRING              sk=V#<n>
GSIs on coupon items: gsi1 status, gsi2 campaign, gsi3 expiry (sparse, sharded).

A coupon item carries a `version` (a number; an item stored before it existed counts as 0).
Every write of an attribute other than the counters bumps it: admin edits, the expiry sweep,
a hot coupon's split, rebalance and exhausted hint (checkout_store). A writer that decided
from a read conditions on the version it read, so no such write is lost to another. The
counters (`redeemed_count`) move without it: an in-place edit never writes them, so they
cannot conflict; the re-code, which copies the whole item, conditions on them as well.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ..clock import epoch, iso, parse_iso
from ..errors import CodeAlreadyExists, CouponNotFound, TryAgain
from ..events import RECODE_CHANGED, RECODE_PREVIOUS_STATUS, edited_fields
from .dynamo import Item, error_code, from_item, key, paged_query, to_item, to_value, translate

EXPIRY_SHARDS = 4
BATCH_GET_ATTEMPTS = 4  # BatchGetItem calls for one read, while DynamoDB leaves keys unprocessed
LIVE_STATUSES = ("active", "disabled")
SPEC_FIELDS = (
    "discount_type", "discount_value", "currency", "max_discount_amount", "min_order_amount",
    "starts_at", "expires_at", "max_uses", "uses_per_user", "applicable_products",
    "applicable_categories", "excluded_products", "excluded_categories", "channels",
    "allowed_domains", "campaign_id", "metadata",
)


# A record key that is never stored: the code's blind index under every other live key version.
# Creating (or re-coding to) a code requires those items absent, in the same transaction, so one
# code never lives under two versions (see coupons/crypto.py, key rotation).
OTHER_HASHES = "other_code_hashes"

# Written by others than an edit: an in-place edit never writes them (see CouponStore.replace).
NOT_EDITED = frozenset({"pk", "sk", "entity", "coupon_id", "created_at", "created_by", "redeemed_count",
                        "shards", "version"})


def version_of(record: Mapping[str, Any]) -> int:
    return int(record.get("version") or 0)


def version_guard(seen: int) -> tuple[str, dict[str, Any]]:
    """The condition that a coupon item is still at version `seen` (missing counts as 0).

    Uses the placeholders :seen_version (here) and :next_version (the writer's, = seen + 1).
    """
    condition = "version = :seen_version" if seen else \
        "(attribute_not_exists(version) OR version = :seen_version)"
    return condition, {":seen_version": to_value(seen), ":next_version": to_value(seen + 1)}


def code_pk(code_hash: str) -> str:
    return f"CODE#{code_hash}"


def id_pk(coupon_id: str) -> str:
    return f"COUPON#{coupon_id}"


def expiry_shard(coupon_id: str) -> int:
    return zlib.crc32(coupon_id.encode()) % EXPIRY_SHARDS


def coupon_item(record: dict[str, Any]) -> dict[str, Any]:
    """The stored form of a coupon record (python values, not yet serialised)."""
    values = dict(record)
    values.pop(OTHER_HASHES, None)
    created = values["created_at"]
    sort = f"{iso(created)}#{values['coupon_id']}"
    values.update(
        pk=code_pk(values["code_hash"]),
        sk="COUPON",
        entity="coupon",
        starts_at=iso(values["starts_at"]),
        expires_at=iso(values["expires_at"]),
        starts_epoch=epoch(values["starts_at"]),
        expires_epoch=epoch(values["expires_at"]),
        created_at=iso(created),
        updated_at=iso(values["updated_at"]),
        metadata=json.dumps(values.get("metadata") or {}, separators=(",", ":")),
        gsi1pk=f"STATUS#{values['status']}",
        gsi1sk=sort,
    )
    if values.get("campaign_id"):
        values.update(gsi2pk=f"CAMPAIGN#{values['campaign_id']}", gsi2sk=sort)
    if values["status"] in LIVE_STATUSES:
        values.update(
            gsi3pk=f"EXPIRY#{expiry_shard(values['coupon_id'])}",
            gsi3sk=f"{values['expires_at']}#{values['coupon_id']}",
        )
    return values


def free_checks(table: str, record: dict[str, Any], *, own: str | None = None) -> list[dict[str, Any]]:
    """ConditionChecks that the code is live under no other key version (`own`: the coupon's current
    index, which a re-code moves away from in the same transaction)."""
    return [{"ConditionCheck": {"TableName": table, "Key": key(code_pk(h), "COUPON"),
                                "ConditionExpression": "attribute_not_exists(pk)",
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
            for h in record.get(OTHER_HASHES) or () if h not in (own, record["code_hash"])]


def coupon_record(item: Item) -> dict[str, Any]:
    """A stored coupon item back as a record with python types."""
    record = {k: v for k, v in item.items() if not k.startswith("gsi") and k not in ("pk", "sk", "entity")}
    for field in ("starts_at", "expires_at", "created_at", "updated_at"):
        record[field] = parse_iso(record[field])
    record["metadata"] = json.loads(record.get("metadata") or "{}")
    for field in ("applicable_products", "applicable_categories", "excluded_products",
                  "excluded_categories", "allowed_domains"):
        record.setdefault(field, [])
    record.setdefault("redeemed_count", 0)
    record["version"] = version_of(record)
    return record


class DynamoKeyringStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def load_wrapped_keys(self) -> dict[int, bytes]:
        try:
            page = self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": "KEYRING"}},
                ConsistentRead=True,
            )
        except ClientError as error:
            raise translate(error) from error
        return {int(i["version"]["N"]): bytes(i["wrapped"]["B"]) for i in page.get("Items", [])}

    def save_wrapped_key(self, version: int, blob: bytes) -> bool:
        try:
            self._db.put_item(
                TableName=self._table,
                Item={**key("KEYRING", f"V#{version:06d}"), "version": {"N": str(version)},
                      "wrapped": {"B": blob}, "entity": {"S": "keyring"}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True


class CouponStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    # --- reads ---------------------------------------------------------------------------

    def get_by_indexes(self, code_hashes: list[str]) -> dict[str, Any] | None:
        """The live coupon stored under any of these blind indexes (one round trip), the first index
        given winning: BatchGetItem returns items in any order, and keys it left unprocessed are
        asked again (issue 11: moto answered in order and whole, DynamoDB does neither)."""
        try:
            if len(code_hashes) == 1:
                raw = self._db.get_item(TableName=self._table, Key=key(code_pk(code_hashes[0]), "COUPON"))
                items = [raw["Item"]] if "Item" in raw else []
            else:
                items = self._batch_get([key(code_pk(h), "COUPON") for h in code_hashes])
        except ClientError as error:
            raise translate(error) from error
        found = {plain["pk"]: plain for plain in (from_item(item) for item in items) if plain is not None}
        for code_hash in code_hashes:
            if code_pk(code_hash) in found:
                return coupon_record(found[code_pk(code_hash)])
        return None

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        pending: dict[str, Any] = {self._table: {"Keys": keys}}
        for _ in range(BATCH_GET_ATTEMPTS):
            page = self._db.batch_get_item(RequestItems=pending)
            items.extend(page.get("Responses", {}).get(self._table, []))
            pending = page.get("UnprocessedKeys") or {}
            if not pending:
                return items
        raise TryAgain(retry_after=1)  # still throttled after the retries

    def get_pointer(self, coupon_id: str) -> Item | None:
        try:
            raw = self._db.get_item(TableName=self._table, Key=key(id_pk(coupon_id), "COUPON"),
                                    ConsistentRead=True)
        except ClientError as error:
            raise translate(error) from error
        return from_item(raw.get("Item"))

    def get_by_id(self, coupon_id: str) -> dict[str, Any]:
        pointer = self.get_pointer(coupon_id)
        if pointer is None or pointer.get("deleted_at"):
            raise CouponNotFound()
        try:
            raw = self._db.get_item(TableName=self._table, Key=key(code_pk(pointer["code_hash"]), "COUPON"),
                                    ConsistentRead=True)
        except ClientError as error:
            raise translate(error) from error
        item = from_item(raw.get("Item"))
        if item is None:
            raise CouponNotFound()
        return coupon_record(item)

    def list_page(self, *, status: str | None, campaign_id: str | None, limit: int, cursor: str | None,
             now: datetime) -> tuple[list[dict[str, Any]], str | None]:
        now_epoch = {":now": {"N": str(epoch(now))}}
        not_expired = ("expires_epoch > :now", now_epoch)
        expired = ("expires_epoch <= :now", now_epoch)
        parts: list[tuple[str, str, str | None, dict[str, Any] | None]]
        if campaign_id:
            parts = [("gsi2pk", f"CAMPAIGN#{campaign_id}", None, None)]
            index = "gsi2"
        else:
            index = "gsi1"
            by_status = {
                None: [("gsi1pk", f"STATUS#{s}", None, None) for s in ("active", "disabled", "expired")],
                "active": [("gsi1pk", "STATUS#active", *not_expired)],
                "exhausted": [("gsi1pk", "STATUS#active", *not_expired)],
                "disabled": [("gsi1pk", "STATUS#disabled", *not_expired)],
                "expired": [("gsi1pk", "STATUS#expired", None, None),
                            ("gsi1pk", "STATUS#active", *expired),
                            ("gsi1pk", "STATUS#disabled", *expired)],
            }
            parts = by_status[status]  # type: ignore[assignment]
        items, next_cursor = paged_query(self._db, table=self._table, index=index, partitions=parts,
                                         limit=limit, cursor=cursor)
        return [coupon_record(i) for i in items], next_cursor

    # --- writes --------------------------------------------------------------------------

    def create(self, record: dict[str, Any]) -> None:
        """The coupon and its id pointer, atomically; the code must be free."""
        item = coupon_item(record)
        pointer = {"pk": id_pk(record["coupon_id"]), "sk": "COUPON", "entity": "pointer",
                   "coupon_id": record["coupon_id"], "code_hash": record["code_hash"]}
        self._transact([
            {"Put": {"TableName": self._table, "Item": to_item(item),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self._table, "Item": to_item(pointer),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            *free_checks(self._table, record),
        ])

    def replace(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Write an edited coupon, guarded by the version read (StaleWrite when anyone wrote it since).

        In place, only the attributes the edit changed are written (UpdateItem): the counters and
        the shard marker are never written back, so a redemption landing in between is no conflict,
        and a split, rebalance, hint or sweep in between (each bumps the version) fails the edit,
        which the caller re-applies to a fresh read.
        """
        seen = version_of(old)
        guard, guard_values = version_guard(seen)
        if old["code_hash"] == new["code_hash"]:
            self._update_in_place(old, new, guard, guard_values)
            return
        # A new code: the whole item moves to its new blind index, the pointer follows. The Put
        # copies the shard marker and the counter as read, so the Delete conditions on both.
        counted = "redeemed_count = :count" if int(old.get("redeemed_count") or 0) else \
            "(attribute_not_exists(redeemed_count) OR redeemed_count = :count)"
        item = coupon_item({**new, "version": seen + 1})
        # The stream shows the move as an INSERT without the old image: name the edit's fields on
        # the new item, so its CouponUpdated lists them all (issue 17, 8b). A note left by an
        # earlier re-code is replaced.
        for name in (RECODE_CHANGED, RECODE_PREVIOUS_STATUS):
            item.pop(name, None)
        item[RECODE_CHANGED] = edited_fields(coupon_item(old), item)
        if old.get("status") != new.get("status"):
            item[RECODE_PREVIOUS_STATUS] = old.get("status")
        self._transact([
            {"Delete": {"TableName": self._table, "Key": key(code_pk(old["code_hash"]), "COUPON"),
                        "ConditionExpression": f"attribute_exists(pk) AND {guard} AND {counted}",
                        "ExpressionAttributeValues": {":seen_version": guard_values[":seen_version"],
                                                      ":count": to_value(int(old.get("redeemed_count") or 0))}}},
            {"Put": {"TableName": self._table, "Item": to_item(item),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": self._table, "Key": key(id_pk(new["coupon_id"]), "COUPON"),
                        "UpdateExpression": "SET code_hash = :h",
                        "ExpressionAttributeValues": {":h": to_value(new["code_hash"])}}},
            *free_checks(self._table, new, own=old["code_hash"]),
        ])

    def _update_in_place(self, old: dict[str, Any], new: dict[str, Any], guard: str,
                         guard_values: dict[str, Any]) -> None:
        before = {k: v for k, v in coupon_item(old).items() if v is not None and k not in NOT_EDITED}
        after = {k: v for k, v in coupon_item(new).items() if v is not None and k not in NOT_EDITED}
        changed = sorted(k for k, v in after.items() if before.get(k) != v or k in ("updated_at", "updated_by"))
        gone = sorted(set(before) - set(after))
        names = {f"#a{i}": name for i, name in enumerate([*changed, *gone])}
        alias = {name: token for token, name in names.items()}
        values = {f":a{i}": to_value(after[name]) for i, name in enumerate(changed)}
        expression = "SET " + ", ".join([f"{alias[n]} = :a{i}" for i, n in enumerate(changed)] +
                                        ["version = :next_version"])
        if gone:
            expression += " REMOVE " + ", ".join(alias[n] for n in gone)
        try:
            self._db.update_item(
                TableName=self._table, Key=key(code_pk(old["code_hash"]), "COUPON"),
                UpdateExpression=expression,
                ConditionExpression=f"attribute_exists(pk) AND coupon_id = :cid AND {guard}",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**values, **guard_values, ":cid": to_value(old["coupon_id"])},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                raise StaleWrite() from None
            raise translate(error) from error

    def delete(self, record: dict[str, Any], *, actor: str, at: datetime) -> None:
        """Remove the coupon so its code stops working at once; the pointer stays as a tombstone."""
        self._transact([
            {"Delete": {"TableName": self._table, "Key": key(code_pk(record["code_hash"]), "COUPON"),
                        "ConditionExpression": "attribute_exists(pk)"}},
            {"Update": {"TableName": self._table, "Key": key(id_pk(record["coupon_id"]), "COUPON"),
                        "UpdateExpression": "SET deleted_at = :at, deleted_by = :by, campaign_id = :c",
                        "ConditionExpression": "attribute_not_exists(deleted_at)",
                        "ExpressionAttributeValues": {":at": to_value(iso(at)), ":by": to_value(actor),
                                                      ":c": to_value(record.get("campaign_id") or "")}}},
        ])

    def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error_code(error) == "TransactionCanceledException":
                reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
                checks = [r for r, i in zip(reasons, items, strict=False) if "ConditionCheck" in i]
                if "ConditionalCheckFailed" in checks:
                    raise CodeAlreadyExists() from None  # the code is live under another key version
                if reasons and reasons[0] == "ConditionalCheckFailed" and len(items) >= 2 and "Put" in items[0]:
                    raise CodeAlreadyExists() from None  # create: the code's item exists
                if "ConditionalCheckFailed" in reasons and any("Delete" in i for i in items[:1]) and \
                        len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed" and "Put" in items[1]:
                    raise CodeAlreadyExists() from None  # re-code: the new code is taken
                if "ConditionalCheckFailed" in reasons:
                    raise StaleWrite() from None
            raise translate(error) from error


class StaleWrite(Exception):
    """A guarded write lost a race with another writer; re-read and try again."""
