"""Pure-NumPy reference implementation of ``xent_rs``: the readable specification.

Every function follows ``torch.nn.functional`` (with NumPy's ``axis`` in place of ``dim``),
validates its arguments with :mod:`xent_rs._args` (so errors match the Rust path exactly),
computes in float64 with the class axis moved last, and casts the result to the output dtype:
float32 and float64 inputs give results in their own dtype; float16 and bfloat16 inputs give
``log_softmax``/``softmax`` in their own dtype and everything else in float32. Integer and bool
inputs are float64. No input is modified and no floating-point warning is ever emitted: NaN and
infinities propagate as IEEE arithmetic says.

The signatures here are the typed API of :mod:`xent_rs`, whichever backend runs it, and so are
the docstrings, whose examples assume ``import numpy as np`` and ``import xent_rs as xr``:

>>> import numpy as np, xent_rs as xr
>>> x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
>>> np.allclose(xr.reference.softmax(x), xr.softmax(x))
True
"""

from __future__ import annotations

import os
from typing import Any, Literal, SupportsIndex, TypeVar, overload

import numpy as np
import numpy.typing as npt

from . import _args

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "categorical_cross_entropy",
    "cross_entropy",
    "cross_entropy_with_grad",
    "entropy",
    "get_num_threads",
    "kl_divergence",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "set_num_threads",
    "softmax",
]

# Types of the public signatures. The losses' overloads type the result by reduction: "mean"
# and "sum" (the default) give a NumPy scalar, "none" an array, a _Reduction variable either.
_Reduction = Literal["none", "mean", "sum"]
_FloatArray = npt.NDArray[np.floating[Any]]
_FloatScalar = np.floating[Any]
_FloatArrayT = TypeVar("_FloatArrayT", bound=_FloatArray)  # softmax's out=, returned as is

Loss = np.ndarray | np.generic  # per-sample array for reduction="none", else a NumPy scalar


# --------------------------------------------------------------------------- helpers
def _class_last(x: npt.ArrayLike, axis: Any, name: str) -> tuple[np.ndarray, int, np.ndarray]:
    """``(x as a float array, axis normalised, float64 copy of x with the class axis last)``."""
    xa = _args.as_float_array(x, name)
    ax = _args.normalize_axis(axis, xa.ndim)
    return xa, ax, np.moveaxis(xa, ax, -1).astype(np.float64)


def _shift_and_log_sum(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, log(sum(exp(z - shift))))`` along the last axis, keepdims, like torch.logsumexp.

    ``shift`` is the row maximum, replaced by 0 where it is not finite (rows with NaN, +inf or
    only -inf), so that ``logsumexp = shift + log_sum`` is NaN, +inf or -inf respectively.
    """
    m = np.max(z, axis=-1, keepdims=True, initial=-np.inf)
    shift = np.where(np.isfinite(m), m, 0.0)
    terms = np.exp(z - shift)
    # With a unique maximum (term exactly 1), log(1 + rest) as log1p(rest): a tiny rest keeps
    # its digits (the log-probability of a confident prediction).
    is_max = z == m
    count = is_max.sum(axis=-1, keepdims=True)
    rest = np.where(is_max, 0.0, terms).sum(axis=-1, keepdims=True)
    unique = (count == 1) & np.isfinite(m)
    return shift, np.where(unique, np.log1p(rest), np.log(terms.sum(axis=-1, keepdims=True)))


def _log_softmax_last(z: np.ndarray) -> np.ndarray:
    shift, log_sum = _shift_and_log_sum(z)
    log_p: np.ndarray = (z - shift) - log_sum  # (annotated: NumPy types this as Any)
    return log_p


def _into(result: np.ndarray, shape: tuple[int, ...], out: Any) -> np.ndarray:
    """Return ``result``, or copy it into ``out`` after checking ``out``'s type, shape, dtype."""
    if out is None:
        return result
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != result.dtype:
        raise ValueError(
            f"out: expected an array of shape {shape} and dtype {result.dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out: array is read-only")
    out[...] = result
    return out


def _class_args(
    x: Any,
    target: Any,
    axis: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    name: str,
    label_smoothing: Any = 0.0,
) -> tuple[np.ndarray, int, str, float, int, str, np.ndarray, np.ndarray]:
    """``_args.class_args`` with probability targets as float64, class axis last, and weights
    as float64 (ones when absent)."""
    xa, ax, reduction, e, ignore_index, kind, t, w = _args.class_args(
        x, target, axis, weight, ignore_index, reduction, name, label_smoothing
    )
    if kind == "probs":
        t = np.moveaxis(t, ax, -1).astype(np.float64)
    w = np.ones(xa.shape[ax]) if w is None else w.astype(np.float64)
    return xa, ax, reduction, e, ignore_index, kind, t, w


def _index_rows(t: np.ndarray, n_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, t[valid])``: the mask of non-ignored samples and their class indices."""
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= n_classes))
    if bad.any():
        pos = _args.first_position(bad)
        raise _args.target_out_of_range("target", int(t[pos]), pos, n_classes, ignore_index)
    return valid, t[valid]


def _nll(
    logp: np.ndarray, kind: str, t: np.ndarray, w: np.ndarray, ignore_index: int, e: float = 0.0
) -> tuple[np.ndarray, float]:
    """Per-sample ``-sum_c w_c y_c logp_c`` (y = label-smoothed target) and the mean's denominator.

    Index targets: ``(1-e) * w_t * (-logp_t) + e/C * sum_c w_c (-logp_c)``, 0 for ignored
    samples, denominator ``sum(w_t)`` over non-ignored samples. Probability targets:
    ``t' = (1-e) t + e/C``, ``-sum_c w_c t'_c logp_c``, denominator the number of samples.
    """
    n_classes = logp.shape[-1]
    e_c = e / n_classes if n_classes else 0.0
    if kind == "probs":
        tp = t * (1 - e) + e_c if e > 0 else t
        per = -(logp * tp * w).sum(axis=-1)
        return per, float(per.size)
    valid, tv = _index_rows(t, n_classes, ignore_index)
    lp, wt = logp[valid], w[tv]
    per_valid = -wt * lp[np.arange(tv.size), tv]
    if e > 0:
        per_valid = (1 - e) * per_valid + e_c * -(lp * w).sum(axis=-1)
    per = np.zeros(t.shape)
    per[valid] = per_valid
    return per, float(wt.sum())


def _reduce(per: np.ndarray, denominator: float, reduction: str, dtype: np.dtype) -> Loss:
    if reduction == "none":
        return np.asarray(per, dtype=dtype)  # 0-d inputs give a 0-d array, not a scalar
    return _args.finish_reduction(float(per.sum()), denominator, reduction, dtype)


def _softplus(z: np.ndarray) -> np.ndarray:
    softplus: np.ndarray = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    return softplus


# --------------------------------------------------------------------------- softmax family
@overload
def log_softmax(x: npt.ArrayLike, axis: SupportsIndex = ..., *, out: None = ...) -> _FloatArray: ...
@overload
def log_softmax(
    x: npt.ArrayLike, axis: SupportsIndex = ..., *, out: _FloatArrayT
) -> _FloatArrayT: ...
def log_softmax(
    x: npt.ArrayLike, axis: SupportsIndex = -1, *, out: _FloatArray | None = None
) -> _FloatArray:
    """Logarithm of the softmax along ``axis``: ``x - logsumexp(x)``, computed stably.

    A row containing NaN gives NaN; a row whose maximum is +inf gives -inf for its finite
    entries and NaN for its +inf entries; a row of only -inf gives NaN (like torch.logsumexp).

    Parameters
    ----------
    x : array_like
        Real input (logits); integer and bool arrays are converted to float64.
    axis : int, optional
        The class axis, default the last.
    out : numpy.ndarray, optional
        Array of ``x``'s shape and the output dtype to write into (it may be ``x`` itself).

    Returns
    -------
    numpy.ndarray
        Same shape as ``x``; float16/bfloat16 inputs keep their dtype. ``out`` if given.

    Raises
    ------
    TypeError
        Unsupported dtype of ``x``, ``out`` not an ndarray, or a non-integer ``axis``.
    ValueError
        ``out`` of the wrong shape or dtype, or read-only.
    numpy.exceptions.AxisError
        ``axis`` out of range (or ``x`` is 0-d).

    Examples
    --------
    >>> xr.log_softmax([0.0, 0.0])
    array([-0.69314718, -0.69314718])
    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> y = xr.log_softmax(x, out=x)  # in place
    >>> y is x, x
    (True, array([[-2.40760596, -1.40760596, -0.40760596]]))
    """
    xa, ax, z = _class_last(x, axis, "x")
    with np.errstate(all="ignore"):
        result = np.moveaxis(_log_softmax_last(z), -1, ax).astype(xa.dtype)
    return _into(result, xa.shape, out)


@overload
def softmax(x: npt.ArrayLike, axis: SupportsIndex = ..., *, out: None = ...) -> _FloatArray: ...
@overload
def softmax(x: npt.ArrayLike, axis: SupportsIndex = ..., *, out: _FloatArrayT) -> _FloatArrayT: ...
def softmax(
    x: npt.ArrayLike, axis: SupportsIndex = -1, *, out: _FloatArray | None = None
) -> _FloatArray:
    """Softmax along ``axis``: ``exp(log_softmax(x, axis))``.

    Parameters
    ----------
    x : array_like
        Real input (logits); integer and bool arrays are converted to float64.
    axis : int, optional
        The class axis, default the last.
    out : numpy.ndarray, optional
        Array of ``x``'s shape and the output dtype to write into (it may be ``x`` itself).

    Returns
    -------
    numpy.ndarray
        Same shape as ``x``, rows summing to 1; float16/bfloat16 inputs keep their dtype.

    Raises
    ------
    TypeError
        Unsupported dtype of ``x``, ``out`` not an ndarray, or a non-integer ``axis``.
    ValueError
        ``out`` of the wrong shape or dtype, or read-only.
    numpy.exceptions.AxisError
        ``axis`` out of range (or ``x`` is 0-d).

    Examples
    --------
    >>> xr.softmax([[1.0, 1.0], [0.0, np.log(3.0)]])
    array([[0.5 , 0.5 ],
           [0.25, 0.75]])
    >>> xr.softmax(np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float16), axis=0)
    array([[0.5, 0.5],
           [0.5, 0.5]], dtype=float16)
    """
    xa, ax, z = _class_last(x, axis, "x")
    with np.errstate(all="ignore"):
        result = np.moveaxis(np.exp(_log_softmax_last(z)), -1, ax).astype(xa.dtype)
    return _into(result, xa.shape, out)


@overload
def logsumexp(
    x: npt.ArrayLike, axis: SupportsIndex = ..., *, keepdims: Literal[False] = ...
) -> _FloatArray | _FloatScalar: ...
@overload
def logsumexp(
    x: npt.ArrayLike, axis: SupportsIndex = ..., *, keepdims: Literal[True]
) -> _FloatArray: ...
@overload
def logsumexp(
    x: npt.ArrayLike, axis: SupportsIndex = ..., *, keepdims: bool
) -> _FloatArray | _FloatScalar: ...
def logsumexp(
    x: npt.ArrayLike, axis: SupportsIndex = -1, *, keepdims: bool = False
) -> _FloatArray | _FloatScalar:
    """``log(sum(exp(x)))`` along ``axis``, stable for any magnitude.

    NaN in a row gives NaN, +inf gives +inf, a row of only -inf (or an empty row) gives -inf.

    Parameters
    ----------
    x : array_like
        Real input.
    axis : int, optional
        The axis to reduce, default the last.
    keepdims : bool, optional
        Keep the reduced axis with length 1.

    Returns
    -------
    numpy.ndarray or numpy.floating
        ``x``'s shape without ``axis``, a NumPy scalar for 1-D ``x`` (with ``keepdims``,
        ``axis`` kept with length 1); float32 for float16 input.

    Raises
    ------
    TypeError
        Unsupported dtype of ``x`` or a non-integer ``axis``.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Examples
    --------
    >>> print(xr.logsumexp([1000.0, 1000.0]).round(6))  # no overflow
    1000.693147
    >>> xr.logsumexp([[0.0, 0.0], [1.0, 1.0]], keepdims=True)
    array([[0.69314718],
           [1.69314718]])
    """
    xa, ax, z = _class_last(x, axis, "x")
    with np.errstate(all="ignore"):
        shift, log_sum = _shift_and_log_sum(z)
        lse = (shift + log_sum)[..., 0].astype(_args.compute_dtype(xa.dtype))
    return np.expand_dims(lse, ax) if _args.check_keepdims(keepdims) else lse[()]


def entropy(p: npt.ArrayLike, axis: SupportsIndex = -1) -> _FloatArray | _FloatScalar:
    """Shannon entropy ``-sum p log p`` in nats along ``axis``, without normalising ``p``.

    Elementwise exactly ``scipy.special.entr``: ``-p log p`` for ``p > 0``, 0 for ``p == 0``,
    ``-inf`` for ``p < 0`` and NaN for NaN, then summed.

    Parameters
    ----------
    p : array_like
        Probabilities.
    axis : int, optional
        The axis to reduce, default the last.

    Returns
    -------
    numpy.ndarray or numpy.floating
        ``p``'s shape without ``axis`` (a NumPy scalar for 1-D ``p``); float32 for float16 input.

    Raises
    ------
    TypeError
        Unsupported dtype of ``p`` or a non-integer ``axis``.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Examples
    --------
    >>> print(xr.entropy([0.5, 0.5, 0.0]).round(6))  # 0 log 0 = 0
    0.693147
    >>> xr.entropy([[1.0, 0.0], [0.25, 0.75]])
    array([0.        , 0.56233514])
    """
    pa, _, z = _class_last(p, axis, "p")
    with np.errstate(all="ignore"):
        entr = np.select([np.isnan(z), z > 0, z == 0], [z, -z * np.log(z), 0.0], -np.inf)
        h: _FloatArray | _FloatScalar = entr.sum(axis=-1).astype(_args.compute_dtype(pa.dtype))[()]
        return h


def kl_divergence(
    p: npt.ArrayLike, q: npt.ArrayLike, axis: SupportsIndex = -1
) -> _FloatArray | _FloatScalar:
    """Kullback-Leibler divergence ``sum p log(p / q)`` in nats along ``axis``.

    Elementwise exactly ``scipy.special.rel_entr``: ``p log(p/q)`` for ``p > 0, q > 0``, 0 for
    ``p == 0, q >= 0``, NaN if either is NaN and ``+inf`` otherwise, then summed.

    Parameters
    ----------
    p, q : array_like
        Distributions; their shapes are broadcast together.
    axis : int, optional
        The axis to reduce, default the last.

    Returns
    -------
    numpy.ndarray or numpy.floating
        The broadcast shape without ``axis`` (a NumPy scalar for 1-D inputs); float32 unless an
        input is float64.

    Raises
    ------
    TypeError
        Unsupported dtype of ``p`` or ``q``, or a non-integer ``axis``.
    ValueError
        Shapes of ``p`` and ``q`` that do not broadcast.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Examples
    --------
    >>> print(xr.kl_divergence([0.5, 0.5], [0.25, 0.75]).round(6))
    0.143841
    >>> xr.kl_divergence([[0.5, 0.5], [1.0, 0.0]], [0.5, 0.5])  # q broadcast over the rows
    array([0.        , 0.69314718])
    """
    pb, qb, ax = _args.kl_args(p, q, axis)
    P, Q = (np.moveaxis(a, ax, -1).astype(np.float64) for a in (pb, qb))
    dtype = _args.compute_dtype(pb.dtype)
    with np.errstate(all="ignore"):
        rel = np.select(
            [np.isnan(P) | np.isnan(Q), (P > 0) & (Q > 0), (P == 0) & (Q >= 0)],
            # log p - log q, not log(p / q): the ratio overflows for tiny (subnormal) q.
            [np.nan, P * (np.log(P) - np.log(Q)), 0.0],
            np.inf,
        )
        kl: _FloatArray | _FloatScalar = rel.sum(axis=-1).astype(dtype)[()]
        return kl


# --------------------------------------------------------------------------- categorical losses
_CATEGORICAL_DOC = """
    Parameters
    ----------
    {x} : array_like
        {x_doc}, with the classes along ``axis``.
    target : array_like
        Integer class indices of ``{x}``'s shape without ``axis`` (entries equal to
        ``ignore_index`` are skipped), or floating class probabilities of ``{x}``'s shape.
    axis : int, optional
        The class axis, default the last.
    weight : array_like, optional
        Per-class weights of shape ``(C,)``.
    ignore_index : int, optional
        Index target value that contributes nothing, default -100.
    reduction : {{"mean", "sum", "none"}}, optional
        ``"none"``: per-sample losses (``{x}``'s shape without ``axis``); ``"sum"``; ``"mean"``:
        divided by the summed weights of the non-ignored index targets, or by the number of
        samples for probability targets (NaN for an empty batch).

    Raises
    ------
    TypeError
        Unsupported dtype or type of an argument.
    ValueError
        Mismatched shapes, unknown ``reduction``, bad ``weight``, an out-of-range class index.
    numpy.exceptions.AxisError
        ``axis`` out of range.
"""


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
    xa, ax, reduction, e, ignore_index, kind, t, w = _class_args(
        logits, target, axis, weight, ignore_index, reduction, "logits", label_smoothing
    )
    z = np.moveaxis(xa, ax, -1).astype(np.float64)
    with np.errstate(all="ignore"):
        logp = _log_softmax_last(z)
        per, denominator = _nll(logp, kind, t, w, ignore_index, e)
        loss = _reduce(per, denominator, reduction, _args.compute_dtype(xa.dtype))
        if not with_grad:
            return loss, None
        divisor = np.float64(denominator if reduction == "mean" else 1.0)
        s = np.exp(logp)  # softmax
        e_c = e / z.shape[-1] if z.shape[-1] else 0.0
        if kind == "probs":
            tp = t * (1 - e) + e_c if e > 0 else t
            grad = ((tp * w).sum(axis=-1, keepdims=True) * s - w * tp) / divisor
        else:
            valid, tv = _index_rows(t, z.shape[-1], ignore_index)
            rows = np.arange(tv.size)
            d = s[valid]
            d[rows, tv] -= 1.0  # softmax - onehot
            g = (1 - e) * w[tv][:, None] * d
            if e > 0:
                g = g + e_c * (w.sum() * s[valid] - w)
            grad = np.zeros_like(s)
            grad[valid] = g / divisor
        return loss, np.moveaxis(grad, -1, ax).astype(xa.dtype)


@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    label_smoothing: float = ...,
    reduction: Literal["mean", "sum"] = ...,
) -> _FloatScalar: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    label_smoothing: float = ...,
    reduction: Literal["none"],
) -> _FloatArray: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    label_smoothing: float = ...,
    reduction: _Reduction,
) -> _FloatArray | _FloatScalar: ...
def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Loss:
    """Cross-entropy from unnormalised logits, exactly ``torch.nn.functional.cross_entropy``.

    Per sample, index target ``t``: ``(1-e) w_t (lse - x_t) + e/C sum_c w_c (lse - x_c)`` with
    ``lse = logsumexp(x)`` and ``e = label_smoothing``. Probability target ``t``:
    ``sum_c w_c t'_c (lse - x_c)`` with ``t' = (1-e) t + e/C``.

    {params}    label_smoothing : float, optional
        In ``[0, 1]``, default 0.

    Returns
    -------
    numpy.floating or numpy.ndarray
        A NumPy scalar for ``"mean"`` and ``"sum"``, the per-sample losses for ``"none"``;
        float32 for float16 logits.

    {raises}    Examples
    --------
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> print(xr.cross_entropy(logits, [0, 2]).round(6))
    0.669962
    >>> xr.cross_entropy(logits, [0, 2], reduction="none")
    array([0.2413113 , 1.09861229])
    >>> print(xr.cross_entropy(logits, [0, -100]).round(6))  # -100: ignored
    0.241311
    >>> print(xr.cross_entropy(logits, [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]).round(6))  # soft
    0.669962
    >>> print(xr.cross_entropy(logits, [0, 2], label_smoothing=0.1).round(6))
    0.744962
    """
    return _cross_entropy(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction, False
    )[0]


@overload
def cross_entropy_with_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    label_smoothing: float = ...,
    reduction: Literal["mean", "sum"] = ...,
) -> tuple[_FloatScalar, _FloatArray]: ...
@overload
def cross_entropy_with_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    label_smoothing: float = ...,
    reduction: Literal["none"],
) -> tuple[_FloatArray, _FloatArray]: ...
@overload
def cross_entropy_with_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    label_smoothing: float = ...,
    reduction: _Reduction,
) -> tuple[_FloatArray | _FloatScalar, _FloatArray]: ...
def cross_entropy_with_grad(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: SupportsIndex = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> tuple[Loss, np.ndarray]:
    """:func:`cross_entropy` and its gradient with respect to ``logits``.

    For index targets the gradient of a sample is
    ``(1-e) w_t (softmax - onehot(t)) + e/C (sum(w) softmax - w)`` (0 for ignored samples); for
    probability targets ``sum_c(w_c t'_c) softmax - w t'``; divided by the mean's denominator
    for ``reduction="mean"``. For ``"none"`` it is the gradient of the sum of the losses.

    {params}    label_smoothing : float, optional
        In ``[0, 1]``, default 0.

    Returns
    -------
    loss : numpy.floating or numpy.ndarray
        As :func:`cross_entropy`.
    grad : numpy.ndarray
        ``d loss / d logits``, of ``logits``' shape and dtype.

    {raises}    Examples
    --------
    >>> loss, grad = xr.cross_entropy_with_grad([[0.0, 0.0]], [1])
    >>> print(loss.round(6))
    0.693147
    >>> grad
    array([[ 0.5, -0.5]])
    """
    loss, grad = _cross_entropy(
        logits, target, axis, weight, ignore_index, label_smoothing, reduction, True
    )
    assert grad is not None
    return loss, grad


@overload
def nll_loss(
    log_probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    reduction: Literal["mean", "sum"] = ...,
) -> _FloatScalar: ...
@overload
def nll_loss(
    log_probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    reduction: Literal["none"],
) -> _FloatArray: ...
@overload
def nll_loss(
    log_probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    reduction: _Reduction,
) -> _FloatArray | _FloatScalar: ...
def nll_loss(
    log_probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = -1,
    weight: npt.ArrayLike | None = None,
    ignore_index: SupportsIndex = -100,
    reduction: str = "mean",
) -> Loss:
    """Negative log-likelihood, ``torch.nn.functional.nll_loss``: ``-w_t log_probs_t`` per sample.

    Probability targets give ``-sum_c w_c t_c log_probs_c`` (mean over the samples).

    {params}
    Returns
    -------
    numpy.floating or numpy.ndarray
        A NumPy scalar for ``"mean"`` and ``"sum"``, the per-sample losses for ``"none"``;
        float32 for float16 input.

    {raises}    Examples
    --------
    >>> log_probs = np.log([[0.5, 0.5], [0.25, 0.75]])
    >>> print(xr.nll_loss(log_probs, [0, 1], reduction="sum").round(6))
    0.980829
    >>> xr.nll_loss(log_probs, [0, 1], reduction="none")
    array([0.69314718, 0.28768207])
    """
    xa, ax, reduction, _, ignore_index, kind, t, w = _class_args(
        log_probs, target, axis, weight, ignore_index, reduction, "log_probs"
    )
    z = np.moveaxis(xa, ax, -1).astype(np.float64)
    with np.errstate(all="ignore"):
        per, denominator = _nll(z, kind, t, w, ignore_index)
        return _reduce(per, denominator, reduction, _args.compute_dtype(xa.dtype))


@overload
def categorical_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    eps: float | None = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    reduction: Literal["mean", "sum"] = ...,
) -> _FloatScalar: ...
@overload
def categorical_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    eps: float | None = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    reduction: Literal["none"],
) -> _FloatArray: ...
@overload
def categorical_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = ...,
    eps: float | None = ...,
    weight: npt.ArrayLike | None = ...,
    ignore_index: SupportsIndex = ...,
    reduction: _Reduction,
) -> _FloatArray | _FloatScalar: ...
def categorical_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    axis: SupportsIndex = -1,
    eps: float | None = None,
    weight: npt.ArrayLike | None = None,
    ignore_index: SupportsIndex = -100,
    reduction: str = "mean",
) -> Loss:
    """Cross-entropy of predicted probabilities: ``-sum_k w_k y_k log clip(p_k, eps, 1 - eps)``.

    ``y`` is the one-hot encoding of index targets or the probability target itself; rows of
    ``probs`` are not renormalised (scikit-learn's ``log_loss`` for normalised rows).

    {params}    eps : float, optional
        Clipping bound in ``[0, 0.5)``; default ``np.finfo(dtype).eps`` of the compute dtype
        (float32 for float16 input).

    Returns
    -------
    numpy.floating or numpy.ndarray
        A NumPy scalar for ``"mean"`` and ``"sum"``, the per-sample losses for ``"none"``;
        float32 for float16 input.

    {raises}    Examples
    --------
    >>> probs = [[0.5, 0.5], [0.0, 1.0]]
    >>> print(xr.categorical_cross_entropy(probs, [0, 1]).round(6))
    0.346574
    >>> xr.categorical_cross_entropy(probs, [0, 0], eps=1e-7, reduction="none")  # log(1e-7)
    array([ 0.69314718, 16.11809565])
    """
    xa, ax, reduction, _, ignore_index, kind, t, w = _class_args(
        probs, target, axis, weight, ignore_index, reduction, "probs"
    )
    dtype = _args.compute_dtype(xa.dtype)
    eps = _args.check_eps(eps, dtype)
    z = np.moveaxis(xa, ax, -1).astype(np.float64)
    with np.errstate(all="ignore"):
        logp = np.log(np.clip(z, float(eps), 1.0 - float(eps)))
        per, denominator = _nll(logp, kind, t, w, ignore_index)
        return _reduce(per, denominator, reduction, dtype)


for _f, _x, _x_doc in [
    (cross_entropy, "logits", "Unnormalised log-probabilities"),
    (cross_entropy_with_grad, "logits", "Unnormalised log-probabilities"),
    (nll_loss, "log_probs", "Log-probabilities"),
    (categorical_cross_entropy, "probs", "Probabilities"),
]:
    _params, _raises = _CATEGORICAL_DOC.format(x=_x, x_doc=_x_doc).split("\n    Raises")
    if _f.__doc__:  # None under python -OO
        _f.__doc__ = _f.__doc__.replace("{params}", _params.strip() + "\n")
        _f.__doc__ = _f.__doc__.replace("{raises}", "Raises" + _raises.rstrip() + "\n\n")
del _f, _x, _x_doc, _params, _raises


# --------------------------------------------------------------------------- binary losses
@overload
def binary_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = ...,
    reduction: Literal["mean", "sum"] = ...,
) -> _FloatScalar: ...
@overload
def binary_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = ...,
    reduction: Literal["none"],
) -> _FloatArray: ...
@overload
def binary_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = ...,
    reduction: _Reduction,
) -> _FloatArray | _FloatScalar: ...
def binary_cross_entropy(
    probs: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
) -> Loss:
    """Binary cross-entropy, ``torch.nn.functional.binary_cross_entropy``.

    Elementwise ``-w (t max(log p, -100) + (1 - t) max(log(1 - p), -100))``.

    Parameters
    ----------
    probs : array_like
        Probabilities in ``[0, 1]`` (NaN propagates).
    target : array_like
        Targets of ``probs``' shape.
    weight : array_like, optional
        Elementwise weights, broadcast to ``probs``' shape.
    reduction : {"mean", "sum", "none"}, optional
        ``"none"`` keeps ``probs``' shape; ``"mean"`` averages over all elements.

    Returns
    -------
    numpy.floating or numpy.ndarray
        A NumPy scalar for ``"mean"`` and ``"sum"``, the per-sample losses for ``"none"``;
        float32 for float16 input.

    Raises
    ------
    TypeError
        Unsupported dtype of an argument.
    ValueError
        Mismatched shapes, unknown ``reduction``, or a probability outside ``[0, 1]``.

    Examples
    --------
    >>> xr.binary_cross_entropy([0.5, 1.0], [1.0, 0.0], reduction="none")  # logs clamped
    array([  0.69314718, 100.        ])
    >>> print(xr.binary_cross_entropy([0.5, 1.0], [1.0, 0.0], reduction="sum").round(6))
    100.693147
    """
    p, t, w, _, reduction = _args.binary_args(probs, target, weight, None, reduction, "probs")
    with np.errstate(invalid="ignore"):  # NaN compares False (bfloat16 comparisons warn)
        bad = (p < 0) | (p > 1)
    if bad.any():
        pos = _args.first_position(bad)
        raise _args.binary_probs_out_of_range("probs", p[pos], pos)
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    with np.errstate(all="ignore"):
        log_p = np.maximum(np.log(p64), -100.0)
        log_1mp = np.maximum(np.log1p(-p64), -100.0)
        per = -(t64 * log_p + (1 - t64) * log_1mp)
        if w is not None:
            per = per * w
        return _reduce(per, float(per.size), reduction, _args.compute_dtype(p.dtype))


@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = ...,
    pos_weight: npt.ArrayLike | None = ...,
    reduction: Literal["mean", "sum"] = ...,
) -> _FloatScalar: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = ...,
    pos_weight: npt.ArrayLike | None = ...,
    reduction: Literal["none"],
) -> _FloatArray: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = ...,
    pos_weight: npt.ArrayLike | None = ...,
    reduction: _Reduction,
) -> _FloatArray | _FloatScalar: ...
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: npt.ArrayLike | None = None,
    pos_weight: npt.ArrayLike | None = None,
    reduction: str = "mean",
) -> Loss:
    """Binary cross-entropy of ``sigmoid(logits)``, as ``F.binary_cross_entropy_with_logits``.

    Elementwise ``w (pw t softplus(-x) + (1 - t) softplus(x))``, computed stably.

    Parameters
    ----------
    logits : array_like
        Unnormalised log-odds.
    target : array_like
        Targets of ``logits``' shape.
    weight : array_like, optional
        Elementwise weights, broadcast to ``logits``' shape.
    pos_weight : array_like, optional
        Weight of the positive term, broadcast over the last axis (e.g. shape ``(C,)``).
    reduction : {"mean", "sum", "none"}, optional
        ``"none"`` keeps ``logits``' shape; ``"mean"`` averages over all elements.

    Returns
    -------
    numpy.floating or numpy.ndarray
        A NumPy scalar for ``"mean"`` and ``"sum"``, the per-sample losses for ``"none"``;
        float32 for float16 input.

    Raises
    ------
    TypeError
        Unsupported dtype of an argument.
    ValueError
        Mismatched shapes or unknown ``reduction``.

    Examples
    --------
    >>> print(xr.binary_cross_entropy_with_logits([0.0, 0.0], [1.0, 0.0]).round(6))
    0.693147
    >>> xr.binary_cross_entropy_with_logits(
    ...     [[0.0, 0.0]], [[1.0, 0.0]], pos_weight=[2.0, 2.0], reduction="none"
    ... )
    array([[1.38629436, 0.69314718]])
    """
    x, t, w, pw, reduction = _args.binary_args(
        logits, target, weight, pos_weight, reduction, "logits"
    )
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    with np.errstate(all="ignore"):
        pos = t64 if pw is None else pw * t64
        per = pos * _softplus(-x64) + (1 - t64) * _softplus(x64)
        if w is not None:
            per = per * w
        return _reduce(per, float(per.size), reduction, _args.compute_dtype(x.dtype))


# --------------------------------------------------------------------------- threads
_num_threads: int | None = None


def _default_num_threads() -> int:
    env = os.environ.get("XENT_RS_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels use (the reference only records it).

    Parameters
    ----------
    n : int
        A positive number of threads.

    Raises
    ------
    TypeError
        ``n`` is not an integer.
    ValueError
        ``n < 1``.

    Examples
    --------
    >>> previous = xr.get_num_threads()
    >>> xr.set_num_threads(2)
    >>> xr.get_num_threads()
    2
    >>> xr.set_num_threads(previous)
    """
    global _num_threads
    _num_threads = _args.check_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the kernels use.

    Defaults to ``XENT_RS_NUM_THREADS`` if set to a positive integer, else the available cores.

    Examples
    --------
    >>> xr.get_num_threads() >= 1
    True
    """
    return _default_num_threads() if _num_threads is None else _num_threads
