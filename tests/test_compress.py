"""Core ML weight compression: the compressed packages, the interpreter's constexpr ops, accuracy.

The compressed weights are ``constexpr_*`` ops; swiftlearn.export.mil decompresses them in numpy.
Each decompressor is checked against a hand-built example and against coremltools' own numpy
semantics, the interpreter's outputs with compressed weights against the float16 program run with
the same dense weights, and a corrupted palette or scale must fail both checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools", reason="needs the export extra: pip install -e '.[export]'")
pytest.importorskip("coremltools.optimize.coreml", reason="needs coremltools >= 7")

from helpers import randomize_  # noqa: E402

from swiftlearn import cli, export  # noqa: E402
from swiftlearn.data import IMAGENETTE_CLASSES  # noqa: E402
from swiftlearn.data.synthetic import synthetic_imagenette  # noqa: E402
from swiftlearn.export import accuracy, compress, mil  # noqa: E402
from swiftlearn.model import build_model  # noqa: E402
from swiftlearn.utils import MissingExtraError  # noqa: E402

pytestmark = [pytest.mark.export,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:coremltools.*"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning:coremltools.*")]

NAMES = [name for _, name in IMAGENETTE_CLASSES]


@pytest.fixture(scope="module")
def model64():
    model = randomize_(build_model("swiftformer_xs", num_classes=10), 3).eval()
    pixels = torch.cat(export.sample_pixels(None, [(64, 64)], 8, seed=1))
    with torch.no_grad():
        spread = model(export.normalize_pixels(pixels)).std()
        for head in (model.head, model.dist_head):  # logits spread like a trained model's
            head.weight.mul_(3 / spread)
            head.bias.mul_(3 / spread)
    return model


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("compress")


@pytest.fixture(scope="module")
def pkg16(model64, outdir):
    path = outdir / "xs16.mlpackage"
    export.to_coreml(model64, path, 64)
    return path


@pytest.fixture(scope="module")
def packages(pkg16, outdir):
    """{mode: path} for int8 and palette4 (palette6's 6-bit packing is tested by hand below)."""
    out = {"none": pkg16}
    for mode in ("int8", "palette4"):
        out[mode] = outdir / f"xs_{mode}.mlpackage"
        compress.compress_coreml(pkg16, out[mode], mode)
    return out


def _pack(indices, nbits):
    """An independent, bit-by-bit packer: index i's bit b goes to stream bit i * nbits + b,
    stream bit k to bit k % 8 (LSB first) of byte k // 8."""
    out = np.zeros((len(indices) * nbits + 7) // 8, dtype=np.uint8)
    for i, value in enumerate(indices):
        for b in range(nbits):
            if (int(value) >> b) & 1:
                k = i * nbits + b
                out[k // 8] |= np.uint8(1 << (k % 8))
    return out


# ------------------------------------------------------------------------- the constexpr ops

def test_unpack_bits_hand_built():
    # 2 bits, 5 indices [0, 3, 2, 1, 3]: byte 0 = 01 10 11 00 (i3 i2 i1 i0), byte 1 = ...... 11
    packed = np.array([0b01101100, 0b00000011], dtype=np.uint8)
    assert mil.unpack_bits(packed, 2, 5).tolist() == [0, 3, 2, 1, 3]
    # 6 bits straddle bytes: 63 then 1 -> bits 111111 100000 ... -> bytes 0b01111111, 0b00000000
    assert _pack([63, 1], 6).tolist() == [0b01111111, 0b00000000]
    assert mil.unpack_bits(np.array([0b01111111, 0], np.uint8), 6, 2).tolist() == [63, 1]
    with pytest.raises(ValueError, match="fewer than"):
        mil.unpack_bits(packed, 4, 5)


@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
def test_lut_to_dense_matches_coremltools(nbits):
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import constexpr_lut_to_dense

    rng = np.random.default_rng(nbits)
    shape = np.array([5, 3, 7], dtype=np.uint32)  # 105 elements: not a whole number of bytes
    idx = rng.integers(0, 2 ** nbits, int(np.prod(shape)))
    lut = rng.standard_normal(2 ** nbits).astype(np.float16)
    packed = _pack(idx, nbits)
    got = mil.CONSTEXPR["constexpr_lut_to_dense"](indices=packed, lut=lut, shape=shape)
    assert np.array_equal(got, lut.astype(np.float32)[idx].reshape(5, 3, 7))  # by hand
    ref = constexpr_lut_to_dense.decompress(lut, packed, shape)  # coremltools' semantics
    np.testing.assert_array_equal(got, ref.astype(np.float32))


def test_affine_dequantize_matches_coremltools():
    from coremltools.converters.mil.mil.ops.defs.iOS16.constexpr_ops import (
        constexpr_affine_dequantize,
    )

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (4, 6, 3), dtype=np.int8)
    zero = rng.integers(-5, 5, 6).astype(np.int8)  # coremltools emits 0; the op allows any
    scale = (rng.random(6) * 0.1).astype(np.float16)
    got = mil.CONSTEXPR["constexpr_affine_dequantize"](
        quantized_data=q, zero_point=zero, scale=scale, axis=np.int32(1))
    by_hand = (q.astype(np.float32) - zero.astype(np.float32)[None, :, None]) \
        * scale.astype(np.float32)[None, :, None]
    np.testing.assert_allclose(got, by_hand, rtol=1e-6)
    ref = constexpr_affine_dequantize.decompress(q, zero, scale, 1)
    np.testing.assert_allclose(got, ref.astype(np.float32), rtol=1e-3, atol=1e-6)
    # scalar scale and zero point
    got = mil.CONSTEXPR["constexpr_affine_dequantize"](
        quantized_data=q, zero_point=np.int8(3), scale=np.float16(0.5), axis=np.int32(0))
    np.testing.assert_array_equal(got, (q.astype(np.float32) - 3) * 0.5)


# ------------------------------------------------------------------------- the packages

def test_compressed_packages_ops_metadata_and_size(packages):
    infos = {mode: export.inspect_coreml(p) for mode, p in packages.items()}
    assert infos["int8"].op_histogram["constexpr_affine_dequantize"] == 62
    assert infos["palette4"].op_histogram["constexpr_lut_to_dense"] == 62
    assert not any(k.startswith("constexpr") for k in infos["none"].op_histogram)
    for mode in ("int8", "palette4"):
        info = infos[mode]
        assert info.labels == NAMES and info.inputs[0]["shape"] == [64, 64]
        assert info.metadata["swiftlearn.compression"] == mode
        assert info.metadata["swiftlearn.model"] == "swiftformer_xs"
        assert info.precision == "float16"
    ratio8 = infos["int8"].weights_bytes / infos["none"].weights_bytes
    ratio4 = infos["palette4"].weights_bytes / infos["none"].weights_bytes
    assert 0.45 < ratio8 < 0.6 and 0.2 < ratio4 < 0.35  # 8 and 4 of 16 bits, plus small tensors


@pytest.mark.parametrize("mode, op", [("int8", "constexpr_affine_dequantize"),
                                      ("palette4", "constexpr_lut_to_dense")])
def test_interpreter_runs_compressed_weights(packages, model64, mode, op):
    path = packages[mode]
    assert compress.check_decompression(path) == 62  # == coremltools' materialised values
    interp = mil.MilInterpreter(mil.load_program(path))
    assert {e["op"] for e in interp.compressed.values()} == {op}
    # the float16 program computing with the same dense weights gives the same logits: the
    # decompressed tensors reach the right ops
    dense = compress.layer_weights(interp)
    base = mil.MilInterpreter(mil.load_program(packages["none"]))
    swapped = 0
    for fn_op in base.function.operations:
        if fn_op.name in dense:
            name = fn_op.inputs["weight"].name
            if tuple(base.constants[name].shape) == dense[fn_op.name].shape:
                swapped += not np.array_equal(base.constants[name].numpy(), dense[fn_op.name])
                base.constants[name] = torch.from_numpy(dense[fn_op.name])
    assert swapped >= 60  # the compression changed (almost) every large weight
    pixels = torch.cat(export.sample_pixels(None, [(64, 64)], 3, seed=4)).numpy()
    logits = interp.logits_name()
    got = interp.run({"image": pixels}, fetch=[logits])[logits]
    want = base.run({"image": pixels}, fetch=[base.logits_name()])[base.logits_name()]
    np.testing.assert_allclose(got, want, atol=1e-5)
    # and the compression is visible against PyTorch, but small at int8
    report = export.verify_coreml(path, model64, n=3, strict=False)
    assert report.max_abs_logits > export.FP16_TOLERANCE / 20
    if mode == "int8":
        assert report.max_abs_logits < 0.5 and report.top1_agreement == 1.0


@pytest.mark.parametrize("mode, field", [("palette4", "lut"), ("int8", "scale")])
def test_corrupted_palette_or_scale_fails(packages, mode, field):
    """Negative control: one wrong palette entry / one wrong per-channel scale is caught by the
    decompression check and moves the logits far past the float16 tolerance."""
    interp = mil.MilInterpreter(mil.load_program(packages[mode]))
    pixels = torch.cat(export.sample_pixels(None, [(64, 64)], 2, seed=6)).numpy()
    logits = interp.logits_name()
    before = interp.run({"image": pixels}, fetch=[logits])[logits]
    assert compress.check_decompression(interp) == 62
    name = max(interp.compressed, key=lambda n: interp.constants[n].numel())  # a large weight
    values = interp.compressed[name][field]
    i = int(np.abs(values.astype(np.float32)).argmax())
    values.reshape(-1)[i] = values.reshape(-1)[i] * np.float16(-3)
    interp.decompress()
    with pytest.raises(RuntimeError, match="differs from coremltools'"):
        compress.check_decompression(interp)
    after = interp.run({"image": pixels}, fetch=[logits])[logits]
    assert np.abs(after - before).max() > export.FP16_TOLERANCE


def test_unknown_constexpr_op_is_named(packages, monkeypatch):
    program = mil.load_program(packages["palette4"])
    monkeypatch.delitem(mil.CONSTEXPR, "constexpr_lut_to_dense")
    with pytest.raises(NotImplementedError, match=r"constexpr_lut_to_dense \(x62\)"):
        mil.MilInterpreter(program)


def test_batched_run_equals_one_image_at_a_time(packages):
    interp = mil.MilInterpreter(mil.load_program(packages["int8"]))
    pixels = torch.cat(export.sample_pixels(None, [(64, 64)], 3, seed=7)).numpy()
    logits = interp.logits_name()
    # unrounded: equal up to float32 summation order; rounded to fp16 between ops, that order
    # can flip an ulp (4e-3 at 4.0) somewhere, so a few ulps there
    for round_fp16, atol in ((False, 1e-4), (True, export.FP16_TOLERANCE)):
        batched = interp.run({"image": pixels}, fetch=[logits], round_fp16=round_fp16)
        for i in range(3):
            single = interp.run({"image": pixels[i:i + 1]}, fetch=[logits],
                                round_fp16=round_fp16)
            np.testing.assert_allclose(batched[logits][i:i + 1], single[logits], atol=atol)
            assert batched["classLabel"][i] == single["classLabel"]


def test_batched_run_refuses_ops_across_the_batch(packages):
    interp = mil.MilInterpreter(mil.load_program(packages["none"]))
    reshape = next(op for op in interp.function.operations if op.op_type == "reshape")
    x = torch.zeros(2, 4, 8)
    with pytest.raises(NotImplementedError, match="does not keep axis 0 as the batch"):
        mil._batched_args(reshape, {"x": x, "shape": torch.tensor([2, 32])}, 2)
    assert mil._batched_args(reshape, {"x": x, "shape": torch.tensor([1, 32])}, 2)["shape"] \
        == [2, 32]


# ------------------------------------------------------------------------- errors

def test_compression_errors(pkg16, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown compression 'int3'; choose one of none, int8"):
        compress.compress_coreml(pkg16, tmp_path / "x.mlpackage", "int3")
    with pytest.raises(ValueError, match=r"\.mlpackage"):
        compress.compress_coreml(pkg16, tmp_path / "x.onnx", "int8")
    with pytest.raises(FileNotFoundError, match="no Core ML package"):
        compress.compress_coreml(tmp_path / "missing.mlpackage", tmp_path / "y.mlpackage", "int8")
    import importlib

    real = importlib.import_module

    def no_optimize(name, *a, **k):
        if name == "coremltools.optimize.coreml":
            raise ImportError("No module named 'coremltools.optimize'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_optimize)
    with pytest.raises(MissingExtraError, match="has no coremltools.optimize.coreml"):
        compress.import_optimize()


# ------------------------------------------------------------------------- accuracy helper

def test_package_accuracy_on_a_tiny_set(packages, model64):
    pixels = torch.cat(export.sample_pixels(None, [(64, 64)], 6, seed=8))
    torch_pred = accuracy.torch_predictions(model64, pixels)
    labels = torch_pred.copy()
    labels[:2] = (labels[:2] + 1) % 10  # two images PyTorch gets wrong
    report = accuracy.package_accuracy(packages["none"], model64, pixels, labels, batch_size=4)
    assert report.n == 6 and report.torch_top1 == pytest.approx(100 * 4 / 6)
    assert report.agreement == 100.0 and report.top1 == report.torch_top1
    assert np.array_equal(report.pred, torch_pred)
    # with PyTorch's predictions handed in, a wrong one shows up as disagreement
    wrong = torch_pred.copy()
    wrong[0] = (wrong[0] + 1) % 10
    report = accuracy.package_accuracy(packages["none"], model64, pixels, labels,
                                       torch_pred=wrong)
    assert report.agreement == pytest.approx(100 * 5 / 6)
    assert "6 images" in str(report)
    with pytest.raises(ValueError, match="as many labels as pictures"):
        accuracy.package_accuracy(packages["none"], model64, pixels, labels[:3])
    with pytest.raises(ValueError, match="takes 64x64 pictures"):
        accuracy.package_accuracy(packages["none"], model64, torch.zeros(1, 3, 96, 96), [0])


def test_validation_pixels_from_a_tiny_root(tmp_path):
    root = synthetic_imagenette(tmp_path / "data", per_class=1, size=40, val_per_class=2)
    pixels, labels, classes = accuracy.validation_pixels(
        root, 48, cache_size=40, per_class=1, cache_dir=tmp_path / "cache")
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (10, 3, 48, 48)
    assert labels.tolist() == list(range(10)) and len(classes) == 10


# ------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def checkpoint(model64, outdir):
    path = outdir / "xs.pt"
    torch.save({"model": model64.state_dict(), "classes": [w for w, _ in IMAGENETTE_CLASSES],
                "config": {"model": "swiftformer_xs", "img_size": 64, "eval_size": 0}}, path)
    return path


def test_cli_exports_a_compressed_package(checkpoint, outdir, capsys):
    out = outdir / "cli_int8.mlpackage"
    code = cli.main(["export", "--checkpoint", str(checkpoint), "--format", "coreml", "--out",
                     str(out), "--compress", "int8"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "MIL interpreter (float16)" in printed and "OK" in printed  # the fp16 package first
    assert "62 compressed weights decompress as coremltools" in printed
    assert "int8 weights vs PyTorch fp32" in printed
    info = export.inspect_coreml(out)
    assert info.op_histogram["constexpr_affine_dequantize"] == 62
    assert info.metadata["swiftlearn.compression"] == "int8"
    assert [p.name for p in outdir.iterdir() if p.name.startswith(".cli_int8")] == []


@pytest.mark.parametrize("args, message", [
    (["--format", "coreml", "--out", "m.mlpackage", "--compress", "int3"],
     "unknown compression 'int3'; choose one of none, int8, palette6, palette4"),
    (["--format", "onnx", "--out", "m.onnx", "--compress", "int8"],
     "--compress is for --format coreml only (for an int8 ONNX model use --quantize int8)"),
    (["--format", "coreml", "--out", "m.mlpackage", "--compress", "palette4", "--precision",
      "float32"], "drop --precision float32"),
])
def test_cli_compress_errors(checkpoint, capsys, args, message):
    assert cli.main(["export", "--checkpoint", str(checkpoint), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_without_the_optimize_module(checkpoint, capsys, monkeypatch, tmp_path):
    def missing():
        raise MissingExtraError("coremltools 6.3 has no coremltools.optimize.coreml (weight "
                                "compression needs coremltools >= 7); install the export extra")

    monkeypatch.setattr(compress, "import_optimize", missing)
    out = tmp_path / "m.mlpackage"
    code = cli.main(["export", "--checkpoint", str(checkpoint), "--format", "coreml", "--out",
                     str(out), "--compress", "palette6"])
    assert code == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "has no coremltools.optimize.coreml" in err and len(err.strip().splitlines()) == 1
