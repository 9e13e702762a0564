"""DDP: two CPU processes (gloo) accumulating shards give the single-process values."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hiercls import Taxonomy
from hiercls import metrics as M
from tests import oracles_metrics as O

WORLD = 2


def _taxonomy() -> Taxonomy:
    return Taxonomy.from_dict(
        {
            "root": {
                "Normal": None,
                "Reactive": None,
                "Leukemia": {"Acute": {"ALL": None, "AML": ["APL"]}, "Chronic": ["CLL", "CML"]},
            }
        }
    )


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = _taxonomy().num_nodes
    return rng.integers(0, n, 37), rng.integers(0, n, 37)


def _metrics(tax: Taxonomy) -> dict:
    return {
        "all": M.HierarchicalMetrics(tax),
        "f1_macro": M.HierarchicalF1(tax, average="macro"),
        "severity": M.MistakeSeverity(tax),
        "levels": M.LevelAccuracy(tax),
        "lca_precision": M.LCAPrecision(tax),
        "lca_recall": M.LCARecall(tax, measure="depth"),
        "lca_f1": M.LCAF1(tax),
    }


def _worker(rank: int, out_dir: str) -> None:
    # a file rendezvous: a port picked free beforehand can be taken by a parallel test before the
    # processes bind it (seen once under pytest -n 2)
    init = (Path(out_dir) / "rendezvous").as_uri()
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        tax = _taxonomy()
        y_true, y_pred = _data()
        shard = np.arange(len(y_true))[rank::WORLD]  # uneven shards: 19 and 18 samples
        metrics = _metrics(tax)
        for batch in np.array_split(shard, 3):
            for metric in metrics.values():
                metric.update(torch.as_tensor(y_pred[batch]), torch.as_tensor(y_true[batch]))
        results = {name: O.floats(metric.compute()) for name, metric in metrics.items()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        # both ranks out of their last all-reduce before either tears down: a peer that closes its
        # sockets mid-exchange makes gloo abort the other process (SIGABRT, seen once under load)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is unavailable"
)
def test_two_gloo_processes_reduce_to_the_single_process_values() -> None:
    tax = _taxonomy()
    y_true, y_pred = _data()
    single = {}
    for name, metric in _metrics(tax).items():
        metric.update(torch.as_tensor(y_pred), torch.as_tensor(y_true))
        single[name] = O.floats(metric.compute())
    assert single["all"] == pytest.approx(M.summary(y_true, y_pred, tax))
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(out_dir,), nprocs=WORLD, join=True)
        for rank in range(WORLD):
            got = torch.load(Path(out_dir) / f"rank{rank}.pt", weights_only=False)
            for name in single:
                assert got[name] == pytest.approx(single[name]), (rank, name)
    # the shards alone differ from the whole: the reduction did something
    half = M.HierarchicalMetrics(tax)
    half.update(torch.as_tensor(y_pred[0::2]), torch.as_tensor(y_true[0::2]))
    assert O.floats(half.compute()) != pytest.approx(single["all"])
