"""What both scikit-learn estimators share: labels, decoding, scoring."""

from __future__ import annotations

import functools
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from hiercls.decoding import _OPTION_RULE, RULE_OPTIONS
from hiercls.sklearn._labels import LabelCodec, fit_codec
from hiercls.taxonomy import Taxonomy

DecoderRule = Literal["argmax_leaf", "top_down", "threshold", "crm", "hf_optimal"]
"""The estimators' ``decoder``: a rule of :func:`hiercls.decoding.decode`; ``"threshold"`` and ``"hf_optimal"``
may stop at an inner node, the others always predict a leaf."""
_DECODERS = ("argmax_leaf", "top_down", "threshold", "crm", "hf_optimal")
# rules that may stop at an inner node (the others always predict a leaf)
_INNER_NODE_RULES = ("threshold", "hf_optimal")
# fitted state that scikit-learn's trailing-underscore convention does not name
_PRIVATE_FIT_STATE = ("_codec", "_class_nodes", "_default_conditional", "_kept_leaves")

_Fit = TypeVar("_Fit", bound=Callable[..., Any])


def _fit_or_forget(fit: _Fit) -> _Fit:
    """Wrap a ``fit``: if it raises (a refused parameter or sample weight, a DAG, the base estimator's own
    error, an interrupt), every fitted attribute is removed, so the estimator is unfitted and ``predict``
    raises scikit-learn's NotFittedError, instead of mixing the new labels with the old model."""

    @functools.wraps(fit)  # keeps the signature that metadata routing and has_fit_parameter read
    def wrapper(self: HierarchicalClassifierBase, *args: Any, **kwargs: Any) -> Any:
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self._forget_fit()
            raise

    return wrapper  # type: ignore[return-value]


def _checked_sample_weight(sample_weight: Any, X: Any, **options: Any) -> np.ndarray:
    """scikit-learn's ``_check_sample_weight`` (shape, finite values, not all 0), and no negative weight.

    A weight is a count of repeats (0: a removed sample), so a negative one has no meaning; scikit-learn's
    own refusal names neither the samples nor the fix, and its classifiers differ (some fit, some raise).

    Raises:
        ValueError: a weight is negative (the message gives how many and the first one), or
            scikit-learn's check fails.
    """
    sample_weight = _check_sample_weight(sample_weight, X, **options)
    negative = np.flatnonzero(sample_weight < 0)
    if negative.size:
        first = int(negative[0])
        raise ValueError(
            f"sample_weight: expected weights >= 0 (a weight counts repeats of a sample), got "
            f"{negative.size} negative of {sample_weight.shape[0]} (the first: sample_weight[{first}] = "
            f"{sample_weight[first].item()!r}). Give 0 to leave a sample out, or fix the weights' sign."
        )
    return sample_weight


class HierarchicalClassifierBase(ClassifierMixin, BaseEstimator, metaclass=ABCMeta):
    """Base of the hierarchical scikit-learn estimators (not public).

    Subclasses set ``self._codec``, ``taxonomy_``, ``nodes_``, ``classes_`` via
    :meth:`_fit_labels` and implement :meth:`predict_marginals`.
    """

    decoder: str
    decoder_options: dict[str, Any] | None
    taxonomy: Taxonomy | None
    _model_attribute: str  # the fitted model, set last by fit ("estimators_", "module_")

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted when both the labels and the model are: ``fit`` sets the model last and removes
        everything when it fails, so a half-done fit never counts as fitted."""
        return hasattr(self, "_codec") and hasattr(self, self._model_attribute)

    def _forget_fit(self) -> None:
        """Remove every fitted attribute (scikit-learn's ``name_`` ones and the private fitted state)."""
        for attr in list(vars(self)):
            if (attr.endswith("_") and not attr.startswith("__")) or attr in _PRIVATE_FIT_STATE:
                delattr(self, attr)

    # ------------------------------------------------------------ fit-time
    def _fit_labels(self, y: Any) -> np.ndarray:
        """Read ``y`` (inferring the taxonomy if needed); set the label attributes; return node indices."""
        self._check_decoder()
        codec, target = fit_codec(y, self.taxonomy)
        self._check_decoder_labels(codec)
        self._check_decoder_on(codec.taxonomy)
        self._codec = codec
        self.taxonomy_ = codec.taxonomy
        self.nodes_ = np.asarray(codec.taxonomy.nodes, dtype=object)
        self.classes_ = codec.classes(target)
        # node index of each entry of classes_ (classes_ is the sorted labels of the distinct target nodes)
        nodes = np.unique(target)
        self._class_nodes = nodes[np.argsort(codec.decode(nodes), kind="stable")]
        return target

    def _check_decoder(self) -> None:
        if self.decoder not in _DECODERS:
            raise ValueError(
                f"decoder: expected one of {', '.join(map(repr, _DECODERS))}, got {self.decoder!r}. "
                "See hiercls.decoding.decode for what each rule does."
            )
        if self.decoder_options is not None and not isinstance(self.decoder_options, dict):
            raise ValueError(
                f"decoder_options: expected a dict of keyword arguments for hiercls.decoding.decode "
                f"(e.g. {{'threshold': 0.6}}) or None, got {type(self.decoder_options).__name__}."
            )
        self._decoder_kwargs(warn=False)  # a misspelt option is found at fit, not at the first predict

    def _decoder_kwargs(self, warn: bool = True) -> dict[str, Any]:
        """The ``decoder_options`` that ``decoder`` reads. ``None`` values count as not given; a name that
        is no rule's option is an error, another rule's option a warning (``decoder`` and ``decoder_options``
        are separate parameters, so a search over ``decoder`` meets them)."""
        given = {k: v for k, v in (self.decoder_options or {}).items() if v is not None}
        known = sorted(_OPTION_RULE)
        unknown = sorted(set(given) - set(known), key=str)
        if unknown:
            raise ValueError(
                f"decoder_options: expected options of hiercls.decoding.decode ({', '.join(map(repr, known))}, one "
                f"rule each: see hiercls.decoding.RULE_OPTIONS), got {', '.join(map(repr, unknown))}. "
                "Check the spelling."
            )
        allowed = RULE_OPTIONS[self.decoder]
        ignored = sorted(set(given) - set(allowed))
        if ignored and warn:  # (once per predict call: said where it has no effect)
            warnings.warn(
                f"decoder_options: decoder={self.decoder!r} ignores {', '.join(map(repr, ignored))} (read by "
                f"decoder={', '.join(repr(_OPTION_RULE[name]) for name in ignored)}); it has no effect.",
                UserWarning,
                stacklevel=4,  # the caller of predict (or score)
            )
        return {k: v for k, v in given.items() if k in allowed}

    def _check_decoder_on(self, taxonomy: Taxonomy) -> None:
        """``decoder`` and the values of ``decoder_options`` against the fitted taxonomy, by decoding one
        made-up sample (sure of the first leaf): a threshold of 1.5, a negative beta or a tree-only rule on a
        DAG is refused at fit, in terms of these parameters, not at the first predict after training."""
        from hiercls.decoding import decode

        probs = np.zeros((1, taxonomy.num_nodes))
        leaf = int(taxonomy.leaf_index[0])
        probs[0, taxonomy.ancestors_index[taxonomy.ancestors_ptr[leaf] : taxonomy.ancestors_ptr[leaf + 1]]] = 1.0
        try:
            decode(probs, taxonomy, self.decoder, **self._decoder_kwargs(warn=False))
        except (ValueError, TypeError) as err:  # TaxonomyError and UnknownNodeError are ValueErrors
            raise type(err)(
                f"decoder={self.decoder!r}, decoder_options={self.decoder_options!r}: "
                + str(err).replace("rule=", "decoder=")
            ) from err

    def _check_decoder_labels(self, codec: LabelCodec) -> None:
        if not codec.root_has_label and self.decoder in _INNER_NODE_RULES:
            raise ValueError(
                f"decoder={self.decoder!r} may predict the root, which has no label of y's numeric type "
                f"({codec.node_labels.dtype}). Give y as strings (the root is then named "
                f"{codec.taxonomy.root!r}), pass a taxonomy, or use a leaf decoder such as 'argmax_leaf'."
            )

    # ---------------------------------------------------------- prediction
    @abstractmethod
    def predict_marginals(self, X: Any) -> np.ndarray:
        """Node marginals ``(n_samples, num_nodes)``; columns named by ``nodes_``."""

    def predict_proba(self, X: Any) -> np.ndarray:
        """``P(class)`` for each entry of ``classes_``, float64 ``(n_samples, n_classes)``.

        Column ``j`` is the node marginal of ``classes_[j]``, so scikit-learn's
        tools (``roc_auc``, ``log_loss``, soft voting, calibration) read the
        columns they expect. When every class is a leaf (the usual case: flat
        labels, or paths that all end at a leaf) the rows sum to 1, except for
        a sigmoid head, whose independent sigmoids need not; a leaf of a given
        ``taxonomy`` absent from ``y`` is in no column and gets marginal 0
        (it takes no mass from ``classes_``). When ``y``
        had partial labels, ``classes_`` holds inner nodes too, and such a
        column includes the mass of its descendants, so the rows sum to more
        than 1 (``roc_auc_ovr`` and ``log_loss`` then misread them). :meth:`predict_marginals` gives every node, the root included:
        the input of :func:`hiercls.decoding.decode` and the probability metrics.

        Args:
            X: features, shape ``(n_samples, n_features)``.
        """
        check_is_fitted(self)
        parts = [self.predict_marginals(rows)[:, self._class_nodes] for rows in self._row_chunks(X)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _row_chunks(self, X: Any) -> list[Any]:
        """``X`` in row blocks whose node marginals (and the few arrays of that size that computing them
        takes) fit in scikit-learn's ``working_memory`` (1 GiB by default): ``predict`` at 100,000 samples
        on a 16,000-node taxonomy needed tens of GiB at once. One block (``X`` itself) when it fits."""
        from sklearn import get_config
        from sklearn.utils import _safe_indexing, gen_batches
        from sklearn.utils.validation import _num_samples

        try:
            n = _num_samples(X)
        except TypeError:  # not an array: predict_marginals says what it expected
            return [X]
        per_row = 8 * 6 * max(1, self.taxonomy_.num_nodes)  # float64, about six (n, num_nodes) arrays
        rows = max(1, int(get_config()["working_memory"] * 2**20 // per_row))
        if n <= rows:
            return [X]
        return [_safe_indexing(X, batch) for batch in gen_batches(n, rows)]

    def _predict_nodes(self, X: Any) -> np.ndarray:
        """Decoded node indices, int64 ``(n_samples,)``, block by block (:meth:`_row_chunks`)."""
        from hiercls.decoding import decode

        options = self._decoder_kwargs()  # (its warning once per call)
        parts = [
            np.asarray(decode(self.predict_marginals(rows), self.taxonomy_, self.decoder, **options), dtype=np.int64)
            for rows in self._row_chunks(X)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, decoded from the node marginals with the ``decoder`` rule.

        Args:
            X: features, shape ``(n_samples, n_features)``.

        Returns:
            ``(n_samples,)`` labels in the format of the ``y`` given to ``fit``:
            class labels, node names, or label paths (as ``"a/b/c"`` strings).
            A non-mandatory-leaf rule (``"threshold"``, ``"hf_optimal"``) may
            return an inner node: a coarser but surer answer. A node that no
            training label reaches (a leaf of a given ``taxonomy`` absent from
            ``y``) has marginal 0, so when every class is a leaf the
            ``"argmax_leaf"`` and ``"top_down"`` rules return one of ``classes_``.
        """
        check_is_fitted(self)
        self._check_decoder()  # decoder may have been changed by set_params after fit
        self._check_decoder_labels(self._codec)
        self._check_decoder_on(self.taxonomy_)
        return self._codec.decode(self._predict_nodes(X))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Hierarchical F1 (micro) of ``predict(X)`` against ``y``.

        The set-based hierarchical F1 of Kiritchenko et al. (2006): each label
        stands for itself and its ancestors, the root excluded; micro
        averaging sums the intersections and the set sizes over samples,
        ``hF1 = 2 hP hR / (hP + hR)`` with ``hP = sum |A(pred) & A(true)| / sum |A(pred)|``
        and ``hR = sum |A(pred) & A(true)| / sum |A(true)|``. Computed by
        :func:`hiercls.metrics.hierarchical_f1`, so it equals the PyTorch side.

        Args:
            X: features, shape ``(n_samples, n_features)``.
            y: true labels (class labels, node names or label paths; partial labels allowed).
            sample_weight: not supported; must be None.

        Returns:
            The hierarchical F1 in ``[0, 1]`` (higher is better).

        A true class that was not seen at fit counts as a miss when the taxonomy was
        inferred from flat labels (``root -> classes``, as scikit-learn's accuracy
        counts it, so a rare class missing from a training fold does not fail the
        fold); an unknown node name or label path raises.

        Raises:
            ValueError: ``sample_weight`` is given, or ``y`` has unknown node names or label paths.
        """
        from hiercls.sklearn._scoring import hierarchical_f1_scorer

        check_is_fitted(self)
        if sample_weight is not None:
            raise ValueError("sample_weight: the hierarchical metrics take no sample weights; pass None.")
        return float(hierarchical_f1_scorer(self, X, y))

    def _scoring_indices(self, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, Taxonomy]:
        """True and predicted labels -> node indices, and the taxonomy to score them on (``taxonomy_``, or
        a copy with the unseen true classes of flat labels added as misses)."""
        check_is_fitted(self)
        return self._codec.encode_scored(y_true, y_pred)

    def _encode_labels(self, y: Any, *, name: str = "y") -> np.ndarray:
        """Labels (any format this estimator reads) -> int64 node indices of ``taxonomy_``."""
        check_is_fitted(self)
        return self._codec.encode(y, name=name)
