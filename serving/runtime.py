"""onnxruntime sessions: load a model, turn request values into checked arrays, run it.

No Flask here. A :class:`Model` is one loaded version of a stored model (with its
:class:`~serving.batcher.Batcher` when its configuration batches); the
:class:`ModelCache` keeps the models this process has loaded. Raw events go through
:func:`rootstream.preprocess.columns_from_events` and :func:`rootstream.preprocess.assemble`,
the very functions the training dataset uses.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from rootstream.errors import InvalidEventError
from rootstream.metadata import ModelSpec
from rootstream.preprocess import assemble, columns_from_events
from serving.batcher import Batcher, BatchSettings, Run
from serving.datatypes import ONNX_DATATYPES, ONNX_DTYPES
from serving.errors import BadRequestError, InvalidModelError
from serving.modelconfig import batch_settings, complete_config, derive_config, read_config
from serving.store import ConfigFile, ModelFile

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = ["Configuration", "Model", "ModelCache", "TensorInfo", "signature"]


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, shape (None for a dynamic axis) and ONNX type."""

    name: str
    shape: tuple[int | None, ...]
    type: str

    @classmethod
    def of(cls, arg: Any) -> TensorInfo:
        shape = arg.shape if isinstance(arg.shape, list) else []
        return cls(arg.name, tuple(d if isinstance(d, int) else None for d in shape), arg.type)

    @property
    def dtype(self) -> np.dtype | None:
        return ONNX_DTYPES.get(self.type)

    def metadata(self) -> dict[str, Any]:
        """``{"name", "datatype", "shape"}`` as the Open Inference Protocol describes tensors."""
        return {
            "name": self.name,
            "datatype": ONNX_DATATYPES.get(self.type, self.type),
            "shape": [-1 if d is None else d for d in self.shape],
        }

    def signature(self) -> str:
        """``[N, 28] float32``: the shape (N for a dynamic axis) and dtype, for messages."""
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"[{dims}] {self.dtype.name if self.dtype is not None else self.type}"

    def describe(self) -> dict[str, Any]:
        """``{"name", "shape", "dtype"}``; a dynamic axis is -1 (as in KServe and Triton)."""
        dtype = self.dtype.name if self.dtype is not None else self.type
        return {
            "name": self.name,
            "shape": [-1 if d is None else d for d in self.shape],
            "dtype": dtype,
        }


@dataclass(frozen=True)
class Configuration:
    """A model's configuration, and what its requests need of it.

    Attributes:
        config: the stored ``config.pbtxt`` completed, or the derived configuration.
        max_rows: the most rows one request may hold: the stored ``max_batch_size`` (None:
            any, without ``config.pbtxt`` or with ``max_batch_size: 0``).
        batching: the dynamic batcher's settings; None when requests run as they come.
    """

    config: ModelConfig
    max_rows: int | None
    batching: BatchSettings | None


def _session(path: str | os.PathLike, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def signature(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The inputs and outputs of the model at ``path``, loaded by onnxruntime.

    Raises:
        InvalidModelError: onnxruntime cannot load it.
    """
    try:
        session = _session(path, 1)
    except Exception as err:  # onnxruntime raises its own types for every kind of failure
        raise InvalidModelError(f"onnxruntime cannot load the model: {err}") from None
    inputs = [TensorInfo.of(i) for i in session.get_inputs()]
    return inputs, [TensorInfo.of(o) for o in session.get_outputs()]


class Model:
    """One loaded model version: its onnxruntime session, signature, rootstream spec and,
    once a batched request came, its dynamic batcher.

    Args:
        model_file: the stored version.
        threads: onnxruntime's intra-op threads.
    """

    def __init__(self, model_file: ModelFile, *, threads: int) -> None:
        self.name, self.version = model_file.name, model_file.version
        self.session = _session(model_file.path, threads)
        self.inputs = [TensorInfo.of(i) for i in self.session.get_inputs()]
        self.outputs = [TensorInfo.of(o) for o in self.session.get_outputs()]
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.spec: ModelSpec | None = ModelSpec.from_metadata(metadata)
        self._output_names = [o.name for o in self.outputs]
        self._configuration: tuple[tuple | None, Configuration] | None = None  # file identity
        self._batcher: Batcher | None = None
        self._batcher_lock = threading.Lock()

    def configuration(self, stored: ConfigFile | None) -> Configuration:
        """The model's configuration: the stored file checked and completed, else derived;
        parsed once for each version of the file.

        Args:
            stored: the model's ``config.pbtxt`` (None when it has none).

        Raises:
            InvalidConfigError: the file is no valid configuration of this model; the
                message names the file and the field.
        """
        identity = None if stored is None else stored.identity
        cached = self._configuration
        if cached is not None and cached[0] == identity:
            return cached[1]
        if stored is None:
            config = derive_config(self.name, self.inputs, self.outputs)
        else:
            parsed = read_config(stored.path)
            config = complete_config(
                parsed, self.name, self.inputs, self.outputs, source=stored.path
            )
        limit = config.max_batch_size if stored is not None and config.max_batch_size else None
        configuration = Configuration(config, limit, batch_settings(config))
        self._configuration = (identity, configuration)
        return configuration

    def describe(self) -> dict[str, Any]:
        """Inputs, outputs and the spec summary (None without rootstream metadata)."""
        return {
            "inputs": [i.describe() for i in self.inputs],
            "outputs": [o.describe() for o in self.outputs],
            "spec": None if self.spec is None else self.spec.summary(),
        }

    # ----------------------------------------------------------------- request values
    def feeds_from_inputs(self, inputs: Any) -> dict[str, np.ndarray]:
        """Check ready rows: a list of rows (one-input model) or ``{input name: rows}``."""
        names = [i.name for i in self.inputs]
        if isinstance(inputs, Mapping):
            self._check_input_names(inputs)
            values = {n: (inputs[n], f"inputs['{n}']") for n in names}
        elif len(names) == 1:
            values = {names[0]: (inputs, "inputs")}
        else:
            raise BadRequestError(
                f'model {self.name!r} has {len(names)} inputs {names}: send "inputs" as an '
                "object mapping each input name to its rows"
            )
        feeds = {i.name: self._array(*values[i.name], i) for i in self.inputs}
        rows = {n: a.shape[0] for n, a in feeds.items() if a.ndim}
        if len(set(rows.values())) > 1:
            raise BadRequestError(f"the inputs have different numbers of rows: {rows}")
        return feeds

    def _array(self, value: Any, field: str, info: TensorInfo) -> np.ndarray:
        dtype = info.dtype
        if dtype is None:
            raise BadRequestError(
                f"input {info.name!r} has type {info.type}, not fillable from JSON"
            )
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            raise BadRequestError(
                f"{field} is ragged: every row must hold the same number of values "
                f"(input {info.name!r} takes {info.signature()})"
            ) from None
        kind = array.dtype.kind
        if kind not in "biuf":
            raise BadRequestError(f"{field} must hold only numbers, not {_kind_name(kind)}")
        if dtype.kind == "b" and kind != "b":
            raise BadRequestError(
                f"{field} must hold true/false values (input {info.name!r} is bool)"
            )
        if dtype.kind in "iu" and kind == "f":
            raise BadRequestError(
                f"{field} must hold integers (input {info.name!r} is {dtype.name})"
            )
        shape_ok = array.ndim == len(info.shape) and all(
            d is None or d == s for d, s in zip(info.shape, array.shape, strict=True)
        )
        if not shape_ok:
            raise BadRequestError(
                f"{field} has shape {list(array.shape)}; input {info.name!r} of model "
                f"{self.name!r} takes {info.signature()}"
            )
        if array.ndim and array.shape[0] == 0:
            raise BadRequestError(f"{field} holds no rows")
        converted = array.astype(dtype, copy=False)
        if dtype.kind == "f":
            finite = np.isfinite(converted)
            if not finite.all():
                index = np.unravel_index(int(np.argmin(finite)), array.shape)
                at = "".join(f"[{i}]" for i in index)
                raise BadRequestError(
                    f"{field}{at} is {array[index]}: values must be finite numbers within "
                    f"{dtype.name} range"
                )
        elif dtype.kind in "iu" and not np.array_equal(converted, array):
            raise BadRequestError(f"{field} holds values out of {dtype.name} range")
        return converted

    def feeds_from_events(self, events: Any) -> dict[str, np.ndarray]:
        """Preprocess raw events with the spec inside the model."""
        if self.spec is None:
            raise BadRequestError(
                f"model {self.name!r} carries no rootstream preprocessing spec (it was not "
                'exported with rootstream.export_onnx): send "inputs" instead of "events"'
            )
        if isinstance(events, list) and not events:
            raise BadRequestError("events holds no events")
        try:
            columns = columns_from_events(self.spec.spec, events)
            arrays = assemble(self.spec.spec, columns)
        except InvalidEventError as err:
            raise BadRequestError(str(err)) from None
        except ValueError as err:  # members of one group with different element counts
            raise BadRequestError(f"events: {err}") from None
        return {name: arrays[name] for name in self.spec.inputs}

    def _check_input_names(self, given: Mapping[str, Any]) -> None:
        """Every input of the model, and nothing else, is given by name."""
        names = [i.name for i in self.inputs]
        unknown = [k for k in given if k not in names]
        missing = [n for n in names if n not in given]
        if unknown or missing:
            raise BadRequestError(
                f"inputs of model {self.name!r} are {names}; "
                + (f"missing {missing}" if missing else f"unknown {unknown}")
            )

    def check_tensors(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Check typed tensors (Open Inference Protocol): names, dtypes and fixed dims."""
        self._check_input_names(tensors)
        for info in self.inputs:
            array = tensors[info.name]
            shape_ok = array.ndim == len(info.shape) and all(
                d is None or d == s for d, s in zip(info.shape, array.shape, strict=True)
            )
            if array.dtype != info.dtype or not shape_ok:
                raise BadRequestError(
                    f"input {info.name!r} is [{', '.join(map(str, array.shape))}] "
                    f"{array.dtype.name}; model {self.name!r} takes {info.signature()}"
                )
        rows = {i.name: tensors[i.name].shape[0] for i in self.inputs if i.shape[:1] == (None,)}
        if len(set(rows.values())) > 1:
            raise BadRequestError(f"the inputs have different numbers of rows: {rows}")

    def output_names(self, outputs: list[str] | None = None) -> list[str]:
        """The outputs to answer: ``outputs`` checked, or all of the model's (None)."""
        if outputs is None:
            return self._output_names
        unknown = [n for n in outputs if n not in self._output_names]
        if unknown:
            raise BadRequestError(
                f"model {self.name!r} has no outputs {unknown} (it has {self._output_names})"
            )
        return outputs

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the session: ``{output name: array}`` for ``outputs`` (default: all)."""
        names = self.output_names(outputs)
        try:
            arrays = self.session.run(names, dict(feeds))
        except InvalidArgument as err:
            raise BadRequestError(f"model {self.name!r} rejects the inputs: {err}") from None
        return dict(zip(names, arrays, strict=True))

    def batcher(self, settings: BatchSettings, run: Run) -> Batcher:
        """This version's dynamic batcher, made on first use and again when ``settings``
        change (its configuration was edited); ``run`` runs a merged batch."""
        with self._batcher_lock:
            current = self._batcher
            if current is None or current.settings != settings:
                if current is not None:
                    current.close()
                self._batcher = Batcher(run, settings, name=f"{self.name}-{self.version}")
            return self._batcher

    def close(self) -> None:
        """Stop the batcher's threads (once the requests it holds are answered)."""
        with self._batcher_lock:
            if self._batcher is not None:
                self._batcher.close()


def _kind_name(kind: str) -> str:
    return {"U": "strings", "S": "bytes", "O": "nulls, objects or mixed values"}.get(kind, kind)


class ModelCache:
    """The models this process has loaded, least recently used dropped beyond ``capacity``.

    Keys hold the file identity, so a replaced or deleted-and-reuploaded version is loaded
    afresh; a dropped model's batcher is closed. Thread-safe; onnxruntime sessions
    themselves are safe to run concurrently.
    """

    def __init__(self, *, threads: int, capacity: int = 16) -> None:
        self.threads, self.capacity = threads, capacity
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # held while a model loads (slow): not self._lock
        self._models: OrderedDict[tuple, Model] = OrderedDict()

    def _cached(self, key: tuple) -> Model | None:
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
            return model

    def get(self, model_file: ModelFile) -> Model:
        key = (model_file.name, model_file.version, model_file.identity)
        model = self._cached(key)
        if model is not None:
            return model
        with self._loading:  # one load at a time: a burst of first requests loads it once
            model = self._cached(key)
            if model is not None:
                return model
            model = Model(model_file, threads=self.threads)
            with self._lock:
                for old in [k for k in self._models if k[:2] == key[:2]]:
                    self._models.pop(old).close()
                self._models[key] = model
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)[1].close()
        return model

    def forget(self, name: str, versions: list[int] | None = None) -> None:
        """Drop a model's loaded versions (all when ``versions`` is None)."""
        with self._lock:
            for key in [k for k in self._models if k[0] == name]:
                if versions is None or key[1] in versions:
                    self._models.pop(key).close()

    def __len__(self) -> int:
        return len(self._models)
