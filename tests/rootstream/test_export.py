"""ONNX export: onnxruntime reproduces torch, the spec travels inside the file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import rootstream
from rootstream import RootIterableDataset, export_onnx, load_spec
from rootstream.errors import ExportError, ModelSpecError
from rootstream.export import spec_from_stats
from rootstream.preprocess import FeatureSpec, Spec

FEATURES = ["MET_px", "MET_py", "Jet_Px", "Jet_E", "Muon_Px"]
ATOL, RTOL = 1e-5, 1e-4  # export_onnx's documented default tolerance


def mlp(width: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(width, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),  # must be off in the export, whatever mode the model is in
        torch.nn.Linear(32, 1),
        torch.nn.Flatten(0),
    )


@pytest.fixture(scope="module")
def dataset(hzz):
    return RootIterableDataset(
        hzz,
        FEATURES,
        tree="events",
        label="NMuon >= 2",
        max_length={"Jet_*": 3, "Muon_*": 2},
        batch_size=200,
    )


@pytest.fixture(scope="module")
def exported(dataset, tmp_path_factory):
    model = mlp(len(dataset.feature_names)).train()
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    spec = export_onnx(model, dataset, path)
    assert model.training  # the caller's mode is restored
    return model.eval(), path, spec


def test_onnxruntime_equals_torch_on_every_batch(dataset, exported):
    model, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sizes = []
    for batch in dataset:
        (got,) = session.run(None, {"x": batch["x"].numpy()})
        with torch.no_grad():
            want = model(batch["x"]).numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
        sizes.append(len(got))
    assert sum(sizes) == 2421
    assert len(set(sizes)) == 2  # full batches and the last, shorter one: the axis is dynamic


def test_inputs_and_outputs_are_named_with_a_dynamic_batch(dataset, exported):
    _, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (x,) = session.get_inputs()
    assert x.name == "x"
    assert x.type == "tensor(float)"
    assert isinstance(x.shape[0], str)
    assert x.shape[1] == len(dataset.feature_names) == 2 + 3 * 2 + 2
    assert [o.name for o in session.get_outputs()] == ["output"]
    (one,) = session.run(None, {"x": np.zeros((1, x.shape[1]), np.float32)})
    assert one.shape == (1,)


def test_the_spec_travels_in_the_file(dataset, exported):
    _, path, returned = exported
    spec = load_spec(path)
    assert spec == returned
    assert spec.spec == dataset.spec
    assert spec.feature_names == dataset.feature_names
    assert spec.inputs == ("x",)
    assert spec.outputs == ("output",)
    assert spec.task == "binary"
    assert spec.label_names is None
    assert spec.rootstream_version == rootstream.__version__
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    stored = json.loads(props["rootstream"])
    assert stored["feature_names"][:4] == ["MET_px", "MET_py", "Jet_Px[0]", "Jet_Px[1]"]
    assert stored["preprocessing"]["features"][0]["center"] == pytest.approx(
        dataset.stats.mean["MET_px"]
    )
    assert load_spec(path.read_bytes()) == spec


def test_load_spec_needs_no_torch(exported):
    _, path, spec = exported
    code = (
        "import sys; sys.modules['torch'] = None\n"  # importing torch would now fail
        "import rootstream\n"
        f"print(rootstream.load_spec({str(path)!r}).feature_names)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(spec.feature_names)


def test_export_leaves_the_dataset_position(dataset, exported):
    state = dataset.state_dict()
    export_onnx(mlp(len(dataset.feature_names)), dataset, exported[1].parent / "again.onnx")
    assert dataset.state_dict() == state


def test_label_names_of_a_multiclass_dataset(numbered, tmp_path):
    files = {numbered("a.root", 300): "ttbar", numbered("b.root", 200, first=300): "wjets"}
    ds = RootIterableDataset(files, ["MET_pt", "Jet_pt"], max_length=2, batch_size=64)
    torch.manual_seed(0)
    model = torch.nn.Linear(len(ds.feature_names), 2)
    spec = export_onnx(model, ds, tmp_path / "classes.onnx", output_names=["logits"])
    assert load_spec(tmp_path / "classes.onnx") == spec
    assert spec.label_names == ("ttbar", "wjets")
    assert spec.task == "multiclass"
    assert spec.outputs == ("logits",)


class JetsAndEvent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.jet, self.event = torch.nn.Linear(2, 4), torch.nn.Linear(2, 4)

    def forward(self, jets, event, jets_mask=None):
        if jets_mask is not None:
            jets = jets * jets_mask.unsqueeze(-1)
        return self.jet(jets).sum(1) + self.event(event)


@pytest.mark.parametrize("inputs", [None, ("jets", "event", "jets_mask")])
def test_groups_give_one_input_per_group(hzz, tmp_path, inputs):
    groups = {"jets": ["Jet_Px", "Jet_E"], "event": ["MET_px", "MET_py"]}
    ds = RootIterableDataset(hzz, None, tree="events", groups=groups, max_length=3, batch_size=500)
    torch.manual_seed(0)
    model = JetsAndEvent().eval()
    spec = export_onnx(model, ds, tmp_path / "groups.onnx", inputs=inputs)
    names = list(inputs or ("jets", "event"))
    assert spec.inputs == tuple(names)
    session = ort.InferenceSession(str(tmp_path / "groups.onnx"))
    assert [i.name for i in session.get_inputs()] == names
    batch = next(iter(ds))
    (got,) = session.run(None, {k: batch[k].numpy() for k in names})
    with torch.no_grad():
        want = model(*[batch[k] for k in names]).numpy()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_stats_give_the_dataset_spec(hzz, dataset, tmp_path):
    stats = dataset.stats
    spec = spec_from_stats(stats, FEATURES, max_length={"Jet_*": 3, "Muon_*": 2})
    assert spec == dataset.spec
    default = RootIterableDataset(hzz, FEATURES, tree="events", stats=stats, normalize="minmax")
    assert spec_from_stats(stats, FEATURES, normalize="minmax") == default.spec
    export_onnx(
        mlp(len(dataset.feature_names)),
        stats,
        tmp_path / "s.onnx",
        features=FEATURES,
        max_length={"Jet_*": 3, "Muon_*": 2},
    )
    assert load_spec(tmp_path / "s.onnx").spec == dataset.spec
    with pytest.raises(TypeError, match="needs features"):
        export_onnx(mlp(10), stats, tmp_path / "t.onnx")


class DataDependent(torch.nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


class Noisy(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)


class Dict(torch.nn.Module):
    def forward(self, x):
        return {"score": x.sum(1)}


SPEC = Spec((FeatureSpec("a"), FeatureSpec("b", 3)))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (DataDependent(), "could not convert DataDependent .*data-dependent expression"),
        (Noisy(), "'output' differs from torch's on a batch of 256 events"),
        (Dict(), r"returns \['dict'\]; ONNX export needs a tensor"),
        (torch.nn.Linear(3, 1), r"fails on the example batch \(x \[256, 4\] float32\)"),
    ],
)
def test_what_fails_to_export_is_said(tmp_path, model, message):
    with pytest.raises(ExportError, match=message):
        export_onnx(model, SPEC, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_unknown_input_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"inputs \['features'\] are not arrays of a batch"):
        export_onnx(torch.nn.Linear(4, 1), SPEC, tmp_path / "m.onnx", inputs=["features"])


def test_a_model_without_spec_is_reported(tmp_path):
    path = tmp_path / "plain.onnx"
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])],
            "plain",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])],
        )
    )
    onnx.save(proto, str(path))
    with pytest.raises(ModelSpecError, match="has no rootstream preprocessing spec"):
        load_spec(path)
