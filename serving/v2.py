"""Open Inference Protocol (KServe v2) REST routes, so ``tritonclient.http`` works unchanged.

HTTP only: the bodies are parsed and written by :mod:`serving.v2codec`, the work is done by
the :class:`~serving.dataplane.DataPlane` (and the repository extension's by the
:class:`~serving.repository.Repository`). ``protocol`` holds health, metadata and infer;
``repository`` the model-repository extension (protected by the token, like management).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from serving.auth import authorize_changes
from serving.dataplane import DataPlane
from serving.errors import BadRequestError
from serving.modelconfig import config_as_dict
from serving.repository import Repository
from serving.v2codec import (
    decode_inputs,
    decode_outputs,
    encode_response,
    split_body,
)

__all__ = ["EXTENSIONS", "protocol", "repository"]

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]
HEADER_LENGTH = "Inference-Header-Content-Length"

protocol = Blueprint("v2", __name__)
repository = Blueprint("v2_repository", __name__)
repository.before_request(authorize_changes)  # it changes models, as management does


def _plane() -> DataPlane:
    return current_app.extensions["rootstream"].plane


def _repository() -> Repository:
    return current_app.extensions["rootstream"].repository


# ----------------------------------------------------------------- health and metadata
@protocol.get("/v2")
def server_metadata() -> Response:
    return jsonify(**_plane().server_metadata(), extensions=EXTENSIONS)


@protocol.get("/v2/health/live")
def live() -> Response:
    return jsonify(live=True)


@protocol.get("/v2/health/ready")
def ready() -> Response:
    return jsonify(ready=True)


@protocol.get("/v2/models/<name>/ready")
@protocol.get("/v2/models/<name>/versions/<int:version>/ready")
def model_ready(name: str, version: int | None = None) -> Response:
    _plane().ready_model(name, version)
    return jsonify(name=name, ready=True)


@protocol.get("/v2/models/<name>")
@protocol.get("/v2/models/<name>/versions/<int:version>")
def model_metadata(name: str, version: int | None = None) -> Response:
    return jsonify(_plane().metadata(name, version))


@protocol.get("/v2/models/<name>/config")
@protocol.get("/v2/models/<name>/versions/<int:version>/config")
def model_config(name: str, version: int | None = None) -> Response:
    """The model's Triton configuration: its config.pbtxt completed, or derived."""
    return jsonify(config_as_dict(_plane().config(name, version)))


# ----------------------------------------------------------------- inference
@protocol.post("/v2/models/<name>/infer")
@protocol.post("/v2/models/<name>/versions/<int:version>/infer")
def infer(name: str, version: int | None = None) -> Response:
    header, binary = split_body(request.get_data(), request.headers.get(HEADER_LENGTH))
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError("the request 'id' must be a string")
    tensors = decode_inputs(header, binary)
    requested, binary_default = decode_outputs(header)
    names = None if requested is None else [o.name for o in requested]
    if names is not None and len(set(names)) != len(names):
        raise BadRequestError(f"an output is requested twice: {names}")
    model, arrays = _plane().infer(name, version, tensors, names)
    if requested is None:
        flags = dict.fromkeys(arrays, binary_default)
    else:
        flags = {o.name: o.binary for o in requested}
    answer: dict[str, Any] = {"model_name": name, "model_version": str(model.version)}
    if request_id is not None:
        answer["id"] = request_id
    body, json_size = encode_response(answer, [(n, a, flags[n]) for n, a in arrays.items()])
    if json_size is None:
        return Response(body, content_type="application/json")
    response = Response(body, content_type="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(json_size)
    return response


# ----------------------------------------------------------------- repository extension
def _json_object(what: str) -> dict[str, Any]:
    raw = request.get_data()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequestError(f"the {what} body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise BadRequestError(f"the {what} body must be a JSON object")
    return body


def _parameters(body: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequestError(f"the {what} 'parameters' must be an object")
    return parameters


@repository.post("/v2/repository/index")
def repository_index() -> Response:
    body = _json_object("index")
    only_ready = body.get("ready", False)
    if not isinstance(only_ready, bool):
        raise BadRequestError("'ready' must be true or false")
    return jsonify(_repository().index(ready_only=only_ready))


@repository.post("/v2/repository/models/<name>/load")
def repository_load(name: str) -> Response:
    parameters = _parameters(_json_object("load"), "load")
    config = parameters.get("config")
    if config is not None and not isinstance(config, str):
        raise BadRequestError("parameters.config must be a JSON object in a string")
    files = {}
    for key, value in parameters.items():
        if not key.startswith("file:"):
            continue
        if not isinstance(value, str):
            raise BadRequestError(f"parameter {key!r} must be base64 text")
        try:
            files[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError(f"parameter {key!r} is not valid base64") from None
    _repository().load(name, files, config)
    return jsonify({})


@repository.post("/v2/repository/models/<name>/unload")
def repository_unload(name: str) -> Response:
    _parameters(_json_object("unload"), "unload")
    _repository().unload(name)
    return jsonify({})
