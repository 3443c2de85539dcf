"""Remember me (SPEC §9): without it the cookie ends with the browser and the session keeps
the normal lifetimes; with it (form checkbox ``remember``, JSON ``"remember": true``) the
cookie persists and the session lives up to ``GUARDIAN_REMEMBER_MAX_AGE`` with idle timeout
``GUARDIAN_REMEMBER_IDLE_TIMEOUT``. And the sign-in page says why a session ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from helpers import (
    USER,
    AppFactory,
    cookie_attributes,
    cookie_name,
    csrf_token,
    db_of,
    guardian_of,
    set_cookie_headers,
    sign_in,
    sign_in_ok,
    sign_out,
)
from sqlalchemy import select

from flask_guardian import ConfigurationError
from flask_guardian.config import DEFAULTS, load_settings

#: The remember flag is a column of the SQL registry: every database.
pytestmark = pytest.mark.databases

START = datetime(2030, 3, 4, 8, 0, 0, tzinfo=UTC)
#: Short lifetimes, so each rule is seen within a few clock moves.
LIFETIMES = {
    "GUARDIAN_SESSION_MAX_AGE": 2 * 3600,
    "GUARDIAN_SESSION_IDLE_TIMEOUT": 600,
    "GUARDIAN_SESSION_UPDATE_AGE": 60,
    "GUARDIAN_REMEMBER_MAX_AGE": 6 * 3600,
    "GUARDIAN_REMEMBER_IDLE_TIMEOUT": 3600,
}
ENDED_ELSEWHERE = "Your session was ended on another device"
EXPIRED = "Your session expired"


def signed_in(client: Any) -> bool:
    return client.get("/auth/session").get_json() is not None


def expires_of(client: Any) -> datetime:
    return datetime.fromisoformat(client.get("/auth/session").get_json()["expires"])


def user_by_email(app: Flask, email: str) -> Any:
    model = guardian_of(app).user_model
    with app.app_context():
        user = db_of(app).session.execute(select(model).where(model.email == email)).scalar_one()
        db_of(app).session.expunge(user)
    return user


# -- lifetimes ----------------------------------------------------------------------------


def test_without_remember_me_the_normal_idle_timeout_applies(make_app: AppFactory) -> None:
    client = make_app(**LIFETIMES).test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        assert expires_of(client) == START + timedelta(seconds=600)
        clock.move_to(START + timedelta(seconds=601))
        assert not signed_in(client)


def test_a_remembered_session_outlives_the_normal_idle_timeout_up_to_its_own(
    make_app: AppFactory,
) -> None:
    client = make_app(**LIFETIMES).test_client()
    with time_machine.travel(START, tick=False) as clock:
        assert sign_in(client, *USER, remember=True).status_code == 303
        assert expires_of(client) == START + timedelta(seconds=3600)
        clock.move_to(START + timedelta(seconds=3599))  # idle far past the normal 600 s
        assert signed_in(client)
        # That request refreshed it with the remembered idle timeout, not the normal one.
        clock.move_to(START + timedelta(seconds=3599 + 1800))
        assert signed_in(client)
        assert expires_of(client) == START + timedelta(seconds=3599 + 1800 + 3600)
        clock.move_to(START + timedelta(seconds=3599 + 1800 + 3601))
        assert not signed_in(client)


def test_a_remembered_session_ends_at_the_remember_max_age_whatever_the_activity(
    make_app: AppFactory,
) -> None:
    client = make_app(**LIFETIMES).test_client()
    with time_machine.travel(START, tick=False) as clock:
        assert sign_in(client, *USER, remember=True).status_code == 303
        # Active every 50 minutes: past the normal 2-hour absolute lifetime, still in.
        for minutes in range(50, 6 * 60, 50):
            clock.move_to(START + timedelta(minutes=minutes))
            assert client.get("/dashboard").status_code == 200, minutes
        assert expires_of(client) == START + timedelta(hours=6)  # capped by the absolute
        clock.move_to(START + timedelta(hours=6, seconds=1))
        assert not signed_in(client)


def test_json_remember_true_persists_the_cookie_and_the_flag(make_app: AppFactory) -> None:
    app = make_app(**LIFETIMES)
    client = app.test_client()
    with time_machine.travel(START, tick=False):
        response = sign_in(client, *USER, json=True, remember=True)
        assert response.status_code == 200
        assert response.get_json()["session"]["expires"] == (
            START + timedelta(seconds=3600)).isoformat()
        (header,) = set_cookie_headers(response, cookie_name(app))
        assert "expires" in cookie_attributes(header)


@pytest.mark.parametrize("json", [False, True])
def test_remember_false_is_a_browser_session(make_app: AppFactory, json: bool) -> None:
    app = make_app(**LIFETIMES)
    client = app.test_client()
    data: dict[str, Any] = {"email": USER[0], "password": USER[1],
                            "csrf_token": csrf_token(client), "remember": False if json else "0"}
    with time_machine.travel(START, tick=False):
        if json:
            response = client.post("/auth/signin", json=data)
        else:
            response = client.post("/auth/signin", data=data)
        assert response.status_code == (200 if json else 303)
        (header,) = set_cookie_headers(response, cookie_name(app))
        assert "expires" not in cookie_attributes(header)
        assert expires_of(client) == START + timedelta(seconds=600)


@pytest.mark.parametrize(("json", "value"), [
    (True, "yes"), (True, 1), (True, [True]), (True, {"x": 1}),
    (False, "maybe"), (False, "2"),
])
def test_a_remember_value_that_is_not_a_yes_or_no_is_a_400_and_signs_nobody_in(
    app: Flask, json: bool, value: Any
) -> None:
    client = app.test_client()
    data = {"email": USER[0], "password": USER[1], "csrf_token": csrf_token(client),
            "remember": value}
    response = (client.post("/auth/signin", json=data) if json
                else client.post("/auth/signin", data=data))
    assert response.status_code == 400
    assert not signed_in(client)
    with app.app_context():
        assert guardian_of(app).list_sessions(user_by_email(app, USER[0])) == []


def test_a_privilege_change_rotates_a_remembered_session_into_a_remembered_one(
    make_app: AppFactory,
) -> None:
    """set_role rotates the current session (new id and token): "remember me" and its
    lifetimes carry over, so the rotated cookie still persists."""
    app = make_app(**LIFETIMES)
    guardian = guardian_of(app)

    @app.post("/promote")
    def promote() -> str:
        db = db_of(app)
        model = guardian.user_model
        user = db.session.execute(select(model).where(model.email == USER[0])).scalar_one()
        guardian.set_role(user, "editor")
        return "ok"

    client = app.test_client()
    with time_machine.travel(START, tick=False) as clock:
        assert sign_in(client, *USER, remember=True).status_code == 303
        clock.move_to(START + timedelta(minutes=30))
        response = client.post("/promote", headers={"X-CSRF-Token": csrf_token(client)})
        assert response.status_code == 200
        (header,) = set_cookie_headers(response, cookie_name(app))
        attrs = cookie_attributes(header)
        assert attrs["__value__"]
        assert "expires" in attrs
        assert client.get("/auth/session").get_json()["user"]["role"] == "editor"
        clock.move_to(START + timedelta(minutes=30, seconds=3599))  # past the normal idle
        assert signed_in(client)


# -- configuration ------------------------------------------------------------------------


def _config(**extra: Any) -> dict[str, Any]:
    return {"SECRET_KEY": "s" * 32, **extra}


def test_remember_lifetimes_default_to_30_and_7_days_and_take_a_timedelta() -> None:
    settings = load_settings(_config())
    assert (settings.remember_max_age, settings.remember_idle_timeout) == (
        30 * 86400, 7 * 86400)
    assert DEFAULTS["GUARDIAN_REMEMBER_MAX_AGE"] == 30 * 86400
    settings = load_settings(_config(GUARDIAN_REMEMBER_MAX_AGE=timedelta(days=14),
                                     GUARDIAN_REMEMBER_IDLE_TIMEOUT=timedelta(hours=36)))
    assert (settings.remember_max_age, settings.remember_idle_timeout) == (14 * 86400, 36 * 3600)


@pytest.mark.parametrize(("key", "value"), [
    ("GUARDIAN_REMEMBER_MAX_AGE", "30 days"),
    ("GUARDIAN_REMEMBER_MAX_AGE", 10),
    ("GUARDIAN_REMEMBER_MAX_AGE", True),
    ("GUARDIAN_REMEMBER_MAX_AGE", timedelta(seconds=90.5)),
    ("GUARDIAN_REMEMBER_IDLE_TIMEOUT", -1),
    ("GUARDIAN_REMEMBER_IDLE_TIMEOUT", 300),  # not above the 300 s update age
    ("GUARDIAN_REMEMBER_IDLE_TIMEOUT", None),
])
def test_an_unusable_remember_lifetime_fails_at_start_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(_config(**{key: value}))
    assert key in str(raised.value)


# -- why a session ended ------------------------------------------------------------------


def _followed(client: Any, response: Any) -> str:
    """The sign-in page a 303 from a protected page leads to."""
    assert response.status_code == 303
    assert "/auth/signin" in response.headers["Location"]
    page = client.get(response.headers["Location"])
    assert page.status_code == 200
    return str(page.get_data(as_text=True))


def test_a_session_ended_elsewhere_lands_on_sign_in_saying_so(app: Flask) -> None:
    laptop, phone = app.test_client(), app.test_client()
    sign_in_ok(laptop)
    sign_in_ok(phone)
    # The phone signs out everywhere else.
    response = phone.post("/auth/sessions/revoke-others",
                          headers={"X-CSRF-Token": csrf_token(phone)})
    assert response.status_code in (200, 303)
    page = _followed(laptop, laptop.get("/dashboard", headers={"Accept": "text/html"}))
    assert ENDED_ELSEWHERE in page
    assert EXPIRED not in page
    # Said once: the note is gone with that page.
    again = laptop.get("/auth/signin").get_data(as_text=True)
    assert ENDED_ELSEWHERE not in again


def test_an_expired_session_lands_on_sign_in_saying_it_expired(make_app: AppFactory) -> None:
    client = make_app(**LIFETIMES).test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(START + timedelta(seconds=601))
        page = _followed(client, client.get("/dashboard", headers={"Accept": "text/html"}))
    assert EXPIRED in page
    assert ENDED_ELSEWHERE not in page


def test_the_sign_in_page_itself_says_why_when_it_finds_the_cookie_dead(
    make_app: AppFactory,
) -> None:
    client = make_app(**LIFETIMES).test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(START + timedelta(seconds=601))
        response = client.get("/auth/signin")
    assert EXPIRED in response.get_data(as_text=True)
    assert ENDED_ELSEWHERE not in client.get("/auth/signin").get_data(as_text=True)


def test_signing_out_here_shows_no_ended_message(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client)
    sign_out(client)
    page = client.get("/auth/signin").get_data(as_text=True)
    assert ENDED_ELSEWHERE not in page and EXPIRED not in page


@pytest.mark.parametrize("value", ["revoked\x00", "<script>", "expired2", ""])
def test_a_forged_ended_note_shows_nothing(app: Flask, value: str) -> None:
    client = app.test_client()
    client.set_cookie(cookie_name(app) + "-ended", value)
    page = client.get("/auth/signin").get_data(as_text=True)
    assert ENDED_ELSEWHERE not in page and EXPIRED not in page


def test_sign_in_user_with_remember_starts_a_remembered_session(make_app: AppFactory) -> None:
    """``sign_in_user(user, remember=True)`` (registration, OAuth, magic link) gets the same
    persistent cookie and lifetimes as the password sign-in's checkbox; without it, a
    browser-session cookie."""
    app = make_app(**LIFETIMES)
    guardian = guardian_of(app)

    @app.post("/external/<int:remember>")
    def external(remember: int) -> str:
        db = db_of(app)
        model = guardian.user_model
        user = db.session.execute(select(model).where(model.email == USER[0])).scalar_one()
        assert guardian.sign_in_user(user, remember=bool(remember)).ok
        return "ok"

    for remember, idle in ((1, 3600), (0, 600)):
        client = app.test_client()
        with time_machine.travel(START, tick=False):
            response = client.post(f"/external/{remember}")
            assert response.status_code == 200
            (header,) = set_cookie_headers(response, cookie_name(app))
            assert ("expires" in cookie_attributes(header)) is bool(remember)
            assert expires_of(client) == START + timedelta(seconds=idle)
