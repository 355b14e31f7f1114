"""rootstream's inference server (Flask + onnxruntime); it never imports torch.

``serving.create_app(config)`` is the WSGI application factory; ``rootstream-serve``
(:mod:`serving.cli`) runs it. Names are imported on first use, so ``import serving``
stays light and the CLI can configure prometheus-client before it is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rootstream.lazy import lazy_attributes

_LAZY = {"ServerConfig": "serving.config", "create_app": "serving.app"}

__all__ = ["ServerConfig", "create_app"]

if TYPE_CHECKING:
    from serving.app import create_app
    from serving.config import ServerConfig


__getattr__, __dir__ = lazy_attributes("serving", globals(), _LAZY)
