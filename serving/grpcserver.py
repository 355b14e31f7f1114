"""Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), so
``tritonclient.grpc`` and coffea's ``triton_wrapper`` work unchanged.

RPCs only: messages are tritonclient's generated ones (:mod:`serving.grpccodec` turns
tensors into arrays and back), the work is done by the :class:`~serving.dataplane.DataPlane`
and the :class:`~serving.repository.Repository` of the process's Flask app, the very
objects its REST routes use. Every server process (the werkzeug one, or each gunicorn
worker) runs its own ``grpc.server`` with a thread pool on the same port: gRPC sets
``SO_REUSEPORT``, so the kernel spreads connections over the processes. Domain errors
become their gRPC status (:mod:`serving.errors`); any other exception is a logged INTERNAL.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from serving.auth import check_token
from serving.errors import (
    BadRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    ServingError,
)
from serving.grpccodec import decode_inputs, decode_outputs, encode_response
from serving.metrics import ModelStatistics, Tally

if TYPE_CHECKING:
    from flask import Flask

    from serving.app import Services

__all__ = ["EXTENSIONS", "InferenceService", "start_grpc_server"]

EXTENSIONS = ["model_repository", "model_configuration", "statistics"]
THREADS = 8  # RPCs one process answers at once
MISSING_METADATA = "this RPC needs the metadata 'authorization: Bearer <token>'"

log = logging.getLogger("serving.grpc")
request_log = logging.getLogger("serving.requests")
Request = TypeVar("Request")


def start_grpc_server(app: Flask, address: str) -> grpc.Server:
    """Serve ``inference.GRPCInferenceService`` on ``address`` (``host:port``) from the
    app's data plane and repository; the server is started, stop it with ``.stop(grace)``.

    Raises:
        RuntimeError: the address cannot be bound.
    """
    services: Services = app.extensions["rootstream"]
    largest = max(services.config.max_request_bytes, services.config.max_upload_bytes)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", largest), ("grpc.so_reuseport", 1)],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(services), server)
    server.add_insecure_port(address)
    server.start()
    return server


def _rpc(method: Callable[[Any, Request, Any], Any]) -> Callable[[Any, Request, Any], Any]:
    """Answer errors with their gRPC status (and log them); a fault is a logged INTERNAL."""

    @functools.wraps(method)
    def answer(self: Any, request: Request, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            response = method(self, request, context)
        except ServingError as err:
            _log_request(method.__name__, err.grpc_status, start, err.message)
            context.abort(getattr(grpc.StatusCode, err.grpc_status), err.message)
        except Exception:
            log.exception("unhandled error answering the RPC %s", method.__name__)
            _log_request(method.__name__, "INTERNAL", start, "internal server error")
            context.abort(grpc.StatusCode.INTERNAL, "internal server error (logged on the server)")
        _log_request(method.__name__, "OK", start, None)
        return response

    return answer


def _log_request(rpc: str, code: str, start: float, error: str | None) -> None:
    """One record per RPC on ``serving.requests``: DEBUG when OK, INFO for a client error,
    WARNING for a server fault (as the REST side logs requests)."""
    level = (
        logging.DEBUG if error is None else logging.WARNING if code == "INTERNAL" else logging.INFO
    )
    if request_log.isEnabledFor(level):
        fields = {
            "rpc": rpc,
            "code": code,
            "duration_ms": round(1000 * (time.perf_counter() - start), 3),
        }
        if error is not None:
            fields["error"] = error
        request_log.log(level, "gRPC %s %s", rpc, code, extra={"fields": fields})


def _version(text: str) -> int | None:
    """A request's model version: '' is the latest."""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise BadRequestError(f"model version {text!r} must be a positive integer")
    return int(text)


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs, each a thin translation to the data plane or the repository.

    Args:
        services: the Flask app's config, data plane, repository and metrics.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.plane, self.repository = services.plane, services.repository

    def _authorize(self, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata())
        check_token(self.services.config.token, metadata.get("authorization", ""), MISSING_METADATA)

    # ----------------------------------------------------------------- health and metadata
    @_rpc
    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    @_rpc
    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        """Not ready (no error) when the model is unknown, unloaded or misconfigured, as
        Triton answers."""
        version = _version(request.version)
        try:
            self.plane.ready_model(request.name, version)
        except (BadRequestError, ModelNotFoundError):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_rpc
    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.plane.server_metadata(), extensions=EXTENSIONS)

    @_rpc
    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        metadata = self.plane.metadata(request.name, _version(request.version))
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse())

    @_rpc
    def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = self.plane.config(request.name, _version(request.version))
        return pb.ModelConfigResponse(config=config)

    @_rpc
    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        """Per model version: requests that succeeded and failed (count, time), rows, model
        runs, and for a batched model its requests' queue time and runs by batch size."""
        entries = self.plane.statistics(request.name or None, _version(request.version))
        return pb.ModelStatisticsResponse(
            model_stats=[_statistics(name, version, counts) for name, version, counts in entries]
        )

    # ----------------------------------------------------------------- inference
    @_rpc
    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        limit = self.services.config.max_request_bytes
        if request.ByteSize() > limit:
            raise PayloadTooLargeError(f"the request exceeds the limit of {limit} bytes")
        tensors, outputs = decode_inputs(request), decode_outputs(request)
        version = _version(request.model_version)
        model, arrays = self.plane.infer(request.model_name, version, tensors, outputs)
        return encode_response(request.model_name, model.version, request.id, arrays)

    # ----------------------------------------------------------------- repository extension
    @_rpc
    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        self._authorize(context)
        entries = self.repository.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in entries]
        )

    @_rpc
    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        """``parameters``: ``config`` (JSON text, as ``string_param``) and
        ``file:<v>/model.onnx`` (ONNX bytes, as ``bytes_param``)."""
        self._authorize(context)
        config, files = None, {}
        for key, parameter in request.parameters.items():
            if key == "config":
                config = _parameter(parameter, key, "string_param")
            elif key.startswith("file:"):
                files[key] = _parameter(parameter, key, "bytes_param")
        self.repository.load(request.model_name, files, config)
        return pb.RepositoryModelLoadResponse()

    @_rpc
    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self._authorize(context)
        self.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _parameter(parameter: pb.ModelRepositoryParameter, key: str, kind: str) -> Any:
    given = parameter.WhichOneof("parameter_choice")
    if given != kind:
        raise BadRequestError(f"parameter {key!r} must be a {kind}, not a {given}")
    return getattr(parameter, kind)


def _statistics(name: str, version: int, counts: ModelStatistics) -> pb.ModelStatistics:
    def duration(tally: Tally) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=tally.count, ns=round(tally.seconds * 1e9))

    return pb.ModelStatistics(
        name=name,
        version=str(version),
        inference_count=counts.rows,
        execution_count=counts.executions,
        inference_stats=pb.InferStatistics(
            success=duration(counts.success),
            fail=duration(counts.failure),
            queue=duration(counts.queue),
        ),
        batch_stats=[
            pb.InferBatchStatistics(batch_size=size, compute_infer=duration(tally))
            for size, tally in sorted(counts.batches.items())
        ],
    )
