"""Wrong uses of the public API: ``mypy --strict`` reports exactly the lines marked
``# E: <error code>`` (tests/test_typing.py checks it). Never run."""

from __future__ import annotations

from typing import Any

import numpy as np
import xent_rs as xr

logits = np.zeros((2, 3))
labels = np.array([0, 2])

xr.cross_entropy(logits, labels, reduction="avg")  # E: call-overload
xr.nll_loss(logits, labels, reduction=None)  # E: call-overload
xr.softmax(logits, axis="1")  # E: call-overload
xr.logsumexp(logits, 1.5)  # E: call-overload
xr.entropy(logits, axis=(0, 1))  # E: arg-type
xr.cross_entropy(logits)  # E: call-overload
xr.cross_entropy(logits, labels, label_smoothing="x")  # E: call-overload
xr.cross_entropy(logits, labels, ignore_index=0.5)  # E: call-overload
xr.cross_entropy(logits, labels, -1)  # E: call-overload
xr.categorical_cross_entropy(logits, labels, eps="1e-7")  # E: call-overload
xr.binary_cross_entropy_with_logits(logits, logits, dim=0)  # E: call-overload
xr.logsumexp(logits, keepdims="yes")  # E: call-overload
xr.log_softmax(logits, out=[0.0, 0.0])  # E: call-overload
xr.set_num_threads("4")  # E: arg-type

# A "none" reduction gives an array, not a scalar; a scalar loss is no float.
per_sample: np.floating[Any] = xr.cross_entropy(logits, labels, reduction="none")  # E: assignment
xr.binary_cross_entropy(logits, logits, reduction="none").is_integer()  # E: attr-defined
mean: float = xr.nll_loss(logits, labels)  # E: assignment
loss, grad = xr.cross_entropy(logits, labels)  # E: misc
_, gradient = xr.cross_entropy_with_grad(logits, labels)
gradient.is_integer()  # E: attr-defined
too_many = xr.cross_entropy_with_grad(logits, labels)[2]  # E: misc
xr.entropy(logits) + "nats"  # E: operator
if xr.BACKEND == "jax":  # E: comparison-overlap
    pass
xr.no_such_function(logits)  # E: attr-defined
