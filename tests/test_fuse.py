"""swiftlearn.fuse: the folded model computes the same function as the eval-mode model."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_
from torch import nn

from swiftlearn import create_model  # builds, or loads with checkpoint=
from swiftlearn.fuse import (
    FusedSwiftFormer,
    fold_bn_after,
    fold_bn_before,
    fuse,
    onednn_available,
)
from swiftlearn.model import VARIANTS

ATOL = RTOL = 1e-4


def _x(size=(96, 96), batch=2):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(2))


def _random_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).eval()
    randomize_(bn, seed=channels)
    return bn


def test_fold_bn_after_a_conv():
    conv, bn = nn.Conv2d(4, 6, 3, padding=1), _random_bn(6)
    w, b = fold_bn_after(conv.weight, conv.bias, bn)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)))


def test_fold_bn_before_a_linear():
    bn, fc = _random_bn(4), nn.Conv2d(4, 6, 1)
    w, b = fold_bn_before(fc.weight, fc.bias, bn)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        folded = nn.functional.linear(x.permute(0, 2, 3, 1), w, b).permute(0, 3, 1, 2)
        torch.testing.assert_close(folded, fc(bn(x)))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fused_equals_unfused_for_every_variant(name):
    model = randomize_(create_model(name), seed=7).eval()
    fused = fuse(model)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(fused.forward_features(x), model.forward_features(x),
                                   atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("onednn", [False, True])
def test_plain_and_onednn_paths_agree(onednn):
    if onednn and not onednn_available():
        pytest.skip("this PyTorch build has no oneDNN fused linear kernels")
    model = randomize_(create_model("xs"), seed=13).eval()
    fused = fuse(model, onednn=onednn)
    assert fused.onednn is onednn
    with torch.no_grad():
        torch.testing.assert_close(fused(_x()), model(_x()), atol=ATOL, rtol=RTOL)


def test_a_bfloat16_model_keeps_the_onednn_kernels(monkeypatch):
    """fuse(model).to(bfloat16) runs the oneDNN matmuls with their post-ops in bf16 (not the plain
    ops, as autocast does), and stays within bf16 rounding of the float32 model."""
    if not onednn_available():
        pytest.skip("this PyTorch build has no oneDNN fused linear kernels")
    model = randomize_(create_model("xs"), seed=15).eval()
    fused = fuse(model)
    bf16 = fuse(model).to(torch.bfloat16)
    calls = []
    real = torch.ops.mkldnn._linear_pointwise

    class Spy:  # counts the oneDNN calls by dtype, then runs the real kernels
        def __call__(self, x, *args):
            calls.append(x.dtype)
            return real(x, *args)

        def binary(self, x, *args):
            calls.append(x.dtype)
            return real.binary(x, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", Spy())
    x = _x()
    with torch.inference_mode():
        out = bf16(x.to(torch.bfloat16)).float()
        assert calls and set(calls) == {torch.bfloat16}
        calls.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = fused(x).float()
        assert calls == []  # float32 weights, bf16 activations: the plain ops
        ref = fused(x)
    scale = ref.abs().max()
    assert (out - ref).abs().max() <= 0.05 * scale and (auto - ref).abs().max() <= 0.05 * scale


def test_float64_uses_the_plain_path():
    model = randomize_(create_model("xs"), seed=14).double().eval()
    x = _x().double()
    with torch.no_grad():
        torch.testing.assert_close(fuse(model)(x), model(x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("formulation", ["softmax", "legacy_softmax"])
def test_other_formulations(formulation):
    model = randomize_(create_model("xs", formulation=formulation), seed=8).eval()
    with torch.no_grad():
        torch.testing.assert_close(fuse(model)(_x()), model(_x()), atol=ATOL, rtol=RTOL)


def test_fused_official_weights_match_golden(official_xs_state_dict, golden):
    model = create_model("xs", checkpoint=official_xs_state_dict)
    with torch.no_grad():
        torch.testing.assert_close(fuse(model)(golden["input"]), golden["logits"],
                                   atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kwargs", [dict(distillation=False, num_classes=5),
                                    dict(num_classes=0)])
def test_heads_variants_and_odd_sizes(kwargs):
    model = randomize_(create_model("xs", **kwargs), seed=9).eval()
    x = _x(size=(97, 131), batch=1)
    with torch.no_grad():
        torch.testing.assert_close(fuse(model)(x), model(x), atol=ATOL, rtol=RTOL)


def test_everything_is_folded_and_the_source_is_untouched():
    model = randomize_(create_model("xs"), seed=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse(model)
    assert isinstance(fused, FusedSwiftFormer)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert not any("layer_scale" in n for n, _ in fused.named_parameters())
    assert not any(p.requires_grad for p in fused.parameters())
    n_model = sum(p.numel() for p in model.parameters())
    n_fused = sum(p.numel() for p in fused.parameters())
    assert n_fused < n_model  # one head, no norms, no layer scales
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training is False


def test_fused_model_is_inference_only_and_checks_input():
    fused = fuse(create_model("xs"))
    fused.eval()  # allowed
    with pytest.raises(RuntimeError, match="inference only"):
        fused.train()
    with pytest.raises(ValueError, match="3 input channels"):
        fused(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="at least 32x32"):
        fused(torch.randn(1, 3, 16, 64))


def test_fuse_rejects_other_models():
    with pytest.raises(ValueError, match="swiftlearn SwiftFormer"):
        fuse(nn.Linear(2, 2))


@pytest.mark.slow
def test_torch_compile_of_the_fused_model():
    model = randomize_(create_model("xs"), seed=15).eval()
    compiled = torch.compile(fuse(model))  # the oneDNN path steps aside for inductor
    x = _x(size=(64, 64), batch=1)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)


def test_fuse_handles_stages_without_encoders_and_refuses_other_mixers():
    torch.manual_seed(0)
    model = create_model("xs", num_classes=10, mixer_stages=[3]).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fuse(model, onednn=False)(x), model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="mixer is 'mhsa'"):
        fuse(create_model("xs", mixer="mhsa"))
