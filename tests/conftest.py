"""Fixtures and hooks: a real app built through the public API, parametrized over the
strategies (``GUARDIAN_TEST_STRATEGIES``) and the databases (``GUARDIAN_TEST_DATABASES``).

A test runs on SQLite alone unless it (or its module) is marked ``databases``: a marked
test runs on every database of ``GUARDIAN_TEST_DATABASES`` (default SQLite, PostgreSQL and
MariaDB). When that variable leaves SQLite out, an unmarked test runs on the first
database it names. A server that is not reachable skips its tests with the reason, except
with ``CI=true``, where it fails them. The builders are in ``helpers.py`` and
``servers.py``; no test module imports this one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from faultproxy import FaultProxy
from flask import Flask
from helpers import AppFactory, build_app, close_cached_apps
from servers import (
    DATABASES,
    SERVER_DATABASES,
    STRATEGIES,
    ProxiedDatabase,
    delete_redis_keys,
    drop_run_stores,
    engine_options,
    require_server,
    reset_database,
    unmarked_databases,
)
from sqlalchemy.engine import make_url

from flask_guardian.state import get_state


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``database_url``: every configured database for a test marked
    ``databases``, SQLite alone for any other (first, so test ids keep the database
    before the strategy: ``[sqlite-database]``)."""
    if "database_url" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker("databases") is not None
    names = DATABASES if marked else unmarked_databases()
    metafunc.parametrize("database_url", names, indirect=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop this run's databases and Redis keys (another run's are never touched)."""
    drop_run_stores()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A clean database of the kind the test is parametrized with."""
    name = request.param
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url = require_server(name)
    reset_database(url)
    return url


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    """Each configured strategy (``GUARDIAN_TEST_STRATEGIES``)."""
    return str(request.param)


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
    """An app with the default settings."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> Any:
    """A test client of ``app``."""
    return app.test_client()


# -- a per-database count of tests, printed at the end --------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Note each report's database, for the summary."""
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    db = (callspec.params.get("database_url") or callspec.params.get("proxied_database")
          ) if callspec else None
    report.user_properties.append(("database", db or "none"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many tests ran, passed, failed on each database."""
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


# -- the session cache: apps sharing one PostgreSQL database, listeners stopped after ----


@pytest.fixture
def make_cached_app() -> Iterator[AppFactory]:
    """``make_cached_app(**config)``: a database-strategy app with GUARDIAN_SESSION_CACHE
    on a clean PostgreSQL database; each call is another "process" on the same database
    (and the same Redis prefix, with GUARDIAN_REDIS_URL). Listeners stop at teardown."""
    if "postgresql" not in DATABASES:
        pytest.skip("GUARDIAN_TEST_DATABASES does not include postgresql")
    url = require_server("postgresql")
    reset_database(url)
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        config.setdefault("GUARDIAN_SESSION_CACHE", True)
        app = build_app(config.pop("SQLALCHEMY_DATABASE_URI", url), "database", **config)
        apps.append(app)
        return app

    yield factory
    close_cached_apps(apps)
    for app in apps:
        if app.config.get("GUARDIAN_REDIS_PREFIX"):
            delete_redis_keys(app.config["GUARDIAN_REDIS_PREFIX"])
