"""Envelope encryption and the blind index for coupon codes.

A KMS key wraps one 256-bit data key per key version. The wrapped keys live in
the coupons table (`pk=KEYRING`); a container unwraps them once (one KMS
`Decrypt` per version at cold start) and caches them, so a warm request makes
no KMS call. Two keys are derived from each data key with HKDF:

- the blind-index key: HMAC-SHA256(normalised code) is the item key, so a code
  is found without ever being stored;
- the encryption key: AES-256-GCM over the display code, bound to the coupon id.

Key rotation: a new version is added and used for new coupons; lookups hash the
code under every live version (one `BatchGetItem` either way).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12


def _derive(data_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"coupons/" + purpose).derive(data_key)


@dataclass(frozen=True)
class _VersionKeys:
    index_key: bytes
    aead: AESGCM


class CodeCipher:
    """Blind index and encryption for codes, over already-unwrapped data keys."""

    def __init__(self, data_keys: dict[int, bytes], active_version: int, *, ephemeral: bool = False) -> None:
        self.ephemeral = ephemeral
        if active_version not in data_keys:
            raise ValueError("the active key version has no data key")
        self.active_version = active_version
        self._keys = {
            version: _VersionKeys(_derive(key, b"blind-index"), AESGCM(_derive(key, b"code-encryption")))
            for version, key in data_keys.items()
        }

    @property
    def versions(self) -> list[int]:
        return sorted(self._keys, reverse=True)

    def blind_index(self, normalised_code: str, version: int | None = None) -> str:
        keys = self._keys[version or self.active_version]
        return hmac.new(keys.index_key, normalised_code.encode(), hashlib.sha256).hexdigest()

    def lookup_indexes(self, normalised_code: str) -> list[str]:
        """The code's index under every live key version, newest first."""
        return [self.blind_index(normalised_code, v) for v in self.versions]

    def encrypt(self, code: str, bound_to: str, version: int | None = None) -> str:
        keys = self._keys[version or self.active_version]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = keys.aead.encrypt(nonce, code.encode(), bound_to.encode())
        return base64.b64encode(nonce + sealed).decode()

    def decrypt(self, blob: str, bound_to: str, version: int) -> str:
        raw = base64.b64decode(blob)
        return self._keys[version].aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound_to.encode()).decode()


class KeyringStore(Protocol):
    def load_wrapped_keys(self) -> dict[int, bytes]: ...

    def save_wrapped_key(self, version: int, blob: bytes) -> bool:
        """Store a new wrapped key unless that version exists; False if it did."""
        ...


class KmsClient(Protocol):
    def generate_data_key(self, **kwargs: Any) -> Any: ...

    def decrypt(self, **kwargs: Any) -> Any: ...


def _context(version: int) -> dict[str, str]:
    return {"purpose": "coupon-codes", "key_version": str(version)}


def unwrap_keyring(store: KeyringStore, kms: KmsClient, kms_key_id: str, active_version: int) -> CodeCipher:
    """Load (creating on first use) and unwrap the data keys: the only KMS calls a container makes."""
    wrapped = store.load_wrapped_keys()
    if active_version not in wrapped:
        try:
            generated = kms.generate_data_key(
                KeyId=kms_key_id, KeySpec="AES_256", EncryptionContext=_context(active_version)
            )
        except Exception as error:
            if "AccessDenied" not in str(getattr(error, "response", {}).get("Error", {}).get("Code", "")):
                raise
            # A read-only function (validate) before any coupon exists: no code can be stored
            # under a key that does not exist yet, so a throwaway key finds nothing, as it should.
            # It is not cached: the real keyring is read again on the next request.
            return CodeCipher({active_version: os.urandom(32)}, active_version, ephemeral=True)
        if store.save_wrapped_key(active_version, generated["CiphertextBlob"]):
            wrapped[active_version] = generated["CiphertextBlob"]
        else:  # another container won the race: use its key
            wrapped = store.load_wrapped_keys()
    plain = {
        version: kms.decrypt(
            CiphertextBlob=blob, KeyId=kms_key_id, EncryptionContext=_context(version)
        )["Plaintext"]
        for version, blob in wrapped.items()
    }
    return CodeCipher(plain, active_version)


class CipherCache:
    """One unwrapped keyring per container, built on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cipher: CodeCipher | None = None

    def get(self, build: Any) -> CodeCipher:
        if self._cipher is None:
            with self._lock:
                if self._cipher is None:
                    cipher: CodeCipher = build()
                    if cipher.ephemeral:
                        return cipher
                    self._cipher = cipher
        return self._cipher

    def clear(self) -> None:
        self._cipher = None
