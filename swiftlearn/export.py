"""Export a SwiftFormer to Core ML (``.mlpackage``) and ONNX, and check both numerically.

Core ML (:func:`to_coreml`): ``torch.export`` -> ``coremltools.convert(convert_to="mlprogram")``
of a small wrapper, :class:`NormalizedClassifier`, that takes the picture an app hands over (RGB
pixels 0..255), normalises it exactly, runs the network and ends in a softmax; coremltools turns
that into a classifier with class names (``classLabel``, ``classLabel_probs``).

Verification without a Mac (:func:`verify_coreml`): the saved package is read back with
coremltools' MIL loader and evaluated op by op by :mod:`swiftlearn.mil`; its logits are compared
with PyTorch's (float32 program <= 1e-4, float16 program <= 2e-2). On macOS ``backend="coreml"``
compares Core ML's own predictions too.

ONNX (:func:`to_onnx`): the dynamo exporter (opset 18) with a dynamic batch axis; the graph takes
the *normalised* float tensor the PyTorch model takes and returns logits, so it times and compares
one-to-one with eager PyTorch. :func:`onnxruntime_session` builds a session with a fixed number
of threads (what ``swiftlearn bench`` uses), :class:`OnnxRunner` wraps it as ``logits =
runner(x)``, :func:`verify_onnx` checks parity (<= 1e-4).

coremltools, onnx, onnxscript and onnxruntime are optional: ``pip install -e ".[export]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import IMAGENET_MEAN, IMAGENET_STD, IMAGENETTE_CLASSES
from .model import MIN_SIZE, VARIANTS

__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "NormalizedClassifier",
    "OnnxRunner",
    "PackageInfo",
    "ParityReport",
    "add_cli",
    "checkpoint_image_size",
    "default_labels",
    "imagetype_approximation",
    "inspect_coreml",
    "normalize",
    "onnxruntime_session",
    "to_coreml",
    "to_onnx",
    "verify_coreml",
    "verify_onnx",
]

FP32_TOLERANCE = 1e-4  #: max |logit difference| for a float32 program or ONNX graph
FP16_TOLERANCE = 2e-2  #: max |logit difference| for a float16 program
PRECISIONS = {"float16": "FLOAT16", "fp16": "FLOAT16", "float32": "FLOAT32", "fp32": "FLOAT32"}
INPUT_NAME, LABEL_NAME, PROBS_NAME = "image", "classLabel", "classLabel_probs"
_EXTRA = 'pip install -e ".[export]"'


class MissingDependencyError(ImportError, RuntimeError):
    """An optional dependency of the export extra is not installed."""


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise MissingDependencyError(
            f"{module} is not installed; it comes with swiftlearn's export extra: {_EXTRA}") from e


def _coremltools():
    """Import coremltools without its Linux import-time noise (macOS-only proxies, torch pin)."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _require("coremltools")
    finally:
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------------
# The wrapper: pixels in, probabilities out
# ------------------------------------------------------------------------------------------------

def normalize(pixels: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """``(pixels / 255 - mean) / std`` per channel: ``[B, 3, H, W]`` 0..255 -> model input."""
    mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (pixels.float() / 255 - mean) / std


class NormalizedClassifier(nn.Module):
    r"""What the app sees: RGB pixels 0..255 in, class probabilities out.

    .. math:: p = \mathrm{softmax}\big(f((x - 255\,\mu_c) \cdot \tfrac{1}{255\,\sigma_c})\big)

    Why the normalisation lives here and not in coremltools' ``ImageType(scale=, bias=)``:
    Core ML's image preprocessing is ``scale * x + bias_c`` with *one* scale for all three
    channels and a bias per channel, but ImageNet normalisation divides each channel by its own
    standard deviation (0.229, 0.224, 0.225). With a single scale one has to pick a compromise
    ``sigma`` (usually their mean, 0.226), which scales the red channel 1.3 % too large and green
    0.9 % too small; a trained SwiftFormer's logits then move by up to ~0.1 (notebook 07 measures
    it). Two ops (a ``sub`` and a ``mul``) inside the program cost nothing and are exact.

    The softmax is here because coremltools' classifier reports whatever the program outputs as
    "probabilities"; without it an app would receive logits under that name.

    Shape:
        - input ``[B, 3, H, W]``, float RGB 0..255
        - output ``[B, num_classes]``, probabilities summing to 1
    """

    def __init__(self, model: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.model = model
        mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("offset", 255 * mean)  # [1, 3, 1, 1]
        self.register_buffer("scale", 1 / (255 * std))  # [1, 3, 1, 1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.offset) * self.scale  # exact per-channel (x/255 - mean) / std
        return self.model(x).softmax(dim=-1)


def imagetype_approximation(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[float, list[float]]:
    """The ``(scale, bias)`` one would give ``ct.ImageType`` for ImageNet normalisation.

    One scale ``1 / (255 * mean(std))`` for all channels and ``bias_c = -mean_c / mean(std)``:
    exact for the means, approximate for the standard deviations (see
    :class:`NormalizedClassifier`). Provided to measure that approximation, not to use it.
    """
    sigma = float(np.mean(std))
    return 1 / (255 * sigma), [-m / sigma for m in mean]


# ------------------------------------------------------------------------------------------------
# Core ML export
# ------------------------------------------------------------------------------------------------

def _hw(size, what: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) for s in size):
        h, w = int(size[0]), int(size[1])
    else:
        raise ValueError(f"{what} must be an int or an (H, W) pair of ints, got {size!r}")
    if min(h, w) < MIN_SIZE:
        raise ValueError(f"{what} {h}x{w} is too small: SwiftFormer downsamples 32x and needs at "
                         f"least {MIN_SIZE}x{MIN_SIZE} pixels")
    return h, w


def _check_model(model: nn.Module, h: int, w: int) -> int:
    """Validate the model for export at ``h x w``; return its number of classes."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("the model is in training mode (dropout, batch statistics, two heads); "
                         "call model.eval() before exporting")
    devices = {str(t.device) for t in [*model.parameters(), *model.buffers()]}
    if devices - {"cpu"}:
        raise ValueError(f"the model is on {sorted(devices)}; export runs on the CPU: model.cpu()")
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, h, w))
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"the model cannot take {h}x{w} inputs: {e}") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError("the model must return logits [B, num_classes] in eval mode, got "
                         f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
    return int(out.shape[1])


def default_labels(num_classes: int, classes: Sequence[str] | None = None) -> list[str]:
    """Readable class names: Imagenette's for 10 classes (WordNet ids are translated too)."""
    names = dict(IMAGENETTE_CLASSES)
    if classes is not None and len(classes) == num_classes:
        return [names.get(str(c), str(c)) for c in classes]
    if num_classes == len(IMAGENETTE_CLASSES):
        return [name for _, name in IMAGENETTE_CLASSES]
    return [f"class_{i}" for i in range(num_classes)]


def _model_name(model: nn.Module) -> str:
    for name, v in VARIANTS.items():
        if getattr(model, "widths", None) == v.widths and getattr(model, "depths", None) == \
                v.depths:
            return name
    return type(model).__name__


@contextlib.contextmanager
def _integer_floordiv(ct):
    """Keep ``int // int`` integral while converting (flexible input sizes only).

    With symbolic H and W, torch.export computes each stage's size as ``1 + (H - 1) // 4`` etc.
    coremltools 9.0 casts every ``floordiv`` result to fp32, and the reshapes that consume those
    sizes then fail ("concat ... should share the same data type"). This swaps in a converter that
    keeps integer division integer for the duration of one conversion.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import (
        _TORCH_OPS_REGISTRY as registry,
    )
    from coremltools.converters.mil.mil import types

    table = registry.name_to_func_mapping
    original = table["floordiv"]

    def floordiv(context, node):
        x, y = ops._get_inputs(context, node, expected=2)
        if types.is_int(x.dtype) and types.is_int(y.dtype):
            context.add(mb.floor_div(x=x, y=y, name=node.name))
        else:
            original(context, node)

    table["floordiv"] = floordiv
    try:
        yield
    finally:
        table["floordiv"] = original


@contextlib.contextmanager
def _quiet_progress(verbose: bool):
    """Hide coremltools' tqdm progress bars (stderr), keep any other stderr text."""
    if verbose:
        yield
        return
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield
    bars = re.compile(r"(Converting PyTorch Frontend|Running MIL .* pipeline)")
    for line in re.split(r"[\r\n]+", buffer.getvalue()):
        if line.strip() and not bars.search(line):
            print(line, file=sys.stderr)


def to_coreml(model: nn.Module, path: str | os.PathLike, image_size=224,
              labels: Sequence[str] | None = None, precision: str = "float16", *,
              enumerated_sizes: Sequence | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
              description: str | None = None, author: str = "swiftlearn",
              license: str = "Apache-2.0", version: str | None = None,
              deployment_target: str = "iOS16", verbose: bool = False):
    """Convert an image classifier to a Core ML ML Program (``.mlpackage``) an app can call.

    The package takes an RGB image named ``image`` (``image_size``; pixel values 0..255, as Vision
    or a ``CVPixelBuffer`` hand them over) and returns ``classLabel`` (the most likely class name)
    and ``classLabel_probs`` (name -> probability). ImageNet normalisation and the softmax are
    inside the program (:class:`NormalizedClassifier` explains why not ``ImageType`` scale/bias).

    Args:
        model: a SwiftFormer (or any classifier ``[B, 3, H, W] -> [B, K]``) in eval mode.
        path: where to write; must end in ``.mlpackage`` (an existing package is replaced).
        image_size: input side in pixels, or ``(H, W)``; the default input size.
        labels: ``K`` class names; default: Imagenette's names for 10 classes, else ``class_i``.
        precision: ``"float16"`` (half the size; what the Neural Engine runs) or ``"float32"``.
        enumerated_sizes: other sizes the app may pass (ints or ``(H, W)``; each side > 32),
            e.g. ``[160, 192, 224, 256]``; Core ML then accepts exactly these.
        mean, std: the normalisation the model was trained with (per channel, 0..1 scale).
        description, author, license, version: metadata Xcode shows.
        deployment_target: minimum OS, a ``coremltools.target`` name (``"iOS16"``: macOS 13).
        verbose: show coremltools' progress bars.

    Returns:
        The converted ``coremltools.models.MLModel``; the package is saved at ``path``.

    Raises:
        ValueError: training mode, a size the model cannot take, wrong labels or precision.
        MissingDependencyError: coremltools is not installed (an ``ImportError``).
    """
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"a Core ML ML Program is saved as a .mlpackage folder; got {path}")
    if str(precision).lower() not in PRECISIONS:
        raise ValueError(f"precision must be 'float16' or 'float32', got {precision!r}")
    h, w = _hw(image_size, "image_size")
    num_classes = _check_model(model, h, w)
    labels = default_labels(num_classes) if labels is None else [str(x) for x in labels]
    if len(labels) != num_classes:
        raise ValueError(f"the model has {num_classes} outputs but {len(labels)} labels were given")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique (they become dictionary keys in Core ML)")
    sizes = [(h, w)]
    for s in enumerated_sizes or []:
        hw = _hw(s, "each of enumerated_sizes")
        if hw not in sizes:
            sizes.append(hw)
    if len(sizes) > 1 and min(min(s) for s in sizes) <= MIN_SIZE:
        raise ValueError(f"with enumerated sizes every side must be above {MIN_SIZE}, got "
                         f"{[f'{a}x{b}' for a, b in sizes]} (at {MIN_SIZE} the last stage is 1x1, "
                         "a shape torch.export specialises on)")
    ct = _coremltools()
    if not hasattr(ct.target, deployment_target):
        raise ValueError(f"unknown deployment_target {deployment_target!r}; use a "
                         "coremltools.target name such as 'iOS16' or 'macOS13'")

    wrapper = NormalizedClassifier(model, mean, std).eval()
    example = torch.full((1, 3, h, w), 127.0)
    dynamic = None
    if len(sizes) > 1:
        from torch.export import Dim

        dims = {}
        for axis, name in ((2, "height"), (3, "width")):
            values = sorted({s[axis - 2] for s in sizes})
            if len(values) > 1:
                dims[axis] = Dim(name, min=values[0], max=values[-1])
        dynamic = {"image": dims}
        shape = ct.EnumeratedShapes(shapes=[(1, 3, *s) for s in sizes], default=(1, 3, h, w))
    else:
        shape = (1, 3, h, w)
    with torch.no_grad():
        exported = torch.export.export(wrapper, (example,), dynamic_shapes=dynamic)
        exported = exported.run_decompositions({})
    image = ct.ImageType(name=INPUT_NAME, shape=shape, color_layout=ct.colorlayout.RGB,
                         scale=1.0, bias=[0.0, 0.0, 0.0])
    floordiv = _integer_floordiv(ct) if dynamic else contextlib.nullcontext()
    with floordiv, _quiet_progress(verbose):
        mlmodel = ct.convert(
            exported, inputs=[image], convert_to="mlprogram",
            classifier_config=ct.ClassifierConfig(labels, predicted_feature_name=LABEL_NAME),
            compute_precision=getattr(ct.precision, PRECISIONS[str(precision).lower()]),
            minimum_deployment_target=getattr(ct.target, deployment_target))

    name = _model_name(model)
    size_text = ", ".join(f"{a}x{b}" for a, b in sizes)
    mlmodel.short_description = description or (
        f"{name} image classifier ({num_classes} classes), exported by swiftlearn")
    mlmodel.author, mlmodel.license = author, license
    mlmodel.version = version or ""
    mlmodel.input_description[INPUT_NAME] = (
        f"RGB image ({size_text}), pixel values 0-255; normalised inside the model with "
        f"mean {tuple(mean)} and std {tuple(std)}")
    mlmodel.output_description[LABEL_NAME] = "most likely class"
    mlmodel.output_description[PROBS_NAME] = "probability of each class (softmax)"
    meta = mlmodel.user_defined_metadata
    meta["com.apple.coreml.model.preview.type"] = "imageClassifier"  # Xcode's preview tab
    meta["swiftlearn.model"] = name
    meta["swiftlearn.image_size"] = f"{h}x{w}"
    meta["swiftlearn.precision"] = "float16" if PRECISIONS[str(precision).lower()] == "FLOAT16" \
        else "float32"
    meta["swiftlearn.mean"] = ",".join(f"{m:g}" for m in mean)
    meta["swiftlearn.std"] = ",".join(f"{s:g}" for s in std)
    path.parent.mkdir(parents=True, exist_ok=True)
    mlmodel.save(str(path))
    return mlmodel


# ------------------------------------------------------------------------------------------------
# Reading a package back
# ------------------------------------------------------------------------------------------------

@dataclass
class PackageInfo:
    """What :func:`inspect_coreml` reads from a saved ``.mlpackage``."""

    path: Path
    inputs: list[dict]
    outputs: list[dict]
    metadata: dict
    op_histogram: Counter
    size_bytes: int
    weights_bytes: int
    precision: str  # "float16" if any op computes in fp16, else "float32"
    spec_version: int
    labels: list[str]  # class names, in the model's output order

    def __str__(self) -> str:
        def fmt(d):
            return f"  {d['name']}: {d['type']} {d.get('shape', '')}".rstrip()

        ops = ", ".join(f"{k} {v}" for k, v in self.op_histogram.most_common())
        return "\n".join([
            f"{self.path.name}: ML Program (spec {self.spec_version}), {self.precision}, "
            f"{self.size_bytes / 1e6:.2f} MB ({self.weights_bytes / 1e6:.2f} MB weights)",
            "inputs:", *map(fmt, self.inputs), "outputs:", *map(fmt, self.outputs),
            f"ops ({sum(self.op_histogram.values())}, consts excluded): {ops}"])


def _feature(desc) -> dict:
    kind = desc.type.WhichOneof("Type")
    d = {"name": desc.name, "type": kind, "description": desc.shortDescription}
    t = getattr(desc.type, kind)
    if kind == "imageType":
        d["type"] = f"image ({t.ColorSpace.Name(t.colorSpace)})"
        d["shape"] = [t.height, t.width]
        sizes = [[s.height, s.width] for s in t.enumeratedSizes.sizes]
        if sizes:
            d["enumerated_sizes"] = sizes
    elif kind == "multiArrayType":
        d["type"] = f"multiarray ({t.ArrayDataType.Name(t.dataType)})"
        d["shape"] = list(t.shape)
    elif kind == "dictionaryType":
        d["type"] = f"dictionary ({t.WhichOneof('KeyType')} -> double)"
    elif kind == "stringType":
        d["type"] = "string"
    return d


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def inspect_coreml(path: str | os.PathLike) -> PackageInfo:
    """Read a saved package back: inputs/outputs (names, types, shapes), metadata, ops, size."""
    return _inspect(path)[0]


def _inspect(path: str | os.PathLike):
    """``(PackageInfo, MIL program)``."""
    from .mil import _dtype_name, load_program, op_histogram

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no Core ML package at {path}")
    ct = _coremltools()
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    program = load_program(path)
    ops = [op for fn in program.functions.values() for op in fn.operations]
    fp16 = any(_dtype_name(v) == "fp16" for op in ops if op.op_type != "const" for v in op.outputs)
    labels = [list(getattr(op.inputs["classes"].val, "ls", op.inputs["classes"].val))
              for op in ops if op.op_type == "classify"]
    d = spec.description
    meta = {"short_description": d.metadata.shortDescription, "author": d.metadata.author,
            "license": d.metadata.license, "version": d.metadata.versionString,
            **dict(d.metadata.userDefined)}
    weights = Path(mlmodel.weights_dir)
    return PackageInfo(path=path, inputs=[_feature(i) for i in d.input],
                       outputs=[_feature(o) for o in d.output], metadata=meta,
                       op_histogram=op_histogram(program), size_bytes=_dir_size(path),
                       weights_bytes=_dir_size(weights) if weights.is_dir() else 0,
                       precision="float16" if fp16 else "float32",
                       spec_version=spec.specificationVersion,
                       labels=[str(c) for c in labels[0]] if labels else []), program


# ------------------------------------------------------------------------------------------------
# Numerical verification
# ------------------------------------------------------------------------------------------------

@dataclass
class ParityReport:
    """Exported model vs PyTorch on the same inputs."""

    backend: str
    n_inputs: int
    max_abs_logits: float  # nan when the backend reports probabilities only
    max_abs_probs: float
    top1_agreement: float
    tolerance: float
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        err = self.max_abs_probs if np.isnan(self.max_abs_logits) else self.max_abs_logits
        return bool(err <= self.tolerance)

    def __str__(self) -> str:
        what = "probs" if np.isnan(self.max_abs_logits) else "logits"
        err = self.max_abs_probs if what == "probs" else self.max_abs_logits
        return (f"{self.backend}: max |diff| {what} {err:.2e} (tolerance {self.tolerance:.0e}), "
                f"probs {self.max_abs_probs:.2e}, top-1 agreement {self.top1_agreement:.0%} on "
                f"{self.n_inputs} inputs -> {'OK' if self.ok else 'FAILED'}")


def _pixels(images, sizes: list[tuple[int, int]], n: int, seed: int) -> list[torch.Tensor]:
    """Inputs as a list of float ``[1, 3, H, W]`` 0..255 tensors."""
    if images is None:
        g = torch.Generator().manual_seed(seed)
        # smooth random pictures (bilinear upsampling of a coarse grid): closer to photos than
        # white noise, and they exercise every enumerated size
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
    return ParityReport(
        backend=backend, n_inputs=len(ref_logits), max_abs_logits=err_logits,
        max_abs_probs=float(np.abs(probs - ref_probs).max()),
        top1_agreement=float((probs.argmax(1) == ref_probs.argmax(1)).mean()),
        tolerance=tolerance, details=details or {})


def verify_coreml(package: str | os.PathLike, model: nn.Module, images=None, *, n: int = 4,
                  tolerance: float | None = None, backend: str = "interpreter",
                  round_fp16: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  seed: int = 0, strict: bool = True) -> ParityReport:
    """Check that a saved package computes what ``model`` computes.

    Args:
        package: the ``.mlpackage`` written by :func:`to_coreml`.
        model: the PyTorch model it was exported from (eval mode).
        images: RGB uint8 pictures ``[H, W, 3]`` at a size the package accepts, or one float
            ``[B, 3, H, W]`` 0..255 array; default: ``n`` smooth random pictures at every
            accepted size.
        tolerance: max |logit difference|; default :data:`FP32_TOLERANCE` for a float32 program,
            :data:`FP16_TOLERANCE` for a float16 one (probabilities with ``backend="coreml"``).
        backend: ``"interpreter"`` (:mod:`swiftlearn.mil`, any OS) or ``"coreml"``
            (``MLModel.predict``; macOS only, probabilities only).
        round_fp16: see :meth:`swiftlearn.mil.MilInterpreter.run`.
        strict: raise when the check fails (else just return the report).

    Raises:
        RuntimeError: the outputs differ by more than ``tolerance`` (with ``strict``), or
            ``backend="coreml"`` off macOS.
    """
    from .mil import MilInterpreter

    if model.training:
        raise ValueError("call model.eval() before verifying: PyTorch's reference must be the "
                         "eval-mode model")
    info, program = _inspect(package)
    image_input = info.inputs[0]
    sizes = [tuple(s) for s in image_input.get("enumerated_sizes", [image_input["shape"]])]
    inputs = _pixels(images, sizes, n, seed)
    for x in inputs:
        if tuple(x.shape[-2:]) not in sizes:
            raise ValueError(f"the package accepts {sizes}, got an input of {tuple(x.shape[-2:])}")
    if tolerance is None:
        tolerance = FP16_TOLERANCE if info.precision == "float16" else FP32_TOLERANCE
    with torch.no_grad():
        ref = [model(normalize(x, mean, std)).numpy() for x in inputs]
    if backend == "interpreter":
        interp = MilInterpreter(program)
        logits_name = interp.logits_name()
        got_logits, got_probs = [], []
        for x in inputs:
            out = interp.run({image_input["name"]: x.numpy()}, fetch=[logits_name],
                             round_fp16=round_fp16)
            got_logits.append(out[logits_name].reshape(1, -1))
            probs = out[PROBS_NAME]
            got_probs.append(np.array([[probs[k] for k in info.labels]]))
        name = f"MIL interpreter ({info.precision}{'' if round_fp16 else ', unrounded'})"
        report = _compare(name, got_logits, got_probs, ref, tolerance)
    elif backend == "coreml":
        if sys.platform != "darwin":
            raise RuntimeError("MLModel.predict runs only on macOS; use backend='interpreter'")
        from PIL import Image

        ct = _coremltools()
        mlmodel = ct.models.MLModel(str(package))
        got_probs = []
        for x in inputs:
            picture = Image.fromarray(x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
            probs = mlmodel.predict({image_input["name"]: picture})[PROBS_NAME]
            got_probs.append(np.array([[probs[k] for k in info.labels]]))
        report = _compare("Core ML (MLModel.predict)", None, got_probs, ref, tolerance)
    else:
        raise ValueError(f"backend must be 'interpreter' or 'coreml', got {backend!r}")
    if strict and not report.ok:
        raise RuntimeError(f"the Core ML package disagrees with PyTorch: {report}")
    return report


# ------------------------------------------------------------------------------------------------
# ONNX
# ------------------------------------------------------------------------------------------------

def to_onnx(model: nn.Module, path: str | os.PathLike, image_size=224, *, opset: int = 18,
            dynamic_batch: bool = True, fusable_gelu: bool = True) -> Path:
    """Export to ONNX with the dynamo exporter: ``input`` ``[B, 3, H, W]`` -> ``logits``.

    The graph takes the *normalised* float tensor the PyTorch model takes (no pixel wrapper), so
    ONNX Runtime and eager PyTorch can be timed and compared on the same input. The weights are
    stored inside the single ``.onnx`` file.

    Args:
        model: eval-mode classifier.
        path: destination ``.onnx`` file.
        image_size: the (static) input size, int or ``(H, W)``.
        opset: ONNX opset (18 has no ``Gelu`` op, so GELU is spelled out with ``Erf``).
        dynamic_batch: make the batch axis symbolic (``batch``).
        fusable_gelu: reorder each spelled-out GELU from ``x * (0.5 * (1 + erf(x/√2)))`` (what
            the exporter writes) to ``(x * 0.5) * (1 + erf(x/√2))``, the form ONNX Runtime's
            GELU fusion recognises: same standard ops, same values (halving is exact), and on
            SwiftFormer-XS about a third less ONNX Runtime latency.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the ONNX file name should end in .onnx, got {path}")
    h, w = _hw(image_size, "image_size")
    _check_model(model, h, w)
    _require("onnx")
    _require("onnxscript")
    example = torch.randn(2 if dynamic_batch else 1, 3, h, w)
    dynamic = None
    if dynamic_batch:
        from torch.export import Dim

        name = next(iter(_forward_arg_names(model)), "x")
        dynamic = {name: {0: Dim("batch", min=1, max=4096)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_stdout():
        torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_shapes=dynamic, external_data=False)
    if fusable_gelu:
        import onnx

        proto = onnx.load(str(path))
        if _reorder_gelu(proto.graph):
            onnx.save(proto, str(path))
    return path


def _reorder_gelu(graph) -> int:
    """Rewrite ``Mul(x, Mul(0.5, Add(Erf(Div(x, √2)), 1)))`` as ``Mul(Mul(x, 0.5), Add(...))``.

    Returns how many GELUs were reordered. Only exact matches with single-use intermediates are
    touched, so any other graph passes through unchanged.
    """
    from onnx import numpy_helper

    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    consts.update({t.name: numpy_helper.to_array(t) for t in graph.initializer})
    users: dict[str, list] = {}
    producer = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node

    def is_const(name: str, value: float) -> bool:
        c = consts.get(name)
        return c is not None and c.size == 1 and abs(float(c.reshape(())) - value) < 1e-6

    def only_user(name: str, op_type: str):
        nodes = users.get(name, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op_type else None

    count = 0
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not is_const(div.input[1], 2**0.5):
            continue
        x = div.input[0]
        add = only_user(erf.output[0], "Add")
        if add is None or not any(is_const(i, 1.0) for i in add.input):
            continue
        half_mul = only_user(add.output[0], "Mul")
        half = [i for i in half_mul.input if i != add.output[0]] if half_mul is not None else []
        if len(half) != 1 or not is_const(half[0], 0.5):
            continue
        out_mul = only_user(half_mul.output[0], "Mul")
        if out_mul is None or set(out_mul.input) != {x, half_mul.output[0]}:
            continue
        half_mul.input[:] = [x, half[0]]  # x * 0.5 (nodes stay in topological order)
        out_mul.input[:] = [half_mul.output[0], add.output[0]]  # (x * 0.5) * (1 + erf)
        count += 1
    return count


def _forward_arg_names(model: nn.Module) -> list[str]:
    import inspect

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


def onnxruntime_session(path: str | os.PathLike, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads.

    All graph optimisations on, sequential execution, one inter-op thread: the setting that
    ``swiftlearn bench`` compares with ``torch.set_num_threads(threads)`` eager PyTorch. Feed it
    ``{"input": x}`` (float32 ``[B, 3, H, W]``, normalised) and read ``"logits"``.
    """
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """``logits = OnnxRunner("model.onnx")(x)``: numpy logits from a tensor or an array.

    Args:
        path: an ``.onnx`` file from :func:`to_onnx`.
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.session = onnxruntime_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]


def verify_onnx(path: str | os.PathLike, model: nn.Module, inputs: torch.Tensor | None = None, *,
                tolerance: float = FP32_TOLERANCE, threads: int = 1, seed: int = 0,
                strict: bool = True) -> ParityReport:
    """ONNX Runtime vs PyTorch on ``inputs`` (default: batches of 1 and 3 random images)."""
    runner = OnnxRunner(path, threads)
    if inputs is None:
        shape = runner.session.get_inputs()[0].shape
        h, w = shape[2], shape[3]
        g = torch.Generator().manual_seed(seed)
        batches = [torch.randn(b, 3, h, w, generator=g) for b in (1, 3)]
    else:
        batches = [torch.as_tensor(inputs).float()]
    got, ref = [], []
    with torch.no_grad():
        for x in batches:
            got.append(runner(x))
            ref.append(model(x).numpy())
    probs = [torch.as_tensor(g).softmax(-1).numpy() for g in got]
    report = _compare("ONNX Runtime", got, probs, ref, tolerance,
                      details={"batch_sizes": [len(x) for x in batches]})
    if strict and not report.ok:
        raise RuntimeError(f"the ONNX model disagrees with PyTorch: {report}")
    return report


# ------------------------------------------------------------------------------------------------
# Command line: swiftlearn export
# ------------------------------------------------------------------------------------------------

def checkpoint_image_size(checkpoint: dict | None) -> int | None:
    """The size a ``swiftlearn train`` run was evaluated at, from its checkpoint dict.

    The last ``history`` entry's ``eval_size`` if recorded, else the config's ``eval_size``, else
    its final training size (``TrainConfig.size_at`` at the end of the run); ``None`` when the
    checkpoint carries no training config.
    """
    if not checkpoint:
        return None
    history = checkpoint.get("history") or []
    if history and isinstance(history[-1], dict) and history[-1].get("eval_size"):
        return int(history[-1]["eval_size"])
    config = checkpoint.get("config")
    if not config:
        return None
    if config.get("eval_size"):
        return int(config["eval_size"])
    try:
        from .train import TrainConfig

        cfg = TrainConfig.from_dict(dict(config))
        return int(cfg.size_at(cfg.epochs - 1, 1.0))
    except (ValueError, TypeError):  # a config from another version: its plain size
        return int(config["img_size"]) if config.get("img_size") else None


def _load_for_export(args: argparse.Namespace):
    from .checkpoints import read_checkpoint
    from .model import create_model

    path = Path(args.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass the .pt/.pth file written by "
                                "`swiftlearn train` (e.g. assets/swiftformer_xs_imagenette.pt)")
    ckpt = read_checkpoint(path)
    name = args.model or ckpt.variant
    if name is None:
        raise ValueError(f"{path} matches no named variant; pass --model")
    num_classes = args.num_classes or ckpt.num_classes
    if not num_classes:
        raise ValueError(f"{path} has no classifier head; pass --num-classes")
    model = create_model(name, num_classes=num_classes, checkpoint=path)
    size = args.image_size or checkpoint_image_size(ckpt.meta) or 224
    labels = None
    if args.labels:
        labels = [s.strip() for s in Path(args.labels).read_text().splitlines() if s.strip()]
    else:
        labels = default_labels(num_classes, ckpt.meta.get("classes"))
    return model.eval(), int(size), labels


def _cmd_export(args: argparse.Namespace) -> int:
    fmt = args.format.lower()
    if fmt not in ("coreml", "onnx"):
        raise ValueError(f"unknown format {args.format!r}; choose 'coreml' or 'onnx'")
    # fail on a missing extra before loading anything
    if fmt == "coreml":
        _coremltools()
    else:
        _require("onnxscript")
        _require("onnxruntime")
    suffix = ".mlpackage" if fmt == "coreml" else ".onnx"
    out = Path(args.out)
    if out.suffix != suffix:
        raise ValueError(f"--out for --format {fmt} must end in {suffix}, got {out}")
    model, size, labels = _load_for_export(args)
    if fmt == "coreml":
        to_coreml(model, out, size, labels, args.precision,
                  enumerated_sizes=args.enumerated_sizes or None)
        report = verify_coreml(out, model, n=2) if args.verify else None
        info = inspect_coreml(out)
        print(info)
    else:
        to_onnx(model, out, size)
        report = verify_onnx(out, model) if args.verify else None
        print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, input [batch, 3, {size}, {size}]")
    if report is not None:
        print(report)
    return 0


def add_cli(subparsers) -> None:
    """Register ``swiftlearn export``."""
    p = subparsers.add_parser(
        "export", help="export a checkpoint to Core ML (.mlpackage) or ONNX, and verify it",
        description="Export a trained SwiftFormer to Core ML or ONNX and check it numerically "
                    "against PyTorch (needs the export extra: " + _EXTRA + ").")
    p.add_argument("--checkpoint", required=True, help="a .pt/.pth checkpoint (any format "
                   "swiftlearn.checkpoints reads)")
    p.add_argument("--format", required=True, help="coreml or onnx")
    p.add_argument("--out", required=True, help="output path (.mlpackage or .onnx)")
    p.add_argument("--model", default=None, help="variant (default: inferred from the weights)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the checkpoint's)")
    p.add_argument("--precision", default="float16", choices=["float16", "float32"],
                   help="Core ML compute precision (default float16)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input side in pixels (default: the checkpoint's evaluation size, "
                        "else 224)")
    p.add_argument("--enumerated-sizes", type=int, nargs="*", default=None,
                   help="Core ML only: further square sizes the model accepts")
    p.add_argument("--labels", default=None, help="text file with one class name per line")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the numerical check against PyTorch")
    p.set_defaults(func=_cmd_export)
