"""Static types of the public API: ``mypy --strict`` over the package and tests/typing/.

One mypy run checks the package's API modules (those of the imported ``xent_rs``: the checkout
in an editable install, else the installed wheel), ``pass_api.py`` (correct uses of the whole
API, with ``assert_type``) and ``fail_api.py`` (wrong uses, each line marked ``# E: <code>``).
"""

from __future__ import annotations

import importlib.util
import re
import runpy
import shutil
from pathlib import Path

import pytest
import xent_rs as xr
from xent_rs import reference

TYPING = Path(__file__).parent / "typing"
PASS, FAIL = TYPING / "pass_api.py", TYPING / "fail_api.py"
CONFIG = Path(__file__).parents[1] / "pyproject.toml"  # the project's [tool.mypy]


def package_modules(package: Path, into: Path) -> list[Path]:
    """Every module of the imported package, copied into ``into/xent_rs`` and passed as sources:
    found through imports, errors in an installed package would be silenced, and a file inside
    site-packages passed as a source makes mypy take the whole of site-packages for the
    project's own code. ``dask.py`` needs dask to type-check."""
    has_dask = importlib.util.find_spec("dask") is not None
    copy = into / package.name
    copy.mkdir()
    for path in [*package.glob("*.py"), *package.glob("*.pyi"), package / "py.typed"]:
        if path.name != "dask.py" or has_dask:
            shutil.copy2(path, copy / path.name)
    return sorted(path for path in copy.iterdir() if path.suffix in (".py", ".pyi"))


ERROR = re.compile(r"(?P<path>.+?):(?P<line>\d+): error: .*  \[(?P<code>[a-z-]+)\]")
MARKER = re.compile(r"#\s*E:\s*(?P<codes>[a-z-]+(?:\s*,\s*[a-z-]+)*)\s*$")


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[Path, set]]:
    """``(mypy's output, {file: {(line, error code)}})``."""
    api = pytest.importorskip("mypy.api")
    package = Path(xr.__file__).parent
    args = [
        "--strict",
        "--show-absolute-path",
        "--no-error-summary",
        "--no-pretty",
        f"--cache-dir={tmp_path_factory.mktemp('mypy_cache')}",
        *([f"--config-file={CONFIG}"] if CONFIG.is_file() else []),
        *map(str, package_modules(package, tmp_path_factory.mktemp("sources"))),
        str(PASS),
        str(FAIL),
    ]
    stdout, stderr, status = api.run(args)
    assert status in (0, 1) and not stderr, f"mypy could not run:\n{stdout}{stderr}"
    errors: dict[Path, set] = {}
    for line in stdout.splitlines():
        if ": error:" not in line:
            continue  # notes
        match = ERROR.fullmatch(line)
        assert match, f"unexpected mypy output: {line}"
        path = Path(match["path"]).resolve()
        errors.setdefault(path, set()).add((int(match["line"]), match["code"]))
    return stdout, errors


def test_the_package_and_correct_uses_type_check(mypy_report):
    stdout, errors = mypy_report
    unexpected = {path for path in errors if path != FAIL.resolve()}
    assert not unexpected, "mypy --strict reports errors:\n" + "\n".join(
        line for line in stdout.splitlines() if FAIL.name not in line
    )


def test_wrong_uses_are_errors_on_exactly_the_marked_lines(mypy_report):
    stdout, errors = mypy_report
    expected = set()
    for number, line in enumerate(FAIL.read_text().splitlines(), start=1):
        if match := MARKER.search(line):
            expected |= {(number, code.strip()) for code in match["codes"].split(",")}
    assert expected, "no '# E: <code>' markers"
    found = errors.get(FAIL.resolve(), set())
    assert found == expected, (
        f"missing {sorted(expected - found)}, unexpected {sorted(found - expected)}:\n{stdout}"
    )


def test_correct_uses_run():
    pytest.importorskip("typing_extensions")  # (installed with mypy)
    runpy.run_path(str(PASS), run_name="pass_api")


def test_all_lists_the_reference_functions():
    # __all__ is a literal list for type checkers: it must follow the reference's.
    assert set(xr.__all__) == {"BACKEND", "__version__", "reference", *reference.__all__}
    assert all(callable(getattr(xr, name)) for name in reference.__all__)
