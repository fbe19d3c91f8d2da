"""Named training recipes: ``swiftlearn train --recipe quick`` (or ``TrainConfig.from_recipe``).

A recipe is a set of :class:`~swiftlearn.train.TrainConfig` values; options given beside it
override them. Both recipes train SwiftFormer-XS from scratch on Imagenette with bf16 autocast
where the CPU (or GPU) supports it.

* ``quick``: a live run for a learner, sized for 15 minutes on a 2-core CPU. Epoch mode (14
  epochs), so its steps and its result do not depend on the machine's load, only its duration
  does. Short runs need little regularisation: no mixup/CutMix, no stochastic depth, milder
  crops; low resolution first (64 -> 80 -> 96 px, progressive resizing), evaluation at 112 px.
  Threads: torch's default. (``threads=-1``, which switches between one and two threads as it
  measures, trained to the same losses here but validated 8-20 points lower in the first
  epochs, in one trial: not used until that is understood.)
* ``long``: the committed 90.3 % model (``assets/swiftformer_xs_imagenette.pt``): 125 minutes of
  wall time (time-budget mode, so it adapts to the machine), 96 -> 144 px, mixup/CutMix on half
  of the batches, stochastic depth 0.1, EMA 0.997.
"""

from __future__ import annotations

from .config import TrainConfig

__all__ = ["RECIPES", "from_recipe"]

RECIPES: dict[str, dict] = {
    "quick": dict(
        epochs=14, batch_size=64, lr=3e-3, min_lr=1e-5, warmup_epochs=1.0, weight_decay=0.05,
        label_smoothing=0.1, ema_decay=0.995, img_size=96,
        resize_schedule=[[0, 64], [6, 80], [12, 96]], scale_min=0.35, eval_size=112,
        eval_every=2, drop_path=0.0, mixup=0.0, cutmix=0.0),
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
