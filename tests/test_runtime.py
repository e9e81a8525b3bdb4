"""Backends, threads, fork and GIL behaviour of the package as a whole."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import xent_rs as xr

needs_rust = pytest.mark.skipif(xr.BACKEND != "rust", reason="needs the native extension")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_environment_selects_the_python_backend():
    result = run_python("import xent_rs; print(xent_rs.BACKEND)", XENT_RS_BACKEND="python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"


def test_missing_native_module_falls_back_with_a_warning():
    code = (
        "import sys, warnings\n"
        "sys.modules['xent_rs._native'] = None  # makes the import fail\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import xent_rs\n"
        "print(xent_rs.BACKEND)\n"
        "print([str(w.message) for w in caught if w.category is RuntimeWarning])\n"
    )
    result = run_python(code, XENT_RS_BACKEND="")
    assert result.returncode == 0, result.stderr
    backend, messages = result.stdout.strip().splitlines()
    assert backend == "python"
    assert "native extension could not be imported" in messages
    assert "xent_rs._native" in messages  # says why


@pytest.mark.skipif(
    os.environ.get("XENT_RS_EXPECT_INSTALLED") != "1", reason="CI sets XENT_RS_EXPECT_INSTALLED"
)
def test_ci_tests_the_installed_wheel_not_the_source_tree():
    source_tree = os.path.join(os.path.dirname(os.path.dirname(__file__)), "python")
    package = os.path.realpath(xr.__file__)
    assert not package.startswith(os.path.realpath(source_tree) + os.sep), package
    assert xr.BACKEND == "rust"
    expected_simd = "portable" if os.environ.get("XENT_RS_SIMD") == "portable" else None
    if expected_simd is not None:
        assert xr._native.simd_level() == expected_simd


@needs_rust
def test_simd_can_be_forced_to_the_portable_path():
    code = "import xent_rs; print(xent_rs._native.simd_level())"
    assert run_python(code, XENT_RS_SIMD="portable").stdout.strip() == "portable"


@needs_rust
def test_thread_count_from_the_environment():
    code = "import xent_rs; print(xent_rs.get_num_threads())"
    assert run_python(code, XENT_RS_NUM_THREADS="3").stdout.strip() == "3"


@needs_rust
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_after_a_parallel_call_does_not_deadlock():
    x = np.random.default_rng(0).standard_normal((4000, 500), dtype=np.float32)
    t = np.zeros(4000, dtype=np.int64)
    expected = xr.cross_entropy(x, t)  # starts the pool
    code = (
        "import os, numpy as np, xent_rs as xr\n"
        "x = np.random.default_rng(0).standard_normal((4000, 500), dtype=np.float32)\n"
        "t = np.zeros(4000, dtype=np.int64)\n"
        "xr.set_num_threads(2)\n"
        "parent = xr.cross_entropy(x, t)\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, repr(float(xr.cross_entropy(x, t))).encode())\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(float(parent), os.read(r, 100).decode())\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parent, child = map(float, result.stdout.split())
    assert parent == child == pytest.approx(float(expected))


@needs_rust
def test_the_gil_is_released_during_a_long_call():
    x = np.random.default_rng(1).standard_normal((3000, 20000), dtype=np.float32)
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        before = ticks
        xr.log_softmax(x)
        during = ticks - before
    finally:
        done.set()
        counter.join()
    assert during > 10, "no other Python thread ran while the kernel computed"


@needs_rust
def test_concurrent_callers_get_serial_results():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, 300), dtype=np.float32)
    t = rng.integers(0, 300, 2000)
    expected = xr.cross_entropy(x, t, reduction="none")
    results: list[np.ndarray] = []

    def work() -> None:
        for _ in range(5):
            results.append(xr.cross_entropy(x, t, reduction="none"))

    def churn() -> None:
        for n in (1, 3, 2, 1, 2):
            xr.set_num_threads(n)

    saved = xr.get_num_threads()
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        threads.append(threading.Thread(target=churn))
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        xr.set_num_threads(saved)
    assert len(results) == 20
    for r in results:
        assert np.array_equal(r, expected)
