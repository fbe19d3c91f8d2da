"""Batched augmentation on uint8 tensors (crop, flip, resize, mixup / CutMix) and batch order."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import (
    normalize,
)


def random_resized_crop_flip(images: torch.Tensor, size: int,
                             scale: tuple[float, float] = (0.35, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched random resized crop + horizontal flip on uint8 images, normalised float out.

    One ``affine_grid`` + ``grid_sample`` (bilinear) for the whole batch: each sample gets its
    own crop (area fraction ``~U(scale)``, aspect ratio log-uniform in ``ratio``, clamped to the
    image) and a coin-flip mirror, so no per-image Python loop and no GPU is needed.

    Shape: ``[B, 3, H, W]`` uint8 -> ``[B, 3, size, size]`` float32 (ImageNet-normalised).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    B = images.shape[0]
    u = torch.rand(B, 5, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # crop width as a fraction of the image width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)  # crop centre in [-1, 1] coordinates
    cy = (1 - h) * (2 * u[:, 3] - 1)
    sign = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if flip else torch.ones(B)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, [B, 3, size, size], align_corners=False)
    x = F.grid_sample(images.float(), grid.to(images.device), mode="bilinear",
                      padding_mode="border", align_corners=False)
    return normalize(x.div_(255.0))


def resize_center(images: torch.Tensor, size: int, crop_pct: float = 1.0) -> torch.Tensor:
    """Eval preprocessing on uint8 tensors: centre crop ``crop_pct`` of each side, resize to
    ``size`` (bilinear, antialiased), normalise. ``[B, 3, H, W]`` -> ``[B, 3, size, size]``."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    H, W = images.shape[-2:]
    if crop_pct < 1.0:
        h, w = round(H * crop_pct), round(W * crop_pct)
        top, left = (H - h) // 2, (W - w) // 2
        images = images[..., top:top + h, left:left + w]
    x = images.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return normalize(x.div_(255.0))


def mix_batch(x: torch.Tensor, mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0,
              prob: float = 1.0, generator: torch.Generator | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """Mixup or CutMix on a normalised batch: each sample is blended with its mirror in the batch
    (sample ``i`` with sample ``B - 1 - i``), so the loss is ``lam * CE(y) + (1 - lam) *
    CE(y.flip(0))``.

    With probability ``prob`` the batch is mixed (CutMix or mixup with equal odds when both
    alphas are > 0); otherwise it is returned as it is. Mixup draws ``lam ~ Beta(a, a)`` and
    blends whole images; CutMix pastes a box of area ``1 - lam`` from the partner and sets
    ``lam`` to the area actually kept (the box is clipped at the border). All randomness comes
    from ``generator``, so a resumed run mixes the same way.

    Returns ``(x, perm, lam)``: the (possibly) mixed batch, the partner order (``None`` when the
    batch was not mixed) and the weight of the original labels.
    """
    if not (mixup_alpha >= 0 and cutmix_alpha >= 0 and 0 <= prob <= 1):
        raise ValueError("mix_batch: alphas must be >= 0 and prob in [0, 1], got "
                         f"mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}, prob={prob}")
    u = torch.rand(2, generator=generator).tolist()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    modes = [m for m, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if u[0] >= prob or not modes or x.shape[0] < 2:
        return x, None, 1.0
    mode = modes[int(u[1] * len(modes)) % len(modes)]
    rng = np.random.default_rng(seed)
    perm = torch.arange(x.shape[0] - 1, -1, -1, device=x.device)
    if mode == "mixup":
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        return x.mul(lam).add_(x[perm], alpha=1 - lam), perm, lam
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
    H, W = x.shape[-2:]
    cut = math.sqrt(1 - lam)
    ch, cw = int(H * cut), int(W * cut)
    cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, H)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, W)
    x = x.clone()
    x[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    return x, perm, 1 - (bottom - top) * (right - left) / (H * W)


def batch_indices(n: int, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                  rank: int = 0, world_size: int = 1, drop_last: bool = False,
                  ) -> list[torch.Tensor]:
    """The index batches of one epoch for one process, as a ``DistributedSampler`` orders them.

    The permutation depends only on ``(seed, epoch)`` (so a resumed run can skip the batches it
    already did); with ``world_size > 1`` each rank takes its share (shuffled: as
    ``DistributedSampler(drop_last=True)``; unshuffled: every ``world_size``-th index).
    """
    from torch.utils.data import DistributedSampler

    if shuffle:
        sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        idx = torch.tensor(list(sampler), dtype=torch.long)
    else:  # evaluation: a plain stride, no padding, so every image counts exactly once
        idx = torch.arange(rank, n, world_size)
    batches = list(idx.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
