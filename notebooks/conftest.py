"""pytest hooks for the notebooks (``make test-notebooks``): running the course leaves nothing
behind in the temporary folder.

Every notebook keeps its scratch files in a ``tempfile.TemporaryDirectory`` and removes it in its
last cell, and the library removes what the Core ML converter writes. This checks both: the
session gets an empty temporary folder of its own (``TMPDIR``, which the notebook kernels
inherit), and fails, naming what is left, when the notebooks did not empty it. The folder itself
is this hook's own, so it is removed afterwards either way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# what other programs keep there on purpose and reuse on every run, so it is not litter:
# torch's compile cache (made at `import torch`), pytest's own folders, and onnxruntime's
# 51-byte session id file `.ses` (written at `import onnxruntime`, the same name every time)
_REUSED_PREFIXES = ("torchinductor_", "pytest-of-")
_REUSED_NAMES = {".ses"}
_STATE: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("nbval", default=False) and not config.getoption("nbval_lax",
                                                                             default=False):
        return
    scratch = Path(tempfile.mkdtemp(prefix="swiftlearn-nbval-tmp-"))
    _STATE.update(scratch=scratch, before=os.environ.get("TMPDIR"))
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # gettempdir() caches its answer: let it see TMPDIR again


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    scratch = _STATE.pop("scratch", None)
    if scratch is None:
        return
    before = _STATE.pop("before")
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None
    left = sorted(p for p in scratch.iterdir()
                  if not p.name.startswith(_REUSED_PREFIXES) and p.name not in _REUSED_NAMES)
    shutil.rmtree(scratch, ignore_errors=True)
    if left:
        report = ", ".join(f"{p.name} ({_size(p) / 1e6:.1f} MB)" for p in left)
        session.config.get_terminal_writer().line(
            f"the notebooks left {len(left)} entries in the temporary folder: {report}. "
            "Every notebook must remove what it creates (tempfile.TemporaryDirectory, cleaned up "
            "in its last cell).", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
