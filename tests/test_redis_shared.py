"""With ``GUARDIAN_REDIS_URL`` set, processes share through Redis: the jwt strategy's
revocations reach every other process at once (the SQL feed's poll stays the bound when
the channel drops), and the lockout counters live in Redis, counted across processes
whatever the strategy; a Redis that cannot count makes a sign-in a 503, never a 500 and
never an uncounted attempt.

Two "processes" are two apps with the same configuration (two Guardian instances, two
SQLAlchemy objects, nothing shared in memory). The clock is frozen with time-machine, so
no poll of the SQL feed is due when a test says "at once".
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from faultproxy import FaultProxy
from flask import Flask
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    build_app,
    csrf_token,
    db_of,
    guardian_of,
    session_cookie,
    sign_in,
    sign_in_ok,
    sign_out,
)
from servers import STRATEGIES, delete_redis_keys, redis_prefix, require_redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from flask_guardian.clients import throttle_key
from flask_guardian.redis_channel import RedisChannel
from flask_guardian.state import get_state

T0 = datetime(2030, 3, 4, 10, 0, 0, tzinfo=UTC)
JSON = {"Accept": "application/json"}
#: Long enough that no poll of the SQL feed falls due while the clock is frozen.
LONG_INTERVAL = 300
#: Seconds a test waits for a message or a subscription (real time, never reached when
#: things work: the wait ends as soon as the event happens).
WAIT = 10.0


@pytest.fixture
def database_url(tmp_path: Any) -> str:
    """SQLite: what is shared here goes through Redis (and the feed, for the poll)."""
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def shared() -> Iterator[dict[str, Any]]:
    """The Redis settings two "processes" share: the server and one prefix (this run's
    own; its keys are deleted afterwards)."""
    config = {"GUARDIAN_REDIS_URL": require_redis(), "GUARDIAN_REDIS_PREFIX": redis_prefix()}
    yield config
    delete_redis_keys(config["GUARDIAN_REDIS_PREFIX"])


@pytest.fixture
def redis_proxy() -> Iterator[FaultProxy]:
    url = make_url(require_redis())
    with FaultProxy(url.host or "127.0.0.1", url.port or 6379) as proxy:
        yield proxy


def through(proxy: FaultProxy) -> str:
    """The Redis URL that reaches the server through ``proxy``."""
    url = make_url(require_redis()).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


def channel_of(app: Flask) -> RedisChannel:
    channel = getattr(get_state(app).strategy, "revocation_channel", None)
    assert isinstance(channel, RedisChannel)
    return channel


@pytest.fixture
def listeners() -> Iterator[list[Flask]]:
    """Apps whose listener threads are stopped when the test ends."""
    apps: list[Flask] = []
    yield apps
    for app in apps:
        channel_of(app).close()


def api_status(app: Flask, token: str, path: str = "/api/me") -> int:
    client = app.test_client()
    client.set_cookie(get_state(app).settings.cookie_name, token)
    return int(client.get(path, headers=JSON).status_code)


def listening(app: Flask, token: str) -> None:
    """Make ``app`` verify ``token`` once (which starts its listener) and wait until the
    listener is subscribed."""
    assert api_status(app, token) == 200
    assert channel_of(app).live.wait(WAIT), "the listener never subscribed"


def two_processes(make_app: AppFactory, shared: dict[str, Any],
                  listeners: list[Flask]) -> tuple[Flask, Flask, Any, str]:
    """Two jwt apps sharing Redis and the database (two processes, as far as the channel
    can tell), a client signed in on the first, and the second's listener subscribed;
    the poll of the SQL feed is never due, so only Redis can carry a revocation."""
    config = {**shared, "GUARDIAN_JWT_REVOCATION_INTERVAL": LONG_INTERVAL}
    first, second = make_app(**config), make_app(**config)
    listeners += [first, second]
    client = first.test_client()
    sign_in_ok(client)
    token = session_cookie(client, first)
    assert token
    listening(second, token)
    return first, second, client, token


# -- jwt: revocations through Redis ------------------------------------------------------


@pytest.mark.parametrize("strategy", ["jwt"])
def test_a_sign_out_in_one_process_is_refused_by_another_at_once(
    make_app: AppFactory, shared: dict[str, Any], listeners: list[Flask]
) -> None:
    with time_machine.travel(T0, tick=False):
        _first, second, client, token = two_processes(make_app, shared, listeners)
        heard = channel_of(second).heard
        assert sign_out(client).status_code == 303
        assert channel_of(second).wait_heard(heard + 1, WAIT)
        # The clock has not moved: no poll of the feed was due, Redis brought it.
        assert api_status(second, token) == 401


@pytest.mark.parametrize("strategy", ["jwt"])
def test_a_role_change_in_one_process_reaches_another_at_once(
    make_app: AppFactory, shared: dict[str, Any], listeners: list[Flask]
) -> None:
    with time_machine.travel(T0, tick=False):
        first, second, _client, token = two_processes(make_app, shared, listeners)
        assert api_status(second, token, "/admin") == 403
        heard = channel_of(second).heard
        with first.app_context():
            db = db_of(first)
            model = guardian_of(first).user_model
            user = db.session.execute(select(model).where(model.email == USER[0])).scalar_one()
            user.role = "admin"
            db.session.commit()
        assert channel_of(second).wait_heard(heard + 1, WAIT)
        assert api_status(second, token, "/admin") == 200


def next_message(pubsub: Any) -> Any:
    """The next message ``pubsub`` receives (None after :data:`WAIT` seconds)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] in ("message", "subscribe"):
            return message
    return None


@pytest.mark.parametrize("strategy", ["jwt"])
def test_a_change_is_announced_when_it_commits_and_never_when_rolled_back(
    make_app: AppFactory, shared: dict[str, Any], listeners: list[Flask]
) -> None:
    """Heard on the channel by a plain subscriber: a deactivation that is rolled back
    sends nothing (a marker sent after it is the first message), a committed one sends
    its revocation."""
    import redis

    app = make_app(**shared)
    listeners.append(app)
    watcher = redis.Redis.from_url(shared["GUARDIAN_REDIS_URL"]).pubsub()
    try:
        watcher.subscribe(channel_of(app).name)
        assert next_message(watcher)["type"] == "subscribe"
        sign_in_ok(app.test_client())
        with app.app_context():
            db = db_of(app)
            model = guardian_of(app).user_model
            user = db.session.execute(select(model).where(model.email == USER[0])).scalar_one()
            user.is_active = False
            db.session.flush()  # the user-change policy runs here, before any commit
            db.session.rollback()
            channel_of(app).publish("marker")
            assert next_message(watcher)["data"] == b"marker"
            user = db.session.execute(select(model).where(model.email == USER[0])).scalar_one()
            user.is_active = False
            db.session.commit()
        assert next_message(watcher)["data"] != b"marker"
    finally:
        watcher.close()


@pytest.mark.parametrize("strategy", ["jwt"])
def test_junk_on_the_channel_revokes_nothing_and_the_listener_goes_on(
    make_app: AppFactory, shared: dict[str, Any], listeners: list[Flask]
) -> None:
    with time_machine.travel(T0, tick=False):
        first, second, client, token = two_processes(make_app, shared, listeners)
        heard = channel_of(second).heard
        junk = ["not json", "[1, 2]", '{"sessions": "x"}', '{"sessions": [1, null]}',
                '{"user": "2", "version": 99}', '{"user": true, "version": 99}', "\xff"]
        for payload in junk:
            channel_of(first).publish(payload)
        assert channel_of(second).wait_heard(heard + len(junk), WAIT)
        assert api_status(second, token) == 200
        assert sign_out(client).status_code == 303
        assert channel_of(second).wait_heard(heard + len(junk) + 1, WAIT)
        assert api_status(second, token) == 401


@pytest.mark.parametrize("strategy", ["jwt"])
def test_when_the_channel_drops_the_feed_poll_still_bounds_the_revocation(
    make_app: AppFactory, shared: dict[str, Any], listeners: list[Flask],
    redis_proxy: FaultProxy,
) -> None:
    """The second process hears Redis through a proxy that is then cut: the revocation
    published meanwhile never reaches it, and its next poll of the SQL feed (due after
    GUARDIAN_JWT_REVOCATION_INTERVAL) refuses the token. Once Redis is back, it listens
    again and hears the next revocation at once."""
    interval = 5
    first = make_app(**shared, GUARDIAN_JWT_REVOCATION_INTERVAL=interval)
    second = make_app(**{**shared, "GUARDIAN_REDIS_URL": through(redis_proxy)},
                      GUARDIAN_REDIS_TIMEOUT=0.5, GUARDIAN_JWT_REVOCATION_INTERVAL=interval)
    listeners += [first, second]
    with time_machine.travel(T0, tick=False) as clock:
        clients = [first.test_client(), first.test_client()]
        tokens = []
        for client in clients:
            sign_in_ok(client)
            tokens.append(session_cookie(client, first))
        listening(second, tokens[0])
        assert api_status(second, tokens[1]) == 200
        redis_proxy.refuse()  # the listener's connection is cut, and cannot come back
        heard = channel_of(second).heard
        assert sign_out(clients[0]).status_code == 303  # published: second does not hear
        clock.move_to(T0 + timedelta(seconds=interval))
        assert api_status(second, tokens[0]) == 401  # the poll of the feed found it
        assert channel_of(second).heard == heard
        redis_proxy.restore()
        assert channel_of(second).wait_subscribed(2, WAIT), "the listener never came back"
        heard = channel_of(second).heard
        assert sign_out(clients[1]).status_code == 303
        assert channel_of(second).wait_heard(heard + 1, WAIT)
        assert api_status(second, tokens[1]) == 401  # at once again: no poll was due


@pytest.mark.parametrize("strategy", ["jwt"])
def test_a_forked_worker_starts_its_own_listener_and_hears_revocations(
    make_app: AppFactory, shared: dict[str, Any], listeners: list[Flask]
) -> None:
    """As under ``gunicorn --preload``: the app (already listening) is forked; the child
    has none of its parent's threads, starts its own listener with its first token, and
    refuses a token the parent's sibling app signs out, without a poll being due."""
    with time_machine.travel(T0, tick=False):
        _first, second, client, token = two_processes(make_app, shared, listeners)
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report by exit status, never return into pytest
            status = 1
            try:
                channel = channel_of(second)
                subscribed, heard = channel.subscribed, channel.heard
                if api_status(second, token) == 200 and channel.wait_subscribed(
                        subscribed + 1, WAIT):
                    os.write(ready_w, b"1")
                    os.read(go_r, 1)
                    if channel.wait_heard(heard + 1, WAIT) and api_status(second, token) == 401:
                        status = 0
                else:
                    os.write(ready_w, b"0")
            finally:
                os._exit(status)
        assert os.read(ready_r, 1) == b"1", "the child did not start its own listener"
        assert sign_out(client).status_code == 303
        os.write(go_w, b"1")
        _, status = os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0


# -- lockout counters in Redis -----------------------------------------------------------

LIMITS = {"GUARDIAN_MAX_LOGIN_ATTEMPTS": 3, "GUARDIAN_LOCKOUT_DURATION": 600}


def attempt(app: Flask, email: str, password: str) -> Any:
    client = app.test_client()
    token = csrf_token(client)
    return client.post("/auth/signin", json={"email": email, "password": password,
                                             "csrf_token": token})


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_lockout_is_counted_across_processes_in_redis(
    make_app: AppFactory, strategy: str, shared: dict[str, Any], tmp_path: Any
) -> None:
    """The two apps have separate SQL databases: only Redis can carry the count."""
    first = make_app(**shared, **LIMITS)
    second = build_app(f"sqlite:///{tmp_path / 'other.db'}", strategy, **shared, **LIMITS)
    try:
        with time_machine.travel(T0, tick=False):
            for app in (first, second, first):
                assert attempt(app, USER[0], "wrong-password-0").status_code == 401
            for app in (first, second):
                response = attempt(app, *USER)
                assert response.status_code == 429
                assert response.get_json()["error"] == "too_many_attempts"
            assert attempt(second, *ADMIN).status_code == 200  # another email: its own count
    finally:
        with second.app_context():
            db_of(second).engine.dispose()


def test_lockout_counters_hold_no_email_and_write_no_sql_row(
    make_app: AppFactory, shared: dict[str, Any]
) -> None:
    app = make_app(**shared, **LIMITS)
    assert attempt(app, USER[0], "wrong-password-0").status_code == 401
    with app.app_context():
        table = guardian_of(app).models.login_attempt.__table__
        rows = db_of(app).session.execute(select(func.count()).select_from(table)).scalar()
    assert rows == 0
    client = get_state(app).redis
    assert client is not None
    keys = [k.decode() for k in client.client.scan_iter(match=shared["GUARDIAN_REDIS_PREFIX"]
                                                         + "lock:*")]
    assert len(keys) == 2  # the email's digest and the address
    assert not any(USER[0] in k or "example" in k for k in keys)


@pytest.mark.parametrize("fault", ["refuse", "stall"])
def test_a_sign_in_while_redis_cannot_count_is_a_503_never_an_uncounted_attempt(
    make_app: AppFactory, shared: dict[str, Any], redis_proxy: FaultProxy, fault: str
) -> None:
    """The right password included: an attempt Redis could not count is not checked."""
    app = make_app(**{**shared, "GUARDIAN_REDIS_URL": through(redis_proxy)}, **LIMITS,
                   GUARDIAN_REDIS_TIMEOUT=0.5)
    client = app.test_client()
    token = csrf_token(client)
    getattr(redis_proxy, fault)()
    # Refused: wrong passwords beyond the limit, then the right one; none counted, none
    # checked. Stalled: one of each (each waits for the timeout).
    wrong = LIMITS["GUARDIAN_MAX_LOGIN_ATTEMPTS"] + 1 if fault == "refuse" else 1
    for password in ["wrong-password-0"] * wrong + [USER[1]]:
        response = client.post("/auth/signin", json={"email": USER[0], "password": password,
                                                      "csrf_token": token})
        assert response.status_code == 503, response.get_data(as_text=True)[:200]
        assert response.get_json()["error"] == "storage_unavailable"
        assert response.headers["Retry-After"].isdigit()
        assert session_cookie(client, app) is None
    redis_proxy.restore()
    # Nothing was counted while Redis was away: the user is not locked out by the outage.
    assert sign_in(client, *USER).status_code == 303


def test_an_attempt_half_counted_when_redis_failed_is_given_back(
    make_app: AppFactory, shared: dict[str, Any]
) -> None:
    """The email's count was taken, then the address's could not be (here: a key of the
    wrong type, which Redis refuses): the sign-in is a 503 and the email's attempt is
    given back, as the SQL rows' rolled-back transaction would."""
    app = make_app(**shared, **LIMITS, GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=100)
    connection = get_state(app).redis
    assert connection is not None
    address_key = shared["GUARDIAN_REDIS_PREFIX"] + "lock:" + throttle_key("127.0.0.1")
    connection.client.set(address_key, "not a counter")
    response = attempt(app, USER[0], "wrong-password-0")
    assert response.status_code == 503
    assert response.get_json()["error"] == "storage_unavailable"
    connection.client.delete(address_key)
    for _ in range(LIMITS["GUARDIAN_MAX_LOGIN_ATTEMPTS"] - 1):
        assert attempt(app, USER[0], "wrong-password-0").status_code == 401
    # Counted: the limit's last attempt, not one more (the 503's attempt was given back).
    assert attempt(app, *USER).status_code == 200


def test_a_counter_expires_in_redis_when_its_window_ends(
    make_app: AppFactory, shared: dict[str, Any]
) -> None:
    """No purge is needed: the key's time to live is what is left of its window (decided
    in the app's clock), so Redis forgets it when the window ends."""
    app = make_app(**shared, **LIMITS)
    connection = get_state(app).redis
    assert connection is not None
    address_key = shared["GUARDIAN_REDIS_PREFIX"] + "lock:" + throttle_key("127.0.0.1")
    window_ms = LIMITS["GUARDIAN_LOCKOUT_DURATION"] * 1000
    with time_machine.travel(T0, tick=False) as clock:
        assert attempt(app, USER[0], "wrong-password-0").status_code == 401
        assert 0 < connection.client.pttl(address_key) <= window_ms
        clock.move_to(T0 + timedelta(seconds=100))
        assert attempt(app, ADMIN[0], "wrong-password-0").status_code == 401
        assert 0 < connection.client.pttl(address_key) <= window_ms - 100_000
