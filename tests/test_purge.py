"""``guardian.purge_expired()``: expired and revoked sessions, revocations no token can need
and lockout counters whose window has ended all go, in batches; everything live stays.
The clock is moved with time-machine. Both strategies, every database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    csrf_token,
    db_of,
    guardian_of,
    needs_sql_registry,
    sign_in,
    sign_in_ok,
    sign_out,
)
from sqlalchemy import func, select

from flask_guardian.state import get_state
from flask_guardian.trusted_browsers import build_trusted_browser_model

# The full database matrix: expired rows and lockout counters purged in batches.
pytestmark = pytest.mark.databases

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
def clock() -> Iterator[Any]:
    """The test's clock, starting now (whole seconds: MariaDB's DATETIME keeps no
    fractions)."""
    with time_machine.travel(datetime.now(UTC).replace(microsecond=0)) as traveller:
        yield traveller


def models(app: Flask) -> Any:
    return get_state(app).models


def rows(app: Flask, model_name: str) -> list[Any]:
    table = getattr(models(app), model_name).__table__
    with app.app_context():
        return list(db_of(app).session.execute(select(table)).all())


def count(app: Flask, model_name: str) -> int:
    table = getattr(models(app), model_name).__table__
    with app.app_context():
        return int(db_of(app).session.execute(
            select(func.count()).select_from(table)
        ).scalar_one())


def purge(app: Flask, **kwargs: Any) -> int:
    with app.app_context():
        return guardian_of(app).purge_expired(**kwargs)


def signed_in(app: Flask, who: tuple[str, str] = USER) -> Any:
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = FIREFOX
    sign_in_ok(client, who)
    return client


def is_signed_in(client: Any) -> bool:
    return client.get("/auth/session").get_json() is not None


def session_ids(client: Any) -> set[str]:
    sessions = client.get("/auth/sessions", headers={"Accept": "application/json"}).get_json()
    return {s["id"] for s in sessions["sessions"]}


def add_revocations(app: Flask, expires: list[datetime]) -> None:
    """Revocation-feed rows as another process would write them."""
    table = models(app).revocation.__table__
    now = datetime.now(UTC)
    with app.app_context():
        db = db_of(app)
        db.session.execute(table.insert(), [
            {"session_id": f"synthetic-{i}", "user_id": 1, "created_at": now,
             "expires_at": moment}
            for i, moment in enumerate(expires)
        ])
        db.session.commit()


def test_purge_with_nothing_to_do_returns_zero(app: Flask) -> None:
    live = signed_in(app)
    assert purge(app) == 0
    assert purge(app, batch_size=1) == 0
    assert is_signed_in(live)


def test_purge_removes_expired_and_revoked_sessions_in_batches(
    app: Flask, clock: Any, strategy: str
) -> None:
    needs_sql_registry(strategy)
    idle = [signed_in(app) for _ in range(5)]  # will sit idle past their deadline
    clock.shift(timedelta(minutes=20))
    ended = [signed_in(app, ADMIN) for _ in range(4)]
    for client in ended:
        assert sign_out(client).status_code == 303
    live = [signed_in(app) for _ in range(3)]
    clock.shift(timedelta(minutes=15))  # idle ones: 35 minutes without a request
    live_ids = session_ids(live[0])
    assert len(live_ids) == 3

    assert count(app, "session") == 12
    assert purge(app, batch_size=2) == 9
    assert {r.id for r in rows(app, "session")} == live_ids
    assert all(is_signed_in(c) for c in live)
    assert not any(is_signed_in(c) for c in idle + ended)
    assert purge(app, batch_size=2) == 0


def test_purge_removes_sessions_past_their_absolute_deadline(
    make_app: AppFactory, clock: Any, strategy: str) -> None:
    needs_sql_registry(strategy)
    app = make_app(GUARDIAN_SESSION_MAX_AGE=3600, GUARDIAN_SESSION_IDLE_TIMEOUT=1800,
                   GUARDIAN_SESSION_UPDATE_AGE=60)
    busy = signed_in(app)
    for _ in range(5):  # active every 10 minutes: only the absolute deadline ends it
        clock.shift(timedelta(minutes=10))
        assert is_signed_in(busy)
    fresh = signed_in(app, ADMIN)
    clock.shift(timedelta(minutes=11))  # 61 minutes after sign-in, 11 after the last request
    assert not is_signed_in(busy)
    assert purge(app, batch_size=1) == 1
    assert [r.user_id for r in rows(app, "session")] == [1]
    assert is_signed_in(fresh)


def test_purge_keeps_revocations_a_token_may_still_need(app: Flask, clock: Any) -> None:
    now = datetime.now(UTC)
    add_revocations(app, [now - timedelta(seconds=1)] * 5 + [now + timedelta(hours=1)] * 2)
    assert purge(app, batch_size=2) == 5
    left = rows(app, "revocation")
    assert len(left) == 2
    assert all(r.expires_at > now for r in left)


def test_purge_removes_revocations_once_no_token_can_be_valid(
    app: Flask, clock: Any, strategy: str
) -> None:
    needs_sql_registry(strategy)
    for _ in range(3):
        client = signed_in(app)
        sign_out(client)
    revocations = count(app, "revocation")
    # jwt writes one feed row per revoked session; the database strategy needs none.
    assert revocations == (3 if strategy == "jwt" else 0)
    assert purge(app, batch_size=2) == 3  # the three ended sessions
    assert count(app, "revocation") == revocations  # still needed: tokens could be live
    clock.shift(timedelta(hours=12, seconds=1))  # past GUARDIAN_SESSION_MAX_AGE ...
    assert count(app, "revocation") == revocations  # ... a remembered token may live on
    assert purge(app, batch_size=2) == 0
    clock.shift(timedelta(days=30))  # past GUARDIAN_REMEMBER_MAX_AGE, the longest
    assert purge(app, batch_size=2) == revocations
    assert count(app, "revocation") == 0


def needs_sql_counters(app: Flask) -> None:
    """Skip, with the reason, a test of the lockout counters' SQL rows for an app that
    keeps them in Redis."""
    if get_state(app).redis is not None:
        pytest.skip("with GUARDIAN_REDIS_URL the lockout counters are Redis keys that expire "
                    "with their window; tests/test_redis_shared.py checks it")


def test_purge_removes_lockout_counters_whose_window_ended(app: Flask, clock: Any) -> None:
    needs_sql_counters(app)
    for i in range(4):
        assert sign_in(app.test_client(), f"old{i}@example.com", "wrong-password-0"
                       ).status_code == 401
    # Four email counters and one per-IP counter, whose window starts with its first failure.
    old_keys = {r.key for r in rows(app, "login_attempt")}
    assert len(old_keys) == 5
    clock.shift(timedelta(minutes=10))
    for i in range(2):
        assert sign_in(app.test_client(), f"new{i}@example.com", "wrong-password-0"
                       ).status_code == 401
    new_keys = {r.key for r in rows(app, "login_attempt")} - old_keys
    assert len(new_keys) == 2
    clock.shift(timedelta(minutes=5, seconds=1))  # the first window (900 s) has ended
    assert purge(app, batch_size=1) == 5
    assert {r.key for r in rows(app, "login_attempt")} == new_keys


def test_purge_keeps_a_lockout_that_is_still_running(make_app: AppFactory, clock: Any) -> None:
    app = make_app(GUARDIAN_MAX_LOGIN_ATTEMPTS=3)
    needs_sql_counters(app)
    client = app.test_client()
    for _ in range(3):
        sign_in(client, USER[0], "wrong-password-0")
    clock.shift(timedelta(minutes=14))
    assert purge(app) == 0
    response = sign_in(client, *USER, json=True)
    assert response.status_code == 429
    assert response.get_json()["error"] == "too_many_attempts"
    clock.shift(timedelta(minutes=1, seconds=1))
    assert purge(app) == 2  # the email counter and the IP counter
    assert sign_in(client, *USER).status_code == 303


def test_purge_deletes_every_kind_in_one_call(app: Flask, clock: Any, strategy: str) -> None:
    needs_sql_registry(strategy)
    ended = signed_in(app)
    sign_out(ended)
    sign_in(app.test_client(), "nobody@example.com", "wrong-password-0")
    past = datetime.now(UTC) - timedelta(seconds=1)
    add_revocations(app, [past, past, past])
    live = signed_in(app, ADMIN)
    clock.shift(timedelta(minutes=15, seconds=1))
    # 1 revoked session, 3 stale feed rows, 2 lockout counters (email and IP).
    assert purge(app, batch_size=1) == 1 + 3 + 2
    assert count(app, "login_attempt") == 0
    assert count(app, "revocation") == (1 if strategy == "jwt" else 0)
    assert is_signed_in(live)
    assert csrf_token(live)


def test_purge_removes_trusted_browsers_past_their_end(app: Flask, clock: Any) -> None:
    """"Trust this browser" rows (two-factor) end after GUARDIAN_TWO_FACTOR_TRUST_DAYS: a
    user who never signs in again would otherwise keep them for ever."""
    state = get_state(app)
    table = build_trusted_browser_model(state.db, state.models.user).__table__
    now = datetime.now(UTC)
    with app.app_context():
        db = db_of(app)
        user_id = db.session.execute(
            select(state.models.user.id).where(state.models.user.email == USER[0])
        ).scalar_one()
        for i, days in enumerate([-40, -2, -1, 1, 29]):  # three ended, two still trusted
            db.session.execute(table.insert().values(
                id=f"{i:032x}", user_id=user_id, token_hash=f"{i:064x}", generation=1,
                created_at=now - timedelta(days=30), last_used_at=now - timedelta(days=30),
                expires_at=now + timedelta(days=days)))
        db.session.commit()
    assert purge(app, batch_size=2) == 3
    with app.app_context():
        left = db_of(app).session.execute(select(table.c.id)).scalars().all()
    assert sorted(left) == [f"{3:032x}", f"{4:032x}"]
    assert purge(app, batch_size=2) == 0
