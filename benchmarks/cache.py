"""Section "cache": how long a revocation takes to reach another process with
``GUARDIAN_SESSION_CACHE`` (PostgreSQL LISTEN/NOTIFY), against the cache off.

The other process is a real one (``cache_app.py``: its own interpreter, engine and LISTEN
connection, Werkzeug's server on a loopback port). Each round signs in here, has the other
process serve (and cache) the session twice, then times from just before this process's
revocation (its commit included) until the other process answers anything but 200 (a
redirect to sign in). Each poll is one HTTP request on loopback, so the figure includes
one request's time; with the cache off the first poll is refused (the row is read), which
is that floor. Wall-clock time: compare the two rows of one run, not runs.
(Instruction counts per request, which do not move with load, are in "instructions".)
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_guardian
import bench_pg
from common import Options, Setup, log, markdown_table, out

HERE = Path(__file__).resolve().parent


class Other:
    """The other process, and one kept HTTP connection to it."""

    def __init__(self, pg: bench_pg.Postgres, cache: bool) -> None:
        # Its log goes to a file: a pipe nobody reads fills up (64 KiB, about 300 rounds of
        # request lines) and then blocks the server.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "cache_app.py"), pg.url,
             json.dumps(pg.engine_options), "1" if cache else "0"],
            stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=HERE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.process.kill()
            self.log.seek(0)
            raise RuntimeError(f"cache_app.py did not start: {self.log.read()[-2000:]}")
        self.conn = http.client.HTTPConnection("127.0.0.1", int(line), timeout=10)
        if self.status("/ready") != 200:
            raise RuntimeError("the other process's listener never came up")

    def status(self, path: str, cookie: str = "") -> int:
        self.conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = self.conn.getresponse()
        response.read()
        return response.status

    def stop(self) -> None:
        self.conn.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def revocation_latencies(pg: bench_pg.Postgres, cache: bool, rounds: int) -> list[float]:
    """Seconds from a revocation in this process until the other refuses the session."""
    from flask_guardian.state import get_state
    from flask_guardian.strategies.base import sha256_hex

    first = bench_guardian.build_guardian_app(
        "first", strategy="database", uri=pg.url, engine_options=pg.engine_options,
        extra={"GUARDIAN_SESSION_CACHE": cache})
    sessions = get_state(first.app).strategy.sessions  # type: ignore[attr-defined]
    other = Other(pg, cache)
    waits: list[float] = []
    try:
        if cache:
            cached = get_state(first.app).strategy.cache  # type: ignore[attr-defined]
            with first.app.app_context():
                cached.listen()
            if not cached.cache.wait(came_up=1, timeout=60):
                raise RuntimeError("this process's listener never came up")
        for _ in range(rounds):
            value = bench_guardian.sign_in(first.app).cookie("guardian")
            cookie = f"guardian={value}"
            for _ in range(2):  # the other process caches it
                assert other.status("/protected", cookie) == 200
            with first.app.app_context():
                db = first.db
                sid = db.session.execute(
                    sessions.select().with_only_columns(sessions.c.id)
                    .where(sessions.c.token_hash == sha256_hex(value))).scalar_one()
                db.session.rollback()
                started = time.perf_counter()
                first.guardian.revoke_session(sid)
            deadline = started + 10
            while other.status("/protected", cookie) == 200:  # then a redirect to sign in
                if time.perf_counter() > deadline:
                    raise RuntimeError("the other process still serves a revoked session")
            waits.append(time.perf_counter() - started)
    finally:
        other.stop()
        cached = getattr(get_state(first.app).strategy, "cache", None)
        if cached is not None:
            cached.close()
        with first.app.app_context():
            first.db.engine.dispose()
    return waits


def cache_section(opts: Options, setup: Setup) -> None:
    """Revocation latency across two processes, cache on vs off (p50/p99)."""
    out("## Session cache: revocation reaching another process\n")
    if not opts.postgres_url:
        out("Skipped: needs PostgreSQL (`--postgres URL`).\n")
        return
    pg = bench_pg.connect_postgres(opts.postgres_url, schema=f"guardian_cache_{os.getpid()}")
    if isinstance(pg, str):
        out(f"Skipped: {pg}\n")
        return
    rounds = 100 if opts.quick else 300
    rows = []
    try:
        for cache in (False, True):
            log(f"cache section: {rounds} revocations, cache {'on' if cache else 'off'}")
            waits = sorted(revocation_latencies(pg, cache, rounds))
            p99 = waits[min(len(waits) - 1, round(0.99 * len(waits)) - 1)]
            rows.append([f"cache {'on (LISTEN/NOTIFY)' if cache else 'off'}", str(len(waits)),
                         f"{statistics.median(waits) * 1000:.2f}", f"{p99 * 1000:.2f}",
                         f"{waits[-1] * 1000:.2f}"])
    finally:
        bench_pg.drop_schema(pg)
    out(markdown_table(["database strategy, PostgreSQL", "revocations", "p50 ms", "p99 ms",
                        "max ms"], rows))
    out("\nWall clock, two OS processes on one machine, each poll one loopback HTTP "
        "request: compare the rows of one run.\n")
