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
import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]

from faultproxy import FaultProxy  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

PHASES = [  # (name, start as a fraction of the duration)
    ("steady", 0.0), ("outage", 0.20), ("recovery", 0.40), ("stall", 0.60),
    ("after stall", 0.73), ("after cut", 0.87),
]
USERS_PER_CLIENT = 2
#: The bound any request may wait while the database stalls, with the settings of
#: fault_app.py (statement 2 s, connect 3 s, each at most twice) plus scheduling slack
#: on a small shared machine.
STALL_BOUND = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Stats:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    violations: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_latency: float = 0.0
    locked: int = 0
    last_503: float = 0.0


class Run:
    """One strategy's run: the shared clock, the phase table and the statistics."""

    def __init__(self, duration: float, bound: float) -> None:
        self.duration = duration
        self.bound = bound  # seconds a revoked cookie may still be accepted elsewhere
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.stats: dict[str, Stats] = {name: Stats() for name, _ in PHASES}
        self.examples: list[str] = []
        self.tracebacks = 0  # in the server's log
        self.storage_log_lines = 0  # flask-guardian's one-line outage reports

    def now(self) -> float:
        return time.monotonic() - self.started

    def phase_end(self, name: str) -> float:
        starts = [start for _, start in PHASES] + [1.0]
        return starts[[n for n, _ in PHASES].index(name) + 1] * self.duration

    def phase(self, t: float) -> str:
        current = PHASES[0][0]
        for name, start in PHASES:
            if t >= start * self.duration:
                current = name
        return current

    def record(self, t0: float, t1: float, status: int, violation: str | None = None,
               *, locked: bool = False) -> None:
        with self.lock:
            phase = self.phase(t0)
            stats = self.stats[phase]
            stats.requests += 1
            stats.by_status[status] += 1
            stats.max_latency = max(stats.max_latency, t1 - t0)
            # Recovery is judged on requests answered before the next fault begins.
            if status == 503 and t1 < self.phase_end(phase):
                stats.last_503 = max(stats.last_503, t1)
            if locked:
                stats.locked += 1
            if violation is not None:
                stats.violations[violation] += 1
                if len(self.examples) < 10:
                    self.examples.append(f"{t0:6.2f}s {violation} (status {status})")


class Client(threading.Thread):
    """Signs its own users in, reads as them, signs out, replays dead cookies."""

    def __init__(self, run: Run, port: int, index: int, max_requests: int) -> None:
        super().__init__(daemon=True, name=f"client-{index}")
        self.run_ = run
        self.port = port
        self.users = [(f"c{index}u{j}@example.com", f"load-password-{index}-{j}-xyz")
                      for j in range(USERS_PER_CLIENT)]
        self.max_requests = max_requests
        self.conn: http.client.HTTPConnection | None = None
        self.sent = 0

    def request(self, method: str, path: str, cookie: str | None = None,
                body: dict[str, Any] | None = None) -> tuple[int, dict[str, list[str]], bytes,
                                                             float, float]:
        headers = {"Accept": "application/json"}
        if cookie is not None:
            headers["Cookie"] = f"guardian={cookie}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        t0 = self.run_.now()
        for attempt in range(2):  # a kept-alive connection the server closed: reconnect once
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                got: dict[str, list[str]] = defaultdict(list)
                for key, value in response.getheaders():
                    got[key.lower()].append(value)
                self.sent += 1
                return response.status, got, data, t0, self.run_.now()
            except (OSError, http.client.HTTPException):
                with contextlib.suppress(Exception):
                    if self.conn is not None:
                        self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def check_503(self, status: int, headers: dict[str, list[str]]) -> str | None:
        if status == 503 and not headers.get("retry-after"):
            return "503 without Retry-After"
        if status >= 500 and status != 503:
            return f"{status} answered"
        return None

    def run(self) -> None:
        run = self.run_
        live: tuple[str, str] | None = None  # (cookie, email)
        dead: list[tuple[str, float]] = []  # (cookie, signed out at)
        turn = 0
        while run.now() < run.duration and self.sent < self.max_requests:
            turn += 1
            try:
                if live is None:
                    email, password = self.users[turn % USERS_PER_CLIENT]
                    status, headers, data, t0, t1 = self.request(
                        "POST", "/auth/signin", body={"email": email, "password": password})
                    violation = self.check_503(status, headers)
                    locked = status == 429
                    if locked:
                        violation = "account locked by faults"
                    elif status == 200:
                        cookie = _cookie(headers)
                        if cookie:
                            live = (cookie, email)
                        else:
                            violation = "sign-in without a cookie"
                    elif status != 503 and violation is None:
                        violation = f"sign-in answered {status}"
                    run.record(t0, t1, status, violation, locked=locked)
                else:
                    cookie, email = live
                    status, headers, data, t0, t1 = self.request("GET", "/api/me", cookie)
                    violation = self.check_503(status, headers)
                    if status == 200 and json.loads(data).get("email") != email:
                        violation = "another user's data"
                    elif status == 401:
                        violation = "live cookie refused"
                    run.record(t0, t1, status, violation)
                    if dead:
                        old, ended = dead[turn % len(dead)]
                        status, headers, data, t0, t1 = self.request("GET", "/api/me", old)
                        violation = self.check_503(status, headers)
                        if status == 200 and t0 - ended > run.bound:
                            violation = "dead cookie answered as signed in"
                        run.record(t0, t1, status, violation)
                    if turn % 8 == 0:
                        status, headers, data, t0, t1 = self.request(
                            "POST", "/auth/signout", cookie, body={})
                        violation = self.check_503(status, headers)
                        if status == 200:
                            dead = [*dead, (cookie, t1)][-4:]
                        elif status == 503:
                            if _cookie(headers) != "":
                                violation = "sign-out 503 kept the cookie"
                        else:
                            violation = violation or f"sign-out answered {status}"
                        live = None  # after a 503 the cookie's fate is unknown: not checked
                        run.record(t0, t1, status, violation)
            except (OSError, http.client.HTTPException) as exc:
                t = run.now()
                run.record(t, t, 0, f"no answer: {type(exc).__name__}")
            time.sleep(0.01)  # a polite client: the machine is shared


def _cookie(headers: dict[str, list[str]]) -> str | None:
    """The guardian cookie a response sets: its value, "" when cleared, None when absent."""
    for header in headers.get("set-cookie", []):
        name, _, rest = header.partition("=")
        if name.strip() == "guardian":
            value = rest.split(";", 1)[0]
            cleared = "max-age=0" in header.lower() or "1970" in header
            return "" if cleared or not value else value
    return None


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


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer on port {port} within {limit} s")


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
