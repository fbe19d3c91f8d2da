"""Core ML export: a SwiftFormer as an ``.mlpackage`` an app calls with a picture.

:func:`to_coreml` runs ``torch.export`` -> ``coremltools.convert(convert_to="mlprogram")`` on a
small wrapper, :class:`NormalizedClassifier`, that takes the picture an app hands over (RGB pixels
0..255), normalises it exactly, runs the network and ends in a softmax; coremltools turns that
into a classifier with class names (``classLabel``, ``classLabel_probs``).
:func:`imagetype_approximation` gives the ``ImageType(scale=, bias=)`` one would use instead, so
the course can measure what that shortcut costs.

:func:`save_package` writes the package beside ``path`` and swaps it in only once complete, so a
failed save never costs the package already there (and a folder that is not a package is refused).
Conversion and saving happen inside :func:`~swiftlearn.export.staging.export_stage`, so
coremltools' own temporary packages live (and die) in the export's temporary sibling, not in
``/tmp``.
:func:`inspect_coreml` reads a saved package back (inputs, outputs, metadata, ops, sizes) on any
OS; :mod:`swiftlearn.export.verify` checks its numbers against PyTorch.

coremltools is optional (``pip install -e ".[export]"``); it is imported when a function needs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model import MIN_SIZE, variant_of
from ..utils import IMAGENET_MEAN, IMAGENET_STD, check_writable, replace_dir, require
from .checks import check_model, default_labels, image_hw
from .mil import dtype_name, load_program, op_histogram
from .staging import export_stage

__all__ = [
    "NormalizedClassifier",
    "PackageInfo",
    "imagetype_approximation",
    "import_coremltools",
    "inspect_coreml",
    "read_coreml",
    "save_package",
    "to_coreml",
]

PRECISIONS = {"float16": "FLOAT16", "fp16": "FLOAT16", "float32": "FLOAT32", "fp32": "FLOAT32"}
INPUT_NAME, LABEL_NAME, PROBS_NAME = "image", "classLabel", "classLabel_probs"


def import_coremltools():
    """Import coremltools without its Linux import-time noise (macOS-only proxies, torch pin).

    Raises:
        MissingExtraError: coremltools is not installed (the message names the export extra).
    """
    with _logger_level("coremltools", logging.ERROR):
        return require("coremltools")


@contextlib.contextmanager
def _logger_level(name: str, level: int):
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


# ------------------------------------------------------------------------------------------------
# The wrapper: pixels in, probabilities out
# ------------------------------------------------------------------------------------------------

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
        path: where to write; must end in ``.mlpackage``. An existing package is replaced only
            once the new one is complete (see :func:`save_package`); a folder that is not a
            package is refused.
        image_size: input side in pixels, or ``(H, W)``; the default input size.
        labels: ``K`` class names; default: Imagenette's names for 10 classes, else ``class_i``.
        precision: ``"float16"`` (half the size; what the Neural Engine runs) or ``"float32"``.
        enumerated_sizes: other sizes the app may pass (ints or ``(H, W)``; each side > 32),
            e.g. ``[160, 192, 224, 256]``; Core ML then accepts exactly these.
        mean, std: the normalisation the model was trained with (per channel, 0..1 scale).
        description, author, license, version: metadata Xcode shows.
        deployment_target: minimum OS, a ``coremltools.target`` name (``"iOS16"``: macOS 13).
        verbose: show coremltools' progress bars, warnings and log messages.

    Returns:
        The saved package, opened (``coremltools.models.MLModel``): the converted model's own
        temporary package is deleted with the export's temporary folder.

    Raises:
        ValueError: training mode, a size the model cannot take, wrong labels or precision, a
            ``path`` that holds something other than a package.
        MissingExtraError: coremltools is not installed (an ``ImportError``).
        DiskFullError: the disk refused a write (an ``OSError``; nothing is left at ``path``).
    """
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"a Core ML ML Program is saved as a .mlpackage folder; got {path}")
    check_replaceable_package(path)
    if str(precision).lower() not in PRECISIONS:
        raise ValueError(f"precision must be 'float16' or 'float32', got {precision!r}")
    h, w = image_hw(image_size, "image_size")
    num_classes = check_model(model, h, w)
    labels = default_labels(num_classes) if labels is None else [str(x) for x in labels]
    if len(labels) != num_classes:
        raise ValueError(f"the model has {num_classes} outputs but {len(labels)} labels were given")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique (they become dictionary keys in Core ML)")
    sizes = _accepted_sizes((h, w), enumerated_sizes)
    ct = import_coremltools()
    if not hasattr(ct.target, deployment_target):
        raise ValueError(f"unknown deployment_target {deployment_target!r}; use a "
                         "coremltools.target name such as 'iOS16' or 'macOS13'")

    wrapper = NormalizedClassifier(model, mean, std).eval()
    example = torch.full((1, 3, h, w), 127.0)
    shape, dynamic = _input_shape(ct, sizes)
    image = ct.ImageType(name=INPUT_NAME, shape=shape, color_layout=ct.colorlayout.RGB,
                         scale=1.0, bias=[0.0, 0.0, 0.0])
    floordiv = _integer_floordiv(ct) if dynamic else contextlib.nullcontext()
    weight_bytes = sum(p.numel() for p in model.parameters()) * (
        2 if PRECISIONS[str(precision).lower()] == "FLOAT16" else 4)
    # the weights are written three times: coremltools' weights folder, its temporary package,
    # the saved copy
    with export_stage(path, needed=3 * weight_bytes) as stage:
        with torch.no_grad():
            exported = torch.export.export(wrapper, (example,), dynamic_shapes=dynamic)
            exported = exported.run_decompositions({})
        with floordiv, _quiet(verbose):
            mlmodel = ct.convert(
                exported, inputs=[image], convert_to="mlprogram",
                classifier_config=ct.ClassifierConfig(labels, predicted_feature_name=LABEL_NAME),
                compute_precision=getattr(ct.precision, PRECISIONS[str(precision).lower()]),
                minimum_deployment_target=getattr(ct.target, deployment_target))
        _describe(mlmodel, _model_name(model), num_classes, sizes, precision, mean, std,
                  description=description, author=author, license=license, version=version)
        save_into(stage, mlmodel, path)
    return ct.models.MLModel(str(path))


def check_replaceable_package(path: Path) -> None:
    """Refuse, before any work, an output path that holds something other than a package."""
    check_writable(path, "--out", kind="dir")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"{path} exists and is not a Core ML package folder; move it away or "
                         "choose another --out")
    if path.is_dir() and not (path / "Manifest.json").is_file():
        raise ValueError(f"{path} is a folder but not a Core ML package (no Manifest.json); "
                         "swiftlearn replaces only packages: move it away or choose another --out")


def check_package(path: Path) -> None:
    """A saved package is complete: ``Manifest.json`` parses and every item it lists exists."""
    try:
        manifest = json.loads((path / "Manifest.json").read_text())
        items = manifest["itemInfoEntries"].values()
        missing = [item["path"] for item in items
                   if not (path / "Data" / item["path"]).exists()]
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise RuntimeError(f"the package written to {path} is unreadable ({e})") from e
    if missing or not items:
        raise RuntimeError(f"the package written to {path} is incomplete (missing "
                           f"{', '.join(missing) or 'every item'})")


def save_package(mlmodel, path: str | os.PathLike) -> Path:
    """``mlmodel.save(path)`` without ever losing the package already at ``path``.

    The package is written into a temporary sibling (``.<name>.<pid>.tmp``), checked
    (:func:`check_package`), and only then swapped in; a failed save (a full disk: one
    :class:`~swiftlearn.export.staging.DiskFullError` line) leaves the old package as it was. A
    folder at ``path`` that is not a package is refused (:func:`check_replaceable_package`), never
    deleted.
    """
    path = Path(path)
    check_replaceable_package(path)
    with export_stage(path, needed=_package_bytes(mlmodel)) as stage:
        save_into(stage, mlmodel, path)
    return path


def save_into(stage: Path, mlmodel, path: Path) -> Path:
    """Save ``mlmodel`` inside an export's ``stage``, check it, then swap it in at ``path`` (the
    package there, if any, goes only once the new one is in place)."""
    built = stage / path.name
    mlmodel.save(str(built))
    check_package(built)
    return replace_dir(built, path)


def _accepted_sizes(default: tuple[int, int], enumerated_sizes) -> list[tuple[int, int]]:
    """The default ``(H, W)`` first, then each further enumerated size once."""
    sizes = [default]
    for s in enumerated_sizes or []:
        hw = image_hw(s, "each of enumerated_sizes")
        if hw not in sizes:
            sizes.append(hw)
    if len(sizes) > 1 and min(min(s) for s in sizes) <= MIN_SIZE:
        raise ValueError(f"with enumerated sizes every side must be above {MIN_SIZE}, got "
                         f"{[f'{a}x{b}' for a, b in sizes]} (at {MIN_SIZE} the last stage is 1x1, "
                         "a shape torch.export specialises on)")
    return sizes


def _input_shape(ct, sizes: list[tuple[int, int]]):
    """``(coremltools input shape, torch.export dynamic_shapes or None)`` for the sizes."""
    h, w = sizes[0]
    if len(sizes) == 1:
        return (1, 3, h, w), None
    from torch.export import Dim

    dims = {}
    for axis, name in ((2, "height"), (3, "width")):
        values = sorted({s[axis - 2] for s in sizes})
        if len(values) > 1:
            dims[axis] = Dim(name, min=values[0], max=values[-1])
    shape = ct.EnumeratedShapes(shapes=[(1, 3, *s) for s in sizes], default=(1, 3, h, w))
    return shape, {"image": dims}


def _describe(mlmodel, name: str, num_classes: int, sizes, precision: str, mean, std, *,
              description, author, license, version) -> None:
    """The metadata Xcode shows, and swiftlearn's own keys (``swiftlearn.model``, ...)."""
    (h, w), size_text = sizes[0], ", ".join(f"{a}x{b}" for a, b in sizes)
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


def _model_name(model: nn.Module) -> str:
    depths, widths = getattr(model, "depths", None), getattr(model, "widths", None)
    return (variant_of(depths, widths) if depths and widths else None) or type(model).__name__


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
def quiet_libraries():
    """Hide the warnings coremltools and scikit-learn raise while converting or compressing.

    They are about the libraries, not about the user's model: deprecations inside coremltools,
    numpy's divide-by-zero for an all-zero weight channel (coremltools handles it), scikit-learn's
    "fewer distinct clusters" for a weight with fewer distinct values than the palette (the
    palette is then exact), coremltools' advice to install kmeans1d. swiftlearn's own warnings
    and messages pass.
    """
    with warnings.catch_warnings(), _logger_level("coremltools", logging.ERROR):
        warnings.filterwarnings("ignore", module=r"(coremltools|sklearn)(\.|$)")
        yield


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Hide coremltools' tqdm progress bars (stderr) and :func:`quiet_libraries`' warnings; keep
    any other stderr text."""
    if verbose:
        yield
        return
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer), quiet_libraries():
        yield
    bars = re.compile(r"(Converting PyTorch Frontend|Running MIL .* pipeline|"
                      r"Running compression pass)")
    for line in re.split(r"[\r\n]+", buffer.getvalue()):
        if line.strip() and not bars.search(line):
            print(line, file=sys.stderr)


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


def _package_bytes(mlmodel) -> int:
    """The size of the package behind an ``MLModel`` (0 when it has none)."""
    source = getattr(mlmodel, "package_path", None)
    return _dir_size(Path(source)) if source and Path(source).is_dir() else 0


def inspect_coreml(path: str | os.PathLike) -> PackageInfo:
    """Read a saved package back: inputs/outputs (names, types, shapes), metadata, ops, size."""
    return read_coreml(path)[0]


def read_coreml(path: str | os.PathLike):
    """``(PackageInfo, MIL program)`` of a saved package: :func:`inspect_coreml` plus the program
    :class:`~swiftlearn.export.mil.MilInterpreter` runs, read once.

    Raises:
        FileNotFoundError: no package at ``path``.
        MissingExtraError: coremltools is not installed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no Core ML package at {path}")
    ct = import_coremltools()
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    program = load_program(path)
    ops = [op for fn in program.functions.values() for op in fn.operations]
    fp16 = any(dtype_name(v) == "fp16" for op in ops if op.op_type != "const" for v in op.outputs)
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
