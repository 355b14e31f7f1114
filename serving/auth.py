"""The bearer token of the requests that change models (management, the v2 repository).

:func:`check_token` is the one check, for HTTP headers and gRPC metadata alike.
"""

from __future__ import annotations

import hmac

from flask import current_app, request

from serving.errors import ForbiddenError, UnauthorizedError

__all__ = ["authorize_changes", "check_token"]

MISSING_HEADER = "this route needs the header 'Authorization: Bearer <token>'"


def check_token(expected: str | None, authorization: str, missing: str) -> None:
    """Raise unless ``authorization`` is ``Bearer <expected>`` (anything goes without a token).

    Args:
        expected: the server's token, or None.
        authorization: the request's ``Authorization`` header or ``authorization`` metadata.
        missing: the message when no bearer token is given (it says how to pass one).

    Raises:
        UnauthorizedError: no bearer token; ForbiddenError: a wrong one (compared in
            constant time).
    """
    if expected is None:
        return
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise UnauthorizedError(missing)
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ForbiddenError("the bearer token is wrong")


def authorize_changes() -> None:
    """A blueprint's ``before_request``: the server's token is required (when it has one),
    and the request body may be as large as an upload."""
    config = current_app.extensions["rootstream"].config
    request.max_content_length = config.max_upload_bytes
    authorization = request.headers.get("Authorization", "")
    check_token(config.token, authorization, MISSING_HEADER)
