"""Test helpers shared by the model, checkpoint and fuse tests."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every tensor a value that matters: weights, BatchNorm statistics, layer scales.

    Freshly built models have identity BatchNorms (mean 0, var 1) and layer scales of 1e-5, which
    hide mistakes in conversions and folding. Works on swiftlearn, timm and HF SwiftFormers.
    """
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith("running_mean") or name.endswith("bias"):
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        elif "layer_scale" in name:
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif t.dim() <= 1:  # BatchNorm weights
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        else:
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=g) * 0.8 / fan_in**0.5)
    return model


@torch.no_grad()
def spread_logits_(model: nn.Module, inputs: torch.Tensor, std: float = 3.0) -> nn.Module:
    """Scale both heads so that ``model``'s logits on ``inputs`` have standard deviation ``std``
    (a trained 10-class model's spread): absolute logit tolerances then mean what they do for a
    trained model, and top-1 picks are decisive rather than ties."""
    spread = model(inputs).std()
    for head in (model.head, model.dist_head):
        head.weight.mul_(std / spread)
        head.bias.mul_(std / spread)
    return model
