"""A tiny synthetic Imagenette-shaped root for tests and smoke runs."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .imagenette import IMAGENETTE_CLASSES, NOISE_LEVELS, NOISY_CSV


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
