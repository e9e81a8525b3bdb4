"""The softmax family and cross-entropy losses of :mod:`xent_rs` over dask arrays.

Same signatures and semantics as the :mod:`xent_rs` functions (``out=`` aside), lazily: every
function returns a dask array (a 0-d one for ``reduction="sum"`` or ``"mean"``), and every block
is computed by the Rust kernels of :mod:`xent_rs`. Arguments are checked when the graph is built,
with the exceptions and messages of :mod:`xent_rs`, except what needs the values: a class index
out of range or (``binary_cross_entropy``) a probability outside ``[0, 1]`` raises its
``ValueError`` when the result is computed, its position counted in the whole array.

Inputs may be chunked along any axis, the class axis included: rows are never gathered into one
block. Along the class axis each block is summarised per row by

* ``m``, its maximum, and ``s = logsumexp(block) - m``: the kernel's cross-entropy of the
  block's arg-max, exact even when ``s`` is tiny. ``m + s`` is the block's logsumexp, kept as a
  pair because ``logsumexp(x) - logsumexp(block)`` must stay exact when blocks are merged;
* for ``cross_entropy``, the block's share of the row's loss as ``coef * gap + own``, with
  ``gap = logsumexp(x) - logsumexp(block)`` only known after the merge. For an index target
  ``t``, ``own = (1 - e) w_t (lse_b - x_t) + e/C sum_c w_c (lse_b - x_c)`` over the block's
  classes ``c`` (``lse_b`` the block's logsumexp, ``e = label_smoothing``) and
  ``coef = (1 - e) w_t + e/C sum_c w_c`` (``w_t`` only in the block holding ``t``); for
  probability targets ``own = sum_c w_c t'_c (lse_b - x_c)`` and ``coef = sum_c w_c t'_c``.
  ``s`` and ``own`` come from the kernel's cross-entropy on the block, and no sum mixes signs,
  so nothing cancels (``w_t (logsumexp(x) - x_t)``, computed naively, loses every digit of a
  confident prediction's loss).

A row's blocks then merge in float64: ``shift = max(m)`` (0 unless finite, like the reference),
``L = logsumexp(m - shift + s)``, so ``logsumexp(x) = shift + L``;
``gap = (shift - m) + (L - s)`` and ``loss = sum(coef * gap + own)``. ``log_softmax`` is
``(x - shift) - L``, and ``logsumexp`` a tree reduction of the blocks' logsumexps. Sums over
rows are accumulated in float64. When the class axis is one block, the kernels are simply
mapped over the blocks.

>>> import dask.array as da, numpy as np, xent_rs.dask as xd
>>> logits = da.from_array(np.arange(12.0).reshape(3, 4), chunks=(2, 2))  # rows and classes
>>> loss = xd.cross_entropy(logits, da.from_array(np.array([3, 0, 1])))
>>> print(loss.compute(scheduler="synchronous").round(6))
2.106856
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import Any

if importlib.util.find_spec("dask") is None:  # pragma: no cover - the extra is not installed
    raise ImportError("xent_rs.dask needs dask: pip install 'xent_rs[dask]'")

import dask.array as da
import numpy as np
import numpy.typing as npt

import xent_rs as xr

from . import _args

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "log_softmax",
    "logsumexp",
]

_F64 = np.dtype(np.float64)
_INT64 = np.dtype(np.int64)
# Per row and class block: m, s, coef, own (see the module docstring).
_STATS = 4
# Dask passes block_info: per input (and None for the output), the block's place in its array.
BlockInfo = dict[Any, dict[str, Any]]

# dask.array's functions are unannotated: typed names for those used here keep the checks of
# mypy --strict on the rest of the module.
_DaskFunction = Callable[..., da.Array]
_asarray: _DaskFunction = da.asarray
_astype: _DaskFunction = da.Array.astype
_broadcast_to: _DaskFunction = da.broadcast_to
_from_array: _DaskFunction = da.from_array
_map_blocks: _DaskFunction = da.map_blocks
_moveaxis: _DaskFunction = da.moveaxis
_rechunk: _DaskFunction = da.rechunk
_reduction: _DaskFunction = da.reduction
_sum: _DaskFunction = da.sum


# --------------------------------------------------------------------------- arguments
def _as_dask(a: Any, name: str) -> da.Array:
    arr = a if isinstance(a, da.Array) else _asarray(a)
    if any(math.isnan(n) for n in arr.shape):
        raise ValueError(
            f"{name}: unknown chunk sizes (shape {arr.shape}); call compute_chunk_sizes() first"
        )
    return arr


def _stand_in(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` with one element of memory (a broadcast zero): what the
    checks of :mod:`xent_rs._args` see of a dask array, as they look at shapes and dtypes only."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _float_input(a: Any, name: str) -> tuple[da.Array, np.ndarray]:
    """``a`` as a dask array of the floating dtype xent_rs gives it, and its checked stand-in."""
    arr = _as_dask(a, name)
    # The dtype from a 0-d probe: as_float_array would convert a full-size copy of an integer one.
    dtype = _args.as_float_array(np.zeros((), arr.dtype), name).dtype
    return _astype(arr, dtype), _args.as_float_array(_stand_in(arr.shape, dtype), name)


def _meta(ndim: int, dtype: Any) -> np.ndarray:
    """The empty array that tells dask the type of a result's blocks (else it calls the function
    on empty inputs to find out)."""
    return np.empty((0,) * ndim, dtype)


def _class_args(
    logits: Any,
    target: Any,
    axis: Any,
    weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    reduction: Any,
) -> tuple[da.Array, int, str, float, int, str, da.Array, np.ndarray | None]:
    """``_args.class_args`` on stand-ins: the same checks in the same order, and the target as a
    dask array of the dtype ``as_target`` gives it (int64 indices, or probabilities)."""
    x, x_stand_in = _float_input(logits, "logits")
    t = _as_dask(target, "target")
    # Stand-in dtypes that as_target keeps as they are: it would convert a full-size copy of
    # other integer or floating dtypes (the target's values are checked when computed).
    if t.dtype.kind in "iu":
        t_dtype = _INT64
    elif t.dtype.kind in "bf" or t.dtype.type.__name__ == "bfloat16":
        t_dtype = x.dtype
    else:
        t_dtype = t.dtype  # unsupported: as_target raises its TypeError
    _, ax, reduction, e, ignore_index, kind, _, w = _args.class_args(
        x_stand_in,
        _stand_in(t.shape, t_dtype),
        axis,
        weight,
        ignore_index,
        reduction,
        "logits",
        label_smoothing,
    )
    if kind == "index":
        return x, ax, reduction, e, ignore_index, kind, t, w
    # Probabilities: the dtype as_target converts them to, from a probe of one element.
    one = (1,) * x.ndim
    probs_dtype = _args.as_target(np.zeros(one, t.dtype), np.zeros(one, x.dtype), ax)[1].dtype
    return x, ax, reduction, e, ignore_index, kind, _astype(t, probs_dtype), w


def _global_position(
    local: tuple[int, ...], block_info: BlockInfo | None, arg: int = 0
) -> tuple[int, ...]:
    """The position in the whole array of ``local``, a position in block argument ``arg``."""
    if block_info is None:
        return local
    return tuple(
        start + i for (start, _), i in zip(block_info[arg]["array-location"], local, strict=True)
    )


# --------------------------------------------------------------------------- reductions
def _finish_block(total: Any, denominator: Any, reduction: str, dtype: np.dtype) -> np.generic:
    return _args.finish_reduction(float(total), float(denominator), reduction, dtype)


def _reduce(
    per_sample: da.Array, denominator: da.Array | int, reduction: str, dtype: np.dtype
) -> da.Array:
    """Per-sample losses as ``reduction`` says: the losses in ``dtype``, or their float64 sum
    (divided by ``denominator`` for ``"mean"``) as a 0-d array of ``dtype``."""
    if reduction == "none":
        return _astype(per_sample, dtype)
    total = _sum(per_sample, dtype=_F64)
    return _map_blocks(
        _finish_block, total, denominator, reduction, dtype, dtype=dtype, meta=_meta(0, dtype)
    )


# --------------------------------------------------------------------------- logsumexp
def _logsumexp_partial(block: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    # Partials keep the reduced axis (dask concatenates them along it), in float64: merging
    # them adds no rounding of the compute dtype.
    return np.asarray(xr.logsumexp(block, axis[0], keepdims=True), _F64)


def _logsumexp_total(
    partials: np.ndarray, axis: tuple[int, ...], keepdims: bool, dtype: np.dtype
) -> np.ndarray | np.generic:
    lse: np.ndarray | np.generic = xr.logsumexp(partials, axis[0], keepdims=keepdims)
    return lse.astype(dtype)  # one rounding to the compute dtype


def logsumexp(x: da.Array | npt.ArrayLike, axis: int = -1, *, keepdims: bool = False) -> da.Array:
    """``log(sum(exp(x)))`` along ``axis``, as :func:`xent_rs.logsumexp`, lazily.

    Each block's logsumexp is computed by the kernel, and a row's are merged, in float64, by a
    tree reduction (the logsumexp of logsumexps).

    Parameters
    ----------
    x : dask.array.Array or array_like
        Real input, chunked along any axes.
    axis : int, optional
        The axis to reduce, default the last.
    keepdims : bool, optional
        Keep the reduced axis with length 1.

    Returns
    -------
    dask.array.Array
        ``x``'s shape without ``axis`` (0-d for 1-D ``x``); float32 for float16 input.

    Raises
    ------
    TypeError
        Unsupported dtype of ``x`` or a non-integer ``axis``.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs.dask as xd
    >>> x = da.from_array(np.array([[1000.0, 1000.0, 0.0, 0.0]]), chunks=2)
    >>> xd.logsumexp(x).compute(scheduler="synchronous")
    array([1000.69314718])
    """
    arr, stand_in = _float_input(x, "x")
    ax = _args.normalize_axis(axis, stand_in.ndim)
    keepdims = _args.check_keepdims(keepdims)
    dtype = _args.compute_dtype(arr.dtype)
    return _reduction(
        arr,
        _logsumexp_partial,
        functools.partial(_logsumexp_total, dtype=dtype),
        combine=_logsumexp_partial,  # a logsumexp of partial logsumexps is one too
        axis=ax,
        keepdims=keepdims,
        dtype=dtype,
        meta=_meta(arr.ndim - (not keepdims), dtype),
        concatenate=True,
    )


# --------------------------------------------------------------------------- class blocks
def _class_blocks(z: da.Array) -> da.Array:
    """``z`` (classes last) without empty blocks along the class axis, unless it has no
    classes: every block then has a maximum per row."""
    sizes = z.chunks[-1]
    if 0 not in sizes or z.shape[-1] == 0:
        return z
    return _rechunk(z, {z.ndim - 1: tuple(n for n in sizes if n)})


def _max_and_log_sum(x: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(m, s)`` per row of a non-empty class block (classes last), float64, from ``top``, the
    index of each row's maximum: the maximum and ``logsumexp(row) - m``, exact for a dominant
    maximum; ``s = 0`` where ``m`` is infinite (``m`` is then the logsumexp), nan with ``m``."""
    m = np.take_along_axis(x, top[..., None], axis=-1)[..., 0].astype(_F64)
    s = np.asarray(xr.cross_entropy(x, top, reduction="none"), _F64)
    return m, np.where(np.isinf(m), 0.0, s)


def _merged_logsumexp(m: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, L)`` with ``logsumexp(row) = shift + L``, from the ``(m, s)`` of a row's blocks
    (last axis). ``shift`` is the row maximum, 0 where it is not finite, as in the reference."""
    top = m.max(axis=-1)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore"):
        return shift, np.asarray(xr.logsumexp((m - shift[..., None]) + s, axis=-1))


def _gaps(shift: np.ndarray, log_sum: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``logsumexp(row) - logsumexp(block)`` per block (last axis), exact for a dominant block."""
    shift, log_sum = shift[..., None], log_sum[..., None]
    gap = (shift - m) + (log_sum - s)
    # A block whose maximum is infinite holds its row's infinities, and its ``own`` from the
    # kernel carries them (inf, or nan as IEEE says): its gap is 0, or nan if the row's
    # logsumexp is nan or -inf (a row of only -inf has no finite logsumexp to compare with).
    infinite_gap = np.where(shift + log_sum > -np.inf, 0.0, np.nan)
    return np.where(np.isinf(m), infinite_gap, gap)


# --------------------------------------------------------------------------- log_softmax
def _block_max_and_log_sum(x: np.ndarray) -> np.ndarray:
    return np.stack(_max_and_log_sum(x, np.argmax(x, axis=-1)), axis=-1)


def _block_merged_logsumexp(pairs: np.ndarray) -> np.ndarray:
    """``(shift, L)`` per row from the ``(m, s)`` of all its blocks, side by side."""
    pair = pairs.reshape(*pairs.shape[:-1], pairs.shape[-1] // 2, 2)
    return np.stack(_merged_logsumexp(pair[..., 0], pair[..., 1]), axis=-1)


def _row_logsumexp(z: da.Array) -> da.Array:
    """``(shift, L)`` per row of ``z`` (classes last, chunked anyhow), as one block along a last
    axis of 2."""
    batch_chunks = z.chunks[:-1]
    pairs = _map_blocks(
        _block_max_and_log_sum,
        z,
        chunks=(*batch_chunks, (2,) * z.numblocks[-1]),
        meta=_meta(z.ndim, _F64),
    )
    return _map_blocks(
        _block_merged_logsumexp,
        _rechunk(pairs, {z.ndim - 1: -1}),
        chunks=(*batch_chunks, (2,)),
        meta=_meta(z.ndim, _F64),
    )


def _minus_logsumexp(x: np.ndarray, lse: np.ndarray) -> np.ndarray:
    # As the reference: (x - shift) - L in float64, rounded once.
    result = x.astype(_F64)
    with np.errstate(invalid="ignore"):
        result -= lse[..., :1]
        result -= lse[..., 1:]
    return result.astype(x.dtype)


def log_softmax(x: da.Array | npt.ArrayLike, axis: int = -1) -> da.Array:
    """Logarithm of the softmax along ``axis``, as :func:`xent_rs.log_softmax`, lazily.

    With the class axis in one block, the kernel runs on each block; else a first pass merges
    each row's logsumexp from its blocks and a second computes ``x - logsumexp`` block by block.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Real input (logits), chunked along any axes.
    axis : int, optional
        The class axis, default the last.

    Returns
    -------
    dask.array.Array
        Same shape and chunks as ``x``; float16/bfloat16 inputs keep their dtype.

    Raises
    ------
    TypeError
        Unsupported dtype of ``x`` or a non-integer ``axis``.
    numpy.exceptions.AxisError
        ``axis`` out of range (or ``x`` is 0-d).

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs.dask as xd
    >>> x = da.from_array(np.array([[0.0, np.log(2.0), np.log(3.0), np.log(4.0)]]), chunks=2)
    >>> np.exp(xd.log_softmax(x).compute(scheduler="synchronous"))
    array([[0.1, 0.2, 0.3, 0.4]])
    """
    arr, stand_in = _float_input(x, "x")
    ax = _args.normalize_axis(axis, stand_in.ndim)
    meta = _meta(arr.ndim, arr.dtype)
    if arr.numblocks[ax] == 1:
        return _map_blocks(xr.log_softmax, arr, axis=ax, meta=meta)
    z = _class_blocks(_moveaxis(arr, ax, -1))
    result = _map_blocks(_minus_logsumexp, z, _row_logsumexp(z), meta=meta)
    return _moveaxis(result, -1, ax)


# --------------------------------------------------------------------------- cross_entropy
def _checked_targets(
    t: np.ndarray, n_classes: int, ignore_index: int, block_info: BlockInfo | None = None
) -> np.ndarray:
    """Class indices as int64, after checking them (the kernels of a class block only see the
    indices of their own classes)."""
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if bad.any():
        pos = _args.first_position(bad)
        raise _args.target_out_of_range(
            "target", int(t[pos]), _global_position(pos, block_info), n_classes, ignore_index
        )
    return t.astype(_INT64)


def _block_cross_entropy(
    x: np.ndarray,
    t: np.ndarray,
    *w: np.ndarray,
    kind: str,
    ignore_index: int,
    label_smoothing: float,
) -> np.ndarray:
    """Per-sample losses of a block holding all the classes (the last axis)."""
    return np.asarray(
        xr.cross_entropy(
            x,
            t[..., 0] if kind == "index" else t,
            weight=w[0] if w else None,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            reduction="none",
        )
    )


def _probability_terms(
    x: np.ndarray,
    t: np.ndarray,
    weight: np.ndarray | None,
    label_smoothing: float,
    n_classes: int,
    lost: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(coef, own)`` of a class block for probability targets (classes last)."""
    e = label_smoothing
    tp = t.astype(_args.compute_dtype(t.dtype))
    if e > 0:
        tp = tp * (1 - e) + e / n_classes
    coefs = tp if weight is None else tp * weight
    own = np.asarray(xr.cross_entropy(x, tp, weight=weight, reduction="none"), _F64)
    if lost.any():
        own[lost] = (np.inf * coefs[lost]).sum(axis=-1)
    return coefs.sum(axis=-1, dtype=_F64), own


def _index_terms(
    x: np.ndarray,
    t: np.ndarray,
    weight: np.ndarray | None,
    label_smoothing: float,
    n_classes: int,
    lost: np.ndarray,
    top: np.ndarray,
    ignore_index: int,
    first_class: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(coef, own)`` of a class block for index targets ``t`` (batch-shaped); the block holds
    classes ``first_class, first_class + 1, ...`` along its last axis, ``top`` is the index of
    each row's maximum."""
    e, size = label_smoothing, x.shape[-1]
    valid = t != ignore_index
    local = t - first_class
    here = valid & (local >= 0) & (local < size)
    local = np.where(here, local, -1)  # -1: ignored by this block's kernel call
    w_t = here * (1.0 if weight is None else weight[np.maximum(local, 0)].astype(_F64))
    picked = xr.cross_entropy(x, local, weight=weight, ignore_index=-1, reduction="none")
    picked = np.where(lost & here, w_t * np.inf, np.asarray(picked, _F64))
    coef, own = (1 - e) * w_t, (1 - e) * picked
    if e > 0:
        # sum_c w_c (lse_b - x_c): the kernel's smoothing term, alone with label_smoothing=1 (its
        # target, the maximum, is multiplied by 0: lse_b - x_top is finite, unlike at -inf).
        spread = size * xr.cross_entropy(
            x, top, weight=weight, label_smoothing=1.0, reduction="none"
        )
        w_sum = float(size if weight is None else weight.sum(dtype=_F64))
        w_inf = float(np.inf * w_sum if weight is None else (np.inf * weight).sum())
        spread = np.where(lost, w_inf, np.asarray(spread, _F64))
        coef = coef + np.where(valid, e / n_classes * w_sum, 0.0)
        own = own + np.where(valid, e / n_classes * spread, 0.0)
    return coef, own


def _block_stats(
    x: np.ndarray,
    t: np.ndarray,
    *w: np.ndarray,
    kind: str,
    ignore_index: int,
    label_smoothing: float,
    n_classes: int,
    block_info: BlockInfo | None = None,
) -> np.ndarray:
    """``(m, s, coef, own)`` per row of a class block (the module docstring says what they are),
    float64, along a new last axis."""
    weight = w[0] if w else None
    top = np.argmax(x, axis=-1)  # NaN counts as the maximum
    m, s = _max_and_log_sum(x, top)
    # Rows whose block is only -inf: the kernel's lse_b - x_c is -inf - -inf = nan, whereas the
    # row's finite logsumexp makes each class of the block infinitely unlikely: +inf (times the
    # coefficient, as IEEE says: nan for a coefficient 0). Their gap is 0 (see _gaps).
    lost = np.isneginf(m)
    with np.errstate(invalid="ignore"):
        if kind == "probs":
            coef, own = _probability_terms(x, t, weight, label_smoothing, n_classes, lost)
        else:
            first_class = 0 if block_info is None else block_info[0]["array-location"][-1][0]
            coef, own = _index_terms(
                x,
                t[..., 0],
                weight,
                label_smoothing,
                n_classes,
                lost,
                top,
                ignore_index,
                first_class,
            )
    return np.stack(np.broadcast_arrays(m, s, coef, own), axis=-1)


def _merge_stats(stats: np.ndarray, *t: np.ndarray, ignore_index: int) -> np.ndarray:
    """Per-row float64 losses from the ``(m, s, coef, own)`` of all of a row's class blocks."""
    st = stats.reshape(*stats.shape[:-1], stats.shape[-1] // _STATS, _STATS)
    m, s, coef, own = (st[..., i] for i in range(_STATS))
    shift, log_sum = _merged_logsumexp(m, s)
    with np.errstate(invalid="ignore"):
        gap = _gaps(shift, log_sum, m, s)
        # A block that weighs nothing adds nothing, even where the row's logsumexp is infinite.
        terms = np.where((coef == 0) & np.isinf(gap), 0.0, coef * gap)
        loss = (terms + own).sum(axis=-1)
    if t:  # index targets: ignored samples are 0, even where their logits are nan
        loss = np.where(t[0][..., 0] != ignore_index, loss, 0.0)
    return np.asarray(loss)


def _target_weights(t: np.ndarray, *w: np.ndarray, ignore_index: int) -> np.ndarray:
    """Per sample, the weight of its target class (0 if ignored): the mean's denominator."""
    target = t[..., 0]
    valid: np.ndarray = target != ignore_index
    if not w:
        return valid.astype(_F64)
    return np.where(valid, w[0][np.where(valid, target, 0)], 0.0).astype(_F64)


def cross_entropy(
    logits: da.Array | npt.ArrayLike,
    target: da.Array | npt.ArrayLike,
    *,
    axis: int = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> da.Array:
    """Cross-entropy from unnormalised logits, as :func:`xent_rs.cross_entropy`, lazily.

    ``logits`` may be chunked along the class axis too: the module docstring says how the blocks
    of a row are merged.

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Unnormalised log-probabilities, with the classes along ``axis``.
    target : dask.array.Array or array_like
        Integer class indices of ``logits``' shape without ``axis`` (entries equal to
        ``ignore_index`` are skipped), or floating class probabilities of ``logits``' shape;
        rechunked like ``logits``.
    axis : int, optional
        The class axis, default the last.
    weight : array_like, optional
        Per-class weights of shape ``(C,)`` (a dask array is computed: it is small).
    ignore_index : int, optional
        Index target value that contributes nothing, default -100.
    label_smoothing : float, optional
        In ``[0, 1]``, default 0.
    reduction : {"mean", "sum", "none"}, optional
        ``"none"``: per-sample losses (``logits``' shape without ``axis``); ``"sum"``; ``"mean"``:
        divided by the summed weights of the non-ignored index targets, or by the number of
        samples for probability targets (NaN for an empty batch or all targets ignored).

    Returns
    -------
    dask.array.Array
        The per-sample losses, or a 0-d array; float32 for float16 logits.

    Raises
    ------
    TypeError
        Unsupported dtype or type of an argument.
    ValueError
        Mismatched shapes, unknown ``reduction``, ``label_smoothing`` outside ``[0, 1]``, bad
        ``weight``; a class index out of range raises when the result is computed.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Examples
    --------
    >>> import dask.array as da, numpy as np, xent_rs.dask as xd
    >>> logits = da.zeros((6, 4), chunks=(3, 2))
    >>> target = da.from_array(np.array([0, 1, 2, 3, -100, 1]), chunks=3)
    >>> loss = xd.cross_entropy(logits, target, reduction="none")
    >>> loss.compute(scheduler="synchronous").round(4)
    array([1.3863, 1.3863, 1.3863, 1.3863, 0.    , 1.3863])
    >>> print(xd.cross_entropy(logits, target).compute(scheduler="synchronous").round(4))
    1.3863
    """
    x, ax, reduction, e, ignore_index, kind, t, w = _class_args(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction
    )
    z = _class_blocks(_moveaxis(x, ax, -1))
    n_classes, batch_chunks = z.shape[-1], z.chunks[:-1]
    dtype = _args.compute_dtype(x.dtype)
    if kind == "index":  # batch-shaped, with a last axis of 1 to line up with z's class axis
        checked = _map_blocks(
            _checked_targets, t, n_classes, ignore_index, meta=_meta(t.ndim, _INT64)
        )
        t = _rechunk(checked, batch_chunks)[..., None]
    else:
        t = _rechunk(_moveaxis(t, ax, -1), z.chunks)
    weights = [] if w is None else [_from_array(w, chunks=(z.chunks[-1],))]
    options = {"kind": kind, "ignore_index": ignore_index, "label_smoothing": e}
    rows_meta = _meta(z.ndim - 1, _F64)
    if z.numblocks[-1] == 1:
        per_sample = _map_blocks(
            _block_cross_entropy,
            z,
            t,
            *weights,
            drop_axis=-1,
            meta=_meta(z.ndim - 1, dtype),
            **options,
        )
    else:
        stats = _map_blocks(
            _block_stats,
            z,
            t,
            *weights,
            n_classes=n_classes,
            chunks=(*batch_chunks, (_STATS,) * z.numblocks[-1]),
            meta=_meta(z.ndim, _F64),
            **options,
        )
        per_sample = _map_blocks(
            _merge_stats,
            _rechunk(stats, {z.ndim - 1: -1}),
            *([t] if kind == "index" else []),
            ignore_index=ignore_index,
            drop_axis=-1,
            meta=rows_meta,
        )
    if reduction != "mean":
        return _reduce(per_sample, 0, reduction, dtype)
    if kind == "probs":
        return _reduce(per_sample, math.prod(per_sample.shape), reduction, dtype)
    whole_weights = [_rechunk(weights[0], -1)] if weights else []
    target_weights = _map_blocks(
        _target_weights, t, *whole_weights, ignore_index=ignore_index, drop_axis=-1, meta=rows_meta
    )
    return _reduce(per_sample, _sum(target_weights), reduction, dtype)


# --------------------------------------------------------------------------- binary losses
def _block_binary(
    x: np.ndarray,
    t: np.ndarray,
    *weights: np.ndarray,
    weight_names: Sequence[str],
    loss: Callable[..., Any],
    block_info: BlockInfo | None = None,
) -> np.ndarray:
    kwargs = dict(zip(weight_names, weights, strict=True))
    try:
        return np.asarray(loss(x, t, reduction="none", **kwargs))
    except ValueError:  # probabilities outside [0, 1]: say where in the whole array
        if loss is not xr.binary_cross_entropy:
            raise
        with np.errstate(invalid="ignore"):
            bad = (x < 0) | (x > 1)
        if not bad.any():
            raise
        pos = _args.first_position(bad)
        raise _args.binary_probs_out_of_range(
            "probs", x[pos], _global_position(pos, block_info)
        ) from None


def _broadcast_like(a: da.Array, like: da.Array) -> da.Array:
    """``a`` broadcast to ``like``'s shape and chunks, lazily: each block a zero-stride view of
    ``a``'s (which the kernels read as they are), never a copy of ``like``'s size."""
    lead = like.ndim - a.ndim
    own_chunks = tuple(
        (1,) if n == 1 else chunks for n, chunks in zip(a.shape, like.chunks[lead:], strict=True)
    )
    return _broadcast_to(_rechunk(a, own_chunks), like.shape, chunks=like.chunks)


def _binary(
    x: Any,
    target: Any,
    weight: Any,
    pos_weight: Any,
    reduction: Any,
    name: str,
    loss: Callable[..., Any],
) -> da.Array:
    inputs, x_stand_in = _float_input(x, name)
    targets, t_stand_in = _float_input(target, "target")
    extras = {"weight": weight, "pos_weight": pos_weight}
    given = {key: _float_input(value, key) for key, value in extras.items() if value is not None}
    stand_ins = {key: stand_in for key, (_, stand_in) in given.items()}
    *_, reduction = _args.binary_args(
        x_stand_in,
        t_stand_in,
        stand_ins.get("weight"),
        stand_ins.get("pos_weight"),
        reduction,
        name,
    )
    weights = [_broadcast_like(a, inputs) for a, _ in given.values()]
    dtype = _args.compute_dtype(inputs.dtype)
    per_element = _map_blocks(
        _block_binary,
        inputs,
        _rechunk(targets, inputs.chunks),
        *weights,
        weight_names=tuple(given),
        loss=loss,
        meta=_meta(inputs.ndim, dtype),
    )
    return _reduce(per_element, math.prod(inputs.shape), reduction, dtype)


def binary_cross_entropy(
    probs: da.Array | npt.ArrayLike,
    target: da.Array | npt.ArrayLike,
    *,
    weight: da.Array | npt.ArrayLike | None = None,
    reduction: str = "mean",
) -> da.Array:
    """Binary cross-entropy, as :func:`xent_rs.binary_cross_entropy`, lazily.

    Parameters
    ----------
    probs : dask.array.Array or array_like
        Probabilities in ``[0, 1]``, chunked anyhow.
    target : dask.array.Array or array_like
        Targets of ``probs``' shape (rechunked like ``probs``).
    weight : dask.array.Array or array_like, optional
        Elementwise weights, broadcast to ``probs``' shape.
    reduction : {"mean", "sum", "none"}, optional
        ``"none"`` keeps ``probs``' shape; ``"mean"`` averages over all elements.

    Returns
    -------
    dask.array.Array
        The loss; float32 for float16 input.

    Raises
    ------
    TypeError
        Unsupported dtype of an argument.
    ValueError
        Mismatched shapes or unknown ``reduction``; a probability outside ``[0, 1]`` raises
        when the result is computed.

    Examples
    --------
    >>> import dask.array as da, xent_rs.dask as xd
    >>> probs = da.from_array([[0.5, 1.0], [0.25, 0.75]], chunks=1)
    >>> target = da.from_array([[1.0, 1.0], [0.0, 1.0]], chunks=1)
    >>> loss = xd.binary_cross_entropy(probs, target, reduction="sum")
    >>> print(loss.compute(scheduler="synchronous").round(6))
    1.268511
    """
    return _binary(probs, target, weight, None, reduction, "probs", xr.binary_cross_entropy)


def binary_cross_entropy_with_logits(
    logits: da.Array | npt.ArrayLike,
    target: da.Array | npt.ArrayLike,
    *,
    weight: da.Array | npt.ArrayLike | None = None,
    pos_weight: da.Array | npt.ArrayLike | None = None,
    reduction: str = "mean",
) -> da.Array:
    """Binary cross-entropy of ``sigmoid(logits)``, as
    :func:`xent_rs.binary_cross_entropy_with_logits`, lazily.

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Unnormalised log-odds, chunked anyhow.
    target : dask.array.Array or array_like
        Targets of ``logits``' shape (rechunked like ``logits``).
    weight : dask.array.Array or array_like, optional
        Elementwise weights, broadcast to ``logits``' shape.
    pos_weight : dask.array.Array or array_like, optional
        Weight of the positive term, broadcast over the last axis (e.g. shape ``(C,)``).
    reduction : {"mean", "sum", "none"}, optional
        ``"none"`` keeps ``logits``' shape; ``"mean"`` averages over all elements.

    Returns
    -------
    dask.array.Array
        The loss; float32 for float16 input.

    Raises
    ------
    TypeError
        Unsupported dtype of an argument.
    ValueError
        Mismatched shapes or unknown ``reduction``.

    Examples
    --------
    >>> import dask.array as da, xent_rs.dask as xd
    >>> logits = da.zeros((4, 2), chunks=(2, 1))
    >>> loss = xd.binary_cross_entropy_with_logits(logits, da.ones((4, 2)), pos_weight=[1.0, 2.0])
    >>> print(loss.compute(scheduler="synchronous").round(6))
    1.039721
    """
    return _binary(
        logits, target, weight, pos_weight, reduction, "logits", xr.binary_cross_entropy_with_logits
    )
