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
