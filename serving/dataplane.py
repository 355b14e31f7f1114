"""The data plane: what each route does, free of HTTP.

Routes (:mod:`serving.app`) parse requests and call these methods; the methods use the
store (files) and the model cache (onnxruntime). Protocol front-ends other than the
simple JSON one (KServe v2) can call the same methods.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from serving.datatypes import jsonable
from serving.errors import (
    BadRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelUnavailableError,
)
from serving.runtime import Model, ModelCache, check_loadable
from serving.store import ModelStore

__all__ = ["DataPlane"]

PREDICT_FIELDS = ("inputs", "events")


class DataPlane:
    """Upload, list, describe, delete and run models.

    Args:
        store: the model repository.
        cache: this process's loaded models.
    """

    def __init__(self, store: ModelStore, cache: ModelCache) -> None:
        self.store, self.cache = store, cache

    def model(self, name: str, version: int | None = None) -> Model:
        """The loaded model version (the latest when ``version`` is None)."""
        model_file = self.store.get(name, version)
        try:
            return self.cache.get(model_file)
        except Exception:
            if os.path.exists(model_file.path):
                raise
        # deleted between the lookup and the load: look again
        return self.cache.get(self.store.get(name, version))

    def upload(self, name: str, stream: BinaryIO) -> dict[str, Any]:
        version = self.store.add(name, stream, check=check_loadable)
        return {"model": name, "version": version}

    def list(self) -> dict[str, Any]:
        models = []
        for name in self.store.names():
            try:
                models.append(self._summary(name, None))
            except ModelNotFoundError:  # deleted while listing
                continue
        return {"models": models}

    def describe(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The summary plus the full preprocessing spec (centers and scales)."""
        summary = self._summary(name, version)
        model = self.model(name, summary["version"])
        spec = None if model.spec is None else json.loads(model.spec.spec.to_json())
        summary["preprocessing"] = spec
        return summary

    def _summary(self, name: str, version: int | None) -> dict[str, Any]:
        versions = self.store.versions(name)
        model = self.model(name, version)
        return {"name": name, "versions": versions, "version": model.version, **model.describe()}

    def delete(self, name: str, version: int | None = None) -> dict[str, Any]:
        deleted = self.store.delete(name, version)
        self.cache.forget(name, None if version is None else deleted)
        return {"model": name, "deleted": deleted}

    def predict(self, name: str, version: int | None, body: Any) -> dict[str, Any]:
        """Answer ``{"inputs": ...}`` or ``{"events": [...]}`` with the model's outputs."""
        if not isinstance(body, dict):
            raise BadRequestError(
                'the body must be a JSON object: {"inputs": [[...], ...]} or '
                '{"events": [{...}, ...]}'
            )
        given = [k for k in PREDICT_FIELDS if k in body]
        unknown = [k for k in body if k not in PREDICT_FIELDS]
        if len(given) != 1 or unknown:
            raise BadRequestError(
                'send exactly one of "inputs" (ready rows) or "events" (raw events)'
                + (f"; unknown fields {unknown}" if unknown else "")
            )
        model = self.model(name, version)
        if given[0] == "inputs":
            feeds = model.feeds_from_inputs(body["inputs"])
        else:
            feeds = model.feeds_from_events(body["events"])
        outputs = {k: jsonable(v) for k, v in model.run(feeds).items()}
        answer = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return {"outputs": answer, "model": name, "version": model.version}

    # ----------------------------------------------------------------- Open Inference Protocol
    def versions(self, name: str) -> list[int]:
        """The model's versions, oldest first."""
        return self.store.versions(name)

    def ready_model(self, name: str, version: int | None = None) -> Model:
        """The loaded model version for a readiness check: unloaded is not ready (a 400)."""
        self.store.get(name, version)
        if self.store.is_unloaded(name):
            raise ModelNotReadyError(f"model {name!r} is unloaded, not ready")
        return self.model(name, version)

    def available_model(self, name: str, version: int | None = None) -> Model:
        """The loaded model version, unless the model was unloaded (then a 503)."""
        model_file = self.store.get(name, version)
        if self.store.is_unloaded(name):
            raise ModelUnavailableError(
                f"model {name!r} is unloaded; load it with POST /v2/repository/models/{name}/load"
            )
        return self.model(name, model_file.version)

    def infer(
        self,
        name: str,
        version: int | None,
        tensors: Mapping[str, np.ndarray],
        outputs: list[str] | None = None,
    ) -> tuple[Model, dict[str, np.ndarray]]:
        """Run typed tensors through the model: the model and ``{output name: array}``."""
        model = self.available_model(name, version)
        model.check_tensors(tensors)
        return model, model.run(tensors, outputs)
