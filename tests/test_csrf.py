"""CSRF: every state-changing POST carrying a cookie credential needs a token, sign-in
included (login CSRF); bearer-only requests are exempt; the check can be turned off."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import AppFactory
from flask import Flask
from helpers import USER, csrf_token, sign_in_ok


def test_signin_without_token_is_refused(client: Any) -> None:
    response = client.post("/auth/signin", data={"email": USER[0], "password": USER[1]})
    assert response.status_code == 403
    assert client.get("/auth/session").get_json() is None


def test_login_csrf_with_foreign_token_is_refused(app: Flask) -> None:
    attacker = app.test_client()
    token = csrf_token(attacker)  # valid for the attacker's seed, not the victim's
    victim = app.test_client()
    victim.get("/auth/csrf")
    response = victim.post("/auth/signin",
                           data={"email": USER[0], "password": USER[1], "csrf_token": token})
    assert response.status_code == 403


def test_signin_json_without_token_is_403_json(client: Any) -> None:
    response = client.post("/auth/signin", json={"email": USER[0], "password": USER[1]})
    assert response.status_code == 403
    assert response.get_json()["error"] == "csrf_failed"


def test_token_in_header_is_accepted(client: Any) -> None:
    token = csrf_token(client)
    response = client.post("/auth/signin", json={"email": USER[0], "password": USER[1]},
                           headers={"X-CSRF-Token": token})
    assert response.status_code == 200


@pytest.mark.parametrize("token", ["", "garbage", "a.b", "x" * 500, "ü.ü"])
def test_malformed_tokens_are_refused(client: Any, token: str) -> None:
    csrf_token(client)
    response = client.post("/auth/signin",
                           data={"email": USER[0], "password": USER[1], "csrf_token": token})
    assert response.status_code == 403


def test_signout_without_token_changes_nothing(client: Any) -> None:
    sign_in_ok(client)
    response = client.post("/auth/signout")
    assert response.status_code == 403
    assert client.get("/auth/session").get_json() is not None


def test_token_from_before_signin_stops_working_after_it(client: Any) -> None:
    old = csrf_token(client)
    sign_in_ok(client)
    response = client.post("/auth/signout", data={"csrf_token": old})
    assert response.status_code == 403


def test_sign_in_json_returns_a_fresh_token(client: Any) -> None:
    token = csrf_token(client)
    body = client.post("/auth/signin", json={"email": USER[0], "password": USER[1],
                                             "csrfToken": token}).get_json()
    response = client.post("/auth/signout", json={"csrfToken": body["csrfToken"]})
    assert response.get_json()["ok"] is True


def test_csrf_can_be_disabled(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_CSRF_ENABLED=False)
    client = app.test_client()
    response = client.post("/auth/signin", data={"email": USER[0], "password": USER[1]})
    assert response.status_code == 303
    assert client.post("/auth/signout").status_code == 303
