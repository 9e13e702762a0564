"""Benchmark: build the iNat21-shaped taxonomy and answer 1,000,000 LCA queries.

Prints one JSON object: medians (and minima) over repeats, in seconds.

Goals on a 2-core machine (issue 2, BENCHMARKS.md): construction < 1 s;
1M LCAs < 0.2 s, both through the public, validating ``Taxonomy.lca`` and the
trusted int path ``Taxonomy._lca_unchecked`` that hot loops use.

Usage::

    python benchmarks/taxonomy.py [--pairs 1000000] [--repeats 7] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hiercls.synthetic import INAT21_WIDTHS, layered_taxonomy

GOAL_BUILD_S = 1.0
GOAL_LCA_S = 0.2


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and minimum wall time of ``fn()`` over ``repeats`` runs, after one warm-up run.

    Also the median CPU time of this process, which shared, oversubscribed
    machines disturb less than wall time.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {
        "median_s": round(statistics.median(wall), 5),
        "min_s": round(min(wall), 5),
        "cpu_median_s": round(statistics.median(cpu), 5),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000, help="number of random (a, b) node pairs")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (medians are reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    build = timed(lambda: layered_taxonomy(INAT21_WIDTHS, seed=args.seed), args.repeats)
    tax = layered_taxonomy(INAT21_WIDTHS, seed=args.seed)

    rng = np.random.default_rng(args.seed)
    a = rng.integers(0, tax.num_nodes, args.pairs, dtype=np.int64)
    b = rng.integers(0, tax.num_nodes, args.pairs, dtype=np.int64)
    leaves_a = tax.leaf_index[rng.integers(0, tax.num_leaves, args.pairs)]
    leaves_b = tax.leaf_index[rng.integers(0, tax.num_leaves, args.pairs)]
    # both paths give the same answers (the test suite checks them against a brute-force oracle)
    assert np.array_equal(tax.lca(a, b), tax._lca_unchecked(a, b))

    lca_public = timed(lambda: tax.lca(a, b), args.repeats)
    lca_trusted = timed(lambda: tax._lca_unchecked(a, b), args.repeats)
    lca_leaves = timed(lambda: tax.lca(leaves_a, leaves_b), args.repeats)
    encode = timed(lambda: tax.encode(a), args.repeats)
    a32 = a.astype(np.int32)
    encode32 = timed(lambda: tax.encode(a32), args.repeats)
    names = tax.names(a[:100_000])
    encode_names = timed(lambda: tax.encode(names), max(1, args.repeats // 2))

    held = {s: getattr(tax, s) for s in type(tax).__slots__ if isinstance(getattr(tax, s), np.ndarray)}
    result = {
        "benchmark": "taxonomy",
        "taxonomy": {
            "num_nodes": tax.num_nodes,
            "num_leaves": tax.num_leaves,
            "max_depth": tax.max_depth,
            "widths": list(INAT21_WIDTHS),
            "index_arrays_mib": round(sum(x.nbytes for x in held.values()) / 2**20, 2),
            "largest_array": max(((k, list(v.shape)) for k, v in held.items()), key=lambda kv: np.prod(kv[1]))[0],
        },
        "pairs": args.pairs,
        "repeats": args.repeats,
        "construction": build,
        "lca_public_random_nodes": lca_public,
        "lca_public_random_leaves": lca_leaves,
        "lca_trusted_int_path": lca_trusted,
        "encode_int64_1M": encode,
        "encode_int32_1M": encode32,
        "encode_names_100k": encode_names,
        "goals": {
            "construction_s": GOAL_BUILD_S,
            "lca_1M_s": GOAL_LCA_S,
            "construction_met": build["median_s"] < GOAL_BUILD_S,
            "lca_public_met": lca_public["median_s"] * 1_000_000 / args.pairs < GOAL_LCA_S,
            "lca_trusted_met": lca_trusted["median_s"] * 1_000_000 / args.pairs < GOAL_LCA_S,
        },
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
