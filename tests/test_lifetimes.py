"""Session lifetimes: the idle timeout, the absolute maximum age that activity never
extends, the refresh that writes only once the update age has passed, and
``Session.expires`` as the earlier of the two deadlines. Both strategies, every database.

The clock is moved with time-machine (``tick=False``); nothing sleeps. The start time is a
whole second so that no database's DATETIME precision moves a deadline.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import time_machine
from flask import Flask
from helpers import (
    SQL_REGISTRY,
    USER,
    AppFactory,
    QueryCounter,
    cookie_attributes,
    cookie_name,
    session_cookie,
    set_cookie_headers,
    sign_in_ok,
)

import flask_guardian

# The full database matrix: stored deadlines and refresh writes (DATETIME precision differs).
pytestmark = pytest.mark.databases

T0 = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)
MAX_AGE = 3600
IDLE = 600
UPDATE_AGE = 60
LIFETIMES: dict[str, Any] = {
    "GUARDIAN_SESSION_MAX_AGE": MAX_AGE,
    "GUARDIAN_SESSION_IDLE_TIMEOUT": IDLE,
    "GUARDIAN_SESSION_UPDATE_AGE": UPDATE_AGE,
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def signed_in(client: Any) -> bool:
    """Whether the client's next request is authenticated (one request)."""
    return client.get("/auth/session").get_json() is not None


def expires_of(client: Any) -> datetime:
    """``Session.expires`` as the client sees it (``GET /auth/session``)."""
    body = client.get("/auth/session").get_json()
    assert body is not None, "expected a signed-in client"
    expires = datetime.fromisoformat(body["expires"])
    assert expires.utcoffset() == timedelta(0), body["expires"]
    return expires


def cleared(response: Any, name: str) -> bool:
    """Whether ``response`` tells the browser to drop the cookie ``name``."""
    return any(
        cookie_attributes(h).get("max-age") == "0" for h in set_cookie_headers(response, name)
    )


def lifetime_client(make_app: AppFactory, **config: Any) -> tuple[Flask, Any]:
    app = make_app(**{**LIFETIMES, **config})
    return app, app.test_client()


# -- idle timeout -----------------------------------------------------------------------


def test_session_without_requests_for_idle_timeout_is_anonymous(make_app: AppFactory) -> None:
    app, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(at(IDLE))
        response = client.get("/dashboard")
        assert response.status_code == 303
        assert response.headers["Location"].startswith("/auth/signin")
        assert cleared(response, cookie_name(app))
        assert client.get("/auth/session").get_json() is None


def test_session_is_alive_until_the_idle_deadline(make_app: AppFactory) -> None:
    _, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(at(IDLE - 1))
        assert client.get("/dashboard").status_code == 200


def test_idle_expired_cookie_stays_dead_when_replayed_later(make_app: AppFactory) -> None:
    app, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        stale = session_cookie(client, app)
        assert stale
        clock.move_to(at(IDLE))
        replay = app.test_client()
        replay.set_cookie(cookie_name(app), stale)
        assert not signed_in(replay)
        clock.move_to(at(IDLE + UPDATE_AGE + 1))
        assert not signed_in(replay)


def test_requests_within_idle_timeout_keep_session_alive_past_it(make_app: AppFactory) -> None:
    _, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        alive = []
        for step in range(1, 6):  # 500 s apart, 2500 s in all: four idle timeouts
            clock.move_to(at(step * 500))
            alive.append(signed_in(client))
        assert alive == [True] * 5


# -- absolute deadline ------------------------------------------------------------------


def test_absolute_deadline_ends_session_despite_continuous_activity(
    make_app: AppFactory,
) -> None:
    _, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        alive = []
        for seconds in range(300, MAX_AGE, 300):
            clock.move_to(at(seconds))
            alive.append(signed_in(client))
        clock.move_to(at(MAX_AGE - 1))
        alive.append(signed_in(client))
        assert alive == [True] * len(alive)
        clock.move_to(at(MAX_AGE))
        assert client.get("/dashboard").status_code == 303
        assert not signed_in(client)


def test_refresh_near_the_absolute_deadline_does_not_extend_it(make_app: AppFactory) -> None:
    _, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        for seconds in range(500, MAX_AGE - 100, 500):
            clock.move_to(at(seconds))
            assert signed_in(client)
        clock.move_to(at(MAX_AGE - 100))  # now + idle would be 500 s past the deadline
        assert expires_of(client) == at(MAX_AGE)


# -- Session.expires --------------------------------------------------------------------


def test_expires_is_the_idle_deadline_when_it_comes_first(make_app: AppFactory) -> None:
    _, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        assert expires_of(client) == at(IDLE)
        clock.move_to(at(UPDATE_AGE))  # refreshed: the idle deadline moves
        assert expires_of(client) == at(UPDATE_AGE + IDLE)


def test_expires_is_the_absolute_deadline_when_it_comes_first(make_app: AppFactory) -> None:
    _, client = lifetime_client(
        make_app, GUARDIAN_SESSION_MAX_AGE=600, GUARDIAN_SESSION_IDLE_TIMEOUT=1800
    )
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        assert expires_of(client) == at(600)
        clock.move_to(at(300))
        assert expires_of(client) == at(600)
        clock.move_to(at(600))
        assert not signed_in(client)


def test_expires_is_timezone_aware_utc_in_python(app: Flask) -> None:
    with app.test_request_context("/", method="POST"):
        app.preprocess_request()
        result = flask_guardian.sign_in("credentials", email=USER[0], password=USER[1])
        assert result.session is not None
        assert result.session.expires.tzinfo is not None
        assert result.session.expires.utcoffset() == timedelta(0)


# -- refresh: only when due -------------------------------------------------------------


def test_no_write_before_update_age(make_app: AppFactory) -> None:
    app, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        with QueryCounter(app) as queries:
            for seconds in (0, 1, 30, UPDATE_AGE - 1):
                clock.move_to(at(seconds))
                assert client.get("/dashboard").status_code == 200
        assert queries.writes == []


def test_one_write_when_update_age_has_passed(make_app: AppFactory, strategy: str) -> None:
    app, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(at(UPDATE_AGE))
        with QueryCounter(app) as queries:
            assert client.get("/dashboard").status_code == 200
        assert len(queries.writes) == 1, queries.writes
        assert ("guardian_sessions" if strategy in SQL_REGISTRY else ":s:") in queries.writes[0]


def test_refresh_restarts_the_update_age(make_app: AppFactory) -> None:
    app, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(at(UPDATE_AGE))
        assert client.get("/dashboard").status_code == 200  # the refresh
        with QueryCounter(app) as between:
            for seconds in (UPDATE_AGE + 1, 2 * UPDATE_AGE - 1):
                clock.move_to(at(seconds))
                assert client.get("/dashboard").status_code == 200
        clock.move_to(at(2 * UPDATE_AGE))
        with QueryCounter(app) as due:
            assert client.get("/dashboard").status_code == 200
        assert between.writes == []
        assert len(due.writes) == 1, due.writes


def test_refresh_records_last_seen_in_the_device_list(make_app: AppFactory) -> None:
    _, client = lifetime_client(make_app)
    json = {"Accept": "application/json"}
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(at(UPDATE_AGE + 5))
        (row,) = client.get("/auth/sessions", headers=json).get_json()["sessions"]
        assert datetime.fromisoformat(row["lastSeen"]) == at(UPDATE_AGE + 5)
        assert datetime.fromisoformat(row["expires"]) == at(UPDATE_AGE + 5 + IDLE)
        assert datetime.fromisoformat(row["created"]) == T0


# -- jwt: the refreshed token is re-issued ----------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


@pytest.mark.parametrize("strategy", ["jwt"])
def test_jwt_refresh_reissues_cookie_with_new_idle_deadline(make_app: AppFactory) -> None:
    app, client = lifetime_client(make_app)
    name = cookie_name(app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        first = session_cookie(client, app)
        assert first
        clock.move_to(at(UPDATE_AGE - 1))
        response = client.get("/dashboard")
        assert set_cookie_headers(response, name) == []  # not due: same token
        clock.move_to(at(UPDATE_AGE))
        response = client.get("/dashboard")
        assert response.status_code == 200
        (header,) = set_cookie_headers(response, name)
        attrs = cookie_attributes(header)
        assert "httponly" in attrs
        second = attrs["__value__"]
        assert second != first
        old, new = _claims(first), _claims(second)
        assert new["sid"] == old["sid"]
        assert new["jti"] != old["jti"]
        assert new["auth_time"] == old["auth_time"] == int(T0.timestamp())
        assert new["iat"] == int(at(UPDATE_AGE).timestamp())
        assert new["exp"] == int(at(UPDATE_AGE + IDLE).timestamp())
        assert session_cookie(client, app) == second


@pytest.mark.parametrize("strategy", ["jwt"])
def test_jwt_reissued_token_never_outlives_the_absolute_deadline(make_app: AppFactory) -> None:
    app, client = lifetime_client(make_app)
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        for seconds in range(500, MAX_AGE, 500):
            clock.move_to(at(seconds))
            assert signed_in(client)
        token = session_cookie(client, app)
        assert token
        assert _claims(token)["exp"] == int(at(MAX_AGE).timestamp())
