"""SwiftFormer (Shaker et al., ICCV 2023): a conv stem, four stages, two classification heads.

Each stage is a stack of :class:`ConvEncoder` blocks ended by one :class:`SwiftFormerEncoder`
(local representation -> efficient additive attention -> MLP); a strided 3x3 conv
(:class:`Embedding`) halves the resolution between stages. At 224x224 the four stages see
56x56, 28x28, 14x14 and 7x7 tokens. Module names follow the official checkpoints, so an official
``.pth`` loads with ``load_state_dict(..., strict=True)``.

Shape: ``[B, 3, H, W]`` -> logits ``[B, num_classes]`` (eval: the average of the two heads;
training with distillation: a tuple ``(head, dist_head)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import FORMULATIONS, EfficientAdditiveAttention

__all__ = [
    "VARIANTS",
    "ConvEncoder",
    "Embedding",
    "LocalRepresentation",
    "Mlp",
    "SwiftFormer",
    "SwiftFormerEncoder",
    "create_model",
    "stem",
    "swiftformer_l1",
    "swiftformer_l3",
    "swiftformer_s",
    "swiftformer_xs",
]

MIN_SIZE = 32  # the network downsamples 32x; below that the last stage has no spatial extent


@dataclass(frozen=True)
class Variant:
    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]


VARIANTS: dict[str, Variant] = {
    "swiftformer_xs": Variant((3, 3, 6, 4), (48, 56, 112, 220)),
    "swiftformer_s": Variant((3, 3, 9, 6), (48, 64, 168, 224)),
    "swiftformer_l1": Variant((4, 3, 10, 5), (48, 96, 192, 384)),
    "swiftformer_l3": Variant((4, 4, 12, 6), (64, 128, 320, 512)),
}


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


def stem(in_chs: int, out_chs: int) -> nn.Sequential:
    """Two stride-2 3x3 convs: ``[B, 3, H, W] -> [B, C, H/4, W/4]``."""
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs // 2, 3, stride=2, padding=1),
        nn.BatchNorm2d(out_chs // 2),
        nn.ReLU(),
        nn.Conv2d(out_chs // 2, out_chs, 3, stride=2, padding=1),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(),
    )


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

    Shape: ``[B, C, H, W]`` in and out; the attention sees ``[B, H*W, C]`` tokens.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, layer_scale_init_value: float = 1e-5,
                 formulation: str = "normalize"):
        super().__init__()
        self.local_representation = LocalRepresentation(dim)
        self.attn = EfficientAdditiveAttention(dim, formulation=formulation)
        self.linear = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)
        self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), layer_scale_init_value))

    def attention(self, x: torch.Tensor, return_attention: bool = False):
        """The attention branch on a feature map: ``[B, C, H, W] -> [B, C, H, W]`` (and alpha)."""
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, C, H, W] -> [B, N, C]
        out = self.attn(tokens, return_attention=return_attention)
        if return_attention:
            out, alpha = out
        out = out.transpose(1, 2).reshape(B, C, H, W)  # [B, N, C] -> [B, C, H, W]
        return (out, alpha.reshape(B, H, W)) if return_attention else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        x = x + self.drop_path(self.layer_scale_1 * self.attention(x))
        return x + self.drop_path(self.layer_scale_2 * self.linear(x))


class SwiftFormer(nn.Module):
    """SwiftFormer image classifier.

    Args:
        depths: blocks per stage (the last block of each stage is a :class:`SwiftFormerEncoder`).
        widths: channels per stage.
        num_classes: classifier outputs; 0 keeps the features only (``forward`` returns pooled
            features).
        distillation: add ``dist_head``; training returns ``(head, dist_head)`` logits, eval their
            average.
        mlp_ratio, drop_rate, drop_path_rate, layer_scale_init_value: as in the paper.
        formulation: the attention's token-weight formulation
            (see :class:`~swiftlearn.attention.EfficientAdditiveAttention`).

    Shape:
        - input ``[B, 3, H, W]``, float, H and W at least 32
        - output ``[B, num_classes]``
    """

    def __init__(self, depths, widths, num_classes: int = 1000, distillation: bool = True,
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-5, formulation: str = "normalize",
                 in_chans: int = 3):
        super().__init__()
        if len(depths) != 4 or len(widths) != 4:
            raise ValueError(f"depths and widths need 4 entries (one per stage), got "
                             f"{list(depths)} and {list(widths)}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
        self.depths, self.widths = tuple(depths), tuple(widths)
        self.num_classes, self.distillation, self.in_chans = num_classes, distillation, in_chans
        self.formulation = formulation
        self.num_features = widths[-1]

        self.patch_embed = stem(in_chans, widths[0])
        total, done = sum(depths), 0
        network: list[nn.Module] = []
        for i, (depth, dim) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                dpr = drop_path_rate * (done + j) / max(total - 1, 1)
                if j == depth - 1:
                    blocks.append(SwiftFormerEncoder(
                        dim, mlp_ratio, drop=drop_rate, drop_path=dpr,
                        layer_scale_init_value=layer_scale_init_value, formulation=formulation))
                else:
                    # the official code builds ConvEncoders without drop path
                    blocks.append(ConvEncoder(dim, int(dim * mlp_ratio)))
            done += depth
            network.append(nn.Sequential(*blocks))
            if i < 3:
                network.append(Embedding(dim, widths[i + 1]))
        self.network = nn.ModuleList(network)
        self.norm = nn.BatchNorm2d(widths[-1])
        self.head = nn.Linear(widths[-1], num_classes) if num_classes else nn.Identity()
        if distillation:
            self.dist_head = nn.Linear(widths[-1], num_classes) if num_classes else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` is a float image batch ``[B, in_chans, >=32, >=32]``."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"SwiftFormer expects a torch.Tensor [B, 3, H, W], got "
                             f"{type(x).__name__}")
        if x.dim() != 4:
            hint = " Add a batch axis with `x.unsqueeze(0)`." if x.dim() == 3 else ""
            raise ValueError(f"SwiftFormer expects images [B, {self.in_chans}, H, W], got shape "
                             f"{tuple(x.shape)}.{hint}")
        if x.shape[1] != self.in_chans:
            hint = (" It looks channels-last: use `x.permute(0, 3, 1, 2)`."
                    if x.shape[-1] == self.in_chans else "")
            raise ValueError(f"SwiftFormer expects {self.in_chans} input channels, got "
                             f"{x.shape[1]} (shape {tuple(x.shape)}).{hint}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"SwiftFormer downsamples 32x and needs images of at least "
                             f"{MIN_SIZE}x{MIN_SIZE}, got {tuple(x.shape[-2:])}; resize the input.")
        if not torch.is_floating_point(x):
            raise ValueError(f"SwiftFormer expects a float tensor, got {x.dtype}; convert uint8 "
                             "images with `x.float() / 255` and normalise them.")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each of the four stages (strides 4, 8, 16, 32), for dense tasks."""
        self.check_input(x)
        x = self.patch_embed(x)
        outs = []
        for i, block in enumerate(self.network):
            x = block(x)
            if i % 2 == 0:
                outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output ``[B, C, H/32, W/32]``, before the final norm."""
        self.check_input(x)
        x = self.patch_embed(x)
        for block in self.network:
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = self.norm(x).flatten(2).mean(-1)  # [B, C, h, w] -> [B, C]
        if pre_logits:
            return x
        if not self.distillation:
            return self.head(x)
        out, dist = self.head(x), self.dist_head(x)
        if self.training:
            return out, dist
        return (out + dist) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    def encoders(self) -> list[SwiftFormerEncoder]:
        """The four :class:`SwiftFormerEncoder` blocks, one per stage."""
        return [m for m in self.modules() if isinstance(m, SwiftFormerEncoder)]

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token weights ``alpha`` of each stage's attention, folded to ``[B, h_s, w_s]``."""
        self.check_input(x)
        maps: list[torch.Tensor] = []
        x = self.patch_embed(x)
        for stage in self.network:
            for block in stage if isinstance(stage, nn.Sequential) else [stage]:
                if isinstance(block, SwiftFormerEncoder):
                    # the attention branch sees the local representation's output
                    _, alpha = block.attention(block.local_representation(x), True)
                    maps.append(alpha)
                x = block(x)
        return maps


def _build(name: str, **kwargs) -> SwiftFormer:
    v = VARIANTS[name]
    return SwiftFormer(v.depths, v.widths, **kwargs)


def swiftformer_xs(**kwargs) -> SwiftFormer:
    """SwiftFormer-XS: 3.5 M parameters, 0.6 GMACs at 224x224."""
    return _build("swiftformer_xs", **kwargs)


def swiftformer_s(**kwargs) -> SwiftFormer:
    """SwiftFormer-S: 6.1 M parameters, 1.0 GMACs at 224x224."""
    return _build("swiftformer_s", **kwargs)


def swiftformer_l1(**kwargs) -> SwiftFormer:
    """SwiftFormer-L1: 12.1 M parameters, 1.6 GMACs at 224x224."""
    return _build("swiftformer_l1", **kwargs)


def swiftformer_l3(**kwargs) -> SwiftFormer:
    """SwiftFormer-L3: 28.5 M parameters, 4.0 GMACs at 224x224."""
    return _build("swiftformer_l3", **kwargs)


def create_model(name: str, num_classes: int | None = None, checkpoint=None,
                 **kwargs) -> SwiftFormer:
    """Build a variant by name, optionally loading weights.

    Args:
        name: ``swiftformer_xs``, ``swiftformer_s``, ``swiftformer_l1`` or ``swiftformer_l3``
            (``xs``/``s``/``l1``/``l3`` and the official ``SwiftFormer_XS`` spellings work too).
        num_classes: classifier outputs; ``None`` means 1000, or the checkpoint's when one is given.
        checkpoint: a path or a state dict in any format :mod:`swiftlearn.checkpoints` detects
            (official, timm, Hugging Face, swiftlearn training checkpoints).
        **kwargs: forwarded to :class:`SwiftFormer` (``distillation``, ``drop_path_rate``,
            ``formulation``, ...).
    """
    key = str(name).lower().replace("-", "_")
    if not key.startswith("swiftformer_"):
        key = "swiftformer_" + key
    if key not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(VARIANTS)}")
    if checkpoint is None:
        return _build(key, num_classes=1000 if num_classes is None else num_classes, **kwargs)
    from .checkpoints import load_checkpoint  # checkpoints sits beside model; import lazily

    return load_checkpoint(checkpoint, model=key, num_classes=num_classes, **kwargs)
