"""``current_user``: Flask-Login's lazy proxy. The signed-in user's model instance, loaded
on first use only (a request that does not touch it makes no query for it), otherwise an
anonymous object; Flask-Login's names on both; a Jinja global."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, render_template_string
from helpers import (
    ADMIN,
    READS_PER_REQUEST,
    USER,
    AppFactory,
    QueryCounter,
    guardian_of,
    sign_in_ok,
)

from flask_guardian import AnonymousUser, current_user

PAGE = "<p>{{ greeting }}</p>"
STATUS = ("{% if current_user.is_authenticated %}{{ current_user.email }} "
          "{{ current_user.get_id() }}{% else %}anonymous{% endif %}")


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    app = make_app()

    @app.get("/untouched")
    def untouched() -> str:
        return render_template_string(PAGE, greeting="hi")

    @app.get("/touched")
    def touched() -> str:
        first = current_user.email
        again = current_user.name  # the second use finds it in db.session
        return f"{first} {again}"

    @app.get("/flags")
    def flags() -> dict[str, Any]:
        return {"authenticated": current_user.is_authenticated,
                "anonymous": current_user.is_anonymous,
                "active": current_user.is_active, "id": current_user.get_id()}

    @app.get("/status")
    def status() -> str:
        return render_template_string(STATUS)

    return app


def test_anonymous_has_flask_logins_names(client: Any) -> None:
    assert client.get("/flags").get_json() == {
        "authenticated": False, "anonymous": True, "active": False, "id": None}
    assert client.get("/status").get_data(as_text=True) == "anonymous"


def test_signed_in_is_the_model_instance(app: Flask, client: Any) -> None:
    sign_in_ok(client, ADMIN)
    body = client.get("/flags").get_json()
    assert body["authenticated"] is True and body["anonymous"] is False
    assert body["active"] is True
    with app.test_request_context():
        admin = guardian_of(app).authenticate(*ADMIN)
        assert body["id"] == str(admin.id)
    assert client.get("/touched").get_data(as_text=True) == f"{ADMIN[0]} Ada Admin"
    assert client.get("/status").get_data(as_text=True) == f"{ADMIN[0]} {body['id']}"
    with app.test_request_context():
        assert isinstance(current_user._get_current_object(), AnonymousUser)


def test_no_query_unless_used(app: Flask, client: Any, strategy: str) -> None:
    sign_in_ok(client, USER)
    client.get("/untouched")  # warm: refreshes and caches settle
    client.get("/touched")
    with QueryCounter(app) as untouched:
        assert client.get("/untouched").status_code == 200
    with QueryCounter(app) as touched:
        assert client.get("/touched").get_data(as_text=True) == f"{USER[0]} None"
    reads = READS_PER_REQUEST[strategy]
    assert untouched.count == reads, untouched.statements
    # One primary-key query however often it is used in the request.
    assert touched.count == reads + 1, touched.statements

