"""swiftlearn.bench: the machinery on a tiny run (structure only, never speed)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from swiftlearn import bench
from swiftlearn.cli import build_parser

TINY = dict(threads=(1,), rounds=2, repeats=1, warmup=1, size=64)


@pytest.fixture(scope="module")
def tiny_result():
    pytest.importorskip("timm", reason="timm is in the dev extra")
    return bench.run_latency(["swiftformer_xs"], onnx=False, **TINY)


def test_rows_and_reference(tiny_result):
    r = tiny_result
    assert r["suite"] == "latency" and r["reference"] == bench.REFERENCE
    from swiftlearn.utils import cpu_supports_bf16

    keys = [(row["impl"], row["model"], row["backend"]) for row in r["rows"]]
    bf16 = ([("swiftlearn", "swiftformer_xs", b) for b in ("fused+bf16", "fused bf16 weights")]
            if cpu_supports_bf16() else [])
    assert keys == [("swiftlearn", "swiftformer_xs", "eager"),
                    ("swiftlearn", "swiftformer_xs", "fused"), *bf16,
                    ("timm", "swiftformer_xs", "eager")]
    if not bf16:
        assert any("fused+bf16 and fused bf16 weights omitted: this CPU has no native bf16" in n
                   for n in r["notes"])
    for row in r["rows"]:
        lat = row["latency"]["1"]
        assert lat["n"] == 2 and lat["q1_ms"] <= lat["median_ms"] <= lat["q3_ms"]
        assert row["speed_vs_reference"]["1"] > 0
        assert row["gmacs"] > 0
    timm_row = r["rows"][-1]
    assert timm_row["speed_vs_reference"]["1"] == 1.0
    assert r["rows"][0]["params_m"] == pytest.approx(3.475, abs=1e-3)
    assert r["rows"][1]["params_m"] < r["rows"][0]["params_m"]  # fused: one head, no norms
    assert set(r["goals"]) == {"fused_xs_vs_timm_xs_1thread", "eager_xs_vs_timm_xs_1thread"}
    for key in ("cpu", "logical_cpus", "torch", "date"):
        assert r["machine"][key]


def test_markdown_and_json(tiny_result, tmp_path):
    md_path, json_path = bench.write(tiny_result, tmp_path)
    md = md_path.read_text()
    assert "| model | implementation | params (M) | GMACs | 1 thr: ms [IQR] | 1 thr: speed |" in md
    assert md.count("| SwiftFormer-XS |") == len(tiny_result["rows"])  # 4 with native bf16
    assert "Goals" in md and tiny_result["machine"]["cpu"] in md
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(tiny_result))


def test_without_timm_there_is_no_reference(monkeypatch):
    import swiftlearn.bench.latency as latency

    monkeypatch.setattr(latency, "_timm", lambda: None)
    r = bench.run_latency(["swiftformer_xs"], onnx=False, **TINY)
    from swiftlearn.utils import cpu_supports_bf16

    assert r["reference"] is None and len(r["rows"]) == 2 + 2 * cpu_supports_bf16()
    assert all(not row["speed_vs_reference"] for row in r["rows"])
    assert any("timm is not installed" in n for n in r["notes"])
    assert "| - |" in bench.to_markdown(r)


def test_missing_onnxruntime_omits_the_column_with_a_note(monkeypatch):
    import swiftlearn.bench.latency as latency

    monkeypatch.setattr(latency, "_timm", lambda: None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    r = bench.run_latency(["swiftformer_xs"], onnx=True, **TINY)
    assert all(row["backend"] != "onnxruntime" for row in r["rows"])
    assert any("ONNX Runtime column omitted" in n for n in r["notes"])


@pytest.mark.slow
@pytest.mark.export
def test_onnxruntime_rows():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from swiftlearn.utils import cpu_supports_bf16

    r = bench.run_latency(["swiftformer_xs"], onnx=True, **TINY)
    backends = [row["backend"] for row in r["rows"] if row["impl"] == "swiftlearn"]
    bf16 = ["fused+bf16", "fused bf16 weights"] if cpu_supports_bf16() else []
    assert [b for b in backends if not b.startswith("openvino")] == \
        ["eager", "fused", *bf16, "onnxruntime"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        bench.run_latency(["resnet50"], **TINY)
    with pytest.raises(ValueError, match="must be >= 1"):
        bench.run_latency(["swiftformer_xs"], threads=(1,), rounds=0)
    with pytest.raises(ValueError, match="size"):
        bench.run_latency(["swiftformer_xs"], threads=(1,), size=16)


def test_bench_refuses_user_mistakes_in_one_line_before_running(monkeypatch, tmp_path, capsys):
    import os

    import swiftlearn.bench.common as common
    import swiftlearn.bench.latency as latency
    import swiftlearn.bench.mixers as mixers
    import swiftlearn.bench.throughput as throughput
    from swiftlearn.cli import main

    def ran(*args, **kwargs):
        raise AssertionError("a refused command started its work")

    monkeypatch.setattr(latency, "_build_entries", ran)
    monkeypatch.setattr(mixers, "build_model", ran)
    monkeypatch.setattr(throughput, "benchmark_throughput", ran)
    monkeypatch.setattr(common, "usable_cpus", lambda: 2)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: p != read_only and real_access(p, mode))
    out = ["--out", str(tmp_path / "out")]
    cases = [
        (["--threads", "999"], "[999] out of range: this process may use 2 CPU(s); choose "
                               "thread counts from 1 to 2"),
        (["--suite", "mixers", "--threads", "1,3"], "[3] out of range"),
        (["--threads", "0"], "threads must be >= 1"),
        (["--threads", "two"], "--threads expects comma-separated whole numbers"),
        (["--threads", ","], "--threads ',' names nothing"),
        (["--models", ""], "--models '' names nothing; list at least one, or leave --models out"),
        (["--size", "32"], "size 32 does not fit efficientformer_l1, which takes 193-224 px "
                           "only"),
        (["--models", "xs", "--size", "16"], "needs at least 32 px"),
        (["--suite", "mixers", "--size", "16"], "needs at least 32 px"),
        (["--models", "xs", "--repeats", "0"], "must be >= 1"),
        (["--suite", "train", "--size", "64"], "--size: not used by --suite train"),
        (["--suite", "train", "--models", "xs,s"], "--suite train times one model"),
        (["--suite", "mixers", "--models", "xs", "--compile"],
         "--compile, --models: not used by --suite mixers"),
        (["--data", str(tmp_path)], "--data: not used by --suite latency"),
        (["--int8", "--no-onnx"], "drop one of them"),
        (["--out", str(a_file)], "is a file, not a folder"),
        (["--out", str(a_file / "sub")], "is a file, so no folder can be made there"),
        (["--out", str(tmp_path / "latency.md")], "looks like a file name, but --out is a "
                                                  "folder"),
        (["--out", str(read_only / "new")], "is not writable"),
    ]
    for argv, message in cases:
        assert main(["bench", *argv, *([] if "--out" in argv else out)]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("swiftlearn bench: error:") and err.count("\n") == 1, err
        assert message in err, (argv, err)
    monkeypatch.setattr(latency, "_timm", lambda: None)
    assert main(["bench", *out, "--models", "mobilevitv2_050"]) == 1
    assert "need timm, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    common.check_threads([1, 2])  # every usable CPU is fine


def test_size_limits_are_what_the_peers_accept():
    timm = pytest.importorskip("timm", reason="timm is in the dev extra")
    assert bench.size_range(bench.DEFAULT_MODELS) == (193, 224)
    assert bench.size_range(["swiftformer_xs", "mobilevitv2_050"]) == (32, None)
    peer = timm.create_model("efficientformer_l1").eval()
    with torch.inference_mode():
        for size in bench.PEER_SIZES["efficientformer_l1"]:
            peer(torch.zeros(1, 3, size, size))
        for size in (192, 225):
            with pytest.raises(RuntimeError):
                peer(torch.zeros(1, 3, size, size))


def test_cli_is_registered_and_runs(monkeypatch, tmp_path):
    import swiftlearn.bench.latency as latency

    monkeypatch.setattr(latency, "_timm", lambda: None)
    args = build_parser().parse_args(["bench", "--models", "xs", "--threads", "1", "--repeats",
                                      "1", "--rounds", "1", "--size", "64", "--no-onnx",
                                      "--out", str(tmp_path)])
    assert args.func(args) == 0
    from swiftlearn.utils import cpu_kind

    stem = f"latency-{cpu_kind()['slug']}"  # one table per CPU kind, as deploy and train
    assert (tmp_path / f"{stem}.md").is_file() and (tmp_path / f"{stem}.json").is_file()
    md = (tmp_path / f"{stem}.md").read_text()
    assert cpu_kind()["label"] in md and "flags:" in md


def test_train_suite_calls_benchmark_throughput(monkeypatch, tmp_path):
    import swiftlearn.bench.throughput as throughput

    calls = {}

    def fake(model, **kwargs):
        calls.update(model=model, **kwargs)
        return {"plain": {"images_per_s": 10.0, "data_share": 0.1},
                "trainer": {"images_per_s": 9.0, "data_share": 0.2}, "ratio": 0.9}

    monkeypatch.setattr(throughput, "benchmark_throughput", fake)
    import swiftlearn.bench.train_profile as train_profile

    monkeypatch.setattr(train_profile, "profile_training", lambda *a, **k: calls.update(
        profiled=a, compile=k["compile"]))
    args = build_parser().parse_args(["bench", "--suite", "train", "--quick", "--models", "s",
                                      "--out", str(tmp_path)])
    assert args.func(args) == 0
    assert calls["model"] == "swiftformer_s" and calls["steps"] == 2
    from swiftlearn.utils import cpu_kind

    kind = cpu_kind()  # one table per CPU kind, named by it
    md = (tmp_path / f"train-{kind['slug']}.md").read_text()
    assert md.splitlines()[2].startswith(kind["label"])
    assert (tmp_path / f"train-{kind['slug']}.json").is_file()
    assert not (tmp_path / "train.md").exists()
    assert "| plain | 10.0 | 10% |" in md and "ratio=0.9" in md
    assert "Data: synthetic." in md and "data" not in calls
    assert calls["profiled"] == ("swiftformer_s", (64,)) and calls["compile"] is False

    # --data: both loops get the real (here: fake) training images from the decoded cache
    from swiftlearn.data import CachedImages, synthetic_imagenette

    root = synthetic_imagenette(tmp_path / "root", per_class=2, size=48)
    args = build_parser().parse_args(["bench", "--suite", "train", "--quick", "--data", str(root),
                                      "--cache-dir", str(tmp_path / "cache"),
                                      "--out", str(tmp_path)])
    assert args.func(args) == 0
    assert isinstance(calls["data"], CachedImages) and len(calls["data"]) == 20
    assert tuple(calls["data"].images.shape[-2:]) == (176, 176)
    assert "Imagenette train (20 images" in (tmp_path / f"train-{kind['slug']}.md").read_text()


def _tiny_images():
    from swiftlearn.data import CachedImages

    g = torch.Generator().manual_seed(0)
    return CachedImages(torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8, generator=g),
                        torch.arange(16) % 4, [f"class{i}" for i in range(4)])


def test_benchmark_throughput_times_the_trainers_step_and_a_plain_loop(monkeypatch):
    from swiftlearn.bench import benchmark_throughput
    from swiftlearn.train import step as train_step_module

    calls = []
    real = train_step_module.train_step

    def counting(trainer, batch):
        calls.append(len(batch.y))
        return real(trainer, batch)

    # the trainer side must run the very step fit() runs
    monkeypatch.setattr(train_step_module, "train_step", counting)
    r = benchmark_throughput(data=_tiny_images(), img_size=32, batch_size=4, steps=2,
                             warmup=1, rounds=1)
    for name in ("trainer", "plain"):
        assert r[name]["images_per_s"] > 0 and 0 <= r[name]["data_share"] < 1
    assert r["ratio"] > 0 and r["img_size"] == 32
    assert calls == [4, 4, 4]  # one warm-up and two timed steps, all through train_step
    off = benchmark_throughput(data=_tiny_images(), img_size=32, batch_size=4, steps=1,
                               warmup=0, rounds=1, amp="off")
    assert off["precision"] == "torch.float32"  # the precision reported is the one that ran
    with pytest.raises(ValueError, match="steps"):
        benchmark_throughput(steps=0)


def test_mixers_suite_reports_every_variant(tmp_path):
    from swiftlearn.bench import MIXER_VARIANTS, run_mixers, to_markdown

    result = run_mixers(["additive-all", "mhsa-last", "none"], threads=[1], size=64, rounds=1,
                        repeats=1, warmup=0)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["additive-all"]["speed_vs_additive"]["1"] == 1.0
    # no token mixing has fewer parameters and MACs; MHSA's SDPA kernel is counted, not 0
    assert rows["none"]["params_m"] < rows["additive-all"]["params_m"]
    assert rows["none"]["gmacs"] < rows["additive-all"]["gmacs"]
    assert rows["mhsa-last"]["gmacs"] > 0 and rows["mhsa-last"]["latency"]["1"]["median_ms"] > 0
    md = to_markdown(result)
    assert "| mhsa-last | mixer='mhsa', mixer_stages=[3] |" in md
    assert set(MIXER_VARIANTS) >= set(rows)
    with pytest.raises(ValueError, match="unknown mixer variant"):
        run_mixers(["linear"])
    args = build_parser().parse_args(["bench", "--suite", "mixers", "--quick", "--size", "64",
                                      "--out", str(tmp_path)])
    assert args.func(args) == 0 and (tmp_path / "mixers.md").is_file()


def test_profile_training_splits_the_real_step_and_reads_the_variants(monkeypatch):
    """The phases add up to the step, every variant is timed, the op classes are filled, and
    the report has the tables (tiny: batch 4 at 32 px)."""
    from swiftlearn.bench.report import _profile_markdown
    from swiftlearn.bench.train_profile import PHASES, _op_class, profile_training

    prof = profile_training("swiftformer_xs", (32,), batch_size=4, steps=1, warmup=1, rounds=1)
    d = prof["sizes"]["32"]
    names = {"baseline", "batch 8", "channels-last off", "AdamW for-loop", "AdamW fused"}
    assert names <= set(d["rows"])
    base = d["rows"]["baseline"]
    assert set(base["phases_ms"]) == set(PHASES)
    assert abs(sum(base["phases_ms"].values()) - base["ms_per_step"]) < 1e-6
    assert all(v > 0 for v in base["phases_ms"].values())
    assert d["rows"]["batch 8"]["images_per_s"] > 0 and d["speedup_vs_baseline"]["baseline"] == 1
    assert "convolution" in d["op_classes_ms"] and d["train_flops_per_image"] > 0
    assert 0 < d["peak_share"] < 1
    md = "\n".join(_profile_markdown(prof, {"load_average_start": 0.1}))
    assert "| AdamW fused |" in md and "GFLOPs per training image" in md
    assert _op_class("aten::mkldnn_convolution") == "convolution"
    assert _op_class("aten::_foreach_mul_") == "optimizer (_foreach)"
    assert _op_class("aten::addmm") == "matmul / linear"


@pytest.mark.slow
@pytest.mark.export
def test_deploy_suite_times_and_scores_every_path(tmp_path, capsys):
    """--suite deploy on a tiny trained-format checkpoint and a synthetic root: every path is
    timed and scored on the same images, agreement with PyTorch fp32 is reported, the fastest
    path within 0.5 points is named, and the files carry the CPU kind in their name."""
    pytest.importorskip("timm")
    pytest.importorskip("onnxruntime")
    from swiftlearn import create_model
    from swiftlearn.data import IMAGENETTE_CLASSES, synthetic_imagenette
    from swiftlearn.utils import cpu_kind

    root = synthetic_imagenette(tmp_path / "root", per_class=3, size=64)
    model = create_model("swiftformer_xs", num_classes=10).eval()
    ckpt = tmp_path / "xs.pt"
    torch.save({"model": model.state_dict(), "classes": [w for w, _ in IMAGENETTE_CLASSES],
                "config": {"model": "swiftformer_xs", "img_size": 64, "eval_size": 64,
                           "cache_size": 64}}, ckpt)
    out = tmp_path / "bench"
    code = build_parser().parse_args(["bench", "--suite", "deploy", "--checkpoint", str(ckpt),
                                      "--data", str(root), "--cache-dir", str(tmp_path / "c"),
                                      "--rounds", "1", "--repeats", "1", "--out", str(out)])
    assert code.func(code) == 0
    slug = cpu_kind()["slug"]
    result = json.loads((out / f"deploy-{slug}.json").read_text())
    backends = [r["backend"] for r in result["rows"]]
    assert backends[:3] == ["timm eager", "eager", "fused"]
    assert {"onnxruntime", "onnxruntime int8"} <= set(backends)
    for r in result["rows"]:
        assert r["latency"]["n"] == 1 and r["speed_vs_timm"] > 0
        assert 0 <= r["agreement"] <= 100 and r["top1"] == pytest.approx(
            result["settings"]["torch_fp32_top1"] + r["delta_points"], abs=2e-3)  # each rounded
    eager = next(r for r in result["rows"] if r["backend"] == "eager")
    assert eager["agreement"] == 100.0 and eager["delta_points"] == 0.0
    assert result["settings"]["images"] == 30 and result["settings"]["size"] == 64
    fastest = result["fastest"]
    ok = [r for r in result["rows"] if r["backend"] != "timm eager"
          and r["delta_points"] >= -0.5]
    assert fastest["backend"] == min(ok, key=lambda r: r["latency"]["median_ms"])["backend"]
    for r in result["rows"]:  # one median per interleaved round, for the paired verdicts
        assert len(r["round_medians_ms"]) == 1
    runner = fastest["runner_up"]
    assert runner["backend"] == sorted(ok, key=lambda r: r["latency"]["median_ms"])[1]["backend"]
    assert runner["rounds"] == 1 and runner["wins"] in (0, 1)
    assert fastest["vs_defaults"]["backend"] in {"onnxruntime", "openvino"} - {fastest["backend"]}
    md = (out / f"deploy-{slug}.md").read_text()
    assert cpu_kind()["label"] in md and "Fastest path here within 0.5 points" in md
    assert f"Against the runner-up, {runner['backend']}" in md
    profiles = result["profiles"]  # each ONNX Runtime / OpenVINO row, profiled after timing
    assert {"eager", "fused", "onnxruntime", "onnxruntime int8"} <= set(profiles) <= set(backends)
    assert profiles["fused"]["runtime"] == "pytorch" and "timm eager" not in profiles
    assert any(o["op"] == "QLinearConv" for o in profiles["onnxruntime int8"]["ops"])
    assert "Where the time goes" in md and "- **onnxruntime int8**: " in md
    capsys.readouterr()


def test_paired_rounds_tell_a_clear_win_from_a_tie():
    """The deploy verdicts compare two paths round by round (both timed in each round), so a
    spell of load that slows both does not decide; a win needs CLEAR_WIN of the rounds."""
    from swiftlearn.bench.deploy import CLEAR_WIN, paired

    clear = paired([2.0, 4.0, 2.1, 2.0, 2.2], [2.5, 5.0, 2.6, 2.4, 2.7])
    assert clear == {"ratio": 1.238, "wins": 5, "rounds": 5, "clear": True}
    # the same medians overall, but the "fast" path lost two of five rounds: a tie
    tie = paired([2.0, 3.0, 2.0, 3.0, 2.0], [2.9, 2.9, 2.9, 2.1, 2.1])
    assert tie["wins"] == 3 and not tie["clear"] and 3 / 5 < CLEAR_WIN
    assert paired([1.0], [1.0])["wins"] == 0  # equal is not a win
    with pytest.raises(ValueError, match="same number of rounds"):
        paired([1.0, 2.0], [1.0])


def test_deploy_markdown_says_tie_and_flags_a_runtime_default():
    from swiftlearn.bench.report import _comparison_lines

    def c(backend, wins, clear, **more):
        return {"backend": backend, "ratio": 1.01, "wins": wins, "rounds": 5, "clear": clear,
                **more}

    fast = {"backend": "onnxruntime int8", "runner_up": c("openvino int8", 3, False),
            "vs_defaults": c("openvino", 5, True, precision="bf16")}
    text = "\n".join(_comparison_lines(fast))
    assert "runner-up, openvino int8: 1.01x" in text
    assert "faster in 3 of 5 interleaved rounds: a tie" in text
    assert ("Against the best runtime default on the plain fp32 model, openvino, which computes "
            "in bf16: 1.01x, faster in 5 of 5 interleaved rounds.") in text
    fast["runner_up"] = c("openvino", 5, True)  # the runner-up is that default: one line
    lines = _comparison_lines(fast)
    assert len(lines) == 2 and "also the best runtime default" in lines[1]
    fast = {"backend": "openvino", "runner_up": c("openvino int8", 5, True),
            "vs_defaults": c("onnxruntime", 5, True, precision="fp32")}
    text = "\n".join(_comparison_lines(fast))
    assert "faster in 5 of 5 interleaved rounds." in text and "tie" not in text
    assert "none of the library's own paths beats it here" in text
    assert "onnxruntime" not in text  # a default beating a default says nothing


def test_deploy_suite_refuses_before_any_work(tmp_path, capsys, monkeypatch):
    from swiftlearn.bench import cli as bench_cli

    def work(*_, **__):
        raise AssertionError("the refusal came after work began")

    monkeypatch.setattr(bench_cli, "run_deploy", work)
    root = tmp_path / "none"
    cases = [
        (["--threads", "1,2"], "--suite deploy times one thread count"),
        (["--per-class", "0"], "--per-class must be >= 1"),
        (["--checkpoint", str(tmp_path / "no.pt")], "no such file"),
        (["--data", str(root)], str(root)),
        (["--models", "xs"], "--models: not used by --suite deploy"),
    ]
    from swiftlearn import cli

    for args, message in cases:
        assert cli.main(["bench", "--suite", "deploy", "--out", str(tmp_path / "o"), *args]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "o").exists()
