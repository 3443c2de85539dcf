"""redirectUrl: only same-origin relative paths are honoured; everything else falls back to
the default, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import USER, sign_in

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
