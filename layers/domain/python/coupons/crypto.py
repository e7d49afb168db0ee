"""Envelope encryption and the blind index for coupon codes.

A KMS key wraps one 256-bit data key per key version. The wrapped keys live in
the coupons table (`pk=KEYRING`); a container unwraps them once (one KMS
`Decrypt` per version at cold start) and caches them, so a warm request makes
no KMS call. Two keys are derived from each data key with HKDF:

- the blind-index key: HMAC-SHA256(normalised code) is the item key, so a code
  is found without ever being stored;
- the encryption key: AES-256-GCM over the display code, bound to the coupon id.

Key rotation (`CODE_KEY_VERSION`, CDK context `code_key_version`): the active
version's key is created by the first function that may (`kms:GenerateDataKey`)
and seals every new code; every stored version stays live:

- lookups hash the code under every live version (one `BatchGetItem` either way);
- creates require the code's index under every other live version to be absent,
  in the same transaction (`other_indexes`), so one code never lives twice;
- a function without `kms:GenerateDataKey` (validate, redeem) that starts before
  the active version's key exists unwraps all the others: every stored code is
  under one of them. Such a keyring is re-read before a miss counts as a failed
  guess (`Keyring.refresh`), in case the active version's key appeared since;
- a keyring that cannot be unwrapped (KMS denied or unavailable) is never built
  or cached: `KeyringUnavailable` (503 TRY_AGAIN), and no guess is counted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import TryAgain

_NONCE_BYTES = 12
RETRY_AFTER_SECONDS = 1


class KeyringUnavailable(TryAgain):
    """KMS refused or failed to unwrap the code keys: nothing was read or changed (503, Retry-After)."""

    message = "The service cannot read its code keys right now; nothing was changed. Try again."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, retry_after=RETRY_AFTER_SECONDS)


def _derive(data_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"coupons/" + purpose).derive(data_key)


@dataclass(frozen=True)
class _VersionKeys:
    index_key: bytes
    aead: AESGCM

    @classmethod
    def of(cls, data_key: bytes) -> _VersionKeys:
        return cls(_derive(data_key, b"blind-index"), AESGCM(_derive(data_key, b"code-encryption")))


class CodeCipher:
    """Blind index and encryption for codes, over already-unwrapped data keys.

    `read_only`: the active version's key does not exist yet and this function may not create
    it; the keyring holds every other stored version, so it finds every stored code, but it
    cannot seal a new one.
    """

    def __init__(self, data_keys: Mapping[int, bytes], active_version: int, *, read_only: bool = False,
                 _derived: Mapping[int, _VersionKeys] | None = None) -> None:
        self.active_version = active_version
        self.read_only = read_only
        self._keys = dict(_derived or {})
        self._keys.update({version: _VersionKeys.of(key) for version, key in data_keys.items()})
        if active_version not in self._keys and not read_only:
            raise ValueError("the active key version has no data key")
        self._nothing = os.urandom(32)  # with no version at all: an index that matches nothing

    @property
    def versions(self) -> list[int]:
        return sorted(self._keys, reverse=True)

    @property
    def complete(self) -> bool:
        """The active version has its key: this keyring can seal codes and cannot be missing one."""
        return self.active_version in self._keys

    def extended(self, data_keys: Mapping[int, bytes], *, read_only: bool) -> CodeCipher:
        """This keyring plus more unwrapped versions (those it holds are not derived again)."""
        return CodeCipher(data_keys, self.active_version, read_only=read_only, _derived=self._keys)

    def _version(self, version: int | None) -> _VersionKeys:
        if version is not None:
            return self._keys[version]
        if not self.complete:  # validate/redeem never create codes; anything else is misconfigured
            raise KeyringUnavailable("This function cannot seal codes: the active key version does not exist.")
        return self._keys[self.active_version]

    def blind_index(self, normalised_code: str, version: int | None = None) -> str:
        keys = self._version(version)
        return hmac.new(keys.index_key, normalised_code.encode(), hashlib.sha256).hexdigest()

    def lookup_indexes(self, normalised_code: str) -> list[str]:
        """The code's index under every live key version, newest first."""
        if not self._keys:  # no key exists yet, so no code is stored: look where nothing can be
            return [hmac.new(self._nothing, normalised_code.encode(), hashlib.sha256).hexdigest()]
        return [self.blind_index(normalised_code, v) for v in self.versions]

    def other_indexes(self, normalised_code: str) -> list[str]:
        """The code's index under every live version but the active one: a create requires them absent."""
        return [self.blind_index(normalised_code, v) for v in self.versions if v != self.active_version]

    def encrypt(self, code: str, bound_to: str, version: int | None = None) -> str:
        keys = self._version(version)
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


def _denied(error: Exception) -> bool:
    response = getattr(error, "response", None) or {}
    return "AccessDenied" in str(response.get("Error", {}).get("Code", ""))


def unwrap_keyring(store: KeyringStore, kms: KmsClient, kms_key_id: str, active_version: int, *,
                   known: CodeCipher | None = None) -> CodeCipher:
    """Load (creating the active version on first use) and unwrap the data keys.

    The only KMS calls a container makes. With `known`, the versions it holds are not unwrapped
    again (a refresh costs one Query, and a Decrypt only for a version added since). Raises
    KeyringUnavailable when KMS cannot be used now: a partial keyring is never returned.
    """
    wrapped = store.load_wrapped_keys()
    read_only = known is not None and known.read_only
    if active_version not in wrapped and not read_only:
        try:
            generated = kms.generate_data_key(
                KeyId=kms_key_id, KeySpec="AES_256", EncryptionContext=_context(active_version)
            )
        except Exception as error:
            if not _denied(error):
                raise KeyringUnavailable() from error
            # validate/redeem (kms:Decrypt only): every stored code is under a version that exists,
            # so unwrapping those finds them all; this keyring just cannot seal new codes.
            read_only = True
        else:
            if store.save_wrapped_key(active_version, generated["CiphertextBlob"]):
                wrapped[active_version] = generated["CiphertextBlob"]
            else:  # another container won the race: use its key
                wrapped = store.load_wrapped_keys()
    have = set() if known is None else set(known.versions)
    plain: dict[int, bytes] = {}
    for version, blob in wrapped.items():
        if version in have:
            continue
        try:
            plain[version] = kms.decrypt(
                CiphertextBlob=blob, KeyId=kms_key_id, EncryptionContext=_context(version))["Plaintext"]
        except Exception as error:  # denied, disabled, throttled, unreachable: never a keyring missing a version
            raise KeyringUnavailable() from error
    if known is not None:
        return known.extended(plain, read_only=read_only and active_version not in wrapped)
    return CodeCipher(plain, active_version, read_only=read_only and active_version not in wrapped)


class Keyring:
    """This container's keyring: unwrapped on first use, then cached (a warm request makes no KMS call).

    A failure caches nothing: the next request tries again. Call it for the cached keyring;
    `refresh` re-reads the stored versions.
    """

    def __init__(self, unwrap: Callable[[CodeCipher | None], CodeCipher],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._unwrap = unwrap
        self._clock = clock
        self._lock = threading.Lock()
        self._cipher: CodeCipher | None = None
        self._loaded_at = 0.0

    def __call__(self) -> CodeCipher:
        cipher = self._cipher
        if cipher is None:
            with self._lock:
                if self._cipher is None:
                    self._store(self._unwrap(None))
                cipher = self._cipher
        assert cipher is not None
        return cipher

    def refresh(self, max_age: float = 0.0) -> CodeCipher:
        """The keyring with the versions stored since it was cached (one Query; KMS only for a new
        version), unless it was read less than `max_age` seconds ago."""
        with self._lock:
            if self._cipher is None or self._clock() - self._loaded_at >= max_age:
                self._store(self._unwrap(self._cipher))
            assert self._cipher is not None
            return self._cipher

    def _store(self, cipher: CodeCipher) -> None:
        self._cipher = cipher
        self._loaded_at = self._clock()

    def clear(self) -> None:
        with self._lock:
            self._cipher = None


def refreshed(source: Callable[[], CodeCipher], max_age: float = 0.0) -> CodeCipher:
    """The source's keyring, re-read for versions stored since (a plain callable is just called)."""
    refresh = getattr(source, "refresh", None)
    return refresh(max_age) if callable(refresh) else source()
