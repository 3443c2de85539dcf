"""Tokens for API clients (SPEC §11): ``POST /auth/token``, ``/auth/token/refresh`` and
``/auth/token/revoke``, access tokens on ``Authorization: Bearer``, refresh rotation with
reuse detection, on every strategy."""

from __future__ import annotations

import importlib.util
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
import time_machine
from flask import Flask
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    QueryCounter,
    bearer,
    build_app,
    csrf_token,
    db_of,
    get_tokens,
    guardian_of,
    session_cookie,
    sign_in_ok,
    store_config,
    strategy_config,
)
from servers import delete_redis_keys
from werkzeug.serving import make_server

from flask_guardian import ConfigurationError, signals
from flask_guardian.state import get_state
from flask_guardian.two_factor_enrolment import begin_setup, enable

#: Everything here reads or writes a strategy's storage.
pytestmark = pytest.mark.databases

ME = "/api/me"


def _user(app: Flask, email: str = USER[0]) -> Any:
    db = db_of(app)
    model = guardian_of(app).user_model
    return db.session.execute(db.select(model).filter_by(email=email)).scalar_one()


def refresh(client: Any, token: Any) -> Any:
    return client.post("/auth/token/refresh", json={"refreshToken": token})


# -- issuing ----------------------------------------------------------------------------


def test_token_answers_a_pair_and_sets_no_cookie(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/auth/token", json={"email": USER[0], "password": USER[1]})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"accessToken", "tokenType", "expiresIn", "refreshToken"}
    assert body["tokenType"] == "Bearer"
    assert body["expiresIn"] == 300
    assert len(body["refreshToken"]) >= 43  # 256 bits, URL-safe base64
    assert response.headers.getlist("Set-Cookie") == []
    assert response.headers["Cache-Control"] == "no-store"
    me = client.get(ME, headers=bearer(body["accessToken"]))
    assert me.status_code == 200
    assert me.get_json()["user"]["email"] == USER[0]


def test_token_route_needs_no_csrf_and_leaves_a_cookie_session_alone(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client)
    cookie = session_cookie(client, app)
    response = client.post("/auth/token", json={"email": USER[0], "password": USER[1]})
    assert response.status_code == 200
    assert response.headers.getlist("Set-Cookie") == []
    assert session_cookie(client, app) == cookie
    assert client.get("/dashboard").status_code == 200  # the browser session lives on


def test_the_pair_is_one_api_client_session_in_the_device_list(app: Flask) -> None:
    client = app.test_client()
    get_tokens(client, **{"User-Agent": "python-requests/2.32"})
    get_tokens(client, **{"User-Agent": "python-requests/2.32"})
    with app.app_context():
        listed = [s.to_dict() for s in guardian_of(app).list_sessions(_user(app))]
    assert len(listed) == 2
    assert {s["device"] for s in listed} == {"API client (Python requests)"}
    assert all(s["userAgent"] == "API client; python-requests/2.32" for s in listed)


@pytest.mark.parametrize("body", [
    {"email": USER[0], "password": "wrong-password-123"},
    {"email": "nobody@example.com", "password": USER[1]},
])
def test_wrong_credentials_are_401_json(app: Flask, body: dict[str, str]) -> None:
    response = app.test_client().post("/auth/token", json=body)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_credentials"


def test_token_sign_in_shares_the_sign_in_lockout(app: Flask) -> None:
    client = app.test_client()
    limit = get_state(app).settings.max_login_attempts
    for _ in range(limit):
        wrong = {"email": USER[0], "password": "wrong-password-123"}
        assert client.post("/auth/token", json=wrong).status_code == 401
    right = client.post("/auth/token", json={"email": USER[0], "password": USER[1]})
    assert right.status_code == 429
    assert right.get_json()["error"] == "too_many_attempts"
    assert int(right.headers["Retry-After"]) > 0
    browser = app.test_client()  # the same lockout on the sign-in route
    signin = browser.post("/auth/signin", json={"email": USER[0], "password": USER[1],
                                                 "csrfToken": csrf_token(browser)})
    assert signin.status_code == 429


@pytest.mark.parametrize("body", [None, [], "text", {"email": USER[0]}, {"password": USER[1]},
                                  {"email": 5, "password": USER[1]}, {"email": "", "password": ""}])
def test_unreadable_token_requests_are_400_json(app: Flask, body: Any) -> None:
    client = app.test_client()
    if body is None:
        response = client.post("/auth/token", data="email=a&password=b",
                               content_type="application/x-www-form-urlencoded")
    else:
        response = client.post("/auth/token", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


# -- access tokens ----------------------------------------------------------------------


def test_access_token_expires_after_its_ttl(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_ACCESS_TOKEN_TTL=60)
    client = app.test_client()
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        access = get_tokens(client)["accessToken"]
        assert client.get(ME, headers=bearer(access)).status_code == 200
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        response = client.get(ME, headers=bearer(access))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_missing_bearer_on_a_protected_json_route_gets_a_realm_challenge(app: Flask) -> None:
    response = app.test_client().get(ME, headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flask-guardian"'


def _tamper(token: str) -> list[str]:
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return [
        f"{header}.{payload}.{flipped}",  # a forged signature
        f"{header}.{payload}.",  # no signature
        "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + payload + ".",  # alg none
        f"{header}.{payload}",  # two segments
        header + ".",  # our header and nothing else
        token + "\x00",
        token + "é",
        header + "." + "A" * 5000,
    ]


def test_tampered_access_tokens_are_refused_with_invalid_token(app: Flask) -> None:
    client = app.test_client()
    access = get_tokens(client)["accessToken"]
    for forged in _tamper(access):
        response = client.get(ME, headers=bearer(forged))
        assert response.status_code == 401, forged
        assert response.get_json()["ok"] is False
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_access_token_of_another_audience_or_key_is_refused(make_app: AppFactory) -> None:
    app = make_app()
    other_audience = make_app(GUARDIAN_JWT_AUDIENCE="another-api", **store_config(app))
    other_key = make_app(SECRET_KEY="another-secret-key-0123456789abcdef",
                         GUARDIAN_JWT_SECRET="another-jwt-secret-" + "y" * 32,
                         **store_config(app))
    for other in (other_audience, other_key):
        access = get_tokens(other.test_client())["accessToken"]
        assert app.test_client().get(ME, headers=bearer(access)).status_code == 401


def test_access_token_is_not_a_session_cookie_nor_the_reverse(
    make_app: AppFactory, strategy: str
) -> None:
    app = make_app()
    client = app.test_client()
    access = get_tokens(client)["accessToken"]
    client.set_cookie(get_state(app).settings.cookie_name, access)
    assert client.get(ME, headers={"Accept": "application/json"}).status_code == 401
    if strategy == "jwt":  # a session JWT as a bearer keeps working as before, as itself
        browser = app.test_client()
        sign_in_ok(browser)
        session_token = session_cookie(browser, app)
        assert session_token is not None
        response = app.test_client().get(ME, headers=bearer(session_token))
        assert response.status_code == 200


def test_a_steady_access_token_request_reads_nothing(app: Flask) -> None:
    client = app.test_client()
    access = get_tokens(client)["accessToken"]
    client.get(ME, headers=bearer(access))
    with QueryCounter(app) as queries:
        for _ in range(10):
            assert client.get(ME, headers=bearer(access)).status_code == 200
    assert queries.statements == []


# -- refresh ----------------------------------------------------------------------------


def test_refresh_rotates_and_the_new_pair_works(app: Flask) -> None:
    client = app.test_client()
    first = get_tokens(client)
    second = refresh(client, first["refreshToken"])
    assert second.status_code == 200
    assert second.headers.getlist("Set-Cookie") == []
    pair = second.get_json()
    assert pair["refreshToken"] != first["refreshToken"]
    assert client.get(ME, headers=bearer(pair["accessToken"])).status_code == 200
    third = refresh(client, pair["refreshToken"])
    assert third.status_code == 200
    with app.app_context():
        store = get_state(app).api_tokens.store
        sid = get_state(app).api_tokens.access.load(pair["accessToken"]).id
        assert store.live_count(sid) == 1


def test_refresh_tokens_are_stored_hashed(app: Flask, strategy: str) -> None:
    client = app.test_client()
    token = get_tokens(client)["refreshToken"]
    with app.app_context():
        if strategy == "redis":
            redis = get_state(app).redis.client
            stored = b" ".join(k + b" " + b" ".join(
                v for v in (redis.hvals(k) if redis.type(k) == b"hash" else [redis.get(k)])
                if isinstance(v, bytes))
                for k in redis.scan_iter(match=app.config["GUARDIAN_REDIS_PREFIX"] + "*"))
        else:
            db = db_of(app)
            stored = repr(db.session.execute(db.text(
                "SELECT * FROM guardian_refresh_tokens")).all()).encode()
    assert token.encode() not in stored


def test_a_racing_duplicate_inside_the_grace_gets_the_same_pair_and_writes_nothing(
    app: Flask,
) -> None:
    client = app.test_client()
    token = get_tokens(client)["refreshToken"]
    first = refresh(client, token).get_json()
    with QueryCounter(app) as queries:
        again = refresh(client, token)
    assert again.status_code == 200
    assert again.get_json() == first
    assert queries.writes == []


def test_reuse_after_the_grace_revokes_the_whole_session(app: Flask) -> None:
    client = app.test_client()
    ended: list[dict[str, Any]] = []

    def record(sender: Any, **extra: Any) -> None:
        ended.append(extra)

    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        stolen = get_tokens(client)["refreshToken"]
        victim = refresh(client, stolen).get_json()  # the victim refreshes first
    grace = get_state(app).settings.api_tokens.reuse_grace
    with time_machine.travel(start + timedelta(seconds=grace + 1), tick=False), \
            signals.session_revoked.connected_to(record, app):
        replay = refresh(client, stolen)  # the thief replays the spent token
        assert replay.status_code == 401
        assert replay.get_json()["error"] == "invalid_grant"
        assert [e["reason"] for e in ended] == ["refresh_reuse"]
        # Both parties' tokens are dead: the victim's refresh and access tokens too.
        assert refresh(client, victim["refreshToken"]).status_code == 401
        assert client.get(ME, headers=bearer(victim["accessToken"])).status_code == 401
    with app.app_context():
        assert guardian_of(app).list_sessions(_user(app)) == []


def test_refresh_obeys_the_idle_deadline(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_SESSION_IDLE_TIMEOUT=600)
    client = app.test_client()
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        token = get_tokens(client)["refreshToken"]
    with time_machine.travel(start + timedelta(seconds=500), tick=False):
        response = refresh(client, token)  # a refresh is activity: the deadline moves on
        assert response.status_code == 200
        token = response.get_json()["refreshToken"]
    with time_machine.travel(start + timedelta(seconds=1000), tick=False):
        response = refresh(client, token)
        assert response.status_code == 200
        token = response.get_json()["refreshToken"]
    with time_machine.travel(start + timedelta(seconds=1601), tick=False):
        with QueryCounter(app) as queries:
            assert refresh(client, token).status_code == 401
        assert queries.writes == []


def test_refresh_obeys_the_absolute_deadline(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_SESSION_IDLE_TIMEOUT=600, GUARDIAN_SESSION_MAX_AGE=1200)
    client = app.test_client()
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        pair = get_tokens(client)
    statuses = []
    for step in (500, 1000, 1300):
        with time_machine.travel(start + timedelta(seconds=step), tick=False):
            response = refresh(client, pair["refreshToken"])
            statuses.append(response.status_code)
            if response.status_code == 200:
                pair = response.get_json()
    assert statuses == [200, 200, 401]


def test_access_tokens_never_outlive_the_absolute_deadline(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_SESSION_IDLE_TIMEOUT=600, GUARDIAN_SESSION_MAX_AGE=700)
    client = app.test_client()
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        pair = get_tokens(client)
    with time_machine.travel(start + timedelta(seconds=500), tick=False):
        body = refresh(client, pair["refreshToken"]).get_json()
        assert body["expiresIn"] == 200  # capped at the absolute deadline, not 300


@pytest.mark.parametrize("value", [None, "", 12, ["x"], {"a": 1}, "a" * 257, "abc\x00def",
                                   True])
def test_unusable_refresh_values_are_400_and_write_nothing(app: Flask, value: Any) -> None:
    client = app.test_client()
    get_tokens(client)
    body = {} if value is None else {"refreshToken": value}
    with QueryCounter(app) as queries:
        response = client.post("/auth/token/refresh", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert queries.writes == []


@pytest.mark.parametrize("value", ["A" * 43, "' OR 1=1 --", "x" * 42, "é" * 43])
def test_forged_refresh_tokens_are_401_and_write_nothing(app: Flask, value: str) -> None:
    client = app.test_client()
    get_tokens(client)
    with QueryCounter(app) as queries:
        response = refresh(client, value)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_grant"
    assert queries.writes == []


def test_a_refresh_token_of_another_app_is_refused(
    app: Flask, strategy: str, tmp_path: Path
) -> None:
    other = build_app(f"sqlite:///{tmp_path / 'other.db'}", strategy)
    try:
        token = get_tokens(other.test_client())["refreshToken"]
        with QueryCounter(app) as queries:
            response = refresh(app.test_client(), token)
        assert response.status_code == 401
        assert queries.writes == []
    finally:
        if strategy == "redis":
            delete_redis_keys(other.config["GUARDIAN_REDIS_PREFIX"])


def test_a_spent_token_of_a_deleted_user_is_refused_without_a_write(app: Flask) -> None:
    client = app.test_client()
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        spent = get_tokens(client)["refreshToken"]
        live = refresh(client, spent).get_json()["refreshToken"]
        with app.app_context():
            db = db_of(app)
            db.session.delete(_user(app))
            db.session.commit()
    for moment in (start, start + timedelta(seconds=60)):  # inside and after the grace
        with time_machine.travel(moment, tick=False):
            with QueryCounter(app) as queries:
                assert refresh(client, spent).status_code == 401
                assert refresh(client, live).status_code == 401
            assert queries.writes == []


def test_a_role_change_reaches_the_api_client_by_its_next_refresh(app: Flask) -> None:
    client = app.test_client()
    pair = get_tokens(client)
    assert client.get("/admin", headers=bearer(pair["accessToken"])).status_code == 403
    with app.app_context():
        guardian_of(app).set_role(_user(app), "admin")
    pair = refresh(client, pair["refreshToken"]).get_json()
    assert client.get("/admin", headers=bearer(pair["accessToken"])).status_code == 200


# -- revocation -------------------------------------------------------------------------


def test_revoking_the_session_stops_both_tokens_at_once(app: Flask) -> None:
    client = app.test_client()
    pair = get_tokens(client)
    with app.app_context():
        guardian = guardian_of(app)
        [info] = guardian.list_sessions(_user(app))
        assert guardian.revoke_session(info.id)
    assert client.get(ME, headers=bearer(pair["accessToken"])).status_code == 401
    assert refresh(client, pair["refreshToken"]).status_code == 401


def test_sign_out_everywhere_and_password_change_end_api_sessions(app: Flask) -> None:
    client = app.test_client()
    first, second = get_tokens(client), get_tokens(client)
    with app.app_context():
        guardian_of(app).revoke_user_sessions(_user(app))
    assert client.get(ME, headers=bearer(first["accessToken"])).status_code == 401
    third = get_tokens(client)
    with app.app_context():
        guardian_of(app).set_password(_user(app), "a-brand-new-password-42")
    for pair in (second, third):
        assert client.get(ME, headers=bearer(pair["accessToken"])).status_code == 401
        assert refresh(client, pair["refreshToken"]).status_code == 401


def test_rfc7009_revoke_ends_the_session(app: Flask) -> None:
    client = app.test_client()
    pair = get_tokens(client)
    ended: list[str] = []

    def record(sender: Any, **extra: Any) -> None:
        ended.append(extra["reason"])

    with signals.session_revoked.connected_to(record, app):
        response = client.post("/auth/token/revoke", json={"token": pair["refreshToken"]})
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    assert ended == ["token_revoked"]
    assert client.get(ME, headers=bearer(pair["accessToken"])).status_code == 401
    assert refresh(client, pair["refreshToken"]).status_code == 401


def test_rfc7009_unknown_token_is_ok_and_writes_nothing(app: Flask) -> None:
    client = app.test_client()
    get_tokens(client)
    with QueryCounter(app) as queries:
        response = client.post("/auth/token/revoke", json={"refreshToken": "B" * 43})
    assert response.status_code == 200
    assert queries.writes == []
    bad = client.post("/auth/token/revoke", json={"refreshToken": 7})
    assert bad.status_code == 400


def test_revocation_reaches_another_process(make_app: AppFactory, strategy: str) -> None:
    """jwt: through its revocation feed, within the interval; database and redis: over
    Redis at once (the redis strategy always has it; the database strategy with
    ``GUARDIAN_REDIS_URL``)."""
    extra: dict[str, Any] = {}
    if strategy == "database":
        extra = strategy_config("redis")
    first = make_app(**extra)
    second = make_app(**store_config(first))
    client = first.test_client()
    pair = get_tokens(client)
    other = second.test_client()
    assert other.get(ME, headers=bearer(pair["accessToken"])).status_code == 200
    channel = get_state(second).api_tokens.access.channel
    if channel is not None:
        assert channel.wait_subscribed(1, 5)
    with first.app_context():
        [info] = guardian_of(first).list_sessions(_user(first))
        guardian_of(first).revoke_session(info.id)
    if channel is not None:
        assert channel.wait_heard(1, 5)
        assert other.get(ME, headers=bearer(pair["accessToken"])).status_code == 401
    else:
        interval = get_state(second).settings.strategy_options.revocation_interval
        later = datetime.now(UTC) + timedelta(seconds=interval + 1)
        with time_machine.travel(later, tick=False):
            assert other.get(ME, headers=bearer(pair["accessToken"])).status_code == 401


# -- concurrency ------------------------------------------------------------------------


def test_racing_refreshes_leave_exactly_one_live_pair(app: Flask, database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("the race is run on PostgreSQL and MariaDB (row locks)")
    token = get_tokens(app.test_client())["refreshToken"]
    barrier = threading.Barrier(8)
    results: list[tuple[int, Any]] = []

    def race() -> None:
        client = app.test_client()
        barrier.wait()
        response = refresh(client, token)
        results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in results] == [200] * 8
    assert len({body["refreshToken"] for _, body in results}) == 1
    assert len({body["accessToken"] for _, body in results}) == 1
    with app.app_context():
        state = get_state(app)
        sid = state.api_tokens.access.load(results[0][1]["accessToken"]).id
        assert state.api_tokens.store.live_count(sid) == 1
        assert len(guardian_of(app).list_sessions(_user(app))) == 1


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("GUARDIAN_ACCESS_TOKEN_TTL", 0), ("GUARDIAN_ACCESS_TOKEN_TTL", 7200),
    ("GUARDIAN_ACCESS_TOKEN_TTL", "300"), ("GUARDIAN_REFRESH_REUSE_GRACE", -1),
    ("GUARDIAN_REFRESH_REUSE_GRACE", 61), ("GUARDIAN_REFRESH_REUSE_GRACE", 1.5),
    ("GUARDIAN_ACCESS_TOKEN_TTLS", 300),
])
def test_unusable_token_settings_fail_at_init_app(
    make_app: AppFactory, key: str, value: Any
) -> None:
    with pytest.raises(ConfigurationError, match=key):
        make_app(**{key: value})


def test_token_settings_accept_a_timedelta(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_ACCESS_TOKEN_TTL=timedelta(minutes=2))
    assert get_tokens(app.test_client())["expiresIn"] == 120


def test_admin_and_user_pairs_are_separate_sessions(app: Flask) -> None:
    client = app.test_client()
    admin, user = get_tokens(client, ADMIN), get_tokens(client, USER)
    assert client.get("/admin", headers=bearer(admin["accessToken"])).status_code == 200
    assert client.get("/admin", headers=bearer(user["accessToken"])).status_code == 403


# -- the example client -----------------------------------------------------------------


def _example(name: str) -> Any:
    path = Path(__file__).resolve().parents[1] / "examples" / name
    spec = importlib.util.spec_from_file_location(f"guardian_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_client_signs_in_refreshes_and_sees_its_session_end(
    strategy: str, database_url: str
) -> None:
    """examples/api_client.py against the example app, served on 127.0.0.1."""
    example = _example("api_client.py")
    app = _example("app.py").create_app(
        strategy, database_url, SECRET_KEY="example-test-secret-key-0123456789",
        GUARDIAN_JWT_SECRET="example-test-jwt-secret-" + "x" * 32,
        GUARDIAN_ARGON2_MEMORY_COST=1024, GUARDIAN_ARGON2_TIME_COST=1,
        **strategy_config(strategy))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = example.ApiClient(f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(example.SignInFailed):
            client.sign_in(USER[0], "not-the-password-1")
        start = datetime.now(UTC)
        with time_machine.travel(start, tick=False):
            client.sign_in(*USER)
            assert client.me()["user"]["email"] == USER[0]
            assert client.refreshes == 0
        with time_machine.travel(start + timedelta(seconds=280), tick=False):
            assert client.me()["user"]["email"] == USER[0]  # refreshed before expiry
            assert client.refreshes == 1
            with app.app_context():
                guardian = app.extensions["guardian"]
                db = app.extensions["sqlalchemy"]
                user = db.session.execute(db.select(guardian.user_model).filter_by(
                    email=USER[0])).scalar_one()
                assert guardian.revoke_user_sessions(user) == 1
            with pytest.raises(example.SessionEnded):
                client.me()
    finally:
        server.shutdown()
        thread.join()
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()
        if strategy == "redis":
            delete_redis_keys(app.config["GUARDIAN_REDIS_PREFIX"])


def test_purge_deletes_the_refresh_tokens_of_ended_sessions(app: Flask, strategy: str) -> None:
    if strategy == "redis":
        pytest.skip("Redis expires refresh tokens itself, at the session's absolute deadline")
    client = app.test_client()
    kept, ended = get_tokens(client), get_tokens(client)
    refresh(client, kept["refreshToken"])
    with app.app_context():
        state = get_state(app)
        sid = state.api_tokens.access.load(ended["accessToken"]).id
        guardian_of(app).revoke_session(sid)
        guardian_of(app).purge_expired()
        db = db_of(app)
        rows = db.session.execute(db.text("SELECT session_id FROM guardian_refresh_tokens")).all()
    assert len(rows) == 2  # the kept session's spent and live tokens
    assert sid not in {r[0] for r in rows}


def test_a_store_outage_is_a_503_json_and_no_500(
    app: Flask, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    pair = get_tokens(client)
    store: Any = get_state(app).api_tokens.store
    if strategy == "redis":
        import redis

        def down(*args: Any, **kwargs: Any) -> Any:
            raise redis.ConnectionError("Redis went away")

        monkeypatch.setattr(store.redis, "hmget", down)
    else:
        from sqlalchemy.exc import OperationalError

        def down(*args: Any, **kwargs: Any) -> Any:
            raise OperationalError("SELECT", {}, ConnectionError("the database went away"))

        monkeypatch.setattr(store.state.db.session, "execute", down)
    response = refresh(client, pair["refreshToken"])
    assert response.status_code == 503
    assert response.get_json()["error"] == "storage_unavailable"
    assert response.headers["Retry-After"]
    monkeypatch.undo()
    assert refresh(client, pair["refreshToken"]).status_code == 200  # nothing was spent


# -- two-factor users ---------------------------------------------------------------------


def test_a_two_factor_user_sends_a_code_with_the_password(app: Flask) -> None:
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(t0, tick=False):
        with app.app_context():
            setup = begin_setup(get_state(), _user(app), issuer="Test")
            enable(get_state(), _user(app), pyotp.TOTP(setup.secret).at(t0))
        client = app.test_client()
        body = {"email": USER[0], "password": USER[1]}
        alone = client.post("/auth/token", json=body)
        assert alone.status_code == 401
        assert alone.get_json()["error"] == "two_factor_required"
        assert "refreshToken" not in alone.get_json()
        wrong = client.post("/auth/token", json={**body, "code": "12345x"})
        assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_code"
        # The enabling code spent this step: the next one, within the step of drift.
        code = pyotp.TOTP(setup.secret).at(t0 + timedelta(seconds=30))
        right = client.post("/auth/token", json={**body, "code": code})
        assert right.status_code == 200, right.get_json()
        access = right.get_json()["accessToken"]
        assert client.get(ME, headers=bearer(access)).status_code == 200
        with app.app_context():
            listed = [s.to_dict() for s in guardian_of(app).list_sessions(_user(app))]
        assert [s["twoFactor"] for s in listed] == [True]  # the device list says so
        # The same code again is a replay.
        again = client.post("/auth/token", json={**body, "code": code})
        assert again.status_code == 401 and again.get_json()["error"] == "invalid_code"
    # A refresh (which moves the session's idle deadline) keeps what the sign-in gave.
    with time_machine.travel(t0 + timedelta(seconds=120), tick=False):
        refreshed = client.post("/auth/token/refresh",
                                json={"refreshToken": right.get_json()["refreshToken"]})
        assert refreshed.status_code == 200, refreshed.get_json()
        with app.app_context():
            listed = [s.to_dict() for s in guardian_of(app).list_sessions(_user(app))]
        assert [s["twoFactor"] for s in listed] == [True]


def test_a_user_without_two_factor_needs_no_code(app: Flask) -> None:
    client = app.test_client()
    reply = client.post("/auth/token", json={"email": USER[0], "password": USER[1],
                                             "code": "not looked at"})
    assert reply.status_code == 200, reply.get_json()
