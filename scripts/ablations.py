"""Run the notebook-08 ablation grid on Imagenette and collect small JSON results.

Every variant trains SwiftFormer-XS from scratch with the same short recipe (:data:`RECIPE`:
the ``quick`` recipe, shortened) and several seeds. Runs live in a folder outside
the repository (``--runs``), checkpoint as they go and resume when the script is run again: an
interrupted grid continues where it stopped, finished runs are skipped. For each finished run
the script writes ``<results>/<variant>-s<seed>.json``: the exact command, the config, the
per-epoch history and the final metrics (weights stay in the run folder, out of git).

    python scripts/ablations.py --data $SWIFTLEARN_DATA --runs /work/runs/ablations
    python scripts/ablations.py --list          # the grid and the commands, nothing run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from swiftlearn.utils import cpu_kind

#: variant -> extra ``swiftlearn train`` options (the baseline is the published model)
VARIANTS: dict[str, list[str]] = {
    "additive-all": [],
    "additive-last": ["--mixer-stages", "3"],
    "mhsa-last": ["--mixer", "mhsa", "--mixer-stages", "3"],
    "none": ["--mixer", "none"],
    "fastformer": ["--mixer", "fastformer"],
    "softmax": ["--formulation", "softmax"],
    "legacy_softmax": ["--formulation", "legacy_softmax"],
}
SEEDS: dict[str, tuple[int, ...]] = {}  # per-variant exceptions to DEFAULT_SEEDS (none today)
DEFAULT_SEEDS = (0, 1, 2)  # three seeds each, so that every variant has its own seed spread
#: the quick recipe (two one-thread workers, whitening stem, linear decay, eval at 112 px) counted
#: in epochs instead of its 14-minute budget, so that every variant gets the same steps whatever
#: the machine or its load: 20 epochs at 64 -> 80 -> 96 px, trial F of
#: assets/training/quick_trials.md (85.1 % for the published model). About 15 minutes a run on
#: an AVX-512 BF16 EPYC, 30 on an AVX2 one.
RECIPE = ["--recipe", "quick", "--time-budget", "0", "--epochs", "20", "--progressive",
          "0:64,10:80,16:96"]
#: (the 5-epoch grid of before, assets/ablations/*.json, cut the quick recipe of its time to 5
#: epochs; each of its JSON files holds the full config it ran with)


def grid(only: list[str] | None = None) -> list[tuple[str, int]]:
    names = only or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    # seed by seed: every variant's first seed lands before any second seed, so that a grid cut
    # short (a session ends) has already compared every variant once, on the same seed
    jobs = [(v, s) for v in names for s in SEEDS.get(v, DEFAULT_SEEDS)]
    return sorted(jobs, key=lambda job: (job[1], names.index(job[0])))


def command(variant: str, seed: int, data: str, runs: Path, cache_dir: str | None,
            threads: int | None = None) -> list[str]:
    cmd = ["python", "-m", "swiftlearn.train", "train", *RECIPE, *VARIANTS[variant],
           "--seed", str(seed), "--data", data, "--out", str(runs / f"{variant}-s{seed}"),
           "--quiet"]
    cmd += ["--cache-dir", cache_dir] if cache_dir else []
    return cmd + (["--threads", str(threads)] if threads is not None else [])


def per_image(run: Path, data: str, cache_dir: str | None, eval_size: int) -> dict:
    """The finished model's outcome on every validation image, from a plain float32 forward at
    the evaluation size, packed one bit per image (swiftlearn.stats.pack_correct), so that two
    variants can be compared on the same images."""
    from swiftlearn.data import load_cached
    from swiftlearn.stats import pack_correct
    from swiftlearn.train import evaluate, load_trained

    config = json.loads((run / "config.json").read_text())
    val = load_cached(data, "val", size=config["cache_size"], cache_dir=cache_dir,
                      progress=False)
    model = load_trained(run / "final_fp16.pt").float().eval()
    r = evaluate(model, val, img_size=eval_size, amp="off", per_image=True)
    return {"plain_fp32_top1": r["top1"], "n": r["n"], "correct": pack_correct(r["correct"]),
            "order": "swiftlearn.data.list_samples(root, 'val')"}


def train_precision(config: dict) -> str:
    """What the run's autocast trained in on this machine: ``"bf16"`` where the CPU has native
    bf16 instructions (``amp auto``), else ``"fp32"``. Seeds trained on different CPU kinds differ
    in this as well as in their seed, so the notebook reads it beside ``cpu``."""
    import torch

    from swiftlearn.utils import amp_dtype

    dtype = amp_dtype(config.get("amp", "auto"), "cpu")
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def collect(variant: str, seed: int, cmd: list[str], run: Path, results: Path, data: str,
            cache_dir: str | None) -> dict:
    history = json.loads((run / "history.json").read_text())
    config = json.loads((run / "config.json").read_text())
    last = history[-1]
    result = {"variant": variant, "seed": seed, "command": shlex.join(cmd),
              "val_top1": last["val_top1"], "val_top5": last["val_top5"],
              "eval_size": last["eval_size"], "wall_time_s": last["wall_time_s"],
              "cpu": cpu_kind()["label"], "train_precision": train_precision(config),
              "val_images": per_image(run, data, cache_dir, last["eval_size"]),
              "config": config, "history": history}
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / f".{variant}-s{seed}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, results / f"{variant}-s{seed}.json")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("SWIFTLEARN_DATA"))
    p.add_argument("--runs", type=Path, default=Path("/work/runs/ablations-quick"))
    p.add_argument("--results", type=Path, default=Path("assets/ablations/quick"),
                   help="one JSON per finished run (default assets/ablations/quick; the 5-epoch "
                        "grid of before is in assets/ablations/)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--only", nargs="*", help="variants to run (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: the recipe's); one thread keeps a run "
                        "steady on a machine that other work shares. Only the speed changes, and "
                        "a run can resume with another value")
    p.add_argument("--list", action="store_true", help="print the grid and exit")
    args = p.parse_args(argv)
    jobs = grid(args.only)
    if args.list:
        for v, s in jobs:
            print(shlex.join(command(v, s, args.data or "$SWIFTLEARN_DATA", args.runs,
                                     args.cache_dir, args.threads)))
        return 0
    if not args.data:
        raise SystemExit("--data: an Imagenette root is needed (or set SWIFTLEARN_DATA)")
    for variant, seed in jobs:
        run = args.runs / f"{variant}-s{seed}"
        cmd = command(variant, seed, args.data, args.runs, args.cache_dir, args.threads)
        done = (run / "final_fp16.pt").is_file()
        result = args.results / f"{variant}-s{seed}.json"
        if result.is_file():  # collected before (maybe on another machine, whose run folder is
            # gone): the committed result is the run; keep the command recorded then
            print(f"   {variant} seed {seed}: done ({result})", flush=True)
            continue
        if not done:
            resume = ["--resume", str(run)] if (run / "last.pt").is_file() else []
            print(f"== {variant} seed {seed}: {shlex.join(cmd + resume)}", flush=True)
            # the recorded command is the one that starts the run; --resume only continues it
            real = [sys.executable, *cmd[1:]] + resume
            subprocess.run(real, check=True)
        r = collect(variant, seed, cmd, run, args.results, args.data, args.cache_dir)
        print(f"   {variant} seed {seed}: top-1 {r['val_top1']:.2f} % at {r['eval_size']} px "
              f"({r['wall_time_s'] / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
