"""Cold-start import cost: a fresh interpreter per sample, so nothing is cached in-process."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BARE = "import boto3; boto3.client('dynamodb')"
_TIMER = """
import time, sys
started = time.perf_counter()
{body}
print((time.perf_counter() - started) * 1000)
"""
_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
    "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
}


def sample_ms(body: str, runs: int = 7) -> float:
    """Median wall time of `body` in a fresh interpreter (the import and client set-up of a cold start)."""
    times = []
    env = {**os.environ, **_ENV}
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _TIMER.format(body=body)], capture_output=True, text=True,
                             check=True, env=env, cwd=ROOT)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def handler_body(function: str) -> str:
    """Import a function's handler module as Lambda would, then build its DynamoDB client."""
    path = ROOT / "functions" / function / "handler.py"
    return (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('handler', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "from coupons.adapters import aws; aws.client('dynamodb')"
    )


def compare(functions: list[str], runs: int = 7) -> dict[str, object]:
    bare = sample_ms(BARE, runs)
    figures: dict[str, object] = {"cold start: bare boto3 + DynamoDB client (ms, median)": round(bare, 1)}
    for function in functions:
        cost = sample_ms(handler_body(function), runs)
        figures[f"cold start: {function} handler import + client (ms, median)"] = round(cost, 1)
        figures[f"cold start: {function} / bare ratio (goal <= 1.3)"] = round(cost / bare, 2)
    return figures
