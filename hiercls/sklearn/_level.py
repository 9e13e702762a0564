"""A local classifier per level: one scikit-learn classifier per depth of the taxonomy."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils import _safe_indexing
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _num_samples

from hiercls.sklearn._base import HierarchicalClassifierBase, _fit_or_forget
from hiercls.sklearn._local import (
    _classes_text,
    _fit_one,
    _LocalEstimators,
    _marginals_from_conditionals,
    _predict_one,
)
from hiercls.taxonomy import Taxonomy


class LocalClassifierPerLevel(_LocalEstimators, HierarchicalClassifierBase):
    """One classifier per depth of a tree, its outputs chained into node marginals.

    The classifier of depth ``d`` (a clone of ``base_estimator``) learns which
    node of that depth a sample's path goes through, from every sample labelled
    at depth ``d`` or below: the "one model per tree level" of Hamdi et al.
    (AMAI 2023), and HiClass' local classifier per level. A sample labelled at
    an inner node of depth ``k`` (a partial label) trains the classifiers of
    depths ``1 .. k`` only.

    Each level's classifier scores every node of its depth at once, so its
    probabilities are turned into conditionals by renormalising within each
    sibling group, then chained down the path, as :class:`hiercls.heads.LevelHead`
    does on the PyTorch side::

        P(v | parent(v)) = q_d(v) / sum over the siblings s of v (v included) of q_d(s)
        P(node) = prod over the nodes v on the path below the root of P(v | parent(v))

    where ``q_d`` is the ``predict_proba`` of depth ``d``'s classifier. Where a
    sibling group gets no probability (its nodes were never seen at fit, or the
    classifier gives them all 0), its conditionals are uniform over the siblings
    seen at fit (over all siblings when none was seen); a depth with a single
    node seen at fit needs no classifier. Each sample's output depends on that
    sample alone.

    ``predict`` decodes the marginals with :func:`hiercls.decoding.decode`
    (``decoder`` rule, ``decoder_options`` as keyword arguments); ``score`` is
    the hierarchical F1 (micro). Labels ``y`` take the same forms as for
    :class:`LocalClassifierPerParentNode`.

    Args:
        base_estimator: an unfitted scikit-learn classifier with ``predict_proba``,
            cloned for every depth. None means ``LogisticRegression()``, and ``X`` is then
            checked here as a numeric 2-D array; a given base estimator gets ``X`` as
            it came (a DataFrame, a list of texts, ...; rows picked per node with
            ``sklearn.utils._safe_indexing``) and checks it itself, so a Pipeline with
            its own preprocessing works (an encoder in it sees one node's samples:
            give it ``handle_unknown="ignore"``).
        taxonomy: a tree :class:`hiercls.Taxonomy`, or None to infer one from ``y``.
        decoder: the :func:`hiercls.decoding.decode` rule used by ``predict``.
        decoder_options: keyword arguments for the rule (e.g. ``{"threshold": 0.6}``).
        n_jobs: parallel jobs for fitting the per-depth classifiers (joblib; None means 1).

    Attributes:
        taxonomy_ (Taxonomy): the taxonomy used (given or inferred).
        nodes_ (np.ndarray): node names, shape ``(num_nodes,)``: the columns of ``predict_marginals``.
        classes_ (np.ndarray): the distinct labels seen at fit, sorted, in ``y``'s format.
        estimators_ (list[object | None]): ``estimators_[d]`` is the fitted classifier of depth
            ``d`` (its classes are node indices of that depth), or None where none was needed
            (``estimators_[0]``, the root's depth, is always None).
        n_samples_per_level_ (list[int]): training samples that reach each depth.
        n_features_in_ (int): number of features seen at fit.
        feature_names_in_ (np.ndarray): feature names, when ``X`` had string column names.

    Raises:
        TaxonomyError: (at fit) the taxonomy is a DAG.
        ValueError: (at fit) the base estimator has no ``predict_proba``, a
            parameter is invalid, or ``y`` does not fit the taxonomy.

    Examples:
        >>> import numpy as np
        >>> from hiercls.sklearn import LocalClassifierPerLevel
        >>> rng = np.random.default_rng(0)
        >>> y = np.array(["animal/cat", "animal/dog", "plant"] * 20)
        >>> X = rng.normal(size=(60, 3)) + (np.arange(60) % 3)[:, None]
        >>> clf = LocalClassifierPerLevel().fit(X, y)
        >>> [est is not None for est in clf.estimators_]  # depth 0 (the root), 1, 2
        [False, True, True]
        >>> clf.predict_marginals(X[:2]).shape  # root, animal, plant, cat, dog
        (2, 5)
        >>> clf.predict(X[:3]).tolist()
        ['animal/cat', 'animal/dog', 'plant']
    """

    # ---------------------------------------------------------------- fit
    @_fit_or_forget
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LocalClassifierPerLevel:
        """Fit one classifier per depth.

        Args:
            X: features, shape ``(n_samples, n_features)`` (sparse if the base estimator takes it).
            y: labels, shape ``(n_samples,)`` (or ``(n_samples, depth)`` label paths).
            sample_weight: per-sample weights ``(n_samples,)``, all >= 0, or None, handed to each depth's
                classifier for the samples it is trained on.

        Returns:
            self.

        Raises:
            ValueError: ``sample_weight`` has a negative weight, or is given but the base estimator's
                ``fit`` does not take it.
        """
        base, X, target, sample_weight = self._fit_inputs(X, y, sample_weight)
        tax = self.taxonomy_
        anc = tax.ancestor_table
        depth_of_target = tax.depth_index[target]
        seen = np.zeros(tax.num_nodes, dtype=bool)
        jobs, sizes = [], [len(target)]  # every sample reaches the root
        for d in range(1, tax.max_depth + 1):  # one vectorised step per depth
            rows = np.flatnonzero(depth_of_target >= d)
            nodes = anc[target[rows], d]
            seen[nodes] = True
            sizes.append(len(rows))
            if len(np.unique(nodes)) >= 2:
                jobs.append((d, rows, nodes))
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_one)(
                clone(base),
                _safe_indexing(X, rows),
                nodes,
                None if sample_weight is None else sample_weight[rows],
                f"the classifier of depth {d} (classes {_classes_text(tax.nodes[n] for n in np.unique(nodes))})",
            )
            for d, rows, nodes in jobs
        )
        self.estimators_: list[Any] = [None] * (tax.max_depth + 1)
        for (d, _, _), est in zip(jobs, fitted):
            self.estimators_[d] = est
        self.n_samples_per_level_ = sizes
        self._default_conditional = _default_conditionals(tax, seen)
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
        tax = self.taxonomy_
        scores = np.zeros((_num_samples(X), tax.num_nodes))
        for d, est in enumerate(self.estimators_):  # one call per fitted classifier
            if est is not None:
                scores[:, est.classes_] = _predict_one(est, X, f"the classifier of depth {d}")
        default = self._default_conditional
        single = np.array([est is None for est in self.estimators_])[tax.depth_index]
        scores[:, single] = default[single]  # a depth with at most one node seen: its fixed conditionals
        return _marginals_from_conditionals(_conditionals_within_siblings(scores, default, tax), tax)


def _conditionals_within_siblings(scores: np.ndarray, default: np.ndarray, tax: Taxonomy) -> np.ndarray:
    """Per-node scores ``(n, num_nodes)`` -> conditionals: each divided by its sibling group's total,
    ``default`` where a group's total is 0."""
    # each sibling group's total: a sparse one-hot (node -> parent) with num_nodes - 1 entries
    parent = np.maximum(tax.parent_index, 0)
    num = tax.num_nodes
    member = sp.csr_matrix((np.ones(num - 1), (parent[1:], np.arange(1, num))), shape=(num, num))
    totals = np.asarray(member @ scores.T).T[:, parent]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(totals > 0, scores / np.where(totals > 0, totals, 1.0), default[None, :])


def _default_conditionals(tax: Taxonomy, seen: np.ndarray) -> np.ndarray:
    """Per node: its conditional when its sibling group gets no probability (uniform over the siblings
    seen at fit, over all siblings when none was seen); 1 at the root."""
    parent = np.maximum(tax.parent_index, 0)
    children = np.diff(tax.children_ptr)
    seen_children = np.bincount(parent[1:][seen[1:]], minlength=tax.num_nodes)
    default = np.zeros(tax.num_nodes)
    default[0] = 1.0
    child = np.arange(1, tax.num_nodes)
    p = parent[child]
    none_seen = seen_children[p] == 0
    default[child[none_seen]] = 1.0 / children[p[none_seen]]
    some = ~none_seen
    default[child[some]] = seen[child[some]] / np.maximum(seen_children[p[some]], 1)
    return default
