"""The ``xent-rs`` command line: ``--version``, a tiny ``bench`` run, JSON output and errors."""

from __future__ import annotations

import json

import pytest
import xent_rs
from xent_rs._cli import main

BENCH_TINY = ["bench", "--quick", "--only", "overhead", "--repeat", "1"]


def _timed_impls(table: str) -> set[str]:
    """The impl column of the rows that end in three numbers (median ms, GB/s, xfloor)."""
    impls = set()
    for line in table.splitlines():
        cells = line.split()
        try:
            [float(c) for c in cells[-3:]]
        except ValueError:
            continue
        if len(cells) >= 4:
            impls.add(cells[-4])
    return impls


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert xent_rs.__version__ in out
    assert xent_rs.BACKEND in out


def test_bench_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(BENCH_TINY) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("case"))
    for column in ("impl", "median ms", "GB/s", "floor"):
        assert column in header
    assert "call overhead 8x10" in out
    assert {"floor", "xent_rs", "numpy"} <= _timed_impls(out)
    assert f"backend {xent_rs.BACKEND}" in out
    assert "WARNING" not in out


def test_bench_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BENCH_TINY, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["impl"]: row for row in report["rows"]}
    assert rows["xent_rs"]["median_ms"] > 0
    assert rows["floor"]["x_floor"] == pytest.approx(1.0)
    assert rows["numpy"]["agrees"] is True
    assert report["warnings"] == []
    assert report["machine"]["backend"] == xent_rs.BACKEND


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bench", "--only", "no-such-case"],
        ["bench", "--repeat", "0"],
        ["bench", "--threads", "many"],
        ["no-such-command"],
    ],
)
def test_errors_are_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("xent-rs: error:")
    assert "Traceback" not in captured.err
