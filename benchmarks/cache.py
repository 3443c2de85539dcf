"""Section "cache": how long a revocation takes to reach another process with
``GUARDIAN_SESSION_CACHE``, against the cache off: the database strategy on PostgreSQL
(LISTEN/NOTIFY), and the redis strategy (Redis pub/sub) when Redis is there.

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
import bench_redis
from common import Options, Setup, log, markdown_table, out

HERE = Path(__file__).resolve().parent


class Other:
    """The other process, and one kept HTTP connection to it."""

    def __init__(self, pg: bench_pg.Postgres, config: dict[str, object]) -> None:
        # Its log goes to a file: a pipe nobody reads fills up (64 KiB, about 300 rounds of
        # request lines) and then blocks the server.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "cache_app.py"), pg.url,
             json.dumps(pg.engine_options), json.dumps(config)],
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


def revocation_latencies(pg: bench_pg.Postgres, config: dict[str, object],
                         rounds: int) -> list[float]:
    """Seconds from a revocation in this process until the other refuses the session;
    both apps have ``config`` (the strategy, the cache on or off)."""
    from flask_guardian.state import get_state

    first = bench_guardian.build_guardian_app(
        "first", strategy=str(config["SESSION_STRATEGY"]), uri=pg.url,
        engine_options=pg.engine_options, extra=config)
    guardian = first.guardian
    other = Other(pg, config)
    waits: list[float] = []
    try:
        if config["GUARDIAN_SESSION_CACHE"]:
            cached = get_state(first.app).strategy.cache  # type: ignore[attr-defined]
            with first.app.app_context():
                cached.listen()
            if not cached.cache.wait(came_up=1, timeout=60):
                raise RuntimeError("this process's listener never came up")
        model = guardian.user_model
        with first.app.app_context():
            user = model.query.filter_by(email=bench_guardian.EMAIL).one()
            user_id = user.id
            guardian.revoke_user_sessions(user)  # the set-up's sign-in: one session a round
        for _ in range(rounds):
            value = bench_guardian.sign_in(first.app).cookie("guardian")
            cookie = f"guardian={value}"
            for _ in range(2):  # the other process caches it
                assert other.status("/protected", cookie) == 200
            with first.app.app_context():
                (live,) = guardian.list_sessions(first.db.session.get(model, user_id))
                first.db.session.rollback()
                started = time.perf_counter()
                guardian.revoke_session(live.id)
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
    setups: list[tuple[str, dict[str, object]]] = [
        ("database, PostgreSQL", {"SESSION_STRATEGY": "database"})]
    redis_reason = bench_redis.redis_unavailable(opts.redis_url)
    prefix = bench_redis.run_prefix()
    if redis_reason is None and opts.redis_url:
        setups.append(("redis", {"SESSION_STRATEGY": "redis", "GUARDIAN_REDIS_URL": opts.redis_url,
                                 "GUARDIAN_REDIS_PREFIX": prefix}))
    rows = []
    try:
        for label, config in setups:
            for cache in (False, True):
                log(f"cache section: {label}, {rounds} revocations, "
                    f"cache {'on' if cache else 'off'}")
                waits = sorted(revocation_latencies(
                    pg, {**config, "GUARDIAN_SESSION_CACHE": cache}, rounds))
                p99 = waits[min(len(waits) - 1, round(0.99 * len(waits)) - 1)]
                channel = "LISTEN/NOTIFY" if config["SESSION_STRATEGY"] == "database" else "pub/sub"
                rows.append([label, f"on ({channel})" if cache else "off", str(len(waits)),
                             f"{statistics.median(waits) * 1000:.2f}", f"{p99 * 1000:.2f}",
                             f"{waits[-1] * 1000:.2f}"])
    finally:
        bench_pg.drop_schema(pg)
        if redis_reason is None and opts.redis_url:
            bench_redis.delete_keys(opts.redis_url, prefix)
    out(markdown_table(["strategy", "cache", "revocations", "p50 ms", "p99 ms", "max ms"],
                       rows))
    if redis_reason is not None:
        out(f"\nRedis rows skipped: {redis_reason}.\n")
    out("\nWall clock, two OS processes on one machine, each poll one loopback HTTP "
        "request: compare the rows of one run.\n")
