"""The example app in a real browser (Debian's chromium through Playwright), under both
strategies: signing in and out, the nav, the admin page, the sign-in error, and a session
ended from another browser's sessions page."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

import pytest
from helpers import LiveServer

from flask_guardian.state import get_state

pytestmark = pytest.mark.browser

ADMIN = ("admin@example.com", "admin-password-123", "Ada Admin")
USER = ("user@example.com", "user-password-123", "Uma User")
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def at(page: Any, live: LiveServer, path: str) -> None:
    """Wait until the page shows ``path`` (compared percent-decoded: %2F and / are one)."""
    page.wait_for_url(lambda url: unquote(url) == live(path))


def nav_links(page: Any) -> list[str]:
    links = page.get_by_role("navigation", name="Main").get_by_role("link")
    return [text.strip() for text in links.all_inner_texts()]


def fill_signin(page: Any, email: str, password: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_in(
    page: Any, live: LiveServer, who: tuple[str, str, str], then: str = "/dashboard"
) -> None:
    page.goto(live(f"/auth/signin?redirectUrl={quote(then)}"))
    fill_signin(page, who[0], who[1])
    at(page, live, then)


def sign_out(page: Any, live: LiveServer) -> None:
    page.locator(".g-auth-status").get_by_role("button", name="Sign out").click()
    at(page, live, "/")
    expect()(page.locator(".g-auth-status").get_by_role("link", name="Sign in")).to_be_visible()


def test_admin_signs_in_sees_admin_nav_reaches_admin_and_signs_out(
    live_server: LiveServer, new_context: Any
) -> None:
    page = new_context().new_page()
    page.goto(live_server("/"))
    assert nav_links(page) == ["Home"]
    page.locator(".g-auth-status").get_by_role("link", name="Sign in").click()
    at(page, live_server, "/auth/signin?redirectUrl=/")
    fill_signin(page, ADMIN[0], ADMIN[1])
    at(page, live_server, "/")
    assert nav_links(page) == ["Home", "Dashboard", "Reports", "Sessions", "Admin"]
    expect()(page.locator(".g-auth-status")).to_contain_text(
        re.compile(rf"Signed in as\s+{ADMIN[2]}")
    )

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    at(page, live_server, "/admin")
    expect()(page.get_by_role("heading", level=1)).to_have_text("Admin")
    expect()(page.get_by_role("cell", name=USER[0])).to_be_visible()

    response = page.goto(live_server("/reports/audit"))  # a configured admin-only route
    assert response is not None and response.status == 200

    sign_out(page, live_server)
    assert nav_links(page) == ["Home"]
    page.goto(live_server("/admin"))
    at(page, live_server, "/auth/signin?redirectUrl=/admin")


def test_user_sees_no_admin_link_and_is_refused_from_admin(
    live_server: LiveServer, new_context: Any
) -> None:
    page = new_context().new_page()
    page.goto(live_server("/dashboard"))  # protected: sent to sign in, then back
    at(page, live_server, "/auth/signin?redirectUrl=/dashboard")
    fill_signin(page, USER[0], USER[1])
    at(page, live_server, "/dashboard")
    assert nav_links(page) == ["Home", "Dashboard", "Reports", "Sessions"]
    expect()(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect()(page.get_by_role("main")).to_contain_text(USER[0])

    response = page.goto(live_server("/admin"))
    assert response is not None and response.status == 403
    expect()(page.get_by_role("heading", level=1)).to_have_text("Access denied")
    assert nav_links(page) == ["Home", "Dashboard", "Reports", "Sessions"]

    response = page.goto(live_server("/reports"))  # configured: any signed-in user
    assert response is not None and response.status == 200
    response = page.goto(live_server("/reports/audit"))
    assert response is not None and response.status == 403

    page.goto(live_server("/dashboard"))
    sign_out(page, live_server)
    page.goto(live_server("/dashboard"))
    at(page, live_server, "/auth/signin?redirectUrl=/dashboard")


def test_wrong_password_shows_the_error_tied_to_the_fields(
    live_server: LiveServer, new_context: Any
) -> None:
    page = new_context().new_page()
    page.goto(live_server("/auth/signin"))
    fill_signin(page, USER[0], "not-the-password-1")
    alert = page.get_by_role("alert")
    expect()(alert).to_contain_text("The email or password is incorrect.")
    for label in ("Email", "Password"):
        field = page.get_by_label(label)
        expect()(field).to_have_attribute("aria-invalid", "true")
        expect()(field).to_have_attribute("aria-describedby", "signin-error")
    expect()(page.get_by_label("Email")).to_have_value(USER[0])
    expect()(page.get_by_label("Password")).to_be_focused()
    page.goto(live_server("/"))
    assert nav_links(page) == ["Home"]

    # The error page of the refusal still works as a form: the right password now passes.
    page.goto(live_server("/auth/signin"))
    fill_signin(page, USER[0], USER[1])
    at(page, live_server, "/")
    assert "Dashboard" in nav_links(page)


def test_signin_form_focus_order_follows_reading_order(
    live_server: LiveServer, new_context: Any
) -> None:
    page = new_context().new_page()
    page.goto(live_server("/auth/signin"))
    expect()(page.get_by_label("Email")).to_be_focused()
    page.keyboard.press("Tab")
    expect()(page.get_by_label("Password")).to_be_focused()
    page.keyboard.press("Tab")
    expect()(page.get_by_label("Remember me on this device")).to_be_focused()
    page.keyboard.press("Tab")
    expect()(page.get_by_role("button", name="Sign in")).to_be_focused()


def fits_width(page: Any) -> bool:
    """No horizontal scrolling: the page is usable at this viewport width."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_a_session_ended_from_another_browser_is_signed_out_on_its_next_navigation(
    live_server: LiveServer, new_context: Any
) -> None:
    laptop = new_context().new_page()
    phone = new_context(user_agent=IPHONE_UA, viewport={"width": 390, "height": 844}).new_page()
    sign_in(laptop, live_server, USER)
    sign_in(phone, live_server, USER)
    phone.goto(live_server("/auth/sessions"))
    assert fits_width(phone)  # usable at phone width

    laptop.goto(live_server("/auth/sessions"))
    rows = laptop.locator("li[data-session-id]")
    expect()(rows).to_have_count(2)
    expect()(laptop.locator("li[aria-current=true]")).to_contain_text("This device")
    laptop.get_by_role("button", name="End session on Safari on iPhone").click()
    at(laptop, live_server, "/auth/sessions")
    expect()(rows).to_have_count(1)
    expect()(rows.first).to_contain_text("This device")

    phone.goto(live_server("/dashboard"))
    at(phone, live_server, "/auth/signin?redirectUrl=/dashboard")
    phone.goto(live_server("/"))
    assert nav_links(phone) == ["Home"]

    laptop.goto(live_server("/dashboard"))  # the laptop's own session is untouched
    at(laptop, live_server, "/dashboard")


def test_sign_out_everywhere_else_keeps_only_this_browser(
    live_server: LiveServer, new_context: Any
) -> None:
    pages = [new_context().new_page() for _ in range(3)]
    for page in pages:
        sign_in(page, live_server, ADMIN)
    pages[0].goto(live_server("/auth/sessions"))
    pages[0].get_by_role("button", name="Sign out everywhere else").click()
    expect()(pages[0].locator("li[data-session-id]")).to_have_count(1)
    for page in pages[1:]:
        page.goto(live_server("/admin"))
        at(page, live_server, "/auth/signin?redirectUrl=/admin")


def test_api_me_answers_json_to_the_cookie_and_to_a_bearer_token(
    live_server: LiveServer, new_context: Any, strategy: str
) -> None:
    context = new_context()
    page = context.new_page()
    anonymous = context.request.get(live_server("/api/me"))
    assert anonymous.status == 401
    assert anonymous.json()["error"] == "unauthorized"

    sign_in(page, live_server, USER)
    body = context.request.get(live_server("/api/me")).json()
    assert body["user"]["email"] == USER[0]
    assert body["strategy"] == strategy
    if strategy != "jwt":
        return

    # An API client sends the JWT as a bearer token, with no cookie at all.
    cookie_name = get_state(live_server.app).settings.cookie_name
    token = next(c["value"] for c in context.cookies() if c["name"] == cookie_name)
    api = new_context().request
    bearer = {"Authorization": f"Bearer {token}"}
    me = api.get(live_server("/api/me"), headers=bearer)
    assert me.status == 200 and me.json()["user"]["email"] == USER[0]

    page.goto(live_server("/dashboard"))
    sign_out(page, live_server)  # revocation is real for JWTs too
    assert api.get(live_server("/api/me"), headers=bearer).status == 401
