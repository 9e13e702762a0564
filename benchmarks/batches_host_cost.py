"""What preparing a batch costs the host, one batch per call or ``chunk`` at a time.

    python benchmarks/batches_host_cost.py                       # CPU, one thread
    python benchmarks/batches_host_cost.py --device cuda         # on a GPU (host wall time per batch)

Times :class:`examples.leukemia.gpu_data.GPUBatches` (gather, augmentation, normalisation) over a few
epochs of random ``uint8`` images for each image size, batch size and ``chunk``, and counts the
top-level operator calls per batch over one whole epoch (``torch.profiler``): the epoch's shuffle, each
preparation of ``chunk`` batches and the two views that hand each batch out, divided by the epoch's
batches (the first preparation alone, divided by ``chunk``, counted the shuffle as a preparation's and
left out the handing out: 11.25 calls per batch for ``chunk=8`` where an epoch makes 12.5). At a tiny image
size the arithmetic is negligible and what is left is the per-operator dispatch cost that ``chunk``
shares among batches; ``--max-shift 1`` (pixels) keeps the shift and reflection steps on at any size,
as they are at the training sizes. On a GPU the times are the host's (the work is queued, not
waited for, except at the end of each epoch). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.leukemia.gpu_data import GPUBatches


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SystemExit(f"--{name}: expected whole numbers >= 1 separated by commas, got {text!r}; e.g. 1,8")
    return values


def operator_calls(batches: GPUBatches) -> tuple[int, int]:
    """Top-level operator calls (views and metadata included) of one whole epoch, and its batches."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        n = sum(1 for _batch in batches)
    return sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")), n


def time_per_batch(batches: GPUBatches, device: torch.device, epochs: int) -> float:
    """Best over ``epochs`` of the host's wall time per batch, in ms (the device synced per epoch)."""
    best = float("inf")
    list(batches)  # warm-up epoch
    for _ in range(epochs):
        t0, n = time.perf_counter(), 0
        for _batch in batches:
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - t0) / max(n, 1) * 1e3)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2", help="image sides, comma-separated (e.g. 2,128; 128 is slow on CPU)")
    ap.add_argument("--batch-sizes", default="16,256")
    ap.add_argument("--chunks", default="1,2,4,8,16")
    ap.add_argument("--batches", type=int, default=64, help="batches per epoch")
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs (the best is kept)")
    ap.add_argument("--max-shift", type=int, default=1, help="shift in pixels (1 keeps the step on at 2 px)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    sizes, batch_sizes, chunks = (
        _ints(getattr(args, k), k.replace("_", "-")) for k in ("sizes", "batch_sizes", "chunks")
    )
    if args.batches < 1 or args.epochs < 1:
        raise SystemExit(f"--batches, --epochs: expected whole numbers >= 1, got {args.batches}, {args.epochs}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out: dict = {"device": str(device), "torch": torch.__version__, "threads": args.threads, "rows": []}
    gen = torch.Generator().manual_seed(0)
    for size in sizes:
        for bs in batch_sizes:
            images = torch.randint(0, 256, (bs * args.batches, 3, size, size), dtype=torch.uint8, generator=gen)
            images, targets = images.to(device), torch.zeros(len(images), dtype=torch.long, device=device)
            for chunk in chunks:
                batches = GPUBatches(
                    images,
                    targets,
                    bs,
                    shuffle=True,
                    drop_last=True,
                    augment=True,
                    seed=0,
                    chunk=chunk,
                    augment_options={"max_shift": min(args.max_shift, size - 1)},
                )
                ms = time_per_batch(batches, device, args.epochs)
                calls, n = operator_calls(batches)
                out["rows"].append(
                    {
                        "size": size,
                        "batch_size": bs,
                        "chunk": chunk,
                        "ms_per_batch": round(ms, 4),
                        "operator_calls_per_epoch": calls,
                        "batches_per_epoch": n,
                        "operator_calls_per_batch": round(calls / max(n, 1), 2),
                    }
                )
                print(json.dumps(out["rows"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
