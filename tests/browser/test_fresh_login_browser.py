"""Fresh sign-in in a real browser (Debian's chromium through Playwright), under every
strategy: the example's danger zone, reached from the dashboard, asks for the password
again once the sign-in is older than ``GUARDIAN_FRESH_WITHIN``, refuses a wrong one on the
same form, and comes back to the danger zone after the right one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import pytest
import time_machine
from helpers import LiveServer

from flask_guardian.state import get_state

pytestmark = pytest.mark.browser

ADMIN = ("admin@example.com", "admin-password-123")


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def at(page: Any, live: LiveServer, path: str) -> None:
    page.wait_for_url(lambda url: unquote(url) == live(path))


def test_the_danger_zone_asks_for_the_password_again(
    live_server: LiveServer, new_context: Any
) -> None:
    page = new_context().new_page()
    page.goto(live_server(f"/auth/signin?redirectUrl={quote('/dashboard')}"))
    page.get_by_label("Email").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    at(page, live_server, "/dashboard")
    page.get_by_role("link", name="Danger zone").click()  # fresh: straight in
    at(page, live_server, "/admin/danger-zone")
    expect()(page.get_by_role("heading", name="Danger zone")).to_be_visible()

    fresh_within = get_state(live_server.app).settings.fresh_within
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=fresh_within + 60)):
        page.goto(live_server("/admin/danger-zone"))
        at(page, live_server, "/auth/reauthenticate?redirectUrl=/admin/danger-zone")
        expect()(page.get_by_role("heading", name="Confirm it's you")).to_be_visible()
        expect()(page.get_by_text(ADMIN[0])).to_be_visible()
        page.get_by_label("Password").fill("not-the-password-000")
        page.get_by_role("button", name="Continue").click()
        expect()(page.get_by_role("alert")).to_contain_text("The password is incorrect.")
        page.get_by_label("Password").fill(ADMIN[1])
        page.get_by_role("button", name="Continue").click()
        at(page, live_server, "/admin/danger-zone")
        expect()(page.get_by_role("heading", name="Danger zone")).to_be_visible()
