"""Every process: two real app processes (``tests/multiprocess_app.py``) on one PostgreSQL
database, as behind a load balancer. A session made by one works on the other; a sign-out,
a revocation, a role change made through one is seen by the other (database strategy: on
the next request; jwt: within ``GUARDIAN_JWT_REVOCATION_INTERVAL``, or at once through
Redis with ``GUARDIAN_REDIS_URL``); the lockout count is shared. HTTP over loopback only;
every process is terminated at teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import (
    ADMIN,
    BASE_CONFIG,
    JSON,
    USER,
    Browser,
    build_app,
    read_port,
    stop_process,
    store_config,
)
from servers import DATABASES, redis_prefix, require_redis, require_server, reset_database

# The full database matrix: several processes on one server database.
pytestmark = [pytest.mark.multiprocess, pytest.mark.databases]

SCRIPT = Path(__file__).with_name("multiprocess_app.py")
#: How stale another process's view of revocations may be (jwt), in seconds.
REVOCATION_INTERVAL = 1
#: The longest we wait for another process to see a change: the interval plus slack for a
#: slow machine. A wait for another process, not a clock test.
PROPAGATION_LIMIT = 5.0
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148 Safari/604.1"


@dataclass
class Cluster:
    """Two app processes on one database, and an app in the test process on it too."""

    local: Flask
    ports: list[int]
    strategy: str


@pytest.fixture
def cluster(strategy: str, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``cluster(**config)``: a clean PostgreSQL database with the demo users, and two app
    processes serving it with ``strategy``. Terminated at teardown whatever happens."""
    processes: list[subprocess.Popen[str]] = []
    apps: list[Flask] = []

    def start(**config: Any) -> Cluster:
        if "postgresql" not in DATABASES:
            pytest.skip("GUARDIAN_TEST_DATABASES does not include postgresql")
        url = require_server("postgresql")
        reset_database(url)
        settings = {"GUARDIAN_JWT_REVOCATION_INTERVAL": REVOCATION_INTERVAL, **config}
        local = build_app(url, strategy, **settings)  # creates the tables and users
        apps.append(local)
        environment = {
            **os.environ,
            "GUARDIAN_MP_CONFIG": json.dumps({
                **BASE_CONFIG, "SQLALCHEMY_DATABASE_URI": url, "SESSION_STRATEGY": strategy,
                **settings, **store_config(local),
            }),
        }
        ports = []
        for index in range(2):
            log = tmp_path / f"process-{index}.log"
            with log.open("w") as stderr:
                process = subprocess.Popen(
                    [sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, stderr=stderr,
                    env=environment, cwd=SCRIPT.parent.parent, text=True,
                )
            processes.append(process)
            ports.append(read_port(process, log))
        return Cluster(local, ports, strategy)

    try:
        yield start
    finally:
        for process in processes:
            stop_process(process)
        for app in apps:
            with app.app_context():
                app.extensions["sqlalchemy"].engine.dispose()


def seen_by_other_process(cluster: Cluster, check: Callable[[], bool], what: str) -> float:
    """Wait until ``check()`` holds: on the next request with the database strategy, within
    the revocation interval (bounded by PROPAGATION_LIMIT) with jwt. Returns the wait."""
    started = time.monotonic()
    limit = PROPAGATION_LIMIT if cluster.strategy == "jwt" else 0.0  # database, redis: at once
    while True:
        if check():
            return time.monotonic() - started
        waited = time.monotonic() - started
        if waited >= limit:
            raise AssertionError(
                f"{what}: not seen by the other process after {waited:.1f}s "
                f"({cluster.strategy} strategy)"
            )
        time.sleep(0.1)


def test_processes_are_distinct(cluster: Callable[..., Cluster]) -> None:
    one, two = cluster().ports
    browser = Browser(FIREFOX)
    assert browser.get(one, "/pid").json() != browser.get(two, "/pid").json()


def test_session_made_by_one_process_works_on_the_other(
    cluster: Callable[..., Cluster],
) -> None:
    one, two = cluster().ports
    browser = Browser(FIREFOX)
    response = browser.sign_in(one, USER)
    assert response.status == 303
    assert response.headers["Location"] == "/"
    me = browser.me(two)
    assert me.status == 200
    assert me.json()["user"]["email"] == USER[0]
    sessions = browser.get(two, "/auth/sessions", **JSON).json()["sessions"]
    assert [(s["current"], s["device"]) for s in sessions] == [(True, "Firefox on Linux")]
    assert browser.me(one).status == 200


def test_json_sign_in_on_one_process_and_csrf_token_work_on_the_other(
    cluster: Callable[..., Cluster],
) -> None:
    one, two = cluster().ports
    browser = Browser(FIREFOX)
    response = browser.sign_in(one, ADMIN, json_body=True)
    assert response.status == 200
    assert response.json()["ok"] is True
    assert browser.get(two, "/admin", **JSON).status == 200
    # A CSRF token issued by one process is accepted by the other (same SECRET_KEY).
    token = browser.csrf(one)
    reply = browser.request(two, "POST", "/auth/sessions/revoke-others", body={},
                            headers={**JSON, "X-CSRF-Token": token})
    assert reply.status == 200
    assert reply.json() == {"ok": True, "revoked": 0}


def test_sign_out_through_one_process_is_seen_by_the_other(
    cluster: Callable[..., Cluster],
) -> None:
    running = cluster()
    one, two = running.ports
    browser = Browser(FIREFOX)
    assert browser.sign_in(one, USER).status == 303
    assert browser.me(two).status == 200  # the other process has seen (and cached) it
    stolen = browser.replayer()

    response = browser.request(one, "POST", "/auth/signout",
                               form={"csrf_token": browser.csrf(one)})
    assert response.status == 303
    assert browser.me(two).status == 401  # the cookie is gone from the browser
    assert stolen.me(one).status == 401  # the process that signed out: at once

    seen_by_other_process(running, lambda: stolen.me(two).status == 401, "sign-out")
    assert stolen.me(two).status == 401  # and it stays refused
    assert stolen.me(one).status == 401


@pytest.mark.parametrize("route", ["one", "others"])
def test_revocation_through_one_process_is_seen_by_the_other(
    cluster: Callable[..., Cluster], route: str
) -> None:
    running = cluster()
    one, two = running.ports
    laptop, phone = Browser(FIREFOX), Browser(IPHONE)
    assert laptop.sign_in(one, USER).status == 303
    assert phone.sign_in(two, USER).status == 303
    assert phone.me(two).status == 200
    kept_phone = phone.replayer()  # a device that ignores the server clearing its cookie

    if route == "one":
        sessions = laptop.get(one, "/auth/sessions", **JSON).json()["sessions"]
        (phone_id,) = [s["id"] for s in sessions if not s["current"]]
        reply = laptop.post_json(one, f"/auth/sessions/{phone_id}/revoke")
        assert (reply.status, reply.json()) == (200, {"ok": True})
    else:
        reply = laptop.post_json(one, "/auth/sessions/revoke-others")
        assert (reply.status, reply.json()) == (200, {"ok": True, "revoked": 1})

    assert kept_phone.me(one).status == 401  # the revoking process: at once
    seen_by_other_process(running, lambda: kept_phone.me(two).status == 401, "revocation")
    assert phone.me(two).status == 401
    assert laptop.me(one).status == 200
    assert laptop.me(two).status == 200
    sessions = laptop.get(two, "/auth/sessions", **JSON).json()["sessions"]
    assert [s["device"] for s in sessions] == ["Firefox on Linux"]


def test_admin_ending_all_sessions_on_one_process_reaches_the_other(
    cluster: Callable[..., Cluster],
) -> None:
    running = cluster()
    one, two = running.ports
    admin, laptop, phone = Browser(FIREFOX), Browser(FIREFOX), Browser(IPHONE)
    assert admin.sign_in(one, ADMIN).status == 303
    assert laptop.sign_in(two, USER).status == 303
    assert phone.sign_in(two, USER).status == 303
    assert laptop.me(two).status == 200 and phone.me(two).status == 200
    laptop, phone = laptop.replayer(), phone.replayer()

    reply = admin.post_json(one, "/admin/users/2/revoke")
    assert (reply.status, reply.json()) == (200, {"revoked": 2})
    seen_by_other_process(
        running,
        lambda: laptop.me(two).status == 401 and phone.me(two).status == 401,
        "ending all sessions of a user",
    )
    assert laptop.me(one).status == 401 and phone.me(one).status == 401
    assert admin.me(two).status == 200


def test_role_change_on_one_process_reaches_sessions_on_the_other(
    cluster: Callable[..., Cluster],
) -> None:
    running = cluster()
    one, two = running.ports
    admin, user = Browser(FIREFOX), Browser(IPHONE)
    assert admin.sign_in(one, ADMIN).status == 303
    assert user.sign_in(two, USER).status == 303
    assert user.get(two, "/admin", **JSON).status == 403

    reply = admin.post_json(one, "/admin/users/2/role", {"role": "admin"})
    assert reply.status == 200

    seen_by_other_process(
        running, lambda: user.get(two, "/admin", **JSON).status == 200, "role change"
    )
    assert user.me(two).json()["user"]["role"] == "admin"
    assert user.get(one, "/admin", **JSON).status == 200


def test_role_change_from_a_third_process_reaches_both(cluster: Callable[..., Cluster]) -> None:
    running = cluster()
    one, two = running.ports
    user = Browser(IPHONE)
    assert user.sign_in(one, USER).status == 303
    assert user.get(one, "/admin", **JSON).status == 403
    assert user.get(two, "/admin", **JSON).status == 403

    app = running.local  # the test process: like `flask guardian set-role` on another host
    guardian = app.extensions["guardian"]
    with app.app_context():
        account = app.extensions["sqlalchemy"].session.get(guardian.user_model, 2)
        guardian.set_role(account, "admin")

    seen_by_other_process(
        running,
        lambda: all(user.get(port, "/admin", **JSON).status == 200 for port in (one, two)),
        "role change made in a third process",
    )


@pytest.mark.parametrize("change", ["password", "deactivate", "delete"])
def test_account_change_from_a_third_process_ends_sessions_on_both(
    cluster: Callable[..., Cluster], change: str
) -> None:
    running = cluster()
    one, two = running.ports
    laptop, phone, admin = Browser(FIREFOX), Browser(IPHONE), Browser(FIREFOX)
    assert laptop.sign_in(one, USER).status == 303
    assert phone.sign_in(two, USER).status == 303
    assert admin.sign_in(two, ADMIN).status == 303
    for browser in (laptop, phone):
        assert browser.me(one).status == 200 and browser.me(two).status == 200
    laptop, phone = laptop.replayer(), phone.replayer()

    app = running.local
    guardian = app.extensions["guardian"]
    db = app.extensions["sqlalchemy"]
    with app.app_context():
        account = db.session.get(guardian.user_model, 2)
        if change == "password":
            guardian.set_password(account, "a-brand-new-password")
        elif change == "deactivate":
            account.is_active = False
            db.session.commit()
        else:
            db.session.delete(account)
            db.session.commit()

    seen_by_other_process(
        running,
        lambda: all(b.me(port).status == 401 for b in (laptop, phone) for port in (one, two)),
        f"{change} of the account",
    )
    assert admin.me(one).status == 200 and admin.me(two).status == 200


def test_lockout_counts_are_shared_by_every_process(cluster: Callable[..., Cluster]) -> None:
    one, two = cluster(GUARDIAN_MAX_LOGIN_ATTEMPTS=3).ports
    attacker = Browser(FIREFOX)
    for port in (one, two, one):
        reply = attacker.sign_in(port, (USER[0], "wrong-password-0"), json_body=True)
        assert (reply.status, reply.json()) == (401, {"ok": False, "error": "invalid_credentials"})
    for port in (two, one):
        reply = Browser(IPHONE).sign_in(port, USER, json_body=True)
        assert (reply.status, reply.json()) == (429, {"ok": False, "error": "too_many_attempts"})
    # Another account is not affected.
    assert Browser(IPHONE).sign_in(two, ADMIN).status == 303


@pytest.mark.parametrize("strategy", ["jwt"])
def test_jwt_sign_out_reaches_the_other_process_through_redis_before_any_poll(
    cluster: Callable[..., Cluster],
) -> None:
    """With GUARDIAN_REDIS_URL, and an interval no test waits for (300 s): the other
    process refuses a signed-out token as soon as Redis delivers the message."""
    import redis

    url, prefix = require_redis(), redis_prefix()
    running = cluster(GUARDIAN_REDIS_URL=url, GUARDIAN_REDIS_PREFIX=prefix,
                      GUARDIAN_JWT_REVOCATION_INTERVAL=300)
    one, two = running.ports
    browser = Browser(FIREFOX)
    assert browser.sign_in(one, USER).status == 303
    assert browser.me(two).status == 200  # process two's first token: it starts listening
    server = redis.Redis.from_url(url)
    try:
        channel = prefix + "jwt:revoked"
        seen_by_other_process(running, lambda: server.pubsub_numsub(channel)[0][1] >= 1,
                              "process two listening")
    finally:
        server.close()
    stolen = browser.replayer()
    response = browser.request(one, "POST", "/auth/signout",
                               form={"csrf_token": browser.csrf(one)})
    assert response.status == 303
    seen_by_other_process(running, lambda: stolen.me(two).status == 401, "sign-out")
