"""Local bearer tokens: HS256 JWTs signed with a per-checkout secret.

They carry the claims a Cognito ID token carries (`sub`, `email`, `email_verified`,
`cognito:groups`) and are verified as strictly as API Gateway's Cognito
authorizer would: signature, algorithm, issuer, audience and expiry.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

ISSUER = "coupons-local"  # the customers' pool
# The admin pool (issue 17): admins are this issuer's users in the coupon-admins group, as on AWS,
# where ADMIN_ISSUER is the admin pool's URL and a customers-pool token is never an admin.
ADMIN_ISSUER = "coupons-local-admins"
ISSUERS = (ISSUER, ADMIN_ISSUER)  # the gateway accepts both, like the authorizer with two user pools
AUDIENCE = "coupons"
ALGORITHM = "HS256"
LIFETIME_SECONDS = 7 * 24 * 3600
ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    """The checkout's ignored folder for local secrets and running stacks' state."""
    path = Path(os.environ.get("COUPONS_LOCAL_HOME", ROOT / ".coupons-local"))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _secret() -> bytes:
    path = home() / "token-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) if not path.exists() else None
        if fd is not None:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


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
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "token_use": "id",
        "cognito:groups": (groups or []) + (["coupon-admins"] if admin else []),
    }
    if email:
        claims["email"] = email
        claims["email_verified"] = email_verified
    return jwt.encode(claims, _secret(), algorithm=ALGORITHM)


class InvalidToken(Exception):
    pass


def verify(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token, _secret(), algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUERS,
            options={"require": ["sub", "exp", "iat", "iss", "aud"]},
        )
    except jwt.PyJWTError as error:
        raise InvalidToken(str(error)) from None
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidToken("no subject")
    return claims


def authorizer_claims(claims: dict[str, Any]) -> dict[str, str]:
    """Claims as API Gateway's Cognito authorizer hands them to Lambda: all strings, booleans
    as JSON spells them (`"email_verified": "true"`)."""
    out = {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in claims.items()
           if k not in ("cognito:groups",)}
    groups = claims.get("cognito:groups") or []
    if groups:
        out["cognito:groups"] = ",".join(str(g) for g in groups)
    return out
