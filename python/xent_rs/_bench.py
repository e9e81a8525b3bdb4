"""``xent-rs bench``: xent_rs against its peers, side by side in one process.

Each case generates its data once (seeded ``np.random.default_rng(0)``), then times every
implementation -- xent_rs, the pure-NumPy reference :mod:`xent_rs.reference` ("numpy"), SciPy,
and PyTorch and JAX when they can be imported -- round-robin within each repetition, so that
machine noise hits all of them alike, and reports the median over the repetitions. Each case also
times a *floor*: what the machine needs to merely read the inputs (reductions), copy the input
(functions that return an array of the input's size), or make a trivial NumPy call (call
overhead); an implementation's time over the floor's is its ``xfloor`` column. On the way,
every peer's result is checked against xent_rs's: a disagreement prints a warning row.

Two cases measure something else: ``threads`` times xent_rs alone at 1 thread and at its
thread count, round-robin, and reports the speedup; ``memory`` reports the extra peak resident
memory of one call (Linux only: ``/proc/self/clear_refs`` resets the peak, ``VmHWM``).
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Any, TextIO

import numpy as np

import xent_rs
from xent_rs import reference

__all__ = ["CASES", "BenchError", "Case", "Row", "list_cases", "run", "select_cases"]

Fn = Callable[[], object]
Data = dict[str, np.ndarray]

QUICK_REPEAT = 3
FULL_REPEAT = 7
QUICK_DIVISOR = 16  # quick mode divides the leading dimension by this
SLOW_REFERENCE_S = 3.0  # non-quick mode skips the NumPy reference when one call takes longer
PROBE_MIN_BYTES = 64 << 20  # ... which is only predicted for inputs at least this large
PROBE_FRACTION = 16  # the prediction times the reference on 1/16 of the rows
MIN_SAMPLE_S = {True: 0.003, False: 0.01}  # one timed sample lasts at least this (quick, full)
PEER_ORDER = ("xent_rs", "numpy", "scipy", "torch", "jax")
TIMES = "\u00d7"  # the multiplication sign of the "xfloor" column
IMPL_WIDTH = 7  # the table's impl column (wider when the threads case names "16 threads")
CLEAR_REFS = "/proc/self/clear_refs"  # writing "5" resets the peak RSS (VmHWM), Linux >= 4.0
PROC_STATUS = "/proc/self/status"  # VmRSS and VmHWM, in KiB
PEAK_RESET_SLACK_KIB = 1024  # VmHWM over VmRSS right after a reset: the reset did not work
MIB = 1 << 20


class BenchError(Exception):
    """A usage problem (unknown case, missing matplotlib, ...): the CLI prints it in one line."""


# --------------------------------------------------------------------------- peers
@dataclass
class Peers:
    """The optional peer libraries that could be imported (``None`` where not)."""

    scipy_special: Any = None
    torch: Any = None
    jax: Any = None
    jnp: Any = None
    versions: dict[str, str] = field(default_factory=dict)


NO_PEERS = Peers()


def _load_peers(threads: int) -> Peers:
    peers = Peers()
    try:
        scipy_special = importlib.import_module("scipy.special")
        peers.scipy_special = scipy_special
        peers.versions["scipy"] = importlib.import_module("scipy").__version__
    except ImportError:
        peers.versions["scipy"] = "not installed"
    try:
        torch = importlib.import_module("torch")
        torch.set_num_threads(threads)
        peers.torch = torch
        peers.versions["torch"] = str(torch.__version__)
    except ImportError:
        peers.versions["torch"] = "not installed"
    except Exception as exc:  # a broken install must not stop the benchmark
        peers.versions["torch"] = f"unusable ({type(exc).__name__})"
    try:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        jax = importlib.import_module("jax")
        jnp = importlib.import_module("jax.numpy")

        jax.config.update("jax_enable_x64", True)  # else float64 inputs silently become float32
        peers.jax, peers.jnp = jax, jnp
        peers.versions["jax"] = jax.__version__
    except ImportError:
        peers.versions["jax"] = "not installed"
    except Exception as exc:
        peers.versions["jax"] = f"unusable ({type(exc).__name__})"
    return peers


def _reduce(per: Any, denominator: Any, reduction: str) -> Any:
    """Finish per-sample losses (NumPy or JAX arrays) like the losses' ``reduction``."""
    if reduction == "none":
        return per
    total = per.sum()
    return total if reduction == "sum" else total / denominator


# --------------------------------------------------------------------------- implementations
def _ce_impls(
    d: Data,
    peers: Peers,
    *,
    reduction: str = "mean",
    smoothing: float = 0.0,
    upcast: bool = False,
    keywords: bool = True,
) -> dict[str, Fn]:
    """``cross_entropy`` with index (int) or probability (float) targets ``t``, weight ``w``.

    ``upcast``: the SciPy and JAX peers compute float16 input in float32, as xent_rs does.
    ``keywords``: xent_rs and PyTorch are called with ``weight``, ``label_smoothing`` and
    ``reduction`` as keywords; without, as plain ``cross_entropy(x, t)`` (defaults only).
    """
    x, t, w = d["x"], d["t"], d.get("w")
    e = smoothing
    n, c = x.shape
    soft = t.dtype.kind == "f"
    kw: dict[str, Any] = {"weight": w, "label_smoothing": e, "reduction": reduction}
    if not keywords:
        assert w is None and e == 0 and reduction == "mean", "plain calls take the defaults"
        kw = {}
    impls: dict[str, Fn] = {
        "xent_rs": lambda: xent_rs.cross_entropy(x, t, **kw),
        "numpy": lambda: reference.cross_entropy(x, t, **kw),
    }
    sp = peers.scipy_special
    if sp is not None:

        def scipy_ce() -> object:
            z = x.astype(np.float32) if upcast else x
            if soft:
                q = t if e == 0 else (1 - e) * t + e / c
                if w is not None:
                    q = q * w
                per = -(q * sp.log_softmax(z, axis=-1)).sum(axis=-1)
                return _reduce(per, n, reduction)
            lse = sp.logsumexp(z, axis=-1)
            nll = lse - np.take_along_axis(z, t[:, None], axis=-1)[:, 0]
            wt = None if w is None else w[t]
            per = nll if wt is None else wt * nll
            if e:
                # einsum, not z @ w: BLAS would start threads that keep spinning after the call
                # and steal the cores from whichever implementation is timed next.
                if w is None:
                    smooth = c * lse - z.sum(axis=-1)
                else:
                    smooth = w.sum() * lse - np.einsum("ij,j->i", z, w)
                per = (1 - e) * per + (e / c) * smooth
            return _reduce(per, n if wt is None else wt.sum(), reduction)

        impls["scipy"] = scipy_ce
    torch = peers.torch
    if torch is not None:
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        wt_t = None if w is None else torch.from_numpy(w)
        f_ce = torch.nn.functional.cross_entropy
        if keywords:
            impls["torch"] = lambda: f_ce(
                xt, tt, weight=wt_t, label_smoothing=e, reduction=reduction
            )
        else:
            impls["torch"] = lambda: f_ce(xt, tt)
    jax, jnp = peers.jax, peers.jnp
    if jax is not None:

        def jax_ce(z: Any, tj: Any, wj: Any) -> Any:
            if upcast:
                z = z.astype(jnp.float32)
            logp = jax.nn.log_softmax(z, axis=-1)
            if soft:
                q = tj if e == 0 else (1 - e) * tj + e / c
                if wj is not None:
                    q = q * wj
                return _reduce(-(q * logp).sum(axis=-1), n, reduction)
            nll = -jnp.take_along_axis(logp, tj[:, None], axis=-1)[:, 0]
            wt = None if wj is None else wj[tj]
            per = nll if wt is None else wt * nll
            if e:
                per = (1 - e) * per - (e / c) * (logp if wj is None else logp * wj).sum(axis=-1)
            return _reduce(per, n if wt is None else wt.sum(), reduction)

        impls["jax"] = _jitted(jax, jax_ce, x, t, w)
    return impls


def _jitted(jax: Any, fn: Callable[..., Any], *arrays: np.ndarray | None) -> Fn:
    """``fn`` jitted, on arrays put on the device once (outside the timing), waited for."""
    compiled = jax.jit(fn)
    on_device = jax.device_put(arrays)
    return lambda: jax.block_until_ready(compiled(*on_device))


def _ce_grad_impls(d: Data, peers: Peers) -> dict[str, Fn]:
    x, t = d["x"], d["t"]
    n = x.shape[0]
    impls: dict[str, Fn] = {
        "xent_rs": lambda: xent_rs.cross_entropy_with_grad(x, t),
        "numpy": lambda: reference.cross_entropy_with_grad(x, t),
    }
    sp = peers.scipy_special
    if sp is not None:

        def scipy_grad() -> object:
            rows = np.arange(n)
            logp = sp.log_softmax(x, axis=-1)
            loss = -logp[rows, t].mean()
            grad = np.exp(logp, out=logp)
            grad[rows, t] -= 1
            grad /= n
            return loss, grad

        impls["scipy"] = scipy_grad
    torch = peers.torch
    if torch is not None:
        f_ce = torch.nn.functional.cross_entropy
        tt = torch.from_numpy(t)

        def torch_grad() -> object:
            xt = torch.from_numpy(x).requires_grad_(True)
            loss = f_ce(xt, tt)
            (grad,) = torch.autograd.grad(loss, xt)
            return loss, grad

        impls["torch"] = torch_grad
    jax, jnp = peers.jax, peers.jnp
    if jax is not None:

        def jax_loss(z: Any, tj: Any) -> Any:
            logp = jax.nn.log_softmax(z, axis=-1)
            return -jnp.take_along_axis(logp, tj[:, None], axis=-1).mean()

        impls["jax"] = _jitted(jax, jax.value_and_grad(jax_loss), x, t)
    return impls


def _along_last_axis(name: str) -> Callable[[Data, Peers], dict[str, Fn]]:
    """Implementations of a function of one array along its last axis, named ``name``
    alike in xent_rs, the reference, scipy.special, torch and jax.nn."""

    def impls_for(d: Data, peers: Peers) -> dict[str, Fn]:
        x = d["x"]
        impls: dict[str, Fn] = {
            "xent_rs": lambda: getattr(xent_rs, name)(x),
            "numpy": lambda: getattr(reference, name)(x),
        }
        if peers.scipy_special is not None:
            sp = getattr(peers.scipy_special, name)
            impls["scipy"] = lambda: sp(x, axis=-1)
        if peers.torch is not None:
            tf, xt = getattr(peers.torch, name), peers.torch.from_numpy(x)
            impls["torch"] = lambda: tf(xt, dim=-1)
        if peers.jax is not None:
            jf = getattr(peers.jax.nn, name)
            impls["jax"] = _jitted(peers.jax, lambda z: jf(z, axis=-1), x)
        return impls

    return impls_for


def _log_softmax_out_impls(d: Data, peers: Peers) -> dict[str, Fn]:
    """``out=``: only the implementations that can write into a given array."""
    x, out = d["x"], d["out"]
    impls: dict[str, Fn] = {
        "xent_rs": lambda: xent_rs.log_softmax(x, out=out),
        "numpy": lambda: reference.log_softmax(x, out=out),
    }
    if peers.torch is not None:
        torch = peers.torch
        xt, outt = torch.from_numpy(x), torch.from_numpy(out)
        impls["torch"] = lambda: torch.log_softmax(xt, -1, out=outt)
    return impls


def _bce_logits_impls(d: Data, peers: Peers) -> dict[str, Fn]:
    x, t = d["x"], d["t"]
    impls: dict[str, Fn] = {
        "xent_rs": lambda: xent_rs.binary_cross_entropy_with_logits(x, t),
        "numpy": lambda: reference.binary_cross_entropy_with_logits(x, t),
    }
    if peers.scipy_special is not None:
        log_expit = peers.scipy_special.log_expit
        impls["scipy"] = lambda: -(t * log_expit(x) + (1 - t) * log_expit(-x)).mean()
    if peers.torch is not None:
        torch = peers.torch
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        f_bce = torch.nn.functional.binary_cross_entropy_with_logits
        impls["torch"] = lambda: f_bce(xt, tt)
    if peers.jax is not None:
        log_sigmoid = peers.jax.nn.log_sigmoid

        def jax_bce(z: Any, tj: Any) -> Any:
            return -(tj * log_sigmoid(z) + (1 - tj) * log_sigmoid(-z)).mean()

        impls["jax"] = _jitted(peers.jax, jax_bce, x, t)
    return impls


def _bce_impls(d: Data, peers: Peers) -> dict[str, Fn]:
    p, t = d["x"], d["t"]
    impls: dict[str, Fn] = {
        "xent_rs": lambda: xent_rs.binary_cross_entropy(p, t),
        "numpy": lambda: reference.binary_cross_entropy(p, t),
    }
    if peers.torch is not None:
        torch = peers.torch
        pt, tt = torch.from_numpy(p), torch.from_numpy(t)
        f_bce = torch.nn.functional.binary_cross_entropy
        impls["torch"] = lambda: f_bce(pt, tt)
    if peers.jax is not None:
        jnp = peers.jnp

        def jax_bce(pj: Any, tj: Any) -> Any:
            log_p = jnp.maximum(jnp.log(pj), -100.0)
            log_1mp = jnp.maximum(jnp.log1p(-pj), -100.0)
            return -(tj * log_p + (1 - tj) * log_1mp).mean()

        impls["jax"] = _jitted(peers.jax, jax_bce, p, t)
    return impls


def _ce_memory_impls(d: Data, peers: Peers) -> dict[str, Fn]:
    """``cross_entropy`` by xent_rs, the NumPy reference and PyTorch (whose peak memory counts)."""
    return _ce_impls(d, Peers(torch=peers.torch))


# --------------------------------------------------------------------------- data
def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if dtype is np.float64:
        return rng.standard_normal(shape, dtype=np.float64)
    x = rng.standard_normal(shape, dtype=np.float32)
    return x if dtype is np.float32 else x.astype(dtype)


def _make_ce(
    dtype: type = np.float32, *, weight: bool = False, soft: bool = False
) -> Callable[[np.random.Generator, tuple[int, ...]], Data]:
    def make(rng: np.random.Generator, shape: tuple[int, ...]) -> Data:
        n, c = shape
        d = {"x": _normal(rng, shape, dtype)}
        if soft:
            q = rng.standard_normal(shape, dtype=np.float32)
            np.exp(q, out=q)
            q /= q.sum(axis=-1, keepdims=True)
            d["t"] = q.astype(dtype, copy=False)
        else:
            d["t"] = rng.integers(0, c, n, dtype=np.int64)
        if weight:
            d["w"] = rng.uniform(0.5, 1.5, c).astype(dtype)
        return d

    return make


def _make_x(rng: np.random.Generator, shape: tuple[int, ...]) -> Data:
    return {"x": _normal(rng, shape, np.float32)}


def _make_x_out(rng: np.random.Generator, shape: tuple[int, ...]) -> Data:
    x = _normal(rng, shape, np.float32)
    return {"x": x, "out": np.empty_like(x)}


def _make_binary(probs: bool) -> Callable[[np.random.Generator, tuple[int, ...]], Data]:
    def make(rng: np.random.Generator, shape: tuple[int, ...]) -> Data:
        x = _normal(rng, shape, np.float32)
        if probs:  # sigmoid, in place
            np.negative(x, out=x)
            np.exp(x, out=x)
            x += 1
            np.reciprocal(x, out=x)
        t = (rng.random(shape, dtype=np.float32) < 0.5).astype(np.float32)
        return {"x": x, "t": t}

    return make


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One benchmark case: its data, the implementations compared and what its floor is.

    ``kind`` picks the floor: ``"read"`` (read every input byte once), ``"write"``
    (``x.copy()``), ``"out"`` (``np.copyto(out, x)``) or ``"overhead"`` (``np.negative(x)``);
    or what is measured instead of the peers' times: ``"threads"`` (xent_rs alone, at 1 thread
    and at its thread count, over the read floor) or ``"memory"`` (the extra peak resident memory
    of one call, no floor).
    """

    key: str
    label: str  # "{shape}" is replaced by the shape used
    shape: tuple[int, ...]
    kind: str
    make: Callable[[np.random.Generator, tuple[int, ...]], Data]
    impls: Callable[[Data, Peers], dict[str, Fn]]
    inputs: tuple[str, ...] = ("x", "t")  # the arrays read: GB/s, and the "read" floor
    tol: float = 1e-3  # relative (to the largest |value|) agreement expected of the peers
    quick_divisor: int = QUICK_DIVISOR

    def shape_for(self, quick: bool) -> tuple[int, ...]:
        if not quick:
            return self.shape
        return (max(1, self.shape[0] // self.quick_divisor), *self.shape[1:])

    def title(self, quick: bool) -> str:
        return self.label.format(shape=_fmt_shape(self.shape_for(quick)))


_CE_IN = ("x", "t")
CASES: tuple[Case, ...] = (
    Case("ce", "cross_entropy f32 {shape} int targets mean", (2048, 32768), "read",
         _make_ce(), _ce_impls),
    Case("ce-wide", "cross_entropy f32 {shape}", (256, 262144), "read", _make_ce(), _ce_impls),
    Case("ce-1000", "cross_entropy f32 {shape}", (16384, 1000), "read", _make_ce(), _ce_impls),
    Case("ce-10", "cross_entropy f32 {shape}", (262144, 10), "read", _make_ce(), _ce_impls),
    Case("ce-f64", "cross_entropy f64 {shape}", (1024, 32768), "read",
         _make_ce(np.float64), _ce_impls, tol=1e-6),
    Case("ce-none", "cross_entropy none f32 {shape}", (2048, 32768), "read",
         _make_ce(), partial(_ce_impls, reduction="none")),
    Case("ce-smooth-weight", "cross_entropy label_smoothing+weight f32 {shape}", (2048, 32768),
         "read", _make_ce(weight=True), partial(_ce_impls, smoothing=0.1),
         inputs=("x", "t", "w")),
    Case("ce-soft", "cross_entropy soft targets f32 {shape}", (2048, 8192), "read",
         _make_ce(soft=True), _ce_impls),
    Case("ce-grad", "cross_entropy_with_grad f32 {shape}", (2048, 32768), "write",
         _make_ce(), _ce_grad_impls),
    Case("log-softmax", "log_softmax f32 {shape}", (4096, 8192), "write",
         _make_x, _along_last_axis("log_softmax"), inputs=("x",)),
    Case("log-softmax-out", "log_softmax out= f32 {shape}", (4096, 8192), "out",
         _make_x_out, _log_softmax_out_impls, inputs=("x",)),
    Case("logsumexp", "logsumexp f32 {shape}", (4096, 8192), "read",
         _make_x, _along_last_axis("logsumexp"), inputs=("x",)),
    # few classes: rows batched eight at a time (not one of the rows)
    Case("logsumexp-10", "logsumexp f32 {shape}", (262144, 10), "read",
         _make_x, _along_last_axis("logsumexp"), inputs=("x",)),
    Case("log-softmax-10", "log_softmax f32 {shape}", (262144, 10), "write",
         _make_x, _along_last_axis("log_softmax"), inputs=("x",)),
    Case("softmax-10", "softmax f32 {shape}", (262144, 10), "write",
         _make_x, _along_last_axis("softmax"), inputs=("x",)),
    Case("bce-logits", "binary_cross_entropy_with_logits f32 {shape}", (20_000_000,), "read",
         _make_binary(probs=False), _bce_logits_impls),
    Case("bce", "binary_cross_entropy f32 {shape}", (20_000_000,), "read",
         _make_binary(probs=True), _bce_impls),
    Case("ce-f16", "cross_entropy f16 {shape}", (2048, 32768), "read",
         _make_ce(np.float16), partial(_ce_impls, upcast=True), tol=1e-2),
    Case("overhead", "call overhead {shape} cross_entropy(x, t)", (8, 10), "overhead",
         _make_ce(), partial(_ce_impls, keywords=False), quick_divisor=1),
    # keywords cost Python a dict per call (about 0.2 us here) whatever the callee
    Case("overhead-kw", "call overhead {shape} cross_entropy with keywords", (8, 10),
         "overhead", _make_ce(), _ce_impls, quick_divisor=1),
    # bitwise the same result for any thread count: tol 0
    Case("threads", "cross_entropy f32 {shape} xent_rs 1 thread vs all", (262144, 10),
         "threads", _make_ce(), _ce_impls, tol=0.0),
    Case("memory", "extra peak memory cross_entropy f32 {shape} mean", (2048, 32768),
         "memory", _make_ce(), _ce_memory_impls),
)  # fmt: skip


def select_cases(only: Sequence[str] | None) -> list[Case]:
    """The cases named by ``only`` (a key, or a case-insensitive part of a title), in order."""
    if not only:
        return list(CASES)
    chosen: set[str] = set()
    for name in only:
        wanted = name.strip().lower()
        exact = [c for c in CASES if c.key == wanted]
        found = exact or [
            c for c in CASES if wanted and (wanted in c.title(False) or wanted in c.title(True))
        ]
        if not found:
            keys = ", ".join(c.key for c in CASES)
            raise BenchError(f"--only: no case matches {name!r} (cases: {keys})")
        chosen.update(c.key for c in found)
    return [c for c in CASES if c.key in chosen]


def list_cases(stream: TextIO) -> None:
    """Print each case's key and titles (full and --quick)."""
    width = max(len(c.key) for c in CASES)
    for c in CASES:
        print(
            f"{c.key:<{width}}  {c.title(False)}  (--quick: {_fmt_shape(c.shape_for(True))})",
            file=stream,
        )


# --------------------------------------------------------------------------- measuring
@dataclass
class Row:
    """One line of the table: an implementation (or the floor) on a case."""

    case: str
    key: str
    impl: str
    status: str = "ok"  # "ok", "skipped", "error"
    median_s: float | None = None
    gb_per_s: float | None = None
    x_floor: float | None = None
    calls_per_sample: int = 0
    samples_s: list[float] = field(default_factory=list)
    rel_err: float | None = None  # against xent_rs; None: not compared
    tol: float | None = None
    warning: str | None = None
    detail: str = ""
    threads: int | None = None  # the "threads" case: xent_rs's thread count for this row
    speedup: float | None = None  # ... and on its last row: median 1-thread time / median time
    peak_samples: list[int] = field(default_factory=list)  # "memory": extra peak bytes per call
    extra_peak_mib: float | None = None  # ... their median, in MiB
    extra_peak_pct: float | None = None  # ... and in % of the inputs' bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "key": self.key,
            "impl": self.impl,
            "status": self.status,
            "median_ms": _finite(None if self.median_s is None else self.median_s * 1e3),
            "gb_per_s": _finite(self.gb_per_s),
            "x_floor": _finite(self.x_floor),
            "calls_per_sample": self.calls_per_sample,
            "samples_ms": [_finite(s * 1e3) for s in self.samples_s],
            "rel_err_vs_xent_rs": _finite(self.rel_err),
            "tol": self.tol,
            "agrees": None if self.rel_err is None else self.warning is None,
            "warning": self.warning,
            "detail": self.detail,
            "threads": self.threads,
            "speedup_vs_1_thread": _finite(self.speedup),
            "extra_peak_mib": _finite(self.extra_peak_mib),
            "extra_peak_pct_of_input": _finite(self.extra_peak_pct),
            "extra_peak_samples_mib": [s / MIB for s in self.peak_samples],
        }


@dataclass
class _Timed:
    row: Row
    fn: Fn
    number: int = 1
    prepare: Fn | None = None  # called, untimed, before each sample


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def _time_calls(fn: Fn, number: int) -> float:
    """Seconds per call over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _calls_per_sample(fn: Fn, first_call_s: float, min_sample_s: float) -> int:
    """How many calls make a sample of at least ``min_sample_s`` (1 for slow functions)."""
    if first_call_s >= min_sample_s:
        return 1
    again = _time_calls(fn, 1)  # the first call may include compilation or page faults
    if again >= min_sample_s:
        return 1
    return min(100_000, math.ceil(min_sample_s / max(again, 1e-7)))


def _as_numpy(result: object) -> Any:
    """A result (NumPy, PyTorch or JAX; scalar, array or tuple) as NumPy arrays."""
    if isinstance(result, tuple):
        return tuple(_as_numpy(r) for r in result)
    detach = getattr(result, "detach", None)
    if detach is not None:  # torch.Tensor
        result = detach().cpu().numpy()
    return np.asarray(result)


def _owned(result: object) -> Any:
    """``_as_numpy`` copied, so that later calls writing into ``out=`` cannot change it."""
    got = _as_numpy(result)
    if isinstance(got, tuple):
        return tuple(np.array(g, copy=True) for g in got)
    return np.array(got, copy=True)


def _rel_err(got: Any, want: Any) -> tuple[float, str]:
    """``max|got - want| / max|want|`` (inf with a reason on a shape or NaN/inf mismatch)."""
    if isinstance(want, tuple) or isinstance(got, tuple):
        if not (isinstance(want, tuple) and isinstance(got, tuple)) or len(got) != len(want):
            return math.inf, "result structure differs"
        errs = [_rel_err(g, w) for g, w in zip(got, want, strict=True)]
        return max(errs, key=lambda e: e[0])
    g, w = np.asarray(got), np.asarray(want)
    if g.shape != w.shape:
        return math.inf, f"shape {g.shape} vs {w.shape}"
    g, w = g.reshape(-1), w.reshape(-1)
    worst, scale = 0.0, 0.0
    block = 1 << 22
    with np.errstate(all="ignore"):
        for start in range(0, w.size, block):
            gb = g[start : start + block].astype(np.float64)
            wb = w[start : start + block].astype(np.float64)
            finite = np.isfinite(wb)
            if not np.array_equal(np.isnan(gb), np.isnan(wb)) or not np.array_equal(
                gb[np.isinf(wb)], wb[np.isinf(wb)]
            ):
                return math.inf, "NaN/inf pattern differs"
            if finite.any():
                worst = max(worst, float(np.max(np.abs(gb[finite] - wb[finite]))))
                scale = max(scale, float(np.max(np.abs(wb[finite]))))
    if math.isnan(worst):
        return math.inf, "NaN where xent_rs is finite"
    return worst / max(scale, np.finfo(np.float64).tiny), ""


def _check(row: Row, got: Any, want: Any, tol: float, against: str = "xent_rs") -> None:
    err, why = _rel_err(got, want)
    row.rel_err, row.tol = err, tol
    if err > tol:
        what = why or f"max rel. error {err:.2e} > {tol:.0e}"
        row.warning = f"{row.impl} disagrees with {against}: {what}"


def _u64_view(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a``'s bytes as uint64 words and the few trailing bytes."""
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    whole = flat.size // 8 * 8
    return flat[:whole].view(np.uint64), flat[whole:]


def _floor(case: Case, d: Data, read_floor: Callable[..., float] | None) -> Fn:
    x = d["x"]
    if case.kind == "write":
        return lambda: x.copy()
    if case.kind == "out":
        out = d["out"]
        return lambda: np.copyto(out, x)
    if case.kind == "overhead":
        return lambda: np.negative(x)
    arrays = [d[k] for k in case.inputs]
    if read_floor is not None:
        return lambda: read_floor(*arrays)
    views = [_u64_view(a) for a in arrays]
    return lambda: [(np.add.reduce(w), np.add.reduce(b)) for w, b in views]


def _predict_reference(case: Case, d: Data, tol: float) -> tuple[float, Row | None]:
    """Predict one NumPy-reference call from 1/16 of the rows; a checked "skipped" row if slow."""
    n = d["x"].shape[0]
    k = max(1, n // PROBE_FRACTION)
    sub = {name: (a if name == "w" else a[:k]) for name, a in d.items()}
    impls = case.impls(sub, NO_PEERS)
    start = time.perf_counter()
    got = _owned(impls["numpy"]())
    predicted = (time.perf_counter() - start) * n / k
    if predicted <= SLOW_REFERENCE_S:
        return predicted, None
    row = Row(case="", key=case.key, impl="numpy", status="skipped")
    row.detail = f"~{predicted:.1f} s/call predicted; checked on {k} of {n} rows"
    try:
        _check(row, got, _owned(impls["xent_rs"]()), tol)
    except Exception as exc:
        row.detail += f" (xent_rs failed: {type(exc).__name__})"
    return predicted, row


def _timed_floor(
    case: Case, data: Data, read_floor: Callable[..., float] | None, title: str, min_sample: float
) -> tuple[Row, _Timed | None]:
    """The case's floor row, and its timing (``None`` if the floor failed: no xfloor then)."""
    floor_row = Row(case=title, key=case.key, impl="floor")
    floor_fn = _floor(case, data, read_floor)
    try:
        start = time.perf_counter()
        floor_fn()
        floor_number = _calls_per_sample(floor_fn, time.perf_counter() - start, min_sample)
    except Exception as exc:  # e.g. a failing read_floor: the case still runs, without xfloor
        floor_row.status = "error"
        floor_row.detail = _error_text(exc)
        return floor_row, None
    return floor_row, _Timed(floor_row, floor_fn, floor_number)


def _round_robin(timed: Sequence[_Timed], repeat: int) -> None:
    """``repeat`` samples of each timing, round-robin, starting one further each repetition."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for rep in range(repeat):
            k = rep % len(timed) if timed else 0
            for t in [*timed[k:], *timed[:k]]:
                if t.row.status != "ok":
                    continue
                try:
                    if t.prepare is not None:
                        t.prepare()
                    t.row.samples_s.append(_time_calls(t.fn, t.number))
                except Exception as exc:
                    t.row.status = "error"
                    t.row.detail = _error_text(exc)
    finally:
        if gc_was_enabled:
            gc.enable()


def _summarize(timed: Sequence[_Timed], floor_row: Row, nbytes: int) -> None:
    """Each timed row's median, GB/s over the ``nbytes`` read and time over the floor's."""
    floor_s = statistics.median(floor_row.samples_s) if floor_row.samples_s else None
    for t in timed:
        r = t.row
        r.calls_per_sample = t.number
        if r.status != "ok" or not r.samples_s:
            continue
        r.median_s = statistics.median(r.samples_s)
        r.gb_per_s = nbytes / r.median_s / 1e9 if r.median_s > 0 else None
        r.x_floor = r.median_s / floor_s if floor_s else None


def _run_case(
    case: Case,
    *,
    quick: bool,
    repeat: int,
    peers: Peers,
    read_floor: Callable[..., float] | None,
) -> list[Row]:
    title = case.title(quick)
    data = case.make(np.random.default_rng(0), case.shape_for(quick))
    nbytes = sum(data[k].nbytes for k in case.inputs)
    min_sample = MIN_SAMPLE_S[quick]
    rows: list[Row] = []
    timed: list[_Timed] = []

    floor_row, floor_timed = _timed_floor(case, data, read_floor, title, min_sample)
    rows.append(floor_row)
    if floor_timed is not None:
        timed.append(floor_timed)

    skipped: Row | None = None
    if not quick and nbytes >= PROBE_MIN_BYTES:
        _, skipped = _predict_reference(case, data, case.tol)

    ours: Any = None
    ours_failed = False
    impls = case.impls(data, peers)
    for name in sorted(impls, key=PEER_ORDER.index):
        fn = impls[name]
        if name == "numpy" and skipped is not None:
            skipped.case = title
            rows.append(skipped)
            continue
        row = Row(case=title, key=case.key, impl=name)
        rows.append(row)
        try:
            start = time.perf_counter()
            result = fn()
            first = time.perf_counter() - start
            if name == "xent_rs":
                ours = _owned(result)
            elif ours is not None:
                _check(row, _as_numpy(result), ours, case.tol)
            else:
                row.detail = "not checked (xent_rs failed)"
            del result
            number = _calls_per_sample(fn, first, min_sample)
        except Exception as exc:
            row.status = "error"
            row.detail = _error_text(exc)
            if name == "xent_rs":
                ours_failed = True
                row.warning = f"xent_rs failed: {row.detail}"
            continue
        timed.append(_Timed(row, fn, number))
    del ours
    if ours_failed:
        for row in rows:
            if row.impl not in ("floor", "xent_rs") and row.status == "ok":
                row.detail = "not checked (xent_rs failed)"

    _round_robin(timed, repeat)
    _summarize(timed, floor_row, nbytes)
    del timed, impls, data
    gc.collect()
    return rows


def _threads_impl(n: int) -> str:
    """The impl column of the ``threads`` case's row for ``n`` threads."""
    return "1 thread" if n == 1 else f"{n} threads"


def _use_threads(n: int, warm: Fn | None = None) -> None:
    """Set xent_rs's thread count; if that changes it, call ``warm`` once (untimed), so that the
    thread pool xent_rs then rebuilds is not timed."""
    if xent_rs.get_num_threads() != n:
        xent_rs.set_num_threads(n)
        if warm is not None:
            warm()


def _run_threads_case(
    case: Case,
    *,
    quick: bool,
    repeat: int,
    peers: Peers,
    read_floor: Callable[..., float] | None,
) -> list[Row]:
    """xent_rs alone at 1 thread and at its current thread count ``T``, round-robin with the
    read floor (at ``T`` threads); the last row's ``speedup`` is the 1-thread median over its
    median. The thread count is restored afterwards, also on error."""
    del peers  # xent_rs against itself
    title = case.title(quick)
    data = case.make(np.random.default_rng(0), case.shape_for(quick))
    nbytes = sum(data[k].nbytes for k in case.inputs)
    min_sample = MIN_SAMPLE_S[quick]
    original = xent_rs.get_num_threads()
    fn = case.impls(data, NO_PEERS)["xent_rs"]
    rows: list[Row] = []
    timed: list[_Timed] = []
    try:
        floor_row, floor_timed = _timed_floor(case, data, read_floor, title, min_sample)
        rows.append(floor_row)
        if floor_timed is not None:
            floor_timed.prepare = partial(_use_threads, original, floor_timed.fn)
            timed.append(floor_timed)
        one_thread: Any = None
        for n in dict.fromkeys((1, original)):
            row = Row(case=title, key=case.key, impl=_threads_impl(n), threads=n)
            rows.append(row)
            try:
                _use_threads(n, fn)
                start = time.perf_counter()
                result = fn()
                first = time.perf_counter() - start
                if n == 1:
                    one_thread = _owned(result)
                elif one_thread is not None:
                    _check(row, _as_numpy(result), one_thread, case.tol, against="1 thread")
                else:
                    row.detail = "not checked (1 thread failed)"
                del result
                number = _calls_per_sample(fn, first, min_sample)
            except Exception as exc:
                row.status = "error"
                row.detail = _error_text(exc)
                row.warning = f"xent_rs with {row.impl} failed: {row.detail}"
                continue
            timed.append(_Timed(row, fn, number, prepare=partial(_use_threads, n, fn)))
        del one_thread
        if original == 1:
            rows.append(
                Row(
                    case=title,
                    key=case.key,
                    impl="N threads",
                    status="skipped",
                    detail="xent_rs runs 1 thread here: compare with --threads 2 (or more)",
                )
            )
        _round_robin(timed, repeat)
    finally:
        xent_rs.set_num_threads(original)
    _summarize(timed, floor_row, nbytes)
    single, multi = rows[1], rows[-1]
    if multi.threads not in (None, 1) and single.median_s and multi.median_s:
        multi.speedup = single.median_s / multi.median_s
    del timed, fn, data
    gc.collect()
    return rows


def _status_kib() -> tuple[int, int]:
    """This process's resident memory now and its peak (``VmRSS``, ``VmHWM``), in KiB."""
    found: dict[str, int] = {}
    with open(PROC_STATUS, encoding="ascii", errors="replace") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    if len(found) != 2:
        raise OSError(f"{PROC_STATUS} lacks VmRSS or VmHWM")
    return found["VmRSS"], found["VmHWM"]


def _reset_peak() -> int:
    """Reset the peak resident memory to the current one; returns the latter (bytes)."""
    with open(CLEAR_REFS, "w", encoding="ascii") as fh:
        fh.write("5")
    rss, hwm = _status_kib()
    if hwm - rss > PEAK_RESET_SLACK_KIB:
        raise OSError(f"writing 5 to {CLEAR_REFS} did not reset VmHWM")
    return rss * 1024


def _peak_memory_unavailable() -> str | None:
    """Why the extra peak memory cannot be measured here (``None``: it can)."""
    if not sys.platform.startswith("linux"):
        return f"needs Linux ({CLEAR_REFS}, VmHWM); this is {sys.platform}"
    try:
        _reset_peak()
    except OSError as exc:
        why = exc.strerror or str(exc)
        return f"cannot reset the peak RSS through {CLEAR_REFS} ({why})"
    except ValueError as exc:  # a malformed /proc/self/status
        return f"cannot read {PROC_STATUS} ({exc})"
    return None


def _malloc_trim() -> Fn:
    """glibc's ``malloc_trim(0)`` (a no-op elsewhere): hands freed heap pages back to the
    system, so that a call reusing them does not hide its allocations from the peak RSS."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def _extra_peak(fn: Fn, trim: Fn) -> tuple[int, float, object]:
    """One call's peak resident memory over the resident memory before it (bytes), its time
    (seconds) and its result."""
    gc.collect()
    trim()
    before = _reset_peak()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _status_kib()[1] * 1024
    return max(0, peak - before), seconds, result


def _run_memory_case(
    case: Case,
    *,
    quick: bool,
    repeat: int,
    peers: Peers,
    read_floor: Callable[..., float] | None,
) -> list[Row]:
    """Each implementation's extra peak resident memory over one call: a warm-up call (checked
    against xent_rs), then the median of ``repeat`` calls, round-robin; an implementation whose
    call takes over ``SLOW_REFERENCE_S`` keeps its warm-up call's value instead."""
    del read_floor  # no floor
    title = case.title(quick)
    why_not = _peak_memory_unavailable()
    if why_not is not None:
        return [Row(case=title, key=case.key, impl="all", status="skipped", detail=why_not)]
    data = case.make(np.random.default_rng(0), case.shape_for(quick))  # allocated and written
    nbytes = sum(data[k].nbytes for k in case.inputs)
    trim = _malloc_trim()
    rows: list[Row] = []
    measured: list[tuple[Row, Fn]] = []
    ours: Any = None
    impls = case.impls(data, peers)
    for name in sorted(impls, key=PEER_ORDER.index):
        fn = impls[name]
        row = Row(case=title, key=case.key, impl=name)
        rows.append(row)
        try:
            extra, seconds, result = _extra_peak(fn, trim)
            if name == "xent_rs":
                ours = _owned(result)
            elif ours is not None:
                _check(row, _as_numpy(result), ours, case.tol)
            else:
                row.detail = "not checked (xent_rs failed)"
            del result
        except Exception as exc:
            row.status = "error"
            row.detail = _error_text(exc)
            if name == "xent_rs":
                row.warning = f"xent_rs failed: {row.detail}"
            continue
        if seconds > SLOW_REFERENCE_S:
            row.peak_samples.append(extra)
            row.detail = f"1 call measured: one takes {seconds:.1f} s"
        else:
            measured.append((row, fn))
    del ours

    for rep in range(repeat):
        k = rep % len(measured) if measured else 0
        for row, fn in [*measured[k:], *measured[:k]]:
            if row.status != "ok":
                continue
            try:
                extra, _, result = _extra_peak(fn, trim)
                del result
                row.peak_samples.append(extra)
            except Exception as exc:
                row.status = "error"
                row.detail = _error_text(exc)
    for row in rows:
        if row.status == "ok" and row.peak_samples:
            extra_bytes = statistics.median(row.peak_samples)
            row.extra_peak_mib = extra_bytes / MIB
            row.extra_peak_pct = 100 * extra_bytes / nbytes if nbytes else None
    del measured, impls, data
    gc.collect()
    return rows


def _runner(case: Case) -> Callable[..., list[Row]]:
    """The function that runs ``case`` (by its ``kind``)."""
    if case.kind == "threads":
        return _run_threads_case
    if case.kind == "memory":
        return _run_memory_case
    return _run_case


# --------------------------------------------------------------------------- reporting
def _fmt_shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 1 and shape[0] >= 1_000_000:
        exponent = math.floor(math.log10(shape[0]))
        mantissa = shape[0] / 10**exponent
        return f"{mantissa:g}e{exponent}"
    return "x".join(str(s) for s in shape)


def _fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.3f}"
    return f"{ms:.4f}"


def _fmt_num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _native_module() -> ModuleType | None:
    if xent_rs.BACKEND != "rust":
        return None
    try:
        return importlib.import_module("xent_rs._native")
    except ImportError:
        return None


def _machine(threads: int, native: ModuleType | None, peers: Peers) -> dict[str, Any]:
    simd: str | None = None
    simd_level = getattr(native, "simd_level", None)
    if simd_level is not None:
        try:
            simd = str(simd_level())
        except Exception:
            simd = None
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": available,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "threads": threads,
        "xent_rs": xent_rs.__version__,
        "backend": xent_rs.BACKEND,
        "simd": simd,
        "numpy": np.__version__,
        **peers.versions,
    }


class _Table:
    def __init__(self, stream: TextIO, case_width: int, impl_width: int = IMPL_WIDTH) -> None:
        self.stream = stream
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            TIMES.encode(encoding)
            self.times = TIMES
        except (UnicodeEncodeError, LookupError):
            self.times = "x"
        self.widths = (max(case_width, 4), max(impl_width, 4), 10, 8, 8)
        self.header = ("case", "impl", "median ms", "GB/s", f"{self.times}floor")

    def line(self, cells: Sequence[str]) -> None:
        cw, iw, mw, gw, fw = self.widths
        c, i, m, g, f = cells
        print(f"{c:<{cw}}  {i:<{iw}}  {m:>{mw}}  {g:>{gw}}  {f:>{fw}}".rstrip(), file=self.stream)

    def head(self) -> None:
        self.line(self.header)
        self.line(["-" * w for w in self.widths])

    def text(self, name: str, impl: str, text: str) -> None:
        """A row of free text after the case and impl columns."""
        cw, iw = self.widths[:2]
        print(f"{name:<{cw}}  {impl:<{iw}}  {text}".rstrip(), file=self.stream)

    def case(self, rows: Sequence[Row]) -> None:
        for i, r in enumerate(rows):
            name = r.case if i == 0 else ""
            if r.status != "ok":
                self.text(name, r.impl, f"{r.status}: {r.detail}")
            elif r.extra_peak_mib is not None:
                pct = "" if r.extra_peak_pct is None else f" = {r.extra_peak_pct:.1f}% of the input"
                note = f"  ({r.detail})" if r.detail else ""
                self.text(name, r.impl, f"{r.extra_peak_mib:10.1f} MiB extra peak{pct}{note}")
            else:
                self.line(
                    (name, r.impl, _fmt_ms(r.median_s), _fmt_num(r.gb_per_s), _fmt_num(r.x_floor))
                )
            if r.speedup is not None:
                self.text("", "", f"speedup vs 1 thread: {self.times}{r.speedup:.2f}")
            if r.warning:
                print(f"{'':<{self.widths[0]}}  !! WARNING: {r.warning}", file=self.stream)
        self.stream.flush()


def _notes(
    quick: bool,
    repeat: int,
    threads: int,
    read_floor: bool,
    peers: Peers,
    kinds: frozenset[str] = frozenset(),
) -> list[str]:
    """The notes under the table; ``kinds``: the kinds of the cases run."""
    notes = [
        f"median of {repeat} repetitions; within each repetition the implementations run "
        "round-robin (rotating start); small calls are looped to >= "
        f"{MIN_SAMPLE_S[quick] * 1e3:g} ms per sample",
        f"GB/s = bytes of the inputs read / median time; {TIMES}floor = median time / floor time",
        "floor, reductions: "
        + (
            f"xent_rs._native.read_floor, every input byte read once with {threads} thread(s)"
            if read_floor
            else "np.add.reduce over a uint64 view of the inputs, SINGLE-threaded "
            f"(xent_rs._native.read_floor unavailable), so {TIMES}floor < 1 is possible"
        ),
        "floor, log_softmax / cross_entropy_with_grad: x.copy(); out=: np.copyto(out, x); "
        "call overhead: np.negative on the 8x10 input; the plain row calls cross_entropy(x, t), "
        'the keywords row passes weight=None, label_smoothing=0.0, reduction="mean"',
        "numpy = xent_rs.reference (pure NumPy in float64, single-threaded); scipy = "
        "scipy.special log_softmax/logsumexp/log_expit composites (single-threaded)",
    ]
    if peers.torch is not None:
        notes.append(
            f"torch: torch.nn.functional on torch.from_numpy views, "
            f"torch.set_num_threads({threads})"
        )
    if peers.jax is not None:
        notes.append(
            "jax: jitted, inputs put on the device once outside the timing, "
            "block_until_ready; XLA picks its own thread count (x64 enabled)"
        )
    if not quick:
        notes.append(
            f"numpy is skipped where one call is predicted to take > "
            f"{SLOW_REFERENCE_S:g} s (checked on a slice of the rows instead)"
        )
    if "threads" in kinds:
        notes.append(
            f"threads: xent_rs alone at 1 and at {threads} thread(s) (xent_rs.set_num_threads, "
            "switched untimed with a warm-up call, restored afterwards), round-robin with the "
            f"read floor at {threads}; speedup = median 1-thread time / median time; the "
            "results must be bitwise equal"
        )
    if "memory" in kinds:
        notes.append(
            "memory: extra peak RSS of one call = VmHWM after it - VmRSS before it "
            f"(Linux {PROC_STATUS}; VmHWM reset by writing 5 to {CLEAR_REFS} after gc and "
            f"malloc_trim), median of {repeat} calls after a warm-up call, in MiB and % of the "
            "input's bytes; torch: torch.nn.functional.cross_entropy on torch.from_numpy(x)"
        )
    if xent_rs.BACKEND != "rust":
        notes.append(
            "backend is 'python': xent_rs runs the NumPy reference, so these "
            "timings say nothing about the Rust kernels"
        )
    return notes


def _plot(rows: Sequence[Row], path: str, title: str) -> bool:
    """Write the bar chart of the peers' xfloor to ``path``; ``False`` (no file) if none."""
    # the threads case's rows ("1 thread", ...) and the memory case's have no peer's xfloor
    plotted = [r for r in rows if r.impl in PEER_ORDER and r.x_floor]
    if not plotted:
        return False
    figure_class = importlib.import_module("matplotlib.figure").Figure
    cases = list(dict.fromkeys(r.case for r in plotted))
    impls = [i for i in PEER_ORDER if any(r.impl == i for r in plotted)]
    value = {(r.case, r.impl): r.x_floor for r in plotted}
    height = 0.8 / max(1, len(impls))
    fig = figure_class(figsize=(10, 1.0 + 0.13 * len(cases) * max(2, len(impls))))
    ax = fig.add_subplot()
    for j, impl in enumerate(impls):
        ys = [i - 0.4 + (j + 0.5) * height for i in range(len(cases))]
        xs = [value.get((c, impl), math.nan) for c in cases]
        ax.barh(ys, xs, height=height, label=impl)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(cases)), cases, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time / floor (log scale; lower is better, 1 = floor)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def combine(paths: Sequence[str], *, plot: str | None = None, stream: TextIO | None = None) -> int:
    """Print the median ``xfloor`` of each case and implementation over several ``--json`` runs.

    Each line: the case, the implementation, the median over the runs that timed it, then every
    run's value in the order given (``-`` where a run did not). The threads case's speedup and
    the memory case's extra peak follow. With ``plot``, the chart of the medians.
    """
    out = sys.stdout if stream is None else stream
    if len(paths) < 2:
        raise BenchError("--combine: give at least two --json outputs")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise BenchError("install matplotlib to plot (--plot)")
    runs: list[list[dict[str, Any]]] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
            rows = report["rows"]
            if not isinstance(rows, list):
                raise TypeError("rows is not a list")
        except OSError as exc:
            raise BenchError(f"--combine: cannot read {path!r}: {exc.strerror}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"--combine: {path!r} is not a bench --json output ({exc})") from exc
        runs.append(rows)

    def values(key: str, impl: str, field: str) -> list[float | None]:
        found: list[float | None] = []
        for rows in runs:
            hit = [
                r[field]
                for r in rows
                if r.get("key") == key and r.get("impl") == impl and r.get(field) is not None
            ]
            found.append(float(hit[0]) if hit else None)
        return found

    def line(label: str, impl: str, vs: list[float | None]) -> Row | None:
        got = [v for v in vs if v is not None]
        if not got:
            return None
        median = statistics.median(got)
        runs_text = ", ".join("-" if v is None else f"{v:.3g}" for v in vs)
        print(f"{label:<{width}}  {impl:<{IMPL_WIDTH}}  {median:>8.3g}  ({runs_text})", file=out)
        return Row(case=label, key="", impl=impl, x_floor=median)

    pairs = list(dict.fromkeys((r.get("key"), r.get("case"), r.get("impl")) for r in runs[0]))
    suffix = {"threads": " (speedup)", "memory": " (% of input)"}
    width = max([len(str(case)) + len(suffix.get(str(key), "")) for key, case, _ in pairs] + [4])
    print(f"{'case':<{width}}  {'impl':<{IMPL_WIDTH}}  {TIMES + 'floor':>8}  (each run)", file=out)
    medians: list[Row] = []
    for key, case, impl in pairs:
        if impl == "floor" or key in ("threads", "memory"):
            continue
        row = line(str(case), str(impl), values(str(key), str(impl), "x_floor"))
        if row is not None:
            medians.append(row)
    for key, measure in (
        ("threads", "speedup_vs_1_thread"),
        ("memory", "extra_peak_pct_of_input"),
    ):
        for k, case, impl in pairs:
            if k == key:
                line(f"{case}{suffix[key]}", str(impl), values(key, str(impl), measure))
    print(f"note: median over {len(runs)} runs: {', '.join(paths)}", file=out)
    if plot is not None:
        _plot(medians, plot, f"xent-rs bench: time / floor, median of {len(runs)} runs")
    return 0


def run(
    *,
    quick: bool = False,
    repeat: int | None = None,
    threads: int | None = None,
    only: Sequence[str] | None = None,
    as_json: bool = False,
    plot: str | None = None,
    stream: TextIO | None = None,
) -> int:
    """Run the benchmark and print the table (or JSON); returns the exit code (0)."""
    out = sys.stdout if stream is None else stream
    cases = select_cases(only)
    if repeat is not None and repeat < 1:
        raise BenchError(f"--repeat: expected a positive integer, got {repeat}")
    if threads is not None and threads < 1:
        raise BenchError(f"--threads: expected a positive integer, got {threads}")
    if plot is not None:
        if importlib.util.find_spec("matplotlib") is None:
            raise BenchError("install matplotlib to plot (--plot)")
        parent = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(parent):
            raise BenchError(f"--plot: directory {parent!r} does not exist")
    repeat = repeat or (QUICK_REPEAT if quick else FULL_REPEAT)

    previous_threads = xent_rs.get_num_threads()
    if threads is not None:
        xent_rs.set_num_threads(threads)
    used_threads = xent_rs.get_num_threads()
    peers = _load_peers(used_threads)
    torch_threads = peers.torch.get_num_threads() if peers.torch is not None else None
    native = _native_module()
    read_floor = getattr(native, "read_floor", None)
    machine = _machine(used_threads, native, peers)
    kinds = frozenset(c.kind for c in cases)
    notes = _notes(quick, repeat, used_threads, read_floor is not None, peers, kinds)
    all_rows: list[Row] = []
    started = time.perf_counter()
    try:
        table: _Table | None = None
        if not as_json:
            _print_summary(out, machine, quick, repeat)
            impl_width = IMPL_WIDTH
            if any(c.kind == "threads" for c in cases):  # "2 threads", or "N threads" skipped
                impl_width = max(impl_width, len(_threads_impl(max(2, used_threads))))
            table = _Table(out, max(len(c.title(quick)) for c in cases), impl_width)
            table.head()
        for case in cases:
            run_case = _runner(case)
            rows = run_case(case, quick=quick, repeat=repeat, peers=peers, read_floor=read_floor)
            all_rows.extend(rows)
            if table is not None:
                table.case(rows)
    finally:
        if threads is not None:
            xent_rs.set_num_threads(previous_threads)
        if torch_threads is not None:
            peers.torch.set_num_threads(torch_threads)
    elapsed = time.perf_counter() - started
    warnings = [r.warning for r in all_rows if r.warning]
    checked = [r.rel_err for r in all_rows if r.rel_err is not None and r.warning is None]
    if as_json:
        json.dump(
            {
                "machine": machine,
                "settings": {
                    "quick": quick,
                    "repeat": repeat,
                    "threads": used_threads,
                    "cases": [c.key for c in cases],
                },
                "rows": [r.to_json() for r in all_rows],
                "warnings": warnings,
                "notes": notes,
                "elapsed_s": round(elapsed, 3),
            },
            out,
            indent=2,
            allow_nan=False,
        )
        print(file=out)
    else:
        print(file=out)
        for note in notes:
            print(f"note: {note}", file=out)
        if warnings:
            print(
                f"WARNING: {len(warnings)} result(s) disagreed with xent_rs or failed "
                "(rows marked !!)",
                file=out,
            )
        elif checked:
            print(
                f"check: every peer agrees with xent_rs (largest rel. error {max(checked):.1e})",
                file=out,
            )
        print(f"total {elapsed:.1f} s", file=out)
    if plot is not None:
        mode = "quick" if quick else "full"
        written = _plot(
            all_rows,
            plot,
            f"xent_rs {xent_rs.__version__} ({xent_rs.BACKEND}) vs peers, "
            f"{mode}, {used_threads} thread(s), {machine['cpu']}",
        )
        if written:
            print(f"wrote {plot}", file=sys.stderr if as_json else out)
        else:
            print(
                f"did not write {plot}: no peer's time over a floor to plot "
                "(the threads and memory cases are in the table and --json only)",
                file=sys.stderr if as_json else out,
            )
    return 0


def _print_summary(out: TextIO, m: dict[str, Any], quick: bool, repeat: int) -> None:
    cpus = f"{m['logical_cpus']} logical CPUs"
    if m["cpus_available"] is not None and m["cpus_available"] != m["logical_cpus"]:
        cpus += f" ({m['cpus_available']} available to this process)"
    simd = f", SIMD {m['simd']}" if m["simd"] else ""
    peers = ", ".join(f"{k} {m[k]}" for k in ("scipy", "torch", "jax"))
    shapes = f"quick (leading dimension / {QUICK_DIVISOR})" if quick else "full"
    print(f"machine : {m['cpu']}, {cpus}, {m['platform']}, Python {m['python']}", file=out)
    print(
        f"xent_rs : {m['xent_rs']}, backend {m['backend']}{simd}, {m['threads']} thread(s)",
        file=out,
    )
    print(f"peers   : numpy {m['numpy']} (reference), {peers}", file=out)
    print(f"run     : {shapes} shapes, median of {repeat} repetitions", file=out)
    print(file=out)
