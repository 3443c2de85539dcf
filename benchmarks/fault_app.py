"""The app ``load_and_fault.py`` serves under gunicorn: flask-guardian as docs/deployment.md
recommends running it (bounded engine options, the teardown guard), plus two routes.

Configured from the environment: ``FAULT_DATABASE_URL`` (the database, through the fault
proxy) and ``FAULT_STRATEGY`` (``database`` or ``jwt``).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, g, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import exc as sa_exc

from flask_guardian import Guardian, login_required

#: The revocation interval of the run: short, so the bound is visible within a minute.
REVOCATION_INTERVAL = 2


def engine_options(url: str, timeout: float = 2) -> dict[str, Any]:
    """docs/deployment.md's recommended options: the app's own queries are bounded too."""
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_timeout": timeout}
    if url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": max(2, round(timeout)),
                                   "options": f"-c statement_timeout={int(timeout * 1000)}"}
    elif url.startswith("mysql"):
        options["connect_args"] = {"connect_timeout": timeout, "read_timeout": timeout,
                                   "write_timeout": timeout}
    return options


def create_app(url: str, strategy: str) -> tuple[Flask, Any, Guardian]:
    app = Flask("fault_app")
    app.config.update(
        SECRET_KEY="load-and-fault-secret-key-0123456789",
        GUARDIAN_JWT_SECRET="load-and-fault-jwt-secret-" + "x" * 32,
        GUARDIAN_COOKIE_SECURE=False,  # plain http on loopback
        GUARDIAN_CSRF_ENABLED=False,  # not what is measured; clients are scripts
        GUARDIAN_ARGON2_MEMORY_COST=1024,  # cheap hashes: the CPU goes to requests
        GUARDIAN_ARGON2_TIME_COST=1,
        GUARDIAN_JWT_REVOCATION_INTERVAL=REVOCATION_INTERVAL,
        SESSION_STRATEGY=strategy,
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(url),
    )
    db = SQLAlchemy(app)
    guardian = Guardian(app, db=db)

    @app.teardown_appcontext
    def end_transaction(_error: BaseException | None) -> None:
        # docs/deployment.md: runs before Flask-SQLAlchemy's own teardown; a rollback on
        # a connection that died after the view must not turn its response into a 500.
        try:
            db.session.rollback()
        except sa_exc.DBAPIError:
            db.session.close()

    @app.get("/")
    def home() -> str:
        return "ok"

    @app.get("/api/me")
    @login_required
    def me() -> Any:
        return jsonify(email=g.session.user.email)

    return app, db, guardian


app = (create_app(os.environ["FAULT_DATABASE_URL"], os.environ["FAULT_STRATEGY"])[0]
       if "FAULT_DATABASE_URL" in os.environ else None)
