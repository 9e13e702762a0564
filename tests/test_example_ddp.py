"""Multi-process training: 2 CPU processes (torchrun, gloo) give the same model and metrics as 1 process.

Same global batch (2 x 8 = 16), no augmentation (its random draws are per process), a backbone
without batch norm (``test_convnext``: its statistics would be per process): then DDP's averaged
gradients are the full batch's, and the sharded validation, reduced across processes by
torchmetrics, counts every image once.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from examples.leukemia import train as T
from examples.leukemia.checkpoint import checkpoint_paths
from examples.leukemia.synthetic import make_synthetic

REPO = Path(__file__).resolve().parents[1]
COMMON = [
    "--taxonomy",
    "paper",
    "--backbone",
    "test_convnext",
    "--epochs",
    "2",
    "--no-augment",
    "--img-size",
    "32",
    "--seed",
    "5",
    "--quiet",
    "--no-tensorboard",
    "--workers",
    "1",
]


def test_two_processes_match_one(tmp_path: Path) -> None:
    data = make_synthetic(tmp_path / "SYNTHETIC", "paper", n_per_leaf=5, size=32, seed=1)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "-m",
        "examples.leukemia.train",
        "--data",
        str(data),
        *COMMON,
        "--batch-size",
        "8",
        "--output",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 process(es)" in proc.stderr

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = T.run(
            T.parse_args(["--data", str(data), *COMMON, "--batch-size", "16", "--output", str(tmp_path / "one")])
        )
    finally:
        torch.set_num_threads(threads)

    two = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert two["config"]["world_size"] == 2 and one.config["world_size"] == 1
    assert two["config"]["split_sizes"] == one.config["split_sizes"]

    # identical validation and test metrics (the loss-like nll up to float rounding)
    def exact(d):
        return {k: v for k, v in d.items() if k != "nll"}

    assert exact(two["test"]) == exact(one.test)
    assert two["test"]["nll"] == pytest.approx(one.test["nll"], rel=1e-4)
    assert exact(two["best_val"]["metrics"]) == exact(one.best["metrics"])
    # the same weights, up to the order of float sums
    w1, w2 = (load_file(checkpoint_paths(tmp_path / run / "last")[0]) for run in ("one", "ddp"))
    assert w1.keys() == w2.keys()
    for key in w1:
        assert torch.allclose(w1[key], w2[key], rtol=1e-3, atol=1e-4), key
    # the same training losses, epoch by epoch (the reduced mean over both processes' images)
    with open(tmp_path / "ddp" / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["train_images"]) for r in rows] == [h["train_images"] for h in one.history]
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([h["train_loss"] for h in one.history], rel=1e-4)


def test_ddp_validation_describes_the_saved_weights_with_batch_norm(tmp_path: Path) -> None:
    """With BatchNorm each process ends an epoch with its own running statistics; the processes must
    evaluate with rank 0's (the ones saved), so the logged validation metrics are the checkpoint's."""
    from examples.leukemia.checkpoint import load_model

    data = make_synthetic(tmp_path / "SYNTHETIC", "paper", n_per_leaf=6, size=32, seed=2)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    args = [*COMMON, "--backbone", "test_resnet", "--epochs", "1", "--batch-size", "4"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2"]
    cmd += ["-m", "examples.leukemia.train", "--data", str(data), *args, "--output", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parsed = T.parse_args(["--data", str(data), *args, "--output", str(tmp_path / "again")])
        one = T.init_distributed("cpu")
        loaded = T.load_data(parsed, one, tmp_path / "again")
        model, ck = load_model(tmp_path / "ddp" / "best")
        got = T.evaluate(
            model.eval(),
            loaded.images["val"],
            loaded.targets["val"],
            loaded.taxonomy,
            rule=ck.config["decode"],
            threshold=parsed.threshold,
            env=one,
            batch_size=64,
            amp=False,
            channels_last=False,
        )
    finally:
        torch.set_num_threads(threads)
    want = summary["best_val"]["metrics"]
    assert {k: v for k, v in got.items() if k != "nll"} == {k: v for k, v in want.items() if k != "nll"}
    assert got["nll"] == pytest.approx(want["nll"], rel=1e-5)


def _agree_worker(rank: int, out_dir: str) -> None:
    import torch.distributed as dist

    from examples.leukemia.compare import any_rank

    dist.init_process_group("gloo", init_method=(Path(out_dir) / "rendezvous").as_uri(), rank=rank, world_size=2)
    try:
        env = T.Dist(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
        # only rank 1 is late: both must skip, or rank 0 would wait in a run rank 1 never starts
        got = [any_rank(rank == 1, env), any_rank(False, env), any_rank(True, env)]
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(got))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_compare_ranks_agree_on_skipping_a_run(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from examples.leukemia.compare import any_rank

    assert any_rank(True, T.Dist()) is True and any_rank(False, T.Dist()) is False  # one process: the flag
    mp.spawn(_agree_worker, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [True, False, True]


def test_fewer_train_images_than_processes_is_refused(tmp_path: Path) -> None:
    """Each equal shard held 0 images: no step ran, the loss was logged as 0.0, the untrained weights were
    saved as best and the run exited 0 (a DDP review)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2"]
    cmd += ["-m", "examples.leukemia.train", *COMMON, "--backbone", "test_convnext", "--synthetic-per-leaf", "3"]
    cmd += ["--limit", "1", "--output", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "the train split has 1 image(s), fewer than the 2 processes" in proc.stderr + proc.stdout
    assert not (tmp_path / "ddp" / "best.json").exists()
