"""Run under ``torchrun``: a short DDP training that records what every rank saw.

Each rank writes ``rank<N>.json`` into the output folder: the event numbers it trained on
(the ``event`` branch, not normalized), its number of steps, and its final weights.
With ``--labelled`` the files are classes 1, 0, 1, ..., read at the default step size in
batches of 128, and it also records each full batch's label fraction. With
``--stop-after K`` it saves a checkpoint (model, optimizer, loader state) after K steps and
exits; with ``--resume`` it continues from that checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchdata.stateful_dataloader import StatefulDataLoader

from rootstream import RootIterableDataset, compute_stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--stop-after", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--labelled", action="store_true")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    labelled = {f: 1 - i % 2 for i, f in enumerate(args.files)} if args.labelled else None
    ds = RootIterableDataset(
        labelled or args.files,
        ["event", "MET_pt", "Jet_pt"],
        max_length=2,
        normalize=None,
        batch_size=128 if labelled else 16,
        shuffle=True,
        seed=1,
        step_size="100 MB" if labelled else 100,
        cut="MET_pt > 5",
    )
    ds.set_epoch(0)
    model = DistributedDataParallel(nn.Linear(len(ds.feature_names), 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    loader = StatefulDataLoader(ds, batch_size=None, num_workers=2)
    checkpoint = args.out / f"checkpoint{rank}.pt"
    if args.resume:
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
    events, fractions, steps = [], [], 0
    for batch in loader:
        optimizer.zero_grad()
        model(batch["x"]).pow(2).mean().backward()
        optimizer.step()
        events += batch["x"][:, 0].long().tolist()
        if labelled and len(batch["y"]) == 128:
            fractions.append(float(batch["y"].mean()))
        steps += 1
        if steps == args.stop_after:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "loader": loader.state_dict(),
                },
                checkpoint,
            )
            break
    weights = [p.detach().flatten().tolist() for p in model.parameters()]
    stats = compute_stats(args.files, ["MET_pt", "Jet_pt"], step_size=100, cut="MET_pt > 5")
    summary = {b: (stats.mean[b], stats.std[b], stats.count[b]) for b in stats.branches}
    name = "stopped" if args.stop_after else "resumed" if args.resume else "full"
    (args.out / f"{name}{rank}.json").write_text(
        json.dumps(
            {
                "events": events,
                "fractions": fractions,
                "steps": steps,
                "weights": weights,
                "stats": summary,
            }
        )
    )
    dist.barrier()  # no rank tears down while another still finishes a collective
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
