"""Train a hierarchical blood-cell classifier: a timm backbone + a hiercls head and loss.

    python -m examples.leukemia.train                      # no data: a small SYNTHETIC set, CPU, ~30 s
    python -m examples.leukemia.train --data ../shared/data/pbc --method hierarchical --epochs 40
    python -m examples.leukemia.train --pack pbc128.npz --backbone vit_small_patch16_224 --img-size 128
    torchrun --nproc_per_node 4 -m examples.leukemia.train --pack pbc128.npz       # DDP

Reads top to bottom like timm's ``train.py``: arguments -> distributed setup -> data -> model ->
optimizer and schedule -> (resume) -> loop (train one epoch, validate with the library's
hierarchical metrics, log, checkpoint) -> final test evaluation of the best checkpoint.

Images are decoded once into uint8 tensors (from a folder/CSV/PBC/ALL layout, or from a packed
cache with ``--pack``) and kept on the training device; batches are augmented and normalised there
(:class:`examples.leukemia.gpu_data.GPUBatches`). Images labelled only at an inner node (partial
labels such as PBC's ``IG``) are trained on: every loss of the library takes any node as target.

Determinism: every epoch draws its randomness from ``(seed, epoch)``, and the RNG/optimizer/
scheduler states are saved in ``last``; so ``--resume`` continues to the same weights as an
uninterrupted run (bit for bit on CPU with the same number of torch threads: a resume with another
``--threads`` is warned about, as CPU kernels sum in another order).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from examples.leukemia import cli
from examples.leukemia.checkpoint import CheckpointError, load_checkpoint, load_weights, model_state, save_checkpoint
from examples.leukemia.cli import (
    ArgumentParser,
    HelpFormatter,
    device,
    exits_cleanly,
    number_in,
    positive_float,
    probability,
    whole_number,
)
from examples.leukemia.gpu_data import add_tta_argument
from examples.leukemia.models import (
    IMAGENET_NORMALIZE,
    METHODS,
    PerLevelClassifier,
    build_model,
    check_input_size,
    model_normalize,
)
from hiercls import Taxonomy
from hiercls.decoding import decode
from hiercls.metrics import HierarchicalMetrics

log = logging.getLogger("examples.leukemia.train")

SYNTHETIC_TAG = "SYNTHETIC"
# The main job without --data: a small, fast timm ResNet from scratch on the generated set
# (examples.leukemia.synthetic), sized to finish in about half a minute on 2 CPU cores (well under 3 when busy).
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet10t",
    "img_size": 32,
    "epochs": 12,
    "batch_size": 32,
    "lr": 2e-3,
    "warmup": 1.0,
    "synthetic_per_leaf": 100,
    "threads": 1,
}
HEADS = ("conditional", "level", "sigmoid", "flat")
LOSSES = ("conditional", "level", "bce", "flat", "hxe", "soft_label", "max_constraint")
DECODE_RULES = ("auto", "argmax_leaf", "top_down", "threshold", "crm", "hf_optimal")


# ----------------------------------------------------------------------------- arguments


def _images(count: int) -> str:
    """'1 image', '3 images'."""
    return f"{count} image" if count == 1 else f"{count} images"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m examples.leukemia.train``."""
    p = ArgumentParser(
        prog="python -m examples.leukemia.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        type=str,
        default=None,
        help="image root (folder tree, CSV manifest, PBC or ALL layout); omitted and no --pack: "
        "generate a small SYNTHETIC set and train briefly",
    )
    g.add_argument(
        "--layout",
        default="auto",
        choices=("auto", "folder", "csv", "pbc", "all4"),
        help="how labels are read from --data (see examples.leukemia.data)",
    )
    g.add_argument("--pack", type=str, default=None, help="packed uint8 cache (python -m examples.leukemia.pack)")
    g.add_argument(
        "--taxonomy",
        type=str,
        default=None,
        help="paper | pbc | all4 | path to a taxonomy JSON. Required for a folder or CSV layout (--data of class "
        "folders or a CSV manifest); a PBC or ALL download implies pbc or all4, a pack holds its own, and the "
        "SYNTHETIC set uses paper when it is left out",
    )
    g.add_argument(
        "--split-seed",
        type=int,
        default=20261126,
        help="seed of the train/val/test split of --data (a pack holds its own split)",
    )
    g.add_argument(
        "--group-duplicates",
        action="store_true",
        help="keep byte-identical images (one file's content under several names) in one split of --data, so "
        "no test image has a copy in train. Without it the split matches the peer baseline's image for "
        "image, and a warning counts the copies it leaves across splits. A pack holds its own split (pack "
        "--group-duplicates)",
    )
    g.add_argument(
        "--split-by-group",
        action="store_true",
        help="split --data by patient or slide, not image by image: all images of one group land in one split. "
        "A group is a folder on an image's path that is neither a taxonomy node nor a class folder "
        "(neutrophil/patient07/x.jpg, or patient07/neutrophil/x.jpg), or a CSV column group, patient, "
        "patient_id, slide, slide_id, subject or donor. Groups are drawn whole, so split sizes follow them. "
        "Without it, a warning counts the groups split across train and test. A pack holds its own split "
        "(pack --split-by-group)",
    )
    g.add_argument(
        "--crop",
        type=float,
        default=None,
        help="share of each image's short side kept around the centre before resizing, in (0, 1] (default 1; a "
        "pack keeps the crop it was made with)",
    )
    g.add_argument(
        "--partial-labels",
        default="use",
        choices=("use", "drop"),
        help="train on images labelled only at an inner node, or leave them out",
    )
    g.add_argument(
        "--synthetic-per-leaf",
        type=int,
        default=SYNTHETIC_DEFAULTS["synthetic_per_leaf"],
        help="images per leaf of the SYNTHETIC set",
    )
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="image decoding workers")
    g.add_argument(
        "--limit",
        type=whole_number(1, "leave --limit out to use every image"),
        default=0,
        help="use at most N images (smoke tests; default: all of them): with --data N in all, drawn before the "
        "split; with --pack N per split, drawn from the pack's own split",
    )
    g = p.add_argument_group("model")
    g.add_argument("--method", default="hierarchical", choices=METHODS, help="model family (head, loss, decoding)")
    g.add_argument("--head", default=None, choices=HEADS, help="override the method's head")
    g.add_argument("--loss", default=None, choices=LOSSES, help="override the method's loss")
    g.add_argument(
        "--backbone",
        default=None,
        help=f"any timm model name (default convnext_tiny; {SYNTHETIC_DEFAULTS['backbone']} on SYNTHETIC)",
    )
    g.add_argument(
        "--img-size",
        type=whole_number(8, "e.g. --img-size 128"),
        default=None,
        help=f"training resolution (default 128; {SYNTHETIC_DEFAULTS['img_size']} on SYNTHETIC)",
    )
    g.add_argument("--pretrained", action="store_true", help="timm pretrained weights (needs the weights hub)")
    g.add_argument("--init-checkpoint", type=str, default=None, help="local weights for the backbone(s)")
    g.add_argument(
        "--drop-path",
        type=number_in(0.0, 1.0, high_open=True, fix="e.g. 0.1"),
        default=None,
        help="stochastic depth rate of the backbone",
    )
    g.add_argument(
        "--backbone-kwargs",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="extra timm.create_model options as a JSON object, e.g. '{\"patch_size\": 8}' for a ViT at 64 px",
    )
    g.add_argument(
        "--loss-kwargs",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="extra options of the loss as a JSON object, e.g. '{\"alpha\": 0.5}' for hxe, '{\"beta\": 5}' for "
        'soft_label, \'{"negatives": "siblings"}\' for bce (hiercls.losses.create_loss says which loss takes what)',
    )
    g.add_argument(
        "--decode",
        default="auto",
        choices=DECODE_RULES,
        help="decoding rule for validation (auto: top_down for the hierarchical methods, argmax_leaf for flat)",
    )
    g.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="threshold of the 'threshold' rule (--decode threshold; default 0.5)",
    )
    add_tta_argument(g, default="none", note="of every evaluation (validation and test)")
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--epochs",
        type=whole_number(1, "train at least one epoch"),
        default=None,
        help=f"default 40 ({SYNTHETIC_DEFAULTS['epochs']} on SYNTHETIC)",
    )
    g.add_argument(
        "--batch-size",
        type=whole_number(1, "e.g. --batch-size 32"),
        default=None,
        help=f"per process (default 256; {SYNTHETIC_DEFAULTS['batch_size']} on SYNTHETIC; capped at the train images "
        "per process)",
    )
    g.add_argument(
        "--lr",
        type=positive_float("e.g. --lr 2e-3"),
        default=None,
        help=f"AdamW peak lr (default 5e-4 for ViTs, 2e-3 otherwise; {SYNTHETIC_DEFAULTS['lr']:g} on SYNTHETIC)",
    )
    g.add_argument(
        "--weight-decay",
        type=number_in(0.0, fix="0 turns it off"),
        default=0.05,
        help="AdamW weight decay (not on biases and norms)",
    )
    g.add_argument(
        "--warmup",
        type=number_in(0.0, fix="0: no warm-up"),
        default=None,
        help=f"warm-up in epochs: a linear ramp times a cosine that runs from the first step to 0 at the last, so "
        f"the lr peaks slightly below --lr (0.994 of it with 2 of 40 epochs) (default 2; "
        f"{SYNTHETIC_DEFAULTS['warmup']:g} on SYNTHETIC)",
    )
    g.add_argument(
        "--label-smoothing",
        type=number_in(0.0, 1.0, fix="0 turns it off"),
        default=0.1,
        help="label smoothing epsilon in [0, 1] of the loss (each hiercls loss says how it smooths; 0: off)",
    )
    g.add_argument(
        "--balance",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="POWER",
        help="weight the loss so that every option of each decision carries the same total weight on the "
        "training split (hiercls.losses.balanced_weight: siblings for the conditional loss, a depth's nodes for "
        "the level loss, the leaves for the flat one); POWER 1 (the value when given alone) balances fully, "
        "0.5 halfway, 0 is off",
    )
    g.add_argument(
        "--clip-grad", type=number_in(0.0, fix="0 turns it off"), default=1.0, help="max gradient norm (0: off)"
    )
    g.add_argument("--no-augment", dest="augment", action="store_false", help="no flips/rotations/shifts/colour jitter")
    g.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights with this largest decay (e.g. 0.999; 0: off), "
        "warmed up as in timm's ModelEmaV3; it is what is validated, saved as best and tested (without a "
        "validation split the best epoch is picked by the raw weights' training loss)",
    )
    g = p.add_argument_group("speed")
    g.add_argument("--device", type=device, default=None, help="cuda | cpu (default: cuda when available)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on GPU")
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last memory format for the model and its inputs",
    )
    g.add_argument(
        "--augment-chunk",
        type=int,
        default=1,
        metavar="K",
        help="prepare (augment, normalise) K training batches per call: the host cost of preparing a batch is "
        "shared among K, which helps when a small model's step is bound by kernel launches (e.g. ViT-Small at "
        "128 px on a GPU); K x batch float32 images are held at once; the same seed gives another augmentation "
        "for each K (1: the original stream)",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument(
        "--eval-batch-size",
        type=whole_number(1, "e.g. --eval-batch-size 512"),
        default=512,
        help="batch size of validation and test",
    )
    g.add_argument(
        "--threads",
        type=whole_number(1, "leave it out for torch's choice"),
        default=None,
        help="torch CPU threads (default: torch's choice; 1 on a SYNTHETIC CPU run, whose small batches gain "
        "little from more and can lose several times over on a busy machine)",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the weights' initialisation and of each epoch's batches (and of the generated SYNTHETIC "
        "images, so two SYNTHETIC seeds train on different images under the same names and split)",
    )
    g.add_argument(
        "--output",
        type=str,
        default=None,
        help="run folder (default runs/<method>-<backbone>[-SYNTHETIC], then -2, -3... when that one holds a run); "
        "a folder that holds a run is refused unless --resume or --overwrite",
    )
    g.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --output (its checkpoints, logs, splits, TensorBoard events and its eval/ folder, "
        "with all it holds: scores of the old weights) with a new one",
    )
    g.add_argument(
        "--checkpoint-every",
        type=whole_number(0, "0 writes both checkpoints at the end only"),
        default=1,
        help="write 'last' every N epochs (and at the end) and 'best' when it improves; 0: both at the end only",
    )
    g.add_argument(
        "--no-last",
        dest="save_last",
        action="store_false",
        help="do not write the 'last' checkpoint (saves time and disk; no --resume then)",
    )
    g.add_argument(
        "--stop-after",
        type=whole_number(1, "stop after at least one epoch, or leave it out"),
        default=None,
        help="stop after this many epochs, as an interruption would (then --resume continues the run); the test "
        "split is still scored with the best checkpoint so far; for tests",
    )
    g.add_argument(
        "--best-metric",
        default="leaf_accuracy",
        help="validation metric that picks the best checkpoint: "
        + ", ".join(SELECTION_METRICS)
        + " or level_accuracy/<depth>; mistake_severity and nll count lower as better "
        "(leaf_accuracy: exact match over the images labelled at a leaf; hierarchical_f1 when none is)",
    )
    g.add_argument("--no-test", dest="test", action="store_false", help="skip the final test-split evaluation")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="log to log.csv only (no tb/)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


SELECTION_METRICS = (
    "leaf_accuracy",
    "accuracy",
    "hierarchical_f1",
    "hierarchical_precision",
    "hierarchical_recall",
    "correct_rate",
    "mistake_severity",
    "nll",
)
LOWER_IS_BETTER = frozenset({"mistake_severity", "nll"})


def _check_best_metric(name: str) -> None:
    """Refuse an unknown ``--best-metric`` before any data is read (a typo must not silently select by loss).

    Raises:
        ValueError: ``name`` is neither a selection metric nor ``level_accuracy/<depth>``.
    """
    if name in SELECTION_METRICS:
        return
    head, _, depth = name.partition("/")
    if head == "level_accuracy" and depth.isdigit() and int(depth) >= 1:
        return
    raise ValueError(
        f"--best-metric: expected one of {', '.join(SELECTION_METRICS)} or level_accuracy/<depth>, got {name!r}; "
        "pick one of these (the validation columns of log.csv, without the 'val_' prefix)"
    )


def selection_score(val: dict[str, float], metric: str, train_loss: float) -> float:
    """The number the best checkpoint maximises: the validation ``metric``, negated when lower is better.

    Without a validation split (``val`` empty) it is ``-train_loss``. A NaN metric scores ``-inf`` (never best).
    """
    if not val:
        return -float(train_loss)
    value = float(val[metric])
    if math.isnan(value):
        return -math.inf
    return -value if metric in LOWER_IS_BETTER else value


def _save_best(
    output: Path, weights: nn.Module | Mapping[str, Tensor], tax: Taxonomy, config: Mapping[str, Any], best: dict
) -> int:
    """Write ``output/best`` with its own record (what :func:`resumed_best` reads); returns its epoch."""
    save_checkpoint(
        output / "best", weights, tax, config=config, metrics=best["metrics"], epoch=best["epoch"], state={"best": best}
    )
    return int(best["epoch"])


def resumed_best(
    record: dict[str, Any], best_ckpt: Any, metric: str, output: Path, *, main: bool = True
) -> dict[str, Any]:
    """The best-epoch record a ``--resume`` goes on with: ``last``'s, or ``best.json``'s when they differ.

    The weights a resumed run tests are ``best.json``'s, so its record must name their epoch. ``best`` is
    written before ``last``; a kill between the two leaves a ``best.json`` newer than ``last``'s record.
    Replaying that epoch need not score the same on a GPU, so its record is adopted, not re-derived. An
    older ``best.json`` (a kill between ``last`` and ``best`` in runs before this order) means the weights of
    ``last``'s best epoch were never written: said, and the epoch on disk is taken.

    Args:
        record: the best record ``last`` holds (``{"epoch", "value", "metric", "metrics"}``).
        best_ckpt: the loaded ``best`` checkpoint, or None when the run has none.
        metric: the run's ``--best-metric`` (scores a ``best.json`` saved without its record).
        output: the run folder (for messages).
        main: whether this process logs.
    """
    if best_ckpt is None:
        if record["epoch"] >= 0:
            if main:
                log.warning(
                    "--resume: %s names epoch %d as the best, but %s is missing, so its weights are lost; the "
                    "best epoch is picked again among the epochs still to train.",
                    output / "last.json",
                    record["epoch"] + 1,
                    output / "best.json",
                )
            return {"epoch": -1, "value": -math.inf, "metrics": {}}
        return record
    if best_ckpt.epoch is None or best_ckpt.epoch == record["epoch"]:
        return record
    saved = best_ckpt.state.get("best")
    if not isinstance(saved, dict) or saved.get("epoch") != best_ckpt.epoch:  # saved without its record
        metrics = dict(best_ckpt.metrics)
        value = selection_score(metrics, metric, math.nan) if metrics else -math.inf
        saved = {"epoch": best_ckpt.epoch, "value": value, "metric": metric, "metrics": metrics}
    if best_ckpt.epoch < record["epoch"] and main:
        log.warning(
            "--resume: %s names epoch %d as the best, but %s holds epoch %d: the run was stopped before the "
            "newer best weights were written. Epoch %d is taken as the best so far.",
            output / "last.json",
            record["epoch"] + 1,
            output / "best.json",
            best_ckpt.epoch + 1,
            best_ckpt.epoch + 1,
        )
    return saved


def resolve_best_metric(name: str, taxonomy: Taxonomy, val_targets: Tensor, *, main: bool = True) -> str:
    """Check ``--best-metric`` against the data before training starts, never after.

    ``leaf_accuracy`` falls back to ``hierarchical_f1`` (with a warning) when no validation image is
    labelled at a leaf; ``level_accuracy/<d>`` must name a depth the taxonomy has (trees only).
    """
    at_leaf = np.asarray(taxonomy.is_leaf_mask)[val_targets.cpu().numpy()]
    if name == "leaf_accuracy" and len(at_leaf) and not at_leaf.any():
        if main:
            log.warning("no validation image is labelled at a leaf: the best checkpoint is chosen by hierarchical_f1")
        return "hierarchical_f1"
    if name.startswith("level_accuracy/"):
        depth = int(name.partition("/")[2])
        max_depth = taxonomy.max_depth
        if not taxonomy.is_tree or depth > max_depth:
            raise ValueError(
                f"--best-metric: {name!r} needs a tree with a level {depth}, but the taxonomy is "
                f"{'a tree of depth ' + str(max_depth) if taxonomy.is_tree else 'a DAG (no per-level accuracy)'}; "
                "pick a depth in range or another metric"
            )
    return name


def _json_object(text: str) -> dict[str, Any]:
    """argparse type of ``--backbone-kwargs``: a JSON object with string keys."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"patch_size\": 8}}', got {text!r} ({err.msg}); quote it for the shell"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"patch_size\": 8}}', got a JSON {type(value).__name__}: {text!r}"
        )
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and fill the defaults that depend on other arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is not None and args.pack is not None:
        parser.error(
            f"--data and --pack: expected one source of images, got both (--data {args.data}, --pack {args.pack}; a "
            "pack holds its own images, so --data would be ignored); drop --data to train on the pack, or drop --pack "
            "to read the images of --data"
        )
    args.synthetic = args.data is None and args.pack is None
    syn = SYNTHETIC_DEFAULTS if args.synthetic else {}
    if args.backbone is None:
        args.backbone = syn.get("backbone", "convnext_tiny")
    if args.epochs is None:
        args.epochs = syn.get("epochs", 40)
    if args.warmup is None:
        args.warmup = syn.get("warmup", 2.0)
    if args.batch_size is None:
        args.batch_size = syn.get("batch_size", 256)
    if args.img_size is None and args.pack is None:
        args.img_size = syn.get("img_size", 128)
    if args.lr is None:
        args.lr = syn.get("lr", 5e-4 if _is_vit(args.backbone) else 2e-3)
    if args.threads is None:
        args.threads = syn.get("threads")
    if args.threshold is not None and args.decode != "threshold":
        parser.error(
            f"--threshold {args.threshold:g}: only the 'threshold' rule reads it, and --decode is {args.decode!r}; "
            "add --decode threshold, or drop --threshold"
        )
    if args.threshold is None:
        args.threshold = 0.5
    try:
        _check_best_metric(args.best_metric)
    except ValueError as err:
        parser.error(str(err))
    if not (math.isfinite(args.balance) and args.balance >= 0):
        parser.error(f"--balance: expected a power >= 0 (1: balanced, 0: off), got {args.balance!r}; try --balance 1")
    if args.augment_chunk < 1:
        parser.error(
            f"--augment-chunk: expected a whole number >= 1 (batches per call), got {args.augment_chunk}; try 8"
        )
    if not 0.0 <= args.ema < 1.0:
        parser.error(f"--ema: expected a decay in [0, 1) (0 turns it off), got {args.ema!r}; try --ema 0.999")
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in --output and --overwrite replaces it: give one of them")
    if args.output is None:
        tag = f"-{SYNTHETIC_TAG}" if args.synthetic else ""
        base = os.path.join("runs", f"{args.method}-{args.backbone}{tag}")
        args.output = base
        if args.resume:  # the one default folder with a run to continue; several: say which there are
            resumable = [f for f in _default_runs(base) if (Path(f) / "last.json").is_file()]
            if len(resumable) > 1:
                parser.error(
                    f"--resume without --output: several runs could be meant ({', '.join(resumable)}); "
                    "pass --output with the one to continue"
                )
            args.output = resumable[0] if resumable else base
        elif not args.overwrite:
            # a new run never lands on an earlier one by default: runs/x, then runs/x-2, runs/x-3...
            args.output = next(f for f in _default_folders(base) if not holds_run(Path(f)))
    problem = output_problem(args.output, args.data, "--output")
    if problem:
        parser.error(problem)
    if args.taxonomy and not args.resume:
        problem = tree_problem(args.taxonomy)
        if problem:
            parser.error(problem)
    return args


def output_problem(output: str, data: str | None, flag: str) -> str | None:
    """Why ``output`` cannot take a run's files (a file there, or a folder inside the image folder ``data``,
    whose next scan would read the run's figures as images), or None."""
    path = Path(os.path.expanduser(output))
    if path.exists() and not path.is_dir():
        return f"{flag} {output}: is a file, not a folder; give a folder for the run's files"
    if data is not None and Path(data).is_dir() and path.resolve().is_relative_to(Path(data).resolve()):
        return (
            f"{flag} {output}: lies inside --data {data}, so the next scan of the images would read the run's "
            "files (figures, evaluate's output) as images or unknown classes; write it outside the image folder"
        )
    return None


def tree_problem(spec: str) -> str | None:
    """Why the taxonomy ``--taxonomy`` names cannot train here (a DAG), or None; an unreadable one is left to
    the data step, which names what is wrong with it."""
    from examples.leukemia.data import load_taxonomy

    try:
        tax = load_taxonomy(spec)
    except Exception:
        return None
    if tax.is_tree:
        return None
    several = [n for n in tax.nodes if len(tax.parents(n)) > 1][:3]
    return (
        f"--taxonomy {spec}: is a DAG (nodes with several parents: {', '.join(map(repr, several))}). This example "
        "needs a tree: its per-level training, decoders, metrics tables, predict and explain read one path per "
        "node. Give each node one parent; the library itself trains on DAGs (hiercls.heads.SigmoidHead with "
        "node_bce, or FlatHead with flat_cross_entropy, and the set-based metrics)."
    )


def _default_folders(base: str) -> Iterator[str]:
    """The default run folders, in the order a new run takes them: ``base``, ``base-2``, ``base-3``..."""
    yield base
    yield from (f"{base}-{k}" for k in itertools.count(2))


def _default_runs(base: str) -> list[str]:
    """The default run folders that hold a run: ``base`` if it does, then ``base-2``, ``base-3``... up to
    the first that does not (a new run takes the first free one, so they follow each other)."""
    later = itertools.islice(_default_folders(base), 1, None)
    return ([base] if holds_run(Path(base)) else []) + list(itertools.takewhile(lambda f: holds_run(Path(f)), later))


#: what a run writes into its folder under fixed names (``--overwrite`` replaces these, its checkpoints'
#: files and ``eval/``, the folder the end-of-run text suggests for ``evaluate``, and nothing else)
RUN_FILES = ("best.json", "last.json", "log.csv", "summary.json", "config.json", "splits.csv", "tb", "eval")
# the content-named files, and the fixed names of runs from before them (left behind, a plain safetensors
# reader would open the old run's weights next to the new run)
_CHECKPOINT_FILE = re.compile(r"^(best|last)(\.[0-9a-f]{12})?(\.state)?\.safetensors$")


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run's checkpoint (``best.json`` or ``last.json``)."""
    return (folder / "best.json").is_file() or (folder / "last.json").is_file()


def _taxonomy_fingerprint(spec: str) -> str:
    """The fingerprint of ``--taxonomy`` (a bundled name or a JSON path).

    Raises:
        FileNotFoundError: a path that is not there, said as such (not as "other data" by ``--resume``).
    """
    from examples.leukemia.data import _resolve_taxonomy

    return _resolve_taxonomy(spec)[0].fingerprint


def data_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What picks a run's images and split, as the run's config stores it (paths made absolute)."""
    out: dict[str, Any] = {
        k: getattr(args, k, None)
        for k in (
            "data", "pack", "taxonomy", "layout", "split_seed", "limit", "group_duplicates", "split_by_group",
            "partial_labels",
        )
    }  # fmt: skip
    for key in ("pack", "data", "taxonomy"):
        # a bundled taxonomy name ("pbc") stays a name even if a folder of that name is here
        if out.get(key) and (Path(out[key]).is_file() if key == "taxonomy" else Path(out[key]).exists()):
            out[key] = str(Path(out[key]).resolve())
    if out["pack"]:  # a pack holds its own split, checked by split_identity: the flags only repeat the pack's
        del out["group_duplicates"], out["split_by_group"]
    return out


def _is_vit(backbone: str) -> bool:
    return any(k in backbone for k in ("vit", "deit", "eva", "beit", "swin"))


# --------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Dist:
    """Read RANK/WORLD_SIZE/LOCAL_RANK (torchrun) and join the process group (nccl on GPU, gloo on CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch of one process: a resumed run replays exactly the same randomness."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % 2**31


# --------------------------------------------------------------------------------- data
@dataclass
class Data:
    """Decoded images and node targets of each split, on the training device.

    Attributes:
        taxonomy: the label tree.
        images: split -> uint8 ``(N, 3, H, W)``.
        targets: split -> int64 ``(N,)`` node indices (inner nodes for partial labels).
        names: split -> image paths (relative to the data root when known).
        source: where the images came from (says SYNTHETIC for generated ones).
        synthetic: True for the generated set.
        crop: share of each image's short side kept around the centre before resizing
            (:func:`examples.leukemia.data.load_image`); new images must be read the same way.
        pack_seed: the seed a pack's split was made with (``None`` when not from a pack, or a pack that
            does not say); ``evaluate --data`` splits a pack-trained run's images with it.
        pack_group_duplicates: whether that split kept byte-identical images together (``pack
            --group-duplicates``); ``evaluate --data`` splits the same way.
        pack_split_by_group: whether that split kept each patient's or slide's images together (``pack
            --split-by-group``).
    """

    taxonomy: Taxonomy
    images: dict[str, Tensor]
    targets: dict[str, Tensor]
    names: dict[str, list[str]]
    source: str
    synthetic: bool = False
    crop: float = 1.0
    pack_seed: int | None = None
    pack_group_duplicates: bool = False
    pack_split_by_group: bool = False

    def subset(self, split: str, keep: Tensor) -> None:
        """Keep only ``keep`` (bool ``(N,)``) of one split."""
        idx = torch.nonzero(keep.cpu()).flatten()
        self.images[split] = self.images[split][idx.to(self.images[split].device)]
        self.targets[split] = self.targets[split][idx.to(self.targets[split].device)]
        self.names[split] = [self.names[split][i] for i in idx.tolist()]


def _infer_taxonomy(root: Path, layout: str) -> str:
    """The bundled taxonomy a layout implies: PBC -> ``"pbc"``, ALL -> ``"all4"``; other layouts need --taxonomy."""
    from examples.leukemia.data import detect_layout

    found = detect_layout(root) if layout == "auto" else layout
    if found in ("pbc", "all4"):
        return found
    raise ValueError(
        f"--taxonomy: required for a {found!r} layout ({root}); pass --taxonomy paper|pbc|all4 or the path of a "
        "taxonomy JSON file whose nodes name your folders/labels."
    )


def _load_chunk(paths: list[str], size: int, crop: float = 1.0) -> list[np.ndarray]:
    from examples.leukemia.data import load_image

    return [np.stack([load_image(p, size, crop) for p in paths])] if paths else []


def _decode_all(paths: list[str], size: int, workers: int, crop: float = 1.0) -> Tensor:
    from examples.leukemia.data import parallel_map

    chunks = parallel_map(_load_chunk, paths, size, crop, workers=workers, min_parallel=256)
    if not chunks:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.concatenate(chunks)).permute(0, 3, 1, 2).contiguous()


def _write_pack_manifest(path: Path, names: dict[str, list[str]], labels: dict[str, list[str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "path", "label"])
        for split_name, split_names in names.items():
            w.writerows([split_name, n, lab] for n, lab in zip(split_names, labels[split_name]))
    os.replace(tmp, path)


def _write_split_manifest(args: argparse.Namespace, output: Path) -> bool:
    """A new run writes ``splits.csv``; a resumed one keeps the run's own (checked by :func:`split_identity`)."""
    return not (getattr(args, "resume", False) and (output / "splits.csv").is_file())


def split_identity(data: Data) -> str:
    """A short hash of which image lies in which split, with its target (paths relative to the folder all
    the images share, so a symlinked or moved data folder keeps the id).

    Stored in the run's config: ``--resume`` refuses data that splits differently (a re-made pack or a
    changed data folder behind the same path), whose test split could hold images the run trained on.
    """
    return names_identity(
        {s: (data.names.get(s, []), data.targets[s].tolist()) for s in ("train", "val", "test") if s in data.targets}
    )


def names_identity(splits: Mapping[str, tuple[Sequence[str], Sequence[int]]]) -> str:
    """A short hash of image names with their targets, per split (``{split: (names, targets)}``).

    Absolute names count relative to the folder they all share, so the same images reached through a
    symlink, or a SYNTHETIC run folder moved, keep their id; their order does not count.

    Examples:
        >>> a = names_identity({"test": (["/d/x/1.png", "/d/y/2.png"], [3, 4])})
        >>> a == names_identity({"test": (["/mnt/d/y/2.png", "/mnt/d/x/1.png"], [4, 3])})
        True
        >>> a == names_identity({"test": (["/d/x/1.png", "/d/y/2.png"], [3, 5])})
        False
    """
    every = [n for names, _ in splits.values() for n in names]
    base = os.path.commonpath(every) if every and all(os.path.isabs(n) for n in every) else ""
    if base and len(every) == 1:
        base = os.path.dirname(base)
    h = hashlib.sha256()
    for split_name, (names, targets) in splits.items():
        rows = sorted(zip([os.path.relpath(n, base) if base else n for n in names], [int(t) for t in targets]))
        h.update(f"{split_name}:{len(rows)}\n".encode())
        h.update("".join(f"{name}\0{target}\n" for name, target in rows).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def load_data(args: argparse.Namespace, env: Dist, output: Path) -> Data:
    """Scan or unpack the images, split them (seeded, stratified), decode once, move to the device.

    Writes the split manifest ``splits.csv`` (``split,path,label``) into the run folder (rank 0).
    """
    from examples.leukemia import data as data_mod

    if args.pack:
        from examples.leukemia.pack import load_pack

        pk = load_pack(args.pack, env.device, args.workers, taxonomy=args.taxonomy)
        tax = pk.taxonomy
        if getattr(args, "group_duplicates", False) and not pk.meta.get("group_duplicates", False):
            raise ValueError(
                f"--group-duplicates: the pack {args.pack} holds its own split, made without it; drop the flag, or "
                "re-pack with python -m examples.leukemia.pack --group-duplicates."
            )
        if getattr(args, "split_by_group", False) and not pk.meta.get("split_by_group", False):
            raise ValueError(
                f"--split-by-group: the pack {args.pack} holds its own split, made image by image; drop the flag, "
                "or re-pack with python -m examples.leukemia.pack --split-by-group."
            )
        if args.img_size is not None and args.img_size != pk.size:
            raise ValueError(
                f"--img-size: the pack {args.pack} holds {pk.size} px images, not {args.img_size}; drop --img-size or "
                f"re-pack with python -m examples.leukemia.pack --size {args.img_size}."
            )
        crop = float(pk.meta.get("crop", 1.0))
        if args.crop is not None and args.crop != crop:
            raise ValueError(
                f"--crop: the pack {args.pack} was cut with crop {crop:g}, not {args.crop:g}; drop --crop or re-pack "
                f"with python -m examples.leukemia.pack --crop {args.crop:g}."
            )
        split = np.asarray(pk.split)
        images, targets, names = {}, {}, {}
        for s in ("train", "val", "test"):
            idx = np.flatnonzero(split == s)
            t_idx = torch.from_numpy(idx).to(pk.images.device)
            images[s] = pk.images[t_idx]
            targets[s] = pk.targets.to(env.device)[t_idx.to(env.device)]
            names[s] = [str(pk.names[i]) for i in idx]
        leaks = pk.meta.get("copies_in_train") or {}  # packs made before it was recorded: not known
        if env.main and isinstance(leaks, dict) and any(leaks.values()):
            log.warning(
                "pack %s: byte-identical copies of training images (%s) are in the evaluation splits; their "
                "scores can come from memory. Pack again with --group-duplicates to keep each image's copies in "
                "one split",
                args.pack,
                ", ".join(f"{n} in {s}" for s, n in leaks.items() if n),
            )
        seed = pk.meta.get("seed")
        out = Data(
            tax,
            images,
            targets,
            names,
            source=f"pack {args.pack}",
            crop=crop,
            pack_seed=seed,
            pack_group_duplicates=bool(pk.meta.get("group_duplicates", False)),
            pack_split_by_group=bool(pk.meta.get("split_by_group", False)),
        )
        if env.main and _write_split_manifest(args, output):  # paths relative to the packed dataset's root
            labels = {s: [tax.nodes[t] for t in targets[s].tolist()] for s in names}
            _write_pack_manifest(output / "splits.csv", names, labels)
    else:
        if args.synthetic:
            from examples.leukemia.synthetic import make_synthetic

            tax_spec = args.taxonomy or "paper"
            tax = data_mod.load_taxonomy(tax_spec)
            root = output / f"{SYNTHETIC_TAG}_images"
            recipe = {
                "taxonomy": tax.fingerprint,
                "n_per_leaf": args.synthetic_per_leaf,
                "size": max(args.img_size, 64),
                "seed": args.seed,
            }
            stamp = output / f"{SYNTHETIC_TAG}_images.json"  # beside the images: scan must not see it
            # read by every process only on --resume, where nothing rewrites it (the main process writes it below)
            old = json.loads(stamp.read_text()) if (env.main or args.resume) and stamp.is_file() else None
            if args.resume and old is not None and old != recipe:  # refused before anything is remade
                changed = {k: (old.get(k), v) for k, v in recipe.items() if old.get(k) != v}
                raise ValueError(
                    f"--resume: the run's {SYNTHETIC_TAG} images in {root} were made with other settings "
                    f"({'; '.join(f'{k}: {a!r} in the run, {b!r} now' for k, (a, b) in changed.items())}). Resume "
                    "with the run's own flags (its config.json lists them), or start a new run: another --output, "
                    "or --overwrite."
                )
            if env.main and (not root.is_dir() or old != recipe):  # flags changed since the images were made
                if root.is_dir():
                    log.info(
                        "%s images in %s were made with other settings; generating them again", SYNTHETIC_TAG, root
                    )
                    shutil.rmtree(root)
                make_synthetic(root, tax, n_per_leaf=recipe["n_per_leaf"], size=recipe["size"], seed=recipe["seed"])
                stamp.write_text(json.dumps(recipe))
            _barrier(env)
            layout = "auto"
            source = f"{SYNTHETIC_TAG} images generated in {root} (not real cells)"
        else:
            root = Path(args.data)
            tax_spec = args.taxonomy or _infer_taxonomy(root, args.layout)
            tax = data_mod.load_taxonomy(tax_spec)
            layout = args.layout
            source = f"data {root}"
        crop = data_mod.check_crop(1.0 if args.crop is None else args.crop, "--crop")
        # the name or path given, not the Taxonomy: scan's messages then name it ('paper', tree.json)
        samples, _report = data_mod.scan(root, tax_spec, layout=layout, workers=args.workers, warn=env.main)
        samples = data_mod.limit_samples(samples, args.limit, args.split_seed)
        by_group = bool(getattr(args, "split_by_group", False))
        splits = data_mod.split_images(
            samples,
            _report,
            seed=args.split_seed,
            group_duplicates=bool(getattr(args, "group_duplicates", False)),
            split_by_group=by_group,
            flag="--split-by-group",
        )
        if env.main:
            _log_groups(splits, _report, by_group, source)
        leaks = data_mod.copies_in_train(splits, _report.duplicates)
        if env.main and any(leaks.values()):
            log.warning(
                "%s: byte-identical copies of training images (%s) are in the evaluation splits; their scores "
                "can come from memory. Pass --group-duplicates to keep each image's copies in one split",
                source,
                ", ".join(f"{n} in {s}" for s, n in leaks.items() if n),
            )
        if env.main and _write_split_manifest(args, output):
            data_mod.write_manifest(output / "splits.csv", splits)
        images, targets, names = {}, {}, {}
        for s in ("train", "val", "test"):
            items = splits.get(s, [])
            names[s] = [str(x.path) for x in items]
            images[s] = _decode_all(names[s], args.img_size, args.workers, crop).to(env.device)
            targets[s] = (
                torch.as_tensor(tax.encode([x.label for x in items]), dtype=torch.int64).reshape(-1).to(env.device)
            )
        out = Data(tax, images, targets, names, source=source, synthetic=args.synthetic, crop=crop)
    if args.partial_labels == "drop":
        leaf = torch.tensor(out.taxonomy.is_leaf_mask, device=out.targets["train"].device)
        out.subset("train", leaf[out.targets["train"]])
    if args.limit and args.pack:
        for s in out.images:
            keep = torch.zeros(len(out.names[s]), dtype=torch.bool)
            keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(args.split_seed))[: args.limit]] = (
                True
            )
            out.subset(s, keep)
    if len(out.targets["train"]) == 0:
        raise ValueError("data: the train split is empty; give more images (or a smaller --limit).")
    if env.main and not out.synthetic and len(out.targets["test"]):
        untested = untested_labels(out)
        if untested:
            shown = ", ".join(f"{name!r} ({n} image{'' if n == 1 else 's'})" for name, n in list(untested.items())[:8])
            log.warning(
                "%d label(s) have no test image, too few images to reach every split: %s%s. The test scores say "
                "nothing about them; add images of them, or leave them out (a folder not read, or a CSV row "
                "dropped)",
                len(untested),
                shown,
                ", ..." if len(untested) > 8 else "",
            )
    return out


def untested_labels(data: Data) -> dict[str, int]:
    """Labels with images but none in the test split (a class of 1 or 2 images, split 80/10/10), each with
    its number of images, fewest first: the test scores say nothing about them."""
    tax = data.taxonomy
    total = sum(torch.bincount(t.cpu(), minlength=tax.num_nodes) for t in data.targets.values())
    tested = torch.bincount(data.targets["test"].cpu(), minlength=tax.num_nodes)
    missing = ((total > 0) & (tested == 0)).nonzero().flatten().tolist()
    return {tax.nodes[i]: int(total[i]) for i in sorted(missing, key=lambda i: (int(total[i]), i))}


def _log_groups(splits: Mapping[str, Sequence[Any]], report: Any, by_group: bool, source: str) -> None:
    """Say how the split treated the scan's groups (patients, slides) among the images drawn: kept whole
    (with a warning when one split got far more or fewer images than its share), or split across."""
    from examples.leukemia.data import group_counts, group_split_warnings, groups_across_splits

    if not report.groups:
        return
    per_split = group_counts(splits, report.groups)
    present = {x.path for items in splits.values() for x in items}
    drawn = sum(not present.isdisjoint(paths) for paths in report.groups.values())  # with an image drawn
    if by_group:
        grouped = {p for paths in report.groups.values() for p in paths}
        loose = sum(x.path not in grouped for items in splits.values() for x in items)
        log.info(
            "%s: split by group (%s), each of %d group(s) in one split: %s%s",
            source,
            report.group_source,
            drawn,
            ", ".join(f"{s} {len(v)} images in {per_split[s]} group(s)" for s, v in splits.items()),
            f"; {loose} image(s) in no group, drawn one by one" if loose else "",
        )
        for problem in group_split_warnings(splits, report.groups):
            log.warning("%s: split by group: %s; scores on so few or so many images vary more", source, problem)
        return
    across = groups_across_splits(splits, report.groups)
    if across:
        log.warning(
            "%s: %d of the %d groups (%s: patients or slides?) have images in more than one split, so a test "
            "image's patient can be in train, and scores can be higher than on new patients. Pass "
            "--split-by-group to keep each group in one split",
            source,
            across,
            drawn,
            report.group_source,
        )


def init_leaks(init_checkpoint: str | os.PathLike[str], data: Data) -> dict[str, int]:
    """Warn when ``--init-checkpoint`` comes from a run of this example whose training images are in this
    run's val or test split: their scores can come from memory.

    It happens when a run is started again from an earlier run's weights after its data folder changed
    (the split is drawn anew: images move between splits, even in untouched classes), where ``--resume`` is
    refused. The earlier run's ``splits.csv``, next to its checkpoint, names its training images; files are
    compared by their real path. A checkpoint from elsewhere (timm weights) has no such file: nothing is said.

    Returns:
        split -> number of its images that the earlier run trained on (only splits with some); the run
        records it in its config as ``init_leaks``, and ``evaluate`` repeats it with the scores.
    """
    from examples.leukemia.data import read_manifest

    source = Path(init_checkpoint)
    folder = source if source.is_dir() else source.parent
    manifest = folder / "splits.csv"
    if not manifest.is_file():
        return {}
    try:
        trained = {os.path.realpath(x.path) for x in read_manifest(manifest).get("train", [])}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    seen = {s: [n for n in data.names.get(s, []) if os.path.realpath(n) in trained] for s in ("val", "test")}
    found = {s: len(v) for s, v in seen.items() if v}
    if found:
        first = next(v[0] for v in seen.values() if v)
        log.warning(
            "--init-checkpoint %s: %s of this run's images were training images of the run it comes from (%s), "
            "e.g. %s: their scores can come from memory. Split as that run did (the same --data, unchanged, and "
            "--split-seed), or start from weights that never saw these images",
            init_checkpoint,
            " and ".join(f"{n} in {s}" for s, n in found.items()),
            folder,
            first,
        )
    return found


def _check_same_split(output: Path, data: Data) -> None:
    """``--resume``: the data must split as the run's did, image for image (see :func:`split_identity`)."""
    last = output / "last.json"
    stored = _read_last(last).get("config", {}) if last.is_file() else {}
    if "split_id" in stored and stored["split_id"] != split_identity(data):
        sizes = {s: len(v) for s, v in data.names.items()}
        raise ValueError(
            f"--resume: the data at the run's paths now splits differently (split id {split_identity(data)}, "
            f"sizes {sizes}) from the data the run in {output} trained on (split id {stored['split_id']}, sizes "
            f"{stored.get('split_sizes')}): the pack was made again, the data folder changed, or a flag that picks "
            "the images or their split differs (--partial-labels, --group-duplicates, --split-by-group, --limit). "
            "Its test split could hold images the run trained on. Resume with the run's own data, or start a new "
            "run: another --output, or --overwrite (a new run started from this one's weights, --init-checkpoint, "
            "is told which of its images this run trained on)."
        )


def _barrier(env: Dist) -> None:
    if env.world_size > 1:
        dist.barrier()


# ------------------------------------------------------------------------- optimisation
def build_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and other 1-D parameters.

    This is timm's rule for 1-D parameters, not all of ``create_optimizer_v2``'s: a ViT's position
    embedding and class token (3-D, listed by its ``no_weight_decay()``) are decayed here, as in every
    recorded run.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """LambdaLR: a cosine from 1 at step 0 to 0 at ``total_steps``, times a linear ramp ``(step + 1) /
    warmup_steps`` over the first ``warmup_steps``.

    The cosine runs over the whole run, warm-up included, so the lr peaks a little below ``--lr`` where
    the ramp ends: at 0.994 of it with 2 warm-up epochs of 40, 0.976 with 1 of 10, 0.85 with 10 of 40.
    Every recorded result used this schedule.
    """
    total_steps, warmup_steps = max(1, total_steps), max(1, warmup_steps)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ------------------------------------------------------------------------------- loops
def autocast(device: torch.device, amp: bool):
    """bf16 autocast on GPU when ``amp``; nothing on CPU (bit-exact reproducibility)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _batches(
    images: Tensor,
    targets: Tensor,
    batch_size: int,
    *,
    train: bool,
    augment: bool,
    seed: int,
    env: Dist,
    chunk: int = 1,
    normalize: tuple[tuple[float, ...], tuple[float, ...]],
):
    from examples.leukemia.gpu_data import GPUBatches

    mean, std = normalize
    return GPUBatches(
        images,
        targets,
        batch_size,
        shuffle=train,
        drop_last=train,
        augment=augment and train,
        seed=seed,
        rank=env.rank,
        world_size=env.world_size,
        even_shards=train,
        chunk=chunk,
        mean=mean,
        std=std,
    )


def clip_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The parameters whose gradient norm ``--clip-grad`` bounds together.

    The per-level model gives one group per level (its backbone with its classifier): clipping them all
    at once would scale every level's step by the other levels' gradients, so no backbone would be
    trained by its own level alone. Every other model is one group.
    """
    if isinstance(model, PerLevelClassifier):
        return [[*bb.parameters(), *fc.parameters()] for bb, fc in zip(model.levels, model.classifiers)]
    return [list(model.parameters())]


def train_one_epoch(
    model: nn.Module,
    forward: nn.Module,
    criterion: nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    env: Dist,
    amp: bool,
    clip_grad: float,
    channels_last: bool,
    epoch: int,
    epochs: int,
    progress: bool,
    ema: Any = None,
) -> dict[str, float]:
    """One pass over the train batches; returns ``{"loss", "img_per_s", "seconds", "images"}`` (all processes).

    ``ema``: a ``timm.utils.ModelEmaV3`` updated after every step, its warm-up counted in optimiser
    steps (the scheduler's step count, so a resumed run continues the same schedule).
    """
    model.train()
    loss_sum = torch.zeros((), device=env.device, dtype=torch.float64)
    seen = 0
    bar = None
    if progress:
        from tqdm import tqdm

        # disable=None: no bar when stderr is not a terminal (a log file would fill with '\r' fragments;
        # the per-epoch log line says the same)
        bar = tqdm(
            total=len(batches), desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True, disable=None
        )
        if bar.disable:  # not a terminal: no bar, and no loss.item() every 10 steps (a device sync) for it
            bar = None
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    groups = clip_groups(model)
    t0 = time.perf_counter()
    for step, (images, target) in enumerate(batches):
        if not channels_last:
            images = images.contiguous()
        with autocast(env.device, amp):
            logits = forward(images)
        loss = criterion(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad > 0:
            for group in groups:
                torch.nn.utils.clip_grad_norm_(group, clip_grad)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model, step=scheduler.last_epoch)
        loss_sum += loss.detach() * len(target)
        seen += len(target)
        if bar is not None and (step % 10 == 0 or step == len(batches) - 1):
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen * env.world_size / max(elapsed, 1e-9):.0f}")
            bar.update(step + 1 - bar.n)
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    totals = torch.stack([loss_sum, torch.tensor(float(seen), device=env.device, dtype=torch.float64)])
    if env.world_size > 1:
        dist.all_reduce(totals)
    images_all = float(totals[1])
    return {
        "loss": float(totals[0]) / max(images_all, 1.0),
        "img_per_s": images_all / max(seconds, 1e-9),
        "seconds": seconds,
        "images": images_all,
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Tensor,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool,
    channels_last: bool,
    env: Dist | None = None,
    tta: str = "none",
) -> Tensor:
    """Node marginals ``(N, num_nodes)`` float32 of uint8 images ``(N, 3, H, W)`` (this process's shard
    ``rank::world_size`` when ``env`` has several processes), in order, on ``device``.

    ``tta``: test-time augmentation (:data:`examples.leukemia.gpu_data.TTA_MODES`): the marginals are
    averaged over the views of :func:`examples.leukemia.gpu_data.tta_views`. An average of consistent
    marginals is consistent (a parent's probability is still the sum of its children's), so any
    decoder reads it as it reads one view's.
    """
    from examples.leukemia.gpu_data import GPUBatches, check_tta, tta_mean

    check_tta(tta)

    def marginals(view: Tensor) -> Tensor:
        with autocast(device, amp):
            logits = model(view)
        return model.marginals(logits.float()).float()

    model.eval()
    rank, world = (env.rank, env.world_size) if env is not None else (0, 1)
    dummy = torch.zeros(len(images), dtype=torch.int64, device=images.device)
    out = []
    mean, std = model_normalize(model)
    for batch, _ in GPUBatches(
        images,
        dummy,
        batch_size,
        shuffle=False,
        drop_last=False,
        augment=False,
        seed=0,
        rank=rank,
        world_size=world,
        even_shards=False,
        mean=mean,
        std=std,
    ):
        batch = batch.to(device) if channels_last else batch.to(device).contiguous()
        out.append(tta_mean(marginals, batch, tta))
    if not out:
        return torch.empty(0, model.taxonomy.num_nodes, device=device)
    return torch.cat(out)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    taxonomy: Taxonomy,
    *,
    rule: str,
    threshold: float,
    env: Dist,
    batch_size: int,
    amp: bool,
    channels_last: bool,
    tta: str = "none",
) -> dict[str, float]:
    """Decode every image with ``rule`` and compute the library's hierarchical metrics (reduced across processes).

    Each process evaluates its shard ``rank::world_size`` (no padding, so the reduced sums equal one
    process's) with a :class:`hiercls.metrics.HierarchicalMetrics`, whose state torchmetrics sums
    across processes in ``compute()``.
    """
    metric = HierarchicalMetrics(taxonomy).to(env.device)
    probs = predict(
        model,
        images,
        batch_size=batch_size,
        device=env.device,
        amp=amp,
        channels_last=channels_last,
        env=env,
        tta=tta,
    )
    shard = targets[env.rank :: env.world_size].to(env.device)
    totals = torch.zeros(4, device=env.device, dtype=torch.float64)  # nll sum, n, leaf-labelled hits, leaf-labelled n
    if len(shard):
        preds = decode(probs, taxonomy, rule, threshold=threshold if rule == "threshold" else None)
        metric.update(preds, shard)
        at_leaf = torch.tensor(taxonomy.is_leaf_mask, device=env.device)[shard]
        totals[0] = -torch.log(probs.gather(1, shard[:, None]).clamp_min(1e-12)).double().sum()
        totals[1] = len(shard)
        totals[2] = ((preds == shard) & at_leaf).sum()
        totals[3] = at_leaf.sum()
    result = {k: float(v) for k, v in metric.compute().items()}
    if env.world_size > 1:
        dist.all_reduce(totals)
    result["nll"] = float(totals[0]) / max(float(totals[1]), 1.0)
    result["leaf_accuracy"] = float(totals[2] / totals[3]) if totals[3] > 0 else math.nan
    return result


def _sync_buffers(model: nn.Module, env: Dist) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers only at the start of the next forward, so after an epoch each process holds
    the statistics of its own last batches; evaluating (each on its shard) and saving (rank 0) must
    use one set, or the validation metrics do not describe the saved weights.
    """
    if env.world_size > 1:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


# ----------------------------------------------------------------------------- logging
class RunLog:
    """CSV (``log.csv``) and TensorBoard (``tb/``) logs of a run; rank 0 only.

    ``log.csv`` is rewritten whole, through a temporary file and a rename, after every epoch: a run killed
    while writing it leaves the previous version. A resumed run starts it again from the checkpoint's
    history (``history``), the epochs the resumed weights have seen, whatever the file held.
    """

    def __init__(
        self, output: Path, enabled: bool, tensorboard: bool, history: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        self.path = output / "log.csv"
        self.enabled = enabled
        self.writer = None
        self.rows: list[dict[str, Any]] = [self._format(r) for r in history]
        if not enabled:
            return
        if self.rows:
            self._rewrite()
        elif self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(output / "tb"))
            except ImportError:  # tensorboard is optional
                log.warning("tensorboard is not installed; logging to log.csv only")

    @staticmethod
    def _format(row: Mapping[str, Any]) -> dict[str, Any]:
        return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}

    def _rewrite(self) -> None:
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=fields)
                w.writeheader()
                w.writerows(self.rows)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write(self, row: dict[str, Any]) -> None:
        """Add one epoch's row to ``log.csv`` (and its numbers to TensorBoard)."""
        if not self.enabled:
            return
        self.rows.append(self._format(row))
        self._rewrite()
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    self.writer.add_scalar(
                        key.replace("/", "_").replace("val_", "val/").replace("train_", "train/"), value, row["epoch"]
                    )
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------------- main
@dataclass
class TrainResult:
    """What :func:`run` returns: the trained model (best weights loaded), its data and numbers."""

    model: nn.Module
    data: Data
    config: dict[str, Any]
    best: dict[str, Any]
    test: dict[str, float] | None
    history: list[dict[str, Any]]
    train_seconds: float
    img_per_s: float
    output: Path
    img_per_s_after_first_epoch: float | None = None


def throughput_after_first_epoch(history: Sequence[Mapping[str, Any]]) -> float | None:
    """Training img/s over every epoch but the first of each process (``None`` when none is left).

    The first epoch a process runs pays one-time start-up costs (CUDA context, cuDNN autotuning,
    the allocator's first requests): seconds on a GPU. That is noise in a whole-run img/s, and
    it lands on whichever run comes first in a process, so compare methods by this figure. Left
    out: the schedule's epoch 0 and any row marked ``first_in_process`` (the first epoch after
    ``--resume``).

    Examples:
        >>> rows = [{"epoch": e, "train_images": 100, "train_seconds": s} for e, s in enumerate([9.0, 1.0, 1.0])]
        >>> throughput_after_first_epoch(rows)  # 200 images in 2 s; the slow first epoch is left out
        100.0
        >>> throughput_after_first_epoch(rows[:1]) is None
        True
    """
    rows = [
        h for h in history if int(h.get("epoch", 0)) >= 1 and not h.get("first_in_process") and h.get("train_seconds")
    ]
    seconds = sum(float(h["train_seconds"]) for h in rows)
    return sum(float(h["train_images"]) for h in rows) / seconds if seconds > 0 else None


def run_config(args: argparse.Namespace, model: nn.Module, data: Data, env: Dist) -> dict[str, Any]:
    """The JSON config stored with every checkpoint and in ``config.json``."""
    cfg = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    cfg.update(data_identity(args))  # absolute paths: evaluate/predict find the data from any working directory
    if args.pack:  # the pack's split holds copies together or not (pack_group_duplicates); the flag only repeats it
        cfg.pop("group_duplicates", None)
        cfg.pop("split_by_group", None)
    cfg["loss_kwargs"] = dict(getattr(args, "loss_kwargs", None) or {})  # compared on --resume
    cfg["model"] = dict(model.config)
    cfg["data_source"] = data.source
    cfg["crop"] = data.crop  # predict/explain read new images the same way
    cfg["synthetic"] = data.synthetic
    cfg["world_size"] = env.world_size
    cfg["split_sizes"] = {s: len(v) for s, v in data.names.items()}
    cfg["split_id"] = split_identity(data)
    if data.pack_seed is not None:
        cfg["pack_seed"] = int(data.pack_seed)
        cfg["pack_group_duplicates"] = bool(data.pack_group_duplicates)
        cfg["pack_split_by_group"] = bool(data.pack_split_by_group)
    return cfg


def run(args: argparse.Namespace, *, data: Data | None = None, env: Dist | None = None) -> TrainResult:
    """Train with parsed ``args``; ``data`` (already loaded) lets :mod:`compare` share one copy between runs."""
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    try:
        return _run(args, data=data, env=env)
    finally:  # leave the process as it was (tests and compare call run() in-process)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.set_num_threads(threads)


def check_model_args(args: argparse.Namespace) -> None:
    """Refuse a head/loss pair that does not fit and a backbone timm does not know, before any data is read.

    Raises:
        ValueError: as :func:`examples.leukemia.models.method_defaults` and
            :func:`examples.leukemia.models.check_backbone_options`; ``--drop-path`` given twice.
    """
    from examples.leukemia.models import check_backbone_options, method_defaults

    loss = method_defaults(args.method, args.head, args.loss)["loss"]
    if getattr(args, "balance", 0.0) and loss not in BALANCE_WITHIN:
        raise ValueError(
            f"--balance: weights the decisions of the {', '.join(BALANCE_WITHIN)} losses, but this run trains "
            f"with the {loss!r} loss; drop --balance, or pick one of those with --loss."
        )
    options = dict(getattr(args, "loss_kwargs", None) or {})
    if options:
        flags = {"weight": "--balance", "label_smoothing": "--label-smoothing"}
        taken = [k for k in options if k in (*flags, "validate_args", "reduction")]
        if taken:
            raise ValueError(
                f"--loss-kwargs: {', '.join(map(repr, taken))} is set by the training loop itself"
                + "".join(f"; use {flags[k]} for {k!r}" for k in taken if k in flags)
                + "; drop it from --loss-kwargs."
            )
        from hiercls.losses import create_loss

        try:  # names and values checked on a two-leaf tree, before any data is read
            create_loss(loss, Taxonomy.from_paths(["r/a", "r/b"]), **options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"--loss-kwargs: {err}") from None
    backbone_options = dict(getattr(args, "backbone_kwargs", None) or {})
    if getattr(args, "drop_path", None) and "drop_path_rate" in backbone_options:
        raise ValueError(
            f"--drop-path {args.drop_path:g} and --backbone-kwargs drop_path_rate "
            f"{backbone_options['drop_path_rate']!r} both set the stochastic depth rate; keep one of them."
        )
    check_backbone_options(args.backbone, backbone_options)
    if getattr(args, "drop_path", None):  # as _run_body passes it
        check_backbone_options(
            args.backbone, {**backbone_options, "drop_path_rate": args.drop_path}, flag="--drop-path"
        )
    if getattr(args, "pretrained", False) and not getattr(args, "resume", False):
        from examples.leukemia.models import create_backbone

        # fetched (and cached by timm) before the data is read: offline, the hub's failure came after it
        create_backbone(args.backbone, pretrained=True, **backbone_options)
    size = getattr(args, "img_size", None)
    if size and ":" not in args.backbone:  # a ViT's patch size, checked before the images are decoded
        from types import SimpleNamespace

        from examples.leukemia.models import create_backbone

        try:
            with torch.device("meta"):
                backbone = create_backbone(args.backbone, img_size=size, **backbone_options)
        except Exception:  # an architecture the meta device cannot build: the real build will tell
            return
        check_input_size(SimpleNamespace(config={"backbone": args.backbone}, backbones=lambda: [backbone]), size)


#: which nodes compete in one decision of each loss that ``--balance`` weights (hiercls.losses.balanced_weight)
BALANCE_WITHIN = {"conditional": "siblings", "level": "levels", "flat": "leaves"}


def balance_weight(args: argparse.Namespace, taxonomy: Taxonomy, train_targets: torch.Tensor) -> list[float] | None:
    """The ``--balance`` loss weights of a run from its training targets (``None`` when off), as a list
    that the run's JSON config keeps (so a checkpoint rebuilds the same loss)."""
    from examples.leukemia.models import method_defaults
    from hiercls.losses import balanced_weight

    if not args.balance:
        return None
    within = BALANCE_WITHIN[method_defaults(args.method, args.head, args.loss)["loss"]]
    return balanced_weight(taxonomy, train_targets.cpu(), within=within, power=float(args.balance)).tolist()


def _resumed_loss_weight(output: Path, weight: list[float], *, main: bool) -> list[float]:
    """``--resume --balance``: the run's own loss weights, as its checkpoint's config recorded them.

    The weights are recomputed from the training split at every start (the loss keeps them in a
    non-persistent buffer); a library whose ``balanced_weight`` has changed since the run started
    would otherwise train its later epochs under other weights, with nothing said.
    """
    stored = _read_last(output / "last.json").get("config", {})
    kept = ((stored.get("model") or {}).get("loss_kwargs") or {}).get("weight")
    if kept is None or len(kept) != len(weight):
        return weight
    if any(not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(kept, weight, strict=True)):
        if main:
            worst = max(range(len(kept)), key=lambda i: abs(kept[i] - weight[i]))
            log.warning(
                "--resume --balance: this version computes other loss weights from the run's training split "
                "(node %d: %.4g, where the run started with %.4g); the run goes on with its own weights, as an "
                "uninterrupted run would have. Start a new run for the new weights.",
                worst,
                weight[worst],
                kept[worst],
            )
        return [float(w) for w in kept]
    return weight


def _read_last(path: Path, *, strict: bool = True) -> dict[str, Any]:
    """A run's ``last.json``, parsed: a damaged one is named with the way out (``strict``) or read as ``{}``.

    Raw ``json.loads`` gave "Expecting value: line 1 column 1" without the file's name, and a sidecar that is
    not an object (``[]``) or holds ``"epoch": null`` a traceback, even on a run without ``--resume``.
    """
    problem = ""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        value, problem = None, f"{type(err).__name__}: {err}"
    if problem == "" and not isinstance(value, dict):
        problem = f"a JSON {type(value).__name__}, not the object save_checkpoint writes"
    elif problem == "" and not isinstance(value.get("config", {}), dict):
        problem = f'its "config" is {json.dumps(value["config"])}, not an object'
    if problem:
        if not strict:
            return {}
        raise ValueError(
            f"--resume: {path} is damaged ({problem}), so the run cannot be continued. Start it again with "
            "--overwrite (its best checkpoint, RUN/best, is replaced too: copy it out first to keep it), or "
            "write to another --output."
        )
    return value


def _check_run_folder(args: argparse.Namespace, output: Path) -> None:
    """Refuse to mix two runs in one folder, and to resume on other data.

    Raises:
        FileExistsError: ``output`` holds a run and neither ``--resume`` nor ``--overwrite`` was given.
        FileNotFoundError: ``--resume`` without a checkpoint to continue.
        ValueError: ``--resume`` with other data, taxonomy, layout, split seed or ``--limit`` than the run's.
    """
    last = output / "last.json"
    if args.resume:
        if not last.is_file():
            if (output / "best.json").is_file():
                raise FileNotFoundError(
                    f"--resume: {output} holds a run saved without its last checkpoint (--no-last), so it cannot "
                    "be continued; start it again with --overwrite, or write to another --output."
                )
            raise FileNotFoundError(f"--resume: no checkpoint {last}; run without --resume first.")
        stored = _read_last(last).get("config", {})
        _check_same_model(args, stored, output)
        now = data_identity(args)
        changed = {k: (stored[k], v) for k, v in now.items() if k in stored and stored[k] != v}
        if "taxonomy" in changed:  # the same taxonomy from another path (a copy, a moved file) is the run's
            sidecar = _read_last(last)
            if args.taxonomy and _taxonomy_fingerprint(args.taxonomy) == sidecar.get("taxonomy_fingerprint"):
                del changed["taxonomy"]
        elif args.taxonomy and Path(args.taxonomy).is_file():  # the same file, edited since the run started?
            theirs = _read_last(last).get("taxonomy_fingerprint")
            if isinstance(theirs, str) and _taxonomy_fingerprint(args.taxonomy) != theirs:
                kept = Path(args.taxonomy).with_suffix(".run.json")
                raise ValueError(
                    f"--resume: --taxonomy {args.taxonomy} has changed since the run in {output} started (fingerprint "
                    f"{_taxonomy_fingerprint(args.taxonomy)[:12]}... now, {theirs[:12]}... in the run), so its node "
                    "indices and split no longer match. The run's own taxonomy is in its checkpoint: write it out "
                    'with python -c "from examples.leukemia.checkpoint import load_checkpoint; '
                    f'load_checkpoint({str(output / "last")!r}).taxonomy.to_json({str(kept)!r})" and resume with '
                    f"--taxonomy {kept}, or start a new run on the edited taxonomy (another --output, or --overwrite)."
                )
        if changed:
            shown = "; ".join(f"{k}: {old!r} in the run, {new!r} now" for k, (old, new) in changed.items())
            raise ValueError(
                f"--resume: the run in {output} was trained on other data ({shown}). Its test split could hold "
                "images it trained on. Resume with the run's own data flags (its config.json lists them), or "
                "start a new run: another --output, or --overwrite."
            )
    elif args.overwrite and getattr(args, "init_checkpoint", None) and holds_run(output):
        init = Path(args.init_checkpoint).resolve()
        if init.is_relative_to(output.resolve()):
            raise ValueError(
                f"--init-checkpoint {args.init_checkpoint} lies in {output}, the run --overwrite replaces: copy it "
                "out of the folder first, or write the new run to another --output."
            )
    if not args.resume and holds_run(output) and not args.overwrite:
        epoch = ""
        saved = _read_last(last, strict=False).get("epoch") if last.is_file() else None
        if isinstance(saved, int) and not isinstance(saved, bool):
            epoch = f", last saved after epoch {saved + 1}"
        raise FileExistsError(
            f"--output {output} already holds a run{epoch}. Pass --resume to continue it, --overwrite to "
            "replace it, or another --output."
        )


#: run settings that ``--resume`` may change: where and how verbosely it runs, how often it saves, what
#: it leaves out at the end; none changes a trained weight. The data flags, the model and the split are
#: checked on their own (:func:`data_identity`, :func:`_check_same_model`, :func:`split_identity`).
RESUME_MAY_CHANGE = frozenset(
    {
        "output", "overwrite", "resume", "quiet", "tensorboard", "workers", "stop_after", "save_last",
        "checkpoint_every", "eval_batch_size", "compile", "device", "channels_last", "test", "init_checkpoint",
        "pretrained", "model", "data_source", "split_sizes", "split_id", "synthetic", "data", "pack", "taxonomy",
        "layout", "split_seed", "limit", "pack_seed", "pack_group_duplicates", "pack_split_by_group",
        "init_leaks",
    }
)  # fmt: skip
#: settings a resume may change with a warning: they change which random augmentation a batch gets
#: (``augment_chunk``), how validation is read (``tta``), or the order in which CPU kernels sum (``threads``:
#: weights then differ from an uninterrupted run's by rounding, about 1e-4 after an epoch)
RESUME_WARNS = frozenset({"tta", "augment_chunk", "threads"})


def _check_same_recipe(
    stored: Mapping[str, Any], config: Mapping[str, Any], before: Mapping[str, Any], output: Path, *, main: bool
) -> None:
    """``--resume`` continues a run as it was started: a changed training setting is refused by name.

    The optimizer and schedule come back from the checkpoint, so a new ``--lr`` or ``--weight-decay``
    would be ignored while ``config.json`` recorded it; a new ``--epochs``, ``--warmup`` or process count
    leaves the cosine schedule unfinished; a new ``--best-metric`` compares scores on two scales; a new
    ``--img-size``, ``--clip-grad`` or augmentation trains another recipe from the middle on.
    """

    def norm(value: Any) -> Any:
        return json.loads(json.dumps(value, default=str))

    changed = {
        k: (stored.get(k, before.get(k)), config[k])
        for k in config
        if k not in RESUME_MAY_CHANGE
        and (k in stored or k in before)
        and norm(stored.get(k, before.get(k))) != norm(config[k])
    }
    if not config.get("augment", True):  # without augmentation the chunk changes no batch
        changed.pop("augment_chunk", None)
    refused = {k: v for k, v in changed.items() if k not in RESUME_WARNS}
    if refused:
        shown = "; ".join(f"{k}: {old!r} in the run, {new!r} now" for k, (old, new) in sorted(refused.items()))
        raise ValueError(
            f"--resume: settings differ from the run in {output}: {shown}. --resume continues the run as it was "
            "started (its optimizer and schedule come back from the checkpoint), so resume it with the run's own "
            "flags (its config.json lists them); to train on from its weights with new settings, start a new "
            f"run: --init-checkpoint {output / 'last'} with another --output."
        )
    if changed and main:
        log.warning(
            "--resume: settings differ from the checkpoint's %s; the result will differ from an uninterrupted run",
            changed,
        )


def _check_same_model(args: argparse.Namespace, stored: Mapping[str, Any], output: Path) -> None:
    """``--resume`` with another model than the run's: refused by name, before any data is read."""
    from examples.leukemia.models import method_defaults

    model = stored.get("model") or {}
    if not model:
        return
    want = {
        "method": model.get("method"),
        "backbone": model.get("backbone"),
        "head": model.get("head"),
        "loss": model.get("loss"),
    }
    choice = method_defaults(args.method, args.head, args.loss)
    now = {"method": args.method, "backbone": args.backbone, "head": choice["head"], "loss": choice["loss"]}
    stored_kwargs = model.get("backbone_kwargs")
    if stored_kwargs is not None:
        # the model's options hold --drop-path's rate too; that flag is compared with the other settings
        from_flag = bool(stored.get("drop_path"))
        stored_kwargs = {k: v for k, v in stored_kwargs.items() if not (k == "drop_path_rate" and from_flag)}
        given = dict(args.backbone_kwargs or {})
        if stored_kwargs != given:
            raise ValueError(
                f"--resume: the run in {output} built its backbone with --backbone-kwargs "
                f"{json.dumps(stored_kwargs)!r}, not {json.dumps(given)!r}. Resume it with the same options, or "
                "start a new run (another --output, or --overwrite)."
            )
    changed = [k for k in want if want[k] is not None and want[k] != now[k]]
    if changed:
        flags = " ".join(f"--{k} {want[k]}" for k in ("method", "backbone", "head", "loss") if want[k] is not None)
        raise ValueError(
            f"--resume: the run in {output} trains {', '.join(f'{k} {want[k]!r}' for k in changed)}, not "
            f"{', '.join(repr(now[k]) for k in changed)}. Resume it with {flags}, or start a new run (another "
            "--output, or --overwrite)."
        )


def _run_items(output: Path) -> list[Path]:
    """An earlier run's files and folders in ``output``: the fixed names and the checkpoints' weight files."""
    items = [output / name for name in RUN_FILES if (output / name).exists()]
    items += [p for p in output.iterdir() if p.is_file() and _CHECKPOINT_FILE.match(p.name)]
    return items


def _check_set_aside(output: Path) -> None:
    """Refuse to run where an ``--overwrite`` that was killed before its new run started left the earlier run
    set aside: the folder looks empty, and a new run would bury it for good."""
    if not output.is_dir():
        return
    orphans = sorted(p for p in output.glob(".overwritten-run-*") if p.is_dir() and any(p.iterdir()))
    if orphans:
        raise FileExistsError(
            f"--output {output} holds an earlier run that an --overwrite set aside in {orphans[0]} and never put "
            f"back (the process was killed before its new run started). To keep that run, move its files back: "
            f"mv {orphans[0]}/* {output}/ (then --resume it or --overwrite it); to drop it, delete "
            f"{orphans[0]}."
        )


def _set_aside_run(output: Path) -> Path:
    """Move an earlier run's files into a hidden folder of ``output`` (``--overwrite``): deleted once the new
    run has started, put back if it fails before that, so a failed start loses nothing."""
    aside = output / f".overwritten-run-{os.getpid()}"
    aside.mkdir()
    for item in _run_items(output):
        item.rename(aside / item.name)
    return aside


def _restore_run(output: Path, aside: Path) -> None:
    """Put a set-aside run back (the new run failed before its first epoch), replacing what the new one wrote."""
    for item in aside.iterdir():
        target = output / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        item.rename(target)
    aside.rmdir()
    log.warning("--overwrite: the new run did not start; the earlier run in %s is back as it was", output)


def _run(args: argparse.Namespace, *, data: Data | None, env: Dist | None) -> TrainResult:
    """Train with checked ``args``; with ``--overwrite``, the earlier run is replaced only once the new one starts."""
    check_model_args(args)
    env = env or init_distributed(args.device)
    output = Path(args.output)
    if env.main:
        _check_set_aside(output)
    _check_run_folder(args, output)  # before anything is written: a refused run leaves the folder as it was
    aside = _set_aside_run(output) if env.main and args.overwrite and holds_run(output) else None
    started = False

    def on_start() -> None:
        nonlocal started
        started = True
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
            log.warning("--overwrite: removed the earlier run in %s", output)

    try:
        return _run_body(args, data=data, env=env, output=output, on_start=on_start)
    except BaseException:
        if aside is not None and not started:
            _restore_run(output, aside)
        raise


def _run_body(
    args: argparse.Namespace, *, data: Data | None, env: Dist, output: Path, on_start: Callable[[], None]
) -> TrainResult:
    created = not output.exists()
    if env.main:
        output.mkdir(parents=True, exist_ok=True)
    _barrier(env)
    if env.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        if args.threads:
            torch.set_num_threads(args.threads)
        else:  # recorded: a resume under another core count is told that its sums round differently
            args.threads = torch.get_num_threads()
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    channels_last = bool(args.channels_last)

    if args.resume:
        # the weights come back from the run's checkpoint: where they first came from is not read again (a
        # moved --init-checkpoint file, or --pretrained offline, stopped the resume), and stays recorded
        first = _read_last(output / "last.json").get("config", {})
        for key, flag in (("init_checkpoint", "--init-checkpoint"), ("pretrained", "--pretrained")):
            given, kept = getattr(args, key), first.get(key) or (False if key == "pretrained" else None)
            if given and given != kept and env.main:
                log.warning(
                    "--resume: %s is not read: the run's weights come from its checkpoint (it started from %s)",
                    flag if key == "pretrained" else f"{flag} {given}",
                    {None: "random weights", False: "random weights", True: "timm's pretrained weights"}.get(
                        kept, kept
                    ),
                )
            setattr(args, key, kept)
    if args.init_checkpoint and not args.resume:  # a missing, unreadable or unfit file named before the data is read
        from examples.leukemia.models import check_init_source

        check_init_source(
            args.init_checkpoint,
            args.backbone,
            args.method,
            img_size=args.img_size,
            backbone_kwargs={
                **(args.backbone_kwargs or {}),
                **({"drop_path_rate": args.drop_path} if args.drop_path else {}),
            },
        )

    # data
    seed_everything(args.seed)
    try:
        data = data or load_data(args, env, output)
    except BaseException:
        # bad data stops the run before anything is written: leave no empty run folder behind
        if env.main and created and output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        raise
    leaks: dict[str, int] = {}
    if args.resume:
        _check_same_split(output, data)
        leaks = _read_last(output / "last.json").get("config", {}).get("init_leaks") or {}  # as first found
    elif args.init_checkpoint and env.main:
        leaks = init_leaks(args.init_checkpoint, data)
    tax = data.taxonomy
    img_size = int(data.images["train"].shape[-1])
    if data.synthetic and env.main:
        log.warning("%s data: %s. Numbers from this run say nothing about real cells.", SYNTHETIC_TAG, data.source)

    # model
    seed_everything(args.seed)
    backbone_kwargs = dict(args.backbone_kwargs or {})
    if args.drop_path:
        backbone_kwargs["drop_path_rate"] = args.drop_path
    weight = balance_weight(args, tax, data.targets["train"])
    if args.resume and weight is not None:
        weight = _resumed_loss_weight(output, weight, main=env.main)
    model = build_model(
        args.backbone,
        tax,
        args.method,
        head=args.head,
        loss=args.loss,
        pretrained=args.pretrained and not args.resume,
        init_checkpoint=None if args.resume else args.init_checkpoint,
        img_size=img_size,
        label_smoothing=args.label_smoothing,
        loss_kwargs={**(args.loss_kwargs or {}), **({"weight": weight} if weight is not None else {})} or None,
        backbone_kwargs=backbone_kwargs,
    ).to(env.device)
    check_input_size(model, img_size, "--img-size (or the pack's size)")  # a pack's size is known only now
    if args.resume:  # the run's own input normalisation (ImageNet's for runs from before it was recorded)
        stored = _read_last(output / "last.json").get("config", {}).get("model") or {}
        model.config["normalize"] = stored.get("normalize") or dict(IMAGENET_NORMALIZE)
    if weight is not None and env.main:
        log.info(
            "--balance %g: loss weights from the training split, %.3g to %.3g",
            args.balance,
            min(weight),
            max(weight),
        )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if args.ema:
        from timm.utils import ModelEmaV3

        # warm-up: decay 0 at the first optimiser step, then 1 - s ** -3/4 at step s + 1, capped at --ema
        # (timm's advice for short runs)
        ema = ModelEmaV3(model, decay=args.ema, use_warmup=True, warmup_power=0.75)
    net = ema.module if ema is not None else model  # what is validated, saved as best and tested
    criterion = model.criterion
    rule = model.config["decode"] if args.decode == "auto" else args.decode
    ddp = model
    if env.world_size > 1:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    forward = torch.compile(ddp) if args.compile else ddp

    # optimiser and schedule
    per_process = len(data.names["train"]) // env.world_size
    if per_process == 0:  # equal shards of 0 images: no step would run, and the run would look trained
        raise ValueError(
            f"the train split has {len(data.names['train'])} image(s), fewer than the {env.world_size} processes "
            "(each trains on an equal shard): give more images, or start fewer processes."
        )
    if per_process < args.batch_size:
        if env.main:
            log.warning(
                "--batch-size %d is more than the %d train images per process; using %d",
                args.batch_size,
                per_process,
                max(1, per_process),
            )
        args.batch_size = max(1, per_process)
    train_batches = _batches(
        data.images["train"],
        data.targets["train"],
        args.batch_size,
        train=True,
        augment=args.augment,
        seed=args.seed,
        env=env,
        chunk=args.augment_chunk,
        normalize=model_normalize(model),
    )
    steps_per_epoch = max(1, len(train_batches))
    optimizer = build_optimizer(model, args.lr, args.weight_decay, fused=env.device.type == "cuda")
    scheduler = cosine_with_warmup(optimizer, args.epochs * steps_per_epoch, round(args.warmup * steps_per_epoch))
    peak = max(scheduler.lr_lambdas[0](step) for step in range(args.epochs * steps_per_epoch))
    if peak < 0.8 and env.main and not args.resume:  # a short run under the default warm-up of 2 epochs
        log.warning(
            "--warmup %g of --epochs %d: the learning rate peaks at %.0f%% of --lr %g (the cosine falls while the "
            "ramp rises); for a short run lower --warmup, e.g. --warmup %g",
            args.warmup,
            args.epochs,
            100 * peak,
            args.lr,
            round(args.epochs / 10, 2),
        )
    config = run_config(args, model, data, env)
    if leaks:  # evaluate repeats it beside the scores it reads out
        config["init_leaks"] = leaks
    config["decode"] = rule
    config["image_size"] = img_size

    def score(split: str) -> dict[str, float]:
        """The decoded metrics of one split (validation each epoch, test at the end)."""
        return evaluate(
            net,
            data.images[split],
            data.targets[split],
            tax,
            rule=rule,
            threshold=args.threshold,
            env=env,
            batch_size=args.eval_batch_size,
            amp=args.amp,
            channels_last=channels_last,
            tta=args.tta,
        )

    best_metric = resolve_best_metric(args.best_metric, tax, data.targets["val"], main=env.main)
    config["best_metric"] = best_metric

    # resume
    start_epoch, best, history = 0, {"epoch": -1, "value": -math.inf, "metrics": {}}, []
    if args.resume:
        last = output / "last.json"
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {last}; run without --resume first.")
        ckpt = load_checkpoint(last, model, taxonomy=tax, optimizer=optimizer, scheduler=scheduler, restore_rng=True)
        start_epoch = int(ckpt.epoch) + 1
        if env.main:
            log.info("--resume: continuing %s after epoch %d of %d", output, start_epoch, args.epochs)
        best = ckpt.state.get("best", best)
        history = list(ckpt.state.get("history", []))
        if ema is not None:
            if "ema" not in ckpt.state:
                raise CheckpointError(
                    f"--resume --ema: {last} was saved without --ema, so the averaged weights are lost; "
                    "resume without --ema or start a new run."
                )
            load_weights(ema.module, ckpt.state["ema"])
        before = {
            "ema": 0.0,
            "tta": "none",
            "crop": 1.0,
            "balance": 0.0,
            "augment_chunk": 1,
            "loss_kwargs": {},
        }  # what checkpoints older than these flags used
        _check_same_recipe(ckpt.config, config, before, output, main=env.main)
    best_weights, best_saved = None, None  # best_saved: the epoch whose weights best.json holds
    if args.resume:
        best_ckpt = load_checkpoint(output / "best", taxonomy=tax) if (output / "best.json").is_file() else None
        best = resumed_best(best, best_ckpt, best_metric, output, main=env.main)
        if best_ckpt is not None:
            best_weights = {k: v.to(env.device) for k, v in best_ckpt.weights.items()}
            best_saved = best_ckpt.epoch
        del best_ckpt
    if env.main:
        (output / "config.json").write_text(json.dumps(config, indent=1, default=str) + "\n")
    runlog = RunLog(output, env.main, args.tensorboard, history=history)
    if env.main:
        on_start()
    if env.main:
        log.info(
            "%s%s %s, %d-node taxonomy | train %d, val %d, test %d images at %d px | %s, %d process(es)",
            f"[{SYNTHETIC_TAG}] " if data.synthetic else "",
            args.method,
            args.backbone,
            tax.num_nodes,
            len(data.names["train"]),
            len(data.names["val"]),
            len(data.names["test"]),
            img_size,
            env.device,
            env.world_size,
        )
        if not len(data.names["val"]):
            log.warning(
                "the validation split is empty (%d images in all): the best epoch is the one of lowest training "
                "loss, and --best-metric is not used. Add images (a class needs about 10 for every split to get "
                "one), or train for a fixed number of epochs and read the last checkpoint.",
                sum(len(v) for v in data.names.values()),
            )

    # loop
    train_seconds, train_images = (
        sum(h.get("train_seconds", 0.0) for h in history),
        sum(h.get("train_images", 0.0) for h in history),
    )
    stop = args.epochs if args.stop_after is None else min(args.epochs, args.stop_after)
    for epoch in range(start_epoch, stop):
        seed_everything(epoch_seed(args.seed, epoch, env.rank))
        train_batches.set_epoch(epoch)
        stats = train_one_epoch(
            model,
            forward,
            criterion,
            train_batches,
            optimizer,
            scheduler,
            env=env,
            amp=args.amp,
            clip_grad=args.clip_grad,
            channels_last=channels_last,
            epoch=epoch,
            epochs=args.epochs,
            progress=env.main and not args.quiet,
            ema=ema,
        )
        train_seconds += stats["seconds"]
        train_images += stats["images"]
        _sync_buffers(model, env)
        if ema is not None:
            _sync_buffers(ema.module, env)
        val = score("val") if len(data.names["val"]) else {}
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": stats["loss"],
            "train_img_per_s": stats["img_per_s"],
            "train_seconds": stats["seconds"],
            "train_images": stats["images"],
            # the first epoch this process ran pays its start-up (also after --resume): left out of the speed
            "first_in_process": epoch == start_epoch,
            **{f"val_{k}": v for k, v in val.items()},
        }
        history.append(row)
        value = selection_score(val, best_metric, stats["loss"])
        is_best = value > best["value"]
        if is_best:
            # without a validation split the score is minus the training loss: say so in summary.json
            chosen_by = best_metric if val else "minus_train_loss"
            best = {"epoch": epoch, "value": value, "metric": chosen_by, "metrics": val}
            best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best_saved = None  # new weights in memory, even for the epoch on disk (a replay that scored higher)
        if env.main:
            runlog.write(row)
            shown = {
                k: round(v, 4) for k, v in val.items() if k in ("leaf_accuracy", "hierarchical_f1", "mistake_severity")
            }
            log.info(
                "%sepoch %d/%d  loss %.4f  %.0f img/s  val %s%s",
                f"[{SYNTHETIC_TAG}] " if data.synthetic else "",
                epoch + 1,
                args.epochs,
                stats["loss"],
                stats["img_per_s"],
                shown,
                "  *best*" if is_best else "",
            )
            periodic = args.checkpoint_every > 0 and (epoch + 1) % args.checkpoint_every == 0
            write_last = args.save_last and (epoch == stop - 1 or periodic)
            # best is always written before last: a kill between the two leaves a best.json at least as new
            # as the record last holds, which a --resume then adopts (resumed_best)
            if best_weights is not None and best_saved != best["epoch"] and (args.checkpoint_every > 0 or write_last):
                best_saved = _save_best(output, best_weights, tax, config, best)
            if write_last:
                save_checkpoint(
                    output / "last",
                    model,
                    tax,
                    config=config,
                    metrics=val,
                    epoch=epoch,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    rng=True,
                    state={
                        "best": best,
                        "history": history,
                        **({"ema": model_state(ema.module)} if ema is not None else {}),
                    },
                )
        _barrier(env)
    runlog.close()

    # the best weights (kept in memory; the averaged ones with --ema), saved if not yet, and evaluated
    # on the test split
    if best_weights is not None:
        model.load_state_dict(best_weights)
        net = model
        if env.main and best_saved != best["epoch"]:
            _save_best(output, model, tax, config, best)
        del best_weights
    elif ema is not None:  # no epoch was scored better than -inf (e.g. NaN throughout): keep the average
        model.load_state_dict(ema.module.state_dict())
        net = model
    test = None
    if args.test and len(data.names["test"]):
        test = score("test")
    img_per_s = train_images / max(train_seconds, 1e-9)
    steady = throughput_after_first_epoch(history)
    if env.main:
        summary = {
            "synthetic": data.synthetic,
            "data_source": data.source,
            "best_val": best,
            "test": test,
            "train_seconds": train_seconds,
            "train_img_per_s": img_per_s,
            "train_img_per_s_after_first_epoch": steady,
            "config": config,
        }
        if data.synthetic:
            summary["WARNING"] = f"{SYNTHETIC_TAG} images: these numbers say nothing about real cells."
        (output / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        if test is not None:
            log.info(
                "%stest (best epoch %d): %s",
                f"[{SYNTHETIC_TAG}] " if data.synthetic else "",
                best["epoch"] + 1,
                {k: round(v, 4) for k, v in test.items()},
            )
    return TrainResult(model, data, config, best, test, history, train_seconds, img_per_s, output, steady)


def final_test_metrics(result: TrainResult, env: Dist | None = None) -> dict[str, Any] | None:
    """The test split scored for the end-of-run summary: the library's metrics plus the counts behind them.

    One process: the best model predicts the test split again and
    :func:`examples.leukemia.evaluate.evaluation_metrics` scores it, which adds ``fine_leaf_accuracy``
    (exact match over the images labelled at a leaf) to :func:`hiercls.metrics.summary`; this adds
    ``partial_inside`` (the share of images labelled only at an inner node whose prediction lies at or
    below that node: the model named a subtype the label does not know, consistent with it).
    Several processes (DDP): the reduced ``result.test`` only. ``None`` without a test evaluation.
    """
    if result.test is None:
        return None
    if env is not None and env.world_size > 1:  # the reduced metrics, plus the counts every process knows
        out = dict(result.test)
        leaf = torch.tensor(result.data.taxonomy.is_leaf_mask)[result.data.targets["test"].cpu()]
        out["n_partial_labels"] = int((~leaf).sum())
        if "leaf_accuracy" in out:
            out["fine_leaf_accuracy"] = out["leaf_accuracy"]
        return out
    from examples.leukemia.evaluate import evaluation_metrics

    tax, cfg = result.data.taxonomy, result.config
    target = result.data.targets["test"]
    device = next(result.model.parameters()).device
    probs = predict(
        result.model,
        result.data.images["test"],
        batch_size=int(cfg.get("eval_batch_size", 512)),
        device=device,
        amp=bool(cfg.get("amp", True)),
        channels_last=bool(cfg.get("channels_last", True)),
        tta=str(cfg.get("tta", "none")),
    )
    rule = cfg["decode"]
    preds = decode(probs, tax, rule, threshold=float(cfg.get("threshold", 0.5)) if rule == "threshold" else None)
    out = evaluation_metrics(target, preds, tax)
    t, p = target.cpu().numpy(), preds.cpu().numpy()
    partial = ~np.asarray(tax.is_leaf_mask)[t]
    out["partial_inside"] = float((tax.lca(t[partial], p[partial]) == t[partial]).mean()) if partial.any() else math.nan
    return out


def format_summary(result: TrainResult, report: dict[str, Any] | None, wall_seconds: float) -> str:
    """The friendly end-of-run text: where the outputs are, the test metrics as a small table, what to run next."""
    out, data, cfg = result.output, result.data, result.config
    tag = f"{SYNTHETIC_TAG} " if data.synthetic else ""
    stopped = cfg.get("stop_after") is not None and int(cfg["stop_after"]) < int(cfg["epochs"])
    what = (
        f"run stopped after epoch {cfg['stop_after']} of {cfg['epochs']} (--stop-after)" if stopped else "run finished"
    )
    lines = ["", f"=== {tag}{what} in {wall_seconds:.0f} s: {cfg['method']} {cfg['backbone']} ===", ""]
    if report is not None:
        n = len(data.names["test"])
        best = result.best.get("epoch", -1) + 1
        chosen = (
            f"by validation {cfg['best_metric']}" if data.names.get("val") else "by training loss (no validation split)"
        )
        lines.append(
            f"Test split ({n} {tag}image{'' if n == 1 else 's'}), best epoch {best} of {cfg['epochs']} {chosen}, decoding {cfg['decode']}:"
        )
        rows: list[tuple[str, str]] = []
        n_partial = report.get("n_partial_labels")
        if "fine_leaf_accuracy" in report:
            rows.append((f"leaf accuracy ({_images(n - n_partial)} labelled at a leaf)", report["fine_leaf_accuracy"]))
        if n_partial and "partial_inside" in report:
            rows.append(
                (
                    f"partial labels: prediction within the labelled node ({_images(n_partial)})",
                    report["partial_inside"],
                )
            )
        exact = "exact-match accuracy" + (" (a partial label counts only if matched exactly)" if n_partial else "")
        rows.append((exact, report["accuracy"]))
        if "eight_class_accuracy" in report:
            k = report.get("n_eight_class", n)
            scope = "all images" if k == n else f"{k} of {_images(n)}; labels above the 8 classes left out"
            rows.append((f"8-class accuracy (PBC class folders, {scope})", report["eight_class_accuracy"]))
        rows.append(("hierarchical F1", report["hierarchical_f1"]))
        depths = sorted(int(k.split("/")[1]) for k in report if k.startswith("level_accuracy/"))
        if depths:
            # each depth scores only the images labelled at or below it: on a ragged tree or with partial
            # labels the deeper accuracies rest on fewer images, so say how many
            reach = np.asarray(data.taxonomy.depth_index)[data.targets["test"].cpu().numpy()]
            counts = [int((reach >= d).sum()) for d in depths]
            scored = f" (of {' / '.join(map(str, counts))} images)" if any(c != n for c in counts) else ""
            rows.append(
                (
                    "accuracy at depth " + " / ".join(map(str, depths)) + scored,
                    " / ".join(f"{report[f'level_accuracy/{d}']:.3f}" for d in depths),
                )
            )
        width = max(len(r[0]) for r in rows)
        lines += [f"  {name:<{width}}  {v if isinstance(v, str) else f'{v:.3f}'}" for name, v in rows]
        lines.append("")
    tb = " tb/ (tensorboard --logdir " + str(out / "tb") + ")," if (out / "tb").is_dir() else ""
    ckpts = " and ".join(f"{n}.*" for n in ("best", "last") if (out / f"{n}.json").is_file())
    ckpts = f" {ckpts} (checkpoints)," if ckpts else ""
    lines.append(f"Outputs in {out}/:{ckpts} summary.json, log.csv, splits.csv,{tb} config.json")
    if data.synthetic:
        lines += [
            f"The images are {SYNTHETIC_TAG} cartoons ({out / (SYNTHETIC_TAG + '_images')}): these numbers show the "
            "pipeline at work, not how well anything classifies blood cells.",
            "",
            "Next, on real images (the PBC data set, see examples/leukemia/README.md):",
            "  python -m examples.leukemia.train --data PATH/TO/PBC_dataset_normal_DIB --epochs 40",
            "(about 17,000 images at 128 px on convnext_tiny: a job for a GPU; on a CPU try --epochs 2 first)",
        ]
    else:
        lines += [
            "",
            "Next: per-level confusion matrices and recall trees, then predictions on new images:",
            f"  python -m examples.leukemia.evaluate {out / 'best'} --out {out / 'eval'}",
            f"  python -m examples.leukemia.predict {out / 'best'} PATH/TO/images/ --out predictions.csv",
        ]
    return "\n".join(lines) + "\n"


@exits_cleanly
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m examples.leukemia.train``."""
    t0 = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    env = init_distributed(args.device)
    if not env.main:
        logging.getLogger().setLevel(logging.WARNING)
    output = Path(args.output)
    # Ctrl-C: say how to go on from the last checkpoint, once there is one (train's own command line only:
    # compare runs train too, and does not resume)
    cli.interrupt_hint = lambda: (
        f"the run in {output} keeps its last checkpoint; continue it with the same command and --resume"
        if (output / "last.json").is_file()
        else None
    )
    try:
        result = run(args, env=env)
        if env.main:
            print(format_summary(result, final_test_metrics(result, env), time.perf_counter() - t0), flush=True)
        # every rank done before any closes its sockets: a peer gone mid-exchange aborts gloo (SIGABRT)
        _barrier(env)
    finally:
        if env.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
