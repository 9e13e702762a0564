"""An evaluation loop's cost with and without the input checks: marginals -> decode -> metric update.

Each batch of a validation pass goes through ``head.marginals``, :func:`hiercls.decoding.decode`
and a :class:`hiercls.metrics.HierarchicalMetrics` update, on the iNat21-shaped tree. Checked
(``validate_args=True``, the default) reads a min/max pair back per decode and copies each
batch's indices to the host for the metric; unchecked (``validate_args=False`` on both) reads
nothing back until ``compute()``. On a GPU the difference is the synchronisation; on a CPU
there is none to remove, so expect a ratio near 1 there.

The two variants run in alternating rounds in one process (same machine state), each round a
full pass over ``--batches`` batches of logits already on the device, ending with ``compute()``;
the report gives the median seconds per pass and the ratio unchecked / checked, and checks
that both give the same metrics.

    python benchmarks/eval_sync.py                       # CPU
    python benchmarks/eval_sync.py --device cuda         # on a GPU machine

Prints one JSON object (and writes it to ``--out`` or ``$OUT/eval_sync.json`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hiercls.decoding import decode
from hiercls.heads import create_head
from hiercls.metrics import HierarchicalMetrics
from hiercls.synthetic import layered_taxonomy


def one_pass(head, features, targets, tax, rule: str, checked: bool, device: torch.device) -> dict[str, float]:
    metric = HierarchicalMetrics(tax, validate_args=checked).to(device)
    with torch.no_grad():
        for x, y in zip(features, targets):
            probs = head.marginals(head(x))
            metric.update(decode(probs, tax, rule, validate_args=checked), y)
    return {k: float(v) for k, v in metric.compute().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--features", type=int, default=384, help="width of the (random) features, ViT-S's")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rule", default="top_down", help="the decoding rule")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    tax = layered_taxonomy()
    gen = torch.Generator().manual_seed(0)
    head = create_head("conditional", args.features, tax).to(device).eval()
    features = [torch.randn(args.batch, args.features, generator=gen).to(device) for _ in range(args.batches)]
    leaves = torch.as_tensor(tax.leaf_index.copy())
    targets = [leaves[torch.randint(0, len(leaves), (args.batch,), generator=gen)].to(device) for _ in features]

    def timed(checked: bool) -> tuple[float, dict[str, float]]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = one_pass(head, features, targets, tax, args.rule, checked, device)  # compute() syncs at the end
        return time.perf_counter() - t0, result

    timed(True), timed(False)  # warm-up: tables built and moved, kernels loaded
    seconds: dict[bool, list[float]] = {True: [], False: []}
    results: dict[bool, dict[str, float]] = {}
    for _ in range(args.rounds):
        for checked in (True, False):
            s, results[checked] = timed(checked)
            seconds[checked].append(s)
    checked_s, unchecked_s = statistics.median(seconds[True]), statistics.median(seconds[False])
    report = {
        "benchmark": "eval_sync",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "taxonomy": {"num_nodes": tax.num_nodes, "num_leaves": tax.num_leaves},
        "batch": args.batch,
        "batches_per_pass": args.batches,
        "rule": args.rule,
        "rounds": args.rounds,
        "seconds_per_pass": {"checked": round(checked_s, 5), "unchecked": round(unchecked_s, 5)},
        "ratio_unchecked_over_checked": round(unchecked_s / checked_s, 4),
        "same_metrics": all(abs(results[True][k] - results[False][k]) < 1e-12 for k in results[True]),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    text = json.dumps(report, indent=1)
    print(text)
    out = args.out or (os.path.join(os.environ["OUT"], "eval_sync.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(text + "\n")


if __name__ == "__main__":
    main()
