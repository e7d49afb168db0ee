"""The outbox: committed table changes (DynamoDB stream records) become the contract's events.

Pure logic, no AWS: `to_event` maps one change (old and new images, already
deserialised) to zero or one event; `coupons.outbox` publishes a stream batch's
events, parks what the bus refuses and says which records must be retried.

What maps to what (every other change publishes nothing):

| item | change | event |
|---|---|---|
| coupon (`pk=CODE#…`, `sk=COUPON`) | INSERT | `CouponCreated`, or `CouponUpdated` when the coupon moved to a new code |
| coupon | MODIFY to `status: expired` | `CouponExpired` |
| coupon | MODIFY of counters only (`redeemed_count`, …) | nothing (the redemption drives `CouponRedeemed`) |
| coupon | any other MODIFY | `CouponUpdated` (`changed` names the fields) |
| coupon | REMOVE | nothing (the id pointer drives `CouponDeleted`) |
| id pointer (`pk=COUPON#…`) | MODIFY that sets `deleted_at` | `CouponDeleted` |
| redemption (`pk=REDEMPTION#…`) | INSERT | `CouponRedeemed` |
| redemption | MODIFY `redeemed` → `rolled_back` | `RedemptionRolledBack` |
| job (jobs table) | to `succeeded`/`failed` | `BulkImportCompleted` / `BulkGenerationCompleted` by kind |
| fraud flag (guards table, `pk=FRAUD#…`) | INSERT | `FraudSuspected` |

`detail` carries ids, amounts, currency, channel and the actor, plus `event_id`
(the stream record's id: stable across redeliveries, so consumers can drop
duplicates). It never carries a code, a code hash or a code ciphertext: every
detail goes through `scrub` last, whatever the mapping put in it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

SOURCE = "coupons"

COUPON_CREATED = "CouponCreated"
COUPON_UPDATED = "CouponUpdated"
COUPON_DELETED = "CouponDeleted"
COUPON_REDEEMED = "CouponRedeemed"
REDEMPTION_ROLLED_BACK = "RedemptionRolledBack"
COUPON_EXPIRED = "CouponExpired"
BULK_IMPORT_COMPLETED = "BulkImportCompleted"
BULK_GENERATION_COMPLETED = "BulkGenerationCompleted"
FRAUD_SUSPECTED = "FraudSuspected"
DETAIL_TYPES = (
    COUPON_CREATED, COUPON_UPDATED, COUPON_DELETED, COUPON_REDEEMED, REDEMPTION_ROLLED_BACK,
    COUPON_EXPIRED, BULK_IMPORT_COMPLETED, BULK_GENERATION_COMPLETED, FRAUD_SUSPECTED,
)

# Never in a detail, at any depth.
FORBIDDEN_KEYS = frozenset({"code", "codes", "code_hash", "code_hashes", "code_ct", "plaintext", "ip_hash"})
# Attributes that are storage plumbing, not coupon fields.
_PLUMBING = frozenset({"pk", "sk", "entity", "ttl", "version"})
# Coupon attributes that move on every redemption or rollback; a change to these alone is no event.
COUNTER_FIELDS = frozenset({
    "redeemed_count", "rolled_back_count", "last_redeemed_at", "shard_count", "shards",
    "hot", "hot_shards", "remaining_uses", "counter_version",
})
# What a re-code writes on the coupon's new item (issue 17, 8b): the stream shows the move as an
# INSERT and a REMOVE on different keys (possibly in different shards), so the INSERT carries the
# names of the fields the edit changed, and the status before it when that changed.
RECODE_CHANGED = "edit_changed"
RECODE_PREVIOUS_STATUS = "edit_previous_status"
# Stored attributes that tell nothing new when they change along with a real edit.
_EDIT_BOOKKEEPING = frozenset({"updated_at", "updated_by", "starts_epoch", "expires_epoch", "key_version",
                               RECODE_CHANGED, RECODE_PREVIOUS_STATUS})
TERMINAL_JOB_STATUSES = frozenset({"succeeded", "failed"})
MAX_RESULT_BYTES = 8 * 1024  # a job's `result` is passed on only while small (events are at most 256 KB)

_COUPON_FIELDS = (
    "campaign_id", "status", "discount_type", "discount_value", "currency", "max_discount_amount",
    "min_order_amount", "max_uses", "uses_per_user", "channels", "starts_at", "expires_at",
)
_REDEMPTION_FIELDS = (
    "redemption_id", "coupon_id", "order_id", "campaign_id", "user_id", "channel", "discount_amount",
    "currency", "status", "redeemed_at", "rolled_back_at",
)


@dataclass(frozen=True)
class Change:
    """One committed change, as a DynamoDB stream delivers it (NEW_AND_OLD_IMAGES)."""

    event_id: str  # the stream record's eventID
    event_name: str  # INSERT | MODIFY | REMOVE
    sequence_number: str
    table: str | None = None  # "coupons" | "guards" | "jobs" when known (from the stream ARN)
    old: Mapping[str, Any] | None = None
    new: Mapping[str, Any] | None = None
    at: datetime | None = None  # the stream's approximate creation time


@dataclass(frozen=True)
class ContractEvent:
    detail_type: str
    detail: dict[str, Any]
    at: datetime | None = None
    source: str = SOURCE

    def detail_json(self) -> str:
        return json.dumps(self.detail, separators=(",", ":"), sort_keys=True)


# --- mapping ------------------------------------------------------------------------------------


def _kind(change: Change) -> str | None:
    """What sort of item changed, from its key (and the table when the key alone is ambiguous)."""
    image = change.new or change.old or {}
    pk = str(image.get("pk", ""))
    sk = str(image.get("sk", ""))
    entity = image.get("entity")
    if change.table == "jobs" or entity == "job":
        return "job" if (entity in (None, "job") and image.get("job_id")) else None
    if change.table == "guards":
        return "fraud" if pk.startswith("FRAUD#") else None
    if pk.startswith("CODE#") and sk == "COUPON" and entity in (None, "coupon"):
        return "coupon"
    if pk.startswith("COUPON#") and sk == "COUPON" and entity in (None, "pointer"):
        return "pointer"
    if pk.startswith("REDEMPTION#") and entity in (None, "redemption") and image.get("redemption_id"):
        return "redemption"
    if pk.startswith("FRAUD#") and change.table is None:
        return "fraud"
    return None


def to_event(change: Change) -> ContractEvent | None:
    """The contract event this committed change publishes, if any."""
    kind = _kind(change)
    mapper = _MAPPERS.get(kind or "")
    if mapper is None:
        return None
    event = mapper(change)
    if event is None:
        return None
    detail = scrub({**event.detail, "event_id": change.event_id})
    return ContractEvent(event.detail_type, detail, at=event.at or change.at)


def _coupon(change: Change) -> ContractEvent | None:
    old, new = change.old or {}, change.new or {}
    if change.event_name == "INSERT":
        base = _pick(new, _COUPON_FIELDS)
        if new.get("created_at") and new.get("updated_at") and new["created_at"] != new["updated_at"]:
            # A re-code moves the coupon to a new item: an edit, not a new coupon. The item names
            # every field the edit changed (an item written before it did: the code alone).
            names = sorted({"code", *(str(n) for n in new.get(RECODE_CHANGED) or ())})
            detail = {"coupon_id": new.get("coupon_id"), **base, "changed": names,
                      "actor": new.get("updated_by"), "updated_at": new.get("updated_at")}
            if "status" in names:
                detail["previous_status"] = new.get(RECODE_PREVIOUS_STATUS)
            return ContractEvent(COUPON_UPDATED, detail)
        return ContractEvent(COUPON_CREATED, {
            "coupon_id": new.get("coupon_id"), **base,
            "actor": new.get("created_by"), "created_at": new.get("created_at"),
        })
    if change.event_name != "MODIFY":
        return None  # REMOVE: a delete (the pointer speaks) or the old half of a re-code
    if new.get("status") == "expired" and old.get("status") != "expired":
        return ContractEvent(COUPON_EXPIRED, {
            "coupon_id": new.get("coupon_id"), "campaign_id": new.get("campaign_id"),
            "expires_at": new.get("expires_at"), "expired_at": new.get("expired_at") or new.get("updated_at"),
            "previous_status": old.get("status"), "actor": new.get("updated_by"),
        })
    changed = changed_fields(old, new)
    meaningful = changed - COUNTER_FIELDS - _EDIT_BOOKKEEPING
    if not meaningful and not ({"updated_at", "updated_by"} & changed):
        return None  # counters only (a redemption or rollback), or a write that changed nothing
    names = edited_fields(old, new)
    detail = {
        "coupon_id": new.get("coupon_id"), **_pick(new, _COUPON_FIELDS), "changed": names,
        "actor": new.get("updated_by"), "updated_at": new.get("updated_at"),
    }
    if "status" in meaningful:
        detail["previous_status"] = old.get("status")
    return ContractEvent(COUPON_UPDATED, detail)


def _pointer(change: Change) -> ContractEvent | None:
    old, new = change.old or {}, change.new or {}
    if change.event_name == "MODIFY" and new.get("deleted_at") and not old.get("deleted_at"):
        return ContractEvent(COUPON_DELETED, {
            "coupon_id": new.get("coupon_id"), "campaign_id": new.get("campaign_id") or None,
            "actor": new.get("deleted_by"), "deleted_at": new.get("deleted_at"),
        })
    return None


def _redemption(change: Change) -> ContractEvent | None:
    old, new = change.old or {}, change.new or {}
    if change.event_name == "INSERT" and new.get("status", "redeemed") == "redeemed":
        # The actor is who redeemed: the server for a redemption it made (issue 12), else the customer
        actor = f"client:{new['client_id']}" if new.get("client_id") else new.get("user_id")
        return ContractEvent(COUPON_REDEEMED, {**_pick(new, _REDEMPTION_FIELDS, drop=("rolled_back_at",)),
                                               "actor": actor})
    if change.event_name == "MODIFY" and old.get("status") != "rolled_back" and \
            new.get("status") == "rolled_back":
        return ContractEvent(REDEMPTION_ROLLED_BACK, {
            **_pick(new, _REDEMPTION_FIELDS),
            "actor": new.get("rolled_back_by") or new.get("user_id"),
        })
    return None


def _job(change: Change) -> ContractEvent | None:
    old, new = change.old or {}, change.new or {}
    if change.event_name not in ("INSERT", "MODIFY"):
        return None
    if new.get("status") not in TERMINAL_JOB_STATUSES or old.get("status") in TERMINAL_JOB_STATUSES:
        return None
    kind = str(new.get("kind", "")).lower()
    if "import" in kind:
        detail_type = BULK_IMPORT_COMPLETED
    elif "gen" in kind:
        detail_type = BULK_GENERATION_COMPLETED
    else:
        return None
    detail = _pick(new, ("job_id", "kind", "status", "campaign_id", "total", "processed", "failed",
                         "created", "rejected", "duplicates", "source_key", "result_key", "error",
                         "created_at", "finished_at", "updated_at"))
    detail["actor"] = new.get("created_by") or new.get("actor")
    result = new.get("result")
    if isinstance(result, Mapping):
        small = jsonable(result)
        if len(json.dumps(small, default=str)) <= MAX_RESULT_BYTES:
            detail["result"] = small
    return ContractEvent(detail_type, detail)


def _fraud(change: Change) -> ContractEvent | None:
    new = change.new or {}
    if change.event_name != "INSERT":
        return None
    detail = {k: v for k, v in new.items() if k not in _PLUMBING and not k.startswith("gsi")}
    return ContractEvent(FRAUD_SUSPECTED, detail)


_MAPPERS: dict[str, Callable[[Change], ContractEvent | None]] = {
    "coupon": _coupon, "pointer": _pointer, "redemption": _redemption, "job": _job, "fraud": _fraud,
}


# --- helpers ------------------------------------------------------------------------------------


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
    """Attributes whose value differs (index keys and storage plumbing left out)."""
    names = (set(old) | set(new)) - _PLUMBING
    return {n for n in names if not n.startswith("gsi") and old.get(n) != new.get(n)}


def edited_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The coupon fields an edit changed, by name (`code` for a new code, never its value).

    The outbox names a MODIFY's fields with it, and the coupon store records it on a re-code's
    new item, so both kinds of edit name their fields the same way."""
    meaningful = changed_fields(old, new) - COUNTER_FIELDS - _EDIT_BOOKKEEPING
    return sorted({"code" if f in ("code_hash", "code_ct") else f for f in meaningful})


def _pick(image: Mapping[str, Any], names: Iterable[str], drop: Sequence[str] = ()) -> dict[str, Any]:
    return {n: image.get(n) for n in names if n not in drop}


def jsonable(value: Any) -> Any:
    """Stream values as JSON values: Decimal to int/float, sets to sorted lists, bytes dropped."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if math.isfinite(as_float) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items() if not isinstance(v, bytes | bytearray)}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value if not isinstance(v, bytes | bytearray)]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def scrub(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The detail with every code-bearing key removed at any depth, as plain JSON values."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if str(k).lower() not in FORBIDDEN_KEYS}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    result = clean(jsonable(detail))
    assert isinstance(result, dict)
    return result
