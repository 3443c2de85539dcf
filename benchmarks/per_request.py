"""Section "per-request": wall-clock cost per request of every row, in interleaved rounds,
then the rows the targets are about again as pairs of batches with the bare route.

Statements per request come from a separate untimed pass.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import bench_apps
import bench_redis
from bench_harness import Stats, count_queries, run_batch, run_rounds
from common import Options, Row, Setup, fmt_ratio, fmt_us, log, markdown_table, out, quartiles
from targets import MATCHING_FLOOR, REDIS, REDIS_NOKEY


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
    """Time every row in rounds, print the table and the paired table; stats by name."""
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
    by_name = {s.name: s for s in stats}
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
                ratio_to(s, by_name, MATCHING_FLOOR),
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
        "round / fastest round of bare; `x floor` = median / median of the row's matching "
        "floor (the same work by hand, SPEC §13); `x keyed bare` = median / median of the "
        "bare route "
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
                "x floor",
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
    bench_redis.REDIS_FLOOR,
    bench_redis.REDIS_FLOOR_KEYED,
    bench_redis.FLASK_SESSION,
    REDIS,
    REDIS_NOKEY,
)


def ratio_to(s: Stats, by_name: dict[str, Stats], partner: dict[str, str]) -> str:
    """``s``'s median over that of its partner row (floor or peer), or "—" without one."""
    other = by_name.get(partner.get(s.name, ""))
    return fmt_ratio(s.median / other.median) if other is not None else "—"



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
