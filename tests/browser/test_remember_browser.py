"""Remember me and the ended-session message in a real browser (Debian's chromium through
Playwright), under every strategy: the session cookie is a browser-session cookie unless
"Remember me" is ticked, and a browser whose session ended elsewhere or expired lands on
the sign-in page saying which."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import pytest
import time_machine
from helpers import LiveServer

from flask_guardian.state import get_state

pytestmark = pytest.mark.browser

USER = ("user@example.com", "user-password-123")
ENDED_ELSEWHERE = "Your session was ended on another device"
EXPIRED = "Your session expired"


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def at(page: Any, live: LiveServer, path: str) -> None:
    page.wait_for_url(lambda url: unquote(url) == live(path))


def sign_in(page: Any, live: LiveServer, *, remember: bool, then: str = "/dashboard") -> None:
    page.goto(live(f"/auth/signin?redirectUrl={quote(then)}"))
    page.get_by_label("Email").fill(USER[0])
    page.get_by_label("Password").fill(USER[1])
    checkbox = page.get_by_label("Remember me on this device")
    expect()(checkbox).not_to_be_checked()  # off unless the user asks
    if remember:
        checkbox.check()
    page.get_by_role("button", name="Sign in").click()
    at(page, live, then)


def session_cookie(context: Any, live: LiveServer) -> dict[str, Any]:
    name = get_state(live.app).settings.cookie_name
    (cookie,) = [c for c in context.cookies() if c["name"] == name]
    return dict(cookie)


def reopened(new_context: Any, context: Any) -> Any:
    """The same browser profile after the browser was closed and started again: what a
    browser keeps on disk is its persistent cookies, never its session cookies."""
    state = context.storage_state()
    state["cookies"] = [c for c in state["cookies"] if c["expires"] != -1]
    return new_context(storage_state=state)


def test_without_remember_me_the_session_ends_with_the_browser(
    live_server: LiveServer, new_context: Any
) -> None:
    context = new_context()
    page = context.new_page()
    sign_in(page, live_server, remember=False)
    assert session_cookie(context, live_server)["expires"] == -1  # a session cookie

    again = reopened(new_context, context).new_page()
    again.goto(live_server("/dashboard"))
    at(again, live_server, "/auth/signin?redirectUrl=/dashboard")


def test_with_remember_me_the_cookie_persists_and_survives_a_restart(
    live_server: LiveServer, new_context: Any
) -> None:
    context = new_context()
    page = context.new_page()
    sign_in(page, live_server, remember=True)
    expires = session_cookie(context, live_server)["expires"]
    remember = get_state(live_server.app).settings.remember_max_age
    assert time.time() + remember - 120 < expires <= time.time() + remember + 1

    again = reopened(new_context, context).new_page()
    again.goto(live_server("/dashboard"))
    at(again, live_server, "/dashboard")
    expect()(again.get_by_role("heading", level=1)).to_have_text("Dashboard")


def test_a_session_ended_on_another_device_lands_on_sign_in_saying_so(
    live_server: LiveServer, new_context: Any
) -> None:
    laptop = new_context().new_page()
    phone = new_context().new_page()
    sign_in(laptop, live_server, remember=True)
    sign_in(phone, live_server, remember=False)

    phone.goto(live_server("/auth/sessions"))
    phone.get_by_role("button", name="Sign out everywhere else").click()
    expect()(phone.locator("li[data-session-id]")).to_have_count(1)

    laptop.goto(live_server("/dashboard"))
    at(laptop, live_server, "/auth/signin?redirectUrl=/dashboard")
    expect()(laptop.get_by_role("status")).to_contain_text(ENDED_ELSEWHERE)
    laptop.reload()  # said once
    expect()(laptop.get_by_text(ENDED_ELSEWHERE)).to_have_count(0)


def test_an_expired_session_lands_on_sign_in_saying_it_expired(
    live_server: LiveServer, new_context: Any
) -> None:
    page = new_context().new_page()
    sign_in(page, live_server, remember=False)
    idle = get_state(live_server.app).settings.idle_timeout
    # The server's clock moves past the idle timeout (the browser's cookie has no expiry).
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=idle + 60)):
        page.goto(live_server("/dashboard"))
        at(page, live_server, "/auth/signin?redirectUrl=/dashboard")
        expect()(page.get_by_role("status")).to_contain_text(EXPIRED)
        expect()(page.get_by_text(ENDED_ELSEWHERE)).to_have_count(0)
