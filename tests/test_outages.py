"""Failing cleanly when the database does (issue #11): outages, stalls and faults put
between the app and a real PostgreSQL or MariaDB server by a fault proxy.

Each test is one rule: an outage is a 503 with Retry-After (never a 500); a jwt token is
not accepted once the revocation feed is older than its bound; sign-out during an outage
says it failed and still clears the cookie; a fault does not count as a failed sign-in; a
stalled database answers in bounded time; a connection cut after the view never turns a
good response into a 500. The clock is moved with time-machine, never slept on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    cookie_name,
    csrf_token,
    db_of,
    session_cookie,
    set_cookie_headers,
    sign_in,
    sign_in_ok,
)
from servers import ProxiedDatabase
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from flask_guardian import StorageUnavailable
from flask_guardian.state import get_state

# The full database matrix: faults between the app and the server databases.
pytestmark = pytest.mark.databases

JSON = {"Accept": "application/json"}
#: A generous upper bound on any answer while the database stalls (the documented bound
#: with the test settings is statement 1 s + connect 2 s).
STALL_BOUND = 5.0


@contextmanager
def later(seconds: float) -> Iterator[None]:
    """Move the clock ``seconds`` on (past the jwt revocation interval and its grace, past
    the reader's pause after a failure): the database strategy does not care."""
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=seconds), tick=True):
        yield


class Worker:
    """One long-lived request thread, like a server's worker thread: the database
    strategy's reader keeps a connection per thread, so a stall must meet an open one."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self.pool = ThreadPoolExecutor(max_workers=1)

    def call(self, call: Callable[[], Any], seconds: float = STALL_BOUND) -> Any:
        """``call()`` on the worker thread, failing the test (after releasing the proxy so
        the call can end) if it has not returned within ``seconds``."""
        future = self.pool.submit(call)
        try:
            return future.result(timeout=seconds)
        except FutureTimeout:
            self.proxy.restore()
            future.result(timeout=60)
            pytest.fail(f"no answer within {seconds} s while the database stalled")

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def assert_unavailable(response: Any, *, json: bool) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)[:300]
    assert response.headers.get("Retry-After", "").isdigit()
    if json:
        assert response.get_json()["error"] == "storage_unavailable"
    else:
        assert response.mimetype == "text/html"


# -- 2. an outage is a typed 503, never a 500 ---------------------------------------------


@pytest.mark.parametrize("fault", ["refuse", "cut"])
def test_outage_answers_503_with_retry_after_in_json_and_html(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase, fault: str
) -> None:
    app = make_proxied_app()
    client = app.test_client()
    sign_in_ok(client)
    assert client.get("/api/me", headers=JSON).status_code == 200
    proxy = proxied_database.proxy
    getattr(proxy, fault)()
    if fault == "cut":
        proxy.refuse()  # and stays down
    with later(10):
        assert_unavailable(client.get("/api/me", headers=JSON), json=True)
        assert_unavailable(client.get("/dashboard"), json=False)
        # The cookie is kept: an outage must not sign anyone out.
        assert set_cookie_headers(client.get("/dashboard"), cookie_name(app)) == []
        # A request with no credential needs no database.
        assert app.test_client().get("/").status_code == 200
    proxy.restore()
    with later(20):
        response = client.get("/api/me", headers=JSON)
        assert response.status_code == 200
        assert response.get_json()["user"]["email"] == USER[0]


def test_app_answers_storage_unavailable_with_its_own_handler(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase
) -> None:
    app = make_proxied_app()

    @app.errorhandler(StorageUnavailable)
    def maintenance(error: StorageUnavailable) -> Any:
        return {"maintenance": True, "code": error.code}, 503

    client = app.test_client()
    sign_in_ok(client)
    proxied_database.proxy.refuse()
    with later(10):
        response = client.get("/api/me", headers=JSON)
    assert response.status_code == 503
    assert response.get_json() == {"maintenance": True, "code": "storage_unavailable"}


def test_outage_is_logged_once_not_per_request(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flask_guardian import storage

    storage._last_logged.clear()
    app = make_proxied_app()
    client = app.test_client()
    sign_in_ok(client)
    proxied_database.proxy.refuse()
    with later(10), caplog.at_level("ERROR", logger="flask_guardian"):
        for _ in range(5):
            assert client.get("/api/me", headers=JSON).status_code == 503
    lines = [r for r in caplog.records if "storage unavailable" in r.getMessage()]
    assert 1 <= len(lines) <= 2  # the lookup (and, for jwt, the feed): once each
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)


# -- 1. jwt: the revocation bound holds during an outage ----------------------------------


@pytest.mark.parametrize("strategy", ["jwt"])
def test_jwt_token_revoked_before_outage_is_never_served_during_it(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase, strategy: str
) -> None:
    signing, other = make_proxied_app(), make_proxied_app()  # two processes
    browser = signing.test_client()
    sign_in_ok(browser)
    token = session_cookie(browser, signing)
    assert token is not None
    elsewhere = other.test_client()
    elsewhere.set_cookie(cookie_name(other), token)
    assert elsewhere.get("/api/me", headers=JSON).status_code == 200  # cached there
    # Revoked in the other process, then the database goes away.
    _revoke_all(signing)
    proxied_database.proxy.refuse()
    with later(10):
        for _ in range(5):
            assert_unavailable(elsewhere.get("/api/me", headers=JSON), json=True)
    proxied_database.proxy.restore()
    with later(20):
        assert elsewhere.get("/api/me", headers=JSON).status_code == 401


def _revoke_all(app: Flask) -> None:
    guardian = app.extensions["guardian"]
    with app.app_context():
        user = db_of(app).session.execute(
            db_of(app).select(guardian.user_model).filter_by(email=USER[0])
        ).scalar_one()
        assert guardian.revoke_user_sessions(user) == 1


@pytest.mark.parametrize("strategy", ["jwt"])
def test_jwt_fail_open_is_an_explicit_opt_in(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase, strategy: str
) -> None:
    app = make_proxied_app(GUARDIAN_JWT_FAIL_OPEN=True)
    client = app.test_client()
    sign_in_ok(client)
    proxied_database.proxy.refuse()
    with later(10):
        # The documented trade: cached tokens keep working, revocations wait for the feed.
        assert client.get("/api/me", headers=JSON).status_code == 200


# -- 1. sign-out during an outage -------------------------------------------------------------


def test_signout_during_outage_answers_503_and_clears_the_cookie(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase
) -> None:
    app = make_proxied_app()
    client = app.test_client()
    sign_in_ok(client)
    token = csrf_token(client)
    proxied_database.proxy.refuse()
    with later(10):
        response = client.post("/auth/signout", data={"csrf_token": token}, headers=JSON)
    assert_unavailable(response, json=True)
    cleared = set_cookie_headers(response, cookie_name(app))
    assert cleared and ("Max-Age=0" in cleared[0] or "1970" in cleared[0])


# -- 3. a fault is not a failed sign-in ---------------------------------------------------------


@pytest.mark.parametrize("fault", ["cut", "refuse"])
def test_sign_in_that_hits_a_fault_does_not_count_toward_lockout(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase, fault: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_proxied_app()
    state = get_state(app)
    proxy = proxied_database.proxy
    verify = state.hasher.verify

    def verify_then_fault(password: str, stored: str | None) -> tuple[bool, str | None]:
        result = verify(password, stored)  # the attempt is counted; the password is right
        getattr(proxy, fault)()
        return result

    monkeypatch.setattr(state.hasher, "verify", verify_then_fault)
    client = app.test_client()
    for _ in range(state.settings.max_login_attempts + 2):
        proxy.restore()
        response = sign_in(client, *USER, json=True)
        assert_unavailable(response, json=True)
        assert set_cookie_headers(response, cookie_name(app)) == []  # no session was stored
    monkeypatch.undo()
    proxy.restore()
    with later(2):  # past the reader's pause after the fault
        sign_in_ok(client)
        assert client.get("/api/me", headers=JSON).status_code == 200


# -- 4. a stalled database answers in bounded time ---------------------------------------------


def test_stalled_database_answers_503_within_the_bound(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase, strategy: str
) -> None:
    # No bounds from the app's engine options: the extension's own must hold.
    app = make_proxied_app(SQLALCHEMY_ENGINE_OPTIONS={})
    client = app.test_client()
    proxy = proxied_database.proxy
    worker = Worker(proxy)
    try:
        worker.call(lambda: sign_in_ok(client))
        assert worker.call(lambda: client.get("/api/me", headers=JSON)).status_code == 200
        proxy.stall()
        assert worker.call(lambda: app.test_client().get("/")).status_code == 200
        if strategy == "jwt":  # steady state: the cached token needs no database
            steady = worker.call(lambda: client.get("/api/me", headers=JSON))
            assert steady.status_code == 200
        # Writes on the app's pool are bounded by the extension too.
        other = app.test_client()
        token = worker.call(lambda: csrf_token(other))
        response = worker.call(lambda: other.post(
            "/auth/signin", json={"email": ADMIN[0], "password": ADMIN[1], "csrf_token": token}))
        assert_unavailable(response, json=True)
        with later(10):
            for _ in range(3):
                response = worker.call(lambda: client.get("/api/me", headers=JSON))
                assert_unavailable(response, json=True)
        proxy.restore()
        with later(20):
            response = worker.call(lambda: client.get("/api/me", headers=JSON))
            assert response.status_code == 200
    finally:
        proxy.restore()
        worker.close()


# -- 5. a connection cut after the view -----------------------------------------------------


def test_connection_cut_after_the_view_keeps_the_good_response(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase
) -> None:
    app = make_proxied_app()

    @app.get("/then-cut")
    def then_cut() -> str:
        proxied_database.proxy.cut()
        return "done"

    client = app.test_client()
    sign_in_ok(client)
    with later(10):  # the jwt strategy reads its revocation feed on this request
        response = client.get("/then-cut")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "done"


def test_documented_teardown_guard_keeps_an_apps_good_response(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase
) -> None:
    """The app-side fix docs/deployment.md gives for the app's own open transaction."""
    app = make_proxied_app()
    db = db_of(app)

    @app.teardown_appcontext
    def end_transaction(_error: BaseException | None) -> None:
        # Runs before Flask-SQLAlchemy's own teardown (teardowns run in reverse order).
        try:
            db.session.rollback()
        except sa_exc.DBAPIError:
            db.session.close()

    @app.get("/query-then-cut")
    def query_then_cut() -> str:
        db.session.execute(text("SELECT 1"))  # leaves a transaction open
        proxied_database.proxy.cut()
        return "done"

    response = app.test_client().get("/query-then-cut")
    assert response.status_code == 200


def test_a_fresh_workers_first_sign_in_on_a_stalled_database_is_bounded(
    make_proxied_app: AppFactory, proxied_database: ProxiedDatabase
) -> None:
    """The connect bound is on the app's engine from init_app, not from the first session
    lookup: a worker whose very first request is a sign-in does not hang either."""
    app = make_proxied_app(SQLALCHEMY_ENGINE_OPTIONS={})
    with app.app_context():
        get_state(app).db.engine.dispose()  # a fresh worker: no connection yet
    proxy = proxied_database.proxy
    worker = Worker(proxy)
    try:
        client = app.test_client()
        token = worker.call(lambda: csrf_token(client))
        proxy.stall()
        response = worker.call(lambda: client.post(
            "/auth/signin", json={"email": ADMIN[0], "password": ADMIN[1], "csrf_token": token}))
        assert_unavailable(response, json=True)
    finally:
        proxy.restore()
        worker.close()
