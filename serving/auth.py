"""The bearer token of the routes that change models (management, the v2 repository)."""

from __future__ import annotations

import hmac

from flask import current_app, request

from serving.errors import ForbiddenError, UnauthorizedError

__all__ = ["authorize_changes"]


def authorize_changes() -> None:
    """A blueprint's ``before_request``: the server's token is required (when it has one),
    and the request body may be as large as an upload."""
    config = current_app.extensions["rootstream"].config
    request.max_content_length = config.max_upload_bytes
    if config.token is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise UnauthorizedError("this route needs the header 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), config.token.encode()):
        raise ForbiddenError("the bearer token is wrong")
