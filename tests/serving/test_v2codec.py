"""The KServe v2 body codec on its own: datatypes, binary split/join, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.datatypes import DATATYPES, jsonable
from serving.errors import BadRequestError
from serving.v2codec import (
    RequestedOutput,
    decode_inputs,
    decode_outputs,
    encode_response,
    split_body,
    v2_datatype,
)


def sample(datatype: str, shape=(2, 3)) -> np.ndarray:
    dtype = DATATYPES[datatype]
    values = np.arange(-3, -3 + int(np.prod(shape))).reshape(shape)
    if dtype.kind == "b":
        return values % 2 == 0
    if dtype.kind == "u":
        top = np.iinfo(dtype).max  # values near the top of the range
        return (top - np.arange(values.size, dtype=dtype)).reshape(shape)
    return (values * 1.5 if dtype.kind == "f" else values).astype(dtype)


def binary_request(arrays: dict[str, np.ndarray], **extra) -> tuple[bytes, str]:
    inputs = [
        {
            "name": name,
            "datatype": v2_datatype(a.dtype),
            "shape": list(a.shape),
            "parameters": {"binary_data_size": a.nbytes},
        }
        for name, a in arrays.items()
    ]
    text = json.dumps({"inputs": inputs, **extra}).encode()
    return text + b"".join(
        a.astype(a.dtype.newbyteorder("<")).tobytes() for a in arrays.values()
    ), str(len(text))


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_binary_inputs_round_trip(datatype):
    arrays = {"a": sample(datatype), "b": sample(datatype, (4,))}
    body, length = binary_request(arrays)
    header, binary = split_body(body, length)
    decoded = decode_inputs(header, binary)
    assert list(decoded) == ["a", "b"]
    for name, array in arrays.items():
        assert decoded[name].dtype == array.dtype
        np.testing.assert_array_equal(decoded[name], array)


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("nested", [False, True])
def test_json_inputs_flat_or_nested(datatype, nested):
    array = sample(datatype)
    data = array.tolist() if nested else array.reshape(-1).tolist()
    body = json.dumps(
        {"inputs": [{"name": "a", "datatype": datatype, "shape": [2, 3], "data": data}]}
    )
    decoded = decode_inputs(*split_body(body.encode(), None))
    assert decoded["a"].dtype == DATATYPES[datatype]
    np.testing.assert_array_equal(decoded["a"], array)


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("binary", [False, True])
def test_encoded_outputs_decode_back(datatype, binary):
    array = sample(datatype, (3, 2))
    body, length = encode_response({"model_name": "m", "id": "7"}, [("out", array, binary)])
    assert (length is not None) == binary
    header = json.loads(body[:length] if binary else body)
    assert header["id"] == "7"
    (out,) = header["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("out", datatype, [3, 2])
    if binary:
        assert out["parameters"]["binary_data_size"] == array.nbytes == len(body) - length
        back = np.frombuffer(body[length:], dtype=DATATYPES[datatype]).reshape(3, 2)
    else:
        back = np.array(out["data"], dtype=DATATYPES[datatype]).reshape(3, 2)
    np.testing.assert_array_equal(back, array)


def test_non_finite_json_outputs_become_null():
    body, _ = encode_response({}, [("o", np.array([1.0, np.nan, np.inf], np.float32), False)])
    assert json.loads(body)["outputs"][0]["data"] == [1.0, None, None]


def test_requested_outputs_and_binary_defaults():
    assert decode_outputs({}) == (None, False)
    assert decode_outputs({"parameters": {"binary_data_output": True}}) == (None, True)
    header = {
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
    }
    assert decode_outputs(header) == (
        [RequestedOutput("a", True), RequestedOutput("b", False)],
        True,
    )


def error_of(body: bytes, length: str | None) -> str:
    with pytest.raises(BadRequestError) as info:
        decode_inputs(*split_body(body, length))
    return info.value.message


def test_malformed_bodies_are_bad_requests():
    x = np.ones((2, 3), np.float32)
    body, length = binary_request({"x": x})
    assert "truncated" in error_of(body[:-1], length)
    assert "Inference-Header-Content-Length" in error_of(body, str(len(body) + 1))
    assert "Inference-Header-Content-Length" in error_of(body, "-3")
    assert "not a JSON object" in error_of(body, str(int(length) - 1))
    assert "add up to 24" in error_of(body + b"\0", length)
    bad_size = body.replace(b'"binary_data_size": 24', b'"binary_data_size": 20')
    assert "takes 24" in error_of(bad_size, str(int(length)))

    def json_body(**tensor):
        return json.dumps({"inputs": [{"name": "x", **tensor}]}).encode()

    assert "holds 5 values" in error_of(
        json_body(datatype="FP32", shape=[2, 3], data=[1, 2, 3, 4, 5]), None
    )
    assert "supported: BOOL" in error_of(json_body(datatype="FP8", shape=[1], data=[1]), None)
    assert "supported: BOOL" in error_of(json_body(datatype="BYTES", shape=[1], data=["a"]), None)
    assert "non-negative integers" in error_of(
        json_body(datatype="FP32", shape=[-1], data=[1]), None
    )
    assert "integers" in error_of(json_body(datatype="INT8", shape=[1], data=[1.5]), None)
    assert "out of INT8 range" in error_of(json_body(datatype="INT8", shape=[1], data=[300]), None)
    assert "true/false" in error_of(json_body(datatype="BOOL", shape=[1], data=[1]), None)
    assert "ragged" in error_of(json_body(datatype="FP32", shape=[2, 2], data=[[1, 2], [3]]), None)
    assert "neither" in error_of(json_body(datatype="FP32", shape=[1]), None)
    assert "'inputs'" in error_of(b'{"inputs": []}', None)
    assert "JSON object" in error_of(b"[1, 2]", None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_arrays_become_json_with_null_for_nan_and_infinities(dtype):
    array = np.array([[1.5, np.nan], [np.inf, -np.inf]] if dtype != np.int64 else [[1, 2]], dtype)
    values = jsonable(array)
    expected = [[None if not np.isfinite(v) else v.item() for v in row] for row in array]
    assert values == expected
    json.dumps(values, allow_nan=False)  # valid JSON: no NaN or Infinity tokens
