"""``cross_entropy_with_grad``: the gradient against central finite differences and the reference.

The finite differences are taken of ``xr.cross_entropy`` itself (float64), for the sum of the
per-sample losses when ``reduction="none"``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import xent_rs as xr
from conftest import FLOAT_DTYPES, assert_close, assert_identical, call_both
from xent_rs import reference

# (shape, axis): the class axis last, first and in the middle of a 3-d array
SHAPES = [((4, 5), -1), ((5, 4), 0), ((2, 3, 4), 1), ((3, 2, 4), -1), ((6,), 0)]
REDUCTIONS = ["none", "sum", "mean"]


def _batch(shape, axis):
    axis %= len(shape)
    return shape[:axis] + shape[axis + 1 :]


def _case(shape, axis, target_kind, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2
    n_classes = shape[axis]
    if target_kind == "index":
        t = np.asarray(rng.integers(0, n_classes, _batch(shape, axis)))
        if t.ndim:
            t.flat[0] = -100  # one ignored sample
    else:
        t = rng.random(shape) ** 2
        t /= t.sum(axis=axis, keepdims=True)
    return x, t


def _scalar_loss(x, t, **kwargs):
    loss = xr.cross_entropy(x, t, **kwargs)
    return float(np.sum(loss))  # "none": the sum of the per-sample losses


def _finite_differences(x, t, h=1e-5, **kwargs):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        grad[i] = (_scalar_loss(xp, t, **kwargs) - _scalar_loss(xm, t, **kwargs)) / (2 * h)
    return grad


CASES = list(
    itertools.product(SHAPES, ["index", "probs"], [False, True], [0.0, 0.3, 1.0], REDUCTIONS)
)


@pytest.mark.parametrize(
    ("shape_axis", "target_kind", "weighted", "label_smoothing", "reduction"),
    CASES,
    ids=[f"{s}-ax{a}-{k}-w{int(w)}-e{e}-{r}" for (s, a), k, w, e, r in CASES],
)
def test_gradient_finite_differences(shape_axis, target_kind, weighted, label_smoothing, reduction):
    shape, axis = shape_axis
    x, t = _case(shape, axis, target_kind)
    weight = np.random.default_rng(1).uniform(0.5, 2.0, shape[axis]) if weighted else None
    kwargs = {
        "axis": axis,
        "weight": weight,
        "label_smoothing": label_smoothing,
        "reduction": reduction,
    }
    loss, grad = xr.cross_entropy_with_grad(x, t, **kwargs)
    fd = _finite_differences(x, t, **kwargs)
    scale = max(1.0, abs(_scalar_loss(x, t, **kwargs)))
    assert grad.shape == x.shape
    assert grad.dtype == x.dtype
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * scale)
    # against the reference, and the loss is cross_entropy's
    (loss_a, grad_a), (loss_e, grad_e) = call_both("cross_entropy_with_grad", x, t, **kwargs)
    assert_close(grad_a, grad_e, what="grad")
    assert_close(loss_a, loss_e, what="loss")
    assert_identical(loss, xr.cross_entropy(x, t, **kwargs), what="loss vs cross_entropy")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.4])
def test_ignored_samples_have_zero_gradient(reduction, label_smoothing):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 4)) * 3
    t = rng.integers(0, 5, (3, 4))
    t[0, 1] = t[2, 3] = t[1, 0] = 7
    loss, grad = xr.cross_entropy_with_grad(
        x,
        t,
        axis=1,
        ignore_index=7,
        reduction=reduction,
        label_smoothing=label_smoothing,
        weight=rng.uniform(0.5, 2, 5),
    )
    for i, j in [(0, 1), (2, 3), (1, 0)]:
        assert np.all(grad[i, :, j] == 0.0)
    assert np.all(np.any(grad[0, :, [0, 2, 3]] != 0.0, axis=-1))
    if reduction == "none":
        assert loss[0, 1] == loss[2, 3] == loss[1, 0] == 0.0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_ignored(reduction):
    x = np.random.default_rng(3).standard_normal((4, 3))
    loss, grad = xr.cross_entropy_with_grad(x, np.full(4, -100), reduction=reduction)
    assert np.all(grad == 0.0)
    assert_close(loss, reference.cross_entropy(x, np.full(4, -100), reduction=reduction))
    if reduction == "mean":
        assert np.isnan(loss)


@pytest.mark.parametrize("dtype", [*FLOAT_DTYPES, np.int32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_grad_dtype_shape_and_loss(dtype, reduction, axis):
    rng = np.random.default_rng(4)
    shape = (3, 6, 5)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = rng.integers(0, shape[axis], _batch(shape, axis))
    for target in (
        t,
        reference.softmax(rng.standard_normal(shape), axis=axis).astype(
            np.float64 if np.dtype(dtype).kind == "i" else dtype
        ),
    ):
        kw = {"axis": axis, "reduction": reduction, "label_smoothing": 0.1}
        loss, grad = xr.cross_entropy_with_grad(x, target, **kw)
        assert grad.shape == x.shape
        assert grad.dtype == (np.float64 if np.dtype(dtype).kind == "i" else dtype)
        assert_identical(loss, xr.cross_entropy(x, target, **kw), what="loss vs cross_entropy")
        (la, ga), (le, ge) = call_both("cross_entropy_with_grad", x, target, **kw)
        assert_close(ga, ge, what="grad")
        assert_close(la, le, what="loss")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradient_rows_sum_to_zero(reduction):
    """Without weights each sample's gradient sums to 0 over the classes (softmax - target)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 9)) * 5
    t = rng.integers(0, 9, 50)
    _, grad = xr.cross_entropy_with_grad(x, t, reduction=reduction, label_smoothing=0.2)
    assert np.allclose(grad.sum(axis=-1), 0.0, atol=1e-14)
    s = reference.softmax(x)
    divisor = 50 if reduction == "mean" else 1
    onehot = np.eye(9)[t]
    assert_close(grad, (s - (0.8 * onehot + 0.2 / 9)) / divisor)


def test_gradient_extreme_logits():
    """Large logits: the gradient stays finite and exact (softmax - onehot)."""
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4 + 1.0], [500.0, 500.0, 500.0]])
    t = np.array([1, 2, 0])
    loss, grad = xr.cross_entropy_with_grad(x, t, reduction="sum")
    expected = reference.softmax(x) - np.eye(3)[t]
    assert_close(grad, expected)
    assert_close(loss, reference.cross_entropy(x, t, reduction="sum"))
    for dtype in (np.float32, np.float16):
        xd = x.astype(dtype)
        _, g = xr.cross_entropy_with_grad(xd, t, reduction="sum")
        assert np.all(np.isfinite(g))
        assert_close(g, reference.cross_entropy_with_grad(xd, t, reduction="sum")[1])
