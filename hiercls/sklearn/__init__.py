"""scikit-learn estimators over the same taxonomy, decoders and metrics as the PyTorch side.

Four estimators follow scikit-learn's conventions (``fit``/``predict``/
``predict_proba``/``score``, fitted attributes ending in ``_``, ``Pipeline``,
``GridSearchCV``, pickling, ``parametrize_with_checks``):

- :class:`LocalClassifierPerParentNode`: one scikit-learn classifier per inner
  node, trained only on the samples below it, chained into node marginals;
- :class:`LocalClassifierPerLevel`: one scikit-learn classifier per depth (the
  "one model per level" of Hamdi et al.), renormalised within sibling groups;
- :class:`LocalClassifierPerNode`: one binary classifier per node against its
  siblings, renormalised within sibling groups;
- :class:`HierarchicalHeadClassifier`: a linear or MLP network with a hiercls
  head trained with a hiercls loss (a linear probe on frozen embeddings).

All return node marginals ``(n_samples, num_nodes)`` from ``predict_marginals``
(columns named by ``nodes_``) and the columns of ``classes_`` from
``predict_proba`` (what scikit-learn's metrics and meta-estimators read), decode
the marginals with :func:`hiercls.decoding.decode`
(which can stop at an inner node), and score with the hierarchical F1 of
:mod:`hiercls.metrics`. Scorers for model selection: :func:`make_hierarchical_scorer`
and the ready-made ``hierarchical_f1_scorer`` and friends.

scikit-learn is an optional dependency (``pip install hiercls[sklearn]``);
``import hiercls`` does not need it.
"""

from __future__ import annotations

from hiercls.sklearn._compat import _check_sklearn_version

try:
    import sklearn
except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "hiercls.sklearn needs scikit-learn: pip install 'hiercls[sklearn]' (or pip install scikit-learn)."
    ) from err
else:
    _check_sklearn_version(sklearn.__version__)

from hiercls.sklearn._head import HeadNetwork, HierarchicalHeadClassifier
from hiercls.sklearn._level import LocalClassifierPerLevel
from hiercls.sklearn._local import LocalClassifierPerParentNode
from hiercls.sklearn._node import LocalClassifierPerNode
from hiercls.sklearn._scoring import (
    HierarchicalScorer,
    hierarchical_f1_scorer,
    hierarchical_precision_scorer,
    hierarchical_recall_scorer,
    lca_f1_scorer,
    make_hierarchical_scorer,
    neg_mistake_severity_scorer,
)

__all__ = [
    "HeadNetwork",
    "HierarchicalHeadClassifier",
    "HierarchicalScorer",
    "LocalClassifierPerLevel",
    "LocalClassifierPerNode",
    "LocalClassifierPerParentNode",
    "hierarchical_f1_scorer",
    "hierarchical_precision_scorer",
    "hierarchical_recall_scorer",
    "lca_f1_scorer",
    "make_hierarchical_scorer",
    "neg_mistake_severity_scorer",
]
