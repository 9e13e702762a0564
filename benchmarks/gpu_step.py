"""Training-step throughput: hierarchical head + masked loss against a flat head, same backbone, same run.

A full training step (forward, loss, backward, fused AdamW step) of a timm
backbone at batch 256, 224 px, bf16 autocast, channels_last, synthetic data
already on the GPU, with:

- ``flat9``: ``nn.Linear`` to 9 classes + ``F.cross_entropy`` (as
  ``../shared/tools/timm_flat_baseline.py``, whose model is
  ``timm.create_model(name, num_classes=9)``);
- ``paper``: ``timm`` backbone (``num_classes=0``) + ``ConditionalHead`` +
  ``conditional_softmax_nll`` on the leukemia paper's taxonomy
  (``validate_args=False``, the training-loop setting: no device sync);
- ``paper_validated``: the same with ``validate_args=True`` (one sync per step);
- ``flat10k`` and ``inat``: the flat head over 10,000 leaves and the
  conditional head over the iNat21-shaped tree (16,328 nodes).

All variants share one backbone (and, with ``--compile``, one compiled
backbone: the heads and losses stay eager, as in a training loop that
compiles the model), and they are timed in alternating rounds so that clock
and thermal drift hit them alike. Prints one JSON object on stdout (progress
lines go to stderr) with img/s per variant and the ratios hierarchical / flat.
When ``$OUT`` is set it also writes ``$OUT/gpu_step[_compile][_loss].json``,
after every model and not only at the end (each time whole, through a rename),
so that a run stopped part-way (``benchmarks/gpu_run.sh`` gives this stage a
timeout) keeps the models it finished; ``"complete": false`` says that the file
is such a partial one.

Usage::

    python benchmarks/gpu_step.py                      # both models, eager (under a minute on an H200)
    python benchmarks/gpu_step.py --compile            # torch.compile'd backbones
    python benchmarks/gpu_step.py --compile --compile-loss   # and compiled losses
    python benchmarks/gpu_step.py --device cpu --model test_vit --batch 8 --steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

from hiercls import Taxonomy
from hiercls.heads import ConditionalHead
from hiercls.losses import ConditionalSoftmaxLoss
from hiercls.synthetic import layered_taxonomy

PAPER_TAXONOMY = {  # Hamdi et al. (AMAI 2023): ragged, leaves at depths 1 to 4
    "root": {
        "Normal": None,
        "Reactive": None,
        "Leukemia": {"Acute": {"ALL": None, "AML": ["APL"]}, "Chronic": ["CLL", "CML"]},
    }
}


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _variants(features: int, device: torch.device, batch: int) -> dict[str, tuple[nn.Module, Callable, torch.Tensor]]:
    """name -> (head, loss_fn(logits, target), target)."""
    paper = Taxonomy.from_dict(PAPER_TAXONOMY)
    inat = layered_taxonomy()
    gen = torch.Generator().manual_seed(0)

    def leaves(tax: Taxonomy) -> torch.Tensor:
        index = torch.as_tensor(tax.leaf_index.copy())
        return index[torch.randint(0, len(index), (batch,), generator=gen)].to(device)

    def flat_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target)

    return {
        "flat9": (nn.Linear(features, 9), flat_loss, torch.randint(0, 9, (batch,), generator=gen).to(device)),
        "paper": (ConditionalHead(features, paper), ConditionalSoftmaxLoss(paper, validate_args=False), leaves(paper)),
        "paper_validated": (ConditionalHead(features, paper), ConditionalSoftmaxLoss(paper), leaves(paper)),
        "flat10k": (
            nn.Linear(features, inat.num_leaves),
            flat_loss,
            torch.randint(0, inat.num_leaves, (batch,), generator=gen).to(device),
        ),
        "inat": (ConditionalHead(features, inat), ConditionalSoftmaxLoss(inat, validate_args=False), leaves(inat)),
    }


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    started = time.perf_counter()
    backbone = timm.create_model(name, pretrained=False, num_classes=0)
    size = args.img or backbone.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    backbone = backbone.to(device).to(memory_format=torch.channels_last).train()
    images = torch.randn(args.batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    compiled = torch.compile(backbone) if args.compile else backbone
    variants = {k: v for k, v in _variants(backbone.num_features, device, args.batch).items() if k in args.variants}
    steps: dict[str, Callable[[], None]] = {}
    for key, (head, loss_fn, target) in variants.items():
        model = _Classifier(compiled, head.to(device))
        loss_fn = loss_fn.to(device) if isinstance(loss_fn, nn.Module) else loss_fn
        if args.compile_loss:  # the loss as fused kernels (validate_args=False traces as one graph)
            loss_fn = torch.compile(loss_fn)
        params = list(backbone.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")

        def step(model=model, loss_fn=loss_fn, target=target, opt=opt) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = loss_fn(model(images), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        steps[key] = step

    for step in steps.values():  # warm-up (compiles on the first call with --compile)
        for _ in range(args.warmup):
            step()
    _sync(device)
    warm_s = time.perf_counter() - started
    elapsed = dict.fromkeys(steps, 0.0)
    counts = dict.fromkeys(steps, 0)
    per_round = max(1, args.steps // args.rounds)
    peak: dict[str, float] = {}
    for _ in range(args.rounds):
        for key, step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            _sync(device)
            elapsed[key] += time.perf_counter() - start
            counts[key] += per_round
            if device.type == "cuda":
                peak[key] = max(peak.get(key, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
    out: dict = {"image_size": size, "features": backbone.num_features, "warmup_s": round(warm_s, 1), "variants": {}}
    for key in steps:
        out["variants"][key] = {
            "img_per_s": round(args.batch * counts[key] / elapsed[key], 1),
            "step_ms": round(elapsed[key] / counts[key] * 1e3, 2),
            "steps": counts[key],
        }
        if key in peak:
            out["variants"][key]["peak_gib"] = round(peak[key], 2)
    v = out["variants"]
    ratios = {}
    for num, den in [("paper", "flat9"), ("paper_validated", "flat9"), ("inat", "flat10k"), ("inat", "flat9")]:
        if num in v and den in v:
            ratios[f"{num}/{den}"] = round(v[num]["img_per_s"] / v[den]["img_per_s"], 4)
    out["ratio_img_per_s"] = ratios
    out["wall_s"] = round(time.perf_counter() - started, 1)
    del steps, compiled, backbone
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _write(report: dict, path: str | None) -> str:
    """``report`` as indented JSON, written whole to ``path`` (if any) through a rename, so that a reader
    (or a job killed mid-write) never sees half a file."""
    text = json.dumps(report, indent=1)
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
    return text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["vit_small_patch16_224", "convnext_tiny"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--img", type=int, default=0, help="image size (0: the model's default)")
    # 2 rounds of 10 steps once gave a compiled ViT-S 0.96 where 6 rounds of 8 gave 0.998: drift needs rounds
    parser.add_argument("--steps", type=int, default=40, help="timed steps per variant")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds the timed steps are split into")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--compile-loss", action="store_true", help="torch.compile the loss functions too")
    parser.add_argument(
        "--variants", nargs="+", default=["flat9", "paper", "paper_validated", "flat10k", "inat"], help="which to time"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    report = {
        "benchmark": "gpu_step",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "batch": args.batch,
        "autocast": "bfloat16",
        "channels_last": True,
        "compile": args.compile,
        "compile_loss": args.compile_loss,
        "models": {},
        "complete": False,  # true once every model of --model is in
    }
    path = None
    if os.environ.get("OUT"):
        suffix = ("_compile" if args.compile else "") + ("_loss" if args.compile_loss else "")
        path = os.path.join(os.environ["OUT"], f"gpu_step{suffix}.json")
    for name in args.model:
        try:
            report["models"][name] = bench_model(name, args, device)
        except Exception as err:  # record and go on with the next model
            report["models"][name] = {"error": repr(err)[:500]}
        print(name, json.dumps(report["models"][name]), file=sys.stderr, flush=True)  # progress: stdout is the JSON
        report["wall_s"] = round(time.perf_counter() - started, 1)
        _write(report, path)  # after every model: a run stopped during the next one keeps this one
    report["complete"] = True
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(_write(report, path))
    return report


if __name__ == "__main__":
    main()
