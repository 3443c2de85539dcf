"""Serve one benchmark target a given number of times, for the instruction count.

    python benchmarks/bench_one.py TARGET REQUESTS

``run.py --only instructions`` runs this under ``valgrind --tool=callgrind`` twice per
target, with 0 and with REQUESTS timed requests after the same set-up and warm-up; the
difference divided by REQUESTS is the instructions one request costs. Instruction counts
do not depend on what else the machine is doing, so they check the wall-clock ratios of
the per-request table on a noisy machine.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import bench_apps
import bench_guardian
import bench_pg
import bench_redis
from bench_guardian import NO_FLASK_KEY
from bench_harness import Target, run_batch

#: The Redis rows' server (``run.py`` passes ``--redis`` on) and this process's key prefix.
REDIS_URL = os.environ.get("GUARDIAN_BENCH_REDIS", bench_redis.DEFAULT_URL)
PREFIX = bench_redis.run_prefix()

#: A cookie of the shape the guardian database strategy issues, for the bare rows.
COOKIE = "guardian=" + "A" * 43


def _bare(index: int) -> Callable[[Path], Target]:
    return lambda tmp: bench_apps.bare_targets(COOKIE, "guardian")[index]


def _guardian(strategy: str, extra: dict[str, object]) -> Callable[[Path], Target]:
    def build(tmp: Path) -> Target:
        ga = bench_guardian.build_guardian_app(
            strategy, strategy=strategy, uri=f"sqlite:///{tmp / 'guardian.sqlite'}", extra=extra
        )
        return ga.target(strategy)

    return build


def _guardian_redis(extra: dict[str, object]) -> Callable[[Path], Target]:
    store = {"GUARDIAN_REDIS_URL": REDIS_URL, "GUARDIAN_REDIS_PREFIX": PREFIX + "g:"}
    return _guardian("redis", {**store, **extra})


def _guardian_redis_cache(tmp: Path) -> Target:
    """The redis strategy with ``GUARDIAN_SESSION_CACHE``: the listener is up before the
    warm-up, so the timed requests are served from memory."""
    from flask_guardian.state import get_state

    store = {"GUARDIAN_REDIS_URL": REDIS_URL, "GUARDIAN_REDIS_PREFIX": PREFIX + "gc:",
             "GUARDIAN_SESSION_CACHE": True}
    ga = bench_guardian.build_guardian_app(
        "redis", strategy="redis", uri=f"sqlite:///{tmp / 'guardian.sqlite'}", extra=store
    )
    cached = get_state(ga.app).strategy.cache  # type: ignore[attr-defined]
    cached.listen()
    if not cached.cache.wait(came_up=1, timeout=120):
        raise RuntimeError("the session cache's listener never came up")
    return ga.target("redis")


def _guardian_postgres(cache: bool) -> Callable[[Path], Target]:
    """The database strategy on PostgreSQL (a schema of this process's own), with or
    without ``GUARDIAN_SESSION_CACHE``; with it, the listener is up before the warm-up."""
    def build(tmp: Path) -> Target:
        url = os.environ.get("GUARDIAN_BENCH_POSTGRES", bench_pg.DEFAULT_URL)
        pg = bench_pg.connect_postgres(url, schema=f"guardian_bench_{os.getpid()}")
        if isinstance(pg, str):
            raise RuntimeError(pg)
        PG_SCHEMAS.append(pg)
        ga = bench_guardian.build_guardian_app(
            "pg", strategy="database", uri=pg.url, engine_options=pg.engine_options,
            extra={"GUARDIAN_SESSION_CACHE": cache},
        )
        if cache:
            from flask_guardian.state import get_state

            cached = get_state(ga.app).strategy.cache  # type: ignore[attr-defined]
            with ga.app.app_context():
                cached.listen()
            if not cached.cache.wait(came_up=1, timeout=120):
                raise RuntimeError("the session cache's listener never came up")
        return ga.target("database")

    return build


#: PostgreSQL schemas made by this process, dropped at exit.
PG_SCHEMAS: list[bench_pg.Postgres] = []


def _flask_login(tmp: Path) -> Target:
    target = bench_apps.flask_login_target("SQLite", f"sqlite:///{tmp / 'login.sqlite'}", {})
    target.follow_cookie = "session"
    return target


PG_PLAIN = "guardian database postgres"
PG_CACHE = "guardian database postgres cache"
REDIS_CACHE = "flask-guardian redis cache"

#: Row name in the report -> how to build the target.
TARGETS: dict[str, Callable[[Path], Target]] = {
    bench_apps.BARE: _bare(0),
    bench_apps.BARE_KEYED: _bare(1),
    "floor: read cookie via request.cookies": _bare(2),
    "floor: raw sqlite3 lookup, thread-local conn": lambda tmp: bench_apps.sqlite_floor_target(
        tmp / "floor.sqlite"
    ),
    "Flask-Login + SQLAlchemy loader, SQLite": _flask_login,
    "Flask-JWT-Extended, token in cookie": lambda tmp: bench_apps.jwt_extended_target(),
    "flask-guardian jwt, app without Flask SECRET_KEY": _guardian("jwt", NO_FLASK_KEY),
    "flask-guardian database SQLite, app without Flask SECRET_KEY": _guardian(
        "database", NO_FLASK_KEY
    ),
    "flask-guardian jwt (SQLite registry)": _guardian("jwt", {}),
    "flask-guardian database, SQLite": _guardian("database", {}),
    bench_redis.REDIS_FLOOR: lambda tmp: bench_redis.redis_floor_target(
        REDIS_URL, PREFIX, keyed=False
    ),
    bench_redis.REDIS_FLOOR_KEYED: lambda tmp: bench_redis.redis_floor_target(
        REDIS_URL, PREFIX, keyed=True
    ),
    bench_redis.FLASK_SESSION: lambda tmp: bench_redis.flask_session_target(
        REDIS_URL, PREFIX, f"sqlite:///{tmp / 'login.sqlite'}"
    ),
    "flask-guardian redis": _guardian_redis({}),
    REDIS_CACHE: _guardian_redis_cache,
    PG_PLAIN: _guardian_postgres(False),
    PG_CACHE: _guardian_postgres(True),
    "flask-guardian redis, app without Flask SECRET_KEY": _guardian_redis(NO_FLASK_KEY),
}
#: The targets that need a PostgreSQL server.
PG_TARGETS = frozenset({PG_PLAIN, PG_CACHE})
#: The targets that need a Redis server.
REDIS_TARGETS = frozenset(name for name in TARGETS if "redis" in name.lower())


def main(argv: list[str]) -> int:
    name, requests = argv[0], int(argv[1])
    try:
        with tempfile.TemporaryDirectory(prefix="guardian-bench-one-") as tmp:
            target = TARGETS[name](Path(tmp))
            run_batch(target, 200)  # warm-up: caches filled, any first-request work done
            # One full collection in both runs, then none by hand: the collections inside
            # the counted requests are the ones the requests themselves set off. (A
            # collection in the 0-request run only, or a second one in the other, would
            # charge a walk of the whole heap to these requests; docs/performance.md,
            # "Garbage collection".)
            gc.collect()
            if requests:
                batch = run_batch(target, requests, collect=False)
                if set(batch.statuses) != {target.expect_status}:
                    print(f"unexpected statuses {batch.statuses}", file=sys.stderr)
                    return 1
    finally:
        if name in REDIS_TARGETS:
            bench_redis.delete_keys(REDIS_URL, PREFIX)
        for pg in PG_SCHEMAS:
            bench_pg.drop_schema(pg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
