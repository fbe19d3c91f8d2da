"""Drawn diagrams of the course: the efficient additive attention's data flow, the SwiftFormer
encoder block and the whole network, as boxes and arrows annotated with the tensor shapes (legend of
:mod:`swiftlearn.attention`).

Both functions return a :class:`matplotlib.figure.Figure` (no pyplot state). The committed
copies in ``assets/figures/diagrams/`` are made by ``python -m swiftlearn.diagrams`` (or
``make diagrams``), which writes each file atomically and only when its content changed.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .utils import atomic_write_bytes

__all__ = ["DIAGRAMS", "additive_attention_diagram", "architecture_diagram",
           "encoder_block_diagram", "write_diagrams"]

#: box colours by kind of step
COLORS = {
    "tensor": "#ffffff",  # inputs and outputs
    "linear": "#dbe9f6",  # learned linear layers / convolutions
    "norm": "#fde9d3",  # normalisations and element-wise steps
    "mix": "#d9f0d3",  # the steps that mix tokens
    "scale": "#eeeeee",  # layer scales and residual sums
}


class _Canvas:
    """Boxes at (x, y) centres in axis units; arrows between box edges."""

    def __init__(self, width: float, height: float, figsize: tuple[float, float], title: str):
        self.fig = Figure(figsize=figsize, dpi=100, layout="constrained")
        self.ax = self.fig.subplots()
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.set_axis_off()
        self.ax.set_title(title, fontsize=12, loc="left")
        self.boxes: dict[str, tuple[float, float, float, float]] = {}

    def box(self, name: str, x: float, y: float, text: str, shape: str | None = None, *,
            kind: str = "linear", w: float = 3.6, h: float = 0.8) -> None:
        patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                               boxstyle="round,pad=0.02,rounding_size=0.12",
                               facecolor=COLORS[kind], edgecolor="0.25", lw=1.1)
        self.ax.add_patch(patch)
        dy = 0.13 if shape else 0.0
        self.ax.text(x, y + dy, text, ha="center", va="center", fontsize=9.5)
        if shape:
            self.ax.text(x, y - 0.2, shape, ha="center", va="center", fontsize=8.5,
                         family="monospace", color="#1f4e8c")
        self.boxes[name] = (x, y, w, h)

    def _edge(self, name: str, side: str) -> tuple[float, float]:
        x, y, w, h = self.boxes[name]
        return {"top": (x, y + h / 2), "bottom": (x, y - h / 2), "left": (x - w / 2, y),
                "right": (x + w / 2, y)}[side]

    def arrow(self, a: str, b: str, *, start: str = "bottom", end: str = "top",
              label: str | None = None, rad: float = 0.0, color: str = "0.2",
              dashed: bool = False) -> None:
        p, q = self._edge(a, start), self._edge(b, end)
        self.ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=12, lw=1.2,
                                          color=color, connectionstyle=f"arc3,rad={rad}",
                                          linestyle="--" if dashed else "-",
                                          shrinkA=1, shrinkB=1))
        if label:
            mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
            self.ax.text(mx + 0.12, my, label, fontsize=8, color=color, va="center")

    def path(self, points, *, color: str = "0.2", label: str | None = None,
             label_at: int = 0) -> None:
        """A polyline through points (the last segment carries the arrow head)."""
        xs, ys = zip(*points)
        self.ax.plot(xs[:-1], ys[:-1], color=color, lw=1.2, solid_capstyle="round")
        self.ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>",
                                          mutation_scale=12, lw=1.2, color=color,
                                          shrinkA=0, shrinkB=1))
        if label:
            (x0, y0), (x1, y1) = points[label_at], points[label_at + 1]
            self.ax.text((x0 + x1) / 2 + 0.1, (y0 + y1) / 2, label, fontsize=8, color=color,
                         va="center")

    def legend(self, x: float, y: float, items: list[tuple[str, str]]) -> None:
        for i, (kind, text) in enumerate(items):
            self.ax.add_patch(FancyBboxPatch((x, y - 0.45 * i - 0.15), 0.35, 0.3,
                                             boxstyle="round,pad=0.01", facecolor=COLORS[kind],
                                             edgecolor="0.25", lw=0.8))
            self.ax.text(x + 0.5, y - 0.45 * i, text, fontsize=8.5, va="center")


def additive_attention_diagram() -> Figure:
    """The data flow of SwiftFormer's efficient additive attention, with shapes ``[B, N, D]``."""
    c = _Canvas(11.0, 14.2, (7.2, 9.3), "Efficient additive attention (SwiftFormer)")
    L, R, M = 2.7, 8.3, 5.5
    c.box("x", M, 13.3, "tokens x", "[B, N, D]", kind="tensor")
    c.box("wq", L, 11.9, "to_query: Linear D → d", "[B, N, d]")
    c.box("wk", R, 11.9, "to_key: Linear D → d", "[B, N, d]")
    c.box("nq", L, 10.6, "L2-normalise each token", "Q̂ [B, N, d]", kind="norm")
    c.box("nk", R, 10.6, "L2-normalise each token", "K̂ [B, N, d]", kind="norm")
    c.box("s", L, 9.2, "scores s = Q̂ w_g / √d", "[B, N, d] @ [d, 1] → [B, N, 1]", kind="norm",
          w=4.4)
    c.box("a", L, 7.8, "α = s / ‖s‖ over the N tokens", "[B, N, 1], Σ α² = 1", kind="mix",
          w=4.4)
    c.box("g", L, 6.4, "global query g = Σᵢ αᵢ Q̂ᵢ", "[B, N, 1] · [B, N, d] → [B, 1, d]",
          kind="mix", w=4.4)
    c.box("gk", R, 5.0, "g ⊙ K̂ (broadcast over N)", "[B, 1, d] ⊙ [B, N, d] → [B, N, d]",
          kind="norm", w=4.6)
    c.box("proj", R, 3.6, "Proj: Linear d → d", "[B, N, d]  (in place of key-value)", w=4.6)
    c.box("plus", M, 2.3, "+ Q̂ (residual)", "[B, N, d]", kind="scale", w=3.0)
    c.box("final", M, 1.1, "final: Linear d → D", "out [B, N, D]", w=3.6)
    c.arrow("x", "wq", start="bottom", end="top")
    c.arrow("x", "wk", start="bottom", end="top")
    c.arrow("wq", "nq")
    c.arrow("wk", "nk")
    c.arrow("nq", "s")
    c.arrow("s", "a")
    c.arrow("a", "g")
    c.arrow("nk", "gk")
    c.arrow("g", "gk", start="bottom", end="left", rad=0.25)
    c.arrow("gk", "proj")
    c.arrow("proj", "plus", start="bottom", end="right", rad=-0.2)
    c.arrow("plus", "final")
    # Q̂ also feeds the weighted sum (step 3) and the residual
    x_side = L - 2.55
    c.path([(L - 1.8, 10.6), (x_side, 10.6), (x_side, 6.4), (L - 2.2, 6.4)], color="#555555",
           label="Q̂", label_at=1)
    c.path([(x_side, 6.4), (x_side, 2.3), (M - 1.5, 2.3)], color="#555555")
    c.ax.text(6.55, 8.5, "w_g ∈ ℝᵈ: one learned vector\nscores every query\n\n"
              "no N × N matrix, no values:\nevery step costs O(N d)", fontsize=8,
              ha="center", va="center", color="0.25")
    c.legend(7.8, 1.5, [("linear", "learned linear layer"), ("norm", "per-token step"),
                        ("mix", "mixes the N tokens")])
    return c.fig


def encoder_block_diagram() -> Figure:
    """The SwiftFormer encoder block (the last block of every stage), with shapes."""
    c = _Canvas(11.0, 14.2, (7.2, 9.3), "SwiftFormer encoder block")
    M, S = 4.6, 9.0
    c.box("x", M, 13.3, "feature map x", "[B, C, H, W]", kind="tensor")
    c.box("dw", M, 12.0, "depth-wise conv 3×3 + BatchNorm", "[B, C, H, W]", w=4.6)
    c.box("pw", M, 10.9, "conv 1×1 C→C, GELU, conv 1×1 C→C", "[B, C, H, W]", w=4.6)
    c.box("lr", M, 9.7, "+ layer scale · (local representation)", "[B, C, H, W]",
          kind="scale", w=4.6)
    c.box("tok", M, 8.3, "tokens: b c h w → b (h w) c", "[B, N, C], N = H·W", kind="norm",
          w=4.6)
    c.box("att", M, 7.1, "efficient additive attention", "[B, N, C] → [B, N, C]", kind="mix",
          w=4.6)
    c.box("map", M, 5.9, "back to a map, × layer_scale_1 [C, 1, 1]", "[B, C, H, W]",
          kind="norm", w=4.6)
    c.box("add1", M, 4.8, "+ (residual)", "[B, C, H, W]", kind="scale", w=3.0)
    c.box("mlp", M, 3.5, "BatchNorm, conv 1×1 C→4C, GELU,\nconv 1×1 4C→C", None, w=4.6, h=0.9)
    c.box("add2", M, 2.1, "+ layer_scale_2 · MLP (residual)", "[B, C, H, W]", kind="scale",
          w=4.6)
    c.box("out", M, 0.8, "out", "[B, C, H, W]", kind="tensor", w=3.0)
    for a, b in (("x", "dw"), ("dw", "pw"), ("pw", "lr"), ("lr", "tok"), ("tok", "att"),
                 ("att", "map"), ("map", "add1"), ("add1", "mlp"), ("mlp", "add2"),
                 ("add2", "out")):
        c.arrow(a, b)
    gray = "#555555"
    # residual skips on the right
    c.path([(M + 1.8, 13.3), (M + 2.9, 13.3), (M + 2.9, 9.7), (M + 2.3, 9.7)], color=gray)
    c.path([(M + 2.3, 9.5), (M + 2.9, 9.5), (M + 2.9, 4.8), (M + 1.5, 4.8)], color=gray,
           label="skip", label_at=1)
    c.path([(M + 1.5, 4.7), (M + 2.9, 4.7), (M + 2.9, 2.1), (M + 2.3, 2.1)], color=gray)
    c.ax.text(S, 11.45, "local\nrepresentation\n(a ConvEncoder\nwithout expansion)",
              fontsize=8.5, ha="center", va="center", color="0.25")
    c.ax.text(S, 7.0, "the only step\nthat mixes\nall N tokens:\nO(N C)", fontsize=8.5,
              ha="center", va="center", color="0.25")
    c.ax.text(S, 3.5, "MLP: mixes\nchannels, per\nposition", fontsize=8.5, ha="center",
              va="center", color="0.25")
    c.legend(0.25, 1.6, [("linear", "conv / linear"), ("scale", "residual sum"),
                         ("mix", "mixes the N tokens")])
    return c.fig


def architecture_diagram() -> Figure:
    """SwiftFormer at a glance: stem, four stages (each ending in an encoder block), the
    embeddings between them and the head, with the feature-map shapes; box widths shrink with
    the resolution."""
    c = _Canvas(11.0, 11.6, (7.2, 7.6), "SwiftFormer: a four-stage pyramid")
    M = 4.6
    rows = [
        ("image", "image", "[B, 3, H, W]", "tensor", 6.4),
        ("stem", "stem: (conv 3×3/2, BN, ReLU) × 2", "[B, C₁, H/4, W/4]", "linear", 6.2),
        ("s1", "stage 1: ConvEncoder × (d₁ − 1), encoder", "[B, C₁, H/4, W/4]", "mix",
         6.2),
        ("e2", "embedding: conv 3×3/2, BN", "[B, C₂, H/8, W/8]", "linear", 5.8),
        ("s2", "stage 2: ConvEncoder × (d₂ − 1), encoder", "[B, C₂, H/8, W/8]", "mix",
         5.8),
        ("e3", "embedding: conv 3×3/2, BN", "[B, C₃, H/16, W/16]", "linear", 5.5),
        ("s3", "stage 3: ConvEncoder × (d₃ − 1), encoder", "[B, C₃, H/16, W/16]", "mix",
         5.5),
        ("e4", "embedding: conv 3×3/2, BN", "[B, C₄, H/32, W/32]", "linear", 5.2),
        ("s4", "stage 4: ConvEncoder × (d₄ − 1), encoder", "[B, C₄, H/32, W/32]", "mix",
         5.2),
        ("head", "BN, average pool, head + dist_head", "[B, classes]", "scale", 5.2),
    ]
    top, step = 10.75, 1.1
    for i, (name, text, shape, kind, w) in enumerate(rows):
        c.box(name, M, top - i * step, text, shape, kind=kind, w=w, h=0.78)
    for (a, *_), (b, *_) in zip(rows, rows[1:]):
        c.arrow(a, b)
    c.ax.text(9.5, 6.9, "every stage ends in\nan encoder block with\nadditive attention:\n"
              "56×56, 28×28, 14×14\nand 7×7 tokens\nat 224 px", fontsize=8.5, ha="center",
              va="center", color="0.25")
    c.ax.text(9.5, 3.3, "XS: d = (3, 3, 6, 4)\nC = (48, 56, 112, 220)", fontsize=8.5,
              ha="center", va="center", color="0.25", family="monospace")
    return c.fig


#: file name -> function, what ``python -m swiftlearn.diagrams`` writes
DIAGRAMS = {"additive_attention.png": additive_attention_diagram,
            "architecture.png": architecture_diagram,
            "encoder_block.png": encoder_block_diagram}


def _png(fig: Figure) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    out = io.BytesIO()  # a palette PNG: a drawing has few colours
    Image.open(buf).convert("RGB").quantize(64).save(out, format="PNG", optimize=True)
    return out.getvalue()


def write_diagrams(folder: str | Path) -> list[Path]:
    """Write every diagram as a PNG into ``folder`` (atomically; unchanged files untouched).
    Returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in DIAGRAMS.items():
        data, path = _png(fn()), folder / name
        if path.is_file() and path.read_bytes() == data:
            continue
        atomic_write_bytes(data, path)
        written.append(path)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m swiftlearn.diagrams",
                                     description="draw the course's diagrams as PNG files")
    parser.add_argument("folder", nargs="?", default="assets/figures/diagrams",
                        help="where to write them (default: %(default)s)")
    args = parser.parse_args(argv)
    written = write_diagrams(args.folder)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    if not written:
        print(f"{args.folder}: every diagram is up to date")


if __name__ == "__main__":
    main()
