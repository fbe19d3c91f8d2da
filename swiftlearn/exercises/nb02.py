"""Checks for notebook 02 (MobileViT-v2's separable self-attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..attention import SeparableSelfAttention
from .core import (
    NOT_ATTEMPTED,
    ExerciseError,
    attempt,
    attempt_without_calling,
    calls_any,
    expect_close,
    expect_number,
    keeps_rng,
    not_attempted,
)

__all__ = ["check_02_context_by_sdpa", "check_02_scores_without_bias",
           "check_02_separable_flops", "check_02_separable_forward"]


def _module(D: int, seed: int) -> SeparableSelfAttention:
    torch.manual_seed(seed)
    m = SeparableSelfAttention(D).eval()
    with torch.no_grad():
        for p in m.parameters():  # random biases too, so that a forgotten one shows
            p.normal_(0, 0.3)
    return m


class _CallLog:
    """Forward hooks that record which of a module's layers were called."""

    def __init__(self, **modules):
        self.called: set[str] = set()
        self.handles = [m.register_forward_hook(lambda *_, n=n: self.called.add(n))
                        for n, m in modules.items()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@keeps_rng
def check_02_scores_without_bias(scores_without_bias, D: int = 16) -> None:
    """Exercise 1: the context scores from ``W_I`` alone equal the module's (softmax ignores a
    shift)."""
    label = "Exercise 1"
    m = _module(D, seed=21)
    with torch.no_grad():
        m.qkv_proj.bias[0] = 100.0  # a big score bias
    x = torch.randn(2, 30, D)
    with _CallLog(module=m, qkv_proj=m.qkv_proj) as log, torch.no_grad():
        result = attempt(scores_without_bias, x, m)
    if result is NOT_ATTEMPTED:
        return not_attempted(label)
    if log.called:
        raise ExerciseError(
            f"{label}: your function calls {' and '.join(sorted(log.called))}, which adds the "
            "bias b_I; use only the weight row module.qkv_proj.weight[0]")
    w = m.qkv_proj.weight
    raw = x @ w[0]
    expect_close(result, m(x, return_attention=True)[1], f"{label}: scores", mistakes={
        "these are the raw scores x @ W_I: the softmax over the tokens is missing": raw,
        "W_I is the first *row* of qkv_proj.weight ([1 + 2D, D]), not its first column":
            (x @ w[:D, 0]).softmax(dim=1) if w.shape[0] >= D else raw,
        "W_I is output row 0; row 1 is the first key row": (x @ w[1]).softmax(dim=1),
    }, hint="softmax over the N tokens (dim=1) of x @ module.qkv_proj.weight[0]")
    print(f"{label}: correct; softmax(s + b) == softmax(s)")
    return None


#: the notebook's and the library's own FLOP formulas: calling one is not counting
_FORMULAS = ("separable_flops", "attention_flops", "attention_flops_breakdown", "count_flops",
             "measure_flops", "get_total_flops", "FlopCounterMode")


@keeps_rng
def check_02_separable_flops(separable_matmul_flops) -> None:
    """Exercise 2: ``separable_matmul_flops(N, D)`` counted from the shapes, against
    ``FlopCounterMode`` on the library module."""
    label = "Exercise 2"
    first = attempt(separable_matmul_flops, 10, 8)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    used = calls_any(separable_matmul_flops, _FORMULAS)
    if used:
        raise ExerciseError(f"{label}: your function calls {', '.join(used)}: that is the "
                            "formula (or the counter) from above; count the products from the "
                            "two projections' shapes yourself")
    for n, d in [(10, 8), (49, 220), (3136, 48), (1000, 1), (7, 3)]:
        module = SeparableSelfAttention(d).to("meta")
        with FlopCounterMode(display=False) as counter:
            module(torch.empty(1, n, d, device="meta"))
        true = counter.get_total_flops()
        expect_number(separable_matmul_flops(n, d), true,
                      f"{label}: separable_matmul_flops({n}, {d})", mistakes={
                          "that counts multiply-adds; FlopCounterMode counts 2 FLOPs per "
                          "multiply-add": true / 2,
                          "the score row is missing: qkv_proj has 1 + 2D outputs, not 2D":
                              true - 2 * n * d,
                          "the output projection [N, D] @ [D, D] is missing":
                              true - 2 * n * d * d,
                          "qkv_proj has 1 + 2D outputs (one score, D keys, D values), not 3D":
                              true + 2 * n * d * (d - 1),
                      }, hint="an [m, k] @ [k, n] product costs 2 m k n FLOPs; the layer has "
                              "two products")
    print(f"{label}: correct")
    return None


def _context(x, m):
    D = m.dim
    s, k, _ = m.qkv_proj(x).split([1, D, D], dim=-1)
    return (s.softmax(dim=1) * k).sum(dim=1, keepdim=True)


@keeps_rng
def check_02_context_by_sdpa(context_by_sdpa, D: int = 16) -> None:
    """Exercise 3: the context vector with one ``F.scaled_dot_product_attention`` call."""
    label = "Exercise 3"
    m = _module(D, seed=23)
    x = torch.randn(2, 40, D)
    calls = []
    original = F.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    F.scaled_dot_product_attention = counted
    try:
        with torch.no_grad():
            result = attempt(context_by_sdpa, x, m)
    finally:
        F.scaled_dot_product_attention = original
    if result is NOT_ATTEMPTED:
        return not_attempted(label)
    if len(calls) != 1:
        raise ExerciseError(f"{label}: your function called F.scaled_dot_product_attention "
                            f"{len(calls)} times; the exercise is one call")
    with torch.no_grad():
        s, k, _ = m.qkv_proj(x).split([1, D, D], dim=-1)
        w_i, w_k = m.qkv_proj.weight[:1], m.qkv_proj.weight[1:D + 1]  # [1, D], [D, D]
        unscaled = F.scaled_dot_product_attention(w_i[None], x, k)  # forgot sqrt(D)
        raw_values = F.scaled_dot_product_attention(w_i[None] * D**0.5, x, x)
        no_bias = F.scaled_dot_product_attention(w_i[None] * D**0.5, x, x @ w_k.T)
        expect_close(result, _context(x, m), f"{label}: context vector", mistakes={
            "scaled_dot_product_attention divides the scores by sqrt(D): multiply the query "
            "W_I by sqrt(D) (or pass scale=1.0)": unscaled,
            "the values are the projected keys x W_K + b_K, not the tokens x": raw_values,
            "the values need the key bias: x W_K + b_K": no_bias,
        }, hint="query W_I [1, 1, D] (times sqrt(D)), keys x, values the projected keys")
    print(f"{label}: correct; one learned query, N keys: one row of attention")
    return None


def _separable_reference(x, m, *, softmax_dim=1, relu=True, out_proj=True, pool=True):
    D = m.dim
    s, k, v = m.qkv_proj(x).split([1, D, D], dim=-1)
    c = s.softmax(dim=softmax_dim)
    context = (c * k).sum(dim=1, keepdim=True) if pool else c * k
    out = (F.relu(v) if relu else v) * context
    return m.out_proj(out) if out_proj else out


@keeps_rng
def check_02_separable_forward(separable_forward, D: int = 16) -> None:
    """Exercise 4: ``separable_forward(x, module)``, the library's ``SeparableSelfAttention``
    written out from its ``qkv_proj`` and ``out_proj``, on random weights and inputs."""
    label = "Exercise 4"
    used = calls_any(separable_forward, ["separable_attention"])
    m = _module(D, seed=24)
    x = torch.randn(2, 25, D)
    refuse = dict(label=label, what="module", parts="module.qkv_proj and module.out_proj")
    out = attempt_without_calling(separable_forward, m, x, **refuse)
    if out is NOT_ATTEMPTED:
        return not_attempted(label)
    if used:
        raise ExerciseError(f"{label}: your function calls the notebook's "
                            "`separable_attention`; write the four steps yourself")
    with torch.no_grad():
        expect_close(out, m(x), f"{label}: output", mistakes={
            "the softmax runs over the size-1 score axis (dim=-1), so every weight is 1; the "
            "scores are normalised over the N tokens (dim=1)":
                _separable_reference(x, m, softmax_dim=-1),
            "the ReLU on the values is missing": _separable_reference(x, m, relu=False),
            "the output projection module.out_proj is missing":
                _separable_reference(x, m, out_proj=False),
            "the context vector is a *sum* over the tokens of c_i k_i ([B, 1, D]); you kept "
            "one weighted key per token": _separable_reference(x, m, pool=False),
        }, hint="scores, keys, values = qkv_proj(x).split([1, D, D], -1); softmax over N; "
                "sum over N; relu(values) * context; out_proj")
        m2 = _module(8, seed=25)
        x2 = torch.randn(1, 9, 8)
        expect_close(attempt_without_calling(separable_forward, m2, x2, **refuse), m2(x2),
                     f"{label}: output for D=8",
                     hint="read D from the module (module.dim) or from x.shape[-1]")
    print(f"{label}: correct; your separable attention equals swiftlearn.SeparableSelfAttention")
    return None
