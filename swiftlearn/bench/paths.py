"""Every way the library runs one SwiftFormer on this CPU, as ``threads -> callable(x)``
factories: the one place that builds them, for the ``latency`` suite (against the peers) and
the ``deploy`` suite (latency and validation accuracy of a trained model, side by side).

A path is a :class:`RunPath`: its ``backend`` name (the rows' names in both suites), what it
computes in (``precision``) and ``make(threads)``, which returns ``fn(x)`` taking the
normalised float tensor ``[B, 3, H, W]`` and returning logits (a tensor or an array).

=====================  =========================================================================
``eager``              the swiftlearn module as it trains
``fused``              :func:`swiftlearn.fuse.fuse`: BatchNorms, layer scales and heads folded,
                       1x1 convolutions as channels-last matmuls, GELU as oneDNN post-ops
``fused+bf16``         the fused model under ``torch.autocast("cpu", bfloat16)``: only where the
                       CPU has native bf16 (AMX or AVX-512 BF16); emulated elsewhere, so omitted
``fused bf16 weights`` the fused model converted with ``.to(torch.bfloat16)``, fed bf16 images:
                       oneDNN's matmuls keep their GELU and residual post-ops in bf16 (under
                       autocast they do not); only where the CPU has native bf16
``fused+compile``      ``torch.compile`` of the fused model (one compiled copy per thread count)
``onnxruntime``        :func:`swiftlearn.export.to_onnx` in ONNX Runtime, its default graph
                       optimisations
``onnxruntime int8``   :func:`swiftlearn.export.quantize.quantize_int8` (``--quantize int8``)
``openvino``           OpenVINO's CPU plugin on the same fp32 ONNX graph, as it comes: its own
                       default precision (bf16 on AMX / AVX-512 BF16 CPUs, f32 elsewhere)
``openvino f32``       the same, f32 forced: only where the default is not f32 already
``openvino int8``      NNCF's post-training int8 (``--format openvino --quantize int8``)
=====================  =========================================================================
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..utils import cpu_supports_bf16, require

__all__ = ["PATH_BACKENDS", "RunPath", "swiftformer_paths"]

PATH_BACKENDS = ("eager", "fused", "fused+bf16", "fused bf16 weights", "fused+compile",
                 "onnxruntime", "onnxruntime int8", "openvino", "openvino f32", "openvino int8")


@dataclass
class RunPath:
    backend: str
    precision: str
    make: Callable[[int], Callable]  # threads -> fn(x)
    runs: nn.Module | None = None  # the module that runs, when it is one (its parameters count)


def _module(backend: str, precision: str, module: nn.Module) -> RunPath:
    return RunPath(backend, precision, lambda threads: module, module)


def _bf16(module: nn.Module) -> Callable:
    def run(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return module(x).float()
    return run


def _bf16_weights(module: nn.Module) -> Callable:
    converted = copy.deepcopy(module).to(torch.bfloat16)

    def run(x):
        return converted(x.to(torch.bfloat16)).float()
    return run


def _ort(path: Path) -> Callable[[int], Callable]:
    from ..export import OnnxRunner

    return lambda threads: OnnxRunner(path, threads)


def _ov(path: Path, precision: str | None) -> Callable[[int], Callable]:
    from ..export import OpenVinoRunner

    return lambda threads: OpenVinoRunner(path, threads, precision)


def _try(notes: list[str], what: str, build: Callable):
    """``build()``, or None with a note: one failing exporter must not sink a benchmark."""
    try:
        return build()
    except ImportError as e:
        notes.append(f"{what} omitted: {e}.")
    except Exception as e:  # noqa: BLE001 - the note says what failed
        notes.append(f"{what}: failed ({type(e).__name__}: {e}); its row is omitted.")
    return None


def swiftformer_paths(model: nn.Module, name: str, size: int, workdir: Path, notes: list[str],
                      *, compile: bool = False, onnx: bool = True, int8: bool = False,
                      openvino: bool = True, calibration: torch.Tensor | None = None,
                      calibration_note: str = "") -> list[RunPath]:
    """The run paths of the eval-mode ``model`` at ``size`` px (exports go to ``workdir``).

    ``int8`` adds the int8 rows (ONNX Runtime and, with ``openvino``, NNCF), calibrated on
    ``calibration`` (normalised images; ``calibration_note`` says where they came from).
    Rows that cannot be built here (a missing package, a CPU without native bf16) are left out
    with a note saying why.
    """
    from ..fuse import fuse

    fused = fuse(model)
    paths = [_module("eager", "fp32", model), _module("fused", "fp32", fused)]
    bf16 = cpu_supports_bf16()
    if bf16:
        paths.append(RunPath("fused+bf16", "bf16 autocast", lambda t: _bf16(fused), fused))
        weights = _bf16_weights(fused)  # one converted copy, whatever the thread count
        paths.append(RunPath("fused bf16 weights", "bf16 weights and activations",
                             lambda t: weights, fused))
    else:
        notes.append("fused+bf16 and fused bf16 weights omitted: this CPU has no native bf16 "
                     "(AMX or AVX-512 BF16), where bf16 is emulated and slower than fp32.")
    if compile:
        # inductor specialises its kernels to the thread count: one compiled copy per count
        paths.append(RunPath("fused+compile", "fp32",
                             lambda t: torch.compile(copy.deepcopy(fused)), fused))
    if not onnx:
        return paths
    fp32 = _try(notes, "ONNX export (for the ONNX Runtime and OpenVINO rows)",
                lambda: _export_onnx(model, workdir / f"{name}.onnx", size))
    if fp32 is None:
        return paths
    if _try(notes, "ONNX Runtime column", lambda: require("onnxruntime")):
        paths.append(RunPath("onnxruntime", "fp32", _ort(fp32)))
        if int8:
            from ..export.quantize import quantize_int8

            q = _try(notes, "onnxruntime int8", lambda: quantize_int8(
                fp32, workdir / f"{name}-int8.onnx", calibration))
            if q is not None:
                paths.append(RunPath("onnxruntime int8", "int8", _ort(q)))
                if calibration_note:
                    notes.append(f"int8 rows calibrated on {calibration_note}.")
    if openvino and _try(notes, "OpenVINO rows", lambda: require("openvino")):
        default = _try(notes, "OpenVINO", lambda: _ov(fp32, None)(1).precision)
        if default is not None:
            paths.append(RunPath("openvino", f"{default} (OpenVINO's default here)",
                                 _ov(fp32, None)))
            if default != "f32":
                paths.append(RunPath("openvino f32", "f32", _ov(fp32, "f32")))
        if int8:
            from ..export.openvino import quantize_openvino

            q = _try(notes, "openvino int8", lambda: quantize_openvino(
                model, workdir / f"{name}-int8.xml", calibration, size))
            if q is not None:
                paths.append(RunPath("openvino int8", "int8 (NNCF)", _ov(q, None)))
    return paths


def _export_onnx(model: nn.Module, path: Path, size: int) -> Path:
    from ..export import to_onnx

    return to_onnx(model, path, image_size=size)  # a free batch axis: latency and accuracy
