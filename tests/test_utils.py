"""swiftlearn.utils: atomic writes, precision policy, normalisation, missing extras."""

from __future__ import annotations

import json

import pytest
import torch

from swiftlearn import utils as U


def test_atomic_writes_replace_or_leave_the_old_file(tmp_path):
    path = tmp_path / "f.json"
    U.atomic_write_json({"a": 1}, path)
    assert json.loads(path.read_text()) == {"a": 1}

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        U.atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary left behind
    U.atomic_torch_save({"x": torch.ones(2)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt")["x"], torch.ones(2))
    U.atomic_write_bytes(b"abc", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"abc"


def test_amp_policy():
    assert U.amp_dtype("off", "cpu") is None
    assert U.amp_dtype("fp16", "cpu") is torch.float16
    assert U.amp_dtype("bf16", "cpu") is torch.bfloat16
    assert U.amp_dtype("auto", "cpu") is (torch.bfloat16 if U.cpu_supports_bf16() else None)
    with pytest.raises(ValueError, match="amp must be one of"):
        U.amp_dtype("fp8", "cpu")
    with U.autocast("cpu", None):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with U.autocast("cpu", torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_the_two_normalisations_agree_on_their_own_inputs():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, 8, 8), generator=g)
    a = U.normalize(pixels.to(torch.uint8))  # uint8 0-255
    b = U.normalize(pixels.float() / 255)  # float 0-1
    c = U.normalize_pixels(pixels.float())  # float 0-255 (exported models)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-5)
    assert U.normalize(torch.ones(3, 4, 4)).shape == (3, 4, 4)
    assert torch.allclose(U.normalize(torch.full((1, 3, 1, 1), 0.485))[0, 0], torch.zeros(1, 1))


def test_a_missing_extra_names_the_install_command():
    with pytest.raises(U.MissingExtraError, match=r'pip install -e "\.\[export\]"'):
        U.require("onnxruntime.no_such_submodule")  # the extra is named after the top package
    with pytest.raises(ImportError, match="pip install"):  # also an ImportError
        U.require("no_such_package_here")


def test_run_command_turns_user_errors_into_one_line(capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="command")

    def fail(args):
        raise ValueError("bad option; use --good")

    sub.add_parser("go").set_defaults(func=fail)
    assert U.run_command(parser, ["go"]) == 1
    assert capsys.readouterr().err.strip() == "tool go: error: bad option; use --good"
    assert U.run_command(parser, []) == 2


def _dead_pid() -> int:
    """The id of a process that has exited (its id is not reused within a test)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed_and_only_those(tmp_path):
    import os

    dead, mine = _dead_pid(), os.getpid()
    stale = tmp_path / f".last.pt.{dead}.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".last.pt.{mine}.tmp"  # a save in progress in a live process
    live.write_bytes(b"being written")
    other = tmp_path / f".notes.txt.{dead}.tmp"  # not a name the caller writes
    other.write_text("keep")
    user = tmp_path / "last.pt.123.tmp"  # not hidden: not our pattern
    user.write_text("keep")
    folder = tmp_path / f".pkg.mlpackage.{dead}.tmp"
    (folder / "Data").mkdir(parents=True)
    # a replacement interrupted after the old package was moved aside: it is put back
    aside = tmp_path / f".old.mlpackage.{dead}.old.tmp"
    aside.mkdir()
    (aside / "Manifest.json").write_text("{}")
    removed = U.remove_stale_temporaries(tmp_path, {"last.pt", "pkg.mlpackage",
                                                    "old.mlpackage"})
    assert sorted(p.name for p in removed) == sorted([stale.name, folder.name])
    assert not stale.exists() and not folder.exists()
    assert live.exists() and other.exists() and user.exists()
    assert (tmp_path / "old.mlpackage" / "Manifest.json").is_file() and not aside.exists()
    assert U.remove_stale_temporaries(tmp_path / "absent", {"x"}) == []
    assert U.pid_alive(mine) and not U.pid_alive(dead) and not U.pid_alive(0)


def test_replace_dir_swaps_in_a_finished_folder_and_keeps_the_old_on_failure(tmp_path,
                                                                              monkeypatch):
    import os

    path = tmp_path / "out.pkg"
    path.mkdir()
    (path / "old").write_text("old")
    with U.staging_dir(path) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".out.pkg.")
        (stage / "new").mkdir()
        (stage / "new" / "file").write_text("new")
        U.replace_dir(stage / "new", path)
    assert [p.name for p in path.iterdir()] == ["file"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.pkg"]  # nothing left beside it
    real_replace = os.replace

    def failing(src, dst):  # the disk fills up as the new folder is moved in
        if str(dst) == str(path) and os.path.basename(src) == "new":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    with U.staging_dir(path) as stage:
        (stage / "new").mkdir()
        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(OSError, match="No space"):
            U.replace_dir(stage / "new", path)
        monkeypatch.setattr(os, "replace", real_replace)
    assert (path / "file").read_text() == "new"  # the old folder was put back
    assert [p.name for p in tmp_path.iterdir()] == ["out.pkg"]


def test_check_writable_says_why_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    U.check_writable(tmp_path / "new" / "deeper" / "m.json", "--json")  # creates nothing
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="--json .* is a folder"):
        U.check_writable(tmp_path, "--json")
    with pytest.raises(ValueError, match="--out .* is a file, not a folder"):
        U.check_writable(tmp_path / "file", "--out", kind="dir")
    with pytest.raises(ValueError, match="is a file, so no folder can be made there"):
        U.check_writable(tmp_path / "file" / "run", "--out", kind="dir")


def test_run_command_reports_what_the_system_refused(capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="command")

    def full(args):
        raise OSError(28, "No space left on device", "/runs/x/last.pt")

    sub.add_parser("go").set_defaults(func=full)
    assert U.run_command(parser, ["go"]) == 1
    assert capsys.readouterr().err.strip() == \
        "tool go: error: No space left on device: /runs/x/last.pt"


def test_cpu_kind_names_the_cpu_and_its_widest_instructions(monkeypatch, tmp_path):
    from pathlib import Path

    from swiftlearn import utils

    cpuinfo = {
        "zen3": ("AMD EPYC", "25", "1", "fpu sse2 avx avx2 fma"),
        "zen4": ("AMD EPYC 9R14", "25", "17", "avx2 avx512f avx512_vnni avx512_bf16"),
        "zen5": ("AMD EPYC", "26", "2", "avx2 avx512f avx512_vnni avx512_bf16"),
        "spr": ("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", "6", "143",
                "avx2 avx512f avx512_bf16 amx_bf16 amx_int8"),
    }
    seen = {}
    real_read = Path.read_text
    for key, (name, family, model, flags) in cpuinfo.items():
        text = (f"processor\t: 0\nmodel name\t: {name}\ncpu family\t: {family}\n"
                f"model\t\t: {model}\nflags\t\t: {flags}\n")
        monkeypatch.setattr(Path, "read_text", lambda self, *a, _t=text, **k: _t
                            if str(self) == "/proc/cpuinfo" else real_read(self, *a, **k))
        seen[key] = utils.cpu_kind()
    assert seen["zen3"]["slug"] == "amd-epyc-zen3-avx2"
    assert seen["zen3"]["label"] == "AMD EPYC, AVX2 (family 25 model 1)"
    assert seen["zen4"]["slug"] == "amd-epyc-9r14-zen4-avx512-bf16"
    # a Zen 5 has the same flags as a Zen 4; its table must not overwrite the Zen 4's
    assert seen["zen5"]["slug"] == "amd-epyc-zen5-avx512-bf16"
    assert seen["zen5"]["label"] == "AMD EPYC, AVX512 BF16 (family 26 model 2)"
    assert seen["zen4"]["flags"] == ["avx2", "avx512_bf16", "avx512_vnni", "avx512f"]
    assert seen["spr"]["slug"] == "intel-xeon-platinum-8480-amx"
    assert len({k["slug"] for k in seen.values()}) == 4


def test_cli_errors_from_inside_a_library_say_how_to_see_the_traceback(monkeypatch, capsys):
    import argparse

    from swiftlearn.utils import run_command

    def ours(args):
        raise ValueError("--size 7 is too small; choose 32 or more")

    def torch_bug(args):
        import torch

        torch.nn.Linear(3, 4)(torch.zeros(2, 5))  # a shape error raised inside torch

    for func, lines in ((ours, 1), (torch_bug, 2)):
        parser = argparse.ArgumentParser(prog="swiftlearn")
        sub = parser.add_subparsers(dest="command")
        sub.add_parser("go").set_defaults(func=func)
        assert run_command(parser, ["go"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == lines and err[0].startswith("swiftlearn go: error: ")
        if lines == 2:
            assert "raised inside torch" in err[1] and "SWIFTLEARN_TRACEBACK=1" in err[1]
    monkeypatch.setenv("SWIFTLEARN_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        run_command(parser, ["go"])


def test_randomize_makes_every_tensor_matter_and_repeats_with_its_seed():
    from swiftlearn.model import build_model
    from swiftlearn.utils import randomize_

    a = randomize_(build_model("xs", num_classes=4), seed=3).state_dict()
    b = randomize_(build_model("xs", num_classes=4), seed=3).state_dict()
    c = randomize_(build_model("xs", num_classes=4), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])
    var = [v for k, v in a.items() if k.endswith("running_var")]
    scales = [v for k, v in a.items() if "layer_scale" in k]
    assert var and all(0.5 <= float(v.min()) and float(v.max()) <= 1.5 for v in var)
    assert scales and all(float(s.min()) >= 0.5 for s in scales)  # not the 1e-5 of a fresh net
    means = [v for k, v in a.items() if k.endswith("running_mean")]
    assert all(float(m.abs().max()) > 0 for m in means)
