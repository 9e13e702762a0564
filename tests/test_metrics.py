"""Metric functions: oracles on random trees and DAGs, properties, input forms, known values, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from hiercls import Taxonomy, TaxonomyError, UnknownNodeError
from hiercls import metrics as M
from tests import oracles_metrics as oracle
from tests.budget import examples
from tests.strategies import dags, taxonomies, trees


@st.composite
def labelled(draw, strategy=None, max_size: int = 25):
    """A taxonomy and aligned y_true, y_pred node indices (any node)."""
    tax = draw(strategy if strategy is not None else taxonomies(max_nodes=20))
    n = draw(st.integers(1, max_size))
    nodes = st.integers(0, tax.num_nodes - 1)
    y_true = draw(st.lists(nodes, min_size=n, max_size=n))
    y_pred = draw(st.lists(nodes, min_size=n, max_size=n))
    return tax, y_true, y_pred


zero_divisions = st.sampled_from([0.0, 1.0, math.nan])  # nan: left out of averages, as in scikit-learn


# ------------------------------------------------------------------ oracles
@given(
    case=labelled(),
    beta=st.sampled_from([0.5, 1.0, 2.0]),
    average=st.sampled_from(["micro", "macro"]),
    zd=zero_divisions,
)
def test_hierarchical_prf_matches_set_oracle_on_trees_and_dags(case, beta, average, zd) -> None:
    tax, y_true, y_pred = case
    got = M.hierarchical_precision_recall_fscore(y_true, y_pred, tax, beta=beta, average=average, zero_division=zd)
    want = oracle.hierarchical_prf(y_true, y_pred, tax, beta, average, zd)
    assert got == pytest.approx(want, nan_ok=True)
    assert M.hierarchical_precision(y_true, y_pred, tax, average=average, zero_division=zd) == pytest.approx(
        want[0], nan_ok=True
    )
    assert M.hierarchical_recall(y_true, y_pred, tax, average=average, zero_division=zd) == pytest.approx(
        want[1], nan_ok=True
    )
    assert M.hierarchical_fbeta(y_true, y_pred, tax, beta=beta, average=average, zero_division=zd) == pytest.approx(
        want[2], nan_ok=True
    )
    if beta == 1.0:
        assert M.hierarchical_f1(y_true, y_pred, tax, average=average, zero_division=zd) == pytest.approx(
            want[2], nan_ok=True
        )


@given(case=labelled(), distance=st.sampled_from(["height", "path"]))
def test_mistake_severity_and_lca_distance_match_oracle(case, distance) -> None:
    tax, y_true, y_pred = case
    got = M.lca_distance(y_true, y_pred, tax, distance=distance)
    assert got.tolist() == [oracle.distance(tax, t, p, distance) for t, p in zip(y_true, y_pred)]
    assert M.mistake_severity(y_true, y_pred, tax, distance=distance) == pytest.approx(
        oracle.mistake_severity(y_true, y_pred, tax, distance)
    )
    topk = np.stack([y_pred, list(reversed(y_true))], axis=1)
    want = np.mean([[oracle.distance(tax, t, p, distance) for p in row] for t, row in zip(y_true, topk)])
    assert M.distance_at_k(y_true, topk, tax, distance=distance) == pytest.approx(want)


def test_auto_distance_is_height_on_level_trees_and_path_otherwise(paper_tax: Taxonomy) -> None:
    level = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1"])
    assert M.mistake_severity(["a1", "a1"], ["a2", "b1"], level) == 1.5  # heights 1 and 2
    assert M.mistake_severity(["a1", "a1"], ["a2", "b1"], level, distance="path") == 3.0
    # ragged (leaves at depths 1..4): path length
    assert M.mistake_severity(["APL"], ["Normal"], paper_tax) == 5.0
    assert M.mistake_severity(["APL"], ["Normal"], paper_tax, distance="height") == 4.0
    assert M.mistake_severity(["APL"], ["APL"], paper_tax, zero_division=-1.0) == -1.0


def test_level_confusion_matrix_peaks_at_its_result() -> None:
    """The docstring promises K x K memory; the matrix was counted as (K, K + 1) and then sliced with a copy,
    a peak of twice the result (6.1 GiB for a 3 GiB matrix at 20k leaves)."""
    import tracemalloc

    k = 1500
    tax = Taxonomy.from_edges([("r", f"l{i}") for i in range(k)])
    y = np.arange(1, k + 1)
    pred = np.where(y % 7 == 0, 0, y)  # some predictions stop at the root (no column without abstain_column)
    tracemalloc.start()
    try:
        cm = M.level_confusion_matrix(y, pred, tax, 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cm.shape == (k, k) and cm.sum() == (pred != 0).sum()
    assert peak < 1.2 * cm.nbytes, (peak, cm.nbytes)


@given(case=labelled(trees(max_nodes=20)), zd=zero_divisions)
def test_level_metrics_match_oracles(case, zd) -> None:
    tax, y_true, y_pred = case
    assert M.level_accuracy(y_true, y_pred, tax, zero_division=zd) == pytest.approx(
        oracle.level_accuracy(y_true, y_pred, tax, zd), nan_ok=True
    )
    for d in range(1, tax.max_depth + 1):
        rows, cols = oracle.level_classes(y_true, y_pred, tax, d)
        level = [tax.nodes[i] for i in tax.levels()[d]]
        cm = M.level_confusion_matrix(y_true, y_pred, tax, d, abstain_column=True)
        assert cm.shape == (len(level), len(level) + 1)
        for i, name_t in enumerate(level):
            for j, name_p in enumerate([*level, None]):
                assert cm[i, j] == sum(r == name_t and c == name_p for r, c in zip(rows, cols))
        np.testing.assert_array_equal(M.level_confusion_matrix(y_true, y_pred, tax, d), cm[:, :-1])
    for average in ("macro", "micro", "weighted"):
        got = M.level_precision_recall_f1(y_true, y_pred, tax, average=average, zero_division=zd)
        for d in range(1, tax.max_depth + 1):
            rows, cols = oracle.level_classes(y_true, y_pred, tax, d)
            if not rows:
                assert got[d] == pytest.approx((zd, zd, zd), nan_ok=True)
                continue
            cols = [c if c is not None else "<stopped above>" for c in cols]
            labels = sorted(set(rows) | (set(cols) - {"<stopped above>"}))
            want = precision_recall_fscore_support(rows, cols, labels=labels, average=average, zero_division=zd)[:3]
            assert got[d] == pytest.approx(want, nan_ok=True), (d, average)


@given(case=labelled(), measure=st.sampled_from(["info", "depth"]), zd=zero_divisions)
def test_lca_metrics_and_correct_rate_match_oracles(case, measure, zd) -> None:
    tax, y_true, y_pred = case
    want = oracle.lca_prf(y_true, y_pred, tax, measure, zd)
    assert M.lca_precision(y_true, y_pred, tax, measure=measure, zero_division=zd) == pytest.approx(
        want[0], nan_ok=True
    )
    assert M.lca_recall(y_true, y_pred, tax, measure=measure, zero_division=zd) == pytest.approx(want[1], nan_ok=True)
    assert M.lca_f1(y_true, y_pred, tax, measure=measure, zero_division=zd) == pytest.approx(want[2], nan_ok=True)
    assert M.correct_rate(y_true, y_pred, tax) == pytest.approx(oracle.correct_rate(y_true, y_pred, tax))
    np.testing.assert_allclose(M.node_recall(y_true, y_pred, tax), oracle.node_recall(y_true, y_pred, tax))


@given(case=labelled(trees(max_nodes=20)))
def test_lca_depth_metrics_are_macro_hierarchical_metrics_on_trees(case) -> None:
    tax, y_true, y_pred = case
    macro = M.hierarchical_precision_recall_fscore(y_true, y_pred, tax, average="macro")
    assert M.lca_precision(y_true, y_pred, tax, measure="depth") == pytest.approx(macro[0])
    assert M.lca_recall(y_true, y_pred, tax, measure="depth") == pytest.approx(macro[1])


@given(case=labelled(), seed=st.integers(0, 2**31))
def test_node_average_precision_matches_sklearn_and_inconsistency_oracle(case, seed) -> None:
    tax, y_true, _ = case
    rng = np.random.default_rng(seed)
    probs = np.round(rng.random((len(y_true), tax.num_nodes)), 1)  # rounded: ties
    got = M.node_average_precision(probs, y_true, tax, average="none")
    positive = tax.multi_hot(y_true)
    known = tax.known_mask(y_true)
    want = []
    for n in range(tax.num_nodes):
        keep = known[:, n]
        if n == 0 or not positive[keep, n].any():
            want.append(math.nan)
        else:
            want.append(average_precision_score(positive[keep, n], probs[keep, n]))
    np.testing.assert_allclose(got, want)
    macro = M.node_average_precision(probs, y_true, tax)
    finite = [w for w in want if not math.isnan(w)]
    assert (macro == pytest.approx(np.mean(finite))) if finite else math.isnan(macro)
    for tol in (0.0, 0.15):
        assert M.inconsistency_rate(probs, tax, tol=tol) == pytest.approx(oracle.inconsistency_rate(probs, tax, tol))


# --------------------------------------------------------------- properties
@given(case=labelled())
def test_metrics_lie_in_unit_interval(case) -> None:
    tax, y_true, y_pred = case
    values = [
        *M.hierarchical_precision_recall_fscore(y_true, y_pred, tax),
        *M.hierarchical_precision_recall_fscore(y_true, y_pred, tax, average="macro"),
        M.accuracy(y_true, y_pred, tax),
        M.correct_rate(y_true, y_pred, tax),
        M.lca_precision(y_true, y_pred, tax),
        M.lca_recall(y_true, y_pred, tax),
        M.lca_f1(y_true, y_pred, tax),
    ]
    assert all(0.0 <= v <= 1.0 for v in values), values
    assert M.mistake_severity(y_true, y_pred, tax) >= 0


@given(case=labelled())
def test_perfect_predictions_score_one(case) -> None:
    tax, y_true, _ = case
    y_true = [t for t in y_true if t != 0] or [tax.num_nodes - 1]
    if tax.num_nodes == 1:
        return
    assert M.hierarchical_precision_recall_fscore(y_true, y_true, tax) == (1.0, 1.0, 1.0)
    assert M.hierarchical_precision_recall_fscore(y_true, y_true, tax, average="macro") == (1.0, 1.0, 1.0)
    assert M.accuracy(y_true, y_true, tax) == 1.0 and M.correct_rate(y_true, y_true, tax) == 1.0
    assert M.mistake_severity(y_true, y_true, tax) == 0.0
    report = M.summary(y_true, y_true, tax)
    assert all(v == 1.0 for k, v in report.items() if k != "mistake_severity" and not k.startswith("level"))
    # the LCA metrics: 1 for every truth with c > 0; a node with every leaf below it has c = 0 under "info"
    # (helper-118: a root's only child scored 0 for an exact prediction) and scores zero_division, documented
    for measure in ("info", "depth"):
        for fn in (M.lca_precision, M.lca_recall, M.lca_f1):
            assert fn(y_true, y_true, tax, measure=measure, zero_division=1.0) == pytest.approx(1.0)
    ptr, below, leaf = tax.descendants_ptr, tax.descendants_index, tax.is_leaf_mask  # CSR: itself included
    full = [t for t in y_true if leaf[below[ptr[t] : ptr[t + 1]]].sum() == tax.num_leaves]
    if full:
        assert M.lca_f1(full, full, tax, measure="info") == 0.0 and M.lca_f1(full, full, tax, measure="depth") == 1.0


@given(case=labelled())
def test_precision_and_recall_swap_with_their_arguments(case) -> None:
    tax, y_true, y_pred = case
    for average in ("micro", "macro"):
        assert M.hierarchical_precision(y_true, y_pred, tax, average=average) == pytest.approx(
            M.hierarchical_recall(y_pred, y_true, tax, average=average)
        )


@given(n=st.integers(2, 12), data=st.data())
def test_on_a_flat_taxonomy_hierarchical_f1_is_accuracy(n, data) -> None:
    tax = Taxonomy.from_paths([f"r/c{i}" for i in range(n)])
    size = data.draw(st.integers(1, 30))
    leaves = st.sampled_from(tax.leaf_index.tolist())
    y_true = data.draw(st.lists(leaves, min_size=size, max_size=size))
    y_pred = data.draw(st.lists(leaves, min_size=size, max_size=size))
    acc = M.accuracy(y_true, y_pred, tax)
    assert M.hierarchical_f1(y_true, y_pred, tax) == pytest.approx(acc)
    assert M.hierarchical_f1(y_true, y_pred, tax, average="macro") == pytest.approx(acc)


@given(case=labelled())
def test_summary_equals_the_individual_functions(case) -> None:
    tax, y_true, y_pred = case
    report = M.summary(y_true, y_pred, tax)
    p, r, f = M.hierarchical_precision_recall_fscore(y_true, y_pred, tax)
    assert report["accuracy"] == M.accuracy(y_true, y_pred, tax)
    assert (report["hierarchical_precision"], report["hierarchical_recall"], report["hierarchical_f1"]) == (p, r, f)
    assert report["mistake_severity"] == M.mistake_severity(y_true, y_pred, tax)
    assert report["correct_rate"] == M.correct_rate(y_true, y_pred, tax)
    levels = {int(k.split("/")[1]): v for k, v in report.items() if k.startswith("level_accuracy/")}
    if tax.is_tree:
        assert levels == M.level_accuracy(y_true, y_pred, tax)
    else:
        assert levels == {}


# -------------------------------------------------------------- input forms
def test_names_indices_numpy_and_torch_give_the_same_values(paper_tax: Taxonomy) -> None:
    names_t = ["ALL", "APL", "CLL", "Normal", "Acute"]
    names_p = ["ALL", "AML", "CML", "Reactive", "ALL"]
    idx_t = paper_tax.encode(names_t)
    idx_p = paper_tax.encode(names_p)
    forms = [
        (names_t, names_p),
        (np.array(names_t), np.array(names_p)),
        (idx_t.tolist(), idx_p.tolist()),
        (idx_t, idx_p),
        (torch.as_tensor(idx_t), torch.as_tensor(idx_p)),
        (torch.as_tensor(idx_t, dtype=torch.int32), idx_p.astype(np.uint8)),
    ]
    reports = [M.summary(t, p, paper_tax) for t, p in forms]
    assert all(r == reports[0] for r in reports)
    # hand-checked: |A| sizes t: 3,4,3,1,2; p: 3,3,3,1,3; intersections 3,3,2,0,2
    assert reports[0]["hierarchical_precision"] == pytest.approx(10 / 13)
    assert reports[0]["hierarchical_recall"] == pytest.approx(10 / 13)
    assert reports[0]["accuracy"] == 0.2 and reports[0]["correct_rate"] == 0.4  # AML is APL's parent


def test_matches_hiclass_documented_values() -> None:
    # hiclass.metrics.f1 docstring: y_true [[0,1,2],[3,4,5]], y_pred [[0,1,2],[6,7,8]] -> 0.5 (micro and macro)
    with pytest.warns(UserWarning, match="look like integers"):  # so the labels below are strings
        tax = Taxonomy.from_paths(["r/0/1/2", "r/3/4/5", "r/6/7/8"])
    assert M.hierarchical_f1(["2", "5"], ["2", "8"], tax) == 0.5
    assert M.hierarchical_f1(["2", "5"], ["2", "8"], tax, average="macro") == 0.5


# ------------------------------------------------------------------- errors
def test_probability_metrics_refuse_non_finite_and_keep_float64(paper_tax: Taxonomy) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((6, paper_tax.num_nodes))
    y = [paper_tax.index(n) for n in ("ALL", "AML", "CLL", "Normal", "ALL", "CML")]
    for bad in (np.nan, np.inf):
        broken = probs.copy()
        broken[2, 3] = bad
        with pytest.raises(ValueError, match=r"probs: expected finite marginals, got .* at sample 2, node 3"):
            M.node_average_precision(broken, y, paper_tax)
        with pytest.raises(ValueError, match="probs: expected finite marginals"):
            M.inconsistency_rate(broken, paper_tax)
    # scores that differ only below float32 resolution must not tie when given as a float64 tensor
    close = np.tile(np.linspace(0.5, 0.5 + 5e-9, 6)[:, None], (1, paper_tax.num_nodes))
    got = M.node_average_precision(torch.tensor(close, dtype=torch.float64), y, paper_tax, average="none")
    np.testing.assert_array_equal(got, M.node_average_precision(close, y, paper_tax, average="none"))


def test_errors_name_the_argument(paper_tax: Taxonomy) -> None:
    with pytest.raises(ValueError, match="y_true is empty"):
        M.hierarchical_f1([], [], paper_tax)
    with pytest.raises(ValueError, match="y_pred is empty"):
        M.summary(["ALL"], np.array([], dtype=np.int64), paper_tax)
    with pytest.raises(ValueError, match="y_true and y_pred must have the same length, got 2 and 1"):
        M.accuracy(["ALL", "AML"], ["ALL"], paper_tax)
    with pytest.raises(UnknownNodeError, match="y_pred: Unknown node 'AMLL'"):
        M.hierarchical_precision(["ALL"], ["AMLL"], paper_tax)
    with pytest.raises(UnknownNodeError, match="y_true: 1 node indices out of range"):
        M.hierarchical_recall([99], [1], paper_tax)
    with pytest.raises(ValueError, match=r"y_true: expected a 1-D array of shape \(num_samples,\), got shape \(2, 1\)"):
        M.accuracy([[1], [2]], [1, 2], paper_tax)
    with pytest.raises(ValueError, match=r"got shape \(2, 1\)\. For a column or a row vector, pass y.ravel\(\)"):
        M.accuracy([[1], [2]], [1, 2], paper_tax)
    with pytest.raises(ValueError, match=r"^y_pred: expected one node per sample .*could not read it as an array"):
        M.accuracy([1, 2], [[1, 2], [3]], paper_tax)
    # top-k predictions are described as such (they were told "one node per sample")
    with pytest.raises(ValueError, match=r"^topk_preds: expected k nodes per sample, the same k for every sample"):
        M.distance_at_k(["ALL", "AML"], [["ALL", "AML"], ["ALL"]], paper_tax)
    with pytest.raises(ValueError, match=r"^target: .*pass y.ravel\(\)\.$"):
        M.DistanceAtK(paper_tax).update([["ALL"]], [["ALL"]])
    with pytest.raises(UnknownNodeError, match=r"^y_true\[1\]: got None, a missing label"):
        M.accuracy(["ALL", None], ["ALL", "AML"], paper_tax)
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    with pytest.raises(TaxonomyError, match="needs a tree .* On a DAG, use the set-based hierarchical metrics"):
        M.level_accuracy(["x"], ["x"], dag)
    with pytest.raises(ValueError, match="y_true: expected node names or node indices, got None"):
        M.accuracy(None, [1], paper_tax)
    with pytest.raises(ValueError, match="average: expected one of 'micro', 'macro', got 'samples'"):
        M.hierarchical_f1(["ALL"], ["ALL"], paper_tax, average="samples")
    with pytest.raises(ValueError, match="beta: expected a positive finite number"):
        M.hierarchical_fbeta(["ALL"], ["ALL"], paper_tax, beta=-1)
    # ragged marginals: numpy's "inhomogeneous shape" named neither the argument nor the shape
    with pytest.raises(
        ValueError, match=r"^probs: expected node marginals of shape \(num_samples, \d+\), the same length"
    ):
        M.inconsistency_rate([[1.0] * paper_tax.num_nodes, [1.0]], paper_tax)
    # 0-d tensors are numbers here as in the decoders; a bool tensor is not
    assert M.hierarchical_fbeta(["ALL"], ["AML"], paper_tax, beta=torch.tensor(2.0)) == pytest.approx(
        M.hierarchical_fbeta(["ALL"], ["AML"], paper_tax, beta=2.0)
    )
    assert M.level_accuracy(["ALL"], ["AML"], paper_tax, zero_division=torch.tensor(1.0)) == M.level_accuracy(
        ["ALL"], ["AML"], paper_tax, zero_division=1.0
    )
    with pytest.raises(ValueError, match="beta: expected a positive finite number"):
        M.hierarchical_fbeta(["ALL"], ["ALL"], paper_tax, beta=torch.tensor(True))
    with pytest.raises(ValueError, match="zero_division: expected a number"):
        M.hierarchical_f1(["ALL"], ["ALL"], paper_tax, zero_division="warn")
    with pytest.raises(ValueError, match="distance: expected one of"):
        M.mistake_severity(["ALL"], ["AML"], paper_tax, distance="euclid")
    with pytest.raises(ValueError, match="measure: expected one of"):
        M.lca_precision(["ALL"], ["AML"], paper_tax, measure="entropy")
    with pytest.raises(ValueError, match=r"depth: expected an int in \[1, 4\]"):
        M.level_confusion_matrix(["ALL"], ["AML"], paper_tax, 0)
    with pytest.raises(ValueError, match=r"topk_preds: expected a 2-D array"):
        M.distance_at_k(["ALL"], ["AML"], paper_tax)
    with pytest.raises(ValueError, match=r"topk_preds: expected shape \(2, k\)"):
        M.distance_at_k(["ALL", "CLL"], [["AML"]], paper_tax)
    with pytest.raises(ValueError, match=r"probs: expected node marginals of shape \(num_samples, 11\)"):
        M.node_average_precision(np.ones((2, 3)), ["ALL", "AML"], paper_tax)
    with pytest.raises(ValueError, match="probs is empty"):
        M.inconsistency_rate(np.ones((0, 11)), paper_tax)
    with pytest.raises(ValueError, match="probs and y_true must have the same number of samples"):
        M.node_average_precision(np.ones((2, 11)), ["ALL"], paper_tax)
    with pytest.raises(ValueError, match="average: expected one of 'macro', 'micro', 'weighted'"):
        M.level_precision_recall_f1(["ALL"], ["ALL"], paper_tax, average="samples")
    with pytest.raises(TypeError, match="taxonomy: expected a hiercls.Taxonomy"):
        M.accuracy(["ALL"], ["ALL"], {"root": ["ALL"]})


def test_tree_only_metrics_refuse_dags() -> None:
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    for fn in (M.level_accuracy, M.level_precision_recall_f1):
        with pytest.raises(TaxonomyError, match="needs a tree"):
            fn(["x"], ["a"], dag)
    with pytest.raises(TaxonomyError, match="needs a tree"):
        M.level_confusion_matrix(["x"], ["a"], dag, 1)
    # set-based and LCA-based metrics work on DAGs: x's set is {a, b, x}
    assert M.hierarchical_precision_recall_fscore(["x"], ["a"], dag) == pytest.approx((1.0, 1 / 3, 0.5))


@settings(examples(10))
@given(case=labelled(dags(max_nodes=15)))
def test_dag_summary_has_no_level_keys(case) -> None:
    tax, y_true, y_pred = case
    keys = set(M.summary(y_true, y_pred, tax))
    base = {
        "accuracy",
        "hierarchical_precision",
        "hierarchical_recall",
        "hierarchical_f1",
        "mistake_severity",
        "correct_rate",
    }
    assert base <= keys and (tax.is_tree or keys == base)


def test_dag_height_distance_does_not_depend_on_node_order() -> None:
    """In a DAG, x and y share two deepest common ancestors, a and b, of different heights. Which one the
    height distance used depended on their index order: 1 or 2 for the same shape. Now: the lowest."""
    values = set()
    for deep in ("a", "b"):  # hang a longer branch under one or the other
        edges = [("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("a", "y"), ("b", "y"), (deep, "d1"), ("d1", "d2")]
        tax = Taxonomy.from_edges(edges)
        values.add(M.mistake_severity(["x"], ["y"], tax, distance="height"))
        assert M.lca_distance(["x"], ["y"], tax, distance="height").tolist() == [1]
        assert M.summary(["x"], ["y"], tax, distance="height")["mistake_severity"] == 1.0
    assert values == {1.0}


@pytest.mark.parametrize("block_elements", [1, 7, 64])
def test_node_average_precision_in_column_blocks_equals_one_block(monkeypatch, paper_tax, block_elements) -> None:
    """AP works on blocks of node columns (it needed about 21x the memory of probs at once); any block
    size gives the one-block values, ties and partial labels included."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, paper_tax.num_nodes, 40)
    probs = np.round(rng.random((40, paper_tax.num_nodes)), 1)  # many ties
    want = M.node_average_precision(probs, y, paper_tax, average="none")
    monkeypatch.setattr("hiercls.metrics.functional._AP_BLOCK_ELEMENTS", block_elements)
    got = M.node_average_precision(probs, y, paper_tax, average="none")
    np.testing.assert_allclose(got, want, rtol=1e-12)  # sums over another memory layout: last-digit rounding
    assert M.node_average_precision(probs, y, paper_tax) == pytest.approx(
        float(np.nanmean(want[1:][~np.isnan(want[1:])]))
    )


def test_a_2d_y_true_is_not_told_to_use_distance_at_k(paper_tax: Taxonomy) -> None:
    """The top-k hint went to every argument but 'target': a column of true labels, even inside
    distance_at_k itself, was told to use distance_at_k."""
    column = np.array([["ALL"], ["AML"]])
    for call in (
        lambda: M.distance_at_k(column, np.array([["ALL", "AML"], ["AML", "ALL"]]), paper_tax),
        lambda: M.hierarchical_f1(column, ["ALL", "AML"], paper_tax),
    ):
        with pytest.raises(ValueError, match=r"y_true: .*pass y.ravel\(\)\.$"):
            call()
    with pytest.raises(ValueError, match="y_pred: .*for top-k predictions, use distance_at_k"):
        M.hierarchical_f1(["ALL", "AML"], column, paper_tax)


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf, "0.1", True])
def test_inconsistency_rate_names_a_bad_tol(bad) -> None:
    """tol=nan called an inconsistent row consistent (0.0), tol=-1 a consistent one inconsistent, and a
    string failed inside numpy without naming the argument (a review)."""
    from hiercls import Taxonomy
    from hiercls.metrics.functional import inconsistency_rate

    tax = Taxonomy.from_paths(["r/a", "r/b"])
    with pytest.raises(ValueError, match="tol: expected a finite number >= 0"):
        inconsistency_rate([[1.0, 0.7, 0.3]], tax, tol=bad)
    assert inconsistency_rate([[1.0, 0.7, 0.3], [0.5, 0.9, 0.1]], tax, tol=0) == 0.5


def test_inconsistency_rate_refuses_logits_as_the_decoders_do() -> None:
    """Logits (values outside [0, 1]) were compared as if they were marginals and gave a rate silently.
    They are refused with the decoders' message; rounding up to the dtype's slack passes, and
    validate_args=False skips the check."""
    tax = Taxonomy.from_paths(["r/a", "r/b"])
    logits = [[0.0, 2.5, -3.0], [0.0, -1.0, -0.4]]
    for probs in (logits, np.array(logits), torch.tensor(logits)):
        with pytest.raises(
            ValueError,
            match=r"probs: expected node marginals in \[0, 1\] \(up to 0\.001 for rounding\), got values from -3 to "
            r"2\.5\. These look like logits or log-probabilities: pass head\.marginals\(logits\)",
        ):
            M.inconsistency_rate(probs, tax)
    assert M.inconsistency_rate(logits, tax, validate_args=False) == 0.5
    # a sum of leaf probabilities that rounds above 1: 1e-3 for float32/64, four eps for float16
    assert M.inconsistency_rate([[1.0, 1.0005, 0.0]], tax) == 1.0
    assert M.inconsistency_rate(torch.tensor([[1.0, 1.003, 0.0]], dtype=torch.float16), tax) == 1.0
    with pytest.raises(ValueError, match=r"up to 0\.001 for rounding\), got values from 0 to 1\.003"):
        M.inconsistency_rate(torch.tensor([[1.0, 1.003, 0.0]]), tax)
    with pytest.raises(TypeError, match="validate_args: expected True or False, got 'no'"):
        M.inconsistency_rate(logits, tax, validate_args="no")


@settings(examples(40))
@given(tax=dags(max_nodes=20), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_dag_pair_statistics_in_chunks_of_samples_are_the_same(tax: Taxonomy, seed: int, n: int) -> None:
    """On a DAG the metrics gather both ancestor sets per sample and sort the keys: in chunks of samples now
    (1M pairs on an iNat21-sized DAG took 2.7 GB at once). Chunks of 3 give the same numbers."""
    from hiercls.metrics import functional as F

    rng = np.random.default_rng(seed)
    t, p = rng.integers(0, tax.num_nodes, n), rng.integers(0, tax.num_nodes, n)
    score = rng.random(tax.num_nodes)
    whole, recall = F._pair_stats(tax, t, p, score), F._node_recall_counts(tax, t, p)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(F, "_dag_chunk_rows", lambda taxonomy: 3)
        parts, recall_parts = F._pair_stats(tax, t, p, score), F._node_recall_counts(tax, t, p)
        f1 = M.hierarchical_f1(t, p, tax)
    assert all(np.array_equal(a, b) for a, b in zip(whole, parts))
    assert all(np.array_equal(a, b) for a, b in zip(recall, recall_parts))
    assert f1 == pytest.approx(oracle.hierarchical_prf(t.tolist(), p.tolist(), tax)[2])


def test_level_metrics_build_no_dense_ancestor_table_on_a_deep_thin_tree() -> None:
    """helper-118: the level metrics read the dense (num_nodes, max_depth + 1) ancestor table, half of
    num_nodes**2 on a deep, thin tree (122 MiB for a 1x1 result at depth 2000), and
    level_precision_recall_f1 built levels() once per depth (5.6 s at depth 2000, 0.2 s now)."""
    import tracemalloc

    depth = 600
    edges = [(f"s{i}", f"s{i + 1}") for i in range(depth)] + [(f"s{i}", f"l{i}") for i in range(1, depth + 1)]
    tax = Taxonomy.from_edges(edges)  # a spine with one leaf off each node: 1,201 nodes, depth 600
    rng = np.random.default_rng(0)
    t, p = rng.choice(tax.leaf_index, 64), rng.choice(tax.leaf_index, 64)
    tracemalloc.start()
    try:
        matrix = M.level_confusion_matrix(t, p, tax, 1)
        scores = M.level_precision_recall_f1(t, p, tax, average="micro")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert tax._anc_table is None  # never built
    assert peak < 2**20, peak  # the table alone: 1,201 x 601 x 8 bytes = 5.5 MiB
    table = tax.ancestor_table  # the slow reference: the dense table, cut at each depth
    assert matrix.tolist() == [[64]]
    for d in (1, 2, 300, depth):
        truth, pred = table[t, d], table[p, d]
        keep = truth >= 0
        hits = int((truth[keep] == pred[keep]).sum())
        assert scores[d][1] == pytest.approx(hits / keep.sum() if keep.any() else 0.0), d


def test_lca_metrics_score_a_node_above_every_leaf_as_zero_division_as_documented() -> None:
    """helper-118: the docs said only 'a prediction at the root (c = 0)'; a root's only child has c = 0
    under measure='info' too, and an exact prediction of it scored 0."""
    tax = Taxonomy.from_paths(["cell/blood/ALL", "cell/blood/AML"])
    for fn in (M.lca_precision, M.lca_recall, M.lca_f1):
        assert fn(["blood"], ["blood"], tax) == 0.0
        assert fn(["blood"], ["blood"], tax, zero_division=1.0) == 1.0
        assert fn(["blood"], ["blood"], tax, measure="depth") == 1.0
    assert M.lca_precision(["ALL"], ["blood"], tax) == 0.0 and M.lca_recall(["blood"], ["ALL"], tax) == 0.0
    assert M.lca_f1(["ALL"], ["ALL"], tax) == 1.0


def test_label_and_marginal_errors_give_the_fix_that_fits_the_input() -> None:
    """helper-118: whole-number float labels were told they look like probabilities; a (1, B) row was
    called a column vector; a lone name got 'shape ()' alone; bool marginals were refused from numpy but
    scored from torch; abstain_column='no' added the column; scikit-learn's argument order got only a
    shape error."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    with pytest.raises(UnknownNodeError, match=r"whole numbers: cast them to integer node indices \(y.long\(\)"):
        M.accuracy(torch.tensor([3.0, 4.0]), [3, 4], tax)
    with pytest.raises(UnknownNodeError, match=r"whole numbers.*and drop the missing labels \(NaN\) first"):
        M.accuracy(np.array([3.0, np.nan]), [3, 4], tax)
    with pytest.raises(UnknownNodeError, match="look like probabilities"):
        M.accuracy(np.array([0.3, 0.7]), [3, 4], tax)
    with pytest.raises(ValueError, match=r"got shape \(1, 2\)\. For a column or a row vector, pass y.ravel\(\)"):
        M.accuracy(np.array([[3, 4]]), [3, 4], tax)
    with pytest.raises(ValueError, match=r"got shape \(\)\. For one sample, wrap it in a list"):
        M.accuracy("a1", "a1", tax)
    scores = np.array([[1, 1, 0, 1, 0], [1, 0, 1, 0, 0]], dtype=bool)  # nodes r, a, b, a1, a2
    assert M.node_average_precision(scores, ["a", "b"], tax) == M.node_average_precision(
        torch.from_numpy(scores), ["a", "b"], tax
    )
    assert M.inconsistency_rate(scores, tax) == 0.0
    with pytest.raises(ValueError, match=r"arguments look swapped.*\(probs, y_true, taxonomy\)"):
        M.node_average_precision(["a1", "b"], np.full((2, 5), 0.5), tax)
    with pytest.raises(ValueError, match=r"For one sample, add the batch dimension: probs\[None\]"):
        M.node_average_precision(np.full(5, 0.5), ["a1"], tax)
    with pytest.raises(TypeError, match="abstain_column: expected True or False, got 'no'"):
        M.level_confusion_matrix([3], [3], tax, 1, abstain_column="no")
    assert M.level_confusion_matrix([3], [3], tax, 1, abstain_column=np.bool_(True)).shape == (2, 3)


def test_node_recall_on_a_deep_thin_tree_takes_subtree_sums_not_every_path() -> None:
    """helper-121: node_recall gathered every sample's whole path, O(B x depth): 3.15 GB and 3.3 s for
    100,000 samples on a depth-2,000 tree. Two subtree sums of per-node counts give the same values."""
    import tracemalloc

    depth = 600
    edges = [(f"s{i}", f"s{i + 1}") for i in range(depth)] + [(f"s{i}", f"l{i}") for i in range(1, depth + 1)]
    tax = Taxonomy.from_edges(edges)
    rng = np.random.default_rng(1)
    t, p = rng.choice(tax.leaf_index, 3000), rng.choice(tax.leaf_index, 3000)
    tracemalloc.start()
    try:
        got = M.node_recall(t, p, tax)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak  # the paths alone: 3,000 samples x ~300 ancestors x 8 bytes = 7 MiB
    small = slice(0, 40)  # the slow oracle on a part
    np.testing.assert_allclose(
        M.node_recall(t[small], p[small], tax), oracle.node_recall(t[small].tolist(), p[small].tolist(), tax)
    )
    table = tax.ancestor_table  # all of it against the dense paths
    on_true = np.zeros(tax.num_nodes)
    on_both = np.zeros(tax.num_nodes)
    for row_t, row_p in zip(table[t], table[p]):
        path = row_t[row_t >= 0]
        on_true[path] += 1
        on_both[path[np.isin(path, row_p)]] += 1
    want = np.divide(on_both, on_true, out=np.full(tax.num_nodes, np.nan), where=on_true > 0)
    np.testing.assert_allclose(got, want)


def test_inconsistency_rate_works_in_row_blocks(monkeypatch) -> None:
    """helper-121: two gathered (B, num_edges) float64 arrays of the whole batch took about 8x the input
    (2.5 GB for 5,000 iNat-sized rows); blocks of rows hold it near the float64 copy, the same count."""
    import tracemalloc

    from hiercls.metrics import functional as F
    from hiercls.synthetic import layered_taxonomy

    tax = layered_taxonomy((3, 13, 51, 273), seed=0)
    rng = np.random.default_rng(0)
    probs = rng.random((1500, tax.num_nodes)).astype(np.float32)
    probs[::3] = 1.0  # every third row consistent
    edges = tax.edges_index()
    want = float(np.mean((probs[:, edges[:, 1]] > probs[:, edges[:, 0]].astype(np.float64) + 1e-6).any(axis=1)))
    monkeypatch.setattr(F, "_BLOCK_ENTRIES", 4096, raising=False)  # 12 rows a block here
    tracemalloc.start()
    try:
        got = M.inconsistency_rate(probs, tax, validate_args=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == want == pytest.approx(2 / 3)
    assert peak < 3 * probs.nbytes, peak / probs.nbytes  # the float64 copy is 2x
    metric = M.InconsistencyRate(tax, validate_args=False)
    metric.update(probs)
    assert float(metric.compute()) == pytest.approx(want)
