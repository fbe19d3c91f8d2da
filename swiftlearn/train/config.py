"""What defines a training run: :class:`TrainConfig`, saved in every checkpoint.

Each field carries its command-line flag and help text in ``field(metadata=...)``, so
``swiftlearn train --help`` is generated from this one table (:func:`cli_fields`) instead of a
second list that drifts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from ..model import (
    ALL_STAGES,
    FORMULATIONS,
    MIN_SIZE,
    MIXERS,
    canonical_name,
    check_mixer_stages,
)
from ..utils import AMP_MODES

__all__ = ["NOISE_LEVELS", "RESUMABLE_CHANGES", "TrainConfig", "cli_fields", "config_diff",
           "parse_schedule", "parse_stages"]

#: Config fields that may differ when resuming (where things live, how often to save). The
#: training data must still be the same (checked by fingerprint); another ``threads`` gives up
#: bit-exactness (the log says so).
RESUMABLE_CHANGES = ("data", "out", "cache_dir", "threads", "checkpoint_minutes",
                     "checkpoint_every_steps")
NOISE_LEVELS = (0, 1, 5, 25, 50)


def parse_schedule(text: str) -> list[list[int]]:
    """``"0:112,20:128,35:160"`` -> ``[[0, 112], [20, 128], [35, 160]]``."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        return [[int(e), int(s)] for e, s in pairs]
    except ValueError as e:
        raise ValueError(f"--progressive expects EPOCH:SIZE pairs like '0:112,20:128', got "
                         f"{text!r}") from e


def parse_stages(text: str) -> list[int]:
    """``"3"`` or ``"2,3"`` -> ``[3]`` / ``[2, 3]`` (stage indices 0-3)."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise ValueError(f"--mixer-stages expects stage indices 0-3 like '3' or '0,1,2,3', got "
                         f"{text!r}") from e


def _opt(default, help: str, flag: str | None = "", parse=None, **kwargs):
    """A config field with its CLI flag (``""``: derived from the name; ``None``: no flag)."""
    if "default_factory" not in kwargs:
        kwargs["default"] = default
    return field(metadata={"help": help, "flag": flag, "parse": parse}, **kwargs)


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint and in ``config.json``.

    Sizes are square image sides in pixels. ``batch_size`` is per process (the global batch under
    ``torchrun`` is ``batch_size * world_size``).
    """

    data: str | None = _opt(None, "Imagenette root (default: SWIFTLEARN_DATA / cache)")
    out: str = _opt("runs/swiftformer", "run folder (checkpoints, history, log)")
    model: str = _opt("swiftformer_xs", "architecture")
    mixer: str = _opt("additive", "token mixer in each encoder: additive (the published "
                      "model) | mhsa | separable | fastformer | none")
    mixer_stages: list = _opt(None, "stages (0-3) that end with an encoder, e.g. 3 or 0,1,2,3 "
                              "(default: all four)", parse=parse_stages,
                              default_factory=lambda: list(ALL_STAGES))
    formulation: str = _opt("normalize", "additive attention's token weights: normalize | "
                            "softmax | legacy_softmax (the first release's size-1 softmax)")
    epochs: int = _opt(40, "epochs")
    batch_size: int = _opt(64, "batch size per process")
    lr: float = _opt(2e-3, "peak learning rate (after warm-up)")
    min_lr: float = _opt(1e-5, "final learning rate (end of the decay)")
    lr_decay: str = _opt("cosine", "the decay after the warm-up: cosine | linear (a straight "
                         "line to min_lr, which Li et al. 2020 found better for small budgets)")
    weight_decay: float = _opt(0.05, "AdamW weight decay; not applied to norms, biases and "
                               "layer scales")
    warmup_epochs: float = _opt(2.0, "linear warm-up epochs")
    label_smoothing: float = _opt(0.1, "label smoothing (both heads)")
    clip_grad: float = _opt(1.0, "max gradient norm (0: off)")
    ema_decay: float = _opt(0.0, "EMA decay of the weights (0: off; e.g. 0.999)", flag="--ema")
    amp: str = _opt("auto", "auto (bf16 where the CPU/GPU supports it) | bf16 | fp16 | off")
    channels_last: bool = _opt(True, "channels_last memory format", flag=None)
    img_size: int = _opt(128, "training image size (when --progressive is empty or not yet "
                         "started)")
    resize_schedule: list = _opt(None, "progressive resizing, EPOCH:SIZE pairs (0-based, "
                                 "ascending), e.g. 0:112,20:128,35:160", flag="--progressive",
                                 parse=parse_schedule, default_factory=list)
    scale_min: float = _opt(0.35, "random resized crop minimum area; the range is (min, 1)")
    cache_size: int = _opt(176, "decoded cache resolution")
    cache_dir: str | None = _opt(None, "decoded cache folder (default: "
                                 "~/.cache/swiftlearn/decoded)")
    eval_size: int = _opt(0, "validation size (0: the current training size)")
    eval_crop_pct: float = _opt(1.0, "centre-crop fraction before resizing for validation",
                                flag=None)
    eval_every: int = _opt(1, "validate every n epochs (and always after the last)")
    noise: int = _opt(0, "noisy-label percentage from noisy_imagenette.csv (0, 1, 5, 25, 50)")
    subset: int = _opt(0, "images per class (0: all), for smoke runs")
    drop_path: float = _opt(0.0, "stochastic depth rate")
    mixup: float = _opt(0.0, "mixup Beta alpha (0: off), e.g. 0.2")
    cutmix: float = _opt(0.0, "CutMix Beta alpha (0: off), e.g. 1.0; with both on, each mixed "
                         "batch picks one")
    mix_prob: float = _opt(1.0, "share of batches mixed when mixup or CutMix is on")
    teacher: str | None = _opt(None, "teacher checkpoint for hard distillation (off: none)")
    teacher_model: str = _opt("swiftformer_xs", "the teacher's architecture")
    stem_init: str = _opt("default", "the stem's first convolution at the start: default "
                          "(PyTorch's random init) | whiten (+- the strongest whitening filters "
                          "of the training images' 3x3 patches, as airbench does)")
    seed: int = _opt(0, "random seed")
    processes: int = _opt(1, "data-parallel training processes on this machine, launched by "
                          "`swiftlearn train` itself (torchrun --standalone), each with CPUs / "
                          "processes threads: on a CPU two one-thread processes train ~1.4x "
                          "faster than one two-thread process. The global batch is batch_size "
                          "x processes. Capped at the usable CPUs; 1 on a GPU")
    threads: int = _opt(0, "torch intra-op threads (0: torch's default; -1: one or all, "
                        "whichever is faster, re-probed when steps slow down, every 200 steps "
                        "and every epoch). A resume is bit-exact only with the same fixed "
                        "count: -1, or another count on resume, gives close, not identical, "
                        "weights")
    checkpoint_minutes: float = _opt(10.0, "also save mid-epoch this often (minutes)")
    checkpoint_every_steps: int = _opt(0, "also save every n steps (0: off; used by tests)",
                                       flag=None)
    time_budget_min: float = _opt(0.0, "minutes of run wall time (training + validation, summed "
                                  "over resumes; 0: off). The cosine and the progressive "
                                  "resizing then follow the share of the budget used "
                                  "(--progressive starts become percentages) and --epochs is "
                                  "only an upper bound; such runs resume, but not bit-exactly",
                                  flag="--time-budget")

    def __post_init__(self):
        self.resize_schedule = [[int(e), int(s)] for e, s in self.resize_schedule]
        try:
            self.mixer_stages = list(check_mixer_stages(self.mixer_stages))
            canonical_name(self.model)  # a wrong name fails here, before any data is decoded
            canonical_name(self.teacher_model)
        except ValueError as e:
            raise ValueError(f"TrainConfig: {e}") from None
        mixing = self.mixup > 0 or self.cutmix > 0
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs 2 samples)"),
            (self.lr > 0 and self.min_lr >= 0, "lr must be > 0 and min_lr >= 0"),
            (self.lr_decay in ("cosine", "linear"), "lr_decay must be cosine or linear"),
            (self.stem_init in ("default", "whiten"), "stem_init must be default or whiten"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (self.amp in AMP_MODES, "amp must be 'auto', 'bf16', 'fp16' or 'off'"),
            (self.mixer in MIXERS, f"mixer must be one of {MIXERS}"),
            (self.formulation in FORMULATIONS, f"formulation must be one of {FORMULATIONS}"),
            (self.img_size >= MIN_SIZE and all(s >= MIN_SIZE for _, s in self.resize_schedule),
             f"image sizes must be >= {MIN_SIZE} (the network downsamples 32x)"),
            (self.resize_schedule == sorted(self.resize_schedule),
             "resize_schedule must be ascending by epoch"),
            (0 < self.scale_min <= 1, "scale_min must be in (0, 1]"),
            (self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0"),
            (0 <= self.mix_prob <= 1, "mix_prob must be in [0, 1]"),
            (self.mix_prob > 0 or not mixing, "mix_prob is 0, so no batch would be mixed although "
             "mixup or cutmix is on: set mix_prob (--mix-prob) > 0, or turn mixup/cutmix off"),
            (self.cache_size >= MIN_SIZE, f"cache_size must be >= {MIN_SIZE}"),
            (self.eval_size == 0 or self.eval_size >= MIN_SIZE,
             f"eval_size must be 0 (the training size) or >= {MIN_SIZE} (the network "
             "downsamples 32x)"),
            (0 < self.eval_crop_pct <= 1, "eval_crop_pct must be in (0, 1]"),
            (self.eval_every >= 1, "eval_every must be >= 1 (the last epoch is always "
             "validated: use a value above epochs to validate only then)"),
            (self.noise in NOISE_LEVELS, "noise must be 0, 1, 5, 25 or 50"),
            (self.subset >= 0, "subset must be >= 0 (images per class; 0: all)"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0 (0: no warm-up)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.clip_grad >= 0, "clip_grad must be >= 0 (0: off)"),
            (0 <= self.drop_path < 1, "drop_path must be in [0, 1)"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.threads >= -1, "threads must be >= 1, or 0 (torch's default) or -1 (auto)"),
            (self.checkpoint_minutes > 0, "checkpoint_minutes must be > 0 (a large value saves "
             "only at the end of each epoch)"),
            (self.checkpoint_every_steps >= 0, "checkpoint_every_steps must be >= 0 (0: off)"),
            (self.time_budget_min >= 0, "time_budget_min must be >= 0"),
            (self.processes >= 1, "processes must be >= 1"),
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

    def arch(self) -> dict:
        """The model keyword arguments beyond the variant (see ``SwiftFormer.arch``)."""
        return {"formulation": self.formulation, "mixer": self.mixer,
                "mixer_stages": list(self.mixer_stages)}

    def final_size(self) -> int:
        """The training size at the end of the run (what it is evaluated at by default)."""
        return self.eval_size or self.size_at(self.epochs - 1, 1.0)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a saved dict; unknown keys raise, missing keys take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**d)


def config_diff(saved: dict, config: TrainConfig) -> list[str]:
    """The fields in which ``config`` differs from a saved config, except
    :data:`RESUMABLE_CHANGES`, as ``"name: checkpoint X != now Y"`` lines."""
    old = asdict(TrainConfig.from_dict(saved))
    new = asdict(config)
    return [f"{k}: checkpoint {old[k]!r} != now {new[k]!r}" for k in new
            if k not in RESUMABLE_CHANGES and old[k] != new[k]]


def cli_fields() -> list[tuple[str, dataclasses.Field]]:
    """``(flag, field)`` for every config field that has a command-line option."""
    out = []
    for f in dataclasses.fields(TrainConfig):
        flag = f.metadata.get("flag", "")
        if flag is None:
            continue
        out.append((flag or "--" + f.name.replace("_", "-"), f))
    return out
