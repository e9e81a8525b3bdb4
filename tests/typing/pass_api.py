"""Correct uses of the whole public API: ``mypy --strict`` accepts this file, and each
``assert_type`` pins a return type. tests/test_typing.py also runs it, against both backends."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xent_rs as xr
from typing_extensions import assert_type

Floats = npt.NDArray[np.floating[Any]]
Scalar = np.floating[Any]

logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
labels = np.array([0, 2])
soft = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
probs = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]  # any array-like

# Softmax family: an array, or out= itself with its own type.
assert_type(xr.log_softmax(logits), Floats)
assert_type(xr.softmax(probs, axis=0), Floats)
assert_type(xr.softmax(logits, np.int64(-1)), Floats)  # any index-like axis
out32: npt.NDArray[np.float32] = np.empty((2, 3), np.float32)
assert_type(xr.log_softmax(logits.astype(np.float32), out=out32), npt.NDArray[np.float32])
assert_type(xr.softmax(out32, -1, out=out32), npt.NDArray[np.float32])  # in place
assert_type(xr.logsumexp(logits, keepdims=True), Floats)
assert_type(xr.logsumexp(logits), Floats | Scalar)  # a scalar for 1-D input
assert_type(xr.entropy(probs), Floats | Scalar)
assert_type(xr.kl_divergence(probs, soft, axis=1), Floats | Scalar)

# Losses: "mean" and "sum" (the default "mean") give a NumPy scalar, "none" an array.
loss = xr.cross_entropy(logits, labels)
assert_type(loss, Scalar)
as_float: float = float(loss)
assert_type(
    xr.cross_entropy(
        logits,
        soft,
        axis=-1,
        weight=[1.0, 2.0, 1.0],
        ignore_index=-1,
        label_smoothing=0.1,
        reduction="sum",
    ),
    Scalar,
)
assert_type(xr.cross_entropy(logits, labels, reduction="none"), Floats)
assert_type(xr.nll_loss(xr.log_softmax(logits), labels), Scalar)
assert_type(xr.nll_loss(xr.log_softmax(logits), labels, weight=None, reduction="none"), Floats)
assert_type(xr.categorical_cross_entropy(probs, labels, eps=1e-7), Scalar)
assert_type(xr.categorical_cross_entropy(probs, soft, eps=None, reduction="none"), Floats)
assert_type(xr.binary_cross_entropy([0.5, 0.9], [1.0, 0.0], weight=[1.0, 2.0]), Scalar)
assert_type(xr.binary_cross_entropy([0.5, 0.9], [1.0, 0.0], reduction="none"), Floats)
assert_type(xr.binary_cross_entropy_with_logits(logits, soft, pos_weight=[1.0, 2.0, 3.0]), Scalar)
assert_type(xr.binary_cross_entropy_with_logits(logits, soft, reduction="none"), Floats)

# The loss and d loss / d logits.
value, grad = xr.cross_entropy_with_grad(logits, labels, label_smoothing=0.05)
assert_type(value, Scalar)
assert_type(grad, Floats)
assert_type(xr.cross_entropy_with_grad(logits, labels, reduction="none"), tuple[Floats, Floats])

# A reduction only known at run time gives either.
reduction: Literal["none", "mean", "sum"] = "none" if as_float > 100 else "sum"
assert_type(xr.cross_entropy(logits, labels, reduction=reduction), Floats | Scalar)
assert_type(xr.binary_cross_entropy(soft, soft, reduction=reduction), Floats | Scalar)
assert_type(xr.logsumexp(logits, keepdims=as_float > 100), Floats | Scalar)

# Threads, module attributes and the reference implementation.
threads = xr.get_num_threads()
assert_type(threads, int)
xr.set_num_threads(threads)
assert_type(xr.BACKEND, Literal["rust", "python"])
assert_type(xr.__version__, str)
assert_type(xr.reference.cross_entropy(logits, labels, reduction="none"), Floats)
assert_type(xr.reference.softmax(logits), Floats)
