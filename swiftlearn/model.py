"""SwiftFormer (Shaker et al., ICCV 2023): a conv stem, four stages, two classification heads.

Each stage is a stack of :class:`ConvEncoder` blocks ended by one :class:`SwiftFormerEncoder`
(local representation -> efficient additive attention -> MLP); a strided 3x3 conv
(:class:`Embedding`) halves the resolution between stages. The blocks and the swappable token
mixer live in :mod:`swiftlearn.blocks` (re-exported here); this module assembles them. At
224x224 the four stages see 56x56, 28x28, 14x14 and 7x7 tokens.

Module names follow the official checkpoints, so an official ``.pth`` loads with
``load_state_dict(..., strict=True)``: the stem is ``patch_embed`` and the stages and
embeddings alternate in one list, ``network.0`` (stage 1), ``network.1`` (embedding),
``network.2`` (stage 2), ... :meth:`SwiftFormer.stages` is the one place that knows that layout.

Also here, for every layer above: the variant table (:data:`VARIANTS`, :func:`canonical_name`,
:func:`variant_of`) and the input check (:func:`check_images`).

Shape: ``[B, 3, H, W]`` -> logits ``[B, num_classes]`` (eval: the average of the two heads;
training with distillation: a tuple ``(head, dist_head)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .attention import FORMULATIONS
from .blocks import (
    ALL_STAGES,
    MIXERS,
    ConvEncoder,
    Embedding,
    LocalRepresentation,
    Mlp,
    Stem,
    SwiftFormerEncoder,
    build_mixer,
    check_mixer_stages,
    mhsa_heads,
)

__all__ = [
    "ALL_STAGES",
    "MIN_SIZE",
    "MIXERS",
    "VARIANTS",
    "ConvEncoder",
    "Embedding",
    "LocalRepresentation",
    "Mlp",
    "Stage",
    "Stem",
    "SwiftFormer",
    "SwiftFormerEncoder",
    "Variant",
    "build_mixer",
    "check_mixer_stages",
    "canonical_name",
    "check_images",
    "build_model",
    "swiftformer_l1",
    "swiftformer_l3",
    "swiftformer_s",
    "swiftformer_xs",
    "mhsa_heads",
    "variant_of",
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


def canonical_name(name: str) -> str:
    """The :data:`VARIANTS` key for any accepted spelling of a variant's name.

    ``"xs"``, ``"XS"``, ``"SwiftFormer-XS"``, ``"SwiftFormer_XS"`` and ``"swiftformer_xs"`` all
    give ``"swiftformer_xs"``.

    Raises:
        ValueError: naming the variants, if ``name`` is none of them.
    """
    key = str(name).lower().replace("-", "_")
    if not key.startswith("swiftformer_"):
        key = "swiftformer_" + key
    if key not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(VARIANTS)}")
    return key


def variant_of(depths, widths) -> str | None:
    """The name of the variant with these ``depths`` and ``widths``; None if no variant has them."""
    for name, v in VARIANTS.items():
        if v.depths == tuple(depths) and v.widths == tuple(widths):
            return name
    return None


def check_images(x: torch.Tensor, in_chans: int = 3) -> None:
    """Raise a ValueError unless ``x`` is a float image batch ``[B, in_chans, H, W]`` with H and
    W at least :data:`MIN_SIZE`; each message says how to fix the input."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"SwiftFormer expects a torch.Tensor [B, {in_chans}, H, W], got "
                         f"{type(x).__name__}")
    if x.dim() != 4:
        hint = " Add a batch axis with `x.unsqueeze(0)`." if x.dim() == 3 else ""
        raise ValueError(f"SwiftFormer expects images [B, {in_chans}, H, W], got shape "
                         f"{tuple(x.shape)}.{hint}")
    if x.shape[1] != in_chans:
        hint = (" It looks channels-last: use `x.permute(0, 3, 1, 2)`."
                if x.shape[-1] == in_chans else "")
        raise ValueError(f"SwiftFormer expects {in_chans} input channels, got "
                         f"{x.shape[1]} (shape {tuple(x.shape)}).{hint}")
    if min(x.shape[-2:]) < MIN_SIZE:
        raise ValueError(f"SwiftFormer downsamples {MIN_SIZE}x and needs images of at least "
                         f"{MIN_SIZE}x{MIN_SIZE}, got {tuple(x.shape[-2:])}; resize the input.")
    if not torch.is_floating_point(x):
        raise ValueError(f"SwiftFormer expects a float tensor, got {x.dtype}; convert uint8 "
                         "images with `x.float() / 255` and normalise them.")


class Stage(NamedTuple):
    """One stage of a :class:`SwiftFormer`, as :meth:`SwiftFormer.stages` returns it.

    ``blocks`` is ``network.{2 * index}``: ``depth - 1`` :class:`ConvEncoder` blocks, then the
    stage's :class:`SwiftFormerEncoder`. ``downsample`` is the :class:`Embedding` that follows,
    ``network.{2 * index + 1}``, or None after the last stage. Stage ``index`` (0 to 3) runs at
    stride ``4 * 2**index``. A stage left out of ``mixer_stages`` has only ConvEncoders.
    """

    index: int
    blocks: nn.Sequential
    downsample: Embedding | None

    @property
    def encoder(self) -> SwiftFormerEncoder | None:
        """The stage's last block when it is a :class:`SwiftFormerEncoder` (else None)."""
        last = self.blocks[-1]
        return last if isinstance(last, SwiftFormerEncoder) else None


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
        mixer: the token mixer inside every encoder, one of :data:`MIXERS` (default
            ``"additive"``, the published model; see :func:`build_mixer`).
        mixer_stages: the stages (0-3) whose last block is a :class:`SwiftFormerEncoder`; the
            others end with a :class:`ConvEncoder` (default: all four, the published model).

    Shape:
        - input ``[B, 3, H, W]``, float, H and W at least :data:`MIN_SIZE` (32)
        - output ``[B, num_classes]``
    """

    def __init__(self, depths, widths, num_classes: int = 1000, distillation: bool = True,
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-5, formulation: str = "normalize",
                 in_chans: int = 3, mixer: str = "additive", mixer_stages=ALL_STAGES):
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
        if mixer not in MIXERS:
            raise ValueError(f"unknown mixer {mixer!r}; choose one of {MIXERS}")
        self.mixer, self.mixer_stages = mixer, check_mixer_stages(mixer_stages)
        self.depths, self.widths = tuple(depths), tuple(widths)
        self.num_classes, self.distillation, self.in_chans = num_classes, distillation, in_chans
        self.formulation = formulation
        self.num_features = widths[-1]

        self.patch_embed = Stem(in_chans, widths[0])
        total, done = sum(depths), 0
        network: list[nn.Module] = []  # stage, embedding, stage, ..., stage: the official names
        for i, (depth, dim) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                dpr = drop_path_rate * (done + j) / max(total - 1, 1)
                if j == depth - 1 and i in self.mixer_stages:
                    blocks.append(SwiftFormerEncoder(
                        dim, mlp_ratio, drop=drop_rate, drop_path=dpr,
                        layer_scale_init_value=layer_scale_init_value, formulation=formulation,
                        mixer=mixer))
                else:
                    # the official code builds ConvEncoders without drop path
                    blocks.append(ConvEncoder(dim, int(dim * mlp_ratio)))
            done += depth
            network.append(nn.Sequential(*blocks))
            if i < len(depths) - 1:
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

    def stages(self) -> list[Stage]:
        """The four stages in order, each with its blocks and the downsampling that follows it.

        The modules keep the official layout (``network.0`` stage 1, ``network.1`` its
        embedding, ``network.2`` stage 2, ...), so official weights load with ``strict=True``;
        this method is what walks it.
        """
        net = self.network
        return [Stage(i, net[2 * i], net[2 * i + 1] if 2 * i + 1 < len(net) else None)
                for i in range(len(self.depths))]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each of the four stages (strides 4, 8, 16, 32), for dense tasks."""
        check_images(x, self.in_chans)
        x = self.patch_embed(x)
        outs = []
        for stage in self.stages():
            x = stage.blocks(x)
            outs.append(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output ``[B, C, H/32, W/32]``, before the final norm."""
        check_images(x, self.in_chans)
        x = self.patch_embed(x)
        for stage in self.stages():
            x = stage.blocks(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
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

    def arch(self) -> dict:
        """The keyword arguments that rebuild this architecture beyond its variant (recorded in
        checkpoints, so loading one rebuilds the same network)."""
        return {"formulation": self.formulation, "mixer": self.mixer,
                "mixer_stages": list(self.mixer_stages)}

    def is_published(self) -> bool:
        """True for the published architecture: additive attention in all four stages."""
        return self.mixer == "additive" and self.mixer_stages == ALL_STAGES

    def encoders(self) -> list[SwiftFormerEncoder]:
        """The :class:`SwiftFormerEncoder` blocks, one per stage in ``mixer_stages`` (all four
        for the published model)."""
        return [stage.encoder for stage in self.stages() if stage.encoder is not None]

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token weights ``alpha`` of each stage's attention, folded to ``[B, h_s, w_s]``.

        One map per stage whose encoder mixes tokens (all four in the published model); see
        :meth:`SwiftFormerEncoder.attention` for what the other mixers report.
        """
        check_images(x, self.in_chans)
        maps: list[torch.Tensor] = []
        x = self.patch_embed(x)
        for stage in self.stages():
            encoder = stage.encoder
            if encoder is None or encoder.attn is None:
                x = stage.blocks(x)
                if stage.downsample is not None:
                    x = stage.downsample(x)
                continue
            for block in stage.blocks[:-1]:  # the ConvEncoders
                x = block(x)
            # the attention branch sees the local representation's output
            _, alpha = encoder.attention(encoder.local_representation(x), return_attention=True)
            maps.append(alpha)
            x = encoder(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
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


def build_model(name: str, num_classes: int | None = None, **kwargs) -> SwiftFormer:
    """Build a variant by name, with freshly initialised weights.

    Weights come from the layer above: ``swiftlearn.create_model(name, checkpoint=...)`` or
    :func:`swiftlearn.checkpoints.load_checkpoint`.

    Args:
        name: ``swiftformer_xs``, ``swiftformer_s``, ``swiftformer_l1`` or ``swiftformer_l3``
            (``xs``/``s``/``l1``/``l3`` and the official ``SwiftFormer_XS`` spellings work too;
            see :func:`canonical_name`).
        num_classes: classifier outputs; ``None`` means 1000.
        **kwargs: forwarded to :class:`SwiftFormer` (``distillation``, ``drop_path_rate``,
            ``formulation``, ...).

    Raises:
        ValueError: for an unknown variant name.
        TypeError: if given ``checkpoint=``, which this function does not load.
    """
    if "checkpoint" in kwargs:
        raise TypeError("swiftlearn.model.build_model only builds the network; to load weights "
                        "use swiftlearn.create_model(name, checkpoint=...) or "
                        "swiftlearn.checkpoints.load_checkpoint(checkpoint, model=name)")
    num_classes = 1000 if num_classes is None else num_classes
    return _build(canonical_name(name), num_classes=num_classes, **kwargs)
