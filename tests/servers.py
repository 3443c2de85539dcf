"""Where the suite's stores are and how to reach them: the strategies and databases a run
covers (``GUARDIAN_TEST_STRATEGIES``, ``GUARDIAN_TEST_DATABASES``), this run's own database
on each SQL server and its own key prefix on Redis, and the skip (or, with ``CI=true``,
failure) when a server is not there. No fixtures here: ``conftest.py`` builds them on top.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from faultproxy import FaultProxy
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

STRATEGIES = [
    s.strip() for s in os.environ.get("GUARDIAN_TEST_STRATEGIES", "database,jwt,redis")
    .split(",") if s.strip()
]
DATABASES = [
    d.strip() for d in os.environ.get("GUARDIAN_TEST_DATABASES", "sqlite,postgresql,mariadb")
    .split(",") if d.strip()
]
#: Where the servers are (an admin connection); each test run works in a database of its
#: own on them (``run_database_url``), so two runs sharing a server never drop each
#: other's tables.
ADMIN_URLS = {
    "postgresql": os.environ.get(
        "GUARDIAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get(
        "GUARDIAN_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
    ),
}
REDIS_URL = os.environ.get("GUARDIAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: This run's own database name on each server (pid plus random: unique per run).
RUN_DATABASE = f"guardian_t{os.getpid()}_{secrets.token_hex(4)}"
ON_CI = os.environ.get("CI", "").lower() == "true"
#: The server databases the fault tests run on (faults need a network to break).
SERVER_DATABASES = ["postgresql", "mariadb"]
_created: set[str] = set()


def unmarked_databases() -> list[str]:
    """The databases a test without the ``databases`` marker runs on: SQLite, or the
    first configured database when ``GUARDIAN_TEST_DATABASES`` leaves SQLite out."""
    return ["sqlite"] if "sqlite" in DATABASES else DATABASES[:1]


def run_database_url(name: str) -> str:
    """The URL of this run's own database on server ``name``."""
    return str(make_url(ADMIN_URLS[name]).set(database=RUN_DATABASE))


@cache
def server_problem(name: str) -> str | None:
    """None when the server answers (and this run's database exists on it), else why not."""
    try:
        engine = create_engine(ADMIN_URLS[name], isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {RUN_DATABASE}"))
        _created.add(name)
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


@cache
def redis_problem() -> str | None:
    """None when the Redis server answers, else why not."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def require_redis() -> str:
    """The URL of a reachable Redis, or skip (fail on CI) with the reason."""
    problem = redis_problem()
    if problem is not None:
        message = f"Redis not usable at {REDIS_URL}: {problem}"
        if ON_CI:
            pytest.fail("CI=true requires it: " + message)
        pytest.skip(message)
    return REDIS_URL


def redis_prefix() -> str:
    """A key prefix of its own for one app: this run's name, then a random part, so two
    runs (or two tests) sharing the server never see each other's keys."""
    return f"{RUN_DATABASE}:{secrets.token_hex(4)}:"


def delete_redis_keys(prefix: str) -> None:
    """Delete every key under ``prefix`` (this run's own: never another's)."""
    if redis_problem() is not None:
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])
    client.close()


def drop_run_stores() -> None:
    """Drop this run's databases and Redis keys (another run's are never touched)."""
    delete_redis_keys(RUN_DATABASE + ":")
    for name in sorted(_created):
        engine = create_engine(ADMIN_URLS[name], isolation_level="AUTOCOMMIT")
        force = " WITH (FORCE)" if name == "postgresql" else ""
        with contextlib.suppress(Exception), engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {RUN_DATABASE}{force}"))
        engine.dispose()


def reset_database(url: str) -> None:
    """Drop every table, so each test starts from an empty database."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        else:
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            tables = [r[0] for r in conn.execute(text("SHOW TABLES"))]
            for table in tables:
                conn.execute(text(f"DROP TABLE `{table}`"))
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
    engine.dispose()


def require_server(name: str) -> str:
    """The URL of a reachable server, or skip (fail on CI) with the reason."""
    problem = server_problem(name)
    if problem is not None:
        message = f"{name} server not usable at {ADMIN_URLS[name]}: {problem}"
        if ON_CI:
            pytest.fail("CI=true requires it: " + message)
        pytest.skip(message)
    return run_database_url(name)


@dataclass
class ProxiedDatabase:
    """A clean server database reached through ``proxy`` (``url``), and directly."""

    name: str
    url: str
    direct_url: str
    proxy: FaultProxy


def engine_options(name: str, timeout: float = 2) -> dict[str, Any]:
    """The engine options docs/deployment.md recommends, so that the app's own queries
    (and the extension's writes, which use the app's session) are bounded too."""
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_timeout": timeout}
    if name == "postgresql":
        options["connect_args"] = {
            "connect_timeout": max(2, round(timeout)),
            "options": f"-c statement_timeout={int(timeout * 1000)}",
        }
    else:
        options["connect_args"] = {
            "connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout,
        }
    return options
