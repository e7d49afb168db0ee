"""The README's walkthrough works verbatim against a fresh local stack."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def walkthrough_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"<!-- walkthrough -->\n```sh\n(.*?)```", text, flags=re.S)


def test_the_readme_walkthrough_runs_verbatim(make_stack: Any) -> None:
    blocks = walkthrough_blocks()
    assert blocks, "the README lost its walkthrough"
    stack = make_stack()
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("127.0.0.1:3000", f"127.0.0.1:{stack.port}")
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    assert '"code":"SUMMER-25"' in out.replace(" ", "")
    assert '"status":"disabled"' in out.replace(" ", "")
    assert "VALIDATION_ERROR" in out and "FORBIDDEN" in out
    assert re.search(r"\b204\n", out)
    assert out.rstrip().endswith("}") and "COUPON_NOT_FOUND" in out.splitlines()[-1]
