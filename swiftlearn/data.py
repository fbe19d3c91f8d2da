"""Imagenette and the photos the notebooks look at.

Imagenette (fast.ai's ten-class ImageNet subset) in its official layout: ``train/<wnid>/``,
``val/<wnid>/`` and ``noisy_imagenette.csv``.

* :func:`find_root` / :func:`check_root` locate a root, or say what is missing and how to get it;
  :func:`download_imagenette` fetches an official archive (160 px, 320 px or full; md5-checked,
  retried, extracted atomically).
* :class:`ImagenetteDataset` (PIL, decoded per access; greyscale -> RGB; optional noisy labels)
  with :func:`train_transform` / :func:`eval_transform` (ImageNet normalisation).
* On a 2-core CPU JPEG decoding would dominate a training step, so training reads
  :func:`load_cached`: every image decoded once to uint8 ``[N, 3, S, S]`` and stored on disk,
  keyed by the source files and the resolution. :func:`random_resized_crop_flip` then augments a
  whole uint8 batch with one ``grid_sample`` (a few % of the step time) and :func:`resize_center`
  prepares evaluation batches. Corrupt images: the cache skips them with a warning naming them
  (``on_corrupt="error"`` raises instead); the PIL dataset raises naming the file.

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

import csv
import hashlib
import json
import math
import os
import re
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .utils import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    atomic_write,
    atomic_write_json,
    normalize,
    remove_stale_temporaries,
    staging_dir,
)

# normalize, IMAGENET_MEAN and IMAGENET_STD live in swiftlearn.utils; re-exported here for the
# notebooks and old code that import them from swiftlearn.data

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENETTE_CLASSES",
    "IMAGENETTE_URLS",
    "CachedImages",
    "ImagenetteDataset",
    "Photo",
    "batch_indices",
    "cache_usage",
    "check_root",
    "class_names",
    "default_cache_dir",
    "download_imagenette",
    "eval_transform",
    "find_root",
    "list_samples",
    "load_cached",
    "load_photos",
    "load_rgb",
    "mix_batch",
    "normalize",
    "random_resized_crop_flip",
    "resize_center",
    "synthetic_imagenette",
    "train_transform",
]


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


# ---------------------------------------------------------------------------------------------
# Layout checks
# ---------------------------------------------------------------------------------------------

#: The official archives (as listed by fast.ai and torchvision): size -> (url, md5).
IMAGENETTE_URLS: dict[str, tuple[str, str]] = {
    "160": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
            "e793b78cc4c9e9a4ccc0c1155377a412"),
    "320": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
            "3df6f0d01a2c9592104656642f5e78a3"),
    "full": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz",
             "fe2fc210e6bb7c5664d602c3cd71e612"),
}
NOISY_CSV = "noisy_imagenette.csv"
NOISE_LEVELS = (0, 1, 5, 25, 50)
SPLITS = ("train", "val")
_HOW_TO_GET = ("Get it with `swiftlearn.data.download_imagenette('320')` (or '160' / 'full'), or "
               "download and extract https://s3.amazonaws.com/fast-ai-imageclas/"
               "imagenette2-320.tgz yourself and set SWIFTLEARN_DATA to the extracted folder.")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def check_root(root: str | os.PathLike, splits: tuple[str, ...] = SPLITS) -> Path:
    """Check that ``root`` is a complete Imagenette root; return it as a :class:`Path`.

    Complete means: ``<split>/<wnid>/`` exists and holds at least one image for every split in
    ``splits`` and each of the ten wnids of :data:`IMAGENETTE_CLASSES`.

    Raises:
        FileNotFoundError: listing every missing or empty folder and how to get the data.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"Imagenette root {path} does not exist. {_HOW_TO_GET}")
    missing = _missing(path, splits)
    if missing:
        raise FileNotFoundError(
            f"{path} is an incomplete Imagenette root: missing {missing}. A partial download or "
            f"extraction leaves this; delete the folder and fetch it again. {_HOW_TO_GET}")
    return path


def _missing(path: Path, splits: tuple[str, ...] = SPLITS) -> str:
    """The missing or empty class folders of a root, as one short phrase ("" when complete)."""
    missing: list[str] = []
    for split in splits:
        if not (path / split).is_dir():
            missing.append(f"{split}/")
            continue
        for wnid, _ in IMAGENETTE_CLASSES:
            folder = path / split / wnid
            if not folder.is_dir():
                missing.append(f"{split}/{wnid}/")
            elif not _image_files(folder):
                missing.append(f"{split}/{wnid}/ (empty)")
    more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
    return ", ".join(missing[:12]) + more if missing else ""


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------

def _md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, progress: bool, timeout: float) -> None:
    from tqdm.auto import tqdm

    def stream(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))

    atomic_write(dest, stream)


def download_imagenette(size: str = "320", root: str | os.PathLike | None = None, *,
                        url: str | None = None, md5: str | None = None, retries: int = 3,
                        progress: bool = True, timeout: float = 60.0) -> Path:
    """Download and extract an official Imagenette archive; return the extracted root.

    The archive is fetched to ``<root>/<name>.tgz`` (written under a temporary name and renamed
    when complete; up to ``retries`` attempts) and its md5 checked. It is then extracted into a
    temporary sibling ``.<name>.<pid>.tmp``, checked to be a complete root, and renamed to
    ``<root>/<name>`` only then, so an interrupted call never leaves a half-extracted root. An
    already extracted, complete root is returned without touching the network. Nothing this
    function did not create is deleted: a folder already at ``<root>/<name>`` that is not a
    complete root is reported, not replaced. An archive that turns out truncated (no md5 to tell
    beforehand) is removed and fetched again, never reused; temporaries left by a killed call are
    removed by the next one.

    Args:
        size: ``"160"``, ``"320"`` or ``"full"`` (``"160px"``/``"320px"`` work too).
        root: where to put it (default: :func:`default_cache_dir`).
        url, md5: override the archive (tests serve a small archive from a local server).
        retries: download attempts before giving up.
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.

    Raises:
        ValueError: unknown ``size`` or ``retries < 1``.
        RuntimeError: every attempt failed, the md5 never matched, ``<root>/<name>`` exists but
            is not a complete root, or the archive is unsafe or not Imagenette.
    """
    key = str(size).lower().removesuffix("px")
    if key not in IMAGENETTE_URLS:
        raise ValueError(f"size must be one of {sorted(IMAGENETTE_URLS)}, got {size!r}")
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    default_url, default_md5 = IMAGENETTE_URLS[key]
    url = url or default_url
    md5 = md5 if md5 is not None or url != default_url else default_md5
    base = Path(root).expanduser() if root is not None else default_cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    archive_name = Path(urllib.parse.urlparse(url).path).name or "imagenette.tgz"
    name = archive_name.split(".")[0]
    target = base / name
    # what an earlier, killed call left: its partial download and its extraction folder
    remove_stale_temporaries(base, {archive_name, name})
    if target.exists():
        if target.is_dir() and not _missing(target):
            return target
        what = f"missing {_missing(target)}" if target.is_dir() else "a file"
        raise RuntimeError(
            f"{target} already exists and is not a complete Imagenette root ({what}); "
            "download_imagenette never deletes what it did not make: move or delete it "
            "yourself, or pass another root")
    archive = base / archive_name
    errors: list[str] = []
    for attempt in range(1, retries + 1):
        try:
            if not archive.is_file():
                _fetch(url, archive, progress, timeout)
            if md5 and (got := _md5(archive)) != md5:
                archive.unlink()
                raise OSError(f"md5 mismatch: expected {md5}, got {got}")
            return _extract(archive, target, name)
        except _BrokenArchive as e:  # truncated without an md5 to tell: never reuse it
            archive.unlink(missing_ok=True)
            errors.append(f"attempt {attempt}: {archive.name} is truncated or not a tar "
                          f"archive ({e}), removed it")
        except (OSError, urllib.error.URLError) as e:
            errors.append(f"attempt {attempt}: {e}")
        if attempt < retries:
            time.sleep(min(2 ** attempt, 30) * 0.1)
    raise RuntimeError(f"could not download {url} after {retries} attempts ("
                       + "; ".join(errors) + "). Check the network, or download the archive "
                       f"by hand into {base} and call this again.")


class _BrokenArchive(Exception):
    """The archive ended early or is not a (gzipped) tar file."""


def _extract(archive: Path, target: Path, name: str) -> Path:
    """Extract ``archive`` into a temporary sibling of ``target``, check that it holds a complete
    root, then rename it into place (a kill leaves only the temporary folder, removed by the next
    call)."""
    with staging_dir(target) as stage:
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                    tar.extractall(stage, filter="data")
                else:  # older Pythons: refuse members that would land outside the folder
                    for member in tar.getmembers():
                        if not (stage / member.name).resolve().is_relative_to(stage.resolve()) \
                                or member.issym() or member.islnk():
                            raise RuntimeError(f"unsafe member {member.name!r} in {archive}; "
                                               "nothing was extracted")
                    tar.extractall(stage)
        except _FILTER_ERRORS as e:
            raise RuntimeError(f"unsafe member in {archive} ({e}); nothing was extracted") from e
        except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error) as e:
            raise _BrokenArchive(str(e) or type(e).__name__) from e
        extracted = stage / name if (stage / name).is_dir() else stage
        missing = _missing(extracted)
        if missing:
            raise RuntimeError(f"{archive} does not hold a complete Imagenette root (missing "
                               f"{missing}); delete it and download it again")
        try:
            os.replace(extracted, target)
        except OSError:
            if target.is_dir() and not _missing(target):
                return target  # another call finished first
            raise
    return target


#: what tarfile's ``data`` filter raises for members with ``..``, absolute paths, escaping links
_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


# ---------------------------------------------------------------------------------------------
# Samples, labels, PIL datasets and transforms
# ---------------------------------------------------------------------------------------------

def class_names(wnids: list[str] | tuple[str, ...]) -> list[str]:
    """Readable names for WordNet ids (the wnid itself when it is not an Imagenette class)."""
    names = dict(IMAGENETTE_CLASSES)
    return [names.get(w, w) for w in wnids]


def _noisy_labels(root: Path, noise: int) -> dict[str, str]:
    csv_path = root / NOISY_CSV
    if not csv_path.is_file():
        raise FileNotFoundError(f"noise={noise} needs {csv_path} (the official "
                                f"{NOISY_CSV}, shipped in every Imagenette archive).")
    column = f"noisy_labels_{noise}"
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        for needed in ("path", column):
            if needed not in (reader.fieldnames or []):
                raise ValueError(f"{csv_path} has no column {needed!r}; restore the official "
                                 f"{NOISY_CSV} from the archive")
        labels = {row["path"]: row[column] for row in reader}
    known = {w for w, _ in IMAGENETTE_CLASSES}
    unknown = sorted({wnid for wnid in labels.values() if wnid not in known})
    if unknown:
        raise ValueError(f"{csv_path} column {column!r} names classes that are not Imagenette's "
                         f"({', '.join(unknown[:5])}); restore the official {NOISY_CSV} from "
                         "the archive")
    return labels


def list_samples(root: str | os.PathLike, split: str = "train", noise: int = 0,
                 ) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(path, label)`` pairs of one split, and the wnids (label order, sorted).

    Args:
        root: an Imagenette root (checked with :func:`check_root`).
        split: ``"train"`` or ``"val"``.
        noise: percentage of noisy training labels from ``noisy_imagenette.csv``
            (0, 1, 5, 25 or 50; the validation split always keeps its true labels).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if noise not in NOISE_LEVELS:
        raise ValueError(f"noise must be one of {NOISE_LEVELS} (percent), got {noise!r}")
    root = check_root(root, (split,))
    wnids = [w for w, _ in IMAGENETTE_CLASSES]
    index = {w: i for i, w in enumerate(wnids)}
    relabel = _noisy_labels(root, noise) if noise and split == "train" else {}
    samples = []
    for wnid in wnids:
        for path in _image_files(root / split / wnid):
            rel = f"{split}/{wnid}/{path.name}"
            samples.append((path, index[relabel.get(rel, wnid)]))
    return samples, wnids


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


# ---------------------------------------------------------------------------------------------
# Decoded uint8 cache and batched augmentation on tensors
# ---------------------------------------------------------------------------------------------

_CACHE_VERSION = 1


@dataclass
class CachedImages:
    """A split decoded once: ``images`` uint8 ``[N, 3, S, S]``, ``labels`` int64 ``[N]``.

    ``skipped`` lists files that could not be decoded (see :func:`load_cached`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, per_class: int) -> CachedImages:
        """The first ``per_class`` images of every class (for smoke runs and tests)."""
        keep = torch.cat([torch.nonzero(self.labels == c).flatten()[:per_class]
                          for c in range(len(self.classes))])
        keep = keep.sort().values
        return CachedImages(self.images[keep], self.labels[keep], list(self.classes),
                            [self.paths[i] for i in keep] if self.paths else [], [])


#: the file names :func:`load_cached` writes (``<split>-<size>px-<key>.npy`` and ``.json``)
_CACHE_NAME = re.compile(r"(train|val)-\d+px-[0-9a-f]{16}\.(npy|json)")


def _cache_key(root: Path, split: str, size: int, noise: int, files: list[Path]) -> str:
    digest = hashlib.sha1(f"v{_CACHE_VERSION}|{root.resolve()}|{split}|{size}|{noise}".encode())
    if noise and split == "train":  # the labels come from the CSV: an edit to it is a new cache
        digest.update(hashlib.sha1((root / NOISY_CSV).read_bytes()).digest())
    for path in files:
        try:
            st = path.stat()
            digest.update(f"|{path.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        except OSError:  # a dangling symlink or a symlink loop: decoding skips it by name
            digest.update(f"|{path.name}|unreadable".encode())
    return digest.hexdigest()[:16]


def _as_rgb(im: Image.Image) -> Image.Image:
    """RGB of any PIL image; 16-bit and 32-bit integer greyscale (``I;16``, ``I``) is scaled to
    8 bits first (PIL's own conversion clips it, so a 16-bit PNG would come out white)."""
    if im.mode.startswith("I"):
        values = np.asarray(im).astype(np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0  # 0..65535 -> 0..255
        im = Image.fromarray(np.clip(values.round(), 0, 255).astype(np.uint8))
    return im.convert("RGB")


def _decode(path: Path, size: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: let libjpeg decode at a reduced scale
            rgb = _as_rgb(im).resize((size, size), Image.BICUBIC)
        return np.asarray(rgb).transpose(2, 0, 1)
    except (OSError, SyntaxError, ValueError):
        return None


def load_cached(root=None, split: str = "train", size: int = 176, *, noise: int = 0,
                cache_dir: str | os.PathLike | None = None, on_corrupt: str = "skip",
                progress: bool = True, workers: int = 2) -> CachedImages:
    """A split decoded to uint8 ``[N, 3, size, size]`` tensors, built once and then reused.

    Every image is squashed to ``size x size`` (Imagenette2-224 is already square; for the
    official aspect-preserving archives this matches their ``Resize((s, s))``). The file is
    ``<cache_dir>/<split>-<size>px-<key>.npy`` with a ``.json`` beside it; the key hashes the
    root's absolute path, the split, the size, the noise level (with it, the contents of
    ``noisy_imagenette.csv``) and every file's name, size and mtime, so adding, removing or
    touching an image, editing the labels or changing the size builds a new cache. Not covered:
    an edit that keeps a file's size and restores its mtime (delete the cache to rebuild it).
    Unreadable entries (dangling symlinks, symlink loops) are skipped like corrupt images.
    Building a cache removes the ones it supersedes (same root, split, size and noise, older
    files); :func:`cache_usage` tells where the caches are and how much space they take.
    Files are written to a temporary name and renamed, so an interrupted build leaves no
    half-written cache; the temporary file a killed build left is removed by the next call.

    Args:
        root: an Imagenette root (``None``: :func:`find_root`).
        split: ``"train"`` or ``"val"``.
        size: the stored resolution (train crops and eval resizes start from it).
        noise: noisy-label percentage (train only), see :func:`list_samples`.
        cache_dir: where to store it (default ``default_cache_dir() / "decoded"``).
        on_corrupt: ``"skip"`` (default): leave undecodable files out, warn with their count
            and paths and record them in ``skipped``; ``"error"``: raise a ``RuntimeError``
            naming them.
        progress: tqdm bar while decoding.
        workers: decoding threads (PIL releases the GIL while decoding).
    """
    from tqdm.auto import tqdm

    if on_corrupt not in ("skip", "error"):
        raise ValueError(f"on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    root = find_root(root)
    samples, wnids = list_samples(root, split, noise)
    files = [p for p, _ in samples]
    key = _cache_key(root, split, size, noise, files)
    folder = Path(cache_dir).expanduser() if cache_dir is not None \
        else default_cache_dir() / "decoded"
    stem = folder / f"{split}-{size}px-{key}"
    remove_stale_temporaries(folder, _CACHE_NAME.fullmatch)  # writes a killed build left
    npy, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        images = torch.from_numpy(np.load(npy))
        skipped = meta["skipped"]
        if skipped and on_corrupt == "error":
            raise RuntimeError(f"{len(skipped)} corrupt image(s) in {root}/{split}: "
                               + ", ".join(skipped[:10]))
        return CachedImages(images, torch.tensor(meta["labels"]), class_names(wnids),
                            meta["paths"], skipped)
    folder.mkdir(parents=True, exist_ok=True)
    out = np.empty((len(files), 3, size, size), np.uint8)
    ok = np.zeros(len(files), bool)

    def work(i: int) -> int:
        arr = _decode(files[i], size)
        if arr is not None:
            out[i], ok[i] = arr, True
        return i

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in tqdm(pool.map(work, range(len(files))), total=len(files), disable=not progress,
                      desc=f"decoding {split} at {size}px", mininterval=2.0):
            pass
    skipped = [str(files[i]) for i in np.flatnonzero(~ok)]
    if skipped:
        if on_corrupt == "error":
            raise RuntimeError(f"{len(skipped)} corrupt or unreadable image(s) in "
                               f"{root}/{split}: " + ", ".join(skipped[:10]) + ". Delete or "
                               "replace them, or use on_corrupt='skip'.")
        warnings.warn(f"skipped {len(skipped)} corrupt or unreadable image(s) in {root}/{split}: "
                      + ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""),
                      RuntimeWarning, stacklevel=2)
    out = out[ok]
    labels = [y for (_, y), good in zip(samples, ok) if good]
    paths = [str(p.relative_to(root)) for p, good in zip(files, ok) if good]

    def save_array(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save adds no ".npy" suffix
            np.save(f, out)

    atomic_write(npy, save_array)
    atomic_write_json({"root": str(root), "split": split, "size": size, "noise": noise,
                       "labels": labels, "paths": paths, "skipped": skipped, "wnids": wnids},
                      meta_path, indent=None)
    _remove_superseded(folder, stem.name, root, split, size, noise)
    return CachedImages(torch.from_numpy(out), torch.tensor(labels), class_names(wnids), paths,
                        skipped)


def _remove_superseded(folder: Path, keep: str, root: Path, split: str, size: int,
                       noise: int) -> None:
    """Delete the caches the one just built replaces: same root, split, size and noise, built
    before the images or labels changed (read from their ``.json``; other roots' are kept)."""
    for meta_path in folder.glob(f"{split}-{size}px-*.json"):
        if meta_path.stem == keep or not _CACHE_NAME.fullmatch(meta_path.name):
            continue
        try:
            meta = json.loads(meta_path.read_text())
            if (meta.get("root"), meta.get("split"), meta.get("size"), meta.get("noise")) != \
                    (str(root), split, size, noise):
                continue
            meta_path.with_suffix(".npy").unlink(missing_ok=True)
            meta_path.unlink()
        except (OSError, ValueError):
            continue  # unreadable or in use elsewhere: leave it


def cache_usage(cache_dir: str | os.PathLike | None = None) -> tuple[Path, int, int]:
    """``(folder, bytes, caches)``: where :func:`load_cached` keeps decoded splits and how much
    space they take (default folder: ``default_cache_dir() / "decoded"``)."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None \
        else default_cache_dir() / "decoded"
    files = [p for p in folder.glob("*") if _CACHE_NAME.fullmatch(p.name)] \
        if folder.is_dir() else []
    return folder, sum(p.stat().st_size for p in files), sum(p.suffix == ".npy" for p in files)


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


def synthetic_imagenette(path: str | os.PathLike, per_class: int = 2, size: int = 32, *,
                         val_per_class: int | None = None, greyscale_every: int = 3,
                         noisy_csv: bool = True, seed: int = 0) -> Path:
    """Write a tiny fake Imagenette root (random JPEGs in the official layout) and return it.

    For tests and offline demos: ``train/`` and ``val/`` with the ten wnid folders, every
    ``greyscale_every``-th image greyscale (as in the real data), and a ``noisy_imagenette.csv``
    whose ``noisy_labels_50`` column moves every other training image to the next class. Each
    class gets its own mean colour, so a model can learn something from it.
    """
    root = Path(path)
    rng = np.random.default_rng(seed)
    wnids = [w for w, _ in IMAGENETTE_CLASSES]
    rows = []
    k = 0
    for split, n in (("train", per_class), ("val", val_per_class or per_class)):
        for c, wnid in enumerate(wnids):
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            base = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256], np.float32)
            for i in range(n):
                pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255)
                image = Image.fromarray(pixels.astype(np.uint8))
                if greyscale_every and k % greyscale_every == 0:
                    image = image.convert("L")
                name = f"{wnid}_{i}.JPEG"
                image.save(root / split / wnid / name, quality=90)
                noisy = wnids[(c + 1) % 10] if split == "train" and i % 2 else wnid
                rows.append([f"{split}/{wnid}/{name}", wnid, wnid, wnid, wnid, noisy,
                             str(split == "val")])
                k += 1
    if noisy_csv:
        with open(root / NOISY_CSV, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path"] + [f"noisy_labels_{p}" for p in NOISE_LEVELS] + ["is_valid"])
            writer.writerows(rows)
    return root
