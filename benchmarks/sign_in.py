"""Section "sign-in": complete ``POST /auth/signin`` requests next to one argon2 verify."""

from __future__ import annotations

import re
import statistics
import time

import bench_guardian
from bench_harness import run_rounds
from common import Options, Setup, log, markdown_table, out, short_traceback


def signin_section(opts: Options, setup: Setup) -> None:
    """Time sign-ins of the SQLite guardian apps; print the share the password hash takes."""
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
