"""Exceptions raised by hiercls."""

from __future__ import annotations

__all__ = ["TaxonomyError", "UnknownNodeError"]


class TaxonomyError(ValueError):
    """A taxonomy is malformed, or an operation does not apply to it.

    Raised at construction for cycles, zero or several roots, self-loops, empty
    taxonomies, unknown parents and ambiguous duplicate names, and by tree-only
    operations (such as :meth:`hiercls.Taxonomy.lca`) called on a DAG.

    Examples:
        >>> from hiercls import Taxonomy, TaxonomyError
        >>> try:
        ...     Taxonomy.from_edges([("blood", "a"), ("marrow", "b")])
        ... except TaxonomyError as err:
        ...     print(err)
        The taxonomy has 2 roots: 'blood', 'marrow'. Give root='...' to join them under a common root.
    """


class UnknownNodeError(TaxonomyError, KeyError):
    """A node name or index does not belong to the taxonomy.

    Subclasses both :class:`TaxonomyError` (hence ``ValueError``) and ``KeyError``.
    The message lists the closest known names when there are any.

    Examples:
        >>> from hiercls import Taxonomy, UnknownNodeError
        >>> tax = Taxonomy.from_paths(["root/ALL", "root/AML"])
        >>> try:
        ...     tax.index("AMLL")
        ... except UnknownNodeError as err:
        ...     print(err)
        Unknown node 'AMLL': not in this taxonomy (3 nodes, root 'root'). Closest known names: 'AML', 'ALL'.
    """

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""
