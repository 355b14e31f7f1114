"""Tensor element types: onnxruntime's names, the Open Inference Protocol's, numpy's (one
table), and arrays as JSON values.

Pure (numpy): the model runtime and the KServe v2 codec both read it, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DATATYPES", "ONNX_DATATYPES", "ONNX_DTYPES", "jsonable"]

# onnxruntime type string, v2 datatype, numpy dtype (little-endian, as on the wire; None: no
# numpy type serves it, so it is refused with a clear error)
_TABLE: tuple[tuple[str, str, np.dtype | None], ...] = (
    ("tensor(bool)", "BOOL", np.dtype(np.bool_)),
    ("tensor(int8)", "INT8", np.dtype("<i1")),
    ("tensor(int16)", "INT16", np.dtype("<i2")),
    ("tensor(int32)", "INT32", np.dtype("<i4")),
    ("tensor(int64)", "INT64", np.dtype("<i8")),
    ("tensor(uint8)", "UINT8", np.dtype("<u1")),
    ("tensor(uint16)", "UINT16", np.dtype("<u2")),
    ("tensor(uint32)", "UINT32", np.dtype("<u4")),
    ("tensor(uint64)", "UINT64", np.dtype("<u8")),
    ("tensor(float16)", "FP16", np.dtype("<f2")),
    ("tensor(float)", "FP32", np.dtype("<f4")),
    ("tensor(double)", "FP64", np.dtype("<f8")),
    ("tensor(string)", "BYTES", None),
    ("tensor(bfloat16)", "BF16", None),
)

DATATYPES: dict[str, np.dtype] = {v2: dtype for _, v2, dtype in _TABLE if dtype is not None}
"""v2 datatype -> numpy dtype."""

ONNX_DATATYPES: dict[str, str] = {onnx: v2 for onnx, v2, _ in _TABLE}
"""onnxruntime type string -> v2 datatype."""

ONNX_DTYPES: dict[str, np.dtype] = {onnx: d for onnx, _, d in _TABLE if d is not None}
"""onnxruntime type string -> numpy dtype."""


def jsonable(array: np.ndarray) -> Any:
    """An array as nested lists; NaN and infinities (not JSON) become null."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return np.where(np.isfinite(array), array, None).tolist()
    return array.tolist()
