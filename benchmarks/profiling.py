"""Section "profile" (opt-in, ``--profile``): cProfile reports of the guardian hot path."""

from __future__ import annotations

import cProfile
import io
import pstats
import re

import bench_guardian
from bench_harness import run_batch
from common import Options, Setup, log, out


def profile_section(opts: Options, setup: Setup) -> None:
    """Profile each guardian row and print the cumulative and own-time tables."""
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
    """A pstats report without blank lines and with site-packages paths shortened."""
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
