"""The model repository's operations, beside the data plane (as MLServer keeps them): add a
version (with its configuration), index, load and unload; free of HTTP and gRPC."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from serving.errors import BadRequestError
from serving.modelconfig import (
    complete_config,
    config_as_text,
    parse_json,
    parse_text,
    read_config,
)
from serving.runtime import ModelCache, signature
from serving.store import MODEL_FILE, ModelStore

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = ["Repository"]

MODEL_FILE_PARAMETER = re.compile(rf"file:([1-9][0-9]{{0,17}})/{re.escape(MODEL_FILE)}")
UPLOAD_CONFIG = "the upload's field 'config'"
LOAD_CONFIG = "parameters.config"


class Repository:
    """Add, list, load and unload the models of a store.

    Args:
        store: the model repository.
        cache: this process's loaded models (an unloaded model's sessions are dropped).
    """

    def __init__(self, store: ModelStore, cache: ModelCache) -> None:
        self.store, self.cache = store, cache

    def add(self, name: str, stream: BinaryIO, config: str | None = None) -> dict[str, Any]:
        """Store the ONNX bytes of ``stream`` as the model's next version, and ``config``
        (Triton's text format) as its ``config.pbtxt``: both checked before either is
        written. Without ``config``, the version must fit the stored ``config.pbtxt``."""
        parsed = None if config is None else parse_text(config, UPLOAD_CONFIG)
        return {"model": name, "version": self._add(name, stream, parsed, UPLOAD_CONFIG)}

    def index(self, *, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every model of the repository (only the ready ones with ``ready_only``): name,
        latest version, state (READY/UNAVAILABLE) and the reason."""
        entries = []
        for name in self.store.names():
            versions = self.store.versions(name)
            if not versions:  # deleted while listing
                continue
            unloaded = self.store.is_unloaded(name)
            if unloaded and ready_only:
                continue
            entry = {"name": name, "version": str(versions[-1])}
            entry["state"] = "UNAVAILABLE" if unloaded else "READY"
            entry["reason"] = "unloaded" if unloaded else ""
            entries.append(entry)
        return entries

    def load(
        self, name: str, files: Mapping[str, bytes] | None = None, config: str | None = None
    ) -> None:
        """Make a model available, after checking its configuration.

        Args:
            name: the model.
            files: ``{"file:<v>/model.onnx": bytes}``: ONNX bytes that become the model's
                next version (written atomically and validated like an upload); the
                version number in the parameter name is not kept.
            config: a configuration as JSON text, stored as the model's ``config.pbtxt``.

        Raises:
            InvalidConfigError: ``config``, or the stored ``config.pbtxt``, does not
                configure the model; nothing changes then.
        """
        parsed = None if config is None else parse_json(config, LOAD_CONFIG)
        if files:
            self._add(name, io.BytesIO(_model_bytes(files)), parsed, LOAD_CONFIG)
        elif parsed is not None:
            model = self.cache.get(self.store.get(name))
            complete_config(parsed, name, model.inputs, model.outputs, source=LOAD_CONFIG)
            self.store.write_config(name, config_as_text(parsed))
        self.store.reload(name)  # every process reads config.pbtxt again, even if edited in place
        model_file = self.store.get(name)
        self.cache.get(model_file).configuration(model_file.config)  # raises when it is invalid
        self.store.set_unloaded(name, False)

    def unload(self, name: str) -> None:
        """Mark a model unavailable (its files stay) and drop this process's sessions of it."""
        self.store.set_unloaded(name, True)
        self.cache.forget(name)

    def _add(self, name: str, stream: BinaryIO, config: ModelConfig | None, source: str) -> int:
        """Add a version; it must fit ``config``, or else the stored ``config.pbtxt``."""
        checked, stored = config, self.store.config_file(name)
        if config is None and stored is not None:
            checked, source = read_config(stored.path), stored.path

        def check(path: Any) -> None:
            inputs, outputs = signature(path)
            if checked is not None:
                complete_config(checked, name, inputs, outputs, source=source)

        version = self.store.add(name, stream, check=check)
        if config is not None:
            self.store.write_config(name, config_as_text(config))
        return version


def _model_bytes(files: Mapping[str, bytes]) -> bytes:
    wrong = [k for k in files if not MODEL_FILE_PARAMETER.fullmatch(k)]
    if wrong or len(files) > 1:
        raise BadRequestError(
            f"load takes one file parameter 'file:<version>/{MODEL_FILE}' (got {sorted(files)})"
        )
    return next(iter(files.values()))
