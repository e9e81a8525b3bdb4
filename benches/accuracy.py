"""Per-row accuracy of cross_entropy against an extended-precision reference.

    python benches/accuracy.py [--quick]

Prints, for each family of logits and for float32/float64, the worst per-row relative error in
units of the dtype's epsilon, for xent_rs and for the peers that are installed (SciPy's
logsumexp - x_t, PyTorch's cross_entropy, JAX's log_softmax). The reference is computed from
the same inputs in np.longdouble (80-bit on x86-64) as log1p(sum_{j != t} exp(x_j - x_t)).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import xent_rs as xr


def exact(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    xl = x.astype(np.longdouble)
    rows = np.arange(len(t))
    d = xl - xl[rows, t][:, None]
    d[rows, t] = -np.inf
    shift = np.maximum(d.max(axis=1), 0)
    s = np.exp(d - shift[:, None]).sum(axis=1)
    return np.where(shift == 0, np.log1p(s), shift + np.log(np.exp(-shift) + s))


def peers() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    found: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "xent_rs": lambda x, t: xr.cross_entropy(x, t, reduction="none"),
    }
    try:
        from scipy.special import logsumexp

        found["scipy"] = lambda x, t: logsumexp(x, axis=1) - x[np.arange(len(t)), t]
    except ImportError:
        pass
    try:
        import torch

        found["torch"] = lambda x, t: torch.nn.functional.cross_entropy(
            torch.from_numpy(x), torch.from_numpy(t), reduction="none"
        ).numpy()
    except ImportError:
        pass
    try:
        import jax

        jax.config.update("jax_enable_x64", True)

        def jax_loss(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            logp = jax.nn.log_softmax(x, axis=1)
            return -np.asarray(jax.numpy.take_along_axis(logp, t[:, None], axis=1))[:, 0]

        found["jax"] = jax_loss
    except ImportError:
        pass
    return found


def families(rng: np.random.Generator, scale: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    def random_targets(x: np.ndarray) -> np.ndarray:
        return rng.integers(0, x.shape[1], len(x))

    n = 512 // scale
    out = {}
    x = rng.normal(0, 3, (n, 32768))
    out["N=512, C=32768, N(0, 3^2)"] = (x, random_targets(x))
    x = rng.normal(0, 30, (n, 32768))
    out["N=512, C=32768, N(0, 30^2)"] = (x, random_targets(x))
    x = 1e4 + rng.normal(0, 1, (n, 4096))
    out["N=512, C=4096, 1e4 + N(0, 1)"] = (x, random_targets(x))
    x = rng.normal(0, 1, (4096, 10))
    x[:, 0] += 25  # confident rows: loss ~ 1e-10
    out["C=10, confident (target = argmax)"] = (x, np.zeros(4096, dtype=np.int64))
    x = rng.normal(0, 5, (2_000_000 // scale, 2))
    half = np.where(np.arange(len(x)) % 2 == 0, x.argmax(1), x.argmin(1))
    out["C=2, N=2e6, half the targets = argmax"] = (x, half)
    x = rng.normal(0, 3, (2, 1_000_000 // scale))
    out["N=2, C=1e6"] = (x, random_targets(x))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller families")
    args = parser.parse_args()
    impls = peers()
    print(f"{'family':40s} {'dtype':8s} " + " ".join(f"{k:>9s}" for k in impls))
    for name, (x64, t) in families(np.random.default_rng(0), 8 if args.quick else 1).items():
        for dtype in (np.float32, np.float64):
            x = x64.astype(dtype)
            reference = exact(x, t)
            cells = []
            for impl in impls.values():
                got = np.asarray(impl(x, t), dtype=np.longdouble)
                err = np.abs(got - reference) / np.abs(reference) / np.finfo(dtype).eps
                cells.append(f"{float(np.max(err)):9.3g}")
            print(f"{name:40s} {dtype.__name__:8s} " + " ".join(cells))


if __name__ == "__main__":
    main()
