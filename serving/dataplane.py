"""The data plane: what each route or RPC does, free of HTTP and gRPC.

Routes (:mod:`serving.app`, :mod:`serving.v2`) and RPCs (:mod:`serving.grpcserver`) parse
requests and call these methods; the methods use the store (files), the model cache
(onnxruntime) and the metrics. Every inference, of every protocol, runs through
:meth:`DataPlane._run`: the model's configuration is applied there (its size limit, its
dynamic batcher), and each request is counted per model version there.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.batcher import BatchSettings, rows_of
from serving.datatypes import jsonable
from serving.errors import (
    BadRequestError,
    InvalidConfigError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelUnavailableError,
)
from serving.metrics import Metrics, ModelStatistics
from serving.modelconfig import PLATFORM
from serving.runtime import Configuration, Model, ModelCache
from serving.store import ModelFile, ModelStore

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = ["DataPlane"]

log = logging.getLogger("serving.dataplane")

SERVER_NAME = "rootstream"

PREDICT_FIELDS = ("inputs", "events")


class DataPlane:
    """Upload, list, describe, delete and run models.

    Args:
        store: the model repository.
        cache: this process's loaded models.
        metrics: where each model version's requests are counted.
        serial: this process answers one request at a time: models run unbatched.
    """

    def __init__(
        self, store: ModelStore, cache: ModelCache, metrics: Metrics, *, serial: bool = False
    ) -> None:
        self.store, self.cache, self.metrics = store, cache, metrics
        self.serial = serial

    def model(self, name: str, version: int | None = None) -> Model:
        """The loaded model version (the latest when ``version`` is None)."""
        return self._load(self.store.get(name, version), version)[0]

    def _load(self, model_file: ModelFile, version: int | None) -> tuple[Model, ModelFile]:
        """The loaded model of a listed version (``version`` as asked), and the listing."""
        try:
            return self.cache.get(model_file), model_file
        except Exception:
            if os.path.exists(model_file.path):
                raise
        # deleted between the lookup and the load: look again
        model_file = self.store.get(model_file.name, version)
        return self.cache.get(model_file), model_file

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
        model, model_file = self._load(self.store.get(name, version), version)
        if given[0] == "inputs":
            feeds_of = functools.partial(model.feeds_from_inputs, body["inputs"])
        else:
            feeds_of = functools.partial(model.feeds_from_events, body["events"])
        arrays = self._run(model, model_file, feeds_of)
        outputs = {k: jsonable(v) for k, v in arrays.items()}
        answer = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        return {"outputs": answer, "model": name, "version": model.version}

    # ----------------------------------------------------------------- Open Inference Protocol
    def server_metadata(self) -> dict[str, str]:
        """The server's name and version (each protocol adds its extensions)."""
        try:
            version = package_version("rootstream")
        except PackageNotFoundError:  # running from a source tree that is not installed
            version = "0+unknown"
        return {"name": SERVER_NAME, "version": version}

    def versions(self, name: str) -> list[int]:
        """The model's versions, oldest first."""
        return self.store.versions(name)

    def ready_model(self, name: str, version: int | None = None) -> Model:
        """The loaded model version for a readiness check: unloaded, or with an invalid
        configuration, is not ready (a 400)."""
        try:
            return self.available_model(name, version)
        except ModelUnavailableError as err:
            raise ModelNotReadyError(err.message) from None

    def available_model(self, name: str, version: int | None = None) -> Model:
        """The loaded model version, unless the model was unloaded or its configuration is
        invalid (then a 503)."""
        return self._available(name, version)[0]

    def _available(self, name: str, version: int | None) -> tuple[Model, ModelFile]:
        """:meth:`available_model`, and its listing."""
        model_file = self.store.get(name, version)
        if model_file.unloaded:
            raise ModelUnavailableError(
                f"model {name!r} is unloaded; load it with POST /v2/repository/models/{name}/load"
            )
        model, model_file = self._load(model_file, model_file.version)
        self._configuration(model, model_file)
        return model, model_file

    def metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The model's Open Inference Protocol metadata: versions, platform, tensors."""
        model = self.available_model(name, version)
        return {
            "name": name,
            "versions": [str(v) for v in self.versions(name)],
            "platform": PLATFORM,
            "inputs": [i.metadata() for i in model.inputs],
            "outputs": [o.metadata() for o in model.outputs],
        }

    def config(self, name: str, version: int | None = None) -> ModelConfig:
        """The model's Triton configuration: its ``config.pbtxt`` completed, or derived."""
        return self._configuration(*self._available(name, version)).config

    def _configuration(self, model: Model, model_file: ModelFile) -> Configuration:
        """The model's configuration, as listed with the version."""
        try:
            return model.configuration(model_file.config)
        except InvalidConfigError as err:
            raise ModelUnavailableError(
                f"model {model.name!r} is unavailable: its configuration is invalid: {err.message}"
            ) from None

    def infer(
        self,
        name: str,
        version: int | None,
        tensors: Mapping[str, np.ndarray],
        outputs: list[str] | None = None,
    ) -> tuple[Model, dict[str, np.ndarray]]:
        """Run typed tensors through the model: the model and ``{output name: array}``."""
        model, model_file = self._available(name, version)

        def feeds() -> Mapping[str, np.ndarray]:
            model.check_tensors(tensors)
            return tensors

        return model, self._run(model, model_file, feeds, outputs)

    def statistics(
        self, name: str | None = None, version: int | None = None
    ) -> list[tuple[str, int, ModelStatistics]]:
        """``(name, version, statistics)`` of one model version, of a model's versions (no
        ``version``) or of every model (no ``name``), over all workers."""
        counted = self.metrics.model_statistics()
        if name is None:
            keys = [(n, v) for n in self.store.names() for v in self.store.versions(n)]
        elif version is None:
            self.store.get(name)  # raises for an unknown model
            keys = [(name, v) for v in self.store.versions(name)]
        else:
            keys = [(name, self.store.get(name, version).version)]
        return [(n, v, counted.get((n, v), ModelStatistics())) for n, v in keys]

    def _run(
        self,
        model: Model,
        model_file: ModelFile,
        feeds_of: Callable[[], Mapping[str, np.ndarray]],
        outputs: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Check and run one request, counted in the model version's statistics.

        A request is checked whole before it runs: with a ``dynamic_batching``
        configuration, it then joins the model's batcher.

        Args:
            model: the model version.
            model_file: its listing (with the model's configuration file).
            feeds_of: makes the checked input arrays (raising BadRequestError).
            outputs: the outputs wanted (default: all).
        """
        start = time.perf_counter()
        try:
            feeds = feeds_of()
            rows = rows_of(feeds)
            configuration = self._configuration(model, model_file)
            if configuration.max_rows is not None and rows > configuration.max_rows:
                raise BadRequestError(
                    f"the request holds {rows} rows; model {model.name!r} takes at most "
                    f"max_batch_size {configuration.max_rows} per request (its config.pbtxt)"
                )
            names = model.output_names(outputs)
            settings = self._batching(model, configuration.batching)
            if settings is None:
                arrays = model.run(feeds, names)
            else:
                arrays = self._batched(model, settings, feeds, names)
        except BadRequestError:
            self.metrics.observe_inference(model.name, model.version, _since(start), None)
            raise
        executions = 1 if settings is None else 0  # the batcher counts its own runs
        self.metrics.observe_inference(model.name, model.version, _since(start), rows, executions)
        return arrays

    def _batching(self, model: Model, settings: BatchSettings | None) -> BatchSettings | None:
        """The model's batch settings, or None where requests run one at a time."""
        if settings is not None and self.serial:
            _say_batching_skipped(model.name)
            return None
        return settings

    def _batched(
        self,
        model: Model,
        settings: BatchSettings,
        feeds: Mapping[str, np.ndarray],
        names: list[str],
    ) -> dict[str, np.ndarray]:
        """Run checked feeds in the model's batcher: the outputs ``names``."""
        batcher = model.batcher(settings, functools.partial(self._execute_batch, model))
        arrays, queued = batcher.infer(feeds)
        self.metrics.observe_queue(model.name, model.version, queued)
        return {name: arrays[name] for name in names}

    def _execute_batch(
        self, model: Model, batch: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One onnxruntime run of the batcher, counted by its rows."""
        start = time.perf_counter()
        arrays = model.run(batch)
        self.metrics.observe_batch(model.name, model.version, _since(start), rows_of(batch))
        return arrays


def _since(start: float) -> float:
    return time.perf_counter() - start


@functools.cache
def _say_batching_skipped(name: str) -> None:
    log.warning(
        "model %r asks for dynamic batching, but this server's workers answer one request "
        "at a time (--threads 1): it runs unbatched; start rootstream-serve with --threads 16",
        name,
    )
