"""swiftlearn.checkpoints: format detection, conversion, parity with timm and transformers."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_

from swiftlearn import create_model
from swiftlearn.checkpoints import (
    SOURCE_FORMULATION,
    CheckpointMismatchError,
    convert,
    detect_format,
    load_checkpoint,
    read_checkpoint,
    to_hf,
    to_official,
    to_timm,
)
from swiftlearn.model import VARIANTS

SIZE = 96  # small images keep the parity tests fast; the maths is the same at 224


def _x(batch=2, size=SIZE):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def _timm():
    return pytest.importorskip("timm", reason="timm is in the dev extra")


def _hf_model(name: str, num_classes: int = 1000):
    transformers = pytest.importorskip("transformers", reason="transformers is in the dev extra")
    v = VARIANTS[name]
    config = transformers.SwiftFormerConfig(depths=list(v.depths), embed_dims=list(v.widths),
                                            num_labels=num_classes)
    return transformers.SwiftFormerForImageClassification(config).eval()  # random, no hub


# ---------------------------------------------------------------- official


def test_official_file_via_create_model_matches_golden(reference_dir, golden):
    model = create_model("swiftformer_xs", checkpoint=reference_dir /
                         "swiftformer_xs_official_format.pth")
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(golden["input"]), golden["logits"], atol=1e-4, rtol=1e-4)


def test_official_wrapped_and_without_dist_head(official_xs_state_dict, golden):
    wrapped = {"model": official_xs_state_dict, "epoch": 299}
    ckpt = read_checkpoint(wrapped)
    assert (ckpt.format, ckpt.variant, ckpt.num_classes, ckpt.distillation) == \
        ("official", "swiftformer_xs", 1000, True)
    assert ckpt.formulation == "normalize"
    no_dist = {k: v for k, v in official_xs_state_dict.items() if not k.startswith("dist_head")}
    model = load_checkpoint(no_dist)  # variant and classes inferred
    assert not model.distillation
    ref = load_checkpoint(official_xs_state_dict)
    with torch.no_grad():
        feats = ref.forward_features(golden["input"])
        expected = ref.head(ref.forward_head(feats, pre_logits=True))
        torch.testing.assert_close(model(golden["input"]), expected)
    # into a model that has two heads: the head is copied, so the output stays the same
    both = load_checkpoint(no_dist, model=create_model("xs"))
    with torch.no_grad():
        torch.testing.assert_close(both(golden["input"]), expected)


def test_ddp_and_compile_prefixes_are_stripped(official_xs_state_dict):
    sd = {"module._orig_mod." + k: v for k, v in official_xs_state_dict.items()}
    assert read_checkpoint({"state_dict": sd}).variant == "swiftformer_xs"


# ---------------------------------------------------------------- timm


@pytest.mark.parametrize("name", ["swiftformer_xs", "swiftformer_s"])
def test_timm_parity_both_directions(name):
    timm = _timm()
    theirs = randomize_(timm.create_model(name), seed=3).eval()
    ours = load_checkpoint(theirs.state_dict())
    assert read_checkpoint(theirs.state_dict()).format == "timm"
    assert all(e.attn.formulation == SOURCE_FORMULATION["timm"] == "normalize"
               for e in ours.encoders())
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)
    # and back: our random model into timm's, strict
    ours = randomize_(create_model(name), seed=4).eval()
    theirs = timm.create_model(name).eval()
    theirs.load_state_dict(to_timm(ours), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.forward_features(x), theirs.stages(theirs.stem(x)),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_timm_layout_strict_for_every_variant(name):
    timm = _timm()
    theirs = timm.create_model(name, num_classes=10)
    sd = to_timm(create_model(name, num_classes=10))
    theirs.load_state_dict(sd, strict=True)
    assert read_checkpoint(sd).variant == name


# ---------------------------------------------------------------- Hugging Face


@pytest.mark.parametrize("name", ["swiftformer_xs", "swiftformer_s"])
def test_hf_parity_both_directions(name):
    theirs = randomize_(_hf_model(name), seed=5)
    sd = theirs.state_dict()
    assert detect_format(sd) == "hf"
    ours = load_checkpoint(sd)
    assert all(e.attn.formulation == "legacy_softmax" for e in ours.encoders())
    x = _x()
    with torch.no_grad():
        expected = theirs(pixel_values=x).logits
        torch.testing.assert_close(ours(x), expected, atol=1e-4, rtol=1e-4)
        # the formulation matters: the same weights with F.normalize give other logits
        normalized = load_checkpoint(sd, formulation="normalize")
        assert (normalized(x) - expected).abs().max() > 1e-3
    ours = randomize_(create_model(name, formulation="legacy_softmax"), seed=6).eval()
    theirs = _hf_model(name)
    theirs.load_state_dict(to_hf(ours), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(pixel_values=x).logits, atol=1e-4, rtol=1e-4)


def test_hf_weights_into_a_normalize_model_warn():
    sd = _hf_model("swiftformer_xs", num_classes=3).state_dict()
    with pytest.warns(UserWarning, match="legacy_softmax"):
        load_checkpoint(sd, model=create_model("xs", num_classes=3))


def test_hf_base_model_without_prefix_and_heads():
    sd = _hf_model("swiftformer_xs").swiftformer.state_dict()  # SwiftFormerModel: no heads
    ckpt = read_checkpoint(sd)
    assert (ckpt.format, ckpt.variant, ckpt.num_classes) == ("hf", "swiftformer_xs", 0)
    model = load_checkpoint(sd, num_classes=0)
    assert model(_x(1)).shape == (1, 220)


# ---------------------------------------------------------------- conversions


def test_round_trips_are_lossless(official_xs_state_dict):
    for fmt in ("timm", "hf", "official"):
        back = to_official(convert(official_xs_state_dict, to=fmt))
        assert list(back) == list(official_xs_state_dict)
        assert all(back[k] is official_xs_state_dict[k] for k in back)


def test_convert_adds_dist_head_for_timm_and_hf():
    model = create_model("xs", num_classes=4, distillation=False)
    assert "head_dist.weight" in to_timm(model)
    assert "dist_head.weight" in to_hf(model)
    assert "dist_head.weight" not in to_official(model)
    with pytest.raises(ValueError, match="unknown target format"):
        convert(model, to="onnx")


# ---------------------------------------------------------------- swiftlearn checkpoints


def test_swiftlearn_training_checkpoint(tmp_path):
    model = randomize_(create_model("xs", num_classes=10, formulation="softmax")).eval()
    path = tmp_path / "run.pt"
    torch.save({"model": model.state_dict(), "epoch": 3,
                "config": {"model": "swiftformer_xs", "num_classes": 10,
                           "formulation": "softmax"}}, path)
    ckpt = read_checkpoint(path)
    assert (ckpt.format, ckpt.formulation, ckpt.meta["epoch"]) == ("swiftlearn", "softmax", 3)
    loaded = create_model("xs", checkpoint=path)
    assert loaded.num_classes == 10 and loaded.encoders()[0].attn.formulation == "softmax"
    x = _x(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_swiftlearn_last_pt_with_rng_state_and_ema(tmp_path):
    """What swiftlearn.train.fit saves: numpy RNG state, optimizer, EMA; the EMA is loaded."""
    import numpy as np

    model = create_model("xs", num_classes=10)
    ema = randomize_(create_model("xs", num_classes=10), seed=11).eval()
    path = tmp_path / "last.pt"
    torch.save({"format": "swiftlearn-train-v1", "config": {"model": "swiftformer_xs"},
                "classes": [f"c{i}" for i in range(10)], "model": model.state_dict(),
                "ema": {"module": ema.state_dict(), "updates": 5},
                "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()}}, path)
    loaded = create_model("xs", checkpoint=path)
    assert loaded.classes[3] == "c3"
    x = _x(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ema(x))


def test_swiftlearn_fp16_asset(tmp_path):
    model = randomize_(create_model("xs", num_classes=10), seed=12).eval()
    path = tmp_path / "asset.pt"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v
                          for k, v in model.state_dict().items()},
                "config": {"model": "swiftformer_xs"}, "classes": list("abcdefghij")}, path)
    loaded = load_checkpoint(path)
    assert loaded.head.weight.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x(1)), model(_x(1)), atol=1e-2, rtol=1e-2)


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    model = create_model("xs", num_classes=2)
    path = tmp_path / "model.safetensors"
    save_file(to_timm(model), str(path))
    assert read_checkpoint(path).format == "timm"
    assert load_checkpoint(path).num_classes == 2


def test_custom_architecture_is_built_from_the_tensors():
    from swiftlearn.model import SwiftFormer

    small = SwiftFormer((1, 1, 2, 1), (16, 24, 32, 40), num_classes=3)
    loaded = load_checkpoint(small.state_dict())
    assert (loaded.depths, loaded.widths, loaded.num_classes) == \
        ((1, 1, 2, 1), (16, 24, 32, 40), 3)


# ---------------------------------------------------------------- errors


def test_other_variant_error_names_format_keys_and_cause(official_xs_state_dict):
    with pytest.raises(CheckpointMismatchError) as e:
        create_model("swiftformer_s", checkpoint=official_xs_state_dict)
    msg = str(e.value)
    assert "official checkpoint of swiftformer_xs" in msg
    assert "missing (first: network.4.5." in msg and "other shapes" in msg
    assert "create_model('swiftformer_xs')" in msg


def test_other_num_classes_error_and_drop_head(official_xs_state_dict):
    with pytest.raises(CheckpointMismatchError, match=r"num_classes=1000.*drop_head=True"):
        create_model("xs", num_classes=10, checkpoint=official_xs_state_dict)
    model = create_model("xs", num_classes=10, checkpoint=official_xs_state_dict,
                         drop_head=True)
    assert model.head.out_features == 10
    torch.testing.assert_close(model.network[0][0].dwconv.weight,
                               official_xs_state_dict["network.0.0.dwconv.weight"])
    with pytest.raises(ValueError, match="pass num_classes"):
        load_checkpoint(official_xs_state_dict, drop_head=True)


def test_timm_mismatch_names_timm(official_xs_state_dict):
    timm_sd = to_timm(official_xs_state_dict)
    with pytest.raises(CheckpointMismatchError, match="^timm checkpoint of swiftformer_xs"):
        load_checkpoint(timm_sd, model="l1")


def test_unknown_layout_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not a SwiftFormer checkpoint"):
        read_checkpoint({"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="state dict"):
        read_checkpoint([1, 2])
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="no state dict of tensors"):
        read_checkpoint({"model": {"a": 1}})


def test_trained_weights_carry_what_evaluation_and_export_need(tmp_path):
    from swiftlearn import checkpoints as C

    net = create_model("xs", num_classes=3)
    path = C.save_trained(tmp_path / "w.pt", net.state_dict(), classes=["a", "b", "c"],
                          config={"model": "swiftformer_xs", "img_size": 96,
                                  "resize_schedule": [[0, 96], [5, 128]], "epochs": 10})
    meta = C.safe_load(path)
    assert meta["eval_size"] == 128  # where the resize schedule ends
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    assert meta["model"]["head.weight"].dtype == torch.float16
    loaded = C.load_trained(path)
    assert loaded.classes == ["a", "b", "c"] and next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(loaded(x), net.eval()(x), atol=1e-2)
    # old files (no eval_size): the history's, else the schedule's end, else img_size
    assert C.trained_image_size({"history": [{"eval_size": 144}]}) == 144
    assert C.trained_image_size({"config": {"img_size": 112}}) == 112
    assert C.trained_image_size({"config": {"time_budget_min": 5, "epochs": 1,
                                            "resize_schedule": [[0, 96], [80, 160]]}}) == 160
    assert C.trained_image_size({}) is None


def test_one_checkpoint_object_carries_everything_a_reader_needs(tmp_path):
    from swiftlearn import checkpoints as C

    net = create_model("xs", num_classes=3)
    path = C.save_trained(tmp_path / "w.pt", net.state_dict(), classes=["a", "b", "c"],
                          config={"model": "swiftformer_xs", "eval_size": 112}, mean=(0.5,) * 3,
                          std=(0.25,) * 3)
    ckpt = C.read_checkpoint(path)
    assert ckpt.format == "swiftlearn" and ckpt.source == str(path)
    assert ckpt.eval_size == 112 and ckpt.classes == ["a", "b", "c"]
    assert ckpt.mean == (0.5,) * 3 and ckpt.std == (0.25,) * 3
    assert ckpt.config["model"] == "swiftformer_xs"
    assert ckpt.require_trained() is ckpt and C.read_checkpoint(ckpt) is ckpt  # read once
    built = ckpt.build()
    assert built.classes == ["a", "b", "c"] and not built.training
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(built(x), net.eval()(x), atol=1e-2)
    # an official file is read by the same function but is not training weights
    official = tmp_path / "official.pth"
    torch.save(create_model("xs").state_dict(), official)
    other = C.read_checkpoint(official)
    assert other.eval_size is None and other.classes is None and other.mean == C.IMAGENET_MEAN
    with pytest.raises(ValueError, match="--teacher x.pt holds no swiftlearn training weights "
                                         r"\(its format is official"):
        other.require_trained("--teacher x.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"^--teacher .*list.pt holds no SwiftFormer weights"):
        C.read_checkpoint(tmp_path / "list.pt", flag="--teacher")


def test_model_layer_only_builds(tmp_path):
    from swiftlearn.model import build_model as build

    with pytest.raises(TypeError, match="swiftlearn.create_model"):
        build("xs", checkpoint=tmp_path / "w.pt")


def test_safe_load_refuses_pickled_code(tmp_path):
    from swiftlearn.checkpoints import safe_load

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "hook": print}, path)  # a callable: needs unpickling code
    with pytest.raises(RuntimeError, match="weights_only=False"):
        safe_load(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        safe_load(tmp_path / "missing.pt")


@pytest.mark.parametrize("content", [b"", b"\x93\x11 random bytes \xff" * 40, "truncated"])
def test_safe_load_calls_a_broken_file_broken(tmp_path, content):
    """Empty, random or truncated files are not checkpoints: no advice to unpickle them."""
    from swiftlearn.checkpoints import safe_load

    path = tmp_path / "broken.pt"
    if content == "truncated":
        torch.save({"model": {"w": torch.ones(100)}}, path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(RuntimeError, match=r"is not a checkpoint \(empty, truncated or not a "
                                           r"torch file") as e:
        safe_load(path)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)


def test_safe_load_names_the_refused_object(tmp_path):
    from swiftlearn.checkpoints import safe_load

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "hook": print}, path)
    with pytest.raises(RuntimeError, match=r"\((builtins.)?print\), so it was not unpickled") as e:
        safe_load(path)
    assert "\n" not in str(e.value)
