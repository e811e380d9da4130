"""CLI errors reach scripts and logs as whole lines, whatever the terminal width says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skyfleet.console import make_console


def _run(args: list[str], columns: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": columns}
    return subprocess.run(
        [sys.executable, "-c", "from skyfleet.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def deep(tmp_path: Path) -> Path:
    """A directory whose path is longer than any terminal is wide."""
    d = tmp_path.joinpath(*(["a-rather-long-directory-name"] * 6))
    d.mkdir(parents=True)
    return d


@pytest.mark.parametrize("columns", ["20", "80", "400"])
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["usage", "--db", "{d}/missing.sqlite"], "{d}/missing.sqlite: no such usage ledger"),
        (["config", "check", "{d}/fleet.yaml"], "{d}/fleet.yaml: cannot read config file"),
        (["plan", "{d}/workload.yaml"], "{d}/workload.yaml: cannot read workload"),
        (["emulate", "--profile", "{d}/profile.yaml"], "{d}/profile.yaml"),
    ],
)
def test_error_is_one_unwrapped_line(
    deep: Path, columns: str, argv: list[str], expected: str
) -> None:
    res = _run([a.format(d=deep) for a in argv], columns)
    assert res.returncode == 2, res.stderr
    want = expected.format(d=deep)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.stderr
    assert want in lines[0], res.stderr
    assert "\x1b[" not in res.stderr  # no colour codes in a log


def test_usage_error_is_plain_when_piped() -> None:
    """A mistyped option gets click's plain message, not a boxed panel cut at $COLUMNS."""
    opt = "--an-option-name-that-no-command-of-skyfleet-has-ever-had"
    res = _run(["usage", opt], "20")
    assert res.returncode == 2
    assert f"No such option: {opt}" in res.stderr
    assert "╭" not in res.stderr


def test_console_wraps_nothing_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    text = "word " * 100
    make_console().print(text)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.strip() == text.strip()
