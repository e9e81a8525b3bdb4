"""``xent-rs score``: the streamed summary and ``--out`` agree with xent_rs on the whole array,
whatever the chunking, dtype, class axis and container; bad input is one line on stderr."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xent_rs as xr
from xent_rs import _score
from xent_rs._cli import main

IGNORE = -100
SHAPE = (40, 9)


def _data(
    shape: tuple[int, ...] = SHAPE, axis: int = -1, dtype: Any = np.float32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits, and labels with every fifth row ignored."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * 2).astype(dtype)
    ax = axis % len(shape)
    labels = rng.integers(0, shape[ax], size=shape[:ax] + shape[ax + 1 :])
    labels.flat[::5] = IGNORE
    return logits, labels


def _save(tmp_path: Path, name: str, array: np.ndarray) -> str:
    path = tmp_path / name
    np.save(path, array)
    return str(path)


def _saved(tmp_path: Path, logits: np.ndarray, labels: np.ndarray) -> list[str]:
    return [_save(tmp_path, "logits.npy", logits), _save(tmp_path, "labels.npy", labels)]


def _run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["score", *argv, "--json"]) == 0
    captured = capsys.readouterr()

    def reject(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    # json.loads fails on anything beside the one object, NaN and Infinity included
    report: dict[str, Any] = json.loads(captured.out, parse_constant=reject)
    return report


def _check_summary(
    report: dict[str, Any],
    logits: np.ndarray,
    labels: np.ndarray,
    axis: int = -1,
    rel: float = 1e-6,
) -> None:
    """The report against xent_rs.cross_entropy on the whole array and np.argmax."""
    scored = labels != IGNORE
    mean = float(xr.cross_entropy(logits, labels, axis=axis))
    correct = (np.argmax(logits.astype(np.float32), axis=axis) == labels) & scored
    assert report["rows"] == labels.size
    assert report["ignored"] == labels.size - np.count_nonzero(scored)
    assert report["mean_loss"] == pytest.approx(mean, rel=rel)
    assert report["mean_loss_bits"] == pytest.approx(mean / math.log(2), rel=rel)
    assert report["perplexity"] == pytest.approx(math.exp(mean), rel=rel * 10)
    assert report["accuracy"] == np.count_nonzero(correct) / np.count_nonzero(scored)
    assert report["classes"] == logits.shape[axis]
    assert report["seconds"] > 0


def _assert_one_line_error(
    argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str
) -> None:
    assert main(["score", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("xent-rs: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in captured.err


# --------------------------------------------------------------------------- results
def test_float16_with_ignored_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logits, labels = _data(dtype=np.float16)
    out = tmp_path / "losses.npy"
    report = _run_json([*_saved(tmp_path, logits, labels), "--out", str(out)], capsys)
    _check_summary(report, logits, labels)
    assert report["dtype"] == "float16"
    assert report["bytes"] == logits.nbytes
    losses = np.load(out)
    assert losses.dtype == np.float32
    np.testing.assert_array_equal(losses, xr.cross_entropy(logits, labels, reduction="none"))
    assert not losses[labels == IGNORE].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk_rows", ["1", "7", str(SHAPE[0])])
def test_dtypes_and_chunk_sizes(
    dtype: Any, chunk_rows: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logits, labels = _data(dtype=dtype)
    out = tmp_path / "losses.npy"
    argv = [*_saved(tmp_path, logits, labels), "--chunk-rows", chunk_rows, "--out", str(out)]
    report = _run_json(argv, capsys)
    _check_summary(report, logits, labels, rel=1e-6 if dtype == np.float32 else 1e-12)
    assert report["chunk_rows"] == int(chunk_rows)
    expected = xr.cross_entropy(logits, labels, reduction="none").astype(np.float32)
    np.testing.assert_array_equal(np.load(out), expected)


def test_bfloat16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    logits, labels = _data()
    logits = logits.astype(ml_dtypes.bfloat16)
    argv = _saved(tmp_path, logits, labels)
    assert np.load(argv[0]).dtype == np.dtype("V2")  # what np.save makes of bfloat16
    report = _run_json(argv, capsys)
    _check_summary(report, logits, labels)
    assert report["dtype"] == "bfloat16"


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("chunk_rows", ["1", "4", None])
def test_class_axis_of_3d_logits(
    axis: int, chunk_rows: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logits, labels = _data((6, 5, 7), axis, np.float16)  # float16: its own argmax, strided
    out = tmp_path / "losses.npy"
    argv = [*_saved(tmp_path, logits, labels), "--axis", str(axis), "--out", str(out)]
    report = _run_json(argv + (["--chunk-rows", chunk_rows] if chunk_rows else []), capsys)
    _check_summary(report, logits, labels, axis)
    expected = xr.cross_entropy(logits, labels, axis=axis, reduction="none")
    np.testing.assert_array_equal(np.load(out), expected)


def test_label_smoothing_and_ignore_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logits, labels = _data()
    labels[labels == IGNORE] = 3
    argv = [*_saved(tmp_path, logits, labels), "--ignore-index", "3", "--label-smoothing", "0.2"]
    report = _run_json([*argv, "--chunk-rows", "7"], capsys)
    expected = xr.cross_entropy(logits, labels, ignore_index=3, label_smoothing=0.2)
    assert report["mean_loss"] == pytest.approx(float(expected), rel=1e-6)
    assert report["ignored"] == np.count_nonzero(labels == 3)


def test_probs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logits, labels = _data()
    probs = xr.softmax(logits)
    argv = [*_saved(tmp_path, probs, labels), "--probs", "--chunk-rows", "7"]
    report = _run_json(argv, capsys)
    expected = xr.categorical_cross_entropy(probs, labels)
    assert report["mean_loss"] == pytest.approx(float(expected), rel=1e-6)
    _check_summary(report, np.log(probs), labels, rel=1e-5)  # log(probs) as logits: the same
    # smoothing applies to log clip(p) as cross_entropy's does to log_softmax
    smoothed = _run_json([*argv, "--label-smoothing", "0.3"], capsys)
    expected = xr.cross_entropy(np.log(probs), labels, label_smoothing=0.3)
    assert smoothed["mean_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_all_rows_ignored_gives_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logits, labels = _data()
    labels[:] = IGNORE
    argv = _saved(tmp_path, logits, labels)
    report = _run_json(argv, capsys)
    assert report["rows"] == report["ignored"] == SHAPE[0]
    for key in ("mean_loss", "mean_loss_bits", "perplexity", "accuracy"):
        assert report[key] is None
    assert main(["score", *argv]) == 0
    assert "nan nats" in capsys.readouterr().out


def test_text_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logits, labels = _data()
    out = tmp_path / "losses.npy"
    assert main(["score", *_saved(tmp_path, logits, labels), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rows        40 (8 ignored, 32 scored)" in text
    [(nats, bits)] = re.findall(r"mean loss   (\S+) nats = (\S+) bits", text)
    mean = float(xr.cross_entropy(logits, labels))
    assert float(nats) == pytest.approx(mean, rel=1e-5)
    assert float(bits) == pytest.approx(mean / math.log(2), rel=1e-5)
    [perplexity] = re.findall(r"perplexity  (\S+)", text)
    assert float(perplexity) == pytest.approx(math.exp(mean), rel=1e-5)
    assert re.search(r"accuracy    \d+\.\d{4}% top-1 \(\d+ of 32\)", text)
    assert re.search(r"time        \d+\.\d{3} s, \d+\.\d{2} GB/s", text)
    assert f"wrote       {out}: float32 (40,)" in text


# --------------------------------------------------------------------------- .npz
@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_key(save: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logits, labels = _data()
    path = tmp_path / "outputs.npz"
    save(path, labels=labels, logits=np.asfortranarray(logits))
    labels_path = _save(tmp_path, "labels.npy", labels)
    report = _run_json([str(path), labels_path, "--key", "logits", "--chunk-rows", "7"], capsys)
    _check_summary(report, logits, labels)
    opened = _score.open_array(str(path), "logits")
    np.testing.assert_array_equal(opened, logits)
    assert isinstance(opened, np.memmap) == (save is np.savez)  # stored members are mapped


# --------------------------------------------------------------------------- --out atomicity
def test_failure_in_a_late_chunk_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logits, labels = _data((6, 7, 5))
    labels[5, 3] = 99
    out = tmp_path / "losses.npy"
    out.write_bytes(b"previous")
    argv = [*_saved(tmp_path, logits, labels), "--out", str(out), "--chunk-rows", "1"]
    _assert_one_line_error(argv, capsys, "labels.npy", "class index 99", "row 38", "(5, 3)")
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npy", "logits.npy", "losses.npy"]


def test_interrupt_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    cross_entropy = xr.cross_entropy

    def interrupted_on_third_call(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return cross_entropy(*args, **kwargs)

    monkeypatch.setattr(xr, "cross_entropy", interrupted_on_third_call)
    argv = [*_saved(tmp_path, *_data()), "--out", str(tmp_path / "losses.npy")]
    assert main(["score", *argv, "--chunk-rows", "4"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npy", "logits.npy"]


# --------------------------------------------------------------------------- bad input
@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    logits, labels = _data()
    good = _saved(tmp_path, logits, labels)
    npz = tmp_path / "outputs.npz"
    np.savez(npz, logits=logits)
    text = tmp_path / "notes.txt"
    text.write_text("not an array\n")
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(Path(good[0]).read_bytes()[:300])
    out_of_range = labels.copy()
    out_of_range[33] = 9
    negative = labels.copy()
    negative[2] = -1
    return {
        "logits": good[0],
        "labels": good[1],
        "npz": str(npz),
        "text": str(text),
        "truncated": str(truncated),
        "int_logits": _save(tmp_path, "int_logits.npy", labels.reshape(8, 5)),
        "float_labels": _save(tmp_path, "float_labels.npy", labels.astype(np.float64)),
        "short_labels": _save(tmp_path, "short_labels.npy", labels[:-1]),
        "out_of_range": _save(tmp_path, "out_of_range.npy", out_of_range),
        "negative": _save(tmp_path, "negative.npy", negative),
        "dir": str(tmp_path),
        "missing_dir_out": str(tmp_path / "no" / "losses.npy"),
    }


BAD_INPUT = [
    (["missing.npy", "{labels}"], ["missing.npy", "no such file"]),
    (["{dir}", "{labels}"], ["cannot read"]),
    (["{text}", "{labels}"], ["notes.txt", "does not start with their magic bytes"]),
    (["{truncated}", "{labels}"], ["truncated.npy", "not a valid .npy or .npz file"]),
    (["{int_logits}", "{labels}"], ["int_logits.npy", "dtype int64"]),
    (["{logits}", "{float_labels}"], ["float_labels.npy", "dtype float64"]),
    (["{logits}", "{short_labels}"], ["short_labels.npy", "(39,)", "(40,)", "(40, 9)"]),
    (["{logits}", "{out_of_range}"], ["out_of_range.npy", "class index 9", "row 33"]),
    (["{logits}", "{negative}"], ["negative.npy", "class index -1", "row 2"]),
    (["{logits}", "{labels}", "--axis", "2"], ["logits.npy", "--axis 2"]),
    (["{npz}", "{labels}"], ["outputs.npz", "needs --key", "logits"]),
    (["{npz}", "{labels}", "--key", "nope"], ["outputs.npz", "no array 'nope'"]),
    (["{logits}", "{labels}", "--key", "logits"], ["logits.npy", "not a .npz"]),
    (["{logits}", "{npz}"], ["outputs.npz", "expected a .npy"]),
    (["{logits}", "{labels}", "--label-smoothing", "1.5"], ["label_smoothing", "1.5"]),
    (["{logits}", "{labels}", "--chunk-rows", "0"], ["--chunk-rows"]),
    (["{logits}", "{labels}", "--out", "{missing_dir_out}"], ["losses.npy", "cannot write"]),
    (["{logits}", "{labels}", "--out", "{dir}"], ["is a directory"]),
]


@pytest.mark.parametrize(("argv", "needles"), BAD_INPUT)
def test_bad_input_is_one_line(
    argv: list[str],
    needles: list[str],
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _assert_one_line_error([arg.format(**files) for arg in argv], capsys, *needles)


def test_bfloat16_without_ml_dtypes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    logits, labels = _data(dtype=np.float16)
    argv = [_save(tmp_path, "logits.npy", logits.view("V2")), _save(tmp_path, "l.npy", labels)]
    monkeypatch.setattr(_score, "_bfloat16", lambda: None)
    _assert_one_line_error(argv, capsys, "logits.npy", "needs ml_dtypes")


def test_subprocess_error_has_no_traceback(tmp_path: Path) -> None:
    labels = _save(tmp_path, "labels.npy", _data()[1])
    command = [sys.executable, "-m", "xent_rs._cli", "score", str(tmp_path / "none.npy"), labels]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [f"xent-rs: error: {tmp_path / 'none.npy'}: no such file"]


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text
    assert "xent-rs score logits.npy labels.npy" in text


# --------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("shape", [(), (0, 5), (5, 0), (7,), (4, 5), (3, 4, 5)])
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 100])
def test_row_blocks_cover_the_rows_in_order(shape: tuple[int, ...], chunk_rows: int) -> None:
    rows = np.arange(math.prod(shape)).reshape(shape)
    blocks = [rows[index] for index in _score.row_blocks(shape, chunk_rows)]
    assert all(block.size <= chunk_rows for block in blocks)
    assert all(block.size for block in blocks)
    flat = [block.ravel() for block in blocks]
    np.testing.assert_array_equal(np.concatenate(flat) if flat else [], rows.ravel())


def test_argmax_float16_is_numpys() -> None:
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1.0, -1.0, 65504.0, 6e-8, -6e-8, 2.0])
    rng = np.random.default_rng(1)
    x = rng.choice(specials, size=(4000, 6)).astype(np.float16)
    nans = rng.random(x.shape) < 0.03
    # NaNs of both signs and several payloads
    payloads = np.array([0x7C01, 0x7E00, 0x7FFF, 0xFC01, 0xFE00, 0xFFFF], np.uint16)
    x.view(np.uint16)[nans] = rng.choice(payloads, size=np.count_nonzero(nans))
    np.testing.assert_array_equal(_score._argmax_float16(x), np.argmax(x, axis=-1))
