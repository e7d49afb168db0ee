"""Local bearer tokens: RS256 JWTs shaped like Cognito's, signed with a per-checkout key.

The local "pools" sign with one RSA key kept in the checkout's ignored folder and published
as a JWKS file there. The local gateway verifies them with the same authorizer function
API Gateway runs on AWS (coupons/authorizer.py), pointed at that JWKS.

- customers' ID tokens: `sub`, `email`, `email_verified`, `cognito:groups`, `token_use: id`,
  issuer ISSUER (the customers' pool);
- admins' ID tokens: the same from ADMIN_ISSUER (the admins' pool) with the group `coupon-admins`;
- servers' access tokens (client credentials): `token_use: access`, `client_id`, `scope`,
  `sub` = the client id, no `aud` and no email, from SERVER_ISSUER (on AWS the resource server
  and its clients live in the admins' pool: so do they here).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "coupons-local"  # the customers' pool
# The admin pool (issue 17): admins are this issuer's users in the coupon-admins group, as on AWS,
# where ADMIN_ISSUER is the admin pool's URL and a customers-pool token is never an admin.
ADMIN_ISSUER = "coupons-local-admins"
SERVER_ISSUER = ADMIN_ISSUER  # the resource server `coupons` and the server clients (issue 12)
ISSUERS = (ISSUER, ADMIN_ISSUER)
AUDIENCE = "coupons"  # the local app client of both pools (ID tokens' aud)
ALGORITHM = "RS256"
SCOPES = ("coupons/checkout", "coupons/admin")
DEFAULT_SCOPE = "coupons/checkout"
LIFETIME_SECONDS = 7 * 24 * 3600
SERVER_LIFETIME_SECONDS = 24 * 3600
ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    """The checkout's ignored folder for local secrets and running stacks' state."""
    path = Path(os.environ.get("COUPONS_LOCAL_HOME", ROOT / ".coupons-local"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _publish(path: Path, content: bytes, mode: int) -> None:
    """Write a file whole or not at all, first writer wins (several processes may race to create it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic, and fails if another process published first
    finally:
        os.unlink(tmp)


def _private_key() -> rsa.RSAPrivateKey:
    path = home() / "token-key.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _publish(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), 0o600)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _kid(public: rsa.RSAPublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def jwks() -> dict[str, Any]:
    """The public key set the local pools publish (as Cognito's /.well-known/jwks.json does)."""
    public = _private_key().public_key()
    numbers = public.public_numbers()
    return {"keys": [{"kty": "RSA", "alg": ALGORITHM, "use": "sig", "kid": _kid(public),
                      "n": _b64(numbers.n), "e": _b64(numbers.e)}]}


def jwks_path() -> Path:
    """The JWKS file, written from the key when missing (the local stack points the authorizer at it)."""
    path = home() / "jwks.json"
    expected = json.dumps(jwks(), indent=2).encode()
    if not path.exists() or path.read_bytes() != expected:
        path.unlink(missing_ok=True)
        _publish(path, expected, 0o644)
    return path


def sign(claims: dict[str, Any]) -> str:
    """Any claims, signed with the local key (as the local pools sign): for tests of the verifier."""
    key = _private_key()
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": _kid(key.public_key())})


def issue(user: str, *, email: str | None = None, admin: bool = False, email_verified: bool = True,
          lifetime: int = LIFETIME_SECONDS, groups: list[str] | None = None) -> str:
    """A customer's ID token; its email is verified unless `email_verified=False` (the service
    trusts only a verified email, as a Cognito user may type any address)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "iss": ADMIN_ISSUER if admin else ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "auth_time": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "token_use": "id",
        "cognito:groups": (groups or []) + (["coupon-admins"] if admin else []),
    }
    if email:
        claims["email"] = email
        claims["email_verified"] = email_verified
    return sign(claims)


def issue_access(client_id: str, *, scopes: list[str] | tuple[str, ...] = (DEFAULT_SCOPE,),
                 lifetime: int = SERVER_LIFETIME_SECONDS) -> str:
    """A server's access token, as Cognito's token endpoint returns for the client-credentials grant."""
    now = int(time.time())
    return sign({
        "sub": client_id,
        "iss": SERVER_ISSUER,
        "client_id": client_id,
        "token_use": "access",
        "scope": " ".join(dict.fromkeys(scopes)),
        "auth_time": now,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "version": 2,
    })


def authorizer_environment() -> dict[str, str]:
    """What the authorizer function is told locally (CDK sets the same names from the user pools)."""
    return {
        "CUSTOMER_ISSUER": ISSUER,
        "CUSTOMER_AUDIENCES": AUDIENCE,
        "ADMIN_ISSUER": ADMIN_ISSUER,
        "ADMIN_AUDIENCES": AUDIENCE,
        "SERVER_ISSUER": SERVER_ISSUER,
        "SERVER_CLIENT_IDS": "*",  # any client id: `coupons-local token --client ID` makes any
        "TOKEN_JWKS_URL": jwks_path().as_uri(),
    }
