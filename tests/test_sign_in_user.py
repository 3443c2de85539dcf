"""``sign_in_user``: a session for a user the application authenticated by other means
(registration, OAuth, magic link), started exactly as a password sign-in starts one: new
session id (the carried one ends), cookie, device-list row, ``user_signed_in`` with
``method="external"``; inactive users refused; the redirect checked."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, jsonify, request
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    cookie_name,
    db_of,
    guardian_of,
    session_cookie,
    set_cookie_headers,
    sign_in_ok,
)
from sqlalchemy.exc import OperationalError

import flask_guardian
from flask_guardian import sign_in_user, signals


def add_routes(app: Flask) -> None:
    """A registration view and a "signed in elsewhere" view, as an application writes
    them."""
    db = db_of(app)
    user_model = guardian_of(app).user_model

    @app.post("/register")
    def register() -> Any:
        user = user_model(email=request.form["email"], name="New")
        db.session.add(user)  # pending: sign_in_user flushes it
        result = sign_in_user(user, redirect_url=request.form.get("next"))
        return jsonify(ok=result.ok, error=result.error, redirect=result.redirect_url,
                       session=result.session.to_dict() if result.session else None)

    @app.post("/external/<email>")
    def external(email: str) -> Any:
        user = db.session.execute(
            db.select(user_model).where(user_model.email == email)).scalar_one()
        result = guardian_of(app).sign_in_user(user, remember=True)
        return jsonify(ok=result.ok, error=result.error)


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    app = make_app()
    add_routes(app)
    return app


def test_registration_signs_the_new_user_in_with_a_cookie_and_a_device_row(
    app: Flask, client: Any
) -> None:
    response = client.post("/register", data={"email": "New@Example.com"})
    body = response.get_json()
    assert body["ok"] is True and body["error"] is None
    assert body["session"]["user"]["email"] == "new@example.com"
    assert session_cookie(client, app)
    assert client.get("/dashboard").get_data(as_text=True) == "hello new@example.com"
    devices = client.get("/auth/sessions", headers={"Accept": "application/json"}).get_json()
    assert [d["current"] for d in devices["sessions"]] == [True]


def test_user_signed_in_is_sent_with_method_external(app: Flask, client: Any) -> None:
    seen: list[tuple[str, str]] = []

    def record(sender: Flask, user: Any, session: Any, **extra: Any) -> None:
        seen.append((user.email, extra["method"]))

    with signals.user_signed_in.connected_to(record, app):
        client.post("/external/" + ADMIN[0])
        sign_in_ok(app.test_client(), USER)
    assert seen == [(ADMIN[0], "external"), (USER[0], "password")]


def test_the_session_the_request_carried_ends(app: Flask, client: Any) -> None:
    sign_in_ok(client, USER)
    old = session_cookie(client, app)
    ended: list[str] = []

    def record(sender: Flask, session_ids: list[str], user_id: int, reason: str) -> None:
        ended.append(reason)

    with signals.session_revoked.connected_to(record, app):
        assert client.post("/external/" + ADMIN[0]).get_json()["ok"] is True
    new = session_cookie(client, app)
    assert new and new != old
    assert ended == ["replaced"]
    replay = app.test_client()
    replay.set_cookie(flask_guardian.state.get_state(app).settings.cookie_name, old or "")
    assert replay.get("/auth/session").get_json() is None
    assert client.get("/admin").get_data(as_text=True) == "admin area"


def test_an_inactive_user_is_refused_and_nothing_is_started(app: Flask, client: Any) -> None:
    db = db_of(app)
    with app.app_context():
        user = guardian_of(app).authenticate(*USER)
        user.is_active = False
        db.session.commit()
        user_id = user.id
    failures: list[str] = []

    def record(sender: Flask, **extra: Any) -> None:
        failures.append(extra["reason"])

    with signals.sign_in_failed.connected_to(record, app):
        response = client.post("/external/" + USER[0])
    assert response.get_json() == {"ok": False, "error": "inactive"}
    assert failures == ["inactive"]
    assert session_cookie(client, app) is None
    assert client.get("/auth/session").get_json() is None
    with app.app_context():
        user = db.session.get(guardian_of(app).user_model, user_id)
        assert guardian_of(app).list_sessions(user) == []


def test_the_redirect_is_checked(app: Flask, client: Any) -> None:
    body = client.post("/register", data={"email": "a@example.com",
                                          "next": "//evil.example/"}).get_json()
    assert body["redirect"] == "/"
    body = app.test_client().post("/register", data={"email": "b@example.com",
                                                     "next": "/welcome?x=1"}).get_json()
    assert body["redirect"] == "/welcome?x=1"


def test_programming_mistakes_raise_and_start_nothing(app: Flask) -> None:
    user_model = guardian_of(app).user_model
    with app.test_request_context("/", method="POST"):
        with pytest.raises(ValueError, match=r"add the user to db\.session"):
            sign_in_user(user_model(email="loose@example.com"))
        with pytest.raises(TypeError):
            sign_in_user("user@example.com")
        user = guardian_of(app).authenticate(*USER)
        with pytest.raises(TypeError):
            sign_in_user(user, remember="yes")  # type: ignore[arg-type]
        assert flask_guardian.get_session() is None


def test_a_user_loaded_in_another_context_is_signed_in(app: Flask) -> None:
    with app.app_context():
        detached = guardian_of(app).authenticate(*USER)
    with app.test_request_context("/", method="POST"):
        result = sign_in_user(detached, remember=True)
        assert result.ok and result.session is not None
        assert result.session.user.email == USER[0]
        assert flask_guardian.get_session() is result.session


@pytest.mark.parametrize("where", ["issue", "commit"])
def test_an_outage_is_a_503_and_sends_no_cookie_for_the_unstored_session(
    app: Flask, client: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    sign_in_ok(client, USER)
    carried = session_cookie(client, app)
    state = flask_guardian.state.get_state(app)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, ConnectionError("database went away"))

    if where == "issue":
        monkeypatch.setattr(state.strategy, "issue", down)
    else:  # the session is issued, then its commit fails
        monkeypatch.setattr(state.db.session, "commit", down)
    response = client.post("/external/" + ADMIN[0], headers={"Accept": "application/json"})
    assert response.status_code == 503
    assert response.get_json()["error"] == "storage_unavailable"
    assert "Retry-After" in response.headers
    assert set_cookie_headers(response, cookie_name(app)) == []
    assert session_cookie(client, app) == carried  # no cookie for a session not stored
