"""The coupons table: coupon items, id pointers and the keyring.

Key layout (see docs/data-model.md):
- coupon        pk=CODE#<blind index>   sk=COUPON   (found by code in one GetItem)
- id pointer    pk=COUPON#<id>          sk=COUPON   (code_hash; tombstone after delete)
- wrapped key   pk=KEYRING              sk=V#<n>
GSIs on coupon items: gsi1 status, gsi2 campaign, gsi3 expiry (sparse, sharded).
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ..clock import epoch, iso, parse_iso
from ..errors import CodeAlreadyExists, CouponNotFound
from ..events import RECODE_CHANGED, RECODE_PREVIOUS_STATUS, edited_fields
from .dynamo import Item, error_code, from_item, key, paged_query, to_item, to_value, translate

EXPIRY_SHARDS = 4
LIVE_STATUSES = ("active", "disabled")
SPEC_FIELDS = (
    "discount_type", "discount_value", "currency", "max_discount_amount", "min_order_amount",
    "starts_at", "expires_at", "max_uses", "uses_per_user", "applicable_products",
    "applicable_categories", "excluded_products", "excluded_categories", "channels",
    "allowed_domains", "campaign_id", "metadata",
)


def code_pk(code_hash: str) -> str:
    return f"CODE#{code_hash}"


def id_pk(coupon_id: str) -> str:
    return f"COUPON#{coupon_id}"


def expiry_shard(coupon_id: str) -> int:
    return zlib.crc32(coupon_id.encode()) % EXPIRY_SHARDS


def coupon_item(record: dict[str, Any]) -> dict[str, Any]:
    """The stored form of a coupon record (python values, not yet serialised)."""
    values = dict(record)
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
    return record


class DynamoKeyringStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def load_wrapped_keys(self) -> dict[int, bytes]:
        page = self._db.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "KEYRING"}},
            ConsistentRead=True,
        )
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
        """The live coupon stored under any of these blind indexes (one round trip)."""
        try:
            if len(code_hashes) == 1:
                raw = self._db.get_item(TableName=self._table, Key=key(code_pk(code_hashes[0]), "COUPON"))
                items = [raw["Item"]] if "Item" in raw else []
            else:
                raw = self._db.batch_get_item(RequestItems={self._table: {
                    "Keys": [key(code_pk(h), "COUPON") for h in code_hashes]}})
                items = raw.get("Responses", {}).get(self._table, [])
        except ClientError as error:
            raise translate(error) from error
        for item in items:
            plain = from_item(item)
            if plain is not None:
                return coupon_record(plain)
        return None

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
        ])

    def replace(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Write an edited coupon, guarded against concurrent edits and counter changes.

        The counter is re-read inside the condition, so an edit never undoes a redemption
        that landed in between (that edit fails and is retried by the caller).
        """
        item = coupon_item(new)
        for name in (RECODE_CHANGED, RECODE_PREVIOUS_STATUS):
            item.pop(name, None)  # a note for one re-code's INSERT, not carried into later edits
        guard = "attribute_exists(pk) AND updated_at = :seen AND redeemed_count = :count"
        values = {":seen": to_value(iso(old["updated_at"])), ":count": to_value(old.get("redeemed_count", 0))}
        if old["code_hash"] != new["code_hash"]:
            # The stream shows the move as an INSERT without the old image: name the edit's fields
            # on the new item, so its CouponUpdated lists them all (issue 17, 8b).
            item[RECODE_CHANGED] = edited_fields(coupon_item(old), item)
            if old.get("status") != new.get("status"):
                item[RECODE_PREVIOUS_STATUS] = old.get("status")
        if old["code_hash"] == new["code_hash"]:
            self._transact([{"Put": {"TableName": self._table, "Item": to_item(item),
                                     "ConditionExpression": guard,
                                     "ExpressionAttributeValues": values}}])
            return
        # A new code: the coupon moves to its new blind index, the pointer follows.
        self._transact([
            {"Delete": {"TableName": self._table, "Key": key(code_pk(old["code_hash"]), "COUPON"),
                        "ConditionExpression": guard, "ExpressionAttributeValues": values}},
            {"Put": {"TableName": self._table, "Item": to_item(item),
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": self._table, "Key": key(id_pk(new["coupon_id"]), "COUPON"),
                        "UpdateExpression": "SET code_hash = :h",
                        "ExpressionAttributeValues": {":h": to_value(new["code_hash"])}}},
        ])

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
