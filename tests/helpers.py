"""Test helpers shared by the model, checkpoint and fuse tests."""

from __future__ import annotations

import torch
from torch import nn

from swiftlearn.utils import randomize_  # noqa: F401  (the tests import it from here)


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
