"""Demo coupons, created through the real API on start (so they are encrypted like any other)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

DEMO_COUPONS: list[dict[str, Any]] = [
    {"code": "WELCOME10", "discount_type": "PERCENT", "discount_value": 10,
     "uses_per_user": 1, "campaign_id": "demo", "metadata": {"note": "10% off any order"}},
    {"code": "SAVE5", "discount_type": "FIXED", "discount_value": 500, "currency": "USD",
     "min_order_amount": 2000, "campaign_id": "demo", "metadata": {"note": "$5 off orders from $20"}},
    {"code": "SHOES-20", "discount_type": "PERCENT", "discount_value": 20, "max_discount_amount": 3000,
     "currency": "USD", "applicable_categories": ["shoes"], "max_uses": 100, "campaign_id": "demo"},
    {"code": "POS-ONLY", "discount_type": "PERCENT", "discount_value": 15, "channels": ["pos"],
     "campaign_id": "demo"},
    {"code": "STAFF30", "discount_type": "PERCENT", "discount_value": 30,
     "allowed_domains": ["example.com"], "uses_per_user": None, "campaign_id": "staff"},
]


def seed(api_url: str, admin_token: str) -> list[dict[str, Any]]:
    created = []
    for body in DEMO_COUPONS:
        request = urllib.request.Request(
            f"{api_url}/coupons", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                created.append(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"seeding {body['code']} failed: {error.code} {error.read().decode()}") from None
    return created
