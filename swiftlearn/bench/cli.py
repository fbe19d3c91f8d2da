"""``swiftlearn bench``: the command line of the four suites."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model import canonical_name
from .common import usable_cpus
from .deploy import DEFAULT_ROUNDS as DEPLOY_ROUNDS
from .deploy import run_deploy
from .latency import DEFAULT_MODELS, PEER_SIZES, PEERS, run_latency
from .mixers import run_mixers
from .report import check_out, to_markdown, write
from .throughput import run_train

__all__ = ["add_cli"]

#: the options each suite reads (besides --suite, --quick and --out): one given to a suite that
#: does not read it is refused, since the run would silently ignore it
_READS = {"latency": {"models", "threads", "repeats", "rounds", "size", "compile", "no_onnx",
                      "int8", "data"},
          "train": {"models", "data", "cache_dir", "compile"},
          "mixers": {"threads", "repeats", "rounds", "size"},
          "deploy": {"checkpoint", "data", "cache_dir", "threads", "repeats", "rounds", "size",
                     "compile", "per_class"}}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _csv(text: str | None, name: str) -> list[str] | None:
    """The items of a comma-separated option; None when it was not given. An empty list is
    refused: it would otherwise fall back to the default without a word."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{_flag(name)} {text!r} names nothing; list at least one, or leave "
                         f"{_flag(name)} out for its default")
    return items


def _names(text: str | None) -> list[str] | None:
    """``xs,s,mobilevitv2_050`` -> ``swiftformer_xs, swiftformer_s, mobilevitv2_050``."""
    items = _csv(text, "models")
    return items and [m if m in PEERS else canonical_name(m) for m in map(str.lower, items)]


def _threads(text: str | None) -> list[int] | None:
    """The --threads counts (their range is checked by the suites, before they build anything)."""
    items = _csv(text, "threads")
    try:
        return items and [int(t) for t in items]
    except ValueError:
        raise ValueError(f"--threads expects comma-separated whole numbers like 1,2, got "
                         f"{text!r}") from None


def _check(args: argparse.Namespace) -> tuple[list[str] | None, list[int] | None]:
    """Refuse, in one line and before any model is built, an option the suite ignores, an empty
    list or an --out that cannot be written; returns the parsed --models and --threads."""
    unread = [n for n in sorted(set().union(*_READS.values()))
              if getattr(args, n) not in (None, False) and n not in _READS[args.suite]]
    if args.suite == "latency" and args.data and not args.int8:
        unread.append("data")
    if unread:
        raise ValueError(f"{', '.join(map(_flag, unread))}: not used by --suite {args.suite} "
                         f"(it reads {', '.join(map(_flag, sorted(_READS[args.suite])))}"
                         f"{'; --data only with --int8' if args.suite == 'latency' else ''}); "
                         "drop it")
    if args.int8 and args.no_onnx:
        raise ValueError("--int8 rows quantise the ONNX Runtime model, which --no-onnx turns off; "
                         "drop one of them")
    models, threads = _names(args.models), _threads(args.threads)
    if args.suite == "train" and models and len(models) > 1:
        raise ValueError(f"--suite train times one model, got {len(models)} in --models; give one")
    if args.suite == "deploy":
        if threads and len(threads) > 1:
            raise ValueError(f"--suite deploy times one thread count, got {args.threads!r}; give "
                             "one, e.g. --threads 1")
        if args.per_class is not None and args.per_class < 1:
            raise ValueError(f"--per-class must be >= 1, got {args.per_class}")
        if args.checkpoint and not Path(args.checkpoint).is_file():
            raise ValueError(f"--checkpoint {args.checkpoint}: no such file; pass a file written "
                             "by swiftlearn train (default: the committed XS)")
        from ..data import find_root

        find_root(args.data)  # the validation images: refused now, not after the exports
    if args.suite in ("deploy", "train", "latency"):  # one table per CPU kind
        from ..utils import cpu_kind

        check_out(args.out, args.suite, f"{args.suite}-{cpu_kind()['slug']}")
    else:
        check_out(args.out, args.suite)
    return models, threads


def _given(value, default):
    """``value`` unless the option was left out: a given 0 must reach the suite's check, not
    turn into the default as ``value or default`` would."""
    return default if value is None else value


def _cmd(args: argparse.Namespace) -> int:
    models, threads = _check(args)
    size = _given(args.size, 224)
    if args.size is not None:
        from .common import check_size

        check_size(args.size)
    if args.suite == "mixers":
        result = run_mixers(threads=threads or [1], size=size,
                            rounds=_given(args.rounds, 1 if args.quick else 5),
                            repeats=_given(args.repeats, 2 if args.quick else 10),
                            warmup=1 if args.quick else 5, progress=True)
    elif args.suite == "deploy":
        result = run_deploy(args.checkpoint, args.data, threads=(threads or [1])[0],
                            rounds=_given(args.rounds, 2 if args.quick else DEPLOY_ROUNDS),
                            repeats=_given(args.repeats, 3 if args.quick else 10),
                            warmup=2 if args.quick else 5, size=args.size, compile=args.compile,
                            per_class=args.per_class or (20 if args.quick else None),
                            cache_dir=args.cache_dir, progress=True)
    elif args.suite == "train":
        result = run_train(models[0] if models else "swiftformer_xs", quick=args.quick,
                           data_root=args.data, cache_dir=args.cache_dir, compile=args.compile,
                           progress=True)
    else:
        models = models or (["swiftformer_xs"] if args.quick else list(DEFAULT_MODELS))
        threads = threads or ([1] if args.quick else [t for t in (1, 2) if t <= usable_cpus()])
        repeats = _given(args.repeats, 3 if args.quick else 10)
        rounds = _given(args.rounds, 2 if args.quick else 5)
        result = run_latency(models, threads, rounds=rounds, repeats=repeats,
                             warmup=2 if args.quick else 5, size=size,
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
    p.add_argument("--suite", choices=("latency", "train", "mixers", "deploy"),
                   default="latency",
                   help="latency: SwiftFormer vs its peers; train: training throughput of the "
                   "trainer's step vs a plain loop; mixers: params, GMACs and latency of every "
                   "token-mixer variant (notebook 08); deploy: latency and validation top-1 of "
                   "every way to run a trained model here (PyTorch, ONNX Runtime, OpenVINO; "
                   "fp32, bf16, int8), and the fastest that keeps its accuracy")
    lo, hi = PEER_SIZES["efficientformer_l1"]
    p.add_argument("--models", help="comma-separated: swiftformer_xs,s,l1,l3 and timm peers "
                   f"({', '.join(PEERS)}); leave it out for all (an empty list is refused); "
                   "the train suite takes one (default swiftformer_xs)")
    p.add_argument("--threads", help="comma-separated thread counts, each from 1 to the CPUs "
                   "this process may use (default 1,2, or 1 on one CPU; 1 for the mixers suite)")
    p.add_argument("--repeats", type=int, help="timed calls per entry per round (default 10)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5; "
                   f"{DEPLOY_ROUNDS} for the deploy suite, whose verdicts compare paths round by "
                   "round)")
    p.add_argument("--size", type=int, help="input side in pixels (default 224); at least 32 "
                   f"(SwiftFormer downsamples 32x), {lo}-{hi} with efficientformer_l1 (its "
                   "attention is built for a 7x7 last-stage map)")
    p.add_argument("--compile", action="store_true", help="latency: add torch.compile of the "
                   "fused models; train: add torch.compile of the training step, with an empty "
                   "and then a warm inductor cache (minutes on two cores)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    p.add_argument("--int8", action="store_true", help="add static int8 ONNX Runtime rows "
                   "(swiftlearn export --quantize int8; calibrated on --data images if given)")
    p.add_argument("--quick", action="store_true",
                   help="XS only, 1 thread, few repeats (unless --models, --threads ... say "
                   "otherwise): checks the machinery in ~1 minute")
    p.add_argument("--data", help="train suite: an Imagenette root, to time both loops on the "
                   "real images (default: synthetic images); latency suite with --int8: the "
                   "calibration images; deploy suite: the validation and calibration images "
                   "(default: SWIFTLEARN_DATA or the data folder)")
    p.add_argument("--cache-dir", help="train and deploy suites: decoded cache folder")
    p.add_argument("--checkpoint", help="deploy suite: the trained model (default: the "
                   "committed assets/swiftformer_xs_imagenette.pt)")
    p.add_argument("--per-class", type=int, help="deploy suite: score only the first N "
                   "validation images of each class (default: all; --quick: 20)")
    p.add_argument("--out", default="assets/bench", help="output folder, created if missing: "
                   "gets <suite>-<cpu kind>.md and .json (the mixers suite: mixers.md; default "
                   "assets/bench); checked before the run")
    p.set_defaults(func=_cmd)
