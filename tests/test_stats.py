"""swiftlearn.stats: intervals of accuracies and paired comparisons, against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from swiftlearn import stats


@pytest.mark.parametrize(("p", "df", "want"), [(0.975, 1, 12.7062), (0.975, 2, 4.3027),
                                               (0.975, 4, 2.7764), (0.95, 10, 1.8125),
                                               (0.975, 200, 1.9719), (0.025, 3, -3.1824)])
def test_student_t_quantiles_match_the_tables(p, df, want):
    assert stats.student_t_quantile(p, df) == pytest.approx(want, abs=2e-4)


def test_student_t_refuses_nonsense():
    with pytest.raises(ValueError, match="degree of freedom"):
        stats.student_t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="0 < p < 1"):
        stats.student_t_quantile(1.0, 3)


def test_wilson_interval_is_the_binomial_one_for_a_large_sample():
    lo, hi = stats.wilson_interval(2277, 3925)  # 58.0 % on Imagenette's validation set
    se = math.sqrt(0.58 * 0.42 / 3925) * 100
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.01)
    assert lo < 58.01 < hi


def test_wilson_interval_stays_inside_0_100_and_is_asymmetric_at_the_edge():
    lo, hi = stats.wilson_interval(10, 10)
    assert hi == 100 and 65 < lo < 75  # 10/10 right does not prove 100 %
    lo, hi = stats.wilson_interval(0, 10)
    assert lo == 0 and 25 < hi < 35
    with pytest.raises(ValueError, match="correct"):
        stats.wilson_interval(11, 10)


def test_seed_spread_uses_student_t_with_k_minus_1_degrees_of_freedom():
    s = stats.seed_spread([58.0, 60.0])
    assert s["mean"] == 59.0 and s["sd"] == pytest.approx(math.sqrt(2))
    assert s["hi"] - s["mean"] == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2), abs=1e-3)
    one = stats.seed_spread([58.0])
    assert one["sd"] is None and one["lo"] is None
    with pytest.raises(ValueError, match="at least one"):
        stats.seed_spread([])


def test_mcnemar_exact_p_values():
    assert stats.mcnemar_p(0, 0) == 1.0
    assert stats.mcnemar_p(5, 5) == 1.0
    assert stats.mcnemar_p(10, 0) == pytest.approx(2 / 1024)  # ten heads in ten flips, both ways
    assert stats.mcnemar_p(30, 10) == pytest.approx(0.0022, abs=1e-4)


def test_paired_difference_counts_only_the_disagreements():
    rng = np.random.default_rng(0)
    a = rng.random(4000) < 0.6
    same = stats.paired_difference(a, a)
    assert same["diff"] == same["lo"] == same["hi"] == 0 and same["p"] == 1.0
    b = a.copy()
    b[np.flatnonzero(a)[:120]] = False  # B loses 120 images that A gets right: 3 points
    r = stats.paired_difference(a, b)
    assert r["diff"] == pytest.approx(3.0) and r["only_a"] == 120 and r["only_b"] == 0
    assert 2.4 < r["lo"] < 3.0 < r["hi"] < 3.6 and r["p"] < 1e-30
    with pytest.raises(ValueError, match="same images"):
        stats.paired_difference(a, b[:-1])


def test_compare_runs_covers_zero_for_two_draws_of_the_same_variant():
    rng = np.random.default_rng(1)
    runs = [rng.random(3925) < 0.6 for _ in range(4)]  # four "seeds" of one model, independent
    r = stats.compare_runs(runs[:2], runs[2:], resamples=500)
    assert r["lo"] < 0 < r["hi"] and r["seeds_resampled"]


def test_compare_runs_sees_a_real_gap_and_seed_noise_widens_it():
    rng = np.random.default_rng(2)
    hard = rng.random(3925)  # each image's difficulty, shared by every run: paired outcomes
    a = [hard < 0.65 + rng.normal(0, 0.002) for _ in range(3)]
    b = [hard < 0.60 + rng.normal(0, 0.002) for _ in range(3)]
    r = stats.compare_runs(a, b, resamples=500)
    assert 3.5 < r["lo"] < r["diff"] < r["hi"] < 6.5
    noisy_b = [hard < m for m in (0.55, 0.60, 0.65)]  # the same mean, seeds far apart
    wide = stats.compare_runs(a, noisy_b, resamples=500)
    assert wide["hi"] - wide["lo"] > 2 * (r["hi"] - r["lo"])
    one = stats.compare_runs(a[:1], b[:1], resamples=200)
    assert not one["seeds_resampled"]
    with pytest.raises(ValueError, match="same images"):
        stats.compare_runs(a, [x[:-1] for x in b])
    with pytest.raises(ValueError, match="at least one run"):
        stats.compare_runs([], b)


def test_packed_outcomes_round_trip_and_refuse_the_wrong_count():
    rng = np.random.default_rng(3)
    correct = rng.random(3925) < 0.5
    packed = stats.pack_correct(correct)
    assert len(packed) < 700 and packed.isascii()
    assert np.array_equal(stats.unpack_correct(packed, 3925), correct)
    with pytest.raises(ValueError, match="not 3000"):
        stats.unpack_correct(packed, 3000)
