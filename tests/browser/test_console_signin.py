"""The admin console's sign-in through the admin pool's managed login (issue 17, finding 7), in a
real browser: the authorization code grant with PKCE, against a stand-in for the Cognito domain.

On AWS the console learns the admin pool's domain and client id from `GET /console/signin`
(ADMIN_SIGNIN_URL, ADMIN_CLIENT_ID on the console function). Here a small OAuth server plays the
domain's `/oauth2/authorize`, `/oauth2/token` and `/logout` as Cognito documents them, and checks
what Cognito checks: the client, the redirect URI, a single-use code and the PKCE verifier
(S256). The ID token it hands back is a local admin token, which the local stack accepts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import LocalStack, free_port
from console_browser import VIEWPORT, launch, open_page
from coupons_local import tokens
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
expect.set_options(timeout=20_000)

CLIENT_ID = "admin-console-test"
ADMIN_EMAIL = "ada@example.com"


@dataclass
class ManagedLogin:
    """A stand-in for the admin pool's Cognito domain (authorize, token, logout)."""

    port: int
    redirect_uris: set[str] = field(default_factory=set)
    pending: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> what authorize saw
    token_calls: list[dict[str, str]] = field(default_factory=list)
    logouts: list[dict[str, str]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        handler = {"/oauth2/authorize": self.authorize, "/oauth2/token": self.token,
                   "/logout": self.logout}.get(request.path)
        response = handler(request) if handler else Response("not found", status=404)
        return response(environ, start_response)

    def refuse(self, why: str, status: int = 400) -> Response:
        self.refusals.append(why)
        return Response(json.dumps({"error": "invalid_request", "error_description": why}), status=status,
                        content_type="application/json", headers=self.cors())

    @staticmethod
    def cors() -> dict[str, str]:
        return {"Access-Control-Allow-Origin": "*"}

    def authorize(self, request: Request) -> Response:
        args = request.args
        if args.get("client_id") != CLIENT_ID or args.get("response_type") != "code":
            return self.refuse("client or response type")
        if args.get("redirect_uri") not in self.redirect_uris:
            return self.refuse(f"redirect_uri {args.get('redirect_uri')} is not a callback URL")
        if args.get("code_challenge_method") != "S256" or len(args.get("code_challenge", "")) != 43:
            return self.refuse("PKCE (S256) is required")
        if "openid" not in args.get("scope", "").split():
            return self.refuse("scope openid is required for an ID token")
        # The user signs in (password, then TOTP) on the managed login pages; then Cognito redirects.
        code = secrets.token_urlsafe(24)
        self.pending[code] = {"challenge": args["code_challenge"], "redirect_uri": args["redirect_uri"]}
        query = urllib.parse.urlencode({"code": code, "state": args.get("state", "")})
        return Response(status=302, headers={"Location": f"{args['redirect_uri']}?{query}"})

    def token(self, request: Request) -> Response:
        form = request.form.to_dict()
        self.token_calls.append(form)
        seen = self.pending.pop(form.get("code", ""), None)  # single use
        if form.get("grant_type") != "authorization_code" or form.get("client_id") != CLIENT_ID or seen is None:
            return self.refuse("invalid_grant")
        if form.get("redirect_uri") != seen["redirect_uri"]:
            return self.refuse("redirect_uri differs from the authorize request")
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != seen["challenge"]:
            return self.refuse("code_verifier does not match the code_challenge")
        id_token = tokens.issue("ada", email=ADMIN_EMAIL, admin=True, lifetime=3600)
        body = {"id_token": id_token, "access_token": "opaque-for-this-test", "refresh_token": "r",
                "token_type": "Bearer", "expires_in": 3600}
        return Response(json.dumps(body), content_type="application/json", headers=self.cors())

    def logout(self, request: Request) -> Response:
        self.logouts.append(request.args.to_dict())
        if request.args.get("client_id") != CLIENT_ID or request.args.get("logout_uri") not in self.redirect_uris:
            return self.refuse("logout_uri is not a sign-out URL")
        return Response(status=302, headers={"Location": request.args["logout_uri"]})


@pytest.fixture(scope="module")
def login() -> Iterator[ManagedLogin]:
    server_port = free_port()
    fake = ManagedLogin(server_port)
    server = make_server("127.0.0.1", server_port, fake, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield fake
    server.shutdown()


@pytest.fixture(scope="module")
def console_stack(login: ManagedLogin) -> Iterator[LocalStack]:
    from conftest import start_stack

    running = start_stack({"ADMIN_SIGNIN_URL": login.url, "ADMIN_CLIENT_ID": CLIENT_ID}, seed=False)
    login.redirect_uris.add(f"{running.url}/console")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport=VIEWPORT, timezone_id="UTC", locale="en-US")
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


def test_the_console_serves_its_sign_in_settings_and_allows_only_that_origin(console_stack: LocalStack,
                                                                            login: ManagedLogin) -> None:
    settings = console_stack.request("GET", "/console/signin")
    assert settings.status == 200
    assert settings.body == {
        "authorize_url": f"{login.url}/oauth2/authorize", "token_url": f"{login.url}/oauth2/token",
        "logout_url": f"{login.url}/logout", "client_id": CLIENT_ID, "scope": "openid email profile"}
    headers = {k.lower(): v for k, v in console_stack.request("GET", "/console").headers.items()}
    assert f"connect-src 'self' {login.url};" in headers["content-security-policy"]
    # Not part of the API document
    assert "/console/signin" not in console_stack.request("GET", "/openapi.json").body["paths"]


def test_an_admin_signs_in_with_the_code_grant_and_pkce_and_signs_out(console_stack: LocalStack,
                                                                      login: ManagedLogin, context: Any) -> None:
    # Given the console, with the admin pool's managed login configured
    page, errors = open_page(context, f"{console_stack.url}/console")
    button = page.locator("#signin-managed")
    expect(button).to_be_visible()
    # When the admin signs in there (the stand-in redirects back at once with a code)
    button.click()
    # Then the console trades the code (with its PKCE verifier) for the ID token and is signed in
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#tabs")).to_be_visible()
    expect(page.locator("#who")).to_contain_text(ADMIN_EMAIL)
    assert len(login.token_calls) == 1 and not login.refusals, login.refusals
    assert "code=" not in page.url and "state=" not in page.url  # the code left the address bar
    # And the admin API answers with that token (the list loads)
    expect(page.locator("#coupon-table")).to_be_visible()
    # When the admin signs out, the managed login session ends too, and the console is signed out
    page.click("#sign-out")
    expect(page.locator("#signin-managed")).to_be_visible()
    assert login.logouts and login.logouts[-1]["client_id"] == CLIENT_ID
    assert page.evaluate("() => sessionStorage.getItem('coupons.console.token')") is None
    assert errors.errors == []


def test_a_code_that_was_not_asked_for_here_is_refused_without_a_token_request(console_stack: LocalStack,
                                                                              login: ManagedLogin,
                                                                              context: Any) -> None:
    # Given a link carrying someone's code and a state this tab never issued (login CSRF)
    before = len(login.token_calls)
    page, _ = open_page(context, f"{console_stack.url}/console?code=stolen&state=forged")
    # Then nobody is signed in, the console says why, and the code was never spent
    expect(page.locator("#signin-error")).to_contain_text("did not start here")
    expect(page.locator("#tabs")).to_be_hidden()
    assert len(login.token_calls) == before
    assert "code=" not in page.url


def test_the_sign_in_button_is_hidden_when_no_managed_login_is_configured(stack: LocalStack, context: Any) -> None:
    # The default local stack (paste a token) has no admin pool domain
    assert stack.request("GET", "/console/signin").body == {}
    page, _ = open_page(context, f"{stack.url}/console")
    expect(page.locator("#token-input")).to_be_visible()
    expect(page.locator("#signin-managed")).to_be_hidden()
