"""Checks for notebook 05 (complexity): predictions checked against the exact formulas."""

from __future__ import annotations

from .. import complexity as cx
from .core import NOT_ATTEMPTED, ExerciseError, attempt, expect_number, keeps_rng, not_attempted

__all__ = ["check_05_block_crossover", "check_05_heads", "check_05_resolution_growth"]

#: a prediction must match the exact ratio this closely: computed from the formulas, not guessed
REL = 1e-3


@keeps_rng
def check_05_resolution_growth(predicted_mhsa_growth, predicted_additive_growth,
                               D: int = 64, stride: int = 16) -> None:
    """Exercise 1: the FLOP growth from 224 to 448 px, MHSA and additive, to 0.1 %."""
    label = "Exercise 1"
    if predicted_mhsa_growth is None or predicted_additive_growth is None:
        return not_attempted(label)
    n1, n2 = cx.tokens_at(224, stride), cx.tokens_at(448, stride)
    true_add = cx.attention_flops("additive", n2, D) / cx.attention_flops("additive", n1, D)
    true_mhsa = cx.attention_flops("mhsa", n2, D) / cx.attention_flops("mhsa", n1, D)
    r = n2 / n1  # 4: twice the side, four times the tokens
    expect_number(predicted_additive_growth, true_add, f"{label}: predicted_additive_growth",
                  mistakes={"twice the side is four times the tokens, and the additive "
                            "attention is linear in the tokens": 2.0,
                            "the additive attention is linear in N, not quadratic": r * r},
                  rel=REL, hint="linear in N: the factor by which N grows")
    expect_number(predicted_mhsa_growth, true_mhsa, f"{label}: predicted_mhsa_growth", mistakes={
        "you grew only the 4N^2D term (x16); the 8ND^2 projections grow x4 and are still a "
        f"large part at N = {n1}": r * r,
        "you grew only the 8ND^2 projections (x4); the 4N^2D term grows x16": r,
        "twice the side is four times the tokens (not twice): N = 196 -> 784": (
            8 * 2 * n1 * D**2 + 4 * (2 * n1) ** 2 * D) / (8 * n1 * D**2 + 4 * n1**2 * D),
    }, rel=REL, hint="compute (8 N2 D^2 + 4 N2^2 D) / (8 N1 D^2 + 4 N1^2 D) exactly rather "
                     "than rounding")
    print(f"{label}: correct; additive x{true_add:.2f}, MHSA x{true_mhsa:.2f} (not x16)")
    return None


@keeps_rng
def check_05_heads(predicted_flops_ratio, predicted_memory_ratio, N: int = 4096,
                   D: int = 128) -> None:
    """Exercise 2: what 8 heads instead of 1 do to MHSA's FLOPs and explicit-path memory."""
    label = "Exercise 2"
    if predicted_flops_ratio is None or predicted_memory_ratio is None:
        return not_attempted(label)
    true_f = cx.attention_flops("mhsa", N, D, 8) / cx.attention_flops("mhsa", N, D, 1)
    true_m = cx.attention_memory("mhsa", N, D, 8) / cx.attention_memory("mhsa", N, D, 1)
    expect_number(predicted_flops_ratio, true_f, f"{label}: predicted_flops_ratio", mistakes={
        "h heads of width D/h do the same products as one head of width D: the FLOPs do "
        "not grow with the heads": 8.0}, rel=REL)
    expect_number(predicted_memory_ratio, true_m, f"{label}: predicted_memory_ratio", mistakes={
        "every head has its own N x N matrix: the memory grows with the heads": 1.0,
        "not all of the memory is N x N matrices: the 3ND of q, k, v does not grow with the "
        "heads, so the ratio is a little under 8": 8.0,
    }, rel=REL, hint="peak = 3ND + 2hN^2 numbers (q, k, v and two [h, N, N] score tensors)")
    print(f"{label}: correct; FLOPs x{true_f:.2f}, memory x{true_m:.4f}")
    return None


@keeps_rng
def check_05_block_crossover(block_crossover_tokens) -> None:
    """Exercise 3: the smallest N at which MHSA costs more than the rest of its block."""
    label = "Exercise 3"
    first = attempt(block_crossover_tokens, 64)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    for D in (16, 48, 56, 112, 220, 512):
        def mhsa_wins(n, d=D):
            parts = cx.block_flops_breakdown(n, d)
            return cx.attention_flops("mhsa", n, d) > parts["local representation"] + parts["mlp"]
        n = block_crossover_tokens(D)
        if not isinstance(n, int) or isinstance(n, bool):
            if isinstance(n, float) and n.is_integer():
                raise ExerciseError(f"{label}: block_crossover_tokens({D}) = {n}: return a whole "
                                    "number of tokens (an int, e.g. math.floor(...) + 1)")
            raise ExerciseError(f"{label}: block_crossover_tokens({D}) should be a whole number "
                                f"of tokens (an int), got {n!r}")
        if mhsa_wins(n) and mhsa_wins(n - 1):
            raise ExerciseError(f"{label}: block_crossover_tokens({D}) = {n} is not the smallest:"
                                f" MHSA already costs more at N = {n - 1} (you may have rounded "
                                "up one time too many)")
        if not mhsa_wins(n):
            hint = (" (you are one token short: check how you rounded)"
                    if mhsa_wins(n + 1) else "")
            raise ExerciseError(f"{label}: block_crossover_tokens({D}) = {n}: at N = {n} MHSA "
                                f"does not yet cost more than the rest of the block{hint}")
    print(f"{label}: correct; D = 112 -> N > {block_crossover_tokens(112) - 1}; "
          f"first square input: {cx.crossover('block', 16).resolution} px")
    return None
