"""GUARDIAN_SESSION_CACHE: a steady-state request of a known session makes no round trip,
and every change that ends or alters a session reaches every process through the
invalidation channel (PostgreSQL LISTEN/NOTIFY, or Redis pub/sub), which the cache trusts
only while it is up.

Two "processes" are two apps with the same configuration on one PostgreSQL database (two
Guardian instances, two SQLAlchemy objects, two listeners); the last tests start real
processes. Nothing here sleeps to let time pass: a test waits on a condition (a message
applied, a listener up) with a bounded deadline, and moves the clock with time-machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import time_machine
from flask import Flask
from helpers import (
    BASE_CONFIG,
    USER,
    AppFactory,
    Browser,
    QueryCounter,
    build_app,
    db_of,
    guardian_of,
    read_port,
    session_cookie,
    sign_in_ok,
    sign_out,
    stop_process,
    wait_cache_down,
)
from servers import ADMIN_URLS, redis_prefix, require_redis
from sqlalchemy import create_engine, select, text

from flask_guardian import ConfigurationError
from flask_guardian.session_cache import SessionCache
from flask_guardian.state import get_state
from flask_guardian.strategies.cached_sessions import CachedSessions

T0 = datetime(2030, 3, 4, 10, 0, 0, tzinfo=UTC)
JSON = {"Accept": "application/json"}
#: Real seconds a test waits for a message or a listener (ends as soon as it happens).
WAIT = 10.0
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def cache_of(app: Flask) -> CachedSessions:
    cache = get_state(app).strategy.cache  # type: ignore[attr-defined]
    assert isinstance(cache, CachedSessions)
    return cache


def status(app: Flask, token: str, path: str = "/api/me") -> int:
    client = app.test_client()
    client.set_cookie(get_state(app).settings.cookie_name, token)
    return int(client.get(path, headers=JSON).status_code)


def up(app: Flask, token: str) -> None:
    """Make ``app`` see ``token`` (its first request starts its listener), wait until the
    listener listens, then once more so the session is cached."""
    assert status(app, token) == 200
    assert cache_of(app).cache.wait(came_up=1, timeout=WAIT), "the listener never came up"
    assert status(app, token) == 200
    assert cache_of(app).cache.entries, "the session was not cached"


def signed_in(app: Flask) -> tuple[Any, str]:
    client = app.test_client()
    sign_in_ok(client)
    token = session_cookie(client, app)
    assert token
    return client, token


def heard_after(app: Flask, action: Callable[[], Any]) -> None:
    """Run ``action`` and wait until ``app``'s listener applied the message it sends."""
    cache = cache_of(app).cache
    heard = cache.heard
    action()
    assert cache.wait(heard=heard + 1, timeout=WAIT), "the message never arrived"


def the_user(app: Flask) -> Any:
    model = guardian_of(app).user_model
    return db_of(app).session.execute(select(model).where(model.email == USER[0])).scalar_one()


# -- configuration ---------------------------------------------------------------------


def test_the_cache_is_refused_where_no_channel_can_invalidate_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"GUARDIAN_SESSION_CACHE.*PostgreSQL"):
        build_app(f"sqlite:///{tmp_path / 'a.db'}", "database", GUARDIAN_SESSION_CACHE=True)


def test_the_cache_is_refused_for_a_strategy_that_cannot_use_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"GUARDIAN_SESSION_CACHE.*'jwt'"):
        build_app(f"sqlite:///{tmp_path / 'a.db'}", "jwt", GUARDIAN_SESSION_CACHE=True)


def test_the_cache_setting_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"GUARDIAN_SESSION_CACHE.*True or False"):
        build_app(f"sqlite:///{tmp_path / 'a.db'}", "database", GUARDIAN_SESSION_CACHE="yes")


def test_a_redis_url_gives_other_databases_the_cache(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path / 'a.db'}", "database", GUARDIAN_SESSION_CACHE=True,
                    GUARDIAN_REDIS_URL=require_redis(), GUARDIAN_REDIS_PREFIX=redis_prefix())
    assert cache_of(app).transport == "redis"


def test_postgresql_uses_listen_notify(make_cached_app: AppFactory) -> None:
    assert cache_of(make_cached_app()).transport == "postgresql"


# -- no round trip ---------------------------------------------------------------------


@pytest.mark.parametrize(("cached", "queries"), [(True, 0), (False, 1)])
def test_a_steady_state_request_makes_no_query_with_the_cache(
    make_cached_app: AppFactory, cached: bool, queries: int
) -> None:
    app = make_cached_app(GUARDIAN_SESSION_CACHE=cached)
    client, token = signed_in(app)
    if cached:
        up(app, token)
    assert client.get("/api/me", headers=JSON).status_code == 200
    with QueryCounter(app) as counter:
        for _ in range(3):
            assert client.get("/api/me", headers=JSON).status_code == 200
    assert counter.count == 3 * queries


# -- every change reaches the other process --------------------------------------------


def two_apps(make_cached_app: AppFactory) -> tuple[Flask, Flask, Any, str]:
    first, second = make_cached_app(), make_cached_app()
    client, token = signed_in(first)
    up(first, token)
    up(second, token)
    return first, second, client, token


def test_a_sign_out_in_one_process_is_refused_by_the_other(
    make_cached_app: AppFactory,
) -> None:
    first, second, client, token = two_apps(make_cached_app)
    heard_after(second, lambda: sign_out(client))
    assert status(second, token) == 401
    assert status(first, token) == 401


def test_a_process_with_more_than_1024_descriptors_still_listens(
    make_cached_app: AppFactory,
) -> None:
    """A busy server holds many sockets: select() refuses a descriptor of 1024 and above,
    so the listener must wait on its connection some other way (it did not, once)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may open only {hard} files (RLIMIT_NOFILE)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        while (fd := os.open(os.devnull, os.O_RDONLY)) < 1100:
            held.append(fd)
        os.close(fd)  # the listener's connection will get a descriptor above 1024
        _first, second, client, token = two_apps(make_cached_app)
        heard_after(second, lambda: sign_out(client))
        assert status(second, token) == 401
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("scope", ["one", "others", "all"])
def test_a_revocation_in_one_process_is_refused_by_the_other(
    make_cached_app: AppFactory, scope: str
) -> None:
    first, second, _client, token = two_apps(make_cached_app)
    _other_client, other = signed_in(first)
    up(second, other)
    sid = cache_of(second).cache.entries[token].session_id

    def revoke() -> None:
        with first.app_context():
            if scope == "one":
                assert guardian_of(first).revoke_session(sid)
            elif scope == "all":
                assert guardian_of(first).revoke_user_sessions(the_user(first)) == 2
            else:  # what a password change does: all but the current one
                kept = cache_of(second).cache.entries[other].session_id
                get_state(first).strategy.revoke_user(the_user(first).id, except_id=kept)
                db_of(first).session.commit()

    heard_after(second, revoke)
    assert status(second, token) == 401
    assert status(second, other) == (401 if scope == "all" else 200)


@pytest.mark.parametrize("change", ["role", "deactivated", "deleted", "password"])
def test_a_user_change_in_one_process_reaches_the_other(
    make_cached_app: AppFactory, change: str
) -> None:
    first, second, _client, token = two_apps(make_cached_app)
    assert status(second, token, "/admin") == 403

    def apply() -> None:
        with first.app_context():
            user = the_user(first)
            if change == "role":
                user.role = "admin"
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
    else:
        assert status(second, token) == 401


def test_a_rolled_back_revocation_is_not_announced(make_cached_app: AppFactory) -> None:
    first, second, _client, token = two_apps(make_cached_app)
    with first.app_context():
        get_state(first).strategy.revoke_user(the_user(first).id)
        db_of(first).session.rollback()
    # A marker sent after it: when it arrives, anything sent before it has too.
    heard_after(second, lambda: marker(first))
    assert status(second, token) == 200
    assert token in cache_of(second).cache.entries


def marker(app: Flask) -> None:
    with app.app_context():
        cache = cache_of(app)
        cache.announce(db_of(app).session, ["x" * 22])
        db_of(app).session.commit()


# -- refresh and expiry ------------------------------------------------------------------


def test_a_cached_session_refreshes_once_per_update_age_across_processes(
    make_cached_app: AppFactory,
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        first, second, _client, token = two_apps(make_cached_app)
        update_age = get_state(first).settings.update_age
        clock.shift(timedelta(seconds=update_age + 1))
        with QueryCounter(first) as one, QueryCounter(second) as two:
            assert status(first, token) == 200  # due: reads the row, moves the deadline
            assert status(second, token) == 200  # due here too: reads it, sees it moved
            for app in (first, second):
                assert status(app, token) == 200  # cached again
        assert len(one.writes) == 1
        assert two.writes == []
        assert one.count - len(one.writes) == 1 and two.count == 1
        # The idle deadline moved: past the old one, the session lives on.
        clock.shift(timedelta(seconds=get_state(first).settings.idle_timeout - update_age))
        assert status(second, token) == 200


def test_a_cached_session_ends_at_its_deadline(make_cached_app: AppFactory) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        _first, second, _client, token = two_apps(make_cached_app)
        clock.shift(timedelta(seconds=get_state(second).settings.idle_timeout + 1))
        assert status(second, token) == 401


# -- the channel drops -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["connection-killed", "unexpected-error"])
def test_while_the_listener_is_cut_every_request_reads_the_row(
    make_cached_app: AppFactory, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Kill the second process's LISTEN connection (and keep it from coming back): it
    serves nothing from memory, so a revocation made meanwhile is refused at once, with no
    message to wait for. Back up, it starts from an empty cache.

    The same when the listening thread fails with an error that is not a lost connection
    (a bug): it must not end with its cache trusted; it goes down the same way."""
    first, second, _client, token = two_apps(make_cached_app)
    cached = cache_of(second)
    assert cached.listener is not None
    real_connect = cached.listener._connect

    def refused() -> Any:
        raise psycopg.OperationalError("test: the listener cannot reconnect")

    def bug(conn: Any) -> None:
        raise RuntimeError("test: not a connection error")

    monkeypatch.setattr(cached.listener, "_connect", refused)
    if how == "unexpected-error":
        monkeypatch.setattr(cached.listener, "_receive", bug)
    else:
        admin = create_engine(ADMIN_URLS["postgresql"], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"),
                         {"pid": cached.listener.backend_pid})
        admin.dispose()
    wait_cache_down(cached.cache, WAIT)

    with QueryCounter(second) as counter:
        assert status(second, token) == 200
        assert status(second, token) == 200
    assert counter.count == 2  # a round trip each: nothing served from memory
    with first.app_context():  # the revocation's NOTIFY reaches no one in the second
        get_state(first).strategy.revoke_user(the_user(first).id)
        db_of(first).session.commit()
    assert status(second, token) == 401  # at once

    _c, fresh = signed_in(first)
    came_up = cached.cache.came_up
    monkeypatch.undo()
    assert cached.listener._connect == real_connect
    assert cached.cache.wait(came_up=came_up + 1, timeout=WAIT)
    assert cached.cache.entries == {}
    with QueryCounter(second) as counter:
        assert status(second, fresh) == 200
        assert status(second, fresh) == 200
    assert counter.count == 1


def test_an_unreadable_message_empties_the_cache(make_cached_app: AppFactory) -> None:
    _first, second, _client, token = two_apps(make_cached_app)
    cache_of(second).cache.apply(b"not json")
    assert cache_of(second).cache.entries == {}
    assert status(second, token) == 200


def test_a_forked_child_starts_with_an_empty_cache_that_is_not_trusted(
    make_cached_app: AppFactory,
) -> None:
    _first, second, _client, _token = two_apps(make_cached_app)
    cache = cache_of(second).cache
    assert cache.live and cache.entries
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if it forgot its parent's cache
        os._exit(0 if not cache.live and not cache.entries else 1)
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    assert cache.live and cache.entries  # the parent keeps its own


def test_a_revoked_session_is_never_served_from_a_cache_filled_during_the_revocation() -> None:
    """The race: a request read the row before the revocation committed and stores it
    after the message was applied. The generation it read first refuses the store."""
    cache = SessionCache()
    cache.went_up()
    generation = cache.generation
    cache.evict(["a" * 22])
    from flask_guardian.session_cache import Entry

    cache.put("token", generation, Entry(None, time.time() + 60, None, None, "a" * 22, 1))
    assert cache.entries == {}


# -- a failing database ------------------------------------------------------------------


def test_a_database_that_stops_answering_is_a_503_not_a_cached_session(
    make_proxied_app: AppFactory, proxied_database: Any, strategy: str
) -> None:
    if strategy != "database" or proxied_database.name != "postgresql":
        pytest.skip("the session cache: database strategy on PostgreSQL")
    app = make_proxied_app(GUARDIAN_SESSION_CACHE=True)
    try:
        _client, token = signed_in(app)
        up(app, token)
        proxied_database.proxy.stall()
        started = time.monotonic()
        deadline = started + WAIT
        codes = []
        while time.monotonic() < deadline:
            codes.append(status(app, token))
            if codes[-1] == 503:
                break
            cache_of(app).cache.wait(heard=cache_of(app).cache.heard + 1, timeout=0.2)
        assert codes[-1] == 503
        assert set(codes) <= {200, 503}
    finally:
        proxied_database.proxy.restore()
        cache_of(app).close()


# -- Redis pub/sub (another database, or PostgreSQL's apps preferring it) ------------------


def test_redis_carries_the_invalidation_for_a_database_without_notify(
    tmp_path: Path,
) -> None:
    config = {"GUARDIAN_SESSION_CACHE": True, "GUARDIAN_REDIS_URL": require_redis(),
              "GUARDIAN_REDIS_PREFIX": redis_prefix()}
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = build_app(url, "database", **config), build_app(url, "database", **config)
    try:
        client, token = signed_in(first)
        up(first, token)
        up(second, token)
        with QueryCounter(second) as counter:
            assert status(second, token) == 200
        assert counter.count == 0
        heard_after(second, lambda: sign_out(client))
        assert status(second, token) == 401
    finally:
        for app in (first, second):
            cache_of(app).close()


# -- two real processes ------------------------------------------------------------------


SCRIPT = Path(__file__).with_name("multiprocess_app.py")


def test_two_real_processes_a_sign_out_reaches_the_other(
    make_cached_app: AppFactory, tmp_path: Path
) -> None:
    local = make_cached_app()
    url = local.config["SQLALCHEMY_DATABASE_URI"]
    environment = {**os.environ, "GUARDIAN_MP_CONFIG": __import__("json").dumps({
        **BASE_CONFIG, "SQLALCHEMY_DATABASE_URI": url, "SESSION_STRATEGY": "database",
        "GUARDIAN_SESSION_CACHE": True})}
    processes, ports = [], []
    try:
        for index in range(2):
            log = tmp_path / f"process-{index}.log"
            with log.open("w") as stderr:
                process = subprocess.Popen(
                    [sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, stderr=stderr,
                    env=environment, cwd=SCRIPT.parent.parent, text=True)
            processes.append(process)
            ports.append(read_port(process, log))
        one, two = ports
        browser = Browser(FIREFOX)
        assert browser.sign_in(one, USER).status == 303
        assert browser.me(two).status == 200  # process two's first request: it listens
        database = url.rsplit("/", 1)[1]
        admin = create_engine(ADMIN_URLS["postgresql"], isolation_level="AUTOCOMMIT")
        listening = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                         "AND query LIKE 'LISTEN %'")
        deadline = time.monotonic() + WAIT
        with admin.connect() as conn:
            while conn.execute(listening, {"db": database}).scalar_one() < 2:
                assert time.monotonic() < deadline, "the processes never listened"
                browser.me(one), browser.me(two)
        admin.dispose()
        assert browser.me(two).status == 200
        stolen = browser.replayer()
        response = browser.request(one, "POST", "/auth/signout",
                                   form={"csrf_token": browser.csrf(one)})
        assert response.status == 303
        deadline = time.monotonic() + WAIT
        while stolen.me(two).status != 401:
            assert time.monotonic() < deadline, "process two still serves the session"
        assert stolen.me(one).status == 401
    finally:
        for process in processes:
            stop_process(process)


def test_a_killed_redis_listener_comes_back_to_an_empty_cache(tmp_path: Path) -> None:
    """CLIENT KILL on the second app's pub/sub connection: whether redis-py reconnects at
    once or the listener resubscribes after its pause, the cache is emptied before it is
    used again (what was published meanwhile is lost to it), and refilled afterwards."""
    import redis

    config = {"GUARDIAN_SESSION_CACHE": True, "GUARDIAN_REDIS_URL": require_redis(),
              "GUARDIAN_REDIS_PREFIX": redis_prefix()}
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = build_app(url, "database", **config), build_app(url, "database", **config)
    server = redis.Redis.from_url(require_redis())
    try:
        _client, token = signed_in(first)
        up(second, token)
        cached = cache_of(second)
        assert cached.redis_channel is not None and cached.redis_channel.pubsub is not None
        host, port = cached.redis_channel.pubsub.connection._sock.getsockname()[:2]
        came_up = cached.cache.came_up
        assert server.client_kill_filter(_type="pubsub", addr=f"{host}:{port}") == 1
        assert cached.cache.wait(came_up=came_up + 1, timeout=WAIT)
        assert token not in cached.cache.entries
        with QueryCounter(second) as counter:
            assert status(second, token) == 200
            assert status(second, token) == 200
        assert counter.count == 1
    finally:
        server.close()
        for app in (first, second):
            cache_of(app).close()
