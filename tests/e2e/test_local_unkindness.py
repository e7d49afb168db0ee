"""The local stack is no kinder than AWS where the code must not rely on kindness (issue 11).

`coupons-local serve` answers BatchGetItem in a new order each call, as DynamoDB does (moto answered
in request order); `COUPONS_LOCAL_BATCH_UNPROCESSED` also makes a share of the calls answer in part.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LocalStack, unique

pytestmark = pytest.mark.e2e


def _read(client: Any, table: str, keys: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    pending: dict[str, Any] = {table: {"Keys": keys}}
    while pending:
        page = client.batch_get_item(RequestItems=pending)
        found += [item["pk"]["S"] for item in page["Responses"].get(table, [])]
        pending = page.get("UnprocessedKeys") or {}
    return found


def test_batch_get_item_answers_in_a_new_order_each_call(stack: LocalStack) -> None:
    client = stack.boto("dynamodb")
    table = stack.info()["tables"]["jobs"]
    prefix = unique("UNORDERED#")
    pks = [f"{prefix}{n:02d}" for n in range(25)]
    for pk in pks:  # throwaway items of no entity the service reads
        client.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "X"}, "ttl": {"N": "1"}})
    keys = [{"pk": {"S": pk}, "sk": {"S": "X"}} for pk in pks]
    orders = [_read(client, table, keys) for _ in range(5)]
    assert all(sorted(order) == pks for order in orders)
    assert pks not in orders and len({tuple(order) for order in orders}) == 5
