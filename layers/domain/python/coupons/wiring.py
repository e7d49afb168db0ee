"""Builds the services a function uses, once per container, from the settings."""

from __future__ import annotations

from functools import lru_cache

from .adapters import aws
from .adapters.coupon_store import CouponStore, DynamoKeyringStore
from .admin import AdminService
from .crypto import CodeCipher, Keyring, unwrap_keyring
from .settings import get_settings


def _unwrap(known: CodeCipher | None) -> CodeCipher:
    settings = get_settings()
    store = DynamoKeyringStore(aws.client("dynamodb"), settings.coupons_table)
    return unwrap_keyring(store, aws.client("kms"), settings.kms_key_id, settings.code_key_version, known=known)


# This container's keyring: `cipher()` is the cached one, `cipher.refresh()` re-reads the stored versions.
cipher = Keyring(_unwrap)


@lru_cache(maxsize=1)
def coupon_store() -> CouponStore:
    return CouponStore(aws.client("dynamodb"), get_settings().coupons_table)


@lru_cache(maxsize=1)
def admin_service() -> AdminService:
    return AdminService(coupon_store(), cipher, get_settings())


def reset() -> None:
    """Forget every cached client, key and service (tests; a new environment)."""
    cipher.clear()
    coupon_store.cache_clear()
    admin_service.cache_clear()
    get_settings.cache_clear()
    aws.reset_clients()
