"""How sure is a validation accuracy? Intervals and paired comparisons for classifier runs.

A top-1 of 58 % on 3,925 images is one draw: another 3,925 images from the same classes would
give a slightly different number, and so would another training seed. This module puts numbers
on both sources of noise, with numpy only:

* :func:`wilson_interval`: the binomial interval of one accuracy (images are the only noise).
* :func:`seed_spread`: mean, standard deviation and Student-t interval over training seeds.
* :func:`paired_difference`: two models on the *same* images. Only the images on which they
  disagree carry information (McNemar's exact test), and a paired bootstrap gives the interval
  of the difference.
* :func:`compare_runs`: two variants, several seeds each, on the same images. The bootstrap
  resamples the images (shared by both sides) and the seeds (within each side), so the interval
  holds both noises.

Per-image correctness travels in JSON as :func:`pack_correct` strings (one bit per image).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "compare_runs",
    "mcnemar_p",
    "pack_correct",
    "paired_difference",
    "seed_spread",
    "student_t_quantile",
    "unpack_correct",
    "wilson_interval",
]


def _normal_quantile(p: float) -> float:
    """The standard normal's ``p`` quantile (bisection on ``erf``; exact to ~1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (Simpson's rule on the density,
    which is smooth, so 4,000 panels are far more than enough)."""
    if t == 0:
        return 0.5
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = np.linspace(0.0, abs(t), 4001)
    f = np.exp(c - (df + 1) / 2 * np.log1p(x * x / df))
    h = x[1] - x[0]
    area = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    return 0.5 + math.copysign(area, t)


def student_t_quantile(p: float, df: int) -> float:
    """Student's t ``p`` quantile for ``df`` >= 1 degrees of freedom (12.706 for p = 0.975,
    df = 1; it tends to the normal's 1.960 as df grows)."""
    if df < 1:
        raise ValueError(f"Student's t needs at least one degree of freedom, got df={df}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -student_t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while _student_t_cdf(hi, df) < p:  # the tails of df=1 are heavy: grow the bracket
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        if _student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def wilson_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for an accuracy of ``correct`` out of ``n``, in percent.

    It treats the ``n`` images as a random sample: the interval covers the accuracy on the
    population they were drawn from, for this one trained model.
    """
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n > 0, got correct={correct}, n={n}")
    z = _normal_quantile(0.5 + level / 2)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if correct == 0 else max(0.0, centre - half)  # exact ends where rounding is not
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return 100 * lo, 100 * hi


def seed_spread(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean, sample standard deviation and the Student-t interval of the mean over seeds.

    With ``k`` seeds the interval uses ``k - 1`` degrees of freedom: with two seeds its
    multiplier is 12.7, not 1.96, which is what two seeds can tell. One seed gives no spread
    (``sd`` and the interval are ``None``).
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("seed_spread() needs at least one value")
    out = {"n": int(v.size), "mean": float(v.mean()), "sd": None, "lo": None, "hi": None}
    if v.size > 1:
        sd = float(v.std(ddof=1))
        half = student_t_quantile(0.5 + level / 2, v.size - 1) * sd / math.sqrt(v.size)
        out.update(sd=sd, lo=out["mean"] - half, hi=out["mean"] + half)
    return out


def _as_bool(correct, name: str = "correct") -> np.ndarray:
    a = np.asarray(correct)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of per-image outcomes, got "
                         f"shape {a.shape}")
    return a.astype(bool)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value: ``only_a`` images right for A alone, ``only_b`` for B
    alone. Under "no difference" each disagreement is a fair coin flip."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_difference(correct_a, correct_b, *, level: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> dict:
    """Accuracy of A minus B (points) on the same images, with a paired bootstrap interval and
    McNemar's exact p-value.

    Returns:
        ``{"diff", "lo", "hi", "only_a", "only_b", "p", "n"}``.
    """
    a, b = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"a paired comparison needs the same images: {a.size} vs {b.size} "
                         f"outcomes")
    rng = np.random.default_rng(seed)
    d = a.astype(np.int8) - b.astype(np.int8)
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    boots = d[idx].mean(1) * 100
    q = (1 - level) / 2
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    return {"diff": float(d.mean() * 100), "lo": float(np.quantile(boots, q)),
            "hi": float(np.quantile(boots, 1 - q)), "only_a": only_a, "only_b": only_b,
            "p": mcnemar_p(only_a, only_b), "n": int(d.size)}


def compare_runs(runs_a: Sequence, runs_b: Sequence, *, level: float = 0.95,
                 resamples: int = 2000, seed: int = 0) -> dict:
    """Mean accuracy of variant A minus variant B, each trained with one or more seeds and
    evaluated on the same images.

    Each bootstrap draw resamples the images once (the same draw for both variants: the
    comparison is paired) and each variant's seeds with replacement, then compares the means.
    The interval therefore holds the noise of the images and of training. With one seed a side
    only the images vary, and the result says so (``"seeds_resampled": False``).

    Returns:
        ``{"diff", "lo", "hi", "seeds_a", "seeds_b", "seeds_resampled", "n"}``.
    """
    a = np.stack([_as_bool(r, "runs_a") for r in runs_a]) if len(runs_a) else None
    b = np.stack([_as_bool(r, "runs_b") for r in runs_b]) if len(runs_b) else None
    if a is None or b is None:
        raise ValueError("compare_runs() needs at least one run on each side")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the runs must be evaluated on the same images: {a.shape[1]} vs "
                         f"{b.shape[1]} outcomes")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    diffs = np.empty(resamples)
    for i in range(resamples):
        images = rng.integers(0, n, size=n)
        sa = rng.integers(0, len(a), size=len(a))
        sb = rng.integers(0, len(b), size=len(b))
        diffs[i] = a[sa][:, images].mean() - b[sb][:, images].mean()
    q = (1 - level) / 2
    return {"diff": float((a.mean() - b.mean()) * 100), "lo": float(np.quantile(diffs, q) * 100),
            "hi": float(np.quantile(diffs, 1 - q) * 100), "seeds_a": len(a), "seeds_b": len(b),
            "seeds_resampled": len(a) > 1 or len(b) > 1, "n": n}


def pack_correct(correct) -> str:
    """Per-image outcomes as a short ASCII string (base64 of one bit per image)."""
    return base64.b64encode(np.packbits(_as_bool(correct))).decode("ascii")


def unpack_correct(packed: str, n: int) -> np.ndarray:
    """The boolean array that :func:`pack_correct` wrote for ``n`` images."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(packed), dtype=np.uint8))
    if bits.size < n or bits.size - n >= 8:
        raise ValueError(f"the packed outcomes hold {bits.size} bits, not {n} images' worth")
    return bits[:n].astype(bool)
