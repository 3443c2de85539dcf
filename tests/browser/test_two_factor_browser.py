"""Two-factor enrolment in a real browser (Debian's chromium through Playwright), under
every strategy: from the dashboard to the 2FA page, the QR code drawn inline, the secret
read from the page and a code computed from it typed in, the recovery codes shown once."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

import pyotp
import pytest
from helpers import LiveServer

pytestmark = pytest.mark.browser

USER = ("user@example.com", "user-password-123")


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def test_enrol_by_reading_the_secret_from_the_page(
    live_server: LiveServer, new_context: Any
) -> None:
    page = new_context().new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(live_server(f"/auth/signin?redirectUrl={quote('/dashboard')}"))
    page.get_by_label("Email").fill(USER[0])
    page.get_by_label("Password").fill(USER[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: unquote(url) == live_server("/dashboard"))

    page.get_by_role("link", name="Two-factor authentication").click()
    expect()(page.locator("#two-factor-status")).to_contain_text("off")
    page.get_by_role("button", name="Set up two-factor authentication").click()
    qr = page.locator("#two-factor-qr svg")
    expect()(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None and box["width"] > 100  # drawn big enough to scan
    secret = page.locator("#two-factor-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)

    page.get_by_label("Code from the app").fill("000000" if pyotp.TOTP(secret).now() != "000000"
                                                else "111111")
    page.get_by_role("button", name="Turn on").click()
    expect()(page.get_by_role("alert")).to_contain_text("The code is not valid")

    code = pyotp.TOTP(secret).now()
    page.get_by_label("Code from the app").fill(f"{code[:3]} {code[3:]}")
    page.get_by_role("button", name="Turn on").click()
    codes = page.get_by_label("Recovery codes").input_value().split("\n")
    assert len(set(codes)) == 10
    expect()(page.locator("#download-codes")).to_have_attribute(
        "download", "recovery-codes.txt")

    page.get_by_role("link", name="Done").click()
    expect()(page.locator("#two-factor-status")).to_contain_text("on")
    expect()(page.locator("#recovery-codes-left")).to_contain_text("10 recovery codes left")
    # Nothing was fetched from another origin: the QR code is inline.
    assert all(url.startswith(live_server("")) or url.startswith("data:") for url in requests)
