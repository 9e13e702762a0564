"""scikit-learn's estimator checks for the hiercls.sklearn estimators, and scikit-learn's own tools on them.

The checks call ``fit(X, y)`` with flat class labels (``0/1/2``, ``-1/1``,
strings, object arrays): the estimators infer the taxonomy ``root -> classes``.
Every check passes but one: ``predict_proba`` returns the columns of
``classes_`` (which sum to 1 when every class is a leaf, for the conditional,
level and flat heads), and the node marginals of every node, the library's
common currency, come from ``predict_marginals``. The exception: the head
estimator trains in float32, so fitting with sample weights equals fitting
on repeated samples to about 1e-7, where scikit-learn asks rtol 1e-7;
:func:`test_sample_weights_act_like_repeated_samples` checks it at 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.ensemble import VotingClassifier
from sklearn.metrics import accuracy_score, get_scorer, log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from hiercls.sklearn import (
    HierarchicalHeadClassifier,
    LocalClassifierPerLevel,
    LocalClassifierPerNode,
    LocalClassifierPerParentNode,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: more BLAS/torch threads only fight the other test worker for the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


ESTIMATORS = [
    LocalClassifierPerParentNode(),
    LocalClassifierPerLevel(),
    LocalClassifierPerNode(),
    # small and full-batch, to keep the checks fast
    HierarchicalHeadClassifier(max_iter=20, lr=0.1, batch_size=None, random_state=0),
]


def _expected_failures(estimator) -> dict[str, str]:
    if isinstance(estimator, HierarchicalHeadClassifier):
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "float32 training: equal to repeated samples to ~1e-7 relative, the check asks rtol 1e-7"
            )
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    """Each scikit-learn check asserts internally and raises on failure."""
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_predict_proba_is_what_scikit_learn_tools_read(estimator):
    """Binary AUC, log loss and soft voting see one column per class in classes_ order (they used to get
    the node marginals, root column first, and silently inverted the AUC)."""
    X, y = make_blobs(n_samples=300, centers=3, random_state=0)
    X = StandardScaler().fit_transform(X)
    binary = y != 2
    Xb, yb = X[binary], y[binary]
    clf = clone(estimator).fit(Xb, yb)
    probs = clf.predict_proba(Xb)
    assert probs.shape == (len(yb), 2) and clf.classes_.tolist() == [0, 1]
    marg = clf.predict_marginals(Xb)
    column = {str(n): j for j, n in enumerate(clf.nodes_)}
    np.testing.assert_array_equal(probs, marg[:, [column["0"], column["1"]]])
    assert get_scorer("roc_auc")(clf, Xb, yb) == roc_auc_score(yb, marg[:, column["1"]]) > 0.9
    assert get_scorer("neg_log_loss")(clf, Xb, yb) == pytest.approx(-log_loss(yb, probs), rel=1e-12)
    clf = clone(estimator).fit(X, y)
    voting = VotingClassifier([("a", clone(estimator)), ("b", clone(estimator))], voting="soft").fit(X, y)
    assert accuracy_score(y, voting.predict(X)) == pytest.approx(accuracy_score(y, clf.predict(X)), abs=0.02)
    np.testing.assert_array_equal(clf.classes_[np.argmax(clf.predict_proba(X), axis=1)], clf.predict(X))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_predict_proba_columns_with_paths_and_partial_labels(estimator):
    rng = np.random.default_rng(0)
    y = np.array(["animal/cat", "animal/dog", "plant"] * 30)
    X = rng.normal(size=(90, 3)) + 3 * (np.arange(90) % 3)[:, None]
    clf = clone(estimator).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(X).sum(1), 1.0, rtol=1e-9)  # every class is a leaf
    partial = y.copy()
    partial[:6] = "animal"  # an inner node becomes a class; its column holds cat + dog
    clf = clone(estimator).fit(X, partial)
    assert clf.classes_.tolist() == ["animal", "animal/cat", "animal/dog", "plant"]
    probs = clf.predict_proba(X)
    np.testing.assert_allclose(probs[:, 0], probs[:, 1] + probs[:, 2], rtol=1e-9)
    np.testing.assert_allclose(probs[:, 0] + probs[:, 3], 1.0, rtol=1e-9)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_sparse_input(estimator):
    X, y = make_blobs(n_samples=300, random_state=0)
    X = StandardScaler().fit_transform(X)
    if isinstance(estimator, (LocalClassifierPerParentNode, LocalClassifierPerLevel, LocalClassifierPerNode)):
        for container in (sp.csr_matrix, sp.csr_array, sp.coo_matrix, sp.csc_array):
            Xs = container(X)
            clf = clone(estimator).fit(Xs, y)
            assert clf.predict(Xs).shape == (len(y),)
            assert clf.predict_proba(Xs).shape == (len(y), 3)
    else:
        with pytest.raises(TypeError, match="[Ss]parse"):
            estimator.__class__(**estimator.get_params()).fit(sp.csr_matrix(X), y)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_sample_weights_act_like_repeated_samples(estimator):
    """Weight 2 is a repeated sample and weight 0 a removed one (full batch, same seed), hierarchical
    labels and a partial label included; each local classifier gets its own samples' weights."""
    rng = np.random.default_rng(0)
    y = np.array(["a/x", "a/y", "b/z", "b/w", "a"] * 8)
    X = rng.normal(size=(len(y), 3)) + np.arange(len(y))[:, None] % 5
    weight = rng.integers(0, 3, len(y))
    repeated = np.repeat(np.arange(len(y)), weight)
    weighted = clone(estimator).fit(X, y, sample_weight=weight)
    expanded = clone(estimator).fit(X[repeated], y[repeated])
    np.testing.assert_allclose(weighted.predict_marginals(X), expanded.predict_marginals(X), rtol=1e-5, atol=1e-6)
    # the head's loss is a weighted mean (weights scaled to mean 1): a uniform weight changes nothing;
    # scikit-learn's own classifiers read weights as repeats, so only a weight of 1 is neutral for them
    scale = 3.0 if isinstance(estimator, HierarchicalHeadClassifier) else 1.0
    uniform = clone(estimator).fit(X, y, sample_weight=np.full(len(y), scale))
    np.testing.assert_allclose(uniform.predict_marginals(X), clone(estimator).fit(X, y).predict_marginals(X), atol=1e-6)


def test_sample_weight_errors():
    from sklearn.neighbors import KNeighborsClassifier

    X, y = make_blobs(n_samples=30, centers=3, random_state=0)
    with pytest.raises(ValueError, match="KNeighborsClassifier does not take sample_weight"):
        LocalClassifierPerParentNode(KNeighborsClassifier()).fit(X, y, sample_weight=np.ones(30))
    with pytest.raises(ValueError, match="at least one non-zero"):
        HierarchicalHeadClassifier(max_iter=2).fit(X, y, sample_weight=np.zeros(30))
    with pytest.raises(ValueError, match="sample_weight"):
        LocalClassifierPerParentNode().fit(X, y, sample_weight=np.ones(29))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_negative_sample_weights_are_refused(estimator):
    """A weight counts repeats of a sample, so a negative one means nothing: the local estimators used to
    keep only the samples of weight > 0, reading -1 as 'leave this sample out', and all-negative weights
    'fitted' on no sample at all. Every estimator refuses them, saying how many and where."""
    X, y = make_blobs(n_samples=30, centers=3, random_state=0)
    weight = np.ones(30)
    weight[[4, 9]] = -1.0
    with pytest.raises(
        ValueError, match=r"sample_weight: expected weights >= 0 .*2 negative of 30 .*sample_weight\[4\] = -1\.0"
    ):
        clone(estimator).fit(X, y, sample_weight=weight)
    with pytest.raises(ValueError, match=r"30 negative of 30 .*Give 0 to leave a sample out"):
        clone(estimator).fit(X, y, sample_weight=-np.ones(30))


@pytest.mark.parametrize("cls", [LocalClassifierPerParentNode, LocalClassifierPerLevel, LocalClassifierPerNode])
def test_a_subtree_whose_samples_all_weigh_zero_is_unseen(cls):
    """Weight 0 is a removed sample: a parent whose samples all weigh 0 used to hand its classifier
    weights summing to 0, and LogisticRegression raised without naming the node."""
    rng = np.random.default_rng(0)
    y = np.array(["a/x", "a/y", "b/z", "b/w"] * 10)
    X = rng.normal(size=(len(y), 3)) + np.arange(len(y))[:, None] % 4
    weight = np.where(np.char.startswith(y, "b"), 0.0, 1.0)
    weighted = cls().fit(X, y, sample_weight=weight)
    removed = cls(taxonomy=weighted.taxonomy_).fit(X[weight > 0], y[weight > 0])
    np.testing.assert_allclose(weighted.predict_marginals(X), removed.predict_marginals(X))
