"""swiftlearn: SwiftFormer's efficient additive attention, taught and measured.

Modules: ``attention`` (the three mechanisms), ``model`` (SwiftFormer), ``checkpoints``,
``complexity``, ``data``, ``train``, ``export``, ``viz``, ``widgets``, ``cli``.
"""

from .attention import EfficientAdditiveAttention, MultiHeadSelfAttention, SeparableSelfAttention
from .model import (
    SwiftFormer,
    create_model,
    swiftformer_l1,
    swiftformer_l3,
    swiftformer_s,
    swiftformer_xs,
)

__version__ = "0.1.0"

__all__ = [
    "EfficientAdditiveAttention",
    "MultiHeadSelfAttention",
    "SeparableSelfAttention",
    "SwiftFormer",
    "create_model",
    "swiftformer_l1",
    "swiftformer_l3",
    "swiftformer_s",
    "swiftformer_xs",
]
