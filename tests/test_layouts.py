"""Memory layouts, array-likes, memory-mapped files, threads and backend selection."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xent_rs as xr
from conftest import assert_close, assert_identical, call_both
from xent_rs import reference

RNG = np.random.default_rng(20)


def _all_functions(x, t, p, q, axis):
    """``{name: result}`` of every function on one input (class axis ``axis``)."""
    out = {
        "log_softmax": xr.log_softmax(x, axis=axis),
        "softmax": xr.softmax(x, axis=axis),
        "logsumexp": xr.logsumexp(x, axis=axis),
        "logsumexp_keepdims": xr.logsumexp(x, axis=axis, keepdims=True),
        "entropy": xr.entropy(p, axis=axis),
        "kl_divergence": xr.kl_divergence(p, q, axis=axis),
    }
    for reduction in ("none", "sum", "mean"):
        kw = {"axis": axis, "reduction": reduction}
        out[f"cross_entropy_{reduction}"] = xr.cross_entropy(x, t, **kw)
        out[f"cross_entropy_smooth_{reduction}"] = xr.cross_entropy(
            x, t, label_smoothing=0.1, weight=np.linspace(0.5, 2, x.shape[axis]), **kw
        )
        out[f"cross_entropy_probs_{reduction}"] = xr.cross_entropy(x, q, **kw)
        loss, grad = xr.cross_entropy_with_grad(x, t, **kw)
        out[f"with_grad_loss_{reduction}"] = loss
        out[f"with_grad_grad_{reduction}"] = grad
        out[f"nll_{reduction}"] = xr.nll_loss(x, t, **kw)
        out[f"categorical_{reduction}"] = xr.categorical_cross_entropy(p, t, **kw)
        out[f"bce_{reduction}"] = xr.binary_cross_entropy(p, q, reduction=reduction)
        out[f"bce_logits_{reduction}"] = xr.binary_cross_entropy_with_logits(
            x, q, reduction=reduction
        )
    return out


# --------------------------------------------------------------------------- NCHW
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_axis_1_equals_moved_axis(dtype):
    """A (N, C, d1, d2) input with axis=1 equals the computation with the classes moved last."""
    x = (RNG.standard_normal((3, 5, 4, 6)) * 4).astype(dtype)
    t = RNG.integers(0, 5, (3, 4, 6))
    t[0, 0, :3] = -100
    p = reference.softmax(x.astype(np.float64), axis=1).astype(dtype)
    q = reference.softmax(RNG.standard_normal(x.shape), axis=1).astype(dtype)
    by_axis = _all_functions(x, t, p, q, axis=1)
    last = [np.moveaxis(a, 1, -1) for a in (x, p, q)]
    moved = _all_functions(last[0], t, last[1], last[2], axis=-1)
    for name, value in by_axis.items():
        expected = moved[name]
        if np.ndim(expected) == 4:  # class axis (or elementwise losses): move it back to 1
            expected = np.moveaxis(expected, -1, 1)
        assert_close(value, expected, what=name)


# --------------------------------------------------------------------------- memory-mapped files
@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<f4", ">f4", "<f2"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_memmap(tmp_path, dtype, order):
    x = (RNG.standard_normal((7, 9)) * 5).astype(dtype)
    path = tmp_path / "x.dat"
    header = 16  # data at an offset into the file
    with open(path, "wb") as f:
        f.write(b"\0" * header)
        f.write(np.asarray(x, order=order).tobytes(order=order))
    mm = np.memmap(path, dtype=dtype, mode="r", shape=x.shape, order=order, offset=header)
    targets = {-1: RNG.integers(0, 9, 7), 0: RNG.integers(0, 7, 9)}
    for axis in (0, -1):
        for name in ("log_softmax", "softmax", "logsumexp"):
            actual, expected = call_both(name, mm, axis=axis)
            assert_close(actual, expected, what=name)
        actual, expected = call_both("cross_entropy", mm, targets[axis], axis=axis)
        assert_close(actual, expected, what="cross_entropy")
    del mm


def test_np_load_mmap(tmp_path):
    x = RNG.standard_normal((40, 30))
    t = RNG.integers(0, 30, 40)
    p = reference.softmax(x)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    np.save(tmp_path / "p.npy", np.asfortranarray(p))
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    tm = np.load(tmp_path / "t.npy", mmap_mode="r")
    pm = np.load(tmp_path / "p.npy", mmap_mode="r")
    assert not xm.flags.writeable
    for name, args in [
        ("log_softmax", (xm,)),
        ("softmax", (xm,)),
        ("logsumexp", (xm,)),
        ("entropy", (pm,)),
        ("kl_divergence", (pm, xm * 0 + 1 / 30)),
        ("cross_entropy", (xm, tm)),
        ("cross_entropy_with_grad", (xm, tm)),
        ("cross_entropy", (xm, pm)),
        ("nll_loss", (xm, tm)),
        ("categorical_cross_entropy", (pm, tm)),
        ("binary_cross_entropy", (pm, pm)),
        ("binary_cross_entropy_with_logits", (xm, pm)),
    ]:
        actual, expected = call_both(name, *args)
        for a, e in zip(
            actual if isinstance(actual, tuple) else (actual,),
            expected if isinstance(expected, tuple) else (expected,),
            strict=True,
        ):
            assert_close(
                np.asarray(a) if isinstance(a, np.memmap) else a,
                np.asarray(e) if isinstance(e, np.memmap) else e,
                what=name,
            )
    del xm, tm, pm


# --------------------------------------------------------------------------- array-likes
class ArrayLike:
    """Not an ndarray, but np.asarray accepts it (like a PyTorch CPU tensor)."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)


def test_lists_and_nested_lists():
    x = [[1.0, 2.0, 3.0], [0.5, 0.5, -1.0]]
    xa = np.array(x)
    for name in ("log_softmax", "softmax", "logsumexp", "entropy"):
        assert_close(getattr(xr, name)(x), getattr(reference, name)(xa), what=name)
        assert_close(getattr(xr, name)(x, axis=0), getattr(reference, name)(xa, axis=0))
    assert_close(xr.log_softmax([1, 2, 3]), reference.log_softmax(np.array([1.0, 2.0, 3.0])))
    assert_close(xr.logsumexp((0.0, 0.0)), np.float64(np.log(2.0)))
    assert_close(
        xr.kl_divergence([0.5, 0.5], [[0.25, 0.75], [0.5, 0.5]]),
        reference.kl_divergence(np.array([0.5, 0.5]), np.array([[0.25, 0.75], [0.5, 0.5]])),
    )
    for reduction in ("none", "sum", "mean"):
        kw = {"reduction": reduction}
        assert_close(xr.cross_entropy(x, [2, 0], **kw), reference.cross_entropy(xa, [2, 0], **kw))
        assert_close(
            xr.cross_entropy(x, [2, 0], weight=[1, 2, 3], **kw),
            reference.cross_entropy(xa, np.array([2, 0]), weight=np.array([1.0, 2, 3]), **kw),
        )
        assert_close(
            xr.cross_entropy(x, [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], **kw),
            reference.cross_entropy(xa, [2, 0], **kw),
        )
        assert_close(xr.nll_loss(x, (2, 0), **kw), reference.nll_loss(xa, [2, 0], **kw))
        assert_close(
            xr.categorical_cross_entropy([[0.2, 0.8]], [1], **kw),
            reference.categorical_cross_entropy(np.array([[0.2, 0.8]]), [1], **kw),
        )
        assert_close(
            xr.binary_cross_entropy([0.2, 0.9], [0, 1], weight=[1.0, 2.0], **kw),
            reference.binary_cross_entropy(
                np.array([0.2, 0.9]), np.array([0.0, 1.0]), weight=np.array([1.0, 2.0]), **kw
            ),
        )
        assert_close(
            xr.binary_cross_entropy_with_logits(x, xa > 0, pos_weight=[1, 2, 3], **kw),
            reference.binary_cross_entropy_with_logits(
                xa, (xa > 0).astype(float), pos_weight=np.array([1.0, 2.0, 3.0]), **kw
            ),
        )
    _, grad = xr.cross_entropy_with_grad(x, [2, 0])
    assert_close(grad, reference.cross_entropy_with_grad(xa, [2, 0])[1])


def test_empty_list_target_is_indices():
    x = np.zeros((0, 3))
    assert_close(xr.cross_entropy(x, [], reduction="sum"), np.float64(0.0))
    assert np.isnan(xr.cross_entropy(x, []))


def test_python_scalars_for_binary_losses():
    assert_close(
        xr.binary_cross_entropy(0.25, 1.0),
        reference.binary_cross_entropy(np.float64(0.25), np.float64(1.0)),
    )
    assert_close(
        xr.binary_cross_entropy_with_logits(2.0, 0.0, reduction="none"),
        reference.binary_cross_entropy_with_logits(2.0, 0.0, reduction="none"),
    )


def test_array_protocol_objects():
    x = RNG.standard_normal((4, 6))
    t = RNG.integers(0, 6, 4)
    assert_close(xr.softmax(ArrayLike(x)), reference.softmax(x))
    assert_close(
        xr.cross_entropy(ArrayLike(x), ArrayLike(t), weight=ArrayLike(np.ones(6))),
        reference.cross_entropy(x, t),
    )
    assert_close(
        xr.binary_cross_entropy_with_logits(ArrayLike(x), ArrayLike(x > 0)),
        reference.binary_cross_entropy_with_logits(x, (x > 0).astype(float)),
    )


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_results_do_not_alias_inputs(name):
    x = RNG.standard_normal((3, 4))
    y = getattr(xr, name)(x)
    assert not np.shares_memory(x, y)
    assert y.flags.writeable
    assert y.flags.c_contiguous or y.flags.f_contiguous


# --------------------------------------------------------------------------- threads
@pytest.mark.usefixtures("restore_threads")
def test_set_get_num_threads():
    for n in (1, 2, 3, 7, 1):
        xr.set_num_threads(n)
        assert xr.get_num_threads() == n
    xr.set_num_threads(np.int64(2))
    assert xr.get_num_threads() == 2
    assert type(xr.get_num_threads()) is int
    for bad, exc in ((0, ValueError), (-3, ValueError), (2.0, TypeError), ("4", TypeError)):
        with pytest.raises(exc):
            xr.set_num_threads(bad)
        assert xr.get_num_threads() == 2


@pytest.mark.usefixtures("restore_threads", "rust_only")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0])
def test_results_independent_of_thread_count(dtype, axis):
    """Bitwise identical results for 1, 2 and 3 threads, on inputs large enough to split."""
    rng = np.random.default_rng(21)
    shape = (3000, 700) if axis == -1 else (700, 3000)
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    t = rng.integers(0, 700, 3000)
    t[::17] = -100
    p = xr.softmax(x, axis=axis)
    q = xr.softmax(x[::-1] if axis == -1 else x[:, ::-1], axis=axis)
    results = []
    for n in (1, 2, 3):
        xr.set_num_threads(n)
        assert xr.get_num_threads() == n
        results.append(_all_functions(x, t, p, q, axis))
    for name in results[0]:
        for n, other in zip((2, 3), results[1:], strict=True):
            assert_identical(other[name], results[0][name], what=f"{name}, {n} threads vs 1")


def test_num_threads_environment_default():
    env = dict(os.environ, XENT_RS_NUM_THREADS="3")
    assert _run_python("import xent_rs; print(xent_rs.get_num_threads())", env) == "3"


# --------------------------------------------------------------------------- backend selection
def _run_python(code: str, env: dict[str, str]) -> str:
    package_root = os.path.dirname(os.path.dirname(xr.__file__))
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_backend_python_forced():
    env = dict(os.environ, XENT_RS_BACKEND="python")
    out = _run_python(
        """
        import xent_rs
        print(xent_rs.BACKEND, xent_rs.softmax is xent_rs.reference.softmax)
        """,
        env,
    )
    assert out == "python True"


def test_backend_fallback_warns():
    env = {k: v for k, v in os.environ.items() if k != "XENT_RS_BACKEND"}
    out = _run_python(
        """
        import sys, warnings
        sys.modules["xent_rs._rust"] = None  # the native path cannot be imported
        sys.modules["xent_rs._native"] = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import xent_rs
        print(xent_rs.BACKEND)
        print([(w.category.__name__, str(w.message)) for w in caught])
        """,
        env,
    )
    backend, warned = out.splitlines()
    assert backend == "python"
    assert "RuntimeWarning" in warned
    assert "xent_rs" in warned


def test_rust_backend_in_use(rust_only):
    assert xr.BACKEND == "rust"
    assert xr.softmax is not reference.softmax
    assert xr.cross_entropy is not reference.cross_entropy
    assert xr.reference is reference


def test_version():
    assert isinstance(xr.__version__, str)
    assert xr.__version__.count(".") >= 1
