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

_LossResult = tuple[np.ndarray | None, float, float]

def softmax_into(x: np.ndarray, out: Any, axis: int, log: bool) -> None: ...
def softmax_in_place(x: np.ndarray, axis: int, log: bool) -> None: ...
def logsumexp(x: np.ndarray, axis: int) -> np.ndarray: ...
def entropy(p: np.ndarray, axis: int) -> np.ndarray: ...
def kl_divergence(p: np.ndarray, q: Any, axis: int) -> np.ndarray: ...
def cross_entropy(
    logits: np.ndarray,
    target: Any,
    axis: int,
    weight: Any | None,
    ignore_index: int,
    label_smoothing: float,
    per_row: bool,
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
    per_row: bool,
) -> _LossResult: ...
def binary_loss(
    x: np.ndarray,
    target: Any,
    weight: Any | None,
    pos_weight: Any | None,
    logits: bool,
    per_element: bool,
) -> _LossResult: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def simd_level() -> str: ...
def read_floor(*arrays: Any) -> float: ...
