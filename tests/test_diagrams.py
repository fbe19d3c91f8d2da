"""swiftlearn.diagrams: the drawn diagrams render, are written atomically and stay small."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from swiftlearn import diagrams

COMMITTED = Path(__file__).resolve().parents[1] / "assets" / "figures" / "diagrams"


@pytest.mark.parametrize("name", list(diagrams.DIAGRAMS))
def test_diagram_draws_boxes_with_shapes(name):
    fig = diagrams.DIAGRAMS[name]()
    assert isinstance(fig, Figure)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(shape in t for t in texts for shape in ("[B, N, d]", "[B, C, H, W]", "[B, 3, H, W]"))
    assert any("additive attention" in t.lower() or "α" in t for t in texts)
    pixels = imread(io.BytesIO(diagrams._png(fig)), format="png")
    assert pixels.shape[0] > 600 and pixels[..., :3].std() > 0.05


def test_architecture_diagram_states_the_xs_variant():
    from swiftlearn.model import VARIANTS

    xs = VARIANTS["swiftformer_xs"]
    texts = " ".join(t.get_text() for t in diagrams.architecture_diagram().axes[0].texts)
    assert f"d = {tuple(xs.depths)}" in texts and f"C = {tuple(xs.widths)}" in texts


def test_write_diagrams_writes_once(tmp_path):
    written = diagrams.write_diagrams(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(diagrams.DIAGRAMS)
    assert diagrams.write_diagrams(tmp_path / "out") == []  # unchanged: nothing rewritten
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporaries left behind


def test_committed_diagrams_exist_and_are_small():
    for name in diagrams.DIAGRAMS:
        path = COMMITTED / name
        assert path.is_file(), f"{path} is missing: run `make diagrams`"
        assert path.stat().st_size < 100_000
        assert imread(path)[..., :3].std() > 0.05 and np.isfinite(imread(path)).all()
