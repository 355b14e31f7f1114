"""Fixtures: torch models trained briefly on real ROOT files, exported, and a real server.

The server runs as a subprocess (``python -m serving.cli``) on 127.0.0.1 and a free
port it picks itself (``--port 0``, read back from its JSON log); every process started
here is stopped in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import onnx
import pytest
import requests
import torch
import uproot

from rootstream import RootIterableDataset, export_onnx

FEATURES = ["MET_px", "MET_py", "Jet_Px", "Jet_Py", "Jet_E"]
NUM_EVENTS = 64


@dataclass
class Exported:
    """A trained model, its ONNX file, and a batch with torch's answer."""

    model: torch.nn.Module
    path: Path
    batch: dict[str, np.ndarray]  # the dataset's first NUM_EVENTS events, preprocessed
    events: list[dict]  # the same events, raw, read with plain uproot
    expected: np.ndarray  # torch's output on ``batch``


class MLP(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(width, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class JetsAndEvent(torch.nn.Module):
    """A particle-level model: a jet collection [B, L, C] with its mask, and event features."""

    def __init__(self) -> None:
        super().__init__()
        self.jet = torch.nn.Linear(3, 8)
        self.event = torch.nn.Linear(2, 8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, jets, jets_mask, event):
        pooled = (self.jet(jets) * jets_mask.unsqueeze(-1)).sum(1)
        return self.head(torch.relu(pooled + self.event(event))).squeeze(-1)


def raw_events(path: str, features: list[str], n: int) -> list[dict]:
    """The first ``n`` events as dicts of numbers and lists, read with plain uproot."""
    with uproot.open(path) as f:
        return ak.to_list(f["events"].arrays(features, entry_stop=n))


def train(model: torch.nn.Module, ds: RootIterableDataset, inputs: list[str], steps: int = 20):
    """A few optimizer steps: enough to move the weights away from their initial values."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for step, batch in enumerate(ds):
        if step == steps:
            break
        optimizer.zero_grad()
        loss_fn(model(*[batch[k] for k in inputs]), batch["y"]).backward()
        optimizer.step()
    return model.eval()


def first_batch(ds: RootIterableDataset) -> dict[str, np.ndarray]:
    for batch in ds:
        return {k: v.numpy()[:NUM_EVENTS] for k, v in batch.items()}
    raise AssertionError("empty dataset")


def _export(model, ds, path: Path, inputs: list[str], source: str) -> Exported:
    export_onnx(model, ds, path, inputs=inputs)
    batch = first_batch(ds)
    with torch.no_grad():
        expected = model(*[torch.from_numpy(batch[k]) for k in inputs]).numpy()
    events = raw_events(source, FEATURES, NUM_EVENTS)
    return Exported(model, path, batch, events, expected)


@pytest.fixture(scope="session")
def flat_dataset(hzz) -> RootIterableDataset:
    return RootIterableDataset(
        hzz, FEATURES, tree="events", label="NMuon >= 2", max_length={"Jet_*": 4}, batch_size=128
    )


@pytest.fixture(scope="session")
def mlp(hzz, flat_dataset, tmp_path_factory) -> Exported:
    """An MLP over the 2 + 3 x 4 columns of ``FEATURES``, seed 0."""
    torch.manual_seed(0)
    model = train(MLP(len(flat_dataset.feature_names)), flat_dataset, ["x"])
    path = tmp_path_factory.mktemp("mlp") / "model.onnx"
    return _export(model, flat_dataset, path, ["x"], hzz)


@pytest.fixture(scope="session")
def mlp_other(hzz, flat_dataset, tmp_path_factory) -> Exported:
    """The same architecture, seed 1: a second version whose outputs differ."""
    torch.manual_seed(1)
    model = train(MLP(len(flat_dataset.feature_names)), flat_dataset, ["x"])
    path = tmp_path_factory.mktemp("other") / "model.onnx"
    return _export(model, flat_dataset, path, ["x"], hzz)


@pytest.fixture(scope="session")
def grouped(hzz, tmp_path_factory) -> Exported:
    """A three-input model: jets [B, 4, 3], jets_mask [B, 4], event [B, 2]."""
    ds = RootIterableDataset(
        hzz,
        None,
        tree="events",
        label="NMuon >= 2",
        groups={"jets": ["Jet_Px", "Jet_Py", "Jet_E"], "event": ["MET_px", "MET_py"]},
        max_length=4,
        batch_size=128,
    )
    torch.manual_seed(2)
    inputs = ["jets", "jets_mask", "event"]
    model = train(JetsAndEvent(), ds, inputs)
    return _export(model, ds, tmp_path_factory.mktemp("grouped") / "model.onnx", inputs, hzz)


@pytest.fixture(scope="session")
def bare_onnx(mlp, tmp_path_factory) -> Path:
    """The MLP without rootstream metadata, as any other exporter would write it."""
    proto = onnx.load(str(mlp.path))
    del proto.metadata_props[:]
    path = tmp_path_factory.mktemp("bare") / "model.onnx"
    onnx.save(proto, str(path))
    return path


def save_graph(graph: onnx.GraphProto, path: Path) -> Path:
    """Write a hand-built graph as a checked ONNX model (opset 17) at ``path``."""
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def store_models(models: Path, versions: list[tuple[str, int, Path]]) -> Path:
    """Copy ONNX files into a model store: ``(name, version, source)`` each."""
    for name, version, source in versions:
        (models / name / str(version)).mkdir(parents=True)
        shutil.copy(source, models / name / str(version) / "model.onnx")
    return models


# ----------------------------------------------------------------- the server
@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    models: Path
    grpc: str | None = None  # host:port, with --grpc-port

    def log_records(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line[:1] == "{"]


@contextlib.contextmanager
def running_server(models: Path, log: Path, *args: str, timeout: float = 60) -> Iterator[Server]:
    """``rootstream-serve --models MODELS --port 0 ARGS`` until the block ends."""
    command = [sys.executable, "-m", "serving.cli", "--models", str(models), "--port", "0", *args]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        ready = _wait_ready(process, log, timeout)
        yield Server(ready["url"], process, log, models, ready.get("grpc"))
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen, log: Path, timeout: float) -> dict:
    """The server's "listening on" record (``url``, and ``grpc`` with --grpc-port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and '"url"' in line:
                return json.loads(line)
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"the server did not start within {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """``rootstream-serve --workers 2`` (gunicorn) with small size limits, for this module."""
    root = tmp_path_factory.mktemp("server")
    with running_server(
        root / "models",
        root / "server.log",
        "--workers",
        "2",
        "--max-upload-mb",
        "1",
        "--max-request-mb",
        "1",
    ) as s:
        yield s


def upload(server: Server, name: str, path: Path, **kwargs) -> requests.Response:
    return requests.post(
        f"{server.url}/models/{name}",
        data=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream", **kwargs.pop("headers", {})},
        timeout=30,
        **kwargs,
    )


def predict(server: Server, name: str, body: dict, version: int | None = None) -> requests.Response:
    route = f"/models/{name}" + (f"/{version}" if version else "") + "/predict"
    return requests.post(f"{server.url}{route}", json=body, timeout=30)
