"""Per-request cost of flask-guardian next to bare Flask, Flask-Login and Flask-JWT-Extended.

    python benchmarks/run.py [--quick] [--postgres URL] [--no-postgres] [--profile]
    python benchmarks/run.py --only instructions     # instructions per request (callgrind)

Everything runs in this one process, through ``app.wsgi_app(environ, start_response)``
with a prebuilt environ copied per request (see benchmarks/README.md for the method).
Results are printed to stdout as Markdown; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import gc
import hashlib
import io
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import bench_apps
import bench_guardian
import bench_one
import bench_pg
from bench_guardian import NO_FLASK_KEY
from bench_harness import (
    QueryCount,
    Stats,
    Target,
    call,
    count_queries,
    fmt_ratio,
    fmt_us,
    markdown_table,
    run_alternating,
    run_batch,
    run_rounds,
)
from sqlalchemy import event, text

SECTION_NAMES = (
    "per-request", "sign-in", "memory", "scale", "purge", "profile", "instructions",
)
#: Sections only run when asked for by name (--only, --profile): slow or diagnostic.
OPT_IN = {"profile", "instructions"}


@dataclass
class Options:
    quick: bool
    rounds: int
    requests: int | None
    batch_seconds: float
    warmup: int
    postgres_url: str | None
    scale_rows: int
    scale_alternations: int
    pairs: int
    memory_requests: int
    purge_rows_pg: int
    purge_rows_sqlite: int
    signin_rounds: int
    signin_requests: int
    only: set[str]
    tracemalloc: bool
    keep_schema: bool


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer requests; 100,000 rows")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get("GUARDIAN_BENCH_POSTGRES", bench_pg.DEFAULT_URL),
        help=f"SQLAlchemy URL of a PostgreSQL database (default {bench_pg.DEFAULT_URL}); "
        f"the benchmark works in its own schema '{bench_pg.SCHEMA}' there",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--rounds", type=int, help="timed rounds per target (default 15; 7 with --quick)"
    )
    parser.add_argument(
        "--batch-ms",
        type=float,
        help="calibrate each target's batch to last this long (default 150; 60 with --quick)",
    )
    parser.add_argument(
        "--requests", type=int, help="fixed requests per batch instead of calibrating"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the guardian hot path")
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help=f"comma-separated subset of: {', '.join(SECTION_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also trace allocations in the memory check"
    )
    parser.add_argument(
        "--keep-schema", action="store_true", help="leave the PostgreSQL schema for inspection"
    )
    args = parser.parse_args(argv)
    quick: bool = args.quick
    only = set(SECTION_NAMES) - OPT_IN
    if args.only:
        only = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = only - set(SECTION_NAMES)
        if unknown:
            parser.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTION_NAMES}")
    if args.profile:
        only.add("profile")
    return Options(
        quick=quick,
        rounds=args.rounds or (7 if quick else 15),
        requests=args.requests,
        batch_seconds=(args.batch_ms or (60 if quick else 150)) / 1000,
        warmup=300 if quick else 1000,
        postgres_url=None if args.no_postgres else args.postgres,
        scale_rows=100_000 if quick else 1_000_000,
        scale_alternations=1_000 if quick else 3_000,
        pairs=7 if quick else 21,
        memory_requests=100_000,
        purge_rows_pg=100_000 if quick else 1_000_000,
        purge_rows_sqlite=20_000 if quick else 100_000,
        signin_rounds=3 if quick else 5,
        signin_requests=5 if quick else 10,
        only=only,
        tracemalloc=args.tracemalloc,
        keep_schema=args.keep_schema,
    )


def short_traceback(limit: int = 4000) -> str:
    """The current exception's traceback, cut to ``limit`` characters at each end (an
    SQLAlchemy error can quote thousands of bound parameters)."""
    text_ = traceback.format_exc()
    if len(text_) <= 2 * limit:
        return text_
    return f"{text_[:limit]}\n[... {len(text_) - 2 * limit:,} characters cut ...]\n{text_[-limit:]}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def out(text_: str = "") -> None:
    print(text_, flush=True)


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


# -- the apps under test --------------------------------------------------------------------


@dataclass
class Row:
    """A timed target plus what the table says about it."""

    target: Target
    engines: list[Any] = field(default_factory=list)
    readers: list[Any] = field(default_factory=list)
    queries_note: str = ""
    queries: QueryCount | None = None


@dataclass
class Setup:
    rows: list[Row]
    guardian: dict[str, bench_guardian.GuardianApp]
    pg: bench_pg.Postgres | None
    pg_reason: str
    guardian_reason: str | None
    failures: list[str]
    # Further schemas made on the server (dropped at the end with the main one).
    extra_pg: list[bench_pg.Postgres] = field(default_factory=list)


def build(opts: Options, tmp: Path) -> Setup:
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


# -- section 1: per-request cost ------------------------------------------------------------


def measure_queries(rows: Sequence[Row], requests: int) -> None:
    """Statements per request in steady state, counted on a separate untimed pass."""
    for row in rows:
        if not row.engines:
            continue
        run_batch(row.target, 50)  # let any due refresh happen before counting
        with count_queries(row.engines, row.readers) as counter:
            run_batch(row.target, requests)
        row.queries = counter


def per_request_section(opts: Options, setup: Setup) -> dict[str, Stats]:
    rows = setup.rows
    log(f"counting queries ({len(rows)} targets)")
    measure_queries(rows, 500)
    log(f"timing {len(rows)} targets: {opts.rounds} rounds, {opts.warmup} warm-up")
    stats = run_rounds(
        [r.target for r in rows],
        rounds=opts.rounds,
        requests=opts.requests,
        batch_seconds=opts.batch_seconds,
        warmup=opts.warmup,
        progress=log,
    )
    bare = stats[0]
    keyed = next(s for s in stats if s.name == bench_apps.BARE_KEYED)
    table_rows = []
    notes: list[str] = []
    for row, s in zip(rows, stats, strict=True):
        q1, q3 = s.iqr
        if row.queries is not None:
            per = row.queries.statements / 500
            writes = row.queries.writes / 500
            queries, writes_s = f"{per:.2f}", f"{writes:.2f}"
        else:
            queries, writes_s = row.queries_note or "—", "—"
        r1, r3 = quartiles([v / b for v, b in zip(s.rounds, bare.rounds, strict=True)])
        table_rows.append(
            [
                s.name,
                fmt_us(s.median),
                f"{fmt_us(q1)}-{fmt_us(q3)}",
                f"{fmt_us(s.low)}-{fmt_us(s.high)}",
                fmt_ratio(s.median / bare.median),
                f"{r1:.2f}-{r3:.2f}",
                fmt_ratio(s.low / bare.low),
                fmt_ratio(s.median / keyed.median),
                fmt_us(s.cpu_median),
                fmt_ratio(s.cpu_median / bare.cpu_median),
                queries,
                writes_s,
            ]
        )
        if s.bad_statuses:
            notes.append(f"- **{s.name}**: unexpected statuses {s.bad_statuses}")
    out("## Per-request cost through `app.wsgi_app`\n")
    out(
        f"{opts.rounds} interleaved rounds; in each, every target runs one batch of "
        f"requests calibrated to last about {opts.batch_seconds * 1000:.0f} ms "
        f"({', '.join(f'{s.requests:,}' for s in stats)} requests, in table order), after "
        f"{opts.warmup:,} warm-up requests. Times are wall-clock µs per request over the "
        "rounds. `x bare` = median / median of the bare route; `x bare IQR` = "
        "interquartile range of that ratio taken round by round; `x bare, best` = fastest "
        "round / fastest round of bare; `x keyed bare` = median / median of the bare route "
        "of an app with a SECRET_KEY; `CPU µs` = this process's CPU time per request "
        "(median), `x bare CPU` its ratio to bare: insensitive to other processes taking "
        "the CPU, but blind to time spent waiting for a database server. `queries/req` and "
        "`writes/req` come from a separate untimed pass of 500 requests.\n"
    )
    out(
        markdown_table(
            [
                "target",
                "median µs",
                "IQR µs",
                "min-max µs",
                "x bare",
                "x bare IQR",
                "x bare, best",
                "x keyed bare",
                "CPU µs",
                "x bare CPU",
                "queries/req",
                "writes/req",
            ],
            table_rows,
        )
    )
    if notes:
        out("\nProblems seen while timing (these rows do not measure what they claim):")
        out("\n".join(notes))
    paired_table(opts, rows, stats)
    samples = [(r.target.name, r.queries) for r in rows if r.queries is not None]
    out("\nStatements seen in the counting pass (first few distinct ones per target):\n")
    for name, counter in samples:
        assert counter is not None
        out(f"- {name}:")
        for statement in counter.samples or ["(none)"]:
            out(f"  - `{' '.join(statement.split())[:220]}`")
    out()
    return {s.name: s for s in stats}


#: The rows the SPEC's ratios are about, timed again in pairs with the bare route.
PAIRED_ROWS = (
    bench_apps.BARE_KEYED,
    "floor: read cookie via request.cookies",
    "floor: raw sqlite3 lookup, thread-local conn",
    "Flask-Login + SQLAlchemy loader, SQLite",
    "Flask-JWT-Extended, token in cookie",
    "flask-guardian jwt (SQLite registry)",
    "flask-guardian database, SQLite",
    "flask-guardian jwt, app without Flask SECRET_KEY",
    "flask-guardian database SQLite, app without Flask SECRET_KEY",
)


def paired_table(opts: Options, rows: Sequence[Row], stats: Sequence[Stats]) -> None:
    """The ratios again, each from batches of the target and of the bare route run back to
    back: a drift in the machine's speed between the batches of a round cancels out."""
    by_name = {r.target.name: (r.target, s) for r, s in zip(rows, stats, strict=True)}
    if bench_apps.BARE not in by_name:
        return
    bare, bare_stats = by_name[bench_apps.BARE]
    pairs = opts.pairs
    log(f"pairing {len(PAIRED_ROWS)} targets with the bare route, {pairs} pairs each")
    table = []
    for name in PAIRED_ROWS:
        if name not in by_name:
            continue
        target, target_stats = by_name[name]
        # A third of a round's batch each: pairs are many and short.
        size = {bare.name: max(20, bare_stats.requests // 3),
                target.name: max(20, target_stats.requests // 3)}
        ratios = []
        for i in range(pairs):
            # Alternate which runs first: the second batch of a pair may inherit caches.
            first, second = (bare, target) if i % 2 == 0 else (target, bare)
            a = run_batch(first, size[first.name])
            b = run_batch(second, size[second.name])
            bare_us, target_us = (a, b) if first is bare else (b, a)
            ratios.append(target_us.us_per_request / bare_us.us_per_request)
        q1, q3 = quartiles(ratios)
        table.append([name, fmt_ratio(statistics.median(ratios)), f"{q1:.2f}-{q3:.2f}",
                      fmt_ratio(min(ratios))])
    out(
        f"\n### The same ratios, paired\n\n"
        f"Each row again, as {pairs} pairs of batches (the target's and the bare route's, "
        f"about {opts.batch_seconds * 1000 / 3:.0f} ms each, run back to back, the order "
        f"alternating): the ratio of each pair, then their median. A slow drift of the "
        f"machine's speed, which on a shared virtual machine can exceed the differences "
        f"measured here, hits both batches of a pair alike.\n"
    )
    out(markdown_table(["target", "x bare (paired median)", "IQR", "lowest pair"], table))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0])
    q1, _q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q1, q3)


# -- section 2: sign-in -----------------------------------------------------------------------


def signin_section(opts: Options, setup: Setup) -> None:
    out("## Sign-in cost (flask-guardian)\n")
    apps = [setup.guardian[k] for k in ("db-sqlite", "jwt-sqlite") if k in setup.guardian]
    if not apps:
        out(f"Skipped: {setup.guardian_reason or 'no guardian app could be built'}\n")
        return
    stored = bench_guardian.stored_hash(apps[0])
    params = re.match(r"\$(argon2\w+)\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$", stored)
    if params:
        kind, v, m, t, p = params.groups()
        out(
            f"Password hash as stored: `{kind}` v={v}, memory m={m} KiB "
            f"({int(m) / 1024:.0f} MiB), time t={t}, parallelism p={p} "
            f"(configured: {bench_guardian.ARGON2})."
        )
    else:
        out(f"Password hash as stored: `{stored[:40]}…` (not argon2: unexpected)")
    targets = [bench_guardian.signin_target(ga) for ga in apps]
    log("timing sign-in")
    try:
        stats = run_rounds(
            targets, rounds=opts.signin_rounds, requests=opts.signin_requests, warmup=2
        )
    except Exception:
        out(f"\nSign-in timing failed:\n```\n{short_traceback()}```\n")
        return
    verify_ms = time_hash_verify(stored, opts.signin_rounds * opts.signin_requests)
    rows = []
    for s in stats:
        rows.append(
            [
                s.name,
                f"{s.median / 1000:.1f}",
                f"{s.low / 1000:.1f}-{s.high / 1000:.1f}",
                f"{verify_ms / (s.median / 1000) * 100:.0f}%",
            ]
        )
        if s.bad_statuses:
            rows[-1][0] += f" (unexpected statuses {s.bad_statuses})"
    rows.append(["argon2-cffi `verify` of the stored hash alone", f"{verify_ms:.1f}", "", ""])
    out(
        f"\n{opts.signin_rounds} rounds x {opts.signin_requests} complete `POST /auth/signin` "
        "requests (form body, CSRF off, new session each time, 303 expected).\n"
    )
    out(markdown_table(["what", "median ms", "min-max ms", "of which argon2"], rows))
    out()


def time_hash_verify(stored: str, count: int) -> float:
    """Median ms of one argon2 verification of ``stored`` (the floor of any sign-in)."""
    from argon2 import PasswordHasher

    hasher = PasswordHasher()
    timings = []
    for _ in range(max(count, 5)):
        start = time.perf_counter()
        hasher.verify(stored, bench_guardian.PASSWORD)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


# -- section 3: scale (PostgreSQL) ----------------------------------------------------------


@contextmanager
def capture_statements(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    captured: list[tuple[str, Any]] = []

    def listener(
        conn: object, cursor: object, statement: str, parameters: Any, context: object, many: bool
    ) -> None:
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield captured
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def scale_section(opts: Options, setup: Setup) -> None:
    out("## Scale: session lookup vs. stored sessions (database strategy, PostgreSQL)\n")
    if setup.pg is None or opts.postgres_url is None:
        out(f"Skipped: PostgreSQL not reachable ({setup.pg_reason}).\n")
        return
    small = setup.guardian.get("db-pg")
    if small is None:
        out(f"Skipped: no flask-guardian PostgreSQL app ({setup.guardian_reason or 'failed'}).\n")
        return
    # A second schema with its own app holds the large table, so that both sizes are
    # timed in the same interleaved rounds: machine noise cannot fake a trend.
    large_pg = bench_pg.connect_postgres(opts.postgres_url, bench_pg.SCHEMA + "_large")
    if isinstance(large_pg, str):
        out(f"Skipped: cannot create a second schema ({large_pg}).\n")
        return
    setup.extra_pg.append(large_pg)
    large = bench_guardian.build_guardian_app(
        "db-pg-large",
        strategy="database",
        uri=large_pg.url,
        engine_options=large_pg.engine_options,
    )
    setup.guardian["db-pg-large"] = large
    sizes = [(small, setup.pg, 1_000), (large, large_pg, opts.scale_rows)]
    for ga, pg, goal in sizes:
        have = bench_pg.count_sessions(pg)
        if goal > have:
            log(f"COPY {goal - have:,} session rows into {pg.schema} (to {goal:,})")
            start = time.perf_counter()
            rows = bench_pg.session_rows(
                goal - have, user_id=user_id_of(ga), tag="live", expired=False, start=have
            )
            bench_pg.copy_sessions(pg, rows)
            log(f"  ... {time.perf_counter() - start:.1f} s")
    counts = [bench_pg.count_sessions(pg) for _ga, pg, _goal in sizes]
    bare = next(r.target for r in setup.rows if r.target.name == bench_apps.BARE)
    targets = [
        ga.target(f"{n:,} stored sessions") for (ga, _pg, _g), n in zip(sizes, counts, strict=True)
    ]
    alternations = opts.scale_alternations
    log(f"timing the lookup at both sizes: {alternations:,} alternations")
    for target in [bare, *targets]:
        run_batch(target, opts.warmup)
    b, *per_size = run_alternating([bare, *targets], alternations)
    lookups = [capture_lookup(ga, t) for (ga, _pg, _g), t in zip(sizes, targets, strict=True)]
    raw: list[float] | None = None
    if not any(isinstance(lookup, str) for lookup in lookups):
        raw = bench_pg.time_statements_alternating(
            [pg for _ga, pg, _g in sizes],
            [lookup for lookup in lookups if not isinstance(lookup, str)],
            alternations,
        )
    bare_median = statistics.median(b)
    results = []
    medians = [statistics.median(samples) for samples in per_size]
    for i, (n, samples) in enumerate(zip(counts, per_size, strict=True)):
        q1, q3 = quartiles(samples)
        results.append(
            [
                f"{n:,}",
                fmt_us(medians[i]),
                f"{fmt_us(q1)}-{fmt_us(q3)}",
                fmt_us(statistics.quantiles(samples, n=10)[0]),
                fmt_ratio(medians[i] / bare_median),
                fmt_us(raw[i]) if raw is not None else "—",
            ]
        )
    out(
        "Two schemas, each with its own app and `guardian_sessions` table, filled with "
        "`COPY` (then `ANALYZE`). Requests alternate one by one between the bare route, "
        "the small table and the large one (each looking up its own signed-in cookie), "
        f"{alternations:,} times; every request is timed on its own, so neighbouring "
        "requests of both sizes share the machine's state. `raw SELECT µs` runs the "
        "captured lookup statement with its real parameter on an autocommit psycopg "
        "connection per schema, alternating the same way: the database's share, without "
        f"Flask. Bare route median: {fmt_us(bare_median)} µs.\n"
    )
    out(
        markdown_table(
            [
                "stored sessions",
                "request median µs",
                "IQR µs",
                "p10 µs",
                "x bare",
                "raw SELECT median µs",
            ],
            results,
        )
    )
    out(
        f"\nRequest time at {counts[-1]:,} / at {counts[0]:,} stored sessions: "
        f"{medians[-1] / medians[0]:.2f}x"
        + (f"; raw SELECT: {raw[-1] / raw[0]:.2f}x.\n" if raw is not None else ".\n")
    )
    for n, pg, lookup in zip(counts, [p for _g, p, _n in sizes], lookups, strict=True):
        out(f"Plan of the per-request lookup at {n:,} rows:\n")
        if isinstance(lookup, str):
            plan = [lookup]
        else:
            statement, parameters = lookup
            plan = [" ".join(statement.split())[:300], ""]
            try:
                plan += bench_pg.explain(pg, statement, parameters)
            except Exception as exc:
                plan.append(f"(EXPLAIN failed: {exc})")
        out("```\n" + "\n".join(plan) + "\n```\n")


def user_id_of(ga: bench_guardian.GuardianApp) -> int:
    with ga.app.app_context():
        user = ga.guardian.user_model.query.filter_by(email=bench_guardian.EMAIL).one()
        return int(user.id)


def capture_lookup(ga: bench_guardian.GuardianApp, target: Target) -> tuple[str, Any] | str:
    """The SELECT one authenticated request sends, with its parameters (or why not).

    Seen through SQLAlchemy's events when the lookup goes through SQLAlchemy; otherwise
    through the package's raw-connection reader, which reports only the SQL: the one
    parameter is then rebuilt from the cookie as SPEC §3.1 defines it (SHA-256 hex)."""
    with (
        capture_statements(ga.engine()) as captured,
        count_queries([], ga.readers()) as raw,
    ):
        response = call(target.app, target.environ)
    if response.status_code != 200:
        return f"(the request failed: {response.status})"
    selects = [(s, p) for s, p in captured if s.lstrip().upper().startswith("SELECT")]
    if selects:
        return selects[0]
    raw_selects = [s for s in raw.samples if s.lstrip().upper().startswith("SELECT")]
    if raw_selects:
        digest = hashlib.sha256(ga.cookie_value.encode()).hexdigest()
        return raw_selects[0], {"token_hash": digest}
    return f"(no SELECT seen; {len(captured)} SQLAlchemy statements)"


# -- section 4: memory ----------------------------------------------------------------------


def rss_kib() -> int:
    """Resident set size now (Linux ``/proc``), in KiB; 0 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return 0


def memory_section(opts: Options, setup: Setup) -> None:
    out(f"## Memory over {opts.memory_requests:,} requests\n")
    wanted = [
        bench_apps.BARE,
        "flask-guardian jwt (SQLite registry)",
        "flask-guardian database, SQLite",
        "Flask-Login + SQLAlchemy loader, SQLite",
    ]
    by_name = {r.target.name: r.target for r in setup.rows}
    targets = [by_name[n] for n in wanted if n in by_name]
    rows = []
    for target in targets:
        log(f"memory: {target.name}")
        run_batch(target, 2_000)
        gc.collect()
        rss0, objects0 = rss_kib(), len(gc.get_objects())
        if opts.tracemalloc:
            tracemalloc.start()
            snap0 = tracemalloc.take_snapshot()
        statuses: dict[str, int] = {}
        done = 0
        while done < opts.memory_requests:
            n = min(10_000, opts.memory_requests - done)
            batch = run_batch(target, n)
            for k, v in batch.statuses.items():
                statuses[k] = statuses.get(k, 0) + v
            done += n
        gc.collect()
        rss1, objects1 = rss_kib(), len(gc.get_objects())
        traced = ""
        if opts.tracemalloc:
            snap1 = tracemalloc.take_snapshot()
            tracemalloc.stop()
            diff = snap1.compare_to(snap0, "lineno")
            grown = sum(d.size_diff for d in diff)
            top = diff[0] if diff else None
            traced = f"{grown / 1024:+,.0f} KiB" + (
                f" (top: {top.traceback[0].filename.rsplit('/', 1)[-1]}:"
                f"{top.traceback[0].lineno} {top.size_diff / 1024:+,.0f} KiB)"
                if top
                else ""
            )
        row = [
            target.name,
            f"{rss0 / 1024:,.1f}",
            f"{rss1 / 1024:,.1f}",
            f"{(rss1 - rss0):+,}",
            f"{(rss1 - rss0) * 1024 / opts.memory_requests:+.2f}",
            f"{objects1 - objects0:+,}",
            ", ".join(f"{k}: {v:,}" for k, v in statuses.items()),
        ]
        if opts.tracemalloc:
            row.append(traced)
        rows.append(row)
    header = [
        "target",
        "RSS before MiB",
        "RSS after MiB",
        "Δ RSS KiB",
        "Δ bytes/req",
        "Δ live objects",
        "statuses",
    ]
    if opts.tracemalloc:
        header.append("tracemalloc Δ")
    out(
        "RSS from /proc/self/statm and `len(gc.get_objects())`, each after `gc.collect()`, "
        "measured after 2,000 warm-up requests. Same cookie on every request.\n"
    )
    out(markdown_table(header, rows))
    out()


# -- section 5: purge -----------------------------------------------------------------------


def purge_section(opts: Options, setup: Setup) -> None:
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
    user_id = user_id_of(ga)
    live_before = count_sqlite(ga)
    columns = bench_pg.SESSION_COLUMNS
    log(f"inserting {expired:,} expired rows (SQLite, executemany)")
    with ga.app.app_context():
        table = ga.db.metadata.tables["guardian_sessions"]
        chunk: list[dict[str, Any]] = []
        for row in bench_pg.session_rows(
            expired, user_id=user_id, tag="exp", expired=True, aware=True
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
    user_id = user_id_of(ga)
    live_before = bench_pg.count_sessions(pg)
    log(f"COPY {expired:,} expired rows (PostgreSQL)")
    bench_pg.copy_sessions(
        pg, bench_pg.session_rows(expired, user_id=user_id, tag="exp", expired=True)
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


# -- section 6: profile ---------------------------------------------------------------------


def profile_section(opts: Options, setup: Setup) -> None:
    out("## Where the time goes (cProfile, guardian hot path)\n")
    out(
        "cProfile inflates every Python call, so read the shares, not the absolute times. "
        "First the call tree (cumulative time), then the functions with the most own time.\n"
    )
    by_name = {r.target.name: r.target for r in setup.rows}
    plans = [
        ("flask-guardian jwt (SQLite registry)", 5_000),
        ("flask-guardian database, SQLite", 5_000),
        ("flask-guardian database, PostgreSQL", 5_000),
        ("flask-guardian jwt, refresh every request (UPDATE_AGE=0)", 500),
        ("flask-guardian database SQLite, refresh every request", 500),
    ]
    for name, requests in plans:
        target = by_name.get(name)
        if target is None:
            continue
        log(f"profiling {name}")
        run_batch(target, requests // 10)
        profiler = cProfile.Profile()
        profiler.enable()
        run_batch(target, requests)
        profiler.disable()
        out(f"### {name}: {requests:,} requests\n")
        for order, count in (("cumulative", 32), ("tottime", 12)):
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats(order).print_stats(count)
            out(f"By {order}:\n")
            out("```")
            out(trim_pstats(buffer.getvalue()))
            out("```\n")


def trim_pstats(report: str) -> str:
    lines = [ln for ln in report.splitlines() if ln.strip()]
    drop = ("Ordered by", "List reduced")
    keep = [
        ln.strip() if "function calls" in ln else ln
        for ln in lines
        if not ln.strip().startswith(drop)
    ]
    site = re.compile(r"/[^ ]*/site-packages/|/[^ ]*/lib/python3\.\d+/")
    home = str(bench_guardian.REPO_ROOT) + "/"
    return "\n".join(site.sub("", ln).replace(home, "") for ln in keep)


# -- section 7: instructions per request -----------------------------------------------------


def instructions_section(opts: Options, setup: Setup) -> None:
    """Instructions per request under callgrind: independent of the machine's load."""
    out("## Instructions per request (callgrind)\n")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        out("Skipped: `valgrind` is not installed (Debian package `valgrind`).\n")
        return
    requests = 200 if opts.quick else 500
    script = Path(bench_one.__file__).resolve()
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run

    def collected(job: tuple[str, int]) -> int:
        name, count = job
        command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
                   sys.executable, str(script), name, str(count)]
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              cwd=script.parent, check=False)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"callgrind run of {name!r} failed:\n{done.stderr[-2000:]}")
        return int(found.group(1))

    jobs = [(name, count) for name in bench_one.TARGETS for count in (0, requests)]
    log(f"counting instructions: {len(jobs)} callgrind runs")
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        totals = dict(zip(jobs, pool.map(collected, jobs), strict=True))
    per = {
        name: (totals[(name, requests)] - totals[(name, 0)]) / requests
        for name in bench_one.TARGETS
    }
    bare, keyed = per[bench_apps.BARE], per[bench_apps.BARE_KEYED]
    out(
        f"`valgrind --tool=callgrind` counts the instructions the process executes. Each "
        f"target runs twice, after the same set-up and 200 warm-up requests: once with no "
        f"further request and once with {requests:,}; the difference divided by "
        f"{requests:,} is one request. `PYTHONHASHSEED=0` in both runs. The count does "
        "not change with the machine's load, so it checks the wall-clock ratios above; "
        "it does not see time spent waiting (system calls, a database server), which is "
        "why the database rows cost more in time than in instructions.\n"
    )
    out(
        markdown_table(
            ["target", "instructions/request", "x bare", "x keyed bare"],
            [
                [name, f"{value:,.0f}", fmt_ratio(value / bare), fmt_ratio(value / keyed)]
                for name, value in per.items()
            ],
        )
    )
    out()


# -- main -----------------------------------------------------------------------------------


def header(opts: Options, setup: Setup) -> None:
    out("# flask-guardian benchmark\n")
    out(
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    )
    libs = [
        "flask",
        "werkzeug",
        "sqlalchemy",
        "flask-sqlalchemy",
        "pyjwt",
        "flask-login",
        "flask-jwt-extended",
        "psycopg",
        "libpass",
        "argon2-cffi",
    ]
    out("- " + ", ".join(f"{n} {package_version(n)}" for n in libs))
    out(
        f"- PostgreSQL: {setup.pg.version} at {redact(setup.pg.url)}, schema `{setup.pg.schema}`"
        if setup.pg
        else f"- PostgreSQL: skipped ({setup.pg_reason})"
    )
    out(
        "- flask-guardian: from this checkout"
        if setup.guardian_reason is None
        else f"- flask-guardian: skipped ({setup.guardian_reason.strip()})"
    )
    out(f"- mode: {'--quick' if opts.quick else 'full'}; load average at start: {loadavg()}\n")
    for failure in setup.failures:
        out(f"**Set-up failure**:\n```\n{failure}\n```\n")


def loadavg() -> str:
    """The 1/5/15-minute load averages: other work on the machine shows up as noise."""
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def redact(url: str) -> str:
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardian-bench-") as tmp:
        setup = build(opts, Path(tmp))
        header(opts, setup)
        sections: list[tuple[str, Callable[[Options, Setup], object]]] = [
            ("per-request", per_request_section),
            ("sign-in", signin_section),
            ("memory", memory_section),
            ("scale", scale_section),
            ("purge", purge_section),
            ("profile", profile_section),
            ("instructions", instructions_section),
        ]
        for name, section in sections:
            if name not in opts.only:
                continue
            try:
                section(opts, setup)
            except Exception:
                out(f"\n**Section {name} failed**:\n```\n{short_traceback()}```\n")
        if setup.pg is not None and not opts.keep_schema:
            dispose(setup)
            for pg in [setup.pg, *setup.extra_pg]:
                bench_pg.drop_schema(pg)
    out(
        f"_Total run time {time.perf_counter() - started:,.0f} s; "
        f"load average at the end: {loadavg()}._"
    )
    return 0


def dispose(setup: Setup) -> None:
    """Close pooled connections so the schema can be dropped."""
    for ga in setup.guardian.values():
        with ga.app.app_context():
            ga.db.session.remove()
            ga.db.engine.dispose()
    for row in setup.rows:
        for engine in row.engines:
            engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
