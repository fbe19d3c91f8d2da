"""Exponential moving average of a model's weights (evaluated instead of the raw weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of a model's parameters and buffers.

    ``ema = d * ema + (1 - d) * model`` after every step, with
    ``d = min(decay, (1 + n) / (10 + n))`` so the average is not dominated by the random initial
    weights during the first steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0
        self._ema = list(self.module.state_dict().values())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = list(model.state_dict().values())
        floats = [(e, s) for e, s in zip(self._ema, src) if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [s.detach() for _, s in floats], 1.0 - d)
        for e, s in zip(self._ema, src):
            if not e.is_floating_point():
                e.copy_(s)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
