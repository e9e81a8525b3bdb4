"""xent_rs: softmax, log-softmax, logsumexp, entropy and cross-entropy losses over NumPy arrays.

The functions follow ``torch.nn.functional`` (with NumPy's ``axis``), computed by a Rust
extension: SIMD, multi-threaded, and exact where naive formulas lose digits. ``BACKEND`` says
which implementation is in use: ``"rust"``, or ``"python"`` (the NumPy reference in
:mod:`xent_rs.reference`) when ``XENT_RS_BACKEND=python`` is set or the extension cannot be
imported (a ``RuntimeWarning`` then says why).

>>> import numpy as np, xent_rs as xr
>>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
>>> float(xr.cross_entropy(logits, np.array([0, 2])))  # doctest: +ELLIPSIS
0.6699...
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from . import reference

__version__ = "0.1.0"


def _select_backend() -> tuple[ModuleType, Literal["rust", "python"]]:
    choice = os.environ.get("XENT_RS_BACKEND", "").strip().lower()
    if choice == "python":
        return reference, "python"
    try:
        from . import _rust
    except ImportError as exc:
        if choice == "rust":
            raise
        warnings.warn(
            f"xent_rs: the native extension could not be imported ({exc}); "
            "falling back to the pure-Python reference implementation (much slower)",
            RuntimeWarning,
            stacklevel=2,
        )
        return reference, "python"
    return _rust, "rust"


_impl, BACKEND = _select_backend()

if TYPE_CHECKING:
    # Type checkers see the reference's signatures (overloads included), whichever backend runs:
    # _rust.py's functions are typed as the reference's (see _rust._documented_by).
    from .reference import (
        binary_cross_entropy,
        binary_cross_entropy_with_logits,
        categorical_cross_entropy,
        cross_entropy,
        cross_entropy_with_grad,
        entropy,
        get_num_threads,
        kl_divergence,
        log_softmax,
        logsumexp,
        nll_loss,
        set_num_threads,
        softmax,
    )
else:
    globals().update({name: getattr(_impl, name) for name in reference.__all__})

# A literal list, which type checkers read (tests/test_typing.py checks it against the reference).
__all__ = [
    "BACKEND",
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "categorical_cross_entropy",
    "cross_entropy",
    "cross_entropy_with_grad",
    "entropy",
    "get_num_threads",
    "kl_divergence",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "reference",
    "set_num_threads",
    "softmax",
]
