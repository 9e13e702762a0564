"""Hierarchical decoding: from node marginals ``P(node)`` to one predicted node per sample.

Every decoder takes marginals ``probs`` of shape ``(B, num_nodes)`` from any
head (torch or numpy; torch in gives torch out on the same device, numpy in
gives numpy out) and returns int64 node indices ``(B,)``. Work is batched and
vectorised: a handful of passes over ``(B, num_nodes)``, with per-depth loops
(about ``max_depth`` steps) for the tree recursions; large batches are processed
in chunks of a few MB each. The expected-hF pass (``"hf_optimal"``) is the
exception: it holds up to ``max_depth`` values per node and sample on deep,
thin trees (and takes chunks that many times smaller), so its time grows with
``B x num_nodes x max_depth``: on a 20,000-node taxonomy, 256 samples take
0.06 s at depth 5, 0.27 s at depth 22, 1.7 s at depth 100 and 4.3 s at depth 372
on a 2-core CPU (``benchmarks/decoding.py --depths``).

Rules (``decode(probs, taxonomy, rule=...)``):

- ``"argmax_leaf"``: the leaf with the largest marginal (mandatory leaf).
- ``"top_down"``: greedy from the root, following the child with the largest
  marginal until a leaf.
- ``"threshold"``: the deepest node whose marginal is ``>= threshold``
  (ties: the larger marginal, then the smaller index); the root always
  qualifies. ``threshold=0.5`` is the "majority" rule (non-mandatory leaf).
- ``"crm"``: conditional risk minimisation (Karthik et al., ICLR 2021): the
  leaf minimising the expected LCA cost under ``P``
  (:func:`expected_lca_cost`).
- ``"hf_optimal"``: the node maximising the expected hierarchical F-beta
  under ``P`` (Plaud et al., ICML 2025), exact
  (:func:`expected_hierarchical_fbeta`). It is each sample's own F (the
  ``average="macro"`` metric); the micro-averaged hF that the metrics report by
  default pools counts over samples, which no per-sample rule can maximise
  exactly (the two moved apart by 1e-4 in simulation).

Plus :func:`top_k_leaves` (for distance@k), :func:`operating_curve`
(Valmadre, NeurIPS 2022): the exact curve of (specificity, correct rate) over
all thresholds of the ``"threshold"`` rule, and :func:`conformal_threshold`:
the threshold whose error rate on new samples is guaranteed at most a given
value (split conformal prediction).
"""

from __future__ import annotations

import contextlib
import functools
import math
import reprlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Union

import numpy as np
import torch

from hiercls.errors import TaxonomyError
from hiercls.metrics.functional import (
    _PROB_SLACK,
    Measure,
    _check_beta,
    _check_option,
    _check_taxonomy,
    _check_unit_interval,
    _encode,
    _measure,
    _pair_stats,
    _prob_slack,
    _safe_div,
    _scalar,
)
from hiercls.taxonomy import LabelsLike, Taxonomy

__all__ = [
    "RULE_OPTIONS",
    "OperatingCurve",
    "Rule",
    "conformal_threshold",
    "decode",
    "expected_hierarchical_fbeta",
    "expected_lca_cost",
    "operating_curve",
    "top_k_leaves",
]

Rule = Literal["argmax_leaf", "top_down", "threshold", "crm", "hf_optimal"]
"""The decoding rules of :func:`decode` (``rule=``); the module docstring describes each."""
CostLike = Union[Literal["auto", "height", "path"], np.ndarray, torch.Tensor, Sequence[float], None]
_RULES = ("argmax_leaf", "top_down", "threshold", "crm", "hf_optimal")
RULE_OPTIONS: dict[str, tuple[str, ...]] = {
    "argmax_leaf": (),
    "top_down": (),
    "threshold": ("threshold",),
    "crm": ("cost",),
    "hf_optimal": ("beta",),
}
"""The keyword options of :func:`decode` that each rule reads; another rule ignores them, with a warning.

Examples:
    >>> RULE_OPTIONS["threshold"], RULE_OPTIONS["top_down"]
    (('threshold',), ())
    >>> [rule for rule, names in RULE_OPTIONS.items() if "cost" in names]  # which rule reads cost=
    ['crm']
"""
_OPTION_RULE = {name: rule for rule, names in RULE_OPTIONS.items() for name in names}  # the rule reading each option
_CHUNK_ELEMENTS = 1 << 21  # about 8 MB of float32 per chunk: keeps the working set in cache


# ------------------------------------------------------------------- plumbing
class _Plan:
    """Index tensors of one taxonomy on one device (built once, cached)."""

    def __init__(self, taxonomy: Taxonomy, device: torch.device) -> None:
        levels = taxonomy.levels()
        self.num_nodes = taxonomy.num_nodes
        self.max_depth = taxonomy.max_depth
        self.bounds = [(int(lv[0]), int(lv[-1]) + 1) for lv in levels]
        self.depth = torch.as_tensor(taxonomy.depth_index.copy(), device=device)
        self.leaf_index = torch.as_tensor(taxonomy.leaf_index.copy(), device=device)
        self.children_ptr = torch.as_tensor(taxonomy.children_ptr.copy(), device=device)
        # a sentinel entry so that gathers at an empty range stay in bounds
        self.children_index = torch.as_tensor(np.append(taxonomy.children_index, 0), device=device)
        self.step_width = _step_widths(taxonomy)
        leaves = taxonomy.leaf_index
        contiguous = len(leaves) > 0 and leaves[-1] - leaves[0] + 1 == len(leaves)
        self.leaf_range = (int(leaves[0]), int(leaves[-1]) + 1) if contiguous else None
        self.is_tree = taxonomy.is_tree
        if self.is_tree:
            parent = taxonomy.parent_index
            self.parent = torch.as_tensor(np.maximum(parent, 0), device=device)
            # per level: parent of each node as an index into the level above
            self.local_parent = [None] + [
                torch.as_tensor(parent[a:b] - self.bounds[d - 1][0], device=device)
                for d, (a, b) in enumerate(self.bounds)
                if d > 0
            ]
        # the expected-hF pass's top-down form changes at this level (see _expected_hf_chunk): above it, D
        # channels per node; from it on, D - depth + 1 channels, as many multiply-adds per level. Trees up to
        # 8 deep use the second form throughout
        top = self.max_depth
        self.hf_switch = next((lv for lv in range(1, top + 1) if (top - lv + 1) ** 2 <= max(2 * top, 64)), max(1, top))
        # values per sample the expected-hF pass holds at once, in units of num_nodes (its chunk width): level d
        # keeps max_depth - d + 2 channels (the deepest one), plus the output, plus the widest step of the
        # top-down pass; grows with depth on deep trees. Its chunks keep at least _HF_MIN_ROWS samples: the
        # pass loops over the levels in Python, so a chunk of one sample on a tree 1,000 deep would cost
        # 1,000 iterations per sample
        sizes = [b - a for a, b in self.bounds]
        held = sum((1 if d == top else top - d + 2) * sizes[d] for d in range(1, top + 1))
        step = max(
            [3 * top * sizes[d] for d in range(1, min(self.hf_switch, top + 1))]
            + [2 * (top - d + 1) * sizes[d] + (top - d + 1) * sizes[d - 1] for d in range(self.hf_switch, top + 1)]
            + [0]
        )
        self.hf_width = max(2, -(-(held + step + self.num_nodes) // max(1, self.num_nodes)))


def _step_widths(taxonomy: Taxonomy) -> list[int]:
    """Top-down decoding's fan-out bound per step: the most children among the nodes it can stand on.

    Step ``k`` starts from a node reached in ``k`` steps from the root (a level of a tree). Known on the
    host from the taxonomy alone, so the walk never reads a batch's fan-out back from the device.
    """
    ptr, kids = taxonomy.children_ptr, taxonomy.children_index
    reach = np.array([taxonomy.index(taxonomy.root)])
    widths: list[int] = []
    while len(reach):
        counts = ptr[reach + 1] - ptr[reach]
        if counts.max() == 0:
            break
        widths.append(int(counts.max()))
        starts = np.repeat(ptr[reach], counts)
        offsets = np.arange(len(starts)) - np.repeat(np.cumsum(counts) - counts, counts)
        reach = np.unique(kids[starts + offsets])
    return widths


@functools.lru_cache(maxsize=16)
def _plan(taxonomy: Taxonomy, device: str) -> _Plan:
    return _Plan(taxonomy, torch.device(device))


def _check_threshold(threshold: Any, slack: float | None = None) -> float:
    """A finite real threshold from a Python, numpy or 0-d torch number (not a bool).

    ``slack`` is the marginals' own (:func:`_slack`), so that the breakpoints of an operating curve drawn
    from low-precision marginals are accepted.
    """
    slack = _PROB_SLACK if slack is None else slack
    if isinstance(threshold, (bool, np.bool_)):
        raise ValueError(f"threshold: expected a number (e.g. 0.5), got {threshold!r}.")
    if isinstance(threshold, (torch.Tensor, np.ndarray)) and threshold.ndim == 0:
        threshold = threshold.item()
    if not isinstance(threshold, (int, float, np.floating, np.integer)) or isinstance(threshold, bool):
        raise ValueError(f"threshold: expected a number (e.g. 0.5), got {threshold!r}.")
    value = float(threshold)
    if math.isnan(value):  # NaN used to send every sample to the root silently
        raise ValueError("threshold: expected a finite number in [0, 1] (e.g. 0.5) or inf, got nan.")
    if value == math.inf:  # the first point of operating_curve: every answer is the root
        return value
    # up to the slack marginals are allowed (rounding) on both sides, so the curve's own breakpoints are accepted
    if not -slack <= value <= 1.0 + slack:
        raise ValueError(
            f"threshold: expected a probability in [0, 1] (e.g. 0.5), or inf (operating_curve's first point), "
            f"got {value}. It is compared with node marginals: above 1 every prediction would stop at the root, "
            "below 0 none would stop early."
        )
    return value


def _as_probs(
    probs: Any, taxonomy: Taxonomy, validate: bool = True, allow_empty: bool = True
) -> tuple[torch.Tensor, bool, float]:
    """Marginals -> float tensor ``(B, num_nodes)``; also says whether to hand back numpy, and the rounding
    slack of the dtype they came in (:func:`_slack`), which the float32 copy of half-precision input no longer shows.

    ``B = 0`` (an empty evaluation shard, every sample filtered out) passes unless ``allow_empty`` is off.
    """
    as_numpy = not isinstance(probs, torch.Tensor)
    if as_numpy:
        arr = np.asarray(probs)
        if arr.dtype.kind != "f":
            raise ValueError(
                f"probs: expected float node marginals, got a numpy array of dtype {arr.dtype}. "
                "Marginals are probabilities: pass head.marginals(logits), or cast with .astype(np.float32)."
            )
        if arr.dtype.itemsize > 8:  # longdouble: torch has no such dtype; float64 holds any probability
            arr = arr.astype(np.float64)
        if not arr.dtype.isnative:  # e.g. '>f8' from a big-endian file: torch takes native byte order only
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if not arr.flags.writeable:  # read-only (np.frombuffer, a memory map): copied, nothing here writes to it
            arr = arr.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        tensor = probs.detach()
    if tensor.ndim != 2 or tensor.shape[1] != taxonomy.num_nodes:
        raise ValueError(
            f"probs: expected node marginals of shape (batch, {taxonomy.num_nodes}), got shape {tuple(tensor.shape)}. "
            "Get them from head.marginals(logits); add a batch dimension with probs[None] for one sample."
        )
    if tensor.shape[0] == 0 and not allow_empty:
        raise ValueError("probs is empty: give at least one sample (shape (batch, num_nodes) with batch >= 1).")
    if not tensor.is_floating_point():
        raise ValueError(
            f"probs: expected float node marginals, got a tensor of dtype {tensor.dtype}. "
            "Marginals are probabilities: pass head.marginals(logits), or cast with .float()."
        )
    slack = _slack(tensor.dtype)
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    if validate:
        _check_marginals(tensor, slack)
    return tensor, as_numpy, slack


def _slack(dtype: torch.dtype) -> float:
    """How far outside ``[0, 1]`` marginals of ``dtype`` may stray: 1e-3, or four of its eps when that is more
    (at most bfloat16's four, 0.031, so float8 input gets that).

    float32/float64 keep 1e-3; float16 gets 0.0039 and bfloat16 0.031, whose steps just above 1 are
    0.00098 and 0.0078, so a sum that rounds up a step or two is still read as a marginal, while
    logits (far outside ``[0, 1]``) are still refused.
    """
    # capped at bfloat16's: float8 (eps 0.125 to 2) would otherwise read logits and thresholds near 2 as marginals
    return _prob_slack(torch.finfo(dtype).eps)


def _check_marginals(chunk: torch.Tensor, slack: float = _PROB_SLACK) -> None:
    """Marginals are finite, in ``[0, 1]`` up to ``slack`` (which catches logits), and 1 at the root (which
    catches a softmax or sigmoid over the logits): one read-back of three numbers."""
    if chunk.numel() == 0:
        return
    # one read-back for the three numbers: NaN anywhere makes the first two NaN
    lo, hi, root = torch.stack([*torch.aminmax(chunk), chunk[:, 0].min()]).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("probs: found NaN or infinite marginals; check the head's output (e.g. NaN logits).")
    _check_unit_interval(lo, hi, slack)
    if root < 1.0 - slack:  # every sample is at the root: a softmax or sigmoid of the logits has it below 1
        raise ValueError(
            f"probs: expected node marginals, whose root column (node 0) is 1 for every sample, got {root:.4g}. "
            "These look like a softmax or sigmoid over all the logits: pass head.marginals(logits), which "
            "gives P(node) for every node."
        )


_HF_MIN_ROWS = 8
# the expected-hF pass's budget per chunk, in units of _CHUNK_ELEMENTS (16 MB of float32): its per-level steps are many
# small passes, and at the decoders' 8 MB (25 samples a chunk on the iNat21-shaped tree) their overhead
# showed. 10,000 samples on 2 shared cores, medians of 5: 2.31 s at 8 MB, 1.76 s at 16 MB, 2.07 s at 32 MB
_HF_CHUNK_FACTOR = 2


def _chunks(batch: int, num_nodes: int, width: int = 1, min_rows: int = 1, elements: int | None = None) -> list[slice]:
    elements = _CHUNK_ELEMENTS if elements is None else elements  # read at call time (the tests shrink it)
    size = max(min_rows, elements // max(1, num_nodes * width))
    return [slice(i, min(i + size, batch)) for i in range(0, batch, size)]


def _per_chunk(
    probs: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    width: int = 1,
    validate: bool = True,
    min_rows: int = 1,
    slack: float = _PROB_SLACK,
    elements: int | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to batch chunks, checking each chunk (unless ``validate`` is off) while it is in cache.

    Autocast is off inside: decoding right after an autocast forward pass would otherwise run the
    expected-hF matmul in bf16 and change decisions the docs call exact.
    """
    parts = []
    kind = probs.device.type
    with torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else contextlib.nullcontext():
        for part in _chunks(probs.shape[0], probs.shape[1], width, min_rows, elements):
            chunk = probs[part]
            if validate:
                _check_marginals(chunk, slack)
            parts.append(fn(chunk))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _out(index: torch.Tensor, as_numpy: bool) -> Any:
    return index.cpu().numpy() if as_numpy else index


def _require_tree(taxonomy: Taxonomy, what: str) -> None:
    if not taxonomy.is_tree:
        raise TaxonomyError(
            f"{what} needs a tree (a node's prediction path must be unique), but this taxonomy is a DAG. "
            "Use rule='argmax_leaf', 'top_down' or 'threshold' for DAGs."
        )


def _cumsum_down(values: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """In place: ``values[:, n] += values[:, parent(n)]`` level by level, i.e. sums along each root-to-node path."""
    for a, b in plan.bounds[1:]:
        values[:, a:b] += values.index_select(1, plan.parent[a:b])
    return values


# ------------------------------------------------------------------ decoders
def _leaf_block(probs: torch.Tensor, plan: _Plan) -> torch.Tensor:
    if plan.leaf_range is not None:  # leaves are one column range (e.g. every leaf at the deepest level)
        return probs[:, plan.leaf_range[0] : plan.leaf_range[1]]
    return probs.index_select(1, plan.leaf_index)


def _argmax_leaf(probs: torch.Tensor, plan: _Plan) -> torch.Tensor:
    return plan.leaf_index[_leaf_block(probs, plan).argmax(dim=1)]


def _top_down(probs: torch.Tensor, plan: _Plan) -> torch.Tensor:
    # walk down one level per step, looking only at the children of each sample's current node:
    # O(B x fan-out) per step instead of O(B x num_nodes)
    batch = probs.shape[0]
    rows = torch.arange(batch, device=probs.device)[:, None]
    current = torch.zeros(batch, dtype=torch.long, device=probs.device)
    for width in plan.step_width:  # host-known bounds: no read-back of the batch's fan-out
        start = plan.children_ptr[current]
        count = plan.children_ptr[current + 1] - start
        offsets = torch.arange(width, device=probs.device)
        valid = offsets[None, :] < count[:, None]
        slot = torch.where(valid, start[:, None] + offsets[None, :], 0)
        kids = plan.children_index[slot]
        scores = torch.where(valid, probs[rows, kids], -torch.inf)
        best = kids.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)  # first maximum: the smaller index
        current = torch.where(count > 0, best, current)
    return current


def _at_least(tau: float, dtype: torch.dtype) -> float:
    """The smallest value of ``dtype`` that is ``>= tau``: ``p >= it`` in ``dtype`` is ``p >= tau`` exactly.

    Comparing float32 marginals with a Python float rounds ``tau`` to the nearest float32 first, which may
    lie below it (0.7 -> 0.69999999), so a marginal of float32(0.7) would qualify at ``tau = 0.7`` here and
    not in :func:`operating_curve`, which compares in float64.
    """
    if not math.isfinite(tau):
        return tau
    t = torch.tensor(tau, dtype=dtype)
    if float(t) < tau:
        t = torch.nextafter(t, torch.tensor(math.inf, dtype=dtype))
    return float(t)


def _threshold(probs: torch.Tensor, plan: _Plan, tau: float) -> torch.Tensor:
    # nodes are sorted by depth, so each level is a column range: the deepest level with a qualifying node wins,
    # and within it the largest marginal (first index on ties)
    tau = _at_least(tau, probs.dtype)
    best = torch.zeros(probs.shape[0], dtype=torch.long, device=probs.device)
    for a, b in plan.bounds[1:]:
        block = probs[:, a:b]
        value, where = torch.where(block >= tau, block, -torch.inf).max(dim=1)
        best = torch.where(value > -torch.inf, where + a, best)
    return best


@functools.lru_cache(maxsize=16)
def _height_cost(taxonomy: Taxonomy, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(taxonomy.height_index.copy(), device=device, dtype=dtype)


def _resolve_cost(
    cost: CostLike, taxonomy: Taxonomy, device: torch.device, dtype: torch.dtype, validate: bool = True
) -> tuple[str, torch.Tensor | None]:
    if cost is None or (isinstance(cost, str) and cost == "auto"):
        # the distance lca_distance and mistake_severity use by default: one rule, kept in the metrics
        from hiercls.metrics.functional import _resolve_distance

        cost = _resolve_distance(taxonomy, "auto")
    if isinstance(cost, str) and cost == "height":
        return "node", _height_cost(taxonomy, str(device), dtype)  # cached: no host-to-device copy per call
    if isinstance(cost, str):
        if cost == "path":
            return "path", None
        raise ValueError(
            f"cost: expected 'auto', 'height', 'path' or a per-node array of shape ({taxonomy.num_nodes},), "
            f"got {cost!r}."
        )
    if isinstance(cost, torch.Tensor) and not validate:  # as given, on its device: shape only (no read-back)
        if cost.shape != (taxonomy.num_nodes,):
            raise ValueError(
                f"cost: expected per-node costs of shape ({taxonomy.num_nodes},), got {tuple(cost.shape)}."
            )
        return "node", cost.to(device=device, dtype=dtype)
    if isinstance(cost, torch.Tensor):  # through float64 in torch: numpy has no bfloat16
        values = cost.detach().to("cpu", torch.float64)
    else:
        if isinstance(cost, Mapping):
            raise ValueError(
                f"cost: expected 'auto', 'height', 'path' or a per-node array of shape ({taxonomy.num_nodes},) in "
                "the taxonomy's node order, got a mapping; for costs by node name give "
                "[costs[name] for name in taxonomy.nodes]."
            )
        try:
            values = torch.as_tensor(np.array(cost, dtype=np.float64))  # a copy: a read-only array is fine
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"cost: expected 'auto', 'height', 'path' or a per-node array of numbers of shape "
                f"({taxonomy.num_nodes},), got {type(cost).__name__} that is not one ({err}); e.g. "
                "taxonomy.height_index, or [costs[name] for name in taxonomy.nodes]."
            ) from None
    if values.shape != (taxonomy.num_nodes,):
        raise ValueError(
            f"cost: expected finite per-node costs of shape ({taxonomy.num_nodes},) (cost[lca(leaf, truth)]), "
            f"got shape {tuple(values.shape)}."
        )
    if not bool(torch.isfinite(values).all()):
        bad = torch.nonzero(~torch.isfinite(values)).flatten()[:3].tolist()
        raise ValueError(
            f"cost: expected finite per-node costs, got {values[bad].tolist()} at node(s) "
            f"{[taxonomy.nodes[i] for i in bad]}; give every node a finite cost (e.g. its height, tax.height_index)."
        )
    return "node", values.to(device=device, dtype=dtype)


def _expected_cost_chunk(
    probs: torch.Tensor, plan: _Plan, mode: str, cost: torch.Tensor | None, *, up_to_constant: bool = False
) -> torch.Tensor:
    # E[c(lca(n, Y))] = c(root) P(root) + sum_{a in path(n), a != root} P(a) (c(a) - c(parent(a)))
    # E[dist_path(n, Y)] = depth(n) P(root) + sum_{a != root} P(a) - 2 sum_{a in path(n), a != root} P(a)
    # up_to_constant drops the terms that are the same for every node of a sample (enough for an argmin)
    if mode == "node":
        step = cost - cost[plan.parent]
        step[0] = 0.0
        values = _cumsum_down(probs * step, plan)
        return values if up_to_constant else values.add_(cost[0] * probs[:, :1])
    values = probs.clone()
    values[:, 0] = 0.0
    total = None if up_to_constant else values.sum(dim=1, keepdim=True)
    values = _cumsum_down(values, plan).mul_(-2.0).add_(plan.depth.to(probs.dtype) * probs[:, :1])
    return values if total is None else values.add_(total)


def expected_lca_cost(probs: Any, taxonomy: Taxonomy, *, cost: CostLike = None, validate_args: bool = True) -> Any:
    """Expected LCA cost of predicting each node: ``R(n) = sum_y P(Y = y) d(n, y)``.

    ``probs`` are read as marginals of a distribution over the nodes:
    ``P(a) = P(Y in subtree(a))``. Along the path ``root = a_0, ..., a_k = n``,
    ``lca(n, Y) = a_j`` with probability ``P(a_j) - P(a_{j+1})``, so for a
    per-node cost ``d(n, y) = c(lca(n, y))``

    ``R(n) = c(root) P(root) + sum_{j=1..k} P(a_j) (c(a_j) - c(a_{j-1}))``,

    a cumulative sum down the tree: ``O(B x num_nodes)``, no leaves x leaves
    matrix. ``R`` is linear in the marginals as given: on marginals that are
    not coherent (a child above its parent, children summing above it, as a
    ``SigmoidHead`` with ``coherent=False`` gives) it is not the expected cost
    of any distribution, whereas :func:`expected_hierarchical_fbeta` clips the
    implied masses at 0; give coherent marginals to either. The form ``c(lca(n, y))`` charges ``c(n)`` even
    when ``y = n``: with ``"height"`` an inner node's row counts ``height(n)`` for a truth exactly at ``n``,
    where :func:`hiercls.metrics.lca_distance` gives 0. The two agree on leaves (``height 0``), the only
    nodes ``"crm"`` compares. With ``cost="path"``, ``d(n, y) = depth(n) + depth(y) - 2 depth(lca)``
    and ``R(n) = depth(n) P(root) + sum_{a != root} P(a) - 2 sum_{j=1..k} P(a_j)``.

    Args:
        probs: node marginals ``(B, num_nodes)``, torch or numpy.
        taxonomy: a tree.
        cost: ``None``/``"auto"`` (the distance of
            :func:`hiercls.metrics.mistake_severity`'s default: ``"height"``
            when every leaf has the same depth, else ``"path"``), ``"height"``
            (``c = height``: the LCA height of Bertinetto et al. and Karthik et
            al.), ``"path"``, or a per-node array ``c`` of shape
            ``(num_nodes,)`` (set it to 0 at leaves so a correct leaf costs
            nothing).
        validate_args: check that ``probs`` are finite, in ``[0, 1]`` and 1 at the root, and a ``cost`` tensor
            finite (see :func:`decode`).

    Returns:
        ``(B, num_nodes)`` expected costs (the rows of inner nodes too), float.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        ValueError: bad ``probs`` shape or values, or a bad ``cost``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> probs = np.array([[1.0, 0.6, 0.4, 0.3, 0.3]])
        >>> expected_lca_cost(probs, tax, cost="path").round(2).tolist()
        [[1.6, 1.4, 1.8, 1.8, 1.8]]
    """
    _check_taxonomy(taxonomy)
    _require_tree(taxonomy, "expected_lca_cost")
    tensor, as_numpy, slack = _as_probs(probs, taxonomy, validate=False)
    plan = _plan(taxonomy, str(tensor.device))
    mode, c = _resolve_cost(cost, taxonomy, tensor.device, tensor.dtype, validate_args)
    if tensor.shape[0] == 0:
        out = tensor.new_zeros(0, taxonomy.num_nodes)
        return out.cpu().numpy() if as_numpy else out
    out = _per_chunk(tensor, lambda x: _expected_cost_chunk(x, plan, mode, c), validate=validate_args, slack=slack)
    return out.cpu().numpy() if as_numpy else out


def _expected_hf_chunk(probs: torch.Tensor, plan: _Plan, beta: float, *, argmax: bool = False) -> torch.Tensor:
    """Exact expected hF-beta of predicting each node for a chunk ``(b, num_nodes)``.

    Returns the node-major values ``(num_nodes, b)``, or with ``argmax=True``
    the best node of each sample ``(b,)`` (first maximum) without building them.

    With ``q(y)`` the mass of "the truth is exactly y" and ``M(a, d)`` the mass
    of truths at depth ``d`` inside ``subtree(a)``:
    ``E[hF(n)] = (1 + beta^2) sum_{a in path(n), a != root} sum_{d >= depth(a)} M(a, d) / (beta^2 d + depth(n))``.
    Per level, one tensor ``(1 + D - depth + 1, n_level, b)`` holds the marginals then ``M(., d)`` for
    ``d = depth .. D`` (about 1.5 x num_nodes values per sample on wide trees), so that one ``index_add_``
    per level moves every channel up, and multiply-adds per level (exact, no matrix product) apply the weights.
    """
    b2 = beta * beta
    depth_max = plan.max_depth
    bounds = plan.bounds
    batch = probs.shape[0]
    kw = {"dtype": probs.dtype, "device": probs.device}
    # bottom-up, per level: channel 0 = P+ (negative marginals count as 0), channel 1 = q, channels 2.. = M(., d > depth);
    # the deepest level holds q = P+ alone
    stacks: list[torch.Tensor] = [probs[:0]] * (depth_max + 1)
    for level in range(depth_max, 0, -1):
        a, b = bounds[level]
        if level == depth_max:
            stack = torch.empty(1, b - a, batch, **kw)
            torch.clamp_min(probs[:, a:b].t(), 0.0, out=stack[0])
            stacks[level] = stack
            continue
        stack = torch.empty(depth_max - level + 2, b - a, batch, **kw)
        torch.clamp_min(probs[:, a:b].t(), 0.0, out=stack[0])
        up = plan.local_parent[level + 1]
        if level + 1 == depth_max:  # children sums of P+ and of q are the same sums
            stack[1].zero_().index_add_(0, up, stacks[level + 1][0])
            stack[2] = stack[1]
        else:
            stack[1:].zero_().index_add_(1, up, stacks[level + 1])
        torch.sub(stack[0], stack[1], out=stack[1]).clamp_min_(0.0)
        stacks[level] = stack
    # top-down, in two forms. Upper levels: S(n, d) = sum_{a in path(n), a != root} M(a, d) for truth depths
    # d = 1..D (one channel each), and E(n) = sum_d w(depth(n), d) S(n, d) with w(k, d) = (1 + b2) / (b2 d + k):
    # D channels per node, a few tensor operations per level. Lower levels (from plan.hf_switch, where the
    # levels below are few): H_k(n) = sum_{a in path(n)} sum_{d >= depth(a)} w(k, d) M(a, d) for the predicted
    # depths k >= depth(n), and E(n) = H_depth(n)(n): D - depth + 1 channels, filled with one multiply-add per
    # channel. On a deep chain the first form keeps the Python work linear in the depth (the second alone
    # made it quadratic); on a wide tree the second keeps the many deep nodes at few channels.
    # The weighted sums are multiply-adds, not matmuls: a float32 matmul follows the global precision setting
    # (TF32 on CUDA once a training script turns it on, bf16 on CPU under set_float32_matmul_precision("medium")),
    # which would change decisions the docs call exact.
    out = None if argmax else torch.zeros(plan.num_nodes, batch, **kw)
    best_value = torch.zeros(batch, **kw)  # the root scores 0
    best_node = torch.zeros(batch, dtype=torch.long, device=probs.device)
    ds = torch.arange(1, depth_max + 1, dtype=torch.float64, device=probs.device)

    def weights_for(ks: torch.Tensor, dd: torch.Tensor) -> torch.Tensor:
        """w(k, d) as a [k, d] table in float64, divided through by b2 when b2 > 1 so that a large beta
        neither overflows (inf / inf) nor loses the weights."""
        if b2 > 1.0:
            return (1.0 / b2 + 1.0) / (dd[None, :] + ks[:, None] / b2)
        return (1.0 + b2) / (b2 * dd[None, :] + ks[:, None])

    s_above: torch.Tensor | None = None  # the first form's S of the level above, (D, n_above, b)
    h_above: torch.Tensor | None = None  # the second form's H of the level above, (D - depth + 2, n_above, b)
    for level in range(1, depth_max + 1):
        a, b = bounds[level]
        up = plan.local_parent[level]
        if level < plan.hf_switch:
            weights = weights_for(ds.new_tensor([float(level)]), ds)[0].to(probs.dtype)
            s_here = torch.zeros(depth_max, b - a, batch, **kw) if s_above is None else s_above.index_select(1, up)
            s_here[level - 1 :] += stacks[level][1:]  # M(n, d) for d = level .. D
            e = (s_here * weights[:, None, None]).sum(0)
            s_above = s_here
        else:
            ks = ds[level - 1 :]
            weights = weights_for(ks, ks).to(probs.dtype)[:, :, None, None]
            masses = stacks[level][1:] if level < depth_max else stacks[level]  # M(n, d) for d = level .. D
            h = masses[0] * weights[:, 0]
            for d in range(1, masses.shape[0]):
                h.addcmul_(masses[d], weights[:, d])
            if h_above is not None:
                h += h_above[1:].index_select(1, up)
            elif s_above is not None:  # the switch: H_k of the level above from its S, for k = level .. D
                w_all = weights_for(ks, ds).to(probs.dtype)[:, :, None, None]
                from_s = s_above[0] * w_all[:, 0]
                for d in range(1, depth_max):
                    from_s.addcmul_(s_above[d], w_all[:, d])
                h += from_s.index_select(1, up)
                s_above = None
            e = h[0]
            h_above = h
        if argmax:
            value, where = e.max(dim=0)
            better = value > best_value  # strict: earlier (smaller) indices win ties
            best_value = torch.where(better, value, best_value)
            best_node = torch.where(better, where + a, best_node)
        else:
            out[a:b] = e
    return best_node if argmax else out


def expected_hierarchical_fbeta(
    probs: Any, taxonomy: Taxonomy, *, beta: float = 1.0, validate_args: bool = True
) -> Any:
    """Exact expected hierarchical F-beta of predicting each node (Plaud et al., ICML 2025).

    The truth ``Y`` follows the distribution whose marginals are ``probs``:
    ``P(Y = y) = q(y) = P(y) - sum_{c in children(y)} P(c)`` (0 at inner nodes
    for leaf-only distributions; negative marginals count as 0 and ``q`` is
    clipped at 0 if the marginals are incoherent). Predicting node ``n`` (its path, root excluded) scores
    ``hF(n, y) = (1 + beta^2) |A(n) & A(y)| / (beta^2 |A(y)| + |A(n)|)``
    with ``|A(n)| = depth(n)`` and ``|A(n) & A(y)| = depth(lca(n, y))``.
    Writing ``depth(lca(n, y))`` as the number of non-root ``a`` on ``n``'s
    path with ``y`` in ``subtree(a)``:

    ``E[hF(n)] = (1 + beta^2) sum_{a in path(n), a != root} sum_d M(a, d) / (beta^2 d + depth(n))``

    where ``M(a, d)`` is the mass of truths of depth ``d`` below ``a``:
    per-depth subtree sums, bottom-up, then path sums, top-down.
    ``O(B x num_nodes x D)`` time for depth ``D`` (much less on wide trees)
    in about ``D`` vectorised steps, no node x node matrix: on a 20,000-node
    taxonomy, 256 samples take 0.06 s at depth 5, 0.27 s at depth 22, 1.7 s at
    depth 100 and 4.3 s at depth 372 on a 2-core CPU. Predicting the root scores 0.

    Args:
        probs: node marginals ``(B, num_nodes)``, torch or numpy.
        taxonomy: a tree.
        beta: the F-beta weight of recall (``beta > 0``).
        validate_args: check that ``probs`` are finite, in ``[0, 1]`` and 1 at the root (see :func:`decode`).

    Returns:
        ``(B, num_nodes)`` expected hF-beta, float.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        ValueError: bad ``probs`` or ``beta``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> probs = np.array([[1.0, 0.6, 0.4, 0.3, 0.3]])
        >>> expected_hierarchical_fbeta(probs, tax).round(3).tolist()
        [[0.0, 0.4, 0.4, 0.45, 0.45]]
    """
    _check_taxonomy(taxonomy)
    _require_tree(taxonomy, "expected_hierarchical_fbeta")
    beta = _check_beta(beta)
    tensor, as_numpy, slack = _as_probs(probs, taxonomy, validate=False)
    if tensor.shape[0] == 0:
        out = tensor.new_zeros(0, taxonomy.num_nodes)
        return out.cpu().numpy() if as_numpy else out
    plan = _plan(taxonomy, str(tensor.device))
    out = _per_chunk(
        tensor,
        lambda x: _expected_hf_chunk(x, plan, beta).t(),
        width=plan.hf_width,
        validate=validate_args,
        min_rows=_HF_MIN_ROWS,
        slack=slack,
        elements=_HF_CHUNK_FACTOR * _CHUNK_ELEMENTS,
    )
    return out.cpu().numpy() if as_numpy else out


def decode(
    probs: Any,
    taxonomy: Taxonomy,
    rule: Rule = "argmax_leaf",
    *,
    threshold: float | None = None,
    cost: CostLike = None,
    beta: float | None = None,
    validate_args: bool = True,
) -> Any:
    """Decode node marginals into one predicted node per sample.

    Rules and their formulas:

    - ``"argmax_leaf"``: ``argmax_{l leaf} P(l)``.
    - ``"top_down"``: ``n_0 = root``, ``n_{k+1} = argmax_{c in children(n_k)} P(c)``
      until a leaf (smaller index on ties).
    - ``"threshold"``: ``argmax_{n : P(n) >= threshold} (depth(n), P(n))``,
      the root always qualifying; ``threshold=0.5`` gives the majority rule.
    - ``"crm"``: ``argmin_{l leaf} sum_y P(y) d(l, y)`` with the LCA cost
      ``d`` given by ``cost`` (default: the distance that
      :func:`hiercls.metrics.mistake_severity` uses by default, the LCA height
      when every leaf has one depth and the path length otherwise), Karthik et
      al. 2021; see :func:`expected_lca_cost`.
    - ``"hf_optimal"``: ``argmax_n E[hF_beta(n, Y)]``, exact, Plaud et al.
      2025; see :func:`expected_hierarchical_fbeta`. The only rule whose time
      grows with the depth as well, ``O(B x num_nodes x max_depth)``; the
      others take a few ``(B, num_nodes)`` passes.

    Ties go to the smaller index where the compared values are equal as
    computed. ``"crm"`` and ``"hf_optimal"`` compare sums of products, which
    two nodes tied in exact arithmetic may reach one rounding step apart (and
    differently in float32 and float64, or at another batch size, where the
    chunking sums in another order): such a tie goes either way.

    ``"crm"`` and ``"hf_optimal"`` need a tree; the others work on DAGs too.
    When to use which: the documentation's Concepts > Decoding page (``docs/concepts/decoding.md``).

    Each option belongs to one rule (:data:`RULE_OPTIONS`); given to another rule, it has no
    effect and a ``UserWarning`` says so (a threshold passed with ``rule="top_down"`` does not
    make top-down decoding stop early: use ``rule="threshold"``).

    Args:
        probs: node marginals ``(B, num_nodes)`` (torch, numpy or nested lists), any head.
        taxonomy: the taxonomy of the head.
        rule: the decoding rule.
        threshold: the ``"threshold"`` rule's marginal threshold (``None``: 0.5), in ``[0, 1]``, or
            ``inf`` (every answer the root: the first point of :func:`operating_curve`). ``p >= threshold``
            is decided on the exact values whatever the marginals' dtype, as in :func:`operating_curve`.
        cost: the ``"crm"`` cost: ``None``/``"auto"``, ``"height"``, ``"path"`` or a per-node array.
        beta: the ``"hf_optimal"`` F-beta weight (``None``: 1).
        validate_args: check that ``probs`` are finite and in ``[0, 1]``, with 1 in the root's
            column (every sample is at the root), and that a ``cost``
            tensor is finite (three numbers per chunk read back to the host: a GPU sync per
            call). Turn it off in a hot loop whose inputs come straight from ``head.marginals``:
            no rule then reads anything back or copies anything from the host per call.

    Returns:
        int64 node indices ``(B,)``: a torch tensor on ``probs``' device for
        torch input, a numpy array otherwise.

    Raises:
        ValueError: an unknown rule, bad ``probs`` (shape, dtype, NaN, values outside ``[0, 1]``:
            logits passed by mistake; a root column below 1: a softmax or sigmoid over the logits,
            where ``head.marginals(logits)`` was meant) or options (a ``threshold`` outside ``[0, 1]``). Both bounds
            allow 0.001 of rounding, as the marginals do, so that every threshold
            :func:`operating_curve` returns decodes; half-precision ``probs`` get four of their
            dtype's eps (0.0039 in float16, 0.031 in bfloat16, whose next value above 1 is
            1.0078), and the threshold the same. An empty batch
            (``B = 0``) is not an error: it decodes to an empty result.
        TaxonomyError: ``"crm"`` or ``"hf_optimal"`` on a DAG.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> probs = np.array([[1.0, 0.6, 0.4, 0.3, 0.3]])
        >>> [tax.name(int(decode(probs, tax, rule)[0])) for rule in ("argmax_leaf", "threshold", "hf_optimal")]
        ['b', 'a', 'a1']
    """
    _check_taxonomy(taxonomy)
    _check_option(rule, "rule", _RULES)
    if rule in ("crm", "hf_optimal"):
        _require_tree(taxonomy, f"rule={rule!r}")
    _warn_unused_options(rule, threshold=threshold, cost=cost, beta=beta)
    tensor, as_numpy, slack = _as_probs(probs, taxonomy, validate=False)
    if rule == "threshold":
        threshold = _check_threshold(0.5 if threshold is None else threshold, slack)
    elif rule == "hf_optimal":
        beta = _check_beta(1.0 if beta is None else beta)
    if tensor.shape[0] == 0:  # an empty shard: nothing to decode, options checked all the same
        if rule == "crm":
            _resolve_cost(cost, taxonomy, tensor.device, tensor.dtype, validate_args)
        return _out(torch.empty(0, dtype=torch.int64, device=tensor.device), as_numpy)
    plan = _plan(taxonomy, str(tensor.device))
    if rule == "argmax_leaf":
        return _out(_per_chunk(tensor, lambda x: _argmax_leaf(x, plan), validate=validate_args, slack=slack), as_numpy)
    if rule == "top_down":
        return _out(_per_chunk(tensor, lambda x: _top_down(x, plan), validate=validate_args, slack=slack), as_numpy)
    if rule == "threshold":
        tau = float(threshold)
        return _out(
            _per_chunk(tensor, lambda x: _threshold(x, plan, tau), validate=validate_args, slack=slack), as_numpy
        )
    if rule == "crm":
        mode, c = _resolve_cost(cost, taxonomy, tensor.device, tensor.dtype, validate_args)
        first_leaf = plan.leaf_index

        def crm(x: torch.Tensor) -> torch.Tensor:
            return first_leaf[
                _leaf_block(_expected_cost_chunk(x, plan, mode, c, up_to_constant=True), plan).argmin(dim=1)
            ]

        return _out(_per_chunk(tensor, crm, validate=validate_args, slack=slack), as_numpy)
    return _out(
        _per_chunk(
            tensor,
            lambda x: _expected_hf_chunk(x, plan, beta, argmax=True),
            width=plan.hf_width,
            validate=validate_args,
            min_rows=_HF_MIN_ROWS,
            slack=slack,
            elements=_HF_CHUNK_FACTOR * _CHUNK_ELEMENTS,
        ),
        as_numpy,
    )


def _warn_unused_options(rule: str, **options: Any) -> None:
    """Warn, once per call, about the options given (not None) that ``rule`` does not read."""
    unused = [name for name, value in options.items() if value is not None and name not in RULE_OPTIONS[rule]]
    if unused:
        owners = ", ".join(f"{name} belongs to rule={_OPTION_RULE[name]!r}" for name in unused)
        warnings.warn(
            f"decode: rule={rule!r} ignores {', '.join(f'{n}={_brief(options[n])}' for n in unused)} ({owners}). "
            f"Leave {'it' if len(unused) == 1 else 'them'} out, or pick the rule that reads "
            f"{'it' if len(unused) == 1 else 'them'}.",
            UserWarning,
            stacklevel=3,
        )


def _brief(value: Any) -> str:
    """A short description of an option's value for a message (an array's type and shape, not its values:
    a per-node cost may have 100,000 entries, and printing a CUDA tensor waits for the device)."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim > 0:
        return f"<{type(value).__name__} of shape {tuple(value.shape)}>"
    return reprlib.repr(value)


def top_k_leaves(probs: Any, taxonomy: Taxonomy, k: int, *, validate_args: bool = True) -> Any:
    """The ``k`` leaves with the largest marginals, best first (for distance@k).

    Ties go to the smaller node index, so the first leaf is :func:`decode`'s ``"argmax_leaf"`` and the
    ``k`` leaves are the first ``k`` of the ``k + 1``.

    Args:
        probs: node marginals ``(B, num_nodes)``.
        taxonomy: a tree or a DAG.
        k: how many leaves, ``1 <= k <= num_leaves``.
        validate_args: check that ``probs`` are finite, in ``[0, 1]`` and 1 at the root (see :func:`decode`).

    Returns:
        int64 node indices ``(B, k)`` (torch in, torch out; numpy otherwise).

    Raises:
        ValueError: bad ``probs`` or ``k``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> top_k_leaves(np.array([[1.0, 0.6, 0.4, 0.35, 0.25]]), tax, 2).tolist()
        [[2, 3]]
    """
    _check_taxonomy(taxonomy)
    k = _scalar(k)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= taxonomy.num_leaves:
        raise ValueError(f"k: expected an int in [1, {taxonomy.num_leaves}] (the number of leaves), got {k!r}.")
    tensor, as_numpy, slack = _as_probs(probs, taxonomy, validate=False)
    if tensor.shape[0] == 0:
        return _out(torch.empty(0, int(k), dtype=torch.int64, device=tensor.device), as_numpy)
    plan = _plan(taxonomy, str(tensor.device))
    # in chunks: _top_k_columns makes a few temporaries of the leaf block's size (masks, integer keys)
    cols = _per_chunk(
        tensor,
        lambda x: _top_k_columns(_leaf_block(x, plan), int(k)),
        width=3,
        validate=validate_args,
        slack=slack,
    )
    return _out(plan.leaf_index[cols], as_numpy)


def _top_k_columns(block: torch.Tensor, k: int) -> torch.Tensor:
    """Columns of the ``k`` largest values per row, best first, ties to the smaller column (NaN largest).

    ``topk``'s choice and order among equal values are unspecified, and a stable sort of every row
    costs ``O(L log L)`` (about 10x this on 10,000 leaves). So: ``topk`` finds the ``k``-th value; every
    larger value is in, and of the values equal to it the smallest columns fill the rest (a second
    ``topk`` over an integer key); the ``k`` chosen columns, taken in column order, are then sorted
    stably. No data-dependent branch, so no device sync. NaN (only without validation) counts as
    larger than anything, as in ``torch.sort``.
    """
    # the k-th value; NaN (largest for topk and sort) as +inf, so that comparisons order it
    edge = torch.topk(block, k, dim=1).values[:, -1:].nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf)
    width = block.shape[1]
    dtype = torch.int32 if 2 * width < 2**31 else torch.int64
    rank = torch.arange(width, 0, -1, dtype=dtype, device=block.device)  # smaller column, larger key
    # not below the edge: the tied and the larger (NaN included); not at or below it: the larger, fewer
    # than k per row (or, with k or more NaN, the NaN alone), so all of them are chosen first
    key = block.lt(edge).logical_not_().to(dtype).mul_(rank)
    key.add_(block.le(edge).logical_not_().to(dtype), alpha=width)
    cols = torch.topk(key, k, dim=1).indices.sort(dim=1).values
    order = torch.sort(block.gather(1, cols), dim=1, descending=True, stable=True).indices
    return cols.gather(1, order)


# --------------------------------------------------------- operating curves
@dataclass(frozen=True)
class OperatingCurve:
    """The exact operating curve of the ``"threshold"`` rule over all thresholds.

    Attributes:
        thresholds: float64 ``(T,)``, decreasing; the first is ``inf`` (every prediction is the root).
        specificity: float64 ``(T,)``: mean LCA recall ``c(lca(p, t)) / c(t)`` of
            the predictions at each threshold (how much of the true label's
            specificity the predictions recover; the x-axis of Valmadre 2022).
        correct: float64 ``(T,)``: the fraction of predictions that are the
            truth or one of its ancestors.
        auc: the area under the Pareto front, ``integral_0^1 max{correct_j : specificity_j >= x} dx``:
            the best correct rate reachable at each specificity (a step function; the
            curve itself need not be monotone for incoherent marginals).

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> probs = torch.tensor([[1.0, 0.9, 0.1, 0.6, 0.3], [1.0, 0.2, 0.8, 0.1, 0.1]])
        >>> curve = operating_curve(probs, torch.tensor([3, 2]), tax)
        >>> float(curve.thresholds[0]), bool(0.0 <= curve.auc <= 1.0)
        (inf, True)
    """

    thresholds: np.ndarray
    specificity: np.ndarray
    correct: np.ndarray
    auc: float


def _front_area(specificity: np.ndarray, correct: np.ndarray) -> float:
    order = np.argsort(specificity, kind="stable")
    x = specificity[order]
    best_beyond = np.maximum.accumulate(correct[order][::-1])[::-1]  # max correct among points at >= x
    widths = np.diff(np.concatenate([[0.0], x]))
    return float(np.sum(widths * best_beyond))


def _records(
    tensor: torch.Tensor, target: np.ndarray, taxonomy: Taxonomy, score: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, Any]]:
    """Every sample's "records", chunk by chunk: the thresholds at which its ``"threshold"`` answer changes.

    Scanning a sample's nodes by decreasing marginal (ties by index), a node is a record when it is deeper than
    every node before it (the root first, at threshold ``inf``): at any threshold the rule answers the last
    record whose marginal is at least it. Equivalently, a level's largest marginal (first index on ties) is a
    record when every deeper level's largest is smaller, so one pass over the levels finds them, without
    sorting the nodes. A shallower node tied with a deeper level's largest is never the answer (at that
    threshold the deeper one is), so it is no record: counted, it made :func:`conformal_threshold` score a
    sample wrong at a threshold where the rule answered right. Yields ``(sample, threshold, node, pairs)``
    arrays, sorted by sample and, within one, by decreasing threshold (root first); ``pairs`` are the
    :func:`_pair_stats` of (truth, node).
    """
    plan = _plan(taxonomy, str(tensor.device))
    for part in _chunks(tensor.shape[0], tensor.shape[1]):
        x = tensor[part]
        rows = x.shape[0]
        best = [x[:, a:b].max(dim=1) for a, b in plan.bounds[1:]]  # nodes sorted by depth: a level, a range
        if best:
            value = torch.stack([v for v, _ in best], dim=1)
            node = torch.stack([w + a for (_, w), (a, _) in zip(best, plan.bounds[1:])], dim=1)
        else:  # a root-only taxonomy has no levels below it
            value = x.new_empty((rows, 0))
            node = torch.zeros((rows, 0), dtype=torch.long, device=x.device)
        # the largest marginal of the levels below each level (-inf below the deepest)
        below = torch.cat([value[:, 1:], value.new_full((rows, 1), -torch.inf)], dim=1)
        below = torch.flip(torch.cummax(torch.flip(below, [1]), dim=1).values, [1])
        record = value > below  # a tie with a deeper level: the deeper node answers at that threshold
        value = torch.cat([value.new_full((rows, 1), torch.inf), value], dim=1)  # the root, always a record
        node = torch.cat([node.new_zeros((rows, 1)), node], dim=1)
        record = torch.cat([record.new_ones((rows, 1)), record], dim=1)
        r, c = record.nonzero(as_tuple=True)
        nodes = node[r, c].cpu().numpy()
        thr = value[r, c].double().cpu().numpy()
        sample = r.cpu().numpy() + part.start
        # DAG: the most specific common ancestor under ``score``
        yield sample, thr, nodes, _pair_stats(taxonomy, target[sample], nodes, score=score)


def operating_curve(
    probs: Any,
    target: LabelsLike,
    taxonomy: Taxonomy,
    *,
    measure: Measure = "info",
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> OperatingCurve:
    """Sweep the ``"threshold"`` rule over every threshold: (specificity, correct) pairs and their area.

    Valmadre (NeurIPS 2022): as the threshold falls, predictions move deeper
    and become more specific but less often correct. For each sample, the
    prediction changes only at the marginals of its "records": scanning nodes
    by decreasing marginal (ties by index), a node is a record when it is
    deeper than every node before it (the root first). Each record is an event
    ``(threshold, change in specificity, change in correctness)``; sorting all
    events and accumulating gives the exact curve in ``O(B N)`` (one pass over each level finds the
    records; the events' sort is over ``B x max_depth`` of them).

    ``specificity`` is the mean LCA recall ``c(lca(p, t)) / c(t)`` (1 for a
    sample labelled at the root; on a DAG, ``c(lca)`` is the largest ``c`` of the
    common ancestors, which need not be unique), ``c`` the information
    ``log(num_leaves / leaves_under(n))`` (``measure="info"``, Valmadre's
    choice) or the depth; ``correct`` is the fraction of predictions that are
    the truth or one of its ancestors.

    Args:
        probs: node marginals ``(B, num_nodes)``.
        target: true nodes ``(B,)``, names or indices.
        taxonomy: a tree or a DAG.
        measure: ``"info"`` or ``"depth"``.
        thresholds: evaluate the curve at these thresholds instead of returning
            every breakpoint (the area is still computed on the exact curve). Unlike
            :func:`decode`, values outside ``[0, 1]`` are read, as the curve's ends: above
            every marginal, the first point (every answer the root); below 0, the last.

    Returns:
        An :class:`OperatingCurve`.

    Raises:
        ValueError: bad shapes, empty input, an unknown ``measure``, or ``probs`` that are not node
            marginals (outside ``[0, 1]``, or a root column below 1; see :func:`decode`).

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> probs = np.array([[1.0, 0.9, 0.1, 0.6, 0.3]])
        >>> curve = operating_curve(probs, ["a2"], tax, measure="depth")
        >>> curve.thresholds.tolist(), curve.specificity.tolist(), curve.correct.tolist()
        ([inf, 0.9, 0.6], [0.0, 0.5, 0.5], [1.0, 1.0, 0.0])
        >>> curve.auc
        0.5
    """
    _check_taxonomy(taxonomy)
    tensor, _, _ = _as_probs(probs, taxonomy, allow_empty=False)
    t = _encode(target, taxonomy, "target")
    if len(t) != tensor.shape[0]:
        raise ValueError(f"probs and target must have the same number of samples, got {tensor.shape[0]} and {len(t)}.")
    c = _measure(taxonomy, measure)
    ev_thr, ev_spec, ev_corr = [], [], []
    base_spec = 0.0
    base_corr = 0.0
    for sample, thr, _nodes, pairs in _records(tensor, t, taxonomy, score=c):
        truth = t[sample]
        spec = _safe_div(c[pairs.lca], c[truth], 1.0)
        corr = (pairs.inter == pairs.size_pred).astype(np.float64)
        first = np.ones(len(sample), dtype=bool)
        first[1:] = sample[1:] != sample[:-1]  # the root record of each sample
        base_spec += float(spec[first].sum())
        base_corr += float(corr[first].sum())
        later = ~first
        ev_thr.append(thr[later])
        ev_spec.append((spec - np.roll(spec, 1))[later])
        ev_corr.append((corr - np.roll(corr, 1))[later])
    batch = tensor.shape[0]
    thr = np.concatenate(ev_thr)
    order_e = np.argsort(-thr, kind="stable")
    thr = thr[order_e]
    d_spec = np.concatenate(ev_spec)[order_e]
    d_corr = np.concatenate(ev_corr)[order_e]
    # one point per distinct threshold: the state after all events at or above it
    last = np.append(thr[1:] != thr[:-1], True) if len(thr) else np.zeros(0, dtype=bool)
    thresholds_all = np.concatenate([[np.inf], thr[last]])
    spec_all = np.concatenate([[base_spec], base_spec + np.cumsum(d_spec)[last]]) / batch
    corr_all = np.concatenate([[base_corr], base_corr + np.cumsum(d_corr)[last]]) / batch
    auc = _front_area(spec_all, corr_all)
    if thresholds is None:
        return OperatingCurve(thresholds_all, spec_all, corr_all, auc)
    try:
        query = np.asarray(thresholds, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        query = np.array([np.nan])  # not numbers: refused below, with the argument named
    if query.size == 0 or np.isnan(query).any():
        raise ValueError(
            f"thresholds: expected a non-empty sequence of numbers (inf allowed: the curve's first point), "
            f"got {thresholds!r}."
        )
    # number of breakpoints at or above each query threshold (thresholds_all is decreasing)
    at = np.searchsorted(-thresholds_all, -query, side="right") - 1
    return OperatingCurve(query, spec_all[at], corr_all[at], auc)


def _allowed_wrong(num: int, error: float, confidence: float | None) -> int:
    """``k``: the threshold goes just above the k-th largest score (0: no finite threshold is safe enough).

    Marginal: ``floor(error * (num + 1))``, with ``error`` read as the decimal it prints as (0.29 is 29/100,
    not the binary value just below it). With ``confidence``: the largest ``k`` with
    ``P(Binomial(num, error) <= k - 1) <= 1 - confidence``.
    """
    if confidence is None:
        return math.floor(Fraction(repr(error)) * (num + 1))
    j = torch.arange(num + 1, dtype=torch.float64)
    log_pmf = (
        torch.lgamma(torch.tensor(num + 1.0, dtype=torch.float64))
        - torch.lgamma(j + 1)
        - torch.lgamma(num - j + 1)
        + j * math.log(error)
        + (num - j) * math.log1p(-error)
    )
    cdf = torch.cumsum(torch.exp(log_pmf), 0)
    return int((cdf <= 1.0 - confidence + 1e-12).sum())  # the slack: float sums of exact ties (n=11, 0.5)


def _check_rate(value: Any, name: str, example: str) -> float:
    """A rate in (0, 1) from a Python, numpy or 0-d torch number, read as the decimal it prints as (a
    float32 0.7 is 0.7, not 0.69999998807907: :func:`_allowed_wrong` reads its decimal digits)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = value.detach().cpu().numpy()[()]  # a numpy scalar of the tensor's dtype
    elif isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name}: expected a number strictly between 0 and 1 (e.g. {example}), got {value!r}.")
    value = float(str(value)) if isinstance(value, np.floating) else float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}: expected a number strictly between 0 and 1 (e.g. {example}), got {value}.")
    return value


def conformal_threshold(
    probs: Any, target: LabelsLike, taxonomy: Taxonomy, *, error: float, confidence: float | None = None
) -> float:
    """A threshold for the ``"threshold"`` rule whose error rate on new samples is at most ``error``, guaranteed.

    An answer is wrong when it is neither the truth nor one of its ancestors (the complement of
    :func:`~hiercls.metrics.correct_rate`). Each calibration sample ``i`` gets a score ``s_i``: the largest
    threshold at which the rule answers it wrongly (``-inf`` if it never does), found exactly from the same
    breakpoints as :func:`operating_curve`. Any threshold above ``s_i`` answers sample ``i`` correctly.
    The threshold returned lies just above the ``k``-th largest score (split conformal prediction,
    Vovk et al. 2005; conformal risk control, Angelopoulos et al., ICLR 2024): the lowest threshold at and
    above which at most ``k - 1`` calibration answers are wrong. (The rule's error need not fall as the
    threshold rises; a lower threshold with few wrong calibration answers is not covered by the guarantee.)

    - ``confidence=None``, ``k = floor(error * (n + 1))``: for a new sample exchangeable with the
      ``n`` calibration samples, ``P(answer wrong) <= error`` (on average over calibration sets).
    - ``confidence=1 - δ``, the largest ``k`` with ``P(Binomial(n, error) <= k - 1) <= δ``: with
      probability at least ``1 - δ`` over the calibration set, the error rate on new samples is at most
      ``error`` (a training-conditional guarantee, Vovk, ACML 2012; needs more samples and picks higher
      thresholds).

    The guarantee holds for any head and any marginals (coherent or not), provided the calibration and new
    samples come from the same distribution: calibrate on held-out data the model was not trained or
    selected on. It bounds the error rate, not how specific the answers are: check
    :func:`~hiercls.metrics.correct_rate` and the depth of the answers on test data. A calibration sample
    labelled at an inner node counts an answer below its label as wrong, as ``correct_rate`` does.

    Args:
        probs: node marginals ``(n, num_nodes)`` of the calibration samples (torch or numpy).
        target: their true nodes ``(n,)``, names or indices.
        taxonomy: a tree or a DAG.
        error: the error rate to stay under, in ``(0, 1)``.
        confidence: ``None`` for the guarantee on average; a number in ``(0, 1)`` (e.g. 0.9) for the
            guarantee with that probability over the calibration set.

    Returns:
        The threshold: pass it to ``decode(probs, taxonomy, rule="threshold", threshold=...)``. ``0.0`` when
        no threshold makes more than ``k - 1`` calibration answers wrong; ``inf`` (every answer is the root,
        never wrong), with a warning, when ``n`` is too small for ``error`` (fewer than ``1 / error - 1``
        samples, or too few for the confidence).

    Raises:
        ValueError: bad shapes, empty input, ``error`` or ``confidence`` outside ``(0, 1)``, or ``probs``
            that are not node marginals (see :func:`decode`).

    Examples:
        >>> import numpy as np
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])  # nodes r, a, b, a1, a2
        >>> probs = np.array([[1.0, 0.95, 0.05, 0.8, 0.15]] * 9 + [[1.0, 0.9, 0.1, 0.7, 0.2]])
        >>> target = ["a1"] * 9 + ["a2"]  # the last answer is wrong at thresholds up to 0.7 (a1), right above
        >>> tau = conformal_threshold(probs, target, tax, error=0.1)  # k = 1: just above that 0.7
        >>> tau
        0.7000000000000001
        >>> tax.names(decode(probs[-2:], tax, "threshold", threshold=tau))
        ['a1', 'a']
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:  # 10 samples are too few at 90% confidence
        ...     warnings.simplefilter("always")
        ...     conformal_threshold(probs, target, tax, error=0.1, confidence=0.9)
        inf
        >>> print(caught[0].message)
        conformal_threshold: 10 calibration samples are too few for error=0.1 at confidence=0.9: about 22 or
        more are needed to answer below the root. ...
    """
    _check_taxonomy(taxonomy)
    error = _check_rate(error, "error", "0.05")
    if confidence is not None:
        confidence = _check_rate(confidence, "confidence", "0.9")
    tensor, _, _ = _as_probs(probs, taxonomy, allow_empty=False)
    t = _encode(target, taxonomy, "target")
    num = tensor.shape[0]
    if len(t) != num:
        raise ValueError(f"probs and target must have the same number of samples, got {num} and {len(t)}.")
    k = _allowed_wrong(num, error, confidence)
    if k == 0:
        if confidence is None:  # the least num with k >= 1, error read as _allowed_wrong reads it
            need = f"at least {math.ceil(1 / Fraction(repr(error))) - 1}"
        else:
            need = f"about {math.ceil(math.log1p(-confidence) / math.log1p(-error))} or more"
        warnings.warn(
            f"conformal_threshold: {num} calibration samples are too few for error={error}"
            + ("" if confidence is None else f" at confidence={confidence}")
            + f": {need} are needed to answer below the root. Returning inf (every answer is the root). "
            "Calibrate on more samples or allow a larger error.",
            UserWarning,
            stacklevel=2,
        )
        return math.inf
    scores = np.full(num, -np.inf)
    for sample, thr, _nodes, pairs in _records(tensor, t, taxonomy):
        wrong = pairs.inter != pairs.size_pred
        # within a sample, records come by decreasing threshold: its first wrong one is its largest
        first, at = np.unique(sample[wrong], return_index=True)
        scores[first] = thr[wrong][at]
    kth = float(np.partition(scores, num - k)[num - k])  # the k-th largest score
    if kth < 0.0:  # never wrong (or wrong only at rounding noise below 0): every threshold >= 0 is as good
        return 0.0
    return float(np.nextafter(kth, math.inf))
