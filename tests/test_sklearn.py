"""The scikit-learn front: labels, the per-parent-node estimator, the head estimator, scorers.

Slow, obviously-correct oracles (a Python loop over parents and samples for the
local classifiers, set arithmetic for the hierarchical F1) check the vectorised
code; scikit-learn's own estimator checks live in test_sklearn_checks.py.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from joblib import parallel_backend
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

import hiercls.metrics
from hiercls import Taxonomy, TaxonomyError, UnknownNodeError
from hiercls.decoding import decode
from hiercls.sklearn import (
    HierarchicalHeadClassifier,
    LocalClassifierPerLevel,
    LocalClassifierPerNode,
    LocalClassifierPerParentNode,
    hierarchical_f1_scorer,
    hierarchical_precision_scorer,
    hierarchical_recall_scorer,
    make_hierarchical_scorer,
    neg_mistake_severity_scorer,
)
from tests.budget import examples
from tests.conftest import require
from tests.strategies import trees


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: more BLAS/torch threads only fight the other test worker for the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


PATHS = ["animal/cat", "animal/dog", "plant/tree", "plant/grass", "fungus"]


def blobs(labels: list, n_per: int = 12, dim: int = 4, seed: int = 0, spread: float = 0.6):
    """Well-separated Gaussian blobs, one per distinct label, in label order."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(len(labels), dim))
    X = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres])
    y = np.repeat(np.asarray(labels, dtype=object), n_per)
    perm = rng.permutation(len(X))
    return X[perm], y[perm]


def as_str(y: np.ndarray) -> np.ndarray:
    return np.asarray(y.tolist(), dtype=str)


# ------------------------------------------------------------- slow oracles
def oracle_lcpn_proba(X: np.ndarray, target: np.ndarray, tax: Taxonomy, X_test: np.ndarray) -> np.ndarray:
    """Per-parent classifiers by explicit loops over parents and samples; marginals by walking each path."""
    cond = np.zeros((len(X_test), tax.num_nodes))
    cond[:, 0] = 1.0
    for p in range(tax.num_nodes):
        kids = [tax.index(c) for c in tax.children(p)]
        if not kids:
            continue
        rows, child = [], []
        for i, label in enumerate(target.tolist()):
            path = [tax.index(n) for n in tax.path(label)]
            if p in path[:-1]:  # p strictly above the label
                rows.append(i)
                child.append(path[path.index(p) + 1])
        seen = sorted(set(child))
        if not seen:
            cond[:, kids] = 1.0 / len(kids)
        elif len(seen) == 1:
            cond[:, seen[0]] = 1.0
        else:
            est = LogisticRegression().fit(X[rows], child)
            cond[:, est.classes_] = est.predict_proba(X_test)
    return _oracle_path_product(cond, tax)


def oracle_hf1(t: list[int], p: list[int], tax: Taxonomy) -> float:
    """Micro hierarchical F1 (Kiritchenko et al. 2006), root excluded, by set arithmetic."""
    inter = n_true = n_pred = 0
    for a, b in zip(t, p):
        sa = set(tax.ancestors(a, include_self=True)) - {tax.root}
        sb = set(tax.ancestors(b, include_self=True)) - {tax.root}
        inter += len(sa & sb)
        n_true += len(sa)
        n_pred += len(sb)
    prec = inter / n_pred if n_pred else 0.0
    rec = inter / n_true if n_true else 0.0
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


# -------------------------------------------------------------- label formats
def test_flat_numeric_labels_infer_root_and_round_trip():
    X, y = blobs([0, 1, 2])
    y = y.astype(np.int64)
    clf = LocalClassifierPerParentNode().fit(X, y)
    assert clf.taxonomy_.nodes == ("root", "0", "1", "2")
    assert clf.nodes_.tolist() == ["root", "0", "1", "2"]
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    pred = clf.predict(X)
    assert pred.dtype == y.dtype
    assert (pred == y).mean() > 0.95


def test_flat_string_labels_avoid_root_name_clash():
    X, y = blobs(["root", "leaf"])
    clf = LocalClassifierPerParentNode().fit(X, y)
    assert clf.taxonomy_.root == "root_"
    assert sorted(clf.taxonomy_.leaves) == ["leaf", "root"]
    np.testing.assert_array_equal(clf.classes_, ["leaf", "root"])


def test_paths_without_common_first_node_get_a_virtual_root_left_out_of_predictions():
    X, y = blobs(PATHS)
    clf = LocalClassifierPerParentNode().fit(X, y)
    tax = clf.taxonomy_
    assert tax.root == "root" and set(tax.children("root")) == {"animal", "plant", "fungus"}
    pred = clf.predict(X)
    assert set(pred.tolist()) <= set(PATHS)
    assert (pred == as_str(y)).mean() > 0.95
    np.testing.assert_array_equal(clf.classes_, sorted(PATHS))


def test_paths_with_common_first_node_use_it_as_root():
    X, y = blobs(["life/" + p for p in PATHS])
    clf = LocalClassifierPerParentNode().fit(X, y)
    assert clf.taxonomy_.root == "life"
    assert clf.predict(X[:5]).tolist()[0].startswith("life/")


def test_tuple_paths_and_hiclass_2d_arrays_equal_string_paths():
    X, y = blobs(PATHS)
    as_tuples = [tuple(p.split("/")) for p in y]
    padded = np.array([list(t) + [""] * (2 - len(t)) for t in as_tuples])
    ref = LocalClassifierPerParentNode().fit(X, y).predict_marginals(X)
    for labels in (as_tuples, padded):
        clf = LocalClassifierPerParentNode().fit(X, labels)
        np.testing.assert_allclose(clf.predict_marginals(X), ref)
        assert clf.predict(X[:3]).tolist() == LocalClassifierPerParentNode().fit(X, y).predict(X[:3]).tolist()


def test_a_name_under_several_parents_is_one_node_per_parent():
    """HiClass data often repeats a name ('other', 'NOS') under several parents. Each becomes its own node,
    named by its path; everything the user sees (predict, classes_, score) speaks the user's paths."""
    paths = ["animal/other", "plant/other", "animal/cat", "plant/tree/other", "plant/tree/oak", "other"]
    X, y = blobs(paths)
    clf = LocalClassifierPerParentNode().fit(X, y)
    tax = clf.taxonomy_
    # nodes that are unambiguous keep their names; the 'other's under a parent are named by their paths
    assert sorted(n for n in tax.nodes if "other" in n) == ["animal/other", "other", "plant/other", "plant/tree/other"]
    assert {"cat", "tree", "oak"} <= set(tax.nodes)
    assert tax.parent("plant/tree/other") == "tree" and tax.parent("other") == tax.root
    np.testing.assert_array_equal(clf.classes_, sorted(paths))
    assert (clf.predict(X) == y).mean() > 0.95
    assert clf.score(X, y) > 0.95
    # the same data as HiClass' 2-D array and as tuples gives the same model
    rows = np.array([p.split("/") + [""] * (3 - len(p.split("/"))) for p in y])
    np.testing.assert_allclose(
        LocalClassifierPerParentNode().fit(X, rows).predict_marginals(X), clf.predict_marginals(X)
    )
    # labels are read as paths: "other" is the top-level one; a path's tail alone matches nothing
    assert clf._encode_labels(["other", "root/animal/other", ("plant", "other")]).tolist() == [
        tax.index("other"),
        tax.index("animal/other"),
        tax.index("plant/other"),
    ]
    with pytest.raises(ValueError, match=r"'tree/other' does not match the taxonomy, where 'other' has the paths "):
        clf._encode_labels(["tree/other"])
    without_top = LocalClassifierPerParentNode().fit(X[y != "other"], y[y != "other"])
    with pytest.raises(UnknownNodeError, match=r"'other' is under several parents here .*give its label path"):
        without_top.score(X[:1], ["other"])


def test_ambiguity_can_cascade_down_a_path():
    """Qualifying 'x' under 'a' and 'b' makes its children ambiguous in turn: a/x/p and b/x/p are two nodes."""
    X, y = blobs(["a/x/p", "b/x/p", "a/x/q", "b/x/q", "a/a"])
    clf = LocalClassifierPerParentNode().fit(X, y)
    assert set(clf.taxonomy_.nodes) == {"root", "a", "b", "a/x", "b/x", "a/x/p", "a/x/q", "b/x/p", "b/x/q", "a/a"}
    assert (clf.predict(X) == y).mean() > 0.95
    head = HierarchicalHeadClassifier(max_iter=200, lr=0.05, batch_size=None, random_state=0).fit(X, y)
    assert set(head.predict(X).tolist()) <= set(y.tolist())


def test_given_taxonomy_accepts_node_names_and_paths_with_or_without_root(paper_tax):
    leaves = ["Normal", "Reactive", "ALL", "APL", "CLL", "CML"]
    X, y = blobs(leaves)
    by_name = LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X, y)
    assert by_name.taxonomy_ is paper_tax
    full = np.array(["/".join(paper_tax.path(n)) for n in y])
    short = np.array(["/".join(paper_tax.path(n)[1:]) for n in y])
    for labels in (full, short):
        clf = LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X, labels)
        np.testing.assert_allclose(clf.predict_marginals(X), by_name.predict_marginals(X))
        assert set(clf.predict(X).tolist()) <= set(labels.tolist())


def test_column_vector_y_warns_like_scikit_learn():
    X, y = blobs(["a", "b"])
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        LocalClassifierPerParentNode().fit(X, y[:, None])


def test_label_errors_name_the_argument(paper_tax):
    X, y = blobs(["a", "b"])
    with pytest.raises(ValueError, match="requires y to be passed"):
        LocalClassifierPerParentNode().fit(X, None)
    with pytest.raises(ValueError, match="Unknown label type"):
        LocalClassifierPerParentNode().fit(X, np.linspace(0, 1, len(X)))
    with pytest.raises(ValueError, match="numeric class labels are accepted with taxonomy=None"):
        LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X, np.arange(len(X)) % 2)
    with pytest.raises(UnknownNodeError, match="Unknown node 'a'"):
        LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X, y)
    with pytest.raises(ValueError, match="does not match the taxonomy"):
        LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X, np.array(["Leukemia/Chronic/ALL"] * len(X)))
    with pytest.raises(ValueError, match="found 24 samples in X but 23 labels"):
        LocalClassifierPerParentNode().fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"2-D y of bools .* a multilabel indicator matrix"):
        LocalClassifierPerParentNode().fit(X, np.zeros((len(X), 2), dtype=bool))
    with pytest.raises(ValueError, match=r"integer codes .* y\[0, 0\] = 0.5 is not a whole number.*as strings"):
        LocalClassifierPerParentNode().fit(X, np.full((len(X), 2), 0.5))
    with pytest.raises(ValueError, match="padding '' only at the end"):
        LocalClassifierPerParentNode().fit(X, np.array([["", "a"]] * len(X)))
    with pytest.raises(TypeError, match="taxonomy: expected a hiercls.Taxonomy"):
        LocalClassifierPerParentNode(taxonomy={"root": ["a"]}).fit(X, y)
    with pytest.raises(ValueError, match="byte-string labels .such as b'cat'.*astype.str."):
        LocalClassifierPerParentNode().fit(X[:4], np.array([b"cat", b"dog"] * 2))
    with pytest.raises(ValueError, match=r"y\[0\]: node 'TCP/IP' of the label path .* contains '/'.*'TCP-IP'"):
        LocalClassifierPerParentNode().fit(X[:4], [("TCP/IP", "v4"), ("UDP", "x")] * 2)
    with pytest.raises(ValueError, match=r"y\[1\]: node 'x/1'.*np.char.replace"):
        LocalClassifierPerParentNode().fit(X[:4], np.array([["a", "y"], ["a", "x/1"]] * 2))


def test_more_label_errors(paper_tax):
    X, _y = blobs(["a", "b"])
    n = len(X)
    with pytest.raises(ValueError, match="got 0 labels"):
        LocalClassifierPerParentNode().fit(X, [])
    with pytest.raises(ValueError, match=r"y\[1\]: expected a label path \(tuple of names\) or a string, got 3"):
        LocalClassifierPerParentNode().fit(X[:2], [("a", "b"), 3])
    with pytest.raises(ValueError, match="expected a 1-D array of labels"):
        LocalClassifierPerParentNode().fit(X, np.zeros((n, 2, 2)))
    with pytest.raises(ValueError, match=r"y\[0\]: empty label path"):
        LocalClassifierPerParentNode().fit(X[:2], [(), ("a",)])
    with pytest.raises(ValueError, match="must hold node names .strings. padded with '', got 7"):
        LocalClassifierPerParentNode().fit(X[:2], np.array([["a", None], ["b", 7]], dtype=object))
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")])
    with pytest.raises(TaxonomyError, match="label paths need a tree taxonomy"):
        LocalClassifierPerParentNode(taxonomy=dag).fit(X[:2], ["r/a/c", "b"])
    clf = LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X[:4], ["ALL", "CLL", "Normal", "APL"])
    with pytest.raises(ValueError, match="expected node names or label paths as strings, got dtype int64"):
        clf.score(X[:2], np.array([1, 2]))
    # the argument and the row of y, not an index into the distinct labels or a bare TypeError
    with pytest.raises(ValueError, match=r"y: mixes strings and other values \(e\.g\. y\[1\] = 1, int\)"):
        LocalClassifierPerParentNode().fit(X[:3], np.array(["a", 1, "b"], dtype=object))
    with pytest.raises(ValueError, match=r"y\[2\]: the label path 'a//y' has an empty node name.*'a/y'"):
        LocalClassifierPerParentNode().fit(X[:3], ["b", "a/x", "a//y"])
    with pytest.raises(UnknownNodeError, match=r"^y_true: Unknown node 'fungus'"):
        clf.score(X[:2], ["ALL", "fungus"])
    with pytest.raises(UnknownNodeError, match=r"^y_true: Unknown node 'fungus'"):
        clf.score(X[:2], ["ALL", "Acute/fungus"])


def test_hiclass_2d_labels_with_none_padding_equal_string_paths():
    X, y = blobs(PATHS, n_per=4)
    rows = np.array([p.split("/") + [None] * (2 - len(p.split("/"))) for p in y], dtype=object)
    a = LocalClassifierPerParentNode().fit(X, rows)
    b = LocalClassifierPerParentNode().fit(X, y)
    assert a.taxonomy_ == b.taxonomy_
    np.testing.assert_array_equal(a.classes_, b.classes_)
    np.testing.assert_allclose(a.predict_marginals(X), b.predict_marginals(X))


def test_pandas_na_padding_is_padding():
    """``DataFrame.convert_dtypes()`` or ``read_csv(dtype="string")`` pads with ``pd.NA``, whose truth value
    raises: it used to crash inside numpy with "boolean value of NA is ambiguous", naming nothing."""

    class NAType:  # pandas' missing-value type, as far as the labels care: recognised by its type name
        def __bool__(self) -> bool:
            raise TypeError("boolean value of NA is ambiguous")

        def __eq__(self, other: object) -> NAType:  # type: ignore[override]
            return self

        __hash__ = object.__hash__

    na = NAType()
    X, y = blobs(["a/x", "a/y", "b"])
    rows = np.empty((len(y), 2), dtype=object)
    for k, label in enumerate(y):
        parts = label.split("/")
        rows[k] = parts + [na] * (2 - len(parts))
    ref = LocalClassifierPerParentNode().fit(X, y)
    clf = LocalClassifierPerParentNode().fit(X, rows)
    np.testing.assert_array_equal(clf.predict(X), ref.predict(X))
    assert clf.score(X, rows) == ref.score(X, y)


def test_pandas_string_frames_with_missing_cells():
    pd = require("pandas")
    X, y = blobs(["a/x", "a/y", "b"])
    ref = LocalClassifierPerParentNode().fit(X, y)
    rows = [label.split("/") + [None] * (2 - len(label.split("/"))) for label in y]
    frame = pd.DataFrame(rows, columns=["l1", "l2"]).convert_dtypes()
    assert frame["l2"].isna().sum() > 0
    np.testing.assert_array_equal(LocalClassifierPerParentNode().fit(X, frame).predict(X), ref.predict(X))


def test_numeric_labels_with_an_inner_node_decoder_raise():
    X, y = blobs([0, 1])
    with pytest.raises(ValueError, match="decoder='threshold' may predict the root"):
        LocalClassifierPerParentNode(decoder="threshold").fit(X, y.astype(int))
    with pytest.raises(ValueError, match="decoder: expected one of"):
        LocalClassifierPerParentNode(decoder="argmax").fit(X, y.astype(int))
    with pytest.raises(ValueError, match="decoder_options: expected a dict"):
        LocalClassifierPerParentNode(decoder_options=0.5).fit(X, y.astype(int))
    # a misspelt option is refused at fit, not at the first predict
    with pytest.raises(ValueError, match="decoder_options: expected options of hiercls.decoding.decode.*got 'costs'"):
        LocalClassifierPerParentNode(decoder="crm", decoder_options={"costs": "path"}).fit(X, y.astype(int))
    clf = LocalClassifierPerParentNode().fit(X, y.astype(int)).set_params(decoder="hf_optimal")
    with pytest.raises(ValueError, match="decoder='hf_optimal' may predict the root"):  # changed after fit
        clf.predict(X)


def test_unknown_labels_at_score_time_raise():
    X, y = blobs([0, 1])
    clf = LocalClassifierPerParentNode().fit(X, y.astype(int))
    with pytest.raises(UnknownNodeError, match="not seen at fit"):
        clf._encode_labels(np.full(len(X), 7))
    assert clf.score(X, np.full(len(X), 7)) == 0.0  # an unseen flat class is a miss (as in accuracy)
    with pytest.raises(ValueError, match="fitted on numeric class labels"):
        clf.score(X, np.array(["0"] * len(X)))
    with pytest.raises(ValueError, match="sample_weight"):
        clf.score(X, y.astype(int), sample_weight=np.ones(len(X)))


def oracle_per_level_proba(X: np.ndarray, target: np.ndarray, tax: Taxonomy, X_test: np.ndarray) -> np.ndarray:
    """Per-depth classifiers by loops over depths and samples; sibling renormalisation and paths by loops."""
    q = np.zeros((len(X_test), tax.num_nodes))
    q[:, 0] = 1.0
    seen: set[int] = set()
    fitted_depths = set()
    for d in range(1, tax.max_depth + 1):
        rows, node = [], []
        for i, label in enumerate(target.tolist()):
            path = [tax.index(n) for n in tax.path(label)]
            if len(path) > d:
                rows.append(i)
                node.append(path[d])
        seen |= set(node)
        if len(set(node)) >= 2:
            est = LogisticRegression().fit(X[rows], node)
            q[:, est.classes_] = est.predict_proba(X_test)
            fitted_depths.add(d)
    return _oracle_chain(q, tax, seen, fixed=lambda v: tax.depth(v) not in fitted_depths)


def _oracle_fallback(tax: Taxonomy, v: int, seen: set[int]) -> float:
    """A node's conditional when its sibling group gets no score: uniform over the siblings seen at fit."""
    siblings = [tax.index(c) for c in tax.children(tax.parent_index[v])]
    seen_sib = [s for s in siblings if s in seen]
    return (1.0 / len(seen_sib) if v in seen else 0.0) if seen_sib else 1.0 / len(siblings)


def _oracle_chain(q: np.ndarray, tax: Taxonomy, seen: set[int], fixed=lambda v: False) -> np.ndarray:
    """Scores -> conditionals by renormalising within each sibling group (loops), then products down paths."""
    cond = np.zeros_like(q)
    cond[:, 0] = 1.0
    for v in range(1, tax.num_nodes):
        siblings = [tax.index(c) for c in tax.children(tax.parent_index[v])]
        fallback = _oracle_fallback(tax, v, seen)
        for i in range(len(q)):
            total = sum(q[i, s] for s in siblings)
            cond[i, v] = fallback if fixed(v) or total <= 0 else q[i, v] / total
    return _oracle_path_product(cond, tax)


def _oracle_path_product(cond: np.ndarray, tax: Taxonomy) -> np.ndarray:
    marg = np.ones_like(cond)
    for j in range(tax.num_nodes):
        for n in tax.path(j)[1:]:
            marg[:, j] *= cond[:, tax.index(n)]
    return marg


def test_per_level_on_a_one_level_tree_is_the_per_parent_model():
    """With one level, one classifier per depth and one per parent are the same classifier."""
    X, y = blobs(["a", "b", "c"])
    np.testing.assert_allclose(
        LocalClassifierPerLevel().fit(X, y).predict_marginals(X),
        LocalClassifierPerParentNode().fit(X, y).predict_marginals(X),
    )


def test_per_level_partial_labels_train_only_the_depths_above_them(paper_tax):
    y = np.array(["ALL", "AML", "APL", "CLL", "CML", "Leukemia", "Acute", "Normal", "Reactive"] * 6)
    X, _ = blobs(list(range(len(y))), n_per=1, seed=3)
    clf = LocalClassifierPerLevel(taxonomy=paper_tax).fit(X, y)
    depth = {n: paper_tax.depth(n) for n in ("ALL", "AML", "APL", "CLL", "CML", "Leukemia", "Acute")}
    assert clf.n_samples_per_level_ == [54] + [
        6 * sum(1 for v in y[:9] if depth.get(v, 1) >= d) for d in range(1, paper_tax.max_depth + 1)
    ]
    assert clf.estimators_[0] is None
    assert set(clf.estimators_[2].classes_.tolist()) == {paper_tax.index("Acute"), paper_tax.index("Chronic")}
    assert clf.estimators_[4] is None  # only APL reaches depth 4: its conditional is 1
    probs = clf.predict_marginals(X)
    np.testing.assert_allclose(probs[:, paper_tax.index("APL")], probs[:, paper_tax.index("AML")])
    inner = paper_tax.index("Leukemia")
    kids = [paper_tax.index(c) for c in paper_tax.children("Leukemia")]
    np.testing.assert_allclose(probs[:, kids].sum(axis=1), probs[:, inner])
    with pytest.raises(TaxonomyError, match="LocalClassifierPerLevel needs a tree"):
        LocalClassifierPerLevel(taxonomy=Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])).fit(
            X[:2], ["x", "a"]
        )


def oracle_per_node_proba(X: np.ndarray, target: np.ndarray, tax: Taxonomy, X_test: np.ndarray) -> np.ndarray:
    """One binary classifier per node, samples through its parent, by loops; renormalised and chained by loops."""
    q = np.zeros((len(X_test), tax.num_nodes))
    paths = [[tax.index(n) for n in tax.path(label)] for label in target.tolist()]
    seen = {v for path in paths for v in path[1:]}
    for v in range(1, tax.num_nodes):
        p = tax.parent_index[v]
        rows = [i for i, path in enumerate(paths) if p in path[:-1]]
        labels = [int(paths[i][paths[i].index(p) + 1] == v) for i in rows]
        if 0 < sum(labels) < len(labels):
            est = LogisticRegression().fit(X[rows], labels)
            q[:, v] = est.predict_proba(X_test)[:, 1]
        else:
            q[:, v] = _oracle_fallback(tax, v, seen)
    return _oracle_chain(q, tax, seen)


@pytest.mark.parametrize(
    ("cls", "oracle"),
    [
        (LocalClassifierPerLevel, oracle_per_level_proba),
        (LocalClassifierPerNode, oracle_per_node_proba),
    ],
    ids=["per_level", "per_node"],
)
@settings(examples(15), deadline=None)
@given(tax=trees(min_nodes=2, max_nodes=12), data=st.data())
def test_local_marginals_equal_a_loop_over_samples(cls, oracle, tax, data):
    n = data.draw(st.integers(6, 30))
    target = np.array(data.draw(st.lists(st.integers(0, tax.num_nodes - 1), min_size=n, max_size=n)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    X = rng.normal(size=(n, 3)) + 0.5 * target[:, None]
    X_test = rng.normal(size=(7, 3))
    clf = cls(taxonomy=tax).fit(X, np.array(tax.names(target)))
    probs = clf.predict_marginals(X_test)
    np.testing.assert_allclose(probs, oracle(X, target, tax, X_test), rtol=1e-9, atol=1e-12)
    assert np.all(probs[:, 0] == 1.0) and np.all((probs >= 0) & (probs <= 1 + 1e-12))


def test_per_node_partial_labels_say_nothing_below_them(paper_tax):
    y = np.array(["ALL", "AML", "APL", "CLL", "CML", "Leukemia", "Acute", "Normal", "Reactive"] * 6)
    X, _ = blobs(list(range(len(y))), n_per=1, seed=3)
    clf = LocalClassifierPerNode(taxonomy=paper_tax).fit(X, y)
    # ALL's classifier: the samples through Acute to a child (ALL, AML, APL), not the one labelled "Acute"
    assert clf.n_samples_per_node_["ALL"] == 18 and clf.n_samples_per_node_["Acute"] == 36  # "Acute" labels count here
    assert clf.estimators_["APL"] is None  # APL is AML's only child seen: q = 1
    probs = clf.predict_marginals(X)
    np.testing.assert_allclose(probs[:, paper_tax.index("APL")], probs[:, paper_tax.index("AML")])
    kids = [paper_tax.index(c) for c in paper_tax.children("Leukemia")]
    np.testing.assert_allclose(probs[:, kids].sum(axis=1), probs[:, paper_tax.index("Leukemia")])


# -------------------------------------------------- local classifier per parent
@settings(examples(15), deadline=None)
@given(tax=trees(min_nodes=2, max_nodes=12), data=st.data())
def test_lcpn_marginals_equal_a_loop_over_parents_and_samples(tax, data):
    n = data.draw(st.integers(6, 30))
    target = np.array(data.draw(st.lists(st.integers(0, tax.num_nodes - 1), min_size=n, max_size=n)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    X = rng.normal(size=(n, 3)) + 0.5 * target[:, None]
    X_test = rng.normal(size=(7, 3))
    y = np.array(tax.names(target))
    clf = LocalClassifierPerParentNode(taxonomy=tax).fit(X, y)
    probs = clf.predict_marginals(X_test)
    np.testing.assert_allclose(probs, oracle_lcpn_proba(X, target, tax, X_test), rtol=1e-9, atol=1e-12)
    # marginals: root 1, children of each node sum to it (every sibling group is complete here,
    # as unseen children of a fitted parent only occur when a classifier saw two of three children)
    assert np.all(probs[:, 0] == 1.0) and np.all((probs >= 0) & (probs <= 1 + 1e-12))
    parent = tax.parent_index
    sums = np.zeros_like(probs)
    np.add.at(sums.T, parent[1:], probs[:, 1:].T)
    inner = np.flatnonzero(~tax.is_leaf_mask)
    np.testing.assert_allclose(sums[:, inner], probs[:, inner], atol=1e-9)


def test_partial_labels_train_only_the_classifiers_above_them(paper_tax):
    y = np.array(["ALL", "AML", "APL", "CLL", "CML", "Leukemia", "Acute", "Normal", "Reactive"] * 6)
    X, _ = blobs(list(range(len(y))), n_per=1, seed=3)
    clf = LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X, y)
    # root: every sample below it; Leukemia: the 5 leukaemia leaves + Acute; Acute: ALL, AML, APL; AML: APL only
    assert clf.n_samples_per_parent_ == {"root": 54, "Leukemia": 36, "Acute": 18, "Chronic": 12, "AML": 6}
    assert clf.estimators_["AML"] is None  # a single child seen: conditional 1
    assert set(clf.estimators_["Leukemia"].classes_.tolist()) == {paper_tax.index("Acute"), paper_tax.index("Chronic")}
    probs = clf.predict_marginals(X)
    np.testing.assert_allclose(probs[:, paper_tax.index("APL")], probs[:, paper_tax.index("AML")])


def test_parent_without_samples_is_uniform_and_single_child_gets_one():
    tax = Taxonomy.from_dict({"r": {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"]}})
    X, y = blobs(["a1", "a2", "b"], n_per=5)
    clf = LocalClassifierPerParentNode(taxonomy=tax).fit(X, y)
    probs = clf.predict_marginals(X)
    assert clf.estimators_["b"] is None and clf.n_samples_per_parent_["b"] == 0
    np.testing.assert_allclose(probs[:, tax.index("b1")], probs[:, tax.index("b")] / 2)
    np.testing.assert_allclose(probs[:, tax.index("a3")], 0.0)  # unseen child of a fitted parent
    one = LocalClassifierPerParentNode(taxonomy=tax).fit(X[:5], ["a1"] * 5).predict_marginals(X)
    np.testing.assert_allclose(one[:, [tax.index("a"), tax.index("a1")]], 1.0)


def test_ragged_depths_shallow_leaves_keep_their_probability(paper_tax):
    leaves = ["Normal", "Reactive", "ALL", "APL", "CLL", "CML"]
    X, y = blobs(leaves, n_per=15, seed=1, spread=0.3)
    clf = LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X, y)
    probs = clf.predict_marginals(X)
    rows = y == "Normal"
    assert probs[rows, paper_tax.index("Normal")].min() > 0.5  # depth-1 leaf, next to depth-4 ones
    pred = clf.predict(X)
    assert (pred == as_str(y)).mean() > 0.95
    assert {paper_tax.depth(p) for p in pred} == {1, 3, 4}


def test_outputs_do_not_depend_on_the_rest_of_the_batch():
    X, y = blobs(PATHS, n_per=20, seed=2)
    for clf in (LocalClassifierPerParentNode(), HierarchicalHeadClassifier(max_iter=30, lr=0.1, random_state=0)):
        clf.fit(X, y)
        full = clf.predict_marginals(X)
        rng = np.random.default_rng(0)
        for rows in (np.arange(1), rng.choice(len(X), 17, replace=False), rng.permutation(len(X))):
            np.testing.assert_allclose(clf.predict_marginals(X[rows]), full[rows], rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(clf.predict(X[rows]), clf.predict(X)[rows])


def test_sparse_input_gives_the_dense_result():
    X, y = blobs(PATHS)
    dense = LocalClassifierPerParentNode().fit(X, y)
    sparse = LocalClassifierPerParentNode().fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.predict_marginals(sp.csc_matrix(X)), dense.predict_marginals(X), rtol=1e-6)


def test_n_jobs_and_pickle_give_the_same_model():
    X, y = blobs(PATHS)
    ref = LocalClassifierPerParentNode().fit(X, y)
    with parallel_backend("threading"):  # the same joblib path as processes, without their start-up time
        par = LocalClassifierPerParentNode(n_jobs=2).fit(X, y)
    np.testing.assert_allclose(par.predict_marginals(X), ref.predict_marginals(X))
    back = pickle.loads(pickle.dumps(ref))
    np.testing.assert_array_equal(back.predict_marginals(X), ref.predict_marginals(X))
    np.testing.assert_array_equal(back.predict(X), ref.predict(X))


def test_lcpn_errors():
    X, y = blobs(["a", "b"])
    with pytest.raises(ValueError, match="SVC has no predict_proba.*probability=True"):
        LocalClassifierPerParentNode(SVC()).fit(X, y)
    with pytest.raises(ValueError, match="base_estimator: expected an unfitted scikit-learn classifier"):
        LocalClassifierPerParentNode("LogisticRegression").fit(X, y)
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")])
    with pytest.raises(TaxonomyError, match="needs a tree"):
        LocalClassifierPerParentNode(taxonomy=dag).fit(X, np.array(["c", "a"] * (len(X) // 2)))


def test_threshold_decoder_stops_at_an_inner_node(paper_tax):
    X, y = blobs(["ALL", "APL", "Normal"], n_per=15, seed=4)
    X_amb = X[y == "ALL"][:1] * 0.5 + X[y == "APL"][:1] * 0.5  # between two acute leaves
    clf = LocalClassifierPerParentNode(taxonomy=paper_tax, decoder="threshold", decoder_options={"threshold": 0.9})
    clf.fit(X, y)
    pred = clf.predict(np.concatenate([X_amb, X[y == "Normal"][:1]]))
    assert pred[1] == "Normal"
    assert pred[0] in ("Acute", "Leukemia")


def test_predict_uses_hiercls_decode():
    X, y = blobs(PATHS)
    for rule in ("argmax_leaf", "top_down"):
        clf = LocalClassifierPerParentNode(decoder=rule).fit(X, y)
        expected = decode(clf.predict_marginals(X), clf.taxonomy_, rule)
        np.testing.assert_array_equal(clf.predict(X), clf._codec.node_labels[expected])


# -------------------------------------------------------------- head classifier
def test_head_classifier_learns_paths_and_partial_labels(paper_tax):
    leaves = ["Normal", "Reactive", "ALL", "APL", "CLL", "CML"]
    X, y = blobs(leaves, n_per=15, seed=5)
    y_partial = y.copy()
    y_partial[:10] = [paper_tax.parent(n) or n for n in y[:10]]  # some labels only at the parent
    for head in ("conditional", "level", "sigmoid", "flat"):
        clf = HierarchicalHeadClassifier(
            head=head, max_iter=40, lr=0.1, batch_size=None, random_state=0, taxonomy=paper_tax
        )
        clf.fit(X, y_partial)
        probs = clf.predict_marginals(X)
        assert probs.shape == (len(X), paper_tax.num_nodes) and probs.dtype == np.float64
        assert clf.score(X, y) > 0.9, head
        assert len(clf.loss_curve_) == 40 and clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_head_classifier_is_deterministic_and_leaves_the_global_rng_alone():
    X, y = blobs(PATHS)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = HierarchicalHeadClassifier(hidden_layer_sizes=(8,), max_iter=5, batch_size=16, random_state=7).fit(X, y)
    after = torch.rand(1)
    b = HierarchicalHeadClassifier(hidden_layer_sizes=(8,), max_iter=5, batch_size=16, random_state=7).fit(X, y)
    assert before == after
    np.testing.assert_array_equal(a.predict_marginals(X), b.predict_marginals(X))
    c = HierarchicalHeadClassifier(hidden_layer_sizes=(8,), max_iter=5, batch_size=16, random_state=8).fit(X, y)
    assert not np.allclose(a.predict_marginals(X), c.predict_marginals(X))
    back = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(back.predict_marginals(X), a.predict_marginals(X))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"head": "softmax"}, "head: expected one of"),
        ({"loss": 3}, "loss: expected a hiercls.losses.create_loss kind"),
        ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes: expected a tuple of positive ints"),
        ({"max_iter": 0}, "max_iter: expected an int >= 1"),
        ({"lr": -1.0}, "lr: expected a float > 0"),
        ({"weight_decay": -1.0}, "weight_decay: expected a float >= 0"),
        ({"batch_size": 0}, "batch_size: expected an int >= 1 or None"),
        ({"device": "gpu0"}, "device: expected a torch device"),
        (
            {"head": "conditional", "loss": "hxe"},
            r"loss: 'hxe' does not train a head='conditional'.*'conditional', 'level'",
        ),
        ({"head": "flat", "loss": "bce"}, r"loss: 'bce' does not train a head='flat'"),
        ({"head": "sigmoid", "loss": "level"}, r"expected one of 'bce', 'max_constraint'"),
    ],
)
def test_head_classifier_parameter_errors(params, match):
    X, y = blobs(["a", "b"])
    with pytest.raises(ValueError, match=match):
        HierarchicalHeadClassifier(**params).fit(X, y)


@pytest.mark.parametrize("head", ["conditional", "level", "sigmoid", "flat"])
def test_head_classifier_trains_every_compatible_loss(head):
    """Every pair hiercls.losses.compatible_losses allows fits; max_constraint gets C-HMCNN's coherent head."""
    from hiercls.losses import compatible_losses

    X, y = blobs(["a/x", "a/y", "b"])
    for loss in compatible_losses(head):
        clf = HierarchicalHeadClassifier(head=head, loss=loss, max_iter=5, random_state=0).fit(X, y)
        assert np.isfinite(clf.loss_curve_).all()
        assert getattr(clf.module_.head, "coherent", False) == (loss == "max_constraint")
        probs = clf.predict_marginals(X)
        if (head, loss) != ("sigmoid", "bce"):  # plain independent sigmoids may put a child above its parent
            kids = [clf.taxonomy_.index(c) for c in clf.taxonomy_.children("a")]
            # coherent sigmoids: no child above its parent; softmax heads: children sum to the parent
            assert (probs[:, kids] <= probs[:, [clf.taxonomy_.index("a")]] + 1e-9).all()


@pytest.mark.parametrize("head", ["conditional", "level", "flat", "sigmoid"])
def test_head_classifier_gives_taxonomy_leaves_absent_from_y_no_mass(head):
    """A leaf of the given taxonomy that no label of y stands for (a CV fold missing a rare class) is in
    no column of classes_: the head used to put mass on it, so predict_proba rows summed to less than 1
    and predict returned it. Now it gets 0, as in the local estimators; the leaves below a partial
    label count as seen, and the sigmoid head's other marginals are the head's own."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2", "r/c/c1"])
    X, y = blobs(["a1", "a2", "b1"], n_per=15, dim=2, seed=3, spread=1.5)
    X_wide = np.random.default_rng(1).normal(scale=6.0, size=(300, 2))  # far from the blobs as well
    idx = {n: tax.index(n) for n in tax.nodes}
    for labels, unseen in ((y, ["b2", "c", "c1"]), (np.where(y == "b1", "b", y), ["c", "c1"])):
        clf = HierarchicalHeadClassifier(head=head, max_iter=30, lr=0.1, random_state=0, taxonomy=tax)
        clf.fit(X, labels)
        marg = clf.predict_marginals(X_wide)
        assert (marg[:, [idx[n] for n in unseen]] == 0.0).all()
        seen = [i for i in range(tax.num_nodes) if tax.nodes[i] not in unseen]
        assert (marg[:, seen] > 0.0).all()
        if head == "sigmoid":  # independent sigmoids: left as the head gives them
            with torch.no_grad():
                raw = clf.module_.head.marginals(clf.module_(torch.tensor(X_wide, dtype=torch.float32)))
            np.testing.assert_allclose(marg[:, seen], raw.double().numpy()[:, seen], rtol=1e-5, atol=1e-6)
        else:  # P(node | a leaf training labels stand for): consistent, leaves and classes sum to 1
            np.testing.assert_allclose(clf.predict_proba(X_wide).sum(axis=1), 1.0, rtol=1e-12)
            for parent in ("r", "a", "b"):
                kids = [idx[c] for c in tax.children(parent)]
                np.testing.assert_allclose(marg[:, kids].sum(axis=1), marg[:, idx[parent]], rtol=1e-12)
        for rule in ("argmax_leaf", "top_down", "crm"):
            pred = set(clf.set_params(decoder=rule).predict(X_wide).tolist())
            allowed = set(clf.classes_.tolist()) | ({"b1", "b2"} if "b" in clf.classes_ else set())
            assert pred <= allowed, (rule, pred - allowed)


def test_head_classifier_treats_a_class_of_weight_zero_as_unseen_and_old_pickles_as_fitted_then():
    """Weight 0 is a removed sample (the local estimators' reading): the head still gave such a class
    mass. A model pickled before the rule (no _kept_leaves) was never renormalised: rows summed to 0.87."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2"])
    X, y = blobs(["a1", "a2", "b1", "b2"], n_per=12, dim=2, seed=4, spread=1.5)
    weights = np.where(y == "b2", 0.0, 1.0)
    kw = {"max_iter": 30, "lr": 0.1, "random_state": 0, "taxonomy": tax}
    weighted = HierarchicalHeadClassifier(**kw).fit(X, y, sample_weight=weights)
    assert (weighted.predict_marginals(X)[:, tax.index("b2")] == 0.0).all()
    np.testing.assert_allclose(weighted.predict_proba(X)[:, weighted.classes_ != "b2"].sum(axis=1), 1.0)
    partial = HierarchicalHeadClassifier(**kw).fit(X[y != "b2"], y[y != "b2"])
    old = pickle.loads(pickle.dumps(partial))
    del old._kept_leaves  # as a model pickled before the rule
    np.testing.assert_allclose(old.predict_marginals(X), partial.predict_marginals(X))


# ------------------------------------------------------------------- scorers
def test_scores_equal_the_pytorch_side_metrics_and_a_set_oracle(paper_tax):
    leaves = ["Normal", "Reactive", "ALL", "APL", "CLL", "CML"]
    X, y = blobs(leaves, n_per=10, seed=6, spread=2.5)  # overlapping: some mistakes
    clf = LocalClassifierPerParentNode(taxonomy=paper_tax).fit(X, y)
    pred = clf.predict(X)
    t, p = paper_tax.encode(as_str(y)), paper_tax.encode(pred)
    assert (t != p).any()
    hf1 = hiercls.metrics.hierarchical_f1(t, p, paper_tax)
    assert clf.score(X, y) == pytest.approx(hf1, abs=1e-12)
    assert clf.score(X, y) == pytest.approx(oracle_hf1(t.tolist(), p.tolist(), paper_tax), abs=1e-12)
    assert hierarchical_f1_scorer(clf, X, y) == pytest.approx(hf1, abs=1e-12)
    assert hierarchical_precision_scorer(clf, X, y) == pytest.approx(
        hiercls.metrics.hierarchical_precision(t, p, paper_tax), abs=1e-12
    )
    assert hierarchical_recall_scorer(clf, X, y) == pytest.approx(
        hiercls.metrics.hierarchical_recall(t, p, paper_tax), abs=1e-12
    )
    assert neg_mistake_severity_scorer(clf, X, y) == pytest.approx(
        -hiercls.metrics.mistake_severity(t, p, paper_tax), abs=1e-12
    )
    macro = make_hierarchical_scorer("hierarchical_f1", average="macro")
    assert macro(clf, X, y) == pytest.approx(hiercls.metrics.hierarchical_f1(t, p, paper_tax, average="macro"))
    # the stateful torchmetrics class of a training loop, fed in two batches of torch tensors
    stateful = hiercls.metrics.HierarchicalMetrics(paper_tax)
    stateful.update(torch.as_tensor(p[:25]), torch.as_tensor(t[:25]))
    stateful.update(torch.as_tensor(p[25:]), torch.as_tensor(t[25:]))
    assert stateful.compute()["hierarchical_f1"] == pytest.approx(clf.score(X, y), abs=1e-6)


def test_pipeline_and_grid_search_with_hierarchical_scorers():
    X, y = blobs(PATHS, n_per=16, seed=7, spread=1.5)
    pipe = make_pipeline(StandardScaler(), LocalClassifierPerParentNode())
    search = GridSearchCV(
        pipe,
        {"localclassifierperparentnode__base_estimator": [LogisticRegression(C=0.01), LogisticRegression(C=10.0)]},
        scoring={"hf1": hierarchical_f1_scorer, "severity": neg_mistake_severity_scorer},
        refit="hf1",
        cv=3,
    )
    search.fit(X, y)
    assert search.best_params_["localclassifierperparentnode__base_estimator"].C == 10.0
    assert 0.5 < search.score(X, y) <= 1.0
    assert hierarchical_f1_scorer(search, X, y) == pytest.approx(search.score(X, y))
    scores = cross_val_score(
        make_pipeline(StandardScaler(), HierarchicalHeadClassifier(max_iter=20, lr=0.1)),
        X,
        y,
        cv=2,
        scoring=hierarchical_f1_scorer,
    )
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))


def test_scorer_errors():
    X, y = blobs(["a", "b"])
    with pytest.raises(ValueError, match="metric: expected one of"):
        make_hierarchical_scorer("f1")
    with pytest.raises(TypeError, match="need a fitted hiercls.sklearn estimator"):
        hierarchical_f1_scorer(LogisticRegression().fit(X, y), X, y)
    clf = LocalClassifierPerParentNode().fit(X, y)
    with pytest.raises(ValueError, match="sample_weight"):
        hierarchical_f1_scorer(clf, X, y, sample_weight=np.ones(len(X)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert repr(make_hierarchical_scorer("hierarchical_fbeta", beta=2.0)) == (
            "make_hierarchical_scorer('hierarchical_fbeta', beta=2.0)"
        )
    # a misspelt option is found when the scorer is made, not as a NaN score in every fold of a search
    with pytest.raises(ValueError, match=r"hierarchical_f1 takes no option 'averag'; its options: 'average'"):
        make_hierarchical_scorer("hierarchical_f1", averag="macro")
    # unfitted: scikit-learn's NotFittedError, as predict raises, from score and from the scorers
    for unfitted in (LocalClassifierPerParentNode(), HierarchicalHeadClassifier()):
        with pytest.raises(NotFittedError):
            unfitted.score(X, y)
        with pytest.raises(NotFittedError):
            hierarchical_f1_scorer(unfitted, X, y)


def test_head_estimator_names_its_own_options_for_dags_and_missing_gpus():
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("b", "y")])
    X = np.random.default_rng(0).normal(size=(8, 2))
    y = ["x", "y"] * 4
    with pytest.raises(TaxonomyError, match=r"head: 'conditional' needs a tree.*head='sigmoid' or head='flat'"):
        HierarchicalHeadClassifier(taxonomy=dag, max_iter=1).fit(X, y)
    assert HierarchicalHeadClassifier(head="sigmoid", taxonomy=dag, max_iter=1).fit(X, y).predict(X).shape == (8,)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device: 'cuda' was asked for, but torch sees no CUDA GPU"):
            HierarchicalHeadClassifier(device="cuda", max_iter=1).fit(X, y)


def test_a_pickled_head_estimator_holds_its_weights_on_the_cpu():
    """A model trained on a GPU must load where there is none: the pickle holds CPU weights. A CPU model
    is pickled as it is (no copy); the GPU case runs where a GPU is."""
    X, y = blobs(["a/x", "a/y", "b"])
    clf = HierarchicalHeadClassifier(max_iter=5, random_state=0).fit(X, y)
    assert clf.__getstate__()["module_"] is clf.module_
    if torch.cuda.is_available():
        want = clf.predict_marginals(X)
        clf.module_.to("cuda")
        state = clf.__getstate__()
        assert all(t.device.type == "cpu" for t in state["module_"].state_dict().values())
        assert next(clf.module_.parameters()).device.type == "cuda"  # the live model stays where it was
        np.testing.assert_allclose(pickle.loads(pickle.dumps(clf)).predict_marginals(X), want, rtol=1e-5)


def test_decoder_options_of_another_rule_warn_and_a_search_over_decoder_works(paper_tax):
    """``decoder`` and ``decoder_options`` are separate parameters: switching the rule with ``set_params`` (as
    the scikit-learn guide shows) or a grid over ``decoder`` keeps a threshold the new rule does not read.
    That warns and has no effect; it is not an error, and a ``None`` option counts as not given."""
    import warnings

    from sklearn.model_selection import GridSearchCV

    X, y = blobs(["ALL", "APL", "Normal"], n_per=15, seed=4)
    cautious = LocalClassifierPerParentNode(taxonomy=paper_tax, decoder="threshold", decoder_options={"threshold": 0.9})
    cautious.fit(X, y)
    plain = LocalClassifierPerParentNode(taxonomy=paper_tax, decoder="top_down").fit(X, y)
    with pytest.warns(
        UserWarning, match="decoder='top_down' ignores 'threshold' \\(read by decoder='threshold'\\)"
    ) as said:
        got = cautious.set_params(decoder="top_down").predict(X)
    assert len(said) == 1 and said[0].filename == __file__  # once, at the user's line
    np.testing.assert_array_equal(got, plain.predict(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LocalClassifierPerParentNode(taxonomy=paper_tax, decoder_options={"threshold": None}).fit(X, y).predict(X)
        search = GridSearchCV(
            LocalClassifierPerParentNode(taxonomy=paper_tax, decoder_options={"threshold": 0.7}),
            {"decoder": ["threshold", "top_down"]},
            cv=2,
            error_score="raise",
        )
        warnings.filterwarnings("ignore", message="decoder_options: decoder='top_down' ignores")
        search.fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_an_older_scikit_learn_is_named_with_the_version_needed():
    """The [sklearn] extra asks for 1.6 (validate_data, __sklearn_tags__); an older one failed on a
    private import."""
    from hiercls.sklearn._compat import _check_sklearn_version

    for ok in ("1.6.0", "1.6.1", "1.9.1", "2.0.dev0", "1.10rc1"):
        _check_sklearn_version(ok)
    for old in ("1.5.2", "1.4", "0.24.2", "1.5rc1"):
        with pytest.raises(ImportError, match=rf"needs scikit-learn >= 1.6, found {old}"):
            _check_sklearn_version(old)


def test_labels_with_blanks_at_an_end_are_kept_as_given() -> None:
    """Taxonomy.from_paths refuses 'x ' as a likely typo; y's labels are opaque and come back as given."""
    from sklearn.linear_model import LogisticRegression

    from hiercls.sklearn import LocalClassifierPerParentNode

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.array(["a/x ", "a/y", "b/z", " b/w"] * 10)
    clf = LocalClassifierPerParentNode(base_estimator=LogisticRegression()).fit(X, y)
    assert set(clf.predict(X)) <= set(y) and "a/x " in set(clf.classes_)
