"""The comparison apps: bare Flask, the floors, Flask-Login and Flask-JWT-Extended.

Every protected route has the same body (``return "ok"``) so that the only difference
between two rows of the table is how the request is authenticated.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench_harness import Target, build_environ, call
from flask import Flask, request
from flask_jwt_extended import JWTManager, create_access_token, jwt_required
from flask_login import (  # type: ignore[import-untyped, unused-ignore]
    LoginManager,
    login_required,
    login_user,
)
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BODY = "ok"
SECRET_KEY = "benchmark-secret-key-" + "k" * 32


# -- bare and the cookie floor ----------------------------------------------------------


BARE = "bare Flask route"
BARE_KEYED = "bare Flask route, app has SECRET_KEY"


def bare_targets(cookie_header: str, cookie_name: str) -> list[Target]:
    """The bare route, the same with ``SECRET_KEY`` set, and a route that only reads the
    cookie (the floor of any cookie scheme).

    The keyed variant is there because Flask itself changes cost with a ``SECRET_KEY``:
    it then opens its cookie session on every request (building an itsdangerous
    serializer and parsing the Cookie header) even when no view touches ``session``.
    Every app that signs anything (Flask-Login, flask-guardian) pays that; the plain bare
    route and Flask-JWT-Extended (whose key is ``JWT_SECRET_KEY``) do not.
    """
    app = Flask("bench_bare")
    keyed = Flask("bench_bare_keyed")
    keyed.config["SECRET_KEY"] = SECRET_KEY

    def bare() -> str:
        return BODY

    def cookie() -> str:
        request.cookies.get(cookie_name)
        return BODY

    app.add_url_rule("/bare", view_func=bare)
    app.add_url_rule("/cookie", view_func=cookie)
    keyed.add_url_rule("/bare", view_func=bare)
    return [
        Target(BARE, app, build_environ("/bare", cookie=cookie_header)),
        Target(BARE_KEYED, keyed, build_environ("/bare", cookie=cookie_header)),
        Target(
            "floor: read cookie via request.cookies",
            app,
            build_environ("/cookie", cookie=cookie_header),
        ),
    ]


# -- raw driver floors ------------------------------------------------------------------
# What a hand-written session lookup costs: hash the cookie, one indexed SELECT joining
# session and user on a connection kept per thread. No ORM, no pool.

_FLOOR_SCHEMA = (
    "CREATE TABLE floor_user (id INTEGER PRIMARY KEY, email VARCHAR(255) NOT NULL)",
    "CREATE TABLE floor_session (id INTEGER PRIMARY KEY, token_hash CHAR(64) NOT NULL"
    " UNIQUE, user_id INTEGER NOT NULL REFERENCES floor_user(id), expires_at FLOAT"
    " NOT NULL)",
)
_FLOOR_QUERY = (
    "SELECT s.id, s.expires_at, u.id, u.email FROM floor_session s"
    " JOIN floor_user u ON u.id = s.user_id WHERE s.token_hash = {p}"
)


def sqlite_floor_target(path: Path) -> Target:
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    with sqlite3.connect(path) as conn:
        for statement in _FLOOR_SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO floor_user VALUES (1, 'a@example.com')")
        conn.execute("INSERT INTO floor_session VALUES (1, ?, 1, 4102444800.0)", (digest,))
    conn.close()
    local = threading.local()

    def connection() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(path, check_same_thread=True)
        return conn

    return _floor_target("sqlite3", connection, _FLOOR_QUERY.format(p="?"), token)


def postgres_floor_target(conninfo: str, schema: str) -> Target:
    import psycopg

    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    options = f"-csearch_path={schema}"
    with psycopg.connect(conninfo, options=options, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS floor_session")
        conn.execute("DROP TABLE IF EXISTS floor_user")
        for statement in _FLOOR_SCHEMA:
            conn.execute(statement.replace("FLOAT", "DOUBLE PRECISION"))
        conn.execute("INSERT INTO floor_user VALUES (1, 'a@example.com')")
        conn.execute("INSERT INTO floor_session VALUES (1, %s, 1, 4102444800.0)", (digest,))
    local = threading.local()

    def connection() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(conninfo, options=options, autocommit=True)
        return conn

    return _floor_target("psycopg", connection, _FLOOR_QUERY.format(p="%s"), token)


def _floor_target(driver: str, connection: Callable[[], Any], query: str, token: str) -> Target:
    """The floor app: read the cookie, hash it, one SELECT on the thread's connection."""
    app = Flask(f"bench_{driver}_floor")

    @app.get("/raw")
    def raw() -> str:
        value = request.cookies.get("floor", "")
        row = connection().execute(query, (hashlib.sha256(value.encode()).hexdigest(),)).fetchone()
        if row is None:
            return "anonymous"
        return BODY

    return Target(
        f"floor: raw {driver} lookup, thread-local conn",
        app,
        build_environ("/raw", cookie=f"floor={token}"),
    )


# -- Flask-Login ------------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


class LoginUser(_Base):
    """Flask-Login's documented shape: a model with ``get_id`` and the four properties."""

    __tablename__ = "bench_login_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return str(self.id)


# One Flask-SQLAlchemy object for every Flask-Login app: each app gets its own engine.
login_db = SQLAlchemy(metadata=_Base.metadata)


def flask_login_target(
    name: str,
    uri: str,
    engine_options: dict[str, Any],
    *,
    configure: Callable[[Flask], None] | None = None,
) -> Target:
    """Flask-Login with the user loader from its docs: ``db.session.get(User, int(id))``.

    ``configure`` runs on the app before Flask-Login is set up (Flask-Session, say)."""
    app = Flask(f"bench_login_{name}")
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI=uri,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options,
    )
    if configure is not None:
        configure(app)
    login_db.init_app(app)
    manager = LoginManager(app)

    def load_user(user_id: str) -> LoginUser | None:
        return login_db.session.get(LoginUser, int(user_id))

    manager.user_loader(load_user)

    @app.get("/login")
    def login() -> str:
        user = login_db.session.get(LoginUser, 1)
        assert user is not None
        login_user(user)
        return BODY

    def protected() -> str:
        return BODY

    # Decorating by call: flask_login ships no type information.
    app.add_url_rule("/protected", view_func=login_required(protected))

    with app.app_context():
        login_db.drop_all()
        login_db.create_all()
        login_db.session.add(LoginUser(id=1, email="a@example.com"))
        login_db.session.commit()

    response = call(app, build_environ("/login"))
    value = response.cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    if response.status_code != 200 or not value:
        raise RuntimeError(f"Flask-Login sign-in failed: {response.status} {response.body!r}")
    environ = build_environ("/protected", cookie=f"session={value}")
    return Target(f"Flask-Login + SQLAlchemy loader, {name}", app, environ)


def login_engines(target: Target) -> list[Any]:
    with target.app.app_context():
        return [login_db.engine]


# -- Flask-JWT-Extended -----------------------------------------------------------------


def jwt_extended_target() -> Target:
    app = Flask("bench_jwt_extended")
    app.config.update(
        JWT_SECRET_KEY="jwt-extended-benchmark-" + "s" * 32,
        JWT_TOKEN_LOCATION=["cookies"],
        JWT_COOKIE_SECURE=False,
        # Long enough for any run; the default (15 minutes) could expire mid-run.
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(hours=6),
    )
    JWTManager(app)

    def protected() -> str:
        return BODY

    app.add_url_rule("/protected", view_func=jwt_required()(protected))

    with app.app_context():
        token = create_access_token(identity="1")
    cookie = f"{app.config.get('JWT_ACCESS_COOKIE_NAME', 'access_token_cookie')}={token}"
    return Target(
        "Flask-JWT-Extended, token in cookie",
        app,
        build_environ("/protected", cookie=cookie),
    )
