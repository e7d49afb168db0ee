"""A faster rollback for moto's TransactWriteItems (same results, O(items written) not O(table)).

moto 5.x backs a transaction up by deep-copying the whole table (stream records
included) once per item in the transaction, and restores the copy when the
transaction is cancelled. A 100-item bulk transaction on a table of 10,000 items
therefore copies a million items: seconds per call, growing with every write the
stack has ever taken. That made bulk imports and generation (50 coupons = 100
items per transaction) unusable locally, and slows every coupon create (2 items).

`install()` wraps `DynamoDBBackend.transact_write_items`: before the call it
deep-copies only the items the transaction names (and notes each stream's
length); during the call moto's whole-table copy is an identity (so its own
"restore" is a no-op); when the call raises, the named items get their
pre-images back and the streams are cut back to their old length. moto's own
processing of the transaction (conditions, cancellation reasons) is unchanged.
The emulator serialises every call under one lock, so no other call sees the
intermediate state, as before.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

_state = threading.local()
_installed = False


class _CopyDuringTransactions:
    """moto.dynamodb.models' `copy` module: a Table is not copied inside a patched transaction."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models.table import Table

        if getattr(_state, "active", False) and isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def _snapshot(backend: Any, transact_items: list[dict[str, Any]]) -> tuple[list[Any], dict[str, Any]]:
    images: list[Any] = []
    streams: dict[str, Any] = {}
    for entry in transact_items:
        if len(entry) != 1:
            continue  # moto refuses it before touching anything
        op_type, op = next(iter(entry.items()))
        table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        if table is None:
            continue
        raw = op.get("Item") if op_type == "Put" else op.get("Key")
        if not isinstance(raw, dict) or table.hash_key_attr not in raw:
            continue
        keys = {table.hash_key_attr: raw[table.hash_key_attr]}
        if table.range_key_attr is not None:
            if table.range_key_attr not in raw:
                continue
            keys[table.range_key_attr] = raw[table.range_key_attr]
        try:
            hash_key, range_key = backend.get_keys_value(table, keys)
            current = table.get_item(hash_key, range_key)
        except Exception:  # noqa: S112 - malformed keys: moto cancels the transaction before writing
            continue
        images.append((table, hash_key, range_key, copy.deepcopy(current)))
        if table.stream_shard is not None and table.name not in streams:
            streams[table.name] = (table.stream_shard, len(table.stream_shard.items))
    return images, streams


def _restore(images: list[Any], streams: dict[str, Any]) -> None:
    for table, hash_key, range_key, image in reversed(images):
        if range_key is not None:
            if image is None:
                table.items[hash_key].pop(range_key, None)
                if not table.items[hash_key]:
                    table.items.pop(hash_key, None)
            else:
                table.items[hash_key][range_key] = image
        elif image is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = image
    for shard, length in streams.values():
        del shard.items[length:]


def install() -> None:
    """Patch moto (idempotent)."""
    global _installed
    if _installed:
        return
    import moto.dynamodb.models as models

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        images, streams = _snapshot(self, transact_items)
        _state.active = True
        try:
            original(self, transact_items)
        except BaseException:
            _restore(images, streams)
            raise
        finally:
            _state.active = False

    models.copy = _CopyDuringTransactions()  # type: ignore[assignment]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _installed = True
