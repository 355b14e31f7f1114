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
    "Placement",
    "Spec",
    "assemble",
    "columns_from_events",
    "normalization",
    "pad",
    "placement",
    "same_offsets",
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


class Placement(NamedTuple):
    """Where the elements of a jagged column go in a padded array, computed once per column.

    Element ``source[k]`` of the content lands at flat position ``target[k]`` (``row *
    row_stride + slot * slot_stride``); elements beyond the padded length are left out.
    Columns with the same offsets (one collection) share a placement.
    """

    counts: np.ndarray  # int64 [N]: elements per event, before truncation
    source: np.ndarray  # int64 [K]: content index of each kept element
    target: np.ndarray  # int64 [K]: its flat position
    starts: np.ndarray  # int64 [N + 1]: kept elements before each event


def placement(offsets: np.ndarray, length: int, row_stride: int, slot_stride: int = 1) -> Placement:
    """The :class:`Placement` of a jagged column padded or truncated to ``length`` slots."""
    counts = np.diff(offsets)
    kept = np.minimum(counts, length)
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(kept, out=starts[1:])
    slot = np.arange(starts[-1], dtype=np.int64) - np.repeat(starts[:-1], kept)
    source = np.repeat(offsets[:-1].astype(np.int64), kept) + slot
    rows = np.repeat(np.arange(len(counts), dtype=np.int64) * row_stride, kept)
    return Placement(counts, source, rows + slot * slot_stride, starts)


def pad(
    column: Jagged, length: int, *, center: float = 0.0, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Pad or truncate a jagged column to ``length`` and normalize the real values.

    Truncation keeps the first ``length`` values of each event; padded slots hold 0.

    Returns:
        values: float32 ``[N, length]``; mask: bool ``[N, length]``, True where real.
    """
    where = placement(column.offsets, length, length)
    values = np.zeros((len(column), length), dtype=np.float32)
    values.reshape(-1)[where.target] = _normalized(column.content, center, scale)[where.source]
    return values, np.arange(length) < where.counts[:, None]


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


ROWS_PER_BLOCK = 2048  # rows written at a time: a block of x and mask stays in L2 cache


def _assemble_flat(
    features: Sequence[FeatureSpec], columns: Mapping[str, Column], n: int
) -> dict[str, np.ndarray]:
    """``x`` (and ``mask``), written block of rows by block of rows.

    Every value is normalized and gathered once, in content order, then copied into a
    block of ``ROWS_PER_BLOCK`` rows that stays in cache while every feature writes its
    columns: no pass over the whole [N, F] matrix per feature.
    """
    width = sum(f.width for f in features)
    x = np.empty((n, width), dtype=np.float32)
    mask = np.empty((n, width), dtype=bool) if any(f.jagged for f in features) else None
    flat_columns, flat, collections = _columns_by_placement(features, columns, width)
    for low in range(0, n, ROWS_PER_BLOCK):
        high = min(low + ROWS_PER_BLOCK, n)
        block = x[low:high]
        if mask is not None:
            block[...] = 0.0
        block[:, flat_columns] = flat[:, low:high].T
        if mask is None:
            continue
        block_mask = mask[low:high]
        block_mask[:, flat_columns] = True
        for where, length, members in collections:
            first, stop = where.starts[low], where.starts[high]
            target = where.target[first:stop] - low * width
            real = np.arange(length) < where.counts[low:high, None]
            for col, values in members:
                block.reshape(-1)[target + col] = values[first:stop]
                block_mask[:, col : col + length] = real
    return {"x": x} if mask is None else {"x": x, "mask": mask}


def _columns_by_placement(
    features: Sequence[FeatureSpec], columns: Mapping[str, Column], width: int
) -> tuple[list[int] | slice, np.ndarray, list[tuple[Placement, int, list]]]:
    """Where the flat features go and their normalized values (float32 ``[F_flat, N]``),
    and the jagged ones normalized and gathered per shared placement, with their columns."""
    flat_columns, flat, collections, col = [], [], [], 0
    for f in features:
        column = columns[f.name]
        if not f.jagged:
            flat_columns.append(col)
            flat.append(_normalized(column, f.center, f.scale))
        else:
            group = next(
                (c for c in collections if c[1] == f.length and same_offsets(c[3], column.offsets)),
                None,
            )
            if group is None:
                group = (placement(column.offsets, f.length, width), f.length, [], column.offsets)
                collections.append(group)
            values = _normalized(column.content, f.center, f.scale)[group[0].source]
            group[2].append((col, values))
        col += f.width
    n = _num_events(columns)
    stacked = np.stack(flat) if flat else np.empty((0, n), dtype=np.float32)
    return (
        _as_slice(flat_columns),
        stacked,
        [(where, length, members) for where, length, members, _ in collections],
    )


def _as_slice(indices: list[int]) -> list[int] | slice:
    """A run of consecutive indices as a slice (cheaper to index with), else the list."""
    if indices and indices == list(range(indices[0], indices[-1] + 1)):
        return slice(indices[0], indices[-1] + 1)
    return indices


def same_offsets(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two jagged columns have the same offsets (one collection's branches)."""
    return a is b or (len(a) == len(b) and np.array_equal(a, b))


def _assemble_group(
    group: str, features: Sequence[FeatureSpec], columns: Mapping[str, Column], n: int
) -> dict[str, np.ndarray]:
    if not features[0].jagged:
        return {group: _assemble_flat(features, columns, n)["x"]}
    length, first = features[0].length, columns[features[0].name]
    values = np.zeros((n, length, len(features)), dtype=np.float32)
    where = placement(first.offsets, length, length * len(features), len(features))
    for c, f in enumerate(features):
        column = columns[f.name]
        if not same_offsets(column.offsets, first.offsets):
            raise ValueError(
                f"group {group!r}: {f.name!r} and {features[0].name!r} have different numbers of "
                "elements in some events; a group must hold branches of one collection"
            )
        normalized = _normalized(column.content, f.center, f.scale)
        values.reshape(-1)[where.target + c] = normalized[where.source]
    return {group: values, f"{group}_mask": np.arange(length) < where.counts[:, None]}


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
