"""Masked per-node losses over a taxonomy, each as a pure function and a thin ``nn.Module``.

Every loss takes ``logits`` (the raw output of the matching head, see the
table) and ``target``, a ``(B,)`` integer tensor of node indices. A target may
be any node: an inner node is a **partial label** (the sample's finer class is
unknown), and then nothing below that node is taught by the sample (in a DAG,
nor any other ancestor of a node below it: that ancestor is positive exactly when
the truth lies below it).

=====================================  ==============  ====================  =======================
function / module                      head            logits                partial label
=====================================  ==============  ====================  =======================
``conditional_softmax_nll``            conditional     ``(B, num_nodes)``    path stops at the label
``level_cross_entropy``                level           ``(B, num_nodes)``    deeper levels ignored
``node_bce``                           sigmoid         ``(B, num_nodes)``    nodes below masked
``max_constraint_loss``                sigmoid (MCM)   ``(B, num_nodes)``    nodes below masked
``flat_cross_entropy``                 flat            ``(B, num_leaves)``   -log P(labelled node)
``hxe_loss``                           flat            ``(B, num_leaves)``   path stops at the label
``soft_label_loss``                    flat            ``(B, num_leaves)``   leaves below share d
=====================================  ==============  ====================  =======================

Common arguments:

- ``reduction``: ``"mean"`` (sum over the batch divided by ``B``, with or without
  a ``weight``: not torch's weighted mean, which divides by the weights' sum), ``"sum"``,
  or ``"none"`` (a float32 ``(B,)`` tensor; float64 for float64 logits). **Empty batch**: ``"mean"`` and
  ``"sum"`` give ``0.0`` (connected to the graph, so ``backward()`` works),
  ``"none"`` an empty tensor.
- ``weight``: optional float tensor, per node ``(num_nodes,)`` or per level
  ``(max_depth + 1,)`` (index = depth; a per-level weight ``w`` is the
  per-node weight ``w[depth(node)]``). Each loss says what it weights. One weight
  per class, as ``nn.CrossEntropyLoss`` takes it, is one per leaf: spread it onto
  the nodes (``w = torch.zeros(num_nodes); w[taxonomy.as_tensor("leaf_index")] =
  leaf_weight``). Where a taxonomy has as many leaves as levels, the flat, HXE and
  soft-label losses (one logit per leaf) refuse a weight of that length rather than
  guess which it is.
- ``label_smoothing``: ``ε`` in ``[0, 1]``; each loss says how it smooths.
- ``validate_args``: check the values too (NaN or ``+inf`` logits raise
  ``ValueError``, targets out of range raise ``UnknownNodeError``, node
  marginals passed for logits warn); this costs
  one device synchronisation per call, which on a GPU stalls the launch queue
  (measured on an H200: 3-6% of a ViT-S / ConvNeXt-T training step at batch
  256). Validate the first batches, then train with ``validate_args=False``:
  no loss then reads anything back from a GPU, on a tree or a DAG, and under
  ``torch.compile`` a loss module traces into one graph (on the CPU, where a
  read-back costs nothing, the flat loss still reads one size in eager mode).
  Shapes and dtypes are always checked. Unchecked values are not caught later:
  a target of ``-1`` is read as the last node by some losses (plain tensor
  indexing) and fails with an unrelated indexing error in others, and a NaN
  logit gives a NaN loss. A ``+inf`` logit (a float16 overflow) is read by
  every loss as the largest finite float32 (float64 for float64 logits), with
  its gradient passed through: the loss is huge, or ``+inf`` once such terms
  add up (the limit), never NaN, and the gradient stays finite.

A logit of ``-inf`` masks its node (``logits + mask.log()``): the loss is that of a
very negative logit and the masked logit's gradient is 0, even when a whole
sibling group or level is masked. Never mask a sample's own target (its loss
becomes infinite or meaningless); with label smoothing or :func:`soft_label_loss`,
which spread target mass onto other nodes, a masked node in the smoothed set
makes the loss ``+inf`` too (for :func:`node_bce`, :func:`max_constraint_loss` and,
with label smoothing, :func:`level_cross_entropy` a huge value instead: the masked logit is clamped to the largest finite float,
so each such node adds about ``ε/2`` times the dtype's maximum (``ε/C`` for a level of ``C``
nodes in :func:`level_cross_entropy`), finite for one
node, so that a ``torch.isfinite`` guard does not catch it, and ``+inf`` once
a few add up).

Logits are computed in float32 whatever their dtype (bf16 under autocast is
fine; float64 stays float64, and so do float64 weights). Everything is vectorised with index tensors; the only Python loops run
over depth levels. The gradients of :func:`flat_cross_entropy`, :func:`node_bce` and
:func:`max_constraint_loss` are written by hand: a backward that builds a graph
(``create_graph=True``, for Hessian-vector products or gradient penalties) raises
instead of silently dropping the loss's second-order term.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hiercls.errors import TaxonomyError, UnknownNodeError
from hiercls.marginals import (
    _check_finite,
    _check_logits,
    _check_taxonomy,
    _dag_amax_nm,
    _dag_descend_nm,
    _default_device,
    _group_log_softmax_nm,
    _group_mean_nm,
    _leaf_rows,
    _level_sizes,
    _log_or_zero,
    _refill_buffers,
    _require_tree,
    _subtree_reduce_nm,
    _tables_for,
    _TaxonomyBuffers,
    _TaxonomyTables,
    _upcast,
)
from hiercls.taxonomy import Taxonomy, _user_stacklevel

__all__ = [
    "ConditionalSoftmaxLoss",
    "FlatCrossEntropyLoss",
    "HXELoss",
    "LevelCrossEntropyLoss",
    "LossKind",
    "MaxConstraintLoss",
    "NodeBCELoss",
    "Reduction",
    "SoftLabelLoss",
    "balanced_weight",
    "compatible_losses",
    "conditional_softmax_nll",
    "create_loss",
    "default_loss",
    "flat_cross_entropy",
    "hxe_loss",
    "level_cross_entropy",
    "max_constraint_loss",
    "node_bce",
    "soft_label_loss",
]

Reduction = Literal["mean", "sum", "none"]
"""How a loss reduces its per-sample values: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` (shape ``(B,)``)."""
LossKind = Literal["conditional", "level", "bce", "flat", "hxe", "soft_label", "max_constraint"]
"""The losses :func:`create_loss` builds; :func:`compatible_losses` says which fit a head type."""
_REDUCTIONS = ("mean", "sum", "none")

# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


def _check_reduction(reduction: Any) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {', '.join(map(repr, _REDUCTIONS))}, got {reduction!r}.")
    return reduction


def _check_smoothing(label_smoothing: Any) -> float:
    if (
        isinstance(label_smoothing, bool) or type(label_smoothing).__name__ == "bool_"
    ):  # True would silently mean 1.0 (uniform targets)
        raise ValueError(f"label_smoothing: expected a float in [0, 1], got {label_smoothing!r}.")
    try:
        value = float(label_smoothing)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"label_smoothing: expected a float in [0, 1], got {label_smoothing!r}.")
    return value


def _check_target(target: Any, logits: Tensor, num_nodes: int) -> Tensor:
    if not isinstance(target, Tensor):
        try:
            target = torch.as_tensor(target)
            if target.numel() == 0 and target.ndim == 1:  # [] or np.array([]): float by default, an empty batch
                target = target.long()
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"target: expected a (B,) integer tensor of node indices, got {type(target).__name__} ({err}). "
                "Turn node names into indices with taxonomy.encode(names)."
            ) from None
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        multi_hot = target.ndim == 2 and target.shape[-1] == num_nodes
        raise ValueError(
            f"target: expected integer node indices, got dtype {target.dtype}. "
            + (
                "A (B, num_nodes) multi-hot target is multi-label data, which the losses do not take: each "
                "sample has one node (a leaf, or an inner node for a partial label). "
                if multi_hot
                else ""
            )
            + "Use taxonomy.encode(labels) and torch.as_tensor(..., dtype=torch.long)."
        )
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"target: expected shape (B,) = ({logits.shape[0]},) to match logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}."
        )
    return target.to(device=logits.device, dtype=torch.long)


def _check_target_values(target: Tensor, num_nodes: int) -> None:
    if target.numel() == 0:
        return
    low, high = torch.stack([target.min(), target.max()]).tolist()
    if low < 0 or high >= num_nodes:
        bad = target[(target < 0) | (target >= num_nodes)]
        hint = (
            " An unlabelled sample: leave it out of the batch, or give the root (index 0), which teaches no "
            "decision (the conditional, level, BCE and max-constraint losses add 0 for it, and so do the flat "
            "and HXE losses without label smoothing, though a 'mean' still counts it; soft labels always pull "
            "it toward uniform leaves)."
            if low < 0
            else ""
        )
        raise UnknownNodeError(
            f"target: {bad.numel()} node indices out of range [0, {num_nodes}) of this taxonomy: "
            f"first {bad[:5].tolist()}. Encode labels with the same taxonomy's encode().{hint}"
        )


def _node_weight(
    weight: Any,
    taxonomy: Taxonomy,
    device: torch.device,
    check_values: bool,
    dtype: torch.dtype = torch.float32,
    leaf_logits: bool = False,
) -> Tensor | None:
    """A per-node (N,) weight (float32, or float64 for float64 logits) from a per-node or per-level weight.

    ``leaf_logits``: the loss reads one logit per leaf (flat, HXE, soft labels), where one weight per class
    is the habit of ``nn.CrossEntropyLoss``: a weight with as many values as leaves and as levels is refused
    rather than read as per-level."""
    if weight is None:
        return None
    if isinstance(weight, Tensor) and weight.device.type == "meta" and torch.device(device).type != "meta":
        raise ValueError(
            "weight: got a tensor on the meta device, which holds no values to keep. Build the weight outside "
            "`with torch.device('meta')` (on the CPU or the GPU); the loss's own tables may stay on meta."
        )
    try:
        weight = torch.as_tensor(weight, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"weight: expected a 1-D float tensor, got {type(weight).__name__}.") from None
    num, levels, leaves = taxonomy.num_nodes, taxonomy.max_depth + 1, taxonomy.num_leaves
    # one weight per class, as nn.CrossEntropyLoss takes it, is one per leaf: spread onto the nodes
    spread = (
        f"For one weight per leaf (as nn.CrossEntropyLoss takes one per class), spread them onto the nodes: "
        f"w = torch.zeros({num}); w[taxonomy.as_tensor('leaf_index')] = leaf_weight"
    )
    if weight.ndim != 1 or weight.shape[0] not in (num, levels):
        also = f" {spread}." if weight.ndim == 1 and weight.shape[0] == leaves else ""
        raise ValueError(
            f"weight: expected a per-node tensor of shape (num_nodes,) = ({num},) or a per-level tensor of shape "
            f"(max_depth + 1,) = ({levels},), got {tuple(weight.shape)}.{also}"
        )
    if leaf_logits and weight.shape[0] == leaves == levels != num:  # one per leaf, or one per level? Never guess
        raise ValueError(
            f"weight: {levels} values are one per level (max_depth + 1 = {levels}) and also one per leaf "
            f"(num_leaves = {leaves}) of this taxonomy, so which is meant cannot be told; give a per-node tensor "
            f"of shape ({num},). {spread}; for one weight per level: w = level_weight[taxonomy.as_tensor('depth_index')]."
        )
    if check_values and not bool((torch.isfinite(weight) & (weight >= 0)).all()):
        bad = torch.nonzero(~(torch.isfinite(weight) & (weight >= 0))).flatten()
        shown = ", ".join(f"[{i}] = {weight[i].item()}" for i in bad[:3].tolist())
        raise ValueError(
            f"weight: expected finite, non-negative values, got {len(bad)} other(s): {shown}. Weights scale each "
            "node's (or level's) term; give 0 to switch one off, or build them with balanced_weight."
        )
    if weight.shape[0] == num:  # (a chain has num == levels, and then both readings agree)
        return weight
    return weight[_tables_for(taxonomy, device).depth]  # a cached device table: no host copy per call


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return losses
    total = losses.sum()
    return total if reduction == "sum" else total / max(losses.shape[0], 1)


# ---------------------------------------------------------------------------------------------
# Pure tensor maths: (float32 logits, long target, index tables, per-node weight or None, ...) -> (B,)
# ---------------------------------------------------------------------------------------------


def _csr_pairs(ptr: Tensor, index: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate CSR rows ``rows``: (position in ``rows``, value) pairs."""
    starts = ptr[rows]
    ends = torch.cumsum(ptr[rows + 1] - starts, 0)
    total = int(ends[-1]) if rows.shape[0] else 0  # one device sync: the output size
    # (searchsorted rather than repeat_interleave, which stalls for ~20 ms on some multi-threaded CPUs)
    position = torch.arange(total, device=rows.device)
    owner = torch.searchsorted(ends, position, right=True)
    return owner, index[starts[owner] + position - (ends - (ptr[rows + 1] - starts))[owner]]


def _paths(target: Tensor, t: Any) -> tuple[Tensor, Tensor]:
    """Each target's path on a tree: ``(nodes, valid)``, both ``(B, max_depth + 1)``.

    ``nodes[b, d]`` is the target's ancestor at depth ``d`` (the root past the target's own depth,
    where ``valid`` is False). Read from the padded ancestor table where it is compact, else walked
    up from the target one level at a time (no table of size num_nodes x depth).
    """
    depth = t.depth[target]
    steps = torch.arange(t.max_depth + 1, device=target.device)
    valid = steps <= depth[:, None]
    if t.paths_tabled:
        return t.path_node[target], valid
    nodes = torch.zeros(target.shape[0], t.max_depth + 1, dtype=target.dtype, device=target.device)
    node = target
    for up in range(t.max_depth + 1):  # a loop over depth levels: writes the ancestor `up` levels above
        at = (depth - up).clamp_min(0)  # past the root: column 0, which holds the root anyway
        nodes.scatter_(1, at[:, None], torch.where(depth >= up, node, torch.zeros_like(node))[:, None])
        node = t.parent[node]
    return nodes, valid


def _path_tables(tax: Taxonomy) -> tuple[str, ...]:
    """The index tables :func:`_paths` reads on ``tax`` (a tree)."""
    return ("path_node", "depth") if _TaxonomyTables(tax).paths_tabled else ("parent", "depth")


def _positive_mask(target: Tensor, t: Any, node_major: bool = False) -> Tensor:
    """bool (B, N), or (N, B) when ``node_major``: the target and its ancestors."""
    batch = target.shape[0]
    shape = (t.num_nodes, batch) if node_major else (batch, t.num_nodes)
    mask = torch.zeros(shape, dtype=torch.bool, device=target.device)
    if t.is_tree:  # paths pad with the root, which is positive anyway
        nodes = _paths(target, t)[0]
        if not node_major:
            return mask.scatter_(1, nodes, True)
        rows = torch.arange(batch, device=target.device)[:, None].expand_as(nodes)
        return mask.index_put_((nodes, rows), torch.ones((), dtype=torch.bool, device=target.device))
    onehot = _dag_onehot_nm(target, t)
    mask = _dag_amax_nm(onehot, t) > 0  # nodes with the target at or below them: its ancestors and itself
    return mask if node_major else mask.t()


def _dag_onehot_nm(target: Tensor, t: Any) -> Tensor:
    """float (N, B): 1 at each sample's target node."""
    batch = target.shape[0]
    onehot = torch.zeros(t.num_nodes, batch, device=target.device)
    return onehot.index_put_((target, torch.arange(batch, device=target.device)), torch.ones((), device=target.device))


def _below_mask(target: Tensor, ranks: Tensor, t: Any, node_major: bool, strict: bool) -> Tensor:
    """Trees: bool (B, R), or (R, B): which of the nodes with preorder ``ranks`` (R,) lie below each target.

    A range test on preorder ranks: no index list whose length is data-dependent, so no device sync.
    """
    start = t.preorder[target]  # the target itself; its subtree runs to start + size - 1
    end = start + t.subtree_size[target] - 1
    if not strict:
        start = start - 1
    if node_major:
        return (ranks[:, None] > start[None, :]) & (ranks[:, None] <= end[None, :])
    return (ranks[None, :] > start[:, None]) & (ranks[None, :] <= end[:, None])


def _unknown_mask(target: Tensor, t: Any, node_major: bool = False) -> Tensor:
    """bool (B, N), or (N, B): nodes a (partial) label says nothing about: strictly below the target, and the root."""
    if t.is_tree:
        mask = _below_mask(target, t.preorder, t, node_major, strict=True)
        if node_major:
            mask[0] = True
        else:
            mask[:, 0] = True
        return mask
    # a DAG: strictly below the target (a top-down pass over the edges), then every node with one of those
    # below it (a bottom-up pass): a node sharing a descendant with the label is positive if the truth is that
    # descendant, so it is unknown too; the label's own path (its ancestors and itself) stays known.
    # Level by level over the edges, O(B x (nodes + edges)), with no list of data-dependent size: no sync.
    onehot = _dag_onehot_nm(target, t)
    strict = _dag_descend_nm(onehot, t) - onehot
    mask = (_dag_amax_nm(strict, t) > 0) & ~(_dag_amax_nm(onehot, t) > 0)
    mask[0] = True
    return mask if node_major else mask.t()


def _no_second_derivative(what: str) -> None:
    """A hand-written gradient has no derivative of its own: refuse a backward that builds a graph
    (``create_graph=True``: Hessian-vector products, gradient penalties, MAML) instead of dropping the
    term silently. ``torch.autograd.function.once_differentiable`` does not: it only marks its output
    when the incoming gradient itself requires grad, which a first ``grad(loss, params, create_graph=True)``
    never does."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{what}: no second derivative (the gradient is written by hand for speed). For Hessian-vector "
            "products or gradient penalties use conditional_softmax_nll, level_cross_entropy, hxe_loss or "
            "soft_label_loss, or F.cross_entropy over the leaves instead of flat_cross_entropy."
        )


class _MaskedBCEWithLogits(torch.autograd.Function):
    """``sum over dim of scale * BCEWithLogits(logits, goal)``, fused.

    One no-grad pass forward and ``scale * (sigmoid(logits) - goal)`` backward:
    several times faster on CPU than autograd through ``softplus`` (whose
    ``log1p`` is not vectorised there). ``softplus(z)`` is computed as
    ``max(z, 0) + log(1 + exp(-|z|))``: absolute error below 1e-7 per node, exact
    gradient. ``scale`` is zero on masked nodes, so their gradient is exactly 0.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, goal: Tensor, scale: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            big = torch.finfo(logits.dtype).max
            z = logits.clamp(-big, big)  # a masked -inf (or +inf) logit: no inf * 0 or inf - inf below
            terms = z.abs().neg_().exp_().add_(1.0).log_()
            terms.add_(z.clamp_min(0.0)).sub_(z * goal)
            # a weight that requires grad (learned per-node weights) gets d loss / d scale = the unscaled terms
            raw = terms.clone() if ctx.needs_input_grad[2] else None
            terms.mul_(scale)
            # each sample's sum along its own contiguous row: summed down a node-major column, the order of the
            # additions depended on the batch size (a sample's loss moved by an ulp with the rest of its batch)
            out = terms.t().contiguous().sum(1) if dim == 0 else terms.sum(dim)
        ctx.save_for_backward(logits, goal, scale, raw)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, Tensor | None, None]:  # type: ignore[override]
        _no_second_derivative("node_bce and max_constraint_loss")
        logits, goal, scale, raw = ctx.saved_tensors
        grad = grad.unsqueeze(ctx.dim)
        d_logits = torch.sigmoid(logits).sub_(goal).mul_(scale).mul_(grad) if ctx.needs_input_grad[0] else None
        d_scale = None
        if raw is not None:
            d_scale = raw * grad
            if d_scale.shape != scale.shape:  # scale was broadcast (a per-node row, ...): sum back to its shape
                d_scale = d_scale.sum_to_size(scale.shape)
        return d_logits, None, d_scale, None


def _terms_on_path(terms: Tensor, nodes: Tensor, valid: Tensor, weight: Tensor | None) -> Tensor:
    if weight is not None:
        terms = terms * weight[nodes]
    return torch.where(valid, terms, torch.zeros_like(terms)).sum(1)


class _FiniteStraightThrough(torch.autograd.Function):
    """Clamp ``±inf`` (or, with ``low=False``, ``+inf`` only) to the dtype's finite range; the gradient
    passes unchanged.

    A plain ``clamp`` costs a masked backward pass (about +25% on ``level_cross_entropy`` at 16k nodes);
    the values it changes are masked logits, whose softmax gradient is 0 unless the target itself is masked,
    and ``+inf`` logits (a float16 overflow, with ``validate_args=False``), whose softmax gradient is finite.
    """

    generate_vmap_rule = True  # torch.func.vmap (per-sample gradients) batches it as it is

    @staticmethod
    def forward(logits: Tensor, low: bool = True) -> Tensor:  # type: ignore[override]
        big = torch.finfo(logits.dtype).max
        return logits.clamp(-big, big) if low else logits.clamp(max=big)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:  # nothing to save: the gradient is the identity
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None

    # no jvp (forward mode): torch.compile cannot trace an autograd.Function that defines one


def _finite_straight_through(logits: Tensor, low: bool = True) -> Tensor:
    """:class:`_FiniteStraightThrough` where a gradient is wanted; a plain clamp where none is (no_grad
    evaluation), which torch.compile traces into the graph (its trace of the Function for an input that
    needs no gradient failed and split the loss into 4 graphs)."""
    if logits.requires_grad:
        return _FiniteStraightThrough.apply(logits, low)
    big = torch.finfo(logits.dtype).max
    return logits.clamp(-big, big) if low else logits.clamp(max=big)


def _conditional_nll(
    logits: Tensor, target: Tensor, t: Any, weight: Tensor | None, smoothing: float, path: bool | None = None
) -> Tensor:
    nodes, valid = _paths(target, t)
    nodes, valid = nodes[:, 1:], valid[:, 1:]  # (B, D): the target's path below the root, root-padded
    if t.nll_path if path is None else path:
        # gather only the sibling groups on each path, padded to the widest group: B x D x G logits
        rows = t.node_row[nodes]
        pos = t.node_pos[nodes].unsqueeze(-1)
        members = t.group_members[rows]  # (B, D, G)
        present = t.group_valid[rows]
        batch, depth, width = members.shape
        group = logits.gather(1, members.reshape(batch, depth * width)).reshape(batch, depth, width)
        # +inf (validate_args=False) made finite, as the level loss does (only the gathered groups: no
        # O(B x N) pass): a +inf logit in a group gave inf - inf = NaN. -inf stays a mask (a masked target: +inf)
        group = _finite_straight_through(group, False)
        with torch.no_grad():
            top = group.masked_fill(~present, -math.inf).amax(-1, keepdim=True)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # an all -inf (masked) group
        shifted = group - top  # differences before the log-sum: exact at logits of ±1e4
        summed = shifted.masked_fill(~present, -math.inf).exp().sum(-1)
        log_sum = _log_or_zero(summed)  # a masked group on the path: the node's loss is +inf, gradient 0
        log_cond = shifted.gather(2, pos).squeeze(-1) - log_sum
        if smoothing:
            # divided before the sum: two logits near the dtype's max would overflow the sum to +inf
            share = group / present.sum(-1, keepdim=True)
            mean = torch.where(present, share, torch.zeros_like(share)).sum(-1)
            chosen = group.gather(2, pos).squeeze(-1)
    else:
        # dense: every sibling group's log-softmax (O(B x N), node-major), then pick the path's; +inf made
        # finite as above
        logits = _finite_straight_through(logits, False)
        nm = logits.t().contiguous()
        shifted_nodes = (nodes - 1).clamp_min(0)
        columns = torch.arange(logits.shape[0], device=logits.device)[:, None]
        log_cond = _group_log_softmax_nm(nm, t)[shifted_nodes, columns]
        if smoothing:
            mean = _group_mean_nm(nm, t)[shifted_nodes, columns]
            chosen = logits.gather(1, nodes)
    # -log P(n | parent), and with smoothing + eps * (logit - mean logit of the group)
    terms = -log_cond if not smoothing else smoothing * (chosen - mean) - log_cond
    return _terms_on_path(terms, nodes, valid, weight)


def _level_cross_entropy(logits: Tensor, target: Tensor, t: Any, weight: Tensor | None, smoothing: float) -> Tensor:
    bounds = t.level_bounds
    nodes, valid = _paths(target, t)
    # the target's node at each depth as a position within that level; -100 (ignored) below the target
    local = torch.where(valid, nodes - t.level_start, torch.full_like(nodes, -100))
    # -inf (``logits + log(mask)``) made finite: a level whose logits are all -inf would send NaN
    # gradients back through the log-softmax even where its term is ignored
    levels = torch.split(_finite_straight_through(logits), _level_sizes(bounds), dim=1)  # one gradient
    losses = logits[:, :0].sum(1)  # zeros that stay in the graph (a root-only taxonomy has no level)
    for d in range(1, len(bounds) - 1):  # the fused log-softmax + NLL kernel, one call per level
        term = F.cross_entropy(levels[d], local[:, d], reduction="none", label_smoothing=smoothing)
        losses = losses + (term if weight is None else term * weight[nodes[:, d]])
    return losses


def _smoothed_goal(positive: Tensor, smoothing: float, dtype: torch.dtype) -> Tensor:
    goal = positive.to(dtype)
    return goal if not smoothing else goal.mul_(1.0 - smoothing).add_(0.5 * smoothing)


def _node_bce(
    logits: Tensor, target: Tensor, t: Any, weight: Tensor | None, smoothing: float, negatives: str = "all"
) -> Tensor:
    positive = _positive_mask(target, t)
    known = ~_unknown_mask(target, t)
    if negatives == "siblings":
        # keep the path and the children of the target's strict ancestors
        strict = positive.clone()
        strict[torch.arange(target.shape[0], device=target.device), target] = False
        batch = target.shape[0]
        if t.is_tree:
            near = strict.gather(1, t.parent[None, :].expand(batch, -1))
        else:
            near = (
                torch.zeros(batch, t.num_nodes, dtype=torch.uint8, device=logits.device).scatter_reduce(
                    1,
                    t.edge_child.expand(batch, -1),
                    strict[:, t.edge_parent].to(torch.uint8),
                    "amax",
                    include_self=True,
                )
                > 0
            )
        known = known & near
    scale = known.to(logits.dtype)
    if weight is not None:
        scale = scale * weight
    return _MaskedBCEWithLogits.apply(logits, _smoothed_goal(positive, smoothing, logits.dtype), scale, 1)


def _max_constraint(logits: Tensor, target: Tensor, t: Any, weight: Tensor | None, smoothing: float) -> Tensor:
    # node-major (N, B) throughout: the subtree max runs level by level along dim 0
    batch = logits.shape[0]
    nm = logits.t().contiguous()
    positive = _positive_mask(target, t, node_major=True)
    scale = (~_unknown_mask(target, t, node_major=True)).to(logits.dtype)
    if weight is not None:
        scale = scale * weight[:, None]
    constrained = _subtree_reduce_nm(nm, t, "amax")  # MCM in logit space: max over descendants
    # positive part: max over each positive node's *positive* descendants (y_B h_B in the paper)
    if t.is_tree:  # the positives are the path: a suffix max along it
        nodes, valid = (x[:, 1:] for x in _paths(target, t))
        columns = torch.arange(batch, device=logits.device)[:, None].expand_as(nodes)
        on_path = nm[nodes, columns].masked_fill(~valid, -math.inf)
        suffix = on_path.flip(1).cummax(1).values.flip(1)
        # padding entries point at the root, which is masked: write a harmless 0 there
        suffix = torch.where(valid, suffix, torch.zeros_like(suffix))
        pos_max = constrained.index_put((nodes, columns), suffix)
    else:
        pos_max = _subtree_reduce_nm(nm.masked_fill(~positive, -math.inf), t, "amax")
        pos_max = torch.where(positive, pos_max, constrained)
    # positives are taught through pos_max, negatives through the constrained logit (the MCM)
    return _MaskedBCEWithLogits.apply(pos_max, _smoothed_goal(positive, smoothing, logits.dtype), scale, 0)


def _plus_inf_as_max(logits: Tensor) -> Tensor:
    """``+inf`` (a float16 overflow with ``validate_args=False``) read as the dtype's largest value, as the
    node losses read it; ``-inf`` stays a mask. In the flat losses' forward passes, whose backward is the
    softmax of these values: the gradient passes through, finite."""
    return logits.clamp(max=torch.finfo(logits.dtype).max)


class _FlatNLL(torch.autograd.Function):
    """``-(1 - ε) log P(t) - ε mean_leaves log P(leaf)`` per sample from the leaf softmax, fused.

    ``log P(t)`` is the log-sum-exp of the leaf log-probabilities below ``t``,
    given as CSR pairs ``(owner, cols)``. Backward is
    ``softmax - (1 - ε) q - ε / L`` with ``q`` the softmax restricted to the
    leaves below ``t`` (one leaf for leaf targets): one full-size pass each way,
    like ``F.cross_entropy``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: Tensor, owner: Tensor, cols: Tensor, smoothing: float
    ) -> Tensor:
        batch = logits.shape[0]
        with torch.no_grad():
            log_probs = F.log_softmax(logits, 1)
            picked = log_probs[owner, cols]
            if torch.isnan(picked).any():  # CPU only (free there): a +inf logit made its row NaN
                log_probs = F.log_softmax(_plus_inf_as_max(logits), 1)
                picked = log_probs[owner, cols]
            top = logits.new_full((batch,), -math.inf).scatter_reduce(0, owner, picked, "amax", include_self=False)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            inside = top + torch.log(logits.new_zeros(batch).scatter_add(0, owner, torch.exp(picked - top[owner])))
            # log P(t) <= 0; rounding can leave +1e-8 when t covers (nearly) every leaf, e.g. the root. Clamp the
            # value only: the backward below uses the unclamped log-sum, so gradients are unchanged.
            log_pt = inside.clamp(max=0.0)
            losses = -log_pt if not smoothing else -(1.0 - smoothing) * log_pt - smoothing * log_probs.mean(1)
        # a target whose leaves are all masked (-inf): loss +inf, and a zero (not NaN) gradient where none flows
        shift = torch.where(torch.isfinite(inside), inside, torch.zeros_like(inside))
        ctx.save_for_backward(log_probs, owner, cols, picked - shift[owner])
        ctx.smoothing = smoothing
        return losses

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        _no_second_derivative("flat_cross_entropy")
        log_probs, owner, cols, within = ctx.saved_tensors
        smoothing = ctx.smoothing
        out = log_probs.exp()
        out.index_put_((owner, cols), -(1.0 - smoothing) * torch.exp(within), accumulate=True)
        if smoothing:
            out.sub_(smoothing / log_probs.shape[1])
        return out.mul_(grad[:, None]), None, None, None


class _FlatNLLMasked(torch.autograd.Function):
    """:class:`_FlatNLL` with the leaves below each target given as a dense bool mask ``(B, L)``.

    Trees build the mask from preorder ranks, DAGs from a top-down pass over the edges, both without a
    device sync; it costs a few more full-size passes
    than the CSR pairs, which is why the CPU, where a sync is free, keeps those.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, below: Tensor, smoothing: float) -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            log_probs = F.log_softmax(_plus_inf_as_max(logits), 1)  # no sync to look first: one elementwise pass
            inside = torch.logsumexp(log_probs.masked_fill(~below, -math.inf), 1)
            log_pt = inside.clamp(max=0.0)  # as _FlatNLL: the value only
            losses = -log_pt if not smoothing else -(1.0 - smoothing) * log_pt - smoothing * log_probs.mean(1)
        ctx.save_for_backward(log_probs, below, inside)
        ctx.smoothing = smoothing
        return losses

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        _no_second_derivative("flat_cross_entropy")
        log_probs, below, inside = ctx.saved_tensors
        smoothing = ctx.smoothing
        shift = torch.where(torch.isfinite(inside), inside, torch.zeros_like(inside))  # all leaves masked: no NaN
        within = torch.exp(log_probs - shift[:, None]).masked_fill_(~below, 0.0)
        out = log_probs.exp().sub_(within.mul_(1.0 - smoothing))
        if smoothing:
            out.sub_(smoothing / log_probs.shape[1])
        return out.mul_(grad[:, None]), None, None


def _compiling() -> bool:
    """Whether torch.compile is tracing this call (``torch.compiler.is_compiling``, absent before torch 2.3)."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def _flat_cross_entropy(
    leaf_logits: Tensor, target: Tensor, t: Any, weight: Tensor | None, smoothing: float, dense: bool | None = None
) -> Tensor:
    if dense is None:  # off the CPU (and under torch.compile) a data-dependent size would cost a sync
        dense = leaf_logits.device.type != "cpu" or _compiling()
    if dense:
        if t.is_tree:
            below = _below_mask(target, t.leaf_preorder, t, node_major=False, strict=False)
        else:  # a top-down pass over the edges, O(B x (nodes + edges)): no list of data-dependent size
            below = (_dag_descend_nm(_dag_onehot_nm(target, t), t)[t.leaf_index] > 0).T
        losses = _FlatNLLMasked.apply(leaf_logits, below, smoothing)
    else:
        owner, cols = _csr_pairs(t.leafdesc_ptr, t.leafdesc_pos, target)  # the leaves below each target
        losses = _FlatNLL.apply(leaf_logits, owner, cols, smoothing)
    return losses if weight is None else losses * weight[target]


def _hxe(
    leaf_logits: Tensor, target: Tensor, t: Any, weight: Tensor | None, smoothing: float, alpha: float = 0.1
) -> Tensor:
    leaf_logits = _finite_straight_through(leaf_logits, False)  # +inf - +inf in the shift below was NaN
    if leaf_logits.shape[1]:  # shift-invariant; keeps values near 0 for precision at ±1e4
        leaf_logits = leaf_logits - leaf_logits.detach().amax(1, keepdim=True)
    subtree = _subtree_reduce_nm(_leaf_rows(leaf_logits, t, -math.inf), t, "lse")  # (N, B): log P(node) + lse
    nodes, valid = _paths(target, t)
    valid = valid[:, 1:]
    columns = torch.arange(leaf_logits.shape[0], device=leaf_logits.device)[:, None].expand_as(nodes)
    on_path = subtree[nodes, columns]
    log_cond = on_path[:, 1:] - on_path[:, :-1]  # log P(node | parent)
    # the authors' edge weights: exp(-alpha * depth), the first decision below the root at weight 1
    lam = torch.exp(-alpha * (t.depth - 1).clamp_min(0).to(leaf_logits.dtype))
    if weight is not None:
        lam = lam * weight
    losses = -_terms_on_path(log_cond, nodes[:, 1:], valid, lam)
    if smoothing:
        losses = (1.0 - smoothing) * losses + smoothing * (subtree[0] - leaf_logits.mean(1))
    return losses


def _soft_label(
    leaf_logits: Tensor, target: Tensor, t: Any, weight: Tensor | None, smoothing: float, beta: float = 10.0
) -> Tensor:
    # Leaves whose LCA with the target is the path node p_k form the "ring" below p_k minus below p_{k+1};
    # they share the weight exp(-beta * height(p_k) / tree height). Sums over rings come from subtree sums.
    leaf_logits = _finite_straight_through(leaf_logits, False)  # +inf - +inf in the shift below was NaN
    if leaf_logits.dtype in (torch.float16, torch.bfloat16):
        # the ring sums add many logits: in float16 a few hundred leaves at -100 overflow to -inf
        leaf_logits = leaf_logits.float()
    if leaf_logits.shape[1]:  # shift-invariant; keeps values near 0 for precision at ±1e4
        leaf_logits = leaf_logits - leaf_logits.detach().amax(1, keepdim=True)
    # every leaf has a positive target mass: a masked (-inf) leaf makes the loss +inf. Sum the finite
    # logits only (a -inf in two nested subtree sums would give -inf - -inf = NaN) and say so at the end
    masked = leaf_logits == -math.inf
    finite = leaf_logits.masked_fill(masked, 0.0)
    # the subtree sums add up to L logits: each held above -max / (L + 1) so no sum overflows (a logit
    # 1e38 below the top one, as a clamped +inf leaves them, made -inf - -inf = NaN), gradient passed through
    bound = torch.finfo(finite.dtype).max / (finite.shape[1] + 1)
    finite = finite + (finite.detach().clamp_min(-bound) - finite.detach())
    sums = _subtree_reduce_nm(_leaf_rows(finite, t, 0.0), t, "sum")  # (N, B)
    nodes, valid = _paths(target, t)
    columns = torch.arange(leaf_logits.shape[0], device=leaf_logits.device)[:, None].expand_as(nodes)
    zero = torch.zeros_like(leaf_logits[:, :1])
    inside = torch.where(valid, sums[nodes, columns], torch.zeros_like(nodes, dtype=leaf_logits.dtype))
    ring_sum = inside - torch.cat([inside[:, 1:], zero], 1)
    count = torch.where(valid, t.leaves_below[nodes].to(leaf_logits.dtype), torch.zeros_like(inside))
    ring_count = count - torch.cat([count[:, 1:], zero], 1)
    # exp(-beta (h(p_k) - h(target)) / H): the target's own ring at weight 1, so a large beta underflows
    # the far rings to 0 instead of every ring (0 / 0) when the target is an inner node
    above = (t.height[nodes] - t.height[target][:, None]).clamp_min(0)
    scale = torch.exp(-beta * above.to(leaf_logits.dtype) / max(t.tree_height, 1))
    expected = (scale * ring_sum).sum(1) / (scale * ring_count).sum(1)  # sum_A y_A logits_A
    if smoothing:
        expected = (1.0 - smoothing) * expected + smoothing * finite.mean(1)
    losses = leaf_logits.logsumexp(1) - expected
    if weight is not None:
        losses = losses * weight[target]
    # +inf where a masked leaf carries target mass; a sample of weight 0 stays 0 (not inf * 0 = NaN)
    infinite = masked.any(1) if weight is None else masked.any(1) & (weight[target] > 0)
    return torch.where(infinite, torch.full_like(losses, math.inf), losses)


# ---------------------------------------------------------------------------------------------
# Loss specs: one row per kind (what it needs, which logits, which maths)
# ---------------------------------------------------------------------------------------------

_DAG_TABLES = ("edge_parent_sorted", "edge_child_sorted", "edge_parent", "edge_child")


@dataclass(frozen=True)
class _Spec:
    """One loss kind: its public name, its maths, its logit width, and the index tables it needs."""

    name: str
    fn: Callable[..., Tensor]
    width: Literal["num_nodes", "num_leaves"]
    tree_only: bool
    tables: Callable[[Taxonomy, dict[str, Any]], tuple[str, ...]]
    dag_hint: str = ""

    def check(self, taxonomy: Any) -> Taxonomy:
        if self.tree_only:
            _require_tree(taxonomy, self.name, self.dag_hint)
        return _check_taxonomy(taxonomy)

    def table_names(self, taxonomy: Taxonomy, options: dict[str, Any]) -> tuple[str, ...]:
        return tuple(self.tables(taxonomy, options))


def _cond_tables(tax: Taxonomy, options: dict[str, Any]) -> tuple[str, ...]:
    if _TaxonomyTables(tax).nll_path:
        return _path_tables(tax) + ("node_row", "node_pos", "group_members", "group_valid")
    return _path_tables(tax) + ("parent", "parent_group", "num_children")


def _sigmoid_tables(tax: Taxonomy, options: dict[str, Any]) -> tuple[str, ...]:
    # trees: the masks are preorder range tests and path tables; DAGs: passes over the edges, both ways
    if tax.is_tree:
        names: tuple[str, ...] = ("preorder", "subtree_size") + _path_tables(tax) + ("parent_local",)
        return names + (("parent",) if options.get("negatives") == "siblings" else ())
    return _DAG_TABLES


_DAG_HINT = "For a DAG use a SigmoidHead with node_bce or max_constraint_loss, or a FlatHead with flat_cross_entropy."
_SPECS: dict[str, _Spec] = {
    "conditional": _Spec("conditional_softmax_nll", _conditional_nll, "num_nodes", True, _cond_tables, _DAG_HINT),
    "level": _Spec(
        "level_cross_entropy",
        _level_cross_entropy,
        "num_nodes",
        True,
        lambda tax, o: _path_tables(tax) + ("level_start",),
        _DAG_HINT,
    ),
    "bce": _Spec("node_bce", _node_bce, "num_nodes", False, _sigmoid_tables),
    "max_constraint": _Spec("max_constraint_loss", _max_constraint, "num_nodes", False, _sigmoid_tables),
    "flat": _Spec(
        "flat_cross_entropy",
        _flat_cross_entropy,
        "num_leaves",
        False,
        lambda tax, o: (
            ("leafdesc_ptr", "leafdesc_pos")
            + (("preorder", "subtree_size", "leaf_preorder") if tax.is_tree else _DAG_TABLES + ("leaf_index",))
        ),
    ),
    "hxe": _Spec(
        "hxe_loss",
        _hxe,
        "num_leaves",
        True,
        lambda tax, o: _path_tables(tax) + ("parent_local", "leaf_index", "is_leaf"),
        _DAG_HINT,
    ),
    "soft_label": _Spec(
        "soft_label_loss",
        _soft_label,
        "num_leaves",
        True,
        lambda tax, o: _path_tables(tax) + ("parent_local", "leaf_index", "height", "leaves_below"),
        _DAG_HINT,
    ),
}


def _check_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    if "negatives" in options and options["negatives"] not in ("all", "siblings"):
        raise ValueError(f"negatives: expected 'all' or 'siblings', got {options['negatives']!r}.")
    for key in ("alpha", "beta"):
        if key in options:
            if isinstance(options[key], (bool, np.bool_)):  # True would be read as 1.0, False as 0
                raise ValueError(f"{key}: expected a finite float >= 0, got {options[key]!r}.")
            try:
                value = float(options[key])
            except (TypeError, ValueError):
                value = math.nan
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key}: expected a finite float >= 0, got {options[key]!r}.")
            options[key] = value
    return options


def _prepare(
    spec: _Spec,
    logits: Any,
    target: Any,
    taxonomy: Taxonomy,
    validate_args: bool,
    weight: Tensor | None = None,
    given_weight: Any = None,
) -> tuple[Tensor, Tensor]:
    """Shapes and dtypes checked; with ``validate_args`` the values too (logits finite but for ``-inf``
    masks, targets in range, a per-call ``weight`` finite and non-negative), read back in **one** device
    synchronisation: the messages are built on the error path only."""
    width = taxonomy.num_nodes if spec.width == "num_nodes" else taxonomy.num_leaves
    _check_logits(logits, width, spec.width, spec.name)
    target = _check_target(target, logits, taxonomy.num_nodes)
    if validate_args:
        one = torch.ones((), dtype=torch.long, device=logits.device)
        flags = [
            torch.isfinite(logits.detach().sum()).long() if logits.numel() else one,  # exact recheck if not
            target.min() if target.numel() else one - 1,
            target.max() if target.numel() else one - 1,
        ]
        if weight is not None:
            w = weight.detach().to(logits.device)
            flags.append((torch.isfinite(w) & (w >= 0)).all().long())
        marginals_like = spec.width == "num_nodes" and logits.numel() > 0
        if marginals_like:  # the root column exactly 1 and every value in [0, 1]: head.marginals(), not logits
            x = logits.detach()
            flags.append(((x[:, 0] == 1).all() & (x.amin() >= 0) & (x.amax() <= 1)).long())
        read = torch.stack(flags).tolist()
        if marginals_like and read[-1]:
            warnings.warn(
                f"logits: {spec.name} got values that look like node marginals (the root column exactly 1, every "
                "value in [0, 1]): a loss takes the head's raw output (head(features)), not head.marginals(...).",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )
        if not read[0]:  # a huge sum, a -inf mask, or a NaN / +inf: _check_finite decides
            _check_finite(logits)
        if read[1] < 0 or read[2] >= taxonomy.num_nodes:
            _check_target_values(target, taxonomy.num_nodes)
        if weight is not None and not read[3]:
            _node_weight(given_weight, taxonomy, torch.device("cpu"), True)  # raises, naming the user's values
    return _upcast(logits), target


def _functional(
    kind: str,
    logits: Any,
    target: Any,
    taxonomy: Taxonomy,
    weight: Any,
    label_smoothing: float,
    reduction: str,
    validate_args: bool,
    **options: Any,
) -> Tensor:
    spec = _SPECS[kind]
    spec.check(taxonomy)
    reduction = _check_reduction(reduction)
    smoothing = _check_smoothing(label_smoothing)
    options = _check_options(kind, options)
    _check_logits(
        logits, taxonomy.num_nodes if spec.width == "num_nodes" else taxonomy.num_leaves, spec.width, spec.name
    )
    node_weight = _node_weight(  # shape checked here, values with the logits' and targets' (one sync)
        weight,
        taxonomy,
        logits.device,
        False,
        torch.float64 if logits.dtype == torch.float64 else torch.float32,
        spec.width == "num_leaves",
    )
    logits, target = _prepare(spec, logits, target, taxonomy, validate_args, node_weight, weight)
    tables = _tables_for(taxonomy, logits.device)
    warmed = tables.__dict__.setdefault("_warmed", set())
    key = (kind, tuple(sorted(options.items())))
    if key not in warmed and not _compiling():  # once per loss and device: a traced call finds every table built
        for name in spec.table_names(taxonomy, options):  # (table_names itself may cost numpy work)
            getattr(tables, name)
        warmed.add(key)
    node_weight = None if node_weight is None else node_weight.to(logits.dtype)
    return _reduce(spec.fn(logits, target, tables, node_weight, smoothing, **options), reduction)


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def conditional_softmax_nll(
    logits: Tensor,
    target: Tensor,
    taxonomy: Taxonomy,
    *,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Masked conditional-softmax NLL: each decision is taught only by the samples it concerns.

    For a sample with target node ``t`` and root-to-``t`` path
    ``root = n_0, n_1, ..., n_k = t``::

        loss = sum_{j=1..k} w(n_j) * -log P(n_j | n_{j-1}),
        P(n | parent) = softmax over the sibling group of n (the parent's children) of the logits

    Only the sibling groups on the target's path count; every other logit (the
    root's, other subtrees', and everything below a partial label ``t``) gets
    exactly zero gradient. This is the "loss control strategy" of Hamdi et al.
    (2023): a Normal image teaches the first level and nothing below.

    Cost: the ``B x depth`` sibling groups on the targets' paths are gathered
    (padded to the widest group), so it does not grow with the number of
    nodes; taxonomies whose padded group table would be large (a few very wide
    groups among many narrow ones) switch to a dense per-group log-sum-exp,
    O(B x num_nodes).

    Args:
        logits: ``(B, num_nodes)`` floating tensor, one logit per node (the root's is ignored).
        target: ``(B,)`` integer tensor of node indices; inner nodes are partial labels.
        taxonomy: a tree.
        weight: per-node ``(num_nodes,)`` or per-level ``(max_depth + 1,)`` weight ``w`` of the
            term of node ``n_j`` (the child in the decision).
        label_smoothing: ``ε``: each decision's target becomes ``1 - ε`` on ``n_j`` plus ``ε``
            spread uniformly over its sibling group.
        reduction: ``"mean"`` (over samples), ``"sum"`` or ``"none"``.
        validate_args: check for NaN/inf logits and out-of-range targets (one device sync). With it
            off, a ``+inf`` logit is read as the dtype's largest finite value, gradient passed through
            (as in :func:`level_cross_entropy`): no NaN, and the gradient stays finite (a sample's loss
            can still be near the dtype's max, and a mean of several such overflows to ``+inf``).

    Returns:
        float32 scalar (float64 for float64 logits), or ``(B,)`` with ``reduction="none"``. An empty
        batch gives 0.0.

    Raises:
        ValueError: ``logits`` is not ``(B, num_nodes)``, ``target`` is not ``(B,)`` integers,
            bad ``reduction``/``label_smoothing``/``weight``, or NaN/inf logits.
        UnknownNodeError: a target index is outside ``[0, num_nodes)``.
        TaxonomyError: the taxonomy is a DAG.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/Normal", "r/Leukemia/ALL", "r/Leukemia/AML"])
        >>> tax.nodes
        ('r', 'Normal', 'Leukemia', 'ALL', 'AML')
        >>> logits = torch.zeros(2, tax.num_nodes, requires_grad=True)
        >>> target = torch.tensor([tax.index("ALL"), tax.index("Normal")])
        >>> loss = conditional_softmax_nll(logits, target, tax, reduction="none")
        >>> loss  # 2 log 2 for ALL (two binary decisions), log 2 for Normal (one)
        tensor([1.3863, 0.6931], grad_fn=<SumBackward1>)
        >>> loss.sum().backward()
        >>> logits.grad[1]  # a Normal image teaches nothing below the first level
        tensor([ 0.0000, -0.5000,  0.5000,  0.0000,  0.0000])
    """
    return _functional("conditional", logits, target, taxonomy, weight, label_smoothing, reduction, validate_args)


def level_cross_entropy(
    logits: Tensor,
    target: Tensor,
    taxonomy: Taxonomy,
    *,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Per-level cross-entropy: one softmax over all nodes of each depth, levels below the label ignored.

    For target ``t`` at depth ``k`` with path ``n_0, ..., n_k``::

        loss = sum_{d=1..k} w(n_d) * -log softmax(logits[level d])[n_d]

    Levels deeper than the target (a partial label, or a leaf shallower than
    the deepest level in a ragged tree) contribute nothing and their logits get
    zero gradient. This is the paper's shared model with per-level losses.

    Args:
        logits: ``(B, num_nodes)`` floating tensor (the level head's output).
        target: ``(B,)`` integer node indices.
        taxonomy: a tree.
        weight: per-node or per-level weight of each level's term (per-level is the natural choice).
        label_smoothing: ``ε`` spread uniformly over the nodes of each level (as in ``F.cross_entropy``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check for NaN/inf logits and out-of-range targets.

    Returns:
        float32 scalar (float64 for float64 logits), or ``(B,)`` with ``reduction="none"``. An empty
        batch gives 0.0.

    Raises:
        ValueError: wrong shapes, dtypes or options, or NaN/inf logits.
        UnknownNodeError: a target index is outside the taxonomy.
        TaxonomyError: the taxonomy is a DAG.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1"])
        >>> logits = torch.zeros(1, tax.num_nodes)
        >>> level_cross_entropy(logits, torch.tensor([tax.index("a1")]), tax)  # log 2 + log 3
        tensor(1.7918)
        >>> level_cross_entropy(logits, torch.tensor([tax.index("a")]), tax)  # partial label: level 1 only
        tensor(0.6931)
    """
    return _functional("level", logits, target, taxonomy, weight, label_smoothing, reduction, validate_args)


def node_bce(
    logits: Tensor,
    target: Tensor,
    taxonomy: Taxonomy,
    *,
    negatives: Literal["all", "siblings"] = "all",
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Masked per-node binary cross-entropy for the sigmoid head (trees and DAGs).

    The target's node and all its ancestors are positives (``y = 1``), the
    other nodes negatives (``y = 0``)::

        loss = sum_{n in M} w(n) * -[y_n log sigmoid(logits_n) + (1 - y_n) log(1 - sigmoid(logits_n))]

    The mask ``M`` leaves out the root (always true) and the nodes strictly
    below the target, about which a partial label says nothing. With
    ``negatives="siblings"``, ``M`` keeps only the positives and the children
    of the target's strict ancestors (the alternatives at each decision on the
    path), as the conditional loss does; each sigmoid then learns
    ``P(node | parent)`` rather than ``P(node)``, so decode with products down
    the path (or top-down), not with the raw sigmoids.

    Args:
        logits: ``(B, num_nodes)`` floating tensor.
        target: ``(B,)`` integer node indices.
        taxonomy: a tree or a DAG.
        negatives: ``"all"`` or ``"siblings"``.
        weight: per-node or per-level weight of each node's term.
        label_smoothing: ``ε``: targets become ``y (1 - ε) + ε / 2``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check for NaN/inf logits and out-of-range targets.

    Returns:
        float32 scalar (float64 for float64 logits), or ``(B,)`` with ``reduction="none"``. An empty
        batch gives 0.0.

    Raises:
        ValueError: wrong shapes, dtypes or options (``negatives``), or NaN/inf logits.
        UnknownNodeError: a target index is outside the taxonomy.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1"])
        >>> logits = torch.zeros(1, tax.num_nodes)
        >>> node_bce(logits, torch.tensor([tax.index("a1")]), tax)  # 5 non-root nodes, log 2 each
        tensor(3.4657)
        >>> node_bce(logits, torch.tensor([tax.index("a")]), tax)  # a1, a2 masked
        tensor(2.0794)
        >>> node_bce(logits, torch.tensor([tax.index("a1")]), tax, negatives="siblings")  # a, b, a1, a2
        tensor(2.7726)
    """
    return _functional(
        "bce", logits, target, taxonomy, weight, label_smoothing, reduction, validate_args, negatives=negatives
    )


def max_constraint_loss(
    logits: Tensor,
    target: Tensor,
    taxonomy: Taxonomy,
    *,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """MCLoss of the coherent sigmoid head (C-HMCNN, Giunchiglia & Lukasiewicz, NeurIPS 2020).

    With ``h = sigmoid(logits)``, ``D(A)`` the descendants of ``A`` and ``A``
    itself, and ``y`` the multi-hot target (the target and its ancestors), the
    max-constraint module gives ``MCM_A = max_{B in D(A)} h_B`` and::

        MCLoss_A = -y_A log(max_{B in D(A)} y_B h_B) - (1 - y_A) log(1 - MCM_A)
        loss = sum_{A in M} w(A) * MCLoss_A

    A positive node is pushed up through its best *positive* descendant; a
    negative node is pushed down through its best descendant overall. Computed
    in logit space (``max`` commutes with the sigmoid), so it is exact at
    logits of ±1e4. ``M`` leaves out the root and the nodes strictly below a
    partial label. With label smoothing ``ε`` each term becomes a binary
    cross-entropy with target ``y (1 - ε) + ε / 2`` on the node's effective
    probability (``max_{B in D(A)} y_B h_B`` for positives, ``MCM_A`` for
    negatives), so nodes below a partial label stay masked. In a DAG too: a node
    with one of them below it (another parent of the label's child) could be
    positive, so it is unknown and left out as well, and no kept negative's
    ``MCM_A`` reaches them (their gradient is 0).

    Args:
        logits: ``(B, num_nodes)`` floating tensor (the sigmoid head's raw logits).
        target: ``(B,)`` integer node indices.
        taxonomy: a tree or a DAG.
        weight: per-node or per-level weight of each node's term.
        label_smoothing: ``ε`` in ``[0, 1]``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check for NaN/inf logits and out-of-range targets.

    Returns:
        float32 scalar (float64 for float64 logits), or ``(B,)`` with ``reduction="none"``. An empty
        batch gives 0.0.

    Raises:
        ValueError: wrong shapes, dtypes or options, or NaN/inf logits.
        UnknownNodeError: a target index is outside the taxonomy.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
        >>> tax.nodes
        ('r', 'a', 'b', 'a1')
        >>> logits = torch.tensor([[0.0, -3.0, -3.0, 3.0]])  # a low, its child a1 high
        >>> max_constraint_loss(logits, torch.tensor([tax.index("a1")]), tax)  # a is lifted by a1
        tensor(0.1458)
    """
    return _functional("max_constraint", logits, target, taxonomy, weight, label_smoothing, reduction, validate_args)


def flat_cross_entropy(
    logits: Tensor,
    target: Tensor,
    taxonomy: Taxonomy,
    *,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Flat leaf cross-entropy that accepts partial labels: ``-log P(labelled node)``.

    ``P(leaf) = softmax(logits)`` over the leaves and
    ``P(node) = sum of P(leaf)`` over the leaves below it, so::

        loss = w(t) * -log sum_{leaf below t} softmax(logits)[leaf]

    For a leaf target and no weight this is ``F.cross_entropy``. With a weight,
    ``reduction="mean"`` divides by ``B`` like every loss here, where
    ``F.cross_entropy(weight=...)`` divides by the sum of the targets' weights.
    In a DAG a leaf reachable along several paths is counted once.

    Args:
        logits: ``(B, num_leaves)`` floating tensor, leaves in ``taxonomy.leaf_index`` order.
        target: ``(B,)`` integer **node** indices (not leaf positions); inner nodes are partial labels.
        taxonomy: a tree or a DAG.
        weight: per-node or per-level weight ``w(t)`` of the target.
        label_smoothing: ``ε``: ``(1 - ε) * loss + ε * mean over leaves of -log P(leaf)``.
        reduction: ``"mean"`` (divides by ``B``, not by the weights' sum), ``"sum"`` or ``"none"``.
        validate_args: check for NaN/inf logits and out-of-range targets.

    Returns:
        float32 scalar (float64 for float64 logits), or ``(B,)`` with ``reduction="none"``. An empty
        batch gives 0.0.

    Raises:
        ValueError: ``logits`` is not ``(B, num_leaves)``, or other bad arguments, or NaN/inf logits.
        UnknownNodeError: a target index is outside the taxonomy.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> tax.leaves  # the columns of the logits
        ('b', 'a1', 'a2')
        >>> logits = torch.zeros(2, 3)
        >>> flat_cross_entropy(logits, torch.tensor([tax.index("a1"), tax.index("a")]), tax, reduction="none")
        tensor([1.0986, 0.4055])
    """
    return _functional("flat", logits, target, taxonomy, weight, label_smoothing, reduction, validate_args)


def hxe_loss(
    logits: Tensor,
    target: Tensor,
    taxonomy: Taxonomy,
    *,
    alpha: float = 0.1,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Hierarchical cross-entropy HXE (Bertinetto et al., "Making Better Mistakes", CVPR 2020).

    From the flat head's leaf softmax, ``P(node)`` is the sum over the leaves
    below it and ``P(node | parent) = P(node) / P(parent)``. For target ``t``
    with path ``root = n_0, ..., n_k = t``::

        loss = -sum_{j=1..k} w(n_j) * exp(-alpha * (j - 1)) * log P(n_j | n_{j-1})

    so the decision at depth ``j`` is discounted by ``exp(-alpha)`` per level
    below the first: the coarse decisions weigh most. This is the weighting of
    the authors' code, ``exp(-alpha * depth)`` per edge, up to a constant
    factor (their code also divides by the sum of the weights over the tree);
    the paper writes the weight as ``exp(-alpha h(C))`` and reports that a
    larger ``alpha`` gives less severe mistakes at some cost in top-1
    accuracy, which is what this weighting does. With ``alpha = 0`` the sum
    telescopes to the flat cross-entropy ``-log P(t)``. A partial label ``t``
    stops the path at ``t`` (only the decisions down to ``t`` are taught).
    Computed in log space from per-subtree log-sum-exps, O(B x num_nodes).

    Args:
        logits: ``(B, num_leaves)`` floating tensor, leaves in ``taxonomy.leaf_index`` order.
        target: ``(B,)`` integer node indices.
        taxonomy: a tree.
        alpha: ``α >= 0``; the paper uses 0.1 to 0.6.
        weight: per-node or per-level extra weight ``w`` of each path term.
        label_smoothing: ``ε``: ``(1 - ε) * HXE + ε * mean over leaves of -log P(leaf)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check for NaN/inf logits and out-of-range targets.

    Returns:
        float32 scalar (float64 for float64 logits), or ``(B,)`` with ``reduction="none"``. An empty
        batch gives 0.0.

    Raises:
        ValueError: wrong shapes, dtypes or options (``alpha < 0``), or NaN/inf logits.
        UnknownNodeError: a target index is outside the taxonomy.
        TaxonomyError: the taxonomy is a DAG.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> logits, target = torch.zeros(1, 3), torch.tensor([tax.index("a1")])
        >>> hxe_loss(logits, target, tax, alpha=0.0)  # = -log(1/3)
        tensor(1.0986)
        >>> hxe_loss(logits, target, tax, alpha=1.0)  # -e^0 log(2/3) - e^-1 log(1/2)
        tensor(0.6605)
    """
    return _functional("hxe", logits, target, taxonomy, weight, label_smoothing, reduction, validate_args, alpha=alpha)


def soft_label_loss(
    logits: Tensor,
    target: Tensor,
    taxonomy: Taxonomy,
    *,
    beta: float = 10.0,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    """Cross-entropy with hierarchy-aware soft labels (Bertinetto et al., CVPR 2020).

    The target distribution over leaves puts mass on each leaf ``A`` that
    decays with its distance to the target ``t``::

        y_A = exp(-beta * d(A, t)) / sum_B exp(-beta * d(B, t)),   d(A, t) = h(LCA(A, t)) / h(root)
        loss = w(t) * -sum_A y_A log softmax(logits)_A

    ``h`` is the node height (leaves 0), so ``d`` lies in ``[0, 1]``. For a
    partial label ``t`` every leaf below ``t`` has ``d = h(t) / h(root)``: the
    mass is shared evenly below the label and decays outside it. Computed from
    per-subtree sums of the logits along the target's path (O(B x num_nodes);
    the ``B x num_leaves`` target is never built).

    Args:
        logits: ``(B, num_leaves)`` floating tensor, leaves in ``taxonomy.leaf_index`` order.
        target: ``(B,)`` integer node indices.
        taxonomy: a tree.
        beta: ``β >= 0``; larger is closer to one-hot (the paper uses 4 to 30).
        weight: per-node or per-level weight ``w(t)`` of the target.
        label_smoothing: ``ε``: the soft target is mixed with the uniform one, ``(1 - ε) y + ε / num_leaves``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check for NaN/inf logits and out-of-range targets.

    Returns:
        float32 scalar (float64 for float64 logits), or ``(B,)`` with ``reduction="none"``. An empty
        batch gives 0.0.

    Raises:
        ValueError: wrong shapes, dtypes or options (``beta < 0``), or NaN/inf logits.
        UnknownNodeError: a target index is outside the taxonomy.
        TaxonomyError: the taxonomy is a DAG.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> logits = torch.tensor([[0.0, 2.0, 1.0]])  # leaves b, a1, a2
        >>> soft_label_loss(logits, torch.tensor([tax.index("a1")]), tax, beta=1e4)  # one-hot: plain CE
        tensor(0.4076)
        >>> soft_label_loss(logits, torch.tensor([tax.index("a1")]), tax, beta=0.0)  # uniform target
        tensor(1.4076)
    """
    return _functional(
        "soft_label", logits, target, taxonomy, weight, label_smoothing, reduction, validate_args, beta=beta
    )


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class _HierarchicalLoss(nn.Module):
    """Thin shell: holds the taxonomy's index tables and the weight as buffers, calls the pure function."""

    _kind: ClassVar[str]

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
        **options: Any,
    ) -> None:
        super().__init__()
        spec = _SPECS[self._kind]
        self.taxonomy = spec.check(taxonomy)
        self.fingerprint = taxonomy.fingerprint
        self.reduction = _check_reduction(reduction)
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.validate_args = bool(validate_args)
        self.options = _check_options(self._kind, dict(options))
        self.tables = _TaxonomyBuffers(taxonomy, spec.table_names(taxonomy, self.options))
        # float64 weights stay float64 (for float64 logits); anything else is stored as float32 (MPS has no float64)
        wide = getattr(weight, "dtype", None) in (torch.float64, np.float64)
        dtype = torch.float64 if wide else torch.float32
        self._weight_host = _node_weight(weight, taxonomy, torch.device("cpu"), True, dtype, spec.width == "num_leaves")
        host = self._weight_host
        self.register_buffer("weight", None if host is None else host.to(_default_device()), persistent=False)

    def _apply(self, fn: Any, recurse: bool = True) -> _HierarchicalLoss:
        # the weight is never in a state_dict: to_empty() (built on the meta device) must not leave it
        # garbage. Its values are taken just before each move, so a weight set or changed since is kept.
        before = dict(self._buffers)
        weight = before.get("weight")
        if weight is not None and weight.device.type != "meta":
            self._weight_host = weight.detach().to("cpu", copy=True)
        super()._apply(fn, recurse)
        host = getattr(self, "_weight_host", None)
        _refill_buffers(self, {"weight": host}, before)
        moved = self._buffers.get("weight")
        if moved is not None and host is not None and moved.device.type != "meta" and moved.dtype != host.dtype:
            # a dtype cast (.half(), Lightning's "16-true") follows the device only: the loss runs in float32,
            # and a float16 weight above 65504 (a balanced weight of a rare node) was inf, the loss inf or NaN
            self._buffers["weight"] = host.to(moved.device)
        return self

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits`` against ``target`` node indices; see the function of the same name."""
        spec = _SPECS[self._kind]
        table = next(iter(self.tables.buffers()), None)
        if isinstance(logits, Tensor) and table is not None and table.device != logits.device:
            raise ValueError(
                f"logits are on {logits.device}, but this {type(self).__name__}'s index tables are on {table.device}. "
                f"Move the loss with the model: loss.to({str(logits.device)!r}) (a loss is a module of its own)."
            )
        logits, target = _prepare(spec, logits, target, self.taxonomy, self.validate_args)
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        losses = spec.fn(logits, target, self.tables, weight, self.label_smoothing, **self.options)
        return _reduce(losses, self.reduction)

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return (
            f"num_nodes={self.taxonomy.num_nodes}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}{options}"
        )


class ConditionalSoftmaxLoss(_HierarchicalLoss):
    """Module form of :func:`conditional_softmax_nll` (the conditional head's loss).

    Args:
        taxonomy: a tree.
        weight: per-node ``(num_nodes,)`` or per-level ``(max_depth + 1,)`` weight.
        label_smoothing: ``ε`` spread over each sibling group.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check values on every call (one device sync).

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        ValueError: a bad option or weight.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/Normal", "r/Leukemia/ALL", "r/Leukemia/AML"])
        >>> loss_fn = ConditionalSoftmaxLoss(tax)
        >>> loss_fn(torch.zeros(2, tax.num_nodes), torch.tensor([3, 1]))
        tensor(1.0397)
    """

    _kind = "conditional"

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__(
            taxonomy, weight=weight, label_smoothing=label_smoothing, reduction=reduction, validate_args=validate_args
        )


class LevelCrossEntropyLoss(_HierarchicalLoss):
    """Module form of :func:`level_cross_entropy` (the level head's loss).

    Args:
        taxonomy: a tree.
        weight: per-node or per-level weight.
        label_smoothing: ``ε`` spread over each level.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check values on every call.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        ValueError: a bad option or weight.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1"])
        >>> LevelCrossEntropyLoss(tax, weight=torch.tensor([0.0, 1.0, 0.0]))(torch.zeros(1, 6), torch.tensor([3]))
        tensor(0.6931)
    """

    _kind = "level"

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__(
            taxonomy, weight=weight, label_smoothing=label_smoothing, reduction=reduction, validate_args=validate_args
        )


class NodeBCELoss(_HierarchicalLoss):
    """Module form of :func:`node_bce` (the sigmoid head's loss; trees and DAGs).

    Args:
        taxonomy: a tree or a DAG.
        negatives: ``"all"`` or ``"siblings"``.
        weight: per-node or per-level weight.
        label_smoothing: ``ε``: targets ``y (1 - ε) + ε / 2``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check values on every call.

    Raises:
        ValueError: a bad option or weight.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1"])
        >>> NodeBCELoss(tax, negatives="siblings")(torch.zeros(1, 6), torch.tensor([3]))
        tensor(2.7726)
    """

    _kind = "bce"

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        negatives: Literal["all", "siblings"] = "all",
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__(
            taxonomy,
            weight=weight,
            label_smoothing=label_smoothing,
            reduction=reduction,
            validate_args=validate_args,
            negatives=negatives,
        )


class MaxConstraintLoss(_HierarchicalLoss):
    """Module form of :func:`max_constraint_loss` (C-HMCNN's MCLoss for ``SigmoidHead(coherent=True)``).

    Args:
        taxonomy: a tree or a DAG.
        weight: per-node or per-level weight.
        label_smoothing: ``ε``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check values on every call.

    Raises:
        ValueError: a bad option or weight.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
        >>> MaxConstraintLoss(tax)(torch.tensor([[0.0, -3.0, -3.0, 3.0]]), torch.tensor([3]))
        tensor(0.1458)
    """

    _kind = "max_constraint"

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__(
            taxonomy, weight=weight, label_smoothing=label_smoothing, reduction=reduction, validate_args=validate_args
        )


class FlatCrossEntropyLoss(_HierarchicalLoss):
    """Module form of :func:`flat_cross_entropy` (the flat head's loss, partial labels allowed).

    Args:
        taxonomy: a tree or a DAG.
        weight: per-node or per-level weight of the target.
        label_smoothing: ``ε``.
        reduction: ``"mean"`` (divides by ``B``, not by the weights' sum), ``"sum"`` or ``"none"``.
        validate_args: check values on every call.

    Raises:
        ValueError: a bad option or weight.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> FlatCrossEntropyLoss(tax)(torch.zeros(1, 3), torch.tensor([tax.index("a")]))
        tensor(0.4055)
    """

    _kind = "flat"

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__(
            taxonomy, weight=weight, label_smoothing=label_smoothing, reduction=reduction, validate_args=validate_args
        )


class HXELoss(_HierarchicalLoss):
    """Module form of :func:`hxe_loss` (hierarchical cross-entropy on the flat head).

    Args:
        taxonomy: a tree.
        alpha: ``α >= 0``.
        weight: per-node or per-level weight.
        label_smoothing: ``ε``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check values on every call.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        ValueError: a bad option or weight.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> HXELoss(tax, alpha=1.0)(torch.zeros(1, 3), torch.tensor([tax.index("a1")]))
        tensor(0.6605)
    """

    _kind = "hxe"

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        alpha: float = 0.1,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__(
            taxonomy,
            weight=weight,
            label_smoothing=label_smoothing,
            reduction=reduction,
            validate_args=validate_args,
            alpha=alpha,
        )


class SoftLabelLoss(_HierarchicalLoss):
    """Module form of :func:`soft_label_loss` (hierarchy-aware soft labels on the flat head).

    Args:
        taxonomy: a tree.
        beta: ``β >= 0``.
        weight: per-node or per-level weight of the target.
        label_smoothing: ``ε``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check values on every call.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        ValueError: a bad option or weight.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> SoftLabelLoss(tax, beta=0.0)(torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([tax.index("a1")]))
        tensor(1.4076)
    """

    _kind = "soft_label"

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        beta: float = 10.0,
        weight: Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
        validate_args: bool = True,
    ) -> None:
        super().__init__(
            taxonomy,
            weight=weight,
            label_smoothing=label_smoothing,
            reduction=reduction,
            validate_args=validate_args,
            beta=beta,
        )


_LOSSES: dict[str, type[_HierarchicalLoss]] = {
    "conditional": ConditionalSoftmaxLoss,
    "level": LevelCrossEntropyLoss,
    "bce": NodeBCELoss,
    "flat": FlatCrossEntropyLoss,
    "hxe": HXELoss,
    "soft_label": SoftLabelLoss,
    "max_constraint": MaxConstraintLoss,
}
# head kind -> the loss kinds that train the probability model its marginals read (first: the default).
# conditional and level heads share one model (sibling-group softmaxes multiplied down the path; a level
# softmax renormalised within sibling groups is the same thing), so either per-node softmax loss fits;
# sigmoid heads read independent sigmoids; flat heads emit leaf logits, the shape only leaf losses take.
_HEAD_LOSSES: dict[str, tuple[str, ...]] = {
    "conditional": ("conditional", "level"),
    "level": ("level", "conditional"),
    "sigmoid": ("bce", "max_constraint"),
    "flat": ("flat", "hxe", "soft_label"),
}
_DEFAULT_LOSS = {head: kinds[0] for head, kinds in _HEAD_LOSSES.items()}


def balanced_weight(
    taxonomy: Taxonomy,
    targets: Any,
    *,
    within: Literal["siblings", "levels", "leaves"] = "siblings",
    power: float = 1.0,
) -> Tensor:
    """Per-node loss weights that give every option of a decision the same total weight in training.

    The hierarchical form of scikit-learn's ``class_weight="balanced"``. Let ``n(v)`` be
    the number of ``targets`` that reach node ``v`` (labelled ``v`` or below it; a partial
    label reaches its node and the nodes above). The weight of ``v`` is
    ``(mean of n(s) over the options s of v's decision with n(s) > 0) / n(v)``, raised to
    ``power``. The options of a decision are set by ``within``:

    - ``"siblings"``: the children of ``v``'s parent, the decisions of
      :func:`conditional_softmax_nll` (trees only);
    - ``"levels"``: the nodes at ``v``'s depth, the decisions of :func:`level_cross_entropy`
      (trees only: in a DAG a sample can reach two nodes of one depth);
    - ``"leaves"``: the leaves, for :func:`flat_cross_entropy`; ``n(v)`` counts the targets equal
      to the leaf, as scikit-learn's balanced weight does. A partial label (an inner node ``u``)
      does not compete with the leaves below it (its term is ``-log P(u)``). It gets
      ``(k(u) * mean) / (n_leaves(u) + n(u))``, where ``k(u)`` and ``n_leaves(u)`` are the number
      of leaves below ``u`` with targets and their targets, ``n(u)`` the targets equal to ``u``,
      and ``k(u) * mean`` the total weight of those leaf targets: that total divided among every
      target at or below ``u`` (the leaf targets keep their own weights). With ``power=1`` the
      partial labels at ``u`` thus weigh less than ``k(u) * mean`` together, however many they
      are (1,000 ``"leukemia"`` labels above one ``"ALL"`` weighed 500 each, 1,000 times the
      other side, before this rule), and ``u``'s side weighs less than twice its leaves (each
      nested partial label adds at most as much again); a smaller ``power`` raises their share.
      A partial label with no leaf target below it gets 1.

    With ``power=1``, ``n(v) * weight(v)`` is the same for every option of a decision, and
    a decision's total weight is its number of samples, so the loss keeps its scale (for
    ``"leaves"`` only without partial labels; with them the weights above hold).
    ``power=0.5`` balances halfway (on a log scale), and ``power=0`` gives all ones. Nodes that
    no target reaches get 1: their terms never occur on these targets.

    Args:
        taxonomy: the taxonomy of the loss.
        targets: the training labels: node names or indices (inner nodes are partial labels),
            as accepted by :meth:`~hiercls.Taxonomy.encode`; one entry per training sample.
        within: which nodes compete in a decision (see above).
        power: exponent ``>= 0`` of the weights.

    Returns:
        a float32 ``(num_nodes,)`` tensor on the CPU, for the ``weight`` argument of the
        losses (move it with ``.to(device)``, or pass it to :func:`create_loss`).

    Raises:
        TypeError: ``taxonomy`` is not a :class:`~hiercls.Taxonomy` (or the two arguments are swapped).
        ValueError: ``targets`` is empty or not 1-D, ``within`` is unknown, ``power`` is negative,
            not finite or so large that a weight overflows.
        TaxonomyError: ``within`` is ``"siblings"`` or ``"levels"`` on a DAG (use ``"leaves"``: the
            flat losses accept DAGs).
        UnknownNodeError: a target that is not a node of ``taxonomy``.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/normal", "r/leukemia/ALL", "r/leukemia/AML"])
        >>> w = balanced_weight(tax, ["normal"] * 6 + ["ALL"] * 3 + ["AML"])
        >>> {name: round(float(w[tax.index(name)]), 3) for name in ("normal", "leukemia", "ALL", "AML")}
        {'normal': 0.833, 'leukemia': 1.25, 'ALL': 0.667, 'AML': 2.0}
        >>> balanced_weight(tax, ["normal"] * 6 + ["ALL"] * 3 + ["AML"], within="leaves")[tax.index("normal")]
        tensor(0.5556)
    """
    if isinstance(targets, Taxonomy) and not isinstance(taxonomy, Taxonomy):
        raise TypeError("balanced_weight: the taxonomy comes first: balanced_weight(taxonomy, targets).")
    _check_taxonomy(taxonomy)
    if within not in ("siblings", "levels", "leaves"):
        raise ValueError(f"within: expected 'siblings', 'levels' or 'leaves', got {within!r}.")
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not math.isfinite(power) or power < 0:
        raise ValueError(f"power: expected a finite real number >= 0, got {power!r}.")
    if within != "leaves" and not taxonomy.is_tree:
        raise TaxonomyError(
            f"within: {within!r} needs a tree (one parent per node), but this taxonomy is a DAG; use "
            "within='leaves' (the flat losses accept DAGs)."
        )
    idx = np.asarray(taxonomy.encode(targets))
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(
            f"targets: expected a non-empty 1-D sequence of node names or indices (one per training sample), "
            f"got shape {idx.shape}."
        )
    num = taxonomy.num_nodes
    exact = np.bincount(idx, minlength=num).astype(np.float64)
    # sums over each node's subtree: every node adds its value to its ancestors and itself (the CSR lists both)
    anc_ptr, anc_idx = taxonomy.ancestors_ptr, taxonomy.ancestors_index
    owner = np.repeat(np.arange(num), np.diff(anc_ptr))

    def subtree_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(anc_idx, weights=values[owner], minlength=num)

    with np.errstate(over="ignore"):
        if within == "leaves":
            leaf_count = np.where(taxonomy.is_leaf_mask, exact, 0.0)
            present = leaf_count > 0
            mean = leaf_count.sum() / max(int(present.sum()), 1)
            below, options = subtree_sum(leaf_count), subtree_sum(present.astype(np.float64))
            reached = below > 0
            partial = exact - leaf_count  # targets at an inner node: they share the weight of the leaves below
            weight = np.ones(num, dtype=np.float64)
            weight[reached] = (options[reached] * mean / (below[reached] + partial[reached])) ** float(power)
        else:
            count = subtree_sum(exact)
            if within == "levels":
                group = np.asarray(taxonomy.depth_index, dtype=np.int64)
            else:
                group = np.asarray(taxonomy.parent_index, dtype=np.int64) + 1  # the root: a group of its own (0)
            present = count > 0
            groups = int(group.max()) + 1
            total = np.bincount(group, weights=count, minlength=groups)
            options = np.bincount(group, weights=present.astype(np.float64), minlength=groups)
            mean = total / np.maximum(options, 1.0)
            weight = np.ones(num, dtype=np.float64)
            weight[present] = (mean[group[present]] / count[present]) ** float(power)
        weight = weight.astype(np.float32)
    if not np.isfinite(weight).all():
        raise ValueError(
            f"power: expected a power whose weights fit float32, got {power!r}, which overflows on these "
            "counts; use a smaller power, e.g. 1 or 0.5."
        )
    return torch.from_numpy(weight)


def create_loss(kind: LossKind, taxonomy: Taxonomy, **kwargs: Any) -> nn.Module:
    """Build a loss module by name; its forward is ``(logits, target) -> loss``.

    Args:
        kind: ``"conditional"``, ``"level"``, ``"bce"``, ``"flat"``, ``"hxe"``, ``"soft_label"``
            or ``"max_constraint"``.
        taxonomy: the taxonomy of the head.
        **kwargs: the loss's options (``weight``, ``label_smoothing``, ``reduction``,
            ``validate_args``, and ``negatives``, ``alpha`` or ``beta`` where they apply).

    Returns:
        the loss module.

    Raises:
        ValueError: unknown ``kind`` (the message lists the known ones), an option the loss does
            not take (the message names the losses that take it), or a bad option value.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
        >>> type(create_loss("hxe", tax, alpha=0.5)).__name__
        'HXELoss'
    """
    if kind not in _LOSSES:
        raise ValueError(f"kind: unknown loss {kind!r}; expected one of {', '.join(map(repr, _LOSSES))}.")
    takes = _loss_options(kind)
    unknown = [name for name in kwargs if name not in takes]
    if unknown:
        owners = {name: [k for k in _LOSSES if name in _loss_options(k)] for name in unknown}
        where = "; ".join(
            f"{name!r} belongs to {', '.join(map(repr, owners[name]))}"
            if owners[name]
            else f"{name!r} is an option of no loss"
            for name in unknown
        )
        raise ValueError(
            f"create_loss({kind!r}): unknown option(s) {', '.join(map(repr, unknown))} ({where}); "
            f"{kind!r} takes {', '.join(map(repr, takes))}."
        )
    return _LOSSES[kind](taxonomy, **kwargs)


def _loss_options(kind: str) -> tuple[str, ...]:
    """The keyword options of a loss kind's module (all but the taxonomy)."""
    params = inspect.signature(_LOSSES[kind].__init__).parameters
    return tuple(name for name in params if name not in ("self", "taxonomy"))


def compatible_losses(head_kind: str) -> tuple[str, ...]:
    """The loss kinds that train a head kind's probability model, its default first.

    ``conditional`` and ``level`` heads read their per-node logits as the same
    model (sibling-group softmaxes multiplied down the path), so
    ``conditional`` and ``level`` losses train either; ``sigmoid`` heads take
    ``bce`` or ``max_constraint`` (build the head with ``coherent=True`` for the
    latter); ``flat`` heads emit leaf logits, which only ``flat``, ``hxe`` and
    ``soft_label`` take. Any other pair trains a model the head's marginals do
    not read.

    Raises:
        ValueError: unknown head kind.

    Examples:
        >>> compatible_losses("flat")
        ('flat', 'hxe', 'soft_label')
        >>> "bce" in compatible_losses("conditional")
        False
    """
    if head_kind not in _HEAD_LOSSES:
        raise ValueError(
            f"head_kind: unknown head kind {head_kind!r}; expected one of {', '.join(map(repr, _HEAD_LOSSES))}."
        )
    return _HEAD_LOSSES[head_kind]


def default_loss(head_kind: str) -> str:
    """The loss kind that trains a head kind: conditional -> conditional, level -> level, sigmoid -> bce, flat -> flat.

    Raises:
        ValueError: unknown head kind.

    Examples:
        >>> default_loss("sigmoid")
        'bce'
    """
    if head_kind not in _DEFAULT_LOSS:
        raise ValueError(
            f"head_kind: unknown head kind {head_kind!r}; expected one of {', '.join(map(repr, _DEFAULT_LOSS))}."
        )
    return _DEFAULT_LOSS[head_kind]
