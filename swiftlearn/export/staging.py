"""Where an export builds: one temporary sibling of its output holds everything it writes.

Every exporter (:func:`~swiftlearn.export.to_coreml`, :func:`~swiftlearn.export.compress.
compress_coreml`, :func:`~swiftlearn.export.to_onnx`, :func:`~swiftlearn.export.quantize.
quantize_int8` and ``swiftlearn export``) works inside :func:`export_stage`, because:

* the stage is ``.<name>.<pid>.tmp`` beside the output (:func:`swiftlearn.utils.staging_dir`), on
  the same file system, so the result is renamed into place only once complete; it is removed
  when the export ends, and the next export into that folder sweeps one a kill left
  (:func:`swiftlearn.utils.remove_stale_temporaries`: only siblings whose process is gone);
* the system temporary folder is redirected into the stage meanwhile (``tempfile.tempdir`` and
  ``TMPDIR``): coremltools builds every converted or compressed model as a ``tmp*.mlpackage``
  there and deletes it only when the interpreter exits, and ONNX Runtime's quantiser writes its
  calibration model there, so a killed export would otherwise litter ``/tmp`` for good;
* a write the disk refuses (full, over quota, over the file-size limit; coremltools says only
  "Unknown error occurred while writing data") becomes one :class:`DiskFullError` line naming
  the folder, the space the export needs and the space there is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..utils import remove_stale_temporaries, staging_dir

__all__ = ["DiskFullError", "export_stage"]

#: errno values of a write the disk refused: full, over quota, over the file-size limit
_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: how coremltools' MIL writer and torch's stream writer report the same thing
_REFUSED_TEXT = re.compile(r"error occurred while writing|failed writing", re.IGNORECASE)


class DiskFullError(OSError):
    """A write the disk refused; the message names the folder and the space needed."""

    def __init__(self, code, message: str, reason: str):
        super().__init__(code, message)
        self.reason = reason


@contextlib.contextmanager
def export_stage(path: str | os.PathLike, needed: int = 0) -> Iterator[Path]:
    """The export's temporary sibling of ``path``, with the system temporary folder inside it.

    ``needed``: about how many bytes the export writes (for the full-disk message). Nested
    stages (an export inside another's stage) are fine: each restores what it found.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, {path.name})  # what a killed export left
    with _disk_errors(path.parent, needed), staging_dir(path) as stage, \
            _system_temporary_folder(stage / "tmp"):
        yield stage


@contextlib.contextmanager
def _system_temporary_folder(folder: Path) -> Iterator[Path]:
    """``tempfile`` (and libraries that read ``TMPDIR``) write into ``folder`` meanwhile."""
    folder.mkdir()
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


@contextlib.contextmanager
def _disk_errors(folder: Path, needed: int) -> Iterator[None]:
    """Say "disk" when the disk refused a write: errno ENOSPC/EDQUOT/EFBIG, or the libraries'
    own words for it. An inner stage's message is restated with this (outer) export's folder
    and needs."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if isinstance(e, DiskFullError):
            reason = e.reason
        elif isinstance(e, OSError) and e.errno in _REFUSED:
            reason = e.strerror or str(e)
        elif isinstance(e, RuntimeError) and _REFUSED_TEXT.search(str(e)):
            reason = str(e).strip().splitlines()[0]
        else:
            raise
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB"
        except OSError:
            free = "an unknown amount"
        need = f"about {needed / 1e6:.1f} MB" if needed else "more space"
        raise DiskFullError(
            getattr(e, "errno", None) or errno.ENOSPC,
            f"the disk refused to write the export in {folder} ({reason}): it needs {need} "
            f"free there and {free} is free; free some disk space or choose another --out",
            reason) from e
