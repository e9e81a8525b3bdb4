"""``xent_rs.dask`` against ``xent_rs`` on the same values, computed as NumPy arrays.

Blocks are chunked along rows and along the class axis. Most tests run on dask's synchronous
scheduler; one module-scoped fixture starts a real two-process ``distributed.LocalCluster``.
Skipped when dask (or, for the cluster, distributed) is not installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xent_rs as xr
from conftest import assert_close

da = pytest.importorskip("dask.array")
xd = pytest.importorskip("xent_rs.dask")

try:  # numpy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - numpy 1.24
    from numpy import AxisError  # type: ignore[attr-defined,no-redef]

FLOATS = [np.float16, np.float32, np.float64]
REDUCTIONS = ["none", "sum", "mean"]
# (shape, class axis, chunks): rows only, rows and classes (several layouts), a 1-D row.
LAYOUTS = [
    pytest.param((10, 13), -1, (3, 13), id="rows-only"),
    pytest.param((10, 13), -1, (3, 4), id="rows-and-classes"),
    pytest.param((10, 13), 0, (4, 5), id="classes-on-axis-0"),
    pytest.param((4, 7, 5), 1, (2, 3, 2), id="3d-classes-on-axis-1"),
    pytest.param((13,), 0, (5,), id="one-row"),
]
# A few eps of the result's dtype (relative, or absolute below 1): the blocks' merge adds
# about one rounding to the kernel's.
TOL = 4.0


def compute(a: Any) -> Any:
    return a.compute(scheduler="synchronous")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _logits(shape: tuple[int, ...], dtype: Any, seed: int = 0) -> np.ndarray:
    return (3 * _rng(seed).standard_normal(shape)).astype(dtype)


def _batch(shape: tuple[int, ...], axis: int) -> tuple[tuple[int, ...], int]:
    """``(shape without axis, number of classes)``."""
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1 :], shape[ax]


def _without(chunks: tuple[int, ...], axis: int) -> tuple[int, ...]:
    ax = axis % len(chunks)
    return chunks[:ax] + chunks[ax + 1 :]


def _index_target(shape: tuple[int, ...], axis: int, ignore_index: int = -100) -> np.ndarray:
    batch, n_classes = _batch(shape, axis)
    t = _rng(1).integers(0, n_classes, batch)
    if t.size > 2:  # some ignored samples
        t.reshape(-1)[::3] = ignore_index
    return t


# --------------------------------------------------------------------------- cross_entropy
@pytest.mark.parametrize(("shape", "axis", "chunks"), LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", ["plain", "weight-ignore-smoothing"])
def test_cross_entropy_index_targets(shape, axis, chunks, dtype, reduction, options):
    x = _logits(shape, dtype)
    kwargs: dict[str, Any] = {"axis": axis, "reduction": reduction}
    if options == "plain":
        t = _rng(1).integers(0, _batch(shape, axis)[1], _batch(shape, axis)[0])
    else:
        t = _index_target(shape, axis, ignore_index=-1)
        weight = _rng(2).uniform(0.25, 2.0, _batch(shape, axis)[1])
        kwargs.update(weight=weight, ignore_index=-1, label_smoothing=0.2)
    logits = da.from_array(x, chunks=chunks)
    target = da.from_array(t, chunks=_without(chunks, axis))
    loss = xd.cross_entropy(logits, target, **kwargs)
    assert isinstance(loss, da.Array)
    assert loss.ndim == (len(shape) - 1 if reduction == "none" else 0)
    assert_close(compute(loss), xr.cross_entropy(x, t, **kwargs), TOL)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets(dtype, reduction, label_smoothing):
    x = _logits((4, 7, 5), dtype)
    probs = xr.softmax(_rng(3).standard_normal((4, 7, 5)), axis=1).astype(dtype)
    weight = _rng(2).uniform(0.25, 2.0, 7)
    kwargs = {"axis": 1, "weight": weight, "label_smoothing": label_smoothing}
    logits = da.from_array(x, chunks=(2, 3, 2))
    loss = xd.cross_entropy(logits, da.from_array(probs, chunks=(3, 7, 1)), **kwargs)
    assert_close(compute(loss), xr.cross_entropy(x, probs, **kwargs), TOL)


@pytest.mark.parametrize("chunks", [(3, 13), (3, 4)], ids=["rows-only", "rows-and-classes"])
def test_cross_entropy_all_ignored_mean_is_nan(chunks):
    logits = da.from_array(_logits((10, 13), np.float32), chunks=chunks)
    target = da.full(10, -100, chunks=3)
    mean = compute(xd.cross_entropy(logits, target, weight=np.ones(13)))
    assert isinstance(mean, np.float32) and np.isnan(mean)
    assert compute(xd.cross_entropy(logits, target, reduction="sum")) == 0.0
    empty = da.zeros((0, 13), chunks=(1, 4))
    assert np.isnan(compute(xd.cross_entropy(empty, da.zeros(0, dtype=int))))


def test_cross_entropy_special_values_as_xent_rs():
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [-inf, -inf, 0.0, 1.0],  # a class block of only -inf
            [inf, 1.0, 0.0, 0.0],
            [nan, 0.0, 0.0, 0.0],
            [100.0, 50.0, -inf, -inf],
            [-inf, -inf, -inf, -inf],
            [1.0, inf, inf, 0.0],
            [-inf, -inf, -inf, 5.0],
        ]
    )
    logits = da.from_array(x, chunks=(3, 2))
    weight = np.array([1.0, 0.5, 2.0, 1.0])
    for t in (np.array([0, 1, 1, 0, 2, 0, 3]), np.array([2, 0, -100, 3, -100, 3, 0])):
        for label_smoothing in (0.0, 0.2, 1.0):
            kwargs = {"weight": weight, "label_smoothing": label_smoothing, "reduction": "none"}
            assert_close(
                compute(xd.cross_entropy(logits, t, **kwargs)),
                xr.cross_entropy(x, t, **kwargs),
                TOL,
                what=f"target {t}, label_smoothing {label_smoothing}",
            )
    probs = np.abs(_rng(4).standard_normal(x.shape))
    probs[:, 1] = 0.0
    assert_close(
        compute(xd.cross_entropy(logits, probs, reduction="none")),
        xr.cross_entropy(x, probs, reduction="none"),
        TOL,
    )


def test_cross_entropy_keeps_the_digits_of_a_confident_prediction():
    # logsumexp - x_t would round to 0; the blocks' merge keeps every digit of log1p(...).
    x = np.array([[100.0, 50.0, 40.0, 10.0]])
    loss = compute(xd.cross_entropy(da.from_array(x, chunks=1), np.array([0]), reduction="none"))
    np.testing.assert_allclose(loss, [np.log1p(np.exp(x[0, 1:] - 100.0).sum())], rtol=1e-15)


class _BlockShapes:
    """The shapes of the arrays dask tasks return on the local schedulers (but the last task's,
    which gathers the result for ``compute``)."""

    def __init__(self) -> None:
        from dask.callbacks import Callback

        self.shapes: list[tuple[int, ...]] = []
        self.callback = Callback(posttask=self._record)

    def _record(self, key: Any, result: Any, *_: Any) -> None:
        if isinstance(result, np.ndarray) and not str(key).startswith("finalize"):
            self.shapes.append(result.shape)


def test_class_blocks_are_never_gathered_into_rows():
    n_classes = 13
    rng = da.random.default_rng(7)  # blocks made where they are: no whole array anywhere
    logits = rng.standard_normal((10, n_classes), chunks=(3, 4))
    target = rng.integers(0, n_classes, 10, chunks=3)
    recorder = _BlockShapes()
    with recorder.callback:
        for loss in (
            xd.cross_entropy(logits, target, label_smoothing=0.1),
            xd.log_softmax(logits),
            xd.logsumexp(logits),
        ):
            compute(loss)
    assert recorder.shapes
    assert all(shape[-1:] != (n_classes,) for shape in recorder.shapes), recorder.shapes


def test_results_are_lazy():
    def never(block: np.ndarray) -> np.ndarray:
        raise AssertionError("computed")

    logits = da.zeros((6, 8), chunks=(3, 4)).map_blocks(never, meta=np.empty((0, 0)))
    target = da.zeros(6, dtype=np.int64, chunks=3)
    for loss in (
        xd.cross_entropy(logits, target),
        xd.cross_entropy(logits, target, reduction="none"),
        xd.log_softmax(logits),
        xd.logsumexp(logits, keepdims=True),
        xd.binary_cross_entropy_with_logits(logits, da.zeros((6, 8))),
    ):
        assert isinstance(loss, da.Array)


# --------------------------------------------------------------------------- softmax family
@pytest.mark.parametrize(("shape", "axis", "chunks"), LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_log_softmax(shape, axis, chunks, dtype):
    x = _logits(shape, dtype)
    result = xd.log_softmax(da.from_array(x, chunks=chunks), axis=axis)
    assert result.chunks == da.from_array(x, chunks=chunks).chunks
    assert_close(compute(result), xr.log_softmax(x, axis=axis), TOL)


@pytest.mark.parametrize(("shape", "axis", "chunks"), LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp(shape, axis, chunks, dtype, keepdims):
    x = _logits(shape, dtype)
    result = xd.logsumexp(da.from_array(x, chunks=chunks), axis=axis, keepdims=keepdims)
    assert_close(compute(result), xr.logsumexp(x, axis=axis, keepdims=keepdims), TOL)


def test_softmax_family_special_values_as_xent_rs():
    inf, nan = np.inf, np.nan
    x = np.array([[-inf, -inf, 0, 1], [inf, 1, 0, 0], [nan, 0, 0, 0], [-inf] * 4, [1, inf, inf, 0]])
    chunked = da.from_array(x, chunks=(2, 2))
    assert_close(compute(xd.log_softmax(chunked)), xr.log_softmax(x), TOL)
    assert_close(compute(xd.logsumexp(chunked)), xr.logsumexp(x), TOL)


def test_bfloat16_computes_in_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = _logits((6, 9), ml_dtypes.bfloat16)
    t = np.arange(6)
    chunked = da.from_array(x, chunks=(3, 4))
    assert_close(compute(xd.cross_entropy(chunked, t)), xr.cross_entropy(x, t), TOL)
    assert_close(compute(xd.logsumexp(chunked)), xr.logsumexp(x), TOL)
    assert compute(xd.log_softmax(chunked)).dtype == ml_dtypes.bfloat16


# --------------------------------------------------------------------------- binary losses
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weights", ["none", "numpy", "dask"])
def test_binary_losses(dtype, reduction, weights):
    rng = _rng(5)
    x = rng.standard_normal((7, 5)).astype(dtype)
    probs = rng.uniform(0.0, 1.0, (7, 5)).astype(dtype)
    target = rng.uniform(0.0, 1.0, (7, 5)).astype(dtype)
    weight = rng.uniform(0.0, 2.0, (7, 1))
    pos_weight = rng.uniform(0.5, 2.0, 5)
    kwargs: dict[str, Any] = {"reduction": reduction}
    expected_kwargs = dict(kwargs)
    if weights != "none":
        expected_kwargs.update(weight=weight, pos_weight=pos_weight)
        wrap = (lambda a: da.from_array(a, chunks=2)) if weights == "dask" else (lambda a: a)
        kwargs.update(weight=wrap(weight), pos_weight=wrap(pos_weight))
    chunked_target = da.from_array(target, chunks=(2, 5))  # unlike the inputs' chunks
    loss = xd.binary_cross_entropy_with_logits(
        da.from_array(x, chunks=(3, 2)), chunked_target, **kwargs
    )
    expected = xr.binary_cross_entropy_with_logits(x, target, **expected_kwargs)
    assert_close(compute(loss), expected, TOL)
    kwargs.pop("pos_weight", None)
    expected_kwargs.pop("pos_weight", None)
    loss = xd.binary_cross_entropy(da.from_array(probs, chunks=(3, 2)), chunked_target, **kwargs)
    assert_close(compute(loss), xr.binary_cross_entropy(probs, target, **expected_kwargs), TOL)


# --------------------------------------------------------------------------- errors
def _raised(call: Any) -> tuple[type[BaseException], str]:
    """The type and message of what ``call()`` raises."""
    try:
        call()
    except Exception as exc:
        return type(exc), str(exc)
    raise AssertionError("nothing was raised")


X, T = _logits((10, 13), np.float64), _index_target((10, 13), -1)
ERROR_CASES = [
    pytest.param("cross_entropy", (X, T), {"reduction": "avg"}, id="reduction"),
    pytest.param("cross_entropy", (X, T), {"label_smoothing": 1.5}, id="label_smoothing"),
    pytest.param("cross_entropy", (X, T[:9]), {}, id="target-shape"),
    pytest.param("cross_entropy", (X, np.zeros((10, 12))), {}, id="probs-shape"),
    pytest.param("cross_entropy", (X, T), {"axis": 2}, id="axis"),
    pytest.param("cross_entropy", (X, T), {"weight": np.ones(12)}, id="weight"),
    pytest.param("cross_entropy", (X, T.astype(complex)), {}, id="target-dtype"),
    pytest.param("cross_entropy", (X.astype(complex), T), {}, id="logits-dtype"),
    pytest.param("cross_entropy", (X, np.r_[T[:7], 13, T[8:]]), {}, id="index-out-of-range"),
    pytest.param("log_softmax", (X,), {"axis": -3}, id="log_softmax-axis"),
    pytest.param("logsumexp", (X,), {"keepdims": "yes"}, id="keepdims"),
    pytest.param("binary_cross_entropy", (X, X[:, :4]), {}, id="binary-shape"),
    pytest.param(
        "binary_cross_entropy",
        (np.full((10, 13), 0.5) + (np.arange(13) == 11) * (np.arange(10) == 8)[:, None], X),
        {},
        id="probability-out-of-range",
    ),
    pytest.param(
        "binary_cross_entropy_with_logits",
        (X, X),
        {"pos_weight": np.ones(4)},
        id="pos_weight-shape",
    ),
]


@pytest.mark.parametrize(("name", "args", "kwargs"), ERROR_CASES)
def test_errors_are_those_of_xent_rs(name, args, kwargs):
    """Same exception and message (positions in the whole array), raised when the graph is built
    or, for values, when computed."""
    chunked = [da.from_array(a, chunks=(3, 4)[: a.ndim]) if a.ndim else a for a in args]
    got = _raised(lambda: compute(getattr(xd, name)(*chunked, **kwargs)))
    assert got == _raised(lambda: getattr(xr, name)(*args, **kwargs))


def test_argument_errors_raise_before_computing():
    logits = da.zeros((10, 13), chunks=(3, 4))
    with pytest.raises(ValueError, match="reduction"):
        xd.cross_entropy(logits, da.zeros(10, dtype=int), reduction="avg")
    with pytest.raises(AxisError):
        xd.log_softmax(logits, axis=5)
    unknown = da.from_array(np.arange(10.0), chunks=3)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        xd.logsumexp(unknown[unknown > 2])


# --------------------------------------------------------------------------- distributed
@pytest.fixture(scope="module")
def cluster_client():
    """A client of a real ``LocalCluster``: two worker processes of one thread each."""
    distributed = pytest.importorskip("distributed")
    # No dashboard: its HTTP server is what warns "Port 8787 is already in use" when another
    # cluster runs on the machine, which filterwarnings=error turns into "Cluster failed to
    # start". The other ports are random, and set_as_default=False leaves other tests alone.
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def test_class_chunked_cross_entropy_on_a_local_cluster(cluster_client):
    from distributed import get_task_stream

    rng = _rng(6)
    x = rng.standard_normal((2000, 300)).astype(np.float32)
    t = rng.integers(0, 300, 2000)
    logits = da.from_array(x, chunks=(250, 64))
    assert logits.numblocks == (8, 5)
    loss = xd.cross_entropy(logits, da.from_array(t, chunks=250), label_smoothing=0.1)
    with get_task_stream(cluster_client) as stream:
        result = cluster_client.compute(loss).result()
    assert_close(result, xr.cross_entropy(x, t, label_smoothing=0.1), TOL)
    workers = {task["worker"] for task in stream.data}
    assert len(workers) == 2, workers
