"""Slow, obviously-correct reference decoders: exhaustive search over nodes, one sample at a time."""

from __future__ import annotations

import itertools
import math

import numpy as np

from hiercls import Taxonomy


def random_marginals(tax: Taxonomy, rng: np.random.Generator, batch: int, *, leaves_only: bool = False) -> np.ndarray:
    """Coherent marginals: draw a distribution q over nodes, then P(a) = sum of q over subtree(a)."""
    pool = tax.leaf_index if leaves_only else np.arange(tax.num_nodes)
    q = np.zeros((batch, tax.num_nodes))
    q[:, pool] = rng.dirichlet(np.full(len(pool), 0.3), size=batch)
    probs = np.zeros_like(q)
    for n in range(tax.num_nodes):
        for a in tax.ancestors(n, include_self=True):
            probs[:, tax.index(a)] += q[:, n]
    return probs


def exclusive_mass(row: np.ndarray, tax: Taxonomy) -> np.ndarray:
    """q(y) = P(y) - sum of its children's P, clipped at 0."""
    q = row.astype(np.float64).copy()
    for n in range(tax.num_nodes):
        for c in tax.children(n):
            q[n] -= row[tax.index(c)]
    return np.maximum(q, 0.0)


def path_set(tax: Taxonomy, n: int) -> set[str]:
    """A(n): the node and its ancestors, root excluded."""
    return set(tax.ancestors(n, include_self=True)) - {tax.root}


def lca_slow(tax: Taxonomy, a: int, b: int) -> int:
    common = set(tax.ancestors(a, include_self=True)) & set(tax.ancestors(b, include_self=True))
    return max((tax.index(x) for x in common), key=lambda i: (tax.depth(i), -i))


def expected_cost(row: np.ndarray, tax: Taxonomy, cost: str | np.ndarray | None) -> np.ndarray:
    """sum_y q(y) d(n, y) for every node n, by enumeration of (n, y) pairs."""
    q = exclusive_mass(row, tax)
    out = np.zeros(tax.num_nodes)
    if cost is None or (isinstance(cost, str) and cost == "auto"):  # the metrics' default distance
        leaf_depths = {tax.depth(n) for n in range(tax.num_nodes) if tax.is_leaf_mask[n]}
        cost = "height" if len(leaf_depths) == 1 else "path"
    for n in range(tax.num_nodes):
        for y in range(tax.num_nodes):
            lca = lca_slow(tax, n, y)
            if isinstance(cost, str) and cost == "path":
                d = tax.depth(n) + tax.depth(y) - 2 * tax.depth(lca)
            elif isinstance(cost, str) and cost == "height":
                d = tax.height(lca)
            else:
                d = cost[lca]
            out[n] += q[y] * d
    return out


def hf_score(tax: Taxonomy, n: int, y: int, beta: float) -> float:
    a, b = path_set(tax, n), path_set(tax, y)
    den = beta**2 * len(b) + len(a)
    return 0.0 if den == 0 else (1 + beta**2) * len(a & b) / den


def expected_hf(row: np.ndarray, tax: Taxonomy, beta: float) -> np.ndarray:
    q = exclusive_mass(row, tax)
    return np.array([sum(q[y] * hf_score(tax, n, y, beta) for y in range(tax.num_nodes)) for n in range(tax.num_nodes)])


def threshold_decode(row: np.ndarray, tax: Taxonomy, tau: float) -> int:
    """Deepest qualifying node (the root always qualifies); ties: larger marginal, then smaller index."""
    candidates = [0] + [n for n in range(1, tax.num_nodes) if row[n] >= tau]
    return max(candidates, key=lambda n: (tax.depth(n), row[n], -n))


def top_down_decode(row: np.ndarray, tax: Taxonomy) -> int:
    n = 0
    while tax.children(n):
        kids = [tax.index(c) for c in tax.children(n)]
        n = max(kids, key=lambda c: (row[c], -c))
    return n


def info(tax: Taxonomy, n: int) -> float:
    under = sum(1 for d in tax.descendants(n, include_self=True) if tax.is_leaf(d))
    return math.log(tax.num_leaves) - math.log(under)


def curve_point(probs: np.ndarray, target: list[int], tax: Taxonomy, tau: float, measure: str) -> tuple[float, float]:
    """(specificity, correct) of the threshold rule at tau, sample by sample."""
    measure_of = (lambda n: info(tax, n)) if measure == "info" else tax.depth
    spec, correct = [], []
    for row, t in zip(probs, target):
        p = threshold_decode(row, tax, tau)
        # the most specific common ancestor under the measure (on a DAG several can be deepest)
        common = set(tax.ancestors(p, include_self=True)) & set(tax.ancestors(t, include_self=True))
        shared = max(measure_of(tax.index(a)) for a in common)
        spec.append(1.0 if measure_of(t) == 0 else shared / measure_of(t))
        correct.append(float(tax.nodes[p] in tax.ancestors(t, include_self=True)))
    return float(np.mean(spec)), float(np.mean(correct))


def conformal_score(row: np.ndarray, tax: Taxonomy, target: int) -> float:
    """The largest threshold at which the threshold rule answers wrongly (-inf if never), by trying every
    marginal of the row: the answer only changes there."""
    right = set(tax.ancestors(target, include_self=True))
    wrong = [float(v) for v in set(row[1:].tolist()) if tax.nodes[threshold_decode(row, tax, float(v))] not in right]
    return max(wrong, default=-math.inf)


def conformal_threshold(probs: np.ndarray, target: list[int], tax: Taxonomy, error: float, confidence=None) -> float:
    """Split conformal by the textbook: k from the formula, the k-th largest score, the next float above it."""
    from fractions import Fraction

    n = len(target)
    if confidence is None:
        k = math.floor(Fraction(repr(error)) * (n + 1))
    else:  # the largest k with P(Binomial(n, error) <= k - 1) <= 1 - confidence, summed term by term
        cdf, k = 0.0, 0
        for j in range(n + 1):
            cdf += math.comb(n, j) * error**j * (1 - error) ** (n - j)
            if cdf > 1 - confidence + 1e-12:
                break
            k = j + 1
    if k == 0:
        return math.inf
    scores = sorted((conformal_score(row, tax, t) for row, t in zip(probs, target)), reverse=True)
    kth = scores[k - 1]
    return 0.0 if kth < 0 else float(np.nextafter(kth, math.inf))


def front_area(specificity, correct) -> float:
    """``integral_0^1 max{correct_j : specificity_j >= x} dx`` (0 where no point reaches x), by the
    definition: the integrand is constant between consecutive specificities, so it is evaluated by brute
    force at the midpoint of each piece and multiplied by the piece's width."""
    points = list(zip(map(float, specificity), map(float, correct)))
    cuts = sorted({0.0, 1.0} | {min(max(s, 0.0), 1.0) for s, _ in points})
    area = 0.0
    for lo, hi in itertools.pairwise(cuts):
        mid = (lo + hi) / 2
        area += (hi - lo) * max((c for s, c in points if s >= mid), default=0.0)
    return area
