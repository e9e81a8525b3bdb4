"""Type stubs of the native module (``src/bindings.rs``). Private: use :mod:`xent_rs`.

Arrays are validated (dtype, shape, layout) by the bindings; :mod:`xent_rs._rust` prepares them.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "binary_loss",
    "cross_entropy",
    "cross_entropy_common",
    "entropy",
    "get_num_threads",
    "kl_divergence",
    "logsumexp",
    "picked_loss",
    "read_floor",
    "set_num_threads",
    "simd_level",
    "softmax_in_place",
    "softmax_into",
]

_Array = npt.NDArray[Any]
_LossResult = tuple[float, float]  # (total, denominator of the mean)

def softmax_into(x: _Array, out: _Array, axis: int, log: bool) -> None: ...
def softmax_in_place(x: _Array, axis: int, log: bool) -> None: ...
def logsumexp(x: _Array, axis: int, out: _Array) -> None: ...
def entropy(p: _Array, axis: int, out: _Array) -> None: ...
def kl_divergence(p: _Array, q: _Array, axis: int, out: _Array) -> None: ...
def cross_entropy(
    logits: _Array,
    target: _Array,
    axis: int,
    weight: _Array | None,
    ignore_index: int,
    label_smoothing: float,
    out: _Array | None,
    grad: _Array | None,
    mean: bool,
) -> _LossResult: ...
def cross_entropy_common(
    logits: object,
    target: object,
    axis: object,
    weight: object,
    ignore_index: object,
    label_smoothing: object,
    reduction: object,
) -> np.floating[Any] | None: ...
def picked_loss(
    x: _Array,
    target: _Array,
    axis: int,
    weight: _Array | None,
    ignore_index: int,
    eps: float | None,
    out: _Array | None,
) -> _LossResult: ...
def binary_loss(
    x: _Array,
    target: _Array,
    weight: _Array | None,
    pos_weight: _Array | None,
    logits: bool,
    out: _Array | None,
) -> _LossResult: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def simd_level() -> str: ...
def read_floor(*arrays: _Array) -> float: ...
