"""The Redis rows' comparison apps: the raw redis-py ``GET`` floor and Flask-Session's Redis
backend with Flask-Login (the peer a Redis user would pick), plus the run's key prefix.

Every key a run writes, its own and flask-guardian's, starts with one prefix made for the
run (:func:`run_prefix`); :func:`delete_keys` removes them at the end.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from typing import Any

from bench_apps import BODY, SECRET_KEY, flask_login_target
from bench_harness import Target, build_environ
from flask import Flask, request

DEFAULT_URL = "redis://127.0.0.1:6379/0"

REDIS_FLOOR = "floor: raw redis-py GET, kept conn"
REDIS_FLOOR_KEYED = "floor: raw redis-py GET, kept conn, app has SECRET_KEY"
FLASK_SESSION = "Flask-Session (Redis) + Flask-Login, SQLite users"

#: A stored value of about the size of a flask-guardian session record.
_VALUE = b"x" * 240


def redis_unavailable(url: str | None) -> str | None:
    """None when Redis at ``url`` answers a PING, else why not."""
    if not url:
        return "--no-redis given"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        return f"Redis at {url} does not answer: {type(exc).__name__}: {exc}"
    return None


def run_prefix() -> str:
    """A key prefix of this process's own, so runs sharing one Redis never meet."""
    return f"guardian-bench:{os.getpid()}:{secrets.token_hex(4)}:"


def delete_keys(url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; how many."""
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) == 500:
            deleted += int(client.delete(*batch))
            batch = []
    if batch:
        deleted += int(client.delete(*batch))
    client.close()
    return deleted


def redis_floor_target(url: str, prefix: str, *, keyed: bool) -> Target:
    """A bare route that reads the cookie, hashes it (SHA-256) and ``GET``s one key on a
    connection kept per thread: the least a session in Redis can cost.

    ``keyed`` puts it in an app with Flask's ``SECRET_KEY`` (which then opens its own
    cookie session on every request), to match the guardian rows that have one."""
    import redis

    token = secrets.token_urlsafe(32)
    key = f"{prefix}floor:{hashlib.sha256(token.encode()).hexdigest()}"
    setup = redis.Redis.from_url(url)
    setup.set(key, _VALUE)
    setup.close()
    local = threading.local()

    def connection() -> Any:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = redis.Redis.from_url(url, single_connection_client=True)
        return client

    app = Flask("bench_redis_floor_keyed" if keyed else "bench_redis_floor")
    if keyed:
        app.config["SECRET_KEY"] = SECRET_KEY
    key_prefix = f"{prefix}floor:"

    @app.get("/raw")
    def raw() -> str:
        value = request.cookies.get("floor", "")
        if connection().get(key_prefix + hashlib.sha256(value.encode()).hexdigest()) is None:
            return "anonymous"
        return BODY

    name = REDIS_FLOOR_KEYED if keyed else REDIS_FLOOR
    return Target(name, app, build_environ("/raw", cookie=f"floor={token}"))


def flask_session_target(url: str, prefix: str, sqlite_uri: str) -> Target:
    """Flask-Login (its documented SQLAlchemy user loader, users on SQLite) with its
    session kept by Flask-Session's Redis backend, all on Flask-Session's defaults (which
    write the session back on every request: ``SESSION_REFRESH_EACH_REQUEST``)."""
    import redis
    from flask_session import Session  # type: ignore[import-untyped, unused-ignore]

    def configure(app: Flask) -> None:
        app.config.update(
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis.from_url(url),
            SESSION_KEY_PREFIX=f"{prefix}fs:",
        )
        Session(app)

    target = flask_login_target("Redis-session", sqlite_uri, {}, configure=configure)
    target.name = FLASK_SESSION
    target.follow_cookie = "session"
    return target
