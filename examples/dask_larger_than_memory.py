"""Score logits larger than a worker's memory: xent_rs.dask on a two-process local cluster.

The logits (float32, rows x classes) are generated lazily, block by block, by dask's random
generator and never exist whole: each worker, limited to ``--memory-limit``, holds a few blocks at
a time. The blocks are chunked along the rows and the classes, and ``xent_rs.dask.cross_entropy``
merges each row's class blocks without gathering them. The mean cross-entropy of standard normal
logits and uniform labels is about ``log(classes) + 1/2`` (the logsumexp of C standard normals is
about ``log(C * E[exp(z)]) = log(C) + 1/2``, and the picked logit averages 0).

Run: ``python examples/dask_larger_than_memory.py [--rows N] [--classes C] [--memory-limit M]``.
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import dask.array as da
import numpy as np
import xent_rs as xr
import xent_rs.dask as xd
from distributed import Client, LocalCluster


def _peak_memory() -> int:
    """The largest resident memory this process has had, in bytes (Linux counts KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=800_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--rows-per-block", type=int, default=8_192)
    parser.add_argument("--classes-per-block", type=int, default=256)
    parser.add_argument("--memory-limit", default="256MiB", help="per worker")
    args = parser.parse_args()

    shape = (args.rows, args.classes)
    gib = math.prod(shape) * 4 / 2**30
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit=args.memory_limit,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        # One dask thread per worker already: the kernels need not start more.
        client.run(xr.set_num_threads, 1)
        rng = da.random.default_rng(0)
        chunks = (args.rows_per_block, args.classes_per_block)
        logits = rng.standard_normal(shape, chunks=chunks, dtype=np.float32)
        target = rng.integers(0, args.classes, args.rows, chunks=args.rows_per_block)
        loss = xd.cross_entropy(logits, target)  # lazy: a 0-d dask array
        print(
            f"logits: {shape[0]:,} x {shape[1]:,} float32 = {gib:.2f} GiB in "
            f"{logits.npartitions:,} blocks of {chunks[0]:,} x {chunks[1]:,}; "
            f"2 workers of {args.memory_limit}"
        )
        start = time.perf_counter()
        mean = loss.compute()
        elapsed = time.perf_counter() - start
        peak = max(client.run(_peak_memory).values())
        # The first rows, small enough to gather: the same values from xent_rs on NumPy arrays.
        head = slice(0, args.rows_per_block)
        head_logits, head_target = da.compute(logits[head], target[head])
        head_loss = xd.cross_entropy(logits[head], target[head]).compute()
        head_expected = xr.cross_entropy(head_logits, head_target)
    expected = math.log(args.classes) + 0.5
    print(f"mean cross-entropy: {mean:.6f} (about {expected:.3f} expected), {elapsed:.1f} s")
    print(f"peak memory of the busier worker: {peak / 2**20:.0f} MiB")
    print(f"first {args.rows_per_block:,} rows: {head_loss:.7f} (xent_rs: {head_expected:.7f})")


if __name__ == "__main__":
    main()
