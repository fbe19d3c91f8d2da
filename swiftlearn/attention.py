"""Four attention mechanisms, from quadratic to linear in the number of tokens.

Shape legend (used in every module and notebook of swiftlearn):

    B  batch            C  channels          H, W  spatial size
    N  tokens (= H*W)   D  token dim         h     heads (d = D / h per head)

Comments use arrow style, e.g. ``# [B, N, D] @ [D, 1] -> [B, N, 1]``; rearrangements of axes
are written with einops, whose patterns say the same thing in code:
``rearrange(x, "b c h w -> b (h w) c")`` turns a feature map into tokens.

* :class:`MultiHeadSelfAttention`: softmax(Q K^T / sqrt(d)) V, every token against every token,
  O(N^2 D) time and O(N^2) memory for the attention matrix.
* :class:`SeparableSelfAttention`: MobileViT-v2's separable attention (Mehta & Rastegari, 2022).
  One score per token, softmax over tokens, a single context vector: O(N D).
* :class:`EfficientAdditiveAttention`: SwiftFormer's efficient additive attention
  (Shaker et al., ICCV 2023). A learned vector scores the queries, the weighted sum of queries is
  a global query that multiplies every key element-wise, and a linear layer replaces the
  key-value interaction: O(N D), no values at all.
* :class:`FastformerAttention`: the same, with the key-value interaction put back as in
  Fastformer (Wu et al., 2021): a second additive pooling makes a global key, which multiplies
  the values. SwiftFormer's appendix C measures what removing it gains.

Each ``forward`` takes ``return_attention=True`` and then also returns what it attended with:
MHSA its maps ``[B, h, N, N]``, the separable attention its context scores ``[B, N]``, the additive
attention its token weights ``alpha`` ``[B, N]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "FORMULATIONS",
    "EfficientAdditiveAttention",
    "FastformerAttention",
    "MultiHeadSelfAttention",
    "SeparableSelfAttention",
    "check_tokens",
]

FORMULATIONS = ("normalize", "softmax", "legacy_softmax")


def check_tokens(x: torch.Tensor, dim: int, name: str) -> None:
    """Raise a ValueError unless ``x`` is a float tensor of tokens ``[B, N, dim]``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} expects a torch.Tensor of tokens [B, N, D], got {type(x).__name__}")
    if x.dim() != 3:
        hint = ""
        if x.dim() == 4:
            hint = (" For an image feature map [B, C, H, W] use "
                    "`einops.rearrange(x, 'b c h w -> b (h w) c')` to get [B, H*W, C] tokens.")
        elif x.dim() == 2:
            hint = " For a single sequence [N, D] use `x.unsqueeze(0)`."
        raise ValueError(
            f"{name} expects tokens of shape [B, N, D] (3 dims), got {tuple(x.shape)}.{hint}")
    if x.shape[-1] != dim:
        raise ValueError(
            f"{name} was built for token dim D={dim} but the input has D={x.shape[-1]} "
            f"(shape {tuple(x.shape)}); build it with dim={x.shape[-1]} or project the tokens "
            "first.")
    if x.shape[1] == 0:
        raise ValueError(f"{name} got an empty sequence (N=0) of shape {tuple(x.shape)}.")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} expects floating-point tokens, got dtype {x.dtype}; "
                         "convert with `x.float()`.")


class MultiHeadSelfAttention(nn.Module):
    r"""Multi-head scaled dot-product self-attention (Vaswani et al., 2017).

    .. math::
        \mathrm{head}_i = \mathrm{softmax}\!\left(\frac{Q_i K_i^\top}{\sqrt{d}}\right) V_i,
        \qquad \mathrm{out} = [\mathrm{head}_1, \dots, \mathrm{head}_h]\, W_o

    with ``Q, K, V = x W_q, x W_k, x W_v`` and ``d = D / h``. The packed ``qkv`` projection has
    the same layout as ``nn.MultiheadAttention.in_proj_weight`` (rows: queries, keys, values).

    Args:
        dim: token dim D.
        num_heads: h; must divide ``dim``.
        bias: whether the projections have biases.

    Shape:
        - input ``[B, N, D]``
        - output ``[B, N, D]``; with ``return_attention=True`` also the maps ``[B, h, N, N]``.
    """

    def __init__(self, dim: int, num_heads: int = 1, bias: bool = True):
        super().__init__()
        if dim <= 0 or num_heads <= 0:
            raise ValueError(f"dim and num_heads must be positive, got dim={dim}, "
                             f"num_heads={num_heads}")
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim} "
                             f"(try num_heads in {[h for h in range(1, 9) if dim % h == 0]})")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        check_tokens(x, self.dim, type(self).__name__)
        # 1. project and split heads: [B, N, 3D] -> 3 x [B, h, N, d]
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3,
                            h=self.num_heads)
        if return_attention:
            # 2. the explicit N x N matrix, only when a caller wants to look at it
            attn = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # [B, h, N, N]
            attn = attn.softmax(dim=-1)
            out = attn @ v  # [B, h, N, N] @ [B, h, N, d] -> [B, h, N, d]
        else:
            # 2. fused kernel: same maths, never materialises N x N on the CPU
            out = F.scaled_dot_product_attention(q, k, v)
        # 3. merge heads and project: [B, h, N, d] -> [B, N, D]
        out = self.proj(rearrange(out, "b h n d -> b n (h d)"))
        return (out, attn) if return_attention else out


class SeparableSelfAttention(nn.Module):
    r"""MobileViT-v2's separable self-attention (Mehta & Rastegari, 2022).

    .. math::
        c = \mathrm{softmax}_N(x W_I), \qquad
        \bar{k} = \sum_{i=1}^{N} c_i\, (x W_K)_i, \qquad
        \mathrm{out} = \big(\mathrm{ReLU}(x W_V) \odot \bar{k}\big)\, W_O

    One context score per token (a D -> 1 projection, softmax over the N tokens), one context
    vector per image, broadcast against the values: O(N D) instead of O(N^2 D).
    ``qkv_proj`` packs ``[W_I | W_K | W_V]`` as ``1 + 2D`` output rows, the layout of timm's
    ``LinearSelfAttention`` 1x1 convolution.

    Shape:
        - input ``[B, N, D]``
        - output ``[B, N, D]``; with ``return_attention=True`` also the scores ``[B, N]``.
    """

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.qkv_proj = nn.Linear(dim, 1 + 2 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        check_tokens(x, self.dim, type(self).__name__)
        # 1. [B, N, D] -> [B, N, 1 + 2D] -> scores [B, N, 1], keys and values [B, N, D]
        scores, key, value = self.qkv_proj(x).split([1, self.dim, self.dim], dim=-1)
        # 2. softmax over the tokens, not over a feature axis
        scores = scores.softmax(dim=1)
        # 3. context vector: [B, N, D] * [B, N, 1] -> sum over N -> [B, 1, D]
        context = (key * scores).sum(dim=1, keepdim=True)
        # 4. broadcast it against every value: [B, N, D] * [B, 1, D] -> [B, N, D]
        out = self.out_proj(F.relu(value) * context)
        return (out, scores.squeeze(-1)) if return_attention else out


class EfficientAdditiveAttention(nn.Module):
    r"""SwiftFormer's efficient additive attention (Shaker et al., ICCV 2023).

    .. math::
        \hat{Q} = \frac{x W_Q}{\lVert x W_Q \rVert}, \quad
        \hat{K} = \frac{x W_K}{\lVert x W_K \rVert}, \quad
        \alpha = \mathrm{norm}_N\!\left(\frac{\hat{Q} w_g}{\sqrt{d}}\right), \quad
        g = \sum_{i=1}^{N} \alpha_i \hat{Q}_i, \quad
        \mathrm{out} = \big((g \odot \hat{K})\, W_P + \hat{Q}\big)\, W_F

    There are no values: the element-wise product ``g * K`` (the query-key interaction) goes
    through a linear layer ``Proj`` that stands in for the key-value interaction, then a residual
    with the queries and a final linear layer. Every step is O(N D).

    ``formulation`` chooses how the token scores ``Q w_g / sqrt(d)`` become weights ``alpha``:

    * ``"normalize"`` (default): L2-normalise over the N tokens, as the official code has done since
      July 2023 and as timm does. ``alpha`` can be negative; its squares sum to one.
    * ``"softmax"``: softmax over the N tokens; weights positive, summing to one.
    * ``"legacy_softmax"``: softmax over the size-1 last axis, as in the first official release and
      in Hugging Face's ``SwiftFormer`` port. The softmax of a single number is 1, so every
      ``alpha_i = 1`` and ``g`` is the plain sum of the queries: ``w_g`` receives no gradient.
      Needed to reproduce weights trained that way, and kept to teach the pitfall.

    Parameter names (``to_query``, ``to_key``, ``w_g``, ``Proj``, ``final``) match the official
    checkpoints, so their weights load without renaming.

    Args:
        dim: token dim D (input and output).
        key_dim: width of the query/key space (official ``token_dim``); defaults to ``dim``.
        formulation: one of :data:`FORMULATIONS`.

    Shape:
        - input ``[B, N, D]``
        - output ``[B, N, D]``; with ``return_attention=True`` also ``alpha`` ``[B, N]``.
    """

    def __init__(self, dim: int, key_dim: int | None = None, formulation: str = "normalize"):
        super().__init__()
        key_dim = dim if key_dim is None else key_dim
        if dim <= 0 or key_dim <= 0:
            raise ValueError(f"dim and key_dim must be positive, got dim={dim}, key_dim={key_dim}")
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
        self.dim, self.key_dim, self.formulation = dim, key_dim, formulation
        self.to_query = nn.Linear(dim, key_dim)
        self.to_key = nn.Linear(dim, key_dim)
        self.w_g = nn.Parameter(torch.randn(key_dim, 1))
        self.scale_factor = key_dim**-0.5
        self.Proj = nn.Linear(key_dim, key_dim)
        self.final = nn.Linear(key_dim, dim)

    def token_weights(self, query: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """``alpha`` ``[B, N, 1]`` from L2-normalised queries ``[B, N, d]`` (scored by ``w_g``,
        or by ``w`` when given)."""
        w = self.w_g if w is None else w
        scores = (query @ w) * self.scale_factor  # [B, N, d] @ [d, 1] -> [B, N, 1]
        if self.formulation == "normalize":
            return F.normalize(scores, dim=1)  # over the N tokens
        if self.formulation == "softmax":
            return scores.softmax(dim=1)  # over the N tokens
        return scores.softmax(dim=-1)  # over a size-1 axis: every weight is exactly 1

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        check_tokens(x, self.dim, type(self).__name__)
        # 1. queries and keys on the unit sphere: [B, N, D] -> [B, N, d]
        query = F.normalize(self.to_query(x), dim=-1)
        key = F.normalize(self.to_key(x), dim=-1)
        # 2. one weight per token: [B, N, 1]
        alpha = self.token_weights(query)
        # 3. global query: sum over N of [B, N, 1] * [B, N, d] -> [B, 1, d]
        g = (alpha * query).sum(dim=1, keepdim=True)
        # 4. query-key interaction, a linear layer in place of key-value, residual, output
        out = self.final(self.Proj(g * key) + query)  # [B, N, d] -> [B, N, D]
        return (out, alpha.squeeze(-1)) if return_attention else out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, key_dim={self.key_dim}, formulation={self.formulation!r}"


class FastformerAttention(EfficientAdditiveAttention):
    r"""Efficient additive attention *with* Fastformer's key-value interaction (Wu et al., 2021).

    .. math::
        \hat{Q}, \hat{K}, \alpha, g \text{ as in } \mathrm{EfficientAdditiveAttention}, \quad
        p_i = g \odot \hat{K}_i, \quad
        \beta = \mathrm{norm}_N\!\left(\frac{p\, w_k}{\sqrt{d}}\right), \quad
        k = \sum_{i=1}^{N} \beta_i p_i, \quad
        \mathrm{out} = \big((k \odot x W_V)\, W_P + \hat{Q}\big)\, W_F

    SwiftFormer (appendix C) replaces everything after ``p = g * K`` by one linear layer; this
    module keeps Fastformer's second pooling: the query-key products ``p`` are scored by a
    second learned vector ``w_k`` (with the same ``formulation`` as ``alpha``), pooled into a
    global key ``k``, and ``k`` multiplies the values ``V`` before the projection. Everything else
    (unit queries and keys, the query residual, the final layer) is SwiftFormer's, so the two
    differ only in the key-value interaction. Still O(N D).

    Args:
        dim, key_dim, formulation: as in :class:`EfficientAdditiveAttention`.

    Shape:
        - input ``[B, N, D]``
        - output ``[B, N, D]``; with ``return_attention=True`` also ``alpha`` ``[B, N]``.
    """

    def __init__(self, dim: int, key_dim: int | None = None, formulation: str = "normalize"):
        super().__init__(dim, key_dim, formulation)
        self.to_value = nn.Linear(dim, self.key_dim)
        self.w_k = nn.Parameter(torch.randn(self.key_dim, 1))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        check_tokens(x, self.dim, type(self).__name__)
        # 1. unit queries and keys, plain values: [B, N, D] -> [B, N, d]
        query = F.normalize(self.to_query(x), dim=-1)
        key = F.normalize(self.to_key(x), dim=-1)
        value = self.to_value(x)
        # 2. global query, as in SwiftFormer: [B, N, 1] weights -> [B, 1, d]
        alpha = self.token_weights(query)
        g = (alpha * query).sum(dim=1, keepdim=True)
        # 3. query-key interaction, then the key-value interaction SwiftFormer removes:
        #    p [B, N, d] -> weights beta [B, N, 1] -> global key [B, 1, d] -> k * V [B, N, d]
        p = g * key
        beta = self.token_weights(p, self.w_k)
        k = (beta * p).sum(dim=1, keepdim=True)
        out = self.final(self.Proj(k * value) + query)  # [B, N, d] -> [B, N, D]
        return (out, alpha.squeeze(-1)) if return_attention else out
