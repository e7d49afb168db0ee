"""The admin console and the checkout demo: static pages served by the API itself.

No build step and nothing from a CDN: the files in this package are the whole UI. Every
page renders data through DOM APIs (`textContent`, `createElement`), never through HTML
strings, and is served with a Content-Security-Policy that allows only this origin's
scripts and styles (coupons/routes/console.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

PAGES = {"console": "console.html", "checkout": "checkout.html"}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The files `GET /console/assets/{name}` may serve: an allow-list, so no name can reach anything else.
ASSETS = ("app.js", "console.js", "checkout.js", "chart.js", "managed_login.js", "console.css")


@dataclass(frozen=True)
class StaticFile:
    name: str
    body: str
    content_type: str
    etag: str


@lru_cache(maxsize=16)
def _load(name: str) -> StaticFile:
    body = (resources.files(__name__) / name).read_text(encoding="utf-8")
    suffix = name[name.rfind("."):]
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    return StaticFile(name, body, CONTENT_TYPES[suffix], etag)


def page(name: str) -> StaticFile:
    return _load(PAGES[name])


def asset(name: str) -> StaticFile | None:
    """The asset of that exact name, or None for any other name."""
    return _load(name) if name in ASSETS else None
