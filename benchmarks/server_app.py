"""The app the server section serves with gunicorn: one target, chosen by the environment.

    BENCH_SERVER_TARGET   bare | flask-login | guardian-database | guardian-jwt | guardian-redis
    BENCH_SERVER_URI      SQLAlchemy URL (users, sessions or registry)
    BENCH_SERVER_OPTIONS  SQLALCHEMY_ENGINE_OPTIONS as JSON (the PostgreSQL schema)
    BENCH_SERVER_REDIS    Redis URL and key prefix, "URL PREFIX" (guardian-redis)
    BENCH_SERVER_COOKIE   a file to write the signed-in ``Cookie`` header to

gunicorn runs it with ``--preload``: the app is built, its tables made and its user signed
in once, in the arbiter; then every engine is disposed, so each forked worker opens
connections of its own. The protected route is ``/protected`` (``/bare`` for bare), the
same ``return "ok"`` body as the in-process rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import bench_apps
import bench_guardian
from bench_harness import Target
from flask import Flask


def _build() -> tuple[Flask, str, str]:
    """The app, the path to request and the Cookie header to send."""
    kind = os.environ["BENCH_SERVER_TARGET"]
    uri = os.environ.get("BENCH_SERVER_URI", "sqlite://")
    options: dict[str, Any] = json.loads(os.environ.get("BENCH_SERVER_OPTIONS", "{}"))
    if kind == "bare":
        target: Target = bench_apps.bare_targets("guardian=" + "A" * 43, "guardian")[0]
        return target.app, "/bare", "guardian=" + "A" * 43
    if kind == "flask-login":
        target = bench_apps.flask_login_target("server", uri, options)
        cookie = target.environ.get("HTTP_COOKIE", "")
        with target.app.app_context():
            bench_apps.login_db.engine.dispose()
        return target.app, "/protected", str(cookie)
    strategy = kind.removeprefix("guardian-")
    extra: dict[str, Any] = {}
    if strategy == "redis":
        url, prefix = os.environ["BENCH_SERVER_REDIS"].split(" ", 1)
        extra = {"GUARDIAN_REDIS_URL": url, "GUARDIAN_REDIS_PREFIX": prefix}
    ga = bench_guardian.build_guardian_app(
        kind, strategy=strategy, uri=uri, engine_options=options, extra=extra
    )
    with ga.app.app_context():
        ga.db.session.remove()
        ga.db.engine.dispose()
    return ga.app, "/protected", ga.cookie_header


def create_app() -> Flask:
    """Build the target and leave its request line for the load generator."""
    app, path, cookie = _build()
    Path(os.environ["BENCH_SERVER_COOKIE"]).write_text(f"{path}\n{cookie}\n")
    return app
