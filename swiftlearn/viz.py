"""Figures for the course: patches, attention maps on photos, image grids and cost curves.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state,
never ``plt.show()``), so figures are safe inside widget callbacks. In a notebook, show one with
``display(viz.show(fig))``: :func:`show` encodes photo figures as JPEG (a fifth of the PNG's size)
and line plots as palette PNG (``format="png"``); save one with ``fig.savefig("name.png")``.

Shape legend as in :mod:`swiftlearn.attention`: ``N = h_t * w_t`` tokens laid out on an
``h_t x w_t`` grid in raster order (row by row), the order of ``x.flatten(2).transpose(1, 2)``.

It also makes the tokens that the course's pictures of *untrained* attention use
(:func:`photo_tokens`): a small thumbnail of each patch plus its position, layer-normalised.
They carry no learned meaning, so maps built on them show similarity in colour, texture and
place, which is all an untrained attention can look for (notebook 01 builds them inline).

Images may be a :class:`swiftlearn.data.Photo`, a ``uint8`` array ``[H, W, 3]``, a float array in
``[0, 1]``, or a tensor ``[3, H, W]`` / ``[H, W, 3]``. Token weights may be ``[N]`` (folded onto a
square grid, or the ``grid`` you pass) or already ``[h_t, w_t]``.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Mapping, Sequence

import numpy as np
from einops import rearrange, reduce
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .utils import normalize

__all__ = [
    "feature_tokens",
    "fold_tokens",
    "photo_tokens",
    "positional_encoding",
    "show",
    "square",
    "image_grid",
    "patchify",
    "plot_curves",
    "plot_mechanisms",
    "plot_patches",
    "plot_query_attention",
    "plot_token_map",
    "to_image",
]

SIGNED_CMAP = "RdBu_r"  # diverging, white at 0: for weights that can be negative
POSITIVE_CMAP = "inferno"  # sequential: for probabilities and other non-negative weights


def _numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()  # uint8 stays uint8
    try:
        return np.asarray(x)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} must be array-like, got {type(x).__name__}") from e


def to_image(image) -> np.ndarray:
    """An RGB float image ``[H, W, 3]`` in ``[0, 1]`` from a photo, array or tensor.

    Raises:
        ValueError: for a wrong shape, or float values outside ``[0, 1]`` (a normalised tensor:
            undo the mean/std normalisation first).
    """
    if hasattr(image, "image") and not hasattr(image, "shape"):  # swiftlearn.data.Photo
        image = image.image
    arr = _numpy(image, "image")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # [3, H, W] -> [H, W, 3]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3 or min(arr.shape[:2]) < 1:
        raise ValueError(f"image must be [H, W, 3], [3, H, W] or [H, W], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        raise ValueError(f"image must hold numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"float image values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; "
                         "undo the mean/std normalisation first (x * std + mean), or pass uint8.")
    return np.clip(arr, 0.0, 1.0)


def patchify(image, patch_size: int) -> np.ndarray:
    """Cut an image into non-overlapping patches for display: ``[H, W, 3] -> [N, p, p, 3]``.

    Raster order (row by row), the token order everywhere in swiftlearn. H and W must be
    multiples of ``patch_size``.
    """
    img = to_image(image)
    H, W, _ = img.shape
    if not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {H}x{W} is not a multiple of patch_size={patch_size}; "
                         f"resize it to e.g. {H // patch_size * patch_size or patch_size}x"
                         f"{W // patch_size * patch_size or patch_size} first.")
    # [H, W, 3] -> [N, p, p, 3] with N = (H / p) * (W / p), row by row
    return rearrange(img, "(h p1) (w p2) c -> (h w) p1 p2 c", p1=patch_size, p2=patch_size)


def square(image, size: int = 224) -> np.ndarray:
    """Centre-crop to a square and resize to ``size x size`` (bicubic): uint8 ``[size, size, 3]``.

    Unlike a plain resize it keeps the photo's proportions, so patches stay square.
    """
    from PIL import Image, ImageOps

    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    img = (to_image(image) * 255).round().astype(np.uint8)
    return np.array(ImageOps.fit(Image.fromarray(img), (int(size), int(size)), Image.BICUBIC))


def positional_encoding(rows: int, cols: int, dim: int, base: float = 100.0):
    """2-D sinusoidal positions: ``[rows * cols, dim]``, half for the row, half for the column.

    Each half holds ``sin`` and ``cos`` of the index at ``dim / 4`` frequencies
    ``base ** (-j / (dim / 4))``, so nearby tokens get similar codes. ``dim`` must be a
    multiple of 4.
    """
    import torch

    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got {rows}x{cols}")
    if dim < 4 or dim % 4:
        raise ValueError(f"dim must be a positive multiple of 4, got {dim}")
    k = dim // 4
    freqs = base ** (-torch.arange(k) / k)  # [k]
    r = torch.arange(rows)[:, None] * freqs  # [rows, k]
    c = torch.arange(cols)[:, None] * freqs  # [cols, k]
    pr = torch.cat([r.sin(), r.cos()], -1)[:, None].expand(rows, cols, 2 * k)
    pc = torch.cat([c.sin(), c.cos()], -1)[None].expand(rows, cols, 2 * k)
    return torch.cat([pr, pc], -1).reshape(rows * cols, dim)  # [N, dim]


def feature_tokens(model, image, stage: int = 3):
    """Learned tokens of a photo: one SwiftFormer stage's feature map as ``[1, N, C]``.

    The photo (square ``[H, W, 3]``, uint8 or floats in [0, 1], sides a multiple of 32; see
    :func:`square`) is normalised with the ImageNet mean and std and run through
    ``model.forward_stages``. Stage ``s`` (1 to 4, strides 4, 8, 16, 32) gives
    ``N = (H / stride) * (W / stride)`` tokens of the stage's width ``C`` in raster order,
    layer-normalised without a learned scale, so every token has mean 0 and norm ``sqrt(C)``
    (like :func:`photo_tokens`; a little less for near-constant tokens, through the layer norm's
    epsilon). At 224 px, stage 3 is the same 14 x 14 grid as 16 px patches.
    """
    import torch
    import torch.nn.functional as F

    if not hasattr(model, "forward_stages"):
        raise ValueError(f"model must be a swiftlearn SwiftFormer (with forward_stages), got "
                         f"{type(model).__name__}")
    if stage not in (1, 2, 3, 4):
        raise ValueError(f"stage must be 1, 2, 3 or 4, got {stage!r}")
    img = to_image(image)
    H, W, _ = img.shape
    if H % 32 or W % 32:
        raise ValueError(f"image size {H}x{W} is not a multiple of 32; crop it with "
                         "swiftlearn.viz.square(image, size) first.")
    param = next(model.parameters())
    x = normalize(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None])
    with torch.no_grad():
        f = model.forward_stages(x.to(param.device, param.dtype))[stage - 1]  # [1, C, h, w]
    t = rearrange(f.float(), "b c h w -> b (h w) c")  # [1, N, C], raster order
    return F.layer_norm(t, t.shape[-1:]).cpu()


def photo_tokens(image, patch_size: int = 16, thumb: int = 4, pos_dim: int = 16):
    """Learning-free tokens of a photo: ``[1, N, D]`` with ``D = 3 * thumb**2 + pos_dim``.

    1. normalise with the ImageNet mean and std; 2. cut into ``patch_size`` patches (raster
    order); 3. average each patch down to a ``thumb x thumb`` colour thumbnail (``3 * thumb**2``
    numbers, channel by channel); 4. layer-normalise the thumbnail (no learned scale), so it has
    mean 0 and norm ``sqrt(3 * thumb**2)``; 5. append a :func:`positional_encoding` (norm
    ``sqrt(pos_dim / 2)``). Every token then has the same norm, so a dot product between two
    tokens is that norm squared times their cosine similarity. The image must be square-cropped
    already (see :func:`square`).
    """
    import torch
    import torch.nn.functional as F

    img = to_image(image)
    H, W, _ = img.shape
    if patch_size < 1 or thumb < 1 or patch_size % thumb:
        raise ValueError(f"thumb={thumb} must divide patch_size={patch_size} (both positive)")
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {H}x{W} is not a multiple of patch_size={patch_size}; "
                         "crop it with swiftlearn.viz.square(image, size) first.")
    x = normalize(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))  # [3, H, W]
    rows, cols = H // patch_size, W // patch_size
    # each patch is a t x t grid of cells of (p/t) x (p/t) pixels: average the pixels of a cell,
    # then lay the patch's thumbnail out channel by channel: [3, H, W] -> [N, 3 t^2]
    x = reduce(x, "c (h t1 a) (w t2 b) -> (h w) (c t1 t2)", "mean", h=rows, w=cols, t1=thumb,
               t2=thumb)
    x = F.layer_norm(x, x.shape[-1:])  # every thumbnail: mean 0, norm sqrt(3 t^2)
    if pos_dim:
        x = torch.cat([x, positional_encoding(rows, cols, pos_dim)], dim=-1)  # [N, D]
    return x[None]  # [1, N, D]


def _grid_for(n: int, grid) -> tuple[int, int]:
    if grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} tokens do not fold onto a square grid; pass grid=(rows, cols) "
                             "with rows * cols == N.")
        return side, side
    if len(grid) != 2 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be (rows, cols) of positive ints, got {grid!r}")
    rows, cols = int(grid[0]), int(grid[1])
    if rows * cols != n:
        raise ValueError(f"grid {rows}x{cols} holds {rows * cols} tokens but got N={n}")
    return rows, cols


def fold_tokens(weights, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Fold one weight per token back onto the token grid: ``[N] -> [h_t, w_t]``.

    A ``[1, N]`` batch of one is accepted; an ``[h_t, w_t]`` map is returned as it is (after
    checking it against ``grid`` when given).
    """
    w = _numpy(weights, "weights")
    if w.ndim == 2 and w.shape[0] == 1 and grid is not None and grid[0] != 1:
        w = w[0]
    if w.ndim == 2:
        if grid is not None and tuple(int(g) for g in grid) != w.shape:
            raise ValueError(f"weights already have grid shape {w.shape} but grid={tuple(grid)}")
        return w.astype(np.float32)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"token weights must be [N] or [h_t, w_t], got shape {w.shape}; "
                         "pick one image (and one head / one query) first.")
    rows, cols = _grid_for(w.size, grid)
    return rearrange(w, "(h w) -> h w", h=rows, w=cols).astype(np.float32)


def _check_ax_count(n: int, what: str) -> None:
    if n < 1:
        raise ValueError(f"nothing to plot: {what} is empty")


def _draw_map(fig: Figure, ax, img: np.ndarray, wmap: np.ndarray, *, signed, cmap, alpha,
              interpolation: str, title: str | None, colorbar: bool, gray: bool):
    """Photo with a token map stretched over it (upsampled by imshow to the photo's size)."""
    H, W, _ = img.shape
    if signed is None:
        signed = bool(np.nanmin(wmap) < 0)
    if signed:
        lim = float(np.nanmax(np.abs(wmap))) or 1.0
        vmin, vmax, cmap = -lim, lim, cmap or SIGNED_CMAP
    else:
        vmin, vmax, cmap = float(np.nanmin(wmap)), float(np.nanmax(wmap)), cmap or POSITIVE_CMAP
        if vmax <= vmin:
            vmax = vmin + 1e-12
    base = img.mean(-1) if gray else img
    ax.imshow(base, cmap="gray" if gray else None, vmin=0, vmax=1)
    im = ax.imshow(wmap, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha,
                   extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation=interpolation)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    return im


def _mark_token(ax, img: np.ndarray, grid: tuple[int, int], token: tuple[int, int],
                color: str = "lime") -> None:
    H, W, _ = img.shape
    ph, pw = H / grid[0], W / grid[1]
    r, c = token
    ax.add_patch(Rectangle((c * pw - 0.5, r * ph - 0.5), pw, ph, fill=False, lw=2,
                           edgecolor=color))


def _token_rc(query, grid: tuple[int, int]) -> tuple[int, int]:
    rows, cols = grid
    if isinstance(query, (int, np.integer)):
        if not 0 <= query < rows * cols:
            raise ValueError(f"query token {query} is out of range for N={rows * cols}")
        return divmod(int(query), cols)
    if isinstance(query, Sequence) and len(query) == 2:
        r, c = (int(q) for q in query)
        if not (0 <= r < rows and 0 <= c < cols):
            raise ValueError(f"query (row, col)={tuple(query)} is outside the {rows}x{cols} grid")
        return r, c
    raise ValueError(f"a query is a token index or a (row, col) pair, got {query!r}")


def plot_patches(image, patch_size: int, n_show: int = 16, title: str | None = None) -> Figure:
    """The photo with its patch grid, above the first ``n_show`` patches as a token sequence."""
    img = to_image(image)
    patches = patchify(img, patch_size)
    if n_show < 1:
        raise ValueError(f"n_show must be >= 1, got {n_show}")
    n_show = min(n_show, len(patches))
    H, W, _ = img.shape
    rows, cols = H // patch_size, W // patch_size
    fig = Figure(figsize=(max(6.0, 0.55 * n_show), 6.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.6, 1.0])
    ax = top.subplots()
    ax.imshow(img)
    for r in range(1, rows):
        ax.axhline(r * patch_size - 0.5, color="white", lw=0.8)
    for c in range(1, cols):
        ax.axvline(c * patch_size - 0.5, color="white", lw=0.8)
    for i in range(n_show):
        r, c = divmod(i, cols)
        ax.text(c * patch_size + patch_size / 2, r * patch_size + patch_size / 2, str(i),
                ha="center", va="center", color="yellow", fontsize=7, fontweight="bold")
    ax.set_title(title or f"{H}x{W} photo -> {rows}x{cols} = {rows * cols} patches of "
                 f"{patch_size}x{patch_size}x3", fontsize=10)
    ax.set_axis_off()
    axes = np.atleast_1d(bottom.subplots(1, n_show))
    for i, a in enumerate(axes):
        a.imshow(patches[i])
        a.set_title(str(i), fontsize=7)
        a.set_axis_off()
    bottom.suptitle(f"the token sequence (first {n_show} of {len(patches)}, raster order)",
                    fontsize=9)
    return fig


def plot_token_map(image, weights, grid: tuple[int, int] | None = None, *,
                   title: str | None = None, signed: bool | None = None,
                   cmap: str | None = None, alpha: float = 0.6,
                   interpolation: str = "nearest", gray: bool = True,
                   figsize: tuple[float, float] = (4.6, 4.0)) -> Figure:
    """One weight per token, folded to the token grid and laid over the photo, with a colorbar.

    Signed weights (any negative, or ``signed=True``) use a diverging colormap centred on 0;
    non-negative ones a sequential colormap. ``interpolation="bilinear"`` smooths the upsampling;
    the default ``"nearest"`` shows one flat tile per token, which is what the model sees.
    """
    img = to_image(image)
    wmap = fold_tokens(weights, grid)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (overlay opacity) must be in [0, 1], got {alpha}")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    _draw_map(fig, ax, img, wmap, signed=signed, cmap=cmap, alpha=alpha,
              interpolation=interpolation, title=title, colorbar=True, gray=gray)
    return fig


def plot_query_attention(image, attn, queries, grid: tuple[int, int] | None = None, *,
                         head: int | None = None, alpha: float = 0.65,
                         interpolation: str = "nearest", gray: bool = True,
                         titles: Sequence[str] | None = None,
                         panel_size: float = 3.6) -> Figure:
    """Where chosen query patches look: one row of an attention matrix per panel, on the photo.

    Args:
        image: the photo the tokens came from.
        attn: ``[N, N]``, ``[h, N, N]`` or ``[1, h, N, N]`` attention (rows: queries). With heads,
            ``head`` picks one; by default the heads are averaged.
        queries: a list of token indices or ``(row, col)`` pairs on the token grid (a single
            int is fine; wrap a single pair: ``[(r, c)]``); each gets a panel with its patch
            outlined in green.
        grid: the token grid ``(rows, cols)``; default square.
    """
    img = to_image(image)
    a = _numpy(attn, "attn")
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        if head is None:
            a = a.mean(0)
        elif not 0 <= head < a.shape[0]:
            raise ValueError(f"head={head} but the attention has {a.shape[0]} heads")
        else:
            a = a[head]
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"attn must be [N, N], [h, N, N] or [1, h, N, N], got {a.shape}")
    if isinstance(queries, (int, np.integer)):
        queries = [queries]
    queries = list(queries)
    _check_ax_count(len(queries), "queries")
    if titles is not None and len(titles) != len(queries):
        raise ValueError(f"got {len(titles)} titles for {len(queries)} queries")
    g = _grid_for(a.shape[0], grid)
    cells = [_token_rc(q, g) for q in queries]
    if panel_size <= 0:
        raise ValueError(f"panel_size must be positive, got {panel_size}")
    fig = Figure(figsize=(1.08 * panel_size * len(cells), panel_size), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(cells)))
    for i, (ax, (r, c)) in enumerate(zip(axes, cells)):
        row = a[r * g[1] + c].reshape(g)
        title = titles[i] if titles else f"query patch (row {r}, col {c})"
        _draw_map(fig, ax, img, row, signed=False, cmap=None, alpha=alpha,
                  interpolation=interpolation, title=title, colorbar=True, gray=gray)
        _mark_token(ax, img, g, (r, c))
    return fig


def plot_mechanisms(images, maps, grid: tuple[int, int] | None = None, *,
                    highlight: Mapping[str, object] | None = None,
                    row_titles: Sequence[str] | None = None, alpha: float = 0.65,
                    interpolation: str = "nearest", gray: bool = True,
                    panel_size: float = 3.3) -> Figure:
    """Several token maps of one photo side by side, the photo first: one row per photo.

    Args:
        images: one photo, or a list of photos (one row each).
        maps: ``{name: weights}`` for one photo, or a list of such dicts (one per photo). Each map
            is ``[N]`` or ``[h_t, w_t]`` and gets its own colorbar (diverging when signed).
        highlight: ``{name: query}`` outlines a query patch on that map (for an MHSA row).
        row_titles: a title for each photo's first panel.
        panel_size: height of a panel in inches (smaller panels make smaller PNGs).
    """
    single = isinstance(maps, Mapping)
    images = [images] if single else list(images)
    maps = [maps] if single else list(maps)
    _check_ax_count(len(images), "images")
    if len(images) != len(maps):
        raise ValueError(f"got {len(images)} images but {len(maps)} dicts of maps")
    names = list(maps[0])
    _check_ax_count(len(names), "maps")
    if any(list(m) != names for m in maps):
        raise ValueError("every photo needs the same map names in the same order, "
                         f"expected {names}")
    if row_titles is not None and len(row_titles) != len(images):
        raise ValueError(f"got {len(row_titles)} row_titles for {len(images)} images")
    unknown = set(highlight or {}) - set(names)
    if unknown:
        raise ValueError(f"highlight names {sorted(unknown)} are not among the maps {names}")
    ncols = 1 + len(names)
    if panel_size <= 0:
        raise ValueError(f"panel_size must be positive, got {panel_size}")
    fig = Figure(figsize=(1.1 * panel_size * ncols, panel_size * len(images)),
                 layout="constrained")
    axes = np.array(fig.subplots(len(images), ncols)).reshape(len(images), ncols)
    for i, (image, row_maps) in enumerate(zip(images, maps)):
        img = to_image(image)
        axes[i, 0].imshow(img)
        axes[i, 0].set_axis_off()
        axes[i, 0].set_title(row_titles[i] if row_titles else "photo", fontsize=10)
        for j, name in enumerate(names, start=1):
            wmap = fold_tokens(row_maps[name], grid)
            _draw_map(fig, axes[i, j], img, wmap, signed=None, cmap=None, alpha=alpha,
                      interpolation=interpolation, title=name if i == 0 else None,
                      colorbar=True, gray=gray)
            if highlight and name in highlight:
                _mark_token(axes[i, j], img, wmap.shape, _token_rc(highlight[name], wmap.shape))
    return fig


def image_grid(images, titles: Sequence[str] | None = None, ncols: int = 4, *,
               panel_size: float = 2.6, suptitle: str | None = None,
               cmap: str | None = None) -> Figure:
    """Images (photos, or 2-D maps drawn with ``cmap``) in a grid with optional titles."""
    images = list(images)
    _check_ax_count(len(images), "images")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows + (0.4 if suptitle else 0)),
                 layout="constrained")
    axes = np.array(fig.subplots(nrows, ncols)).reshape(-1)
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= len(images):
            continue
        arr = _numpy(images[i], "image") if hasattr(images[i], "shape") else None
        if arr is not None and arr.ndim == 2 and cmap is not None:
            ax.imshow(arr, cmap=cmap)
        else:
            ax.imshow(to_image(images[i]))
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if ok.sum() >= 2 else math.nan


def plot_curves(x, ys: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str,
                title: str | None = None, log: bool = True, fit: bool = False,
                figsize: tuple[float, float] = (5.6, 4.0)) -> Figure:
    """Curves sharing one x axis, e.g. cost against N; log-log by default.

    With ``fit=True`` each legend entry carries the slope of a straight-line fit in log-log
    space: the exponent ``k`` of ``y ~ x^k`` (1 for linear cost, 2 for quadratic). NaN values
    are left out (e.g. a size that was too large to run).
    """
    xs = np.asarray(_numpy(x, "x"), dtype=float)
    if xs.ndim != 1 or xs.size < 1:
        raise ValueError(f"x must be a non-empty 1-D sequence, got shape {xs.shape}")
    if not isinstance(ys, Mapping) or not ys:
        raise ValueError("ys must be a non-empty {label: values} mapping")
    if log and np.any(xs <= 0):
        raise ValueError("log axes need x > 0; pass log=False for other data")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    for label, values in ys.items():
        y = np.asarray(_numpy(values, f"ys[{label!r}]"), dtype=float)
        if y.shape != xs.shape:
            raise ValueError(f"ys[{label!r}] has {y.shape} values but x has {xs.shape}")
        if fit:
            label = f"{label} (slope {_slope(xs, y):.2f})"
        ax.plot(xs, y, marker="o", label=label)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both" if log else "major", alpha=0.3)
    ax.legend(fontsize=9)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


# ------------------------------------------------------------------------- display

SHOW_FORMATS = ("jpeg", "png")


def show(fig: Figure, format: str = "jpeg", *, quality: int = 85, dpi: float | None = None,
         palette: bool = True):
    """A figure encoded for a notebook: ``display(viz.show(fig))``.

    Photos are what make notebooks heavy: a photo figure as JPEG (``quality`` 85) is about a
    fifth of its PNG. Line plots, bar charts and heatmaps keep sharp edges and flat colours,
    which JPEG blurs: show them with ``format="png"``, by default reduced to a palette of 256
    colours (a third of a plain PNG, no visible change; ``palette=False`` keeps every colour).

    The figure is rendered as IPython's inline backend renders it (``bbox_inches="tight"``, at
    ``fig.dpi`` unless ``dpi`` is given), flattened onto white. A figure made with pyplot is
    closed afterwards, as ``plt.show()`` does, so the inline backend does not show it twice;
    library figures (:class:`matplotlib.figure.Figure`) are left as they are.

    Returns:
        an ``IPython.display.Image`` (its ``data`` holds the JPEG or PNG bytes).

    Raises:
        ValueError: for a format other than ``"jpeg"`` / ``"png"``, a quality outside 1-95, a
            non-positive dpi, or a figure without axes.
    """
    fmt = {"jpg": "jpeg"}.get(str(format).lower(), str(format).lower())
    if fmt not in SHOW_FORMATS:
        raise ValueError(f"format must be 'jpeg' (photo figures) or 'png' (line plots), "
                         f"got {format!r}")
    if fmt == "jpeg" and not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 95):
        raise ValueError(f"JPEG quality must be an int in 1-95, got {quality!r}")
    if dpi is not None and not dpi > 0:
        raise ValueError(f"dpi must be positive, got {dpi!r}")
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if not fig.axes:
        raise ValueError("the figure has no axes: nothing to show")
    from IPython.display import Image as IPythonImage

    buf = io.BytesIO()  # the same call as IPython's inline backend (pylabtools.print_figure)
    fig.canvas.print_figure(buf, format="png", dpi=dpi or fig.dpi, bbox_inches="tight",
                            facecolor=fig.get_facecolor(), edgecolor=fig.get_edgecolor())
    data = _encode(buf.getvalue(), fmt, quality=int(quality), palette=palette)
    pyplot = sys.modules.get("matplotlib.pyplot")  # never imported here: only closed if in use
    if pyplot is not None and getattr(fig.canvas, "manager", None) is not None:
        pyplot.close(fig)
    return IPythonImage(data=data, format=fmt)


def _encode(png: bytes, fmt: str, *, quality: int = 85, palette: bool = True) -> bytes:
    """A rendered PNG re-encoded for display: flattened onto white, then JPEG or (palette) PNG."""
    from PIL import Image

    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    out = io.BytesIO()
    if fmt == "jpeg":
        rgb.save(out, format="JPEG", quality=quality, optimize=True)
    else:
        (rgb.quantize(256) if palette else rgb).save(out, format="PNG", optimize=True)
    return out.getvalue()


def run_guarded(error, fn):
    """Run a widget callback ``fn``; show any exception in the HTML widget ``error`` (cleared
    first), then re-raise it, so nbval and the browser test see it too."""
    import html

    try:
        error.value = ""
        return fn()
    except Exception as exc:
        error.value = (f"<pre style='color:#b00'>{html.escape(type(exc).__name__)}: "
                       f"{html.escape(str(exc))}</pre>")
        raise
