"""``rootstream.client.Client`` against a real ``rootstream-serve`` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import onnxruntime as ort
import pytest
import torch
import uproot

from rootstream import RootIterableDataset, export_onnx, synthetic
from rootstream.client import Client
from rootstream.errors import ServerError
from tests.serving.conftest import Server, running_server

FEATURES = ["MET_pt", "HT", "nPV"]
TOKEN = "s3cret"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, str]:
    """An MLP over three flat features, exported with its spec; and its sample file."""
    folder = tmp_path_factory.mktemp("client")
    sample = synthetic.write_sample(folder / "s.root", 300, kind="signal")
    ds = RootIterableDataset({sample: 1}, FEATURES, batch_size=64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    export_onnx(model, ds, folder / "model.onnx")
    return folder / "model.onnx", sample


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    with running_server(root / "models", root / "server.log", "--token", TOKEN) as s:
        yield s


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.url, token=TOKEN) as c:
        yield c
        for model in c.list():
            c.delete(model["name"])


def test_upload_list_describe_delete(client, exported):
    path, _ = exported
    assert client.upload("m", path) == {"model": "m", "version": 1}
    assert client.upload("m", path.read_bytes()) == {"model": "m", "version": 2}
    (listed,) = client.list()
    assert (listed["name"], listed["versions"], listed["version"]) == ("m", [1, 2], 2)
    described = client.describe("m", 1)
    assert described["version"] == 1
    assert [f["name"] for f in described["preprocessing"]["features"]] == FEATURES
    assert client.delete("m", 2) == {"model": "m", "deleted": [2]}
    assert client.list()[0]["versions"] == [1]
    client.delete("m")
    assert client.list() == []


def test_predict_rows_and_events_equal_onnxruntime(client, exported):
    path, sample = exported
    client.upload("m", path)
    with uproot.open(sample) as f:
        events = ak.to_list(f["Events"].arrays(FEATURES, entry_stop=20))
    rows = next(iter(RootIterableDataset({sample: 1}, FEATURES, batch_size=20)))["x"].numpy()
    (expected,) = ort.InferenceSession(str(path)).run(None, {"x": rows})
    from_rows = np.asarray(client.predict("m", inputs=rows))
    from_events = np.asarray(client.predict("m", events=events, version=1))
    np.testing.assert_allclose(from_rows, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_events, expected, rtol=1e-4, atol=1e-5)


def test_errors_carry_the_server_message_and_status(server, client, exported):
    with pytest.raises(ServerError, match="Bearer") as missing:
        Client(server.url).upload("m", exported[0])
    assert missing.value.status == 401
    with pytest.raises(ServerError) as wrong:
        Client(server.url, token="nope").list()
    assert wrong.value.status == 403
    with pytest.raises(ServerError, match="nothere") as unknown:
        client.predict("nothere", inputs=[[1.0, 2.0, 3.0]])
    assert unknown.value.status == 404
    with pytest.raises(TypeError, match="either inputs"):
        client.predict("m", inputs=[[1.0]], events=[{}])


def test_an_unreachable_server_is_a_server_error():
    with pytest.raises(ServerError, match="failed"):
        Client("http://127.0.0.1:9", timeout=2).list()
