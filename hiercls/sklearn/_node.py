"""A local classifier per node: one binary scikit-learn classifier per non-root node."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import _safe_indexing
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _num_samples

from hiercls.sklearn._base import HierarchicalClassifierBase, _fit_or_forget
from hiercls.sklearn._level import _conditionals_within_siblings, _default_conditionals
from hiercls.sklearn._local import (
    _fit_one,
    _LocalEstimators,
    _marginals_from_conditionals,
    _parent_child_pairs,
    _predict_one,
)


class LocalClassifierPerNode(_LocalEstimators, HierarchicalClassifierBase):
    """One binary classifier per non-root node of a tree, chained into node marginals.

    The classifier of node ``v`` (a clone of ``base_estimator``) answers "does
    the path go through ``v``?" for the samples whose path goes through
    ``v``'s parent: positives go through ``v``, negatives through one of its
    siblings (HiClass' "siblings" policy). Samples labelled at the parent or
    above (partial labels) say nothing about ``v`` and are left out, as in the
    library's masked losses.

    Sibling classifiers are trained separately, so their probabilities need
    not sum to 1; they are renormalised within each sibling group and chained
    down the path::

        P(v | parent(v)) = q_v / sum over the siblings s of v (v included) of q_s
        P(node) = prod over the nodes v on the path below the root of P(v | parent(v))

    where ``q_v`` is the positive-class probability of ``v``'s classifier. A
    node seen alone among its siblings at fit has ``q = 1`` and its unseen
    siblings ``q = 0``; a sibling group none of whose nodes was seen gets the
    uniform conditional. Top-down decoding picks, at each step, the child of
    largest ``q``, as HiClass' per-node classifier predicts.

    ``predict`` decodes the marginals with :func:`hiercls.decoding.decode`
    (``decoder`` rule, ``decoder_options`` as keyword arguments); ``score`` is
    the hierarchical F1 (micro). Labels ``y`` take the same forms as for
    :class:`LocalClassifierPerParentNode`.

    Args:
        base_estimator: an unfitted scikit-learn classifier with ``predict_proba``,
            cloned for every non-root node. None means ``LogisticRegression()``, and ``X`` is then
            checked here as a numeric 2-D array; a given base estimator gets ``X`` as
            it came (a DataFrame, a list of texts, ...; rows picked per node with
            ``sklearn.utils._safe_indexing``) and checks it itself, so a Pipeline with
            its own preprocessing works (an encoder in it sees one node's samples:
            give it ``handle_unknown="ignore"``).
        taxonomy: a tree :class:`hiercls.Taxonomy`, or None to infer one from ``y``.
        decoder: the :func:`hiercls.decoding.decode` rule used by ``predict``.
        decoder_options: keyword arguments for the rule (e.g. ``{"threshold": 0.6}``).
        n_jobs: parallel jobs for fitting the per-node classifiers (joblib; None means 1).

    Attributes:
        taxonomy_ (Taxonomy): the taxonomy used (given or inferred).
        nodes_ (np.ndarray): node names, shape ``(num_nodes,)``: the columns of ``predict_marginals``.
        classes_ (np.ndarray): the distinct labels seen at fit, sorted, in ``y``'s format.
        estimators_ (dict[str, object | None]): non-root node name -> its fitted binary classifier,
            or None where none was needed (the node and its siblings were not both seen at fit).
        n_samples_per_node_ (dict[str, int]): non-root node name -> training samples of its classifier
            (those that go through its parent to one of its children).
        n_features_in_ (int): number of features seen at fit.
        feature_names_in_ (np.ndarray): feature names, when ``X`` had string column names.

    Raises:
        TaxonomyError: (at fit) the taxonomy is a DAG.
        ValueError: (at fit) the base estimator has no ``predict_proba``, a
            parameter is invalid, or ``y`` does not fit the taxonomy.

    Examples:
        >>> import numpy as np
        >>> from hiercls.sklearn import LocalClassifierPerNode
        >>> rng = np.random.default_rng(0)
        >>> y = np.array(["animal/cat", "animal/dog", "plant"] * 20)
        >>> X = rng.normal(size=(60, 3)) + (np.arange(60) % 3)[:, None]
        >>> clf = LocalClassifierPerNode().fit(X, y)
        >>> sorted(name for name, est in clf.estimators_.items() if est is not None)
        ['animal', 'cat', 'dog', 'plant']
        >>> clf.predict(X[:3]).tolist()
        ['animal/cat', 'animal/dog', 'plant']
    """

    # ---------------------------------------------------------------- fit
    @_fit_or_forget
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LocalClassifierPerNode:
        """Fit one binary classifier per non-root node.

        Args:
            X: features, shape ``(n_samples, n_features)`` (sparse if the base estimator takes it).
            y: labels, shape ``(n_samples,)`` (or ``(n_samples, depth)`` label paths).
            sample_weight: per-sample weights ``(n_samples,)``, all >= 0, or None, handed to each node's
                classifier for the samples it is trained on (weight 0 counts as a removed sample).

        Returns:
            self.

        Raises:
            ValueError: ``sample_weight`` has a negative weight, or is given but the base estimator's
                ``fit`` does not take it.
        """
        base, X, target, sample_weight = self._fit_inputs(X, y, sample_weight)
        tax = self.taxonomy_
        rows, parents, children = _parent_child_pairs(target, tax)
        seen = np.zeros(tax.num_nodes, dtype=bool)
        seen[children] = True
        # the samples of each parent, once: sort the (sample, parent, child) steps by parent
        order = np.argsort(parents, kind="stable")
        rows, parents, children = rows[order], parents[order], children[order]
        bounds = np.searchsorted(parents, np.stack([np.arange(tax.num_nodes), np.arange(tax.num_nodes) + 1]))
        parent_of = tax.parent_index
        default = _default_conditionals(tax, seen)
        jobs = []
        for v in range(1, tax.num_nodes):  # once per node at fit; predict has no such loop per sample
            lo, hi = bounds[0, parent_of[v]], bounds[1, parent_of[v]]
            positive = children[lo:hi] == v
            if positive.any() and not positive.all():
                jobs.append((v, rows[lo:hi], positive.astype(np.int64)))
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_one)(
                clone(base),
                _safe_indexing(X, r),
                labels,
                None if sample_weight is None else sample_weight[r],
                f"the classifier of node {tax.nodes[v]!r} (1: {tax.nodes[v]!r}, 0: its siblings under "
                f"{tax.nodes[parent_of[v]]!r})",
            )
            for v, r, labels in jobs
        )
        names = tax.nodes
        self.estimators_: dict[str, Any] = {names[v]: None for v in range(1, tax.num_nodes)}
        for (v, _, _), est in zip(jobs, fitted):
            self.estimators_[names[v]] = est
        sizes = (bounds[1] - bounds[0])[parent_of[1:]]
        self.n_samples_per_node_ = {names[v]: int(size) for v, size in zip(range(1, tax.num_nodes), sizes.tolist())}
        self._default_conditional = default
        return self

    # ------------------------------------------------------------ predict
    def predict_marginals(self, X: Any) -> np.ndarray:
        """Node marginals ``P(node)``, float64 ``(n_samples, num_nodes)``, columns named by ``nodes_``.

        ``P(root) = 1`` and the children of every node sum to that node (for
        sibling groups seen at fit).

        Args:
            X: features, shape ``(n_samples, n_features)``.
        """
        X = self._predict_inputs(X)
        default = self._default_conditional
        scores = np.repeat(default[None, :], _num_samples(X), axis=0)  # nodes without a classifier: fixed
        tax = self.taxonomy_
        fitted = ((tax.index(name), est) for name, est in self.estimators_.items() if est is not None)
        for node, est in fitted:  # one call per fitted classifier
            # the column of class 1 (the classifier was fitted on 0/1 labels; the last column otherwise)
            positive = np.flatnonzero(np.asarray(est.classes_) == 1)
            proba = _predict_one(est, X, f"the classifier of node {tax.nodes[node]!r}")
            scores[:, node] = proba[:, positive[0] if len(positive) else -1]
        return _marginals_from_conditionals(_conditionals_within_siblings(scores, default, tax), tax)
