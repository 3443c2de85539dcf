"""Route protection: decorators and GUARDIAN_PROTECTED_ROUTES (segment boundary, longest
match wins); browsers are redirected to sign in, JSON clients get 401/403 JSON."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from helpers import ADMIN, USER, AppFactory, sign_in, sign_in_ok

from flask_guardian import roles_required
from flask_guardian.config import RouteRule
from flask_guardian.protection import match_rule

JSON = {"Accept": "application/json"}


def test_anonymous_browser_is_redirected_with_redirect_url(client: Any) -> None:
    response = client.get("/dashboard?tab=2")
    assert response.status_code == 303
    assert response.headers["Location"] == "/auth/signin?redirectUrl=%2Fdashboard%3Ftab%3D2"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'name="redirectUrl" value="/dashboard?tab=2"' in page


def test_anonymous_json_gets_401_json(client: Any) -> None:
    response = client.get("/dashboard", headers=JSON)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    response = client.get("/dashboard", json={})
    assert response.status_code == 401


def test_missing_role_is_403(client: Any) -> None:
    sign_in_ok(client, USER)
    assert client.get("/admin").status_code == 403
    response = client.get("/admin", headers=JSON)
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


def test_role_passes(client: Any) -> None:
    sign_in_ok(client, ADMIN)
    assert client.get("/admin").get_data(as_text=True) == "admin area"


def test_any_one_of_several_roles_passes(app: Flask) -> None:
    @app.get("/staff")
    @roles_required("editor", "user")
    def staff() -> str:
        return "staff"

    client = app.test_client()
    sign_in_ok(client, USER)
    assert client.get("/staff").status_code == 200


def test_roles_required_needs_a_role() -> None:
    with pytest.raises(TypeError):
        roles_required()


RULES = {"/open/admin": {"roles": ["admin"]}, "/open/area": {},
         "/open/area/private": {"roles": ["admin"]}}


@pytest.mark.parametrize(
    ("path", "anonymous", "as_user"),
    [
        ("/open/admin", 303, 403),
        ("/open/admin/x", 303, 403),
        ("/open/administrator", 200, 200),  # never a prefix match inside a segment
        ("/open/area", 303, 200),
        ("/open/area/page", 303, 200),
        ("/open/area/private", 303, 403),  # the longest rule wins
        ("/open/area/private/deep", 303, 403),
        ("/open/areas", 200, 200),
        ("/open/elsewhere", 200, 200),
    ],
)
def test_configured_rules(make_app: AppFactory, path: str, anonymous: int, as_user: int) -> None:
    app = make_app(GUARDIAN_PROTECTED_ROUTES=RULES)
    client = app.test_client()
    assert client.get(path).status_code == anonymous
    sign_in_ok(client, USER)
    assert client.get(path).status_code == as_user


def test_configured_rule_json_answers(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_PROTECTED_ROUTES=RULES)
    client = app.test_client()
    assert client.get("/open/area", headers=JSON).status_code == 401


def test_match_rule_collapses_double_slashes() -> None:
    rules = (RouteRule("/admin", frozenset({"admin"})),)
    assert match_rule(rules, "//admin//x") is rules[0]
    assert match_rule(rules, "/admin") is rules[0]
    assert match_rule(rules, "/adminx") is None


def test_signin_after_redirect_returns_to_the_page(client: Any) -> None:
    location = client.get("/dashboard").headers["Location"]
    redirect_url = location.split("redirectUrl=", 1)[1].replace("%2F", "/")
    response = sign_in(client, *USER, redirect_url=redirect_url)
    assert response.headers["Location"] == "/dashboard"


@pytest.mark.parametrize("prefix", ["/", "/auth"])
def test_rules_never_lock_out_the_sign_in_routes(make_app: AppFactory, prefix: str) -> None:
    app = make_app(GUARDIAN_PROTECTED_ROUTES={prefix: {}})
    client = app.test_client()
    assert client.get("/auth/signin").status_code == 200
    assert client.get("/auth/csrf", headers=JSON).status_code == 200
    assert client.get("/auth/session").get_json() is None
    assert client.get("/dashboard").status_code == 303
    sign_in_ok(client, USER)
    assert client.get("/dashboard").status_code == 200
