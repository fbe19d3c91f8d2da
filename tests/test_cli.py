"""The `swiftlearn` command assembles every sub-command and reports errors without tracebacks."""

from __future__ import annotations

import pytest

from swiftlearn import cli


def test_every_command_is_registered(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "evaluate", "export", "bench", "info"} <= set(sub.choices)


def test_no_command_prints_help_and_returns_2(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_info_lists_the_variants(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SWIFTLEARN_DATA", str(tmp_path))  # not a root: reported, not fatal
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("swiftformer_xs", "swiftformer_s", "swiftformer_l1", "swiftformer_l3"):
        assert name in out
    assert "not found" in out
    assert f"decoded cache: {tmp_path / 'cache' / 'swiftlearn' / 'decoded'} (0.00 GB" in out


def test_info_names_the_fastest_path_from_this_cpu_kinds_table(tmp_path):
    """`swiftlearn info` reads the deploy table of the CPU kind it runs on: the path to use,
    a tie said as one, and a missing or broken table answered with how to measure it."""
    import json

    from swiftlearn.bench.deploy import advice

    assert advice("no-such-cpu", tmp_path).startswith("no deploy table for this CPU kind "
                                                      "(no-such-cpu) yet: `swiftlearn bench")
    doc = {"machine": {"date": "2026-12-04 21:46 UTC"},
           "fastest": {"backend": "openvino int8", "speed_vs_timm": 4.24, "delta_points": -0.03,
                       "runner_up": {"backend": "openvino", "clear": True}}}
    (tmp_path / "deploy-k.json").write_text(json.dumps(doc))
    line = advice("k", tmp_path)
    assert "openvino int8, 4.24x timm eager, -0.03 points of top-1 (re-measure" in line
    assert "tie" not in line and "deploy-k.json, 2026-12-04 21:46 UTC" in line
    doc["fastest"]["runner_up"]["clear"] = False
    (tmp_path / "deploy-k.json").write_text(json.dumps(doc))
    assert "a tie with openvino" in advice("k", tmp_path)
    (tmp_path / "deploy-k.json").write_text("{broken")
    assert "cannot be read (JSONDecodeError)" in advice("k", tmp_path)


def test_user_errors_become_one_line_messages(capsys, tmp_path):
    missing = tmp_path / "nope.pt"
    code = cli.main(["evaluate", "--checkpoint", str(missing), "--data", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("swiftlearn evaluate: error:") and "Traceback" not in err


def test_unknown_command_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
