"""The errors of the inference server, each carrying its HTTP status.

Routes, the data plane, the store and the runtime raise these; one handler in
:mod:`serving.app` turns them into ``{"error": "..."}`` responses. No Flask here.
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "InvalidModelError",
    "InvalidNameError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelUnavailableError",
    "PayloadTooLargeError",
    "ServingError",
    "UnauthorizedError",
]


class ServingError(Exception):
    """Base class: ``status`` is the HTTP status, the message says what is wrong and where."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(ServingError):
    """The request body is malformed: bad JSON, wrong shape or dtype, an invalid event."""

    status = 400


class InvalidModelError(BadRequestError):
    """An upload is no valid, self-contained ONNX model that onnxruntime can load."""


class ModelNotReadyError(BadRequestError):
    """A model that exists is unloaded: 400, as Triton answers ``/v2/models/<m>/ready``."""


class InvalidNameError(BadRequestError):
    """A model name or version is not allowed."""


class UnauthorizedError(ServingError):
    """A management request lacks the ``Authorization: Bearer`` header."""

    status = 401


class ForbiddenError(ServingError):
    """A management request carries the wrong token."""

    status = 403


class ModelNotFoundError(ServingError):
    """No such model, or no such version of it."""

    status = 404


class ConflictError(ServingError):
    """The request raced with another one (a model deleted during its own upload)."""

    status = 409


class PayloadTooLargeError(ServingError):
    """An upload or a request body exceeds the configured size."""

    status = 413


class ModelUnavailableError(ServingError):
    """The model exists but was unloaded (Open Inference Protocol repository extension)."""

    status = 503
