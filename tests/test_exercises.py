"""Every exercise of notebooks 01-09: its printed solution passes its check, its skeleton
reads as "not attempted yet", and plausible wrong answers fail with a message that names the
mistake.

The solutions are read from the notebooks' ``<details>`` cells and run in a namespace built from
the notebook's own import statements, so a solution that uses a module the notebook never
imports fails here (as 03's ``copy.deepcopy`` once did).
"""

from __future__ import annotations

import ast
import re
import signal
import sys
import threading
from pathlib import Path

import nbformat
import pytest
import torch

from swiftlearn.exercises import (
    EXERCISES,
    ExerciseError,
    attempt,
    check_01_causal_attention,
    check_04_encoder_forward,
    core,
)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FILES = {"01": "01_self_attention", "02": "02_separable_attention",
         "03": "03_additive_attention", "04": "04_swiftformer", "05": "05_complexity",
         "06": "06_train_imagenette", "07": "07_coreml_export", "08": "08_ablations",
         "09": "09_compression"}
_CACHE: dict[str, tuple[list, str]] = {}


def _exercise_cells(key: str) -> tuple[list, str]:
    """The cells from '## Exercises' (or '## 4. Exercises: ...') to the next section, and the
    notebook's imports."""
    if key not in _CACHE:
        nb = nbformat.read(NOTEBOOKS / f"{FILES[key]}.ipynb", as_version=4)
        start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                     and re.search(r"^## (\d+\. )?Exercises", c.source, re.M))
        end = next((i for i, c in enumerate(nb.cells) if i > start and c.cell_type == "markdown"
                    and re.search(r"^## (?!(\d+\. )?Exercises)", c.source, re.M)),
                   len(nb.cells))
        imports = []
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(line for line in cell.source.splitlines()
                               if not line.lstrip().startswith(("%", "!")))
            imports += [ast.unparse(node) for node in ast.parse(source).body
                        if isinstance(node, ast.Import | ast.ImportFrom)]
        _CACHE[key] = (nb.cells[start:end], "\n".join(imports))
    return _CACHE[key]


def _namespace(key: str) -> dict:
    ns: dict = {}
    try:
        exec(_exercise_cells(key)[1], ns)  # the notebook's imports, nothing else
    except ImportError as e:  # 07 and 09 import the export extra
        pytest.skip(f"notebook {key} needs {e.name}: pip install -e '.[export]'")
    return ns


def _defines(code: str, names) -> bool:
    defined = set()
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return set(names) <= defined


def _details(cell, title: str) -> bool:
    return cell.cell_type == "markdown" and f"<summary><b>{title}</b></summary>" in cell.source


def _solution(exercise) -> str:
    cells, _ = _exercise_cells(exercise.notebook)
    blocks = [b for c in cells if _details(c, "Solution")
              for b in re.findall(r"```python\n(.*?)```", c.source, re.S)
              if _defines(b, exercise.names)]
    assert len(blocks) == 1, f"{exercise}: expected one solution block, found {len(blocks)}"
    return blocks[0]


def _skeleton(exercise) -> str:
    cells, _ = _exercise_cells(exercise.notebook)
    found = [c.source for c in cells if c.cell_type == "code" and _defines(c.source,
                                                                          exercise.names)]
    assert len(found) == 1, f"{exercise}: expected one answer cell, found {len(found)}"
    return found[0]


def _run(exercise, code: str):
    ns = _namespace(exercise.notebook)
    exec(code, ns)
    return exercise.check(*[ns[n] for n in exercise.names])


IDS = [f"{e.notebook}-ex{e.number}" for e in EXERCISES]


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_solution_passes(exercise, capsys):
    _run(exercise, _solution(exercise))
    assert capsys.readouterr().out.startswith(f"Exercise {exercise.number}: correct")


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_skeleton_is_not_attempted(exercise, capsys):
    _run(exercise, _skeleton(exercise))
    assert capsys.readouterr().out.startswith(f"Exercise {exercise.number}: not attempted yet")


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_check_cell_calls_the_library_check(exercise):
    cells, _ = _exercise_cells(exercise.notebook)
    calls = [c for c in cells if c.cell_type == "code"
             and f"ex.{exercise.check.__name__}(" in c.source]
    assert len(calls) == 1 and calls[0].source.startswith(f"# Check exercise {exercise.number}")


@pytest.mark.parametrize("key", ["01", "02", "03", "04"])
def test_a_write_it_exercise_with_hint_before_solution(key):
    """Each of 01-04 has the learner write its central piece from a skeleton, with a hint."""
    cells, _ = _exercise_cells(key)
    prompts = [i for i, c in enumerate(cells) if c.cell_type == "markdown"
               and re.search(r"\*\*Exercise \d \(write it\)", c.source)]
    assert prompts, f"notebook {key} has no '(write it)' exercise"
    for i in prompts:
        after = cells[i + 1:i + 6]
        assert 'raise NotImplementedError("your code here")' in after[0].source
        kinds = [("hint" if _details(c, "Hint") else "solution" if _details(c, "Solution")
                  else None) for c in after]
        assert "hint" in kinds and "solution" in kinds
        assert kinds.index("hint") < kinds.index("solution")


def test_what_happens_if_prompts():
    """At least three open prompts in 01-04, each with a code cell and a collapsed answer."""
    found = 0
    for key in ("01", "02", "03", "04"):
        cells, _ = _exercise_cells(key)
        for i, c in enumerate(cells):
            if c.cell_type == "markdown" and c.source.startswith("**What happens if"):
                assert cells[i + 1].cell_type == "code"
                assert cells[i + 1].source.startswith("# What happens if")
                assert _details(cells[i + 2], "Answer")
                found += 1
    assert found >= 3


def test_every_exercise_is_registered():
    """Every solution block in the notebooks belongs to an exercise of EXERCISES."""
    for key in FILES:
        cells, _ = _exercise_cells(key)
        prompts = [int(m) for c in cells if c.cell_type == "markdown"
                   for m in re.findall(r"^\*\*Exercise (\d)", c.source, re.M)]
        registered = sorted(e.number for e in EXERCISES if e.notebook == key)
        assert prompts == registered, key


def test_a_crash_in_the_answer_is_one_clear_line():
    def broken(x):
        return x.no_such_attribute

    with pytest.raises(ExerciseError, match="your `broken` raised AttributeError"):
        attempt(broken, 1)


# ------------------------------------------------------------------------ wrong answers

#: (notebook, exercise, code defining the answer, a fragment the message must contain)
WRONG = [
    ("01", 1, """
def causal_attention(q, k, v):
    N = q.shape[-2]
    future = torch.ones(N, N, dtype=torch.bool).triu(diagonal=1)
    attn = (q @ k.transpose(-2, -1)).masked_fill(future, float("-inf")).softmax(-1)
    return attn @ v, attn""", "not divided by sqrt(d)"),
    ("01", 1, """
def causal_attention(q, k, v):
    N, d = q.shape[-2:]
    future = torch.ones(N, N, dtype=torch.bool).triu(diagonal=1)
    attn = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(future, 0).softmax(-1)
    return attn @ v, attn""", "-inf *before* the softmax"),
    ("01", 1, """
def causal_attention(q, k, v):
    N, d = q.shape[-2:]
    future = torch.ones(N, N, dtype=torch.bool).triu(diagonal=0)
    attn = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(future, float("-inf"))
    attn = attn.softmax(-1)
    return attn @ v, attn""", "mask the diagonal too"),
    ("01", 2, """
def attention_matrix_bytes(image_size, patch_size, heads):
    return ((image_size // patch_size) ** 2) ** 2 * 4""", "multiply by the heads"),
    ("01", 2, """
def attention_matrix_bytes(image_size, patch_size, heads):
    return heads * ((image_size // patch_size) ** 2) ** 2""", "4 bytes each"),
    ("01", 2, """
def attention_matrix_bytes(image_size, patch_size, heads):
    return heads * (image_size // patch_size) ** 2 * 4""", "squared only once"),
    ("01", 2, """
def attention_matrix_bytes(image_size, patch_size, heads):
    n = (image_size // patch_size) ** 2
    return 2 * heads * n * n * 4  # the scores and the softmax weights""", "not the scores and"),
    ("01", 3, """
def row_entropy(attn):
    return -(attn * attn.log()).sum(-1)""", "0 * log 0"),
    ("01", 3, """
def row_entropy(attn):
    return -torch.xlogy(attn, attn).sum(-1) / math.log(2)""", "natural logarithm"),
    ("01", 3, """
def row_entropy(attn):
    return torch.xlogy(attn, attn).sum(-1)""", "sign is missing"),
    ("01", 4, """
def mhsa_forward(x, module):
    q, k, v = rearrange(module.qkv(x), "b n (three h d) -> three b h n d", three=3,
                        h=module.num_heads)
    out = (q @ k.transpose(-2, -1)).softmax(-1) @ v
    return module.proj(rearrange(out, "b h n d -> b n (h d)"))""", "not divided by sqrt(d)"),
    ("01", 4, """
def mhsa_forward(x, module):
    q, k, v = rearrange(module.qkv(x), "b n (three h d) -> three b h n d", three=3,
                        h=module.num_heads)
    out = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-2) @ v
    return module.proj(rearrange(out, "b h n d -> b n (h d)"))""", "over the queries"),
    ("01", 4, """
def mhsa_forward(x, module):
    B, N, D = x.shape
    h = module.num_heads
    q, k, v = module.qkv(x).reshape(B, N, h, 3, D // h).permute(3, 0, 2, 1, 4)
    out = (q @ k.transpose(-2, -1) / math.sqrt(D // h)).softmax(-1) @ v
    return module.proj(out.transpose(1, 2).reshape(B, N, D))""", "split in the wrong order"),
    ("01", 4, """
def mhsa_forward(x, module):
    q, k, v = rearrange(module.qkv(x), "b n (three h d) -> three b h n d", three=3,
                        h=module.num_heads)
    out = F.scaled_dot_product_attention(q, k, v)
    return module.proj(rearrange(out, "b h n d -> b n (h d)"))""",
     "calls scaled_dot_product_attention"),
    ("01", 4, """
def mhsa_forward(x, module):
    return module(x)""", "calls the module itself"),
    ("02", 1, """
def scores_without_bias(x, module):
    return module.qkv_proj(x)[..., 0].softmax(dim=1)""", "calls qkv_proj"),
    ("02", 1, """
def scores_without_bias(x, module):
    return x @ module.qkv_proj.weight[0]""", "softmax over the tokens is missing"),
    ("02", 1, """
def scores_without_bias(x, module):
    return (x @ module.qkv_proj.weight[1]).softmax(dim=1)""", "row 1 is the first key row"),
    ("02", 2, """
def separable_flops(N, D):
    return 6 * N * D**2 + 2 * N * D


def separable_matmul_flops(N, D):
    return separable_flops(N, D)""", "calls separable_flops"),
    ("02", 2, """
def separable_matmul_flops(N, D):
    return N * D * (1 + 2 * D) + N * D * D""", "2 FLOPs per multiply-add"),
    ("02", 2, """
def separable_matmul_flops(N, D):
    return 2 * N * D * (2 * D) + 2 * N * D * D""", "score row is missing"),
    ("02", 3, """
def context_by_sdpa(x, module):
    B, N, D = x.shape
    w = module.qkv_proj.weight
    value = x @ w[1:D + 1].T + module.qkv_proj.bias[1:D + 1]
    return F.scaled_dot_product_attention(w[:1].expand(B, 1, D), x, value)""",
     "multiply the query W_I by sqrt(D)"),
    ("02", 3, """
def context_by_sdpa(x, module):
    B, N, D = x.shape
    query = (module.qkv_proj.weight[:1] * math.sqrt(D)).expand(B, 1, D)
    return F.scaled_dot_product_attention(query, x, x)""", "not the tokens x"),
    ("02", 3, """
def context_by_sdpa(x, module):
    D = x.shape[-1]
    s, k, _ = module.qkv_proj(x).split([1, D, D], dim=-1)
    return (s.softmax(dim=1) * k).sum(dim=1, keepdim=True)""", "0 times"),
    ("02", 4, """
def separable_forward(x, module):
    D = x.shape[-1]
    scores, key, value = module.qkv_proj(x).split([1, D, D], dim=-1)
    context = (scores.softmax(dim=-1) * key).sum(dim=1, keepdim=True)
    return module.out_proj(F.relu(value) * context)""", "size-1 score axis"),
    ("02", 4, """
def separable_forward(x, module):
    D = x.shape[-1]
    scores, key, value = module.qkv_proj(x).split([1, D, D], dim=-1)
    context = (scores.softmax(dim=1) * key).sum(dim=1, keepdim=True)
    return module.out_proj(value * context)""", "ReLU on the values is missing"),
    ("02", 4, """
def separable_forward(x, module):
    return module(x)""", "calls the module itself"),
    ("03", 1, """
def alpha_softmax(query, w_g):
    return (query @ w_g / math.sqrt(query.shape[-1])).softmax(dim=-1)""", "size-1 last axis"),
    ("03", 1, """
def alpha_softmax(query, w_g):
    return (query @ w_g).softmax(dim=1)""", "not divided by sqrt(d)"),
    ("03", 1, """
def alpha_softmax(query, w_g):
    return F.normalize(query @ w_g / math.sqrt(query.shape[-1]), dim=1)""",
     "'normalize' formulation"),
    ("03", 2, """
def unit_w_g(module):
    with torch.no_grad():
        module.w_g /= module.w_g.norm()
    return module""", "original module changed"),
    ("03", 2, """
import copy


def unit_w_g(module):
    return copy.deepcopy(module)""", "not rescaled"),
    ("03", 2, """
import copy


def unit_w_g(module):
    m = copy.deepcopy(module)
    with torch.no_grad():
        m.w_g /= m.w_g.sum()
    return m""", "sum of w_g"),
    ("03", 3, """
def additive_matmul_flops(N, D, d):
    return 2 * N * D * d + N * d + N * d * d + N * d * D""", "2 FLOPs per multiply-add"),
    ("03", 3, """
def additive_matmul_flops(N, D, d):
    return 4 * N * D * d + 2 * N * d * d + 2 * N * d * D""", "token scores"),
    ("03", 3, """
def additive_matmul_flops(N, D, d):
    return 8 * N * D**2 + 2 * N * D""", "you used D where"),
    ("03", 3, """
def additive_matmul_flops(N, D, d):
    from swiftlearn.complexity import attention_flops
    return attention_flops("additive", N, D)""", "calls attention_flops"),
    ("03", 4, """
def additive_forward(x, module):
    query, key = module.to_query(x), module.to_key(x)
    alpha = F.normalize(query @ module.w_g / math.sqrt(query.shape[-1]), dim=1)
    g = (alpha * query).sum(dim=1, keepdim=True)
    return module.final(module.Proj(g * key) + query)""", "L2-normalised"),
    ("03", 4, """
def additive_forward(x, module):
    query = F.normalize(module.to_query(x), dim=-1)
    key = F.normalize(module.to_key(x), dim=-1)
    alpha = F.normalize(query @ module.w_g / math.sqrt(query.shape[-1]), dim=1)
    g = (alpha * query).sum(dim=1, keepdim=True)
    return module.final(module.Proj(g * key))""", "query residual is missing"),
    ("03", 4, """
def additive_forward(x, module):
    query = F.normalize(module.to_query(x), dim=-1)
    key = F.normalize(module.to_key(x), dim=-1)
    alpha = query @ module.w_g / math.sqrt(query.shape[-1])
    g = (alpha * query).sum(dim=1, keepdim=True)
    return module.final(module.Proj(g * key) + query)""", "never normalised"),
    ("03", 4, """
def additive_forward(x, module):
    query = F.normalize(module.to_query(x), dim=-1)
    key = F.normalize(module.to_key(x), dim=-1)
    alpha = F.normalize(query @ module.w_g / math.sqrt(query.shape[-1]), dim=1)
    g = (alpha * query).sum(dim=1, keepdim=True)
    return module.final(module.Proj(g * key) + query)""", "read module.formulation"),
    ("04", 1, """
def conv_encoder_params(C, expansion=4):
    return 8 * C * C + 20 * C""", "buffers, not parameters"),
    ("04", 1, """
def conv_encoder_params(C, expansion=4):
    return 9 * C * C + C + 2 * C + 2 * expansion * C * C + expansion * C + 2 * C""",
     "depth-wise"),
    ("04", 1, """
def conv_encoder_params(C, expansion=4):
    return 8 * C * C + 18 * C""", "ignores `expansion`"),
    ("04", 1, """
def conv_encoder_params(C, expansion=4):
    # depth-wise 9C + C, BatchNorm counted as C, two 1x1 convolutions, layer scale C
    return 9 * C + C + C + 2 * expansion * C * C + expansion * C + C + C""", "counted as C"),
    ("04", 2, """
def stage_grid(n, stage):
    return n // 2 ** (stage + 1)""", "rounds *up*"),
    ("04", 2, """
def stage_grid(n, stage):
    for _ in range(stage):
        n = (n - 1) // 2 + 1
    return n""", "s + 1 halvings"),
    ("04", 3, """
import copy


def fold(conv, bn):
    s = bn.weight / torch.sqrt(bn.running_var)
    b = conv.bias if conv.bias is not None else torch.zeros_like(s)
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        fused.weight = nn.Parameter(conv.weight * s[:, None, None, None])
        fused.bias = nn.Parameter((b - bn.running_mean) * s + bn.bias)
    return fused""", "leaves out eps"),
    ("04", 3, """
def fold(conv, bn):
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = conv.bias if conv.bias is not None else torch.zeros_like(s)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                      padding=conv.padding, groups=conv.groups)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * s[:, None, None, None])
        fused.bias.copy_((b - bn.running_mean) * s + bn.bias)
    return fused""", "stride=(1, 1)"),
    ("04", 3, """
import copy


def fold(conv, bn):
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = conv.bias if conv.bias is not None else torch.zeros_like(s)
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        fused.weight = nn.Parameter(conv.weight * s[:, None, None, None])
        fused.bias = nn.Parameter(b * s + bn.bias)
    return fused""", "running mean term is missing"),
    ("04", 3, """
def fold(conv, bn):
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        conv.weight.mul_(s[:, None, None, None])
    return conv""", "changed the original conv"),
    ("04", 4, """
def encoder_forward(x, block):
    x = block.local_representation(x)
    H, W = x.shape[-2:]
    attn = rearrange(block.attn(rearrange(x, "b c h w -> b (h w) c")), "b (h w) c -> b c h w",
                     h=H, w=W)
    x = x + attn
    return x + block.linear(x)""", "layer scales"),
    ("04", 4, """
def encoder_forward(x, block):
    x = block.local_representation(x)
    B, C, H, W = x.shape
    attn = block.attn(x.reshape(B, H * W, C)).reshape(B, C, H, W)
    x = x + block.layer_scale_1 * attn
    return x + block.layer_scale_2 * block.linear(x)""", "needs a transpose"),
    ("04", 4, """
def encoder_forward(x, block):
    x = block.local_representation(x)
    H, W = x.shape[-2:]
    attn = rearrange(block.attn(rearrange(x, "b c h w -> b (h w) c")), "b (h w) c -> b c h w",
                     h=H, w=W)
    return x + block.layer_scale_1 * attn + block.layer_scale_2 * block.linear(x)""",
     "in sequence"),
    ("04", 4, """
def encoder_forward(x, block):
    return block(x)""", "calls the block itself"),
    ("05", 1, "predicted_mhsa_growth = 16.0\npredicted_additive_growth = 4.0",
     "only the 4N^2D term"),
    ("05", 1, "predicted_mhsa_growth = 11.3\npredicted_additive_growth = 4.0",
     "exactly rather than rounding"),
    ("05", 1, "predicted_mhsa_growth = 11.259\npredicted_additive_growth = 2.0",
     "four times the tokens"),
    ("05", 2, "predicted_flops_ratio = 1.0\npredicted_memory_ratio = 8.0", "a little under 8"),
    ("05", 2, "predicted_flops_ratio = 8.0\npredicted_memory_ratio = 7.69", "do not grow"),
    ("05", 2, "predicted_flops_ratio = 1.0\npredicted_memory_ratio = 1.0", "own N x N matrix"),
    ("05", 3, """
def block_crossover_tokens(D):
    return 3 * D + 4""", "does not yet cost more"),
    ("05", 3, """
def block_crossover_tokens(D):
    return 3 * D + 6""", "is not the smallest"),
    ("05", 3, """
def block_crossover_tokens(D):
    return 3 * D + 5.0""", "an int"),
    ("06", 1, """
def top1_from_confusion(conf):
    return np.trace(conf) / conf.sum()""", "return percent"),
    ("06", 1, """
def top1_from_confusion(conf):
    return float(np.mean(np.diag(conf) / conf.sum(axis=1))) * 100""", "balanced accuracy"),
    ("06", 1, """
def top1_from_confusion(conf):
    return np.trace(conf) / len(conf) * 100""", "number of images"),
    ("06", 2, """
def min_smoothed_loss(eps, K):
    hi, lo = 1 - eps, eps / (K - 1)
    return -(hi * np.log(hi) + (K - 1) * lo * np.log(lo))""", "over all K classes"),
    ("06", 1, """
def top1_from_confusion(conf):
    conf = np.asarray(conf)
    return conf.max(axis=1).sum() / conf.sum() * 100""", "row's largest entry"),
    ("06", 2, """
def min_smoothed_loss(eps, K):
    hi, lo = 1 - eps + eps / K, eps / K
    return -(hi * np.log2(hi) + (K - 1) * lo * np.log2(lo))""", "natural logarithm"),
    ("06", 2, """
def min_smoothed_loss(eps, K):
    hi, lo = 1 - eps + eps / K, eps / K
    return -(hi * np.log(hi) + lo * np.log(lo))""", "factor K - 1 is missing"),
    ("06", 3, """
def lr_at(step, peak, warmup, total, min_lr):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min((step - warmup) / (total - warmup), 1.0)
    return min_lr + (peak - min_lr) * (1 - t)""", "straight line"),
    ("06", 3, """
import math


def lr_at(step, peak, warmup, total, min_lr):
    if step < warmup:
        return peak * step / warmup
    t = min((step - warmup) / (total - warmup), 1.0)
    return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * t))""", "starts at 0"),
    ("06", 3, """
import math


def lr_at(step, peak, warmup, total, min_lr):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / (total - warmup)
    return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * t))""", "comes back up"),
    ("06", 3, """
import math


def lr_at(step, peak, warmup, total, min_lr):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min((step - warmup) / (total - warmup), 1.0)
    return peak * 0.5 * (1 + math.cos(math.pi * t))""", "ends at 0"),
    ("07", 1, """
def imagetype_by_hand(mean, std):
    sigma = sum(std) / len(std)
    return 1 / (255 * sigma), [-m / sigma for m in mean], max(s / sigma - 1 for s in std)""",
     "(abs)"),
    ("07", 1, """
def imagetype_by_hand(mean, std):
    sigma = sum(std) / len(std)
    return 1 / (255 * sigma), [-m / sigma for m in mean], max(std) / sigma - 1""",
     "may be the smallest"),
    ("07", 1, """
def imagetype_by_hand(mean, std):
    sigma = sum(std) / len(std)
    return 1 / (255 * sigma), [-255 * m / sigma for m in mean], max(abs(s / sigma - 1)
                                                                    for s in std)""",
     "the 255 belongs to the scale only"),
    ("07", 2, """
@mil.register_op("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5, **_):
    return torch.nn.functional.hardsigmoid(x)""", "ignores alpha and beta"),
    ("07", 2, """
@mil.register_op("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5, **_):
    return alpha * x + beta""", "clip to [0, 1]"),
    ("07", 2, """
def sigmoid_hard(x, alpha=0.2, beta=0.5, **_):
    return torch.clamp(alpha * x + beta, 0.0, 1.0)""", "register it"),
    ("07", 3, """
def split_normalize(pixels):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return pixels / 255 - mean""", "factor is missing"),
    ("07", 3, """
def split_normalize(pixels):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels / 255 - mean) * std""", "k_c = 1 / std_c"),
    ("08", 1, """
def paired_bootstrap(correct_a, correct_b, rng, resamples=2000):
    n = len(correct_a)
    d = [correct_a[rng.integers(0, n, n)].mean() - correct_b[rng.integers(0, n, n)].mean()
         for _ in range(resamples)]
    return tuple(np.percentile(np.array(d) * 100, [2.5, 97.5]))""", "resampled independently"),
    ("08", 1, """
def paired_bootstrap(correct_a, correct_b, rng, resamples=2000):
    n = len(correct_a)
    d = []
    for _ in range(resamples):
        idx = rng.permutation(n)
        d.append(correct_a[idx].mean() - correct_b[idx].mean())
    return tuple(np.percentile(np.array(d) * 100, [2.5, 97.5]))""", "with replacement"),
    ("08", 1, """
def paired_bootstrap(correct_a, correct_b, rng, resamples=2000):
    n = len(correct_a)
    idx = rng.integers(0, n, (resamples, n))
    d = correct_a[idx].mean(1) - correct_b[idx].mean(1)
    return tuple(np.percentile(d, [2.5, 97.5]))""", "fraction"),
    ("08", 1, """
def paired_bootstrap(correct_a, correct_b, rng, resamples=2000):
    n = len(correct_a)
    idx = rng.integers(0, n, (resamples, n))
    d = (correct_b[idx].mean(1) - correct_a[idx].mean(1)) * 100
    return tuple(np.percentile(d, [2.5, 97.5]))""", "B minus A"),
    ("09", 1, """
def dequantize(q, scale, zero_point, axis):
    shape = [1] * q.ndim
    shape[axis] = -1
    return scale.reshape(shape) * (q.astype(np.float16) - zero_point.astype(np.float16)
                                   .reshape(shape))""", "float16 arithmetic"),
    ("09", 1, """
def dequantize(q, scale, zero_point, axis):
    shape = [1] * q.ndim
    shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape)
    return s * (q - zero_point.reshape(shape)).astype(np.float32)""", "overflowed int8"),
    ("09", 1, """
def dequantize(q, scale, zero_point, axis):
    shape = [1] * q.ndim
    shape[axis] = -1
    return np.asarray(scale, np.float32).reshape(shape) * q.astype(np.float32)""",
     "zero point is missing"),
    ("09", 2, """
def unpack(packed, nbits, count):
    bits = np.unpackbits(packed)[: nbits * count]
    return bits.reshape(count, nbits) @ (1 << np.arange(nbits))""", "bitorder='little'"),
    ("09", 2, """
def unpack(packed, nbits, count):
    return (packed & (2 ** nbits - 1))[:count]""", "does not sit in its own byte"),
    ("09", 2, """
def unpack(packed, nbits, count):
    bits = np.unpackbits(packed, bitorder="little")[: nbits * count]
    return bits.reshape(count, nbits) @ (1 << np.arange(nbits)[::-1])""", "reversed"),
]


def _exercise(key: str, number: int):
    return next(e for e in EXERCISES if (e.notebook, e.number) == (key, number))


@pytest.mark.parametrize("key, number, code, fragment", WRONG,
                         ids=[f"{k}-ex{n}-{f[:24]}" for k, n, _, f in WRONG])
def test_wrong_answer_fails_naming_the_mistake(key, number, code, fragment):
    with pytest.raises(ExerciseError) as info:
        _run(_exercise(key, number), code)
    assert fragment in str(info.value), str(info.value)
    assert f"Exercise {number}" in str(info.value)


#: the four write-it exercises (number 4 of 01-04): (notebook, the answer's name, what the
#: message calls the module, where its class lives, the class)
WRITE_IT = [("01", "mhsa_forward", "module", "swiftlearn.attention", "MultiHeadSelfAttention"),
            ("02", "separable_forward", "module", "swiftlearn.attention",
             "SeparableSelfAttention"),
            ("03", "additive_forward", "module", "swiftlearn.attention",
             "EfficientAdditiveAttention"),
            ("04", "encoder_forward", "block", "swiftlearn.blocks", "SwiftFormerEncoder")]
#: answers that run the module's own forward without writing `module(x)` ({fn}: the answer's
#: name, C: the module's class, imported as a notebook would)
CALLS_ITSELF = {
    "m.forward": "def {fn}(x, m):\n    return m.forward(x)",
    "type(m).forward": "def {fn}(x, m):\n    return type(m).forward(m, x)",
    "C.forward": "def {fn}(x, m):\n    return C.forward(m, x)",
    "deepcopy": "def {fn}(x, m):\n    return copy.deepcopy(m)(x)",
    "_call_impl": "def {fn}(x, m):\n    return m._call_impl(x)",
    "saved-forward": "def {fn}(x, m, forward=C.forward):\n    return forward(m, x)",
    "subclass": """class Sub(C):
    def forward(self, x):
        return super().forward(x)


def {fn}(x, m):
    twin = copy.deepcopy(m)
    twin.__class__ = Sub
    return twin(x)""",
}


@pytest.mark.parametrize("key, fn, what, where, cls", WRITE_IT, ids=[w[0] for w in WRITE_IT])
@pytest.mark.parametrize("answer", CALLS_ITSELF.values(), ids=CALLS_ITSELF.keys())
def test_write_it_refuses_any_call_into_the_modules_forward(key, fn, what, where, cls, answer):
    """Not only `module(x)`: the forward reached through the class, a copy, a subclass or a
    reference saved earlier is refused with the same message."""
    code = f"import copy\nfrom {where} import {cls} as C\n\n\n" + answer.format(fn=fn)
    with pytest.raises(ExerciseError, match=f"Exercise 4: your function calls the {what} itself"):
        _run(_exercise(key, 4), code)


def test_two_wrong_answers_per_exercise():
    for e in EXERCISES:
        assert sum((k, n) == (e.notebook, e.number) for k, n, _, _ in WRONG) >= 2, e


def test_a_check_leaves_the_notebooks_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_04_encoder_forward(lambda x, block: None)  # seeds torch inside for its probes
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ the answer misbehaving


def test_an_endless_loop_is_stopped(monkeypatch):
    """Even one that catches every Exception; the previous alarm (pytest-timeout's) is back."""
    monkeypatch.setattr(core, "TIME_LIMIT_S", 1)
    handler, (timer, _) = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)

    def encoder_forward(x, block):
        while True:
            try:
                x = x + 1
            except Exception:
                pass

    with pytest.raises(ExerciseError, match=r"ran longer than 1 s .*endless loop"):
        check_04_encoder_forward(encoder_forward)
    assert signal.getsignal(signal.SIGALRM) is handler
    assert (signal.getitimer(signal.ITIMER_REAL)[0] > 0) == (timer > 0)


def test_off_the_main_thread_the_limit_holds_too(monkeypatch):
    monkeypatch.setattr(core, "TIME_LIMIT_S", 0.5)
    results = []

    def spin(x):
        while True:
            pass

    def run():
        results.append(attempt(lambda x: x + 1, 1))
        try:
            attempt(spin, 1)
        except ExerciseError as e:
            results.append(str(e))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert results[0] == 2 and "ran longer than 0.5 s" in results[1]


def test_the_limit_survives_native_runtimes_in_the_process():
    """The SIGALRM time limit crashed the process (exit 139) once OpenVINO and NNCF had run in
    it; the trace-based one does not depend on signals at all."""
    handler, tracer = signal.getsignal(signal.SIGALRM), sys.gettrace()
    with pytest.raises(ExerciseError, match="ran longer"):
        core.TIME_LIMIT_S, saved = 0.3, core.TIME_LIMIT_S
        try:
            attempt(lambda x: [None for _ in iter(int, 1)], 1)  # an endless comprehension
        finally:
            core.TIME_LIMIT_S = saved
    assert signal.getsignal(signal.SIGALRM) is handler and sys.gettrace() is tracer


def test_ctrl_c_still_stops_a_check():
    def encoder_forward(x, block):
        raise KeyboardInterrupt

    profile, handler = sys.getprofile(), signal.getsignal(signal.SIGALRM)
    with pytest.raises(KeyboardInterrupt):
        check_04_encoder_forward(encoder_forward)
    with pytest.raises(KeyboardInterrupt):
        attempt(encoder_forward, 1, 2)
    assert sys.getprofile() is profile and signal.getsignal(signal.SIGALRM) is handler


def test_sys_exit_in_the_answer_does_not_escape():
    def causal_attention(q, k, v):
        sys.exit()

    with pytest.raises(ExerciseError, match=r"your `causal_attention` called sys.exit\(\)"):
        check_01_causal_attention(causal_attention)


def test_an_answer_that_changes_its_input_is_told_so():
    """Right maths on a scaled-in-place q: the check would compare with the wrong q."""
    code = """
def causal_attention(q, k, v):
    N, d = q.shape[-2:]
    q /= math.sqrt(d)
    future = torch.ones(N, N, dtype=torch.bool).triu(diagonal=1)
    attn = (q @ k.transpose(-2, -1)).masked_fill(future, float("-inf")).softmax(-1)
    return attn @ v, attn"""
    with pytest.raises(ExerciseError, match=r"changed its input .*in-place op"):
        _run(_exercise("01", 1), code)
