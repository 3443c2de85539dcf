"""Load and faults: flask-guardian under gunicorn while the database goes away, stalls and
drops its connections, with exact client-side expectations (issue #11).

    python benchmarks/load_and_fault.py                   # both strategies, PostgreSQL
    python benchmarks/load_and_fault.py --strategy jwt --duration 60
    python benchmarks/load_and_fault.py --database mysql+pymysql://root@127.0.0.1:3306/test

Loopback only, bounded in time (``--duration`` seconds of load per strategy, 60 by
default, plus start-up) and in count (``--clients`` threads, each at most
``--max-requests``). Per strategy it creates a database of its own on the server, starts a
fault proxy (tests/faultproxy.py) in front of it and gunicorn (``--workers`` workers,
gthread) behind it, and runs the clients through this schedule (fractions of the
duration):

    0.00-0.20  steady
    0.20-0.40  outage: connections refused, open ones cut
    0.40-0.60  recovery
    0.60-0.73  stall: no byte moves, nothing is refused
    0.73-0.87  after the stall
    0.87       every connection cut once
    0.87-1.00  after the cut

Each client owns two users that nobody else uses, so what it should see is exact, and
anything else is a counted violation:
- a signed-in request answered for another user, or refused (401) while the cookie is live;
- a signed-out cookie answered as signed in, later than the documented revocation bound
  (database: at once; jwt: GUARDIAN_JWT_REVOCATION_INTERVAL + 1 s grace, + 0.5 s slack);
- a correct-password sign-in refused as ``too_many_attempts`` (an account locked by faults);
- a sign-out answered 503 that does not clear the cookie, or any 503 without Retry-After.
A 503 (with Retry-After) during a fault is the expected answer; a 500 never is.

The Markdown table goes to stdout (docs/deployment.md shows the latest), progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]

from fault_client import PHASES, USERS_PER_CLIENT, Client, Run  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from serving import free_port, wait_ready  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

#: The bound any request may wait while the database stalls, with the settings of
#: fault_app.py (statement 2 s, connect 3 s, each at most twice) plus scheduling slack
#: on a small shared machine.
STALL_BOUND = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(admin_url: str, strategy: str, clients: int) -> str:
    """A database of this run's own, with tables and each client's users; its URL."""
    name = f"guardian_lf_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    from fault_app import create_app

    app, db, guardian = create_app(url, strategy)
    with app.app_context():
        db.create_all()
        for index in range(clients):
            for j in range(USERS_PER_CLIENT):
                guardian.create_user(f"c{index}u{j}@example.com",
                                     f"load-password-{index}-{j}-xyz")
        db.engine.dispose()
    return url


def drop(admin_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
    with contextlib.suppress(Exception), admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
    admin.dispose()


def run_strategy(args: argparse.Namespace, strategy: str) -> tuple[Run, dict[str, float]]:
    from fault_app import REVOCATION_INTERVAL

    url = prepare(args.database, strategy, args.clients)
    target = make_url(url)
    proxy = FaultProxy(target.host or "127.0.0.1", target.port or 5432)
    proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)
    port = free_port()
    env = dict(os.environ, FAULT_DATABASE_URL=proxied, FAULT_STRATEGY=strategy,
               PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", str(args.workers), "-k", "gthread",
         "--threads", str(args.threads), "-b", f"127.0.0.1:{port}", "--timeout", "60",
         "--log-level", "warning", "fault_app:app"],
        cwd=HERE, env=env, stderr=subprocess.PIPE, text=True,
    )
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(server.stderr or []), daemon=True).start()
    restored: dict[str, float] = {}
    try:
        wait_ready(port)
        bound = 0.0 if strategy == "database" else REVOCATION_INTERVAL + 1.0 + 0.5
        run = Run(args.duration, bound)
        clients = [Client(run, port, i, args.max_requests) for i in range(args.clients)]
        for client in clients:
            client.start()
        d = args.duration
        schedule = [
            (0.20 * d, "outage: refuse and cut", proxy.refuse),
            (0.40 * d, "restore", proxy.restore),
            (0.60 * d, "stall", proxy.stall),
            (0.73 * d, "restore", proxy.restore),
            (0.87 * d, "cut every connection", proxy.cut),
        ]
        for at, what, action in schedule:
            time.sleep(max(0.0, at - run.now()))
            log(f"  {strategy} {run.now():5.1f}s {what}")
            action()
            if what == "restore":
                restored[run.phase(run.now())] = run.now()
        for client in clients:
            client.join(args.duration + 120)
    finally:
        proxy.restore()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        proxy.close()
        drop(args.database, url)
    if args.server_log:
        with open(f"{args.server_log}.{strategy}", "w", encoding="utf-8") as file:
            file.writelines(errors)
    run.tracebacks = sum("Traceback" in line for line in errors)
    run.storage_log_lines = sum("storage unavailable" in line for line in errors)
    for line in [e for e in errors if "storage unavailable" not in e][:10]:
        log(f"  server: {line.rstrip()}")
    return run, restored


def table(results: list[tuple[str, Run, dict[str, float]]]) -> str:
    lines = [
        "| strategy | phase | requests | 5xx | 500 | 503 | violations | locked accounts "
        "| time to recover | max latency |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for strategy, run, restored in results:
        for name, _ in PHASES:
            s = run.stats[name]
            fivexx = sum(n for code, n in s.by_status.items() if code >= 500)
            recover = ""
            if name in restored:
                recover = f"{max(0.0, s.last_503 - restored[name]):.1f} s"
            lines.append(
                f"| {strategy} | {name} | {s.requests} | {fivexx} | {s.by_status.get(500, 0)} "
                f"| {s.by_status.get(503, 0)} | {sum(s.violations.values())} | {s.locked} "
                f"| {recover} | {s.max_latency:.2f} s |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=["database", "jwt", "both"], default="both")
    parser.add_argument("--database", default=os.environ.get(
        "GUARDIAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        help="an admin URL of the server (a database of the run's own is created on it)")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=20_000,
                        help="per client: a bound on the count whatever the speed")
    parser.add_argument("--server-log", metavar="PATH",
                        help="write each strategy's server log to PATH.<strategy>")
    args = parser.parse_args()
    if not 10 <= args.duration <= 300 or not 1 <= args.clients <= 64:
        parser.error("--duration must be 10-300 s and --clients 1-64 (bounded runs)")
    if make_url(args.database).host not in ("127.0.0.1", "localhost", None):
        parser.error("loopback only: the database must be on 127.0.0.1")
    strategies = ["database", "jwt"] if args.strategy == "both" else [args.strategy]
    results = []
    failed = False
    for strategy in strategies:
        log(f"{strategy}: {args.clients} clients, {args.workers} gthread workers x "
            f"{args.threads} threads, {args.duration:.0f} s")
        run, restored = run_strategy(args, strategy)
        results.append((strategy, run, restored))
        stall = run.stats["stall"]
        bad = [
            sum(sum(s.violations.values()) for s in run.stats.values()) > 0,
            sum(s.by_status.get(500, 0) for s in run.stats.values()) > 0,
            stall.max_latency > STALL_BOUND,
            run.tracebacks > 0,
        ]
        failed = failed or any(bad)
        for example in run.examples:
            log(f"  violation: {example}")
        log(f"  server log: {run.storage_log_lines} 'storage unavailable' lines, "
            f"{run.tracebacks} tracebacks")
    print(f"{args.clients} clients, {args.workers} gunicorn gthread workers x {args.threads} "
          f"threads, {args.duration:.0f} s per strategy, "
          f"{make_url(args.database).get_backend_name()}\n")
    print(table(results))
    for strategy, run, _ in results:
        print(f"\n{strategy}: server log had {run.storage_log_lines} one-line outage reports "
              f"(rate-limited) and {run.tracebacks} tracebacks.")
    print(f"\nStall bound checked: {STALL_BOUND:.0f} s. Result: "
          f"{'FAILED' if failed else 'passed (0 violations, 0 x 500, stall bounded)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
