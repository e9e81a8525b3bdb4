"""The ``xent-rs`` command line: ``--version``, a tiny ``bench`` run, JSON output and errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xent_rs
from xent_rs import _bench
from xent_rs._cli import main

BENCH_TINY = ["bench", "--quick", "--only", "overhead", "--repeat", "1"]
# --quick divides the leading dimension by 16: threads 4096x10 (still a few parallel blocks),
# memory 64x4096
TINY_SHAPES = {"threads": (4096 * 16, 10), "memory": (64 * 16, 4096)}


@pytest.fixture
def tiny_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    """The threads and memory cases on tiny shapes."""
    cases = tuple(
        dataclasses.replace(c, shape=TINY_SHAPES[c.key]) if c.key in TINY_SHAPES else c
        for c in _bench.CASES
    )
    monkeypatch.setattr(_bench, "CASES", cases)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """Whatever a test does, xent_rs's thread count is put back afterwards."""
    before = xent_rs.get_num_threads()
    yield
    xent_rs.set_num_threads(before)


def _bench_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["bench", "--quick", "--repeat", "1", "--json", *argv]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


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


def test_list_and_default_run_have_threads_and_memory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--list"]) == 0
    keys = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"threads", "memory"} <= set(keys)
    assert {"threads", "memory"} <= {c.key for c in _bench.select_cases(None)}
    assert [c.key for c in _bench.select_cases(["threads"])] == ["threads"]
    assert [c.key for c in _bench.select_cases(["memory"])] == ["memory"]


@pytest.mark.usefixtures("tiny_cases", "restore_threads")
def test_bench_threads_json(capsys: pytest.CaptureFixture[str]) -> None:
    xent_rs.set_num_threads(3)
    report = _bench_json(["--only", "threads", "--threads", "2"], capsys)
    assert xent_rs.get_num_threads() == 3  # restored
    rows = {row["impl"]: row for row in report["rows"]}
    assert set(rows) == {"floor", "1 thread", "2 threads"}
    assert rows["1 thread"]["threads"] == 1
    assert rows["2 threads"]["threads"] == 2
    for impl in ("1 thread", "2 threads"):
        assert rows[impl]["status"] == "ok"
        assert rows[impl]["median_ms"] > 0
    assert rows["1 thread"]["speedup_vs_1_thread"] is None
    assert rows["2 threads"]["speedup_vs_1_thread"] > 0
    assert rows["2 threads"]["agrees"] is True  # bitwise the same as 1 thread
    assert report["warnings"] == []
    assert any(note.startswith("threads:") for note in report["notes"])


@pytest.mark.usefixtures("tiny_cases", "restore_threads")
def test_bench_threads_table(capsys: pytest.CaptureFixture[str]) -> None:
    xent_rs.set_num_threads(2)
    assert main(["bench", "--quick", "--repeat", "1", "--only", "threads"]) == 0
    out = capsys.readouterr().out
    assert xent_rs.get_num_threads() == 2
    assert {"floor", "thread", "threads"} <= _timed_impls(out)  # "1 thread", "2 threads"
    assert "speedup vs 1 thread:" in out
    assert "WARNING" not in out


@pytest.mark.usefixtures("tiny_cases", "restore_threads")
def test_bench_threads_one_thread_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    report = _bench_json(["--only", "threads", "--threads", "1"], capsys)
    rows = {row["impl"]: row for row in report["rows"]}
    assert rows["1 thread"]["status"] == "ok"
    assert rows["N threads"]["status"] == "skipped"
    assert "--threads" in rows["N threads"]["detail"]
    assert all(row["speedup_vs_1_thread"] is None for row in rows.values())


@pytest.mark.usefixtures("tiny_cases", "restore_threads")
def test_bench_threads_restores_the_count_on_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(*args: object, **kwargs: object) -> object:
        raise RuntimeError("kernel failed")

    xent_rs.set_num_threads(2)
    monkeypatch.setattr(xent_rs, "cross_entropy", failing)
    report = _bench_json(["--only", "threads"], capsys)
    assert xent_rs.get_num_threads() == 2
    rows = {row["impl"]: row for row in report["rows"]}
    assert rows["1 thread"]["status"] == "error"
    assert "kernel failed" in rows["1 thread"]["detail"]
    assert report["warnings"]

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(xent_rs, "cross_entropy", interrupted)
    assert main(["bench", "--quick", "--repeat", "1", "--only", "threads", "--json"]) == 130
    assert xent_rs.get_num_threads() == 2


@pytest.mark.usefixtures("tiny_cases")
def test_bench_memory_json(capsys: pytest.CaptureFixture[str]) -> None:
    report = _bench_json(["--only", "memory"], capsys)
    rows = {row["impl"]: row for row in report["rows"]}
    why_not = _bench._peak_memory_unavailable()
    if why_not is not None:
        assert [row["status"] for row in rows.values()] == ["skipped"]
        pytest.skip(why_not)
    assert {"xent_rs", "numpy"} <= set(rows)
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["extra_peak_mib"] >= 0
        assert row["extra_peak_pct_of_input"] is not None
        assert len(row["extra_peak_samples_mib"]) == 1  # --repeat 1
        assert row["median_ms"] is None
    # the float64 reference allocates at least a copy of the input: the measurement sees it
    assert rows["numpy"]["extra_peak_mib"] > 0
    assert rows["numpy"]["agrees"] is True
    assert report["warnings"] == []


@pytest.mark.usefixtures("tiny_cases")
def test_bench_memory_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--repeat", "1", "--only", "memory"]) == 0
    out = capsys.readouterr().out
    assert "extra peak memory cross_entropy f32 64x4096" in out
    if _bench._peak_memory_unavailable() is None:
        assert "MiB extra peak" in out
        assert "% of the input" in out
    else:
        assert "skipped:" in out


@pytest.mark.usefixtures("tiny_cases")
def test_bench_memory_skipped_without_clear_refs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(_bench, "CLEAR_REFS", str(tmp_path / "missing" / "clear_refs"))
    report = _bench_json(["--only", "memory"], capsys)
    [row] = report["rows"]
    assert row["status"] == "skipped"
    assert "clear_refs" in row["detail"]
    assert row["extra_peak_mib"] is None


@pytest.mark.usefixtures("tiny_cases", "restore_threads")
def test_bench_plot_leaves_out_threads_and_memory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "bench.png"
    argv = ["bench", "--quick", "--repeat", "1", "--plot", str(plot)]
    assert main([*argv, "--only", "threads", "memory"]) == 0
    assert "did not write" in capsys.readouterr().out
    assert not plot.exists()
    assert main([*argv, "--only", "threads", "overhead"]) == 0
    assert f"wrote {plot}" in capsys.readouterr().out
    assert plot.stat().st_size > 0


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


def _run_file(tmp_path: Path, name: str, xent: float | None, torch: float) -> str:
    """A minimal ``bench --json`` output: one case timed by xent_rs (unless None) and torch."""
    rows: list[dict[str, Any]] = [
        {"case": "ce case", "key": "ce", "impl": "floor", "status": "ok", "x_floor": 1.0},
        {"case": "ce case", "key": "ce", "impl": "torch", "status": "ok", "x_floor": torch},
        {
            "case": "threads case",
            "key": "threads",
            "impl": "2 threads",
            "status": "ok",
            "x_floor": None,
            "speedup_vs_1_thread": 1.8,
        },
    ]
    if xent is not None:
        rows.insert(
            1, {"case": "ce case", "key": "ce", "impl": "xent_rs", "status": "ok", "x_floor": xent}
        )
    path = tmp_path / name
    path.write_text(json.dumps({"rows": rows}))
    return str(path)


def test_bench_combine_prints_medians_and_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [
        _run_file(tmp_path, "a.json", 1.5, 10.0),
        _run_file(tmp_path, "b.json", None, 12.0),
        _run_file(tmp_path, "c.json", 1.1, 11.0),
    ]
    assert main(["bench", "--combine", *runs]) == 0
    lines = capsys.readouterr().out.splitlines()
    xent = next(line for line in lines if "xent_rs" in line).split()
    # median of the two runs that timed it; the run without it shows "-"
    assert xent[-4:] == ["1.3", "(1.5,", "-,", "1.1)"]
    torch = next(line for line in lines if " torch " in line).split()
    assert torch[-4:] == ["11", "(10,", "12,", "11)"]
    assert any("(speedup)" in line and line.split()[-4] == "1.8" for line in lines)
    assert not any(" floor " in line for line in lines)


def test_bench_combine_plots_the_medians(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    runs = [_run_file(tmp_path, f"{i}.json", 1.0 + i, 10.0) for i in range(2)]
    png = tmp_path / "chart.png"
    assert main(["bench", "--combine", *runs, "--plot", str(png)]) == 0
    assert png.stat().st_size > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "at least two"),
        ("{not json", "is not a bench --json output"),
        ('{"rows": 3}', "is not a bench --json output"),
    ],
)
def test_bench_combine_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    good = _run_file(tmp_path, "good.json", 1.0, 10.0)
    argv = ["bench", "--combine", good]
    if content is not None:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        argv.append(str(bad))
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bench_combine_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _run_file(tmp_path, "good.json", 1.0, 10.0)
    assert main(["bench", "--combine", good, str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
