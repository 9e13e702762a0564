"""Decoders: validity properties, exhaustive-search oracles on small random trees, input forms, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hiercls.decoding as decoding
from hiercls import Taxonomy, TaxonomyError
from hiercls.decoding import (
    decode,
    expected_hierarchical_fbeta,
    expected_lca_cost,
    operating_curve,
    top_k_leaves,
)
from hiercls.marginals import conditional_marginals
from hiercls.synthetic import layered_taxonomy
from tests import oracles_decoding as oracle
from tests.budget import examples
from tests.device_probe import HostTraffic
from tests.strategies import dags, taxonomies, trees

RULES = ("argmax_leaf", "top_down", "threshold", "crm", "hf_optimal")
seeds = st.integers(0, 2**32 - 1)


def _probs(tax: Taxonomy, seed: int, batch: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    half = batch // 2
    return np.concatenate(
        [oracle.random_marginals(tax, rng, half, leaves_only=True), oracle.random_marginals(tax, rng, batch - half)]
    )


# ------------------------------------------------------------- properties
@given(tax=taxonomies(max_nodes=20), seed=seeds)
def test_every_rule_returns_valid_nodes(tax: Taxonomy, seed: int) -> None:
    probs = _probs(tax, seed)
    for rule in RULES:
        if rule in ("crm", "hf_optimal") and not tax.is_tree:
            continue
        out = decode(probs, tax, rule)
        assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == (len(probs),)
        assert ((out >= 0) & (out < tax.num_nodes)).all()
        if rule in ("argmax_leaf", "top_down", "crm"):
            assert tax.is_leaf_mask[out].all(), rule


@settings(examples(25))
@given(tax=trees(max_nodes=12), seed=seeds, cost=st.sampled_from([None, "auto", "height", "path", "random"]))
def test_expected_lca_cost_matches_exhaustive_sum(tax: Taxonomy, seed: int, cost) -> None:
    probs = _probs(tax, seed, batch=4)
    if cost == "random":
        cost = np.random.default_rng(seed).uniform(0, 3, tax.num_nodes)
    got = expected_lca_cost(probs, tax, cost=cost)
    want = np.stack([oracle.expected_cost(row, tax, cost) for row in probs])
    np.testing.assert_allclose(got, want, atol=1e-9)
    # crm: a leaf whose brute-force expected cost is the minimum over leaves
    chosen = decode(probs, tax, "crm", cost=cost)
    leaves = tax.leaf_index
    np.testing.assert_allclose(want[np.arange(len(probs)), chosen], want[:, leaves].min(axis=1), atol=1e-9)


@settings(examples(25))
@given(tax=trees(max_nodes=12), seed=seeds, beta=st.sampled_from([0.5, 1.0, 2.0, 1e-3, 1e20, 1e150]))
def test_expected_hf_matches_exhaustive_sum(tax: Taxonomy, seed: int, beta: float) -> None:
    probs = _probs(tax, seed, batch=4)
    got = expected_hierarchical_fbeta(probs, tax, beta=beta)
    want = np.stack([oracle.expected_hf(row, tax, beta) for row in probs])
    np.testing.assert_allclose(got, want, atol=1e-9)
    chosen = decode(probs, tax, "hf_optimal", beta=beta)
    np.testing.assert_allclose(want[np.arange(len(probs)), chosen], want.max(axis=1), atol=1e-9)
    # float32 too: beta^2 overflowed it above about 1.8e19 (inf / inf: NaN values, and the root decoded)
    got32 = expected_hierarchical_fbeta(torch.as_tensor(probs, dtype=torch.float32), tax, beta=beta)
    np.testing.assert_allclose(got32.numpy(), want, atol=2e-6)


@pytest.mark.skipif(not hasattr(np, "longdouble") or np.dtype(np.longdouble).itemsize <= 8, reason="no long double")
def test_long_double_marginals_are_read_as_float64(paper_tax: Taxonomy) -> None:
    """numpy longdouble passed the float check, then torch.from_numpy failed with its own TypeError."""
    probs = _probs(paper_tax, 3, batch=4)
    wide = probs.astype(np.longdouble)
    for rule in RULES:
        assert decode(wide, paper_tax, rule).tolist() == decode(probs, paper_tax, rule).tolist()
    np.testing.assert_array_equal(top_k_leaves(wide, paper_tax, 2), top_k_leaves(probs, paper_tax, 2))
    np.testing.assert_array_equal(expected_lca_cost(wide, paper_tax), expected_lca_cost(probs, paper_tax))


def test_top_k_leaves_works_in_chunks_and_checks_each(monkeypatch: pytest.MonkeyPatch, paper_tax: Taxonomy) -> None:
    """top_k_leaves took the whole batch at once (temporaries 1.3x the marginals: 246 MB for 5,000 x 10,111);
    it now goes chunk by chunk like the decoders, with the same result and each chunk validated."""
    import hiercls.decoding as D

    probs = torch.as_tensor(_probs(paper_tax, 5, batch=40))
    whole = top_k_leaves(probs, paper_tax, 3)
    monkeypatch.setattr(D, "_CHUNK_ELEMENTS", 3 * 3 * paper_tax.num_nodes)  # 3 samples a chunk
    seen = []
    real = D._top_k_columns
    monkeypatch.setattr(D, "_top_k_columns", lambda block, k: seen.append(len(block)) or real(block, k))
    assert torch.equal(top_k_leaves(probs, paper_tax, 3), whole)
    assert len(seen) == 14 and max(seen) == 3
    bad = probs.clone()
    bad[37, 0] = 0.5  # in the last chunk
    with pytest.raises(ValueError, match="root column"):
        top_k_leaves(bad, paper_tax, 3)


@st.composite
def deep_trees(draw: st.DrawFn) -> Taxonomy:
    """A spine 9 to 40 deep with random side branches: deep enough that the expected-hF pass starts in its
    first top-down form (one channel per truth depth) and switches to the second part-way down."""
    depth = draw(st.integers(9, 40))
    edges = [(f"s{i}", f"s{i + 1}") for i in range(depth)]
    for i in range(depth):
        for j in range(draw(st.integers(0, 2))):
            edges.append((f"s{i}", f"b{i}_{j}"))
            if draw(st.booleans()):
                edges.append((f"b{i}_{j}", f"c{i}_{j}"))
    return Taxonomy.from_edges(edges)


@settings(examples(15), deadline=None)
@given(tax=deep_trees(), seed=seeds, beta=st.sampled_from([0.5, 1.0, 3.0, 1e20]))
def test_expected_hf_on_deep_trees_matches_exhaustive_sum(tax: Taxonomy, seed: int, beta: float) -> None:
    """On a caterpillar 1,000 deep, hf_optimal took 8 s for one sample: the top-down pass did depth^2 / 2
    multiply-adds, one Python call each. Deep trees now take another path through the upper levels; it
    must give the same values (both forms and the switch between them, in float64 and float32)."""
    from hiercls.decoding import _plan

    plan = _plan(tax, "cpu")
    assert 1 < plan.hf_switch <= tax.max_depth
    probs = _probs(tax, seed, batch=4)
    want = np.stack([oracle.expected_hf(row, tax, beta) for row in probs])
    np.testing.assert_allclose(expected_hierarchical_fbeta(probs, tax, beta=beta), want, atol=1e-9)
    chosen = decode(probs, tax, "hf_optimal", beta=beta)
    np.testing.assert_allclose(want[np.arange(len(probs)), chosen], want.max(axis=1), atol=1e-9)
    got32 = expected_hierarchical_fbeta(torch.as_tensor(probs, dtype=torch.float32), tax, beta=beta)
    np.testing.assert_allclose(got32.numpy(), want, atol=2e-6)


@settings(examples(25))
@given(tax=trees(max_nodes=14), seed=seeds, levels=st.integers(1, 3))
def test_top_k_leaves_breaks_ties_by_the_smaller_index(tax: Taxonomy, seed: int, levels: int) -> None:
    """topk's order among equal values is unspecified: the list changed with k and its first leaf was not
    argmax_leaf's. Marginals quantised to a few values make ties common (uniform outputs, exact zeros)."""
    probs = torch.as_tensor(np.round(_probs(tax, seed, batch=5) * levels) / levels)
    leaves = np.asarray(tax.leaf_index)
    full = top_k_leaves(probs, tax, tax.num_leaves)
    for row, got in zip(probs.numpy(), full.tolist()):
        values = row[leaves]
        want = [int(leaves[i]) for i in sorted(range(len(leaves)), key=lambda i: (-values[i], leaves[i]))]
        assert got == want
    for k in range(1, tax.num_leaves + 1):
        assert torch.equal(top_k_leaves(probs, tax, k), full[:, :k])
    assert torch.equal(full[:, 0], decode(probs, tax, "argmax_leaf"))


def test_a_cost_that_requires_grad_is_read(paper_tax: Taxonomy) -> None:
    """A learned cost tensor raised 'Can't call numpy() on Tensor that requires grad'."""
    probs = torch.as_tensor(_probs(paper_tax, 1, batch=3))
    cost = torch.tensor(paper_tax.height_index.tolist(), dtype=torch.float64, requires_grad=True)
    assert torch.equal(decode(probs, paper_tax, "crm", cost=cost), decode(probs, paper_tax, "crm", cost="height"))


def test_hf_chunks_count_the_depth_of_deep_trees() -> None:
    """The expected-hF pass holds about depth x num_nodes values per sample on a deep, thin tree; its chunks
    were sized for 2 x num_nodes (a caterpillar 1,000 deep at batch 512 took 2 GB). Chunked, the values are
    those of one sample at a time."""
    from hiercls.decoding import _HF_MIN_ROWS, _chunks, _plan

    depth = 150
    tax = Taxonomy.from_edges(
        [(f"s{i}", f"s{i + 1}") for i in range(depth)] + [(f"s{i}", f"l{i}") for i in range(depth)]
    )
    plan = _plan(tax, "cpu")
    assert plan.hf_width >= depth // 2
    batch = 200
    parts = _chunks(batch, tax.num_nodes, plan.hf_width, _HF_MIN_ROWS)
    assert len(parts) >= 2 and all(p.stop - p.start >= min(_HF_MIN_ROWS, batch - p.start) for p in parts)
    probs = torch.as_tensor(_probs(tax, 0, batch=batch))
    whole = expected_hierarchical_fbeta(probs, tax)
    rows = torch.cat([expected_hierarchical_fbeta(probs[i : i + 1], tax) for i in range(0, batch, 37)])
    torch.testing.assert_close(whole[::37], rows)


def test_beta_must_be_finite(paper_tax: Taxonomy) -> None:
    probs = _probs(paper_tax, 0, batch=2)
    for bad in (math.inf, math.nan, 0.0, -1.0):
        with pytest.raises(ValueError, match="beta: expected a positive finite number"):
            decode(probs, paper_tax, "hf_optimal", beta=bad)


@given(tax=taxonomies(max_nodes=16), seed=seeds, tau=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]))
def test_threshold_and_top_down_match_oracles(tax: Taxonomy, seed: int, tau: float) -> None:
    probs = _probs(tax, seed)
    probs[0] = np.round(probs[0], 1)  # ties in marginals
    assert decode(probs, tax, "threshold", threshold=tau).tolist() == [
        oracle.threshold_decode(row, tax, tau) for row in probs
    ]
    assert decode(probs, tax, "top_down").tolist() == [oracle.top_down_decode(row, tax) for row in probs]


@given(tax=trees(max_nodes=16), seed=seeds)
def test_argmax_leaf_and_top_k(tax: Taxonomy, seed: int) -> None:
    probs = _probs(tax, seed)
    leaves = tax.leaf_index
    assert decode(probs, tax).tolist() == leaves[probs[:, leaves].argmax(axis=1)].tolist()
    k = min(3, tax.num_leaves)
    top = top_k_leaves(probs, tax, k)
    assert top.shape == (len(probs), k) and tax.is_leaf_mask[top].all()
    vals = np.take_along_axis(probs, top, axis=1)
    assert (np.diff(vals, axis=1) <= 0).all()
    assert np.allclose(vals[:, 0], probs[:, leaves].max(axis=1))


@settings(examples(20))
@given(tax=taxonomies(max_nodes=12), seed=seeds, measure=st.sampled_from(["info", "depth"]))
def test_operating_curve_matches_threshold_sweep(tax: Taxonomy, seed: int, measure: str) -> None:
    probs = np.round(_probs(tax, seed, batch=5), 2)
    rng = np.random.default_rng(seed)
    target = rng.integers(0, tax.num_nodes, len(probs)).tolist()
    curve = operating_curve(probs, target, tax, measure=measure)
    assert curve.thresholds[0] == np.inf and curve.correct[0] == 1.0
    assert (np.diff(curve.thresholds) < 0).all()
    taus = sorted(set(np.unique(probs).tolist()) | {0.0, 0.33, 1.5}, reverse=True)
    at = operating_curve(probs, target, tax, measure=measure, thresholds=taus)
    for tau, spec, corr in zip(taus, at.specificity, at.correct):
        want = oracle.curve_point(probs, target, tax, tau, measure)
        assert spec == pytest.approx(want[0]) and corr == pytest.approx(want[1])
    assert at.auc == curve.auc
    assert curve.auc == pytest.approx(oracle.front_area(curve.specificity, curve.correct))
    assert 0.0 <= curve.auc <= 1.0
    assert curve.auc >= curve.specificity.max() * curve.correct[curve.specificity.argmax()] - 1e-12


@settings(examples(30))
@given(
    tax=taxonomies(max_nodes=12),
    seed=seeds,
    tau=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.1, 0.3, 0.7, 0.9, 1 / 3])),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_threshold_compares_exactly_whatever_the_dtype(tax: Taxonomy, seed: int, tau: float, dtype) -> None:
    """p >= tau is decided on the exact values: float32 marginals compared with a Python float used to round
    tau to the nearest float32 first (0.7 -> 0.69999999), so a marginal of float32(0.7) qualified at 0.7,
    where operating_curve (float64) said it did not. Marginals equal to tau's neighbours are the test."""
    probs = torch.as_tensor(_probs(tax, seed, batch=6)).to(dtype)
    below, above = (torch.nextafter(torch.tensor(tau, dtype=dtype), torch.tensor(x, dtype=dtype)) for x in (0.0, 2.0))
    # kept in [0, 1]: the float64 copy decoded as the reference would refuse 1.0078 (bfloat16's next value
    # after 1.0), which is beyond float64's rounding slack
    above = torch.clamp(above, max=1.0)
    probs[0, 1:] = torch.tensor(tau, dtype=dtype)  # tau itself, rounded to the dtype, on every node
    probs[1, 1:] = below
    probs[2, 1:] = above
    exact = decode(probs.double(), tax, "threshold", threshold=tau)
    assert torch.equal(decode(probs, tax, "threshold", threshold=tau), exact)
    curve = operating_curve(probs.float().numpy(), [0] * len(probs), tax, thresholds=[tau])
    assert curve.specificity[0] == pytest.approx(
        float(oracle.curve_point(probs.double().numpy(), [0] * len(probs), tax, tau, "info")[0])
    )


def test_the_operating_curves_own_thresholds_decode(paper_tax: Taxonomy) -> None:
    """The abstain guide picks tau among curve.thresholds; the first one is inf (every answer the root), which
    decode refused."""
    probs = torch.as_tensor(_probs(paper_tax, 3, batch=8), dtype=torch.float32)
    target = list(range(8))
    curve = operating_curve(probs, target, paper_tax)
    rows = probs.double().numpy()
    for tau in curve.thresholds:
        pred = decode(probs, paper_tax, "threshold", threshold=float(tau)).tolist()
        assert pred == [oracle.threshold_decode(row, paper_tax, float(tau)) for row in rows]
        if tau == math.inf:
            assert pred == [0] * len(rows)


def test_operating_curve_area_of_a_known_case() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = np.array([[1.0, 0.9, 0.1, 0.6, 0.3], [1.0, 0.2, 0.8, 0.1, 0.1]])
    curve = operating_curve(probs, ["a1", "b"], tax, measure="depth")
    # thresholds inf -> root/root, 0.9 -> a/root, 0.8 -> a/b, 0.6 -> a1/b, 0.1 -> a1/a1 (wrong for b)
    assert curve.thresholds.tolist() == [np.inf, 0.9, 0.8, 0.6, 0.1]
    assert curve.specificity.tolist() == [0.0, 0.25, 0.75, 1.0, 0.5]
    assert curve.correct.tolist() == [1.0, 1.0, 1.0, 1.0, 0.5]
    assert curve.auc == pytest.approx(1.0)  # the front: correct 1 up to specificity 1
    worse = operating_curve(probs, ["a2", "a1"], tax, measure="depth")
    assert 0.0 <= worse.auc < curve.auc


def test_operating_curve_area_is_the_front_to_the_right_of_each_specificity() -> None:
    """helper-120: the area took the best correct rate among points to the left of each specificity and no
    test failed (every known case had a front of 1). Here correct rates fall and rise again."""
    from hiercls.decoding import _front_area

    spec, corr = np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.4, 0.9])
    assert _front_area(spec, corr) == pytest.approx(0.9) == oracle.front_area(spec, corr)
    spec, corr = np.array([0.0, 0.2, 0.6, 0.6, 0.8]), np.array([1.0, 0.3, 0.7, 0.5, 0.2])
    # (0, 0.6]: 0.7 (the best at >= x); (0.6, 0.8]: 0.2; beyond 0.8 nothing: 0
    assert _front_area(spec, corr) == pytest.approx(0.6 * 0.7 + 0.2 * 0.2) == oracle.front_area(spec, corr)


# ------------------------------------------------------------ known cases
def test_threshold_stops_at_an_inner_node_when_unsure(paper_tax: Taxonomy) -> None:
    probs = np.zeros((1, paper_tax.num_nodes))
    for name, p in {
        "root": 1.0,
        "Leukemia": 0.9,
        "Acute": 0.85,
        "ALL": 0.45,
        "AML": 0.4,
        "APL": 0.3,
        "Chronic": 0.05,
        "CLL": 0.03,
        "CML": 0.02,
        "Normal": 0.06,
        "Reactive": 0.04,
    }.items():
        probs[0, paper_tax.index(name)] = p
    assert paper_tax.names(decode(probs, paper_tax, "threshold")) == ["Acute"]
    assert paper_tax.names(decode(probs, paper_tax, "argmax_leaf")) == ["ALL"]
    assert paper_tax.names(decode(probs, paper_tax, "top_down")) == ["ALL"]
    assert paper_tax.names(decode(probs, paper_tax, "threshold", threshold=0.3)) == ["APL"]
    # expected hF (oracle): ALL 0.7048, AML 0.6738, Acute below both
    assert paper_tax.names(decode(probs, paper_tax, "hf_optimal")) == ["ALL"]
    scores = oracle.expected_hf(probs[0], paper_tax, 1.0)
    assert paper_tax.nodes[int(np.argmax(scores))] == "ALL"
    assert scores[paper_tax.index("ALL")] == pytest.approx(0.7048, abs=1e-4)


def test_crm_prefers_the_leaf_of_the_heavier_subtree() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/a/a3", "r/b/b1"])
    # leaves: a1 .25, a2 .25, a3 .2, b1 .3 -> argmax says b1, CRM says a leaf of the heavy subtree a
    probs = np.array([[1.0, 0.7, 0.3, 0.25, 0.25, 0.2, 0.3]])
    assert tax.names(decode(probs, tax, "argmax_leaf")) == ["b1"]
    assert tax.names(decode(probs, tax, "crm")) == ["a1"]


def test_crm_on_a_flat_taxonomy_is_argmax_and_the_default_cost_follows_the_leaves_depths() -> None:
    tax = Taxonomy.from_paths([f"r/c{i}" for i in range(6)])
    probs = _probs(tax, 3, batch=8)
    assert decode(probs, tax, "crm").tolist() == decode(probs, tax, "argmax_leaf").tolist()
    even = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2"])  # every leaf at depth 2: the LCA height
    probs = _probs(even, 5)
    for cost in (None, "auto"):
        np.testing.assert_allclose(
            expected_lca_cost(probs, even, cost=cost), expected_lca_cost(probs, even, cost="height")
        )
    ragged = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2/x"])  # leaves at depths 2 and 3: the path
    probs = _probs(ragged, 5)
    for cost in (None, "auto"):
        np.testing.assert_allclose(
            expected_lca_cost(probs, ragged, cost=cost), expected_lca_cost(probs, ragged, cost="path")
        )
    assert not np.allclose(
        expected_lca_cost(probs, ragged, cost="height"), expected_lca_cost(probs, ragged, cost="path")
    )


@settings(examples(25))
@given(tax=trees(max_nodes=12), seed=seeds)
def test_crm_by_default_minimises_the_expected_distance_of_mistake_severity(tax: Taxonomy, seed: int) -> None:
    """The default cost is the LCA distance hiercls.metrics uses by default (mistake_severity): CRM's leaf
    has the least expected lca_distance to the truth, the truth drawn from the marginals' leaf masses."""
    from hiercls.metrics import lca_distance

    probs = _probs(tax, seed, batch=4)
    leaves = tax.leaf_index
    mass = oracle.exclusive_mass
    for row, chosen in zip(probs, decode(probs, tax, "crm")):
        q = mass(row, tax)
        truths = np.flatnonzero(q > 0)
        risk = {
            int(leaf): float(np.dot(q[truths], lca_distance(truths, np.full(len(truths), leaf), tax)))
            for leaf in leaves
        }
        assert risk[int(chosen)] == pytest.approx(min(risk.values()), abs=1e-9)


def test_hf_optimal_beta_trades_depth() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = np.array([[1.0, 0.8, 0.2, 0.45, 0.35]])
    # beta small favours precision (stop at a), large beta favours recall (go to a leaf)
    assert tax.names(decode(probs, tax, "hf_optimal", beta=0.3)) == ["a"]
    assert tax.names(decode(probs, tax, "hf_optimal", beta=3.0)) == ["a1"]


# ----------------------------------------------------------- input forms
def test_torch_in_torch_out_numpy_in_numpy_out_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2", "r/c"])
    probs = _probs(tax, 7, batch=13)
    expected = {rule: decode(probs, tax, rule) for rule in RULES}
    for rule in RULES:
        out_t = decode(torch.from_numpy(probs).float(), tax, rule)
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.int64
        assert out_t.tolist() == expected[rule].tolist()
        assert decode(probs.tolist(), tax, rule).tolist() == expected[rule].tolist()
        assert decode(torch.from_numpy(probs).bfloat16().float(), tax, rule).shape == (13,)
    monkeypatch.setattr(decoding, "_CHUNK_ELEMENTS", 7)  # one sample per chunk: batch independence
    for rule in RULES:
        assert decode(probs, tax, rule).tolist() == expected[rule].tolist()
    np.testing.assert_array_equal(top_k_leaves(torch.from_numpy(probs), tax, 2).numpy(), top_k_leaves(probs, tax, 2))


def test_decoders_work_on_dags() -> None:
    tax = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("b", "y")])
    probs = np.array([[1.0, 0.6, 0.4, 0.7, 0.3]])
    assert tax.names(decode(probs, tax, "top_down")) == ["x"]
    assert tax.names(decode(probs, tax, "threshold")) == ["x"]
    assert tax.names(decode(probs, tax, "argmax_leaf")) == ["x"]


def test_threshold_accepts_numpy_and_torch_scalars(paper_tax: Taxonomy) -> None:
    probs = torch.rand(6, paper_tax.num_nodes, generator=torch.Generator().manual_seed(0))
    probs[:, 0] = 1.0  # the root's marginal
    want = decode(probs, paper_tax, "threshold", threshold=0.5)
    for tau in (np.float32(0.5), np.array(0.5), torch.tensor(0.5), 1 / 2):
        assert torch.equal(decode(probs, paper_tax, "threshold", threshold=tau), want)


def test_operating_curve_takes_its_own_thresholds_back() -> None:
    """The curve starts at threshold +inf (everything at the root); asking for those points must work."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = np.array([[1.0, 0.7, 0.3, 0.6, 0.1], [1.0, 0.2, 0.8, 0.1, 0.1]])
    curve = operating_curve(probs, ["a1", "b"], tax)
    again = operating_curve(probs, ["a1", "b"], tax, thresholds=curve.thresholds)
    np.testing.assert_array_equal(again.specificity, curve.specificity)
    np.testing.assert_array_equal(again.correct, curve.correct)


# ------------------------------------------------------------------ errors
def test_errors_name_the_argument() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    good = np.full((2, tax.num_nodes), 0.5)
    good[:, 0] = 1.0  # the root's marginal
    with pytest.raises(ValueError, match="rule: expected one of"):
        decode(good, tax, "beam")
    with pytest.raises(ValueError, match=r"probs: expected node marginals of shape \(batch, 5\)"):
        decode(good[:, :3], tax)
    with pytest.raises(ValueError, match="NaN or infinite"):
        decode(np.full((1, 5), np.nan), tax)
    with pytest.raises(ValueError, match="expected float node marginals"):
        decode(torch.ones(2, 5, dtype=torch.long), tax)
    with pytest.raises(ValueError, match="expected float node marginals"):
        decode(np.array([["a"] * 5]), tax)
    with pytest.raises(ValueError, match="threshold: expected a number"):
        decode(good, tax, "threshold", threshold="high")
    with pytest.raises(ValueError, match="threshold: expected a finite number"):  # NaN: every answer the root
        decode(good, tax, "threshold", threshold=float("nan"))
    assert (torch.as_tensor(decode(good, tax, "threshold", threshold=math.inf)) == 0).all()  # the curve's first
    for bad in (True, torch.tensor([0.5])):
        with pytest.raises(ValueError, match="threshold: expected a number"):
            decode(good, tax, "threshold", threshold=bad)
    for bad in (80, 1.01, -0.2, -math.inf):  # above 1 every sample stopped at the root silently
        with pytest.raises(ValueError, match=r"threshold: expected a probability in \[0, 1\]"):
            decode(good, tax, "threshold", threshold=bad)
    with pytest.raises(ValueError, match="cost: expected 'auto', 'height', 'path' or a per-node array"):
        decode(good, tax, "crm", cost="manhattan")
    with pytest.raises(ValueError, match=r"cost: expected finite per-node costs of shape \(5,\)"):
        decode(good, tax, "crm", cost=[1.0, 2.0])
    # what was a bare numpy or float() message, naming neither cost nor the fix
    with pytest.raises(ValueError, match=r"cost: .* array of numbers .* got list .*'x'.*taxonomy.height_index"):
        decode(good, tax, "crm", cost=[0, 1, 2, "x", 0])
    with pytest.raises(ValueError, match=r"cost: .* got a mapping; .*\[costs\[name\] for name in taxonomy.nodes\]"):
        decode(good, tax, "crm", cost=dict(zip(tax.nodes, tax.height_index.tolist())))
    with pytest.raises(ValueError, match="beta: expected a positive finite number"):
        decode(good, tax, "hf_optimal", beta=0)
    with pytest.raises(ValueError, match=r"k: expected an int in \[1, 3\]"):
        top_k_leaves(good, tax, 4)
    with pytest.raises(TypeError, match="taxonomy: expected a hiercls.Taxonomy"):
        decode(good, {"r": ["a"]})
    with pytest.raises(ValueError, match="probs and target must have the same number of samples"):
        operating_curve(good, ["a1"], tax)
    with pytest.raises(ValueError, match="measure: expected one of"):
        operating_curve(good, ["a1", "b"], tax, measure="entropy")
    with pytest.raises(ValueError, match="thresholds: expected a non-empty sequence"):
        operating_curve(good, ["a1", "b"], tax, thresholds=[])
    with pytest.raises(ValueError, match="thresholds: expected a non-empty sequence"):
        operating_curve(good, ["a1", "b"], tax, thresholds=[0.5, float("nan")])
    with pytest.raises(ValueError, match="thresholds: expected a non-empty sequence"):  # numpy's bare error
        operating_curve(good, ["a1", "b"], tax, thresholds=["x"])
    # integer marginals from numpy are named as a numpy dtype, with the fix
    with pytest.raises(ValueError, match=r"got a numpy array of dtype int64\. .*astype\(np.float32\)"):
        decode(good.astype(np.int64), tax)
    # a 0-d tensor is taken for beta and k as it is for threshold
    assert torch.equal(
        torch.as_tensor(decode(good, tax, "hf_optimal", beta=torch.tensor(2.0))),
        torch.as_tensor(decode(good, tax, "hf_optimal", beta=2.0)),
    )
    assert np.array_equal(top_k_leaves(good, tax, torch.tensor(2)), top_k_leaves(good, tax, 2))
    for bad in (torch.tensor(True), torch.tensor([2])):
        with pytest.raises(ValueError, match=r"k: expected an int"):
            top_k_leaves(good, tax, bad)


def test_logits_or_log_probabilities_are_refused_by_name() -> None:
    """A head returns logits; given to the decoders by mistake they used to decode to something plausible."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    logits = torch.randn(4, tax.num_nodes, generator=torch.Generator().manual_seed(0)) * 3
    log_probs = torch.rand(4, tax.num_nodes, generator=torch.Generator().manual_seed(1)).log()
    calls = [
        lambda p: decode(p, tax, "threshold"),
        lambda p: decode(p, tax, "crm"),
        lambda p: expected_lca_cost(p, tax),
        lambda p: expected_hierarchical_fbeta(p, tax),
        lambda p: top_k_leaves(p, tax, 2),
        lambda p: operating_curve(p, ["a1", "b", "a2", "b"], tax),
    ]
    for bad in (logits, log_probs, log_probs.numpy()):
        for call in calls:
            with pytest.raises(ValueError, match=r"probs: expected node marginals in \[0, 1\].*look like logits"):
                call(bad)
    # rounding just outside [0, 1] (a sum of leaf probabilities, float32) is read, not refused
    edge = torch.tensor([[1.0 + 1e-6, 0.6, 0.4 + 1e-6, 0.3, -1e-7]])
    for call in calls[:5]:
        call(edge)
    assert decode(edge, tax, "threshold", threshold=1.0).tolist() == [0]
    assert decode(edge, tax, "threshold", threshold=0.0).tolist() == [decode(edge, tax, "top_down").item()]


@given(
    tax=trees(max_nodes=12), seed=seeds, dtype=st.sampled_from([torch.float16, torch.bfloat16]), ulps=st.integers(1, 4)
)
def test_half_precision_marginals_that_round_past_one_are_read(tax: Taxonomy, seed: int, dtype, ulps: int) -> None:
    """A sum of leaf probabilities in bfloat16 lands on 1.0078 (its next value after 1.0); decode refused it,
    its slack being 0.001 whatever the dtype. Half-precision input is allowed four of its own eps, and
    decodes exactly as the same values do unchecked; a step more, or logits, are still refused."""
    eps = torch.finfo(dtype).eps
    probs = torch.as_tensor(_probs(tax, seed, batch=4)).to(dtype)
    probs[0, 0] = 1.0 + ulps * eps  # the root, as a bf16 sum of its leaves may give
    if tax.num_nodes > 1:  # the root's column is 1 (up to rounding); another node's may round below 0
        probs[1, -1] = -ulps * eps / 2  # 1 - p rounding below 0
    probs[2, 1:] = 1.0 + ulps * eps
    assert float(probs.float().max()) > 1.0 + decoding._PROB_SLACK or dtype == torch.float16
    for rule in RULES:
        want = decode(probs.float(), tax, rule, validate_args=False)
        assert torch.equal(decode(probs, tax, rule), want), rule
    assert torch.equal(expected_lca_cost(probs, tax), expected_lca_cost(probs.float(), tax, validate_args=False))
    assert torch.equal(
        expected_hierarchical_fbeta(probs, tax), expected_hierarchical_fbeta(probs.float(), tax, validate_args=False)
    )
    assert torch.equal(top_k_leaves(probs, tax, 1), top_k_leaves(probs.float(), tax, 1, validate_args=False))
    # the curve's breakpoints (1 + ulps * eps among them) decode, as they do for float32 marginals
    curve = operating_curve(probs, [0] * len(probs), tax)
    for tau in curve.thresholds[1:]:
        decode(probs, tax, "threshold", threshold=float(tau))
    # past the slack, and in float32 past 0.001, marginals are refused
    too_far = probs.clone()
    too_far[0, 0] = 1.0 + 8 * eps
    for bad in (too_far, probs.float()) if dtype == torch.bfloat16 else (too_far,):
        with pytest.raises(ValueError, match=r"expected node marginals in \[0, 1\]"):
            decode(bad, tax, "argmax_leaf")
    with pytest.raises(ValueError, match="threshold: expected a probability"):
        decode(probs, tax, "threshold", threshold=1.0 + 8 * eps)
    logits = (torch.randn(2, tax.num_nodes, generator=torch.Generator().manual_seed(seed % 2**31)) * 3).to(dtype)
    logits[0, 0] = 3.0
    with pytest.raises(ValueError, match="look like logits"):
        decode(logits, tax, "top_down")


@given(tax=dags(min_nodes=4), seed=seeds)
def test_tree_only_rules_refuse_dags(tax: Taxonomy, seed: int) -> None:
    if tax.is_tree:
        return
    probs = _probs(tax, seed, batch=2)
    for rule in ("crm", "hf_optimal"):
        with pytest.raises(TaxonomyError, match="needs a tree"):
            decode(probs, tax, rule)
    with pytest.raises(TaxonomyError, match="needs a tree"):
        expected_lca_cost(probs, tax)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_in_cuda_out_with_the_cpu_answers() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2", "r/c"])
    probs = torch.from_numpy(_probs(tax, 11, batch=64)).float()
    target = torch.randint(0, tax.num_nodes, (64,))
    for rule in RULES:
        out = decode(probs.cuda(), tax, rule)
        assert out.device.type == "cuda" and out.dtype == torch.int64
        assert out.cpu().tolist() == decode(probs, tax, rule).tolist(), rule
    assert top_k_leaves(probs.cuda(), tax, 2).device.type == "cuda"
    np.testing.assert_allclose(
        expected_hierarchical_fbeta(probs.cuda(), tax).cpu(), expected_hierarchical_fbeta(probs, tax), atol=1e-6
    )
    curve_gpu = operating_curve(probs.cuda(), target, tax)
    curve_cpu = operating_curve(probs, target, tax)
    np.testing.assert_allclose(curve_gpu.correct, curve_cpu.correct)


@pytest.mark.parametrize("as_torch", [False, True])
def test_an_empty_batch_decodes_to_an_empty_result(as_torch) -> None:
    """B = 0 (an empty evaluation shard, every sample filtered out) is not an error, as for the heads,
    losses and metric classes; options are still checked, and operating_curve still needs samples."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    empty = torch.zeros(0, 5) if as_torch else np.zeros((0, 5))
    kind = torch.Tensor if as_torch else np.ndarray
    for rule in ("argmax_leaf", "top_down", "threshold", "crm", "hf_optimal"):
        out = decode(empty, tax, rule)
        assert isinstance(out, kind) and tuple(out.shape) == (0,) and str(out.dtype).endswith("int64")
    assert tuple(top_k_leaves(empty, tax, 2).shape) == (0, 2)
    assert tuple(expected_lca_cost(empty, tax).shape) == (0, 5)
    assert tuple(expected_hierarchical_fbeta(empty, tax).shape) == (0, 5)
    assert tuple(decode(empty, tax, "threshold", threshold=math.inf).shape) == (0,)
    with pytest.raises(ValueError, match="beta"):
        decode(empty, tax, "hf_optimal", beta=-1.0)
    with pytest.raises(ValueError, match="probs is empty"):
        operating_curve(empty, [], tax)


def test_an_option_the_rule_does_not_read_warns_and_changes_nothing() -> None:
    """A threshold given to top_down (or a beta to argmax_leaf) used to be dropped silently: a user who
    meant "stop early when unsure" got full-depth answers. It still has no effect, and now says so."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = np.array([[1.0, 0.6, 0.4, 0.3, 0.3], [1.0, 0.2, 0.8, 0.1, 0.1]])
    for rule, option in [
        ("top_down", {"threshold": 0.9}),
        ("argmax_leaf", {"beta": 2.0}),
        ("threshold", {"cost": "path"}),
    ]:
        with pytest.warns(UserWarning, match=rf"rule='{rule}' ignores {next(iter(option))}="):
            got = decode(probs, tax, rule, **option)
        np.testing.assert_array_equal(got, decode(probs, tax, rule))
    with pytest.warns(UserWarning, match="threshold belongs to rule='threshold', beta belongs to rule='hf_optimal'"):
        decode(probs, tax, "crm", threshold=0.5, beta=1.0)
    # a long per-node cost is described, not printed
    for cost in (list(range(100_000)), np.arange(100_000.0), torch.arange(100_000.0)):
        with pytest.warns(UserWarning) as caught:
            decode(probs, tax, "top_down", cost=cost)
        assert len(str(caught[0].message)) < 300, str(caught[0].message)[:300]
    with pytest.warns(UserWarning, match=r"ignores cost=<ndarray of shape \(5,\)>"):
        decode(probs, tax, "argmax_leaf", cost=np.ones(5))
    # the options a rule reads, and None for the rest, pass quietly; None means the documented default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        own = {"threshold": 0.5, "cost": "height", "beta": 1.0}
        for rule, names in decoding.RULE_OPTIONS.items():
            decode(probs, tax, rule, threshold=None, cost=None, beta=None)
            decode(probs, tax, rule, **{name: own[name] for name in names})
        np.testing.assert_array_equal(decode(probs, tax, "threshold"), decode(probs, tax, "threshold", threshold=0.5))
        np.testing.assert_array_equal(decode(probs, tax, "hf_optimal"), decode(probs, tax, "hf_optimal", beta=1.0))
    assert set(decoding.RULE_OPTIONS) == set(decoding._RULES)


def test_decoding_is_exact_under_autocast() -> None:
    """Decoding right after an autocast forward pass: the expected-hF matmul must not drop to bf16."""
    tax = layered_taxonomy((3, 9, 27, 60), seed=0)
    logits = torch.randn(256, tax.num_nodes, generator=torch.Generator().manual_seed(0)) * 2
    probs = conditional_marginals(logits, tax)
    want_hf = expected_hierarchical_fbeta(probs, tax)
    want = {rule: decode(probs, tax, rule) for rule in ("hf_optimal", "crm")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_hf = expected_hierarchical_fbeta(probs, tax)
        got = {rule: decode(probs, tax, rule) for rule in ("hf_optimal", "crm")}
    assert got_hf.dtype == want_hf.dtype and torch.equal(got_hf, want_hf)
    for rule in want:
        assert torch.equal(got[rule], want[rule]), rule


def test_operating_curve_points_equal_lca_recall_on_a_dag() -> None:
    """Each point of the curve is lca_recall of the threshold predictions, on DAGs too: both read the
    most informative common ancestor (the deepest one can carry no information)."""
    from hiercls.metrics import correct_rate, lca_recall

    dag = Taxonomy.from_edges(
        [("r", "u"), ("r", "w"), ("w", "v"), ("u", "t"), ("u", "p"), ("v", "t"), ("v", "p")]
        + [("v", f"l{k}") for k in range(3)]
    )
    probs = np.zeros((1, dag.num_nodes))
    probs[0, dag.index("r")] = 1.0
    probs[0, dag.index("p")] = 0.9
    for name, value in (("u", 0.9), ("w", 0.95), ("v", 0.95), ("t", 0.05)):
        probs[0, dag.index(name)] = value
    curve = operating_curve(probs, ["t"], dag, measure="info")
    for tau, spec, corr in zip(curve.thresholds, curve.specificity, curve.correct):
        if not np.isfinite(tau):
            continue
        pred = decode(probs, dag, "threshold", threshold=float(tau))
        assert spec == pytest.approx(lca_recall(["t"], pred, dag, measure="info")), tau
        assert corr == pytest.approx(correct_rate(["t"], pred, dag)), tau


@pytest.mark.parametrize("rule", ["argmax_leaf", "top_down", "threshold", "crm", "hf_optimal"])
def test_decode_without_validation_needs_no_device_sync(rule: str) -> None:
    """``validate_args=False`` skips the min/max read-back: decoding runs through on the meta device,
    where any ``.item()``/``float()`` of a tensor raises, so it does not sync a GPU either."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2"])
    probs = torch.rand(3, tax.num_nodes, device="meta")
    decode(probs, tax, rule, validate_args=False)  # first call: the cached tables move to the device
    with HostTraffic() as traffic:  # and then nothing crosses from the host, per call
        out = decode(probs, tax, rule, validate_args=False)
        if rule == "crm":
            decode(probs, tax, rule, cost=torch.ones(tax.num_nodes, device="meta"), validate_args=False)
    assert traffic.ops == []
    assert out.device.type == "meta" and out.shape == (3,) and out.dtype == torch.int64
    with pytest.raises((NotImplementedError, RuntimeError)):  # the check reads values back: meta has none
        decode(probs, tax, rule)
    for fn in (expected_lca_cost, expected_hierarchical_fbeta):
        assert fn(probs, tax, validate_args=False).shape == (3, tax.num_nodes)
    assert top_k_leaves(probs, tax, 2, validate_args=False).shape == (3, 2)


@given(tax=trees(min_nodes=3), seed=seeds)
def test_validation_changes_no_decision(tax: Taxonomy, seed: int) -> None:
    """On valid marginals, ``validate_args=False`` only skips the check: every rule decodes the same."""
    probs = oracle.random_marginals(tax, np.random.default_rng(seed), 5)
    for rule in ("argmax_leaf", "top_down", "threshold", "crm", "hf_optimal"):
        assert np.array_equal(decode(probs, tax, rule), decode(probs, tax, rule, validate_args=False))
    logits = np.log(np.clip(probs, 1e-6, None))  # wrong input: refused with the check, read without it
    with pytest.raises(ValueError, match="look like logits"):
        decode(logits, tax, "top_down")
    assert decode(logits, tax, "top_down", validate_args=False).shape == (5,)


def test_a_curve_breakpoint_below_zero_by_rounding_decodes() -> None:
    """Marginals may stray below 0 by the rounding slack (a difference of sums); the curve then has a breakpoint
    there, and decode refused its own curve's threshold (it allowed the slack above 1 only)."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = np.array([[1.0, 0.6, 0.4, -1e-7, -2e-7]])
    curve = operating_curve(probs, ["a1"], tax)
    assert curve.thresholds.min() < 0
    for tau in curve.thresholds:
        decode(probs, tax, "threshold", threshold=float(tau))
    with pytest.raises(ValueError, match="threshold: expected a probability in"):
        decode(probs, tax, "threshold", threshold=-0.01)


def test_a_bfloat16_cost_tensor_is_read_like_any_other() -> None:
    """numpy has no bfloat16: np.asarray of a bf16 cost raised TypeError inside crm's cost check."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = torch.tensor([[1.0, 0.6, 0.4, 0.3, 0.3], [1.0, 0.1, 0.9, 0.05, 0.05]])
    cost = torch.tensor(tax.height_index, dtype=torch.float32)
    want = decode(probs, tax, "crm", cost=cost)
    assert torch.equal(decode(probs, tax, "crm", cost=cost.bfloat16()), want)
    torch.testing.assert_close(
        expected_lca_cost(probs, tax, cost=cost.bfloat16()), expected_lca_cost(probs, tax, cost=cost)
    )


def test_a_non_finite_cost_is_named_by_value_and_node() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    cost = np.array([0.0, 1.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"got \[nan\] at node\(s\) \['b'\]"):
        decode(np.array([[1.0, 0.6, 0.4, 0.3, 0.3]]), tax, "crm", cost=cost)


@pytest.mark.parametrize("make", ["big_endian", "read_only"])
def test_numpy_marginals_in_another_byte_order_or_read_only_decode(make: str) -> None:
    """A '>f8' array (from a big-endian file) crashed every decoder in torch.from_numpy; a read-only one (np.frombuffer,
    a memory map) made torch warn that it is not writable, though nothing writes to it."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    p = np.array([[1.0, 0.6, 0.4, 0.3, 0.3], [1.0, 0.1, 0.9, 0.05, 0.05]])
    q = p.astype(">f8") if make == "big_endian" else np.frombuffer(p.tobytes(), dtype=p.dtype).reshape(p.shape)
    assert q.dtype.isnative == (make != "big_endian") and q.flags.writeable == (make != "read_only")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for rule in ("argmax_leaf", "top_down", "threshold", "crm", "hf_optimal"):
            assert decode(q, tax, rule).tolist() == decode(p, tax, rule).tolist()
        assert top_k_leaves(q, tax, 2).tolist() == top_k_leaves(p, tax, 2).tolist()
        assert (
            operating_curve(q, ["a1", "b"], tax).thresholds.tolist()
            == operating_curve(p, ["a1", "b"], tax).thresholds.tolist()
        )


def test_a_read_only_numpy_cost_decodes_without_a_warning() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    cost = np.asarray(tax.height_index, dtype=np.float64)
    cost.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode(np.array([[1.0, 0.6, 0.4, 0.3, 0.3]]), tax, "crm", cost=cost).tolist() == [3]


def test_expected_hf_runs_no_matmul_that_a_global_precision_setting_could_lower() -> None:
    """A float32 matmul follows torch's global precision: TF32 on CUDA once a training script turns it on
    (the leukemia example does), bf16 on CPU under set_float32_matmul_precision("medium"). The expected-hF
    sum over truth depths ran as one, so hf_optimal's "exact" decisions depended on that setting."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    tax = layered_taxonomy([2, 4, 8, 16], seed=0)  # depth 4: levels with several predicted depths
    probs = torch.as_tensor(_probs(tax, 0, batch=8), dtype=torch.float32)
    with Ops() as ops:
        decode(probs, tax, "hf_optimal")
        expected_hierarchical_fbeta(probs, tax, beta=2.0)
    assert not ops.names & {"mm", "bmm", "addmm", "matmul", "baddbmm", "dot", "mv"}
    assert "addcmul_" in ops.names  # the probe sees the kernels


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_marginals_get_no_wider_slack_than_bfloat16(name: str) -> None:
    """Four of float8's eps is 0.5 to 1: logits from -0.75 to 1.75 and a threshold of 1.9 were read as
    marginals. The slack stops at bfloat16's (0.031)."""
    dtype = getattr(torch, name, None)
    if dtype is None:
        pytest.skip(f"this torch has no {name}")
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    logits = torch.tensor([[1.75, -0.75, 0.5, 1.0, 0.25]]).to(dtype)
    with pytest.raises(ValueError, match="look like logits"):
        decode(logits, tax, "argmax_leaf")
    probs = torch.tensor([[1.0, 0.5, 0.25, 0.25, 0.5]]).to(dtype)
    with pytest.raises(ValueError, match="threshold: expected a probability"):
        decode(probs, tax, "threshold", threshold=1.5)
    assert decode(probs, tax, "argmax_leaf").tolist() == [4]


def test_a_softmax_or_sigmoid_of_the_logits_is_refused_by_its_root_column(paper_tax: Taxonomy) -> None:
    """logits.softmax(-1), the flat-classification habit, falls inside [0, 1] and decoded to nonsense
    (every threshold answer the root). Node marginals have P(root) = 1 for every sample; head.marginals
    gives them."""
    from hiercls.heads import ConditionalHead

    head = ConditionalHead(8, paper_tax)
    logits = head(torch.randn(5, 8, generator=torch.Generator().manual_seed(0))).detach()
    for wrong in (logits.softmax(-1), logits.sigmoid(), logits.softmax(-1).numpy()):
        for call in (
            lambda p: decode(p, paper_tax, "threshold"),
            lambda p: decode(p, paper_tax, "argmax_leaf"),
            lambda p: top_k_leaves(p, paper_tax, 2),
            lambda p: operating_curve(p, [1] * 5, paper_tax),
        ):
            with pytest.raises(ValueError, match=r"root column \(node 0\) is 1 .* pass head.marginals\(logits\)"):
                call(wrong.detach() if isinstance(wrong, torch.Tensor) else wrong)
    right = head.marginals(logits).detach()
    assert decode(right, paper_tax, "threshold").shape == (5,)
    # a root one rounding step below 1 is read, as the [0, 1] bounds are
    right[:, 0] = 1.0 - 5e-4
    decode(right, paper_tax, "threshold")
    # unchecked: nothing is read back, so even a softmax passes (the caller vouches for its input)
    decode(logits.softmax(-1), paper_tax, "threshold", validate_args=False)


@settings(examples(200))
@given(
    data=st.data(),
    pool=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, math.nan, math.inf, -math.inf]), min_size=1, max_size=4),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 12)),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16]),
)
def test_top_k_columns_equal_a_stable_sort(data, pool: list[float], shape: tuple[int, int], dtype) -> None:
    """top_k_leaves took a stable sort of every row (10,000 leaves: 3.2 s against 0.14 s for topk). Its
    topk-based replacement must choose and order exactly as the stable sort: larger first, ties to the
    smaller column, NaN (only without validation) first. Rows drawn from a few values make ties common,
    at the k-th value too (a first version broke them at -inf)."""
    from hiercls.decoding import _top_k_columns

    rows, width = shape
    values = data.draw(st.lists(st.sampled_from(pool), min_size=rows * width, max_size=rows * width))
    block = torch.tensor(values, dtype=dtype).reshape(rows, width)
    k = data.draw(st.integers(1, width))
    want = torch.sort(block, dim=1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(_top_k_columns(block, k), want)


def test_labels_where_the_taxonomy_goes_name_the_order_of_the_arguments() -> None:
    """operating_curve takes (probs, target, taxonomy), decode (probs, taxonomy): passing the taxonomy
    second to operating_curve said only 'expected a hiercls.Taxonomy, got Tensor'."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = torch.tensor([[1.0, 0.6, 0.4, 0.3, 0.3]])
    with pytest.raises(TypeError, match=r"got Tensor\..*\(probs, target, taxonomy\) for operating_curve"):
        operating_curve(probs, tax, torch.tensor([2]))
    with pytest.raises(TypeError, match=r"got dict\. Build one with Taxonomy\.from_edges / from_paths / from_dict\.$"):
        decoding.decode(probs, {"r": None})  # not array-like: no word on the order


def test_operating_curve_reads_query_thresholds_outside_the_unit_interval_as_its_ends() -> None:
    """helper-122: thresholds=[5.0, -3.0] are answered where decode(threshold=5.0) refuses 5.0; the
    docstring now says so: the curve's first point (every answer the root) and its last."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = np.array([[1.0, 0.9, 0.1, 0.6, 0.3], [1.0, 0.2, 0.8, 0.1, 0.1]])
    curve = operating_curve(probs, ["a1", "b"], tax, measure="depth")
    ends = operating_curve(probs, ["a1", "b"], tax, measure="depth", thresholds=[5.0, -3.0])
    assert ends.specificity.tolist() == [curve.specificity[0], curve.specificity[-1]]
    assert ends.correct.tolist() == [curve.correct[0], curve.correct[-1]]
