"""Export a SwiftFormer to Core ML (``.mlpackage``), ONNX and OpenVINO, and check each
numerically.

One concept per module:

=================  ===============================================================================
``checks``         what every exporter validates first: the input size, the model, class names
``coreml``         :func:`to_coreml` (through :class:`NormalizedClassifier`: pixels in,
                   probabilities out), :func:`inspect_coreml`, :func:`imagetype_approximation`
``onnx``           :func:`to_onnx` (opset 20: GELU is one op), ONNX Runtime
                   (:func:`session_options`, :func:`onnxruntime_session`, :class:`OnnxRunner`)
``openvino``       :func:`to_openvino` (an IR converted from the ONNX graph, metadata inside),
                   :func:`~swiftlearn.export.openvino.quantize_openvino` (NNCF int8),
                   :class:`OpenVinoRunner`
``mil``            a small interpreter that runs a saved ML Program op by op on any OS (compressed
                   weights too: the ``constexpr_*`` ops; a batch through a one-image program)
``compress``       :func:`compress.compress_coreml`: post-training weight compression of a package
                   (``int8``, ``palette6``, ``palette4``) with ``coremltools.optimize.coreml``
``accuracy``       :func:`accuracy.package_accuracy`: top-1 of a package (interpreter) and of
                   PyTorch fp32 on the same pictures, and their agreement
``verify``         :func:`verify_coreml`, :func:`verify_onnx`, :func:`verify_openvino`: the saved
                   artefact vs PyTorch; the two result types every comparison returns
                   (:class:`ParityReport`: logits within a tolerance; :class:`AccuracyReport`:
                   top-1 on labelled images and the agreement)
``quantize``       static int8 ONNX for the CPU (:func:`~swiftlearn.export.quantize.quantize_int8`,
                   calibration, exact graph passes, accuracy helpers); import it by name
``profile``        where a runtime's time goes: :class:`~swiftlearn.export.profile.OpProfile`,
                   what ``OnnxRunner.profile``, ``OpenVinoRunner.profile`` and
                   :func:`~swiftlearn.export.profile.pytorch_profile` return (kernels a call, by
                   op type and, for OpenVINO, by the kernel it picked)
``staging``        :func:`~swiftlearn.export.staging.export_stage`: the temporary sibling of the
                   output where every export builds (the system temporary folder redirected into
                   it, so nothing is left in ``/tmp``; a full disk said in one line)
``cli``            ``swiftlearn export``
=================  ===============================================================================

Core ML packages take RGB pixels 0..255 and normalise inside the program; ONNX graphs and
OpenVINO IRs take the normalised tensor the PyTorch model takes, so they time one-to-one with
eager PyTorch (the IR names its mean, std, size and classes in its run-time info).
Verification needs no Mac: the package is read back and evaluated by :mod:`swiftlearn.export.mil`
(float32 program <= 1e-4 on logits, float16 program <= 2e-2).

coremltools, onnx, onnxscript and onnxruntime are optional: ``pip install -e ".[export]"``;
openvino and nncf too: ``pip install -e ".[openvino]"``. A function that needs a missing one
raises :class:`~swiftlearn.utils.MissingExtraError` saying so.
"""

from __future__ import annotations

from ..checkpoints import trained_image_size
from ..utils import MissingExtraError, normalize_pixels
from . import accuracy, compress, mil
from .checks import default_labels
from .cli import add_cli
from .coreml import (
    NormalizedClassifier,
    PackageInfo,
    imagetype_approximation,
    import_coremltools,
    inspect_coreml,
    read_coreml,
    to_coreml,
)
from .onnx import OnnxRunner, onnxruntime_session, session_options, to_onnx
from .openvino import OpenVinoRunner, openvino_metadata, to_openvino
from .staging import DiskFullError
from .verify import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    AccuracyReport,
    ParityReport,
    sample_pixels,
    verify_coreml,
    verify_onnx,
    verify_openvino,
)

#: the evaluation size recorded in a checkpoint's metadata (notebooks 04 and 07 use this name)
checkpoint_image_size = trained_image_size

__all__ = [
    "DiskFullError",
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "AccuracyReport",
    "MissingExtraError",
    "NormalizedClassifier",
    "OnnxRunner",
    "OpenVinoRunner",
    "PackageInfo",
    "ParityReport",
    "accuracy",
    "add_cli",
    "checkpoint_image_size",
    "compress",
    "default_labels",
    "imagetype_approximation",
    "import_coremltools",
    "inspect_coreml",
    "mil",
    "normalize_pixels",
    "onnxruntime_session",
    "openvino_metadata",
    "read_coreml",
    "sample_pixels",
    "session_options",
    "to_coreml",
    "to_onnx",
    "to_openvino",
    "verify_coreml",
    "verify_onnx",
    "verify_openvino",
]
