"""The session field ``two_factor`` (contract 1 of issue 14): a session started with a
second factor says so in ``g.session``, ``GET /auth/session`` (``twoFactor``) and the device
list; every strategy stores it (the registry column, the jwt claim ``amr``, the redis
record), so another process reads it back, and a refresh or a rotation keeps it. A
password-only session is ``two_factor=False`` everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import time_machine
from flask import Flask, g, jsonify, request
from helpers import (
    JWT_SECRET,
    USER,
    AppFactory,
    db_of,
    guardian_of,
    session_cookie,
    sign_in_ok,
    store_config,
)
from sqlalchemy import select

from flask_guardian import login_required
from flask_guardian.auth import begin_session
from flask_guardian.state import get_state
from flask_guardian.strategies.redis_records import encode_record, parse_record

pytestmark = pytest.mark.databases

JSON = {"Accept": "application/json"}
START = datetime(2030, 5, 6, 9, 0, 0, tzinfo=UTC)
NEW_PASSWORD = "a-brand-new-password-456"


def add_routes(app: Flask) -> None:
    """What the two-factor sign-in step does once the code checked out (it is another
    branch's view; here the session is begun the same way), and a password change."""
    guardian = guardian_of(app)
    db = db_of(app)
    model = guardian.user_model

    @app.post("/test/signin-2fa")
    def signin_2fa() -> Any:
        user = db.session.execute(
            select(model).where(model.email == request.form["email"])).scalar_one()
        session = begin_session(get_state(), user, "two_factor", two_factor=True,
                                remember=request.form.get("remember") == "1")
        return jsonify(session.to_dict())

    @app.post("/test/set-password")
    @login_required
    def set_password() -> str:
        guardian.set_password(db.session.get(model, g.session.user.id), NEW_PASSWORD)
        return "ok"

    @app.get("/test/flags")
    @login_required
    def flags() -> Any:
        return jsonify(two_factor=g.session.two_factor, remember=g.session.remember)


def two_factor_app(make_app: AppFactory, **config: Any) -> Flask:
    app = make_app(**config)
    add_routes(app)
    return app


def sign_in_2fa(client: Any, email: str = USER[0], *, remember: bool = False) -> Any:
    response = client.post("/test/signin-2fa",
                           data={"email": email, "remember": "1" if remember else ""})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def session_body(client: Any) -> dict[str, Any]:
    body = client.get("/auth/session").get_json()
    assert body is not None, "not signed in"
    return dict(body)


def device_list(client: Any) -> list[dict[str, Any]]:
    return list(client.get("/auth/sessions", headers=JSON).get_json()["sessions"])


def test_a_password_sign_in_is_not_two_factor(make_app: AppFactory) -> None:
    client = two_factor_app(make_app).test_client()
    sign_in_ok(client)
    assert session_body(client)["twoFactor"] is False
    assert client.get("/test/flags").get_json()["two_factor"] is False
    (entry,) = device_list(client)
    assert entry["twoFactor"] is False
    assert "Password and code" not in client.get("/auth/sessions").get_data(as_text=True)


def test_a_two_factor_session_says_so_everywhere(make_app: AppFactory) -> None:
    client = two_factor_app(make_app).test_client()
    assert sign_in_2fa(client).get_json()["twoFactor"] is True
    assert session_body(client)["twoFactor"] is True
    assert client.get("/test/flags").get_json() == {"two_factor": True, "remember": False}
    (entry,) = device_list(client)
    assert entry["twoFactor"] is True and entry["current"] is True
    assert "Password and code" in client.get("/auth/sessions").get_data(as_text=True)


def test_the_device_list_tells_each_session_apart(make_app: AppFactory) -> None:
    app = two_factor_app(make_app)
    with_code, password_only = app.test_client(), app.test_client()
    sign_in_2fa(with_code)
    sign_in_ok(password_only)
    flags = {e["current"]: e["twoFactor"] for e in device_list(with_code)}
    assert flags == {True: True, False: False}


def test_the_flag_is_stored_another_process_reads_it(make_app: AppFactory) -> None:
    first = two_factor_app(make_app)
    client = first.test_client()
    sign_in_2fa(client, remember=True)
    # A second app on the same store: it has never seen this session, so it reads it back
    # from the registry row, the token's claims or the redis record.
    second = two_factor_app(make_app, **store_config(first))
    other = second.test_client()
    other.set_cookie(get_state(first).settings.cookie_name, session_cookie(client, first) or "")
    assert other.get("/test/flags").get_json() == {"two_factor": True, "remember": True}


def test_a_refresh_keeps_the_flag(make_app: AppFactory) -> None:
    app = two_factor_app(make_app)
    client = app.test_client()
    settings = get_state(app).settings
    with time_machine.travel(START, tick=False) as clock:
        sign_in_2fa(client)
        clock.move_to(START + timedelta(seconds=settings.update_age + 1))
        body = session_body(client)
        # The refresh happened (the idle deadline moved on) and the flag came through it.
        assert datetime.fromisoformat(body["expires"]) > START + timedelta(
            seconds=settings.idle_timeout)
        assert body["twoFactor"] is True
        assert client.get("/test/flags").get_json()["two_factor"] is True


def test_a_rotation_keeps_the_flag(make_app: AppFactory) -> None:
    app = two_factor_app(make_app)
    client = app.test_client()
    sign_in_2fa(client)
    (before,) = device_list(client)
    assert client.post("/test/set-password").status_code == 200
    (after,) = device_list(client)
    assert after["id"] != before["id"]  # rotated: a new session ...
    assert after["twoFactor"] is True  # ... that kept the flag
    assert session_body(client)["twoFactor"] is True


def test_a_password_sign_in_over_a_two_factor_session_is_not_two_factor(
    make_app: AppFactory,
) -> None:
    client = two_factor_app(make_app).test_client()
    sign_in_2fa(client)
    sign_in_ok(client)  # a new session replaces it; its flag is its own
    assert session_body(client)["twoFactor"] is False


# -- the jwt claim ``amr`` ------------------------------------------------------------------


def claims_of(client: Any, app: Flask) -> dict[str, Any]:
    token = session_cookie(client, app)
    assert token is not None
    return dict(jwt.decode(token, options={"verify_signature": False}))


def jwt_only(strategy: str) -> None:
    if strategy != "jwt":
        pytest.skip("the amr claim is the jwt strategy's")


def test_jwt_amr_claim(make_app: AppFactory, strategy: str) -> None:
    jwt_only(strategy)
    app = two_factor_app(make_app)
    password, code = app.test_client(), app.test_client()
    sign_in_ok(password)
    sign_in_2fa(code)
    assert claims_of(password, app)["amr"] == ["pwd"]
    assert claims_of(code, app)["amr"] == ["pwd", "otp"]


def resigned(client: Any, app: Flask, **changes: Any) -> str:
    claims = claims_of(client, app)
    claims.update(changes)
    for name, value in changes.items():
        if value is None:
            del claims[name]
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


@pytest.mark.parametrize("amr", [["otp"], ["pwd", "otp", "x"], "pwd otp", {"pwd": 1}, 1, [],
                                 ["pwd", 2]])
def test_jwt_a_token_with_an_amr_we_never_write_is_refused(
    make_app: AppFactory, strategy: str, amr: Any,
) -> None:
    jwt_only(strategy)
    app = two_factor_app(make_app)
    client = app.test_client()
    sign_in_ok(client)
    fresh = app.test_client()  # a client of its own: the token is verified, not cached
    fresh.set_cookie(get_state(app).settings.cookie_name, resigned(client, app, amr=amr))
    assert fresh.get("/auth/session").get_json() is None


def test_jwt_a_token_from_before_the_claim_is_password_only(
    make_app: AppFactory, strategy: str,
) -> None:
    jwt_only(strategy)
    app = two_factor_app(make_app)
    client = app.test_client()
    sign_in_ok(client)
    old = app.test_client()
    old.set_cookie(get_state(app).settings.cookie_name, resigned(client, app, amr=None))
    assert old.get("/test/flags").get_json()["two_factor"] is False


# -- the redis record -----------------------------------------------------------------------


class _User:
    id, email, name, role = 7, "a@example.com", None, "user"


@pytest.mark.parametrize(("remember", "two_factor"), [(False, False), (True, False),
                                                      (False, True), (True, True)])
def test_redis_record_round_trip(remember: bool, two_factor: bool) -> None:
    raw = encode_record("sid", _User(), "u", 1.0, 2.0, 3.0, 4.0, None, None, remember,
                        two_factor).encode()
    record = parse_record(raw, "redis", 60)
    assert record is not None
    session = record.loaded.session
    assert (session.remember, session.two_factor) == (remember, two_factor)


def test_redis_records_written_before_the_flag_still_read() -> None:
    raw = encode_record("sid", _User(), "u", 1.0, 2.0, 3.0, 4.0, None, None, True)
    fields = raw.split("\x1f")
    v2 = "\x1f".join(["2", *fields[1:-1]]).encode()  # version 2: no two-factor field
    v1 = "\x1f".join(["1", *fields[1:-2]]).encode()  # version 1: no flags at all
    two, one = parse_record(v2, "redis", 60), parse_record(v1, "redis", 60)
    assert two is not None and one is not None
    assert (two.loaded.session.remember, two.loaded.session.two_factor) == (True, False)
    assert (one.loaded.session.remember, one.loaded.session.two_factor) == (False, False)
    # A record with the wrong number of fields for its version is not ours.
    assert parse_record("\x1f".join(["3", *fields[1:-1]]).encode(), "redis", 60) is None
    assert parse_record("\x1f".join(["2", *fields[1:]]).encode(), "redis", 60) is None
