"""Section "server" (opt-in, issue 16): requests per second and latency under gunicorn.

Each target of :data:`TARGETS` is served by gunicorn (2 workers, ``sync`` and then
``gthread`` with 4 threads each, ``--preload``) on a loopback port, and a load generator
sends the signed-in request on :data:`CLIENTS` kept-alive connections for :data:`WARMUP`
seconds untimed, then :data:`SECONDS` timed: ``wrk`` when it is installed (Debian's
``wrk`` package; written in C, it is not the ceiling), else a bounded Python one in this
process (a thread per connection, reconnecting when a sync worker closes it), which tops
out near 1,100 requests per second here: no row can then show more than that. Everything
is bounded: a server that does not answer within 60 s is given up, and a run is at most
``len(TARGETS) x 2 x (start-up + WARMUP + SECONDS)``.

The load generator shares the machine's cores with the server, so the figures are lower
than a separate client machine would give, and on a shared machine they move with its
load: compare rows of one run, never across runs.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_pg
import bench_redis
from common import Options, Setup, fmt_ratio, log, markdown_table, out, short_traceback
from serving import free_port, wait_ready

HERE = Path(__file__).resolve().parent
CLIENTS = 8
WARMUP = 1.0
SECONDS = 5.0
WORKERS = ("sync", "gthread")


@dataclass
class Load:
    """What the clients saw in the timed window."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def _summary(latencies_us: list[float], errors: int, seconds: float) -> Load:
    if len(latencies_us) >= 2:
        cuts = statistics.quantiles(latencies_us, n=100)
        p50, p99 = cuts[49], cuts[98]
    else:
        p50 = p99 = latencies_us[0] if latencies_us else 0.0
    return Load(len(latencies_us) / seconds if seconds else 0.0, p50 / 1000, p99 / 1000,
                len(latencies_us), errors)


def generate_load(port: int, path: str, cookie: str) -> Load:
    """``wrk`` when it is installed (Debian package ``wrk``: a C load generator, so the
    client is not the ceiling), else the Python one."""
    if shutil.which("wrk"):
        return wrk_load(port, path, cookie)
    return python_load(port, path, cookie)


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_load(port: int, path: str, cookie: str) -> Load:
    """``wrk`` with 2 threads and :data:`CLIENTS` connections: :data:`WARMUP` s untimed,
    then :data:`SECONDS` s timed."""
    url = f"http://127.0.0.1:{port}{path}"
    header = ["-H", f"Cookie: {cookie}"] if cookie else []

    def run(seconds: float) -> str:
        done = subprocess.run(
            ["wrk", "-t", "2", "-c", str(CLIENTS), "-d", f"{seconds:.0f}s", "--latency",
             *header, url], capture_output=True, text=True, timeout=seconds + 60, check=True)
        return done.stdout

    run(WARMUP)
    text = run(SECONDS)
    found = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", text)
    if found is None:
        raise RuntimeError(f"unreadable wrk output:\n{text}")
    requests = int(found.group(1))
    seconds = float(found.group(2)) * _WRK_UNITS[found.group(3)] / 1000
    quantile = {q: float(v) * _WRK_UNITS[u] for q, v, u in
                re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)}
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Load(requests / seconds if seconds else 0.0, quantile.get("50", 0.0),
                quantile.get("99", 0.0), requests, errors)


def python_load(port: int, path: str, cookie: str) -> Load:
    """Send ``GET path`` with ``cookie`` from :data:`CLIENTS` threads; time the window."""
    start = time.monotonic()
    timed_from, timed_to = start + WARMUP, start + WARMUP + SECONDS
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors = [0] * CLIENTS
    headers = {"Cookie": cookie} if cookie else {}

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            t0 = time.monotonic()
            if t0 >= timed_to:
                break
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            t1 = time.monotonic()
            if t0 >= timed_from:
                if ok:
                    latencies[index].append((t1 - t0) * 1e6)
                else:
                    errors[index] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WARMUP + SECONDS + 30)
    return _summary([v for per in latencies for v in per], sum(errors), SECONDS)


def serve(target: str, worker: str, env: dict[str, str], tmp: Path) -> Load:
    """Start gunicorn for ``target`` with ``worker`` workers, load it, stop it."""
    port = free_port()
    cookie_file = tmp / f"{target}-{worker}.cookie"
    threads = ["--threads", "4"] if worker == "gthread" else []
    command = [
        sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
        "--worker-class", worker, *threads, "--bind", f"127.0.0.1:{port}",
        "--chdir", str(HERE), "--log-level", "warning", "server_app:create_app()",
    ]
    server_env = {**os.environ, **env, "BENCH_SERVER_TARGET": target,
                  "BENCH_SERVER_COOKIE": str(cookie_file)}
    process = subprocess.Popen(command, env=server_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        try:
            wait_ready(port, limit=60, path="/", any_status=True)
        except SystemExit as exc:
            raise RuntimeError(f"{exc}; gunicorn said: {stderr_of(process)}") from None
        path, cookie = cookie_file.read_text().splitlines()[:2]
        return generate_load(port, path, cookie)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stderr_of(process: subprocess.Popen[str]) -> str:
    """What a failed server wrote, once it has been stopped."""
    process.kill()
    _, err = process.communicate(timeout=10)
    return err[-2000:]


def server_section(opts: Options, setup: Setup) -> None:
    """Serve every target under both worker kinds and print rps, p50 and p99."""
    out("## Under a real server (gunicorn, 2 workers, loopback)\n")
    with tempfile.TemporaryDirectory(prefix="guardian-bench-server-") as name:
        tmp = Path(name)
        targets: list[tuple[str, str, dict[str, str]]] = [
            ("bare Flask route", "bare", {}),
            ("Flask-Login + SQLAlchemy loader, SQLite", "flask-login",
             {"BENCH_SERVER_URI": f"sqlite:///{tmp / 'login.sqlite'}"}),
            ("flask-guardian database, SQLite", "guardian-database",
             {"BENCH_SERVER_URI": f"sqlite:///{tmp / 'db.sqlite'}"}),
            ("flask-guardian jwt (SQLite registry)", "guardian-jwt",
             {"BENCH_SERVER_URI": f"sqlite:///{tmp / 'jwt.sqlite'}"}),
        ]
        pg = bench_pg.connect_postgres(opts.postgres_url, bench_pg.SCHEMA + "_server") if (
            opts.postgres_url) else "--no-postgres given"
        if isinstance(pg, bench_pg.Postgres):
            on_pg = {"BENCH_SERVER_URI": pg.url,
                     "BENCH_SERVER_OPTIONS": json.dumps(pg.engine_options)}
            targets.insert(2, ("Flask-Login + SQLAlchemy loader, PostgreSQL", "flask-login", on_pg))
            targets.append(("flask-guardian database, PostgreSQL", "guardian-database", on_pg))
        redis_reason = bench_redis.redis_unavailable(opts.redis_url)
        prefix = bench_redis.run_prefix()
        if redis_reason is None and opts.redis_url:
            targets.append(("flask-guardian redis", "guardian-redis", {
                "BENCH_SERVER_URI": f"sqlite:///{tmp / 'redis.sqlite'}",
                "BENCH_SERVER_REDIS": f"{opts.redis_url} {prefix}"}))
        results: dict[tuple[str, str], Load | str] = {}
        try:
            for label, target, env in targets:
                for worker in WORKERS:
                    log(f"server: {label}, {worker}")
                    try:
                        results[(label, worker)] = serve(target, worker, env, tmp)
                    except Exception:
                        results[(label, worker)] = short_traceback(1500)
        finally:
            if isinstance(pg, bench_pg.Postgres):
                bench_pg.drop_schema(pg)
            if redis_reason is None and opts.redis_url:
                bench_redis.delete_keys(opts.redis_url, prefix)
    report(results, pg, redis_reason)


def report(results: dict[tuple[str, str], Load | str], pg: Any, redis_reason: str | None) -> None:
    """The table: per target and worker kind, rps, its ratio to bare, p50 and p99."""
    rows, failures = [], []
    for (label, worker), load in results.items():
        if isinstance(load, str):
            failures.append(f"- {label}, {worker}:\n```\n{load}```")
            continue
        bare = results.get(("bare Flask route", worker))
        ratio = fmt_ratio(load.rps / bare.rps) if isinstance(bare, Load) and bare.rps else "—"
        rows.append([label, worker, f"{load.rps:,.0f}", ratio, f"{load.p50_ms:.2f}",
                     f"{load.p99_ms:.2f}", f"{load.requests:,}", f"{load.errors:,}"])
    client = ("`wrk -t 2` (the Debian package)" if shutil.which("wrk")
              else "client threads in the benchmark's process")
    out(
        f"gunicorn `--workers 2 --preload`, `sync` and `gthread --threads 4`; {CLIENTS} "
        f"connections from {client}, kept alive, "
        f"{WARMUP:.0f} s untimed then {SECONDS:.0f} s timed per row; the load generator "
        "shares the machine's cores with the server. `x bare rps` = requests per second "
        "over those of the bare route under the same worker kind.\n"
    )
    out(markdown_table(["target", "workers", "requests/s", "x bare rps", "p50 ms", "p99 ms",
                        "requests", "errors"], rows))
    if isinstance(pg, str):
        out(f"\nPostgreSQL rows skipped: {pg}")
    if redis_reason is not None:
        out(f"\nRedis row skipped: {redis_reason}")
    if failures:
        out("\nRows that failed:\n" + "\n".join(failures))
    out()
