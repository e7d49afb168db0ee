"""The local gateway serves requests from threads: each must see its own event (Powertools keeps it per class)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from coupons_local import threadsafe


def _event(who: str) -> dict[str, Any]:
    return {"path": "/who", "httpMethod": "GET", "headers": {"who": who}, "resource": "/who",
            "requestContext": {"identity": {"sourceIp": "127.0.0.1"}}}


def test_concurrent_requests_each_see_their_own_event() -> None:
    # Given the patch the local stack installs, and two resolvers sharing Powertools' class state
    threadsafe.install()
    threadsafe.install()  # idempotent
    assert threadsafe.installed()
    router = APIGatewayRouter()

    @router.get("/who")
    def who() -> dict[str, Any]:
        first = router.current_event.headers.get("who")
        time.sleep(0.005)  # let other requests start meanwhile
        return {"first": first, "then": router.current_event.headers.get("who")}

    apps = [APIGatewayRestResolver(), APIGatewayRestResolver()]
    for app in apps:
        app.include_router(router)
    mixed: list[tuple[int, Any]] = []

    def call(i: int) -> None:
        body = json.loads(apps[i % 2].resolve(_event(str(i)), None)["body"])  # type: ignore[arg-type]
        if body != {"first": str(i), "then": str(i)}:
            mixed.append((i, body))

    # When 40 requests run at once
    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then none saw another's event (without the patch nearly all do)
    assert mixed == []


def test_subclasses_still_work_after_the_patch() -> None:
    threadsafe.install()

    class Custom(APIGatewayRestResolver):
        pass

    app = Custom()

    @app.get("/who")
    def who() -> dict[str, str]:
        return {"who": app.current_event.headers["who"]}

    assert json.loads(app.resolve(_event("x"), None)["body"]) == {"who": "x"}  # type: ignore[arg-type]
