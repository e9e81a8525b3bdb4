"""No leaks: ~200k calls, successful and failing, leave the resident set size flat.

RSS is read from ``/proc/self/statm`` (Linux only): after a warm-up of 20k interleaved calls,
each of the 35 cases (18 successful, 17 failing: bad dtype, out-of-range target, bad axis,
bad out=, ...) runs ~5000 times alone; RSS may grow by less than 1 MiB per case (~200 bytes a
call) and 10 MiB in all. The thread count (``/proc/self/status``) must not grow either while
the kernels' thread pool is rebuilt for new thread counts.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
import xent_rs as xr

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"),
    reason="reads the resident set size from /proc/self/statm (Linux only)",
)

WARM_UP = 20_000
CALLS = 180_000
MAX_GROWTH = 10 * 2**20  # bytes, over all calls
MAX_CASE_GROWTH = 2**20  # bytes, over the ~5000 calls of one case (~200 bytes a call)

RNG = np.random.default_rng(12345)
X32 = RNG.standard_normal((4, 5)).astype(np.float32)
X64 = RNG.standard_normal((3, 6))
X16 = X64.astype(np.float16)
XF = np.asfortranarray(RNG.standard_normal((5, 4)))
XBIG = X64.astype(">f8")  # non-native byte order
T = np.array([0, 1, 4, 2])
T8 = np.array([5, 0, 2], dtype=np.uint8)
TBAD = np.array([0, 1, 9, 2])  # index out of range
P = xr.softmax(X64)
W = np.ones(5, dtype=np.float32)
X_COMPLEX = X32.astype(np.complex64)
X_STR = X32.astype(str)
PROBS_BAD = np.array([0.5, 1.5, 0.2])
OUT_WRONG = np.empty((4, 6), dtype=np.float32)
OUT_RO = np.empty_like(X32)
OUT_RO.flags.writeable = False


def _in_place() -> None:
    y = X64.copy()
    xr.log_softmax(y, out=y)


# (call, exception it must raise or None)
CASES: list[tuple[Callable[[], object], type[BaseException] | None]] = [
    # successful calls
    (lambda: xr.log_softmax(X32), None),
    (lambda: xr.softmax(X64, axis=0), None),
    (lambda: xr.softmax(X32, out=np.empty_like(X32)), None),
    (_in_place, None),
    (lambda: xr.log_softmax(X16), None),
    (lambda: xr.logsumexp(XF, axis=0, keepdims=True), None),
    (lambda: xr.logsumexp(XBIG), None),
    (lambda: xr.entropy(P), None),
    (lambda: xr.kl_divergence(P, P[::-1]), None),
    (lambda: xr.cross_entropy(X32, T), None),
    (lambda: xr.cross_entropy(X32, T, weight=W, label_smoothing=0.1, reduction="none"), None),
    (lambda: xr.cross_entropy_with_grad(X64, T8, reduction="sum"), None),
    (lambda: xr.cross_entropy_with_grad(X64, P, axis=-1), None),
    (lambda: xr.nll_loss(X32, T, ignore_index=1), None),
    (lambda: xr.categorical_cross_entropy(P, T8, reduction="none"), None),
    (lambda: xr.binary_cross_entropy(P, P, reduction="none"), None),
    (lambda: xr.binary_cross_entropy_with_logits(X64, P, pos_weight=P[0]), None),
    (lambda: xr.log_softmax([[1.0, 2.0], [3.0, 4.0]]), None),
    # failing calls
    (lambda: xr.log_softmax(X_COMPLEX), TypeError),
    (lambda: xr.entropy(X_STR), TypeError),
    (lambda: xr.cross_entropy(X32, TBAD), ValueError),
    (lambda: xr.nll_loss(X32, TBAD, reduction="none"), ValueError),
    (lambda: xr.cross_entropy_with_grad(X32, TBAD), ValueError),
    (lambda: xr.categorical_cross_entropy(X32, T, eps=0.7), ValueError),
    (lambda: xr.logsumexp(X32, axis=5), IndexError),
    (lambda: xr.softmax(X32, axis=-3), ValueError),
    (lambda: xr.kl_divergence(X32, X64), ValueError),
    (lambda: xr.cross_entropy(X32, T, reduction="avg"), ValueError),
    (lambda: xr.cross_entropy(X32, T, label_smoothing=float("nan")), ValueError),
    (lambda: xr.cross_entropy(X32, T, weight=np.ones(3)), ValueError),
    (lambda: xr.binary_cross_entropy(PROBS_BAD, PROBS_BAD), ValueError),
    (lambda: xr.softmax(X32, out=OUT_WRONG), ValueError),
    (lambda: xr.log_softmax(X32, out=OUT_RO), ValueError),
    (lambda: xr.set_num_threads(0), ValueError),
    (lambda: xr.set_num_threads("2"), TypeError),
]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


def _run(n_calls: int, cases: list | None = None) -> None:
    cases = cases or CASES
    k = len(cases)
    for i in range(n_calls):
        call, exc = cases[i % k]
        if exc is None:
            call()
            continue
        try:
            call()
        except exc:
            continue
        raise AssertionError(f"case {i % k} did not raise {exc.__name__}")


def _settle() -> int:
    gc.collect()
    return _rss()


@pytest.fixture
def saved_threads():
    saved = xr.get_num_threads()
    yield
    xr.set_num_threads(saved)


def test_rss_flat_over_many_calls():
    """A warm-up of all cases interleaved, then each case alone ~5000 times: a leak of a few
    hundred bytes per call of any single case shows (measured noise: < 0.1 MiB per case)."""
    _run(WARM_UP)
    per_case = CALLS // len(CASES)
    start = _settle()
    grown = []
    for i, (call, exc) in enumerate(CASES):
        before = _settle()
        _run(per_case, [(call, exc)])
        growth = _settle() - before
        if growth >= MAX_CASE_GROWTH:
            grown.append(f"case {i}: {growth / 2**20:+.2f} MiB")
    total = _settle() - start
    assert not grown, f"RSS grew over {per_case} calls of: {'; '.join(grown)}"
    assert total < MAX_GROWTH, f"RSS grew by {total / 2**20:.1f} MiB over {CALLS} calls"


@pytest.mark.usefixtures("saved_threads")
def test_rss_and_threads_flat_when_the_pool_is_rebuilt():
    """Large (parallel) calls, successful and failing, alternating the thread count, so that
    the kernels' thread pool is rebuilt on every call: no threads or memory left behind."""
    x = RNG.standard_normal((40_000, 2))
    t = RNG.integers(0, 2, 40_000)
    t_bad = t.copy()
    t_bad[-1] = 2

    def rounds(n: int) -> None:
        for i in range(n):
            xr.set_num_threads(2 + i % 2)
            xr.logsumexp(x, axis=0)
            xr.cross_entropy(x, t)
            try:
                xr.nll_loss(x, t_bad)
            except ValueError:
                pass
            else:
                raise AssertionError("nll_loss accepted an out-of-range target")

    rounds(50)
    before, threads = _settle(), _threads()
    rounds(300)
    growth = _settle() - before
    deadline = time.monotonic() + 5.0  # the threads of a dropped pool exit asynchronously
    while _threads() > threads + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads() <= threads + 1, f"threads: {threads} -> {_threads()}"
    assert growth < MAX_GROWTH, f"RSS grew by {growth / 2**20:.1f} MiB over 300 pool rebuilds"
