"""swiftlearn: SwiftFormer's efficient additive attention, taught and measured.

Start with :func:`create_model` (a variant by name, optionally with weights from any known
checkpoint format). The module map is in CONTRIBUTING.md; the layers are checked by
``tests/test_layering.py``.
"""

from .api import create_model
from .attention import EfficientAdditiveAttention, MultiHeadSelfAttention, SeparableSelfAttention
from .model import (
    SwiftFormer,
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
