"""The torchmetrics classes of node recall, the LCA metrics, distance@k and the inconsistency rate:
batch-split updates equal the one-shot function, reset, errors at the door, names, DDP."""

from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from hiercls import Taxonomy, UnknownNodeError
from hiercls import metrics as M
from tests.budget import examples
from tests.device_probe import HostTraffic
from tests.strategies import taxonomies, trees

LCA = ((M.LCAPrecision, M.lca_precision), (M.LCARecall, M.lca_recall), (M.LCAF1, M.lca_f1))


@st.composite
def batches(draw, n: int) -> list[tuple[int, int]]:
    """Consecutive ``[a, b)`` slices covering ``range(n)``, empty ones included (repeated cuts, 0 and n)."""
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))
    bounds = [0, *cuts, n]
    return list(itertools.pairwise(bounds))


@st.composite
def pair_case(draw, strategy=None):
    tax = draw(strategy if strategy is not None else taxonomies(max_nodes=15))
    n = draw(st.integers(1, 30))
    nodes = st.integers(0, tax.num_nodes - 1)
    y_true = draw(st.lists(nodes, min_size=n, max_size=n))
    y_pred = draw(st.lists(nodes, min_size=n, max_size=n))
    return tax, np.array(y_true), np.array(y_pred), draw(batches(n))


def _feed(metric, y_true, y_pred, cuts) -> torch.Tensor:
    for a, b in cuts:
        metric.update(torch.as_tensor(y_pred[a:b]), torch.as_tensor(y_true[a:b]))
    return metric.compute()


# ------------------------------------------------------------- batch splits
@settings(examples(30))
@given(case=pair_case(), zero_division=st.sampled_from([0.0, 1.0, math.nan]), validate_args=st.booleans())
def test_node_recall_batches_equal_node_recall(case, zero_division, validate_args) -> None:
    tax, y_true, y_pred, cuts = case
    got = _feed(M.NodeRecall(tax, zero_division=zero_division, validate_args=validate_args), y_true, y_pred, cuts)
    # torchmetrics squeezes a one-element result: a root-only taxonomy gives a 0-d tensor
    assert got.dtype == torch.float64 and got.shape == ((tax.num_nodes,) if tax.num_nodes > 1 else ())
    # integer counts: the same ratios, digit for digit
    np.testing.assert_array_equal(
        got.reshape(-1).numpy(), M.node_recall(y_true, y_pred, tax, zero_division=zero_division)
    )


@settings(examples(30))
@given(
    case=pair_case(),
    measure=st.sampled_from(["info", "depth"]),
    zero_division=st.sampled_from([0.0, 1.0, math.nan]),
    validate_args=st.booleans(),
)
def test_lca_metrics_batches_equal_the_functions(case, measure, zero_division, validate_args) -> None:
    tax, y_true, y_pred, cuts = case
    for cls, fn in LCA:
        metric = cls(tax, measure=measure, zero_division=zero_division, validate_args=validate_args)
        got = float(_feed(metric, y_true, y_pred, cuts))
        want = fn(y_true, y_pred, tax, measure=measure, zero_division=zero_division)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12, nan_ok=True), cls.__name__


@settings(examples(30))
@given(
    tax=taxonomies(max_nodes=15),
    data=st.data(),
    distance=st.sampled_from(["auto", "height", "path"]),
    validate_args=st.booleans(),
)
def test_distance_at_k_batches_equal_distance_at_k(tax, data, distance, validate_args) -> None:
    n = data.draw(st.integers(1, 30))
    k = data.draw(st.integers(1, 4))
    nodes = st.integers(0, tax.num_nodes - 1)
    y_true = np.array(data.draw(st.lists(nodes, min_size=n, max_size=n)))
    topk = np.array(data.draw(st.lists(nodes, min_size=n * k, max_size=n * k))).reshape(n, k)
    metric = M.DistanceAtK(tax, distance=distance, validate_args=validate_args)
    got = _feed(metric, y_true, topk, data.draw(batches(n)))
    assert float(got) == M.distance_at_k(y_true, topk, tax, distance=distance)


marginals = st.floats(0.0, 1.0, allow_nan=False, width=32)


@settings(examples(30))
@given(
    tax=taxonomies(max_nodes=15),
    data=st.data(),
    tol=st.sampled_from([0.0, 1e-6, 0.1]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    validate_args=st.booleans(),
)
def test_inconsistency_rate_batches_equal_inconsistency_rate(tax, data, tol, dtype, validate_args) -> None:
    n = data.draw(st.integers(1, 20))
    probs = torch.tensor(
        data.draw(
            st.lists(st.lists(marginals, min_size=tax.num_nodes, max_size=tax.num_nodes), min_size=n, max_size=n)
        ),
        dtype=dtype,
    )
    metric = M.InconsistencyRate(tax, tol=tol, validate_args=validate_args)
    for a, b in data.draw(batches(n)):
        metric.update(probs[a:b])
    assert float(metric.compute()) == M.inconsistency_rate(probs, tax, tol=tol)


@settings(examples(30))
@given(case=pair_case(trees(max_nodes=15)), k=st.integers(1, 3))
def test_unchecked_device_counting_equals_the_checked_host_path(case, k) -> None:
    """``validate_args=False`` counts a tree's index tensors with torch tables: the same states."""
    tax, y_true, y_pred, cuts = case
    topk = np.stack([np.roll(y_pred, j) for j in range(k)], axis=1)
    pairs = [
        (M.NodeRecall(tax), M.NodeRecall(tax, validate_args=False), y_pred),
        (M.DistanceAtK(tax), M.DistanceAtK(tax, validate_args=False), topk),
        (M.DistanceAtK(tax, distance="path"), M.DistanceAtK(tax, distance="path", validate_args=False), topk),
    ]
    for measure in ("info", "depth"):
        pairs += [(cls(tax, measure=measure), cls(tax, measure=measure, validate_args=False), y_pred) for cls, _ in LCA]
    for checked, unchecked, preds in pairs:
        _feed(checked, y_true, preds, cuts)
        _feed(unchecked, y_true, preds, cuts)
        for name in checked._defaults:
            want, got = getattr(checked, name), getattr(unchecked, name)
            assert got.dtype == want.dtype, name
            if want.dtype == torch.int64:
                assert torch.equal(got, want), (type(checked).__name__, name)
            else:
                assert float(got) == pytest.approx(float(want), rel=1e-12, abs=1e-12), (type(checked).__name__, name)


def test_unchecked_updates_need_no_device_sync(paper_tax: Taxonomy) -> None:
    """On the meta device a read-back raises, and HostTraffic records any host-to-device copy."""
    n = paper_tax.num_nodes
    cases = [
        (M.NodeRecall, (torch.randint(0, n, (16,), device="meta"), torch.randint(0, n, (16,), device="meta"))),
        (M.DistanceAtK, (torch.randint(0, n, (16, 3), device="meta"), torch.randint(0, n, (16,), device="meta"))),
        (M.InconsistencyRate, (torch.rand(16, n, device="meta"),)),
    ]
    for cls, args in cases:
        metric = cls(paper_tax, validate_args=False).to("meta")
        metric.update(*args)  # first call: the cached tables move to the device
        with HostTraffic() as traffic:
            metric.update(*args)
            metric.update(*(a[:0] for a in args))
        assert traffic.ops == [], cls.__name__
        assert all(getattr(metric, s).device.type == "meta" for s in metric._defaults)
        with pytest.raises((NotImplementedError, RuntimeError)):
            cls(paper_tax).to("meta").update(*args)


# ------------------------------------------------------------------- reset
def test_reset_forgets_everything(paper_tax: Taxonomy) -> None:
    y_true = torch.tensor([paper_tax.index(n) for n in ("ALL", "AML", "CLL", "Normal")])
    y_pred = torch.tensor([paper_tax.index(n) for n in ("ALL", "APL", "Chronic", "Reactive")])
    other = torch.flip(y_pred, [0])
    topk = torch.stack([y_pred, other], dim=1)
    probs = torch.full((4, paper_tax.num_nodes), 0.5)  # consistent, but for the first sample
    probs[:, 0] = 1.0
    probs[0, paper_tax.index("APL")] = 0.9  # above its parent AML's 0.5
    cases = [
        (M.NodeRecall(paper_tax), (y_pred, y_true), (other, y_true), M.node_recall(y_true, y_pred, paper_tax)),
        (M.DistanceAtK(paper_tax), (topk, y_true), (topk[:, :1], y_true), M.distance_at_k(y_true, topk, paper_tax)),
        (
            M.InconsistencyRate(paper_tax, tol=0.0),
            (probs,),
            (probs[:1],),
            M.inconsistency_rate(probs, paper_tax, tol=0.0),
        ),
    ]
    cases += [(cls(paper_tax), (y_pred, y_true), (other, y_true), fn(y_true, y_pred, paper_tax)) for cls, fn in LCA]
    for metric, args, first, want in cases:
        metric.update(*first)  # something else first
        assert not np.array_equal(metric.compute().numpy(), np.asarray(want), equal_nan=True), type(metric).__name__
        metric.reset()
        assert all(torch.equal(getattr(metric, s), d) for s, d in metric._defaults.items())
        metric.update(*args)
        np.testing.assert_allclose(metric.compute().numpy(), want, rtol=1e-12, err_msg=type(metric).__name__)


def test_compute_before_any_update_gives_the_empty_values(paper_tax: Taxonomy) -> None:
    assert torch.isnan(M.NodeRecall(paper_tax).compute()).all()
    assert (M.NodeRecall(paper_tax, zero_division=0.0).compute() == 0).all()
    assert float(M.LCAPrecision(paper_tax, zero_division=1.0).compute()) == 1.0
    assert float(M.DistanceAtK(paper_tax).compute()) == 0.0
    assert float(M.InconsistencyRate(paper_tax).compute()) == 0.0


# --------------------------------------------------------- errors and names
def test_errors_at_the_door(paper_tax: Taxonomy) -> None:
    for cls in (M.NodeRecall, M.LCAPrecision, M.LCARecall, M.LCAF1):
        with pytest.raises(ValueError, match=r"zero_division: expected a number such as 0\.0, 1\.0 .* got 'nan'"):
            cls(paper_tax, zero_division="nan")
        with pytest.raises(TypeError, match="validate_args: expected True or False, got 'no'"):
            cls(paper_tax, validate_args="no")
        with pytest.raises(TypeError, match="taxonomy: expected a hiercls.Taxonomy, got str"):
            cls("root/ALL")
    for cls, _ in LCA:
        with pytest.raises(ValueError, match="measure: expected one of 'info', 'depth', got 'entropy'"):
            cls(paper_tax, measure="entropy")
    with pytest.raises(ValueError, match="distance: expected one of 'auto', 'height', 'path', got 'hops'"):
        M.DistanceAtK(paper_tax, distance="hops")
    for tol in (-1e-6, math.nan, math.inf, True, "1e-6", None):
        with pytest.raises(ValueError, match=r"tol: expected a non-negative finite number such as 1e-6, got"):
            M.InconsistencyRate(paper_tax, tol=tol)


def test_update_errors_name_the_argument(paper_tax: Taxonomy) -> None:
    n = paper_tax.num_nodes
    with pytest.raises(UnknownNodeError, match="preds: Unknown node 'XYZ'"):
        M.NodeRecall(paper_tax).update(["XYZ"], ["ALL"])
    with pytest.raises(UnknownNodeError, match="target: Unknown node 'XYZ'"):
        M.LCAF1(paper_tax).update(["ALL"], ["XYZ"])
    with pytest.raises(ValueError, match="target and preds must have the same length, got 1 and 2"):
        M.LCARecall(paper_tax).update(torch.tensor([1, 2]), torch.tensor([1]))
    metric = M.DistanceAtK(paper_tax)
    with pytest.raises(
        ValueError, match=r"topk_preds: expected a 2-D array of shape \(num_samples, k\), got shape \(2,\)"
    ):
        metric.update(torch.tensor([1, 2]), torch.tensor([1, 2]))
    with pytest.raises(
        ValueError, match=r"topk_preds: expected shape \(2, k\) with k >= 1 to match target, got \(3, 1\)"
    ):
        metric.update(torch.tensor([[1], [2], [3]]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"topk_preds: expected shape \(1, k\) with k >= 1 .* got \(1, 0\)"):
        metric.update(torch.zeros(1, 0, dtype=torch.long), torch.tensor([1]))
    with pytest.raises(UnknownNodeError, match="topk_preds: Unknown node 'XYZ'"):
        metric.update([["ALL", "XYZ"]], ["ALL"])
    assert int(metric.total) == 0  # nothing was counted by the refused batches
    rate = M.InconsistencyRate(paper_tax)
    with pytest.raises(
        ValueError, match=rf"probs: expected node marginals of shape \(num_samples, {n}\), got shape \(2, 3\)"
    ):
        rate.update(torch.rand(2, 3))
    with pytest.raises(ValueError, match="probs: expected finite marginals, got nan at sample 0, node 1"):
        rate.update(torch.tensor([[1.0, math.nan] + [0.0] * (n - 2)]))
    # validation off still reads what the device path does not take (a list, a wrong shape) on the host
    with pytest.raises(ValueError, match="probs: expected node marginals"):
        M.InconsistencyRate(paper_tax, validate_args=False).update(torch.rand(2, 3))


def test_inconsistency_rate_update_refuses_logits_as_the_function_does(paper_tax: Taxonomy) -> None:
    """update() took logits (values outside [0, 1]) silently and counted them; it refuses them as
    inconsistency_rate does, counting nothing, unless validate_args=False."""
    n = paper_tax.num_nodes
    logits = torch.linspace(-4.0, 4.0, 2 * n).reshape(2, n)
    rate = M.InconsistencyRate(paper_tax)
    for batch in (logits, logits.numpy(), logits.tolist()):
        with pytest.raises(
            ValueError,
            match=r"probs: expected node marginals in \[0, 1\] \(up to 0\.001 for rounding\), got values from -4 "
            r"to 4\. These look like logits",
        ):
            rate.update(batch)
    assert int(rate.total) == 0
    unchecked = M.InconsistencyRate(paper_tax, validate_args=False)
    unchecked.update(logits)  # on the device, no read-back
    unchecked.update(logits.tolist())  # on the host, shape and finite values only
    assert int(unchecked.total) == 4
    assert float(unchecked.compute()) == M.inconsistency_rate(logits, paper_tax, validate_args=False)


def test_unchecked_out_of_range_indices_name_the_value_passed(paper_tax: Taxonomy) -> None:
    """With validate_args=False a negative index was sent to num_nodes for the gather, so on the CPU the
    IndexError named index 11, which the caller never passed. The CPU refuses it at the door instead, with
    the checked path's message (the caller's value and the range), and counts nothing."""
    metrics = [M.NodeRecall(paper_tax, validate_args=False)] + [cls(paper_tax, validate_args=False) for cls, _ in LCA]
    for metric in metrics:
        with pytest.raises(UnknownNodeError, match=r"^preds: 1 node indices out of range \[0, 11\): first \[-1\]\. "):
            metric.update(torch.tensor([3, -1]), torch.tensor([3, 4]))
        with pytest.raises(UnknownNodeError, match=r"^target: 1 node indices out of range \[0, 11\): first \[12\]"):
            metric.update(torch.tensor([3, 4]), torch.tensor([3, 12]))
        assert all(not getattr(metric, s).any() for s in metric._defaults), type(metric).__name__
    topk = M.DistanceAtK(paper_tax, validate_args=False)
    with pytest.raises(UnknownNodeError, match=r"^topk_preds: 1 node indices out of range \[0, 11\): first \[-1\]"):
        topk.update(torch.tensor([[3, 4], [4, -1]]), torch.tensor([3, 4]))
    # the target is checked before it is repeated k times: one bad index, named once
    with pytest.raises(UnknownNodeError, match=r"^target: 1 node indices out of range \[0, 11\): first \[-1\]"):
        topk.update(torch.tensor([[3, 4], [4, 3]]), torch.tensor([3, -1]))
    assert int(topk.total) == 0
    topk.update(torch.tensor([[3, 4], [4, 3]]), torch.tensor([3, 4]))  # in range: counted on the device path
    assert float(topk.compute()) == M.distance_at_k([3, 4], [[3, 4], [4, 3]], paper_tax)


def test_dags_are_accepted_as_the_functions_accept_them() -> None:
    """None of node_recall, the LCA metrics, distance_at_k or inconsistency_rate refuses a DAG, and so
    none of the classes does (no class-only restriction)."""
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("b", "y")])
    y_true, y_pred = ["x", "y", "a"], ["y", "x", "x"]
    got = M.NodeRecall(dag)(y_pred, y_true)
    np.testing.assert_array_equal(got.numpy(), M.node_recall(y_true, y_pred, dag))
    for cls, fn in LCA:
        assert float(cls(dag)(y_pred, y_true)) == pytest.approx(fn(y_true, y_pred, dag), rel=1e-12)
    for distance in ("auto", "height", "path"):
        topk = [["x", "a"], ["y", "r"], ["x", "b"]]
        assert float(M.DistanceAtK(dag, distance=distance)(topk, y_true)) == M.distance_at_k(
            y_true, topk, dag, distance=distance
        )


def test_lca_metrics_on_a_dag_take_the_most_informative_common_ancestor() -> None:
    """t and p share a (2 leaves under it) and b (4 leaves); both at depth 1, b of larger index.
    The LCA metrics take a, as the functions do, not the deepest-then-largest-index b."""
    dag = Taxonomy.from_edges(
        [("r", "a"), ("r", "b"), ("a", "t"), ("a", "p"), ("b", "t"), ("b", "p"), ("b", "z1"), ("b", "z2")]
    )
    assert dag.index("b") > dag.index("a")
    for cls, fn in LCA:
        want = fn(["t", "t"], ["p", "t"], dag)
        assert float(cls(dag)(["p", "t"], ["t", "t"])) == pytest.approx(want, rel=1e-12), cls.__name__
    assert M.lca_precision(["t"], ["p"], dag) == pytest.approx(np.log(4 / 2) / np.log(4))


@pytest.mark.parametrize("validate_args", [True, False])
def test_inconsistency_rate_compares_float32_marginals_in_float64(validate_args: bool) -> None:
    """float32 rounds 1 + 1e-7 up to the next float32 above 1; the function compares in float64."""
    tax = Taxonomy.from_paths(["r/a", "r/b"])
    probs = torch.tensor([[1.0, 1.0 + 2**-23, 0.0]], dtype=torch.float32)
    assert M.inconsistency_rate(probs, tax, tol=1e-7) == 1.0
    assert float(M.InconsistencyRate(tax, tol=1e-7, validate_args=validate_args)(probs)) == 1.0


def test_names_as_input(paper_tax: Taxonomy) -> None:
    y_true, y_pred = ["ALL", "AML", "CLL", "Normal"], ["ALL", "APL", "Chronic", "Reactive"]
    metric = M.NodeRecall(paper_tax)
    metric.update(y_pred[:2], y_true[:2])
    metric.update(np.array(y_pred[2:]), np.array(y_true[2:]))
    np.testing.assert_array_equal(metric.compute().numpy(), M.node_recall(y_true, y_pred, paper_tax))
    for cls, fn in LCA:
        metric = cls(paper_tax, measure="depth")
        metric.update(y_pred[:1], y_true[:1])
        metric.update(y_pred[1:], y_true[1:])
        assert float(metric.compute()) == pytest.approx(fn(y_true, y_pred, paper_tax, measure="depth"), rel=1e-12)
    topk = [["ALL", "AML"], ["APL", "CML"], ["Chronic", "CLL"], ["Reactive", "Normal"]]
    metric = M.DistanceAtK(paper_tax, validate_args=False)  # names go the checked host path
    metric.update(topk[:3], y_true[:3])
    metric.update(topk[3:], y_true[3:])
    assert float(metric.compute()) == M.distance_at_k(y_true, topk, paper_tax)


def test_states_are_summed_and_exported(paper_tax: Taxonomy) -> None:
    for name in ("NodeRecall", "LCAPrecision", "LCARecall", "LCAF1", "DistanceAtK", "InconsistencyRate"):
        assert name in M.__all__ and name in dir(M)
        metric = getattr(M, name)(paper_tax)
        assert metric._reductions, name
        for state, reduce in metric._reductions.items():
            assert getattr(reduce, "__name__", "") in ("dim_zero_sum", "sum"), (name, state)
    assert M.NodeRecall(paper_tax).hits.shape == (paper_tax.num_nodes,)
    assert M.NodeRecall.higher_is_better and M.LCAF1.higher_is_better
    assert M.DistanceAtK.higher_is_better is False and M.InconsistencyRate.higher_is_better is False


# --------------------------------------------------------------------- DDP
WORLD = 2


def _ddp_taxonomy() -> Taxonomy:
    return Taxonomy.from_dict(
        {"root": {"Normal": None, "Leukemia": {"Acute": {"ALL": None, "AML": ["APL"]}, "Chronic": ["CLL", "CML"]}}}
    )


def _ddp_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = _ddp_taxonomy().num_nodes
    return rng.integers(0, n, 37), rng.integers(0, n, (37, 3)), rng.random((37, n))


def _ddp_run(shard: np.ndarray) -> dict[str, np.ndarray]:
    tax = _ddp_taxonomy()
    y_true, topk, probs = _ddp_data()
    node = M.NodeRecall(tax)
    at_k = M.DistanceAtK(tax, distance="path")
    rate = M.InconsistencyRate(tax)
    for batch in np.array_split(shard, 3):
        node.update(torch.as_tensor(topk[batch, 0]), torch.as_tensor(y_true[batch]))
        at_k.update(torch.as_tensor(topk[batch]), torch.as_tensor(y_true[batch]))
        rate.update(torch.as_tensor(probs[batch]))
    return {"node": node.compute().numpy(), "at_k": at_k.compute().numpy(), "rate": rate.compute().numpy()}


def _worker(rank: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=(Path(out_dir) / "rendezvous").as_uri(), rank=rank, world_size=WORLD)
    try:
        shard = np.arange(37)[rank::WORLD]  # uneven shards: 19 and 18 samples
        torch.save(_ddp_run(shard), Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is unavailable"
)
def test_two_gloo_processes_reduce_to_the_function_on_all_the_data() -> None:
    """The metrics that tests/test_ddp_metrics.py cannot compare (a vector, top-k preds, marginals)."""
    tax = _ddp_taxonomy()
    y_true, topk, probs = _ddp_data()
    want = {
        "node": M.node_recall(y_true, topk[:, 0], tax),
        "at_k": M.distance_at_k(y_true, topk, tax, distance="path"),
        "rate": M.inconsistency_rate(probs, tax),
    }
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(out_dir,), nprocs=WORLD, join=True)
        for rank in range(WORLD):
            got = torch.load(Path(out_dir) / f"rank{rank}.pt", weights_only=False)
            for name, value in want.items():
                np.testing.assert_array_equal(got[name], value, err_msg=f"rank {rank}: {name}")
    # a shard alone differs from the whole: the reduction did something
    half = _ddp_run(np.arange(37)[0::2])
    assert not all(np.array_equal(half[k], want[k], equal_nan=True) for k in want)


def test_unchecked_inconsistency_rate_counts_a_nan_row_and_an_empty_topk_list_is_an_empty_batch(
    paper_tax: Taxonomy,
) -> None:
    # a NaN row read as consistent (0 %) on the unchecked path; DistanceAtK refused [] where the others take it
    probs = torch.full((2, paper_tax.num_nodes), 0.1)
    probs[:, 0] = 1.0
    probs[1, 3] = math.nan
    metric = M.InconsistencyRate(paper_tax, validate_args=False)
    metric.update(probs)
    assert float(metric.compute()) == 0.5
    with pytest.raises(ValueError, match="probs: expected finite marginals"):
        M.InconsistencyRate(paper_tax).update(probs)
    dk = M.DistanceAtK(paper_tax)
    dk.update([], [])
    dk.update([["ALL", "AML"]], ["ALL"])
    assert int(dk.total) == 2 and float(dk.compute()) == float(M.distance_at_k(["ALL"], [["ALL", "AML"]], paper_tax))
