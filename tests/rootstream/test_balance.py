"""Class balancing: equal classes every epoch, subsets drawn anew each epoch, exactly once
(undersampling) or q / q+1 times (oversampling), with workers, ranks, resume and a split.

Checked against plain uproot + numpy counts and, for the draws, against the binomial ideal.
"""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import numpy as np
import pytest
import skhep_testdata
import uproot
import yaml
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset
from rootstream.balance import BalancedSelection, ChunkClasses
from rootstream.chunks import Chunk, SelectionIndex
from rootstream.cli import main
from rootstream.config import load_config
from rootstream.errors import ConfigError, InvalidArgumentError
from rootstream.train import make_datasets
from tests.rootstream.mixing import assert_mixed_like_a_global_shuffle

MAJORITY, MINORITY = 3000, 700
HZZ = skhep_testdata.data_path("uproot-HZZ.root")
MODEL = str(Path(__file__).parents[2] / "examples" / "model.py") + ":build"


# ----------------------------------------------------------------- the plan, on integers
def plan(counts: list[list[int]], balance: str, epoch: int = 0, seed: int = 0):
    """A balanced epoch of chunks whose events hold classes in runs (``counts[i][c]``)."""
    counts_array = np.array(counts)
    chunks = [Chunk(0, 0, int(n)) for n in counts_array.sum(axis=1)]
    labels = [np.repeat(np.arange(len(row)), row).astype(np.float32) for row in counts]
    classes = ChunkClasses.of(labels, [len(y) for y in labels])
    return BalancedSelection(
        SelectionIndex(chunks, None), classes, balance, seed=seed, epoch=epoch
    ), classes


UNEVEN = [[500, 20, 0], [300, 0, 7], [0, 90, 40], [250, 10, 3]]  # classes of 1050, 120, 50


@pytest.mark.parametrize(("balance", "target"), [("undersample", 50), ("oversample", 1050)])
def test_every_class_gets_the_target_number_of_events(balance, target):
    for epoch in range(5):
        balanced, classes = plan(UNEVEN, balance, epoch)
        taken = np.zeros(3, dtype=np.int64)
        for i in range(len(UNEVEN)):
            times = balanced.multiplicity(i)
            assert times.sum() == balanced.counts[i]
            np.add.at(taken, classes.chunk_codes(i), times)
        assert taken.tolist() == [target] * 3
        assert balanced.class_totals().tolist() == [target] * 3


def test_multiplicities_are_the_quotient_or_one_more():
    balanced, classes = plan(UNEVEN, "oversample")
    quotient = {0: 1, 1: 1050 // 120, 2: 1050 // 50}
    for i in range(len(UNEVEN)):
        codes, times = classes.chunk_codes(i), balanced.multiplicity(i)
        for c, q in quotient.items():
            assert set(times[codes == c].tolist()) <= {q, q + 1}
    balanced, _ = plan(UNEVEN, "undersample")
    assert all(set(balanced.multiplicity(i).tolist()) <= {0, 1} for i in range(len(UNEVEN)))


@pytest.mark.parametrize("balance", ["undersample", "oversample"])
def test_pieces_of_epoch_positions_take_each_event_its_multiplicity(balance):
    balanced, _ = plan(UNEVEN, balance, epoch=3)
    for i in range(len(UNEVEN)):
        cuts = np.linspace(0, balanced.counts[i], 7).astype(int)
        rows = np.concatenate([balanced.positions(i, a, b) for a, b in itertools.pairwise(cuts)])
        times = balanced.multiplicity(i)
        assert np.array_equal(np.bincount(rows, minlength=len(times)), times)
        # round by round: no event twice before every event of its round came once
        first_round = rows[: int((times > 0).sum())]
        assert len(set(first_round.tolist())) == len(first_round)


def test_the_draw_depends_on_seed_and_epoch_only():
    same = [plan(UNEVEN, "undersample", epoch=2, seed=5)[0].multiplicity(0) for _ in range(2)]
    assert np.array_equal(*same)
    others = [
        plan(UNEVEN, "undersample", epoch=e, seed=s)[0].multiplicity(0) for e, s in [(3, 5), (2, 6)]
    ]
    assert all(not np.array_equal(same[0], o) for o in others)


def test_kept_majority_events_are_drawn_like_independent_epochs():
    """Over E epochs each event of a class of N is kept Binomial(E, T / N) times."""
    counts = [[400, 30], [600, 70]]  # class 0: 1000 events, class 1: 100 (the target)
    epochs, p = 400, 100 / 1000
    kept = np.zeros(1000)
    for epoch in range(epochs):
        balanced, classes = plan(counts, "undersample", epoch)
        kept += np.concatenate(
            [balanced.multiplicity(i)[classes.chunk_codes(i) == 0] for i in range(2)]
        )
    ideal_std = np.sqrt(epochs * p * (1 - p))
    assert abs(kept.mean() - epochs * p) < 1e-9  # exactly the target every epoch
    assert 0.85 * ideal_std < kept.std() < 1.15 * ideal_std, (kept.std(), ideal_std)
    per_chunk = np.array([kept[:400].mean(), kept[400:].mean()]) / epochs
    assert np.allclose(per_chunk, p, atol=4 * np.sqrt(p * (1 - p) / (400 * epochs)))


# ----------------------------------------------------------------- real files
@pytest.fixture
def files(numbered) -> dict[str, int]:
    """A majority file labelled 0 (events 0..2999) and a minority file labelled 1."""
    return {
        numbered("majority.root", MAJORITY, basket=250): 0,
        numbered("minority.root", MINORITY, first=MAJORITY, basket=250): 1,
    }


def dataset(files, **kwargs) -> RootIterableDataset:
    options = dict(normalize=None, max_length=2, step_size=500, shuffle=True, seed=3, batch_size=50)
    return RootIterableDataset(files, ["event", "Jet_pt"], **{**options, **kwargs})


def epoch_events(ds, epoch: int, num_workers: int = 0) -> tuple[list[int], list[int]]:
    """The event numbers and labels the dataset yields in one epoch, in order."""
    ds.set_epoch(epoch)
    ids, labels = [], []
    for batch in DataLoader(ds, batch_size=None, num_workers=num_workers):
        ids += batch["x"][:, 0].int().tolist()
        labels += batch["y"].int().tolist()
    return ids, labels


@pytest.mark.parametrize("num_workers", [0, 2])
def test_undersampling_keeps_equal_classes_once_each_and_new_subsets(files, num_workers):
    ds = dataset(files, balance="undersample")
    subsets = []
    for epoch in (0, 1):
        ids, labels = epoch_events(ds, epoch, num_workers)
        assert collections.Counter(labels) == {0: MINORITY, 1: MINORITY}
        assert len(set(ids)) == len(ids)  # exactly once
        assert set(i for i in ids if i >= MAJORITY) == set(range(MAJORITY, MAJORITY + MINORITY))
        subsets.append({i for i in ids if i < MAJORITY})
    overlap = len(subsets[0] & subsets[1]) / MINORITY
    assert abs(overlap - MINORITY / MAJORITY) < 0.1  # independent draws: overlap ~ T / N


def test_workers_yield_the_same_events_as_one_process(files):
    ds = dataset(files, balance="oversample")
    alone = collections.Counter(epoch_events(ds, 4, 0)[0])
    assert collections.Counter(epoch_events(ds, 4, 2)[0]) == alone


def test_oversampling_repeats_the_minority_to_the_majority(files):
    ids, labels = epoch_events(dataset(files, balance="oversample"), epoch=2)
    assert collections.Counter(labels) == {0: MAJORITY, 1: MAJORITY}
    times = collections.Counter(ids)
    assert all(times[i] == 1 for i in range(MAJORITY))
    q = MAJORITY // MINORITY
    minority = [times[i] for i in range(MAJORITY, MAJORITY + MINORITY)]
    assert set(minority) == {q, q + 1}
    assert minority.count(q + 1) == MAJORITY - q * MINORITY


def test_balanced_batches_are_mixed_like_a_global_shuffle(files):
    _, labels = epoch_events(dataset(files, balance="oversample"), epoch=0)
    batches = np.array(labels[: len(labels) // 50 * 50]).reshape(-1, 50)
    assert_mixed_like_a_global_shuffle(batches.mean(axis=1), 0.5, len(labels), 50)


def test_two_ranks_share_one_balanced_epoch(files, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        per_rank.append(epoch_events(dataset(files, balance="undersample"), 1, num_workers=2))
    ids = per_rank[0][0] + per_rank[1][0]
    labels = per_rank[0][1] + per_rank[1][1]
    assert len(per_rank[0][0]) == len(per_rank[1][0])
    assert len(set(ids)) == len(ids) == 2 * MINORITY  # even split of 1400 events: none left out
    assert collections.Counter(labels) == {0: MINORITY, 1: MINORITY}


def test_resume_mid_epoch_gives_the_rest_of_the_balanced_epoch(files):
    ds = dataset(files, balance="undersample")
    ds.set_epoch(1)
    full = [b["x"][:, 0].tolist() for b in ds]
    stream = iter(ds)
    head = [next(stream)["x"][:, 0].tolist() for _ in range(5)]
    resumed = dataset(files, balance="undersample")
    resumed.load_state_dict(ds.state_dict())
    assert head + [b["x"][:, 0].tolist() for b in resumed] == full


def test_the_split_balances_training_and_leaves_validation_alone(files):
    train, test = dataset(files, balance="undersample").train_test_split(0.25, seed=1)
    assert test.balance is None
    _, test_labels = epoch_events(test, 0)
    natural = collections.Counter(test_labels)
    assert natural[0] > 3 * natural[1]  # the natural mix of the held-out events
    train_ids, train_labels = epoch_events(train, 0)
    counts = collections.Counter(train_labels)
    assert counts[0] == counts[1] == MINORITY - natural[1]
    test_ids, _ = epoch_events(test, 0)
    assert not set(train_ids) & set(test_ids)


@pytest.mark.parametrize("balance", ["undersample", "oversample"])
def test_a_label_branch_of_a_real_file_is_balanced(balance):
    """HZZ's NJet as the class (0, 1, 2 jets), counted independently with uproot."""
    tree = uproot.open(HZZ)["events"]
    njet, met = (tree[b].array(library="np") for b in ("NJet", "MET_px"))
    keep = njet < 3
    natural = np.bincount(njet[keep])
    target = natural.min() if balance == "undersample" else natural.max()
    ds = RootIterableDataset(
        f"{HZZ}:events",
        ["MET_px"],
        label="NJet",
        cut="NJet < 3",
        task="multiclass",
        normalize=None,
        batch_size=100,
        shuffle=True,
        step_size=300,
        balance=balance,
    )
    labels, values = [], []
    for batch in ds:
        labels += batch["y"].tolist()
        values += batch["x"][:, 0].tolist()
    assert collections.Counter(labels) == {0: target, 1: target, 2: target}
    class_of = dict(zip(met[keep].astype(np.float32).tolist(), njet[keep].tolist(), strict=True))
    assert all(class_of[v] == y for v, y in zip(values, labels, strict=True))
    if balance == "undersample":
        assert len(set(values)) == len(values)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"balance": "smote"}, "balance must be one of"),
        ({"balance": "undersample", "files": "plain"}, "needs class labels"),
        ({"balance": "oversample", "task": "regression"}, "task is regression"),
        ({"balance": "undersample", "cut": "event < 3000"}, r"only label\(s\) \[0\.0\]"),
    ],
)
def test_bad_balancing_is_refused_with_a_clear_error(files, options, message):
    given = dict(options)
    chosen = next(iter(files)) if given.pop("files", None) == "plain" else files
    with pytest.raises(InvalidArgumentError, match=message):
        dataset(chosen, **given)


def test_train_balances_from_the_flag_and_the_config_key(files, tmp_path):
    values = {
        "files": files,
        "features": ["event", "Jet_pt"],
        "max_length": 2,
        "model": MODEL,
        "epochs": 1,
        "output": str(tmp_path / "out"),
    }
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(values))
    train, val = make_datasets(load_config(config, {"balance": "oversample"}))
    _, train_labels = epoch_events(train, 0)
    _, val_labels = epoch_events(val, 0)
    natural = collections.Counter(val_labels)
    assert natural[0] > 3 * natural[1]
    target = MAJORITY - natural[0]  # the training part's majority
    assert collections.Counter(train_labels) == {0: target, 1: target}
    assert main(["train", str(config), "--balance", "undersample"]) == 0
    config.write_text(yaml.safe_dump({**values, "balance": "downsample"}))
    with pytest.raises(ConfigError, match="key 'balance' must be 'undersample', 'oversample'"):
        load_config(config)
