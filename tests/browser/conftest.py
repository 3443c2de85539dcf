"""Fixtures for the browser tests: the example app served by werkzeug in a thread on a free
loopback port, and Debian's chromium driven by Playwright's sync API.

No browser is ever downloaded: without /usr/bin/chromium (or Playwright) the tests are
skipped with the reason, and fail instead when ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import LiveServer, strategy_config
from servers import delete_redis_keys
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("GUARDIAN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ON_CI = os.environ.get("CI", "").lower() == "true"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "app.py"

#: Cheap hashes and fixed keys keep the tests fast; everything else is the example's config.
TEST_CONFIG: dict[str, Any] = {
    "SECRET_KEY": "browser-test-secret-key-0123456789",
    "GUARDIAN_JWT_SECRET": "browser-test-jwt-secret-" + "x" * 32,
    "GUARDIAN_ARGON2_MEMORY_COST": 1024,
    "GUARDIAN_ARGON2_TIME_COST": 1,
}


def _load_example() -> Any:
    """Import examples/app.py (not a package) as a module."""
    spec = importlib.util.spec_from_file_location("guardian_example_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"CI=true requires the browser tests to run: {reason}")
    pytest.skip(reason)


def _serve(app: Flask) -> tuple[Any, threading.Thread]:
    """Start ``app`` on 127.0.0.1 with a free port, threaded, in a daemon thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def live_server(strategy: str, tmp_path: Path) -> Iterator[LiveServer]:
    """The example app with ``strategy`` on a fresh SQLite file, demo users seeded."""
    example = _load_example()
    store = strategy_config(strategy)
    app = example.create_app(strategy, f"sqlite:///{tmp_path / 'example.db'}",
                             **TEST_CONFIG, **store)
    server, thread = _serve(app)
    yield LiveServer(app, f"http://127.0.0.1:{server.server_port}")
    server.shutdown()
    thread.join(timeout=10)
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()
    if "GUARDIAN_REDIS_PREFIX" in store:
        delete_redis_keys(store["GUARDIAN_REDIS_PREFIX"])


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, shared by the session (each test opens contexts)."""
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"Playwright for Python is not installed: {exc}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser: Any) -> Iterator[Any]:
    """``new_context(**options)`` opens a browser context (its own cookie jar, like
    another browser or device); all are closed after the test."""
    contexts: list[Any] = []

    def factory(**options: Any) -> Any:
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield factory
    for context in contexts:
        context.close()
