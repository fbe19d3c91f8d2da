"""Checks for notebook 04 (the whole SwiftFormer)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..blocks import ConvEncoder, SwiftFormerEncoder
from ..model import build_model
from ..utils import randomize_
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

__all__ = ["check_04_conv_encoder_params", "check_04_encoder_forward", "check_04_fold",
           "check_04_stage_grid", "scrambled"]


@torch.no_grad()
def scrambled(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` with every float tensor random (:func:`swiftlearn.utils.randomize_`, biases
    wider), so that a forgotten term changes the output visibly."""
    return randomize_(module, seed, bias_std=0.3)


@keeps_rng
def check_04_conv_encoder_params(conv_encoder_params) -> None:
    """Exercise 1: the parameter count of a ``ConvEncoder`` as a formula."""
    label = "Exercise 1"
    first = attempt(conv_encoder_params, 48)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    for C, e in [(48, 4), (56, 4), (112, 4), (220, 4), (512, 4), (48, 3), (10, 2)]:
        true = sum(p.numel() for p in ConvEncoder(C, e * C).parameters())
        got = conv_encoder_params(C) if e == 4 else conv_encoder_params(C, expansion=e)
        expect_number(got, true, f"{label}: conv_encoder_params({C}, expansion={e})", mistakes={
            "BatchNorm's running mean and variance are buffers, not parameters": true + 2 * C,
            "the 3x3 convolution is depth-wise (groups=C): 9 weights per channel, not 9 C per "
            "output channel": true - 9 * C + 9 * C * C,
            "C parameters short: the layer scale (C numbers) is missing, or BatchNorm was "
            "counted as C (it learns a weight and a bias per channel: 2C)": true - C,
            "the three convolutions have biases (C + eC + C)": true - (2 * C + e * C),
            "your formula ignores `expansion` (the hidden width is expansion * C)":
                sum(p.numel() for p in ConvEncoder(C, 4 * C).parameters()),
        }, hint="depth-wise 9C + C, BatchNorm 2C, PW1 eC^2 + eC, PW2 eC^2 + C, layer scale C")
    print(f"{label}: correct")
    return None


@keeps_rng
def check_04_stage_grid(stage_grid) -> None:
    """Exercise 2: the side of each stage's feature map, against the model on odd sizes."""
    label = "Exercise 2"
    first = attempt(stage_grid, 224, 1)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    net = build_model("swiftformer_xs").eval()

    def halved(n, times, up=True):
        for _ in range(times):
            n = (n - 1) // 2 + 1 if up else n // 2
        return n

    for h, w in [(224, 224), (97, 131), (33, 250)]:
        with torch.no_grad():
            feats = net.forward_stages(torch.randn(1, 3, h, w))
        for s, f in enumerate(feats, start=1):
            for n, true in ((h, f.shape[-2]), (w, f.shape[-1])):
                expect_number(stage_grid(n, s), true, f"{label}: stage_grid({n}, {s})",
                              mistakes={
                                  "a stride-2 3x3 conv with padding 1 rounds *up*: "
                                  "(n - 1) // 2 + 1, not n // 2": halved(n, s + 1, up=False),
                                  "the stem halves twice, so stage s has seen s + 1 halvings, "
                                  "not s": halved(n, s),
                                  "stage s has seen s + 1 halvings (two in the stem, one per "
                                  "embedding before it), not s + 2": halved(n, s + 2),
                              }, hint="the stem halves twice, then each embedding once more")
    print(f"{label}: correct")
    return None


def _fold_wrong(conv, bn, *, eps=True, sqrt=True, mean=True, scale_bias=True, conv_bias=True):
    """(weight, bias) of a fold with one likely mistake."""
    var = bn.running_var + (bn.eps if eps else 0)
    s = bn.weight / (var.sqrt() if sqrt else var)
    b = conv.bias if conv.bias is not None and conv_bias else torch.zeros_like(s)
    t = bn.bias - (bn.running_mean * s if mean else 0)
    return conv.weight * s[:, None, None, None], (b * s if scale_bias else b) + t


@keeps_rng
def check_04_fold(fold) -> None:
    """Exercise 3: ``fold(conv, bn)``, one ``nn.Conv2d`` computing eval-mode ``bn(conv(x))``.

    Two probes: a strided conv with ordinary statistics, then a depth-wise conv without bias
    whose running variances are near 1e-4, where leaving out ``eps`` (1e-5) is 5 % off."""
    label = "Exercise 3"
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    bn = scrambled(nn.BatchNorm2d(16), seed=3).eval()
    small = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    small_bn = scrambled(nn.BatchNorm2d(8), seed=4).eval()
    with torch.no_grad():
        small_bn.running_var.mul_(2e-4)  # [1e-4, 3e-4]: eps = 1e-5 matters
    for c, b, name in [(conv, bn, "Conv2d(8, 16, 3, stride=2, padding=1)"),
                       (small, small_bn, "a depth-wise conv without bias, tiny running_var")]:
        before = copy.deepcopy(c.state_dict())
        fused = attempt(fold, c, b)
        if fused is NOT_ATTEMPTED:
            return not_attempted(label)
        if not isinstance(fused, nn.Conv2d):
            raise ExerciseError(f"{label}: return an nn.Conv2d, got {type(fused).__name__}")
        if any(not torch.equal(v, c.state_dict()[k]) for k, v in before.items()):
            raise ExerciseError(f"{label}: fold changed the original conv's weights; fold into a "
                                "copy (copy.deepcopy(conv)) or a new nn.Conv2d")
        for attr in ("stride", "padding", "dilation", "groups", "kernel_size"):
            if getattr(fused, attr) != getattr(c, attr):
                raise ExerciseError(
                    f"{label}: for {name} your conv has {attr}={getattr(fused, attr)}, the "
                    f"original has {attr}={getattr(c, attr)}; build it with the same {attr} "
                    "(or deep-copy the conv)")
        if fused.bias is None:
            raise ExerciseError(f"{label}: the folded conv needs a bias (BatchNorm's shift "
                                f"beta - mean * s) even when the conv had none ({name})")
        x = torch.randn(2, 8, 15, 15)
        with torch.no_grad():
            mistakes = {
                "BatchNorm divides by sqrt(running_var + eps): your fold leaves out eps "
                "(it shows when a running variance is as small as 1e-4)":
                    _fold_wrong(c, b, eps=False),
                "the scale is gamma / sqrt(var + eps): the square root is missing":
                    _fold_wrong(c, b, sqrt=False),
                "the new bias is beta - running_mean * s + s * conv.bias: the running mean "
                "term is missing": _fold_wrong(c, b, mean=False),
                "the conv's own bias must be scaled by s too": _fold_wrong(c, b,
                                                                         scale_bias=False),
                "the conv's own bias is missing from the new bias": _fold_wrong(
                    c, b, conv_bias=False),
            }
            wrong = {msg: F.conv2d(x, w, bias, c.stride, c.padding, c.dilation, c.groups)
                     for msg, (w, bias) in mistakes.items()}
            expect_close(fused(x), b(c(x)), f"{label}: fold(conv, bn)(x) for {name}",
                         mistakes=wrong, atol=1e-5, rtol=1e-5,
                         hint="scale each output filter by s = gamma / sqrt(var + eps); new "
                              "bias s * (b - mean) + beta")
    print(f"{label}: correct")
    return None


def _encoder_reference(x, blk, *, local=True, scales=True, attn_residual=True, sequential=True,
                       tokens="transpose"):
    y = blk.local_representation(x) if local else x
    H, W = y.shape[-2:]
    if tokens == "transpose":
        a = rearrange(blk.attn(rearrange(y, "b c h w -> b (h w) c")), "b (h w) c -> b c h w",
                      h=H, w=W)
    else:  # a reshape is not a transpose: in only, or in and back out
        a = blk.attn(y.reshape(y.shape[0], H * W, y.shape[1]))
        a = (a.reshape(y.shape) if tokens == "reshape both"
             else rearrange(a, "b (h w) c -> b c h w", h=H, w=W))
    s1, s2 = (blk.layer_scale_1, blk.layer_scale_2) if scales else (1.0, 1.0)
    z = (y if attn_residual else 0) + s1 * a
    return z + s2 * blk.linear(z if sequential else y)


@keeps_rng
def check_04_encoder_forward(encoder_forward, dim: int = 16) -> None:
    """Exercise 4: ``encoder_forward(x, block)``, the ``SwiftFormerEncoder`` written out from
    its parts, on a block with random weights and layer scales around 1."""
    label = "Exercise 4"
    used = calls_any(encoder_forward, ["attention", "MyEncoder"])
    torch.manual_seed(44)
    blk = scrambled(SwiftFormerEncoder(dim), seed=44).eval()
    x = torch.randn(2, dim, 5, 7)  # H != W, so that mixing up h and w shows
    out = attempt_without_calling(encoder_forward, blk, x, label=label, what="block",
                                  parts="block.local_representation, block.attn, block.linear "
                                        "and the layer scales")
    if out is NOT_ATTEMPTED:
        return not_attempted(label)
    if used:
        raise ExerciseError(f"{label}: your function calls {', '.join(used)}, which does the "
                            "token reshaping for you; write it from block.attn")
    with torch.no_grad():
        expect_close(out, blk(x), f"{label}: output", mistakes={
            "the local representation (a ConvEncoder) comes first": _encoder_reference(
                x, blk, local=False),
            "the layer scales block.layer_scale_1 and _2 multiply the two branches":
                _encoder_reference(x, blk, scales=False),
            "the attention branch is a residual: x + s1 * Attn(x)": _encoder_reference(
                x, blk, attn_residual=False),
            "the MLP sees the output of the attention residual (the branches are in sequence,"
            " not parallel)": _encoder_reference(x, blk, sequential=False),
            "[B, C, H, W] -> [B, N, C] needs a transpose (rearrange 'b c h w -> b (h w) c'); "
            "a reshape mixes channels and positions": _encoder_reference(x, blk,
                                                                         tokens="reshape"),
            "[B, C, H, W] <-> [B, N, C] needs a transpose both ways (rearrange "
            "'b c h w -> b (h w) c' and back); a reshape mixes channels and positions":
                _encoder_reference(x, blk, tokens="reshape both"),
        }, hint="x = local(x); x = x + s1 * (attention on tokens, back to a map); "
                "x + s2 * mlp(x)")
    print(f"{label}: correct; your block equals swiftlearn's SwiftFormerEncoder")
    return None
