"""Checks for notebook 06 (training on Imagenette)."""

from __future__ import annotations

import math

import numpy as np
import torch

from .core import (
    NOT_ATTEMPTED,
    ExerciseError,
    attempt,
    expect_close,
    expect_number,
    keeps_rng,
    not_attempted,
)

__all__ = ["check_06_lr_at", "check_06_min_smoothed_loss", "check_06_top1"]


@keeps_rng
def check_06_top1(top1_from_confusion, report: dict | None = None) -> None:
    """Exercise 1: top-1 in percent from a ``[K, K]`` confusion matrix (rows: true class)."""
    label = "Exercise 1"
    small = np.array([[3, 1], [0, 4]])
    first = attempt(top1_from_confusion, small)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    # unbalanced classes, so that the mean of per-class accuracies differs from top-1
    conf = np.array([[90, 8, 2], [5, 5, 0], [1, 0, 9]])
    true = np.trace(conf) / conf.sum() * 100
    expect_number(top1_from_confusion(conf), true, f"{label}: top1_from_confusion", mistakes={
        "that is a fraction; return percent (x 100)": true / 100,
        "that is the mean of the per-class accuracies (balanced accuracy): top-1 counts every "
        "image once, sum(diagonal) / sum(all)": float(np.mean(np.diag(conf) / conf.sum(1))) * 100,
        "that is the mean precision (columns): top-1 is sum(diagonal) / sum(all)":
            float(np.mean(np.diag(conf) / conf.sum(0))) * 100,
        "divide the diagonal by the number of images, not by the number of classes":
            np.trace(conf) / len(conf) * 100,
    }, hint="sum of the diagonal over the sum of all entries, in percent")
    expect_number(top1_from_confusion(small), 87.5,
                  f"{label}: top1_from_confusion({small.tolist()})")
    # a class confused more often than recognised: its row's largest entry is off the diagonal
    confused = np.array([[2, 7, 1], [1, 8, 1], [3, 0, 7]])
    want = np.trace(confused) / confused.sum() * 100
    expect_number(top1_from_confusion(confused), want,
                  f"{label}: top1_from_confusion({confused.tolist()})", mistakes={
                      "that counts each row's largest entry, the class most often predicted "
                      "for it, which need not be the right one: count the diagonal":
                          confused.max(axis=1).sum() / confused.sum() * 100,
                      "that counts each column's largest entry: count the diagonal":
                          confused.max(axis=0).sum() / confused.sum() * 100,
                  })
    if report is not None:
        expect_number(top1_from_confusion(np.array(report["confusion"])), report["top1"],
                      f"{label}: top-1 of the evaluation above", rel=1e-9)
    print(f"{label}: correct")
    return None


@keeps_rng
def check_06_min_smoothed_loss(min_smoothed_loss) -> None:
    """Exercise 2: the floor of the label-smoothed cross-entropy, against PyTorch's loss of the
    best possible prediction."""
    label = "Exercise 2"
    first = attempt(min_smoothed_loss, 0.1, 10)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    for eps, K in [(0.1, 10), (0.3, 10), (0.1, 1000), (0.5, 3)]:
        target = torch.full((1, K), eps / K, dtype=torch.float64)
        target[0, 0] = 1 - eps + eps / K
        best = torch.nn.functional.cross_entropy(target.log(), torch.tensor([0]),
                                                 label_smoothing=eps).item()
        hi, lo = 1 - eps + eps / K, eps / K
        hi_k, lo_k = 1 - eps, eps / (K - 1)
        expect_number(min_smoothed_loss(eps, K), best, f"{label}: min_smoothed_loss({eps}, {K})",
                      mistakes={
                          "PyTorch's label smoothing spreads eps over all K classes (eps / K "
                          "each, the true class 1 - eps + eps / K), not over the K - 1 others":
                              -(hi_k * math.log(hi_k) + (K - 1) * lo_k * math.log(lo_k)),
                          "use the natural logarithm (nats), as cross_entropy does":
                              -(hi * math.log2(hi) + (K - 1) * lo * math.log2(lo)),
                          "the K - 1 wrong classes each contribute -lo log lo: the factor "
                          "K - 1 is missing": -(hi * math.log(hi) + lo * math.log(lo)),
                          "the true class's own term -hi log hi is missing":
                              -((K - 1) * lo * math.log(lo)),
                      }, rel=1e-6, hint="the entropy of the smoothed target")
    print(f"{label}: correct; floor {min_smoothed_loss(0.1, 10):.3f} for eps=0.1, K=10")
    return None


def _lr(step, peak, warmup, total, min_lr, *, start=1, decay="cosine", over="rest",
        floor=True, clamp=True):
    if step < warmup:
        return peak * (step + start) / warmup
    span = total - warmup if over == "rest" else total
    t = (step - warmup if over == "rest" else step) / max(1, span)
    t = min(t, 1.0) if clamp else t
    low = min_lr if floor else 0.0
    shape = 0.5 * (1 + math.cos(math.pi * t)) if decay == "cosine" else 1 - t
    return low + (peak - low) * shape


@keeps_rng
def check_06_lr_at(lr_at) -> None:
    """Exercise 3: warm-up then cosine. The probe steps cover the warm-up (is it linear, does
    it start at peak / warmup?), the decay at a quarter, half and three quarters (a straight
    line passes half-way too, not a quarter of the way) and the steps after ``total``."""
    label = "Exercise 3"
    first = attempt(lr_at, 0, 1.0, 10, 100, 0.0)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    peak, warmup, total, min_lr = 2e-3, 10, 110, 1e-4
    steps = [0, 1, 4, 9, 10, 35, 60, 85, 110, 130]
    args = (peak, warmup, total, min_lr)

    def curve(**kw):
        return torch.tensor([_lr(s, *args, **kw) for s in steps], dtype=torch.float64)

    values = [lr_at(s, *args) for s in steps]
    try:
        got = torch.tensor([float(v) for v in values], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ExerciseError(f"{label}: lr_at should return a number, got "
                            f"{type(values[0]).__name__}") from None
    expect_close(got, curve(), f"{label}: lr_at at steps {steps}", atol=1e-12, rtol=1e-9,
                 mistakes={
                     "the decay is a straight line; it should be a cosine, "
                     "min_lr + (peak - min_lr) * (1 + cos(pi t)) / 2": curve(decay="linear"),
                     "the warm-up starts at 0; it should start at peak / warmup at step 0 "
                     "(peak * (step + 1) / warmup)": curve(start=0),
                     "there is no warm-up": torch.tensor(
                         [_lr(s, peak, 0, total, min_lr) for s in steps], dtype=torch.float64),
                     "the cosine ends at 0; it should end at min_lr": curve(floor=False),
                     "the cosine runs over all `total` steps; it should start after the warm-up "
                     "(t = (step - warmup) / (total - warmup))": curve(over="all"),
                     "after `total` the cosine comes back up; clamp t at 1 so the lr stays at "
                     "min_lr": curve(clamp=False),
                 }, hint="warm-up peak * (step + 1) / warmup, then the cosine from peak at "
                         "step warmup to min_lr at step total")
    print(f"{label}: correct")
    return None
