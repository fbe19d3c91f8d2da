"""An inference fast path: fold every BatchNorm and layer scale away, compute in ``[B, H, W, C]``.

``fuse(model)`` returns a :class:`FusedSwiftFormer` that computes the same function as the eval-mode
model (to float rounding) with fewer, larger operations:

1. **BatchNorm folding.** In eval mode a BatchNorm is a per-channel affine map
   ``y = s * x + t`` with ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``.
   After a convolution it scales the filters (``W' = s W``, ``b' = s b + t``); before a 1x1
   convolution or linear layer it scales the input columns (``W' = W diag(s)``,
   ``b' = b + W t``). The final norm commutes with average pooling, so it folds into the heads.
2. **Layer scales** multiply a branch's last projection: ``ls * (W h + b) = (ls W) h + ls b``.
3. **Two heads, one matmul.** In eval the model returns ``(head(x) + dist_head(x)) / 2``, which
   is one linear layer with the averaged weights.
4. **Attention in fewer ops.** ``to_query`` and ``to_key`` become one linear layer; ``final`` and
   ``Proj`` merge, ``final(Proj(g * K) + Q) = [g * K, Q] @ [W_F W_P | W_F]^T + b``, so the
   query-key interaction, the residual and the output projection are one matmul; the score scale
   ``1/sqrt(d)`` moves into ``w_g``.
5. **Channels-last, 1x1 convolutions as matmuls.** Activations flow as ``[B, H, W, C]``: every
   1x1 convolution is then a plain ``F.linear`` on contiguous memory (PyTorch's CPU 1x1 ``conv2d``
   in NCHW goes through an im2col copy), the attention's tokens ``[B, N, C]`` are a free reshape,
   and the 3x3 convolutions see a channels-last view, which oneDNN handles natively.
6. **oneDNN post-ops (CPU, float32 or bfloat16).** Each ``x + FC2(GELU(FC1(y)))`` (in every
   ``ConvEncoder``, local representation and MLP) runs as two oneDNN matmuls, the first with the
   exact (erf) GELU applied as it writes its output, the second with the bias and the residual
   addition:
   ``torch.ops.mkldnn._linear_pointwise``, the kernels ``torch.compile``'s CPU backend calls. That
   saves the separate GELU, bias and addition passes over memory. It is an internal PyTorch op,
   so ``fuse(..., onednn=False)`` (or its absence) falls back to ``F.linear`` + ``F.gelu``.
   ``fuse(model).to(torch.bfloat16)`` keeps these kernels, in bf16 (fed bf16 images); under
   ``torch.autocast`` the weights stay float32 and the plain ops run instead, so on a CPU with
   native bf16 the converted model is the faster bf16 path (Zen 5, XS at 144 px, the committed
   deploy table: 5.0 ms against 5.9 under autocast and 6.6 in float32, the same top-1).

The fused model is for inference only (``.train()`` raises); its outputs match the unfused
model's to ~1e-6.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .model import ConvEncoder, Embedding, Mlp, SwiftFormer, SwiftFormerEncoder, check_images

__all__ = ["FusedSwiftFormer", "fold_bn_after", "fold_bn_before", "fuse", "onednn_available"]


# ---------------------------------------------------------------- the algebra


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = s * x + t`` per channel."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias - bn.running_mean * s


def fold_bn_after(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d):
    """``BN(conv(x))`` as one conv: scale each output filter. Returns ``(weight, bias)``."""
    s, t = _bn_affine(bn)
    bias = torch.zeros_like(s) if bias is None else bias
    return weight * s.reshape(-1, *[1] * (weight.dim() - 1)), bias * s + t


def fold_bn_before(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d):
    """``linear(BN(x))`` as one linear (1x1 conv weights are flattened to ``[out, in]``)."""
    s, t = _bn_affine(bn)
    weight = weight.reshape(weight.shape[0], -1)  # [out, in, 1, 1] -> [out, in]
    bias = weight.new_zeros(weight.shape[0]) if bias is None else bias
    return weight * s, bias + weight @ t


def _linear(weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor | None = None):
    """An ``nn.Linear`` holding ``scale * (W x + b)`` (``scale`` per output, e.g. a layer scale)."""
    weight = weight.reshape(weight.shape[0], -1)
    if scale is not None:
        scale = scale.reshape(-1)
        weight, bias = weight * scale[:, None], bias * scale
    layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(bias)
    return layer


def _conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` with ``bn`` folded in."""
    fused = copy.deepcopy(conv)
    w, b = fold_bn_after(conv.weight, conv.bias, bn)
    fused.weight.data.copy_(w)
    if fused.bias is None:
        fused.bias = nn.Parameter(b)
    else:
        fused.bias.data.copy_(b)
    return fused


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W] view, channels-last in memory


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)  # [B, C, H, W] (channels-last memory) -> [B, H, W, C] view


def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN's fused linear kernels (``mkldnn._linear_pointwise``)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


# ---------------------------------------------------------------- fused blocks (all [B, H, W, C])


_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


class ResidualMlp(nn.Module):
    """``residual + FC2(GELU(FC1(y)))`` on ``[B, H, W, C]``; one oneDNN kernel per linear layer."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, onednn: bool):
        super().__init__()
        self.fc1, self.fc2, self.onednn = fc1, fc2, onednn

    def forward(self, y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # under torch.compile, inductor makes its own fused kernels from the plain ops
        # float32, or bfloat16 in a model converted with .to(torch.bfloat16); under autocast the
        # weights stay float32 while y is bfloat16, and the plain ops below take the mixed case
        if self.onednn and y.device.type == "cpu" and y.dtype in _ONEDNN_DTYPES \
                and y.dtype == self.fc1.weight.dtype and not torch.compiler.is_compiling():
            B, H, W, C = residual.shape
            kernel = torch.ops.mkldnn._linear_pointwise
            # [B*H*W, C] -> [B*H*W, 4C], GELU applied by the matmul kernel as it writes
            h = kernel(y.reshape(B * H * W, -1), self.fc1.weight, self.fc1.bias, "gelu", [],
                       "none")
            # [B*H*W, 4C] -> [B*H*W, C], bias and residual added by the kernel
            out = kernel.binary(h, residual.reshape(B * H * W, C), self.fc2.weight,
                                self.fc2.bias, "add")
            return out.view(B, H, W, C)
        return self.fc2(F.gelu(self.fc1(y))).add_(residual)


class FusedConvBlock(nn.Module):
    """``ConvEncoder`` / local representation: ``x + FC2'(GELU(FC1(DW'(x))))``.

    ``DW'`` carries the BatchNorm, ``FC2'`` the layer scale. Shape: ``[B, H, W, C]`` in and out.
    """

    def __init__(self, block: ConvEncoder, onednn: bool = False):
        super().__init__()
        self.dwconv = _conv(block.dwconv, block.norm)
        self.mlp = ResidualMlp(_linear(block.pwconv1.weight, block.pwconv1.bias),
                               _linear(block.pwconv2.weight, block.pwconv2.bias,
                                       block.layer_scale), onednn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(_nhwc(self.dwconv(_nchw(x))), x)


class FusedAttention(nn.Module):
    """Efficient additive attention with ``W_QK`` packed and ``final . Proj`` merged.

    Shape: tokens ``[B, N, D]`` in and out (the layer scale is already in ``out``).
    """

    def __init__(self, attn, layer_scale: torch.Tensor):
        super().__init__()
        self.formulation, d = attn.formulation, attn.key_dim
        self.qk = _linear(torch.cat([attn.to_query.weight, attn.to_key.weight]),
                          torch.cat([attn.to_query.bias, attn.to_key.bias]))
        self.w_g = nn.Parameter(attn.w_g * attn.scale_factor)  # [d, 1], scale folded in
        w_f, w_p = attn.final.weight, attn.Proj.weight
        # final(Proj(gK) + Q) = gK @ (W_F W_P)^T + Q @ W_F^T + (W_F b_P + b_F)
        self.out = _linear(torch.cat([w_f @ w_p, w_f], dim=1),
                           w_f @ attn.Proj.bias + attn.final.bias, layer_scale)
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. packed projections, unit queries and keys: [B, N, D] -> 2 x [B, N, d]
        q, k = F.normalize(self.qk(x).unflatten(-1, (2, self.d)), dim=-1).unbind(-2)
        # 2. token weights and global query: [B, N, 1], then [B, 1, N] @ [B, N, d] -> [B, 1, d]
        if self.formulation == "legacy_softmax":  # softmax over a size-1 axis: all ones
            g = q.sum(dim=1, keepdim=True)
        else:
            scores = q @ self.w_g
            alpha = F.normalize(scores, dim=1) if self.formulation == "normalize" \
                else scores.softmax(dim=1)
            g = alpha.transpose(1, 2) @ q
        # 3. interaction, residual with Q and output projection in one matmul
        return self.out(torch.cat([g * k, q], dim=-1))


class FusedEncoder(nn.Module):
    """``SwiftFormerEncoder``: local representation, then attention and MLP residuals.

    The MLP's BatchNorm is folded into ``fc1``; both layer scales into the last projections.
    Shape: ``[B, H, W, C]`` in and out.
    """

    def __init__(self, block: SwiftFormerEncoder, onednn: bool = False):
        super().__init__()
        self.local = FusedConvBlock(block.local_representation, onednn)
        self.attn = FusedAttention(block.attn, block.layer_scale_1)
        mlp: Mlp = block.linear
        self.mlp = ResidualMlp(_linear(*fold_bn_before(mlp.fc1.weight, mlp.fc1.bias, mlp.norm1)),
                               _linear(mlp.fc2.weight, mlp.fc2.bias, block.layer_scale_2), onednn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local(x)
        B, H, W, C = x.shape
        x = x + self.attn(x.reshape(B, H * W, C)).reshape(B, H, W, C)  # tokens: a free view
        return self.mlp(x, x)


class FusedDownsample(nn.Module):
    """``Embedding``: strided 3x3 conv with its BatchNorm folded in. ``[B, H, W, C]`` in and out."""

    def __init__(self, embed: Embedding):
        super().__init__()
        self.proj = _conv(embed.proj, embed.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _nhwc(self.proj(_nchw(x)))


# ---------------------------------------------------------------- the model


class FusedSwiftFormer(nn.Module):
    """Eval-only SwiftFormer built by :func:`fuse`.

    Shape: ``[B, 3, H, W]`` -> ``[B, num_classes]`` (the average of the two heads), like the
    source model in eval mode. ``forward_features`` returns ``[B, C, H/32, W/32]`` (a
    channels-last view).
    """

    def __init__(self, model: SwiftFormer, onednn: bool = False):
        super().__init__()
        self.in_chans, self.num_classes = model.in_chans, model.num_classes
        self.onednn = onednn
        self.depths, self.widths = model.depths, model.widths
        stem = model.patch_embed
        self.stem = nn.Sequential(_conv(stem.conv1, stem.bn1), nn.ReLU(inplace=True),
                                  _conv(stem.conv2, stem.bn2), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []  # one flat sequence: stage 1, downsample, stage 2, ...
        for stage in model.stages():
            if stage.encoder is None:  # a stage left out of mixer_stages: ConvEncoders only
                blocks += [FusedConvBlock(block, onednn) for block in stage.blocks]
            else:
                blocks += [FusedConvBlock(block, onednn) for block in stage.blocks[:-1]]
                blocks.append(FusedEncoder(stage.encoder, onednn))
            if stage.downsample is not None:
                blocks.append(FusedDownsample(stage.downsample))
        self.blocks = nn.Sequential(*blocks)
        # norm -> mean -> (head + dist_head) / 2, as one linear layer on the pooled features
        head_w, head_b = self._head_weights(model)
        self.head = _linear(*fold_bn_before(head_w, head_b, model.norm))
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _head_weights(model: SwiftFormer):
        heads = [model.head] + ([model.dist_head] if model.distillation else [])
        if not isinstance(model.head, nn.Linear):  # num_classes=0: the pooled, normed features
            like = model.norm.weight
            return torch.eye(model.num_features, dtype=like.dtype), like.new_zeros(like.shape)
        weight = torch.stack([h.weight for h in heads]).mean(0)
        return weight, torch.stack([h.bias for h in heads]).mean(0)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("a fused SwiftFormer is for inference only: its BatchNorms are "
                               "folded away. Train the unfused model and fuse() it afterwards.")
        return super().train(False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output ``[B, C, H/32, W/32]`` (before the folded norm)."""
        check_images(x, self.in_chans)
        x = _nhwc(self.stem(x.contiguous(memory_format=torch.channels_last)))
        return _nchw(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.in_chans)
        x = _nhwc(self.stem(x.contiguous(memory_format=torch.channels_last)))
        return self.head(self.blocks(x).mean(dim=(1, 2)))  # [B, H, W, C] -> [B, C] -> logits


@torch.no_grad()
def fuse(model: SwiftFormer, onednn: bool | None = None) -> FusedSwiftFormer:
    """An equivalent eval-only model with BatchNorms, layer scales and heads folded away.

    The source model is not modified. Dropout and drop path are identities in eval and vanish.

    Args:
        model: a swiftlearn SwiftFormer.
        onednn: run each residual MLP as two oneDNN kernels with GELU and the residual addition
            as post-ops (CPU, float32); ``None`` uses them when :func:`onednn_available`.

    Raises:
        ValueError: if ``model`` is not a :class:`~swiftlearn.model.SwiftFormer` with the
            additive mixer (any ``mixer_stages``), or ``onednn`` is requested where this PyTorch
            build lacks the kernels.
    """
    if not isinstance(model, SwiftFormer):
        raise ValueError(f"fuse() takes a swiftlearn SwiftFormer, got {type(model).__name__}; "
                         "load other checkpoints with swiftlearn.checkpoints.load_checkpoint")
    if model.mixer != "additive":
        raise ValueError(f"fuse() folds SwiftFormer's additive attention; this model's mixer is "
                         f"{model.mixer!r}. Run it eagerly (or with torch.compile).")
    if onednn and not onednn_available():
        raise ValueError("this PyTorch build has no oneDNN fused linear kernels; use onednn=False")
    onednn = onednn_available() if onednn is None else onednn
    fused = FusedSwiftFormer(model, onednn).to(next(model.parameters()).dtype)
    return fused.to(memory_format=torch.channels_last)  # conv weights as oneDNN wants them
