"""The docstring examples: every public function's, run against ``xent_rs`` (whichever backend)
and against ``xent_rs.reference``, and the package's and the reference module's.

The function docstrings are the reference's (the Rust-backed functions share them); their
examples use ``np`` and ``xr``, bound here to NumPy and to the module under test.
"""

from __future__ import annotations

import doctest
import io
import sys
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import xent_rs as xr
from xent_rs import reference

pytestmark = pytest.mark.skipif(sys.flags.optimize >= 2, reason="docstrings stripped (-OO)")

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE  # (explicit directives work too)


def run_examples(doc: str | None, name: str, globs: dict[str, Any]) -> int:
    """Run ``doc``'s examples; fail with doctest's report. Returns the number of examples."""
    assert doc, f"{name} has no docstring"
    test = doctest.DocTestParser().get_doctest(doc, dict(globs), name, None, 0)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=report.write)
    assert not result.failed, f"{result.failed} of {result.attempted} failed:\n{report.getvalue()}"
    return result.attempted


@pytest.mark.parametrize("module", [xr, reference], ids=["xent_rs", "reference"])
@pytest.mark.parametrize("name", reference.__all__)
def test_function_examples(module: ModuleType, name: str):
    qualname, doc = f"{module.__name__}.{name}", getattr(module, name).__doc__
    assert run_examples(doc, qualname, {"np": np, "xr": module}), f"{qualname} has no example"


@pytest.mark.parametrize("module", [xr, reference], ids=["xent_rs", "reference"])
def test_module_examples(module: ModuleType):
    assert run_examples(module.__doc__, module.__name__, {}), f"{module.__name__} has no example"


def test_dask_examples():
    """``xent_rs.dask``'s module and function docstrings (dask's synchronous scheduler)."""
    pytest.importorskip("dask.array")
    from xent_rs import dask as xd

    docs = [(xd.__name__, xd.__doc__)]
    docs += [(f"{xd.__name__}.{name}", getattr(xd, name).__doc__) for name in xd.__all__]
    for name, doc in docs:
        assert run_examples(doc, name, {}), f"{name} has no example"
