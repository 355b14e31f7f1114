"""Batches mix like a global shuffle: per-batch label fractions against the binomial ideal.

Each file is one class (the hard case: a loader that hands files or runs of chunks to
workers yields batches of one class at a time); the statistic is in tests/rootstream/mixing.py.
"""

from __future__ import annotations

import copy

import pytest
import skhep_testdata
import torch
from torch import nn
from torch.utils.data import DataLoader

from rootstream import RootIterableDataset
from rootstream.evaluation import auc
from rootstream.synthetic import branch_names, write_sample
from tests.rootstream.mixing import assert_mixed_like_a_global_shuffle

BATCH = 128
FEATURES = {"generated": ["MET_pt", "Jet_pt"], "real": ["MET_px", "Jet_Px"]}


def one_class_per_file(folder, num_signal: int, num_background: int, **options) -> dict:
    """A generated signal file labelled 1 and a background file labelled 0."""
    return {
        write_sample(folder / "signal.root", num_signal, kind="signal", seed=2, **options): 1,
        write_sample(
            folder / "background.root", num_background, kind="background", seed=3, **options
        ): 0,
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, int]:
    """10k generated signal and 10k background events in clusters of 2.5k."""
    return one_class_per_file(
        tmp_path_factory.mktemp("mixing"), 10_000, 10_000, events_per_basket=2_500
    )


@pytest.fixture(scope="module")
def big_per_class(tmp_path_factory) -> dict[str, int]:
    """One larger file per class, 60k and 40k events in clusters of 5k (an unequal mix)."""
    return one_class_per_file(
        tmp_path_factory.mktemp("big"), 60_000, 40_000, events_per_basket=5_000
    )


@pytest.fixture(scope="module")
def real() -> dict[str, int]:
    """Two real files (same branches, other compressions), one labelled 1, one 0."""
    return {
        f"{skhep_testdata.data_path('uproot-HZZ.root')}:events": 1,
        f"{skhep_testdata.data_path('uproot-HZZ-lz4.root')}:events": 0,
    }


def assert_mixed(batches, p: float, total: int) -> None:
    fractions = [float(b["y"].mean()) for b in batches if len(b["y"]) == BATCH]
    assert_mixed_like_a_global_shuffle(fractions, p, total, BATCH)


def dataset(files, **options) -> RootIterableDataset:
    features = FEATURES["real" if any(":events" in f for f in files) else "generated"]
    return RootIterableDataset(
        files, features, max_length=4, batch_size=BATCH, shuffle=True, seed=5, **options
    )


def _at(ds, epoch):
    ds.set_epoch(epoch)
    return ds


# Four workers on a two-core machine make torch warn; they are what the test is about.
@pytest.mark.filterwarnings("ignore:This DataLoader will create 4:UserWarning")
@pytest.mark.parametrize("num_workers", [0, 2, 4])
@pytest.mark.parametrize("sample", ["generated", "big_per_class", "real"])
def test_batches_mix_like_a_global_shuffle_with_workers(request, sample, num_workers):
    files = request.getfixturevalue(sample)
    ds = dataset(files)
    p, total = label_mean_and_count(files)
    for epoch in (0, 1):
        batches = list(DataLoader(_at(ds, epoch), batch_size=None, num_workers=num_workers))
        assert_mixed(batches, p, total)


def test_batches_mix_with_persistent_workers(generated):
    ds = dataset(generated)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    p, total = label_mean_and_count(generated)
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert_mixed(list(loader), p, total)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_of_every_rank_mix_like_a_global_shuffle(generated, monkeypatch, num_workers):
    p, total = label_mean_and_count(generated)
    batches = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = _at(dataset(generated), 3)
        rank_batches = list(DataLoader(ds, batch_size=None, num_workers=num_workers))
        # each rank on its own is mixed (and ranks together see the whole epoch)
        assert_mixed(rank_batches, p, total)
        batches += rank_batches
    assert sum(len(b["y"]) for b in batches) > total - 4


def label_mean_and_count(files: dict[str, int]) -> tuple[float, int]:
    """The signal fraction and number of events, read with plain uproot."""
    import uproot

    counts = {}
    for spec, label in files.items():
        path, _, tree = spec.rpartition(":") if spec.endswith(":events") else (spec, "", "Events")
        with uproot.open(path) as f:
            counts[spec] = (f[tree].num_entries, label)
    total = sum(n for n, _ in counts.values())
    return sum(n for n, label in counts.values() if label == 1) / total, total


@pytest.fixture(scope="module")
def training_sample(tmp_path_factory) -> dict[str, int]:
    """20k generated signal and 20k background events."""
    return one_class_per_file(tmp_path_factory.mktemp("training"), 20_000, 20_000)


def train_auc(batches, validation, num_features: int, epochs: int = 3) -> float:
    """Train a small MLP on ``batches(epoch)`` with fixed seeds; its AUC on ``validation``.

    BatchNorm, common in HEP networks, makes training depend on what each batch holds: with
    batches of one class at a time its running statistics describe no real batch.
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(num_features, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        for x, y in batches(epoch):
            optimizer.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        scores = model(validation["x"])[:, 0].numpy()
    return auc(scores, validation["y"].numpy())


def test_training_through_workers_matches_training_on_events_shuffled_in_memory(
    training_sample,
):
    features = branch_names(jagged=False)
    whole = RootIterableDataset(  # full batches only: BatchNorm needs more than one event
        training_sample, features, batch_size=BATCH, shuffle=True, drop_last=True
    )
    train, val = whole.train_test_split(test_size=0.25, seed=1)
    validation = everything(val)

    def from_loader(epoch):
        train.set_epoch(epoch)
        for batch in DataLoader(train, batch_size=None, num_workers=2):
            yield batch["x"], batch["y"]

    events = everything(train)

    def from_memory(epoch):
        order = torch.randperm(len(events["y"]), generator=torch.Generator().manual_seed(epoch))
        for rows in order.split(BATCH):
            if len(rows) == BATCH:
                yield events["x"][rows], events["y"][rows]

    through_loader = train_auc(from_loader, validation, len(features))
    in_memory = train_auc(from_memory, validation, len(features))
    assert abs(through_loader - in_memory) < 0.01, (through_loader, in_memory)


def everything(ds: RootIterableDataset) -> dict[str, torch.Tensor]:
    """Every event of a dataset in file order, as one batch."""
    ordered = copy.copy(ds)
    ordered.shuffle, ordered.batch_size, ordered.drop_last = False, 10**9, False
    return next(iter(ordered))
