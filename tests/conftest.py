"""Shared fixtures. Tests that need ../shared or an Imagenette root skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SWIFTLEARN_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "swiftformer_xs_golden.pt").is_file():
        pytest.skip(f"reference fixtures not found at {REFERENCE} (set SWIFTLEARN_SHARED)")
    return REFERENCE


@pytest.fixture(scope="session")
def golden(reference_dir):
    return torch.load(reference_dir / "swiftformer_xs_golden.pt", map_location="cpu")


@pytest.fixture(scope="session")
def official_xs_state_dict(reference_dir):
    return torch.load(reference_dir / "swiftformer_xs_official_format.pth", map_location="cpu")


@pytest.fixture(scope="session")
def imagenette_root() -> Path:
    from swiftlearn.data import find_root

    root = find_root(required=False)
    if root is None:
        candidate = SHARED / "data" / "imagenette2-224"
        if (candidate / "train").is_dir():
            return candidate
        pytest.skip("no Imagenette root (set SWIFTLEARN_DATA)")
    return root
