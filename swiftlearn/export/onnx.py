"""ONNX export and ONNX Runtime: the same network, timed and compared one-to-one with PyTorch.

:func:`to_onnx` uses the dynamo exporter (opset 20) with a dynamic batch axis; the graph takes the
*normalised* float tensor the PyTorch model takes and returns logits (no pixel wrapper, unlike
Core ML), so ONNX Runtime and eager PyTorch run on the same input. Opset 20 has a ``Gelu``
operator, which the exporter writes and ONNX Runtime, its int8 quantiser and OpenVINO run as one
op; opset 18 spelled each GELU out with ``Erf`` and needed a graph pass per consumer to put it
back together (measured on the trained XS at 144 px: the same largest logit difference from
PyTorch, 3.7e-6, the same int8 accuracy, and the same or slightly lower latency).

:func:`session_options` is the one ONNX Runtime setting swiftlearn measures with (fixed intra-op
threads, sequential, all graph optimisations); :func:`onnxruntime_session` opens a model with it
and :class:`OnnxRunner` wraps that as ``logits = runner(x)``. ``swiftlearn bench`` uses the same
options. :func:`swiftlearn.export.verify_onnx` checks parity.

onnx, onnxscript and onnxruntime are optional (``pip install -e ".[export]"``).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils import check_writable, require
from .checks import check_model, image_hw
from .staging import export_stage

__all__ = ["OnnxRunner", "onnxruntime_session", "session_options", "to_onnx"]


def to_onnx(model: nn.Module, path: str | os.PathLike, image_size=224, *, opset: int = 20,
            dynamic_batch: bool = True) -> Path:
    """Export to ONNX with the dynamo exporter: ``input`` ``[B, 3, H, W]`` -> ``logits``.

    The graph takes the *normalised* float tensor the PyTorch model takes (no pixel wrapper), so
    ONNX Runtime and eager PyTorch can be timed and compared on the same input. The weights are
    stored inside the single ``.onnx`` file (any ``.onnx.data`` the exporter writes moves with
    it). The model is built in a temporary sibling folder, checked to load, and only then moved
    to ``path``: a failed export leaves an existing file there as it was.

    Args:
        model: eval-mode classifier.
        path: destination ``.onnx`` file.
        image_size: the (static) input size, int or ``(H, W)``.
        opset: ONNX opset (20 and later write GELU as one ``Gelu`` op; 18 spells it out).
        dynamic_batch: make the batch axis symbolic (``batch``).

    Returns:
        ``path``.

    Raises:
        ValueError: a wrong file name, a size or model the checks reject (see
            :func:`~swiftlearn.export.checks.check_model`).
        MissingExtraError: onnx or onnxscript is not installed.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the ONNX file name should end in .onnx, got {path}")
    check_writable(path, "--out")
    h, w = image_hw(image_size, "image_size")
    check_model(model, h, w)
    onnx = require("onnx")
    require("onnxscript")
    example = torch.randn(2 if dynamic_batch else 1, 3, h, w)
    dynamic = None
    if dynamic_batch:
        from torch.export import Dim

        name = next(iter(_forward_arg_names(model)), "x")
        dynamic = {name: {0: Dim("batch", min=1, max=4096)}}
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    with export_stage(path, needed=2 * weight_bytes) as stage:
        built = stage / path.name
        with _quiet_stdout():
            torch.onnx.export(model, (example,), str(built), dynamo=True, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_shapes=dynamic, external_data=False)
        _check_onnx(onnx, built)
        # the weights file(s) first, the graph that names them last: a reader never sees a new
        # graph beside old weights (files only: the stage's temporary folder stays in it)
        for part in sorted((p for p in stage.iterdir() if p.is_file()), key=lambda p: p == built):
            os.replace(part, path.parent / part.name)
    return path


def _check_onnx(onnx, path: Path) -> None:
    """The written model loads (graph and any external ``.onnx.data``) and has a graph."""
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # google.protobuf.message.DecodeError, OSError, ...
        raise RuntimeError(f"the ONNX file written to {path} does not load ({e})") from e
    if not proto.graph.node:
        raise RuntimeError(f"the ONNX file written to {path} has an empty graph")


def _forward_arg_names(model: nn.Module) -> list[str]:
    return [p for p in inspect.signature(model.forward).parameters if p != "self"]


@contextlib.contextmanager
def _quiet_stdout():
    """The dynamo exporter narrates its steps on stdout; keep it for errors only."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    except Exception:
        print(buffer.getvalue(), end="")
        raise


# ------------------------------------------------------------------------------------------------
# ONNX Runtime
# ------------------------------------------------------------------------------------------------

def session_options(threads: int = 1):
    """``onnxruntime.SessionOptions`` for a CPU latency measurement with ``threads`` threads.

    ``threads`` intra-op threads, one inter-op thread, sequential execution, all graph
    optimisations on, warnings silenced: the setting that ``swiftlearn bench`` compares with
    ``torch.set_num_threads(threads)`` eager PyTorch.

    Raises:
        ValueError: ``threads < 1``.
        MissingExtraError: onnxruntime is not installed.
    """
    ort = require("onnxruntime")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def onnxruntime_session(path: str | os.PathLike, threads: int = 1, *,
                        profile_prefix: str | os.PathLike | None = None):
    """An ``onnxruntime.InferenceSession`` on the CPU with :func:`session_options` (and ONNX
    Runtime's profiler on, writing next to ``profile_prefix``, when that is given).

    Feed it ``{"input": x}`` (float32 ``[B, 3, H, W]``, normalised) and read ``"logits"``.

    Raises:
        MissingExtraError: onnxruntime is not installed.
        FileNotFoundError: no file at ``path``.
        ValueError: ``threads < 1``.
    """
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    options = session_options(threads)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """``logits = OnnxRunner("model.onnx")(x)``: numpy logits from a tensor or an array.

    Args:
        path: an ``.onnx`` file from :func:`to_onnx`.
        threads: ONNX Runtime intra-op threads.

    Shape:
        - input ``[B, 3, H, W]``, normalised float (a tensor or an array)
        - output ``[B, num_classes]``, float32 numpy logits
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path, self.threads = Path(path), threads
        self.session = onnxruntime_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: as_input(x)})[0]

    def profile(self, x, calls: int = 100, warmup: int = 10):
        """Where the time goes: ONNX Runtime's own profile of ``calls`` runs on ``x``, after
        ``warmup``, by op type (an :class:`~swiftlearn.export.profile.OpProfile`)."""
        from .profile import onnxruntime_profile

        def build(prefix):
            return onnxruntime_session(self.path, self.threads, profile_prefix=prefix)

        return onnxruntime_profile(build, {self.input_name: as_input(x)}, calls=calls,
                                   warmup=warmup)


def as_input(x) -> np.ndarray:
    """A tensor or an array as the contiguous float32 array the runtimes take."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
