"""Every public function of ``xent_rs`` against the NumPy reference ``xent_rs.reference``.

Inputs are drawn by hypothesis: 1-4 dims with size-1 and size-0 dims, every axis, float16/32/64
and integer/bool inputs, moderate to extreme values (+-1e4), every memory layout; NaN/inf in
dedicated tests. ``call_both`` also asserts that no input is modified.
"""

from __future__ import annotations

import numpy as np
import pytest
import xent_rs as xr
from conftest import (
    FLOAT_DTYPES,
    assert_close,
    assert_identical,
    call_both,
    canonical,
    class_weights,
    distributions,
    index_targets,
    layouts,
    real_arrays,
    reductions,
    relayout,
    shape_and_axis,
    unit_arrays,
    values,
)
from hypothesis import given
from hypothesis import strategies as st
from xent_rs import reference

CATEGORICAL = ["cross_entropy", "nll_loss", "categorical_cross_entropy"]


def _drop(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    axis %= len(shape)
    return shape[:axis] + shape[axis + 1 :]


def _sum_abs_scale(terms: np.ndarray, axis: int) -> np.ndarray:
    """Sum of |terms| along ``axis`` (the condition of a sum with cancellation)."""
    with np.errstate(all="ignore"):
        return np.nansum(np.where(np.isfinite(terms), np.abs(terms), 0.0), axis=axis)


# --------------------------------------------------------------------------- softmax family
@st.composite
def softmax_case(draw: st.DrawFn, specials: bool = False):
    shape, axis = draw(shape_and_axis())
    x = draw(real_arrays(shape, specials=specials))
    return relayout(x, draw(layouts)), axis


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@given(case=softmax_case())
def test_softmax_family(name, case):
    x, axis = case
    actual, expected = call_both(name, x, axis=axis)
    assert isinstance(actual, np.ndarray)
    assert_close(actual, expected, what=name)


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@given(case=softmax_case(specials=True))
def test_softmax_family_nan_inf(name, case):
    x, axis = case
    actual, expected = call_both(name, x, axis=axis)
    assert_close(actual, expected, what=name)


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_softmax_family_default_axis(name):
    x = np.random.default_rng(0).normal(size=(3, 5, 7))
    assert_close(getattr(xr, name)(x), getattr(reference, name)(x, axis=-1))
    assert_identical(getattr(xr, name)(x), getattr(xr, name)(x, axis=2))


@given(case=softmax_case(), keepdims=st.booleans())
def test_logsumexp(case, keepdims):
    x, axis = case
    actual, expected = call_both("logsumexp", x, axis=axis, keepdims=keepdims)
    assert_close(actual, expected, what="logsumexp")
    if keepdims:
        assert actual.shape[axis] == 1


@given(case=softmax_case(specials=True), keepdims=st.booleans())
def test_logsumexp_nan_inf(case, keepdims):
    x, axis = case
    actual, expected = call_both("logsumexp", x, axis=axis, keepdims=keepdims)
    assert_close(actual, expected, what="logsumexp")


def test_logsumexp_1d_returns_scalar():
    lse = xr.logsumexp(np.array([1000.0, 1000.0]))
    assert isinstance(lse, np.float64)
    assert_close(lse, np.float64(1000.0 + np.log(2.0)))
    kept = xr.logsumexp(np.array([1000.0, 1000.0]), keepdims=True)
    assert isinstance(kept, np.ndarray)
    assert kept.shape == (1,)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 127, 257, 1000])
@pytest.mark.parametrize("axis", [-1, 0])
def test_long_rows(dtype, n, axis):
    """Rows longer than hypothesis draws them, around SIMD widths, contiguous and strided."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((5, n) if axis == -1 else (n, 5)) * 20).astype(dtype)
    x.flat[::7] = (rng.standard_normal(x.flat[::7].shape) * 1e4).astype(dtype)
    for name in ("log_softmax", "softmax"):
        actual, expected = call_both(name, x, axis=axis)
        assert_close(actual, expected, what=name)
    actual, expected = call_both("logsumexp", x, axis=axis)
    assert_close(actual, expected, what="logsumexp")
    p = reference.softmax(x.astype(np.float64), axis=axis).astype(dtype)
    q = reference.softmax(np.flip(x, axis=axis).astype(np.float64), axis=axis).astype(dtype)
    actual, expected = call_both("entropy", p, axis=axis)
    assert_close(actual, expected, what="entropy")
    actual, expected = call_both("kl_divergence", p, q, axis=axis)
    assert_close(actual, expected, what="kl_divergence", scale=_kl_scale(p, q, axis))
    t = rng.integers(0, n, size=5)
    for reduction in ("none", "sum", "mean"):
        kw = {"axis": axis, "reduction": reduction, "weight": rng.uniform(0.5, 2, n)}
        for name, inp in [
            ("cross_entropy", x),
            ("nll_loss", reference.log_softmax(x, axis=axis)),
            ("categorical_cross_entropy", p),
        ]:
            actual, expected = call_both(name, inp, t, **kw)
            assert_close(actual, expected, what=name)
            actual, expected = call_both(name, inp, p, **kw)
            assert_close(actual, expected, what=f"{name} (probability targets)")
        actual, expected = call_both("cross_entropy", x, t, label_smoothing=0.3, **kw)
        assert_close(actual, expected, what="cross_entropy (label smoothing)")
        (la, ga), (le, ge) = call_both("cross_entropy_with_grad", x, t, **kw)
        assert_close(la, le, what="cross_entropy_with_grad loss")
        assert_close(ga, ge, what="cross_entropy_with_grad grad")
        u = np.clip(p, 0, 1)
        actual, expected = call_both("binary_cross_entropy", u, 1 - u, reduction=reduction)
        assert_close(actual, expected, what="binary_cross_entropy")
        actual, expected = call_both(
            "binary_cross_entropy_with_logits",
            x,
            u,
            reduction=reduction,
            pos_weight=kw["weight"] if axis == -1 else None,
        )
        assert_close(actual, expected, what="binary_cross_entropy_with_logits")


# --------------------------------------------------------------------------- out=
@st.composite
def out_case(draw: st.DrawFn):
    shape, axis = draw(shape_and_axis())
    x = draw(real_arrays(shape, FLOAT_DTYPES))
    layout = draw(st.sampled_from(["C", "F", "permuted", "reversed", "strided"]))
    return x, axis, layout


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@given(case=out_case(), in_place=st.booleans())
def test_out(name, case, in_place):
    x, axis, layout = case
    fn = getattr(xr, name)
    expected = getattr(reference, name)(x, axis=axis)
    plain = fn(x, axis=axis)
    if in_place:
        src = relayout(x, layout)
        plain = fn(relayout(x, layout), axis=axis)
        out = src
    else:
        src = x
        out = relayout(np.zeros_like(x), layout)
    base = out.base if layout == "strided" else None
    gaps = None if base is None else base.copy()
    x_before = x.copy()
    result = fn(src, axis=axis, out=out)
    assert result is out
    if not in_place:
        assert np.array_equal(x, x_before, equal_nan=True), "input modified"
    assert_identical(result, plain, what=f"{name}(out=) vs {name}()")
    assert_close(result, expected, what=name)
    if base is not None:  # nothing written outside the view
        gaps[(slice(1, None, 2),) * x.ndim] = out
        assert np.array_equal(base, gaps, equal_nan=True)


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_out_in_place_large(name, dtype, axis):
    x = (np.random.default_rng(1).standard_normal((37, 41)) * 10).astype(dtype)
    expected = getattr(xr, name)(x, axis=axis)
    y = x.copy()
    assert getattr(xr, name)(y, axis=axis, out=y) is y
    assert_identical(y, expected)
    f = np.asfortranarray(x)
    expected_f = getattr(xr, name)(np.asfortranarray(x), axis=axis)
    assert getattr(xr, name)(f, axis=axis, out=f) is f
    assert_identical(f, expected_f)
    assert_close(f, expected)


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("alias", ["reversed_rows", "reversed_cols", "transposed"])
def test_out_overlapping_alias(name, alias):
    """``out`` aliasing ``x`` in another order: as if computed on a copy (NumPy semantics)."""
    x = np.random.default_rng(2).standard_normal((16, 16)) * 5
    expected = getattr(xr, name)(x.copy())
    y = x.copy()
    out = {"reversed_rows": y[::-1], "reversed_cols": y[:, ::-1], "transposed": y.T}[alias]
    result = getattr(xr, name)(y, out=out)
    assert result is out
    assert_close(out, expected, what=f"{name} out={alias}")


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_out_int_input(name):
    x = np.arange(12, dtype=np.int16).reshape(3, 4)
    out = np.empty((3, 4))
    assert getattr(xr, name)(x, out=out) is out
    assert_close(out, getattr(reference, name)(x))


# --------------------------------------------------------------------------- entropy, KL
def _kl_scale(p: np.ndarray, q: np.ndarray, axis: int) -> np.ndarray:
    P, Q = np.broadcast_arrays(np.asarray(p, np.float64), np.asarray(q, np.float64))
    with np.errstate(all="ignore"):
        terms = np.where((P > 0) & (Q > 0), P * np.log(P / Q), 0.0)
    return _sum_abs_scale(terms, axis)


def _entropy_scale(p: np.ndarray, axis: int) -> np.ndarray:
    P = np.asarray(p, np.float64)
    with np.errstate(all="ignore"):
        terms = np.where(P > 0, P * np.log(P), 0.0)
    return _sum_abs_scale(terms, axis)


@st.composite
def entropy_case(draw: st.DrawFn, specials: bool = False):
    shape, axis = draw(shape_and_axis())
    kind = draw(st.sampled_from(["distribution", "unit", "any"]))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    if kind == "distribution":
        p = draw(distributions(shape, axis, dtype))
    elif kind == "unit":
        p = draw(unit_arrays(shape, dtype))
    else:
        p = draw(real_arrays(shape, specials=specials))
    return relayout(p, draw(layouts)), axis


@given(case=entropy_case())
def test_entropy(case):
    p, axis = case
    actual, expected = call_both("entropy", p, axis=axis)
    assert_close(actual, expected, what="entropy", scale=_entropy_scale(canonical(p), axis))


@given(case=entropy_case(specials=True))
def test_entropy_nan_inf(case):
    p, axis = case
    actual, expected = call_both("entropy", p, axis=axis)
    assert_close(actual, expected, what="entropy", scale=_entropy_scale(canonical(p), axis))


@st.composite
def kl_case(draw: st.DrawFn, specials: bool = False):
    shape, axis = draw(shape_and_axis())
    dp, dq = draw(st.sampled_from(FLOAT_DTYPES)), draw(st.sampled_from(FLOAT_DTYPES))
    p = draw(distributions(shape, axis, dp))
    q = draw(distributions(shape, axis, dq))
    if specials:
        p = draw(real_arrays(shape, [dp], specials=True))
        q = np.abs(draw(real_arrays(shape, [dq], specials=True)))
    # broadcasting q against p: drop leading dims or make some dims 1 (never the class axis)
    how = draw(st.sampled_from(["same", "drop_leading", "ones"]))
    ax = axis % len(shape)
    if how == "drop_leading" and ax > 0:
        q = q[(0,) * ax] if all(n > 0 for n in shape[:ax]) else q
    elif how == "ones":
        keep = [i == ax or draw(st.booleans()) for i in range(len(shape))]
        q = q[tuple(slice(None) if k else slice(0, 1) for k in keep)]
    return relayout(p, draw(layouts)), relayout(q, draw(layouts)), axis


@given(case=kl_case())
def test_kl_divergence(case):
    p, q, axis = case
    actual, expected = call_both("kl_divergence", p, q, axis=axis)
    scale = _kl_scale(canonical(p), canonical(q), axis)
    assert_close(actual, expected, what="kl_divergence", scale=scale)


@given(case=kl_case(specials=True))
def test_kl_divergence_nan_inf(case):
    p, q, axis = case
    actual, expected = call_both("kl_divergence", p, q, axis=axis)
    scale = _kl_scale(canonical(p), canonical(q), axis)
    assert_close(actual, expected, what="kl_divergence", scale=scale)


def test_entropy_kl_zero_conventions():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.25, 0.75, 0.0], [1.0, 0.0, 0.5]])
    assert_close(xr.entropy(p), np.array([np.log(2.0), 0.0]))
    assert_close(xr.kl_divergence(p, q), reference.kl_divergence(p, q))
    assert xr.kl_divergence([1.0, 0.0], [0.0, 1.0]) == np.inf
    assert xr.entropy([-0.5, 0.5]) == -np.inf


# --------------------------------------------------------------------------- categorical losses
@st.composite
def categorical_case(
    draw: st.DrawFn, name: str, specials: bool = False, target_kinds=("index", "probs", "bool")
):
    """``(x, target, kwargs)`` for ``name`` in cross_entropy[_with_grad] / nll / categorical."""
    shape, axis = draw(shape_and_axis())
    n_classes = shape[axis]
    batch = _drop(shape, axis)
    if name == "categorical_cross_entropy":
        dtype = draw(st.sampled_from(FLOAT_DTYPES))
        x = draw(
            st.sampled_from(["distribution", "unit"]).flatmap(
                lambda k: (
                    distributions(shape, axis, dtype)
                    if k == "distribution"
                    else unit_arrays(shape, dtype)
                )
            )
        )
        if specials:
            x = draw(real_arrays(shape, [dtype], bounds=(1.0,), specials=True))
    else:
        x = draw(real_arrays(shape, specials=specials))
        if name == "nll_loss" and not specials and x.dtype.kind in "fi":
            x = -np.abs(x)  # log-probabilities: no cancellation in the sums
    kwargs = {"axis": axis, "reduction": draw(reductions)}
    kind = draw(st.sampled_from(target_kinds))
    if kind == "index":
        target, kwargs["ignore_index"] = draw(index_targets(batch, n_classes))
    elif kind == "probs":
        tdtype = draw(st.sampled_from(FLOAT_DTYPES))
        target = draw(distributions(shape, axis, tdtype))
        if specials:
            target = np.abs(draw(real_arrays(shape, [tdtype], bounds=(1.0,), specials=True)))
    else:
        target = values(draw, np.dtype(np.bool_), shape, st.booleans())
    if draw(st.booleans()):
        kwargs["weight"] = draw(class_weights(n_classes))
    if name.startswith("cross_entropy") and draw(st.booleans()):
        kwargs["label_smoothing"] = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    if name == "categorical_cross_entropy" and draw(st.booleans()):
        kwargs["eps"] = draw(
            st.sampled_from([0.0, 1e-7, 1e-3, 0.25, 0.4999]) | st.floats(1e-6, 0.49)
        )
    return relayout(x, draw(layouts)), relayout(target, draw(layouts)), kwargs


def _check_categorical(name, case):
    x, target, kwargs = case
    if name == "cross_entropy_with_grad":
        (loss, grad), (loss_e, grad_e) = call_both(name, x, target, **kwargs)
        assert_close(loss, loss_e, what=f"{name} loss")
        assert_close(grad, grad_e, what=f"{name} grad")
        assert grad.shape == x.shape
        xdt = np.dtype(np.float64) if x.dtype.kind in "biu" else x.dtype.newbyteorder("=")
        assert grad.dtype == xdt
    else:
        actual, expected = call_both(name, x, target, **kwargs)
        assert_close(actual, expected, what=name)
        if kwargs["reduction"] != "none":
            assert isinstance(actual, np.generic)


@pytest.mark.parametrize("name", [*CATEGORICAL, "cross_entropy_with_grad"])
@given(data=st.data())
def test_categorical_losses(name, data):
    _check_categorical(name, data.draw(categorical_case(name)))


@pytest.mark.parametrize("name", [*CATEGORICAL, "cross_entropy_with_grad"])
@given(data=st.data())
def test_categorical_losses_nan_inf(name, data):
    _check_categorical(name, data.draw(categorical_case(name, specials=True)))


@pytest.mark.parametrize("name", CATEGORICAL)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_categorical_all_ignored_or_empty(name, reduction):
    x = np.random.default_rng(3).uniform(0.1, 0.9, (4, 3))
    for target in (np.full(4, -100), np.full(4, 7, dtype=np.uint8)):
        actual, expected = call_both(
            name, x, target, ignore_index=int(target[0]), reduction=reduction
        )
        assert_close(actual, expected)
        if reduction == "mean":
            assert np.isnan(actual)
    actual, expected = call_both(name, x[:0], np.zeros(0, np.int64), reduction=reduction)
    assert_close(actual, expected)


def test_cross_entropy_docstring_example():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    expected = (np.log(np.exp(logits[0]).sum()) - 2.0 + np.log(3.0)) / 2
    assert_close(xr.cross_entropy(logits, np.array([0, 2])), np.float64(expected))


# --------------------------------------------------------------------------- binary losses
@st.composite
def binary_case(draw: st.DrawFn, name: str, specials: bool = False):
    shape = draw(shape_and_axis(min_dims=0))[0]
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    if name == "binary_cross_entropy":
        x = draw(unit_arrays(shape, dtype))
        if specials:  # NaN is not outside [0, 1]: it propagates
            x = np.where(values(draw, np.dtype(np.bool_), shape, st.booleans()), np.nan, x)
            x = x.astype(dtype)
    else:
        x = draw(real_arrays(shape, [dtype], specials=specials))
    tdtype = draw(st.sampled_from([*FLOAT_DTYPES, np.dtype(np.bool_), np.dtype(np.uint8)]))
    if tdtype.kind == "f":
        target = draw(unit_arrays(shape, tdtype))
    else:
        bits = st.booleans() if tdtype.kind == "b" else st.integers(0, 1)
        target = values(draw, tdtype, shape, bits)
    if specials and tdtype.kind == "f" and draw(st.booleans()):
        nan_mask = values(draw, np.dtype(np.bool_), shape, st.booleans())
        target = np.where(nan_mask, np.nan, target).astype(tdtype)
    kwargs = {"reduction": draw(reductions)}
    if draw(st.booleans()):
        ndim = draw(st.integers(0, len(shape)))
        wshape = tuple(draw(st.sampled_from([1, n])) for n in shape[len(shape) - ndim :])
        kwargs["weight"] = relayout(draw(class_weights(wshape)), draw(layouts))
    if name == "binary_cross_entropy_with_logits" and draw(st.booleans()):
        pshape = draw(st.sampled_from([(), (1,), shape[-1:]])) if shape else ()
        kwargs["pos_weight"] = draw(class_weights(pshape))
    return relayout(x, draw(layouts)), relayout(target, draw(layouts)), kwargs


@pytest.mark.parametrize("name", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
@given(data=st.data())
def test_binary_losses(name, data):
    x, target, kwargs = data.draw(binary_case(name))
    actual, expected = call_both(name, x, target, **kwargs)
    assert_close(actual, expected, what=name)


@pytest.mark.parametrize("name", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
@given(data=st.data())
def test_binary_losses_nan_inf(name, data):
    x, target, kwargs = data.draw(binary_case(name, specials=True))
    actual, expected = call_both(name, x, target, **kwargs)
    assert_close(actual, expected, what=name)


def test_binary_cross_entropy_log_clamp():
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-300])
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    assert_close(
        xr.binary_cross_entropy(p, t, reduction="none"), np.array([100.0, 100.0, 0.0, 0.0, 100.0])
    )


def test_binary_with_logits_extreme():
    x = np.array([-1e4, 1e4, -1e4, 1e4, 0.0], dtype=np.float32)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0], dtype=np.float32)
    got = xr.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert_close(got, np.array([1e4, 1e4, 0.0, 0.0, np.log(2.0)], dtype=np.float32))


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize(
    "dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint64, np.bool_]
)
def test_integer_inputs_are_float64(dtype):
    x = (np.arange(12).reshape(3, 4) % 2).astype(dtype)
    t = np.array([0, 1, 3])
    for name, args in [
        ("log_softmax", (x,)),
        ("softmax", (x,)),
        ("logsumexp", (x,)),
        ("entropy", (x,)),
        ("kl_divergence", (x, x)),
        ("cross_entropy", (x, t)),
        ("nll_loss", (x, t)),
        ("categorical_cross_entropy", (x, t)),
        ("binary_cross_entropy", (x, x)),
        ("binary_cross_entropy_with_logits", (x, x)),
    ]:
        actual, expected = call_both(name, *args)
        assert actual.dtype == np.float64, name
        assert_close(actual, expected, what=name)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_result_dtypes(dtype):
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(dtype)
    p = np.full((3, 4), 0.25, dtype=dtype)
    t = np.array([0, 1, 3])
    loss_dtype = np.float64 if dtype == np.float64 else np.float32
    assert xr.log_softmax(x).dtype == dtype
    assert xr.softmax(x).dtype == dtype
    assert xr.logsumexp(x).dtype == loss_dtype
    assert xr.entropy(p).dtype == loss_dtype
    assert xr.kl_divergence(p, p).dtype == loss_dtype
    for reduction in ("none", "sum", "mean"):
        assert xr.cross_entropy(x, t, reduction=reduction).dtype == loss_dtype
        loss, grad = xr.cross_entropy_with_grad(x, t, reduction=reduction)
        assert loss.dtype == loss_dtype
        assert grad.dtype == dtype
        assert xr.nll_loss(x, t, reduction=reduction).dtype == loss_dtype
        assert xr.categorical_cross_entropy(p, t, reduction=reduction).dtype == loss_dtype
        assert xr.binary_cross_entropy(p, p, reduction=reduction).dtype == loss_dtype
        assert xr.binary_cross_entropy_with_logits(x, p, reduction=reduction).dtype == loss_dtype


def test_kl_mixed_dtypes():
    p = np.array([0.2, 0.8], dtype=np.float32)
    q = np.array([0.5, 0.5], dtype=np.float64)
    actual, expected = call_both("kl_divergence", p, q)
    assert actual.dtype == np.float64
    assert_close(actual, expected)
    actual, expected = call_both("kl_divergence", p.astype(np.float16), p)
    assert actual.dtype == np.float32
    assert_close(actual, expected)


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_large_offset_is_exact(dtype):
    """x - logsumexp(x) loses digits when |x| is large: the result must not."""
    x = np.array([[1e4, 1e4 - 1.0, 1e4 - 2.0], [-1e4, -1e4 - 0.5, -1e4 + 3.0]], dtype=dtype)
    expected = reference.log_softmax(x.astype(np.float64)).astype(dtype)
    assert_close(xr.log_softmax(x), expected)
    assert_close(xr.softmax(x), reference.softmax(x.astype(np.float64)).astype(dtype))
    loss = xr.cross_entropy(x, np.array([1, 0]), reduction="none")
    assert_close(loss, (-expected[[0, 1], [1, 0]]).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sums_of_many_terms(dtype):
    """Long reductions in float32: the result within a few ulps of the exact one."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20000, 3)).astype(dtype)
    t = rng.integers(0, 3, 20000)
    for reduction in ("sum", "mean"):
        actual, expected = call_both("cross_entropy", x, t, reduction=reduction)
        assert_close(actual, expected)
        u = rng.uniform(0, 1, (300, 200)).astype(dtype)
        actual, expected = call_both("binary_cross_entropy", u, u, reduction=reduction)
        assert_close(actual, expected)
    row = rng.standard_normal(100000).astype(dtype)
    actual, expected = call_both("logsumexp", row)
    assert_close(actual, expected)
    p = reference.softmax(row.astype(np.float64)).astype(dtype)
    actual, expected = call_both("entropy", p)
    assert_close(actual, expected)


def test_float16_inputs():
    x = (np.random.default_rng(6).standard_normal((5, 9)) * 100).astype(np.float16)
    for name in ("log_softmax", "softmax"):
        actual, expected = call_both(name, x)
        assert actual.dtype == np.float16
        assert_close(actual, expected)
    actual, expected = call_both("cross_entropy", x, np.arange(5), reduction="none")
    assert actual.dtype == np.float32
    assert_close(actual, expected)


# --------------------------------------------------------------------------- pinned edge cases
# Deterministic versions of cases hypothesis found: they must not depend on the draw.
_F16, _F32 = np.float16, np.float32
EDGE_CASES = {
    "ce_probs_inf_target": (
        "cross_entropy",
        (np.array([[0.0, 0.0, -np.inf]]), np.array([[np.inf, np.inf, np.inf]])),
        {"reduction": "none"},
    ),
    "ce_no_classes_probs": (
        "cross_entropy",
        (np.zeros((3, 0)), np.zeros((3, 0))),
        {"reduction": "none"},
    ),
    "ce_no_classes_bool": (
        "cross_entropy",
        (np.zeros((3, 0)), np.zeros((3, 0), bool)),
        {"reduction": "sum"},
    ),
    "ce_grad_no_classes": (
        "cross_entropy_with_grad",
        (np.zeros((3, 0)), np.zeros((3, 0))),
        {"reduction": "sum"},
    ),
    "ce_grad_zero_total_weight": (
        "cross_entropy_with_grad",
        (np.zeros((1, 4)), np.array([0])),
        {"weight": np.array([0.0, 0.0, 0.0, 1.0]), "label_smoothing": 1.0},
    ),
    "kl_subnormal_q": (
        "kl_divergence",
        (np.array([1.0, 0.0]), np.array([2.2250738585e-311, 1.0])),
        {},
    ),
    "kl_tiny_p": ("kl_divergence", (np.array([1e-20, 0.5]), np.array([0.5, 0.5])), {}),
    "kl_tiny_p_and_zero_q": (
        "kl_divergence",
        (np.array([1e-30, 0.5, 0.5]), np.array([0.5, 0.5, 0.0])),
        {},
    ),
    "f16_ce_f32_probs": (
        "cross_entropy",
        (np.array([[0.25, 0.75]], _F16), np.array([[0.3, 0.7]], _F32)),
        {},
    ),
    "f16_ce_grad_f32_probs": (
        "cross_entropy_with_grad",
        (np.array([[0.25, 0.75]], _F16), np.array([[0.3, 0.7]], _F32)),
        {},
    ),
    "f16_nll_f32_probs": (
        "nll_loss",
        (np.array([[-0.25, -0.75]], _F16), np.array([[0.3, 0.7]], _F32)),
        {},
    ),
    "f16_categorical_f32_probs": (
        "categorical_cross_entropy",
        (np.array([[0.25, 0.75]], _F16), np.array([[0.3, 0.7]], _F32)),
        {},
    ),
    "f16_bce_f32_target": (
        "binary_cross_entropy",
        (np.array([0.0], _F16), np.array([0.8136581], _F32)),
        {"reduction": "none"},
    ),
    "f16_bce_f32_weight": (
        "binary_cross_entropy",
        (np.array([0.0], _F16), np.array([1.0], _F16)),
        {"weight": np.array([0.88108295], _F32), "reduction": "none"},
    ),
    "f16_bce_logits_f32_weight": (
        "binary_cross_entropy_with_logits",
        (np.zeros(1, _F16), np.zeros(1, _F16)),
        {"weight": np.array([1.1964206], _F32)},
    ),
    "f16_bce_logits_f64_pos_weight": (
        "binary_cross_entropy_with_logits",
        (np.full(1, -26.0625, _F16), np.ones(1, _F16)),
        {"pos_weight": np.array([1.74155389])},
    ),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_pinned_edge_cases(case):
    name, args, kwargs = EDGE_CASES[case]
    actual, expected = call_both(name, *args, **kwargs)
    if name == "cross_entropy_with_grad":
        assert_close(actual[0], expected[0], what=f"{case} loss")
        assert_close(actual[1], expected[1], what=f"{case} grad")
    else:
        assert_close(actual, expected, what=case)
