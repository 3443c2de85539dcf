"""Jinja: session_user and guardian_session globals, a CSRF helper that does not clash with
Flask-WTF's csrf_token, the ready templates."""

from __future__ import annotations

from typing import Any

from flask import Flask, render_template_string
from helpers import ADMIN, USER, sign_in_ok

TEMPLATE = (
    "{% if session_user %}Welcome, {{ session_user.name or session_user.email }}"
    "{% else %}anonymous{% endif %}|{{ guardian_session.strategy if guardian_session }}"
)


def _add_page(app: Flask) -> None:
    @app.get("/page")
    def page() -> str:
        return render_template_string(TEMPLATE)

    @app.get("/status")
    def status() -> str:
        return render_template_string('{% include "guardian/_auth_status.html" %}')


def test_globals_for_anonymous_and_signed_in(app: Flask, strategy: str) -> None:
    _add_page(app)
    client = app.test_client()
    assert client.get("/page").get_data(as_text=True) == "anonymous|"
    sign_in_ok(client, ADMIN)
    assert client.get("/page").get_data(as_text=True) == f"Welcome, Ada Admin|{strategy}"
    other = app.test_client()
    sign_in_ok(other, USER)
    assert other.get("/page").get_data(as_text=True) == f"Welcome, {USER[0]}|{strategy}"


def test_auth_status_partial(app: Flask) -> None:
    _add_page(app)
    client = app.test_client()
    anonymous = client.get("/status").get_data(as_text=True)
    assert "Sign in" in anonymous and "/auth/signin" in anonymous
    sign_in_ok(client, ADMIN)
    signed_in = client.get("/status").get_data(as_text=True)
    assert "Signed in as" in signed_in and "Ada Admin" in signed_in
    assert 'action="/auth/signout"' in signed_in
    assert 'name="csrf_token"' in signed_in


def test_csrf_helpers_do_not_take_flask_wtf_name(app: Flask) -> None:
    assert "csrf_token" not in app.jinja_env.globals
    assert "guardian_csrf_token" in app.jinja_env.globals
    assert "guardian_csrf_field" in app.jinja_env.globals


def test_csrf_field_from_template_signs_out(app: Flask) -> None:
    @app.get("/form")
    def form() -> str:
        return render_template_string("{{ guardian_csrf_token() }}")

    client = app.test_client()
    sign_in_ok(client)
    token = client.get("/form").get_data(as_text=True)
    assert client.post("/auth/signout", data={"csrf_token": token}).status_code == 303
    assert client.get("/auth/session").get_json() is None


def test_signin_page_is_self_contained(client: Any) -> None:
    import re

    page = client.get("/auth/signin").get_data(as_text=True)
    for field in ("email", "password"):
        tag = re.search(rf'<input[^>]*name="{field}"[^>]*>', page)
        assert tag is not None, field
        input_id = re.search(r'id="([^"]+)"', tag.group(0))
        assert input_id is not None, f"{field} input has no id"
        assert f'for="{input_id.group(1)}"' in page, f"{field} input has no label"
    assert "http://" not in page and "https://" not in page  # no external assets


def test_templates_can_be_overridden(app: Flask, tmp_path: Any) -> None:
    from jinja2 import ChoiceLoader, DictLoader

    app.jinja_loader = ChoiceLoader([  # type: ignore[assignment]
        DictLoader({"guardian/signin.html": "custom sign-in {{ redirect_url }}"}),
        app.jinja_loader,  # type: ignore[list-item]
    ])
    app.jinja_env.loader = app.jinja_loader
    client: Any = app.test_client()
    assert client.get("/auth/signin").get_data(as_text=True) == "custom sign-in /"
