"""Scorers: the library's hierarchical metrics as ``scoring=`` objects for model selection."""

from __future__ import annotations

from typing import Any, Literal

from sklearn.utils.validation import check_is_fitted

ScorerMetric = Literal[
    "hierarchical_f1",
    "hierarchical_precision",
    "hierarchical_recall",
    "hierarchical_fbeta",
    "accuracy",
    "mistake_severity",
    "lca_f1",
    "lca_precision",
    "lca_recall",
    "correct_rate",
]
"""The metrics :func:`make_hierarchical_scorer` scores with: those of :mod:`hiercls.metrics` by name
(``mistake_severity`` negated, as scikit-learn maximises every score)."""
# metric -> greater is better (mistake severity is a distance: lower is better, negated as "neg_")
_METRICS: dict[str, bool] = {
    "hierarchical_f1": True,
    "hierarchical_precision": True,
    "hierarchical_recall": True,
    "hierarchical_fbeta": True,
    "accuracy": True,
    "mistake_severity": False,
    "lca_f1": True,
    "lca_precision": True,
    "lca_recall": True,
    "correct_rate": True,
}


class HierarchicalScorer:
    """A scikit-learn scorer ``scorer(estimator, X, y) -> float`` over a :mod:`hiercls.metrics` function.

    Calls ``estimator.predict(X)``, maps both the predictions and ``y`` to node
    indices of the fitted hiercls estimator's ``taxonomy_`` (found at the end of
    a ``Pipeline`` too), and evaluates ``hiercls.metrics.<metric>(y_true, y_pred,
    taxonomy, **kwargs)``: the same numbers as the PyTorch side. When the
    taxonomy was inferred from flat labels (``root -> classes``), a true class
    not seen at fit (e.g. a rare class missing from a training fold) counts as
    a miss, as in scikit-learn's accuracy, instead of failing the fold; with
    label paths or a given taxonomy, an unknown label raises. Metrics where
    lower is better (``mistake_severity``) are negated, as scikit-learn's
    ``neg_*`` scorers are, so that model selection always maximises.

    Build one with :func:`make_hierarchical_scorer`.

    Examples:
        >>> import numpy as np
        >>> from hiercls.sklearn import LocalClassifierPerParentNode, make_hierarchical_scorer
        >>> X = np.array([[0.0], [0.1], [5.0], [5.1], [9.0], [9.1]])
        >>> y = ["r/a/a1", "r/a/a1", "r/a/a2", "r/a/a2", "r/b", "r/b"]
        >>> clf = LocalClassifierPerParentNode().fit(X, y)
        >>> scorer = make_hierarchical_scorer("hierarchical_f1")
        >>> 0.0 <= scorer(clf, X, y) <= 1.0
        True
    """

    def __init__(self, metric: str, sign: int, kwargs: dict[str, Any]) -> None:
        self.metric = metric
        self.sign = sign
        self.kwargs = kwargs

    def __call__(self, estimator: Any, X: Any, y_true: Any, sample_weight: Any = None) -> float:
        """Score a fitted estimator (or a Pipeline ending in one) on ``(X, y_true)``.

        Raises:
            ValueError: ``sample_weight`` is given, or ``y_true`` has labels the estimator does not know
                (an unseen flat class counts as a miss instead; see the class docstring).
            TypeError: the estimator is not a fitted hiercls estimator (nor a Pipeline ending in one).
        """
        import hiercls.metrics

        if sample_weight is not None:
            raise ValueError("sample_weight: the hierarchical metrics take no sample weights; pass None.")
        final = _final_estimator(estimator)
        y_pred = estimator.predict(X)
        true_idx, pred_idx, taxonomy = final._scoring_indices(y_true, y_pred)
        value = getattr(hiercls.metrics, self.metric)(true_idx, pred_idx, taxonomy, **self.kwargs)
        return self.sign * float(value)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"make_hierarchical_scorer({self.metric!r}{args})"


def make_hierarchical_scorer(metric: ScorerMetric = "hierarchical_f1", **kwargs: Any) -> HierarchicalScorer:
    """A scorer for ``GridSearchCV(scoring=...)``, ``cross_val_score`` and friends.

    Args:
        metric: the name of a :mod:`hiercls.metrics` function that takes
            ``(y_true, y_pred, taxonomy, **kwargs)`` and returns a float.
        **kwargs: passed to the metric (e.g. ``average="macro"``, ``beta=2.0``).

    Returns:
        A callable ``scorer(estimator, X, y) -> float``; ``mistake_severity``
        is negated (greater is better for every scorer).

    Raises:
        ValueError: ``metric`` is not one of the supported names, or a keyword is not one of its options,
            or its value is one the metric refuses (found here, not as a NaN score in every fold).

    Examples:
        >>> from hiercls.sklearn import make_hierarchical_scorer
        >>> make_hierarchical_scorer("hierarchical_fbeta", beta=2.0)
        make_hierarchical_scorer('hierarchical_fbeta', beta=2.0)
    """
    if metric not in _METRICS:
        raise ValueError(
            f"metric: expected one of {', '.join(map(repr, _METRICS))}, got {metric!r}. "
            "For another metric, write a callable scorer(estimator, X, y)."
        )
    import inspect

    import hiercls.metrics

    params = inspect.signature(getattr(hiercls.metrics, metric)).parameters
    options = [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:  # found here, not as a NaN score in every fold of a search
        raise ValueError(
            f"make_hierarchical_scorer: {metric} takes no option {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join(map(repr, options)) or 'none'}."
        )
    # the values too (average="macor"): one call on a two-leaf tree raises the metric's own message here
    from hiercls.taxonomy import Taxonomy

    probe = Taxonomy.from_paths(["r/a", "r/b"])
    try:
        getattr(hiercls.metrics, metric)([1, 2], [1, 1], probe, **kwargs)
    except (ValueError, TypeError) as err:
        raise type(err)(f"make_hierarchical_scorer({metric!r}): {err}") from err
    return HierarchicalScorer(metric, 1 if _METRICS[metric] else -1, dict(kwargs))


def _final_estimator(estimator: Any) -> Any:
    """The hiercls estimator at the end of ``estimator`` (itself, a Pipeline's last step, a search's best)."""
    seen = estimator
    for _ in range(16):  # nested pipelines
        if hasattr(seen, "_encode_labels"):
            check_is_fitted(seen)  # scikit-learn's NotFittedError, as predict raises
            return seen
        nxt = getattr(seen, "_final_estimator", None) or getattr(seen, "best_estimator_", None)
        if nxt is None or nxt is seen:
            break
        seen = nxt
    raise TypeError(
        f"estimator: the hierarchical scorers need a fitted hiercls.sklearn estimator (or a Pipeline ending in "
        f"one), got {type(estimator).__name__}. Fit it first, or use scikit-learn's own scorers."
    )


hierarchical_f1_scorer = make_hierarchical_scorer("hierarchical_f1")
"""Hierarchical F1 (micro), for ``scoring=``."""
hierarchical_precision_scorer = make_hierarchical_scorer("hierarchical_precision")
"""Hierarchical precision (micro), for ``scoring=``."""
hierarchical_recall_scorer = make_hierarchical_scorer("hierarchical_recall")
"""Hierarchical recall (micro), for ``scoring=``."""
neg_mistake_severity_scorer = make_hierarchical_scorer("mistake_severity")
"""Minus the mean LCA distance of the mistakes, for ``scoring=`` (greater is better)."""
lca_f1_scorer = make_hierarchical_scorer("lca_f1")
"""LCA F1, for ``scoring=``."""
