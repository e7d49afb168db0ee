"""The README's integration guide (issue 12): each caller's walkthrough runs verbatim against a local stack.

Every `post` and `get` of a walkthrough prints one line: the answer's JSON and its HTTP status.
Each test runs its block exactly as written (only the port changes) and checks those lines.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LocalStack, start_stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    found = re.findall(rf"<!-- integrating:{name} -->\n```sh\n(.*?)```", text, flags=re.S)
    assert len(found) == 1, f"the README's integration guide lost its {name} walkthrough"
    section = text.split("<!-- section:integrating -->", 1)[1].split("<!-- /section:integrating -->", 1)[0]
    assert found[0] in section and "## Integrating" in section
    return str(found[0])


@pytest.fixture(scope="module")
def fresh() -> Iterator[LocalStack]:
    running = start_stack(seed=False)  # what `make run` serves, without the demo codes
    yield running
    running.stop()


def run(stack: LocalStack, name: str) -> list[tuple[Any, int]]:
    script = "set -euo pipefail\n" + block(name).replace("127.0.0.1:3000", f"127.0.0.1:{stack.port}")
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    answers = []
    for line in done.stdout.splitlines():
        body, _, status = line.rpartition(" ")
        answers.append((json.loads(body), int(status)))
    return answers


def code(answer: tuple[Any, int]) -> tuple[int, str | None]:
    body, status = answer
    return status, body["error"]["code"] if isinstance(body, dict) and "error" in body else None


def test_the_app_walkthrough(fresh: LocalStack) -> None:
    validated, paid, replay, history, again, cancel = run(fresh, "app")
    assert validated[1] == 200 and validated[0]["discount_amount"] == 1000  # 10% of 99.98, half-up
    assert validated[0]["total_after_discount"] == 8998
    assert paid[1] == 201 and paid[0]["status"] == "redeemed" and paid[0]["total_after_discount"] == 8998
    assert paid[0]["user_id"].startswith("ann-") and paid[0]["order_subtotal"] == 9998
    assert replay == (paid[0], 200)
    assert history[1] == 200 and [r["redemption_id"] for r in history[0]["items"]] == [paid[0]["redemption_id"]]
    assert code(again) == (422, "USER_LIMIT_REACHED")
    assert code(cancel) == (403, "FORBIDDEN")


def test_the_shop_backend_walkthrough(fresh: LocalStack) -> None:
    paid, spent, refund, refund_again, back, history = run(fresh, "backend")
    assert paid[1] == 201 and paid[0]["user_id"].startswith("cust-")
    assert (paid[0]["discount_amount"], paid[0]["currency"], paid[0]["total_after_discount"]) == (1500, "EUR", 10500)
    assert code(spent) == (422, "USER_LIMIT_REACHED")  # the same person as the backend's customer
    assert refund[1] == 200 and refund[0]["status"] == "rolled_back"
    assert refund_again == refund
    assert back[1] == 200 and back[0]["valid"] is True
    assert history[1] == 200
    assert [(r["redemption_id"], r["status"]) for r in history[0]["items"]] == \
        [(paid[0]["redemption_id"], "rolled_back")]


def test_the_pos_walkthrough(fresh: LocalStack) -> None:
    guest, member = run(fresh, "pos")
    assert guest[1] == 201 and guest[0]["user_id"] is None and guest[0]["discount_amount"] == 1000
    assert code(member) == (422, "CUSTOMER_REQUIRED")


def test_the_crm_walkthrough(fresh: LocalStack) -> None:
    created, listed, checkout = run(fresh, "crm")
    assert created[1] == 201 and created[0]["discount_value"] == 1000 and created[0]["code"]
    assert created[0]["metadata"] == {"crm_customer": "cust-42", "reason": "birthday"}
    assert listed[1] == 200 and len(listed[0]["items"]) == 1
    assert code(checkout) == (403, "FORBIDDEN")


def test_the_guide_explains_the_authorizer_and_every_error_code() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- section:integrating -->", 1)[1].split("<!-- /section:integrating -->", 1)[0]
    assert "### Why a token authorizer" in section
    # the guide comes right after "Try it"
    assert text.index("## Try it") < text.index("## Integrating") < text.index("## Admin console")
    contract = (ROOT / "layers" / "domain" / "python" / "coupons" / "errors.py").read_text()
    codes = set(re.findall(r'code, message = \d+, "([A-Z_]+)"', contract)) | \
        set(re.findall(r'^    "([A-Z_]+)": "', contract, flags=re.M))
    codes -= {"NOT_FOUND"}  # the gateway's answer for an unknown route, not the service's
    table = section.split("### What a client should do with each error", 1)[1]
    missing = sorted(c for c in codes if f"`{c}`" not in table)
    assert not missing, missing
