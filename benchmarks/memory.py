"""Section "memory": RSS and live objects before and after 100,000 requests (a leak of 10
bytes per request would show as about 1 MB)."""

from __future__ import annotations

import gc
import os
import tracemalloc

import bench_apps
from bench_harness import run_batch
from common import Options, Setup, log, markdown_table, out


def rss_kib() -> int:
    """Resident set size now (Linux ``/proc``), in KiB; 0 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return 0


def memory_section(opts: Options, setup: Setup) -> None:
    """Serve the same cookie many times; print how RSS and the live objects moved."""
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
