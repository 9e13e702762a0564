"""Hierarchical metrics as pure functions: ``metric(y_true, y_pred, taxonomy, ...)``.

Every function takes node names or node indices (a sequence, a numpy array or
a torch tensor), validates them once at the door, and then works on int64
arrays: the lowest common ancestor (LCA) of each (truth, prediction) pair is
computed once with the taxonomy's O(1) Euler-tour query (trees) or a sorted
merge of the ancestor sets (DAGs), and every number below is a vectorised sum
over it. Nothing of size ``num_nodes x num_nodes`` is built.

Notation: ``A(n)`` is the set of node ``n`` and its ancestors, **root
excluded** (so ``|A(n)| = depth(n)`` in a tree); ``t_i`` and ``p_i`` are the
true and predicted nodes of sample ``i``; ``lca`` is the lowest common
ancestor (in a DAG: the deepest common ancestor, except in the LCA
precision/recall, which take the most informative one, as ``operating_curve`` does).

- hierarchical precision / recall / F-beta (Kiritchenko et al. 2006), micro:
  ``hP = sum_i |A(t_i) & A(p_i)| / sum_i |A(p_i)|``,
  ``hR = sum_i |A(t_i) & A(p_i)| / sum_i |A(t_i)|``,
  ``hF = (1 + beta^2) hP hR / (beta^2 hP + hR)``; macro averages the
  per-sample scores (HiClass' convention). In a tree
  ``|A(t) & A(p)| = depth(lca(t, p))``.
- mistake severity (Bertinetto et al. 2020): mean LCA distance over the
  misclassified samples (see :func:`lca_distance` for the two distances).
- LCA precision / recall (Valmadre 2022): ``c(lca) / c(p)`` and
  ``c(lca) / c(t)`` averaged over samples, with ``c`` the depth or the
  information ``log(num_leaves / leaves_under(n))``.
- correct rate: the fraction of predictions that are the truth or one of its
  ancestors (non-mandatory predictions, Valmadre 2022).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, Union

import numpy as np

from hiercls.errors import TaxonomyError, UnknownNodeError
from hiercls.taxonomy import LabelsLike, Taxonomy
from hiercls.taxonomy import _gather_csr as _gather_rows

__all__ = [
    "Average",
    "Distance",
    "Measure",
    "accuracy",
    "correct_rate",
    "distance_at_k",
    "hierarchical_f1",
    "hierarchical_fbeta",
    "hierarchical_precision",
    "hierarchical_precision_recall_fscore",
    "hierarchical_recall",
    "inconsistency_rate",
    "lca_distance",
    "lca_f1",
    "lca_precision",
    "lca_recall",
    "level_accuracy",
    "level_confusion_matrix",
    "level_precision_recall_f1",
    "mistake_severity",
    "node_average_precision",
    "node_recall",
    "summary",
]

Average = Literal["micro", "macro"]
"""``"micro"``: pool the counts of all samples, then divide; ``"macro"``: score each sample, then average."""
Distance = Literal["auto", "height", "path"]
"""Tree distance of a mistake: the ``"height"`` of the lowest common ancestor, the ``"path"`` length
between the two nodes, or ``"auto"``: height for trees whose leaves all share one depth, else path."""
Measure = Literal["info", "depth"]
"""How specific a node ``n`` is, in the LCA metrics and ``operating_curve``: ``"info"``, the information
``log(num_leaves / leaves_under(n))``, or ``"depth"``."""
ZeroDivision = Union[float, int]
"""The score given where a ratio has nothing to divide by (a sample with no predicted or no true node
beyond the root, a class without samples): a number, usually 0 or 1, or ``math.nan`` to leave it out of a mean."""

_AVERAGES = ("micro", "macro")
_DISTANCES = ("auto", "height", "path")
_MEASURES = ("info", "depth")


# --------------------------------------------------------------- validation
def _check_taxonomy(taxonomy: Any, order: str | None = None) -> Taxonomy:
    """``taxonomy`` if it is one; else a TypeError, with a hint at the argument order when labels or scores
    came in its place (``order``: the caller's own order, e.g. ``"(taxonomy, values) for plot_taxonomy"``)."""
    if not isinstance(taxonomy, Taxonomy):
        hint = (
            f"the taxonomy comes first, {order}."
            if order
            else "the taxonomy comes after the labels or "
            "scores, (y_true, y_pred, taxonomy) for most metrics, (probs, y_true, taxonomy) for "
            "node_average_precision, (probs, taxonomy, ...) for the decoders, (probs, target, taxonomy) for "
            "operating_curve."
        )
        raise TypeError(
            f"taxonomy: expected a hiercls.Taxonomy, got {type(taxonomy).__name__}. "
            "Build one with Taxonomy.from_edges / from_paths / from_dict"
            + (f"; if you passed one, check the order of the arguments: {hint}" if _is_array_like(taxonomy) else ".")
        )
    return taxonomy


def _is_array_like(x: Any) -> bool:
    """Whether ``x`` looks like labels or scores (a tensor, an array, a list): passed where a taxonomy goes."""
    return isinstance(x, (np.ndarray, list, tuple)) or type(x).__name__ == "Tensor"


def _encode(labels: LabelsLike, taxonomy: Taxonomy, name: str, ndim: int = 1, allow_empty: bool = False) -> np.ndarray:
    """Names or indices -> int64 node indices, with errors that name the argument."""
    if labels is None:
        raise ValueError(f"{name}: expected node names or node indices, got None.")
    try:
        out = taxonomy.encode(labels)
    except UnknownNodeError as err:
        message = str(err.args[0]) if err.args else str(err)
        if message.startswith("labels["):  # one label by position: y_true[3]
            raise UnknownNodeError(name + message.removeprefix("labels")) from None
        for prefix in ("labels: ", "node: "):  # encode's own argument names: say the caller's instead
            message = message.removeprefix(prefix)
        raise UnknownNodeError(f"{name}: {message}") from None
    except ValueError as err:  # numpy on a ragged list: "inhomogeneous shape"
        want = (
            "one node per sample (a flat list, a 1-D array or tensor)"
            if ndim == 1
            else "k nodes per sample, the same k for every sample (a (num_samples, k) array or tensor)"
        )
        raise ValueError(f"{name}: expected {want}, but could not read it as an array ({err}).") from None
    if out.ndim != ndim:
        shape = "(num_samples,)" if ndim == 1 else "(num_samples, k)"
        hint = ""
        if ndim == 1 and out.ndim == 2:
            hint = (
                " For a column or a row vector, pass y.ravel()"
                if 1 in out.shape
                else " For a stack of batches of one node per sample, pass y.ravel()"
            )
            # the top-k hint is for predictions only: a 2-D y_true is never top-k (distance_at_k included)
            hint += "; for top-k predictions, use distance_at_k or DistanceAtK." if name in ("y_pred", "preds") else "."
        elif out.ndim == 0:  # a lone name or index
            hint = " For one sample, wrap it in a list: [y]."
        raise ValueError(f"{name}: expected a {ndim}-D array of shape {shape}, got shape {tuple(out.shape)}.{hint}")
    if out.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: give at least one sample.")
    return out


def _encode_pair(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    names: tuple[str, str] = ("y_true", "y_pred"),
    allow_empty: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    _check_taxonomy(taxonomy)
    t = _encode(y_true, taxonomy, names[0], allow_empty=allow_empty)
    p = _encode(y_pred, taxonomy, names[1], allow_empty=allow_empty)
    if t.shape != p.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same length, got {t.shape[0]} and {p.shape[0]}: "
            "give one prediction per sample."
        )
    return t, p


def _check_option(value: Any, name: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}.")
    return value


def _scalar(value: Any) -> Any:
    """A 0-d torch tensor or numpy array as its Python number (``.item()``); anything else unchanged, so that
    the checks below take ``torch.tensor(2.0)`` wherever they take ``2.0`` (a bool stays a bool and is refused)."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return value.item()
    return value


def _check_zero_division(zero_division: Any) -> float:
    zero_division = _scalar(zero_division)
    if isinstance(zero_division, bool) or not isinstance(zero_division, (int, float, np.integer, np.floating)):
        raise ValueError(f"zero_division: expected a number such as 0.0, 1.0 or float('nan'), got {zero_division!r}.")
    return float(zero_division)


def _check_beta(beta: Any) -> float:
    beta = _scalar(beta)
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) or not 0 < beta < math.inf:
        raise ValueError(f"beta: expected a positive finite number (1.0 gives F1), got {beta!r}.")
    return float(beta)


def _require_tree(taxonomy: Taxonomy, what: str) -> None:
    if not taxonomy.is_tree:
        raise TaxonomyError(
            f"{what} needs a tree (one node per depth on each path), but this taxonomy is a DAG. On a DAG, use "
            "the set-based hierarchical metrics, mistake severity (path distance) or the LCA metrics."
        )


# ---------------------------------------------------------------- the core
class _Pairs(NamedTuple):
    """Per-sample statistics of (truth, prediction) pairs, all int64 arrays ``(B,)``."""

    lca: np.ndarray  # lowest (DAG: deepest) common ancestor
    inter: np.ndarray  # |A(t) & A(p)|, root excluded
    size_true: np.ndarray  # |A(t)|
    size_pred: np.ndarray  # |A(p)|


_DAG_KEYS = 1 << 22  # ancestor keys gathered at once on a DAG (32 MB of int64 per side)


def _dag_chunk_rows(taxonomy: Taxonomy) -> int:
    """How many samples a DAG metric pass takes at once: about ``_DAG_KEYS`` ancestor entries per side."""
    mean_ancestors = len(taxonomy.ancestors_index) / taxonomy.num_nodes
    return max(1024, int(_DAG_KEYS / max(mean_ancestors, 1.0)))


def _pair_stats(taxonomy: Taxonomy, t: np.ndarray, p: np.ndarray, score: np.ndarray | None = None) -> _Pairs:
    """LCA and set sizes for trusted int64 node indices ``t`` and ``p``.

    On a DAG several common ancestors can be deepest; ``lca`` is then the one of largest index, or,
    given a per-node ``score``, the common ancestor of largest score (ties: the deepest, then the largest
    index), e.g. the most informative one.
    """
    if taxonomy.is_tree:
        depth = taxonomy.depth_index
        lca = taxonomy._lca_unchecked(t, p)
        return _Pairs(lca, depth[lca], depth[t], depth[p])
    if len(t) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Pairs(empty, empty, empty, empty)
    rows = _dag_chunk_rows(taxonomy)
    if len(t) > rows:  # samples are independent: chunks bound the gathered ancestor keys (2.7 GB at 1M pairs)
        parts = [_pair_stats(taxonomy, t[i : i + rows], p[i : i + rows], score) for i in range(0, len(t), rows)]
        return _Pairs(*(np.concatenate([getattr(q, f) for q in parts]) for f in _Pairs._fields))
    # DAG: common ancestors are the (sample, node) keys found in both ancestor sets
    ptr, idx = taxonomy.ancestors_ptr, taxonomy.ancestors_index
    sizes = np.diff(ptr) - 1
    n = taxonomy.num_nodes
    owner_t, anc_t = _gather_rows(ptr, idx, t)
    owner_p, anc_p = _gather_rows(ptr, idx, p)
    keys = np.concatenate([owner_t * n + anc_t, owner_p * n + anc_p])
    keys.sort()
    common = keys[1:][keys[1:] == keys[:-1]]
    owners, nodes = np.divmod(common, n)
    inter = np.bincount(owners, minlength=len(t)) - 1  # the root is always common
    lca = np.zeros(len(t), dtype=np.int64)
    if score is not None:  # order each sample's common nodes by score (stable: nodes stay by depth within ties)
        by_score = np.lexsort((score[nodes], owners))
        owners, nodes = owners[by_score], nodes[by_score]
    # keys are sorted by (sample, node) and nodes by depth: the last common node is a deepest one
    last = np.append(owners[1:] != owners[:-1], True)
    lca[owners[last]] = nodes[last]
    return _Pairs(lca, inter.astype(np.int64), sizes[t], sizes[p])


def _resolve_distance(taxonomy: Taxonomy, distance: str) -> str:
    _check_option(distance, "distance", _DISTANCES)
    if distance != "auto":
        return distance
    leaf_depths = taxonomy.depth_index[taxonomy.leaf_index]
    return "height" if taxonomy.is_tree and leaf_depths.min() == leaf_depths.max() else "path"


def _distance(taxonomy: Taxonomy, t: np.ndarray, p: np.ndarray, lca: np.ndarray, kind: str) -> np.ndarray:
    """LCA distance of trusted pairs: ``height(lca)`` or ``depth(t) + depth(p) - 2 depth(lca)``; 0 when ``t == p``."""
    if kind == "height":
        if not taxonomy.is_tree and len(t):
            # several deepest common ancestors may differ in height: take the lowest one (ties: the
            # deepest, then the largest index), so the value does not depend on the node order
            lca = _pair_stats(taxonomy, t, p, score=-taxonomy.height_index.astype(np.float64)).lca
        return np.where(t == p, 0, taxonomy.height_index[lca])
    depth = taxonomy.depth_index
    return depth[t] + depth[p] - 2 * depth[lca]


def _safe_div(num: np.ndarray | float, den: np.ndarray | float, zero_division: float) -> Any:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den != 0, num / np.where(den != 0, den, 1.0), zero_division)
    return float(out) if out.ndim == 0 else out


def _fbeta(tp: Any, n_pred: Any, n_true: Any, beta: float, zero_division: float) -> Any:
    """F-beta from the counts, ``(1 + b2) tp / (b2 n_true + n_pred)`` (scikit-learn's rule).

    Equal to ``(1 + b2) P R / (b2 P + R)`` where both are defined; ``zero_division`` only when there
    is nothing at all (``n_true = n_pred = 0``). Taken from the zero_division-filled P and R instead,
    F was NaN for a prediction at the root under ``zero_division=nan`` (P = NaN, R = 0), where the
    counts say 0.
    """
    b2 = beta * beta
    return _safe_div((1 + b2) * np.asarray(tp, dtype=np.float64), b2 * np.asarray(n_true) + n_pred, zero_division)


def _mean(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The (weighted) mean of the entries that are not NaN, NaN when none is (scikit-learn's average:
    a ``zero_division=nan`` entry is left out, not spread to the whole average). When the entries
    left all weigh 0, their plain mean, as scikit-learn takes it."""
    values = np.asarray(values, dtype=np.float64)
    kept = ~np.isnan(values)
    if not kept.any():
        return float("nan")
    w = np.ones(int(kept.sum())) if weights is None else np.asarray(weights, dtype=np.float64)[kept]
    if w.sum() == 0:
        w = np.ones_like(w)
    return float(np.sum(w * values[kept]) / w.sum())


def _information(taxonomy: Taxonomy) -> np.ndarray:
    """``log(num_leaves / leaves_under(n))`` per node (0 at the root, largest at leaves)."""
    owner = np.repeat(np.arange(taxonomy.num_nodes), np.diff(taxonomy.descendants_ptr))
    under = np.bincount(owner, weights=taxonomy.is_leaf_mask[taxonomy.descendants_index], minlength=taxonomy.num_nodes)
    return np.log(taxonomy.num_leaves) - np.log(under)


def _measure(taxonomy: Taxonomy, measure: str) -> np.ndarray:
    _check_option(measure, "measure", _MEASURES)
    return _information(taxonomy) if measure == "info" else taxonomy.depth_index.astype(np.float64)


# ---------------------------------------------------------- exact and level
def accuracy(y_true: LabelsLike, y_pred: LabelsLike, taxonomy: Taxonomy) -> float:
    """Exact-match accuracy: the fraction of samples whose predicted node is the true node.

    ``accuracy = mean_i [p_i == t_i]``. A prediction that stops at an ancestor
    of the truth counts as wrong here (see :func:`correct_rate`).

    Args:
        y_true: true nodes ``(B,)``: names or indices (sequence, numpy or torch).
        y_pred: predicted nodes ``(B,)``, same forms.
        taxonomy: the taxonomy both refer to.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: an input is empty, not 1-D, or the lengths differ.
        UnknownNodeError: a node is not in the taxonomy.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> accuracy(["ALL", "AML", "CLL"], ["ALL", "ALL", "CLL"], tax)
        0.666...
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    return float(np.count_nonzero(t == p)) / len(t)


def _level_counts(taxonomy: Taxonomy, t: np.ndarray, lca: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per depth d: #samples correct at depth d (``depth(lca) >= d``), #samples whose truth reaches d."""
    size = taxonomy.max_depth + 1
    depth = taxonomy.depth_index
    correct = np.cumsum(np.bincount(depth[lca], minlength=size)[::-1])[::-1]
    total = np.cumsum(np.bincount(depth[t], minlength=size)[::-1])[::-1]
    return correct, total


def level_accuracy(
    y_true: LabelsLike, y_pred: LabelsLike, taxonomy: Taxonomy, *, zero_division: ZeroDivision = 0.0
) -> dict[int, float]:
    """Accuracy at each depth: does the prediction's ancestor at depth d equal the truth's?

    ``acc_d = #{i : depth(t_i) >= d and depth(lca(t_i, p_i)) >= d} / #{i : depth(t_i) >= d}``.
    Samples whose true node is shallower than ``d`` (partial labels, ragged
    trees) are left out at depth ``d``; a prediction that stops above ``d``
    counts as wrong there.

    Args:
        y_true: true nodes ``(B,)``, names or indices.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree.
        zero_division: value for a depth that no true node reaches.

    Returns:
        ``{depth: accuracy}`` for depths ``1 .. taxonomy.max_depth``.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        ValueError: empty or mismatched inputs.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> level_accuracy(["ALL", "AML", "CLL"], ["ALL", "ALL", "acute"], tax)
        {1: 0.666..., 2: 0.333...}
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    _require_tree(taxonomy, "level_accuracy")
    zd = _check_zero_division(zero_division)
    correct, total = _level_counts(taxonomy, t, taxonomy._lca_unchecked(t, p))
    return {d: _safe_div(correct[d], total[d], zd) for d in range(1, taxonomy.max_depth + 1)}


def _check_depth(taxonomy: Taxonomy, depth: Any) -> int:
    depth = _scalar(depth)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 1 <= depth <= taxonomy.max_depth:
        raise ValueError(
            f"depth: expected an int in [1, {taxonomy.max_depth}] (the root's depth 0 has one class), got {depth!r}."
        )
    return int(depth)


def _level_rows_cols(
    taxonomy: Taxonomy, t: np.ndarray, p: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Local class indices at ``depth``: rows of samples whose truth reaches it; column K = stopped above.

    A tree's nodes are numbered by depth, so a path in the ancestor CSR (ascending) holds its depth-``d``
    node at offset ``d``: no dense ``num_nodes x (max_depth + 1)`` table (half of ``num_nodes**2`` for a
    deep, thin tree), and the level's bounds come from one binary search (not ``levels()`` per depth).
    """
    depth_of, ptr, idx = taxonomy.depth_index, taxonomy.ancestors_ptr, taxonomy.ancestors_index
    start, stop = (int(b) for b in np.searchsorted(depth_of, [depth, depth + 1]))
    k = stop - start

    def at_depth(nodes: np.ndarray) -> np.ndarray:  # local index at ``depth``; k for a node above it
        reach = depth_of[nodes] >= depth
        return np.where(reach, idx[np.where(reach, ptr[nodes] + depth, 0)] - start, k)

    rows, cols = at_depth(t), at_depth(p)
    keep = rows < k
    return rows[keep], cols[keep], k


def level_confusion_matrix(
    y_true: LabelsLike, y_pred: LabelsLike, taxonomy: Taxonomy, depth: int, *, abstain_column: bool = False
) -> np.ndarray:
    """Confusion matrix between the true and predicted ancestors at one depth.

    Row ``i``, column ``j`` counts samples whose true node's ancestor at
    ``depth`` is ``taxonomy.levels()[depth][i]`` and whose predicted node's is
    ``taxonomy.levels()[depth][j]``. Samples whose truth is shallower than
    ``depth`` are left out. Predictions that stop above ``depth``
    (non-mandatory decoding) go to an extra last column when
    ``abstain_column=True``, and are left out otherwise.

    Memory is ``K x K`` for the ``K`` nodes at ``depth`` (the result, nothing
    more): use it at coarse levels of large taxonomies.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree.
        depth: the level, in ``1 .. taxonomy.max_depth``.
        abstain_column: add a column for predictions above ``depth``.

    Returns:
        int64 array ``(K, K)`` (``(K, K + 1)`` with ``abstain_column``).

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        TypeError: ``abstain_column`` is not a bool.
        ValueError: empty or mismatched inputs, or a depth out of range.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> level_confusion_matrix(["ALL", "AML", "CLL"], ["ALL", "CLL", "r"], tax, 1, abstain_column=True).tolist()
        [[1, 1, 0], [0, 0, 1]]
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    _require_tree(taxonomy, "level_confusion_matrix")
    depth = _check_depth(taxonomy, depth)
    if not isinstance(abstain_column, (bool, np.bool_)):  # a string such as "no" would be truthy
        raise TypeError(f"abstain_column: expected True or False, got {abstain_column!r}.")
    rows, cols, k = _level_rows_cols(taxonomy, t, p, depth)
    if abstain_column:
        return np.bincount(rows * (k + 1) + cols, minlength=k * (k + 1)).reshape(k, k + 1)
    inside = cols < k  # counted straight into (K, K): slicing a (K, K + 1) count needed a copy, twice the memory
    return np.bincount(rows[inside] * k + cols[inside], minlength=k * k).reshape(k, k)


def level_precision_recall_f1(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    average: Literal["macro", "micro", "weighted"] = "macro",
    zero_division: ZeroDivision = 0.0,
) -> dict[int, tuple[float, float, float]]:
    """Per-level precision, recall and F1 over the nodes of each depth, as flat multi-class scores.

    At depth ``d``, each sample whose truth reaches ``d`` has a true class (its
    ancestor at ``d``) and a predicted class (the prediction's ancestor at
    ``d``, or none if it stops above). For class ``k``:
    ``P_k = TP_k / #predicted k``, ``R_k = TP_k / #true k`` (a prediction that
    stops above ``d`` lowers recall only). ``macro`` averages over the classes
    that occur in the truth or the predictions, ``weighted`` weights by true
    support, ``micro`` pools the counts. F1 is ``2 TP / (2 TP + FP + FN)``
    per class (``2PR / (P + R)`` where both are defined; ``zero_division``
    only for a class with no count at all). As in scikit-learn, a ``NaN``
    score (``zero_division=float("nan")``) is left out of the macro and
    weighted averages, which are ``NaN`` only when every score is.
    Costs O(B + K) per level (no confusion matrix is built).

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree.
        average: ``"macro"``, ``"micro"`` or ``"weighted"``.
        zero_division: value of a 0/0 ratio.

    Returns:
        ``{depth: (precision, recall, f1)}`` for depths ``1 .. max_depth``.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        ValueError: empty or mismatched inputs, or an unknown ``average``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> level_precision_recall_f1(["ALL", "AML", "CLL"], ["ALL", "ALL", "CLL"], tax, average="micro")[2]
        (0.666..., 0.666..., 0.666...)
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    _require_tree(taxonomy, "level_precision_recall_f1")
    _check_option(average, "average", ("macro", "micro", "weighted"))
    zd = _check_zero_division(zero_division)
    out: dict[int, tuple[float, float, float]] = {}
    for d in range(1, taxonomy.max_depth + 1):  # one vectorised pass per level
        rows, cols, k = _level_rows_cols(taxonomy, t, p, d)
        if len(rows) == 0:
            out[d] = (zd, zd, zd)
            continue
        tp = np.bincount(rows[rows == cols], minlength=k)
        n_pred = np.bincount(cols, minlength=k + 1)[:k]
        n_true = np.bincount(rows, minlength=k)
        if average == "micro":
            prec = _safe_div(tp.sum(), n_pred.sum(), zd)
            rec = _safe_div(tp.sum(), n_true.sum(), zd)
            out[d] = (prec, rec, _fbeta(tp.sum(), n_pred.sum(), n_true.sum(), 1.0, zd))
            continue
        prec_k = _safe_div(tp, n_pred, zd)
        rec_k = _safe_div(tp, n_true, zd)
        f1_k = _fbeta(tp, n_pred, n_true, 1.0, zd)
        present = (n_true > 0) | (n_pred > 0)
        weights = present.astype(np.float64) if average == "macro" else n_true.astype(np.float64)
        out[d] = tuple(_mean(s, weights) for s in (prec_k, rec_k, f1_k))  # type: ignore[assignment]
    return out


# ------------------------------------------------------------ hierarchical
def hierarchical_precision_recall_fscore(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    beta: float = 1.0,
    average: Average = "micro",
    zero_division: ZeroDivision = 0.0,
) -> tuple[float, float, float]:
    """Hierarchical precision, recall and F-beta in one pass (one LCA query per sample).

    Set-based (Kiritchenko et al. 2006): ``A(n)`` is ``n`` and its ancestors,
    root excluded. Micro averaging pools over samples:

    ``hP = sum_i |A(t_i) & A(p_i)| / sum_i |A(p_i)|``,
    ``hR = sum_i |A(t_i) & A(p_i)| / sum_i |A(t_i)|``,
    ``hF = (1 + beta^2) hP hR / (beta^2 hP + hR)``.

    Macro averaging computes ``hP_i, hR_i, hF_i`` per sample and averages them
    (HiClass' ``average="macro"``). In a tree
    ``|A(t) & A(p)| = depth(lca(t, p))``; in a DAG the ancestor sets are
    intersected through the CSR ancestor arrays. A 0/0 precision or recall (a
    prediction or truth at the root) takes ``zero_division``. F is taken from
    the counts, ``(1 + beta^2) |A(t) & A(p)| / (beta^2 |A(t)| + |A(p)|)``
    (scikit-learn's rule): 0 when nothing is shared, even if one ratio is
    undefined (HiClass returns ``zero_division`` there), and ``zero_division``
    only when both sets are empty. Macro averages leave out ``NaN`` entries
    (``zero_division=float("nan")``), as scikit-learn does; they are ``NaN``
    only when every entry is.

    Args:
        y_true: true nodes ``(B,)``, names or indices.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree or a DAG.
        beta: weight of recall in the F-score (``beta > 0``).
        average: ``"micro"`` or ``"macro"``.
        zero_division: value of a 0/0 ratio.

    Returns:
        ``(precision, recall, fscore)`` floats in [0, 1].

    Raises:
        ValueError: empty or mismatched inputs, a bad ``average``, ``beta`` or ``zero_division``.
        UnknownNodeError: a node is not in the taxonomy.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> hierarchical_precision_recall_fscore(["ALL", "CLL"], ["AML", "chronic"], tax)
        (0.666..., 0.5, 0.571...)
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    beta = _check_beta(beta)
    _check_option(average, "average", _AVERAGES)
    zd = _check_zero_division(zero_division)
    pairs = _pair_stats(taxonomy, t, p)
    return _prf_from_pairs(pairs, beta, average, zd)


def _prf_from_pairs(pairs: _Pairs, beta: float, average: str, zd: float) -> tuple[float, float, float]:
    if average == "micro":
        inter = int(pairs.inter.sum())
        size_pred, size_true = int(pairs.size_pred.sum()), int(pairs.size_true.sum())
        prec = _safe_div(inter, size_pred, zd)
        rec = _safe_div(inter, size_true, zd)
        return prec, rec, _fbeta(inter, size_pred, size_true, beta, zd)
    prec_i = _safe_div(pairs.inter, pairs.size_pred, zd)
    rec_i = _safe_div(pairs.inter, pairs.size_true, zd)
    f_i = _fbeta(pairs.inter, pairs.size_pred, pairs.size_true, beta, zd)
    return _mean(prec_i), _mean(rec_i), _mean(f_i)


def hierarchical_precision(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    average: Average = "micro",
    zero_division: ZeroDivision = 0.0,
) -> float:
    """Hierarchical precision ``sum_i |A(t_i) & A(p_i)| / sum_i |A(p_i)|`` (micro; macro: mean of per-sample ratios).

    See :func:`hierarchical_precision_recall_fscore` for the definitions, arguments and errors.

    Raises:
        ValueError: empty or mismatched inputs, a bad ``average`` or ``zero_division``.
        UnknownNodeError: a node is not in the taxonomy.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> hierarchical_precision(["ALL"], ["AML"], tax)
        0.5
    """
    return hierarchical_precision_recall_fscore(y_true, y_pred, taxonomy, average=average, zero_division=zero_division)[
        0
    ]


def hierarchical_recall(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    average: Average = "micro",
    zero_division: ZeroDivision = 0.0,
) -> float:
    """Hierarchical recall ``sum_i |A(t_i) & A(p_i)| / sum_i |A(t_i)|`` (micro; macro: mean of per-sample ratios).

    See :func:`hierarchical_precision_recall_fscore` for the definitions, arguments and errors.

    Raises:
        ValueError: empty or mismatched inputs, a bad ``average`` or ``zero_division``.
        UnknownNodeError: a node is not in the taxonomy.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> hierarchical_recall(["ALL"], ["acute"], tax)
        0.5
    """
    return hierarchical_precision_recall_fscore(y_true, y_pred, taxonomy, average=average, zero_division=zero_division)[
        1
    ]


def hierarchical_fbeta(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    beta: float = 1.0,
    average: Average = "micro",
    zero_division: ZeroDivision = 0.0,
) -> float:
    """Hierarchical F-beta ``(1 + beta^2) hP hR / (beta^2 hP + hR)``.

    See :func:`hierarchical_precision_recall_fscore` for the definitions, arguments and errors.

    Raises:
        ValueError: empty or mismatched inputs, a bad ``average``, ``beta`` or ``zero_division``.
        UnknownNodeError: a node is not in the taxonomy.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> round(hierarchical_fbeta(["ALL"], ["acute"], tax, beta=2.0), 4)
        0.5556
    """
    return hierarchical_precision_recall_fscore(
        y_true, y_pred, taxonomy, beta=beta, average=average, zero_division=zero_division
    )[2]


def hierarchical_f1(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    average: Average = "micro",
    zero_division: ZeroDivision = 0.0,
) -> float:
    """Hierarchical F1 ``2 hP hR / (hP + hR)`` (:func:`hierarchical_fbeta` with ``beta=1``).

    Raises:
        ValueError: empty or mismatched inputs, a bad ``average`` or ``zero_division``.
        UnknownNodeError: a node is not in the taxonomy.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> hierarchical_f1(["ALL", "CLL"], ["ALL", "ALL"], tax)
        0.5
    """
    return hierarchical_precision_recall_fscore(y_true, y_pred, taxonomy, average=average, zero_division=zero_division)[
        2
    ]


# -------------------------------------------------------------- LCA-based
def lca_distance(
    y_true: LabelsLike, y_pred: LabelsLike, taxonomy: Taxonomy, *, distance: Distance = "auto"
) -> np.ndarray:
    """The LCA distance of each (truth, prediction) pair.

    - ``"height"``: the height of the LCA above the leaves,
      ``height(lca(t, p))`` (the longest distance from the LCA down to a
      leaf), 0 when ``t == p``. This is Bertinetto et al.'s (2020) mistake
      severity; for a tree whose leaves all share one depth ``D`` it equals
      ``D - depth(lca)``.
      In a DAG: the lowest common ancestor of smallest height.
    - ``"path"``: the number of edges between the two nodes,
      ``depth(t) + depth(p) - 2 depth(lca)`` (in a DAG: through the deepest
      common ancestor, with longest-path depths).
    - ``"auto"`` (default): ``"height"`` for trees whose leaves all share one
      depth, ``"path"`` otherwise (ragged trees, DAGs), where the height of the
      LCA would not measure the mistake.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree or a DAG.
        distance: ``"auto"``, ``"height"`` or ``"path"``.

    Returns:
        int64 array ``(B,)``.

    Raises:
        ValueError: empty or mismatched inputs, or an unknown ``distance``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> lca_distance(["ALL", "ALL", "ALL"], ["ALL", "AML", "CLL"], tax).tolist()
        [0, 1, 2]
        >>> lca_distance(["ALL", "ALL", "ALL"], ["ALL", "AML", "CLL"], tax, distance="path").tolist()
        [0, 2, 4]
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    kind = _resolve_distance(taxonomy, distance)
    return _distance(taxonomy, t, p, _pair_stats(taxonomy, t, p).lca, kind)


def mistake_severity(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    distance: Distance = "auto",
    zero_division: ZeroDivision = 0.0,
) -> float:
    """Mistake severity (Bertinetto et al. 2020): mean LCA distance over the misclassified samples.

    ``severity = sum_{i : p_i != t_i} dist(t_i, p_i) / #{i : p_i != t_i}``
    where ``dist`` is :func:`lca_distance`'s: by default (``"auto"``) the
    height of the LCA above the leaves, ``D - depth(lca)``, for trees whose
    leaves all share one depth ``D`` (Bertinetto's definition), and the path
    length ``depth(t) + depth(p) - 2 depth(lca)`` otherwise. Pass
    ``distance="height"`` or ``"path"`` to choose.

    Inner nodes: any prediction other than the true node counts as a mistake,
    an ancestor of the truth included (a correct but coarser answer; read
    :func:`correct_rate` next to it). Under ``"height"`` such an answer costs
    the height of the node it stopped at, as much as a wrong leaf below that
    node, and stopping at the root costs the full height; under ``"path"`` it
    costs the number of levels it left out. With a partial (inner-node)
    target, a prediction below it is a mistake of the same kind.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree or a DAG.
        distance: ``"auto"``, ``"height"`` or ``"path"``.
        zero_division: the value when no sample is misclassified.

    Returns:
        A non-negative float (not bounded by 1).

    Raises:
        ValueError: empty or mismatched inputs, or an unknown ``distance``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> mistake_severity(["ALL", "ALL", "ALL"], ["ALL", "AML", "CLL"], tax)
        1.5
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    kind = _resolve_distance(taxonomy, distance)
    zd = _check_zero_division(zero_division)
    wrong = t != p
    dist = _distance(taxonomy, t[wrong], p[wrong], _pair_stats(taxonomy, t[wrong], p[wrong]).lca, kind)
    return _safe_div(int(dist.sum()), len(dist), zd)


def distance_at_k(
    y_true: LabelsLike, topk_preds: LabelsLike, taxonomy: Taxonomy, *, distance: Distance = "auto"
) -> float:
    """Average hierarchical distance of the top-k predictions (Bertinetto et al. 2020).

    ``distance@k = mean_i mean_{j < k} dist(t_i, topk_i[j])`` with ``dist`` the
    LCA distance of :func:`lca_distance` (0 for a correct prediction). Get
    ``topk_preds`` from :func:`hiercls.decoding.top_k_leaves`.

    Args:
        y_true: true nodes ``(B,)``.
        topk_preds: predicted nodes ``(B, k)``, names or indices.
        taxonomy: a tree or a DAG.
        distance: ``"auto"``, ``"height"`` or ``"path"``.

    Returns:
        A non-negative float.

    Raises:
        ValueError: empty inputs, ``topk_preds`` not 2-D, or a row count that differs from ``y_true``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> distance_at_k(["ALL"], [["ALL", "CLL"]], tax)
        1.0
    """
    _check_taxonomy(taxonomy)
    t = _encode(y_true, taxonomy, "y_true")
    top = _encode(topk_preds, taxonomy, "topk_preds", ndim=2)
    if top.shape[0] != t.shape[0] or top.shape[1] == 0:
        raise ValueError(
            f"topk_preds: expected shape ({t.shape[0]}, k) with k >= 1 to match y_true, got {tuple(top.shape)}."
        )
    kind = _resolve_distance(taxonomy, distance)
    tt = np.repeat(t, top.shape[1])
    pp = top.ravel()
    return float(_distance(taxonomy, tt, pp, _pair_stats(taxonomy, tt, pp).lca, kind).mean())


def _lca_scores(
    y_true: LabelsLike, y_pred: LabelsLike, taxonomy: Taxonomy, measure: str, zero_division: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    c = _measure(taxonomy, measure)
    zd = _check_zero_division(zero_division)
    # DAG: the most informative common ancestor (largest c), as operating_curve takes it
    lca = _pair_stats(taxonomy, t, p, score=c).lca
    cl, cp, ct = c[lca], c[p], c[t]
    return _safe_div(cl, cp, zd), _safe_div(cl, ct, zd), _fbeta(cl, cp, ct, 1.0, zd)


def lca_precision(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    measure: Measure = "info",
    zero_division: ZeroDivision = 0.0,
) -> float:
    """LCA precision (Valmadre 2022): ``mean_i c(lca(t_i, p_i)) / c(p_i)``.

    ``c`` is the information ``log(num_leaves / leaves_under(n))``
    (``measure="info"``) or the depth (``measure="depth"``; in a tree this is
    the macro :func:`hierarchical_precision`). A prediction with ``c = 0``
    takes ``zero_division``: the root, and with ``measure="info"`` also any node
    that has every leaf below it (a root's only child, every node of a
    one-leaf taxonomy), even when it is the truth.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree or a DAG (where the LCA is the common ancestor of largest ``c``,
            the most informative one; ties go to the deepest).
        measure: ``"info"`` or ``"depth"``.
        zero_division: value of a 0/0 ratio.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: empty or mismatched inputs, or an unknown ``measure``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> lca_precision(["ALL"], ["AML"], tax, measure="depth")
        0.5
    """
    return _mean(_lca_scores(y_true, y_pred, taxonomy, measure, zero_division)[0])


def lca_recall(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    measure: Measure = "info",
    zero_division: ZeroDivision = 0.0,
) -> float:
    """LCA recall (Valmadre 2022): ``mean_i c(lca(t_i, p_i)) / c(t_i)``; see :func:`lca_precision`.

    A truth with ``c = 0`` (the root; with ``measure="info"`` also a node with every leaf below it)
    takes ``zero_division``.

    Raises:
        ValueError: empty or mismatched inputs, or an unknown ``measure``.
        UnknownNodeError: a node is not in the taxonomy.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> round(lca_recall(["ALL"], ["acute"], tax), 4)  # log(3/2) / log(3)
        0.3691
    """
    return _mean(_lca_scores(y_true, y_pred, taxonomy, measure, zero_division)[1])


def lca_f1(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    measure: Measure = "info",
    zero_division: ZeroDivision = 0.0,
) -> float:
    """LCA F1: ``mean_i 2 P_i R_i / (P_i + R_i)`` of the per-sample LCA precision and recall.

    Per sample from the counts, ``2 c(lca) / (c(p) + c(t))`` (0 for a prediction with ``c = 0``
    whose truth has ``c > 0``; ``zero_division`` when both have ``c = 0``: both at the root, or with
    ``measure="info"`` at nodes with every leaf below them); ``NaN`` entries
    are left out of the mean, as in :func:`hierarchical_precision_recall_fscore`.

    Raises:
        ValueError: empty or mismatched inputs, an unknown ``measure`` or a bad ``zero_division``.
        UnknownNodeError: a node is not in the taxonomy.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> lca_f1(["ALL"], ["acute"], tax, measure="depth")
        0.666...
    """
    return _mean(_lca_scores(y_true, y_pred, taxonomy, measure, zero_division)[2])


def correct_rate(y_true: LabelsLike, y_pred: LabelsLike, taxonomy: Taxonomy) -> float:
    """The fraction of "correct" predictions: the true node or one of its ancestors (Valmadre 2022).

    ``correct = mean_i [p_i in ancestors(t_i) or p_i == t_i]``. A
    non-mandatory decoder that stops at ``"Acute"`` for an ``"AML"`` sample is
    correct (if unspecific); predicting the root is always correct.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree or a DAG.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: empty or mismatched inputs.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> correct_rate(["ALL", "AML", "CLL"], ["acute", "ALL", "r"], tax)
        0.666...
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    pairs = _pair_stats(taxonomy, t, p)
    return float(np.count_nonzero(pairs.inter == pairs.size_pred)) / len(t)


def node_recall(
    y_true: LabelsLike, y_pred: LabelsLike, taxonomy: Taxonomy, *, zero_division: ZeroDivision = float("nan")
) -> np.ndarray:
    """Recall of every node: of the samples whose true path contains ``n``, the fraction whose predicted path does.

    ``recall(n) = #{i : n in A(t_i) and n in A(p_i)} / #{i : n in A(t_i)}``
    (the root's entry is 1). Useful to colour :func:`hiercls.plot.plot_taxonomy`.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree or a DAG.
        zero_division: value for nodes on no true path (default NaN).

    Returns:
        float64 array ``(num_nodes,)``.

    Raises:
        ValueError: empty or mismatched inputs.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> node_recall(["ALL", "AML"], ["ALL", "CLL"], tax).round(2).tolist()
        [1.0, 0.5, nan, 1.0, 0.0, nan]
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    zd = _check_zero_division(zero_division)
    hits, support = _node_recall_counts(taxonomy, t, p)
    return _safe_div(hits, support, zd)


def _subtree_sums(taxonomy: Taxonomy, counts: np.ndarray) -> np.ndarray:
    """Per node of a tree, the sum of ``counts`` over its subtree (itself included), int64: the levels
    from the deepest up, each added to its parents in one ``bincount`` (nodes are numbered by depth)."""
    out = counts.astype(np.int64, copy=True)
    depth, parent = taxonomy.depth_index, taxonomy.parent_index
    bounds = np.searchsorted(depth, np.arange(taxonomy.max_depth + 2))
    for d in range(taxonomy.max_depth, 0, -1):  # one vectorised step per depth
        lo, hi = int(bounds[d]), int(bounds[d + 1])
        out[:lo] += np.bincount(parent[lo:hi], weights=out[lo:hi], minlength=lo)[:lo].astype(np.int64)
    return out


def _node_recall_counts(taxonomy: Taxonomy, t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node: samples whose true and predicted paths both contain it, and samples whose true path does
    (:func:`node_recall`'s numerator and denominator; :class:`~hiercls.metrics.NodeRecall` sums them)."""
    n = taxonomy.num_nodes
    rows = _dag_chunk_rows(taxonomy)
    if not taxonomy.is_tree and len(t) > rows:  # chunks bound the gathered ancestor keys, as in _pair_stats
        hits, supports = zip(
            *(_node_recall_counts(taxonomy, t[i : i + rows], p[i : i + rows]) for i in range(0, len(t), rows))
        )
        return np.sum(hits, axis=0), np.sum(supports, axis=0)
    if taxonomy.is_tree:
        # a node is on t's path when t is in its subtree, and on both paths when their LCA is: two subtree
        # sums of per-node counts, O(B + N), not a gather of every sample's path (O(B x depth): 3.15 GB
        # for 100,000 samples on a depth-2,000 tree)
        lca = taxonomy._lca_unchecked(t, p)
        return _subtree_sums(taxonomy, np.bincount(lca, minlength=n)), _subtree_sums(
            taxonomy, np.bincount(t, minlength=n)
        )
    # DAG: the (sample, node) keys found in both ancestor sets
    owner, anc = _gather_rows(taxonomy.ancestors_ptr, taxonomy.ancestors_index, t)
    owner_p, anc_p = _gather_rows(taxonomy.ancestors_ptr, taxonomy.ancestors_index, p)
    keys = np.concatenate([owner * n + anc, owner_p * n + anc_p])
    keys.sort()
    hit = keys[1:][keys[1:] == keys[:-1]] % n
    return np.bincount(hit, minlength=n), np.bincount(anc, minlength=n)


# ---------------------------------------------------------- probabilities
# how far outside [0, 1] a marginal may stray by rounding (e.g. a sum of leaf probabilities) and still be read
_PROB_SLACK = 1e-3
# in units of the input dtype's eps: a bfloat16 sum of leaf probabilities lands on 1.0078 (1 + eps) or above
_SLACK_EPS = 4
# at most bfloat16's four eps (0.031): float8 (eps 0.125 to 2) would otherwise read logits near 2 as marginals
_SLACK_MAX = _SLACK_EPS * 2.0**-7


def _prob_slack(eps: float) -> float:
    """How far outside ``[0, 1]`` marginals of a dtype with machine epsilon ``eps`` may stray: 1e-3, or four
    eps when that is more (float16: 0.0039, bfloat16: 0.031), at most bfloat16's four."""
    return min(max(_PROB_SLACK, _SLACK_EPS * eps), _SLACK_MAX)


def _check_unit_interval(lo: float, hi: float, slack: float, name: str = "probs") -> None:
    """Refuse marginals whose smallest value ``lo`` or largest ``hi`` is outside ``[0, 1]`` by more than
    ``slack``: logits or log-probabilities passed by mistake (the decoders' check, shared with the metrics)."""
    if lo < -slack or hi > 1.0 + slack:
        raise ValueError(
            f"{name}: expected node marginals in [0, 1] (up to {slack:.2g} for rounding), got values from {lo:.4g} "
            f"to {hi:.4g}. These look like logits or log-probabilities: pass head.marginals(logits) "
            "(or the .exp() of log-marginals)."
        )


def _ndim(values: Any) -> int | None:
    """The number of dimensions of an array, a tensor or nested lists; None when it cannot be read."""
    try:
        return int(np.ndim(values)) if not hasattr(values, "ndim") else int(values.ndim)
    except (ValueError, TypeError):  # ragged nested lists
        return None


def _as_probs(probs: Any, taxonomy: Taxonomy, name: str = "probs", unit_interval: bool = False) -> np.ndarray:
    """Node scores -> float64 ``(B, num_nodes)``, finite; with ``unit_interval``, also in ``[0, 1]`` up to the
    rounding slack of the dtype they came in (:func:`_check_unit_interval`)."""
    eps = 0.0  # integer input (0/1 marginals) is exact
    if hasattr(probs, "detach") and hasattr(probs, "cpu"):
        probs = probs.detach().cpu()
        if probs.is_floating_point():
            import torch  # already imported: a tensor came

            eps = torch.finfo(probs.dtype).eps
        # keep float64 as it is (rounding to float32 can create ties in the AP ranking)
        probs = probs.numpy() if str(probs.dtype) == "torch.float64" else probs.float().numpy()
    try:
        arr = np.asarray(probs)
    except ValueError as err:  # rows of different lengths: numpy's "inhomogeneous shape" names nothing
        raise ValueError(
            f"{name}: expected node marginals of shape (num_samples, {taxonomy.num_nodes}), the same length in "
            f"every row; could not read it as an array ({err})."
        ) from err
    if arr.ndim != 2 or arr.shape[1] != taxonomy.num_nodes:
        one = arr.ndim == 1 and arr.shape[0] == taxonomy.num_nodes
        raise ValueError(
            f"{name}: expected node marginals of shape (num_samples, {taxonomy.num_nodes}), got shape {tuple(arr.shape)}"
            + (f". For one sample, add the batch dimension: {name}[None]." if one else ".")
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: give at least one sample.")
    if arr.dtype.kind not in "fiub":  # booleans and integers: 0/1 marginals, as torch's bool tensors are read
        raise ValueError(f"{name}: expected a float array of marginals, got dtype {arr.dtype}.")
    if arr.dtype.kind == "f":
        eps = max(eps, float(np.finfo(arr.dtype).eps))
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name}: expected finite marginals, got {arr[tuple(bad)]} at sample {bad[0]}, node {bad[1]} "
            f"({int((~np.isfinite(arr)).sum())} non-finite value(s)); check the model's outputs for NaN/inf."
        )
    if unit_interval:
        _check_unit_interval(float(arr.min()), float(arr.max()), _prob_slack(eps), name)
    return arr


def node_average_precision(
    probs: Any,
    y_true: LabelsLike,
    taxonomy: Taxonomy,
    *,
    average: Literal["macro", "none"] = "macro",
    zero_division: ZeroDivision = float("nan"),
) -> float | np.ndarray:
    """Average precision of every node as a binary detector (multi-label view, e.g. the sigmoid head).

    For node ``n``, the positives are the samples whose true path contains
    ``n``; samples labelled at a strict ancestor of ``n`` (partial labels) say
    nothing about ``n`` and are left out, and in a DAG so are samples labelled
    at a node that shares a descendant with ``n`` (:meth:`hiercls.Taxonomy.known_mask`).
    A node left with positives but no negatives scores 1.0 whatever its
    scores, and counts in the macro mean. Ranking samples by ``probs[:, n]``,
    ``AP(n) = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds
    (scikit-learn's ``average_precision_score``; tied scores form one step).
    ``"macro"`` averages over the non-root nodes that have positives.

    Memory: a float64 copy of ``probs``, two boolean ``(B, num_nodes)`` masks,
    and sorting work on blocks of node columns of about a million entries.

    Args:
        probs: node scores ``(B, num_nodes)`` (numpy or torch).
        y_true: true nodes ``(B,)``.
        taxonomy: a tree or a DAG.
        average: ``"macro"`` (a float) or ``"none"`` (per node).
        zero_division: AP of a node without positives (and the macro value when no node has any).

    Returns:
        A float, or a float64 array ``(num_nodes,)`` (the root's entry is ``zero_division``).

    Raises:
        ValueError: bad shapes, empty input or an unknown ``average``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a", "r/b"])
        >>> probs = [[1.0, 0.9, 0.1], [1.0, 0.2, 0.8], [1.0, 0.95, 0.05]]
        >>> node_average_precision(probs, ["a", "b", "b"], tax, average="none").round(3).tolist()
        [nan, 0.5, 0.833]
    """
    _check_taxonomy(taxonomy)
    if _ndim(probs) == 1 and _ndim(y_true) == 2:  # scikit-learn's order, (y_true, y_score)
        raise ValueError(
            f"probs: expected node marginals of shape (num_samples, {taxonomy.num_nodes}) first, got a 1-D "
            "array and a 2-D y_true: the arguments look swapped. node_average_precision takes "
            "(probs, y_true, taxonomy), marginals first (scikit-learn's average_precision_score takes y_true first)."
        )
    scores = _as_probs(probs, taxonomy)
    t = _encode(y_true, taxonomy, "y_true")
    if len(t) != len(scores):
        raise ValueError(f"probs and y_true must have the same number of samples, got {len(scores)} and {len(t)}.")
    _check_option(average, "average", ("macro", "none"))
    zd = _check_zero_division(zero_division)
    positive = taxonomy.multi_hot(t)
    known = taxonomy.known_mask(t)
    b = len(scores)
    ap = np.full(taxonomy.num_nodes, zd, dtype=np.float64)
    n_pos = np.zeros(taxonomy.num_nodes, dtype=np.float64)
    # a block of node columns at a time: the sorts and cumulative sums need about ten (B, block) arrays
    block = max(1, _AP_BLOCK_ELEMENTS // max(1, b))
    for a in range(0, taxonomy.num_nodes, block):
        cols = slice(a, min(a + block, taxonomy.num_nodes))
        ap[cols], n_pos[cols] = _average_precision_block(scores[:, cols], positive[:, cols], known[:, cols], zd)
    ap[0] = zd
    if average == "none":
        return ap
    valid = n_pos > 0
    valid[0] = False
    return float(ap[valid].mean()) if valid.any() else zd


_AP_BLOCK_ELEMENTS = 1 << 20  # (B, block) float64 working arrays of about 8 MB each


def _average_precision_block(
    scores: np.ndarray, positive: np.ndarray, known: np.ndarray, zd: float
) -> tuple[np.ndarray, np.ndarray]:
    """AP and number of positives of each column of a block (see :func:`node_average_precision`)."""
    b = len(scores)
    order = np.argsort(-scores, axis=0, kind="stable")
    s_sorted = np.take_along_axis(scores, order, axis=0)
    rel = np.take_along_axis(positive & known, order, axis=0).astype(np.float64)
    cnt = np.take_along_axis(known, order, axis=0).astype(np.float64)
    cum_rel = np.cumsum(rel, axis=0)
    cum_cnt = np.cumsum(cnt, axis=0)
    # precision at the end of each group of tied scores, spread back over the group
    is_end = np.ones_like(s_sorted, dtype=bool)
    is_end[:-1] = s_sorted[1:] != s_sorted[:-1]
    end_pos = np.where(is_end, np.arange(b)[:, None], b)
    end_pos = np.minimum.accumulate(end_pos[::-1], axis=0)[::-1]
    prec_end = np.take_along_axis(_safe_div(cum_rel, cum_cnt, 0.0), end_pos, axis=0)
    n_pos = cum_rel[-1]
    return _safe_div((rel * prec_end).sum(axis=0), n_pos, zd), n_pos


def inconsistency_rate(probs: Any, taxonomy: Taxonomy, *, tol: float = 1e-6, validate_args: bool = True) -> float:
    """The fraction of samples with an inconsistent output: some child's marginal above its parent's.

    ``rate = mean_i [exists edge (u, v): probs[i, v] > probs[i, u] + tol]``.
    Coherent heads (conditional, flat, coherent sigmoid) give 0.

    Args:
        probs: node marginals ``(B, num_nodes)`` (numpy or torch), each in ``[0, 1]``.
        taxonomy: a tree or a DAG.
        tol: slack for rounding.
        validate_args: check that ``probs`` lie in ``[0, 1]`` (up to 1e-3 for rounding, more for
            float16/bfloat16 input), as the decoders do: logits would be compared as if they were
            marginals. Shape and finiteness are checked either way.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: bad shape or empty input; values outside ``[0, 1]`` (logits passed by mistake);
            ``tol`` not a finite number >= 0.
        TypeError: ``validate_args`` is not a bool.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a", "r/b"])
        >>> inconsistency_rate([[1.0, 0.7, 0.3], [0.5, 0.9, 0.1]], tax)
        0.5
    """
    _check_taxonomy(taxonomy)
    tol = _scalar(tol)
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) or not 0 <= tol < math.inf:
        raise ValueError(
            f"tol: expected a finite number >= 0 (the rounding slack, e.g. 1e-6), got {tol!r}; NaN would call "
            "every output consistent and a negative slack a consistent one inconsistent."
        )
    if not isinstance(validate_args, bool):
        raise TypeError(f"validate_args: expected True or False, got {validate_args!r}.")
    scores = _as_probs(probs, taxonomy, unit_interval=validate_args)
    return float(_count_inconsistent(scores, taxonomy, tol)) / len(scores)


def _count_inconsistent(scores: np.ndarray, taxonomy: Taxonomy, tol: float) -> int:
    """Rows of ``scores`` (float64 marginals) with a child above its parent + ``tol``, in blocks of rows:
    the two gathered ``(rows, num_edges)`` arrays of the whole batch took about 8x the input's memory."""
    edges = taxonomy.edges_index()
    parents, children = edges[:, 0], edges[:, 1]
    rows = max(1, _BLOCK_ENTRIES // max(1, len(edges)))
    total = 0
    for start in range(0, len(scores), rows):
        block = scores[start : start + rows]
        total += int(np.count_nonzero((block[:, children] > block[:, parents] + tol).any(axis=1)))
    return total


# entries of one (rows, num_edges) float64 temporary of _count_inconsistent: 64 MiB
_BLOCK_ENTRIES = 1 << 23


# ----------------------------------------------------------------- summary
def _summary_counts(taxonomy: Taxonomy, t: np.ndarray, p: np.ndarray, kind: str) -> dict[str, Any]:
    """Additive counts for :func:`summary` (the metric classes sum them across batches and processes)."""
    pairs = _pair_stats(taxonomy, t, p)
    wrong = t != p
    dist = _distance(taxonomy, t[wrong], p[wrong], pairs.lca[wrong], kind)
    counts: dict[str, Any] = {
        "total": len(t),
        "exact": int(len(t) - np.count_nonzero(wrong)),
        "inter": int(pairs.inter.sum()),
        "size_true": int(pairs.size_true.sum()),
        "size_pred": int(pairs.size_pred.sum()),
        "mistakes": len(dist),
        "severity": int(dist.sum()),
        "correct": int(np.count_nonzero(pairs.inter == pairs.size_pred)),
    }
    if taxonomy.is_tree:
        counts["level_correct"], counts["level_total"] = _level_counts(taxonomy, t, pairs.lca)
    return counts


def _summary_from_counts(counts: Mapping[str, Any], zero_division: float) -> dict[str, float]:
    zd = zero_division
    total = float(counts["total"])
    prec = _safe_div(counts["inter"], counts["size_pred"], zd)
    rec = _safe_div(counts["inter"], counts["size_true"], zd)
    out = {
        "accuracy": _safe_div(counts["exact"], total, zd),
        "hierarchical_precision": prec,
        "hierarchical_recall": rec,
        "hierarchical_f1": _fbeta(counts["inter"], counts["size_pred"], counts["size_true"], 1.0, zd),
        "mistake_severity": _safe_div(counts["severity"], counts["mistakes"], zd),
        "correct_rate": _safe_div(counts["correct"], total, zd),
    }
    if "level_correct" in counts:
        correct = np.asarray(counts["level_correct"])
        level_total = np.asarray(counts["level_total"])
        for d in range(1, len(correct)):
            out[f"level_accuracy/{d}"] = _safe_div(correct[d], level_total[d], zd)
    return out


def summary(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    distance: Distance = "auto",
    zero_division: ZeroDivision = 0.0,
) -> dict[str, float]:
    """The standard hierarchical report in one pass (one validation, one LCA query per sample).

    Keys: ``accuracy``, ``hierarchical_precision``, ``hierarchical_recall``,
    ``hierarchical_f1`` (micro), ``mistake_severity``, ``correct_rate``, and
    ``level_accuracy/<depth>`` for depths ``1 .. max_depth`` (trees only; a
    DAG has no single ancestor per depth). Each equals the function of the
    same name.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree or a DAG.
        distance: the mistake-severity distance (see :func:`lca_distance`).
        zero_division: value of a 0/0 ratio.

    Returns:
        ``{name: value}``.

    Raises:
        ValueError: empty or mismatched inputs, or a bad option.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> report = summary(["ALL", "AML", "CLL"], ["ALL", "ALL", "acute"], tax)
        >>> report["accuracy"], report["hierarchical_precision"], report["level_accuracy/1"]
        (0.333..., 0.6, 0.666...)
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    kind = _resolve_distance(taxonomy, distance)
    zd = _check_zero_division(zero_division)
    return _summary_from_counts(_summary_counts(taxonomy, t, p, kind), zd)
