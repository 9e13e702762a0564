"""Stateful metrics: torchmetrics ``Metric`` shells over :mod:`hiercls.metrics.functional`.

Each class declares additive states (``dist_reduce_fx="sum"``), so batches
accumulate, ``reset()`` clears, and ``compute()`` under DDP sums the states of
every process before dividing: the result equals the one-shot functional
value on the concatenated data (macro averages: up to float rounding, since
per-batch float64 sums are added in another order). ``update(preds, target)``
takes ``(B,)`` node indices (or names) in torchmetrics' argument order
(predictions first). ``compute()`` returns 0-d float64 tensors (or a dict of
them) on the metric's device (float32 on Apple's MPS, which has no float64), as
torchmetrics' wrappers (``BootStrapper``, ``MetricTracker``) and Lightning's
``self.log`` expect; ``float()`` gives the number, equal to the functional
form's. Three differ: :class:`NodeRecall` returns a ``(num_nodes,)`` tensor,
:class:`DistanceAtK` takes ``(B, k)`` top-k predictions and
:class:`InconsistencyRate` takes node marginals alone. Macro-averaged
precision, recall and F and the LCA metrics keep float64 sums, so they stay
off MPS (keep such a metric on the CPU); every other state is an integer count.

By default each batch is encoded and checked on the host (one small copy of the two index
vectors per batch). With ``validate_args=False`` (torchmetrics' name), a tree's batches of index
tensors already on the metric's device are counted there: the lowest common ancestors come from
the taxonomy's Euler-tour tables moved to the device, so an update never waits for the GPU.
Off the CPU nothing checks the indices then: an index out of range, negative ones included, fails
inside the gather (a device-side assert on CUDA), as it would in the losses with ``validate_args=False``.
On the CPU, where reading them back costs no device sync, an index out of range is refused as the
checked path refuses it (``UnknownNodeError`` naming the value passed and the range
``[0, num_nodes)``). No index stands for "no label" (-1 included): a sample labelled only partly takes
the inner node it reaches, and a sample with no label at all is left out of the batch.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, NamedTuple

import numpy as np
import torch
from torchmetrics import Metric

from hiercls.metrics.functional import (
    Average,
    Distance,
    Measure,
    _as_probs,
    _check_beta,
    _check_option,
    _check_taxonomy,
    _check_zero_division,
    _count_inconsistent,
    _distance,
    _encode,
    _encode_pair,
    _fbeta,
    _level_counts,
    _measure,
    _node_recall_counts,
    _pair_stats,
    _require_tree,
    _resolve_distance,
    _safe_div,
    _scalar,
    _summary_counts,
    _summary_from_counts,
)
from hiercls.taxonomy import LabelsLike, Taxonomy

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
]

_COUNT_KEYS = ("total", "exact", "inter", "size_true", "size_pred", "mistakes", "severity", "correct")


class _Missing:
    """Stands for an option a metric lacks, in merge_state's messages."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _int_state() -> torch.Tensor:
    return torch.tensor(0, dtype=torch.int64)


class _TreeTables(NamedTuple):
    """A tree's LCA tables on one device: Euler tour first visits, its sparse table of
    shallowest nodes, floor(log2), depth and height. ``O(num_nodes log num_nodes)``."""

    first: torch.Tensor
    sparse: torch.Tensor
    log2: torch.Tensor
    depth: torch.Tensor
    height: torch.Tensor


@functools.lru_cache(maxsize=16)
def _tree_tables(taxonomy: Taxonomy, device: str) -> _TreeTables:
    def put(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(a, dtype=np.int64), device=device)

    return _TreeTables(
        put(taxonomy._euler_first),
        put(taxonomy._sparse),
        put(taxonomy._log2),
        put(taxonomy.depth_index),
        put(taxonomy.height_index),
    )


@functools.lru_cache(maxsize=16)
def _measure_table(taxonomy: Taxonomy, measure: str, device: str) -> torch.Tensor:
    """The LCA metrics' per-node ``c`` (float64) on one device."""
    return torch.as_tensor(_measure(taxonomy, measure), dtype=torch.float64, device=device)


@functools.lru_cache(maxsize=16)
def _ancestor_table(taxonomy: Taxonomy, device: str) -> torch.Tensor:
    """:attr:`hiercls.Taxonomy.ancestor_table` on one device, with ``num_nodes`` (a bin dropped after
    counting) in place of its -1 below a node's depth."""
    table = taxonomy.ancestor_table
    return torch.as_tensor(np.where(table < 0, taxonomy.num_nodes, table), device=device)


@functools.lru_cache(maxsize=16)
def _edge_tables(taxonomy: Taxonomy, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(parents, children)`` of every edge, int64 on one device."""
    edges = np.array(taxonomy.edges_index(), dtype=np.int64).reshape(-1, 2)
    return torch.as_tensor(edges[:, 0].copy(), device=device), torch.as_tensor(edges[:, 1].copy(), device=device)


def _device_lca(tables: _TreeTables, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Lowest common ancestors of trusted index tensors, on their device (the range-minimum query
    of :meth:`hiercls.Taxonomy.lca`, in torch): no read-back."""
    fa, fb = tables.first[t], tables.first[p]
    lo, hi = torch.minimum(fa, fb), torch.maximum(fa, fb)
    k = tables.log2[hi - lo + 1]
    x = tables.sparse[k, lo]
    y = tables.sparse[k, hi - (1 << k) + 1]
    return torch.where(tables.depth[x] <= tables.depth[y], x, y)


def _torch_safe_div(num: torch.Tensor, den: torch.Tensor, zero_division: float) -> torch.Tensor:
    """``num / den`` in float64, ``zero_division`` where ``den == 0`` (:func:`_safe_div` on the device)."""
    num, den = num.double(), den.double()
    return torch.where(den != 0, num / torch.where(den != 0, den, 1.0), zero_division)


class _TaxonomyMetric(Metric):
    is_differentiable = False
    full_state_update = False

    def __init__(self, taxonomy: Taxonomy, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.taxonomy = _check_taxonomy(taxonomy)
        if not isinstance(validate_args, bool):
            raise TypeError(f"validate_args: expected True or False, got {validate_args!r}.")
        self.validate_args = validate_args

    def _key_state(self, **options: Any) -> None:
        """Name what ``update`` adds: one empty-valued state whose name hashes the update, taxonomy and options.

        torchmetrics' ``MetricCollection`` (compute groups, on by default) merges metrics whose states
        have the same names and values after the first update, and then updates only one of them.
        ``MistakeSeverity(distance="height")`` and ``distance="path"`` have the same states, equal after a
        batch without mistakes, yet add different values: merged, both reported the first one's numbers.
        Metrics that add the same thing (``HierarchicalPrecision`` and ``HierarchicalRecall`` with the
        same options) still share their states.
        """
        what = (type(self).update.__qualname__, self.taxonomy.fingerprint, sorted(options.items()))
        digest = hashlib.sha1(repr(what).encode("utf-8", "surrogatepass")).hexdigest()[:16]
        self._update_key = f"update_key_{digest}"
        self._key_options = dict(options)
        self.add_state(self._update_key, default=_int_state(), dist_reduce_fx="sum")

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add another metric's (or a ``metric_state`` dict's) counts to this one's (torchmetrics' merge).

        The two must count the same thing: the same class (or a subclass with the same ``update``),
        taxonomy and options. Otherwise a :class:`ValueError` names what differs, rather than a state
        named by a hash. A metric pickled by an older hiercls (no ``_update_key``) is compared by its
        option attributes, and the states it lacks are filled as a loaded ``state_dict``'s are.
        """
        key = getattr(self, "_update_key", None)
        if key is not None and isinstance(incoming_state, type(self)):
            theirs, mine = incoming_state, self
            if theirs.taxonomy.fingerprint != mine.taxonomy.fingerprint:
                raise ValueError(
                    f"incoming_state: expected a {type(self).__name__} over the same taxonomy "
                    f"(fingerprint {mine.taxonomy.fingerprint[:12]}...), got one over another "
                    f"({theirs.taxonomy.fingerprint[:12]}...). Merge only metrics built on one Taxonomy."
                )
            states = dict(theirs.metric_state)
            their_key = getattr(theirs, "_update_key", None)
            if their_key is None:  # pickled before merge_state compared keys: its options are its attributes
                other_options = {name: getattr(theirs, name, _MISSING) for name in self._key_options}
                their_keys = [k for k in states if k.startswith("update_key_")]
                same = their_keys in ([], [key]) and all(
                    repr(v) == repr(other_options[k]) for k, v in self._key_options.items()
                )
                states.setdefault(key, torch.zeros_like(getattr(self, key)))  # an empty-valued state: adds 0
                self._upgrade_states(states)
            else:
                other_options = getattr(theirs, "_key_options", {})
                same = their_key == key  # the hash of the options' reprs: NaN equals NaN
            if not same:
                differ = ", ".join(
                    f"{name}={self._key_options.get(name, _MISSING)!r} here, "
                    f"{other_options.get(name, _MISSING)!r} there"
                    for name in sorted(set(self._key_options) | set(other_options))
                    if repr(self._key_options.get(name, _MISSING)) != repr(other_options.get(name, _MISSING))
                ) or (f"update {type(self).update.__qualname__} here, {type(theirs).update.__qualname__} there")
                raise ValueError(
                    f"incoming_state: expected a {type(self).__name__} with the same options, got one that "
                    f"differs ({differ}); their sums count different things. Merge metrics built alike."
                )
            missing = sorted(set(self._defaults) - set(states))
            if missing:
                raise ValueError(
                    f"incoming_state: expected a {type(self).__name__} holding the states {sorted(self._defaults)}, "
                    f"got one without {missing} (pickled by an hiercls too old to merge with). Recompute it, or "
                    "merge metrics made by this version."
                )
            incoming_state = states
        elif key is not None and isinstance(incoming_state, dict) and key not in incoming_state:
            options = ", ".join(f"{k}={v!r}" for k, v in sorted(self._key_options.items())) or "no options"
            raise ValueError(
                f"incoming_state: expected the metric_state of a {type(self).__name__} over this taxonomy "
                f"with {options} (it holds a state named {key!r}), got a dict with states "
                f"{sorted(incoming_state)}: it comes from a metric built on another taxonomy, with other "
                "options or of another class. Merge states of metrics built alike."
            )
        super().merge_state(incoming_state)

    def _apply(self, fn: Any, exclude_state: Any = "") -> Any:
        """Move the states as torchmetrics does, but keep the float64 sums float64 under ``module.to(dtype)``.

        torchmetrics ignores ``.half()``/``.float()`` but not ``.to(torch.bfloat16)``, which Lightning's
        ``precision="bf16-true"`` calls on the whole module: the macro sums of per-sample ratios became
        bfloat16 and stalled far from their value. Only :meth:`set_dtype` changes their dtype now.
        """
        if getattr(self, "_dtype_convert", False):
            return super()._apply(fn, exclude_state)
        floats = {
            k: (getattr(self, k), d)
            for k, d in getattr(self, "_defaults", {}).items()
            if isinstance(d, torch.Tensor) and d.is_floating_point()
        }
        this = super()._apply(fn, exclude_state)
        for key, (value, default) in floats.items():
            moved = getattr(this, key)
            if isinstance(moved, torch.Tensor) and moved.dtype != value.dtype:
                setattr(this, key, value.to(moved.device))
                this._defaults[key] = default.to(moved.device)
        return this

    def _upgrade_states(self, states: dict[str, Any], prefix: str = "") -> None:
        """Fill, in place, the states that metrics saved before the macro sums counted their ratios lack.

        Such states have ``sum_<ratio>`` and ``total`` but no ``n_<ratio>`` (and ``LCAF1``'s ``sum_f1``
        for ``sum_fscore``); then every sample held a ratio: ``n = total``.
        """
        if prefix + "sum_f1" in states and prefix + "sum_fscore" not in states:
            states[prefix + "sum_fscore"] = states.pop(prefix + "sum_f1")
        for ratio in ("precision", "recall", "fscore"):
            has_sum = prefix + f"sum_{ratio}" in states and f"n_{ratio}" in self._defaults
            if has_sum and prefix + f"n_{ratio}" not in states and prefix + "total" in states:
                states[prefix + f"n_{ratio}"] = states[prefix + "total"].clone()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        """Read states saved (``persistent(True)``) before the macro sums counted their ratios.

        torchmetrics leaves missing states at their defaults, which would have made every mean NaN
        (0 ratios counted); :meth:`_upgrade_states` fills them.
        """
        self._upgrade_states(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _add_ratios(self, name: str, ratios: Any) -> None:
        """Add per-sample ratios to ``sum_<name>`` and their number to ``n_<name>``, leaving out NaN
        (``zero_division=nan``), so the mean is the functions' (scikit-learn's) NaN-free average."""
        if isinstance(ratios, torch.Tensor):
            kept = ~torch.isnan(ratios)
            self._add(f"sum_{name}", torch.where(kept, ratios, 0.0).sum())
            self._add(f"n_{name}", kept.sum())
            return
        kept = ~np.isnan(ratios)
        self._add(f"sum_{name}", float(np.sum(ratios[kept])))
        self._add(f"n_{name}", int(np.count_nonzero(kept)))

    def _mean_ratio(self, name: str) -> float:
        """``sum_<name> / n_<name>``: NaN when no ratio was defined (every one NaN), ``zero_division``
        when there was no sample at all."""
        count = int(getattr(self, f"n_{name}"))
        if count == 0:
            return float("nan") if int(self.total) else self.zero_division
        return float(getattr(self, f"sum_{name}")) / count

    def _on_device(self, preds: Any, target: Any) -> bool:
        """Whether a batch can be counted on the metric's device: ``validate_args=False``, a tree, and
        integer tensors already on the metric's device (not MPS, which has no float64 for the macro
        sums). Anything else (names, numpy, another device, validation on) goes the checked host path."""
        if self.validate_args or not self.taxonomy.is_tree or self.device.type == "mps":
            return False
        if not (isinstance(preds, torch.Tensor) and isinstance(target, torch.Tensor)):
            return False
        if preds.device != self.device or target.device != self.device:
            return False
        return not any(x.is_floating_point() or x.is_complex() or x.dtype == torch.bool for x in (preds, target))

    def _check_on_cpu(self, x: torch.Tensor, name: str, ndim: int = 1) -> None:
        """Refuse indices out of range on the CPU, where reading them needs no device sync, with the checked
        path's message: the caller's own value and the valid range (the remap of :meth:`_trusted` would
        otherwise have the gather name ``num_nodes``, an index the caller never passed). Off the CPU nothing is
        read back: an index out of range fails inside the gather (a device-side assert on CUDA)."""
        if x.device.type == "cpu":
            _encode(x.detach().numpy(), self.taxonomy, name, ndim=ndim, allow_empty=True)

    def _trusted(self, x: torch.Tensor) -> torch.Tensor:
        """Indices as int64 for the device tables. torch indexing would wrap -1 (a common padding value) to
        the last node and count it silently: negatives go past the end instead, so that they fail in the
        gather like any index out of range."""
        return torch.where(x < 0, self.taxonomy.num_nodes, x.long())

    def _device_pairs(self, preds: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(target, preds)`` as int64 tensors on the metric's device when the batch can be counted there
        (:meth:`_on_device`, and 1-D of one length); None sends it down the checked host path."""
        if not self._on_device(preds, target) or preds.ndim != 1 or preds.shape != target.shape:
            return None
        self._check_on_cpu(target, "target")
        self._check_on_cpu(preds, "preds")
        return self._trusted(target), self._trusted(preds)

    def _device_stats(self, t: torch.Tensor, p: torch.Tensor) -> tuple[_TreeTables, torch.Tensor]:
        tables = _tree_tables(self.taxonomy, str(self.device))
        return tables, _device_lca(tables, t, p)

    def _pairs_numpy(self, preds: LabelsLike, target: LabelsLike) -> tuple[np.ndarray, np.ndarray]:
        # an empty batch (all samples filtered out, an empty DDP shard) adds nothing; it is not an error
        return _encode_pair(target, preds, self.taxonomy, names=("target", "preds"), allow_empty=True)

    def _value(self, value: float) -> torch.Tensor:
        """A computed ratio as a 0-d tensor on the metric's device (torchmetrics' convention)."""
        # float64: the ratio of integer counts stays the functional form's float, digit for digit
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        return torch.tensor(float(value), dtype=dtype, device=self.device)

    def _add(self, name: str, value: Any) -> None:
        state = getattr(self, name)
        if isinstance(value, torch.Tensor) and value.device == state.device:
            setattr(self, name, state + value.to(state.dtype))
            return
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and state.dtype == torch.int64:
            setattr(self, name, state + int(value))  # a Python scalar is a kernel argument: no host-to-device copy
            return
        setattr(self, name, state + torch.as_tensor(np.array(value), dtype=state.dtype, device=state.device))

    def _add_levels(self, lca_depth: torch.Tensor, true_depth: torch.Tensor) -> None:
        """Per depth d: samples correct at d (``depth(lca) >= d``) and samples whose truth reaches d."""
        levels = torch.arange(self.level_correct.shape[0], device=lca_depth.device)
        self._add("level_correct", (lca_depth[:, None] >= levels).sum(0))
        self._add("level_total", (true_depth[:, None] >= levels).sum(0))


class HierarchicalMetrics(_TaxonomyMetric):
    """All of :func:`hiercls.metrics.summary` accumulated over batches (and DDP processes).

    States are integer counts (samples, exact matches, ancestor-set
    intersections and sizes, mistakes and their summed LCA distance, correct
    predictions, per-depth hits); ``compute()`` returns the same dict as
    ``summary`` on all the data seen since the last ``reset()``.

    Before any sample (``compute()`` before ``update()``, after ``reset()``, or after empty
    batches only), every value is a 0/0 ratio and so ``zero_division``, as in the other metric
    classes that take the option (0.0 by default, which reads like a score: pass
    ``zero_division=float("nan")`` to tell "no data" apart), and torchmetrics warns that
    ``compute`` was called before ``update``.

    Args:
        taxonomy: the taxonomy that ``preds`` and ``target`` index.
        distance: the mistake-severity distance (see :func:`hiercls.metrics.lca_distance`).
        zero_division: value of a 0/0 ratio, and of every value before any sample.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ...).

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = HierarchicalMetrics(tax)
        >>> metric.update(torch.tensor([3, 3]), torch.tensor([3, 4]))
        >>> metric.update(torch.tensor([1]), torch.tensor([5]))
        >>> metric.compute()["hierarchical_precision"]
        tensor(0.6000, dtype=torch.float64)
        >>> empty = HierarchicalMetrics(tax, zero_division=float("nan"))
        >>> empty.compute()["accuracy"]  # before any sample: zero_division
        tensor(nan, dtype=torch.float64)
    """

    higher_is_better = None

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        distance: Distance = "auto",
        zero_division: float = 0.0,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        self.distance = _resolve_distance(self.taxonomy, distance)
        self.zero_division = _check_zero_division(zero_division)
        self._key_state(distance=self.distance)
        for key in _COUNT_KEYS:
            self.add_state(key, default=_int_state(), dist_reduce_fx="sum")
        if self.taxonomy.is_tree:
            size = self.taxonomy.max_depth + 1
            self.add_state("level_correct", default=torch.zeros(size, dtype=torch.int64), dist_reduce_fx="sum")
            self.add_state("level_total", default=torch.zeros(size, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: LabelsLike, target: LabelsLike) -> None:
        """Add a batch: ``preds`` and ``target`` are ``(B,)`` node indices or names."""
        pair = self._device_pairs(preds, target)
        if pair is not None:
            t, p = pair
            tables, lca = self._device_stats(t, p)
            lca_depth, dt, dp = tables.depth[lca], tables.depth[t], tables.depth[p]
            wrong = t != p
            dist = torch.where(wrong, tables.height[lca], 0) if self.distance == "height" else dt + dp - 2 * lca_depth
            self._add("total", len(t))
            self._add("exact", (~wrong).sum())
            self._add("inter", lca_depth.sum())
            self._add("size_true", dt.sum())
            self._add("size_pred", dp.sum())
            self._add("mistakes", wrong.sum())
            self._add("severity", dist.sum())  # 0 where t == p under either distance
            self._add("correct", (lca_depth == dp).sum())
            self._add_levels(lca_depth, dt)
            return
        t, p = self._pairs_numpy(preds, target)
        if not len(t):
            return
        for key, value in _summary_counts(self.taxonomy, t, p, self.distance).items():
            self._add(key, value)

    def compute(self) -> dict[str, torch.Tensor]:
        """The :func:`hiercls.metrics.summary` dict of everything seen so far, as 0-d tensors
        (``zero_division`` for every value before any sample)."""
        counts: dict[str, Any] = {key: int(getattr(self, key)) for key in _COUNT_KEYS}
        if self.taxonomy.is_tree:
            counts["level_correct"] = self.level_correct.cpu().numpy()
            counts["level_total"] = self.level_total.cpu().numpy()
        return {k: self._value(v) for k, v in _summary_from_counts(counts, self.zero_division).items()}


class _HierarchicalSetMetric(_TaxonomyMetric):
    """Shared states of hierarchical precision / recall / F-beta (micro sums and macro per-sample sums)."""

    higher_is_better = True
    is_differentiable = False
    _which = 2

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        beta: float = 1.0,
        average: Average = "micro",
        zero_division: float = 0.0,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        self.beta = _check_beta(beta)
        self.average = _check_option(average, "average", ("micro", "macro"))
        self.zero_division = _check_zero_division(zero_division)
        self._key_state(beta=self.beta, average=self.average, zero_division=self.zero_division)
        for key in ("inter", "size_true", "size_pred", "total"):
            self.add_state(key, default=_int_state(), dist_reduce_fx="sum")
        if self.average == "macro":  # float64 sums of per-sample ratios (micro needs none: MPS has no float64)
            for key in ("sum_precision", "sum_recall", "sum_fscore"):
                self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            # how many ratios each sum holds: zero_division=nan ratios are left out, as the functions do
            for key in ("n_precision", "n_recall", "n_fscore"):
                self.add_state(key, default=_int_state(), dist_reduce_fx="sum")

    def update(self, preds: LabelsLike, target: LabelsLike) -> None:
        """Add a batch: ``preds`` and ``target`` are ``(B,)`` node indices or names."""
        pair = self._device_pairs(preds, target)
        if pair is not None:
            t, p = pair
            tables, lca = self._device_stats(t, p)
            inter, dt, dp = tables.depth[lca], tables.depth[t], tables.depth[p]
            self._add("inter", inter.sum())
            self._add("size_true", dt.sum())
            self._add("size_pred", dp.sum())
            self._add("total", len(t))
            if self.average == "macro":
                zd, b2 = self.zero_division, self.beta * self.beta
                prec = _torch_safe_div(inter, dp, zd)
                rec = _torch_safe_div(inter, dt, zd)
                fscore = _torch_safe_div((1 + b2) * inter, b2 * dt + dp, zd)
                for name, ratio in (("precision", prec), ("recall", rec), ("fscore", fscore)):
                    self._add_ratios(name, ratio)
            return
        t, p = self._pairs_numpy(preds, target)
        if not len(t):
            return
        pairs = _pair_stats(self.taxonomy, t, p)
        self._add("inter", int(pairs.inter.sum()))
        self._add("size_true", int(pairs.size_true.sum()))
        self._add("size_pred", int(pairs.size_pred.sum()))
        self._add("total", len(t))
        if self.average == "macro":
            zd = self.zero_division
            prec = _safe_div(pairs.inter, pairs.size_pred, zd)
            rec = _safe_div(pairs.inter, pairs.size_true, zd)
            fscore = _fbeta(pairs.inter, pairs.size_pred, pairs.size_true, self.beta, zd)
            for name, ratio in (("precision", prec), ("recall", rec), ("fscore", fscore)):
                self._add_ratios(name, ratio)

    def _compute_all(self) -> tuple[float, float, float]:
        zd = self.zero_division
        if self.average == "macro":
            return tuple(self._mean_ratio(name) for name in ("precision", "recall", "fscore"))  # type: ignore[return-value]
        inter, size_pred, size_true = int(self.inter), int(self.size_pred), int(self.size_true)
        prec = _safe_div(inter, size_pred, zd)
        rec = _safe_div(inter, size_true, zd)
        return prec, rec, _fbeta(inter, size_pred, size_true, self.beta, zd)

    def compute(self) -> torch.Tensor:
        """The metric over everything seen so far (a 0-d tensor)."""
        return self._value(self._compute_all()[self._which])


class HierarchicalPrecision(_HierarchicalSetMetric):
    """Stateful :func:`hiercls.metrics.hierarchical_precision` (micro or macro).

    Args:
        taxonomy: the taxonomy that ``preds`` and ``target`` index.
        average: ``"micro"`` or ``"macro"``.
        zero_division: value of a 0/0 ratio.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = HierarchicalPrecision(tax)
        >>> metric(torch.tensor([4]), torch.tensor([3]))
        tensor(0.5000, dtype=torch.float64)
    """

    _which = 0

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        average: Average = "micro",
        zero_division: float = 0.0,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(taxonomy, average=average, zero_division=zero_division, validate_args=validate_args, **kwargs)


class HierarchicalRecall(_HierarchicalSetMetric):
    """Stateful :func:`hiercls.metrics.hierarchical_recall` (micro or macro).

    Args:
        taxonomy: the taxonomy that ``preds`` and ``target`` index.
        average: ``"micro"`` or ``"macro"``.
        zero_division: value of a 0/0 ratio.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = HierarchicalRecall(tax)
        >>> metric(torch.tensor([1]), torch.tensor([3]))
        tensor(0.5000, dtype=torch.float64)
    """

    _which = 1

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        average: Average = "micro",
        zero_division: float = 0.0,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(taxonomy, average=average, zero_division=zero_division, validate_args=validate_args, **kwargs)


class HierarchicalFBeta(_HierarchicalSetMetric):
    """Stateful :func:`hiercls.metrics.hierarchical_fbeta`: ``(1 + beta^2) hP hR / (beta^2 hP + hR)``.

    Args:
        taxonomy: the taxonomy that ``preds`` and ``target`` index.
        beta: weight of recall (``beta > 0``).
        average: ``"micro"`` or ``"macro"``.
        zero_division: value of a 0/0 ratio.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = HierarchicalFBeta(tax, beta=2.0)
        >>> round(float(metric(torch.tensor([1]), torch.tensor([3]))), 4)
        0.5556
    """

    _which = 2


class HierarchicalF1(_HierarchicalSetMetric):
    """Stateful :func:`hiercls.metrics.hierarchical_f1`.

    Args:
        taxonomy: the taxonomy that ``preds`` and ``target`` index.
        average: ``"micro"`` or ``"macro"``.
        zero_division: value of a 0/0 ratio.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = HierarchicalF1(tax)
        >>> metric.update(torch.tensor([3, 3]), torch.tensor([3, 5]))
        >>> metric.compute()
        tensor(0.5000, dtype=torch.float64)
    """

    _which = 2

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        average: Average = "micro",
        zero_division: float = 0.0,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            taxonomy, beta=1.0, average=average, zero_division=zero_division, validate_args=validate_args, **kwargs
        )


class MistakeSeverity(_TaxonomyMetric):
    """Stateful :func:`hiercls.metrics.mistake_severity`: summed LCA distance of mistakes / number of mistakes.

    Args:
        taxonomy: the taxonomy that ``preds`` and ``target`` index.
        distance: ``"auto"``, ``"height"`` or ``"path"`` (see :func:`hiercls.metrics.lca_distance`).
        zero_division: the value when there was no mistake.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = MistakeSeverity(tax)
        >>> metric(torch.tensor([3, 4, 5]), torch.tensor([3, 3, 3]))
        tensor(1.5000, dtype=torch.float64)
    """

    higher_is_better = False

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        distance: Distance = "auto",
        zero_division: float = 0.0,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        self.distance = _resolve_distance(self.taxonomy, distance)
        self.zero_division = _check_zero_division(zero_division)
        self._key_state(distance=self.distance)
        self.add_state("severity", default=_int_state(), dist_reduce_fx="sum")
        self.add_state("mistakes", default=_int_state(), dist_reduce_fx="sum")

    def update(self, preds: LabelsLike, target: LabelsLike) -> None:
        """Add a batch: ``preds`` and ``target`` are ``(B,)`` node indices or names."""
        pair = self._device_pairs(preds, target)
        if pair is not None:
            t, p = pair
            tables, lca = self._device_stats(t, p)
            wrong = t != p
            if self.distance == "height":
                dist = torch.where(wrong, tables.height[lca], 0)
            else:
                dist = tables.depth[t] + tables.depth[p] - 2 * tables.depth[lca]
            self._add("severity", dist.sum())
            self._add("mistakes", wrong.sum())
            return
        t, p = self._pairs_numpy(preds, target)
        if not len(t):
            return
        wrong = t != p
        t, p = t[wrong], p[wrong]
        dist = _distance(self.taxonomy, t, p, _pair_stats(self.taxonomy, t, p).lca, self.distance)
        self._add("severity", int(dist.sum()))
        self._add("mistakes", len(dist))

    def compute(self) -> torch.Tensor:
        """Mean LCA distance over the mistakes seen so far (a 0-d tensor)."""
        return self._value(_safe_div(int(self.severity), int(self.mistakes), self.zero_division))


class LevelAccuracy(_TaxonomyMetric):
    """Stateful :func:`hiercls.metrics.level_accuracy` (trees): ``compute()`` returns ``{depth: accuracy}``.

    The keys are ints, as the function's. A torchmetrics ``MetricCollection`` merges a dict result into
    its own under those keys, dropping the metric's name, and loggers (Lightning's ``log_dict``,
    TensorBoard tags) want strings: there, use :class:`HierarchicalMetrics` (``"level_accuracy/1"``...), or
    rename, ``{f"level_accuracy/{d}": v for d, v in metric.compute().items()}``.

    Args:
        taxonomy: a tree.
        zero_division: value for a depth that no true node reached.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Raises:
        TaxonomyError: the taxonomy is a DAG.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = LevelAccuracy(tax)
        >>> metric(torch.tensor([4, 5]), torch.tensor([3, 3]))
        {1: tensor(0.5000, dtype=torch.float64), 2: tensor(0., dtype=torch.float64)}
    """

    higher_is_better = True

    def __init__(
        self, taxonomy: Taxonomy, *, zero_division: float = 0.0, validate_args: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        _require_tree(self.taxonomy, "LevelAccuracy")
        self.zero_division = _check_zero_division(zero_division)
        size = self.taxonomy.max_depth + 1
        self._key_state()
        self.add_state("level_correct", default=torch.zeros(size, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("level_total", default=torch.zeros(size, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: LabelsLike, target: LabelsLike) -> None:
        """Add a batch: ``preds`` and ``target`` are ``(B,)`` node indices or names."""
        pair = self._device_pairs(preds, target)
        if pair is not None:
            t, p = pair
            tables, lca = self._device_stats(t, p)
            self._add_levels(tables.depth[lca], tables.depth[t])
            return
        t, p = self._pairs_numpy(preds, target)
        if not len(t):
            return
        correct, total = _level_counts(self.taxonomy, t, self.taxonomy._lca_unchecked(t, p))
        self._add("level_correct", correct)
        self._add("level_total", total)

    def compute(self) -> dict[int, torch.Tensor]:
        """``{depth: accuracy}`` for depths ``1 .. max_depth``, as 0-d tensors."""
        correct = self.level_correct.cpu().numpy()
        total = self.level_total.cpu().numpy()
        return {d: self._value(_safe_div(correct[d], total[d], self.zero_division)) for d in range(1, len(correct))}


class CorrectRate(_TaxonomyMetric):
    """Stateful :func:`hiercls.metrics.correct_rate`: predictions that are the truth or one of its ancestors.

    Args:
        taxonomy: the taxonomy that ``preds`` and ``target`` index.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = CorrectRate(tax)
        >>> metric(torch.tensor([1, 4]), torch.tensor([3, 3]))
        tensor(0.5000, dtype=torch.float64)
    """

    higher_is_better = True

    def __init__(self, taxonomy: Taxonomy, *, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        self._key_state()
        self.add_state("correct", default=_int_state(), dist_reduce_fx="sum")
        self.add_state("total", default=_int_state(), dist_reduce_fx="sum")

    def update(self, preds: LabelsLike, target: LabelsLike) -> None:
        """Add a batch: ``preds`` and ``target`` are ``(B,)`` node indices or names."""
        pair = self._device_pairs(preds, target)
        if pair is not None:
            t, p = pair
            tables, lca = self._device_stats(t, p)
            self._add("correct", (tables.depth[lca] == tables.depth[p]).sum())
            self._add("total", len(t))
            return
        t, p = self._pairs_numpy(preds, target)
        if not len(t):
            return
        pairs = _pair_stats(self.taxonomy, t, p)
        self._add("correct", int(np.count_nonzero(pairs.inter == pairs.size_pred)))
        self._add("total", len(t))

    def compute(self) -> torch.Tensor:
        """The fraction of correct predictions seen so far (a 0-d tensor)."""
        return self._value(_safe_div(int(self.correct), int(self.total), 0.0))


class NodeRecall(_TaxonomyMetric):
    """Stateful :func:`hiercls.metrics.node_recall`: the recall of every node, as a ``(num_nodes,)`` tensor.

    ``recall(n) = #{i : n in A(t_i) and n in A(p_i)} / #{i : n in A(t_i)}``. States: two int64
    ``(num_nodes,)`` counts (``hits``, ``support``), summed across batches and processes; ``compute()``
    equals ``node_recall`` on all the data seen since the last ``reset()``.

    Args:
        taxonomy: a tree or a DAG.
        zero_division: value for nodes on no true path (default NaN).
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: ``zero_division`` is not a number.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = NodeRecall(tax)
        >>> metric.update(["ALL"], ["ALL"])
        >>> metric.update(torch.tensor([5]), torch.tensor([4]))
        >>> metric.compute()
        tensor([1.0000, 0.5000,    nan, 1.0000, 0.0000,    nan], dtype=torch.float64)
    """

    higher_is_better = True

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        zero_division: float = float("nan"),
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        self.zero_division = _check_zero_division(zero_division)
        n = self.taxonomy.num_nodes
        self._key_state()
        self.add_state("hits", default=torch.zeros(n, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("support", default=torch.zeros(n, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: LabelsLike, target: LabelsLike) -> None:
        """Add a batch: ``preds`` and ``target`` are ``(B,)`` node indices or names."""
        pair = self._device_pairs(preds, target)
        if pair is not None:
            t, p = pair
            _, lca = self._device_stats(t, p)
            table = _ancestor_table(self.taxonomy, str(self.device))
            n = self.taxonomy.num_nodes
            for name, nodes in (("hits", lca), ("support", t)):
                # in a tree the common ancestors of t and p are those of their LCA; column entries equal
                # to num_nodes pad paths shorter than max_depth and land in a dropped last bin
                flat = table[nodes].reshape(-1)
                counts = torch.zeros(n + 1, dtype=torch.int64, device=flat.device)
                self._add(name, counts.index_add_(0, flat, torch.ones_like(flat))[:n])
            return
        t, p = self._pairs_numpy(preds, target)
        if not len(t):
            return
        hits, support = _node_recall_counts(self.taxonomy, t, p)
        self._add("hits", hits)
        self._add("support", support)

    def compute(self) -> torch.Tensor:
        """The recall of every node over everything seen so far: a float64 tensor ``(num_nodes,)``
        (0-d for a root-only taxonomy: torchmetrics squeezes one-element results)."""
        recall = _safe_div(self.hits.cpu().numpy(), self.support.cpu().numpy(), self.zero_division)
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        return torch.as_tensor(np.asarray(recall, dtype=np.float64), dtype=dtype, device=self.device)


class _LCAMetric(_TaxonomyMetric):
    """Shared states of the LCA precision / recall / F1: float64 sums of the per-sample ratios and a count."""

    higher_is_better = True
    _which = 0

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        measure: Measure = "info",
        zero_division: float = 0.0,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        self.measure = _check_option(measure, "measure", ("info", "depth"))
        self.zero_division = _check_zero_division(zero_division)
        self._c = _measure(self.taxonomy, self.measure)
        self._key_state(measure=self.measure, zero_division=self.zero_division)
        self.add_state("total", default=_int_state(), dist_reduce_fx="sum")
        for key in ("sum_precision", "sum_recall", "sum_fscore"):
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for key in ("n_precision", "n_recall", "n_fscore"):  # ratios in each sum (NaN left out)
            self.add_state(key, default=_int_state(), dist_reduce_fx="sum")

    def update(self, preds: LabelsLike, target: LabelsLike) -> None:
        """Add a batch: ``preds`` and ``target`` are ``(B,)`` node indices or names."""
        zd = self.zero_division
        pair = self._device_pairs(preds, target)
        if pair is not None:
            t, p = pair
            _, lca = self._device_stats(t, p)  # a tree's LCA is unique: no need to rank by c
            c = _measure_table(self.taxonomy, self.measure, str(self.device))
            cl, cp, ct = c[lca], c[p], c[t]
            self._add_ratios("precision", _torch_safe_div(cl, cp, zd))
            self._add_ratios("recall", _torch_safe_div(cl, ct, zd))
            self._add_ratios("fscore", _torch_safe_div(2 * cl, cp + ct, zd))
            self._add("total", len(t))
            return
        t, p = self._pairs_numpy(preds, target)
        if not len(t):
            return
        c = self._c
        # DAG: the most informative common ancestor (largest c), as the functions take it
        lca = _pair_stats(self.taxonomy, t, p, score=c).lca
        cl, cp, ct = c[lca], c[p], c[t]
        self._add_ratios("precision", _safe_div(cl, cp, zd))
        self._add_ratios("recall", _safe_div(cl, ct, zd))
        self._add_ratios("fscore", _fbeta(cl, cp, ct, 1.0, zd))
        self._add("total", len(t))

    def compute(self) -> torch.Tensor:
        """The mean per-sample ratio over everything seen so far (a 0-d tensor)."""
        return self._value(self._mean_ratio(("precision", "recall", "fscore")[self._which]))


class LCAPrecision(_LCAMetric):
    """Stateful :func:`hiercls.metrics.lca_precision`: ``mean_i c(lca(t_i, p_i)) / c(p_i)``.

    States: the float64 sum of the per-sample ratios and the number of samples, so ``compute()``
    equals ``lca_precision`` on all the data seen (up to float rounding: per-batch sums add up in
    another order).

    Args:
        taxonomy: a tree or a DAG (where the LCA is the common ancestor of largest ``c``).
        measure: ``"info"`` (the information ``log(num_leaves / leaves_under(n))``) or ``"depth"``.
        zero_division: value of a 0/0 ratio (a prediction at the root), and of ``compute()``
            before any sample.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: an unknown ``measure`` or a ``zero_division`` that is not a number.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = LCAPrecision(tax, measure="depth")
        >>> metric.update(["AML"], ["ALL"])
        >>> metric.update(torch.tensor([3]), torch.tensor([3]))
        >>> metric.compute()
        tensor(0.7500, dtype=torch.float64)
    """

    _which = 0


class LCARecall(_LCAMetric):
    """Stateful :func:`hiercls.metrics.lca_recall`: ``mean_i c(lca(t_i, p_i)) / c(t_i)``; see :class:`LCAPrecision`.

    Args:
        taxonomy: a tree or a DAG (where the LCA is the common ancestor of largest ``c``).
        measure: ``"info"`` or ``"depth"``.
        zero_division: value of a 0/0 ratio (a true node at the root), and of ``compute()``
            before any sample.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: an unknown ``measure`` or a ``zero_division`` that is not a number.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = LCARecall(tax)
        >>> round(float(metric(["acute"], ["ALL"])), 4)  # log(3/2) / log(3)
        0.3691
    """

    _which = 1


class LCAF1(_LCAMetric):
    """Stateful :func:`hiercls.metrics.lca_f1`: ``mean_i 2 P_i R_i / (P_i + R_i)``; see :class:`LCAPrecision`.

    Args:
        taxonomy: a tree or a DAG (where the LCA is the common ancestor of largest ``c``).
        measure: ``"info"`` or ``"depth"``.
        zero_division: value of a 0/0 precision or recall, and of ``compute()`` before any sample.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: an unknown ``measure`` or a ``zero_division`` that is not a number.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = LCAF1(tax, measure="depth")
        >>> round(float(metric(torch.tensor([1]), torch.tensor([3]))), 4)
        0.6667
    """

    _which = 2


class DistanceAtK(_TaxonomyMetric):
    """Stateful :func:`hiercls.metrics.distance_at_k`: mean LCA distance of the top-k predictions.

    ``update(topk_preds, target)`` takes ``(B, k)`` predicted nodes and ``(B,)`` true nodes. States:
    the int64 sum of the distances (integers) and the number of (sample, rank) pairs, so with one
    ``k`` throughout ``compute()`` equals ``distance_at_k`` on all the data seen, exactly (batches
    of another ``k`` add their pairs to the same mean). Before any sample it is 0.

    Args:
        taxonomy: a tree or a DAG.
        distance: ``"auto"``, ``"height"`` or ``"path"`` (see :func:`hiercls.metrics.lca_distance`);
            ``"auto"`` is resolved from the taxonomy alone, once.
        validate_args: check and encode each batch on the host (names, range, shape). Off, a
            tree's batches of index tensors on the metric's device are counted there, with no
            read-back (no GPU sync per batch); other input still goes the checked host path.
        **kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: an unknown ``distance``.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> metric = DistanceAtK(tax)
        >>> metric.update([["ALL", "CLL"]], ["ALL"])
        >>> metric.update(torch.tensor([[4, 3]]), torch.tensor([3]))  # AML, ALL for ALL
        >>> metric.compute()  # (0 + 2 + 1 + 0) / 4
        tensor(0.7500, dtype=torch.float64)
    """

    higher_is_better = False

    def __init__(
        self, taxonomy: Taxonomy, *, distance: Distance = "auto", validate_args: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        self.distance = _resolve_distance(self.taxonomy, distance)
        self._key_state(distance=self.distance)
        self.add_state("distance_sum", default=_int_state(), dist_reduce_fx="sum")
        self.add_state("total", default=_int_state(), dist_reduce_fx="sum")

    def update(self, topk_preds: LabelsLike, target: LabelsLike) -> None:
        """Add a batch: ``topk_preds`` ``(B, k)`` and ``target`` ``(B,)``, node indices or names."""
        if (
            self._on_device(topk_preds, target)
            and topk_preds.ndim == 2
            and target.ndim == 1
            and topk_preds.shape[0] == target.shape[0]
            and topk_preds.shape[1] > 0
        ):
            k = topk_preds.shape[1]
            self._check_on_cpu(target, "target")  # before the repeat: the caller's values, counted once
            self._check_on_cpu(topk_preds, "topk_preds", ndim=2)
            t, p = self._trusted(target.repeat_interleave(k)), self._trusted(topk_preds.reshape(-1))
            tables, lca = self._device_stats(t, p)
            if self.distance == "height":
                dist = torch.where(t != p, tables.height[lca], 0)
            else:
                dist = tables.depth[t] + tables.depth[p] - 2 * tables.depth[lca]
            self._add("distance_sum", dist.sum())
            self._add("total", len(t))
            return
        t = _encode(target, self.taxonomy, "target", allow_empty=True)
        if not len(t) and not len(topk_preds):  # an empty batch as [] (an empty DDP shard) adds nothing
            return
        top = _encode(topk_preds, self.taxonomy, "topk_preds", ndim=2, allow_empty=True)
        if top.shape[0] != t.shape[0] or (top.shape[1] == 0 and len(t)):
            raise ValueError(
                f"topk_preds: expected shape ({t.shape[0]}, k) with k >= 1 to match target, got {tuple(top.shape)}."
            )
        if not len(t):
            return
        tt = np.repeat(t, top.shape[1])
        pp = top.ravel()
        dist = _distance(self.taxonomy, tt, pp, _pair_stats(self.taxonomy, tt, pp).lca, self.distance)
        self._add("distance_sum", int(dist.sum()))
        self._add("total", len(dist))

    def compute(self) -> torch.Tensor:
        """The mean distance over every (sample, rank) pair seen so far (a 0-d tensor)."""
        return self._value(_safe_div(int(self.distance_sum), int(self.total), 0.0))


def _check_tol(tol: Any) -> float:
    tol = _scalar(tol)
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) or not 0 <= tol < np.inf:
        raise ValueError(f"tol: expected a non-negative finite number such as 1e-6, got {tol!r}.")
    return float(tol)


class InconsistencyRate(_TaxonomyMetric):
    """Stateful :func:`hiercls.metrics.inconsistency_rate`: samples with some child's marginal above its parent's.

    ``update(probs)`` takes node marginals ``(B, num_nodes)`` (no target). States: int64 counts of
    inconsistent samples and of samples; ``compute()`` equals ``inconsistency_rate`` on all the data
    seen, exactly (0 before any sample).

    Args:
        taxonomy: a tree or a DAG.
        tol: slack for rounding: a child counts above its parent when ``probs[v] > probs[u] + tol``.
        validate_args: check each batch on the host (shape, finite values in ``[0, 1]``, as
            :func:`~hiercls.metrics.inconsistency_rate` does: logits are refused). Off, a float tensor
            ``(B, num_nodes)`` on the metric's device is compared there, with no read-back (a row
            with a NaN marginal then counts as inconsistent); other input still goes the host path,
            which then checks its shape and finite values only.
        **kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: ``tol`` is not a non-negative finite number; in ``update``, a bad shape, or (with
            ``validate_args``) values outside ``[0, 1]``.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a", "r/b"])
        >>> metric = InconsistencyRate(tax)
        >>> metric.update(torch.tensor([[1.0, 0.7, 0.3], [0.5, 0.9, 0.1]]))
        >>> metric.update([[1.0, 0.2, 0.8]])
        >>> metric.compute()
        tensor(0.3333, dtype=torch.float64)
    """

    higher_is_better = False

    def __init__(self, taxonomy: Taxonomy, *, tol: float = 1e-6, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(taxonomy, validate_args=validate_args, **kwargs)
        self.tol = _check_tol(tol)
        self._key_state(tol=self.tol)
        self.add_state("inconsistent", default=_int_state(), dist_reduce_fx="sum")
        self.add_state("total", default=_int_state(), dist_reduce_fx="sum")

    def update(self, probs: Any) -> None:
        """Add a batch of node marginals ``probs`` ``(B, num_nodes)`` (numpy or torch)."""
        n = self.taxonomy.num_nodes
        if (
            not self.validate_args
            and isinstance(probs, torch.Tensor)
            and probs.device == self.device
            and self.device.type != "mps"
            and probs.is_floating_point()
            and probs.ndim == 2
            and probs.shape[1] == n
        ):
            parents, children = _edge_tables(self.taxonomy, str(self.device))
            scores = probs.detach().double()  # as the function compares: in float64
            # written as "not at or below" so that a NaN marginal counts as inconsistent (a model that
            # has blown up must not read as perfectly consistent); the checked path refuses NaN
            bad = (~(scores[:, children] <= scores[:, parents] + self.tol)).any(dim=1)
            self._add("inconsistent", bad.sum())
            self._add("total", probs.shape[0])
            return
        shape = tuple(getattr(probs, "shape", ()))
        if shape == (0, n):  # an empty batch (an empty DDP shard) adds nothing
            return
        scores = _as_probs(probs, self.taxonomy, unit_interval=self.validate_args)
        self._add("inconsistent", _count_inconsistent(scores, self.taxonomy, self.tol))
        self._add("total", len(scores))

    def compute(self) -> torch.Tensor:
        """The fraction of inconsistent samples seen so far (a 0-d tensor)."""
        return self._value(_safe_div(int(self.inconsistent), int(self.total), 0.0))
