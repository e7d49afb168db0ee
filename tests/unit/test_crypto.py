"""Envelope encryption and the blind index (pure, with a fake KMS)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from coupons.crypto import CodeCipher, Keyring, KeyringUnavailable, refreshed, unwrap_keyring
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


def test_keyring_builds_once() -> None:
    built: list[CodeCipher | None] = []

    def unwrap(known: CodeCipher | None) -> CodeCipher:
        built.append(known)
        return CodeCipher({1: b"x" * 32}, 1)

    keyring = Keyring(unwrap)
    assert keyring() is keyring()
    assert built == [None]


class DeniedKms(FakeKms):
    def generate_data_key(self, **kwargs: Any) -> dict[str, bytes]:
        error = Exception("denied")
        error.response = {"Error": {"Code": "AccessDeniedException"}}  # type: ignore[attr-defined]
        raise error


def test_a_read_only_function_before_any_coupon_finds_nothing_and_learns_the_key_when_it_exists() -> None:
    # (Replaces a test of the old throwaway-key fallback, which dropped every stored version.)
    store, denied, kms = MemoryKeyring(), DeniedKms(), FakeKms()
    denied.pad = kms.pad  # one KMS key, seen through two roles
    keyring = Keyring(lambda known: unwrap_keyring(store, denied, "alias/x", 1, known=known))
    cipher = keyring()
    assert cipher.read_only and not cipher.complete and cipher.versions == [] and store.keys == {}
    assert len(cipher.lookup_indexes("A1")) == 1  # an index under no key: matches nothing
    with pytest.raises(KeyringUnavailable):
        cipher.blind_index("A1")  # it cannot seal codes
    # once an admin function has created the keyring, a refresh unwraps it
    admin = unwrap_keyring(store, kms, "alias/x", 1)
    fresh = refreshed(keyring)
    assert fresh.complete and not fresh.read_only and keyring() is fresh
    assert fresh.lookup_indexes("A1") == [admin.blind_index("A1")]


def test_a_read_only_keyring_after_a_rotation_holds_every_older_version() -> None:
    kms, store = FakeKms(), MemoryKeyring()
    v1 = unwrap_keyring(store, kms, "alias/x", 1)
    denied = DeniedKms()
    denied.pad = kms.pad
    # Given version 2 is active but only a function without GenerateDataKey has run since
    keyring = Keyring(lambda known: unwrap_keyring(store, denied, "alias/x", 2, known=known))
    cipher = keyring()
    # Then it looks codes up under version 1 (no throwaway key), and knows it is incomplete
    assert cipher.versions == [1] and not cipher.complete and cipher.read_only
    assert cipher.lookup_indexes("OLD1") == [v1.blind_index("OLD1")]
    # A refresh while version 2 still does not exist changes nothing and asks KMS for nothing
    denied.calls.clear()
    assert refreshed(keyring).versions == [1] and denied.calls == []
    # When an admin function creates version 2, a refresh unwraps only that one
    v2 = unwrap_keyring(store, kms, "alias/x", 2)
    fresh = refreshed(keyring)
    assert denied.calls == ["Decrypt"] and fresh.complete and fresh.versions == [2, 1]
    assert fresh.lookup_indexes("NEW2") == v2.lookup_indexes("NEW2")


def test_creating_guards_the_code_under_every_other_version() -> None:
    keys = {1: os.urandom(32), 2: os.urandom(32), 3: os.urandom(32)}
    cipher = CodeCipher(keys, 2)
    others = cipher.other_indexes("SUMMER25")
    assert others == [CodeCipher(keys, 3).blind_index("SUMMER25"), CodeCipher(keys, 1).blind_index("SUMMER25")]
    assert cipher.blind_index("SUMMER25") not in others
    assert CodeCipher({1: keys[1]}, 1).other_indexes("SUMMER25") == []


class FailingKms(FakeKms):
    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code

    def decrypt(self, **kwargs: Any) -> dict[str, bytes]:
        error = Exception(self.code)
        error.response = {"Error": {"Code": self.code}}  # type: ignore[attr-defined]
        raise error


@pytest.mark.parametrize("code", ["AccessDeniedException", "KMSInternalException", "DisabledException"])
def test_a_keyring_that_cannot_be_unwrapped_is_never_built_nor_cached(code: str) -> None:
    kms, store = FakeKms(), MemoryKeyring()
    unwrap_keyring(store, kms, "alias/x", 1)
    failing = FailingKms(code)
    failing.pad = kms.pad
    current: dict[str, Any] = {"kms": failing}
    keyring = Keyring(lambda known: unwrap_keyring(store, current["kms"], "alias/x", 1, known=known))
    with pytest.raises(KeyringUnavailable) as raised:
        keyring()
    assert raised.value.status == 503 and raised.value.code == "TRY_AGAIN" and raised.value.retry_after == 1
    current["kms"] = kms  # KMS answers again: the next request builds it
    assert keyring().complete


def test_a_failed_refresh_keeps_the_good_keyring() -> None:
    kms, store = FakeKms(), MemoryKeyring()
    unwrap_keyring(store, kms, "alias/x", 1)
    current: dict[str, Any] = {"kms": kms}
    keyring = Keyring(lambda known: unwrap_keyring(store, current["kms"], "alias/x", 2, known=known))
    good = keyring()  # versions 1 and 2
    unwrap_keyring(store, kms, "alias/x", 3)  # a version this container has not seen
    current["kms"] = FailingKms("KMSInternalException")
    with pytest.raises(KeyringUnavailable):
        refreshed(keyring)
    assert keyring() is good


def test_a_refresh_with_a_max_age_rereads_only_when_due() -> None:
    kms, store = FakeKms(), MemoryKeyring()
    reads: list[int] = []
    now = [100.0]

    def unwrap(known: CodeCipher | None) -> CodeCipher:
        reads.append(1)
        return unwrap_keyring(store, kms, "alias/x", 1, known=known)

    keyring = Keyring(unwrap, clock=lambda: now[0])
    keyring()
    refreshed(keyring, 10)
    assert len(reads) == 1
    now[0] += 10
    refreshed(keyring, 10)
    assert len(reads) == 2
    assert refreshed(lambda: keyring()) is keyring()  # a plain callable is just called
