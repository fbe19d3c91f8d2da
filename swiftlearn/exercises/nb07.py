"""Checks for notebook 07 (Core ML export)."""

from __future__ import annotations

import torch

from ..utils import IMAGENET_MEAN, IMAGENET_STD, normalize_pixels
from .core import (
    NOT_ATTEMPTED,
    ExerciseError,
    attempt,
    expect_close,
    expect_number,
    keeps_rng,
    not_attempted,
)

__all__ = ["check_07_imagetype_by_hand", "check_07_sigmoid_hard", "check_07_split_normalize"]

#: a std whose channel furthest from the mean lies *below* it (ImageNet's lies above), so that
#: forgetting abs() or taking max(std) gives another number
_SKEWED = ((0.4, 0.5, 0.6), (0.25, 0.10, 0.25))


@keeps_rng
def check_07_imagetype_by_hand(imagetype_by_hand) -> None:
    """Exercise 1: ``(scale, bias, worst)`` of ``ImageType``'s single-scale normalisation."""
    label = "Exercise 1"
    first = attempt(imagetype_by_hand, IMAGENET_MEAN, IMAGENET_STD)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    for mean, std in ((IMAGENET_MEAN, IMAGENET_STD), _SKEWED):
        got = attempt(imagetype_by_hand, mean, std)
        if not (isinstance(got, tuple | list) and len(got) == 3):
            raise ExerciseError(f"{label}: return three things, (scale, bias, worst)")
        scale, bias, worst = got
        sigma = sum(std) / len(std)
        what = f"{label} with std={tuple(std)}"
        expect_number(scale, 1 / (255 * sigma), f"{what}: scale", mistakes={
            "the pixels are 0..255, so the scale is 1 / (255 * sigma-bar)": 1 / sigma,
            "that is 1/255 only: divide by sigma-bar as well": 1 / 255,
        }, hint="one scale for all channels: 1 / (255 * mean(std))")
        want = torch.tensor([-m / sigma for m in mean], dtype=torch.float64)
        try:
            got_bias = torch.tensor([float(b) for b in bias], dtype=torch.float64)
        except (TypeError, ValueError):
            raise ExerciseError(f"{what}: bias should be one number per channel") from None
        expect_close(got_bias, want, f"{what}: bias", mistakes={
            "the 255 belongs to the scale only: bias_c = -mean_c / sigma-bar (mean is on the "
            "0..1 scale)": want * 255,
            "divide by sigma-bar: bias_c = -mean_c / sigma-bar, not -mean_c":
                -torch.tensor(mean, dtype=torch.float64),
            "that divides each channel by its own std_c, which ImageType cannot: it has one "
            "scale, so the bias shares sigma-bar": torch.tensor(
                [-m / s for m, s in zip(mean, std)], dtype=torch.float64),
        }, atol=1e-9, rtol=1e-9)
        expect_number(worst, max(abs(s / sigma - 1) for s in std), f"{what}: worst", mistakes={
            "that is the largest channel's error (max(std) / sigma-bar - 1, or the max without "
            "abs()); the channel furthest from sigma-bar may be the smallest, below the mean: "
            "take max |sigma_c / sigma-bar - 1| (abs)": max(s / sigma - 1 for s in std),
            "that is the smallest channel's error: take max |sigma_c / sigma-bar - 1| over all "
            "channels": abs(min(std) / sigma - 1) if min(std) < sigma else -1.0,
        })
    print(f"{label}: correct (ImageNet's worst channel is off by {first[2]:.2%})")
    return None


def _hard(x, alpha, beta):
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


@keeps_rng
def check_07_sigmoid_hard(sigmoid_hard, ops=None) -> None:
    """Exercise 2: a MIL ``sigmoid_hard(x, alpha, beta)`` handler, registered in ``ops``
    (default: :data:`swiftlearn.export.mil.OPS`)."""
    label = "Exercise 2"
    t = torch.linspace(-6, 6, 101)
    first = attempt(sigmoid_hard, x=t, alpha=torch.tensor(0.2), beta=torch.tensor(0.5))
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    if ops is None:
        from ..export import mil

        ops = mil.OPS
    if ops.get("sigmoid_hard") is not sigmoid_hard:
        raise ExerciseError(f"{label}: sigmoid_hard is not the interpreter's handler; register "
                            "it with @mil.register_op(\"sigmoid_hard\") above the def")
    # Core ML's default constants, PyTorch's hardsigmoid ones, and a falling gate
    for alpha, beta in ((0.2, 0.5), (1 / 6, 0.5), (-0.3, 0.2)):
        a, b = torch.tensor(alpha), torch.tensor(beta)
        got = attempt(sigmoid_hard, x=t, alpha=a, beta=b)
        expect_close(got, _hard(t, a, b), f"{label}: sigmoid_hard(x, alpha={alpha:.3g}, "
                     f"beta={beta:.3g})", mistakes={
                         "that ignores alpha and beta (F.hardsigmoid has its own 1/6 and 1/2): "
                         "use the op's inputs": torch.nn.functional.hardsigmoid(t),
                         "clip to [0, 1]: min(max(alpha * x + beta, 0), 1)": a * t + b,
                         "that is a smooth sigmoid; the hard one is a clipped straight line":
                             torch.sigmoid(a * t + b),
                         "alpha multiplies x only: alpha * x + beta": _hard(t + b, a, 0.0),
                     }, atol=1e-6, rtol=1e-6)
    print(f"{label}: correct")
    return None


@keeps_rng
def check_07_split_normalize(split_normalize) -> None:
    """Exercise 3: ``ImageType``'s ``x/255 - mean`` then a per-channel factor, exactly."""
    label = "Exercise 3"
    g = torch.Generator().manual_seed(7)
    pixels = torch.randint(0, 256, (2, 3, 8, 8), generator=g).float()
    got = attempt(split_normalize, pixels)
    if got is NOT_ATTEMPTED:
        return not_attempted(label)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expect_close(got, normalize_pixels(pixels), f"{label}: split_normalize(pixels)", mistakes={
        "the per-channel factor is missing: after x/255 - mean, multiply channel c by "
        "1 / std_c": pixels / 255 - mean,
        "that multiplies by std_c: the factor is k_c = 1 / std_c": (pixels / 255 - mean) * std,
        "that is the single-scale ImageType result: the factor must be per channel":
            (pixels / 255 - mean) / std.mean(),
    }, atol=1e-5, rtol=1e-5)
    print(f"{label}: correct (and one mul inside the model: as cheap as the wrapper)")
    return None
