"""scripts/ablations.py: the grid's order and what one finished run's result file holds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from swiftlearn.data import list_samples, synthetic_imagenette
from swiftlearn.stats import unpack_correct
from swiftlearn.train import TrainConfig, fit
from swiftlearn.utils import amp_dtype, cpu_kind

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_grid_runs_every_variants_first_seed_before_any_second():
    ab = _load("ablations")
    jobs = ab.grid()
    n = len(ab.VARIANTS)
    assert len(jobs) == 3 * n  # three seeds of every variant
    for seed in range(3):  # seed by seed, each time in the table's order
        assert jobs[seed * n:(seed + 1) * n] == [(v, seed) for v in ab.VARIANTS]
    assert ab.grid(["none", "fastformer"]) == [("none", 0), ("fastformer", 0), ("none", 1),
                                                ("fastformer", 1), ("none", 2), ("fastformer", 2)]


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
    # what autocast trained in here: seeds from different CPU kinds differ in it too
    expected = "bf16" if amp_dtype("auto", "cpu") == torch.bfloat16 else "fp32"
    assert saved["train_precision"] == expected and saved["cpu"] == cpu_kind()["label"]


def test_a_committed_result_is_not_trained_again_when_its_run_folder_is_gone(tmp_path,
                                                                             monkeypatch,
                                                                             capsys):
    ab = _load("ablations")
    results = tmp_path / "results"
    results.mkdir()
    (results / "none-s0.json").write_text("{}")
    started = []
    monkeypatch.setattr(ab.subprocess, "run", lambda *a, **k: started.append(a))
    monkeypatch.setattr(ab, "collect", lambda *a, **k: started.append("collect") or
                        {"val_top1": 50.0, "eval_size": 112, "wall_time_s": 60.0})
    ab.main(["--data", str(tmp_path), "--runs", str(tmp_path / "gone"), "--results",
             str(results), "--only", "none"])
    # seed 0 is skipped without a run folder; only seeds 1 and 2 start (and are collected)
    seeds = [a[0][a[0].index("--seed") + 1] for a in started if a != "collect"]
    assert seeds == ["1", "2"] and started.count("collect") == 2
    assert "none seed 0: done" in capsys.readouterr().out
    assert (results / "none-s0.json").read_text() == "{}"
