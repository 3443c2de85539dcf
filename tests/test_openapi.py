"""The OpenAPI 3.1 document of the blueprint's JSON routes (``GET /auth/openapi.json``,
``flask_guardian/openapi.json``, ``docs/openapi.json``) says what the routes really answer.

Each route is driven through the test client in its success and error cases on every
strategy, and every answer is checked against the document: its status is documented for
that path and method, its content type is listed, a JSON body validates against the
documented JSON Schema (2020-12, formats checked), required headers (``Retry-After``,
``Location``) are there; the request bodies of the success cases validate against the
documented request schema. Each route's test then asserts it saw every status the document
lists for it, so a documented answer nobody produces fails too. Completeness: every
blueprint rule that answers JSON is documented and every documented operation is a rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
import time_machine
from flask import Flask
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    build_app,
    cookie_name,
    csrf_token,
    session_cookie,
)
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import flask_guardian
from flask_guardian.openapi import DEFAULT_PREFIX, openapi_document, render_document
from flask_guardian.state import get_state

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "flask_guardian" / "openapi.json"
DOCS_COPY = ROOT / "docs" / "openapi.json"
JSON = {"Accept": "application/json"}
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
#: The base URI the document is registered under for ``$ref`` resolution.
URI = "urn:flask-guardian:openapi"

FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _rfc3339(value: object) -> bool:
    """RFC 3339 date-time with an offset (Python's ``isoformat`` of an aware datetime)."""
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value)
    return "T" in value and parsed.tzinfo is not None


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    """A document and what the tests have seen of it: ``check`` one real answer."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(URI, resource)
        self.seen: set[tuple[str, str, str]] = set()

    def at(self, pointer: str) -> Any:
        node: Any = self.document
        for part in pointer.split("/")[1:]:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def follow(self, pointer: str) -> tuple[Any, str]:
        """The object at ``pointer`` and where it really is, after OpenAPI ``$ref``s."""
        node = self.at(pointer)
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.at(pointer)
        return node, pointer

    def operation(self, method: str, path: str) -> str:
        paths = self.document["paths"]
        assert path in paths, f"{path} is not documented"
        assert method in paths[path], f"{method.upper()} {path} is not documented"
        return _pointer("paths", path, method)

    def validate(self, instance: Any, schema_pointer: str, what: str) -> None:
        validator = Draft202012Validator({"$ref": f"{URI}#{schema_pointer}"},
                                         registry=self.registry, format_checker=FORMATS)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, f"{what}: {json.dumps(instance)[:300]} -- " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors)

    def check_request(self, method: str, path: str, body: Any, mimetype: str) -> None:
        """A request body the tests send as valid matches the documented schema."""
        body_pointer = self.operation(method, path) + "/requestBody"
        request_body, body_pointer = self.follow(body_pointer)
        assert mimetype in request_body["content"], f"{method} {path} takes no {mimetype}"
        self.validate(body, body_pointer + _pointer("content", mimetype, "schema"),
                      f"request {method.upper()} {path}")

    def check(self, response: Any, method: str, path: str) -> Any:
        """``response`` (to ``method`` on the documented ``path``) is as documented;
        returns its JSON body (or None)."""
        operation = self.operation(method, path)
        status = str(response.status_code)
        what = f"{method.upper()} {path} -> {status}"
        documented = self.at(operation)["responses"]
        assert status in documented, (
            f"{what} is not documented: {response.get_data(as_text=True)[:300]}")
        answer, answer_pointer = self.follow(operation + _pointer("responses", status))
        for name, header in answer.get("headers", {}).items():
            header, header_pointer = self.follow(answer_pointer + _pointer("headers", name))
            value = response.headers.get(name)
            if header.get("required"):
                assert value is not None, f"{what}: no {name} header"
            if value is not None and name != "Set-Cookie":
                self.validate(value, header_pointer + "/schema", f"{what} header {name}")
        content = answer.get("content", {})
        body = None
        if content or not 300 <= response.status_code < 400:
            assert response.mimetype in content, f"{what}: {response.mimetype} not documented"
        if response.mimetype == "application/json":
            body = response.get_json()
            self.validate(body, answer_pointer + _pointer(
                "content", "application/json", "schema"), what)
        self.seen.add((method, path, status))
        return body

    def assert_all_seen(self, method: str, path: str) -> None:
        """Every status documented for the operation was produced by the test."""
        documented = set(self.at(self.operation(method, path))["responses"])
        seen = {s for m, p, s in self.seen if (m, p) == (method, path)}
        assert seen == documented, f"{method.upper()} {path}: documented {sorted(documented)}, " \
                                   f"exercised {sorted(seen)}"


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    """An app whose sign-in lockout is reached quickly."""
    return make_app(GUARDIAN_MAX_LOGIN_ATTEMPTS=2)


@pytest.fixture
def contract(app: Flask) -> Contract:
    """The document as ``app`` serves it (checked against its own schema on the way)."""
    response = app.test_client().get("/auth/openapi.json")
    served = Contract(response.get_json())
    served.check(response, "get", "/auth/openapi.json")
    return served


def signed_in(app: Flask, who: tuple[str, str] = USER, *, prefix: str = "/auth",
              **headers: str) -> tuple[Any, str]:
    """A client signed in through the JSON route, and its CSRF token."""
    client = app.test_client()
    token = client.get(f"{prefix}/csrf").get_json()["csrfToken"]
    response = client.post(f"{prefix}/signin", json={"email": who[0], "password": who[1],
                                                     "csrfToken": token}, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return client, response.get_json()["csrfToken"]


def current_id(client: Any) -> str:
    """The public id of ``client``'s session, from its device list."""
    listed = client.get("/auth/sessions", headers=JSON).get_json()["sessions"]
    return str(next(s["id"] for s in listed if s["current"]))


@contextmanager
def failing(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> Iterator[None]:
    """``target.name`` fails as an unreachable store does (a refused connection)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("connection refused (test)")

    with monkeypatch.context() as patch:
        patch.setattr(target, name, refuse)
        yield


# -- the document itself ------------------------------------------------------------------


def packaged_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(PACKAGED.read_text("utf-8"))
    return document


def test_the_document_is_valid_openapi_3_1() -> None:
    document = packaged_document()
    assert document["openapi"].startswith("3.1.")
    validate_openapi(document)  # raises with the first error


def test_the_validator_refuses_a_broken_document() -> None:
    broken = packaged_document()
    broken["paths"]["/auth/session"]["get"]["responses"]["200"]["content"][
        "application/json"]["description"] = "not allowed in a media type object"
    with pytest.raises(Exception, match="description"):
        validate_openapi(broken)


def test_docs_copy_is_the_packaged_file() -> None:
    # docs/openapi.json is for readers and generators; the package serves its own copy.
    assert DOCS_COPY.read_bytes() == PACKAGED.read_bytes(), (
        "docs/openapi.json differs: cp flask_guardian/openapi.json docs/openapi.json")


def test_the_document_names_the_package_version() -> None:
    assert packaged_document()["info"]["version"] == flask_guardian.__version__


def test_every_documented_path_starts_with_the_default_prefix() -> None:
    # render_document swaps this prefix for the app's.
    for path in packaged_document()["paths"]:
        assert path.startswith(DEFAULT_PREFIX + "/"), path


def test_every_schema_reference_resolves() -> None:
    document = packaged_document()
    contract = Contract(document)

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = list(refs(document))
    assert found
    for ref in found:
        assert ref.startswith("#/"), ref
        contract.at(ref[1:])  # raises KeyError when it points nowhere


# -- the route ----------------------------------------------------------------------------


def test_the_served_document_carries_the_apps_prefix_and_cookie_name(
    make_app: AppFactory,
) -> None:
    app = make_app(GUARDIAN_URL_PREFIX="/account/", GUARDIAN_COOKIE_NAME="sid")
    client = app.test_client()
    assert client.get("/auth/openapi.json").status_code == 404
    response = client.get("/account/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = response.get_json()
    packaged = packaged_document()
    assert sorted(served["paths"]) == sorted(
        "/account" + p.removeprefix(DEFAULT_PREFIX) for p in packaged["paths"])
    assert served["components"]["securitySchemes"]["sessionCookie"]["name"] == "sid"
    assert served["components"]["schemas"] == packaged["components"]["schemas"]
    validate_openapi(served)


def test_the_default_app_is_served_the_packaged_document_with_its_cookie_name(
    app: Flask,
) -> None:
    served = app.test_client().get("/auth/openapi.json").get_json()
    packaged = packaged_document()
    packaged["components"]["securitySchemes"]["sessionCookie"]["name"] = cookie_name(app)
    assert served == packaged


def test_openapi_document_gives_a_copy_the_caller_may_change(app: Flask) -> None:
    with app.app_context():
        first = openapi_document()
        first["paths"].clear()
        again = openapi_document(app)
    assert again["paths"] and again == render_document("/auth", cookie_name(app))
    assert flask_guardian.openapi_document is openapi_document


# -- completeness: every JSON route is documented, every documented one exists -------------


def _template(rule: str) -> str:
    """Werkzeug's ``/x/<session_id>/y`` as OpenAPI's ``/x/{session_id}/y``."""
    out, rest = "", rule
    while "<" in rest:
        head, _, tail = rest.partition("<")
        variable, _, rest = tail.partition(">")
        out += head + "{" + variable.rpartition(":")[2] + "}"
    return out + rest


def answers_json(app: Flask, method: str, rule: str, prefix: str) -> bool:
    """Whether ``method`` on ``rule`` answers JSON to a JSON client, signed in or anonymous
    (an error in JSON counts: a route that can answer JSON must say how)."""
    path = rule.replace("<session_id>", "AAAAAAAAAAAAAAAAAAAAAA").replace(
        "<browser_id>", "AAAAAAAAAAAAAAAAAAAAAA")
    assert "<" not in path, f"{rule}: give its variable a sample value here"
    anonymous = app.test_client()
    clients = [signed_in(app, prefix=prefix),
               (anonymous, anonymous.get(f"{prefix}/csrf").get_json()["csrfToken"])]
    for client, token in clients:
        response = client.open(path, method=method.upper(),
                               json={} if method != "get" else None,
                               headers={**JSON, "X-CSRF-Token": token})
        assert response.status_code < 500, (rule, method, response.status_code)
        if response.mimetype == "application/json":
            return True
    return False


@pytest.mark.parametrize("prefix", ["/auth", "/account"])
def test_every_json_route_is_documented_and_every_documented_route_exists(
    database_url: str, prefix: str,
) -> None:
    # The blueprint's rules do not depend on the strategy: one is enough.
    app = build_app(database_url, "database", GUARDIAN_URL_PREFIX=prefix)
    document = app.test_client().get(f"{prefix}/openapi.json").get_json()
    documented = {(method, path) for path, item in document["paths"].items()
                  for method in item if method in HTTP_METHODS}
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("guardian.")]
    assert rules
    answering_json = set()
    html_only = set()
    for rule in rules:
        for method in sorted(m.lower() for m in (rule.methods or ()) - {"HEAD", "OPTIONS"}):
            target = answering_json if answers_json(app, method, rule.rule, prefix) else html_only
            target.add((method, _template(rule.rule)))
    assert documented == answering_json
    # The two HTML pages (sign-in form, sign-out confirmation) are the only others.
    assert html_only == {("get", f"{prefix}/signin"), ("get", f"{prefix}/signout")}


# -- every route, its success and error answers, on every strategy -------------------------


def test_signin_answers_as_documented(
    app: Flask, contract: Contract, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = "/auth/signin"
    client = app.test_client()
    token = contract.check(client.get("/auth/csrf", headers=JSON), "get", "/auth/csrf")[
        "csrfToken"]
    body = {"email": USER[0], "password": USER[1], "csrfToken": token,
            "redirectUrl": "/dashboard", "remember": True}
    contract.check_request("post", path, body, "application/json")
    answer = contract.check(client.post(path, json=body), "post", path)
    assert answer["ok"] is True and answer["session"]["user"]["email"] == USER[0]
    assert answer["redirectUrl"] == "/dashboard"

    login = {"login": ADMIN[0], "password": ADMIN[1]}  # the login field, token as header
    contract.check_request("post", path, login, "application/json")
    browser = app.test_client()
    answer = contract.check(browser.post(path, json=login, headers={
        "X-CSRF-Token": csrf_token(browser)}), "post", path)
    assert answer["session"]["user"]["role"] == "admin"

    form = app.test_client()
    fields = {"email": USER[0], "password": USER[1], "csrf_token": csrf_token(form),
              "remember": "on"}
    contract.check_request("post", path, fields, "application/x-www-form-urlencoded")
    response = form.post(path, data=fields)
    contract.check(response, "post", path)
    assert response.status_code == 303

    wrong = {"email": USER[0], "password": "wrong password", "csrfToken": csrf_token(client)}
    assert contract.check(client.post(path, json=wrong), "post", path) == {
        "ok": False, "error": "invalid_credentials"}
    response = form.post(path, data={**wrong, "csrf_token": csrf_token(form)})
    assert contract.check(response, "post", path) is None and response.status_code == 401

    for bad in ([USER[0]], {"email": 1, "password": "x", "csrfToken": csrf_token(client)},
                {"email": USER[0], "password": USER[1], "remember": "yes",
                 "csrfToken": csrf_token(client)}):
        assert contract.check(client.post(path, json=bad), "post", path)["error"] == (
            "bad_request")
    no_token = {"email": USER[0], "password": USER[1]}
    assert contract.check(app.test_client().post(path, json=no_token), "post", path)[
        "error"] == "csrf_failed"

    locked = {"email": "nobody@example.com", "password": "guess", "csrfToken": token}
    statuses = []
    for _ in range(3):
        locked["csrfToken"] = csrf_token(client)
        response = client.post(path, json=locked)
        contract.check(response, "post", path)
        statuses.append(response.status_code)
    assert statuses == [401, 401, 429]
    response = form.post(path, data={**locked, "csrf_token": csrf_token(form)})
    contract.check(response, "post", path)
    assert response.status_code == 429 and response.mimetype == "text/html"

    with failing(monkeypatch, get_state(app).throttle, "hit"):
        body["csrfToken"] = csrf_token(client)
        assert contract.check(client.post(path, json=body), "post", path)["error"] == (
            "storage_unavailable")
    contract.assert_all_seen("post", path)


def test_signout_answers_as_documented(
    app: Flask, contract: Contract, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = "/auth/signout"
    client, token = signed_in(app)
    with failing(monkeypatch, get_state(app).strategy, "revoke"):
        assert contract.check(client.post(path, json={"csrfToken": token}), "post", path)[
            "error"] == "storage_unavailable"

    client, token = signed_in(app)
    assert contract.check(client.post(path, json={}, headers=JSON), "post", path)[
        "error"] == "csrf_failed"
    assert contract.check(client.post(path, json=[token]), "post", path)[
        "error"] == "bad_request"
    body = {"csrfToken": token, "redirectUrl": "/dashboard"}
    contract.check_request("post", path, body, "application/json")
    assert contract.check(client.post(path, json=body), "post", path) == {
        "ok": True, "redirectUrl": "/dashboard"}
    assert session_cookie(client, app) is None
    # Nobody signed in: the same answer, no token needed.
    assert contract.check(client.post(path, json={}), "post", path)["ok"] is True

    form, _ = signed_in(app)
    response = form.post(path, data={"csrf_token": csrf_token(form)})
    contract.check(response, "post", path)
    assert response.status_code == 303
    contract.assert_all_seen("post", path)


def test_session_csrf_and_the_document_answer_as_documented(
    app: Flask, contract: Contract, monkeypatch: pytest.MonkeyPatch,
) -> None:
    anonymous = app.test_client()
    assert contract.check(anonymous.get("/auth/session", headers=JSON), "get",
                          "/auth/session") is None
    client, _ = signed_in(app, ADMIN)
    session = contract.check(client.get("/auth/session", headers=JSON), "get", "/auth/session")
    assert session["user"]["name"] == "Ada Admin"
    user_client, _ = signed_in(app, USER)  # name is null
    assert contract.check(user_client.get("/auth/session", headers=JSON), "get",
                          "/auth/session")["user"]["name"] is None
    for who in (anonymous, client):
        contract.check(who.get("/auth/csrf", headers=JSON), "get", "/auth/csrf")

    contract.check(client.get("/auth/openapi.json"), "get", "/auth/openapi.json")
    routes = ("/auth/session", "/auth/csrf", "/auth/openapi.json")
    with failing(monkeypatch, get_state(app).strategy, "load"):  # the session lookup fails
        for route in routes:
            assert contract.check(client.get(route, headers=JSON), "get", route)[
                "error"] == "storage_unavailable"
    for route in routes:
        contract.assert_all_seen("get", route)


def test_device_list_answers_as_documented(
    app: Flask, contract: Contract, strategy: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = "/auth/sessions"
    anonymous = app.test_client()
    assert contract.check(anonymous.get(path, headers=JSON), "get", path)[
        "error"] == "unauthorized"
    response = anonymous.get(path)  # a browser: sent to sign in
    contract.check(response, "get", path)
    assert response.status_code == 303

    client, _ = signed_in(app, headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/130.0"})
    signed_in(app)  # a second session, from no known browser
    listed = contract.check(client.get(path, headers=JSON), "get", path)["sessions"]
    assert len(listed) == 2 and listed[0]["current"] is True
    assert contract.check(client.get(path), "get", path) is None  # the HTML page, 200
    if strategy == "jwt":  # the bearer token alone, as an API client sends it
        bearer = app.test_client()
        token = session_cookie(client, app)
        listed = contract.check(bearer.get(path, headers={
            **JSON, "Authorization": f"Bearer {token}"}), "get", path)["sessions"]
        assert len(listed) == 2

    with failing(monkeypatch, get_state(app).strategy, "list"):
        assert contract.check(client.get(path, headers=JSON), "get", path)[
            "error"] == "storage_unavailable"
    contract.assert_all_seen("get", path)


def test_revoking_one_session_answers_as_documented(
    app: Flask, contract: Contract, monkeypatch: pytest.MonkeyPatch,
) -> None:
    template = "/auth/sessions/{session_id}/revoke"

    def revoke(client: Any, session_id: str, **kwargs: Any) -> Any:
        return contract.check(client.post(f"/auth/sessions/{session_id}/revoke", **kwargs),
                              "post", template)

    client, token = signed_in(app)
    other, _ = signed_in(app)
    other_id = current_id(other)
    assert revoke(app.test_client(), other_id, json={})["error"] == "unauthorized"
    assert revoke(client, other_id, json={})["error"] == "csrf_failed"
    assert revoke(client, other_id, json="text")["error"] == "bad_request"
    assert revoke(client, "AAAAAAAAAAAAAAAAAAAAAA", json={"csrfToken": token})[
        "error"] == "not_found"
    assert revoke(client, "x' OR '1'='1", json={"csrfToken": token})["error"] == "not_found"
    with failing(monkeypatch, get_state(app).strategy, "revoke"):
        assert revoke(client, other_id, json={"csrfToken": token})[
            "error"] == "storage_unavailable"
    contract.check_request("post", template, {"csrfToken": token}, "application/json")
    assert revoke(client, other_id, json={"csrfToken": token}) == {"ok": True}
    assert other.get("/auth/session").get_json() is None

    third, _ = signed_in(app)
    third_id = current_id(third)
    response = client.post(f"/auth/sessions/{third_id}/revoke",
                           data={"csrf_token": csrf_token(client)})
    contract.check(response, "post", template)
    assert response.status_code == 303
    assert third.get("/auth/session").get_json() is None
    contract.assert_all_seen("post", template)


def test_signing_out_everywhere_else_answers_as_documented(
    app: Flask, contract: Contract, strategy: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = "/auth/sessions/revoke-others"
    client, token = signed_in(app)
    others = [signed_in(app)[0] for _ in range(2)]
    assert contract.check(app.test_client().post(path, json={}), "post", path)[
        "error"] == "unauthorized"
    assert contract.check(client.post(path, json={}), "post", path)["error"] == "csrf_failed"
    assert contract.check(client.post(path, json=1), "post", path)["error"] == "bad_request"
    with failing(monkeypatch, get_state(app).strategy, "revoke_user"):
        assert contract.check(client.post(path, json={"csrfToken": token}), "post", path)[
            "error"] == "storage_unavailable"
    assert contract.check(client.post(path, json={"csrfToken": token}), "post", path) == {
        "ok": True, "revoked": 2}
    assert [o.get("/auth/session").get_json() for o in others] == [None, None]

    response = client.post(path, data={"csrf_token": csrf_token(client)})
    contract.check(response, "post", path)
    assert response.status_code == 303
    if strategy == "jwt":  # a bearer token carries no ambient credential: no CSRF token
        bearer = app.test_client()
        token = session_cookie(client, app)
        assert contract.check(bearer.post(path, json={}, headers={
            "Authorization": f"Bearer {token}"}), "post", path) == {"ok": True, "revoked": 0}
    contract.assert_all_seen("post", path)


def test_reauthentication_answers_as_documented(
    app: Flask, contract: Contract, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = "/auth/reauthenticate"
    anonymous = app.test_client()
    assert contract.check(anonymous.get(path, headers=JSON), "get", path)[
        "error"] == "unauthorized"
    assert contract.check(anonymous.get(path), "get", path) is None  # 303 to sign in
    client, token = signed_in(app, ADMIN)
    assert contract.check(client.get(path), "get", path) is None  # the form
    contract.assert_all_seen("get", path)

    assert contract.check(anonymous.post(path, json={"password": ADMIN[1]}), "post", path)[
        "error"] == "unauthorized"
    assert contract.check(client.post(path, json={"password": ADMIN[1]}), "post", path)[
        "error"] == "csrf_failed"
    assert contract.check(client.post(path, json={"password": 1, "csrfToken": token}),
                          "post", path)["error"] == "bad_request"
    body = {"password": ADMIN[1], "csrfToken": token, "redirectUrl": "/admin"}
    contract.check_request("post", path, body, "application/json")
    with failing(monkeypatch, get_state(app).throttle, "hit"):
        assert contract.check(client.post(path, json=body), "post", path)[
            "error"] == "storage_unavailable"
    answer = contract.check(client.post(path, json=body), "post", path)
    assert answer["ok"] is True and answer["redirectUrl"] == "/admin"
    token = answer["csrfToken"]  # bound to the rotated session
    response = client.post(path, data={"password": ADMIN[1], "csrf_token": token})
    contract.check(response, "post", path)
    assert response.status_code == 303

    token = csrf_token(client)
    statuses = []
    for _ in range(3):
        response = client.post(path, json={"password": "wrong", "csrfToken": token})
        contract.check(response, "post", path)
        statuses.append(response.status_code)
    assert statuses == [401, 401, 429]
    contract.assert_all_seen("post", path)


def test_api_token_routes_answer_as_documented(
    app: Flask, contract: Contract, monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = app.test_client()
    issue, refresh, revoke = "/auth/token", "/auth/token/refresh", "/auth/token/revoke"

    body = {"email": USER[0], "password": USER[1]}
    contract.check_request("post", issue, body, "application/json")
    pair = contract.check(client.post(issue, json=body), "post", issue)
    login = {"login": ADMIN[0], "password": ADMIN[1]}
    contract.check_request("post", issue, login, "application/json")
    contract.check(client.post(issue, json=login), "post", issue)
    for bad in ({"email": USER[0]}, {"email": "", "password": "x"}, [body]):
        assert contract.check(client.post(issue, json=bad), "post", issue)[
            "error"] == "invalid_request"
    assert contract.check(client.post(issue, data=body), "post", issue)[
        "error"] == "invalid_request"  # a form body
    statuses = []
    for _ in range(3):
        response = client.post(issue, json={"email": "nobody@example.com", "password": "x"})
        contract.check(response, "post", issue)
        statuses.append(response.status_code)
    assert statuses == [401, 401, 429]
    with failing(monkeypatch, get_state(app).throttle, "hit"):
        assert contract.check(client.post(issue, json=body), "post", issue)[
            "error"] == "storage_unavailable"
    contract.assert_all_seen("post", issue)

    # The access token on the JSON routes (no cookie, no CSRF token).
    bearer = {**JSON, "Authorization": f"Bearer {pair['accessToken']}"}
    assert contract.check(client.get("/auth/session", headers=bearer), "get",
                          "/auth/session")["user"]["email"] == USER[0]
    assert contract.check(client.get("/auth/sessions", headers=bearer), "get",
                          "/auth/sessions")["sessions"]

    tokens = get_state(app).api_tokens
    spend = {"refreshToken": pair["refreshToken"]}
    contract.check_request("post", refresh, spend, "application/json")
    with failing(monkeypatch, tokens, "refresh"):
        assert contract.check(client.post(refresh, json=spend), "post", refresh)[
            "error"] == "storage_unavailable"
    pair = contract.check(client.post(refresh, json=spend), "post", refresh)
    for bad in ({}, {"refreshToken": ""}, {"refreshToken": "x" * 300}, {"refreshToken": 7}):
        assert contract.check(client.post(refresh, json=bad), "post", refresh)[
            "error"] == "invalid_request"
    assert contract.check(client.post(refresh, json={"refreshToken": "A" * 43}), "post",
                          refresh)["error"] == "invalid_grant"
    contract.assert_all_seen("post", refresh)

    spend = {"refreshToken": pair["refreshToken"]}
    contract.check_request("post", revoke, spend, "application/json")
    contract.check_request("post", revoke, {"token": "A" * 43}, "application/json")
    with failing(monkeypatch, tokens, "revoke"):
        assert contract.check(client.post(revoke, json=spend), "post", revoke)[
            "error"] == "storage_unavailable"
    assert contract.check(client.post(revoke, json={}), "post", revoke)[
        "error"] == "invalid_request"
    assert contract.check(client.post(revoke, json=spend), "post", revoke) == {"ok": True}
    assert contract.check(client.post(revoke, json={"token": "A" * 43}), "post", revoke) == {
        "ok": True}  # unknown: no error (RFC 7009)
    contract.assert_all_seen("post", revoke)

    # A two-factor user: the password alone, then a wrong code (both 401), then the code.
    owner, _ = signed_in(app, ADMIN)
    secret = owner.post("/auth/2fa/setup", json={"csrfToken": csrf_token(owner)}).get_json()[
        "secret"]
    assert owner.post("/auth/2fa/enable", json={"code": pyotp.TOTP(secret).now(),
                                                "csrfToken": csrf_token(owner)}).status_code == 200
    alone = {"email": ADMIN[0], "password": ADMIN[1]}
    assert contract.check(client.post(issue, json=alone), "post", issue)[
        "error"] == "two_factor_required"
    wrong = {**alone, "code": "12345x"}
    contract.check_request("post", issue, wrong, "application/json")
    assert contract.check(client.post(issue, json=wrong), "post", issue)[
        "error"] == "invalid_code"


def test_two_factor_enrolment_answers_as_documented(
    app: Flask, contract: Contract, monkeypatch: pytest.MonkeyPatch,
) -> None:
    page, setup, enable = "/auth/2fa", "/auth/2fa/setup", "/auth/2fa/enable"
    disable, codes = "/auth/2fa/disable", "/auth/2fa/recovery-codes"
    posts = (setup, enable, disable, codes)
    anonymous = app.test_client()
    assert contract.check(anonymous.get(page, headers=JSON), "get", page)[
        "error"] == "unauthorized"
    contract.check(anonymous.get(page), "get", page)  # 303 to sign in
    for path in posts:
        assert contract.check(anonymous.post(path, json={}), "post", path)[
            "error"] == "unauthorized"

    client, _ = signed_in(app, ADMIN)

    def post(path: str, **fields: Any) -> Any:
        return contract.check(client.post(path, json={**fields, "csrfToken": csrf_token(
            client)}), "post", path)

    assert contract.check(client.get(page, headers=JSON), "get", page) == {
        "enabled": False, "pending": False, "recoveryCodesLeft": 0}
    assert contract.check(client.get(page), "get", page) is None  # the HTML page
    for path in posts:
        assert contract.check(client.post(path, json={}), "post", path)[
            "error"] == "csrf_failed"
        assert contract.check(client.post(path, json=[1], headers={
            "X-CSRF-Token": csrf_token(client)}), "post", path)["error"] == "bad_request"
    assert post(enable, code="123456")["error"] == "two_factor_state"  # no setup yet
    assert post(disable, password=ADMIN[1])["error"] == "two_factor_state"  # not on
    assert post(codes, password=ADMIN[1])["error"] == "two_factor_state"
    response = client.post(setup, data={"csrf_token": csrf_token(client)})  # a form
    contract.check(response, "post", setup)
    assert response.status_code == 303
    secret = post(setup)["secret"]
    assert post(enable, code="000000" if pyotp.TOTP(secret).now() != "000000" else "111111")[
        "error"] == "invalid_code"
    contract.check_request("post", enable, {"code": pyotp.TOTP(secret).now()},
                           "application/json")
    assert len(post(enable, code=pyotp.TOTP(secret).now())["recoveryCodes"]) == 10
    assert post(setup)["error"] == "two_factor_state"  # already on
    assert contract.check(client.get(page, headers=JSON), "get", page)["enabled"] is True
    contract.check_request("post", codes, {"password": ADMIN[1]}, "application/json")
    assert len(post(codes, password=ADMIN[1])["recoveryCodes"]) == 10
    response = client.post(codes, data={"password": ADMIN[1],
                                        "csrf_token": csrf_token(client)})
    assert contract.check(response, "post", codes) is None and response.status_code == 200
    assert post(disable, password="wrong")["error"] == "invalid_credentials"
    with failing(monkeypatch, get_state(app).strategy, "load"):
        for path in (page, *posts):
            method = "get" if path == page else "post"
            response = client.open(path, method=method.upper(), headers=JSON)
            assert contract.check(response, method, path)["error"] == "storage_unavailable"
    assert post(disable, password=ADMIN[1]) == {"ok": True}
    secret = post(setup)["secret"]
    post(enable, code=pyotp.TOTP(secret).now())
    response = client.post(disable, data={"password": ADMIN[1],
                                          "csrf_token": csrf_token(client)})
    contract.check(response, "post", disable)
    assert response.status_code == 303
    secret = post(setup)["secret"]
    post(enable, code=pyotp.TOTP(secret).now())
    # The sign-in lockout (GUARDIAN_MAX_LOGIN_ATTEMPTS = 2) reached by wrong passwords.
    assert [post(codes, password="wrong")["error"] for _ in range(3)] == [
        "invalid_credentials", "invalid_credentials", "too_many_attempts"]
    assert post(disable, password=ADMIN[1])["error"] == "too_many_attempts"

    contract.assert_all_seen("get", page)
    for path in posts:
        contract.assert_all_seen("post", path)


def test_the_code_step_of_sign_in_answers_as_documented(
    app: Flask, contract: Contract, monkeypatch: pytest.MonkeyPatch,
) -> None:
    verify, signin = "/auth/2fa/verify", "/auth/signin"
    trusted = "/auth/sessions/trusted/{browser_id}/revoke"
    # USER turns 2FA on two minutes ago, so the TOTP code of now is a new one.
    with time_machine.travel(datetime.now(UTC) - timedelta(minutes=2), tick=False):
        owner, _ = signed_in(app, USER)
        secret = owner.post("/auth/2fa/setup", json={"csrfToken": csrf_token(owner)}
                            ).get_json()["secret"]
        recovery = owner.post("/auth/2fa/enable", json={
            "code": pyotp.TOTP(secret).now(), "csrfToken": csrf_token(owner)}).get_json()[
            "recoveryCodes"]

    def password_step(client: Any, *, form: bool = False) -> Any:
        fields = {"email": USER[0], "password": USER[1]}
        if form:
            response = client.post(signin, data={**fields, "csrf_token": csrf_token(client)})
        else:
            response = client.post(signin, json={**fields, "csrfToken": csrf_token(client)})
        contract.check(response, "post", signin)
        assert response.status_code == 200
        return response

    nobody = app.test_client()
    assert contract.check(nobody.get(verify, headers=JSON), "get", verify) == {
        "pending": False}
    contract.check(nobody.get(verify), "get", verify)  # 303 to sign in
    assert contract.check(nobody.post(verify, json={"code": "123456", "csrfToken": csrf_token(
        nobody)}), "post", verify)["error"] == "no_pending_sign_in"
    response = nobody.post(verify, data={"code": "123456", "csrf_token": csrf_token(nobody)})
    contract.check(response, "post", verify)  # the sign-in form again
    assert response.status_code == 401 and response.mimetype == "text/html"

    first = app.test_client()
    assert password_step(first).get_json() == {"ok": False, "error": "two_factor_required"}
    assert contract.check(first.get(verify, headers=JSON), "get", verify) == {"pending": True}
    assert contract.check(first.get(verify), "get", verify) is None  # the code form
    assert contract.check(first.post(verify, json={"code": "1"}), "post", verify)[
        "error"] == "csrf_failed"
    for bad in ([1], {"code": "123456", "trust": "yes", "csrfToken": csrf_token(first)}):
        assert contract.check(first.post(verify, json=bad, headers={
            "X-CSRF-Token": csrf_token(first)}), "post", verify)["error"] == "bad_request"
    fields = {"code": pyotp.TOTP(secret).now(), "trust": "on", "csrf_token": csrf_token(first)}
    contract.check_request("post", verify, fields, "application/x-www-form-urlencoded")
    response = first.post(verify, data=fields)
    contract.check(response, "post", verify)
    assert response.status_code == 303

    second = app.test_client()
    password_step(second)
    body = {"code": recovery[0], "trust": True, "csrfToken": csrf_token(second)}
    contract.check_request("post", verify, body, "application/json")
    answer = contract.check(second.post(verify, json=body), "post", verify)
    assert answer["recoveryCodesLeft"] == 9

    third = app.test_client()
    assert password_step(third, form=True).mimetype == "text/html"  # the code form
    response = third.post(verify, data={"code": recovery[1], "csrf_token": csrf_token(third)})
    assert contract.check(response, "post", verify) is None and response.status_code == 200

    # The device list shows the two trusted browsers; each can be revoked.
    listed = contract.check(second.get("/auth/sessions", headers=JSON), "get",
                            "/auth/sessions")["trustedBrowsers"]
    assert len(listed) == 2
    ids = [b["id"] for b in listed]

    def revoke(client: Any, browser_id: str, **kwargs: Any) -> Any:
        return contract.check(client.post(f"/auth/sessions/trusted/{browser_id}/revoke",
                                          **kwargs), "post", trusted)

    assert revoke(nobody, ids[0], json={})["error"] == "unauthorized"
    assert revoke(second, ids[0], json={})["error"] == "csrf_failed"
    assert revoke(second, ids[0], json=[1])["error"] == "bad_request"
    with failing(monkeypatch, get_state(app).strategy, "load"):
        assert revoke(second, ids[0], json={"csrfToken": "x"})["error"] == (
            "storage_unavailable")
        assert contract.check(second.get(verify, headers=JSON), "get", verify)[
            "error"] == "storage_unavailable"
    assert revoke(second, ids[0], json={"csrfToken": csrf_token(second)}) == {"ok": True}
    assert revoke(second, ids[0], json={"csrfToken": csrf_token(second)})[
        "error"] == "not_found"
    response = second.post(f"/auth/sessions/trusted/{ids[1]}/revoke",
                           data={"csrf_token": csrf_token(second)})
    contract.check(response, "post", trusted)
    assert response.status_code == 303
    contract.assert_all_seen("post", trusted)

    # Wrong codes count toward the sign-in lockout (GUARDIAN_MAX_LOGIN_ATTEMPTS = 2).
    fourth = app.test_client()
    password_step(fourth)
    assert contract.check(fourth.post(verify, json={"code": "000000", "csrfToken": csrf_token(
        fourth)}), "post", verify)["error"] == "invalid_code"
    response = fourth.post(verify, data={"code": "000000", "csrf_token": csrf_token(fourth)})
    contract.check(response, "post", verify)
    assert response.status_code == 401 and response.mimetype == "text/html"
    statuses = []
    for _ in range(2):
        response = fourth.post(verify, json={"code": "000000",
                                             "csrfToken": csrf_token(fourth)})
        contract.check(response, "post", verify)
        statuses.append(response.status_code)
    assert statuses[-1] == 429
    response = fourth.post(verify, data={"code": "000000", "csrf_token": csrf_token(fourth)})
    contract.check(response, "post", verify)
    assert response.status_code == 429
    with failing(monkeypatch, get_state(app).throttle, "hit"):
        assert contract.check(fourth.post(verify, json={"code": "000000", "csrfToken": (
            csrf_token(fourth))}), "post", verify)["error"] == "storage_unavailable"
    contract.assert_all_seen("get", verify)
    contract.assert_all_seen("post", verify)


def test_every_documented_operation_is_exercised_above(contract: Contract) -> None:
    exercised = {
        ("post", "/auth/signin"), ("post", "/auth/signout"), ("get", "/auth/session"),
        ("get", "/auth/csrf"), ("get", "/auth/sessions"),
        ("post", "/auth/sessions/{session_id}/revoke"),
        ("post", "/auth/sessions/revoke-others"), ("get", "/auth/openapi.json"),
        ("get", "/auth/reauthenticate"), ("post", "/auth/reauthenticate"),
        ("post", "/auth/token"), ("post", "/auth/token/refresh"), ("post", "/auth/token/revoke"),
        ("get", "/auth/2fa"), ("post", "/auth/2fa/setup"), ("post", "/auth/2fa/enable"),
        ("post", "/auth/2fa/disable"), ("post", "/auth/2fa/recovery-codes"),
        ("get", "/auth/2fa/verify"), ("post", "/auth/2fa/verify"),
        ("post", "/auth/sessions/trusted/{browser_id}/revoke"),
    }
    documented = {(m, p) for p, item in contract.document["paths"].items()
                  for m in item if m in HTTP_METHODS}
    assert documented == exercised, "a new operation needs its test here"
