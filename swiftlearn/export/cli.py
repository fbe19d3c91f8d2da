"""``swiftlearn export``: a checkpoint in, a verified ``.mlpackage``, ``.onnx`` or OpenVINO
``.xml`` out.

:func:`add_cli` registers the command (``swiftlearn.cli`` assembles one such registrar per
command). The command loads the checkpoint with :mod:`swiftlearn.checkpoints` (any format it
reads), takes the class names, the evaluation size and the input normalisation from the
checkpoint's metadata when it carries them (ImageNet's mean and std otherwise), exports, and
checks the result against PyTorch unless ``--no-verify``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..checkpoints import read_checkpoint
from ..utils import check_writable, require
from .checks import default_labels
from .coreml import (
    check_replaceable_package,
    import_coremltools,
    inspect_coreml,
    save_into,
    to_coreml,
)
from .onnx import to_onnx
from .openvino import OPENVINO_EXTRA, check_openvino_out, import_openvino
from .staging import export_stage
from .verify import verify_coreml, verify_onnx, verify_openvino

__all__ = ["add_cli"]

_EXTRA = 'pip install -e ".[export]"'


def _load_for_export(args: argparse.Namespace) -> dict:
    """The model (eval mode) and what the exporters need, from ``--checkpoint`` and the flags."""
    path = Path(args.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass the .pt/.pth file written by "
                                "`swiftlearn train` (e.g. assets/swiftformer_xs_imagenette.pt)")
    ckpt = read_checkpoint(path, flag="--checkpoint")
    name = args.model or ckpt.variant
    if name is None:
        raise ValueError(f"{path} matches no named variant; pass --model")
    num_classes = args.num_classes or ckpt.num_classes
    if not num_classes:
        raise ValueError(f"{path} has no classifier head; pass --num-classes")
    model = ckpt.build(name, num_classes=num_classes)  # the file is read once, above
    if args.labels:
        labels = [s.strip() for s in Path(args.labels).read_text().splitlines() if s.strip()]
    else:
        labels = default_labels(num_classes, ckpt.classes)
    # trained-weights files record their normalisation; older checkpoints used ImageNet's
    return {"model": model.eval(), "size": int(args.image_size or ckpt.eval_size or 224),
            "labels": labels, "mean": ckpt.mean, "std": ckpt.std}


def _cmd_export(args: argparse.Namespace) -> int:
    fmt = args.format.lower()
    if fmt not in _SUFFIX:
        raise ValueError(f"unknown format {args.format!r}; choose 'coreml', 'onnx' or "
                         "'openvino'")
    suffix = _SUFFIX[fmt]
    out = Path(args.out)
    if out.suffix != suffix:
        raise ValueError(f"--out for --format {fmt} must end in {suffix}, got {out}")
    # every refusal that needs no import comes first: importing coremltools alone takes seconds
    _check_format_options(args, fmt)
    _check_quantize_args(args, fmt)  # --quantize int8 (ONNX and OpenVINO)
    compress = _check_compress_args(args)  # --compress (Core ML only)
    # refuse an --out that cannot be written or replaced before loading anything
    if fmt == "coreml":
        check_replaceable_package(out)
    elif fmt == "openvino":
        check_openvino_out(out)
    else:
        check_writable(out, "--out")
    # then fail on a missing extra, still before loading anything
    if fmt == "coreml":
        import_coremltools()
        if compress != "none":
            from .compress import import_optimize

            import_optimize()
    else:
        require("onnxscript")
        require("onnxruntime")
    if fmt == "openvino":
        import_openvino()
        if args.quantize:
            require("nncf", purpose="OpenVINO int8 quantisation")
    loaded = _load_for_export(args)
    model, size, mean, std = loaded["model"], loaded["size"], loaded["mean"], loaded["std"]
    if fmt == "coreml" and compress != "none":
        report = _export_compressed(args, loaded, out, compress)
    elif fmt == "coreml":
        to_coreml(model, out, size, loaded["labels"], args.precision or "float16",
                  enumerated_sizes=args.enumerated_sizes or None, mean=mean, std=std)
        report = verify_coreml(out, model, n=2, mean=mean, std=std) if args.verify else None
        print(inspect_coreml(out))
    elif fmt == "openvino":
        report = _export_openvino(args, loaded, out)
    elif args.quantize:
        report = _export_int8(args, loaded, out)
    else:
        to_onnx(model, out, size)  # the graph takes normalised input: mean/std stay outside
        report = verify_onnx(out, model) if args.verify else None
        print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, input [batch, 3, {size}, {size}]")
    if report is not None:
        print(report)
    return 0


_SUFFIX = {"coreml": ".mlpackage", "onnx": ".onnx", "openvino": ".xml"}

#: options only a Core ML package has: (flag, argparse dest, why an ONNX or OpenVINO export has
#: no use for it; labels: the OpenVINO IR carries the checkpoint's class names)
_CORE_ML_ONLY = (
    ("--precision", "precision", "the {fmt} graph is float32 (for int8: --quantize int8)"),
    ("--enumerated-sizes", "enumerated_sizes", "the {fmt} graph takes the one --image-size (its "
     "batch axis is free)"),
    ("--labels", "labels", "the {fmt} graph outputs logits, without class names"),
    ("--compress", "compress", "for an int8 {fmt} model use --quantize int8"),
)


def _check_format_options(args: argparse.Namespace, fmt: str) -> None:
    """Refuse, before any work, an option the chosen format would silently ignore."""
    if fmt == "coreml":
        return
    name = "ONNX" if fmt == "onnx" else "OpenVINO"
    for flag, dest, why in _CORE_ML_ONLY:
        if getattr(args, dest, None) is not None:
            raise ValueError(f"{flag} is for --format coreml only ({why.format(fmt=name)}); "
                             f"drop {flag} or use --format coreml")


def add_cli(subparsers) -> None:
    """Register ``swiftlearn export``."""
    p = subparsers.add_parser(
        "export", help="export a checkpoint to Core ML (.mlpackage), ONNX or OpenVINO (.xml), "
        "and verify it",
        description="Export a trained SwiftFormer to Core ML, ONNX or OpenVINO and check it "
                    "numerically against PyTorch (needs the export extra: " + _EXTRA + "; for "
                    "OpenVINO also its own: " + OPENVINO_EXTRA + ").")
    p.add_argument("--checkpoint", required=True, help="a .pt/.pth checkpoint (any format "
                   "swiftlearn.checkpoints reads)")
    p.add_argument("--format", required=True, help="coreml, onnx or openvino (an IR: .xml "
                   "and .bin; needs the openvino extra)")
    p.add_argument("--out", required=True, help="output path (.mlpackage, .onnx or .xml)")
    p.add_argument("--model", default=None, help="variant (default: inferred from the weights)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the checkpoint's)")
    p.add_argument("--precision", default=None, choices=["float16", "float32"],
                   help="Core ML only: compute precision (default float16)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input side in pixels (default: the checkpoint's evaluation size, "
                        "else 224)")
    p.add_argument("--enumerated-sizes", type=int, nargs="*", default=None,
                   help="Core ML only: further square sizes the model accepts")
    p.add_argument("--labels", default=None,
                   help="Core ML only: text file with one class name per line (default: the "
                        "checkpoint's classes)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the numerical check against PyTorch")
    _add_quantize_args(p)
    _add_compress_args(p)
    p.set_defaults(func=_cmd_export)


# ---------------------------------------------------------------- --quantize int8 (ONNX, CPU)
# static int8 through ONNX Runtime's quantiser: swiftlearn.export.quantize


_CALIBRATION_IMAGES = 200  # --calibration-images' default
_HELD_OUT = 8  # calibration-folder images kept out of calibration, for the check


def _add_quantize_args(p) -> None:
    p.add_argument("--quantize", default=None, choices=["int8"],
                   help="ONNX or OpenVINO: static int8 (ONNX: QDQ, int8 weights per channel, "
                        "uint8 activations; OpenVINO: NNCF's post-training quantisation), "
                        "calibrated on --calibration-data")
    p.add_argument("--calibration-data", default=None,
                   help="with --quantize: an Imagenette root (its train/ split) or a folder of "
                        "training images")
    p.add_argument("--calibration-images", type=int, default=None,
                   help=f"with --quantize: how many images calibrate (default "
                        f"{_CALIBRATION_IMAGES}, fixed seed)")


def _check_quantize_args(args: argparse.Namespace, fmt: str) -> None:
    """Refuse a wrong --quantize combination before loading anything."""
    if not getattr(args, "quantize", None):
        for flag, dest in (("--calibration-data", "calibration_data"),
                           ("--calibration-images", "calibration_images")):
            if getattr(args, dest, None) is not None:
                raise ValueError(f"{flag} is for --quantize int8 (calibration); add --quantize "
                                 f"int8 (with --format onnx or openvino) or drop {flag}")
        return
    if fmt == "coreml":
        raise ValueError("--quantize int8 makes an ONNX or OpenVINO model; use --format onnx or "
                         "openvino (Core ML's int8 weights: --compress int8)")
    if not args.calibration_data:
        raise ValueError("--quantize int8 needs --calibration-data: a folder of a few hundred "
                         "training images (e.g. an Imagenette root)")
    if not Path(args.calibration_data).expanduser().is_dir():
        raise ValueError(f"--calibration-data {args.calibration_data} is not a folder; pass a "
                         "folder of training images (e.g. an Imagenette root)")
    if args.calibration_images is not None and args.calibration_images < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {args.calibration_images}")


def _calibration(args: argparse.Namespace, loaded: dict):
    """(calibration images, held-out images for the check) from --calibration-data."""
    from .quantize import calibration_images

    count = args.calibration_images or _CALIBRATION_IMAGES
    with warnings.catch_warnings(record=True) as skipped:  # corrupt images: one line each
        warnings.simplefilter("always", RuntimeWarning)
        images = calibration_images(args.calibration_data, count + _HELD_OUT, loaded["size"],
                                    mean=loaded["mean"], std=loaded["std"])
    for w in skipped:
        print(f"swiftlearn export: warning: {w.message}", file=sys.stderr)
    held_out = images[-_HELD_OUT:] if len(images) > _HELD_OUT else images
    calibration = images[:-_HELD_OUT] if len(images) > _HELD_OUT else images
    return calibration, held_out


def _export_openvino(args: argparse.Namespace, loaded: dict, out: Path):
    """An OpenVINO IR (fp32 weights, or NNCF int8 with --quantize), checked against PyTorch."""
    from .openvino import quantize_openvino, to_openvino
    from .quantize import check_int8

    model, size = loaded["model"], loaded["size"]
    meta = {"labels": loaded["labels"], "mean": loaded["mean"], "std": loaded["std"]}
    if not args.quantize:
        to_openvino(model, out, size, **meta)
        print(f"{out}: {out.with_suffix('.bin').stat().st_size / 1e6:.2f} MB of float32 "
              f"weights in {out.with_suffix('.bin').name}, input [batch, 3, {size}, {size}]")
        return verify_openvino(out, model) if args.verify else None
    calibration, held_out = _calibration(args, loaded)
    quantize_openvino(model, out, calibration, size, **meta)
    print(f"{out}: {out.with_suffix('.bin').stat().st_size / 1e6:.2f} MB, int8 (NNCF), input "
          f"[batch, 3, {size}, {size}], calibrated on {len(calibration)} images from "
          f"{args.calibration_data}")
    return check_int8(out, model, held_out, runtime="openvino") if args.verify else None


def _export_int8(args: argparse.Namespace, loaded: dict, out: Path):
    """fp32 ONNX in the export's temporary folder beside ``out``, quantised there, checked,
    moved into place."""
    import os

    from .quantize import check_int8, quantize_int8

    model, size = loaded["model"], loaded["size"]
    calibration, held_out = _calibration(args, loaded)
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    with export_stage(out, needed=4 * weight_bytes) as stage:
        fp32 = to_onnx(model, stage / "fp32.onnx", size)
        built = quantize_int8(fp32, stage / out.name, calibration)
        report = check_int8(built, model, held_out) if args.verify else None
        os.replace(built, out)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, int8, input [batch, 3, {size}, {size}], "
          f"calibrated on {len(calibration)} images from {args.calibration_data}")
    return report


# ---------------------------------------------------------------- --compress (Core ML weights)
# post-training weight compression with coremltools.optimize.coreml: swiftlearn.export.compress


def _add_compress_args(p) -> None:
    p.add_argument("--compress", default=None,
                   help="Core ML only: post-training weight compression, one of none (default), "
                        "int8 (linear, per channel), palette6, palette4 (k-means palettes)")


def _check_compress_args(args: argparse.Namespace) -> str:
    """The --compress mode, refused (one line) before anything is imported, loaded or written
    (--compress with --format onnx: :func:`_check_format_options`)."""
    from .compress import check_compression

    mode = check_compression(getattr(args, "compress", None) or "none")
    if mode != "none" and args.precision == "float32":
        raise ValueError(f"--compress {mode} compresses the float16 package; drop "
                         "--precision float32")
    return mode


def _export_compressed(args: argparse.Namespace, loaded: dict, out: Path, mode: str):
    """float16 package in the export's temporary folder beside ``out`` (verified as usual),
    compressed into ``out``; then the interpreter's decompression is checked against
    coremltools' and the compressed package is compared with PyTorch (reported, not enforced: the
    difference is the compression's)."""
    from .compress import check_decompression, compressed_model, open_package

    model, mean, std = loaded["model"], loaded["mean"], loaded["std"]
    weight_bytes = 2 * sum(p.numel() for p in model.parameters())
    # one stage holds it all: the float16 package (its own conversion nested inside), the
    # compressed temporary package, the copy swapped in at out
    with export_stage(out, needed=5 * weight_bytes) as stage:
        fp16 = stage / "float16" / "float16.mlpackage"  # never stage / out.name, the copy's place
        to_coreml(model, fp16, loaded["size"], loaded["labels"], "float16",
                  enumerated_sizes=args.enumerated_sizes or None, mean=mean, std=std)
        if args.verify:
            print(verify_coreml(fp16, model, n=2, mean=mean, std=std))
        save_into(stage, compressed_model(open_package(fp16), mode), out)
    print(inspect_coreml(out))
    if not args.verify:
        return None
    print(f"{mode}: {check_decompression(out)} compressed weights decompress as coremltools "
          "decompresses them")
    report = verify_coreml(out, model, n=4, mean=mean, std=std, strict=False)
    return (f"{report.backend}, {mode} weights vs PyTorch fp32 (the compression's effect, not "
            f"checked): max |diff| logits {report.max_abs_logits:.2e}, {report.agreement}")
