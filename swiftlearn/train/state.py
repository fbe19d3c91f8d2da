"""A run folder's state on disk: the resumable checkpoint, the history, the exported weights.

``last.pt`` holds everything a run needs to continue exactly where it stopped: model, EMA,
optimizer, scheduler, gradient scaler, every RNG state, the epoch and step, the wall and CPU time
so far, the history and the current epoch's running totals. It is written atomically
(temporary file, then ``os.replace``), so a kill leaves the previous checkpoint intact.
"""

from __future__ import annotations

import csv
import io
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import safe_load, save_trained
from ..utils import atomic_torch_save, atomic_write_json, atomic_write_text
from .config import TrainConfig, config_diff

__all__ = ["CHECKPOINT_FORMAT", "RUN_FILES", "EpochTotals", "RunState", "check_same_data",
           "checkpoint_dict", "data_fingerprint", "export_weights", "get_rng_state",
           "read_resume", "read_training_checkpoint", "run_state_of", "save_checkpoint",
           "set_rng_state", "write_history"]

CHECKPOINT_FORMAT = "swiftlearn-train-v1"


def get_rng_state() -> dict:
    """The torch, numpy, Python (and CUDA) RNG states."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class EpochTotals:
    """Running sums over the current epoch (kept in the checkpoint, so a resumed epoch's row
    counts the steps before the interruption too)."""

    loss: float = 0.0
    correct: int = 0
    seen: int = 0
    data_time: float = 0.0
    step_time: float = 0.0


@dataclass
class RunState:
    """Where a run is: the next (epoch, step in it), steps so far, time so far, history."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed: float = 0.0  #: run wall time before this session, seconds
    cpu_time: float = 0.0  #: process CPU time before this session, seconds
    finished: bool = False
    history: list = field(default_factory=list)
    totals: EpochTotals = field(default_factory=EpochTotals)


#: what a run folder holds that a fresh run would replace (``train.log`` is only appended to)
RUN_FILES = ("last.pt", "config.json", "history.json", "history.csv", "final_fp16.pt")


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """A ``last.pt`` written by :func:`~swiftlearn.train.fit`, loaded safely; a ``ValueError``
    for any other file (a broken file: the ``RuntimeError`` of
    :func:`~swiftlearn.checkpoints.safe_load`)."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT \
            or not isinstance(ckpt.get("config"), dict):
        what = "weights without the training state" if isinstance(ckpt, dict) \
            and "model" in ckpt else f"a {type(ckpt).__name__}"
        raise ValueError(f"{path} is not a swiftlearn training checkpoint (it holds {what}); "
                         "resume from the last.pt of a run folder")
    return ckpt


def read_resume(path: Path, config: TrainConfig) -> dict:
    """Read a ``last.pt`` to resume with ``config``; refuse another run's checkpoint or a
    changed config (a ``ValueError`` listing the differences)."""
    ckpt = read_training_checkpoint(path)
    diff = config_diff(ckpt["config"], config)
    if diff:
        raise ValueError(f"cannot resume {path} with a different config (" + "; ".join(diff)
                         + "). Resume with the saved config (`TrainConfig.from_dict("
                         "swiftlearn.checkpoints.safe_load(path)['config'])`) or start a new "
                         "run in another folder.")
    return ckpt


def data_fingerprint(data) -> str:
    """A short hash of a training set (a :class:`~swiftlearn.data.CachedImages`): its size,
    image shape, labels, class names and every image's pixels on an 8-pixel grid. Saved in every
    checkpoint, so a resume on other data is refused even when the path is the same."""
    import hashlib

    images = data.images
    digest = hashlib.sha1(f"{tuple(images.shape)}|{list(data.classes)}".encode())
    digest.update(data.labels.to(torch.int64).numpy().tobytes())
    digest.update(images[:, :, ::8, ::8].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_same_data(ckpt: dict, fingerprint: str, path: Path) -> None:
    """Refuse to continue a checkpoint on other training data than it was trained on."""
    saved = ckpt.get("data_fingerprint")
    if saved is not None and saved != fingerprint:
        data = (ckpt.get("config") or {}).get("data")
        raise ValueError(f"cannot resume {path} on other training data than it was trained on "
                         f"(fingerprint {saved} != now {fingerprint}); resume with the data it "
                         f"used (--data {data}, the same subset and noise) or start a new run")


def run_state_of(ckpt: dict) -> RunState:
    """The :class:`RunState` a checkpoint was saved at."""
    return RunState(ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"], ckpt["elapsed"],
                    ckpt.get("cpu_time", 0.0), ckpt.get("finished", False), ckpt["history"],
                    EpochTotals(**ckpt["epoch_accumulators"]))


def checkpoint_dict(config: TrainConfig, classes: list[str], trainer, state: RunState, rng,
                    world: int, fingerprint: str | None = None) -> dict:
    """Everything :func:`read_resume` needs, as one dict (``trainer``: a
    :class:`~swiftlearn.train.step.Trainer`; ``fingerprint``: :func:`data_fingerprint` of the
    training data)."""
    return {
        "format": CHECKPOINT_FORMAT, "config": asdict(config), "classes": classes,
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema else None,
        "optimizer": trainer.optimizer.state_dict(), "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(), "rng": rng, "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch, "global_step": state.global_step,
        "elapsed": state.elapsed, "cpu_time": state.cpu_time, "history": state.history,
        "epoch_accumulators": asdict(state.totals), "world_size": world,
        "finished": state.finished, "data_fingerprint": fingerprint,
    }


def save_checkpoint(ckpt: dict, path: Path) -> None:
    """Write a checkpoint dict atomically; a full or read-only disk becomes one clear line (the
    previous checkpoint stays as it was)."""
    try:
        atomic_torch_save(ckpt, path)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as "[enforce fail at ...]"
        text = str(e).strip()
        reason = text.splitlines()[0][:160] if text else type(e).__name__
        raise RuntimeError(f"could not write {path} ({reason}); the previous checkpoint is "
                           "intact: free some disk space (or make the folder writable), then "
                           "continue with --resume") from e


def write_history(history: list[dict], out: Path) -> None:
    """``history.json`` and ``history.csv`` (one row per epoch), atomically."""
    atomic_write_json(history, out / "history.json")
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(text.getvalue(), out / "history.csv")


def export_weights(checkpoint: str | os.PathLike, path: str | os.PathLike, *,
                   use_ema: bool = True, dtype: torch.dtype = torch.float16) -> Path:
    """Write a small inference file from a training checkpoint.

    The file (:func:`swiftlearn.checkpoints.save_trained`) holds the weights (floats in
    ``dtype``), the config, class names, history, the evaluation size and the normalisation, so
    that ``swiftlearn.create_model(name, checkpoint=path)``,
    :func:`swiftlearn.checkpoints.load_trained` and ``swiftlearn export`` need nothing else.

    Args:
        checkpoint: a ``last.pt`` written by :func:`~swiftlearn.train.fit`.
        path: destination (e.g. ``assets/swiftformer_xs_imagenette.pt``).
        use_ema: take the EMA weights when the run kept them.
        dtype: float dtype of the stored tensors (fp16 halves the file).
    """
    ckpt = safe_load(checkpoint)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{checkpoint} is not a swiftlearn training checkpoint")
    source = "ema" if use_ema and ckpt.get("ema") else "model"
    state = ckpt["ema"]["module"] if source == "ema" else ckpt["model"]
    history = ckpt.get("history", [])
    config = TrainConfig.from_dict(ckpt["config"])
    eval_size = next((row["eval_size"] for row in reversed(history) if row.get("eval_size")),
                     config.final_size())
    return save_trained(path, state, config=ckpt["config"], classes=ckpt.get("classes"),
                        history=history, source=source, eval_size=eval_size,
                        arch=config.arch(), dtype=dtype)
