"""Core ML and ONNX export: the saved artefacts compute what the PyTorch model computes.

The Core ML packages are read back from disk and evaluated by swiftlearn.export.mil (no Mac
needed); a perturbed weight must make the check fail. Small random SwiftFormer-XS models at 64x64
keep this fast; one float16 round trip runs at 224x224 on real photos.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools", reason="needs the export extra: pip install -e '.[export]'")

from helpers import randomize_, spread_logits_  # noqa: E402

from swiftlearn import cli, export  # noqa: E402
from swiftlearn.data import IMAGENETTE_CLASSES, load_photos  # noqa: E402
from swiftlearn.export import mil  # noqa: E402
from swiftlearn.model import build_model  # noqa: E402
from swiftlearn.utils import IMAGENET_STD  # noqa: E402

pytestmark = [pytest.mark.export,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:coremltools.*")]

NAMES = [name for _, name in IMAGENETTE_CLASSES]


def _model(size: int, seed: int = 0) -> torch.nn.Module:
    """A random XS whose every tensor matters, heads scaled so logits spread like a trained
    10-class model's (std ~3): the fp16 tolerance is an absolute one on logits."""
    model = randomize_(build_model("swiftformer_xs", num_classes=10), seed).eval()
    pixels = export.sample_pixels(None, [(size, size)], 8, seed=1)
    return spread_logits_(model, torch.cat([export.normalize_pixels(p) for p in pixels]))


@pytest.fixture(scope="module")
def model64():
    return _model(64)


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def pkg32(model64, outdir):
    """float32, default 64x64, also accepts 96x96 (flexible shapes)."""
    path = outdir / "xs32.mlpackage"
    export.to_coreml(model64, path, 64, precision="float32", enumerated_sizes=[96])
    return path


@pytest.fixture(scope="module")
def pkg16(model64, outdir):
    path = outdir / "xs16.mlpackage"
    export.to_coreml(model64, path, 64, precision="float16", description="test model",
                     version="0.1")
    return path


# ------------------------------------------------------------------------- numerical parity

def test_fp32_program_matches_pytorch_at_every_enumerated_size(pkg32, model64):
    report = export.verify_coreml(pkg32, model64, n=4)  # alternates 64x64 and 96x96
    assert report.ok and report.max_abs_logits <= export.FP32_TOLERANCE
    assert report.top1_agreement == 1.0


def test_fp16_program_matches_pytorch(pkg16, model64):
    report = export.verify_coreml(pkg16, model64, n=4)
    assert report.max_abs_logits <= export.FP16_TOLERANCE
    # the check really simulated float16: far above float32 round-off
    assert report.max_abs_logits > 1e-4
    unrounded = export.verify_coreml(pkg16, model64, n=4, round_fp16=False)
    assert unrounded.max_abs_logits < report.max_abs_logits


def test_fp16_round_trip_at_224_on_photos(outdir):
    model = _model(224, seed=1)
    path = outdir / "xs16_224.mlpackage"
    export.to_coreml(model, path)  # defaults: 224x224, float16, Imagenette labels
    photos = [p.resized(224) for p in load_photos(2)]
    report = export.verify_coreml(path, model, photos)
    assert report.ok and report.n_inputs == 2
    assert export.inspect_coreml(path).inputs[0]["shape"] == [224, 224]


def test_interpreter_label_is_pytorch_argmax(pkg32, model64):
    interp = mil.MilInterpreter(mil.load_program(pkg32))
    pixels = export.sample_pixels(None, [(96, 96)], 1, seed=5)[0]
    out = interp.run({"image": pixels.numpy()})
    with torch.no_grad():
        logits = model64(export.normalize_pixels(pixels))
    assert out["classLabel"] == NAMES[int(logits.argmax())]
    assert sum(out["classLabel_probs"].values()) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------- negative controls

def test_one_perturbed_weight_in_the_package_fails_the_check(pkg32, model64):
    interp = mil.MilInterpreter(mil.load_program(pkg32))
    convs = [op for op in interp.function.operations if op.op_type == "conv"]
    weight = convs[5].inputs["weight"].name
    pixels = export.sample_pixels(None, [(64, 64)], 1, seed=2)[0]
    with torch.no_grad():
        ref = model64(export.normalize_pixels(pixels)).numpy()
    name = interp.logits_name()
    before = interp.run({"image": pixels.numpy()}, fetch=[name])[name]
    assert np.abs(before - ref).max() <= export.FP32_TOLERANCE
    interp.constants[weight] = interp.constants[weight].clone()
    interp.constants[weight].view(-1)[0] += 0.5
    after = interp.run({"image": pixels.numpy()}, fetch=[name])[name]
    assert np.abs(after - ref).max() > export.FP16_TOLERANCE


@pytest.mark.parametrize("fixture", ["pkg32", "pkg16"])
def test_one_perturbed_pytorch_weight_fails_verify(fixture, request):
    package = request.getfixturevalue(fixture)
    other = _model(64)
    with torch.no_grad():
        other.patch_embed[0].weight[0, 0, 1, 1] += 0.5  # one tap of the first stem filter
    with pytest.raises(RuntimeError, match="disagrees with PyTorch.*FAILED"):
        export.verify_coreml(package, other, n=1)


def test_unknown_op_is_named(pkg16, monkeypatch):
    program = mil.load_program(pkg16)
    monkeypatch.delitem(mil.OPS, "gelu")
    with pytest.raises(NotImplementedError, match=r"gelu \(x20\)"):
        mil.MilInterpreter(program)


# ------------------------------------------------------------------------- package contents

def test_package_spec_metadata_and_ops(pkg16, pkg32):
    info = export.inspect_coreml(pkg16)
    assert [i["name"] for i in info.inputs] == ["image"]
    assert info.inputs[0]["type"] == "image (RGB)" and info.inputs[0]["shape"] == [64, 64]
    assert "enumerated_sizes" not in info.inputs[0]
    assert {o["name"]: o["type"] for o in info.outputs} == {
        "classLabel": "string", "classLabel_probs": "dictionary (stringKeyType -> double)"}
    assert info.labels == NAMES
    meta = info.metadata
    assert meta["short_description"] == "test model" and meta["version"] == "0.1"
    assert meta["license"] == "Apache-2.0" and meta["author"] == "swiftlearn"
    assert meta["com.apple.coreml.model.preview.type"] == "imageClassifier"
    assert meta["swiftlearn.model"] == "swiftformer_xs" and meta["swiftlearn.image_size"] == "64x64"
    assert info.precision == "float16"
    ops = info.op_histogram
    assert ops["conv"] == 61 and ops["softmax"] == 1 and ops["classify"] == 1
    assert ops["reduce_l2_norm"] == 12  # F.normalize of queries, keys and token scores x 4 stages
    assert "cast" in ops  # fp32 image -> fp16 program -> fp32 probabilities

    info32 = export.inspect_coreml(pkg32)
    assert info32.precision == "float32" and "cast" not in info32.op_histogram
    assert info32.inputs[0]["enumerated_sizes"] == [[64, 64], [96, 96]]
    assert 0.45 < info.weights_bytes / info32.weights_bytes < 0.55
    assert "float16" in str(info) and "classLabel_probs" in str(info)


def test_wrapper_normalises_exactly_and_ends_in_softmax(model64):
    wrapper = export.NormalizedClassifier(model64).eval()
    pixels = torch.randint(0, 256, (2, 3, 64, 64)).float()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model64((pixels / 255 - mean) / std).softmax(-1)
        torch.testing.assert_close(wrapper(pixels), expected, atol=1e-6, rtol=1e-5)


def test_imagetype_approximation_is_off_per_channel():
    scale, bias = export.imagetype_approximation()
    pixels = torch.randint(0, 256, (1, 3, 8, 8)).float()
    approx = pixels * scale + torch.tensor(bias).view(1, 3, 1, 1)
    exact = export.normalize_pixels(pixels)
    # one scale: channel c comes out multiplied by std_c / mean(std) around its mean
    ratio = (approx - approx.mean((2, 3), keepdim=True)) / (exact - exact.mean((2, 3), True))
    torch.testing.assert_close(ratio.mean((0, 2, 3)),
                               torch.tensor(IMAGENET_STD) / np.mean(IMAGENET_STD), atol=1e-4,
                               rtol=0)


# ------------------------------------------------------------------------- errors

def test_errors_are_clear(model64, outdir):
    path = outdir / "bad.mlpackage"
    with pytest.raises(ValueError, match="model.eval"):
        export.to_coreml(build_model("swiftformer_xs", num_classes=10), path, 64)
    with pytest.raises(ValueError, match="at least 32x32"):
        export.to_coreml(model64, path, 16)
    with pytest.raises(ValueError, match="every side must be above 32"):
        export.to_coreml(model64, path, 64, enumerated_sizes=[32])
    with pytest.raises(ValueError, match="10 outputs but 3 labels"):
        export.to_coreml(model64, path, 64, labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="precision"):
        export.to_coreml(model64, path, 64, precision="int8")
    with pytest.raises(ValueError, match=".mlpackage"):
        export.to_coreml(model64, outdir / "model.mlmodel", 64)
    with pytest.raises(FileNotFoundError):
        export.inspect_coreml(outdir / "missing.mlpackage")


def test_model_that_cannot_take_the_size():
    class Fixed(torch.nn.Module):  # a classifier hard-wired to 64x64 inputs
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 64 * 64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ValueError, match="cannot take 96x96 inputs"):
        export.to_coreml(Fixed().eval(), "x.mlpackage", 96)


def test_missing_extra_names_it(monkeypatch, model64, tmp_path):
    monkeypatch.setitem(sys.modules, "coremltools", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[export\]"'):
        export.to_coreml(model64, tmp_path / "m.mlpackage", 64)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RuntimeError, match="onnxruntime is not installed.*export"):
        export.onnxruntime_session(tmp_path / "m.onnx")


# ------------------------------------------------------------------------- ONNX

@pytest.fixture(scope="module")
def onnx_path(model64, outdir):
    pytest.importorskip("onnxruntime")
    return export.to_onnx(model64, outdir / "xs.onnx", 64)


def test_onnx_runtime_matches_pytorch_with_dynamic_batch(onnx_path, model64):
    report = export.verify_onnx(onnx_path, model64)  # batches of 1 and 3
    assert report.ok and report.max_abs_logits <= export.FP32_TOLERANCE
    assert report.details["batch_sizes"] == [1, 3]
    runner = export.OnnxRunner(onnx_path, threads=1)
    assert runner(torch.randn(5, 3, 64, 64)).shape == (5, 10)
    session = export.onnxruntime_session(onnx_path, threads=2)
    assert session.get_session_options().intra_op_num_threads == 2
    assert [i.name for i in session.get_inputs()] == ["input"]


def test_onnx_runner_profile_counts_kernels_after_the_warmup(onnx_path):
    """ONNX Runtime's own profiler, summed by op type: the warm-up runs are left out, every
    run's kernels are counted (the fp32 XS runs its 20 GELUs as 20 Gelu kernels), and the
    shares add up to the whole."""
    profile = export.OnnxRunner(onnx_path).profile(torch.randn(1, 3, 64, 64), calls=3,
                                                    warmup=2)
    assert profile.runtime == "onnxruntime" and profile.calls == 3
    ops = {o.op: o for o in profile.ops}
    assert ops["Gelu"].nodes == 20 and "Conv" in ops
    assert sum(o.share for o in profile.ops) == pytest.approx(100, abs=0.1)
    assert profile.ops == sorted(profile.ops, key=lambda o: -o.ms)
    assert 0 < profile.kernel_ms <= profile.run_ms
    assert profile.nodes == pytest.approx(sum(o.nodes for o in profile.ops), abs=0.05)
    with pytest.raises(ValueError, match="calls >= 1"):
        export.OnnxRunner(onnx_path).profile(torch.randn(1, 3, 64, 64), calls=0)


def test_pytorch_profile_counts_self_time_once(model64):
    """torch.profiler, in the same shape: the 20 GELUs of the eager XS, shares of self time that
    add up to the whole, and kernels a call (ops that call no other op) below all op calls."""
    from swiftlearn.export.profile import pytorch_profile

    profile = pytorch_profile(model64, torch.randn(1, 3, 64, 64), calls=2, warmup=1)
    ops = {o.op: o for o in profile.ops}
    assert profile.runtime == "pytorch" and ops["aten::gelu"].nodes == 20
    assert sum(o.share for o in profile.ops) == pytest.approx(100, abs=0.1)
    assert 0 < profile.nodes < sum(o.nodes for o in profile.ops)
    with pytest.raises(ValueError, match="calls >= 1"):
        pytorch_profile(model64, torch.randn(1, 3, 64, 64), calls=0)


def test_onnxruntime_events_leave_out_the_warmup_runs():
    from swiftlearn.export.profile import onnxruntime_events

    def run(ts):
        return [{"name": "model_run", "cat": "Session", "ts": ts, "dur": 900},
                {"name": "conv_kernel_time", "cat": "Node", "ts": ts + 1, "dur": 500,
                 "args": {"op_name": "Conv"}},
                {"name": "gelu_kernel_time", "cat": "Node", "ts": ts + 2, "dur": 100,
                 "args": {"op_name": "Gelu"}},
                {"name": "conv_fence_before", "cat": "Node", "ts": ts + 3, "dur": 0,
                 "args": {"op_name": "Conv"}}]

    events = run(10_000) + run(0) + run(20_000)  # the warm-up run first in time, not in list
    events[5]["dur"] = 99_999  # the warm-up run's Conv: must not count
    totals, counts, runs = onnxruntime_events(events, warmup=1)
    assert counts == {("Conv", ""): 2, ("Gelu", ""): 2} and runs == [0.9, 0.9]
    assert totals[("Conv", "")] == 1000
    with pytest.raises(ValueError, match="3 runs, not more than the 3 warm-up"):
        onnxruntime_events(events, warmup=3)


def test_onnx_writes_each_gelu_as_one_op(onnx_path):
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(onnx_path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Gelu") == 20 and "Erf" not in ops  # 20 GELUs in XS, none spelled out
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 20


def test_session_options_are_the_measured_setting():
    pytest.importorskip("onnxruntime")
    options = export.session_options(3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    with pytest.raises(ValueError, match="threads must be >= 1"):
        export.session_options(0)


def test_onnx_perturbed_model_fails(onnx_path):
    other = _model(64)
    with torch.no_grad():
        other.head.bias[3] += 0.1
    with pytest.raises(RuntimeError, match="disagrees"):
        export.verify_onnx(onnx_path, other)


# ------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def checkpoint(model64, outdir):
    path = outdir / "xs.pt"
    torch.save({"model": model64.state_dict(), "classes": [w for w, _ in IMAGENETTE_CLASSES],
                "config": {"model": "swiftformer_xs", "img_size": 64, "eval_size": 0}}, path)
    return path


def test_cli_exports_and_verifies_coreml(checkpoint, outdir, capsys):
    out = outdir / "cli.mlpackage"
    code = cli.main(["export", "--checkpoint", str(checkpoint), "--format", "coreml", "--out",
                     str(out), "--precision", "float32"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "MIL interpreter (float32)" in printed and "OK" in printed
    info = export.inspect_coreml(out)
    assert info.labels == NAMES and info.inputs[0]["shape"] == [64, 64]  # size from the config


def test_cli_uses_the_checkpoints_normalisation(model64, outdir, capsys):
    # a trained-weights file records mean/std: the package normalises with them, and the check
    # against PyTorch (which would fail with ImageNet's) uses them too
    path = outdir / "xs_stats.pt"
    torch.save({"model": model64.state_dict(), "config": {"model": "swiftformer_xs"},
                "eval_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, path)
    out = outdir / "cli_stats.mlpackage"
    code = cli.main(["export", "--checkpoint", str(path), "--format", "coreml", "--out",
                     str(out), "--precision", "float32"])
    assert code == 0, capsys.readouterr().err
    assert "OK" in capsys.readouterr().out
    meta = export.inspect_coreml(out).metadata
    assert meta["swiftlearn.mean"] == "0.5,0.5,0.5" and meta["swiftlearn.std"] == "0.25,0.25,0.25"
    assert meta["swiftlearn.image_size"] == "64x64"  # the file's eval_size


def test_cli_exports_onnx(checkpoint, outdir, capsys):
    pytest.importorskip("onnxruntime")
    out = outdir / "cli.onnx"
    code = cli.main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out",
                     str(out), "--image-size", "96"])
    assert code == 0, capsys.readouterr().err
    assert "ONNX Runtime" in capsys.readouterr().out and out.is_file()


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite", "--out", "m.tflite"], "unknown format 'tflite'"),
    (["--format", "coreml", "--out", "m.onnx"], "must end in .mlpackage"),
    (["--format", "coreml", "--out", "m.mlpackage", "--image-size", "16"], "at least 32x32"),
])
def test_cli_errors(checkpoint, capsys, args, message):
    assert cli.main(["export", "--checkpoint", str(checkpoint), *args]) == 1
    assert message in capsys.readouterr().err


def test_checkpoint_image_size():
    size = export.checkpoint_image_size
    assert size(None) is None and size({"model": {}}) is None
    assert size({"config": {"img_size": 128}}) == 128
    assert size({"config": {"img_size": 64, "eval_size": 96}}) == 96
    assert size({"config": {"img_size": 96, "epochs": 10,
                            "resize_schedule": [[0, 64], [6, 112]]}}) == 112
    assert size({"config": {"img_size": 96}, "history": [{"eval_size": 0}, {"eval_size": 160}]}) \
        == 160
    assert export.default_labels(10, [w for w, _ in IMAGENETTE_CLASSES]) == NAMES
    assert export.default_labels(3) == ["class_0", "class_1", "class_2"]


def test_cli_missing_checkpoint(tmp_path, capsys):
    code = cli.main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--format", "onnx",
                     "--out", str(tmp_path / "m.onnx")])
    assert code == 1 and "no checkpoint at" in capsys.readouterr().err


# ------------------------------------------------------------------------- macOS only

@pytest.mark.skipif(sys.platform != "darwin", reason="MLModel.predict runs only on macOS")
def test_core_ml_predict_matches_pytorch(pkg32, model64):
    report = export.verify_coreml(pkg32, model64, n=2, backend="coreml", tolerance=1e-3)
    assert report.ok


# ------------------------------------------------------------------------- never lose a package

class _FakeModel:
    """Stands in for an ``MLModel``: ``save`` writes a package (or half of one, then fails)."""

    def __init__(self, tag: str, fail: bool = False, manifest: bool = True):
        self.tag, self.fail, self.manifest = tag, fail, manifest

    def save(self, path: str) -> None:
        import json
        from pathlib import Path

        root = Path(path)
        (root / "Data" / "com.apple.CoreML").mkdir(parents=True)
        (root / "Data" / "com.apple.CoreML" / "model.mlmodel").write_text(self.tag)
        if self.fail:
            raise OSError(28, "No space left on device")
        if self.manifest:
            (root / "Manifest.json").write_text(json.dumps({"itemInfoEntries": {
                "a": {"path": "com.apple.CoreML/model.mlmodel"}}}))


def _tag(path) -> str:
    return (path / "Data" / "com.apple.CoreML" / "model.mlmodel").read_text()


def test_a_package_is_replaced_only_by_a_complete_one(tmp_path):
    from swiftlearn.export.coreml import save_package

    path = tmp_path / "m.mlpackage"
    save_package(_FakeModel("old"), path)
    save_package(_FakeModel("new"), path)
    assert _tag(path) == "new"
    with pytest.raises(OSError, match="No space"):  # a full disk while saving
        save_package(_FakeModel("broken", fail=True), path)
    assert _tag(path) == "new"
    with pytest.raises(RuntimeError, match="unreadable"):  # saved without a manifest
        save_package(_FakeModel("odd", manifest=False), path)
    assert _tag(path) == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]  # no temporaries left


def test_a_folder_that_is_not_a_package_is_never_replaced(model64, tmp_path, capsys):
    folder = tmp_path / "photos.mlpackage"  # a name a user might give any folder
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ValueError, match="not a Core ML package \\(no Manifest.json\\)"):
        export.to_coreml(model64, folder, 64)
    code = cli.main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--format", "coreml",
                     "--out", str(folder)])
    assert code == 1 and "no Manifest.json" in capsys.readouterr().err  # before loading
    assert [p.name for p in folder.iterdir()] == ["holiday.jpg"]
    assert (folder / "holiday.jpg").read_bytes() == b"precious"


def test_onnx_export_replaces_a_file_only_when_the_new_one_loads(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten()).eval()
    path = tmp_path / "m.onnx"
    export.to_onnx(tiny, path, 40)
    old = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    with pytest.raises(OSError, match="No space"):
        export.to_onnx(tiny, path, 40)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    monkeypatch.undo()
    assert onnx.load(str(path)).graph.node
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        export.to_onnx(tiny, tmp_path / "dir.onnx", 40)


# ------------------------------------------------------------------------- litter, noise, refusals

def _noisy_checkpoint(model64, path):
    """model64 with one weight almost all zero: fewer distinct values than a 64-entry palette,
    so scikit-learn's k-means (coremltools' choice under 10,000 values) warns when palettising."""
    import copy

    model = copy.deepcopy(model64)
    with torch.no_grad():
        weight = model.network[0][0].pwconv2.weight  # 9,216 values
        weight.zero_()
        weight.view(-1)[:10] = torch.linspace(-0.5, 0.5, 10)
    torch.save({"model": model.state_dict(), "classes": [w for w, _ in IMAGENETTE_CLASSES],
                "config": {"model": "swiftformer_xs", "img_size": 64, "eval_size": 0}}, path)
    return path


def test_cli_exports_leave_no_litter_and_no_library_noise(model64, tmp_path, monkeypatch,
                                                          capsys):
    """Issue 18: coremltools builds every converted and compressed model as tmp*.mlpackage in
    the system temporary folder (ONNX Runtime's quantiser writes there too): every export must
    leave that folder as it was, sweep the temporary sibling a killed export left beside --out
    (and only one whose process is gone), keep coremltools' and scikit-learn's warnings off
    stderr, and name a corrupt calibration image in one line instead of failing."""
    import re
    import tempfile
    import warnings

    from PIL import Image

    pytest.importorskip("onnxruntime")
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    checkpoint = _noisy_checkpoint(model64, tmp_path / "noisy.pt")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, pixels in enumerate(export.sample_pixels(None, [(80, 80)], 10, seed=3)):
        Image.fromarray(pixels[0].permute(1, 2, 0).byte().numpy()).save(calib / f"{i}.png")
    (calib / "broken.jpg").write_bytes(b"not a picture")
    out = tmp_path / "out"
    out.mkdir()
    dead, alive = 999_999_999, os.getppid()  # no such process / pytest's parent
    stale = out / f".xs.mlpackage.{dead}.tmp" / "tmp" / "tmpkilled.mlpackage"
    stale.mkdir(parents=True)
    (out / f".xs_int8.onnx.{dead}.tmp").mkdir()
    running = out / f".xs.mlpackage.{alive}.tmp"
    running.mkdir()  # another export's, still running: not ours to delete
    runs = {
        "coreml": ["--format", "coreml", "--out", str(out / "xs.mlpackage")],
        "palette6": ["--format", "coreml", "--out", str(out / "xs_p6.mlpackage"),
                     "--compress", "palette6"],
        "onnx": ["--format", "onnx", "--out", str(out / "xs.onnx")],
        "int8": ["--format", "onnx", "--out", str(out / "xs_int8.onnx"), "--quantize", "int8",
                 "--calibration-data", str(calib), "--calibration-images", "2"],
    }
    for name, args in runs.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = cli.main(["export", "--checkpoint", str(checkpoint), *args])
        err = capsys.readouterr().err
        assert code == 0, err
        assert sorted(p.name for p in system_tmp.iterdir()) == [], name
        noise = [f"{w.filename}: {w.message}" for w in caught
                 if re.search(r"[/\\](coremltools|sklearn)[/\\]", w.filename)]
        assert noise == [], name
        if name == "int8":
            assert err.strip().splitlines() == [
                f"swiftlearn export: warning: skipped {calib / 'broken.jpg'}: corrupt or "
                "unreadable, not used for calibration (delete or replace it)"]
        else:
            assert err == "", name
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [running.name, "xs.mlpackage", "xs.onnx", "xs_int8.onnx", "xs_p6.mlpackage"])
    assert export.inspect_coreml(out / "xs_p6.mlpackage").op_histogram[
        "constexpr_lut_to_dense"] == 62


@pytest.mark.parametrize("args, message", [
    (["--format", "coreml", "--out", "m.onnx"], "--out for --format coreml must end in "
     ".mlpackage"),
    (["--format", "coreml", "--out", "m", "--compress", "int8"], "must end in .mlpackage"),
    (["--format", "onnx", "--out", "m.onnx", "--precision", "float16"],
     "--precision is for --format coreml only"),
    (["--format", "onnx", "--out", "m.onnx", "--enumerated-sizes", "96", "128"],
     "--enumerated-sizes is for --format coreml only"),
    (["--format", "onnx", "--out", "m.onnx", "--labels", "names.txt"],
     "--labels is for --format coreml only"),
    (["--format", "onnx", "--out", "m.onnx", "--compress", "none"],
     "--compress is for --format coreml only"),
    (["--format", "onnx", "--out", "m.onnx", "--calibration-images", "50"],
     "--calibration-images is for --quantize int8"),
    (["--format", "coreml", "--out", "m.mlpackage", "--calibration-images", "50"],
     "--calibration-images is for --quantize int8"),
    (["--format", "coreml", "--out", "m.mlpackage", "--calibration-data", "."],
     "--calibration-data is for --quantize int8"),
])
def test_cli_refuses_ignored_options_before_any_work(checkpoint, monkeypatch, capsys, args,
                                                     message):
    from swiftlearn.export import cli as export_cli

    def work(*_, **__):
        raise AssertionError("the refusal came after work began")

    for name in ("import_coremltools", "require", "_load_for_export"):
        monkeypatch.setattr(export_cli, name, work)
    assert cli.main(["export", "--checkpoint", str(checkpoint), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_top1_agreement_is_not_meaningful_on_ties():
    from swiftlearn.export.verify import _compare

    def compare(got, ref):  # got and ref: one [1, K] logits array per input
        probs = [torch.as_tensor(x.copy()).softmax(-1).numpy() for x in got]
        return _compare("b", got, probs, ref, export.FP16_TOLERANCE)

    flat = [np.array([[1e-4, -1e-4, 2e-4, 0.0]]), np.array([[3e-4, 1e-4, 0.0, 2e-4]])]
    # an untrained model: near-constant logits, the export picks other classes within tolerance
    tied = compare([x[:, ::-1] for x in flat], flat)
    assert tied.ok and tied.n_tied == 2 and np.isnan(tied.top1_agreement)
    assert "0%" not in str(tied) and "not meaningful" in str(tied) and str(tied).endswith("OK")
    mixed = [np.array([[5.0, 1.0, 0.0, 0.5]]), flat[1]]
    assert "top-1 agreement 100% on 1 of 2 inputs (1 tied)" in str(compare(mixed, mixed))
    tol = export.FP16_TOLERANCE
    # outside the ties a disagreement is never OK, whatever the difference says
    swapped = export.ParityReport("b", 2, 1e-3, 1e-3, 0.0, tol)
    assert not swapped.ok and "top-1 agreement 0% on 2 inputs -> FAILED" in str(swapped)


def test_a_full_disk_is_one_line_naming_the_disk(checkpoint, tmp_path, monkeypatch, capsys):
    import coremltools as ct

    def full_disk(*args, **kwargs):  # what coremltools 9 raises when a weight cannot be written
        raise RuntimeError("[MIL FileWriter]: Unknown error occurred while writing data to the "
                           "file.")

    monkeypatch.setattr(ct, "convert", full_disk)
    out = tmp_path / "models" / "m.mlpackage"
    code = cli.main(["export", "--checkpoint", str(checkpoint), "--format", "coreml", "--out",
                     str(out)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "the disk refused to write the export in " + str(out.parent) in err
    assert "Unknown error occurred while writing data" in err and "MB free there" in err
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing partial
    with pytest.raises(OSError, match="disk refused.*No space left on device"):
        from swiftlearn.export.coreml import save_package

        save_package(_FakeModel("x", fail=True), tmp_path / "n.mlpackage")
    assert not (tmp_path / "n.mlpackage").exists()
