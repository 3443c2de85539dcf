"""The life of a request, in the order it happens.

1. ``before_request`` (:func:`make_before_request`): read the credential the request
   carries, let the strategy load its session into ``g.session`` (one lookup at most; none
   for a cached JWT), note a dead cookie for clearing, and apply the configured route
   rules. A store that cannot answer becomes ``StorageUnavailable`` (503).
2. The view runs; ``sign_in``/``sign_out`` and the management calls may set a new session,
   and note in this request's :class:`~flask_guardian.per_request.Outgoing` a token to
   send, a cookie to clear or a new CSRF seed.
3. ``after_request`` (:func:`make_after_request`): write, refresh or clear the cookies with
   the same attributes they were set with, and keep credential-bearing and signed-in
   responses out of every cache.

Everything here runs on every request: it reads ``g``'s namespace directly (through its
proxy a lookup costs ten times as much) and asks the settings nothing it could have been
told at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn

from flask import Response, request

from .cookies import ENDED_COOKIE_AGE, ENDED_COOKIE_SUFFIX, read_cookie
from .errors import StorageUnavailable
from .per_request import OUTGOING, Outgoing, namespace, outgoing
from .protection import check_access, match_rule
from .session import Session
from .state import AppState
from .storage import is_storage_error, rollback_quietly, unavailable
from .strategies.base import Ended


def make_before_request(state: AppState) -> Callable[[], None]:
    strategy = state.strategy
    settings = state.settings
    cookie_name = settings.cookie_name
    rules = settings.protected_routes
    bearer = state.api_tokens.access.load_into

    def load_session() -> None:
        """The hot path: one token read, one lookup (none for a cached JWT)."""
        req = request._get_current_object()  # type: ignore[attr-defined]
        values = namespace()
        values["session"] = None
        # g outlives a request when an app context was pushed around several: never send
        # one request's cookie with another's response.
        values[OUTGOING] = None
        if req.endpoint == "static":
            return
        # An API access token decides alone; a request without an Authorization header
        # (every cookie request) pays for this one ``in`` test, no call.
        decided = "HTTP_AUTHORIZATION" in req.environ and bearer(req, values)
        token = None if decided else strategy.read_token(req)
        if token is not None:
            try:
                loaded = strategy.load(token, req)
            except Exception as exc:
                if isinstance(exc, StorageUnavailable) or is_storage_error(exc):
                    _outage(state, exc, req.endpoint, values)
                raise
            if loaded is not None and loaded.session is not None:
                values["session"] = loaded.session
                if loaded.token is not None:
                    outgoing(values).send_token(loaded.token)
            elif read_cookie(req.environ, cookie_name) == token:
                # Stop the browser sending a dead credential (and say why, when known).
                outgoing(values).clear_cookie(
                    loaded.reason if isinstance(loaded, Ended) else None)
        elif not decided and read_cookie(req.environ, cookie_name) is not None and (
            not strategy.sent_by_header(req)  # a refused bearer header is not the cookie
        ):
            outgoing(values).clear_cookie()
        if rules and req.blueprint != "guardian":  # sign-in must stay reachable
            rule = match_rule(rules, req.path)
            if rule is not None:
                check_access(values["session"], rule.roles)

    return load_session


def _outage(state: AppState, exc: Exception, endpoint: str | None,
            values: dict[str, Any]) -> NoReturn:
    """The session could not be loaded because the database is unavailable: answer 503
    (never the driver's exception, never a 500), with nothing decided about the session.
    The cookie stays, so the user is still signed in once the database is back, except on
    sign-out, where the browser forgets it (the 503 says the server could not end it)."""
    rollback_quietly(state.db)  # nothing left for the teardown to roll back
    if endpoint == "guardian.signout":
        outgoing(values).clear_cookie()
    if isinstance(exc, StorageUnavailable):
        raise exc
    raise unavailable(exc, "session lookup") from exc


def make_after_request(state: AppState) -> Callable[[Response], Response]:
    settings = state.settings
    strategy = state.strategy
    remember_age = timedelta(seconds=settings.remember_max_age)
    ended_cookie = settings.cookie_name + ENDED_COOKIE_SUFFIX

    def write_cookies(response: Response) -> Response:
        values = namespace()
        out: Outgoing | None = values.get(OUTGOING)
        if out is None or not out.pending:
            if values.get("session") is not None and not _has_header(response,
                                                                     "cache-control"):
                # A signed-in page must not be kept by a shared cache or shown again from
                # the browser's cache after sign-out (OWASP Session Management). A view
                # that sets its own Cache-Control keeps it. (No Vary: a response no cache
                # may store needs none.)
                response.headers.add("Cache-Control", "no-store")
            return response
        attrs: dict[str, Any] = {
            "path": settings.cookie_path,
            "domain": settings.cookie_domain,
            "secure": settings.cookie_secure,
            "httponly": True,
            "samesite": settings.cookie_samesite,
        }
        if out.clear:
            response.delete_cookie(settings.cookie_name, **attrs)
            if out.ended is not None:  # why it died, for the sign-in page to say
                response.set_cookie(ended_cookie, out.ended, max_age=ENDED_COOKIE_AGE,
                                    **attrs)
        elif out.token is not None and strategy.sent_by_header(request):
            # A bearer client keeps its token itself: a refreshed one goes in a header.
            response.headers["X-Guardian-Token"] = out.token
        elif out.token is not None:
            session: Session | None = values.get("session")
            # A browser-session cookie (no Expires) unless "remember me": then the absolute
            # deadline, never the idle one (the database strategy never re-sends it).
            expires: datetime | None = None
            if session is not None and session.remember:
                expires = session.auth_time + remember_age
            response.set_cookie(settings.cookie_name, out.token, expires=expires, **attrs)
        if out.csrf_seed is not None:
            response.set_cookie(settings.csrf_cookie_name, out.csrf_seed, **attrs)
        # Responses that carry credentials must not be stored by any cache.
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("Cookie")
        return response

    return write_cookies


def _has_header(response: Response, name: str) -> bool:
    """Whether ``response`` has a header called ``name`` (lower case): a scan, because
    ``Headers.get`` raises and catches a ``KeyError`` inside on a miss."""
    for key, _ in response.headers:  # noqa: SIM110 (any() adds a generator per request)
        if key.lower() == name:
            return True
    return False
