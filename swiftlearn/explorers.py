"""Explorers for the attention mechanisms: thin ipywidgets wrappers over
:mod:`swiftlearn.attention`.

One per notebook, each on real photos (pick one, or bring your own: a path with
:meth:`add_photo`, or the upload button):

* :class:`AttentionExplorer` (01): one row of MHSA's attention matrix, for a query patch chosen
  by (row, col) sliders, one head of ``h``, and a softmax temperature ``tau``.
* :class:`ContextExplorer` (02): separable attention's context scores ``c = softmax_N(X W_I)``
  with the scorer ``W_I`` set to one patch's token (so ``c`` is that patch's attention row).
* :class:`AlphaExplorer` (03): a model's token weights ``alpha`` at a chosen stage, under each
  formulation (``normalize``, ``softmax``, ``legacy_softmax``) of the same scores.
* :class:`ClassifyExplorer` (01's top-down start): a model's top-5 for a photo and the ``alpha``
  maps of its last stages.

Figures are ``matplotlib.figure.Figure`` objects from the pure functions below
(:func:`query_figure`, :func:`alpha_figure`, :func:`classify_figure`), rendered to PNG inside the
callback: no pyplot state, which JupyterLab's widget thread could race with. An exception in a
callback is shown in the explorer's ``error`` element and re-raised, never swallowed.

Drive one from Python (this is what the tests do)::

    explorer = AttentionExplorer(photos)
    explorer.col.value = 3            # redraws synchronously
    explorer.state()                  # the control values
    explorer.png                      # the PNG bytes of the figure
    explorer.readout.value            # the numbers (HTML <pre>)
"""

from __future__ import annotations

import copy
import html
import io
import math
import os
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from . import viz
from .attention import FORMULATIONS, SeparableSelfAttention
from .data import IMAGENETTE_CLASSES
from .data.datasets import _as_rgb
from .utils import normalize

__all__ = [
    "AlphaExplorer",
    "AttentionExplorer",
    "ClassifyExplorer",
    "ContextExplorer",
    "alpha_figure",
    "classify",
    "classify_figure",
    "load_image",
    "query_figure",
    "stage_tokens",
]

SIZE = 224  # photos are centre-cropped and resized to SIZE x SIZE
FIGURE_DPI = 72  # small PNGs keep a widget round trip fast
STYLE = {"description_width": "100px"}


# ---------------------------------------------------------------- photos


def load_image(source) -> np.ndarray:
    """An RGB ``uint8`` ``[H, W, 3]`` image from a path, encoded bytes (an upload), a PIL image,
    a :class:`swiftlearn.data.Photo` or an array.

    Decoded images go through the training data's conversion (``swiftlearn.data``'s
    ``_as_rgb``), so a 16-bit greyscale PNG is scaled to 8 bits as in training instead of
    clipped to white by PIL's own ``convert("RGB")``.

    Raises:
        FileNotFoundError: for a path that is not a file.
        ValueError: for bytes or data that are not an image.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no photo at {path}: give the path of a .jpg or .png file")
        try:
            with Image.open(path) as im:
                return np.asarray(_as_rgb(im))
        except OSError as e:
            raise ValueError(f"{path} is not an image PIL can read ({e})") from e
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(source))) as im:
                return np.asarray(_as_rgb(im))
        except OSError as e:
            raise ValueError(f"the uploaded file is not an image PIL can read ({e})") from e
    if isinstance(source, Image.Image):
        return np.asarray(_as_rgb(source))
    return (viz.to_image(source) * 255).round().astype(np.uint8)


def _photo_dict(photos) -> dict[str, np.ndarray]:
    """``{name: [SIZE, SIZE, 3] uint8}`` from Photos, ``(name, image)`` pairs or a dict."""
    items = photos.items() if isinstance(photos, dict) else photos
    out: dict[str, np.ndarray] = {}
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2:
            name, image = item
        else:
            name, image = getattr(item, "name", f"photo {i + 1}"), item
        out[str(name)] = viz.square(load_image(image), SIZE)
    if not out:
        raise ValueError("no photos given: pass swiftlearn.data.load_photos() or (name, image) "
                         "pairs")
    return out


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    return buf.getvalue()


def _effective_tokens(weights: np.ndarray) -> float:
    """``1 / sum(p^2)`` of weights normalised to sum 1: how many tokens share the weight."""
    w = np.abs(weights) / max(float(np.abs(weights).sum()), 1e-12)
    return 1.0 / max(float((w**2).sum()), 1e-12)


# ---------------------------------------------------------------- model helpers


def _model_input(model, image) -> torch.Tensor:
    param = next(model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(viz.square(image, SIZE))).permute(2, 0, 1)[None]
    return normalize(x).to(param.device, param.dtype)  # [1, 3, 224, 224]


def _class_names(model, n: int) -> list[str]:
    names = getattr(model, "classes", None)
    if names and len(names) == n:
        return [str(c) for c in names]
    if n == len(IMAGENETTE_CLASSES):
        return [name for _, name in IMAGENETTE_CLASSES]
    return [f"class {i}" for i in range(n)]


@torch.no_grad()
def stage_tokens(model, image) -> tuple[list[torch.Tensor], list[tuple[int, int]], torch.Tensor]:
    """What each stage's attention block receives, from one forward pass of a SwiftFormer.

    Returns ``(tokens, grids, logits)``: per stage whose encoder has an additive attention the
    tokens ``[1, N_s, C_s]`` entering it (after the local representation), the grids
    ``(h_s, w_s)``, and the logits ``[1, classes]``.
    """
    if not hasattr(model, "encoders"):
        raise ValueError(f"model must be a swiftlearn SwiftFormer, got {type(model).__name__}")
    captured: list[torch.Tensor] = []
    grids: list[tuple[int, int]] = []
    hooks = []
    for encoder in model.encoders():
        if not hasattr(encoder.attn, "token_weights"):
            continue  # a stage without an additive attention has no alpha to show
        hooks.append(encoder.attn.register_forward_pre_hook(
            lambda _m, args: captured.append(args[0].detach().float().cpu())))
        hooks.append(encoder.local_representation.register_forward_hook(
            lambda _m, _args, out: grids.append(tuple(out.shape[-2:]))))
    try:
        logits = model(_model_input(model, image)).float().cpu()
    finally:
        for h in hooks:
            h.remove()
    if not captured:
        raise ValueError("this model has no additive-attention stage (mixer_stages is empty?)")
    return captured, grids, logits


def classify(model, image, k: int = 5) -> list[tuple[str, float]]:
    """The model's top-``k`` classes for a photo: ``[(name, probability), ...]``."""
    with torch.no_grad():
        probs = model(_model_input(model, image)).float().softmax(-1)[0].cpu()
    names = _class_names(model, probs.numel())
    top = probs.topk(min(k, probs.numel()))
    return [(names[i], float(p)) for p, i in zip(top.values, top.indices)]


# ---------------------------------------------------------------- figures (pure)


def query_figure(image, weights, grid: tuple[int, int], query: tuple[int, int], *,
                 title: str, panel_size: float = 3.4) -> Figure:
    """The photo with a query patch outlined, beside one weight per token over the photo."""
    img = viz.to_image(image)
    wmap = viz.fold_tokens(weights, grid)
    fig = Figure(figsize=(2.15 * panel_size, panel_size), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    ax0.imshow(img)
    ax0.set_axis_off()
    ax0.set_title(f"query patch (row {query[0]}, col {query[1]})", fontsize=10)
    viz._mark_token(ax0, img, grid, query)
    viz._draw_map(fig, ax1, img, wmap, signed=None, cmap=None, alpha=0.65,
                  interpolation="nearest", title=title, colorbar=True, gray=True)
    viz._mark_token(ax1, img, grid, query)
    return fig


def alpha_figure(image, scores, alpha, grid: tuple[int, int], *, formulation: str,
                 title: str = "photo", panel_size: float = 3.0) -> Figure:
    """Photo | the scores ``s`` (signed) | the weights ``alpha`` one formulation makes of them."""
    img = viz.to_image(image)
    smap, amap = viz.fold_tokens(scores, grid), viz.fold_tokens(alpha, grid)
    fig = Figure(figsize=(3.3 * panel_size, panel_size), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(img)
    axes[0].set_axis_off()
    axes[0].set_title(title, fontsize=10)
    viz._draw_map(fig, axes[1], img, smap, signed=True, cmap=None, alpha=0.65,
                  interpolation="nearest", title="scores s = q̂ w_g / √d", colorbar=True,
                  gray=True)
    flat = float(np.ptp(amap)) < 1e-6  # legacy_softmax: every weight is exactly 1
    viz._draw_map(fig, axes[2], img, amap, signed=None if not flat else False, cmap=None,
                  alpha=0.65, interpolation="nearest",
                  title=f"α ({formulation})" + (f": all {amap.flat[0]:g}" if flat else ""),
                  colorbar=not flat, gray=True)  # one value: a colorbar would show noise
    return fig


def classify_figure(image, top: list[tuple[str, float]], maps: dict[str, object], *,
                    panel_size: float = 2.8) -> Figure:
    """The photo, the model's top-k as bars, and token maps (``{title: [h, w]}``) on the photo."""
    img = viz.to_image(image)
    if not top:
        raise ValueError("top is empty: nothing to show")
    ncols = 2 + len(maps)
    fig = Figure(figsize=(1.2 * panel_size * ncols, panel_size), layout="constrained")
    axes = fig.subplots(1, ncols, width_ratios=[1, 1.3] + [1] * len(maps))
    axes[0].imshow(img)
    axes[0].set_axis_off()
    axes[0].set_title("photo", fontsize=10)
    names = [n for n, _ in top][::-1]
    probs = [100 * p for _, p in top][::-1]
    axes[1].barh(range(len(names)), probs, color=["0.65"] * (len(names) - 1) + ["tab:green"])
    axes[1].set_yticks(range(len(names)), names, fontsize=9)
    axes[1].set_xlim(0, 100)
    axes[1].set_xlabel("probability (%)")
    axes[1].set_title(f"top-{len(top)}", fontsize=10)
    for ax, (name, wmap) in zip(axes[2:], maps.items()):
        viz._draw_map(fig, ax, img, viz.fold_tokens(wmap), signed=None, cmap=None, alpha=0.65,
                      interpolation="nearest", title=name, colorbar=True, gray=True)
    return fig


# ---------------------------------------------------------------- the common frame


class _Explorer:
    """Photo picker (dropdown + upload), figure, readout, error line, and the guarded redraw.

    Subclasses build their controls, call :meth:`_finish` with them, and implement
    :meth:`render` (-> ``(Figure, readout text)``).
    """

    tag = "explorer"  # CSS classes: swiftlearn-<tag>-figure, -readout, -error, -<control>

    def __init__(self, photos):
        self.photos = _photo_dict(photos)
        self.photo = widgets.Dropdown(options=list(self.photos), description="photo",
                                      style=STYLE, layout=widgets.Layout(width="330px"))
        self.upload = widgets.FileUpload(accept="image/*", multiple=False,
                                         description="your photo")
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        self.error = widgets.HTML()
        self._quiet = False
        self.upload.observe(lambda change: self._guard(self._on_upload), names="value")

    def _finish(self, controls: dict[str, widgets.Widget], rows: list) -> None:
        self.controls = {"photo": self.photo, **controls}
        for name, w in {**self.controls, "upload": self.upload}.items():
            w.add_class(f"swiftlearn-{self.tag}-{name}")
        for w, what in ((self.image, "figure"), (self.readout, "readout"),
                        (self.error, "error")):
            w.add_class(f"swiftlearn-{self.tag}-{what}")
        for w in self.controls.values():
            w.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.photo, self.upload]), *rows,
                                    self.error, self.image, self.readout])
        self.update()

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict:
        """The value of every control, by name."""
        return {name: w.value for name, w in self.controls.items()}

    @property
    def png(self) -> bytes:
        """The PNG bytes of the figure now shown."""
        return bytes(self.image.value)

    @property
    def current_image(self) -> np.ndarray:
        """The chosen photo, ``[224, 224, 3]`` uint8."""
        return self.photos[self.photo.value]

    def add_photo(self, source, name: str | None = None) -> str:
        """Add a photo (a path, encoded bytes, an array ...; see :func:`load_image`), select it
        and redraw. Returns the name it is listed under."""
        image = viz.square(load_image(source), SIZE)
        if name is None:
            name = Path(source).name if isinstance(source, (str, os.PathLike)) else "your photo"
        base, i = name, 2
        while name in self.photos:
            name, i = f"{base} ({i})", i + 1
        self.photos[name] = image
        self._quiet = True  # new options reset the selection: no redraw for that
        try:
            self.photo.options = list(self.photos)
        finally:
            self._quiet = False
        self.photo.value = name  # redraws
        return name

    def _on_upload(self) -> None:
        files = self.upload.value
        if not files:
            return
        f = files[-1]
        self.add_photo(f["content"], name=f.get("name") or "your photo")

    # -- callbacks --------------------------------------------------------------------------
    def _guard(self, fn):
        """Run a callback; show any exception in the error element, then re-raise it."""
        return viz.run_guarded(self.error, fn)

    def _on_change(self, change=None):
        if not self._quiet:
            self._guard(self.update)

    def update(self) -> None:
        """Redraw the figure and the readout for the current controls."""
        fig, text = self.render()
        self.image.value = _png(fig)
        self.text = text  # the readout as plain text
        self.readout.value = "<pre>" + html.escape(text) + "</pre>"

    def render(self) -> tuple[Figure, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _slider(description: str, value: int, maximum: int) -> widgets.IntSlider:
    return widgets.IntSlider(value=value, min=0, max=maximum, description=description,
                             continuous_update=False, style=STYLE,
                             layout=widgets.Layout(width="330px"))


def _temperature(value: float) -> widgets.FloatLogSlider:
    return widgets.FloatLogSlider(value=value, base=2, min=-2, max=3, step=0.25,
                                  description="temperature τ", continuous_update=False,
                                  readout_format=".2f", style=STYLE,
                                  layout=widgets.Layout(width="330px"))


# ---------------------------------------------------------------- 01: MHSA


class AttentionExplorer(_Explorer):
    """One row of self-attention ``softmax(q_i K^T / (tau sqrt(d)))`` on a photo (notebook 01).

    The tokens are notebook 01's: learning-free (``viz.photo_tokens``: a 4 x 4 colour thumbnail
    of each 16 px patch plus a position code, D = 64) or, with a ``model``, its learned stage-3
    tokens (``viz.feature_tokens``, D = 112 for XS), both on the 14 x 14 grid. The projections are
    identities (``Q = K = X``), as in the notebook's hand-set heads: head ``j`` of ``h`` compares
    dimensions ``j D/h ... (j+1) D/h - 1`` only (for the learning-free tokens with h = 4: the red,
    green and blue thumbnails, then the position); "all" is a single head over all D.

    Controls: ``photo``, ``tokens``, ``row``, ``col`` (the query patch), ``head``,
    ``temperature``.
    """

    tag = "attention"

    def __init__(self, photos, model=None, heads: int = 4, query: tuple[int, int] = (7, 7),
                 head: int | None = None, temperature: float = 1.0):
        super().__init__(photos)
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        # every token source must split into the heads, checked now, not at the first choice
        dims = {"learning-free": 3 * 4 ** 2 + 16}  # viz.photo_tokens' D
        if model is not None:
            dims["learned (stage 3)"] = model.widths[2]
        bad = {name: d for name, d in dims.items() if d % heads}
        if bad:
            fits = sorted(h for h in range(1, 17) if all(d % h == 0 for d in dims.values()))
            raise ValueError(f"heads={heads} does not divide the token width "
                             + ", ".join(f"D={d} ({name})" for name, d in bad.items())
                             + f"; choose one of {fits}")
        self.model, self.heads = model, int(heads)
        self._tokens: dict[tuple[str, str], torch.Tensor] = {}
        grid = SIZE // 16
        if not (0 <= query[0] < grid and 0 <= query[1] < grid):
            raise ValueError(f"query {query} is outside the {grid} x {grid} grid")
        sources = ["learning-free"] + (["learned (stage 3)"] if model is not None else [])
        self.tokens = widgets.ToggleButtons(options=sources, description="tokens", style=STYLE)
        self.row = _slider("query row", query[0], grid - 1)
        self.col = _slider("query col", query[1], grid - 1)
        self.head = widgets.Dropdown(
            options=[("all (one head)", -1)] + [(f"head {j + 1} of {heads}", j)
                                                for j in range(heads)],
            value=-1 if head is None else head, description="head", style=STYLE)
        self.temperature = _temperature(temperature)
        self._finish({"tokens": self.tokens, "row": self.row, "col": self.col,
                      "head": self.head, "temperature": self.temperature},
                     [self.tokens, widgets.HBox([self.row, self.col]),
                      widgets.HBox([self.head, self.temperature])])

    def token_matrix(self) -> torch.Tensor:
        """The chosen photo's tokens ``[1, N, D]`` (cached)."""
        key = (self.photo.value, self.tokens.value)
        if key not in self._tokens:
            img = self.current_image
            self._tokens[key] = (viz.photo_tokens(img) if self.tokens.value == "learning-free"
                                 else viz.feature_tokens(self.model, img, stage=3))
        return self._tokens[key]

    def attention_row(self) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """``(weights [N], grid, dims)``: the query's attention row and the dims compared."""
        x = self.token_matrix()[0]  # [N, D]
        N, D = x.shape
        side = math.isqrt(N)
        j = self.head.value
        if j >= 0:
            if D % self.heads:
                raise ValueError(f"{self.heads} heads do not divide D={D}")
            d = D // self.heads
            lo, hi = j * d, (j + 1) * d
        else:
            lo, hi = 0, D
        xh = x[:, lo:hi]  # [N, d]
        i = self.row.value * side + self.col.value
        scores = xh @ xh[i] / (self.temperature.value * math.sqrt(hi - lo))  # [N, d] @ [d] -> [N]
        return scores.softmax(0).numpy(), (side, side), (lo, hi)

    def render(self):
        weights, grid, (lo, hi) = self.attention_row()
        r, c = self.row.value, self.col.value
        tau = self.temperature.value
        head = "all dims" if self.head.value < 0 else f"head {self.head.value + 1}"
        fig = query_figure(self.current_image, weights, grid, (r, c),
                           title=f"attention row, {head}, τ = {tau:.2f}")
        i = r * grid[1] + c
        others = weights.copy()
        others[i] = -1
        j = int(others.argmax())
        text = "\n".join([
            f"{self.tokens.value} tokens, query patch (row {r}, col {c}) = token {i} of "
            f"{weights.size}; {head}: dims {lo}-{hi - 1} (d = {hi - lo}), τ = {tau:.2f}",
            f"weight on itself {weights[i]:.3f}; largest elsewhere {weights[j]:.3f} at "
            f"(row {j // grid[1]}, col {j % grid[1]}); the row sums to {weights.sum():.3f}",
            f"effective number of tokens 1/Σa² = {_effective_tokens(weights):.1f} of "
            f"{weights.size}",
        ])
        return fig, text


# ---------------------------------------------------------------- 02: separable


class ContextExplorer(_Explorer):
    """Separable attention's context scores ``c = softmax_N(X W_I / tau)`` (notebook 02).

    The scorer ``W_I`` is the token of a chosen patch over ``sqrt(D)`` (its bias 0), set into a
    :class:`swiftlearn.SeparableSelfAttention`, so ``c`` is exactly that patch's row of the
    single-head attention of notebook 01: one learned query instead of N. Tokens as in
    :class:`AttentionExplorer`. Controls: ``photo``, ``tokens``, ``row``, ``col``,
    ``temperature``.
    """

    tag = "context"

    def __init__(self, photos, model=None, query: tuple[int, int] = (7, 7),
                 temperature: float = 1.0):
        super().__init__(photos)
        self.model = model
        self._tokens: dict[tuple[str, str], torch.Tensor] = {}
        grid = SIZE // 16
        if not (0 <= query[0] < grid and 0 <= query[1] < grid):
            raise ValueError(f"query {query} is outside the {grid} x {grid} grid")
        sources = ["learning-free"] + (["learned (stage 3)"] if model is not None else [])
        self.tokens = widgets.ToggleButtons(options=sources, description="tokens", style=STYLE)
        self.row = _slider("scorer row", query[0], grid - 1)
        self.col = _slider("scorer col", query[1], grid - 1)
        self.temperature = _temperature(temperature)
        self._finish({"tokens": self.tokens, "row": self.row, "col": self.col,
                      "temperature": self.temperature},
                     [self.tokens, widgets.HBox([self.row, self.col]), self.temperature])

    token_matrix = AttentionExplorer.token_matrix

    def context_scores(self) -> tuple[np.ndarray, tuple[int, int]]:
        """``(c [N], grid)`` from the library's separable attention with the chosen scorer."""
        x = self.token_matrix()  # [1, N, D]
        N, D = x.shape[1:]
        side = math.isqrt(N)
        i = self.row.value * side + self.col.value
        layer = SeparableSelfAttention(D).eval()
        with torch.no_grad():
            layer.qkv_proj.weight[0] = x[0, i] / (math.sqrt(D) * self.temperature.value)
            layer.qkv_proj.bias[0] = 0.0
            _, c = layer(x, return_attention=True)  # [1, N]
        return c[0].numpy(), (side, side)

    def render(self):
        c, grid = self.context_scores()
        r, col = self.row.value, self.col.value
        tau = self.temperature.value
        fig = query_figure(self.current_image, c, grid, (r, col),
                           title=f"context scores c, W_I = patch ({r}, {col}), τ = {tau:.2f}")
        j = int(c.argmax())
        text = "\n".join([
            f"{self.tokens.value} tokens, W_I = token of patch (row {r}, col {col}) / √D, "
            f"τ = {tau:.2f}",
            f"Σc = {c.sum():.3f} (one distribution over {c.size} tokens); largest "
            f"{c.max():.3f} at (row {j // grid[1]}, col {j % grid[1]})",
            f"effective number of tokens 1/Σc² = {_effective_tokens(c):.1f} of {c.size}; the "
            "context vector is Σ c_i k_i: one vector for the whole image",
        ])
        return fig, text


# ---------------------------------------------------------------- 03: additive


class AlphaExplorer(_Explorer):
    """A SwiftFormer's token weights ``alpha`` at one stage, under each formulation (notebook 03).

    One forward pass per photo records the tokens entering every stage's attention block; the
    block's own ``to_query`` and ``w_g`` give the scores ``s = q̂ w_g / sqrt(d)``, and the chosen
    formulation turns the same scores into ``alpha`` (``normalize``: ``s / ||s||``; ``softmax``
    over the tokens; ``legacy_softmax``: every weight 1). The model keeps the formulation it was
    built with; only the picture changes. Controls: ``photo``, ``stage``, ``formulation``.
    """

    tag = "alpha"

    def __init__(self, model, photos, stage: int | None = None,
                 formulation: str | None = None):
        super().__init__(photos)
        if not hasattr(model, "encoders"):
            raise ValueError(f"model must be a swiftlearn SwiftFormer, got "
                             f"{type(model).__name__}")
        self.model = model.eval()
        self._attns = [e.attn for e in model.encoders() if hasattr(e.attn, "token_weights")]
        if not self._attns:
            raise ValueError("this model has no additive-attention stage")
        self._cache: dict[str, tuple] = {}
        stages = list(range(1, len(self._attns) + 1))
        stage = stages[-1] if stage is None else stage
        if stage not in stages:
            raise ValueError(f"stage must be one of {stages}, got {stage}")
        formulation = formulation or self._attns[0].formulation
        if formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
        self.stage = widgets.SelectionSlider(options=stages, value=stage, description="stage",
                                             continuous_update=False, style=STYLE,
                                             layout=widgets.Layout(width="330px"))
        self.formulation = widgets.ToggleButtons(options=list(FORMULATIONS), value=formulation,
                                                 description="formulation", style=STYLE)
        self._finish({"stage": self.stage, "formulation": self.formulation},
                     [self.stage, self.formulation])

    def _forward(self):
        name = self.photo.value
        if name not in self._cache:
            self._cache[name] = stage_tokens(self.model, self.current_image)
        return self._cache[name]

    def scores_and_alpha(self) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """``(s [N], alpha [N], grid)`` at the chosen stage and formulation."""
        tokens, grids, _ = self._forward()
        s = self.stage.value - 1
        attn = copy.copy(self._attns[s])  # a shallow copy shares the weights
        attn.formulation = self.formulation.value
        param = attn.w_g
        with torch.no_grad():
            q = torch.nn.functional.normalize(attn.to_query(tokens[s].to(param.device,
                                                                          param.dtype)), dim=-1)
            scores = ((q @ attn.w_g) * attn.scale_factor)[0, :, 0]  # [N]
            alpha = attn.token_weights(q)[0, :, 0]  # [N]
        return scores.float().cpu().numpy(), alpha.float().cpu().numpy(), grids[s]

    def prediction(self) -> tuple[str, float]:
        _, _, logits = self._forward()
        probs = logits.softmax(-1)[0]
        i = int(probs.argmax())
        return _class_names(self.model, probs.numel())[i], float(probs[i])

    def render(self):
        scores, alpha, grid = self.scores_and_alpha()
        f = self.formulation.value
        name, p = self.prediction()
        fig = alpha_figure(self.current_image, scores, alpha, grid, formulation=f,
                           title=f"-> {name} ({100 * p:.0f} %)")
        trained_with = self._attns[self.stage.value - 1].formulation
        lines = [
            f"stage {self.stage.value}: {grid[0]} x {grid[1]} = {alpha.size} tokens; model "
            f"built with '{trained_with}', shown with '{f}'",
            f"scores s: min {scores.min():+.3f}, max {scores.max():+.3f}",
            f"alpha: min {alpha.min():+.4f}, max {alpha.max():+.4f}, Σα = {alpha.sum():.3f}, "
            f"Σα² = {(alpha**2).sum():.3f}",
        ]
        if f == "legacy_softmax":
            lines.append("softmax over a size-1 axis: every α is 1, g is the plain sum of the "
                         "queries, w_g gets no gradient")
        return fig, "\n".join(lines)


# ---------------------------------------------------------------- 01: the payoff first


class ClassifyExplorer(_Explorer):
    """A trained model's top-5 for a photo, and the ``alpha`` maps of its last stages.

    Controls: ``photo`` (and the upload button; or :meth:`add_photo` with a path).
    """

    tag = "classify"

    def __init__(self, model, photos, k: int = 5, stages=(3, 4)):
        super().__init__(photos)
        if not hasattr(model, "encoders"):
            raise ValueError(f"model must be a swiftlearn SwiftFormer, got "
                             f"{type(model).__name__}")
        self.model, self.k, self.stages = model.eval(), int(k), tuple(stages)
        self._finish({}, [])

    def result(self) -> tuple[list[tuple[str, float]], dict[str, np.ndarray]]:
        """``(top, maps)`` for the chosen photo: ``[(class, probability)] * k`` and
        ``{title: alpha [h_s, w_s]}`` of the chosen stages, from one forward pass."""
        img = self.current_image
        tokens, grids, logits = stage_tokens(self.model, img)
        probs = logits.softmax(-1)[0]
        names = _class_names(self.model, probs.numel())
        best = probs.topk(min(self.k, probs.numel()))
        top = [(names[i], float(p)) for p, i in zip(best.values, best.indices)]
        attns = [e.attn for e in self.model.encoders() if hasattr(e.attn, "token_weights")]
        shown = {}
        for s in self.stages:
            if not 1 <= s <= len(attns):
                raise ValueError(f"stage {s} is not among the model's {len(attns)} "
                                 "attention stages")
            attn, t = attns[s - 1], tokens[s - 1]
            param = attn.w_g
            with torch.no_grad():
                q = torch.nn.functional.normalize(attn.to_query(t.to(param.device, param.dtype)),
                                                  dim=-1)
                alpha = attn.token_weights(q)[0, :, 0].float().cpu().numpy()  # [N]
            shown[f"α, stage {s} ({grids[s - 1][0]}x{grids[s - 1][1]})"] = \
                alpha.reshape(grids[s - 1])
        return top, shown

    def render(self):
        top, shown = self.result()
        fig = classify_figure(self.current_image, top, shown)
        lines = [f"{self.photo.value}: top-{len(top)}"]
        lines += [f"  {100 * p:5.1f} %  {n}" for n, p in top]
        return fig, "\n".join(lines)

