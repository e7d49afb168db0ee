"""What the stack reads from CDK context (cdk.json, or `-c key=value` on the command line).

Every knob has a production default, so `make synth` works with an empty context. Values given
on the command line arrive as strings; they are coerced here, in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import resources as r

CHANNELS = ("web", "mobile", "pos")


def _text(value: Any) -> str:
    if isinstance(value, str) and value.strip().startswith("["):  # a list given on the command line
        value = json.loads(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _as_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return tuple(str(v) for v in json.loads(text))
        return tuple(v.strip() for v in text.split(",") if v.strip())
    return tuple(str(v) for v in value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def seed_environment(get: Callable[[str], Any]) -> dict[str, str]:
    """The seed options (and abuse-defence settings) present in context, as function env vars."""
    env = {}
    for key, name in r.SEED_OPTIONS.items():
        value = get(key)
        if value is not None:
            env[name] = _text(value)
    return env


def _as_mapping(value: Any, key: str) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}: expected a JSON object, got {value!r}")
    return dict(value)


# Lambda keeps at least this many of an account's concurrent executions unreserved.
UNRESERVED_MINIMUM = 100


def _key_version(value: Any) -> int:
    """The code key version (CODE_KEY_VERSION): a whole number from 1; anything else fails the synth."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"code_key_version={value!r}: expected a whole number from 1 (the active code key version)")
    return int(text)


@dataclass(frozen=True)
class StackConfig:
    seed_environment: dict[str, str] = field(default_factory=dict)
    code_key_version: int = 1  # also in seed_environment (CODE_KEY_VERSION) when set in context
    name_prefix: str = "coupons"  # physical names: buckets, bus, alias, API
    stage_name: str = "v1"
    web_origins: tuple[str, ...] = ("https://shop.example.com",)
    throttle_rate: int = 1000  # stage-wide steady requests/s
    throttle_burst: int = 2000
    # Per channel client usage plan: (requests/s, burst, requests/day).
    channel_limits: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {
        "web": (500, 1000, 5_000_000), "mobile": (500, 1000, 5_000_000), "pos": (200, 400, 2_000_000)})
    require_api_keys: bool = False  # API keys enforce the channel usage plans (off: the contract's
    # clients send only a bearer token)
    waf_rate_limit: int = 2000  # requests per IP per 5 minutes
    log_retention_days: int = 90
    alarm_email: str | None = None
    lockout_alarm_threshold: int = 50  # lockouts per 5 minutes that page a person
    api_5xx_alarm_rate: float = 0.01  # fraction of requests
    cognito_threat_protection: bool = False  # Cognito Plus plan, billed per monthly active user
    termination_protection: bool = True
    # Issue 17, 8c: concurrent executions reserved for (and capping) the checkout functions, so a
    # guessing flood on one or a bulk run elsewhere cannot take the capacity redemptions need.
    # Defaults: resources.Function.reserved_concurrency; context {"name": n} overrides, 0 removes.
    reserved_concurrency: dict[str, int] = field(default_factory=lambda: {
        f.name: f.reserved_concurrency for f in r.FUNCTIONS if f.reserved_concurrency})
    account_concurrency_limit: int = 1000  # the account's Lambda quota in the region (the default one)
    # Issue 17, 8e: {bucket key: {prefix: days}} over resources.Bucket.expire_after_days.
    expire_after_days: dict[str, dict[str, int]] = field(default_factory=dict)
    # Issue 17, 7: the admin console's sign-in (the admin pool's managed login). The console's own
    # URL on the API is always a callback; add others (a custom domain) here.
    admin_callback_urls: tuple[str, ...] = ()
    admin_domain_prefix: str | None = None  # default <name_prefix>-admin-<account id>

    def __post_init__(self) -> None:
        names = {f.name for f in r.FUNCTIONS}
        for name, count in self.reserved_concurrency.items():
            if name not in names:
                raise ValueError(f"reserved_concurrency: unknown function {name!r}")
            if count < 1:
                raise ValueError(f"reserved_concurrency: {name} must be at least 1 (leave it out for none)")
        left = self.account_concurrency_limit - sum(self.reserved_concurrency.values())
        if left < UNRESERVED_MINIMUM:
            raise ValueError(
                f"reserved_concurrency {self.reserved_concurrency} leaves {left} unreserved of the account's "
                f"{self.account_concurrency_limit} (account_concurrency_limit); Lambda keeps at least "
                f"{UNRESERVED_MINIMUM} unreserved")
        buckets = {b.key for b in r.BUCKETS}
        for bucket, prefixes in self.expire_after_days.items():
            if bucket not in buckets:
                raise ValueError(f"expire_after_days: unknown bucket {bucket!r} (expected one of {sorted(buckets)})")
            for prefix, days in prefixes.items():
                if days < 1:
                    raise ValueError(f"expire_after_days: {bucket} {prefix!r} must be at least 1 day")

    def expiry_days(self, bucket: r.Bucket) -> dict[str, int]:
        """Lifecycle expiry per prefix of this bucket: resources.py's, then the context's."""
        return {**dict(bucket.expire_after_days), **self.expire_after_days.get(bucket.key, {})}

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | Callable[[str], Any]) -> StackConfig:
        get: Callable[[str], Any] = context.get if isinstance(context, Mapping) else context
        defaults = cls()

        def pick(key: str, default: Any, convert: Callable[[Any], Any]) -> Any:
            value = get(key)
            return default if value is None else convert(value)

        limits = get("channel_limits")
        if isinstance(limits, str):
            limits = json.loads(limits)
        channel_limits = dict(defaults.channel_limits)
        for channel, triple in (limits or {}).items():
            if channel not in CHANNELS:
                raise ValueError(f"channel_limits: unknown channel {channel!r} (expected {CHANNELS})")
            channel_limits[channel] = (int(triple[0]), int(triple[1]), int(triple[2]))
        alarm_email = get("alarm_email")
        reserved = get("reserved_concurrency")
        reserved_concurrency = dict(defaults.reserved_concurrency)
        for name, count in _as_mapping(reserved if reserved is not None else {}, "reserved_concurrency").items():
            if count in (None, 0, "0", ""):  # 0 or null: no reservation for that function
                reserved_concurrency.pop(name, None)
            else:
                reserved_concurrency[name] = int(count)
        expiry = get("expire_after_days")
        expire_after_days = {
            bucket: {str(prefix): int(days) for prefix, days in _as_mapping(prefixes, f"expire_after_days.{bucket}").items()}
            for bucket, prefixes in _as_mapping(expiry, "expire_after_days").items()} if expiry is not None else {}
        domain_prefix = get("admin_domain_prefix")
        environment = seed_environment(get)
        key_version = pick("code_key_version", defaults.code_key_version, _key_version)
        if get("code_key_version") is not None:
            environment[r.SEED_OPTIONS["code_key_version"]] = str(key_version)
        return cls(
            seed_environment=environment,
            code_key_version=key_version,
            name_prefix=pick("name_prefix", defaults.name_prefix, str),
            stage_name=pick("stage_name", defaults.stage_name, str),
            web_origins=pick("web_origins", defaults.web_origins, _as_list),
            throttle_rate=pick("throttle_rate", defaults.throttle_rate, int),
            throttle_burst=pick("throttle_burst", defaults.throttle_burst, int),
            channel_limits=channel_limits,
            require_api_keys=pick("require_api_keys", defaults.require_api_keys, _as_bool),
            waf_rate_limit=pick("waf_rate_limit", defaults.waf_rate_limit, int),
            log_retention_days=pick("log_retention_days", defaults.log_retention_days, int),
            alarm_email=str(alarm_email) if alarm_email else None,
            lockout_alarm_threshold=pick("lockout_alarm_threshold", defaults.lockout_alarm_threshold, int),
            api_5xx_alarm_rate=pick("api_5xx_alarm_rate", defaults.api_5xx_alarm_rate, float),
            cognito_threat_protection=pick("cognito_threat_protection", defaults.cognito_threat_protection,
                                           _as_bool),
            termination_protection=pick("termination_protection", defaults.termination_protection, _as_bool),
            reserved_concurrency=reserved_concurrency,
            account_concurrency_limit=pick("account_concurrency_limit", defaults.account_concurrency_limit, int),
            expire_after_days=expire_after_days,
            admin_callback_urls=pick("admin_callback_urls", defaults.admin_callback_urls, _as_list),
            admin_domain_prefix=str(domain_prefix) if domain_prefix else None,
        )
