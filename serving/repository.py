"""The model-repository extension's operations, beside the data plane (as MLServer keeps
them): index, load and unload, free of HTTP."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from serving.errors import BadRequestError
from serving.runtime import ModelCache, check_loadable
from serving.store import MODEL_FILE, ModelStore

__all__ = ["Repository"]

MODEL_FILE_PARAMETER = re.compile(rf"file:([1-9][0-9]{{0,17}})/{re.escape(MODEL_FILE)}")


class Repository:
    """List, load and unload the models of a store.

    Args:
        store: the model repository.
        cache: this process's loaded models (an unloaded model's sessions are dropped).
    """

    def __init__(self, store: ModelStore, cache: ModelCache) -> None:
        self.store, self.cache = store, cache

    def index(self) -> list[dict[str, Any]]:
        """Every model of the repository: name, latest version, state (READY/UNAVAILABLE)."""
        entries = []
        for name in self.store.names():
            versions = self.store.versions(name)
            if not versions:  # deleted while listing
                continue
            unloaded = self.store.is_unloaded(name)
            entry = {"name": name, "version": str(versions[-1])}
            entry["state"] = "UNAVAILABLE" if unloaded else "READY"
            entry["reason"] = "unloaded" if unloaded else ""
            entries.append(entry)
        return entries

    def load(self, name: str, files: Mapping[str, bytes] | None = None) -> None:
        """Make a model available; with ``{"file:<v>/model.onnx": bytes}``, store it first.

        The ONNX bytes become the model's next version (written atomically and validated
        like an upload); the version number in the parameter name is not kept.
        """
        if files:
            wrong = [k for k in files if not MODEL_FILE_PARAMETER.fullmatch(k)]
            if wrong or len(files) > 1:
                raise BadRequestError(
                    f"load takes one file parameter 'file:<version>/{MODEL_FILE}' "
                    f"(got {sorted(files)})"
                )
            self.store.add(name, io.BytesIO(next(iter(files.values()))), check=check_loadable)
        self.store.set_unloaded(name, False)

    def unload(self, name: str) -> None:
        """Mark a model unavailable (its files stay) and drop this process's sessions of it."""
        self.store.set_unloaded(name, True)
        self.cache.forget(name)
