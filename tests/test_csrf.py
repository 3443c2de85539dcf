"""CSRF: every state-changing POST carrying a cookie credential needs a token, sign-in
included (login CSRF); bearer-only requests are exempt; the check can be turned off."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from helpers import (
    USER,
    AppFactory,
    cookie_attributes,
    csrf_token,
    set_cookie_headers,
    sign_in,
    sign_in_ok,
    sign_out,
)

from flask_guardian.state import get_state


def test_signin_without_token_is_refused(client: Any) -> None:
    response = client.post("/auth/signin", data={"email": USER[0], "password": USER[1]})
    assert response.status_code == 403
    assert client.get("/auth/session").get_json() is None


def test_login_csrf_with_foreign_token_is_refused(app: Flask) -> None:
    attacker = app.test_client()
    token = csrf_token(attacker)  # valid for the attacker's seed, not the victim's
    victim = app.test_client()
    victim.get("/auth/csrf")
    response = victim.post("/auth/signin",
                           data={"email": USER[0], "password": USER[1], "csrf_token": token})
    assert response.status_code == 403


def test_signin_json_without_token_is_403_json(client: Any) -> None:
    response = client.post("/auth/signin", json={"email": USER[0], "password": USER[1]})
    assert response.status_code == 403
    assert response.get_json()["error"] == "csrf_failed"


def test_token_in_header_is_accepted(client: Any) -> None:
    token = csrf_token(client)
    response = client.post("/auth/signin", json={"email": USER[0], "password": USER[1]},
                           headers={"X-CSRF-Token": token})
    assert response.status_code == 200


@pytest.mark.parametrize("token", ["", "garbage", "a.b", "x" * 500, "ü.ü"])
def test_malformed_tokens_are_refused(client: Any, token: str) -> None:
    csrf_token(client)
    response = client.post("/auth/signin",
                           data={"email": USER[0], "password": USER[1], "csrf_token": token})
    assert response.status_code == 403


def test_signout_without_token_changes_nothing(client: Any) -> None:
    sign_in_ok(client)
    response = client.post("/auth/signout")
    assert response.status_code == 403
    assert client.get("/auth/session").get_json() is not None


def test_token_from_before_signin_stops_working_after_it(client: Any) -> None:
    old = csrf_token(client)
    sign_in_ok(client)
    response = client.post("/auth/signout", data={"csrf_token": old})
    assert response.status_code == 403


def test_sign_in_json_returns_a_fresh_token(client: Any) -> None:
    token = csrf_token(client)
    body = client.post("/auth/signin", json={"email": USER[0], "password": USER[1],
                                             "csrfToken": token}).get_json()
    response = client.post("/auth/signout", json={"csrfToken": body["csrfToken"]})
    assert response.get_json()["ok"] is True


def test_csrf_can_be_disabled(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_CSRF_ENABLED=False)
    client = app.test_client()
    response = client.post("/auth/signin", data={"email": USER[0], "password": USER[1]})
    assert response.status_code == 303
    assert client.post("/auth/signout").status_code == 303


def test_a_planted_seed_and_token_pair_cannot_act_for_a_signed_in_user(app: Flask) -> None:
    """Anyone who can plant a cookie (a sibling subdomain, when the names lack __Host-) can
    plant their own seed with a token they minted for it. Once signed in, a token must be
    bound to the session, so such a pair forges nothing."""
    attacker = app.test_client()
    attacker_token = csrf_token(attacker)
    seed_name = get_state(app).settings.csrf_cookie_name
    attacker_seed = attacker.get_cookie(seed_name).value
    victim = app.test_client()
    sign_in_ok(victim)
    victim.set_cookie(seed_name, attacker_seed)  # planted
    for path in ("/auth/signout", "/auth/sessions/revoke-others"):
        response = victim.post(path, data={"csrf_token": attacker_token})
        assert response.status_code == 403, path
    assert victim.get("/auth/session").get_json() is not None


def test_a_token_from_another_session_is_refused(app: Flask) -> None:
    one, two = app.test_client(), app.test_client()
    sign_in_ok(one)
    sign_in_ok(two)
    token_of_one = csrf_token(one)
    assert two.post("/auth/signout", data={"csrf_token": token_of_one}).status_code == 403
    assert two.post("/auth/signout", data={"csrf_token": csrf_token(two)}).status_code == 303


def test_the_token_given_after_json_sign_in_works_for_the_new_session(app: Flask) -> None:
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/auth/signin", json={"email": USER[0], "password": USER[1],
                                                 "csrfToken": token})
    new_token = response.get_json()["csrfToken"]
    assert client.post("/auth/signout", json={"csrfToken": token}).status_code == 403
    assert client.post("/auth/signout", json={"csrfToken": new_token}).status_code == 200


def test_guardian_pages_cannot_be_framed(app: Flask) -> None:
    """The "End session" buttons must not be clickjacked (an app may set SameSite=None)."""
    client = app.test_client()
    pages = [client.get("/auth/signin")]
    sign_in_ok(client)
    pages.append(client.get("/auth/sessions"))
    pages.append(client.get("/auth/signout"))
    for page in pages:
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_framing_headers_are_configurable_and_an_apps_own_are_kept(
    make_app: AppFactory,
) -> None:
    app = make_app(GUARDIAN_FRAME_OPTIONS="SAMEORIGIN")
    page = app.test_client().get("/auth/signin")
    assert page.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    off = make_app(GUARDIAN_FRAME_OPTIONS=None).test_client().get("/auth/signin")
    assert "X-Frame-Options" not in off.headers


def test_signing_out_of_an_ended_session_needs_no_token(app: Flask) -> None:
    """The sign-out form of a session that ended meanwhile (expired, or ended on another
    device) still signs out: its token was bound to the dead session."""
    client = app.test_client()
    sign_in_ok(client)
    stale_token = csrf_token(client)
    client.post("/auth/sessions/revoke-others", data={"csrf_token": stale_token})
    with app.app_context():
        guardian = app.extensions["guardian"]
        model = guardian.user_model
        user = app.extensions["sqlalchemy"].session.execute(
            model.__table__.select().where(model.email == USER[0])).first()
        guardian.revoke_user_sessions(user)
    response = client.post("/auth/signout", data={"csrf_token": stale_token})
    assert response.status_code == 303
    assert client.get("/auth/session").get_json() is None


@pytest.mark.parametrize("secure", [True, False], ids=["secure", "plain-http"])
def test_csrf_seed_cookie_has_the_session_cookie_attributes(
    make_app: AppFactory, secure: bool
) -> None:
    """The CSRF seed cookie is HttpOnly, SameSite, Secure (when the session cookie is) and
    follows the __Host- rules (Secure, Path=/, no Domain) under its __Host- name; its
    attributes are the session cookie's, on every response that sets it."""
    app = make_app(GUARDIAN_COOKIE_SECURE=secure)
    client = app.test_client()
    if secure:
        client.environ_base["wsgi.url_scheme"] = "https"
    name, seed_name = (
        ("__Host-guardian", "__Host-guardian-csrf") if secure else ("guardian", "guardian-csrf")
    )
    (issued,) = set_cookie_headers(client.get("/auth/csrf"), seed_name)
    signed_in = sign_in(client, *USER)
    assert signed_in.status_code == 303
    (session_header,) = set_cookie_headers(signed_in, name)
    (rotated,) = set_cookie_headers(signed_in, seed_name)  # a new seed at sign-in
    (after_sign_out,) = set_cookie_headers(sign_out(client), seed_name)  # and at sign-out
    session_attrs = cookie_attributes(session_header)
    for header in (issued, rotated, after_sign_out):
        attrs = cookie_attributes(header)
        assert len(attrs["__value__"]) == 43
        assert "httponly" in attrs
        assert attrs["samesite"] == "Lax"
        assert attrs["path"] == "/"
        assert "domain" not in attrs
        assert ("secure" in attrs) is secure
        for key in ("secure", "httponly", "samesite", "path", "domain"):
            assert attrs.get(key) == session_attrs.get(key), key
