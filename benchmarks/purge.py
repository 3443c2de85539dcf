"""Section "purge": ``guardian.purge_expired()`` over many expired sessions (SQLite and
PostgreSQL), with the statements it sends and a check that live sessions survive."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import bench_guardian
import bench_pg
from bench_harness import call, count_queries
from common import Options, Setup, log, markdown_table, out, short_traceback
from scale import user_of
from sqlalchemy import text


def purge_section(opts: Options, setup: Setup) -> None:
    """Insert expired rows beside the live ones, purge, count what is left."""
    out("## `guardian.purge_expired()` over many expired sessions\n")
    rows: list[list[str]] = []
    skipped: list[str] = []
    ga = setup.guardian.get("db-sqlite")
    if ga is None:
        skipped.append(f"SQLite: no guardian app ({setup.guardian_reason or 'failed'})")
    else:
        try:
            rows.append(purge_sqlite(ga, opts.purge_rows_sqlite))
        except Exception:
            skipped.append(f"SQLite: purge failed:\n```\n{short_traceback()}```")
    if setup.pg is None:
        skipped.append(f"PostgreSQL: not reachable ({setup.pg_reason})")
    elif "db-pg" not in setup.guardian:
        skipped.append("PostgreSQL: no guardian app")
    else:
        try:
            # Among a million live rows when the scale section made them: the realistic case.
            large = setup.guardian.get("db-pg-large")
            if large is not None and setup.extra_pg:
                rows.append(purge_pg(large, setup.extra_pg[-1], opts.purge_rows_pg))
            else:
                rows.append(purge_pg(setup.guardian["db-pg"], setup.pg, opts.purge_rows_pg))
        except Exception:
            skipped.append(f"PostgreSQL: purge failed:\n```\n{short_traceback()}```")
    if rows:
        out(
            markdown_table(
                [
                    "database",
                    "expired rows",
                    "live rows kept",
                    "returned",
                    "seconds",
                    "rows/s",
                    "statements",
                    "of which writes",
                    "live cookie after",
                ],
                rows,
            )
        )
    for reason in skipped:
        out(f"\nSkipped: {reason}")
    out()


def purge_sqlite(ga: bench_guardian.GuardianApp, expired: int) -> list[str]:
    user = user_of(ga)
    live_before = count_sqlite(ga)
    columns = bench_pg.SESSION_COLUMNS
    log(f"inserting {expired:,} expired rows (SQLite, executemany)")
    with ga.app.app_context():
        table = ga.db.metadata.tables["guardian_sessions"]
        chunk: list[dict[str, Any]] = []
        for row in bench_pg.session_rows(
            expired, user=user, tag="exp", expired=True, aware=True
        ):
            chunk.append(dict(zip(columns, row, strict=True)))
            if len(chunk) == 10_000:
                ga.db.session.execute(table.insert(), chunk)
                chunk = []
        if chunk:
            ga.db.session.execute(table.insert(), chunk)
        ga.db.session.commit()
    return timed_purge(ga, "SQLite", expired, live_before, count_sqlite)


def count_sqlite(ga: bench_guardian.GuardianApp) -> int:
    with ga.app.app_context():
        value = ga.db.session.execute(text("SELECT count(*) FROM guardian_sessions")).scalar_one()
        return int(value)


def purge_pg(ga: bench_guardian.GuardianApp, pg: bench_pg.Postgres, expired: int) -> list[str]:
    user = user_of(ga)
    live_before = bench_pg.count_sessions(pg)
    log(f"COPY {expired:,} expired rows (PostgreSQL)")
    bench_pg.copy_sessions(
        pg, bench_pg.session_rows(expired, user=user, tag="exp", expired=True)
    )
    return timed_purge(
        ga, "PostgreSQL", expired, live_before, lambda _ga: bench_pg.count_sessions(pg)
    )


def timed_purge(
    ga: bench_guardian.GuardianApp,
    label: str,
    expired: int,
    live_before: int,
    count_all: Callable[[bench_guardian.GuardianApp], int],
) -> list[str]:
    log(f"purge_expired() on {label}")
    with ga.app.app_context(), count_queries([ga.db.engine]) as counter:
        start = time.perf_counter()
        returned = ga.guardian.purge_expired()
        seconds = time.perf_counter() - start
    remaining = count_all(ga)
    check = call(ga.app, ga.target("check").environ)
    return [
        label,
        f"{expired:,}",
        f"{remaining:,} of {live_before:,}",
        f"{returned:,}" if isinstance(returned, int) else repr(returned),
        f"{seconds:.2f}",
        f"{expired / seconds:,.0f}" if seconds else "—",
        f"{counter.statements:,}",
        f"{counter.writes:,}",
        check.status,
    ]
