"""Numerical parity: does the saved artefact compute what the PyTorch model computes?

:func:`verify_coreml` reads a saved ``.mlpackage`` back and evaluates it op by op with
:mod:`swiftlearn.export.mil` (any OS, no Mac needed), or with Core ML itself on macOS
(``backend="coreml"``); :func:`verify_onnx` runs an ``.onnx`` file in ONNX Runtime. Both compare
with PyTorch on the same inputs and return a :class:`ParityReport`; with ``strict`` (the default)
a disagreement raises.

Tolerances are absolute, on logits: :data:`FP32_TOLERANCE` for a float32 program or an ONNX
graph, :data:`FP16_TOLERANCE` for a float16 program. :func:`sample_pixels` makes the test
pictures (smooth random ones at every size a package accepts, or your own photos).

The top-1 agreement counts only the inputs whose reference top-1 leads the runner-up by more
than twice the tolerance (:func:`top1_margin`): there an export within tolerance must pick the
same class, so a disagreement fails the check; on the others (an untrained model's near-constant
logits) the pick is a coin toss that says nothing, and the report says so instead of "0 %".
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..utils import IMAGENET_MEAN, IMAGENET_STD, normalize_pixels
from .coreml import PROBS_NAME, import_coremltools, read_coreml
from .mil import MilInterpreter
from .onnx import OnnxRunner

__all__ = ["FP16_TOLERANCE", "FP32_TOLERANCE", "AccuracyReport", "ParityReport", "agreement_text",
           "sample_pixels", "top1_margin", "verify_coreml", "verify_onnx", "verify_openvino"]

FP32_TOLERANCE = 1e-4  #: max |logit difference| for a float32 program or ONNX graph
FP16_TOLERANCE = 2e-2  #: max |logit difference| for a float16 program


@dataclass
class ParityReport:
    """Exported model vs PyTorch on the same inputs."""

    backend: str
    n_inputs: int
    max_abs_logits: float  # nan when the backend reports probabilities only
    max_abs_probs: float
    top1_agreement: float  # over the inputs without a tie; nan when every input ties
    tolerance: float
    n_tied: int = 0  # inputs whose reference top-1 leads by at most twice the tolerance
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Within tolerance, and the same top-1 wherever the reference does not tie."""
        err = self.max_abs_probs if np.isnan(self.max_abs_logits) else self.max_abs_logits
        return bool(err <= self.tolerance) and not self.top1_agreement < 1.0

    @property
    def agreement(self) -> str:
        """The top-1 agreement in words (see :func:`agreement_text`)."""
        return agreement_text(self.top1_agreement, self.n_inputs, self.n_tied)

    def __str__(self) -> str:
        what = "probs" if np.isnan(self.max_abs_logits) else "logits"
        err = self.max_abs_probs if what == "probs" else self.max_abs_logits
        return (f"{self.backend}: max |diff| {what} {err:.2e} (tolerance {self.tolerance:.0e}), "
                f"probs {self.max_abs_probs:.2e}, {self.agreement} -> "
                f"{'OK' if self.ok else 'FAILED'}")


@dataclass
class AccuracyReport:
    """An exported model (a Core ML package, an ONNX or OpenVINO file) and the PyTorch model it
    came from, on the same labelled images: both top-1 accuracies and how often their top-1
    predictions agree (percent). :func:`~swiftlearn.export.package_accuracy` and
    :func:`~swiftlearn.export.quantize.onnx_accuracy` return it."""

    n: int
    top1: float  # the exported model's
    torch_top1: float
    agreement: float  # % of images where the two top-1 predictions are the same class
    pred: np.ndarray = field(repr=False)
    torch_pred: np.ndarray = field(repr=False)
    what: str = "export"  # what ran: "package", "ONNX", "OpenVINO"
    seconds: float = 0.0  # the exported model's time on all the images

    def __str__(self) -> str:
        return (f"{self.n} images: {self.what} top-1 {self.top1:.2f} %, PyTorch fp32 "
                f"{self.torch_top1:.2f} % ({self.top1 - self.torch_top1:+.2f} points), "
                f"same prediction on {self.agreement:.2f} %")


def top1_margin(scores: np.ndarray) -> np.ndarray:
    """How far each row's largest score leads its second largest (``inf`` with one class)."""
    if scores.shape[1] < 2:
        return np.full(len(scores), np.inf)
    top2 = np.sort(scores, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def agreement_text(agreement: float, n_inputs: int, n_tied: int) -> str:
    """"top-1 agreement 100% on 4 inputs", with the ties named; when every input ties, that the
    agreement is not meaningful (so no one reads "0 % ... OK" as a pass on the predictions)."""
    if n_tied >= n_inputs:
        return (f"top-1 agreement not meaningful on {n_inputs} inputs (the reference's top "
                "classes tie: judged on the difference alone)")
    on = f"{n_inputs - n_tied} of {n_inputs} inputs ({n_tied} tied)" if n_tied else \
        f"{n_inputs} inputs"
    return f"top-1 agreement {agreement:.0%} on {on}"


def sample_pixels(images=None, sizes=((224, 224),), n: int = 4,
                  seed: int = 0) -> list[torch.Tensor]:
    """Test pictures for a parity check, as a list of float ``[1, 3, H, W]`` 0..255 tensors.

    Args:
        images: ``None`` for ``n`` smooth random pictures (bilinear upsampling of a coarse grid:
            closer to photos than white noise), cycling through ``sizes``; or RGB uint8
            pictures ``[H, W, 3]`` (e.g. ``Photo.resized(224)``); or one ``[B, 3, H, W]``
            array or tensor of 0..255 values.
        sizes: the ``(H, W)`` sizes random pictures take, in turn.
        n: how many random pictures.
        seed: seed of the random pictures.

    Shape:
        - each output ``[1, 3, H, W]``, float 0..255

    Raises:
        ValueError: a picture that is not ``[H, W, 3]``.
    """
    if images is None:
        g = torch.Generator().manual_seed(seed)
        out = []
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            coarse = torch.rand(1, 3, max(h // 16, 2), max(w // 16, 2), generator=g) * 255
            out.append(torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear").round())
        return out
    if isinstance(images, (np.ndarray, torch.Tensor)) and np.ndim(images) == 4 \
            and images.shape[1] == 3:
        return [torch.as_tensor(images[i:i + 1]).float() for i in range(len(images))]
    out = []
    for im in images:  # [H, W, 3] uint8 pictures (e.g. Photo.image resized)
        im = torch.as_tensor(np.array(im))
        if im.dim() != 3 or im.shape[-1] != 3:
            raise ValueError(f"images must be [H, W, 3] RGB arrays or one [B, 3, H, W] array, got "
                             f"a {tuple(im.shape)} array")
        out.append(im.permute(2, 0, 1)[None].float())
    return out


def _compare(backend, got_logits, got_probs, ref_logits, tolerance, details=None):
    ref_logits = np.concatenate(ref_logits)
    ref_probs = torch.as_tensor(ref_logits).softmax(-1).numpy()
    probs = np.concatenate(got_probs)
    err_logits = float("nan") if got_logits is None else \
        float(np.abs(np.concatenate(got_logits) - ref_logits).max())
    # the tolerance bounds what is compared: logits, or probabilities when only those come back
    decisive = top1_margin(ref_probs if got_logits is None else ref_logits) > 2 * tolerance
    same = probs.argmax(1) == ref_probs.argmax(1)
    return ParityReport(
        backend=backend, n_inputs=len(ref_logits), max_abs_logits=err_logits,
        max_abs_probs=float(np.abs(probs - ref_probs).max()),
        top1_agreement=float(same[decisive].mean()) if decisive.any() else float("nan"),
        tolerance=tolerance, n_tied=int((~decisive).sum()), details=details or {})


def verify_coreml(package: str | os.PathLike, model: nn.Module, images=None, *, n: int = 4,
                  tolerance: float | None = None, backend: str = "interpreter",
                  round_fp16: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  seed: int = 0, strict: bool = True) -> ParityReport:
    """Check that a saved package computes what ``model`` computes.

    Args:
        package: the ``.mlpackage`` written by :func:`~swiftlearn.export.to_coreml`.
        model: the PyTorch model it was exported from (eval mode).
        images: RGB uint8 pictures ``[H, W, 3]`` at a size the package accepts, or one float
            ``[B, 3, H, W]`` 0..255 array; default: ``n`` smooth random pictures at every
            accepted size (see :func:`sample_pixels`).
        tolerance: max |logit difference|; default :data:`FP32_TOLERANCE` for a float32 program,
            :data:`FP16_TOLERANCE` for a float16 one (probabilities with ``backend="coreml"``).
        backend: ``"interpreter"`` (:mod:`swiftlearn.export.mil`, any OS) or ``"coreml"``
            (``MLModel.predict``; macOS only, probabilities only).
        round_fp16: see :meth:`swiftlearn.export.mil.MilInterpreter.run`.
        mean, std: the normalisation the package was exported with (for PyTorch's reference).
        strict: raise when the check fails (else just return the report).

    Raises:
        RuntimeError: the outputs differ by more than ``tolerance`` (with ``strict``), or
            ``backend="coreml"`` off macOS.
    """
    if model.training:
        raise ValueError("call model.eval() before verifying: PyTorch's reference must be the "
                         "eval-mode model")
    info, program = read_coreml(package)
    image_input = info.inputs[0]
    sizes = [tuple(s) for s in image_input.get("enumerated_sizes", [image_input["shape"]])]
    inputs = sample_pixels(images, sizes, n, seed)
    for x in inputs:
        if tuple(x.shape[-2:]) not in sizes:
            raise ValueError(f"the package accepts {sizes}, got an input of {tuple(x.shape[-2:])}")
    if tolerance is None:
        tolerance = FP16_TOLERANCE if info.precision == "float16" else FP32_TOLERANCE
    with torch.no_grad():
        ref = [model(normalize_pixels(x, mean, std)).numpy() for x in inputs]
    if backend == "interpreter":
        got_logits, got_probs = _run_interpreter(program, image_input["name"], info.labels,
                                                 inputs, round_fp16)
        name = f"MIL interpreter ({info.precision}{'' if round_fp16 else ', unrounded'})"
        report = _compare(name, got_logits, got_probs, ref, tolerance)
    elif backend == "coreml":
        got_probs = _run_coreml(package, image_input["name"], info.labels, inputs)
        report = _compare("Core ML (MLModel.predict)", None, got_probs, ref, tolerance)
    else:
        raise ValueError(f"backend must be 'interpreter' or 'coreml', got {backend!r}")
    if strict and not report.ok:
        raise RuntimeError(f"the Core ML package disagrees with PyTorch: {report}")
    return report


def _run_interpreter(program, input_name: str, labels, inputs, round_fp16: bool):
    """``(logits, probabilities)`` per input, from :class:`MilInterpreter`."""
    interp = MilInterpreter(program)
    logits_name = interp.logits_name()
    got_logits, got_probs = [], []
    for x in inputs:
        out = interp.run({input_name: x.numpy()}, fetch=[logits_name], round_fp16=round_fp16)
        got_logits.append(out[logits_name].reshape(1, -1))
        probs = out[PROBS_NAME]
        got_probs.append(np.array([[probs[k] for k in labels]]))
    return got_logits, got_probs


def _run_coreml(package, input_name: str, labels, inputs):
    """Probabilities per input from Core ML's ``MLModel.predict`` (macOS only)."""
    if sys.platform != "darwin":
        raise RuntimeError("MLModel.predict runs only on macOS; use backend='interpreter'")
    from PIL import Image

    ct = import_coremltools()
    mlmodel = ct.models.MLModel(str(package))
    got_probs = []
    for x in inputs:
        picture = Image.fromarray(x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
        probs = mlmodel.predict({input_name: picture})[PROBS_NAME]
        got_probs.append(np.array([[probs[k] for k in labels]]))
    return got_probs


def verify_onnx(path: str | os.PathLike, model: nn.Module, inputs: torch.Tensor | None = None, *,
                tolerance: float = FP32_TOLERANCE, threads: int = 1, seed: int = 0,
                strict: bool = True) -> ParityReport:
    """ONNX Runtime vs PyTorch on ``inputs`` (default: batches of 1 and 3 random images).

    Args:
        path: an ``.onnx`` file from :func:`~swiftlearn.export.to_onnx`.
        model: the PyTorch model it was exported from (eval mode).
        inputs: normalised float ``[B, 3, H, W]``; default: random batches of 1 and 3.
        tolerance: max |logit difference|.
        threads: ONNX Runtime intra-op threads.
        strict: raise when the check fails (else just return the report).

    Raises:
        RuntimeError: the logits differ by more than ``tolerance`` (with ``strict``).
    """
    runner = OnnxRunner(path, threads)
    shape = runner.session.get_inputs()[0].shape
    return _verify_runner("ONNX Runtime", "the ONNX model", runner, (shape[2], shape[3]), model,
                          inputs, tolerance, seed, strict)


def verify_openvino(path: str | os.PathLike, model: nn.Module,
                    inputs: torch.Tensor | None = None, *, tolerance: float = FP32_TOLERANCE,
                    threads: int = 1, seed: int = 0, strict: bool = True) -> ParityReport:
    """OpenVINO (f32 inference precision) vs PyTorch, as :func:`verify_onnx`: ``path`` is an
    ``.xml`` from :func:`~swiftlearn.export.to_openvino`. f32 is forced because OpenVINO's
    default on a CPU with AMX or AVX-512 BF16 computes in bf16, which is a speed choice, not
    the export's fidelity (``swiftlearn bench`` measures both)."""
    from .openvino import OpenVinoRunner

    runner = OpenVinoRunner(path, threads, precision="f32")
    shape = runner.compiled.input(0).get_partial_shape()
    return _verify_runner("OpenVINO (f32)", "the OpenVINO model", runner,
                          (shape[2].get_length(), shape[3].get_length()), model, inputs,
                          tolerance, seed, strict)


def _verify_runner(backend: str, what: str, runner, hw, model, inputs, tolerance, seed,
                   strict) -> ParityReport:
    if inputs is None:
        g = torch.Generator().manual_seed(seed)
        batches = [torch.randn(b, 3, *hw, generator=g) for b in (1, 3)]
    else:
        batches = [torch.as_tensor(inputs).float()]
    got, ref = [], []
    with torch.no_grad():
        for x in batches:
            got.append(runner(x))
            ref.append(model(x).numpy())
    probs = [torch.as_tensor(g).softmax(-1).numpy() for g in got]
    report = _compare(backend, got, probs, ref, tolerance,
                      details={"batch_sizes": [len(x) for x in batches]})
    if strict and not report.ok:
        raise RuntimeError(f"{what} disagrees with PyTorch: {report}")
    return report
