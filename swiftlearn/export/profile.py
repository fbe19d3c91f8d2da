"""Where a runtime's time goes: the per-op profile of one ONNX Runtime session, one OpenVINO
compiled model or one PyTorch model, in one shape for all three (:class:`OpProfile`).

``OnnxRunner(path).profile(x)`` and ``OpenVinoRunner(path).profile(x)`` run ``x`` ``calls``
times after ``warmup`` calls with the runtime's own profiler on, and sum each op's kernel time
per call. The rows say what the runtime made of the graph: how many kernels it runs after its
fusions (ONNX Runtime's ``QLinearConv``, ``FusedMatMul``; OpenVINO folds GELU and residual adds
into its convolutions), and, for OpenVINO, which kernel it picked for each op, whose name
carries the instruction set and the precision (``brgconv_avx512_1x1_I8`` is an int8 1x1
convolution on AVX-512, ``..._bf16`` a bf16 one). ``swiftlearn bench --suite deploy`` prints
the heaviest rows of each runtime's profile under its latency table.

:func:`pytorch_profile` gives the same shape for a PyTorch model (``torch.profiler``): the ops
by self time, so a convolution's wrappers do not count its time twice, and "kernels" are the
ops that call no other op (``mkldnn::_linear_pointwise`` is the fused model's matrix product
with its GELU or residual post-op).

Profiling adds its own overhead to each kernel: compare shares within one profile, and
latencies from the interleaved timing, not from here.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass

__all__ = ["OpProfile", "OpTime", "onnxruntime_events", "onnxruntime_profile",
           "openvino_profile", "pytorch_profile"]


@dataclass
class OpTime:
    op: str  #: the op type the runtime ran (after its fusions)
    kernel: str  #: OpenVINO: the kernel it picked (ISA and precision); elsewhere ""
    nodes: float  #: how many such kernels one call runs
    ms: float  #: their kernel time per call
    share: float  #: of the profile's kernel time, in %


@dataclass
class OpProfile:
    runtime: str  #: "onnxruntime", "openvino" or "pytorch"
    calls: int
    kernel_ms: float  #: all kernels' time per call
    run_ms: float | None  #: the median whole call as the runtime timed it (None: not recorded)
    nodes: float  #: kernels run per call
    ops: list[OpTime]  #: heaviest first

    def to_dict(self) -> dict:
        return asdict(self)

    def top(self, n: int = 6) -> list[OpTime]:
        return self.ops[:n]


def _profile(runtime: str, calls: int, totals: dict, counts: dict, run_ms: float | None,
             kernels: int | None = None) -> OpProfile:
    """``kernels``: how many kernels all the calls ran, where that is not every counted op."""
    kernel = sum(totals.values())
    ops = [OpTime(op, kern, round(counts[op, kern] / calls, 2), round(us / calls / 1e3, 4),
                  round(100 * us / kernel, 2) if kernel else 0.0)
           for (op, kern), us in sorted(totals.items(), key=lambda kv: -kv[1])]
    return OpProfile(runtime, calls, round(kernel / calls / 1e3, 4),
                     None if run_ms is None else round(run_ms, 4),
                     round((sum(counts.values()) if kernels is None else kernels) / calls, 2), ops)


def _check_calls(calls: int, warmup: int) -> None:
    if calls < 1 or warmup < 0:
        raise ValueError(f"a profile needs calls >= 1 and warmup >= 0, got {calls} and {warmup}")


def onnxruntime_events(events: list[dict], warmup: int) -> tuple[dict, dict, list[float]]:
    """Kernel microseconds and counts per op type from an ONNX Runtime profile's events,
    leaving out the first ``warmup`` runs; and each kept run's duration (ms)."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    if len(runs) <= warmup:
        raise ValueError(f"the profile holds {len(runs)} runs, not more than the {warmup} "
                         "warm-up runs")
    start = runs[warmup]["ts"]
    totals: dict = defaultdict(float)
    counts: dict = defaultdict(int)
    for e in events:
        if (e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                and e["ts"] >= start):
            key = (e["args"]["op_name"], "")
            totals[key] += e["dur"]
            counts[key] += 1
    return totals, counts, [e["dur"] / 1e3 for e in runs[warmup:]]


def onnxruntime_profile(session_factory, feed: dict, *, calls: int = 100,
                        warmup: int = 10) -> OpProfile:
    """Profile a session that ``session_factory(options_update)`` builds with profiling on
    (:meth:`~swiftlearn.export.OnnxRunner.profile` calls this)."""
    import json
    import tempfile
    from pathlib import Path

    _check_calls(calls, warmup)
    with tempfile.TemporaryDirectory() as tmp:
        session = session_factory(Path(tmp) / "ort")
        for _ in range(warmup + calls):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals, counts, runs = onnxruntime_events(events, warmup)
    return _profile("onnxruntime", calls, totals, counts, statistics.median(runs))


def openvino_profile(request, feed: dict, *, calls: int = 100, warmup: int = 10) -> OpProfile:
    """Profile an OpenVINO infer request of a model compiled with ``PERF_COUNT``
    (:meth:`~swiftlearn.export.OpenVinoRunner.profile` calls this): executed nodes only, by
    (node type, kernel)."""
    _check_calls(calls, warmup)
    for _ in range(warmup):
        request.infer(feed)
    totals: dict = defaultdict(float)
    counts: dict = defaultdict(int)
    for _ in range(calls):
        request.infer(feed)
        for info in request.profiling_info:
            if str(info.status).rsplit(".", 1)[-1] != "EXECUTED":
                continue
            key = (info.node_type, info.exec_type)
            totals[key] += info.real_time.total_seconds() * 1e6
            counts[key] += 1
    return _profile("openvino", calls, totals, counts, None)


def pytorch_profile(fn, x, *, calls: int = 100, warmup: int = 10) -> OpProfile:
    """Profile ``fn(x)`` (a module or any callable of PyTorch ops) with ``torch.profiler`` on
    the CPU: ops by name and self time; kernels a call are the ops that call no other op."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    _check_calls(calls, warmup)
    x = torch.as_tensor(x)
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn(x)
    totals: dict = defaultdict(float)
    counts: dict = defaultdict(int)
    leaves = 0
    for e in prof.events():
        key = (e.name, "")
        totals[key] += e.self_cpu_time_total
        counts[key] += 1
        leaves += not e.cpu_children
    return _profile("pytorch", calls, {k: v for k, v in totals.items() if v > 0}, counts, None,
                    kernels=leaves)
