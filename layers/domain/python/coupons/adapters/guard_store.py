"""The guards table: failed-guess counters, the IP's distinct users, day totals and fraud flags.

Items (TTL attribute `ttl`):

- failures      pk=FAIL#user#<sub> | FAIL#ip#<ip> | FAIL#client#<client_id>  sk=WINDOW
                bucket, current, previous (guards.Window: the failures of `bucket` and of the
                bucket before, in one item so that one conditional write sees both)
- IP's users    pk=IPUSERS#<ip>     sk=W#<bucket>                   users (string set, capped)
- day totals    pk=FAILED#<YYYY-MM-DD>  sk=SHARD#<n>                count (sum the shards)
- fraud flags   pk=FRAUD#<YYYY-MM-DD>   sk=<kind>#<scope>#<subject>#<bucket>
                entity=fraud, kind lockout|many_users_one_ip, scope user|ip|client, user_id|ip|client_id
                (and client_id when a server made the calls: `suspicious` names the client),
                count, limit, window_seconds, at (one per subject and bucket: re-raising it
                overwrites, so the stream's INSERT happens once)

A failed guess is counted with one conditional UpdateItem per subject, never a transaction:
concurrent transactions on one item cancel each other (TransactionConflict), which is exactly
what a burst of guesses would cause, while single-item updates are applied one after another.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..clock import epoch, iso
from ..guards import Window
from .dynamo import Item, busy_or, error_code, from_item, key, to_item, to_value

FAILED_SHARDS = 8  # FAILED#<day> counter items
FRAUD_TTL_DAYS = 400
_WINDOW_NAMES = {"#b": "bucket", "#c": "current", "#p": "previous", "#t": "ttl"}


class GuardMoved(Exception):
    """A counter was not as the request saw it (or its bucket is full): decide again from `window`."""

    def __init__(self, window: Window | None) -> None:
        super().__init__("the failure counter moved")
        self.window = window


def fail_key(scope: str, subject: str) -> dict[str, Any]:
    return key(f"FAIL#{scope}#{subject}", "WINDOW")


def ip_users_key(ip: str, bucket: int) -> dict[str, Any]:
    return key(f"IPUSERS#{ip}", f"W#{bucket}")


def window_of(item: Item | None) -> Window | None:
    if item is None or "bucket" not in item:
        return None
    return Window(int(item["bucket"]), int(item.get("current", 0)), int(item.get("previous", 0)))


class GuardStore:
    def __init__(self, dynamodb: Any, guards_table: str, rng: random.Random | None = None) -> None:
        self._db = dynamodb
        self._guards = guards_table
        self._rng = rng or random.Random()

    def count_failure(self, scope: str, subject: str, *, seen: Window | None, bucket: int, previous: int,
                      room: int, ttl: int) -> Window:
        """Count one failure in `bucket`, if the counter is still as `seen` and the bucket holds fewer than `room`.

        Returns the counter after the write (ReturnValues=ALL_NEW). Raises GuardMoved with the
        counter as it is (ALL_OLD) when the condition fails: the caller decides again from it.
        `previous` is the count the bucket before holds, for a counter that starts a new bucket.
        """
        values: dict[str, Any] = {":one": to_value(1), ":ttl": to_value(ttl), ":b": to_value(bucket)}
        if seen is not None and seen.bucket == bucket:
            # `previous` was fixed when the item moved to this bucket; only the room can run out
            update = "ADD #c :one SET #t = :ttl"
            condition = "#b = :b AND #c < :room"
            values[":room"] = to_value(room)
        else:
            update = "SET #b = :b, #c = :one, #p = :prev, #t = :ttl"
            values[":prev"] = to_value(previous)
            if seen is None:
                condition = "attribute_not_exists(pk)"
            else:  # roll over from exactly the counts that `previous` was taken from
                condition = "#b = :oldb AND #c = :oldc"
                values.update({":oldb": to_value(seen.bucket), ":oldc": to_value(seen.current)})
        try:
            result = self._db.update_item(
                TableName=self._guards, Key=fail_key(scope, subject), UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={k: v for k, v in _WINDOW_NAMES.items() if k in update + condition},
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                old = error.response.get("Item")  # ALL_OLD: the counter as it is (absent: no counter)
                raise GuardMoved(window_of(from_item(old if isinstance(old, dict) else None))) from None
            raise busy_or(error) from error
        except BotoCoreError as error:
            raise busy_or(error) from error
        window = window_of(from_item(result.get("Attributes")))
        assert window is not None
        return window

    def take_back(self, scope: str, subject: str, bucket: int) -> None:
        """Best effort: un-count a failure counted in `bucket` whose guess was refused after all.

        If the counter has moved on to the next bucket meanwhile, that failure is its `previous`.
        """
        for attribute, at in (("current", bucket), ("previous", bucket + 1)):
            try:
                self._db.update_item(
                    TableName=self._guards, Key=fail_key(scope, subject), UpdateExpression="ADD #n :minus",
                    ConditionExpression="#b = :b AND #n >= :one",
                    ExpressionAttributeNames={"#b": "bucket", "#n": attribute},
                    ExpressionAttributeValues={":minus": to_value(-1), ":one": to_value(1), ":b": to_value(at)})
                return
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    return  # left counted: errs towards locking, never towards letting a guess through
            except BotoCoreError:
                return

    def record_failure(self, *, now: datetime, flags: Sequence[Mapping[str, Any]]) -> None:
        """Best effort, after the guess was counted: the day's total (for the reports) and any fraud flags."""
        day = iso(now)[:10]
        with contextlib.suppress(ClientError, BotoCoreError):  # the answer is the same; the total is statistics
            self._db.update_item(
                TableName=self._guards, Key=key(f"FAILED#{day}", f"SHARD#{self._rng.randrange(FAILED_SHARDS)}"),
                UpdateExpression="ADD #count :one SET #ttl = :ttl",
                ExpressionAttributeNames={"#count": "count", "#ttl": "ttl"},
                ExpressionAttributeValues={":one": to_value(1),
                                           ":ttl": to_value(epoch(now) + FRAUD_TTL_DAYS * 86400)})
        for flag in flags:
            self.put_flag(flag)

    def add_ip_user(self, *, ip: str, user_id: str, bucket: int, window: int, cap: int) -> set[str] | None:
        """Add a user to this IP's set for the bucket; the set after it (None when nothing was added)."""
        try:
            result = self._db.update_item(
                TableName=self._guards, Key=ip_users_key(ip, bucket),
                UpdateExpression="ADD #users :u SET #ttl = :ttl",
                ConditionExpression="attribute_not_exists(#users) OR size(#users) < :cap",
                ExpressionAttributeNames={"#users": "users", "#ttl": "ttl"},
                ExpressionAttributeValues={":u": {"SS": [user_id]}, ":ttl": to_value((bucket + 2) * window + 60),
                                           ":cap": to_value(cap)},
                ReturnValues="UPDATED_NEW",
            )
        except (ClientError, BotoCoreError):
            return None
        return set(result.get("Attributes", {}).get("users", {}).get("SS", []))

    def put_flag(self, flag: Mapping[str, Any]) -> None:
        try:
            self._db.put_item(TableName=self._guards, Item=to_item(flag))
        except (ClientError, BotoCoreError):
            return


SUBJECT_FIELDS = {"user": "user_id", "ip": "ip", "client": "client_id"}


def fraud_flag(*, kind: str, scope: str, subject: str, bucket: int, now: datetime, count: int, limit: int,
               window: int, client_id: str | None = None) -> dict[str, Any]:
    """A FRAUD#<day> item: the stream turns its INSERT into a FraudSuspected event."""
    flag: dict[str, Any] = {
        "pk": f"FRAUD#{iso(now)[:10]}",
        "sk": f"{kind}#{scope}#{subject}#{bucket}",
        "entity": "fraud",
        "kind": kind,
        "scope": scope,
        "count": count,
        "limit": limit,
        "window_seconds": window,
        "at": iso(now),
        "ttl": epoch(now) + FRAUD_TTL_DAYS * 86400,
    }
    if client_id is not None:  # the server whose calls these were
        flag["client_id"] = client_id
    flag[SUBJECT_FIELDS[scope]] = subject
    return flag
