"""The example app at a phone's width (390 px, an iPhone 12 to 15) in a real browser: no
page scrolls sideways, and the nav shows every link (none hidden past an edge or inside a
scrolled strip)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

import pytest
from helpers import LiveServer

#: The layout is the same whatever the session strategy: one is enough.
pytestmark = [pytest.mark.browser, pytest.mark.parametrize("strategy", ["database"])]

WIDTH = 390
ADMIN = ("admin@example.com", "admin-password-123")
PHONE = {"viewport": {"width": WIDTH, "height": 844}, "device_scale_factor": 3,
         "is_mobile": True, "has_touch": True}
#: Every link the admin's nav has, and every page an admin reaches from it.
NAV = ["Home", "Dashboard", "Reports", "Sessions", "Admin"]
PAGES = ["/", "/dashboard", "/reports", "/reports/audit", "/auth/sessions", "/admin",
         "/admin/danger-zone", "/auth/reauthenticate?redirectUrl=/admin/danger-zone",
         "/auth/signout"]

#: Each nav link's box, and whether the browser would have to scroll anything to show it.
NAV_BOXES = """() => [...document.querySelectorAll('nav[aria-label="Main"] a')].map(a => {
  const r = a.getBoundingClientRect();
  let clipped = false;
  for (let el = a.parentElement; el; el = el.parentElement) {
    const box = el.getBoundingClientRect();
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5) {
      const style = getComputedStyle(el);
      if (style.overflowX !== 'visible') clipped = true;
    }
  }
  return {text: a.textContent.trim(), left: r.left, right: r.right, width: r.width, clipped};
})"""


def at(page: Any, live: LiveServer, path: str) -> None:
    page.wait_for_url(lambda url: unquote(url) == live(path))


def scroll_width(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def nav_in_view(page: Any) -> list[str]:
    """The nav links wholly inside the viewport and not clipped by a scrolling box."""
    return [box["text"] for box in page.evaluate(NAV_BOXES)
            if box["width"] > 0 and box["left"] >= 0 and box["right"] <= WIDTH
            and not box["clipped"]]


def test_anonymous_pages_fit_390_px(live_server: LiveServer, new_context: Any) -> None:
    page = new_context(**PHONE).new_page()
    for path in ["/", "/auth/signin", "/auth/signin?redirectUrl=/dashboard"]:
        page.goto(live_server(path))
        assert scroll_width(page) <= WIDTH, path
        assert nav_in_view(page) == ["Home"], path


def test_every_page_fits_390_px_and_shows_every_nav_link(
    live_server: LiveServer, new_context: Any
) -> None:
    page = new_context(**PHONE).new_page()
    page.goto(live_server(f"/auth/signin?redirectUrl={quote('/')}"))
    page.get_by_label("Email").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    at(page, live_server, "/")
    for path in PAGES:
        page.goto(live_server(path))
        at(page, live_server, path)
        assert scroll_width(page) <= WIDTH, path
        assert nav_in_view(page) == NAV, path
        for name in NAV:
            link = page.get_by_role("navigation", name="Main").get_by_role("link", name=name)
            assert link.is_visible(), (path, name)
