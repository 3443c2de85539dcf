"""Fresh sign-in (SPEC §10, issue 14): ``fresh_login_required`` lets a session through only
within ``GUARDIAN_FRESH_WITHIN`` seconds (or ``within=``) of its last authentication; a stale
one is sent to ``/auth/reauthenticate`` (browsers) or gets 401 ``reauthentication_required``
(JSON). Re-authenticating takes the password through the sign-in's own check and lockout,
needs the CSRF token, rotates the session (the old cookie dies, the new one is fresh, with
the same "remember me" and two-factor flags) and goes back to a checked ``redirectUrl``.
The clock is moved with time-machine; every strategy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import time_machine
from flask import Flask, g, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from helpers import (
    ADMIN,
    BASE_CONFIG,
    USER,
    AppFactory,
    cookie_name,
    csrf_token,
    db_of,
    guardian_of,
    session_cookie,
    set_cookie_headers,
    sign_in,
    sign_in_ok,
    strategy_config,
)
from servers import ProxiedDatabase, delete_redis_keys
from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column

from flask_guardian import (
    ConfigurationError,
    Guardian,
    ReauthenticationRequired,
    UserMixin,
    fresh_login_required,
    signals,
)
from flask_guardian.auth import begin_session
from flask_guardian.config import load_settings
from flask_guardian.state import get_state
from flask_guardian.two_factor_enrolment import begin_setup, enable

pytestmark = pytest.mark.databases

JSON = {"Accept": "application/json"}
START = datetime(2030, 7, 8, 10, 0, 0, tzinfo=UTC)
#: Past the default GUARDIAN_FRESH_WITHIN (600 s), well within the 30-minute idle timeout.
STALE = START + timedelta(seconds=601)
WRONG = "not-the-password-000"


def add_routes(app: Flask) -> None:
    """Views an application would protect, and (as the two-factor step would) a session
    begun with a second factor."""
    guardian = guardian_of(app)
    model = guardian.user_model

    @app.get("/settings/delete-account")
    @fresh_login_required()
    def delete_account() -> str:
        return "are you sure?"

    @app.get("/settings/bare")
    @fresh_login_required
    def bare() -> str:
        return "bare"

    @app.get("/settings/strict")
    @fresh_login_required(within=60)
    def strict() -> str:
        return "strict"

    @app.get("/settings/timedelta")
    @fresh_login_required(within=timedelta(hours=1))
    def lenient() -> str:
        return "lenient"

    @app.post("/test/signin-2fa")
    def signin_2fa() -> Any:
        user = db_of(app).session.execute(
            select(model).where(model.email == request.form["email"])).scalar_one()
        session = begin_session(get_state(), user, "two_factor", two_factor=True,
                                remember=True)
        return jsonify(session.to_dict())

    @app.post("/test/signin-password-only")
    def signin_password_only() -> Any:
        # A session that passed no second factor (e.g. one from before 2FA was turned on,
        # or an app's own sign-in): sign-in itself asks a 2FA user for the code.
        user = db_of(app).session.execute(
            select(model).where(model.email == request.form["email"])).scalar_one()
        return jsonify(begin_session(get_state(), user, "password").to_dict())

    @app.get("/test/flags")
    def flags() -> Any:
        s = g.get("session")
        return jsonify(None if s is None else {
            "id": s.id, "two_factor": s.two_factor, "remember": s.remember,
            "auth_time": s.auth_time.isoformat()})


def fresh_app(make_app: AppFactory, **config: Any) -> Flask:
    app = make_app(**config)
    add_routes(app)
    return app


def flags(client: Any) -> dict[str, Any] | None:
    body = client.get("/test/flags").get_json()
    return None if body is None else dict(body)


def reauth(client: Any, password: str = USER[1], *, json: bool = False,
           redirect_url: str | None = None, csrf: bool = True, **extra: Any) -> Any:
    data: dict[str, Any] = {"password": password, **extra}
    if csrf:
        data["csrf_token"] = csrf_token(client)
    if redirect_url is not None:
        data["redirectUrl"] = redirect_url
    if json:
        return client.post("/auth/reauthenticate", json=data)
    return client.post("/auth/reauthenticate", data=data)


def location_of(response: Any) -> tuple[str, dict[str, list[str]]]:
    assert response.status_code == 303, response.get_data(as_text=True)
    parts = urlsplit(response.headers["Location"])
    return parts.path, parse_qs(parts.query)


# -- the decorator ----------------------------------------------------------------------------


def test_a_fresh_session_passes(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(START + timedelta(seconds=600))
        assert client.get("/settings/delete-account").status_code == 200
        assert client.get("/settings/bare").status_code == 200


def test_a_stale_session_is_sent_to_reauthenticate(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(STALE)
        for path in ("/settings/delete-account?step=2", "/settings/bare"):
            where, query = location_of(client.get(path))
            assert where == "/auth/reauthenticate"
            assert query == {"redirectUrl": [path]}
        # Still signed in: only the fresh routes ask again.
        assert client.get("/dashboard").status_code == 200


def test_a_stale_session_gets_401_json(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(STALE)
        response = client.get("/settings/delete-account", headers=JSON)
        assert response.status_code == 401
        assert response.get_json()["error"] == "reauthentication_required"


def test_anonymous_requests_are_treated_as_login_required(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    where, query = location_of(client.get("/settings/delete-account"))
    assert where == "/auth/signin" and query == {"redirectUrl": ["/settings/delete-account"]}
    response = client.get("/settings/delete-account", headers=JSON)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_within_overrides_the_setting(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(START + timedelta(seconds=60))
        assert client.get("/settings/strict").status_code == 200
        clock.move_to(START + timedelta(seconds=61))
        assert client.get("/settings/strict").status_code == 303
        assert client.get("/settings/delete-account").status_code == 200
        clock.move_to(START + timedelta(minutes=25))
        assert client.get("/settings/timedelta").status_code == 200
        assert client.get("/settings/delete-account").status_code == 303


def test_the_setting_is_the_default(make_app: AppFactory) -> None:
    client = fresh_app(make_app, GUARDIAN_FRESH_WITHIN=timedelta(minutes=2)).test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(START + timedelta(seconds=120))
        assert client.get("/settings/bare").status_code == 200
        clock.move_to(START + timedelta(seconds=121))
        assert client.get("/settings/bare").status_code == 303


@pytest.mark.parametrize("value", [0, -5, "600", True, 1.5, None, timedelta(seconds=0.5)])
def test_an_unusable_fresh_within_fails_at_start_naming_the_key(value: Any) -> None:
    config = {**BASE_CONFIG, "GUARDIAN_FRESH_WITHIN": value}
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config)
    assert "GUARDIAN_FRESH_WITHIN" in str(raised.value)


def test_fresh_within_accepts_seconds_and_a_timedelta() -> None:
    assert load_settings(dict(BASE_CONFIG)).fresh_within == 600
    config = {**BASE_CONFIG, "GUARDIAN_FRESH_WITHIN": timedelta(minutes=5)}
    assert load_settings(config).fresh_within == 300


@pytest.mark.parametrize(("within", "error"), [
    ("60", TypeError), (True, TypeError), ([60], TypeError), (0, ValueError),
    (-1, ValueError), (float("nan"), ValueError), (timedelta(0), ValueError),
])
def test_a_wrong_within_fails_when_the_view_is_decorated(within: Any, error: type) -> None:
    with pytest.raises(error):
        fresh_login_required(within=within)


def test_the_error_is_an_unauthorized_with_its_own_code() -> None:
    assert ReauthenticationRequired.status_code == 401
    assert ReauthenticationRequired.code == "reauthentication_required"


# -- the page -----------------------------------------------------------------------------------


def test_the_page_asks_for_the_password_of_the_signed_in_account(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    sign_in_ok(client)
    response = client.get("/auth/reauthenticate?redirectUrl=/settings/delete-account")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert USER[0] in page and 'name="password"' in page and 'name="csrf_token"' in page
    assert 'value="/settings/delete-account"' in page
    assert 'name="code"' not in page  # no second factor enrolled
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("asked", ["https://evil.example/x", "//evil.example", "/\\evil.example",
                                   "javascript:alert(1)", "/%2F%2Fevil.example"])
def test_the_page_checks_redirect_url(make_app: AppFactory, asked: str) -> None:
    client = fresh_app(make_app).test_client()
    sign_in_ok(client)
    page = client.get("/auth/reauthenticate", query_string={"redirectUrl": asked})
    assert page.status_code == 200
    assert "evil" not in page.get_data(as_text=True) and "javascript" not in page.get_data(
        as_text=True)


def test_the_page_sends_anonymous_browsers_to_sign_in(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    where, query = location_of(client.get("/auth/reauthenticate?redirectUrl=/settings/bare"))
    assert where == "/auth/signin" and query == {"redirectUrl": ["/settings/bare"]}
    assert client.get("/auth/reauthenticate", headers=JSON).status_code == 401


# -- re-authenticating ----------------------------------------------------------------------------


def test_reauthenticating_rotates_the_session_and_makes_it_fresh(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    client = app.test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        before = flags(client)
        assert before is not None
        old_cookie = session_cookie(client, app)
        clock.move_to(STALE)
        assert client.get("/settings/delete-account").status_code == 303
        where, _ = location_of(reauth(client, redirect_url="/settings/delete-account"))
        assert where == "/settings/delete-account"
        after = flags(client)
        assert after is not None
        assert after["id"] != before["id"]  # a new session ...
        assert datetime.fromisoformat(after["auth_time"]) == STALE  # ... authenticated now
        assert session_cookie(client, app) != old_cookie
        assert client.get("/settings/delete-account").status_code == 200
        # The old cookie is dead: replayed, it is nobody.
        replay = app.test_client()
        replay.set_cookie(cookie_name(app), old_cookie or "")
        assert flags(replay) is None
        assert replay.get("/settings/delete-account").status_code == 303
        ids = [s["id"] for s in client.get("/auth/sessions", headers=JSON).get_json()["sessions"]]
        assert ids == [after["id"]]


def test_reauthenticating_keeps_remember_me_and_two_factor(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    client = app.test_client()
    with time_machine.travel(START, tick=False) as clock:
        assert client.post("/test/signin-2fa", data={"email": USER[0]}).status_code == 200
        clock.move_to(STALE)
        assert reauth(client).status_code == 303
        after = flags(client)
        assert after is not None
        assert (after["two_factor"], after["remember"]) == (True, True)
        assert client.get("/auth/session").get_json()["twoFactor"] is True


def test_reauthenticating_as_json(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    client = app.test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(STALE)
        response = reauth(client, json=True, redirect_url="/settings/bare")
        assert response.status_code == 200
        body = response.get_json()
        assert body["ok"] is True and body["redirectUrl"] == "/settings/bare"
        assert body["session"]["user"]["email"] == USER[0]
        assert body["session"]["twoFactor"] is False
        assert isinstance(body["csrfToken"], str)
        assert client.get("/settings/bare", headers=JSON).status_code == 200


@pytest.mark.parametrize("asked", ["https://evil.example/", "//evil.example/x", "/\\evil.example",
                                   "/%0d%0aSet-Cookie:x=1"])
def test_reauthenticating_goes_only_to_a_same_origin_path(make_app: AppFactory, asked: str) -> None:
    client = fresh_app(make_app).test_client()
    sign_in_ok(client)
    where, _ = location_of(reauth(client, redirect_url=asked))
    assert where == "/"


def test_a_wrong_password_is_refused_and_changes_nothing(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    client = app.test_client()
    with time_machine.travel(START, tick=False) as clock:
        sign_in_ok(client)
        before = flags(client)
        clock.move_to(STALE)
        page = reauth(client, WRONG, redirect_url="/settings/bare")
        assert page.status_code == 401
        text = page.get_data(as_text=True)
        assert "The password is incorrect." in text and 'value="/settings/bare"' in text
        response = reauth(client, WRONG, json=True)
        assert response.status_code == 401
        assert response.get_json() == {"ok": False, "error": "invalid_credentials"}
        assert flags(client) == before  # same session, still stale
        assert client.get("/settings/bare").status_code == 303


def test_wrong_passwords_count_toward_the_sign_in_lockout(make_app: AppFactory) -> None:
    app = fresh_app(make_app, GUARDIAN_MAX_LOGIN_ATTEMPTS=3)
    client = app.test_client()
    failures: list[str] = []

    def record(sender: Any, **kw: Any) -> None:
        failures.append(kw["reason"])

    with signals.sign_in_failed.connected_to(record, app):
        sign_in_ok(client)
        for _ in range(3):
            assert reauth(client, WRONG).status_code == 401
        assert failures == ["invalid_credentials"] * 3
        # Locked: the right password is refused too, here and at sign-in.
        locked = reauth(client, json=True)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        assert locked.get_json()["error"] == "too_many_attempts"
        assert sign_in(app.test_client(), *USER).status_code == 429
        # Another account is not locked by it.
        sign_in_ok(app.test_client(), ADMIN)


def test_a_right_password_clears_the_count(make_app: AppFactory) -> None:
    client = fresh_app(make_app, GUARDIAN_MAX_LOGIN_ATTEMPTS=3).test_client()
    sign_in_ok(client)
    for _ in range(2):
        assert reauth(client, WRONG).status_code == 401
    assert reauth(client).status_code == 303  # the third attempt, within the limit
    for _ in range(2):  # counted from zero again: two more failures are not a lock
        assert reauth(client, WRONG).status_code == 401
    assert reauth(client).status_code == 303


def test_csrf_is_required(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    client = app.test_client()
    sign_in_ok(client)
    before = flags(client)
    assert reauth(client, csrf=False).status_code == 403
    response = reauth(client, json=True, csrf=False)
    assert response.status_code == 403 and response.get_json()["error"] == "csrf_failed"
    assert reauth(client, csrf=False, csrf_token="forged").status_code == 403
    assert flags(client) == before


def test_anonymous_post_is_refused(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    response = client.post("/auth/reauthenticate", json={"password": USER[1]})
    assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"
    where, _ = location_of(client.post("/auth/reauthenticate", data={"password": USER[1]}))
    assert where == "/auth/signin"


@pytest.mark.parametrize("body", [
    {}, {"password": None}, {"password": ["a", "b"]}, {"password": {"x": 1}}, {"password": 5},
])
def test_a_password_that_is_not_a_string_is_400(make_app: AppFactory, body: dict[str, Any]) -> None:
    client = fresh_app(make_app).test_client()
    sign_in_ok(client)
    before = flags(client)
    response = client.post("/auth/reauthenticate",
                           json={**body, "csrf_token": csrf_token(client)})
    assert response.status_code == 400 and response.get_json()["error"] == "bad_request"
    assert flags(client) == before


@pytest.mark.parametrize("password", ["", "user-password-123\x00", "x" * 100_000, "\ud800"])
def test_odd_passwords_are_a_plain_refusal(make_app: AppFactory, password: str) -> None:
    client = fresh_app(make_app).test_client()
    sign_in_ok(client)
    before = flags(client)
    response = reauth(client, password, json=True)
    assert response.status_code == 401
    assert response.get_json() == {"ok": False, "error": "invalid_credentials"}
    assert flags(client) == before


def test_a_non_object_json_body_is_400(make_app: AppFactory) -> None:
    client = fresh_app(make_app).test_client()
    sign_in_ok(client)
    for raw in (b"[]", b'"x"', b"{", b"null"):
        response = client.post("/auth/reauthenticate", data=raw,
                               content_type="application/json")
        assert response.status_code == 400, raw


# -- a database outage while re-authenticating ----------------------------------------------


def session_id_after_outage(app: Flask, client: Any) -> str | None:
    """The session the client holds once the database is back (the reader pauses a moment
    after a failure: the clock is moved past it)."""
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=3), tick=True):
        body = client.get("/test/flags").get_json()
    return None if body is None else str(body["id"])


@pytest.mark.parametrize("step", ["password check", "rotation"])
def test_an_outage_while_reauthenticating_is_a_503_and_keeps_the_session(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase, step: str,
    monkeypatch: pytest.MonkeyPatch, strategy: str,
) -> None:
    app = make_proxied_app()
    add_routes(app)
    state = get_state(app)
    proxy = proxied_database.proxy
    client = app.test_client()
    sign_in_ok(client)
    before = flags(client)
    assert before is not None
    token = csrf_token(client)
    if step == "password check":
        verify = state.hasher.verify

        def verify_then_fault(password: str, stored: str | None) -> tuple[bool, str | None]:
            result = verify(password, stored)
            proxy.refuse()
            return result

        monkeypatch.setattr(state.hasher, "verify", verify_then_fault)
    else:
        issue = state.strategy.issue

        def fault_then_issue(*args: Any, **kwargs: Any) -> Any:
            proxy.refuse()
            return issue(*args, **kwargs)

        monkeypatch.setattr(state.strategy, "issue", fault_then_issue)
    response = client.post("/auth/reauthenticate",
                           json={"password": USER[1], "csrf_token": token})
    assert response.status_code == 503, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"] == "storage_unavailable"
    assert response.headers["Retry-After"].isdigit()
    assert set_cookie_headers(response, cookie_name(app)) == []  # no new session was sent
    monkeypatch.undo()
    proxy.restore()
    after = session_id_after_outage(app, client)
    if strategy == "jwt" and step == "rotation":
        # The jwt strategy marks a revocation in its process at once (before the commit
        # that failed): fail closed, this process may refuse the old token; never a new one.
        assert after in (before["id"], None)
    else:
        assert after == before["id"]  # the revocation was rolled back: the old one lives on


def test_jwt_an_api_client_reauthenticates_with_its_bearer_token(
    make_app: AppFactory, strategy: str,
) -> None:
    if strategy != "jwt":
        pytest.skip("bearer tokens are the jwt strategy's")
    app = fresh_app(make_app)
    with time_machine.travel(START, tick=False) as clock:
        browser = app.test_client()
        sign_in_ok(browser)
        old = session_cookie(browser, app)
        api = app.test_client()  # no cookies: the token in a header, no CSRF to send
        bearer = {"Authorization": f"Bearer {old}", **JSON}
        clock.move_to(STALE)
        stale = api.get("/settings/bare", headers=bearer)
        assert stale.status_code == 401
        assert stale.get_json()["error"] == "reauthentication_required"
        response = api.post("/auth/reauthenticate", json={"password": USER[1]}, headers=bearer)
        assert response.status_code == 200, response.get_json()
        new = response.headers["X-Guardian-Token"]
        assert new != old
        assert api.get("/settings/bare", headers={"Authorization": f"Bearer {new}",
                                                  **JSON}).status_code == 200
        ended = api.get("/settings/bare", headers=bearer)  # the old token's session ended
        assert ended.status_code == 401 and ended.get_json()["error"] == "unauthorized"


# -- another account answering to the same identifier ---------------------------------------

#: Carol has no username, so her identifier is her email; Dave's username is that email
#: (usernames are tried first): the identifier finds Dave.
CAROL = (None, "carol@example.com", "carol-password-123")
DAVE = ("carol@example.com", "dave@example.com", "dave-password-1234")


def members_app(database_url: str, strategy: str) -> Flask:
    app = Flask("fresh_members_app")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI=database_url,
                      SESSION_STRATEGY=strategy, GUARDIAN_LOGIN_FIELDS=["username", "email"])
    app.config.update(strategy_config(strategy))
    db = SQLAlchemy(app)

    class Member(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __tablename__ = "fresh_members"
        username: Mapped[str | None] = mapped_column(String(80), unique=True, nullable=True)

    guardian = Guardian(app, db=db, user_model=Member)

    @app.post("/test/signin-as")
    def signin_as() -> Any:  # as a registration or an OAuth callback would
        user = db.session.execute(
            select(Member).where(Member.email == request.form["email"])).scalar_one()
        return jsonify(ok=guardian.sign_in_user(user).ok)

    with app.app_context():
        db.create_all()
        hasher = get_state(app).hasher
        for username, email, password in (CAROL, DAVE):
            db.session.add(Member(username=username, email=email,
                                  password_hash=hasher.hash(password)))
        db.session.commit()
    return app


def test_another_accounts_password_never_refreshes_the_session(
    database_url: str, strategy: str,
) -> None:
    app = members_app(database_url, strategy)
    try:
        client = app.test_client()
        # Carol cannot sign in with her email (it finds Dave first, as for sign-in), but
        # the application may sign her in itself.
        assert client.post("/test/signin-as", data={"email": CAROL[1]}).get_json()["ok"]
        before = client.get("/auth/session").get_json()
        response = reauth(client, DAVE[2], json=True)
        assert response.status_code == 401
        assert response.get_json() == {"ok": False, "error": "invalid_credentials"}
        assert client.get("/auth/session").get_json() == before  # still Carol's, unchanged
        # Her own password does not pass either: her identifier finds Dave, as at sign-in.
        assert reauth(client, CAROL[2], json=True).status_code == 401
    finally:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()
        if strategy == "redis":
            delete_redis_keys(app.config["GUARDIAN_REDIS_PREFIX"])


# -- with two-factor authentication on ------------------------------------------------------


def enrol(app: Flask, email: str = USER[0]) -> tuple[str, list[str]]:
    """Turn 2FA on for ``email`` (before anyone signs in: enabling it ends other sessions);
    returns the secret and the recovery codes."""
    model = guardian_of(app).user_model
    with app.app_context():
        user = db_of(app).session.execute(select(model).where(model.email == email)).scalar_one()
        setup = begin_setup(get_state(), user, issuer="Test")
        codes = enable(get_state(), user, pyotp.TOTP(setup.secret).at(datetime.now(UTC)))
    return setup.secret, codes


def code_at(secret: str, when: datetime) -> str:
    return str(pyotp.TOTP(secret).at(when))


def test_with_2fa_the_page_asks_for_a_code_too(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    with time_machine.travel(START, tick=False):
        enrol(app)
        client = app.test_client()
        assert client.post("/test/signin-2fa", data={"email": USER[0]}).status_code == 200
        page = client.get("/auth/reauthenticate").get_data(as_text=True)
        assert 'name="code"' in page and 'autocomplete="one-time-code"' in page


def test_with_2fa_the_password_alone_is_refused(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    with time_machine.travel(START, tick=False) as clock:
        enrol(app)
        client = app.test_client()
        assert client.post("/test/signin-password-only", data={"email": USER[0]}).status_code == 200
        before = flags(client)
        clock.move_to(STALE)
        response = reauth(client, json=True)
        assert response.status_code == 401
        assert response.get_json() == {"ok": False, "error": "two_factor_required"}
        page = reauth(client)
        assert page.status_code == 401 and "authenticator app" in page.get_data(as_text=True)
        assert flags(client) == before


def test_with_2fa_a_code_makes_the_session_fresh_and_two_factor(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    with time_machine.travel(START, tick=False) as clock:
        secret, _ = enrol(app)
        client = app.test_client()
        assert client.post("/test/signin-password-only", data={"email": USER[0]}).status_code == 200
        assert flags(client)["two_factor"] is False  # type: ignore[index]
        clock.move_to(STALE + timedelta(seconds=60))
        response = reauth(client, json=True, code=code_at(secret, STALE + timedelta(seconds=60)))
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["session"]["twoFactor"] is True
        assert client.get("/settings/bare").status_code == 200
        after = flags(client)
        assert after is not None and after["two_factor"] is True


def test_with_2fa_a_recovery_code_works_once(make_app: AppFactory) -> None:
    app = fresh_app(make_app)
    with time_machine.travel(START, tick=False):
        _, codes = enrol(app)
        client = app.test_client()
        assert client.post("/test/signin-password-only", data={"email": USER[0]}).status_code == 200
        assert reauth(client, code=codes[0]).status_code == 303
        replay = reauth(client, json=True, code=codes[0])
        assert replay.status_code == 401 and replay.get_json()["error"] == "invalid_code"


def test_with_2fa_wrong_codes_count_toward_the_lockout(make_app: AppFactory) -> None:
    app = fresh_app(make_app, GUARDIAN_MAX_LOGIN_ATTEMPTS=3)
    with time_machine.travel(START, tick=False):
        secret, _ = enrol(app)
        client = app.test_client()
        assert client.post("/test/signin-password-only", data={"email": USER[0]}).status_code == 200
        before = flags(client)
        for bad in ("000000", "12-34", "abcdef"):
            response = reauth(client, json=True, code=bad)
            assert response.status_code == 401, bad
            assert response.get_json()["error"] == "invalid_code"
        assert flags(client) == before
        locked = reauth(client, json=True, code=code_at(secret, START))
        assert locked.status_code == 429 and locked.get_json()["error"] == "too_many_attempts"
        assert flags(client) == before
