"""Session fixation and rotation: a session id the server did not issue is never adopted,
signing in always starts a new session and ends the one the request carried, and privilege
changes (``set_password``, ``set_role``) rotate the current session and reach the user's
other sessions. Both strategies, every database."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask, g, request
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    cookie_attributes,
    cookie_name,
    db_of,
    guardian_of,
    session_cookie,
    set_cookie_headers,
    sign_in_ok,
)
from sqlalchemy import select

from flask_guardian import login_required

# The full database matrix: session rows created and ended on rotation.
pytestmark = pytest.mark.databases

NEW_PASSWORD = "a-brand-new-password-456"
JSON = {"Accept": "application/json"}


def add_privilege_routes(app: Flask) -> None:
    """Views an application would write: change my password, change my role."""
    guardian = guardian_of(app)
    db = db_of(app)

    def me() -> Any:
        return db.session.get(guardian.user_model, g.session.user.id)

    @app.post("/test/set-password")
    @login_required
    def set_password() -> str:
        guardian.set_password(me(), request.form["password"])
        return "ok"

    @app.post("/test/set-role")
    @login_required
    def set_role() -> str:
        guardian.set_role(me(), request.form["role"])
        return "ok"


def privilege_app(make_app: AppFactory, **config: Any) -> Flask:
    app = make_app(**config)
    add_privilege_routes(app)
    return app


def user_row(app: Flask, email: str) -> Any:
    guardian = guardian_of(app)
    model = guardian.user_model
    return db_of(app).session.execute(select(model).where(model.email == email)).scalar_one()


def whoami(client: Any) -> dict[str, Any] | None:
    body = client.get("/auth/session").get_json()
    return None if body is None else dict(body["user"])


def current_session_id(client: Any) -> str:
    sessions = client.get("/auth/sessions", headers=JSON).get_json()["sessions"]
    (current,) = [s["id"] for s in sessions if s["current"]]
    return str(current)


def live_session_ids(app: Flask, email: str) -> set[str]:
    with app.app_context():
        return {s.id for s in guardian_of(app).list_sessions(user_row(app, email))}


def client_with_cookie(app: Flask, value: str) -> Any:
    client = app.test_client()
    client.set_cookie(cookie_name(app), value)
    return client


def cleared(response: Any, name: str) -> bool:
    return any(
        cookie_attributes(h).get("max-age") == "0" for h in set_cookie_headers(response, name)
    )


# -- fixation ---------------------------------------------------------------------------


def test_unknown_cookie_is_anonymous_and_cleared(app: Flask) -> None:
    planted = secrets.token_urlsafe(32)  # the shape of a real database-strategy token
    client = client_with_cookie(app, planted)
    response = client.get("/auth/session")
    assert response.get_json() is None
    assert cleared(response, cookie_name(app))
    assert client_with_cookie(app, planted).get("/dashboard").status_code == 303


def test_sign_in_never_adopts_a_planted_cookie(app: Flask) -> None:
    planted = secrets.token_urlsafe(32)
    victim = client_with_cookie(app, planted)
    sign_in_ok(victim, ADMIN)
    issued = session_cookie(victim, app)
    assert issued and issued != planted
    assert whoami(victim) == {"id": 1, "email": ADMIN[0], "name": "Ada Admin", "role": "admin"}
    attacker = client_with_cookie(app, planted)
    assert whoami(attacker) is None
    assert attacker.get("/admin").status_code == 303


def test_sign_in_over_a_planted_session_ends_it_and_issues_a_new_one(app: Flask) -> None:
    attacker = app.test_client()
    sign_in_ok(attacker, USER)
    planted = session_cookie(attacker, app)
    assert planted
    attacker_session = current_session_id(attacker)
    victim = client_with_cookie(app, planted)
    sign_in_ok(victim, ADMIN)
    assert session_cookie(victim, app) != planted
    assert current_session_id(victim) != attacker_session
    assert whoami(victim) == {"id": 1, "email": ADMIN[0], "name": "Ada Admin", "role": "admin"}
    # The attacker's copy of the cookie names a session that has ended.
    assert whoami(attacker) is None
    assert live_session_ids(app, USER[0]) == set()


def test_sign_in_again_ends_previous_session_and_issues_new_id_and_token(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client, USER)
    first_token, first_id = session_cookie(client, app), current_session_id(client)
    sign_in_ok(client, USER)
    second_token, second_id = session_cookie(client, app), current_session_id(client)
    assert first_token and second_token and second_token != first_token
    assert second_id != first_id
    assert live_session_ids(app, USER[0]) == {second_id}
    assert whoami(client_with_cookie(app, first_token)) is None
    assert whoami(client)["email"] == USER[0]  # type: ignore[index]


# -- set_password -----------------------------------------------------------------------


def test_set_password_ends_other_sessions_and_rotates_current(make_app: AppFactory) -> None:
    app = privilege_app(make_app)
    current, other = app.test_client(), app.test_client()
    sign_in_ok(current, USER)
    sign_in_ok(other, USER)
    old_token, old_id = session_cookie(current, app), current_session_id(current)
    assert old_token

    response = current.post("/test/set-password", data={"password": NEW_PASSWORD})
    assert response.status_code == 200
    (header,) = set_cookie_headers(response, cookie_name(app))
    new_token = cookie_attributes(header)["__value__"]
    assert new_token and new_token != old_token
    new_id = current_session_id(current)
    assert new_id != old_id
    assert whoami(current)["email"] == USER[0]  # type: ignore[index]

    assert whoami(other) is None
    assert whoami(client_with_cookie(app, old_token)) is None
    assert live_session_ids(app, USER[0]) == {new_id}


def test_set_password_does_not_touch_other_users_sessions(make_app: AppFactory) -> None:
    app = privilege_app(make_app)
    user, admin = app.test_client(), app.test_client()
    sign_in_ok(user, USER)
    sign_in_ok(admin, ADMIN)
    assert user.post("/test/set-password", data={"password": NEW_PASSWORD}).status_code == 200
    assert whoami(admin)["email"] == ADMIN[0]  # type: ignore[index]


def test_set_password_outside_a_request_ends_every_session(app: Flask) -> None:
    first, second = app.test_client(), app.test_client()
    sign_in_ok(first, USER)
    sign_in_ok(second, USER)
    with app.app_context():
        guardian_of(app).set_password(user_row(app, USER[0]), NEW_PASSWORD)
    assert whoami(first) is None
    assert whoami(second) is None
    assert live_session_ids(app, USER[0]) == set()


def test_rotation_keeps_the_absolute_deadline(make_app: AppFactory) -> None:
    app = privilege_app(
        make_app,
        GUARDIAN_SESSION_MAX_AGE=3600,
        GUARDIAN_SESSION_IDLE_TIMEOUT=600,
        GUARDIAN_SESSION_UPDATE_AGE=60,
    )
    t0 = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)
    client = app.test_client()
    with time_machine.travel(t0, tick=False) as clock:
        sign_in_ok(client, USER)
        for seconds in (500, 1000, 1500, 2000, 2500):
            clock.move_to(t0 + timedelta(seconds=seconds))
            assert whoami(client) is not None
        clock.move_to(t0 + timedelta(seconds=3000))
        response = client.post("/test/set-password", data={"password": NEW_PASSWORD})
        assert response.status_code == 200
        expires = datetime.fromisoformat(client.get("/auth/session").get_json()["expires"])
        assert expires == t0 + timedelta(seconds=3600)
        clock.move_to(t0 + timedelta(seconds=3599))
        assert whoami(client) is not None
        clock.move_to(t0 + timedelta(seconds=3600))
        assert whoami(client) is None


# -- set_role ---------------------------------------------------------------------------


def test_set_role_rotates_the_current_session(make_app: AppFactory) -> None:
    app = privilege_app(make_app)
    client = app.test_client()
    sign_in_ok(client, ADMIN)
    old_token, old_id = session_cookie(client, app), current_session_id(client)
    assert old_token
    response = client.post("/test/set-role", data={"role": "user"})
    assert response.status_code == 200
    (header,) = set_cookie_headers(response, cookie_name(app))
    assert cookie_attributes(header)["__value__"] not in ("", old_token)
    assert current_session_id(client) != old_id
    assert whoami(client)["role"] == "user"  # type: ignore[index]
    assert client.get("/admin").status_code == 403
    assert whoami(client_with_cookie(app, old_token)) is None


def test_demotion_is_visible_on_the_other_sessions_next_request(make_app: AppFactory) -> None:
    app = privilege_app(make_app)
    acting, other = app.test_client(), app.test_client()
    sign_in_ok(acting, ADMIN)
    sign_in_ok(other, ADMIN)
    assert other.get("/admin").status_code == 200
    other_id = current_session_id(other)

    assert acting.post("/test/set-role", data={"role": "user"}).status_code == 200

    assert other.get("/admin").status_code == 403
    assert other.get("/admin").status_code == 403
    assert whoami(other)["role"] == "user"  # type: ignore[index]
    # Still signed in: a role change is not a sign-out for the other devices.
    assert current_session_id(other) == other_id


def test_role_change_outside_a_request_reaches_every_session(app: Flask) -> None:
    first, second = app.test_client(), app.test_client()
    sign_in_ok(first, USER)
    sign_in_ok(second, USER)
    assert first.get("/admin").status_code == 403
    with app.app_context():
        guardian_of(app).set_role(user_row(app, USER[0]), "admin")
    assert first.get("/admin").status_code == 200
    assert second.get("/admin").status_code == 200
    with app.app_context():
        guardian_of(app).set_role(user_row(app, USER[0]), "user")
    assert first.get("/admin").status_code == 403
    assert second.get("/admin").status_code == 403


def test_role_changed_through_the_orm_reaches_live_sessions(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client, ADMIN)
    assert client.get("/admin").status_code == 200
    with app.app_context():
        user_row(app, ADMIN[0]).role = "user"
        db_of(app).session.commit()
    assert client.get("/admin").status_code == 403
    assert whoami(client)["role"] == "user"  # type: ignore[index]
