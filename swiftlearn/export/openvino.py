"""OpenVINO: the same network as an IR (``.xml`` graph + ``.bin`` weights) for OpenVINO's CPU
runtime, and its int8 form through NNCF.

:func:`to_openvino` converts the ONNX graph of :func:`~swiftlearn.export.to_onnx` with
``openvino.convert_model``, so the contract is the ONNX one: the IR takes the *normalised*
float tensor ``[B, 3, H, W]`` (free batch axis) and returns logits. The weights stay float32
(``compress_to_fp16=False``); which precision the CPU computes in is a run-time choice
(:class:`OpenVinoRunner`'s ``precision``: OpenVINO's default is bf16 where the CPU has AMX or
AVX-512 BF16, f32 elsewhere). What a user needs to feed it travels inside the ``.xml``, in the
model's run-time info under ``swiftlearn``: the class names, the input size, the mean and std
(:func:`openvino_metadata` reads them back).

:func:`quantize_openvino` is post-training static int8 with NNCF (``nncf.quantize``): int8
weights and activations where OpenVINO has int8 kernels, calibrated on real training images.

Every file is built in a temporary sibling of the destination (:func:`export_stage`), checked to
compile, and only then moved into place, the ``.bin`` before the ``.xml`` that names it: a
failed export leaves what was there as it was.

openvino and nncf are optional: ``pip install -e ".[openvino]"``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils import IMAGENET_MEAN, IMAGENET_STD, check_writable, cpu_supports_bf16, require
from .onnx import as_input, to_onnx
from .staging import export_stage

__all__ = ["OPENVINO_EXTRA", "PRECISIONS", "OpenVinoRunner", "check_openvino_out",
           "import_openvino", "openvino_metadata", "quantize_openvino", "to_openvino"]

OPENVINO_EXTRA = 'pip install -e ".[openvino]"'
#: run-time precisions of :class:`OpenVinoRunner`: None is OpenVINO's own default
PRECISIONS = (None, "f32", "bf16")
_KEY = "swiftlearn"  # the run-time info entry that carries the metadata


def import_openvino():
    """``openvino``, or one line that names the extra to install."""
    return require("openvino", purpose="OpenVINO export and runtime")


def check_openvino_out(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an ``--out`` that is not an ``.xml`` path that can be written
    (its ``.bin`` beside it included)."""
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR is a .xml file (with its .bin beside it); --out must "
                         f"end in .xml, got {path}")
    check_writable(path, "--out")
    check_writable(path.with_suffix(".bin"), "--out's weights file")
    return path


def _metadata(labels, size: int, mean, std, precision: str) -> str:
    return json.dumps({"labels": list(labels), "image_size": int(size), "mean": list(mean),
                       "std": list(std), "input": "normalised float [batch, 3, H, W]",
                       "weights": precision})


def openvino_metadata(path: str | os.PathLike) -> dict:
    """What :func:`to_openvino` stored in the IR: labels, image_size, mean, std, weights."""
    ov = import_openvino()
    model = ov.Core().read_model(str(path))
    if not model.has_rt_info(_KEY):
        return {}
    return json.loads(model.get_rt_info(_KEY).astype(str))


def _save_checked(ov, model, stage: Path, path: Path) -> Path:
    """Write ``model`` as ``stage/path.name`` (+ .bin), check it compiles, move both into place."""
    built = stage / path.name
    ov.save_model(model, str(built), compress_to_fp16=False)
    try:
        ov.Core().compile_model(str(built), "CPU")
    except Exception as e:  # RuntimeError from the plugin, with its own message
        raise RuntimeError(f"the OpenVINO IR written to {built} does not compile ({e})") from e
    os.replace(built.with_suffix(".bin"), path.with_suffix(".bin"))  # weights first, graph last
    os.replace(built, path)
    return path


def _convert(ov, model: nn.Module, stage: Path, size: int):
    onnx_file = to_onnx(model, stage / "fp32.onnx", size)
    converted = ov.convert_model(str(onnx_file))
    converted.set_friendly_name(type(model).__name__)
    return converted


def to_openvino(model: nn.Module, path: str | os.PathLike, image_size: int = 224, *,
                labels=None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Path:
    """Export to an OpenVINO IR: ``path`` (``.xml``) and its ``.bin``, float32 weights.

    Raises:
        ValueError: a wrong file name or a size the model cannot take.
        MissingExtraError: openvino (or onnx/onnxscript) is not installed.
    """
    path = check_openvino_out(path)
    ov = import_openvino()
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    with export_stage(path, needed=3 * weight_bytes) as stage:  # ONNX, IR, the compile check
        converted = _convert(ov, model, stage, image_size)
        converted.set_rt_info(_metadata(labels or [], image_size, mean, std, "float32"), _KEY)
        return _save_checked(ov, converted, stage, path)


def quantize_openvino(model: nn.Module, path: str | os.PathLike, calibration: torch.Tensor,
                      image_size: int = 224, *, labels=None, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD, fast_bias_correction: bool = True,
                      preset: str = "mixed", model_type: str | None = None) -> Path:
    """Static int8 IR through NNCF's post-training quantisation, calibrated on ``calibration``
    (normalised real images ``[N, 3, size, size]``, e.g.
    :func:`~swiftlearn.export.calibration_images`).

    ``preset`` is NNCF's quantisation preset: ``"mixed"`` (the default here: symmetric weights,
    asymmetric activations, which keeps GELU's one-sided outputs and the attention's
    normalised tokens in range) or ``"performance"`` (NNCF's default: symmetric activations
    too). On the committed XS, all 3,925 validation images at 144 px: ``"performance"`` lost
    0.97 points of top-1 (95.6 % agreement with PyTorch fp32), ``"mixed"`` 0.03 (99.3 %).
    ``model_type="transformer"`` is passed on to NNCF when given.

    Raises:
        ValueError: a wrong file name or no calibration image.
        MissingExtraError: openvino or nncf is not installed.
    """
    if preset not in ("mixed", "performance"):
        raise ValueError(f"preset must be 'mixed' or 'performance' (NNCF's presets), got "
                         f"{preset!r}")
    path = check_openvino_out(path)
    ov = import_openvino()
    nncf = require("nncf", purpose="OpenVINO int8 quantisation")
    calibration = torch.as_tensor(calibration, dtype=torch.float32)
    if calibration.dim() != 4 or len(calibration) == 0:
        raise ValueError("quantize_openvino needs calibration images [N, 3, H, W], N >= 1")
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    with export_stage(path, needed=4 * weight_bytes) as stage:
        converted = _convert(ov, model, stage, image_size)
        images = [calibration[i:i + 1].numpy() for i in range(len(calibration))]
        with _quiet_nncf():
            options = {"preset": getattr(nncf.QuantizationPreset, preset.upper())}
            if model_type:
                options["model_type"] = getattr(nncf.ModelType, model_type.upper())
            quantized = nncf.quantize(converted, nncf.Dataset(images),
                                      subset_size=len(images),
                                      fast_bias_correction=fast_bias_correction, **options)
        quantized.set_rt_info(_metadata(labels or [], image_size, mean, std, "int8 (NNCF)"), _KEY)
        return _save_checked(ov, quantized, stage, path)


class _quiet_nncf:
    """NNCF logs each step and draws progress bars (rich, on stdout); an export prints one
    summary line instead."""

    def __enter__(self):
        import io
        import logging

        self.logger = logging.getLogger("nncf")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        self.streams = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = io.StringIO()
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self.streams
        self.logger.setLevel(self.level)


class OpenVinoRunner:
    """``logits = OpenVinoRunner("model.xml")(x)``: numpy logits from OpenVINO's CPU plugin.

    Args:
        path: an ``.xml`` from :func:`to_openvino` or :func:`quantize_openvino` (or an
            ``.onnx`` file, which OpenVINO reads directly).
        threads: inference threads (one stream, latency hint: one request at a time, as the
            other runtimes are timed).
        precision: ``None`` (OpenVINO's default: bf16 on AMX / AVX-512 BF16 CPUs, f32
            elsewhere), ``"f32"`` or ``"bf16"`` (refused on a CPU without native bf16).

    Shape:
        - input ``[B, 3, H, W]``, normalised float (a tensor or an array)
        - output ``[B, num_classes]``, float32 numpy logits
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1, precision: str | None = None):
        ov = import_openvino()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no OpenVINO model at {path}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "bf16" and not cpu_supports_bf16():
            raise ValueError("precision bf16: this CPU has no native bf16 (AMX or AVX-512 "
                             "BF16), where OpenVINO would emulate it; use f32 or the default")
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY"}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.path, self.config = path, config
        self.core = ov.Core()
        self.compiled = self.core.compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type
        #: what the CPU plugin computes in: "f32", "bf16" or "f16"
        self.precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)

    def __call__(self, x) -> np.ndarray:
        self.request.infer({0: as_input(x)})
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def profile(self, x, calls: int = 100, warmup: int = 10):
        """Where the time goes: OpenVINO's performance counters over ``calls`` runs on ``x``,
        after ``warmup``, by node type and the kernel the CPU plugin picked for it (an
        :class:`~swiftlearn.export.profile.OpProfile`), compiled with this runner's settings."""
        from .profile import openvino_profile

        compiled = self.core.compile_model(str(self.path), "CPU",
                                           {**self.config, "PERF_COUNT": True})
        return openvino_profile(compiled.create_infer_request(), {0: as_input(x)},
                                calls=calls, warmup=warmup)
