"""Exceptions raised by hiercls."""

from __future__ import annotations

__all__ = ["TaxonomyError", "UnknownNodeError"]


class TaxonomyError(ValueError):
    """A taxonomy is malformed, or an operation does not apply to it.

    Raised at construction for cycles, zero or several roots, self-loops, empty
    taxonomies, unknown parents and ambiguous duplicate names, and by tree-only
    operations (such as :meth:`hiercls.Taxonomy.lca`) called on a DAG.
    """


class UnknownNodeError(TaxonomyError, KeyError):
    """A node name or index does not belong to the taxonomy.

    Subclasses both :class:`TaxonomyError` (hence ``ValueError``) and ``KeyError``.
    The message lists the closest known names when there are any.
    """

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""
