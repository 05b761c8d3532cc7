"""The one ``layerlens`` command (the light client's): ``check``, and the commands that
installed packages add through the ``layerlens.commands`` entry points."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from layerlens_client import cli

FULL_COMMANDS = ("analyze", "serve", "api", "worker", "migrate", "keys", "demo")


@pytest.fixture
def light_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as where only layerlens-client is installed (here the full package is too)."""
    monkeypatch.setattr(cli, "_plugins", lambda: [])


@pytest.mark.usefixtures("light_only")
def test_other_commands_need_the_full_package(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["analyze", "model.onnx", "--dataset", "builtin:digits"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("layerlens analyze needs the full layerlens package (pip install "
                            "layerlens); this is the light client, which offers: check\n")
    assert captured.out == ""


@pytest.mark.usefixtures("light_only")
def test_check_is_dispatched_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def check_main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 1

    fake = types.ModuleType("layerlens_client.check")
    fake.main = check_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "layerlens_client.check", fake)
    assert cli.main(["check", "m.onnx", "--policy", "p.yaml"]) == 1
    assert seen == [["m.onnx", "--policy", "p.yaml"]]


@pytest.mark.usefixtures("light_only")
def test_usage_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerlens: error: ") and err.count("\n") == 1
    assert cli.main(["--help"]) == 0
    assert "check" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "layerlens-client 0.1.0"


def test_the_full_package_adds_its_commands_through_the_entry_point() -> None:
    plugins = cli._plugins()
    assert [(p.name, p.value) for p in plugins] == [("layerlens", "app.cli:add_commands")]
    commands = cli.build_parser(plugins)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == {"check", "compare", *FULL_COMMANDS}


def test_help_lists_every_command_and_a_usage_error_is_one_line() -> None:
    shown = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for name in ("check", "compare", *FULL_COMMANDS):
        assert f"    {name} " in shown.stdout, name
    wrong = subprocess.run([sys.executable, "-m", "app", "analyze", "--no-such-flag"],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("layerlens: error: ") and wrong.stderr.count("\n") == 1
    assert wrong.stdout == ""


def test_version_names_both_packages(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "layerlens-client 0.1.0, layerlens 0.1.0"
