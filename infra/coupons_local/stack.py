"""One running local stack: the emulator, its resources, the gateway and the background wiring."""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coupons_infra import resources as r
from werkzeug.serving import BaseWSGIServer, make_server

from . import calllog, threadsafe, tokens
from .emulator import REGION, Emulator
from .faults import FAULTS_ENV, PutEventsFaults, from_environment
from .gateway import FunctionHost, Gateway
from .provision import Provisioned, function_environment, provision

# Seed options and abuse-defence settings a user may set in the environment of `serve`.
CONFIG_VARS = (*tuple(r.SEED_OPTIONS.values()), "FRAUD_DISTINCT_USERS_PER_IP", "HOT_COUPON_SHARDS", "POWERTOOLS_LOG_LEVEL",
               "HOT_COUPON_THRESHOLD")

Job = Callable[[dict[str, Any]], Any]
# Background workers and on-demand jobs register here (S3 imports, stream publisher, schedules).
WORKER_FACTORIES: list[Callable[[LocalStack], None]] = []


def state_file(port: int) -> Path:
    return tokens.home() / f"stack-{port}.json"


class LocalStack:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.emulator: Emulator | None = None
        self.provisioned: Provisioned | None = None
        self.functions = FunctionHost()
        self.jobs: dict[str, Job] = {}
        self.stopping = threading.Event()
        # Background pollers nap until something happens (a function ran) or their idle timeout:
        # an idle stack then costs almost no CPU, a busy one is polled right away.
        self._activity = threading.Condition()
        self._generation = 0
        self.functions.after_invoke = self.kick
        self.control_secret = secrets.token_hex(16)
        self._server: BaseWSGIServer | None = None
        self.faults: PutEventsFaults | None = None  # COUPONS_LOCAL_PUTEVENTS_FAULTS (issue 17)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        # COUPONS_LOCAL_CALL_LOG: every AWS call, per function (installed before any client exists)
        self.functions.isolated = calllog.install() is not None
        threadsafe.install()  # Powertools keeps each request's event per process: make it per thread
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per emulated AWS call
        self.emulator = Emulator().start()
        self.emulator.configure_process()
        self.faults = from_environment(os.environ.get(FAULTS_ENV))
        if self.faults is not None:
            print(f"fault injection: {self.faults.describe()}", flush=True)
        self.provisioned = provision()
        config = {name: os.environ[name] for name in CONFIG_VARS if name in os.environ}
        os.environ.update(function_environment(self.provisioned, config))
        gateway = Gateway(self.functions, self.jobs, self.control_secret)
        self._server = make_server(self.host, self.port, gateway, threaded=True)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, name="gateway", daemon=True).start()
        for factory in WORKER_FACTORIES:
            factory(self)

    def info(self) -> dict[str, Any]:
        assert self.emulator and self.provisioned
        return {
            "api_url": self.api_url,
            "aws_endpoint": self.emulator.endpoint,
            "region": REGION,
            "tables": self.provisioned.tables,
            "buckets": self.provisioned.buckets,
            "queues": self.provisioned.queues,
            "event_queue_url": self.provisioned.event_queue_url,
            "event_archive_url": self.provisioned.event_archive_url,
            "kms_key_id": self.provisioned.key_id,
            "pid": os.getpid(),
        }

    def write_state(self) -> None:
        path = state_file(self.port)
        payload = {**self.info(), "control_secret": self.control_secret}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(path)

    def kick(self) -> None:
        with self._activity:
            self._generation += 1
            self._activity.notify_all()

    def nap(self, seconds: float) -> bool:
        """Wait until a function runs, the stack stops, or `seconds` pass; True once stopping."""
        with self._activity:
            seen = self._generation
            self._activity.wait_for(lambda: self._generation != seen or self.stopping.is_set(), seconds)
        return self.stopping.is_set()

    def poll_until_stopped(self, poll_once: Callable[[], bool], *, what: str, busy_pause: float,
                           idle_max: float, growth: float) -> None:
        """A background poller's loop: poll right away while busy; when idle, nap a growing
        while (woken early by any function run) so an idle stack costs almost no CPU."""
        pause = busy_pause
        while not self.stopping.is_set():
            try:
                busy = poll_once()
            except Exception:  # the emulator is shutting down, or a bug: keep the stack serving
                if self.stopping.is_set():
                    return
                logging.getLogger("coupons_local").exception("poller error (%s)", what)
                busy = False
            if busy:
                pause = busy_pause
            else:
                self.stopping.wait(busy_pause)  # bounds the polling rate while activity keeps waking it
                self.nap(pause)
                pause = min(idle_max, pause * growth)

    def stop(self) -> None:
        self.stopping.set()
        self.kick()
        if self._server:
            self._server.shutdown()
        state_file(self.port).unlink(missing_ok=True)
        if self.emulator:
            self.emulator.stop()


# Issue 6: stream pollers driving the outbox publisher, the schedules, `run expiry-sweep|daily-report`.
from .workers_events import start as _start_event_workers  # noqa: E402

WORKER_FACTORIES.append(_start_event_workers)

# Issue 5: S3 notification -> SQS for imports, SQS pollers driving csv_import and generate_codes.
from .workers_bulk import start as _start_bulk_workers  # noqa: E402

WORKER_FACTORIES.append(_start_bulk_workers)
