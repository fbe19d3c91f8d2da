"""The ``mixers`` suite: parameters, GMACs and latency of every token-mixer variant
(notebook 08)."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence

import torch

from ..model import build_model
from .common import check_size, check_threads, machine_info, params_gmacs, summary, time_calls

__all__ = ["MIXER_VARIANTS", "run_mixers"]


#: the token-mixer variants of notebook 08 (name -> ``build_model`` keyword arguments)
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
    check_threads(threads)
    check_size(size)
    info = machine_info()
    nets = {}
    for name in variants:
        torch.manual_seed(0)
        nets[name] = build_model(model, num_classes=num_classes,
                                  **MIXER_VARIANTS[name]).eval()
    facts = {name: params_gmacs(net, size) for name, net in nets.items()}
    x = torch.randn(1, 3, size, size)
    times: dict[str, dict[int, list[float]]] = {name: {} for name in nets}
    saved = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            with torch.inference_mode():
                for net in nets.values():
                    time_calls(net, x, max(warmup, 1))
                names = list(nets)
                for r in range(rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        times[name].setdefault(t, []).extend(time_calls(nets[name], x, repeats))
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
            row["latency"][str(t)] = summary(times[name][t])
            if ref:
                row["speed_vs_additive"][str(t)] = round(
                    statistics.median(times[ref][t]) / statistics.median(times[name][t]), 3)
        rows.append(row)
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = round(os.getloadavg()[0], 2)
    return {"suite": "mixers", "machine": info, "rows": rows,
            "settings": dict(model=model, num_classes=num_classes, size=size, rounds=rounds,
                             repeats=repeats, warmup=warmup, threads=list(threads), batch=1)}
