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
