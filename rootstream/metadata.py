"""The rootstream metadata of an exported ONNX model: its preprocessing and its inputs.

``export_onnx`` stores a :class:`ModelSpec` as JSON under the metadata key
``"rootstream"`` of the ONNX file; the server reads it back (from onnxruntime's
metadata map) to turn raw events into model inputs. Needs numpy only (and ``onnx``
to read a file), never torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rootstream import __version__
from rootstream.errors import ModelSpecError
from rootstream.preprocess import Spec

__all__ = ["METADATA_KEY", "ModelSpec", "load_spec"]

METADATA_KEY = "rootstream"
FORMAT = 1


@dataclass(frozen=True)
class ModelSpec:
    """What an exported model expects and returns.

    Attributes:
        spec: the preprocessing (feature order, padded lengths, normalization).
        inputs: the ONNX input names, in the model's argument order; each is a key of
            ``assemble(spec, columns)`` (``"x"``, ``"mask"``, a group, ``"<group>_mask"``).
        outputs: the ONNX output names.
        label_names: class names of a classifier trained on string labels, else None.
        task: ``"binary"``, ``"multiclass"``, ``"regression"`` or None.
        rootstream_version: the rootstream version that exported the model.
    """

    spec: Spec
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    label_names: tuple[str, ...] | None = None
    task: str | None = None
    rootstream_version: str = __version__

    @property
    def feature_names(self) -> list[str]:
        """Names of the columns of ``"x"``: ``"MET_pt"``, ``"Jet_pt[0]"``, ..."""
        return self.spec.feature_names

    def to_json(self) -> str:
        """The spec as the JSON string stored in the ONNX metadata."""
        return json.dumps(
            {
                "format": FORMAT,
                "rootstream_version": self.rootstream_version,
                "inputs": list(self.inputs),
                "outputs": list(self.outputs),
                "label_names": None if self.label_names is None else list(self.label_names),
                "task": self.task,
                "feature_names": self.feature_names,  # for readers other than rootstream
                "preprocessing": json.loads(self.spec.to_json()),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """A spec from the ONNX metadata; an error says what is wrong with it."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            labels = data["label_names"]
            return cls(
                spec=Spec.from_json(json.dumps(data["preprocessing"])),
                inputs=tuple(data["inputs"]),
                outputs=tuple(data["outputs"]),
                label_names=None if labels is None else tuple(labels),
                task=data["task"],
                rootstream_version=data["rootstream_version"],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelSpecError(f"unreadable rootstream metadata: {err}") from err

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ModelSpec | None:
        """The spec in an ONNX metadata map, or None when the model has none."""
        text = metadata.get(METADATA_KEY)
        return None if text is None else cls.from_json(text)

    def summary(self) -> dict[str, Any]:
        """A short JSON-able description: features and lengths, inputs, labels, version."""
        return {
            "features": [{"name": f.name, "length": f.length} for f in self.spec.features],
            "num_columns": len(self.feature_names),
            "normalize": self.spec.normalize,
            "groups": None if self.spec.groups is None else dict(self.spec.groups),
            "inputs": list(self.inputs),
            "label_names": self.label_names,
            "task": self.task,
            "rootstream_version": self.rootstream_version,
        }


def load_spec(path: str | os.PathLike | bytes) -> ModelSpec:
    """Read the preprocessing spec stored in an ONNX file by ``export_onnx``.

    Args:
        path: the ONNX file, or its bytes.

    Raises:
        ModelSpecError: the model has no rootstream metadata (it was not exported by
            :func:`rootstream.export_onnx`) or it cannot be read.
    """
    try:
        import onnx
    except ImportError as err:
        raise ImportError(
            "reading ONNX files needs onnx: pip install 'rootstream[export]'"
        ) from err
    if isinstance(path, bytes):
        model = onnx.load_from_string(path)
        where = "the ONNX model"
    else:
        model = onnx.load(os.fspath(path), load_external_data=False)
        where = repr(os.fspath(path))
    spec = ModelSpec.from_metadata({p.key: p.value for p in model.metadata_props})
    if spec is None:
        raise ModelSpecError(
            f"{where} has no rootstream preprocessing spec (metadata key {METADATA_KEY!r}); "
            "export it with rootstream.export_onnx"
        )
    return spec
