"""What attention costs: FLOPs and memory on paper, then measured.

Shape legend as in :mod:`swiftlearn.attention` (``B`` batch, ``N`` tokens, ``D`` token dim,
``h`` heads). The three mechanisms of the course's comparison, named by short keys everywhere in
swiftlearn (:class:`~swiftlearn.attention.FastformerAttention`, the ablation of notebook 08, has
no formula here):

* ``"mhsa"``: :class:`~swiftlearn.attention.MultiHeadSelfAttention`, O(N^2 D) FLOPs;
* ``"separable"``: :class:`~swiftlearn.attention.SeparableSelfAttention`, O(N D^2);
* ``"additive"``: :class:`~swiftlearn.attention.EfficientAdditiveAttention`, O(N D^2).

**FLOPs** are counted the way ``torch.utils.flop_counter.FlopCounterMode`` counts them, so the
formulas and the counter agree exactly: a matrix product ``[m, k] @ [k, n]`` costs ``2*m*k*n``
(one multiply and one add per multiply-add, MACs = FLOPs / 2), a convolution
``2 * out_elements * C_in/groups * kh * kw``. Not counted, by the counter or here: biases,
softmax, L2 normalisation, scaling, ReLU/GELU, element-wise products and sums, BatchNorm,
pooling. They are O(N D) and a few percent of the FLOPs, but not of the time (GELU alone is
~10% of SwiftFormer-XS's CPU time). On the CPU, ``FlopCounterMode`` has no formula for
``F.scaled_dot_product_attention`` (it counts 0); :func:`~swiftlearn.measure.count_flops`
registers one.

**Memory** is the activation memory of one inference forward (``torch.no_grad``, fp32): the peak
of the bytes held at once by the intermediates and the output, not counting the input or the
weights. The formulas follow swiftlearn's code step by step (:func:`attention_memory_phases`);
:func:`~swiftlearn.measure.peak_memory` measures the same quantity from the allocation events
that ``torch.profiler`` records. Explicit formulas and measurements agree to within a few bytes
(scalar temporaries); the fused MHSA kernel also takes a scratch buffer of its own that the
formula leaves out (below 1 MiB per thread, independent of N).

**Latency** (:func:`measure_latency`) is a median of interleaved runs after warm-up; compare
ratios, not absolute times, on a shared machine.

Nothing here allocates what it describes: the formulas are integer arithmetic, so the
attention matrix of a 1024x1024 image (65,536 tokens at stride 4, 16 GiB per head) is computed
on paper.

The instruments themselves, :func:`count_flops` and :func:`peak_memory`, measure any callable
and live in :mod:`swiftlearn.measure`; they are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .attention import EfficientAdditiveAttention, MultiHeadSelfAttention, SeparableSelfAttention
from .measure import count_flops, peak_memory
from .model import MIN_SIZE, VARIANTS, build_model, canonical_name

__all__ = [
    "BYTES_PER_ELEMENT",
    "MECHANISMS",
    "MECHANISM_LABELS",
    "STRIDES",
    "Crossover",
    "attention_flops",
    "attention_flops_breakdown",
    "attention_matrix_bytes",
    "attention_memory",
    "attention_memory_phases",
    "block_flops_breakdown",
    "build_attention",
    "count_flops",
    "crossover",
    "fit_exponent",
    "measure_flops",
    "measure_latency",
    "measure_memory",
    "measure_model_flops",
    "model_flops",
    "model_flops_breakdown",
    "peak_memory",
    "stage_grids",
    "tokens_at",
]

MECHANISMS = ("mhsa", "separable", "additive")
MECHANISM_LABELS = {
    "mhsa": "MHSA (softmax(QK^T)V)",
    "separable": "separable (MobileViT-v2)",
    "additive": "efficient additive (SwiftFormer)",
}
STRIDES = (4, 8, 16, 32)  # SwiftFormer's four stages
BYTES_PER_ELEMENT = 4  # fp32


# ---------------------------------------------------------------------------------------------
# input checks


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _mechanism(mechanism: str) -> str:
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}; choose one of {MECHANISMS}")
    return mechanism


def _check(mechanism: str, N, D, heads, batch) -> tuple[str, int, int, int, int]:
    mechanism = _mechanism(mechanism)
    N, D = _positive_int("N (tokens)", N), _positive_int("D (token dim)", D)
    heads, batch = _positive_int("heads", heads), _positive_int("batch", batch)
    if D % heads:
        raise ValueError(f"heads={heads} must divide D={D} (each head gets D / heads dims); "
                         f"try heads in {[h for h in range(1, 17) if D % h == 0]}")
    return mechanism, N, D, heads, batch


# ---------------------------------------------------------------------------------------------
# FLOPs on paper


def _mm(m: int, k: int, n: int) -> int:
    """FLOPs of ``[m, k] @ [k, n]`` as FlopCounterMode counts them."""
    return 2 * m * k * n


def attention_flops_breakdown(mechanism: str, N: int, D: int, heads: int = 1,
                              batch: int = 1) -> dict[str, int]:
    """FLOPs of each counted step of one attention forward on ``[batch, N, D]`` tokens.

    Only matrix products appear (see the module docstring for what is not counted). MHSA's
    two ``N x N`` products do not depend on ``heads``: ``h`` heads of width ``D / h`` do the
    same work as one head of width ``D``.
    """
    mechanism, N, D, heads, B = _check(mechanism, N, D, heads, batch)
    T = B * N  # every projection is a [B*N, D] @ [D, D'] product
    if mechanism == "mhsa":
        return {
            "qkv projection": _mm(T, D, 3 * D),
            "Q K^T": B * heads * _mm(N, D // heads, N),  # [N, d] @ [d, N] per head
            "softmax(.) V": B * heads * _mm(N, N, D // heads),  # [N, N] @ [N, d] per head
            "output projection": _mm(T, D, D),
        }
    if mechanism == "separable":
        return {
            "scores + keys + values (1 + 2D outputs)": _mm(T, D, 1 + 2 * D),
            "output projection": _mm(T, D, D),
        }
    return {  # additive, key_dim = D as in SwiftFormer
        "query projection": _mm(T, D, D),
        "key projection": _mm(T, D, D),
        "token scores Q w_g": _mm(T, D, 1),
        "Proj (replaces key-value)": _mm(T, D, D),
        "final projection": _mm(T, D, D),
    }


def attention_flops(mechanism: str, N: int, D: int, heads: int = 1, batch: int = 1) -> int:
    """FLOPs of one attention forward, in closed form.

    * MHSA: ``8 B N D^2 + 4 B N^2 D``
    * separable: ``2 B N D (1 + 3D) = 6 B N D^2 + 2 B N D``
    * additive: ``2 B N D (1 + 4D) = 8 B N D^2 + 2 B N D``
    """
    return sum(attention_flops_breakdown(mechanism, N, D, heads, batch).values())


# ---------------------------------------------------------------------------------------------
# memory on paper


def attention_matrix_bytes(N: int, heads: int = 1, batch: int = 1,
                           bytes_per_element: int = BYTES_PER_ELEMENT) -> int:
    """Bytes of MHSA's attention matrices ``[B, h, N, N]``, computed, never allocated."""
    N, heads = _positive_int("N (tokens)", N), _positive_int("heads", heads)
    batch = _positive_int("batch", batch)
    return batch * heads * N * N * _positive_int("bytes_per_element", bytes_per_element)


def attention_memory_phases(mechanism: str, N: int, D: int, heads: int = 1, batch: int = 1,
                            fused: bool = False) -> dict[str, int]:
    """Elements held at once at the busiest moments of one inference forward.

    Follows :mod:`swiftlearn.attention` line by line (the input and weights excluded, the output
    included); :func:`attention_memory` is the largest phase times the element size.

    Args:
        fused: MHSA only: the ``F.scaled_dot_product_attention`` path, which never builds the
            ``N x N`` matrix (its small per-thread scratch buffer is not modelled). The default
            is the explicit path (``return_attention=True``), whose memory the textbook describes.
    """
    mechanism, N, D, h, B = _check(mechanism, N, D, heads, batch)
    T = B * N
    if mechanism == "mhsa":
        if fused:
            return {
                "qkv + SDPA output + log-sum-exp": 4 * T * D + B * h * N,
                "qkv + SDPA output + projection": 5 * T * D,
            }
        # merging the heads copies [B, h, N, d] -> [B, N, D] unless the transpose is a view
        merged = T * D if h > 1 and N > 1 else 0
        return {
            # (q @ k^T) and its scaled copy are both alive for a moment
            "qkv + scores + scaled scores": 3 * T * D + 2 * B * h * N * N,
            "qkv + maps + heads output + merged + projection": 5 * T * D + merged
            + B * h * N * N,
        }
    if fused:
        raise ValueError("fused=True applies to 'mhsa' only; the other mechanisms have one path")
    if mechanism == "separable":
        # the packed projection [B, N, 1 + 2D] stays alive (scores, keys, values are views)
        return {"qkv + scores + context + ReLU(values) or output + product":
                T * (1 + 2 * D) + T + B * D + 2 * T * D}
    # additive: Q, K, alpha and g stay alive to the end; two [B, N, D] temporaries at a time
    return {"Q + K + alpha + g + (g*K) + Proj(g*K)": 4 * T * D + T + B * D}


def attention_memory(mechanism: str, N: int, D: int, heads: int = 1, batch: int = 1,
                     fused: bool = False, bytes_per_element: int = BYTES_PER_ELEMENT) -> int:
    """Peak activation bytes of one inference forward (see :func:`attention_memory_phases`).

    * MHSA (explicit): ``3BND + BhN^2 + max(BhN^2, 2BND + merge)`` elements, where the head
      merge copies ``BND`` when ``h > 1``: quadratic in N, and linear in the heads;
    * MHSA (fused SDPA): ``max(4BND + BhN, 5BND)`` elements (+ kernel scratch): linear;
    * separable: ``BN(4D + 2) + BD`` elements;
    * additive: ``BN(4D + 1) + BD`` elements.
    """
    phases = attention_memory_phases(mechanism, N, D, heads, batch, fused)
    return max(phases.values()) * _positive_int("bytes_per_element", bytes_per_element)


# ---------------------------------------------------------------------------------------------
# the whole SwiftFormer on paper


def _halve(size: int) -> int:
    """Output size of a 3x3, stride-2, padding-1 convolution: ``ceil(size / 2)``."""
    return (size - 1) // 2 + 1


def _stride_steps(stride: int) -> int:
    stride = _positive_int("stride", stride)
    if stride & (stride - 1):
        raise ValueError(f"stride must be a power of two (SwiftFormer's stages are at "
                         f"{STRIDES}), got {stride}")
    return stride.bit_length() - 1


def tokens_at(resolution: int, stride: int = 32, width: int | None = None) -> int:
    """Tokens ``N = h * w`` of a SwiftFormer feature map at ``stride`` for a square (or
    ``resolution x width``) image, with the network's own conv arithmetic (``ceil`` halvings)."""
    h = _positive_int("resolution", resolution)
    w = h if width is None else _positive_int("width", width)
    for _ in range(_stride_steps(stride)):
        h, w = _halve(h), _halve(w)
    return h * w


def stage_grids(H: int, W: int | None = None) -> list[tuple[int, int]]:
    """Token grids ``(h, w)`` of the four stages (strides 4, 8, 16, 32) for an ``H x W`` input."""
    H = _positive_int("H", H)
    W = H if W is None else _positive_int("W", W)
    if min(H, W) < MIN_SIZE:
        raise ValueError(f"SwiftFormer needs images of at least {MIN_SIZE}x{MIN_SIZE}, "
                         f"got {H}x{W}")
    h, w = _halve(_halve(H)), _halve(_halve(W))
    grids = [(h, w)]
    for _ in range(3):
        h, w = _halve(h), _halve(w)
        grids.append((h, w))
    return grids


def _conv(hw: int, c_in: int, c_out: int, k: int = 1, groups: int = 1) -> int:
    """FLOPs of a convolution with ``hw`` output positions (bias not counted)."""
    return 2 * hw * c_out * (c_in // groups) * k * k


def block_flops_breakdown(N: int, D: int, attention: str = "additive", heads: int = 1,
                          mlp_ratio: float = 4.0) -> dict[str, int]:
    """FLOPs of one :class:`~swiftlearn.model.SwiftFormerEncoder` on ``N`` tokens of width ``D``
    (batch 1): local representation, attention (any of :data:`MECHANISMS`), MLP."""
    N, D = _positive_int("N (tokens)", N), _positive_int("D (token dim)", D)
    hidden = int(D * mlp_ratio)
    return {
        "local representation": _conv(N, D, D, 3, groups=D) + 2 * _conv(N, D, D),
        "attention": attention_flops(attention, N, D, heads),
        "mlp": _conv(N, D, hidden) + _conv(N, hidden, D),
    }


def model_flops_breakdown(variant: str = "swiftformer_xs", H: int = 224, W: int | None = None,
                          num_classes: int = 1000, distillation: bool = True,
                          attention: str = "additive", heads: int = 1) -> dict[str, int]:
    """FLOPs of a whole SwiftFormer forward (batch 1, eval), grouped by part.

    Keys: ``stem``, ``stage{i} conv encoders``, ``stage{i} local representation``,
    ``stage{i} attention``, ``stage{i} mlp``, ``embedding{i}`` (downsampling), ``head``.
    ``attention`` swaps the mechanism inside every encoder block (``"mhsa"`` gives the cost of
    a SwiftFormer built with ordinary self-attention); ``heads`` only matters for MHSA memory,
    not FLOPs.
    """
    v = VARIANTS[canonical_name(variant)]
    _mechanism(attention)
    num_classes = int(num_classes)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    grids = stage_grids(H, W)
    d0 = v.widths[0]
    H = _positive_int("H", H)
    W = H if W is None else W
    hw_half = _halve(H) * _halve(W)
    out: dict[str, int] = {
        "stem": _conv(hw_half, 3, d0 // 2, 3) + _conv(grids[0][0] * grids[0][1], d0 // 2, d0, 3),
    }
    for i, ((h, w), depth, dim) in enumerate(zip(grids, v.depths, v.widths), start=1):
        N = h * w
        conv_block = _conv(N, dim, dim, 3, groups=dim) + 2 * _conv(N, dim, 4 * dim)
        out[f"stage{i} conv encoders"] = (depth - 1) * conv_block
        for part, flops in block_flops_breakdown(N, dim, attention, heads).items():
            out[f"stage{i} {part}"] = flops
        if i < 4:
            nh, nw = grids[i]
            out[f"embedding{i}"] = _conv(nh * nw, dim, v.widths[i], 3)
    heads_out = num_classes * (2 if distillation else 1)
    out["head"] = _mm(1, v.widths[-1], heads_out)
    return out


def model_flops(variant: str = "swiftformer_xs", H: int = 224, W: int | None = None,
                num_classes: int = 1000, distillation: bool = True,
                attention: str = "additive", heads: int = 1) -> int:
    """FLOPs of one SwiftFormer forward on a ``[1, 3, H, W]`` image (equal to FlopCounterMode)."""
    return sum(model_flops_breakdown(variant, H, W, num_classes, distillation, attention,
                                     heads).values())


# ---------------------------------------------------------------------------------------------
# growth and crossovers


def fit_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """Slope of the least-squares line through ``(log x, log y)``: ``y ~ c * x^slope``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"fit_exponent needs two 1-d sequences of equal length >= 2, got "
                         f"shapes {x.shape} and {y.shape}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("fit_exponent needs positive values (it fits on a log-log scale)")
    if np.unique(x).size < 2:
        raise ValueError("fit_exponent needs at least two distinct x values")
    slope, _ = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope)


@dataclass(frozen=True)
class Crossover:
    """The smallest square input at which one MHSA layer costs more FLOPs than ``against``."""

    against: str  # "block" or the variant's name
    stride: int
    dim: int
    resolution: int  # pixels per side
    tokens: int  # N at that stride
    mhsa_flops: int
    other_flops: int

    def __str__(self) -> str:
        side = math.isqrt(self.tokens)
        return (f"MHSA (stride {self.stride}, D={self.dim}) > {self.against} from "
                f"{self.resolution}x{self.resolution} px ({side}x{side} = {self.tokens} tokens): "
                f"{self.mhsa_flops / 1e9:.3f} vs {self.other_flops / 1e9:.3f} GFLOPs")


def crossover(against: str = "block", stride: int = 32, dim: int | None = None,
              variant: str = "swiftformer_xs", max_resolution: int = 16384) -> Crossover | None:
    """Where quadratic attention takes over, found by bisection on the square input size.

    Args:
        against: ``"block"``: MHSA against the rest of its SwiftFormer block (local
            representation + MLP) at the same stage; ``"model"``: MHSA against the whole
            ``variant`` (with its own efficient additive attention) at the same input size.
        stride: the stage the MHSA sits in (4, 8, 16 or 32).
        dim: token width D; defaults to ``variant``'s width at that stage.
        max_resolution: search limit in pixels; returns None if there is no crossover below it.
    """
    if against not in ("block", "model"):
        raise ValueError(f"against must be 'block' or 'model', got {against!r}")
    key = canonical_name(variant)
    steps = _stride_steps(stride)
    if stride not in STRIDES:
        raise ValueError(f"stride must be one of SwiftFormer's stage strides {STRIDES}, "
                         f"got {stride}")
    D = VARIANTS[key].widths[steps - 2] if dim is None else _positive_int("dim", dim)
    max_resolution = _positive_int("max_resolution", max_resolution)

    def costs(res: int) -> tuple[int, int]:
        N = tokens_at(res, stride)
        mhsa = attention_flops("mhsa", N, D)
        if against == "block":
            parts = block_flops_breakdown(N, D)
            other = parts["local representation"] + parts["mlp"]
        else:
            other = model_flops(key, res)
        return mhsa, other

    lo, hi = MIN_SIZE, max_resolution
    if hi < lo or costs(hi)[0] <= costs(hi)[1]:
        return None
    if costs(lo)[0] <= costs(lo)[1]:
        while hi - lo > 1:  # invariant: MHSA cheaper at lo, dearer at hi
            mid = (lo + hi) // 2
            m, o = costs(mid)
            lo, hi = (lo, mid) if m > o else (mid, hi)
        lo = hi
    mhsa, other = costs(lo)
    return Crossover("block" if against == "block" else key, stride, D, lo,
                     tokens_at(lo, stride), mhsa, other)


# ---------------------------------------------------------------------------------------------
# measured


def build_attention(mechanism: str, D: int, heads: int = 1) -> nn.Module:
    """A freshly initialised attention module of the given kind, in eval mode."""
    _check(mechanism, 1, D, heads, 1)
    if mechanism == "mhsa":
        module: nn.Module = MultiHeadSelfAttention(D, heads)
    elif mechanism == "separable":
        module = SeparableSelfAttention(D)
    else:
        module = EfficientAdditiveAttention(D)
    return module.eval()


def _device(device) -> torch.device:
    device = torch.device(device)
    if device.type not in ("cpu", "meta", "cuda"):
        raise ValueError(f"device must be 'cpu', 'meta' or 'cuda', got {device}")
    return device


def measure_flops(mechanism: str, N: int, D: int, heads: int = 1, batch: int = 1,
                  explicit: bool = False, device="cpu") -> int:
    """Run one attention forward on random ``[batch, N, D]`` tokens and count its FLOPs.

    ``explicit=True`` runs MHSA's explicit path (``return_attention=True``: two ``bmm``\\ s the
    counter knows) instead of the fused SDPA kernel; both count the same. ``device="meta"``
    dispatches the same operators on shape-only tensors: the count without the computation
    (or the memory), for sizes too large to run.
    """
    mechanism, N, D, heads, batch = _check(mechanism, N, D, heads, batch)
    with _device(device):
        module = build_attention(mechanism, D, heads)
        x = torch.randn(batch, N, D)
    if explicit and mechanism == "mhsa":
        return count_flops(module, x, return_attention=True)
    return count_flops(module, x)


def measure_model_flops(variant: str = "swiftformer_xs", H: int = 224, W: int | None = None,
                        attention: str = "additive", heads: int = 1, device="cpu",
                        **kwargs) -> int:
    """FlopCounterMode FLOPs of one eval forward of a freshly built SwiftFormer on
    ``[1, 3, H, W]``; ``attention`` other than ``"additive"`` swaps every encoder's mechanism.
    ``device="meta"`` counts without computing (much faster for the large variants)."""
    W = H if W is None else W
    _mechanism(attention)
    with _device(device):
        model = build_model(variant, **kwargs).eval()
        if attention != "additive":
            for block in model.encoders():
                block.attn = build_attention(attention, block.attn.dim, heads)
        x = torch.randn(1, 3, H, W)
    return count_flops(model, x)


def measure_memory(mechanism: str, N: int, D: int, heads: int = 1, batch: int = 1,
                   fused: bool = False) -> int:
    """Measured peak activation bytes of one attention forward on random tokens (see
    :func:`peak_memory`). MHSA runs its explicit path unless ``fused=True``."""
    mechanism, N, D, heads, batch = _check(mechanism, N, D, heads, batch)
    if fused and mechanism != "mhsa":
        raise ValueError("fused=True applies to 'mhsa' only")
    module = build_attention(mechanism, D, heads)
    x = torch.randn(batch, N, D)
    explicit = mechanism == "mhsa" and not fused
    return peak_memory(module, x, return_attention=True) if explicit else peak_memory(module, x)


def measure_latency(mechanisms: Iterable[str] = MECHANISMS, N: int = 196, D: int = 64,
                    heads: int = 1, batch: int = 1, warmup: int = 2, repeats: int = 15,
                    time_cap: float = 10.0, threads: int | None = None) -> dict[str, float | None]:
    """Median seconds per forward of each mechanism on the same ``[batch, N, D]`` tokens.

    Runs are interleaved (one of each mechanism per round) so that a noisy neighbour slows them
    all alike. After ``warmup`` untimed calls, rounds continue until ``repeats`` are done or
    ``time_cap`` seconds have passed (at least one round). A mechanism whose single forward,
    predicted from its FLOPs and the speed of the cheapest one, would not fit in the time left
    is skipped and reported as ``None``. MHSA uses the fused SDPA path (linear memory).

    Args:
        threads: if given, ``torch.set_num_threads(threads)`` for the measurement (restored
            afterwards); 1 thread gives the steadiest numbers.
    """
    mechanisms = [_mechanism(m) for m in mechanisms]
    if not mechanisms:
        raise ValueError("measure_latency needs at least one mechanism")
    _check(mechanisms[0], N, D, heads, batch)
    if not time_cap > 0:
        raise ValueError(f"time_cap must be positive (seconds), got {time_cap}")
    warmup, repeats = int(warmup), _positive_int("repeats", repeats)
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(_positive_int("threads", threads))
    try:
        start = time.perf_counter()
        deadline = start + time_cap
        x = torch.randn(batch, N, D)
        modules = {m: build_attention(m, D, heads) for m in mechanisms}
        flops = {m: attention_flops(m, N, D, heads, batch) for m in mechanisms}
        order = sorted(mechanisms, key=flops.__getitem__)
        times: dict[str, list[float]] = {m: [] for m in mechanisms}
        rate = None  # FLOPs per second of the cheapest mechanism, measured
        with torch.inference_mode():
            for m in order:  # warm-up, cheapest first, skipping what would not fit
                left = deadline - time.perf_counter()
                if rate is not None and flops[m] / rate * (warmup + 1) > left:
                    modules.pop(m)
                    continue
                t0 = time.perf_counter()
                for _ in range(max(warmup, 1)):
                    modules[m](x)
                elapsed = (time.perf_counter() - t0) / max(warmup, 1)
                if rate is None:
                    rate = flops[m] / max(elapsed, 1e-9)
            for _ in range(repeats):
                for m in order:
                    if m not in modules:
                        continue
                    t0 = time.perf_counter()
                    modules[m](x)
                    times[m].append(time.perf_counter() - t0)
                if time.perf_counter() > deadline:
                    break
    finally:
        torch.set_num_threads(old_threads)
    return {m: (float(np.median(times[m])) if times[m] else None) for m in mechanisms}
