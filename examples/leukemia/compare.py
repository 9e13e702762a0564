"""The paper's comparison: every (method, backbone) trained on the same split in one process, scored on test.

    python -m examples.leukemia.compare --pack cache/pbc128.npz --backbones resnet18,convnext_tiny \\
        --methods flat,per-level,hierarchical --epochs 30 --out results/pbc
    python -m examples.leukemia.compare --runs hierarchical:resnet18,flat:resnet18 --pack cache/all4_128.npz ...

The images are decoded once (a ``--pack`` stays on the GPU as uint8) and shared by all runs; each
run is :func:`examples.leukemia.train.run` with the same split, seed and schedule, then its best
checkpoint (by validation accuracy) is decoded on the test split (each method's rule: tiered
``top_down`` for the two hierarchical models, ``argmax_leaf`` for flat) and scored with
:func:`examples.leukemia.evaluate.evaluation_metrics`: 8-class accuracy (PBC's BloodMNIST level),
fine-leaf accuracy, hierarchical F1, mistake severity, per-level accuracy; plus train seconds
and img/s. Written to ``--out`` after every run (a stopped job keeps what finished):
``results.json``, ``results.md`` (methods x backbones tables), ``figures/<method>-<backbone>_*.png``
(per-level confusion matrices, taxonomy with per-node recall) and ``runs/<method>-<backbone>/``
(checkpoints, logs, and the split manifest ``splits.csv`` with its paths relative to the run folder).
A rerun into the same ``--out`` first removes the runs and figures the earlier call recorded in its
``results.json`` (and nothing else). ``--train-args`` may not set what compare sets itself
(``--seed``, ``--epochs``...): results.json records compare's values.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import math
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from examples.leukemia.cli import (
    ArgumentParser,
    HelpFormatter,
    device,
    exits_cleanly,
    output_folder,
    positive_float,
    whole_number,
)
from examples.leukemia.data import LAYOUTS
from hiercls.decoding import RULE_OPTIONS, decode

log = logging.getLogger("examples.leukemia.compare")

__all__ = ["main"]

_T = TypeVar("_T")
_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse takes these for values, not flags

_ALT_KEYS = ("fine_leaf_accuracy", "eight_class_accuracy", "hierarchical_f1", "mistake_severity", "accuracy")


def _other_decodings_markdown(rows: list[dict[str, Any]]) -> str:
    """A table of each run read out with its own rule and with the rules of ``--also-decode``.

    Examples:
        >>> m = {"fine_leaf_accuracy": 0.8, "eight_class_accuracy": 0.9, "hierarchical_f1": 0.85,
        ...      "mistake_severity": 3.0, "correct_rate": 0.79}
        >>> row = {"variant": "flat", "backbone": "b", "decode": "argmax_leaf", "metrics": m,
        ...        "metrics_by_decode": {"crm": dict(m, mistake_severity=2.9)}}
        >>> print(_other_decodings_markdown([row]).splitlines()[-1])
        | flat | b | crm | 0.8000 | 0.9000 | 0.8500 | 2.9000 | 0.7900 |
    """
    keys = ("fine_leaf_accuracy", "eight_class_accuracy", "hierarchical_f1", "mistake_severity", "correct_rate")
    lines = [
        "**The same models read out with other decoding rules** (same test probabilities; correct rate: the "
        "prediction is the true node or one of its ancestors)",
        "",
        "| method | backbone | decode | fine-leaf acc | 8-class acc | hier. F1 | mistake sev. | correct rate |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) and not math.isnan(value) else "—"

    for r in rows:
        readouts = [(f"{r['decode']} (its own)", r["metrics"]), *r.get("metrics_by_decode", {}).items()]
        if len(readouts) == 1:
            continue
        for rule, m in readouts:
            label = r.get("variant") or r["method"]
            lines.append(f"| {label} | {r['backbone']} | {rule} | " + " | ".join(cell(m.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m examples.leukemia.compare",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument("--pack", default=None, help="packed dataset (examples.leukemia.pack)")
    p.add_argument("--data", default=None, help="or an image folder / CSV (decoded once into memory)")
    p.add_argument(
        "--layout",
        default="auto",
        choices=LAYOUTS,
        help=f"how labels are read from --data (as in train: {', '.join(LAYOUTS)})",
    )
    p.add_argument(
        "--taxonomy",
        default=None,
        help="paper | pbc | all4 | path to a taxonomy JSON; required for --data of class folders or a CSV manifest "
        "(a PBC or ALL download implies pbc or all4, a pack holds its own)",
    )
    p.add_argument(
        "--backbones", default="convnext_tiny,vit_small_patch16_224", help="comma-separated timm model names"
    )
    p.add_argument(
        "--methods", default="flat,per-level,hierarchical", help="comma-separated methods, each run on every backbone"
    )
    p.add_argument(
        "--runs",
        default=None,
        help="explicit comma-separated method:backbone[:head] list, in this order (overrides --methods/--backbones); "
        "a head other than the method's own, e.g. hierarchical:resnet18:conditional, trains with that head's "
        "default loss and is its own row in the tables",
    )
    p.add_argument(
        "--epochs",
        type=whole_number(1, "train at least one epoch"),
        default=30,
        help="epochs of every run (train alone defaults to 40)",
    )
    p.add_argument(
        "--img-size",
        type=whole_number(8, "e.g. --img-size 128"),
        default=None,
        help="for --data (a pack has its own size; default: train's, 128)",
    )
    p.add_argument("--batch-size", type=whole_number(1, "e.g. --batch-size 32"), default=256, help="per process")
    p.add_argument(
        "--limit",
        type=whole_number(1, "leave --limit out to use every image"),
        default=0,
        help="use at most N images (smoke tests; default: all of them): with --data N in all, drawn before the "
        "split; with --pack N per split, drawn from the pack's own split",
    )
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1... (default: cuda when there is one)")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (weights and batches; the split has its own)")
    p.add_argument(
        "--workers",
        type=whole_number(1, "e.g. --workers 4"),
        default=None,
        help="image decoding workers (default: the usable CPU cores, at most 16)",
    )
    p.add_argument(
        "--deadline",
        type=positive_float("e.g. --deadline 3600, or leave --deadline out for no deadline"),
        default=None,
        help="seconds: skip runs expected to end after this (estimated from earlier runs of the backbone)",
    )
    p.add_argument(
        "--baseline-json",
        default=None,
        help="JSON of tools/flat_baseline_gpu_data.py from the same job, shown next to the table",
    )
    p.add_argument(
        "--train-args",
        default="",
        help="extra flags for every training run, e.g. '--warmup 3' (a single flag with '=': --train-args=--quiet), "
        "checked against every run before the data "
        "is read (a flag that fits only some runs, such as --balance, needs its own compare call); not the flags "
        "compare sets itself (--seed, --epochs, --batch-size, the data and model flags...): give compare's own",
    )
    p.add_argument(
        "--also-decode",
        default="",
        metavar="RULES",
        help="comma-separated decoding rules to read every run out with as well, from the same test "
        "probabilities (no training cost): e.g. crm,hf_optimal; each row's metrics_by_decode and a table in "
        "results.md hold them (the threshold rule uses the run's threshold)",
    )
    p.add_argument(
        "--figures", default="all", choices=("all", "none"), help="confusion matrices and recall trees per run"
    )
    p.add_argument("--title", default=None, help="title of results.md (default: from the data and the settings)")
    p.add_argument(
        "--out",
        "--output",
        type=output_folder,
        default="results/compare",
        help="folder of results.md, results.json, figures/ and runs/ (a rerun replaces what it holds)",
    )
    return p


def any_rank(flag: bool, env: Any) -> bool:
    """``flag`` on one process; under ``torchrun``, whether it holds on any rank, agreed by all ranks.

    A decision each rank takes from its own clock (``--deadline``) can differ between ranks; if one rank
    skipped a run that another trains, the other would wait in the run's collectives forever.

    Examples:
        >>> from examples.leukemia.train import Dist
        >>> any_rank(True, Dist()), any_rank(False, Dist())  # one process: the flag itself
        (True, False)
    """
    if env.world_size <= 1:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=env.device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def _runs(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """``(method, backbone, head or None)`` per run, checked: methods, heads and backbones exist and fit."""
    from examples.leukemia.models import HEAD_LOSSES, METHODS, check_backbone, method_defaults, variant_name

    runs: list[tuple[str, str, str | None]] = []
    if args.runs:
        for spec in (r for r in args.runs.split(",") if r):
            method, _, rest = spec.partition(":")
            # the head is a last ':head' part; backbone names may hold ':' themselves (hf-hub:org/name)
            backbone, _, head = rest.rpartition(":")
            if head not in HEAD_LOSSES or not backbone:
                backbone, head = rest, ""
                if ":" in backbone.removeprefix("hf-hub:"):  # the only ':' a backbone name holds
                    raise ValueError(
                        f"--runs: {spec!r}: unknown head {backbone.rpartition(':')[2]!r}; expected one of "
                        f"{list(HEAD_LOSSES)} (method:backbone:head)."
                    )
            if not backbone:
                raise ValueError(f"--runs: {spec!r} names no backbone; expected method:backbone[:head].")
            runs.append((method, backbone, head or None))
    else:
        runs = [(m, b, None) for b in args.backbones.split(",") if b for m in args.methods.split(",") if m]
    seen: dict[tuple[str, str], str] = {}
    for m, b, head in runs:
        if m not in METHODS:
            raise ValueError(f"--methods/--runs: unknown method {m!r}; expected one of {list(METHODS)}.")
        try:
            chosen = method_defaults(m, head=head)
        except ValueError as err:
            raise ValueError(f"--runs: {m}:...:{head}: {err}") from None
        # two runs, one table cell: the second would overwrite the first, and share its folder
        label = variant_name(m, chosen["head"], chosen["loss"])
        spec = f"{m}:{b}{':' + head if head else ''}"
        if (label, b) in seen:
            raise ValueError(
                f"--runs: {spec!r} and {seen[(label, b)]!r} are the same run ({label} on {b}); list each run once."
            )
        seen[(label, b)] = spec
    for b in dict.fromkeys(b for _, b, _ in runs):  # a typo in the last backbone must not wait for the others' runs
        try:
            check_backbone(b)
        except ValueError as err:
            raise ValueError(f"--backbones/--runs: {err}") from None
    return runs


def _baseline_md(path: str | None) -> tuple[str, dict[str, Any] | None]:
    if not path or not Path(path).is_file():
        return "", None
    base = json.loads(Path(path).read_text())
    rows = [(k, v) for k, v in base.items() if isinstance(v, dict) and "test_acc" in v]
    if not rows:
        return "", base
    fine = any(v.get("classes") != 8 for _, v in rows)
    what = (
        "flat softmax over the fine leaves, images labelled only at an inner node left out; its own split of "
        "those images, seed 20261126"
        if fine
        else "flat softmax over the 8 classes; the same split as this table, image for image (seed 20261126)"
    )
    lines = [
        f"**Peer baseline** (`tools/flat_baseline_gpu_data.py`, same job; plain timm, {what})",
        "",
        "| model | fine-leaf acc | 8-class acc (same predictions) | train s | img/s |",
        "|---|---|---|---|---|",
    ]
    for name, v in rows:
        lines.append(
            f"| {name} | {v.get('test_acc', '—') if fine else '—'} | {v.get('test_acc_8class', '—')} | {v.get('train_s', '—')} "
            f"| {v.get('img_per_s', '—')} |"
        )
    return "\n".join(lines) + "\n", base


#: train flags that compare sets itself, by their argparse dest: (the train flag, what to give compare instead)
_COMPARE_SETS: dict[str, tuple[str, str]] = {
    "seed": ("--seed", "compare's own --seed"),
    "epochs": ("--epochs", "compare's own --epochs"),
    "batch_size": ("--batch-size", "compare's own --batch-size"),
    "pack": ("--pack", "compare's own --pack"),
    "data": ("--data", "compare's own --data"),
    "taxonomy": ("--taxonomy", "compare's own --taxonomy"),
    "layout": ("--layout", "compare's own --layout"),
    "img_size": ("--img-size", "compare's own --img-size"),
    "device": ("--device", "compare's own --device"),
    "workers": ("--workers", "compare's own --workers"),
    "limit": ("--limit", "compare's own --limit"),
    "compile": ("--compile", "compare's own --compile"),
    "method": ("--method", "compare's --runs method:backbone (or --methods)"),
    "head": ("--head", "compare's --runs method:backbone:head"),
    "backbone": ("--backbone", "compare's --runs method:backbone (or --backbones)"),
    "output": ("--output", "compare's own --out"),
    "checkpoint_every": ("--checkpoint-every", "nothing: compare saves each run's best checkpoint at its end"),
    "resume": ("--resume", "nothing: compare trains every run from scratch (a rerun replaces its runs)"),
    # a run stopped early was reported as trained for --epochs
    "stop_after": ("--stop-after", "compare's own --epochs (results.md states the epochs trained)"),
}


def weights_start(train_tokens: list[str]) -> str:
    """Where the runs' weights start, as results.md says it: ``"from scratch"``, or the init source that
    ``--train-args`` gave (``--pretrained``, ``--init-checkpoint PATH``), which the note used to hide.

    Examples:
        >>> weights_start(["--warmup", "1"]), weights_start(["--pretrained"])
        ('from scratch', 'from timm pretrained weights')
    """
    from examples.leukemia import train as T

    given = T.build_parser().parse_args(train_tokens)
    if given.init_checkpoint:
        return f"from the weights of {given.init_checkpoint}"
    return "from timm pretrained weights" if given.pretrained else "from scratch"


def check_train_args(text: str) -> list[str]:
    """The tokens of ``--train-args``, refused when they set a flag that compare sets itself.

    Such a flag would override compare's value in every run while ``results.json`` and ``results.md``
    record compare's (``--seed 7`` would train seed 7 under the label seed 0). Abbreviations that train
    accepts (``--epoch``) are caught too. ``--quiet``, ``--no-test``, ``--no-last`` and ``--overwrite``,
    which compare passes already, change nothing and pass.

    Raises:
        ValueError: a flag compare sets itself, named with compare's flag to use instead.

    Examples:
        >>> check_train_args("--warmup 1 --quiet")
        ['--warmup', '1', '--quiet']
    """
    import shlex

    from examples.leukemia import train as T

    try:
        tokens = shlex.split(text)
    except ValueError as err:  # 'No closing quotation'
        raise ValueError(
            f"--train-args: expected training flags as a shell would split them, got {text!r} ({err}); close the "
            "quotes, e.g. --train-args \"--init-checkpoint 'my weights.pt'\""
        ) from None
    unset = object()
    parser = T.build_parser()
    given = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), unset))
    parser.parse_args(tokens, namespace=given)  # only the flags given replace the placeholder
    clash = [dest for dest in _COMPARE_SETS if getattr(given, dest) is not unset]
    if clash:
        raise ValueError(
            "--train-args: expected training flags that compare does not set itself, got "
            + ", ".join(_COMPARE_SETS[d][0] for d in clash)
            + f" (in {text!r}); compare passes its own value of each to every run and records it in results.json, "
            "so yours would train something other than what the results say. Use instead: "
            + "; ".join(f"{_COMPARE_SETS[d][0]} -> {_COMPARE_SETS[d][1]}" for d in clash)
            + "."
        )
    return tokens


def _train_parse(parse: Callable[[], _T], parser: argparse.ArgumentParser) -> _T:
    """``parse()`` (a parse of train's flags), a refusal from train's parser reported as compare's own.

    train's parser printed ``python -m examples.leukemia.train: error: ...`` and pointed at train's
    ``--help`` though the user ran compare: the refusal is caught and said again as
    ``compare: error: --train-args: ...``, with train's message in it.
    """
    import contextlib
    import io

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            parsed = parse()
    except SystemExit as err:
        text = said.getvalue()
        inner = text.partition(": error: ")[2].partition("\n(every option:")[0].strip()
        if err.code in (0, None):  # --help among the training flags
            inner = "--help asks for train's help, which is not a training flag"
        parser.error(
            f"--train-args: train refuses these flags: {inner or text.strip() or f'exit status {err.code}'} (the flags "
            "of --train-args are train's: python -m examples.leukemia.train --help; a single flag goes with '=', "
            "--train-args=--quiet)"
        )
    sys.stderr.write(said.getvalue())  # a warning printed while parsing is still shown
    return parsed


def _flag_taken_as_compares(argv: list[str]) -> str | None:
    """The value of ``--train-args`` that argparse would take for a flag of compare's: ``--train-args --quiet``.

    A value starting with ``-`` and holding no space is an option to argparse, so ``--train-args`` is
    left without its value and argparse says only 'expected one argument'.

    Examples:
        >>> _flag_taken_as_compares(["--pack", "p.npz", "--train-args", "--quiet"])
        '--quiet'
        >>> _flag_taken_as_compares(["--train-args", "--warmup 1"]) is None
        True
    """
    for here, token in enumerate(argv[:-1]):
        value = argv[here + 1]
        if token == "--train-args" and value.startswith("-") and " " not in value and not _NUMBER.match(value):
            return value
    return None


def _in(folder: Path, path: Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (after resolving ``..`` and links)."""
    return path.resolve().is_relative_to(folder.resolve()) and path.resolve() != folder.resolve()


def _previous_compare(out: Path) -> tuple[list[str], list[Path]]:
    """The run folder names and figure files that an earlier compare into ``out`` recorded as its own.

    An earlier compare's ``results.json`` (told apart from other JSON by its ``rows`` and ``skipped``)
    lists its planned runs (``run_names``; older files: the rows and skipped runs); its figures are the
    two files :func:`examples.leukemia.evaluate.save_figures` writes per run, ``figures/<name>_*.png``.
    """
    file = out / "results.json"
    try:
        old = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], []
    if not isinstance(old, dict) or not isinstance(old.get("rows"), list) or not isinstance(old.get("skipped"), list):
        return [], []
    names = [str(n) for n in old.get("run_names") or []]
    names += [str(r["name"]) for r in old["rows"] if isinstance(r, dict) and r.get("name")]
    for s in old["skipped"]:
        if isinstance(s, dict) and s.get("method") and s.get("backbone"):
            head = s.get("head")
            names.append(f"{s['method']}-{s['backbone']}" if not head else f"{s['method']}-{head}-{s['backbone']}")
    names = list(dict.fromkeys(names))
    # save_figures(prefix=out/figures/<name>) writes these two
    return names, [out / "figures" / f"{n}_{kind}.png" for n in names for kind in ("confusion", "taxonomy_recall")]


def remove_previous_runs(out: Path) -> list[Path]:
    """Remove what an earlier compare into ``out`` wrote and recorded: its runs and its figures.

    ``compare`` owns its ``--out`` folder: a rerun replaces its runs, so ``evaluate out/runs/*/best.json``
    must not find the runs of an earlier call (another taxonomy, other backbones). Only what the earlier
    ``results.json`` names is removed (see :func:`_previous_compare`), and in a run folder only the files
    a run writes (:data:`examples.leukemia.train.RUN_FILES` and its checkpoints' weight files, as
    ``train --overwrite``); a folder that still holds anything else stays, with it.

    Returns:
        the files and folders removed.
    """
    from examples.leukemia import train as T

    names, figures = _previous_compare(out)
    runs, removed = out / "runs", []
    for name in names:
        folder = runs / name
        if not folder.is_dir() or not _in(runs, folder):
            continue
        for item in T._run_items(folder):
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()
            removed.append(item)
        while folder != runs and folder.is_dir() and not any(folder.iterdir()):  # hf-hub:org/name nests
            folder.rmdir()
            removed.append(folder)
            folder = folder.parent
    for file in figures:
        if file.is_file() and _in(out / "figures", file):
            file.unlink()
            removed.append(file)
    for folder in (out / "figures", runs):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if removed:
        log.info("removed %d file(s) and folder(s) of the earlier compare in %s", len(removed), out)
    return removed


def copy_manifest(src: Path, dest: Path, *, pack: bool) -> None:
    """Copy the split manifest ``src`` (``out/splits.csv``) into a run folder as ``dest``.

    The paths of a manifest of ``--data`` images are relative to its folder, so they are written again
    relative to ``dest``'s folder (absolute where no relative path exists): ``evaluate RUN/best`` then
    finds the images, and its check that no scored image was a training image reads the right files. A
    pack run's manifest lists names inside the pack, not files: copied as it is.
    """
    from examples.leukemia import data as data_mod

    if pack:
        shutil.copyfile(src, dest)
    else:
        data_mod.write_manifest(dest, data_mod.read_manifest(src))


@exits_cleanly
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m examples.leukemia.compare``; returns what ``results.json`` holds."""
    import shlex

    from examples.leukemia import train as T
    from examples.leukemia.evaluate import evaluation_metrics, node_recalls, results_markdown, save_figures
    from examples.leukemia.models import variant_name

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = build_parser()
    flag = _flag_taken_as_compares(list(sys.argv[1:] if argv is None else argv))
    if flag is not None:
        parser.error(
            f"--train-args: expected the training flags as its value, got {flag!r} read as a flag of compare's (a "
            f"value that starts with '-' and holds no space); write it with '=': --train-args={flag}"
        )
    args = parser.parse_args(argv)
    if not args.pack and not args.data:
        parser.error(
            "--pack or --data: expected a source of real images, got neither; give --pack FILE.npz (from "
            "python -m examples.leukemia.pack) or --data FOLDER (the comparison is meant for real images)"
        )
    if args.pack and args.data:
        parser.error("--pack and --data: expected one source of images, got both; drop one of them")
    for problem in (T.output_problem(args.out, args.data, "--out"), args.taxonomy and T.tree_problem(args.taxonomy)):
        if problem:
            parser.error(problem)
    also = list(dict.fromkeys(r.strip() for r in args.also_decode.split(",") if r.strip()))
    unknown = [r for r in also if r not in RULE_OPTIONS]
    if unknown:
        parser.error(
            f"--also-decode: expected rules among {', '.join(RULE_OPTIONS)}, got {', '.join(map(repr, unknown))}; "
            "e.g. --also-decode crm,hf_optimal"
        )
    runs = _runs(args)  # unknown methods and backbones stop here, before any folder or data
    # and flags that would override compare's own; train's parser refusing them speaks as compare's
    train_tokens = _train_parse(lambda: check_train_args(args.train_args), parser)
    t_start = time.perf_counter()
    out = Path(args.out)
    common = [
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
        "--quiet",
        "--no-test",
        "--checkpoint-every",
        "0",
        "--no-last",
    ]
    for flag, value in (
        ("--pack", args.pack),
        ("--data", args.data),
        ("--taxonomy", args.taxonomy),
        ("--img-size", args.img_size),
        ("--device", args.device),
        ("--workers", args.workers),
    ):
        if value is not None:
            common += [flag, str(value)]
    if args.data:
        common += ["--layout", args.layout]
    if args.limit:
        common += ["--limit", str(args.limit)]
    if args.compile:
        common.append("--compile")
    common += train_tokens

    base_args = _train_parse(lambda: T.parse_args(common + ["--output", str(out)]), parser)
    for method, backbone, head in runs:  # --train-args' options against every run, before the data is read
        try:
            T.check_model_args(
                argparse.Namespace(**{**vars(base_args), "method": method, "backbone": backbone, "head": head})
            )
        except ValueError as err:
            spec = f"{method}:{backbone}{':' + head if head else ''}"
            raise ValueError(
                f"--train-args, run {spec}: {err} (--train-args apply to every run: give a run they do not fit "
                "its own compare call)"
            ) from None
    out.mkdir(parents=True, exist_ok=True)
    env = T.init_distributed(base_args.device)
    t0 = time.perf_counter()
    data = T.load_data(base_args, env, out)
    load_s = time.perf_counter() - t0
    tax = data.taxonomy
    device_name = torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu"
    log.info(
        "data: %s | train %d, val %d, test %d | %d px | loaded in %.1f s | %s",
        data.source,
        len(data.names["train"]),
        len(data.names["val"]),
        len(data.names["test"]),
        data.images["train"].shape[-1],
        load_s,
        device_name,
    )
    baseline_md, baseline = _baseline_md(args.baseline_json)
    names = [f"{m}-{b}" if h is None else f"{m}-{h}-{b}" for m, b, h in runs]
    if env.main:  # compare owns --out: the runs and figures of an earlier call into it go
        remove_previous_runs(out)
    T._barrier(env)
    source = Path(args.pack or args.data)
    result: dict[str, Any] = {
        "title": args.title or f"{Path(args.pack or args.data).stem}: methods x backbones",
        "device": device_name,
        "torch": torch.__version__,
        "data_source": data.source,
        # what aggregate checks to be the same in every file it pools: the data, taxonomy and split
        "data": str(source.resolve()) if source.exists() else str(source),
        "taxonomy": tax.fingerprint,
        "split": "test",
        "split_seed": None if args.pack else base_args.split_seed,
        "split_id": T.split_identity(data),
        # whether the split kept byte-identical copies together (a pack's as it was packed)
        "group_duplicates": bool(data.pack_group_duplicates if args.pack else base_args.group_duplicates),
        # whether it kept each patient's or slide's images in one split (--split-by-group)
        "split_by_group": bool(data.pack_split_by_group if args.pack else base_args.split_by_group),
        "synthetic": data.synthetic,
        "image_size": int(data.images["train"].shape[-1]),
        "crop": data.crop,
        "split_sizes": {s: len(v) for s, v in data.names.items()},
        "partial_labels_in_train": int(
            (~torch.tensor(tax.is_leaf_mask, device=data.targets["train"].device)[data.targets["train"]]).sum()
        ),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_args": args.train_args,
        "weights_start": _train_parse(lambda: weights_start(train_tokens), parser),
        "command": "python -m examples.leukemia.compare " + shlex.join(sys.argv[1:] if argv is None else argv),
        "load_seconds": load_s,
        "run_names": names,  # what a rerun into --out removes (remove_previous_runs)
        "rows": [],
        "skipped": [],
        "baseline": baseline,
    }
    estimates: dict[str, float] = {}

    def write() -> None:
        rows = result["rows"]
        note = (
            f"Test split: {result['split_sizes'].get('test')} images "
            f"({sum(r['metrics']['n_partial_labels'] for r in rows[:1])} labelled only at an inner node); "
            f"{args.epochs} epochs {result['weights_start']} at {result['image_size']} px"
            + (f" (the centre {data.crop:.0%} of each image's short side)" if data.crop < 1 else "")
            + f", batch {args.batch_size}, seed "
            f"{args.seed}, on {device_name}. Decoding: each method's rule (column 'decode')."
        )
        if data.synthetic:
            note += " **SYNTHETIC images: these numbers say nothing about real cells.**"
        md = (
            results_markdown(rows, title=result["title"], note=note)
            if rows
            else f"## {result['title']}\n\n(no run finished)\n"
        )
        if any(r.get("metrics_by_decode") for r in rows):
            md += "\n" + _other_decodings_markdown(rows)
        if result["skipped"]:
            md += (
                "\nSkipped: "
                + ", ".join(
                    f"{s['method']}:{s['backbone']}{':' + s['head'] if s.get('head') else ''} ({s['reason']})"
                    for s in result["skipped"]
                )
                + "\n"
            )
        if baseline_md:
            md += "\n" + baseline_md
        result["wall_seconds"] = time.perf_counter() - t_start
        if env.main:
            (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
            (out / "results.md").write_text(md)

    write()  # results.json names the runs from the start: a rerun after a stop removes them too
    for (method, backbone, head), name in zip(runs, names):
        levels = tax.max_depth if method == "per-level" else 1
        est = estimates.get(backbone, 0.0) * levels
        late = args.deadline is not None and time.perf_counter() - t_start + est > args.deadline
        if any_rank(late, env):  # every rank skips, or none
            log.info(
                "skip %s: expected %.0f s, %.0f s left", name, est, args.deadline - (time.perf_counter() - t_start)
            )
            result["skipped"].append(
                {"method": method, "backbone": backbone, "head": head, "reason": f"time (~{est:.0f} s)"}
            )
            write()
            continue
        head_args = [] if head is None else ["--head", head]
        # compare owns its folder: a rerun replaces each run instead of mixing with it
        run_argv = [*common, "--method", method, *head_args, "--backbone", backbone]
        run_argv += ["--output", str(out / "runs" / name), "--overwrite"]
        run_args = _train_parse(functools.partial(T.parse_args, run_argv), parser)
        t_run = time.perf_counter()
        try:
            res = T.run(run_args, data=data, env=env)
        except Exception as err:  # record and go on with the other runs
            log.exception("run %s failed", name)
            result["skipped"].append(
                {"method": method, "backbone": backbone, "head": head, "reason": f"error: {err!r}"[:300]}
            )
            write()
            continue
        wall = time.perf_counter() - t_run
        if env.main and (out / "splits.csv").is_file():  # self-contained: evaluate RUN/best finds its split
            copy_manifest(out / "splits.csv", out / "runs" / name / "splits.csv", pack=bool(args.pack))
        estimates[backbone] = wall / levels
        rule = res.config["decode"]
        tta = str(res.config.get("tta", "none"))
        probs = T.predict(
            res.model, data.images["test"], batch_size=512, device=env.device, amp=True, channels_last=True, tta=tta
        )
        target = data.targets["test"].to(probs.device)
        threshold = float(res.config.get("threshold", 0.5)) if rule == "threshold" else None  # as train decoded
        preds = decode(probs, tax, rule, threshold=threshold)
        metrics = evaluation_metrics(target, preds, tax)
        row: dict[str, Any] = {
            "name": name,
            "method": method,
            "variant": variant_name(method, res.config["model"]["head"], res.config["model"]["loss"]),
            "backbone": backbone,
            "seed": args.seed,
            "batch_size": res.config.get("batch_size"),  # as trained (capped at the train images per process)
            "decode": rule,
            "tta": tta,
            "ema": float(res.config.get("ema", 0.0)),
            "balance": float(res.config.get("balance", 0.0)),
            "head": res.config["model"]["head"],
            "loss": res.config["model"]["loss"],
            "metrics": metrics,
            "node_recall": node_recalls(target, preds, tax),
            "best_epoch": res.best.get("epoch"),
            "best_metric": res.best.get("metric"),
            "val_best": res.best.get("metrics", {}).get(res.best.get("metric"), res.best.get("value")),
            "train_seconds": res.train_seconds,
            "img_per_s": res.img_per_s,
            "img_per_s_after_first_epoch": res.img_per_s_after_first_epoch,
            "wall_seconds": wall,
            "params_m": sum(p.numel() for p in res.model.parameters()) / 1e6,
        }
        # the same probabilities under other rules: the argmax-leaf readout and --also-decode, each decoded once
        readouts: dict[str, dict[str, Any]] = {}
        for other in dict.fromkeys([*(["argmax_leaf"] if rule != "argmax_leaf" else []), *also]):
            if other != rule:
                tau = float(res.config.get("threshold", 0.5)) if other == "threshold" else None
                readouts[other] = evaluation_metrics(target, decode(probs, tax, other, threshold=tau), tax)
        if rule != "argmax_leaf":
            alt = readouts["argmax_leaf"]
            row["metrics_argmax_leaf"] = {k: alt[k] for k in _ALT_KEYS if k in alt}
        by_decode = {
            other: {k: readouts[other][k] for k in (*_ALT_KEYS, "correct_rate") if k in readouts[other]}
            for other in also
            if other != rule
        }
        if by_decode:
            row["metrics_by_decode"] = by_decode
        if args.figures == "all" and env.main:
            title = f"{name} (test)" + (" [SYNTHETIC]" if data.synthetic else "")
            try:
                row["figures"] = [
                    str(p)
                    for p in save_figures(
                        target, preds, tax, out / "figures" / name, title=title, recall=row["node_recall"]
                    )
                ]
            except Exception as err:  # figures must not cost the numbers
                log.warning("figures of %s failed: %r", name, err)
        result["rows"].append(row)
        shown = {
            k: round(v, 4)
            for k, v in metrics.items()
            if k in ("eight_class_accuracy", "fine_leaf_accuracy", "hierarchical_f1", "mistake_severity")
        }
        steady = res.img_per_s_after_first_epoch
        log.info(
            "%s: %s | train %.1f s, %.0f img/s (%s after the first epoch)",
            name,
            shown,
            res.train_seconds,
            res.img_per_s,
            "—" if steady is None else f"{steady:.0f}",
        )
        write()
        del res, probs
        gc.collect()
        if env.device.type == "cuda":
            torch.cuda.empty_cache()
    write()
    if env.main:
        print((out / "results.md").read_text())
    if env.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every rank done before any closes its sockets (gloo aborts otherwise)
        torch.distributed.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
