"""Two-factor authentication in a real browser (Debian's chromium through Playwright), under
every strategy: sign in, enrol from the dashboard by reading the secret from the page and
typing a code computed with pyotp, sign out, then sign in again with the password and a
code, and once more with "trust this browser" ticked so the next sign-in asks no code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pyotp
import pytest
import time_machine
from helpers import LiveServer

pytestmark = pytest.mark.browser

USER = ("user@example.com", "user-password-123")


def at(page: Any, live: LiveServer, path: str) -> None:
    page.wait_for_url(lambda url: unquote(url) == live(path))


def password_step(page: Any, live: LiveServer) -> None:
    page.goto(live("/auth/signin?redirectUrl=/dashboard"))
    page.get_by_label("Email").fill(USER[0])
    page.get_by_label("Password").fill(USER[1])
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Any, live: LiveServer) -> None:
    page.goto(live("/dashboard"))
    page.get_by_role("button", name="Sign out").first.click()
    page.wait_for_load_state()
    page.goto(live("/dashboard"))
    assert "/auth/signin" in page.url  # signed out: sent to the sign-in page


def test_enrol_then_sign_in_with_a_code(live_server: LiveServer, new_context: Any) -> None:
    live = live_server
    page = new_context().new_page()
    password_step(page, live)
    at(page, live, "/dashboard")

    # Enrol from the dashboard: the secret is read from the page, the code typed in.
    page.get_by_role("link", name="two-factor authentication").first.click()
    at(page, live, "/auth/2fa")
    page.get_by_role("button", name="Set up two-factor authentication").click()
    secret = page.locator("#two-factor-secret").inner_text().strip().replace(" ", "")
    assert page.locator("#two-factor-qr svg").count() == 1  # the QR code, inline
    totp = pyotp.TOTP(secret)
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_load_state()
    assert "recovery" in page.content().lower()
    sign_out(page, live)

    # Thirty seconds later (the enabling code is spent: a code works once), sign in again.
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=30)):
        password_step(page, live)
        page.get_by_label("Code", exact=True).wait_for()
        assert "/auth/signin" in page.url  # no session yet: the code step
        page.get_by_label("Code", exact=True).fill(totp.now())
        page.get_by_role("button", name="Verify").click()
        at(page, live, "/dashboard")
        assert USER[0] in page.content()
        sign_out(page, live)

    # Once more, trusting this browser: the sign-in after that asks no code.
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=60)):
        password_step(page, live)
        page.get_by_label("Code", exact=True).fill(totp.now())
        page.get_by_label("Trust this browser").check()
        page.get_by_role("button", name="Verify").click()
        at(page, live, "/dashboard")
        sign_out(page, live)
        password_step(page, live)
        at(page, live, "/dashboard")
        page.goto(live("/auth/sessions"))
        assert page.locator("[data-trusted-id]").count() == 1
