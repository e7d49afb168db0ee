"""Creates that are safe to retry (contract v2): the `Idempotency-Key` header on admin creates.

Powertools' idempotency utility does the work, with its DynamoDB persistence layer on the
idempotency table (resources.IDEMPOTENCY_TABLE: Powertools' own attribute names, TTL on
`expiration`). A route opts in with one call:

    def create_thing(body: ..., idempotency_key: IdempotencyKeyHeader = None) -> Response[...]:
        who = require_admin(router)
        return once(router, caller=who.user_id, key=idempotency_key, produce=lambda: ...)

What a key means:
- it is scoped to the caller (the token's `sub`: an admin's user id or a server's client id) and
  to the route template (`POST /coupons`): two admins, or two routes, never share an answer;
- the request it stands for is the path parameters plus the JSON body, compared as parsed JSON
  (key order and spacing do not matter). The same key with another request is 409
  IDEMPOTENCY_CONFLICT (on `POST /campaigns/{id}/codes`, another campaign is another request);
- for 24 hours the first successful answer (its status and body) is replayed, with the header
  `Idempotent-Replayed: true`; nothing is created again. An answer that was an error created
  nothing and is not kept: the key is free again (a corrected retry is not a conflict);
- while the first request runs, a duplicate gets 503 TRY_AGAIN with Retry-After (Powertools
  raises "already in progress"); a request that died mid-way (a timeout) holds the key only until
  its function's deadline, which Powertools stores with the in-progress record.

The table never holds a plaintext code: keys and request bodies are stored as hashes (a body that
may carry a vanity code is fingerprinted with the keyring's HMAC key first, so the hash cannot be
tested against guessed codes), and an answer that carries a code is sealed (AES-GCM under the
keyring's data key, bound to the caller, route and key) before Powertools stores it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.encoders import jsonable_encoder
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.base import BaseIdempotencySerializer

from .adapters import aws
from .crypto import CodeCipher
from .errors import IdempotencyConflict, TryAgain
from .settings import get_settings

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 128
EXPIRES_AFTER_SECONDS = 24 * 3600  # the contract's window
# A fixed prefix (Powertools' default is the function's name, which CloudFormation may change on a
# redeploy: a retry across a deploy would then create again).
KEY_PREFIX = "coupons-create"
FALLBACK_DEADLINE_MS = 30_000  # an in-progress record's life when no Lambda context tells the deadline

IdempotencyKeyHeader = Annotated[str | None, Header(
    alias=HEADER, min_length=1, max_length=MAX_KEY_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$",
    description="Makes this create safe to retry: 1-128 characters, chosen by the client (a UUID is "
                "fine). The same key with the same request within 24 hours returns the first answer "
                "and creates nothing again; with another request: 409 IDEMPOTENCY_CONFLICT. A key "
                "belongs to its caller and route.")]

Sealer = Callable[[], CodeCipher]


class _SealedAnswer(BaseIdempotencySerializer):
    """Powertools' output serializer: the stored answer is sealed, so no code rests in the table."""

    def __init__(self, cipher: Sealer, bound_to: str) -> None:
        self._cipher = cipher
        self._bound_to = bound_to

    def to_dict(self, data: Any) -> dict[str, Any]:
        cipher = self._cipher()
        return {"sealed": cipher.encrypt(json.dumps(data, separators=(",", ":")), self._bound_to),
                "key_version": cipher.active_version}

    def from_dict(self, data: dict[str, Any]) -> Any:
        return json.loads(self._cipher().decrypt(data["sealed"], self._bound_to, int(data["key_version"])))


class _PlainAnswer(BaseIdempotencySerializer):
    def to_dict(self, data: Any) -> dict[str, Any]:
        return dict(data)

    def from_dict(self, data: dict[str, Any]) -> Any:
        return data


class _Deadline:
    """Stands in for the Lambda context when there is none (tests): an in-progress record still expires."""

    def get_remaining_time_in_millis(self) -> int:
        return FALLBACK_DEADLINE_MS


@lru_cache(maxsize=4)
def _persistence(table: str, client: Any) -> DynamoDBPersistenceLayer:
    # Keyed by the client too: after aws.reset_clients() (tests) a new layer uses the new client.
    return DynamoDBPersistenceLayer(table_name=table, boto3_client=client)


def persistence_layer() -> DynamoDBPersistenceLayer:
    return _persistence(get_settings().idempotency_table, aws.client("dynamodb"))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _answer_of(response: Response[Any]) -> dict[str, Any]:
    """A route's Response as the JSON value that is stored and replayed."""
    return {"status": int(response.status_code), "body": jsonable_encoder(response.body)}


def _response_of(answer: dict[str, Any], *, replayed: bool) -> Response[Any]:
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return Response(status_code=int(answer["status"]), content_type="application/json", body=answer["body"],
                    headers=headers)


def once(router: Any, *, caller: str, key: str | None, produce: Callable[[], Response[Any]],
         sealer: Sealer | None = None) -> Response[Any]:
    """Run `produce` once per (caller, route, key): a retry gets the first answer back.

    `sealer` is needed when the answer carries a code (it seals the stored answer and keys the
    request's fingerprint); without `key` the request simply runs."""
    if key is None:
        return _response_of(_answer_of(produce()), replayed=False)
    event = router.current_event
    scope = {"caller": caller, "route": f"{event.http_method} {event.resource}", "key": key}
    request: Any = {"path": event.path_parameters or {}, "body": json.loads(event.body) if event.body else None}
    if sealer is not None:  # the body may hold a vanity code: keep only a keyed fingerprint of it
        keyring = sealer()  # under the oldest version, so a key rotation within the 24 hours changes nothing
        request = {"fingerprint": keyring.blind_index("idempotent-request:" + _canonical(request),
                                                      min(keyring.versions))}
    bound_to = "idempotency:" + hashlib.sha256(_canonical(scope).encode()).hexdigest()
    outcome: dict[str, Any] = {}

    def run(request: Any) -> dict[str, Any]:
        try:
            outcome["answer"] = _answer_of(produce())
        except Exception as error:
            outcome["error"] = error
            raise
        return dict(outcome["answer"])

    context: Any = getattr(router, "lambda_context", None)
    if not hasattr(context, "get_remaining_time_in_millis"):
        context = _Deadline()
    config = IdempotencyConfig(
        event_key_jmespath="scope", payload_validation_jmespath="request", raise_on_no_idempotency_key=True,
        expires_after_seconds=EXPIRES_AFTER_SECONDS, hash_function="sha256",
        lambda_context=context,
        response_hook=lambda answer, _record: {**answer, "replayed": True},
    )
    serializer = _SealedAnswer(sealer, bound_to) if sealer is not None else _PlainAnswer()
    guarded = idempotent_function(run, data_keyword_argument="request", persistence_store=persistence_layer(),
                                  config=config, output_serializer=serializer, key_prefix=KEY_PREFIX)
    try:
        answer = guarded(request={"scope": scope, "request": request})
    except IdempotencyValidationError:
        raise IdempotencyConflict(f"This {HEADER} was already used with a different request.") from None
    except IdempotencyAlreadyInProgressError:
        raise TryAgain(f"A request with this {HEADER} is still in progress; try again.", retry_after=1) from None
    except IdempotencyInconsistentStateError:
        raise TryAgain(retry_after=1) from None
    except IdempotencyPersistenceLayerError:
        if "error" in outcome:
            # The request failed, then the in-progress record could not be cleared: the request's
            # own answer is the true one (the key frees itself at the function's deadline).
            raise outcome["error"] from None
        if "answer" in outcome:
            # Created, but the answer could not be kept: still tell the client it was created.
            # (A retry within the function's deadline gets TRY_AGAIN; after it, it would run again.)
            return _response_of(outcome["answer"], replayed=False)
        raise TryAgain(retry_after=1) from None  # the record could not be written: nothing ran
    return _response_of(answer, replayed=bool(answer.get("replayed")))
