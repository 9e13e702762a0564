"""Synthetic taxonomies for tests, benchmarks and demos."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from hiercls.errors import TaxonomyError
from hiercls.taxonomy import Taxonomy

__all__ = ["INAT21_WIDTHS", "layered_taxonomy"]

INAT21_WIDTHS: tuple[int, ...] = (3, 13, 51, 273, 1103, 4884, 10000)
"""Level widths of the iNaturalist 2021 taxonomy below its root (16,328 nodes with the root)."""


def layered_taxonomy(widths: Sequence[int] = INAT21_WIDTHS, *, seed: int = 0) -> Taxonomy:
    """A random tree with the given number of nodes per level below the root.

    Each node's parent is drawn at random from the level above, and every node
    of a level above gets at least one child, so all leaves sit at depth
    ``len(widths)``. With the default widths this is the iNat21-shaped tree of
    the benchmarks (16,328 nodes, 10,000 leaves).

    Args:
        widths: number of nodes at depths 1, 2, ...; each at least the one before.
        seed: seed of the random parent assignment.

    Raises:
        TaxonomyError: a width is smaller than the one above it, or not positive.

    Examples:
        >>> tax = layered_taxonomy((2, 4, 8), seed=0)
        >>> tax.num_nodes, tax.num_leaves, tax.max_depth
        (15, 8, 3)
    """
    widths = [int(w) for w in widths]
    if not widths or any(w < 1 for w in widths):
        raise TaxonomyError(f"widths: expected positive level widths, got {widths}.")
    if any(b < a for a, b in itertools.pairwise(widths)):
        raise TaxonomyError(
            f"widths: each level needs at least as many nodes as the one above (every parent gets a child), got {widths}."
        )
    rng = np.random.default_rng(seed)
    edges: list[tuple[str, str]] = []
    above = ["root"]
    for depth, width in enumerate(widths, start=1):
        parents = np.concatenate([rng.permutation(len(above)), rng.integers(0, len(above), width - len(above))])
        names = [f"L{depth}_{k}" for k in range(width)]
        edges.extend((above[p], names[k]) for k, p in enumerate(parents.tolist()))
        above = names
    return Taxonomy.from_edges(edges)
