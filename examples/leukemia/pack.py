"""Decode a dataset once into a compact cache: JPEG bytes at one resolution, labels, split.

usage::

    python -m examples.leukemia.pack --data ../shared/data/pbc --size 128 --out cache/pbc128.npz
    python -m examples.leukemia.pack --data ../shared/data/all4 --taxonomy all4 --size 128 --out cache/all4_128.npz
    python -m examples.leukemia.pack --data ../shared/data/pbc --size 128 --tool-format --out cache/pbc_tool128.npz

The data is scanned and checked (:func:`examples.leukemia.data.scan`), split
(:func:`examples.leukemia.data.split`), and each image is resized and
centre-cropped to ``size x size`` (:func:`examples.leukemia.data.load_image`)
and re-encoded as JPEG (quality 86, optimised Huffman tables: the team's PBC
copy at 128 px is ~58 MB) into one ``uint8`` buffer. The ``.npz`` holds:

- ``data`` (uint8, all JPEG bytes), ``offsets`` (int64, ``N + 1``): image ``i`` is
  ``data[offsets[i]:offsets[i + 1]]``;
- ``names``: paths relative to the dataset's class-folder root
  (``"neutrophil/BNE_1.jpg"``), sorted;
- ``targets`` (int32 node indices of the stored taxonomy: the labels, compactly),
  ``split`` (bytes ``b"train"``/``b"val"``/``b"test"``);
- ``taxonomy`` (its JSON text), ``fingerprint``, ``size``, ``meta`` (JSON: seed,
  fractions, layout, quality, source).

``data``, ``offsets`` and ``names`` are the format of the peer baseline
``tools/flat_baseline_gpu_data.py``, so a pack is also its input;
``--tool-format`` writes only those three arrays. :func:`load_pack` decodes a
pack once, in parallel, into a ``uint8`` tensor ``(N, 3, size, size)``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from PIL import Image

from examples.leukemia.cli import ArgumentParser, exits_cleanly, output_file
from examples.leukemia.data import (
    DEFAULT_SEED,
    LAYOUTS,
    SPLITS,
    Layout,
    TaxonomyLike,
    _resolve_taxonomy,
    check_crop,
    copies_in_train,
    default_workers,
    detect_layout,
    group_split_warnings,
    groups_across_splits,
    load_image,
    parallel_map,
    relative_names,
    scan,
    split,
    split_images,
)
from hiercls import Taxonomy

__all__ = ["PACK_FORMAT", "Pack", "load_pack", "main", "pack", "pack_file"]

log = logging.getLogger("examples.leukemia.pack")

PACK_FORMAT = "hiercls-leukemia-pack/1"
DEFAULT_QUALITY = 86
_REQUIRED = ("data", "offsets", "names", "targets", "split", "taxonomy", "fingerprint", "size")


def _encode_chunk(paths: list[str], size: int, quality: int, crop: float = 1.0) -> list[tuple[bytes, int]]:
    # each image's JPEG at `size`, and its short side after the crop (below `size`: enlarged)
    out = []
    for p in paths:
        with Image.open(p) as im:  # the header only
            short = max(1, round(min(im.size) * crop))
        buf = io.BytesIO()
        Image.fromarray(load_image(p, size, crop)).save(buf, "JPEG", quality=quality, optimize=True)
        out.append((buf.getvalue(), short))
    return out


def _decode_chunk(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


def _default_taxonomy(layout: str) -> str:
    if layout in ("pbc", "all4"):
        return layout
    raise ValueError(
        f"taxonomy: required for layout {layout!r}; pass --taxonomy paper|pbc|all4 or the path of a taxonomy JSON file."
    )


def pack(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    taxonomy: TaxonomyLike | None = None,
    layout: Layout = "auto",
    size: int = 128,
    seed: int = DEFAULT_SEED,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    quality: int = DEFAULT_QUALITY,
    crop: float = 1.0,
    workers: int | None = None,
    tool_format: bool = False,
    progress: bool = True,
    group_duplicates: bool = False,
    split_by_group: bool = False,
) -> dict[str, Any]:
    """Scan, check, split and encode a dataset into one ``.npz`` (see the module docstring).

    Args:
        data: the dataset (folder or CSV), any layout of :func:`examples.leukemia.data.scan`.
        out: the ``.npz`` to write (atomically; parent folders are created).
        taxonomy: a Taxonomy, bundled name or JSON path; default ``pbc``/``all4`` for those layouts.
        layout: as for ``scan``.
        size: side of the stored images in pixels.
        seed, fractions: the split (:func:`examples.leukemia.data.split`).
        quality: JPEG quality of the stored images (1..100).
        crop: share of each image's short side kept around the centre before resizing, in ``(0, 1]``
            (:func:`examples.leukemia.data.load_image`); stored in the pack's ``meta``, and
            ``predict``/``explain`` apply it to new images.
        workers: processes for decoding and encoding (default: usable cores, at most 16).
        tool_format: write only ``data``, ``offsets``, ``names`` (the peer baseline's input).
        progress: show a tqdm progress bar (when stderr is a terminal).
        group_duplicates: keep byte-identical images in one split (``split(together=...)``); off, the
            split matches the peer baseline's and a warning counts the copies across splits. Refused with
            ``tool_format``, whose pack holds no split.
        split_by_group: keep each patient's or slide's images in one split
            (:func:`examples.leukemia.data.split_images`; groups are :attr:`ScanReport.groups`); off, a
            warning counts the groups split across. Refused with ``tool_format``.

    Returns:
        a summary dict: ``out``, ``num_images``, ``bytes``, ``per_split``, ``copies_in_train``, ``skipped``,
        ``enlarged`` (images whose short side, after ``crop``, is below ``size``: a warning names them),
        ``scan_s``, ``encode_s``.

    Raises:
        ValueError: bad ``size``/``quality``, ``group_duplicates`` or ``split_by_group`` with ``tool_format``,
            ``split_by_group`` without groups (or too few of them), no taxonomy for a
            ``folder``/``csv`` layout, and
            everything :func:`examples.leukemia.data.scan` raises.
    """
    out = Path(out)
    if out.is_dir():  # found before the work, not by the rename at its end
        raise ValueError(
            f"out: {os.fspath(out)!r} is a folder; expected the .npz file to write, e.g. "
            f"{os.fspath(out / 'pack.npz')!r}."
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size: expected a positive int (pixels), got {size!r}.")
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality: expected an int JPEG quality in [1, 100], got {quality!r}.")
    crop = check_crop(crop)
    if tool_format and group_duplicates:
        raise ValueError(
            "group_duplicates: a --tool-format pack holds no split (the peer tool draws its own, path by path), so "
            "it cannot keep copies together; drop --group-duplicates, or drop --tool-format for a pack of this "
            "example."
        )
    if tool_format and split_by_group:
        raise ValueError(
            "split_by_group: a --tool-format pack holds no split (the peer tool draws its own, image by image), so "
            "it cannot keep groups together; drop --split-by-group, or drop --tool-format for a pack of this "
            "example."
        )
    if out.exists():
        log.warning(
            "%s exists and will be replaced by the new pack when it is written; runs trained on the old pack will no "
            "longer match it (evaluate scores them on the new one): write to another --out to keep both",
            os.fspath(out),
        )
    t0 = time.perf_counter()
    if taxonomy is None:
        taxonomy = _default_taxonomy(detect_layout(data) if layout == "auto" else layout)
    tax, source = _resolve_taxonomy(taxonomy)
    # the spec, not the Taxonomy: scan's messages then name the taxonomy given ('paper', a path)
    samples, report = scan(data, taxonomy, layout=layout, check_images=True, workers=workers)
    parts = split_images(
        samples,
        report,
        seed=seed,
        fractions=fractions,
        group_duplicates=group_duplicates,
        split_by_group=split_by_group,
        flag="--split-by-group",
    )
    across = groups_across_splits(parts, report.groups) if not tool_format else 0
    if across:
        log.warning(
            "%d of the %d groups (%s: patients or slides?) have images in more than one split of %s, so a test "
            "image's patient can be in train. Pack with --split-by-group to keep each group in one split",
            across,
            len(report.groups),
            report.group_source,
            os.fspath(out),
        )
    if split_by_group:
        for problem in group_split_warnings(parts, report.groups, fractions):
            log.warning("%s: split by group: %s; scores on so few or so many images vary more", os.fspath(out), problem)
    # a tool-format pack holds no split: the peer tool draws its own, which is this example's with DEFAULT_SEED
    drawn = split(samples, seed=DEFAULT_SEED) if tool_format else parts
    leaks = copies_in_train(drawn, report.duplicates)
    if any(leaks.values()) and tool_format:
        log.warning(
            "byte-identical copies of training images (%s) fall in the evaluation splits the peer tool draws from "
            "%s (its split is path by path, and cannot keep copies together); its scores of those images can come "
            "from memory",
            ", ".join(f"{n} in {s}" for s, n in leaks.items() if n),
            os.fspath(out),
        )
    elif any(leaks.values()):
        log.warning(
            "byte-identical copies of training images (%s) are in the evaluation splits of %s; their scores can "
            "come from memory. Pack with --group-duplicates to keep each image's copies in one split",
            ", ".join(f"{n} in {s}" for s, n in leaks.items() if n),
            os.fspath(out),
        )
    split_of = {s.path: name for name, ss in parts.items() for s in ss}
    names = relative_names(samples, report.base)
    order = sorted(range(len(samples)), key=names.__getitem__)
    samples = [samples[i] for i in order]
    names = [names[i] for i in order]
    scan_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # disable=None: shown on a terminal only, not written into a redirected log
        bar = tqdm(total=len(samples), desc=f"pack {size}px", unit="img", file=sys.stderr, disable=None)
    try:
        blobs = parallel_map(
            _encode_chunk,
            [s.path for s in samples],
            size,
            quality,
            crop,
            workers=workers,
            min_parallel=64,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    shorts = np.array([short for _, short in blobs], dtype=np.int64)
    blobs = [blob for blob, _ in blobs]
    enlarged = np.flatnonzero(shorts < size)
    if len(enlarged):
        first = ", ".join(repr(names[i]) for i in enlarged[:3])
        log.warning(
            "%s: %d of %d images are smaller than --size %d (short side%s from %d px) and were enlarged "
            "(bicubic), e.g. %s. That is right when a model needs that input size; to keep them at their own "
            "resolution, pack at --size %d or less.",
            os.fspath(out),
            len(enlarged),
            len(blobs),
            size,
            f" after --crop {crop}" if crop < 1 else "",
            int(shorts.min()),
            first,
            int(shorts.min()),
        )
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in blobs], out=offsets[1:])
    buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    arrays: dict[str, np.ndarray] = {"data": buffer, "offsets": offsets, "names": np.array(names, dtype=str)}
    if not tool_format:
        meta = {
            "format": PACK_FORMAT,
            "seed": seed,
            "fractions": list(fractions),
            "group_duplicates": bool(group_duplicates),
            "split_by_group": bool(split_by_group),
            "copies_in_train": leaks,  # train --pack repeats the warning from it
            "layout": report.layout,
            "quality": quality,
            "crop": crop,
            "source": report.root,
            "taxonomy_source": source,
        }
        arrays |= {
            "targets": tax.encode([s.label for s in samples]).astype(np.int32),
            "split": np.array([split_of[s.path] for s in samples], dtype="S5"),
            "taxonomy": np.array(tax.to_json()),
            "fingerprint": np.array(tax.fingerprint),
            "size": np.array(size, dtype=np.int64),
            "meta": np.array(json.dumps(meta)),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:  # a failed or interrupted write leaves no temporary file and the old pack as it was
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    encode_s = time.perf_counter() - t1
    return {
        "out": str(out),
        "num_images": len(samples),
        "bytes": out.stat().st_size,
        "per_split": {k: len(v) for k, v in parts.items()},
        "copies_in_train": leaks,
        "skipped": report.num_skipped,
        "enlarged": len(enlarged),
        "scan_s": round(scan_s, 2),
        "encode_s": round(encode_s, 2),
    }


@dataclass
class Pack:
    """A decoded pack: images in memory (optionally on a GPU) with their targets and split.

    Attributes:
        images: ``uint8`` tensor ``(N, 3, size, size)`` on ``device``.
        targets: ``int64`` tensor ``(N,)`` of node indices, on ``device``.
        split: ``str`` numpy array ``(N,)``: ``"train"``, ``"val"`` or ``"test"``.
        names: relative image paths (``"neutrophil/BNE_1.jpg"``), sorted.
        labels: node names ``(N,)``.
        taxonomy: the taxonomy stored in the pack.
        size: image side in pixels.
        meta: seed, fractions, layout, quality and source of the pack.
    """

    images: torch.Tensor
    targets: torch.Tensor
    split: np.ndarray
    names: list[str]
    labels: list[str]
    taxonomy: Taxonomy
    size: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def indices(self, split: str, device: torch.device | str | None = None) -> torch.Tensor:
        """``int64`` indices of the images of ``split`` (on ``device``, default the images' device).

        Raises:
            ValueError: ``split`` is not one of the pack's splits.
        """
        if split not in SPLITS and split not in set(self.split.tolist()):
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}.")
        idx = torch.from_numpy(np.flatnonzero(self.split == split))
        return idx.to(self.images.device if device is None else device)


def load_pack(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    workers: int | None = None,
    *,
    taxonomy: TaxonomyLike | None = None,
) -> Pack:
    """Read a pack written by :func:`pack` and decode its images once, in parallel.

    Args:
        path: the ``.npz``.
        device: where ``images`` and ``targets`` go (e.g. ``"cuda"``).
        workers: decoding processes (default: usable cores, at most 16).
        taxonomy: if given, it must equal the pack's (same fingerprint).

    Returns:
        a :class:`Pack`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a pack of this example (e.g. a ``--tool-format`` pack), or
            ``taxonomy`` differs from the pack's.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"path: pack {os.fspath(path)!r} not found. Create it with "
            "python -m examples.leukemia.pack --data DIR --size 128 --out " + os.fspath(path)
        )
    if not zipfile.is_zipfile(path):  # np.load would read it as a pickle and advise allow_pickle: never
        head = _first_bytes(path)
        if head.startswith("b'PK"):
            _not_a_pack(path, "a zip archive cut short or damaged: its table of contents at the end is missing")
        _not_a_pack(path, f"not a zip archive, as every .npz is; it starts with {head}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _REQUIRED if k not in z.files]
            if missing:
                tool = set(z.files) >= {"data", "offsets", "names"}
                _not_a_pack(
                    path,
                    f"an .npz without {', '.join(missing)}"
                    + ("; a --tool-format pack holds only data/offsets/names" if tool else f"; it holds {z.files}"),
                    " without --tool-format" if tool else "",
                )
            data, offsets = z["data"], z["offsets"]
            names = z["names"].tolist()
            target_arr = z["targets"].astype(np.int64)
            split_arr = z["split"].astype(str)
            tax_json = str(z["taxonomy"])
            fingerprint = str(z["fingerprint"])
            size = int(z["size"])
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    except (OSError, EOFError, ValueError, TypeError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, ValueError) and str(err).startswith(_NOT_A_PACK):
            raise
        # a truncated copy, a damaged member, an array of objects (never unpickled)
        what = "an array of Python objects" if "pickle" in str(err) else f"{type(err).__name__}: {err}"
        _not_a_pack(path, f"a damaged or foreign .npz ({what})")
    with tempfile.TemporaryDirectory() as tmpdir:  # Taxonomy.from_json reads files
        tax_file = Path(tmpdir) / "taxonomy.json"
        tax_file.write_text(tax_json, encoding="utf-8")
        tax = Taxonomy.from_json(tax_file)
    if tax.fingerprint != fingerprint:
        raise ValueError(
            f"{os.fspath(path)!r}: the stored taxonomy does not match its stored fingerprint; the pack is damaged. "
            "Re-create it with python -m examples.leukemia.pack."
        )
    if taxonomy is not None:
        want, source = _resolve_taxonomy(taxonomy)
        if want.fingerprint != fingerprint:
            raise ValueError(
                f"taxonomy: the taxonomy {source}, fingerprint {want.fingerprint[:12]}, differs from the one the pack "
                f"{os.fspath(path)!r} was made with (fingerprint {fingerprint[:12]}, root {tax.root!r}, "
                f"{tax.num_nodes} nodes). Re-pack with this taxonomy, or use the pack's."
            )
    blobs = [data[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(names))]
    chunks = parallel_map(_decode_chunks, blobs, workers=workers, min_parallel=2048, chunk=512)
    del blobs
    # one (N, 3, S, S) tensor filled chunk by chunk, each chunk dropped once copied: about one copy of the
    # images at a time (a concatenate, then a permuted copy, held three: 2.2 GB for PBC at 128 px)
    images = torch.empty((len(names), 3, size, size), dtype=torch.uint8)
    at = 0
    for i, chunk in enumerate(chunks):
        images[at : at + len(chunk)] = torch.from_numpy(chunk).permute(0, 3, 1, 2)
        at += len(chunk)
        chunks[i] = None
    images = images.to(device)
    labels = tax.names(target_arr) if len(target_arr) else []
    targets = torch.from_numpy(target_arr).to(device)
    return Pack(images, targets, split_arr, names, labels, tax, size, meta)


def read_pack_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The meta of a pack (seed, fractions, ``group_duplicates``...) without decoding its images; ``{}`` for a
    file without one (a ``--tool-format`` pack, or not a pack: :func:`load_pack` says what is wrong).

    Examples:
        >>> read_pack_meta("/no/such/pack.npz")
        {}
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    except (OSError, EOFError, ValueError, TypeError, KeyError, zipfile.BadZipFile, zlib.error):
        return {}
    return meta if isinstance(meta, dict) else {}


_NOT_A_PACK = "--pack "


def _not_a_pack(path: Path, found: str, how: str = "") -> NoReturn:
    """Refuse a file that is not a readable pack; ``found`` says what it is instead."""
    raise ValueError(
        f"{_NOT_A_PACK}{os.fspath(path)!r}: not a pack made by `python -m examples.leukemia.pack` ({found}); "
        f"re-create it with python -m examples.leukemia.pack --data DIR --size 128 --out {os.fspath(path)}{how}."
    )


def _first_bytes(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        return f"nothing readable ({err.strerror})"
    return repr(head) if head else "nothing: it is empty"


def _decode_chunks(blobs: list[bytes]) -> list[np.ndarray]:
    # one (n, H, W, 3) array per chunk, in a list: parallel_map concatenates the lists
    return [_decode_chunk(blobs)]


def pack_file(text: str) -> str:
    """``argparse`` type of ``--out``: a file to write (:func:`examples.leukemia.cli.output_file`), not stdout.

    Checked when the command line is read: a folder failed at the rename after all the work.

    Examples:
        >>> pack_file("cache/pbc128.npz")
        'cache/pbc128.npz'
    """
    if text == "-":
        raise argparse.ArgumentTypeError("expected a .npz file to write, got '-' (a pack cannot go to stdout)")
    if text and Path(os.path.expanduser(text)).is_dir():
        example = os.fspath(Path(os.path.expanduser(text)) / "pack.npz")
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give the .npz file to write, e.g. {example!r}")
    return output_file(text)


@exits_cleanly
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line: see the module docstring (``--help``)."""
    ap = ArgumentParser(prog="python -m examples.leukemia.pack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder or CSV (folder tree, CSV, PBC or ALL layout)")
    ap.add_argument("--layout", default="auto", choices=LAYOUTS)
    ap.add_argument(
        "--taxonomy",
        default=None,
        help="paper | pbc | all4 | PATH.json; required for a folder or CSV layout (a PBC or ALL download implies "
        "pbc or all4)",
    )
    ap.add_argument("--size", type=int, default=128, help="stored image side in pixels (default 128)")
    ap.add_argument(
        "--out",
        "--output",
        type=pack_file,
        required=True,
        help="the .npz to write (an existing file is replaced, with a warning)",
    )
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"split seed (default {DEFAULT_SEED})")
    ap.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help=f"JPEG quality (default {DEFAULT_QUALITY})")
    ap.add_argument(
        "--crop",
        type=float,
        default=1.0,
        help="share of the short side kept around the centre before resizing (default 1: all of it; PBC's cells "
        "fill about half the frame, so 0.7 zooms in without cutting the large ones)",
    )
    ap.add_argument("--workers", type=int, default=None, help=f"processes (default {default_workers()})")
    ap.add_argument(
        "--tool-format", action="store_true", help="only data/offsets/names, for tools/flat_baseline_gpu_data.py"
    )
    ap.add_argument(
        "--group-duplicates",
        action="store_true",
        help="keep byte-identical images in one split (off: the split matches the peer baseline's, and a warning "
        "counts the copies it leaves across splits)",
    )
    ap.add_argument(
        "--split-by-group",
        action="store_true",
        help="keep each patient's or slide's images in one split: a folder on the path that is neither a "
        "taxonomy node nor a class folder, or a CSV column group/patient/slide... (off: image by image, and a "
        "warning counts the groups split across)",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.taxonomy:
        from examples.leukemia.train import tree_problem

        problem = tree_problem(args.taxonomy)
        if problem:
            ap.error(problem)
    summary = pack(
        args.data,
        args.out,
        taxonomy=args.taxonomy,
        layout=args.layout,
        size=args.size,
        seed=args.seed,
        quality=args.quality,
        crop=args.crop,
        workers=args.workers,
        tool_format=args.tool_format,
        progress=not args.no_progress,
        group_duplicates=args.group_duplicates,
        split_by_group=args.split_by_group,
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
