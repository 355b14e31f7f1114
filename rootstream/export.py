"""Export a trained torch model to one self-describing ONNX file.

The file holds the model with a dynamic batch axis and, in its metadata, the
:class:`~rootstream.metadata.ModelSpec` (feature order, padded lengths, normalization,
label names, rootstream version), so a server can accept raw events. Reading the
spec back (:func:`rootstream.load_spec`) needs no torch.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rootstream.dataset import RootIterableDataset
from rootstream.errors import ExportError
from rootstream.metadata import METADATA_KEY, ModelSpec
from rootstream.preprocess import Jagged, Spec, assemble
from rootstream.specs import build_spec
from rootstream.stats import Stats

__all__ = ["export_onnx", "spec_from_stats"]

EXAMPLE_ROWS = 256
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


def export_onnx(
    model: torch.nn.Module,
    ds_or_stats: RootIterableDataset | Stats | Spec,
    path: str | os.PathLike,
    *,
    opset: int | None = None,
    inputs: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    example: Mapping[str, Any] | None = None,
    features: Sequence[str] | None = None,
    max_length: int | Mapping[str, int] | None = None,
    normalize: str | None = "standard",
    label_names: Sequence[str] | None = None,
    task: str | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> ModelSpec:
    """Write ``model`` as an ONNX file with its preprocessing spec, verified with onnxruntime.

    The model is called as ``model(*[batch[name] for name in inputs])``; its ONNX
    inputs carry those names, with a dynamic batch axis. The export is checked on an
    example batch: onnxruntime's outputs must equal torch's within
    ``|ort - torch| <= atol + rtol * |torch|`` (element-wise), also for a batch of one
    event. The file is written only when that check passes (atomically).

    Args:
        model: the trained module; exported in eval mode (its mode is restored after).
        ds_or_stats: the dataset the model was trained on (its ``spec``, ``label_names``
            and ``task``, and its first batch as the example), or its :class:`Stats`
            (then give ``features`` and, as for the dataset, ``max_length`` and
            ``normalize``), or a :class:`~rootstream.preprocess.Spec`.
        path: the ``.onnx`` file to write.
        opset: ONNX opset version; None takes torch's default.
        inputs: which arrays of a batch the model takes, in order: ``"x"``, ``"mask"``,
            group names, ``"<group>_mask"``. Default ``("x",)``, or every group in order
            when the dataset uses groups.
        output_names: names of the model's outputs; default ``"output"`` (or
            ``"output_0"``, ... for a tuple).
        example: a batch (``{name: array}``, at least the ``inputs``) to export and verify
            with; default the dataset's first batch (up to 256 events), or random events
            drawn from the spec when no dataset is given.
        features: the features in dataset order, when exporting with ``Stats``.
        max_length: padded lengths, when exporting with ``Stats`` (as for the dataset).
        normalize: ``"standard"``, ``"minmax"``, ``"robust"`` or None, when exporting with
            ``Stats``.
        label_names: class names; default the dataset's.
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``; default the dataset's.
        atol: absolute tolerance of the verification.
        rtol: relative tolerance of the verification.

    Returns:
        The :class:`~rootstream.metadata.ModelSpec` stored in the file.

    Raises:
        ExportError: the model fails on the example batch, ``torch.onnx.export`` cannot
            convert it (the message says why and what usually causes it), onnxruntime
            cannot load the result, or its outputs differ from torch's.
    """
    spec, default_labels, default_task = _describe(ds_or_stats, features, max_length, normalize)
    inputs = tuple(inputs or ((g for g, _ in spec.groups) if spec.groups else ("x",)))
    batch = _example_batch(ds_or_stats, spec, example)
    unknown = [name for name in inputs if name not in batch]
    if unknown:
        raise ValueError(f"inputs {unknown} are not arrays of a batch; choose from {list(batch)}")
    feeds = {name: np.ascontiguousarray(batch[name]) for name in inputs}

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    training = model.training
    model.eval()
    try:
        expected = _run_torch(model, feeds)
        outputs = tuple(output_names or _default_output_names(len(expected)))
        if len(outputs) != len(expected):
            raise ValueError(
                f"output_names has {len(outputs)} names; the model returns {len(expected)} outputs"
            )
        model_spec = ModelSpec(
            spec=spec,
            inputs=inputs,
            outputs=outputs,
            label_names=_labels(label_names, default_labels),
            task=task or default_task,
        )
        _torch_export(model, feeds, outputs, tmp, opset)
        _add_metadata(tmp, model_spec)
        _verify(tmp, model, feeds, expected, outputs, atol=atol, rtol=rtol)
        os.replace(tmp, path)
    finally:
        model.train(training)
        tmp.unlink(missing_ok=True)
    return model_spec


# ----------------------------------------------------------------- the spec


def _describe(
    source: Any,
    features: Sequence[str] | None,
    max_length: int | Mapping[str, int] | None,
    normalize: str | None,
) -> tuple[Spec, list[str] | None, str | None]:
    if isinstance(source, RootIterableDataset):
        return source.spec, source.label_names, source.task
    if isinstance(source, Stats):
        if features is None:
            raise TypeError(
                "exporting with Stats needs features=[...] (the dataset's features, in order); "
                "or pass the dataset itself"
            )
        return (
            spec_from_stats(source, features, max_length=max_length, normalize=normalize),
            None,
            None,
        )
    if isinstance(source, Spec):
        return source, None, None
    raise TypeError(
        f"ds_or_stats must be a RootIterableDataset, Stats or Spec, not {type(source).__name__}"
    )


def spec_from_stats(
    stats: Stats,
    features: Sequence[str],
    *,
    max_length: int | Mapping[str, int] | None = None,
    normalize: str | None = "standard",
) -> Spec:
    """The spec a dataset with these arguments builds from ``stats`` (without groups)."""
    jagged = {f: stats.is_jagged(f) for f in features}
    return build_spec(features, jagged, stats, max_length=max_length, normalize=normalize)


def _labels(given: Sequence[str] | None, default: Sequence[str] | None) -> tuple[str, ...] | None:
    labels = given if given is not None else default
    return None if labels is None else tuple(str(label) for label in labels)


# ----------------------------------------------------------------- the example batch


def _example_batch(
    source: Any, spec: Spec, example: Mapping[str, Any] | None
) -> dict[str, np.ndarray]:
    if example is not None:
        batch = {
            k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            for k, v in example.items()
        }
    elif isinstance(source, RootIterableDataset):
        batch = _first_batch(source)
    else:
        batch = _random_batch(spec, EXAMPLE_ROWS)
    rows = len(next(iter(batch.values())))
    if rows == 0:
        raise ExportError("the example batch holds no events; give a non-empty example")
    batch = {k: v[:EXAMPLE_ROWS] for k, v in batch.items()}
    if rows == 1:  # with one row torch.export would fix the batch axis to 1
        batch = {k: np.concatenate([v, v]) for k, v in batch.items()}
    return batch


def _first_batch(ds: RootIterableDataset) -> dict[str, np.ndarray]:
    """The first events the dataset yields (a copy iterates: ``ds`` keeps its position)."""
    with contextlib.closing(iter(copy.copy(ds))) as stream:
        if ds.batch_size is None:
            items = list(itertools.islice(stream, EXAMPLE_ROWS))
            if not items:
                return {"x": np.zeros((0, 1), np.float32)}
            return {k: torch.stack([item[k] for item in items]).numpy() for k in items[0]}
        batch = next(stream, None)
    if batch is None:
        return {"x": np.zeros((0, 1), np.float32)}
    return {k: v.numpy() for k, v in batch.items()}


def _random_batch(spec: Spec, rows: int) -> dict[str, np.ndarray]:
    """Random events drawn around each feature's center, preprocessed by ``assemble``."""
    rng = np.random.default_rng(0)
    columns: dict[str, np.ndarray | Jagged] = {}
    counts: dict[int, np.ndarray] = {}  # one set per length: a group's members share it
    for f in spec.features:
        if f.length is None:
            columns[f.name] = f.center + f.scale * rng.standard_normal(rows)
            continue
        offsets = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(counts.setdefault(f.length, rng.integers(0, f.length + 2, rows)), out=offsets[1:])
        columns[f.name] = Jagged(offsets, f.center + f.scale * rng.standard_normal(offsets[-1]))
    return assemble(spec, columns)


# ----------------------------------------------------------------- torch, onnx, onnxruntime


def _run_torch(model: torch.nn.Module, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    args = _tensors(model, feeds)
    shapes = ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in feeds.items())
    try:
        with torch.no_grad():
            out = model(*args)
    except Exception as err:
        raise ExportError(
            f"{type(model).__name__}({', '.join(feeds)}) fails on the example batch "
            f"({shapes}): {err}"
        ) from err
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if not all(isinstance(o, torch.Tensor) for o in outs):
        kinds = [type(o).__name__ for o in outs]
        raise ExportError(
            f"{type(model).__name__} returns {kinds}; ONNX export needs a tensor or a tuple of "
            "tensors (return a tuple instead of a dict or other objects)"
        )
    return [o.detach().cpu().numpy() for o in outs]


def _tensors(model: torch.nn.Module, feeds: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
    """The arrays as tensors on the model's device."""
    device = next(model.parameters(), torch.empty(0)).device
    return [torch.from_numpy(v).to(device) for v in feeds.values()]


def _default_output_names(n: int) -> list[str]:
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def _torch_export(
    model: torch.nn.Module,
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    path: Path,
    opset: int | None,
) -> None:
    _require("onnxscript", "torch.onnx.export")
    args = tuple(_tensors(model, feeds))
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ...": noise
    try:
        with warnings.catch_warnings():
            # torch 2.13's exporter deep-copies a pytree LeafSpec, which trips torch's own
            # deprecation warning, and it warns that inputs sharing the batch axis share its
            # name (which is what we ask for): nothing a caller can act on.
            warnings.filterwarnings(
                "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
            )
            warnings.filterwarnings(
                "ignore", message=r".*The axis name: batch will not be used", category=UserWarning
            )
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=list(feeds),
                output_names=list(outputs),
                opset_version=opset,
                dynamic_shapes=tuple({0: "batch"} for _ in args),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as err:
        raise ExportError(
            f"torch.onnx.export could not convert {type(model).__name__} "
            f"(inputs {list(feeds)}, opset {opset or 'default'}): {_failure(err)}. Usual "
            "causes: Python control flow that depends on tensor values, operators without an "
            "ONNX translation at this opset, non-tensor inputs or outputs (see docs/serving.md)"
        ) from err
    finally:
        registry.setLevel(level)


def _failure(err: BaseException) -> str:
    """The exporter's step that failed and the innermost cause, each in one line."""
    root = err
    while root.__cause__ is not None:
        root = root.__cause__

    def first_line(e: BaseException) -> str:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
        return (text.splitlines() or [type(e).__name__])[0][:300]

    if root is err:
        return f"{type(err).__name__}: {first_line(err)}"
    return f"{first_line(err).split('. ')[0]}: {type(root).__name__}: {first_line(root)}"


def _add_metadata(path: Path, model_spec: ModelSpec) -> None:
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=METADATA_KEY, value=model_spec.to_json())
    onnx.save(proto, str(path))


def _verify(
    path: Path,
    model: torch.nn.Module,
    feeds: Mapping[str, np.ndarray],
    expected: list[np.ndarray],
    outputs: Sequence[str],
    *,
    atol: float,
    rtol: float,
) -> None:
    ort = _require("onnxruntime", "verifying the export")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ExportError(f"onnxruntime cannot load the exported model: {err}") from err
    one = {k: v[:1] for k, v in feeds.items()}
    for batch, want in ((feeds, expected), (one, _run_torch(model, one))):
        got = session.run(list(outputs), dict(batch))
        rows = len(next(iter(batch.values())))
        for name, w, g in zip(outputs, want, got, strict=True):
            if w.shape != g.shape:
                raise ExportError(
                    f"onnxruntime's output {name!r} has shape {list(g.shape)}, torch's "
                    f"{list(w.shape)} (batch of {rows}): the batch axis may not be dynamic"
                )
            if not np.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True):
                diff = float(np.nanmax(np.abs(g.astype(np.float64) - w.astype(np.float64))))
                raise ExportError(
                    f"onnxruntime's output {name!r} differs from torch's on a batch of {rows} "
                    f"events: max |difference| {diff:.3g} exceeds atol={atol} + rtol={rtol} "
                    "x |torch| (random operators or unsupported numerics do not export)"
                )


def _require(module: str, purpose: str) -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs {module}: pip install 'rootstream[export]'") from err
