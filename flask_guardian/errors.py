"""Exception types. Views raise these; handlers registered by the extension turn them into
HTML or JSON depending on what the client asked for, so no view builds an error by hand."""

from __future__ import annotations


class GuardianError(Exception):
    """Base class of every flask-guardian exception."""


class ConfigurationError(GuardianError, ValueError):
    """A configuration value is unusable. Raised by ``init_app`` with the key and what it
    accepts, so a mistake fails at start-up and never on a request."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


class AuthError(GuardianError):
    """An error with an HTTP status and a stable machine-readable ``code``."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    default_message = "The request could not be processed."

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadRequest(AuthError):
    """The request is malformed (wrong types, unreadable body, oversized field)."""

    status_code = 400
    code = "bad_request"
    default_message = "The request could not be read."


class Unauthorized(AuthError):
    """The route needs a signed-in user and the request has none."""

    status_code = 401
    code = "unauthorized"
    default_message = "Sign in to continue."


class Forbidden(AuthError):
    """Signed in, but without a role the route requires."""

    status_code = 403
    code = "forbidden"
    default_message = "You do not have permission to view this page."


class CSRFError(AuthError):
    """A state-changing request without a valid CSRF token."""

    status_code = 403
    code = "csrf_failed"
    default_message = "The form has expired or was not sent by this site. Reload and retry."


class NotFound(AuthError):
    """The addressed object does not exist for this user."""

    status_code = 404
    code = "not_found"
    default_message = "Not found."


class StorageUnavailable(AuthError):
    """The session store could not be reached in time (database down, refusing, stalled
    or cut mid-request). Answered 503 with ``Retry-After``: the request may succeed once
    the database is back, and nothing about the session was decided (it is neither
    signed in nor signed out). Raised instead of the driver's own exception, so an app
    handles every outage with one ``errorhandler(StorageUnavailable)``."""

    status_code = 503
    code = "storage_unavailable"
    default_message = "The service is briefly unavailable. Try again in a few seconds."
    #: Seconds sent in ``Retry-After``.
    retry_after = 5


class TooManyAttempts(AuthError):
    """Too many failed sign-ins for this identifier or from this address: refused whatever
    the password until the lockout window ends. Raised by ``guardian.authenticate``;
    answered 429 with ``Retry-After`` when not caught."""

    status_code = 429
    code = "too_many_attempts"
    default_message = "Too many failed attempts. Try again later."

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message)
        #: Seconds until the lock ends (sent as ``Retry-After``).
        self.retry_after = retry_after


class InvalidCode(AuthError):
    """A second-factor code that is wrong, already used, or not a code at all. Counts
    toward the same lockout as a wrong password."""

    status_code = 401
    code = "invalid_code"
    default_message = "The code is not valid. Enter the current code from your app."


class InvalidPassword(AuthError):
    """The signed-in user's password, asked again before a sensitive change (turning
    two-factor authentication off, new recovery codes), is wrong. Counts toward the
    lockout."""

    status_code = 401
    code = "invalid_credentials"
    default_message = "The password is incorrect."


class TwoFactorStateError(AuthError):
    """The two-factor step does not fit the account's state: enabling without a setup,
    setting up or enabling while already on, or a change that needs it on while it is
    off."""

    status_code = 409
    code = "two_factor_state"
    default_message = "Two-factor authentication is not in a state that allows this."


# -- tokens for API clients (api_tokens.py, SPEC §11) ------------------------------------


class InvalidRequest(BadRequest):
    """A token request without a usable field (missing, empty, not a string, too long,
    with a NUL)."""

    code = "invalid_request"
    default_message = "The request is missing a valid parameter."


class InvalidCredentials(AuthError):
    """Wrong identifier or password (or an inactive account: the same answer)."""

    status_code = 401
    code = "invalid_credentials"
    default_message = "The email or password is incorrect."


class TwoFactorRequired(AuthError):
    """``POST /auth/token`` for a user with two-factor authentication on, without ``code``."""

    status_code = 401
    code = "two_factor_required"
    default_message = ("This account has two-factor authentication on: send 'code' (from the "
                       "authenticator app, or a recovery code) with the password.")


class InvalidGrant(AuthError):
    """A refresh token that is not (or no longer) valid: unknown, forged, spent, of an
    ended session or of another app (RFC 6749 §5.2 ``invalid_grant``)."""

    status_code = 401
    code = "invalid_grant"
    default_message = "The refresh token is not valid. Sign in again."
