"""boto3 clients, created on first use and kept for the container's life.

Nothing is created at import time, so tests and the local stack can point the
process at another endpoint first (boto3 honours AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

_lock = threading.Lock()


@cache
def _session() -> Any:
    import boto3

    return boto3.session.Session()


@cache
def client(service: str) -> Any:
    from botocore.config import Config

    with _lock:  # botocore sessions are not thread-safe while building clients
        return _session().client(
            service,
            config=Config(
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=2,
                read_timeout=5,
                tcp_keepalive=True,
            ),
        )


def reset_clients() -> None:
    """Forget cached clients (tests that switch endpoints or credentials)."""
    client.cache_clear()
    _session.cache_clear()
