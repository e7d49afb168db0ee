"""Admin use cases: create, read, edit, pause, delete and list coupons."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from .adapters.checkout_store import counted
from .adapters.coupon_store import OTHER_HASHES, SPEC_FIELDS, CouponStore, StaleWrite
from .clock import utcnow
from .codegen import generate_code, new_coupon_id
from .codes import normalise
from .crypto import CodeCipher, refreshed
from .errors import CodeAlreadyExists, CouponNotFound, TryAgain, ValidationFailed
from .models import CouponCreate, CouponUpdate, checked_spec, resolve_spec
from .settings import Settings

GENERATION_ATTEMPTS = 5
EDIT_ATTEMPTS = 4
# How stale a creating container's view of the stored key versions may be: one started before a
# rotation (a bulk worker runs for up to 15 minutes) learns the new version within this long and
# then guards its index too. One Query when due; KMS only for a version it has not unwrapped.
KEYRING_RECHECK_SECONDS = 10.0


def effective_status(record: dict[str, Any], now: datetime) -> str:
    """The status a reader sees: dates and counters win over what the sweep has stored yet."""
    stored = record["status"]
    if stored == "expired" or now >= record["expires_at"]:
        return "expired"
    if stored == "disabled":
        return "disabled"
    max_uses = record.get("max_uses")
    if max_uses is not None and record.get("redeemed_count", 0) >= max_uses:
        return "exhausted"
    return "active"


def coupon_view(record: dict[str, Any], code: str, now: datetime) -> dict[str, Any]:
    max_uses = record.get("max_uses")
    redeemed = int(record.get("redeemed_count", 0))
    view = {field: record.get(field) for field in SPEC_FIELDS}
    for field in ("applicable_products", "applicable_categories", "excluded_products",
                  "excluded_categories", "allowed_domains"):
        view[field] = view[field] or []
    view["metadata"] = view["metadata"] or {}
    view.update(
        id=record["coupon_id"],
        code=code,
        status=effective_status(record, now),
        redeemed_count=redeemed,
        remaining_uses=None if max_uses is None else max(0, max_uses - redeemed),
        created_at=record["created_at"],
        updated_at=record["updated_at"],
    )
    return view


def _check_reactivation(old: dict[str, Any], patch: dict[str, Any], expires_at: datetime, now: datetime) -> None:
    """Contract: `status: active` on an expired coupon needs a later `expires_at` in the same request.

    Without one the coupon would stay expired (dates win over the stored status): a 400, not a
    200 that silently changes nothing. Expired: stored as such, or past its `expires_at`.
    """
    if patch.get("status") != "active":
        return
    if old["status"] != "expired" and now < old["expires_at"]:
        return
    if patch.get("expires_at") is not None and expires_at > now:
        return
    message = "an expired coupon becomes active only with a later expires_at in the same request"
    raise ValidationFailed(details=[
        {"field": "status", "message": message},
        {"field": "expires_at", "message": "send a time in the future to make this expired coupon active"},
    ])


class AdminService:
    def __init__(
        self,
        store: CouponStore,
        cipher: Callable[[], CodeCipher],
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._settings = settings
        self._clock = clock

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        code = self._cipher().decrypt(record["code_ct"], record["coupon_id"], int(record["key_version"]))
        return coupon_view(counted(self._store, record), code, self._clock())

    def _sealed(self, coupon_id: str, code: str) -> dict[str, Any]:
        normalised = normalise(code)
        if normalised is None:  # the model already enforced the vanity rule
            raise ValidationFailed(details=[{"field": "code", "message": "not a valid code"}])
        cipher = refreshed(self._cipher, KEYRING_RECHECK_SECONDS)
        return {
            "code_hash": cipher.blind_index(normalised),
            "key_version": cipher.active_version,
            "code_ct": cipher.encrypt(code, coupon_id),
            OTHER_HASHES: cipher.other_indexes(normalised),  # must be free: the store checks them atomically
        }

    def create(self, request: CouponCreate, actor: str) -> dict[str, Any]:
        now = self._clock()
        spec = resolve_spec(request.model_dump(exclude_unset=True), self._settings, now)
        attempts = 1 if request.code else GENERATION_ATTEMPTS
        for _ in range(attempts):
            code = request.code or generate_code()
            coupon_id = new_coupon_id(self._settings.coupon_id_format)
            record = {
                **spec.model_dump(),
                "coupon_id": coupon_id,
                **self._sealed(coupon_id, code),
                "status": request.status or "active",
                "redeemed_count": 0,
                "created_at": now,
                "updated_at": now,
                "created_by": actor,
                "updated_by": actor,
            }
            try:
                self._store.create(record)
            except (CodeAlreadyExists, StaleWrite):
                if request.code:
                    raise CodeAlreadyExists() from None
                continue  # a generated code or id collided: draw again
            return coupon_view(record, code, now)
        raise TryAgain(retry_after=1)

    def get(self, coupon_id: str) -> dict[str, Any]:
        return self.view(self._store.get_by_id(coupon_id))

    def find_by_code(self, code: str) -> dict[str, Any] | None:
        normalised = normalise(code)
        if normalised is None:
            return None
        record = self._store.get_by_indexes(self._cipher().lookup_indexes(normalised))
        return None if record is None else self.view(record)

    def update(self, coupon_id: str, request: CouponUpdate, actor: str) -> dict[str, Any]:
        patch = request.model_dump(exclude_unset=True)
        if "code" in patch and patch["code"] is None:
            raise ValidationFailed(details=[{"field": "code", "message": "a coupon always has a code"}])
        for _ in range(EDIT_ATTEMPTS):
            old = self._store.get_by_id(coupon_id)
            now = self._clock()
            merged = {field: old.get(field) for field in SPEC_FIELDS}
            merged.update({k: v for k, v in patch.items() if k in SPEC_FIELDS})
            merged = {k: v for k, v in merged.items() if v is not None or k in ("max_uses", "uses_per_user")}
            spec = checked_spec(merged)
            _check_reactivation(old, patch, spec.expires_at, now)
            status = patch.get("status") or old["status"]
            if old["status"] == "expired" and "status" not in patch and spec.expires_at > now:
                status = "active"  # extending an expired coupon brings it back
            new = {**old, **spec.model_dump(), "status": status, "updated_at": now, "updated_by": actor}
            code = patch.get("code")
            if code:
                new.update(self._sealed(coupon_id, code))
            else:
                code = self._cipher().decrypt(old["code_ct"], coupon_id, int(old["key_version"]))
            try:
                self._store.replace(old, new)
            except StaleWrite:
                continue  # someone redeemed or edited in between: re-read and re-apply
            return coupon_view(counted(self._store, new), code, now)
        raise TryAgain(retry_after=1)

    def delete(self, coupon_id: str, actor: str) -> None:
        record = self._store.get_by_id(coupon_id)
        try:
            self._store.delete(record, actor=actor, at=self._clock())
        except StaleWrite:
            raise CouponNotFound() from None

    def list(self, *, status: str | None, campaign_id: str | None, code: str | None, limit: int,
             cursor: str | None) -> dict[str, Any]:
        if code is not None:
            found = self.find_by_code(code)
            keep = found is not None and (status is None or found["status"] == status) and (
                campaign_id is None or found.get("campaign_id") == campaign_id)
            return {"items": [found] if keep else [], "next_cursor": None}
        now = self._clock()
        records, next_cursor = self._store.list_page(status=status, campaign_id=campaign_id, limit=limit,
                                                cursor=cursor, now=now)
        items = [self.view(r) for r in records]
        if status is not None:
            items = [i for i in items if i["status"] == status]
        return {"items": items, "next_cursor": next_cursor}
