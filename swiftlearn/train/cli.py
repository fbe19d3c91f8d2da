"""``swiftlearn train`` and ``swiftlearn evaluate`` (also ``python -m swiftlearn.train``).

The options of ``train`` are generated from :class:`~swiftlearn.train.TrainConfig`'s field
metadata (:func:`~swiftlearn.train.config.cli_fields`), so the help and the config cannot drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from ..checkpoints import read_checkpoint
from ..data import load_cached
from ..utils import atomic_write_json, check_writable, run_command
from .config import RESUMABLE_CHANGES, TrainConfig, cli_fields
from .evaluate import evaluate
from .loop import fit, preflight
from .recipes import RECIPES, from_recipe
from .state import read_training_checkpoint

__all__ = ["add_cli", "main"]

_TYPES = {"int": int, "float": float, "str": str, "str | None": str}


def _option_type(f: dataclasses.Field):
    return f.metadata.get("parse") or _TYPES.get(str(f.type), str)


#: the mixers whose attention has a token-weight formulation (``swiftlearn.blocks.build_mixer``)
_FORMULATION_MIXERS = ("additive", "fastformer")


def _refuse_ignored(config: TrainConfig, given: dict, recipe: str | None) -> None:
    """Raise a one-line ValueError, before any data is read, for an option given on the command
    line that the run would ignore, or whose meaning a recipe value silently changes: config.json
    records every value, so an ignored one would misstate how the model was trained."""
    schedule = config.resize_schedule
    starts = ",".join(f"{e}:{s}" for e, s in schedule)
    by = f"the {recipe} recipe's" if recipe and "resize_schedule" not in given else "the"
    if "formulation" in given and config.mixer not in _FORMULATION_MIXERS:
        raise ValueError(f"--formulation {config.formulation} has no effect with --mixer "
                         f"{config.mixer} (only the additive and fastformer attention weight "
                         "their tokens); drop --formulation or choose one of those mixers")
    if ("img_size" in given and schedule and schedule[0][0] == 0
            and schedule[0][1] != config.img_size):
        raise ValueError(f"--img-size {config.img_size} has no effect: {by} progressive "
                         f"resizing ({starts}) sets the training size from the start; give "
                         f"--progressive 0:{config.img_size} to train at {config.img_size} px, "
                         "or --progressive '' to train at --img-size throughout")
    if "mix_prob" in given and config.mixup == 0 and config.cutmix == 0:
        raise ValueError(f"--mix-prob {config.mix_prob} has no effect: mixup and CutMix are off; "
                         "turn one on (e.g. --mixup 0.2 or --cutmix 1.0) or drop --mix-prob")
    if "teacher_model" in given and not config.teacher:
        raise ValueError("--teacher-model has no effect without --teacher (the teacher's "
                         "checkpoint); add --teacher or drop --teacher-model")
    if not (recipe and config.time_budget_min):
        return
    # a time budget makes --progressive starts percentages and --epochs a mere upper bound
    if RECIPES[recipe].get("time_budget_min") and "time_budget_min" not in given \
            and ("epochs" in given or "resize_schedule" in given):
        name = "--epochs" if "epochs" in given else "--progressive"
        raise ValueError(f"{name} does not count epochs under the {recipe} recipe's "
                         f"{config.time_budget_min:g}-minute time budget (the cosine and the "
                         "resizing follow the budget used: --progressive starts are percentages, "
                         "--epochs only stops the run early); add --time-budget 0 to count in "
                         "epochs, or give --time-budget yourself to keep a budget")
    if not RECIPES[recipe].get("time_budget_min") and "resize_schedule" not in given \
            and any(e > 0 for e, _ in schedule):
        raise ValueError(f"--time-budget would make the {recipe} recipe's progressive resizing "
                         f"({starts}, starts in epochs) start at those percentages of the budget; "
                         "give --progressive with percentage starts as well")


def _workers(config: TrainConfig) -> int:
    """How many processes ``config.processes`` asks for on this machine: capped at the CPUs this
    process may use, and 1 where training runs on a GPU (one device, one process)."""
    import torch

    if config.processes <= 1 or torch.cuda.is_available():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(config.processes, cpus or 1))


def _launch(workers: int, argv: list[str]) -> int:
    """Run this same command as ``workers`` data-parallel processes (``torchrun --standalone``
    on this machine), each with an equal share of the CPUs as its threads. The workers train,
    checkpoint and resume exactly as one process would; rank 0 writes. What they would refuse
    (run folder, teacher, data) is refused here first, in one line."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (cpus or 1) // workers)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the worker says
    # torchrun keeps its workers' logs in a folder it never removes (torchelastic_* in the
    # system temporary folder): give it one of ours, removed when the run ends
    try:
        with tempfile.TemporaryDirectory(prefix="swiftlearn-torchrun-") as logs:
            torchrun(["--standalone", f"--nproc-per-node={workers}", "--log-dir", logs,
                      "-m", "swiftlearn.cli", *argv])
    except ChildFailedError:
        raise RuntimeError(f"a training process of the {workers} stopped (its message is "
                           "above); fix that and run the same command again (add --resume to "
                           "continue from the last checkpoint)") from None
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    given = {f.name: getattr(args, f.name) for _, f in cli_fields()
             if getattr(args, f.name) is not None}
    if not args.channels_last:
        given["channels_last"] = False
    path = None
    if args.resume and args.overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it; choose one")
    if args.resume:
        path = Path(args.resume)
        path = path / "last.pt" if path.is_dir() else path
        if not path.is_file():
            early = (path.parent / "config.json").is_file() and not path.exists()
            hint = (f"; the run in {path.parent} stopped before its first checkpoint: start it "
                    "again with the same command (add --overwrite to change its options)"
                    ) if early else ""
            raise FileNotFoundError(f"--resume: no checkpoint at {path}{hint}")
        saved = read_training_checkpoint(path)["config"]
        config = TrainConfig.from_dict({**saved, **given})
        if "out" not in given:
            config.out = str(path.parent)
    elif args.recipe:
        config = from_recipe(args.recipe, **given)
    else:
        config = TrainConfig.from_dict(given)
    _refuse_ignored(config, given, args.recipe)
    workers = _workers(config)
    if workers > 1 and "RANK" not in os.environ:  # the launcher: the workers run the rest
        preflight(config, resume=path or False, overwrite=args.overwrite)
        return _launch(workers, args.argv)
    result = fit(config, resume=path or False, progress=not args.quiet,
                 overwrite=args.overwrite)
    if os.environ.get("RANK", "0") != "0":
        return 0
    if result.history and "val_top1" in result.history[-1]:
        print(f"final val top1 {result.history[-1]['val_top1']:.2f}%  ->  {result.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.json:  # before the evaluation, so that its metrics cannot be lost
        check_writable(args.json, "--json")
    # read once; everything below comes from this object
    ckpt = read_checkpoint(args.checkpoint, use_ema=not args.no_ema, flag="--checkpoint")
    ckpt.require_trained(f"--checkpoint {args.checkpoint}")
    config = ckpt.config
    net = ckpt.build()
    data = load_cached(args.data or config.get("data"), args.split,
                       args.cache_size or config.get("cache_size", 176),
                       cache_dir=config.get("cache_dir"), progress=not args.quiet)
    size = args.img_size or ckpt.eval_size or 224
    m = evaluate(net, data, size, batch_size=args.batch_size, crop_pct=args.crop_pct,
                 progress=not args.quiet)
    if args.json:
        Path(args.json).expanduser().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(m, Path(args.json).expanduser())
    print(f"{args.split}: top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  loss {m['loss']:.4f}  "
          f"({m['n']} images at {size}px)")
    for name, a in zip(m["classes"], m["per_class"]):
        print(f"  {name:18s} {a:6.2f}%")
    return 0


def add_cli(subparsers) -> None:
    """Register ``swiftlearn train`` and ``swiftlearn evaluate``."""
    resumable = ", ".join("--" + n.replace("_", "-") for n in RESUMABLE_CHANGES
                          if n != "checkpoint_every_steps")
    p = subparsers.add_parser("train", help="train a SwiftFormer on Imagenette",
                              description="Train with swiftlearn.train.fit. With --resume, the "
                              "saved config is used; options given must not change it, except "
                              f"{resumable}.")
    for flag, f in cli_fields():
        default = f.default
        shown = (f" (default: {default})" if default not in (None, dataclasses.MISSING)
                 and not isinstance(default, list) else "")
        p.add_argument(flag, dest=f.name, type=_option_type(f), default=None,
                       help=f.metadata["help"] + shown)
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="start from a named recipe (quick: ~15 min on 2 CPU cores; long: the "
                   "committed 90.3%% model); options given beside it override it, and one that "
                   "the recipe would make ignored (--img-size under its progressive resizing) "
                   "or reinterpret (--epochs under its time budget) is refused")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--resume", default=None, metavar="RUN_OR_CKPT",
                   help="continue a run folder (its last.pt) or a checkpoint file")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that already holds a run, replacing its "
                   "last.pt, config, history and final weights (without it, such a folder is "
                   "refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train, channels_last=True)

    e = subparsers.add_parser("evaluate", help="top-1/top-5/per-class accuracy of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="last.pt or an exported weights file")
    e.add_argument("--data", default=None, help="Imagenette root (default: the run's)")
    e.add_argument("--split", default="val", choices=("train", "val"))
    e.add_argument("--img-size", type=int, default=0, help="default: the run's final size")
    e.add_argument("--crop-pct", type=float, default=1.0)
    e.add_argument("--cache-size", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--no-ema", action="store_true", help="evaluate the raw weights, not the EMA")
    e.add_argument("--json", default=None, help="also write the metrics to this file")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_cmd_evaluate)


def main(argv: list[str] | None = None) -> int:
    """``python -m swiftlearn.train train|evaluate ...``: the same commands as ``swiftlearn``,
    without importing the other command modules (used by long background runs)."""
    parser = argparse.ArgumentParser(prog="python -m swiftlearn.train")
    add_cli(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return run_command(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
