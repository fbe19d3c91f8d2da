"""``swiftlearn bench``: the command line of the three suites."""

from __future__ import annotations

import argparse
import sys

from ..model import canonical_name
from .latency import DEFAULT_MODELS, PEERS, run_latency
from .mixers import run_mixers
from .report import to_markdown, write
from .throughput import run_train

__all__ = ["add_cli"]

def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _names(text: str) -> list[str]:
    """``xs,s,mobilevitv2_050`` -> ``swiftformer_xs, swiftformer_s, mobilevitv2_050``."""
    return [m if m in PEERS else canonical_name(m) for m in _csv(text.lower())]


def _cmd(args: argparse.Namespace) -> int:
    if args.suite == "mixers":
        threads = [int(t) for t in _csv(args.threads)] if args.threads else [1]
        result = run_mixers(threads=threads, size=args.size,
                            rounds=args.rounds or (1 if args.quick else 5),
                            repeats=args.repeats or (2 if args.quick else 10),
                            warmup=1 if args.quick else 5, progress=True)
    elif args.suite == "train":
        model = _names(args.models)[0] if args.models else "swiftformer_xs"
        result = run_train(model, quick=args.quick, data_root=args.data,
                           cache_dir=args.cache_dir)
    else:
        models = _names(args.models) if args.models else (
            ["swiftformer_xs"] if args.quick else list(DEFAULT_MODELS))
        threads = [int(t) for t in _csv(args.threads)] if args.threads else (
            [1] if args.quick else [1, 2])
        repeats = args.repeats or (3 if args.quick else 10)
        rounds = args.rounds or (2 if args.quick else 5)
        result = run_latency(models, threads, rounds=rounds, repeats=repeats,
                             warmup=2 if args.quick else 5, size=args.size,
                             compile=args.compile, onnx=not args.no_onnx, int8=args.int8,
                             calibration_root=args.data if args.int8 else None, progress=True)
    md, js = write(result, args.out)
    print(to_markdown(result))
    print(f"wrote {md} and {js}")
    return 0


def add_cli(subparsers) -> None:
    """Register ``swiftlearn bench``."""
    summary = sys.modules[__package__].__doc__.split("\n\n")[0]  # the package docstring's
    p = subparsers.add_parser("bench", help="CPU latency of SwiftFormer vs its peers "
                              "(markdown + JSON)", description=summary)
    p.add_argument("--suite", choices=("latency", "train", "mixers"), default="latency",
                   help="latency: SwiftFormer vs its peers; train: training throughput of the "
                   "trainer's step vs a plain loop; mixers: params, GMACs and latency of every "
                   "token-mixer variant (notebook 08)")
    p.add_argument("--models", help="comma-separated: swiftformer_xs,s,l1,l3 and timm peers "
                   f"({', '.join(PEERS)}); default all")
    p.add_argument("--threads", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, help="timed calls per entry per round (default 10)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    p.add_argument("--compile", action="store_true", help="add torch.compile of the fused models")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    p.add_argument("--int8", action="store_true", help="add static int8 ONNX Runtime rows "
                   "(swiftlearn export --quantize int8; calibrated on --data images if given)")
    p.add_argument("--quick", action="store_true",
                   help="XS only, 1 thread, few repeats: checks the machinery in ~1 minute")
    p.add_argument("--data", help="train suite: an Imagenette root, to time both loops on the "
                   "real images (default: synthetic images); latency suite with --int8: the "
                   "calibration images")
    p.add_argument("--cache-dir", help="train suite: decoded cache folder (with --data)")
    p.add_argument("--out", default="assets/bench", help="output folder (default assets/bench)")
    p.set_defaults(func=_cmd)
