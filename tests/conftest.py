"""Fixtures: a real app built through the public API, parametrized over both strategies
and over SQLite, PostgreSQL and MariaDB.

``GUARDIAN_TEST_DATABASES`` (default ``sqlite,postgresql,mariadb``) picks the databases.
A server that is not reachable skips its tests with the reason, except with ``CI=true``,
where it fails them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from faultproxy import FaultProxy
from flask import Flask, g, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from flask_guardian import Guardian, login_required, roles_required
from flask_guardian.state import get_state

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
_created: set[str] = set()


def run_database_url(name: str) -> str:
    """The URL of this run's own database on server ``name``."""
    return str(make_url(ADMIN_URLS[name]).set(database=RUN_DATABASE))


ADMIN = ("admin@example.com", "admin-password-123")
USER = ("user@example.com", "user-password-123")
JWT_SECRET = "test-jwt-secret-" + "x" * 32
ON_CI = os.environ.get("CI", "").lower() == "true"

BASE_CONFIG: dict[str, Any] = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-0123456789abcdef",
    "GUARDIAN_JWT_SECRET": JWT_SECRET,
    "GUARDIAN_COOKIE_SECURE": False,
    # Cheap hashes keep the suite fast; the scheme (argon2id) is the production one.
    "GUARDIAN_ARGON2_MEMORY_COST": 1024,
    "GUARDIAN_ARGON2_TIME_COST": 1,
}


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


def strategy_config(strategy: str) -> dict[str, Any]:
    """What an app needs beyond its database to run ``strategy`` in a test: for redis, the
    server (skipped, or failed on CI, when it is not there) and a key prefix of its own."""
    if strategy == "redis":
        return {"GUARDIAN_REDIS_URL": require_redis(), "GUARDIAN_REDIS_PREFIX": redis_prefix()}
    return {}


#: Strategies whose sessions are rows of the SQL registry (``guardian_sessions``).
SQL_REGISTRY = frozenset({"database", "jwt"})
#: Round trips a steady-state signed-in request makes to the session store.
READS_PER_REQUEST = {"database": 1, "jwt": 0, "redis": 1}


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
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


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A clean database of each configured kind."""
    name = request.param
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url = require_server(name)
    reset_database(url)
    return url


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


@pytest.fixture
def make_app(database_url: str, strategy: str) -> Iterator[AppFactory]:
    """``make_app(**config)`` builds an app on a clean database with the strategy."""
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = build_app(database_url, config.pop("SESSION_STRATEGY", strategy), **config)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()
        if app.config.get("SESSION_STRATEGY") == "redis":
            delete_redis_keys(app.config["GUARDIAN_REDIS_PREFIX"])


# -- fault injection: the app reaches the server through a FaultProxy --------------------

#: The server databases the fault tests run on (faults need a network to break).
SERVER_DATABASES = ["postgresql", "mariadb"]


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


@pytest.fixture(params=SERVER_DATABASES)
def proxied_database(request: pytest.FixtureRequest) -> Iterator[ProxiedDatabase]:
    """A clean PostgreSQL or MariaDB database behind a fault proxy (skipped when the
    server is not among ``GUARDIAN_TEST_DATABASES``; a missing server fails on CI)."""
    name = request.param
    if name not in DATABASES:
        pytest.skip(f"GUARDIAN_TEST_DATABASES does not include {name}")
    direct = require_server(name)
    reset_database(direct)
    url = make_url(direct)
    default_port = 5432 if name == "postgresql" else 3306
    with FaultProxy(url.host or "127.0.0.1", url.port or default_port) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        yield ProxiedDatabase(name, proxied.render_as_string(hide_password=False), direct,
                              proxy)


@pytest.fixture
def make_proxied_app(proxied_database: ProxiedDatabase, strategy: str) -> Iterator[AppFactory]:
    """``make_proxied_app(**config)``: an app whose database connections go through the
    fault proxy, with the recommended bounded engine options."""
    apps: list[Flask] = []

    if strategy == "redis":
        pytest.skip("these faults cut the SQL database; the redis strategy's session store "
                    "is Redis, cut the same way in tests/test_redis.py")

    def factory(**config: Any) -> Flask:
        config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(proxied_database.name))
        config.setdefault("GUARDIAN_DB_STATEMENT_TIMEOUT", 1)
        config.setdefault("GUARDIAN_DB_CONNECT_TIMEOUT", 2)
        app = build_app(proxied_database.url, config.pop("SESSION_STRATEGY", strategy),
                        **config)
        apps.append(app)
        return app

    yield factory
    proxied_database.proxy.restore()
    for app in apps:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()
        state = get_state(app)
        reader = getattr(state.strategy, "reader", None)
        if reader is not None:
            reader.close_all()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


def guardian_of(app: Flask) -> Guardian:
    return app.extensions["guardian"]  # type: ignore[no-any-return]


def db_of(app: Flask) -> Any:
    return app.extensions["sqlalchemy"]


#: Statements and Redis commands that write.
WRITE_VERBS = frozenset({
    "INSERT", "UPDATE", "DELETE", "SET", "DEL", "UNLINK", "HSET", "HDEL", "EXPIRE",
    "EXPIREAT", "PEXPIREAT",
})


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
        # The redis strategy's commands count too ("GET ...", "SET ...").
        self.redis = getattr(strategy, "redis", None)

    def _record(self, *args: Any) -> None:
        # before_cursor_execute(conn, cursor, statement, ...) or reader listener(statement)
        self.statements.append(args[2] if len(args) > 1 else args[0])

    def _redis_command(self, *args: Any, **options: Any) -> Any:
        self.statements.append(" ".join(str(a) for a in args[:2]))
        return self._redis_execute(*args, **options)

    def _redis_pipeline(self, *args: Any, **options: Any) -> Any:
        pipeline = self._redis_make_pipeline(*args, **options)
        queue = pipeline.pipeline_execute_command

        def counted(*command: Any, **kwargs: Any) -> Any:
            self.statements.append(" ".join(str(a) for a in command[:2]))
            return queue(*command, **kwargs)

        pipeline.pipeline_execute_command = counted
        return pipeline

    def __enter__(self) -> QueryCounter:
        event.listen(self.engine, "before_cursor_execute", self._record)
        if self.reader is not None:
            self.reader.listen(self._record)
        if self.redis is not None:
            self._redis_execute = self.redis.execute_command
            self._redis_make_pipeline = self.redis.pipeline
            self.redis.execute_command = self._redis_command
            self.redis.pipeline = self._redis_pipeline
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)
        if self.reader is not None:
            self.reader.unlisten(self._record)
        if self.redis is not None:
            del self.redis.execute_command
            del self.redis.pipeline

    @property
    def count(self) -> int:
        return len(self.statements)

    @property
    def writes(self) -> list[str]:
        return [
            s for s in self.statements
            if s.lstrip().split(None, 1)[0].upper() in WRITE_VERBS
        ]


# -- a per-database count of tests, printed at the end --------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    db = (callspec.params.get("database_url") or callspec.params.get("proxied_database")
          ) if callspec else None
    report.user_properties.append(("database", db or "none"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call" and outcome == "passed":
                continue
            db = dict(getattr(report, "user_properties", [])).get("database", "none")
            counts[(db, outcome)] += 1
    if not counts:
        return
    terminalreporter.section("tests per database")
    for db in sorted({d for d, _ in counts}):
        parts = ", ".join(
            f"{counts[(db, o)]} {o}" for o in ("passed", "failed", "skipped", "error")
            if counts[(db, o)]
        )
        label = db if db != "none" else "no database parameter"
        terminalreporter.write_line(f"{label}: {parts}")
