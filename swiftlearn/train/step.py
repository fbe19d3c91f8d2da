"""One training step, the same for :func:`~swiftlearn.train.fit` and the throughput benchmark.

A step is: make the batch (:func:`make_batch`: per-sample random resized crop + flip from the
uint8 cache, optional mixup / CutMix, ``channels_last``), then :func:`train_step`: forward under
autocast, the loss on both heads (:func:`classification_loss`), backward through the gradient
scaler, gradient clipping, the optimizer and schedule step, the EMA update.
:func:`build_trainer` makes the objects a step updates (:class:`Trainer`) from a
:class:`~swiftlearn.train.TrainConfig`, so whoever times a step times the one ``fit`` runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data import CachedImages, mix_batch, random_resized_crop_flip
from ..utils import amp_dtype, autocast
from .config import TrainConfig
from .ema import EMA

__all__ = ["DECAYS", "Batch", "StepResult", "Trainer", "batch_generator", "build_trainer",
           "classification_loss", "cosine", "linear", "logits_of", "lr_factor", "make_batch",
           "param_groups", "timed_step", "train_step"]


# ------------------------------------------------------------------------- loss and logits


def logits_of(outputs) -> torch.Tensor:
    """A distilled SwiftFormer in training mode returns ``(head, dist_head)``: their average."""
    return (outputs[0] + outputs[1]) / 2 if isinstance(outputs, tuple) else outputs


def classification_loss(outputs, y: torch.Tensor, smoothing: float, teacher_labels=None,
                        perm=None, lam: float = 1.0) -> torch.Tensor:
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


# ------------------------------------------------------------------------- schedule


def cosine(fraction: float, min_ratio: float) -> float:
    """Cosine decay from 1 to ``min_ratio`` as ``fraction`` goes from 0 to 1 (then flat)."""
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))


def linear(fraction: float, min_ratio: float) -> float:
    """A straight line from 1 to ``min_ratio`` as ``fraction`` goes from 0 to 1 (then flat)."""
    return 1 - (1 - min_ratio) * min(max(fraction, 0.0), 1.0)


DECAYS = {"cosine": cosine, "linear": linear}


def lr_factor(warmup_steps: int, total_steps: int, min_ratio: float,
              decay: str = "cosine") -> Callable[[int], float]:
    """The learning-rate multiplier per step: linear warm-up to 1 over ``warmup_steps``, then
    ``decay`` (cosine or linear) down to ``min_ratio`` at ``total_steps`` (for ``LambdaLR``)."""
    curve = DECAYS[decay]

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return curve(t, min_ratio)
    return f


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weights, none on norms, biases and layer scales."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # norms, biases and layer scales are 1-d: decaying them only hurts
        (no_decay if p.ndim <= 1 or "layer_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------- the batch


def batch_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    """The augmentation randomness of one step, a function of (seed, epoch, step, rank) only,
    so a resumed run crops and mixes exactly as an uninterrupted one."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + step) * 64
                                         + rank)


@dataclass
class Batch:
    """A training batch: images ``x`` ``[B, 3, S, S]`` (normalised), labels ``y`` ``[B]``, and
    for a mixed batch the partner order ``perm`` and the mixing weight ``lam``."""

    x: torch.Tensor
    y: torch.Tensor
    perm: torch.Tensor | None = None
    lam: float = 1.0


def make_batch(data: CachedImages, idx: torch.Tensor, size: int, config: TrainConfig,
               generator: torch.Generator, device: torch.device) -> Batch:
    """Crop, flip (and mix) the cached images ``idx`` as ``config`` says."""
    x = random_resized_crop_flip(data.images[idx], size, (config.scale_min, 1.0),
                                 generator=generator)
    y = data.labels[idx].to(device)
    x = x.to(device)
    perm, lam = None, 1.0
    if config.mixup or config.cutmix:
        x, perm, lam = mix_batch(x, config.mixup, config.cutmix, config.mix_prob,
                                 generator=generator)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(x, y, perm, lam)


# ------------------------------------------------------------------------- the step


@dataclass
class Trainer:
    """The objects one training step reads and updates.

    ``net`` is what the forward pass calls (the model, or its DistributedDataParallel wrapper);
    ``step_scheduler=False`` leaves the learning rate to the caller (time-budget runs).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    label_smoothing: float = 0.1
    clip_grad: float = 1.0
    ema: EMA | None = None
    teacher: nn.Module | None = None
    net: nn.Module | None = None
    step_scheduler: bool = True

    def __post_init__(self):
        self.net = self.net if self.net is not None else self.model


@dataclass
class StepResult:
    """What a step reports: the loss, train-accuracy hits, and where its time went."""

    loss: float
    correct: int
    seen: int


def build_trainer(config: TrainConfig, model: nn.Module, steps_per_epoch: int,
                  device: torch.device, *, teacher: nn.Module | None = None,
                  net: nn.Module | None = None) -> Trainer:
    """AdamW (decay groups), warm-up then a cosine or linear decay per step, gradient scaler
    for fp16, EMA: the training objects for ``model`` as ``config`` says."""
    # fused: one kernel over all tensors; on the CPU torch's default is a Python loop of ~10
    # small ops per tensor (see the train bench's "AdamW for-loop" row)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.999), fused=device.type in ("cpu", "cuda"))
    total = config.epochs * steps_per_epoch
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(warmup, total, config.min_lr / config.lr, config.lr_decay))
    dtype = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = EMA(model, config.ema_decay) if config.ema_decay else None
    return Trainer(model, optimizer, scheduler, scaler, dtype, config.label_smoothing,
                   config.clip_grad, ema, teacher, net, step_scheduler=not config.time_budget_min)


def train_step(trainer: Trainer, batch: Batch) -> StepResult:
    """One optimisation step on ``batch``; returns the loss and the train-accuracy hits
    (against the label that dominates each, possibly mixed, image)."""
    t = trainer
    device = batch.x.device
    with autocast(device, t.dtype):
        outputs = t.net(batch.x)
        teacher_labels = None
        if t.teacher is not None:
            with torch.no_grad():
                teacher_labels = logits_of(t.teacher(batch.x)).argmax(1)
    loss = classification_loss(outputs, batch.y, t.label_smoothing, teacher_labels, batch.perm,
                               batch.lam)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    if t.clip_grad:
        t.scaler.unscale_(t.optimizer)
        nn.utils.clip_grad_norm_(t.model.parameters(), t.clip_grad)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    if t.step_scheduler:
        t.scheduler.step()
    if t.ema is not None:
        t.ema.update(t.model)
    major = batch.y if batch.perm is None or batch.lam >= 0.5 else batch.y[batch.perm]
    correct = int((logits_of(outputs).argmax(1) == major).sum())
    return StepResult(loss.item(), correct, len(batch.y))


def timed_step(trainer: Trainer, data: CachedImages, idx: torch.Tensor, size: int,
               config: TrainConfig, generator: torch.Generator,
               device: torch.device) -> tuple[StepResult, float, float]:
    """:func:`make_batch` then :func:`train_step`; also returns the seconds spent making the
    batch and in the whole step."""
    t0 = time.perf_counter()
    batch = make_batch(data, idx, size, config, generator, device)
    t1 = time.perf_counter()
    result = train_step(trainer, batch)
    return result, t1 - t0, time.perf_counter() - t0
