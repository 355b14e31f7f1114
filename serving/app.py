"""The Flask application: ``create_app(config)`` and the routes, which only do HTTP.

Routes parse the request, call the :class:`~serving.dataplane.DataPlane`, and answer
JSON. Every error becomes ``{"error": "..."}`` with its status: domain errors carry
theirs (:mod:`serving.errors`), Flask's own (unknown route, wrong method, body too
large) keep theirs, anything else is a logged 500.

JSON predict, the route that answers most requests, is answered before Flask (by
:class:`_Observed`, with the same answers): Flask's request context, routing and response
objects cost more CPU than the rest of a single-row request. Flask's route still answers
the requests that path leaves to it (a body without ``Content-Length`` or over the limit).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from serving.auth import authorize_changes
from serving.config import ServerConfig, available_cpus
from serving.dataplane import DataPlane
from serving.errors import BadRequestError, ServingError
from serving.metrics import Metrics
from serving.repository import Repository
from serving.runtime import ModelCache
from serving.store import ModelStore
from serving.v2 import protocol, repository

__all__ = ["ServerConfig", "create_app"]

log = logging.getLogger("serving.app")
request_log = logging.getLogger("serving.requests")
_ERROR = "rootstream.error"  # the error message of a request, in its WSGI environ
PREDICT_ROUTES = ("/models/<name>/predict", "/models/<name>/<int:version>/predict")
_PREDICT_PATH = re.compile(r"/models/([A-Za-z0-9_.-]{1,64})(?:/([1-9][0-9]{0,17}))?/predict")
_FAULT = "internal server error (logged on the server)"


@dataclass(frozen=True)
class Services:
    """What the routes of one app use, kept in ``app.extensions["rootstream"]``."""

    config: ServerConfig
    plane: DataPlane
    repository: Repository
    metrics: Metrics


def create_app(config: ServerConfig | Mapping[str, Any] | str | os.PathLike) -> Flask:
    """The Flask application serving the models of ``config.models``.

    Args:
        config: a :class:`ServerConfig`, a mapping of its fields (``{"models": DIR}``),
            or the models directory.
    """
    config = ServerConfig.of(config)
    app = Flask(__name__, static_folder=None)  # no /static route: the API is all there is
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = ModelStore(config.models, max_bytes=config.max_upload_bytes)
    cache = ModelCache(threads=config.threads or available_cpus(), capacity=config.max_models)
    metrics = Metrics()
    plane = DataPlane(store, cache, metrics, serial=config.serial)
    services = Services(config, plane, Repository(store, cache), metrics)
    app.extensions["rootstream"] = services
    app.wsgi_app = _Observed(app, services)  # type: ignore[method-assign]
    app.register_blueprint(management)
    app.register_blueprint(inference)
    app.register_blueprint(observability)
    app.register_blueprint(protocol)
    app.register_blueprint(repository)
    app.register_error_handler(ServingError, _serving_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_fault)
    return app


def _services() -> Services:
    return current_app.extensions["rootstream"]


# ----------------------------------------------------------------- management
management = Blueprint("management", __name__)


management.before_request(authorize_changes)


@management.post("/models/<name>")
def upload(name: str) -> tuple[Response, int]:
    """The ONNX file as the body, or as the multipart field ``file`` (with ``config``, a
    config.pbtxt, as a file or text field beside it)."""
    config = None
    if request.mimetype == "multipart/form-data":
        file = request.files.get("file")
        if file is None:
            raise BadRequestError(
                f"a multipart upload needs the ONNX file in the field 'file' "
                f"(got fields {sorted(request.files) + sorted(request.form)})"
            )
        stream, config = file.stream, _text_field("config")
    else:
        stream = request.stream
    return jsonify(_services().repository.add(name, stream, config)), 201


def _text_field(name: str) -> str | None:
    """A multipart field's text, sent as a file or as a plain field (None when absent)."""
    file = request.files.get(name)
    raw = request.form.get(name) if file is None else file.read()
    try:
        return raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise BadRequestError(f"the multipart field {name!r} is not UTF-8 text") from None


@management.get("/models")
def list_models() -> Response:
    return jsonify(_services().plane.list())


@management.get("/models/<name>")
@management.get("/models/<name>/<int:version>")
def describe_model(name: str, version: int | None = None) -> Response:
    return jsonify(_services().plane.describe(name, version))


@management.delete("/models/<name>")
@management.delete("/models/<name>/<int:version>")
def delete_model(name: str, version: int | None = None) -> Response:
    return jsonify(_services().plane.delete(name, version))


# ----------------------------------------------------------------- inference
inference = Blueprint("inference", __name__)


@inference.post(PREDICT_ROUTES[0])
@inference.post(PREDICT_ROUTES[1])
def predict(name: str, version: int | None = None) -> Response:
    """The predict requests :class:`_Observed` leaves to Flask."""
    return jsonify(_predict(_services().plane, name, version, request.get_data()))


def _predict(plane: DataPlane, name: str, version: int | None, data: bytes) -> dict[str, Any]:
    """The answer to a JSON predict body."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequestError(f"the body is not valid JSON: {err}") from None
    return plane.predict(name, version, body)


# ----------------------------------------------------------------- observability
observability = Blueprint("observability", __name__)


@observability.get("/metrics")
def metrics() -> Response:
    body, content_type = _services().metrics.exposition()
    return Response(body, content_type=content_type)


class _Observed:
    """WSGI middleware around the Flask app: answers JSON predict itself, and times, counts
    and logs every answered request.

    Each request is one structured record on the ``serving.requests`` logger: DEBUG for
    2xx/3xx, INFO for 4xx (with the error message), WARNING for 5xx.
    """

    def __init__(self, app: Flask, services: Services) -> None:
        self.wsgi_app, self.services, self.json = app.wsgi_app, services, app.json
        self.max_bytes = services.config.max_request_bytes

    def __call__(self, environ: dict, start_response: Any) -> Any:
        start = time.perf_counter()
        direct = self._direct_predict(environ)
        if direct is not None:
            status, route, body = self._answer(environ, *direct)
            start_response(
                f"{status} {HTTP_STATUS_CODES[status].upper()}",  # as werkzeug writes it
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            self._record(environ, status, route, environ["PATH_INFO"], _since(start))
            return [body]
        seen = [500, "unmatched", environ.get("PATH_INFO", "")]  # status, route, path

        def respond(line: str, headers: Any, exc_info: Any = None) -> Any:
            # called while Flask's request is still alive: it knows the route it matched
            req = environ.get("werkzeug.request")
            rule = getattr(req, "url_rule", None)
            seen[0] = int(line[:3])
            if rule is not None:
                seen[1] = rule.rule
            if req is not None:
                seen[2] = req.path
            return start_response(line, headers, exc_info)

        try:
            return self.wsgi_app(environ, respond)
        finally:
            self._record(environ, *seen, _since(start))

    def _direct_predict(self, environ: dict) -> tuple[re.Match, int] | None:
        """The path's match and the body's length of a JSON predict that this class
        answers: a POST with a ``Content-Length`` within the limit; None for any other."""
        if environ["REQUEST_METHOD"] != "POST" or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        match = _PREDICT_PATH.fullmatch(environ.get("PATH_INFO", ""))
        length = environ.get("CONTENT_LENGTH", "")
        if match is None or not length.isdigit() or int(length) > self.max_bytes:
            return None
        return match, int(length)

    def _answer(self, environ: dict, match: re.Match, length: int) -> tuple[int, str, bytes]:
        """Answer a JSON predict as Flask's route would: status, route and JSON body."""
        name, version = match.group(1), match.group(2)
        route = PREDICT_ROUTES[version is not None]
        try:
            data = environ["wsgi.input"].read(length)
            number = None if version is None else int(version)
            answer = _predict(self.services.plane, name, number, data)
            status = 200
        except ServingError as err:
            environ[_ERROR], status = err.message, err.status
            answer = {"error": err.message}
        except Exception:  # a server fault, as Flask's handler answers it
            _log_fault(environ["REQUEST_METHOD"], environ["PATH_INFO"])
            environ[_ERROR], status = _FAULT, 500
            answer = {"error": _FAULT}
        # as Flask's jsonify writes JSON outside debug mode
        body = f"{self.json.dumps(answer, separators=(',', ':'))}\n".encode()
        return status, route, body

    def _record(self, environ: dict, status: int, route: str, path: str, seconds: float) -> None:
        method = environ["REQUEST_METHOD"]
        self.services.metrics.observe(
            method, route, status, seconds, len(self.services.plane.cache)
        )
        # successes at DEBUG (a line per request costs ~10% of single-row throughput),
        # client errors at INFO, server faults at WARNING
        level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.WARNING
        if request_log.isEnabledFor(level):
            length = environ.get("CONTENT_LENGTH")
            fields = {
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "remote": environ.get("REMOTE_ADDR"),
                "bytes_in": int(length) if length and length.isdigit() else None,
            }
            if _ERROR in environ:
                fields["error"] = environ[_ERROR]
            request_log.log(level, "%s %s %d", method, path, status, extra={"fields": fields})


# ----------------------------------------------------------------- errors
def _error(message: str, status: int) -> Response:
    request.environ[_ERROR] = message
    response = jsonify(error=message)
    response.status_code = status
    return response


def _serving_error(err: ServingError) -> Response:
    response = _error(err.message, err.status)
    if err.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="rootstream"'
    return response


def _http_error(err: HTTPException) -> Response:
    if err.code == 404 and request.url_rule is None:
        message = f"no route {request.path} (see docs/serving.md for the routes)"
    elif err.code == 405:
        allowed = ", ".join(sorted(err.valid_methods or ()))  # type: ignore[attr-defined]
        message = f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
    elif err.code == 413:
        limit = request.max_content_length
        message = f"the request body exceeds the limit of {limit} bytes"
    else:
        message = err.description or err.name
    response = _error(message, err.code or 500)
    for header, value in err.get_headers():
        if header.lower() != "content-type":
            response.headers[header] = value
    return response


def _server_fault(err: Exception) -> Response:
    _log_fault(request.method, request.path)
    return _error(_FAULT, 500)


def _log_fault(method: str, path: str) -> None:
    """Log the error being handled, with its traceback."""
    log.exception(
        "unhandled error answering %s %s",
        method,
        path,
        extra={"fields": {"method": method, "path": path}},
    )


def _since(start: float) -> float:
    return time.perf_counter() - start
