"""The ``latency`` suite: SwiftFormer (eager, fused, bf16, compiled, ONNX Runtime, OpenVINO, int8)
against timm's peers, interleaved in one process."""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..model import MIN_SIZE, VARIANTS, build_model
from .common import check_size, check_threads, machine_info, params_gmacs, summary, time_calls
from .paths import PATH_BACKENDS, swiftformer_paths

__all__ = ["BACKENDS", "DEFAULT_MODELS", "PEERS", "PEER_SIZES", "REFERENCE", "Entry",
           "run_latency", "size_range"]

REFERENCE = "timm/swiftformer_xs/eager"
PEERS = ("mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100", "efficientformer_l1")
DEFAULT_MODELS = tuple(VARIANTS) + PEERS
BACKENDS = PATH_BACKENDS
#: input sides (min, max) of the peers narrower than SwiftFormer's (any >= MIN_SIZE; as are
#: MobileViT-v2's): EfficientFormer-L1's last-stage attention biases are built for a 7x7 map,
#: so it takes only sizes whose 32x-downsampled side is 7
PEER_SIZES = {"efficientformer_l1": (193, 224)}


@dataclass
class Entry:
    """One timed thing: ``make_fn(threads)`` gives the callable that runs a batch.

    ``source`` is the eager module it came from (its GMACs are reported), ``runs`` the module
    that actually runs when there is one (its parameters are counted).
    """

    model: str
    impl: str  # "swiftlearn" or "timm"
    backend: str
    source: nn.Module
    make_fn: Callable[[int], Callable]  # threads -> callable(x)
    runs: nn.Module | None = None
    times: dict[int, list[float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.impl}/{self.model}/{self.backend}"


def size_range(models: Sequence[str]) -> tuple[int, int | None]:
    """The input sides every one of ``models`` accepts: ``(min, max)``, max None for no limit."""
    limits = [PEER_SIZES[m] for m in models if m in PEER_SIZES]
    return (max([MIN_SIZE] + [lo for lo, _ in limits]),
            min((hi for _, hi in limits), default=None))


def _check_size(models: Sequence[str], size: int) -> None:
    """Refuse a size some model cannot run, naming the range, before any model is built (else
    a torch shape error ends the run midway)."""
    check_size(size)
    for m in models:
        if m in PEER_SIZES and not PEER_SIZES[m][0] <= size <= PEER_SIZES[m][1]:
            (lo, hi), (lo_all, hi_all) = PEER_SIZES[m], size_range(models)
            raise ValueError(f"size {size} does not fit {m}, which takes {lo}-{hi} px only (its "
                             "attention is built for a 7x7 last-stage map); choose a size from "
                             f"{lo_all} to {hi_all}, or leave {m} out of the models")


def _timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


def _calibration(size: int, root, notes: list[str]) -> tuple[torch.Tensor, str]:
    """The int8 rows' calibration images: 64 from ``root``, or smooth random pictures."""
    from ..export.quantize import calibration_images
    from ..export.verify import sample_pixels
    from ..utils import normalize_pixels

    if root is not None:
        calib = calibration_images(root, 64, size)
        return calib, f"{len(calib)} images from {root}"
    calib = torch.cat([normalize_pixels(p) for p in sample_pixels(None, [(size, size)], 32)])
    return calib, ("32 smooth random pictures (pass --data for real images; the latency does "
                   "not depend on it)")


def _build_entries(models: Sequence[str], size: int, compile_: bool, onnx: bool,
                   workdir: Path, notes: list[str], int8: bool = False,
                   calibration_root=None, openvino: bool = True) -> list[Entry]:
    from ..checkpoints import to_timm

    timm = _timm()
    if timm is None:
        notes.append("timm is not installed: no timm rows and no ratios (`pip install -e "
                      "\".[dev]\"`).")
    entries: list[Entry] = []
    calib, calib_note = _calibration(size, calibration_root, notes) if int8 else (None, "")

    def entry(model, impl, backend, source, runs):
        return Entry(model, impl, backend, source, lambda threads: runs, runs)

    wanted = list(models)
    if timm is not None and "swiftformer_xs" not in wanted:
        wanted.insert(0, "swiftformer_xs")  # the reference row, timm's eager XS, always runs
    for name in wanted:
        torch.manual_seed(0)
        if name in VARIANTS:
            ours = build_model(name).eval()
            if name in models:
                for p in swiftformer_paths(ours, name, size, workdir, notes, compile=compile_,
                                           onnx=onnx, int8=int8, openvino=openvino,
                                           calibration=calib, calibration_note=calib_note):
                    entries.append(Entry(name, "swiftlearn", p.backend, ours, p.make, p.runs))
            if timm is not None:
                theirs = timm.create_model(name).eval()
                theirs.load_state_dict(to_timm(ours))  # same weights
                entries.append(entry(name, "timm", "eager", theirs, theirs))
        elif timm is not None:
            peer = timm.create_model(name).eval()
            entries.append(entry(name, "timm", "eager", peer, peer))
    return entries


def run_latency(models: Sequence[str] = DEFAULT_MODELS, threads: Sequence[int] = (1, 2), *,
                rounds: int = 5, repeats: int = 10, warmup: int = 5, size: int = 224,
                compile: bool = False, onnx: bool = True, int8: bool = False,
                calibration_root=None, openvino: bool = True, progress: bool = False) -> dict:
    """Time every entry, interleaved, and return the result dict that :func:`write` saves.

    Args:
        models: swiftlearn variants (each adds its eager, fused, ... and timm rows) and timm
            peers by name.
        threads: intra-op thread counts to measure, one after the other.
        rounds, repeats, warmup: ``rounds`` interleaved rounds of ``repeats`` timed calls per
            entry, after ``warmup`` untimed calls.
        size: square input side; every model must take it (:func:`size_range`:
            EfficientFormer-L1 only 193-224 px).
        compile: add ``torch.compile`` of the fused models (slow to compile: ~1 min each).
        onnx: add ONNX Runtime rows when ``swiftlearn.export`` and onnxruntime are available,
            and OpenVINO rows (on the same ONNX graph) when ``openvino`` and it is installed.
        int8: with ``onnx``, add the static int8 rows (ONNX Runtime:
            :func:`swiftlearn.export.quantize.quantize_int8`; OpenVINO: NNCF), calibrated on 64
            images from ``calibration_root`` (an Imagenette root or image folder) or, without
            one, on smooth random pictures.
        (every row: :mod:`swiftlearn.bench.paths`)
    """
    unknown = [m for m in models if m not in VARIANTS and m not in PEERS]
    if not models:
        raise ValueError(f"no models given; choose from {list(DEFAULT_MODELS)}")
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(DEFAULT_MODELS)}")
    if min(rounds, repeats, *threads) < 1 or warmup < 0:
        raise ValueError("rounds, repeats and threads must be >= 1, warmup >= 0")
    check_threads(threads)
    _check_size(models, size)
    if _timm() is None and not any(m in VARIANTS for m in models):
        raise ValueError(f"the timm peers {list(models)} need timm, which is not installed: "
                         "pip install -e \".[dev]\", or add a SwiftFormer to the models")
    notes: list[str] = []
    info = machine_info()
    saved_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        entries = _build_entries(models, size, compile, onnx, Path(tmp), notes, int8,
                                 calibration_root, openvino)
        facts = {id(e.source): params_gmacs(e.source, size) for e in entries}
        x = torch.randn(1, 3, size, size)
        try:
            for t in threads:
                torch.set_num_threads(t)
                fns = []
                with torch.inference_mode():
                    for e in entries:
                        fn = e.make_fn(t)
                        time_calls(fn, x, max(warmup, 1))  # also compiles, on the first call
                        fns.append(fn)
                    samples: dict[str, list[float]] = {e.key: [] for e in entries}
                    for r in range(rounds):
                        order = entries[r % len(entries):] + entries[:r % len(entries)]
                        for e in order:
                            samples[e.key] += time_calls(fns[entries.index(e)], x, repeats)
                        if progress:
                            print(f"  threads={t} round {r + 1}/{rounds}", flush=True)
                for e in entries:
                    e.times[t] = samples[e.key]
        finally:
            torch.set_num_threads(saved_threads)
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = round(os.getloadavg()[0], 2)
        load = max(info["load_average_start"], info["load_average_end"])
        if load >= 0.75 * (os.cpu_count() or 1):
            notes.append(
                f"The machine was busy (load average up to {load} on {os.cpu_count()} logical "
                "CPUs): other processes competed for the cores, so absolute times are inflated, "
                "and multi-thread figures are unreliable (a thread that loses its core stalls "
                "the others at every synchronisation). The 1-thread ratios are the robust "
                "result.")
    return _result(entries, facts, threads, notes, info,
                   dict(rounds=rounds, repeats=repeats, warmup=warmup, size=size, batch=1,
                        compile=compile, int8=int8, models=list(models),
                        threads=list(threads)))


def _result(entries, facts, threads, notes, info, settings) -> dict:
    rows = []
    ref = next((e for e in entries if e.key == REFERENCE), None)
    for e in entries:
        params, gmacs = facts[id(e.source)]
        if e.runs is not None:  # what runs (fused: one head, no norms)
            params = sum(p.numel() for p in e.runs.parameters()) / 1e6
        row = {"model": e.model, "impl": e.impl, "backend": e.backend,
               "params_m": round(params, 3), "gmacs": round(gmacs, 3), "latency": {},
               "speed_vs_reference": {}}
        for t in threads:
            row["latency"][str(t)] = summary(e.times[t])
            if ref is not None:
                speed = statistics.median(ref.times[t]) / statistics.median(e.times[t])
                row["speed_vs_reference"][str(t)] = round(speed, 3)
        rows.append(row)
    result = {"suite": "latency", "file_stem": f"latency-{info['cpu_kind']['slug']}",
              "machine": info, "settings": settings,
              "reference": REFERENCE if ref else None, "rows": rows,
              "notes": list(dict.fromkeys(notes))}
    result["goals"] = _goals(rows)
    return result


def _goals(rows: list[dict]) -> dict:
    """The issue's goals for SwiftFormer-XS at 1 thread, reported (not asserted)."""
    def speed(impl, backend):
        for r in rows:
            if (r["model"], r["impl"], r["backend"]) == ("swiftformer_xs", impl, backend):
                return r["speed_vs_reference"].get("1")
        return None

    fused, eager = speed("swiftlearn", "fused"), speed("swiftlearn", "eager")
    goals = {}
    paths = [v for v in (speed("swiftlearn", b) for b in BACKENDS) if v is not None]
    if speed("swiftlearn", "onnxruntime int8") is not None:
        best = max(paths)
        goals["best_cpu_path_xs_vs_timm_xs_1thread"] = {"value": best, "goal": ">= 3",
                                                         "met": best >= 3}
    if fused is not None:
        goals["fused_xs_vs_timm_xs_1thread"] = {"value": fused, "goal": ">= 1.3",
                                                 "met": fused >= 1.3}
    if eager is not None:
        goals["eager_xs_vs_timm_xs_1thread"] = {"value": eager, "goal": "within 5% (0.95-1.05+)",
                                                 "met": eager >= 0.95}
    return goals
