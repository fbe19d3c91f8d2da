"""Training SwiftFormer on Imagenette: a config, a loop, checkpoints that resume exactly.

``fit(TrainConfig(...))`` trains from the decoded uint8 cache (:func:`swiftlearn.data.load_cached`)
with batched tensor augmentation (random resized crop + flip), AdamW, linear warm-up then cosine
decay (per step), label smoothing on both heads, gradient clipping, optional EMA of the weights,
bf16 autocast on CPUs with bf16 instructions, ``channels_last``, optional progressive resizing,
optional mixup / CutMix (:func:`swiftlearn.data.mix_batch`), stochastic depth, and optional hard
distillation from a teacher (DeiT style: the distillation head learns the teacher's argmax).
Under ``torchrun`` the same code runs with DistributedDataParallel; rank 0 logs and writes
checkpoints.

A run folder holds ``last.pt`` (written atomically: temporary file, then ``os.replace``; model,
EMA, optimizer, scheduler, scaler, RNG states, epoch, step and the config), ``config.json``,
``history.json`` / ``history.csv`` (one row per epoch) and ``train.log``. ``fit(config,
resume=True)`` continues from ``last.pt`` and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import (
    CachedImages,
    batch_indices,
    load_cached,
    mix_batch,
    random_resized_crop_flip,
    resize_center,
)
from .model import create_model

__all__ = [
    "EMA",
    "FitResult",
    "TrainConfig",
    "add_cli",
    "benchmark_throughput",
    "evaluate",
    "export_weights",
    "fit",
    "load_trained",
]

CHECKPOINT_FORMAT = "swiftlearn-train-v1"
#: Config fields that may differ when resuming (where things live, how often to save).
RESUMABLE_CHANGES = ("data", "out", "cache_dir", "threads", "checkpoint_minutes",
                     "checkpoint_every_steps", "progress")


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint and in ``config.json``.

    Sizes are square image sides in pixels. ``batch_size`` is per process (the global batch under
    ``torchrun`` is ``batch_size * world_size``).
    """

    data: str | None = None  #: Imagenette root (None: ``find_root()``)
    out: str = "runs/swiftformer"  #: run folder (checkpoints, history, log)
    model: str = "swiftformer_xs"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3  #: peak learning rate (after warm-up)
    min_lr: float = 1e-5  #: end of the cosine
    weight_decay: float = 0.05  #: AdamW; not applied to norms, biases and layer scales
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1  #: on both heads
    clip_grad: float = 1.0  #: max gradient norm (0: off)
    ema_decay: float = 0.0  #: EMA of the weights (0: off; e.g. 0.999)
    amp: str = "auto"  #: "auto" (bf16 where the CPU/GPU supports it), "bf16", "fp16", "off"
    channels_last: bool = True
    img_size: int = 128  #: training size (when ``resize_schedule`` is empty or not yet started)
    #: progressive resizing: ``[[start_epoch, size], ...]`` (0-based epochs, ascending)
    resize_schedule: list = field(default_factory=list)
    scale_min: float = 0.35  #: random resized crop area range is ``(scale_min, 1)``
    cache_size: int = 176  #: decoded cache resolution
    cache_dir: str | None = None  #: default: ``~/.cache/swiftlearn/decoded``
    eval_size: int = 0  #: validation size (0: the current training size)
    eval_crop_pct: float = 1.0  #: centre-crop fraction before resizing for validation
    eval_every: int = 1  #: validate every n epochs (and always after the last)
    noise: int = 0  #: noisy-label percentage from noisy_imagenette.csv (0, 1, 5, 25, 50)
    subset: int = 0  #: images per class (0: all), for smoke runs
    drop_path: float = 0.0
    mixup: float = 0.0  #: mixup Beta alpha (0: off)
    cutmix: float = 0.0  #: CutMix Beta alpha (0: off); with both on, each mixed batch picks one
    mix_prob: float = 1.0  #: share of batches mixed when mixup or cutmix is on
    teacher: str | None = None  #: checkpoint for hard distillation (None: off)
    teacher_model: str = "swiftformer_xs"  #: the teacher's architecture
    seed: int = 0
    #: torch intra-op threads (0: torch's default; -1: pick one thread or the default by timing
    #: a few steps of each, again when steps slow down, every 200 steps and every epoch: on a
    #: shared, oversubscribed CPU one thread can be several times faster than two, whose every
    #: parallel op waits for both to be scheduled)
    threads: int = 0
    checkpoint_minutes: float = 10.0  #: also save mid-epoch this often
    checkpoint_every_steps: int = 0  #: also save every n steps (0: off; used by tests)
    #: stop after this many minutes of run wall time (training + validation, summed over
    #: resumes; 0: off). The cosine and the progressive resizing then follow the fraction of the
    #: budget used, not the step count (``resize_schedule`` starts are then percentages of the
    #: budget), and ``epochs`` is only an upper bound. Such runs resume, but not bit-exactly.
    time_budget_min: float = 0.0

    def __post_init__(self):
        self.resize_schedule = [[int(e), int(s)] for e, s in self.resize_schedule]
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs 2 samples)"),
            (self.lr > 0 and self.min_lr >= 0, "lr must be > 0 and min_lr >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (self.amp in ("auto", "bf16", "fp16", "off"),
             "amp must be 'auto', 'bf16', 'fp16' or 'off'"),
            (self.img_size >= 32 and all(s >= 32 for _, s in self.resize_schedule),
             "image sizes must be >= 32"),
            (self.resize_schedule == sorted(self.resize_schedule),
             "resize_schedule must be ascending by epoch"),
            (0 < self.scale_min <= 1, "scale_min must be in (0, 1]"),
            (self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0"),
            (0 <= self.mix_prob <= 1, "mix_prob must be in [0, 1]"),
            (self.cache_size >= 32, "cache_size must be >= 32"),
            (0 < self.eval_crop_pct <= 1, "eval_crop_pct must be in (0, 1]"),
            (self.noise in (0, 1, 5, 25, 50), "noise must be 0, 1, 5, 25 or 50"),
            (self.time_budget_min >= 0, "time_budget_min must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

    def size_at(self, epoch: int, budget_used: float = 0.0) -> int:
        """Training image size during (0-based) ``epoch`` (with a time budget: when
        ``budget_used``, a fraction in [0, 1], of it is spent)."""
        now = budget_used * 100 if self.time_budget_min else epoch
        size = self.img_size
        for start, s in self.resize_schedule:
            if now >= start:
                size = s
        return size

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a saved dict; unknown keys raise, missing keys take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**d)


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model (eval mode), its EMA, history, folder."""

    model: nn.Module
    ema: nn.Module | None
    history: list[dict]
    out: Path
    classes: list[str]


class EMA:
    """Exponential moving average of a model's parameters and buffers.

    ``ema = d * ema + (1 - d) * model`` after every step, with
    ``d = min(decay, (1 + n) / (10 + n))`` so the average is not dominated by the random initial
    weights during the first steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0
        self._ema = [t for t in self.module.state_dict().values()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = list(model.state_dict().values())
        floats = [(e, s) for e, s in zip(self._ema, src) if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [s.detach() for _, s in floats], 1.0 - d)
        for e, s in zip(self._ema, src):
            if not e.is_floating_point():
                e.copy_(s)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


# ---------------------------------------------------------------------------------------------
# Helpers: distributed, precision, RNG, checkpoints
# ---------------------------------------------------------------------------------------------

def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _maybe_init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    return True


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast
    is faster than fp32; elsewhere bf16 on CPU is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load(path: str | os.PathLike) -> dict:
    """``torch.load`` without unpickling code: tensors, containers and the numpy RNG state."""
    try:
        reconstruct = np._core.multiarray._reconstruct
    except AttributeError:  # numpy < 2
        reconstruct = np.core.multiarray._reconstruct
    allowed = [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _config_diff(saved: dict, config: TrainConfig) -> list[str]:
    old = asdict(TrainConfig.from_dict(saved))
    new = asdict(config)
    return [f"{k}: checkpoint {old[k]!r} != now {new[k]!r}" for k in new
            if k not in RESUMABLE_CHANGES and old[k] != new[k]]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # norms, biases and layer scales are 1-d: decaying them only hurts
        (no_decay if p.ndim <= 1 or "layer_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(warmup_steps: int, total_steps: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return _cosine(t, min_ratio)
    return f


def _cosine(fraction: float, min_ratio: float) -> float:
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))


def _batch_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    # augmentation randomness depends on (seed, epoch, step, rank) only: resuming reproduces it
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + step) * 64
                                         + rank)


def _loss(outputs, y: torch.Tensor, smoothing: float, teacher_labels=None, perm=None,
          lam: float = 1.0) -> torch.Tensor:
    """Cross-entropy on both heads (the distillation head against the teacher's labels when
    there is a teacher); for a mixed batch, ``lam`` of it against ``y`` and the rest against
    the partners' labels ``y[perm]``."""
    def ce(logits, target):
        loss = F.cross_entropy(logits.float(), target, label_smoothing=smoothing)
        if perm is not None:
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits.float(), target[perm],
                                                            label_smoothing=smoothing)
        return loss

    if isinstance(outputs, tuple):
        head, dist = outputs
        if teacher_labels is not None:  # the teacher saw the mixed image: its label is whole
            dist_loss = F.cross_entropy(dist.float(), teacher_labels, label_smoothing=smoothing)
        else:
            dist_loss = ce(dist, y)
        return 0.5 * (ce(head, y) + dist_loss)
    return ce(outputs, y)


def _logits(outputs) -> torch.Tensor:
    return (outputs[0] + outputs[1]) / 2 if isinstance(outputs, tuple) else outputs


def _progress(iterable, **kwargs):
    from tqdm.auto import tqdm

    if not sys.stderr.isatty():  # background runs: a line every minute, not a carriage-return
        kwargs.setdefault("mininterval", 60.0)
    return tqdm(iterable, **kwargs)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: nn.Module, data: CachedImages | Iterable, img_size: int = 224, *,
             batch_size: int = 128, crop_pct: float = 1.0, amp: str = "auto",
             channels_last: bool = True, classes: list[str] | None = None,
             progress: bool = False) -> dict:
    """Top-1, top-5, per-class accuracy and the confusion matrix of ``model`` on ``data``.

    Args:
        model: a classifier (put in eval mode here; a distilled SwiftFormer averages its heads).
        data: a :class:`~swiftlearn.data.CachedImages` (resized to ``img_size`` with
            ``crop_pct``), or any iterable of ``(images, labels)`` batches already normalised.
        img_size, batch_size, crop_pct: preprocessing of cached images.
        amp, channels_last: as in :class:`TrainConfig`.
        classes: class names (default: ``data.classes``).

    Under ``torch.distributed`` each rank evaluates its share and the counts are summed.

    Returns:
        ``{"top1", "top5", "loss", "n", "per_class": [...], "confusion": [[...]] (rows: true
        class, columns: predicted), "classes": [...]}``; accuracies in percent.
    """
    device = next(model.parameters()).device
    dtype = _amp_dtype(amp, device)
    rank, world = _dist_info()
    if isinstance(data, CachedImages):
        classes = classes or data.classes
        batches = ((resize_center(data.images[idx], img_size, crop_pct), data.labels[idx])
                   for idx in batch_indices(len(data), batch_size, shuffle=False, rank=rank,
                                            world_size=world))
    else:
        batches = iter(data)
    was_training = model.training
    model.eval()
    num_classes = len(classes) if classes else None
    confusion = None
    top5 = torch.zeros((), dtype=torch.long)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for x, y in _progress(batches, disable=not progress, desc="evaluate", leave=False):
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = _logits(model(x)).float()
        if confusion is None:
            num_classes = num_classes or logits.shape[1]
            confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
        pred = logits.argmax(1)
        confusion += torch.bincount((y * num_classes + pred).cpu(),
                                    minlength=num_classes ** 2).view(num_classes, num_classes)
        k = min(5, logits.shape[1])
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum().cpu()
    model.train(was_training)
    if confusion is None:
        raise ValueError("evaluate() got no data")
    if world > 1:
        for t in (confusion, top5, loss_sum):
            torch.distributed.all_reduce(t)
    n = int(confusion.sum())
    per_class = (confusion.diag().double() / confusion.sum(1).clamp(min=1) * 100).tolist()
    return {"top1": float(confusion.diag().sum()) / n * 100, "top5": float(top5) / n * 100,
            "loss": float(loss_sum) / n, "n": n, "per_class": per_class,
            "confusion": confusion.tolist(),
            "classes": list(classes) if classes else [str(i) for i in range(num_classes)]}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def _load_data(config: TrainConfig, split: str, progress: bool) -> CachedImages:
    data = load_cached(config.data, split, config.cache_size, noise=config.noise if split ==
                       "train" else 0, cache_dir=config.cache_dir, progress=progress)
    return data.subset(config.subset) if config.subset else data


def _load_teacher(config: TrainConfig, num_classes: int, device) -> nn.Module | None:
    if not config.teacher:
        return None
    teacher = load_trained(config.teacher, model=config.teacher_model, num_classes=num_classes)
    return teacher.to(device).eval()


def fit(config: TrainConfig, *, resume: bool | str | os.PathLike = False,
        train_data: CachedImages | None = None, val_data: CachedImages | None = None,
        teacher: nn.Module | None = None, callback: Callable[[dict], None] | None = None,
        progress: bool = True, device: str | torch.device | None = None) -> FitResult:
    """Train ``config.model`` and return the result (see the module docstring for the recipe).

    Args:
        config: the run's :class:`TrainConfig`.
        resume: ``True`` continues from ``<out>/last.pt`` when it exists (else starts fresh); a
            path resumes from that checkpoint. The saved config must equal ``config`` except for
            :data:`RESUMABLE_CHANGES`, else a ``ValueError`` lists the differences.
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
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    max_threads = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    started_dist = _maybe_init_distributed(device)
    rank, world = _dist_info()
    is_main = rank == 0
    out = Path(config.out)
    try:
        return _fit(config, out, device, rank, world, is_main, resume, train_data, val_data,
                    teacher, callback, progress)
    finally:
        torch.set_num_threads(max_threads)
        if started_dist:
            torch.distributed.destroy_process_group()


def _fit(config, out, device, rank, world, is_main, resume, train_data, val_data, teacher,
         callback, progress) -> FitResult:
    max_threads = torch.get_num_threads()
    # 1. resume point (read before anything is written)
    ckpt = None
    if resume:
        path = Path(resume) if not isinstance(resume, bool) else out / "last.pt"
        if path.is_dir():
            path = path / "last.pt"
        if path.is_file():
            ckpt = _load(path)
            if ckpt.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"{path} is not a swiftlearn training checkpoint")
            diff = _config_diff(ckpt["config"], config)
            if diff:
                raise ValueError(f"cannot resume {path} with a different config ("
                                 + "; ".join(diff) + "). Resume with the saved config "
                                 "(`TrainConfig.from_dict(torch.load(path)['config'])`) or start "
                                 "a new run in another folder.")
        elif not isinstance(resume, bool):
            raise FileNotFoundError(f"no checkpoint to resume at {path}")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(json.dumps(asdict(config), indent=2), out / "config.json")

    # 2. data
    if train_data is None:
        train_data = _load_data(config, "train", progress and is_main)
        if val_data is None:
            val_data = _load_data(config, "val", progress and is_main)
    elif val_data is None and config.data:
        val_data = _load_data(config, "val", progress and is_main)
    classes = list(train_data.classes)

    # 3. model, EMA, teacher, optimizer, schedule
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(classes),
                         drop_path_rate=config.drop_path).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, config.ema_decay) if config.ema_decay else None
    teacher = teacher if teacher is not None else _load_teacher(config, len(classes), device)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.999))
    steps_per_epoch = len(batch_indices(len(train_data), config.batch_size, shuffle=True,
                                        seed=config.seed, epoch=0, rank=rank, world_size=world,
                                        drop_last=True))
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_data)} training images are fewer than one batch of "
                         f"{config.batch_size} per process; lower batch_size")
    total = config.epochs * steps_per_epoch
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(warmup, total, config.min_lr / config.lr))
    dtype = _amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    start_epoch, start_step, global_step, elapsed, cpu_time, finished = 0, 0, 0, 0.0, 0.0, False
    history: list[dict] = []
    acc = {"loss": 0.0, "correct": 0, "seen": 0, "data_time": 0.0, "step_time": 0.0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"][rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
        start_epoch, start_step = ckpt["epoch"], ckpt["step_in_epoch"]
        global_step, elapsed, history = ckpt["global_step"], ckpt["elapsed"], ckpt["history"]
        acc = ckpt["epoch_accumulators"]
        cpu_time, finished = ckpt.get("cpu_time", 0.0), ckpt.get("finished", False)

    def log(message: str) -> None:
        if is_main:
            print(message, flush=True)
            with open(out / "train.log", "a") as f:
                f.write(message + "\n")

    def save(epoch: int, step_in_epoch: int) -> None:
        rng = _rng_state()
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        if not is_main:
            return
        _atomic_save({
            "format": CHECKPOINT_FORMAT, "config": asdict(config), "classes": classes,
            "model": model.state_dict(), "ema": ema.state_dict() if ema else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng, "epoch": epoch,
            "step_in_epoch": step_in_epoch, "global_step": global_step,
            "elapsed": wall(), "cpu_time": cpu(), "history": history,
            "epoch_accumulators": dict(acc), "world_size": world, "finished": finished,
        }, out / "last.pt")

    def wall() -> float:  # run wall time, summed over resumes
        return elapsed + (time.perf_counter() - t_session)

    def cpu() -> float:  # this process's CPU time, summed over resumes
        return cpu_time + (time.process_time() - cpu_session)

    budget = config.time_budget_min * 60

    def budget_used() -> float:  # the same on every rank (rank 0's clock)
        if not budget:
            return 0.0
        used = torch.tensor(wall() / budget, dtype=torch.float64)
        if world > 1:
            torch.distributed.broadcast(used, 0)
        return float(used)

    if ckpt is not None:
        log(f"resumed {out / 'last.pt'} at epoch {start_epoch + 1} step {start_step} "
            f"({global_step} steps, {elapsed / 60:.1f} min so far)")
    else:
        log(f"training {config.model} on {len(train_data)} images ({len(classes)} classes), "
            f"{config.epochs} epochs x {steps_per_epoch} steps, world size {world}, "
            f"precision {dtype or torch.float32}, threads {torch.get_num_threads()}")

    def validate(size: int) -> dict:  # the EMA weights when there are some
        eval_size = config.eval_size or size
        t_eval = time.perf_counter()
        m = evaluate(ema.module if ema is not None else model, val_data, eval_size,
                     batch_size=2 * config.batch_size, crop_pct=config.eval_crop_pct,
                     amp=config.amp, channels_last=config.channels_last)
        return {"val_top1": m["top1"], "val_top5": m["top5"], "val_loss": m["loss"],
                "eval_size": eval_size, "eval_model": "ema" if ema else "model",
                "eval_time_s": time.perf_counter() - t_eval}

    # 4. the loop
    t_session, cpu_session = time.perf_counter(), time.process_time()
    last_save = time.perf_counter()
    ran = False
    picker = _ThreadPicker(max_threads) if config.threads == -1 and max_threads > 1 else None
    net.train()
    for epoch in range(start_epoch, config.epochs):
        if finished:
            break
        ran = True
        size = config.size_at(epoch, budget_used())
        batches = batch_indices(len(train_data), config.batch_size, shuffle=True,
                                seed=config.seed, epoch=epoch, rank=rank, world_size=world,
                                drop_last=True)
        first = start_step if epoch == start_epoch else 0
        if first == 0:
            acc = {"loss": 0.0, "correct": 0, "seen": 0, "data_time": 0.0, "step_time": 0.0}
        t_epoch = time.perf_counter()
        bar = _progress(range(first, len(batches)), total=len(batches), initial=first,
                        disable=not (progress and is_main), desc=f"epoch {epoch + 1} @{size}px")
        log_every = max(1, len(batches) // 100)
        if picker is not None:
            picker.new_epoch()
        for i in bar:
            if picker is not None:
                picker.before_step()
            if budget:
                used = budget_used()
                if used >= 1.0:
                    finished = True
                    break
                warm = min(1.0, (global_step + 1) / warmup)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * warm * _cosine(used, config.min_lr / config.lr)
            t0 = time.perf_counter()
            idx = batches[i]
            gen = _batch_generator(config.seed, epoch, i, rank)
            x = random_resized_crop_flip(train_data.images[idx], size, (config.scale_min, 1.0),
                                         generator=gen)
            y = train_data.labels[idx].to(device)
            x = x.to(device)
            perm, lam = None, 1.0
            if config.mixup or config.cutmix:
                x, perm, lam = mix_batch(x, config.mixup, config.cutmix, config.mix_prob,
                                         generator=gen)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            t1 = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16,
                                enabled=dtype is not None):
                outputs = net(x)
                teacher_labels = None
                if teacher is not None:
                    with torch.no_grad():
                        teacher_labels = _logits(teacher(x)).argmax(1)
            loss = _loss(outputs, y, config.label_smoothing, teacher_labels, perm, lam)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            if not budget:
                scheduler.step()
            if ema is not None:
                ema.update(model)
            global_step += 1
            loss_value = loss.item()
            acc["loss"] += loss_value * len(y)
            # train accuracy against the label that dominates each (possibly mixed) image
            major = y if perm is None or lam >= 0.5 else y[perm]
            acc["correct"] += int((_logits(outputs).argmax(1) == major).sum())
            acc["seen"] += len(y)
            acc["data_time"] += t1 - t0
            acc["step_time"] += time.perf_counter() - t0
            if picker is not None:
                picker.after_step(time.perf_counter() - t0)
            if is_main and (i + 1) % log_every == 0:
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                if callback is not None:
                    callback({"event": "step", "epoch": epoch + (i + 1) / len(batches),
                              "step": global_step, "loss": loss_value,
                              "lr": optimizer.param_groups[0]["lr"]})
            every = config.checkpoint_every_steps
            timed = time.perf_counter() - last_save > config.checkpoint_minutes * 60
            if world > 1:  # every rank must take part in the RNG gather: agree on "timed"
                flag = torch.tensor(int(timed))
                torch.distributed.broadcast(flag, 0)
                timed = bool(flag)
            if (every and global_step % every == 0) or timed:
                save(epoch, i + 1)
                last_save = time.perf_counter()
        bar.close()
        train_time = time.perf_counter() - t_epoch

        # 5. end of epoch: validate, record, checkpoint
        if finished and acc["seen"] == 0:
            # the time budget ran out before this epoch's first step: nothing new to record.
            # The last row keeps its validation (or gets one now), and the run is saved finished.
            if history and val_data is not None and "val_top1" not in history[-1]:
                history[-1].update(validate(history[-1]["img_size"]))
            save(epoch, 0)
            if is_main:
                _write_history(history, out)
            break
        row = {"epoch": epoch + 1, "step": global_step, "img_size": size,
               "lr": optimizer.param_groups[0]["lr"],
               "epoch_steps": acc["seen"] // config.batch_size,
               "train_loss": acc["loss"] / max(1, acc["seen"]),
               "train_top1": acc["correct"] / max(1, acc["seen"]) * 100,
               "images_per_s": acc["seen"] * world / max(acc["step_time"], 1e-9),
               "data_share": acc["data_time"] / max(acc["step_time"], 1e-9),
               "threads": torch.get_num_threads()}
        finished = finished or epoch + 1 == config.epochs
        last = finished
        if val_data is not None and ((epoch + 1) % config.eval_every == 0 or last):
            row.update(validate(size))
        row["epoch_time_s"] = time.perf_counter() - t_epoch
        row["train_time_s"] = train_time
        row["wall_time_s"] = wall()
        row["cpu_time_s"] = cpu()
        history.append(row)
        save(epoch + 1, 0)
        last_save = time.perf_counter()
        if is_main:
            _write_history(history, out)
            val = (f" val top1 {row['val_top1']:.2f} top5 {row['val_top5']:.2f}"
                   if "val_top1" in row else "")
            log(f"epoch {epoch + 1}/{config.epochs} @{size}px loss {row['train_loss']:.3f} "
                f"train top1 {row['train_top1']:.1f}{val} | {row['images_per_s']:.0f} img/s, "
                f"data {row['data_share'] * 100:.1f}%, {row['threads']} thr, "
                f"epoch {row['epoch_time_s']:.0f} s, "
                f"wall {row['wall_time_s'] / 60:.1f} min")
            if callback is not None:
                callback({"event": "epoch", **row})

    if not ran and is_main:
        log(f"{out} has already finished; nothing to do")
    if ran and is_main:
        export_weights(out / "last.pt", out / "final_fp16.pt")
    model.eval()
    return FitResult(model, ema.module if ema else None, history, out, classes)


class _ThreadPicker:
    """``threads=-1``: time ``steps`` steps on one thread and on all, keep the faster; probe again
    when steps become ``slack`` times slower than measured three times in a row (the machine's
    load changed), every ``every`` steps, and one step into every epoch (a new image size)."""

    def __init__(self, max_threads: int, steps: int = 2, every: int = 200, slack: float = 1.6):
        self.options, self.steps, self.every, self.slack = (1, max_threads), steps, every, slack
        self.queue: list[int] = []
        self.times: dict[int, list[float]] = {}
        self.ref, self.slow, self.since, self.skip = 0.0, 0, 0, 0

    def new_epoch(self) -> None:
        self.queue, self.skip = [], 1  # the first step at a new size is a warm-up

    def _start(self) -> None:
        self.queue = [n for n in self.options for _ in range(self.steps)]
        self.times = {n: [] for n in self.options}

    def before_step(self) -> None:
        if self.queue:
            torch.set_num_threads(self.queue[0])

    def after_step(self, seconds: float) -> None:
        if self.skip:
            self.skip -= 1
            if not self.skip:
                self._start()
            return
        if self.queue:
            self.times[self.queue.pop(0)].append(seconds)
            if not self.queue:
                mean = {n: sum(t) / len(t) for n, t in self.times.items()}
                best = min(mean, key=mean.get)
                torch.set_num_threads(best)
                self.ref, self.slow, self.since = mean[best], 0, 0
            return
        self.since += 1
        self.slow = self.slow + 1 if seconds > self.slack * self.ref else 0
        if self.slow >= 3 or self.since >= self.every:
            self._start()


def _write_history(history: list[dict], out: Path) -> None:
    _atomic_write_text(json.dumps(history, indent=1), out / "history.json")
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    tmp = out / f".history.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, out / "history.csv")


# ---------------------------------------------------------------------------------------------
# Trained weights: export and load
# ---------------------------------------------------------------------------------------------

def export_weights(checkpoint: str | os.PathLike, path: str | os.PathLike, *,
                   use_ema: bool = True, dtype: torch.dtype = torch.float16) -> Path:
    """Write a small inference file from a training checkpoint.

    The file is a plain dict ``{"model": state_dict (floats in ``dtype``), "config": {...},
    "classes": [...], "history": [...], "source": "ema" | "model"}`` that
    ``create_model(name, num_classes=..., checkpoint=path)`` and :func:`load_trained` accept.

    Args:
        checkpoint: a ``last.pt`` written by :func:`fit`.
        path: destination (e.g. ``assets/swiftformer_xs_imagenette.pt``).
        use_ema: take the EMA weights when the run kept them.
        dtype: float dtype of the stored tensors (fp16 halves the file).
    """
    ckpt = _load(checkpoint)
    if "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{checkpoint} is not a swiftlearn training checkpoint")
    source = "ema" if use_ema and ckpt.get("ema") else "model"
    state = ckpt["ema"]["module"] if source == "ema" else ckpt["model"]
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save({"model": state, "config": ckpt["config"], "classes": ckpt.get("classes"),
                  "history": ckpt.get("history", []), "source": source}, path)
    return path


def load_trained(path: str | os.PathLike, *, model: str | None = None,
                 num_classes: int | None = None, use_ema: bool = True) -> nn.Module:
    """A model (float32, eval mode) from :func:`export_weights` output or a ``last.pt``.

    The architecture and class count come from the file's config unless given.
    """
    ckpt = _load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} holds no state dict under 'model'")
    config = ckpt.get("config") or {}
    name = model or config.get("model")
    if name is None:
        raise ValueError(f"{path} has no config; pass model='swiftformer_xs' (or another)")
    state = ckpt["model"]
    if use_ema and isinstance(ckpt.get("ema"), dict):
        state = ckpt["ema"]["module"]
    n = num_classes or len(ckpt.get("classes") or []) or state["head.weight"].shape[0]
    net = create_model(name, num_classes=n)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net.classes = ckpt.get("classes")
    return net.eval()


# ---------------------------------------------------------------------------------------------
# Throughput: the trainer's step against a plain hand-written loop
# ---------------------------------------------------------------------------------------------

def benchmark_throughput(model: str = "swiftformer_xs", data: CachedImages | None = None, *,
                         img_size: int = 112, batch_size: int = 64, steps: int = 20,
                         warmup: int = 3, rounds: int = 2, amp: str = "auto",
                         channels_last: bool = True) -> dict:
    """Training images/s of :func:`fit`'s step against a plain loop, same model and data.

    The plain loop is what one writes by hand: a random batch from the uint8 tensor, one random
    crop offset and flip for the whole batch, normalise, forward, loss on both heads, backward,
    AdamW step. The trainer step adds per-sample random resized crops, gradient clipping, the
    LR schedule and EMA. The two alternate for ``rounds`` rounds of ``steps`` steps (after
    ``warmup`` untimed steps each) and the best round counts.

    Args:
        model: architecture name.
        data: cached images (default: 512 random synthetic images at ``img_size + 16`` px).
        img_size, batch_size, steps, warmup, rounds, amp, channels_last: the measurement.

    Returns:
        ``{"trainer": {"images_per_s", "data_share"}, "plain": {...}, "ratio": trainer/plain,
        "img_size", "batch_size", "threads"}``; ``data_share`` is the fraction of step time
        spent producing the batch.
    """
    if steps < 1 or warmup < 0 or rounds < 1:
        raise ValueError("steps and rounds must be >= 1 and warmup >= 0")
    if data is None:
        g = torch.Generator().manual_seed(0)
        n = max(512, batch_size * 4)
        data = CachedImages(torch.randint(0, 256, (n, 3, img_size + 16, img_size + 16),
                                          dtype=torch.uint8, generator=g),
                            torch.randint(0, 10, (n,), generator=g),
                            [str(i) for i in range(10)])
    dtype = _amp_dtype(amp, torch.device("cpu"))
    classes = len(data.classes)

    def make():
        torch.manual_seed(0)
        net = create_model(model, num_classes=classes)
        return net.to(memory_format=torch.channels_last) if channels_last else net

    def run_plain(net, opt, n_steps, g):
        data_t = total = 0.0
        src = data.images.shape[-1]
        for _ in range(n_steps):
            t0 = time.perf_counter()
            idx = torch.randint(0, len(data), (batch_size,), generator=g)
            top, left = torch.randint(0, src - img_size + 1, (2,), generator=g).tolist()
            x = data.images[idx, :, top:top + img_size, left:left + img_size]
            if torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(3)
            x = resize_center(x, img_size)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = data.labels[idx]
            t1 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                out = net(x)
            loss = _loss(out, y, 0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            data_t += t1 - t0
            total += time.perf_counter() - t0
        return data_t, total

    def run_trainer(net, opt, sched, ema, n_steps, g):
        data_t = total = 0.0
        for _ in range(n_steps):
            t0 = time.perf_counter()
            idx = torch.randint(0, len(data), (batch_size,), generator=g)
            x = random_resized_crop_flip(data.images[idx], img_size, (0.35, 1.0), generator=g)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = data.labels[idx]
            t1 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                out = net(x)
            loss = _loss(out, y, 0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            ema.update(net)
            loss.item()
            data_t += t1 - t0
            total += time.perf_counter() - t0
        return data_t, total

    plain_net, trainer_net = make().train(), make().train()
    plain_opt = torch.optim.AdamW(plain_net.parameters(), lr=1e-3, weight_decay=0.05)
    trainer_opt = torch.optim.AdamW(_param_groups(trainer_net, 0.05), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(trainer_opt, _lr_lambda(10, 10_000, 0.01))
    ema = EMA(trainer_net, 0.999)
    g = torch.Generator().manual_seed(1)
    run_plain(plain_net, plain_opt, warmup, g)
    run_trainer(trainer_net, trainer_opt, sched, ema, warmup, g)
    best = {"plain": None, "trainer": None}
    for _ in range(rounds):
        for name in ("plain", "trainer"):
            d, t = (run_plain(plain_net, plain_opt, steps, g) if name == "plain" else
                    run_trainer(trainer_net, trainer_opt, sched, ema, steps, g))
            if best[name] is None or t < best[name][1]:
                best[name] = (d, t)
    result = {name: {"images_per_s": steps * batch_size / t, "data_share": d / t}
              for name, (d, t) in best.items()}
    result.update({"ratio": result["trainer"]["images_per_s"] / result["plain"]["images_per_s"],
                   "img_size": img_size, "batch_size": batch_size,
                   "threads": torch.get_num_threads(),
                   "precision": str(dtype or torch.float32)})
    return result


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _parse_schedule(text: str) -> list[list[int]]:
    """``"0:112,20:128,35:160"`` -> ``[[0, 112], [20, 128], [35, 160]]``."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        return [[int(e), int(s)] for e, s in pairs]
    except ValueError as e:
        raise ValueError(f"--progressive expects EPOCH:SIZE pairs like '0:112,20:128', got "
                         f"{text!r}") from e


_CLI_FIELDS = {  # option -> (TrainConfig field, type, help)
    "--data": ("data", str, "Imagenette root (default: SWIFTLEARN_DATA / cache)"),
    "--model": ("model", str, "architecture"),
    "--epochs": ("epochs", int, "epochs"),
    "--img-size": ("img_size", int, "training image size"),
    "--batch-size": ("batch_size", int, "batch size per process"),
    "--out": ("out", str, "run folder"),
    "--lr": ("lr", float, "peak learning rate"),
    "--min-lr": ("min_lr", float, "final learning rate"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay"),
    "--warmup-epochs": ("warmup_epochs", float, "linear warm-up epochs"),
    "--label-smoothing": ("label_smoothing", float, "label smoothing (both heads)"),
    "--clip-grad": ("clip_grad", float, "max gradient norm (0: off)"),
    "--ema": ("ema_decay", float, "EMA decay (0: off)"),
    "--amp": ("amp", str, "auto | bf16 | fp16 | off"),
    "--progressive": ("resize_schedule", _parse_schedule,
                      "progressive resizing, EPOCH:SIZE pairs, e.g. 0:112,20:128,35:160"),
    "--scale-min": ("scale_min", float, "random resized crop minimum area"),
    "--cache-size": ("cache_size", int, "decoded cache resolution"),
    "--cache-dir": ("cache_dir", str, "decoded cache folder"),
    "--eval-size": ("eval_size", int, "validation size (0: current training size)"),
    "--eval-every": ("eval_every", int, "validate every n epochs"),
    "--noise": ("noise", int, "noisy-label percentage (0, 1, 5, 25, 50)"),
    "--subset": ("subset", int, "images per class (0: all)"),
    "--drop-path": ("drop_path", float, "stochastic depth rate"),
    "--mixup": ("mixup", float, "mixup Beta alpha (0: off), e.g. 0.2"),
    "--cutmix": ("cutmix", float, "CutMix Beta alpha (0: off), e.g. 1.0"),
    "--mix-prob": ("mix_prob", float, "share of batches mixed (mixup/CutMix on)"),
    "--teacher": ("teacher", str, "teacher checkpoint for hard distillation"),
    "--teacher-model": ("teacher_model", str, "teacher architecture"),
    "--seed": ("seed", int, "random seed"),
    "--threads": ("threads", int, "torch threads (0: default, -1: 1 or all, whichever is faster)"),
    "--checkpoint-minutes": ("checkpoint_minutes", float, "mid-epoch checkpoint interval"),
    "--time-budget": ("time_budget_min", float,
                      "minutes of wall time; schedule follows the budget (0: off)"),
}


def _cmd_train(args: argparse.Namespace) -> int:
    given = {fld: getattr(args, fld) for _, (fld, _, _) in _CLI_FIELDS.items()
             if getattr(args, fld) is not None}
    if not args.channels_last:
        given["channels_last"] = False
    if args.resume:
        path = Path(args.resume)
        path = path / "last.pt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        saved = _load(path)["config"]
        config = TrainConfig.from_dict({**saved, **given})
        if "out" not in given:
            config.out = str(path.parent)
    else:
        config = TrainConfig.from_dict(given)
    result = fit(config, resume=path if args.resume else False, progress=not args.quiet)
    if result.history and "val_top1" in result.history[-1]:
        print(f"final val top1 {result.history[-1]['val_top1']:.2f}%  ->  {result.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    ckpt = _load(args.checkpoint)
    config = ckpt.get("config") or {}
    net = load_trained(args.checkpoint, use_ema=not args.no_ema)
    data = load_cached(args.data or config.get("data"), args.split,
                       args.cache_size or config.get("cache_size", 176),
                       cache_dir=config.get("cache_dir"), progress=not args.quiet)
    size = args.img_size or config.get("eval_size") or config.get("img_size", 224)
    if config.get("resize_schedule") and not args.img_size and not config.get("eval_size"):
        size = TrainConfig.from_dict(config).size_at(config["epochs"] - 1)
    m = evaluate(net, data, size, batch_size=args.batch_size, crop_pct=args.crop_pct,
                 progress=not args.quiet)
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=1))
    print(f"{args.split}: top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  loss {m['loss']:.4f}  "
          f"({m['n']} images at {size}px)")
    for name, a in zip(m["classes"], m["per_class"]):
        print(f"  {name:18s} {a:6.2f}%")
    return 0


def add_cli(subparsers) -> None:
    """Register ``swiftlearn train`` and ``swiftlearn evaluate``."""
    p = subparsers.add_parser("train", help="train a SwiftFormer on Imagenette",
                              description="Train with swiftlearn.train.fit. With --resume, the "
                              "saved config is used; options given must not change it, except "
                              "--data, --out, --cache-dir, --threads, --checkpoint-minutes.")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for option, (dest, kind, text) in _CLI_FIELDS.items():
        default = defaults.get(dest)
        shown = f" (default: {default})" if default not in (None, dataclasses.MISSING) and \
            not isinstance(default, list) else ""
        p.add_argument(option, dest=dest, type=kind, default=None, help=text + shown)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--resume", default=None, metavar="RUN_OR_CKPT",
                   help="continue a run folder (its last.pt) or a checkpoint file")
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
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"swiftlearn {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
