"""Helpers shared by the checkout end-to-end tests (validate, redeem, tokens, the conservation invariant)."""

from __future__ import annotations

from typing import Any

from conftest import HttpResult, LocalStack, unique
from coupons_local import tokens

ORDER: dict[str, Any] = {"currency": "USD", "items": [
    {"product_id": "p1", "category": "shoes", "unit_price": 5000, "quantity": 2}]}


def line(product_id: str, category: str = "", unit_price: int = 1000, quantity: int = 1) -> dict[str, Any]:
    return {"product_id": product_id, "category": category, "unit_price": unit_price, "quantity": quantity}


def order(*lines: dict[str, Any], currency: str = "USD") -> dict[str, Any]:
    return {"currency": currency, "items": list(lines)}


def customer(name: str | None = None, *, email: str | None = None) -> str:
    """A bearer token for a new (or named) customer, issued like `coupons-local token` does."""
    return tokens.issue(name or unique("user-"), email=email)


def validate(stack: LocalStack, token: str, code: str, *, channel: str = "web",
             body_order: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> HttpResult:
    return stack.request("POST", "/coupons/validate",
                         {"code": code, "channel": channel, "order": body_order or ORDER},
                         token=token, headers=headers)


def redeem(stack: LocalStack, token: str, code: str, order_id: str | None = None, *, channel: str = "web",
           body_order: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> HttpResult:
    return stack.request("POST", "/redemptions",
                         {"code": code, "channel": channel, "order": body_order or ORDER,
                          "order_id": order_id or unique("order-")}, token=token, headers=headers)


_TABLES: dict[int, tuple[Any, dict[str, str]]] = {}


def dynamodb(stack: LocalStack, table: str = "coupons") -> tuple[Any, str]:
    """The emulated DynamoDB client of a stack and a table's name (looked up once per stack)."""
    if stack.port not in _TABLES:
        _TABLES[stack.port] = (stack.boto("dynamodb"), stack.info()["tables"])
    client, tables = _TABLES[stack.port]
    return client, tables[table]


def redemption_records(stack: LocalStack, coupon_id: str) -> list[dict[str, Any]]:
    """Every redemption record of a coupon, read from the table through the by-coupon index (gsi1)."""
    client, table = dynamodb(stack)
    pages = client.get_paginator("query").paginate(
        TableName=table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :p",
        ExpressionAttributeValues={":p": {"S": f"CREDEEM#{coupon_id}"}})
    return [item for page in pages for item in page["Items"]]


def live_redemptions(stack: LocalStack, coupon_id: str) -> int:
    return sum(1 for item in redemption_records(stack, coupon_id) if item["status"]["S"] == "redeemed")


def redeemed_count(stack: LocalStack, coupon_id: str) -> int:
    result = stack.admin("GET", f"/coupons/{coupon_id}")
    assert result.status == 200, result.body
    return int(result.body["redeemed_count"])


def assert_conserved(stack: LocalStack, coupon_id: str, expected: int) -> None:
    """The conservation invariant: the counter equals the live redemption records."""
    assert redeemed_count(stack, coupon_id) == expected == live_redemptions(stack, coupon_id)
