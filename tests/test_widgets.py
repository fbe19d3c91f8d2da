"""swiftlearn.widgets: drive the explorer from Python (no browser) and check it redraws."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread

from swiftlearn import complexity as cx
from swiftlearn import widgets as sw


def _pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(png), format="png")


@pytest.fixture
def explorer():
    return sw.ComplexityExplorer(resolution=224, stride=16, dim=64, heads=2, time_cap=2.0)


def test_initial_state_draws_a_figure_and_numbers(explorer):
    img = _pixels(explorer.image.value)
    assert img.shape[0] > 200 and img.shape[1] > 500
    assert img[..., :3].std() > 0.05  # not blank
    text = explorer.readout_text()
    assert "224x224 px, stride 16 -> 14x14 = 196 tokens, D=64, heads=2" in text
    assert sw.format_flops(cx.attention_flops("mhsa", 196, 64, 2)) in text
    assert sw.format_bytes(cx.attention_memory("additive", 196, 64, 2)) in text
    assert explorer.readout.value.startswith("<pre>") and "196 tokens" in explorer.readout.value
    assert explorer.error.value == ""
    assert explorer.point() == {"resolution": 224, "stride": 16, "tokens": 196, "dim": 64,
                                "heads": 2}


def test_moving_the_resolution_slider_redraws(explorer):
    before_text, before_png = explorer.readout.value, explorer.image.value
    explorer.resolution.value = 1024
    assert explorer.readout.value != before_text
    assert explorer.image.value != before_png
    text = explorer.readout_text()
    assert "1024x1024 px, stride 16 -> 64x64 = 4096 tokens" in text
    assert sw.format_flops(cx.attention_flops("mhsa", 4096, 64, 2)) in text
    # the MHSA matrices of that point are computed on paper
    assert sw.format_bytes(cx.attention_matrix_bytes(4096, 2)) in text


@pytest.mark.parametrize("name, value, expected", [
    ("stride", 4, "stride 4 -> 56x56 = 3136 tokens"),
    ("dim", 128, "D=128"),
    ("heads", 8, "heads=8"),
])
def test_other_sliders_redraw(explorer, name, value, expected):
    before_png = explorer.image.value
    getattr(explorer, name).value = value
    assert expected in explorer.readout_text()
    assert explorer.image.value != before_png


def test_checkboxes_choose_the_mechanisms(explorer):
    before_png = explorer.image.value
    explorer.checks["mhsa"].value = False
    assert explorer.mechanisms == ["separable", "additive"]
    assert "MHSA" not in explorer.readout_text()
    assert explorer.image.value != before_png
    for box in explorer.checks.values():
        box.value = False
    assert "tick at least one mechanism" in explorer.readout_text()
    assert explorer.measure() == {}


def test_largest_point_is_never_allocated():
    explorer = sw.ComplexityExplorer(resolution=1024, stride=4, dim=512, heads=8)
    assert explorer.point()["tokens"] == 65536
    # 65,536 tokens, 8 heads: 128 GiB of attention matrices, drawn and printed, not allocated
    assert cx.peak_memory(explorer.update) == 0
    assert "128.00 GiB" in explorer.readout_text()


def test_measure_here_shows_measured_beside_predicted(explorer):
    explorer.resolution.value = 128  # 8x8 tokens at stride 16: fast
    results = explorer.measure()
    assert set(results) == set(cx.MECHANISMS)
    for m, r in results.items():
        assert r["seconds"] is not None and r["seconds"] > 0
        assert r["flops"] == cx.attention_flops(m, 64, 64, 2)
        assert 0 <= r["memory"] - r["predicted_memory"] <= 64  # see test_complexity
    shown = explorer.measured.value
    assert "measured on this machine" in shown and " ms " in shown
    assert not explorer.measure_button.disabled
    explorer.resolution.value = 160
    assert explorer.measured.value == ""  # stale measurements are cleared


def test_measure_here_respects_the_time_cap():
    explorer = sw.ComplexityExplorer(resolution=1024, stride=4, dim=64, heads=1, time_cap=0.3)
    results = explorer.measure()
    assert results["mhsa"]["seconds"] is None
    assert "skipped" in explorer.measured.value


def test_callback_errors_are_shown_and_raised(explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(sw, "cost_figure", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        explorer.resolution.value = 256
    assert "figure failed" in explorer.error.value


def test_displays_as_its_widget(explorer):
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": 32}, "resolution"),
    ({"stride": 2}, "stride"),
    ({"dim": 48, "heads": 5}, "divide"),
    ({"time_cap": 0}, "time_cap"),
])
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sw.ComplexityExplorer(**kwargs)


def test_formatters():
    assert sw.format_flops(1.2e9) == "1.20 GFLOPs"
    assert sw.format_flops(12) == "12 FLOPs"
    assert sw.format_bytes(3 * 2**20) == "3.00 MiB"
    assert sw.format_bytes(100) == "100 B"
