"""The course's exercise checks: one function per exercise, named ``check_<notebook>_<name>``.

A notebook's check cell calls one of these on the learner's answer. It prints
``Exercise N: not attempted yet`` while the answer is still ``None`` or the skeleton's
``raise NotImplementedError``, ``Exercise N: correct ...`` when it is right, and otherwise raises
:class:`ExerciseError` with a sentence that says what is off; where a likely mistake can be
recognised (a missing ``eps``, a softmax over the wrong axis, a forgotten residual) the sentence
names it. The checks compare against the library on random weights and inputs, or against
``FlopCounterMode`` and real tensors, never against the notebook's own code.

:data:`EXERCISES` lists every exercise: the notebook, its number, the name the learner defines
and its check. ``tests/test_exercises.py`` runs each check on the solution printed in the
notebook (it must pass) and on plausible wrong answers (each must fail, naming the mistake).
"""

from __future__ import annotations

from typing import NamedTuple

from . import nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08, nb09
from .core import NOT_ATTEMPTED, ExerciseError, attempt, calls_any, expect_close, expect_number
from .nb01 import (
    check_01_attention_matrix_bytes,
    check_01_causal_attention,
    check_01_mhsa_forward,
    check_01_row_entropy,
)
from .nb02 import (
    check_02_context_by_sdpa,
    check_02_scores_without_bias,
    check_02_separable_flops,
    check_02_separable_forward,
)
from .nb03 import (
    check_03_additive_flops,
    check_03_additive_forward,
    check_03_alpha_softmax,
    check_03_unit_w_g,
)
from .nb04 import (
    check_04_conv_encoder_params,
    check_04_encoder_forward,
    check_04_fold,
    check_04_stage_grid,
    scrambled,
)
from .nb05 import check_05_block_crossover, check_05_heads, check_05_resolution_growth
from .nb06 import check_06_lr_at, check_06_min_smoothed_loss, check_06_top1
from .nb07 import check_07_imagetype_by_hand, check_07_sigmoid_hard, check_07_split_normalize
from .nb08 import check_08_paired_bootstrap
from .nb09 import check_09_dequantize, check_09_unpack


class Exercise(NamedTuple):
    notebook: str  # "01" .. "09"
    number: int
    names: tuple[str, ...]  # what the learner defines (a function, or the predicted numbers)
    check: object  # check(*answers) prints the verdict or raises ExerciseError


EXERCISES: tuple[Exercise, ...] = (
    Exercise("01", 1, ("causal_attention",), check_01_causal_attention),
    Exercise("01", 2, ("attention_matrix_bytes",), check_01_attention_matrix_bytes),
    Exercise("01", 3, ("row_entropy",), check_01_row_entropy),
    Exercise("01", 4, ("mhsa_forward",), check_01_mhsa_forward),
    Exercise("02", 1, ("scores_without_bias",), check_02_scores_without_bias),
    Exercise("02", 2, ("separable_matmul_flops",), check_02_separable_flops),
    Exercise("02", 3, ("context_by_sdpa",), check_02_context_by_sdpa),
    Exercise("02", 4, ("separable_forward",), check_02_separable_forward),
    Exercise("03", 1, ("alpha_softmax",), check_03_alpha_softmax),
    Exercise("03", 2, ("unit_w_g",), check_03_unit_w_g),
    Exercise("03", 3, ("additive_matmul_flops",), check_03_additive_flops),
    Exercise("03", 4, ("additive_forward",), check_03_additive_forward),
    Exercise("04", 1, ("conv_encoder_params",), check_04_conv_encoder_params),
    Exercise("04", 2, ("stage_grid",), check_04_stage_grid),
    Exercise("04", 3, ("fold",), check_04_fold),
    Exercise("04", 4, ("encoder_forward",), check_04_encoder_forward),
    Exercise("05", 1, ("predicted_mhsa_growth", "predicted_additive_growth"),
             check_05_resolution_growth),
    Exercise("05", 2, ("predicted_flops_ratio", "predicted_memory_ratio"), check_05_heads),
    Exercise("05", 3, ("block_crossover_tokens",), check_05_block_crossover),
    Exercise("06", 1, ("top1_from_confusion",), check_06_top1),
    Exercise("06", 2, ("min_smoothed_loss",), check_06_min_smoothed_loss),
    Exercise("06", 3, ("lr_at",), check_06_lr_at),
    Exercise("07", 1, ("imagetype_by_hand",), check_07_imagetype_by_hand),
    Exercise("07", 2, ("sigmoid_hard",), check_07_sigmoid_hard),
    Exercise("07", 3, ("split_normalize",), check_07_split_normalize),
    Exercise("08", 1, ("paired_bootstrap",), check_08_paired_bootstrap),
    Exercise("09", 1, ("dequantize",), check_09_dequantize),
    Exercise("09", 2, ("unpack",), check_09_unpack),
)

__all__ = [
    "EXERCISES", "NOT_ATTEMPTED", "Exercise", "ExerciseError", "attempt", "calls_any",
    "check_01_attention_matrix_bytes", "check_01_causal_attention", "check_01_mhsa_forward",
    "check_01_row_entropy", "check_02_context_by_sdpa", "check_02_scores_without_bias",
    "check_02_separable_flops", "check_02_separable_forward", "check_03_additive_flops",
    "check_03_additive_forward", "check_03_alpha_softmax", "check_03_unit_w_g",
    "check_04_conv_encoder_params", "check_04_encoder_forward", "check_04_fold",
    "check_04_stage_grid", "check_05_block_crossover", "check_05_heads",
    "check_05_resolution_growth", "check_06_lr_at", "check_06_min_smoothed_loss",
    "check_06_top1", "check_07_imagetype_by_hand", "check_07_sigmoid_hard",
    "check_07_split_normalize", "check_08_paired_bootstrap", "check_09_dequantize",
    "check_09_unpack", "expect_close", "expect_number", "nb01", "nb02", "nb03", "nb04", "nb05",
    "nb06", "nb07", "nb08", "nb09", "scrambled",
]
