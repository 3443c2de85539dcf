"""Timing machinery: call a Flask app through WSGI, time batches, summarise rounds.

Every contestant runs the same loop: copy a prebuilt environ, call ``app.wsgi_app``,
drain and close the response iterable. The loop is the same for all, so its own cost
(a dict copy and a few calls, well under a microsecond) cancels out in the ratios.
"""

from __future__ import annotations

import gc
import io
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.test import EnvironBuilder

Environ = dict[str, Any]
Headers = list[tuple[str, str]]
StartResponse = Callable[..., Callable[[bytes], object]]

# The same client identity for every request, sign-in included: Flask-Login's default
# session protection hashes address and user agent, and the guardian strategies record
# them; a mismatch between sign-in and the timed requests would change what is measured.
REMOTE_ADDR = "127.0.0.1"
USER_AGENT = "flask-guardian-benchmark/1.0"


def build_environ(
    path: str,
    *,
    method: str = "GET",
    cookie: str | None = None,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Environ:
    """A complete WSGI environ for one request, built once and copied per request."""
    all_headers = {"User-Agent": USER_AGENT, "Accept": "text/html"}
    if cookie is not None:
        all_headers["Cookie"] = cookie
    all_headers.update(headers or {})
    builder = EnvironBuilder(
        path=path,
        method=method,
        headers=list(all_headers.items()),
        data=data,
        environ_base={"REMOTE_ADDR": REMOTE_ADDR},
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


@dataclass
class Response:
    status: str
    headers: Headers
    body: bytes

    @property
    def status_code(self) -> int:
        return int(self.status.split(" ", 1)[0])

    def cookie(self, name: str) -> str | None:
        """The value a ``Set-Cookie`` header of this response gives ``name``, if any."""
        for key, value in self.headers:
            if key.lower() == "set-cookie" and value.startswith(name + "="):
                return value[len(name) + 1 :].split(";", 1)[0]
        return None


def call(app: Flask, environ: Environ, body: bytes = b"") -> Response:
    """One request through ``app.wsgi_app``, for set-up and checks (not timed)."""
    captured: list[Any] = []

    def start_response(
        status: str, headers: Headers, exc_info: object = None
    ) -> Callable[[bytes], object]:
        captured[:] = [status, headers]
        return _write

    env = environ.copy()
    env["wsgi.input"] = io.BytesIO(body or _read_body(environ))
    iterable = app.wsgi_app(env, start_response)
    try:
        data = b"".join(iterable)
    finally:
        _close(iterable)
    return Response(captured[0], list(captured[1]), data)


def _read_body(environ: Environ) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    stream.seek(0)
    data: bytes = stream.read()
    stream.seek(0)
    return data


def _write(data: bytes) -> object:
    return None


def _close(iterable: Iterable[bytes]) -> None:
    close = getattr(iterable, "close", None)
    if close is not None:
        close()


@dataclass
class Target:
    """One thing to time: an app and the request it receives."""

    name: str
    app: Flask
    environ: Environ
    expect_status: str = "200 OK"
    # When set, the loop copies this cookie from each response's Set-Cookie header into
    # the next request, as a browser would (a refresh may re-issue the token).
    follow_cookie: str | None = None
    note: str = ""


@dataclass
class Batch:
    """The outcome of one timed batch."""

    seconds: float
    requests: int
    statuses: dict[str, int]
    cpu_seconds: float = 0.0  # this process's CPU time (time.process_time) in the batch

    @property
    def us_per_request(self) -> float:
        return self.seconds * 1e6 / self.requests

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds * 1e6 / self.requests


def run_batch(target: Target, requests: int, *, collect: bool = True) -> Batch:
    """Time ``requests`` requests of ``target``, counting the statuses returned.

    Every target runs this same loop, cookie following included (a scan of a handful of
    response headers), so the loop's own cost is the same in every row. With ``collect``
    (the default) a full garbage collection runs first, outside the timed loop; a caller
    that counts the whole process (``bench_one.py``) collects itself and passes False.
    """
    statuses: dict[str, int] = {}
    wsgi = target.app.wsgi_app
    base = target.environ
    body = _read_body(base)
    # A prefix no header value starts with when the target does not follow a cookie.
    prefix = (target.follow_cookie + "=") if target.follow_cookie else "\0"

    def start_response(
        status: str, headers: Headers, exc_info: object = None
    ) -> Callable[[bytes], object]:
        statuses[status] = statuses.get(status, 0) + 1
        for key, value in headers:
            if key == "Set-Cookie" and value.startswith(prefix):
                # As a browser would: the next request carries the refreshed cookie.
                base["HTTP_COOKIE"] = value.split(";", 1)[0]
        return _write

    if collect:
        gc.collect()
    cpu_start = time.process_time()
    start = time.perf_counter()
    for _ in range(requests):
        env = base.copy()
        env["wsgi.input"] = io.BytesIO(body)
        iterable = wsgi(env, start_response)
        for _chunk in iterable:
            pass
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return Batch(elapsed, requests, statuses, cpu)


@dataclass
class Stats:
    """Per-request microseconds over the rounds of one target."""

    name: str
    rounds: list[float] = field(default_factory=list)
    cpu_rounds: list[float] = field(default_factory=list)
    requests: int = 0  # per round
    bad_statuses: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_rounds)

    @property
    def low(self) -> float:
        return min(self.rounds)

    @property
    def high(self) -> float:
        return max(self.rounds)

    @property
    def iqr(self) -> tuple[float, float]:
        if len(self.rounds) < 2:
            return (self.rounds[0], self.rounds[0])
        q1, _q2, q3 = statistics.quantiles(self.rounds, n=4, method="inclusive")
        return (q1, q3)


def run_rounds(
    targets: Sequence[Target],
    *,
    rounds: int,
    warmup: int,
    requests: int | None = None,
    batch_seconds: float = 0.15,
    min_requests: int = 20,
    progress: Callable[[str], None] | None = None,
) -> list[Stats]:
    """Warm every target up, then time them interleaved: round r runs each target once.

    Interleaving spreads slow drifts of the machine (another process, frequency
    scaling) over all targets instead of charging them to whichever ran last. Unless
    ``requests`` fixes it, each target's batch size is calibrated after warm-up so that
    one batch lasts about ``batch_seconds``: a round then gives every target the same
    share of wall-clock time, and a disturbance hits all of them alike.
    """
    results = [Stats(t.name, note=t.note) for t in targets]
    for target, stats in zip(targets, results, strict=True):
        batch = run_batch(target, warmup)
        _check(target, batch)
        if requests is not None:
            stats.requests = requests
        else:
            probe = run_batch(target, max(min_requests, warmup // 4))
            per_request = probe.seconds / probe.requests
            stats.requests = max(min_requests, round(batch_seconds / per_request))
    for r in range(rounds):
        for target, stats in zip(targets, results, strict=True):
            batch = run_batch(target, stats.requests)
            stats.rounds.append(batch.us_per_request)
            stats.cpu_rounds.append(batch.cpu_us_per_request)
            for status, count in batch.statuses.items():
                if status != target.expect_status:
                    stats.bad_statuses[status] = stats.bad_statuses.get(status, 0) + count
        if progress is not None:
            progress(f"round {r + 1}/{rounds} done")
    return results


def run_alternating(targets: Sequence[Target], requests: int) -> list[list[float]]:
    """Time single requests, cycling through ``targets`` (A B C, B C A, C A B, ...).

    Returns each target's per-request times in µs. Neighbouring requests of different
    targets see the same machine state, so a comparison between them survives a noisy
    machine better than batch timing does; the median of each list is robust to the
    requests that happened to be pre-empted. Costs ~0.1 µs of timer overhead per request.
    """
    samples: list[list[float]] = [[] for _ in targets]
    statuses: dict[str, int] = {}

    def start_response(
        status: str, headers: Headers, exc_info: object = None
    ) -> Callable[[bytes], object]:
        statuses[status] = statuses.get(status, 0) + 1
        return _write

    prepared = [
        (t.app.wsgi_app, t.environ, _read_body(t.environ), out)
        for t, out in zip(targets, samples, strict=True)
    ]
    # Rotate the order every cycle: whichever target runs right after another one could
    # otherwise be favoured or penalised (caches, the database server's scheduling).
    orders = [prepared[i:] + prepared[:i] for i in range(len(prepared))]
    clock = time.perf_counter
    gc.collect()
    for i in range(requests):
        for wsgi, base, body, out in orders[i % len(orders)]:
            start = clock()
            env = base.copy()
            env["wsgi.input"] = io.BytesIO(body)
            iterable = wsgi(env, start_response)
            for _chunk in iterable:
                pass
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
            out.append((clock() - start) * 1e6)
    wrong = {s: n for s, n in statuses.items() if not s.startswith("200")}
    if wrong:
        raise RuntimeError(f"unexpected statuses while alternating: {statuses!r}")
    return samples


def _check(target: Target, batch: Batch) -> None:
    wrong = {s: n for s, n in batch.statuses.items() if s != target.expect_status}
    if wrong:
        raise RuntimeError(
            f"{target.name}: expected {target.expect_status!r} for every request, "
            f"got {batch.statuses!r} during warm-up"
        )


# -- query counting ---------------------------------------------------------------------

_WRITE_PREFIXES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT", "MERGE")


@dataclass
class QueryCount:
    statements: int = 0
    writes: int = 0
    # Statements whose text says nothing about rows: BEGIN/COMMIT/SAVEPOINT are sent by
    # the driver itself and not seen here; SQLAlchemy only reports real statements.
    samples: list[str] = field(default_factory=list)


@contextmanager
def count_queries(engines: Sequence[Engine], readers: Sequence[Any] = ()) -> Iterator[QueryCount]:
    """Count the SQL statements sent on ``engines`` while the block runs.

    ``readers`` are objects with ``listen(callback)`` / ``unlisten(callback)`` that call
    ``callback(sql)`` per statement: for code that runs SQL on a raw DBAPI connection,
    which SQLAlchemy's events never see (flask-guardian's per-request session lookup).
    """
    counter = QueryCount()

    def seen(statement: str) -> None:
        counter.statements += 1
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if head in _WRITE_PREFIXES:
            counter.writes += 1
        if len(counter.samples) < 5 and statement not in counter.samples:
            counter.samples.append(statement)

    def before_cursor_execute(
        conn: object,
        cursor: object,
        statement: str,
        parameters: object,
        context: object,
        executemany: bool,
    ) -> None:
        seen(statement)

    unique = list({id(e): e for e in engines}.values())
    for engine in unique:
        event.listen(engine, "before_cursor_execute", before_cursor_execute)
    for reader in readers:
        reader.listen(seen)
    try:
        yield counter
    finally:
        for engine in unique:
            event.remove(engine, "before_cursor_execute", before_cursor_execute)
        for reader in readers:
            reader.unlisten(seen)
