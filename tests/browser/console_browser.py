"""Helpers for the browser tests: Debian's Chromium through Playwright, sign-in, screenshots.

Playwright's own browser download does not work here; the Makefile installs Debian's
`chromium` package and the tests launch that binary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1360, "height": 860}

# Attacker-controlled text that must show up literally and never run.
SCRIPT_PAYLOAD = "<script>window.__pwned=1</script>"
IMG_PAYLOAD = "<img src=x onerror=window.__pwned=1>"
ORDER_PAYLOAD = "<img/src=x/onerror=window.__pwned=1>"  # order ids are printable ASCII without spaces


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class PageErrors:
    """Collects uncaught page errors and console errors, so a broken script fails the test."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.network: list[str] = []  # failed requests and 5xx answers, for the failure message
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("console", self._console)
        page.on("requestfailed", lambda r: self.network.append(f"failed: {r.method} {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 500 and self.network.append(f"{r.status}: {r.url}"))

    def _console(self, message: Any) -> None:
        # 4xx answers the page asked for on purpose show up as "Failed to load resource".
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(f"console: {message.text}")


def open_page(context: Any, url: str) -> tuple[Any, PageErrors]:
    page = context.new_page()
    errors = PageErrors(page)
    page.goto(url)
    try:
        page.wait_for_selector("body[data-ready=true]")
    except Exception as error:
        raise AssertionError(f"{url} did not start: {errors.errors} {errors.network}") from error
    return page, errors


def sign_in(page: Any, token: str) -> None:
    page.fill("#token-input", token)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin", state="hidden")


def screenshot(page: Any, name: str) -> None:
    """Save docs/screenshots/<name>.png, only when UPDATE_SCREENSHOTS=1 (the README shows them)."""
    if os.environ.get("UPDATE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(150)  # let the last paint land
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
