"""Whitening initialisation of the stem's first convolution (``stem_init="whiten"``).

A trick of the fast CIFAR-10 trainers (airbench: 35 -> 21 epochs to 94 %): instead of random
filters, the first 3x3 convolution starts as the *whitening* transform of the training images'
3x3 patches. The patches' covariance ``C = V diag(lambda) V^T`` (27 x 27 for RGB) gives
filters ``v_i / sqrt(lambda_i + eps)``: filter ``i`` responds to the ``i``-th principal pattern
of the data (a flat colour, then edges at each orientation, then finer textures), scaled so
that every filter's output has unit variance on the training images. Each pattern comes as a
pair ``+v_i, -v_i``, so the ReLU after the BatchNorm keeps both signs. With ``2k`` filters the
``k`` strongest patterns are used (SwiftFormer-XS: 24 filters, 12 patterns of 27).

The filters then train as usual; only their starting point changes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import CachedImages, resize_center

__all__ = ["patch_whitening", "whiten_stem_"]


def patch_whitening(images: torch.Tensor, kernel: int = 3, eps: float = 5e-4,
                    max_patches: int = 200_000, seed: int = 0) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """``(eigenvalues, eigenvectors)`` of the covariance of the ``kernel x kernel`` patches of
    normalised ``images`` ``[N, C, H, W]``, strongest first; eigenvectors as rows
    ``[C*k*k, C, k, k]``, already divided by ``sqrt(eigenvalue + eps)``."""
    patches = nn.functional.unfold(images.float(), kernel)  # [N, C*k*k, L]
    patches = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
    if len(patches) > max_patches:
        g = torch.Generator().manual_seed(seed)
        patches = patches[torch.randperm(len(patches), generator=g)[:max_patches]]
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    filters = (vectors.T / (values.clamp_min(0) + eps).sqrt()[:, None]).float()
    c = images.shape[1]
    return values.float(), filters.reshape(-1, c, kernel, kernel)


@torch.no_grad()
def whiten_stem_(conv: nn.Conv2d, data: CachedImages, size: int, n_images: int = 512,
                 seed: int = 0) -> torch.Tensor:
    """Set ``conv`` (the stem's first convolution, ``C_out`` even) to ``+-`` the ``C_out / 2``
    strongest whitening filters of ``n_images`` training images (a fixed random pick) at
    ``size`` px; its bias to 0. Returns the eigenvalues (strongest first)."""
    out, cin, kh, kw = conv.weight.shape
    if out % 2 or kh != kw:
        raise ValueError(f"whitening needs an even number of square filters, got {out} of "
                         f"{kh}x{kw}")
    if out // 2 > cin * kh * kw:
        raise ValueError(f"{out // 2} patterns asked of {cin * kh * kw}-dimensional patches")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(data), generator=g)[:n_images]
    images = resize_center(data.images[pick], size)  # normalised, as training sees them
    values, filters = patch_whitening(images, kh, seed=seed)
    top = filters[:out // 2]
    conv.weight.copy_(torch.cat([top, -top]).to(conv.weight))
    if conv.bias is not None:
        conv.bias.zero_()
    return values
