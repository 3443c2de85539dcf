"""The rows every section measures: which apps are built, in what order, under what name.

:func:`build` makes them once per run (bench_apps.py holds the comparison apps,
bench_guardian.py the flask-guardian ones) and returns the :class:`common.Setup`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_apps
import bench_guardian
import bench_pg
import bench_redis
from bench_guardian import NO_FLASK_KEY
from common import Options, Row, Setup, log, short_traceback

REDIS = "flask-guardian redis"
REDIS_NOKEY = "flask-guardian redis, app without Flask SECRET_KEY"

#: Guardian row -> the floor it is measured against (SPEC §13): the same work done by hand
#: in an app of the same kind (with or without Flask's SECRET_KEY).
MATCHING_FLOOR = {
    "flask-guardian jwt, app without Flask SECRET_KEY": "floor: read cookie via request.cookies",
    "flask-guardian database SQLite, app without Flask SECRET_KEY": (
        "floor: raw sqlite3 lookup, thread-local conn"
    ),
    REDIS_NOKEY: bench_redis.REDIS_FLOOR,
    REDIS: bench_redis.REDIS_FLOOR_KEYED,
}
#: Guardian row -> the peer extension a user of that storage would otherwise pick.
PEER = {
    "flask-guardian database, SQLite": "Flask-Login + SQLAlchemy loader, SQLite",
    "flask-guardian database, PostgreSQL": "Flask-Login + SQLAlchemy loader, PostgreSQL",
    "flask-guardian jwt (SQLite registry)": "Flask-JWT-Extended, token in cookie",
    REDIS: bench_redis.FLASK_SESSION,
}


def build(opts: Options, tmp: Path) -> Setup:
    """Connect to the servers, build every app, sign each in once: the rows, in order."""
    failures: list[str] = []
    pg: bench_pg.Postgres | None = None
    pg_reason = "--no-postgres given"
    if opts.postgres_url:
        result = bench_pg.connect_postgres(opts.postgres_url)
        if isinstance(result, str):
            pg_reason = result
        else:
            pg, pg_reason = result, ""
    if pg is None:
        log(f"PostgreSQL sections skipped: {pg_reason}")

    redis_reason = bench_redis.redis_unavailable(opts.redis_url)
    redis_prefix = bench_redis.run_prefix()
    cleanups: list[Callable[[], None]] = []
    if redis_reason is None and opts.redis_url:
        url = opts.redis_url
        cleanups.append(lambda: log(f"deleted {bench_redis.delete_keys(url, redis_prefix)} "
                                    f"Redis keys under {redis_prefix}"))
    else:
        log(f"Redis rows skipped: {redis_reason}")

    guardian_reason = bench_guardian.guardian_unavailable()
    apps: dict[str, bench_guardian.GuardianApp] = {}
    if guardian_reason is None:
        redis = (opts.redis_url, redis_prefix) if redis_reason is None and opts.redis_url else None
        apps = build_guardian_apps(tmp, pg, failures, redis)
    else:
        log(f"flask-guardian rows skipped: {guardian_reason}")

    # The bare route gets the cookie a guardian database-strategy client sends (the case
    # the SPEC's targets are stated for); without the package, a token of the same shape.
    if "db-sqlite" in apps:
        cookie_header = apps["db-sqlite"].cookie_header
    else:
        import secrets

        cookie_header = f"guardian={secrets.token_urlsafe(32)}"
    rows = [Row(t) for t in bench_apps.bare_targets(cookie_header, "guardian")]
    rows.append(Row(bench_apps.sqlite_floor_target(tmp / "floor.sqlite"), queries_note="1 (raw)"))
    if pg is not None:
        rows.append(
            Row(bench_apps.postgres_floor_target(pg.conninfo, pg.schema), queries_note="1 (raw)")
        )

    login_sqlite = bench_apps.flask_login_target("SQLite", f"sqlite:///{tmp / 'login.sqlite'}", {})
    login_sqlite.follow_cookie = "session"
    rows.append(Row(login_sqlite, bench_apps.login_engines(login_sqlite)))
    if pg is not None:
        login_pg = bench_apps.flask_login_target("PostgreSQL", pg.url, pg.engine_options)
        login_pg.follow_cookie = "session"
        rows.append(Row(login_pg, bench_apps.login_engines(login_pg)))
    rows.append(Row(bench_apps.jwt_extended_target(), queries_note="— (no db)"))
    if redis_reason is None and opts.redis_url:
        for keyed in (False, True):
            floor = bench_redis.redis_floor_target(opts.redis_url, redis_prefix, keyed=keyed)
            rows.append(Row(floor, queries_note="— (1 GET)"))
        peer = bench_redis.flask_session_target(
            opts.redis_url, redis_prefix, f"sqlite:///{tmp / 'login-redis.sqlite'}"
        )
        rows.append(Row(peer, bench_apps.login_engines(peer)))

    names = {
        "jwt-sqlite": "flask-guardian jwt (SQLite registry)",
        "db-sqlite": "flask-guardian database, SQLite",
        "db-pg": "flask-guardian database, PostgreSQL",
        "jwt-nokey": "flask-guardian jwt, app without Flask SECRET_KEY",
        "db-nokey": "flask-guardian database SQLite, app without Flask SECRET_KEY",
        "jwt-refresh": "flask-guardian jwt, refresh every request (UPDATE_AGE=0)",
        "db-refresh": "flask-guardian database SQLite, refresh every request",
        "redis": REDIS,
        "redis-nokey": REDIS_NOKEY,
    }
    for key, name in names.items():
        if key in apps:
            ga = apps[key]
            rows.append(Row(ga.target(name), [ga.engine()], ga.readers()))
    return Setup(rows, apps, pg, pg_reason, guardian_reason, failures, cleanups=cleanups)


def build_guardian_apps(
    tmp: Path,
    pg: bench_pg.Postgres | None,
    failures: list[str],
    redis: tuple[str, str] | None = None,
) -> dict[str, bench_guardian.GuardianApp]:
    """The flask-guardian apps by key; a failure is recorded and its row left out."""
    specs: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
        ("jwt-sqlite", "jwt", f"sqlite:///{tmp / 'g-jwt.sqlite'}", {}, {}),
        ("db-sqlite", "database", f"sqlite:///{tmp / 'g-db.sqlite'}", {}, {}),
        # GUARDIAN_SECRET_KEY instead of Flask's SECRET_KEY: an app that does not use Flask's
        # own cookie session does not pay for Flask opening it on every request.
        ("jwt-nokey", "jwt", f"sqlite:///{tmp / 'g-jwt-nokey.sqlite'}", {}, NO_FLASK_KEY),
        ("db-nokey", "database", f"sqlite:///{tmp / 'g-db-nokey.sqlite'}", {}, NO_FLASK_KEY),
        (
            "jwt-refresh",
            "jwt",
            f"sqlite:///{tmp / 'g-jwt-refresh.sqlite'}",
            {},
            {"GUARDIAN_SESSION_UPDATE_AGE": 0},
        ),
        (
            "db-refresh",
            "database",
            f"sqlite:///{tmp / 'g-db-refresh.sqlite'}",
            {},
            {"GUARDIAN_SESSION_UPDATE_AGE": 0},
        ),
    ]
    if pg is not None:
        specs.append(("db-pg", "database", pg.url, pg.engine_options, {}))
    if redis is not None:
        # Users in SQLite (the SQL users table the strategy reads at refresh), sessions in
        # Redis under the run's own prefix.
        store = {"GUARDIAN_REDIS_URL": redis[0], "GUARDIAN_REDIS_PREFIX": redis[1] + "g:"}
        specs.append(("redis", "redis", f"sqlite:///{tmp / 'g-redis.sqlite'}", {}, store))
        specs.append(
            (
                "redis-nokey",
                "redis",
                f"sqlite:///{tmp / 'g-redis-nokey.sqlite'}",
                {},
                {**store, "GUARDIAN_REDIS_PREFIX": redis[1] + "gn:", **NO_FLASK_KEY},
            )
        )
    apps: dict[str, bench_guardian.GuardianApp] = {}
    for key, strategy, uri, engine_options, extra in specs:
        log(f"building flask-guardian app {key}")
        try:
            apps[key] = bench_guardian.build_guardian_app(
                key, strategy=strategy, uri=uri, engine_options=engine_options, extra=extra
            )
        except Exception:
            message = f"building flask-guardian app {key!r} failed:\n{short_traceback()}"
            log(message)
            failures.append(message)
    return apps
