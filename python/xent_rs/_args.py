"""Argument normalisation and validation shared by the reference and the Rust-backed path.

Both code paths call these helpers, so they raise the same exception types with the same
messages. Every message starts with the name of the offending argument.
"""

from __future__ import annotations

import numbers
import operator
import sys
from typing import Any

import numpy as np

try:  # numpy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - numpy 1.24
    from numpy import AxisError  # type: ignore[attr-defined,no-redef]

__all__ = [
    "as_float_array",
    "as_ndarray",
    "as_target",
    "as_weight",
    "binary_args",
    "binary_probs_out_of_range",
    "broadcast",
    "broadcastable_to_input",
    "cast",
    "check_eps",
    "check_ignore_index",
    "check_keepdims",
    "check_label_smoothing",
    "check_num_threads",
    "check_reduction",
    "class_args",
    "compute_dtype",
    "finish_reduction",
    "first_position",
    "kl_args",
    "normalize_axis",
    "target_out_of_range",
]

_FLOAT64 = np.dtype(np.float64)
_FLOAT32 = np.dtype(np.float32)
_KEPT_FLOATS = frozenset((np.dtype(np.float16), _FLOAT32, _FLOAT64))  # native byte order
_INT64 = np.dtype(np.int64)
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_EPS = {_FLOAT32: float(np.finfo(np.float32).eps), _FLOAT64: float(np.finfo(np.float64).eps)}
_SCALAR_TYPES: dict[np.dtype, type[np.floating[Any]]] = {_FLOAT32: np.float32, _FLOAT64: np.float64}
# np.float32(value) is slow (~0.3 us); with NumPy 2's promotion (NEP 50) -0.0 + value rounds
# value to float32 once and is exactly that (-0.0 + v is v for every v, zeros' signs included).
_FLOAT32_NEG_ZERO = np.float32(-0.0)
_FAST_FLOAT32 = type(_FLOAT32_NEG_ZERO + 0.5) is np.float32
_COMPUTE_DTYPES: dict[Any, np.dtype] = {
    np.dtype(np.float16): _FLOAT32,
    _FLOAT32: _FLOAT32,
    _FLOAT64: _FLOAT64,
}
#: The most dimensions an input may have (rust-numpy's limit; NumPy 2 allows 64).
MAX_DIMS = 32
#: The most threads ``set_num_threads`` accepts.
MAX_THREADS = 1 << 16


def _is_bfloat16(dtype: np.dtype) -> bool:
    # Not dtype.name: slow (computed in Python), and a byte-swapped bfloat16 has none.
    return dtype.type.__name__ == "bfloat16"


def cast(a: np.ndarray, dtype: Any) -> np.ndarray:
    """``a`` as ``dtype`` (``a`` itself if it is already); values beyond the range of ``dtype``
    become infinite without a warning (the intended value)."""
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def broadcast(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``np.broadcast_to(a, shape)``, or ``a`` itself if it has that shape already."""
    return a if a.shape == shape else np.broadcast_to(a, shape)


def _bfloat16_view(x: Any) -> np.ndarray | None:
    """A NumPy bfloat16 view of a foreign bfloat16 tensor that DLPack cannot carry (NumPy has no
    bfloat16 DLPack code), through a same-size integer view (PyTorch's ``Tensor.view(dtype)``);
    None when ``x`` is not such a tensor or ml_dtypes is not installed."""
    if not str(getattr(x, "dtype", "")).endswith("bfloat16") or not hasattr(x, "view"):
        return None
    try:
        import ml_dtypes
    except ImportError:
        return None
    library = sys.modules.get(type(x).__module__.partition(".")[0])
    int16 = getattr(library, "int16", None)
    if int16 is None:
        return None
    try:
        bits = np.from_dlpack(x.view(int16))
    except (BufferError, RuntimeError, TypeError, ValueError):
        return None
    view: np.ndarray = bits.view(ml_dtypes.bfloat16)  # (NumPy types this as Any)
    return view


def as_ndarray(x: Any, name: str) -> np.ndarray:
    """``x`` as a NumPy array, sharing memory where the layout allows.

    Foreign arrays that speak DLPack (PyTorch and JAX CPU tensors, ...) are viewed through it,
    bfloat16 tensors included; everything else goes through ``np.asarray`` (array interface,
    buffer protocol such as ``memoryview``, ``__array__``, nested sequences).
    """
    if isinstance(x, np.ndarray):
        return np.asarray(x)  # a subclass (np.matrix, masked) as its base-class view
    if hasattr(type(x), "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            view = _bfloat16_view(x)
            if view is not None:
                return view
            dlpack_error = exc  # np.asarray below may still read it (e.g. via __array__)
    else:
        dlpack_error = None
    try:
        a = np.asarray(x)
    except ValueError as exc:  # e.g. a ragged nested list
        raise ValueError(f"{name}: cannot be converted to an array ({exc})") from None
    except (RuntimeError, TypeError) as exc:  # e.g. a tensor that requires grad
        reason = dlpack_error if dlpack_error is not None else exc
        raise TypeError(f"{name}: cannot be read as an array ({reason})") from None
    if dlpack_error is not None and a.dtype == object:  # np.asarray wrapped the tensor itself
        raise TypeError(f"{name}: cannot be read as an array ({dlpack_error})")
    return a


def as_float_array(x: Any, name: str) -> np.ndarray:
    """``np.asarray(x)`` as a native-byte-order floating array, without copying when possible.

    float16, float32, float64 and bfloat16 are kept; bool, integer and other float widths
    become float64. complex, object, string, void and datetime dtypes are a ``TypeError``.
    """
    if (
        type(x) is np.ndarray
        and x.dtype in _KEPT_FLOATS  # native byte order: a byte-swapped dtype is not equal
        and x.flags.aligned
        and x.ndim <= MAX_DIMS
    ):
        return x  # the common case: nothing to check or convert
    a = as_ndarray(x, name)
    if a.ndim > MAX_DIMS:
        raise ValueError(f"{name}: {a.ndim} dimensions; at most {MAX_DIMS} are supported")
    dtype = a.dtype
    if dtype.kind not in "biuf":
        if not _is_bfloat16(dtype):
            raise TypeError(
                f"{name}: unsupported dtype {dtype}; expected a real floating, integer or bool "
                "array"
            )
    elif dtype.newbyteorder("=") not in _KEPT_FLOATS:
        a = cast(a, _FLOAT64)  # longdouble beyond float64's range becomes inf
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.aligned:  # the kernels read whole elements
        a = a.copy()
    return a


def compute_dtype(dtype: Any) -> np.dtype:
    """The precision of the arithmetic: float64 for float64, float32 for everything narrower."""
    computed = _COMPUTE_DTYPES.get(dtype)  # the common case, faster than ==
    if computed is not None:
        return computed
    return _FLOAT64 if dtype == _FLOAT64 else _FLOAT32  # dtype == converts a type or name


def _as_int(value: Any, name: str, what: str = "an integer") -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__}") from None


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """The non-negative axis; ``numpy.exceptions.AxisError`` when out of range."""
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, checked
        return axis % ndim
    ax = _as_int(axis, name)
    if not -ndim <= ax < ndim:
        raise AxisError(ax, ndim, None if name == "axis" else name)
    return ax % ndim


def check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction: expected 'none', 'mean' or 'sum', got {reduction!r}")
    return reduction


def _as_real(value: Any, name: str) -> float:
    """``float(value)`` for a real number (not bool, complex, datetime or timedelta)."""
    excluded = (bool, np.bool_, complex, np.complexfloating, np.datetime64, np.timedelta64)
    if isinstance(value, excluded) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        return float("-inf") if value < 0 else float("inf")


def check_label_smoothing(value: Any) -> float:
    if type(value) is float and 0.0 <= value <= 1.0:  # the common case, checked
        return value
    e = _as_real(value, "label_smoothing")
    if not 0.0 <= e <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing: expected a float in [0, 1], got {e}")
    return e


def check_keepdims(value: Any) -> bool:
    if type(value) is bool:  # the common case
        return value
    if not isinstance(value, (bool, np.bool_, int, np.integer)):
        raise TypeError(f"keepdims: expected a bool, got {type(value).__name__}")
    return bool(value)


def check_ignore_index(value: Any) -> int:
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:  # the common case, checked
        return value
    i = _as_int(value, "ignore_index")
    if not _INT64_MIN <= i <= _INT64_MAX:
        raise ValueError(f"ignore_index: {i} does not fit in a signed 64-bit integer")
    return i


def first_position(mask: np.ndarray) -> tuple[int, ...]:
    """Multi-index of the first True element of ``mask`` in C order (for error messages)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def as_target(
    target: Any, x: np.ndarray, axis: int, name: str = "target"
) -> tuple[str, np.ndarray]:
    """Classify and normalise a categorical target.

    Returns ``("index", int64 array of shape x.shape without axis)`` for integer targets, or
    ``("probs", float array of x's shape)`` for floating (and bool) targets.
    """
    t = as_ndarray(target, name)
    batch = x.shape[:axis] + x.shape[axis + 1 :]
    kind = t.dtype.kind
    # An empty list becomes an empty float64 array: if it fits the batch shape, it is indices.
    if kind in "iu" or (kind == "f" and t.size == 0 and t.shape == batch != x.shape):
        if t.shape != batch:
            raise ValueError(
                f"{name}: shape {t.shape} does not match {batch}, the shape of logits without "
                f"axis {axis} (logits shape {x.shape})"
            )
        if kind == "u" and t.dtype.itemsize >= 8 and t.size and t.max() > _INT64_MAX:
            pos = first_position(t > _INT64_MAX)
            raise ValueError(
                f"{name}: class index {int(t[pos])} at position {pos} is out of range for "
                f"{x.shape[axis]} classes (it does not fit in a signed 64-bit integer)"
            )
        return "index", t if t.dtype == _INT64 else t.astype(_INT64)
    if kind not in "bf" and not _is_bfloat16(t.dtype):
        raise TypeError(
            f"{name}: unsupported dtype {t.dtype}; expected an integer array of class indices "
            "or a floating array of class probabilities"
        )
    if t.shape != x.shape:
        raise ValueError(
            f"{name}: shape {t.shape} does not match {x.shape}, the shape of logits (a floating "
            "target holds class probabilities; class indices must be integers)"
        )
    t = as_float_array(t, name)
    if x.dtype in (_FLOAT32, _FLOAT64):
        t = cast(t, x.dtype)  # beyond float32's range: inf, as intended
    elif t.dtype != x.dtype:  # half-precision logits: keep matching halves, else compute dtype
        t = cast(t, _FLOAT32)
    return "probs", t


def as_weight(weight: Any, n_classes: int, dtype: Any, name: str = "weight") -> np.ndarray | None:
    """``None``, or a C-contiguous ``dtype`` array of shape ``(n_classes,)``."""
    if weight is None:
        return None
    w = as_float_array(weight, name)
    if w.shape != (n_classes,):
        raise ValueError(
            f"{name}: expected shape ({n_classes},), one weight per class, got {w.shape}"
        )
    with np.errstate(all="ignore"):
        return np.ascontiguousarray(w, dtype=dtype)


def target_out_of_range(
    name: str, value: int, position: tuple[int, ...], n_classes: int, ignore_index: int
) -> ValueError:
    """The error for a class index outside ``[0, n_classes)`` (returned, not raised)."""
    position = tuple(int(i) for i in position)
    return ValueError(
        f"{name}: class index {int(value)} at position {position} is out of range for "
        f"{n_classes} classes (expected 0 <= index < {n_classes}, or ignore_index={ignore_index})"
    )


def binary_probs_out_of_range(name: str, value: Any, position: tuple[int, ...]) -> ValueError:
    """The error for a binary probability outside ``[0, 1]`` (returned, not raised)."""
    position = tuple(int(i) for i in position)
    return ValueError(
        f"{name}: probabilities must lie in [0, 1]; found {value} at position {position}"
    )


def broadcastable_to_input(arr: Any, x_shape: tuple[int, ...], name: str) -> np.ndarray:
    """``arr`` as a float array (not broadcast), checked to broadcast to the input's shape."""
    a = as_float_array(arr, name)
    try:
        np.broadcast_to(a, x_shape)
    except ValueError:
        raise ValueError(
            f"{name}: shape {a.shape} cannot be broadcast to {tuple(x_shape)}, the input's shape"
        ) from None
    return a


def finish_reduction(
    total: float, denominator: float, reduction: str, dtype: Any
) -> np.floating[Any]:
    """The scalar result of a ``"sum"`` or ``"mean"`` reduction, IEEE division (0/0 is nan)."""
    scalar_type = _SCALAR_TYPES.get(dtype) or np.dtype(dtype).type
    if reduction == "sum":
        value = float(total)
    elif denominator:
        value = float(total) / float(denominator)  # IEEE, as np.float64's division
    else:  # x / 0 is +-inf or nan, silently
        with np.errstate(all="ignore"):
            return scalar_type(np.float64(total) / np.float64(denominator))
    if scalar_type is np.float64:
        return np.float64(value)
    if scalar_type is np.float32 and -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
        return _FLOAT32_NEG_ZERO + value if _FAST_FLOAT32 else np.float32(value)
    with np.errstate(all="ignore"):  # beyond the dtype's range: inf, silently
        return scalar_type(value)


def check_eps(eps: Any, dtype: Any) -> float:
    """The clipping bound of ``categorical_cross_entropy``: default ``finfo(dtype).eps``."""
    if eps is None:
        return _EPS[dtype] if dtype in _EPS else float(np.finfo(dtype).eps)
    bound = _as_real(eps, "eps")
    if not 0.0 <= bound < 0.5:  # also rejects NaN
        raise ValueError(f"eps: expected a float in [0, 0.5), got {bound}")
    return bound


def check_num_threads(n: Any) -> int:
    # np.timedelta64 is an np.integer, and bool an int: neither is a number of threads.
    excluded = (bool, np.bool_, np.timedelta64)
    if isinstance(n, excluded) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n: expected a positive integer, got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n: expected a positive integer of at most {MAX_THREADS}, got {n}")
    return int(n)


def class_args(
    x: Any,
    target: Any,
    axis: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    name: str,
    label_smoothing: Any = 0.0,
) -> tuple[np.ndarray, int, str, float, int, str, np.ndarray, np.ndarray | None]:
    """Validate the arguments of a loss over classes, in the order both backends check them.

    Returns ``(x, axis, reduction, label_smoothing, ignore_index, target kind, target, weight)``
    with ``weight`` (or None) in the compute dtype of ``x``.
    """
    xa = as_float_array(x, name)
    ax = normalize_axis(axis, xa.ndim)
    reduction = check_reduction(reduction)
    e = check_label_smoothing(label_smoothing)
    ignore_index = check_ignore_index(ignore_index)
    kind, t = as_target(target, xa, ax)
    w = None if weight is None else as_weight(weight, xa.shape[ax], compute_dtype(xa.dtype))
    return xa, ax, reduction, e, ignore_index, kind, t, w


def binary_args(
    x: Any, target: Any, weight: Any, pos_weight: Any, reduction: Any, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str]:
    """Validate the arguments of a binary loss: ``(x, target, weight, pos_weight, reduction)``.

    ``weight`` and ``pos_weight`` are float arrays that broadcast to ``x``'s shape (returned
    unbroadcast, so that converting them stays cheap).
    """
    xa = as_float_array(x, name)
    ta = as_float_array(target, "target")
    reduction = check_reduction(reduction)
    if ta.shape != xa.shape:
        raise ValueError(f"target: shape {ta.shape} does not match {xa.shape}, the shape of {name}")
    w = None if weight is None else broadcastable_to_input(weight, xa.shape, "weight")
    pw = None if pos_weight is None else broadcastable_to_input(pos_weight, xa.shape, "pos_weight")
    return xa, ta, w, pw, reduction


def kl_args(p: Any, q: Any, axis: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """``(p, q, axis)`` with ``p`` and ``q`` broadcast (views) to one shape and one dtype."""
    pa, qa = as_float_array(p, "p"), as_float_array(q, "q")
    try:
        shape = pa.shape if pa.shape == qa.shape else np.broadcast_shapes(pa.shape, qa.shape)
    except (ValueError, RuntimeError):  # RuntimeError: more dimensions than NumPy broadcasts
        raise ValueError(
            f"q: shape {qa.shape} cannot be broadcast with {pa.shape}, the shape of p"
        ) from None
    ax = normalize_axis(axis, len(shape))
    try:
        dtype = pa.dtype if pa.dtype == qa.dtype else np.promote_types(pa.dtype, qa.dtype)
    except TypeError:  # float16 with bfloat16: no common NumPy dtype, float32 holds both
        dtype = _FLOAT32
    return broadcast(cast(pa, dtype), shape), broadcast(cast(qa, dtype), shape), ax
