"""Fault injection: what a kill, a hostile file or a careless command does to the user's files.

* ``kill -9`` a tiny training run (in a child process) at fixed points: mid-epoch, inside the
  save window (half a temporary checkpoint written), between the last checkpoint and the final
  weights, and once at a random moment; then resume and compare with an uninterrupted run.
* A full disk (``RLIMIT_FSIZE`` in a child process) while saving: one line, the previous
  checkpoint intact.
* Hostile pickles through every loading entry point: the payload never runs.
* Each data-loss case of issue 11: the user's files stay as they were.
* ``kill -9`` a Core ML export right after coremltools converted, and a disk that refuses
  its weights (issue 18): nothing in the system temporary folder, nothing partial at --out,
  the killed export's temporary sibling swept by the next one.

Everything runs on CPU with one thread, tiny data made here, no network; the module takes well
under two minutes on two cores.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from swiftlearn import checkpoints as C
from swiftlearn import create_model
from swiftlearn import train as T
from swiftlearn.cli import main as cli_main

pytestmark = pytest.mark.skipif(os.name == "nt", reason="kill -9 and process ids are POSIX")

#: the tiny run, shared by the child processes and the parent (same data, same config)
_RUN = textwrap.dedent("""
    import torch
    from swiftlearn.data import CachedImages
    from swiftlearn.train import TrainConfig

    def tiny_data():
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(40) % 4
        images = torch.randint(0, 128, (40, 3, 40, 40), generator=g)
        images[:, 0] += (labels * 42)[:, None, None]
        return CachedImages(images.to(torch.uint8), labels, [f"c{i}" for i in range(4)])

    def tiny_config(out):
        return TrainConfig(out=str(out), epochs=2, batch_size=8, img_size=32,
                           warmup_epochs=0.5, ema_decay=0.9, threads=1, drop_path=0.1,
                           mixup=0.2, cutmix=1.0, mix_prob=0.7, checkpoint_every_steps=2)
""")

#: the child: runs the tiny run and SIGKILLs itself at the point named on the command line
_CHILD = _RUN + textwrap.dedent("""
    import io, os, signal, sys
    import swiftlearn.train.loop as loop
    import swiftlearn.train.state as state
    from swiftlearn.train import fit

    out, where, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    callback = None
    if where == "step":  # after step n was taken, before its checkpoint (if any) is written
        def callback(event):
            if event["event"] == "step" and event["step"] == n:
                die()
    elif where == "save":  # inside the n-th checkpoint write: half a temporary file on disk
        calls = []
        def half_save(obj, path):
            calls.append(path)
            if len(calls) < n:
                return real_save(obj, path)
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            die()
        real_save = state.atomic_torch_save
        state.atomic_torch_save = half_save
    elif where == "final":  # after the last checkpoint, before final_fp16.pt
        loop.export_weights = lambda *args, **kwargs: die()
    fit(tiny_config(out), train_data=tiny_data(), val_data=tiny_data(), callback=callback,
        progress=False)
""")

_namespace: dict = {}
exec(_RUN, _namespace)  # noqa: S102 (our own source, shared with the child processes)
tiny_data, tiny_config = _namespace["tiny_data"], _namespace["tiny_config"]


def _child(tmp_path: Path, out: Path, where: str, n: int = 0) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, str(script), str(out), where, str(n)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _equal_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    return T.fit(tiny_config(out), train_data=tiny_data(), val_data=tiny_data(), progress=False)


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------- kill -9, then resume

@pytest.mark.parametrize("where, n", [("step", 3), ("step", 8), ("save", 3), ("final", 0)])
def test_a_run_killed_at_a_fixed_point_resumes_to_the_same_weights(tmp_path, uninterrupted,
                                                                   where, n):
    out = tmp_path / "run"
    proc = _child(tmp_path, out, where, n)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    if where == "save":  # the kill hit the save window: the previous checkpoint still loads
        assert [p.name for p in out.glob(".last.pt.*.tmp")]
        ckpt = C.safe_load(out / "last.pt")
        assert ckpt["global_step"] == 4  # the 3rd save (end of epoch 1) never completed
    if where == "final":
        assert C.safe_load(out / "last.pt")["finished"] and not (out / "final_fp16.pt").exists()
    resumed = T.fit(tiny_config(out), train_data=tiny_data(), val_data=tiny_data(),
                    resume=True, progress=False)
    _equal_weights(uninterrupted.model, resumed.model)
    _equal_weights(uninterrupted.ema, resumed.ema)
    assert [h["val_top1"] for h in resumed.history] == \
        [h["val_top1"] for h in uninterrupted.history]
    assert (out / "final_fp16.pt").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # litter removed


def test_a_run_killed_at_a_random_moment_resumes_to_the_same_weights(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = _child(tmp_path, out, "none")
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(11).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)  # wherever it is: a step, a save, the validation
    proc.communicate(timeout=60)
    resumed = T.fit(tiny_config(out), train_data=tiny_data(), val_data=tiny_data(),
                    resume=True, progress=False)
    _equal_weights(uninterrupted.model, resumed.model)


_FULL_DISK = _RUN + textwrap.dedent("""
    import resource, signal, sys
    from swiftlearn.train import fit

    torch.set_num_threads(1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    limit = 1 << 20  # 1 MB: the config and the log fit, a checkpoint does not
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        fit(tiny_config(sys.argv[1]), train_data=tiny_data(), resume=True, progress=False)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    out = tmp_path / "run"

    def stop(event):
        if event["event"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        T.fit(tiny_config(out), train_data=tiny_data(), callback=stop, progress=False)
    before = (out / "last.pt").read_bytes()
    script = tmp_path / "full.py"
    script.write_text(_FULL_DISK)
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    message = proc.stderr.strip()
    assert "\n" not in message and "could not write" in message and "--resume" in message
    assert (out / "last.pt").read_bytes() == before  # the previous checkpoint, intact
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    resumed = T.fit(tiny_config(out), train_data=tiny_data(), resume=True, progress=False)
    assert len(resumed.history) == 2


# ------------------------------------------------------------------------- hostile files

class _Payload:
    """Unpickling this runs ``exec``: it would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.fixture
def hostile(tmp_path) -> tuple[list[Path], Path]:
    marker = tmp_path / "payload-ran"
    weights = create_model("xs", num_classes=4).state_dict()
    files = []
    for name, obj in [("torch.pt", {"model": weights, "config": {"model": "swiftformer_xs"},
                                    "hook": _Payload(marker)}),
                      ("nested.pt", {"model": {**weights, "x": [_Payload(marker)]}}),
                      ("bare.pt", _Payload(marker))]:
        torch.save(obj, tmp_path / name)
        files.append(tmp_path / name)
    # plain pickles (not torch files): protocol 2 reaches the GLOBAL and is refused; protocol 5
    # stops earlier at an opcode torch's unpickler does not know: called broken, never run
    for protocol in (2, 5):
        path = tmp_path / f"plain{protocol}.pkl"
        path.write_bytes(pickle.dumps({"model": _Payload(marker)}, protocol=protocol))
        files.append(path)
    return files, marker


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_hostile_pickles_never_run_through_any_loading_entry_point(hostile, tmp_path, capsys):
    files, marker = hostile
    loaders = [C.safe_load, C.read_checkpoint, C.load_trained,
               lambda p: C.load_checkpoint(p, model="xs", num_classes=4),
               lambda p: create_model("xs", num_classes=4, checkpoint=p),
               lambda p: T.export_weights(p, tmp_path / "w.pt")]
    for path in files:
        said = "not a checkpoint" if path.name == "plain5.pkl" else "not unpickled"
        for load in loaders:
            with pytest.raises(RuntimeError, match=said):
                load(path)
        with pytest.raises(RuntimeError, match=said):
            T.fit(tiny_config(tmp_path / "resume"), train_data=tiny_data(), resume=path,
                  progress=False)
        with pytest.raises(RuntimeError, match=said):
            T.fit(T.TrainConfig(out=str(tmp_path / "teach"), teacher=str(path)),
                  train_data=tiny_data(), progress=False)
        for argv in (["evaluate", "--checkpoint", str(path)], ["train", "--resume", str(path)],
                     ["export", "--checkpoint", str(path), "--format", "onnx", "--out",
                      str(tmp_path / "m.onnx")]):
            assert cli_main(argv) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and (said in err or "not installed" in err), err
    assert not marker.exists()
    assert not (tmp_path / "resume").exists() and not (tmp_path / "teach").exists()


# ------------------------------------------------------------------------- data-loss cases

def test_a_careless_train_command_leaves_the_run_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    T.fit(tiny_config(out), train_data=tiny_data(), progress=False)
    before = _hashes(out)
    with pytest.raises(ValueError, match="already holds a run"):
        T.fit(tiny_config(out), train_data=tiny_data(), progress=False)
    assert cli_main(["train", "--out", str(out), "--data", str(tmp_path / "none")]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["train", "--out", str(out), "--eval-every", "0"]) == 1
    assert "eval_every" in capsys.readouterr().err
    assert _hashes(out) == before


def test_exports_never_destroy_what_is_at_out(tmp_path, capsys):
    pytest.importorskip("coremltools")
    folder = tmp_path / "album.mlpackage"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"precious")
    file = tmp_path / "notes.mlpackage"
    file.write_text("mine")
    weights = tmp_path / "w.pt"
    torch.save({"model": create_model("xs", num_classes=4).state_dict()}, weights)
    for out in (folder, file):
        assert cli_main(["export", "--checkpoint", str(weights), "--format", "coreml", "--out",
                         str(out)]) == 1
        assert capsys.readouterr().err.count("\n") == 1
    assert (folder / "photo.jpg").read_bytes() == b"precious" and file.read_text() == "mine"



#: the child: a Core ML export that SIGKILLs itself right after coremltools converted (its
#: temporary tmp*.mlpackage exists then), or one on a disk that refuses the weights file
_EXPORT_CHILD = textwrap.dedent("""
    import os, resource, signal, sys
    import torch
    import coremltools as ct
    from swiftlearn import export

    out, where = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    real_convert = ct.convert

    def convert_then_die(*args, **kwargs):
        real_convert(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "kill":
        ct.convert = convert_then_die
    else:  # a write past 64 kB fails with EFBIG, as on a full disk (the weights are 128 kB)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(64, 1000)).eval()
    try:
        export.to_coreml(tiny, out, 40, precision="float32")
    except OSError as e:
        print(e.strerror, file=sys.stderr)
        sys.exit(1)
""")


def _tiny_classifier() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten()).eval()


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
@pytest.mark.parametrize("where", ["kill", "full disk"])
def test_a_killed_or_refused_core_ml_export_leaves_nothing_outside_its_folder(tmp_path, where):
    """Issue 18: coremltools' temporary packages used to land in the system temporary folder
    and stay there when the export was killed. They now live in the export's temporary sibling
    of --out, which the next export sweeps; a refused write is one line naming the disk."""
    pytest.importorskip("coremltools")
    system_tmp, torch_cache = tmp_path / "system-tmp", tmp_path / "torch-cache"
    system_tmp.mkdir()
    out = tmp_path / "models" / "m.mlpackage"
    script = tmp_path / "export_child.py"
    script.write_text(_EXPORT_CHILD)
    # torch keeps its own compile cache in TMPDIR (created when torch._dynamo is imported): not
    # an export's temporary, so it goes elsewhere here
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(system_tmp),
           "TORCHINDUCTOR_CACHE_DIR": str(torch_cache)}
    proc = subprocess.run([sys.executable, str(script), str(out), where], env=env,
                          capture_output=True, text=True, timeout=300)
    assert list(system_tmp.iterdir()) == []
    assert not out.exists()
    if where == "full disk":
        assert proc.returncode == 1, proc.stderr[-2000:]
        message = proc.stderr.strip().splitlines()[-1]
        assert f"the disk refused to write the export in {out.parent}" in message
        assert "MB free there" in message
        assert list(out.parent.iterdir()) == []
        return
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    [stale] = out.parent.iterdir()  # the killed export's temporary sibling, holding it all
    assert stale.name.startswith(".m.mlpackage.") and list(stale.rglob("tmp*.mlpackage"))
    from swiftlearn import export

    export.to_coreml(_tiny_classifier(), out, 40)  # the next export sweeps it
    assert [p.name for p in out.parent.iterdir()] == ["m.mlpackage"]
