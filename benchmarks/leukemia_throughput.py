"""Feeding the GPU: training img/s of the leukemia example on real packed images vs synthetic input.

    python benchmarks/leukemia_throughput.py --pack .carry/pbc128.npz --backbone vit_small_patch16_224

The same model (hierarchical method: timm backbone + LevelHead + level loss), the same step
(bf16 autocast on GPU, channels_last, AdamW, gradient clipping, cosine schedule), timed twice in
one process:

- ``synthetic``: one fixed batch already on the device (the pack's first, not augmented), reused
  every step (the input pipeline costs nothing: the ceiling);
- ``real``: an epoch over the pack's train split through
  :class:`examples.leukemia.gpu_data.GPUBatches` (uint8 images on the device, shuffled, augmented,
  normalised there), exactly as ``examples.leukemia.train`` feeds it.

Target (BENCHMARKS.md): real >= 90% of synthetic. Sizes: the pack's own (128 px) and, with
``--sizes 128,224``, upsampled on the device by GPUBatches' ``out_size``. Each measurement also
reports ``host_data_ms``: the host's wall time per step spent getting the next batch (the data path's
launch cost, plus any wait for the device it forces). ``--profile`` adds, per size and input, the
operators that took the most device and host time over a few extra steps (``torch.profiler``), to
find where a real-data step loses time, and ``data_path_only`` times the real batches with no model (what
the input costs the device per batch when nothing overlaps). ``--chunks 1,8`` also times the real
input prepared 8 batches at a time (GPUBatches' ``chunk``, train's ``--augment-chunk``), under
``chunks`` of each size, with its own ``real_over_synthetic`` against the same synthetic figure.
Prints one JSON object on stdout (and writes it to ``--out`` if given); progress lines go to stderr.
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


def _endless(batches):
    """Batches from ``batches()`` (an iterator factory), starting it again each time it runs out."""
    while True:
        empty = True
        for batch in batches():
            empty = False
            yield batch
        if empty:
            raise ValueError(
                "batches: expected each pass of the iterator factory to give a batch, got an empty pass; "
                "lower --batch-size or use a larger pack."
            )


def measure(model, batches, device: torch.device, steps: int, warmup: int, step_hook=None) -> dict[str, float]:
    """Run ``warmup`` then ``steps`` training steps drawing from ``batches`` (an iterator factory);
    ``step_hook()`` is called after every step (e.g. ``torch.profiler.profile.step``)."""
    optimizer = build_optimizer(model, 1e-4, 0.05, fused=device.type == "cuda")
    scheduler = cosine_with_warmup(optimizer, 10_000, 10)
    criterion = model.criterion
    model.train()
    it = _endless(batches)
    seen, t0, t_data = 0, 0.0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        t_next = time.perf_counter()
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
        if step_hook is not None:
            step_hook()
    _sync(device)
    dt = time.perf_counter() - t0
    return {
        "img_per_s": round(seen / dt, 1),
        "steps": steps,
        "seconds": round(dt, 3),
        "host_data_ms": round(1e3 * t_data / max(steps, 1), 3),
    }


def time_data(batches, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """The data path alone: draw ``warmup`` then ``steps`` batches from ``batches`` (an iterator factory)
    with no model, synchronising once at the end, so the wall time is the device's time for the batches
    (or the host's, where the host is slower). ``ms_per_batch`` is what a training step can lose to its
    input at most, when nothing overlaps."""
    it = _endless(batches)
    seen, t0 = 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        _, target = next(it)
        if step >= warmup:
            seen += len(target)
    _sync(device)
    dt = time.perf_counter() - t0
    return {"ms_per_batch": round(1e3 * dt / max(steps, 1), 3), "img_per_s": round(seen / dt, 1), "steps": steps}


def profile(model, batches, device: torch.device, steps: int = 6, top: int = 15) -> dict:
    """Where ``steps`` training steps spend host and device time (``torch.profiler``, after 3 unrecorded
    warm-up steps, which also build the optimizer's state). The device is synchronised at every step
    boundary (before each ``prof.step()``), so the warm-up's kernels finish before recording starts and
    the last recorded step's finish before it stops: each recorded step's device time is its own.

    Returns ``{"steps", "recorded_steps", "host_ms_per_step", "device_ms_per_step", "by_host", "by_op_device",
    "by_kernel"}``, all per step, lists highest first (``recorded_steps`` counts the profiler's step markers
    on the host, where each step has one; a GPU run shows each step's marker on the device too, which is not
    counted: ``steps`` when the warm-up stayed out); see :func:`profile_readout`.
    """
    from torch.profiler import ProfilerActivity, schedule
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    warm = 3
    with torch_profile(activities=acts, schedule=schedule(wait=0, warmup=warm, active=steps, repeat=1)) as prof:
        measure(model, batches, device, warm + steps, 0, step_hook=synced_step(prof.step, device))
    return profile_readout(prof.key_averages(), steps, top)


def synced_step(step, device: torch.device):
    """``step`` (the profiler's ``step``) preceded by a device synchronisation: the kernels a step queued
    run inside that step's window, not the next one's (without it, the warm-up's kernels ran into the
    recorded steps: a committed H200 profile read more device time per step than wall time)."""

    def hook() -> None:
        _sync(device)
        step()

    return hook


_BOUNDARY_SYNC = ("cudaDeviceSynchronize", "hipDeviceSynchronize")  # torch.cuda.synchronize, as the profiler names it


def profile_readout(events, steps: int, top: int = 15) -> dict:
    """The readout of :func:`profile` from the profiler's averaged events (``prof.key_averages()``):

    - ``by_host``: host operators by self host time, ``{"name", "calls", "self_host_us", "device_us"}``,
      ``device_us`` being the device time of the kernels the operator launched (its children's included);
    - ``by_op_device``: the same rows by ``device_us``: which operator the device time goes to;
    - ``by_kernel``: device kernels by self device time, ``{"name", "calls", "device_us"}``.

    Device time is summed over the kernels only (each kernel also shows under the operator that launched
    it, so summing both would count it twice); it is 0 on CPU. ``recorded_steps`` counts the host's
    ``ProfilerStep`` rows only (on a GPU the same steps show again as device annotations). The host's wait
    in the step-boundary synchronisations (``cudaDeviceSynchronize``, which :func:`synced_step` adds and a
    training step does not make) is kept out of the host rows and reported as ``boundary_sync_ms_per_step``.
    """
    from torch.autograd import DeviceType

    def us(value: float) -> float:
        return round(float(value or 0.0) / steps, 1)

    host, kernels, recorded, boundary_sync = [], [], 0, 0.0
    for e in events:
        if e.device_type == DeviceType.CPU and e.key in _BOUNDARY_SYNC:
            boundary_sync += us(e.self_cpu_time_total)
        elif e.device_type == DeviceType.CPU:
            if e.key.startswith("ProfilerStep"):
                recorded += e.count
            host.append(
                {
                    "name": e.key,
                    "calls": round(e.count / steps, 2),
                    "self_host_us": us(e.self_cpu_time_total),
                    "device_us": us(e.device_time_total),
                }
            )
        elif not getattr(e, "is_user_annotation", False):
            kernels.append(
                {"name": e.key, "calls": round(e.count / steps, 2), "device_us": us(e.self_device_time_total)}
            )
    return {
        "steps": steps,
        "recorded_steps": recorded,
        "host_ms_per_step": round(sum(r["self_host_us"] for r in host) / 1e3, 3),
        "device_ms_per_step": round(sum(r["device_us"] for r in kernels) / 1e3, 3),
        "boundary_sync_ms_per_step": round(boundary_sync / 1e3, 3),
        "by_host": sorted(host, key=lambda r: -r["self_host_us"])[:top],
        "by_op_device": sorted(host, key=lambda r: -r["device_us"])[:top],
        "by_kernel": sorted(kernels, key=lambda r: -r["device_us"])[:top],
    }


def real_readout(batches, model, synth: dict, device: torch.device, steps: int, warmup: int) -> dict:
    """The real input timed with the model and alone (``data_path_only``), against the synthetic figure."""
    real = measure(model, lambda: iter(batches), device, steps, warmup)
    ratio = real["img_per_s"] / synth["img_per_s"] if synth["img_per_s"] else math.nan
    return {
        "real": real,
        "data_path_only": time_data(lambda: iter(batches), device, steps, warmup),
        "real_over_synthetic": round(ratio, 4),
        "meets_90pct": bool(ratio >= 0.9),
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
    ap.add_argument(
        "--chunks",
        default="1",
        help="comma-separated batches prepared per call of the real input (GPUBatches' chunk); 1 is always "
        "timed, and the others are added under 'chunks'",
    )
    args = ap.parse_args(argv)
    try:
        chunks = sorted({int(c) for c in args.chunks.split(",") if c.strip()} | {1})
    except ValueError:
        ap.error(f"--chunks: expected whole numbers >= 1 separated by commas, got {args.chunks!r}; e.g. 1,8")
    if chunks[0] < 1:
        ap.error(f"--chunks: expected whole numbers >= 1 separated by commas, got {args.chunks!r}; e.g. 1,8")
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

        def real_input(chunk: int = 1, augment: bool = True, seed: int = 0, size: int = size) -> GPUBatches:
            return GPUBatches(
                images,
                targets,
                args.batch_size,
                shuffle=True,
                drop_last=True,
                augment=augment,
                seed=seed,
                out_size=None if size == pk.size else size,
                chunk=chunk,
            )

        real = real_input()
        fixed = next(iter(real_input(augment=False, seed=1)))  # the synthetic input: one batch, reused every step
        steps = min(args.steps, max(1, len(real) - 1)) if len(real) > args.warmup else args.steps
        repeated = [fixed] * (args.warmup + steps + 1)
        synth = measure(model, lambda batches=repeated: iter(batches), device, steps, args.warmup)
        timing = (model, synth, device, steps, args.warmup)
        out["results"][str(size)] = {"synthetic": synth, **real_readout(real, *timing)}
        for chunk in chunks[1:]:
            out["results"][str(size)].setdefault("chunks", {})[str(chunk)] = real_readout(real_input(chunk), *timing)
        print(size, json.dumps(out["results"][str(size)]), file=sys.stderr, flush=True)  # progress: stdout is the JSON
        if args.profile:
            out["results"][str(size)]["profile"] = {
                "synthetic": profile(model, lambda batches=repeated: iter(batches), device),
                "real": profile(model, lambda batches=real: iter(batches), device),
            }
        if args.out:  # after every size: a job stopped during the next one keeps this one
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps(out, indent=1))  # --out was written after each size
    return out


if __name__ == "__main__":
    main()
