"""Interactive explorers for the notebooks: thin ipywidgets wrappers over
:mod:`swiftlearn.complexity`.

:class:`ComplexityExplorer` shows how FLOPs and activation memory of the three attention
mechanisms grow with the input resolution, at a chosen stage stride, width D and head count,
and can time them on this machine. Figures are ``matplotlib.figure.Figure`` objects rendered
to PNG inside the callback (no pyplot state: JupyterLab runs widget callbacks on a thread of
their own, where pyplot can race with the main thread and draw blank plots).

Drive it from Python (this is what the tests do)::

    explorer = ComplexityExplorer()
    explorer.resolution.value = 512      # redraws synchronously
    explorer.readout.value               # the printed numbers (HTML <pre>)
    explorer.image.value                 # the PNG bytes
    explorer.measure()                   # what the "measure here" button does
"""

from __future__ import annotations

import html
import io
import math

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from . import complexity as cx
from . import viz

__all__ = ["ComplexityExplorer", "cost_figure", "format_bytes", "format_flops"]

RESOLUTIONS = tuple(range(64, 1025, 32))  # the slider's range, also the curves' x values
COLORS = {"mhsa": "tab:red", "separable": "tab:blue", "additive": "tab:green"}
SHORT = {"mhsa": "MHSA", "separable": "separable", "additive": "additive"}
MEMORY_CAP = 256 * 2**20  # "measure here" measures memory only below this prediction


def format_flops(flops: float) -> str:
    """``1.2e9`` -> ``'1.20 GFLOPs'``."""
    for unit, scale in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6), ("kFLOPs", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f} FLOPs"


def format_bytes(n: float) -> str:
    """``3 * 2**20`` -> ``'3.00 MiB'``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def cost_figure(resolution: int = 224, stride: int = 16, dim: int = 64, heads: int = 1,
                mechanisms=cx.MECHANISMS, resolutions=RESOLUTIONS) -> Figure:
    """Log-log FLOPs and memory against tokens N for square inputs of ``resolutions`` at
    ``stride``, with a marker at ``resolution``. MHSA's memory is drawn twice: explicit
    (solid, the N x N matrix) and fused SDPA (dashed)."""
    mechanisms = [m for m in cx.MECHANISMS if m in set(mechanisms)]
    tokens = np.array([cx.tokens_at(r, stride) for r in resolutions])
    n_here = cx.tokens_at(resolution, stride)
    fig = Figure(figsize=(10, 4), dpi=90, layout="constrained")
    ax_f, ax_m = fig.subplots(1, 2)
    for m in mechanisms:
        c = COLORS[m]
        flops = [cx.attention_flops(m, n, dim, heads) for n in tokens]
        mem = [cx.attention_memory(m, n, dim, heads) for n in tokens]
        ax_f.plot(tokens, flops, color=c, label=cx.MECHANISM_LABELS[m])
        ax_m.plot(tokens, mem, color=c, label=cx.MECHANISM_LABELS[m])
        ax_f.plot([n_here], [cx.attention_flops(m, n_here, dim, heads)], "o", color=c, ms=8)
        ax_m.plot([n_here], [cx.attention_memory(m, n_here, dim, heads)], "o", color=c, ms=8)
        if m == "mhsa":
            fused = [cx.attention_memory(m, n, dim, heads, fused=True) for n in tokens]
            ax_m.plot(tokens, fused, "--", color=c, lw=1, label="MHSA, fused SDPA kernel")
    for ax, what in ((ax_f, "FLOPs (FlopCounterMode convention)"),
                     (ax_m, "activation memory, bytes (fp32)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"tokens N at stride {stride}")
        ax.set_ylabel(what)
        ax.axvline(n_here, color="0.6", lw=0.8)
        ax.grid(True, which="both", alpha=0.25)
        top = ax.secondary_xaxis("top", functions=(lambda n: stride * np.sqrt(n),
                                                   lambda r: (np.asarray(r) / stride) ** 2))
        top.set_xlabel("input resolution (px per side)")
    if mechanisms:
        ax_f.legend(loc="upper left", fontsize=8)
        ax_m.legend(loc="upper left", fontsize=8)
    side = math.isqrt(n_here)
    fig.suptitle(f"{resolution}x{resolution} px at stride {stride} -> {side}x{side} = {n_here} "
                 f"tokens, D={dim}, heads={heads} (marker)", fontsize=10)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class ComplexityExplorer:
    """Sliders for resolution, stride, width and heads; a log-log figure; numbers; a timer.

    Attributes (all ipywidgets, settable from Python): ``resolution``, ``stride``, ``dim``,
    ``heads``, ``checks`` (a dict of Checkboxes by mechanism), ``readout`` (HTML with the
    numbers), ``image`` (the PNG figure), ``measure_button``, ``measured`` (HTML with the
    measured-vs-predicted table), ``error`` (HTML, empty unless a callback failed). ``widget``
    is the whole layout; displaying the explorer displays it.

    Args:
        time_cap: seconds the "measure here" button may spend.
    """

    def __init__(self, resolution: int = 224, stride: int = 16, dim: int = 64, heads: int = 2,
                 mechanisms=cx.MECHANISMS, time_cap: float = 5.0):
        if not 64 <= resolution <= 1024:
            raise ValueError(f"resolution must be in 64..1024, got {resolution}")
        if stride not in cx.STRIDES:
            raise ValueError(f"stride must be one of {cx.STRIDES}, got {stride}")
        if dim % heads:
            raise ValueError(f"heads={heads} must divide dim={dim}")
        if not time_cap > 0:
            raise ValueError(f"time_cap must be positive (seconds), got {time_cap}")
        self.time_cap = float(time_cap)
        style = {"description_width": "110px"}
        layout = widgets.Layout(width="460px")
        self.resolution = widgets.IntSlider(
            value=resolution, min=64, max=1024, step=32, description="resolution (px)",
            continuous_update=False, style=style, layout=layout)
        self.stride = widgets.SelectionSlider(
            options=list(cx.STRIDES), value=stride, description="stage stride",
            continuous_update=False, style=style, layout=layout)
        self.dim = widgets.IntSlider(value=dim, min=16, max=512, step=16, description="width D",
                                     continuous_update=False, style=style, layout=layout)
        self.heads = widgets.SelectionSlider(options=[1, 2, 4, 8], value=heads,
                                             description="heads", continuous_update=False,
                                             style=style, layout=layout)
        self.checks = {m: widgets.Checkbox(value=m in mechanisms, description=SHORT[m],
                                           indent=False, layout=widgets.Layout(width="120px"))
                       for m in cx.MECHANISMS}
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.measure_button = widgets.Button(description="measure here", icon="stopwatch",
                                             tooltip=f"time the mechanisms here (<= {time_cap} s)")
        self.measured = widgets.HTML()
        self.error = widgets.HTML()
        for w, cls in ((self.resolution, "swiftlearn-resolution"),
                       (self.stride, "swiftlearn-stride"), (self.dim, "swiftlearn-dim"),
                       (self.heads, "swiftlearn-heads"),
                       (self.readout, "swiftlearn-readout"), (self.image, "swiftlearn-figure"),
                       (self.measure_button, "swiftlearn-measure"),
                       (self.measured, "swiftlearn-measured"), (self.error, "swiftlearn-error")):
            w.add_class(cls)
        for w in (self.resolution, self.stride, self.dim, self.heads, *self.checks.values()):
            w.observe(self._on_change, names="value")
        self.measure_button.on_click(lambda _: self._guard(self.measure))
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox([self.resolution, self.stride]),
                          widgets.VBox([self.dim, self.heads])]),
            widgets.HBox([*self.checks.values(), self.measure_button]),
            self.error, self.image, self.readout, self.measured,
        ])
        self.update()

    # -- state ------------------------------------------------------------------------------
    @property
    def mechanisms(self) -> list[str]:
        """The mechanisms whose checkbox is ticked."""
        return [m for m, box in self.checks.items() if box.value]

    def point(self) -> dict:
        """The chosen point: resolution, stride, tokens N, dim D, heads."""
        res, stride = self.resolution.value, self.stride.value
        return {"resolution": res, "stride": stride, "tokens": cx.tokens_at(res, stride),
                "dim": self.dim.value, "heads": self.heads.value}

    def predicted(self) -> dict[str, dict[str, int]]:
        """Analytic FLOPs and memory (bytes) of each ticked mechanism at the chosen point."""
        p = self.point()
        return {m: {"flops": cx.attention_flops(m, p["tokens"], p["dim"], p["heads"]),
                    "memory": cx.attention_memory(m, p["tokens"], p["dim"], p["heads"])}
                for m in self.mechanisms}

    # -- callbacks --------------------------------------------------------------------------
    def _guard(self, fn):
        """Run a callback; show any exception in the error element, then re-raise it."""
        return viz.run_guarded(self.error, fn)

    def _on_change(self, change=None):
        self._guard(self.update)  # the width slider steps by 16, so every head count divides

    def update(self) -> None:
        """Redraw the figure and rewrite the readout for the current slider values."""
        p = self.point()
        self.image.value = _png(cost_figure(p["resolution"], p["stride"], p["dim"], p["heads"],
                                            self.mechanisms))
        self.readout.value = "<pre>" + html.escape(self.readout_text()) + "</pre>"
        self.measured.value = ""

    def readout_text(self) -> str:
        """The numbers printed under the figure, as plain text."""
        p = self.point()
        side = math.isqrt(p["tokens"])
        lines = [f"input {p['resolution']}x{p['resolution']} px, stride {p['stride']} -> "
                 f"{side}x{side} = {p['tokens']} tokens, D={p['dim']}, heads={p['heads']}"]
        pred = self.predicted()
        for m, c in pred.items():
            lines.append(f"{SHORT[m]:>10}: {format_flops(c['flops']):>13}   "
                         f"memory {format_bytes(c['memory']):>10}")
        if "mhsa" in pred:
            matrix = cx.attention_matrix_bytes(p["tokens"], p["heads"])
            lines.append(f"MHSA attention matrices [h, N, N]: {format_bytes(matrix)} "
                         "(computed on paper, never allocated)")
        if "mhsa" in pred and "additive" in pred:
            mhsa, add = pred["mhsa"], pred["additive"]
            lines.append(f"MHSA / additive: {mhsa['flops'] / add['flops']:.2f}x FLOPs, "
                         f"{mhsa['memory'] / add['memory']:.2f}x memory")
        if not pred:
            lines.append("tick at least one mechanism")
        return "\n".join(lines)

    def measure(self) -> dict[str, dict]:
        """Time the ticked mechanisms here (1 thread, interleaved medians, within ``time_cap``),
        measure their peak memory where the prediction is below 256 MiB, and show measured
        beside predicted. Returns ``{mechanism: {"seconds", "memory", "flops",
        "predicted_memory"}}`` (``None`` where skipped)."""
        p, pred = self.point(), self.predicted()
        if not pred:
            self.measured.value = "<pre>tick at least one mechanism</pre>"
            return {}
        self.measure_button.disabled = True
        self.measured.value = "<pre>measuring ...</pre>"
        try:
            times = cx.measure_latency(list(pred), p["tokens"], p["dim"], p["heads"],
                                       time_cap=0.8 * self.time_cap, threads=1)
            results = {}
            for m, c in pred.items():
                mem = None
                if times[m] is not None and c["memory"] <= MEMORY_CAP:
                    mem = cx.measure_memory(m, p["tokens"], p["dim"], p["heads"])
                results[m] = {"seconds": times[m], "memory": mem, "flops": c["flops"],
                              "predicted_memory": c["memory"]}
        finally:
            self.measure_button.disabled = False
        self.measured.value = "<pre>" + html.escape(self._measured_text(results)) + "</pre>"
        return results

    @staticmethod
    def _measured_text(results: dict) -> str:
        base = min((r for r in results.values() if r["seconds"]), default=None,
                   key=lambda r: r["flops"])
        lines = ["measured on this machine (median of interleaved runs) beside predicted:",
                 f"{'':>10}  {'time':>9}  {'time ratio':>10}  {'FLOP ratio':>10}  "
                 f"{'memory measured':>15}  {'predicted':>10}"]
        for m, r in results.items():
            if r["seconds"] is None:
                lines.append(f"{SHORT[m]:>10}  skipped: would not fit in the time cap")
                continue
            t_ratio = r["seconds"] / base["seconds"]
            f_ratio = r["flops"] / base["flops"]
            mem = format_bytes(r["memory"]) if r["memory"] is not None else "skipped"
            lines.append(f"{SHORT[m]:>10}  {r['seconds'] * 1e3:>6.2f} ms  {t_ratio:>9.2f}x  "
                         f"{f_ratio:>9.2f}x  {mem:>15}  {format_bytes(r['predicted_memory']):>10}")
        return "\n".join(lines)

    # -- display ----------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
