"""Training SwiftFormer on Imagenette: a config, one step, a loop, checkpoints that resume exactly.

``fit(TrainConfig(...))`` trains from the decoded uint8 cache (:func:`swiftlearn.data.load_cached`)
with batched tensor augmentation (random resized crop + flip), fused AdamW, linear warm-up then a
cosine or linear decay (per step), label smoothing on both heads, gradient clipping, optional EMA
of the weights, bf16 autocast on CPUs with bf16 instructions, ``channels_last``, optional
progressive resizing, optional mixup / CutMix (:func:`swiftlearn.data.mix_batch`), stochastic
depth, and optional hard distillation from a teacher (DeiT style: the distillation head learns
the teacher's argmax).
Under ``torchrun`` the same code runs with DistributedDataParallel; rank 0 logs and writes
checkpoints. ``swiftlearn train --processes N`` starts N such workers on one machine itself, and
:func:`train_command` runs that command from a notebook, epoch rows reported as they land.

A run folder holds ``last.pt`` (written atomically: model, EMA, optimizer, scheduler, scaler, RNG
states, epoch, step and the config), ``config.json``, ``history.json`` / ``history.csv`` (one row
per epoch), ``train.log`` and, at the end, ``final_fp16.pt``. ``fit(config, resume=True)``
continues from ``last.pt`` and ends with the same weights as an uninterrupted run (a finished
run: it writes whatever final files are missing). A fresh run in a folder that already holds one
is refused unless ``overwrite=True`` (``--overwrite``), and nothing is written to the folder
until the options, the resume point, the teacher and the data have been checked.

One concept per module:

================  ============================================================================
``config``        :class:`TrainConfig` (each option's CLI flag and help in its field metadata)
``step``          :func:`train_step`, the one step used by :func:`fit` and by ``swiftlearn bench``
``ema``           :class:`EMA` of the weights
``loop``          :func:`fit`: epochs, validation, history, checkpoints
``state``         the checkpoint on disk, resume, RNG states, :func:`export_weights`
``evaluate``      :func:`evaluate`: top-1/top-5/per-class accuracy, confusion matrix
``distributed``   ``torchrun`` support
``threads``       ``threads=-1``: one thread or all, whichever is faster now
``stem``          ``stem_init="whiten"``: the first convolution as a whitening of image patches
``recipes``       named recipes: ``quick`` (a live run), ``long`` (the committed model)
``cli``           ``swiftlearn train`` / ``swiftlearn evaluate`` (``--processes``: the launcher)
``watch``         :func:`train_command`: the command from Python, watched epoch by epoch
================  ============================================================================
"""

from ..checkpoints import load_trained
from .config import RESUMABLE_CHANGES, TrainConfig
from .ema import EMA
from .evaluate import evaluate
from .loop import FitResult, fit
from .recipes import RECIPES, from_recipe
from .state import export_weights
from .step import Batch, Trainer, build_trainer, make_batch, train_step
from .watch import train_command

__all__ = [
    "EMA",
    "RESUMABLE_CHANGES",
    "Batch",
    "FitResult",
    "RECIPES",
    "TrainConfig",
    "Trainer",
    "build_trainer",
    "evaluate",
    "export_weights",
    "fit",
    "from_recipe",
    "load_trained",
    "make_batch",
    "train_command",
    "train_step",
]
