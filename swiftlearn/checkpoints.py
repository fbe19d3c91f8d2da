"""Load and convert SwiftFormer checkpoints: official, timm, Hugging Face and swiftlearn's own.

Four layouts hold the same tensors under different names:

=============  ==========================================  =====================================
format         where it comes from                         first key
=============  ==========================================  =====================================
``official``   github.com/Amshaker/SwiftFormer ``.pth``      ``patch_embed.0.weight`` (bare or in
               (bare or ``{"model": ...}``)                  ``{"model": ...}``)
``timm``       ``timm.create_model("swiftformer_xs")``       ``stem.0.weight``
``hf``         ``SwiftFormerForImageClassification``         ``swiftformer.patch_embed.patch_emb…``
``swiftlearn`` ``swiftlearn train`` checkpoints and assets   ``{"model": <official layout>,
                                                             "config": {...}}``
=============  ==========================================  =====================================

swiftlearn's module names are the official ones, so ``official`` is the hub every conversion goes
through: ``X -> official -> Y``.

Which attention formulation the published weights were trained with (it is not stored in the
weights, so :func:`load_checkpoint` chooses it by format; pass ``formulation=`` to override):

* ``official``: the checkpoints linked from the official README since July 2023 were trained with
  ``F.normalize`` over the tokens (``"normalize"``). The first release (March 2023) used a softmax
  over the size-1 last axis (``"legacy_softmax"``); load those with
  ``formulation="legacy_softmax"``.
* ``timm``: timm's ``EfficientAdditiveAttention`` normalises over the tokens (``"normalize"``) and
  its ``swiftformer_*.dist_in1k`` weights are the official ones converted.
* ``hf``: ``SwiftFormerEfficientAdditiveAttention`` in transformers applies ``softmax(dim=-1)`` to
  a ``[B, N, 1]`` tensor, so every token weight is 1 (``"legacy_softmax"``); the ``MBZUAI/
  swiftformer-*`` weights were converted from the first official release, trained that way.
* ``swiftlearn``: whatever the training run's ``config["formulation"]`` says (default
  ``"normalize"``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .model import ALL_STAGES, SwiftFormer, build_model, variant_of
from .utils import IMAGENET_MEAN, IMAGENET_STD, atomic_torch_save, require

__all__ = [
    "FORMATS",
    "SOURCE_FORMULATION",
    "Checkpoint",
    "CheckpointMismatchError",
    "convert",
    "detect_format",
    "load_checkpoint",
    "read_checkpoint",
    "to_hf",
    "to_official",
    "to_timm",
]

FORMATS = ("official", "timm", "hf", "swiftlearn")
# the formulation each source's published weights were trained with (see the module docstring)
SOURCE_FORMULATION = {"official": "normalize", "timm": "normalize", "hf": "legacy_softmax",
                      "swiftlearn": "normalize"}
_HEADS = ("head.", "dist_head.")
#: architecture choices beyond the variant that a swiftlearn checkpoint records, with the
#: published model's values
ARCH_DEFAULTS = {"formulation": "normalize", "mixer": "additive", "mixer_stages": ALL_STAGES}
ARCH_KEYS = tuple(ARCH_DEFAULTS)


def _as_tuple(value):
    """A list or tuple (or a scalar) as a tuple, to compare recorded values with defaults."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    """A checkpoint read and converted to the official layout.

    Attributes:
        state_dict: tensors under official (= swiftlearn) names.
        format: the detected source format, one of :data:`FORMATS`.
        variant: ``swiftformer_xs`` ... if depths and widths match one, else ``None``.
        depths, widths: read from the tensors.
        num_classes: outputs of ``head`` (0 for a headless checkpoint).
        distillation: whether a ``dist_head`` is present.
        formulation: the attention formulation the weights were trained with.
        meta: everything else a swiftlearn checkpoint carried (``config``, ``epoch``, ...).
        arch: the token mixer a swiftlearn checkpoint records (``mixer``, ``mixer_stages``);
            empty for the published architecture and for other formats.
        source: the path it was read from (``None`` for a dict or a module), for messages.

    Every reader of a checkpoint goes through this one object, read once by
    :func:`read_checkpoint`: evaluation and export take :attr:`eval_size`, :attr:`classes`,
    :attr:`mean` and :attr:`std` from it, :meth:`build` makes the model, and
    :meth:`require_trained` is the one check that a file holds swiftlearn training weights.
    """

    state_dict: dict[str, torch.Tensor]
    format: str
    variant: str | None
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    num_classes: int
    distillation: bool
    formulation: str
    meta: dict = field(default_factory=dict)
    arch: dict = field(default_factory=dict)
    source: str | None = None

    @property
    def config(self) -> dict:
        """The training run's config (empty for other formats)."""
        config = self.meta.get("config")
        return dict(config) if isinstance(config, Mapping) else {}

    @property
    def classes(self) -> list[str] | None:
        """The class names a swiftlearn run recorded (``None`` when none were)."""
        classes = self.meta.get("classes")
        return list(classes) if classes else None

    @property
    def eval_size(self) -> int | None:
        """The image size the model was evaluated at (:func:`trained_image_size`)."""
        return trained_image_size(self.meta)

    @property
    def mean(self) -> tuple[float, ...]:
        """The input normalisation's mean (ImageNet's unless the file records another)."""
        return tuple(self.meta.get("mean") or IMAGENET_MEAN)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.meta.get("std") or IMAGENET_STD)

    def require_trained(self, what: str = "the checkpoint") -> Checkpoint:
        """Refuse anything but swiftlearn training weights (``final_fp16.pt``, ``last.pt``, the
        committed model), in one line that names ``what`` (e.g. ``"--teacher x.pt"``)."""
        if self.format != "swiftlearn":
            raise ValueError(f"{what} holds no swiftlearn training weights (its format is "
                             f"{self.format}, with no training config); pass a final_fp16.pt or "
                             "last.pt written by swiftlearn train "
                             "(official, timm or HF files: swiftlearn.create_model(name, "
                             "checkpoint=path))")
        return self

    def build(self, model: str | nn.Module | None = None, num_classes: int | None = None,
              **kwargs) -> SwiftFormer:
        """The model these weights fill (eval mode, float32): :func:`load_checkpoint` on this
        object, with the architecture the run's config names unless ``model`` is given; the
        model carries :attr:`classes` as ``model.classes``."""
        if model is None and self.format == "swiftlearn":
            model = self.config.get("model")
        net = load_checkpoint(self, model=model, num_classes=num_classes, **kwargs)
        if self.classes and not kwargs.get("drop_head"):
            net.classes = self.classes
        return net

    def describe(self) -> str:
        arch = self.variant or f"SwiftFormer(depths={self.depths}, widths={self.widths})"
        if self.arch:
            arch += " (" + ", ".join(f"{k}={v!r}" for k, v in self.arch.items()) + ")"
        head = f"{self.num_classes} classes" if self.num_classes else "no head"
        dist = ", distillation head" if self.distillation else ""
        return f"{self.format} checkpoint of {arch}, {head}{dist}"


# ---------------------------------------------------------------- key renaming


def _timm_to_official_key(k: str) -> str:
    k = re.sub(r"^stem\.", "patch_embed.", k)
    k = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"network.{2 * int(m[1])}.", k)
    k = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"network.{2 * int(m[1]) - 1}.", k)
    k = re.sub(r"\.layer_scale(_[12])?\.gamma$", r".layer_scale\1", k)  # LayerScale2d module
    k = k.replace(".attn.proj.", ".attn.Proj.")
    return re.sub(r"^head_dist\.", "dist_head.", k)


def _official_to_timm_key(k: str) -> str:
    k = re.sub(r"^patch_embed\.", "stem.", k)
    m = re.match(r"^network\.(\d+)\.(.*)$", k)
    if m:
        i, rest = int(m[1]), m[2]
        k = f"stages.{i // 2}.blocks.{rest}" if i % 2 == 0 else \
            f"stages.{i // 2 + 1}.downsample.{rest}"
    k = re.sub(r"\.layer_scale(_[12])?$", r".layer_scale\1.gamma", k)
    k = k.replace(".attn.Proj.", ".attn.proj.")
    return re.sub(r"^dist_head\.", "head_dist.", k)


_HF_CONV_NAMES = (("dwconv", "depth_wise_conv"), ("pwconv1", "point_wise_conv1"),
                  ("pwconv2", "point_wise_conv2"))


def _hf_to_official_key(k: str) -> str:
    k = re.sub(r"^swiftformer\.", "", k)  # SwiftFormerModel has no prefix
    k = re.sub(r"^patch_embed\.patch_embedding\.", "patch_embed.", k)
    k = re.sub(r"^encoder\.network\.(\d+)\.blocks\.", r"network.\1.", k)
    k = re.sub(r"^encoder\.network\.", "network.", k)
    for ours, theirs in _HF_CONV_NAMES:
        k = k.replace(f".{theirs}.", f".{ours}.")
    return k.replace(".attn.proj.", ".attn.Proj.")


def _official_to_hf_key(k: str) -> str:
    if k.startswith(_HEADS) or k.startswith("norm."):
        return k  # the classifier sits outside the `swiftformer` base model
    k = re.sub(r"^patch_embed\.", "patch_embed.patch_embedding.", k)
    m = re.match(r"^network\.(\d+)\.(.*)$", k)
    if m:
        i, rest = int(m[1]), m[2]
        k = f"encoder.network.{i}.blocks.{rest}" if i % 2 == 0 else f"encoder.network.{i}.{rest}"
    for ours, theirs in _HF_CONV_NAMES:
        k = k.replace(f".{ours}.", f".{theirs}.")
    return "swiftformer." + k.replace(".attn.Proj.", ".attn.proj.")


_TO_OFFICIAL = {"official": lambda k: k, "swiftlearn": lambda k: k, "timm": _timm_to_official_key,
                "hf": _hf_to_official_key}
_FROM_OFFICIAL = {"official": lambda k: k, "swiftlearn": lambda k: k,
                  "timm": _official_to_timm_key, "hf": _official_to_hf_key}


# ---------------------------------------------------------------- detection


def _unwrap(obj) -> tuple[Mapping[str, torch.Tensor], dict, bool]:
    """``(state_dict, meta, is_swiftlearn)`` from whatever a checkpoint file held."""
    if isinstance(obj, nn.Module):
        return obj.state_dict(), {}, False
    if not isinstance(obj, Mapping):
        raise ValueError(f"a checkpoint must be a state dict, a dict holding one under 'model' or "
                         f"'state_dict', or an nn.Module; got {type(obj).__name__}")
    meta: dict = {}
    is_swiftlearn = False
    for wrapper in ("model", "state_dict", "model_state"):
        if isinstance(obj.get(wrapper), Mapping):
            meta = {k: v for k, v in obj.items() if k != wrapper}
            is_swiftlearn = isinstance(obj.get("config"), Mapping)
            obj = obj[wrapper]
            break
    sd = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in obj.items()}  # DDP/compile
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("no state dict of tensors found in the checkpoint (looked at the top "
                         "level and under 'model' / 'state_dict')")
    return sd, meta, is_swiftlearn


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``official``, ``timm`` or ``hf`` from the key names; ``ValueError`` if none fits."""
    keys = set(state_dict)
    if any(k.startswith(("stem.", "stages.")) for k in keys):
        return "timm"
    if any(re.match(r"^(swiftformer\.)?(patch_embed\.patch_embedding|encoder\.network)\.", k)
           for k in keys):
        return "hf"
    if any(k.startswith(("patch_embed.", "network.")) for k in keys):
        return "official"
    raise ValueError(f"not a SwiftFormer checkpoint in any known layout {FORMATS[:3]}; its first "
                     f"keys are {sorted(keys)[:5]}")


def _structure(sd: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Depths and widths of an official-layout state dict."""
    depths, widths = [], []
    for stage in range(4):
        blocks = {int(m[1]) for k in sd if (m := re.match(rf"^network\.{2 * stage}\.(\d+)\.", k))}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
        last = f"network.{2 * stage}.{max(blocks)}."
        # an encoder's width, or a ConvEncoder's when the stage carries no encoder
        w = sd.get(last + "local_representation.dwconv.weight", sd.get(last + "dwconv.weight"))
        widths.append(int(w.shape[0]) if w is not None else -1)
    return tuple(depths), tuple(widths)


def read_checkpoint(source, formulation: str | None = None, *, use_ema: bool = True,
                    flag: str | None = None) -> Checkpoint:
    """Read a checkpoint file, dict or module and convert it to the official layout.

    Args:
        source: a path (``.pth``/``.pt``/``.bin``; ``.safetensors`` too), a state dict in any of
            :data:`FORMATS`, a dict wrapping one, an ``nn.Module`` (timm, HF or swiftlearn), or
            a :class:`Checkpoint` already read (returned as it is).
        formulation: override the attention formulation the format implies.
        use_ema: a swiftlearn training checkpoint (``last.pt``) that kept an EMA yields the EMA
            weights, as evaluation and export want; ``False`` takes the raw weights.
        flag: the command-line option the path came from (``"--teacher"``), named first in the
            message when the file holds no SwiftFormer weights.
    """
    if isinstance(source, Checkpoint):
        if formulation and formulation != source.formulation:
            return dataclasses.replace(source, formulation=formulation)
        return source
    path = None
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        source = safe_load(source)
    if use_ema and isinstance(source, Mapping) and isinstance(source.get("config"), Mapping) \
            and isinstance(source.get("ema"), Mapping) and "module" in source["ema"]:
        # a swiftlearn training checkpoint with an EMA: evaluate the EMA weights, as
        # swiftlearn.train.load_trained and export_weights do
        source = {**source, "model": source["ema"]["module"], "weights": "ema"}
    try:
        sd, meta, is_swiftlearn = _unwrap(source)
        fmt = detect_format(sd)
    except ValueError as e:
        if path is None:
            raise
        where = f"{flag} {path}" if flag else path
        raise ValueError(f"{where} holds no SwiftFormer weights: {e}") from None
    if is_swiftlearn and fmt == "official":
        fmt = "swiftlearn"
    sd = {_TO_OFFICIAL[fmt](k): v for k, v in sd.items()}
    depths, widths = _structure(sd)
    config = meta.get("config", {}) if fmt == "swiftlearn" else {}
    recorded = {**{k: config[k] for k in ARCH_KEYS if k in config}, **(meta.get("arch") or {})}
    arch = {k: v for k, v in recorded.items()
            if k in ARCH_KEYS and k != "formulation" and list(_as_tuple(v)) != list(
                _as_tuple(ARCH_DEFAULTS[k]))}
    head = sd.get("head.weight")
    return Checkpoint(
        state_dict=sd, format=fmt, variant=variant_of(depths, widths), depths=depths,
        widths=widths, num_classes=int(head.shape[0]) if head is not None else 0,
        distillation="dist_head.weight" in sd,
        formulation=(formulation or recorded.get("formulation")
                     or SOURCE_FORMULATION[fmt]),
        meta=meta, arch=arch, source=path)


def _numpy_globals() -> list:
    import numpy as np

    try:
        reconstruct = np._core.multiarray._reconstruct
    except AttributeError:  # numpy < 2
        reconstruct = np.core.multiarray._reconstruct
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def safe_load(path: str | os.PathLike):
    """``torch.load`` that never runs code from the file: tensors, plain Python values and the
    numpy arrays of an RNG state only (``.safetensors`` files too).

    Raises:
        FileNotFoundError: no file at ``path``.
        RuntimeError: the file is not a checkpoint at all (empty, truncated, not a torch file),
            or it holds Python objects beyond tensors and plain values (then it was not
            unpickled, and the message names the refused object); the message says what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        load_file = require("safetensors.torch", f"reading {path.name}").load_file
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors_rust.SafetensorError and friends
            raise RuntimeError(_broken(path, e)) from e
    if path.stat().st_size == 0:
        raise RuntimeError(_broken(path, "the file is empty"))
    try:
        # training checkpoints carry numpy RNG states: allow exactly the numpy array types
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, RuntimeError (zip), EOFError, ...
        refused = _refused_object(str(e))
        if refused is None:
            raise RuntimeError(_broken(path, e)) from e
        raise RuntimeError(
            f"{path} holds Python objects beyond tensors and plain values ({refused}), so it was "
            "not unpickled: loading it could run code. If you trust the file, load it with "
            "`torch.load(path, weights_only=False)` and pass the dict instead.") from e


def _broken(path: Path, error: Exception | str) -> str:
    """The one-line message for a file that could not be read as a checkpoint at all."""
    if isinstance(error, str):
        reason = error
    else:
        text = str(error)
        if "WeightsUnpickler error:" in text:  # keep the unpickler's finding, not torch's advice
            text = text.split("WeightsUnpickler error:", 1)[1]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = type(error).__name__ + (f": {lines[0][:120]}" if lines else "")
    return (f"{path} is not a checkpoint (empty, truncated or not a torch file; {reason}). "
            "Use another copy of it, or write it again")


def _refused_object(message: str) -> str | None:
    """What torch's weights-only unpickler refused to build, from its error message (``None``:
    the file was unreadable, not refused)."""
    m = re.search(r"GLOBAL (\S+)", message)
    if m:
        return m[1].rstrip(".")
    if "allowlisted" in message or "Can only create new object" in message:
        return "an object of a class not allowed"
    return None


# ---------------------------------------------------------------- trained weights

#: what a trained-weights file carries beside the tensors, so that evaluation and export need
#: nothing else (no training code): the run's config, class names, evaluation size and the
#: input normalisation
TRAINED_KEYS = ("model", "config", "classes", "history", "source", "eval_size", "mean", "std",
                "arch")


def trained_image_size(meta: Mapping | None) -> int | None:
    """The image size a trained model was evaluated at, from a checkpoint's metadata.

    In order: the file's ``eval_size`` (written by :func:`save_trained`), the last history
    row's ``eval_size``, the config's ``eval_size``, the size the config's progressive-resize
    schedule ends at, the config's ``img_size``; ``None`` when there is no training metadata.
    """
    if not meta:
        return None
    if meta.get("eval_size"):
        return int(meta["eval_size"])
    history = meta.get("history") or []
    if history and isinstance(history[-1], Mapping) and history[-1].get("eval_size"):
        return int(history[-1]["eval_size"])
    config = meta.get("config") or {}
    if config.get("eval_size"):
        return int(config["eval_size"])
    schedule = config.get("resize_schedule") or []
    if schedule:
        # epoch mode ends in the last epoch, budget mode at 100 % of the budget
        end = 100 if config.get("time_budget_min") else int(config.get("epochs", 1)) - 1
        sizes = [int(size) for start, size in schedule if int(start) <= end]
        if sizes:
            return sizes[-1]
    return int(config["img_size"]) if config.get("img_size") else None


def save_trained(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], *,
                 config: Mapping, classes=None, history=None, source: str = "model",
                 eval_size: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 arch: Mapping | None = None, dtype: torch.dtype | None = torch.float16) -> Path:
    """Write a small inference file (atomically): the weights plus what export needs.

    The file is a plain dict with :data:`TRAINED_KEYS`; :func:`load_trained`,
    :func:`load_checkpoint` and ``swiftlearn.create_model(name, checkpoint=path)`` read it.

    Args:
        path: destination (e.g. ``assets/swiftformer_xs_imagenette.pt``).
        state_dict: the model's tensors (official layout).
        config: the training run's config as a dict.
        classes, history, source: class names, per-epoch history, ``"ema"`` or ``"model"``.
        eval_size: the evaluation image size (default: :func:`trained_image_size` of the rest).
        mean, std: the input normalisation the model was trained with.
        arch: keyword arguments that rebuild the architecture (e.g. the token mixer).
        dtype: float dtype of the stored tensors (fp16 halves the file; None keeps them).
    """
    state = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
             for k, v in state_dict.items()}
    meta = {"config": dict(config), "classes": list(classes) if classes else None,
            "history": list(history or []), "source": source}
    meta["eval_size"] = int(eval_size or trained_image_size(meta) or 224)
    meta.update(mean=list(mean), std=list(std), arch=dict(arch or {}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_torch_save({"model": state, **meta}, path)


def load_trained(path: str | os.PathLike, *, model: str | None = None,
                 num_classes: int | None = None, use_ema: bool = True) -> nn.Module:
    """A model (float32, eval mode) from a trained-weights file or a training ``last.pt``.

    ``read_checkpoint(path, use_ema=use_ema).build(model, num_classes)``: the architecture
    and class count come from the file's config unless given (then the file must be swiftlearn
    training weights, :meth:`Checkpoint.require_trained`); a ``last.pt``
    that kept an EMA gives the EMA weights unless ``use_ema=False``. The model carries the
    class names as ``model.classes``.
    """
    ckpt = read_checkpoint(path, use_ema=use_ema)
    if model is None:  # the architecture must come from the run's config
        ckpt.require_trained(str(path))
        if not ckpt.config.get("model"):
            raise ValueError(f"{path} has no model name in its config; pass "
                             "model='swiftformer_xs' (or another)")
    return ckpt.build(model, num_classes=num_classes)


# ---------------------------------------------------------------- conversion


def convert(source, to: str) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's tensors into another layout (the tensors are shared, not copied).

    Args:
        source: anything :func:`read_checkpoint` reads (path, state dict, module).
        to: one of ``official``, ``timm``, ``hf`` (``swiftlearn`` = ``official``).

    timm's and Hugging Face's models always have a distillation head; a checkpoint without one
    gets a copy of ``head`` as ``dist_head``, which leaves the evaluation output unchanged (the
    average of two equal heads). Remember the formulation when you build the target model
    (``"legacy_softmax"`` for HF weights, see the module docstring).
    """
    if to not in FORMATS:
        raise ValueError(f"unknown target format {to!r}; choose one of {FORMATS}")
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    sd = dict(ckpt.state_dict)
    if to in ("timm", "hf") and ckpt.num_classes and not ckpt.distillation:
        sd["dist_head.weight"], sd["dist_head.bias"] = sd["head.weight"], sd["head.bias"]
    return {_FROM_OFFICIAL[to](k): v for k, v in sd.items()}


def to_official(source) -> dict[str, torch.Tensor]:
    """:func:`convert` to the official (= swiftlearn) layout."""
    return convert(source, "official")


def to_timm(source) -> dict[str, torch.Tensor]:
    """:func:`convert` to timm's layout, for ``timm.create_model("swiftformer_*")``."""
    return convert(source, "timm")


def to_hf(source) -> dict[str, torch.Tensor]:
    """:func:`convert` to Hugging Face's ``SwiftFormerForImageClassification`` layout."""
    return convert(source, "hf")


# ---------------------------------------------------------------- loading


def load_checkpoint(source, model: str | nn.Module | None = None, num_classes: int | None = None,
                    formulation: str | None = None, drop_head: bool = False,
                    **kwargs) -> SwiftFormer:
    """Build (or fill) a SwiftFormer from a checkpoint in any known format.

    Args:
        source: a path, a state dict (official, timm, HF or swiftlearn layout), a dict wrapping
            one, or a model to copy weights from.
        model: a variant name (``"swiftformer_xs"``, ``"xs"``, ...), a :class:`SwiftFormer` to
            load into, or ``None`` to infer the variant from the tensors.
        num_classes: classifier outputs; ``None`` takes the checkpoint's.
        formulation: attention formulation; ``None`` takes the one the source's weights were
            trained with (:data:`SOURCE_FORMULATION`). Ignored when ``model`` is a module.
        drop_head: leave the classifier heads freshly initialised (fine-tuning on other classes).
            A checkpoint without heads (a backbone) leaves the heads and the final norm as built.
        **kwargs: forwarded to :class:`SwiftFormer` when the model is built here.

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointMismatchError: the tensors do not fit; the message names the detected format,
            the first missing/unexpected keys and the likely cause.
    """
    ckpt = read_checkpoint(source, formulation)
    sd = dict(ckpt.state_dict)
    if drop_head:
        sd = {k: v for k, v in sd.items() if not k.startswith(_HEADS)}
    if isinstance(model, nn.Module):
        target = model
        if formulation is None and ckpt.format == "hf" and any(
                getattr(m, "formulation", None) == "normalize" for m in target.modules()):
            warnings.warn("Hugging Face SwiftFormer weights were trained with "
                          "formulation='legacy_softmax'; this model normalises instead",
                          stacklevel=2)
    else:
        if drop_head and num_classes is None:
            raise ValueError("drop_head=True builds new heads: pass num_classes too")
        if num_classes is None:
            num_classes = ckpt.num_classes
        kwargs.setdefault("distillation",
                          ckpt.distillation if ckpt.num_classes and not drop_head else True)
        kwargs.update(num_classes=num_classes, formulation=ckpt.formulation)
        for key, value in ckpt.arch.items():  # the token mixer the checkpoint was trained with
            kwargs.setdefault(key, value)
        name = model if model is not None else ckpt.variant
        # no named variant: build the architecture the tensors describe
        target = build_model(name, **kwargs) if name else \
            SwiftFormer(ckpt.depths, ckpt.widths, **kwargs)
    sd = _fit_heads(sd, target, ckpt)
    # a backbone-only checkpoint (e.g. HF's SwiftFormerModel) leaves the classifier as built
    fresh = _HEADS + ("norm.",) if not ckpt.num_classes else _HEADS if drop_head else ()
    _check_fit(target, sd, ckpt, fresh)
    target.load_state_dict(sd, strict=not fresh)
    if ckpt.meta.get("classes") and not drop_head:
        target.classes = list(ckpt.meta["classes"])  # class names from a swiftlearn checkpoint
    return target.eval()


def _fit_heads(sd: dict, model: nn.Module, ckpt: Checkpoint) -> dict:
    """Reconcile one head vs two without changing the evaluation output."""
    has_dist = isinstance(getattr(model, "dist_head", None), nn.Linear)
    if has_dist and "head.weight" in sd and "dist_head.weight" not in sd:
        sd["dist_head.weight"], sd["dist_head.bias"] = sd["head.weight"], sd["head.bias"]
    elif not has_dist and "dist_head.weight" in sd and isinstance(model.head, nn.Linear):
        # eval averages the two heads: one linear layer with averaged weights is the same map
        sd["head.weight"] = (sd["head.weight"] + sd.pop("dist_head.weight")) / 2
        sd["head.bias"] = (sd["head.bias"] + sd.pop("dist_head.bias")) / 2
    return sd


def _check_fit(model: nn.Module, sd: dict, ckpt: Checkpoint, fresh: tuple[str, ...]) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not (fresh and k.startswith(fresh))]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: checkpoint {list(sd[k].shape)} vs model {list(v.shape)}"
              for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return
    depths = getattr(model, "depths", None)
    widths = getattr(model, "widths", None)
    wanted = variant_of(depths, widths) if depths else None
    causes = []
    if depths and (tuple(depths), tuple(widths)) != (ckpt.depths, ckpt.widths):
        causes.append(f"the checkpoint is {ckpt.variant or 'another architecture'} "
                      f"(depths {ckpt.depths}, widths {ckpt.widths}), the model "
                      f"{wanted or 'another'} (depths {tuple(depths)}, widths {tuple(widths)}); "
                      f"build it with swiftlearn.create_model({ckpt.variant!r}) or pass model=None")
    n = getattr(model, "num_classes", None)
    if n is not None and ckpt.num_classes and n != ckpt.num_classes:
        causes.append(f"the checkpoint has {ckpt.num_classes} classes, the model {n}; pass "
                      f"num_classes={ckpt.num_classes}, or drop_head=True to fine-tune new heads")
    if not causes:
        causes.append("keys renamed by hand or a model that is not a SwiftFormer")
    lines = [f"{ckpt.describe()} does not fit the model ({wanted or type(model).__name__}):"]
    for what, items in (("missing", missing), ("unexpected", unexpected),
                        ("with other shapes", shapes)):
        if items:
            lines.append(f"  {len(items)} {what} (first: {', '.join(items[:3])})")
    lines.append("Likely cause: " + "; ".join(causes) + ".")
    raise CheckpointMismatchError("\n".join(lines))
