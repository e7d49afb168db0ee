"""Corrections to the emulator: TransactWriteItems and Query that cost what they touch, not the whole table.

moto (5.2.5) backs up every table a transaction names with `copy.deepcopy` before
applying it, so that a cancelled transaction can be undone. That makes every
transaction O(table size): 1 ms on an empty table, ~60 ms at 5,000 items, ~270 ms
at 25,000 (DESIGN-NOTES), and a local stack holding 100,000 coupons answers a
redemption in seconds. DynamoDB itself has no such cost.

The replacement below is moto's own method with one change: before an item is
written it remembers that item's previous state (a deep copy of that one item, or
"absent") and the length of its table's stream; a cancelled transaction puts those
items back and drops the stream records it had appended. Everything else (condition
evaluation, cancellation reasons with ALL_OLD, the checks for duplicate keys and
the 100-item limit) is moto's code, unchanged. It is applied only to the version
it was written against; any other version keeps moto's behaviour, with a warning.

Likewise a Query on a table's own partition key reads that partition instead of sorting
every item of the table (see `_partition_query`).

And one correction the other way, making the emulator less kind than it is (issue 11): moto
answers BatchGetItem in the order the keys were asked for, and DynamoDB does not (its
documentation: "the order of the items in the response is not guaranteed"). Here each table's
items come back shuffled, and, when `COUPONS_LOCAL_BATCH_UNPROCESSED` is a share above 0, that
share of the calls answers only part of the request and returns the rest as `UnprocessedKeys`,
as DynamoDB does under throttling or past 16 MB (see `BatchGetUnkindness`). Code that relied on
the order or ignored UnprocessedKeys fails here as it would on AWS. Likewise S3: moto's ETag of a
single-part object is the MD5 of its bytes, so two uploads of the same bytes had the same ETag;
every bucket of this service is SSE-KMS on AWS, where the ETag is not an MD5 of the content, so
here an object's ETag is salted per upload (`_upload_etag`): code keyed on ETags sees two.

Derived from moto (Apache License 2.0), moto/dynamodb/models/__init__.py.
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
import threading
import warnings
from typing import Any

PINNED_MOTO_VERSION = "5.2.5"
_applied = False
original: Any = None  # moto's own method, kept for comparison (tests, benchmarks)


def apply() -> bool:
    """Install the patches; True if they are active (idempotent)."""
    global _applied, original, unkindness
    if _applied:
        return True
    import moto
    from moto.dynamodb.models import DynamoDBBackend

    if moto.__version__ != PINNED_MOTO_VERSION:
        warnings.warn(
            f"coupons-local: moto {moto.__version__} is not {PINNED_MOTO_VERSION}; TransactWriteItems keeps "
            "moto's whole-table copy (slow on big tables)", RuntimeWarning, stacklevel=2)
        return False
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoDBBackend.transact_write_items
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    unkindness = BatchGetUnkindness.from_environment()
    _unkind_batch_get_item.original = DynamoHandler.batch_get_item  # type: ignore[attr-defined]
    DynamoHandler.batch_get_item = _unkind_batch_get_item  # type: ignore[method-assign]
    _partition_query.original = Table.query  # type: ignore[attr-defined]
    Table.query = _partition_query  # type: ignore[method-assign]
    from moto.s3.models import FakeKey

    _upload_etag.original = FakeKey.etag  # type: ignore[attr-defined]
    FakeKey.etag = property(_upload_etag)  # type: ignore[method-assign,assignment]
    _applied = True
    return True


BATCH_SEED_ENV = "COUPONS_LOCAL_BATCH_SEED"  # an integer: the same calls get the same orders
BATCH_UNPROCESSED_ENV = "COUPONS_LOCAL_BATCH_UNPROCESSED"  # share of calls answered in part (0..1)


class BatchGetUnkindness:
    """How BatchGetItem answers: items shuffled per table; a share of calls with UnprocessedKeys.

    A partial answer leaves out at most half of the keys asked for (at least one is always
    read), so a caller that retries what is unprocessed gets everything in a few calls, as it
    does from DynamoDB.
    """

    def __init__(self, seed: int | None = None, unprocessed: float = 0.0) -> None:
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        self.unprocessed = unprocessed
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self.calls = 0
        self.partial = 0

    @classmethod
    def from_environment(cls) -> BatchGetUnkindness:
        seed = os.environ.get(BATCH_SEED_ENV, "").strip()
        share = os.environ.get(BATCH_UNPROCESSED_ENV, "").strip()
        return cls(int(seed) if seed else None, float(share) if share else 0.0)

    def apply(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        """Reorder (and maybe cut) moto's answer to `request` in place."""
        with self._lock:
            self.calls += 1
            responses: dict[str, list[dict[str, Any]]] = answer.setdefault("Responses", {})
            if self.unprocessed > 0 and self._rng.random() < self.unprocessed:
                self._leave_some_unprocessed(request, answer)
            for items in responses.values():
                self._rng.shuffle(items)

    def _leave_some_unprocessed(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        # Only tables read whole (no projection): their items carry the key, so the answer stays exact.
        keys = [(table, key) for table, asked in request.items()
                if not asked.get("ProjectionExpression") and not asked.get("AttributesToGet")
                for key in asked.get("Keys", [])]
        if len(keys) < 2 or answer.get("UnprocessedKeys"):
            return
        left = self._rng.sample(keys, self._rng.randint(1, len(keys) // 2))
        self.partial += 1
        unprocessed = answer.setdefault("UnprocessedKeys", {})
        for table, key in left:
            items = answer["Responses"].get(table, [])
            answer["Responses"][table] = [i for i in items if any(i.get(a) != v for a, v in key.items())]
            entry = unprocessed.setdefault(table, {**{k: v for k, v in request[table].items() if k != "Keys"},
                                                   "Keys": []})
            entry["Keys"].append(key)


unkindness = BatchGetUnkindness()  # replaced from the environment by apply(), or by configure()


def configure(seed: int | None = None, unprocessed: float = 0.0) -> BatchGetUnkindness:
    """Start a new sequence of BatchGetItem answers (tests: a fixed seed, a share of partial answers)."""
    global unkindness
    unkindness = BatchGetUnkindness(seed, unprocessed)
    return unkindness


def _unkind_batch_get_item(self: Any) -> Any:
    """DynamoHandler.batch_get_item, answered as DynamoDB may answer (see BatchGetUnkindness)."""
    result = _unkind_batch_get_item.original(self)  # type: ignore[attr-defined]
    answer = result.result
    if isinstance(answer, dict):
        unkindness.apply(self.body.get("RequestItems", {}), answer)
    return result


def _upload_etag(self: Any) -> str:
    """FakeKey.etag, as an SSE-KMS object's: not the MD5 of its bytes, and another one per upload.

    Still 32 hex digits, computed once per stored object (so If-Match, listings and multipart parts
    agree with it); multipart ETags (`<hex>-<parts>`, given by moto) are left as they are.
    """
    if self._etag is None:
        content_md5 = str(_upload_etag.original.fget(self)).strip('"')  # type: ignore[attr-defined]
        self._etag = hashlib.md5(bytes.fromhex(content_md5) + os.urandom(16), usedforsecurity=False).hexdigest()
    return f'"{self._etag}"'


def _partition_query(self: Any, *args: Any, **kwargs: Any) -> Any:
    """Table.query on the table's own key reads that partition, not a sorted copy of every item.

    moto answers a Query by sorting all the table's items and filtering them, so even
    `pk = KEYRING` costs O(n log n) in the table size (seconds at 100,000 items, enough
    for a cold start's keyring read to time out). For a query on the table's own hash
    key, moto's method is run with `all_items` narrowed to that partition, which is all
    it would have kept. Index queries are left as they are. (The emulator serialises
    every call, so the temporary per-instance override is never seen by another call.)
    """
    original = _partition_query.original  # type: ignore[attr-defined]
    index_name = kwargs["index_name"] if "index_name" in kwargs else (args[7] if len(args) > 7 else None)
    hash_key = kwargs["hash_key"] if "hash_key" in kwargs else (args[0] if args else None)
    if index_name or hash_key is None or "all_items" in vars(self):
        return original(self, *args, **kwargs)
    partition = self.items.get(hash_key)
    if partition is None:
        narrowed: list[Any] = []
    elif self.range_key_attr is not None:
        narrowed = list(partition.values())
    else:
        narrowed = [partition]
    self.all_items = lambda: narrowed
    try:
        return original(self, *args, **kwargs)
    finally:
        del self.all_items


def _key_of(table: Any, key: dict[str, Any]) -> tuple[Any, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr is not None else None
    return hash_value, range_value


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    # What each touched item was before this transaction, and where each table's stream stood.
    before: dict[tuple[str, Any, Any], Any] = {}
    stream_marks: dict[str, int | None] = {}

    def remember(table_name: str, key: dict[str, Any]) -> None:
        table = self.get_table(table_name)
        if table_name not in stream_marks:
            stream_marks[table_name] = len(table.stream_shard.items) if table.stream_shard is not None else None
        hash_value, range_value = _key_of(table, key)
        slot = (table_name, hash_value, range_value)
        if slot not in before:
            before[slot] = copy.deepcopy(table.get_item(hash_value, range_value))

    def undo() -> None:
        for (table_name, hash_value, range_value), item in before.items():
            table = self.get_table(table_name)
            if range_value is not None:
                if item is None:
                    table.items[hash_value].pop(range_value, None)
                    if not table.items[hash_value]:
                        table.items.pop(hash_value, None)
                else:
                    table.items[hash_value][range_value] = item
            elif item is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = item
        for table_name, mark in stream_marks.items():
            shard = self.get_table(table_name).stream_shard
            if mark is not None and shard is not None:
                del shard.items[mark:]

    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[tuple[str, str, dict[str, Any]] | tuple[None, None, None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        if len(list(item.keys())) > 1:
            raise TransactWriteSingleOpException

        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")

            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            expression_attribute_names = op.get("ExpressionAttributeNames")
            expression_attribute_values = op.get("ExpressionAttributeValues")
            return_values_on_condition_check_failure = op.get("ReturnValuesOnConditionCheckFailure")

            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]

            check_unicity(table_name, key)
            if op_type != "ConditionCheck":
                remember(table_name, key)

            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition_op = get_filter_expression(
                    condition_expression,
                    expression_attribute_names,
                    expression_attribute_values,
                )
                if not condition_op.expr(current):
                    if return_values_on_condition_check_failure == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)

            if op_type == "Put":
                attrs = op["Item"]
                self.put_item(
                    table_name,
                    attrs,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Delete":
                self.delete_item(
                    table_name,
                    key,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Update":
                update_expression = op["UpdateExpression"]
                self.update_item(
                    table_name,
                    key,
                    update_expression=update_expression,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            undo()
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))  # type: ignore[arg-type]
        except Exception as e:  # moto reports any other failure as a reason, so do we
            errors.append((type(e).__name__, str(e), original_item))  # type: ignore[arg-type]

    if any(code is not None for code, _, _ in errors):
        undo()
        raise TransactionCanceledException(errors)
