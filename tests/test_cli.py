"""One command, ``pytest-interp`` (and ``python -m pytest_interp``): a subcommand per job,
each with --help; the old spellings keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_interp import cli

SCRIPT = Path(sys.executable).with_name("pytest-interp")


def test_the_command_lists_its_subcommands(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"], prog="pytest-interp")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pytest-interp [-h] COMMAND ...")
    for name in ("init", "bisect", "lens"):
        assert f"    {name} " in out


@pytest.mark.parametrize(("argv", "usage"), [
    (["init", "--help"], "usage: python -m pytest_interp init [-h] --model MODEL --out OUT"),
    (["bisect", "--help"], "usage: python -m pytest_interp bisect [-h]"),
    (["lens", "train", "--help"], "usage: python -m pytest_interp lens train [-h] --model MODEL"),
])
def test_each_subcommand_has_help(capsys, argv, usage):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_an_unknown_command_is_one_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["train"], prog="pytest-interp")
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "pytest-interp: error: argument COMMAND: invalid choice: 'train' (choose from 'init', "
        "'bisect', 'lens', 'merge')")


def test_the_console_script_and_the_old_spellings_run():
    for command in ([str(SCRIPT), "--help"], [sys.executable, "-m", "pytest_interp", "--help"],
                    [sys.executable, "-m", "pytest_interp.lens", "train", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (command, done.stderr)
        assert "usage: " in done.stdout
