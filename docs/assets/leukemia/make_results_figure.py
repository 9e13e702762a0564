"""Draw every recorded PBC test result of the leukemia page as one dot chart.

    python docs/assets/leukemia/make_results_figure.py

Reads the result files in ``results/`` next to this file (the raw output the page's tables were
copied from) and writes ``pbc_results_overview.png``: one row per setting (hardware, backbone,
resolution, crop, epochs), one dot per method and seed (a 4-seed summary as its mean with a
bar of one standard deviation), fine-leaf accuracy on the left and 8-class accuracy on the
right, with the targets of ``BENCHMARKS.md`` and the peer baseline marked. Numbers only: no
image is read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
METRICS = {"fine_leaf_accuracy": "fine-leaf accuracy (11 leaves)", "eight_class_accuracy": "8-class accuracy"}
TARGETS = {"fine_leaf_accuracy": 0.93, "eight_class_accuracy": 0.985}
# method key -> (legend label, colour, marker)
STYLE = {
    "flat": ("flat", "#4c72b0", "o"),
    "hierarchical": ("hierarchical, level head (the paper's)", "#dd8452", "s"),
    "conditional": ("hierarchical, conditional head", "#55a868", "D"),
    "per-level": ("per-level (one model per level)", "#8172b3", "^"),
}
# a point: (fine, eight, fine_sd, eight_sd); sd 0 for a single run
Point = tuple[float, float, float, float]


def _key(row: dict) -> str:
    """The marker style of a run: its method, or ``conditional`` for the hierarchical method with the
    conditional head (``head`` in a compare row, or the ``variant`` label that aggregate pools by)."""
    label = row.get("variant") or row["method"]
    if row.get("head") == "conditional" or "conditional head" in label:
        return "conditional"
    if label not in STYLE:
        raise KeyError(f"{label!r}: no marker style for this run; add it to STYLE")
    return label


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def collect() -> tuple[dict[str, dict[str, list[Point]]], list[str], dict[str, float]]:
    """``{setting: {method: [point, ...]}}``, the settings in drawing order (best hardware first),
    and the peer baseline's 8-class accuracy where it ran in the same job."""
    points: dict[str, dict[str, list[Point]]] = defaultdict(lambda: defaultdict(list))
    order: list[str] = []
    peer: dict[str, float] = {}

    def add(setting: str, key: str, point: Point) -> None:
        if setting not in order:
            order.append(setting)
        points[setting][key].append(point)

    def add_row(setting: str, row: dict) -> None:
        m = row["metrics"]
        add(setting, _key(row), (m["fine_leaf_accuracy"], m["eight_class_accuracy"], 0.0, 0.0))

    # session 8: 100 epochs, ResNet-18, seeds 0 and 1 side by side in one seeds job (with the peer
    # baseline), seed 2 alone in a second call on the same card
    e100 = "H200, ResNet-18, 128 px, crop 0.7,\n100 epochs, seeds 0-2 (session 8)"
    seeds_job = _load("pbc_h200_e100_seeds_job.json")
    for res in [*seeds_job["pbc_seeds"].values(), _load("pbc_h200_e100_seed2.json")]:
        for row in res["rows"]:
            add_row(e100, row)
    peer[e100] = seeds_job["baseline"]["resnet18"]["test_acc_8class"]

    # session 5: one job (benchmarks/gpu_run.sh) plus a second call for the runs its deadline skipped;
    # its per-level run clipped all backbones' gradients at once and was rerun in session 13 (same
    # recipe, pack and split, benchmarks/gpu_queue.sh), which added the per-level ViT-Small; session 26
    # added the per-level ConvNeXt-Tiny
    names = {"resnet18": "ResNet-18", "convnext_tiny": "ConvNeXt-Tiny", "vit_small_patch16_224": "ViT-Small"}
    rerun, rerun_in = {}, {}
    # session 26 ran the per-level ConvNeXt-Tiny that session 13's calls cut at 38 of 40 epochs
    for session, name in (("13", "h200_s13_queue_call2.json"), ("26", "h200_s26_queue.json")):
        for key, q in _load(name).items():
            if key.startswith("pbc-per-level-") and "eval_auto" in q:
                row = q["eval_auto"]["rows"][0]
                rerun[row["backbone"]], rerun_in[row["backbone"]] = row, session

    def setting5(backbone: str) -> str:
        sessions = f"sessions 5 and {rerun_in[backbone]} (per-level)" if backbone in rerun else "session 5"
        return f"H200, {names[backbone]}, 128 px, crop 0.7,\n40 epochs ({sessions})"

    job = _load("h200_c70_job.json")
    for row in job["pbc"]["rows"] + _load("pbc_h200_c70_second_call.json")["rows"]:
        if row["method"] == "per-level" and row["backbone"] in rerun:
            continue  # the joint-clip run, replaced by its rerun
        add_row(setting5(row["backbone"]), row)
    for backbone, row in rerun.items():
        add_row(setting5(backbone), row)
    peer[setting5("resnet18")] = job["baseline"]["resnet18"]["test_acc_8class"]

    gpu = "H200, ResNet-18, 128 px, uncropped,\n40 epochs (session 1)"
    for name in ("pbc_h200_run1.json", "pbc_h200_run2_per_level.json"):
        for row in _load(name)["rows"]:
            add_row(gpu, row)
    peer[gpu] = _load("pbc_peer_baseline_h200.json")["resnet18"]["test_acc_8class"]

    recipe = _load("pbc_cpu_recipe_options.json")["rows"]
    # trained runs only: no TTA, EMA, HXE or re-decoded variants of the same checkpoints
    kept = ("crop 0.7", "no crop", "crop 0.7, --head conditional --loss conditional")
    plain = [r for r in recipe if r["tta"] == "none" and r["recipe"] in kept]
    for size in (128, 64):
        for row in plain:
            if row["image_size"] == size:
                crop = "crop 0.7" if row["recipe"].startswith("crop") else "uncropped"
                add_row(f"CPU, ConvNeXt-Atto, {size} px, {crop},\n10 epochs", row)

    for run in _load("pbc_cpu64_e30.json")["runs"]:
        if run["rows"][0].get("ema", 0.0) == 0.0:  # the EMA run is the flat model's average: same setting
            add_row("CPU, ConvNeXt-Atto, 64 px, uncropped,\n30 epochs", run["rows"][0])

    uncropped64 = "CPU, ConvNeXt-Atto, 64 px, uncropped,\n10 epochs (mean ± sd over seeds)"
    for s in _load("pbc_cpu64_convnext_atto_seeds.json")["summary"]:
        if s["method"] == "per-level":
            continue  # one seed, with the joint clip: its session-12 rerun (same command) is drawn instead
        fine, eight = s["fine_leaf_accuracy"], s["eight_class_accuracy"]
        sd = (fine["sd"], eight["sd"]) if fine["n"] > 1 else (0.0, 0.0)
        add(uncropped64, _key(s), (fine["mean"], eight["mean"], *sd))
    for row in _load("pbc_cpu64_convnext_atto_s12.json")["rows"]:
        if row["method"] == "per-level":
            add_row(uncropped64, row)
    return points, order, peer


def draw(out: Path) -> None:
    points, order, peer = collect()
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 0.8 * len(order) + 2.0), sharey=True)
    offsets = {k: (i - 1.5) * 0.16 for i, k in enumerate(STYLE)}
    seen: dict[str, object] = {}
    for j, (ax, metric) in enumerate(zip(axes, METRICS)):
        for y, setting in enumerate(order):
            for key, vals in points[setting].items():
                label, colour, marker = STYLE[key]
                for fine, eight, sd_fine, sd_eight in vals:
                    x, sd = (fine, sd_fine) if j == 0 else (eight, sd_eight)
                    handle = ax.errorbar(
                        x,
                        y + offsets[key],
                        xerr=sd or None,
                        fmt=marker,
                        color=colour,
                        markersize=6,
                        capsize=3,
                        zorder=3,
                    )
                    seen.setdefault(label, handle)
            if j == 1 and setting in peer:
                handle = ax.scatter([peer[setting]], [y], marker="|", s=400, color="black", zorder=4)
                seen.setdefault("peer baseline (flat ResNet-18, same job and split)", handle)
        ax.axvline(TARGETS[metric], color="crimson", ls="--", lw=1)
        ax.annotate(
            f"target {TARGETS[metric]}",
            (TARGETS[metric], -0.6),
            color="crimson",
            fontsize=8,
            ha="right",
            va="center",
            xytext=(-3, 0),
            textcoords="offset points",
        )
        ax.set_title(METRICS[metric], fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("test accuracy, PBC test split (2,906 images)", fontsize=9)
    axes[0].set_yticks(range(len(order)), order, fontsize=8)
    axes[0].set_ylim(len(order) - 0.5, -0.9)
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(
        "PBC: every recorded test result, one marker per run (from scratch; the dashed line is the target)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    draw(HERE / "pbc_results_overview.png")
