"""moto as the emulated AWS, served over real HTTP inside this process.

moto is a functional emulator, not a concurrency-faithful one: concurrent
conditional writes through its threaded server can over-admit. Every call is
therefore serialised by one lock held while the whole response is built (see
DESIGN-NOTES), which is what makes the caps' race tests meaningful locally.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"


class SerialisedWsgi:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        captured: list[tuple[Any, ...]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured.append((status, headers, exc_info))
            return lambda _data: None

        with self._lock:
            result = self._app(environ, capture)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close:
                    close()
        status, headers, exc_info = captured[0]
        start_response(status, headers, exc_info)
        return [body]


class Emulator:
    """One moto server on a free loopback port, for the life of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app

        from .moto_patches import apply as patch_moto

        patch_moto()  # transactions copy the items they touch, not whole tables (see moto_patches)
        app = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer = make_server(host, port, SerialisedWsgi(app), threaded=True)
        self.endpoint = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    def start(self) -> Emulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def configure_process(self) -> None:
        """Point every boto3 client of this process at the emulator, with throwaway credentials."""
        os.environ.update({
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "MOTO_ACCOUNT_ID": ACCOUNT_ID,
        })
        for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            os.environ.pop(name, None)
