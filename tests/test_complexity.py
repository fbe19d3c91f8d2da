"""swiftlearn.complexity: the formulas equal the measurements; exponents; crossovers; errors."""

from __future__ import annotations

import math
import time
import tracemalloc

import pytest
import torch

from swiftlearn import complexity as cx
from swiftlearn import measure
from swiftlearn.model import build_model

GRID_N = (1, 7, 49, 196, 300)
GRID_D = (8, 48, 64)
GRID_HEADS = (1, 2, 4)


def _grid():
    for m in cx.MECHANISMS:
        for N in GRID_N:
            for D in GRID_D:
                for h in GRID_HEADS:
                    if D % h == 0 and (m == "mhsa" or h == 1):
                        yield m, N, D, h


# --- FLOPs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", cx.MECHANISMS)
def test_flops_formula_equals_flop_counter_over_grid(mechanism):
    for m, N, D, h in _grid():
        if m == mechanism:
            assert cx.attention_flops(m, N, D, h) == cx.measure_flops(m, N, D, h), (m, N, D, h)


def test_flops_batch_and_mhsa_paths_agree():
    for m in cx.MECHANISMS:
        assert cx.attention_flops(m, 49, 32, 2, batch=3) == cx.measure_flops(m, 49, 32, 2, batch=3)
        assert cx.attention_flops(m, 49, 32, 2, batch=3) == 3 * cx.attention_flops(m, 49, 32, 2)
    # the explicit bmm path and the fused SDPA kernel (with our formula) count the same
    assert cx.measure_flops("mhsa", 196, 64, 4) == cx.measure_flops("mhsa", 196, 64, 4,
                                                                    explicit=True)


def test_flops_closed_forms_and_head_independence():
    N, D = 3136, 64
    assert cx.attention_flops("mhsa", N, D) == 8 * N * D**2 + 4 * N**2 * D
    assert cx.attention_flops("separable", N, D) == 6 * N * D**2 + 2 * N * D
    assert cx.attention_flops("additive", N, D) == 8 * N * D**2 + 2 * N * D
    assert cx.attention_flops("mhsa", N, D, heads=8) == cx.attention_flops("mhsa", N, D, heads=1)
    # additive / separable -> 4/3 for wide tokens
    assert cx.attention_flops("additive", N, 512) / cx.attention_flops("separable", N, 512) \
        == pytest.approx(4 / 3, rel=1e-3)


def test_cpu_sdpa_needs_our_formula():
    from torch.utils.flop_counter import FlopCounterMode

    m, x = cx.build_attention("mhsa", 32, 2), torch.randn(1, 64, 32)
    plain = FlopCounterMode(display=False)
    with torch.no_grad(), plain:
        m(x)
    # without a formula the CPU kernel counts 0 and only the projections remain
    assert plain.get_total_flops() == 8 * 64 * 32**2
    assert cx.count_flops(m, x) == cx.attention_flops("mhsa", 64, 32, 2)


@pytest.mark.parametrize("variant", ["swiftformer_xs", "swiftformer_s", "swiftformer_l1",
                                     "swiftformer_l3"])
def test_model_flops_equal_flop_counter(variant):
    # on the meta device the same operators are dispatched without computing anything
    for H, W in ((224, 224), (97, 131), (1024, 1024)):
        assert cx.model_flops(variant, H, W) == cx.measure_model_flops(variant, H, W,
                                                                       device="meta")


def test_model_flops_equal_flop_counter_on_real_tensors():
    assert cx.model_flops("xs", 97, 131) == cx.measure_model_flops("xs", 97, 131)
    assert cx.measure_flops("mhsa", 65536, 64, 2, device="meta") == cx.attention_flops(
        "mhsa", 65536, 64, 2)


def test_model_flops_match_published_macs_and_mhsa_swap():
    gmacs = [cx.model_flops(v, 224) / 2e9 for v in ("xs", "s", "l1", "l3")]
    assert [round(g, 3) for g in gmacs] == [0.602, 0.985, 1.596, 4.008]
    for attention in ("mhsa", "separable"):
        assert cx.model_flops("xs", 64, attention=attention) == cx.measure_model_flops(
            "xs", 64, attention=attention, heads=2, device="meta")
    assert cx.model_flops("xs", 32, num_classes=0, distillation=False) == \
        cx.measure_model_flops("xs", 32, num_classes=0, distillation=False, device="meta")
    parts = cx.model_flops_breakdown("xs", 224)
    assert sum(parts.values()) == cx.model_flops("xs", 224)
    assert parts["stage4 attention"] == cx.attention_flops("additive", 49, 220)


def test_stage_grids_and_tokens_follow_the_network():
    model = build_model("xs", num_classes=0).eval()
    for H, W in ((64, 64), (97, 131), (32, 33)):
        with torch.no_grad():
            shapes = [tuple(t.shape[-2:]) for t in model.forward_stages(torch.randn(1, 3, H, W))]
        assert cx.stage_grids(H, W) == shapes
        for (h, w), stride in zip(shapes, cx.STRIDES):
            assert cx.tokens_at(H, stride, W) == h * w


# --- memory ------------------------------------------------------------------------------------

# Explicit formulas: measured - predicted in [0, 64] bytes (MHSA's division by sqrt(d) allocates
# two 0-d scalar tensors, 12 bytes). Fused SDPA: the kernel's per-thread scratch, < 1 MiB/thread.
EXPLICIT_SLACK = 64
FUSED_SLACK_PER_THREAD = 2**20


def test_peak_memory_measures_a_known_allocation():
    assert cx.peak_memory(lambda: torch.empty(2**20, dtype=torch.uint8)) == 2**20

    def two_steps():
        a = torch.empty(1000, dtype=torch.float32)  # 4,000 bytes
        b = torch.empty(500, dtype=torch.float64)  # +4,000 bytes -> peak 8,000
        del a, b
        return torch.empty(10, dtype=torch.uint8)  # 10 bytes after the peak

    assert cx.peak_memory(two_steps) == 8000
    assert cx.peak_memory(lambda: None) == 0


@pytest.mark.parametrize("mechanism", cx.MECHANISMS)
def test_memory_formula_equals_measurement(mechanism):
    for m, N, D, h in _grid():
        if m == mechanism:
            diff = cx.measure_memory(m, N, D, h) - cx.attention_memory(m, N, D, h)
            assert 0 <= diff <= EXPLICIT_SLACK, (m, N, D, h, diff)
    diff = cx.measure_memory(mechanism, 49, 16, 1, batch=2) - cx.attention_memory(
        mechanism, 49, 16, 1, batch=2)
    assert 0 <= diff <= EXPLICIT_SLACK


def test_fused_mhsa_memory_is_linear_plus_scratch():
    slack = FUSED_SLACK_PER_THREAD * torch.get_num_threads()
    for N in (49, 196, 784, 2048):
        diff = cx.measure_memory("mhsa", N, 64, 2, fused=True) - cx.attention_memory(
            "mhsa", N, 64, 2, fused=True)
        assert 0 <= diff <= slack, (N, diff)
    # the N x N matrices alone would be 32 MiB at N=2048, h=2; the fused kernel stays far below
    assert cx.measure_memory("mhsa", 2048, 64, 2, fused=True) < cx.attention_matrix_bytes(2048, 2)


def test_formulas_compute_on_paper():
    N = cx.tokens_at(1024, 4)  # 256 x 256 tokens
    assert N == 65536
    tracemalloc.start()
    t0 = time.perf_counter()
    matrix = cx.attention_matrix_bytes(N, heads=8)
    mem = cx.attention_memory("mhsa", N, 48, 8)
    flops = cx.attention_flops("mhsa", N, 48, 8)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert matrix == 8 * 65536**2 * 4 == 128 * 2**30
    assert mem > matrix and flops == 8 * N * 48**2 + 4 * N**2 * 48
    assert peak < 100_000 and elapsed < 0.1
    assert cx.peak_memory(cx.attention_memory, "mhsa", N, 48, 8) == 0


# --- growth and crossovers ---------------------------------------------------------------------


def test_fitted_exponents_on_paper():
    Ns = [1024 * 2**k for k in range(7)]
    exp = {m: cx.fit_exponent(Ns, [cx.attention_flops(m, N, 64) for N in Ns])
           for m in cx.MECHANISMS}
    assert 1.95 < exp["mhsa"] <= 2.0
    assert exp["separable"] == pytest.approx(1.0) and exp["additive"] == pytest.approx(1.0)
    mem = {m: cx.fit_exponent(Ns, [cx.attention_memory(m, N, 64, 2) for N in Ns])
           for m in cx.MECHANISMS}
    assert 1.95 < mem["mhsa"] <= 2.0
    assert mem["separable"] == pytest.approx(1.0, abs=1e-3)
    assert mem["additive"] == pytest.approx(1.0, abs=1e-3)
    assert cx.fit_exponent([1, 10, 100], [3, 300, 30000]) == pytest.approx(2.0)


def test_fitted_exponents_measured():
    Ns = [256, 512, 1024, 2048]
    for m in cx.MECHANISMS:
        flops = cx.fit_exponent(Ns, [cx.measure_flops(m, N, 32) for N in Ns])
        mem = cx.fit_exponent(Ns, [cx.measure_memory(m, N, 32) for N in Ns])
        if m == "mhsa":
            assert 1.8 < flops <= 2.0 and 1.8 < mem <= 2.0, (flops, mem)
        else:
            assert flops == pytest.approx(1.0, abs=0.01) and mem == pytest.approx(1.0, abs=0.01)
    fused = [cx.measure_memory("mhsa", N, 32, fused=True) for N in (1024, 2048, 4096, 8192)]
    assert cx.fit_exponent([1024, 2048, 4096, 8192], fused) < 1.2


def test_crossover_against_block_closed_form():
    # 8ND^2 + 4N^2 D > (18ND + 20ND^2)  <=>  N > 3D + 4.5
    for stride in cx.STRIDES:
        c = cx.crossover("block", stride)
        assert c.tokens > 3 * c.dim + 4.5
        assert cx.tokens_at(c.resolution - 1, stride) <= 3 * c.dim + 4.5
        assert c.mhsa_flops > c.other_flops
    last = cx.crossover("block", 32)
    assert (last.dim, last.resolution, last.tokens) == (220, 801, 676)
    assert "801x801" in str(last)


def test_crossover_against_model():
    for stride in cx.STRIDES:
        c = cx.crossover("model", stride, variant="xs")
        assert c.against == "swiftformer_xs"
        assert c.mhsa_flops > c.other_flops == cx.model_flops("xs", c.resolution)
        below = c.resolution - 1
        assert cx.attention_flops("mhsa", cx.tokens_at(below, stride), c.dim) <= \
            cx.model_flops("xs", below)
    assert cx.crossover("model", 4).resolution == 181
    assert cx.crossover("model", 32, max_resolution=1024) is None


# --- latency -----------------------------------------------------------------------------------


def test_measure_latency_interleaved_and_capped():
    t0 = time.perf_counter()
    times = cx.measure_latency(N=49, D=32, heads=2, repeats=5, time_cap=2.0, threads=1)
    assert set(times) == set(cx.MECHANISMS)
    assert all(t is not None and 0 < t < 1 for t in times.values())
    assert time.perf_counter() - t0 < 5
    # a 16k-token MHSA forward cannot fit in 50 ms: skipped, not run
    t0 = time.perf_counter()
    times = cx.measure_latency(["additive", "mhsa"], N=16384, D=64, time_cap=0.05, threads=1)
    assert times["mhsa"] is None and times["additive"] is not None
    assert time.perf_counter() - t0 < 2


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: cx.attention_flops("linformer", 10, 8), "unknown mechanism"),
    (lambda: cx.attention_flops("mhsa", 10, 10, heads=3), "must divide"),
    (lambda: cx.attention_flops("mhsa", 0, 8), "positive integer"),
    (lambda: cx.attention_flops("mhsa", 10.5, 8), "positive integer"),
    (lambda: cx.attention_memory("mhsa", True, 8), "positive integer"),
    (lambda: cx.attention_memory("additive", 10, 8, fused=True), "mhsa' only"),
    (lambda: cx.attention_memory("mhsa", 10, 8, bytes_per_element=0), "positive integer"),
    (lambda: cx.tokens_at(224, 3), "power of two"),
    (lambda: cx.stage_grids(16), "at least 32x32"),
    (lambda: cx.model_flops("swiftformer_xxl", 224), "unknown model"),
    (lambda: cx.model_flops("xs", 224, num_classes=-1), "num_classes"),
    (lambda: cx.fit_exponent([1], [1]), "length >= 2"),
    (lambda: cx.fit_exponent([1, 2], [0, 1]), "positive"),
    (lambda: cx.fit_exponent([2, 2], [1, 3]), "distinct"),
    (lambda: cx.crossover("mlp"), "against"),
    (lambda: cx.crossover("block", stride=2), "stage strides"),
    (lambda: cx.measure_latency([], 10, 8), "at least one"),
    (lambda: cx.measure_latency(["mhsa"], 10, 8, time_cap=0), "time_cap"),
    (lambda: cx.count_flops(42), "callable"),
    (lambda: cx.peak_memory("x"), "callable"),
    (lambda: cx.measure_flops("mhsa", 10, 8, device="mps"), "device"),
])
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_mechanism_labels_cover_all():
    assert set(cx.MECHANISM_LABELS) == set(cx.MECHANISMS)
    assert math.isclose(cx.attention_memory("additive", 10, 8) / cx.BYTES_PER_ELEMENT,
                        10 * (4 * 8 + 1) + 8)


def test_instruments_are_reexported_from_measure():
    """count_flops and peak_memory live in swiftlearn.measure; complexity keeps their names."""
    assert cx.count_flops is measure.count_flops and cx.peak_memory is measure.peak_memory
    assert {"count_flops", "peak_memory"} <= set(cx.__all__)
    for name in cx.__all__:
        assert hasattr(cx, name), name
