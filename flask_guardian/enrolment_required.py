"""``GUARDIAN_TWO_FACTOR_REQUIRED_ROLES``: a signed-in user with one of these roles whose
session has not passed a second factor is sent to enrol (``GET /auth/2fa``) before anything
else; a JSON request gets 403 ``{"error": "two_factor_enrollment_required"}``.

The check is a ``before_request`` hook registered by ``init_app`` only when the setting is
not empty, right after the session is loaded, so an app without the setting pays nothing
per request, and one with it pays no query: the session already carries the user's role
and whether it passed a second factor (``Session.two_factor``). Enrolling rotates the
session into one with ``two_factor`` set, which ends the redirects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import redirect, request

from .errors import AuthError
from .per_request import get_session
from .state import AppState


class TwoFactorEnrollmentRequired(AuthError):
    """The user's role requires two-factor authentication and this session has not passed
    a second factor: enrol first (``GET /auth/2fa``)."""

    status_code = 403
    code = "two_factor_enrollment_required"
    default_message = "Your account must use two-step verification. Set it up to continue."


#: Guardian's own endpoints that stay reachable (besides every ``/auth/2fa`` route): how
#: to leave, and what a script needs to enrol (its session, a CSRF token).
_OPEN_ENDPOINTS = frozenset({"guardian.signout", "guardian.signout_page",
                             "guardian.csrf_json", "guardian.session_json"})


def make_enrolment_check(state: AppState) -> Callable[[], Any]:
    """The ``before_request`` hook for the roles in ``state``'s settings."""
    from .views import wants_json  # at init_app: the error class is importable without it

    roles = state.settings.second_factor.required_roles
    two_factor_prefix = state.settings.url_prefix + "/2fa"

    def require_enrolment() -> Any:
        session = get_session()
        if session is None or session.two_factor or session.user.role not in roles:
            return None
        endpoint = request.endpoint
        if endpoint == "static" or endpoint in _OPEN_ENDPOINTS:
            return None
        path = request.path
        if path == two_factor_prefix or path.startswith(two_factor_prefix + "/"):
            return None
        if wants_json():
            raise TwoFactorEnrollmentRequired()
        return redirect(two_factor_prefix, 303)

    return require_enrolment
