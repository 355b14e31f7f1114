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
