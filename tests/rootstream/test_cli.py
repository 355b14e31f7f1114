"""The ``rootstream`` command line."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from rootstream import Stats
from rootstream.cli import main


def test_stats_command_writes_the_statistics_of_the_data(hzz, tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert (
        main(
            [
                "stats",
                hzz,
                "--tree",
                "events",
                "--features",
                "MET_px",
                "Jet_Px",
                "--step-size",
                "1000",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    stats = Stats.load(out)
    with uproot.open(hzz) as f:
        met = f["events"]["MET_px"].array(library="np").astype(np.float64)
    assert stats.mean["MET_px"] == pytest.approx(met.mean())
    assert stats.std["MET_px"] == pytest.approx(met.std())
    assert "wrote" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_nonzero(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "missing.root"), "--features", "x", "-o", "s.json"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "missing.root" in err
    with pytest.raises(FileNotFoundError, match=r"missing\.root"):  # --traceback: raised
        main(["--traceback", "stats", str(tmp_path / "missing.root"), "--features", "x", "-o", "s"])


def test_stats_refuses_labels_that_do_not_match_the_files(hzz, tmp_path, capsys):
    command = ["stats", hzz, hzz, "--tree", "events", "--features", "MET_px", "--labels", "1"]
    assert main([*command, "-o", str(tmp_path / "s.json")]) == 1
    assert "--labels gives 1 labels for 2 files" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_inspect_lists_trees_kinds_and_jagged_lengths(hzz, capsys):
    assert main(["inspect", hzz]) == 0
    out = capsys.readouterr().out
    with uproot.open(hzz) as f:
        counts = f["events"]["NJet"].array(library="np")
    expected = "/".join(
        str(int(np.percentile(counts, p, method="inverted_cdf"))) for p in (50, 90, 95, 99, 100)
    )
    assert "TTree 'events': 2,421 entries" in out
    jet = next(line for line in out.splitlines() if line.split()[:1] == ["Jet_Px"])
    assert jet.split()[1:] == ["float[]", "jagged", expected]
    met = next(line for line in out.splitlines() if line.split()[:1] == ["MET_px"])
    assert met.split()[1:] == ["float", "flat"]


def test_serve_is_the_server_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    assert "--models" in capsys.readouterr().out


def test_bench_names_a_missing_benchmark(capsys):
    assert main(["bench", "no-such-benchmark"]) == 1
    assert "no-such-benchmark.py" in capsys.readouterr().err


def test_stats_plot_writes_one_png_per_feature(hzz, tmp_path):
    folder = tmp_path / "hists"
    assert (
        main(
            [
                "stats",
                hzz,
                "--tree",
                "events",
                "--features",
                "MET_px",
                "Jet_Px",
                "NJet * 2",
                "-o",
                str(tmp_path / "s.json"),
                "--plot",
                str(folder),
            ]
        )
        == 0
    )
    pngs = sorted(p.name for p in folder.iterdir())
    assert pngs == ["Jet_Px.png", "MET_px.png", "NJet_2.png"]
    assert all((folder / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
