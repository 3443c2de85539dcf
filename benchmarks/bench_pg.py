"""PostgreSQL access for the benchmark: reachability, a private schema, bulk rows.

Everything the benchmark creates on the server lives in one schema (``guardian_bench`` by
default), selected with ``search_path`` on every connection, so the run never touches
another user's tables in the same database and is removed with one ``DROP SCHEMA``.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "guardian_bench"


@dataclass(frozen=True)
class Postgres:
    """A reachable server: the SQLAlchemy URL, the libpq conninfo and the schema."""

    url: str
    conninfo: str
    schema: str
    version: str

    @property
    def options(self) -> str:
        return f"-csearch_path={self.schema}"

    @property
    def engine_options(self) -> dict[str, Any]:
        """``SQLALCHEMY_ENGINE_OPTIONS`` that put every connection in the schema."""
        return {"connect_args": {"options": self.options}}

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo, options=self.options, autocommit=True)


def connect_postgres(url: str, schema: str = SCHEMA) -> Postgres | str:
    """The server at ``url`` with a fresh, empty ``schema``; or why it is unusable."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        return f"not a PostgreSQL URL: {parsed.drivername}"
    if parsed.drivername != "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # any failure means "skip the PostgreSQL sections"
        reason = " ".join(str(exc).split())  # libpq's messages span several lines
        return f"cannot use {parsed.render_as_string(hide_password=True)}: {reason}"
    return Postgres(parsed.render_as_string(hide_password=False), conninfo, schema, version)


def drop_schema(pg: Postgres) -> None:
    import psycopg

    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{pg.schema}" CASCADE')


# -- synthetic session rows ---------------------------------------------------------------

SESSION_COLUMNS = (
    "id",
    "user_id",
    "user_uniquifier",
    "token_hash",
    "strategy",
    "created_at",
    "last_seen_at",
    "expires_at",
    "absolute_expires_at",
    "revoked_at",
    "ip",
    "user_agent",
)


def session_rows(
    count: int,
    *,
    user: tuple[int, str],
    tag: str,
    expired: bool,
    start: int = 0,
    aware: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """Rows for ``guardian_sessions`` (columns :data:`SESSION_COLUMNS`): database-strategy
    sessions of ``user`` (its id and uniquifier) with unique token digests, either live
    for a day or expired a day ago.

    Times are naive UTC, as the table stores them (for ``COPY``, which bypasses the
    model's column type), or timezone-aware with ``aware`` (for inserts through
    SQLAlchemy, whose column type converts them)."""
    now = datetime.now(UTC)
    if not aware:
        now = now.replace(tzinfo=None)
    if expired:
        created, seen = now - timedelta(days=3), now - timedelta(days=2)
        expires, absolute = now - timedelta(days=1), now - timedelta(hours=12)
    else:
        created, seen = now - timedelta(hours=1), now - timedelta(minutes=1)
        expires, absolute = now + timedelta(days=1), now + timedelta(days=1)
    agent = "Mozilla/5.0 (X11; Linux x86_64) benchmark"
    user_id, uniquifier = user
    for i in range(start, start + count):
        key = f"{tag}-{i}".encode()
        yield (
            hashlib.blake2b(key, digest_size=16).hexdigest()[:22],
            user_id,
            uniquifier,
            hashlib.sha256(key).hexdigest(),
            "database",
            created,
            seen,
            expires,
            absolute,
            None,
            "10.0.0.1",
            agent,
        )


def copy_sessions(pg: Postgres, rows: Iterator[tuple[Any, ...]]) -> int:
    """``COPY`` rows into ``guardian_sessions``; returns how many."""
    columns = ", ".join(SESSION_COLUMNS)
    written = 0
    with pg.connect() as conn, conn.cursor() as cur:
        with cur.copy(f"COPY guardian_sessions ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                written += 1
        conn.execute("ANALYZE guardian_sessions")
    return written


def count_sessions(pg: Postgres) -> int:
    with pg.connect() as conn:
        row = conn.execute("SELECT count(*) FROM guardian_sessions").fetchone()
    return int(row[0]) if row else 0


def explain(pg: Postgres, statement: str, parameters: Any) -> list[str]:
    """The plan PostgreSQL chooses for one captured statement, with its real parameters."""
    with pg.connect() as conn:
        cur = conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING ON) " + statement, parameters)
        return [str(r[0]) for r in cur.fetchall()]


def time_statements_alternating(
    pgs: list[Postgres], statements: list[tuple[str, Any]], executions: int
) -> list[float]:
    """Median µs per execution of each statement on its own connection, the statements
    alternating execution by execution (so all see the same server state)."""
    conns = [pg.connect() for pg in pgs]
    try:
        samples: list[list[float]] = [[] for _ in pgs]
        for _ in range(20):
            for conn, (sql, params) in zip(conns, statements, strict=True):
                conn.execute(sql, params).fetchall()
        clock = time.perf_counter
        jobs = list(zip(conns, statements, samples, strict=True))
        for i in range(executions):
            # Reverse the order every other time, so neither schema always goes second.
            for conn, (sql, params), out in jobs if i % 2 == 0 else jobs[::-1]:
                start = clock()
                conn.execute(sql, params).fetchall()
                out.append((clock() - start) * 1e6)
        return [statistics.median(s) for s in samples]
    finally:
        for conn in conns:
            conn.close()
