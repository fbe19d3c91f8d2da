"""Writing a suite's result: a markdown report and the JSON beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils import atomic_write_text, check_writable
from .deploy import RUNTIME_DEFAULTS

__all__ = ["check_out", "to_markdown", "write"]

_LABELS = {"swiftformer_xs": "SwiftFormer-XS", "swiftformer_s": "SwiftFormer-S",
           "swiftformer_l1": "SwiftFormer-L1", "swiftformer_l3": "SwiftFormer-L3"}


def _latency_table(columns: list[str], rows: list[dict], threads: list[str], first_cells,
                   speed_key: str) -> list[str]:
    """Markdown table lines: ``columns`` then, per thread count, the median [IQR] and speed."""
    head = list(columns)
    for t in threads:
        head += [f"{t} thr: ms [IQR]", f"{t} thr: speed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = first_cells(r)
        for t in threads:
            lat = r["latency"][t]
            cells.append(f"{lat['median_ms']:.1f} [{lat['q1_ms']:.1f}-{lat['q3_ms']:.1f}]")
            sp = r[speed_key].get(t)
            cells.append(f"{sp:.2f}x" if sp is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(result: dict) -> str:
    """The result as a markdown report: machine, settings, table, goals, notes."""
    if result["suite"] == "train":
        return _train_markdown(result)
    if result["suite"] == "mixers":
        return _mixers_markdown(result)
    if result["suite"] == "deploy":
        return _deploy_markdown(result)
    m, s = result["machine"], result["settings"]
    threads = [str(t) for t in s["threads"]]
    lines = [
        f"# swiftlearn bench: latency (batch {s['batch']}, {s['size']}x{s['size']}, CPU)", "",
        f"{_cpu_line(m)}; torch {m['torch']}, {_versions(m, 'timm', 'onnxruntime', 'openvino')}"
        f"; python {m['python']}; {m['date']}; load average {m.get('load_average_start')} -> "
        f"{m.get('load_average_end')}.", "",
        f"{s['rounds']} interleaved rounds x {s['repeats']} calls per entry after {s['warmup']} "
        "warm-up calls; median latency in ms with the interquartile range; speed = "
        "t(timm swiftformer_xs, eager) / t (higher is faster).", "",
    ]
    lines += _latency_table(
        ["model", "implementation", "params (M)", "GMACs"], result["rows"], threads,
        lambda r: [_LABELS.get(r["model"], r["model"]), f"{r['impl']} {r['backend']}",
                   f"{r['params_m']:.2f}", f"{r['gmacs']:.2f}"], "speed_vs_reference")
    if result["goals"]:
        lines += ["", "Goals (SwiftFormer-XS, 1 thread, vs timm's eager swiftformer_xs):"]
        for name, g in result["goals"].items():
            lines.append(f"- {name}: {g['value']:.2f}x (goal {g['goal']}): "
                         f"{'met' if g['met'] else 'NOT met'}")
    lines += ["", "Notes:",
              "- GMACs = FlopCounterMode FLOPs / 2 (matmuls and convolutions only).",
              "- fused = swiftlearn.fuse.fuse(model): BatchNorms, layer scales and the two heads "
              "folded, 1x1 convolutions as matmuls in channels-last, GELU and residual additions "
              "as oneDNN post-ops; same outputs to ~1e-6. fused+compile = torch.compile of it "
              "(inductor), onnxruntime = the eager model exported with swiftlearn.export.to_onnx.",
              "- The paper's latencies (iPhone 14 Neural Engine, Core ML: XS/S/L1/L3 "
              "0.7/0.8/1.1/1.9 ms) are another device and runtime and are not comparable."]
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _train_markdown(result: dict) -> str:
    m, r = result["machine"], result["result"]
    lines = [f"# swiftlearn bench: training throughput ({result['settings']['model']})", "",
             f"{m['cpu_kind']['label'] if 'cpu_kind' in m else m['cpu']}, {m['logical_cpus']} "
             f"logical CPUs; torch {m['torch']}; {m['date']}.",
             "", "| loop | images/s | data share |", "|---|---|---|"]
    for name in ("plain", "trainer"):
        if name in r:
            lines.append(f"| {name} | {r[name]['images_per_s']:.1f} | "
                         f"{r[name]['data_share']:.0%} |")
    extra = {k: v for k, v in r.items() if k not in ("plain", "trainer")}
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in extra.items())]
    if "data" in result["settings"]:
        lines += [f"Data: {result['settings']['data']}."]
    if result.get("profile"):
        lines += _profile_markdown(result["profile"], m)
    return "\n".join(lines) + "\n"


def _profile_markdown(prof: dict, machine: dict) -> list[str]:
    """Where the step's time goes (phases, op classes), the variants and the peak share."""
    from .train_profile import PHASES

    peak, s = prof["peak"], prof["settings"]
    lines = ["", "## Where a training step's time goes", "",
             f"The trainer's step (batch {s['batch_size']}, {prof['threads']} threads, "
             f"channels-last, {s['amp']} precision, EMA) phase by phase; best of "
             f"{s['rounds']} interleaved rounds of {s['steps']} steps after {s['warmup']} "
             "warm-up steps; load average "
             f"{machine.get('load_average_start')} -> {machine.get('load_average_end')}.", ""]
    sizes = list(prof["sizes"])
    head = ["variant"] + [f"{z} px: images/s" for z in sizes] + [f"{z} px: vs baseline"
                                                                  for z in sizes]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = list(prof["sizes"][sizes[0]]["rows"])
    for name in names:
        cells = [name]
        for z in sizes:
            row = prof["sizes"][z]["rows"].get(name, {})
            cell = f"{row['images_per_s']:.0f}" if "images_per_s" in row else \
                row.get("error", "-")
            if "warmup_s" in row:
                cell += f" (warm-up {row['warmup_s']:.0f} s)"
            cells.append(cell)
        for z in sizes:
            sp = prof["sizes"][z]["speedup_vs_baseline"].get(name)
            cells.append(f"{sp:.2f}x" if sp is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Phases of the baseline step (ms per step, share):", "",
              "| size | " + " | ".join(PHASES) + " | total |", "|" + "---|" * (len(PHASES) + 2)]
    for z in sizes:
        ph = prof["sizes"][z]["rows"]["baseline"]["phases_ms"]
        total = sum(ph.values())
        lines.append(f"| {z} px | " + " | ".join(f"{ph[k]:.0f} ({ph[k] / total:.0%})"
                                                for k in PHASES) + f" | {total:.0f} |")
    lines += ["", "Op classes (self CPU ms per step of the baseline, torch.profiler):", ""]
    for z in sizes:
        oc = prof["sizes"][z]["op_classes_ms"]
        total = sum(oc.values())
        lines.append(f"- {z} px: " + ", ".join(f"{k} {v:.0f} ({v / total:.0%})"
                                              for k, v in oc.items()))
    lines += ["", f"Arithmetic against the peak (estimate: {peak['basis']} at "
              f"{peak['ghz']:.2f} GHz = {peak['flops_per_s_per_core'] / 1e9:.0f} GFLOP/s a "
              f"core; flags {', '.join(peak['flags'])}):", ""]
    for z in sizes:
        d = prof["sizes"][z]
        lines.append(f"- {z} px: {d['train_flops_per_image'] / 1e9:.2f} GFLOPs per training "
                     f"image (3x the forward) x {d['rows']['baseline']['images_per_s']:.0f} "
                     f"images/s = {d['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s, "
                     f"{d['peak_share']:.1%} of {prof['threads']} cores' peak")
    return lines


def check_out(out: str | os.PathLike, suite: str, stem: str | None = None) -> tuple[Path, Path]:
    """The two files :func:`write` makes in the folder ``out`` (``<stem or suite>.md`` and
    ``.json``), or a one-line ValueError if they cannot be written: checked before a benchmark
    runs, so that minutes of timing are not lost to a bad path at the end. Nothing is
    created."""
    out = Path(out).expanduser()
    if not out.exists() and out.suffix.lower() in (".md", ".json"):
        raise ValueError(f"--out {out} looks like a file name, but --out is a folder (it gets "
                         f"{suite}.md and {suite}.json); pass a folder, e.g. {out.parent}")
    check_writable(out, "--out", kind="dir")
    files = out / f"{stem or suite}.md", out / f"{stem or suite}.json"
    for f in files:
        check_writable(f, "--out")
    return files


def write(result: dict, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<out>/<suite>.md`` and ``<out>/<suite>.json`` (``<file_stem>`` where the result
    names one: the latency, deploy and train suites' carry the CPU kind), atomically; returns
    both paths."""
    md, js = check_out(out, result["suite"], result.get("file_stem"))
    md.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(to_markdown(result), md)
    atomic_write_text(json.dumps(result, indent=2) + "\n", js)
    return md, js


def _mixers_markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    threads = [str(t) for t in s["threads"]]
    lines = [f"# swiftlearn bench: token mixers ({s['model']}, {s['num_classes']} classes, "
             f"batch 1, {s['size']}x{s['size']}, eager, CPU)", "",
             f"{m['cpu']}, {m['logical_cpus']} logical CPUs ({m['cpu_capability']}); torch "
             f"{m['torch']}; {m['date']}; load average {m.get('load_average_start')} -> "
             f"{m.get('load_average_end')}.", "",
             f"{s['rounds']} interleaved rounds x {s['repeats']} calls per variant; median ms "
             "[IQR]; speed = t(additive-all) / t.", ""]
    lines += _latency_table(
        ["variant", "create_model arguments", "params (M)", "GMACs"], result["rows"], threads,
        lambda r: [r["variant"], ", ".join(f"{k}={v!r}" for k, v in r["kwargs"].items())
                   or "(published model)", f"{r['params_m']:.3f}", f"{r['gmacs']:.3f}"],
        "speed_vs_additive")
    lines += ["", "GMACs = FlopCounterMode FLOPs / 2, with a formula for the CPU "
              "scaled_dot_product_attention kernel (which FlopCounterMode counts 0)."]
    return "\n".join(lines) + "\n"


def _cpu_line(m: dict) -> str:
    """The CPU as the tables name it: the kind's label and flags where the result has them
    (tables written before the CPU kinds name the torch capability only)."""
    k = m.get("cpu_kind")
    if not k:
        return f"{m['cpu']}, {m['logical_cpus']} logical CPUs ({m['cpu_capability']})"
    flags = ", ".join(k["flags"]) or "none of AVX-512, AVX-512 VNNI/BF16, AMX"
    return f"**{k['label']}**, {m['logical_cpus']} logical CPUs; flags: {flags}"


def _versions(m: dict, *names: str) -> str:
    return ", ".join(f"{n} {m.get(n)}" for n in names if m.get(n))


def _deploy_markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    versions = _versions(m, "onnxruntime", "openvino", "nncf", "timm")
    fast = result["fastest"]
    lines = [f"# swiftlearn bench: deploy ({s['model']}, batch 1, {s['size']}x{s['size']}, "
             f"{s['threads']} thread{'s' if s['threads'] > 1 else ''})", "",
             f"{_cpu_line(m)}; torch {m['torch']}, {versions}; {m['date']}; load average "
             f"{m.get('load_average_start')}.", "",
             f"Checkpoint `{s['checkpoint']}`; top-1 on {s['images']} validation images at "
             f"{s['size']} px (PyTorch fp32: {s['torch_fp32_top1']:.2f} %); latency: "
             f"{s['rounds']} interleaved rounds x {s['repeats']} calls after {s['warmup']} "
             "warm-up calls, median ms [IQR]; speed = t(timm eager, same weights) / t.", "",
             "| path | computes in | ms [IQR] | speed | top-1 | vs fp32 | same top-1 |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lat = r["latency"]
        score = ([f"{r['top1']:.2f} %", f"{r['delta_points']:+.2f}", f"{r['agreement']:.2f} %"]
                 if "top1" in r else ["-", "-", "-"])
        speed = f"{r['speed_vs_timm']:.2f}x" if r["speed_vs_timm"] else "-"
        name = f"**{r['backend']}**" if r["backend"] == fast["backend"] else r["backend"]
        lines.append(f"| {name} | {r['precision']} | {lat['median_ms']:.1f} "
                     f"[{lat['q1_ms']:.1f}-{lat['q3_ms']:.1f}] | {speed} | " + " | ".join(score)
                     + " |")
    speed = f"{fast['speed_vs_timm']:.2f}x timm eager" if fast["speed_vs_timm"] else ""
    lines += ["", f"**Fastest path here within {fast['max_loss']} points of PyTorch fp32: "
              f"{fast['backend']}** ({speed}"
              + (f", {fast['delta_points']:+.2f} points" if fast["delta_points"] is not None
                 else "") + ")."]
    lines += _comparison_lines(fast)
    lines += _profile_lines(result.get("profiles") or {})
    if result["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _profile_lines(profiles: dict, top: int = 5) -> list[str]:
    """Each runtime's heaviest ops: what it made of the graph and where its time goes."""
    if not profiles:
        return []
    calls = next(iter(profiles.values()))["calls"]
    lines = ["", f"Where the time goes (each runtime's own profiler, torch.profiler for PyTorch, "
             f"{calls} calls; the profiler slows every kernel, so read the shares, not the "
             "ms):", ""]
    for backend, p in profiles.items():
        ops = ", ".join(_op_label(o) for o in p["ops"][:top])
        lines.append(f"- **{backend}**: {p['nodes']:.0f} kernels a call; {ops}")
    return lines


def _op_label(o: dict) -> str:
    kernel = f" ({o['kernel']})" if o["kernel"] else ""
    return f"{o['op']}{kernel} x{o['nodes']:.0f} {o['share']:.0f} %"


def _won(c: dict) -> str:
    verdict = "" if c["clear"] else ": a tie within this machine's noise"
    return f"faster in {c['wins']} of {c['rounds']} interleaved rounds{verdict}"


def _comparison_lines(fast: dict) -> list[str]:
    """The deploy table's verdicts, round by round: is the fastest path clearly the fastest,
    and does it beat what ONNX Runtime and OpenVINO do on their own with the fp32 model?"""
    lines = []
    runner, default = fast.get("runner_up"), fast.get("vs_defaults")
    if fast["backend"] in RUNTIME_DEFAULTS:
        default = None
    if runner:
        also = ""
        if default and default["backend"] == runner["backend"]:
            also, default = (", also the best runtime default on the plain fp32 model, which "
                             f"computes in {default['precision']}"), None
        lines.append(f"- Against the runner-up, {runner['backend']}{also}: {runner['ratio']:.2f}x "
                     f"(median of the per-round ratios), {_won(runner)}.")
    if fast["backend"] in RUNTIME_DEFAULTS:
        lines.append(f"- {fast['backend']} is a runtime's own default on the plain fp32 model: "
                     "none of the library's own paths beats it here.")
    elif default:
        lines.append(f"- Against the best runtime default on the plain fp32 model, "
                     f"{default['backend']}, which computes in {default['precision']}: "
                     f"{default['ratio']:.2f}x, {_won(default)}.")
    return [""] + lines if lines else []
