"""Where does the model look? One Grad-CAM map per level of each image's predicted path.

    python -m examples.leukemia.explain runs/hierarchical-convnext_tiny/best cells/ --out explain/
    python -m examples.leukemia.explain runs/hierarchical-vit_small_patch16_224/best a.jpg --max-images 4

For each image the model's prediction is decoded (the checkpoint's rule) and, for every node on
its path (e.g. ``Leukemia`` -> ``Acute`` -> ``ALL``), a Grad-CAM map (the ``grad-cam`` library,
``pytorch_grad_cam``) is computed with that node's log marginal as the target, as in the Grad-CAM
figures of Hamdi et al.:

- CNN backbones: the last feature stage of the backbone (timm's ``feature_info[-1]``);
- ViT backbones: the first norm of the last transformer block, patch tokens reshaped to the patch
  grid (the prefix/class tokens dropped): Grad-CAM on the last block;
- the per-level method: the backbone of that level (each level has its own model).

Written to ``--out``: one overlay PNG per image and level, ``<i>_<image>_d<depth>_<node>.png`` with
``<i>`` the image's 3-digit position in the run (``000``, ``001``...; images that share a file name,
``a/x.jpg`` and ``b/x.jpg``, get distinct overlays), a combined figure ``explain.png`` (rows:
images, the first ``FIGURE_ROWS`` of them; columns: the input, then one map per level) and
``explain.csv`` listing every overlay. A rerun into the same ``--out`` first removes the overlays the
earlier ``explain.csv`` there lists (and nothing else); an ``--out`` inside a folder of the images is
refused (the overlays would lie among the cells).
"""

from __future__ import annotations

import argparse
import csv
import glob
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from examples.leukemia.cli import (
    ArgumentParser,
    device,
    exits_cleanly,
    output_folder,
    probability,
    remove_listed_pngs,
    whole_number,
)
from examples.leukemia.evaluate import DECODE_CHOICES, decode_rule
from examples.leukemia.gpu_data import add_tta_argument, tta_mean
from hiercls.decoding import decode

log = logging.getLogger("examples.leukemia.explain")

#: most image rows drawn in ``explain.png`` (every image still gets its overlays and CSV rows): at 2.5
#: inches a row, more would make a figure too tall to open (matplotlib refuses 2**16 pixels)
FIGURE_ROWS = 32

__all__ = [
    "cam_target_layer",
    "explain",
    "main",
    "overlay_name",
    "refuse_out_among_inputs",
    "remove_previous_overlays",
]


class _LogMarginals(nn.Module):
    """images -> log node marginals ``(B, num_nodes)``: the output whose entries Grad-CAM targets."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.log_marginals(self.model(images).float())


class _NodeTarget:
    """Grad-CAM target: one node's entry of a sample's output row."""

    def __init__(self, node: int) -> None:
        self.node = int(node)

    def __call__(self, output: Tensor) -> Tensor:
        return output[..., self.node]


def _is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed")


def cam_target_layer(model: nn.Module, depth: int) -> tuple[nn.Module, Callable[[Tensor], Tensor] | None]:
    """The layer Grad-CAM reads for a level, and the reshape of its output for ViTs (None for CNNs).

    Raises:
        ValueError: the backbone has neither timm ``feature_info`` nor ViT blocks.
    """
    bbs = model.backbones()
    backbone = bbs[min(depth - 1, len(bbs) - 1)]
    if _is_vit(backbone):
        built = tuple(backbone.patch_embed.grid_size)
        prefix = int(getattr(backbone, "num_prefix_tokens", 1))

        def reshape(tokens: Tensor) -> Tensor:
            patches = tokens[:, prefix:, :]
            # the grid of this input: another --img-size than the model was built at changes it (the
            # example's ViTs take any size); the inputs are square
            side = math.isqrt(patches.shape[1])
            grid = (side, side) if side * side == patches.shape[1] else built
            return patches.reshape(tokens.shape[0], grid[0], grid[1], tokens.shape[-1]).permute(0, 3, 1, 2)

        block = backbone.blocks[-1]
        return getattr(block, "norm1", block), reshape
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise ValueError(
            f"model: cannot pick a Grad-CAM layer for {type(backbone).__name__} (no timm feature_info, no ViT blocks)."
        )
    last = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
    return backbone.get_submodule(last), None


def explain(
    model: nn.Module, images: Tensor, *, rule: str, threshold: float = 0.5, tta: str = "none"
) -> tuple[Tensor, list[list[tuple[int, int, float, np.ndarray]]]]:
    """Grad-CAM maps for each level of each image's predicted path.

    Args:
        model: a model of :mod:`examples.leukemia.models` (eval mode).
        images: normalised float ``(B, 3, H, W)`` on the model's device.
        rule: decoding rule of the prediction.
        threshold: for the ``threshold`` rule.
        tta: the prediction (and the probabilities shown) average the marginals over these views
            (:func:`examples.leukemia.gpu_data.tta_views`), as ``predict`` does; the maps are of the
            image as it is.

    Returns:
        ``(pred, maps)``: predicted node indices ``(B,)`` and, per image, a list of
        ``(depth, node, probability, cam)`` with ``cam`` a float ``(H, W)`` array in [0, 1].
    """
    from pytorch_grad_cam import GradCAM

    tax = model.taxonomy
    with torch.no_grad():
        probs = tta_mean(lambda v: model.marginals(model(v).float()).float(), images, tta)
    pred = decode(probs, tax, rule, threshold=threshold if rule == "threshold" else None)
    table = torch.as_tensor(np.array(tax.ancestor_table), device=pred.device)[pred]  # (B, max_depth + 1)
    wrapper = _LogMarginals(model).eval()
    maps: list[list[tuple[int, int, float, np.ndarray]]] = [[] for _ in range(len(images))]
    grids: set[tuple[int, ...]] = set()  # the feature grids the maps are read from
    reshape: Callable[[Tensor], Tensor] | None = None

    def record_grid(module: nn.Module, inputs: Any, output: Tensor) -> None:
        grids.add(tuple((reshape(output) if reshape is not None else output).shape[-2:]))

    for depth in range(1, tax.max_depth + 1):
        rows = torch.nonzero(table[:, depth] >= 0).flatten()
        if len(rows) == 0:
            continue
        layer, reshape = cam_target_layer(model, depth)
        nodes = table[rows, depth].tolist()
        hook = layer.register_forward_hook(record_grid)
        try:
            with GradCAM(model=wrapper, target_layers=[layer], reshape_transform=reshape) as cam:
                grayscale = cam(input_tensor=images[rows], targets=[_NodeTarget(n) for n in nodes])
        finally:
            hook.remove()
        for r, n, g in zip(rows.tolist(), nodes, grayscale):
            maps[r].append((depth, n, float(probs[r, n]), g))
    if (1, 1) in grids:
        log.warning(
            "Grad-CAM: the target layer's feature grid is 1x1 for %dx%d px images, so the maps carry no spatial "
            "information (one weight for the whole image); explain a model trained at a larger --img-size (a "
            "stride-32 CNN has a 4x4 grid at 128 px) or with a ViT backbone (its patch grid: 4x4 at 32 px with "
            "patch 8).",
            images.shape[-2],
            images.shape[-1],
        )
    return pred, maps


def _overlay(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(rgb.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=0.55)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def overlay_name(index: int, image: str | Path, depth: int, node: str) -> str:
    """``<index:03d>_<image stem>_d<depth>_<node>.png``: the index keeps images that share a stem apart."""
    return f"{index:03d}_{_safe(Path(image).stem)}_d{depth}_{_safe(node)}.png"


def _input_folders(inputs: Sequence[str]) -> list[Path]:
    """The folders ``inputs`` name: folders given, and the folder a pattern's wildcards start below."""
    folders = []
    for text in inputs:
        if not os.path.exists(text) and glob.has_magic(text):
            parts = Path(text).parts
            text = os.path.join(*parts[: next(i for i, part in enumerate(parts) if glob.has_magic(part))] or ["."])
        if os.path.isdir(text):
            folders.append(Path(text))
    return folders


def refuse_out_among_inputs(out: str, inputs: Sequence[str]) -> None:
    """Refuse an ``--out`` that is, or lies inside, a folder of the images to explain.

    The overlays are PNG images: written there, they would lie among the user's cells, and the next
    ``explain`` or ``predict`` of that folder would read them as cells.

    Raises:
        ValueError: the folder, and another ``--out`` to give.
    """
    where = Path(out).resolve()
    for folder in _input_folders(inputs):
        if where.is_relative_to(folder.resolve()):
            instead = folder.resolve().parent / f"{folder.resolve().name}_explain"
            raise ValueError(
                f"--out {out!r}: expected a folder outside the images to explain, got "
                + ("the input folder itself" if where == folder.resolve() else "one inside the input folder")
                + f" {os.fspath(folder)!r}; its overlays (PNG images) would be written among your images, and the next "
                f"run on that folder would read them as cells. Give another --out, e.g. --out {os.fspath(instead)!r}"
            )


def remove_previous_overlays(out: Path) -> list[Path]:
    """Remove the overlays that an earlier ``explain`` into ``out`` listed in its ``explain.csv``.

    A rerun wrote its overlays beside the earlier run's (other images, another ``--max-images``), while
    its ``explain.csv`` listed only its own. Only files of ``out`` that the earlier CSV names (by their
    name: overlays are written straight into ``out``) and that are PNG files are removed.

    Returns:
        the files removed.
    """
    listing = out / "explain.csv"
    try:
        with open(listing, newline="", encoding="utf-8") as fh:
            names = [Path(row.get("overlay") or "").name for row in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    removed = remove_listed_pngs(out, names)
    if removed:
        log.info("removed the %d overlay(s) of the earlier explain in %s", len(removed), out)
    return removed


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m examples.leukemia.explain", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint (run/best, run/best.json, or a run folder)")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", "--output", type=output_folder, default="explain", help="output folder (made when missing)")
    p.add_argument(
        "--max-images",
        type=whole_number(1, "e.g. --max-images 8"),
        default=8,
        help="explain at most this many images (the first found; default 8)",
    )
    p.add_argument(
        "--decode",
        type=decode_rule,
        default=None,
        metavar="RULE",
        help=f"rule of the explained prediction: {', '.join(DECODE_CHOICES)} (auto: the method's default, as in "
        "train; default: the checkpoint's own)",
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="threshold of the 'threshold' rule (default: the checkpoint's, else 0.5)",
    )
    add_tta_argument(
        p,
        note="of the explained prediction, as in predict; the maps are of the image as it is "
        "(default: the checkpoint's)",
    )
    p.add_argument(
        "--img-size", type=whole_number(1), default=None, help="image side in pixels (default: the training resolution)"
    )
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1... (default: cuda when there is one)")
    return p


def panel_title(depth: int, node: str, probability: float, flat: bool) -> str:
    """The title of one overlay in explain.png; a flat map says so in the figure, not only in the CSV.

    >>> panel_title(2, "ALL", 0.91, flat=True)
    'depth 2: ALL\\np=0.91 (flat map: no evidence)'
    """
    return f"depth {depth}: {node}\np={probability:.2f}" + (" (flat map: no evidence)" if flat else "")


@exits_cleanly
def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Entry point of ``python -m examples.leukemia.explain``; returns the rows of ``explain.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from examples.leukemia.checkpoint import load_model
    from examples.leukemia.evaluate import checkpoint_decoding, resolve_checkpoint
    from examples.leukemia.gpu_data import GPUBatches
    from examples.leukemia.models import model_normalize
    from examples.leukemia.predict import _read_images, check_image_size, find_images, warn_dim

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    refuse_out_among_inputs(args.out, args.inputs)
    candidates = find_images(args.inputs)  # a missing input is reported before the model is loaded
    model, ckpt = load_model(resolve_checkpoint(args.checkpoint), device=device)
    model = model.float()
    tax = ckpt.taxonomy
    size = int(args.img_size or ckpt.config.get("image_size") or 128)
    check_image_size(size, ckpt.config, model)
    crop = float(ckpt.config.get("crop", 1.0))  # read as in training
    paths, arrays, bad = [], [], {}
    dim: list[str] = []
    step = 2 * args.max_images
    for start in range(0, len(candidates), step):  # read until --max-images readable ones are found
        got, rgb, skipped = _read_images(candidates[start : start + step], size, crop, dim)
        paths += got
        arrays.append(rgb)
        bad |= skipped
        if len(paths) >= args.max_images:
            break
    rgb = np.concatenate(arrays)[: args.max_images] if arrays else np.zeros((0, size, size, 3), np.uint8)
    paths = paths[: args.max_images]
    if bad:
        log.warning("skipped %d unreadable file(s): %s", len(bad), "; ".join(list(bad)[:5]))
    shown = set(paths)
    warn_dim([p for p in dim if p in shown])
    if not paths:
        raise ValueError(
            f"inputs: expected readable images, got none among the {len(bad)} file(s) found (see the warning "
            "above); pass image files (PNG, JPEG, TIFF...) or folders of them."
        )
    uint8 = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous().to(device)
    mean, std = model_normalize(model)
    batches = GPUBatches(
        uint8,
        torch.zeros(len(uint8), dtype=torch.int64, device=device),
        len(uint8),
        shuffle=False,
        drop_last=False,
        augment=False,
        mean=mean,
        std=std,
    )
    images = next(iter(batches))[0]  # normalised exactly as in training
    rule, threshold = checkpoint_decoding(ckpt.config, args.decode, args.threshold)
    tta = args.tta or str(ckpt.config.get("tta", "none"))
    pred, maps = explain(model, images, rule=rule, threshold=threshold, tta=tta)
    if not any(maps):
        why = (
            f"the threshold rule stops at the root when no first-level node reaches --threshold {threshold:g}: "
            "lower it, or explain another rule's prediction (--decode top_down)"
            if rule == "threshold"
            else f"the {rule} rule predicted the root"
        )
        log.warning("every prediction is the taxonomy's root, which has no level to explain: no map is drawn (%s)", why)
    elif not all(maps):
        at_root = [p for p, m in zip(paths, maps) if not m]
        log.warning(
            "%d of the %d image(s) are predicted the taxonomy's root, which has no level to explain: they have no "
            "map and no row in explain.csv (first: %s)%s",
            len(at_root),
            len(paths),
            "; ".join(at_root[:3]),
            f"; the threshold rule stops there when no first-level node reaches --threshold {threshold:g}"
            if rule == "threshold"
            else "",
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_previous_overlays(out)  # a rerun's folder holds its own overlays only, those its explain.csv lists
    rows: list[dict[str, Any]] = []
    cols = 1 + max((len(m) for m in maps), default=0)
    shown = min(len(paths), FIGURE_ROWS)  # explain.png: one row per image, up to FIGURE_ROWS
    fig, axes = plt.subplots(shown, cols, figsize=(2.4 * cols, 2.5 * shown), squeeze=False)
    tag = " [SYNTHETIC]" if ckpt.config.get("synthetic") else ""
    for i, path in enumerate(paths):
        if i < shown:
            axes[i, 0].imshow(rgb[i])
            axes[i, 0].set_title(f"{Path(path).name}\npred: {tax.nodes[int(pred[i])]}", fontsize=7)
        for j, (depth, node, prob, cam) in enumerate(maps[i], start=1):
            over = _overlay(rgb[i], cam)
            file = out / overlay_name(i, path, depth, tax.nodes[node])
            Image.fromarray(over).save(file)
            flat_map = bool(np.ptp(cam) <= 1e-8)
            if i < shown:
                axes[i, j].imshow(over)
                axes[i, j].set_title(
                    panel_title(depth, tax.nodes[node], prob, flat_map),
                    fontsize=7,
                    color="firebrick" if flat_map else "black",
                )
            rows.append(
                {
                    "image": path,
                    "prediction": tax.nodes[int(pred[i])],
                    "depth": depth,
                    "node": tax.nodes[node],
                    "probability": round(prob, 6),
                    "overlay": str(file),
                    # a flat map: no pixel raised this level's score more than another (Grad-CAM finds nothing)
                    "map_is_flat": flat_map,
                }
            )
        if i < shown:
            for ax in axes[i]:
                ax.axis("off")
    more = f" (first {shown} of {len(paths)} images; all in explain.csv)" if shown < len(paths) else ""
    fig.suptitle(
        f"Grad-CAM per level: {ckpt.config.get('model', {}).get('method')} "
        f"{ckpt.config.get('model', {}).get('backbone')}{tag}{more}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the title above the panels
    fig.savefig(out / "explain.png", dpi=120)
    plt.close(fig)
    with open(out / "explain.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(
            fh, fieldnames=["image", "prediction", "depth", "node", "probability", "overlay", "map_is_flat"]
        )
        w.writeheader()
        w.writerows(rows)
    log.info("wrote %d overlay(s) and %s", len(rows), out / "explain.png")
    if shown < len(paths):
        log.info("explain.png shows the first %d of the %d images; every overlay is in %s", shown, len(paths), out)
    flat = sum(r["map_is_flat"] for r in rows)
    if flat:
        log.warning(
            "%d of %d map(s) are flat (the level's score does not depend on where in the image, per Grad-CAM; "
            "common for tiny or barely trained models, and always with a 1x1 feature grid): column map_is_flat of "
            "explain.csv",
            flat,
            len(rows),
        )
    return rows


if __name__ == "__main__":
    main()
