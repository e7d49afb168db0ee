"""Kept per-day report aggregates: the reports table (no stream, no TTL).

One partition per month, so a year's range is at most 13 Queries, run in parallel:

- header  pk=DAYS#<YYYY-MM>  sk=<YYYY-MM-DD>                  gen, chunks, version, data (zlib JSON)
- chunk   pk=DAYS#<YYYY-MM>  sk=<YYYY-MM-DD>#<gen>#<nnnnn>    data (zlib JSON: a slice of the coupons)

A day's coupons are all kept (the range's top coupons need every coupon's totals), split in
chunks far below DynamoDB's 400 KB item limit. `gen` is a digest of the header and the
chunks: the chunks are written first, the header last, so the header is the commit; a
reader trusts a day only when every chunk of the header's generation is there and the
digest (of the stored bytes) matches (a missing, torn or mixed day reads as not kept, and is computed again).
A rewrite with the same content (a re-run of a settled day) writes identical items; one
with other content leaves the old generation's chunks, which it then deletes.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

from botocore.exceptions import ClientError

from ..clock import iso, utcnow
from ..errors import TryAgain
from ..reports import AGGREGATE_VERSION, Aggregate, KeptDay, check_kept
from .dynamo import chunks, translate

CHUNK_BYTES = 256 * 1024  # JSON per chunk before compression: an item stays well under 400 KB
BATCH_ATTEMPTS = 8


def _pk(day: date) -> str:
    return f"DAYS#{day.year:04d}-{day.month:02d}"


def months(first: date, last: date) -> Iterator[tuple[date, date]]:
    """The range cut at month ends: one (first, last) per month partition."""
    start = first
    while start <= last:
        following = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
        yield start, min(last, following - timedelta(days=1))
        start = following


def _encode(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(head: bytes, parts: list[bytes]) -> str:
    digest = hashlib.sha256(head)
    for part in parts:
        digest.update(b"\0")
        digest.update(part)
    return digest.hexdigest()[:32]


def _assemble(header: dict[str, Any], parts: dict[int, bytes]) -> KeptDay | None:
    """The day if every chunk of the header's generation is there and the digest matches, else None."""
    try:
        count = int(header["chunks"]["N"])
        if int(header["version"]["N"]) != AGGREGATE_VERSION or sorted(parts) != list(range(count)):
            return None
        packed_head = bytes(header["data"]["B"])
        slices = [parts[n] for n in range(count)]
        if _digest(packed_head, slices) != header["gen"]["S"]:
            return None
        head = json.loads(zlib.decompress(packed_head))
        check_kept(head)
    except (KeyError, ValueError, TypeError, zlib.error):
        return None  # not intact, or kept in another form: computed again

    def coupons() -> Iterator[list[Any]]:
        for piece in slices:  # one slice decoded at a time
            yield from json.loads(zlib.decompress(piece))

    return KeptDay(head, coupons)


class DynamoAggregateStore:
    """`report_range.AggregateStore` on DynamoDB."""

    def __init__(self, dynamodb: Any, table: str, *, chunk_bytes: int = CHUNK_BYTES, workers: int = 13) -> None:
        self._db = dynamodb
        self._table = table
        self._chunk_bytes = chunk_bytes
        self._workers = workers

    # --- reading --------------------------------------------------------------------------------

    def load(self, first: date, last: date) -> dict[date, KeptDay]:
        spans = list(months(first, last))
        if not spans:
            return {}
        found: dict[date, KeptDay] = {}
        if len(spans) == 1:
            found.update(self._month(*spans[0]))
        else:
            with ThreadPoolExecutor(max_workers=min(self._workers, len(spans))) as pool:
                for part in pool.map(lambda span: self._month(*span), spans):
                    found.update(part)
        return found

    def _month(self, first: date, last: date) -> dict[date, KeptDay]:
        headers: dict[str, dict[str, Any]] = {}
        parts: dict[tuple[str, str], dict[int, bytes]] = defaultdict(dict)
        for item in self._query(_pk(first), first.isoformat(), f"{last.isoformat()}#~"):
            day, _, rest = item["sk"]["S"].partition("#")
            if not rest:
                headers[day] = item
            else:
                gen, _, number = rest.partition("#")
                parts[(day, gen)][int(number)] = bytes(item["data"]["B"])
        found = {}
        for day, header in headers.items():
            kept = _assemble(header, parts.get((day, header["gen"]["S"]), {}))
            if kept is not None:
                found[date.fromisoformat(day)] = kept
        return found

    def _query(self, pk: str, low: str, high: str) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":low": {"S": low}, ":high": {"S": high}},
        }
        while True:
            try:
                page = self._db.query(**request)
            except ClientError as error:
                raise translate(error) from error
            yield from page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return
            request["ExclusiveStartKey"] = start

    # --- writing --------------------------------------------------------------------------------

    def save(self, day: date, aggregate: Aggregate) -> None:
        body = aggregate.to_dict()
        coupons = body.pop("coupons")
        head = zlib.compress(_encode(body), 6)
        slices = [zlib.compress(piece, 6) for piece in self._slices(coupons)]
        gen = _digest(head, slices)
        pk, sk = _pk(day), day.isoformat()
        self._batch([{"PutRequest": {"Item": {
            "pk": {"S": pk}, "sk": {"S": f"{sk}#{gen}#{n:05d}"}, "data": {"B": piece},
        }}} for n, piece in enumerate(slices)])
        try:
            old = self._db.put_item(TableName=self._table, ReturnValues="ALL_OLD", Item={
                "pk": {"S": pk}, "sk": {"S": sk}, "entity": {"S": "report_day"},
                "version": {"N": str(AGGREGATE_VERSION)}, "gen": {"S": gen}, "chunks": {"N": str(len(slices))},
                "data": {"B": head}, "saved_at": {"S": iso(utcnow())},
            }).get("Attributes") or {}
        except ClientError as error:
            raise translate(error) from error
        old_gen = old.get("gen", {}).get("S")
        if old_gen and old_gen != gen:
            stale = int(old.get("chunks", {}).get("N", "0"))
            self._batch([{"DeleteRequest": {"Key": {"pk": {"S": pk}, "sk": {"S": f"{sk}#{old_gen}#{n:05d}"}}}}
                         for n in range(stale)])

    def _slices(self, coupons: list[Any]) -> Iterator[bytes]:
        """The coupons as JSON arrays of at most chunk_bytes each (an empty day has one empty slice)."""
        piece: list[bytes] = []
        size = 2
        for entry in coupons:
            encoded = _encode(entry)
            if piece and size + len(encoded) + 1 > self._chunk_bytes:
                yield b"[" + b",".join(piece) + b"]"
                piece, size = [], 2
            piece.append(encoded)
            size += len(encoded) + 1
        yield b"[" + b",".join(piece) + b"]"

    def _batch(self, requests: list[dict[str, Any]]) -> None:
        for batch in chunks(requests, 25):
            pending: dict[str, Any] = {self._table: batch}
            for attempt in range(BATCH_ATTEMPTS):
                try:
                    pending = self._db.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                except ClientError as error:
                    raise translate(error) from error
                if not pending:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise TryAgain(retry_after=1)
