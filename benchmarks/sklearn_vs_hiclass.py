"""hiercls.sklearn's local classifiers vs HiClass 5.0.8's, same base classifier, same features.

Real data, no download: a stratified sample of the PBC blood-cell images in
``../shared/data/pbc`` (labels from the file-name prefixes onto the lineage tree
``examples/leukemia/taxonomies/pbc.json``: 18 nodes, 11 leaves at depths 1 to 5,
``IG`` and ``NEUTROPHIL`` images labelled only at an inner node). Features are
computed once, in numpy/torch, from images decoded at 1/4 scale (64 px): colour
histograms (RGB and HSV, 16 bins a channel) and the pooled responses of a small
convolutional network with fixed random weights (seeded; no training, no
pretrained weights). They are cached in ``/tmp`` (never committed).

Both sides fit ``LogisticRegression(max_iter=1000)`` per parent node (``--strategy
parent``, the default: ``LocalClassifierPerParentNode``), per depth (``--strategy level``:
``LocalClassifierPerLevel``) or one binary classifier per node (``--strategy node``:
``LocalClassifierPerNode``, HiClass' default "siblings" negatives) on the same standardised features and labels,
single-process (``n_jobs`` 1). HiClass runs in
its own virtualenv (``/work/hiclass-venv`` or ``$HICLASS_PYTHON``), in a
subprocess that reads the same ``.npz``; its predictions come back and are
scored by the same ``hiercls.metrics`` functions as ours. Times (wall, and CPU
time of the fitting process) are medians over ``--repeats`` rounds, the two
sides interleaved in one run so that they see the same machine load, each
side timed warm (an untimed round first: ours once in the process, HiClass's
once in each of its subprocesses); BLAS is single-threaded on both sides. Without that virtualenv the HiClass side is
reported as skipped.

    python benchmarks/sklearn_vs_hiclass.py [--n-images 3000] [--repeats 3] [--strategy parent|level|node]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hiercls import Taxonomy  # noqa: E402
from hiercls.metrics import accuracy, hierarchical_f1, mistake_severity  # noqa: E402

DATA = Path(os.environ.get("HIERCLS_SHARED_DATA", REPO.parent / "shared" / "data")) / "pbc"
TAXONOMY = REPO / "examples" / "leukemia" / "taxonomies" / "pbc.json"
HICLASS_PYTHON = os.environ.get("HICLASS_PYTHON", "/work/hiclass-venv/bin/python")

# Runs inside the HiClass virtualenv: no hiercls, no torch there.
HICLASS_SIDE = r"""
import json, sys, time
import numpy as np
from sklearn.linear_model import LogisticRegression
import hiclass
from hiclass.metrics import f1 as hiclass_f1

data = np.load(sys.argv[1], allow_pickle=False)
repeats = int(sys.argv[2])
Local = getattr(hiclass, sys.argv[3])
warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 0   # untimed rounds first: both sides are timed warm
X_train, X_test = data["X_train"], data["X_test"]
y_train, y_test = data["paths_train"], data["paths_test"]   # (n, depth), padded with ""
fit_s, fit_cpu_s, predict_s, cold = [], [], [], {}
for i in range(warmup + repeats):
    clf = Local(local_classifier=LogisticRegression(max_iter=1000), n_jobs=1)
    t0, c0 = time.perf_counter(), time.process_time()
    clf.fit(X_train, y_train)
    fit, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter(); pred = clf.predict(X_test); took = time.perf_counter() - t0
    if i >= warmup:
        fit_s.append(fit); fit_cpu_s.append(fit_cpu); predict_s.append(took)
    elif i == 0:
        cold = {"fit_cpu_s": fit_cpu, "predict_s": took}
pred = np.asarray(pred).astype(str)
last = [[p for p in row if p not in ("", "nan")][-1] if any(p not in ("", "nan") for p in row) else "" for row in pred]
print(json.dumps({
    "version": hiclass.__version__,
    "fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "predict_s": predict_s, "cold": cold,
    "pred_nodes": last,
    "hiclass_metrics_f1": float(hiclass_f1(y_test, pred)),
}))
"""


def load_features(n_images: int, seed: int, cache: Path) -> dict[str, np.ndarray]:
    """Sample, decode, featurise and split the PBC images (cached as .npz)."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as f:
            return dict(f)
    from sklearn.model_selection import train_test_split

    from examples.leukemia.data import scan

    samples, _ = scan(DATA, TAXONOMY, layout="pbc", check_images=False, warn=False)
    paths = np.array([s.path for s in samples])
    labels = np.array([s.label for s in samples])
    rng = np.random.default_rng(seed)
    # stratified sample: the same fraction of every label
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), max(2, round(n_images * np.mean(labels == c))), replace=False)
            for c in np.unique(labels)
        ]
    )
    paths, labels = paths[keep], labels[keep]
    feats = featurise(paths, seed)
    tr, te = train_test_split(np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=seed)
    mean, std = feats[tr].mean(0), feats[tr].std(0) + 1e-6
    out = {
        "X_train": ((feats[tr] - mean) / std).astype(np.float64),
        "X_test": ((feats[te] - mean) / std).astype(np.float64),
        "y_train": labels[tr],
        "y_test": labels[te],
    }
    tax = Taxonomy.from_json(TAXONOMY)
    for part in ("train", "test"):  # HiClass' format: one column per level below the root, padded with ""
        rows = [tax.path(n)[1:] for n in out[f"y_{part}"]]
        width = max(len(r) for r in rows)
        out[f"paths_{part}"] = np.array([list(r) + [""] * (width - len(r)) for r in rows])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def featurise(paths: np.ndarray, seed: int) -> np.ndarray:
    """Colour histograms + pooled random-conv responses of each image at 64 px, float64 (n, 224)."""
    import torch
    from PIL import Image

    images = np.empty((len(paths), 64, 64, 3), dtype=np.uint8)
    for k, p in enumerate(paths):  # feature extraction, once; JPEG draft mode decodes at 1/4 scale
        with Image.open(p) as im:
            im.draft("RGB", (64, 64))
            images[k] = np.asarray(im.convert("RGB").resize((64, 64)))
    rgb = images.reshape(len(paths), -1, 3).astype(np.float64) / 255.0
    hsv = _rgb_to_hsv(rgb)
    edges = np.linspace(0, 1 + 1e-9, 17)
    gen = torch.Generator().manual_seed(seed)
    convs = [
        torch.randn(16, 3, 5, 5, generator=gen) / (3 * 25) ** 0.5,
        torch.randn(32, 16, 3, 3, generator=gen) / (16 * 9) ** 0.5,
        torch.randn(64, 32, 3, 3, generator=gen) / (32 * 9) ** 0.5,
    ]
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 512):
            x = torch.as_tensor(images[start : start + 512]).permute(0, 3, 1, 2).float() / 255.0 - 0.5
            for w in convs:
                x = torch.relu(torch.nn.functional.conv2d(x, w, stride=2))
            out.append(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1).numpy())
    return np.concatenate([_histograms(rgb, edges), _histograms(hsv, edges), np.concatenate(out)], axis=1)


def _histograms(pixels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-image, per-channel normalised histograms: (n, pixels, C) -> (n, C * bins), vectorised."""
    n, m, c = pixels.shape
    bins = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, pixels, side="right") - 1, 0, bins - 1)  # (n, m, c)
    flat = (np.arange(n)[:, None, None] * c + np.arange(c)[None, None, :]) * bins + idx
    counts = np.bincount(flat.ravel(), minlength=n * c * bins).reshape(n, c * bins)
    return counts / m


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = mx - mn
    safe = np.where(delta > 0, delta, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6.0
    h = np.where(delta > 0, h, 0.0)
    s = np.where(mx > 0, delta / np.where(mx > 0, mx, 1.0), 0.0)
    return np.stack([h, s, mx], -1)


def scores(tax: Taxonomy, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    t, p = tax.encode(y_true), tax.encode(y_pred)
    leaf = tax.is_leaf_mask[t]
    return {
        "hierarchical_f1": round(float(hierarchical_f1(t, p, tax)), 4),
        "leaf_accuracy_on_leaf_labelled": round(float(accuracy(t[leaf], p[leaf], tax)), 4),
        "mistake_severity": round(float(mistake_severity(t, p, tax)), 4),
    }


STRATEGIES = {
    "parent": "LocalClassifierPerParentNode",
    "level": "LocalClassifierPerLevel",
    "node": "LocalClassifierPerNode",
}


def run_ours(
    data: dict[str, np.ndarray], tax: Taxonomy, strategy: str
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """One fit, and one predict per decoder rule: times and predictions."""
    from sklearn.linear_model import LogisticRegression

    import hiercls.sklearn

    clf = getattr(hiercls.sklearn, STRATEGIES[strategy])(LogisticRegression(max_iter=1000), taxonomy=tax)
    t0, c0 = time.perf_counter(), time.process_time()
    clf.fit(data["X_train"], data["y_train"])
    times = {"fit_s": time.perf_counter() - t0, "fit_cpu_s": time.process_time() - c0}
    preds = {}
    for rule in ("argmax_leaf", "top_down"):
        clf.set_params(decoder=rule)
        t0 = time.perf_counter()
        preds[rule] = clf.predict(data["X_test"])
        times[f"predict_s/{rule}"] = time.perf_counter() - t0
    return times, preds


def run_hiclass(cache: Path, strategy: str) -> dict[str, object]:
    """One timed HiClass fit + predict in its own virtualenv (single-threaded BLAS, like ours), after one
    untimed round in the same process, as ours are timed after a warm-up round: both sides warm."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(HICLASS_SIDE)
        script = f.name
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        proc = subprocess.run(
            [HICLASS_PYTHON, script, str(cache), "1", STRATEGIES[strategy], "1"],  # one warm-up, one timed
            capture_output=True,
            text=True,
            env=env,
        )
    finally:
        os.unlink(script)
    if proc.returncode != 0:
        return {"skipped": f"HiClass side failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return round(float(np.median(values)), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategy",
        choices=sorted(STRATEGIES),
        default="parent",
        help="one classifier per parent node, per depth, or one binary classifier per node",
    )
    args = parser.parse_args()
    tax = Taxonomy.from_json(TAXONOMY)
    cache = Path(tempfile.gettempdir()) / f"hiercls_pbc_features_{args.n_images}_{args.seed}.npz"
    t0 = time.perf_counter()
    data = load_features(args.n_images, args.seed, cache)
    features_s = time.perf_counter() - t0
    from threadpoolctl import threadpool_limits

    have_hiclass = Path(HICLASS_PYTHON).exists()
    ours_t: dict[str, list[float]] = {}
    theirs_t: dict[str, list[float]] = {}
    theirs: dict[str, object] = {}
    if not have_hiclass:
        theirs = {"skipped": f"no HiClass virtualenv at {HICLASS_PYTHON} (set HICLASS_PYTHON)"}
    with threadpool_limits(limits=1):  # an untimed round: imports, caches and first-call costs, as HiClass's
        run_ours(data, tax, args.strategy)
    for _ in range(args.repeats):  # interleaved, so that both sides see the same machine load
        with threadpool_limits(limits=1):
            times, preds = run_ours(data, tax, args.strategy)
        for k, v in times.items():
            ours_t.setdefault(k, []).append(v)
        if have_hiclass and "skipped" not in theirs:
            theirs = run_hiclass(cache, args.strategy)
            for k in ("fit_s", "fit_cpu_s", "predict_s"):
                theirs_t.setdefault(k, []).extend(theirs.get(k, []))
            for k, v in (theirs.get("cold") or {}).items():  # each subprocess's untimed first round
                theirs_t.setdefault(f"first_round_{k}", []).append(v)
    ours = {"fit_s": median(ours_t["fit_s"]), "fit_cpu_s": median(ours_t["fit_cpu_s"])}
    for rule, pred in preds.items():
        ours[rule] = {"predict_s": median(ours_t[f"predict_s/{rule}"]), **scores(tax, data["y_test"], pred)}
    if "skipped" not in theirs:
        theirs = {
            "version": theirs["version"],
            **{k: median(v) for k, v in theirs_t.items()},
            **scores(tax, data["y_test"], np.array(theirs["pred_nodes"])),
            "hiclass_metrics_f1": round(float(theirs["hiclass_metrics_f1"]), 4),
            # HiClass predicts top-down (greedy child choice, per parent or per level): our "top_down" rule
            "same_prediction_as_hiercls_top_down": round(
                float(np.mean(np.array(theirs["pred_nodes"]) == np.asarray(preds["top_down"]))), 4
            ),
        }
    result = {
        "benchmark": "sklearn_vs_hiclass",
        "dataset": "PBC (../shared/data/pbc), stratified sample, 70/30 stratified split",
        "taxonomy": f"pbc.json: {tax.num_nodes} nodes, {tax.num_leaves} leaves, depths 1-{tax.max_depth}",
        "n_train": len(data["y_train"]),
        "n_test": len(data["y_test"]),
        "n_features": int(data["X_train"].shape[1]),
        "partial_labels_train": int((~tax.is_leaf_mask[tax.encode(data["y_train"])]).sum()),
        "estimator": STRATEGIES[args.strategy],
        "base_estimator": "LogisticRegression(max_iter=1000), BLAS single-threaded, n_jobs 1",
        "features_s": round(features_s, 2),
        "repeats": args.repeats,
        "hiercls": ours,
        "hiclass": theirs,
    }
    if "skipped" not in theirs:
        result["fit_cpu_ratio_hiclass_over_hiercls"] = round(theirs["fit_cpu_s"] / ours["fit_cpu_s"], 2)
        result["predict_ratio_hiclass_over_hiercls_top_down"] = round(
            theirs["predict_s"] / ours["top_down"]["predict_s"], 2
        )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
