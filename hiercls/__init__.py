"""hiercls: hierarchical classification for PyTorch.

One validated taxonomy object, heads and masked per-node losses, hierarchical
decoding (including stopping at an inner node when unsure) and hierarchical
metrics. See https://hiercls.readthedocs.io (or ``mkdocs serve`` in the repo).
"""

from hiercls.errors import TaxonomyError, UnknownNodeError
from hiercls.taxonomy import Taxonomy

__version__ = "0.1.0"

__all__ = ["Taxonomy", "TaxonomyError", "UnknownNodeError", "__version__"]
