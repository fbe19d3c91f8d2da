"""Top-1 of the int8 ONNX model on the whole Imagenette validation split, beside fp32.

Builds, at the checkpoint's evaluation size, the fp32 ONNX graph and two int8 models the way
``swiftlearn export --format onnx --quantize int8`` does (``swiftlearn.export.quantize``): the
library's recipe (graph passes, then QDQ) and the plain ONNX Runtime recipe (no passes), both
calibrated on the same training images (fixed seed). Then runs every validation image through
PyTorch fp32, ONNX Runtime fp32 and both int8 models, with the evaluation preprocessing of
``swiftlearn.train.evaluate`` (the decoded cache, resized to the evaluation size), and writes
top-1, the change against PyTorch and the top-1 agreement to a JSON file.

    python scripts/int8_eval.py    # all 3,925 images -> assets/bench/int8-accuracy.json
    python scripts/int8_eval.py --per-class 5 --out /tmp/x.json    # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swiftlearn.bench.common import machine_info  # noqa: E402
from swiftlearn.checkpoints import read_checkpoint  # noqa: E402
from swiftlearn.data import find_root, load_cached, resize_center  # noqa: E402
from swiftlearn.export import to_onnx  # noqa: E402
from swiftlearn.export.quantize import calibration_images, onnx_accuracy, quantize_int8  # noqa: E402
from swiftlearn.utils import atomic_write_json  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="assets/swiftformer_xs_imagenette.pt")
    p.add_argument("--data", default=None, help="Imagenette root (default: find_root())")
    p.add_argument("--calibration-images", type=int, default=200)
    p.add_argument("--per-class", type=int, default=None, help="only the first N per class")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="assets/bench/int8-accuracy.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info()
    root = find_root(args.data)
    ckpt = read_checkpoint(args.checkpoint).require_trained(args.checkpoint)
    size = ckpt.eval_size
    cache_size = int(ckpt.config.get("cache_size") or 176)
    model = ckpt.build()
    val = load_cached(root, "val", cache_size, progress=False)
    if args.per_class:
        val = val.subset(args.per_class)
    x = torch.cat([resize_center(val.images[i:i + 256], size)
                   for i in range(0, len(val), 256)])
    labels = val.labels.numpy()
    calib = calibration_images(root, args.calibration_images, size)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        fp32 = to_onnx(model, Path(tmp) / "fp32.onnx", size)
        built = {"onnxruntime fp32": fp32}
        for name, passes in (("onnxruntime int8 (swiftlearn recipe)", True),
                             ("onnxruntime int8 (plain QDQ, no graph passes)", False)):
            t0 = time.perf_counter()
            built[name] = quantize_int8(fp32, Path(tmp) / f"int8-{passes}.onnx", calib,
                                        passes=passes)
            print(f"{name}: quantised in {time.perf_counter() - t0:.0f} s", flush=True)
        torch_pred = None
        for name, path in built.items():
            t0 = time.perf_counter()
            r = onnx_accuracy(path, model, x, labels, batch_size=32, torch_pred=torch_pred,
                              threads=args.threads)
            torch_pred = r.torch_pred
            print(f"{name}: {r} ({time.perf_counter() - t0:.0f} s)", flush=True)
            rows[name] = {"top1": round(r.top1, 3),
                          "delta_vs_torch_points": round(r.top1 - r.torch_top1, 3),
                          "agreement_pct": round(r.agreement, 3),
                          "size_mb": round(os.path.getsize(path) / 1e6, 2)}
        torch_top1 = r.torch_top1
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = round(os.getloadavg()[0], 2)
    result = {"suite": "int8-accuracy", "machine": info, "checkpoint": args.checkpoint,
              "split": "val", "n": int(len(labels)), "eval_size": size,
              "preprocessing": f"decoded cache at {cache_size} px, resized to {size} px "
                               "(swiftlearn.train.evaluate's)",
              "calibration": f"{len(calib)} training images, seed 0, resized to {size} px",
              "torch_fp32_top1": round(torch_top1, 3), "rows": rows}
    atomic_write_json(result, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
