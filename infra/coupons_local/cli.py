"""`coupons-local`: serve the whole service locally, hand out tokens, describe and drive a stack."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

from . import tokens
from .stack import LocalStack, state_file


def _serve(args: argparse.Namespace) -> int:
    stack = LocalStack(args.port, host=args.host)
    stack.start()
    from .seed import seed

    admin = tokens.issue("demo-admin", email="admin@example.com", admin=True)
    if not args.no_seed:
        seed(stack.api_url, admin)
    stack.write_state()

    def _stop(*_: Any) -> None:
        stack.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    customer = tokens.issue("demo-customer", email="shopper@example.com")
    print(f"ready: {stack.api_url}", flush=True)
    print(_try_it(stack.api_url, admin, customer), flush=True)
    stack.stopping.wait()
    return 0


def _try_it(url: str, admin: str, customer: str) -> str:
    return f"""
Try it (tokens are valid for 7 days; make more with: .venv/bin/coupons-local token --user alice [--admin],
a server's with: .venv/bin/coupons-local token --client shop-backend [--scope coupons/checkout]):

  export API={url}
  export ADMIN={admin}
  export TOKEN={customer}

  curl -s $API/coupons -H "Authorization: Bearer $ADMIN"
  curl -s -X POST $API/coupons -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \\
       -d '{{"code": "SUMMER-25", "discount_type": "PERCENT", "discount_value": 25, "max_uses": 100}}'
  curl -s -X POST $API/coupons/validate -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"code": "welcome10", "channel": "web", "order": {{"currency": "USD", "items": [{{"product_id": "p1", "category": "shoes", "unit_price": 4999, "quantity": 1}}]}}}}'
  curl -s $API/openapi.json

Admin console:  {url}/console            (sign in with the $ADMIN token above)
Checkout demo:  {url}/console/checkout   (sign in with the $TOKEN token above)

Demo codes: WELCOME10, SAVE5, SHOES-20, POS-ONLY, STAFF30 (example.com emails only).
Stop with Ctrl-C.""".rstrip()


def _token(args: argparse.Namespace) -> int:
    if args.client is not None:
        if args.email or args.admin or args.email_unverified:
            raise SystemExit("--client makes a server's access token: --email, --email-unverified and --admin "
                             "are for people (--user)")
        print(tokens.issue_access(args.client, scopes=args.scope or [tokens.DEFAULT_SCOPE]))
        return 0
    if args.scope:
        raise SystemExit("--scope is for servers' tokens (--client)")
    for user in args.user:
        print(tokens.issue(user, email=args.email, admin=args.admin, email_verified=not args.email_unverified))
    return 0


def _state(port: int) -> dict[str, Any]:
    path = state_file(port)
    if not path.exists():
        raise SystemExit(f"no local stack is serving on port {port} (start one with: coupons-local serve)")
    state: dict[str, Any] = json.loads(path.read_text())
    pid = state.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            raise SystemExit(f"no local stack is serving on port {port} (its process is gone)") from None
    return state


def _info(args: argparse.Namespace) -> int:
    state = _state(args.port)
    keys = ("api_url", "aws_endpoint", "region", "tables", "buckets", "queues", "event_queue_url", "event_archive_url",
            "kms_key_id")
    print(json.dumps({k: state[k] for k in keys if k in state}, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    state = _state(args.port)
    payload: dict[str, Any] = {}
    if getattr(args, "date", None):
        payload["date"] = args.date
    if getattr(args, "max_seconds", None):
        payload["max_seconds"] = args.max_seconds
    request = urllib.request.Request(
        f"{state['api_url']}/_local/run/{args.job}", data=json.dumps(payload).encode(), method="POST",
        headers={"X-Local-Control": state["control_secret"], "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        print(error.read().decode(), file=sys.stderr)
        return 1
    try:
        failed = isinstance(json.loads(text), dict) and "error" in json.loads(text)
    except ValueError:
        failed = False
    print(text, file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coupons-local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the whole service on this machine")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--no-seed", action="store_true", help="start without the demo coupons")
    serve.set_defaults(func=_serve)

    token = commands.add_parser("token", help="print a bearer token any local stack of this checkout accepts")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", action="append", help="a person's ID token (repeat for one token per user)")
    who.add_argument("--client", help="a server's access token (client credentials), e.g. shop-backend")
    token.add_argument("--scope", action="append", choices=tokens.SCOPES,
                       help=f"a server token's scope (repeatable; default {tokens.DEFAULT_SCOPE})")
    token.add_argument("--email")
    token.add_argument("--email-unverified", action="store_true",
                       help="the email is not verified (the service then ignores it, as on Cognito)")
    token.add_argument("--admin", action="store_true")
    token.set_defaults(func=_token)

    info = commands.add_parser("info", help="describe the stack serving on a port")
    info.add_argument("--port", type=int, default=3000)
    info.set_defaults(func=_info)

    run = commands.add_parser("run", help="run a scheduled job now")
    jobs = run.add_subparsers(dest="job", required=True)
    sweep = jobs.add_parser("expiry-sweep")
    sweep.add_argument("--port", type=int, default=3000)
    report = jobs.add_parser("daily-report")
    report.add_argument("--date", help="YYYY-MM-DD (default: yesterday, UTC)")
    report.add_argument("--port", type=int, default=3000)
    replay = jobs.add_parser("replay-events", help="put the undelivered-events queue back on the bus")
    replay.add_argument("--max-seconds", type=float, help="stop after this long (default: the function's timeout)")
    replay.add_argument("--port", type=int, default=3000)
    run.set_defaults(func=_run)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
