"""Checks for notebook 03 (SwiftFormer's efficient additive attention)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..attention import EfficientAdditiveAttention
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

__all__ = ["check_03_additive_flops", "check_03_additive_forward", "check_03_alpha_softmax",
           "check_03_unit_w_g"]


def _module(D: int, seed: int, formulation: str = "normalize", key_dim=None):
    torch.manual_seed(seed)
    m = EfficientAdditiveAttention(D, key_dim=key_dim, formulation=formulation).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
        m.w_g.mul_(4)  # sharper scores, so that a wrong scale or axis shows
    return m


@keeps_rng
def check_03_alpha_softmax(alpha_softmax, D: int = 16) -> None:
    """Exercise 1: the ``softmax`` formulation's token weights ``[B, N, 1]``."""
    label = "Exercise 1"
    m = _module(D, seed=31, formulation="softmax")
    q = F.normalize(torch.randn(2, 30, D), dim=-1)
    with torch.no_grad():
        result = attempt(alpha_softmax, q, m.w_g)
        if result is NOT_ATTEMPTED:
            return not_attempted(label)
        s = q @ m.w_g
        expect_close(result, m.token_weights(q), f"{label}: alpha", mistakes={
            "softmax over the size-1 last axis: every weight is exactly 1 (the legacy bug); "
            "take the softmax over the N tokens, dim=1": s.softmax(dim=-1),
            "the scores are not divided by sqrt(d)": s.softmax(dim=1),
            "that is the L2-normalised 'normalize' formulation, not a softmax":
                F.normalize(s / math.sqrt(D), dim=1),
            "the scores are multiplied by sqrt(d); divide by it": (s * math.sqrt(D)).softmax(1),
        }, hint="softmax over the tokens (dim=1) of query @ w_g / sqrt(d)")
    print(f"{label}: correct")
    return None


@keeps_rng
def check_03_unit_w_g(unit_w_g, D: int = 16) -> None:
    """Exercise 2: a copy of a ``normalize`` layer with ``w_g`` of unit length, same output."""
    label = "Exercise 2"
    m = _module(D, seed=32)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(2, 49, D)
    result = attempt(unit_w_g, m)
    if result is NOT_ATTEMPTED:
        return not_attempted(label)
    changed = [k for k, v in m.state_dict().items() if not torch.equal(v, before[k])]
    if result is m or changed:
        raise ExerciseError(f"{label}: the original module changed ({', '.join(changed) or 'it'}"
                            " was returned or edited in place); rescale a deep copy "
                            "(copy.deepcopy(module)) instead")
    if not isinstance(result, EfficientAdditiveAttention):
        raise ExerciseError(f"{label}: return the copied module, got {type(result).__name__}")
    norm = float(result.w_g.detach().norm())
    if abs(norm - 1) > 1e-5:
        hint = ""
        if abs(norm - float(before["w_g"].norm())) < 1e-6:
            hint = " (unchanged: the copy was not rescaled)"
        elif abs(float(result.w_g.detach().sum()) - 1) < 1e-5:
            hint = " (you divided by the sum of w_g; divide by its length, w_g.norm())"
        raise ExerciseError(f"{label}: the copy's w_g has length {norm:.4g}, not 1{hint}")
    with torch.no_grad():
        expect_close(result(x), m(x), f"{label}: the copy's output",
                     hint="change nothing but w_g")
    print(f"{label}: correct; the output ignores the length of w_g")
    return None


_FORMULAS = ("attention_flops", "attention_flops_breakdown", "count_flops", "measure_flops",
             "get_total_flops", "FlopCounterMode")


@keeps_rng
def check_03_additive_flops(additive_matmul_flops) -> None:
    """Exercise 3: ``additive_matmul_flops(N, D, d)`` from the shapes, against
    ``FlopCounterMode``."""
    label = "Exercise 3"
    first = attempt(additive_matmul_flops, 10, 8, 8)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    used = calls_any(additive_matmul_flops, _FORMULAS)
    if used:
        raise ExerciseError(f"{label}: your function calls {', '.join(used)}; count the "
                            "products from the layer's shapes yourself")
    for n, dim, kd in [(10, 8, 8), (49, 220, 220), (3136, 48, 32), (196, 64, 128)]:
        module = EfficientAdditiveAttention(dim, key_dim=kd).to("meta")
        with FlopCounterMode(display=False) as counter:
            module(torch.empty(1, n, dim, device="meta"))
        true = counter.get_total_flops()
        expect_number(additive_matmul_flops(n, dim, kd), true,
                      f"{label}: additive_matmul_flops({n}, {dim}, {kd})", mistakes={
                          "that counts multiply-adds; FlopCounterMode counts 2 FLOPs per "
                          "multiply-add": true / 2,
                          "the token scores query @ w_g ([N, d] @ [d, 1]) are missing":
                              true - 2 * n * kd,
                          "the final layer [N, d] @ [d, D] is missing": true - 2 * n * kd * dim,
                          "you used D where the query/key width d belongs (to_query, to_key, "
                          "w_g and Proj work in d)": 2 * n * (4 * dim * dim + dim),
                      }, hint="five products: to_query, to_key (D -> d), w_g (d -> 1), Proj "
                              "(d -> d), final (d -> D); 2 FLOPs per multiply-add")
    print(f"{label}: correct")
    return None


def _alpha(scores, formulation: str, dim: int):
    return F.normalize(scores, dim=dim) if formulation == "normalize" else scores.softmax(dim)


def _additive_reference(x, m, *, unit=True, alpha="tokens", residual=True, final=True,
                        pool=True):
    """The layer's forward, or one of the likely mistakes in it."""
    query, key = m.to_query(x), m.to_key(x)  # [B, N, d]
    if unit:
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
    s = query @ m.w_g  # [B, N, 1]
    a = {"tokens": _alpha(s * m.scale_factor, m.formulation, 1),
         "raw": s * m.scale_factor,
         "features": _alpha(s * m.scale_factor, m.formulation, -1),
         "unscaled": _alpha(s, m.formulation, 1),
         "other": _alpha(s * m.scale_factor,
                         "softmax" if m.formulation == "normalize" else "normalize", 1)}[alpha]
    g = (a * query).sum(dim=1, keepdim=True) if pool else a * query
    out = m.Proj(g * key) + (query if residual else 0)
    return m.final(out) if final else out


@keeps_rng
def check_03_additive_forward(additive_forward, D: int = 16) -> None:
    """Exercise 4: ``additive_forward(x, module)``, the library's ``EfficientAdditiveAttention``
    written out (both ``normalize`` and ``softmax``), on random weights and inputs with the
    query/key width ``d`` different from ``D``."""
    label = "Exercise 4"
    used = calls_any(additive_forward, ["additive_attention", "token_weights"])
    m = _module(D, seed=34, key_dim=D + 8)
    x = torch.randn(2, 25, D)
    refuse = dict(label=label, what="module", parts="to_query, to_key, w_g, Proj and final")
    out = attempt_without_calling(additive_forward, m, x, **refuse)
    if out is NOT_ATTEMPTED:
        return not_attempted(label)
    if used:
        raise ExerciseError(f"{label}: your function calls {', '.join(used)}; compute alpha and "
                            "the rest yourself")
    with torch.no_grad():
        for formulation in ("normalize", "softmax"):
            m.formulation = formulation
            got = (out if formulation == "normalize"
                   else attempt_without_calling(additive_forward, m, x, **refuse))
            ref = m(x)
            expect_close(got, ref, f"{label}: output ({formulation!r})", mistakes={
                "queries and keys must be L2-normalised over their features first "
                "(F.normalize(..., dim=-1))": _additive_reference(x, m, unit=False),
                "the query residual is missing: out = final(Proj(g * K) + Q)":
                    _additive_reference(x, m, residual=False),
                "the final layer module.final is missing": _additive_reference(x, m,
                                                                               final=False),
                "alpha is the raw score Q w_g / sqrt(d): it is never normalised over the "
                "tokens": _additive_reference(x, m, alpha="raw"),
                "alpha is normalised over the size-1 axis (dim=-1); normalise over the N "
                "tokens (dim=1)": _additive_reference(x, m, alpha="features"),
                "the scores are not divided by sqrt(d)": _additive_reference(x, m,
                                                                             alpha="unscaled"),
                f"this layer's formulation is {formulation!r}: read module.formulation and "
                "normalise alpha that way": _additive_reference(x, m, alpha="other"),
                "the global query g is a sum over the tokens of alpha_i Q_i ([B, 1, d]); "
                "you kept one weighted query per token": _additive_reference(x, m, pool=False),
            }, hint="unit Q and K; alpha from Q w_g / sqrt(d) normalised over N as "
                    "module.formulation says; g = sum_i alpha_i Q_i; final(Proj(g * K) + Q)")
        m.formulation = "normalize"
    print(f"{label}: correct; your additive attention equals "
          "swiftlearn.EfficientAdditiveAttention ('normalize' and 'softmax')")
    return None
