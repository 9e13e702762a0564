"""Node marginals ``P(node)`` from the logits of each head kind.

Every head of :mod:`hiercls.heads` turns features into logits of its own
layout; the functions here turn those logits into the common currency of the
library: node marginals ``P(node)``, a float32 tensor of shape
``(B, num_nodes)`` in node index order (the root's column is 1). They are
batch-independent: a sample's row never depends on the rest of its batch.

=====================  ===================  =======================================================
head kind              logits               marginals
=====================  ===================  =======================================================
``"conditional"``      ``(B, num_nodes)``   softmax within each sibling group, product down the path
``"level"``            ``(B, num_nodes)``   the same as ``"conditional"`` (see :func:`level_marginals`)
``"sigmoid"``          ``(B, num_nodes)``   one sigmoid per node, optionally max-constrained
``"flat"``             ``(B, num_leaves)``  softmax over leaves, summed up to every ancestor
=====================  ===================  =======================================================

Everything is vectorised with index tensors built once per taxonomy (and
cached per device for the functional forms; the heads hold them as buffers):
no Python loop over samples or nodes, only over depth levels, and nothing of
size ``num_nodes x num_nodes``.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hiercls.errors import TaxonomyError
from hiercls.taxonomy import Taxonomy

__all__ = [
    "conditional_log_marginals",
    "conditional_marginals",
    "flat_log_marginals",
    "flat_marginals",
    "level_marginals",
    "sigmoid_log_marginals",
    "sigmoid_marginals",
]

# ---------------------------------------------------------------------------------------------
# Index tables: numpy arrays computed once per taxonomy, turned into tensors per device.
# ---------------------------------------------------------------------------------------------

# The padded sibling-group table of the path strategy (see _conditional_nll) costs
# num_groups x max_group_size int64 entries; above this many per node we use the dense strategy.
_PATH_TABLE_BUDGET_PER_NODE = 16


def _level_bounds(tax: Taxonomy) -> tuple[int, ...]:
    # nodes are sorted by depth: level d is the index range [bounds[d], bounds[d + 1])
    return tuple(int(b) for b in np.searchsorted(tax.depth_index, np.arange(tax.max_depth + 2)))


def _b_parent(tax: Taxonomy, get: Callable[[str], np.ndarray]) -> np.ndarray:
    return np.maximum(tax.parent_index, 0)


def _b_parent_local(tax: Taxonomy, get: Callable[[str], np.ndarray]) -> np.ndarray:
    # a node's parent as an offset into the parent's level (root: 0)
    parent = get("parent")
    starts = np.asarray(_level_bounds(tax)[:-1], dtype=np.int64)
    return parent - starts[tax.depth_index[parent]]


def _b_parent_group(tax: Taxonomy, get: Callable[[str], np.ndarray]) -> np.ndarray:
    # the parent's rank among inner nodes: compact sibling-group ids (root: 0, unused)
    inner = np.diff(tax.children_ptr) > 0
    rank = np.cumsum(inner) - 1
    return np.maximum(rank[get("parent")], 0)


def _b_path_node(tax: Taxonomy, get: Callable[[str], np.ndarray]) -> np.ndarray:
    # (N, D + 1): node n's ancestor at depth d; -1 below n is replaced by the root (masked by path_valid)
    return np.maximum(tax.ancestor_table, 0)


def _b_group_tables(tax: Taxonomy) -> dict[str, np.ndarray]:
    """Sibling groups (children of each inner node) padded to the largest group."""
    ptr = tax.children_ptr
    sizes = np.diff(ptr)
    inner = np.flatnonzero(sizes > 0)
    width = int(sizes.max()) if len(inner) else 1
    rows = len(inner) if len(inner) else 1
    members = np.zeros((rows, width), dtype=np.int64)
    valid = np.zeros((rows, width), dtype=bool)
    node_row = np.zeros(tax.num_nodes, dtype=np.int64)  # row of the node's own sibling group
    node_pos = np.zeros(tax.num_nodes, dtype=np.int64)  # position of the node in that row
    for r, p in enumerate(inner.tolist()):  # once per taxonomy, not on a hot path
        kids = tax.children_index[ptr[p] : ptr[p + 1]]
        members[r, : len(kids)] = kids
        valid[r, : len(kids)] = True
        node_row[kids] = r
        node_pos[kids] = np.arange(len(kids))
    return {"group_members": members, "group_valid": valid, "node_row": node_row, "node_pos": node_pos}


def _b_leaf_pos(tax: Taxonomy, get: Callable[[str], np.ndarray]) -> np.ndarray:
    pos = np.full(tax.num_nodes, -1, dtype=np.int64)
    pos[tax.leaf_index] = np.arange(tax.num_leaves)
    return pos


def _b_desc_owner(tax: Taxonomy, get: Callable[[str], np.ndarray]) -> np.ndarray:
    return np.repeat(np.arange(tax.num_nodes), np.diff(tax.descendants_ptr))


def _b_preorder(tax: Taxonomy, get: Callable[[str], np.ndarray]) -> np.ndarray:
    """Trees: each node's rank in a depth-first preorder, so that the subtree of ``t`` (itself included)
    is the nodes ranked ``preorder[t] .. preorder[t] + subtree_size[t] - 1`` (a range test, no index list)."""
    first = tax._euler_first  # first visit in the Euler tour: increasing along a preorder
    rank = np.empty(tax.num_nodes, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(tax.num_nodes)
    return rank


def _b_leafdesc(tax: Taxonomy) -> dict[str, np.ndarray]:
    """CSR of the leaves below each node (itself if a leaf), as positions in leaf order."""
    owner = np.repeat(np.arange(tax.num_nodes), np.diff(tax.descendants_ptr))
    desc = tax.descendants_index
    keep = tax.is_leaf_mask[desc]
    pos = np.full(tax.num_nodes, -1, dtype=np.int64)
    pos[tax.leaf_index] = np.arange(tax.num_leaves)
    ptr = np.zeros(tax.num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[keep], minlength=tax.num_nodes), out=ptr[1:])
    below = np.diff(ptr)
    return {
        "leafdesc_ptr": ptr,
        "leafdesc_pos": pos[desc[keep]],
        "leaves_below": below,
        "leafdesc_owner": np.repeat(np.arange(tax.num_nodes), below),
    }


def _edge_order(tax: Taxonomy, by: Literal["parent", "child"]) -> np.ndarray:
    """The order of ``edges_index()`` rows by the depth of the ``by`` end, then the other end's depth.

    Nodes sort by depth, so each level's outgoing (``"parent"``) or incoming (``"child"``) edges are one
    contiguous run, made of one sub-run per level at the other end (see :func:`_edge_runs`).
    """
    edges = tax.edges_index()
    depth = tax.depth_index
    near, far = (edges[:, 0], edges[:, 1]) if by == "parent" else (edges[:, 1], edges[:, 0])
    return np.lexsort((far, near, depth[far], depth[near]))


def _b_edges_by_parent(tax: Taxonomy) -> dict[str, np.ndarray]:
    """The (parent, child) edges sorted by the parent's depth, then the child's."""
    edges = tax.edges_index()[_edge_order(tax, "parent")]
    return {"edge_parent_sorted": edges[:, 0], "edge_child_sorted": edges[:, 1]}


def _b_edges_by_child(tax: Taxonomy) -> dict[str, np.ndarray]:
    """The (parent, child) edges sorted by the child's depth, then the parent's."""
    edges = tax.edges_index()[_edge_order(tax, "child")]
    return {"edge_parent": edges[:, 0], "edge_child": edges[:, 1]}


def _edge_bounds(tax: Taxonomy, by: Literal["parent", "child"]) -> tuple[int, ...]:
    """Where each depth level's outgoing (``"parent"``) or incoming (``"child"``) edges start in their order."""
    ends = np.sort(tax.edges_index()[:, 0 if by == "parent" else 1])
    return tuple(int(i) for i in np.searchsorted(ends, np.asarray(_level_bounds(tax))))


def _edge_runs(tax: Taxonomy, by: Literal["parent", "child"]) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """Per level of the ``by`` end, its edges as runs ``(level at the other end, start, stop)`` in their order.

    A DAG pass gathers each run from that other level's own tensor, so no level is concatenated with
    the levels before it (which made a DAG's depth cost grow as depth squared). A tree has one run per
    level; a DAG has one per pair of levels an edge joins.
    """
    edges = tax.edges_index()[_edge_order(tax, by)]
    depth = tax.depth_index
    near, far = (edges[:, 0], edges[:, 1]) if by == "parent" else (edges[:, 1], edges[:, 0])
    near_d, far_d = depth[near], depth[far]
    runs: list[list[tuple[int, int, int]]] = [[] for _ in range(tax.max_depth + 1)]
    if len(edges):
        cut = np.flatnonzero((np.diff(near_d) != 0) | (np.diff(far_d) != 0)) + 1
        starts = np.concatenate(([0], cut))
        stops = np.concatenate((cut, [len(edges)]))
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            runs[int(near_d[a])].append((int(far_d[a]), a, b))
    return tuple(tuple(r) for r in runs)


_SIMPLE: dict[str, Callable[[Taxonomy, Callable[[str], np.ndarray]], np.ndarray]] = {
    "parent": _b_parent,
    "parent_local": _b_parent_local,
    "path_node": _b_path_node,
    "leaf_pos": _b_leaf_pos,
    "is_leaf": lambda tax, get: tax.is_leaf_mask,
    "parent_group": _b_parent_group,
    "level_start": lambda tax, get: np.asarray(_level_bounds(tax)[:-1], dtype=np.int64),
    "desc_owner": _b_desc_owner,
    "depth": lambda tax, get: tax.depth_index,
    "height": lambda tax, get: tax.height_index,
    "leaf_index": lambda tax, get: tax.leaf_index,
    "anc_ptr": lambda tax, get: tax.ancestors_ptr,
    "anc_index": lambda tax, get: tax.ancestors_index,
    "desc_ptr": lambda tax, get: tax.descendants_ptr,
    "subtree_size": lambda tax, get: np.diff(tax.descendants_ptr),  # the CSR lists each node among its own
    "num_children": lambda tax, get: np.diff(tax.children_ptr),
    "preorder": _b_preorder,
    "leaf_preorder": lambda tax, get: get("preorder")[tax.leaf_index],
    "desc_index": lambda tax, get: tax.descendants_index,
}
_GROUPED: dict[str, Callable[[Taxonomy], dict[str, np.ndarray]]] = {
    **dict.fromkeys(("group_members", "group_valid", "node_row", "node_pos"), _b_group_tables),
    **dict.fromkeys(("leafdesc_ptr", "leafdesc_pos", "leaves_below", "leafdesc_owner"), _b_leafdesc),
    **dict.fromkeys(("edge_parent_sorted", "edge_child_sorted"), _b_edges_by_parent),
    **dict.fromkeys(("edge_parent", "edge_child"), _b_edges_by_child),
}


class _TaxonomyTables:
    """Lazily built index tensors of one taxonomy on one device (the functional forms' cache).

    Attributes are built on first access and kept; the static facts (sizes,
    level bounds, strategy flags) are plain Python values.
    """

    def __init__(self, taxonomy: Taxonomy, device: torch.device | str = "cpu") -> None:
        self.taxonomy = taxonomy
        self.device = torch.device(device)
        self.num_nodes = taxonomy.num_nodes
        self.num_leaves = taxonomy.num_leaves
        self.max_depth = taxonomy.max_depth
        self.is_tree = taxonomy.is_tree
        self.level_bounds = _level_bounds(taxonomy)
        self.parent_edge_bounds = _edge_bounds(taxonomy, "parent")
        self.child_edge_bounds = _edge_bounds(taxonomy, "child")
        self.parent_edge_runs = _edge_runs(taxonomy, "parent")  # used on DAGs (a tree has one run per level)
        self.child_edge_runs = _edge_runs(taxonomy, "child")
        self.tree_height = int(taxonomy.height_index[0])
        self.num_groups = max(int((np.diff(taxonomy.children_ptr) > 0).sum()), 1)
        leaves = taxonomy.leaf_index
        self.leaves_last = bool(np.array_equal(leaves, np.arange(taxonomy.num_nodes - len(leaves), taxonomy.num_nodes)))
        sizes = np.diff(taxonomy.children_ptr)
        groups = int((sizes > 0).sum())
        widest = int(sizes.max()) if taxonomy.num_nodes > 1 else 1
        # the path strategy gathers max_depth x widest logits per sample; use it while its
        # padded table stays small (it always does for bounded fan-out)
        self.nll_path = groups * widest <= _PATH_TABLE_BUDGET_PER_NODE * taxonomy.num_nodes + 1024
        # the padded (num_nodes, max_depth + 1) ancestor table, while padding at most triples what the
        # ancestor lists hold (a wide tree with one deep branch would pad it towards num_nodes^2);
        # otherwise the losses walk each target's path up, one level at a time
        pairs = len(taxonomy.ancestors_index) if taxonomy.is_tree else 0
        self.paths_tabled = taxonomy.is_tree and taxonomy.num_nodes * (self.max_depth + 1) <= 3 * pairs + 4096
        self._numpy: dict[str, np.ndarray] = {}

    def numpy(self, name: str) -> np.ndarray:
        if name not in self._numpy:
            if name in _SIMPLE:
                self._numpy[name] = np.ascontiguousarray(_SIMPLE[name](self.taxonomy, self.numpy))
            elif name in _GROUPED:
                self._numpy.update(_GROUPED[name](self.taxonomy))
            else:
                raise AttributeError(f"no index table called {name!r}")
        return self._numpy[name]

    def __getattr__(self, name: str) -> Tensor:
        if name.startswith("_") or (name not in _SIMPLE and name not in _GROUPED):
            raise AttributeError(name)
        value = torch.from_numpy(self.numpy(name).copy()).to(self.device)
        self.__dict__[name] = value
        return value


_STATIC = (
    "num_nodes",
    "num_leaves",
    "max_depth",
    "is_tree",
    "level_bounds",
    "parent_edge_bounds",
    "child_edge_bounds",
    "parent_edge_runs",
    "child_edge_runs",
    "tree_height",
    "num_groups",
    "leaves_last",
    "nll_path",
    "paths_tabled",
)
_CACHE: OrderedDict[tuple[Taxonomy, str], _TaxonomyTables] = OrderedDict()
_CACHE_SIZE = 16


def _tables_for(taxonomy: Taxonomy, device: torch.device | str) -> _TaxonomyTables:
    key = (taxonomy, str(torch.device(device)))
    tables = _CACHE.get(key)
    if tables is None:
        tables = _TaxonomyTables(taxonomy, device)
        _CACHE[key] = tables
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return tables


def _refill_buffers(module: nn.Module, host: Mapping[str, Tensor | None], before: Mapping[str, Any]) -> None:
    """Write derived buffers again from their host values, on the device and dtype ``_apply`` gave them.

    ``module.to_empty(device=...)`` (after building on the meta device) leaves every buffer
    uninitialised, and non-persistent ones are never loaded from a checkpoint: index tables full of
    garbage would read out of bounds. Called after each ``_apply`` (``.to``, ``.half``, ``to_empty``)
    with the buffers ``before`` it: a buffer ``_apply`` left as it was is not touched, and one on the
    meta device has no values to hold. Only a floating buffer follows a dtype change.
    """
    for name, value in host.items():
        buf = module._buffers.get(name)
        if buf is None or value is None or buf is before.get(name) or buf.device.type == "meta":
            continue
        # an index table or a fingerprint keeps its own dtype: Module.type(torch.float64) casts every
        # buffer, and float indices made scatter/gather raise
        dtype = buf.dtype if value.is_floating_point() and buf.is_floating_point() else value.dtype
        module._buffers[name] = value.to(device=buf.device, dtype=dtype)


def _default_device() -> torch.device:
    """Where a new tensor goes without a ``device``: ``torch.set_default_device`` or a ``with
    torch.device(...)`` block (meta, to build a model without memory), as ``nn.Linear``'s weights do."""
    return torch.empty(0).device


class _TaxonomyBuffers(nn.Module):
    """The index tensors a head or loss needs, as non-persistent buffers.

    ``.to(device)`` moves them with the owning module and ``torch.compile``
    sees them as ordinary buffers; they are not saved in ``state_dict`` (they
    are a function of the taxonomy, whose fingerprint the owner keeps).
    """

    def __init__(self, taxonomy: Taxonomy, names: Iterable[str]) -> None:
        super().__init__()
        tables = _TaxonomyTables(taxonomy, "cpu")
        for attr in _STATIC:
            setattr(self, attr, getattr(tables, attr))
        self._host: dict[str, Tensor] = {}
        device = _default_device()  # the owner's weights are built there: its tables go there too
        for name in names:
            self._host[name] = getattr(tables, name)
            self.register_buffer(name, self._host[name].to(device), persistent=False)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> _TaxonomyBuffers:
        before = dict(self._buffers)
        super()._apply(fn, recurse)
        _refill_buffers(self, getattr(self, "_host", {}), before)  # pickles of 0.1.0.dev have no _host
        return self

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, num_leaves={self.num_leaves}, buffers={list(self._buffers)}"


# ---------------------------------------------------------------------------------------------
# Input checks shared with hiercls.heads and hiercls.losses.
# ---------------------------------------------------------------------------------------------


def _not_a_taxonomy(taxonomy: Any) -> str:
    return (
        f"taxonomy: expected a hiercls.Taxonomy, got {type(taxonomy).__name__}. Build one with "
        "Taxonomy.from_edges / from_paths / from_dict (or check the order of the arguments)."
    )


def _require_tree(taxonomy: Taxonomy, what: str, instead: str) -> None:
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(_not_a_taxonomy(taxonomy))
    if not taxonomy.is_tree:
        raise TaxonomyError(
            f"{what} needs a tree (one parent per node, so that each node has one sibling group and one path), "
            f"but this taxonomy is a DAG. {instead}"
        )


def _check_taxonomy(taxonomy: Any) -> Taxonomy:
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(_not_a_taxonomy(taxonomy))
    return taxonomy


def _check_logits(logits: Any, width: int, width_name: str, where: str) -> Tensor:
    """Shape and dtype checks (no device sync)."""
    if not isinstance(logits, Tensor):
        raise ValueError(
            f"logits: expected a torch.Tensor of shape (B, {width_name}) = (B, {width}), got {type(logits).__name__}."
        )
    if not (logits.is_floating_point()):
        raise ValueError(
            f"logits: expected a floating-point tensor, got dtype {logits.dtype}. Pass the head's raw output."
        )
    if logits.ndim != 2 or logits.shape[1] != width:
        got = f"logits: {where} expects shape (B, {width_name}) = (B, {width}), got {tuple(logits.shape)}. "
        if logits.ndim == 1 and logits.shape[0] == width:
            raise ValueError(got + "For one sample, add the batch dimension: logits.unsqueeze(0).")
        raise ValueError(
            got
            + "Use a head built on the same taxonomy"
            + (" (the flat head's logits are in taxonomy.leaf_index order)." if width_name == "num_leaves" else ".")
        )
    return logits


def _check_flag(value: Any, name: str) -> bool:
    """``value`` is a bool (a string such as ``"no"`` would be truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}.")
    return bool(value)


def _check_coherent(coherent: Any) -> bool:
    return _check_flag(coherent, "coherent")


def _upcast(logits: Tensor) -> Tensor:
    """Compute in float32 (float64 stays float64, e.g. for gradcheck)."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _finite_above(logits: Tensor) -> Tensor:
    """``+inf`` logits (a float16 overflow) as a huge finite value: the marginals take their limit (a
    certain choice within the group) instead of ``inf - inf = NaN``. ``-inf`` masks stay; NaN stays NaN."""
    return logits.clamp(max=torch.finfo(logits.dtype).max / 4)


def _check_finite(logits: Tensor) -> None:
    """Raise ValueError on NaN or +inf logits (one device sync); -inf masks a logit and is allowed."""
    if logits.numel() == 0:
        return
    # one reduction instead of an elementwise mask; a sum that is not finite (a huge one, or a -inf
    # mask) is re-checked exactly
    if not math.isfinite(float(logits.detach().sum())):
        x = logits.detach()
        bad_mask = torch.isnan(x) | (x == math.inf)
        if bool(bad_mask.any()):
            bad = bad_mask.nonzero()[:3].tolist()
            raise ValueError(
                f"logits: found NaN or +inf values (first at [sample, column] {bad}). "
                "Check the model for exploding activations or a too-high learning rate "
                "(-inf is allowed: it masks a logit); pass validate_args=False to skip this check."
            )


# ---------------------------------------------------------------------------------------------
# Pure tensor maths (inputs already checked; `t` holds the index tables: a _TaxonomyTables or a
# _TaxonomyBuffers). Loops run over depth levels only.
# ---------------------------------------------------------------------------------------------


def _level_sizes(bounds: tuple[int, ...]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(bounds)]


# The level-wise helpers work on node-major tensors (num_nodes, B): on CPU, index ops along dim 0
# move whole rows of B values and run an order of magnitude faster than along dim 1.


def _subtree_reduce_nm(values: Tensor, t: Any, op: Literal["amax", "sum", "lse"]) -> Tensor:
    """Reduce each node's subtree (its descendants and itself): node-major ``(N, B) -> (N, B)``.

    ``"lse"`` is a log-sum-exp; ``-inf`` entries contribute nothing. Trees go
    bottom-up one level at a time (O(B x N)). On DAGs a maximum also goes
    bottom-up, over the edges (O(B x edges): a node reached twice does no harm
    to a maximum); sums reduce over the descendants CSR (O(B x sum of subtree
    sizes)), so that a node reached by two paths counts once.
    """
    batch = values.shape[1]
    if not t.is_tree:
        if op == "amax":
            return _dag_amax_nm(values, t)
        return _descendants_reduce_nm(values, t, op)
    bounds = t.level_bounds
    depth = len(bounds) - 2
    # split (not slicing) so that the backward pass assembles one gradient instead of one per level
    levels = torch.split(values, _level_sizes(bounds), dim=0)
    below = levels[depth]
    out = [below]
    for d in range(depth - 1, -1, -1):
        cur = levels[d]
        index = t.parent_local[bounds[d + 1] : bounds[d + 2]]
        if op == "sum":
            cur = cur.index_add(0, index, below)
        elif op == "amax":
            cur = cur.scatter_reduce(0, index[:, None].expand(-1, batch), below, "amax", include_self=True)
        else:
            with torch.no_grad():
                top = cur.scatter_reduce(0, index[:, None].expand(-1, batch), below, "amax", include_self=True)
                # an all -inf subtree (masked classes) would give -inf - -inf = NaN; shift it by 0 instead
                top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            # a node's own term: exp(0) = 1 for leaves (top is their value), 0 for inner nodes, without exp(-inf)
            leaf = t.is_leaf[bounds[d] : bounds[d + 1], None]
            own = torch.exp((cur - top).masked_fill(~leaf, 0.0)) * leaf
            cur = top + _log_or_neg_inf(own.index_add(0, index, torch.exp(below - top[index])))
        out.append(cur)
        below = cur
    return torch.cat(out[::-1], dim=0)


def _dag_amax_nm(values: Tensor, t: Any) -> Tensor:
    """Maximum over each node's descendants and itself on a DAG, node-major, bottom-up by depth level.

    Nodes are sorted by (longest-path) depth, so a node's children all sit at deeper levels, already
    final when its level is reached: per level, a gather from each deeper level its edges reach and one
    scatter-max. O(B x (nodes + edges)) in all, whatever the depth.
    """
    return _dag_level_max(values, t, t.parent_edge_runs, t.edge_parent_sorted, t.edge_child_sorted, up=True)


def _dag_descend_nm(values: Tensor, t: Any) -> Tensor:
    """Maximum over each node's ancestors and itself on a DAG, node-major, top-down by depth level (the
    mirror of :func:`_dag_amax_nm`): per level, a gather from each shallower level and one scatter-max."""
    return _dag_level_max(values, t, t.child_edge_runs, t.edge_child, t.edge_parent, up=False)


def _dag_level_max(values: Tensor, t: Any, runs: Any, near: Tensor, far: Tensor, *, up: bool) -> Tensor:
    """The shared pass: ``near[e]`` takes the maximum of itself and ``far[e]`` (final before its level)."""
    batch = values.shape[1]
    bounds = t.level_bounds
    levels = list(torch.split(values, _level_sizes(bounds), dim=0))
    order = range(len(levels) - 1, -1, -1) if up else range(len(levels))
    for d in order:
        if not runs[d]:
            continue
        start, stop = runs[d][0][1], runs[d][-1][2]
        pieces = [levels[other][far[a:b] - bounds[other]] for other, a, b in runs[d]]
        gathered = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)
        index = (near[start:stop] - bounds[d])[:, None].expand(-1, batch)
        levels[d] = levels[d].scatter_reduce(0, index, gathered, "amax", include_self=True)
    return torch.cat(levels, dim=0)


def _descendants_reduce_nm(values: Tensor, t: Any, op: Literal["amax", "sum", "lse"]) -> Tensor:
    num, batch = values.shape
    owner = t.desc_owner[:, None].expand(-1, batch)
    gathered = values[t.desc_index]
    if op == "sum":
        return values.new_zeros(num, batch).index_add(0, t.desc_owner, gathered)
    if op == "amax":
        return values.new_full((num, batch), -math.inf).scatter_reduce(0, owner, gathered, "amax", include_self=False)
    with torch.no_grad():
        top = values.new_full((num, batch), -math.inf).scatter_reduce(0, owner, gathered, "amax", include_self=False)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    summed = values.new_zeros(num, batch).index_add(0, t.desc_owner, torch.exp(gathered - top[t.desc_owner]))
    return top + _log_or_neg_inf(summed)


def _log_or_neg_inf(x: Tensor) -> Tensor:
    """``log(x)`` for ``x >= 0`` whose gradient is 0, not NaN, where ``x == 0`` (an all ``-inf`` subtree).

    A plain ``log`` would send ``0 / 0`` back to every masked logit (``logits + log(mask)`` is a common
    way to mask classes) and from there into the weights.
    """
    pos = x > 0
    return torch.where(pos, torch.log(torch.where(pos, x, torch.ones_like(x))), torch.full_like(x, -math.inf))


def _log_or_zero(x: Tensor) -> Tensor:
    """``log(x)`` for ``x > 0`` and 0 where ``x == 0`` (a group whose logits are all -inf), gradient 0 there.

    Subtracted from logits shifted by a group maximum of 0, the masked members stay -inf, not 0/0.
    """
    empty = x == 0
    return torch.where(empty, torch.zeros_like(x), torch.log(torch.where(empty, torch.ones_like(x), x)))


def _subtree_reduce(values: Tensor, t: Any, op: Literal["amax", "sum", "lse"]) -> Tensor:
    """:func:`_subtree_reduce_nm` for batch-major ``(B, N)`` tensors (returns a contiguous ``(B, N)``)."""
    return _subtree_reduce_nm(values.t().contiguous(), t, op).t().contiguous()


def _cumulate_down_nm(values: Tensor, t: Any) -> Tensor:
    """Sum each node's value with its ancestors' (trees), node-major ``(N, B)``, one step per level."""
    bounds = t.level_bounds
    levels = torch.split(values, _level_sizes(bounds), dim=0)
    out = [levels[0]]
    for d in range(1, len(bounds) - 1):
        out.append(out[-1][t.parent_local[bounds[d] : bounds[d + 1]]] + levels[d])
    return torch.cat(out, dim=0)


def _group_log_softmax_nm(logits: Tensor, t: Any) -> Tensor:
    """``log P(n | parent)`` for every non-root node: softmax within sibling groups, node-major.

    ``logits`` is ``(N, B)``; returns ``(N - 1, B)`` whose row ``n - 1`` is node
    ``n``. Differences are taken before the log-sum (``(x - max) - log sum exp(x - max)``),
    so the result stays exact when logits are large (±1e4). Group statistics
    live in compact ``(num_groups, B)`` tensors: no ``log(0)`` for leaves (the
    special-value path of ``log``/``exp`` is ~10x slower on CPU).
    """
    batch = logits.shape[1]
    children = logits[1:]
    group = t.parent_group[1:]
    with torch.no_grad():
        top = logits.new_full((t.num_groups, batch), -math.inf).scatter_reduce(
            0, group[:, None].expand(-1, batch), children, "amax", include_self=False
        )
        # a group whose logits are all -inf (``logits + log(mask)`` masking a whole subtree): shift by 0,
        # so its members come out -inf (their parent's marginal is 0) with zero gradient, not NaN
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = children - top[group]
    summed = logits.new_zeros(t.num_groups, batch).index_add(0, group, torch.exp(shifted))
    return shifted - _log_or_zero(summed)[group]


def _group_mean_nm(logits: Tensor, t: Any) -> Tensor:
    """Mean logit of the sibling group of every non-root node, node-major ``(N - 1, B)``."""
    num, batch = logits.shape
    index = t.parent[1:]
    counts = t.num_children.to(logits.dtype).clamp_min(1)[:, None]  # a table: no bincount (a device sync) per call
    # divided before the sum: logits near the dtype's max (a clamped +inf) would overflow the sum to +inf
    return logits.new_zeros(num, batch).index_add(0, index, logits[1:] / counts[index])[index]


def _conditional_log_marginals(logits: Tensor, t: Any) -> Tensor:
    if logits.shape[1] == 1:  # only a root: log P = 0, still in the graph (a zero gradient, as the other heads give)
        return torch.zeros_like(logits) + logits[:, :0].sum()
    nm = logits.t().contiguous()
    log_cond = torch.cat([torch.zeros_like(nm[:1]), _group_log_softmax_nm(nm, t)], dim=0)
    return _cumulate_down_nm(log_cond, t).t().contiguous()


def _sigmoid_log_marginals(logits: Tensor, t: Any, coherent: bool) -> Tensor:
    if coherent:
        logits = _subtree_reduce(logits, t, "amax")
    log_probs = F.logsigmoid(logits)
    return torch.cat([torch.zeros_like(log_probs[:, :1]), log_probs[:, 1:]], dim=1)


def _minus_row_max(leaf_logits: Tensor) -> Tensor:
    """Leaf logits ``(B, L)`` shifted by each row's (detached) max, which a softmax over the leaves ignores:
    log-masses near 0 keep full precision at logits of ±1e4. A row whose leaves are all masked (-inf) is
    shifted by 0, not by -inf (-inf - -inf = NaN)."""
    if not leaf_logits.shape[1]:
        return leaf_logits
    top = leaf_logits.detach().amax(1, keepdim=True)
    return leaf_logits - torch.where(torch.isfinite(top), top, torch.zeros_like(top))


def _leaf_rows(leaf_logits: Tensor, t: Any, fill: float) -> Tensor:
    """Place leaf-ordered values ``(B, L)`` into node-major ``(N, B)``, ``fill`` at inner nodes."""
    rows = _minus_row_max(leaf_logits).t().contiguous()  # (index_copy from a transposed view is ~5x slower)
    if t.leaves_last:  # every leaf at the deepest level (the iNat21 shape): no scatter needed
        return torch.cat([rows.new_full((t.num_nodes - t.num_leaves, rows.shape[1]), fill), rows], dim=0)
    return rows.new_full((t.num_nodes, rows.shape[1]), fill).index_copy(0, t.leaf_index, rows)


def _flat_log_marginals(leaf_logits: Tensor, t: Any) -> Tensor:
    if not t.is_tree:
        out = _dag_leaf_lse(leaf_logits, t)
    else:
        subtree = _subtree_reduce_nm(_leaf_rows(leaf_logits, t, -math.inf), t, "lse")
        out = _normalise_by_root(subtree).t().contiguous()  # the root's subtree holds every leaf once
    # every leaf competes in one softmax, so a NaN logit leaves no node of its row known but the root
    # (left alone, the lse skipped it: P(a) = 0 and P(b) = 1 from [nan, 0, 0, 0] on r/{a/{a1,a2},b/{b1,b2}})
    unknown = torch.isnan(leaf_logits).any(1, keepdim=True) & (torch.arange(out.shape[1], device=out.device) > 0)
    return out.masked_fill(unknown, math.nan)


def _normalise_by_root(log_mass: Tensor) -> Tensor:
    """Node-major log masses -> log marginals: minus the root's. A sample whose leaves are all masked
    (-inf) has no mass to divide by: its root gets log P = 0 and every other node -inf, not NaN."""
    root = log_mass[:1]
    rest = log_mass[1:] - torch.where(torch.isfinite(root), root, torch.zeros_like(root))
    return torch.cat([torch.zeros_like(root), rest], dim=0)


_DAG_PAIR_ELEMENTS = 1 << 23  # (node, leaf below it) pairs x samples gathered at once: 32 MB of float32


def _dag_leaf_lse(leaf_logits: Tensor, t: Any) -> Tensor:
    """Flat marginals on a DAG: a log-sum-exp over the leaves below each node (each leaf once), batch-major.

    Only the leaf-descendant lists are gathered (O(B x sum of leaves below each node)), not every descendant,
    in chunks of samples (rows are independent) so that a few temporaries of ``_DAG_PAIR_ELEMENTS`` are alive
    at once: a deep DAG has tens of such pairs per node (1.3 GB at B=256 on an iNat21-sized one in one go).
    """
    rows = max(1, _DAG_PAIR_ELEMENTS // max(len(t.leafdesc_pos), 1))
    if leaf_logits.shape[0] > rows:
        return torch.cat([_dag_leaf_lse(part, t) for part in leaf_logits.split(rows)])
    batch = leaf_logits.shape[0]
    # the row max first, as on a tree: adding only the per-node shift back below would cost log P an ulp of
    # the largest logit (~1e-3 at 1e4 in float32)
    rows = _minus_row_max(leaf_logits).t().contiguous()
    gathered = rows[t.leafdesc_pos]  # (sum of leaves below each node, B)
    owner = t.leafdesc_owner
    with torch.no_grad():  # shift each node by its own largest leaf logit, so deep nodes keep log P < -100 exact
        top = gathered.new_full((t.num_nodes, batch), -math.inf).scatter_reduce(
            0, owner[:, None].expand(-1, batch), gathered, "amax", include_self=False
        )
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # no leaf, or all masked: 0
    summed = rows.new_zeros(t.num_nodes, batch).index_add(0, owner, torch.exp(gathered - top[owner]))
    return _normalise_by_root(top + _log_or_neg_inf(summed)).t().contiguous()


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def conditional_log_marginals(logits: Tensor, taxonomy: Taxonomy) -> Tensor:
    """Log node marginals ``log P(node)`` of the conditional (per-parent softmax) head.

    ``log P(node | parent) = logits[node] - logsumexp(logits[siblings of node, node included])``
    and ``log P(node) = sum of log P(a | parent(a))`` over the node's ancestors
    ``a`` below the root and the node itself. The root's logit is ignored and
    ``log P(root) = 0``. Cost O(B x num_nodes).

    Args:
        logits: ``(B, num_nodes)`` floating tensor, one logit per node in index order.
        taxonomy: a tree.

    Returns:
        float32 ``(B, num_nodes)`` (float64 for float64 logits).

    Raises:
        ValueError: ``logits`` is not a floating tensor of shape ``(B, num_nodes)``.
        TaxonomyError: the taxonomy is a DAG (sibling groups are not defined).

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> logits = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0]])
        >>> conditional_log_marginals(logits, tax).exp()
        tensor([[1.0000, 0.5000, 0.5000, 0.2500, 0.2500]])
    """
    _require_tree(taxonomy, "conditional_log_marginals", "Use a SigmoidHead for a DAG.")
    _check_logits(logits, taxonomy.num_nodes, "num_nodes", "conditional_log_marginals")
    return _conditional_log_marginals(_finite_above(_upcast(logits)), _tables_for(taxonomy, logits.device))


def conditional_marginals(logits: Tensor, taxonomy: Taxonomy) -> Tensor:
    """Node marginals ``P(node)`` of the conditional head: products of sibling-group softmaxes down the path.

    For a tree, each inner node's marginal equals the sum of its children's and
    the root's is 1. See :func:`conditional_log_marginals` for the formula.

    Args:
        logits: ``(B, num_nodes)`` floating tensor (bf16 is fine; the result is float32).
        taxonomy: a tree.

    Returns:
        float32 ``(B, num_nodes)`` (float64 for float64 logits).

    Raises:
        ValueError: wrong shape or dtype of ``logits``.
        TaxonomyError: the taxonomy is a DAG.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> p = conditional_marginals(torch.randn(4, tax.num_nodes), tax)
        >>> torch.allclose(p[:, 1], p[:, 3] + p[:, 4]), bool((p[:, 0] == 1).all())
        (True, True)
    """
    _require_tree(taxonomy, "conditional_marginals", "Use a SigmoidHead for a DAG.")
    _check_logits(logits, taxonomy.num_nodes, "num_nodes", "conditional_marginals")
    return conditional_log_marginals(logits, taxonomy).exp()


def level_marginals(logits: Tensor, taxonomy: Taxonomy) -> Tensor:
    """Node marginals of the per-level head: each level's softmax renormalised within sibling groups.

    The level head has one softmax over all nodes of each depth. Restricted to
    the children of one parent and renormalised, the level softmax equals the
    softmax of those children's logits (the level's normaliser cancels), so
    ``P(node | parent)`` is the sibling-group softmax and the marginals are
    products down the path: exactly :func:`conditional_marginals` of the same
    logits. They are consistent (children sum to the parent), so top-down and
    tiered decoding apply unchanged.

    Args:
        logits: ``(B, num_nodes)`` floating tensor.
        taxonomy: a tree.

    Returns:
        float32 ``(B, num_nodes)`` (float64 for float64 logits).

    Raises:
        ValueError: wrong shape or dtype of ``logits``.
        TaxonomyError: the taxonomy is a DAG.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> logits = torch.randn(2, tax.num_nodes)
        >>> torch.equal(level_marginals(logits, tax), conditional_marginals(logits, tax))
        True
    """
    _require_tree(taxonomy, "level_marginals", "Use a SigmoidHead for a DAG.")
    _check_logits(logits, taxonomy.num_nodes, "num_nodes", "level_marginals")
    return conditional_marginals(logits, taxonomy)


def sigmoid_log_marginals(logits: Tensor, taxonomy: Taxonomy, *, coherent: bool = False) -> Tensor:
    """Log node marginals of the sigmoid (one independent logit per node) head.

    ``P(node) = sigmoid(logits[node])``; with ``coherent=True`` the max-constraint
    of Giunchiglia & Lukasiewicz (2020) applies:
    ``P(node) = max over d in descendants(node) ∪ {node} of sigmoid(logits[d])``,
    so that no node is less probable than any of its descendants (in a DAG too).
    The root's marginal is 1. Computed in logit space (``max`` commutes with the
    sigmoid), so it is exact at logits of ±1e4.

    Args:
        logits: ``(B, num_nodes)`` floating tensor.
        taxonomy: a tree or a DAG.
        coherent: apply the max-constraint.

    Returns:
        float32 ``(B, num_nodes)`` (float64 for float64 logits).

    Raises:
        ValueError: wrong shape or dtype of ``logits``.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
        >>> logits = torch.tensor([[0.0, -1.0, 0.0, 2.0]])
        >>> sigmoid_log_marginals(logits, tax, coherent=True).exp()
        tensor([[1.0000, 0.8808, 0.5000, 0.8808]])
    """
    _check_taxonomy(taxonomy)
    _check_logits(logits, taxonomy.num_nodes, "num_nodes", "sigmoid_log_marginals")
    return _sigmoid_log_marginals(
        _finite_above(_upcast(logits)), _tables_for(taxonomy, logits.device), _check_coherent(coherent)
    )


def sigmoid_marginals(logits: Tensor, taxonomy: Taxonomy, *, coherent: bool = False) -> Tensor:
    """Node marginals of the sigmoid head, optionally max-constrained. See :func:`sigmoid_log_marginals`.

    Args:
        logits: ``(B, num_nodes)`` floating tensor.
        taxonomy: a tree or a DAG.
        coherent: apply the max-constraint (no node above its parent).

    Returns:
        float32 ``(B, num_nodes)`` (float64 for float64 logits); column 0 (the root) is 1.

    Raises:
        ValueError: wrong shape or dtype of ``logits``.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
        >>> p = sigmoid_marginals(torch.randn(3, 4), tax, coherent=True)
        >>> bool((p[:, 1] >= p[:, 3]).all())
        True
    """
    _check_logits(logits, _check_taxonomy(taxonomy).num_nodes, "num_nodes", "sigmoid_marginals")
    return sigmoid_log_marginals(logits, taxonomy, coherent=coherent).exp()


def flat_log_marginals(logits: Tensor, taxonomy: Taxonomy) -> Tensor:
    """Log node marginals of the flat (one logit per leaf) head.

    ``P(leaf)`` is the softmax over leaves and ``P(node)`` the sum of ``P(leaf)``
    over the leaves below the node, i.e.
    ``log P(node) = logsumexp(logits[leaves below node]) - logsumexp(logits)``.

    In a DAG a leaf can lie below a node along several paths; it is counted
    once, so ``P(node)`` is the probability that the true leaf is a descendant
    of ``node``. Children then need not sum to their parent (they may share
    leaves), but every marginal is a probability and the root's is 1.

    A NaN logit makes every node of its row NaN but the root: all the leaves share one softmax.

    Args:
        logits: ``(B, num_leaves)`` floating tensor, leaves in ``taxonomy.leaf_index`` order.
        taxonomy: a tree or a DAG.

    Returns:
        float32 ``(B, num_nodes)`` (float64 for float64 logits).

    Raises:
        ValueError: ``logits`` is not of shape ``(B, num_leaves)``.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> tax.leaves
        ('b', 'a1', 'a2')
        >>> flat_log_marginals(torch.zeros(1, 3), tax).exp()
        tensor([[1.0000, 0.6667, 0.3333, 0.3333, 0.3333]])
    """
    _check_taxonomy(taxonomy)
    _check_logits(logits, taxonomy.num_leaves, "num_leaves", "flat_log_marginals")
    return _flat_log_marginals(_finite_above(_upcast(logits)), _tables_for(taxonomy, logits.device))


def flat_marginals(logits: Tensor, taxonomy: Taxonomy) -> Tensor:
    """Node marginals of the flat head: leaf softmax summed up to every ancestor. See :func:`flat_log_marginals`.

    Args:
        logits: ``(B, num_leaves)`` floating tensor, leaves in ``taxonomy.leaf_index`` order.
        taxonomy: a tree or a DAG.

    Returns:
        float32 ``(B, num_nodes)`` (float64 for float64 logits).

    Raises:
        ValueError: ``logits`` is not of shape ``(B, num_leaves)``.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> p = flat_marginals(torch.randn(5, tax.num_leaves), tax)
        >>> torch.allclose(p[:, 0], torch.ones(5)), torch.allclose(p[:, 1], p[:, 3] + p[:, 4])
        (True, True)
    """
    _check_logits(logits, _check_taxonomy(taxonomy).num_leaves, "num_leaves", "flat_marginals")
    return flat_log_marginals(logits, taxonomy).exp()
