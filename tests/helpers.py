"""Small helpers the test files share: getting a CSRF token, signing in, reading cookies."""

from __future__ import annotations

from typing import Any

from conftest import (
    ADMIN,
    BASE_CONFIG,
    READS_PER_REQUEST,
    USER,
    AppFactory,
    QueryCounter,
    db_of,
    guardian_of,
    strategy_config,
)
from flask import Flask
from werkzeug.http import parse_set_header

from flask_guardian.state import get_state


def csrf_token(client: Any) -> str:
    """A CSRF token for ``client`` (sets the CSRF seed cookie on it)."""
    token = client.get("/auth/csrf").get_json()["csrfToken"]
    assert isinstance(token, str)
    return token


def sign_in(
    client: Any, email: str, password: str, *, json: bool = False, redirect_url: str | None = None,
    **headers: str,
) -> Any:
    """POST /auth/signin as a browser form (or JSON), with a valid CSRF token."""
    token = csrf_token(client)
    data: dict[str, Any] = {"email": email, "password": password, "csrf_token": token}
    if redirect_url is not None:
        data["redirectUrl"] = redirect_url
    if json:
        return client.post("/auth/signin", json=data, headers=headers)
    return client.post("/auth/signin", data=data, headers=headers)


def sign_in_ok(client: Any, who: tuple[str, str] = USER, **headers: str) -> Any:
    response = sign_in(client, *who, **headers)
    assert response.status_code == 303, response.get_data(as_text=True)
    return response


def sign_out(client: Any, **headers: str) -> Any:
    return client.post("/auth/signout", data={"csrf_token": csrf_token(client)}, headers=headers)


def cookie_name(app: Flask) -> str:
    return str(get_state(app).settings.cookie_name)


def session_cookie(client: Any, app: Flask) -> str | None:
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


__all__ = [
    "ADMIN", "BASE_CONFIG", "READS_PER_REQUEST", "USER", "AppFactory", "QueryCounter",
    "db_of", "guardian_of", "parse_set_header", "strategy_config",
]
