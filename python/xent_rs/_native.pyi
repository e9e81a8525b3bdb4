"""Type stubs of the native module (``src/bindings.rs``). Private: use :mod:`xent_rs`."""

from typing import Any

import numpy as np

__all__ = [
    "binary_loss",
    "cross_entropy",
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

_LossResult = tuple[float, float]

def softmax_into(x: np.ndarray, out: Any, axis: int, log: bool) -> None: ...
def softmax_in_place(x: np.ndarray, axis: int, log: bool) -> None: ...
def logsumexp(x: np.ndarray, axis: int, out: np.ndarray) -> None: ...
def entropy(p: np.ndarray, axis: int, out: np.ndarray) -> None: ...
def kl_divergence(p: np.ndarray, q: Any, axis: int, out: np.ndarray) -> None: ...
def cross_entropy(
    logits: np.ndarray,
    target: Any,
    axis: int,
    weight: Any | None,
    ignore_index: int,
    label_smoothing: float,
    out: np.ndarray | None,
    grad: Any | None,
    mean: bool,
) -> _LossResult: ...
def picked_loss(
    x: np.ndarray,
    target: Any,
    axis: int,
    weight: Any | None,
    ignore_index: int,
    eps: float | None,
    out: np.ndarray | None,
) -> _LossResult: ...
def binary_loss(
    x: np.ndarray,
    target: Any,
    weight: Any | None,
    pos_weight: Any | None,
    logits: bool,
    out: np.ndarray | None,
) -> _LossResult: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def simd_level() -> str: ...
def read_floor(*arrays: Any) -> float: ...
