"""The light client's ``layerlens`` command: ``check`` dispatch and the one-line refusal."""

from __future__ import annotations

import sys
import types

import pytest

from layerlens_client import cli


@pytest.fixture
def light_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as where only layerlens-client is installed (here the full package is too)."""
    monkeypatch.setattr(cli, "_full_cli", lambda: None)


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
    assert "usage: layerlens check" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert cli.main(["--version"]) == 0
    assert "layerlens-client 0.1.0" in capsys.readouterr().out


def test_defers_to_the_full_package_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both packages own the `layerlens` script; whichever was installed last must still
    # run `layerlens serve`.
    seen: list[list[str]] = []

    def full_main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 0

    monkeypatch.setattr(cli, "_full_cli", lambda: full_main)
    assert cli.main(["serve", "--port", "1"]) == 0
    assert seen == [["serve", "--port", "1"]]


def test_finds_the_full_package_here() -> None:
    from layerlens.cli import main as full_main

    assert cli._full_cli() is full_main
