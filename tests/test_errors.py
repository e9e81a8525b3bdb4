"""Every error row of API.md, for both backends (``mod`` is ``xent_rs`` and ``xent_rs.reference``).

Both implementations must raise the same exception types, with messages naming the argument.
NaN and infinities are never an error.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import xent_rs as xr
from conftest import INDEX_DTYPES, AxisError, assert_close
from xent_rs import reference

X = np.array([[0.1, 0.2, 0.7, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
T = np.array([0, 1, 3])

# (function, positional args, name of the first argument) for every function taking an array
ALL = [
    ("log_softmax", (X,), "x"),
    ("softmax", (X,), "x"),
    ("logsumexp", (X,), "x"),
    ("entropy", (X,), "p"),
    ("kl_divergence", (X, X), "p"),
    ("cross_entropy", (X, T), "logits"),
    ("cross_entropy_with_grad", (X, T), "logits"),
    ("nll_loss", (X, T), "log_probs"),
    ("categorical_cross_entropy", (X, T), "probs"),
    ("binary_cross_entropy", (X, X), "probs"),
    ("binary_cross_entropy_with_logits", (X, X), "logits"),
]
ALL_NAMES = [name for name, _, _ in ALL]
AXIS_FUNCS = [f for f in ALL if not f[0].startswith("binary")]
CATEGORICAL = [
    f
    for f in ALL
    if f[0] in ("cross_entropy", "cross_entropy_with_grad", "nll_loss", "categorical_cross_entropy")
]
LOSSES = [f for f in ALL if f in CATEGORICAL or f[0].startswith("binary")]
CE = ["cross_entropy", "cross_entropy_with_grad"]

BAD_DTYPES = {
    "complex": X.astype(np.complex128),
    "complex64": X.astype(np.complex64),
    "object": X.astype(object),
    "str": X.astype(str),
    "bytes": X.astype(bytes),
    "datetime": np.zeros(X.shape, dtype="datetime64[s]"),
    "timedelta": np.zeros(X.shape, dtype="timedelta64[s]"),
    "void": np.zeros(X.shape, dtype="V8"),
}


def _num(value) -> str:
    """Regex matching the number ``value`` as a whole (not a part of a longer number)."""
    return rf"(?<![\w.-]){re.escape(str(value))}(?![\w.])"


def call(mod, name, *args, **kwargs):
    return getattr(mod, name)(*args, **kwargs)


def _ids(cases):
    return [c[0] for c in cases]


# --------------------------------------------------------------------------- TypeError: dtypes
@pytest.mark.parametrize(("name", "args", "arg"), ALL, ids=_ids(ALL))
@pytest.mark.parametrize("bad", BAD_DTYPES, ids=list(BAD_DTYPES))
def test_bad_dtype_first_argument(mod, name, args, arg, bad):
    with pytest.raises(TypeError, match=rf"\b{arg}\b.*dtype"):
        call(mod, name, BAD_DTYPES[bad], *args[1:])


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=list(BAD_DTYPES))
def test_bad_dtype_second_argument(mod, bad):
    b = BAD_DTYPES[bad]
    with pytest.raises(TypeError, match=r"\bq\b.*dtype"):
        mod.kl_divergence(X, b)
    for name in ("binary_cross_entropy", "binary_cross_entropy_with_logits"):
        with pytest.raises(TypeError, match=r"\btarget\b.*dtype"):
            call(mod, name, X, b)
    for name in (
        "cross_entropy",
        "cross_entropy_with_grad",
        "nll_loss",
        "categorical_cross_entropy",
    ):
        with pytest.raises(TypeError, match=r"\btarget\b.*dtype"):
            call(mod, name, X, b)
        with pytest.raises(TypeError, match=r"\btarget\b.*dtype"):
            call(mod, name, X, b[:, 0])


@pytest.mark.parametrize("bad", ["complex", "object", "str", "datetime"])
def test_bad_dtype_weights(mod, bad):
    w = BAD_DTYPES[bad][0]
    for name in (
        "cross_entropy",
        "cross_entropy_with_grad",
        "nll_loss",
        "categorical_cross_entropy",
    ):
        with pytest.raises(TypeError, match=r"\bweight\b.*dtype"):
            call(mod, name, X, T, weight=w)
    for name in ("binary_cross_entropy", "binary_cross_entropy_with_logits"):
        with pytest.raises(TypeError, match=r"\bweight\b.*dtype"):
            call(mod, name, X, X, weight=w)
    with pytest.raises(TypeError, match=r"\bpos_weight\b.*dtype"):
        mod.binary_cross_entropy_with_logits(X, X, pos_weight=w)


def test_python_objects(mod):
    with pytest.raises(TypeError, match=r"\bx\b"):
        mod.softmax(["a", "b"])
    with pytest.raises(TypeError, match=r"\bx\b"):
        mod.log_softmax([1 + 2j, 3.0])
    with pytest.raises(TypeError, match=r"\bx\b"):
        mod.logsumexp([object(), object()])
    with pytest.raises(TypeError, match=r"\blogits\b"):
        mod.cross_entropy({"a": 1}, [0])


# --------------------------------------------------------------------------- ValueError: shapes
def _assert_shapes_in(excinfo, *shapes):
    msg = str(excinfo.value)
    for s in shapes:
        assert str(tuple(s)) in msg, f"{tuple(s)} not in {msg!r}"


@pytest.mark.parametrize(
    "name", ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "categorical_cross_entropy"]
)
@pytest.mark.parametrize(
    ("x_shape", "axis", "t_shape"),
    [
        ((3, 4), -1, (4,)),
        ((3, 4), -1, (3, 1)),
        ((3, 4), 0, (3,)),
        ((2, 3, 4), 1, (2, 3)),
        ((2, 3, 4), -1, ()),
        ((5,), 0, (5,)),
        ((3, 4), -1, (2,)),
    ],
)
def test_index_target_shape_mismatch(mod, name, x_shape, axis, t_shape):
    x = np.full(x_shape, 0.25)
    batch = x_shape[: axis % len(x_shape)] + x_shape[axis % len(x_shape) + 1 :]
    with pytest.raises(ValueError, match=r"\btarget\b") as excinfo:
        call(mod, name, x, np.zeros(t_shape, dtype=np.int64), axis=axis)
    assert not isinstance(excinfo.value, AxisError)
    _assert_shapes_in(excinfo, t_shape, batch)


@pytest.mark.parametrize(
    "name", ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "categorical_cross_entropy"]
)
@pytest.mark.parametrize("t_shape", [(3, 5), (4, 3), (3,), (1, 4), (3, 4, 1)])
def test_probability_target_shape_mismatch(mod, name, t_shape):
    with pytest.raises(ValueError, match=r"\btarget\b") as excinfo:
        call(mod, name, X, np.full(t_shape, 0.25))
    _assert_shapes_in(excinfo, t_shape, X.shape)


@pytest.mark.parametrize("name", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("t_shape", [(3,), (4,), (3, 1), (1, 4), (3, 4, 1), (4, 3), ()])
def test_binary_target_shape_mismatch(mod, name, t_shape):
    with pytest.raises(ValueError, match=r"\btarget\b") as excinfo:
        call(mod, name, X, np.full(t_shape, 0.5))
    _assert_shapes_in(excinfo, t_shape, X.shape)


@pytest.mark.parametrize("name", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("w_shape", [(3,), (2, 4), (3, 4, 2), (5,)])
def test_binary_weight_shape_mismatch(mod, name, w_shape):
    with pytest.raises(ValueError, match=r"\bweight\b") as excinfo:
        call(mod, name, X, X, weight=np.ones(w_shape))
    _assert_shapes_in(excinfo, w_shape, X.shape)


@pytest.mark.parametrize("pw_shape", [(3,), (2,), (2, 4), (5,)])
def test_pos_weight_shape_mismatch(mod, pw_shape):
    with pytest.raises(ValueError, match=r"\bpos_weight\b") as excinfo:
        mod.binary_cross_entropy_with_logits(X, X, pos_weight=np.ones(pw_shape))
    _assert_shapes_in(excinfo, pw_shape, X.shape)


@pytest.mark.parametrize(
    ("p_shape", "q_shape"), [((3, 4), (3, 5)), ((3, 4), (2, 4)), ((2, 3, 4), (3, 3, 4))]
)
def test_kl_shape_mismatch(mod, p_shape, q_shape):
    with pytest.raises(ValueError, match=r"\bq\b") as excinfo:
        mod.kl_divergence(np.full(p_shape, 0.25), np.full(q_shape, 0.25))
    _assert_shapes_in(excinfo, p_shape, q_shape)


# --------------------------------------------------------------------------- reduction
@pytest.mark.parametrize(("name", "args", "arg"), LOSSES, ids=_ids(LOSSES))
@pytest.mark.parametrize("reduction", ["avg", "Mean", "", "elementwise_mean", None, 1, "sum "])
def test_unknown_reduction(mod, name, args, arg, reduction):
    with pytest.raises(ValueError, match=r"\breduction\b"):
        call(mod, name, *args, reduction=reduction)


# --------------------------------------------------------------------------- label smoothing
@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("e", [-0.1, 1.1, -1e-12, 1.0 + 1e-12, np.nan, np.inf, -np.inf, 2])
def test_label_smoothing_out_of_range(mod, name, e):
    with pytest.raises(ValueError, match=r"\blabel_smoothing\b"):
        call(mod, name, X, T, label_smoothing=e)
    with pytest.raises(ValueError, match=r"\blabel_smoothing\b"):
        call(mod, name, X, np.full(X.shape, 0.25), label_smoothing=e)


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("e", ["0.1", None, [0.1], 0.1j])
def test_label_smoothing_type(mod, name, e):
    with pytest.raises(TypeError, match=r"\blabel_smoothing\b"):
        call(mod, name, X, T, label_smoothing=e)


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("e", [0, 0.0, 1, 1.0, np.float32(0.5), 0.999])
def test_label_smoothing_bounds_accepted(mod, name, e):
    result = call(mod, name, X, T, label_smoothing=e)
    loss = result[0] if name == "cross_entropy_with_grad" else result
    assert np.isfinite(loss)


# --------------------------------------------------------------------------- weight
@pytest.mark.parametrize(("name", "args", "arg"), CATEGORICAL, ids=_ids(CATEGORICAL))
@pytest.mark.parametrize("w_shape", [(3,), (5,), (1,), (0,), (1, 4), (4, 1), ()])
def test_weight_wrong_length(mod, name, args, arg, w_shape):
    with pytest.raises(ValueError, match=r"\bweight\b") as excinfo:
        call(mod, name, *args, weight=np.ones(w_shape))
    assert "4" in str(excinfo.value)
    assert str(w_shape) in str(excinfo.value)


# --------------------------------------------------------------------------- target range
@pytest.mark.parametrize(
    "name", ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "categorical_cross_entropy"]
)
@pytest.mark.parametrize(
    ("dtype", "bad"),
    [
        (dtype, bad)
        for dtype in INDEX_DTYPES
        for bad in (4, 7, 127, -1, -5)
        if bad >= 0 or np.dtype(dtype).kind == "i"
    ],
)
def test_target_index_out_of_range(mod, name, dtype, bad):
    x = np.zeros((2, 3, 4))
    t = np.zeros((2, 3), dtype=dtype)
    t[1, 2] = bad
    t[1, 1] = 3  # valid
    msg = rf"\btarget\b.*{_num(bad)}.*\(1, 2\)"
    with pytest.raises(ValueError, match=msg):
        call(mod, name, x, t)
    # the same index when the class axis is not last: the position is in the target's shape
    with pytest.raises(ValueError, match=msg):
        call(mod, name, np.zeros((2, 4, 3)), t, axis=1)
    with pytest.raises(ValueError, match=msg):
        call(mod, name, np.zeros((4, 2, 3)), t, axis=-3)
    # with ignored entries before it, and with weights
    t[0, 0] = 0 if np.dtype(dtype).kind == "u" else -100
    with pytest.raises(ValueError, match=msg):
        call(
            mod,
            name,
            x,
            t,
            weight=np.ones(4),
            reduction="sum",
            ignore_index=0 if np.dtype(dtype).kind == "u" else -100,
        )


@pytest.mark.parametrize(
    "name", ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "categorical_cross_entropy"]
)
def test_target_first_offending_position(mod, name):
    t = np.array([[0, 1, 2], [5, 0, -3]])
    with pytest.raises(ValueError, match=_num(5) + r".*\(1, 0\)"):
        call(mod, name, np.zeros((2, 3, 3)), t)
    with pytest.raises(ValueError, match=_num(-3) + r".*\(1, 2\)"):
        call(mod, name, np.zeros((2, 3, 3)), np.array([[0, 1, 2], [0, 0, -3]]))
    with pytest.raises(ValueError, match=_num(3) + r".*\(4,\)"):
        call(mod, name, np.zeros((6, 3)), np.array([0, 1, 2, -100, 3, 0]))


@pytest.mark.parametrize(
    "name", ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "categorical_cross_entropy"]
)
def test_ignore_index_only_exempts_its_value(mod, name):
    # -100 is out of range once ignore_index is something else
    with pytest.raises(ValueError, match=_num(-100) + r".*\(1,\)"):
        call(mod, name, np.zeros((2, 3)), np.array([0, -100]), ignore_index=-1)
    call(mod, name, np.zeros((2, 3)), np.array([0, -1]), ignore_index=-1)
    call(mod, name, np.zeros((2, 3)), np.array([7, 1]), ignore_index=7)


@pytest.mark.parametrize(
    "name", ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "categorical_cross_entropy"]
)
def test_uint64_target_too_large(mod, name):
    big = 2**63 + 5
    t = np.array([[0, 1], [2, big]], dtype=np.uint64)
    with pytest.raises(ValueError, match=rf"\btarget\b.*{_num(big)}.*\(1, 1\)"):
        call(mod, name, np.zeros((2, 2, 3)), t)
    t = np.array([0, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(ValueError, match=rf"{_num(2**64 - 1)}.*\(1,\)"):
        call(mod, name, np.zeros((2, 3)), t)
    t = np.array([0, 3], dtype=np.uint64)  # small but out of range
    with pytest.raises(ValueError, match=_num(3) + r".*\(1,\)"):
        call(mod, name, np.zeros((2, 3)), t)


@pytest.mark.parametrize(
    "name", ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "categorical_cross_entropy"]
)
@pytest.mark.parametrize("ignore_index", [1.5, "x", None, True])
def test_ignore_index_type(mod, name, ignore_index):
    with pytest.raises(TypeError, match=r"\bignore_index\b"):
        call(mod, name, X, T, ignore_index=ignore_index)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_ignore_index_too_large(mod, name):
    with pytest.raises(ValueError, match=r"\bignore_index\b"):
        call(mod, name, X, T, ignore_index=2**70)


def test_categorical_eps(mod):
    for eps in (-0.1, 0.5, 0.7, np.nan, np.inf):
        with pytest.raises(ValueError, match=r"\beps\b"):
            mod.categorical_cross_entropy(X, T, eps=eps)
    for eps in ("0.1", [0.1], True):
        with pytest.raises(TypeError, match=r"\beps\b"):
            mod.categorical_cross_entropy(X, T, eps=eps)


# --------------------------------------------------------------------------- binary probabilities
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    ("bad", "text"),
    [(1.5, "1.5"), (-0.25, "-0.25"), (2.0, "2.0"), (np.inf, "inf"), (-np.inf, "-inf")],
)
def test_binary_probs_out_of_range(mod, dtype, bad, text):
    p = np.full((3, 4), 0.5, dtype=dtype)
    p[1, 2] = bad
    p[2, 3] = 7.0  # later: not the one reported
    with pytest.raises(ValueError, match=rf"\bprobs\b.*{_num(text)}.*\(1, 2\)"):
        mod.binary_cross_entropy(p, np.full((3, 4), 0.5))
    with pytest.raises(ValueError, match=rf"{_num(text)}.*\(2, 1\)"):
        mod.binary_cross_entropy(p.T, np.full((4, 3), 0.5))  # position in the logical order
    with pytest.raises(ValueError, match=rf"{_num(text)}.*\(7,\)"):
        mod.binary_cross_entropy(np.r_[np.full(7, 0.5), bad].astype(dtype), np.ones(8))


def test_binary_probs_bounds_accepted(mod):
    p = np.array([0.0, 1.0, 0.5, np.nan])
    loss = mod.binary_cross_entropy(p, np.array([0.0, 1.0, 1.0, 0.0]), reduction="none")
    assert_close(loss, np.array([0.0, 0.0, np.log(2.0), np.nan]))


# --------------------------------------------------------------------------- out=
@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_out_wrong_shape_or_dtype(mod, name):
    x = np.zeros((3, 4))
    for out in (
        np.empty((3, 5)),
        np.empty((4, 3)),
        np.empty(12),
        np.empty((3, 4, 1)),
        np.empty(()),
    ):
        with pytest.raises(ValueError, match=r"\bout\b.*\(3, 4\)"):
            call(mod, name, x, out=out)
    for dtype in (np.float32, np.float16, np.int64, np.complex128):
        with pytest.raises(ValueError, match=r"\bout\b.*float64"):
            call(mod, name, x, out=np.empty((3, 4), dtype))
    with pytest.raises(ValueError, match=r"\bout\b.*float32"):  # float16 in: float16 out
        call(mod, name, x.astype(np.float16), out=np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"\bout\b.*float64"):  # int input: float64 out
        call(mod, name, x.astype(np.int32), out=np.empty((3, 4), np.int32))
    with pytest.raises(ValueError, match=r"\bout\b"):  # non-native byte order
        call(mod, name, x, out=np.empty((3, 4), ">f8" if np.little_endian else "<f8"))


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_out_not_writeable_or_not_array(mod, name):
    x = np.zeros((3, 4))
    ro = np.empty((3, 4))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"\bout\b"):
        call(mod, name, x, out=ro)
    with pytest.raises(ValueError, match=r"\bout\b"):
        call(mod, name, x, out=np.broadcast_to(np.empty(4), (3, 4)))
    with pytest.raises(TypeError, match=r"\bout\b"):
        call(mod, name, x, out=[[0.0] * 4] * 3)
    assert np.all(ro == ro)  # untouched object, no crash


# --------------------------------------------------------------------------- axis
@pytest.mark.parametrize(("name", "args", "arg"), AXIS_FUNCS, ids=_ids(AXIS_FUNCS))
@pytest.mark.parametrize("axis", [2, -3, 100, -100])
def test_axis_out_of_range(mod, name, args, arg, axis):
    with pytest.raises(AxisError):
        call(mod, name, *args, axis=axis)


@pytest.mark.parametrize(("name", "args", "arg"), AXIS_FUNCS, ids=_ids(AXIS_FUNCS))
def test_zero_dim_input_is_axis_error(mod, name, args, arg):
    zero_d = [
        np.float64(0.5) if i == 0 or name == "kl_divergence" else np.int64(0)
        for i in range(len(args))
    ]
    with pytest.raises(AxisError):
        call(mod, name, *zero_d)
    with pytest.raises(AxisError):
        call(mod, name, *zero_d, axis=0)


@pytest.mark.parametrize(("name", "args", "arg"), AXIS_FUNCS, ids=_ids(AXIS_FUNCS))
@pytest.mark.parametrize("axis", [1.0, "1", None, [1]])
def test_axis_type(mod, name, args, arg, axis):
    with pytest.raises(TypeError, match=r"\baxis\b"):
        call(mod, name, *args, axis=axis)


@pytest.mark.parametrize(("name", "args", "arg"), AXIS_FUNCS, ids=_ids(AXIS_FUNCS))
def test_numpy_integer_axis_accepted(mod, name, args, arg):
    a = call(mod, name, *args, axis=np.int64(-1))
    b = call(mod, name, *args, axis=1)
    for u, v in zip(
        a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True
    ):
        assert np.array_equal(u, v, equal_nan=True)


# --------------------------------------------------------------------------- threads
@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize(
    ("n", "exc"),
    [
        (0, ValueError),
        (-1, ValueError),
        (1.5, TypeError),
        ("2", TypeError),
        (None, TypeError),
        (True, TypeError),
        (np.bool_(True), TypeError),
        (np.timedelta64(2, "s"), TypeError),  # an np.integer subclass
    ],
)
def test_set_num_threads_invalid(mod, n, exc):
    before = mod.get_num_threads()
    with pytest.raises(exc, match=r"\bn\b"):
        mod.set_num_threads(n)
    assert mod.get_num_threads() == before


# --------------------------------------------------------------------------- NaN / inf never raise
SPECIAL = np.array(
    [[np.nan, 0.5, 0.5], [np.inf, 1.0, 0.0], [-np.inf, 0.0, 1.0], [np.inf, -np.inf, np.nan]]
)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nan_inf_never_raise(mod, dtype):
    x = SPECIAL.astype(dtype)
    t = np.array([0, 1, 2, 0])
    for name in ("log_softmax", "softmax", "logsumexp", "entropy"):
        call(mod, name, x)
        call(mod, name, x, axis=0)
    mod.kl_divergence(x, x[::-1])
    for reduction in ("none", "sum", "mean"):
        for name in (
            "cross_entropy",
            "cross_entropy_with_grad",
            "nll_loss",
            "categorical_cross_entropy",
        ):
            call(mod, name, x, t, reduction=reduction)
            call(mod, name, x, x, reduction=reduction)
            call(mod, name, x, t, reduction=reduction, weight=np.array([np.nan, np.inf, 1.0]))
        for name in CE:
            call(mod, name, x, t, reduction=reduction, label_smoothing=0.5)
        mod.binary_cross_entropy(np.where(np.isnan(x), x, 0.5), x, reduction=reduction)
        mod.binary_cross_entropy_with_logits(x, x, reduction=reduction, pos_weight=x[0], weight=x)


def test_errors_are_the_same_in_both_backends():
    """The message of every error above is identical for xr and the reference."""
    cases = [
        lambda m: m.cross_entropy(np.zeros((2, 3, 4)), np.array([[0, 1, 2], [3, 9, 0]])),
        lambda m: m.nll_loss(np.zeros((2, 3)), np.array([0, 1, 2])),
        lambda m: m.binary_cross_entropy(np.array([0.5, 1.5]), np.array([1.0, 0.0])),
        lambda m: m.cross_entropy(X, T, reduction="avg"),
        lambda m: m.cross_entropy(X, T, label_smoothing=2.0),
        lambda m: m.cross_entropy(X, T, weight=np.ones(3)),
        lambda m: m.softmax(X, axis=5),
        lambda m: m.softmax(X.astype(complex)),
        lambda m: m.softmax(X, out=np.empty((2, 2))),
        lambda m: m.kl_divergence(X, X[:, :3]),
        lambda m: m.categorical_cross_entropy(X, np.array([0, 1, 2**63], dtype=np.uint64)),
    ]
    for case in cases:
        errors = []
        for m in (xr, reference):
            with pytest.raises((TypeError, ValueError)) as excinfo:
                case(m)
            errors.append((type(excinfo.value), str(excinfo.value)))
        assert errors[0] == errors[1]
