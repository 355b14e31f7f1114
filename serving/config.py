"""The server's configuration; light to import (no Flask, no onnxruntime).

The CLI's gunicorn master imports only this: onnxruntime must first be imported in the
workers, after fork (a process that forks after importing it hangs on exit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["ServerConfig", "available_cpus"]

DEFAULT_MAX_UPLOAD_BYTES = 512 << 20
DEFAULT_MAX_REQUEST_BYTES = 64 << 20


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ServerConfig:
    """How the server runs.

    Attributes:
        models: the model repository directory.
        token: when set, management routes need ``Authorization: Bearer <token>``.
        threads: onnxruntime intra-op threads per session (0: every CPU).
        max_upload_bytes: the largest ONNX upload.
        max_request_bytes: the largest predict body.
        max_models: loaded model versions kept per process (least recently used dropped).
        serial: each process answers one request at a time (gunicorn's sync workers): no two
            requests can meet in a batch, so dynamic batching is skipped (with a warning).
    """

    models: Path
    token: str | None = None
    threads: int = 0
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_models: int = 16
    serial: bool = False

    @classmethod
    def of(cls, config: ServerConfig | Mapping[str, Any] | str | os.PathLike) -> ServerConfig:
        """A config from itself, a mapping of its fields, or just the models directory."""
        if isinstance(config, ServerConfig):
            return config
        if isinstance(config, (str, os.PathLike)):
            return cls(Path(config))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown or "models" not in config:
            raise TypeError(
                f"server config needs 'models' and takes {sorted(known)}; got {sorted(config)}"
            )
        return cls(**{**config, "models": Path(config["models"])})
