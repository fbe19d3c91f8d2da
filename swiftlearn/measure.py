"""Instruments: the FLOPs and the peak tensor memory of any callable, measured.

:mod:`swiftlearn.complexity` derives what attention costs on paper and checks every formula
against these two counters (it re-exports both):

* :func:`count_flops`: ``torch.utils.flop_counter.FlopCounterMode``, which counts a matrix
  product ``[m, k] @ [k, n]`` as ``2*m*k*n`` FLOPs, plus the formula it lacks for the CPU kernel
  of ``F.scaled_dot_product_attention`` (it would count that kernel as 0).
* :func:`peak_memory`: ``torch.profiler`` with ``profile_memory=True``; every allocation and free
  of PyTorch's CPU allocator comes with the allocator's running total, so the peak of a call is
  the largest total during it minus the total just before it.

Neither knows anything about SwiftFormer; this module imports nothing from swiftlearn.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable

import torch

__all__ = ["count_flops", "peak_memory"]


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode formula for the CPU SDPA kernel: ``Q K^T`` and ``P V``, per head."""
    *batch, n_q, d = query_shape
    n_k, d_v = key_shape[-2], value_shape[-1]
    return math.prod(batch) * 2 * (n_q * d * n_k + n_q * n_k * d_v)  # 2 FLOPs per multiply-add


_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` counted by ``FlopCounterMode`` (under ``no_grad``),
    with a formula for the CPU ``scaled_dot_product_attention`` kernel, which it would count 0."""
    from torch.utils.flop_counter import FlopCounterMode

    if not callable(fn):
        raise ValueError(f"count_flops needs a callable (a module or a function), got "
                         f"{type(fn).__name__}")
    counter = FlopCounterMode(display=False, custom_mapping=_CPU_SDPA)
    with torch.no_grad(), counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 (Kineto logs "profiler_start/stop" lines there from C++, which
    Jupyter would show in the cell). Only wraps profiler start/stop, never user code."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _allocations(prof) -> list[tuple[int, int, int]]:
    """``(start_ns, bytes, allocator total after it)`` of every allocation (negative bytes:
    a free) that ``prof`` recorded, from the profiler's event tree."""
    with _quiet_native_stderr():
        tree = prof.profiler.kineto_results.experimental_event_tree()
    events = []
    stack = list(tree)
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        fields = event.extra_fields
        if hasattr(fields, "alloc_size") and hasattr(fields, "total_allocated"):
            events.append((event.start_time_ns, fields.alloc_size, fields.total_allocated))
    return events


def peak_memory(fn: Callable, *args, **kwargs) -> int:
    """Peak bytes allocated by ``fn(*args, **kwargs)`` beyond what was live when it started.

    Method: ``torch.profiler`` with ``profile_memory=True`` records every allocation and free of
    PyTorch's CPU allocator with the allocator's running total; the peak is the largest total
    during the call minus the total just before its first allocation. Counts tensors (the
    output included), not memory that oneDNN/MKL or Python allocate on their own. Runs under
    ``no_grad``. Checked in the tests on ``torch.empty`` of a known size.
    """
    from torch.profiler import ProfilerActivity, profile

    if not callable(fn):
        raise ValueError(f"peak_memory needs a callable, got {type(fn).__name__}")
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_native_stderr():
        prof.start()
    try:
        with torch.no_grad():
            fn(*args, **kwargs)
    finally:
        with _quiet_native_stderr():
            prof.stop()
    events = _allocations(prof)
    if not events:
        return 0
    # The allocator's running total is exact whatever the order of the events; only its
    # starting point is needed, which the first event (in time) gives.
    _, first_size, first_total = min(events, key=lambda e: e[0])
    baseline = first_total - first_size
    return max(0, max(total for _, _, total in events) - baseline)
