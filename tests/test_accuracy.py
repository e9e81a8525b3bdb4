"""Accuracy of the Rust kernels, MEASURED against an extended-precision oracle.

Every test computes the exact result of the inputs *as rounded to the dtype under test* in
``np.longdouble`` (80-bit x87 extended on x86-64: 64-bit significand, 2^11 times finer than
float64), by formulas free of cancellation (``log1p`` of the sum of the non-maximal
exponentials, softplus for the logits losses), and asserts a bound on the worst error in units
of the result dtype's ``eps``. ``test_oracle_against_mpmath`` checks the oracle itself against
40-digit mpmath. The module is skipped where ``long double`` is not extended (eps >= 1e-18) and
on the Python backend. ``python tests/test_accuracy.py`` prints the measured table below.

Units: "rel" = |err| / (eps |exact|), with ``tiny`` as the floor of |exact| (losses that
underflow); "max(1,|v|)" = |err| / (eps max(1, |exact|)); "max(1,|m|+L)" = |err| /
(eps max(1, |row max| + log1p(s))), the size of the two terms logsumexp adds; "terms" =
|err| / (eps sum p (|log p| + |log q|)), the size of the terms KL adds (KL of close
distributions cancels); "row max" = max over a row of |err| / (eps max |exact grad of the row|).
softmax: "rel" where exact >= tiny, and below tiny |err| <= tiny (results that small are
flushed to zero).

Inputs (fixed seeds). The issue's six cross-entropy families, scaled down: ``normal3`` /
``normal30`` N(0, 3^2) / N(0, 30^2), 64 x 32768; ``offset1e4`` 1e4 + N(0, 1), 256 x 4096;
``confident`` C=10, target = argmax 25 above N(0, 1) (loss ~1e-10), 20000 rows;
``two_classes`` C=2, N(0, 10^2), 2e5 rows, half the targets = argmax; ``huge_rows`` 2 x 2e5,
N(0, 3^2). Added: ``confident_wide`` 64 x 32768 N(0, 3^2) with the max raised by U(0, 15) and
rows shifted to max 0, target = argmax; ``near_zero`` (softmax family only) 256 x 1000,
N(0, 1) - log(1000) - 0.5 (logsumexp ~ 0). Reductions: class weights U(0.25, 4) and 10% of
the targets = ignore_index. entropy / KL: rounded softmax rows (5% zeros), wide = 128 x 1000,
narrow = 1e5 x 10, confident = 1e5 x 10 with one p ~ 1 (H ~ 1e-9); "close" = q a 1e-3
perturbation of p (KL ~ 1e-6). Binary: 1e5 values; "tiny_loss" = p = 1 - 1e-7..1e-6 with
target 1 (and the mirror) or logits +-(30..80) with matching targets; "soft_extreme" = targets
1e-8..1e-2 away from 0 or 1 with logits N(0, 30^2). "exp sampled": softmax([0, -d]) for 1e5
d ~ U(0, 87) against (1, e^-d) / (1 + e^-d).

Measured worst errors (AVX2+FMA; ``XENT_RS_SIMD=portable`` measures the same to within 0.1 eps
and ``test_portable_simd`` reruns the SIMD-sensitive tests that way). xfail = strict xfail
(the kernel misses the bound; the reason is in the marker); none at present:

=================================== ======= ======= =====  ============ =======
measurement                             f32     f64 bound  unit         xfail
=================================== ======= ======= =====  ============ =======
cross_entropy none normal3             0.45    0.63     2  rel          -
cross_entropy none normal30            0.43    0.68     2  rel          -
cross_entropy none offset1e4           0.51    0.67     2  rel          -
cross_entropy none confident           1.25    1.54     2  rel          -
cross_entropy none two_classes         1.39    1.43     2  rel          -
cross_entropy none huge_rows           0.21    0.42     2  rel          -
cross_entropy none confident_wide      0.92    1.79     2  rel          -
cross_entropy mean plain               0.42    0.37     1  rel          -
cross_entropy mean weighted_ignore     0.38    0.48     1  rel          -
cross_entropy sum plain                0.42    0.37     1  rel          -
cross_entropy sum weighted_ignore      0.39    0.21     1  rel          -
log_softmax normal3                    0.89    0.93     2  max(1,|v|)   -
log_softmax normal30                   1.00    0.99     2  max(1,|v|)   -
log_softmax offset1e4                  0.76    0.79     2  max(1,|v|)   -
log_softmax confident                  0.41    0.74     2  max(1,|v|)   -
log_softmax two_classes                0.99    1.00     2  max(1,|v|)   -
log_softmax huge_rows                  0.79    1.45     2  max(1,|v|)   -
log_softmax confident_wide             0.76    1.07     2  max(1,|v|)   -
log_softmax near_zero                  1.10    0.94     2  max(1,|v|)   -
softmax normal3                        1.21    2.30     4  rel          -
softmax normal30                       0.78    0.93     4  rel          -
softmax offset1e4                      1.33    3.46     4  rel          -
softmax confident                      0.71    0.77     4  rel          -
softmax two_classes                    0.79    0.93     4  rel          -
softmax huge_rows                      1.27    2.77     4  rel          -
softmax confident_wide                 1.20    3.06     4  rel          -
softmax near_zero                      1.89    3.83     4  rel          -
logsumexp normal3                      0.27    0.35     2  max(1,|m|+L) -
logsumexp normal30                     0.49    0.40     2  max(1,|m|+L) -
logsumexp offset1e4                    0.41    0.41     2  max(1,|m|+L) -
logsumexp confident                    0.01    0.37     2  max(1,|m|+L) -
logsumexp two_classes                  0.55    0.69     2  max(1,|m|+L) -
logsumexp huge_rows                    0.41    0.23     2  max(1,|m|+L) -
logsumexp confident_wide               0.76    1.07     2  max(1,|m|+L) -
logsumexp near_zero                    0.16    0.38     2  max(1,|m|+L) -
log_softmax near 0                     1.47    1.70     4  rel          -
logsumexp near 0                       1.47    1.70     4  rel          -
entropy wide                           0.47    0.60     2  rel          -
entropy narrow                         0.50    0.96     2  rel          -
entropy confident                      0.50    0.90     2  rel          -
kl_divergence wide_independent         0.28    0.53     2  terms        -
kl_divergence wide_close               0.01    0.02     2  terms        -
kl_divergence narrow_independent       0.49    1.28     2  terms        -
kl_divergence narrow_close             0.30    0.66     2  terms        -
bce hard                               0.60    0.65     2  rel          -
bce soft                               0.56    1.33     2  rel          -
bce tiny_loss                          0.50    0.50     2  rel          -
bce weighted                           0.67    1.04     2  rel          -
bce_with_logits hard                   0.76    0.69     2  rel          -
bce_with_logits soft                   0.99    1.37     2  rel          -
bce_with_logits soft_extreme           0.98    1.55     2  rel          -
bce_with_logits tiny_loss              0.67    0.50     2  rel          -
bce_with_logits weighted_pos_weight    0.54    1.38     2  rel          -
gradient normal3                       0.24    0.78     4  row max      -
gradient normal30                      0.24    0.43     4  row max      -
gradient offset1e4                     0.25    0.63     4  row max      -
gradient confident                     1.25    1.76     4  row max      -
gradient two_classes                   1.38    1.70     4  row max      -
gradient huge_rows                     0.20    0.43     4  row max      -
gradient confident_wide                0.82    2.17     4  row max      -
gradient[target] confident             1.25    1.76     4  rel          -
gradient[target] two_classes           1.38    1.70     4  rel          -
gradient[target] confident_wide        0.82    2.17     4  rel          -
softmax([0, -d]) exp sampled           0.71    0.85     2  rel          -
=================================== ======= ======= =====  ============ =======

Also asserted: the per-row cross-entropy hard limit 4 eps (issue's "must") on every family;
the mean and sum bitwise identical with 1, 2 and 3 threads (with weights and ignore_index,
plus the per-row losses and the gradient).

The bounds are the issue's (cross_entropy 2 eps goal / 4 eps must, reductions 1 eps,
log_softmax 2 eps max(1,|v|)), "the same way" for logsumexp, entropy, KL and the binary losses
(2 eps) and the exp sample (2 eps), and 4 eps for softmax and the gradient (one exp of ~1 ulp,
one division and the log-sum: what a kernel with an accurate log-sum achieves with margin).
The near-0 rows go beyond the issue: log_softmax at the argmax and logsumexp of confident rows
shifted to max 0 equal -cross_entropy / cross_entropy (~1e-10); the row statistics keep the
maxima apart from the rest of the sum so that log(sum) = log1p(rest) keeps those digits.
Entropy, KL and the per-row soft-target sums use compensated summation in f64.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xent_rs as xr

LD = np.longdouble
if float(np.finfo(LD).eps) >= 1e-18:
    pytest.skip(
        "np.longdouble is not an extended-precision type on this platform "
        f"(eps = {float(np.finfo(LD).eps):.3g}): no oracle for the accuracy tests",
        allow_module_level=True,
    )
if xr.BACKEND != "rust":
    pytest.skip("the accuracy bounds are stated for the Rust backend", allow_module_level=True)

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
DT_IDS = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _eps(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).eps)


def _tiny(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).tiny)


# --------------------------------------------------------------------------- the oracle
# Every exact value is computed in long double from the inputs *as rounded to the dtype under
# test*, by formulas free of cancellation. With m the row maximum (at k), d = x - m and
# s = sum_{j != k} exp(d_j):
#   logsumexp = m + log1p(s),  log_softmax = d - log1p(s),  softmax = exp(d) / (1 + s),
#   cross_entropy = log1p(s) - d_t,  gradient = softmax - onehot, and softmax_t - 1 = -s / (1 + s)
#   when t == k.
# log1p keeps the digits of tiny losses (confident rows), which log(sum(exp)) would lose.
def _rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(m, k, d, s)`` of each row of the 2-d array ``x``, in long double."""
    xl = x.astype(LD)
    k = np.argmax(xl, axis=-1)
    m = np.take_along_axis(xl, k[:, None], -1)
    d = xl - m
    e = np.exp(d)
    np.put_along_axis(e, k[:, None], LD(0), -1)
    return m[:, 0], k, d, e.sum(axis=-1)


def _ld_log_softmax(x: np.ndarray) -> np.ndarray:
    _, _, d, s = _rows(x)
    return d - np.log1p(s)[:, None]


def _ld_softmax(x: np.ndarray) -> np.ndarray:
    _, _, d, s = _rows(x)
    return np.exp(d) / (1 + s)[:, None]


def _ld_logsumexp(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(logsumexp, |m| + log1p(s))``: the value and the size of the two terms it sums."""
    m, _, _, s = _rows(x)
    return m + np.log1p(s), np.abs(m) + np.log1p(s)


def _ld_cross_entropy(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    _, _, d, s = _rows(x)
    return np.log1p(s) - np.take_along_axis(d, t[:, None], -1)[:, 0]


def _softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) in long double, without cancellation."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _err(actual, exact, scale, dtype: np.dtype) -> np.ndarray:
    """``|actual - exact| / (eps(dtype) * scale)`` as float64; +inf where ``actual`` is NaN."""
    a = np.asarray(actual).astype(LD)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.abs(a - exact) / (LD(_eps(dtype)) * np.asarray(scale, LD))
        return np.where(np.isnan(a), np.inf, e).astype(np.float64)


def _rel_err(actual, exact, dtype: np.dtype) -> np.ndarray:
    """Relative error in eps; below the smallest normal number, absolute error in eps * tiny."""
    return _err(actual, exact, np.maximum(np.abs(exact), _tiny(dtype)), dtype)


def _worst(err: np.ndarray) -> float:
    """The largest error, NaN (no measurement) ignored."""
    return float(np.max(err, initial=0.0, where=~np.isnan(err)))


def _check(err: np.ndarray, bound: float, what: str) -> None:
    assert np.any(~np.isnan(err)), f"{what}: nothing measured"
    worst = _worst(err)
    if not worst <= bound:
        err = np.nan_to_num(err, nan=0.0)
        at = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
        n_bad = int(np.sum(err > bound))
        raise AssertionError(
            f"{what}: worst error {worst:.3f} eps > bound {bound} eps "
            f"({n_bad} of {err.size} values over the bound, worst at {at})"
        )


# --------------------------------------------------------------------------- inputs
# The issue's six cross-entropy families, scaled down to run in seconds (same character), and
# "confident_wide": confident rows with many classes (where accumulating the row sum on top of
# the max's exp(0) = 1 loses digits).
ISSUE_FAMILIES = ["normal3", "normal30", "offset1e4", "confident", "two_classes", "huge_rows"]
CE_FAMILIES = [*ISSUE_FAMILIES, "confident_wide"]


@functools.cache
def _family(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(logits float64 (N, C), targets int64 (N,))``, a fixed seed per family."""
    rng = np.random.default_rng(1000 + [*CE_FAMILIES, "near_zero"].index(name))
    if name == "normal3":  # N=512, C=32768 in the issue
        x = rng.normal(0.0, 3.0, (64, 32768))
    elif name == "normal30":
        x = rng.normal(0.0, 30.0, (64, 32768))
    elif name == "offset1e4":  # logits 1e4 + N(0, 1): x - max must be exact
        x = 1e4 + rng.normal(0.0, 1.0, (256, 4096))
    elif name == "confident":  # C=10, target = argmax, loss ~ 1e-10 (log1p keeps its digits)
        n, c = 20000, 10
        x = rng.normal(0.0, 1.0, (n, c))
        t = rng.integers(0, c, n)
        x[np.arange(n), t] += 25.0
        return x, t
    elif name == "two_classes":  # C=2, N=2e6 in the issue; half the targets = argmax
        n = 200_000
        x = rng.normal(0.0, 10.0, (n, 2))
        t = rng.integers(0, 2, n)
        half = rng.random(n) < 0.5
        t[half] = np.argmax(x[half], axis=-1)
        return x, t
    elif name == "huge_rows":  # N=2, C=1e6 in the issue
        x = rng.normal(0.0, 3.0, (2, 200_000))
    elif name == "confident_wide":  # C=32768, the max 0..15 above the rest, shifted to 0
        n = 64
        x = rng.normal(0.0, 3.0, (n, 32768))
        k = np.argmax(x, axis=-1)
        x[np.arange(n), k] += rng.uniform(0.0, 15.0, n)
        x -= x.max(axis=-1, keepdims=True)
        return x, k
    elif name == "near_zero":  # logsumexp ~ 0: the max (< 0) and log1p(s) (> 0) cancel
        c = 1000
        x = rng.normal(0.0, 1.0, (256, c)) - np.log(c) - 0.5
    else:  # pragma: no cover
        raise AssertionError(name)
    return x, rng.integers(0, x.shape[1], x.shape[0])


def _logits(name: str, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    x, t = _family(name)
    return x.astype(dtype), t


# --------------------------------------------------------------------------- measurements
# Each measurement is an array of errors in eps of the result dtype (per row for the wide
# families); the tests assert a bound on its maximum. ``python tests/test_accuracy.py`` prints
# the worst ones.
FAMILIES = [*CE_FAMILIES, "near_zero"]  # log_softmax, softmax and logsumexp: all of them


def _row_max(err: np.ndarray) -> np.ndarray:
    return np.max(err, axis=-1).astype(np.float32)


@functools.cache
def _family_errs(name: str, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Everything measured on one family, as the worst error of each row (float32):

    * ``log_softmax``: error in eps * max(1, |exact|);
    * ``softmax``: relative error where exact >= tiny; ``softmax_under``: |error| / tiny where
      exact < tiny (the kernels flush results below the smallest normal number to zero);
    * ``logsumexp``: error in eps * max(1, |m| + log1p(s));
    * cross-entropy families: ``ce_exact`` (long double), ``ce_rows`` (relative error),
      ``grad_rows`` (max |error| in eps * max |grad|) and ``grad_target`` (relative error of
      grad[t] = p_t - 1; NaN on rows whose target is not the argmax).

    The kernels run once on the whole family; the oracle goes through it in chunks of rows.
    """
    x, t = _logits(name, dtype)
    got = {
        "log_softmax": xr.log_softmax(x),
        "logsumexp": xr.logsumexp(x),
        "softmax": xr.softmax(x),
    }
    ce = name in CE_FAMILIES
    if ce:
        got["ce"] = xr.cross_entropy(x, t, reduction="none")
        loss, got["grad"] = xr.cross_entropy_with_grad(x, t, reduction="none")
        np.testing.assert_array_equal(loss, got["ce"])
    for key, value in got.items():
        assert value.dtype == dtype, key
    parts: dict[str, list[np.ndarray]] = {}

    def add(key: str, value: np.ndarray) -> None:
        parts.setdefault(key, []).append(value)

    tiny = _tiny(dtype)
    step = max(1, 2**18 // x.shape[1])
    for lo in range(0, x.shape[0], step):
        sl = slice(lo, lo + step)
        xs = x[sl]
        _, k, d, s = _rows(xs)
        log1p_s = np.log1p(s)

        exact = d - log1p_s[:, None]
        add(
            "log_softmax",
            _row_max(_err(got["log_softmax"][sl], exact, np.maximum(1, np.abs(exact)), dtype)),
        )

        m = np.take_along_axis(xs, k[:, None], -1)[:, 0].astype(LD)
        scale = np.maximum(1, np.abs(m) + log1p_s)
        add("logsumexp", _err(got["logsumexp"][sl], m + log1p_s, scale, dtype).astype(np.float32))

        exact = np.exp(d) / (1 + s)[:, None]
        normal = exact >= tiny
        err = _err(got["softmax"][sl], exact, np.where(normal, exact, 1), dtype)
        add("softmax", _row_max(np.where(normal, err, 0)))
        under = np.abs(got["softmax"][sl].astype(LD) - exact) / LD(tiny)
        add("softmax_under", _row_max(np.where(normal, 0, under).astype(np.float64)))
        if not ce:
            continue

        ts = t[sl]
        rows = np.arange(len(ts))
        ce_exact = log1p_s - d[rows, ts]
        add("ce_exact", ce_exact)
        add("ce_rows", _rel_err(got["ce"][sl], ce_exact, dtype).astype(np.float32))

        exact[rows, ts] -= 1  # softmax - onehot(t); p_t - 1 = -s / (1 + s) when t is the argmax
        top = ts == k
        exact[rows[top], ts[top]] = -s[top] / (1 + s[top])
        grad = got["grad"][sl]
        row_scale = np.max(np.abs(exact), axis=-1, keepdims=True)
        add("grad_rows", _row_max(_err(grad, exact, row_scale, dtype)))
        target = _rel_err(grad[rows, ts], exact[rows, ts], dtype)
        add("grad_target", np.where(top, target, np.nan).astype(np.float32))
    return {key: np.concatenate(value) for key, value in parts.items()}


WEIGHTINGS = ["plain", "weighted_ignore"]


def _weighted_case(name: str, dtype: np.dtype, weighting: str):
    """``(x, t, weight or None)``: "weighted_ignore" has class weights in [0.25, 4] and about
    10% of the targets = ignore_index (-100)."""
    x, t = _logits(name, dtype)
    if weighting == "plain":
        return x, t, None
    rng = np.random.default_rng(7)
    w = rng.uniform(0.25, 4.0, x.shape[1]).astype(dtype)
    t = t.copy()
    t[rng.random(t.shape) < 0.1] = -100
    t[-1] = -100
    t[0] = _family(name)[1][0]
    return x, t, w


@functools.cache
def _ce_reduction_err(name: str, dtype: np.dtype, reduction: str, weighting: str) -> np.ndarray:
    x, t, w = _weighted_case(name, dtype, weighting)
    got = xr.cross_entropy(x, t, weight=w, reduction=reduction)
    assert isinstance(got, np.generic)
    assert got.dtype == dtype
    keep = t != -100
    per = _family_errs(name, dtype)["ce_exact"][keep]
    wt = np.ones(per.shape, LD) if w is None else w.astype(LD)[t[keep]]
    total = np.sum(wt * per)
    exact = total / np.sum(wt) if reduction == "mean" else total
    return _rel_err(got, exact, dtype)


NEAR_ZERO_FUNCTIONS = ["log_softmax", "logsumexp"]


@functools.cache
def _near_zero_err(function: str, dtype: np.dtype) -> np.ndarray:
    """Relative error of log_softmax at the target and of logsumexp, on rows with the max at 0
    and a tiny log1p(s) (confident rows): both equal -cross_entropy / cross_entropy there."""
    x, t = _logits("confident", dtype)
    x = x - x.max(axis=-1, keepdims=True)  # exact: the max of each row is at t, 25 above
    exact = _ld_cross_entropy(x, t)
    if function == "log_softmax":
        got = -xr.log_softmax(x)[np.arange(len(t)), t]
    else:
        got = xr.logsumexp(x)
    return _rel_err(got, exact, dtype)


def _distributions(name: str, dtype: np.dtype, seed: int) -> np.ndarray:
    """Rows of probabilities (rounded softmax outputs, not renormalised), 5% exact zeros."""
    rng = np.random.default_rng(seed)
    if name == "wide":  # C=1000
        z = rng.normal(0.0, 3.0, (128, 1000))
    elif name == "narrow":  # C=10
        z = rng.normal(0.0, 2.0, (100_000, 10))
    elif name == "confident":  # C=10, one p near 1: H ~ 1e-9
        z = rng.normal(0.0, 1.0, (100_000, 10))
        z[:, 0] += 25.0
    else:  # pragma: no cover
        raise AssertionError(name)
    p = _ld_softmax(z).astype(dtype)
    p[rng.random(p.shape) < 0.05] = 0
    return p


ENTROPY_CASES = ["wide", "narrow", "confident"]


@functools.cache
def _entropy_err(name: str, dtype: np.dtype) -> np.ndarray:
    """Relative error (all terms -p log p >= 0 for p <= 1)."""
    p = _distributions(name, dtype, seed=5)
    got = xr.entropy(p)
    pl = p.astype(LD)
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = np.where(pl > 0, -pl * np.log(pl), 0).sum(axis=-1)
    return _rel_err(got, exact, dtype)


KL_CASES = ["wide_independent", "wide_close", "narrow_independent", "narrow_close"]


@functools.cache
def _kl_err(name: str, dtype: np.dtype) -> np.ndarray:
    """Error in units of eps * sum p (|log p| + |log q|): the size of the terms of
    sum p log p - sum p log q. "close": q a 1e-3 perturbation of p (KL ~ 1e-6, cancelling)."""
    width, kind = name.split("_")
    p = _distributions(width, dtype, seed=11)
    if kind == "independent":
        q = _distributions(width, dtype, seed=13)
    else:
        rng = np.random.default_rng(12)
        q = p.astype(np.float64) * np.exp(rng.normal(0.0, 1e-3, p.shape))
        q = (q / q.sum(axis=-1, keepdims=True)).astype(dtype)
    q = np.where(q == 0, np.asarray(1e-30, dtype), q)  # finite KL
    got = xr.kl_divergence(p, q)
    pl, ql = p.astype(LD), q.astype(LD)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.where(pl > 0, np.log(pl), 0)
        exact = np.where(pl > 0, pl * (lp - np.log(ql)), 0).sum(axis=-1)
        scale = np.where(pl > 0, pl * (np.abs(lp) + np.abs(np.log(ql))), 0).sum(axis=-1)
    return _err(got, exact, scale, dtype)


BCE_CASES = ["hard", "soft", "tiny_loss", "weighted"]


@functools.cache
def _bce_err(name: str, dtype: np.dtype) -> np.ndarray:
    rng = np.random.default_rng(21 + BCE_CASES.index(name))
    n = 100_000
    w = None
    if name in ("hard", "weighted"):
        p = rng.random(n)
        y = (rng.random(n) < 0.5).astype(np.float64)
        if name == "weighted":
            w = rng.uniform(0.25, 4.0, n).astype(dtype)
    elif name == "soft":
        p = rng.random(n)
        y = rng.random(n)
    else:  # p = 1 - 1e-7..1e-6 with target 1, p = 1e-7..1e-6 with target 0: losses ~ 1e-7
        small = 10.0 ** rng.uniform(-7.0, -6.0, n)
        y = (rng.random(n) < 0.5).astype(np.float64)
        p = np.where(y == 1, 1 - small, small)
    p, y = p.astype(dtype), y.astype(dtype)
    got = xr.binary_cross_entropy(p, y, weight=w, reduction="none")
    pl, yl = p.astype(LD), y.astype(LD)
    with np.errstate(divide="ignore"):
        exact = -(yl * np.maximum(np.log(pl), -100) + (1 - yl) * np.maximum(np.log1p(-pl), -100))
    if w is not None:
        exact = exact * w.astype(LD)
    return _rel_err(got, exact, dtype)


BCEL_CASES = ["hard", "soft", "soft_extreme", "tiny_loss", "weighted_pos_weight"]


@functools.cache
def _bcel_err(name: str, dtype: np.dtype) -> np.ndarray:
    rng = np.random.default_rng(31 + BCEL_CASES.index(name))
    n = 100_000
    w = pw = None
    if name in ("hard", "weighted_pos_weight"):
        x = rng.normal(0.0, 10.0, n)
        y = (rng.random(n) < 0.5).astype(np.float64)
        if name == "weighted_pos_weight":
            x, y = x.reshape(-1, 10), y.reshape(-1, 10)
            w = rng.uniform(0.25, 4.0, x.shape).astype(dtype)
            pw = rng.uniform(0.25, 4.0, 10).astype(dtype)
    elif name == "soft":
        x = rng.normal(0.0, 10.0, n)
        y = rng.random(n)
    elif name == "soft_extreme":  # targets 1e-8..1e-2 from 0 or 1, logits N(0, 30^2)
        x = rng.normal(0.0, 30.0, n)
        small = 10.0 ** rng.uniform(-8.0, -2.0, n)
        y = np.where(rng.random(n) < 0.5, small, 1 - small)
    else:  # logits +-(30..80) with matching targets: losses exp(-80)..exp(-30)
        y = (rng.random(n) < 0.5).astype(np.float64)
        x = np.where(y == 1, 1.0, -1.0) * rng.uniform(30.0, 80.0, n)
    x, y = x.astype(dtype), y.astype(dtype)
    got = xr.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction="none")
    xl, yl = x.astype(LD), y.astype(LD)
    pos = yl if pw is None else pw.astype(LD) * yl
    exact = pos * _softplus(-xl) + (1 - yl) * _softplus(xl)
    if w is not None:
        exact = exact * w.astype(LD)
    return _rel_err(got, exact, dtype)


@functools.cache
def _exp_sampled_err(dtype: np.dtype) -> np.ndarray:
    """softmax([0, -d]) for 100k d in [0, 87] against (1, exp(-d)) / (1 + exp(-d))."""
    d = np.random.default_rng(41).uniform(0.0, 87.0, 100_000).astype(dtype)
    x = np.stack([np.zeros_like(d), -d], axis=-1)
    got = xr.softmax(x)
    e = np.exp(-d.astype(LD))
    exact = np.stack([1 / (1 + e), e / (1 + e)], axis=-1)
    return _rel_err(got, exact, dtype)


# --------------------------------------------------------------------------- bounds
CE_ROW_BOUND = 2.0  # the issue's goal, relative
CE_ROW_MUST = 4.0  # the issue's hard limit
REDUCTION_BOUND = 1.0  # relative to the exact mean / sum
LOG_SOFTMAX_BOUND = 2.0  # in eps * max(1, |value|)
SOFTMAX_BOUND = 4.0  # relative, exact >= tiny (below: |error| <= tiny, flush to zero)
LOGSUMEXP_BOUND = 2.0  # in eps * max(1, |max| + log1p(s))
NEAR_ZERO_BOUND = 4.0  # relative
ENTROPY_BOUND = 2.0  # relative
KL_BOUND = 2.0  # in eps * sum p (|log p| + |log q|)
BINARY_BOUND = 2.0  # relative
GRAD_BOUND = 4.0  # softmax's: per row in eps * max |grad|, and relative for grad[t]
EXP_BOUND = 2.0  # relative

GRAD_TARGET_FAMILIES = ["confident", "two_classes", "confident_wide"]


def _params(names: list[str], xfails: dict[tuple[str, str], str] | None = None) -> list:
    """``pytest.param(name, dtype)`` for every name and dtype; ``xfails[(name, "f32"|"f64")]``
    is the reason of a strict xfail."""
    xfails = xfails or {}
    out = []
    for name in names:
        for dt in DTYPES:
            key = (name, DT_IDS[dt])
            marks = [pytest.mark.xfail(strict=True, reason=xfails[key])] if key in xfails else []
            out.append(pytest.param(name, dt, marks=marks, id=f"{name}-{DT_IDS[dt]}"))
    return out


# --------------------------------------------------------------------------- tests
def test_oracle_against_mpmath():
    """The long-double oracle agrees with 40-digit mpmath to a small fraction of a float64 eps
    (the measured errors are the kernels', not the oracle's)."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(3)
    rows = [
        rng.normal(0.0, 30.0, 50),
        1e4 + rng.normal(0.0, 1.0, 50),
        np.r_[25.0, rng.normal(0.0, 1.0, 9)],  # confident: loss ~ 1e-10
        np.r_[0.0, rng.normal(-40.0, 3.0, 49)],  # loss ~ 1e-16
    ]
    tol = 64 * float(np.finfo(LD).eps)

    def close(got, exact, scale) -> bool:
        return bool(abs(mpmath.mpf(str(got)) - exact) <= tol * scale)

    with mpmath.workdps(40):
        for row in rows:
            x = row[None, :]
            t = np.array([int(np.argmax(row))])
            xm = [mpmath.mpf(float(v)) for v in row]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xm))
            ce = lse - xm[t[0]]
            assert close(_ld_cross_entropy(x, t)[0], ce, ce)
            assert close(_ld_logsumexp(x)[0][0], lse, max(1, abs(lse)))
            log_p, p = _ld_log_softmax(x)[0], _ld_softmax(x)[0]
            for j, v in enumerate(xm):
                assert close(log_p[j], v - lse, max(1, abs(v - lse)))
                assert close(p[j], mpmath.exp(v - lse), mpmath.exp(v - lse))


@pytest.mark.parametrize(("family", "dtype"), _params(CE_FAMILIES))
def test_cross_entropy_rows(family, dtype):
    """Per-row (reduction="none") relative error <= 2 eps: the issue's goal."""
    err = _family_errs(family, dtype)["ce_rows"]
    _check(err, CE_ROW_BOUND, f"cross_entropy {family} {dtype}")


@pytest.mark.parametrize(("family", "dtype"), _params(CE_FAMILIES))
def test_cross_entropy_rows_must(family, dtype):
    """Per-row relative error <= 4 eps: the issue's hard limit."""
    err = _family_errs(family, dtype)["ce_rows"]
    _check(err, CE_ROW_MUST, f"cross_entropy {family} {dtype}")


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("family", "dtype"), _params(CE_FAMILIES))
def test_cross_entropy_reductions(family, dtype, reduction, weighting):
    """mean and sum within 1 eps of the exact (weighted, ignore_index) mean / sum."""
    err = _ce_reduction_err(family, dtype, reduction, weighting)
    _check(err, REDUCTION_BOUND, f"cross_entropy {reduction} {weighting} {family} {dtype}")


@pytest.mark.parametrize(("family", "dtype"), _params(CE_FAMILIES))
def test_reductions_bitwise_across_threads(family, dtype):
    """The same bits with 1, 2 and 3 threads (reductions, per-row losses and the gradient)."""
    x, t, w = _weighted_case(family, dtype, "weighted_ignore")
    saved = xr.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            xr.set_num_threads(n)
            res = [xr.cross_entropy(x, t, weight=w, reduction=r) for r in ("mean", "sum", "none")]
            res += [xr.cross_entropy(x, t, reduction=r) for r in ("mean", "sum")]
            res += list(xr.cross_entropy_with_grad(x, t, weight=w, reduction="mean"))
            results.append([np.asarray(r).tobytes() for r in res])
    finally:
        xr.set_num_threads(saved)
    assert xr.get_num_threads() == saved
    assert results[1] == results[0], "2 threads differ from 1"
    assert results[2] == results[0], "3 threads differ from 1"


@pytest.mark.parametrize(("family", "dtype"), _params(FAMILIES))
def test_log_softmax(family, dtype):
    """|error| <= 2 eps * max(1, |value|)."""
    err = _family_errs(family, dtype)["log_softmax"]
    _check(err, LOG_SOFTMAX_BOUND, f"log_softmax {family} {dtype}")


@pytest.mark.parametrize(("family", "dtype"), _params(FAMILIES))
def test_softmax(family, dtype):
    """Relative error <= 4 eps for exact values >= tiny; below, |error| <= tiny."""
    errs = _family_errs(family, dtype)
    _check(errs["softmax_under"], 1.0, f"softmax {family} {dtype} below tiny, in units of tiny")
    _check(errs["softmax"], SOFTMAX_BOUND, f"softmax {family} {dtype}")


@pytest.mark.parametrize(("family", "dtype"), _params(FAMILIES))
def test_logsumexp(family, dtype):
    """|error| <= 2 eps * max(1, |max| + log1p(s))."""
    err = _family_errs(family, dtype)["logsumexp"]
    _check(err, LOGSUMEXP_BOUND, f"logsumexp {family} {dtype}")


@pytest.mark.parametrize(("function", "dtype"), _params(NEAR_ZERO_FUNCTIONS))
def test_log1p_forms_near_zero(function, dtype):
    """Beyond the issue: log_softmax at the argmax and logsumexp of confident rows shifted to
    max 0 (both = +-cross_entropy ~ 1e-10 there) keep a relative error <= 4 eps."""
    _check(_near_zero_err(function, dtype), NEAR_ZERO_BOUND, f"{function} near 0 {dtype}")


@pytest.mark.parametrize(("case", "dtype"), _params(ENTROPY_CASES))
def test_entropy(case, dtype):
    """Relative error <= 2 eps."""
    _check(_entropy_err(case, dtype), ENTROPY_BOUND, f"entropy {case} {dtype}")


@pytest.mark.parametrize(("case", "dtype"), _params(KL_CASES))
def test_kl_divergence(case, dtype):
    """|error| <= 2 eps * sum p (|log p| + |log q|)."""
    _check(_kl_err(case, dtype), KL_BOUND, f"kl_divergence {case} {dtype}")


@pytest.mark.parametrize(("case", "dtype"), _params(BCE_CASES))
def test_binary_cross_entropy(case, dtype):
    """Relative error <= 2 eps, tiny losses (p = 1 - 1e-7) included."""
    _check(_bce_err(case, dtype), BINARY_BOUND, f"binary_cross_entropy {case} {dtype}")


@pytest.mark.parametrize(("case", "dtype"), _params(BCEL_CASES))
def test_binary_cross_entropy_with_logits(case, dtype):
    """Relative error <= 2 eps, tiny losses (logits +-30..80) included."""
    err = _bcel_err(case, dtype)
    _check(err, BINARY_BOUND, f"binary_cross_entropy_with_logits {case} {dtype}")


@pytest.mark.parametrize(("family", "dtype"), _params(CE_FAMILIES))
def test_gradient(family, dtype):
    """cross_entropy_with_grad, reduction="none": per row |error| <= 4 eps * max |grad|."""
    err = _family_errs(family, dtype)["grad_rows"]
    _check(err, GRAD_BOUND, f"gradient {family} {dtype}")


@pytest.mark.parametrize(("family", "dtype"), _params(GRAD_TARGET_FAMILIES))
def test_gradient_target_entry(family, dtype):
    """grad[t] = p_t - 1 keeps its digits on rows with t = argmax: relative error <= 4 eps."""
    err = _family_errs(family, dtype)["grad_target"]
    assert np.sum(~np.isnan(err)) >= 32
    _check(err, GRAD_BOUND, f"gradient[target] {family} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=list(DT_IDS.values()))
def test_exp_sampled(dtype):
    """The SIMD exp through the public API: softmax([0, -d]) for 100k d in [0, 87], relative
    error <= 2 eps."""
    _check(_exp_sampled_err(dtype), EXP_BOUND, f"softmax([0, -d]) {dtype}")


@pytest.mark.skipif(
    os.environ.get("XENT_RS_SIMD", "").lower() == "portable", reason="already portable"
)
def test_portable_simd():
    """The same bounds hold with the portable kernels (no AVX2/FMA): XENT_RS_SIMD=portable."""
    env = {**os.environ, "XENT_RS_SIMD": "portable"}
    code = "import xent_rs._native as n; print(n.simd_level())"
    level = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert level == "portable"
    select = "softmax or logsumexp or rows or gradient or exp_sampled or with_logits"
    here = Path(__file__).resolve()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", select]
    proc = subprocess.run(
        [*command, here.name],
        env=env,
        cwd=here.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


# --------------------------------------------------------------------------- the table
def _measurements() -> list[tuple[str, Callable[[np.dtype], np.ndarray], float, str]]:
    """``(label, dtype -> errors, bound, unit)`` for every bound tested above."""
    out: list[tuple[str, Callable[[np.dtype], np.ndarray], float, str]] = []
    fe = _family_errs
    part = functools.partial
    out += [
        (f"cross_entropy none {f}", lambda d, f=f: fe(f, d)["ce_rows"], CE_ROW_BOUND, "rel")
        for f in CE_FAMILIES
    ]
    for red in ("mean", "sum"):
        for wt in WEIGHTINGS:

            def worst_family(d, red=red, wt=wt):
                return np.array([_worst(_ce_reduction_err(f, d, red, wt)) for f in CE_FAMILIES])

            out.append((f"cross_entropy {red} {wt}", worst_family, REDUCTION_BOUND, "rel"))
    for key, bound, unit in (
        ("log_softmax", LOG_SOFTMAX_BOUND, "max(1,|v|)"),
        ("softmax", SOFTMAX_BOUND, "rel"),
        ("logsumexp", LOGSUMEXP_BOUND, "max(1,|m|+L)"),
    ):
        out += [(f"{key} {f}", lambda d, f=f, k=key: fe(f, d)[k], bound, unit) for f in FAMILIES]
    out += [
        (f"{f} near 0", part(_near_zero_err, f), NEAR_ZERO_BOUND, "rel")
        for f in NEAR_ZERO_FUNCTIONS
    ]
    out += [(f"entropy {c}", part(_entropy_err, c), ENTROPY_BOUND, "rel") for c in ENTROPY_CASES]
    out += [(f"kl_divergence {c}", part(_kl_err, c), KL_BOUND, "terms") for c in KL_CASES]
    out += [(f"bce {c}", part(_bce_err, c), BINARY_BOUND, "rel") for c in BCE_CASES]
    out += [(f"bce_with_logits {c}", part(_bcel_err, c), BINARY_BOUND, "rel") for c in BCEL_CASES]
    out += [
        (f"gradient {f}", lambda d, f=f: fe(f, d)["grad_rows"], GRAD_BOUND, "row max")
        for f in CE_FAMILIES
    ]
    out += [
        (f"gradient[target] {f}", lambda d, f=f: fe(f, d)["grad_target"], GRAD_BOUND, "rel")
        for f in GRAD_TARGET_FAMILIES
    ]
    out.append(("softmax([0, -d]) exp sampled", _exp_sampled_err, EXP_BOUND, "rel"))
    return out


def _table() -> str:  # pragma: no cover - run by hand: python tests/test_accuracy.py
    lines = [f"{'measurement':<38} {'f32':>8} {'f64':>8} {'bound':>5}  unit"]
    for label, errors, bound, unit in _measurements():
        f32, f64 = (_worst(errors(dt)) for dt in DTYPES)
        lines.append(f"{label:<38} {f32:>8.3g} {f64:>8.3g} {bound:>5g}  {unit}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(_table())
