"""The one-step native path of ``cross_entropy``'s common call (``_native.cross_entropy_common``):
taken exactly when it applies, bitwise the full path's result, and never the source of an error
(any error goes through the full path, which names the argument)."""

from __future__ import annotations

import numpy as np
import pytest
import xent_rs as xr

pytestmark = pytest.mark.usefixtures("rust_only")

RNG = np.random.default_rng(7)
X32 = RNG.standard_normal((6, 5)).astype(np.float32) * 4
T = np.array([0, 4, -100, 2, 2, 1])


def common(x, t, axis=-1, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    from xent_rs import _native

    return _native.cross_entropy_common(
        x, t, axis, weight, ignore_index, label_smoothing, reduction
    )


def full(x, t, **kw):
    from xent_rs import _rust

    args = dict(axis=-1, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean")
    args.update(kw)
    return _rust._cross_entropy(
        x,
        t,
        args["axis"],
        args["weight"],
        args["ignore_index"],
        args["label_smoothing"],
        args["reduction"],
        False,
    )[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("axis", [-1, 1])
def test_common_call_is_the_full_path_bit_for_bit(dtype, reduction, smoothing, axis):
    x = X32.astype(dtype)
    kw = dict(axis=axis, label_smoothing=smoothing, reduction=reduction)
    fast = common(x, T, **kw)
    assert fast is not None
    expected = full(x, T, **kw)
    assert type(fast) is type(expected) is np.dtype(dtype).type
    assert fast.tobytes() == expected.tobytes()
    assert xr.cross_entropy(x, T, **kw).tobytes() == expected.tobytes()


def test_special_results_match_the_full_path():
    every_ignored = np.full(6, -100)
    for reduction in ["mean", "sum"]:  # mean of nothing: nan; sum of nothing: 0
        got = common(X32, every_ignored, reduction=reduction)
        assert got.tobytes() == full(X32, every_ignored, reduction=reduction).tobytes()
    huge = np.array([[3e38, -3e38, 0.0]], np.float32)  # a float32 sum beyond the range: inf
    got = common(np.repeat(huge, 4, axis=0), np.array([1, 1, 1, 1]), reduction="sum")
    assert got == np.float32(np.inf) and type(got) is np.float32


def unaligned(a):
    """A copy of ``a`` whose elements are one byte off their alignment."""
    buffer = np.zeros(a.nbytes + 1, np.uint8)
    view = buffer[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned
    return view


class Sub(np.ndarray):
    pass


@pytest.mark.parametrize(
    "x, t, kw",
    [
        (X32, T, dict(weight=np.ones(5, np.float32))),
        (X32, T, dict(axis=0)),
        (X32, T, dict(reduction="none")),
        (X32, T, dict(reduction=np.str_("mean"))),
        (X32, T, dict(ignore_index=True)),
        (X32, T, dict(ignore_index=np.int64(-100))),
        (X32, T, dict(label_smoothing=0)),
        (X32, T.astype(np.int32), {}),
        (X32, list(T), {}),
        (X32.tolist(), T, {}),
        (X32.astype(np.float16), T, {}),
        (X32.view(Sub), T, {}),
        (X32[None], T[None], {}),
        (X32[0], np.array(1), {}),
        (np.zeros((0, 5), np.float32), np.zeros(0, np.int64), {}),
        (X32, T[:5], {}),
        (X32, T[::-1][::-1].repeat(2)[::2], {}),  # a strided target
        (X32, unaligned(T), {}),
        (unaligned(X32), T, {}),
    ],
)
def test_other_calls_take_the_full_path(x, t, kw):
    assert common(x, t, **kw) is None


@pytest.mark.parametrize(
    "t, kw, message",
    [
        (np.array([0, 5, 0, 0, 0, 0]), {}, "target: class index 5 at position"),
        (np.array([0, -1, 0, 0, 0, 0]), {}, "target: class index -1 at position"),
        (T, dict(label_smoothing=1.5), "label_smoothing"),
        (T, dict(label_smoothing=float("nan")), "label_smoothing"),
        (T, dict(reduction="avg"), "reduction"),
    ],
)
def test_errors_come_from_the_full_path(t, kw, message):
    assert common(X32, t, **kw) is None
    with pytest.raises(ValueError, match=message):
        xr.cross_entropy(X32, t, **kw)
