"""Checks for notebook 01 (self-attention)."""

from __future__ import annotations

import math

import torch
from einops import rearrange

from ..attention import MultiHeadSelfAttention
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

__all__ = ["check_01_attention_matrix_bytes", "check_01_causal_attention",
           "check_01_mhsa_forward", "check_01_row_entropy"]


def _scores(q, k, scale=True):
    s = q @ k.transpose(-2, -1)
    return s / math.sqrt(q.shape[-1]) if scale else s


@keeps_rng
def check_01_causal_attention(causal_attention) -> None:
    """Exercise 1: ``causal_attention(q, k, v) -> (out, attn)``, nothing above the diagonal."""
    label = "Exercise 1"
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 10, 8, generator=g) for _ in range(3))  # [B, h, N, d]
    result = attempt(causal_attention, q, k, v)
    if result is NOT_ATTEMPTED:
        return not_attempted(label)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ExerciseError(f"{label}: return a pair (out, attn) like `attention`, got "
                            f"{type(result).__name__}")
    out, attn = result
    N = q.shape[-2]
    future = torch.ones(N, N, dtype=torch.bool).triu(diagonal=1)
    ref_attn = _scores(q, k).masked_fill(future, float("-inf")).softmax(-1)
    if not isinstance(attn, torch.Tensor) or attn.shape != ref_attn.shape:
        raise ExerciseError(f"{label}: attn should have shape {tuple(ref_attn.shape)} "
                            "[B, h, N, N]")
    attn = attn.detach()
    if torch.isnan(attn).any():
        raise ExerciseError(f"{label}: attn contains nan: a row whose scores are all -inf "
                            "(did you mask the diagonal too? token i may look at itself)")
    if not torch.all(attn[..., future] == 0):
        raise ExerciseError(
            f"{label}: weights above the diagonal are not exactly 0 (largest "
            f"{attn[..., future].abs().max():.3g}); set those scores to -inf *before* the "
            "softmax (a score of 0 is not excluded, it is exp(0) = 1)")
    expect_close(attn, ref_attn, f"{label}: attn", mistakes={
        "token i may attend to itself: the mask is j > i (triu(diagonal=1)), not j >= i":
            _scores(q, k).masked_fill(future | torch.eye(N, dtype=torch.bool),
                                      -1e30).softmax(-1),
        "the scores are not divided by sqrt(d)":
            _scores(q, k, scale=False).masked_fill(future, float("-inf")).softmax(-1),
    }, hint="softmax over the last axis (the keys j) of q k^T / sqrt(d), future masked")
    expect_close(out, ref_attn @ v, f"{label}: out", hint="out = attn @ v")
    print(f"{label}: correct")
    return None


@keeps_rng
def check_01_attention_matrix_bytes(attention_matrix_bytes) -> None:
    """Exercise 2: bytes of one MHSA layer's float32 attention matrices for one square photo."""
    label = "Exercise 2"
    first = attempt(attention_matrix_bytes, 224, 16, 1)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    for size, p, h in [(224, 16, 1), (224, 16, 4), (512, 32, 2), (1024, 8, 8), (96, 32, 3)]:
        n = (size // p) ** 2
        a = torch.empty(1, h, n, n, device="meta")  # a real tensor's size, not our formula
        true = a.nelement() * a.element_size()
        expect_number(attention_matrix_bytes(size, p, h), true,
                      f"{label}: attention_matrix_bytes({size}, {p}, {h})", mistakes={
                          "every head has its own N x N matrix: multiply by the heads":
                              true / h,
                          "that is the number of elements; float32 takes 4 bytes each": true / 4,
                          "twice the size: one N x N matrix per head is counted (the "
                          "attention weights), not the scores and the weights both; and "
                          "float32 is 4 bytes per number, not 8": true * 2,
                          "N = (image_size / patch_size)^2 tokens, and the matrix is N x N: "
                          "you squared only once": h * 4 * n,
                      }, hint="N = (image_size // patch_size)^2 tokens; h matrices of N x N "
                              "float32 numbers")
    print(f"{label}: correct; 1024 px, 8 px patches, 8 heads: "
          f"{attention_matrix_bytes(1024, 8, 8) / 2**30:.0f} GiB")
    return None


@keeps_rng
def check_01_row_entropy(row_entropy, attn=None, tokens=None) -> None:
    """Exercise 3: ``row_entropy(attn) -> [..., N]``; with the notebook's ``attn`` and
    ``tokens`` it also prints the entropies with and without ``1/sqrt(d)``."""
    label = "Exercise 3"
    first = attempt(row_entropy, torch.eye(3))
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    g = torch.Generator().manual_seed(3)
    rows = torch.randn(2, 6, 6, generator=g).mul(3).softmax(-1)
    rows[0, 0] = torch.tensor([0.5, 0.5, 0, 0, 0, 0])  # exact zeros: 0 log 0 must count as 0
    ref = -(rows * rows.clamp_min(1e-45).log()).where(rows > 0, torch.zeros(())).sum(-1)
    got = row_entropy(rows.clone())
    if isinstance(got, torch.Tensor) and torch.isnan(got).any():
        raise ExerciseError(f"{label}: nan for a row with zeros: 0 * log 0 is nan in floating "
                            "point; treat it as 0 (e.g. torch.xlogy(p, p), or mask p == 0)")
    expect_close(got, ref, f"{label}: row_entropy", mistakes={
        "use the natural logarithm (nats): log(N) for a uniform row, not log2(N)":
            ref / math.log(2),
        "entropy is -sum p log p: the sign is missing, so it comes out negative": -ref,
        "sum over the last axis (the weights of one row), not over the rows":
            -(rows * rows.clamp_min(1e-45).log()).where(rows > 0, torch.zeros(())).sum(-2),
    }, hint="-sum_j A_ij log A_ij over the last axis, 0 log 0 = 0")
    expect_close(row_entropy(torch.full((2, 7, 7), 1 / 7)), torch.full((2, 7), math.log(7)),
                 f"{label}: row_entropy of a uniform 7 x 7 matrix (should be log 7 per row)")
    if attn is not None and tokens is not None:
        unscaled = (tokens @ tokens.transpose(-2, -1)).softmax(-1)
        h_scaled, h_unscaled = row_entropy(attn).mean(), row_entropy(unscaled).mean()
        if not h_unscaled < h_scaled:
            raise ExerciseError(f"{label}: without 1/sqrt(d) the entropy should be lower "
                                f"({float(h_unscaled):.2f} vs {float(h_scaled):.2f})")
        print(f"{label}: correct; mean entropy {float(h_scaled):.2f} nats with 1/sqrt(d), "
              f"{float(h_unscaled):.2f} without (uniform would be "
              f"{math.log(attn.shape[-1]):.2f})")
    else:
        print(f"{label}: correct")
    return None


def _mhsa_reference(x, module, *, scale=True, split="three h d", merge="b n (h d)",
                    softmax_dim=-1, proj=True):
    q, k, v = rearrange(module.qkv(x), f"b n ({split}) -> three b h n d", three=3,
                        h=module.num_heads)
    attn = _scores(q, k, scale).softmax(softmax_dim)
    out = rearrange(attn @ v, f"b h n d -> {merge}")
    return module.proj(out) if proj else out


@keeps_rng
def check_01_mhsa_forward(mhsa_forward) -> None:
    """Exercise 4: ``mhsa_forward(x, module)``, the library's ``MultiHeadSelfAttention`` written
    out from its ``qkv`` and ``proj`` layers, checked on random weights and inputs."""
    label = "Exercise 4"
    forbidden = calls_any(mhsa_forward, ["scaled_dot_product_attention", "multi_head_attention",
                                         "attention", "MultiheadAttention"])
    torch.manual_seed(4)
    module = MultiHeadSelfAttention(24, num_heads=4).eval()
    x = torch.randn(2, 13, 24)
    refuse = dict(label=label, what="module", parts="module.qkv and module.proj")
    out = attempt_without_calling(mhsa_forward, module, x, **refuse)
    if out is NOT_ATTEMPTED:
        return not_attempted(label)
    if forbidden:
        raise ExerciseError(f"{label}: your function calls {', '.join(forbidden)}; write the "
                            "softmax(q k^T / sqrt(d)) v yourself, that is the exercise")
    with torch.no_grad():
        expect_close(out, module(x), f"{label}: output", mistakes={
            "the scores are not divided by sqrt(d), d = D / h the head width":
                _mhsa_reference(x, module, scale=False),
            "the softmax runs over the queries (dim=-2); each row i must sum to 1 over the "
            "keys j (dim=-1)": _mhsa_reference(x, module, softmax_dim=-2),
            **{"the heads are split in the wrong order: qkv's 3D outputs are laid out "
               f"(three, h, d), queries first, then keys, then values; you read ({layout})":
               _mhsa_reference(x, module, split=layout)
               for layout in ("h three d", "h d three", "three d h")},
            "the heads are merged in the wrong order: [B, h, N, d] -> [B, N, h*d] "
            "(heads first, then the per-head features)":
                _mhsa_reference(x, module, merge="b n (d h)"),
            "the output projection module.proj is missing": _mhsa_reference(x, module,
                                                                            proj=False),
        }, hint="split qkv as (three h d), softmax(q k^T / sqrt(d)) over the keys, merge the "
                "heads, then module.proj")
        for heads in (1, 3):  # other head counts, other sizes
            m = MultiHeadSelfAttention(12, num_heads=heads).eval()
            x2 = torch.randn(1, 7, 12)
            expect_close(attempt_without_calling(mhsa_forward, m, x2, **refuse), m(x2),
                         f"{label}: output with {heads} head(s)",
                         hint="read h from module.num_heads rather than a fixed number")
    print(f"{label}: correct; your attention equals swiftlearn.MultiHeadSelfAttention")
    return None
