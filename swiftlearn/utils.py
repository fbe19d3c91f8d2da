"""Small helpers shared by every layer: atomic writes, autocast, ImageNet normalisation, extras.

This module sits at the bottom of the import graph (it imports nothing from swiftlearn), so any
module may use it. Each helper exists once here instead of once per module:

* :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json`,
  :func:`atomic_torch_save`: write to a temporary sibling, then ``os.replace``, so a kill or a
  full disk leaves either the old file or the new one, never half of one.
* :func:`amp_dtype` and :func:`autocast`: the mixed-precision policy (``"auto"`` / ``"bf16"`` /
  ``"fp16"`` / ``"off"``) used by training, evaluation and the benchmarks alike.
* :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`, :func:`normalize` (images in [0, 1] or uint8)
  and :func:`normalize_pixels` (float pixels in 0-255, what Core ML and ONNX models receive).
* :func:`staging_dir` and :func:`replace_dir`: build a folder (a Core ML package, an extracted
  archive) beside its destination, then swap it in; the old folder is removed only once the new
  one is in place.
* :func:`remove_stale_temporaries`: delete the temporary siblings (``.<name>.<pid>.tmp``) that
  a killed process left, and only those whose process is gone.
* :func:`check_writable`: say before any work that an output path cannot be written.
* :class:`MissingExtraError` and :func:`require`: one way to say which ``pip install`` fixes a
  missing optional dependency.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

__all__ = [
    "AMP_MODES",
    "EXTRAS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MissingExtraError",
    "amp_dtype",
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "autocast",
    "check_writable",
    "cpu_supports_bf16",
    "normalize",
    "normalize_pixels",
    "pid_alive",
    "randomize_",
    "remove_stale_temporaries",
    "replace_dir",
    "require",
    "run_command",
    "staging_dir",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ------------------------------------------------------------------------- atomic writes


def _temporary_sibling(path: Path, old: bool = False) -> Path:
    # same folder (so os.replace is a rename on one file system), hidden, unique per process;
    # remove_stale_temporaries recognises exactly this pattern
    return path.with_name(f".{path.name}.{os.getpid()}{'.old' if old else ''}.tmp")


#: ``.<name>.<pid>.tmp`` (being written) and ``.<name>.<pid>.old.tmp`` (a folder being replaced)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?P<old>\.old)?\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (True when that cannot be told: never guess dead)."""
    if pid <= 0:
        return False
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would end it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def remove_stale_temporaries(folder: str | os.PathLike,
                             names: Iterable[str] | Callable[[str], bool]) -> list[Path]:
    """Delete the temporary siblings a killed process left in ``folder``; return them.

    Only entries named like this module's temporaries (``.<name>.<pid>.tmp``) for one of
    ``names`` (a collection of file names, or a predicate on the name) are considered, and only
    when process ``<pid>`` no longer exists. A folder that was being replaced
    (``.<name>.<pid>.old.tmp``) is put back when nothing took its place, else removed.
    """
    folder = Path(folder)
    wanted = names if callable(names) else set(names).__contains__
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if not m or not wanted(m["name"]) or pid_alive(int(m["pid"])):
            continue
        try:
            target = folder / m["name"]
            if m["old"] and not target.exists():
                os.replace(entry, target)  # the swap was interrupted: the old one is the one
                continue
            _remove(entry)
        except OSError:
            continue  # not ours to force: leave it
        removed.append(entry)
    return removed


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then move it into place with
    ``os.replace``; on any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling, then ``os.replace``)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(obj, path: str | os.PathLike, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(json.dumps(obj, indent=indent), path)


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


@contextlib.contextmanager
def staging_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` (``.<name>.<pid>.tmp``, same file system, so
    what is built in it can be renamed into place); removed with its contents on exit."""
    path = Path(path)
    stage = _temporary_sibling(path)
    if stage.exists():
        _remove(stage)
    stage.mkdir(parents=True)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def replace_dir(new: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the finished folder ``new`` to ``path``. A folder already at ``path`` is first
    renamed aside and deleted only once ``new`` is in place; if the move fails it is put back.
    """
    new, path = Path(new), Path(path)
    old = None
    if path.exists() or path.is_symlink():
        old = _temporary_sibling(path, old=True)
        if old.exists():
            _remove(old)
        os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def check_writable(path: str | os.PathLike, what: str, kind: str = "file") -> Path:
    """Raise a one-line error now, before any work, if ``path`` cannot be written later.

    ``kind="file"``: ``path`` must not be a folder; ``kind="dir"``: it must not be a file. The
    nearest existing ancestor must be a writable folder (missing folders are created later).
    Nothing is created here.
    """
    path = Path(path).expanduser()
    if kind == "file" and path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder; choose another path")
    probe = path if kind == "dir" and path.is_dir() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {path}: {probe} is a file, so no folder can be made there")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: {probe} is not writable; choose another path")
    return path


# ------------------------------------------------------------------------- precision

AMP_MODES = ("auto", "bf16", "fp16", "off")


def cpu_kind() -> dict:
    """What kind of CPU this is, for naming measurements that move with it: ``name`` (the
    model name), ``isa`` (its widest matrix or vector instructions: amx, avx512-bf16, avx512,
    avx2 or the machine type), ``flags`` (the ones that decide speed here), ``label`` for a
    table ("AMD EPYC, AVX2 (family 25 model 1)") and ``slug`` for a file name
    ("amd-epyc-zen3-avx2"; "Intel(R) Xeon(R) Processor" with AMX: "intel-xeon-amx"). Two AMD
    EPYCs of different generations get different labels and slugs: a cloud EPYC often reports no
    model number, and a Zen 4 and a Zen 5 both have AVX-512 BF16, so the slug names the
    generation (Zen 3 / 4 / 5) from the CPU family and model."""
    import platform
    import re

    name, flags, family, model = platform.processor() or platform.machine(), set(), "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and name in (platform.processor(), platform.machine()):
                name = value
            elif key == "flags" and not flags:
                flags = set(value.split())
            elif key == "cpu family" and not family:
                family = value
            elif key == "model" and not model:
                model = value
    except OSError:
        pass
    isa = next((label for flag, label in (("amx_bf16", "amx"), ("avx512_bf16", "avx512-bf16"),
                                          ("avx512f", "avx512"), ("avx2", "avx2"))
                if flag in flags), platform.machine() or "cpu")
    shown = sorted(flags & {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f",
                            "avx2", "avx_vnni"})
    where = f" (family {family} model {model})" if family else ""
    plain = re.sub(r"\((r|tm)\)|\b(processor|cpu)\b|@.*$", " ", name.lower())
    generation = _amd_generation(family, model) if "amd" in plain else ""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{plain} {generation} {isa}").strip("-")
    return {"name": name, "isa": isa, "flags": shown, "slug": slug,
            "label": f"{name}, {isa.upper().replace('-', ' ')}{where}"}


def _amd_generation(family: str, model: str) -> str:
    """AMD's core generation from ``/proc/cpuinfo``'s family and model ("zen4"), or "" where
    unknown. Family 23 is Zen 1/2, 25 is Zen 3 (models 0x00-0x0f, 0x20-0x5f) or Zen 4 (0x10-0x1f,
    0x60-0x7f, 0xa0-0xaf), 26 is Zen 5."""
    try:
        family_n, model_n = int(family), int(model)
    except ValueError:
        return ""
    if family_n == 23:
        return "zen2" if model_n >= 0x30 else "zen1"
    if family_n == 25:
        zen4 = 0x10 <= model_n <= 0x1F or 0x60 <= model_n <= 0x7F or 0xA0 <= model_n <= 0xAF
        return "zen4" if zen4 else "zen3"
    return "zen5" if family_n == 26 else ""


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast
    is faster than fp32; elsewhere bf16 on CPU is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (``None``: full float32).

    ``"auto"`` is bf16 on a GPU that supports it (else fp16) and on a CPU with native bf16
    instructions (else float32).
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    device = torch.device(device)
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


# ------------------------------------------------------------------------- normalisation


def _stats(x: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, -1, 1, 1) if x.dim() == 4 else (-1, 1, 1)
    return (torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape),
            torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape))


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (0-255) or float (0-1) images ``[B, 3, H, W]`` (or ``[3, H, W]``) -> normalised
    float32: ``(x - mean) / std``."""
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    m, s = _stats(x, mean, std)
    return (x - m) / s


def normalize_pixels(pixels: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Float pixels in 0-255 (what an exported model receives) -> normalised:
    ``(p / 255 - mean) / std``."""
    m, s = _stats(pixels, mean, std)
    return (pixels / 255.0 - m) / s


# ------------------------------------------------------------------------- optional extras

#: the extra that installs each optional package
EXTRAS = {"coremltools": "export", "onnx": "export", "onnxruntime": "export",
          "onnxscript": "export", "timm": "dev", "transformers": "dev", "safetensors": "dev",
          "playwright": "dev", "openvino": "openvino", "nncf": "openvino"}


class MissingExtraError(ImportError, RuntimeError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str | None = None):
    """Import and return ``module``, or raise :class:`MissingExtraError` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        how = f'pip install -e ".[{extra}]"' if extra else f"pip install {top}"
        what = f" ({purpose})" if purpose else ""
        raise MissingExtraError(f"{top} is not installed{what}; install it with `{how}`") from e


# ------------------------------------------------------------------------- command line


class QuietStop(RuntimeError):
    """An error that another process of the same command has already reported (the ranks of a
    data-parallel run other than 0, when rank 0 refused): exit status 1 without a message."""


def _raised_in(error: BaseException) -> str | None:
    """The installed library (torch, numpy, ...) that raised ``error``, or None when it came
    from swiftlearn's own code (a refusal with its message) or a script: a library's error is
    more likely a bug than a user's mistake."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or isinstance(error, FileNotFoundError):
        return None
    parts = Path(tb.tb_frame.f_code.co_filename).parts
    for folder in ("site-packages", "dist-packages"):  # an installed library's code
        if folder in parts and parts.index(folder) + 1 < len(parts):
            name = parts[parts.index(folder) + 1]
            return None if name == __package__ else name  # swiftlearn installed, not editable
    return None


def run_command(parser, argv=None) -> int:
    """Parse ``argv`` and run the chosen sub-command's ``func``; a user error (``ValueError``,
    ``FileNotFoundError``, ``RuntimeError``) or a refusal of the system (``OSError``: no space
    left, read-only file system) becomes one line on stderr and exit status 1. An error raised
    inside a library rather than by swiftlearn gets a second line saying how to see its
    traceback: ``SWIFTLEARN_TRACEBACK=1`` lets every error through with its traceback."""
    import os
    import sys

    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to re-launch the same command
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if os.environ.get("SWIFTLEARN_TRACEBACK") == "1":
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except QuietStop:
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        if (where := _raised_in(e)) is not None:
            print(f"{parser.prog} {args.command}: (raised inside {where}, not by swiftlearn: "
                  "run the command again with SWIFTLEARN_TRACEBACK=1 to see the traceback, and "
                  "report it if it looks like a bug)", file=sys.stderr)
        return 1
    except OSError as e:  # the machine said no: disk full, read-only, permissions
        where = f": {e.filename}" if e.filename else ""
        print(f"{parser.prog} {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0, bias_std: float = 0.1) -> torch.nn.Module:
    """Give every float tensor of ``module`` a random value that matters, in place.

    A freshly built SwiftFormer hides mistakes: its BatchNorms are identities (mean 0, var 1)
    and the layer scales of the attention and MLP branches start at 1e-5, so a forgotten term, a
    wrong fold or a misnamed tensor changes the output by almost nothing. After this, BatchNorm
    variances, 1-D weights and layer scales are positive around 1 (uniform 0.5-1.5), means and
    biases are N(0, ``bias_std``), and the other weights N(0, 0.8 / fan-in). The draws follow
    the state dict's order from one generator, so the same seed gives the same tensors for
    swiftlearn, timm and Hugging Face SwiftFormers. Returns ``module``.
    """
    g = torch.Generator().manual_seed(seed)
    for name, t in module.state_dict().items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var") or "layer_scale" in name or (
                t.dim() <= 1 and name.endswith("weight")):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith(("running_mean", "bias")):
            t.copy_(torch.randn(t.shape, generator=g) * bias_std)
        else:
            t.copy_(torch.randn(t.shape, generator=g) * 0.8 / t[0].numel() ** 0.5)
    return module
