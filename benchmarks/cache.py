"""Section "cache": how long a revocation takes to reach another app with
``GUARDIAN_SESSION_CACHE`` (PostgreSQL LISTEN/NOTIFY), against the cache off.

Two apps (two ``Guardian`` instances, two engines, two LISTEN connections) in this one
process stand for two workers: the NOTIFY travels through the server as between
processes, but they share this process's GIL, so the figure includes waiting for it.
Each round signs in on the first app, lets the second cache the session, then times from
just before the first app's revocation (its commit included) until the second answers
anything but 200 (a redirect to sign in). Wall-clock time on a loaded machine: compare
the two rows of one run, not runs.
(Instruction counts per request, which do not move with load, are in "instructions".)
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import bench_guardian
import bench_pg
from bench_harness import build_environ, call
from common import Options, Setup, log, markdown_table, out


def _app(pg: bench_pg.Postgres, label: str, cache: bool, create: bool) -> Any:
    """An app on ``pg`` (the first one creates the tables and the user)."""
    if create:
        return bench_guardian.build_guardian_app(
            label, strategy="database", uri=pg.url, engine_options=pg.engine_options,
            extra={"GUARDIAN_SESSION_CACHE": cache})
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    fg = bench_guardian.import_guardian()
    app = Flask(f"bench_cache_{label}")
    app.config.update(
        SECRET_KEY="guardian-benchmark-secret-" + "k" * 32, SQLALCHEMY_DATABASE_URI=pg.url,
        SQLALCHEMY_ENGINE_OPTIONS=pg.engine_options, GUARDIAN_COOKIE_SECURE=False,
        GUARDIAN_CSRF_ENABLED=False, GUARDIAN_SESSION_CACHE=cache)
    fg.Guardian(app, db=SQLAlchemy(app))
    app.add_url_rule("/protected", view_func=fg.login_required(lambda: "ok"))
    return app


def _status(app: Any, cookie: str) -> int:
    return call(app, build_environ("/protected", cookie=cookie)).status_code


def revocation_latencies(pg: bench_pg.Postgres, cache: bool, rounds: int) -> list[float]:
    """Seconds from a revocation in one app until the other refuses the session."""
    from flask_guardian.state import get_state
    from flask_guardian.strategies.base import sha256_hex

    first = _app(pg, "first", cache, True)
    second = _app(pg, "second", cache, False)
    sessions = get_state(first.app).strategy.sessions  # type: ignore[attr-defined]
    waits: list[float] = []
    try:
        if cache:
            for app in (first.app, second):
                cached = get_state(app).strategy.cache  # type: ignore[attr-defined]
                with app.app_context():
                    cached.listen()
                if not cached.cache.wait(came_up=1, timeout=60):
                    raise RuntimeError("a listener never came up")
        for _ in range(rounds):
            value = bench_guardian.sign_in(first.app).cookie("guardian")
            cookie = f"guardian={value}"
            for _ in range(2):  # the second caches it
                assert _status(second, cookie) == 200
            with first.app.app_context():
                db = first.db
                sid = db.session.execute(
                    sessions.select().with_only_columns(sessions.c.id)
                    .where(sessions.c.token_hash == sha256_hex(value))).scalar_one()
                db.session.rollback()
                started = time.perf_counter()
                first.guardian.revoke_session(sid)
            deadline = started + 10
            while _status(second, cookie) == 200:  # then a redirect to sign in
                if time.perf_counter() > deadline:
                    raise RuntimeError("the second app still serves a revoked session")
            waits.append(time.perf_counter() - started)
    finally:
        for app in (first.app, second):
            cached = getattr(get_state(app).strategy, "cache", None)
            if cached is not None:
                cached.close()
            with app.app_context():
                app.extensions["sqlalchemy"].engine.dispose()
    return waits


def cache_section(opts: Options, setup: Setup) -> None:
    """Revocation latency across two apps, cache on vs off (p50/p99)."""
    out("## Session cache: revocation reaching another app\n")
    if not opts.postgres_url:
        out("Skipped: needs PostgreSQL (`--postgres URL`).\n")
        return
    pg = bench_pg.connect_postgres(opts.postgres_url, schema=f"guardian_cache_{os.getpid()}")
    if isinstance(pg, str):
        out(f"Skipped: {pg}\n")
        return
    rounds = 100 if opts.quick else 300
    rows = []
    try:
        for cache in (False, True):
            log(f"cache section: {rounds} revocations, cache {'on' if cache else 'off'}")
            waits = sorted(revocation_latencies(pg, cache, rounds))
            p99 = waits[min(len(waits) - 1, round(0.99 * len(waits)) - 1)]
            rows.append([f"cache {'on (LISTEN/NOTIFY)' if cache else 'off'}", str(len(waits)),
                         f"{statistics.median(waits) * 1000:.2f}", f"{p99 * 1000:.2f}",
                         f"{waits[-1] * 1000:.2f}"])
    finally:
        bench_pg.drop_schema(pg)
    out(markdown_table(["database strategy, PostgreSQL", "revocations", "p50 ms", "p99 ms",
                        "max ms"], rows))
    out("\nWall clock on a shared machine (two apps in one process): compare the rows of "
        "one run.\n")
