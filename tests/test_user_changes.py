"""Deactivating or deleting a user ends their sessions, whichever strategy holds them: the
next request is anonymous (a browser is sent to sign in, an API client gets 401), never a
500. Both strategies, every database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask, g
from helpers import ADMIN, USER, AppFactory, db_of, guardian_of, session_cookie, sign_in, sign_in_ok
from sqlalchemy import delete, select, update

import flask_guardian
from flask_guardian.state import get_state

# The full database matrix: user rows changed and deleted, their sessions ended.
pytestmark = pytest.mark.databases

JSON = {"Accept": "application/json"}


def user_row(app: Flask, email: str) -> Any:
    model = guardian_of(app).user_model
    return db_of(app).session.execute(select(model).where(model.email == email)).scalar_one()


def deactivate(app: Flask, email: str) -> None:
    with app.app_context():
        user_row(app, email).is_active = False
        db_of(app).session.commit()


def delete_user(app: Flask, email: str) -> None:
    with app.app_context():
        db_of(app).session.delete(user_row(app, email))
        db_of(app).session.commit()


def assert_signed_out_everywhere(client: Any) -> None:
    """Every way the client can ask gives the anonymous answer, none a 500."""
    assert client.get("/auth/session").get_json() is None
    page = client.get("/dashboard")
    assert page.status_code == 303
    assert page.headers["Location"] == "/auth/signin?redirectUrl=%2Fdashboard"
    api = client.get("/api/me", headers=JSON)
    assert api.status_code == 401
    assert api.get_json()["error"] == "unauthorized"
    assert client.get("/auth/sessions").status_code == 303
    assert client.get("/").status_code == 200


ENDINGS = {"deactivated": deactivate, "deleted": delete_user}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_ended_user_sessions_are_anonymous_never_500(app: Flask, ending: str) -> None:
    first, second = app.test_client(), app.test_client()
    sign_in_ok(first, USER)
    sign_in_ok(second, USER)
    ENDINGS[ending](app, USER[0])
    assert_signed_out_everywhere(first)
    assert_signed_out_everywhere(second)


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_ending_one_user_leaves_other_users_signed_in(app: Flask, ending: str) -> None:
    user, admin = app.test_client(), app.test_client()
    sign_in_ok(user, USER)
    sign_in_ok(admin, ADMIN)
    ENDINGS[ending](app, USER[0])
    assert admin.get("/admin").status_code == 200


def test_deactivated_user_has_no_live_sessions_listed(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client, USER)
    deactivate(app, USER[0])
    with app.app_context():
        assert guardian_of(app).list_sessions(user_row(app, USER[0])) == []


def test_reactivating_a_user_does_not_revive_ended_sessions(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client, USER)
    stale = session_cookie(client, app)
    deactivate(app, USER[0])
    with app.app_context():
        user_row(app, USER[0]).is_active = True
        db_of(app).session.commit()
    assert client.get("/auth/session").get_json() is None
    replay = app.test_client()
    replay.set_cookie(get_state(app).settings.cookie_name, stale or "")
    assert replay.get("/auth/session").get_json() is None
    sign_in_ok(client, USER)  # the account itself works again
    assert client.get("/dashboard").status_code == 200


def test_deactivated_user_cannot_sign_in(app: Flask) -> None:
    deactivate(app, USER[0])
    client = app.test_client()
    response = sign_in(client, *USER, json=True)
    assert response.status_code == 401
    assert response.get_json() == {"ok": False, "error": "invalid_credentials"}
    assert client.get("/auth/session").get_json() is None


def test_new_account_with_a_deleted_users_email_inherits_no_session(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client, USER)
    stale = session_cookie(client, app)
    assert stale
    delete_user(app, USER[0])
    with app.app_context():
        guardian_of(app).create_user(USER[0], "another-password-789")
    replay = app.test_client()
    replay.set_cookie(get_state(app).settings.cookie_name, stale)
    assert_signed_out_everywhere(replay)


def test_user_deleting_own_account_and_signing_out_is_not_an_error(
    make_app: AppFactory,
) -> None:
    app = make_app()
    guardian, db = guardian_of(app), db_of(app)

    @app.post("/test/delete-me")
    def delete_me() -> Any:
        db.session.delete(db.session.get(guardian.user_model, g.session.user.id))
        db.session.commit()
        return {"redirect": flask_guardian.sign_out().redirect_url}

    client = app.test_client()
    sign_in_ok(client, USER)
    response = client.post("/test/delete-me")
    assert response.status_code == 200
    assert response.get_json() == {"redirect": "/"}
    assert_signed_out_everywhere(client)


# -- changes made with Core SQL bypass the ORM events ----------------------------------


def test_user_deactivated_with_core_sql_is_anonymous_by_the_next_refresh(
    make_app: AppFactory,
) -> None:
    app = make_app(GUARDIAN_SESSION_UPDATE_AGE=60)
    t0 = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)
    client = app.test_client()
    with time_machine.travel(t0, tick=False) as clock:
        sign_in_ok(client, USER)
        with app.app_context():
            users = guardian_of(app).user_model.__table__
            db_of(app).session.execute(
                update(users).where(users.c.email == USER[0]).values(is_active=False)
            )
            db_of(app).session.commit()
        clock.move_to(t0 + timedelta(seconds=60))
        assert_signed_out_everywhere(client)


def test_user_deleted_with_core_sql_is_anonymous_by_the_next_refresh(
    make_app: AppFactory,
) -> None:
    app = make_app(GUARDIAN_SESSION_UPDATE_AGE=60)
    t0 = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)
    client = app.test_client()
    with time_machine.travel(t0, tick=False) as clock:
        sign_in_ok(client, USER)
        with app.app_context():
            state = get_state(app)
            users = state.models.user.__table__
            sessions = state.models.session.__table__
            user_id = user_row(app, USER[0]).id
            # What an application's own cleanup script would do (no FK cascade on SQLite).
            db_of(app).session.execute(delete(sessions).where(sessions.c.user_id == user_id))
            db_of(app).session.execute(delete(users).where(users.c.id == user_id))
            db_of(app).session.commit()
        clock.move_to(t0 + timedelta(seconds=60))
        assert_signed_out_everywhere(client)


@pytest.mark.parametrize("update_age", [0, 60])
def test_an_account_that_gets_a_deleted_users_id_adopts_none_of_its_sessions(
    make_app: AppFactory, update_age: int
) -> None:
    """A user deleted outside the ORM (no cascade on SQLite) leaves its session rows, and
    SQLite hands the highest id out again: the next account made must never inherit the
    deleted user's live cookie or JWT (database at once, jwt by its next refresh)."""
    app = make_app(GUARDIAN_SESSION_UPDATE_AGE=update_age)
    t0 = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)
    victim = app.test_client()
    with time_machine.travel(t0, tick=False) as clock:
        sign_in_ok(victim, USER)
        with app.app_context():
            users = guardian_of(app).user_model.__table__
            user_id = user_row(app, USER[0]).id
            db_of(app).session.execute(delete(users).where(users.c.id == user_id))
            db_of(app).session.commit()
            newcomer = guardian_of(app).create_user("newcomer@example.com", "newcomer-pass-1")
            # However the id was chosen, an account with the old id must adopt nothing.
            db_of(app).session.execute(
                update(users).where(users.c.id == newcomer.id).values(id=user_id)
            )
            db_of(app).session.commit()
        clock.move_to(t0 + timedelta(seconds=61))
        assert victim.get("/auth/session").get_json() is None
        assert victim.get("/api/me", headers=JSON).status_code == 401


@pytest.mark.parametrize("change", ["set_password", "set_role"])
def test_changing_a_user_loaded_in_another_context_is_not_lost(
    app: Flask, change: str
) -> None:
    """A user object from a closed app context (detached) is changed in the database all
    the same, and its other sessions see the change; nothing is silently dropped."""
    other = app.test_client()
    sign_in_ok(other, USER)
    with app.app_context():
        detached = user_row(app, USER[0])
    guardian = guardian_of(app)
    with app.app_context():
        if change == "set_password":
            guardian.set_password(detached, "a-brand-new-password-1")
        else:
            guardian.set_role(detached, "editor")
    with app.app_context():
        fresh = user_row(app, USER[0])
        if change == "set_password":
            assert guardian.authenticate(USER[0], "a-brand-new-password-1") is not None
            assert other.get("/auth/session").get_json() is None  # other sessions ended
        else:
            assert fresh.role == "editor"
            assert other.get("/auth/session").get_json()["user"]["role"] == "editor"


def test_changing_a_user_that_no_longer_exists_is_refused_loudly(app: Flask) -> None:
    guardian = guardian_of(app)
    with app.app_context():
        detached = user_row(app, USER[0])
        db_of(app).session.delete(detached)
        db_of(app).session.commit()
    with app.app_context(), pytest.raises(LookupError, match="no longer exists"):
        guardian.set_role(detached, "editor")
