"""The OpenAPI 3.1 document of the blueprint's JSON routes (``GET <prefix>/openapi.json``).

The document is a JSON file shipped in the package (``flask_guardian/openapi.json``, the
same file as ``docs/openapi.json``), written for the default prefix ``/auth`` and cookie
name ``__Host-guardian``. An app is served its own copy: its ``GUARDIAN_URL_PREFIX`` in the
paths and its session cookie's name in the ``sessionCookie`` security scheme, rendered
once per (prefix, cookie name) and kept, so the route reads no file per request and the
other routes pay nothing for it.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

from flask import Flask, Response

from .state import get_state

#: The packaged document's file name, beside this module.
FILE_NAME = "openapi.json"
#: The prefix and cookie name the packaged document is written for.
DEFAULT_PREFIX = "/auth"
DEFAULT_COOKIE_NAME = "__Host-guardian"


@functools.cache
def _packaged() -> dict[str, Any]:
    """The packaged document, parsed once per process (never handed out: callers copy)."""
    text = resources.files(__package__).joinpath(FILE_NAME).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def render_document(url_prefix: str, cookie_name: str) -> dict[str, Any]:
    """A new copy of the document for an app mounted at ``url_prefix`` whose session
    cookie is ``cookie_name``."""
    document = copy.deepcopy(_packaged())
    if url_prefix != DEFAULT_PREFIX:
        # Every documented path starts with the default prefix (a test checks it).
        document["paths"] = {
            url_prefix + path[len(DEFAULT_PREFIX):]: item
            for path, item in document["paths"].items()
        }
    document["components"]["securitySchemes"]["sessionCookie"]["name"] = cookie_name
    return document


def openapi_document(app: Flask | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of flask-guardian's JSON routes as ``app`` (default: the
    current app) serves them at ``<GUARDIAN_URL_PREFIX>/openapi.json``: a new dict the
    caller may change, e.g. to merge its paths into the application's own document."""
    settings = get_state(app).settings
    return render_document(settings.url_prefix, settings.cookie_name)


@functools.lru_cache(maxsize=32)
def _rendered_bytes(url_prefix: str, cookie_name: str) -> bytes:
    return json.dumps(render_document(url_prefix, cookie_name), ensure_ascii=False,
                      indent=2).encode("utf-8")


def openapi_json() -> Response:
    """``GET <prefix>/openapi.json``: the document for this app, from the rendered cache."""
    settings = get_state().settings
    return Response(_rendered_bytes(settings.url_prefix, settings.cookie_name),
                    mimetype="application/json")
