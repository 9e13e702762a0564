"""Metric speed on the iNat21-shaped tree: hiercls vs HiClass 5.0.8, side by side, values checked equal.

Targets (docs/BENCHMARKS): hierarchical P/R/F1 + mistake severity for 1,000,000 predictions in
<= 0.3 s on 2 CPU cores, and >= 200x faster than ``hiclass.metrics.f1`` (micro) on the same inputs
with equal values.

The hiercls functions are timed first (medians over ``--repeats``). Then, on the pairs given to HiClass,
the two sides alternate: hiercls' ``hierarchical_f1`` (median over ``--repeats``), HiClass' ``f1`` (one
timed call in a fresh process, the same per round), ..., and hiercls once more at the end, for
``--hiclass-rounds`` rounds (default 1: a HiClass call takes about 30 s on a million pairs). The speed-up
is the median of HiClass' times over the median of hiercls' times taken around them. HiClass' micro
precision and recall are computed too (untimed), and all three values are compared with hiercls' on
the same pairs (``abs_difference``).

HiClass is not a dependency: it runs in a subprocess from its own environment, found as
``--hiclass-python`` or ``$HICLASS_PYTHON`` (a python with ``hiclass==5.0.8`` installed, e.g.
``python3 -m venv /work/hiclass-venv && /work/hiclass-venv/bin/pip install hiclass==5.0.8``), or in this
interpreter. Without it, the HiClass part is skipped and the JSON says why. HiClass takes label paths:
a 2-D array with one column per level, padded with "" for shallower nodes.

    python benchmarks/metrics.py [--samples 1000000] [--hiclass-samples N] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hiercls.metrics import (
    hierarchical_f1,
    hierarchical_precision_recall_fscore,
    mistake_severity,
    summary,
)
from hiercls.synthetic import layered_taxonomy

_HICLASS_SNIPPET = r"""
import json, sys, time
import numpy as np
import hiclass
from hiclass.metrics import f1, precision, recall
y_true = np.load(sys.argv[1], allow_pickle=False)
y_pred = np.load(sys.argv[2], allow_pickle=False)
start = time.perf_counter()
value = f1(y_true, y_pred, average="micro")
seconds = time.perf_counter() - start
print(json.dumps({"version": getattr(hiclass, "__version__", "?"), "f1": float(value), "seconds": seconds,
                  "precision": float(precision(y_true, y_pred, average="micro")),
                  "recall": float(recall(y_true, y_pred, average="micro"))}))
"""


def make_inputs(tax, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Leaf truths; predictions: 60% exact, 25% another random leaf, 15% an ancestor of the truth (partial)."""
    rng = np.random.default_rng(seed)
    leaves = tax.leaf_index
    y_true = leaves[rng.integers(0, len(leaves), samples)]
    y_pred = y_true.copy()
    kind = rng.random(samples)
    other = kind >= 0.6
    y_pred[other] = leaves[rng.integers(0, len(leaves), int(other.sum()))]
    partial = kind >= 0.85
    depth = rng.integers(1, tax.max_depth, int(partial.sum()))
    y_pred[partial] = tax.ancestor_table[y_true[partial], depth]
    return y_true, y_pred


def label_paths(tax, nodes: np.ndarray) -> np.ndarray:
    """Node indices -> HiClass' 2-D label paths (root dropped, padded with "")."""
    names = np.array(list(tax.nodes) + [""])
    table = tax.ancestor_table[nodes, 1:]
    return names[np.where(table >= 0, table, len(names) - 1)]


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def find_hiclass_python(cli: str | None) -> str | None:
    for candidate in (cli, os.environ.get("HICLASS_PYTHON"), "/work/hiclass-venv/bin/python"):
        if candidate and Path(candidate).exists():
            return candidate
    try:
        import hiclass  # noqa: F401

        return sys.executable
    except ImportError:
        return None


def run_hiclass(python: str, y_true_paths: np.ndarray, y_pred_paths: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t_path, p_path = Path(tmp) / "y_true.npy", Path(tmp) / "y_pred.npy"
        np.save(t_path, y_true_paths)
        np.save(p_path, y_pred_paths)
        env = dict(os.environ)
        extra = os.environ.get("HICLASS_PATH")  # a folder holding the hiclass package, if not installed
        if extra:
            env["PYTHONPATH"] = extra + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [python, "-c", _HICLASS_SNIPPET, str(t_path), str(p_path)], capture_output=True, text=True, env=env
        )
    if proc.returncode != 0:
        return {
            "skipped": f"HiClass failed in {python}: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_with_hiclass(python: str, tax, y_true: np.ndarray, y_pred: np.ndarray, repeats: int, rounds: int) -> dict:
    """HiClass' micro P/R/F1 on these pairs against hiercls', the two timed in alternation (see the module's
    docstring). Returns HiClass' figures (``{"skipped": why}`` if it failed) with the comparison added."""
    true_paths, pred_paths = label_paths(tax, y_true), label_paths(tax, y_pred)
    ours_times, theirs_runs = [], []
    for _ in range(rounds):
        ours_times.append(median_time(lambda: hierarchical_f1(y_true, y_pred, tax), repeats)[0])
        theirs = run_hiclass(python, true_paths, pred_paths)
        if "skipped" in theirs:
            return theirs
        theirs_runs.append(theirs)
    ours_times.append(median_time(lambda: hierarchical_f1(y_true, y_pred, tax), repeats)[0])
    ours = dict(zip(("precision", "recall", "f1"), hierarchical_precision_recall_fscore(y_true, y_pred, tax)))
    theirs = dict(theirs_runs[0])
    diff = {k: abs(float(ours[k]) - float(theirs[k])) for k in ("precision", "recall", "f1")}
    ours_s, theirs_s = statistics.median(ours_times), statistics.median(r["seconds"] for r in theirs_runs)
    theirs.update(
        samples=len(y_true),
        rounds=rounds,
        seconds=round(theirs_s, 3),
        seconds_each=[round(r["seconds"], 3) for r in theirs_runs],
        hiercls_precision=float(ours["precision"]),
        hiercls_recall=float(ours["recall"]),
        hiercls_f1=float(ours["f1"]),
        hiercls_seconds=round(ours_s, 5),
        hiercls_seconds_each=[round(t, 5) for t in ours_times],
        abs_difference=diff,
        values_equal=bool(max(diff.values()) < 1e-12),
        speedup=round(theirs_s / ours_s, 1),
        target_speedup=200,
    )
    return theirs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument(
        "--hiclass-samples", type=int, default=None, help="compare with HiClass on this prefix (default: all)"
    )
    parser.add_argument("--hiclass-python", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--hiclass-rounds", type=int, default=1, help="HiClass calls, each between two timings of hiercls"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.hiclass_rounds < 1:
        parser.error(f"--repeats, --hiclass-rounds: expected >= 1, got {args.repeats}, {args.hiclass_rounds}")

    tax = layered_taxonomy()
    y_true, y_pred = make_inputs(tax, args.samples)
    seconds = {}
    seconds["summary (P/R/F1 + severity + levels, one pass)"], report = median_time(
        lambda: summary(y_true, y_pred, tax), args.repeats
    )
    seconds["hierarchical_precision_recall_fscore + mistake_severity"], (prf, severity) = median_time(
        lambda: (hierarchical_precision_recall_fscore(y_true, y_pred, tax), mistake_severity(y_true, y_pred, tax)),
        args.repeats,
    )
    seconds["hierarchical_f1"], _f1_all = median_time(lambda: hierarchical_f1(y_true, y_pred, tax), args.repeats)
    result: dict = {
        "benchmark": "metrics",
        "taxonomy": {"num_nodes": tax.num_nodes, "num_leaves": tax.num_leaves, "max_depth": tax.max_depth},
        "samples": args.samples,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "values": {
            "hierarchical_precision": prf[0],
            "hierarchical_recall": prf[1],
            "hierarchical_f1": prf[2],
            "mistake_severity": severity,
            "accuracy": report["accuracy"],
        },
        "target_seconds": 0.3,
    }
    result["meets_target"] = (
        min(
            seconds["summary (P/R/F1 + severity + levels, one pass)"],
            seconds["hierarchical_precision_recall_fscore + mistake_severity"],
        )
        <= 0.3
    )

    python = find_hiclass_python(args.hiclass_python)
    n = min(args.hiclass_samples or args.samples, args.samples)
    if python is None:
        result["hiclass"] = {"skipped": "hiclass is not importable; pass --hiclass-python or set HICLASS_PYTHON"}
    else:
        result["hiclass"] = compare_with_hiclass(python, tax, y_true[:n], y_pred[:n], args.repeats, args.hiclass_rounds)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
