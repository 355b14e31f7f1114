"""The errors of the inference server, each carrying its HTTP status and its gRPC status code.

Routes, the data plane, the store and the runtime raise these; one handler in
:mod:`serving.app` turns them into ``{"error": "..."}`` responses, one in
:mod:`serving.grpcserver` into gRPC statuses. No Flask and no grpc here: the gRPC code is
the name of a ``grpc.StatusCode`` member.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadRequestError",
    "ConflictError",
    "ForbiddenError",
    "InvalidConfigError",
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
    """Base class: the message says what is wrong and where.

    Attributes:
        status: the HTTP status.
        grpc_status: the gRPC status code, a ``grpc.StatusCode`` member's name.
    """

    status = 500
    grpc_status = "INTERNAL"

    def __init_subclass__(cls, *, status: int | None = None, grpc: str | None = None, **kw: Any):
        super().__init_subclass__(**kw)
        cls.status = cls.status if status is None else status
        cls.grpc_status = cls.grpc_status if grpc is None else grpc

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# The table: each error with its HTTP status and gRPC status code (subclasses inherit both).
class BadRequestError(ServingError, status=400, grpc="INVALID_ARGUMENT"):
    """The request is malformed: bad JSON or protobuf, wrong shape or dtype, an invalid event."""


class InvalidModelError(BadRequestError):
    """An upload is no valid, self-contained ONNX model that onnxruntime can load."""


class InvalidConfigError(BadRequestError):
    """A model configuration (``config.pbtxt``) is malformed or does not fit its model."""


class ModelNotReadyError(BadRequestError):
    """A model that exists is unloaded: 400, as Triton answers ``/v2/models/<m>/ready``."""


class InvalidNameError(BadRequestError):
    """A model name or version is not allowed."""


class UnauthorizedError(ServingError, status=401, grpc="UNAUTHENTICATED"):
    """A protected request lacks the ``Authorization: Bearer`` header (or gRPC metadata)."""


class ForbiddenError(ServingError, status=403, grpc="PERMISSION_DENIED"):
    """A protected request carries the wrong token."""


class ModelNotFoundError(ServingError, status=404, grpc="NOT_FOUND"):
    """No such model, or no such version of it."""


class ConflictError(ServingError, status=409, grpc="ABORTED"):
    """The request raced with another one (a model deleted during its own upload)."""


class PayloadTooLargeError(ServingError, status=413, grpc="RESOURCE_EXHAUSTED"):
    """An upload or a request body exceeds the configured size."""


class ModelUnavailableError(ServingError, status=503, grpc="UNAVAILABLE"):
    """The model exists but was unloaded, or its stored configuration is invalid."""
