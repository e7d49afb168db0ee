"""The token authorizer (issue 12): what it accepts, what it refuses (401), what it hands the functions.

RSA keys are made here and their JWKS served by a fake fetch (no network), as Cognito serves
`<issuer>/.well-known/jwks.json`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from coupons import authorizer as a
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

CUSTOMERS = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Shoppers"
ADMINS = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Admins"
CONFIG = a.AuthorizerConfig(
    customer_issuer=CUSTOMERS, customer_audiences=frozenset({"web-client", "mobile-client", "pos-client"}),
    admin_issuer=ADMINS, admin_audiences=frozenset({"console-client"}),
    server_issuer=ADMINS, server_clients=frozenset({"shop-backend-id", "pos-id", "crm-id"}))
METHOD_ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod/POST/redemptions"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEYS = {CUSTOMERS: _key(), ADMINS: _key()}
STRANGER = _key()  # someone else's key: a forger's


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}


class FakeJwks:
    """The pools' JWKS endpoints, counting fetches."""

    def __init__(self) -> None:
        self.fetches: list[str] = []
        self.documents = {f"{issuer}/.well-known/jwks.json": {"keys": [jwk(key, f"kid-{i}")]}
                          for i, (issuer, key) in enumerate(KEYS.items())}

    def __call__(self, url: str) -> dict[str, Any]:
        self.fetches.append(url)
        if url not in self.documents:
            raise OSError("unreachable")
        return self.documents[url]


def kid_of(issuer: str) -> str:
    return f"kid-{list(KEYS).index(issuer)}"


def sign(claims: dict[str, Any], *, issuer: str | None = None, key: Any = None, kid: str | None = None,
         algorithm: str = "RS256") -> str:
    issuer = issuer or claims.get("iss", CUSTOMERS)
    return jwt.encode(claims, key if key is not None else KEYS[issuer], algorithm=algorithm,
                      headers={"kid": kid if kid is not None else kid_of(issuer)})


def id_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iss": CUSTOMERS, "aud": "web-client", "token_use": "id", "iat": now,
            "auth_time": now, "exp": now + 3600, "email": "alice@example.com", "email_verified": True,
            "cognito:groups": ["vip"], **overrides}


def access_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "shop-backend-id", "iss": ADMINS, "client_id": "shop-backend-id", "token_use": "access",
            "scope": "coupons/checkout", "iat": now, "auth_time": now, "exp": now + 3600, "version": 2,
            **overrides}


def answer(token: str, fetch: FakeJwks | None = None, config: a.AuthorizerConfig = CONFIG) -> dict[str, Any]:
    keys = a.KeySets(config, fetch=fetch or FakeJwks())
    return a.authorize({"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": METHOD_ARN},
                       config, keys)


def refused(token: str, **kwargs: Any) -> str:
    with pytest.raises(a.Unauthorized) as raised:
        answer(token, **kwargs)
    assert str(raised.value) == "Unauthorized"  # the message API Gateway turns into a 401
    return raised.value.reason


# --- accepted ---------------------------------------------------------------------------------


def test_a_customers_id_token_is_allowed_on_the_whole_stage_with_its_claims_flattened() -> None:
    result = answer(sign(id_claims()))
    assert result["principalId"] == "alice"
    [statement] = result["policyDocument"]["Statement"]
    # cached by token and reused for every method: the policy covers the stage, not the first method
    assert statement == {"Action": "execute-api:Invoke", "Effect": "Allow",
                         "Resource": "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod/*"}
    context = result["context"]
    assert context == {"token_use": "id", "iss": CUSTOMERS, "exp": id_claims()["exp"], "sub": "alice",
                       "email": "alice@example.com", "email_verified": "true", "cognito:groups": "vip"}
    assert all(isinstance(v, str | int | bool) for v in context.values())  # API Gateway takes nothing else


def test_an_unverified_email_is_passed_as_unverified() -> None:
    assert answer(sign(id_claims(email_verified=False)))["context"]["email_verified"] == "false"
    assert answer(sign(id_claims(email_verified="true")))["context"]["email_verified"] == "true"
    no_email = {k: v for k, v in id_claims().items() if k not in ("email", "email_verified")}
    assert "email_verified" not in answer(sign(no_email))["context"]


def test_an_admins_id_token_from_the_admin_pool_is_allowed() -> None:
    token = sign(id_claims(sub="ada", iss=ADMINS, aud="console-client", **{"cognito:groups": ["coupon-admins"]}))
    context = answer(token)["context"]
    assert (context["iss"], context["sub"], context["cognito:groups"]) == (ADMINS, "ada", "coupon-admins")


def test_a_servers_access_token_is_allowed_with_its_client_and_scopes() -> None:
    result = answer(sign(access_claims(scope="coupons/checkout coupons/admin")))
    assert result["principalId"] == "client:shop-backend-id"
    assert result["context"] == {"token_use": "access", "iss": ADMINS, "exp": access_claims()["exp"],
                                 "client_id": "shop-backend-id", "scope": "coupons/checkout coupons/admin"}


def test_the_jwks_is_fetched_once_per_container_and_per_pool() -> None:
    fetch = FakeJwks()
    keys = a.KeySets(CONFIG, fetch=fetch)
    for token in (sign(id_claims()), sign(id_claims(sub="bob")), sign(access_claims()), sign(access_claims())):
        a.verify(token, CONFIG, keys)
    assert fetch.fetches == [f"{CUSTOMERS}/.well-known/jwks.json", f"{ADMINS}/.well-known/jwks.json"]


# --- refused: 401 -----------------------------------------------------------------------------


def _tampered() -> str:
    header, _, signature = sign(id_claims()).split(".")
    payload = base64.urlsafe_b64encode(json.dumps(id_claims(sub="victim")).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def _rescoped() -> str:
    header, _, signature = sign(access_claims()).split(".")
    payload = base64.urlsafe_b64encode(json.dumps(access_claims(scope="coupons/admin")).encode()).rstrip(b"=")
    return f"{header}.{payload.decode()}.{signature}"


def _key_confusion() -> str:
    """HS256 "signed" with the pool's public key as the HMAC secret (PyJWT refuses to make one)."""
    pem = KEYS[CUSTOMERS].public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid_of(CUSTOMERS)})}.{part(id_claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


BAD = {
    "forged with another key": lambda: sign(id_claims(), key=STRANGER),
    "tampered payload": _tampered,
    "re-scoped access token": _rescoped,
    "expired": lambda: sign(id_claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
    "no exp": lambda: sign({k: v for k, v in id_claims().items() if k != "exp"}),
    "no iat": lambda: sign({k: v for k, v in id_claims().items() if k != "iat"}),
    "alg none": lambda: jwt.encode(id_claims(), None, algorithm="none", headers={"kid": kid_of(CUSTOMERS)}),
    # the classic key confusion: HS256 "signed" with the public key as the secret
    "HS256 with the public key": _key_confusion,
    "unknown kid": lambda: sign(id_claims(), kid="kid-nobody"),
    "another pool's key": lambda: sign(id_claims(), key=KEYS[ADMINS], kid=kid_of(ADMINS)),
    "unknown issuer": lambda: sign(id_claims(iss="https://cognito-idp.eu-west-1.amazonaws.com/other"),
                                   key=KEYS[CUSTOMERS], kid=kid_of(CUSTOMERS)),
    "ID token for another app": lambda: sign(id_claims(aud="someone-elses-client")),
    "admin-pool ID token for a customer client": lambda: sign(id_claims(iss=ADMINS, aud="web-client")),
    "ID token without a subject": lambda: sign({k: v for k, v in id_claims().items() if k != "sub"}),
    "a shopper's own access token": lambda: sign(access_claims(iss=CUSTOMERS, client_id="web-client")),
    "an admin's access token (console client)": lambda: sign(access_claims(client_id="console-client")),
    "access token of an unknown client": lambda: sign(access_claims(client_id="who-knows")),
    "access token without scope": lambda: sign({k: v for k, v in access_claims().items() if k != "scope"}),
    "access token with an empty scope": lambda: sign(access_claims(scope="  ")),
    "no token_use": lambda: sign({k: v for k, v in id_claims().items() if k != "token_use"}),
    "token_use refresh": lambda: sign(id_claims(token_use="refresh")),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_tokens_this_api_does_not_accept_are_refused(kind: str) -> None:
    refused(BAD[kind]())


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic abc", "token-without-scheme",
                                    "Bearer a.b.c extra"])
def test_a_header_that_is_not_one_bearer_token_is_refused(header: str) -> None:
    with pytest.raises(a.Unauthorized):
        a.authorize({"authorizationToken": header, "methodArn": METHOD_ARN}, CONFIG,
                    a.KeySets(CONFIG, fetch=FakeJwks()))


def test_the_scheme_is_case_insensitive() -> None:
    result = a.authorize({"authorizationToken": f"bearer {sign(id_claims())}", "methodArn": METHOD_ARN}, CONFIG,
                         a.KeySets(CONFIG, fetch=FakeJwks()))
    assert result["principalId"] == "alice"


def test_an_unknown_kid_refetches_the_jwks_at_most_once_a_minute() -> None:
    fetch, now = FakeJwks(), [1000.0]
    keys = a.KeySets(CONFIG, fetch=fetch, clock=lambda: now[0])
    a.verify(sign(id_claims()), CONFIG, keys)
    for _ in range(50):  # a flood of forged kids costs no fetches
        with pytest.raises(a.Unauthorized):
            a.verify(sign(id_claims(), kid="rotated"), CONFIG, keys)
    assert len(fetch.fetches) == 1
    # Cognito rotated its key: after a minute the new kid is fetched once, then known
    rotated = _key()
    fetch.documents[f"{CUSTOMERS}/.well-known/jwks.json"]["keys"].append(jwk(rotated, "rotated"))
    now[0] += a.REFETCH_AFTER_SECONDS + 1
    token = sign(id_claims(), key=rotated, kid="rotated")
    assert a.verify(token, CONFIG, keys)["sub"] == "alice"
    assert a.verify(token, CONFIG, keys)["sub"] == "alice"
    assert len(fetch.fetches) == 2


def test_an_unreachable_pool_is_an_authorizer_failure_not_a_401() -> None:
    fetch = FakeJwks()
    fetch.documents.clear()
    with pytest.raises(RuntimeError):
        answer(sign(id_claims()), fetch=fetch)


def test_one_jwks_url_for_every_issuer_when_configured() -> None:
    # The local stack points every local pool at one JWKS file.
    config = a.AuthorizerConfig(customer_issuer="local", customer_audiences=frozenset({"coupons"}),
                                jwks_url="file:///somewhere/jwks.json")
    fetch = FakeJwks()
    fetch.documents["file:///somewhere/jwks.json"] = {"keys": [jwk(KEYS[CUSTOMERS], "k")]}
    token = sign(id_claims(iss="local", aud="coupons"), key=KEYS[CUSTOMERS], kid="k")
    assert a.verify(token, config, a.KeySets(config, fetch=fetch))["iss"] == "local"


def test_keys_are_fetched_over_https_or_from_a_file_only() -> None:
    with pytest.raises(ValueError, match="refusing"):
        a.fetch_json("http://169.254.169.254/latest/meta-data")


def test_config_from_the_environment() -> None:
    config = a.AuthorizerConfig.from_env({
        "CUSTOMER_ISSUER": CUSTOMERS, "CUSTOMER_AUDIENCES": "w, m,p", "ADMIN_ISSUER": ADMINS,
        "ADMIN_AUDIENCES": "c", "SERVER_ISSUER": ADMINS, "SERVER_CLIENT_IDS": "s1,s2"})
    assert config.customer_audiences == {"w", "m", "p"} and config.server_clients == {"s1", "s2"}
    assert config.audiences(ADMINS) == {"c"} and config.audiences("other") == frozenset()
    assert config.serves("s1") and not config.serves("s3")
    assert a.AuthorizerConfig.from_env({}).audiences("") == frozenset()


@settings(max_examples=60, deadline=None)
@given(sub=st.text(min_size=1, max_size=40), scope=st.sampled_from(["coupons/checkout", "coupons/admin"]),
       flip=st.integers(min_value=0, max_value=10_000))
def test_any_changed_byte_of_a_genuine_token_is_refused(sub: str, scope: str, flip: int) -> None:
    # Whatever the claims, a genuine token is accepted, and changing any one character of it is not.
    token = sign(access_claims(scope=scope)) if flip % 2 else sign(id_claims(sub=sub))
    assert answer(token)["context"]["token_use"] in ("id", "access")
    index = flip % len(token)
    if index + 1 == len(token) or token[index + 1] == ".":
        return  # a segment's last base64url character may hold only padding bits, which decoding ignores
    changed = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1:]
    with pytest.raises(a.Unauthorized):
        answer(changed)
