"""flask-guardian: authentication sessions for Flask.

``Guardian(app, db=db)`` loads the signed-in session into ``g.session`` on every request,
provides the sign-in/sign-out routes, exposes ``session_user`` to templates and protects
routes, with sessions kept in the database, in signed JWTs or in Redis
(``SESSION_STRATEGY``).
"""

from __future__ import annotations

# installation first: it refuses to run on files mixed with the unrelated flask-guardian's.
from . import installation, signals  # noqa: F401
from .api_tokens import TokenPair
from .auth import SignInResult, SignOutResult, sign_in, sign_out
from .config import Settings
from .enrolment_required import TwoFactorEnrollmentRequired
from .errors import (
    AuthError,
    BadRequest,
    ConfigurationError,
    CSRFError,
    Forbidden,
    GuardianError,
    InvalidCode,
    InvalidCredentials,
    InvalidGrant,
    InvalidPassword,
    InvalidRequest,
    NotFound,
    StorageUnavailable,
    TooManyAttempts,
    TwoFactorRequired,
    TwoFactorStateError,
    Unauthorized,
)
from .extension import Guardian
from .external import sign_in_user
from .fresh import ReauthenticationRequired, fresh_login_required
from .models import UserMixin
from .openapi import openapi_document
from .per_request import get_session
from .protection import login_required, roles_required
from .session import Session, SessionUser
from .strategies import SessionInfo, SessionStrategy
from .two_factor import (
    enrolment_generation,
    recovery_codes_left,
    two_factor_enabled,
    verify_second_factor,
)
from .user_proxy import AnonymousUser, current_user

__version__ = "0.1.0"

__all__ = [
    "AnonymousUser",
    "AuthError",
    "BadRequest",
    "CSRFError",
    "ConfigurationError",
    "Forbidden",
    "Guardian",
    "GuardianError",
    "InvalidCode",
    "InvalidCredentials",
    "InvalidGrant",
    "InvalidPassword",
    "InvalidRequest",
    "NotFound",
    "ReauthenticationRequired",
    "Session",
    "SessionInfo",
    "SessionStrategy",
    "SessionUser",
    "Settings",
    "SignInResult",
    "SignOutResult",
    "StorageUnavailable",
    "TokenPair",
    "TooManyAttempts",
    "TwoFactorEnrollmentRequired",
    "TwoFactorRequired",
    "TwoFactorStateError",
    "Unauthorized",
    "UserMixin",
    "current_user",
    "enrolment_generation",
    "fresh_login_required",
    "get_session",
    "login_required",
    "openapi_document",
    "recovery_codes_left",
    "roles_required",
    "sign_in",
    "sign_in_user",
    "sign_out",
    "signals",
    "two_factor_enabled",
    "verify_second_factor",
]
