"""Cookies: HttpOnly, SameSite, Secure by default with the __Host- prefix, cleared with the
same name, path, domain and flags they were set with; auth responses are not cached."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from flask import Flask
from helpers import (
    USER,
    AppFactory,
    cookie_attributes,
    set_cookie_headers,
    sign_in,
    sign_in_ok,
    sign_out,
)
from werkzeug.http import parse_date
from werkzeug.wrappers import Request

from flask_guardian.cookies import read_cookie
from flask_guardian.state import get_state


def _set_and_cleared(app: Flask, base_url: str = "http://localhost") -> tuple[dict[str, str],
                                                                              dict[str, str]]:
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = base_url.split(":", 1)[0]
    name = get_state(app).settings.cookie_name
    response = sign_in(client, *USER)
    assert response.status_code == 303
    (set_header,) = set_cookie_headers(response, name)
    response = sign_out(client)
    (clear_header,) = set_cookie_headers(response, name)
    return cookie_attributes(set_header), cookie_attributes(clear_header)


def test_secure_default_uses_host_prefix_and_all_flags(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_COOKIE_SECURE=True)
    set_attrs, cleared = _set_and_cleared(app, "https://localhost")
    assert set_attrs["__name__"] == "__Host-guardian"
    for attrs in (set_attrs, cleared):
        assert "secure" in attrs
        assert "httponly" in attrs
        assert attrs["path"] == "/"
        assert attrs["samesite"] == "Lax"
        assert "domain" not in attrs
    assert cleared["__value__"] == ""
    assert cleared["max-age"] == "0"


def test_clearing_repeats_domain_path_and_samesite(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_COOKIE_DOMAIN="example.test", GUARDIAN_COOKIE_SAMESITE="Strict",
                   SERVER_NAME="app.example.test")
    client = app.test_client()
    response = sign_in(client, *USER)
    (set_header,) = set_cookie_headers(response, "guardian")
    response = sign_out(client)
    (clear_header,) = set_cookie_headers(response, "guardian")
    set_attrs, cleared = cookie_attributes(set_header), cookie_attributes(clear_header)
    for key in ("domain", "path", "samesite", "httponly"):
        assert set_attrs.get(key) == cleared.get(key), key
    assert set_attrs["domain"] == "example.test"
    assert set_attrs["samesite"] == "Strict"
    assert "secure" not in set_attrs  # GUARDIAN_COOKIE_SECURE=False in the test config


def test_remembered_cookie_expires_at_sign_in_time_plus_the_remember_lifetime(
    make_app: AppFactory, strategy: str
) -> None:
    """With "remember me" the cookie's Expires is the absolute deadline (sign-in time plus
    GUARDIAN_REMEMBER_MAX_AGE), never the idle deadline: the database strategy does not
    set the cookie again on activity, so a browser would drop an active user's cookie at
    the first idle deadline. A re-issued cookie (jwt refresh) keeps the same Expires."""
    app = make_app(GUARDIAN_REMEMBER_MAX_AGE=3600, GUARDIAN_REMEMBER_IDLE_TIMEOUT=600,
                   GUARDIAN_SESSION_UPDATE_AGE=60)
    client = app.test_client()
    signed_in_at = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)  # a whole second
    absolute = signed_in_at + timedelta(seconds=3600)
    with time_machine.travel(signed_in_at, tick=False) as clock:
        response = sign_in(client, *USER, remember=True)
        (header,) = set_cookie_headers(response, "guardian")
        assert parse_date(cookie_attributes(header)["expires"]) == absolute
        # Active past the first idle deadline, refreshed on the way: Expires stays put.
        reissued = 0
        for minutes in (2, 9, 16):
            clock.move_to(signed_in_at + timedelta(minutes=minutes))
            response = client.get("/dashboard")
            assert response.status_code == 200
            for header in set_cookie_headers(response, "guardian"):
                assert parse_date(cookie_attributes(header)["expires"]) == absolute
                reissued += 1
        if strategy == "jwt":
            assert reissued == 3  # each refresh re-issues the token, and so the cookie


def test_cookie_without_remember_me_ends_with_the_browser(
    make_app: AppFactory, strategy: str
) -> None:
    """Without "remember me" the cookie has neither Expires nor Max-Age (a browser-session
    cookie), on sign-in and on every re-issue (jwt refresh)."""
    app = make_app(GUARDIAN_SESSION_IDLE_TIMEOUT=600, GUARDIAN_SESSION_UPDATE_AGE=60)
    client = app.test_client()
    signed_in_at = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)
    with time_machine.travel(signed_in_at, tick=False) as clock:
        headers = set_cookie_headers(sign_in(client, *USER), "guardian")
        for minutes in (2, 4):
            clock.move_to(signed_in_at + timedelta(minutes=minutes))
            response = client.get("/dashboard")
            assert response.status_code == 200
            headers += set_cookie_headers(response, "guardian")
    assert len(headers) == (3 if strategy == "jwt" else 1)
    for header in headers:
        attrs = cookie_attributes(header)
        assert attrs["__value__"]
        assert "expires" not in attrs and "max-age" not in attrs, header


def test_auth_responses_are_not_cached(client: Any) -> None:
    assert client.get("/auth/signin").headers["Cache-Control"] == "no-store"
    assert client.get("/auth/session").headers["Cache-Control"] == "no-store"
    response = sign_in_ok(client)
    assert response.headers["Cache-Control"] == "no-store"
    assert "Cookie" in response.headers.get("Vary", "")


def test_dead_cookie_is_cleared(client: Any, app: Flask) -> None:
    client.set_cookie("guardian", "x" * 43)
    response = client.get("/")
    (header,) = set_cookie_headers(response, "guardian")
    assert cookie_attributes(header)["max-age"] == "0"
    assert response.headers["Cache-Control"] == "no-store"


def test_ordinary_anonymous_response_sets_no_cookie(client: Any) -> None:
    response = client.get("/")
    assert response.headers.getlist("Set-Cookie") == []
    assert "Cache-Control" not in response.headers


def test_signed_in_pages_are_not_cached_unless_the_view_says_so(app: Flask) -> None:
    @app.get("/cached")
    def cached() -> Any:
        return "public", 200, {"Cache-Control": "public, max-age=60"}

    client = app.test_client()
    sign_in_ok(client)
    assert client.get("/dashboard").headers["Cache-Control"] == "no-store"
    assert client.get("/cached").headers["Cache-Control"] == "public, max-age=60"


# -- reading: flask_guardian.cookies.read_cookie equals request.cookies.get ----------------

_SEGMENTS = [
    "guardian=tok", " guardian = tok ", "guardian", "guardian=", "guardian=a b",
    "guardian=\ttok", "guardian\t=tok", "guardian==x", "xguardian=no", "guardianx=no",
    'guardian="quoted"', 'guardian="q\\"uo\\;te\\101"', 'x="a;guardian=evil"', "=guardian",
    "a=1", "b", "  ", "", "g uardian=no", "guardian=é", "gü=1", "guardian=\n", 'guardian="',
    "guardian-csrf=seed", "guardian=" + "J" * 400,
]
_CHARS = ' \t;="\\agdnriu=-é\n'


def _headers(count: int) -> list[str]:
    rng = random.Random(20261129)  # fixed: the same headers on every run
    headers = []
    for _ in range(count):
        if rng.random() < 0.5:
            parts = [rng.choice(_SEGMENTS) for _ in range(rng.randint(1, 5))]
            headers.append(rng.choice([";", "; ", " ;"]).join(parts))
        else:
            headers.append("".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 30))))
    return headers


def test_read_cookie_equals_werkzeug_on_generated_headers() -> None:
    names = ["guardian", "guardian-csrf", "a", "b", "g", "gü", "", "g uardian", "x=y", '"']
    compared = 0
    for header in _headers(4000):
        environ = {"HTTP_COOKIE": header}
        expected = Request(environ).cookies
        for name in names:
            assert read_cookie(environ, name) == expected.get(name), (header, name)
            compared += 1
    assert compared == 40_000
    assert read_cookie({}, "guardian") is None


def test_read_cookie_examples() -> None:
    def read(header: str) -> str | None:
        return read_cookie({"HTTP_COOKIE": header}, "guardian")

    assert read("a=1; guardian=tok; guardian=second") == "tok"  # the first one wins
    assert read("guardian=a b; guardian=ok") == "ok"  # not a cookie: skipped
    assert read('x="a;guardian=evil"') is None  # inside another cookie's quoted value
    assert read('guardian="\\101b"') == "Ab"  # quoted, with an octal escape
    assert read("guardian") == ""
    assert read("xguardian=1") is None
