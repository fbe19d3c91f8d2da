"""swiftlearn.model: official parity, paper sizes, any input size, clear errors, training paths."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from swiftlearn.model import (
    MIN_SIZE,
    VARIANTS,
    ConvEncoder,
    Embedding,
    Stage,
    Stem,
    SwiftFormer,
    SwiftFormerEncoder,
    build_model,
    canonical_name,
    check_images,
    swiftformer_xs,
    variant_of,
)

# The paper's Table 2 (ImageNet-1K, 224x224): parameters (M) and GMACs
PAPER = {
    "swiftformer_xs": (3.5, 0.6),
    "swiftformer_s": (6.1, 1.0),
    "swiftformer_l1": (12.1, 1.6),
    "swiftformer_l3": (28.5, 4.0),
}
# exact counts of the official code (../shared/reference/official_state_dict_keys.txt)
OFFICIAL_PARAMS = {
    "swiftformer_xs": 3_475_360,
    "swiftformer_s": 6_092_128,
    "swiftformer_l1": 12_057_920,
    "swiftformer_l3": 28_494_736,
}


def gmacs(model: torch.nn.Module, size=(224, 224)) -> float:
    x = torch.randn(1, 3, *size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / 1e9


# ---------------------------------------------------------------- official parity


def test_official_checkpoint_loads_strict_and_matches_golden(official_xs_state_dict, golden):
    model = swiftformer_xs().eval()
    model.load_state_dict(official_xs_state_dict, strict=True)
    with torch.no_grad():
        features = model.forward_features(golden["input"])
        logits = model(golden["input"])
    torch.testing.assert_close(features, golden["features"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, golden["logits"], atol=1e-4, rtol=1e-4)


def test_last_stage_attention_matches_golden(official_xs_state_dict, golden):
    model = swiftformer_xs().eval()
    model.load_state_dict(official_xs_state_dict)
    attn = model.encoders()[-1].attn
    with torch.no_grad():
        out = attn(golden["attn_last_stage"]["input"])
    torch.testing.assert_close(out, golden["attn_last_stage"]["output"], atol=1e-4, rtol=1e-4)


def test_state_dict_keys_match_official_list(reference_dir):
    """Every variant's keys and shapes are the official ones, in the same order."""
    expected: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    current = None
    for line in (reference_dir / "official_state_dict_keys.txt").read_text().splitlines():
        if line.startswith("#"):
            current = "swiftformer_" + line.split(":")[0].split("-")[-1].strip().lower()
            expected[current] = []
        elif line.strip():
            key, shape = line.split("\t")
            expected[current].append((key, tuple(eval(shape))))
    assert set(expected) == set(VARIANTS)
    for name, keys in expected.items():
        sd = build_model(name).state_dict()
        assert [(k, tuple(v.shape)) for k, v in sd.items()] == keys, name


# ---------------------------------------------------------------- paper sizes


@pytest.mark.parametrize("name", list(VARIANTS))
def test_params_and_gmacs_match_paper(name):
    model = build_model(name).eval()
    n = sum(p.numel() for p in model.parameters())
    assert n == OFFICIAL_PARAMS[name]
    params_m, paper_gmacs = PAPER[name]
    assert round(n / 1e6, 1) == params_m
    assert round(gmacs(model), 1) == paper_gmacs


def test_create_model_names_and_kwargs():
    assert isinstance(build_model("XS"), SwiftFormer)
    assert build_model("SwiftFormer-L1").widths == VARIANTS["swiftformer_l1"].widths
    m = build_model("s", num_classes=10, distillation=False, formulation="softmax")
    assert m.head.out_features == 10 and not hasattr(m, "dist_head")
    assert all(e.attn.formulation == "softmax" for e in m.encoders())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("swiftformer_m")


@pytest.mark.parametrize("spelling", ["xs", "XS", "SwiftFormer-XS", "SwiftFormer_XS",
                                      "swiftformer_xs"])
def test_canonical_name_accepts_every_spelling(spelling):
    assert canonical_name(spelling) == "swiftformer_xs"


def test_canonical_name_rejects_unknown_names_and_lists_the_variants():
    with pytest.raises(ValueError, match=r"unknown model 'm'.*swiftformer_l1"):
        canonical_name("m")


def test_variant_of_inverts_the_table():
    for name, v in VARIANTS.items():
        assert variant_of(v.depths, v.widths) == name
        assert variant_of(list(v.depths), list(v.widths)) == name
    assert variant_of((1, 1, 1, 1), (8, 8, 8, 8)) is None


def test_create_model_only_builds():
    with pytest.raises(TypeError, match=r"swiftlearn\.create_model\(name, checkpoint=\.\.\.\)"):
        build_model("xs", checkpoint="weights.pt")
    assert build_model("xs").num_classes == 1000


# ---------------------------------------------------------------- input sizes and errors


@pytest.mark.parametrize("size", [(224, 224), (160, 288), (97, 131), (32, 32), (33, 65)])
def test_any_size_the_network_accepts(size):
    model = swiftformer_xs(num_classes=7).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        stages = model.forward_stages(x)
        logits = model(x)
    assert logits.shape == (2, 7)
    h, w = size
    for i, (s, c) in enumerate(zip(stages, model.widths)):
        stride = 2 ** (i + 2)
        assert s.shape == (2, c, -(-h // stride), -(-w // stride))


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.randn(1, 4, 64, 64), "3 input channels"),
        (torch.randn(1, 64, 64, 3), "channels-last"),
        (torch.randn(1, 3, 31, 64), "at least 32x32"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), "float"),
        (torch.randn(3, 64, 64), "unsqueeze"),
        (torch.randn(1, 1, 3, 64, 64), "shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, match):
    model = swiftformer_xs().eval()
    with pytest.raises(ValueError, match=match):
        model(x)
    with pytest.raises(ValueError, match=match):
        model.attention_maps(x)


def test_check_images_is_the_models_check():
    check_images(torch.randn(1, 3, MIN_SIZE, MIN_SIZE))
    check_images(torch.randn(1, 1, 40, 40), in_chans=1)
    with pytest.raises(ValueError, match="1 input channels"):
        check_images(torch.randn(1, 3, 40, 40), in_chans=1)
    with pytest.raises(ValueError, match=f"at least {MIN_SIZE}x{MIN_SIZE}"):
        check_images(torch.randn(1, 3, MIN_SIZE - 1, 64))
    with pytest.raises(ValueError, match="torch.Tensor"):
        check_images([[1.0]])


def test_constructor_validation():
    with pytest.raises(ValueError, match="4 entries"):
        SwiftFormer((1, 1, 1), (8, 8, 8))
    with pytest.raises(ValueError, match="drop_path_rate"):
        swiftformer_xs(drop_path_rate=1.0)
    with pytest.raises(ValueError, match="formulation"):
        swiftformer_xs(formulation="relu")


# ---------------------------------------------------------------- training behaviour


def test_train_mode_returns_both_heads_eval_their_average():
    model = swiftformer_xs(num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    model.eval()  # freeze BatchNorm statistics, then switch only the flag the head looks at
    with torch.no_grad():
        avg = model(x)
        model.training = True
        head, dist = model(x)
    torch.testing.assert_close(avg, (head + dist) / 2)
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 2


def test_no_distillation_returns_one_tensor_in_train_mode():
    model = swiftformer_xs(num_classes=5, distillation=False).train()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)


def test_num_classes_zero_gives_pooled_features():
    model = swiftformer_xs(num_classes=0).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 220)


def test_gradients_reach_every_parameter():
    model = swiftformer_xs(num_classes=4).train()
    head, dist = model(torch.randn(2, 3, 64, 64))
    (head.logsumexp(-1).sum() + dist.logsumexp(-1).sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing


def test_legacy_softmax_gives_w_g_no_gradient():
    """Softmax over a size-1 axis is constant 1, so the token scorer w_g never learns."""
    model = swiftformer_xs(num_classes=4, formulation="legacy_softmax").train()
    head, dist = model(torch.randn(2, 3, 64, 64))
    (head.sum() + dist.sum()).backward()
    for enc in model.encoders():
        assert enc.attn.w_g.grad is None or not enc.attn.w_g.grad.abs().sum()


def test_drop_path_is_stochastic_in_training_and_off_in_eval():
    model = swiftformer_xs(num_classes=4, drop_path_rate=0.5)
    rates = [e.drop_path.p for e in model.encoders()]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.5)
    # the official code builds its ConvEncoders without drop path
    assert all(m.drop_path.p == 0 for m in model.modules() if type(m) is ConvEncoder)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        for m in model.modules():  # freeze BatchNorm so only drop path is random
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        a, b = model(x)[0], model(x)[0]
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------- attention maps


def test_attention_maps_shapes_and_values():
    model = swiftformer_xs().eval()
    maps = model.attention_maps(torch.randn(2, 3, 224, 160))
    assert [tuple(m.shape) for m in maps] == [(2, 56, 40), (2, 28, 20), (2, 14, 10), (2, 7, 5)]
    for m in maps:  # "normalize": unit L2 norm over the tokens of each image
        torch.testing.assert_close(m.flatten(1).norm(dim=1), torch.ones(2))


def test_attention_maps_do_not_change_the_output():
    model = swiftformer_xs().eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
        model.attention_maps(x)
        after = model(x)
    assert torch.equal(before, after)


def test_encoder_attention_branch_matches_token_module():
    enc = SwiftFormerEncoder(32).eval()
    x = torch.randn(2, 32, 5, 7)
    out, alpha = enc.attention(x, return_attention=True)
    tokens = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, enc.attn(tokens).transpose(1, 2).reshape(2, 32, 5, 7))
    assert alpha.shape == (2, 5, 7)


# ---------------------------------------------------------------- structure


def test_stages_walk_the_official_layout():
    model = swiftformer_xs()
    stages = model.stages()
    assert [s.index for s in stages] == [0, 1, 2, 3]
    assert all(isinstance(s, Stage) for s in stages)
    for s, depth, width in zip(stages, model.depths, model.widths):
        assert s.blocks is model.network[2 * s.index]  # official name network.{2i}
        assert len(s.blocks) == depth
        assert all(type(b) is ConvEncoder for b in s.blocks[:-1])
        assert isinstance(s.encoder, SwiftFormerEncoder) and s.encoder is s.blocks[-1]
        assert s.encoder.attn.dim == width
    assert [s.downsample is model.network[2 * s.index + 1] for s in stages[:-1]] == [True] * 3
    assert all(isinstance(s.downsample, Embedding) for s in stages[:-1])
    assert stages[-1].downsample is None
    assert model.encoders() == [s.encoder for s in stages]


def test_stem_names_its_parts_and_keeps_the_official_keys():
    stem = swiftformer_xs().patch_embed
    assert isinstance(stem, Stem)
    assert (stem.conv1, stem.bn1, stem.conv2, stem.bn2) == (stem[0], stem[1], stem[3], stem[4])
    assert (stem.conv1.out_channels, stem.conv2.out_channels) == (24, 48)
    assert list(stem.state_dict())[:2] == ["0.weight", "0.bias"]
    assert "4.running_var" in stem.state_dict()


def test_forward_stages_ends_where_forward_features_does():
    model = swiftformer_xs().eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model.forward_stages(x)[-1], model.forward_features(x))


# --- swappable token mixer ----------------------------------------------------------------------

def test_default_mixer_is_the_published_model(reference_dir):
    from swiftlearn.model import ALL_STAGES

    model = build_model("xs")
    assert model.mixer == "additive" and model.mixer_stages == ALL_STAGES and model.is_published()
    keys = set(build_model("xs", mixer="additive", mixer_stages=[3, 2, 1, 0]).state_dict())
    assert keys == set(model.state_dict())
    official = (reference_dir / "official_state_dict_keys.txt")
    if official.is_file():  # the published names, so official weights load with strict=True
        text = official.read_text()
        assert "network.6.3.attn.w_g" in text and "network.6.3.attn.w_g" in keys


@pytest.mark.parametrize("mixer", ["additive", "mhsa", "separable", "fastformer", "none"])
@pytest.mark.parametrize("stages", [(0, 1, 2, 3), (3,)])
def test_every_mixer_builds_trains_and_maps(mixer, stages):
    from swiftlearn.model import SwiftFormerEncoder

    torch.manual_seed(0)
    model = build_model("xs", num_classes=4, mixer=mixer, mixer_stages=stages)
    encoders = [m for m in model.modules() if isinstance(m, SwiftFormerEncoder)]
    assert len(encoders) == len(stages) and all(e.mixer == mixer for e in encoders)
    assert [s.encoder is not None for s in model.stages()] == [i in stages for i in range(4)]
    x = torch.randn(2, 3, 64, 64)
    model.train()
    head, dist = model(x)
    (head.sum() + dist.sum()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    maps = model.eval().attention_maps(x)
    sides = {0: 16, 1: 8, 2: 4, 3: 2}
    assert [m.shape for m in maps] == ([] if mixer == "none" else
                                       [(2, sides[i], sides[i]) for i in stages])


def test_mixers_differ_where_they_should():
    from swiftlearn.attention import FastformerAttention

    a = build_model("xs", mixer="additive", mixer_stages=[3])
    assert not hasattr(a.network[0][-1], "attn")  # stage 1 ends with a ConvEncoder
    none = build_model("xs", mixer="none")
    enc = none.stages()[3].encoder
    assert enc.attn is None and not hasattr(enc, "layer_scale_1")
    with pytest.raises(ValueError, match="no token mixer"):
        enc.attention(torch.randn(1, 220, 2, 2))
    ff = build_model("xs", mixer="fastformer").stages()[3].encoder.attn
    assert isinstance(ff, FastformerAttention) and ff.w_k.shape == (220, 1)
    mhsa = build_model("xs", mixer="mhsa").stages()[3].encoder.attn
    assert mhsa.num_heads == 4  # 220 channels: 4 heads of 55


def test_fastformer_is_additive_attention_plus_the_key_value_interaction():
    from swiftlearn.attention import EfficientAdditiveAttention, FastformerAttention

    torch.manual_seed(0)
    ff = FastformerAttention(16)
    x = torch.randn(2, 10, 16)
    q = torch.nn.functional.normalize(ff.to_query(x), dim=-1)
    k = torch.nn.functional.normalize(ff.to_key(x), dim=-1)
    alpha = torch.nn.functional.normalize((q @ ff.w_g) / 4, dim=1)
    g = (alpha * q).sum(1, keepdim=True)
    p = g * k
    beta = torch.nn.functional.normalize((p @ ff.w_k) / 4, dim=1)
    global_key = (beta * p).sum(1, keepdim=True)
    expected = ff.final(ff.Proj(global_key * ff.to_value(x)) + q)
    torch.testing.assert_close(ff(x), expected)
    # the same weights without the key-value interaction are SwiftFormer's attention
    plain = EfficientAdditiveAttention(16)
    plain.load_state_dict({k: v for k, v in ff.state_dict().items()
                           if not k.startswith(("to_value", "w_k"))})
    torch.testing.assert_close(plain(x), ff.final(ff.Proj(g * k) + q))


def test_bad_mixer_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="unknown mixer 'linear'; choose one of"):
        build_model("xs", mixer="linear")
    with pytest.raises(ValueError, match="non-empty subset"):
        build_model("xs", mixer_stages=[4])
    with pytest.raises(ValueError, match="non-empty subset"):
        build_model("xs", mixer_stages=[])
