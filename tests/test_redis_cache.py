"""GUARDIAN_SESSION_CACHE with the redis strategy: a steady-state request of a known session
makes no ``GET``, and every change that ends or alters a session reaches every process
through Redis pub/sub, published in the same pipeline as the write; the cache is trusted
only while the channel is up.

Two "processes" are two apps with the same configuration: one users table (SQLite is
enough, the sessions are in Redis) and one Redis key prefix of their own. Nothing here
sleeps to let time pass: a test waits on a condition (a message applied, a listener up)
with a bounded deadline, and moves the clock with time-machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import time_machine
from flask import Flask
from helpers import (
    USER,
    AppFactory,
    QueryCounter,
    build_app,
    close_cached_apps,
    db_of,
    guardian_of,
    session_cookie,
    sign_in_ok,
    sign_out,
    wait_cache_down,
)
from servers import delete_redis_keys, redis_prefix, require_redis
from sqlalchemy import select

from flask_guardian.session_cache import read_session_cache
from flask_guardian.state import get_state
from flask_guardian.strategies.cached_redis import CachedRedis
from flask_guardian.strategies.redis import RedisStrategy

T0 = datetime(2030, 3, 4, 10, 0, 0, tzinfo=UTC)
JSON = {"Accept": "application/json"}
#: Real seconds a test waits for a message or a listener (ends as soon as it happens).
WAIT = 10.0


@pytest.fixture
def make_redis_cached_app(tmp_path: Path) -> Iterator[AppFactory]:
    """``make_redis_cached_app(**config)``: a redis-strategy app with the session cache on;
    each call is another "process" on the same users table and Redis prefix. Listeners
    stop and the prefix's keys go at teardown."""
    url, prefix = f"sqlite:///{tmp_path / 'users.db'}", redis_prefix()
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        config.setdefault("GUARDIAN_SESSION_CACHE", True)
        app = build_app(url, "redis", GUARDIAN_REDIS_URL=require_redis(),
                        GUARDIAN_REDIS_PREFIX=prefix, **config)
        apps.append(app)
        return app

    yield factory
    close_cached_apps(apps)
    delete_redis_keys(prefix)


def cache_of(app: Flask) -> CachedRedis:
    cache = get_state(app).strategy.cache  # type: ignore[attr-defined]
    assert isinstance(cache, CachedRedis)
    return cache


def status(app: Flask, token: str, path: str = "/api/me") -> int:
    return int(me(app, token, path).status_code)


def me(app: Flask, token: str, path: str = "/api/me") -> Any:
    client = app.test_client()
    client.set_cookie(get_state(app).settings.cookie_name, token)
    return client.get(path, headers=JSON)


def up(app: Flask, token: str) -> None:
    """Make ``app`` see ``token`` (its first request starts its listener), wait until the
    listener listens, then once more so the session is cached."""
    assert status(app, token) == 200
    assert cache_of(app).cache.wait(came_up=1, timeout=WAIT), "the listener never came up"
    assert status(app, token) == 200
    assert token in cache_of(app).cache.entries, "the session was not cached"


def signed_in(app: Flask) -> tuple[Any, str]:
    client = app.test_client()
    sign_in_ok(client)
    token = session_cookie(client, app)
    assert token
    return client, token


def two_apps(make_app: AppFactory) -> tuple[Flask, Flask, Any, str]:
    first, second = make_app(), make_app()
    client, token = signed_in(first)
    up(first, token)
    up(second, token)
    return first, second, client, token


def heard_after(app: Flask, action: Callable[[], Any]) -> None:
    """Run ``action`` and wait until ``app``'s listener applied the message it sends."""
    cache = cache_of(app).cache
    heard = cache.heard
    action()
    assert cache.wait(heard=heard + 1, timeout=WAIT), "the message never arrived"


def the_user(app: Flask) -> Any:
    model = guardian_of(app).user_model
    return db_of(app).session.execute(select(model).where(model.email == USER[0])).scalar_one()


def gets(counter: QueryCounter) -> list[str]:
    return [s for s in counter.statements if s.startswith("GET ")]


# -- configuration ---------------------------------------------------------------------


def test_the_redis_strategy_takes_the_cache_with_redis_pub_sub_whatever_the_database(
) -> None:
    values = {"GUARDIAN_SESSION_CACHE": True, "SQLALCHEMY_DATABASE_URI": "postgresql://h/db"}
    assert read_session_cache(values, RedisStrategy, "redis://127.0.0.1:6379/0") == "redis"


def test_with_the_cache_on_the_app_listens_on_a_channel_under_its_prefix(
    make_redis_cached_app: AppFactory,
) -> None:
    app = make_redis_cached_app()
    channel = cache_of(app).redis_channel.name
    assert channel == app.config["GUARDIAN_REDIS_PREFIX"] + "guardian_cache_redis"


def test_with_the_cache_off_nothing_of_it_exists(make_redis_cached_app: AppFactory) -> None:
    app = make_redis_cached_app(GUARDIAN_SESSION_CACHE=False)
    strategy = get_state(app).strategy
    assert strategy.cache is None  # type: ignore[attr-defined]
    assert "load" not in vars(strategy)  # the class's own load: the hot path as it was


# -- no round trip ---------------------------------------------------------------------


@pytest.mark.parametrize(("cached", "reads"), [(True, 0), (False, 1)])
def test_a_steady_state_request_makes_no_get_with_the_cache(
    make_redis_cached_app: AppFactory, cached: bool, reads: int
) -> None:
    app = make_redis_cached_app(GUARDIAN_SESSION_CACHE=cached)
    client, token = signed_in(app)
    if cached:
        up(app, token)
    assert client.get("/api/me", headers=JSON).status_code == 200
    with QueryCounter(app) as counter:
        for _ in range(3):
            assert client.get("/api/me", headers=JSON).status_code == 200
    assert counter.count == 3 * reads, counter.statements
    assert len(gets(counter)) == 3 * reads


# -- every change reaches the other process --------------------------------------------


def test_a_sign_out_in_one_process_is_refused_by_the_other(
    make_redis_cached_app: AppFactory,
) -> None:
    _first, second, client, token = two_apps(make_redis_cached_app)
    heard_after(second, lambda: sign_out(client))
    assert token not in cache_of(second).cache.entries
    assert status(second, token) == 401


def test_the_process_that_signs_out_refuses_the_cookie_at_once(
    make_redis_cached_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay right after the sign-out, before the listener has heard its own message:
    the process forgot the session when its write went through."""
    first, _second, client, token = two_apps(make_redis_cached_app)
    # Its listener drops what it hears: its own message will not evict anything.
    monkeypatch.setattr(cache_of(first).redis_channel, "_on_message", lambda data: None)
    sign_out(client)
    assert status(first, token) == 401


@pytest.mark.parametrize("scope", ["one", "others", "all"])
def test_a_revocation_in_one_process_is_refused_by_the_other(
    make_redis_cached_app: AppFactory, scope: str
) -> None:
    first, second, _client, token = two_apps(make_redis_cached_app)
    _other_client, other = signed_in(first)
    up(second, other)
    sid = cache_of(second).cache.entries[token].session_id

    def revoke() -> None:
        with first.app_context():
            if scope == "one":  # the admin's "end this session", by its public id
                assert guardian_of(first).revoke_session(sid)
            elif scope == "all":
                assert guardian_of(first).revoke_user_sessions(the_user(first)) == 2
            else:  # what a password change does: all but the current one
                kept = cache_of(second).cache.entries[other].session_id
                get_state(first).strategy.revoke_user(the_user(first).id, except_id=kept)

    heard_after(second, revoke)
    assert status(second, token) == 401
    assert status(second, other) == (401 if scope == "all" else 200)


@pytest.mark.parametrize("change", ["role", "name", "email", "deactivated", "deleted",
                                    "password"])
def test_a_user_change_in_one_process_reaches_the_other(
    make_redis_cached_app: AppFactory, change: str
) -> None:
    first, second, _client, token = two_apps(make_redis_cached_app)
    assert status(second, token, "/admin") == 403

    def apply() -> None:
        with first.app_context():
            user = the_user(first)
            if change == "role":
                user.role = "admin"
            elif change == "name":
                user.name = "Renamed"
            elif change == "email":
                user.email = "renamed@example.com"
            elif change == "deactivated":
                user.is_active = False
            elif change == "deleted":
                db_of(first).session.delete(user)
            else:
                guardian_of(first).set_password(user, "another-password-456")
            db_of(first).session.commit()

    heard_after(second, apply)
    if change == "role":
        assert status(second, token, "/admin") == 200
    elif change in ("name", "email"):
        body = json.dumps(me(second, token).get_json())
        assert ("Renamed" if change == "name" else "renamed@example.com") in body
    else:
        assert status(second, token) == 401


def test_a_rolled_back_user_change_is_not_announced(make_redis_cached_app: AppFactory) -> None:
    first, second, _client, token = two_apps(make_redis_cached_app)
    with first.app_context():
        the_user(first).is_active = False
        db_of(first).session.flush()
        db_of(first).session.rollback()
    # A marker sent after it: when it arrives, anything sent before it has too.
    heard_after(second, lambda: cache_of(first).redis_channel.publish(
        json.dumps({"s": ["x" * 22]})))
    assert token in cache_of(second).cache.entries
    assert status(second, token) == 200


# -- refresh and deadlines ---------------------------------------------------------------


def test_a_cached_session_refreshes_once_per_update_age_across_processes(
    make_redis_cached_app: AppFactory,
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        first, second, _client, token = two_apps(make_redis_cached_app)
        update_age = get_state(first).settings.update_age
        clock.shift(timedelta(seconds=update_age + 1))
        # (A counter counts every app's Redis commands: one app at a time.)
        with QueryCounter(first) as one:
            assert status(first, token) == 200  # due: reads, moves the deadline, writes
            assert status(first, token) == 200  # cached again
        with QueryCounter(second) as two:
            assert status(second, token) == 200  # due here too: reads the moved record
            assert status(second, token) == 200  # cached again
        # The refresh's write is its compare-and-set script (redis.py's _SWAP).
        assert [w.split()[0] for w in one.writes] == ["EVAL"] and len(gets(one)) == 1
        assert two.writes == [] and two.statements == gets(two) and len(gets(two)) == 1
        # The idle deadline moved: past the old one, the session lives on.
        clock.shift(timedelta(seconds=get_state(first).settings.idle_timeout - update_age))
        assert status(second, token) == 200


def test_a_cached_session_is_not_served_past_its_deadline(
    make_redis_cached_app: AppFactory,
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        _first, second, _client, token = two_apps(make_redis_cached_app)
        entry = cache_of(second).cache.entries[token]
        assert entry.until <= entry.loaded.session.expires.timestamp()
        clock.shift(timedelta(seconds=get_state(second).settings.idle_timeout + 1))
        assert status(second, token) == 401
        assert token not in cache_of(second).cache.entries


# -- the channel drops -------------------------------------------------------------------


class _NoServer:
    """A client whose pub/sub cannot connect: keeps a cut listener from coming back."""

    def pubsub(self) -> Any:
        raise redis.ConnectionError("test: the listener cannot reconnect")


@pytest.mark.parametrize("error", [redis.ConnectionError, RuntimeError],
                         ids=["connection-lost", "unexpected-error"])
def test_while_the_listener_is_cut_every_request_reads_redis(
    make_redis_cached_app: AppFactory, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """Cut the second process's pub/sub connection (and keep it from coming back): it
    serves nothing from memory, so a revocation made meanwhile is refused at once, with no
    message to wait for. Back up, it starts from an empty cache.

    The same when the listener fails with an error that is not a lost connection (a bug,
    in it or in redis-py): it must not end with its cache trusted, where it would serve a
    session revoked after that from memory; it goes down the same way, and comes back."""
    first, second, _client, token = two_apps(make_redis_cached_app)
    cached = cache_of(second)
    channel = cached.redis_channel
    real_client = channel._client
    monkeypatch.setattr(channel, "_client", _NoServer())

    def cut(*args: Any, **kwargs: Any) -> Any:
        raise error("test: the connection was cut, or a bug")

    monkeypatch.setattr(channel.pubsub, "get_message", cut)
    wait_cache_down(cached.cache, WAIT)

    with QueryCounter(second) as counter:
        assert status(second, token) == 200
        assert status(second, token) == 200
    assert len(gets(counter)) == 2  # a GET each: nothing served from memory
    assert not cached.cache.entries
    with first.app_context():  # the revocation's message reaches no one in the second
        get_state(first).strategy.revoke_user(the_user(first).id)
    assert status(second, token) == 401  # at once

    _c, fresh = signed_in(first)
    came_up = cached.cache.came_up
    monkeypatch.setattr(channel, "_client", real_client)
    assert cached.cache.wait(came_up=came_up + 1, timeout=WAIT)
    assert cached.cache.entries == {}
    with QueryCounter(second) as counter:
        assert status(second, fresh) == 200
        assert status(second, fresh) == 200
    assert len(gets(counter)) == 1


def test_a_listener_started_again_after_close_is_not_taken_down_by_the_old_one(
    make_redis_cached_app: AppFactory,
) -> None:
    """close() then listen() in one process: the old thread ends after its tick, once the
    new one is subscribed; its ending must not mark the new listener's cache down (the
    process would then read Redis on every request for good)."""
    _first, second, _client, token = two_apps(make_redis_cached_app)
    cached = cache_of(second)
    old = cached.redis_channel._thread.current
    assert old is not None and old.is_alive()
    cached.close()
    assert not cached.cache.live
    came_up = cached.cache.came_up
    cached.listen()
    assert cached.cache.wait(came_up=came_up + 1, timeout=WAIT)
    assert cached.redis_channel._thread.current is not old
    old.join(WAIT)
    assert not old.is_alive()
    assert cached.cache.live and cached.redis_channel.live.is_set()
    assert status(second, token) == 200
    assert token in cached.cache.entries  # served from memory again


def test_a_killed_listener_comes_back_to_an_empty_cache(
    make_redis_cached_app: AppFactory,
) -> None:
    """CLIENT KILL on the second app's pub/sub connection: the cache is emptied before it
    is used again (what was published meanwhile is lost to it), and refilled afterwards."""
    _first, second, _client, token = two_apps(make_redis_cached_app)
    cached = cache_of(second)
    server = redis.Redis.from_url(require_redis())
    try:
        assert cached.redis_channel.pubsub is not None
        host, port = cached.redis_channel.pubsub.connection._sock.getsockname()[:2]
        came_up = cached.cache.came_up
        assert server.client_kill_filter(_type="pubsub", addr=f"{host}:{port}") == 1
        assert cached.cache.wait(came_up=came_up + 1, timeout=WAIT)
        assert token not in cached.cache.entries
        with QueryCounter(second) as counter:
            assert status(second, token) == 200
            assert status(second, token) == 200
        assert len(gets(counter)) == 1
    finally:
        server.close()


def test_a_forked_child_starts_with_an_empty_cache_that_is_not_trusted(
    make_redis_cached_app: AppFactory,
) -> None:
    _first, second, _client, _token = two_apps(make_redis_cached_app)
    cache = cache_of(second).cache
    assert cache.live and cache.entries
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if it forgot its parent's cache
        os._exit(0 if not cache.live and not cache.entries else 1)
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    assert cache.live and cache.entries  # the parent keeps its own
