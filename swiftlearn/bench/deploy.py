"""The ``deploy`` suite: which way to run a *trained* SwiftFormer on this CPU.

Every run path of :mod:`swiftlearn.bench.paths` (PyTorch eager, fused, fused + bf16, compiled;
ONNX Runtime fp32 and int8; OpenVINO's default, f32 and NNCF int8) and timm's eager model with
the same weights (the reference of the speed ratios) are timed interleaved in one process
(batch 1, one image at the checkpoint's evaluation size), then each is scored on the whole
validation split at the same size: top-1, the change against PyTorch fp32 and the share of
images on which its top-1 is PyTorch fp32's. The report names the CPU (model, instruction
sets, versions) and the fastest path that loses at most :data:`MAX_LOSS` points: the one to
deploy on a machine like this one, with paired verdicts against the runner-up and the
runtimes' defaults, and each runtime's per-op profile (what it made of the graph). Files:
``deploy-<cpu kind>.md`` and ``.json``, so tables of different CPU kinds sit side by side.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..utils import cpu_kind
from .common import check_threads, machine_info, params_gmacs, summary, time_calls
from .paths import swiftformer_paths

__all__ = ["CLEAR_WIN", "DEFAULT_CHECKPOINT", "DEFAULT_ROUNDS", "MAX_LOSS", "RUNTIME_DEFAULTS",
           "TABLES", "advice", "paired", "run_deploy"]

DEFAULT_CHECKPOINT = (Path(__file__).resolve().parents[2] / "assets"
                      / "swiftformer_xs_imagenette.pt")
#: where the committed deploy tables live, one per CPU kind
TABLES = DEFAULT_CHECKPOINT.parent / "bench"
MAX_LOSS = 0.5  #: top-1 points a deployable path may lose against PyTorch fp32
#: a path is *clearly* faster than another when its round median is the lower one in at least
#: this share of the interleaved rounds; below it the two tie within the machine's noise
CLEAR_WIN = 0.8
#: interleaved rounds by default: on a shared VM two 5-round runs minutes apart ranked the three
#: fastest Zen 5 paths differently; 30 rounds gave a 27-of-30 verdict
DEFAULT_ROUNDS = 20
#: the runtimes' own defaults on the plain fp32 model, which the library's paths should beat
RUNTIME_DEFAULTS = ("onnxruntime", "openvino")
_CALIBRATION = 200  # images, as `swiftlearn export --quantize int8` calibrates


def advice(slug: str | None = None, folder=None) -> str:
    """One line for ``swiftlearn info``: the fastest deployable path that the deploy table of
    this CPU kind (``<folder>/deploy-<slug>.json``, default the committed tables) measured, or
    how to measure it where there is none."""
    slug = slug or cpu_kind()["slug"]
    path = Path(folder or TABLES) / f"deploy-{slug}.json"
    measure = "`swiftlearn bench --suite deploy` measures which way to run a model is fastest here"
    if not path.is_file():
        return f"no deploy table for this CPU kind ({slug}) yet: {measure}"
    try:
        doc = json.loads(path.read_text())
        fast, date = doc["fastest"], doc["machine"]["date"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"the deploy table {path} cannot be read ({type(e).__name__}): {measure}"
    facts = [fast["backend"]]
    if fast.get("speed_vs_timm"):
        facts.append(f"{fast['speed_vs_timm']:.2f}x timm eager")
    if fast.get("delta_points") is not None:
        facts.append(f"{fast['delta_points']:+.2f} points of top-1")
    runner = fast.get("runner_up")
    if runner and not runner["clear"]:
        facts.append(f"a tie with {runner['backend']}")
    return (f"fastest here by the deploy table of this CPU kind ({path.name}, {date}): "
            f"{', '.join(facts)} (re-measure: `swiftlearn bench --suite deploy`)")


def paired(fast: list[float], other: list[float]) -> dict:
    """How much faster a path is than ``other``, round by round (``fast[k]`` and ``other[k]``:
    the two paths' median ms in interleaved round ``k``, so both met the same spell of load):
    the median of the per-round ratios ``other / fast``, the rounds ``fast`` won and whether
    that is a clear win (:data:`CLEAR_WIN`) or a tie within the noise."""
    if len(fast) != len(other) or not fast:
        raise ValueError("paired needs the same number of rounds (>= 1) for both paths")
    ratios = [o / f for f, o in zip(fast, other)]
    wins = sum(r > 1 for r in ratios)
    return {"ratio": round(statistics.median(ratios), 3), "wins": wins, "rounds": len(ratios),
            "clear": wins >= CLEAR_WIN * len(ratios)}


def _round_medians(times: list[float], repeats: int) -> list[float]:
    return [round(statistics.median(times[i:i + repeats]), 3)
            for i in range(0, len(times), repeats)]


#: the PyTorch rows, profiled through torch.profiler
_PROFILED = ("eager", "fused", "fused+bf16", "fused bf16 weights")


def _profile(row: dict, x: torch.Tensor, calls: int) -> dict:
    from ..export.profile import pytorch_profile

    fn = row["fn"]
    if hasattr(fn, "profile"):  # ONNX Runtime, OpenVINO: the runtime's own profiler
        return fn.profile(x, calls=calls).to_dict()
    return pytorch_profile(fn, x, calls=calls).to_dict()


def _predict(fn, x: torch.Tensor, batch: int = 50) -> np.ndarray:
    preds = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out = fn(x[i:i + batch])
            out = out if isinstance(out, np.ndarray) else out.float().numpy()
            preds.append(out.argmax(1))
    return np.concatenate(preds)


def run_deploy(checkpoint=None, data_root=None, *, threads: int = 1,
               rounds: int = DEFAULT_ROUNDS,
               repeats: int = 10, warmup: int = 5, size: int | None = None,
               compile: bool = False, per_class: int | None = None, cache_dir=None,
               profile_calls: int = 100, progress: bool = False) -> dict:
    """Latency (``threads`` threads, batch 1) and validation top-1 of every run path of the
    trained model in ``checkpoint`` (default: the committed XS), on the Imagenette root
    ``data_root`` (default: :func:`~swiftlearn.data.find_root`); ``per_class`` scores only the
    first images of each class (a quick check). ``size``: default the checkpoint's evaluation
    size. The PyTorch, ONNX Runtime and OpenVINO paths are then profiled per op
    (``profile_calls`` calls each, :mod:`swiftlearn.export.profile`), after the timing."""
    from ..checkpoints import read_checkpoint, to_timm
    from ..data import find_root, load_cached, resize_center
    from ..export.quantize import calibration_images

    check_threads([threads])
    if min(rounds, repeats, profile_calls) < 1 or warmup < 0:
        raise ValueError("rounds, repeats and profile_calls must be >= 1, warmup >= 0")
    checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}; pass --checkpoint, a file "
                                "written by swiftlearn train")
    root = find_root(data_root)
    ckpt = read_checkpoint(checkpoint, flag="--checkpoint").require_trained(
        f"--checkpoint {checkpoint}")
    size = int(size or ckpt.eval_size or 224)
    cache_size = int(ckpt.config.get("cache_size") or 176)
    model = ckpt.build()
    name = ckpt.config.get("model", "swiftformer_xs")
    val = load_cached(root, "val", cache_size, cache_dir=cache_dir, progress=False)
    if per_class:
        val = val.subset(per_class)
    x = torch.cat([resize_center(val.images[i:i + 256], size) for i in range(0, len(val), 256)])
    labels = val.labels.numpy()
    calib = calibration_images(root, _CALIBRATION, size)
    notes: list[str] = []
    info = machine_info()
    saved = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        paths = swiftformer_paths(model, name, size, Path(tmp), notes, compile=compile,
                                  int8=True, calibration=calib,
                                  calibration_note=f"{len(calib)} training images from {root}")
        timm_fn = None
        try:
            import timm

            ref = timm.create_model(name, num_classes=model.head.out_features).eval()
            ref.load_state_dict(to_timm(model))
            timm_fn = ref
        except ImportError:
            notes.append("timm is not installed: no reference row, no speed ratios.")
        rows = ([{"backend": "timm eager", "precision": "fp32", "fn": timm_fn}]
                if timm_fn is not None else [])
        try:
            torch.set_num_threads(threads)
            for p in paths:
                rows.append({"backend": p.backend, "precision": p.precision,
                             "fn": p.make(threads)})
            one = x[:1]
            with torch.inference_mode():
                for r in rows:
                    time_calls(r["fn"], one, max(warmup, 1))  # compiles, on the first call
                times: dict[str, list[float]] = {r["backend"]: [] for r in rows}
                for k in range(rounds):
                    for r in rows[k % len(rows):] + rows[:k % len(rows)]:
                        times[r["backend"]] += time_calls(r["fn"], one, repeats)
                    if progress:
                        print(f"  latency round {k + 1}/{rounds}", flush=True)
            reference = _predict(model, x)
            for r in rows:
                if r["backend"] == "fused+compile":  # a batch of 50 would compile again
                    r["pred"] = None
                    continue
                r["pred"] = _predict(r["fn"], x)
                if progress:
                    print(f"  scored {r['backend']}", flush=True)
            # after the timing, never beside it: each runtime's own per-op profile
            profiles = {r["backend"]: _profile(r, one, profile_calls) for r in rows
                        if r["backend"] in _PROFILED or hasattr(r["fn"], "profile")}
        finally:
            torch.set_num_threads(saved)
    ref_ms = statistics.median(times["timm eager"]) if timm_fn is not None else None
    torch_top1 = float(100 * (reference == labels).mean())
    out_rows = []
    for r in rows:
        med = statistics.median(times[r["backend"]])
        row = {"backend": r["backend"], "precision": r["precision"],
               "latency": summary(times[r["backend"]]),
               "speed_vs_timm": round(ref_ms / med, 3) if ref_ms else None,
               "round_medians_ms": _round_medians(times[r["backend"]], repeats)}
        if r["pred"] is not None:
            top1 = float(100 * (r["pred"] == labels).mean())
            row.update(top1=round(top1, 3), delta_points=round(top1 - torch_top1, 3),
                       agreement=round(float(100 * (r["pred"] == reference).mean()), 3))
        out_rows.append(row)
    if compile:
        notes.append("fused+compile is not scored (a batch of 50 would compile it again): it "
                     "computes what fused computes, to float rounding.")
    ok = [r for r in out_rows if r["backend"] != "timm eager"
          and r.get("delta_points", 0.0) >= -MAX_LOSS]
    ok.sort(key=lambda r: r["latency"]["median_ms"])
    fastest = ok[0]
    comparisons = {}
    if len(ok) > 1:  # the next-fastest path that keeps its accuracy
        comparisons["runner_up"] = {"backend": ok[1]["backend"], **paired(
            fastest["round_medians_ms"], ok[1]["round_medians_ms"])}
    defaults = [r for r in out_rows if r["backend"] in RUNTIME_DEFAULTS and r is not fastest]
    if defaults:  # what a user gets from ONNX Runtime or OpenVINO without the library's work
        best = min(defaults, key=lambda r: r["latency"]["median_ms"])
        comparisons["vs_defaults"] = {"backend": best["backend"], "precision": best["precision"],
                                      **paired(fastest["round_medians_ms"],
                                               best["round_medians_ms"])}
    params, gmacs = params_gmacs(model, size)
    return {"suite": "deploy", "file_stem": f"deploy-{info['cpu_kind']['slug']}",
            "machine": info, "rows": out_rows, "notes": notes, "profiles": profiles,
            "fastest": {"backend": fastest["backend"],
                        "speed_vs_timm": fastest["speed_vs_timm"],
                        "delta_points": fastest.get("delta_points"), "max_loss": MAX_LOSS,
                        **comparisons},
            "settings": {"checkpoint": str(checkpoint), "model": name, "size": size,
                         "threads": threads, "rounds": rounds, "repeats": repeats,
                         "warmup": warmup, "images": len(labels), "per_class": per_class,
                         "torch_fp32_top1": round(torch_top1, 3), "params_m": round(params, 3),
                         "gmacs": round(gmacs, 3), "calibration_images": len(calib)}}
