"""Feeding the GPU: training img/s of the leukemia example on real packed images vs synthetic input.

    python benchmarks/leukemia_throughput.py --pack .carry/pbc128.npz --backbone vit_small_patch16_224

The same model (hierarchical method: timm backbone + LevelHead + level loss), the same step
(bf16 autocast on GPU, channels_last, AdamW, gradient clipping, cosine schedule), timed twice in
one process:

- ``synthetic``: one random normalised batch already on the device, reused every step (the
  input pipeline costs nothing: the ceiling);
- ``real``: an epoch over the pack's train split through
  :class:`examples.leukemia.gpu_data.GPUBatches` (uint8 images on the device, shuffled, augmented,
  normalised there), exactly as ``examples.leukemia.train`` feeds it.

Target (BENCHMARKS.md): real >= 90% of synthetic. Sizes: the pack's own (128 px) and, with
``--sizes 128,224``, upsampled on the device by GPUBatches' ``out_size``. Each measurement also
reports ``host_data_ms``: the host's wall time per step spent getting the next batch (the data path's
launch cost, plus any wait for the device it forces). ``--profile`` adds, per size and input, the
operators that took the most device and host time over a few extra steps (``torch.profiler``), to
find where a real-data step loses time. Prints one JSON object (and writes it to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.leukemia.gpu_data import GPUBatches
from examples.leukemia.models import build_model
from examples.leukemia.pack import load_pack
from examples.leukemia.train import autocast, build_optimizer, cosine_with_warmup


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, batches, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """Run ``warmup`` then ``steps`` training steps drawing from ``batches`` (an iterator factory)."""
    optimizer = build_optimizer(model, 1e-4, 0.05, fused=device.type == "cuda")
    scheduler = cosine_with_warmup(optimizer, 10_000, 10)
    criterion = model.criterion
    model.train()
    it = batches()
    seen, t0, t_data = 0, 0.0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        t_next = time.perf_counter()
        try:
            images, target = next(it)
        except StopIteration:
            it = batches()
            images, target = next(it)
        if step >= warmup:
            t_data += time.perf_counter() - t_next
        with autocast(device, True):
            logits = model(images)
        loss = criterion(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step >= warmup:
            seen += len(target)
    _sync(device)
    dt = time.perf_counter() - t0
    return {
        "img_per_s": round(seen / dt, 1),
        "steps": steps,
        "seconds": round(dt, 3),
        "host_data_ms": round(1e3 * t_data / max(steps, 1), 3),
    }


def profile(model, batches, device: torch.device, steps: int = 6, top: int = 15) -> dict:
    """Operators with the most self time over ``steps`` training steps (after 2 warm-up steps).

    Returns ``{"steps", "host_ms_per_step", "device_ms_per_step", "by_device", "by_host"}``: the lists hold
    ``{"name", "calls", "self_host_us", "self_device_us"}`` per step, highest first (device times are 0 on CPU).
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    measure(model, batches, device, 2, 0)  # warm the iterator and the allocator, untimed
    with torch_profile(activities=acts) as prof:
        measure(model, batches, device, steps, 0)

    def device_us(e) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) or 0.0)

    rows = [
        {
            "name": e.key,
            "calls": round(e.count / steps, 2),
            "self_host_us": round(e.self_cpu_time_total / steps, 1),
            "self_device_us": round(device_us(e) / steps, 1),
        }
        for e in prof.key_averages()
    ]
    return {
        "steps": steps,
        "host_ms_per_step": round(sum(r["self_host_us"] for r in rows) / 1e3, 3),
        "device_ms_per_step": round(sum(r["self_device_us"] for r in rows) / 1e3, 3),
        "by_device": sorted(rows, key=lambda r: -r["self_device_us"])[:top],
        "by_host": sorted(rows, key=lambda r: -r["self_host_us"])[:top],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", required=True)
    ap.add_argument("--backbone", default="vit_small_patch16_224")
    ap.add_argument("--sizes", default="", help="comma-separated input sizes (default: the pack's)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40, help="timed steps (the real run covers about one epoch)")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--profile", action="store_true", help="add the top operators of real and synthetic steps")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    t0 = time.perf_counter()
    pk = load_pack(args.pack, device)
    load_s = time.perf_counter() - t0
    train_idx = pk.indices("train")
    images, targets = pk.images[train_idx], pk.targets[train_idx]
    out: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "train_images": len(train_idx),
        "pack_load_s": round(load_s, 2),
        "epoch_steps": len(train_idx) // args.batch_size,
        "results": {},
    }
    sizes = [int(s) for s in args.sizes.split(",") if s] or [pk.size]
    for size in sizes:
        torch.manual_seed(0)
        model = build_model(args.backbone, pk.taxonomy, "hierarchical", img_size=size).to(device)
        model = model.to(memory_format=torch.channels_last)
        real = GPUBatches(
            images,
            targets,
            args.batch_size,
            shuffle=True,
            drop_last=True,
            augment=True,
            seed=0,
            out_size=None if size == pk.size else size,
        )
        fixed = next(
            iter(
                GPUBatches(
                    images,
                    targets,
                    args.batch_size,
                    shuffle=True,
                    drop_last=True,
                    augment=False,
                    seed=1,
                    out_size=None if size == pk.size else size,
                )
            )
        )
        steps = min(args.steps, max(1, len(real) - 1)) if len(real) > args.warmup else args.steps
        repeated = [fixed] * (args.warmup + steps + 1)
        synth = measure(model, lambda batches=repeated: iter(batches), device, steps, args.warmup)
        realm = measure(model, lambda batches=real: iter(batches), device, steps, args.warmup)
        ratio = realm["img_per_s"] / synth["img_per_s"] if synth["img_per_s"] else math.nan
        out["results"][str(size)] = {
            "synthetic": synth,
            "real": realm,
            "real_over_synthetic": round(ratio, 4),
            "meets_90pct": bool(ratio >= 0.9),
        }
        print(size, out["results"][str(size)], flush=True)
        if args.profile:
            out["results"][str(size)]["profile"] = {
                "synthetic": profile(model, lambda batches=repeated: iter(batches), device),
                "real": profile(model, lambda batches=real: iter(batches), device),
            }
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
