"""``rootstream train``: real ROOT files in; metrics, checkpoints, ONNX, figures, upload out."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import onnxruntime as ort
import pytest
import torch
import uproot
import yaml

from rootstream import load_spec, synthetic
from rootstream.cli import main
from rootstream.client import Client
from rootstream.config import check_config, load_config
from rootstream.errors import ConfigError
from rootstream.train import build_model, input_shapes, make_datasets, num_outputs
from tests.rootstream.test_distributed import needs_isolation, run_isolated
from tests.serving.conftest import running_server

MODEL = str(Path(__file__).parents[2] / "examples" / "model.py") + ":build"
NUM_EVENTS = 1500  # per class
TOKEN = "s3cret-token-of-the-test-server"


def write_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def run_train(*args: str) -> None:
    assert main(["train", *args]) == 0


def files_holding(folder: Path, secret: str) -> list[Path]:
    """The files below ``folder`` whose bytes hold ``secret`` (checkpoints store it as is)."""
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, int]:
    """Generated signal and background (rootstream.synthetic), one file each."""
    folder = tmp_path_factory.mktemp("samples")
    return {
        synthetic.write_sample(folder / f"{kind}.root", NUM_EVENTS, kind=kind, seed=i): i
        for i, kind in enumerate(("background", "signal"))
    }


def binary_values(samples: dict[str, int], output: Path, **extra) -> dict:
    return {
        "files": samples,
        "features": ["MET_pt", "HT", "nPV", "Jet_pt", "Jet_eta", "Muon_pt"],
        "max_length": {"Jet_*": 4, "Muon_*": 2},
        "model": MODEL,
        "epochs": 2,
        "batch_size": 128,
        "learning_rate": 0.003,
        "checkpoint_every": 4,
        "output": str(output),
        **extra,
    }


@pytest.fixture(scope="module")
def binary_run(samples, tmp_path_factory) -> Path:
    """An uninterrupted binary run (2 epochs); its output folder."""
    root = tmp_path_factory.mktemp("binary")
    run_train(str(write_config(root / "train.yaml", **binary_values(samples, root / "out"))))
    return root / "out"


def best_model(config_path: Path):
    """The trained torch model of a run (best checkpoint), its config and validation data."""
    config = load_config(config_path)
    train, val = make_datasets(config)
    shapes = input_shapes(train.spec)
    model = build_model(config, shapes, outputs=num_outputs(train, config), task=train.task)
    state = torch.load(Path(config.output) / "best.pt", weights_only=False)
    model.load_state_dict(state["model"])
    return model.eval(), config, val


# ----------------------------------------------------------------- binary
def test_binary_run_learns_and_writes_every_output(binary_run, capsys):
    metrics = json.loads((binary_run / "metrics.json").read_text())
    assert metrics["task"] == "binary"
    assert metrics["metric"] == "auc"
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["best"] == max(h["auc"] for h in metrics["history"])
    assert metrics["best"] > 0.7, metrics  # chance is 0.5
    for h in metrics["history"]:
        assert np.isfinite([h["train_loss"], h["val_loss"], h["events_per_s"]]).all()
    for png in ("training.png", "roc.png"):
        assert (binary_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    spec = load_spec(binary_run / "model.onnx")
    assert spec.inputs == ("x", "mask")
    assert spec.task == "binary"


def test_epoch_lines_report_losses_metric_and_rate(samples, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", **binary_values(samples, tmp_path / "out", epochs=1))
    run_train(str(config))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("epoch 1/1: train loss ")
    assert "val loss" in lines[0]
    assert "val auc" in lines[0]
    assert "events/s" in lines[0]


def test_onnx_predictions_equal_the_trained_torch_model(binary_run):
    model, _, val = best_model(binary_run.parent / "train.yaml")
    batch = next(iter(val))
    with torch.no_grad():
        expected = model(batch["x"], batch["mask"]).numpy()
    session = ort.InferenceSession(str(binary_run / "model.onnx"))
    (got,) = session.run(None, {"x": batch["x"].numpy(), "mask": batch["mask"].numpy()})
    assert got.shape == expected.shape == (len(batch["y"]),)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert np.std(expected) > 0  # a trained model, not a constant


# ----------------------------------------------------------------- resume
def test_resume_after_an_interruption_equals_an_uninterrupted_run(
    samples, binary_run, tmp_path, capsys
):
    config = write_config(tmp_path / "train.yaml", **binary_values(samples, tmp_path / "out"))
    steps_per_epoch = json.loads((binary_run / "metrics.json").read_text())["steps"] // 2
    stop = steps_per_epoch + 3  # mid-way through the second epoch
    run_train(str(config), "--stop-after", str(stop))
    assert f"stopped after step {stop}" in capsys.readouterr().out
    assert not (tmp_path / "out" / "model.onnx").exists()
    state = torch.load(tmp_path / "out" / "checkpoint-rank0.pt", weights_only=False)
    assert (state["progress"]["epoch"], state["progress"]["step"]) == (1, stop)

    run_train(str(config), "--resume")
    out = capsys.readouterr().out
    assert "epoch 1/2" not in out  # the finished epoch is not trained again
    assert "epoch 2/2" in out
    resumed = json.loads((tmp_path / "out" / "metrics.json").read_text())
    whole = json.loads((binary_run / "metrics.json").read_text())
    assert resumed["steps"] == whole["steps"]  # no batch repeated or left out
    for r, w in zip(resumed["history"], whole["history"], strict=True):
        assert r["train_loss"] == pytest.approx(w["train_loss"], rel=1e-6)
        assert r["auc"] == pytest.approx(w["auc"], rel=1e-9)
    a = torch.load(tmp_path / "out" / "best.pt", weights_only=False)["model"]
    b = torch.load(binary_run / "best.pt", weights_only=False)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_resume_without_a_checkpoint_is_an_error(samples, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", **binary_values(samples, tmp_path / "out"))
    assert main(["train", str(config), "--resume"]) == 1
    assert "no checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------- multiclass
@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> dict[str, str]:
    """Three files whose flat features are shifted Gaussians, plus a jagged ``Jet_pt``."""
    folder = tmp_path_factory.mktemp("classes")
    files = {}
    for i, name in enumerate(("qcd", "ttbar", "higgs")):
        rng = np.random.default_rng(i)
        n = 1000
        counts = rng.integers(0, 4, n)
        path = folder / f"{name}.root"
        branches = {
            "a": rng.normal(2.0 * i, 1.0, n).astype(np.float32),
            "b": rng.normal(-1.5 * i, 1.0, n).astype(np.float32),
            "Jet": ak.zip({"pt": ak.unflatten(rng.exponential(30, counts.sum()), counts)}),
        }
        with uproot.recreate(path) as f:
            f.mktree(
                "Events",
                {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in branches.items()},
            )
            f["Events"].extend(branches)
        files[str(path)] = name
    return files


def test_multiclass_run_reaches_an_accuracy_well_above_chance(three_classes, tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        files=three_classes,
        features=["a", "b", "Jet_pt"],
        max_length=3,
        model=MODEL,
        epochs=2,
        batch_size=100,
        learning_rate=0.01,
        output=str(tmp_path / "out"),
    )
    run_train(str(config))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["task"] == "multiclass"
    assert sorted(metrics["label_names"]) == ["higgs", "qcd", "ttbar"]
    assert metrics["best"] > 0.75, metrics  # chance is 1/3
    assert not (tmp_path / "out" / "roc.png").exists()
    spec = load_spec(tmp_path / "out" / "model.onnx")
    assert spec.label_names == tuple(metrics["label_names"])
    model, _, val = best_model(config)
    batch = next(iter(val))
    with torch.no_grad():
        expected = model(batch["x"], batch["mask"]).numpy()
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    (got,) = session.run(None, {"x": batch["x"].numpy(), "mask": batch["mask"].numpy()})
    assert got.shape == (len(batch["y"]), 3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_weighted_regression_from_flags(hzz, tmp_path, capsys):
    """A label branch, a weight, a cut, flags only: the loss and RMSE follow the task."""
    args = ["--files", hzz, "--tree", "events", "--features", "MET_px", "MET_py", "Jet_Px"]
    args += ["--label", "MET_px * 0.5", "--weight", "abs(MET_py) + 1", "--cut", "NJet >= 1"]
    args += ["--max-length", "{Jet_*: 2}", "--normalize", "standard", "--model", MODEL]
    args += ["--epochs", "2"]
    args += ["--batch-size", "64", "--learning-rate", "0.01", "-o", str(tmp_path / "out")]
    run_train(*args)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["task"] == "regression"
    assert metrics["metric"] == "rmse"
    assert "val rmse" in capsys.readouterr().out
    # the target's spread is about 0.5 * std(MET_px) (~ 15 GeV); a fit does much better
    assert metrics["best"] < 5.0, metrics
    assert load_spec(tmp_path / "out" / "model.onnx").spec.normalize == "standard"


# ----------------------------------------------------------------- bad configs
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epoch": 3}, "unknown key 'epoch'; did you mean 'epochs'"),
        ({"epochs": "two"}, "key 'epochs' must be a positive int, not 'two'"),
        ({"batch_size": 0}, "key 'batch_size' must be a positive int"),
        ({"validation": 1.5}, "key 'validation' must be a fraction between 0 and 1"),
        ({"normalize": "zscore"}, "key 'normalize' must be 'standard', 'minmax', 'robust' or null"),
        ({"features": "MET_pt"}, "key 'features' must be a list"),
        ({"model": "model.txt"}, "key 'model' must be 'path/to/model.py:function'"),
        ({"max_length": {"Jet_*": -1}}, "key 'max_length' must be a positive int"),
        ({"label": "x"}, "give labels in 'files'"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(samples, tmp_path, capsys, change, message):
    config = write_config(tmp_path / "c.yaml", **{**binary_values(samples, tmp_path), **change})
    assert main(["train", str(config)]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert str(config) in err


def test_missing_keys_and_non_mapping_files_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing key 'model'"):
        check_config({"files": {"a.root": 0}, "features": ["x"]})
    with pytest.raises(ConfigError, match="give 'features'"):
        check_config({"files": {"a.root": 0}, "model": "m.py:build"})
    (tmp_path / "list.yaml").write_text("- files\n- model\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_model_file_without_the_function_is_an_error(samples, tmp_path, capsys):
    config = write_config(
        tmp_path / "c.yaml", **binary_values(samples, tmp_path, model=MODEL[:-5] + "make")
    )
    assert main(["train", str(config)]) == 1
    assert "has no function 'make'" in capsys.readouterr().err


def test_relative_paths_of_a_config_file_are_relative_to_it(tmp_path):
    (tmp_path / "sub").mkdir()
    config = write_config(
        tmp_path / "sub" / "c.yaml", files={"s.root": 1, "b.root": 0}, features=["x"], model="m.py"
    )
    loaded = load_config(config, {"epochs": 3})
    assert loaded.files == {
        str(tmp_path / "sub" / "s.root"): 1,
        str(tmp_path / "sub" / "b.root"): 0,
    }
    assert (loaded.model_path, loaded.model_function) == (tmp_path / "sub" / "m.py", "build")
    assert loaded.epochs == 3


# ----------------------------------------------------------------- upload
def test_upload_to_a_running_server(samples, tmp_path, capsys):
    with running_server(tmp_path / "models", tmp_path / "server.log", "--token", TOKEN) as s:
        config = write_config(
            tmp_path / "c.yaml", **binary_values(samples, tmp_path / "out", epochs=1)
        )
        run_train(str(config), "--upload", s.url, "--token", TOKEN, "--name", "higgs")
        assert f"uploaded to {s.url} as 'higgs' version 1" in capsys.readouterr().out
        metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
        assert metrics["upload"] == {"url": s.url, "model": "higgs", "version": 1}
        client = Client(s.url, token=TOKEN)
        assert [m["name"] for m in client.list()] == ["higgs"]
        features = ["MET_pt", "HT", "nPV", "Jet_pt", "Jet_eta", "Muon_pt"]
        scores = {}
        for path, label in samples.items():
            with uproot.open(path) as f:
                events = ak.to_list(f["Events"].arrays(features, entry_stop=200))
            scores[label] = np.asarray(client.predict("higgs", events=events))
            assert scores[label].shape == (200,)
        assert scores[1].mean() > scores[0].mean()  # signal scores higher than background
    assert (tmp_path / "out" / "checkpoint-rank0.pt").is_file()
    assert files_holding(tmp_path / "out", TOKEN) == []


def test_token_from_the_environment_uploads_and_a_resume_does_not_need_it(
    samples, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("ROOTSTREAM_SERVE_TOKEN", raising=False)
    with running_server(tmp_path / "models", tmp_path / "server.log", "--token", TOKEN) as s:
        config = write_config(
            tmp_path / "c.yaml", **binary_values(samples, tmp_path / "out", epochs=1)
        )
        run_train(str(config), "--upload", s.url, "--token", TOKEN, "--stop-after", "3")
        state = torch.load(tmp_path / "out" / "checkpoint-rank0.pt", weights_only=False)
        assert state["progress"]["step"] == 3
        assert "token" not in state["config"]
        monkeypatch.setenv("ROOTSTREAM_SERVE_TOKEN", TOKEN)
        run_train(str(config), "--resume", "--upload", s.url, "--name", "higgs")  # no --token
        assert f"uploaded to {s.url} as 'higgs' version 1" in capsys.readouterr().out
        assert [m["name"] for m in Client(s.url, token=TOKEN).list()] == ["higgs"]
    assert files_holding(tmp_path / "out", TOKEN) == []


def test_the_token_stays_out_of_the_config_record_repr_and_errors():
    values = {"files": {"a.root": 0}, "features": ["x"], "model": "m.py"}
    config = check_config({**values, "token": TOKEN})
    assert config.token == TOKEN
    assert TOKEN not in repr(config)
    assert "token" not in config.to_dict()
    with pytest.raises(ConfigError, match="key 'token' must be") as info:
        check_config({**values, "token": 1234567})  # YAML reads an unquoted number as an int
    assert "1234567" not in str(info.value)


# ----------------------------------------------------------------- torchrun
@pytest.mark.slow
@needs_isolation
def test_the_same_command_runs_under_torchrun(samples, tmp_path):
    """2 ranks (gloo): every rank trains its share; rank 0 prints, exports and reports."""
    config = write_config(tmp_path / "c.yaml", **binary_values(samples, tmp_path / "out"))
    out = run_isolated("-m", "rootstream.cli", "train", str(config))
    assert out.count("epoch 2/2: train loss") == 1
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["best"] > 0.7, metrics
    for rank in (0, 1):  # each rank checkpoints its own stream position
        state = torch.load(tmp_path / "out" / f"checkpoint-rank{rank}.pt", weights_only=False)
        assert state["progress"]["epoch"] == 2
    assert load_spec(tmp_path / "out" / "model.onnx").inputs == ("x", "mask")


def test_the_template_config_is_valid():
    template = Path(__file__).parents[2] / "examples" / "train.yaml"
    config = load_config(template)
    assert config.model_path == template.parent / "model.py"
    assert config.model_path.is_file()
    assert config.task is None
    demo = template.parents[1] / "demo-output"
    assert all(Path(f).resolve().parent == demo for f in config.files)
