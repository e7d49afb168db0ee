"""Envelope encryption and the blind index (pure, with a fake KMS)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from coupons.crypto import CipherCache, CodeCipher, unwrap_keyring
from cryptography.exceptions import InvalidTag


class FakeKms:
    """Wraps by XOR with a fixed pad: enough to prove what is stored is not the data key."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.pad = os.urandom(32)

    def generate_data_key(self, **kwargs: Any) -> dict[str, bytes]:
        self.calls.append("GenerateDataKey")
        plain = os.urandom(32)
        return {"Plaintext": plain, "CiphertextBlob": bytes(a ^ b for a, b in zip(plain, self.pad, strict=True))}

    def decrypt(self, **kwargs: Any) -> dict[str, bytes]:
        self.calls.append("Decrypt")
        blob = kwargs["CiphertextBlob"]
        return {"Plaintext": bytes(a ^ b for a, b in zip(blob, self.pad, strict=True))}


class MemoryKeyring:
    def __init__(self) -> None:
        self.keys: dict[int, bytes] = {}

    def load_wrapped_keys(self) -> dict[int, bytes]:
        return dict(self.keys)

    def save_wrapped_key(self, version: int, blob: bytes) -> bool:
        if version in self.keys:
            return False
        self.keys[version] = blob
        return True


def test_blind_index_is_stable_keyed_and_not_the_code() -> None:
    cipher = CodeCipher({1: b"k" * 32}, 1)
    other = CodeCipher({1: b"j" * 32}, 1)
    index = cipher.blind_index("SUMMER25")
    assert index == cipher.blind_index("SUMMER25")
    assert index != other.blind_index("SUMMER25")
    assert "SUMMER25" not in index and len(index) == 64


def test_encryption_round_trips_and_is_bound_to_the_coupon() -> None:
    cipher = CodeCipher({1: os.urandom(32)}, 1)
    sealed = cipher.encrypt("SUMMER-25", "coupon-1")
    assert "SUMMER" not in sealed
    assert cipher.encrypt("SUMMER-25", "coupon-1") != sealed  # fresh nonce each time
    assert cipher.decrypt(sealed, "coupon-1", 1) == "SUMMER-25"
    with pytest.raises(InvalidTag):
        cipher.decrypt(sealed, "coupon-2", 1)  # moved to another coupon: refused


def test_rotation_keeps_old_codes_findable() -> None:
    keys = {1: os.urandom(32), 2: os.urandom(32)}
    old, new = CodeCipher({1: keys[1]}, 1), CodeCipher(keys, 2)
    stored = old.blind_index("SUMMER25")
    assert stored in new.lookup_indexes("SUMMER25")
    assert new.blind_index("SUMMER25") == new.lookup_indexes("SUMMER25")[0]


def test_keyring_is_created_once_then_only_unwrapped() -> None:
    kms, store = FakeKms(), MemoryKeyring()
    first = unwrap_keyring(store, kms, "alias/x", 1)
    assert kms.calls == ["GenerateDataKey", "Decrypt"]
    assert store.keys[1] != first._keys  # the stored form is the wrapped blob
    kms.calls.clear()
    second = unwrap_keyring(store, kms, "alias/x", 1)
    assert kms.calls == ["Decrypt"]
    assert second.blind_index("A1") == first.blind_index("A1")


def test_cipher_cache_builds_once() -> None:
    built: list[int] = []
    cache = CipherCache()

    def build() -> CodeCipher:
        built.append(1)
        return CodeCipher({1: b"x" * 32}, 1)

    assert cache.get(build) is cache.get(build)
    assert built == [1]


class DeniedKms(FakeKms):
    def generate_data_key(self, **kwargs: Any) -> dict[str, bytes]:
        error = Exception("denied")
        error.response = {"Error": {"Code": "AccessDeniedException"}}  # type: ignore[attr-defined]
        raise error


def test_a_read_only_function_before_any_coupon_finds_nothing_and_caches_nothing() -> None:
    store, cache = MemoryKeyring(), CipherCache()
    cipher = cache.get(lambda: unwrap_keyring(store, DeniedKms(), "alias/x", 1))
    assert cipher.ephemeral and store.keys == {}
    # once an admin function has created the keyring, the next request reads the real one
    assert not unwrap_keyring(store, FakeKms(), "alias/x", 1).ephemeral
    assert store.keys
    assert cache.get(lambda: CodeCipher({1: b"r" * 32}, 1)).ephemeral is False
