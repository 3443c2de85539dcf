"""The rows every section measures: which apps are built, in what order, under what name.

:func:`build` makes them once per run (bench_apps.py holds the comparison apps,
bench_guardian.py the flask-guardian ones) and returns the :class:`common.Setup`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bench_apps
import bench_guardian
import bench_pg
from bench_guardian import NO_FLASK_KEY
from common import Options, Row, Setup, log, short_traceback


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

    guardian_reason = bench_guardian.guardian_unavailable()
    apps: dict[str, bench_guardian.GuardianApp] = {}
    if guardian_reason is None:
        apps = build_guardian_apps(tmp, pg, failures)
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

    names = {
        "jwt-sqlite": "flask-guardian jwt (SQLite registry)",
        "db-sqlite": "flask-guardian database, SQLite",
        "db-pg": "flask-guardian database, PostgreSQL",
        "jwt-nokey": "flask-guardian jwt, app without Flask SECRET_KEY",
        "db-nokey": "flask-guardian database SQLite, app without Flask SECRET_KEY",
        "jwt-refresh": "flask-guardian jwt, refresh every request (UPDATE_AGE=0)",
        "db-refresh": "flask-guardian database SQLite, refresh every request",
    }
    for key, name in names.items():
        if key in apps:
            ga = apps[key]
            rows.append(Row(ga.target(name), [ga.engine()], ga.readers()))
    return Setup(rows, apps, pg, pg_reason, guardian_reason, failures)


def build_guardian_apps(
    tmp: Path, pg: bench_pg.Postgres | None, failures: list[str]
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
