"""The Open Inference Protocol's gRPC tensors: pure functions, no grpc server, no onnxruntime.

A ``ModelInferRequest`` gives each input's values either typed (in the one repeated field
of ``contents`` that fits its datatype: ``fp32_contents`` for FP32...) or raw
(``raw_input_contents``: one row-major little-endian buffer per input, in the order of
``inputs``, for every input or for none). The response carries every output raw
(``raw_output_contents``), as Triton answers. Messages are tritonclient's generated ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from serving.errors import BadRequestError
from serving.v2codec import (
    array_from_values,
    checked_shape,
    little_endian_bytes,
    numpy_dtype,
    v2_datatype,
)

__all__ = ["decode_inputs", "decode_outputs", "encode_response"]

CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
"""v2 datatype -> its typed contents field (FP16 has none: it travels raw)."""


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The input tensors of a request, checked: ``{name: array}`` in the order given.

    Raises:
        BadRequestError: no inputs, an unknown datatype, a negative dimension, values in
            the wrong field, or values whose count or byte size does not match the shape;
            the message names the input.
    """
    raw = request.raw_input_contents
    if not request.inputs:
        raise BadRequestError("the inference request needs 'inputs': a non-empty list of tensors")
    if raw and len(raw) != len(request.inputs):
        raise BadRequestError(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs: "
            "send every input raw, or none"
        )
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in arrays:
            raise BadRequestError(f"input {name!r} is given twice")
        shape = checked_shape(list(tensor.shape), name)
        if raw:
            arrays[name] = _from_raw(raw[index], name, tensor.datatype, shape)
        else:
            arrays[name] = _from_contents(tensor, shape)
    return arrays


def _from_raw(blob: bytes, name: str, datatype: str, shape: list[int]) -> np.ndarray:
    dtype = numpy_dtype(datatype, f"input {name!r}")
    expected = math.prod(shape) * dtype.itemsize
    if len(blob) != expected:
        raise BadRequestError(
            f"input {name!r}: raw_input_contents holds {len(blob)} bytes, but shape {shape} "
            f"of {datatype} takes {expected}"
        )
    return np.frombuffer(blob, dtype=dtype).reshape(shape)


def _from_contents(tensor: pb.ModelInferRequest.InferInputTensor, shape: list[int]) -> np.ndarray:
    name, datatype = tensor.name, tensor.datatype
    numpy_dtype(datatype, f"input {name!r}")  # raises for an unknown datatype
    field = CONTENTS.get(datatype)
    if field is None:
        raise BadRequestError(
            f"input {name!r} of {datatype} has no typed contents field: send it in "
            "raw_input_contents"
        )
    given = [f.name for f, _ in tensor.contents.ListFields()]
    if given not in ([], [field]):
        raise BadRequestError(
            f"input {name!r} of {datatype} takes its values in contents.{field}, not in "
            f"{', '.join(f'contents.{g}' for g in given)}"
        )
    values = getattr(tensor.contents, field)
    return array_from_values(list(values), name, datatype, shape, field=f"contents.{field}")


def decode_outputs(request: pb.ModelInferRequest) -> list[str] | None:
    """The names of the outputs a request asks for, in order (None: all)."""
    names = [output.name for output in request.outputs]
    if len(set(names)) != len(names):
        raise BadRequestError(f"an output is requested twice: {names}")
    return names or None


def encode_response(
    model_name: str, version: int, request_id: str, outputs: Mapping[str, np.ndarray]
) -> pb.ModelInferResponse:
    """The response: each output described, and its bytes in ``raw_output_contents``."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=str(version), id=request_id
    )
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype=v2_datatype(array.dtype), shape=array.shape)
        response.raw_output_contents.append(little_endian_bytes(array))
    return response
