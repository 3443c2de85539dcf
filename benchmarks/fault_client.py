"""The clients of ``load_and_fault.py``: each signs its own users in, reads as them, signs
out and replays dead cookies, and records every answer against the phase it fell in.

What a client should see is exact (it owns its users), so anything else is a counted
violation; see load_and_fault.py for the schedule and the rules.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

PHASES = [  # (name, start as a fraction of the duration)
    ("steady", 0.0), ("outage", 0.20), ("recovery", 0.40), ("stall", 0.60),
    ("after stall", 0.73), ("after cut", 0.87),
]
USERS_PER_CLIENT = 2


@dataclass
class Stats:
    """What one phase saw: requests by status, violations, the slowest answer."""

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
