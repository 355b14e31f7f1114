"""Preprocessing shared by training and serving: padding, masking, normalization.

This module needs numpy only (no torch, no uproot, no awkward), so the inference
server repeats exactly the transformation the model was trained with.

A *column* is the numpy form of one feature over N events: a 1-D array for a
flat feature, or a :class:`Jagged` pair of offsets and content for a
variable-length one. The dataset reads columns from ROOT files; the server builds
them from raw events with :func:`columns_from_events`; both call :func:`assemble`.
"""

from __future__ import annotations

import itertools
import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from rootstream.errors import InvalidEventError, close_matches

__all__ = [
    "FeatureSpec",
    "Jagged",
    "Spec",
    "assemble",
    "columns_from_events",
    "normalization",
    "pad",
]

SPEC_VERSION = 1
NORMALIZATIONS = ("standard", "minmax", None)


class Jagged(NamedTuple):
    """A variable-length feature: ``content[offsets[i]:offsets[i+1]]`` are event i's values."""

    offsets: np.ndarray  # int64 [N + 1], offsets[0] == 0
    content: np.ndarray  # [offsets[-1]]

    @property
    def counts(self) -> np.ndarray:
        """Elements per event, int64 ``[N]``."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


Column = np.ndarray | Jagged


@dataclass(frozen=True)
class FeatureSpec:
    """How one feature becomes model input.

    ``length`` is None for a flat feature, else the padded length of a jagged one.
    The model sees ``(value - center) / scale``; padded slots hold 0.
    """

    name: str
    length: int | None = None
    center: float = 0.0
    scale: float = 1.0

    @property
    def jagged(self) -> bool:
        """Whether the feature is padded (has a length)."""
        return self.length is not None

    @property
    def width(self) -> int:
        """Columns the feature takes in ``x``: 1, or its length."""
        return 1 if self.length is None else self.length

    def column_names(self) -> list[str]:
        """The names of its columns: ``name`` or ``name[0]``, ``name[1]``, ..."""
        if self.length is None:
            return [self.name]
        return [f"{self.name}[{i}]" for i in range(self.length)]


@dataclass(frozen=True)
class Spec:
    """The whole input transformation of a model, in output order.

    Without groups, ``features`` lists flat features first, then jagged ones.
    With groups, each group is one output array named after it.
    """

    features: tuple[FeatureSpec, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    normalize: str | None = "standard"

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {self.normalize!r}")
        for group, names in self.groups or ():
            members = [self.feature(n) for n in names]
            if len({m.length for m in members}) != 1:
                lengths = {m.name: m.length for m in members}
                raise ValueError(
                    f"group {group!r} mixes features of different kinds or lengths: {lengths}; "
                    "a group holds either flat features or jagged ones of one length"
                )

    def feature(self, name: str) -> FeatureSpec:
        """The spec of one feature, by name."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r} in the spec")

    @property
    def feature_names(self) -> list[str]:
        """The names of the columns of ``x`` (flat mode)."""
        return [c for f in self.features for c in f.column_names()]

    @property
    def has_jagged(self) -> bool:
        """Whether any feature is jagged (so a mask is produced)."""
        return any(f.jagged for f in self.features)

    def to_json(self) -> str:
        """The spec as a JSON string (what an ONNX file carries)."""
        return json.dumps({"version": SPEC_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> Spec:
        """A spec from :meth:`to_json`'s output."""
        data = json.loads(text)
        if data.pop("version", None) != SPEC_VERSION:
            raise ValueError(f"unsupported preprocessing spec version (expected {SPEC_VERSION})")
        groups = data.get("groups")
        return cls(
            features=tuple(FeatureSpec(**f) for f in data["features"]),
            groups=None if groups is None else tuple((g, tuple(n)) for g, n in groups),
            normalize=data["normalize"],
        )


def normalization(
    method: str | None, *, mean: float, std: float, minimum: float, maximum: float
) -> tuple[float, float]:
    """Return ``(center, scale)`` for a method; a constant feature gets scale 1, never 0."""
    if method is None:
        return 0.0, 1.0
    if method == "standard":
        center, scale = mean, std
    elif method == "minmax":
        center, scale = minimum, maximum - minimum
    else:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {method!r}")
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    return float(center), float(scale)


def pad(
    column: Jagged,
    length: int,
    *,
    center: float = 0.0,
    scale: float = 1.0,
    out: np.ndarray | None = None,
    out_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pad or truncate a jagged column to ``length`` and normalize the real values.

    Truncation keeps the first ``length`` values of each event; padded slots hold 0.
    ``out``/``out_mask`` may be (strided) views to write into. Works slot by slot: one
    vectorized gather of N values per slot, with no [N, length] index array.

    Returns:
        values: float32 ``[N, length]``; mask: bool ``[N, length]``, True where real.
    """
    n = len(column)
    if out is None:
        out = np.empty((n, length), dtype=np.float32)
    if out_mask is None:
        out_mask = np.empty((n, length), dtype=bool)
    counts = column.counts
    if column.content.size == 0:
        out[...] = 0.0
        out_mask[...] = False
        return out, out_mask
    normalized = _normalized(column.content, center, scale)
    last = len(normalized) - 1
    position = column.offsets[:-1].copy()
    index = np.empty_like(position)
    out[...] = 0.0
    for slot in range(length):
        real = np.greater(counts, slot, out=out_mask[:, slot])
        np.minimum(position, last, out=index)
        np.copyto(out[:, slot], normalized[index], where=real)
        position += 1
    return out, out_mask


def _normalized(values: np.ndarray, center: float, scale: float) -> np.ndarray:
    """``(values - center) / scale`` in float32, computed at the precision of ``values``."""
    if values.dtype == np.float32:
        return (values - np.float32(center)) / np.float32(scale)
    return ((values.astype(np.float64) - center) / scale).astype(np.float32)


def _num_events(columns: Mapping[str, Column]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def assemble(spec: Spec, columns: Mapping[str, Column]) -> dict[str, np.ndarray]:
    """Turn raw columns into model inputs.

    Returns:
        Without groups: ``"x"`` float32 ``[N, F]`` and, when a feature is jagged,
        ``"mask"`` bool ``[N, F]``. With groups: per flat group float32 ``[N, C]``;
        per jagged group float32 ``[N, L, C]`` and ``"<group>_mask"`` bool ``[N, L]``.
    """
    n = _num_events(columns)
    if spec.groups is None:
        return _assemble_flat(spec.features, columns, n)
    out: dict[str, np.ndarray] = {}
    for group, names in spec.groups:
        out.update(_assemble_group(group, [spec.feature(m) for m in names], columns, n))
    return out


def _assemble_flat(
    features: Sequence[FeatureSpec], columns: Mapping[str, Column], n: int
) -> dict[str, np.ndarray]:
    width = sum(f.width for f in features)
    x = np.empty((n, width), dtype=np.float32)
    mask = np.empty((n, width), dtype=bool) if any(f.jagged for f in features) else None
    col = 0
    for f in features:
        if f.jagged:
            cols = slice(col, col + f.length)
            pad(
                columns[f.name],
                f.length,
                center=f.center,
                scale=f.scale,
                out=x[:, cols],
                out_mask=mask[:, cols],
            )
        else:
            x[:, col] = _normalized(columns[f.name], f.center, f.scale)
            if mask is not None:
                mask[:, col] = True
        col += f.width
    return {"x": x} if mask is None else {"x": x, "mask": mask}


def _assemble_group(
    group: str, features: Sequence[FeatureSpec], columns: Mapping[str, Column], n: int
) -> dict[str, np.ndarray]:
    if not features[0].jagged:
        return {group: _assemble_flat(features, columns, n)["x"]}
    length = features[0].length
    values = np.empty((n, length, len(features)), dtype=np.float32)
    mask = np.empty((n, length), dtype=bool)
    first = columns[features[0].name]
    for c, f in enumerate(features):
        column = columns[f.name]
        if not np.array_equal(column.offsets, first.offsets):
            raise ValueError(
                f"group {group!r}: {f.name!r} and {features[0].name!r} have different numbers of "
                "elements in some events; a group must hold branches of one collection"
            )
        pad(column, length, center=f.center, scale=f.scale, out=values[:, :, c], out_mask=mask)
    return {group: values, f"{group}_mask": mask}


# ----------------------------------------------------------------- raw events


def columns_from_events(spec: Spec, events: Sequence[Mapping[str, Any]]) -> dict[str, Column]:
    """Turn raw events into the columns :func:`assemble` takes.

    Each event maps feature names to a number (flat feature) or a list of numbers
    (jagged feature), as JSON gives them: ``{"MET_pt": 21.3, "Jet_pt": [50.1, 31.0]}``.
    Keys the spec does not use are ignored; booleans count as 0 and 1.

    Returns:
        ``{feature: column}``: float64 ``[N]`` for a flat feature, :class:`Jagged` with
        float64 content for a jagged one.

    Raises:
        InvalidEventError: an event is no mapping, lacks a feature, or holds a value that
            is not a finite number (or a list of them); the message names the event index
            and the feature, e.g. ``events[3]['Jet_pt'][1]``.
    """
    if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
        raise InvalidEventError("events must be a list of objects", "events")
    for i, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise InvalidEventError(
                f"events[{i}] must be an object mapping feature names to values, "
                f"not {_describe(event)}",
                f"events[{i}]",
            )
    columns: dict[str, Column] = {}
    for f in spec.features:
        missing = next((i for i, event in enumerate(events) if f.name not in event), None)
        if missing is not None:
            raise InvalidEventError(
                f"events[{missing}] has no feature {f.name!r} "
                f"({close_matches(f.name, events[missing])})",
                f"events[{missing}]['{f.name}']",
            )
        values = [event[f.name] for event in events]
        columns[f.name] = _jagged(f.name, values) if f.jagged else _flat(f.name, values)
    return columns


def _flat(name: str, values: list[Any]) -> np.ndarray:
    array = _as_numbers(values)
    if array is None:
        bad = next(i for i, v in enumerate(values) if not _is_number(v))
        raise InvalidEventError(
            f"events[{bad}]['{name}'] must be a number, not {_describe(values[bad])}",
            f"events[{bad}]['{name}']",
        )
    _check_finite(array, lambda k: f"events[{k}]['{name}']")
    return array


def _jagged(name: str, values: list[Any]) -> Jagged:
    for i, v in enumerate(values):
        if not isinstance(v, (list, tuple, np.ndarray)):
            raise InvalidEventError(
                f"events[{i}]['{name}'] must be a list of numbers (the feature is "
                f"variable-length), not {_describe(v)}",
                f"events[{i}]['{name}']",
            )
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    flat = list(itertools.chain.from_iterable(values))
    content = _as_numbers(flat)

    def field(k: int) -> str:
        i = int(np.searchsorted(offsets, k, side="right")) - 1
        return f"events[{i}]['{name}'][{k - offsets[i]}]"

    if content is None:
        bad = next(k for k, v in enumerate(flat) if not _is_number(v))
        raise InvalidEventError(
            f"{field(bad)} must be a number, not {_describe(flat[bad])}", field(bad)
        )
    _check_finite(content, field)
    return Jagged(offsets, content)


def _as_numbers(values: list[Any]) -> np.ndarray | None:
    """float64 ``[N]`` of a list of numbers, or None when some value is not a number."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):  # ragged nesting
        return None
    if array.ndim == 1 and array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    if array.ndim == 1 and all(_is_number(v) for v in values):  # e.g. integers beyond int64
        return np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return np.zeros(0, dtype=np.float64)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)


def _check_finite(array: np.ndarray, field: Any) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise InvalidEventError(
            f"{field(bad)} is {array[bad]}: values must be finite numbers", field(bad)
        )


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a string ({value[:20]!r})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
