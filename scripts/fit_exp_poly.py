"""Fits the polynomials of the SIMD exp (`src/kernels/real.rs`, `exp32::POLY`, `exp64::POLY`).

`exp(r) = 1 + r + r^2 p(r)` on the reduced range `|r| <= ln2/2`, with `p(0) = 1/2` exactly and
`p(r) = 1/2 + r q(r)`: `q` minimises the largest relative error of `exp(r)` (Lawson's iteratively
reweighted least squares at Chebyshev nodes, the function's values from mpmath). Prints the
coefficients of `p`, highest degree first, and the worst relative error with them rounded to the
target precision, in ulps.

    python scripts/fit_exp_poly.py f32   # degree-4 p, float64 least squares, 4000 nodes
    python scripts/fit_exp_poly.py f64   # degree-9 p, 50-digit least squares, 300 nodes (~1 min)
"""

import sys

import mpmath as mp
import numpy as np


def fit_f32(degree: int = 4, n: int = 4000) -> list[float]:
    mp.mp.dps = 40
    half = float(mp.log(2) / 2) * 1.0001
    rs = np.cos(np.pi * (np.arange(n) + 0.5) / n) * half
    exact = [(mp.exp(r) - 1 - r - mp.mpf(r) ** 2 / 2) / mp.mpf(r) ** 3 for r in rs]
    q_exact = np.array([float(v) for v in exact])
    weight = np.array([float(mp.mpf(r) ** 3 / mp.exp(r)) for r in rs])
    basis = np.vstack([rs**k for k in range(degree)]).T
    lawson = np.ones(n)
    for _ in range(200):
        w = np.sqrt(lawson) * np.abs(weight)
        a, *_ = np.linalg.lstsq(basis * w[:, None], q_exact * w, rcond=None)
        err = np.abs((basis @ a - q_exact) * weight)
        lawson = lawson * err / np.sum(lawson * err)
    return [float(np.float32(c)) for c in a[::-1]] + [0.5]


def fit_f64(degree: int = 9, n: int = 300) -> list[float]:
    mp.mp.dps = 50
    half = mp.log(2) / 2 * mp.mpf("1.0001")
    rs = [mp.cos(mp.pi * (k + mp.mpf(0.5)) / n) * half for k in range(n)]
    q_exact = [(mp.exp(r) - 1 - r - r**2 / 2) / r**3 for r in rs]
    weight = [abs(r**3 / mp.exp(r)) for r in rs]
    lawson = [mp.mpf(1)] * n
    for _ in range(60):
        a_mat, b = mp.matrix(n, degree), mp.matrix(n, 1)
        for i, r in enumerate(rs):
            w = mp.sqrt(lawson[i]) * weight[i]
            for k in range(degree):
                a_mat[i, k] = r**k * w
            b[i] = q_exact[i] * w
        a = mp.lu_solve(a_mat.T * a_mat, a_mat.T * b)
        q = [sum(a[k] * r**k for k in range(degree)) for r in rs]
        err = [abs((q[i] - q_exact[i]) * weight[i]) for i in range(n)]
        total = sum(lawson[i] * err[i] for i in range(n))
        lawson = [lawson[i] * err[i] / total for i in range(n)]
    return [float(a[k]) for k in reversed(range(degree))] + [0.5]


def worst_ulps(coefs: list[float], ulp: float) -> float:
    mp.mp.dps = 50
    half = mp.log(2) / 2
    worst = mp.mpf(0)
    for j in range(4001):
        r = -half + 2 * half * j / 4000
        p = mp.mpf(0)
        for c in coefs:
            p = p * r + mp.mpf(c)
        worst = max(worst, abs((1 + r + r**2 * p) / mp.exp(r) - 1))
    return float(worst / ulp)


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "f32"
    coefs, ulp = (fit_f32(), 2.0**-24) if kind == "f32" else (fit_f64(), 2.0**-53)
    for c in coefs:
        print(repr(np.float32(c).item()) if kind == "f32" else repr(c))
    print(f"worst relative error: {worst_ulps(coefs, ulp):.4f} ulp")
