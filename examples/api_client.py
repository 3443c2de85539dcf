"""A small API client for flask-guardian's token routes (docs/api-tokens.md), standard
library only: it signs in with ``POST /auth/token``, calls ``/api/me`` with the access
token, refreshes the pair shortly before the access token expires (and once more if a
call is refused anyway), and tells its caller when the session has ended (revoked from
the device list, a password change, "sign out everywhere", or a detected token reuse).

    python examples/api_client.py http://127.0.0.1:5000 user@example.com

It keeps the tokens in memory. A real client keeps the refresh token where the platform
keeps secrets (Keychain, Android Keystore, the OS keyring) and never in a log.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


class SessionEnded(Exception):
    """The server refused the refresh token: sign in again."""


class SignInFailed(Exception):
    """``POST /auth/token`` refused the credentials (``error`` is the server's code)."""

    def __init__(self, error: str, status: int) -> None:
        super().__init__(f"sign-in refused: {error} ({status})")
        self.error = error
        self.status = status


class ApiClient:
    """One signed-in API client. ``margin``: seconds before the access token's expiry at
    which it is refreshed ahead of the next call; ``clock``: seconds since the epoch."""

    def __init__(self, base_url: str, *, user_agent: str = "guardian-example-client/1.0",
                 margin: float = 30, clock: Callable[[], float] = time.time) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self.user_agent = user_agent
        self.margin = margin
        self.clock = clock
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.expires_at = 0.0
        #: How many refreshes this client made (for the curious, and the test).
        self.refreshes = 0

    # -- HTTP ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None,
                 token: str | None = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            payload = error.read()
            return error.code, json.loads(payload) if payload else None

    def _keep(self, pair: dict[str, Any]) -> None:
        self.access_token = pair["accessToken"]
        self.refresh_token = pair["refreshToken"]
        self.expires_at = self.clock() + pair["expiresIn"]

    # -- the flow ------------------------------------------------------------------------

    def sign_in(self, email: str, password: str) -> None:
        """Get the first pair (raises :class:`SignInFailed`)."""
        status, body = self._request("POST", "/auth/token",
                                     {"email": email, "password": password})
        if status != 200:
            raise SignInFailed((body or {}).get("error", "unknown"), status)
        self._keep(body)

    def refresh(self) -> None:
        """Spend the refresh token for a new pair (raises :class:`SessionEnded`). A network
        error may be retried with the same token within the server's reuse grace: the
        server answers the same pair again."""
        if self.refresh_token is None:
            raise SessionEnded("not signed in")
        status, body = self._request("POST", "/auth/token/refresh",
                                     {"refreshToken": self.refresh_token})
        if status != 200:
            self.access_token = self.refresh_token = None
            raise SessionEnded((body or {}).get("error", "refresh refused"))
        self.refreshes += 1
        self._keep(body)

    def get(self, path: str) -> Any:
        """``GET path`` with the access token, refreshed first when it is about to expire,
        and once more if the server refuses it anyway (raises :class:`SessionEnded`)."""
        if self.access_token is None or self.clock() >= self.expires_at - self.margin:
            self.refresh()
        status, body = self._request("GET", path, token=self.access_token)
        if status == 401:  # revoked, or the user changed: one refresh tells which
            self.refresh()
            status, body = self._request("GET", path, token=self.access_token)
            if status == 401:
                raise SessionEnded("the access token is refused")
        return body

    def me(self) -> dict[str, Any]:
        """The signed-in user's session, from the example app's ``/api/me``."""
        body: dict[str, Any] = self.get("/api/me")
        return body

    def sign_out(self) -> None:
        """End the session (RFC 7009 revocation of the refresh token)."""
        if self.refresh_token is not None:
            self._request("POST", "/auth/token/revoke", {"refreshToken": self.refresh_token})
        self.access_token = self.refresh_token = None


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python examples/api_client.py BASE_URL EMAIL", file=sys.stderr)
        return 2
    client = ApiClient(argv[1])
    try:
        client.sign_in(argv[2], getpass.getpass("Password: "))
        print(json.dumps(client.me(), indent=2))
        client.sign_out()
    except (SignInFailed, SessionEnded) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
