"""``GUARDIAN_SIGNIN_VIEW``: where ``login_required`` and the protected routes send a
browser that is not signed in (Flask-Login's ``login_view``). ``None`` is the blueprint's
own page, which reads ``redirectUrl``; an application's own view (an endpoint name or a
path) gets the original path as ``next``, the parameter Flask-Login apps already read."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import url_for
from werkzeug.routing import BuildError

from .errors import ConfigurationError
from .redirects import safe_redirect

KEY = "GUARDIAN_SIGNIN_VIEW"
_ENDPOINT = re.compile(r"[A-Za-z_][\w.-]*")


def read_signin_view(value: object, protected: Mapping[str, Any]) -> str | None:
    """Check the setting at ``init_app``: None, an endpoint name (``"auth.login"``) or a
    same-origin path (``"/login"``) that no ``protected`` route covers (the
    page would send the browser to itself for ever). An endpoint is looked up when the
    first browser is sent there: an application factory registers its views after
    ``init_app``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or not (
        _ENDPOINT.fullmatch(value) or safe_redirect(value, "") == value
    ):
        raise ConfigurationError(
            KEY, f"expected None, an endpoint name ('auth.login') or a path ('/login'), "
            f"got {value!r}")
    if value.startswith("/"):
        path = urlsplit(value).path.rstrip("/") or "/"
        # ``protected`` is GUARDIAN_PROTECTED_ROUTES, already checked: its keys are paths.
        for prefix in (str(p).rstrip("/") or "/" for p in protected):
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                raise ConfigurationError(
                    KEY, f"{value!r} is covered by the protected route {prefix!r}: the "
                    "sign-in page must be reachable without signing in")
    return value


def signin_url(view: str | None, target: str) -> str:
    """The sign-in page's URL with ``target`` (an already checked path) to come back to."""
    if view is None:
        return url_for("guardian.signin_page") + "?" + urlencode({"redirectUrl": target})
    if view.startswith("/"):
        base = view
    else:
        try:
            base = url_for(view)
        except BuildError:
            raise ConfigurationError(
                KEY, f"no view {view!r} that url_for() can build without arguments"
            ) from None
    return base + ("&" if "?" in base else "?") + urlencode({"next": target})
