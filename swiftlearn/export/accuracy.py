"""Top-1 of a Core ML package (through :mod:`swiftlearn.export.mil`) and of PyTorch, same images.

:func:`validation_pixels` prepares a split the way an app would hand it to the package: the
evaluation preprocessing of :func:`swiftlearn.train.evaluate` (the cached decode, a resize to the
model's evaluation size) ending in integer RGB pixels 0..255, as a picture has.
:func:`package_accuracy` runs those pixels through the saved package in batches (the
interpreter's batched mode, so the 3,925 Imagenette validation images take minutes) and through
the float32 PyTorch model (normalised as the package normalises), and reports both top-1
accuracies and how often the two predictions agree.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_cached
from ..utils import IMAGENET_MEAN, IMAGENET_STD, normalize_pixels
from .coreml import LABEL_NAME, read_coreml
from .mil import MilInterpreter
from .verify import AccuracyReport

__all__ = ["AccuracyReport", "interpreter_predictions", "package_accuracy", "torch_predictions",
           "validation_pixels"]


def validation_pixels(root=None, size: int = 224, *, split: str = "val", cache_size: int = 176,
                      per_class: int | None = None, cache_dir=None, progress: bool = False):
    """``(pixels uint8 [N, 3, size, size], labels int64 [N], class names)`` of a split.

    Args:
        root: an Imagenette root (``None``: :func:`swiftlearn.data.find_root`).
        size: the side the package takes (the checkpoint's evaluation size).
        cache_size: the decoded cache to start from (the training recipe's ``cache_size``).
        per_class: keep only the first ``per_class`` images of each class (a quick check).
        cache_dir: where the decoded cache lives (default: :func:`swiftlearn.data.load_cached`'s).

    The resize is the evaluation one (bilinear, antialiased, no crop), rounded to integers.
    """
    data = load_cached(root, split, cache_size, cache_dir=cache_dir, progress=progress)
    if per_class is not None:
        data = data.subset(per_class)
    x = data.images
    if x.shape[-2:] != (size, size):
        chunks = []
        for i in range(0, len(x), 256):
            chunk = F.interpolate(x[i:i + 256].float(), size=(size, size), mode="bilinear",
                                  antialias=True, align_corners=False)
            chunks.append(chunk.round_().clamp_(0, 255).to(torch.uint8))
        x = torch.cat(chunks) if chunks else x
    return x, data.labels.long(), list(data.classes)


def _batches(n: int, batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def interpreter_predictions(package, pixels, *, labels=None, batch_size: int = 32,
                            progress: bool = False) -> np.ndarray:
    """Class index the package predicts (its ``classLabel``) for each ``[N, 3, H, W]`` picture.

    ``package``: a path, or a :class:`~swiftlearn.export.mil.MilInterpreter` together with the
    package's class names as ``labels`` (:attr:`~swiftlearn.export.PackageInfo.labels`).
    """
    if isinstance(package, MilInterpreter):
        if labels is None:
            raise ValueError("with an interpreter, pass the package's class names as labels=")
        interp = package
    else:
        info, program = read_coreml(package)
        interp, labels = MilInterpreter(program), info.labels
    index = {name: i for i, name in enumerate(labels)}
    name = interp.input_names[0]
    pixels = torch.as_tensor(pixels)
    preds = []
    spans = _batches(len(pixels), batch_size)
    if progress:
        from tqdm.auto import tqdm

        spans = tqdm(spans, desc="interpreter", leave=False)
    for a, b in spans:
        out = interp.run({name: pixels[a:b].float().numpy()})[LABEL_NAME]
        preds += [index[label] for label in ([out] if isinstance(out, str) else out)]
    return np.asarray(preds, dtype=np.int64)


@torch.no_grad()
def torch_predictions(model: nn.Module, pixels, *, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      batch_size: int = 64) -> np.ndarray:
    """Class index the float32 PyTorch model predicts for each 0..255 picture."""
    if model.training:
        raise ValueError("call model.eval() first: the reference is the eval-mode model")
    pixels = torch.as_tensor(pixels)
    preds = [model(normalize_pixels(pixels[a:b].float(), mean, std)).argmax(1)
             for a, b in _batches(len(pixels), batch_size)]
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def package_accuracy(package: str | os.PathLike, model: nn.Module, pixels, labels, *,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size: int = 32,
                     torch_pred: np.ndarray | None = None,
                     progress: bool = False) -> AccuracyReport:
    """Top-1 of ``package`` (interpreter) and of ``model`` (PyTorch fp32) on the same pictures.

    Args:
        package: a saved ``.mlpackage``.
        model: the PyTorch model it was exported from (eval mode).
        pixels: ``[N, 3, H, W]`` 0..255 pictures at the package's size (e.g.
            :func:`validation_pixels`); labels: ``[N]`` class indices in the model's order.
        torch_pred: PyTorch's predictions if already computed (several packages, one model).

    Raises:
        ValueError: pixels and labels of different lengths, or a size the package refuses.
    """
    labels = np.asarray(labels)
    if len(pixels) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many labels as pictures (and at least one), got "
                         f"{len(pixels)} pictures and {len(labels)} labels")
    info, program = read_coreml(package)
    shape = info.inputs[0].get("shape")
    if shape and list(pixels.shape[-2:]) != list(shape):
        raise ValueError(f"the package takes {shape[0]}x{shape[1]} pictures, got "
                         f"{pixels.shape[-2]}x{pixels.shape[-1]}")
    interp = MilInterpreter(program)
    start = time.perf_counter()
    pred = interpreter_predictions(interp, pixels, labels=info.labels, batch_size=batch_size,
                                   progress=progress)
    seconds = time.perf_counter() - start
    if torch_pred is None:
        torch_pred = torch_predictions(model, pixels, mean=mean, std=std)
    torch_pred = np.asarray(torch_pred)
    return AccuracyReport(
        n=len(labels), top1=float(100 * (pred == labels).mean()),
        torch_top1=float(100 * (torch_pred == labels).mean()),
        agreement=float(100 * (pred == torch_pred).mean()),
        pred=pred, torch_pred=torch_pred, what="package", seconds=seconds)
