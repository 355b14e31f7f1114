"""The Open Inference Protocol (KServe v2) body codec: pure functions, no Flask, no onnxruntime.

An infer body is a JSON object, optionally followed by raw tensors (the *binary tensor
data* extension): the header ``Inference-Header-Content-Length`` gives the length of the
JSON part, and each binary tensor says its byte count in ``parameters.binary_data_size``;
the tensors follow one another, row-major, little-endian, in the order they are listed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.datatypes import DATATYPES, jsonable
from serving.errors import BadRequestError

__all__ = [
    "RequestedOutput",
    "array_from_values",
    "checked_shape",
    "decode_inputs",
    "decode_outputs",
    "encode_response",
    "little_endian_bytes",
    "numpy_dtype",
    "split_body",
    "v2_datatype",
]


_KINDS = {"BOOL": "b", **{k: "biu" for k in DATATYPES if "INT" in k}}  # ints accept bools


def little_endian_bytes(array: np.ndarray) -> bytes:
    """The array's elements as the protocol sends them: row-major, little-endian."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def v2_datatype(dtype: np.dtype) -> str:
    """The v2 datatype of a numpy dtype (``float32`` -> ``FP32``)."""
    for name, candidate in DATATYPES.items():
        if candidate == dtype.newbyteorder("<"):
            return name
    raise BadRequestError(f"numpy dtype {dtype} has no v2 datatype")


@dataclass(frozen=True)
class RequestedOutput:
    """An output the request asks for, and whether it wants it as binary data."""

    name: str
    binary: bool


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """Split an infer body into its JSON object and the binary data after it.

    Args:
        body: the whole request body.
        header_length: the ``Inference-Header-Content-Length`` header (None: all JSON).

    Returns:
        The JSON object and the bytes after it (empty without binary data).
    """
    view = memoryview(body)
    if header_length is None:
        size = len(body)
    else:
        text = header_length.strip()
        if not text.isdigit() or int(text) > len(body):
            raise BadRequestError(
                f"Inference-Header-Content-Length is {header_length!r}: it must be the byte "
                f"length of the JSON header, an integer from 0 to the body size {len(body)}"
            )
        size = int(text)
    try:
        header = json.loads(bytes(view[:size]))
    except (ValueError, UnicodeDecodeError) as err:
        where = "the body" if header_length is None else f"the first {size} bytes of the body"
        raise BadRequestError(f"{where} are not a JSON object: {err}") from None
    if not isinstance(header, dict):
        raise BadRequestError("the inference request must be a JSON object with 'inputs'")
    return header, view[size:]


def decode_inputs(header: Mapping[str, Any], binary: memoryview) -> dict[str, np.ndarray]:
    """The input tensors of a request, checked: ``{name: array}`` in the order given.

    Raises:
        BadRequestError: a missing or malformed field, an unknown datatype, or data whose
            size does not match ``shape`` and ``datatype``; the message names the input.
    """
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError("the inference request needs 'inputs': a non-empty list of tensors")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise BadRequestError(f"inputs[{index}] must be an object with name, shape, datatype")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise BadRequestError(f"inputs[{index}] needs a string 'name'")
        if name in arrays:
            raise BadRequestError(f"input {name!r} is given twice")
        datatype = tensor.get("datatype")
        dtype = numpy_dtype(datatype, f"input {name!r}")
        shape = checked_shape(tensor.get("shape"), name)
        size = _binary_size(tensor.get("parameters"), name)
        if size is not None:
            if "data" in tensor:
                raise BadRequestError(f"input {name!r} has both 'data' and binary_data_size")
            expected = math.prod(shape) * dtype.itemsize
            if size != expected:
                raise BadRequestError(
                    f"input {name!r}: binary_data_size is {size} bytes, but shape {shape} of "
                    f"{datatype} takes {expected}"
                )
            if offset + size > len(binary):
                raise BadRequestError(
                    f"input {name!r}: the body ends after {len(binary)} bytes of binary data, "
                    f"{offset + size} needed (truncated body or wrong header length?)"
                )
            array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
            offset += size
        elif "data" in tensor:
            array = array_from_values(tensor["data"], name, datatype, shape)
        else:
            raise BadRequestError(
                f"input {name!r} has neither 'data' nor parameters.binary_data_size"
            )
        arrays[name] = array
    if offset != len(binary):
        raise BadRequestError(
            f"the body holds {len(binary)} bytes after the JSON header, but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    return arrays


def numpy_dtype(datatype: Any, what: str) -> np.dtype:
    """The numpy dtype of a v2 datatype (``FP32``); ``what`` names the tensor in errors."""
    if datatype not in DATATYPES:
        supported = ", ".join(DATATYPES)
        raise BadRequestError(f"{what} has datatype {datatype!r}; supported: {supported}")
    return DATATYPES[datatype]


def checked_shape(shape: Any, name: str) -> list[int]:
    """``shape`` when it is a list of non-negative integers (it names input ``name``)."""
    ok = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape
    )
    if not ok:
        raise BadRequestError(f"input {name!r} needs 'shape': a list of non-negative integers")
    return shape


def _binary_size(parameters: Any, name: str) -> int | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise BadRequestError(f"the parameters of {name!r} must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequestError(f"input {name!r}: binary_data_size must be a non-negative integer")
    return size


def array_from_values(
    values: Any, name: str, datatype: str, shape: list[int], field: str = "'data'"
) -> np.ndarray:
    """An input's array from its values (nested or flat, row-major), checked.

    Args:
        values: the values (JSON lists, or a protobuf repeated field).
        name, datatype, shape: the input's, as the request gives them.
        field: where the values were, for errors.

    Raises:
        BadRequestError: ragged values, values of another kind or out of the datatype's
            range, or a count that does not match ``shape``.
    """
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise BadRequestError(f"input {name!r}: {field} is ragged") from None
    allowed = _KINDS.get(datatype, "biuf")
    if array.size and array.dtype.kind not in allowed:
        want = {"b": "true/false", "biu": "integers"}.get(allowed, "numbers")
        raise BadRequestError(f"input {name!r} of {datatype}: {field} must hold {want}")
    count = math.prod(shape)
    if array.size != count:
        raise BadRequestError(
            f"input {name!r}: {field} holds {array.size} values, shape {shape} needs {count}"
        )
    dtype = DATATYPES[datatype]
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            converted = array.astype(dtype).reshape(shape)
    except (OverflowError, ValueError):
        raise BadRequestError(f"input {name!r}: values out of {datatype} range") from None
    if dtype.kind in "iu" and not np.array_equal(converted.reshape(array.shape), array):
        raise BadRequestError(f"input {name!r}: values out of {datatype} range")
    return converted


def decode_outputs(header: Mapping[str, Any]) -> tuple[list[RequestedOutput] | None, bool]:
    """The outputs a request asks for (None: all), each with its binary flag.

    ``binary_data_output`` in the request's parameters is the default of every output;
    an output's own ``binary_data`` parameter overrides it.

    Returns:
        The requested outputs (None when the request names none) and the default flag.
    """
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequestError("the request's 'parameters' must be an object")
    default = parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise BadRequestError("parameters.binary_data_output must be true or false")
    outputs = header.get("outputs")
    if outputs is None:
        return None, default
    if not isinstance(outputs, list):
        raise BadRequestError("'outputs' must be a list of objects with 'name'")
    requested = []
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise BadRequestError(f"outputs[{index}] must be an object with a string 'name'")
        own = output.get("parameters") or {}
        if not isinstance(own, dict):
            raise BadRequestError(f"the parameters of output {output['name']!r} must be an object")
        binary = own.get("binary_data", default)
        if not isinstance(binary, bool):
            raise BadRequestError(f"output {output['name']!r}: binary_data must be true or false")
        requested.append(RequestedOutput(output["name"], binary))
    return requested, default


def encode_response(
    header: Mapping[str, Any], outputs: list[tuple[str, np.ndarray, bool]]
) -> tuple[bytes, int | None]:
    """The response body: JSON (with ``model_name``, ``id``...) plus binary outputs.

    Args:
        header: the response's fields other than ``outputs``.
        outputs: ``(name, array, binary)`` for each output, in order.

    Returns:
        The body, and the length of its JSON part when binary data follows (else None).
    """
    described, blobs = [], []
    for name, array, binary in outputs:
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": v2_datatype(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            blob = little_endian_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = jsonable(array.reshape(-1))
        described.append(tensor)
    text = json.dumps({**header, "outputs": described}, separators=(",", ":")).encode()
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)
