"""Predict the cell type of images with a trained checkpoint; one CSV row per image.

    python -m examples.leukemia.predict runs/hierarchical-convnext_tiny/best cells/ --out predictions.csv
    python -m examples.leukemia.predict runs/x/best a.jpg b.png --threshold 0.8

Columns:

- ``path``; ``prediction``, ``prediction_path`` (root to node, ``/``-joined), ``prediction_prob``:
  the checkpoint's decoding rule (a leaf for ``argmax_leaf`` / ``top_down``);
- ``answer``, ``answer_path``, ``answer_prob``, ``answer_is_leaf``: the cautious answer
  (:func:`cautious_answer`): walking down the prediction's path, the last node before the first whose
  probability is below ``--threshold``; so the prediction itself or one of its ancestors: an inner node
  (e.g. ``immature_granulocyte`` rather than ``myelocyte``) when the model is not sure enough of a
  finer class;
- ``depth<d>``, ``p_depth<d>`` for every depth: the node of the prediction's path at that depth and
  its probability (the per-level probabilities).

An ``answer`` of the taxonomy's root (``root``) means that the prediction's own first-level node is
below ``--threshold``: the model commits to no class along its prediction (another first-level node
may reach the threshold when the rule, e.g. ``argmax_leaf``, predicts outside the most probable group).

Files that are not readable images are skipped and listed once on stderr.
"""

from __future__ import annotations

import argparse
import csv
import glob
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.leukemia.cli import ArgumentParser, device, exits_cleanly, output_file, probability, whole_number
from examples.leukemia.evaluate import DECODE_CHOICES, decode_rule
from examples.leukemia.gpu_data import add_tta_argument
from hiercls import Taxonomy
from hiercls.decoding import decode

log = logging.getLogger("examples.leukemia.predict")

__all__ = ["cautious_answer", "check_image_size", "find_images", "main", "predict_rows"]


def find_images(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Image files among ``inputs``: files, folders (searched recursively, sorted) and glob patterns.

    A pattern that the shell did not expand (quoted, or on Windows: ``"cells/*.jpg"``, ``"runs/**/*.png"``)
    is expanded here. Folders are walked as :func:`examples.leukemia.data.scan` walks ``--data``: linked
    folders are followed, a link back to a folder above is not (in a ``**`` pattern either). An image reached twice (listed twice, inside
    two folders given, or through a link) is kept once, at its first place, and the paths left out are
    named. A file whose name is not valid UTF-8 is left out with the fix (the CSV stores names as text). Files of a folder or a pattern whose extension is not an image's are left out and
    listed once on stderr; hidden files and folders (``.DS_Store``, ``.thumbnails/``) and ``__MACOSX``
    folders are left out silently, as :func:`examples.leukemia.data.scan` leaves them out; a file named
    on its own is kept whatever its extension (a file that is not a readable image is reported when it
    is read).

    Raises:
        FileNotFoundError: an input does not exist (or a pattern matches nothing).
        ValueError: no image file found.
    """
    from examples.leukemia.data import _SKIP_DIRS, BAD_NAME_REASON, IMAGE_EXTENSIONS, _is_text_name, _walk

    def hidden(parts: Sequence[str]) -> bool:  # as data.scan: dot-folders and __MACOSX never hold data
        return any(part.startswith(".") or part in _SKIP_DIRS for part in parts)

    found: list[str] = []
    ignored: list[str] = []
    real_of: dict[str, str] = {}
    for item in inputs:
        text = os.fspath(item)
        matches = [text]
        if not os.path.exists(text) and glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"inputs: no file or folder matches the pattern {text!r}.")
        recursive = "**" in text  # such a pattern lists every file below by itself: its folders are not walked
        for match in matches:
            path = Path(match)
            if match != text and ((recursive and path.is_dir()) or hidden(_unasked_parts(text, match))):
                continue
            if recursive and match != text and _through_loop(match, _fixed_base(text), real_of):
                continue
            if match != text and path.is_file():  # a pattern's file: kept as a folder's would be
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    found.append(str(path))
                else:
                    ignored.append(str(path))
            elif path.is_dir():  # walked as the scan walks --data: linked folders followed, loops not
                images, _, others = _walk(path)
                found.extend(str(p) for p in sorted(images) if not p.name.startswith("."))  # Path order, as before
                ignored.extend(p for p in others if not os.path.basename(p).startswith("."))
            elif path.is_file():
                found.append(str(path))
            else:
                raise FileNotFoundError(f"inputs: {text!r} does not exist (expected image files or folders).")
    ignored = list(dict.fromkeys(ignored))
    bad_names = list(dict.fromkeys(p for p in found if not _is_text_name(p)))
    if bad_names:  # the CSV and the overlays' titles store names as text, as the scan's manifest does
        found = [p for p in found if _is_text_name(p)]
        shown = [p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for p in bad_names]
        log.warning("left out %d image(s): %s; first: %s", len(bad_names), BAD_NAME_REASON, "; ".join(shown[:5]))
    if ignored:
        log.warning(
            "left out %d file(s) of the folders given without an image extension (%s): %s",
            len(ignored),
            ", ".join(sorted(IMAGE_EXTENSIONS)),
            "; ".join(ignored[:5]) + ("; ..." if len(ignored) > 5 else ""),
        )
    first_of: dict[str, str] = {}
    unique, repeats = [], []
    for p in found:
        key = os.path.realpath(p)
        if key in first_of:
            if p != first_of[key]:  # the same path listed twice needs no naming
                repeats.append(f"{p} (the file of {first_of[key]})")
        else:
            first_of[key] = p
            unique.append(p)
    if len(unique) < len(found):
        log.warning(
            "%d image(s) were given more than once (a path repeated, or a link to a file given too); each file "
            "is read once, under the first path that reaches it%s",
            len(found) - len(unique),
            ": left out " + "; ".join(list(dict.fromkeys(repeats))[:5]) + ("; ..." if len(set(repeats)) > 5 else "")
            if repeats
            else "",
        )
    if not unique:
        raise ValueError(f"inputs: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {list(map(str, inputs))}.")
    return unique


def _fixed_base(pattern: str) -> str:
    """The folder a glob pattern starts from: its parts before the first with a wildcard."""
    parts = Path(pattern).parts
    plain: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        plain.append(part)
    return os.path.join(*plain) if plain else "."


def _through_loop(match: str, base: str, real_of: dict[str, str]) -> bool:
    """Whether ``match`` lies below a folder that is a link back to a folder above it, from ``base`` down.

    ``glob``'s ``**`` follows such links until the system's link limit, so one file came back some forty
    times, the deepest copy first in sorted order. :func:`examples.leukemia.data._walk` stops at such a
    link, counting from the folder it was given; so does this, from the pattern's own folder ``base``
    (a link named in the pattern is the user's choice). ``real_of`` caches ``os.path.realpath``.
    """
    folders = []
    up = os.path.dirname(match)
    base = os.path.normpath(base)
    while up and os.path.normpath(up) != base:
        folders.append(up)
        parent = os.path.dirname(up)
        if parent == up:
            break
        up = parent
    folders.append(base)
    reals = []
    for folder in folders:  # from the match's own folder upwards
        if folder not in real_of:
            real_of[folder] = os.path.realpath(folder)
        reals.append(real_of[folder])
    return len(set(reals)) < len(reals)


def _matched_parts(pattern: str, match: str) -> tuple[str, ...]:
    """The parts of ``match`` that ``pattern``'s wildcards stood for (those below its last plain folder).

    Examples:
        >>> _matched_parts("cells/**/*.png", "cells/__MACOSX/a/x.png")
        ('__MACOSX', 'a', 'x.png')
    """
    parts = Path(pattern).parts
    plain = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(match).parts[plain:]


def _unasked_parts(pattern: str, match: str) -> tuple[str, ...]:
    """The parts of ``match`` the wildcards stood for, less those whose pattern part starts with a dot.

    ``cells/.*/*.png`` asks for dot-folders (glob matches them only when the dot is spelt), so they are
    not skipped as hidden; a ``**`` pattern's parts do not line up with its match's, and count whole.

    Examples:
        >>> _unasked_parts("cells/.*/*.png", "cells/.thumb/c.png")
        ('c.png',)
        >>> _unasked_parts("cells/*/*.png", "cells/__MACOSX/c.png")
        ('__MACOSX', 'c.png')
    """
    parts = _matched_parts(pattern, match)
    asked = Path(pattern).parts[len(Path(match).parts) - len(parts) :]
    if "**" in pattern or len(asked) != len(parts):
        return parts
    return tuple(part for part, want in zip(parts, asked, strict=True) if not want.startswith("."))


def _read_images(
    paths: Sequence[str], size: int, crop: float = 1.0, dim: list[str] | None = None
) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """Read ``paths`` as RGB; returns (paths read, their images, path -> why it was not read). Paths of
    16-bit images that use 12 bits or fewer (they load nearly black) are appended to ``dim``."""
    from PIL import Image

    from examples.leukemia.data import dim_16bit, load_image

    kept, arrays, bad = [], [], {}
    for p in paths:
        try:
            arrays.append(load_image(p, size, crop))
            kept.append(p)
            if dim is not None and dim_16bit(p):
                dim.append(p)
        except Image.DecompressionBombError:  # not an OSError: it stopped the whole run
            bad[p] = (
                "image too large (PIL decompression-bomb limit; raise PIL.Image.MAX_IMAGE_PIXELS if it is yours, or "
                "shrink it)"
            )
        except (OSError, ValueError, SyntaxError, EOFError) as err:  # not an image, truncated, unreadable
            bad[p] = f"{type(err).__name__}: {err}"
    stack = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return kept, stack, bad


def warn_dim(dim: Sequence[str]) -> None:
    """Log the images that :func:`examples.leukemia.data.dim_16bit` found, once, with the fix: their
    predictions are made on nearly black pixels."""
    if dim:
        from examples.leukemia.data import DIM_16BIT_NOTE, _first

        log.warning(
            "%d image(s): %s; their predictions are made on nearly black pixels; first: %s",
            len(dim),
            DIM_16BIT_NOTE,
            _first(dim),
        )


def predict_rows(
    probs: torch.Tensor, taxonomy: Taxonomy, paths: Sequence[str], *, rule: str, threshold: float
) -> list[dict[str, Any]]:
    """CSV rows (see the module docstring) from node marginals ``(N, num_nodes)``."""
    probs = probs.float().cpu()
    pred = decode(probs, taxonomy, rule, threshold=threshold if rule == "threshold" else None).numpy()
    table = np.asarray(taxonomy.ancestor_table)  # (num_nodes, max_depth + 1): the path of each node
    nodes = taxonomy.nodes
    leaf = np.asarray(taxonomy.is_leaf_mask)
    p_np = probs.numpy()
    answer = cautious_answer(p_np, table[pred], threshold)
    rows = []
    for i, path in enumerate(paths):
        n, a = int(pred[i]), int(answer[i])
        route = [int(x) for x in table[n] if x >= 0]
        row: dict[str, Any] = {
            "path": path,
            "prediction": nodes[n],
            "prediction_path": "/".join(nodes[x] for x in route),
            "prediction_prob": round(float(p_np[i, n]), 6),
            "answer": nodes[a],
            "answer_path": "/".join(nodes[int(x)] for x in table[a] if x >= 0),
            "answer_prob": round(float(p_np[i, a]), 6),
            "answer_is_leaf": bool(leaf[a]),
        }
        for d in range(1, taxonomy.max_depth + 1):
            x = int(table[n, d])
            row[f"depth{d}"] = nodes[x] if x >= 0 else ""
            row[f"p_depth{d}"] = round(float(p_np[i, x]), 6) if x >= 0 else ""
        rows.append(row)
    return rows


def cautious_answer(probs: np.ndarray, routes: np.ndarray, threshold: float) -> np.ndarray:
    """The node where a walk down each prediction's path stops: its last node before the first one whose
    probability is below ``threshold`` (the root always counts).

    The answer is therefore the prediction or one of its ancestors, never a node of another branch,
    even at a low threshold where nodes of several branches reach it.

    Args:
        probs: node marginals ``(N, num_nodes)``.
        routes: ``(N, max_depth + 1)`` node indices of each prediction's path from the root, ``-1`` after
            its end (rows of ``Taxonomy.ancestor_table``).
        threshold: the probability a node needs for the walk to go on to it.

    Examples:
        >>> probs = np.array([[1.0, 0.7, 0.3, 0.4, 0.3]])  # root, a, b, a1, a2
        >>> cautious_answer(probs, np.array([[0, 1, 3]]), 0.5).tolist()  # a reaches it, a1 does not
        [1]
        >>> cautious_answer(probs, np.array([[0, 2, -1]]), 0.25).tolist()  # the prediction b itself
        [2]
    """
    valid = routes >= 0
    # compared exactly, as decode's threshold rule: NumPy would round threshold to the marginals' dtype
    # first (0.7 -> 0.69999999 in float32), so use the smallest value of that dtype that is >= threshold
    tau = np.asarray(threshold, dtype=probs.dtype)
    if np.isfinite(tau) and float(tau) < threshold:
        tau = np.nextafter(tau, np.asarray(np.inf, dtype=probs.dtype))
    reach = np.take_along_axis(probs, np.where(valid, routes, 0), axis=1) >= tau
    reach[:, 0] = True
    depth = np.cumprod(reach & valid, axis=1).sum(1) - 1  # the walk stops at the first node below
    return routes[np.arange(len(routes)), depth]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m examples.leukemia.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint (run/best, run/best.json, or a run folder)")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument(
        "--out",
        "--output",
        type=output_file,
        default="predictions.csv",
        help="CSV to write ('-' for stdout; default predictions.csv)",
    )
    p.add_argument(
        "--decode",
        type=decode_rule,
        default=None,
        metavar="RULE",
        help=f"rule for 'prediction': {', '.join(DECODE_CHOICES)} (auto: the method's default, as in train; "
        "default: the checkpoint's own)",
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="confidence needed for the 'answer' to go deeper (default: the checkpoint's --threshold, else 0.5)",
    )
    p.add_argument(
        "--img-size", type=whole_number(1), default=None, help="image side in pixels (default: the training resolution)"
    )
    p.add_argument("--batch-size", type=whole_number(1), default=128, help="images per inference batch")
    add_tta_argument(p, note="default: the checkpoint's (train --tta)")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1... (default: cuda when there is one)")
    return p


def check_image_size(size: int, config: Mapping[str, Any], model: torch.nn.Module) -> None:
    """Refuse a ``--img-size`` the backbone cannot take; warn when it is not the checkpoint's training size."""
    from examples.leukemia.models import check_input_size

    check_input_size(model, size)
    trained = config.get("image_size")
    if trained and int(trained) != size:
        log.warning(
            "--img-size %d: the checkpoint was trained on %d px images; a model sees cells at another scale "
            "at %d px and its accuracy may drop (leave --img-size out to read images at %d px)",
            size,
            int(trained),
            size,
            int(trained),
        )


#: images read, predicted and written per step: memory holds one chunk of images, not all of them
CHUNK = 1024


@exits_cleanly
def main(argv: list[str] | None = None, *, keep_rows: bool = True) -> list[dict[str, Any]]:
    """Entry point of ``python -m examples.leukemia.predict``; returns the rows written.

    Images are read, predicted and written ``CHUNK`` at a time, so memory holds one chunk of images, plus
    the rows to return (about 1.3 KB an image) unless ``keep_rows`` is off: then an empty list comes back,
    and memory stays flat however many images there are (the command line runs this way);
    the CSV is written to a temporary file beside ``--out`` and moved into place at the end, so a run
    stopped midway leaves no half-written ``--out`` (nor replaces an earlier one).
    """
    from examples.leukemia.checkpoint import load_model
    from examples.leukemia.evaluate import checkpoint_decoding, resolve_checkpoint
    from examples.leukemia.train import predict

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    found = find_images(args.inputs)  # a missing input is reported before the model is loaded
    model, ckpt = load_model(resolve_checkpoint(args.checkpoint), device=device)
    size = int(args.img_size or ckpt.config.get("image_size") or 128)
    check_image_size(size, ckpt.config, model)
    crop = float(ckpt.config.get("crop", 1.0))
    tta = args.tta or str(ckpt.config.get("tta", "none"))
    # the threshold also sets the 'answer' column, whatever the rule: no warning here
    rule, threshold = checkpoint_decoding(ckpt.config, args.decode, args.threshold, warn_unused=False)

    rows: list[dict[str, Any]] = []
    written = 0
    bad: dict[str, str] = {}
    dim: list[str] = []
    # a symlinked --out is written through (its target replaced), keeping the target's permissions
    out = None if args.out == "-" else Path(os.path.realpath(args.out))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    fh = sys.stdout if out is None else open(tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
    bar = _progress(len(found))
    try:
        writer = None
        for start in range(0, len(found), CHUNK):
            part = found[start : start + CHUNK]
            paths, images, skipped = _read_images(part, size, crop, dim)
            bad |= skipped
            if paths:
                batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
                probs = predict(
                    model, batch, batch_size=args.batch_size, device=device, amp=True, channels_last=True, tta=tta
                )
                new = predict_rows(probs, ckpt.taxonomy, paths, rule=rule, threshold=threshold)
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(new[0]))
                    writer.writeheader()
                writer.writerows(new)
                written += len(new)
                if keep_rows:
                    rows += new
            if bar is not None:
                bar.update(len(part))
        if bad:
            first = "; ".join(f"{p} ({why})" for p, why in list(bad.items())[:5])
            log.warning("skipped %d file(s) that are not readable images: %s", len(bad), first)
        warn_dim(dim)
        if not written:
            raise ValueError(
                f"inputs: expected readable images, got none among the {len(bad)} file(s) found (see the warning "
                "above); pass image files (PNG, JPEG, TIFF...) or folders of them."
            )
    except BaseException:
        if out is not None:
            fh.close()
            tmp.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    if out is not None:
        fh.close()
        if out.is_file():
            shutil.copymode(out, tmp)
        os.replace(tmp, out)
    else:
        fh.flush()
    if ckpt.config.get("synthetic"):
        log.warning("this checkpoint was trained on SYNTHETIC images: its predictions mean nothing for real cells.")
    if out is not None:
        log.info("wrote %d prediction(s) to %s", written, args.out)
    return rows


def _progress(total: int) -> Any:
    """A progress bar over the images on stderr when it is a terminal and there are several chunks."""
    if total <= CHUNK:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="predict", unit="img", file=sys.stderr, disable=None)


if __name__ == "__main__":
    main(keep_rows=False)
