"""What every benchmark suite shares: the machine's description, model facts, timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from ..measure import count_flops
from ..model import MIN_SIZE
from ..utils import cpu_kind

__all__ = ["check_size", "check_threads", "machine_info", "params_gmacs", "summary", "time_calls",
           "usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (taskset or a
    container's cpuset can make it smaller than ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads) -> None:
    """Refuse thread counts outside 1..:func:`usable_cpus`, before anything is built: threads
    beyond the cores only time their contention (999 threads on 2 cores took the load average
    to 214)."""
    cpus = usable_cpus()
    bad = [t for t in threads if not 1 <= t <= cpus]
    if bad:
        raise ValueError(f"thread count(s) {bad} out of range: this process may use {cpus} "
                         f"CPU(s); choose thread counts from 1 to {cpus}")


def check_size(size: int) -> None:
    """Refuse an input side SwiftFormer cannot take, before any model is built (else a torch
    shape error ends the run midway)."""
    if size < MIN_SIZE:
        raise ValueError(f"size {size} is too small: SwiftFormer downsamples 32x and needs at "
                         f"least {MIN_SIZE} px; choose a size >= {MIN_SIZE}")


def machine_info() -> dict:
    """CPU model and kind (:func:`~swiftlearn.utils.cpu_kind`: the label, the speed-relevant
    flags and the slug that names the deploy, train and latency files), cores, library versions
    and load: what a reader needs to weigh the numbers."""
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
    for name in ("timm", "onnxruntime", "openvino", "nncf"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    info["cpu_kind"] = cpu_kind()
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = round(os.getloadavg()[0], 2)
    return info


def params_gmacs(model: nn.Module, size: int) -> tuple[float, float]:
    """Parameters (millions) and GMACs (FlopCounterMode FLOPs / 2, with the CPU
    ``scaled_dot_product_attention`` formula of :func:`swiftlearn.measure.count_flops`)."""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    with torch.inference_mode():
        flops = count_flops(model, torch.randn(1, 3, size, size))
    return params, flops / 2 / 1e9


def time_calls(fn: Callable, x, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(times: list[float]) -> dict:
    q1, med, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 \
        else (times[0],) * 3
    return {"median_ms": round(med, 3), "q1_ms": round(q1, 3), "q3_ms": round(q3, 3),
            "iqr_ms": round(q3 - q1, 3), "n": len(times)}
