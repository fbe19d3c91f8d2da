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
