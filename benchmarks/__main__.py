"""Runs every `benchmarks/bench_*.py` module (or those named on the command line) and prints its figures.

Each module exposes `run() -> dict[str, object]`: a flat mapping of figure name to value.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    results = {}
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        figures = module.run()
        for key, value in figures.items():
            print(f"   {key:<60} {value}", flush=True)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
        results[name] = figures
    out = here.parent / ".bench-results.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nall figures also written to {out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
