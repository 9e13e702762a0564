"""scikit-learn's estimator checks for the hiercls.sklearn estimators.

The checks call ``fit(X, y)`` with flat class labels (``0/1/2``, ``-1/1``,
strings, object arrays): the estimators infer the taxonomy ``root -> classes``.
Every check passes except those listed in ``EXPECTED_FAILED_CHECKS`` (marked
xfail, strictly: if one starts passing, the list must shrink). Each of them
fails for a single, deliberate reason: ``predict_proba`` returns node marginals
over *all* nodes, ``(n_samples, num_nodes)`` with the root's column (always 1)
included, so a row sums to the number of depth levels it reaches, not 1, and
has ``num_nodes = n_classes + 1`` columns for flat labels. That is the
library's common currency (what ``hiercls.decoding.decode`` and the metrics
take), and the price is these checks. What else they check is tested by
``test_what_the_expected_failures_check_besides_the_probability_shape`` below.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import StandardScaler
from sklearn.utils import shuffle
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from hiercls.sklearn import HierarchicalHeadClassifier, LocalClassifierPerParentNode


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: more BLAS/torch threads only fight the other test worker for the 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


PROBA_IS_NODE_MARGINALS = (
    "predict_proba returns node marginals (n_samples, num_nodes): the root column (always 1) is included and "
    "each depth level sums to 1, so for flat labels there are n_classes + 1 columns summing to 2, not n_classes "
    "columns summing to 1 as this check asserts"
)

ESTIMATORS = [
    LocalClassifierPerParentNode(),
    # small and full-batch, to keep the checks fast
    HierarchicalHeadClassifier(max_iter=20, lr=0.1, batch_size=None, random_state=0),
]


def expected_failed_checks(estimator: object) -> dict[str, str]:
    """The checks each estimator is expected to fail, and why."""
    failed = {"check_classifiers_train": PROBA_IS_NODE_MARGINALS}
    if isinstance(estimator, LocalClassifierPerParentNode):
        # it accepts sparse X (LogisticRegression does), so these checks go on to assert the proba shape
        failed["check_estimator_sparse_array"] = PROBA_IS_NODE_MARGINALS
        failed["check_estimator_sparse_matrix"] = PROBA_IS_NODE_MARGINALS
    return failed


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check):
    """Each scikit-learn check asserts internally and raises on failure (xfail_strict for the listed ones)."""
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_what_the_expected_failures_check_besides_the_probability_shape(estimator):
    """check_classifiers_train and check_estimator_sparse_*, minus their predict_proba shape/sum asserts."""
    X, y = make_blobs(n_samples=300, random_state=0)
    X, y = shuffle(X, y, random_state=7)
    X = StandardScaler().fit_transform(X)
    for Xp, yp in ((X[y != 2], y[y != 2]), (X, y)):
        clf = estimator.__class__(**estimator.get_params())
        with pytest.raises(ValueError):
            clf.fit(Xp, yp[:-1])
        clf.fit(Xp.tolist(), yp.tolist())
        clf.fit(Xp, yp)
        pred = clf.predict(Xp)
        assert pred.shape == (len(Xp),)
        assert accuracy_score(yp, pred) > 0.83
        with pytest.raises(ValueError):
            clf.predict(Xp.T)
        with pytest.raises(ValueError):
            clf.predict_proba(Xp.T)
        probs = clf.predict_proba(Xp)
        n_classes = len(np.unique(yp))
        assert probs.shape == (len(Xp), n_classes + 1)
        np.testing.assert_allclose(probs[:, 0], 1.0)
        np.testing.assert_allclose(probs[:, 1:].sum(1), 1.0, rtol=1e-6)
        # columns = nodes_: the root, then one per class; the argmax over the classes is the prediction
        assert clf.nodes_[1:].tolist() == [str(c) for c in clf.classes_]
        np.testing.assert_array_equal(clf.classes_[np.argmax(probs[:, 1:], axis=1)], pred)
    if isinstance(estimator, LocalClassifierPerParentNode):
        for container in (sp.csr_matrix, sp.csr_array, sp.coo_matrix, sp.csc_array):
            Xs = container(X)
            clf = LocalClassifierPerParentNode().fit(Xs, y)
            assert clf.predict(Xs).shape == (len(y),)
            assert clf.predict_proba(Xs).shape == (len(y), 4)
    else:
        with pytest.raises(TypeError, match="[Ss]parse"):
            estimator.__class__(**estimator.get_params()).fit(sp.csr_matrix(X), y)
