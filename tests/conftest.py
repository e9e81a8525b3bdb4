"""Shared fixtures, hypothesis strategies and comparison helpers for the xent_rs test suite.

The helpers live here (and are imported by the test modules with ``from conftest import ...``)
so that every module compares results the same way:

* :func:`assert_close` -- dtype, shape and scalar-ness equal; NaN and infinity positions
  identical; finite values within ``tol * eps * max(1, |expected|, scale)`` where ``eps`` is the
  machine epsilon of the result's dtype.
* :func:`relayout` -- the same logical array in another memory layout (Fortran order, permuted,
  negative strides, step slicing, zero strides, non-native byte order, read-only).
* :func:`call_both` -- call ``xr.<name>`` on the given inputs and ``reference.<name>`` on C-ordered
  native copies of them, asserting that the inputs were not modified.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import xent_rs as xr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from xent_rs import reference

try:  # numpy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - numpy 1.24
    from numpy import AxisError  # type: ignore[attr-defined,no-redef]

__all__ = [
    "FLOAT_DTYPES",
    "INDEX_DTYPES",
    "INPUT_DTYPES",
    "LAYOUTS",
    "AxisError",
    "assert_close",
    "call_both",
    "canonical",
    "relayout",
]

# --------------------------------------------------------------------------- hypothesis
# When a hypothesis test fails, its pytest plugin imports hypothesis.extra._patching (and with it
# libcst, if installed), which can emit a DeprecationWarning; under filterwarnings=error that turns
# the failure report into an INTERNALERROR. Import it now, with that warning silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:  # pragma: no cover - libcst not installed
        pass

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("XENT_RS_HYPOTHESIS_PROFILE", "default"))

FLOAT_DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]
INT_DTYPES = [
    np.dtype(t)
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
]
INDEX_DTYPES = INT_DTYPES
# Non-float inputs where a float is expected: converted to float64.
INPUT_DTYPES = [*FLOAT_DTYPES, np.dtype(np.int32), np.dtype(np.uint8), np.dtype(np.bool_)]

LAYOUTS = [
    "C",
    "F",
    "permuted",
    "reversed",
    "reversed0",
    "strided",
    "broadcast0",
    "broadcast_last",
    "byteswapped",
    "readonly",
    "readonly_F",
]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def backend() -> str:
    """The backend in use: ``"rust"`` or ``"python"``."""
    return xr.BACKEND


@pytest.fixture
def rust_only() -> None:
    """Skip the test unless ``xent_rs`` runs on the native extension."""
    if xr.BACKEND != "rust":
        pytest.skip("only meaningful for the Rust backend (xr.BACKEND != 'rust')")


@pytest.fixture(params=["xr", "reference"])
def mod(request: pytest.FixtureRequest) -> Any:
    """Both implementations: ``xent_rs`` (whatever its backend) and ``xent_rs.reference``."""
    return xr if request.param == "xr" else reference


@pytest.fixture
def restore_threads():
    """Restore ``xr.get_num_threads()`` (and the reference's) after the test."""
    saved = xr.get_num_threads()
    saved_ref = reference.get_num_threads()
    yield
    xr.set_num_threads(saved)
    reference.set_num_threads(saved_ref)


# --------------------------------------------------------------------------- comparison
def _tolerance(dtype: np.dtype) -> float:
    # float16 results are a rounding of a float32 (xr) or float64 (reference) computation:
    # they may differ by one float16 ulp. Everything else: a few dozen ulps of the result.
    return 4.0 if dtype == np.float16 else 64.0


def assert_close(
    actual: Any,
    expected: Any,
    tol: float | None = None,
    scale: Any = None,
    what: str = "",
) -> None:
    """``actual`` equals ``expected`` up to rounding.

    Same scalar-ness (NumPy scalar vs ndarray), dtype and shape; NaN at the same positions;
    +inf and -inf at the same positions; elsewhere
    ``|actual - expected| <= tol * eps * max(1, |expected|, scale)`` with ``eps`` the machine
    epsilon of the result dtype. ``scale`` (broadcast to the result) is the magnitude of the
    terms whose sum is the result, for sums with inherent cancellation.
    """
    prefix = f"{what}: " if what else ""
    assert isinstance(expected, (np.ndarray, np.generic)), f"{prefix}bad expected {expected!r}"
    assert isinstance(actual, (np.ndarray, np.generic)), (
        f"{prefix}expected a NumPy array or scalar, got {type(actual).__name__}: {actual!r}"
    )
    assert isinstance(actual, np.ndarray) == isinstance(expected, np.ndarray), (
        f"{prefix}got {type(actual).__name__}, expected {type(expected).__name__}"
    )
    assert actual.dtype == expected.dtype, f"{prefix}dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{prefix}shape {actual.shape} != {expected.shape}"
    if tol is None:
        tol = _tolerance(expected.dtype)
    eps = float(np.finfo(expected.dtype).eps)
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)

    def where(mask: np.ndarray) -> str:
        idx = [tuple(int(i) for i in ix) for ix in np.argwhere(mask)[:5]]
        return f"at {idx}: actual {[a[i] for i in idx]}, expected {[e[i] for i in idx]}"

    nan_diff = np.isnan(a) != np.isnan(e)
    assert not nan_diff.any(), f"{prefix}NaN positions differ {where(nan_diff)}"
    for sign in (np.isposinf, np.isneginf):
        inf_diff = sign(a) != sign(e)
        assert not inf_diff.any(), f"{prefix}{sign.__name__} positions differ {where(inf_diff)}"
    finite = np.isfinite(e)
    bound = np.maximum(1.0, np.abs(e))
    if scale is not None:
        with np.errstate(invalid="ignore"):
            bound = np.maximum(bound, np.nan_to_num(np.abs(np.asarray(scale, np.float64))))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(finite, np.abs(a - e), 0.0)
    bad = err > tol * eps * bound
    assert not bad.any(), (
        f"{prefix}{int(bad.sum())} of {bad.size} values differ by more than {tol} eps "
        f"({expected.dtype}) {where(bad)}; max error / (eps * bound) = "
        f"{float(np.nanmax(err / (eps * bound)))}"
    )


def assert_identical(actual: Any, expected: Any, what: str = "") -> None:
    """Bitwise-equal values (NaN equal to NaN), same dtype, shape and scalar-ness."""
    prefix = f"{what}: " if what else ""
    assert isinstance(actual, np.ndarray) == isinstance(expected, np.ndarray), prefix
    assert actual.dtype == expected.dtype, f"{prefix}{actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{prefix}{actual.shape} != {expected.shape}"
    assert np.array_equal(actual, expected, equal_nan=True), (
        f"{prefix}not identical: max |diff| = "
        f"{np.nanmax(np.abs(np.asarray(actual, np.float64) - expected), initial=0.0)}"
    )


# --------------------------------------------------------------------------- layouts
def _gap_fill(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return True
    return np.iinfo(dtype).max


def relayout(x: np.ndarray, layout: str) -> np.ndarray:
    """The logical array ``x`` (values unchanged, except for the broadcast layouts, which
    repeat one slice) in the memory layout ``layout``."""
    x = np.asarray(x)
    if x.ndim == 0:  # np.ascontiguousarray & co. would make it 1-d
        y = np.array(x, copy=True)
        if layout == "byteswapped":
            y = y.astype(y.dtype.newbyteorder("S"))
        y.flags.writeable = not layout.startswith("readonly")
        return y
    if layout == "C":
        return np.array(x, order="C", copy=True)
    if layout == "F":
        return np.array(x, order="F", copy=True)
    if layout == "permuted":
        if x.ndim < 2:
            return x.copy()
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 0, -1)), -1, 0)
    if layout == "reversed":  # negative strides on every axis
        return np.flip(np.flip(x).copy())
    if layout == "reversed0":  # negative stride on the first axis only
        return x[::-1].copy()[::-1]
    if layout == "strided":  # every other element of a larger buffer, gaps poisoned
        big = np.full(tuple(2 * n + 1 for n in x.shape), _gap_fill(x.dtype), dtype=x.dtype)
        view = big[(slice(1, None, 2),) * x.ndim]
        view[...] = x
        return view
    if layout == "broadcast0":  # zero stride on the first axis
        return np.broadcast_to(x[:1], x.shape)
    if layout == "broadcast_last":  # zero stride on the last axis
        return np.broadcast_to(x[..., :1], x.shape)
    if layout == "byteswapped":  # non-native byte order
        return x.astype(x.dtype.newbyteorder("S"))
    if layout == "readonly":
        y = x.copy()
        y.flags.writeable = False
        return y
    if layout == "readonly_F":
        y = np.asfortranarray(x).copy(order="F")
        y.flags.writeable = False
        return y
    raise AssertionError(layout)


def canonical(a: Any) -> Any:
    """A C-contiguous, native-byte-order, writeable copy of an array (other values unchanged)."""
    if isinstance(a, np.ndarray):
        return np.array(a, order="C", dtype=a.dtype.newbyteorder("="), copy=True)
    return copy.deepcopy(a)


def _snapshot(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        return (a.dtype, a.shape, a.strides, a.flags.writeable, a.tobytes())
    return copy.deepcopy(a)


def call_both(name: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``(xr.name(*args, **kwargs), reference.name(*canonical args))``.

    Asserts that no argument was modified (bitwise contents, dtype, shape, strides, flags).
    """
    before = [_snapshot(a) for a in args], {k: _snapshot(v) for k, v in kwargs.items()}
    actual = getattr(xr, name)(*args, **kwargs)
    after = [_snapshot(a) for a in args], {k: _snapshot(v) for k, v in kwargs.items()}
    for i, (b, c) in enumerate(zip(before[0], after[0], strict=True)):
        assert _equal_snapshots(b, c), f"{name} modified positional argument {i}"
    for k in kwargs:
        assert _equal_snapshots(before[1][k], after[1][k]), f"{name} modified argument {k}="
    expected = getattr(reference, name)(
        *(canonical(a) for a in args), **{k: canonical(v) for k, v in kwargs.items()}
    )
    return actual, expected


def _equal_snapshots(b: Any, c: Any) -> bool:
    if isinstance(b, tuple) and len(b) == 5 and isinstance(b[0], np.dtype):
        return b[:4] == c[:4] and b[4] == c[4]
    return bool(b == c) if not isinstance(b, np.ndarray) else np.array_equal(b, c)


# --------------------------------------------------------------------------- strategies
def finite_elements(dtype: np.dtype, bound: float) -> st.SearchStrategy:
    """Finite values of ``dtype`` in ``[-bound, bound]`` (integers/bools for those dtypes)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.integers(max(int(info.min), -int(bound)), min(int(info.max), int(bound)))
    return st.floats(-bound, bound, width=8 * dtype.itemsize, allow_nan=False, allow_infinity=False)


def values(
    draw: st.DrawFn,
    dtype: np.dtype,
    shape: tuple[int, ...],
    elements: st.SearchStrategy,
) -> np.ndarray:
    """A C-contiguous array; every element drawn independently for small arrays."""
    size = int(np.prod(shape))
    fill = st.nothing() if size <= 128 else None
    return draw(hnp.arrays(dtype, shape, elements=elements, fill=fill))


@st.composite
def shape_and_axis(
    draw: st.DrawFn,
    min_dims: int = 1,
    max_dims: int = 4,
    min_side: int = 0,
    max_classes: int = 40,
) -> tuple[tuple[int, ...], int]:
    """A shape of 1..4 dims (sizes 0..) and a valid axis, negative or positive."""
    ndim = draw(st.integers(min_dims, max_dims))
    max_side = {0: 1, 1: 12, 2: 6, 3: 4, 4: 3}[ndim]
    shape = (
        list(
            draw(
                hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=min_side, max_side=max_side)
            )
        )
        if ndim
        else []
    )
    if ndim == 0:
        return (), 0
    axis = draw(st.integers(-ndim, ndim - 1))
    shape[axis] = draw(st.integers(max(min_side, 0), max_classes) | st.integers(min_side, 3))
    return tuple(shape), axis


@st.composite
def real_arrays(
    draw: st.DrawFn,
    shape: tuple[int, ...],
    dtypes: list[np.dtype] | None = None,
    bounds: tuple[float, ...] = (1.0, 30.0, 1e4),
    specials: bool = False,
) -> np.ndarray:
    """Values of a dtype from ``dtypes`` within ``+-bound`` (moderate to extreme), optionally
    with about 30% NaN/+inf/-inf."""
    dtype = draw(st.sampled_from(dtypes or INPUT_DTYPES))
    bound = draw(st.sampled_from(bounds))
    x = values(draw, dtype, shape, finite_elements(dtype, bound))
    if specials and dtype.kind == "f":
        code = values(draw, np.dtype(np.int8), shape, st.integers(0, 9))
        x = x.copy()
        x[code == 0] = np.nan
        x[code == 1] = np.inf
        x[code == 2] = -np.inf
    return x


@st.composite
def unit_arrays(draw: st.DrawFn, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Values in [0, 1] of ``dtype`` (0 and 1 included)."""
    el = st.sampled_from([0.0, 1.0]) | st.floats(
        0.0, 1.0, width=8 * np.dtype(dtype).itemsize, allow_subnormal=False
    )
    return values(draw, np.dtype(dtype), shape, el)


@st.composite
def distributions(
    draw: st.DrawFn, shape: tuple[int, ...], axis: int, dtype: np.dtype, zeros: bool = True
) -> np.ndarray:
    """Rows (along ``axis``) of a softmax of random numbers, some entries exactly 0."""
    z = draw(real_arrays(shape, [np.dtype(np.float64)], bounds=(3.0, 30.0)))
    p = reference.softmax(z, axis=axis) if z.ndim else np.ones(())
    if zeros and draw(st.booleans()):
        mask = values(draw, np.dtype(np.bool_), shape, st.booleans())
        p = np.where(mask, 0.0, p)
    return p.astype(dtype)


@st.composite
def class_weights(draw: st.DrawFn, n: int, dtypes: list[np.dtype] | None = None) -> np.ndarray:
    """Per-class (or elementwise) non-negative weights, 0 included, representable in float32."""
    dtype = draw(st.sampled_from(dtypes or [np.dtype(np.float32), np.dtype(np.float64)]))
    el = st.sampled_from([0.0, 1.0]) | st.floats(0.0009765625, 4.0, width=32)
    return values(draw, dtype, (n,), el) if isinstance(n, int) else values(draw, dtype, n, el)


def fits(value: int, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return int(info.min) <= value <= int(info.max)


@st.composite
def index_targets(
    draw: st.DrawFn, batch: tuple[int, ...], n_classes: int
) -> tuple[np.ndarray, int]:
    """``(target, ignore_index)``: class indices of an integer dtype, some = ignore_index."""
    ignore_index = draw(st.sampled_from([-100, -1, 0, 2, 255, 2**40]))
    dtype = draw(st.sampled_from(INDEX_DTYPES))
    size = int(np.prod(batch))
    if n_classes == 0 and size:
        if not fits(ignore_index, dtype):
            dtype = np.dtype(np.int64)
        return np.full(batch, ignore_index, dtype=dtype), ignore_index
    t = values(draw, dtype, batch, st.integers(0, max(n_classes - 1, 0)))
    if fits(ignore_index, dtype) and draw(st.booleans()):
        mask = values(draw, np.dtype(np.bool_), batch, st.booleans())
        t = t.copy()
        t[mask] = ignore_index
    return t, ignore_index


layouts = st.sampled_from(LAYOUTS)
reductions = st.sampled_from(["none", "sum", "mean"])
