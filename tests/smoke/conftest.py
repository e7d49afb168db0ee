"""Collected only when COUPONS_API_URL names a deployed API: `make test` never runs these.

They are ignored (not skipped) without it, so the local suite neither reaches the network
nor reports skips.
"""

from __future__ import annotations

import os

collect_ignore = [] if os.environ.get("COUPONS_API_URL") else ["test_smoke.py"]
