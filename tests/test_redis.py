"""The redis strategy's own rules, on the real Redis server: only the token's SHA-256 is a
key, a session's key lives exactly until its deadline, every key carries the configured
prefix (apps sharing one Redis see nothing of each other), the device list comes from the
per-user index, purge tidies what Redis leaves, and a Redis that fails answers 503 in
bounded time, never a 500 and never a signed-in answer. (Every other rule of the suite
runs on this strategy through the ``strategy`` fixture.)"""

from __future__ import annotations

import gc
import hashlib
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from faultproxy import FaultProxy
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import (
    ADMIN,
    BASE_CONFIG,
    USER,
    AppFactory,
    csrf_token,
    guardian_of,
    session_cookie,
    sign_in_ok,
    store_config,
)
from redis import Redis
from servers import delete_redis_keys, redis_prefix, require_redis
from sqlalchemy.engine import make_url

from flask_guardian import Guardian
from flask_guardian.state import get_state
from flask_guardian.strategies.redis_records import GONE

JSON = {"Accept": "application/json"}
T0 = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)


@pytest.fixture(params=["redis"])
def strategy(request: pytest.FixtureRequest) -> str:
    """This file is about the redis strategy only."""
    return str(request.param)


@pytest.fixture
def database_url(tmp_path: Any) -> str:
    """The users table: SQLite is enough (the sessions are in Redis), so this module is
    not marked ``databases``."""
    return f"sqlite:///{tmp_path / 'app.db'}"


def server(app: Flask) -> Redis:
    return Redis.from_url(app.config["GUARDIAN_REDIS_URL"])


def keys(app: Flask) -> list[str]:
    prefix = app.config["GUARDIAN_REDIS_PREFIX"]
    return sorted(k.decode() for k in server(app).scan_iter(match=prefix + "*"))


def signed_in(client: Any) -> bool:
    return client.get("/auth/session").get_json() is not None


def test_redis_holds_only_the_sha256_of_the_token(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client)
    token = session_cookie(client, app)
    assert token is not None
    prefix = app.config["GUARDIAN_REDIS_PREFIX"]
    digest = hashlib.sha256(token.encode("ascii")).hexdigest()
    assert f"{prefix}s:{digest}" in keys(app)
    redis = server(app)
    for key in keys(app):
        assert token not in key
        kind = redis.type(key).decode()
        values = (
            [redis.get(key)] if kind == "string" else list(redis.hgetall(key).values())
        )
        assert all(token.encode() not in (v or b"") for v in values)


def test_every_key_carries_the_prefix_and_apps_sharing_redis_see_nothing_of_each_other(
    make_app: AppFactory,
) -> None:
    first, second = make_app(), make_app()
    assert first.config["GUARDIAN_REDIS_PREFIX"] != second.config["GUARDIAN_REDIS_PREFIX"]
    client = first.test_client()
    sign_in_ok(client)
    assert keys(first) and not keys(second)
    # The first app's cookie means nothing to the second (same name, other prefix).
    other = second.test_client()
    other.set_cookie(guardian_cookie_name(second), session_cookie(client, first) or "")
    assert not signed_in(other)
    assert signed_in(client)


def guardian_cookie_name(app: Flask) -> str:
    return str(get_state(app).settings.cookie_name)


def test_a_sessions_key_lives_until_its_deadline(make_app: AppFactory) -> None:
    """The TTL is the session's deadline: Redis forgets a session the moment it ends,
    and a refresh moves it with the idle deadline (never past the absolute one)."""
    app = make_app(GUARDIAN_SESSION_IDLE_TIMEOUT=1800, GUARDIAN_SESSION_UPDATE_AGE=60,
                   GUARDIAN_SESSION_MAX_AGE=3600)
    client = app.test_client()
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        digest = hashlib.sha256((session_cookie(client, app) or "").encode()).hexdigest()
        key = app.config["GUARDIAN_REDIS_PREFIX"] + "s:" + digest
        redis = server(app)
        assert redis.pexpiretime(key) == int((T0 + timedelta(seconds=1800)).timestamp() * 1000)
        clock.move_to(T0 + timedelta(seconds=61))
        assert signed_in(client)  # the refresh
        moved = T0 + timedelta(seconds=61 + 1800)
        assert redis.pexpiretime(key) == int(moved.timestamp() * 1000)
        clock.move_to(T0 + timedelta(seconds=1700))
        assert signed_in(client)
        clock.move_to(T0 + timedelta(seconds=3000))
        assert signed_in(client)
        absolute = T0 + timedelta(seconds=3600)
        assert redis.pexpiretime(key) == int(absolute.timestamp() * 1000)


def test_the_device_list_comes_from_the_users_index(app: Flask) -> None:
    phone, laptop = app.test_client(), app.test_client()
    sign_in_ok(phone)
    sign_in_ok(laptop)
    sign_in_ok(app.test_client(), ADMIN)
    listed = laptop.get("/auth/sessions", headers=JSON).get_json()["sessions"]
    assert len(listed) == 2
    assert {s["strategy"] for s in listed} == {"redis"}
    phone_id = next(s["id"] for s in listed if not s["current"])
    response = laptop.post(f"/auth/sessions/{phone_id}/revoke",
                           data={"csrf_token": csrf_token(laptop)})
    assert response.status_code == 303
    assert not signed_in(phone)
    assert signed_in(laptop)
    assert len(laptop.get("/auth/sessions", headers=JSON).get_json()["sessions"]) == 1


def test_an_admin_ends_a_session_by_its_public_id_alone(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client)
    session_id = client.get("/auth/sessions", headers=JSON).get_json()["sessions"][0]["id"]
    with app.app_context():
        assert guardian_of(app).revoke_session(session_id) is True
        assert guardian_of(app).revoke_session(session_id) is False
    assert not signed_in(client)


def test_purge_removes_sessions_past_their_deadline_and_tidies_the_index(
    make_app: AppFactory,
) -> None:
    app = make_app()
    with time_machine.travel(T0, tick=False) as clock:
        idle = [app.test_client() for _ in range(3)]
        for client in idle:
            sign_in_ok(client)
        clock.move_to(T0 + timedelta(minutes=20))
        live = app.test_client()
        sign_in_ok(live)
        clock.move_to(T0 + timedelta(minutes=31))  # the idle ones are past 30 minutes
        with app.app_context():
            assert guardian_of(app).purge_expired() == 3
            assert guardian_of(app).purge_expired() == 0
        assert signed_in(live)
        assert not any(signed_in(c) for c in idle)
        listed = live.get("/auth/sessions", headers=JSON).get_json()["sessions"]
        assert [s["current"] for s in listed] == [True]
    user_index = [k for k in keys(app) if ":u:" in k]
    assert len(user_index) == 1
    assert server(app).hlen(user_index[0]) == 1


def test_a_record_that_is_not_ours_is_anonymous_never_a_500(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client)
    digest = hashlib.sha256((session_cookie(client, app) or "").encode()).hexdigest()
    key = app.config["GUARDIAN_REDIS_PREFIX"] + "s:" + digest
    redis = server(app)
    for junk in (b"", b"\xff\xfe", b"1\x1fonly-two", b"2\x1f" * 12):
        redis.set(key, junk)
        assert client.get("/auth/session").get_json() is None
        assert client.get("/api/me", headers=JSON).status_code == 401


# -- Redis failing ----------------------------------------------------------------------


@pytest.fixture
def redis_proxy() -> Iterator[FaultProxy]:
    url = make_url(require_redis())
    with FaultProxy(url.host or "127.0.0.1", url.port or 6379) as proxy:
        yield proxy


def proxied_config(proxy: FaultProxy) -> dict[str, Any]:
    url = make_url(require_redis()).set(host="127.0.0.1", port=proxy.port)
    return {"GUARDIAN_REDIS_URL": url.render_as_string(hide_password=False),
            "GUARDIAN_REDIS_TIMEOUT": 0.5}


def proxied_app(make_app: AppFactory, proxy: FaultProxy) -> Flask:
    return make_app(**proxied_config(proxy))


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)[:200]
    assert response.headers["Retry-After"].isdigit()
    assert response.get_json()["error"] == "storage_unavailable"


@pytest.mark.parametrize("fault", ["refuse", "cut", "stall"])
def test_a_failing_redis_is_a_503_in_bounded_time_never_signed_in(
    make_app: AppFactory, redis_proxy: FaultProxy, fault: str
) -> None:
    app = proxied_app(make_app, redis_proxy)
    client = app.test_client()
    sign_in_ok(client)
    assert client.get("/api/me", headers=JSON).status_code == 200
    getattr(redis_proxy, fault)()
    if fault == "cut":
        redis_proxy.refuse()
    started = time.monotonic()
    assert_unavailable(client.get("/api/me", headers=JSON))
    assert_unavailable(client.get("/auth/sessions", headers=JSON))
    # A generous bound on a bounded wait (GUARDIAN_REDIS_TIMEOUT = 0.5 s per attempt).
    assert time.monotonic() - started < 10
    # A request without a credential needs no Redis.
    assert app.test_client().get("/").status_code == 200
    redis_proxy.restore()
    assert client.get("/api/me", headers=JSON).status_code == 200


def test_sign_out_while_redis_is_down_answers_503_and_clears_the_cookie(
    make_app: AppFactory, redis_proxy: FaultProxy
) -> None:
    """A sign-out that could not end the session must not look like one that did: 503
    (retry), and this browser stops sending the credential all the same."""
    app = proxied_app(make_app, redis_proxy)
    client = app.test_client()
    sign_in_ok(client)
    token = csrf_token(client)
    redis_proxy.refuse()
    response = client.post("/auth/signout", json={"csrfToken": token})
    assert_unavailable(response)
    cleared = [h for h in response.headers.getlist("Set-Cookie")
               if h.startswith(guardian_cookie_name(app) + "=")]
    assert cleared and ("Max-Age=0" in cleared[0] or "1970" in cleared[0])


def test_a_role_change_reaches_redis_sessions_at_once(app: Flask) -> None:
    client = app.test_client()
    sign_in_ok(client)
    assert client.get("/admin").status_code == 403
    with app.app_context():
        model = guardian_of(app).user_model
        db = app.extensions["sqlalchemy"]
        user = db.session.execute(db.select(model).where(model.email == USER[0])).scalar_one()
        user.role = "admin"
        db.session.commit()
    assert client.get("/admin").status_code == 200
    assert client.get("/auth/session").get_json()["user"]["role"] == "admin"


def test_a_user_change_committed_while_redis_is_down_is_not_an_error_and_still_applies(
    make_app: AppFactory, redis_proxy: FaultProxy
) -> None:
    """The SQL commit stands whatever Redis does after it: no error for the application,
    and the sessions meet the change at their next refresh (they re-read the user)."""
    app = make_app(**proxied_config(redis_proxy), GUARDIAN_SESSION_UPDATE_AGE=60)
    client = app.test_client()
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        redis_proxy.refuse()
        with app.app_context():
            model = guardian_of(app).user_model
            db = app.extensions["sqlalchemy"]
            user = db.session.execute(
                db.select(model).where(model.email == USER[0])).scalar_one()
            user.is_active = False
            db.session.commit()  # must not raise
        redis_proxy.restore()
        clock.move_to(T0 + timedelta(seconds=61))
        assert not signed_in(client)


def test_each_thread_and_each_forked_child_reads_on_a_connection_of_its_own(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path's GET goes through a client kept per thread (redis_client.KeptClients):
    made once per thread, never shared with another thread, and never inherited by a
    forked worker (whose parent's socket it would otherwise write on)."""
    import os
    import threading

    from flask_guardian.redis_client import KeptClients

    made: list[tuple[int, int, int]] = []  # (pid, thread, id of the client)
    make = KeptClients.client

    def counted(self: KeptClients) -> Any:
        kept = make(self)
        made.append((os.getpid(), threading.get_ident(), id(kept)))
        return kept

    monkeypatch.setattr(KeptClients, "client", counted)
    client = app.test_client()
    sign_in_ok(client)
    for _ in range(3):
        assert signed_in(client)
    assert len(made) == 1  # one per thread, kept from request to request

    other: list[bool] = []
    thread = threading.Thread(target=lambda: other.append(signed_in(app.test_client(
    )) is False and signed_in(client)))
    thread.start()
    thread.join()
    assert other == [True] and len(made) == 2 and made[1][1] != made[0][1]

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first request makes its own client
        try:
            ok = signed_in(client) and len(made) == 3 and made[2][0] == os.getpid()
        except BaseException:
            ok = False
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert signed_in(client) and len(made) == 2  # the parent keeps its own


def test_an_app_that_is_gone_leaves_no_redis_connection_behind(tmp_path: Any) -> None:
    """An application factory makes many apps on one module-level ``db``: a dropped app's
    strategy and its Redis connections must go with it (SQLAlchemy's listeners on the
    shared session class once kept every one of them, and a socket each, alive)."""
    db = SQLAlchemy()
    url = require_redis()

    def create_app() -> Flask:
        app = Flask("factory_app")
        app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/f.db",
                          SESSION_STRATEGY="redis", GUARDIAN_REDIS_URL=url,
                          GUARDIAN_REDIS_PREFIX=redis_prefix())
        db.init_app(app)
        guardian = Guardian(app, db=db)
        with app.app_context():
            db.create_all()
            model = guardian.user_model
            if db.session.execute(db.select(model.id)).first() is None:
                guardian.create_user(USER[0], USER[1], role="user")
        return app

    first = create_app()
    assert sign_in_ok(first.test_client(), USER)  # a kept Redis connection in this thread
    gone = weakref.ref(get_state(first).strategy)
    prefix = first.config["GUARDIAN_REDIS_PREFIX"]
    del first
    gc.collect()
    assert gone() is None
    delete_redis_keys(prefix)

    second = create_app()  # the shared session class still commits, for the live app
    client = second.test_client()
    assert sign_in_ok(client, USER)
    with second.app_context():
        model = guardian_of(second).user_model
        user = db.session.execute(db.select(model).where(model.email == USER[0])).scalar_one()
        user.role = "admin"
        db.session.commit()  # the redis strategy applies it to the live session at commit
    assert client.get("/auth/session").get_json()["user"]["role"] == "admin"
    delete_redis_keys(second.config["GUARDIAN_REDIS_PREFIX"])


def _during_the_refresh(app: Flask, monkeypatch: pytest.MonkeyPatch, act: Any) -> None:
    """Run ``act(session_id)`` once, inside the next refresh, between its GET of the
    record and its write (where another process's request may land)."""
    strategy = get_state(app).strategy
    deadlines = strategy.deadlines
    done: list[bool] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        if not done:
            done.append(True)
            with app.app_context():
                act(_session_id(app))
        return deadlines(*args, **kwargs)

    monkeypatch.setattr(strategy, "deadlines", racing)


def _session_id(app: Flask) -> str:
    prefix = app.config["GUARDIAN_REDIS_PREFIX"]
    ids = [k.decode().removeprefix(prefix + "id:")
           for k in server(app).scan_iter(match=prefix + "id:*")]
    assert len(ids) == 1
    return ids[0]


def test_a_revocation_during_a_refresh_is_not_undone_by_it(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh reads the record, re-reads the user, then writes the record back: a
    revocation landing in between (another process's sign-out) must stay a revocation,
    not be overwritten by the refreshed record."""
    app = make_app(GUARDIAN_SESSION_UPDATE_AGE=60)
    client = app.test_client()
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        clock.move_to(T0 + timedelta(seconds=61))  # the next request refreshes
        _during_the_refresh(app, monkeypatch,
                            lambda sid: guardian_of(app).revoke_session(sid))
        assert not signed_in(client)
        assert not signed_in(client)
        prefix = app.config["GUARDIAN_REDIS_PREFIX"]
        stored = [server(app).get(k) for k in server(app).scan_iter(match=prefix + "s:*")]
        assert all(value in (None, GONE) for value in stored), stored


def test_a_refresh_racing_another_refresh_keeps_the_session(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes refreshing one session at once (a browser's parallel requests): the
    one that loses the race serves the session the winner wrote, and signs nobody out."""
    app = make_app(GUARDIAN_SESSION_UPDATE_AGE=60)
    other = make_app(**store_config(app), GUARDIAN_SESSION_UPDATE_AGE=60)
    client = app.test_client()
    with time_machine.travel(T0, tick=False) as clock:
        sign_in_ok(client)
        cookie = session_cookie(client, app) or ""
        clock.move_to(T0 + timedelta(seconds=61))
        other_client = other.test_client()
        other_client.set_cookie(guardian_cookie_name(other), cookie)
        _during_the_refresh(app, monkeypatch,
                            lambda sid: other_client.get("/auth/session"))
        assert signed_in(client)
        assert session_cookie(client, app) == cookie
        clock.move_to(T0 + timedelta(seconds=90))
        assert signed_in(client) and signed_in(other_client)
