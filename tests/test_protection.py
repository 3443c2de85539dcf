"""Route protection: decorators and GUARDIAN_PROTECTED_ROUTES (segment boundary, longest
match wins); browsers are redirected to sign in, JSON clients get 401/403 JSON."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from helpers import ADMIN, USER, AppFactory, sign_in, sign_in_ok

from flask_guardian import ConfigurationError, roles_required
from flask_guardian.config import RouteRule
from flask_guardian.protection import match_rule
from flask_guardian.signin_view import signin_url

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


# -- GUARDIAN_SIGNIN_VIEW: the application's own sign-in page ----------------------------


def add_login_view(app: Flask) -> None:
    @app.get("/login")
    def login() -> str:
        return "my login page"


@pytest.mark.parametrize("view", ["login", "/login"])
def test_browsers_go_to_the_apps_own_signin_view_with_next(
    make_app: AppFactory, view: str
) -> None:
    app = make_app(GUARDIAN_SIGNIN_VIEW=view,
                   GUARDIAN_PROTECTED_ROUTES={"/open/area": {}})
    add_login_view(app)
    client = app.test_client()
    response = client.get("/dashboard?tab=2")  # login_required
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=%2Fdashboard%3Ftab%3D2"
    response = client.get("/open/area/x")  # a protected route
    assert response.headers["Location"] == "/login?next=%2Fopen%2Farea%2Fx"
    assert client.get("/login").get_data(as_text=True) == "my login page"
    # JSON clients still get 401.
    assert client.get("/dashboard", headers=JSON).status_code == 401


def test_a_signin_path_with_a_query_gets_next_appended(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_SIGNIN_VIEW="/login?via=guard")
    response = app.test_client().get("/dashboard")
    assert response.headers["Location"] == "/login?via=guard&next=%2Fdashboard"


def test_the_default_stays_the_blueprints_page(client: Any) -> None:
    assert client.get("/dashboard").headers["Location"].startswith(
        "/auth/signin?redirectUrl=")


@pytest.mark.parametrize("value", ["//evil.example/login", "https://evil.example/",
                                   "no spaces", "", 42, "/\\evil"])
def test_an_unusable_signin_view_fails_init_app(make_app: AppFactory, value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_app(GUARDIAN_SIGNIN_VIEW=value)
    assert caught.value.key == "GUARDIAN_SIGNIN_VIEW"


def test_a_signin_path_under_a_protected_route_fails_init_app(make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match="protected route") as caught:
        make_app(GUARDIAN_SIGNIN_VIEW="/members/login",
                 GUARDIAN_PROTECTED_ROUTES={"/members": {}})
    assert caught.value.key == "GUARDIAN_SIGNIN_VIEW"


def test_an_endpoint_that_does_not_exist_names_the_key(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_SIGNIN_VIEW="auth.nowhere")
    with app.test_request_context("/dashboard"), pytest.raises(ConfigurationError) as caught:
        signin_url("auth.nowhere", "/dashboard")
    assert caught.value.key == "GUARDIAN_SIGNIN_VIEW"
