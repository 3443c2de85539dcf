"""Builders the test files share: the users and base settings, a small app built through
the public API, signing in, reading cookies, and counting what a request costs. Fixtures
live in ``conftest.py``; where the stores are (servers, Redis) is ``servers.py``.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask, g, jsonify
from flask_sqlalchemy import SQLAlchemy
from servers import redis_prefix, require_redis
from sqlalchemy import event

from flask_guardian import Guardian, login_required, roles_required
from flask_guardian.state import get_state

ADMIN = ("admin@example.com", "admin-password-123")
USER = ("user@example.com", "user-password-123")
JWT_SECRET = "test-jwt-secret-" + "x" * 32

BASE_CONFIG: dict[str, Any] = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-0123456789abcdef",
    "GUARDIAN_JWT_SECRET": JWT_SECRET,
    "GUARDIAN_COOKIE_SECURE": False,
    # Cheap hashes keep the suite fast; the scheme (argon2id) is the production one.
    "GUARDIAN_ARGON2_MEMORY_COST": 1024,
    "GUARDIAN_ARGON2_TIME_COST": 1,
}

#: Strategies whose sessions are rows of the SQL registry (``guardian_sessions``).
SQL_REGISTRY = frozenset({"database", "jwt"})
#: Round trips a steady-state signed-in request makes to the session store.
READS_PER_REQUEST = {"database": 1, "jwt": 0, "redis": 1}


def strategy_config(strategy: str) -> dict[str, Any]:
    """What an app needs beyond its database to run ``strategy`` in a test: for redis, the
    server (skipped, or failed on CI, when it is not there) and a key prefix of its own."""
    if strategy == "redis":
        return {"GUARDIAN_REDIS_URL": require_redis(), "GUARDIAN_REDIS_PREFIX": redis_prefix()}
    return {}


def needs_sql_registry(strategy: str) -> None:
    """Skip, with the reason, a test of the SQL session registry for a strategy that keeps
    its sessions elsewhere (redis: tests/test_redis.py checks the same rules there)."""
    if strategy not in SQL_REGISTRY:
        pytest.skip(f"the {strategy} strategy keeps no guardian_sessions rows; "
                    "tests/test_redis.py covers this rule for it")


def store_config(app: Flask) -> dict[str, Any]:
    """The settings that name ``app``'s session store beyond its database (the redis
    strategy's server and prefix): a second app given them shares the first's sessions,
    as a second process would."""
    keys = ("GUARDIAN_REDIS_URL", "GUARDIAN_REDIS_PREFIX")
    return {k: app.config[k] for k in keys if k in app.config}


#: ``make_app(**config)``: the type of the app-building fixtures.
AppFactory = Callable[..., Flask]


def build_app(database_url: str, strategy: str, **config: Any) -> Flask:
    """A small app like a user would write, with the two demo users."""
    app = Flask("guardian_test_app")
    app.config.update(BASE_CONFIG)
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, SESSION_STRATEGY=strategy)
    app.config.update(strategy_config(strategy))
    app.config.update(config)
    db = SQLAlchemy(app)
    guardian = Guardian(app, db=db)

    @app.get("/")
    def home() -> str:
        return "home"

    @app.get("/dashboard")
    @login_required
    def dashboard() -> str:
        return f"hello {g.session.user.email}"

    @app.get("/admin")
    @roles_required("admin")
    def admin() -> str:
        return "admin area"

    @app.get("/api/me")
    @login_required
    def api_me() -> Any:
        return jsonify(g.session.to_dict())

    @app.get("/open/<path:rest>")
    def open_route(rest: str) -> str:
        return f"open {rest}"

    with app.app_context():
        db.create_all()
        model = guardian.user_model
        if db.session.execute(db.select(model.id).limit(1)).first() is None:
            guardian.create_user(ADMIN[0], ADMIN[1], name="Ada Admin", role="admin")
            guardian.create_user(USER[0], USER[1], name=None, role="user")
    return app


def guardian_of(app: Flask) -> Guardian:
    """The ``Guardian`` extension of ``app``."""
    return app.extensions["guardian"]  # type: ignore[no-any-return]


def db_of(app: Flask) -> Any:
    """The ``SQLAlchemy`` extension of ``app``."""
    return app.extensions["sqlalchemy"]


#: Statements and Redis commands that write (the redis strategy's scripts write: the
#: refresh's compare-and-set, the lockout counters).
WRITE_VERBS = frozenset({
    "INSERT", "UPDATE", "DELETE", "SET", "DEL", "UNLINK", "HSET", "HDEL", "EXPIRE",
    "EXPIREAT", "PEXPIREAT", "EVALSHA", "EVAL",
})


def _describe(command: tuple[Any, ...]) -> str:
    """A Redis command as counted: its name and first argument (the key), or for a script
    (``EVAL``/``EVALSHA``) its name and the keys it touches."""
    name = str(command[0])
    if name.upper() in ("EVAL", "EVALSHA") and len(command) > 2:
        return " ".join([name, *(str(k) for k in command[3:3 + int(command[2])])])
    return " ".join(str(a) for a in command[:2])


class QueryCounter:
    """Counts SQL statements an engine runs (``with QueryCounter(app) as q: ...``)."""

    def __init__(self, app: Flask) -> None:
        with app.app_context():
            self.engine = db_of(app).engine
        self.statements: list[str] = []
        # The database strategy reads sessions on its own DBAPI connection (lookup.py),
        # outside SQLAlchemy's events; its reader reports each statement it runs.
        strategy = get_state(app).strategy
        self.reader = getattr(strategy, "reader", None)
        # The redis strategy's commands count too ("GET ...", "SET ..."), whichever of its
        # clients sends them (the shared one, or a thread's kept one for the hot path):
        # the client class is patched while counting.
        client = getattr(strategy, "redis", None)
        self.redis = type(client) if client is not None else None

    def _record(self, *args: Any) -> None:
        # before_cursor_execute(conn, cursor, statement, ...) or reader listener(statement)
        self.statements.append(args[2] if len(args) > 1 else args[0])

    def _redis_command(self, client: Any, *args: Any, **options: Any) -> Any:
        self.statements.append(_describe(args))
        return self._redis_execute(client, *args, **options)

    def _redis_pipeline(self, client: Any, *args: Any, **options: Any) -> Any:
        pipeline = self._redis_make_pipeline(client, *args, **options)
        queue = pipeline.pipeline_execute_command

        def counted(*command: Any, **kwargs: Any) -> Any:
            self.statements.append(_describe(command))
            return queue(*command, **kwargs)

        pipeline.pipeline_execute_command = counted
        return pipeline

    def __enter__(self) -> QueryCounter:
        event.listen(self.engine, "before_cursor_execute", self._record)
        if self.reader is not None:
            self.reader.listen(self._record)
        if self.redis is not None:
            counter = self
            self._redis_execute = self.redis.execute_command
            self._redis_make_pipeline = self.redis.pipeline

            def execute_command(client: Any, *args: Any, **options: Any) -> Any:
                return counter._redis_command(client, *args, **options)

            def pipeline(client: Any, *args: Any, **options: Any) -> Any:
                return counter._redis_pipeline(client, *args, **options)

            self.redis.execute_command = execute_command
            self.redis.pipeline = pipeline
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)
        if self.reader is not None:
            self.reader.unlisten(self._record)
        if self.redis is not None:
            self.redis.execute_command = self._redis_execute
            self.redis.pipeline = self._redis_make_pipeline

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def writes(self) -> list[str]:
        return [
            s for s in self.statements
            if s.lstrip().split(None, 1)[0].upper() in WRITE_VERBS
        ]


# -- signing in and cookies --------------------------------------------------------


def csrf_token(client: Any) -> str:
    """A CSRF token for ``client`` (sets the CSRF seed cookie on it)."""
    token = client.get("/auth/csrf").get_json()["csrfToken"]
    assert isinstance(token, str)
    return token


def sign_in(
    client: Any, email: str, password: str, *, json: bool = False, redirect_url: str | None = None,
    remember: bool = False, **headers: str,
) -> Any:
    """POST /auth/signin as a browser form (or JSON), with a valid CSRF token; ``remember``
    ticks "remember me"."""
    token = csrf_token(client)
    data: dict[str, Any] = {"email": email, "password": password, "csrf_token": token}
    if redirect_url is not None:
        data["redirectUrl"] = redirect_url
    if remember:
        data["remember"] = True if json else "1"
    if json:
        return client.post("/auth/signin", json=data, headers=headers)
    return client.post("/auth/signin", data=data, headers=headers)


def sign_in_ok(client: Any, who: tuple[str, str] = USER, **headers: str) -> Any:
    """Sign ``who`` in through the form and assert it succeeded (303)."""
    response = sign_in(client, *who, **headers)
    assert response.status_code == 303, response.get_data(as_text=True)
    return response


def sign_out(client: Any, **headers: str) -> Any:
    """POST /auth/signout with a valid CSRF token."""
    return client.post("/auth/signout", data={"csrf_token": csrf_token(client)}, headers=headers)


def cookie_name(app: Flask) -> str:
    """The name of ``app``'s session cookie."""
    return str(get_state(app).settings.cookie_name)


def session_cookie(client: Any, app: Flask) -> str | None:
    """The value of ``client``'s session cookie for ``app``, or None."""
    cookie = client.get_cookie(cookie_name(app))
    return None if cookie is None else str(cookie.value)


def set_cookie_headers(response: Any, name: str) -> list[str]:
    """The Set-Cookie headers of ``response`` for the cookie ``name``."""
    return [h for h in response.headers.getlist("Set-Cookie") if h.split("=", 1)[0] == name]


def cookie_attributes(header: str) -> dict[str, str]:
    """``{"name": value, "httponly": "", "samesite": "Lax", ...}`` of a Set-Cookie header
    (attribute names lower-cased)."""
    parts = [p.strip() for p in header.split(";")]
    name, _, value = parts[0].partition("=")
    attrs = {"__name__": name, "__value__": value}
    for part in parts[1:]:
        key, _, val = part.partition("=")
        attrs[key.lower()] = val
    return attrs


# -- a browser over real HTTP, for apps served on loopback ports -------------------------

#: Where the served apps listen.
HOST = "127.0.0.1"
#: The header that asks for JSON answers.
JSON = {"Accept": "application/json"}


@dataclass
class Reply:
    """One HTTP answer as a loopback ``Browser`` got it."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        """The body, parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Browser:
    """One browser: a User-Agent and a cookie jar shared by every server it talks to
    (cookies are per host, not per port, just as behind one load-balanced name)."""

    agent: str
    cookies: dict[str, str] = field(default_factory=dict)
    #: A replaying attacker: keeps its cookies whatever the server answers.
    frozen: bool = False

    def request(
        self, port: int, method: str, path: str, *, form: dict[str, str] | None = None,
        body: Any = None, headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = {"User-Agent": self.agent, **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        payload: str | None = None
        if form is not None:
            payload = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            payload = json.dumps(body)
            sent["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            connection.close()
        for header in reply.headers.get_all("Set-Cookie") or []:
            if not self.frozen:
                self._store(header)
        return reply

    def _store(self, header: str) -> None:
        first, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        cleared = value in ("", '""') or any(a.lower() == "max-age=0" for a in attributes)
        if cleared:
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = value

    def get(self, port: int, path: str, **headers: str) -> Reply:
        return self.request(port, "GET", path, headers=headers)

    def csrf(self, port: int) -> str:
        return str(self.get(port, "/auth/csrf").json()["csrfToken"])

    def sign_in(self, port: int, who: tuple[str, str], *, json_body: bool = False) -> Reply:
        token = self.csrf(port)
        if json_body:
            return self.request(port, "POST", "/auth/signin", headers=JSON,
                                body={"email": who[0], "password": who[1], "csrfToken": token})
        return self.request(port, "POST", "/auth/signin",
                            form={"email": who[0], "password": who[1], "csrf_token": token})

    def post_json(self, port: int, path: str, body: Any = None) -> Reply:
        headers = {**JSON, "X-CSRF-Token": self.csrf(port)}
        return self.request(port, "POST", path, body=body or {}, headers=headers)

    def me(self, port: int) -> Reply:
        return self.get(port, "/api/me", **JSON)

    def replayer(self) -> Browser:
        """An attacker who copied this browser's cookies and replays them unchanged."""
        return Browser(self.agent, dict(self.cookies), frozen=True)


@dataclass
class LiveServer:
    """The example app, served at ``url``."""

    app: Flask
    url: str

    def __call__(self, path: str = "/") -> str:
        """The absolute URL of ``path`` on this server."""
        return self.url + path


# -- code shown in the docs, written out and imported --------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: A file's code in the docs: a line naming it (`` `app/models.py`: ``), the no-test marker,
#: then its ```python block.
_DOC_FILE = re.compile(
    r"^`(?P<path>[\w/.-]+\.py)`:\n\n<!-- no-test -->\n```python\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


def doc_files(page: str) -> dict[str, str]:
    """``{"app/models.py": code, ...}``: the files a docs page shows, exactly as shown."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return {m["path"]: m["code"] for m in _DOC_FILE.finditer(text)}


@contextmanager
def imported_from(folder: Path, files: dict[str, str], package: str) -> Iterator[None]:
    """Write ``files`` under ``folder`` and make ``package`` importable from there for the
    block; every module of that package imported meanwhile is forgotten afterwards (and any
    of the same name from before is put back), so each test imports its own copy."""
    for name, code in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")

    def ours(name: str) -> bool:
        return name == package or name.startswith(package + ".")

    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


@contextmanager
def kept_logging() -> Iterator[None]:
    """Flask-Migrate's env.py runs ``logging.config.fileConfig``, which disables every
    logger already made: put them back, so later tests still see the package's logs."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    loggers = {name: (lg.disabled, lg.level)
               for name, lg in logging.Logger.manager.loggerDict.items()
               if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, (disabled, level) in loggers.items():
            logger = logging.getLogger(name)
            logger.disabled, logger.level = disabled, level


def flask_db(app: Flask, command: str, folder: Path, **options: Any) -> None:
    """``flask db <command>`` through Flask-Migrate's Python API."""
    import flask_migrate

    with app.app_context(), kept_logging():
        getattr(flask_migrate, command)(directory=str(folder), **options)



# -- API tokens (SPEC §11) -------------------------------------------------------------


def get_tokens(client: Any, who: tuple[str, str] = USER, **headers: str) -> dict[str, Any]:
    """``POST /auth/token`` for ``who``; the pair (asserts a 200)."""
    response = client.post("/auth/token", json={"email": who[0], "password": who[1]},
                           headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def bearer(token: str) -> dict[str, str]:
    """The headers of a JSON request with ``token`` as its bearer credential."""
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

# -- app processes (tests/multiprocess_app.py) ---------------------------------------


def read_port(process: subprocess.Popen[str], log: Path) -> int:
    """The port the server prints once it listens; fail with its log if it does not."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:  # select() refuses descriptors past 1024
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(30)
    line = process.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        process.kill()
        process.wait(timeout=10)
        pytest.fail(f"app process did not start; its log:\n{log.read_text()}")
    return int(line)


def stop_process(process: subprocess.Popen[str]) -> None:
    """Terminate ``process`` (killed if it does not stop within 10 seconds)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def close_cached_apps(apps: list[Flask]) -> None:
    """Teardown of apps made with ``GUARDIAN_SESSION_CACHE``: stop each listener (the
    cache is then never trusted again) and dispose of each engine."""
    for app in apps:
        cache = get_state(app).strategy.cache  # type: ignore[attr-defined]
        if cache is not None:
            cache.close()
        with app.app_context():
            db_of(app).engine.dispose()


def wait_cache_down(cache: Any, timeout: float) -> None:
    """Wait (at most ``timeout`` real seconds) until the session cache ``cache`` stops
    trusting its entries, and check it emptied them."""
    deadline = time.monotonic() + timeout
    while cache.live and time.monotonic() < deadline:
        cache.wait(heard=cache.heard + 1, timeout=0.05)
    assert not cache.live and not cache.entries
