"""``swiftlearn bench``: CPU latency of SwiftFormer and its peers, measured in one process.

Every model runs batch 1 at 224x224 (``--size``) in eval mode under ``torch.inference_mode``.
For each thread count, every entry is warmed up, then the entries take turns for ``rounds``
rounds of ``repeats`` timed calls each (the starting entry rotates), so slow drifts of a shared
machine hit all of them alike. Reported: the median and the interquartile range of all timed
calls, and the speed relative to timm's eager ``swiftformer_xs`` (``t_ref / t``, > 1 is faster).
Absolute times on a shared machine move from run to run; the ratios are the result.

Entries:

* swiftlearn ``swiftformer_xs/s/l1/l3``: ``eager`` (the model as trained), ``fused``
  (:func:`swiftlearn.fuse.fuse`), ``fused+compile`` (``torch.compile`` of the fused model, with
  ``--compile``), ``onnxruntime`` (the eager model exported by ``swiftlearn.export.to_onnx``,
  when the export extra is installed);
* timm's ``swiftformer_*`` with the same weights, and ``mobilevitv2_050/075/100``,
  ``efficientformer_l1`` with random weights (``pip install -e ".[dev]"`` for timm).

``--suite train`` instead times training throughput with
:func:`benchmark_throughput`. Results go to ``<out>/<suite>.md`` and
``<out>/<suite>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from .measure import count_flops
from .model import MIN_SIZE, VARIANTS, canonical_name, create_model
from .utils import amp_dtype, autocast, require

__all__ = ["MIXER_VARIANTS", "Entry", "add_cli", "benchmark_throughput", "machine_info",
           "run_latency", "run_mixers", "run_train", "to_markdown", "write"]

REFERENCE = "timm/swiftformer_xs/eager"
PEERS = ("mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100", "efficientformer_l1")
DEFAULT_MODELS = tuple(VARIANTS) + PEERS
BACKENDS = ("eager", "fused", "fused+compile", "onnxruntime")
PAPER_IPHONE14_MS = {"swiftformer_xs": 0.7, "swiftformer_s": 0.8, "swiftformer_l1": 1.1,
                     "swiftformer_l3": 1.9}


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


# ---------------------------------------------------------------- machine and model facts


def machine_info() -> dict:
    """CPU model, cores, library versions and load: what a reader needs to weigh the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    for name in ("timm", "onnxruntime"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = round(os.getloadavg()[0], 2)
    return info


def _params_gmacs(model: nn.Module, size: int) -> tuple[float, float]:
    """Parameters (millions) and GMACs (FlopCounterMode FLOPs / 2, with the CPU
    ``scaled_dot_product_attention`` formula of :func:`swiftlearn.measure.count_flops`)."""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    with torch.inference_mode():
        flops = count_flops(model, torch.randn(1, 3, size, size))
    return params, flops / 2 / 1e9


# ---------------------------------------------------------------- building the entries


def _timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


def _onnx_runner(model: nn.Module, name: str, size: int, workdir: Path, notes: list[str]):
    """``threads -> callable`` on ONNX Runtime, or None with a note saying why not."""
    try:
        from .export import onnxruntime_session, to_onnx

        require("onnxruntime")
    except ImportError as e:
        notes.append(f"ONNX Runtime column omitted: {e}.")
        return None
    path = workdir / f"{name}.onnx"
    try:
        to_onnx(model, path, image_size=size, dynamic_batch=False)
    except Exception as e:  # an exporter failure must not sink the whole benchmark
        notes.append(f"ONNX export of {path.stem} failed ({type(e).__name__}: {e}); "
                     "its ONNX Runtime row is omitted.")
        return None

    def make(threads: int):
        session = onnxruntime_session(path, threads)
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x.numpy()})

    return make


def _build_entries(models: Sequence[str], size: int, compile_: bool, onnx: bool,
                   workdir: Path, notes: list[str]) -> list[Entry]:
    from .checkpoints import to_timm
    from .fuse import fuse

    timm = _timm()
    if timm is None:
        notes.append("timm is not installed: no timm rows and no ratios (`pip install -e "
                      "\".[dev]\"`).")
    entries: list[Entry] = []
    def entry(model, impl, backend, source, runs):
        return Entry(model, impl, backend, source, lambda threads: runs, runs)

    wanted = list(models)
    if timm is not None and "swiftformer_xs" not in wanted:
        wanted.insert(0, "swiftformer_xs")  # the reference row, timm's eager XS, always runs
    for name in wanted:
        torch.manual_seed(0)
        if name in VARIANTS:
            ours = create_model(name).eval()
            if name in models:
                entries.append(entry(name, "swiftlearn", "eager", ours, ours))
                fused = fuse(ours)
                entries.append(entry(name, "swiftlearn", "fused", ours, fused))
                if compile_:
                    # inductor specialises its kernels to the thread count: one compiled copy
                    # per thread count (compiled on its first, warm-up, call)
                    entries.append(Entry(name, "swiftlearn", "fused+compile", ours,
                                         lambda threads, f=fused: torch.compile(copy.deepcopy(f)),
                                         fused))
                if onnx and (make := _onnx_runner(ours, name, size, workdir, notes)):
                    entries.append(Entry(name, "swiftlearn", "onnxruntime", ours, make))
            if timm is not None:
                theirs = timm.create_model(name).eval()
                theirs.load_state_dict(to_timm(ours))  # same weights
                entries.append(entry(name, "timm", "eager", theirs, theirs))
        elif timm is not None:
            peer = timm.create_model(name).eval()
            entries.append(entry(name, "timm", "eager", peer, peer))
    return entries


# ---------------------------------------------------------------- timing


def _time_calls(fn: Callable, x, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _summary(times: list[float]) -> dict:
    q1, med, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 \
        else (times[0],) * 3
    return {"median_ms": round(med, 3), "q1_ms": round(q1, 3), "q3_ms": round(q3, 3),
            "iqr_ms": round(q3 - q1, 3), "n": len(times)}


def run_latency(models: Sequence[str] = DEFAULT_MODELS, threads: Sequence[int] = (1, 2), *,
                rounds: int = 5, repeats: int = 10, warmup: int = 5, size: int = 224,
                compile: bool = False, onnx: bool = True, progress: bool = False) -> dict:
    """Time every entry, interleaved, and return the result dict that :func:`write` saves.

    Args:
        models: swiftlearn variants (each adds its eager, fused, ... and timm rows) and timm
            peers by name.
        threads: intra-op thread counts to measure, one after the other.
        rounds, repeats, warmup: ``rounds`` interleaved rounds of ``repeats`` timed calls per
            entry, after ``warmup`` untimed calls.
        size: square input side.
        compile: add ``torch.compile`` of the fused models (slow to compile: ~1 min each).
        onnx: add ONNX Runtime rows when ``swiftlearn.export`` and onnxruntime are available.
    """
    unknown = [m for m in models if m not in VARIANTS and m not in PEERS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(DEFAULT_MODELS)}")
    if min(rounds, repeats, *threads) < 1 or warmup < 0:
        raise ValueError("rounds, repeats and threads must be >= 1, warmup >= 0")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    notes: list[str] = []
    info = machine_info()
    saved_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        entries = _build_entries(models, size, compile, onnx, Path(tmp), notes)
        facts = {id(e.source): _params_gmacs(e.source, size) for e in entries}
        x = torch.randn(1, 3, size, size)
        try:
            for t in threads:
                torch.set_num_threads(t)
                fns = []
                with torch.inference_mode():
                    for e in entries:
                        fn = e.make_fn(t)
                        _time_calls(fn, x, max(warmup, 1))  # also compiles, on the first call
                        fns.append(fn)
                    samples: dict[str, list[float]] = {e.key: [] for e in entries}
                    for r in range(rounds):
                        order = entries[r % len(entries):] + entries[:r % len(entries)]
                        for e in order:
                            samples[e.key] += _time_calls(fns[entries.index(e)], x, repeats)
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
                        compile=compile, models=list(models), threads=list(threads)))


#: the token-mixer variants of notebook 08 (name -> ``create_model`` keyword arguments)
MIXER_VARIANTS: dict[str, dict] = {
    "additive-all": {},
    "additive-last": {"mixer_stages": [3]},
    "mhsa-last": {"mixer": "mhsa", "mixer_stages": [3]},
    "mhsa-all": {"mixer": "mhsa"},
    "separable-all": {"mixer": "separable"},
    "fastformer": {"mixer": "fastformer"},
    "none": {"mixer": "none"},
}


def run_mixers(variants: Sequence[str] = tuple(MIXER_VARIANTS), threads: Sequence[int] = (1,),
               *, model: str = "swiftformer_xs", num_classes: int = 10, size: int = 224,
               rounds: int = 5, repeats: int = 10, warmup: int = 5,
               progress: bool = False) -> dict:
    """Parameters, GMACs and eager CPU latency of every token-mixer variant, in one process.

    The variants (:data:`MIXER_VARIANTS`) take turns for ``rounds`` interleaved rounds of
    ``repeats`` calls (batch 1, ``size`` px), as in :func:`run_latency`; speed is relative to
    the published model (``additive-all``).
    """
    unknown = [v for v in variants if v not in MIXER_VARIANTS]
    if unknown:
        raise ValueError(f"unknown mixer variant(s) {unknown}; choose from "
                         f"{list(MIXER_VARIANTS)}")
    if min(rounds, repeats, *threads) < 1 or warmup < 0:
        raise ValueError("rounds, repeats and threads must be >= 1, warmup >= 0")
    info = machine_info()
    nets = {}
    for name in variants:
        torch.manual_seed(0)
        nets[name] = create_model(model, num_classes=num_classes,
                                  **MIXER_VARIANTS[name]).eval()
    facts = {name: _params_gmacs(net, size) for name, net in nets.items()}
    x = torch.randn(1, 3, size, size)
    times: dict[str, dict[int, list[float]]] = {name: {} for name in nets}
    saved = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            with torch.inference_mode():
                for net in nets.values():
                    _time_calls(net, x, max(warmup, 1))
                names = list(nets)
                for r in range(rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        times[name].setdefault(t, []).extend(_time_calls(nets[name], x, repeats))
                    if progress:
                        print(f"  threads={t} round {r + 1}/{rounds}", flush=True)
    finally:
        torch.set_num_threads(saved)
    rows = []
    ref = "additive-all" if "additive-all" in nets else None
    for name in nets:
        params, gmacs = facts[name]
        row = {"variant": name, "kwargs": MIXER_VARIANTS[name], "params_m": round(params, 3),
               "gmacs": round(gmacs, 3), "latency": {}, "speed_vs_additive": {}}
        for t in threads:
            row["latency"][str(t)] = _summary(times[name][t])
            if ref:
                row["speed_vs_additive"][str(t)] = round(
                    statistics.median(times[ref][t]) / statistics.median(times[name][t]), 3)
        rows.append(row)
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = round(os.getloadavg()[0], 2)
    return {"suite": "mixers", "machine": info, "rows": rows,
            "settings": dict(model=model, num_classes=num_classes, size=size, rounds=rounds,
                             repeats=repeats, warmup=warmup, threads=list(threads), batch=1)}


def _mixers_markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    threads = [str(t) for t in s["threads"]]
    lines = [f"# swiftlearn bench: token mixers ({s['model']}, {s['num_classes']} classes, "
             f"batch 1, {s['size']}x{s['size']}, eager, CPU)", "",
             f"{m['cpu']}, {m['logical_cpus']} logical CPUs ({m['cpu_capability']}); torch "
             f"{m['torch']}; {m['date']}; load average {m.get('load_average_start')} -> "
             f"{m.get('load_average_end')}.", "",
             f"{s['rounds']} interleaved rounds x {s['repeats']} calls per variant; median ms "
             "[IQR]; speed = t(additive-all) / t.", ""]
    lines += _latency_table(
        ["variant", "create_model arguments", "params (M)", "GMACs"], result["rows"], threads,
        lambda r: [r["variant"], ", ".join(f"{k}={v!r}" for k, v in r["kwargs"].items())
                   or "(published model)", f"{r['params_m']:.3f}", f"{r['gmacs']:.3f}"],
        "speed_vs_additive")
    lines += ["", "GMACs = FlopCounterMode FLOPs / 2, with a formula for the CPU "
              "scaled_dot_product_attention kernel (which FlopCounterMode counts 0)."]
    return "\n".join(lines) + "\n"


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
            row["latency"][str(t)] = _summary(e.times[t])
            if ref is not None:
                speed = statistics.median(ref.times[t]) / statistics.median(e.times[t])
                row["speed_vs_reference"][str(t)] = round(speed, 3)
        rows.append(row)
    result = {"suite": "latency", "machine": info, "settings": settings,
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
    if fused is not None:
        goals["fused_xs_vs_timm_xs_1thread"] = {"value": fused, "goal": ">= 1.3",
                                                 "met": fused >= 1.3}
    if eager is not None:
        goals["eager_xs_vs_timm_xs_1thread"] = {"value": eager, "goal": "within 5% (0.95-1.05+)",
                                                 "met": eager >= 0.95}
    return goals


# ---------------------------------------------------------------- output


_LABELS = {"swiftformer_xs": "SwiftFormer-XS", "swiftformer_s": "SwiftFormer-S",
           "swiftformer_l1": "SwiftFormer-L1", "swiftformer_l3": "SwiftFormer-L3"}


def _latency_table(columns: list[str], rows: list[dict], threads: list[str], first_cells,
                   speed_key: str) -> list[str]:
    """Markdown table lines: ``columns`` then, per thread count, the median [IQR] and speed."""
    head = list(columns)
    for t in threads:
        head += [f"{t} thr: ms [IQR]", f"{t} thr: speed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = first_cells(r)
        for t in threads:
            lat = r["latency"][t]
            cells.append(f"{lat['median_ms']:.1f} [{lat['q1_ms']:.1f}-{lat['q3_ms']:.1f}]")
            sp = r[speed_key].get(t)
            cells.append(f"{sp:.2f}x" if sp is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(result: dict) -> str:
    """The result as a markdown report: machine, settings, table, goals, notes."""
    if result["suite"] == "train":
        return _train_markdown(result)
    if result["suite"] == "mixers":
        return _mixers_markdown(result)
    m, s = result["machine"], result["settings"]
    threads = [str(t) for t in s["threads"]]
    lines = [
        f"# swiftlearn bench: latency (batch {s['batch']}, {s['size']}x{s['size']}, CPU)", "",
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs ({m['cpu_capability']}); torch "
        f"{m['torch']}, timm {m['timm']}, onnxruntime {m['onnxruntime']}; python {m['python']}; "
        f"{m['date']}; load average {m.get('load_average_start')} -> "
        f"{m.get('load_average_end')}.", "",
        f"{s['rounds']} interleaved rounds x {s['repeats']} calls per entry after {s['warmup']} "
        "warm-up calls; median latency in ms with the interquartile range; speed = "
        "t(timm swiftformer_xs, eager) / t (higher is faster).", "",
    ]
    lines += _latency_table(
        ["model", "implementation", "params (M)", "GMACs"], result["rows"], threads,
        lambda r: [_LABELS.get(r["model"], r["model"]), f"{r['impl']} {r['backend']}",
                   f"{r['params_m']:.2f}", f"{r['gmacs']:.2f}"], "speed_vs_reference")
    if result["goals"]:
        lines += ["", "Goals (SwiftFormer-XS, 1 thread, vs timm's eager swiftformer_xs):"]
        for name, g in result["goals"].items():
            lines.append(f"- {name}: {g['value']:.2f}x (goal {g['goal']}): "
                         f"{'met' if g['met'] else 'NOT met'}")
    lines += ["", "Notes:",
              "- GMACs = FlopCounterMode FLOPs / 2 (matmuls and convolutions only).",
              "- fused = swiftlearn.fuse.fuse(model): BatchNorms, layer scales and the two heads "
              "folded, 1x1 convolutions as matmuls in channels-last, GELU and residual additions "
              "as oneDNN post-ops; same outputs to ~1e-6. fused+compile = torch.compile of it "
              "(inductor), onnxruntime = the eager model exported with swiftlearn.export.to_onnx.",
              "- The paper's latencies (iPhone 14 Neural Engine, Core ML: XS/S/L1/L3 "
              "0.7/0.8/1.1/1.9 ms) are another device and runtime and are not comparable."]
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _train_markdown(result: dict) -> str:
    m, r = result["machine"], result["result"]
    lines = [f"# swiftlearn bench: training throughput ({result['settings']['model']})", "",
             f"{m['cpu']}, {m['logical_cpus']} logical CPUs; torch {m['torch']}; {m['date']}.",
             "", "| loop | images/s | data share |", "|---|---|---|"]
    for name in ("plain", "trainer"):
        if name in r:
            lines.append(f"| {name} | {r[name]['images_per_s']:.1f} | "
                         f"{r[name]['data_share']:.0%} |")
    extra = {k: v for k, v in r.items() if k not in ("plain", "trainer")}
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in extra.items())]
    if "data" in result["settings"]:
        lines += [f"Data: {result['settings']['data']}."]
    return "\n".join(lines) + "\n"


def write(result: dict, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<out>/<suite>.md`` and ``<out>/<suite>.json``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{result['suite']}.md", out / f"{result['suite']}.json"
    md.write_text(to_markdown(result))
    js.write_text(json.dumps(result, indent=2) + "\n")
    return md, js


def benchmark_throughput(model: str = "swiftformer_xs", data=None, *, img_size: int = 112,
                         batch_size: int = 64, steps: int = 20, warmup: int = 3,
                         rounds: int = 2, amp: str = "auto", channels_last: bool = True) -> dict:
    """Training images/s of :func:`swiftlearn.train.fit`'s own step against a plain loop.

    The trainer side runs :func:`swiftlearn.train.step.timed_step` on a
    :func:`~swiftlearn.train.step.build_trainer` made from a ``TrainConfig`` (per-sample random
    resized crops, gradient clipping, the LR schedule, EMA 0.999): the code ``fit`` runs. The
    plain loop is what one writes by hand: a random batch from the uint8 tensor, one random crop
    offset and flip for the whole batch, normalise, forward, loss on both heads, backward, AdamW
    step. Both use the same precision policy (``amp``). They alternate for ``rounds`` rounds of
    ``steps`` steps (after ``warmup`` untimed steps each) and the best round counts.

    Args:
        model: architecture name.
        data: a :class:`~swiftlearn.data.CachedImages` (default: 512 random synthetic images at
            ``img_size + 16`` px).
        img_size, batch_size, steps, warmup, rounds, amp, channels_last: the measurement.

    Returns:
        ``{"trainer": {"images_per_s", "data_share"}, "plain": {...}, "ratio": trainer/plain,
        "img_size", "batch_size", "threads", "precision"}``; ``data_share`` is the fraction of
        step time spent producing the batch.
    """
    from .data import CachedImages, resize_center
    from .train import TrainConfig, build_trainer
    from .train.step import batch_generator, classification_loss, timed_step

    if steps < 1 or warmup < 0 or rounds < 1:
        raise ValueError("steps and rounds must be >= 1 and warmup >= 0")
    if data is None:
        g = torch.Generator().manual_seed(0)
        n = max(512, batch_size * 4)
        data = CachedImages(torch.randint(0, 256, (n, 3, img_size + 16, img_size + 16),
                                          dtype=torch.uint8, generator=g),
                            torch.randint(0, 10, (n,), generator=g),
                            [str(i) for i in range(10)])
    cpu = torch.device("cpu")
    config = TrainConfig(model=model, batch_size=batch_size, img_size=img_size, amp=amp,
                         channels_last=channels_last, ema_decay=0.999, epochs=1000,
                         warmup_epochs=0)
    dtype = amp_dtype(amp, cpu)

    def make():
        torch.manual_seed(0)
        net = create_model(model, num_classes=len(data.classes)).train()
        return net.to(memory_format=torch.channels_last) if channels_last else net

    def run_plain(net, opt, n_steps, g):
        data_t = total = 0.0
        src = data.images.shape[-1]
        for _ in range(n_steps):
            t0 = time.perf_counter()
            idx = torch.randint(0, len(data), (batch_size,), generator=g)
            top, left = torch.randint(0, src - img_size + 1, (2,), generator=g).tolist()
            x = data.images[idx, :, top:top + img_size, left:left + img_size]
            if torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(3)
            x = resize_center(x, img_size)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = data.labels[idx]
            t1 = time.perf_counter()
            with autocast(cpu, dtype):
                out = net(x)
            loss = classification_loss(out, y, 0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            data_t += t1 - t0
            total += time.perf_counter() - t0
        return data_t, total

    step_count = [0]

    def run_trainer(trainer, n_steps, g):
        data_t = total = 0.0
        for _ in range(n_steps):
            idx = torch.randint(0, len(data), (batch_size,), generator=g)
            gen = batch_generator(0, 0, step_count[0], 0)
            step_count[0] += 1
            _, d, t = timed_step(trainer, data, idx, img_size, config, gen, cpu)
            data_t += d
            total += t
        return data_t, total

    plain_net = make()
    plain_opt = torch.optim.AdamW(plain_net.parameters(), lr=1e-3, weight_decay=0.05)
    trainer = build_trainer(config, make(), steps_per_epoch=100, device=cpu)
    g = torch.Generator().manual_seed(1)
    run_plain(plain_net, plain_opt, warmup, g)
    run_trainer(trainer, warmup, g)
    best: dict = {"plain": None, "trainer": None}
    for _ in range(rounds):
        for name in ("plain", "trainer"):
            d, t = (run_plain(plain_net, plain_opt, steps, g) if name == "plain" else
                    run_trainer(trainer, steps, g))
            if best[name] is None or t < best[name][1]:
                best[name] = (d, t)
    result = {name: {"images_per_s": steps * batch_size / t, "data_share": d / t}
              for name, (d, t) in best.items()}
    result.update({"ratio": result["trainer"]["images_per_s"] / result["plain"]["images_per_s"],
                   "img_size": img_size, "batch_size": batch_size,
                   "threads": torch.get_num_threads(),
                   "precision": str(dtype or torch.float32)})
    return result


def run_train(model: str = "swiftformer_xs", quick: bool = False, data_root=None,
              cache_size: int = 176, cache_dir=None, **kwargs) -> dict:
    """The ``train`` suite: :func:`benchmark_throughput`, on real images when ``data_root``.

    With ``data_root`` (an Imagenette root) both loops read the real training images from the
    decoded cache at ``cache_size`` px (built on first use); without it, synthetic images.
    """
    if quick:
        kwargs = {"steps": 2, "warmup": 1, "rounds": 1, "batch_size": 8, **kwargs}
    settings = {"model": model, **kwargs, "data": "synthetic"}
    if data_root is not None:
        from .data import load_cached

        kwargs["data"] = load_cached(data_root, "train", size=cache_size, cache_dir=cache_dir)
        settings["data"] = (f"Imagenette train ({len(kwargs['data'])} images, decoded cache at "
                            f"{cache_size} px)")
    result = benchmark_throughput(model=model, **kwargs)
    return {"suite": "train", "machine": machine_info(), "settings": settings, "result": result}


# ---------------------------------------------------------------- command line


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _names(text: str) -> list[str]:
    """``xs,s,mobilevitv2_050`` -> ``swiftformer_xs, swiftformer_s, mobilevitv2_050``."""
    return [m if m in PEERS else canonical_name(m) for m in _csv(text.lower())]


def _cmd(args: argparse.Namespace) -> int:
    if args.suite == "mixers":
        threads = [int(t) for t in _csv(args.threads)] if args.threads else [1]
        result = run_mixers(threads=threads, size=args.size,
                            rounds=args.rounds or (1 if args.quick else 5),
                            repeats=args.repeats or (2 if args.quick else 10),
                            warmup=1 if args.quick else 5, progress=True)
    elif args.suite == "train":
        model = _names(args.models)[0] if args.models else "swiftformer_xs"
        result = run_train(model, quick=args.quick, data_root=args.data,
                           cache_dir=args.cache_dir)
    else:
        models = _names(args.models) if args.models else (
            ["swiftformer_xs"] if args.quick else list(DEFAULT_MODELS))
        threads = [int(t) for t in _csv(args.threads)] if args.threads else (
            [1] if args.quick else [1, 2])
        repeats = args.repeats or (3 if args.quick else 10)
        rounds = args.rounds or (2 if args.quick else 5)
        result = run_latency(models, threads, rounds=rounds, repeats=repeats,
                             warmup=2 if args.quick else 5, size=args.size,
                             compile=args.compile, onnx=not args.no_onnx, progress=True)
    md, js = write(result, args.out)
    print(to_markdown(result))
    print(f"wrote {md} and {js}")
    return 0


def add_cli(subparsers) -> None:
    """Register ``swiftlearn bench``."""
    p = subparsers.add_parser("bench", help="CPU latency of SwiftFormer vs its peers "
                              "(markdown + JSON)", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=("latency", "train", "mixers"), default="latency",
                   help="latency: SwiftFormer vs its peers; train: training throughput of the "
                   "trainer's step vs a plain loop; mixers: params, GMACs and latency of every "
                   "token-mixer variant (notebook 08)")
    p.add_argument("--models", help="comma-separated: swiftformer_xs,s,l1,l3 and timm peers "
                   f"({', '.join(PEERS)}); default all")
    p.add_argument("--threads", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, help="timed calls per entry per round (default 10)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    p.add_argument("--compile", action="store_true", help="add torch.compile of the fused models")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    p.add_argument("--quick", action="store_true",
                   help="XS only, 1 thread, few repeats: checks the machinery in ~1 minute")
    p.add_argument("--data", help="train suite: an Imagenette root, to time both loops on the "
                   "real images (default: synthetic images)")
    p.add_argument("--cache-dir", help="train suite: decoded cache folder (with --data)")
    p.add_argument("--out", default="assets/bench", help="output folder (default assets/bench)")
    p.set_defaults(func=_cmd)
