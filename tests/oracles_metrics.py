"""Slow, obviously-correct reference metrics: Python sets and explicit loops, one sample at a time."""

from __future__ import annotations

import math

from hiercls import Taxonomy


def path_set(tax: Taxonomy, n: int) -> set[str]:
    """A(n): the node and its ancestors (all of them in a DAG), root excluded."""
    return set(tax.ancestors(n, include_self=True)) - {tax.root}


def deepest_common_ancestor(tax: Taxonomy, a: int, b: int) -> int:
    common = set(tax.ancestors(a, include_self=True)) & set(tax.ancestors(b, include_self=True))
    # the deepest (longest path from the root in a DAG), not by the library's depth-sorted numbering;
    # common ancestors of equal depth give the path distance below the same value
    return tax.index(max(common, key=tax.depth))


def _div(num: float, den: float, zd: float) -> float:
    return zd if den == 0 else num / den


def hierarchical_prf(y_true, y_pred, tax: Taxonomy, beta: float = 1.0, average: str = "micro", zd: float = 0.0):
    inter = [len(path_set(tax, t) & path_set(tax, p)) for t, p in zip(y_true, y_pred)]
    st = [len(path_set(tax, t)) for t in y_true]
    sp = [len(path_set(tax, p)) for p in y_pred]

    def f(i, s_true, s_pred):  # from the counts (scikit-learn): zero_division only when both sets are empty
        return _div((1 + beta**2) * i, beta**2 * s_true + s_pred, zd)

    if average == "micro":
        p, r = _div(sum(inter), sum(sp), zd), _div(sum(inter), sum(st), zd)
        return p, r, f(sum(inter), sum(st), sum(sp))
    ps = [_div(i, s, zd) for i, s in zip(inter, sp)]
    rs = [_div(i, s, zd) for i, s in zip(inter, st)]
    return _avg(ps), _avg(rs), _avg([f(i, a, b) for i, a, b in zip(inter, st, sp)])


def _avg(values) -> float:
    """The mean of the values that are not NaN (scikit-learn's average), NaN when all are."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def distance(tax: Taxonomy, t: int, p: int, kind: str) -> int:
    if t == p:
        return 0
    lca = deepest_common_ancestor(tax, t, p)
    if kind == "height":  # in a DAG, the common ancestor of smallest height
        common = set(tax.ancestors(t, include_self=True)) & set(tax.ancestors(p, include_self=True))
        return min(tax.height(x) for x in common)
    return tax.depth(t) + tax.depth(p) - 2 * tax.depth(lca)


def mistake_severity(y_true, y_pred, tax: Taxonomy, kind: str, zd: float = 0.0) -> float:
    d = [distance(tax, t, p, kind) for t, p in zip(y_true, y_pred) if t != p]
    return _div(sum(d), len(d), zd)


def level_accuracy(y_true, y_pred, tax: Taxonomy, zd: float = 0.0) -> dict[int, float]:
    out = {}
    for d in range(1, tax.max_depth + 1):
        hits = total = 0
        for t, p in zip(y_true, y_pred):
            pt, pp = tax.path(t), tax.path(p)
            if len(pt) > d:
                total += 1
                hits += len(pp) > d and pp[d] == pt[d]
        out[d] = _div(hits, total, zd)
    return out


def level_classes(y_true, y_pred, tax: Taxonomy, d: int) -> tuple[list[str], list[str | None]]:
    """True and predicted ancestors at depth d, for samples whose truth reaches d (None: stopped above)."""
    rows, cols = [], []
    for t, p in zip(y_true, y_pred):
        pt, pp = tax.path(t), tax.path(p)
        if len(pt) > d:
            rows.append(pt[d])
            cols.append(pp[d] if len(pp) > d else None)
    return rows, cols


def info(tax: Taxonomy, n: int) -> float:
    under = sum(1 for x in tax.descendants(n, include_self=True) if tax.is_leaf(x))
    return math.log(tax.num_leaves) - math.log(under)


def lca_prf(y_true, y_pred, tax: Taxonomy, measure: str, zd: float = 0.0) -> tuple[float, float, float]:
    c = (lambda n: info(tax, n)) if measure == "info" else tax.depth
    ps, rs, fs = [], [], []
    for t, p in zip(y_true, y_pred):
        common = set(tax.ancestors(t, include_self=True)) & set(tax.ancestors(p, include_self=True))
        lca = max(common, key=c)  # DAG: the most informative common ancestor (a tree has one LCA)
        ps.append(_div(c(lca), c(p), zd))
        rs.append(_div(c(lca), c(t), zd))
        fs.append(_div(2 * c(lca), c(p) + c(t), zd))
    return _avg(ps), _avg(rs), _avg(fs)


def correct_rate(y_true, y_pred, tax: Taxonomy) -> float:
    return sum(tax.nodes[p] in tax.ancestors(t, include_self=True) for t, p in zip(y_true, y_pred)) / len(y_true)


def node_recall(y_true, y_pred, tax: Taxonomy) -> list[float]:
    out = []
    for n in tax.nodes:
        support = [(t, p) for t, p in zip(y_true, y_pred) if n in tax.ancestors(t, include_self=True)]
        hits = sum(n in tax.ancestors(p, include_self=True) for _, p in support)
        out.append(hits / len(support) if support else math.nan)
    return out


def inconsistency_rate(probs, tax: Taxonomy, tol: float) -> float:
    bad = 0
    for row in probs:
        bad += any(row[tax.index(c)] > row[tax.index(u)] + tol for u in tax.nodes for c in tax.children(u))
    return bad / len(probs)


def floats(value):
    """A metric class's compute(): 0-d tensors (or a dict of them) as Python floats, for comparisons."""
    return {k: float(v) for k, v in value.items()} if isinstance(value, dict) else float(value)
