"""The three attention mechanisms: parity with torch, timm and the official golden fixture."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from swiftlearn.attention import (
    FORMULATIONS,
    EfficientAdditiveAttention,
    MultiHeadSelfAttention,
    SeparableSelfAttention,
)

MECHANISMS = {
    "mhsa": lambda d: MultiHeadSelfAttention(d, num_heads=4),
    "separable": SeparableSelfAttention,
    "additive": EfficientAdditiveAttention,
}


# ---------------------------------------------------------------- parity


@pytest.mark.parametrize("heads", [1, 2, 8])
def test_mhsa_equals_sdpa_and_nn_multiheadattention(heads):
    B, N, D = 2, 37, 64
    x = torch.randn(B, N, D)
    attn = MultiHeadSelfAttention(D, num_heads=heads).eval()
    ref = nn.MultiheadAttention(D, heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.weight.copy_(attn.proj.weight)
        ref.out_proj.bias.copy_(attn.proj.bias)
        out, maps = attn(x, return_attention=True)
        fused = attn(x)
        expected, ref_maps = ref(x, x, x, need_weights=True, average_attn_weights=False)
        # and by hand with the functional kernel
        q, k, v = attn.qkv(x).view(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        manual = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(manual, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(maps, ref_maps, atol=1e-6, rtol=0)
    assert maps.shape == (B, heads, N, N)
    torch.testing.assert_close(maps.sum(-1), torch.ones(B, heads, N))


def test_separable_equals_timm_linear_self_attention():
    timm_mobilevit = pytest.importorskip("timm.models.mobilevit")
    B, N, D = 2, 50, 32
    ours = SeparableSelfAttention(D).eval()
    ref = timm_mobilevit.LinearSelfAttention(D).eval()
    with torch.no_grad():
        # timm's 1x1 convs [out, in, 1, 1] hold the same numbers as our linears [out, in]
        ref.qkv_proj.weight.copy_(ours.qkv_proj.weight[:, :, None, None])
        ref.qkv_proj.bias.copy_(ours.qkv_proj.bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight[:, :, None, None])
        ref.out_proj.bias.copy_(ours.out_proj.bias)
        x = torch.randn(B, N, D)
        out, scores = ours(x, return_attention=True)
        # timm works on [B, C, P, N] (P pixels per patch); one "pixel" per token here
        expected = ref(x.transpose(1, 2).unsqueeze(2)).squeeze(2).transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert scores.shape == (B, N)
    torch.testing.assert_close(scores.sum(1), torch.ones(B))


def test_additive_reproduces_official_golden(golden, official_xs_state_dict):
    prefix = "network.6.3.attn."
    weights = {k[len(prefix):]: v for k, v in official_xs_state_dict.items()
               if k.startswith(prefix)}
    attn = EfficientAdditiveAttention(220).eval()
    attn.load_state_dict(weights, strict=True)
    case = golden["attn_last_stage"]
    with torch.no_grad():
        out, alpha = attn(case["input"], return_attention=True)
    torch.testing.assert_close(out, case["output"], atol=1e-5, rtol=0)
    assert alpha.shape == (2, 49)
    # the official weights are L2-normalised over the tokens
    torch.testing.assert_close(alpha.pow(2).sum(1), torch.ones(2))


def test_additive_matches_the_paper_equations_step_by_step():
    B, N, D = 3, 20, 16
    attn = EfficientAdditiveAttention(D).eval()
    x = torch.randn(B, N, D)
    with torch.no_grad():
        q = F.normalize(x @ attn.to_query.weight.T + attn.to_query.bias, dim=-1)
        k = F.normalize(x @ attn.to_key.weight.T + attn.to_key.bias, dim=-1)
        scores = (q @ attn.w_g) / math.sqrt(D)
        alpha = scores / scores.norm(dim=1, keepdim=True)
        g = (alpha * q).sum(1, keepdim=True)
        expected = attn.final(attn.Proj(g * k) + q)
        out, got_alpha = attn(x, return_attention=True)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_alpha, alpha.squeeze(-1), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- formulations


def test_legacy_softmax_gives_all_ones_and_no_gradient_to_w_g():
    attn = EfficientAdditiveAttention(24, formulation="legacy_softmax")
    x = torch.randn(2, 30, 24)
    out, alpha = attn(x, return_attention=True)
    assert torch.equal(alpha, torch.ones_like(alpha))
    out.sum().backward()
    assert attn.w_g.grad is None or torch.count_nonzero(attn.w_g.grad) == 0
    # with every weight 1, the global query is the plain sum of the queries
    with torch.no_grad():
        q = F.normalize(attn.to_query(x), dim=-1)
        k = F.normalize(attn.to_key(x), dim=-1)
        expected = attn.final(attn.Proj(q.sum(1, keepdim=True) * k) + q)
    torch.testing.assert_close(out.detach(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("formulation", ["normalize", "softmax"])
def test_default_formulations_are_not_all_ones_and_train_w_g(formulation):
    attn = EfficientAdditiveAttention(24, formulation=formulation)
    x = torch.randn(2, 30, 24)
    out, alpha = attn(x, return_attention=True)
    assert not torch.allclose(alpha, torch.ones_like(alpha))
    out.square().sum().backward()
    assert attn.w_g.grad is not None and torch.count_nonzero(attn.w_g.grad) > 0
    if formulation == "softmax":
        assert (alpha > 0).all()
        torch.testing.assert_close(alpha.sum(1), torch.ones(2))
    else:
        torch.testing.assert_close(alpha.pow(2).sum(1), torch.ones(2))


def test_default_formulation_is_normalize():
    assert EfficientAdditiveAttention(8).formulation == "normalize"
    assert FORMULATIONS == ("normalize", "softmax", "legacy_softmax")


# ---------------------------------------------------------------- shapes and gradients


@pytest.mark.parametrize("name", sorted(MECHANISMS))
@pytest.mark.parametrize("N", [1, 7, 49])
def test_shapes_and_attention_outputs(name, N):
    D = 32
    attn = MECHANISMS[name](D)
    x = torch.randn(2, N, D)
    out = attn(x)
    assert out.shape == x.shape
    out2, maps = attn(x, return_attention=True)
    torch.testing.assert_close(out, out2, atol=1e-5, rtol=0)
    expected = (2, 4, N, N) if name == "mhsa" else (2, N)
    assert maps.shape == expected


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_gradients_reach_every_parameter(name):
    attn = MECHANISMS[name](16)
    x = torch.randn(2, 10, 16, requires_grad=True)
    attn(x).square().sum().backward()
    for pname, p in attn.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, pname
    assert x.grad is not None


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_permutation_equivariance(name):
    # none of the three mechanisms knows token order: permuting tokens permutes the output
    attn = MECHANISMS[name](16).eval()
    x = torch.randn(1, 12, 16)
    perm = torch.randperm(12)
    with torch.no_grad():
        torch.testing.assert_close(attn(x)[:, perm], attn(x[:, perm]), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- cost grows as taught


def _flops(module, N, D=64):
    x = torch.randn(1, N, D)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        # explicit MHSA path: the CPU counter sees no FLOPs inside the fused SDPA kernel
        if isinstance(module, MultiHeadSelfAttention):
            module(x, return_attention=True)
        else:
            module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("name,exponent", [("mhsa", 2.0), ("separable", 1.0),
                                           ("additive", 1.0)])
def test_flops_growth_exponent(name, exponent):
    attn = MECHANISMS[name](64)
    Ns = [256, 1024, 4096]
    flops = [_flops(attn, N) for N in Ns]
    # growth between the two largest sizes: the quadratic term dominates there for MHSA
    fitted = math.log(flops[2] / flops[1]) / math.log(Ns[2] / Ns[1])
    assert abs(fitted - exponent) < 0.15, (name, flops, fitted)
    if name != "mhsa":
        # linear: exactly proportional to N, as the matmuls are all [N, D] x [D, *]
        assert flops[2] * Ns[0] == flops[0] * Ns[2]


# ---------------------------------------------------------------- clear errors


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_wrong_rank_raises_with_hint(name):
    attn = MECHANISMS[name](16)
    with pytest.raises(ValueError, match=r"\[B, N, D\].*rearrange\(x, 'b c h w -> b \(h w\) c'\)"):
        attn(torch.randn(2, 16, 4, 4))
    with pytest.raises(ValueError, match="unsqueeze"):
        attn(torch.randn(10, 16))


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_wrong_width_raises(name):
    attn = MECHANISMS[name](16)
    with pytest.raises(ValueError, match="D=16.*D=8"):
        attn(torch.randn(2, 10, 8))


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_non_float_and_empty_inputs_raise(name):
    attn = MECHANISMS[name](4)
    with pytest.raises(ValueError, match="floating-point"):
        attn(torch.ones(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        attn(torch.ones(1, 0, 4))


def test_constructor_errors():
    with pytest.raises(ValueError, match="must divide"):
        MultiHeadSelfAttention(10, num_heads=3)
    with pytest.raises(ValueError, match="formulation"):
        EfficientAdditiveAttention(8, formulation="sigmoid")
    with pytest.raises(ValueError, match="positive"):
        SeparableSelfAttention(0)


# ---------------------------------------------------------------- the shipped golden fixture

SHIPPED_GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "reference" \
    / "additive_attention_golden.pt"


def _shipped_golden():
    fixture = torch.load(SHIPPED_GOLDEN, map_location="cpu", weights_only=True)
    attn = EfficientAdditiveAttention(fixture["dim"], formulation=fixture["formulation"]).eval()
    attn.load_state_dict(fixture["state_dict"], strict=True)
    return fixture, attn


def test_shipped_golden_fixture_is_small_and_reproduced():
    assert SHIPPED_GOLDEN.stat().st_size < 1_000_000
    fixture, attn = _shipped_golden()
    assert fixture["input"].shape == fixture["output"].shape == (1, 49, 220)
    with torch.no_grad():
        out = attn(fixture["input"])
    torch.testing.assert_close(out, fixture["output"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("change", ["softmax", "legacy_softmax", "w_g", "no_residual"])
def test_shipped_golden_fixture_catches_a_wrong_attention(change):
    """Negative controls: another formulation, another w_g (its entries shifted by one) or a
    missing residual differ from the official output by far more than the tolerance."""
    fixture, attn = _shipped_golden()
    x = fixture["input"]
    with torch.no_grad():
        if change in ("softmax", "legacy_softmax"):
            attn.formulation = change
            out = attn(x)
        elif change == "w_g":
            attn.w_g.copy_(attn.w_g.roll(1, 0))
            out = attn(x)
        else:
            q = F.normalize(attn.to_query(x), dim=-1)
            k = F.normalize(attn.to_key(x), dim=-1)
            g = (attn.token_weights(q) * q).sum(1, keepdim=True)
            out = attn.final(attn.Proj(g * k))  # the "+ q" residual left out
    assert (out - fixture["output"]).abs().max() > 1e-3


def test_shipped_golden_fixture_matches_the_shared_reference(golden, official_xs_state_dict):
    """The shipped fixture is a bit-exact extract of ../shared/reference (skips without it)."""
    fixture = torch.load(SHIPPED_GOLDEN, map_location="cpu", weights_only=True)
    assert torch.equal(fixture["input"], golden["attn_last_stage"]["input"][:1])
    assert torch.equal(fixture["output"], golden["attn_last_stage"]["output"][:1])
    prefix = fixture["module"] + "."
    for name, tensor in fixture["state_dict"].items():
        assert torch.equal(tensor, official_xs_state_dict[prefix + name]), name
