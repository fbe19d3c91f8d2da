"""A PIL dataset of Imagenette with torchvision transforms (decoded per access)."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..utils import IMAGENET_MEAN, IMAGENET_STD
from .imagenette import class_names, find_root, list_samples


def _as_rgb(im: Image.Image) -> Image.Image:
    """RGB of any PIL image; 16-bit and 32-bit integer greyscale (``I;16``, ``I``) is scaled to
    8 bits first (PIL's own conversion clips it, so a 16-bit PNG would come out white)."""
    if im.mode.startswith("I"):
        values = np.asarray(im).astype(np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0  # 0..65535 -> 0..255
        im = Image.fromarray(np.clip(values.round(), 0, 255).astype(np.uint8))
    return im.convert("RGB")



def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB (greyscale and CMYK are converted); RuntimeError names a bad file."""
    try:
        with Image.open(path) as im:
            im.load()
            return _as_rgb(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise RuntimeError(f"corrupt or unreadable image {path}: {e}. Delete or replace it "
                           "(or re-download the dataset).") from e


class ImagenetteDataset(torch.utils.data.Dataset):
    """Imagenette images read from disk (decoded per access), with class names.

    Args:
        root: an Imagenette root (``None``: :func:`find_root`).
        split: ``"train"`` or ``"val"``.
        transform: applied to the RGB PIL image (e.g. :func:`train_transform`).
        noise: noisy-label percentage from ``noisy_imagenette.csv`` (train split only).

    A corrupt image raises a ``RuntimeError`` naming its path when it is read (the decoded
    cache, :func:`load_cached`, instead skips corrupt files with a warning).
    """

    def __init__(self, root=None, split: str = "train", transform=None, noise: int = 0):
        self.root = find_root(root)
        self.split = split
        self.samples, self.wnids = list_samples(self.root, split, noise)
        self.classes = class_names(self.wnids)
        self.targets = [y for _, y in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = load_rgb(path)
        return (self.transform(image) if self.transform else image), label


def train_transform(size: int = 224, scale: tuple[float, float] = (0.35, 1.0),
                    auto_augment: str | None = None):
    """Random resized crop + horizontal flip (+ optional ``"trivialaugment"``/``"randaugment"``/
    ``"autoaugment"``), to a normalised float tensor ``[3, size, size]``."""
    from torchvision import transforms as T

    ops = [T.RandomResizedCrop(size, scale=scale, antialias=True), T.RandomHorizontalFlip()]
    policies = {"trivialaugment": T.TrivialAugmentWide, "randaugment": T.RandAugment,
                "autoaugment": T.AutoAugment}
    if auto_augment is not None:
        if auto_augment not in policies:
            raise ValueError(f"auto_augment must be one of {sorted(policies)} or None, got "
                             f"{auto_augment!r}")
        ops.append(policies[auto_augment]())
    return T.Compose(ops + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(size: int = 224, crop_pct: float = 0.875):
    """Resize to ``size / crop_pct`` then centre crop ``size``, normalised float tensor."""
    from torchvision import transforms as T

    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return T.Compose([T.Resize(round(size / crop_pct), antialias=True), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
