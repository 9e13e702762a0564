"""A local classifier per parent node: one scikit-learn classifier per inner node."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils import _safe_indexing, get_tags
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import _num_samples, check_is_fitted, has_fit_parameter, validate_data

from hiercls.errors import TaxonomyError
from hiercls.sklearn._base import DecoderRule, HierarchicalClassifierBase, _checked_sample_weight, _fit_or_forget
from hiercls.taxonomy import Taxonomy


class _LocalEstimators:
    """What the local-classifier estimators share: their parameters, the base estimator, its input
    options and tags, and the checks at the start of ``fit`` and ``predict_marginals``."""

    base_estimator: Any
    taxonomy_: Taxonomy
    _fit_labels: Any
    _model_attribute = "estimators_"

    def __init__(
        self,
        base_estimator: Any = None,
        taxonomy: Taxonomy | None = None,
        decoder: DecoderRule = "argmax_leaf",
        decoder_options: dict[str, Any] | None = None,
        n_jobs: int | None = None,
    ) -> None:
        self.base_estimator = base_estimator
        self.taxonomy = taxonomy
        self.decoder = decoder
        self.decoder_options = decoder_options
        self.n_jobs = n_jobs

    def _fit_inputs(self, X: Any, y: Any, sample_weight: Any) -> tuple[Any, Any, np.ndarray, np.ndarray | None]:
        """``(base estimator, X, target node indices, sample weights)`` for ``fit``, samples of weight 0
        left out; sets the label attributes; refuses a DAG."""
        base = self._base()
        X = self._checked_X(X, base, reset=True)
        target = self._fit_labels(y)
        n_samples = _num_samples(X)
        if len(target) != n_samples:
            raise ValueError(
                f"X and y: found {n_samples} samples in X but {len(target)} labels in y; give one label per sample."
            )
        sample_weight = self._checked_weights(sample_weight, X, base)
        X, target, sample_weight = self._without_zero_weights(X, target, sample_weight)
        if not self.taxonomy_.is_tree:
            raise TaxonomyError(
                f"taxonomy: {type(self).__name__} needs a tree (each node one parent, so that its "
                "marginal is a product down one path). Use HierarchicalHeadClassifier(head='sigmoid') for a DAG."
            )
        return base, X, target, sample_weight

    def _predict_inputs(self, X: Any) -> Any:
        check_is_fitted(self)
        return self._checked_X(X, self._base(), reset=False)

    def _checked_X(self, X: Any, base: Any, *, reset: bool) -> Any:
        """The default base estimator (LogisticRegression) gets X checked here as a numeric 2-D array (CSR
        if sparse). A given base estimator gets X as it came (a DataFrame, a list of texts, ...), so that a
        Pipeline doing its own preprocessing works; it checks X itself. Both record (and at predict check)
        ``n_features_in_`` and ``feature_names_in_`` where X has them."""
        if self.base_estimator is None:
            return validate_data(self, X, reset=reset, **self._input_options(base))
        X = validate_data(self, X, reset=reset, skip_check_array=True)
        if sp.issparse(X) and X.format not in ("csr", "csc"):
            X = X.tocsr()  # rows are selected per node: COO and others have no row indexing
        elif isinstance(X, (list, tuple)):
            # rows of numbers: converted once here, not again by every node's classifier in fit and predict
            # (4x slower predict on 50k rows); a list of texts or other objects goes on as it came
            try:
                arr = np.asarray(X)
            except (ValueError, TypeError):  # ragged rows, objects numpy cannot hold
                return X
            if arr.ndim == 2 and arr.dtype.kind in "biuf":
                X = arr
        elif not (sp.issparse(X) or hasattr(X, "shape")) and hasattr(X, "__array__"):
            X = np.asarray(X)  # an array-like without row indexing; its dtype is kept (strings stay strings)
        return X

    def _base(self) -> Any:
        base = LogisticRegression() if self.base_estimator is None else self.base_estimator
        if not hasattr(base, "fit") or not hasattr(base, "get_params"):
            raise ValueError(
                f"base_estimator: expected an unfitted scikit-learn classifier, got {type(base).__name__}. "
                "Pass e.g. LogisticRegression() or RandomForestClassifier()."
            )
        if not hasattr(base, "predict_proba"):
            raise ValueError(
                f"base_estimator: {type(base).__name__} has no predict_proba, which the node marginals need. "
                "Use SVC(probability=True), CalibratedClassifierCV(LinearSVC()), or another probabilistic classifier."
            )
        return base

    @staticmethod
    def _input_options(base: Any) -> dict[str, Any]:
        tags = get_tags(base)
        return {
            "accept_sparse": "csr" if tags.input_tags.sparse else False,
            "ensure_all_finite": "allow-nan" if tags.input_tags.allow_nan else True,
        }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        base_tags = get_tags(LogisticRegression() if self.base_estimator is None else self.base_estimator)
        tags.input_tags.sparse = base_tags.input_tags.sparse
        tags.input_tags.allow_nan = base_tags.input_tags.allow_nan
        return tags

    @staticmethod
    def _checked_weights(sample_weight: Any, X: Any, base: Any) -> np.ndarray | None:
        if sample_weight is None:
            return None
        sample_weight = _checked_sample_weight(sample_weight, X)
        if not has_fit_parameter(base, "sample_weight") and not _routes_fit_params(base):
            raise ValueError(
                f"sample_weight: the base estimator {type(base).__name__} does not take sample_weight in "
                "fit. Pick one that does (LogisticRegression, RandomForestClassifier, ...) or pass None."
            )
        return sample_weight

    @staticmethod
    def _without_zero_weights(X: Any, target: np.ndarray, sample_weight: np.ndarray | None) -> tuple[Any, ...]:
        """A sample of weight 0 is a removed sample (scikit-learn's reading): leave it out before the
        samples are routed, so that a node whose samples all weigh 0 counts as unseen instead of
        handing its classifier weights that sum to 0."""
        if sample_weight is None or (sample_weight > 0).all():
            return X, target, sample_weight
        keep = np.flatnonzero(sample_weight > 0)
        return _safe_indexing(X, keep), target[keep], sample_weight[keep]


class LocalClassifierPerParentNode(_LocalEstimators, HierarchicalClassifierBase):
    """One classifier per inner node of a taxonomy, chained into node marginals.

    Each inner (parent) node ``p`` gets its own clone of ``base_estimator``,
    trained only on the samples whose label lies *strictly below* ``p``, to
    predict which child of ``p`` their path goes through: the masked per-node
    loss of the PyTorch side, done classically. A sample labelled at an inner
    node ``q`` (a partial label) trains the classifiers above ``q`` and none at
    or below it.

    Node marginals are the product of the conditionals down the path::

        P(node) = prod over the nodes v on the path below the root of P(v | parent(v))

    where ``P(v | p)`` is column ``v`` of ``estimators_[p].predict_proba``. A
    parent whose classifier saw a single child at fit gives that child
    conditional 1 (and its other children 0); a parent with no training sample
    below it gives its children the uniform conditional ``1 / num_children``;
    children a classifier never saw get 0. Each sample's output depends on that
    sample alone (no batch statistics, no top-down routing of subsets).

    ``predict`` decodes the marginals with :func:`hiercls.decoding.decode`
    (``decoder`` rule, ``decoder_options`` as keyword arguments), so it can stop
    at an inner node (``decoder="threshold"``). ``score`` is the hierarchical F1
    (micro) of :func:`hiercls.metrics.hierarchical_f1`.

    Labels ``y`` may be flat class labels (a taxonomy ``root -> classes`` is
    inferred), label paths (``"a/b/c"`` strings, tuples, or a 2-D array padded
    with ``""``; the taxonomy is inferred from them), or node names of a given
    ``taxonomy`` (any node: partial labels). ``predict`` answers in the same format.

    Args:
        base_estimator: an unfitted scikit-learn classifier with ``predict_proba``,
            cloned for every inner node. None means ``LogisticRegression()``, and ``X`` is then
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
        classes_ (np.ndarray): the distinct labels seen at fit, sorted, in ``y``'s format
            (scikit-learn's convention; ``predict`` may also return other nodes, e.g. inner
            nodes with ``decoder="threshold"``).
        estimators_ (dict[str, object | None]): inner node name -> its fitted classifier,
            or None where no classifier was needed (fewer than two children seen).
        n_samples_per_parent_ (dict[str, int]): inner node name -> number of training samples.
        n_features_in_ (int): number of features seen at fit.
        feature_names_in_ (np.ndarray): feature names, when ``X`` had string column names.

    Raises:
        TaxonomyError: (at fit) the taxonomy is a DAG.
        ValueError: (at fit) the base estimator has no ``predict_proba``, a
            parameter is invalid, or ``y`` does not fit the taxonomy.

    Examples:
        >>> import numpy as np
        >>> from hiercls.sklearn import LocalClassifierPerParentNode
        >>> rng = np.random.default_rng(0)
        >>> y = np.array(["animal/cat", "animal/dog", "plant"] * 20)
        >>> X = rng.normal(size=(60, 3)) + (np.arange(60) % 3)[:, None]
        >>> clf = LocalClassifierPerParentNode().fit(X, y)
        >>> clf.nodes_.tolist()
        ['root', 'animal', 'plant', 'cat', 'dog']
        >>> clf.predict_marginals(X[:2]).shape  # every node
        (2, 5)
        >>> clf.predict_proba(X[:2]).shape  # the columns of classes_: cat, dog, plant
        (2, 3)
        >>> clf.predict(X[:3]).tolist()
        ['animal/cat', 'animal/dog', 'plant']
    """

    # ---------------------------------------------------------------- fit
    @_fit_or_forget
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LocalClassifierPerParentNode:
        """Fit one classifier per inner node.

        Args:
            X: features, shape ``(n_samples, n_features)`` (sparse if the base estimator takes it).
            y: labels, shape ``(n_samples,)`` (or ``(n_samples, depth)`` label paths).
            sample_weight: per-sample weights ``(n_samples,)``, all >= 0, or None; each inner node's classifier
                gets the weights of the samples it is trained on (the base estimator's ``fit`` must
                take ``sample_weight``).

        Returns:
            self.

        Raises:
            ValueError: ``sample_weight`` has a negative weight, or is given but the base estimator's
                ``fit`` does not take it.
        """
        base, X, target, sample_weight = self._fit_inputs(X, y, sample_weight)
        tax = self.taxonomy_
        rows, parents, children = _parent_child_pairs(target, tax)
        num = tax.num_nodes
        counts = np.bincount(children, minlength=num)  # samples routed through each node (as a child)
        parent_of = tax.parent_index
        seen = counts > 0
        seen_children = np.bincount(parent_of[seen], minlength=num) if seen.any() else np.zeros(num, np.int64)
        n_children = np.diff(tax.children_ptr)
        inner = np.flatnonzero(n_children > 0)

        default = np.zeros(num, dtype=np.float64)
        default[0] = 1.0
        child = np.arange(1, num)
        p = parent_of[child]
        none_seen = seen_children[p] == 0
        default[child[none_seen]] = 1.0 / n_children[p[none_seen]]
        one_seen = seen_children[p] == 1
        default[child[one_seen]] = seen[child[one_seen]].astype(np.float64)

        order = np.argsort(parents, kind="stable")
        rows, parents, children = rows[order], parents[order], children[order]
        bounds = np.searchsorted(parents, np.stack([inner, inner + 1]))
        to_fit = [k for k, node in enumerate(inner) if seen_children[node] >= 2]

        def part(k: int) -> slice:
            return slice(bounds[0, k], bounds[1, k])

        names = tax.nodes
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_one)(
                clone(base),
                _safe_indexing(X, rows[part(k)]),
                children[part(k)],
                None if sample_weight is None else sample_weight[rows[part(k)]],
                f"the classifier of parent node {names[inner[k]]!r} (children "
                f"{_classes_text(names[c] for c in np.unique(children[part(k)]))})",
            )
            for k in to_fit
        )
        self.estimators_ = {names[node]: None for node in inner.tolist()}
        for k, est in zip(to_fit, fitted):
            self.estimators_[names[inner[k]]] = est
        sizes = (bounds[1] - bounds[0]).tolist()
        self.n_samples_per_parent_ = {names[node]: int(size) for node, size in zip(inner.tolist(), sizes)}
        self._default_conditional = default
        return self

    # ------------------------------------------------------------ predict
    def predict_marginals(self, X: Any) -> np.ndarray:
        """Node marginals ``P(node)``, float64 ``(n_samples, num_nodes)``, columns named by ``nodes_``.

        ``P(root) = 1``; the children of every node sum to that node (for
        children a classifier saw). Rows are not distributions over ``classes_``:
        each depth level sums to at most 1.

        Args:
            X: features, shape ``(n_samples, n_features)``.
        """
        X = self._predict_inputs(X)
        cond = np.repeat(self._default_conditional[None, :], _num_samples(X), axis=0)
        for name, est in self.estimators_.items():  # one call per fitted classifier
            if est is not None:
                cond[:, est.classes_] = _predict_one(est, X, f"the classifier of parent node {name!r}")
        return _marginals_from_conditionals(cond, self.taxonomy_)


def _routes_fit_params(estimator: Any) -> bool:
    """With metadata routing on, a meta-estimator whose ``fit`` takes ``**params`` (a Pipeline with
    ``set_fit_request(sample_weight=True)`` on a step) routes ``sample_weight`` itself, and refuses it
    itself where no step asked for it."""
    import inspect

    from sklearn import get_config

    if not get_config().get("enable_metadata_routing", False):
        return False
    try:
        params = inspect.signature(estimator.fit).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _fit_one(
    estimator: Any, X: Any, target: np.ndarray, sample_weight: np.ndarray | None = None, where: str = ""
) -> Any:
    """Fit one local classifier; its own error gets a note naming ``where`` (which node or level, its
    sample count and classes): "n_splits=5 greater than n_samples=3" named no node."""
    try:
        if sample_weight is None:
            return estimator.fit(X, target)
        return estimator.fit(X, target, sample_weight=sample_weight)
    except Exception as err:
        _note(err, f"while fitting {where} on {len(target)} samples")
        raise


def _predict_one(estimator: Any, X: Any, where: str) -> np.ndarray:
    """``estimator.predict_proba(X)``, its error noted with ``where`` (a KNN's n_neighbors > n_samples_fit
    surfaces only here)."""
    try:
        return estimator.predict_proba(X)
    except Exception as err:
        _note(err, f"while predicting with {where}")
        raise


def _note(err: BaseException, text: str) -> None:
    if hasattr(err, "add_note"):  # Python 3.11+; the error keeps its type for callers that catch it
        err.add_note(f"hiercls: {text}.")


def _classes_text(names: Any, limit: int = 5) -> str:
    names = [str(n) for n in names]
    return ", ".join(map(repr, names[:limit])) + (", ..." if len(names) > limit else "")


def _parent_child_pairs(target: np.ndarray, tax: Taxonomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (sample, parent, child) step of the samples' label paths, one level at a time.

    A sample labelled at depth ``d`` contributes the ``d`` steps of its path; a
    partial label (an inner node) contributes nothing below itself.
    """
    anc = tax.ancestor_table
    depth = tax.depth_index[target]
    rows, parents, children = [], [], []
    for k in range(tax.max_depth):  # one vectorised step per level
        sel = np.flatnonzero(depth > k)
        rows.append(sel)
        parents.append(anc[target[sel], k])
        children.append(anc[target[sel], k + 1])
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(rows), np.concatenate(parents), np.concatenate(children)


def _marginals_from_conditionals(cond: np.ndarray, tax: Taxonomy) -> np.ndarray:
    """P(node) = P(parent) * P(node | parent), one depth level at a time (trees); root = 1."""
    marg = cond.copy()
    marg[:, 0] = 1.0
    parent = tax.parent_index
    for level in tax.levels()[1:]:
        marg[:, level] *= marg[:, parent[level]]
    return marg
