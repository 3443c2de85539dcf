"""Signing in and out through the routes and the Python API, form and JSON, both
strategies, every database."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from flask import Flask, g
from helpers import (
    ADMIN,
    READS_PER_REQUEST,
    USER,
    QueryCounter,
    csrf_token,
    db_of,
    guardian_of,
    needs_sql_registry,
    session_cookie,
    sign_in,
    sign_in_ok,
    sign_out,
)

import flask_guardian
from flask_guardian import signals
from flask_guardian.state import get_state

# The full database matrix: session rows written on sign-in and sign-out.
pytestmark = pytest.mark.databases

_TABLES = ("guardian_sessions", "guardian_revocations", "guardian_login_attempts")


def test_anonymous_request_has_no_session(client: Any) -> None:
    assert client.get("/auth/session").get_json() is None


def test_signin_form_redirects_to_default_and_sets_session(client: Any) -> None:
    response = sign_in(client, *USER)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert client.get("/dashboard").get_data(as_text=True) == f"hello {USER[0]}"


def test_signin_redirects_to_checked_redirect_url(client: Any) -> None:
    response = sign_in(client, *USER, redirect_url="/dashboard?tab=2")
    assert response.headers["Location"] == "/dashboard?tab=2"


def test_signin_json_returns_session(client: Any, strategy: str) -> None:
    response = sign_in(client, *ADMIN, json=True, redirect_url="/admin")
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is True
    assert body["redirectUrl"] == "/admin"
    assert body["session"]["user"] == {
        "id": 1, "email": ADMIN[0], "name": "Ada Admin", "role": "admin"
    }
    assert isinstance(body["session"]["expires"], str)
    assert client.get("/admin").status_code == 200


def test_session_endpoint_shows_to_dict(client: Any) -> None:
    sign_in_ok(client)
    body = client.get("/auth/session").get_json()
    assert set(body) == {"user", "expires", "twoFactor"}
    assert body["twoFactor"] is False
    assert body["user"]["email"] == USER[0]


def test_email_is_matched_case_insensitively(client: Any) -> None:
    response = sign_in(client, "  User@Example.COM ", USER[1])
    assert response.status_code == 303


def test_wrong_password_renders_form_with_generic_message(client: Any) -> None:
    response = sign_in(client, USER[0], "wrong-password-000")
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "The email or password is incorrect." in page
    assert 'aria-invalid="true"' in page
    assert client.get("/auth/session").get_json() is None


def test_wrong_password_json_is_401_with_code(client: Any) -> None:
    response = sign_in(client, USER[0], "wrong-password-000", json=True)
    assert response.status_code == 401
    assert response.get_json() == {"ok": False, "error": "invalid_credentials"}


def test_signout_ends_session_and_replayed_cookie_is_anonymous(client: Any, app: Flask) -> None:
    sign_in_ok(client)
    stolen = session_cookie(client, app)
    assert stolen
    response = sign_out(client)
    assert response.status_code == 303
    assert client.get("/auth/session").get_json() is None
    replay = app.test_client()
    replay.set_cookie(client_cookie_name(app), stolen)
    assert replay.get("/auth/session").get_json() is None
    assert replay.get("/dashboard").status_code == 303


def client_cookie_name(app: Flask) -> str:
    return str(get_state(app).settings.cookie_name)


def test_signout_json(client: Any) -> None:
    sign_in_ok(client)
    response = client.post(
        "/auth/signout", json={"csrfToken": csrf_token(client)},
    )
    assert response.get_json() == {"ok": True, "redirectUrl": "/"}


def test_get_signout_changes_nothing(client: Any) -> None:
    sign_in_ok(client)
    response = client.get("/auth/signout")
    assert response.status_code == 200
    assert client.get("/auth/session").get_json() is not None


def test_python_api_sign_in_and_out(app: Flask) -> None:
    seen: dict[str, Any] = {}
    with app.test_request_context("/", method="POST"):
        app.preprocess_request()
        result = flask_guardian.sign_in(
            "credentials", email=ADMIN[0], password=ADMIN[1], redirect_url="https://evil.com"
        )
        assert result.ok and result.error is None
        assert result.redirect_url == "/"
        assert result.session is not None
        assert flask_guardian.get_session() is result.session is g.session
        seen["id"] = result.session.id
        out = flask_guardian.sign_out(redirect_url="/bye")
        assert out.redirect_url == "/bye"
        assert flask_guardian.get_session() is None
    with app.app_context():
        user = guardian_of(app).authenticate(*ADMIN)
        assert user is not None
        assert guardian_of(app).list_sessions(user) == []


def test_python_api_sign_in_failure(app: Flask) -> None:
    with app.test_request_context("/", method="POST"):
        app.preprocess_request()
        result = flask_guardian.sign_in("credentials", email=USER[0], password="nope-nope-nope")
        assert not result.ok
        assert result.error == "invalid_credentials"
        assert result.session is None


def test_unknown_provider_is_a_programming_error(app: Flask) -> None:
    with app.test_request_context("/"):
        try:
            flask_guardian.sign_in("github", email="a", password="b")
        except ValueError as exc:
            assert "github" in str(exc)
        else:
            raise AssertionError("expected ValueError")


def test_signals_fire_on_sign_in_failure_and_sign_out(app: Flask, client: Any) -> None:
    received: list[tuple[str, dict[str, Any]]] = []

    def recorder(name: str) -> Any:
        def receive(sender: Any, **kwargs: Any) -> None:
            assert sender is app
            received.append((name, kwargs))
        return receive

    handlers = {
        "in": recorder("in"), "failed": recorder("failed"), "out": recorder("out"),
    }
    signals.user_signed_in.connect(handlers["in"])
    signals.sign_in_failed.connect(handlers["failed"])
    signals.user_signed_out.connect(handlers["out"])
    try:
        sign_in(client, USER[0], "wrong-password-000")
        sign_in_ok(client)
        sign_out(client)
    finally:
        signals.user_signed_in.disconnect(handlers["in"])
        signals.sign_in_failed.disconnect(handlers["failed"])
        signals.user_signed_out.disconnect(handlers["out"])
    names = [n for n, _ in received]
    assert names == ["failed", "in", "out"]
    assert received[0][1]["reason"] == "invalid_credentials"
    assert received[0][1]["email"] == USER[0]
    assert received[1][1]["session"].user.email == USER[0]


def test_one_query_per_authenticated_request(app: Flask, client: Any, strategy: str) -> None:
    sign_in_ok(client)
    client.get("/dashboard")  # warm: first jwt request polls the revocation feed
    with QueryCounter(app) as queries:
        assert client.get("/dashboard").status_code == 200
    assert queries.count == READS_PER_REQUEST[strategy], queries.statements
    assert queries.writes == []


def test_no_cookie_leaks_between_requests_sharing_an_app_context(app: Flask) -> None:
    """g outlives a request when an app context is pushed around several (tests, scripts):
    one client's new session cookie must never be sent to another."""
    with app.app_context():
        first = app.test_client()
        sign_in_ok(first)
        other = app.test_client()
        response = other.get("/")
        assert response.headers.getlist("Set-Cookie") == []


def test_signing_in_again_reports_the_replaced_session(app: Flask, client: Any) -> None:
    sign_in_ok(client)
    first = client.get("/auth/sessions", headers={"Accept": "application/json"}).get_json()
    revoked: list[dict[str, Any]] = []

    def receive(sender: Any, **kwargs: Any) -> None:
        revoked.append(kwargs)

    signals.session_revoked.connect(receive)
    try:
        sign_in_ok(client, ADMIN)
    finally:
        signals.session_revoked.disconnect(receive)
    assert [r["reason"] for r in revoked] == ["replaced"]
    assert revoked[0]["session_ids"] == [first["sessions"][0]["id"]]
    assert revoked[0]["user_id"] == 2


def test_the_database_holds_only_the_sha256_of_the_session_token(
    app: Flask, client: Any, strategy: str
) -> None:
    """database: ``guardian_sessions.token_hash`` is the SHA-256 hex of the cookie value,
    never the value itself; jwt: the token is not stored at all. No table holds the cookie
    value, so a leaked database gives no live session."""
    needs_sql_registry(strategy)
    sign_in_ok(client)
    token = session_cookie(client, app)
    assert token
    with app.app_context():
        db = db_of(app)
        (stored,) = db.session.execute(db.text("SELECT token_hash FROM guardian_sessions")).one()
        everything = [
            value
            for table in (*_TABLES, guardian_of(app).user_model.__tablename__)
            for row in db.session.execute(db.text(f"SELECT * FROM {table}"))
            for value in row
        ]
    if strategy == "database":
        assert stored == hashlib.sha256(token.encode("ascii")).hexdigest()
    else:
        assert stored is None
    assert not any(isinstance(v, str | bytes) and token in str(v) for v in everything)
    assert client.get("/auth/session").get_json() is not None
