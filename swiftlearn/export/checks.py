"""What every exporter checks before it starts: the input size, the model, the class names.

:func:`~swiftlearn.export.to_coreml` and :func:`~swiftlearn.export.to_onnx` both call
:func:`image_hw` and :func:`check_model` first, so a model in training mode, on a GPU, or one that
cannot take the requested size fails with a message that says what to do, before any converter
runs. :func:`default_labels` picks readable class names when none are given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..data import IMAGENETTE_CLASSES
from ..model import MIN_SIZE

__all__ = ["check_model", "default_labels", "image_hw"]


def image_hw(size, what: str) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair of ints, checked against the model's minimum size.

    Args:
        size: the side in pixels, or ``(H, W)``.
        what: the argument's name, for the error message.

    Raises:
        ValueError: not an int or a pair of ints, or smaller than :data:`swiftlearn.model.MIN_SIZE`.
    """
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) for s in size):
        h, w = int(size[0]), int(size[1])
    else:
        raise ValueError(f"{what} must be an int or an (H, W) pair of ints, got {size!r}")
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"{what} {h}x{w} is too small: SwiftFormer downsamples 32x and needs at "
                         f"least {MIN_SIZE}x{MIN_SIZE} pixels")
    return h, w


def check_model(model: nn.Module, h: int, w: int) -> int:
    """Validate the model for export at ``h x w``; return its number of classes.

    Raises:
        ValueError: not a module, in training mode, not on the CPU, cannot take ``h x w`` inputs,
            or does not return ``[B, num_classes]`` logits.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("the model is in training mode (dropout, batch statistics, two heads); "
                         "call model.eval() before exporting")
    devices = {str(t.device) for t in [*model.parameters(), *model.buffers()]}
    if devices - {"cpu"}:
        raise ValueError(f"the model is on {sorted(devices)}; export runs on the CPU: model.cpu()")
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, h, w))
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"the model cannot take {h}x{w} inputs: {e}") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError("the model must return logits [B, num_classes] in eval mode, got "
                         f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
    return int(out.shape[1])


def default_labels(num_classes: int, classes: Sequence[str] | None = None) -> list[str]:
    """Readable class names: Imagenette's for 10 classes (WordNet ids are translated too)."""
    names = dict(IMAGENETTE_CLASSES)
    if classes is not None and len(classes) == num_classes:
        return [names.get(str(c), str(c)) for c in classes]
    if num_classes == len(IMAGENETTE_CLASSES):
        return [name for _, name in IMAGENETTE_CLASSES]
    return [f"class_{i}" for i in range(num_classes)]
