"""Agreement with independent implementations.

scipy.special and scikit-learn are in the ``test`` extra and always run. PyTorch (the semantic
reference of API.md), JAX and optax are optional: those tests are skipped when not installed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.special
import xent_rs as xr
from conftest import assert_close, shape_and_axis
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import log_loss


def _importorskip(name: str):
    with warnings.catch_warnings():  # third-party import-time warnings are not ours
        warnings.simplefilter("ignore")
        return pytest.importorskip(name)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@st.composite
def float64_case(draw: st.DrawFn):
    shape, axis = draw(shape_and_axis(min_side=1))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
    return _rng(seed).standard_normal(shape) * scale, axis


# --------------------------------------------------------------------------- scipy
@given(case=float64_case())
def test_scipy_log_softmax_softmax(case):
    x, axis = case
    assert_close(xr.log_softmax(x, axis=axis), scipy.special.log_softmax(x, axis=axis))
    assert_close(xr.softmax(x, axis=axis), scipy.special.softmax(x, axis=axis))


@given(case=float64_case(), keepdims=st.booleans())
def test_scipy_logsumexp(case, keepdims):
    x, axis = case
    expected = np.asarray(scipy.special.logsumexp(x, axis=axis, keepdims=keepdims))
    actual = xr.logsumexp(x, axis=axis, keepdims=keepdims)
    assert_close(np.asarray(actual), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scipy_float32_dtypes(dtype):
    x = (_rng(0).standard_normal((6, 9)) * 5).astype(dtype)
    assert_close(xr.log_softmax(x), scipy.special.log_softmax(x, axis=-1).astype(dtype))
    assert_close(xr.softmax(x), scipy.special.softmax(x, axis=-1).astype(dtype))


def test_scipy_logsumexp_special_values():
    for row in ([np.inf, 1.0], [-np.inf, -np.inf], [np.nan, 1.0], [-np.inf, 0.0], [1e308, 1e308]):
        with np.errstate(all="ignore"):
            expected = np.float64(scipy.special.logsumexp(np.array(row)))
        assert_close(xr.logsumexp(np.array(row)), expected)


@st.composite
def prob_case(draw: st.DrawFn):
    shape, axis = draw(shape_and_axis(min_side=1))
    rng = _rng(draw(st.integers(0, 2**32 - 1)))
    p = scipy.special.softmax(
        rng.standard_normal(shape) * draw(st.sampled_from([1, 5, 30])), axis=axis
    )
    q = scipy.special.softmax(rng.standard_normal(shape) * 3, axis=axis)
    zeros = rng.random(shape) < draw(st.sampled_from([0.0, 0.2]))
    p[zeros] = 0.0
    q[rng.random(shape) < 0.05] = 0.0
    return p, q, axis


@given(case=prob_case())
def test_scipy_entropy(case):
    p, _, axis = case
    expected = np.asarray(scipy.special.entr(p).sum(axis=axis))[()]
    assert_close(xr.entropy(p, axis=axis), expected)


@given(case=prob_case())
def test_scipy_kl_divergence(case):
    p, q, axis = case
    terms = scipy.special.rel_entr(p, q)
    expected = np.asarray(terms.sum(axis=axis))[()]
    finite = np.where(np.isfinite(terms), np.abs(terms), 0.0)
    assert_close(xr.kl_divergence(p, q, axis=axis), expected, scale=finite.sum(axis=axis))


def test_scipy_entr_rel_entr_special_values():
    p = np.array([0.0, 1.0, -0.5, np.nan, 0.25, 0.0, 2.0])
    q = np.array([0.0, 0.0, 0.5, 0.5, np.nan, 1.0, 0.5])
    for a, b in zip(p, q, strict=True):
        pa, qb = np.array([a, 0.5]), np.array([b, 0.5])
        with np.errstate(all="ignore"):
            assert_close(xr.entropy(pa), np.float64(scipy.special.entr(pa).sum()))
            assert_close(xr.kl_divergence(pa, qb), np.float64(scipy.special.rel_entr(pa, qb).sum()))


# --------------------------------------------------------------------------- scikit-learn
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [2, 3, 7])
@pytest.mark.parametrize("seed", range(4))
def test_sklearn_log_loss(dtype, n_classes, seed):
    rng = _rng(seed)
    p = scipy.special.softmax(rng.standard_normal((40, n_classes)) * 4, axis=1)
    p[rng.random(p.shape) < 0.1] = 0.0  # clipped at eps by both
    p = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
    y = rng.integers(0, n_classes, 40)
    labels = list(range(n_classes))
    loss_dtype = np.dtype(dtype)
    assert_close(xr.categorical_cross_entropy(p, y), loss_dtype.type(log_loss(y, p, labels=labels)))
    assert_close(
        xr.categorical_cross_entropy(p, y, reduction="sum"),
        loss_dtype.type(log_loss(y, p, labels=labels, normalize=False)),
    )
    w = rng.uniform(0.5, 2.0, n_classes)
    assert_close(
        xr.categorical_cross_entropy(p, y, weight=w),
        loss_dtype.type(log_loss(y, p, labels=labels, sample_weight=w[y])),
    )
    # one-hot probability targets give the same loss
    assert_close(
        xr.categorical_cross_entropy(p, np.eye(n_classes, dtype=dtype)[y]),
        loss_dtype.type(log_loss(y, p, labels=labels)),
    )


# --------------------------------------------------------------------------- PyTorch
@pytest.fixture(scope="module")
def torch():
    return _importorskip("torch")


def _np(t):
    a = t.detach().cpu().numpy()
    return a[()] if a.ndim == 0 else a


def _index_target(rng, batch, n_classes, ignore=True):
    t = np.asarray(rng.integers(0, n_classes, batch))
    if ignore and t.size > 1:
        t.flat[1] = -100
    return t


TORCH_SHAPES = [((8, 5), -1), ((3, 4, 2, 3), 1), ((6,), 0)]


@pytest.mark.parametrize(("shape", "axis"), TORCH_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("target_kind", ["index", "probs"])
def test_torch_cross_entropy_and_grad(torch, shape, axis, dtype, label_smoothing, target_kind):
    for reduction in ("none", "sum", "mean"):
        for weighted in (False, True):
            _torch_cross_entropy_case(
                torch, shape, axis, dtype, reduction, weighted, label_smoothing, target_kind
            )


def _torch_cross_entropy_case(
    torch, shape, axis, dtype, reduction, weighted, label_smoothing, target_kind
):
    F = torch.nn.functional
    rng = _rng(7)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    n_classes = shape[axis]
    batch = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    if target_kind == "index":
        t = _index_target(rng, batch, n_classes)
        tt = torch.from_numpy(t)
    else:
        t = scipy.special.softmax(rng.standard_normal(shape), axis=axis).astype(dtype)
        tt = torch.from_numpy(t)
    w = rng.uniform(0.5, 2.0, n_classes).astype(dtype) if weighted else None
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    if len(shape) == 1:  # torch: unbatched input (C,) with a 0-d target
        tt = tt.reshape(()) if target_kind == "index" else tt
    expected = F.cross_entropy(
        xt,
        tt,
        weight=None if w is None else torch.from_numpy(w),
        ignore_index=-100,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    (expected.sum() if reduction == "none" else expected).backward()
    kw = {"axis": axis, "weight": w, "label_smoothing": label_smoothing, "reduction": reduction}
    target = t if len(shape) > 1 or target_kind == "probs" else np.asarray(t).reshape(())
    loss = xr.cross_entropy(x, target, **kw)
    loss_dtype = np.dtype(dtype)
    exp = _np(expected)
    exp = loss_dtype.type(exp) if reduction != "none" else np.asarray(exp, loss_dtype)
    assert_close(loss, exp, what="loss")
    loss2, grad = xr.cross_entropy_with_grad(x, target, **kw)
    assert_close(loss2, exp, what="with_grad loss")
    assert_close(grad, _np(xt.grad).astype(dtype), what="grad")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_nll_loss(torch, reduction, weighted, dtype):
    F = torch.nn.functional
    rng = _rng(8)
    for shape, axis in TORCH_SHAPES[:2]:
        logp = scipy.special.log_softmax(rng.standard_normal(shape) * 3, axis=axis).astype(dtype)
        batch = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
        t = _index_target(rng, batch, shape[axis])
        w = rng.uniform(0.5, 2.0, shape[axis]).astype(dtype) if weighted else None
        expected = F.nll_loss(
            torch.from_numpy(logp),
            torch.from_numpy(t),
            weight=None if w is None else torch.from_numpy(w),
            reduction=reduction,
        )
        exp = _np(expected)
        exp = np.dtype(dtype).type(exp) if reduction != "none" else exp.astype(dtype)
        assert_close(xr.nll_loss(logp, t, axis=axis, weight=w, reduction=reduction), exp)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_binary_losses(torch, reduction, dtype):
    F = torch.nn.functional
    rng = _rng(9)
    shape = (6, 5)
    p = rng.uniform(0, 1, shape).astype(dtype)
    p[0, :2] = [0.0, 1.0]  # logs clamped at -100
    x = (rng.standard_normal(shape) * 10).astype(dtype)
    x[1, :2] = [-200.0, 200.0]
    t = rng.uniform(0, 1, shape).astype(dtype)
    t[2] = rng.integers(0, 2, 5)
    w = rng.uniform(0.5, 2.0, (1, 5)).astype(dtype)
    pw = rng.uniform(0.5, 3.0, 5).astype(dtype)
    tp, tx, tt, tw, tpw = (torch.from_numpy(a) for a in (p, x, t, w, pw))
    rdt = np.dtype(dtype)

    def conv(v):
        v = _np(v)
        return rdt.type(v) if reduction != "none" else v.astype(dtype)

    assert_close(
        xr.binary_cross_entropy(p, t, reduction=reduction),
        conv(F.binary_cross_entropy(tp, tt, reduction=reduction)),
    )
    assert_close(
        xr.binary_cross_entropy(p, t, weight=w, reduction=reduction),
        conv(F.binary_cross_entropy(tp, tt, weight=tw, reduction=reduction)),
    )
    assert_close(
        xr.binary_cross_entropy_with_logits(x, t, reduction=reduction),
        conv(F.binary_cross_entropy_with_logits(tx, tt, reduction=reduction)),
    )
    assert_close(
        xr.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw, reduction=reduction),
        conv(
            F.binary_cross_entropy_with_logits(
                tx, tt, weight=tw, pos_weight=tpw, reduction=reduction
            )
        ),
    )


def test_torch_softmax_family(torch):
    x = _rng(10).standard_normal((4, 6, 5)) * 20
    for axis in (0, 1, 2, -1):
        xt = torch.from_numpy(x)
        assert_close(xr.log_softmax(x, axis=axis), _np(torch.log_softmax(xt, dim=axis)))
        assert_close(xr.softmax(x, axis=axis), _np(torch.softmax(xt, dim=axis)))
        assert_close(xr.logsumexp(x, axis=axis), _np(torch.logsumexp(xt, dim=axis)))
    special = np.array([[np.inf, 1.0], [-np.inf, -np.inf], [np.nan, 0.0], [np.inf, np.inf]])
    assert_close(xr.logsumexp(special), _np(torch.logsumexp(torch.from_numpy(special), dim=-1)))
    special = special[1:]  # rows whose log_softmax is NaN whichever way it is computed
    assert_close(xr.log_softmax(special), _np(torch.log_softmax(torch.from_numpy(special), dim=-1)))


def test_torch_tensors_accepted(torch):
    """Anything np.asarray accepts: CPU tensors, as inputs, targets and weights."""
    rng = _rng(11)
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    assert_close(xr.softmax(xt), xr.softmax(x))
    assert_close(
        xr.cross_entropy(xt, tt, weight=torch.ones(4, dtype=torch.float64)),
        xr.cross_entropy(x, t, weight=np.ones(4)),
    )
    assert_close(xr.cross_entropy(xt.float(), tt), xr.cross_entropy(x.astype(np.float32), t))


# --------------------------------------------------------------------------- JAX / optax
@pytest.fixture
def jax():
    jax = _importorskip("jax")
    try:
        old = bool(jax.config.jax_enable_x64)
    except AttributeError:  # pragma: no cover - very old or very new jax
        old = False
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", bool(old))


def test_jax_log_softmax(jax):
    jnp = _importorskip("jax.numpy")
    jsp = _importorskip("jax.scipy.special")
    x = _rng(12).standard_normal((5, 7, 3)) * 30
    for axis in (0, 1, -1):
        assert_close(
            xr.log_softmax(x, axis=axis), np.asarray(jax.nn.log_softmax(jnp.asarray(x), axis=axis))
        )
        assert_close(
            xr.softmax(x, axis=axis), np.asarray(jax.nn.softmax(jnp.asarray(x), axis=axis))
        )
        assert_close(
            xr.logsumexp(x, axis=axis),
            np.asarray(jsp.logsumexp(jnp.asarray(x), axis=axis)),
        )


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_optax_losses(jax, label_smoothing):
    optax = _importorskip("optax")
    jnp = _importorskip("jax.numpy")
    rng = _rng(13)
    x = rng.standard_normal((9, 6)) * 4
    y = rng.integers(0, 6, 9)
    if label_smoothing == 0.0:
        expected = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(x), jnp.asarray(y))
        assert_close(xr.cross_entropy(x, y, reduction="none"), np.asarray(expected))
    onehot = np.eye(6)[y]
    smoothed = optax.smooth_labels(jnp.asarray(onehot), label_smoothing)
    expected = optax.softmax_cross_entropy(jnp.asarray(x), smoothed)
    assert_close(
        xr.cross_entropy(x, y, reduction="none", label_smoothing=label_smoothing),
        np.asarray(expected),
    )
    assert_close(
        xr.cross_entropy(x, onehot, reduction="none", label_smoothing=label_smoothing),
        np.asarray(expected),
    )
    t = rng.uniform(0, 1, x.shape)
    expected = optax.sigmoid_binary_cross_entropy(jnp.asarray(x), jnp.asarray(t))
    assert_close(xr.binary_cross_entropy_with_logits(x, t, reduction="none"), np.asarray(expected))
