"""swiftlearn.train: config, fit, exact resume, evaluation, export, CLI, DDP, throughput."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from swiftlearn import create_model
from swiftlearn import train as T
from swiftlearn.data import CachedImages, synthetic_imagenette
from swiftlearn.train import cli as train_cli
from swiftlearn.train.config import parse_schedule
from swiftlearn.train.step import classification_loss, lr_factor
from swiftlearn.train.threads import ThreadPicker


def tiny_data(n: int = 40, classes: int = 4, size: int = 40, seed: int = 0) -> CachedImages:
    """Random uint8 images whose mean colour depends on the class (learnable, a little)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 128, (n, 3, size, size), generator=g)
    images[:, 0] += (labels * 127 // max(1, classes - 1))[:, None, None]
    return CachedImages(images.to(torch.uint8), labels, [f"class{i}" for i in range(classes)])


def tiny_config(out, **kwargs) -> T.TrainConfig:
    base = dict(out=str(out), epochs=2, batch_size=8, img_size=32, warmup_epochs=0.5,
                ema_decay=0.9, threads=1)
    return T.TrainConfig(**{**base, **kwargs})


def _equal_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# --- config ---------------------------------------------------------------------------------------

def test_config_validation_sizes_and_round_trip():
    c = T.TrainConfig(img_size=160, resize_schedule=[(0, 112), (10, 128)])
    assert [c.size_at(e) for e in (0, 9, 10, 30)] == [112, 112, 128, 128]
    assert T.TrainConfig(img_size=160).size_at(5) == 160
    budget = T.TrainConfig(time_budget_min=10, resize_schedule=[[0, 96], [50, 128]])
    assert budget.size_at(99, 0.49) == 96 and budget.size_at(0, 0.5) == 128
    saved = dataclasses.asdict(c)
    assert T.TrainConfig.from_dict(json.loads(json.dumps(saved))) == c
    assert saved["resize_schedule"] == [[0, 112], [10, 128]]
    for bad in (dict(epochs=0), dict(batch_size=1), dict(amp="fp8"), dict(noise=3),
                dict(img_size=16), dict(resize_schedule=[[5, 64], [0, 96]]), dict(ema_decay=1)):
        with pytest.raises(ValueError, match="TrainConfig"):
            T.TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        T.TrainConfig.from_dict({"epochs": 1, "learning_rate": 1})


def test_lr_schedule_warmup_then_cosine():
    f = lr_factor(warmup_steps=4, total_steps=20, min_ratio=0.01)
    values = [f(s) for s in range(21)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0] and values[4] == 1.0
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    assert values[20] == pytest.approx(0.01)


def test_lr_schedule_linear_decay_is_a_straight_line_to_min_lr():
    f = lr_factor(warmup_steps=4, total_steps=20, min_ratio=0.0, decay="linear")
    values = [f(s) for s in range(21)]
    assert values[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    steps = [a - b for a, b in zip(values[4:], values[5:])]
    assert steps == pytest.approx([1 / 16] * 16) and values[20] == 0.0
    cos = lr_factor(warmup_steps=4, total_steps=20, min_ratio=0.0)
    assert cos(12) == pytest.approx(0.5) == f(12) and cos(8) > f(8) and cos(16) < f(16)
    with pytest.raises(ValueError, match="lr_decay must be cosine or linear"):
        T.TrainConfig(lr_decay="step")


# --- losses and evaluation ------------------------------------------------------------------------

def test_loss_on_both_heads_and_hard_distillation():
    y = torch.tensor([0, 1, 2])
    head, dist = torch.randn(3, 4), torch.randn(3, 4)
    ce = nn.functional.cross_entropy
    assert classification_loss((head, dist), y, 0.0) == pytest.approx(float(0.5 * (ce(head, y)
                                                                       + ce(dist, y))))
    teacher = torch.tensor([3, 3, 3])
    assert classification_loss((head, dist), y, 0.1, teacher) == pytest.approx(float(
        0.5 * (ce(head, y, label_smoothing=0.1) + ce(dist, teacher, label_smoothing=0.1))))
    assert classification_loss(head, y, 0.0) == pytest.approx(float(ce(head, y)))


def test_loss_on_a_mixed_batch_weights_both_label_sets():
    y = torch.tensor([0, 1, 2, 3])
    perm = torch.tensor([3, 2, 1, 0])
    head, dist = torch.randn(4, 4), torch.randn(4, 4)
    ce = nn.functional.cross_entropy
    mixed = 0.7 * ce(head, y, label_smoothing=0.1) + 0.3 * ce(head, y[perm], label_smoothing=0.1)
    assert classification_loss(head, y, 0.1, perm=perm, lam=0.7) == pytest.approx(float(mixed))
    mixed_dist = 0.7 * ce(dist, y) + 0.3 * ce(dist, y[perm])
    assert classification_loss((head, dist), y, 0.0, perm=perm, lam=0.7) == pytest.approx(float(
        0.5 * (0.7 * ce(head, y) + 0.3 * ce(head, y[perm]) + mixed_dist)))
    teacher = torch.tensor([1, 1, 1, 1])  # the teacher labels the mixed image as a whole
    assert classification_loss((head, dist), y, 0.0, teacher, perm, 0.7) == pytest.approx(float(
        0.5 * (0.7 * ce(head, y) + 0.3 * ce(head, y[perm]) + ce(dist, teacher))))
    with pytest.raises(ValueError, match="mix_prob"):
        T.TrainConfig(mixup=0.2, mix_prob=1.5)


class _Oracle(nn.Module):
    """Predicts the class written in pixel [0, 0, 0], except that class 2 is called class 1."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        label = x[:, 0, 0, 0].round().long()
        label = torch.where(label == 2, 1, label)
        return nn.functional.one_hot(label, 4).float() * 10 + torch.arange(4) * 0.1


def test_evaluate_top1_top5_per_class_confusion():
    y = torch.tensor([0, 1, 2, 3, 2, 0])
    x = y.float()[:, None, None, None].expand(-1, 3, 4, 4)
    m = T.evaluate(_Oracle(), [(x[:3], y[:3]), (x[3:], y[3:])], channels_last=False, amp="off",
                   classes=list("abcd"))
    assert m["n"] == 6 and m["top1"] == pytest.approx(4 / 6 * 100)
    assert m["top5"] == 100.0
    assert m["per_class"] == [100.0, 100.0, 0.0, 100.0]
    assert m["confusion"][2] == [0, 2, 0, 0] and m["classes"] == list("abcd")
    with pytest.raises(ValueError, match="no data"):
        T.evaluate(_Oracle(), [], amp="off")


def test_evaluate_cached_images():
    model = create_model("swiftformer_xs", num_classes=4).eval()
    m = T.evaluate(model, tiny_data(12), 32, batch_size=5)
    assert m["n"] == 12 and len(m["confusion"]) == 4 and m["classes"][0] == "class0"
    assert 0 <= m["top1"] <= m["top5"] <= 100


# --- fit, history, callback, export ------------------------------------------------------

def test_fit_writes_history_checkpoint_and_weights(tmp_path):
    events = []
    cfg = tiny_config(tmp_path / "run", resize_schedule=[[0, 32], [1, 40]])
    data = tiny_data()
    result = T.fit(cfg, train_data=data, val_data=data, callback=events.append, progress=False)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert any(e["event"] == "step" and "loss" in e for e in events)
    assert [h["img_size"] for h in result.history] == [32, 40]
    run = tmp_path / "run"
    assert json.loads((run / "history.json").read_text()) == result.history
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "val_top1" in rows[0]
    assert json.loads((run / "config.json").read_text())["img_size"] == 32
    assert "epoch 2/2" in (run / "train.log").read_text()
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert {"model", "ema", "optimizer", "scheduler", "scaler", "rng", "epoch", "step_in_epoch",
            "config", "classes"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["finished"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files
    # the exported weights: fp16 EMA, plain dict, loadable by load_trained and create_model
    weights = torch.load(run / "final_fp16.pt", weights_only=True)
    assert weights["source"] == "ema" and weights["classes"] == data.classes
    assert weights["model"]["head.weight"].dtype == torch.float16
    loaded = T.load_trained(run / "final_fp16.pt")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), result.ema(x), atol=2e-2, rtol=2e-2)
    assert loaded.classes == data.classes
    from swiftlearn import create_model

    other = create_model("swiftformer_xs", num_classes=4, checkpoint=run / "final_fp16.pt")
    torch.testing.assert_close(other(x), loaded(x), atol=1e-5, rtol=1e-5)
    # a finished run resumed does nothing
    again = T.fit(cfg, train_data=data, val_data=data, resume=True, progress=False)
    assert again.history == result.history


@pytest.mark.parametrize("mixer,stages", [("fastformer", [3]), ("mhsa", [2, 3]),
                                           ("none", [0, 1, 2, 3]), ("separable", [3])])
def test_a_checkpoint_records_its_mixer_and_rebuilds_the_same_network(tmp_path, mixer, stages):
    from swiftlearn.checkpoints import read_checkpoint

    data = tiny_data(16)
    cfg = tiny_config(tmp_path, epochs=1, mixer=mixer, mixer_stages=stages,
                      formulation="softmax")
    result = T.fit(cfg, train_data=data, progress=False)
    assert result.model.mixer == mixer and list(result.model.mixer_stages) == stages
    for name in ("final_fp16.pt", "last.pt"):
        ckpt = read_checkpoint(tmp_path / name)
        assert ckpt.arch["mixer"] == mixer and ckpt.formulation == "softmax"
        loaded = create_model("xs", checkpoint=tmp_path / name)  # strict load, no arguments
        assert loaded.arch() == result.model.arch()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(T.load_trained(tmp_path / "final_fp16.pt")(x), result.ema(x),
                               atol=2e-2, rtol=2e-2)


def test_fit_without_ema_and_with_a_teacher(tmp_path):
    teacher = create_model("swiftformer_xs", num_classes=4).eval()
    data = tiny_data(24)
    result = T.fit(tiny_config(tmp_path, epochs=1, ema_decay=0.0, amp="off",
                               channels_last=False, label_smoothing=0.0),
                   train_data=data, val_data=data, teacher=teacher, progress=False)
    assert result.ema is None and result.history[0]["eval_model"] == "model"
    assert torch.load(tmp_path / "final_fp16.pt", weights_only=True)["source"] == "model"


def test_resume_after_a_kill_mid_epoch_is_exact(tmp_path):
    data = tiny_data()
    # drop path: the global RNG matters; mixup/CutMix: their draws must be replayed too
    cfg = dict(checkpoint_every_steps=3, drop_path=0.1, mixup=0.2, cutmix=1.0, mix_prob=0.7)
    uninterrupted = T.fit(tiny_config(tmp_path / "a", **cfg), train_data=data, val_data=data,
                          progress=False)

    class Killed(Exception):
        pass

    def kill(event):
        if event["event"] == "step" and event["step"] == 7:  # epoch 2, after the step-6 save
            raise Killed

    with pytest.raises(Killed):
        T.fit(tiny_config(tmp_path / "b", **cfg), train_data=data, val_data=data, callback=kill,
              progress=False)
    ckpt = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (1, 1, 6)
    resumed = T.fit(tiny_config(tmp_path / "b", **cfg), train_data=data, val_data=data,
                    resume=True, progress=False)
    _equal_state(uninterrupted.model, resumed.model)
    _equal_state(uninterrupted.ema, resumed.ema)
    keep = ("epoch", "step", "train_loss", "train_top1", "val_top1", "val_loss", "lr")
    assert [{k: h[k] for k in keep} for h in resumed.history] == \
        [{k: h[k] for k in keep} for h in uninterrupted.history]


def test_resume_with_a_different_config_is_refused(tmp_path):
    data = tiny_data(16)
    T.fit(tiny_config(tmp_path, epochs=1), train_data=data, progress=False)
    with pytest.raises(ValueError, match=r"different config \(lr: checkpoint 0.002 != now 0.1"):
        T.fit(tiny_config(tmp_path, epochs=1, lr=0.1), train_data=data, resume=True,
              progress=False)
    # where things live and how often to save may change
    T.fit(tiny_config(tmp_path, epochs=1, threads=2, checkpoint_minutes=1), train_data=data,
          resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        T.fit(tiny_config(tmp_path), train_data=data, resume=tmp_path / "nope.pt",
              progress=False)


def test_time_budget_stops_and_resume_does_nothing(tmp_path):
    data = tiny_data(16)
    cfg = tiny_config(tmp_path, epochs=1000, time_budget_min=0.02, eval_every=1000)
    result = T.fit(cfg, train_data=data, val_data=data, progress=False)
    assert 1 <= len(result.history) < 1000 and "val_top1" in result.history[-1]
    assert result.history[-1]["lr"] <= cfg.lr
    assert torch.load(tmp_path / "last.pt", weights_only=False)["finished"]
    assert T.fit(cfg, train_data=data, resume=True, progress=False).history == result.history


def test_time_budget_ending_between_epochs_adds_no_empty_row(tmp_path):
    import time

    data = tiny_data(16)
    cfg = tiny_config(tmp_path, epochs=50, time_budget_min=0.01, eval_every=1000)

    def slow_first_epoch(event):  # spend the whole budget at the end of epoch 1
        if event["event"] == "epoch" and event["epoch"] == 1:
            time.sleep(0.7)

    result = T.fit(cfg, train_data=data, val_data=data, callback=slow_first_epoch,
                   progress=False)
    # epoch 2 never took a step: no row of zeros for it, and epoch 1's row got the validation
    assert [r["epoch"] for r in result.history] == [1]
    assert result.history[0]["epoch_steps"] == 2 and "val_top1" in result.history[0]
    assert torch.load(tmp_path / "last.pt", weights_only=False)["finished"]
    assert json.loads((tmp_path / "history.json").read_text()) == result.history


def test_auto_threads_picks_one_or_all(tmp_path):
    data = tiny_data(28, size=36)
    result = T.fit(tiny_config(tmp_path, epochs=1, batch_size=2, threads=-1, ema_decay=0.0),
                   train_data=data, progress=False)
    assert result.history[0]["threads"] in (1, torch.get_num_threads())


def test_thread_picker_follows_the_faster_setting():
    before = torch.get_num_threads()
    try:
        picker = ThreadPicker(4, steps=2, every=100)
        picker.new_epoch()
        picker.after_step(9.0)  # warm-up step: ignored

        def step(seconds_by_threads):
            picker.before_step()
            picker.after_step(seconds_by_threads[torch.get_num_threads()])

        for _ in range(4):  # probe: two steps on 1 thread, two on 4
            step({1: 1.0, 4: 3.0})
        assert torch.get_num_threads() == 1
        for _ in range(3):  # one thread got much slower (the load changed): probe again
            step({1: 2.0, 4: 0.5})
        for _ in range(4):
            step({1: 2.0, 4: 0.5})
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_too_few_images_for_a_batch(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        T.fit(tiny_config(tmp_path, batch_size=64), train_data=tiny_data(8), progress=False)


# --- CLI, throughput, DDP ----------------------------------------------------------------

def test_cli_train_resume_and_evaluate(tmp_path, capsys):
    from swiftlearn.cli import build_parser

    root = synthetic_imagenette(tmp_path / "root", per_class=2, size=40)
    out, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--data", str(root), "--cache-dir", str(cache), "--cache-size", "40", "--quiet"]
    assert train_cli.main(["train", *common, "--epochs", "1", "--batch-size", "10",
                           "--img-size", "32", "--out", str(out), "--threads", "1",
                           "--progressive", "0:32"]) == 0
    assert "final val top1" in capsys.readouterr().out
    assert train_cli.main(["train", "--resume", str(out), "--epochs", "3"]) == 1
    assert "epochs: checkpoint 1 != now 3" in capsys.readouterr().err
    assert train_cli.main(["evaluate", "--checkpoint", str(out / "final_fp16.pt"), "--quiet",
                   "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "parachute" in printed
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 20
    parser = build_parser()
    args = parser.parse_args(["train", "--epochs", "2", "--progressive", "0:96,5:128"])
    assert args.epochs == 2 and args.resize_schedule == [[0, 96], [5, 128]]
    assert parser.parse_args(["evaluate", "--checkpoint", "x.pt"]).func is train_cli._cmd_evaluate
    with pytest.raises(ValueError, match="EPOCH:SIZE"):
        parse_schedule("112,128")


_DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from swiftlearn.data import CachedImages
    from swiftlearn.train import TrainConfig, fit
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    data = CachedImages(torch.randint(0, 256, (36, 3, 40, 40), dtype=torch.uint8, generator=g),
                        torch.arange(36) % 4, list("abcd"))
    out = sys.argv[1]
    result = fit(TrainConfig(out=out, epochs=2, batch_size=4, img_size=32, warmup_epochs=0.5,
                             ema_decay=0.9), train_data=data, val_data=data, progress=False)
    torch.save(result.model.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "world size 2" in log and log.count("epoch 2/2") == 1  # rank 0 logs alone
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert ckpt["global_step"] == 2 * 4  # 36 images / (2 ranks x 4) -> 4 steps per epoch
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["val_top1"] is not None
    a = torch.load(out / "rank0.pt")
    b = torch.load(out / "rank1.pt")
    params = [k for k in a if "running_" not in k and "num_batches" not in k]
    for k in params:  # DDP keeps the weights identical (BatchNorm statistics stay per rank)
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_short_run_on_real_imagenette(imagenette_root, tmp_path):
    cfg = T.TrainConfig(data=str(imagenette_root), out=str(tmp_path / "run"), epochs=1,
                        batch_size=10, img_size=64, cache_size=72, subset=3,
                        cache_dir=str(tmp_path / "cache"), threads=1)
    result = T.fit(cfg, progress=False)
    assert result.classes[0] == "tench"
    assert result.history[0]["val_top1"] is not None
    assert Path(result.out, "final_fp16.pt").is_file()


# --- failing early, one line each ------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (dict(eval_every=0), "eval_every must be >= 1"),
    (dict(eval_size=10), "eval_size must be 0"),
    (dict(subset=-1), "subset must be >= 0"),
    (dict(warmup_epochs=-5), "warmup_epochs must be >= 0"),
    (dict(threads=-7), "threads must be >= 1, or 0"),
    (dict(mixup=0.2, mix_prob=0), "mix_prob is 0"),
    (dict(cutmix=1.0, mix_prob=0), "mix_prob is 0"),
    (dict(checkpoint_minutes=0), "checkpoint_minutes must be > 0"),
    (dict(checkpoint_every_steps=-1), "checkpoint_every_steps must be >= 0"),
    (dict(drop_path=1.0), "drop_path must be in"),
    (dict(model="swiftformer_xxl"), "swiftformer_xxl"),
    (dict(teacher_model="resnet"), "resnet"),
])
def test_config_refuses_what_would_fail_late_or_silently(bad, message):
    with pytest.raises(ValueError, match=message) as e:
        T.TrainConfig(**bad)
    assert str(e.value).startswith("TrainConfig: ") and "\n" not in str(e.value)
    T.TrainConfig(mixup=0.0, mix_prob=0.0)  # no mixing asked for: mix_prob does not matter


def _hashes(folder: Path) -> dict:
    import hashlib

    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


def test_a_fresh_run_over_an_existing_one_is_refused_unless_overwrite(tmp_path):
    data = tiny_data(16)
    run = tmp_path / "run"
    T.fit(tiny_config(run, epochs=1), train_data=data, progress=False)
    before = _hashes(run)
    with pytest.raises(ValueError, match=r"already holds a run \(last.pt, config.json.*--resume"
                                         r".*--overwrite") as e:
        T.fit(tiny_config(run, epochs=1, lr=0.1), train_data=data, progress=False)
    assert "\n" not in str(e.value)
    assert _hashes(run) == before  # not a byte changed, train.log included
    other = tmp_path / "other"  # continuing run's checkpoint in another run's folder
    T.fit(tiny_config(other, epochs=1, seed=1), train_data=data, progress=False)
    theirs = _hashes(other)
    with pytest.raises(ValueError, match="already holds another run"):
        T.fit(tiny_config(other, epochs=1), train_data=data, resume=run / "last.pt",
              progress=False)
    assert _hashes(other) == theirs
    with pytest.raises(ValueError, match="exclude each other"):
        T.fit(tiny_config(run, epochs=1), train_data=data, resume=True, overwrite=True,
              progress=False)
    result = T.fit(tiny_config(run, epochs=1, lr=0.1), train_data=data, overwrite=True,
                   progress=False)
    assert json.loads((run / "config.json").read_text())["lr"] == 0.1
    assert torch.load(run / "last.pt", weights_only=False)["config"]["lr"] == 0.1
    assert len(result.history) == 1
    assert "--overwrite: removed the previous run's last.pt" in (run / "train.log").read_text()


def test_a_run_that_fails_before_training_writes_nothing(tmp_path):
    run = tmp_path / "new"
    with pytest.raises(ValueError, match="fewer than one batch"):
        T.fit(tiny_config(run, batch_size=64), train_data=tiny_data(8), progress=False)
    assert not run.exists()
    with pytest.raises(RuntimeError, match="not a checkpoint"):  # a broken teacher file
        (tmp_path / "teacher.pt").write_bytes(b"")
        T.fit(tiny_config(run, teacher=str(tmp_path / "teacher.pt")), train_data=tiny_data(16),
              progress=False)
    assert not run.exists()
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        T.fit(tiny_config(tmp_path / "file"), train_data=tiny_data(16), progress=False)
    assert (tmp_path / "file").read_text() == "mine"


def test_resuming_a_finished_run_writes_the_missing_final_files(tmp_path):
    data = tiny_data(16)
    cfg = tiny_config(tmp_path, epochs=1)
    first = T.fit(cfg, train_data=data, progress=False)
    final = (tmp_path / "final_fp16.pt").read_bytes()
    for name in ("final_fp16.pt", "history.json", "history.csv"):  # as if killed before them
        (tmp_path / name).unlink()
    again = T.fit(cfg, train_data=data, resume=True, progress=False)
    assert again.history == first.history
    assert json.loads((tmp_path / "history.json").read_text()) == first.history
    assert (tmp_path / "history.csv").is_file()
    weights = torch.load(tmp_path / "final_fp16.pt", weights_only=True)
    assert set(weights) == set(torch.load(io.BytesIO(final), weights_only=True))
    assert "wrote the missing final_fp16.pt, history.json, history.csv" in \
        (tmp_path / "train.log").read_text()
    T.fit(cfg, train_data=data, resume=True, progress=False)
    assert (tmp_path / "train.log").read_text().rstrip().endswith("nothing to do")


def test_cli_train_refuses_an_existing_run_and_broken_checkpoints(tmp_path, capsys):
    root = synthetic_imagenette(tmp_path / "root", per_class=2, size=40)
    out, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--data", str(root), "--cache-dir", str(cache), "--cache-size", "40", "--quiet",
              "--epochs", "1", "--batch-size", "10", "--img-size", "32", "--threads", "1"]
    assert train_cli.main(["train", *common, "--out", str(out)]) == 0
    capsys.readouterr()
    before = _hashes(out)
    assert train_cli.main(["train", *common, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "--overwrite" in err
    assert _hashes(out) == before
    # bad data: refused before anything is written, config.json of the run included
    assert train_cli.main(["train", *common[2:], "--data", str(tmp_path / "nodata"),
                           "--out", str(tmp_path / "new")]) == 1
    assert "nodata is not" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert train_cli.main(["train", "--resume", str(out), "--data", str(tmp_path / "nodata"),
                           "--quiet"]) == 1
    capsys.readouterr()
    assert _hashes(out) == before
    assert train_cli.main(["train", "--resume", str(out), "--overwrite"]) == 1
    assert "choose one" in capsys.readouterr().err
    assert train_cli.main(["train", *common, "--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    for content in (b"", b"\x00garbage" * 10):
        (tmp_path / "broken.pt").write_bytes(content)
        assert train_cli.main(["train", "--resume", str(tmp_path / "broken.pt")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a checkpoint" in err and "weights_only" not in err
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert train_cli.main(["train", "--resume", str(tmp_path / "list.pt")]) == 1
    assert "not a swiftlearn training checkpoint (it holds a list)" in capsys.readouterr().err
    assert train_cli.main(["train", *common, "--out", str(tmp_path / "t"), "--teacher",
                           str(tmp_path / "list.pt")]) == 1
    assert "--teacher" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_cli_train_refuses_options_the_run_would_ignore(monkeypatch, capsys):
    from types import SimpleNamespace

    from swiftlearn.train.recipes import RECIPES

    # recipes of our own: the real ones' values may change
    monkeypatch.setitem(RECIPES, "quick", dict(epochs=3, img_size=96, mixup=0.0, cutmix=0.0,
                                               resize_schedule=[[0, 64], [2, 96]]))
    monkeypatch.setitem(RECIPES, "long", dict(epochs=100, time_budget_min=60.0,
                                              resize_schedule=[[0, 96], [50, 128]]))
    ran = []
    monkeypatch.setattr(train_cli, "fit", lambda config, **kw: ran.append(config) or
                        SimpleNamespace(history=[], out=config.out))

    def refused(*argv) -> str:
        assert train_cli.main(["train", *argv]) == 1 and not ran
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("python -m swiftlearn.train train: error:")
        return err

    assert "--formulation softmax has no effect with --mixer mhsa" in refused(
        "--mixer", "mhsa", "--formulation", "softmax")
    err = refused("--recipe", "quick", "--img-size", "32")
    assert "--img-size 32 has no effect: the quick recipe's progressive resizing (0:64,2:96)" in err
    assert "--progressive 0:32" in err
    assert "--mix-prob 0.5 has no effect" in refused("--recipe", "quick", "--mix-prob", "0.5")
    assert "without --teacher" in refused("--teacher-model", "swiftformer_s")
    assert "--epochs does not count epochs under the long recipe's 60-minute time budget" in \
        refused("--recipe", "long", "--epochs", "10")
    assert "--progressive does not count epochs" in refused("--recipe", "long", "--progressive",
                                                            "0:96,10:128")
    assert "percentages" in refused("--recipe", "quick", "--time-budget", "10")
    # what the flags say is what runs
    for argv in (["--mixer", "fastformer", "--formulation", "softmax"],
                 ["--recipe", "quick", "--img-size", "32", "--progressive", ""],
                 ["--recipe", "quick", "--img-size", "32", "--progressive", "0:32"],
                 ["--recipe", "long", "--epochs", "10", "--time-budget", "0"],
                 ["--recipe", "quick", "--time-budget", "10", "--progressive", "0:64,50:96"]):
        assert train_cli.main(["train", *argv]) == 0
    assert [c.size_at(0) for c in ran[1:3]] == [32, 32] and ran[3].time_budget_min == 0


def test_cli_evaluate_checks_json_and_checkpoint_before_evaluating(tmp_path, capsys,
                                                                  monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("evaluated although the command was bound to fail")

    monkeypatch.setattr(train_cli, "evaluate", never)
    monkeypatch.setattr(train_cli, "load_cached", never)
    weights = tmp_path / "w.pt"
    torch.save({"model": create_model("xs", num_classes=4).state_dict(),
                "config": {"model": "swiftformer_xs"}}, weights)
    assert train_cli.main(["evaluate", "--checkpoint", str(weights), "--json",
                           str(tmp_path)]) == 1
    assert "--json" in capsys.readouterr().err
    for content in (b"", b"PK\x03\x04 truncated zip"):
        (tmp_path / "broken.pt").write_bytes(content)
        assert train_cli.main(["evaluate", "--checkpoint", str(tmp_path / "broken.pt")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a checkpoint" in err
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    assert train_cli.main(["evaluate", "--checkpoint", str(tmp_path / "list.pt")]) == 1
    assert "holds no SwiftFormer weights" in capsys.readouterr().err


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    from swiftlearn.train import state

    path = tmp_path / "last.pt"
    state.save_checkpoint({"step": 1}, path)

    def full(obj, f):
        Path(f).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RuntimeError, match=r"could not write .*last.pt \(\[enforce fail.*free "
                                           r"some disk space") as e:
        state.save_checkpoint({"step": 2}, path)
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_resume_on_other_data_is_refused_and_inexact_thread_changes_are_said(tmp_path):
    data = tiny_data(16)
    cfg = tiny_config(tmp_path, epochs=2)

    def stop(event):
        if event["event"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.fit(cfg, train_data=data, callback=stop, progress=False)
    other = tiny_data(16, seed=1)  # same size, classes and labels; other pixels
    with pytest.raises(ValueError, match="other training data than it was trained on"):
        T.fit(cfg, train_data=other, resume=True, progress=False)
    T.fit(tiny_config(tmp_path, epochs=2, threads=2), train_data=data, resume=True,
          progress=False)
    assert "note: threads changed (1 -> 2), so the result will be close to, not bit-identical" \
        in (tmp_path / "train.log").read_text()


def test_cli_resume_of_a_run_killed_before_its_first_checkpoint_says_what_to_do(tmp_path,
                                                                                capsys):
    (tmp_path / "config.json").write_text("{}")
    assert train_cli.main(["train", "--resume", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stopped before its first checkpoint" in err and "--overwrite" in err


def test_a_run_stopped_before_its_first_checkpoint_may_be_started_again(tmp_path):
    data = tiny_data(16)
    cfg = tiny_config(tmp_path, epochs=1)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    with pytest.raises(ValueError, match=r"already holds a run \(config.json\)"):
        T.fit(tiny_config(tmp_path, epochs=1, lr=0.1), train_data=data, progress=False)
    T.fit(cfg, train_data=data, progress=False)  # the same command again: nothing is lost
    assert (tmp_path / "last.pt").is_file()


@pytest.mark.slow
def test_cli_processes_launches_its_own_data_parallel_workers(tmp_path):
    """`swiftlearn train --processes 2` is one command: it starts two workers (torchrun
    --standalone) that train one run together, and a resume of it does the same."""
    from swiftlearn.data import synthetic_imagenette

    root = synthetic_imagenette(tmp_path / "root", per_class=4, size=40)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "swiftlearn.train", "train", "--data", str(root), "--out",
           str(out), "--processes", "2", "--epochs", "1", "--batch-size", "4", "--img-size", "32",
           "--cache-size", "40", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in (out / "train.log").read_text()
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["config"]["processes"] == 2
    assert proc.stdout.count("final val top1") == 1  # rank 0 reports, the other is quiet
    # what a worker would refuse, the launcher refuses first: one line, no torchrun log
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds a run" in lines[0], proc.stderr
    # a worker that fails after the start (other images than the checkpoint's): the worker's
    # reason, then the launcher's last line, and no torchrun log
    other = synthetic_imagenette(tmp_path / "other", per_class=5, size=40)
    proc = subprocess.run([*cmd, "--resume", str(out), "--data", str(other)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "error: a training process of the 2 stopped" in lines[-1], proc.stderr
    assert any("other" in line or "data" in line for line in lines[:-1]), proc.stderr
    assert not any(" torch/distributed/" in line for line in lines), proc.stderr


def test_whitening_stem_init_decorrelates_the_first_convolution(tmp_path):
    """stem_init='whiten': the first convolution's outputs on the training images have unit
    variance and no correlation between patterns (a whitening transform), in +- pairs; a
    random init's are correlated. A resume keeps the trained stem."""
    from swiftlearn import create_model
    from swiftlearn.data import load_cached, resize_center, synthetic_imagenette
    from swiftlearn.train.stem import whiten_stem_

    root = synthetic_imagenette(tmp_path / "root", per_class=6, size=48)
    data = load_cached(root, "train", 48, cache_dir=tmp_path / "cache", progress=False)
    model = create_model("swiftformer_xs", num_classes=10)
    conv = model.patch_embed[0]

    def outputs(conv):
        x = resize_center(data.images, 48)
        with torch.no_grad():
            y = nn.functional.conv2d(x, conv.weight)  # no stride, no padding: every patch
        return y[:, :12].transpose(0, 1).reshape(12, -1)

    def largest_correlation(y):
        r = torch.corrcoef(y)
        return (r - torch.eye(len(r))).abs().max()

    before = outputs(conv)
    values = whiten_stem_(conv, data, 48, n_images=len(data))
    assert (values[:-1] >= values[1:]).all()  # strongest first
    after = outputs(conv)
    assert torch.allclose(torch.cov(after).diagonal(), torch.ones(12), atol=0.05)
    assert largest_correlation(after) < 0.05 < largest_correlation(before)
    assert torch.equal(conv.weight[12:], -conv.weight[:12]) and not conv.bias.any()
    with pytest.raises(ValueError, match="stem_init must be default or whiten"):
        T.TrainConfig(stem_init="pca")


def test_fit_in_process_says_that_processes_needs_the_command(tmp_path):
    T.fit(tiny_config(tmp_path / "run", epochs=1, processes=2), train_data=tiny_data(),
          progress=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "world size 1" in log and "only the command starts" in log
