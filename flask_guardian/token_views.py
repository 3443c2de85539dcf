"""The token routes of the ``guardian`` blueprint (SPEC §11), JSON only:

- ``POST /auth/token``: ``{"email" | "login", "password"}`` -> a pair;
- ``POST /auth/token/refresh``: ``{"refreshToken"}`` -> the next pair;
- ``POST /auth/token/revoke``: ``{"refreshToken"}`` (or RFC 7009's ``token``) -> ``{"ok": true}``.

No cookie is read or set (whatever the request carries, the response sets none), so no
CSRF token is asked for: the credentials are in the body. Errors are JSON
``{"ok": false, "error": code, "message"}`` with the error's status, whatever the
``Accept`` header says. The request and response shapes are in docs/api-tokens.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import jsonify, request

from .api_tokens import ApiTokens, token_field
from .errors import AuthError, InvalidRequest, StorageUnavailable, TooManyAttempts
from .per_request import OUTGOING, namespace
from .state import get_state
from .storage import translate
from .views import blueprint

#: The token routes read and write the store: bounded, and an outage is a 503.
_storage_guard = translate("api tokens", get_state)


def _json_only(view: Callable[[ApiTokens, dict[str, Any]], Any]) -> Callable[[], Any]:
    """Read the JSON object body, run ``view`` under the storage guard, answer errors as
    JSON, and drop whatever the request cycle meant to do with a cookie."""

    @functools.wraps(view)
    def wrapper() -> Any:
        try:
            data = request.get_json(silent=True) if request.is_json else None
            if not isinstance(data, dict):
                raise InvalidRequest("Expected a JSON object (Content-Type: application/json).")
            tokens: ApiTokens = get_state().api_tokens
            response = _storage_guard(view)(tokens, data)
        except RecursionError:
            response = _error(InvalidRequest("Expected a JSON object."))
        except AuthError as error:
            response = _error(error)
        namespace()[OUTGOING] = None  # no Set-Cookie on a token response
        return response

    return wrapper


def _error(error: AuthError) -> Any:
    headers = {"Retry-After": str(error.retry_after)} if isinstance(
        error, StorageUnavailable | TooManyAttempts) else {}
    body = {"ok": False, "error": error.code, "message": error.message}
    return jsonify(body), error.status_code, headers


@blueprint.post("/token")
@_json_only
def token(tokens: ApiTokens, data: dict[str, Any]) -> Any:
    """Sign in with a password; answer with the first pair."""
    name = "login" if data.get("login") is not None else "email"
    identifier, password = data.get(name), data.get("password")
    for field, value in ((name, identifier), ("password", password)):
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"'{field}' must be a non-empty string.")
    # ``code``: only read for a user with two-factor authentication on (verify_second_factor
    # refuses anything but a code's digits, spaces and dashes).
    return jsonify(tokens.sign_in(identifier, password, data.get("code")).to_dict())


@blueprint.post("/token/refresh")
@_json_only
def token_refresh(tokens: ApiTokens, data: dict[str, Any]) -> Any:
    """Spend a refresh token; answer with the next pair."""
    return jsonify(tokens.refresh(token_field(data, "refreshToken")).to_dict())


@blueprint.post("/token/revoke")
@_json_only
def token_revoke(tokens: ApiTokens, data: dict[str, Any]) -> Any:
    """End the session of a refresh token (RFC 7009: an unknown one is no error)."""
    name = "refreshToken" if data.get("refreshToken") is not None else "token"
    tokens.revoke(token_field(data, name))
    return jsonify(ok=True)
