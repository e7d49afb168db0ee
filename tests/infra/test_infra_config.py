"""The CDK app's pure parts (context parsing, layer build, pins) and its generation from resources.py."""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from coupons_infra import resources as r
from coupons_infra.constructs.config import StackConfig, seed_environment
from coupons_infra.constructs.functions import (
    PLATFORMS,
    PipLayerBundling,
    parse_bucket_mode,
    prune_runtime_packages,
    retention,
)
from packaging.requirements import Requirement

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("infra")]

ROOT = Path(__file__).resolve().parents[2]


def test_layer_requirements_are_pinned_inside_pyproject_ranges() -> None:
    # Given pyproject's runtime dependencies and the layer's pins
    declared = {Requirement(d).name: Requirement(d) for d in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    pins = [Requirement(line) for line in r.DEPS_REQUIREMENTS.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    # Then every pin is exact and allowed by pyproject, and nothing the functions import is missing
    assert {p.name for p in pins} == set(declared) - {"boto3"}  # boto3 comes with the Lambda runtime
    for pin in pins:
        [spec] = list(pin.specifier)
        assert spec.operator == "==", pin
        assert declared[pin.name].specifier.contains(spec.version), (pin, declared[pin.name])
        assert pin.extras == declared[pin.name].extras


def test_layer_is_built_by_pip_for_cp313_manylinux_aarch64_without_docker(tmp_path: Path) -> None:
    command = PipLayerBundling(r.DEPS_REQUIREMENTS).command(tmp_path / "python")
    joined = " ".join(command)
    assert command[1:4] == ["-m", "pip", "install"]
    assert "--only-binary=:all:" in command
    assert "--python-version 3.13" in joined and "--implementation cp" in joined
    assert "--platform manylinux2014_aarch64" in joined
    assert all(f"--platform {p}" in joined for p in PLATFORMS)
    assert f"-r {r.DEPS_REQUIREMENTS}" in joined and f"-t {tmp_path / 'python'}" in joined
    assert "docker" not in joined.lower()


def test_runtime_provided_packages_are_pruned_from_the_layer(tmp_path: Path) -> None:
    for name in ("botocore", "boto3", "s3transfer", "pydantic", "bin"):
        (tmp_path / name).mkdir()
    for name in ("botocore-1.44.8.dist-info", "pydantic-2.14.4.dist-info"):
        (tmp_path / name).mkdir()
    (tmp_path / "six.py").write_text("")
    removed = prune_runtime_packages(tmp_path)
    assert set(removed) == {"botocore", "boto3", "s3transfer", "bin", "botocore-1.44.8.dist-info"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pydantic", "pydantic-2.14.4.dist-info", "six.py"]


def test_context_from_the_command_line_is_coerced() -> None:
    # Given context as `cdk -c key=value` passes it: strings
    context = {
        "default_expiration_days": "45", "allowed_domains": '["a.com", "b.org"]', "discount_type": "FIXED",
        "web_origins": "https://a.example,https://b.example", "require_api_keys": "true",
        "waf_rate_limit": "500", "channel_limits": json.dumps({"pos": [10, 20, 1000]}),
        "termination_protection": "false", "log_retention_days": "30",
    }
    config = StackConfig.from_context(context)
    assert config.seed_environment == {"DEFAULT_EXPIRATION_DAYS": "45", "ALLOWED_DOMAINS": "a.com,b.org",
                                       "DEFAULT_DISCOUNT_TYPE": "FIXED"}
    assert config.web_origins == ("https://a.example", "https://b.example")
    assert config.require_api_keys is True and config.termination_protection is False
    assert config.waf_rate_limit == 500 and config.log_retention_days == 30
    assert config.channel_limits["pos"] == (10, 20, 1000)
    assert config.channel_limits["web"] == StackConfig().channel_limits["web"]


def test_seed_options_from_cdk_json_types_become_env_strings() -> None:
    context = {"coupon_id_format": "alphanumeric", "default_expiration_days": 30, "max_discount_per_user": 1,
               "discount_type": "PERCENT", "allowed_domains": [], "failed_attempt_window_seconds": 60}
    assert seed_environment(context.get) == {
        "COUPON_ID_FORMAT": "alphanumeric", "DEFAULT_EXPIRATION_DAYS": "30", "MAX_DISCOUNT_PER_USER": "1",
        "DEFAULT_DISCOUNT_TYPE": "PERCENT", "ALLOWED_DOMAINS": "", "FAILED_ATTEMPT_WINDOW_SECONDS": "60"}


def test_the_code_key_version_comes_from_context_and_is_checked() -> None:
    # Given an operator rotating the code key: `cdk deploy -c code_key_version=2` (a string) or cdk.json (an int)
    for given in ("2", 2, " 2 "):
        config = StackConfig.from_context({"code_key_version": given})
        # Then every function's environment carries it, as the settings model reads it
        assert config.code_key_version == 2
        assert config.seed_environment == {"CODE_KEY_VERSION": "2"}
    assert StackConfig.from_context({}).code_key_version == 1  # unset: the settings' default, version 1
    assert "CODE_KEY_VERSION" not in StackConfig.from_context({}).seed_environment
    # And the local stack reads the same variable from the environment of `coupons-local serve`
    from coupons_local.stack import CONFIG_VARS

    assert "CODE_KEY_VERSION" in CONFIG_VARS
    # Anything but a whole number from 1 fails the synth, naming the key
    for bad in ("0", "-1", "two", "1.5", True, 0):
        with pytest.raises(ValueError, match="code_key_version"):
            StackConfig.from_context({"code_key_version": bad})


def test_bad_context_is_refused_at_synth_time() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        StackConfig.from_context({"channel_limits": {"kiosk": [1, 1, 1]}})
    with pytest.raises(ValueError, match="log_retention_days=42"):
        retention(42)


def test_bucket_grant_modes_carry_an_optional_prefix() -> None:
    assert parse_bucket_mode("read") == ("read", "")
    assert parse_bucket_mode("put:results/") == ("put", "results/")
    assert parse_bucket_mode("readwrite:work/a/") == ("readwrite", "work/a/")


@pytest.fixture
def extra_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> r.Function:
    """A Function nobody wrote CDK for: a route, a schedule, a queue and grants, in resources.py."""
    functions_dir = tmp_path / "functions"
    shutil.copytree(r.FUNCTIONS_DIR, functions_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (functions_dir / "newcomer").mkdir()
    (functions_dir / "newcomer" / "handler.py").write_text("def lambda_handler(event, context):\n    return {}\n")
    monkeypatch.setattr(r, "FUNCTIONS_DIR", functions_dir)
    queue = r.Queue("newcomer", "NEWCOMER_QUEUE_URL", "coupons-newcomer", max_receive_count=3)
    monkeypatch.setattr(r, "QUEUES", (*r.QUEUES, queue))
    spec = r.Function(
        name="newcomer", description="Added by another engineer",
        routes=(r.Route("GET", "/newcomers/{newcomer_id}"),),
        grants=(("table", "jobs", "read"), ("bucket", "reports", "put:newcomers/"), ("queue", "newcomer", "send")),
        schedule=r.Schedule("newcomer-tick", "15 3 * * ? *", 60, "Nightly newcomer job"),
        queue="newcomer", memory_mb=768, timeout_seconds=42,
    )
    monkeypatch.setattr(r, "FUNCTIONS", (*r.FUNCTIONS, spec))
    return spec


def _stack() -> Any:
    """The stack, constructed but not synthesised (synthesis is test_stack.py's, once)."""
    from coupons_infra.stack import CouponsStack, build_app

    app = build_app(context={"aws:cdk:bundling-stacks": []}, nag=False)
    return next(c for c in app.node.children if isinstance(c, CouponsStack))


def test_a_function_added_to_resources_is_provisioned_with_no_cdk_edit(extra_function: r.Function) -> None:
    # Given a new Function entry (with a route, schedule, queue and grants), When the stack is built
    stack = _stack()
    resolve = stack.resolve
    # Then it is a Lambda with its memory and timeout, on arm64...
    function = stack.functions.functions["newcomer"].node.default_child
    assert (resolve(function.memory_size), resolve(function.timeout)) == (768, 42)
    assert resolve(function.architectures) == ["arm64"]
    # ...its route is a method behind the token authorizer (issue 12: CUSTOM, was the Cognito authorizer)...
    method = stack.api.methods["GET /newcomers/{newcomer_id}"].node.default_child
    assert resolve(method.authorization_type) == "CUSTOM"
    assert resolve(method.authorizer_id) == {"Ref": resolve(stack.api.authorizer.node.default_child.logical_id)}
    # ...its schedule a cron rule, its queue a queue with a DLQ and an event source...
    rule = stack.jobs.rules["newcomer-tick"].node.default_child
    assert resolve(rule.schedule_expression) == "cron(15 3 * * ? *)"
    queue = stack.messaging.queues["newcomer"].node.default_child
    assert resolve(queue.redrive_policy)["maxReceiveCount"] == 3
    mappings = [c for c in stack.functions.functions["newcomer"].node.find_all()
                if c.node.id.startswith("SqsEventSource")]
    assert mappings
    # ...its grants are statements on its role, and its queue URL reaches every function.
    policy = json.dumps(resolve(stack.functions.roles["newcomer"].node.find_child("DefaultPolicy")
                                .node.default_child.policy_document))
    assert "newcomers/*" in policy and "sqs:SendMessage" in policy and "dynamodb:Query" in policy
    assert "NEWCOMER_QUEUE_URL" in stack.functions.environment  # the one environment all functions get


def test_an_unknown_grant_fails_the_synth_naming_the_function(extra_function: r.Function,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    broken = replace(extra_function, grants=(("table", "nope", "read"),))
    monkeypatch.setattr(r, "FUNCTIONS", (*r.FUNCTIONS[:-1], broken))
    with pytest.raises(ValueError, match="function newcomer: unknown table grant"):
        _stack()


# -- issue 17: reserved concurrency (8c), upload expiry (8e), admin console URLs (7) ---------------

def test_reserved_concurrency_comes_from_context_with_checkout_defaults() -> None:
    assert StackConfig().reserved_concurrency == {"validate": 100, "redeem": 200}
    config = StackConfig.from_context({"reserved_concurrency": '{"validate": 50, "redeem": 0}',
                                       "account_concurrency_limit": "3000"})
    assert config.reserved_concurrency == {"validate": 50}  # 0 (or null) turns a reservation off
    assert config.account_concurrency_limit == 3000
    assert StackConfig.from_context({"reserved_concurrency": {}}).reserved_concurrency == {"validate": 100, "redeem": 200}
    assert StackConfig.from_context({"reserved_concurrency": {"redeem": 300}}).reserved_concurrency == {
        "validate": 100, "redeem": 300}  # per function: the others keep their defaults


def test_reserved_concurrency_must_leave_the_account_its_unreserved_minimum() -> None:
    # Lambda refuses a reservation that leaves fewer than 100 unreserved executions in the account.
    with pytest.raises(ValueError, match="leaves 99 unreserved"):
        StackConfig.from_context({"reserved_concurrency": {"validate": 401, "redeem": 500}})
    with pytest.raises(ValueError, match="leaves 0 unreserved"):
        StackConfig.from_context({"reserved_concurrency": {"validate": 5, "redeem": 5},
                                  "account_concurrency_limit": 10})
    with pytest.raises(ValueError, match="unknown function 'nope'"):
        StackConfig.from_context({"reserved_concurrency": {"nope": 5}})
    with pytest.raises(ValueError, match="reserved_concurrency"):
        StackConfig.from_context({"reserved_concurrency": {"validate": -1}})


def test_upload_expiry_is_configurable_per_bucket_and_prefix() -> None:
    imports = next(b for b in r.BUCKETS if b.key == "imports")
    assert ("incoming/", 7) in imports.expire_after_days and ("results/", 30) in imports.expire_after_days
    config = StackConfig.from_context({"expire_after_days": '{"imports": {"incoming/": 2}}'})
    assert config.expiry_days(imports) == {"work/": 7, "incoming/": 2, "results/": 30}
    assert StackConfig().expiry_days(imports) == dict(imports.expire_after_days)
    with pytest.raises(ValueError, match="expire_after_days"):
        StackConfig.from_context({"expire_after_days": {"imports": {"incoming/": 0}}})
    with pytest.raises(ValueError, match="unknown bucket"):
        StackConfig.from_context({"expire_after_days": {"nope": {"x/": 1}}})


def test_admin_console_urls_from_context() -> None:
    assert StackConfig().admin_callback_urls == ()
    config = StackConfig.from_context({"admin_callback_urls": "https://admin.example.com/console"})
    assert config.admin_callback_urls == ("https://admin.example.com/console",)
    assert StackConfig.from_context({"admin_domain_prefix": "shop-admins"}).admin_domain_prefix == "shop-admins"
