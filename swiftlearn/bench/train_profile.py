"""Where a training step's time goes, and what would make it faster (``swiftlearn bench --suite
train``).

Three views of the trainer's own step (:func:`swiftlearn.train.step.make_batch` and the body of
:func:`~swiftlearn.train.step.train_step`, phase by phase) at each training size:

* **phases**: making the batch (crops, flips), forward (with the loss), backward, the optimizer
  (gradient clipping and AdamW), the EMA update. CPU ops run synchronously, so a wall clock
  between phases measures each one.
* **op classes**: ``torch.profiler``'s self CPU time per ATen op over a few steps, grouped
  (convolutions, matrix products, normalisation, activations, element-wise, reductions, the
  optimizer's fused ``_foreach`` kernels, layout copies).
* **variants**, interleaved so that a drift of the machine hits them alike: the baseline (eager,
  batch 64, every usable thread, channels-last), batch 128, one thread, channels-last off, and
  with ``compile=True`` ``torch.compile`` of the model measured in child processes, once with an
  empty inductor cache (cold: what a learner's first run pays) and once with the cache it left
  (warm), each with its warm-up time.

The images/s are set against the arithmetic the step does (about three times the forward's
FLOPs: the backward computes two products per forward product) and against an *estimate* of
the CPU's dense bf16 peak from its flags and clock; :func:`cpu_peak` says how it was estimated.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..data import CachedImages
from ..measure import count_flops
from ..model import build_model
from ..train import TrainConfig, build_trainer
from ..train.step import (
    batch_generator,
    classification_loss,
    logits_of,
    make_batch,
    param_groups,
)
from ..utils import autocast
from .common import usable_cpus

__all__ = ["OP_CLASSES", "PHASES", "cpu_peak", "phase_times", "profile_training",
           "train_flops_per_image"]

PHASES = ("data", "forward", "backward", "optimizer", "ema")

#: (class, regular expression over ATen op names), first match wins
OP_CLASSES = (
    ("convolution", r"conv|mkldnn_convolution"),
    ("matmul / linear", r"addmm|::mm$|bmm|matmul|linear"),
    ("normalisation", r"batch_norm|layer_norm|linalg_vector_norm|::norm$|normalize"),
    ("activation", r"gelu|relu|hardswish|sigmoid|silu"),
    ("optimizer (_foreach)", r"_foreach|_fused_adam"),
    ("layout / copy", r"copy_|clone|contiguous|_to_copy|::to$|empty_strided|as_strided|cat"),
    ("reduction", r"::sum|::mean|::max|::amax|softmax|cross_entropy|nll_loss"),
    ("element-wise", r"add|mul|div|sub|neg|lerp|sqrt|pow|where|fill_|zero_|clamp"),
)


def _config(size: int, batch_size: int, channels_last: bool, amp: str) -> TrainConfig:
    return TrainConfig(batch_size=batch_size, img_size=size, channels_last=channels_last,
                       amp=amp, ema_decay=0.995, epochs=1000, warmup_epochs=0)


def _trainer(model: str, config: TrainConfig, classes: int, compiled: bool = False,
             optimizer: str | None = None):
    """The trainer ``fit`` builds; ``optimizer`` "fused" or "for-loop" swaps in AdamW with that
    implementation (same hyper-parameters), to measure what the choice costs."""
    torch.manual_seed(0)
    net = build_model(model, num_classes=classes).train()
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    trainer = build_trainer(config, net, steps_per_epoch=100, device=torch.device("cpu"))
    if optimizer is not None:
        trainer.optimizer = torch.optim.AdamW(
            param_groups(net, config.weight_decay), lr=config.lr, betas=(0.9, 0.999),
            fused=optimizer == "fused", foreach=False)
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    if compiled:
        trainer.net = torch.compile(net)
    return trainer


def _synthetic(size: int, n: int = 512) -> CachedImages:
    g = torch.Generator().manual_seed(0)
    return CachedImages(torch.randint(0, 256, (n, 3, size + 16, size + 16), dtype=torch.uint8,
                                      generator=g),
                        torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])


def phase_times(trainer, data: CachedImages, config: TrainConfig, step: int,
                g: torch.Generator) -> dict[str, float]:
    """One training step, as :func:`~swiftlearn.train.step.train_step` runs it, with the seconds
    of each of :data:`PHASES`."""
    cpu = torch.device("cpu")
    t = trainer
    idx = torch.randint(0, len(data), (config.batch_size,), generator=g)
    t0 = time.perf_counter()
    batch = make_batch(data, idx, config.img_size, config, batch_generator(0, 0, step, 0), cpu)
    t1 = time.perf_counter()
    with autocast(cpu, t.dtype):
        outputs = t.net(batch.x)
    loss = classification_loss(outputs, batch.y, t.label_smoothing, None, batch.perm, batch.lam)
    t2 = time.perf_counter()
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t3 = time.perf_counter()
    if t.clip_grad:
        t.scaler.unscale_(t.optimizer)
        nn.utils.clip_grad_norm_(t.model.parameters(), t.clip_grad)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    t4 = time.perf_counter()
    if t.ema is not None:
        t.ema.update(t.model)
    int((logits_of(outputs).argmax(1) == batch.y).sum())  # what the real step reads back
    t5 = time.perf_counter()
    return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)))


def _steps(trainer, data, config, n: int, first: int, g) -> dict[str, float]:
    total = dict.fromkeys(PHASES, 0.0)
    for i in range(n):
        for k, v in phase_times(trainer, data, config, first + i, g).items():
            total[k] += v
    return total


def _op_class(name: str) -> str:
    for label, pattern in OP_CLASSES:
        if re.search(pattern, name):
            return label
    return "other"


def op_classes(trainer, data, config, steps: int = 3) -> dict[str, float]:
    """Self CPU milliseconds per step of each op class (:data:`OP_CLASSES`), largest first."""
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _steps(trainer, data, config, steps, 10_000, g)
    classes: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        label = _op_class(event.key)
        classes[label] = classes.get(label, 0.0) + event.self_cpu_time_total / 1e3 / steps
    return dict(sorted(classes.items(), key=lambda kv: -kv[1]))


def train_flops_per_image(model: str, size: int) -> float:
    """About 3x the forward FLOPs (FlopCounterMode: matrix products and convolutions only): the
    backward computes a gradient for each operand of every forward product."""
    net = build_model(model, num_classes=10).eval()
    return 3 * count_flops(net, torch.zeros(1, 3, size, size))


def cpu_peak() -> dict:
    """An estimate of this CPU's dense peak per core: FLOPs per cycle from its instruction sets
    (AMX tiles 1024 bf16 FLOPs/cycle; AVX-512 BF16 dot products 64; AVX-512 FP32 FMA 32, i.e.
    one 512-bit FMA a cycle, which is what AMD Zen 4 and many Xeons sustain; AVX2 FMA 32, two
    256-bit FMA units as on Zen 3 and Intel since Haswell) times the clock in
    /proc/cpuinfo (the current one, which may sit below the turbo clock)."""
    flags, mhz = set(), 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    if "amx_bf16" in flags:
        per_cycle, basis = 1024, "AMX bf16 tiles (1024 FLOPs/cycle)"
    elif "avx512_bf16" in flags:
        per_cycle, basis = 64, "AVX-512 BF16 dot products (64 FLOPs/cycle)"
    elif "avx512f" in flags:
        per_cycle, basis = 32, "AVX-512 FP32 FMA (32 FLOPs/cycle)"
    else:
        per_cycle, basis = 32, "AVX2 FMA (32 FLOPs/cycle: two 256-bit FMA units, as on Zen 3)"
    ghz = mhz / 1e3 if mhz else 2.0
    return {"flops_per_s_per_core": per_cycle * ghz * 1e9, "basis": basis, "ghz": ghz,
            "flags": sorted(flags & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni",
                                     "avx512f", "avx2"})}


def _compile_probe(model: str, size: int, batch_size: int, steps: int, cache: str) -> dict:
    """``torch.compile`` of the model, timed in a child process with its own inductor cache
    folder ``cache``: its warm-up (the first steps, compilation included) and then images/s."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    args = json.dumps({"model": model, "size": size, "batch_size": batch_size, "steps": steps})
    proc = subprocess.run([sys.executable, "-m", __name__, args], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _probe_main(args: dict) -> None:
    config = _config(args["size"], args["batch_size"], True, "auto")
    data = _synthetic(args["size"], max(512, 4 * args["batch_size"]))
    trainer = _trainer(args["model"], config, 10, compiled=True)
    g = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    _steps(trainer, data, config, 2, 0, g)  # compiles the forward and the backward
    warmup = time.perf_counter() - t0
    total = sum(_steps(trainer, data, config, args["steps"], 2, g).values())
    print(json.dumps({"warmup_s": warmup,
                      "images_per_s": args["steps"] * args["batch_size"] / total}))


def profile_training(model: str = "swiftformer_xs", sizes=(64, 96), *,
                     data: CachedImages | None = None, batch_size: int = 64, steps: int = 8,
                     warmup: int = 3,
                     rounds: int = 2, compile: bool = False, amp: str = "auto",
                     progress: bool = False) -> dict:
    """Phases, op classes and variants of the training step at each of ``sizes`` (see the
    module docstring). ``data``: cached images to crop from (default: synthetic);
    ``batch_size``: the baseline's (the trainer's default, 64), doubled in one variant."""
    if steps < 1 or rounds < 1 or warmup < 0:
        raise ValueError("steps and rounds must be >= 1 and warmup >= 0")
    threads0, cpus = torch.get_num_threads(), usable_cpus()
    # name -> (batch, threads, channels-last, optimizer: None = the trainer's own)
    b = batch_size
    variants = {"baseline": (b, threads0, True, None),
                f"batch {2 * b}": (2 * b, threads0, True, None),
                "channels-last off": (b, threads0, False, None),
                "AdamW for-loop": (b, threads0, True, "for-loop"),
                "AdamW fused": (b, threads0, True, "fused")}
    if threads0 > 1:
        variants["1 thread"] = (b, 1, True, None)
    peak = cpu_peak()
    out = {"sizes": {}, "peak": peak, "threads": threads0, "usable_cpus": cpus,
           "settings": {"steps": steps, "warmup": warmup, "rounds": rounds, "amp": amp,
                 "batch_size": batch_size}}
    try:
        for size in sizes:
            src = data if data is not None else _synthetic(size)
            trainers = {}
            for name, (batch, threads, cl, opt) in variants.items():
                config = _config(size, batch, cl, amp)
                trainers[name] = (_trainer(model, config, len(src.classes), optimizer=opt),
                                  config, threads)
            g = torch.Generator().manual_seed(1)
            for trainer, config, threads in trainers.values():
                torch.set_num_threads(threads)
                _steps(trainer, src, config, warmup, 0, g)
            best: dict[str, dict] = {}
            for r in range(rounds):  # interleaved; each variant keeps its fastest round
                for name, (trainer, config, threads) in trainers.items():
                    torch.set_num_threads(threads)
                    phases = _steps(trainer, src, config, steps, warmup + r * steps, g)
                    if name not in best or sum(phases.values()) < sum(best[name].values()):
                        best[name] = phases
                if progress:
                    print(f"  {size} px: round {r + 1}/{rounds} done", flush=True)
            torch.set_num_threads(threads0)
            trainer, config, _ = trainers["baseline"]
            classes = op_classes(trainer, src, config)
            flops = train_flops_per_image(model, size)
            rows = {}
            for name, phases in best.items():
                batch = trainers[name][1].batch_size
                total = sum(phases.values())
                rows[name] = {"images_per_s": steps * batch / total,
                              "ms_per_step": total / steps * 1e3,
                              "phases_ms": {k: v / steps * 1e3 for k, v in phases.items()}}
            base = rows["baseline"]["images_per_s"]
            if compile:
                with tempfile.TemporaryDirectory(prefix="swiftlearn-inductor-") as cache:
                    for label in ("compiled (cold cache)", "compiled (warm cache)"):
                        if progress:
                            print(f"  {size} px: {label} ...", flush=True)
                        rows[label] = _compile_probe(model, size, b, steps * rounds, cache)
            achieved = base * flops
            out["sizes"][str(size)] = {
                "rows": rows, "op_classes_ms": classes, "train_flops_per_image": flops,
                "achieved_flops_per_s": achieved,
                "peak_share": achieved / (peak["flops_per_s_per_core"] * threads0),
                "speedup_vs_baseline": {n: r["images_per_s"] / base for n, r in rows.items()
                                        if "images_per_s" in r}}
    finally:
        torch.set_num_threads(threads0)
    return out


if __name__ == "__main__":  # the child process of _compile_probe
    _probe_main(json.loads(sys.argv[1]))
