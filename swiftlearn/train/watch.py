"""Run ``swiftlearn train`` as a command from Python (a notebook) and watch it epoch by epoch.

A notebook kernel is one process, but the quick recipe trains with two data-parallel worker
processes (``processes=2``), which only the command can start. :func:`train_command` runs the
very command a learner would type, in a child process, reads the run folder's
``history.json`` as each epoch lands (the trainer writes it atomically), hands every new row to
``callback`` and returns the whole history. Interrupting the kernel stops the run; the run
folder keeps its last checkpoint, and the same call with ``"--resume"`` continues it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["train_command"]


def _rows(out: Path) -> list[dict]:
    try:
        return json.loads((out / "history.json").read_text())
    except (OSError, ValueError):  # not written yet
        return []


def train_command(args: Sequence[str], out: str | os.PathLike,
                  callback: Callable[[dict], None] | None = None, poll_s: float = 2.0,
                  env: dict | None = None) -> list[dict]:
    """Run ``swiftlearn train *args --out out`` in a child process; ``callback(row)`` for each
    history row as it is written; returns the history.

    Raises:
        RuntimeError: the command failed; the message is its own error line (or the end of
            what it printed).
    """
    out = Path(out)
    cmd = [sys.executable, "-m", "swiftlearn.cli", "train", *map(str, args), "--out", str(out)]
    seen = 0
    # files, not pipes: a pipe nobody reads while we poll would fill and stop the child
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    try:
        while True:
            done = proc.poll() is not None
            rows = _rows(out)
            for row in rows[seen:]:
                if callback is not None:
                    callback(row)
            seen = max(seen, len(rows))
            if done:
                break
            time.sleep(poll_s)
    except BaseException:  # KeyboardInterrupt in a notebook: stop the run, keep its folder
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    proc.wait()
    log.seek(0)
    printed = log.read()
    log.close()
    if proc.returncode != 0:
        lines = [line for line in printed.strip().splitlines() if line.strip()]
        errors = [line for line in lines if ": error: " in line]
        raise RuntimeError((errors[0] if errors else "\n".join(lines[-5:]))
                           or f"swiftlearn train stopped with exit status {proc.returncode}")
    return _rows(out)
