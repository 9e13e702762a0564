"""Images of the leukemia example: scan, check, split, load.

One scan step turns a dataset on disk into ``(path, node name)`` pairs, checking
every file once so that nothing can fail after training has started; then a
deterministic stratified split, a manifest that records it, and a torch
``Dataset``. Four layouts are read:

- ``folder``: class folders named after taxonomy nodes, nested like the
  taxonomy or at any depth. A file's label is the deepest folder on its path
  (below ``root``) that is a node; other folders (``train/``, a patient id...)
  are containers. Images directly inside an inner node's folder are partial
  labels. Node folders on one path must be ancestor and descendant
  (``Leukemia/Normal/`` is not): other images are left out and reported.
- ``csv``: a manifest with columns ``path,label`` (more columns are ignored);
  paths are relative to the CSV's folder; a label may be any node.
- ``pbc``: the published PBC layout (Acevedo et al. 2020),
  ``PBC_dataset_normal_DIB/<class>/<PREFIX>_<id>.jpg``; the file-name prefix
  gives the fine node (``BNE`` -> ``band_neutrophil``...), prefixes ``IG`` and
  ``NEUTROPHIL`` label the inner nodes ``immature_granulocyte`` and
  ``neutrophil``. Node names: ``taxonomies/README.md``. Other subfolders
  (notes, extras) are not read and are named in the report.
- ``all4``: the ALL image set (Aria et al. 2021), ``Original/{Benign,Early,Pre,Pro}``.

With ``pbc`` and ``all4``, image files under ``root`` but outside the dataset's
folder are named as not read; a root that holds both datasets is refused.

Bad input is found by :func:`scan` and reported once per reason (count and
first paths): files that are not images, truncated or unreadable images (each
image is decoded, in parallel), broken symbolic links, names that are not valid
UTF-8, files with no image extension (none at all included), images that are
not RGB (kept and converted when loaded), empty folders, classes left with no
image. Labels that are not
taxonomy nodes and an empty dataset are errors that say how to fix them.

Groups (a patient, a slide): the outermost folder on an image's path that is
neither a taxonomy node nor a class folder of the layout nor a wrapper that
every image shares (``neutrophil/patient07/x.jpg`` and
``patient07/slide1/neutrophil/y.jpg`` are both in group ``patient07``; case
does not count), or the CSV columns of :data:`GROUP_COLUMNS` (merged). :func:`split_images` with
``split_by_group=True`` keeps each group in one split, so no patient is in both
train and test; the default split is image by image.
"""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import heapq
import io
import math
import os
import sys
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from hiercls import Taxonomy, UnknownNodeError

__all__ = [
    "ALL4_CLASS_NODE",
    "BUNDLED_TAXONOMIES",
    "DEFAULT_SEED",
    "GROUP_COLUMNS",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "PBC_CLASSES",
    "PBC_CLASS_NODE",
    "PBC_CLASS_OF_NODE",
    "PBC_PREFIX_NODE",
    "SPLITS",
    "TAXONOMY_DIR",
    "DataWarning",
    "ImageDataset",
    "Layout",
    "Sample",
    "ScanReport",
    "default_workers",
    "detect_layout",
    "group_counts",
    "group_shares",
    "group_split_warnings",
    "groups_across_splits",
    "limit_samples",
    "load_image",
    "load_taxonomy",
    "parallel_map",
    "pbc_class_table",
    "pbc_eight_class",
    "read_manifest",
    "relative_names",
    "run_split_seed",
    "scan",
    "split",
    "split_images",
    "write_manifest",
]

Layout = Literal["auto", "folder", "csv", "pbc", "all4"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
TaxonomyLike = Union[Taxonomy, str, "os.PathLike[str]"]

TAXONOMY_DIR = Path(__file__).resolve().parent / "taxonomies"
"""Folder of the bundled taxonomies ``paper.json``, ``pbc.json``, ``all4.json``."""
BUNDLED_TAXONOMIES: tuple[str, ...] = ("paper", "pbc", "all4")

DEFAULT_SEED = 20261126
"""Seed of the split: the same as the peer baseline's (``tools/flat_baseline_gpu_data.py``)."""
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
#: the note under which :func:`scan` lists files it did not read because of their names
IGNORED_NOTE = "ignored: file name does not end in an image extension"
#: folder names and CSV columns that hold a split of the user's own, which scan does not keep
SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "dev", "test", "testing", "holdout"})
SPLIT_COLUMNS = frozenset({"split", "subset", "partition", "fold", "set"})
OWN_SPLIT_NOTE = (
    "{where}, which is not kept: train draws its own stratified split (--split-seed), image by image unless "
    "--split-by-group keeps each patient's or slide's folder in one split, so an image of your test part can be "
    "trained on. To keep your split, train on your training part alone (--data on its folder or CSV) and score your test part "
    "with python -m examples.leukemia.evaluate RUN --data TEST --external"
)
#: CSV columns read as an image's group (a patient, a slide...): the first of them in the header
GROUP_COLUMNS: tuple[str, ...] = ("group", "patient", "patient_id", "slide", "slide_id", "subject", "donor")
EMPTY_LABEL_REASON = "empty label in the CSV (no other row labels the image)"
EMPTY_LABEL_ALSO_NOTE = "rows with an empty label in the CSV, ignored: another row labels the same image"
UNKNOWN_FOLDER_NOTE = "in a folder that is not a taxonomy node, below an inner node: labelled at that node"
#: extensions of files that are plainly not images (documentation, tables, archives): ignored without a warning
DOCUMENT_EXTENSIONS = frozenset(
    {".md", ".txt", ".rst", ".csv", ".tsv", ".json", ".yml", ".yaml", ".xml", ".html", ".pdf", ".doc", ".docx"}
    | {".xls", ".xlsx", ".ini", ".cfg", ".log", ".py", ".ipynb", ".zip", ".gz", ".tar", ".7z", ".db", ".npz"}
)
_SKIP_DIRS = frozenset({"__MACOSX", "__pycache__"})  # zip-extraction and Python leftovers, never data
#: names without an extension that are plainly not images (read-me and licence files): ignored without a warning
_NOT_IMAGE_NAMES = frozenset(
    {"README", "LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS", "CONTRIBUTORS", "CREDITS", "THANKS"}
    | {"CHANGELOG", "CHANGES", "HISTORY", "NEWS", "CITATION", "MANIFEST", "MAKEFILE", "INSTALL", "VERSION", "TODO"}
    | {"ICON\r"}
)
#: the reason :func:`scan` skips files whose name is not valid UTF-8
BAD_NAME_REASON = (
    "file or folder name is not valid UTF-8 (from an archive or disk written in another encoding; shown with the "
    "bad bytes as \\xNN): left out, as the manifest, packs and reports store names as text. Fix: rename them to "
    "UTF-8, e.g. convmv -f latin1 -t utf8 -r --notest DIR, or unzip with -O cp437 (or the archive's encoding)"
)
#: notes of :func:`scan` about folders and files the ``pbc`` / ``all4`` layouts do not read
OTHER_FOLDERS_NOTE = "not read: folders that are not class folders of the layout"
OUTSIDE_NOTE = "not read: image files outside the dataset's folder"
_FIRST = 5  # paths shown per reason

# ------------------------------------------------------------------ PBC and ALL
PBC_CLASSES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
"""PBC's eight class folders (= BloodMNIST's classes), sorted."""
PBC_CLASS_NODE: dict[str, str] = {c: c for c in PBC_CLASSES} | {"ig": "immature_granulocyte"}
"""PBC class folder -> node of ``taxonomies/pbc.json``."""
PBC_PREFIX_NODE: dict[str, str] = {
    "BA": "basophil",
    "EO": "eosinophil",
    "ERB": "erythroblast",
    "IG": "immature_granulocyte",  # subtype not given: a partial label
    "PMY": "promyelocyte",
    "MY": "myelocyte",
    "MMY": "metamyelocyte",
    "LY": "lymphocyte",
    "MO": "monocyte",
    "NEUTROPHIL": "neutrophil",  # subtype not given: a partial label
    "BNE": "band_neutrophil",
    "SNE": "segmented_neutrophil",
    "PLATELET": "platelet",
}
"""PBC file-name prefix (``BNE_123.jpg`` -> ``BNE``) -> node of ``taxonomies/pbc.json``."""
PBC_CLASS_OF_NODE: dict[str, str] = {
    "basophil": "basophil",
    "eosinophil": "eosinophil",
    "erythroblast": "erythroblast",
    "immature_granulocyte": "ig",
    "promyelocyte": "ig",
    "myelocyte": "ig",
    "metamyelocyte": "ig",
    "lymphocyte": "lymphocyte",
    "monocyte": "monocyte",
    "neutrophil": "neutrophil",
    "band_neutrophil": "neutrophil",
    "segmented_neutrophil": "neutrophil",
    "platelet": "platelet",
}
"""Node of ``taxonomies/pbc.json`` at or below one of the 8 classes -> its PBC class folder."""
ALL4_CLASS_NODE: dict[str, str] = {"Benign": "benign", "Early": "early_pre_B", "Pre": "pre_B", "Pro": "pro_B"}
"""ALL class folder -> node of ``taxonomies/all4.json``."""


def pbc_eight_class(node: str) -> str:
    """The PBC class folder (BloodMNIST class) of a node at or below one of the 8 classes.

    Raises:
        ValueError: ``node`` is above the 8-class level (``granulocyte``...) or not a PBC node.

    Examples:
        >>> pbc_eight_class("band_neutrophil"), pbc_eight_class("immature_granulocyte")
        ('neutrophil', 'ig')
    """
    try:
        return PBC_CLASS_OF_NODE[node]
    except (KeyError, TypeError):
        raise ValueError(
            f"node: {node!r} is not at or below one of the 8 PBC classes; expected one of "
            f"{sorted(PBC_CLASS_OF_NODE)}. Nodes above that level (leukocyte, granulocyte, ...) have no 8-class label."
        ) from None


def pbc_class_table(taxonomy: Taxonomy) -> np.ndarray:
    """Per node, the index into :data:`PBC_CLASSES` of its 8-class ancestor (or itself), -1 above that level.

    Works for any tree that contains the 8 class nodes (``taxonomies/pbc.json`` or a
    refinement of it): ``table[pred]`` maps predicted node indices to 8-class indices.

    Returns:
        int64 array ``(num_nodes,)``.

    Raises:
        ValueError: the taxonomy lacks some of the 8 class nodes.

    Examples:
        >>> tax = load_taxonomy("pbc")
        >>> table = pbc_class_table(tax)
        >>> [PBC_CLASSES[table[tax.index(n)]] for n in ("myelocyte", "platelet")], int(table[0])
        (['ig', 'platelet'], -1)
    """
    missing = [n for n in PBC_CLASS_NODE.values() if n not in taxonomy]
    if missing:
        raise ValueError(
            f"taxonomy: lacks the PBC class nodes {missing}; use taxonomies/pbc.json or a tree that contains "
            f"all of {sorted(PBC_CLASS_NODE.values())}."
        )
    table = np.full(taxonomy.num_nodes, -1, dtype=np.int64)
    # nodes in depth order: a class node's descendants come later, so assign subtrees top-down
    for k, cls in enumerate(PBC_CLASSES):
        node = taxonomy.index(PBC_CLASS_NODE[cls])
        ptr, idx = taxonomy.descendants_ptr, taxonomy.descendants_index
        table[idx[ptr[node] : ptr[node + 1]]] = k
        table[node] = k
    return table


# ------------------------------------------------------------------ taxonomy
def load_taxonomy(spec: TaxonomyLike) -> Taxonomy:
    """A taxonomy from a bundled name (``"paper"``, ``"pbc"``, ``"all4"``), a JSON path, or a Taxonomy.

    Raises:
        FileNotFoundError: ``spec`` is neither a bundled name nor an existing file.

    Examples:
        >>> load_taxonomy("paper").leaves
        ('Normal', 'Reactive', 'ALL', 'CLL', 'CML', 'APL')
    """
    return _resolve_taxonomy(spec)[0]


def _resolve_taxonomy(spec: TaxonomyLike) -> tuple[Taxonomy, str]:
    if isinstance(spec, Taxonomy):
        # no name known: "not in the taxonomy (root 'root', 11 nodes)"
        return spec, f"(root {spec.root!r}, {spec.num_nodes} nodes)"
    if isinstance(spec, str) and spec in BUNDLED_TAXONOMIES:
        path = TAXONOMY_DIR / f"{spec}.json"
        return Taxonomy.from_json(path), f"{spec!r} ({path})"
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f"taxonomy: expected a Taxonomy, a bundled name {BUNDLED_TAXONOMIES} or a JSON path, got {spec!r}."
        )
    path = Path(spec)
    if not path.is_file():
        close = [n for n in BUNDLED_TAXONOMIES if n == str(spec).strip().lower()] or difflib.get_close_matches(
            str(spec).lower(), BUNDLED_TAXONOMIES, n=1, cutoff=0.5
        )
        hint = f" Did you mean {close[0]!r}?" if close else ""
        if not close and not path.is_absolute():  # a relative path is read from where the command runs
            where = "a folder" if path.is_dir() else "no file"
            hint = f" A relative path is read from the current folder, {os.getcwd()}, where it names {where}."
        raise FileNotFoundError(
            f"taxonomy: {os.fspath(spec)!r} is neither a bundled taxonomy {BUNDLED_TAXONOMIES} nor a JSON file.{hint} "
            "Pass one of the names or the path of a taxonomy JSON file."
        )
    return Taxonomy.from_json(path), str(path)


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class Sample:
    """One image and its label.

    Attributes:
        path: the image file (absolute, as :func:`scan` returns it).
        label: a node name of the taxonomy (a leaf, or an inner node for a partial label).
    """

    path: str
    label: str


class DataWarning(UserWarning):
    """Bad input found by :func:`scan` (skipped files, empty folders, emptied classes...)."""


@dataclass
class ScanReport:
    """What :func:`scan` found.

    Attributes:
        root: the folder or CSV file scanned.
        layout: the layout read (``"auto"`` resolved).
        base: the folder that relative image names are taken from (for PBC the folder
            holding the class folders, for ALL ``Original/``), as in a pack's ``names``.
        taxonomy: where the taxonomy came from, for messages.
        counts: label -> number of images kept, in taxonomy order.
        skipped: reason -> paths of the files skipped for it.
        converted: image mode (``"L"``, ``"RGBA"``, ``"CMYK"``...) -> paths of kept images that
            are not RGB; they are converted to RGB when loaded.
        empty_folders: folders with no image file in them or below them (topmost only).
        emptied_labels: label -> number of files found for it, for labels whose every file was skipped.
        leaves_without_images: leaves of the taxonomy that no kept image is labelled with.
        notes: findings about images that were kept or files that were ignored (reason -> paths), e.g.
            ignored non-image names, PBC files whose name prefix does not match their folder, or images in
            folders that are not taxonomy nodes below an inner node (labelled at that node).
        repeated: images found more than once with the same label (listed twice in a CSV manifest, or reached
            through symbolic links), each kept once.
        duplicates: groups (each sorted, at least two paths) of kept images whose files are byte for byte
            the same under different names. :func:`split` keeps each group in one split when given
            ``together=report.duplicates``; otherwise copies can land in train and test (a leak).
        groups: group name -> its kept images (sorted): the outermost folder on a path that is not a
            taxonomy node, a class folder, a split's name (``train``) or a wrapper every image shares
            (``patient07``, also for ``patient07/slide1``; compared case-blind), or the CSV's
            :data:`GROUP_COLUMNS` (merged across columns: :func:`_csv_groups`). Images in no such folder
            (or with empty cells) are in no group. :func:`split_images` keeps groups whole on request.
        group_source: where :attr:`groups` came from (``"folders"``, ``"folders, below 'images' which
            every image shares"``, ``"CSV column 'patient'"``), or ``""``.
        num_files: number of candidate image files considered.
    """

    root: str
    layout: str
    base: str
    taxonomy: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    converted: dict[str, list[str]] = field(default_factory=dict)
    empty_folders: list[str] = field(default_factory=list)
    emptied_labels: dict[str, int] = field(default_factory=dict)
    leaves_without_images: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    group_source: str = ""
    num_files: int = 0
    _logged: bool = field(default=False, repr=False, compare=False)

    @property
    def num_images(self) -> int:
        """Number of images kept."""
        return sum(self.counts.values())

    @property
    def num_skipped(self) -> int:
        """Number of files skipped, all reasons together."""
        return sum(len(v) for v in self.skipped.values())

    def messages(self) -> list[str]:
        """One line per problem found (the warnings :meth:`log` emits)."""
        out = []
        for reason, paths in self.skipped.items():
            out.append(f"skipped {len(paths)} file(s): {reason}; first: {_first(paths)}")
        if self.converted:
            modes = ", ".join(f"{m}: {len(p)}" for m, p in sorted(self.converted.items()))
            paths = [p for v in self.converted.values() for p in v]
            out.append(
                f"{len(paths)} image(s) are not RGB ({modes}); they are kept and converted to RGB when loaded "
                f"(transparent pixels onto white); first: {_first(paths)}"
            )
        if self.repeated:
            out.append(
                f"{len(self.repeated)} image(s) found more than once with the same label (listed twice in a CSV, "
                f"or reached through symbolic links): each kept once; first: {_first(self.repeated)}"
            )
        if self.duplicates:
            files = sum(map(len, self.duplicates))
            out.append(
                f"{len(self.duplicates)} group(s) of byte-identical images under different names ({files} files), "
                f"first: {_first(self.duplicates[0])}. Split independently, copies of one image can land in train "
                "and in test (a leak); --group-duplicates (in Python: split(..., together=report.duplicates)) keeps "
                "each group in one split"
            )
        for reason, paths in self.notes.items():
            if reason.startswith(UNKNOWN_FOLDER_NOTE):
                out.append(
                    f"{len(paths)} image(s) lie in folders that are not taxonomy nodes, below an inner node: each "
                    f"is labelled at that inner node (a partial label){reason[len(UNKNOWN_FOLDER_NOTE) :]}; first: "
                    f"{_first(paths)}. If a folder is a misspelt node, rename it; if it only groups images (a "
                    "patient, a slide), ignore this (--split-by-group keeps each such folder in one split)"
                )
            elif reason.startswith(OTHER_FOLDERS_NOTE):
                classes = PBC_CLASSES if self.layout == "pbc" else tuple(ALL4_CLASS_NODE)
                out.append(
                    f"{len(paths)} folder(s) in {_shown(self.base)} are not {self.layout} class folders {classes} and "
                    f"were not read{reason[len(OTHER_FOLDERS_NOTE) :]}: {_first(paths)}. To use images in them, move "
                    "each into its class folder, or read the tree as plain class folders (--layout folder, with a "
                    "--taxonomy that names every folder); folders without images can stay"
                )
            elif reason.startswith(OUTSIDE_NOTE):
                out.append(
                    f"{len(paths)} image file(s) under {_shown(self.root)} lie outside {_shown(self.base)}, the "
                    f"folder the {self.layout!r} layout reads, and were not read; first: {_first(paths)}. To use "
                    "them, scan their folder on its own (point --data at it), or move them into a class folder of "
                    f"{_shown(self.base)}"
                )
            elif reason != IGNORED_NOTE:
                out.append(f"{len(paths)} image(s): {reason}; first: {_first(paths)}")
        # files with a suffix that is neither an image's nor a document's, and files with no suffix in a
        # subfolder (a class folder): perhaps images under another name, or saved without an extension
        ignored = [p for p in self.notes.get(IGNORED_NOTE, []) if _maybe_an_image_name(p, self.base)]
        if ignored:
            kinds = Counter(Path(p).suffix.lower() or "no extension" for p in ignored)
            shown = ", ".join(f"{k}: {n}" for k, n in kinds.most_common(_FIRST))
            no_ext = (
                "; add the extension of their format to those with none (cell_001 -> cell_001.png)"
                if kinds["no extension"]
                else ""
            )
            out.append(
                f"{len(ignored)} file(s) not read, their names do not end in an image extension ({shown}); "
                f"first: {_first(ignored)}. Rename any that are images to end in one of "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}{no_ext}"
            )
        if self.empty_folders:
            out.append(
                f"{len(self.empty_folders)} folder(s) with no file named as an image: {_first(self.empty_folders)}"
            )
        if self.emptied_labels:
            shown = ", ".join(f"{k!r} ({n} file(s))" for k, n in list(self.emptied_labels.items())[:_FIRST])
            out.append(
                f"{len(self.emptied_labels)} label(s) have no image left after skipping bad files: {shown}; "
                "the model will not learn them"
            )
        if self.leaves_without_images:
            out.append(
                f"{len(self.leaves_without_images)} taxonomy leaf/leaves have no images: "
                f"{_first(self.leaves_without_images)}; a model trained on this data cannot learn them, and no "
                "image here tests them"
            )
        return out

    def summary(self) -> str:
        """A one-line summary: images kept per label, files skipped."""
        per = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        grouped = sum(map(len, self.groups.values()))
        groups = f"; {grouped} in {len(self.groups)} group(s) ({self.group_source})" if self.groups else ""
        return (
            f"scanned {self.root} (layout {self.layout!r}): {self.num_images} images, {len(self.counts)} labels "
            f"[{per}]{groups}; {self.num_skipped} file(s) skipped, {sum(map(len, self.converted.values()))} "
            "converted to RGB"
        )

    def log(self, file: Any = None, *, stacklevel: int = 2) -> None:
        """Print the summary (to stderr) and warn (:class:`DataWarning`) once per problem.

        Calling it again does nothing: each problem is reported once.
        """
        if self._logged:
            return
        self._logged = True
        print(self.summary(), file=file if file is not None else sys.stderr)
        for message in self.messages():
            warnings.warn(f"{self.root}: {message}", DataWarning, stacklevel=stacklevel)


def _first(paths: Sequence[str], k: int = _FIRST) -> str:
    shown = ", ".join(map(_shown, paths[:k]))
    return shown + (f", ... ({len(paths) - k} more)" if len(paths) > k else "")


def _is_text_name(path: str) -> bool:
    """Whether ``path`` is valid UTF-8 (Python decodes other bytes of a file name to lone surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(path: str) -> str:
    """``path`` printable and encodable: bytes of a name that were not UTF-8 shown as ``\\xNN``.

    Examples:
        >>> _shown("Normal/caf\\udce9.jpg")
        'Normal/caf\\\\xe9.jpg'
    """
    if _is_text_name(path):
        return path
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _maybe_an_image_name(path: str, base: str) -> bool:
    """Whether an ignored file may be an image under another name: its suffix is neither an image's nor a
    document's, or it has none, lies in a subfolder of ``base`` (a class folder) and is not a dotfile or a
    README/LICENSE-like name."""
    p = Path(path)
    if p.suffix:
        return p.suffix.lower() not in DOCUMENT_EXTENSIONS
    return (
        not p.name.startswith(".")
        and p.name.upper() not in _NOT_IMAGE_NAMES
        and os.path.normpath(p.parent) != os.path.normpath(base)
    )


def _closest(name: str, nodes: Sequence[str], n: int = 1) -> list[str]:
    """Nodes close to ``name``: one that differs only in case first, else close spellings, ignoring case.

    Examples:
        >>> _closest("all", ["Normal", "ALL", "AML"]), _closest("Leukaemia", ["Leukemia", "Normal"])
        (['ALL'], ['Leukemia'])
    """
    same = [v for v in nodes if v.casefold() == name.casefold()]
    if same:
        return same[:n]
    folded: dict[str, str] = {}
    for v in nodes:
        folded.setdefault(v.casefold(), v)
    return [folded[m] for m in difflib.get_close_matches(name.casefold(), list(folded), n=n, cutoff=0.6)]


# ------------------------------------------------------------------ layouts
def _walk(top: Path) -> tuple[list[Path], list[str], list[str]]:
    """All files below ``top`` (sorted), topmost folders without image files, and ignored non-image files.

    Symbolic links to folders are followed; a link back to a folder above it (a loop) is not. An image
    reached through two paths is found twice: :func:`_drop_repeated` keeps one copy (same label) or
    leaves both out (two labels, reported), after labelling.
    """
    files: list[Path] = []
    ignored: list[str] = []
    has_image: dict[str, bool] = {}
    order: list[str] = []
    real_of: dict[str, str] = {}
    top_s = str(top)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = real_of[dirpath] = os.path.realpath(dirpath)
        up, loop = dirpath, False
        while up != top_s and not loop:  # a link back to a folder above this one: a loop, not read again
            up = os.path.dirname(up)
            loop = real_of.get(up) == real
        if loop:
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        order.append(dirpath)
        found = False
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(p)
                found = True
            elif name != ".DS_Store":
                ignored.append(str(p))
        has_image[dirpath] = found
    # propagate "has an image below" upwards, deepest folders first
    for dirpath in sorted(order, key=lambda d: -d.count(os.sep)):
        if has_image[dirpath] and dirpath != str(top):
            parent = os.path.dirname(dirpath)
            if parent in has_image:
                has_image[parent] = True
    empty = [d for d in order if d != str(top) and not has_image[d] and has_image.get(os.path.dirname(d), True)]
    return files, empty, ignored


def _find_dir(root: Path, test: Callable[[Path], bool], depth: int = 2) -> Path | None:
    frontier = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            if test(d):
                return d
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
            except OSError:
                continue
        frontier = nxt
    return None


def _subdirs(d: Path) -> set[str]:
    try:
        return {p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in _SKIP_DIRS}
    except OSError:
        return set()


def _pbc_nodes() -> frozenset[str]:
    """Node names of the bundled ``pbc.json`` that are not PBC class folders (``immature_granulocyte``...)."""
    global _PBC_NODES
    if _PBC_NODES is None:
        _PBC_NODES = frozenset(load_taxonomy("pbc").nodes) - set(PBC_CLASSES)
    return _PBC_NODES


_PBC_NODES: frozenset[str] | None = None


def _is_pbc_base(d: Path) -> bool:
    """At least two subfolders are PBC classes holding a file with one of their PBC prefixes (directly or one
    folder down: ``neutrophil/patient07/BNE_1.jpg``), and no other subfolder is named after a node of
    ``pbc.json`` (that is a class-folder tree: layout ``folder``). Other subfolders (notes, extras) are
    allowed: :func:`_label_pbc` reports them as not read."""
    subs = _subdirs(d)
    classes = subs & set(PBC_CLASSES)
    if len(classes) < 2 or (subs - classes) & _pbc_nodes():
        return False
    for cls in sorted(classes):  # a file whose prefix belongs to its folder, in it or a subfolder (patients)
        try:
            entries = list((d / cls).iterdir())
        except OSError:
            continue
        if any(_own_pbc_file(p.name, cls) for p in entries):
            return True
        for sub in sorted(p for p in entries if p.is_dir()):
            try:
                if any(_own_pbc_file(p.name, cls) for p in sub.iterdir()):
                    return True
            except OSError:
                continue
    return False


def _own_pbc_file(name: str, cls: str) -> bool:
    """Whether a file name has a PBC prefix of class folder ``cls`` (``BNE_1.jpg`` in ``neutrophil``)."""
    prefix = _pbc_prefix(name)
    return prefix in PBC_PREFIX_NODE and _PBC_PREFIX_CLASS[prefix] == cls


def _no_pbc_message(root: Path) -> str:
    """Why no folder at or up to two levels below ``root`` is a PBC base, naming the folders in the way."""
    found: list[str] = []
    frontier = [root]
    for _ in range(3):
        nxt = []
        for d in frontier:
            subs = _subdirs(d)
            classes, others = sorted(subs & set(PBC_CLASSES)), sorted(subs - set(PBC_CLASSES))
            if classes:
                nodes = [o for o in others if o in _pbc_nodes()]
                why = (
                    f"its folders {nodes} are taxonomy node names, not PBC class folders (a tree of folders named after "
                    "nodes: use layout='folder')"
                    if nodes
                    else "fewer than two PBC class folders"
                    if len(classes) < 2
                    else "no file in a class folder has one of its PBC prefixes (BA_, EO_, ERB_, IG_, PMY_, MY_, "
                    "MMY_, LY_, MO_, NEUTROPHIL_, BNE_, SNE_, PLATELET_)"
                )
                found.append(
                    f"{_shown(str(d))!r} has the PBC class folders {classes} and the other folders {others[:8]}"
                    f"{' ...' if len(others) > 8 else ''}: {why}"
                )
            nxt.extend(sorted(d / n for n in subs))
        frontier = nxt
    seen = (
        "; ".join(found[:3])
        if found
        else f"no folder there has a PBC class folder; its folders: {sorted(_subdirs(root))[:12]}"
    )
    return (
        f"root: no PBC layout found in {_shown(str(root))!r}: expected a folder (the root or up to two levels below) "
        f"with at least two of the PBC class folders {PBC_CLASSES} holding files named <PREFIX>_<id>; {seen}. "
        "Point --data at the PBC download, or pass layout='folder' for other class-folder trees."
    )


def _is_all4_base(d: Path, *, extras: bool = False) -> bool:
    """At least two subfolders are ALL class folders and, unless ``extras``, no other subfolder exists. With
    ``extras`` (a folder named ``Original``, the published name) other subfolders (notes, thumbnails) are
    allowed, unless one is named after a node of ``all4.json`` (that is a tree of class folders: layout
    ``folder``); :func:`_label_all4` reports them as not read."""
    subs = _subdirs(d)
    classes = subs & set(ALL4_CLASS_NODE)
    others = subs - classes
    if len(classes) < 2:
        return False
    return not others or (extras and not others & _all4_nodes())


@functools.lru_cache(maxsize=1)
def _all4_nodes() -> frozenset[str]:
    """Node names of the bundled ``all4.json`` (``benign``, ``malignant``, ...)."""
    return frozenset(load_taxonomy("all4").nodes)


def _all4_base(root: Path) -> Path | None:
    found = _find_dir(root, lambda d: d.name == "Original" and _is_all4_base(d, extras=True))
    if found is None and _is_all4_base(root):
        found = root
    return found


def _pbc_prefix(name: str) -> str:
    return name.split("_", 1)[0].upper() if "_" in name else ""


_PBC_PREFIX_CLASS = {p: PBC_CLASS_OF_NODE[n] for p, n in PBC_PREFIX_NODE.items()}


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Guess the layout of ``root``: ``"csv"`` for a ``.csv`` file, ``"all4"`` for an
    ``Original/{Benign,Early,Pre,Pro}`` tree, ``"pbc"`` for PBC's class folders with
    PBC file-name prefixes (at ``root`` or up to two levels below), else ``"folder"``. A folder holding both a
    PBC and an ALL tree is refused (:class:`ValueError`): one of them would be left out.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> (d / "Original" / "Benign").mkdir(parents=True); (d / "Original" / "Pro").mkdir()
        >>> detect_layout(d)
        'all4'
    """
    path = Path(root)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise ValueError(
            f"root: {os.fspath(root)!r} is a file but not a .csv manifest. "
            "Pass a folder or a CSV with columns path,label."
        )
    if not path.is_dir():
        raise FileNotFoundError(
            f"root: {os.fspath(root)!r} does not exist. Pass the folder of your images or a CSV manifest."
        )
    all4 = _all4_base(path)
    if all4 is not None:
        _check_one_dataset(path, "all4", all4)  # a root holding PBC too is refused here, as the scan refuses it
        return "all4"
    if _find_dir(path, _is_pbc_base) is not None:
        return "pbc"
    return "folder"


def _check_one_dataset(root: Path, layout: str, base: Path) -> None:
    """Refuse a ``root`` that holds both a PBC and an ALL tree: a scan reads one dataset, the other would be
    left out silently."""
    other = _all4_base(root) if layout == "pbc" else _find_dir(root, _is_pbc_base)
    if other is None or other == base or base in other.parents or other in base.parents:
        return
    pbc, all4 = (base, other) if layout == "pbc" else (other, base)
    raise ValueError(
        f"root: {_shown(str(root))!r} holds two datasets, a PBC tree ({_shown(str(pbc))}) and an ALL tree "
        f"({_shown(str(all4))}); layout {layout!r} would read one and leave the other out. Point --data (root) at "
        f"one of them: {_shown(str(pbc.parent if pbc.parent != root else pbc))} for PBC, "
        f"{_shown(str(all4.parent if all4.parent != root else all4))} for ALL."
    )


def _images_outside(root: Path, base: Path) -> list[str]:
    """Image files below ``root`` but not below ``base`` (what the ``pbc`` / ``all4`` layouts do not read)."""
    out: list[str] = []
    base_s = os.path.normpath(base)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and d not in _SKIP_DIRS and os.path.normpath(os.path.join(dirpath, d)) != base_s
        )
        out.extend(
            os.path.join(dirpath, n)
            for n in sorted(filenames)
            if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith(".")
        )
    return out


def _as_node(tax: Taxonomy) -> Callable[[str], str]:
    """``name`` as the taxonomy spells it: itself when it is a node, else the node it equals after Unicode
    NFC normalisation (macOS writes folder names decomposed: ``'E'`` + a combining accent for ``'É'``), else
    itself (an unknown name, reported by the caller).

    Examples:
        >>> from hiercls import Taxonomy
        >>> as_node = _as_node(Taxonomy.from_paths(["r/\u00c9osinophile", "r/b"]))
        >>> as_node("E\u0301osinophile") == "\u00c9osinophile", as_node("b"), as_node("x")
        (True, 'b', 'x')
    """
    nfc = {unicodedata.normalize("NFC", n): n for n in reversed(tax.nodes)}

    def as_node(name: str) -> str:
        return name if name in tax else nfc.get(unicodedata.normalize("NFC", name), name)

    return as_node


def _label_folder(
    root: Path, tax: Taxonomy
) -> tuple[list[tuple[str, str | None, str]], Path, list[str], list[str], dict[str, list[str]], dict[str, list[str]]]:
    """(path, label or None, unknown folder name or reason) per image file, notes, and skipped files (paths whose
    node folders contradict the taxonomy)."""
    files, empty, ignored = _walk(root)
    out: list[tuple[str, str | None, str]] = []
    below_inner: list[str] = []
    lineage: dict[str, frozenset[str]] = {}  # node -> its ancestors, itself and its descendants

    def related(a: str, b: str) -> bool:
        if a not in lineage:
            lineage[a] = frozenset(tax.ancestors(a, include_self=True) + tax.descendants(a))
        return b in lineage[a]

    near: dict[str, bool] = {}  # folder name -> whether it is close to a node name (a likely misspelling)

    def named(folders: Sequence[str]) -> str:
        """The folder to name for a path's folders that are not nodes: the first that looks like a misspelt
        node (``nuet`` above ``patient0/``), else the first (the class folder a user would rename)."""
        for f in folders:
            if f not in near:
                near[f] = bool(_closest(f, tax.nodes, n=1))
            if near[f]:
                return f
        return folders[0]

    contradicting: list[str] = []
    pairs: dict[tuple[str, str], int] = {}
    below_folder: dict[str, str] = {}
    split_folders: dict[str, list[str]] = defaultdict(list)  # folders named train/test/...: their images
    as_node = _as_node(tax)
    for p in files:
        parts = tuple(map(as_node, p.relative_to(root).parts[:-1]))
        for part in parts:
            if part.casefold() in SPLIT_NAMES:
                split_folders[part].append(str(p))
                break
        on_path = [part for part in parts if part in tax]
        # node folders on one path must lie on one line of the tree: Leukemia/Normal has no single label
        clash = next(((a, b) for i, a in enumerate(on_path) for b in on_path[i + 1 :] if not related(a, b)), None)
        if clash is not None:
            contradicting.append(str(p))
            pairs[clash] = pairs.get(clash, 0) + 1
            continue
        label = on_path[-1] if on_path else None
        if label is not None:
            out.append((str(p), label, ""))
            if parts[-1] not in tax and not tax.is_leaf(label):  # a misspelt leaf folder, or a grouping folder
                below_inner.append(str(p))
                last = max(i for i, part in enumerate(parts) if part in tax)
                below_folder[str(p)] = named(parts[last + 1 :])
        elif parts:
            out.append((str(p), None, named(parts)))  # unknown label: the folder to rename
        else:
            out.append((str(p), None, "?top"))
    notes = {}
    if split_folders:
        names = ", ".join(sorted(split_folders)[:_FIRST])
        notes[OWN_SPLIT_NOTE.format(where=f"in folders named as a split of their own ({names})")] = sorted(
            p for paths in split_folders.values() for p in paths
        )
    if below_inner:
        folders = sorted({below_folder[p] for p in below_inner}, key=lambda f: (not near.get(f, False), f))
        close = {f: _closest(f, tax.nodes, n=1) for f in folders[:_FIRST]}
        hint = ", ".join(f"{f!r} (did you mean {m[0]!r}?)" if m else repr(f) for f, m in close.items())
        notes[f"{UNKNOWN_FOLDER_NOTE}; folders: {hint}{', ...' if len(folders) > _FIRST else ''}"] = below_inner
    skipped = {}
    if contradicting:

        def place(node: str) -> str:
            return "/".join(n for n in tax.ancestors(node, include_self=True) if n != tax.root)

        shown = "; ".join(
            f"{a!r} then {b!r} ({n} file(s); {b!r} is not below {a!r}: its place in the taxonomy is {place(b)})"
            for (a, b), n in sorted(pairs.items(), key=lambda kv: -kv[1])[:_FIRST]
        )
        skipped[
            "folders on the path name taxonomy nodes that are not ancestor and descendant of each other, so the "
            f"image has no single label (left out): {shown}{' ...' if len(pairs) > _FIRST else ''}. Fix: move each "
            "image into the folder of its node, nested as the taxonomy is (or with only its node's folder)"
        ] = contradicting
    return out, root, empty, ignored, notes, skipped


def _leave_out_other_folders(
    base: Path, classes: set[str], files: list[Path], empty: list[str], ignored: list[str]
) -> tuple[list[Path], list[str], list[str], dict[str, list[str]]]:
    """Drop what lies in subfolders of ``base`` that are not class folders (notes, extras): not read, and
    reported once by name in the returned notes."""
    others = sorted(_subdirs(base) - classes)
    if not others:
        return files, empty, ignored, {}
    other_set = set(others)

    def inside(p: str | Path) -> bool:
        rel = Path(p).relative_to(base).parts
        return len(rel) > 0 and rel[0] in other_set

    n_images = sum(inside(p) for p in files)
    kept = (
        [p for p in files if not inside(p)],
        [d for d in empty if not inside(d)],
        [p for p in ignored if not inside(p)],
    )
    return (*kept, {f"{OTHER_FOLDERS_NOTE} ({n_images} image file(s) in them)": [str(base / o) for o in others]})


def _label_pbc(
    root: Path,
) -> tuple[list[tuple[str, str | None, str]], Path, list[str], list[str], dict[str, list[str]]]:
    base = _find_dir(root, _is_pbc_base)
    if base is None:
        raise ValueError(_no_pbc_message(root))
    files, empty, ignored = _walk(base)
    files, empty, ignored, first_notes = _leave_out_other_folders(base, set(PBC_CLASSES), files, empty, ignored)
    notes: dict[str, list[str]] = defaultdict(list, first_notes)
    out: list[tuple[str, str | None, str]] = []
    for p in files:
        parts = p.relative_to(base).parts  # a class folder may hold subfolders (patients, or finer types)
        if len(parts) < 2 or parts[0] not in PBC_CLASS_NODE:
            out.append((str(p), None, "?notclass"))
            continue
        cls = parts[0]
        prefix = _pbc_prefix(p.name)
        if prefix in PBC_PREFIX_NODE and _PBC_PREFIX_CLASS[prefix] == cls:
            out.append((str(p), PBC_PREFIX_NODE[prefix], ""))
        else:
            if not p.name.startswith("."):  # hidden files are reported by the image check
                notes[f"file-name prefix is not a PBC prefix of '{cls}': labelled at the class node"].append(str(p))
            out.append((str(p), PBC_CLASS_NODE[cls], ""))
    return out, base, empty, ignored, dict(notes)


def _label_all4(
    root: Path,
) -> tuple[list[tuple[str, str | None, str]], Path, list[str], list[str], dict[str, list[str]]]:
    base = _all4_base(root)
    if base is None:
        raise ValueError(
            f"root: no ALL layout found in {str(root)!r} (a folder 'Original' with subfolders among "
            f"{sorted(ALL4_CLASS_NODE)}). Pass layout='folder' for other class-folder trees."
        )
    files, empty, ignored = _walk(base)
    files, empty, ignored, notes = _leave_out_other_folders(base, set(ALL4_CLASS_NODE), files, empty, ignored)
    out: list[tuple[str, str | None, str]] = []
    for p in files:
        parts = p.relative_to(base).parts
        if len(parts) >= 2 and parts[0] in ALL4_CLASS_NODE:
            out.append((str(p), ALL4_CLASS_NODE[parts[0]], ""))
        else:
            out.append((str(p), None, "?notclass"))
    return out, base, empty, ignored, notes


def _label_csv(
    path: Path,
) -> tuple[list[tuple[str, str | None, str]], Path, dict[str, list[str]], dict[str, list[str]], str, dict[str, str]]:
    """(path, label, "") per row, the CSV's folder, skipped rows, notes, where groups come from ("" if no
    column of :data:`GROUP_COLUMNS`) and path -> group (:func:`_csv_groups`; rows with empty group cells are
    in none)."""
    base = path.parent
    out: list[tuple[str, str | None, str]] = []
    skipped: dict[str, list[str]] = defaultdict(list)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{str(path)!r}: not UTF-8 text ({err.reason} at byte {err.start}). Save the CSV as UTF-8 (in Excel: "
            "'CSV UTF-8'; or iconv -f cp1252 -t utf-8)."
        ) from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        cols = [h.strip().lower() for h in header] if header else []
        if "path" not in cols or "label" not in cols:
            sep = next((c for c in (";", "\t", "|") if header and len(header) == 1 and c in header[0]), None)
            fix = f"Separate the columns with commas, not {sep!r}." if sep else "Add the header line 'path,label'."
            raise ValueError(
                f"{str(path)!r}: expected a header with columns 'path' and 'label' (any order, more columns allowed), "
                f"got {header!r}. {fix}"
            )
        ip, il = cols.index("path"), cols.index("label")
        igs = [i for i, c in enumerate(cols) if c in GROUP_COLUMNS]
        cells: list[tuple[str, list[tuple[str, str]]]] = []  # (path, [(group column, its value)])
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(ip, il):
                raise ValueError(
                    f"{str(path)!r} line {line}: expected at least {max(ip, il) + 1} columns, got {row!r}."
                )
            rel, label = row[ip].strip(), row[il].strip()
            full = os.path.abspath(os.path.join(base, rel))
            if "\\" in rel and os.sep == "/" and not os.path.isfile(full):  # written on Windows
                full = os.path.abspath(os.path.join(base, rel.replace("\\", "/")))
            if not rel:
                skipped["empty path in the CSV"].append(f"line {line}")
            elif not label:
                skipped[EMPTY_LABEL_REASON].append(full)
            elif not os.path.isfile(full) and os.path.isabs(rel):  # written on another machine, most likely
                skipped[
                    "absolute path in the CSV not found on this machine (written elsewhere? make the paths "
                    f"relative to the CSV's folder, {base}, or rewrite their common prefix)"
                ].append(full)
            elif not os.path.isfile(full):
                skipped[
                    f"file listed in the CSV not found (a relative path is read from the CSV's folder, {base})"
                ].append(full)
            else:
                out.append((full, label, ""))
                row_cells = [(cols[i], row[i].strip()) for i in igs if i < len(row) and row[i].strip()]
                if row_cells:
                    cells.append((full, row_cells))
    notes: dict[str, list[str]] = {}
    # a row with an empty label for an image another row labels loses nothing: said, not counted as skipped
    labelled = {p for p, _, _ in out}
    also = [p for p in skipped.get(EMPTY_LABEL_REASON, []) if p in labelled]
    if also:
        notes[EMPTY_LABEL_ALSO_NOTE] = also
        skipped[EMPTY_LABEL_REASON] = [p for p in skipped[EMPTY_LABEL_REASON] if p not in labelled]
        if not skipped[EMPTY_LABEL_REASON]:
            del skipped[EMPTY_LABEL_REASON]
    named = [header[i].strip() for i, c in enumerate(cols) if c in SPLIT_COLUMNS]
    if named and out:
        notes[OWN_SPLIT_NOTE.format(where=f"listed with a {named[0]!r} column in the CSV")] = [p for p, _, _ in out]
    group_of, column = _csv_groups(cells, [header[i].strip() for i in igs] if header else [])
    return out, base, dict(skipped), notes, column, group_of


#: CSV group columns below a patient: their values are read within the row's patient (slides numbered 1, 2...
#: for each patient are not one slide)
WITHIN_PATIENT_COLUMNS = frozenset({"slide", "slide_id"})


def _csv_groups(
    cells: Sequence[tuple[str, Sequence[tuple[str, str]]]], columns: Sequence[str]
) -> tuple[dict[str, str], str]:
    """``(path -> group name, description)`` from the group cells of a CSV's rows (``(path, [(column,
    value)])``, columns lower-case).

    Images that share a value in any group column (compared by :func:`_group_key`) are one group, through
    any chain of them: with ``group`` and ``patient`` columns, a patient listed under two groups joins them,
    so no image of either can be on both sides of a split. A slide (:data:`WITHIN_PATIENT_COLUMNS`) is read
    within the row's patient when the row names one (slide 1 of patient P1 is not slide 1 of P2), and on its
    own in rows with no patient. A group is named after its value in the first of :data:`GROUP_COLUMNS`
    it has (spelt as in its first image by path), prefixed with the column when the CSV has several.

    Examples:
        >>> rows = [("/a", [("patient", "P1"), ("slide", "1")]), ("/b", [("patient", "p1"), ("slide", "2")]),
        ...         ("/c", [("patient", "P2"), ("slide", "1")]), ("/d", [("slide", "x9")]), ("/e", [("slide", "X9")])]
        >>> group_of, said = _csv_groups(rows, ["Patient", "Slide"])
        >>> group_of
        {'/a': 'Patient P1', '/b': 'Patient P1', '/c': 'Patient P2', '/d': 'Slide x9', '/e': 'Slide x9'}
        >>> said
        "CSV columns 'Patient', 'Slide' (merged; a slide within its patient)"
    """
    spelling: dict[tuple[str, ...], str] = {}
    links: list[list[tuple[str, ...]]] = []  # each image with its keys: ("", path) and (column, [patient,] value)
    for path, row in sorted(cells):
        owners = tuple(sorted(_group_key(v) for c, v in row if c not in WITHIN_PATIENT_COLUMNS))
        keys = [
            (column, *(owners if column in WITHIN_PATIENT_COLUMNS else ()), _group_key(value)) for column, value in row
        ]
        for key, (_, value) in zip(keys, row):
            spelling.setdefault(key, value)
        links.append([("", path), *keys])
    header_of = {col.casefold(): col for col in columns}
    several = len(columns) > 1
    group_of: dict[str, str] = {}
    for part in _components(links):
        best = min((k for k in part if k[0]), key=lambda k: (GROUP_COLUMNS.index(k[0]), k))
        name = (f"{header_of.get(best[0], best[0])} " if several else "") + spelling[best]
        group_of.update((k[1], name) for k in part if not k[0])
    if not columns:
        return group_of, ""
    quoted = ", ".join(repr(c) for c in columns)
    if not several:
        return group_of, f"CSV column {quoted}"
    within = any(c.casefold() in WITHIN_PATIENT_COLUMNS for c in columns) and any(
        c.casefold() not in WITHIN_PATIENT_COLUMNS for c in columns
    )
    return group_of, f"CSV columns {quoted} (merged{'; a slide within its patient' if within else ''})"


def _folder_groups(
    paths: Sequence[str], base: Path | str, layout: str, tax: Taxonomy
) -> tuple[dict[str, list[str]], list[str]]:
    """``(groups, wrappers)``: each image's group from its folders, and the folders left out as wrappers.

    The folders between ``base`` and the file that are neither taxonomy nodes nor the class folder (``pbc``,
    ``all4``: the first), nor named as a split (``train/``), are the candidates. Leading candidates that
    every image has (``images/`` in ``images/Normal/x.jpg``: a wrapper, not a patient) are dropped, and the
    outermost one left is the group, so a patient's subfolders (``patient07/slide1``) stay in the patient's
    group; a folder that is not a node below an inner node (``AML/M2/p20``) cannot be told from a patient's,
    so it is the group (coarser, never a leak). Names are compared by :func:`_group_key` (``Patient07`` and
    ``patient07`` are one group, named as first met by path). Images with no candidate left are in no group.

    Examples:
        >>> tax = Taxonomy.from_parent_map({"a": None, "b": "a"})
        >>> paths = ["/d/b/p07/s1/x.jpg", "/d/train/P07/b/y.jpg", "/d/b/p08/z.jpg"]
        >>> _folder_groups(paths, "/d", "folder", tax)
        ({'p07': ['/d/b/p07/s1/x.jpg', '/d/train/P07/b/y.jpg'], 'p08': ['/d/b/p08/z.jpg']}, [])
        >>> _folder_groups(["/d/w/b/p1/x.jpg", "/d/w/b/p2/y.jpg"], "/d", "folder", tax)
        ({'p1': ['/d/w/b/p1/x.jpg'], 'p2': ['/d/w/b/p2/y.jpg']}, ['w'])
    """
    cands: list[list[str]] = []
    for path in paths:
        parts = Path(os.path.relpath(path, base)).parts[:-1]
        parts = parts[1:] if layout in ("pbc", "all4") else parts  # the class folder
        cands.append([p for p in parts if p not in tax and p.casefold() not in SPLIT_NAMES])
    wrappers: list[str] = []
    while cands and all(c and _group_key(c[0]) == _group_key(cands[0][0]) for c in cands):
        wrappers.append(cands[0][0])
        cands = [c[1:] for c in cands]
    groups: dict[str, list[str]] = defaultdict(list)
    name_of: dict[str, str] = {}
    for path, c in sorted(zip(paths, cands)):
        if c:
            groups[name_of.setdefault(_group_key(c[0]), c[0])].append(path)
    return dict(groups), wrappers


def _group_key(name: str) -> str:
    """How group names are compared: case-blind, and one Unicode spelling (``Müller`` typed as one code point
    or as ``u`` and a combining diaeresis: NFC).

    Examples:
        >>> _group_key("Patient07") == _group_key("patient07"), _group_key("M\u00fcller") == _group_key("Mu\u0308ller")
        (True, True)
    """
    return unicodedata.normalize("NFC", name).casefold()


def _drop_repeated(
    entries: list[tuple[str, str | None, str]],
) -> tuple[list[tuple[str, str | None, str]], list[str], list[str]]:
    """``(entries, repeated, conflicting)``: an image found several times (listed twice in a CSV, or
    reached through symbolic links), compared by its real path.

    With one label it is kept once (``repeated``); with different labels every copy is left out
    (``conflicting``): it has no single label, and its copies could be split into both train and test.
    """
    real = [os.path.realpath(p) for p, _, _ in entries]  # two links to one image are one image
    labels_of: dict[str, set[str | None]] = defaultdict(set)
    rows_of: Counter[str] = Counter()
    first: dict[str, str] = {}
    for (p, label, _), r in zip(entries, real):
        labels_of[r].add(label)
        rows_of[r] += 1
        first.setdefault(r, p)
    conflicting = sorted(first[r] for r, labels in labels_of.items() if len(labels) > 1)
    repeated = sorted(first[r] for r, n in rows_of.items() if n > 1 and len(labels_of[r]) == 1)
    seen = {r for r, labels in labels_of.items() if len(labels) > 1}
    kept = []
    for entry, r in zip(entries, real):
        if r not in seen:
            seen.add(r)
            kept.append(entry)
    return kept, repeated, conflicting


# ------------------------------------------------------------------ image check
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_DIM_16BIT_MAX = 4095  # 12 bits: what many microscope cameras write into a 16-bit file
DIM_16BIT_NOTE = (
    f"16-bit (or 32-bit integer), with the brightest value at most {_DIM_16BIT_MAX} of 65535 (12 bits or fewer, "
    "as many "
    "microscope cameras write): every 16-bit image is read as a share of 65535, the same mapping for all, so "
    "these load nearly black (at most 16 of 255); rescale them to 8 bits or to the full 16-bit range before "
    "training, or ignore this if they are dim on purpose"
)


OUT_OF_RANGE_NOTE = (
    "32-bit integer or float pixels outside the range they are read in (integers 0..65535; floats [0, 1] when "
    "every value fits, else 0..255): they load clipped, or nearly black for floats a little over 1, often as one "
    "flat colour; convert them to 8 or 16 bits (or floats in [0, 1]) before training"
)
TRANSPARENT_NOTE = "fully transparent (alpha 0 everywhere): they load as pure white; check how they were exported"
MULTI_FRAME_NOTE = (
    "several frames (an animated GIF, WebP or PNG, or a multi-page TIFF such as a focus stack): only the first "
    "frame is read; save the frames you want as images of their own"
)


def _load_note(im: Image.Image, sixteen: bool) -> str | None:
    """What a loaded image will look like that its owner would not expect, as a note of :func:`scan`:
    :data:`DIM_16BIT_NOTE`, :data:`OUT_OF_RANGE_NOTE`, :data:`TRANSPARENT_NOTE`,
    :data:`MULTI_FRAME_NOTE`, or None (the first that applies)."""
    if _dim_16bit(im, sixteen):
        return DIM_16BIT_NOTE
    if im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        known = arr[~np.isnan(arr)]  # as the loader decides its scale: NaN left out, +-inf counted
        if known.size:
            lo, hi = float(known.min()), float(known.max())
            if im.mode == "I":
                bad = lo < 0 or hi > 65535
            else:  # read as [0, 1] when it fits; else as 8-bit values, clipped
                bad = not (lo >= 0 and hi <= 1) and (lo < 0 or hi > 255 or hi < 2)
            if bad:
                return OUT_OF_RANGE_NOTE
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        alpha = im.getchannel("A") if im.mode != "P" else im.convert("RGBA").getchannel("A")
        if alpha.getextrema()[1] == 0:
            return TRANSPARENT_NOTE
    # the loader reads the frame an opened file shows: the first. A camera's JPEG with a preview (MPO) is
    # one picture and its smaller copy: not a note
    if im.format in ("GIF", "TIFF", "WEBP", "PNG") and getattr(im, "n_frames", 1) > 1:
        return MULTI_FRAME_NOTE
    return None


def _sixteen_bit(im: Image.Image) -> bool:
    """Whether an opened (not yet loaded) image stores 16 bits a sample: a 16-bit mode, or a 16-bit colour
    file (48-bit RGB PNG or TIFF) that PIL reads as 8-bit ``RGB``, keeping each sample's high byte."""
    if im.mode in _SIXTEEN_BIT_MODES:
        return True
    args = im.tile[0][3] if im.tile and len(im.tile[0]) > 3 else None
    raw = args[0] if isinstance(args, tuple) and args else args
    # "RGB;16B", "RGBA;16N", "LA;16B"...: 16 bits a sample (not "BGR;16", a 16-bit RGB565 pixel of a BMP)
    base, _, bits = raw.partition(";") if isinstance(raw, str) else ("", "", "")
    return base in ("RGB", "RGBA", "RGBX", "LA") and bits.startswith("16")


def _dim_16bit(im: Image.Image, sixteen: bool) -> bool:
    """Whether a loaded image that stores 16 bits a sample (``sixteen``, from :func:`_sixteen_bit` before
    loading) has its brightest value at most ``_DIM_16BIT_MAX`` (for 48-bit colour, read as its high
    bytes: at most ``_DIM_16BIT_MAX >> 8``). The maximum comes from numpy: PIL's ``getextrema`` refuses
    big-endian ``I;16B`` (ImageJ's TIFFs), and that refusal once dropped such images as unreadable."""
    if not sixteen:
        return False
    limit = _DIM_16BIT_MAX if im.mode in _SIXTEEN_BIT_MODES else _DIM_16BIT_MAX >> 8
    arr = np.asarray(im)
    if im.mode in ("RGBA", "LA"):  # the colour, not the opacity
        arr = arr[..., :-1]
    return 0 < int(arr.max(initial=0)) <= limit


def dim_16bit(path: str | os.PathLike[str]) -> bool:
    """Whether the image at ``path`` is 16-bit and uses 12 bits or fewer (:data:`DIM_16BIT_NOTE`): it
    loads nearly black. Only 16-bit images are decoded; others cost a header read. False for a file that
    cannot be read (the caller's loading reports it).

    Examples:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "cam.png")
        >>> Image.fromarray(np.full((4, 4), 4000, np.uint16)).save(p)
        >>> dim_16bit(p)
        True
    """
    try:
        with Image.open(path) as im:
            if not _sixteen_bit(im):
                return False
            im.load()
            return _dim_16bit(im, True)
    except (OSError, ValueError, SyntaxError):
        return False


def _check_one(path: str, decode: bool) -> tuple[str | None, str, str, str | None]:
    """(reason to skip or None, image mode, digest of the file's bytes: byte-identical copies share it,
    a note on how a decoded image will load, see :func:`_load_note`)."""
    if os.path.islink(path) and not os.path.exists(path):
        return "broken symbolic link (its target does not exist): remove the link or restore its target", "", "", None
    try:
        with open(path, "rb") as fh:  # read once: hashed, then decoded from memory
            content = fh.read()
        digest = hashlib.blake2b(content, digest_size=16).hexdigest()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(content)) as im:
                mode = im.mode
                if im.width < 1 or im.height < 1:
                    return "image has zero width or height", mode, "", None
                note = None
                if decode:
                    sixteen = _sixteen_bit(im)
                    if im.format == "JPEG":
                        # the whole entropy-coded stream is still decoded (truncation is caught),
                        # but the inverse DCT runs at 1/8 scale: ~3x faster than a full load
                        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                    im.load()
                    note = _load_note(im, sixteen)
                return None, mode, digest, note
    except UnidentifiedImageError:
        return "not an image (the content is not a readable image format)", "", "", None
    except Image.DecompressionBombError:
        return "image too large (PIL decompression-bomb limit)", "", "", None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        return f"truncated or unreadable image ({type(err).__name__})", "", "", None


def _check_chunk(paths: list[str], decode: bool) -> list[tuple[str | None, str, str, str | None]]:
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail here, not load half-grey
    try:
        return [_check_one(p, decode) for p in paths]
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def default_workers() -> int:
    """Worker processes for decoding: the usable CPU cores, at most 16."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(16, n))


def parallel_map(
    fn: Callable[..., list[Any]],
    items: Sequence[Any],
    *args: Any,
    workers: int | None = None,
    min_parallel: int = 512,
    chunk: int = 256,
    progress: Callable[[int], None] | None = None,
) -> list[Any]:
    """``fn(chunk_of_items, *args)`` over chunks, in a process pool when there is enough work; results in order."""
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers: expected a positive number of processes, got {workers}.")
    size = max(16, min(chunk, math.ceil(len(items) / (4 * workers))))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    out: list[Any] = []
    if workers == 1 or len(items) < min_parallel:
        for c in chunks:
            out.extend(fn(c, *args))
            if progress:
                progress(len(c))
        return out
    with ProcessPoolExecutor(min(workers, len(chunks))) as ex:
        for c, res in zip(chunks, ex.map(fn, chunks, *([a] * len(chunks) for a in args))):
            out.extend(res)
            if progress:
                progress(len(c))
    return out


# ------------------------------------------------------------------ scan
def scan(
    root: str | os.PathLike[str],
    taxonomy: TaxonomyLike,
    layout: Layout = "auto",
    check_images: bool = True,
    workers: int | None = None,
    *,
    warn: bool = True,
    taxonomy_owner: str | None = None,
) -> tuple[list[Sample], ScanReport]:
    """Find the labelled images under ``root``, check each once, and report what is wrong.

    Args:
        root: a folder (``folder``, ``pbc``, ``all4`` layouts) or a CSV file (``csv``).
        taxonomy: a :class:`~hiercls.Taxonomy`, a bundled name (``"pbc"``, ``"paper"``,
            ``"all4"``) or a taxonomy JSON path. Every label must be one of its nodes.
        layout: one of ``"auto"`` (see :func:`detect_layout`), ``"folder"``, ``"csv"``,
            ``"pbc"``, ``"all4"``; the module docstring describes each.
        check_images: decode every image (in parallel) to catch truncated or unreadable
            files; with ``False`` the pixels are not decoded (faster, misses truncation), but every
            file is still read whole once, to find byte-identical copies (:attr:`ScanReport.duplicates`).
        workers: processes for the image check (default: usable cores, at most 16).
        warn: call :meth:`ScanReport.log` (summary to stderr, one :class:`DataWarning` per problem).
        taxonomy_owner: what ``taxonomy`` belongs to when the user cannot change it (e.g.
            ``"the checkpoint runs/x/best"``): an unknown label's message then names it and says to
            rename or leave out those images, instead of to pass another ``--taxonomy``.

    Returns:
        ``(samples, report)``: the kept images sorted by path, each with an absolute path
        and a node name, and a :class:`ScanReport`.

    Raises:
        FileNotFoundError: ``root`` or the taxonomy file does not exist.
        UnknownNodeError: labels (folder names, CSV labels) that are not taxonomy nodes; the
            message names them, their files, the closest nodes, the taxonomy and the fix.
        ValueError: a bad ``layout``, a CSV without ``path,label`` columns, or no usable image.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}.")
    tax, source = _resolve_taxonomy(taxonomy)
    path = Path(os.path.abspath(root))
    if not path.exists():
        raise FileNotFoundError(
            f"root: {os.fspath(root)!r} does not exist. Pass the folder of your images or a CSV manifest."
        )
    resolved = detect_layout(path) if layout == "auto" else layout
    if layout == "auto" and resolved == "pbc":
        # a PBC tree beside a folder the taxonomy names (a class of the user's, e.g. "blast") is a tree of
        # class folders: read as PBC, that class would be left out
        base = _find_dir(path, _is_pbc_base)
        if base is not None and any(o in tax for o in _subdirs(base) - set(PBC_CLASSES)):
            resolved = "folder"
    elif layout == "auto" and resolved == "all4":
        # the same for a user's class-folder tree in a folder named Original: a subfolder the taxonomy names
        # (e.g. "blast" beside Benign/Pro, or "Benign" itself: all4.json's nodes are lower-case) is a class;
        # read as ALL, it would be left out, or Benign/Pro relabelled with all4.json's names
        base = _all4_base(path)
        if base is not None and any(o in tax for o in _subdirs(base)):
            resolved = "folder"
    if resolved == "csv" and not path.is_file():
        raise ValueError(f"root: layout 'csv' needs a CSV file, got the folder {str(path)!r}.")
    if resolved != "csv" and not path.is_dir():
        raise ValueError(
            f"root: layout {resolved!r} needs a folder, got the file {str(path)!r}. Use --layout csv (layout='csv') "
            "for a manifest."
        )

    skipped: dict[str, list[str]] = defaultdict(list)
    notes: dict[str, list[str]] = {}
    empty: list[str] = []
    ignored: list[str] = []
    repeated: list[str] = []
    group_column, csv_group_of = "", {}
    if resolved == "folder":
        entries, base, empty, ignored, notes, folder_skipped = _label_folder(path, tax)
        for k, v in folder_skipped.items():
            skipped[k].extend(v)
    elif resolved == "pbc":
        entries, base, empty, ignored, notes = _label_pbc(path)
        known = {label for _, label, _ in entries if label is not None}
        if layout == "auto" and known - set(tax.nodes) and all(c in tax for c in _subdirs(base) & set(PBC_CLASSES)):
            # images copied from PBC into class folders the user's taxonomy names: read as PBC, their file-name
            # prefixes gave labels the taxonomy lacks ('band_neutrophil' from BNE_...) and the scan stopped
            resolved = "folder"
            entries, base, empty, ignored, notes, folder_skipped = _label_folder(path, tax)
            for k, v in folder_skipped.items():
                skipped[k].extend(v)
    elif resolved == "all4":
        entries, base, empty, ignored, notes = _label_all4(path)
    else:
        entries, base, csv_skipped, notes, group_column, csv_group_of = _label_csv(path)
        for k, v in csv_skipped.items():
            skipped[k].extend(v)
    notes = dict(notes)
    if resolved in ("pbc", "all4") and base != path:
        _check_one_dataset(path, resolved, base)
        outside = _images_outside(path, base)
        if outside:
            notes[OUTSIDE_NOTE] = outside
    if ignored:
        notes[IGNORED_NOTE] = ignored
    num_files = len(entries)
    # names that are not UTF-8 cannot be written to the manifest or a pack: left out now, not mid-run
    bad_names = [p for p, _, _ in entries if not _is_text_name(p)]
    if bad_names:
        skipped[BAD_NAME_REASON].extend(bad_names)
        entries = [e for e in entries if _is_text_name(e[0])]

    if resolved == "csv":  # a label spelt in another Unicode normal form is its node
        as_node = _as_node(tax)
        entries = [(p, label if label is None else as_node(label), why) for p, label, why in entries]
    # labels that are not nodes: an error, before any image is decoded
    unknown: dict[str, list[str]] = defaultdict(list)
    for p, label, why in entries:
        if label is None and not why.startswith("?"):
            unknown[why].append(p)
        elif label is not None and label not in tax:
            unknown[label].append(p)
    if unknown:
        raise UnknownNodeError(_unknown_labels_message(unknown, tax, source, resolved, owner=taxonomy_owner))
    entries, repeated, conflicting = _drop_repeated(entries)
    if conflicting:
        where = "listed more than once in the CSV" if resolved == "csv" else "reached through symbolic links"
        skipped[
            f"{where} with different labels (every copy left out: it has no single label, and its copies "
            "could be split into both train and test); keep one copy of each image"
        ].extend(conflicting)
    kept: list[tuple[str, str]] = []
    for p, label, why in entries:
        if label is None:
            reason = {
                "?top": "image directly in the data folder, not in a class folder (no label)",
                "?notclass": f"image outside the {resolved} class folders (no label)",
            }[why]
            skipped[reason].append(p)
        elif label == tax.root:
            skipped[f"labelled only at the taxonomy root {tax.root!r} (carries no class information)"].append(p)
        else:
            kept.append((p, label))

    results = parallel_map(_check_chunk, [p for p, _ in kept], bool(check_images), workers=workers)
    samples: list[Sample] = []
    converted: dict[str, list[str]] = defaultdict(list)
    found = Counter(label for _, label in kept)
    by_digest: dict[str, list[str]] = defaultdict(list)
    load_notes: dict[str, list[str]] = defaultdict(list)
    for (p, label), (reason, mode, digest, load_note) in zip(kept, results):
        if reason is not None:
            skipped[reason].append(p)
            continue
        if mode != "RGB":
            converted[mode].append(p)
        if load_note:
            load_notes[load_note].append(p)
        samples.append(Sample(p, label))
        by_digest[digest].append(p)
    samples.sort(key=lambda s: s.path)
    if resolved == "csv":
        groups: dict[str, list[str]] = defaultdict(list)
        for s in samples:
            if s.path in csv_group_of:
                groups[csv_group_of[s.path]].append(s.path)
        group_source = group_column
    else:
        groups, wrappers = _folder_groups([s.path for s in samples], base, resolved, tax)
        shared = "/".join(wrappers)
        group_source = f"folders, below {shared!r} which every image shares" if wrappers else "folders"
    duplicates = sorted(sorted(g) for g in by_digest.values() if len(g) > 1)
    label_of = {s.path: s.label for s in samples}
    mixed = [p for g in duplicates if len({label_of[q] for q in g}) > 1 for p in g]
    if mixed:  # the same pixels under two labels: one of them is wrong (kept, as the labels are the user's)
        notes = {**notes, "byte-identical images with different labels (one label is wrong; check them)": mixed}
    notes = {**notes, **{note: sorted(paths) for note, paths in load_notes.items()}}

    counts_raw = Counter(s.label for s in samples)
    order = {n: i for i, n in enumerate(tax.nodes)}
    counts = {k: counts_raw[k] for k in sorted(counts_raw, key=order.__getitem__)}
    emptied = {label: n for label, n in found.items() if counts_raw[label] == 0}
    missing_leaves = [leaf for leaf in tax.leaves if counts_raw[leaf] == 0]
    report = ScanReport(
        root=str(path),
        layout=resolved,
        base=str(base),
        taxonomy=source,
        counts=counts,
        skipped={k: sorted(v) for k, v in skipped.items()},
        converted={k: sorted(v) for k, v in converted.items()},
        empty_folders=empty,
        emptied_labels=emptied,
        leaves_without_images=missing_leaves if counts else [],
        notes=notes,
        repeated=repeated,
        duplicates=duplicates,
        groups=dict(sorted(groups.items())),
        group_source=group_source if groups else "",
        num_files=num_files,
    )
    if not samples:
        reasons = (
            "; ".join(f"{len(v)} {k} (first: {str(v[0])!r})" for k, v in report.skipped.items())
            or "no image files found"
        )
        raise ValueError(
            f"No usable images in {str(path)!r} (layout {resolved!r}, taxonomy {source}): {num_files} image file(s) "
            f"found; {reasons}. Fix: point it at a folder of class folders named after taxonomy nodes, a CSV with "
            "columns path,label, or the PBC / ALL download as published; run without --data to train on a "
            "generated synthetic set."
        )
    if warn:
        report.log(stacklevel=3)
    return samples, report


def _unknown_labels_message(
    unknown: Mapping[str, list[str]], tax: Taxonomy, source: str, layout: str, *, owner: str | None = None
) -> str:
    what = {"folder": "folder name(s)", "csv": "CSV label(s)"}.get(layout, "label(s)")
    parts = []
    for label in sorted(unknown, key=lambda k: -len(unknown[k]))[:8]:
        close = _closest(label, tax.nodes, n=2)
        hint = f", closest node {' or '.join(map(repr, close))}" if close else ""
        if close and close[0].casefold() == label.casefold():
            hint += ", which differs only in case"
        parts.append(f"{_shown(label)!r} ({len(unknown[label])} file(s), e.g. {_shown(unknown[label][0])}{hint})")
    more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
    fix = (
        "Rename those folders to node names, or add the labels to the taxonomy file (as children of their parent) "
        "and pass it with --taxonomy PATH"
        if layout == "folder"
        else "Fix the labels to node names, or add them to the taxonomy file (as children of their parent) and pass "
        "it with --taxonomy PATH"
    )
    if owner is not None:  # a trained model's taxonomy: it scores only the nodes it was trained on
        source = f"of {owner} {source}"
        fix = (
            f"The taxonomy of {owner} cannot change: a model scores only the nodes it was trained on. "
            + ("Rename those folders to its node names" if layout == "folder" else "Fix the labels to its node names")
            + ", or leave those images out"
        )
    if layout in ("pbc", "all4"):  # the labels came from the download's own names, not the user's folders
        fix += (
            f" (the folder was read as the {layout.upper()} download, layout {layout!r}: labels from its class "
            "folders" + (" and file-name prefixes" if layout == "pbc" else "") + "; for class folders of your "
            "own, pass --layout folder)"
        )
    return (
        f"{len(unknown)} {what} not in the taxonomy {source}: {'; '.join(parts)}{more}. {fix}. "
        f"Its nodes: {', '.join(tax.nodes[:40])}{' ...' if tax.num_nodes > 40 else ''}."
    )


# ------------------------------------------------------------------ split and manifest
def limit_samples(samples: Sequence[Sample], limit: int, seed: int) -> list[Sample]:
    """At most ``limit`` of ``samples`` (all when ``limit`` is 0), drawn with ``seed`` and kept in their order:
    ``train --limit`` with ``--data`` draws them so before the split, and ``evaluate`` repeats the draw.

    Examples:
        >>> items = [Sample(f"{i}.jpg", "Normal") for i in range(10)]
        >>> [s.path for s in limit_samples(items, 3, seed=0)] == [s.path for s in limit_samples(items, 3, seed=0)]
        True
        >>> len(limit_samples(items, 3, seed=0)), len(limit_samples(items, 0, seed=0))
        (3, 10)
    """
    if not limit:
        return list(samples)
    rng = np.random.default_rng(seed)
    return [samples[i] for i in sorted(rng.permutation(len(samples))[:limit])]


def run_split_seed(config: Mapping[str, Any], given: int | None = None) -> int:
    """The split seed to use: ``given``, else the run's (0 is a seed like any other), else the default.

    Examples:
        >>> run_split_seed({"split_seed": 0}), run_split_seed({"split_seed": 0}, 7), run_split_seed({}) == DEFAULT_SEED
        (0, 7, True)
    """
    if given is not None:
        return int(given)
    stored = config.get("split_seed")
    return DEFAULT_SEED if stored is None else int(stored)


def split(
    samples: Sequence[Sample],
    seed: int = DEFAULT_SEED,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    *,
    together: Sequence[Sequence[str]] | None = None,
) -> dict[str, list[Sample]]:
    """Deterministic train/val/test split, stratified by label.

    Per label, its samples sorted by path are shuffled with one
    ``np.random.default_rng(seed)`` shared by all labels, and cut at
    ``round(f_train * n)`` and ``round((f_train + f_val) * n)``. Labels are visited in
    the order of their first path, which for class folders with file-name prefixes
    (PBC) is folder then prefix: the same scheme and order as the peer baseline
    (``tools/flat_baseline_gpu_data.py``), so on the same images the splits coincide.
    The result does not depend on the order of ``samples``.

    ``together`` (e.g. :attr:`ScanReport.duplicates`: byte-identical copies) lists groups of paths that
    must land in one split: only the first path of each group (by path) is drawn, in the stratum of the
    group's most common label (ties: the label that comes first by path, so a pair of copies goes with
    its first), and the other members follow it. Without it, copies are split like any other images and can leak from train
    into test; with it, the split differs from the peer baseline's wherever a group was.

    Args:
        samples: the samples (e.g. from :func:`scan`).
        seed: seed of the shuffle.
        fractions: train, val, test fractions (non-negative, summing to 1).
        together: groups of paths kept in one split (paths not among ``samples`` are ignored).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted by path.

    Raises:
        ValueError: ``fractions`` are not three non-negative numbers summing to 1.

    Examples:
        >>> s = [Sample(f"/d/{c}/{i}.jpg", c) for c in "ab" for i in range(10)]
        >>> {k: len(v) for k, v in split(s).items()}
        {'train': 14, 'val': 2, 'test': 4}
    """
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions: expected (train, val, test) >= 0 summing to 1, got {fractions!r}.")
    followers: dict[str, list[Sample]] = {}  # a group's first path -> the group's other samples
    if together:
        by_path = {s.path: s for s in samples}
        # groups sharing a path are one group (union-find), so no member is dropped or drawn twice; its first
        # path leads it
        followers = {
            members[0]: [by_path[p] for p in members[1:]]
            for members in _components([p for p in group if p in by_path] for group in together)
            if len(members) > 1
        }
        following = {s.path for ss in followers.values() for s in ss}
        samples = [s for s in samples if s.path not in following]
    stratum: dict[str, str] = {}  # a group's first path -> its most common label
    for lead, rest in followers.items():
        labels = [by_path[lead].label, *(f.label for f in sorted(rest, key=lambda f: f.path))]
        counts = Counter(labels)
        stratum[lead] = next(lab for lab in labels if counts[lab] == max(counts.values()))
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.path):
        groups[stratum.get(s.path, s.label)].append(s)
    rng = np.random.default_rng(seed)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for label in sorted(groups, key=lambda k: groups[k][0].path):
        members = groups[label]
        n = len(members)
        perm = np.arange(n)
        rng.shuffle(perm)  # consumes the stream like the baseline's rng.shuffle(index array)
        a, b = round(fr[0] * n), round((fr[0] + fr[1]) * n)
        for name, part in zip(SPLITS, (perm[:a], perm[a:b], perm[b:])):
            out[name].extend(members[i] for i in part.tolist())
            out[name].extend(f for i in part.tolist() for f in followers.get(members[i].path, ()))
    for name in SPLITS:
        out[name].sort(key=lambda s: s.path)
    return out


def copies_in_train(splits: Mapping[str, Sequence[Sample]], duplicates: Sequence[Sequence[str]]) -> dict[str, int]:
    """Per split other than ``train``: how many of its images have a byte-identical copy in ``train``
    (:attr:`ScanReport.duplicates`), which a model can answer from memory: a leak, 0 with ``together``.

    Examples:
        >>> parts = {"train": [Sample("/d/a.jpg", "x")], "val": [], "test": [Sample("/d/b.jpg", "x")]}
        >>> copies_in_train(parts, [["/d/a.jpg", "/d/b.jpg"]])
        {'val': 0, 'test': 1}
    """
    where = {s.path: name for name, items in splits.items() for s in items}
    out = {name: 0 for name in splits if name != "train"}
    for group in duplicates:
        if any(where.get(p) == "train" for p in group):
            for p in group:
                if where.get(p) in out:
                    out[where[p]] += 1
    return out


def groups_across_splits(splits: Mapping[str, Sequence[Sample]], groups: Mapping[str, Sequence[str]]) -> int:
    """How many ``groups`` (:attr:`ScanReport.groups`: patients, slides) have images in more than one split.

    Examples:
        >>> parts = {"train": [Sample("/d/p1/a.jpg", "x")], "val": [], "test": [Sample("/d/p1/b.jpg", "x")]}
        >>> groups_across_splits(parts, {"p1": ["/d/p1/a.jpg", "/d/p1/b.jpg"]})
        1
    """
    where = {s.path: name for name, items in splits.items() for s in items}
    return sum(len({where[p] for p in paths if p in where}) > 1 for paths in groups.values())


def split_images(
    samples: Sequence[Sample],
    report: ScanReport,
    seed: int = DEFAULT_SEED,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    *,
    group_duplicates: bool = False,
    split_by_group: bool = False,
    flag: str = "split_by_group",
    fix: str = "drop the flag to split image by image (then one group's images can be on both sides)",
) -> dict[str, list[Sample]]:
    """:func:`split` of scanned images, keeping whole what the scan found to belong together on request.

    With ``split_by_group``, every image of one of the report's :attr:`~ScanReport.groups` (a patient's or
    a slide's folder, a CSV ``patient`` column) lands in one split: the group is drawn as one unit, in
    the stratum of its most common label, so the split is stratified by group, not by image, and its
    sizes follow the groups'. Images in no group are drawn one by one. Per-label rounding can leave a split
    with fewer groups than its share (7 labels of 3 patients each give validation none: round(0.1 x 3) = 0
    per label); then whole groups move to it, one at a time, from the split with the most groups over its
    share, until each split with a positive fraction holds ``max(1, round(fraction x groups))`` or no
    split has groups to spare (:func:`_fill_short_splits`). With ``group_duplicates``, byte-identical copies
    (:attr:`~ScanReport.duplicates`) are kept together too.

    Args:
        samples: the images to split (the scan's, or a draw from them, e.g. :func:`limit_samples`).
        report: the scan's report.
        seed, fractions: as for :func:`split`.
        group_duplicates: keep byte-identical copies in one split.
        split_by_group: keep each group in one split.
        flag: the name of ``split_by_group`` in messages (``--split-by-group`` on the command line).
        fix: the other way out that an error offers besides more groups (the caller's words).

    Raises:
        ValueError: ``split_by_group`` when the scan found no groups, or when there are too few groups to
            give every split with a positive fraction at least one image.

    Examples:
        >>> s = [Sample(f"/d/{c}/p{i}/{j}.jpg", c) for c in "ab" for i in range(10) for j in range(3)]
        >>> rep = ScanReport("/d", "folder", "/d", "t", groups={f"p{i}": [x.path for x in s if f"/p{i}/" in x.path]
        ...                                                    for i in range(10)})
        >>> parts = split_images(s, rep, split_by_group=True)
        >>> {k: len(v) for k, v in parts.items()}, groups_across_splits(parts, rep.groups)
        ({'train': 42, 'val': 6, 'test': 12}, 0)
    """
    if split_by_group and not report.groups:
        raise ValueError(
            f"{flag}: no groups in {_shown(report.root)}: every image lies directly in its class folder, or in "
            "folders that every image shares (a wrapper folder is not a patient), or the CSV has no column "
            f"among {', '.join(GROUP_COLUMNS)}. Put each patient's or slide's images in a folder of their own "
            "(neutrophil/patient07/x.jpg, or patient07/neutrophil/x.jpg), or add a 'patient' column to the "
            f"CSV; or {fix}."
        )
    together = [*(report.duplicates if group_duplicates else ()), *(report.groups.values() if split_by_group else ())]
    parts = split(samples, seed=seed, fractions=fractions, together=together or None)
    if split_by_group:
        # what moves is what split() kept together: a group, with any group a copy ties it to
        grouped = {p for paths in report.groups.values() for p in paths}
        units = [u for u in _components(together) if not grouped.isdisjoint(u)]
        parts = _fill_short_splits(parts, units, fractions)
        short = [name for name, f in zip(SPLITS, fractions) if f > 0 and not parts[name]]
        if short:
            present = {s.path for items in parts.values() for s in items}
            n = sum(not present.isdisjoint(u) for u in units)
            # with as many groups as splits to fill, _fill_short_splits gives each one: fewer is the only way here
            why = f"fewer groups than the {sum(f > 0 for f in fractions)} splits to fill"
            raise ValueError(
                f"{flag}: the {n} group(s) of {_shown(report.root)} ({'with their copies, ' * group_duplicates}each "
                f"drawn whole) leave no image for the {' and '.join(short)} split(s) ({why}). Add images from more "
                f"patients or slides, or {fix}."
            )
    return parts


def _components(lists: Iterable[Iterable[Any]]) -> list[list[Any]]:
    """The connected components of items (paths, or any sortable keys) linked by sharing a list
    (union-find), each sorted, in the order of their first item.

    Examples:
        >>> _components([["b", "c"], ["a"], ["c", "d"]])
        [['a'], ['b', 'c', 'd']]
    """
    parent: dict[Any, Any] = {}

    def find(p: Any) -> Any:
        while parent.setdefault(p, p) != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for items in lists:
        items = list(items)
        for p in items:
            a, b = find(items[0]), find(p)
            if a != b:
                parent[max(a, b)] = min(a, b)
    out: dict[Any, list[Any]] = defaultdict(list)
    for p in sorted(parent):
        out[find(p)].append(p)
    return sorted(out.values())


def group_counts(splits: Mapping[str, Sequence[Sample]], groups: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Per split, how many of ``groups`` have an image in it (groups with no image drawn count nowhere).

    Examples:
        >>> parts = {"train": [Sample("/d/p1/a.jpg", "x")], "val": [], "test": [Sample("/d/p2/b.jpg", "x")]}
        >>> group_counts(parts, {"p1": ["/d/p1/a.jpg"], "p2": ["/d/p2/b.jpg"], "p3": ["/d/p3/c.jpg"]})
        {'train': 1, 'val': 0, 'test': 1}
    """
    where = {s.path: name for name, items in splits.items() for s in items}
    out = dict.fromkeys(splits, 0)
    for paths in groups.values():
        for name in {where[p] for p in paths if p in where}:
            out[name] += 1
    return out


def group_shares(total: int, fractions: Sequence[float]) -> dict[str, int]:
    """How many of ``total`` groups each split should hold: ``round(f x total)``, at least 1 for a positive
    fraction, and, when that asks for more than ``total``, less for the largest (train first on ties) until
    the shares sum to ``total`` (or every positive share is 1).

    Examples:
        >>> group_shares(21, (0.7, 0.1, 0.2)), group_shares(4, (0.7, 0.1, 0.2)), group_shares(2, (0.7, 0.1, 0.2))
        ({'train': 15, 'val': 2, 'test': 4}, {'train': 2, 'val': 1, 'test': 1}, {'train': 1, 'val': 1, 'test': 1})
    """
    share = {k: max(1, round(f * total)) if f > 0 else 0 for k, f in zip(SPLITS, fractions)}
    while sum(share.values()) > total:
        big = max(SPLITS, key=lambda k: (share[k], -SPLITS.index(k)))
        if share[big] <= 1:
            break
        share[big] -= 1
    return share


def _fill_short_splits(
    parts: Mapping[str, list[Sample]], units: Sequence[Sequence[str]], fractions: Sequence[float]
) -> dict[str, list[Sample]]:
    """Move whole units (groups, with what is kept with them) into the splits that hold fewer than their
    share (:func:`group_shares`) of the units drawn.

    While a split holds fewer, the emptiest first (then in train, val, test order) takes a unit from the
    split with the most over its share (ties: the earlier); the unit moved is from the donor's stratum with
    the most units there (each unit's stratum: its most common label; ties: the first label by name), the
    first by path of that stratum, so no label runs out first and nothing depends on the order of the input.
    Stops when no split has a unit to spare. The images in no unit stay where they were drawn.
    """
    where: dict[str, str] = {s.path: name for name, items in parts.items() for s in items}
    label_of = {s.path: s.label for items in parts.values() for s in items}
    home: dict[str, str] = {}  # unit (its first path) -> its split
    members: dict[str, list[str]] = {}
    by_stratum: dict[str, dict[str, list[str]]] = {k: defaultdict(list) for k in SPLITS}
    for paths in units:
        drawn = sorted(p for p in paths if p in where)
        if not drawn:
            continue
        labels = [label_of[p] for p in drawn]
        counts = Counter(labels)
        stratum = next(lab for lab in labels if counts[lab] == max(counts.values()))
        home[drawn[0]], members[drawn[0]] = where[drawn[0]], drawn
        by_stratum[where[drawn[0]]][stratum].append(drawn[0])
    share = group_shares(len(home), fractions)
    held = Counter(home.values())
    heaps: dict[str, list[tuple[int, str]]] = {}
    for k in SPLITS:
        for stratum in by_stratum[k].values():
            stratum.sort(reverse=True)  # popped from the end: the first by path
        heaps[k] = [(-len(v), lab) for lab, v in by_stratum[k].items()]
        heapq.heapify(heaps[k])
    moved = False
    while True:
        short = [k for k in SPLITS if held[k] < share[k]]
        spare = [k for k in SPLITS if held[k] > share[k]]
        if not short or not spare:
            break
        taker = min(short, key=lambda k: (held[k] > 0, SPLITS.index(k)))
        donor = max(spare, key=lambda k: (held[k] - share[k], -SPLITS.index(k)))
        while True:  # the donor's largest stratum (stale heap entries skipped)
            count, lab = heapq.heappop(heaps[donor])
            if -count == len(by_stratum[donor][lab]) and count:
                break
        unit = by_stratum[donor][lab].pop()
        if by_stratum[donor][lab]:
            heapq.heappush(heaps[donor], (-len(by_stratum[donor][lab]), lab))
        home[unit] = taker
        held[donor] -= 1
        held[taker] += 1
        moved = True
    if not moved:
        return {k: list(v) for k, v in parts.items()}
    for unit, k in home.items():
        for p in members[unit]:
            where[p] = k
    out: dict[str, list[Sample]] = {k: [] for k in parts}
    for items in parts.values():
        for s in items:
            out[where[s.path]].append(s)
    for k in out:
        out[k].sort(key=lambda s: s.path)
    return out


def group_split_warnings(
    splits: Mapping[str, Sequence[Sample]],
    groups: Mapping[str, Sequence[str]],
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
) -> list[str]:
    """What is lopsided in a split kept whole by group: a split whose share of the images is further from
    its fraction ``f`` than ``min(0.15, max(0.05, f / 2))`` (one large patient can take most of the images;
    validation, asked 10%, is flagged below 5% or above 15%), naming the largest groups. ``[]`` when the
    shares are close.

    Examples:
        >>> big = [Sample(f"/d/p1/{i}.jpg", "x") for i in range(8)]
        >>> parts = {"train": [Sample("/d/p2/a.jpg", "x")], "val": [Sample("/d/p3/b.jpg", "x")], "test": big}
        >>> groups = {"p1": [s.path for s in big], "p2": ["/d/p2/a.jpg"], "p3": ["/d/p3/b.jpg"]}
        >>> head, largest = group_split_warnings(parts, groups)[0].split(": the groups differ much in size; ")
        >>> head
        'test holds 80% of the images (20% asked), train 10% (70% asked)'
        >>> largest
        'the largest: p1 (8 images, 80%), p2 (1 image, 10%), p3 (1 image, 10%)'
    """
    total = sum(len(v) for v in splits.values())
    if not total:
        return []
    off = [
        (k, len(splits[k]) / total, f)
        for k, f in zip(SPLITS, fractions)
        if k in splits and abs(len(splits[k]) / total - f) > min(0.15, max(0.05, f / 2))
    ]
    if not off:
        return []
    drawn = {s.path for items in splits.values() for s in items}
    sizes = sorted(((sum(p in drawn for p in paths), g) for g, paths in groups.items()), key=lambda t: (-t[0], t[1]))
    largest = ", ".join(f"{g} ({n} image{'s' * (n != 1)}, {n / total:.0%})" for n, g in sizes[:3] if n)
    said = ", ".join(
        f"{k} {got:.0%} ({f:.0%} asked)" if i else f"{k} holds {got:.0%} of the images ({f:.0%} asked)"
        for i, (k, got, f) in enumerate(sorted(off, key=lambda t: -abs(t[1] - t[2])))
    )
    return [f"{said}: the groups differ much in size; the largest: {largest}"]


def write_manifest(path: str | os.PathLike[str], splits: Mapping[str, Sequence[Sample]]) -> None:
    """Write the split as a CSV with columns ``split,path,label``, atomically.

    Paths are written relative to the manifest's folder when they can be (so the
    manifest and the data can move together), absolute otherwise. A file name that is
    not valid UTF-8 (:func:`scan` leaves such files out) is written as its raw bytes,
    which :func:`read_manifest` reads back as the same name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    here = os.path.abspath(path.parent)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        w = csv.writer(fh)
        w.writerow(["split", "path", "label"])
        for name, samples in splits.items():
            for s in samples:
                p = os.path.abspath(s.path)
                try:
                    rel = os.path.relpath(p, here)
                except ValueError:  # another drive (Windows)
                    rel = p
                w.writerow([name, Path(rel).as_posix(), s.label])
    os.replace(tmp, path)


def read_manifest(path: str | os.PathLike[str], taxonomy: TaxonomyLike | None = None) -> dict[str, list[Sample]]:
    """Read a manifest written by :func:`write_manifest`: ``{"train": [...], "val": [...], "test": [...], ...}``.

    Relative paths are resolved against the manifest's folder. With ``taxonomy``,
    every label is checked to be one of its nodes.

    Raises:
        FileNotFoundError: no such manifest.
        ValueError: the header lacks ``split``, ``path`` or ``label``, or a row is short.
        UnknownNodeError: with ``taxonomy``, labels that are not its nodes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"path: manifest {os.fspath(path)!r} not found. Write one with write_manifest() or pack."
        )
    here = os.path.abspath(path.parent)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if not {"split", "path", "label"} <= set(header):
            raise ValueError(f"{str(path)!r}: expected the header 'split,path,label', got {header!r}.")
        i_s, i_p, i_l = header.index("split"), header.index("path"), header.index("label")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < len(header):
                raise ValueError(f"{str(path)!r} line {line}: expected {len(header)} columns, got {row!r}.")
            out.setdefault(row[i_s], []).append(Sample(os.path.abspath(os.path.join(here, row[i_p])), row[i_l]))
    if taxonomy is not None:
        tax, source = _resolve_taxonomy(taxonomy)
        unknown: dict[str, list[str]] = defaultdict(list)
        for samples in out.values():
            for s in samples:
                if s.label not in tax:
                    unknown[s.label].append(s.path)
        if unknown:
            raise UnknownNodeError(_unknown_labels_message(unknown, tax, source, "csv"))
    return out


# ------------------------------------------------------------------ loading
def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # integer images: one mapping for all, never per image (a dim image must stay dim, whatever its
        # brightest pixel): 16-bit values, 0..65535 -> 0..255. Float images (rare: scientific TIFFs) are read
        # as [0, 1] when every value fits in it, else as 8-bit values: that choice is per image
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            scale = 255.0 if arr.size and np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1 else 1.0
        else:
            scale = 255.0 / 65535.0
        arr = np.clip(np.rint(np.nan_to_num(arr * scale)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return im.convert("RGB")


def check_crop(crop: Any, name: str = "crop") -> float:
    """``crop`` as a float in ``(0, 1]`` (the share of the short side kept), or a ValueError naming ``name``.

    Examples:
        >>> check_crop(0.7)
        0.7
    """
    if isinstance(crop, bool) or not isinstance(crop, (int, float, np.integer, np.floating)) or not 0 < crop <= 1:
        raise ValueError(
            f"{name}: expected the share of the short side to keep, in (0, 1], got {crop!r}; 1 keeps the whole image."
        )
    return float(crop)


def load_image(path: str | os.PathLike[str] | bytes, size: int, crop: float = 1.0) -> np.ndarray:
    """Read an image as RGB ``uint8`` ``(size, size, 3)``.

    With ``crop < 1``, first the centre square of side ``crop x`` the short side is
    cut out (zooming in on the centred cell; PBC's cells fill about half of the
    frame). Then the short side is resized to ``size`` (bicubic, antialiased; JPEGs
    are first decoded at the smallest DCT scale not below the size needed, which is
    faster) and the centre ``size x size`` is cropped: cells are centred in these
    crops and the aspect ratio is kept (PBC's 360x363 crops lose about one pixel
    row). Grayscale, palette, CMYK and 16-bit images are converted to RGB (16-bit
    values scaled by 255/65535, float images in ``[0, 1]`` by 255, the same for
    every image, so a dim image stays dim); transparent pixels are composited onto
    white.

    Args:
        path: an image file, or the encoded bytes of one.
        size: output side in pixels.
        crop: share of the short side kept around the centre, in ``(0, 1]``.

    Raises:
        ValueError: ``size`` is not a positive int, or ``crop`` is not in ``(0, 1]``.
        OSError: the file cannot be read (:func:`scan` finds these beforehand).
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size: expected a positive int (pixels), got {size!r}.")
    crop = check_crop(crop)
    src = io.BytesIO(path) if isinstance(path, (bytes, bytearray, memoryview)) else path
    with Image.open(src) as im:
        if im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK"):
            need = math.ceil(size / crop)
            im.draft(im.mode, (need, need))
        im = _to_rgb(im)
        w, h = im.size
        if crop < 1:
            side = max(1, round(min(w, h) * crop))
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            w = h = side
        if min(w, h) != size:
            s = size / min(w, h)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            im = im.resize((nw, nh), Image.BICUBIC)
            w, h = nw, nh
        left, top = (w - size) // 2, (h - size) // 2
        if (w, h) != (size, size):
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).copy()


class ImageDataset(torch.utils.data.Dataset):
    """A map-style dataset over :class:`Sample` s: ``(image, target node index)``.

    Args:
        samples: the samples (labels must be nodes of ``taxonomy``).
        taxonomy: a Taxonomy, bundled name or JSON path.
        size: image side in pixels (see :func:`load_image`).
        transform: optional callable applied to the ``uint8`` ``(3, size, size)`` tensor.
        crop: share of the short side kept around the centre before resizing (see :func:`load_image`).

    Returns (per item):
        ``(image, target)``: ``image`` a ``uint8`` tensor ``(3, size, size)`` (or what
        ``transform`` returns), ``target`` an ``int64`` scalar tensor (node index).

    Raises:
        UnknownNodeError: a label is not a node of the taxonomy.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        taxonomy: TaxonomyLike,
        size: int,
        transform: Callable[[torch.Tensor], Any] | None = None,
        crop: float = 1.0,
    ) -> None:
        self.crop = check_crop(crop)
        self.taxonomy = load_taxonomy(taxonomy)
        self.samples = list(samples)
        self.size = int(size)
        self.transform = transform
        self.targets = self.taxonomy.encode([s.label for s in self.samples]) if self.samples else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor]:
        image = torch.from_numpy(load_image(self.samples[i].path, self.size, self.crop)).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.tensor(int(self.targets[i]), dtype=torch.int64)


def relative_names(samples: Iterable[Sample], base: str | os.PathLike[str]) -> list[str]:
    """Paths relative to ``base`` with ``/`` separators (``"neutrophil/BNE_1.jpg"``)."""
    b = os.path.abspath(base)
    return [Path(os.path.relpath(os.path.abspath(s.path), b)).as_posix() for s in samples]
