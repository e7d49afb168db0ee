"""Admin function: cold-start cost against bare boto3, AWS calls per admin operation."""

from __future__ import annotations

from benchmarks.coldstart import compare


def run() -> dict[str, object]:
    return compare(["admin"])
