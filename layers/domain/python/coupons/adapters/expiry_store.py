"""The expiry index (gsi3, sparse and sharded) and the conditional update that marks a coupon expired.

Live coupons carry `gsi3pk=EXPIRY#<shard>` and `gsi3sk=<expires_at iso>#<id>`
(see coupon_store.coupon_item); ISO timestamps are fixed width, so every coupon
due at `now` sorts before `<iso(now)>$` (`$` follows `#`). Marking a coupon
expired removes it from the index, so each sweep only reads what is due.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ..clock import iso
from .coupon_store import EXPIRY_SHARDS, LIVE_STATUSES
from .dynamo import Item, error_code, from_item, translate

SWEEPER = "system:expiry-sweep"


class DynamoExpiryStore:
    shards = EXPIRY_SHARDS

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def due(self, shard: int, now: datetime, limit: int,
            start: dict[str, Any] | None) -> tuple[list[Item], dict[str, Any] | None]:
        """One page of coupons in this shard whose `expires_at` is at or before `now`."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi3",
            "KeyConditionExpression": "gsi3pk = :pk AND gsi3sk < :upto",
            "ExpressionAttributeValues": {":pk": {"S": f"EXPIRY#{shard}"}, ":upto": {"S": f"{iso(now)}$"}},
            "ProjectionExpression": "pk, sk, coupon_id, expires_at, #status",
            "ExpressionAttributeNames": {"#status": "status"},
            "Limit": limit,
        }
        if start:
            request["ExclusiveStartKey"] = start
        try:
            page = self._db.query(**request)
        except ClientError as error:
            raise translate(error) from error
        items = [i for i in (from_item(raw) for raw in page.get("Items", [])) if i is not None]
        return items, page.get("LastEvaluatedKey")

    def expire(self, item: Item, now: datetime) -> bool:
        """Mark one coupon expired unless it no longer is due or live; False when nothing changed."""
        at = iso(now)
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": item["pk"]}, "sk": {"S": item["sk"]}},
                # Bumps the version (coupon_store): an edit that read the coupon before re-reads it.
                UpdateExpression="SET #status = :expired, gsi1pk = :gsi1, expired_at = :at, updated_at = :at, "
                                 "updated_by = :by REMOVE gsi3pk, gsi3sk ADD version :one",
                ConditionExpression="attribute_exists(pk) AND #status IN (:active, :disabled) "
                                    "AND expires_at <= :at",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":expired": {"S": "expired"}, ":gsi1": {"S": "STATUS#expired"}, ":at": {"S": at},
                    ":by": {"S": SWEEPER}, ":one": {"N": "1"},
                    ":active": {"S": LIVE_STATUSES[0]}, ":disabled": {"S": LIVE_STATUSES[1]},
                },
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False  # already expired, deleted, or extended since the index was read
            raise translate(error) from error
        return True
