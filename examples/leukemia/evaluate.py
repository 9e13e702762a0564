"""Evaluate checkpoints: per-level and hierarchical metrics, a results table, confusion matrices and recall trees.

    python -m examples.leukemia.evaluate runs/hierarchical-convnext_tiny/best runs/flat-convnext_tiny/best --out eval
    python -m examples.leukemia.evaluate runs/*/best.json --pack cache/pbc128.npz --split test --out eval
    python -m examples.leukemia.evaluate runs/flat-convnext_tiny/best --data other_lab/ --external --out eval/other

Each checkpoint is evaluated on a split of its data: by default the data it was trained on (its
``--pack``, or the split manifest ``splits.csv`` written next to it), or the ``--pack`` / ``--data``
given here; ``--external`` scores every image of a ``--data`` / ``--pack`` that is not the run's
(external validation: no split, no check against the run's training images). Predictions are decoded with the checkpoint's rule (``--decode`` overrides, checked before
anything is loaded) and scored with :mod:`hiercls.metrics`. The checkpoints must share one taxonomy
(one table, one set of classes); two runs of one method and backbone each get their own line. Written
to ``--out``:

- ``results.json`` and ``results.md``: a methods x backbones table as in Hamdi et al. (fine-leaf
  accuracy, 8-class accuracy for PBC, hierarchical F1, mistake severity, per-level accuracy);
- per checkpoint ``<name>_confusion.png`` (one confusion matrix per tree level,
  :func:`hiercls.plot.plot_level_confusion_matrices`) and ``<name>_taxonomy_recall.png`` (the tree
  drawn with each node's recall, :func:`hiercls.plot.plot_taxonomy`).

A rerun into the same ``--out`` first removes the figures that the earlier ``results.json`` there
lists (and nothing else), so the folder never shows figures of runs its table does not list.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from examples.leukemia.cli import (
    ArgumentParser,
    device,
    exits_cleanly,
    output_folder,
    probability,
    remove_listed_pngs,
    whole_number,
)
from examples.leukemia.gpu_data import add_tta_argument
from hiercls import Taxonomy
from hiercls.decoding import RULE_OPTIONS, decode
from hiercls.metrics import accuracy, node_recall, summary

log = logging.getLogger("examples.leukemia.evaluate")

#: the split name of ``--external``: every image of ``--data`` or ``--pack``, which are not the run's
EXTERNAL = "external"

__all__ = [
    "EXTERNAL",
    "RunImages",
    "checkpoint_decoding",
    "evaluation_metrics",
    "expand_checkpoints",
    "load_split",
    "main",
    "node_recalls",
    "resolve_checkpoint",
    "results_markdown",
    "save_figures",
    "scored_on",
    "unique_checkpoints",
]

# headline columns of the results table: key -> header
HEADLINE: dict[str, str] = {
    "eight_class_accuracy": "8-class acc",
    "fine_leaf_accuracy": "fine-leaf acc",
    "hierarchical_f1": "hier. F1",
    "mistake_severity": "mistake sev.",
}


def _np(values: Any) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy().astype(np.int64)
    return np.asarray(values, dtype=np.int64)


def eight_class_table(taxonomy: Taxonomy) -> np.ndarray | None:
    """Per node, its PBC 8-class (BloodMNIST) index, or None when the taxonomy is not PBC's."""
    from examples.leukemia.data import PBC_CLASS_NODE, pbc_class_table

    if not all(n in taxonomy for n in PBC_CLASS_NODE.values()):
        return None
    return pbc_class_table(taxonomy)


def evaluation_metrics(y_true: Any, y_pred: Any, taxonomy: Taxonomy) -> dict[str, Any]:
    """The library's :func:`hiercls.metrics.summary` plus the numbers of the paper's table.

    Adds ``fine_leaf_accuracy`` (exact match over the images labelled at a leaf: the finest task),
    ``eight_class_accuracy`` (PBC only: prediction and truth mapped to their 8-class ancestor with
    :func:`examples.leukemia.data.pbc_class_table`, over every image labelled at or below one of the 8
    classes, partial labels such as ``neutrophil`` included; ``n_eight_class`` counts them) and
    ``eight_class_accuracy_leaf_labelled`` (the same over leaf-labelled images, comparable to the
    peer baseline's ``--fine`` run), and the counts.

    Args:
        y_true, y_pred: node indices ``(N,)`` (numpy or torch).
        taxonomy: their taxonomy.
    """
    t, p = _np(y_true), _np(y_pred)
    out: dict[str, Any] = {k: float(v) for k, v in summary(t, p, taxonomy).items()}
    leaf = np.asarray(taxonomy.is_leaf_mask)[t]
    out["n"] = len(t)
    out["n_partial_labels"] = int((~leaf).sum())
    out["fine_leaf_accuracy"] = accuracy(t[leaf], p[leaf], taxonomy) if leaf.any() else math.nan
    table = eight_class_table(taxonomy)
    if table is not None:
        ct, cp = table[t], table[p]
        known = ct >= 0
        out["eight_class_accuracy"] = float((ct == cp)[known].mean()) if known.any() else math.nan
        out["n_eight_class"] = int(known.sum())  # labels above the 8 classes (e.g. 'granulocyte') are left out
        both = known & leaf
        out["eight_class_accuracy_leaf_labelled"] = float((ct == cp)[both].mean()) if both.any() else math.nan
    return out


def node_recalls(y_true: Any, y_pred: Any, taxonomy: Taxonomy) -> dict[str, float | None]:
    """Each node's recall (:func:`hiercls.metrics.node_recall`) by name, the numbers behind the recall
    tree: of the images whose true path holds the node, the fraction whose predicted path does too
    (``None`` for a node no image reaches, so the dict stays valid JSON).

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/benign", "r/malignant/pre_B", "r/malignant/pro_B"])
        >>> node_recalls(tax.encode(["benign", "pre_B"]), tax.encode(["pre_B", "pre_B"]), tax)["benign"]
        0.0
    """
    values = node_recall(_np(y_true), _np(y_pred), taxonomy)
    return {name: (None if math.isnan(v) else round(float(v), 6)) for name, v in zip(taxonomy.nodes, values.tolist())}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each row's line in the methods x backbones tables: its variant (see :func:`results_markdown`), and
    where several rows share variant and backbone, its run name and seed as well, so each has its own line.

    Examples:
        >>> rows = [{"method": "flat", "backbone": "b", "name": "flat-b", "seed": 0},
        ...         {"method": "flat", "backbone": "b", "name": "flat-b-2", "seed": 1},
        ...         {"method": "hierarchical", "backbone": "b"}]
        >>> _table_labels(rows)
        ['flat [flat-b, seed 0]', 'flat [flat-b-2, seed 1]', 'hierarchical']
        >>> _table_labels([{"method": m, "backbone": b} for m in ("flat", "hierarchical") for b in ("r18", "vit")])
        ['flat', 'flat', 'hierarchical', 'hierarchical']
    """
    from examples.leukemia.models import row_variant

    keys = [(row_variant(r), r["backbone"]) for r in rows]
    labels = []
    for i, (r, key) in enumerate(zip(rows, keys)):
        if keys.count(key) == 1:
            labels.append(str(key[0]))
            continue
        tag = str(r.get("name") or f"run {i + 1}") + ("" if r.get("seed") is None else f", seed {r['seed']}")
        labels.append(f"{key[0]} [{tag}]")
    # two rows of one variant, backbone, name and seed (rows that name no run): told apart by position; one
    # label on several backbones is one line of the table (it numbered the paper's methods x backbones rows)
    cells = list(zip(labels, (k[1] for k in keys)))
    return [f"{lab} #{i + 1}" if cells.count(cell) > 1 else lab for i, (lab, cell) in enumerate(zip(labels, cells))]


def results_markdown(rows: Sequence[Mapping[str, Any]], *, title: str = "Results", note: str = "") -> str:
    """Markdown tables: headline metrics as methods x backbones, then one detailed row per run.

    Each row needs ``method``, ``backbone`` and ``metrics`` (from :func:`evaluation_metrics`); rows are
    grouped by ``variant`` where given (a method with another head or loss, see
    :func:`examples.leukemia.models.variant_name`), else by ``method``. Rows that share variant and
    backbone (two seeds, two recipes) each get their own line, labelled with their ``name`` and ``seed``
    (see :func:`_table_labels`), and a line under the tables says so. The detailed rows start with
    ``name`` and ``seed`` ("—" where a row lacks them). Optional ``train_seconds``, ``img_per_s``,
    ``img_per_s_after_first_epoch`` (the column to compare methods by: the first epoch of a process pays
    one-time start-up), ``decode``, ``tta`` (shown with the decoder unless ``"none"``).
    """
    lines = [f"## {title}", ""]
    if note:
        lines += [note, ""]

    from examples.leukemia.models import row_variant as label

    row_labels = _table_labels(rows)
    methods = list(dict.fromkeys(row_labels))
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    cell = {(lab, r["backbone"]): r for lab, r in zip(row_labels, rows)}
    for key, header in HEADLINE.items():
        if not any(key in r["metrics"] for r in rows):
            continue
        lines += [f"**{header}**", "", "| method | " + " | ".join(backbones) + " |", "|---|" + "---|" * len(backbones)]
        for m in methods:
            vals = [_fmt(cell[(m, b)]["metrics"].get(key)) if (m, b) in cell else "" for b in backbones]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
        lines.append("")
    if len(rows) > len({(label(r), r["backbone"]) for r in rows}):  # two runs of one variant on one backbone
        seeds: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            seeds.setdefault((label(r), r["backbone"]), []).append(r.get("seed"))
        # two seeds of one recipe can be pooled; two runs of one seed differ in something else (a size, a recipe)
        pool = all(len(set(v)) == len(v) and None not in v for v in seeds.values() if len(v) > 1)
        lines += [
            "Several runs share a method and backbone: each has its own line, by run name and seed."
            + (
                " To pool seeds (mean ± sd), evaluate each seed's checkpoints into its own --out and pass their "
                "results.json to python -m examples.leukemia.aggregate."
                if pool
                else " Some share a seed too: they differ in another setting (see results.json: image_size, "
                "epochs, checkpoint)."
            ),
            "",
        ]
    depths = sorted({int(k.split("/")[1]) for r in rows for k in r["metrics"] if k.startswith("level_accuracy/")})
    cols = [*HEADLINE, "hierarchical_precision", "hierarchical_recall", "accuracy"]
    cols = [c for c in cols if any(c in r["metrics"] for r in rows)]
    head = [
        "run",
        "seed",
        "method",
        "backbone",
        "decode",
        *(HEADLINE.get(c, c.replace("_", " ")) for c in cols),
        *(f"acc@depth {d}" for d in depths),
        "train s",
        "img/s",
        "img/s after epoch 1",
        "n",
    ]
    lines += ["**All numbers**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        vals = [
            _fmt(r.get("name")),
            _fmt(r.get("seed")),
            label(r),
            r["backbone"],
            r.get("decode", "") + (f", {r['tta']} TTA" if r.get("tta", "none") != "none" else ""),
            *(_fmt(m.get(c)) for c in cols),
            *(_fmt(m.get(f"level_accuracy/{d}")) for d in depths),
            _fmt(r.get("train_seconds"), 1),
            _fmt(r.get("img_per_s"), 0),
            _fmt(r.get("img_per_s_after_first_epoch"), 0),
            _fmt(m.get("n")),
        ]
        lines.append("| " + " | ".join(vals) + " |")
    lines.append("")
    return "\n".join(lines)


def save_figures(
    y_true: Any,
    y_pred: Any,
    taxonomy: Taxonomy,
    prefix: str | os.PathLike[str],
    *,
    title: str = "",
    recall: Mapping[str, float | None] | None = None,
) -> list[Path]:
    """Per-level confusion matrices and the taxonomy coloured by per-node recall, as two PNGs.

    ``recall``: the :func:`node_recalls` of the same predictions, when the caller has them already
    (else they are computed here).

    Returns:
        the paths written: ``<prefix>_confusion.png``, ``<prefix>_taxonomy_recall.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hiercls.plot import plot_level_confusion_matrices, plot_taxonomy

    t, p = _np(y_true), _np(y_pred)
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    fig = plot_level_confusion_matrices(t, p, taxonomy)
    if title:
        fig.suptitle(f"{title}: confusion per level", y=1.06)
    path = prefix.with_name(prefix.name + "_confusion.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)
    if recall is None:
        values = node_recall(t, p, taxonomy)
    else:
        values = np.array([math.nan if recall.get(n) is None else recall[n] for n in taxonomy.nodes], dtype=float)
    fig = plot_taxonomy(
        taxonomy,
        values=values,
        value_label="recall",
        vmin=0.0,
        vmax=1.0,
        title=f"{title}: recall per node" if title else "recall per node",
        label_up_to=60 if taxonomy.num_nodes <= 60 else 0,  # names of a larger tree: no flag here to ask for them
    )
    path = prefix.with_name(prefix.name + "_taxonomy_recall.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)
    return written


def remove_previous_figures(out: Path) -> list[Path]:
    """Remove the figures that an earlier ``evaluate`` into ``out`` listed in its ``results.json``.

    A rerun with other checkpoints (or without ``--figures``) left the earlier run's figures beside
    its own ``results.md``, which no longer listed them: figures of runs it did not score. Only PNG files
    straight in ``out`` that the earlier ``results.json`` names (by their name) are removed.

    Returns:
        the files removed.

    Examples:
        >>> import json, tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> (out / "old_confusion.png").write_bytes(b"png")
        3
        >>> _ = (out / "results.json").write_text(json.dumps({"rows": [{"figures": [str(out / "old_confusion.png")]}]}))
        >>> [p.name for p in remove_previous_figures(out)], (out / "old_confusion.png").exists()
        (['old_confusion.png'], False)
    """
    try:
        earlier = json.loads((out / "results.json").read_text(encoding="utf-8"))
        names = [Path(f).name for row in earlier.get("rows", []) for f in row.get("figures", [])]
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
        return []
    removed = remove_listed_pngs(out, names)
    if removed:
        log.info("removed the %d figure(s) of the earlier evaluate in %s", len(removed), out)
    return removed


def load_split(
    config: Mapping[str, Any],
    taxonomy: Taxonomy,
    split: str,
    *,
    checkpoint_dir: Path,
    pack: str | None = None,
    data: str | None = None,
    layout: str = "auto",
    split_seed: int | None = None,
    image_size: int | None = None,
    device: torch.device | str = "cpu",
    workers: int | None = None,
) -> tuple[Tensor, Tensor, list[str]]:
    """uint8 images ``(N, 3, H, W)``, int64 targets ``(N,)`` and names of one split.

    Source, in order: ``pack``; ``data`` (scanned and split with ``split_seed``); the checkpoint's own
    pack (``config["pack"]``); its split manifest ``splits.csv``. ``split="external"`` takes every image
    of ``pack`` or ``data`` (images that are not the run's: no split; a warning when some have the names
    of its training images).

    A split that holds any of the run's training images is refused (:class:`RunImages` finds them, by
    path or by name in the run's dataset, in a pack, a copy of its folder, or a moved run folder).

    Raises:
        FileNotFoundError: no source found.
        ValueError: the split is empty.
    """
    from examples.leukemia import data as data_mod
    from examples.leukemia.train import _decode_all

    size = int(image_size or config.get("image_size") or 128)
    pack = pack or (
        config.get("pack") if data is None and config.get("pack") and Path(config["pack"]).is_file() else None
    )
    manifest = checkpoint_dir / "splits.csv"
    run = RunImages(manifest, config) if manifest.is_file() else None
    at = None  # how the source's names align with the run's (RunImages.align); None: none coincides
    here = os.path.abspath(checkpoint_dir)
    if pack:
        from examples.leukemia.pack import load_pack

        pk = load_pack(pack, device, workers, taxonomy=taxonomy)
        want_crop, got_crop = float(config.get("crop", 1.0)), float(pk.meta.get("crop", 1.0))
        if got_crop != want_crop:
            raise ValueError(
                f"pack: {pack} was cut with crop {got_crop:g} but the checkpoint was trained on crop {want_crop:g}; "
                f"evaluate on a pack made with --crop {want_crop:g} (or on --data, which reads images the "
                "checkpoint's way)."
            )
        if image_size is None and config.get("image_size") and pk.size != int(config["image_size"]):
            raise ValueError(
                f"pack: {pack} holds {pk.size} px images but the checkpoint was trained at {config['image_size']} px; "
                f"evaluate on a pack made with --size {config['image_size']} (or on --data)."
            )
        idx = np.arange(len(pk.names)) if split == EXTERNAL else np.flatnonzero(pk.split == split)
        t_idx = torch.from_numpy(idx).to(pk.images.device)
        images, targets, names = pk.images[t_idx], pk.targets[t_idx], [pk.names[i] for i in idx]
        # pack names: relative to the folder it was packed from (as the run's manifest lists a pack run's)
        parts = [_parts(os.path.join(here, n), here) for n in pk.names]
        at = run.align(parts)[0] if run is not None else None
        paths = [os.path.abspath(os.path.join(here, n)) for n in names]
        name_parts: list[tuple[str, ...]] | None = [parts[i] for i in idx]
    else:
        if data is not None:
            samples, report = data_mod.scan(
                data, taxonomy, layout=layout, workers=workers, taxonomy_owner=f"the checkpoint {checkpoint_dir}"
            )
            by_path = _names_in(samples, report.base)
            if run is not None:
                at, runs_images = run.align(list(by_path.values()))
            else:  # no manifest to compare with: the run's own data folder only
                runs_images = bool(config.get("data")) and Path(data).resolve() == Path(config["data"]).resolve()
            if split == EXTERNAL:
                items = samples
            else:
                seed = _data_split_seed(config, split_seed)
                items = _split_like_the_run(samples, config, split, seed, runs_images=runs_images, report=report)
            name_parts = [by_path[s.path] for s in items]
        else:
            if split == EXTERNAL:
                raise ValueError("--external: expected the images to score, --data or --pack; got neither.")
            if config.get("pack"):  # its manifest lists paths inside the pack, not files on disk
                raise FileNotFoundError(
                    f"the checkpoint was trained on the pack {config['pack']}, which is not there any more: "
                    "pass --pack PATH (the same pack, moved) or --data PATH (the images it was packed from)."
                )
            if not manifest.is_file():
                raise FileNotFoundError(
                    f"no data to evaluate on: pass --pack or --data (no {manifest} next to the checkpoint)."
                )
            items = data_mod.read_manifest(manifest, taxonomy).get(split, [])
            items, rescanned = _moved_run_items(items, manifest, config, taxonomy, split, workers)
            name_parts = None  # the run's own split: matched by path
            if rescanned is not None and run is not None:  # its data scanned again: it may have changed since
                by_path = _names_in(*rescanned)
                at = run.align(list(by_path.values()))[0]
                name_parts = [by_path[s.path] for s in items]
        names = [s.path for s in items]
        paths = [os.path.abspath(n) for n in names]
        crop = float(config.get("crop", 1.0))
        images = _decode_all(names, size, workers or data_mod.default_workers(), crop).to(device)
        targets = torch.as_tensor(taxonomy.encode([s.label for s in items]), dtype=torch.int64).reshape(-1).to(device)
    if len(names) == 0:
        raise ValueError(f"split: no images in the {split!r} split.")
    if run is not None and split != "train":
        leaked = [names[i] for i in run.training(paths, name_parts, at)]
        if leaked and split == EXTERNAL:
            log.warning(
                "--external: %d of the %d images have the names of the run's training images (first: %s): if "
                "they are the run's own images, these scores are optimistic; evaluate without --external to "
                "score the run's own test split",
                len(leaked),
                len(names),
                ", ".join(leaked[:3]),
            )
        elif leaked:
            _refuse_training_images(leaked, len(names), split, manifest, config)
    return images, targets, names


class RunImages:
    """The images a run's ``splits.csv`` lists, found again in another source of images.

    A source may hold the run's images under other paths: a pack's names are relative to the folder it
    was packed from (``neutrophil/BNE_1.jpg``), a scanned folder's files lie wherever that folder is now
    (a copy, another machine, ``--data`` given one folder above), and a moved run folder resolves its
    manifest's relative paths to other places. So both sides are named by their paths relative to their
    dataset (the run's: its data folder, else the run folder; a source's: the pack's root or the scan's
    ``base``) and :meth:`align` finds how many leading parts to drop from each side's names for the two
    to coincide: the choice under which most images coincide. An image is then one of the run's when its
    path is one the manifest lists or its aligned name is one of the run's names (even when only a few
    coincide: a folder with copies of some training images among others is checked too). Whether the
    source is the run's dataset as a whole (at least half of the smaller side coincides) decides only
    whether a ``--limit`` draw is repeated on it.

    Names are compared, not pixels: another dataset whose names repeat the run's (``benign/001.png`` in
    both) cannot be told from the run's own, which is what ``evaluate --external`` is for.
    """

    def __init__(self, manifest: Path, config: Mapping[str, Any]) -> None:
        from examples.leukemia import data as data_mod

        self.manifest = manifest
        self.here = os.path.abspath(manifest.parent)
        listed = data_mod.read_manifest(manifest)
        # a pack run's manifest lists pack names (read_manifest resolved them against the run folder)
        root = os.path.abspath(config["data"]) if config.get("data") and not config.get("pack") else self.here
        self.train_paths = {s.path for s in listed.get("train", [])}
        self.names = [_parts(s.path, root) for samples in listed.values() for s in samples]
        self.train_names = [_parts(p, root) for p in self.train_paths]

    def align(self, source: Sequence[tuple[str, ...]]) -> tuple[tuple[int, int] | None, bool]:
        """``(at, same)``. ``at = (k_run, k_source)``: the leading parts to drop from the run's names and from
        ``source``'s for them to coincide (the fewest under which the most coincide), ``None`` when no name
        coincides under any choice. ``same``: whether ``source`` holds the run's dataset (at least half of
        the smaller side coincides), as opposed to another dataset that shares some names (or copies of
        some of the run's images).

        Examples:
            >>> run = RunImages.__new__(RunImages)
            >>> run.names = [("ALL", "a.png"), ("AML", "b.png")]
            >>> run.align([("imgs", "ALL", "a.png"), ("imgs", "AML", "b.png")]), run.align([("CLL", "c.png")])
            (((0, 1), True), (None, False))
        """
        # no cap: a moved run folder's names carry every part of the place its manifest now resolves to
        k_run = max(map(len, self.names), default=1)
        k_source = max(map(len, source), default=1)
        best, at, smaller = 0, None, 0
        for kr, ks in [(k, 0) for k in range(k_run)] + [(0, k) for k in range(1, k_source)]:
            a = {p[kr:] for p in self.names if len(p) > kr}
            b = {p[ks:] for p in source if len(p) > ks}
            found = len(a & b)
            if found > best:
                best, at, smaller = found, (kr, ks), min(len(a), len(b))
        return at, at is not None and 2 * best >= smaller

    def training(
        self, paths: Sequence[str], names: Sequence[tuple[str, ...]] | None, at: tuple[int, int] | None
    ) -> list[int]:
        """Positions of the images (absolute ``paths``, their ``names`` in their dataset) that are the run's
        training images: by path, and by aligned name when ``at`` (from :meth:`align`) is given."""
        trained = {p[at[0] :] for p in self.train_names if len(p) > at[0]} if at is not None else set()
        return [
            i
            for i, path in enumerate(paths)
            if path in self.train_paths or (at is not None and names is not None and names[i][at[1] :] in trained)
        ]


def _parts(path: str, root: str) -> tuple[str, ...]:
    """``path`` relative to ``root`` as a tuple of parts, ``..`` and the root left out.

    >>> _parts("/d/A/imgs/ALL/x.png", "/d/A"), _parts("/d/B/x.png", "/d/A")
    (('imgs', 'ALL', 'x.png'), ('B', 'x.png'))
    """
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        rel = path
    anchor = Path(rel).anchor
    return tuple(p for p in Path(rel).parts if p not in (os.curdir, os.pardir, anchor))


def _names_in(samples: Sequence[Any], base: str) -> dict[str, tuple[str, ...]]:
    """Each scanned sample's path -> its name in its dataset (its parts relative to the scan's ``base``)."""
    root = os.path.abspath(base)
    return {s.path: _parts(os.path.abspath(s.path), root) for s in samples}


def _refuse_training_images(
    leaked: Sequence[str], total: int, split: str, manifest: Path, config: Mapping[str, Any]
) -> None:
    if config.get("limit"):
        fix = (
            "the run trained with --limit, so only its own source repeats its split: the pack it trained on, or "
            "its data folder (or a copy) with the run's seed (the default)"
        )
    else:
        fix = (
            "the pack it trained on, a pack made again with the run's seed from the same images, or --data with "
            "those images and the run's seed (the default)"
        )
    raise ValueError(
        f"split: {len(leaked)} of the {total} images of the {split!r} split were in the run's training split "
        f"({manifest}), first: {', '.join(leaked[:3])}. These images are split otherwise than the run split them "
        "(a pack made again with another seed, a data folder changed since training, or --data split with "
        f"another --split-seed), so the scores would mean nothing. Evaluate on the run's own split: {fix}. If "
        "these are other images whose file names merely repeat the run's (another dataset's benign/001.png), "
        "score all of them with --external."
    )


def _data_split_seed(config: Mapping[str, Any], given: int | None) -> int:
    """The seed that splits ``--data`` as the run's images were split: ``given``, else the seed of the pack a
    pack-trained run learnt from (its config's ``pack_seed``), else the run's ``--split-seed``."""
    from examples.leukemia import data as data_mod

    if given is None and config.get("pack") and config.get("pack_seed") is not None:
        return int(config["pack_seed"])
    return data_mod.run_split_seed(config, given)


def _split_like_the_run(
    samples: list[Any],
    config: Mapping[str, Any],
    split: str,
    seed: int,
    *,
    runs_images: bool,
    report: Any,
) -> list[Any]:
    """One split of scanned images; when they are the run's (``runs_images``: its data folder, a copy, or
    the images it was packed from), after the draw of its ``--limit`` (without it the split would hold
    images the run trained on; the draw depends only on the images' order, the same in a copy), and with
    the scan ``report``'s byte-identical duplicates and groups (patients, slides) kept together when the
    run's split kept them (``--group-duplicates``, ``--split-by-group``)."""
    from examples.leukemia import data as data_mod

    if runs_images and config.get("limit") and config.get("data"):
        samples = data_mod.limit_samples(samples, int(config["limit"]), seed)
    parts = data_mod.split_images(
        samples,
        report,
        seed=seed,
        group_duplicates=run_groups_duplicates(config),
        split_by_group=run_splits_by_group(config),
        flag="the run's --split-by-group",
        fix="pass --data the folder the run was trained on (its groups are read from its folders or CSV), or "
        "--external to score every image with no split",
    )
    return parts[split]


def run_splits_by_group(config: Mapping[str, Any]) -> bool:
    """Whether the run's split kept each group (patient, slide) whole: ``--split-by-group`` of train, or of
    the pack it trained on (``pack_split_by_group``).

    Examples:
        >>> run_splits_by_group({"split_by_group": True}), run_splits_by_group({})
        (True, False)
    """
    from_pack = bool(config.get("pack")) and config.get("pack_seed") is not None
    return bool(config.get("pack_split_by_group" if from_pack else "split_by_group", False))


def run_groups_duplicates(config: Mapping[str, Any]) -> bool:
    """Whether the run's split kept byte-identical images together: ``--group-duplicates`` of train, or of
    the pack it trained on (``pack_group_duplicates``).

    Examples:
        >>> run_groups_duplicates({"group_duplicates": True}), run_groups_duplicates({})
        (True, False)
        >>> run_groups_duplicates({"pack": "/p.npz", "pack_seed": 1, "pack_group_duplicates": True})
        True
    """
    from_pack = bool(config.get("pack")) and config.get("pack_seed") is not None
    return bool(config.get("pack_group_duplicates" if from_pack else "group_duplicates", False))


def scored_split_grouping(
    config: Mapping[str, Any], images_of: str | None, split_seed: int | None, split: str
) -> dict[str, bool | None]:
    """How the split scored was drawn: ``group_duplicates`` (byte-identical copies kept together) and
    ``split_by_group`` (each patient's or slide's images in one split). For a data folder's split, as the
    run's was (:func:`run_groups_duplicates`, :func:`run_splits_by_group`); for a pack's, as its meta
    records (a pack of this example from before ``split_by_group`` was drawn image by image); ``None``
    when there is no split (``--external``) or nothing says (a pack in the peer tool's format).

    Examples:
        >>> scored_split_grouping({"group_duplicates": True}, "/d", 3, "test")
        {'group_duplicates': True, 'split_by_group': False}
        >>> scored_split_grouping({}, None, None, "external")
        {'group_duplicates': None, 'split_by_group': None}
    """
    if split == EXTERNAL:
        return {"group_duplicates": None, "split_by_group": None}
    if split_seed is not None:
        return {"group_duplicates": run_groups_duplicates(config), "split_by_group": run_splits_by_group(config)}
    if images_of and Path(images_of).is_file():
        from examples.leukemia.pack import read_pack_meta

        meta = read_pack_meta(images_of)
        if "group_duplicates" in meta:  # a pack of this example
            return {
                "group_duplicates": bool(meta["group_duplicates"]),
                "split_by_group": bool(meta.get("split_by_group", False)),
            }
    return {"group_duplicates": None, "split_by_group": None}


def _moved_run_items(
    items: list[Any], manifest: Path, config: Mapping[str, Any], taxonomy: Taxonomy, split: str, workers: int | None
) -> tuple[list[Any], tuple[list[Any], str] | None]:
    """The split's samples when ``splits.csv``'s paths no longer lead to the images: a moved run folder.

    The manifest keeps paths relative to the run folder. When none of them is found from where the folder
    is now, the run's own data folder (``config["data"]``, absolute) is scanned, drawn from as ``--limit``
    did, and split again with the run's seed: the same split, unless the folder changed since (which the
    training-image check then finds).

    Returns:
        ``(items, rescanned)``: ``rescanned`` is ``(every scanned sample, the scan's base)`` when the data
        was scanned again, else ``None``.

    Raises:
        FileNotFoundError: images listed are missing and the run's data cannot stand in for them.
    """
    from examples.leukemia import data as data_mod

    missing = [s.path for s in items if not os.path.isfile(s.path)]
    if not missing:
        return items, None
    origin = config.get("data")
    if len(missing) == len(items) and origin and Path(origin).exists():
        log.warning(
            "the images %s lists are not found from where it is now (a moved run folder?): scanning the run's "
            "data %s again and splitting it with the run's seed",
            manifest,
            origin,
        )
        samples, report = data_mod.scan(
            origin, taxonomy, layout=config.get("layout") or "auto", workers=workers, warn=False
        )
        seed = data_mod.run_split_seed(config)
        items = _split_like_the_run(samples, config, split, seed, runs_images=True, report=report)
        return items, (samples, report.base)
    raise FileNotFoundError(
        f"{len(missing)} of the {len(items)} images {manifest} lists for the {split!r} split are not found, first: "
        f"{missing[0]}. The manifest's paths are relative to the run folder, so moving the folder loses them: pass "
        "--data with the images the run trained on (they are scanned and split again with the run's seed)."
    )


def expand_checkpoints(paths: Sequence[str]) -> list[str]:
    """The checkpoints a command line names, with a pattern the shell left unexpanded expanded here.

    ``runs/*/best`` matches no file (a checkpoint is ``best.json`` plus its weights), so bash passes it on
    as it is; it is read as ``runs/*/best.json``, each match standing for its checkpoint. A path that
    exists, or holds no pattern, is kept as given.

    Raises:
        FileNotFoundError: a pattern that matches no checkpoint.

    Examples:
        >>> import tempfile
        >>> top = Path(tempfile.mkdtemp())
        >>> for run in ("flat", "hierarchical"):
        ...     (top / run).mkdir()
        ...     _ = (top / run / "best.json").write_text("{}")
        >>> [Path(p).relative_to(top).as_posix() for p in expand_checkpoints([f"{top}/*/best"])]
        ['flat/best', 'hierarchical/best']
    """
    import glob

    out: list[str] = []
    for path in paths:
        if Path(path).exists() or not glob.has_magic(path):
            out.append(path)
            continue
        found = sorted(glob.glob(path)) or [m.removesuffix(".json") for m in sorted(glob.glob(path + ".json"))]
        if not found:
            raise FileNotFoundError(
                f"checkpoints: the pattern {path!r} matches no checkpoint; expected e.g. runs/*/best.json or run "
                "folders (runs/*)."
            )
        out.extend(found)
    return out


def unique_checkpoints(paths: Sequence[Path]) -> list[Path]:
    """Each checkpoint once, at its first place: ``RUN``, ``RUN/best`` and ``RUN/best.json`` (or a pattern
    that matches a checkpoint named on its own too) are one checkpoint, which would be scored twice.

    Examples:
        >>> [str(p) for p in unique_checkpoints([Path("r/best"), Path("r/best.json"), Path("s/best")])]
        ['r/best', 's/best']
    """
    seen: set[str] = set()
    out: list[Path] = []
    for path in paths:
        key = os.path.realpath(str(path).removesuffix(".json"))
        if key not in seen:
            seen.add(key)
            out.append(path)
    if len(out) < len(paths):
        log.warning("%d checkpoint(s) were named more than once; each is scored once", len(paths) - len(out))
    return out


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint a command line names: ``run/best``, ``run/best.json``, or a run folder (its ``best``).

    Raises:
        FileNotFoundError: a folder without ``best.json``.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if not (path / "best.json").is_file():
        fix = f"pass {path / 'last'} (its last checkpoint)" if (path / "last.json").is_file() else "pass RUN/best"
        raise FileNotFoundError(
            f"checkpoint: expected a checkpoint (RUN/best, RUN/best.json) or a run folder holding best.json, got the "
            f"folder {str(path)!r}, which has no best.json; {fix}."
        )
    return path / "best"


def checkpoint_decoding(
    config: Mapping[str, Any], decode: str | None = None, threshold: float | None = None, *, warn_unused: bool = True
) -> tuple[str, float]:
    """The decoding rule and threshold to read a checkpoint out with.

    Each comes from the command line when given, else from the checkpoint's run (its ``--decode``, or
    for a config without one its method's default rule, and its ``--threshold``), else ``argmax_leaf``
    and 0.5. ``decode="auto"`` means what it means to ``train``: the method's default rule
    (``config["model"]["decode"]``), whatever rule the run validated with. With ``warn_unused``, a ``threshold`` given for a rule other than ``threshold`` is logged
    as having no effect (as :func:`hiercls.decoding.decode` would warn).

    Args:
        config: the checkpoint's ``config``.
        decode: the rule given on the command line (``None``: not given).
        threshold: the threshold given on the command line (``None``: not given).
        warn_unused: log a warning when ``threshold`` is given but the rule does not read it.

    Returns:
        ``(rule, threshold)``; pass the threshold to ``decode`` only for the ``threshold`` rule.

    Examples:
        >>> checkpoint_decoding({"decode": "threshold", "threshold": 0.2})
        ('threshold', 0.2)
        >>> checkpoint_decoding({"decode": "top_down"}, threshold=0.8, warn_unused=False)
        ('top_down', 0.8)
        >>> checkpoint_decoding({"decode": "crm", "model": {"decode": "top_down"}}, "auto")
        ('top_down', 0.5)
    """
    method_rule = config.get("model", {}).get("decode")
    if decode == "auto":
        decode = method_rule or "argmax_leaf"
    rule = decode or config.get("decode") or method_rule or "argmax_leaf"
    if warn_unused and threshold is not None and rule != "threshold":
        log.warning("--threshold %g has no effect: the decoding rule is %r; add --decode threshold", threshold, rule)
    return rule, float(threshold if threshold is not None else config.get("threshold", 0.5))


def _base_name(config: Mapping[str, Any]) -> str:
    from examples.leukemia.models import variant_name

    model = config.get("model", {})
    method, head = model.get("method", "model"), model.get("head")
    own = variant_name(method, head) == method  # no head, or the method's own
    return f"{method}-{model.get('backbone', 'x')}" if own else f"{method}-{head}-{model.get('backbone', 'x')}"


def run_name(config: Mapping[str, Any], taken: set[str], folder: str | None = None) -> str:
    """``<method>-<backbone>``, or ``<method>-<head>-<backbone>`` for a head other than the method's own (as
    ``compare`` names its run folders), with a suffix when already taken.

    ``folder``: the run's folder name (blanks and other signs as ``_``), added (``flat-resnet10t-a64``)
    when several checkpoints share the name: two runs of one recipe at two image sizes were ``flat-resnet10t`` and ``flat-resnet10t-2``.
    A folder named as the run (``compare``'s) adds nothing.

    Examples:
        >>> cfg = {"model": {"method": "flat", "backbone": "resnet10t"}}
        >>> taken = set()
        >>> run_name(cfg, taken, "a64"), run_name(cfg, taken, "flat-resnet10t"), run_name(cfg, taken)
        ('flat-resnet10t-a64', 'flat-resnet10t', 'flat-resnet10t-2')
        >>> run_name(cfg, taken, "my run/ü")
        'flat-resnet10t-my_run_ü'
    """
    base = _base_name(config)
    if folder and folder != base:
        base = f"{base}-{_safe_name(folder)}"  # a file-name prefix: no blanks, no slashes
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name


def _shared_names(checkpoints: Sequence[Path]) -> set[str]:
    """Run names (:func:`run_name` without a suffix) that more than one of ``checkpoints`` would get, read
    from their sidecars; a checkpoint whose sidecar cannot be read counts for nothing here."""
    from collections import Counter

    from examples.leukemia.checkpoint import checkpoint_paths

    bases = Counter()
    for path in checkpoints:
        try:
            sidecar = json.loads(checkpoint_paths(path)[2].read_text(encoding="utf-8"))
            bases[_base_name(sidecar["config"])] += 1
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return {b for b, n in bases.items() if n > 1}


#: what ``--decode`` accepts: train's rules (``auto``: the method's default rule, as in train)
DECODE_CHOICES = ("auto", *RULE_OPTIONS)


def decode_rule(text: str) -> str:
    """argparse type of ``--decode``: a rule :func:`hiercls.decoding.decode` knows, or ``auto``.

    Checked when the command line is read, before any checkpoint or image is loaded.

    Examples:
        >>> decode_rule("crm")
        'crm'
    """
    if text in DECODE_CHOICES:
        return text
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(DECODE_CHOICES)}, got {text!r}; e.g. --decode top_down, or leave --decode "
        "out to read each checkpoint with its own rule"
    )


def check_one_taxonomy(paths: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse checkpoints of different taxonomies before any of them is loaded: one table, one set of classes.

    Read from each checkpoint's sidecar (its ``taxonomy_fingerprint``); a checkpoint whose sidecar cannot
    be read is left to :func:`examples.leukemia.checkpoint.load_model` to report.

    Raises:
        ValueError: two or more taxonomies; the message lists each with its checkpoints.
    """
    from examples.leukemia.checkpoint import checkpoint_paths

    groups: dict[str, list[str]] = {}
    names: dict[str, tuple[str, str]] = {}  # fingerprint -> (how the message names it, a folder name for it)
    for path in paths:
        try:
            sidecar = json.loads(checkpoint_paths(path)[2].read_text(encoding="utf-8"))
            fingerprint = str(sidecar["taxonomy_fingerprint"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        groups.setdefault(fingerprint, []).append(str(path))
        if fingerprint not in names:
            names[fingerprint] = _taxonomy_label(sidecar)
    if len(groups) < 2:
        return
    listed = "; ".join(f"{names[f][0]} (fingerprint {f[:12]}): {', '.join(g)}" for f, g in groups.items())
    first = next(iter(groups))
    raise ValueError(
        f"checkpoints: expected checkpoints of one taxonomy (one table compares runs on the same classes), got "
        f"{len(groups)}: {listed}. Evaluate each taxonomy's checkpoints in its own call with its own --out, e.g. "
        f"python -m examples.leukemia.evaluate {' '.join(groups[first])} --out eval/{names[first][1]}"
    )


def _bundled_fingerprints() -> dict[str, str]:
    """Fingerprint -> name of the example's bundled taxonomies (``paper``, ``pbc``, ``all4``)."""
    from examples.leukemia.data import BUNDLED_TAXONOMIES, load_taxonomy

    return {load_taxonomy(name).fingerprint: name for name in BUNDLED_TAXONOMIES}


def _taxonomy_label(sidecar: Mapping[str, Any]) -> tuple[str, str]:
    """How a checkpoint's taxonomy is named in messages, and a folder name for it: the ``--taxonomy`` its
    run was given (``'pbc'``, ``tree.json``), else the bundled taxonomy it is (one implied by the data's
    layout), else its root and size.

    Examples:
        >>> _taxonomy_label({"config": {"taxonomy": "pbc"}})
        ("taxonomy 'pbc'", 'pbc')
        >>> _taxonomy_label({"config": {}, "taxonomy": {"nodes": ["cell", "a", "b"]}})
        ("the taxonomy of root 'cell' (3 nodes)", 'cell')
        >>> from examples.leukemia.data import load_taxonomy
        >>> _taxonomy_label({"config": {}, "taxonomy_fingerprint": load_taxonomy("all4").fingerprint})
        ("taxonomy 'all4'", 'all4')
    """
    given = (sidecar.get("config") or {}).get("taxonomy")
    if given:
        return f"taxonomy {str(given)!r}", _safe_name(Path(str(given)).stem)
    bundled = _bundled_fingerprints().get(str(sidecar.get("taxonomy_fingerprint")))
    if bundled:  # implied by the data's layout (ALL's Original/ -> all4): named as --taxonomy would name it
        return f"taxonomy {bundled!r}", bundled
    nodes = (sidecar.get("taxonomy") or {}).get("nodes") if isinstance(sidecar.get("taxonomy"), dict) else None
    if isinstance(nodes, list) and nodes:
        return f"the taxonomy of root {str(nodes[0])!r} ({len(nodes)} nodes)", _safe_name(str(nodes[0]))
    return "a taxonomy of no name", "taxonomy"


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text) or "taxonomy"


def scored_on(
    config: Mapping[str, Any],
    *,
    pack: str | None = None,
    data: str | None = None,
    split_seed: int | None = None,
    external: bool = False,
) -> tuple[str | None, int | None]:
    """``(images, split seed)`` that :func:`load_split` scores a checkpoint on, as results.json records them.

    The images: the ``pack`` or ``data`` given (absolute), else the run's own pack or data folder (as its
    config stores it: absolute; ``None`` for generated SYNTHETIC images). The split seed: that of a data
    folder's split (``None`` for a pack, which holds its own split, and with ``external``: no split).
    ``aggregate`` refuses to pool files scored on other images or another split.

    Examples:
        >>> scored_on({"data": "/d", "split_seed": 3})
        ('/d', 3)
        >>> scored_on({"data": "/d", "split_seed": 3}, pack="/p.npz")
        ('/p.npz', None)
        >>> scored_on({"pack": "/gone.npz", "pack_seed": 5, "split_seed": 3}, data="/d")
        ('/d', 5)
    """
    from examples.leukemia import data as data_mod

    if pack:
        return str(Path(pack).resolve()), None
    if data is None and config.get("pack") and Path(config["pack"]).is_file():
        return str(config["pack"]), None
    if data is not None:
        return str(Path(data).resolve()), None if external else _data_split_seed(config, split_seed)
    return config.get("data"), data_mod.run_split_seed(config)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m examples.leukemia.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoints (run/best, run/best.json, or a run folder)")
    p.add_argument("--pack", default=None, help="evaluate on this pack's split")
    p.add_argument("--data", default=None, help="evaluate on this dataset (scanned and split as in training)")
    p.add_argument(
        "--layout",
        default="auto",
        choices=("auto", "folder", "csv", "pbc", "all4"),
        help="how labels are read from --data (as in train: auto, folder, csv, pbc, all4)",
    )
    p.add_argument(
        "--split", default=None, choices=("train", "val", "test"), help="the split to evaluate (default: test)"
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the split of --data (default: the run's; for a run trained on a pack, the pack's)",
    )
    p.add_argument(
        "--external",
        action="store_true",
        help="the --data or --pack images are not the run's (another lab's, another scanner): score every one "
        "of them, with no split and no check against the run's training images",
    )
    p.add_argument(
        "--decode",
        type=decode_rule,
        default=None,
        metavar="RULE",
        help=f"decoding rule: {', '.join(DECODE_CHOICES)} (auto: the method's default, as in train; default: each "
        "checkpoint's own)",
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="threshold of the 'threshold' rule (default: the checkpoint's, else 0.5)",
    )
    add_tta_argument(p, note="default: the checkpoint's (train --tta)")
    p.add_argument("--batch-size", type=whole_number(1), default=256, help="images per inference batch")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1... (default: cuda when there is one)")
    p.add_argument(
        "--workers",
        type=whole_number(1, "e.g. --workers 4"),
        default=None,
        help="image decoding workers (default: the usable CPU cores, at most 16)",
    )
    p.add_argument("--out", "--output", type=output_folder, default="eval", help="output folder (made when missing)")
    p.add_argument(
        "--no-figures", dest="figures", action="store_false", help="skip the confusion matrices and recall trees"
    )
    return p


@exits_cleanly
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m examples.leukemia.evaluate``; returns what ``results.json`` holds."""
    from examples.leukemia import train as T
    from examples.leukemia.checkpoint import load_model
    from examples.leukemia.models import variant_name
    from examples.leukemia.train import predict

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is not None and args.pack is not None:
        parser.error("--data and --pack: expected one source of images, got both; pass one of them")
    if args.external:
        if args.data is None and args.pack is None:
            parser.error("--external: expected the images to score, --data PATH or --pack PATH; got neither")
        if args.split is not None or args.split_seed is not None:
            given = "--split" if args.split is not None else "--split-seed"
            parser.error(f"{given} with --external: every image is scored, there is no split; drop {given}")
        args.split = EXTERNAL
    args.split = args.split or "test"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoints = unique_checkpoints([resolve_checkpoint(c) for c in expand_checkpoints(args.checkpoints)])
    check_one_taxonomy(checkpoints)  # before any model, image or output folder
    if args.split == "train":
        log.warning(
            "--split train: the models learnt from these images, so their scores are optimistic (a check of fit, "
            "not of quality); --split test scores images no model has seen"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_previous_figures(out)
    rows, taken, synthetic = [], set(), False
    shared = _shared_names(checkpoints)  # names several runs would get: told apart by their run folders
    for ckpt_path in checkpoints:
        model, ckpt = load_model(ckpt_path, device=device)
        tax = ckpt.taxonomy
        images, targets, scored_names = load_split(
            ckpt.config,
            tax,
            args.split,
            checkpoint_dir=ckpt.path.parent,
            pack=args.pack,
            data=args.data,
            layout=args.layout,
            split_seed=args.split_seed,
            device=device,
            workers=args.workers,
        )
        tta = args.tta or str(ckpt.config.get("tta", "none"))
        probs = predict(
            model,
            images,
            batch_size=args.batch_size,
            device=device,
            amp=True,
            channels_last=device.type == "cuda",
            tta=tta,
        )
        rule, threshold = checkpoint_decoding(ckpt.config, args.decode, args.threshold)
        preds = decode(probs, tax, rule, threshold=threshold if rule == "threshold" else None)
        metrics = evaluation_metrics(targets, preds, tax)
        recalls = node_recalls(targets, preds, tax)
        name = run_name(ckpt.config, taken, ckpt.path.parent.name if _base_name(ckpt.config) in shared else None)
        synthetic |= bool(ckpt.config.get("synthetic"))
        figures = []
        if args.figures:
            title = f"{name} ({args.split})" + (" [SYNTHETIC]" if ckpt.config.get("synthetic") else "")
            figures = [str(p) for p in save_figures(targets, preds, tax, out / name, title=title, recall=recalls)]
        model_cfg = ckpt.config.get("model", {})
        images_of, split_seed = scored_on(
            ckpt.config, pack=args.pack, data=args.data, split_seed=args.split_seed, external=args.external
        )
        rows.append(
            {
                "name": name,
                "checkpoint": str(ckpt.path),
                "method": model_cfg.get("method"),
                "variant": variant_name(model_cfg.get("method"), model_cfg.get("head"), model_cfg.get("loss")),
                "backbone": model_cfg.get("backbone"),
                "decode": rule,
                "threshold": threshold if rule == "threshold" else None,
                "tta": tta,
                "balance": float(ckpt.config.get("balance", 0.0)),
                "split": args.split,
                "seed": ckpt.config.get("seed"),
                "epoch": ckpt.epoch,
                # what aggregate checks to be the same in every file it pools (with split, decode, tta)
                "data": images_of,
                "split_seed": split_seed,
                # a split is drawn with or without byte-identical copies kept together (a data folder's as
                # the run's was, a pack's when it was packed)
                **scored_split_grouping(ckpt.config, images_of, split_seed, args.split),
                # which images, with their targets: a pack made again at the same path, or a data folder
                # changed since, is other images under the same name
                "scored_id": T.names_identity({args.split: (scored_names, targets.tolist())}),
                "taxonomy": tax.fingerprint,
                "image_size": int(images.shape[-1]),
                "crop": float(ckpt.config.get("crop", 1.0)),
                "epochs": ckpt.config.get("epochs"),
                "batch_size": ckpt.config.get("batch_size"),
                "metrics": metrics,
                "node_recall": recalls,
                "synthetic": bool(ckpt.config.get("synthetic")),
                "figures": figures,
            }
        )
        own_split = not args.external and args.pack is None and args.data is None and args.split_seed is None
        recorded = ckpt.config.get("init_leaks")
        leaked = int(recorded.get(args.split, 0)) if own_split and isinstance(recorded, dict) else 0
        if leaked:  # found by train (train.init_leaks): the run started from weights that saw these images
            rows[-1]["init_leaks"] = leaked
            log.warning(
                "%s: %d of its %s images were training images of the run its --init-checkpoint came from (%s): "
                "its scores can come from memory",
                name,
                leaked,
                args.split,
                ckpt.config.get("init_checkpoint"),
            )
        log.info("%s: %s", name, {k: round(v, 4) for k, v in metrics.items() if k in HEADLINE or k == "accuracy"})
    note = f"Split: {args.split}."
    for row in rows:
        if row.get("init_leaks"):
            note += (
                f" **{row['name']}: {row['init_leaks']} of these images were training images of the run its "
                "--init-checkpoint came from: its scores can come from memory.**"
            )
    if synthetic:
        note += " **SYNTHETIC images: these numbers say nothing about real cells.**"
    result: dict[str, Any] = {"split": args.split, "synthetic": synthetic, "rows": rows}
    seeds = {r["seed"] for r in rows}
    if len(seeds) == 1 and None not in seeds:  # one training seed: examples.leukemia.aggregate can pool it
        result["seed"] = seeds.pop()
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "results.md").write_text(results_markdown(rows, title="Evaluation", note=note))
    print(results_markdown(rows, title="Evaluation", note=note))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
