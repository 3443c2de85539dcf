"""Per-request cost of flask-guardian next to bare Flask, Flask-Login and Flask-JWT-Extended.

    python benchmarks/run.py [--quick] [--postgres URL] [--no-postgres] [--profile]
    python benchmarks/run.py --only instructions     # instructions per request (callgrind)

The one entry point. Everything runs in this one process, through
``app.wsgi_app(environ, start_response)`` with a prebuilt environ copied per request (see
benchmarks/README.md for the method). Each section is a module of its own:
``per_request``, ``sign_in``, ``memory``, ``scale``, ``purge``, ``profiling``,
``instructions``, ``server``; ``targets`` builds the rows they measure, ``common`` holds what they
share. Results are printed to stdout as Markdown; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import bench_pg
import bench_redis
import cache
import instructions
import memory
import per_request
import profiling
import purge
import scale
import server
import sign_in
from common import (
    OPT_IN,
    SECTION_NAMES,
    Options,
    Setup,
    out,
    package_version,
    short_traceback,
)
from targets import build

#: Section name (as --only spells it) -> the function that prints it, in report order.
SECTIONS: dict[str, Callable[[Options, Setup], object]] = {
    "per-request": per_request.per_request_section,
    "sign-in": sign_in.signin_section,
    "memory": memory.memory_section,
    "scale": scale.scale_section,
    "purge": purge.purge_section,
    "profile": profiling.profile_section,
    "instructions": instructions.instructions_section,
    "server": server.server_section,
    "cache": cache.cache_section,
}

def parse_args(argv: Sequence[str] | None = None) -> Options:
    """The command line as :class:`common.Options`."""
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
        "--redis",
        metavar="URL",
        default=os.environ.get("GUARDIAN_BENCH_REDIS", bench_redis.DEFAULT_URL),
        help=f"Redis URL for the redis rows (default {bench_redis.DEFAULT_URL}); the run "
        "writes only under a key prefix of its own and deletes those keys at the end",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis rows")
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
        redis_url=None if args.no_redis else args.redis,
    )


def header(opts: Options, setup: Setup) -> None:
    """The report's first lines: versions, servers, mode and load."""
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
        "flask-session",
        "redis",
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
    """``url`` with its password replaced by ``***``."""
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the rows, run the chosen sections, clean up; the exit status."""
    opts = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardian-bench-") as tmp:
        setup = build(opts, Path(tmp))
        header(opts, setup)
        for name, section in SECTIONS.items():
            if name not in opts.only:
                continue
            try:
                section(opts, setup)
            except Exception:
                out(f"\n**Section {name} failed**:\n```\n{short_traceback()}```\n")
        for cleanup in reversed(setup.cleanups):
            cleanup()
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
