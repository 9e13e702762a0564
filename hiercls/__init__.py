"""hiercls: hierarchical classification for PyTorch.

One validated taxonomy object, heads and masked per-node losses, hierarchical
decoding (including stopping at an inner node when unsure) and hierarchical
metrics.

Submodules are loaded on first use (``hiercls.losses`` works after
``import hiercls``), so importing the package stays cheap and never pulls in
matplotlib, scikit-learn or timm:

- :mod:`hiercls.taxonomy`: :class:`Taxonomy`
- :mod:`hiercls.heads`, :mod:`hiercls.marginals`: heads and node marginals
- :mod:`hiercls.losses`: masked per-node losses
- :mod:`hiercls.decoding`: from marginals to predicted nodes
- :mod:`hiercls.metrics`: hierarchical metrics (functions and DDP-ready classes)
- :mod:`hiercls.plot`: figures (needs matplotlib)
- :mod:`hiercls.sklearn`: scikit-learn estimators (needs scikit-learn)
- :mod:`hiercls.synthetic`: synthetic taxonomies

Examples:
    >>> import hiercls
    >>> tax = hiercls.Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    >>> hiercls.decoding.decode([[1.0, 0.7, 0.3, 0.4, 0.3]], tax, rule="threshold").tolist()
    [1]
"""

from __future__ import annotations

import importlib
from typing import Any

from hiercls.errors import TaxonomyError, UnknownNodeError
from hiercls.taxonomy import Taxonomy

__version__ = "0.1.0"
"""This release of hiercls (PEP 440), the `version` of `pyproject.toml`."""

_SUBMODULES = ("decoding", "heads", "losses", "marginals", "metrics", "plot", "sklearn", "synthetic", "taxonomy")

__all__ = ["Taxonomy", "TaxonomyError", "UnknownNodeError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"hiercls.{name}")
    raise AttributeError(f"module 'hiercls' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
