"""The example app as a deployment would run it: it answers only the hosts it is served
under (``TRUSTED_HOSTS``, from ``GUARDIAN_EXAMPLE_TRUSTED_HOSTS``), so an absolute URL
Werkzeug builds from the Host header cannot point elsewhere."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "app.py"
CHEAP = {
    "SECRET_KEY": "example-test-secret-key-0123456789",
    "GUARDIAN_JWT_SECRET": "example-test-jwt-secret-" + "x" * 32,
    "GUARDIAN_ARGON2_MEMORY_COST": 1024,
    "GUARDIAN_ARGON2_TIME_COST": 1,
}


def example_app(tmp_path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("guardian_example_for_hosts", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_app("database", f"sqlite:///{tmp_path / 'example.db'}", **CHEAP)


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost", "localhost:8000"])
def test_example_answers_its_own_hosts(tmp_path: Path, host: str) -> None:
    client = example_app(tmp_path).test_client()
    assert client.get("/", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("path", ["/", "//dashboard", "/auth/signin"])
def test_example_refuses_a_foreign_host_header(tmp_path: Path, path: str) -> None:
    """``//dashboard`` is what Werkzeug's merge-slashes redirect would have turned into
    ``http://evil.example.net/dashboard``."""
    client = example_app(tmp_path).test_client()
    response = client.get(path, headers={"Host": "evil.example.net"})
    assert response.status_code == 400
    assert "evil.example.net" not in response.headers.get("Location", "")


def test_example_hosts_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARDIAN_EXAMPLE_TRUSTED_HOSTS", "app.example.org")
    client = example_app(tmp_path).test_client()
    assert client.get("/", headers={"Host": "app.example.org"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost"}).status_code == 400


def test_the_example_on_sqlite_needs_no_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scripts/run-example`` installs no redis-py unless GUARDIAN_EXAMPLE_STRATEGY=redis:
    the database strategy's example must not point the lockout counters at Redis (which
    needs redis-py), or it stops at start-up on a fresh machine."""
    import builtins

    real_import = builtins.__import__

    def no_redis(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "redis" or name.startswith("redis."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_redis)
    app = example_app(tmp_path)
    assert app.config.get("GUARDIAN_REDIS_URL") is None
    assert app.test_client().get("/").status_code == 200


def test_the_example_danger_zone_asks_for_the_password_again(tmp_path: Path) -> None:
    """The admin route behind ``fresh_login_required``, linked from the dashboard: fresh
    after signing in, sent to re-authenticate 10 minutes later, fresh again after it."""
    start = datetime(2030, 1, 2, 9, 0, tzinfo=UTC)
    client = example_app(tmp_path).test_client()
    with time_machine.travel(start, tick=False) as clock:
        token = client.get("/auth/csrf").get_json()["csrfToken"]
        signed_in = client.post("/auth/signin", data={
            "email": "admin@example.com", "password": "admin-password-123",
            "csrf_token": token})
        assert signed_in.status_code == 303
        assert 'href="/admin/danger-zone"' in client.get("/dashboard").text
        assert client.get("/admin/danger-zone").status_code == 200
        clock.move_to(start + timedelta(minutes=11))
        stale = client.get("/admin/danger-zone")
        assert stale.status_code == 303
        assert stale.headers["Location"] == (
            "/auth/reauthenticate?redirectUrl=%2Fadmin%2Fdanger-zone")
        form = client.get(stale.headers["Location"])
        assert form.status_code == 200 and "admin@example.com" in form.text
        token = client.get("/auth/csrf").get_json()["csrfToken"]
        again = client.post("/auth/reauthenticate", data={
            "password": "admin-password-123", "csrf_token": token,
            "redirectUrl": "/admin/danger-zone"})
        assert again.headers["Location"] == "/admin/danger-zone"
        assert client.get("/admin/danger-zone").status_code == 200


def test_the_example_danger_zone_is_for_admins_only(tmp_path: Path) -> None:
    client = example_app(tmp_path).test_client()
    token = client.get("/auth/csrf").get_json()["csrfToken"]
    client.post("/auth/signin", data={"email": "user@example.com",
                                      "password": "user-password-123", "csrf_token": token})
    assert 'href="/admin/danger-zone"' not in client.get("/dashboard").text
    assert client.get("/admin/danger-zone").status_code == 403
