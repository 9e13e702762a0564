"""Loss cost on the iNat21-shaped taxonomy: forward + backward on CPU, as a ratio to flat cross-entropy.

Every hiercls loss runs on a batch of logits (``(B, num_nodes)`` or
``(B, num_leaves)``), forward and backward, next to ``F.cross_entropy`` over
the 10,000 leaves: each repeat times the baseline and then the loss, so the
two share the machine's state, and the reported ratio is the median of the
per-repeat ratios. Peak extra memory is the highest memory in use during one
forward + backward above what was in use before it (inputs excluded, the
logits' gradient included): on CUDA from the allocator's peak statistics; on
Linux CPUs from the process's resident-set high-water mark (``VmHWM``, reset
before the step through ``/proc/self/clear_refs``, with glibc told to give
every block of 128 KiB or more back to the system when it is freed), so the
temporaries an operation allocates and frees inside itself count too (the
torch profiler's per-operation sums, used elsewhere, miss them).

Usage::

    python benchmarks/losses.py                     # defaults: batch 256, 30 repeats
    python benchmarks/losses.py --partial 0.25      # a quarter of the targets are inner nodes
    python benchmarks/losses.py --threads 1 --out results.json

Also times :func:`hiercls.losses.balanced_weight` (once per run, from the training labels) on
``--weight-targets`` labels, and the conditional loss trained with those weights.

Prints one JSON object (and writes it to ``--out``, or to
``$OUT/losses_<device>_t<threads>.json`` when ``$OUT`` is set).
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

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hiercls import losses as L
from hiercls import marginals as M
from hiercls.synthetic import layered_taxonomy


def _targets(tax, batch: int, partial: float, gen: torch.Generator) -> torch.Tensor:
    leaves = torch.as_tensor(tax.leaf_index.copy())
    target = leaves[torch.randint(0, len(leaves), (batch,), generator=gen)]
    if partial > 0:
        table = torch.as_tensor(tax.ancestor_table.copy())
        depth = torch.as_tensor(tax.depth_index.copy())[target]
        up = (torch.rand(batch, generator=gen) * depth.float()).long().clamp_min(1)  # an ancestor at depth >= 1
        inner = table[target, up]
        target = torch.where(torch.rand(batch, generator=gen) < partial, inner, target)
    return target


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def _vmhwm_usable() -> bool:
    """Whether the resident high-water mark can be reset and read, and glibc's mmap threshold set (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt  # noqa: B018 - present in glibc
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _status_mib("VmHWM:")
        return True
    except (OSError, AttributeError):
        return False


def _free_large_blocks_at_once() -> None:
    """Tell glibc to map blocks of 128 KiB or more and unmap them when freed (``M_MMAP_THRESHOLD``), so a
    free lowers the RSS at once. Set first thing in the memory-only child process: it slows large
    allocations down (a page fault per page), so the timing process leaves it alone."""
    import ctypes

    if ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024) != 1:
        raise OSError("mallopt(M_MMAP_THRESHOLD) refused")


_VMHWM = False  # set in the memory-only child process (see main)


def _peak_extra_mib(step: Callable[[], None], device: torch.device) -> float:
    """Highest memory in use during ``step`` above what was in use before it (MiB).

    On CUDA from the allocator's statistics; on CPU from the resident high-water mark where it can be
    reset (see the module docstring), else from the profiler's per-operation memory events (which miss
    temporaries freed inside an operation: a lower bound).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 2)
    if _VMHWM:
        import gc

        gc.collect()
        before = _status_mib("VmRSS:")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # the high-water mark starts again from the current RSS
        step()
        return round(max(0.0, _status_mib("VmHWM:") - before), 2)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # each op's own allocations minus frees ("[memory]" events: frees outside any op), in start order
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return round(peak / 2**20, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per loss (at least 1)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--partial", type=float, default=0.0, help="fraction of targets at inner nodes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--only", nargs="*", default=None, help="names of the losses to run")
    parser.add_argument("--device", default="cpu", help="cpu (the reference) or cuda")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--weight-targets", type=int, default=1_000_000, help="training labels for the balanced_weight timing"
    )
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)  # the CPU memory child
    args = parser.parse_args()
    global _VMHWM
    if args.memory_only:  # before anything is allocated: every large block then goes back at its free
        _free_large_blocks_at_once()
        _VMHWM = True
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    tax = layered_taxonomy()
    build_s = time.perf_counter() - t0
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    target = _targets(tax, args.batch, args.partial, gen).to(device)
    leaf_pos = torch.randint(0, tax.num_leaves, (args.batch,), generator=gen).to(device)
    node_logits = torch.randn(args.batch, tax.num_nodes, generator=gen).to(device).requires_grad_(True)
    leaf_logits = torch.randn(args.batch, tax.num_leaves, generator=gen).to(device).requires_grad_(True)

    baseline = (lambda: F.cross_entropy(leaf_logits, leaf_pos), leaf_logits)
    modules: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {
        "conditional_softmax_nll": (L.ConditionalSoftmaxLoss(tax), node_logits),
        "conditional_softmax_nll[validate_args=False]": (
            L.ConditionalSoftmaxLoss(tax, validate_args=False),
            node_logits,
        ),
        "conditional_softmax_nll[label_smoothing=0.1]": (
            L.ConditionalSoftmaxLoss(tax, label_smoothing=0.1),
            node_logits,
        ),
        "conditional_softmax_nll[weight=balanced_weight]": (
            L.ConditionalSoftmaxLoss(tax, weight=L.balanced_weight(tax, target.cpu())),
            node_logits,
        ),
        "flat_cross_entropy": (L.FlatCrossEntropyLoss(tax), leaf_logits),
        "level_cross_entropy": (L.LevelCrossEntropyLoss(tax), node_logits),
        "node_bce": (L.NodeBCELoss(tax), node_logits),
        "node_bce[negatives=siblings]": (L.NodeBCELoss(tax, negatives="siblings"), node_logits),
        "max_constraint_loss": (L.MaxConstraintLoss(tax), node_logits),
        "hxe_loss": (L.HXELoss(tax, alpha=0.1), leaf_logits),
        "soft_label_loss": (L.SoftLabelLoss(tax, beta=10.0), leaf_logits),
    }

    def bind(module: torch.nn.Module, logits: torch.Tensor) -> Callable[[], torch.Tensor]:
        module = module.to(device)
        return lambda: module(logits, target)

    cases = {name: (bind(module, logits), logits) for name, (module, logits) in modules.items()}
    # forward-only references: node marginals for every node (evaluation, not training)
    marginal_cases: dict[str, tuple[Callable[[], torch.Tensor], torch.Tensor]] = {
        "conditional_marginals": (lambda: M.conditional_marginals(node_logits.detach(), tax), node_logits),
        "sigmoid_marginals[coherent]": (
            lambda: M.sigmoid_marginals(node_logits.detach(), tax, coherent=True),
            node_logits,
        ),
        "flat_marginals": (lambda: M.flat_marginals(leaf_logits.detach(), tax), leaf_logits),
    }
    if args.only:
        unknown = sorted(set(args.only) - set(cases) - set(marginal_cases))
        if unknown:
            parser.error(f"--only: unknown name(s) {unknown}; expected some of {sorted({*cases, *marginal_cases})}")
        cases = {k: v for k, v in cases.items() if k in args.only}
        marginal_cases = {k: v for k, v in marginal_cases.items() if k in args.only}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(fn: Callable[[], torch.Tensor], logits: torch.Tensor, backward: bool = True) -> float:
        sync()
        start = time.perf_counter()
        out = fn()
        if backward:
            out.backward()
        sync()
        elapsed = time.perf_counter() - start
        logits.grad = None
        return elapsed

    if args.memory_only:  # one warm-up (tables built, caches filled), then one measured step per case
        peaks: dict[str, float] = {}
        for name, (fn, logits) in {"baseline": baseline, **cases, **marginal_cases}.items():
            backward = name not in marginal_cases
            run(fn, logits, backward)
            peaks[name] = _peak_extra_mib(lambda fn=fn, logits=logits, b=backward: run(fn, logits, b), device)
        print(json.dumps(peaks))
        return
    in_child = device.type == "cpu" and _vmhwm_usable()
    results: dict[str, dict] = {}
    base_times: list[float] = []
    for name, (fn, logits) in {**cases, **marginal_cases}.items():
        backward = name in cases
        for _ in range(args.warmup):
            run(*baseline)
            run(fn, logits, backward)
        ratios, times, bases = [], [], []
        for _ in range(args.repeats):
            base = run(*baseline)
            took = run(fn, logits, backward)
            bases.append(base)
            times.append(took)
            ratios.append(took / base)
        base_times.extend(bases)
        q1, q3 = (statistics.quantiles(ratios, n=4)[::2]) if len(ratios) > 1 else (ratios[0], ratios[0])
        results[name] = {
            "pass": "forward+backward" if backward else "forward",
            "median_ms": round(statistics.median(times) * 1e3, 3),
            "baseline_median_ms": round(statistics.median(bases) * 1e3, 3),
            "ratio_to_cross_entropy": round(statistics.median(ratios), 3),
            "ratio_iqr": [round(q1, 3), round(q3, 3)],
            "logits_shape": list(logits.shape),
        }

        def step(fn=fn, logits=logits, backward=backward) -> None:
            run(fn, logits, backward)

        if not in_child:
            results[name]["peak_extra_mib"] = _peak_extra_mib(step, device)
    peaks = {}
    if in_child:  # a fresh process, with glibc set to give large blocks back at once (see the docstring)
        import subprocess

        child = [sys.executable, __file__, "--memory-only", "--batch", str(args.batch), "--partial", str(args.partial)]
        child += ["--threads", str(args.threads), "--device", args.device, "--weight-targets", "1"]
        child += ["--only", *args.only] if args.only else []
        peaks = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
        for name in results:
            results[name]["peak_extra_mib"] = peaks[name]

    # balanced_weight: computed once per run from the training labels, not per step
    many = _targets(tax, args.weight_targets, args.partial, gen)
    weights: dict[str, float] = {}
    for within in ("siblings", "levels", "leaves"):
        took = []
        for _ in range(5):
            start = time.perf_counter()
            L.balanced_weight(tax, many, within=within)
            took.append(time.perf_counter() - start)
        weights[within] = round(statistics.median(took) * 1e3, 2)

    report = {
        "benchmark": "losses",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "taxonomy": {
            "shape": "iNat21 (hiercls.synthetic.layered_taxonomy())",
            "num_nodes": tax.num_nodes,
            "num_leaves": tax.num_leaves,
            "max_depth": tax.max_depth,
            "build_s": round(build_s, 2),
        },
        "batch": args.batch,
        "partial_fraction": args.partial,
        "repeats": args.repeats,
        "baseline": {
            "name": f"F.cross_entropy over {tax.num_leaves} leaves, forward+backward",
            "median_ms": round(statistics.median(base_times) * 1e3, 3),
            "peak_extra_mib": peaks["baseline"] if in_child else _peak_extra_mib(lambda: run(*baseline), device),
        },
        "losses": results,
        "balanced_weight_ms": {"targets": args.weight_targets, "median_ms_by_within": weights},
        "note": "ratio = median over repeats of (loss time / F.cross_entropy time measured just before it)",
        "memory_method": (
            "cuda allocator peak"
            if device.type == "cuda"
            else "VmHWM of a child process (large blocks unmapped at free)"
            if in_child
            else "torch profiler per-operation sums (misses temporaries freed inside an operation)"
        ),
    }
    text = json.dumps(report, indent=1)
    print(text)
    default_name = f"losses_{device.type}_t{torch.get_num_threads()}.json"
    out = args.out or (os.path.join(os.environ["OUT"], default_name) if os.environ.get("OUT") else None)
    if out:
        with open(out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
