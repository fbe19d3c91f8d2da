"""Named training recipes: ``swiftlearn train --recipe quick`` (or ``TrainConfig.from_recipe``).

A recipe is a set of :class:`~swiftlearn.train.TrainConfig` values; options given beside it
override them. Every recipe trains SwiftFormer-XS from scratch on Imagenette with bf16 autocast
where the CPU (or GPU) supports it, and each follows a wall-time budget.

* ``quick``: a live run for a learner: 14 minutes of training on a 2-core CPU (time-budget
  mode: the command takes about 15 minutes on any machine, and what it reaches depends on the
  machine; ``assets/training/quick_trials.md`` has the trials that chose these values, each
  with its command and result). Two data-parallel worker processes of one thread each
  (``processes=2``, 1.4x one two-thread process on two cores), batch 32 per process; the stem's
  first convolution starts as a whitening of the images' 3x3 patches (``stem_init="whiten"``:
  +6 points at the same 20 epochs in trial F); low resolution first (64 -> 80 -> 96 px at 0 /
  39 / 72 % of the budget, progressive resizing); a linear decay of the learning rate to zero
  (Li et al. 2020's advice for small budgets); one evaluation, at the end, at 112 px. Short
  runs need little regularisation: no mixup/CutMix, no stochastic depth, milder crops. For a
  fixed number of steps instead (a comparison, the ablation grid), give ``--time-budget 0
  --epochs 20 --progressive 0:64,10:80,16:96``: trial F, 85.1 %.
* ``hour``: 90 % in under an hour (trial I of ``assets/training/quick_trials.md``: 90.19 % at
  128 px, 55.4 minutes for the whole command on an AMD EPYC Zen 5, bf16). The quick recipe's
  speed-ups (two one-thread workers, the whitening stem, a linear decay to zero) with the long
  recipe's regularisation (mixup/CutMix on half of the batches, stochastic depth 0.1, crops from
  25 % of the image), 64 -> 80 -> 96 -> 112 px at 0 / 25 / 50 / 75 % of a 55-minute budget, an
  evaluation every 8 epochs at 128 px (a size above the last training size, as FixRes
  advises). On a slower CPU fewer epochs fit and it lands lower.
* ``long``: the committed 90.3 % model (``assets/swiftformer_xs_imagenette.pt``): 125 minutes of
  wall time (time-budget mode, so it adapts to the machine), 96 -> 144 px, mixup/CutMix on half
  of the batches, stochastic depth 0.1, EMA 0.997.
"""

from __future__ import annotations

from .config import TrainConfig

__all__ = ["RECIPES", "from_recipe"]

RECIPES: dict[str, dict] = {
    "quick": dict(
        processes=2, batch_size=32, time_budget_min=14.0, epochs=100, lr=3e-3, min_lr=0.0,
        lr_decay="linear", warmup_epochs=1.0, weight_decay=0.05, label_smoothing=0.1,
        ema_decay=0.995, stem_init="whiten", img_size=96,
        resize_schedule=[[0, 64], [39, 80], [72, 96]], scale_min=0.35, eval_size=112,
        eval_every=100, drop_path=0.0, mixup=0.0, cutmix=0.0),
    "hour": dict(
        processes=2, batch_size=32, time_budget_min=55.0, epochs=300, lr=3e-3, min_lr=0.0,
        lr_decay="linear", warmup_epochs=2.0, weight_decay=0.05, label_smoothing=0.1,
        ema_decay=0.997, stem_init="whiten", img_size=112,
        resize_schedule=[[0, 64], [25, 80], [50, 96], [75, 112]], scale_min=0.25, eval_size=128,
        eval_every=8, drop_path=0.1, mixup=0.2, cutmix=1.0, mix_prob=0.5),
    "long": dict(
        epochs=300, batch_size=64, lr=3e-3, min_lr=1e-5, warmup_epochs=2.0, weight_decay=0.05,
        label_smoothing=0.1, ema_decay=0.997, img_size=144,
        resize_schedule=[[0, 96], [30, 112], [55, 128], [78, 144]], scale_min=0.25,
        eval_every=2, drop_path=0.1, mixup=0.2, cutmix=1.0, mix_prob=0.5, threads=-1,
        time_budget_min=125.0),
}


def from_recipe(name: str, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named recipe, with ``overrides`` on top."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return TrainConfig.from_dict({**RECIPES[name], **overrides})
