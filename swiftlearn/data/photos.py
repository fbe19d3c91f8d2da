"""Photos for the attention maps: real images only (see :mod:`swiftlearn.data`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import _as_rgb
from .imagenette import _IMAGE_SUFFIXES, IMAGENETTE_CLASSES, find_root

_SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")  # shipped inside scikit-image


@dataclass
class Photo:
    """A real photo for attention figures: RGB ``uint8`` ``[H, W, 3]`` and where it came from."""

    name: str
    image: np.ndarray
    source: str

    def resized(self, size: int | tuple[int, int]) -> np.ndarray:
        """The photo resized to ``size`` (int: square; ``(H, W)`` otherwise), bicubic, uint8."""
        h, w = (size, size) if isinstance(size, int) else size
        return np.asarray(Image.fromarray(self.image).resize((w, h), Image.BICUBIC))


def _photo_files() -> tuple[list[Path], str]:
    env = os.environ.get("SWIFTLEARN_PHOTOS")
    if env:
        files = sorted(p for p in Path(env).expanduser().glob("*")
                       if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"$SWIFTLEARN_PHOTOS={env} holds no .jpg/.jpeg/.png files")
        return files, "SWIFTLEARN_PHOTOS"
    root = find_root(required=False)
    if root is not None:
        beside = root.parent / "imagenet-sample-images"
        files = sorted(p for p in beside.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if files:
            return files, "imagenet-sample-images"
        # first validation image of each class
        files = []
        for wnid, _ in IMAGENETTE_CLASSES:
            found = sorted((root / "val" / wnid).glob("*"))
            files += [p for p in found if p.suffix.lower() in _IMAGE_SUFFIXES][:1]
        if files:
            return files, "imagenette-val"
    return [], "scikit-image"


def load_photos(n: int | None = None) -> list[Photo]:
    """Real photos for attention maps (see the module docstring for where they come from).

    Args:
        n: how many (default: all that were found).

    Returns:
        A list of :class:`Photo`, RGB uint8 (greyscale images are converted, 16-bit ones
        scaled to 8 bits as for training).
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    files, source = _photo_files()
    photos: list[Photo] = []
    if files:
        for path in files[: n or len(files)]:
            with Image.open(path) as im:
                image = np.asarray(_as_rgb(im))  # the training data's conversion (16-bit PNGs)
            name = path.stem.split("_", 1)[-1].replace("_", " ") if path.stem.startswith("n0") \
                else path.stem
            photos.append(Photo(name, image, f"{source}:{path.name}"))
        return photos
    try:
        from skimage import data as skdata
    except ImportError as e:  # pragma: no cover - scikit-image is a runtime dependency
        raise RuntimeError("No Imagenette root and no scikit-image: set SWIFTLEARN_DATA or "
                           "`pip install scikit-image`.") from e
    for name in _SKIMAGE_PHOTOS[: n or len(_SKIMAGE_PHOTOS)]:
        image = getattr(skdata, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, -1)
        photos.append(Photo(name, np.ascontiguousarray(image[..., :3]),
                            f"scikit-image:{name}"))
    return photos
