"""The Rust-backed implementation of the public API.

Arguments are normalised by :mod:`xent_rs._args` exactly as in :mod:`xent_rs.reference`
(same errors), then handed to the native kernels, which read any memory layout in place.
Docstrings are those of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from . import _args, _native, reference
from .reference import Loss

_F = TypeVar("_F", bound=Callable[..., Any])


def _documented_by(spec: _F) -> Callable[[Callable[..., Any]], _F]:
    """Give the decorated function ``spec``'s docstring and, for type checkers, its signature
    (overloads included): the reference is the one source of both."""

    def attach(f: Callable[..., Any]) -> _F:
        f.__doc__ = spec.__doc__
        return cast(_F, f)

    return attach


def _batch_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return shape[:axis] + shape[axis + 1 :]


def _losses_out(
    reduction: str, xa: np.ndarray, axis: int | None
) -> tuple[np.ndarray | None, tuple[int, ...], np.dtype]:
    """``(out, shape, dtype)``: the per-sample output of ``reduction="none"``, flat for the
    kernels (allocated here: an impossible size is NumPy's ``MemoryError``), else None; the
    per-sample shape (``xa``'s without ``axis``; only computed for ``"none"``); the compute
    dtype of ``xa``."""
    dtype = _args.compute_dtype(xa.dtype)
    if reduction != "none":
        return None, (), dtype
    shape = xa.shape if axis is None else _batch_shape(xa.shape, axis)
    return np.empty(math.prod(shape), dtype), shape, dtype


def _finish(
    per_sample: np.ndarray | None,
    total: float,
    denominator: float,
    reduction: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
) -> Loss:
    if per_sample is not None:
        return per_sample.reshape(shape)
    return _args.finish_reduction(total, denominator, reduction, dtype)


# --------------------------------------------------------------------------- softmax family
def _check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out: expected an array of shape {shape} and dtype {dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out: array is read-only")
    return out


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (
        a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _softmax(x: npt.ArrayLike, axis: Any, out: np.ndarray | None, log: bool) -> np.ndarray:
    xa = _args.as_float_array(x, "x")
    ax = _args.normalize_axis(axis, xa.ndim)
    if out is None:
        result = np.empty(xa.shape, xa.dtype)
        if xa.size:
            _native.softmax_into(xa, result, ax, log)
        return result
    out = _check_out(out, xa.shape, xa.dtype)
    if not xa.size:
        # Nothing to compute. (Two empty views of one buffer never share memory for NumPy, but
        # rust-numpy would refuse to borrow them together.)
        return out
    contiguous = out.flags.c_contiguous or out.flags.f_contiguous
    if contiguous and not np.may_share_memory(out, xa):  # (the same memory does share)
        _native.softmax_into(xa, out, ax, log)
    elif contiguous and _same_memory(out, xa):
        _native.softmax_in_place(out, ax, log)
    else:  # partial overlap or a strided out=: compute aside, then copy
        result = np.empty(xa.shape, xa.dtype)
        _native.softmax_into(xa, result, ax, log)
        np.copyto(out, result)
    return out


@_documented_by(reference.log_softmax)
def log_softmax(x: npt.ArrayLike, axis: int = -1, *, out: np.ndarray | None = None) -> np.ndarray:
    return _softmax(x, axis, out, log=True)


@_documented_by(reference.softmax)
def softmax(x: npt.ArrayLike, axis: int = -1, *, out: np.ndarray | None = None) -> np.ndarray:
    return _softmax(x, axis, out, log=False)


def _per_row(
    kernel: Callable[..., None], arrays: tuple[np.ndarray, ...], axis: int, keepdims: bool
) -> Loss:
    """``kernel(*arrays, axis, out)`` into a new array of the rows' compute dtype and shape."""
    out, shape, _ = _losses_out("none", arrays[0], axis)
    assert out is not None
    kernel(*arrays, axis, out)
    if keepdims:
        return out.reshape((*shape[:axis], 1, *shape[axis:]))
    return out.reshape(shape) if shape else out[0]  # one row: a NumPy scalar


@_documented_by(reference.logsumexp)
def logsumexp(x: npt.ArrayLike, axis: int = -1, *, keepdims: bool = False) -> Loss:
    xa = _args.as_float_array(x, "x")
    ax = _args.normalize_axis(axis, xa.ndim)
    return _per_row(_native.logsumexp, (xa,), ax, _args.check_keepdims(keepdims))


@_documented_by(reference.entropy)
def entropy(p: npt.ArrayLike, axis: int = -1) -> Loss:
    pa = _args.as_float_array(p, "p")
    ax = _args.normalize_axis(axis, pa.ndim)
    return _per_row(_native.entropy, (pa,), ax, False)


@_documented_by(reference.kl_divergence)
def kl_divergence(p: npt.ArrayLike, q: npt.ArrayLike, axis: int = -1) -> Loss:
    pb, qb, ax = _args.kl_args(p, q, axis)
    return _per_row(_native.kl_divergence, (pb, qb), ax, False)


# --------------------------------------------------------------------------- losses over classes
def _native_target(kind: str, t: np.ndarray) -> np.ndarray:
    """Index targets as flat contiguous int64; probability targets as ``as_target`` gives them
    (the input's dtype, or float32 for half-precision inputs), read in place."""
    if kind != "index":
        return t
    flags = t.flags
    if not (flags.c_contiguous and flags.aligned):  # as_target gives int64
        t = np.require(t, np.int64, ["C", "A"])
    return t if t.ndim == 1 else t.reshape(-1)


def _cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    axis: Any,
    weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    reduction: Any,
    with_grad: bool,
) -> tuple[Loss, np.ndarray | None]:
    xa, ax, reduction, e, ignore_index, kind, t, w = _args.class_args(
        logits, target, axis, weight, ignore_index, reduction, "logits", label_smoothing
    )
    grad = np.empty(xa.shape, xa.dtype) if with_grad else None
    per_row, shape, dtype = _losses_out(reduction, xa, ax)
    total, denominator = _native.cross_entropy(
        xa,
        _native_target(kind, t),
        ax,
        w,
        ignore_index,
        e,
        per_row,
        grad,
        reduction == "mean",
    )
    return _finish(per_row, total, denominator, reduction, shape, dtype), grad


@_documented_by(reference.cross_entropy)
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Loss:
    # The common call (NumPy arrays, a scalar result) is checked and computed in one native
    # step; for anything else, and for any error, it returns None and the full path runs.
    loss = _native.cross_entropy_common(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction
    )
    if loss is not None:
        return loss
    return _cross_entropy(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction, False
    )[0]


@_documented_by(reference.cross_entropy_with_grad)
def cross_entropy_with_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> tuple[Loss, np.ndarray]:
    loss, grad = _cross_entropy(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction, True
    )
    assert grad is not None
    return loss, grad


def _picked(
    x: npt.ArrayLike,
    target: npt.ArrayLike,
    axis: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    name: str,
    eps: Any = None,
    clip: bool = False,
) -> Loss:
    xa, ax, reduction, _, ignore_index, kind, t, w = _args.class_args(
        x, target, axis, weight, ignore_index, reduction, name
    )
    per_row, shape, dtype = _losses_out(reduction, xa, ax)
    bound = _args.check_eps(eps, dtype) if clip else None
    total, denominator = _native.picked_loss(
        xa, _native_target(kind, t), ax, w, ignore_index, bound, per_row
    )
    return _finish(per_row, total, denominator, reduction, shape, dtype)


@_documented_by(reference.nll_loss)
def nll_loss(
    log_probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Loss:
    return _picked(log_probs, target, axis, weight, ignore_index, reduction, "log_probs")


@_documented_by(reference.categorical_cross_entropy)
def categorical_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: int = -1,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Loss:
    return _picked(probs, target, axis, weight, ignore_index, reduction, "probs", eps, clip=True)


# --------------------------------------------------------------------------- binary losses
def _binary(
    x: npt.ArrayLike,
    target: npt.ArrayLike,
    weight: Any,
    pos_weight: Any,
    reduction: Any,
    name: str,
) -> Loss:
    xa, ta, w, pw, reduction = _args.binary_args(x, target, weight, pos_weight, reduction, name)
    # The kernels read rows along the last axis: give 0-d inputs one.
    like = xa.reshape(1) if xa.ndim == 0 else xa
    # Targets and weights share one dtype: the input's, else its compute dtype, or float64
    # when one of them is float64 (the kernel computes in f64: wider values keep their precision).
    per, shape, dtype = _losses_out(reduction, xa, None)
    companion = xa.dtype
    if not (w is None and pw is None and ta.dtype == companion):  # else the common case
        companions = [a.dtype for a in (ta, w, pw) if a is not None]
        if not all(c == xa.dtype for c in companions):
            wide = any(c == np.float64 for c in companions)
            companion = np.dtype(np.float64) if wide else dtype
    total, count = _native.binary_loss(
        like,
        _companion(ta, companion, like.shape),
        None if w is None else _companion(w, companion, like.shape),
        None if pw is None else _companion(pw, companion, like.shape),
        name == "logits",
        per,
    )
    return _finish(per, total, count, reduction, shape, dtype)


def _companion(a: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Cast before broadcasting, so that no copy of the input's size is made; beyond the
    companion dtype's range: inf, as intended."""
    return _args.broadcast(_args.cast(a, dtype), shape)


@_documented_by(reference.binary_cross_entropy)
def binary_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
) -> Loss:
    return _binary(probs, target, weight, None, reduction, "probs")


@_documented_by(reference.binary_cross_entropy_with_logits)
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
) -> Loss:
    return _binary(logits, target, weight, pos_weight, reduction, "logits")


# --------------------------------------------------------------------------- threads
@_documented_by(reference.set_num_threads)
def set_num_threads(n: int) -> None:
    _native.set_num_threads(_args.check_num_threads(n))


@_documented_by(reference.get_num_threads)
def get_num_threads() -> int:
    return int(_native.get_num_threads())
