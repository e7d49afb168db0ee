"""`make smoke` must never print the bearer token it is given (issue 11, 10d)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "secret-value-0f3c9a"
STAMP = ".venv/.installed"  # `-o`: never rebuild the venv for these runs


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-o", STAMP, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_a_dry_run_of_smoke_does_not_show_the_token() -> None:
    done = make("-n", "smoke", "API_URL=https://api.example", f"TOKEN={SECRET}")
    assert done.returncode == 0, done.stderr
    assert "pytest" in done.stdout and "tests/smoke" in done.stdout  # the recipe was shown
    assert SECRET not in done.stdout + done.stderr


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A `python` that reports whether it received the API URL and token, without printing the token."""
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'[ "$COUPONS_TOKEN" = "{SECRET}" ] && echo token-received || echo token-missing\n'
        'echo "url=$COUPONS_API_URL args=$*"\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return tmp_path


@pytest.mark.parametrize("via", ["command line", "environment"])
def test_smoke_passes_the_token_to_the_tests_without_printing_it(fake_bin: Path, via: str) -> None:
    args = ["smoke", "API_URL=https://api.example", f"BIN={fake_bin}"]
    if via == "command line":
        done = make(*args, f"TOKEN={SECRET}")
    else:
        done = make(*args, env={"TOKEN": SECRET})
    assert done.returncode == 0, done.stderr
    assert "token-received" in done.stdout and "url=https://api.example" in done.stdout
    assert "-m pytest -q tests/smoke" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_smoke_without_a_token_says_how_to_call_it(fake_bin: Path) -> None:
    done = make("smoke", "API_URL=https://api.example", f"BIN={fake_bin}", env={"TOKEN": ""})
    assert done.returncode != 0
    assert "usage: make smoke" in done.stdout + done.stderr
