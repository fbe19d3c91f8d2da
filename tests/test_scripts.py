"""scripts/ablations.py: the grid's order and what one finished run's result file holds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from swiftlearn.data import list_samples, synthetic_imagenette
from swiftlearn.stats import unpack_correct
from swiftlearn.train import TrainConfig, fit

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_grid_runs_every_variants_first_seed_before_any_second():
    ab = _load("ablations")
    jobs = ab.grid()
    assert len(jobs) == 15
    first = [v for v, s in jobs[:len(ab.VARIANTS)]]
    assert first == list(ab.VARIANTS) and {s for _, s in jobs[:len(ab.VARIANTS)]} == {0}
    assert jobs[-1] == ("additive-all", 2)
    assert ab.grid(["none", "fastformer"]) == [("none", 0), ("fastformer", 0), ("none", 1),
                                                ("fastformer", 1)]


def test_a_collected_run_holds_its_command_and_every_validation_images_outcome(tmp_path):
    ab = _load("ablations")
    root = synthetic_imagenette(tmp_path / "root", per_class=2, size=48)
    run = tmp_path / "runs" / "none-s0"
    fit(TrainConfig(data=str(root), out=str(run), epochs=1, batch_size=8, img_size=32,
                    cache_size=40, cache_dir=str(tmp_path / "cache"), warmup_epochs=0.5,
                    threads=1, mixer="none", eval_size=32))
    cmd = ab.command("none", 0, str(root), tmp_path / "runs", None)
    r = ab.collect("none", 0, cmd, run, tmp_path / "results", str(root), str(tmp_path / "cache"))
    saved = json.loads((tmp_path / "results" / "none-s0.json").read_text())
    assert saved["command"] == r["command"] and "--mixer none" in saved["command"]
    n = len(list_samples(root, "val")[0])
    images = saved["val_images"]
    correct = unpack_correct(images["correct"], images["n"])
    assert images["n"] == n and correct.dtype == bool
    assert np.isclose(correct.mean() * 100, images["plain_fp32_top1"])
    assert not list((tmp_path / "results").glob(".*.tmp"))
