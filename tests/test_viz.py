"""swiftlearn.viz: figure structure, input validation, non-blank rendering, learning-free tokens."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from swiftlearn import viz
from swiftlearn.data import Photo

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 64x64 uint8 test image with structure (a bright square on a gradient)."""
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([x * 4, y * 4, 255 - x * 2], -1).astype(np.uint8)
    img[16:40, 20:44] = (250, 200, 30)
    return img


def _png(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _n_image_axes(fig: Figure) -> int:
    """Axes that show an image (colorbars are axes too, without images)."""
    return sum(1 for ax in fig.axes if ax.images)


def _n_colorbars(fig: Figure) -> int:
    return sum(1 for ax in fig.axes if not ax.images and ax.collections)


# ----------------------------------------------------------------------------------------------
# inputs


def test_to_image_accepts_the_usual_layouts(image):
    ref = image.astype(np.float32) / 255
    chw = torch.from_numpy(image).permute(2, 0, 1)
    for candidate in (image, ref, chw, chw.float() / 255, chw[None].float() / 255,
                      Photo("p", image, "test")):
        out = viz.to_image(candidate)
        assert out.shape == (64, 64, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=1e-6)
    assert viz.to_image(image[..., 0]).shape == (64, 64, 3)  # greyscale is repeated


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 5, 6)), r"\[H, W, 3\]"),
    (np.zeros(10), r"\[H, W, 3\]"),
    (np.full((8, 8, 3), 2.5), r"normalisation"),
    (np.full((8, 8, 3), -0.4), r"\[0, 1\]"),
])
def test_to_image_rejects_bad_images(bad, match):
    with pytest.raises(ValueError, match=match):
        viz.to_image(bad)


def test_fold_tokens():
    w = torch.arange(12.0)
    assert viz.fold_tokens(w, (3, 4)).shape == (3, 4)
    np.testing.assert_array_equal(viz.fold_tokens(w, (3, 4))[1], [4, 5, 6, 7])  # raster order
    assert viz.fold_tokens(torch.arange(49.0)).shape == (7, 7)  # square by default
    assert viz.fold_tokens(torch.arange(49.0)[None], (7, 7)).shape == (7, 7)  # batch of one
    assert viz.fold_tokens(np.zeros((5, 6))).shape == (5, 6)  # already a grid
    with pytest.raises(ValueError, match="square grid"):
        viz.fold_tokens(torch.arange(12.0))
    with pytest.raises(ValueError, match="holds 12"):
        viz.fold_tokens(torch.arange(10.0), (3, 4))
    with pytest.raises(ValueError, match=r"\[N\]"):
        viz.fold_tokens(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="grid"):
        viz.fold_tokens(np.zeros((5, 6)), (6, 5))


def test_patchify_raster_order(image):
    patches = viz.patchify(image, 16)
    assert patches.shape == (16, 16, 16, 3)
    np.testing.assert_allclose(patches[1], image[:16, 16:32] / 255, atol=1e-6)  # row 0, col 1
    np.testing.assert_allclose(patches[4], image[16:32, :16] / 255, atol=1e-6)  # row 1, col 0
    with pytest.raises(ValueError, match="multiple of patch_size"):
        viz.patchify(image, 24)
    with pytest.raises(ValueError, match="positive int"):
        viz.patchify(image, 0)


def test_square_keeps_proportions():
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # a centred white square
    out = viz.square(wide, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out.mean() > 250  # the centre crop is the white square
    with pytest.raises(ValueError, match="positive int"):
        viz.square(wide, 0)


# ----------------------------------------------------------------------------------------------
# tokens


def test_positional_encoding():
    pe = viz.positional_encoding(3, 5, 8)
    assert pe.shape == (15, 8)
    torch.testing.assert_close(pe.norm(dim=-1), torch.full((15,), 2.0))  # sqrt(8 / 2)
    # the first half depends only on the row, the second only on the column
    torch.testing.assert_close(pe[0, :4], pe[4, :4])
    torch.testing.assert_close(pe[0, 4:], pe[5, 4:])
    with pytest.raises(ValueError, match="multiple of 4"):
        viz.positional_encoding(3, 3, 6)
    with pytest.raises(ValueError, match=">= 1"):
        viz.positional_encoding(0, 3, 8)


def test_photo_tokens_match_an_independent_construction(image):
    tokens = viz.photo_tokens(image, patch_size=16, thumb=4, pos_dim=16)
    assert tokens.shape == (1, 16, 64)
    # the same thumbnails through avg_pool2d + unfold
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    thumbs = F.unfold(F.avg_pool2d(x, 4), kernel_size=4, stride=4).transpose(1, 2)  # [1, 16, 48]
    torch.testing.assert_close(tokens[..., :48], F.layer_norm(thumbs, (48,)), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens[0, :, 48:], viz.positional_encoding(4, 4, 16))
    assert torch.allclose(tokens.norm(dim=-1), torch.tensor(math.sqrt(56.0)), atol=0.05)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        viz.photo_tokens(image[:60, :60], patch_size=16)
    with pytest.raises(ValueError, match="divide"):
        viz.photo_tokens(image, patch_size=16, thumb=3)


def test_feature_tokens_are_a_stage_map_in_raster_order(image):
    import swiftlearn

    model = swiftlearn.swiftformer_xs(num_classes=10).eval()
    tokens = viz.feature_tokens(model, image, stage=3)  # 64 px: stage 3 (stride 16) is 4 x 4
    assert tokens.shape == (1, 16, 112)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        f = model.forward_stages(x)[2]  # [1, 112, 4, 4]
    # token r * 4 + c is grid cell (r, c), layer-normalised over channels
    ref = F.layer_norm(f[0, :, 1, 2], (112,))
    torch.testing.assert_close(tokens[0, 1 * 4 + 2], ref, atol=1e-5, rtol=0)
    # mean 0 over channels; the norm is sqrt(C) up to layer norm's epsilon (an untrained
    # network's features are tiny, so here it is a little below)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(1, 16), atol=1e-5, rtol=0)
    assert (tokens.norm(dim=-1) <= math.sqrt(112.0) + 1e-3).all()
    assert viz.feature_tokens(model, image, stage=1).shape == (1, 256, 48)
    with pytest.raises(ValueError, match="stage must be"):
        viz.feature_tokens(model, image, stage=5)
    with pytest.raises(ValueError, match="multiple of 32"):
        viz.feature_tokens(model, image[:48, :48])
    with pytest.raises(ValueError, match="forward_stages"):
        viz.feature_tokens(torch.nn.Linear(2, 2), image)


# ----------------------------------------------------------------------------------------------
# figures


def test_plot_patches(image):
    fig = viz.plot_patches(image, 16, n_show=5)
    assert isinstance(fig, Figure)
    assert _n_image_axes(fig) == 1 + 5
    assert _png(fig).std() > 10
    with pytest.raises(ValueError, match="n_show"):
        viz.plot_patches(image, 16, n_show=0)


@pytest.mark.parametrize("weights, cmap", [
    (torch.rand(16), viz.POSITIVE_CMAP),
    (torch.randn(16), viz.SIGNED_CMAP),
])
def test_plot_token_map_colormap_follows_the_sign(image, weights, cmap):
    fig = viz.plot_token_map(image, weights, title="w")
    assert isinstance(fig, Figure)
    assert _n_image_axes(fig) == 1 and _n_colorbars(fig) == 1
    overlay = fig.axes[0].images[-1]
    assert overlay.get_cmap().name == cmap
    lo, hi = overlay.get_clim()
    if cmap == viz.SIGNED_CMAP:
        assert lo == pytest.approx(-hi)  # centred on zero
    assert _png(fig).std() > 10
    with pytest.raises(ValueError, match="alpha"):
        viz.plot_token_map(image, weights, alpha=2.0)


def test_plot_query_attention(image):
    attn = torch.rand(2, 16, 16).softmax(-1)  # [h, N, N]
    fig = viz.plot_query_attention(image, attn, [0, (2, 3)])
    assert _n_image_axes(fig) == 2 and _n_colorbars(fig) == 2
    assert [ax.get_title() for ax in fig.axes if ax.images] == [
        "query patch (row 0, col 0)", "query patch (row 2, col 3)"]
    assert all(len(ax.patches) == 1 for ax in fig.axes if ax.images)  # the outlined query
    assert _n_image_axes(viz.plot_query_attention(image, attn[0], 5, head=None)) == 1
    assert _n_image_axes(viz.plot_query_attention(image, attn[None], [1], head=1)) == 1
    assert _png(fig).std() > 10
    with pytest.raises(ValueError, match="head=3"):
        viz.plot_query_attention(image, attn, [0], head=3)
    with pytest.raises(ValueError, match="out of range"):
        viz.plot_query_attention(image, attn, [16])
    with pytest.raises(ValueError, match="outside"):
        viz.plot_query_attention(image, attn, [(4, 0)])
    with pytest.raises(ValueError, match=r"\[N, N\]"):
        viz.plot_query_attention(image, torch.rand(16, 15), [0])
    with pytest.raises(ValueError, match="empty"):
        viz.plot_query_attention(image, attn, [])
    with pytest.raises(ValueError, match="panel_size"):
        viz.plot_query_attention(image, attn, [0], panel_size=-1)


def test_plot_mechanisms(image):
    maps = {"MHSA": torch.rand(16), "separable": torch.rand(16).softmax(0),
            "additive": F.normalize(torch.randn(16), dim=0)}
    fig = viz.plot_mechanisms(image, maps, highlight={"MHSA": 5})
    assert _n_image_axes(fig) == 4 and _n_colorbars(fig) == 3
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["photo", "MHSA", "separable", "additive"]
    assert _png(fig).std() > 10
    rows = viz.plot_mechanisms([image, image], [maps, maps], row_titles=["a", "b"])
    assert _n_image_axes(rows) == 8
    with pytest.raises(ValueError, match="same map names"):
        viz.plot_mechanisms([image, image], [maps, {"MHSA": maps["MHSA"]}])
    with pytest.raises(ValueError, match="2 images but 1"):
        viz.plot_mechanisms([image, image], [maps])
    with pytest.raises(ValueError, match="not among"):
        viz.plot_mechanisms(image, maps, highlight={"nope": 0})
    with pytest.raises(ValueError, match="panel_size"):
        viz.plot_mechanisms(image, maps, panel_size=0)


def test_plot_mechanisms_takes_maps_of_different_grids(image):
    """A SwiftFormer's stages: one [h_s, w_s] map each, all drawn over the same photo."""
    stages = {f"stage {i}": torch.randn(s, s) for i, s in enumerate((16, 8, 4, 2), start=1)}
    fig = viz.plot_mechanisms(image, stages, panel_size=2.0)
    assert _n_image_axes(fig) == 5
    overlays = [ax.images[-1].get_array().shape for ax in fig.axes if len(ax.images) == 2]
    assert overlays == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_image_grid(image):
    fig = viz.image_grid([image] * 5, titles=list("abcde"), ncols=3, suptitle="s")
    assert len(fig.axes) == 6  # 2 x 3, the last one blank
    assert _n_image_axes(fig) == 5
    assert _png(fig).std() > 10
    with pytest.raises(ValueError, match="titles"):
        viz.image_grid([image] * 2, titles=["a"])
    with pytest.raises(ValueError, match="empty"):
        viz.image_grid([])


def test_plot_curves_fits_the_exponent():
    n = np.array([49, 196, 784, 3136])
    fig = viz.plot_curves(n, {"quadratic": 3.0 * n**2, "linear": 5.0 * n}, xlabel="N",
                          ylabel="FLOPs", fit=True, title="cost")
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["quadratic (slope 2.00)", "linear (slope 1.00)"]
    assert _png(fig).std() > 5
    assert viz.plot_curves([0, 1], {"a": [1, 2]}, xlabel="x", ylabel="y", log=False).axes
    with pytest.raises(ValueError, match="x > 0"):
        viz.plot_curves([0, 1], {"a": [1, 2]}, xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="has"):
        viz.plot_curves([1, 2, 3], {"a": [1, 2]}, xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="mapping"):
        viz.plot_curves([1, 2], {}, xlabel="x", ylabel="y")


def test_figures_do_not_touch_pyplot(image):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    viz.plot_mechanisms(image, {"a": torch.rand(16)})
    viz.plot_curves([1, 2], {"a": [1, 2]}, xlabel="x", ylabel="y")
    assert plt.get_fignums() == before


# ----------------------------------------------------------------------------------------------
# display


def _photo(size: int = 224) -> np.ndarray:
    """A photo-like image: smooth shapes plus sensor noise, which PNG compresses badly."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([np.sin(6 * x) * 0.4 + 0.5, np.cos(5 * y) * 0.4 + 0.5, x * y], -1)
    img += np.random.default_rng(1).normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _inline_png(fig: Figure) -> bytes:
    """What `display(fig)` puts in a notebook: IPython's inline rendering, plain PNG."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png")


def test_show_encodes_photo_figures_as_jpeg():
    photo = _photo()
    fig = viz.plot_token_map(photo, torch.rand(196))
    shown = viz.show(fig)
    assert shown.format == "jpeg" and shown.data[:3] == b"\xff\xd8\xff"
    plain = _inline_png(fig)
    assert len(shown.data) < len(plain) / 2  # the point of it
    decoded = Image.open(io.BytesIO(shown.data))
    assert decoded.format == "JPEG"
    assert decoded.size == Image.open(io.BytesIO(plain)).size  # same layout as display(fig)
    assert np.asarray(decoded).std() > 5
    assert viz.show(fig, format="jpg").format == "jpeg"
    assert len(viz.show(fig, quality=40).data) < len(shown.data)
    doubled = Image.open(io.BytesIO(viz.show(fig, dpi=2 * fig.dpi).data)).size
    assert abs(doubled[0] - 2 * decoded.size[0]) <= 2


def test_show_encodes_line_plots_as_palette_png():
    fig = viz.plot_curves([1, 2, 4, 8], {"a": [1, 4, 16, 64], "b": [1, 2, 4, 8]}, xlabel="x",
                          ylabel="y")
    shown = viz.show(fig, format="png")
    assert shown.format == "png" and shown.data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = Image.open(io.BytesIO(shown.data))
    assert decoded.mode == "P"  # 256 colours
    plain = _inline_png(fig)
    assert len(shown.data) < len(plain)
    reference = np.asarray(Image.open(io.BytesIO(plain)).convert("RGB"), dtype=float)
    assert np.abs(np.asarray(decoded.convert("RGB"), dtype=float) - reference).mean() < 1.0
    assert Image.open(io.BytesIO(viz.show(fig, format="png", palette=False).data)).mode == "RGB"


@pytest.mark.parametrize("kwargs, match", [
    ({"format": "gif"}, r"'jpeg' \(photo figures\) or 'png' \(line plots\)"),
    ({"format": "svg"}, r"got 'svg'"),
    ({"quality": 0}, "quality"),
    ({"quality": 100}, "quality"),
    ({"dpi": 0}, "dpi"),
])
def test_show_rejects_bad_arguments(kwargs, match):
    fig = viz.plot_curves([1, 2], {"a": [1, 2]}, xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match=match):
        viz.show(fig, **kwargs)


def test_show_rejects_what_is_not_a_figure():
    with pytest.raises(ValueError, match="no axes"):
        viz.show(Figure())
    with pytest.raises(ValueError, match="matplotlib Figure"):
        viz.show(np.zeros((4, 4, 3)))


def test_show_closes_pyplot_figures_only(image):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    library = viz.image_grid([image])
    viz.show(library)
    assert plt.get_fignums() == before and library.axes  # library figures: untouched
    fig, ax = plt.subplots()
    ax.plot([1, 2], [2, 1])
    assert plt.get_fignums() != before
    viz.show(fig, format="png")
    assert plt.get_fignums() == before  # as plt.show() does under the inline backend
