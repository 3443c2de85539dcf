"""Section "instructions" (opt-in): instructions per request under callgrind, the figure
of record (SPEC §13): it does not move with the machine's load.

Each target of ``bench_one.TARGETS`` runs twice under ``valgrind --tool=callgrind``, with
0 and with N requests after the same set-up and warm-up; the difference over N is one
request.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bench_apps
import bench_one
import bench_redis
from common import Options, Setup, fmt_ratio, log, markdown_table, out
from targets import MATCHING_FLOOR, PEER


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
    names = list(bench_one.TARGETS)
    redis_reason = bench_redis.redis_unavailable(opts.redis_url)
    if redis_reason is None and opts.redis_url:
        env["GUARDIAN_BENCH_REDIS"] = opts.redis_url
    else:
        names = [n for n in names if n not in bench_one.REDIS_TARGETS]
    if getattr(opts, "postgres_url", None):
        env["GUARDIAN_BENCH_POSTGRES"] = opts.postgres_url
    else:
        names = [n for n in names if n not in bench_one.PG_TARGETS]

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

    jobs = [(name, count) for name in names for count in (0, requests)]
    log(f"counting instructions: {len(jobs)} callgrind runs")
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        totals = dict(zip(jobs, pool.map(collected, jobs), strict=True))
    per = {
        name: (totals[(name, requests)] - totals[(name, 0)]) / requests
        for name in names
    }
    bare, keyed = per[bench_apps.BARE], per[bench_apps.BARE_KEYED]
    out(
        f"`valgrind --tool=callgrind` counts the instructions the process executes. Each "
        f"target runs twice, after the same set-up, 200 warm-up requests and one full "
        f"garbage collection: once with no further request and once with {requests:,} "
        f"(no collection by hand among them); the difference divided by {requests:,} is "
        f"one request. `PYTHONHASHSEED=0` in both runs. The count does "
        "not change with the machine's load, so it checks the wall-clock ratios above; "
        "it does not see time spent waiting (system calls, a database server), which is "
        "why the database rows cost more in time than in instructions.\n"
    )
    if redis_reason is not None:
        out(f"Redis rows skipped: {redis_reason}.\n")

    def partner(name: str, pairs: dict[str, str]) -> str:
        other = per.get(pairs.get(name, ""))
        return fmt_ratio(per[name] / other) if other else "—"

    out(
        markdown_table(
            ["target", "instructions/request", "x bare", "x keyed bare", "x floor", "x peer"],
            [
                [
                    name,
                    f"{value:,.0f}",
                    fmt_ratio(value / bare),
                    fmt_ratio(value / keyed),
                    partner(name, MATCHING_FLOOR),
                    partner(name, PEER),
                ]
                for name, value in per.items()
            ],
        )
    )
    out(
        "\n`x floor`: against the same work done by hand in an app of the same kind "
        "(SPEC §13: jwt ≤ 1.05x, database on SQLite ≤ 1.10x, redis ≤ 1.10x). `x peer`: "
        "against the extension a user of that storage would otherwise pick (SPEC §13: "
        "redis ≤ 0.50x Flask-Session with Flask-Login).\n"
    )
