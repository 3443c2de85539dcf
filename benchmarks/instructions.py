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
from common import Options, Setup, fmt_ratio, log, markdown_table, out


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
