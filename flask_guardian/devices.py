"""A readable summary of a User-Agent string for the device list ("Firefox on Linux").
Deliberately small: it names the common browsers and systems and falls back to
"Unknown device"; it is a label for people, never a security decision."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

_BROWSERS = (
    # On iOS every browser is WebKit and says "Safari"; Chrome, Firefox and Edge there add a
    # marker of their own, checked first.
    ("EdgiOS/", "Edge"),
    ("CriOS/", "Chrome"),
    ("FxiOS/", "Firefox"),
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chromium/", "Chromium"),
    ("HeadlessChrome/", "Headless Chrome"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
    ("python-requests/", "Python requests"),
    ("Werkzeug/", "Werkzeug test client"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_user_agent(user_agent: str | None) -> str:
    """``"<browser> on <system>"``, or what part of it is known."""
    if not user_agent:
        return "Unknown device"
    if user_agent.startswith(API_CLIENT):
        client = describe_user_agent(user_agent[len(API_CLIENT):])
        return "API client" if client == "Unknown device" else f"API client ({client})"
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"


S = TypeVar("S")


def current_first(sessions: Iterable[S]) -> list[S]:
    """The device list in the order people look for it: this device first, then the
    others as they came (most recent activity first). Each item has a ``current`` flag."""
    return sorted(sessions, key=lambda s: not getattr(s, "current", False))  # stable


#: How the device list records a session of ``POST /auth/token`` (an API client):
#: ``API client; <User-Agent>``.
API_CLIENT = "API client; "
