"""``rootstream train``: the whole training workflow of one :class:`~rootstream.config.TrainConfig`.

Data (a shuffled :class:`~rootstream.RootIterableDataset`, split into training and validation
events), the user's model (``build(input_shapes)`` from a Python file), a task-dependent and
optionally weighted loss, one line per epoch, checkpoints that resume mid-epoch, the best
model exported to ONNX with its preprocessing spec, a metrics JSON, figures, an upload.

Started by ``torchrun``, every rank runs the same code (gloo on CPU, nccl on GPU); rank 0
prints, keeps the best checkpoint and writes the outputs.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from rootstream.config import TrainConfig
from rootstream.dataset import RootIterableDataset
from rootstream.errors import ConfigError
from rootstream.evaluation import METRICS, better, metric
from rootstream.preprocess import Spec

__all__ = ["build_model", "input_shapes", "train"]

# may change on resume; the token is never in a checkpoint (TrainConfig.to_dict leaves it out)
CHECKPOINT_KEYS_FREE = ("epochs", "upload", "name", "output", "checkpoint_every")


@dataclass
class Progress:
    """What a checkpoint holds besides the model, optimizer and loader states."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    loss_sum: float = 0.0  # of the current epoch, so a resumed epoch reports all of it
    weight_sum: float = 0.0
    num_events: int = 0
    seconds: float = 0.0


def train(
    config: TrainConfig, *, resume: bool = False, stop_after: int | None = None
) -> dict[str, Any] | None:
    """Run the workflow; return the metrics (rank 0; None elsewhere or when stopped).

    Args:
        config: what to train, on what, and how.
        resume: continue from the checkpoint in ``config.output`` (mid-epoch if it was).
        stop_after: stop after this many optimizer steps in total, after a checkpoint, as an
            interruption would (a test of resuming).
    """
    rank, world, device = _setup_distributed()
    try:
        result = _Run(config, rank, world, device).run(resume=resume, stop_after=stop_after)
        if dist.is_initialized():
            dist.barrier()  # no rank tears down while another still finishes a collective
        return result
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _setup_distributed() -> tuple[int, int, torch.device]:
    """Join the process group when started by torchrun; pick this rank's device."""
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


# ----------------------------------------------------------------- data and model
def make_datasets(config: TrainConfig) -> tuple[RootIterableDataset, RootIterableDataset]:
    """The shuffled training events and the validation events of the config."""
    ds = RootIterableDataset(
        config.files,
        config.features,
        **config.read_options.keywords(),
        balance=config.balance,
        max_length=config.max_length,
        normalize=config.normalize,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        groups=config.groups,
    )
    if ds.task is None:
        raise ConfigError("the data has no labels: give 'label' or files as {file: label}")
    return ds.train_test_split(test_size=config.validation, seed=config.seed)


def input_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    """Shape of one event of every array a batch holds (no batch axis), by name."""
    if spec.groups is None:
        width = len(spec.feature_names)
        shapes = {"x": (width,)}
        return {**shapes, "mask": (width,)} if spec.has_jagged else shapes
    shapes = {}
    for group, names in spec.groups:
        length = spec.feature(names[0]).length
        if length is None:
            shapes[group] = (len(names),)
        else:
            shapes[group] = (length, len(names))
            shapes[f"{group}_mask"] = (length,)
    return shapes


def default_inputs(spec: Spec) -> list[str]:
    """``x`` (and ``mask`` when a feature is jagged), or every group (and its mask)."""
    return list(input_shapes(spec))


def num_outputs(ds: RootIterableDataset, config: TrainConfig) -> int:
    """1, or the number of classes of a multiclass task."""
    if ds.task != "multiclass":
        return 1
    if ds.label_names:
        return len(ds.label_names)
    if isinstance(config.files, Mapping):
        return int(max(config.files.values())) + 1
    raise ConfigError(
        "a multiclass label branch needs the number of classes: give files as {file: class}"
    )


def build_model(
    config: TrainConfig, shapes: Mapping[str, tuple[int, ...]], *, outputs: int, task: str
) -> nn.Module:
    """Call ``build(input_shapes[, num_outputs=..., task=...])`` of the config's model file."""
    path, name = config.model_path, config.model_function
    if not path.is_file():
        raise ConfigError(f"key 'model': no file {path} (give 'path/to/model.py:function')")
    module_spec = importlib.util.spec_from_file_location(f"rootstream_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    build = getattr(module, name, None)
    if not callable(build):
        functions = [k for k, v in vars(module).items() if inspect.isfunction(v)]
        raise ConfigError(f"key 'model': {path} has no function {name!r} (it has {functions})")
    extras = {"num_outputs": outputs, "task": task}
    parameters = inspect.signature(build).parameters
    accepts_all = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    model = build(
        dict(shapes), **{k: v for k, v in extras.items() if accepts_all or k in parameters}
    )
    if not isinstance(model, nn.Module):
        raise TypeError(f"{path}:{name} returned {type(model).__name__}, not a torch.nn.Module")
    return model


# ----------------------------------------------------------------- loss and validation
def event_losses(task: str, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of every event: BCE on logits, cross-entropy on logits, or squared error."""
    if task == "multiclass":
        return F.cross_entropy(outputs, y, reduction="none")
    outputs = outputs.reshape(y.shape)
    if task == "binary":
        return F.binary_cross_entropy_with_logits(outputs, y, reduction="none")
    return F.mse_loss(outputs, y, reduction="none")


def reduce_loss(losses: torch.Tensor, w: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """The (weighted) mean loss of a batch, and the batch's total weight."""
    if w is None:
        return losses.mean(), float(len(losses))
    total = w.sum()
    return (losses * w).sum() / total.clamp_min(1e-12), float(total)


@contextmanager
def _quiet_torchdata() -> Iterator[None]:
    with warnings.catch_warnings():
        # torchdata 0.11 calls a deprecated torch function whenever a loader starts; harmless
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
        yield


class _Run:
    """One training run: the state shared by the epoch loop, validation and checkpoints."""

    def __init__(self, config: TrainConfig, rank: int, world: int, device: torch.device) -> None:
        try:
            from torchdata.stateful_dataloader import StatefulDataLoader
        except ImportError as err:
            raise ImportError("training needs torchdata: pip install 'rootstream[train]'") from err

        self.config, self.rank, self.world, self.device = config, rank, world, device
        self.out = Path(config.output)
        self.train_ds, self.val_ds = make_datasets(config)
        self.task = self.train_ds.task
        self.metric_name = METRICS[self.task][0]
        self.inputs = list(config.inputs or default_inputs(self.train_ds.spec))
        shapes = input_shapes(self.train_ds.spec)
        unknown = [name for name in self.inputs if name not in shapes]
        if unknown:
            raise ConfigError(f"key 'inputs': {unknown} are not arrays of a batch: {list(shapes)}")
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = build_model(
            config,
            {k: shapes[k] for k in self.inputs},
            outputs=num_outputs(self.train_ds, config),
            task=self.task,
        ).to(device)
        self.ddp = nn.parallel.DistributedDataParallel(self.model) if world > 1 else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        with _quiet_torchdata():  # the warning comes when a loader is created
            workers = config.workers
            self.loader = StatefulDataLoader(self.train_ds, batch_size=None, num_workers=workers)
            self.val_loader = StatefulDataLoader(self.val_ds, batch_size=None, num_workers=workers)
        self.progress = Progress()
        self.checkpoint = self.out / f"checkpoint-rank{rank}.pt"

    # ----------------------------------------------------------------- the loop
    def run(self, *, resume: bool, stop_after: int | None) -> dict[str, Any] | None:
        self.out.mkdir(parents=True, exist_ok=True)
        loader_state = self._resume() if resume else None
        for epoch in range(self.progress.epoch, self.config.epochs):
            self.progress.epoch = epoch
            self.train_ds.set_epoch(epoch)
            if loader_state is not None:
                self.loader.load_state_dict(loader_state)  # after set_epoch: mid-epoch
                loader_state = None
            if not self._train_epoch(stop_after):
                if self.rank == 0:
                    print(f"stopped after step {self.progress.step} (checkpoint {self.checkpoint})")
                return None
            self._end_epoch()
        return self._finish() if self.rank == 0 else self._wait()

    def _train_epoch(self, stop_after: int | None) -> bool:
        """Train one epoch (or its rest); False when stopped after ``stop_after`` steps."""
        from tqdm.auto import tqdm

        p, model = self.progress, self.ddp
        model.train()
        bar = tqdm(
            desc=f"epoch {p.epoch + 1}/{self.config.epochs}",
            unit=" events",
            disable=True if self.rank else None,
            leave=False,
            file=sys.stderr,
        )
        start = time.perf_counter()
        with _quiet_torchdata(), bar:
            for batch in self.loader:
                self.optimizer.zero_grad()
                out = model(*(batch[k].to(self.device) for k in self.inputs))
                w = batch["w"].to(self.device) if "w" in batch else None
                loss, weight = reduce_loss(
                    event_losses(self.task, out, batch["y"].to(self.device)), w
                )
                loss.backward()
                self.optimizer.step()
                n = len(batch["y"])
                p.step, p.num_events = p.step + 1, p.num_events + n
                p.loss_sum, p.weight_sum = (
                    p.loss_sum + float(loss.detach()) * weight,
                    p.weight_sum + weight,
                )
                bar.update(n)
                bar.set_postfix(loss=f"{p.loss_sum / max(p.weight_sum, 1e-12):.4f}")
                if p.step % self.config.checkpoint_every == 0 or p.step == stop_after:
                    p.seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self._save(self.loader.state_dict())
                if p.step == stop_after:
                    return False
        p.seconds += time.perf_counter() - start
        return True

    def _end_epoch(self) -> None:
        """Validate, print the epoch's line, keep the best model, checkpoint the next epoch."""
        p = self.progress
        loss_sum, weight_sum, num_events, seconds = _summed(
            (p.loss_sum, p.weight_sum, p.num_events, p.seconds)
        )
        val_loss, value, outputs, labels = self._validate()
        record = {
            "epoch": p.epoch + 1,
            "train_loss": loss_sum / max(weight_sum, 1e-12),
            "val_loss": val_loss,
            self.metric_name: value,
            "events_per_s": num_events / max(seconds / self.world, 1e-9),
        }
        p.history.append(record)
        is_best = p.best_epoch is None or better(self.task, value, p.best)
        if is_best:
            p.best, p.best_epoch = value, p.epoch + 1
        if self.rank == 0:
            print(
                f"epoch {record['epoch']}/{self.config.epochs}: train loss "
                f"{record['train_loss']:.4f}, val loss {val_loss:.4f}, val {self.metric_name} "
                f"{value:.4f}, {record['events_per_s']:,.0f} events/s"
                + (" (best)" if is_best else ""),
                flush=True,
            )
            if is_best:
                torch.save(
                    {
                        "model": self.model.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "dataset": self.loader.state_dict(),  # of every worker
                        "epoch": p.epoch + 1,
                        self.metric_name: value,
                        "outputs": outputs,
                        "labels": labels,
                    },
                    self.out / "best.pt",
                )
        p.epoch += 1
        p.loss_sum = p.weight_sum = p.seconds = 0.0
        p.num_events = 0
        self._save(None)

    @torch.no_grad()
    def _validate(self) -> tuple[float, float, np.ndarray, np.ndarray]:
        """Loss and metric over the validation events of all ranks, with their outputs."""
        self.model.eval()
        outputs, labels, loss_sum, weight_sum = [], [], 0.0, 0.0
        with _quiet_torchdata():
            for batch in self.val_loader:
                out = self.model(*(batch[k].to(self.device) for k in self.inputs))
                y = batch["y"].to(self.device)
                w = batch["w"].to(self.device) if "w" in batch else None
                loss, weight = reduce_loss(event_losses(self.task, out, y), w)
                loss_sum, weight_sum = loss_sum + float(loss) * weight, weight_sum + weight
                out = out if self.task == "multiclass" else out.reshape(y.shape)
                outputs.append(out.cpu().numpy())
                labels.append(batch["y"].numpy())
        self.model.train()
        mine = [(loss_sum, weight_sum, outputs, labels)]
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, mine[0])
            mine = gathered
        loss_sum = sum(m[0] for m in mine)
        weight_sum = sum(m[1] for m in mine)
        all_outputs = np.concatenate([o for m in mine for o in m[2]])
        all_labels = np.concatenate([y for m in mine for y in m[3]])
        value = metric(self.task, all_outputs, all_labels)
        return loss_sum / max(weight_sum, 1e-12), value, all_outputs, all_labels

    # ----------------------------------------------------------------- checkpoints
    def _save(self, loader_state: dict[str, Any] | None) -> None:
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "loader": loader_state,
                "progress": vars(self.progress),
                "config": self.config.to_dict(),
                "world_size": self.world,
            },
            tmp,
        )
        os.replace(tmp, self.checkpoint)

    def _resume(self) -> dict[str, Any] | None:
        if not self.checkpoint.is_file():
            raise FileNotFoundError(
                f"--resume: no checkpoint {self.checkpoint} (start without --resume)"
            )
        state = torch.load(self.checkpoint, weights_only=False, map_location=self.device)
        saved, now = state["config"], self.config.to_dict()
        changed = [k for k in now if k not in CHECKPOINT_KEYS_FREE and saved.get(k) != now[k]]
        if changed or state["world_size"] != self.world:
            what = changed or [f"world size {state['world_size']} -> {self.world}"]
            raise ConfigError(
                f"--resume: the checkpoint {self.checkpoint} was made with other settings "
                f"({', '.join(map(str, what))}); resume with the same config and ranks"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        return state["loader"]

    # ----------------------------------------------------------------- outputs
    def _wait(self) -> None:
        if self.world > 1:
            dist.barrier()  # rank 0 exports and uploads
        return None

    def _finish(self) -> dict[str, Any]:
        from rootstream.export import export_onnx
        from rootstream.plots import plot_curves, plot_roc

        p = self.progress
        best = torch.load(self.out / "best.pt", weights_only=False, map_location="cpu")
        self.model.cpu().load_state_dict(best["model"])
        onnx_path = self.out / "model.onnx"
        export_onnx(self.model, self.train_ds, onnx_path, inputs=self.inputs, task=self.task)
        figures = [self.out / "training.png"]
        plot_curves(p.history, self.metric_name, figures[0])
        if self.task == "binary":
            figures.append(self.out / "roc.png")
            plot_roc(best["outputs"], best["labels"], figures[-1])
        metrics = {
            "task": self.task,
            "metric": self.metric_name,
            "best_epoch": p.best_epoch,
            "best": p.best,
            "history": p.history,
            "steps": p.step,
            "world_size": self.world,
            "inputs": self.inputs,
            "label_names": self.train_ds.label_names,
            "onnx": str(onnx_path),
            "figures": [str(f) for f in figures],
        }
        if self.config.upload:
            from rootstream.client import Client

            name = self.config.name or Path(self.config.output).resolve().name
            with Client(self.config.upload, token=self.config.upload_token) as client:
                metrics["upload"] = {"url": self.config.upload, **client.upload(name, onnx_path)}
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"best epoch {p.best_epoch}: val {self.metric_name} {p.best:.4f}; wrote {onnx_path}")
        if "upload" in metrics:
            up = metrics["upload"]
            print(f"uploaded to {up['url']} as {up['model']!r} version {up['version']}")
        self._wait()
        return metrics


def _summed(values: tuple[float, ...]) -> tuple[float, ...]:
    """Sums over all ranks (the values themselves in one process)."""
    if not dist.is_initialized():
        return values
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, values)
    return tuple(sum(v) for v in zip(*gathered, strict=True))
