"""Section "scale": the database strategy's lookup at 1,000 and 1,000,000 stored sessions
(PostgreSQL), timed in the same alternation, with the plan of the lookup at each size."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bench_apps
import bench_guardian
import bench_pg
from bench_harness import Target, call, count_queries, run_alternating, run_batch
from common import Options, Setup, fmt_ratio, fmt_us, log, markdown_table, out, quartiles
from sqlalchemy import event


@contextmanager
def capture_statements(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """Collect (statement, parameters) of everything ``engine`` runs inside the block."""
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
    """Fill a second schema to the large size, time both sizes alternating, EXPLAIN."""
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
                goal - have, user=user_of(ga), tag="live", expired=False, start=have
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


def user_of(ga: bench_guardian.GuardianApp) -> tuple[int, str]:
    """The id and uniquifier of the benchmark user in ``ga``'s database."""
    with ga.app.app_context():
        user = ga.guardian.user_model.query.filter_by(email=bench_guardian.EMAIL).one()
        return int(user.id), str(user.uniquifier)


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
