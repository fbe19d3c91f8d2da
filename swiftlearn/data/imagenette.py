"""Imagenette on disk: its classes, locating a root, checking it, downloading it, listing its
samples (with the noisy labels)."""

from __future__ import annotations

import csv
import hashlib
import os
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from ..utils import (
    atomic_write,
    remove_stale_temporaries,
    staging_dir,
)

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
