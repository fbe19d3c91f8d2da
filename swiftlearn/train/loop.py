"""The training loop: :func:`fit` runs epochs of :func:`~swiftlearn.train.step.train_step`,
validates, records the history and checkpoints so that a killed run resumes exactly.

The loop's moving parts are explicit: the objects a step updates are a
:class:`~swiftlearn.train.step.Trainer`, where the run is (epoch, step, time, history) is a
:class:`~swiftlearn.train.state.RunState`, and :class:`_Run` holds the two with the data and
turns them into epochs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import load_trained, read_checkpoint
from ..data import CachedImages, batch_indices, find_root, load_cached
from ..model import build_model
from ..utils import QuietStop, atomic_write_json, check_writable, remove_stale_temporaries
from .config import TrainConfig
from .distributed import (
    broadcast_flag,
    broadcast_float,
    dist_info,
    gather_objects,
    maybe_init_distributed,
)
from .evaluate import evaluate, progress_bar
from .state import (
    RUN_FILES,
    EpochTotals,
    RunState,
    check_same_data,
    checkpoint_dict,
    data_fingerprint,
    export_weights,
    get_rng_state,
    read_resume,
    run_state_of,
    save_checkpoint,
    set_rng_state,
    write_history,
)
from .stem import whiten_stem_
from .step import DECAYS, batch_generator, build_trainer, timed_step
from .threads import ThreadPicker

__all__ = ["FitResult", "fit"]


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model (eval mode), its EMA, history, folder."""

    model: nn.Module
    ema: nn.Module | None
    history: list[dict]
    out: Path
    classes: list[str]


def fit(config: TrainConfig, *, resume: bool | str | os.PathLike = False,
        train_data: CachedImages | None = None, val_data: CachedImages | None = None,
        teacher: nn.Module | None = None, callback: Callable[[dict], None] | None = None,
        progress: bool = True, device: str | torch.device | None = None,
        overwrite: bool = False) -> FitResult:
    """Train ``config.model`` and return the result (see :mod:`swiftlearn.train` for the recipe).

    Args:
        config: the run's :class:`~swiftlearn.train.TrainConfig`.
        resume: ``True`` continues from ``<out>/last.pt`` when it exists (else starts fresh); a
            path resumes from that checkpoint. The saved config must equal ``config`` except for
            :data:`~swiftlearn.train.config.RESUMABLE_CHANGES`, else a ``ValueError`` lists the
            differences.
        train_data, val_data: cached splits (default: :func:`~swiftlearn.data.load_cached` of
            ``config.data`` at ``config.cache_size``; ``val_data=None`` with ``train_data`` given
            skips validation unless ``config.data`` is set).
        teacher: a teacher model for hard distillation (overrides ``config.teacher``).
        callback: called on rank 0 with a dict after every logged step (``{"event": "step",
            "step", "epoch", "loss", "lr"}``, every ~1% of an epoch) and epoch (``{"event":
            "epoch", **history_row}``), e.g. to draw live curves in a notebook. An exception
            raised by it stops training (the last checkpoint stays valid).
        progress: tqdm bars.
        device: default CUDA when available, else CPU.
        overwrite: start afresh in a folder that already holds a run, replacing its
            :data:`~swiftlearn.train.state.RUN_FILES`. Without it (and without ``resume``) such a
            folder is refused with a ``ValueError``, so that no run is lost by accident.

    Nothing is written to ``config.out`` until the options, the resume point, the teacher and
    the data have been checked: a run that fails before its first step leaves the folder as it
    was. A run that had finished is resumed by writing whatever final files are missing
    (``final_fp16.pt``, the history), e.g. after a kill between the last checkpoint and them.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    max_threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    started_dist = maybe_init_distributed(device)
    try:
        run = _Run(config, device, resume, train_data, val_data, teacher, callback, progress,
                   overwrite)
        return run.run()
    finally:
        torch.set_num_threads(max_threads)
        if started_dist:
            torch.distributed.destroy_process_group()


def _resume_path(resume, out: Path) -> Path | None:
    """The checkpoint to resume from, or None to start fresh."""
    if not resume:
        return None
    path = Path(resume) if not isinstance(resume, bool) else out / "last.pt"
    if path.is_dir():
        path = path / "last.pt"
    if path.is_file():
        return path
    if not isinstance(resume, bool):
        raise FileNotFoundError(f"no checkpoint to resume at {path}")
    return None


def _same_config_only(out: Path, config: TrainConfig) -> bool:
    """Whether ``out`` holds only the ``config.json`` of this very config: a run stopped before
    its first checkpoint, which the same command may start again (nothing would be lost)."""
    try:
        return json.loads((out / "config.json").read_text()) == asdict(config)
    except (OSError, ValueError):
        return False


def _check_run_folder(out: Path, resume, path: Path | None, overwrite: bool,
                      config: TrainConfig) -> None:
    """Refuse to start a fresh run over another one (unless ``overwrite``), before any work."""
    check_writable(out, "the run folder (--out)", kind="dir")
    if overwrite and resume:
        raise ValueError("overwrite and resume exclude each other: resume continues the run in "
                         f"{out}, overwrite replaces it; choose one")
    if overwrite or not out.is_dir():
        return
    held = [name for name in RUN_FILES if (out / name).exists()]
    if path is not None:  # continuing a run: only another run's folder is in danger
        if held and path.parent.resolve() != out.resolve():
            raise ValueError(f"{out} already holds another run ({', '.join(held)}); continuing "
                             f"{path} there would replace it: choose another --out")
        return
    if not held or (held == ["config.json"] and (resume or _same_config_only(out, config))):
        return  # empty, or a run killed before its first checkpoint: nothing trained to lose
    if resume:
        raise ValueError(f"{out} holds {', '.join(held)} but no last.pt to resume from; replace "
                         "that run with --overwrite (fit(..., overwrite=True)) or choose "
                         "another --out")
    raise ValueError(
        f"{out} already holds a run ({', '.join(held)}); continue it with --resume "
        "(fit(..., resume=True)), replace it with --overwrite (fit(..., overwrite=True)), "
        "or choose another --out")


def preflight(config: TrainConfig, resume=False, overwrite: bool = False) -> None:
    """The refusals a run makes before any work (run folder, teacher file, data root), for a
    launcher that starts the training processes itself: one message, before they start."""
    out = Path(config.out)
    path = _resume_path(resume, out)
    _check_run_folder(out, resume, path, overwrite, config)
    if path is not None:
        read_resume(path, config)  # the changes a resume may not make
    if config.teacher:
        _check_teacher(config.teacher)
    find_root(config.data)


def _inexact_resume(saved: dict, config: TrainConfig) -> str:
    """Why a resume with ``config`` cannot reproduce the uninterrupted run bit for bit ("" when
    it can): float sums depend on the number of threads that compute them."""
    before = saved.get("threads", 0)
    if config.threads != before:
        return f"threads changed ({before} -> {config.threads})"
    if config.threads == -1:
        return "threads=-1 picks the thread count by speed, step by step"
    if config.time_budget_min:
        return "time-budget runs follow the wall clock"
    return ""


def _check_teacher(path: str) -> None:
    """A ``--teacher`` file must exist and hold weights (read again once the classes are known)."""
    read_checkpoint(path, flag="--teacher").require_trained(f"--teacher {path}")


def _load_split(config: TrainConfig, split: str, progress: bool) -> CachedImages:
    data = load_cached(config.data, split, config.cache_size,
                       noise=config.noise if split == "train" else 0,
                       cache_dir=config.cache_dir, progress=progress)
    return data.subset(config.subset) if config.subset else data


class _Run:
    """One session of a run: set up (resume point, data, model, trainer), then epochs."""

    def __init__(self, config: TrainConfig, device: torch.device, resume, train_data, val_data,
                 teacher, callback, progress: bool, overwrite: bool = False):
        self.config, self.device, self.callback = config, device, callback
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.out = Path(config.out)
        self.max_threads = torch.get_num_threads()
        # 1. resume point and run folder: checked and read before anything is written
        path = _resume_path(resume, self.out)
        refusal = None
        if self.is_main:  # rank 0 decides for all: the others must not see its writes
            try:
                _check_run_folder(self.out, resume, path, overwrite, config)
            except ValueError as e:
                refusal = e
        if not broadcast_flag(refusal is None, self.world):
            raise refusal or QuietStop(f"rank 0 refused the run folder {self.out}")
        ckpt = read_resume(path, config) if path is not None else None
        if teacher is None and config.teacher:
            _check_teacher(config.teacher)
        # 2. data
        if train_data is None:
            train_data = _load_split(config, "train", self.progress)
            if val_data is None:
                val_data = _load_split(config, "val", self.progress)
        elif val_data is None and config.data:
            val_data = _load_split(config, "val", self.progress)
        self.train_data, self.val_data = train_data, val_data
        self.classes = list(train_data.classes)
        self.fingerprint = data_fingerprint(train_data)
        if ckpt is not None:
            check_same_data(ckpt, self.fingerprint, path)
        # 3. model, teacher, optimizer, schedule, EMA
        torch.manual_seed(config.seed)
        model = build_model(config.model, num_classes=len(self.classes),
                             drop_path_rate=config.drop_path, **config.arch()).to(device)
        if config.stem_init == "whiten" and ckpt is None:  # a resume restores the trained stem
            whiten_stem_(model.patch_embed[0], train_data, config.size_at(0), seed=config.seed)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if teacher is None and config.teacher:
            teacher = load_trained(config.teacher, model=config.teacher_model,
                                   num_classes=len(self.classes)).to(device).eval()
        net = None
        if self.world > 1:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.steps_per_epoch = len(self.batches(0))
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_data)} training images are fewer than one batch of "
                             f"{config.batch_size} per process; lower batch_size")
        self.trainer = build_trainer(config, model, self.steps_per_epoch, device,
                                     teacher=teacher, net=net)
        self.warmup = max(1, round(config.warmup_epochs * self.steps_per_epoch))
        self.budget = config.time_budget_min * 60
        # 4. where the run is
        self.state = RunState()
        if ckpt is not None:
            self.restore(ckpt)
        # 5. everything checked: only now touch the run folder
        replaced: list[str] = []
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out, RUN_FILES)  # what killed sessions left
            if overwrite:
                replaced = [name for name in RUN_FILES if (self.out / name).exists()]
                for name in replaced:
                    (self.out / name).unlink()
            atomic_write_json(asdict(config), self.out / "config.json", indent=2)
        if replaced:
            self.log(f"--overwrite: removed the previous run's {', '.join(replaced)}")
        if ckpt is not None:
            self.log(f"resumed {path} at epoch {self.state.epoch + 1} step "
                     f"{self.state.step_in_epoch} ({self.state.global_step} steps, "
                     f"{self.state.elapsed / 60:.1f} min so far)")
            inexact = _inexact_resume(ckpt["config"], config)
            if inexact:
                self.log(f"note: {inexact}, so the result will be close to, not bit-identical "
                         "with, an uninterrupted run")
        else:
            self.log(f"training {config.model} on {len(train_data)} images ({len(self.classes)} "
                     f"classes), {config.epochs} epochs x {self.steps_per_epoch} steps, world "
                     f"size {self.world}, precision {self.trainer.dtype or torch.float32}, "
                     f"threads {torch.get_num_threads()}")
        if config.processes > 1 and self.world == 1:
            self.log(f"note: processes={config.processes} asks for {config.processes} worker "
                     "processes, which only the command starts (`swiftlearn train`, or "
                     "swiftlearn.train.train_command from Python); fit() trains in this one "
                     "process")

    # ---------------------------------------------------------------- state and bookkeeping

    def restore(self, ckpt: dict) -> None:
        t = self.trainer
        t.model.load_state_dict(ckpt["model"])
        if t.ema is not None:
            t.ema.load_state_dict(ckpt["ema"])
        t.optimizer.load_state_dict(ckpt["optimizer"])
        t.scheduler.load_state_dict(ckpt["scheduler"])
        t.scaler.load_state_dict(ckpt["scaler"])
        rng = ckpt["rng"]
        set_rng_state(rng[self.rank] if isinstance(rng, list) else rng)
        self.state = run_state_of(ckpt)

    def batches(self, epoch: int) -> list:
        c = self.config
        return batch_indices(len(self.train_data), c.batch_size, shuffle=True, seed=c.seed,
                             epoch=epoch, rank=self.rank, world_size=self.world, drop_last=True)

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)
            with open(self.out / "train.log", "a") as f:
                f.write(message + "\n")

    def wall(self) -> float:
        """Run wall time, summed over resumes."""
        return self.state.elapsed + (time.perf_counter() - self.t_session)

    def cpu(self) -> float:
        """This run's process CPU time, summed over resumes."""
        return self.state.cpu_time + (time.process_time() - self.cpu_session)

    def budget_used(self) -> float:
        """Share of the time budget spent (the same on every rank: rank 0's clock)."""
        if not self.budget:
            return 0.0
        return broadcast_float(self.wall() / self.budget, self.world)

    def save(self, epoch: int, step_in_epoch: int) -> None:
        rng = get_rng_state()
        if self.world > 1:  # every rank's RNG, gathered on every rank
            rng = gather_objects(rng, self.world)
        if not self.is_main:
            return
        at = dataclasses.replace(self.state, epoch=epoch, step_in_epoch=step_in_epoch,
                                 elapsed=self.wall(), cpu_time=self.cpu())
        save_checkpoint(checkpoint_dict(self.config, self.classes, self.trainer, at, rng,
                                        self.world, self.fingerprint), self.out / "last.pt")

    def validate(self, size: int) -> dict:
        """Validation metrics of the EMA weights when there are some, else of the model."""
        c, t = self.config, self.trainer
        eval_size = c.eval_size or size
        t_eval = time.perf_counter()
        m = evaluate(t.ema.module if t.ema is not None else t.model, self.val_data, eval_size,
                     batch_size=2 * c.batch_size, crop_pct=c.eval_crop_pct, amp=c.amp,
                     channels_last=c.channels_last)
        return {"val_top1": m["top1"], "val_top5": m["top5"], "val_loss": m["loss"],
                "eval_size": eval_size, "eval_model": "ema" if t.ema else "model",
                "eval_time_s": time.perf_counter() - t_eval}

    # ---------------------------------------------------------------- the loop

    def run(self) -> FitResult:
        s, t = self.state, self.trainer
        self.t_session, self.cpu_session = time.perf_counter(), time.process_time()
        self.last_save = time.perf_counter()
        self.picker = (ThreadPicker(self.max_threads)
                       if self.config.threads == -1 and self.max_threads > 1 else None)
        ran = False
        t.net.train()
        for epoch in range(s.epoch, self.config.epochs):
            if s.finished:
                break
            ran = True
            if not self.run_epoch(epoch):
                break
        if self.is_main:
            self.finish(ran)
        t.model.eval()
        return FitResult(t.model, t.ema.module if t.ema else None, s.history, self.out,
                         self.classes)

    def finish(self, ran: bool) -> None:
        """Write the final files: after training, or on resuming a finished run whatever is
        missing (a kill between the last checkpoint and them)."""
        final = self.out / "final_fp16.pt"
        missing = [p.name for p in (final, self.out / "history.json", self.out / "history.csv")
                   if not p.is_file()]
        if self.state.history:  # the checkpoint's history is the truth; rewriting is idempotent
            write_history(self.state.history, self.out)
        if ran or not final.is_file():
            export_weights(self.out / "last.pt", final)
        if not ran:
            wrote = f"; wrote the missing {', '.join(missing)}" if missing else "; nothing to do"
            self.log(f"{self.out} has already finished{wrote}")

    def set_budget_lr(self, used: float) -> None:
        """Time-budget runs: warm-up by steps, then the decay over the budget's share used."""
        c = self.config
        warm = min(1.0, (self.state.global_step + 1) / self.warmup)
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = c.lr * warm * DECAYS[c.lr_decay](used, c.min_lr / c.lr)

    def run_epoch(self, epoch: int) -> bool:
        """Train (the rest of) ``epoch``, then validate, record and save; False when the time
        budget ran out before the epoch's first step (nothing to record)."""
        c, s, t = self.config, self.state, self.trainer
        size = c.size_at(epoch, self.budget_used())
        batches = self.batches(epoch)
        first = s.step_in_epoch if epoch == s.epoch else 0
        if first == 0:
            s.totals = EpochTotals()
        t_epoch = time.perf_counter()
        bar = progress_bar(range(first, len(batches)), total=len(batches), initial=first,
                           disable=not self.progress, desc=f"epoch {epoch + 1} @{size}px")
        log_every = max(1, len(batches) // 100)
        if self.picker is not None:
            self.picker.new_epoch()
        for i in bar:
            if self.picker is not None:
                self.picker.before_step()
            if self.budget:
                used = self.budget_used()
                if used >= 1.0:
                    s.finished = True
                    break
                self.set_budget_lr(used)
            gen = batch_generator(c.seed, epoch, i, self.rank)
            result, data_time, step_time = timed_step(t, self.train_data, batches[i], size, c,
                                                      gen, self.device)
            s.global_step += 1
            tot = s.totals
            tot.loss += result.loss * result.seen
            tot.correct += result.correct
            tot.seen += result.seen
            tot.data_time += data_time
            tot.step_time += step_time
            if self.picker is not None:
                self.picker.after_step(step_time)
            if self.is_main and (i + 1) % log_every == 0:
                bar.set_postfix(loss=f"{result.loss:.3f}", refresh=False)
                if self.callback is not None:
                    self.callback({"event": "step", "epoch": epoch + (i + 1) / len(batches),
                                   "step": s.global_step, "loss": result.loss,
                                   "lr": t.optimizer.param_groups[0]["lr"]})
            self.maybe_save(epoch, i + 1)
        bar.close()
        if s.finished and s.totals.seen == 0:
            # the time budget ran out before this epoch's first step: nothing new to record.
            # The last row keeps its validation (or gets one now), and the run is saved finished.
            if s.history and self.val_data is not None and "val_top1" not in s.history[-1]:
                s.history[-1].update(self.validate(s.history[-1]["img_size"]))
            self.save(epoch, 0)
            if self.is_main:
                write_history(s.history, self.out)
            return False
        self.end_epoch(epoch, size, t_epoch, time.perf_counter() - t_epoch)
        return True

    def maybe_save(self, epoch: int, step_in_epoch: int) -> None:
        """Mid-epoch checkpoints: every ``checkpoint_every_steps`` steps and every
        ``checkpoint_minutes``."""
        c = self.config
        every = c.checkpoint_every_steps
        timed = time.perf_counter() - self.last_save > c.checkpoint_minutes * 60
        # every rank must take part in the RNG gather: agree on "timed"
        timed = broadcast_flag(timed, self.world)
        if (every and self.state.global_step % every == 0) or timed:
            self.save(epoch, step_in_epoch)
            self.last_save = time.perf_counter()

    def end_epoch(self, epoch: int, size: int, t_epoch: float, train_time: float) -> None:
        """Validate (when due), append the history row, save, log."""
        c, s, t = self.config, self.state, self.trainer
        tot = s.totals
        row = {"epoch": epoch + 1, "step": s.global_step, "img_size": size,
               "lr": t.optimizer.param_groups[0]["lr"],
               "epoch_steps": tot.seen // c.batch_size,
               "train_loss": tot.loss / max(1, tot.seen),
               "train_top1": tot.correct / max(1, tot.seen) * 100,
               "images_per_s": tot.seen * self.world / max(tot.step_time, 1e-9),
               "data_share": tot.data_time / max(tot.step_time, 1e-9),
               "threads": torch.get_num_threads()}
        s.finished = s.finished or epoch + 1 == c.epochs
        if self.val_data is not None and ((epoch + 1) % c.eval_every == 0 or s.finished):
            row.update(self.validate(size))
        row["epoch_time_s"] = time.perf_counter() - t_epoch
        row["train_time_s"] = train_time
        row["wall_time_s"] = self.wall()
        row["cpu_time_s"] = self.cpu()
        s.history.append(row)
        self.save(epoch + 1, 0)
        self.last_save = time.perf_counter()
        if not self.is_main:
            return
        write_history(s.history, self.out)
        val = (f" val top1 {row['val_top1']:.2f} top5 {row['val_top5']:.2f}"
               if "val_top1" in row else "")
        self.log(f"epoch {epoch + 1}/{c.epochs} @{size}px loss {row['train_loss']:.3f} "
                 f"train top1 {row['train_top1']:.1f}{val} | {row['images_per_s']:.0f} img/s, "
                 f"data {row['data_share'] * 100:.1f}%, {row['threads']} thr, "
                 f"epoch {row['epoch_time_s']:.0f} s, wall {row['wall_time_s'] / 60:.1f} min")
        if self.callback is not None:
            self.callback({"event": "epoch", **row})
