"""DynamoDB serialisation, cursors and the error translation every repository shares."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import TryAgain, ValidationFailed

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

Item = dict[str, Any]
RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, set):
        return {_plain(v) for v in value}
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """A python dict as a DynamoDB item; None values are left out."""
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def to_value(value: Any) -> dict[str, Any]:
    return dict(_serializer.serialize(value))


def from_item(item: Mapping[str, Any] | None) -> Item | None:
    if item is None:
        return None
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def error_code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def is_transient(error: Exception) -> bool:
    if isinstance(error, BotoCoreError):
        return True
    return error_code(error) in RETRYABLE


class StoreBusy(Exception):
    """A transient failure (throttling, a conflicting transaction, a timeout): safe to retry."""


def busy_or(error: Exception) -> Exception:
    """A transient store error as StoreBusy; any other error as it is."""
    if isinstance(error, BotoCoreError) or is_transient(error) or \
            error_code(error) in ("TransactionConflictException",):
        return StoreBusy(str(error))
    return error


def translate(error: Exception) -> Exception:
    """Store errors that are not the caller's fault become 503 TRY_AGAIN."""
    if is_transient(error):
        return TryAgain(retry_after=1)
    return error


def encode_cursor(state: Mapping[str, Any]) -> str:
    raw = json.dumps(state, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed(details=[{"field": "cursor", "message": "not a cursor from this API"}]) from None
    if not isinstance(state, dict):
        raise ValidationFailed(details=[{"field": "cursor", "message": "not a cursor from this API"}])
    return state


def paged_query(
    dynamodb: Any,
    *,
    table: str,
    index: str | None,
    partitions: list[tuple[str, str, str | None, dict[str, Any] | None]],
    limit: int,
    cursor: str | None,
    scan_forward: bool = False,
    keep: Callable[[Item], bool] | None = None,
) -> tuple[list[Item], str | None]:
    """Page through one or more partitions in turn with a single opaque cursor.

    `partitions` are (key attribute, key value, filter expression, filter values).
    The cursor remembers which partition and where in it the last page stopped.
    """
    state = decode_cursor(cursor) or {}
    part = state.get("p", 0)
    start = state.get("k")
    if not isinstance(part, int) or not 0 <= part < len(partitions) or not (start is None or isinstance(start, dict)):
        raise ValidationFailed(details=[{"field": "cursor", "message": "not a cursor from this API"}])
    items: list[Item] = []
    while part < len(partitions) and len(items) < limit:
        attr, value, filter_expression, filter_values = partitions[part]
        request: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": attr},
            "ExpressionAttributeValues": {":k": {"S": value}, **(filter_values or {})},
            "ScanIndexForward": scan_forward,
            "Limit": limit - len(items),
        }
        if index:
            request["IndexName"] = index
        if filter_expression:
            request["FilterExpression"] = filter_expression
        if start:
            request["ExclusiveStartKey"] = start
        try:
            page = dynamodb.query(**request)
        except ClientError as error:
            if error_code(error) == "ValidationException" and start:
                raise ValidationFailed(
                    details=[{"field": "cursor", "message": "not a cursor from this API"}]
                ) from None
            raise translate(error) from error
        for raw in page.get("Items", []):
            item = from_item(raw)
            if item is not None and (keep is None or keep(item)):
                items.append(item)
        start = page.get("LastEvaluatedKey")
        if not start:
            part += 1
    next_cursor = encode_cursor({"p": part, "k": start}) if part < len(partitions) else None
    return items, next_cursor


def chunks(values: Iterable[Any], size: int) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
