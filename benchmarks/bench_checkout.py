"""Checkout figures: AWS calls per operation, CPU per request, cold start, a hot coupon, cost, the local stack at scale.

Run with `make bench` (or `.venv/bin/python -m benchmarks bench_checkout`). The emulated AWS
runs in a separate process (`coupons-local serve`), so the CPU measured here is the
handler's and botocore's, never moto's.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "coupons-local")
ORDER = {"currency": "USD", "items": [{"product_id": "p1", "category": "shoes", "unit_price": 5000, "quantity": 2}]}

# List prices (DESIGN-NOTES): DynamoDB on-demand, Lambda arm64, API Gateway REST, KMS.
PRICE_WRITE_UNIT = 0.625 / 1e6
PRICE_READ_UNIT = 0.125 / 1e6
PRICE_LAMBDA_GB_S = 0.0000133334
PRICE_LAMBDA_REQUEST = 0.20 / 1e6
PRICE_API_REQUEST = 3.50 / 1e6
PRICE_KMS_REQUEST = 0.03 / 1e4
LAMBDA_MEMORY_GB = 0.5
ASSUMED_DYNAMODB_MS = 8  # per round trip inside a region, for the Lambda duration estimate


# --- a local stack in another process, its functions called in this one ---------------------


@contextmanager
def emulated_aws() -> Iterator[dict[str, Any]]:
    """`coupons-local serve` in a subprocess; this process's boto3 and settings pointed at it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    import tempfile

    log = tempfile.NamedTemporaryFile("w+", prefix="bench-stack-", suffix=".log")  # noqa: SIM115
    process = subprocess.Popen([CLI, "serve", "--port", str(port), "--no-seed"], stdout=log,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while not Path(log.name).read_text().count("ready: "):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("coupons-local serve did not start:\n" + Path(log.name).read_text()[-2000:])
            time.sleep(0.2)
        info = json.loads(subprocess.run([CLI, "info", "--port", str(port)], capture_output=True, text=True,
                                         check=True).stdout)
        from coupons import wiring
        from coupons_local.provision import Provisioned, function_environment

        provisioned = Provisioned(tables=info["tables"], buckets=info["buckets"], queues=info.get("queues", {}),
                                  key_id=info["kms_key_id"], bus_name="coupons",
                                  event_queue_url=info["event_queue_url"], stream_arns={})
        os.environ.update(function_environment(provisioned, {}))
        os.environ.update({"AWS_ENDPOINT_URL": info["aws_endpoint"], "AWS_ACCESS_KEY_ID": "local",
                           "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": info["region"],
                           "POWERTOOLS_LOG_LEVEL": "ERROR"})
        wiring.reset()
        yield {**info, "port": port}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def load_handler(name: str) -> Callable[..., dict[str, Any]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "functions" / name / "handler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler  # type: ignore[no-any-return]


class Context:
    function_name, memory_limit_in_mb, aws_request_id = "bench", 512, "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"


def event(method: str, path: str, body: Any, user: str, resource: str | None = None,
          path_parameters: dict[str, str] | None = None, ip: str = "10.9.9.9") -> dict[str, Any]:
    return {
        "resource": resource or path, "path": path, "httpMethod": method,
        "headers": {"Content-Type": "application/json", "User-Agent": "bench"}, "multiValueHeaders": {},
        "queryStringParameters": None, "pathParameters": path_parameters, "isBase64Encoded": False,
        "body": None if body is None else json.dumps(body),
        "requestContext": {"resourcePath": resource or path, "httpMethod": method, "stage": "bench",
                           "requestId": uuid.uuid4().hex,
                           "identity": {"sourceIp": ip, "userAgent": "bench"},
                           "authorizer": {"token_use": "id", "sub": user, "exp": str(int(time.time()) + 3600)}},
    }


def as_server(built: dict[str, Any]) -> dict[str, Any]:
    """The same event from a shop backend (issue 12: rolling back is the shop's call)."""
    built["requestContext"]["authorizer"] = {"token_use": "access", "client_id": "shop-backend",
                                             "scope": "coupons/checkout", "exp": str(int(time.time()) + 3600)}
    return built


class Recorder:
    """Counts calls per service:operation and keeps each call's parameters (botocore event hooks)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.params: list[tuple[str, str, dict[str, Any]]] = []

    def before_call(self, model: Any, **_: Any) -> None:
        self.calls[f"{model.service_model.service_name}:{model.name}"] += 1

    def provide(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.params.append((model.service_model.service_name, model.name, json.loads(json.dumps(params,
                                                                                                 default=str))))

    @contextmanager
    def on(self, *services: str) -> Iterator[Recorder]:
        from coupons.adapters import aws

        for service in services:
            events = aws.client(service).meta.events
            events.register("before-call.*.*", self.before_call)
            events.register("provide-client-params.*.*", self.provide)
        try:
            yield self
        finally:
            for service in services:
                events = aws.client(service).meta.events
                events.unregister("before-call.*.*", self.before_call)
                events.unregister("provide-client-params.*.*", self.provide)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def create_coupon(**fields: Any) -> dict[str, Any]:
    from coupons import wiring
    from coupons.models import CouponCreate

    fields.setdefault("discount_value", 10)
    return wiring.admin_service().create(CouponCreate.model_validate(fields), "bench")


# --- 1. calls per operation, 2. CPU per request ---------------------------------------------------


def calls_and_cpu(samples: int = 60) -> tuple[dict[str, object], dict[str, Any]]:
    from botocore.exceptions import ClientError
    from coupons.adapters import aws

    validate = load_handler("validate")
    redeem = load_handler("redeem")
    code = f"BENCH{uuid.uuid4().hex[:8].upper()}"
    create_coupon(code=code, uses_per_user=None)  # unlimited: the coupon's own counter
    hot = f"HOT{uuid.uuid4().hex[:8].upper()}"
    create_coupon(code=hot, max_uses=10**6, uses_per_user=None)  # above the threshold: sharded
    body = {"code": code, "channel": "web", "order": ORDER}
    figures: dict[str, object] = {}
    cold = Recorder()
    with cold.on("dynamodb", "kms"):
        assert validate(event("POST", "/coupons/validate", body, "cold-user"), Context())["statusCode"] == 200
    figures["calls: first validate in a container (keyring unwrap)"] = dict(cold.calls)

    def one(name: str, handler: Callable[..., dict[str, Any]], make: Callable[[int], dict[str, Any]],
            expect: int) -> tuple[dict[str, int], list[tuple[str, str, dict[str, Any]]]]:
        recorder = Recorder()
        with recorder.on("dynamodb", "kms"):
            response = handler(make(0), Context())
        assert response["statusCode"] == expect, (name, response)
        figures[f"calls: {name}"] = dict(recorder.calls)
        return dict(recorder.calls), recorder.params

    validate_calls, validate_params = one("validate (warm)", validate,
                                          lambda i: event("POST", "/coupons/validate", body, f"v-{i}"), 200)
    one("validate, failed guess", validate,
        lambda i: event("POST", "/coupons/validate", {**body, "code": "NO-SUCH-CODE"}, "guesser"), 404)
    redeem_event = {"code": code, "channel": "web", "order": ORDER}
    one("redeem, a user's first from this IP (+ the IP's distinct users)", redeem, lambda i: event(
        "POST", "/redemptions", {**redeem_event, "order_id": "o-first"}, "r-calls"), 201)
    redeem_calls, redeem_params = one("redeem (success)", redeem, lambda i: event(
        "POST", "/redemptions", {**redeem_event, "order_id": "o-calls"}, "r-calls"), 201)
    hot_event = {"code": hot, "channel": "web", "order": ORDER}
    one("redeem, a hot coupon's first (splits it into shards)", redeem, lambda i: event(
        "POST", "/redemptions", {**hot_event, "order_id": "h-first"}, "r-calls"), 201)
    one("redeem (success, hot coupon; this container's view of its shards is over a second old)", redeem,
        lambda i: event("POST", "/redemptions", {**hot_event, "order_id": "h-calls"}, "r-calls"), 201)
    one("redeem (success, hot coupon; view under a second old)", redeem, lambda i: event(
        "POST", "/redemptions", {**hot_event, "order_id": "h-calls-2"}, "r-calls"), 201)
    one("redeem (replay of the same order)", redeem, lambda i: event(
        "POST", "/redemptions", {**redeem_event, "order_id": "o-calls"}, "r-calls"), 200)
    rid = json.loads(redeem(event("POST", "/redemptions", {**redeem_event, "order_id": "o-rb"}, "rb"),
                            Context())["body"])["redemption_id"]
    rollback_calls, _ = one("rollback", redeem, lambda i: as_server(event(
        "POST", f"/redemptions/{rid}/rollback", None, "rb", "/redemptions/{redemption_id}/rollback",
        {"redemption_id": rid})), 200)

    # CPU: the handler, against a bare handler making the same boto3 calls with the same parameters.
    client = aws.client("dynamodb")

    def bare(params: list[tuple[str, str, dict[str, Any]]]) -> Callable[[], None]:
        def call() -> None:
            for _service, operation, kwargs in params:
                # a replayed write fails its condition: parsing that answer costs about the same
                with contextlib.suppress(ClientError):
                    getattr(client, _snake(operation))(**kwargs)
        return call

    def cpu_ms(action: Callable[[int], Any]) -> float:
        times = []
        for i in range(samples):
            started = time.process_time()
            action(i)
            times.append(time.process_time() - started)
        baseline = []
        for _ in range(samples):
            started = time.process_time()
            baseline.append(time.process_time() - started)
        return (statistics.median(times) - statistics.median(baseline)) * 1000

    run_id = uuid.uuid4().hex[:6]
    for i in range(25):  # fill this IP's distinct-user set, so that the loop below measures the steady state
        redeem(event("POST", "/redemptions", {**redeem_event, "order_id": f"w-{i}"}, f"warm-{run_id}-{i}"),
               Context())
    validate_cpu = cpu_ms(lambda i: validate(event("POST", "/coupons/validate", body, f"cv-{run_id}-{i}"),
                                             Context()))
    validate_bare = cpu_ms(lambda i: bare(validate_params)())
    redeem_cpu = cpu_ms(lambda i: redeem(event("POST", "/redemptions", {**redeem_event, "order_id": f"c-{i}"},
                                               f"cr-{run_id}-{i}"), Context()))
    redeem_bare = cpu_ms(lambda i: bare(redeem_params)())
    figures.update({
        "cpu: validate handler (ms, median)": round(validate_cpu, 2),
        "cpu: bare boto3 making the same calls (ms, median)": round(validate_bare, 2),
        "cpu: validate / bare ratio": round(validate_cpu / validate_bare, 2),
        "cpu: redeem handler (ms, median)": round(redeem_cpu, 2),
        "cpu: bare boto3 making the same redeem calls (ms, median)": round(redeem_bare, 2),
        "cpu: redeem / bare ratio": round(redeem_cpu / redeem_bare, 2),
    })
    # The items a redemption writes, as stored (their sizes set the write units).
    transaction = next(p for _, op, p in redeem_params if op == "TransactWriteItems")
    stored = {}
    for entry in transaction["TransactItems"]:
        (_, op), = entry.items()
        item_key = op.get("Key") or {k: op["Item"][k] for k in ("pk", "sk")}
        stored[item_key["pk"]["S"].split("#")[0]] = client.get_item(TableName=op["TableName"], Key=item_key,
                                                                   ConsistentRead=True).get("Item", {})
    sizes = {"redemption_params": redeem_params, "items": stored}
    return figures, {"validate": validate_calls, "redeem": redeem_calls, "rollback": rollback_calls,
                     "validate_cpu_ms": validate_cpu, "redeem_cpu_ms": redeem_cpu, **sizes}


# --- 3. a hot coupon, simulated over the service's own code with an in-memory store -------------


class SimStore:
    """The CheckoutStore's interface over dicts, with DynamoDB's conditions, counting writes per item per second.

    A write is counted for every item a transaction names, committed or cancelled (a failed
    condition still consumes a write unit).
    """

    def __init__(self, coupon: dict[str, Any], clock: Callable[[], float]) -> None:
        self.coupon = coupon
        self.clock = clock
        self.shards: dict[int, dict[str, int]] = {}
        self.usage: dict[str, dict[str, Any]] = {}
        self.redemptions: dict[str, dict[str, Any]] = {}
        self.writes: defaultdict[tuple[str, int], int] = defaultdict(int)  # (item, second) -> writes

    def _wrote(self, item: str) -> None:
        self.writes[(item, int(self.clock()))] += 1

    def read(self, code_hashes: Any, user_id: str, **_: Any) -> Any:
        from coupons.adapters.checkout_store import Snapshot

        snapshot = Snapshot(coupon=dict(self.coupon))
        if user_id in self.usage:
            snapshot.usage = dict(self.usage[user_id])
        return snapshot

    def get_redemption(self, rid: str) -> dict[str, Any] | None:
        return self.redemptions.get(rid)

    def init_shards(self, coupon: dict[str, Any], count: int) -> None:
        self._wrote("coupon")
        left = int(coupon["max_uses"]) - int(coupon.get("redeemed_count", 0))
        for index in range(count):
            self._wrote(f"shard-{index}")
            self.shards[index] = {"remaining": left // count + (1 if index < left % count else 0),
                                  "redeemed": int(coupon.get("redeemed_count", 0)) if index == 0 else 0}
        self.coupon["shards"] = {"n": count, "cap": int(coupon["max_uses"])}

    def read_shards(self, coupon_id: str, count: int) -> list[dict[str, Any]]:
        return [{"shard": n, **s} for n, s in self.shards.items()]

    def commit_redemption(self, record: dict[str, Any], *, coupon: dict[str, Any], now: datetime,
                          shard: int | None) -> None:
        from coupons.adapters.checkout_store import Cancelled

        rid = record["redemption_id"]
        user = record["user_id"]
        self._wrote(f"redemption-{rid}")
        self._wrote(f"usage-{user}")
        reasons: list[tuple[str | None, Any]] = [(None, None), (None, None), (None, None)]
        if rid in self.redemptions:
            reasons[0] = ("ConditionalCheckFailed", self.redemptions[rid])
        if shard is None:
            self._wrote("coupon")
            if self.coupon.get("max_uses") is not None and self.coupon["redeemed_count"] >= self.coupon["max_uses"]:
                reasons[1] = ("ConditionalCheckFailed", None)
        else:
            self._wrote(f"shard-{shard}")
            if self.shards[shard]["remaining"] < 1:
                reasons[1] = ("ConditionalCheckFailed", None)
        limit = coupon.get("uses_per_user")
        if limit is not None and self.usage.get(user, {}).get("uses", 0) >= limit:
            reasons[2] = ("ConditionalCheckFailed", dict(self.usage[user]))
        if any(code for code, _ in reasons):
            raise Cancelled(reasons)
        self.redemptions[rid] = dict(record)
        self.usage[user] = {"coupon_id": coupon["coupon_id"], "uses": self.usage.get(user, {}).get("uses", 0) + 1}
        if shard is None:
            self.coupon["redeemed_count"] += 1
        else:
            self.shards[shard]["remaining"] -= 1
            self.shards[shard]["redeemed"] += 1

    def mark_exhausted(self, coupon: dict[str, Any], now: datetime) -> None:
        self._wrote("coupon")
        self.coupon["shards"] = {**self.coupon["shards"], "exhausted_at": int(now.timestamp()),
                                 "exhausted_cap": self.coupon["shards"]["cap"]}

    def add_ip_user(self, **_: Any) -> set[str] | None:
        return None  # every simulated customer has an IP of their own

    def put_flag(self, flag: Any) -> None:
        return None


def hot_coupon(total: int = 100_000, rate: int = 10_000, cap: int = 90_000, shards: int | None = None) -> dict[str, object]:
    """`total` redemptions of one coupon arriving at `rate` per second, through CheckoutService.redeem."""
    from coupons.checkout import CheckoutService
    from coupons.crypto import CodeCipher
    from coupons.errors import RuleViolation
    from coupons.http import Identity
    from coupons.models import RedeemRequest
    from coupons.settings import Settings

    settings = Settings(hot_coupon_shards=shards or Settings().hot_coupon_shards)
    started = datetime(2026, 6, 1, tzinfo=UTC)
    now = [0.0]
    cipher = CodeCipher({1: b"k" * 32}, 1)
    coupon = {"coupon_id": "hot", "code_hash": cipher.blind_index("HOT"), "status": "active",
              "discount_type": "PERCENT", "discount_value": 10, "starts_at": started - timedelta(days=1),
              "expires_at": started + timedelta(days=1), "max_uses": cap, "uses_per_user": 1,
              "redeemed_count": 0, "updated_at": started, "channels": ["web", "mobile", "pos"]}
    store = SimStore(coupon, lambda: now[0])
    service = CheckoutService(store, lambda: cipher, settings,  # type: ignore[arg-type]
                              clock=lambda: started + timedelta(seconds=now[0]), sleep=lambda _: None,
                              rng=random.Random(7))
    admitted = false_exhausted = other = 0
    requests = [RedeemRequest.model_validate({"code": "HOT", "channel": "web", "order": ORDER,
                                              "order_id": f"o{i}"}) for i in range(total)]
    cpu = time.process_time()
    for i, request in enumerate(requests):
        now[0] = i / rate
        who = Identity(user_id=f"u{i}", email=None, groups=frozenset(), ip=f"ip{i}", user_agent="sim")
        try:
            service.redeem(request, who)
            admitted += 1
        except RuleViolation as error:
            if error.code != "COUPON_EXHAUSTED":
                other += 1
            elif sum(s["remaining"] for s in store.shards.values()) > 0:
                false_exhausted += 1
    cpu = time.process_time() - cpu
    hottest = max(store.writes.items(), key=lambda kv: kv[1])
    per_shard = [store.writes.get((f"shard-{n}", s), 0) for n in range(settings.hot_coupon_shards)
                 for s in range(int(total / rate))]
    remaining = sum(s["remaining"] for s in store.shards.values())
    redeemed = sum(s["redeemed"] for s in store.shards.values())
    label = f"hot coupon ({total:,} at {rate:,}/s, cap {cap:,}, {settings.hot_coupon_shards} shards)"
    return {
        f"{label}: max writes/s on any item (goal <= 400)": hottest[1],
        f"{label}: the hottest item": f"{hottest[0][0]} (second {hottest[0][1]})",
        f"{label}: mean writes/s per shard": round(statistics.mean(per_shard), 1),
        f"{label}: admitted": admitted,
        f"{label}: overruns (admitted above the cap)": max(0, admitted - cap),
        f"{label}: false COUPON_EXHAUSTED (a shard still had room)": false_exhausted,
        f"{label}: other refusals": other,
        f"{label}: invariant sum(remaining) + sum(redeemed) == cap": remaining + redeemed == cap,
        f"{label}: simulation CPU per redemption (ms)": round(cpu / total * 1000, 3),
    }


# --- 4. cost per million redemptions -------------------------------------------------------------


def _kb(item: dict[str, Any]) -> int:
    """Size in started KB (attribute names and values, as DynamoDB bills them; JSON is a close upper bound)."""
    return max(1, -(-len(json.dumps(item).encode()) // 1024))


def costs(measured: dict[str, Any]) -> dict[str, object]:
    """Per million checkouts (one validate + one redeem), from the calls counted above and list prices."""
    items = measured["items"]  # REDEMPTION, CODE (the coupon), USAGE: as stored after a redemption
    write_units = sum(2 * _kb(item) for item in items.values())  # transactional: 2 units per KB per item
    # Every index an item appears in is rewritten with it (projection ALL): 1 unit per KB per entry.
    gsi_units = sum(_kb(item) * sum(1 for n in range(1, 5) if f"gsi{n}pk" in item) for item in items.values())
    read = next(p for _, op, p in measured["redemption_params"] if op == "BatchGetItem")
    keys = sum(len(v["Keys"]) for v in read["RequestItems"].values())
    read_units = keys * 0.5  # eventually consistent, each item under 4 KB (a miss costs the same)
    per_redeem = (write_units + gsi_units) * PRICE_WRITE_UNIT + read_units * PRICE_READ_UNIT
    per_validate = read_units * PRICE_READ_UNIT
    duration_s = ((measured["validate_cpu_ms"] + ASSUMED_DYNAMODB_MS)
                  + (measured["redeem_cpu_ms"] + 2 * ASSUMED_DYNAMODB_MS)) / 1000
    lam = 2 * PRICE_LAMBDA_REQUEST + duration_s * LAMBDA_MEMORY_GB * PRICE_LAMBDA_GB_S
    api = 2 * PRICE_API_REQUEST
    million = 1e6
    return {
        "cost: write units per redemption (transaction, 2 per KB per item)": write_units,
        "cost: write units per redemption (index entries, 1 per KB)": gsi_units,
        "cost: read units per validate or redeem read (keys x 0.5)": read_units,
        "cost: DynamoDB per million checkouts (validate + redeem), USD": round((per_redeem + per_validate) * million, 2),
        "cost: Lambda per million checkouts (2 invocations, 512 MB arm64), USD": round(lam * million, 2),
        "cost: API Gateway REST per million checkouts, USD": round(api * million, 2),
        "cost: KMS per million checkouts (0 calls warm), USD": 0.0,
        "cost: what a KMS call per request would add, USD per million": round(2 * PRICE_KMS_REQUEST * million, 2),
        "cost: total per million checkouts, USD": round((per_redeem + per_validate + lam + api) * million, 2),
    }


# --- 5. the local stack at scale -------------------------------------------------------------------


_SCALE_STACK = """
import sys, uuid
from coupons_local.emulator import ACCOUNT_ID, REGION
from coupons_local.stack import LocalStack
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item

stack = LocalStack(0)
stack.start()
table = dynamodb_backends[ACCOUNT_ID][REGION].get_table(stack.provisioned.tables["coupons"])
for i in range(int(sys.argv[1])):  # coupon-shaped items, straight into the emulator's table
    attrs = {"pk": {"S": f"CODE#{uuid.uuid4().hex}"}, "sk": {"S": "COUPON"}, "entity": {"S": "coupon"},
             "coupon_id": {"S": f"filler-{i}"}, "status": {"S": "active"}, "discount_type": {"S": "PERCENT"},
             "discount_value": {"N": "10"}, "redeemed_count": {"N": "0"}, "code_ct": {"S": "x" * 96},
             "gsi1pk": {"S": "STATUS#active"}, "gsi1sk": {"S": f"filler-{i}"}}
    hash_key, range_key = DynamoType(attrs["pk"]), DynamoType(attrs["sk"])
    table.items[hash_key][range_key] = Item(hash_key, range_key, attrs)
stack.write_state()
print("ready:", stack.api_url, flush=True)
stack.stopping.wait()
"""


def redemption_latency_ms(stored: int, samples: int) -> float:
    """Median latency of a redemption over HTTP, on a fresh local stack holding `stored` coupons."""
    import tempfile
    import urllib.request

    from coupons_local import tokens

    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([sys.executable, "-c", _SCALE_STACK, str(stored)], stdout=log,
                                   stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        try:
            deadline = time.monotonic() + 300
            while True:
                log.seek(0)
                lines = [line for line in log.read().splitlines() if line.startswith("ready: ")]
                if lines:
                    api = lines[0].split(" ", 1)[1].strip()
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError("scale stack did not start: " + log.read()[-2000:])
                time.sleep(0.2)

            def post(path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
                request = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(),  # noqa: S310
                                                 method="POST", headers={"Content-Type": "application/json",
                                                                         "Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
                    return dict(json.loads(response.read()))

            code = f"SCALE{uuid.uuid4().hex[:6].upper()}"
            post("/coupons", {"code": code, "discount_value": 10, "uses_per_user": None},
                 tokens.issue("bench-admin", admin=True))
            token = tokens.issue("scale")
            times = []
            for i in range(samples + 3):
                started = time.perf_counter()
                post("/redemptions", {"code": code, "channel": "web", "order": ORDER, "order_id": f"o-{i}"}, token)
                if i >= 3:  # the first ones warm the functions up
                    times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def local_scale(samples: int = 20, small: int = 100, big: int = 100_000) -> dict[str, object]:
    """Redemption latency of the local stack with 100 coupons stored vs 100,000 (moto's transactions)."""
    few = redemption_latency_ms(small, samples)
    many = redemption_latency_ms(big, samples)
    return {
        f"local stack: redemption latency, {small:,} coupons stored (ms, median)": round(few, 1),
        f"local stack: redemption latency, {big:,} coupons stored (ms, median)": round(many, 1),
        "local stack: ratio (goal <= 2)": round(many / few, 2),
    }


def run() -> dict[str, object]:
    from benchmarks.coldstart import compare

    figures: dict[str, object] = {}
    with emulated_aws():
        measured_figures, measured = calls_and_cpu()
        figures.update(measured_figures)
        figures.update(costs(measured))
    figures.update(local_scale())
    figures.update(compare(["validate", "redeem"], runs=5))
    figures.update(hot_coupon())
    figures.update(hot_coupon(total=20_000, cap=18_000, shards=8))  # why 32: 8 shards take ~1,250/s each
    return figures


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<90} {value}")
