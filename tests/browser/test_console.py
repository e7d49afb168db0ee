"""The admin console and the checkout demo in a real browser (Debian's Chromium, headless),
against the real local stack: every click goes through the gateway, the functions and moto."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT, LocalStack, unique
from console_browser import (
    IMG_PAYLOAD,
    ORDER_PAYLOAD,
    SCRIPT_PAYLOAD,
    VIEWPORT,
    launch,
    open_page,
    screenshot,
    sign_in,
)
from playwright.sync_api import expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
# Generous waits: the whole suite shares two cores; a passing step returns as soon as it holds.
expect.set_options(timeout=20_000)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CONTRACT_ERROR_CODES = {
    "VALIDATION_ERROR", "UNAUTHENTICATED", "FORBIDDEN", "COUPON_NOT_FOUND", "REDEMPTION_NOT_FOUND", "JOB_NOT_FOUND",
    "CODE_ALREADY_EXISTS", "IDEMPOTENCY_CONFLICT", "COUPON_DISABLED", "COUPON_NOT_YET_ACTIVE", "COUPON_EXPIRED",
    "COUPON_EXHAUSTED", "USER_LIMIT_REACHED", "MIN_ORDER_NOT_MET", "NOT_APPLICABLE", "CHANNEL_NOT_ALLOWED",
    "DOMAIN_NOT_ALLOWED", "CURRENCY_MISMATCH", "RATE_LIMITED", "TRY_AGAIN",
}
BASKET = {"currency": "USD", "items": [
    {"product_id": "trail-shoes", "category": "shoes", "unit_price": 8999, "quantity": 1},
    {"product_id": "merino-socks", "category": "apparel", "unit_price": 1499, "quantity": 2},
]}


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


def shopper(stack: LocalStack) -> tuple[str, str]:
    user = f"shopper-{unique().lower()}"
    return user, stack.token(user, email=f"{user}@example.com")


def open_console(stack: LocalStack, context: Any, *, code: str | None = None) -> tuple[Any, Any]:
    page, errors = open_page(context, f"{stack.url}/console")
    sign_in(page, stack.admin_token)
    expect(page.locator("#coupon-table tbody tr").first).to_be_visible()
    if code:
        page.fill("#filters input[name=code]", code)
        page.click("#filters button[type=submit]")
        expect(page.locator("#coupon-table tbody tr")).to_have_count(1)
        page.click(f"#coupon-table button:text-is('{code}')")
        expect(page.locator("#detail-code")).to_have_text(code)
    return page, errors


def test_pages_are_served_with_a_strict_content_security_policy(stack: LocalStack, context: Any) -> None:
    # Given the console's routes, which need no token
    expected = {
        "/console": "text/html",
        "/console/checkout": "text/html",
        "/console/assets/app.js": "text/javascript",
        "/console/assets/console.js": "text/javascript",
        "/console/assets/checkout.js": "text/javascript",
        "/console/assets/chart.js": "text/javascript",
        "/console/assets/console.css": "text/css",
    }
    for path, content_type in expected.items():
        # When each is fetched
        result = stack.request("GET", path)
        headers = {k.lower(): v for k, v in result.headers.items()}
        # Then it comes with its type and the security headers
        assert result.status == 200, path
        assert headers["content-type"].split(";")[0].strip() == content_type, (path, headers["content-type"])
        assert headers["content-security-policy"] == CSP, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["etag"]
    # An unchanged asset revalidates to 304; unknown names and traversal attempts are 404 envelopes
    etag = {k.lower(): v for k, v in stack.request("GET", "/console/assets/app.js").headers.items()}["etag"]
    assert stack.request("GET", "/console/assets/app.js", headers={"If-None-Match": etag}).status == 304
    for path in ("/console/assets/nope.js", "/console/assets/__init__.py", "/console/assets/..%2F..%2Fhttp.py",
                 "/console/assets/console.html"):
        missing = stack.request("GET", path)
        assert missing.status == 404, path
        assert missing.error_code == "NOT_FOUND", path
    # `coupons-local serve` (make run) prints both URLs
    printed = "".join(stack.output)
    assert f"{stack.url}/console " in printed and f"{stack.url}/console/checkout " in printed
    # The pages are not part of the API document
    paths = stack.request("GET", "/openapi.json").body["paths"]
    assert not [p for p in paths if p.startswith("/console")]

    # And the browser enforces the policy: a script injected at run time does not execute
    page, errors = open_page(context, f"{stack.url}/console")
    blocked = page.evaluate("""() => new Promise((resolve) => {
        document.addEventListener('securitypolicyviolation', (e) => resolve(e.violatedDirective), {once: true});
        const s = document.createElement('script');
        s.textContent = 'window.__inline = 1';
        document.body.append(s);
        setTimeout(() => resolve('no violation'), 2000);
    })""")
    assert blocked.startswith("script-src")
    # Every 4xx (and 503) code of the contract has a sentence for people
    sentences = page.evaluate("""async () => {
        const app = await import('./console/assets/app.js');
        const sentences = {};
        for (const [code, make] of Object.entries(app.ERROR_SENTENCES)) sentences[code] = make({channel: 'pos', retryAfter: 90});
        return sentences;
    }""")
    assert set(sentences) >= CONTRACT_ERROR_CODES
    assert sentences["RATE_LIMITED"] == "Too many attempts. Please wait 2 minutes before trying again."
    assert sentences["CHANNEL_NOT_ALLOWED"] == "This code can't be used in store."

    assert page.evaluate("() => window.__inline") is None
    assert [e for e in errors.errors if "Content Security Policy" not in e] == []


@pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")
def test_concurrent_requests_each_get_their_own_file() -> None:
    """The local gateway serves one function's requests from many threads (a browser loads the
    assets in parallel): each must get its own route arguments, not another request's."""
    import importlib.util
    import sys
    import threading

    from coupons_local import threadsafe

    # Given the console function loaded the way the local stack loads it, thread switches forced often
    threadsafe.install()
    spec = importlib.util.spec_from_file_location("console_fn_race", ROOT / "functions" / "console" / "handler.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = type("Context", (), {"function_name": "console", "memory_limit_in_mb": 256, "aws_request_id": "r",
                                   "invoked_function_arn": "arn:aws:lambda:us-east-1:1:function:console"})()
    wrong: list[str] = []

    def fetch(name: str, content_type: str) -> None:
        event = {"resource": "/console/assets/{name}", "path": f"/console/assets/{name}", "httpMethod": "GET",
                 "headers": {}, "multiValueHeaders": {}, "queryStringParameters": None,
                 "pathParameters": {"name": name}, "body": None, "isBase64Encoded": False,
                 "requestContext": {"resourcePath": "/console/assets/{name}", "httpMethod": "GET",
                                    "requestId": "r", "identity": {"sourceIp": "127.0.0.1"}}}
        for _ in range(250):
            result = module.lambda_handler(event, context)
            served = (result.get("multiValueHeaders") or {}).get("Content-Type", [""])[0]
            if result["statusCode"] != 200 or not served.startswith(content_type):
                wrong.append(f"{name}: {result['statusCode']} {served}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        # When scripts and stylesheets are asked for at the same time
        threads = [threading.Thread(target=fetch, args=pair) for pair in
                   [("app.js", "text/javascript"), ("console.css", "text/css")] * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    # Then every answer is the file that was asked for
    assert wrong == []


def test_admin_creates_a_coupon_a_shopper_redeems_it_and_the_admin_rolls_it_back(
        stack: LocalStack, context: Any) -> None:
    code = unique("UI")
    user, customer = shopper(stack)
    console, console_errors = open_page(context, f"{stack.url}/console")

    # Given a wrong token and a shopper's token, the console says why it will not sign in
    console.fill("#token-input", "not-a-token")
    console.click("#signin-form button[type=submit]")
    expect(console.locator("#signin-error")).to_contain_text("not valid")
    console.fill("#token-input", customer)
    console.click("#signin-form button[type=submit]")
    expect(console.locator("#signin-error")).to_contain_text("not in the coupon-admins group")
    # When an admin signs in
    sign_in(console, stack.admin_token)
    expect(console.locator("#who")).to_contain_text("admin@example.com")
    expect(console.locator("#coupon-table tbody tr").first).to_be_visible()
    console.click("#coupon-table button:text-is('SHOES-20')")
    expect(console.locator("#detail-code")).to_have_text("SHOES-20")
    screenshot(console, "console-coupons")

    # When the admin creates a coupon with a bad value, the API's error shows next to the field
    console.click("#new-coupon")
    form = console.locator("#coupon-form")
    form.locator("input[name=code]").fill(code)
    form.locator("select[name=discount_type]").select_option("FIXED")
    form.locator("input[name=discount_value]").fill("12.5")
    form.locator("button[type=submit]").click()
    expect(form.locator("[data-error-for=discount_value]")).to_contain_text("whole number of minor units")
    expect(form.locator("[data-field=discount_value]")).to_have_class(re.compile("invalid"))
    screenshot(console, "console-validation")
    # And then fixes it: 10% off, 5 uses, a campaign and a note
    form.locator("select[name=discount_type]").select_option("PERCENT")
    form.locator("input[name=discount_value]").fill("10")
    form.locator("input[name=max_uses]").fill("5")
    form.locator("input[name=campaign_id]").fill("browser")
    form.locator("textarea[name=metadata]").fill('{"note": "made in the browser"}')
    form.locator("button[type=submit]").click()
    # Then its details show, unused
    expect(console.locator("#detail-code")).to_have_text(code)
    expect(console.locator("#usage-redeemed")).to_have_text("0")
    expect(console.locator("#usage-remaining")).to_have_text("5")
    expect(console.locator("#detail-metadata")).to_contain_text("made in the browser")
    # And it is listed (by code, and in its campaign)
    console.fill("#filters input[name=campaign_id]", "browser")
    console.click("#filters button[type=submit]")
    expect(console.locator("#coupon-table tbody")).to_contain_text(code)
    console.fill("#filters input[name=campaign_id]", "")
    console.fill("#filters input[name=code]", code.lower())
    console.click("#filters button[type=submit]")
    expect(console.locator("#coupon-table tbody tr")).to_have_count(1)
    expect(console.locator("#coupon-table tbody tr")).to_contain_text("0 / 5")

    # When a shopper validates the code at checkout (typed lower-case, with a dash)
    checkout, checkout_errors = open_page(context, f"{stack.url}/console/checkout")
    sign_in(checkout, customer)
    expect(checkout.locator("#subtotal")).to_have_text("$119.97")
    checkout.fill("#coupon-code", f"{code[:2].lower()}-{code[2:].lower()}")
    checkout.click("#apply-code")
    # Then the discount and the new total show
    expect(checkout.locator("#coupon-message")).to_contain_text("you save $12.00")
    expect(checkout.locator("#discount")).to_have_text("−$12.00")
    expect(checkout.locator("#total")).to_have_text("$107.97")
    screenshot(checkout, "checkout-validated")
    # When the shopper pays
    checkout.click("#pay")
    expect(checkout.locator("#receipt")).to_be_visible()
    expect(checkout.locator("#receipt-status")).to_have_text("redeemed")
    expect(checkout.locator("#receipt-paid")).to_have_text("$107.97")
    redemption_id = checkout.locator("#receipt-redemption").inner_text()
    order_id = checkout.locator("#receipt-order").inner_text()
    assert redemption_id and order_id.startswith("order-")
    # Issue 12: the shopper is offered no "cancel" (rolling back is the shop's call, from the console)
    expect(checkout.locator("#cancel-order")).to_have_count(0)
    expect(checkout.locator("#receipt")).to_contain_text("contact the shop")
    screenshot(checkout, "checkout-paid")
    # Then the console's open coupon follows its counters without a click
    console.click(f"#coupon-table button:text-is('{code}')")
    expect(console.locator("#usage-redeemed")).to_have_text("1")
    expect(console.locator("#usage-remaining")).to_have_text("4")
    expect(console.locator("#usage-utilisation")).to_have_text("20%")
    expect(console.locator("#usage-last")).to_contain_text("UTC")
    row = console.locator(f"#redemptions tr[data-redemption='{redemption_id}']")
    expect(row).to_contain_text(user)
    expect(row).to_contain_text(order_id)
    expect(row).to_contain_text("web")
    expect(row).to_contain_text("$12.00")
    expect(row).to_contain_text("redeemed")
    screenshot(console, "console-coupon")

    # When the admin rolls the redemption back
    row.locator("button", has_text="Roll back").click()
    # Then the use is given back
    expect(row).to_contain_text("rolled back")
    expect(console.locator("#usage-redeemed")).to_have_text("0")
    expect(console.locator("#usage-remaining")).to_have_text("5")

    # When the admin pauses the coupon, checkout says so in a sentence
    console.click("#toggle-coupon")
    expect(console.locator("#detail-status")).to_have_text("paused")
    checkout.fill("#coupon-code", code)
    checkout.click("#apply-code")
    expect(checkout.locator("#coupon-message")).to_have_text("This code is paused at the moment.")
    # And after resuming, it validates again
    console.click("#toggle-coupon")
    expect(console.locator("#detail-status")).to_have_text("active")
    checkout.click("#apply-code")
    expect(checkout.locator("#coupon-message")).to_contain_text("you save")
    # An unknown code gets the contract's answer as a sentence
    checkout.fill("#coupon-code", unique("NOPE"))
    checkout.click("#apply-code")
    expect(checkout.locator("#coupon-message")).to_have_text("We don't recognise this code. Check it and try again.")

    # When the admin edits the coupon: a timestamp without an offset is refused next to its field
    console.click("#edit-coupon")
    form.locator("input[name=expires_at]").fill("2030-01-01T00:00:00")
    form.locator("button[type=submit]").click()
    expect(form.locator("[data-error-for=expires_at]")).to_contain_text("offset")
    # And a valid partial edit changes only what was changed
    form.locator("input[name=expires_at]").fill("2030-01-01T00:00:00Z")
    form.locator("input[name=max_uses]").fill("2")
    form.locator("button[type=submit]").click()
    expect(console.locator("#usage-limit")).to_have_text("2")
    expect(console.locator("#detail-fields")).to_contain_text("2030-01-01 00:00 UTC")
    expect(console.locator("#detail-metadata")).to_contain_text("made in the browser")

    # When the admin deletes it, it is gone from the list and from checkout
    console.click("#delete-coupon")
    console.click("#delete-yes")
    expect(console.locator("#detail-empty")).to_contain_text(f"Deleted {code}")
    console.click("#filters button[type=submit]")
    expect(console.locator("#coupon-table tbody")).to_contain_text("No coupons match")
    checkout.fill("#coupon-code", code)
    checkout.click("#apply-code")
    expect(checkout.locator("#coupon-message")).to_contain_text("don't recognise this code")

    assert console_errors.errors == []
    assert checkout_errors.errors == []


def test_the_coupon_list_filters_and_pages_through_next_cursor(stack: LocalStack, context: Any) -> None:
    # Given six coupons in one campaign, one of them paused
    campaign = f"pages-{unique().lower()}"
    codes = [unique("PG") for _ in range(6)]
    created = [stack.create_coupon(code=code, discount_value=5, campaign_id=campaign) for code in codes]
    assert stack.admin("PUT", f"/coupons/{created[0]['id']}", {"status": "disabled"}).status == 200
    page, errors = open_console(stack, context)
    rows = page.locator("#coupon-table tbody tr")

    # When the admin lists the campaign five at a time
    page.fill("#filters input[name=campaign_id]", campaign)
    page.select_option("#page-size", "5")
    # Then the first page holds five, the next page (through next_cursor) the sixth, and back again
    expect(rows).to_have_count(5)
    expect(page.locator("#prev-page")).to_be_disabled()
    page.click("#next-page")
    expect(rows).to_have_count(1)
    expect(page.locator("#next-page")).to_be_disabled()
    expect(page.locator("#page-info")).to_contain_text("Page 2")
    seen = {page.locator("#coupon-table tbody button.code").inner_text()}
    page.click("#prev-page")
    expect(rows).to_have_count(5)
    seen |= set(page.locator("#coupon-table tbody button.code").all_inner_texts())
    assert seen == set(codes)
    # And filtering by status finds the paused one
    page.select_option("#filters select[name=status]", "disabled")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(codes[0])
    expect(rows).to_contain_text("paused")
    assert errors.errors == []


def test_attacker_controlled_text_is_shown_literally_and_never_runs(stack: LocalStack, context: Any) -> None:
    # Given a coupon whose metadata carries markup, redeemed with an order id that is markup too
    code = unique("XSS")
    stack.create_coupon(code=code, discount_type="PERCENT", discount_value=5, campaign_id="xss",
                        metadata={"note": SCRIPT_PAYLOAD, IMG_PAYLOAD: IMG_PAYLOAD})
    _, customer = shopper(stack)
    redeemed = stack.request("POST", "/redemptions", {"code": code, "channel": "web", "order": BASKET,
                                                       "order_id": ORDER_PAYLOAD}, token=customer)
    assert redeemed.status == 201, redeemed.body

    # When an admin opens it in the console
    page, errors = open_console(stack, context, code=code)
    expect(page.locator(f"#redemptions tr[data-redemption='{redeemed.body['redemption_id']}']")).to_be_visible()

    # Then the markup is shown as text, and nothing of it ran or became an element
    metadata = page.locator("#detail-metadata")
    expect(metadata).to_contain_text(SCRIPT_PAYLOAD)
    expect(metadata.locator("th", has_text=IMG_PAYLOAD)).to_have_count(1)
    expect(metadata.locator("td", has_text=IMG_PAYLOAD)).to_have_count(1)
    expect(page.locator("#redemptions")).to_contain_text(ORDER_PAYLOAD)
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0
    page.wait_for_timeout(300)  # an onerror would have fired by now
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert errors.errors == []


def test_a_generation_job_runs_to_its_export_link(stack: LocalStack, context: Any) -> None:
    campaign = f"gen-{unique().lower()}"
    page, errors = open_console(stack, context)
    page.click("#tabs button[data-tab=generate]")
    form = page.locator("#generate-form")

    # When the admin asks for an impossible pattern, the API's error shows next to the field
    form.locator("input[name=campaign_id]").fill(campaign)
    form.locator("input[name=count]").fill("0")
    form.locator("button[type=submit]").click()
    expect(form.locator("[data-error-for=count]")).not_to_be_empty()

    # When the admin starts a job for 40 codes
    form.locator("input[name=count]").fill("40")
    form.locator("input[name=discount_value]").fill("15")
    form.locator("button[type=submit]").click()
    # Then its progress bar runs to the export link
    expect(page.locator("#job-id")).to_have_text(re.compile(r".+"))
    link = page.locator("#export-link")
    expect(link).to_be_visible(timeout=30_000)
    expect(page.locator("#job-status")).to_have_text("succeeded")
    assert page.evaluate("() => { const p = document.querySelector('#job-progress'); return p.value === p.max; }")
    expect(page.locator("#job-counts")).to_contain_text("40 of 40 processed")
    screenshot(page, "console-generate")
    # And the link serves the 40 codes
    href = link.get_attribute("href")
    assert href and href.startswith("http")
    with urllib.request.urlopen(href, timeout=30) as response:
        rows = [line for line in response.read().decode().splitlines() if line.strip()]
    assert len(rows) == 41  # a header and 40 codes
    assert errors.errors == []


def test_report_summary_with_charts_per_day_and_channel(stack: LocalStack, context: Any) -> None:
    # Given a redemption on the web and one in store today
    code = unique("REP")
    stack.create_coupon(code=code, discount_type="FIXED", discount_value=300, currency="USD", uses_per_user=None)
    _, customer = shopper(stack)
    for channel in ("web", "pos"):
        result = stack.request("POST", "/redemptions", {"code": code, "channel": channel, "order": BASKET,
                                                         "order_id": f"rep-{channel}-{unique()}"}, token=customer)
        assert result.status == 201, result.body

    # When the admin opens the last 7 days of reports
    page, errors = open_console(stack, context)
    page.click("#tabs button[data-tab=reports]")
    page.click("#report-form button[data-range='6']")
    expect(page.locator("#report")).to_be_visible()
    # Then the totals count them, and the charts draw one group per day and a bar per channel
    expect(page.locator("#chart-days svg")).to_be_visible()
    assert int(page.locator("#report-redemptions").inner_text()) >= 2
    expect(page.locator("#chart-days rect.bar[data-series=redemptions]")).to_have_count(7)
    per_day = page.locator("#chart-days rect.bar[data-series=redemptions]")
    assert sum(int(v or "0") for v in per_day.evaluate_all("(bars) => bars.map((b) => b.dataset.value)")) >= 2
    expect(page.locator("#chart-discount rect.bar[data-value]")).to_have_count(7)
    pos_bar = page.locator("#chart-channels rect.bar[data-label=pos]")
    assert int(pos_bar.get_attribute("data-value") or "0") >= 1
    expect(page.locator("#report-channels tbody")).to_contain_text("pos")
    expect(page.locator("#report-discount")).to_contain_text("$")
    # And the suspicious card counts every flag of the range, not the capped list (issue 17)
    first, last = (page.locator(f"#report-form [name={n}]").input_value() for n in ("from", "to"))
    api = stack.admin("GET", f"/reports/summary?from={first}&to={last}").body
    assert int(page.locator("#report-suspicious-count").inner_text()) == api["suspicious_count"]
    screenshot(page, "console-reports")
    assert errors.errors == []
