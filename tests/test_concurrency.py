"""Many threads at once: 8 workers x 20 rounds of sign-in, requests, sign-out and a failed
sign-in, through one app served by a threaded werkzeug server on loopback, on PostgreSQL
and MariaDB (SQLite serialises writers, so it is not the interesting case). No 500, no
lost or duplicated session rows, no session that survives its sign-out, no lost failure
count. Both strategies."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from flask import Flask
from helpers import JSON, SQL_REGISTRY, Browser, build_app, db_of, guardian_of
from redis import Redis
from servers import DATABASES, require_server, reset_database
from sqlalchemy import select
from werkzeug.serving import make_server

from flask_guardian.state import get_state
from flask_guardian.strategies.redis_records import GONE

# The full database matrix: concurrent writes on the server databases.
pytestmark = pytest.mark.databases

THREADS = 8
ROUNDS = 20
ACCOUNTS = 4  # two workers share each account, so one user has concurrent sessions
PASSWORD = "worker-password-123"
NOBODY = "nobody@example.com"


@pytest.fixture(params=["postgresql", "mariadb"])
def served(request: pytest.FixtureRequest, strategy: str) -> Iterator[tuple[Flask, int]]:
    """An app on a clean server database, served on a free loopback port by a threaded
    werkzeug server; shut down at teardown."""
    if request.param not in DATABASES:
        pytest.skip(f"GUARDIAN_TEST_DATABASES does not include {request.param}")
    url = require_server(request.param)
    reset_database(url)
    app = build_app(
        url, strategy,
        # Every failed sign-in below must be counted, none refused by the lockout.
        GUARDIAN_MAX_LOGIN_ATTEMPTS=1_000_000, GUARDIAN_IP_MAX_LOGIN_ATTEMPTS=1_000_000,
    )
    with app.app_context():
        for n in range(ACCOUNTS):
            guardian_of(app).create_user(f"worker{n}@example.com", PASSWORD)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="guardian-server", daemon=True)
    thread.start()
    try:
        yield app, server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        with app.app_context():
            db_of(app).engine.dispose()


def test_concurrent_sign_in_requests_and_sign_out(served: tuple[Flask, int], strategy: str) -> None:
    app, port = served
    statuses: Counter[tuple[str, int]] = Counter()
    issued: list[tuple[int, str]] = []  # (user index, session id)
    problems: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(number: int) -> None:
        account = number % ACCOUNTS
        email = f"worker{account}@example.com"
        seen: list[tuple[str, int]] = []
        try:
            start.wait(timeout=30)
            for round_number in range(ROUNDS):
                browser = Browser(f"Worker/{number}.{round_number}")
                seen.append(("sign-in", browser.sign_in(port, (email, PASSWORD)).status))
                me = browser.me(port)
                seen.append(("me", me.status))
                if me.status == 200 and me.json()["user"]["email"] != email:
                    problems.append(f"worker {number} saw {me.json()['user']['email']}")
                listing = browser.get(port, "/auth/sessions", **JSON)
                seen.append(("list", listing.status))
                if listing.status != 200:
                    problems.append(f"worker {number}: list {listing.status} {listing.body!r}")
                    continue
                mine = [s["id"] for s in listing.json()["sessions"] if s["current"]]
                if len(mine) != 1:
                    problems.append(f"worker {number}: current sessions {mine}")
                with lock:
                    issued.extend((account, sid) for sid in mine)
                replay = browser.replayer()
                seen.append(("sign-out", browser.request(
                    port, "POST", "/auth/signout", form={"csrf_token": browser.csrf(port)}
                ).status))
                seen.append(("replay", replay.me(port).status))
                failed = Browser(f"Attacker/{number}").sign_in(
                    port, (NOBODY, "wrong-password-0"), json_body=True
                )
                seen.append(("failed sign-in", failed.status))
        except Exception as exc:  # reported below, with the worker's number
            problems.append(f"worker {number}: {type(exc).__name__}: {exc}")
        finally:
            with lock:
                statuses.update(seen)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in workers), "a worker is stuck"
    total = THREADS * ROUNDS
    expected = Counter({
        ("sign-in", 303): total, ("me", 200): total, ("list", 200): total,
        ("sign-out", 303): total, ("replay", 401): total, ("failed sign-in", 401): total,
    })
    assert (statuses, problems) == (expected, [])

    state = get_state(app)
    sessions = state.models.session.__table__
    attempts = state.models.login_attempt.__table__
    revocations = state.models.revocation.__table__
    user_model = guardian_of(app).user_model
    with app.app_context():
        db = db_of(app)
        rows = db.session.execute(
            select(sessions.c.id, sessions.c.revoked_at, user_model.email)
            .join(user_model, user_model.id == sessions.c.user_id)
        ).all()
        failures = db.session.execute(select(attempts.c.failures)).scalars().all()
        feed = db.session.execute(select(revocations.c.session_id)).scalars().all()
    counters = app.config.get("GUARDIAN_REDIS_PREFIX", "") + "lock:"
    if state.redis is not None:  # GUARDIAN_REDIS_URL: the counters are Redis hashes
        client = state.redis.client
        failures = [int(client.hget(k, "n")) for k in client.scan_iter(match=counters + "*")]

    # Every failed sign-in counted, whatever the interleaving: one counter for the email,
    # one for the (loopback) address.
    assert failures == [total, total]
    assert len(issued) == len({sid for _, sid in issued}) == total
    if strategy not in SQL_REGISTRY:
        # Sessions in Redis: every one ended by its sign-out. What is left is only each
        # session's tombstone (so its dead cookie still says "revoked"), expiring at the
        # session's own deadline; no index entry, no live record.
        prefix = app.config["GUARDIAN_REDIS_PREFIX"]
        server = Redis.from_url(app.config["GUARDIAN_REDIS_URL"])
        left = [k for k in server.scan_iter(match=prefix + "*")
                if not k.decode().startswith(counters)]
        records = [k for k in left if k.decode().startswith(prefix + "s:")]
        values = server.mget(records) if records else []
        ttls = [server.pttl(k) for k in records]
        server.close()
        assert sorted(left) == sorted(records)
        assert len(records) == total and set(values) == {GONE}
        assert all(ttl > 0 for ttl in ttls)
        return
    # One row per sign-in: none lost, none duplicated, each the one its worker saw.
    assert len(rows) == total
    assert len(issued) == len({sid for _, sid in issued}) == total
    assert sorted(r.id for r in rows) == sorted(sid for _, sid in issued)
    by_id = {r.id: r for r in rows}
    assert all(by_id[sid].email == f"worker{account}@example.com" for account, sid in issued)
    # Every one ended by its sign-out.
    assert [r.id for r in rows if r.revoked_at is None] == []
    # Every failed sign-in counted, whatever the interleaving: one counter for the email,
    # one for the (loopback) address.
    assert failures == [total, total]
    if strategy == "jwt":  # one feed row per sign-out, for the other processes
        assert sorted(feed) == sorted(sid for _, sid in issued)
