"""Top-1, top-5, per-class accuracy and the confusion matrix of a classifier."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import CachedImages, batch_indices, resize_center
from ..utils import amp_dtype, autocast
from .distributed import dist_info
from .step import logits_of

__all__ = ["evaluate", "progress_bar"]


def progress_bar(iterable, **kwargs):
    """A tqdm bar (a widget in Jupyter); in background runs (no terminal, no notebook) a line a
    minute instead of a carriage return every step."""
    from tqdm.auto import tqdm

    if not sys.stderr.isatty() and "notebook" not in tqdm.__module__:
        kwargs.setdefault("mininterval", 60.0)
    return tqdm(iterable, **kwargs)


@torch.no_grad()
def evaluate(model: nn.Module, data: CachedImages | Iterable, img_size: int = 224, *,
             batch_size: int = 128, crop_pct: float = 1.0, amp: str = "auto",
             channels_last: bool = True, classes: list[str] | None = None,
             progress: bool = False, per_image: bool = False) -> dict:
    """Top-1, top-5, per-class accuracy and the confusion matrix of ``model`` on ``data``.

    Args:
        model: a classifier (put in eval mode here; a distilled SwiftFormer averages its heads).
        data: a :class:`~swiftlearn.data.CachedImages` (resized to ``img_size`` with
            ``crop_pct``), or any iterable of ``(images, labels)`` batches already normalised.
        img_size, batch_size, crop_pct: preprocessing of cached images.
        amp, channels_last: as in :class:`~swiftlearn.train.TrainConfig`.
        classes: class names (default: ``data.classes``).
        per_image: also return ``"correct"``, one bool per image in data order (for paired
            comparisons of two models on the same images, :mod:`swiftlearn.stats`).

    Under ``torch.distributed`` each rank evaluates its share and the counts are summed.

    Returns:
        ``{"top1", "top5", "loss", "n", "per_class": [...], "confusion": [[...]] (rows: true
        class, columns: predicted), "classes": [...]}``; accuracies in percent.
    """
    device = next(model.parameters()).device
    dtype = amp_dtype(amp, device)
    rank, world = dist_info()
    if per_image and world > 1:
        raise ValueError("evaluate(per_image=True) runs in one process: each rank sees a share")
    correct = []
    if isinstance(data, CachedImages):
        classes = classes or data.classes
        batches = ((resize_center(data.images[idx], img_size, crop_pct), data.labels[idx])
                   for idx in batch_indices(len(data), batch_size, shuffle=False, rank=rank,
                                            world_size=world))
    else:
        batches = iter(data)
    was_training = model.training
    model.eval()
    num_classes = len(classes) if classes else None
    confusion = None
    top5 = torch.zeros((), dtype=torch.long)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for x, y in progress_bar(batches, disable=not progress, desc="evaluate", leave=False):
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            logits = logits_of(model(x)).float()
        if confusion is None:
            num_classes = num_classes or logits.shape[1]
            confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
        pred = logits.argmax(1)
        if per_image:
            correct.append((pred == y).cpu())
        confusion += torch.bincount((y * num_classes + pred).cpu(),
                                    minlength=num_classes ** 2).view(num_classes, num_classes)
        k = min(5, logits.shape[1])
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum().cpu()
    model.train(was_training)
    if confusion is None:
        raise ValueError("evaluate() got no data")
    if world > 1:
        for t in (confusion, top5, loss_sum):
            torch.distributed.all_reduce(t)
    n = int(confusion.sum())
    per_class = (confusion.diag().double() / confusion.sum(1).clamp(min=1) * 100).tolist()
    out = {"top1": float(confusion.diag().sum()) / n * 100, "top5": float(top5) / n * 100,
           "loss": float(loss_sum) / n, "n": n, "per_class": per_class,
           "confusion": confusion.tolist(),
           "classes": list(classes) if classes else [str(i) for i in range(num_classes)]}
    if per_image:
        out["correct"] = torch.cat(correct).tolist()
    return out
