"""The package's front door: conveniences that combine layers which must not import each other.

``model`` builds networks and ``checkpoints`` fills them with weights (it imports ``model``);
:func:`create_model` with ``checkpoint=`` needs both, so it lives here, above them, and is
re-exported as ``swiftlearn.create_model``.
"""

from __future__ import annotations

from . import checkpoints, model

__all__ = ["create_model"]


def create_model(name: str, num_classes: int | None = None, checkpoint=None, **kwargs):
    """Build a SwiftFormer variant by name, optionally with weights from a checkpoint.

    Args:
        name: ``swiftformer_xs``, ``swiftformer_s``, ``swiftformer_l1`` or ``swiftformer_l3``
            (``xs``/``s``/``l1``/``l3`` and the official ``SwiftFormer_XS`` spellings work too).
        num_classes: classifier outputs; ``None`` means 1000, or the checkpoint's when one is
            given.
        checkpoint: a path or a state dict in any format :mod:`swiftlearn.checkpoints` detects
            (official, timm, Hugging Face, swiftlearn training checkpoints and weights).
        **kwargs: forwarded to :class:`~swiftlearn.model.SwiftFormer` (``distillation``,
            ``drop_path_rate``, ``formulation``, ...).
    """
    if checkpoint is None:
        return model.build_model(name, num_classes=num_classes, **kwargs)
    return checkpoints.load_checkpoint(checkpoint, model=name, num_classes=num_classes, **kwargs)
