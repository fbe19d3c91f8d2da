"""Imagenette and the photos the notebooks look at.

Where data is looked for, in order:

1. an explicit ``root`` argument;
2. the ``SWIFTLEARN_DATA`` environment variable (an Imagenette root: ``train/``, ``val/``);
3. the default cache folder ``$XDG_CACHE_HOME/swiftlearn`` (``~/.cache/swiftlearn``), where
   downloads go.

Photos for attention maps come from real images only: ``SWIFTLEARN_PHOTOS`` (a folder of
JPEG/PNG files), else an ``imagenet-sample-images`` folder beside the Imagenette root, else
Imagenette's validation images, else the photos that ship inside scikit-image (so notebooks 01-03
run on a clean clone without network).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENETTE_CLASSES",
    "Photo",
    "default_cache_dir",
    "find_root",
    "load_photos",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Imagenette's ten ImageNet classes: (WordNet id, readable name), in sorted wnid order.
IMAGENETTE_CLASSES: tuple[tuple[str, str], ...] = (
    ("n01440764", "tench"),
    ("n02102040", "English springer"),
    ("n02979186", "cassette player"),
    ("n03000684", "chain saw"),
    ("n03028079", "church"),
    ("n03394916", "French horn"),
    ("n03417042", "garbage truck"),
    ("n03425413", "gas pump"),
    ("n03445777", "golf ball"),
    ("n03888257", "parachute"),
)

_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/swiftlearn``, else ``~/.cache/swiftlearn``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "swiftlearn"


def _is_root(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "val").is_dir()


def find_root(root: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """Locate an Imagenette root (a folder holding ``train/`` and ``val/``).

    Looks at ``root``, then ``$SWIFTLEARN_DATA``, then the default cache folder (and the
    ``imagenette2*`` folders inside it).

    Args:
        root: an explicit folder; when given it must be a valid root.
        required: raise when nothing is found (else return ``None``).

    Raises:
        FileNotFoundError: naming every place that was searched and how to get the data.
    """
    tried: list[str] = []
    if root is not None:
        path = Path(root).expanduser()
        if _is_root(path):
            return path
        missing = [d for d in ("train", "val") if not (path / d).is_dir()]
        raise FileNotFoundError(
            f"{path} is not an Imagenette root: missing {', '.join(d + '/' for d in missing)}. "
            "Point it at the folder that holds train/ and val/ (e.g. imagenette2-320/), or "
            "download it with `swiftlearn.data.download_imagenette()`.")
    env = os.environ.get("SWIFTLEARN_DATA")
    if env:
        path = Path(env).expanduser()
        if _is_root(path):
            return path
        tried.append(f"$SWIFTLEARN_DATA={env} (no train/ and val/ there)")
    cache = default_cache_dir()
    candidates = [cache] + sorted(cache.glob("imagenette2*"), reverse=True) if cache.is_dir() \
        else [cache]
    for path in candidates:
        if _is_root(path):
            return path
    tried.append(f"the cache folder {cache}")
    if not required:
        return None
    raise FileNotFoundError(
        "No Imagenette root found; looked at " + "; ".join(tried) + ". Set SWIFTLEARN_DATA to "
        "a folder holding train/ and val/, or download it with "
        "`swiftlearn.data.download_imagenette()`.")


@dataclass
class Photo:
    """A real photo for attention figures: RGB ``uint8`` array ``[H, W, 3]`` and where it came from."""

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
        A list of :class:`Photo`, RGB uint8 (greyscale images are converted).
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    files, source = _photo_files()
    photos: list[Photo] = []
    if files:
        for path in files[: n or len(files)]:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
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
