"""Core ML weight compression, measured: size on disk and top-1 on the Imagenette validation set.

For each compression mode (``none`` = the float16 package ``swiftlearn export`` writes, ``int8``,
``palette6``, ``palette4``) this exports/compresses the trained SwiftFormer-XS, runs every
validation image through the package with swiftlearn's MIL interpreter (batched) and through the
float32 PyTorch model, and records both top-1 accuracies, their agreement and the package size in
``assets/compression/coreml.json`` (written atomically after each mode).

Resumable: a mode already in the JSON for the same images and checkpoint is skipped; PyTorch's
predictions are cached beside the packages. Packages go to ``--out-dir`` (outside the
repository). Modes can run in separate processes (``--modes ... --json other.json``) and be
merged afterwards (``--merge other.json``: same images and checkpoint required; each mode keeps
the command that measured it). ``--table`` prints the README's markdown table. Example::

    nice -n 5 .venv/bin/python scripts/compression_eval.py --out-dir /work/compress-out
    .venv/bin/python scripts/compression_eval.py --merge /work/compress-out/part2.json --table
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swiftlearn.checkpoints import read_checkpoint  # noqa: E402
from swiftlearn.export import inspect_coreml, to_coreml  # noqa: E402
from swiftlearn.export.accuracy import (  # noqa: E402
    package_accuracy,
    torch_predictions,
    validation_pixels,
)
from swiftlearn.export.checks import default_labels  # noqa: E402
from swiftlearn.export.compress import COMPRESSIONS, check_compression, compress_coreml  # noqa: E402
from swiftlearn.utils import atomic_write_json  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "imagenette2-224"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "assets" / "swiftformer_xs_imagenette.pt"))
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Imagenette root")
    p.add_argument("--out-dir", default=None, help="where the packages go (outside the repo)")
    p.add_argument("--json", default=str(REPO / "assets" / "compression" / "coreml.json"))
    p.add_argument("--modes", nargs="*", default=list(COMPRESSIONS))
    p.add_argument("--per-class", type=int, default=None,
                   help="only the first N images of each class (a quick check)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--merge", nargs="*", default=None,
                   help="merge the modes of these JSON files (other processes' runs) and stop")
    p.add_argument("--table", action="store_true", help="print the markdown table and stop")
    args = p.parse_args(argv)
    if args.merge is not None or args.table:
        return merge_and_table(Path(args.json), args.merge or [], args.table)
    if args.out_dir is None:
        raise SystemExit("--out-dir is required to measure (where the packages go)")
    modes = [check_compression(m) for m in args.modes]
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir).resolve()
    if out_dir == REPO or REPO in out_dir.parents:
        raise SystemExit(f"--out-dir {out_dir} is inside the repository; packages stay out of git")
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "nice -n 5 .venv/bin/python scripts/compression_eval.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    ckpt = read_checkpoint(args.checkpoint)
    size = int(ckpt.eval_size or 224)
    mean, std = ckpt.mean, ckpt.std
    model = ckpt.build(ckpt.variant, num_classes=ckpt.num_classes).eval()
    labels = default_labels(ckpt.num_classes, ckpt.meta.get("classes"))
    cache_size = int((ckpt.meta.get("config") or {}).get("cache_size") or 176)

    print(f"validation images at {size}px (cache {cache_size}px) ...", flush=True)
    pixels, targets, _ = validation_pixels(args.data, size, cache_size=cache_size,
                                           per_class=args.per_class)
    key = hashlib.sha256(targets.numpy().tobytes() + pixels[:, :, ::16, ::16].numpy().tobytes()
                         ).hexdigest()[:16]
    images = {"split": "val", "n": len(targets), "per_class": args.per_class, "size": size,
              "key": key, "root": Path(args.data).name,
              "preprocessing": f"cached decode at {cache_size}px, bilinear antialiased resize "
                               f"to {size}px, rounded to integer pixels 0..255"}

    json_path = Path(args.json)
    doc = json.loads(json_path.read_text()) if json_path.is_file() else {}
    same = doc.get("images", {}).get("key") == key and doc.get("checkpoint") == \
        Path(args.checkpoint).name
    results = doc.get("modes", {}) if same else {}
    doc = {"what": "Core ML weight compression of the trained SwiftFormer-XS: package size and "
                   "top-1 through swiftlearn's MIL interpreter vs PyTorch fp32, same images",
           "checkpoint": Path(args.checkpoint).name, "images": images,
           "deployment_target": "iOS16", "precision": "float16",
           "cpu": cpu_model(), "command": command,
           "versions": {"torch": torch.__version__,
                        "coremltools": __import__("coremltools").__version__,
                        "python": platform.python_version()},
           "modes": results}

    torch_cache = out_dir / f"torch-pred-{key}.npy"
    if torch_cache.is_file():
        torch_pred = np.load(torch_cache)
    else:
        start = time.perf_counter()
        torch_pred = torch_predictions(model, pixels, mean=mean, std=std)
        print(f"PyTorch fp32: {time.perf_counter() - start:.0f} s", flush=True)
        np.save(torch_cache, torch_pred)

    base = out_dir / "swiftformer_xs_none.mlpackage"
    if not base.exists():
        to_coreml(model, base, size, labels, "float16", mean=mean, std=std)
    for mode in modes:
        if mode in results:
            print(f"{mode}: already measured, skipped", flush=True)
            continue
        path = out_dir / f"swiftformer_xs_{mode}.mlpackage"
        start = time.perf_counter()
        if mode != "none":
            compress_coreml(base, path, mode)
        compress_s = time.perf_counter() - start
        info = inspect_coreml(path)
        report = package_accuracy(path, model, pixels, targets.numpy(), mean=mean, std=std,
                                  batch_size=args.batch_size, torch_pred=torch_pred)
        results[mode] = {
            "package": path.name, "size_bytes": info.size_bytes,
            "weights_bytes": info.weights_bytes,
            "constexpr_ops": {k: v for k, v in info.op_histogram.items()
                              if k.startswith("constexpr_")},
            "interpreter_top1": round(report.top1, 3),
            "torch_fp32_top1": round(report.torch_top1, 3),
            "agreement": round(report.agreement, 3), "images": report.n,
            "interpreter_seconds": round(report.seconds, 1),
            "compress_seconds": round(compress_s, 1), "command": command,
            "measured": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        print(f"{mode}: {info.size_bytes / 1e6:.2f} MB, {report} ({report.seconds:.0f} s)",
              flush=True)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(doc, json_path)
    atomic_write_json(doc, json_path)
    return 0


def merge_and_table(json_path: Path, others: list[str], table: bool) -> int:
    """Merge other runs' modes into ``json_path`` (same images and checkpoint), print the table."""
    if not json_path.is_file():
        raise SystemExit(f"{json_path} does not exist: measure first")
    doc = json.loads(json_path.read_text())
    for other in others:
        part = json.loads(Path(other).read_text())
        if part.get("images", {}).get("key") != doc["images"]["key"] or \
                part.get("checkpoint") != doc["checkpoint"]:
            raise SystemExit(f"{other} measured other images or another checkpoint; not merged")
        for mode, result in part.get("modes", {}).items():
            result.setdefault("command", part.get("command"))
            doc["modes"].setdefault(mode, result)
    if others:
        atomic_write_json(doc, json_path)
    if table:
        modes, base = doc["modes"], doc["modes"].get("none", {}).get("size_bytes")
        print("| compression | package | vs float16 | top-1, interpreter | top-1, PyTorch fp32 "
              "| same top-1 |")
        print("| --- | --- | --- | --- | --- | --- |")
        for mode in COMPRESSIONS:
            r = modes.get(mode)
            if r is None:
                print(f"| `{mode}` | not measured yet: resume scripts/compression_eval.py "
                      "| | | | |")
                continue
            ratio = f"{base / r['size_bytes']:.2f}x smaller" if base and mode != "none" else "1x"
            print(f"| `{mode}` | {r['size_bytes'] / 1e6:.2f} MB | {ratio} | "
                  f"{r['interpreter_top1']:.2f} % | {r['torch_fp32_top1']:.2f} % | "
                  f"{r['agreement']:.2f} % |")
        print(f"\n{doc['images']['n']} validation images at {doc['images']['size']}px; "
              f"CPU: {doc['cpu']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
