"""Checks for notebook 08 (ablations): the learner writes a paired bootstrap interval."""

from __future__ import annotations

import numpy as np

from ..stats import paired_difference
from .core import NOT_ATTEMPTED, ExerciseError, attempt, keeps_rng, not_attempted

__all__ = ["check_08_paired_bootstrap"]


def _outcomes(seed: int = 8, n: int = 3925) -> tuple[np.ndarray, np.ndarray]:
    """Two models' outcomes on the same images: both find the same images hard (so they agree
    on most), A is about 2 points better, and each also errs on a few images of its own."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n)
    a = (hard < 0.62) ^ (rng.random(n) < 0.03)
    b = (hard < 0.60) ^ (rng.random(n) < 0.03)
    return a, b


@keeps_rng
def check_08_paired_bootstrap(paired_bootstrap) -> None:
    """Exercise 1: ``paired_bootstrap(correct_a, correct_b, rng, resamples=2000)`` -> the 95 %
    interval ``(lo, hi)`` of A's accuracy minus B's, in points, from resampling the images."""
    label = "Exercise 1"
    a, b = _outcomes()
    got = attempt(paired_bootstrap, a.copy(), b.copy(), np.random.default_rng(0))
    if got is NOT_ATTEMPTED:
        return not_attempted(label)
    where = f"{label}: paired_bootstrap(correct_a, correct_b, rng)"
    try:
        lo, hi = (float(v) for v in got)
    except (TypeError, ValueError):
        raise ExerciseError(f"{where} returned {type(got).__name__}; return the two ends "
                            "(lo, hi) of the interval") from None
    want = paired_difference(a, b, resamples=4000, seed=1)
    diff, w_lo, w_hi = want["diff"], want["lo"], want["hi"]
    width, w_width = hi - lo, w_hi - w_lo
    if lo > hi:
        raise ExerciseError(f"{where} gave lo {lo:.3g} > hi {hi:.3g}: return (lower, upper)")
    if np.isclose(lo, w_lo / 100, atol=0.003) and np.isclose(hi, w_hi / 100, atol=0.003):
        raise ExerciseError(f"{where} gave ({lo:.4f}, {hi:.4f}): that is a fraction; give "
                            "points (percent), as the accuracies are")
    if np.isclose(lo, -w_hi, atol=0.3) and np.isclose(hi, -w_lo, atol=0.3):
        raise ExerciseError(f"{where} gave ({lo:.2f}, {hi:.2f}), the interval of B minus A: "
                            "compute accuracy(A) - accuracy(B)")
    if width < 0.1 * w_width:
        raise ExerciseError(f"{where} is only {width:.3f} points wide (about {w_width:.2f} "
                            "expected): each resample must draw n images *with replacement* "
                            "(rng.integers(0, n, n)); a permutation, or no draw at all, gives "
                            "the same accuracy every time")
    if width > 1.4 * w_width and lo < diff < hi:
        raise ExerciseError(f"{where} is {width:.2f} points wide, about {w_width:.2f} expected: "
                            "the two models were resampled independently. Draw one set of "
                            "image indices per resample and use it for both: the models are "
                            "compared on the same images, and most images are easy or hard "
                            "for both")
    if abs(lo - w_lo) > 0.3 or abs(hi - w_hi) > 0.3:
        raise ExerciseError(f"{where} gave ({lo:.2f}, {hi:.2f}); the paired bootstrap gives "
                            f"about ({w_lo:.2f}, {w_hi:.2f}). Per resample: draw n indices with "
                            "replacement, take a[idx].mean() - b[idx].mean() in points; then "
                            "the 2.5th and 97.5th percentiles of those differences")
    print(f"{label}: correct: ({lo:.2f}, {hi:.2f}) points around a difference of {diff:.2f} "
          f"(the library's swiftlearn.stats.paired_difference: ({w_lo:.2f}, {w_hi:.2f}))")
    return None
