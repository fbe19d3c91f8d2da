"""Core ML weight compression: a saved ``.mlpackage`` in, a smaller one with the same interface out.

:func:`compress_coreml` applies ``coremltools.optimize.coreml``'s post-training (data-free) weight
compression to a package written by :func:`~swiftlearn.export.to_coreml`:

============  ========================================================================  =========
mode          what each weight tensor becomes                                           MIL op
============  ========================================================================  =========
``none``      float16 values, as exported                                               ``const``
``int8``      int8 values ``q`` and one scale per output channel (``linear_symmetric``:  affine
              zero point 0); the weight is ``scale * (q - zero_point)``
``palette6``  a 64-entry palette (the k-means centroids of the tensor's values) and a     LUT
              6-bit index per element; the weight is ``palette[index]``
``palette4``  the same with 16 entries and 4-bit indices                                 LUT
============  ========================================================================  =========

(affine: ``constexpr_affine_dequantize``; LUT: ``constexpr_lut_to_dense``, the ops the iOS16
deployment target of :func:`~swiftlearn.export.to_coreml` gets.) Only the weights are
compressed: Core ML decompresses them when it loads the model (or just in time on the Neural
Engine) and computes in float16 as before, so the gain is size on disk and memory traffic, and the
cost is whatever the rounded weights change in the outputs. Tensors under 2,048 elements (biases,
norms, the tiny depthwise kernels of the first stages) stay float16, as coremltools' default
``weight_threshold`` leaves them. :mod:`swiftlearn.export.mil` runs the compressed programs.

coremltools' k-means needs scikit-learn (part of the export extra).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from ..utils import MissingExtraError
from .coreml import (
    _package_bytes,
    _quiet,
    check_replaceable_package,
    import_coremltools,
    quiet_libraries,
    save_into,
)
from .mil import MilInterpreter, load_program
from .staging import export_stage

__all__ = ["COMPRESSIONS", "check_compression", "check_decompression", "compress_coreml",
           "compressed_model", "compression_config", "import_optimize", "layer_weights",
           "open_package"]

#: compression mode -> (coremltools function, config keyword arguments)
COMPRESSIONS: dict[str, tuple[str, dict] | None] = {
    "none": None,
    "int8": ("linear_quantize_weights", {"mode": "linear_symmetric", "dtype": "int8",
                                         "granularity": "per_channel"}),
    "palette6": ("palettize_weights", {"mode": "kmeans", "nbits": 6,
                                       "granularity": "per_tensor"}),
    "palette4": ("palettize_weights", {"mode": "kmeans", "nbits": 4,
                                       "granularity": "per_tensor"}),
}

_EXTRA = 'pip install -e ".[export]"'


def check_compression(mode: str) -> str:
    """``mode`` lower-cased, or a ``ValueError`` naming the modes there are."""
    name = str(mode).lower()
    if name not in COMPRESSIONS:
        raise ValueError(f"unknown compression {mode!r}; choose one of "
                         f"{', '.join(COMPRESSIONS)}")
    return name


def import_optimize():
    """``coremltools.optimize.coreml``, or a :class:`MissingExtraError` saying what to install.

    The module exists from coremltools 7 on; the k-means palettiser also needs scikit-learn.
    """
    ct = import_coremltools()
    try:
        module = importlib.import_module("coremltools.optimize.coreml")
    except ImportError as e:
        raise MissingExtraError(
            f"coremltools {getattr(ct, '__version__', '?')} has no coremltools.optimize.coreml "
            f"(weight compression needs coremltools >= 7); install the export extra: "
            f"`{_EXTRA}`") from e
    missing = [name for name in ("OptimizationConfig", "OpLinearQuantizerConfig",
                                 "OpPalettizerConfig", "linear_quantize_weights",
                                 "palettize_weights") if not hasattr(module, name)]
    if missing:
        raise MissingExtraError(
            f"coremltools {getattr(ct, '__version__', '?')}'s coremltools.optimize.coreml lacks "
            f"{', '.join(missing)}; install the export extra: `{_EXTRA}`")
    return module


def compression_config(mode: str, weights=None):
    """``(compress function, OptimizationConfig)`` for a mode other than ``"none"``.

    ``weights``: names of the weight constants to compress (the ``weight`` inputs' names, e.g.
    from :func:`layer_weights`' programs); default: every weight coremltools compresses.
    """
    mode = check_compression(mode)
    if COMPRESSIONS[mode] is None:
        raise ValueError("compression 'none' has no coremltools config: the package stays as is")
    cto = import_optimize()
    function, kwargs = COMPRESSIONS[mode]
    if function == "palettize_weights" and kwargs["mode"] == "kmeans":
        try:
            importlib.import_module("sklearn")
        except ImportError as e:
            raise MissingExtraError(f"coremltools' k-means palettisation ({mode}) needs "
                                    f"scikit-learn; install the export extra: `{_EXTRA}`") from e
    op_config = (cto.OpLinearQuantizerConfig(**kwargs) if function == "linear_quantize_weights"
                 else cto.OpPalettizerConfig(**kwargs))
    if weights is None:
        return getattr(cto, function), cto.OptimizationConfig(global_config=op_config)
    return getattr(cto, function), cto.OptimizationConfig(
        global_config=None, op_name_configs={str(name): op_config for name in weights})


def compress_coreml(source, path: str | os.PathLike, mode: str, *, weights=None,
                    verbose: bool = False):
    """Write a weight-compressed copy of a Core ML package to ``path``.

    Args:
        source: an ``MLModel`` (e.g. what :func:`~swiftlearn.export.to_coreml` returns) or the
            path of a saved ``.mlpackage``.
        path: where to write (``.mlpackage``); replaced only by a complete package, and a folder
            that is not a package is refused (see :func:`~swiftlearn.export.coreml.save_package`).
        mode: one of :data:`COMPRESSIONS` (``"none"`` saves ``source`` unchanged).
        weights: compress only these weight constants (names of ops' ``weight`` inputs); e.g.
            one layer, to look at it quickly. Default: every large enough weight.
        verbose: show coremltools' progress bars, warnings and log messages.

    Returns:
        The saved package, opened (``MLModel``); its metadata gains ``swiftlearn.compression``.

    Raises:
        ValueError: an unknown mode, or a ``path`` that holds something other than a package.
        MissingExtraError: coremltools (or its optimize module, or scikit-learn) is missing.
        DiskFullError: the disk refused a write (an ``OSError``; nothing is left at ``path``).
    """
    mode = check_compression(mode)
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"a Core ML ML Program is saved as a .mlpackage folder; got {path}")
    check_replaceable_package(path)
    ct = import_coremltools()
    source = open_package(source)
    # coremltools' compressed model is a temporary package: built in the stage, gone with it
    with export_stage(path, needed=2 * _package_bytes(source)) as stage:
        save_into(stage, compressed_model(source, mode, weights=weights, verbose=verbose), path)
    return ct.models.MLModel(str(path))


def open_package(source):
    """An ``MLModel`` as is, or the package at a path, opened without loading it."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    if not Path(source).exists():
        raise FileNotFoundError(f"no Core ML package at {source}")
    return import_coremltools().models.MLModel(str(source), skip_model_load=True)


def compressed_model(source, mode: str, *, weights=None, verbose: bool = False):
    """The compressed ``MLModel`` (a temporary package: call this inside an
    :func:`~swiftlearn.export.staging.export_stage`), with swiftlearn's metadata kept and
    ``swiftlearn.compression`` set."""
    if mode == "none":
        compressed = source
    else:
        function, config = compression_config(mode, weights)
        with _quiet(verbose):
            compressed = function(source, config)
    meta = compressed.user_defined_metadata
    for key, value in source.user_defined_metadata.items():  # keep swiftlearn's own keys
        meta.setdefault(key, value)
    meta["swiftlearn.compression"] = mode
    return compressed


def layer_weights(package) -> dict[str, np.ndarray]:
    """``{op name: dense weight}`` of every conv/linear of a package, as the program computes
    with them (compressed weights decompressed by :mod:`swiftlearn.export.mil`).

    Op names survive compression, so two packages' dictionaries compare layer by layer.
    ``package`` is a path or a :class:`~swiftlearn.export.mil.MilInterpreter`.
    """
    interp = package if isinstance(package, MilInterpreter) else \
        MilInterpreter(load_program(package))
    out = {}
    for op in interp.function.operations:
        if op.op_type in ("conv", "linear") and "weight" in op.inputs:
            value = interp.constants.get(op.inputs["weight"].name)
            if value is not None:
                out[op.name] = value.numpy()
    return out


def check_decompression(package, *, rtol: float = 1e-3) -> int:
    """Check the interpreter's dense weights against coremltools' own decompression.

    Every ``constexpr_*`` op of the package is materialised twice: by
    :mod:`swiftlearn.export.mil` (what :class:`~swiftlearn.export.mil.MilInterpreter` computes
    with) and by the op's ``materialized_val_inference`` in coremltools. ``package`` is a path or
    a :class:`~swiftlearn.export.mil.MilInterpreter` (e.g. one whose :attr:`compressed` entries
    were perturbed: the check must then fail).

    Returns:
        The number of compressed weights checked.

    Raises:
        RuntimeError: a weight differs by more than ``rtol`` (relative to its largest value).
    """
    interp = package if isinstance(package, MilInterpreter) else \
        MilInterpreter(load_program(package))
    checked = 0
    for op in interp.function.operations:
        if not op.op_type.startswith("constexpr_"):
            continue
        name = op.outputs[0].name
        with quiet_libraries():  # numpy's divide-by-zero for an all-zero channel
            ref = np.asarray(op.materialized_val_inference(), dtype=np.float32)
        got = interp.constants[name].numpy()
        scale = max(float(np.abs(ref).max()), 1e-12)
        err = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
        if err > rtol * scale:
            raise RuntimeError(f"{op.op_type} {name!r}: swiftlearn's decompression differs from "
                               f"coremltools' by {err:.3g} (largest weight {scale:.3g})")
        checked += 1
    return checked
