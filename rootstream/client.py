"""A small client of ``rootstream-serve``: upload, list, describe, delete, predict.

::

    from rootstream.client import Client

    server = Client("http://127.0.0.1:8080", token="secret")
    server.upload("higgs", "train-output/model.onnx")      # {"model": "higgs", "version": 1}
    server.predict("higgs", events=[{"MET_pt": 21.3, "Jet_pt": [50.1, 31.0]}])
    server.predict("higgs", inputs=[[0.1, 0.2, ...]])       # ready feature rows

Every failed request raises :class:`~rootstream.errors.ServerError` with the server's message
and the HTTP status.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rootstream.errors import ServerError

__all__ = ["Client"]


class Client:
    """Talks to one server.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
        token: the bearer token of the management routes (``rootstream-serve --token``).
        timeout: seconds per request.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 60) -> None:
        try:
            import requests
        except ImportError as err:
            raise ImportError("the client needs requests: pip install 'rootstream[train]'") from err
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- management
    def upload(self, name: str, model: str | os.PathLike | bytes) -> dict[str, Any]:
        """Upload an ONNX model (a path or its bytes) as the next version of ``name``.

        Returns:
            ``{"model": name, "version": int}``.
        """
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        headers = {"Content-Type": "application/octet-stream"}
        return self._request("POST", _route(name), data=data, headers=headers)

    def list(self) -> list[dict[str, Any]]:
        """The models on the server, with their versions."""
        return self._request("GET", "/models")["models"]

    def describe(self, name: str, version: int | None = None) -> dict[str, Any]:
        """One model's versions, inputs, outputs and preprocessing spec."""
        return self._request("GET", _route(name, version))

    def delete(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Delete one version of a model, or all of them."""
        return self._request("DELETE", _route(name, version))

    # ----------------------------------------------------------------- inference
    def predict(
        self,
        name: str,
        *,
        inputs: Sequence[Any] | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
        version: int | None = None,
    ) -> list[Any]:
        """The model's outputs for ready feature rows (``inputs``) or raw ``events``.

        Returns:
            One output per event (a number, or a list for several outputs per event).
        """
        if (inputs is None) == (events is None):
            raise TypeError("give either inputs=[rows] or events=[{branch: value}], not both")
        body = {"inputs": _plain(inputs)} if inputs is not None else {"events": _plain(events)}
        return self._request("POST", _route(name, version) + "/predict", json=body)["outputs"]

    def _request(self, method: str, route: str, **kwargs: Any) -> Any:
        import requests

        url = self.url + route
        try:
            response = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as err:
            raise ServerError(f"{method} {url} failed: {err}") from err
        if not response.ok:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ServerError(
                f"{method} {url}: {response.status_code} {response.reason}: {message}",
                status=response.status_code,
            )
        return response.json()


def _route(name: str, version: int | None = None) -> str:
    return f"/models/{quote(name, safe='')}" + (f"/{int(version)}" if version is not None else "")


def _plain(values: Any) -> Any:
    """Numpy arrays and scalars as JSON-ready lists and numbers."""
    if hasattr(values, "tolist"):
        return values.tolist()
    if isinstance(values, Mapping):
        return {k: _plain(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [_plain(v) for v in values]
    return values
