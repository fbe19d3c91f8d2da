"""The decoded cache: every image decoded once to uint8 ``[N, 3, S, S]`` on disk, keyed by what
it depends on."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..utils import (
    atomic_write,
    atomic_write_json,
    remove_stale_temporaries,
)
from .datasets import _as_rgb
from .imagenette import (
    NOISY_CSV,
    class_names,
    default_cache_dir,
    find_root,
    list_samples,
)

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
