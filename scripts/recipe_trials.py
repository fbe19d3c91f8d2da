"""Trials of the quick recipe: run one, time the whole command, evaluate it, record it.

Every trial is one ``swiftlearn train`` command. This script runs it (or continues it with
``--resume`` when its run folder already holds a checkpoint), times the whole command with the
machine's load average beside it, then evaluates the final weights with a plain float32 forward
on all validation images at the evaluation size the run recorded (and, for information, at a few
other sizes), and appends one row to ``assets/training/quick_trials.json`` and its markdown table.
The table is what a learner reads to see what each change bought.

    python scripts/recipe_trials.py run NAME "what changed" -- --recipe quick --epochs 17 ...
    python scripts/recipe_trials.py record NAME "what changed" --run /work/runs/NAME \
        --command "swiftlearn train ..." --wall-s 830   # a run started by hand
    python scripts/recipe_trials.py table               # rewrite the markdown from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "assets" / "training" / "quick_trials.json"
EXTRA_SIZES = (96, 112, 128, 144, 160)


def _cpu() -> str:
    from swiftlearn.utils import cpu_kind

    return cpu_kind()["label"]


def _write(doc: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_name(f".{RESULTS.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, RESULTS)
    md = RESULTS.with_suffix(".md")
    tmp = md.with_name(f".{md.name}.{os.getpid()}.tmp")
    tmp.write_text(table(doc))
    os.replace(tmp, md)


def table(doc: dict) -> str:
    lines = ["# Trials of the quick recipe (SwiftFormer-XS from scratch, Imagenette, 2 CPU cores)",
             "", "Written by `scripts/recipe_trials.py`. *top-1*: a plain float32 forward of the "
             "final (EMA) weights on all 3,925 validation images at the evaluation size the run "
             "records; the other sizes are for information, not used to pick the recipe's. "
             "*wall*: the whole command, data loading and final evaluation included; *load*: "
             "the 1-minute load average at the end (2 means both cores busy with the run "
             "alone). `--recipe quick` in a command means the quick recipe *as it was when "
             "the trial ran* (A-F: the 14-epoch cosine recipe of commit 6ad424b; G on: the "
             "recipe these trials led to); every trial's full config is in "
             "`quick_trials.json`. The CPU column matters: the same command is about 1.7x "
             "slower on the AVX2 EPYC (float32) than on the AVX-512 BF16 one (bf16 autocast).",
             "",
             "| trial | what changed | epochs | wall | load | top-1 | at other sizes | CPU |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["trials"]:
        others = ", ".join(f"{s}: {v:.1f}" for s, v in sorted(r["top1_at"].items(),
                                                               key=lambda kv: int(kv[0])))
        lines.append(f"| {r['name']} | {r['change']} | {r['epochs']} | "
                     f"{r['wall_s'] / 60:.1f} min | {r['load_end']:.1f} | "
                     f"**{r['top1']:.2f} %** @{r['eval_size']} | {others} | {r['cpu']} |")
    lines += ["", "Commands:", ""]
    lines += [f"- {r['name']}: `{r['command']}`" for r in doc["trials"]]
    return "\n".join(lines) + "\n"


def evaluate_run(run: Path) -> tuple[int, float, dict]:
    """(recorded eval size, top-1 there, {size: top-1}) of the run's final weights, fp32."""
    import torch

    from swiftlearn.data import load_cached
    from swiftlearn.train import evaluate, load_trained

    config = json.loads((run / "config.json").read_text())
    history = json.loads((run / "history.json").read_text())
    size = next(r["eval_size"] for r in reversed(history) if "eval_size" in r)
    weights = run / "final_fp16.pt"
    model = load_trained(weights if weights.is_file() else run / "last.pt")
    val = load_cached(config["data"], "val", config["cache_size"], cache_dir=config["cache_dir"],
                      progress=False)
    at = {}
    with torch.inference_mode():
        for s in sorted({size, *EXTRA_SIZES}):
            at[str(s)] = evaluate(model, val, s, amp="off", channels_last=False)["top1"]
    return size, at[str(size)], at


def record(name: str, change: str, run: Path, command: str, wall_s: float) -> dict:
    size, top1, at = evaluate_run(run)
    config = json.loads((run / "config.json").read_text())
    history = json.loads((run / "history.json").read_text())
    row = {"name": name, "change": change, "command": command, "run": str(run),
           "epochs": history[-1]["epoch"], "steps": history[-1]["step"],
           "wall_s": wall_s, "train_wall_s": history[-1]["wall_time_s"],
           "load_end": os.getloadavg()[0], "cpu": _cpu(), "eval_size": size, "top1": top1,
           "train_log_top1": history[-1].get("val_top1"), "top1_at": at, "config": config,
           "images_per_s": {str(r["img_size"]): r["images_per_s"] for r in history},
           "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    doc = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"trials": []}
    doc["trials"] = [r for r in doc["trials"] if r["name"] != name] + [row]
    _write(doc)
    print(f"{name}: top-1 {top1:.2f} % at {size} px, {wall_s / 60:.1f} min wall "
          f"(load {row['load_end']:.1f}); {RESULTS}")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (or resume) a trial, then record it")
    r.add_argument("name")
    r.add_argument("change")
    r.add_argument("--runs", type=Path, default=Path("/work/runs/trials"))
    r.add_argument("--data", default=os.environ.get("SWIFTLEARN_DATA"))
    r.add_argument("--cache-dir", default="/work/runs/cache")
    r.add_argument("--torchrun", type=int, default=0, metavar="N",
                   help="launch N data-parallel processes with torchrun --standalone")
    r.add_argument("train_args", nargs=argparse.REMAINDER)
    c = sub.add_parser("record", help="record a finished run started by hand")
    c.add_argument("name")
    c.add_argument("change")
    c.add_argument("--run", type=Path, required=True)
    c.add_argument("--command", required=True)
    c.add_argument("--wall-s", type=float, required=True)
    sub.add_parser("table", help="rewrite the markdown table from the JSON")
    a = p.parse_args(argv)
    if a.cmd == "table":
        _write(json.loads(RESULTS.read_text()))
        return 0
    if a.cmd == "record":
        record(a.name, a.change, a.run, a.command, a.wall_s)
        return 0
    if not a.data:
        p.error("--data (or SWIFTLEARN_DATA) is needed: the Imagenette root")
    extra = [x for x in a.train_args if x != "--"]
    out = a.runs / a.name
    cmd = ["swiftlearn", "train", *extra, "--data", a.data, "--out", str(out),
           "--cache-dir", a.cache_dir, "--quiet"]
    resume = ["--resume", str(out)] if (out / "last.pt").is_file() else []
    bindir = Path(sys.executable).parent
    if a.torchrun:
        cmd = ["torchrun", "--standalone", f"--nproc-per-node={a.torchrun}", "-m",
               "swiftlearn.train", "train", *cmd[2:]]
        exe = [str(bindir / "torchrun"), *cmd[1:], *resume]
    else:
        exe = [str(bindir / "swiftlearn"), *cmd[1:], *resume]
    t0 = time.perf_counter()
    subprocess.run(exe, check=True)
    wall = time.perf_counter() - t0
    if resume:  # the first session's time is in the run's own clock
        wall = json.loads((out / "history.json").read_text())[-1]["wall_time_s"]
    record(a.name, a.change, out, shlex.join(cmd), wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
