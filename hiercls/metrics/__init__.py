"""Hierarchical metrics: pure functions (:mod:`~hiercls.metrics.functional`) and torchmetrics classes.

Functions take ``(y_true, y_pred, taxonomy, ...)`` with node names or indices;
classes accumulate over batches with ``update(preds, target)`` and reduce
across DDP processes. See :mod:`hiercls.metrics.functional` for the formulas.

The classes (and torchmetrics, which imports matplotlib when it is installed)
load on first use, so the functions and the decoders import quickly.
"""

from typing import TYPE_CHECKING, Any

from hiercls.metrics.functional import (
    accuracy,
    correct_rate,
    distance_at_k,
    hierarchical_f1,
    hierarchical_fbeta,
    hierarchical_precision,
    hierarchical_precision_recall_fscore,
    hierarchical_recall,
    inconsistency_rate,
    lca_distance,
    lca_f1,
    lca_precision,
    lca_recall,
    level_accuracy,
    level_confusion_matrix,
    level_precision_recall_f1,
    mistake_severity,
    node_average_precision,
    node_recall,
    summary,
)

__all__ = [
    "LCAF1",
    "CorrectRate",
    "DistanceAtK",
    "HierarchicalF1",
    "HierarchicalFBeta",
    "HierarchicalMetrics",
    "HierarchicalPrecision",
    "HierarchicalRecall",
    "InconsistencyRate",
    "LCAPrecision",
    "LCARecall",
    "LevelAccuracy",
    "MistakeSeverity",
    "NodeRecall",
    "accuracy",
    "correct_rate",
    "distance_at_k",
    "hierarchical_f1",
    "hierarchical_fbeta",
    "hierarchical_precision",
    "hierarchical_precision_recall_fscore",
    "hierarchical_recall",
    "inconsistency_rate",
    "lca_distance",
    "lca_f1",
    "lca_precision",
    "lca_recall",
    "level_accuracy",
    "level_confusion_matrix",
    "level_precision_recall_f1",
    "mistake_severity",
    "node_average_precision",
    "node_recall",
    "summary",
]

_CLASSES = (
    "LCAF1",
    "CorrectRate",
    "DistanceAtK",
    "HierarchicalF1",
    "HierarchicalFBeta",
    "HierarchicalMetrics",
    "HierarchicalPrecision",
    "HierarchicalRecall",
    "InconsistencyRate",
    "LCAPrecision",
    "LCARecall",
    "LevelAccuracy",
    "MistakeSeverity",
    "NodeRecall",
)

if TYPE_CHECKING:  # pragma: no cover
    from hiercls.metrics.classes import (
        LCAF1,
        CorrectRate,
        DistanceAtK,
        HierarchicalF1,
        HierarchicalFBeta,
        HierarchicalMetrics,
        HierarchicalPrecision,
        HierarchicalRecall,
        InconsistencyRate,
        LCAPrecision,
        LCARecall,
        LevelAccuracy,
        MistakeSeverity,
        NodeRecall,
    )


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        from hiercls.metrics import classes

        return getattr(classes, name)
    raise AttributeError(f"module 'hiercls.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
