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
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from rootstream.errors import InvalidEventError, close_matches
from rootstream.vocabulary import NORMALIZATIONS

__all__ = [
    "FeatureSpec",
    "Jagged",
    "Spec",
    "assemble",
    "columns_from_events",
    "normalization",
    "pad",
    "same_offsets",
]

SPEC_VERSION = 1
ROBUST_QUANTILES = (0.16, 0.5, 0.84)  # normalize="robust": (q84 - q16) / 2 and the median


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
    method: str | None,
    *,
    mean: float,
    std: float,
    minimum: float,
    maximum: float,
    quantile: Callable[[float], float] | None = None,
) -> tuple[float, float]:
    """Return ``(center, scale)`` for a method; a constant feature gets scale 1, never 0.

    ``"standard"``: mean and std; ``"minmax"``: min and max - min; ``"robust"``: the
    median and half the distance between the 16% and 84% quantiles (``ROBUST_QUANTILES``),
    which ``quantile(q)`` gives (it is called for ``"robust"`` only). A feature without
    values (quantiles NaN) gets center 0.
    """
    if method is None:
        return 0.0, 1.0
    if method == "standard":
        center, scale = mean, std
    elif method == "minmax":
        center, scale = minimum, maximum - minimum
    elif method == "robust":
        if quantile is None:
            raise ValueError("normalize='robust' needs the quantiles of the feature")
        low, center, high = (quantile(q) for q in ROBUST_QUANTILES)
        scale = (high - low) / 2
    else:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {method!r}")
    if not np.isfinite(center):
        center = 0.0
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    return float(center), float(scale)


_Target = tuple[slice | int, ...]  # picks a feature's columns from rows of an output


class _Source(NamedTuple):
    """A flat column or a jagged column's content, how to normalize it, where it goes.

    ``target`` picks, from rows ``[rows, width]`` of the output, a flat feature's column
    ``[rows]`` or a jagged feature's slots ``[rows, length]``.
    """

    values: np.ndarray
    center: float
    scale: float
    target: _Target


class _Collection(NamedTuple):
    """Jagged columns of one length with equal offsets: their elements fill the same slots."""

    length: int
    offsets: np.ndarray  # intp [N + 1]
    kept: np.ndarray  # intp [N]: elements per event after truncation to the length
    slots: np.ndarray  # intp [length, most kept + 1]: slots[s, k] is s when s < k, else _PADDED
    members: list[_Source]


# Rows assembled at a time: a block (1.7 MB for 87 float32 columns) stays in L2 cache. Not a
# multiple of 1024, so that a block's columns are not a multiple of 4 KiB apart (see _filled).
ROWS_PER_BLOCK = 5000
MASK_TABLE_ROWS = 4096  # most combinations of kept counts that one mask table holds (_mask)
_PADDED = np.iinfo(np.intp).max // 2  # the content index of an empty slot: past any content


def _collection(offsets: np.ndarray, length: int, members: list[_Source]) -> _Collection:
    """The collection of jagged columns with these offsets, padded to ``length``."""
    offsets = np.asarray(offsets, dtype=np.intp)
    kept = np.diff(offsets)
    np.minimum(kept, length, out=kept)
    slot = np.arange(length, dtype=np.intp)[:, None]
    slots = np.where(slot < np.arange(kept.max(initial=0) + 1), slot, _PADDED)
    return _Collection(length, offsets, kept, slots, members)


def pad(
    column: Jagged, length: int, *, center: float = 0.0, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Pad or truncate a jagged column to ``length`` and normalize the real values.

    Truncation keeps the first ``length`` values of each event; padded slots hold 0.

    Returns:
        values: float32 ``[N, length]``; mask: bool ``[N, length]``, True where real.
    """
    source = _Source(column.content, center, scale, (slice(None), slice(None)))
    values, mask = _padded(_collection(column.offsets, length, [source]), len(column))
    return values.reshape(len(column), length), mask


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
    """``x`` (and ``mask``): the columns of each feature, in spec order."""
    flat: list[_Source] = []
    collections: list[_Collection] = []
    col = 0
    for f in features:
        column = columns[f.name]
        if not f.jagged:
            flat.append(_Source(column, f.center, f.scale, (slice(None), col)))
        else:
            target = (slice(None), slice(col, col + f.width))
            source = _Source(column.content, f.center, f.scale, target)
            _add_jagged(collections, column, f.width, source)
        col += f.width
    x = _filled(n, col, flat, collections)
    if not collections:
        return {"x": x}
    placed = [(c, [m.target for m in c.members]) for c in collections]
    return {"x": x, "mask": _mask(n, col, placed)}


def _add_jagged(
    collections: list[_Collection], column: Jagged, length: int, source: _Source
) -> None:
    """Add a jagged column to the collection of its offsets and length, or start one."""
    for c in collections:
        if c.length == length and same_offsets(c.offsets, column.offsets):
            c.members.append(source)
            return
    collections.append(_collection(column.offsets, length, [source]))


def same_offsets(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two jagged columns have the same offsets (one collection's branches)."""
    return a is b or (len(a) == len(b) and np.array_equal(a, b))


def _assemble_group(
    group: str, features: Sequence[FeatureSpec], columns: Mapping[str, Column], n: int
) -> dict[str, np.ndarray]:
    if not features[0].jagged:
        return {group: _assemble_flat(features, columns, n)["x"]}
    first = columns[features[0].name]
    sources = []
    for c, f in enumerate(features):
        column = columns[f.name]
        if not same_offsets(column.offsets, first.offsets):
            raise ValueError(
                f"group {group!r}: {f.name!r} and {features[0].name!r} have different numbers of "
                "elements in some events; a group must hold branches of one collection"
            )
        target = (slice(None), slice(c, None, len(features)))  # its slots in [N, L * C]
        sources.append(_Source(column.content, f.center, f.scale, target))
    collection = _collection(first.offsets, features[0].width, sources)
    values, mask = _padded(collection, n)
    return {group: values, f"{group}_mask": mask}


def _padded(collection: _Collection, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The collection's C members side by side, float32 ``[N, length, C]``, and its mask,
    bool ``[N, length]``."""
    length, num_members = collection.length, len(collection.members)
    values = _filled(n, length * num_members, [], [collection])
    mask = _mask(n, length, [(collection, [(slice(None), slice(None))])])
    return values.reshape(n, length, num_members), mask


def _filled(
    n: int, width: int, flat: Sequence[_Source], collections: Sequence[_Collection]
) -> np.ndarray:
    """float32 ``[N, width]``: the normalized flat columns and padded jagged ones.

    It is written ``ROWS_PER_BLOCK`` rows at a time. Each block is built in Fortran order,
    so that every column is contiguous: a flat column is normalized into it, a slot of a
    jagged feature is gathered into it, each in one pass over a long array. Then the block
    is copied into the C-ordered rows. Its columns are ``ROWS_PER_BLOCK`` floats apart,
    not a multiple of 4 KiB, else that transposing copy would fight over one cache set.
    """
    out = np.empty((n, width), np.float32)
    buffer = np.empty(min(n, ROWS_PER_BLOCK) * width, np.float32)
    for low in range(0, n, ROWS_PER_BLOCK):
        high = min(low + ROWS_PER_BLOCK, n)
        block = buffer[: (high - low) * width].reshape(width, high - low).T
        for source in flat:
            _normalize(source.values[low:high], source, out=block[source.target])
        for collection in collections:
            _gather(collection, low, high, block)
        out[low:high] = block
    return out


def _gather(collection: _Collection, low: int, high: int, block: np.ndarray) -> None:
    """Write the slots of the collection's members for events ``[low, high)`` into ``block``.

    Each slot's content index is looked up from the event's kept count (``_PADDED`` past
    it): clip mode turns every index past the content into the 0 appended to it.
    """
    first, stop = collection.offsets[low], collection.offsets[high]
    index = np.take(collection.slots, collection.kept[low:high], axis=1)
    index += collection.offsets[low:high] - first
    values = np.empty(stop - first + 1, dtype=np.float32)
    values[-1] = 0.0
    for source in collection.members:
        _normalize(source.values[first:stop], source, out=values[:-1])
        np.take(values, index, out=block[source.target].T, mode="clip")


def _normalize(values: np.ndarray, source: _Source, *, out: np.ndarray) -> None:
    """Write ``(values - center) / scale`` into float32 ``out``, computed at the precision of
    ``values`` when it is float32, else in float64."""
    if values.dtype == np.float32:
        np.subtract(values, np.float32(source.center), out=out)
        np.divide(out, np.float32(source.scale), out=out)
    else:
        out[...] = (values.astype(np.float64) - source.center) / source.scale


_Placed = tuple[_Collection, list[_Target]]  # a collection and where its slots go in a mask


def _mask(n: int, width: int, placed: Sequence[_Placed]) -> np.ndarray:
    """bool ``[N, width]``: False in the empty slots of each collection (at its targets),
    else True.

    Each event's row is looked up in a table with one row per combination of kept counts.
    A table has at most ``MASK_TABLE_ROWS`` rows, and no more than there are events: runs of
    collections get a table each (the rows looked up in them are and-ed), and a collection
    with more possible counts than that is compared with its slots directly.
    """
    most = min(MASK_TABLE_ROWS, n)
    mask = None
    for batch in _batches([p for p in placed if p[0].length < most], most):
        table = np.ones((math.prod(c.length + 1 for c, _ in batch), width), dtype=bool)
        key = np.zeros(n, dtype=np.intp)
        stride = 1
        for c, targets in batch:
            kept_in_row = np.arange(len(table)) // stride % (c.length + 1)
            for target in targets:
                table[target] = np.arange(c.length) < kept_in_row[:, None]
            key += c.kept * stride
            stride *= c.length + 1
        rows = np.take(table, key, axis=0)
        mask = rows if mask is None else np.logical_and(mask, rows, out=mask)
    if mask is None:
        mask = np.ones((n, width), dtype=bool)
    for c, targets in placed:
        if c.length >= most:
            for target in targets:
                mask[target] = np.arange(c.length) < c.kept[:, None]
    return mask


def _batches(placed: Sequence[_Placed], most: int) -> Iterator[list[_Placed]]:
    """Runs of consecutive collections whose kept-count combinations number at most ``most``
    (each has at most ``most``)."""
    batch: list[_Placed] = []
    combinations = 1
    for c, targets in placed:
        if batch and combinations * (c.length + 1) > most:
            yield batch
            batch, combinations = [], 1
        batch.append((c, targets))
        combinations *= c.length + 1
    if batch:
        yield batch


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
