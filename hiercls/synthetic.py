"""Synthetic taxonomies for tests, benchmarks and demos."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence

import numpy as np

from hiercls.errors import TaxonomyError
from hiercls.taxonomy import Taxonomy

__all__ = ["INAT21_WIDTHS", "layered_taxonomy"]

INAT21_WIDTHS: tuple[int, ...] = (3, 13, 51, 273, 1103, 4884, 10000)
"""Level widths of the iNaturalist 2021 taxonomy below its root (16,328 nodes with the root)."""


def layered_taxonomy(widths: Sequence[int] = INAT21_WIDTHS, *, seed: int | None = 0) -> Taxonomy:
    """A random tree with the given number of nodes per level below the root.

    Each node's parent is drawn at random from the level above, and every node
    of a level above gets at least one child, so all leaves sit at depth
    ``len(widths)``. With the default widths this is the iNat21-shaped tree of
    the benchmarks (16,328 nodes, 10,000 leaves).

    Args:
        widths: number of nodes at depths 1, 2, ... (the root is added above): a
            non-empty sequence (or 1-d integer array) of positive ints, each at
            least the one before. A single level is ``(n,)``, not ``n``.
        seed: seed of the random parent assignment, an int >= 0 (``None``: a new random tree
            on every call, from fresh entropy, as ``numpy.random.default_rng(None)``).

    Raises:
        TaxonomyError: ``widths`` is not a non-empty sequence of positive ints (a
            float, a bool or a string is refused rather than converted), or a
            width is smaller than the one above it.
        ValueError: ``seed`` is not an int >= 0 or None.

    Examples:
        >>> tax = layered_taxonomy((2, 4, 8), seed=0)
        >>> tax.num_nodes, tax.num_leaves, tax.max_depth
        (15, 8, 3)
    """
    widths = _checked_widths(widths)
    if any(b < a for a, b in itertools.pairwise(widths)):
        raise TaxonomyError(
            f"widths: each level needs at least as many nodes as the one above (every parent gets a child), got {widths}."
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed: expected an int >= 0 (or None for a random tree), got {seed!r}.")
    rng = np.random.default_rng(None if seed is None else int(seed))
    edges: list[tuple[str, str]] = []
    above = ["root"]
    for depth, width in enumerate(widths, start=1):
        parents = np.concatenate([rng.permutation(len(above)), rng.integers(0, len(above), width - len(above))])
        names = [f"L{depth}_{k}" for k in range(width)]
        edges.extend((above[p], names[k]) for k, p in enumerate(parents.tolist()))
        above = names
    return Taxonomy.from_edges(edges)


def _checked_widths(widths: object) -> list[int]:
    """``widths`` as a list of positive ints, or a TaxonomyError that names it."""
    if isinstance(widths, (int, np.integer)) and not isinstance(widths, (bool, np.bool_)):
        raise TaxonomyError(
            f"widths: expected a sequence of level widths, got the int {widths}. For one level below the root "
            f"pass ({widths},)."
        )
    ok_array = isinstance(widths, np.ndarray) and widths.ndim == 1
    if isinstance(widths, (str, bytes)) or not (isinstance(widths, Sequence) or ok_array):
        raise TaxonomyError(
            f"widths: expected a sequence of positive ints (nodes at depths 1, 2, ...), got "
            f"{type(widths).__name__} {widths!r}. Pass e.g. (3, 13, 51)."
        )
    values = list(widths)  # type: ignore[arg-type]
    if not values:
        raise TaxonomyError("widths: expected at least one level width, got an empty sequence. Pass e.g. (3, 13, 51).")
    for k, w in enumerate(values):
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)) or w < 1:
            raise TaxonomyError(
                f"widths[{k}]: expected a positive int (a number of nodes), got {type(w).__name__} {w!r}. "
                "Give whole, positive numbers of nodes, e.g. (3, 13, 51)."
            )
    return [int(w) for w in values]
