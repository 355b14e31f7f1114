"""A template model file for ``rootstream train`` (``model: examples/model.py:build``).

``build`` gets the shape of one event of every input the config lists (``inputs``; default
``x`` and ``mask`` when a feature is jagged) and returns a ``torch.nn.Module`` whose
``forward`` takes those inputs in that order. It may also take ``num_outputs`` (1, or the
number of classes) and ``task``. Return logits for classification: the loss applies the
sigmoid / softmax. Keep ``forward`` free of Python branches on tensor values so it exports
to ONNX.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """An MLP over the values and the mask side by side, so padding differs from a real 0."""

    def __init__(self, num_columns: int, num_outputs: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_columns, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, num_outputs),
        )
        self.num_outputs = num_outputs

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            x = torch.cat([x, mask.to(x.dtype)], dim=1)
        out = self.net(x)
        return out.squeeze(1) if self.num_outputs == 1 else out


def build(input_shapes: dict[str, tuple[int, ...]], num_outputs: int = 1) -> nn.Module:
    """An MLP over ``x`` (and ``mask``); ``input_shapes`` e.g. ``{"x": (40,), "mask": (40,)}``."""
    (width,) = input_shapes["x"]
    return MLP(width * (2 if "mask" in input_shapes else 1), num_outputs)
