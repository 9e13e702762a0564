"""Slow, obviously-correct pure-Python references for hiercls.marginals and hiercls.losses.

Every function loops over samples and nodes in plain Python (float64 ``math``),
using only the Taxonomy's name-level queries (children, ancestors, descendants,
depth, height, lca), so that it shares no index tables with the library. Each
takes ``logits`` as a list of rows (or a tensor, converted with ``tolist()``)
and returns a list of per-sample floats (or rows of marginals).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from hiercls import Taxonomy


def _rows(logits) -> list[list[float]]:
    return logits.tolist() if hasattr(logits, "tolist") else [list(r) for r in logits]


def _lse(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _softplus(value: float) -> float:
    """log(1 + exp(value)), stable."""
    return max(value, 0.0) + math.log1p(math.exp(-abs(value)))


def _idx(tax: Taxonomy, names: Sequence[str]) -> list[int]:
    return [tax.index(n) for n in names]


def _path(tax: Taxonomy, node: int) -> list[int]:
    return _idx(tax, tax.ancestors(node, include_self=True))


def _lca(tax: Taxonomy, a: int, b: int) -> int:
    """The deepest common ancestor of a tree's nodes, from their paths (not the library's Euler tour)."""
    common = set(_path(tax, a)) & set(_path(tax, b))
    return max(common, key=lambda n: len(_path(tax, n)))


def _height(tax: Taxonomy, node: int) -> int:
    """Edges on the longest way down from ``node`` to a leaf, by recursion over the children."""
    return max((1 + _height(tax, tax.index(c)) for c in tax.children(node)), default=0)


def _weight(weight, tax: Taxonomy) -> list[float]:
    """Per-node weights from None, a per-node or a per-level sequence."""
    if weight is None:
        return [1.0] * tax.num_nodes
    w = [float(v) for v in (weight.tolist() if hasattr(weight, "tolist") else weight)]
    if len(w) == tax.num_nodes:
        return w
    return [w[tax.depth(n)] for n in range(tax.num_nodes)]


def _leaf_below(tax: Taxonomy, node: int) -> list[int]:
    """Positions (in leaf order) of the leaves below ``node`` (itself if a leaf)."""
    leaves = list(tax.leaf_index.tolist())
    below = set(_idx(tax, tax.descendants(node, include_self=True)))
    return [k for k, leaf in enumerate(leaves) if leaf in below]


# ------------------------------------------------------------------------------------ marginals


def conditional_marginals(logits, tax: Taxonomy) -> list[list[float]]:
    out = []
    for row in _rows(logits):
        probs = []
        for n in range(tax.num_nodes):
            p = 1.0
            for a in _path(tax, n)[1:]:
                sibs = _idx(tax, tax.children(tax.parent(a)))
                p *= math.exp(row[a] - _lse([row[s] for s in sibs]))
            probs.append(p)
        out.append(probs)
    return out


def sigmoid_marginals(logits, tax: Taxonomy, coherent: bool = False) -> list[list[float]]:
    out = []
    for row in _rows(logits):
        probs = []
        for n in range(tax.num_nodes):
            if n == 0:
                probs.append(1.0)
                continue
            nodes = _idx(tax, tax.descendants(n, include_self=True)) if coherent else [n]
            probs.append(max(1.0 / (1.0 + math.exp(-row[d])) for d in nodes))
        out.append(probs)
    return out


def flat_marginals(logits, tax: Taxonomy) -> list[list[float]]:
    out = []
    for row in _rows(logits):
        total = _lse(row)
        out.append([sum(math.exp(row[k] - total) for k in _leaf_below(tax, n)) for n in range(tax.num_nodes)])
    return out


# --------------------------------------------------------------------------------------- losses


def conditional_nll(logits, target, tax: Taxonomy, weight=None, smoothing: float = 0.0) -> list[float]:
    w = _weight(weight, tax)
    out = []
    for row, t in zip(_rows(logits), list(target)):
        loss = 0.0
        for n in _path(tax, int(t))[1:]:
            sibs = _idx(tax, tax.children(tax.parent(n)))
            lse = _lse([row[s] for s in sibs])
            mean = sum(row[s] for s in sibs) / len(sibs)
            loss += w[n] * (lse - (1 - smoothing) * row[n] - smoothing * mean)
        out.append(loss)
    return out


def level_cross_entropy(logits, target, tax: Taxonomy, weight=None, smoothing: float = 0.0) -> list[float]:
    w = _weight(weight, tax)
    out = []
    for row, t in zip(_rows(logits), list(target)):
        loss = 0.0
        for n in _path(tax, int(t))[1:]:
            level = [m for m in range(tax.num_nodes) if tax.depth(m) == tax.depth(n)]
            lse = _lse([row[m] for m in level])
            mean = sum(row[m] for m in level) / len(level)
            loss += w[n] * (lse - (1 - smoothing) * row[n] - smoothing * mean)
        out.append(loss)
    return out


def _unknown(tax: Taxonomy, t: int, positives: set[int]) -> set[int]:
    """Nodes a label ``t`` says nothing about: its strict descendants, and (in a DAG) every other
    ancestor of one of them, which is positive exactly when the truth lies below it."""
    below = set(_idx(tax, tax.descendants(t)))
    shared = {a for d in below for a in _idx(tax, tax.ancestors(d, include_self=True))}
    return (below | shared) - positives


def node_bce(logits, target, tax: Taxonomy, weight=None, smoothing: float = 0.0, negatives: str = "all") -> list[float]:
    w = _weight(weight, tax)
    out = []
    for row, t in zip(_rows(logits), list(target)):
        t = int(t)
        positives = set(_idx(tax, tax.ancestors(t, include_self=True)))
        below = _unknown(tax, t, positives)
        strict = positives - {t}
        loss = 0.0
        for n in range(1, tax.num_nodes):
            if n in below:
                continue
            if negatives == "siblings" and not any(tax.index(p) in strict for p in tax.parents(n)):
                continue
            y = (1.0 if n in positives else 0.0) * (1 - smoothing) + smoothing / 2
            loss += w[n] * (_softplus(row[n]) - y * row[n])
        out.append(loss)
    return out


def max_constraint_loss(logits, target, tax: Taxonomy, weight=None, smoothing: float = 0.0) -> list[float]:
    """MCLoss from Giunchiglia & Lukasiewicz (2020), in logit space (max commutes with the sigmoid)."""
    w = _weight(weight, tax)
    out = []
    for row, t in zip(_rows(logits), list(target)):
        t = int(t)
        positives = set(_idx(tax, tax.ancestors(t, include_self=True)))
        below = _unknown(tax, t, positives)
        loss = 0.0
        for a in range(1, tax.num_nodes):
            if a in below:
                continue
            subtree = _idx(tax, tax.descendants(a, include_self=True))
            mcm = max(row[b] for b in subtree)  # logit of MCM_A
            if a in positives:  # -log max_B y_B h_B (label smoothing: BCE against 1 - eps/2)
                z = max(row[b] for b in subtree if b in positives)  # logit of max y_B h_B
                y = 1 - smoothing / 2
            else:  # -log(1 - MCM_A) (label smoothing: BCE against eps/2)
                z = mcm
                y = smoothing / 2
            loss += w[a] * (y * _softplus(-z) + (1 - y) * _softplus(z))
        out.append(loss)
    return out


def flat_cross_entropy(logits, target, tax: Taxonomy, weight=None, smoothing: float = 0.0) -> list[float]:
    w = _weight(weight, tax)
    out = []
    for row, t in zip(_rows(logits), list(target)):
        t = int(t)
        total = _lse(row)
        log_p = [v - total for v in row]
        inside = _lse([log_p[k] for k in _leaf_below(tax, t)])
        loss = -(1 - smoothing) * inside - smoothing * sum(log_p) / len(log_p)
        out.append(w[t] * loss)
    return out


def hxe_loss(logits, target, tax: Taxonomy, alpha: float, weight=None, smoothing: float = 0.0) -> list[float]:
    """Bertinetto et al. (2020), HXE: -sum_l lambda(C^(l)) log p(C^(l) | C^(l+1)), each edge weighted as in the
    authors' code, exp(-alpha * depth of its child), here scaled so that the first decision weighs 1."""
    w = _weight(weight, tax)
    out = []
    for row, t in zip(_rows(logits), list(target)):
        total = _lse(row)

        def log_mass(n: int, row=row, total=total) -> float:  # log P(n): log of the summed leaf probs below n
            return _lse([row[k] for k in _leaf_below(tax, n)]) - total

        path = _path(tax, int(t))
        loss = 0.0
        for parent, node in itertools.pairwise(path):
            lam = math.exp(-alpha * (tax.depth(node) - 1)) * w[node]  # the decision at depth d: exp(-alpha (d - 1))
            loss -= lam * (log_mass(node) - log_mass(parent))
        mean_nll = -sum(v - total for v in row) / len(row)
        out.append((1 - smoothing) * loss + smoothing * mean_nll)
    return out


def soft_label_loss(logits, target, tax: Taxonomy, beta: float, weight=None, smoothing: float = 0.0) -> list[float]:
    """Bertinetto et al. (2020) soft labels: y_A ∝ exp(-beta d(A, t)), d = height(LCA) / tree height."""
    w = _weight(weight, tax)
    leaves = tax.leaf_index.tolist()
    tree_height = max(_height(tax, 0), 1)
    out = []
    for row, t in zip(_rows(logits), list(target)):
        t = int(t)
        total = _lse(row)
        scores = [math.exp(-beta * _height(tax, _lca(tax, leaf, t)) / tree_height) for leaf in leaves]
        norm = sum(scores)
        goal = [(1 - smoothing) * s / norm + smoothing / len(leaves) for s in scores]
        out.append(w[t] * -sum(g * (v - total) for g, v in zip(goal, row)))
    return out


def balanced_weight(taxonomy: Taxonomy, targets: Sequence[str], within: str = "siblings", power: float = 1.0):
    """Per-node balanced weights by name. ``"siblings"`` / ``"levels"``: count, per node, the targets that
    reach it, then divide each decision's mean count over its present options by the node's count.
    ``"leaves"``: the same over the leaves (targets equal to the leaf), and an inner node gets the total
    weight of the leaf samples below it spread over those samples and its own (partial labels).
    Returns ``{name: weight}``."""
    names = list(taxonomy.nodes)
    out = {}
    if within == "leaves":
        leaves = [v for v in names if not taxonomy.children(v)]
        count = {v: sum(1 for t in targets if t == v) for v in leaves}
        present = [v for v in leaves if count[v] > 0]
        mean = sum(count[v] for v in present) / len(present) if present else 0.0
        leaf_weight = {v: mean / count[v] for v in present}
        for v in names:
            below = [u for u in present if u == v or v in taxonomy.ancestors(u)]
            total = sum(count[u] for u in below)
            own = sum(1 for t in targets if t == v) if taxonomy.children(v) else 0  # partial labels at v
            out[v] = (sum(count[u] * leaf_weight[u] for u in below) / (total + own)) ** power if total else 1.0
        return out
    count = {v: sum(1 for t in targets if t == v or v in taxonomy.ancestors(t)) for v in names}
    if within == "levels":
        options_of = {v: [u for u in names if taxonomy.depth(u) == taxonomy.depth(v)] for v in names}
    else:
        root = names[0]
        options_of = {v: [root] if v == root else list(taxonomy.children(taxonomy.parents(v)[0])) for v in names}
    for v in names:
        if count[v] == 0:
            out[v] = 1.0
            continue
        present = [count[u] for u in options_of[v] if count[u] > 0]
        out[v] = (sum(present) / len(present) / count[v]) ** power
    return out
