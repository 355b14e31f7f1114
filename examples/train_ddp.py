"""Distributed data-parallel (DDP) training of a classifier on ROOT files with rootstream.

One process, several GPUs or several nodes, the same script::

    python examples/train_ddp.py                                   # one process
    torchrun --nproc_per_node=2 examples/train_ddp.py              # 2 ranks on this machine
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --nproc_per_node=4 examples/train_ddp.py

Without ``--signal``/``--background`` it trains on generated samples (rootstream.synthetic:
a toy model, not real data). Each rank checkpoints its model, optimizer and loader position
every ``--checkpoint-every`` steps; ``--resume`` continues an interrupted job mid-epoch.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchdata.stateful_dataloader import StatefulDataLoader
from train_demo import (
    FLAT,
    INPUTS,
    JAGGED,
    MAX_LENGTH,
    Classifier,
    model_inputs,
    write_samples,
)

from rootstream import RootIterableDataset, export_onnx
from rootstream.evaluation import auc

# torchdata 0.11 calls a deprecated torch function whenever a loader starts; harmless.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signal", nargs="*", default=[], help="signal files (label 1)")
    parser.add_argument("--background", nargs="*", default=[], help="background files (label 0)")
    parser.add_argument("--events", type=int, default=20_000, help="generated events per class")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per rank")
    parser.add_argument("--out", type=Path, default=Path("ddp-output"))
    parser.add_argument("--checkpoint-every", type=int, default=20, help="steps")
    parser.add_argument("--stop-after", type=int, help="stop after this many steps (a test)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    return parser.parse_args()


def setup() -> tuple[int, int, torch.device]:
    """Join the process group when started by torchrun; pick this rank's device."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device("cpu")
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def input_files(args: argparse.Namespace, rank: int) -> dict[str, int]:
    if args.signal and args.background:
        return {**{f: 1 for f in args.signal}, **{f: 0 for f in args.background}}
    samples = args.out / "samples"
    if rank == 0:
        write_samples(samples, args.events)
    if dist.is_initialized():
        dist.barrier()  # the files exist before any rank opens them
    return {str(samples / "signal.root"): 1, str(samples / "background.root"): 0}


@torch.no_grad()
def validate(model: nn.Module, loader: StatefulDataLoader, device: torch.device) -> float:
    """AUC over the validation events of all ranks (each rank scores its share)."""
    model.eval()
    scores, labels = [], []
    for batch in loader:
        scores.append(model(*(t.to(device) for t in model_inputs(batch))).squeeze(1).cpu().numpy())
        labels.append(batch["y"].numpy())
    mine = (np.concatenate(scores), np.concatenate(labels))
    if dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        mine = tuple(np.concatenate(parts) for parts in zip(*gathered, strict=True))
    model.train()
    return auc(*mine)


def main() -> None:
    args = parse_args()
    rank, world, device = setup()
    files = input_files(args, rank)
    ds = RootIterableDataset(
        files,
        FLAT + JAGGED,
        max_length=MAX_LENGTH,
        batch_size=args.batch_size,
        shuffle=True,
        seed=0,
    )
    train, val = ds.train_test_split(test_size=0.2, seed=0)
    torch.manual_seed(0)  # the same initial weights on every rank
    model = Classifier(len(train.feature_names)).to(device)
    model = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = StatefulDataLoader(train, batch_size=None, num_workers=args.workers)
    val_loader = StatefulDataLoader(val, batch_size=None, num_workers=args.workers)
    checkpoint = args.out / f"checkpoint-rank{rank}.pt"
    start_epoch, step = 0, 0
    if args.resume:
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"], state["step"]
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(start_epoch, args.epochs):
        train.set_epoch(epoch)
        if args.resume and epoch == start_epoch:
            loader.load_state_dict(state["loader"])  # after set_epoch: resume mid-epoch
        start, num_events = time.perf_counter(), 0
        for batch in loader:
            optimizer.zero_grad()
            logits = model(*(t.to(device) for t in model_inputs(batch))).squeeze(1)
            loss_fn(logits, batch["y"].to(device)).backward()
            optimizer.step()
            step, num_events = step + 1, num_events + len(batch["y"])
            if step % args.checkpoint_every == 0 or step == args.stop_after:
                args.out.mkdir(parents=True, exist_ok=True)
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(),
                        "epoch": epoch,
                        "step": step,
                    },
                    checkpoint,
                )
            if step == args.stop_after:
                print(f"rank {rank}: stopped after step {step} (checkpoint {checkpoint})")
                return
        rate = num_events * world / (time.perf_counter() - start)
        val_auc = validate(model, val_loader, device)
        if rank == 0:
            print(
                f"epoch {epoch}: validation AUC {val_auc:.4f}, {rate:,.0f} events/s "
                f"over {world} rank(s)"
            )
    if rank == 0:
        path = args.out / "model.onnx"
        export_onnx((model.module if world > 1 else model).cpu(), train, path, inputs=INPUTS)
        print(f"wrote {path}: the model and its preprocessing, checked against torch")
    if dist.is_initialized():
        dist.barrier()  # no rank tears down while another still finishes a collective
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
