"""SwiftFormer's building blocks and its swappable token mixer.

The stem (:class:`Stem`), the downsampling between stages (:class:`Embedding`), the conv block
(:class:`ConvEncoder`) and the SwiftFormer encoder (:class:`SwiftFormerEncoder`: local
representation, token mixer, MLP), with the token mixers an encoder can carry
(:data:`MIXERS`, :func:`build_mixer`). :mod:`swiftlearn.model` assembles them into the network.
Module names follow the official checkpoints.

Shape: every block maps ``[B, C, H, W]`` feature maps; token mixers see ``[B, N, C]`` tokens.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .attention import (
    EfficientAdditiveAttention,
    FastformerAttention,
    MultiHeadSelfAttention,
    SeparableSelfAttention,
)

__all__ = [
    "ALL_STAGES",
    "MIXERS",
    "ConvEncoder",
    "DropPath",
    "Embedding",
    "LocalRepresentation",
    "Mlp",
    "Stem",
    "SwiftFormerEncoder",
    "build_mixer",
    "check_mixer_stages",
    "mhsa_heads",
]

#: token mixers a :class:`SwiftFormerEncoder` can carry (``"additive"``: the published model)
MIXERS = ("additive", "mhsa", "separable", "fastformer", "none")
ALL_STAGES = (0, 1, 2, 3)


def mhsa_heads(dim: int) -> int:
    """Heads for an MHSA mixer of width ``dim``: the most of 8, 4, 2 that divide ``dim`` with at
    least 32 channels per head, else 1 (SwiftFormer-XS: 48 -> 1, 56 -> 1, 112 -> 2, 220 -> 4)."""
    return next((h for h in (8, 4, 2) if dim % h == 0 and dim // h >= 32), 1)


def build_mixer(mixer: str, dim: int, formulation: str = "normalize") -> nn.Module | None:
    """The token mixer of an encoder: tokens ``[B, N, D]`` in and out (None for ``"none"``).

    ``"additive"``: SwiftFormer's :class:`~swiftlearn.attention.EfficientAdditiveAttention`;
    ``"fastformer"``: the same with the key-value interaction
    (:class:`~swiftlearn.attention.FastformerAttention`); ``"mhsa"``:
    :class:`~swiftlearn.attention.MultiHeadSelfAttention` with :func:`mhsa_heads` heads;
    ``"separable"``: MobileViT-v2's :class:`~swiftlearn.attention.SeparableSelfAttention`;
    ``"none"``: no token mixing (the encoder keeps its local representation and MLP).
    ``formulation`` applies to the additive and Fastformer mixers.
    """
    if mixer not in MIXERS:
        raise ValueError(f"unknown mixer {mixer!r}; choose one of {MIXERS}")
    if mixer == "additive":
        return EfficientAdditiveAttention(dim, formulation=formulation)
    if mixer == "fastformer":
        return FastformerAttention(dim, formulation=formulation)
    if mixer == "mhsa":
        return MultiHeadSelfAttention(dim, num_heads=mhsa_heads(dim))
    if mixer == "separable":
        return SeparableSelfAttention(dim)
    return None


def check_mixer_stages(mixer_stages) -> tuple[int, ...]:
    """``mixer_stages`` as a sorted tuple of distinct stage indices in 0-3 (ValueError else)."""
    try:
        stages = tuple(sorted({int(i) for i in mixer_stages}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"mixer_stages must be stage indices 0-3, got {mixer_stages!r}") from e
    if not stages or stages[0] < 0 or stages[-1] > 3:
        raise ValueError(f"mixer_stages must be a non-empty subset of {ALL_STAGES} (0: the "
                         f"first, 56x56 stage; 3: the last, 7x7), got {mixer_stages!r}")
    return stages


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Stem(nn.Sequential):
    """Two stride-2 3x3 convs, each followed by BatchNorm and ReLU.

    An ``nn.Sequential``, so its parameters keep the official names (``patch_embed.0.weight``,
    ``patch_embed.1.running_mean``, ..., ``patch_embed.4.bias``); :attr:`conv1`, :attr:`bn1`,
    :attr:`conv2` and :attr:`bn2` name the parts behind those indices.

    Shape: ``[B, C_in, H, W] -> [B, C/2, H/2, W/2] -> [B, C, H/4, W/4]``.
    """

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(
            nn.Conv2d(in_chs, out_chs // 2, 3, stride=2, padding=1),  # 0: conv1
            nn.BatchNorm2d(out_chs // 2),  # 1: bn1
            nn.ReLU(),
            nn.Conv2d(out_chs // 2, out_chs, 3, stride=2, padding=1),  # 3: conv2
            nn.BatchNorm2d(out_chs),  # 4: bn2
            nn.ReLU(),
        )

    @property
    def conv1(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn1(self) -> nn.BatchNorm2d:
        return self[1]

    @property
    def conv2(self) -> nn.Conv2d:
        return self[3]

    @property
    def bn2(self) -> nn.BatchNorm2d:
        return self[4]


class Embedding(nn.Module):
    """Downsampling between stages: strided 3x3 conv + BatchNorm.

    Shape: ``[B, C, H, W] -> [B, C', H/2, W/2]``.
    """

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class ConvEncoder(nn.Module):
    r"""Inverted-residual conv block: ``x + s * PW2(GELU(PW1(BN(DW3x3(x)))))``.

    ``s`` is a per-channel layer scale (initialised to 1). Shape: ``[B, C, H, W]`` in and out.
    """

    def __init__(self, dim: int, hidden_dim: int, drop_path: float = 0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop_path = DropPath(drop_path)
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.drop_path(self.layer_scale * y)


class LocalRepresentation(ConvEncoder):
    """The encoder's local representation: a :class:`ConvEncoder` whose hidden width is ``dim``."""

    def __init__(self, dim: int):
        super().__init__(dim, hidden_dim=dim)


class Mlp(nn.Module):
    """``FC2(GELU(FC1(BN(x))))`` with 1x1 convs. Shape: ``[B, C, H, W]`` in and out."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(self.norm1(x))))))


class SwiftFormerEncoder(nn.Module):
    r"""The SwiftFormer block: local representation, then two layer-scaled residual branches.

    .. math::
        x \leftarrow \mathrm{Local}(x), \quad
        x \leftarrow x + s_1 \odot \mathrm{Attn}(x), \quad
        x \leftarrow x + s_2 \odot \mathrm{MLP}(x)

    ``mixer`` swaps the attention for another token mixer (:func:`build_mixer`); with
    ``"none"`` the attention branch is gone and the block is ``Local`` then the MLP residual.

    Shape: ``[B, C, H, W]`` in and out; the attention sees ``[B, H*W, C]`` tokens.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, layer_scale_init_value: float = 1e-5,
                 formulation: str = "normalize", mixer: str = "additive"):
        super().__init__()
        self.mixer = mixer
        self.local_representation = LocalRepresentation(dim)
        self.attn = build_mixer(mixer, dim, formulation)
        self.linear = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)
        if self.attn is not None:
            self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init_value))

    def attention(self, x: torch.Tensor, return_attention: bool = False):
        """The attention branch on a feature map: ``[B, C, H, W] -> [B, C, H, W]``; with
        ``return_attention=True`` also one weight per token folded to the map, ``[B, H, W]``:
        ``alpha`` (additive, Fastformer), the context scores (separable), or for MHSA the
        attention each token receives, averaged over heads and queries."""
        if self.attn is None:
            raise ValueError("this encoder has no token mixer (mixer='none')")
        H, W = x.shape[-2:]
        tokens = rearrange(x, "b c h w -> b (h w) c")  # [B, C, H, W] -> [B, N, C], a view
        out = self.attn(tokens, return_attention=return_attention)
        if return_attention:
            out, alpha = out
            if alpha.dim() == 4:  # MHSA maps [B, h, N, N] -> attention received [B, N]
                alpha = alpha.mean(dim=(1, 2))
        out = rearrange(out, "b (h w) c -> b c h w", h=H, w=W)  # [B, N, C] -> [B, C, H, W]
        if not return_attention:
            return out
        return out, rearrange(alpha, "b (h w) -> b h w", h=H, w=W)  # [B, N] -> [B, H, W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        if self.attn is not None:
            x = x + self.drop_path(self.layer_scale_1 * self.attention(x))
        return x + self.drop_path(self.layer_scale_2 * self.linear(x))
