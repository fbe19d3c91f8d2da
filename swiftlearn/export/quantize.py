"""Static int8 quantisation for the CPU: an ONNX graph with int8 weights and uint8 activations.

Static quantisation stores every weight as int8 with one scale per output channel
(``w ~= scale * q``, ``q`` in -127..127) and every activation as uint8 with one scale and zero
point per tensor (``x ~= scale * (q - zero_point)``, ``q`` in 0..255). The activation ranges are
fixed ahead of time by running the float model on a few hundred *calibration* images and
recording each tensor's min and max. The file is written in the QDQ form: the float graph with a
``QuantizeLinear -> DequantizeLinear`` pair on every quantised tensor; ONNX Runtime recognises
``DQ -> Conv -> Q`` (and MatMul, Add, Mul, ...) and runs each as one integer kernel
(``QLinearConv``, ``QGemm``, ...), on x86 with the ``u8 x s8`` dot-product instructions
(AVX-512 VNNI where the CPU has them).

:func:`quantize_int8` turns a float32 ``.onnx`` from :func:`~swiftlearn.export.to_onnx` into that
file. The exported graph already holds each GELU as one ``Gelu`` op (opset 20), which the
quantiser leaves in float between a dequantise and a quantise. Before quantising it applies
three exact graph passes that leave fewer, larger operations for the integer kernels:
:func:`fold_conv_scale` (the layer scales after the
convolutions go into the convolution weights), :func:`fold_bn_into_conv` (a BatchNorm in
front of a 1x1 convolution goes into it) and :func:`drop_broadcast_expand` (the normalisations'
norms divide by broadcasting instead of being copied to the full tensor first).

:func:`calibration_images` reads the calibration set from a folder, :func:`check_int8` compares
the int8 model with PyTorch (a corrupted scale or a bad calibration fails it), and
:func:`onnx_accuracy` is the top-1 of an ``.onnx`` file beside PyTorch fp32 on the same images.

Needs onnx and onnxruntime (``pip install -e ".[export]"``; the quantiser ships with
onnxruntime).
"""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.datasets import load_rgb
from ..utils import IMAGENET_MEAN, IMAGENET_STD, check_writable, normalize, require
from .onnx import OnnxRunner
from .staging import export_stage
from .verify import AccuracyReport, agreement_text, top1_margin

__all__ = ["INT8_TOLERANCE", "MIN_INT8_AGREEMENT", "Int8Report",
           "calibration_images", "check_int8", "drop_broadcast_expand", "fold_bn_into_conv",
           "fold_conv_scale", "onnx_accuracy", "prepare_for_quantization",
           "quantize_int8"]

#: :func:`check_int8` passes when ``||int8 - fp32|| / ||fp32||`` over the logits is at most this
#: (well-calibrated int8 SwiftFormer-XS: ~0.03-0.06; a corrupted scale: > 0.5)
INT8_TOLERANCE = 0.2
#: :func:`check_int8` also needs the same top-1 on at least this share of the clear-cut images
MIN_INT8_AGREEMENT = 0.5
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


# ---------------------------------------------------------------- calibration data


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES
                  and p.is_file())


def calibration_images(root: str | os.PathLike, n: int = 200, size: int = 224, *,
                       seed: int = 0, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """``n`` images picked at random (fixed ``seed``) under ``root``, as the model's input.

    ``root`` is an Imagenette root (its ``train/`` split is used) or any folder of .jpg/.jpeg/
    .png images (searched recursively). Each image is resized to ``size x size`` (bicubic, the
    way the decoded cache squashes it) and normalised with ``mean``/``std``. A corrupt or
    unreadable file is skipped with a one-line ``RuntimeWarning`` naming it, and the next image
    in the (fixed) random order takes its place, as training's decoded cache skips such files.

    Shape:
        - output ``[min(n, readable), 3, size, size]``, float32

    Raises:
        ValueError: ``root`` is not a folder or holds no readable image, or ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"the calibration set needs at least one image, got n={n}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"--calibration-data {root} is not a folder; pass a folder of training "
                         "images (e.g. an Imagenette root such as data/imagenette2-224)")
    folder = root / "train" if (root / "train").is_dir() else root
    files = _image_files(folder)
    if not files:
        raise ValueError(f"--calibration-data {folder} holds no .jpg/.jpeg/.png image; pass a "
                         "folder of a few hundred training images")
    random.Random(seed).shuffle(files)
    from PIL import Image

    pictures = []
    for path in files:
        if len(pictures) == n:
            break
        try:
            rgb = load_rgb(path).resize((size, size), Image.BICUBIC)
        except RuntimeError:  # load_rgb's "corrupt or unreadable image"
            warnings.warn(f"skipped {path}: corrupt or unreadable, not used for calibration "
                          "(delete or replace it)", RuntimeWarning, stacklevel=2)
            continue
        pictures.append(torch.from_numpy(np.array(rgb)).permute(2, 0, 1))
    if not pictures:
        raise ValueError(f"--calibration-data {folder}: none of its {len(files)} images can be "
                         "read (all corrupt or unreadable); pass a folder of training images")
    return normalize(torch.stack(pictures), mean, std)


class _Reader:
    """ONNX Runtime's calibration-data-reader protocol over a tensor, one image per call."""

    def __init__(self, images: torch.Tensor, input_name: str):
        self.images, self.input_name, self.i = images.numpy(), input_name, 0

    def get_next(self):
        if self.i >= len(self.images):
            return None
        self.i += 1
        return {self.input_name: self.images[self.i - 1:self.i]}

    def rewind(self):
        self.i = 0


# ---------------------------------------------------------------- exact graph passes


def _index(graph):
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    consts = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    users, producer = defaultdict(list), {}
    for node in graph.node:
        for name in node.input:
            users[name].append(node)
        for name in node.output:
            producer[name] = node
    return inits, consts, users, producer


def _set_init(graph, inits, name: str, value: np.ndarray, suffix: str) -> str:
    """A new initializer ``name + suffix`` holding ``value`` (shared weights stay untouched)."""
    from onnx import numpy_helper

    new = name + suffix
    graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), new))
    inits[new] = graph.initializer[-1]
    return new


def _drop_nodes(graph, drop: set[int]) -> None:
    """Remove the nodes whose ``id`` is in ``drop`` and the initializers nothing reads any more."""
    if drop:
        nodes = [n for n in graph.node if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(nodes)
        _prune_initializers(graph)


def fold_conv_scale(model) -> int:
    """Graph pass: ``Mul(Conv(x, W, b), s)`` with a per-output-channel constant ``s`` (a layer
    scale) becomes ``Conv(x, s W, s b)``. Exact up to float rounding.

    Returns:
        How many multiplications were folded.
    """
    graph = model.graph
    inits, consts, users, producer = _index(graph)
    count, drop = 0, set()
    for mul in [n for n in graph.node if n.op_type == "Mul"]:
        scale_name = next((i for i in mul.input if i in consts), None)
        data = next((i for i in mul.input if i != scale_name), None)
        conv = producer.get(data) if data is not None else None
        if scale_name is None or conv is None or conv.op_type != "Conv" \
                or len(users[data]) != 1 or conv.input[1] not in consts:
            continue
        w = consts[conv.input[1]]
        s = consts[scale_name]
        c_out = w.shape[0]
        if s.size == 1:
            s = np.full(c_out, float(s.reshape(())), np.float32)
        elif s.shape not in ((c_out, 1, 1), (1, c_out, 1, 1)):
            continue
        s = s.reshape(c_out)
        b = consts[conv.input[2]] if len(conv.input) > 2 and conv.input[2] else \
            np.zeros(c_out, np.float32)
        w_name = _set_init(graph, inits, conv.input[1], w * s.reshape(-1, 1, 1, 1), "_scaled")
        b_name = _set_init(graph, inits, conv.input[1] + "_bias", b * s, "_scaled")
        conv.input[:] = [conv.input[0], w_name, b_name]
        conv.output[0] = mul.output[0]
        drop.add(id(mul))
        count += 1
    _drop_nodes(graph, drop)
    return count


def fold_bn_into_conv(model) -> int:
    """Graph pass: a ``BatchNormalization`` whose only user is a 1x1, unpadded, ungrouped
    ``Conv`` goes into that convolution's weights (``W' = W diag(s)``, ``b' = b + W t``).

    Returns:
        How many BatchNorms were folded.
    """
    graph = model.graph
    inits, consts, users, producer = _index(graph)
    count, drop = 0, set()
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        nexts = users.get(bn.output[0], [])
        if len(nexts) != 1 or nexts[0].op_type != "Conv" or len(bn.output) != 1 \
                or not all(i in consts for i in bn.input[1:5]):
            continue
        conv = nexts[0]
        attrs = {a.name: a for a in conv.attribute}
        w = consts.get(conv.input[1])
        pads = list(attrs["pads"].ints) if "pads" in attrs else []
        group = attrs["group"].i if "group" in attrs else 1
        if w is None or w.shape[2:] != (1, 1) or any(pads) or group != 1 \
                or conv.input[0] != bn.output[0]:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (consts[i].astype(np.float64) for i in bn.input[1:5])
        s = gamma / np.sqrt(var + eps)
        t = beta - mean * s
        c_out = w.shape[0]
        b = consts[conv.input[2]] if len(conv.input) > 2 and conv.input[2] else \
            np.zeros(c_out, np.float32)
        w2 = w.astype(np.float64)[:, :, 0, 0]
        w_name = _set_init(graph, inits, conv.input[1], (w2 * s)[:, :, None, None], "_bnfold")
        b_name = _set_init(graph, inits, conv.input[1] + "_bias", b + w2 @ t, "_bnfold")
        conv.input[:] = [bn.input[0], w_name, b_name]
        drop.add(id(bn))
        count += 1
    _drop_nodes(graph, drop)
    return count


def drop_broadcast_expand(model) -> int:
    """Graph pass: ``Div(x, Expand(n, shape(x)))`` becomes ``Div(x, n)``: the division
    broadcasts ``n`` itself (``F.normalize`` exports its norm expanded to the full tensor first).

    Only an ``Expand`` used by nothing else, whose output has the numerator's shape (as shape
    inference recorded it, symbolic batch included) and whose input broadcasts to it, is
    dropped: the result is the same values. The shape computation that fed it goes too.

    Returns:
        How many expansions were dropped.
    """
    graph = model.graph
    _, _, users, _ = _index(graph)

    def dims(v):
        out = []
        for d in v.type.tensor_type.shape.dim:
            out.append(d.dim_value if d.HasField("dim_value")
                       else d.dim_param if d.HasField("dim_param") else None)
        return out

    shapes = {v.name: dims(v) for v in [*graph.value_info, *graph.input]}
    count, drop = 0, set()
    for expand in [n for n in graph.node if n.op_type == "Expand"]:
        nexts = users.get(expand.output[0], [])
        if len(nexts) != 1 or nexts[0].op_type != "Div" or nexts[0].input[1] != expand.output[0]:
            continue
        div = nexts[0]
        x_shape, n_shape = shapes.get(div.input[0]), shapes.get(expand.input[0])
        out_shape = shapes.get(expand.output[0])
        if not x_shape or not n_shape or out_shape != x_shape or None in x_shape \
                or None in n_shape or len(n_shape) != len(x_shape) \
                or any(a != 1 and a != b for a, b in zip(n_shape, x_shape)):
            continue
        div.input[1] = expand.input[0]
        drop.add(id(expand))
        count += 1
    if drop:
        nodes = [n for n in graph.node if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(nodes)
        _prune_dead_nodes(graph)
        _prune_initializers(graph)
    return count


def _prune_dead_nodes(graph) -> None:
    """Remove nodes none of whose outputs is used (the shape arithmetic of a dropped Expand)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)


def _prune_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


# ---------------------------------------------------------------- quantisation


def prepare_for_quantization(fp32_path: str | os.PathLike, out: str | os.PathLike, *,
                             passes: bool = True) -> dict[str, int]:
    """The float graph :func:`quantize_int8` quantises, written to ``out``.

    ONNX Runtime's ``quant_pre_process`` (shape inference and basic optimisation; its symbolic
    shape pass is skipped, as it fails on the exported graph), then, with ``passes``,
    :func:`fold_bn_into_conv`, :func:`fold_conv_scale` and :func:`drop_broadcast_expand`. Still
    float32 and the same function (to float rounding).

    Returns:
        How many rewrites each pass made, by pass name.
    """
    onnx = require("onnx")
    ort = require("onnxruntime")
    ort.set_default_logger_severity(3)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    counts: dict[str, int] = {}
    if passes:
        proto = onnx.load(str(out))
        for fn in (fold_bn_into_conv, fold_conv_scale, drop_broadcast_expand):
            counts[fn.__name__] = fn(proto)
        onnx.save(proto, str(out))
    return counts


def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies int8 with VNNI (AVX-512 VNNI, AVX-VNNI) or AMX: without it
    ONNX Runtime's u8 x s8 kernels (VPMADDUBSW) add pairs of products in 16 bits, which
    saturate with full 8-bit weights."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def quantize_int8(fp32_path: str | os.PathLike, out: str | os.PathLike,
                  calibration: torch.Tensor, *, per_channel: bool = True,
                  passes: bool = True, reduce_range: bool | None = None) -> Path:
    """Quantise a float32 ``.onnx`` to static int8 (QDQ), calibrated on ``calibration``.

    Steps: :func:`prepare_for_quantization` (with the graph passes unless ``passes=False``),
    then ONNX Runtime's ``quantize_static`` with min/max calibration: int8 weights
    (per output channel when ``per_channel``), uint8 activations (per tensor), QDQ format.
    Everything is built in a temporary folder beside ``out`` and moved into place when done, so
    a failure leaves an existing ``out`` as it was.

    Args:
        fp32_path: the float32 model (:func:`~swiftlearn.export.to_onnx`).
        out: destination ``.onnx`` (the weights stay inside the one file).
        calibration: ``[N, 3, H, W]`` normalised images (:func:`calibration_images`), at the
            model's input size.
        reduce_range: 7-bit weights (ONNX Runtime's ``reduce_range``). Default: on a CPU
            without VNNI (:func:`cpu_has_vnni`), whose u8 x s8 products saturate with 8-bit
            weights (measured on an AVX2 EPYC: relative logit error 0.38 instead of a few
            hundredths); 8 bits where VNNI computes them exactly. Pass it explicitly to build
            for another machine than this one.

    Raises:
        ValueError: a wrong file name, an empty or wrongly shaped calibration set.
        MissingExtraError: onnx or onnxruntime is not installed.
    """
    onnx = require("onnx")
    ort = require("onnxruntime")
    ort.set_default_logger_severity(3)  # the quantiser's sessions warn about unused constants
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"the int8 ONNX file name should end in .onnx, got {out}")
    check_writable(out, "--out")
    calibration = torch.as_tensor(calibration, dtype=torch.float32)
    if calibration.dim() != 4 or calibration.shape[1] != 3 or len(calibration) == 0:
        raise ValueError(f"calibration must be a non-empty [N, 3, H, W] batch, got "
                         f"{tuple(calibration.shape)}")
    fp32 = onnx.load(str(fp32_path))
    input_name = fp32.graph.input[0].name
    # the pre-processed model, ONNX Runtime's calibration model (in the redirected temporary
    # folder), the int8 file
    with export_stage(out, needed=3 * Path(fp32_path).stat().st_size) as stage:
        pre = stage / "pre.onnx"
        prepare_for_quantization(fp32_path, pre, passes=passes)
        built = stage / out.name
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # "Axis 1 is out-of-range" for the per-tensor 1-D weights
        try:
            quantize_static(str(pre), str(built), _Reader(calibration, input_name),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=(not cpu_has_vnni() if reduce_range is None
                                          else reduce_range),
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            logging.disable(previous)
        onnx.load(str(built))  # loads
        os.replace(built, out)
    return out


# ---------------------------------------------------------------- checks and accuracy


@dataclass
class Int8Report:
    """An int8 model against PyTorch fp32 on the same images."""

    n_inputs: int
    relative_error: float  # ||int8 - fp32|| / ||fp32|| over all logits
    max_abs_logits: float
    top1_agreement: float  # same predicted class, over the images without a tie (nan: all tie)
    tolerance: float = INT8_TOLERANCE
    n_tied: int = 0  # images whose fp32 top-1 leads by at most 2 x tolerance x rms logit
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Within the relative tolerance, and the same class on most clear-cut images (int8 may
        flip a close call; a model that flips most clear ones is broken whatever its error)."""
        return bool(self.relative_error <= self.tolerance) and \
            not self.top1_agreement < MIN_INT8_AGREEMENT

    def __str__(self) -> str:
        return (f"int8 vs PyTorch fp32 on {self.n_inputs} images: relative logit error "
                f"{self.relative_error:.3f} (tolerance {self.tolerance}), max |diff| "
                f"{self.max_abs_logits:.2f}, "
                f"{agreement_text(self.top1_agreement, self.n_inputs, self.n_tied)} -> "
                f"{'OK' if self.ok else 'FAILED'}")


@torch.no_grad()
def check_int8(path: str | os.PathLike, model: nn.Module, images: torch.Tensor, *,
               tolerance: float = INT8_TOLERANCE, strict: bool = True,
               runtime: str = "onnxruntime") -> Int8Report:
    """Does the int8 file compute roughly what ``model`` computes on real ``images``?

    int8 is not exact, so the test is the relative error of the logits, which a working int8
    model keeps at a few percent and a wrong scale, zero point or calibration pushes far past
    ``tolerance``. Use real images (e.g. held-out :func:`calibration_images`): random noise
    is outside the calibrated ranges. ``runtime``: ``"onnxruntime"`` for a QDQ ``.onnx`` file,
    ``"openvino"`` for an NNCF ``.xml`` (or any file OpenVINO reads).

    Raises:
        RuntimeError: the error exceeds ``tolerance`` (with ``strict``).
        ValueError: the model is in training mode.
    """
    if model.training:
        raise ValueError("call model.eval() first: the reference is the eval-mode model")
    images = torch.as_tensor(images, dtype=torch.float32)
    runner = runtime_runner(path, runtime)
    got = np.concatenate([runner(images[i:i + 1]) for i in range(len(images))])  # any batch axis
    ref = model(images).numpy()
    # the relative tolerance as an error per logit: closer calls than twice that are ties
    decisive = top1_margin(ref) > 2 * tolerance * float(np.sqrt(np.mean(ref ** 2)))
    same = got.argmax(1) == ref.argmax(1)
    report = Int8Report(
        n_inputs=len(images),
        relative_error=float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)),
        max_abs_logits=float(np.abs(got - ref).max()),
        top1_agreement=float(same[decisive].mean()) if decisive.any() else float("nan"),
        tolerance=tolerance, n_tied=int((~decisive).sum()))
    if strict and not report.ok:
        raise RuntimeError(f"the int8 model at {path} does not match PyTorch: {report}. Check "
                           "the calibration images (real training images, the model's input "
                           "size and normalisation)")
    return report


def runtime_runner(path: str | os.PathLike, runtime: str = "onnxruntime", threads: int = 1,
                   precision: str | None = None):
    """``logits = runner(x)`` for ``path`` in ``runtime`` (``"onnxruntime"`` or ``"openvino"``;
    ``precision``: OpenVINO's inference precision, see
    :class:`~swiftlearn.export.openvino.OpenVinoRunner`)."""
    if runtime == "openvino":
        from .openvino import OpenVinoRunner

        return OpenVinoRunner(path, threads, precision)
    if runtime != "onnxruntime":
        raise ValueError(f"runtime must be onnxruntime or openvino, got {runtime!r}")
    if precision:
        raise ValueError("precision is an OpenVINO option; ONNX Runtime runs the file's types")
    return OnnxRunner(path, threads)


@torch.no_grad()
def onnx_accuracy(path: str | os.PathLike, model: nn.Module, images: torch.Tensor, labels, *,
                  batch_size: int = 1, torch_pred: np.ndarray | None = None,
                  threads: int = 1, runtime: str = "onnxruntime",
                  precision: str | None = None) -> AccuracyReport:
    """Top-1 of the ``.onnx`` file (or OpenVINO ``.xml``, ``runtime="openvino"``) and of
    ``model`` (fp32) on normalised ``images``.

    ``batch_size`` must be 1 for a graph exported with a fixed batch (the CLI exports a
    dynamic one). ``torch_pred``: PyTorch's predictions, if already computed.

    Raises:
        ValueError: images and labels of different lengths, or none.
    """
    labels = np.asarray(labels)
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many labels as images (and at least one), got {len(images)} "
                         f"images and {len(labels)} labels")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.training:
        raise ValueError("call model.eval() first: the reference is the eval-mode model")
    runner = runtime_runner(path, runtime, threads, precision)
    spans = [(i, min(i + batch_size, len(images))) for i in range(0, len(images), batch_size)]
    start = time.perf_counter()
    pred = np.concatenate([runner(images[a:b]).argmax(1) for a, b in spans])
    seconds = time.perf_counter() - start
    if torch_pred is None:
        torch_pred = torch.cat([model(images[a:b]).argmax(1)
                                for a, b in [(i, min(i + 64, len(images)))
                                             for i in range(0, len(images), 64)]]).numpy()
    torch_pred = np.asarray(torch_pred)
    return AccuracyReport(n=len(labels), top1=float(100 * (pred == labels).mean()),
                          torch_top1=float(100 * (torch_pred == labels).mean()),
                          agreement=float(100 * (pred == torch_pred).mean()),
                          pred=pred, torch_pred=torch_pred,
                          what="OpenVINO" if runtime == "openvino" else "ONNX", seconds=seconds)
