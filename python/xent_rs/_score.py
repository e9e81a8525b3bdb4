"""``xent-rs score``: the cross-entropy of saved model outputs against saved labels.

LOGITS (or, with ``probs``, probabilities) and LABELS are memory-mapped and streamed through in
chunks of rows, so a file larger than RAM is never read whole. Each chunk goes through
:func:`xent_rs.cross_entropy` (or :func:`xent_rs.categorical_cross_entropy`) with
``reduction="none"``; the per-row losses are summed in float64 and, with ``out``, written as
they come to a float32 ``.npy`` that replaces its destination only once the run has succeeded.

Bad input raises :class:`ScoreError`, whose message is one line naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

import numpy as np
from tqdm import tqdm  # type: ignore[import-untyped]

import xent_rs

from . import _args

#: Default chunk size: as many rows as fit in this many bytes of LOGITS.
DEFAULT_CHUNK_BYTES = 64 << 20
_LOSS_DTYPE = np.dtype("<f4")
_FLOAT16 = np.dtype(np.float16)
_FLOAT16_INF_BITS = 0x7C00
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local file header: signature ... name/extra sizes
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class ScoreError(Exception):
    """Bad input or output: one line naming the file and the problem."""


# --------------------------------------------------------------------------- reading arrays
def open_array(path: str, key: str | None = None, npz_option: str | None = "--key") -> np.ndarray:
    """The array in a ``.npy`` file, or member ``key`` of a ``.npz`` file, memory-mapped.

    ``npz_option`` is the option that selects ``key``; ``None`` when a ``.npz`` is not accepted.
    A deflated ``.npz`` member (``np.savez_compressed``) cannot be mapped: it is loaded whole.
    """
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ScoreError(f"{path}: no such file") from None
    except OSError as exc:
        raise ScoreError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, EOFError) as exc:  # pickled or not an array file, truncated header
        raise ScoreError(f"{path}: {_not_an_array_file(path, exc)}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        loaded.close()
        if npz_option is None:
            raise ScoreError(f"{path}: a .npz file; expected a .npy file here")
        return _open_npz_member(path, key, npz_option)
    if key is not None:
        raise ScoreError(f"{path}: {npz_option} {key} given, but this is a .npy file, not a .npz")
    array: np.ndarray = loaded
    return array


def _not_an_array_file(path: str, exc: Exception) -> str:
    """Why ``np.load`` refused ``path``: NumPy blames pickled data for any file that starts with
    neither the .npy nor the zip magic, which misleads for a text file or a truncated one."""
    try:
        with open(path, "rb") as f:
            start = f.read(6)
    except OSError:
        start = b""
    if start != b"\x93NUMPY" and not start.startswith(_LOCAL_HEADER_SIGNATURE):
        return "not a .npy or .npz file (it does not start with their magic bytes)"
    return f"not a valid .npy or .npz file ({_first_line(exc)})"


def _open_npz_member(path: str, key: str | None, npz_option: str) -> np.ndarray:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {
                name.removesuffix(".npy"): archive.getinfo(name) for name in archive.namelist()
            }
            if key is None or key not in members:
                problem = f"needs {npz_option}" if key is None else f"has no array {key!r}"
                raise ScoreError(f"{path}: a .npz file {problem} (it holds: {', '.join(members)})")
            info = members[key]
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    array: np.ndarray = np.lib.format.read_array(member, allow_pickle=False)
                    return array
        return _map_stored_member(path, info)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ScoreError(f"{path}: corrupt .npz member {key!r} ({_first_line(exc)})") from None


def _map_stored_member(path: str, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map an uncompressed ``.npz`` member: its ``.npy`` bytes lie as-is in the zip, after
    the member's local header (whose extra field may differ from the central directory's)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise ValueError("truncated zip local header")
        signature, name_size, extra_size = _LOCAL_HEADER.unpack(header)
        if signature != _LOCAL_HEADER_SIGNATURE:
            raise ValueError("bad zip local header")
        member_start = info.header_offset + _LOCAL_HEADER.size + name_size + extra_size
        f.seek(member_start)
        version = np.lib.format.read_magic(f)
        if version not in _NPY_HEADER_READERS:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran_order, dtype = _NPY_HEADER_READERS[version](f)
        data_start = f.tell()
    if dtype.hasobject:
        raise ValueError("an object array cannot be memory-mapped")
    nbytes = math.prod(shape) * dtype.itemsize
    if data_start - member_start + nbytes > info.file_size:
        raise ValueError("the member is shorter than its header says")
    if nbytes == 0:  # mmap cannot map zero bytes
        return np.empty(shape, dtype)
    order: Literal["C", "F"] = "F" if fortran_order else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start, shape=shape, order=order)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bfloat16() -> Any:
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16


def as_float_input(a: np.ndarray, path: str, what: str) -> np.ndarray:
    """``a`` checked to be float16, bfloat16, float32 or float64.

    ``np.save`` writes an ml_dtypes bfloat16 array with the descr ``'<V2'`` (two raw bytes), so
    a 2-byte void array is read back as a bfloat16 view.
    """
    dtype = a.dtype
    if dtype.kind == "V" and dtype.itemsize == 2 and dtype.fields is None:
        bfloat16 = _bfloat16()
        if bfloat16 is None:
            raise ScoreError(
                f"{path}: {what} dtype {dtype.str} (bfloat16 as np.save writes it) needs "
                "ml_dtypes: pip install ml_dtypes"
            )
        return a.view(bfloat16)
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise ScoreError(
            f"{path}: {what} dtype {dtype} is not supported "
            "(expected float16, bfloat16, float32 or float64)"
        )
    return a


def as_labels(a: np.ndarray, path: str) -> np.ndarray:
    """``a`` checked to hold integer class indices."""
    if a.dtype.kind not in "iu":
        raise ScoreError(
            f"{path}: labels dtype {a.dtype} is not supported (expected integer class indices)"
        )
    return a


# --------------------------------------------------------------------------- streaming
def row_blocks(batch_shape: tuple[int, ...], chunk_rows: int) -> Iterator[tuple[Any, ...]]:
    """Indices into an array of shape ``batch_shape`` that cut its elements (the rows), in C
    order, into consecutive blocks of at most ``chunk_rows``: whole slabs along the outermost
    axis where they fit, cut along an inner axis only where one slab holds more rows."""
    if not batch_shape:
        yield ()
        return
    if math.prod(batch_shape) == 0:
        return
    split = len(batch_shape) - 1  # the axis the blocks are cut along
    slab = 1  # rows per index along `split`
    while split > 0 and slab * batch_shape[split] <= chunk_rows:
        slab *= batch_shape[split]
        split -= 1
    step = max(1, chunk_rows // slab)
    for outer in np.ndindex(*batch_shape[:split]):
        for start in range(0, batch_shape[split], step):
            yield (*outer, slice(start, start + step))


def _check_labels(
    labels: np.ndarray,
    first_row: int,
    n_classes: int,
    ignore_index: int,
    path: str,
    shape: tuple[int, ...],
) -> None:
    """Raise if a label is out of range, naming its value and its row in the whole file."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= n_classes))
    if not bad.any():
        return
    flat = int(np.flatnonzero(bad)[0])
    row = first_row + flat
    position = tuple(int(i) for i in np.unravel_index(row, shape))
    value = int(labels.ravel()[flat])
    error = _args.target_out_of_range(
        f"{path}: row {row}", value, position, n_classes, ignore_index
    )
    raise ScoreError(str(error))


def _losses_from_probs(
    probs: np.ndarray, labels: np.ndarray, scored: np.ndarray, ignore_index: int, smoothing: float
) -> np.ndarray:
    """Per-row ``categorical_cross_entropy``, smoothed as PyTorch smooths ``cross_entropy`` with
    ``log clip(p)`` in place of ``log_softmax``: ``(1-e) nll + e/C sum_c -log clip(p_c)``."""
    nll: np.ndarray = xent_rs.categorical_cross_entropy(
        probs, labels, axis=-1, ignore_index=ignore_index, reduction="none"
    )
    if not smoothing:
        return nll
    uniform = np.broadcast_to(nll.dtype.type(1.0 / probs.shape[-1]), probs.shape)
    smooth = xent_rs.categorical_cross_entropy(probs, uniform, axis=-1, reduction="none")
    return (1.0 - smoothing) * nll + smoothing * np.where(scored, smooth, 0)


def _argmax_float16(x: np.ndarray) -> np.ndarray:
    """``np.argmax(x, axis=-1)`` for native float16, 3-4x faster: NumPy compares float16 in
    software, so compare integer keys instead. The key orders as the values do, with -0 equal
    to +0 and every NaN above +inf and equal (so the first NaN wins, as in np.argmax)."""
    bits = x.view(np.int16)
    negative = bits >> 15  # -1 where the sign bit is set, else 0
    key = bits & np.int16(0x7FFF)
    key ^= negative
    key -= negative  # sign and magnitude to two's complement: -0 becomes 0
    key += np.int16(_FLOAT16_INF_BITS)  # wraps: finite values and +-inf in [0, 2 inf], NaNs above
    unsigned = key.view(np.uint16)
    np.minimum(unsigned, np.uint16(2 * _FLOAT16_INF_BITS + 1), out=unsigned)
    result: np.ndarray = np.argmax(unsigned, axis=-1)
    return result


@dataclass
class Totals:
    """What a scoring run adds up."""

    rows: int = 0
    ignored: int = 0
    loss_sum: float = 0.0  # float64 sum of the per-row losses
    correct: int = 0
    bytes_read: int = 0


def score(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    axis: int,
    ignore_index: int,
    label_smoothing: float,
    probs: bool,
    chunk_rows: int,
    labels_path: str,
    out: IO[bytes] | None = None,
    progress: tqdm | None = None,
) -> Totals:
    """Stream ``x`` (class axis ``axis``) and ``labels`` in blocks of at most ``chunk_rows`` rows;
    the per-row losses go to ``out`` (float32, C order) when given."""
    view = np.moveaxis(x, axis, -1)  # a view: rows first, classes last
    n_classes = view.shape[-1]
    totals = Totals()
    for index in row_blocks(labels.shape, chunk_rows):
        block = np.asarray(view[index])  # np.asarray: plain ndarray views of the memmap
        block_labels = np.asarray(labels[index])
        _check_labels(block_labels, totals.rows, n_classes, ignore_index, labels_path, labels.shape)
        scored = block_labels != ignore_index
        if probs:
            losses = _losses_from_probs(block, block_labels, scored, ignore_index, label_smoothing)
        else:
            losses = xent_rs.cross_entropy(
                block,
                block_labels,
                axis=-1,
                ignore_index=ignore_index,
                label_smoothing=label_smoothing,
                reduction="none",
            )
        totals.loss_sum += float(losses.sum(dtype=np.float64))  # ignored rows are 0
        predicted = _argmax_float16(block) if block.dtype == _FLOAT16 else np.argmax(block, -1)
        totals.correct += int(np.count_nonzero((predicted == block_labels) & scored))
        totals.ignored += int(block_labels.size - np.count_nonzero(scored))
        totals.rows += int(block_labels.size)
        totals.bytes_read += int(block.nbytes)
        if out is not None:
            out.write(np.ascontiguousarray(losses, dtype=_LOSS_DTYPE).data)
        if progress is not None:
            progress.update(block_labels.size)
    return totals


# --------------------------------------------------------------------------- output
@contextlib.contextmanager
def atomic_npy_writer(path: str, shape: tuple[int, ...]) -> Iterator[IO[bytes]]:
    """A file to write the C-order float32 data of a ``.npy`` of ``shape`` into.

    It is a temporary file beside ``path`` that replaces ``path`` when the block exits normally,
    and is removed otherwise (any exception, KeyboardInterrupt included): ``path`` is never left
    partial.
    """
    if os.path.isdir(path):  # found now rather than by os.replace after the whole run
        raise ScoreError(f"{path}: is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    except OSError as exc:
        raise ScoreError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes it private; np.save's files are not
        with os.fdopen(fd, "wb") as f:
            header = {"descr": _LOSS_DTYPE.str, "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it the output
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _umask() -> int:
    # Reading the umask means setting it (briefly 0: fine in the single-threaded CLI).
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: undefined or infinite values become null."""
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- the command
def run(
    logits_path: str,
    labels_path: str,
    *,
    key: str | None = None,
    axis: int = -1,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    probs: bool = False,
    out_path: str | None = None,
    as_json: bool = False,
    chunk_rows: int | None = None,
) -> int:
    """Score LOGITS against LABELS and print the summary on stdout; returns the exit code (0)."""
    what = "probabilities" if probs else "logits"
    try:  # the messages name the option: "label_smoothing: expected a float in [0, 1], ..."
        smoothing = _args.check_label_smoothing(label_smoothing)
        ignore_index = _args.check_ignore_index(ignore_index)
    except (TypeError, ValueError) as exc:
        raise ScoreError(str(exc)) from None
    x = as_float_input(open_array(logits_path, key), logits_path, what)
    labels = as_labels(open_array(labels_path, npz_option=None), labels_path)
    try:
        ax = _args.normalize_axis(axis, x.ndim)
    except ValueError:  # numpy's AxisError
        raise ScoreError(
            f"{logits_path}: --axis {axis} is out of range for {what} of shape {x.shape}"
        ) from None
    batch_shape = x.shape[:ax] + x.shape[ax + 1 :]
    if labels.shape != batch_shape:
        raise ScoreError(
            f"{labels_path}: labels shape {labels.shape} does not match {batch_shape}, the "
            f"shape of {what} {x.shape} without axis {ax}"
        )
    n_classes = x.shape[ax]
    if n_classes == 0:
        raise ScoreError(f"{logits_path}: no classes ({what} axis {ax} has length 0)")
    if chunk_rows is None:
        chunk_rows = max(1, DEFAULT_CHUNK_BYTES // (n_classes * x.dtype.itemsize))

    writer = (
        atomic_npy_writer(out_path, labels.shape)
        if out_path is not None
        else contextlib.nullcontext(None)
    )
    started = time.perf_counter()
    with writer as out, _progress_bar(labels.size) as bar:
        totals = score(
            x,
            labels,
            axis=ax,
            ignore_index=ignore_index,
            label_smoothing=smoothing,
            probs=probs,
            chunk_rows=chunk_rows,
            labels_path=labels_path,
            out=out,
            progress=bar,
        )
    seconds = time.perf_counter() - started

    scored = totals.rows - totals.ignored
    with np.errstate(all="ignore"):  # no scored rows: nan, by IEEE division as xent_rs does
        mean = float(np.float64(totals.loss_sum) / scored)
        accuracy = float(np.float64(totals.correct) / scored)
        perplexity = float(np.exp(mean))
    bits = mean / math.log(2)
    gb_per_s = totals.bytes_read / seconds / 1e9 if seconds > 0 else math.inf
    if as_json:
        report = {
            "rows": totals.rows,
            "ignored": totals.ignored,
            "mean_loss": _finite_or_none(mean),
            "mean_loss_bits": _finite_or_none(bits),
            "perplexity": _finite_or_none(perplexity),
            "accuracy": _finite_or_none(accuracy),
            "correct": totals.correct,
            "seconds": seconds,
            "bytes": totals.bytes_read,
            "gb_per_s": _finite_or_none(gb_per_s),
            "dtype": x.dtype.name,
            "shape": list(x.shape),
            "axis": ax,
            "classes": n_classes,
            "probs": probs,
            "label_smoothing": smoothing,
            "ignore_index": ignore_index,
            "chunk_rows": chunk_rows,
            "logits": logits_path,
            "labels": labels_path,
            "out": out_path,
        }
        print(json.dumps(report, allow_nan=False))
        return 0
    lines = [
        (
            "probs" if probs else "logits",
            f"{logits_path}: {x.dtype.name} {x.shape}, {n_classes} classes on axis {ax}",
        ),
        ("labels", f"{labels_path}: {labels.dtype} {labels.shape}"),
        ("rows", f"{totals.rows} ({totals.ignored} ignored, {scored} scored)"),
        ("mean loss", f"{mean:.6g} nats = {bits:.6g} bits"),
        ("perplexity", f"{perplexity:.6g}"),
        ("accuracy", f"{accuracy:.4%} top-1 ({totals.correct} of {scored})"),
        ("time", f"{seconds:.3f} s, {gb_per_s:.2f} GB/s ({totals.bytes_read / 1e6:.1f} MB read)"),
    ]
    if out_path is not None:
        lines.append(("wrote", f"{out_path}: float32 {labels.shape}"))
    for label, text in lines:
        print(f"{label:<11} {text}")
    return 0


def _progress_bar(rows: int) -> Any:
    """A tqdm bar over ``rows`` on stderr, shown only when stderr is a terminal and the run
    lasts more than a second."""
    stderr = sys.stderr
    return tqdm(
        total=rows,
        desc="score",
        unit="row",
        unit_scale=True,
        file=stderr,
        disable=stderr is None or not stderr.isatty(),
        delay=1.0,
        leave=False,  # the summary follows: no finished bar above it
    )
