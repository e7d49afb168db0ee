"""The API's token authorizer: verifies Cognito JWTs against each pool's JWKS (issue 12).

Why a Lambda TOKEN authorizer and not API Gateway's Cognito authorizer: a REST method with
the Cognito authorizer takes ID tokens when it names no OAuth scopes and only access tokens
when it does, never both. Checkout routes serve shoppers (ID tokens) and servers (access
tokens of the client-credentials grant) alike, so one authorizer verifies both kinds here,
and the functions decide what each kind may do (scopes, admin group) with the verified claims.

What is accepted (anything else raises Unauthorized: API Gateway answers 401):

- an ID token (`token_use: id`) of the customers' pool whose `aud` is one of its channel
  clients, or of the admins' pool whose `aud` is the console's client;
- an access token (`token_use: access`) of the pool that holds the resource server `coupons`
  whose `client_id` is one of the server clients and whose `scope` is not empty.

Every token: RS256 only, signed by a key of its issuer's JWKS (`kid`), unexpired, with `iat`.
A shopper's own access token (client_id = a channel client) or an admin's access token is
refused: people are ID tokens, servers are access tokens.

The answer is a policy allowing the whole stage: API Gateway caches it by token (the result
cache TTL) and reuses it for every method, so it must not depend on the method asked first.
What a caller may do per route is decided by the functions (401/403 in the contract's
envelope). The verified claims go to the functions as the authorizer context, flattened to
strings and numbers as API Gateway requires, including `exp`: the functions refuse a token
that expired while its policy was cached.

PyJWT is imported lazily so that no other function pays its import at cold start.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALGORITHMS = ("RS256",)  # Cognito signs with RS256; nothing else (no HS256 key confusion, no "none")
JWKS_TIMEOUT_SECONDS = 3
REFETCH_AFTER_SECONDS = 60  # an unknown kid refetches the JWKS at most this often (key rotation)
CLOCK_SKEW_SECONDS = 30
ID_TOKEN, ACCESS_TOKEN = "id", "access"  # Cognito's token_use of people's and of servers' tokens


class Unauthorized(Exception):
    """The token is not one this API accepts. API Gateway turns the message "Unauthorized" into a 401."""

    def __init__(self, reason: str = "invalid token") -> None:
        super().__init__("Unauthorized")
        self.reason = reason


def _split(value: str | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (value or "").split(",") if v.strip())


@dataclass(frozen=True)
class AuthorizerConfig:
    customer_issuer: str = ""
    customer_audiences: frozenset[str] = frozenset()
    admin_issuer: str = ""
    admin_audiences: frozenset[str] = frozenset()
    server_issuer: str = ""
    server_clients: frozenset[str] = frozenset()  # {"*"}: any client of the server issuer (local stack only)
    jwks_url: str = ""  # one JWKS for every issuer (the local stack); else <issuer>/.well-known/jwks.json

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthorizerConfig:
        env = os.environ if env is None else env
        return cls(
            customer_issuer=env.get("CUSTOMER_ISSUER", ""),
            customer_audiences=_split(env.get("CUSTOMER_AUDIENCES")),
            admin_issuer=env.get("ADMIN_ISSUER", ""),
            admin_audiences=_split(env.get("ADMIN_AUDIENCES")),
            server_issuer=env.get("SERVER_ISSUER", ""),
            server_clients=_split(env.get("SERVER_CLIENT_IDS")),
            jwks_url=env.get("TOKEN_JWKS_URL", ""),
        )

    def audiences(self, issuer: str) -> frozenset[str]:
        """The ID-token audiences of an issuer (none: that issuer's ID tokens are not accepted)."""
        found: set[str] = set()
        if issuer and issuer == self.customer_issuer:
            found |= self.customer_audiences
        if issuer and issuer == self.admin_issuer:
            found |= self.admin_audiences
        return frozenset(found)

    def serves(self, client_id: str) -> bool:
        return client_id in self.server_clients or "*" in self.server_clients


def fetch_json(url: str) -> dict[str, Any]:
    if not url.startswith(("https://", "file://")):
        raise ValueError(f"refusing to fetch keys from {url!r}")
    with urllib.request.urlopen(url, timeout=JWKS_TIMEOUT_SECONDS) as response:  # noqa: S310 (scheme checked)
        return dict(json.loads(response.read()))


@dataclass
class KeySets:
    """Each issuer's signing keys, fetched once per container and again only for an unknown kid."""

    config: AuthorizerConfig
    fetch: Callable[[str], dict[str, Any]] = fetch_json
    clock: Callable[[], float] = time.monotonic
    _keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> kid -> key
    _fetched_at: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, issuer: str) -> str:
        return self.config.jwks_url or f"{issuer.rstrip('/')}/.well-known/jwks.json"

    def key(self, issuer: str, kid: str) -> Any:
        url = self.url(issuer)
        with self._lock:
            keys = self._keys.get(url)
            recent = self.clock() - self._fetched_at.get(url, -1e12) < REFETCH_AFTER_SECONDS
            if keys is None or (kid not in keys and not recent):
                keys = self._load(url)
            found = keys.get(kid)
        if found is None:
            raise Unauthorized("unknown key id")
        return found

    def _load(self, url: str) -> dict[str, Any]:
        import jwt

        try:
            document = self.fetch(url)
        except Exception as error:  # the pool cannot be reached: an authorizer failure (5xx), not a 401
            raise RuntimeError(f"could not fetch the signing keys: {error}") from error
        keys = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "RSA" and jwk.get("kid") and jwk.get("use", "sig") == "sig":
                keys[str(jwk["kid"])] = jwt.PyJWK.from_dict(jwk, algorithm="RS256").key
        self._keys[url] = keys
        self._fetched_at[url] = self.clock()
        return keys


def verify(token: str, config: AuthorizerConfig, keys: KeySets, *, now: float | None = None) -> dict[str, Any]:
    """The claims of a token this API accepts; Unauthorized otherwise."""
    import jwt

    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise Unauthorized("malformed token") from None
    if header.get("alg") not in ALGORITHMS or not isinstance(header.get("kid"), str):
        raise Unauthorized("unexpected algorithm or key id")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer not in {config.customer_issuer, config.admin_issuer,
                                                     config.server_issuer} - {""}:
        raise Unauthorized("unknown issuer")
    key = keys.key(issuer, header["kid"])
    use = unverified.get("token_use")
    audiences = config.audiences(issuer)
    try:
        claims = jwt.decode(
            token, key, algorithms=list(ALGORITHMS), issuer=issuer, leeway=CLOCK_SKEW_SECONDS,
            audience=list(audiences) if use == ID_TOKEN else None,
            options={"require": ["exp", "iat", "iss", "token_use"], "verify_aud": use == ID_TOKEN},
        )
    except jwt.PyJWTError as error:
        raise Unauthorized(type(error).__name__) from None
    if claims.get("token_use") == ID_TOKEN:
        if not audiences:
            raise Unauthorized("this issuer's ID tokens are not accepted")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("no subject")
    elif claims.get("token_use") == ACCESS_TOKEN:
        client_id, scope = claims.get("client_id"), claims.get("scope")
        if issuer != config.server_issuer or not isinstance(client_id, str) or not config.serves(client_id):
            raise Unauthorized("not a server client")  # a person's access token: people send ID tokens
        if not isinstance(scope, str) or not scope.split():
            raise Unauthorized("no scope")
    else:
        raise Unauthorized("unknown token_use")
    return claims


def context_of(claims: Mapping[str, Any]) -> dict[str, str | int | bool]:
    """The claims the functions read, as an authorizer context (strings, numbers and booleans only)."""
    context: dict[str, str | int | bool] = {
        "token_use": str(claims["token_use"]), "iss": str(claims["iss"]), "exp": int(claims["exp"])}
    if claims["token_use"] == ID_TOKEN:
        context["sub"] = str(claims["sub"])
        if isinstance(claims.get("email"), str):
            context["email"] = claims["email"]
            verified = claims.get("email_verified")
            context["email_verified"] = "true" if verified is True or str(verified).lower() == "true" else "false"
        groups = claims.get("cognito:groups")
        if isinstance(groups, list):
            context["cognito:groups"] = ",".join(str(g) for g in groups)
    else:
        context["client_id"] = str(claims["client_id"])
        context["scope"] = str(claims["scope"])
    return context


def stage_arn(method_arn: str) -> str:
    """arn:aws:execute-api:<region>:<account>:<api>/<stage>/<verb>/<path> -> .../<api>/<stage>/*"""
    parts = method_arn.split("/")
    if len(parts) < 2 or not parts[0].startswith("arn:"):
        raise RuntimeError("unexpected method ARN")
    return f"{parts[0]}/{parts[1]}/*"


def authorize(event: Mapping[str, Any], config: AuthorizerConfig, keys: KeySets) -> dict[str, Any]:
    """A TOKEN authorizer's answer to API Gateway: Allow the stage with the verified claims, or 401."""
    header = str(event.get("authorizationToken") or "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
        raise Unauthorized("no bearer token")
    claims = verify(token.strip(), config, keys)
    principal = str(claims["sub"]) if claims["token_use"] == ID_TOKEN else f"client:{claims['client_id']}"
    return {
        "principalId": principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": [{
            "Action": "execute-api:Invoke", "Effect": "Allow",
            "Resource": stage_arn(str(event.get("methodArn", "")))}]},
        "context": context_of(claims),
    }


_KEYS: KeySets | None = None
_KEYS_LOCK = threading.Lock()


def _container_keys() -> KeySets:
    """This container's key sets (the JWKS survive between invocations; read the config once)."""
    global _KEYS
    with _KEYS_LOCK:
        if _KEYS is None:
            _KEYS = KeySets(AuthorizerConfig.from_env())
        return _KEYS


def reset() -> None:
    """Forget the cached configuration and keys (tests; a local stack restarted in-process)."""
    global _KEYS
    with _KEYS_LOCK:
        _KEYS = None


def handler(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    """The Lambda entry point. Never logs the token; a refusal logs only its reason."""
    keys = _container_keys()
    try:
        return authorize(event, keys.config, keys)
    except Unauthorized as refused:
        print(json.dumps({"level": "INFO", "message": "token refused", "reason": refused.reason}))
        raise
