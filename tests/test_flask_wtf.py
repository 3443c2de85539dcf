"""Flask-WTF's ``CSRFProtect(app)`` in the same app: the blueprint keeps working (its
routes are left to flask-guardian's own check, which still refuses a missing or foreign
token), the app's other views stay under Flask-WTF, and an app protects its own views
with ``guardian.csrf_protect`` / ``guardian.check_csrf()``. Not storage-dependent:
SQLite, every strategy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string, request
from flask_wtf.csrf import CSRFProtect, generate_csrf
from helpers import USER, build_app, csrf_token, sign_in, sign_in_ok, sign_out
from servers import delete_redis_keys

from flask_guardian import Guardian

FORM = "<form method=post>{{ guardian_csrf_field() }}<button>Save</button></form>"


@pytest.fixture
def make_wtf_app(tmp_path: Path, strategy: str) -> Iterator[Any]:
    """``make_wtf_app(wtf_first=...)``: the test app with Flask-WTF's CSRFProtect made
    before or after flask-guardian's init_app, and views of the app's own."""
    apps: list[Flask] = []

    def factory(*, wtf_first: bool) -> Flask:
        app = build_app(f"sqlite:///{tmp_path / f'app{len(apps)}.db'}", strategy)
        apps.append(app)
        if wtf_first:  # rebuild the hooks in the other order: Flask-WTF's come first
            guardian_hooks = app.before_request_funcs.pop(None)
            wtf = CSRFProtect(app)
            app.before_request_funcs[None] += guardian_hooks
        else:
            wtf = CSRFProtect(app)
        guardian: Guardian = app.extensions["guardian"]

        @app.route("/own/decorated", methods=["GET", "POST"])
        @guardian.csrf_protect
        def decorated() -> str:
            return render_template_string(FORM) if request.method == "GET" else "saved"

        @app.post("/own/checked")
        @wtf.exempt  # calling check_csrf() itself, the view tells Flask-WTF so
        def checked() -> str:
            guardian.check_csrf()
            return "saved"

        @app.post("/own/wtf")
        def wtf_view() -> str:
            return "saved by flask-wtf's rules"

        @app.get("/own/wtf-token")
        def wtf_token() -> str:
            return generate_csrf()

        return app

    yield factory
    for app in apps:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()
        if app.config.get("SESSION_STRATEGY") == "redis":
            delete_redis_keys(app.config["GUARDIAN_REDIS_PREFIX"])


ORDERS = pytest.mark.parametrize("wtf_first", [True, False], ids=["wtf-first", "wtf-after"])


@ORDERS
def test_the_blueprint_keeps_working_beside_flask_wtf(make_wtf_app: Any, wtf_first: bool) -> None:
    app = make_wtf_app(wtf_first=wtf_first)
    client = app.test_client()
    assert client.get("/auth/signin").status_code == 200
    sign_in_ok(client, USER)  # form post with our token in csrf_token
    assert client.get("/dashboard").status_code == 200
    other = app.test_client()
    assert sign_in(other, *USER, json=True).get_json()["ok"] is True  # JSON, header-less
    response = client.post("/auth/sessions/revoke-others", data={"csrf_token": csrf_token(client)})
    assert response.status_code in (200, 303)
    assert other.get("/dashboard").status_code == 303
    assert sign_out(client).status_code == 303
    assert client.get("/dashboard").status_code == 303


@ORDERS
def test_our_check_still_guards_the_blueprint_beside_flask_wtf(
    make_wtf_app: Any, wtf_first: bool
) -> None:
    app = make_wtf_app(wtf_first=wtf_first)
    client = app.test_client()
    csrf_token(client)  # the seed cookie
    json = {"Accept": "application/json"}
    missing = client.post("/auth/signin", data={"email": USER[0], "password": USER[1]},
                          headers=json)
    wtf_token = client.get("/own/wtf-token").text
    foreign = client.post("/auth/signin", data={"email": USER[0], "password": USER[1],
                                                "csrf_token": wtf_token}, headers=json)
    for response in (missing, foreign):
        assert response.status_code == 403
        assert response.get_json()["error"] == "csrf_failed"  # ours, not Flask-WTF's 400
    assert client.get("/auth/session").get_json() is None


@ORDERS
def test_the_apps_other_views_stay_under_flask_wtf(make_wtf_app: Any, wtf_first: bool) -> None:
    app = make_wtf_app(wtf_first=wtf_first)
    client = app.test_client()
    sign_in_ok(client, USER)
    assert client.post("/own/wtf", data={"csrf_token": csrf_token(client)}).status_code == 400
    token = client.get("/own/wtf-token").text
    assert client.post("/own/wtf", data={"csrf_token": token}).status_code == 200


@ORDERS
@pytest.mark.parametrize("path", ["/own/decorated", "/own/checked"])
def test_apps_own_views_checked_with_our_token(
    make_wtf_app: Any, wtf_first: bool, path: str
) -> None:
    app = make_wtf_app(wtf_first=wtf_first)
    client = app.test_client()
    sign_in_ok(client, USER)
    assert client.post(path).status_code == 403
    assert client.post(path, data={"csrf_token": "forged.token"}).status_code == 403
    wtf_token = client.get("/own/wtf-token").text
    assert client.post(path, data={"csrf_token": wtf_token}).status_code == 403
    assert client.post(path, data={"csrf_token": csrf_token(client)}).text == "saved"
    assert client.post(path, headers={"X-CSRF-Token": csrf_token(client)}).text == "saved"
    assert client.post(path, json={"csrfToken": csrf_token(client)}).text == "saved"
    anonymous = app.test_client()
    assert anonymous.post(path, data={"csrf_token": csrf_token(client)}).status_code == 403
    assert anonymous.post(path, data={"csrf_token": csrf_token(anonymous)}).text == "saved"


def test_decorated_view_renders_our_field_on_get(make_wtf_app: Any) -> None:
    app = make_wtf_app(wtf_first=False)
    client = app.test_client()
    sign_in_ok(client, USER)
    page = client.get("/own/decorated").text
    token = page.split('value="')[1].split('"')[0]
    assert client.post("/own/decorated", data={"csrf_token": token}).text == "saved"


def test_the_flask_wtf_hook_runs_once_and_goes(make_wtf_app: Any) -> None:
    app = make_wtf_app(wtf_first=False)
    before = list(app.before_request_funcs[None])
    app.test_client().get("/")
    after = app.before_request_funcs[None]
    assert len(after) == len(before) - 1
    assert before[0] not in after
    app.test_client().get("/")
    assert app.before_request_funcs[None] == after


def test_without_flask_wtf_the_hook_goes_too(tmp_path: Path, strategy: str) -> None:
    app = build_app(f"sqlite:///{tmp_path / 'plain.db'}", strategy)
    count = len(app.before_request_funcs[None])
    client = app.test_client()
    client.get("/")
    assert len(app.before_request_funcs[None]) == count - 1
    sign_in_ok(client, USER)
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()
    if strategy == "redis":
        delete_redis_keys(app.config["GUARDIAN_REDIS_PREFIX"])
