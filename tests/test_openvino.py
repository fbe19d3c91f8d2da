"""OpenVINO export (``swiftlearn export --format openvino``): parity with PyTorch, a negative
control, the metadata contract, int8 through NNCF, the refusals, and no partial output."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript", reason="needs the export extra: pip install -e '.[export]'")

from helpers import randomize_, spread_logits_  # noqa: E402

from swiftlearn import cli, export  # noqa: E402
from swiftlearn.data import IMAGENETTE_CLASSES  # noqa: E402
from swiftlearn.model import build_model  # noqa: E402
from swiftlearn.utils import MissingExtraError  # noqa: E402

pytestmark = pytest.mark.export
NAMES = [name for _, name in IMAGENETTE_CLASSES]


def _model(seed: int = 0) -> torch.nn.Module:
    model = randomize_(build_model("swiftformer_xs", num_classes=10), seed).eval()
    return spread_logits_(model, torch.randn(8, 3, 64, 64, generator=torch.Generator()
                                             .manual_seed(seed)))


@pytest.fixture(scope="module")
def model64():
    return _model()


@pytest.fixture(scope="module")
def ir(model64, tmp_path_factory):
    pytest.importorskip("openvino")
    path = tmp_path_factory.mktemp("openvino") / "xs.xml"
    return export.to_openvino(model64, path, 64, labels=NAMES, mean=(0.5, 0.4, 0.3),
                              std=(0.2, 0.25, 0.3))


def test_openvino_matches_pytorch_with_dynamic_batch(ir, model64):
    report = export.verify_openvino(ir, model64)  # batches of 1 and 3, f32 precision
    assert report.ok and report.max_abs_logits <= export.FP32_TOLERANCE
    assert report.details["batch_sizes"] == [1, 3]
    runner = export.OpenVinoRunner(ir)
    assert runner(torch.randn(5, 3, 64, 64)).shape == (5, 10)
    assert runner.precision in ("f32", "bf16", "f16")  # the plugin's own choice here
    assert export.OpenVinoRunner(ir, precision="f32").precision == "f32"
    assert ir.with_suffix(".bin").stat().st_size > 4 * 3e6  # float32 weights, not fp16
    assert sorted(p.name for p in ir.parent.iterdir()) == ["xs.bin", "xs.xml"]


def test_openvino_runner_profile_names_the_kernels(ir, model64, tmp_path):
    """OpenVINO's performance counters by node type and kernel: only executed nodes, fewer
    than the ONNX graph's (the plugin fuses), each convolution with the kernel it picked."""
    onnx = pytest.importorskip("onnx")
    profile = export.OpenVinoRunner(ir, precision="f32").profile(torch.randn(1, 3, 64, 64),
                                                                 calls=3, warmup=1)
    assert profile.runtime == "openvino" and profile.run_ms is None
    convs = [o for o in profile.ops if o.op == "Convolution"]
    assert convs and all(o.kernel for o in convs)
    assert not any("bf16" in o.kernel for o in profile.ops)  # f32 was asked for
    graph = onnx.load(str(export.to_onnx(model64, tmp_path / "xs.onnx", 64))).graph
    assert 0 < profile.nodes < len(graph.node)
    assert sum(o.share for o in profile.ops) == pytest.approx(100, abs=0.1)


def test_openvino_perturbed_model_fails(ir):
    other = _model()
    with torch.no_grad():
        other.head.bias[3] += 0.1
    with pytest.raises(RuntimeError, match="the OpenVINO model disagrees"):
        export.verify_openvino(ir, other)


def test_the_ir_carries_labels_size_and_normalisation(ir):
    meta = export.openvino_metadata(ir)
    assert meta["labels"] == NAMES and meta["image_size"] == 64
    assert meta["mean"] == [0.5, 0.4, 0.3] and meta["std"] == [0.2, 0.25, 0.3]
    assert meta["weights"] == "float32"


def test_runner_refusals(ir, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no OpenVINO model"):
        export.OpenVinoRunner(tmp_path / "none.xml")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        export.OpenVinoRunner(ir, threads=0)
    with pytest.raises(ValueError, match="precision must be one of"):
        export.OpenVinoRunner(ir, precision="fp8")
    from swiftlearn.export import openvino as ovx

    monkeypatch.setattr(ovx, "cpu_supports_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bf16"):
        export.OpenVinoRunner(ir, precision="bf16")


def test_a_failed_export_leaves_the_old_ir_and_no_litter(ir, model64, tmp_path, monkeypatch):
    ov = pytest.importorskip("openvino")
    path = tmp_path / "m.xml"
    export.to_openvino(model64, path, 64)
    old = (path.read_bytes(), path.with_suffix(".bin").read_bytes())

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ov, "save_model", full_disk)
    with pytest.raises(OSError, match="No space"):
        export.to_openvino(model64, path, 64)
    assert (path.read_bytes(), path.with_suffix(".bin").read_bytes()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    with pytest.raises(ValueError, match="must end in .xml"):
        export.to_openvino(model64, tmp_path / "m.onnx", 64)


def test_int8_through_nncf_on_real_images(model64, tmp_path, imagenette_root):
    pytest.importorskip("nncf")
    from swiftlearn.export.openvino import quantize_openvino
    from swiftlearn.export.quantize import calibration_images, check_int8

    images = calibration_images(imagenette_root, 40, 64)
    path = quantize_openvino(model64, tmp_path / "int8.xml", images[:32], 64, labels=NAMES)
    report = check_int8(path, model64, images[32:], runtime="openvino")
    assert report.ok, report
    assert export.openvino_metadata(path)["weights"] == "int8 (NNCF)"
    assert path.with_suffix(".bin").stat().st_size < 0.5 * 4 * 3e6  # int8 weights
    with pytest.raises(RuntimeError, match="does not match PyTorch"):  # negative control
        other = _model(seed=1)
        check_int8(path, other, images[32:], runtime="openvino")
    with pytest.raises(ValueError, match="'mixed' or 'performance'"):
        quantize_openvino(model64, tmp_path / "bad.xml", images[:8], 64, preset="fast")
    assert not (tmp_path / "bad.xml").exists()


# ------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def checkpoint(model64, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "xs.pt"
    torch.save({"model": model64.state_dict(), "classes": [w for w, _ in IMAGENETTE_CLASSES],
                "config": {"model": "swiftformer_xs", "img_size": 64, "eval_size": 0}}, path)
    return path


def test_cli_exports_and_verifies_openvino(checkpoint, tmp_path, capsys):
    pytest.importorskip("openvino")
    out = tmp_path / "cli.xml"
    code = cli.main(["export", "--checkpoint", str(checkpoint), "--format", "openvino",
                     "--out", str(out)])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "OpenVINO (f32)" in text.out and "OK" in text.out and text.err == ""
    assert export.openvino_metadata(out)["labels"] == NAMES  # the checkpoint's classes


@pytest.mark.parametrize("args, message", [
    (["--out", "m.onnx"], "--out for --format openvino must end in .xml"),
    (["--out", "m.xml", "--precision", "float16"], "--precision is for --format coreml only "
     "(the OpenVINO graph is float32"),
    (["--out", "m.xml", "--labels", "names.txt"], "--labels is for --format coreml only"),
    (["--out", "m.xml", "--calibration-data", "."], "--calibration-data is for --quantize int8"),
    (["--out", "m.xml", "--quantize", "int8"], "--quantize int8 needs --calibration-data"),
])
def test_cli_refuses_before_any_work(checkpoint, monkeypatch, capsys, args, message):
    from swiftlearn.export import cli as export_cli

    def work(*_, **__):
        raise AssertionError("the refusal came after work began")

    for name in ("import_coremltools", "import_openvino", "require", "_load_for_export"):
        monkeypatch.setattr(export_cli, name, work)
    assert cli.main(["export", "--checkpoint", str(checkpoint), "--format", "openvino",
                     *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_without_openvino_one_line_names_the_extra(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    code = cli.main(["export", "--checkpoint", str(checkpoint), "--format", "openvino",
                     "--out", str(tmp_path / "m.xml")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "openvino is not installed" in err and 'pip install -e ".[openvino]"' in err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MissingExtraError):
        export.OpenVinoRunner(tmp_path / "m.xml")


def test_metadata_is_json_in_the_xml(ir):
    text = ir.read_text()
    assert "swiftlearn" in text
    start = text.index("swiftlearn")
    assert json.dumps(NAMES[0])[1:-1] in text[start:]
    assert np.isfinite(export.OpenVinoRunner(ir)(torch.zeros(1, 3, 64, 64))).all()
