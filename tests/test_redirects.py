"""redirectUrl: only same-origin relative paths are honoured; everything else falls back to
the default, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import USER, csrf_token, sign_in, sign_in_ok

from flask_guardian.redirects import safe_redirect

HOSTILE = [
    "//evil.com",
    "//evil.com/path",
    "/\\evil.com",
    "\\\\evil.com",
    "https:evil.com",
    "https://evil.com",
    "http://localhost.evil.com/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/%2F%2Fevil.com",
    "/%2f%2fevil.com",
    "/%5Cevil.com",
    "/%0d%0aSet-Cookie:%20a=b",
    "/path\r\nSet-Cookie: a=b",
    "/path\nx",
    "/\tevil",
    "/\x00",
    "/ok\x7f",
    "evil.com",
    "./dashboard",
    "",
    "x" * 3000,
    "/%09/evil.com",
]


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_redirect_falls_back_to_default(payload: str) -> None:
    assert safe_redirect(payload, "/home") == "/home"


@pytest.mark.parametrize("value", [None, 42, ["/x"], {"a": 1}])
def test_non_string_falls_back(value: object) -> None:
    assert safe_redirect(value, "/home") == "/home"


@pytest.mark.parametrize("path", ["/", "/dashboard", "/a/b?c=d&e=%2F", "/search?q=//x",
                                  "/x#frag", "/caf%C3%A9"])
def test_local_paths_are_kept(path: str) -> None:
    assert safe_redirect(path, "/home") == path


@pytest.mark.parametrize("payload", HOSTILE)
def test_signin_route_never_redirects_off_site(client: Any, payload: str) -> None:
    response = sign_in(client, *USER, redirect_url=payload)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("payload", ["//evil.com", "/%0d%0aX:y", "javascript:x"])
def test_signin_page_carries_only_safe_redirect(client: Any, payload: str) -> None:
    page = client.get("/auth/signin", query_string={"redirectUrl": payload})
    assert page.status_code == 200
    assert 'name="redirectUrl" value="/"' in page.get_data(as_text=True)


# -- `next`, the name Flask-Login apps send, is read wherever redirectUrl is ------------


def sign_in_with(client: Any, fields: dict[str, str], *, json: bool = False) -> Any:
    data = {"email": USER[0], "password": USER[1], "csrf_token": csrf_token(client),
            **fields}
    return client.post("/auth/signin", **({"json": data} if json else {"data": data}))


@pytest.mark.parametrize("json", [False, True])
def test_signin_honours_next(client: Any, json: bool) -> None:
    response = sign_in_with(client, {"next": "/dashboard?tab=2"}, json=json)
    if json:
        assert response.get_json()["redirectUrl"] == "/dashboard?tab=2"
    else:
        assert response.headers["Location"] == "/dashboard?tab=2"


@pytest.mark.parametrize("payload", HOSTILE)
def test_next_is_checked_like_redirect_url(client: Any, payload: str) -> None:
    response = sign_in_with(client, {"next": payload})
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_redirect_url_wins_over_next(client: Any) -> None:
    response = sign_in_with(client, {"redirectUrl": "/a", "next": "/b"})
    assert response.headers["Location"] == "/a"


@pytest.mark.parametrize(("query", "carried"), [
    ({"next": "/dashboard"}, "/dashboard"), ({"next": "//evil.com"}, "/"),
    ({"next": "javascript:x"}, "/"), ({"redirectUrl": "/a", "next": "/b"}, "/a"),
])
def test_signin_page_carries_next(client: Any, query: dict[str, str], carried: str) -> None:
    page = client.get("/auth/signin", query_string=query).get_data(as_text=True)
    assert f'name="redirectUrl" value="{carried}"' in page


@pytest.mark.parametrize(("value", "location"), [("/bye", "/bye"), ("//evil.com", "/")])
def test_signout_honours_next(client: Any, value: str, location: str) -> None:
    sign_in_ok(client)
    response = client.post("/auth/signout", data={"csrf_token": csrf_token(client),
                                                   "next": value})
    assert response.status_code == 303
    assert response.headers["Location"] == location
