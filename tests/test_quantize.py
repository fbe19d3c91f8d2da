"""Static int8 through ONNX Runtime: ``swiftlearn export --format onnx --quantize int8``.

The trained XS (assets/) at 64x64 keeps this fast; real Imagenette images are copied into
tmp_path as the calibration folder (the tests skip without an Imagenette root). Negative
controls: an empty calibration folder, a corrupted scale, mismatched labels.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs the export extra: pip install -e '.[export]'")
pytest.importorskip("onnxscript", reason="needs the export extra: pip install -e '.[export]'")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from swiftlearn import cli  # noqa: E402
from swiftlearn.checkpoints import load_trained  # noqa: E402
from swiftlearn.export import OnnxRunner, to_onnx  # noqa: E402
from swiftlearn.export import quantize as q  # noqa: E402

pytestmark = pytest.mark.export

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "assets" / "swiftformer_xs_imagenette.pt"
SIZE = 64


@pytest.fixture(scope="module")
def trained():
    if not CHECKPOINT.is_file():
        pytest.skip(f"no trained model at {CHECKPOINT}")
    return load_trained(CHECKPOINT)


@pytest.fixture(scope="module")
def calib_dir(imagenette_root, tmp_path_factory):
    """20 real training images, two per class, copied into a plain folder tree."""
    folder = tmp_path_factory.mktemp("calib")
    for wnid in sorted(p.name for p in (imagenette_root / "train").iterdir() if p.is_dir()):
        (folder / wnid).mkdir()
        for src in sorted((imagenette_root / "train" / wnid).iterdir())[:2]:
            shutil.copy(src, folder / wnid / src.name)
    return folder


@pytest.fixture(scope="module")
def int8_cli(trained, calib_dir, tmp_path_factory):
    """The CLI's int8 model of the trained checkpoint, and what it printed."""
    out = tmp_path_factory.mktemp("int8") / "xs_int8.onnx"
    code = cli.main(["export", "--checkpoint", str(CHECKPOINT), "--format", "onnx",
                     "--quantize", "int8", "--calibration-data", str(calib_dir),
                     "--calibration-images", "12", "--image-size", str(SIZE), "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def fp32_path(trained, tmp_path_factory):
    return to_onnx(trained, tmp_path_factory.mktemp("fp32") / "xs.onnx", SIZE)


# ------------------------------------------------------------------------- calibration data


def test_calibration_images_are_a_fixed_sample(calib_dir):
    a = q.calibration_images(calib_dir, 5, SIZE, seed=0)
    b = q.calibration_images(calib_dir, 5, SIZE, seed=0)
    c = q.calibration_images(calib_dir, 5, SIZE, seed=1)
    assert a.shape == (5, 3, SIZE, SIZE) and torch.equal(a, b) and not torch.equal(a, c)
    assert len(q.calibration_images(calib_dir, 1000, SIZE)) == 20  # all there are
    # its own normalisation: the same pixels under another mean/std
    d = q.calibration_images(calib_dir, 5, SIZE, seed=0, mean=(0.5,) * 3, std=(0.5,) * 3)
    imagenet_std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    imagenet_mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    torch.testing.assert_close(d, (a * imagenet_std + imagenet_mean - 0.5) / 0.5,
                               atol=1e-5, rtol=0)


def test_calibration_errors_are_one_clear_line(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no .jpg/.jpeg/.png image"):
        q.calibration_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a folder"):
        q.calibration_images(tmp_path / "missing")
    with pytest.raises(ValueError, match="at least one image"):
        q.calibration_images(tmp_path, n=0)


def test_calibration_skips_unreadable_images_and_names_each(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    (tmp_path / "cut.png").write_bytes((tmp_path / "0.png").read_bytes()[:60])  # truncated
    with pytest.warns(RuntimeWarning) as caught:
        images = q.calibration_images(tmp_path, 10, 32)
    assert images.shape == (4, 3, 32, 32)  # every readable image, none twice
    said = sorted(str(w.message) for w in caught)
    assert said == [f"skipped {tmp_path / name}: corrupt or unreadable, not used for calibration "
                    "(delete or replace it)" for name in ("broken.jpg", "cut.png")]
    with pytest.warns(RuntimeWarning):  # the next readable image takes a skipped one's place
        assert len(q.calibration_images(tmp_path, 4, 32)) == 4
    for name in ("0.png", "1.png", "2.png", "3.png"):
        (tmp_path / name).write_bytes(b"")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="none of its 6 images"):
        q.calibration_images(tmp_path, 10, 32)


# ------------------------------------------------------------------------- graph passes


def test_graph_passes_are_exact_and_do_something(fp32_path, trained, tmp_path):
    pre = tmp_path / "pre.onnx"
    counts = q.prepare_for_quantization(fp32_path, pre)
    # XS: 4 MLP BatchNorms in front of a 1x1 conv, 12 normalisations' expands, a layer scale
    # after the last conv of every ConvEncoder, local representation and MLP (its 20 GELUs are
    # one Gelu op each already: opset 20)
    assert counts == {"fold_bn_into_conv": 4, "fold_conv_scale": 20, "drop_broadcast_expand": 12}
    ops = [n.op_type for n in onnx.load(str(pre)).graph.node]
    assert "Erf" not in ops and "Expand" not in ops and ops.count("Gelu") == 20
    x = torch.randn(3, 3, SIZE, SIZE)
    np.testing.assert_allclose(OnnxRunner(pre)(x), OnnxRunner(fp32_path)(x), atol=1e-4, rtol=0)
    # a pass run again finds nothing left to do
    proto = onnx.load(str(pre))
    assert q.fold_bn_into_conv(proto) == q.drop_broadcast_expand(proto) == 0


# ------------------------------------------------------------------------- the CLI end to end


def test_cli_writes_a_verified_int8_model(int8_cli, trained, calib_dir, capsys):
    ops = {n.op_type for n in onnx.load(str(int8_cli)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Gelu"} <= ops
    # int8 weights: the file is about a quarter of the fp32 one (3.5 M parameters)
    assert int8_cli.stat().st_size < 5e6
    images = q.calibration_images(calib_dir, 20, SIZE, seed=3)
    report = q.check_int8(int8_cli, trained, images)
    assert report.ok and report.relative_error < 0.15 and report.top1_agreement >= 0.8
    assert not list(int8_cli.parent.glob(".*tmp*"))  # no staging folder left behind


def test_cli_replaces_its_output_atomically(int8_cli, calib_dir, capsys):
    before = int8_cli.read_bytes()
    code = cli.main(["export", "--checkpoint", str(CHECKPOINT), "--format", "onnx",
                     "--quantize", "int8", "--calibration-data", str(calib_dir / "missing"),
                     "--out", str(int8_cli)])
    assert code == 1 and "is not a folder" in capsys.readouterr().err
    assert int8_cli.read_bytes() == before  # a refused run leaves the file as it was


@pytest.mark.parametrize("extra, message", [
    (["--format", "coreml", "--out", "m.mlpackage", "--quantize", "int8",
      "--calibration-data", "."], "use --format onnx"),
    (["--format", "onnx", "--out", "m.onnx", "--quantize", "int8"], "needs --calibration-data"),
    (["--format", "onnx", "--out", "m.onnx", "--calibration-data", "."], "add --quantize int8"),
    (["--format", "onnx", "--out", "m.onnx", "--quantize", "int8", "--calibration-data", ".",
      "--calibration-images", "0"], "--calibration-images must be >= 1"),
])
def test_cli_refuses_wrong_quantize_flags(extra, message, capsys):
    assert cli.main(["export", "--checkpoint", str(CHECKPOINT), *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_empty_calibration_folder_is_one_line(tmp_path, trained, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "m.onnx"
    code = cli.main(["export", "--checkpoint", str(CHECKPOINT), "--format", "onnx",
                     "--quantize", "int8", "--calibration-data", str(tmp_path / "empty"),
                     "--image-size", str(SIZE), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "holds no .jpg/.jpeg/.png image" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------- negative controls


def _corrupt_head_scale(src: Path, dst: Path, factor: float) -> None:
    """Multiply the scale that dequantises the classifier's weights by ``factor``."""
    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    gemm = [n for n in graph.node if n.op_type == "Gemm"][-1]  # the (averaged) head
    dq = producer[gemm.input[1]]
    assert dq.op_type == "DequantizeLinear"
    scale = inits[dq.input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * factor, scale.name))
    onnx.save(model, str(dst))


def test_a_corrupted_scale_fails_the_check(int8_cli, trained, calib_dir, tmp_path):
    images = q.calibration_images(calib_dir, 6, SIZE, seed=5)
    assert q.check_int8(int8_cli, trained, images).ok  # the control passes
    bad = tmp_path / "bad.onnx"
    _corrupt_head_scale(int8_cli, bad, 3.0)
    with pytest.raises(RuntimeError, match="does not match PyTorch"):
        q.check_int8(bad, trained, images)
    report = q.check_int8(bad, trained, images, strict=False)
    assert not report.ok and report.relative_error > 0.5


def test_check_needs_the_eval_model(int8_cli, trained):
    trained.train()
    try:
        with pytest.raises(ValueError, match="model.eval"):
            q.check_int8(int8_cli, trained, torch.zeros(1, 3, SIZE, SIZE))
    finally:
        trained.eval()


# ------------------------------------------------------------------------- accuracy helper


def test_accuracy_helper_on_a_tiny_set(int8_cli, fp32_path, trained, calib_dir):
    images = q.calibration_images(calib_dir, 20, SIZE, seed=7)
    with torch.no_grad():
        torch_pred = trained(images).argmax(1).numpy()
    labels = torch_pred.copy()
    labels[:5] = (labels[:5] + 1) % 10  # five labels PyTorch gets wrong
    fp32 = q.onnx_accuracy(fp32_path, trained, images, labels, batch_size=8)
    assert (fp32.n, fp32.torch_top1, fp32.top1, fp32.agreement) == (20, 75.0, 75.0, 100.0)
    int8 = q.onnx_accuracy(int8_cli, trained, images, labels, torch_pred=torch_pred)
    assert int8.torch_top1 == 75.0
    expected = 100 * float((int8.pred == labels).mean())
    assert int8.top1 == pytest.approx(expected)
    assert int8.agreement == pytest.approx(100 * float((int8.pred == torch_pred).mean()))
    assert "20 images" in str(int8)
    with pytest.raises(ValueError, match="as many labels as images"):
        q.onnx_accuracy(fp32_path, trained, images, labels[:3])


# ------------------------------------------------------------------------- bench row


@pytest.mark.slow
def test_bench_has_an_int8_row_and_the_best_path_goal(calib_dir):
    pytest.importorskip("timm")
    from swiftlearn import bench

    r = bench.run_latency(["swiftformer_xs"], threads=(1,), rounds=1, repeats=1, warmup=0,
                          size=64, onnx=True, int8=True, calibration_root=calib_dir)
    import importlib.util

    from swiftlearn.utils import cpu_supports_bf16

    backends = [row["backend"] for row in r["rows"] if row["impl"] == "swiftlearn"]
    bf16 = ["fused+bf16", "fused bf16 weights"] if cpu_supports_bf16() else []
    assert [b for b in backends if not b.startswith("openvino")] == [
        "eager", "fused", *bf16, "onnxruntime", "onnxruntime int8"]
    openvino = [b for b in backends if b.startswith("openvino")]
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        assert openvino[0] == "openvino" and openvino[-1] == "openvino int8"
        assert openvino[1:-1] in ([], ["openvino f32"])  # f32 only where the default is not
    else:
        assert openvino == [] and any("OpenVINO rows omitted" in n for n in r["notes"])
    assert any("calibrated on 20 images" in n for n in r["notes"])
    goal = r["goals"]["best_cpu_path_xs_vs_timm_xs_1thread"]
    speeds = [row["speed_vs_reference"]["1"] for row in r["rows"] if row["impl"] == "swiftlearn"]
    assert goal["value"] == max(speeds) and goal["goal"] == ">= 3"
