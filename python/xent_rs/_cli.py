"""The ``xent-rs`` command line.

``xent-rs bench [--quick] [--repeat N] [--threads T] [--only NAME ...] [--plot FILE] [--json]``
times xent_rs against its peers (see :mod:`xent_rs._bench`); ``xent-rs score LOGITS LABELS
[--axis A] [--ignore-index I] [--label-smoothing E] [--probs] [--key K] [--out LOSSES.npy]
[--json] [--chunk-rows R]`` streams saved logits and labels through the cross-entropy and prints
the mean loss, perplexity and accuracy (see :mod:`xent_rs._score`); ``xent-rs --version`` prints
the version and the backend. Errors print one line on stderr and exit with code 2.

Each subcommand is one ``_add_<name>`` function that registers its parser and sets ``handler``;
adding a subcommand is writing such a function and listing it in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import xent_rs

from . import _bench, _score

PROG = "xent-rs"


class CliError(Exception):
    """A usage error: printed as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions (main prints them in one line)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# --------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "bench",
        help="time xent_rs against NumPy, SciPy, PyTorch and JAX",
        description=(
            "Time xent_rs against its peers (the NumPy reference, SciPy, and PyTorch and JAX "
            "when importable) side by side in one process: implementations run round-robin "
            "within each repetition and the median is reported, with GB/s and the ratio to a "
            "memory-bandwidth floor. Peer results are checked against xent_rs on the way."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller shapes (leading dimension / {_bench.QUICK_DIVISOR}) and "
        f"{_bench.QUICK_REPEAT} repetitions",
    )
    p.add_argument(
        "--repeat",
        type=_positive_int,
        metavar="N",
        help=f"repetitions (default {_bench.FULL_REPEAT}, {_bench.QUICK_REPEAT} with --quick)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        metavar="T",
        help="threads for xent_rs and torch (default: xent_rs.get_num_threads())",
    )
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="run only these cases: a key (see --list) or part of a case's title",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also write a bar chart of time/floor per case (needs matplotlib)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument(
        "--combine",
        nargs="+",
        metavar="RUN.json",
        help="run nothing: print the median time/floor of each case over these --json outputs "
        "(and each run's value); --plot draws the medians",
    )
    p.set_defaults(handler=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.list:
        _bench.list_cases(sys.stdout)
        return 0
    if args.combine:
        return _bench.combine(args.combine, plot=args.plot)
    return _bench.run(
        quick=args.quick,
        repeat=args.repeat,
        threads=args.threads,
        only=args.only,
        as_json=args.json,
        plot=args.plot,
    )


# --------------------------------------------------------------------------- score
_SCORE_EXAMPLES = """\
examples:
  xent-rs score logits.npy labels.npy
  xent-rs score logits.npy labels.npy --ignore-index -100 --out losses.npy
  xent-rs score outputs.npz labels.npy --key logits --axis 1 --json
  xent-rs score probs.npy labels.npy --probs --label-smoothing 0.1

The summary gives the rows, the ignored rows, the mean loss over the scored rows in nats and in
bits, the perplexity exp(mean nats), the top-1 accuracy (argmax == label), the time and the GB/s
of LOGITS read. With --json, one JSON object on stdout; a value that is undefined (every row
ignored) or not finite is null. Exit status 2 on bad input, with one line on stderr.
"""


def _add_score(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "score",
        help="mean cross-entropy, perplexity and accuracy of saved logits against labels",
        description=(  # wrapped by hand: RawDescriptionHelpFormatter keeps the examples' layout
            "Score a model's saved outputs: the cross-entropy of LOGITS against the class\n"
            "indices in LABELS, as xent_rs.cross_entropy (PyTorch semantics) computes it. Both\n"
            "files are memory-mapped and streamed through in chunks of rows, so files larger\n"
            "than RAM work; the loss is summed in float64."
        ),
        epilog=_SCORE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "logits",
        metavar="LOGITS",
        help="float16, float32, float64 or bfloat16 (saved by np.save as '<V2'; needs ml_dtypes) "
        ".npy, or a .npz with --key",
    )
    p.add_argument(
        "labels",
        metavar="LABELS",
        help="integer class indices, .npy, of the shape of LOGITS without the class axis",
    )
    p.add_argument(
        "--key",
        metavar="K",
        help="the array of a .npz LOGITS (np.savez's keyword); an uncompressed member is "
        "memory-mapped, a compressed one (np.savez_compressed) is loaded whole",
    )
    p.add_argument("--axis", type=int, default=-1, metavar="A", help="class axis (default -1)")
    p.add_argument(
        "--ignore-index",
        type=int,
        default=-100,
        metavar="I",
        help="label of rows left out of the mean and the accuracy (default -100)",
    )
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        metavar="E",
        help="in [0, 1], as in PyTorch (default 0); with --probs: (1-E) nll + E/C "
        "sum_c -log clip(p_c)",
    )
    p.add_argument(
        "--probs",
        action="store_true",
        help="LOGITS holds probabilities: xent_rs.categorical_cross_entropy, -log clip(p, eps, "
        "1-eps)",
    )
    p.add_argument(
        "--out",
        metavar="LOSSES.npy",
        help="also write the per-row losses (float32, LABELS' shape, 0 for ignored rows); "
        "written to a temporary file and renamed, so a failed run leaves no partial file",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument(
        "--chunk-rows",
        type=_positive_int,
        metavar="R",
        help=f"rows per chunk (default: as many as fit in {_score.DEFAULT_CHUNK_BYTES >> 20} MiB "
        "of LOGITS)",
    )
    p.set_defaults(handler=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    try:
        return _score.run(
            args.logits,
            args.labels,
            key=args.key,
            axis=args.axis,
            ignore_index=args.ignore_index,
            label_smoothing=args.label_smoothing,
            probs=args.probs,
            out_path=args.out,
            as_json=args.json,
            chunk_rows=args.chunk_rows,
        )
    except _score.ScoreError as exc:
        raise CliError(str(exc)) from None


# --------------------------------------------------------------------------- parser
_COMMANDS: tuple[Callable[[argparse._SubParsersAction[Any]], None], ...] = (
    _add_bench,
    _add_score,
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="xent_rs: softmax family and cross-entropy losses over NumPy arrays.",
    )
    parser.add_argument(
        "--version",
        action="store_true",
        help="print the version and the backend (rust or python) and exit",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for add in _COMMANDS:
        add(sub)
    parser.set_defaults(handler=None)
    return parser


def _command_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xent-rs`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
        if args.version:
            print(f"xent_rs {xent_rs.__version__} (backend: {xent_rs.BACKEND})")
            return 0
        if args.handler is None:
            names = ", ".join(_command_names(parser))
            raise CliError(f"missing command (choose from: {names}; see {PROG} --help)")
        return int(args.handler(args))
    except (CliError, _bench.BenchError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `xent-rs bench | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else ""
        print(f"{PROG}: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
