"""The taxonomy: a validated, immutable tree or DAG of node names.

A :class:`Taxonomy` is built once (from edges, paths, a mapping, a nested dict,
a JSON file, a folder tree or a networkx graph), validated, frozen, and turned
into flat integer arrays that everything downstream works with: parent, depth,
height, children and ancestors in CSR form, and, for trees, an ancestor table
and an Euler-tour sparse table for O(1) lowest-common-ancestor queries.

Memory is O(num_nodes x depth) on a tree (each node's ancestor and descendant lists; on a DAG, the number
of ancestors replaces the depth); nothing of size num_nodes x num_nodes is built, though a single chain,
whose depth is num_nodes, comes close.
The dense :attr:`Taxonomy.ancestor_table` is built on first use only.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import hashlib
import json
import os
import re
import stat
import sys
import uuid
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, MappingView, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Union

import networkx as nx
import numpy as np

from hiercls.errors import TaxonomyError, UnknownNodeError

__all__ = ["LabelsLike", "NodeLike", "Taxonomy"]

NodeLike = Union[str, int, np.integer]
"""A node given by its name (``str``) or its index (``int``)."""
LabelsLike = Any
"""A sequence, numpy array or torch tensor of node names or node indices."""

_FORMAT = "hiercls-taxonomy"
_VERSION = 1
_REPR_LINES = 40
_SHOW = 5  # how many names an error message lists before "and N more"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


def _csr(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    flat = np.fromiter((i for x in lists for i in x), dtype=np.int64, count=int(ptr[-1]))
    return ptr, flat


def _gather_csr(ptr: np.ndarray, flat: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate CSR rows ``rows``: returns (which input position, value) pairs."""
    starts = ptr[rows]
    counts = ptr[rows + 1] - starts
    owner = np.repeat(np.arange(len(rows)), counts)
    # position within each row: global arange minus the row's offset in the output
    offsets = np.cumsum(counts) - counts
    within = np.arange(int(counts.sum())) - np.repeat(offsets, counts)
    return owner, flat[np.repeat(starts, counts) + within]


def _holds_bools(labels: list[Any] | tuple[Any, ...]) -> bool:
    """Whether a list of numbers holds a bool (one C-level pass over the element types; nested lists
    go through an object array)."""
    kinds = set(map(type, labels))
    if kinds & {list, tuple}:
        return any(isinstance(v, (bool, np.bool_)) for v in np.asarray(labels, dtype=object).ravel().tolist())
    return bool(kinds & {bool, np.bool_})


def _refuse_upside_down(g: nx.DiGraph, roots: list[Any], pre: str) -> None:
    """Refuse a graph with more roots than leaves: a forest has at least one leaf per root, so its edges
    run from children to parents (``from_edges`` given ``(child, parent)`` pairs)."""
    if len(roots) < 2:
        return
    leaves = sum(1 for n in g.nodes if g.out_degree(n) == 0)
    if len(roots) > leaves:
        raise TaxonomyError(
            f"{pre}The taxonomy has {len(roots)} roots ({_names_list(roots, limit=_SHOW)}) and only {leaves} "
            f"lea{'f' if leaves == 1 else 'ves'}: the edges look reversed, each from a child to its parent. "
            "from_edges takes (parent, child) pairs and from_parent_map {child: parent}: reverse them, e.g. "
            "Taxonomy.from_edges([(parent, child) for child, parent in edges])."
        )


def _typo_roots(g: nx.DiGraph, roots: list[Any]) -> str:
    """A hint for roots that look like a misspelt parent name (``'mamal'`` beside ``'mammal'``: a typo in a
    parent name makes a new root), or ``""``. Runs only on the error path, for at most 50 roots.

    The root of the largest part of the graph is taken as the intended one and never flagged; the others
    are compared with the inner nodes and the other roots of about their length, and names that differ only
    in digits (``n0``, ``n10``: systematic names) do not count as typos."""
    if len(roots) > 50:
        return ""
    size = {}
    for part in nx.weakly_connected_components(g):
        for r in roots:
            if r in part:
                size[r] = len(part)
    main = max(roots, key=lambda r: size.get(r, 0))
    names = [str(n) for n in g.nodes if g.out_degree(n) > 0]  # inner nodes and roots: names used as parents
    pairs = []
    for r in roots:
        if r == main:
            continue
        text = str(r)
        near = [n for n in names if n != text and abs(len(n) - len(text)) <= 2]
        for close in difflib.get_close_matches(text, near, n=3, cutoff=0.8):
            if re.sub(r"\d+", "", close) != re.sub(r"\d+", "", text):
                pairs.append(f"{r!r} for {close!r}")
                break
    if not pairs:
        return ""
    return (
        f" Or is it a misspelt parent name ({', '.join(pairs)})? A parent name spelt differently is a new root: "
        "fix the spelling instead."
    )


class Taxonomy:
    """A validated, immutable taxonomy (a rooted tree or DAG) of named nodes.

    Nodes are indexed ``0 .. num_nodes - 1`` in a stable order: by depth (the
    root is index 0), and within a depth in breadth-first order of the input
    (children keep the order in which they were given). For a DAG, the depth
    of a node is its longest distance from the root, so every parent comes
    before its children.

    Build one with a ``from_*`` constructor, or pass a networkx ``DiGraph``
    whose edges point from parent to child.

    Args:
        graph: a directed graph with edges ``parent -> child`` and string nodes.
        root: optional name of the root. If it names the graph's only root,
            nothing changes; if it is a new name, a node of that name is added
            above every root (this joins several roots). Naming a node that has
            parents, or one of several roots, raises.

    Raises:
        TaxonomyError: the graph is empty, has a self-loop or a cycle, has no
            root or several roots (without ``root=``), or has a node name that
            is not a non-empty string.

    Examples:
        >>> tax = Taxonomy.from_paths(["blood/leukemia/ALL", "blood/leukemia/AML", "blood/normal"])
        >>> tax.nodes
        ('blood', 'leukemia', 'normal', 'ALL', 'AML')
        >>> tax.index("AML"), tax.root, tax.leaves
        (4, 'blood', ('normal', 'ALL', 'AML'))
        >>> tax.parent_index.tolist(), tax.depth_index.tolist()
        ([-1, 0, 0, 1, 1], [0, 1, 1, 2, 2])
        >>> tax.lca([3, 3], [4, 2]).tolist()
        [1, 0]
    """

    __slots__ = (
        "_anc_idx",
        "_anc_ptr",
        "_anc_table",
        "_children_idx",
        "_children_ptr",
        "_depth",
        "_desc_idx",
        "_desc_ptr",
        "_euler_depth_nodes",
        "_euler_first",
        "_fingerprint",
        "_frozen",
        "_graph",
        "_height",
        "_index",
        "_is_leaf",
        "_is_tree",
        "_leaf_index",
        "_log2",
        "_nodes",
        "_parent",
        "_parents_idx",
        "_parents_ptr",
        "_sparse",
    )

    # ------------------------------------------------------------------ build
    def __init__(
        self,
        graph: nx.DiGraph,
        *,
        root: str | None = None,
        _order: Sequence[str] | None = None,
        _owned: bool = False,
        _warn_numeric: bool = True,
        _json: str | None = None,
    ) -> None:
        if not isinstance(graph, nx.DiGraph):
            raise TaxonomyError(
                f"graph: expected a networkx.DiGraph with edges parent -> child, got {type(graph).__name__}. "
                "Use Taxonomy.from_edges, from_paths, from_parent_map or from_dict for other inputs."
            )
        if _owned:  # a fresh graph built by a from_* constructor: no need to copy it
            g = graph
        else:  # copy: the caller's graph may change later, and may carry attributes we do not keep
            g = nx.DiGraph()
            g.add_nodes_from(graph.nodes)
            # edges(): (parent, child) pairs, also from a MultiDiGraph (whose .edges iterates with keys):
            # parallel edges are one edge
            g.add_edges_from(graph.edges())
        _validate_names(g.nodes)
        # str subclasses (numpy's np.str_ from an array of names) become plain str: names print, hash,
        # JSON-encode and compare the same whatever built the taxonomy
        odd = {n: str(n) for n in g.nodes if type(n) is not str}
        if odd:
            g = nx.relabel_nodes(g, odd, copy=True)
            if _order is not None:
                _order = [str(n) for n in _order]
        if g.number_of_nodes() == 0:
            joins = (
                f" ({'root' if _json is None else repr('root')}={root!r} names a new root above the input's "
                "top nodes; it does not make a node on its own)"
                if root is not None
                else ""
            )
            raise TaxonomyError(f"The taxonomy is empty: give at least one node (a root){joins}.")
        loops = list(nx.selfloop_edges(g))
        if loops:
            names = ", ".join(repr(a) for a, _ in loops[:5])
            raise TaxonomyError(
                f"Self-loop on {names}: an edge (x, x) would make a node its own parent. Remove it from the input."
            )
        try:  # one topological sort validates acyclicity and orders the depth pass
            topo = list(nx.topological_sort(g))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(g)  # only on failure: slower, but names the cycle
            shown = " -> ".join(repr(u) for u, _ in cycle) + f" -> {cycle[0][0]!r}"
            raise TaxonomyError(
                f"The taxonomy has a cycle: {shown}. A node cannot be its own ancestor; remove one of these edges."
            ) from None
        roots = [n for n in g.nodes if g.in_degree(n) == 0]
        # messages name what the caller wrote: the root= argument, or the "root" key of a JSON taxonomy
        if _json is None:
            pre, named, give, use = "", f"root={root!r}", "Give root='...'", "Pass a new name as root="
        else:
            pre, named = f"{_json}: ", f"{_json}: 'root' = {root!r}"
            give, use = 'Add a key "root": "..." (a new name)', "Use a new name as 'root'"
        if root is not None:
            if not isinstance(root, str) or not root:
                raise TaxonomyError(
                    f"root: expected a non-empty string, got {root!r}."
                    if _json is None
                    else f"{_json}: 'root' must be a non-empty string (the root's name), got {root!r}."
                )
            root = str(root)  # np.str_ -> str, like the node names
            if root in g:
                if g.in_degree(root) != 0:
                    raise TaxonomyError(
                        f"{named} names a node that has parents ({', '.join(map(repr, g.predecessors(root)))}). "
                        "Pass the name of the top node, or a new name to put above all roots."
                    )
                others = [r for r in roots if r != root]
                if others:
                    raise TaxonomyError(
                        f"{named} is one of {len(roots)} roots ({_names_list(roots, limit=_SHOW)}). "
                        f"{use} to join them all under it."
                    )
            else:
                _refuse_upside_down(g, roots, pre)  # a new root above reversed edges would hide them
                g.add_node(root)
                g.add_edges_from((root, r) for r in roots)
                topo.insert(0, root)
                roots = [root]
                if _order is not None:
                    _order = [root, *_order]
        if len(roots) > 1:
            _refuse_upside_down(g, roots, pre)
            raise TaxonomyError(
                f"{pre}The taxonomy has {len(roots)} roots: {_names_list(roots, limit=_SHOW)}. "
                f"{give} to join them under a common root.{_typo_roots(g, roots)}"
            )
        if not roots:  # pragma: no cover - a graph with no source has a cycle, caught above
            raise TaxonomyError("The taxonomy has no root (every node has a parent).")
        self._build(g, roots[0], _order, topo)
        _warn_case_twins(self)
        numeric = [n for n in self.nodes if n.isdecimal()] if _warn_numeric else []
        if numeric:
            # e.g. NCBI taxids: tax.encode([9606]) is the node at *index* 9606, not the node named '9606'
            warnings.warn(
                f"{len(numeric)} node name(s) look like integers (first: {_names_list(numeric[:3])}). Integer "
                "labels are always read as node indices, never as names: give such labels as strings "
                f"(e.g. {numeric[0][:20]!r}, not {numeric[0][:20]}) to encode() and the metrics.",
                UserWarning,
                stacklevel=_user_stacklevel(),  # the user's call, however many from_* layers are in between
            )

    def _build(self, g: nx.DiGraph, root: str, order: Sequence[str] | None, topo: Sequence[str]) -> None:
        # longest-path depth (equal to the tree depth on trees)
        depth_of: dict[str, int] = {}
        pred = g.pred
        for n in topo:
            preds = pred[n]
            depth_of[n] = 1 + max(depth_of[p] for p in preds) if preds else 0
        if order is None:
            # depth by depth: a node goes with its first parent one level up (the one with the smallest
            # index), at its place among that parent's children as given. On a tree this is breadth-first
            # order; on a DAG it also makes a rebuild from the taxonomy's own edges (in index order) a fixpoint.
            # Every node at depth d + 1 has a parent at depth d (longest-path depth), so each level is reached.
            nodes = [root]
            index_of = {root: 0}
            succ = g.succ
            lo = 0
            while lo < len(nodes):
                hi, below = len(nodes), depth_of[nodes[lo]] + 1
                for i in range(lo, hi):  # the level's nodes, in index order
                    for c in succ[nodes[i]]:
                        if depth_of[c] == below and c not in index_of:
                            index_of[c] = len(nodes)
                            nodes.append(c)
                lo = hi
        else:
            nodes = list(order)
            if len(set(nodes)) != len(nodes) or set(nodes) != set(g.nodes):
                dup = sorted(n for n, c in Counter(nodes).items() if c > 1)[:5]
                missing = sorted(set(g.nodes) - set(nodes))[:5]
                raise TaxonomyError(
                    "nodes: the node list must name every node of the edges exactly once "
                    f"(repeated: {dup}, in edges but not listed: {missing})."
                )
            pos = {n: i for i, n in enumerate(nodes)}
            if any(pos[p] > pos[c] for p, c in g.edges):
                raise TaxonomyError("nodes: every parent must come before its children in the node list.")
        index = {n: i for i, n in enumerate(nodes)}
        num = len(nodes)
        edge_pc = np.fromiter(
            (i for p, c in g.edges for i in (index[p], index[c])), dtype=np.int64, count=2 * g.number_of_edges()
        ).reshape(-1, 2)
        by_child = np.lexsort((edge_pc[:, 0], edge_pc[:, 1]))
        parents_idx = edge_pc[by_child, 0]
        parents_ptr = np.zeros(num + 1, dtype=np.int64)
        np.cumsum(np.bincount(edge_pc[:, 1], minlength=num), out=parents_ptr[1:])
        by_parent = np.lexsort((edge_pc[:, 1], edge_pc[:, 0]))
        children_idx = edge_pc[by_parent, 1]
        children_ptr = np.zeros(num + 1, dtype=np.int64)
        np.cumsum(np.bincount(edge_pc[:, 0], minlength=num), out=children_ptr[1:])
        is_tree = bool((np.diff(parents_ptr) <= 1).all())
        depth = np.array([depth_of[n] for n in nodes], dtype=np.int64)
        n_children = np.diff(children_ptr)
        is_leaf = n_children == 0
        if order is not None and np.any(np.diff(depth) < 0):
            raise TaxonomyError(
                "nodes: the node list must be in depth order (the root, then depth 1, then depth 2, ...), "
                "as to_json writes it."
            )
        # heights bottom-up, one vectorised step per depth: edges come grouped by child, hence by child depth
        height = np.zeros(num, dtype=np.int64)
        edge_child = np.repeat(np.arange(num), np.diff(parents_ptr))
        bounds = np.searchsorted(depth[edge_child], np.arange(int(depth.max()) + 2))
        for d in range(len(bounds) - 2, 0, -1):
            lo, hi = bounds[d], bounds[d + 1]
            np.maximum.at(height, parents_idx[lo:hi], height[edge_child[lo:hi]] + 1)

        object.__setattr__(self, "_graph", nx.freeze(g))
        object.__setattr__(self, "_nodes", tuple(nodes))
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_is_tree", is_tree)
        object.__setattr__(self, "_depth", _readonly(depth))
        object.__setattr__(self, "_height", _readonly(height))
        object.__setattr__(self, "_parents_ptr", _readonly(parents_ptr))
        object.__setattr__(self, "_parents_idx", _readonly(parents_idx))
        object.__setattr__(self, "_children_ptr", _readonly(children_ptr))
        object.__setattr__(self, "_children_idx", _readonly(children_idx))
        object.__setattr__(self, "_is_leaf", _readonly(is_leaf))
        object.__setattr__(self, "_leaf_index", _readonly(np.flatnonzero(is_leaf).astype(np.int64)))

        if is_tree:
            parent = np.full(num, -1, dtype=np.int64)
            has = np.diff(parents_ptr) > 0
            parent[has] = parents_idx
            anc_ptr = np.zeros(num + 1, dtype=np.int64)
            np.cumsum(depth + 1, out=anc_ptr[1:])
            # each node's path, root first: walk every node up one level per step, writing the ancestor
            # met at depth d to slot d of the node's row; nodes leave once past the root, so the work is
            # the size of the CSR (sum of depth + 1), with no num_nodes x (max_depth + 1) table
            anc_idx = np.empty(int(anc_ptr[-1]), dtype=np.int64)
            rows = np.arange(num)
            cur = rows
            while len(rows):
                anc_idx[anc_ptr[rows] + depth[cur]] = cur
                cur = parent[cur]
                alive = cur >= 0
                rows, cur = rows[alive], cur[alive]
            object.__setattr__(self, "_parent", _readonly(parent))
            object.__setattr__(self, "_anc_table", None)  # built on first use: see ancestor_table
            self._build_euler(children_ptr, children_idx, depth)
        else:
            anc_sets: list[set[int]] = [set() for _ in range(num)]
            for i in range(num):
                s = {i}
                for p in parents_idx[parents_ptr[i] : parents_ptr[i + 1]]:
                    s |= anc_sets[p]
                anc_sets[i] = s
            # ancestors sorted by index, which is sorted by depth: root first
            anc_ptr, anc_idx = _csr([sorted(s) for s in anc_sets])
            object.__setattr__(self, "_parent", None)
            object.__setattr__(self, "_anc_table", None)
            object.__setattr__(self, "_euler_first", None)
            object.__setattr__(self, "_sparse", None)
            object.__setattr__(self, "_log2", None)
            object.__setattr__(self, "_euler_depth_nodes", None)
        owner = np.repeat(np.arange(num), np.diff(anc_ptr))
        # group (node, ancestor) pairs by ancestor; a stable sort keeps the owners ascending within a group
        order_d = np.argsort(anc_idx, kind="stable")
        desc_counts = np.bincount(anc_idx, minlength=num)
        desc_ptr = np.zeros(num + 1, dtype=np.int64)
        np.cumsum(desc_counts, out=desc_ptr[1:])
        object.__setattr__(self, "_anc_ptr", _readonly(anc_ptr))
        object.__setattr__(self, "_anc_idx", _readonly(anc_idx))
        object.__setattr__(self, "_desc_ptr", _readonly(desc_ptr))
        object.__setattr__(self, "_desc_idx", _readonly(owner[order_d]))
        edges = sorted((index[p], index[c]) for p, c in g.edges)
        # ensure_ascii writes an astral character and its two surrogates typed as code points (which a
        # name may hold: from_folder keeps undecodable bytes as lone surrogates) as the same escapes: a
        # name holding surrogates is hashed as its bytes instead, so the two never share a fingerprint.
        # Every other name hashes as before, so existing fingerprints stay valid.
        hashed = [
            {"surrogates": n.encode("utf-8", "surrogatepass").hex()} if _SURROGATE.search(n) else n for n in nodes
        ]
        payload = json.dumps({"nodes": hashed, "edges": edges}, separators=(",", ":"))
        object.__setattr__(self, "_fingerprint", hashlib.sha256(payload.encode()).hexdigest())
        object.__setattr__(self, "_frozen", True)

    def _build_euler(self, children_ptr: np.ndarray, children_idx: np.ndarray, depth: np.ndarray) -> None:
        num = len(depth)
        euler: list[int] = []
        first = np.zeros(num, dtype=np.int64)
        stack = [(0, 0)]  # (node, next child position)
        cptr = children_ptr.tolist()
        cidx = children_idx.tolist()
        while stack:
            node, k = stack.pop()
            if k == 0:
                first[node] = len(euler)
            euler.append(node)
            if cptr[node] + k < cptr[node + 1]:
                stack.append((node, k + 1))
                stack.append((cidx[cptr[node] + k], 0))
        tour = np.asarray(euler, dtype=np.int64)
        m = len(tour)
        levels = max(1, int(np.floor(np.log2(m))) + 1)
        sparse = np.empty((levels, m), dtype=np.int64)
        sparse[0] = tour
        for k in range(1, levels):
            half = 1 << (k - 1)
            a = sparse[k - 1, : m - half]
            b = sparse[k - 1, half:]
            sparse[k, : m - half] = np.where(depth[a] <= depth[b], a, b)
            sparse[k, m - half :] = sparse[k - 1, m - half :]
        log2 = np.zeros(m + 1, dtype=np.int64)
        log2[2:] = np.floor(np.log2(np.arange(2, m + 1))).astype(np.int64)
        object.__setattr__(self, "_euler_first", _readonly(first))
        object.__setattr__(self, "_sparse", _readonly(sparse))
        object.__setattr__(self, "_log2", _readonly(log2))
        object.__setattr__(self, "_euler_depth_nodes", m)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Taxonomy is immutable: cannot set {name!r}. Build a new one with a from_* constructor.")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Taxonomy is immutable: cannot delete {name!r}.")

    def __copy__(self) -> Taxonomy:
        return self  # immutable: a copy is the same object

    def __deepcopy__(self, memo: dict[int, Any]) -> Taxonomy:
        return self  # immutable; also spares scikit-learn's clone a rebuild per grid point

    def __reduce__(self) -> tuple[Any, ...]:
        edges = [(self._nodes[p], self._nodes[c]) for p, c in self.edges_index().tolist()]
        return (_restore, (list(self._nodes), edges))

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_graph(cls, graph: nx.DiGraph, *, root: str | None = None) -> Taxonomy:
        """Build from a networkx ``DiGraph`` whose edges point from parent to child.

        Examples:
            >>> import networkx as nx
            >>> Taxonomy.from_graph(nx.DiGraph([("r", "a"), ("r", "b")])).leaves
            ('a', 'b')
        """
        return cls(graph, root=root)

    @classmethod
    def from_edges(
        cls, edges: Iterable[tuple[str, str]], *, root: str | None = None, sort: bool = False, dag: bool = True
    ) -> Taxonomy:
        """Build from ``(parent, child)`` pairs. A child with several parents makes a DAG (unless ``dag=False``).

        Siblings keep the order in which the edges name them (nodes are numbered
        depth by depth, breadth-first, see the class), so the node order, and
        with it the :attr:`fingerprint`, follows the order of ``edges``; pass ``sort=True`` when that order is incidental.
        A ``set`` or ``frozenset`` has no order of its own: it is always read
        sorted, as with ``sort=True``.

        Args:
            edges: an iterable of ``(parent, child)`` name pairs: tuples, lists, or the rows of
                a ``(k, 2)`` array of names.
            root: joins several roots under a new root of that name (see the class).
            sort: read the edges in sorted order (siblings by name), so that the same set of
                edges gives the same taxonomy whatever their order.
            dag: accept a child with several parents. ``False`` refuses one, naming it and its
                parents: a tree whose edge list has a typo or a stale row then fails here, not
                later as a DAG that a tree-only rule refuses.

        Raises:
            TaxonomyError: an edge is not a pair of non-empty strings, a child has several parents
                (with ``dag=False``), or the graph is invalid (see the class).

        Examples:
            >>> tax = Taxonomy.from_edges([("root", "a"), ("root", "b"), ("a", "a1")])
            >>> tax.path("a1")
            ('root', 'a', 'a1')
            >>> Taxonomy.from_edges([("r", "b"), ("r", "a")], sort=True).nodes
            ('r', 'a', 'b')
            >>> Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")]).is_tree
            False
        """
        dag, sort = _check_flag("dag", dag), _check_flag("sort", sort)
        return cls(_edges_graph(edges, sort=sort, dag=dag), root=root, _owned=True)

    @classmethod
    def from_parent_map(cls, parents: Mapping[str, str | None], *, root: str | None = None) -> Taxonomy:
        """Build from a ``{child: parent}`` mapping; the root maps to ``None`` or is left out.

        When some node maps to ``None`` (an explicit root), every parent must be
        a key of the mapping or that root.

        Raises:
            TaxonomyError: a key or parent is not a non-empty string, a parent is unknown (with an
                explicit root), or the graph is invalid.

        Examples:
            >>> Taxonomy.from_parent_map({"a": "root", "b": "root", "a1": "a"}).children("root")
            ('a', 'b')
        """
        return cls(_parent_map_graph(parents), root=root, _owned=True)

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any], *, root: str | None = None, dag: bool = False) -> Taxonomy:
        """Build from a nested dict: ``{"root": {"a": {"a1": {}, "a2": None}, "b": ["b1", "b2"]}}``.

        A value is a dict of children, a list of leaf names (or of nested dicts), or
        ``None``/``{}`` for a leaf. A name that appears at two places is ambiguous
        and raises, unless ``dag=True`` (then the node gets both parents).

        Raises:
            TaxonomyError: a name is not a non-empty string (the message says where), a value
                is not a dict, a list or None, a name is ambiguous (without ``dag=True``), or
                the graph is invalid (see the class).

        Examples:
            >>> Taxonomy.from_dict({"root": {"a": ["a1", "a2"], "b": None}}).leaves
            ('b', 'a1', 'a2')
        """
        return cls(_dict_graph(tree, dag=_check_flag("dag", dag)), root=root, _owned=True)

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[Sequence[str] | str],
        *,
        sep: str = "/",
        root: str | None = None,
        dag: bool = False,
        sort: bool = False,
    ) -> Taxonomy:
        """Build from label paths: tuples of names, or strings such as ``"root/a/a1"``.

        Paths may have different lengths, repeat, and need not list every
        prefix; repeats are dropped up front, so one path per sample (a
        dataset's label column) costs little more than its distinct paths. A
        name reached through two different parents is ambiguous and raises,
        unless ``dag=True``. Siblings keep the order in which the paths first
        name them (nodes are numbered depth by depth, breadth-first, see the
        class), so the node order, and with it the
        :attr:`fingerprint` a checkpoint is checked against, follows the order
        of ``paths``; pass ``sort=True`` when that order is incidental, e.g. the
        per-sample labels of a shuffled dataset. A ``set`` or ``frozenset`` has
        no order of its own: it is always read sorted, as with ``sort=True``.

        Args:
            paths: an iterable of paths, each a sequence of names (root first) or a string.
            sep: the separator inside string paths.
            root: joins several top-level names under a new root of that name (see the class).
            dag: accept a name under several parents as one node with several parents.
            sort: read the paths in sorted order (siblings by name), so that the same set of
                paths gives the same taxonomy whatever their order.

        Raises:
            TaxonomyError: an empty path or name, a name that is not a string (bytes included:
                decode them first), a bad ``sep``, an ambiguous name (without ``dag=True``),
                or an invalid graph (see the class).

        Examples:
            >>> Taxonomy.from_paths([("root", "a", "a1"), "root/b"]).nodes
            ('root', 'a', 'b', 'a1')
            >>> labels = ["cell/wbc/lymphocyte", "cell/rbc", "cell/wbc/monocyte", "cell/rbc"]
            >>> Taxonomy.from_paths(labels, sort=True) == Taxonomy.from_paths(labels[::-1], sort=True)
            True
        """
        dag, sort = _check_flag("dag", dag), _check_flag("sort", sort)
        return cls(_paths_graph(paths, sep=sep, dag=dag, sort=sort), root=root, _owned=True)

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str], *, root: str | None = None, dag: bool = False) -> Taxonomy:
        """Build from a folder tree: every sub-folder is a node, nested as on disk.

        Hidden folders (starting with ``.``) and ``__pycache__`` are skipped; files
        are ignored; symlinks to folders are followed. Sibling folders are taken
        in sorted order (by code point, upper case first, on every OS: the same folders give
        the same node order and fingerprint on Linux, macOS and Windows).

        Args:
            path: the top folder; it becomes the root.
            root: the root's name (default: the top folder's name as given, made
                absolute but not through symlinks: a link ``cells -> /data/v2`` gives
                ``'cells'``; ``'.'`` gives the current folder's name).
            dag: accept a folder name that appears under several parents as one node
                with several parents.

        Raises:
            TaxonomyError: ``path`` is not a folder (or has no name and ``root`` is not
                given), ``root`` is not a non-empty string, a folder name appears twice
                (ambiguous), or a symlink points back up the tree.

        Examples:
            >>> import os, tempfile
            >>> top = tempfile.mkdtemp()
            >>> for sub in ("leukemia/ALL", "leukemia/AML", "normal", ".cache"):
            ...     os.makedirs(os.path.join(top, sub))
            >>> Taxonomy.from_folder(top, root="blood").nodes
            ('blood', 'leukemia', 'normal', 'ALL', 'AML')
        """
        if root is not None and (not isinstance(root, str) or not root):
            raise TaxonomyError(
                f"root: expected a non-empty string (the root's name), got {root!r}. "
                "Pass a name, or leave root out to name the root after the folder."
            )
        if not isinstance(path, (str, os.PathLike)):
            raise TaxonomyError(f"path: expected a folder path (str or Path), got {type(path).__name__} {path!r}.")
        given = os.fspath(path)
        if not isinstance(given, str) or not os.path.isdir(given):
            raise TaxonomyError(f"path: {given!r} is not a folder. Pass the top folder of the labelled tree.")
        top = os.path.abspath(given)  # "." and "cells/" -> the folder's own name; symlinks stay as named
        top_name = root if root is not None else os.path.basename(top)
        if not top_name:
            raise TaxonomyError(
                f"path: {given!r} has no folder name to name the root after (a file-system root). "
                "Pass root='...' to name it."
            )

        def walk(folder: str, above: frozenset[str]) -> dict[str, Any]:
            real = os.path.realpath(folder)
            if real in above:  # a symlink back up the tree would recurse forever
                raise TaxonomyError(
                    f"path: {folder!r} links back to its ancestor folder {real!r} (a symlink loop). "
                    "Remove the link or point it outside the tree."
                )
            with os.scandir(folder) as entries:  # DirEntry.is_dir() needs no stat for plain files
                names = [
                    e.name for e in entries if not e.name.startswith(".") and e.name != "__pycache__" and e.is_dir()
                ]
            names.sort()  # by code point on every OS, so the node order and fingerprint do not depend on it
            inner = above | {real}
            return {name: walk(os.path.join(folder, name), inner) for name in names}

        return cls(_dict_graph({top_name: walk(top, frozenset())}, dag=_check_flag("dag", dag)), _owned=True)

    @classmethod
    def from_json(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> Taxonomy:
        """Read a taxonomy written by :meth:`to_json` (exact round trip).

        Hand-written files may instead hold ``{"tree": {nested dict}}`` (with
        ``"dag": true`` for a name under several parents, see :meth:`from_dict`),
        ``{"edges": [[parent, child], ...]}`` or ``{"parents": {child: parent}}``.
        An optional ``"root"`` key means what the ``root=`` argument of the
        ``from_*`` constructors means: the name of the only root, or a new
        name put above several roots to join them; in the ``"nodes"``/
        ``"edges"`` form (what :meth:`to_json` writes) with one root, it must
        name that root (a mismatch raises: the file was damaged or edited).

        Args:
            source: a JSON file's path; or the JSON text itself (what
                :meth:`to_json` returns without a path: a string that starts
                with ``{``), e.g. as stored in a checkpoint; or that text
                already parsed (a ``dict``).

        Raises:
            TaxonomyError: not valid JSON, not a JSON object, not a hiercls taxonomy
                (or a newer format version), a ``"dag"`` that is not ``true``/``false``,
                a ``"root"`` that names a node with parents or one of several roots,
                or an invalid graph (see the class).

        Examples:
            >>> import tempfile, os
            >>> tax = Taxonomy.from_paths(["r/a/x", "r/b"])
            >>> f = os.path.join(tempfile.mkdtemp(), "tax.json")
            >>> tax.to_json(f)
            >>> Taxonomy.from_json(f) == tax
            True
            >>> Taxonomy.from_json(tax.to_json()) == tax  # the text, e.g. from a checkpoint
            True
            >>> Taxonomy.from_json('{"root": "cell", "edges": [["wbc", "lym"], ["rbc", "ret"]]}').children("cell")
            ('wbc', 'rbc')
        """
        if isinstance(source, Mapping):
            data: Any = dict(source)
            where = "the JSON object"
        elif isinstance(source, str) and (
            source.lstrip().startswith("{") or (source.lstrip().startswith("[") and not os.path.exists(source))
        ):
            try:
                data = json.loads(source)
            except json.JSONDecodeError as err:
                raise TaxonomyError(f"the JSON text given is not valid JSON: {err}.") from err
            where = "the JSON text"
        elif isinstance(source, (str, os.PathLike)):
            with open(source, encoding="utf-8-sig") as fh:
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as err:
                    raise TaxonomyError(f"{os.fspath(source)!r} is not valid JSON: {err}.") from err
            where = repr(os.fspath(source))
        else:
            raise TaxonomyError(
                f"source: expected a JSON file's path, the JSON text (as to_json() returns it) or its parsed dict, "
                f"got {type(source).__name__}."
            )
        if not isinstance(data, dict):
            hint = ' For a list of [parent, child] pairs, wrap it: {"edges": [...]}.' if isinstance(data, list) else ""
            raise TaxonomyError(
                f"{where}: expected a JSON object, got {type(data).__name__}: a taxonomy is a {{...}} with the keys "
                f"'nodes' and 'edges' (as to_json writes), or 'tree', 'edges' or 'parents'.{hint}"
            )
        if data.get("format", _FORMAT) != _FORMAT or not isinstance(data.get("version", _VERSION), int):
            raise TaxonomyError(
                f"{where}: 'format'/'version' are {data.get('format')!r}/{data.get('version')!r}, "
                f"expected {_FORMAT!r} and an int; this is not a hiercls taxonomy file."
            )
        if data.get("version", _VERSION) > _VERSION:
            raise TaxonomyError(
                f"{where}: written by a newer hiercls (format version {data['version']}, this one reads "
                f"up to {_VERSION}). Upgrade hiercls."
            )
        root = data.get("root")
        dag = data.get("dag", False)
        if isinstance(dag, int) and not isinstance(dag, bool) and dag in (0, 1):  # written by older tools
            dag = bool(dag)
        if not isinstance(dag, bool):  # bool("false") is True
            raise TaxonomyError(
                f"{where}: 'dag' must be true or false (a JSON boolean), got {dag!r} ({type(dag).__name__}). "
                'Write "dag": true or "dag": false, without quotes around the value.'
            )
        if "nodes" in data and "edges" in data:
            nodes, edges = data["nodes"], data["edges"]
            if not isinstance(nodes, (list, tuple)):
                raise TaxonomyError(f"{where}: 'nodes' must be a list of node names, got {type(nodes).__name__}.")
            _validate_names(nodes, where=f"{where} 'nodes'")
            if not isinstance(edges, (list, tuple)):
                raise TaxonomyError(f"{where}: 'edges' must be a list of [parent, child] pairs.")
            for k, edge in enumerate(edges):
                if not isinstance(edge, (list, tuple)) or len(edge) != 2:  # a parsed dict may hold tuples
                    raise TaxonomyError(f"{where}: edges[{k}] must be a [parent, child] pair, got {edge!r}.")
                _validate_names(edge, where=f"{where} edges[{k}]")
            listed = set(nodes)
            unlisted = sorted({name for edge in edges for name in edge if name not in listed})
            if unlisted:  # else an unlisted parent showed up as a second root, with advice that failed again
                repeated = sorted(n for n, c in Counter(nodes).items() if c > 1)
                also = f" ('nodes' also repeats {_names_list(repeated)})" if repeated else ""
                raise TaxonomyError(
                    f"{where}: edges name {len(unlisted)} node(s) that 'nodes' does not list: "
                    f"{_names_list(unlisted)}{also}. Add them to 'nodes' (in index order, as to_json writes) "
                    "or fix the edges."
                )
            repeated = sorted(n for n, c in Counter(nodes).items() if c > 1)
            if repeated:
                raise TaxonomyError(
                    f"{where}: 'nodes' lists {_names_list(repeated)} more than once; each node must be listed "
                    "once, in index order (as to_json writes). Remove the repeats."
                )
            g = nx.DiGraph()
            g.add_nodes_from(nodes)
            g.add_edges_from(map(tuple, edges))
            tops = [n for n in nodes if isinstance(n, str) and n in g and g.in_degree(n) == 0]
            if isinstance(root, str) and len(tops) == 1 and root != tops[0] and root not in g:
                # to_json's files have one root, which 'root' restates: another name is a damaged or hand-edited
                # file, not a wish for a new root (that would change every node index and the fingerprint)
                raise TaxonomyError(
                    f"{where}: 'root' is {root!r} but the node without parents is {tops[0]!r}; in the nodes and "
                    "edges form (what to_json writes) 'root' restates it. Fix 'root' or drop it; to put a new "
                    "root above, add it to 'nodes' and its edge to 'edges'."
                )
            return cls(g, root=root, _order=nodes, _owned=True, _json=where)
        if "tree" in data:
            g = _dict_graph(data["tree"], dag=dag, prefix=f"{where}: ", dag_fix='add "dag": true')
        elif "edges" in data:
            # as from_edges: a DAG unless the file says "dag": false
            g = _edges_graph(
                data["edges"],
                sort=False,
                dag=dag if "dag" in data else True,
                where=f"{where}: edges",
                dag_fix='write "dag": true',
            )
        elif "parents" in data:
            g = _parent_map_graph(data["parents"], where=f"{where}: parents")
        else:
            raise TaxonomyError(
                f"{where}: expected keys 'nodes' and 'edges' (as written by to_json), or 'tree', "
                f"'edges' or 'parents'; got {sorted(data)}."
            )
        return cls(g, root=root, _owned=True, _json=where)

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """Write the taxonomy as JSON: nodes in index order, then ``[parent, child]`` edges.

        One node or edge per line, so files diff well. :meth:`from_json` reads it
        back to an equal taxonomy (same node indices, same fingerprint). Names
        are written as they are (UTF-8), except lone surrogates (what Python
        makes of undecodable bytes in a file name, e.g. a Latin-1 folder read by
        :meth:`from_folder`), which are written as ``\\uXXXX`` escapes so the
        file stays valid UTF-8.

        The file is written atomically: the text goes to a temporary file in the
        same folder, which then replaces ``path``; if anything fails, an existing
        file at ``path`` is left as it was.

        Args:
            path: the file to write (UTF-8); ``None`` returns the text instead.

        Returns:
            The JSON text when ``path`` is None, else None.

        Raises:
            TaxonomyError: a name holds a surrogate pair (two code points that JSON
                would read back as one character, changing the name).

        Examples:
            >>> print(Taxonomy.from_paths(["r/a"]).to_json())
            {
             "format": "hiercls-taxonomy",
             "version": 1,
             "root": "r",
             "nodes": [
              "r",
              "a"
             ],
             "edges": [
              ["r", "a"]
             ]
            }
        """

        def dump(value: Any) -> str:
            return json.dumps(value, ensure_ascii=False)

        def block(items: list[str]) -> str:
            return "[\n" + ",\n".join("  " + item for item in items) + "\n ]" if items else "[]"

        edges = [dump([self._nodes[p], self._nodes[c]]) for p, c in self.edges_index().tolist()]
        names = [dump(n) for n in self._nodes]
        text = (
            "{\n"
            f' "format": {dump(_FORMAT)},\n'
            f' "version": {_VERSION},\n'
            f' "root": {dump(self.root)},\n'
            f' "nodes": {block(names)},\n'
            f' "edges": {block(edges)}\n'
            "}"
        )
        if _SURROGATE.search(text):  # only inside names: JSON's own syntax is ASCII
            paired = [n for n in self._nodes if _SURROGATE_PAIR.search(n)]
            if paired:
                raise TaxonomyError(
                    f"Node name {paired[0]!r} holds a surrogate pair, which JSON reads back as one character, "
                    "so the file would not round-trip. Join the pair first: "
                    "name.encode('utf-16', 'surrogatepass').decode('utf-16')."
                )
            text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        if path is None:
            return text
        _write_atomic(path, (text + "\n").encode("utf-8"))
        return None

    # ------------------------------------------------------------- properties
    @property
    def num_nodes(self) -> int:
        """Number of nodes, root included."""
        return len(self._nodes)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names in index order (root first, then by depth)."""
        return self._nodes

    @property
    def root(self) -> str:
        """The root's name (index 0)."""
        return self._nodes[0]

    @property
    def leaves(self) -> tuple[str, ...]:
        """Leaf names, in index order."""
        return tuple(self._nodes[i] for i in self._leaf_index)

    @property
    def num_leaves(self) -> int:
        """Number of leaves."""
        return len(self._leaf_index)

    @property
    def leaf_index(self) -> np.ndarray:
        """int64 array ``(num_leaves,)``: the node index of each leaf, ascending."""
        return self._leaf_index

    @property
    def is_leaf_mask(self) -> np.ndarray:
        """bool array ``(num_nodes,)``: True at leaves."""
        return self._is_leaf

    @property
    def is_tree(self) -> bool:
        """True when every node but the root has exactly one parent."""
        return self._is_tree

    @property
    def graph(self) -> nx.DiGraph:
        """The underlying frozen networkx graph (edges parent -> child)."""
        return self._graph

    @property
    def depth_index(self) -> np.ndarray:
        """int64 array ``(num_nodes,)``: the depth of each node (root 0; longest path in a DAG)."""
        return self._depth

    @property
    def height_index(self) -> np.ndarray:
        """int64 array ``(num_nodes,)``: longest distance from each node down to a leaf."""
        return self._height

    @property
    def max_depth(self) -> int:
        """The largest node depth (the root alone: 0)."""
        return int(self._depth.max())

    @property
    def parent_index(self) -> np.ndarray:
        """int64 array ``(num_nodes,)``: each node's parent index, -1 for the root. Trees only.

        Raises:
            TaxonomyError: the taxonomy is a DAG (use ``parents_ptr``/``parents_index``).
        """
        self._require_tree("parent_index", "parents_ptr / parents_index (CSR)")
        return self._parent

    @property
    def parents_ptr(self) -> np.ndarray:
        """CSR row pointers ``(num_nodes + 1,)`` into :attr:`parents_index` (trees and DAGs)."""
        return self._parents_ptr

    @property
    def parents_index(self) -> np.ndarray:
        """CSR values: parents of node ``i`` are ``parents_index[parents_ptr[i]:parents_ptr[i+1]]``."""
        return self._parents_idx

    @property
    def children_ptr(self) -> np.ndarray:
        """CSR row pointers ``(num_nodes + 1,)`` into :attr:`children_index`."""
        return self._children_ptr

    @property
    def children_index(self) -> np.ndarray:
        """CSR values: children of ``i`` (ascending) are ``children_index[children_ptr[i]:children_ptr[i+1]]``.

        In a tree, the children of a node form one sibling group (the softmax
        group of the conditional head).
        """
        return self._children_idx

    @property
    def ancestors_ptr(self) -> np.ndarray:
        """CSR row pointers ``(num_nodes + 1,)`` into :attr:`ancestors_index`."""
        return self._anc_ptr

    @property
    def ancestors_index(self) -> np.ndarray:
        """CSR values: each node's ancestors **and itself**, root first (ascending index)."""
        return self._anc_idx

    @property
    def descendants_ptr(self) -> np.ndarray:
        """CSR row pointers ``(num_nodes + 1,)`` into :attr:`descendants_index`."""
        return self._desc_ptr

    @property
    def descendants_index(self) -> np.ndarray:
        """CSR values: each node's descendants **and itself**, ascending."""
        return self._desc_idx

    @property
    def ancestor_table(self) -> np.ndarray:
        """int64 array ``(num_nodes, max_depth + 1)``: ``[n, d]`` is n's ancestor at depth d, -1 below n. Trees only.

        Row ``n`` is the path of ``n`` from the root, padded with -1.

        Built on first access (then cached, read-only), not at construction: it
        takes ``num_nodes x (max_depth + 1) x 8`` bytes, which is fine for wide,
        shallow trees (iNat21: 16,328 x 8 entries, 1 MiB) but grows with the
        square of the depth for deep, thin ones (a chain of 8,000 nodes: 488 MiB).
        :attr:`ancestors_ptr` / :attr:`ancestors_index` hold the same paths in
        ``sum(depth + 1)`` entries.

        Raises:
            TaxonomyError: the taxonomy is a DAG.

        Examples:
            >>> tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
            >>> tax.ancestor_table.tolist()
            [[0, -1, -1], [0, 1, -1], [0, 2, -1], [0, 1, 3]]
        """
        self._require_tree("ancestor_table", "ancestors_ptr / ancestors_index (CSR)")
        table = self._anc_table
        if table is None:  # a race only builds it twice: both results are equal and read-only
            table = np.full((self.num_nodes, self.max_depth + 1), -1, dtype=np.int64)
            owner = np.repeat(np.arange(self.num_nodes), np.diff(self._anc_ptr))
            table[owner, self._depth[self._anc_idx]] = self._anc_idx
            table = _readonly(table)
            object.__setattr__(self, "_anc_table", table)
        return table

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex digest of the structure (node names in index order and edges).

        Equal fingerprints mean equal taxonomies with equal node indices: a
        checkpoint can store it and refuse a mismatched taxonomy.
        """
        return self._fingerprint

    def levels(self) -> tuple[np.ndarray, ...]:
        """Node indices at each depth: ``levels()[d]`` is an int64 array of the nodes at depth d."""
        bounds = np.searchsorted(self._depth, np.arange(self.max_depth + 2))
        return tuple(np.arange(bounds[d], bounds[d + 1], dtype=np.int64) for d in range(self.max_depth + 1))

    def edges_index(self) -> np.ndarray:
        """int64 array ``(num_edges, 2)`` of (parent, child) index pairs, sorted by child then parent."""
        child = np.repeat(np.arange(self.num_nodes), np.diff(self._parents_ptr))
        return np.stack([self._parents_idx, child], axis=1)

    #: the index arrays :meth:`as_tensor` gives
    TENSOR_ARRAYS = (
        "parent_index",
        "depth_index",
        "height_index",
        "leaf_index",
        "is_leaf_mask",
        "children_ptr",
        "children_index",
        "parents_ptr",
        "parents_index",
        "ancestors_ptr",
        "ancestors_index",
        "descendants_ptr",
        "descendants_index",
        "ancestor_table",
    )

    def as_tensor(self, name: str, device: Any = None) -> Any:
        """One of the index arrays as a torch tensor on ``device``, for indexing batches of labels.

        ``torch.as_tensor(tax.parent_index)`` warns that the array is not writable (the taxonomy's
        arrays are read-only, so that no one changes them under it); this copies once, with no warning,
        and the tensor is the caller's to change.

        Args:
            name: one of :attr:`TENSOR_ARRAYS` (``"parent_index"``, ``"depth_index"``,
                ``"is_leaf_mask"``, ``"ancestor_table"``...).
            device: where the tensor goes (default: the CPU).

        Returns:
            an int64 tensor (bool for ``is_leaf_mask``).

        Raises:
            ValueError: ``name`` is not one of :attr:`TENSOR_ARRAYS`.
            TaxonomyError: ``parent_index`` or ``ancestor_table`` of a DAG.

        Examples:
            >>> import torch
            >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
            >>> y = torch.tensor(tax.encode(["a1", "b", "a2"]))
            >>> tax.as_tensor("parent_index")[y].tolist()  # one level up: partial labels
            [1, 0, 1]
            >>> tax.as_tensor("ancestor_table")[y, 1].tolist()  # each label cut back to depth 1
            [1, 2, 1]
            >>> (~tax.as_tensor("is_leaf_mask")[torch.tensor([1, 3])]).tolist()  # stopped at an inner node?
            [True, False]
        """
        import torch

        if name not in self.TENSOR_ARRAYS:
            starts = sorted(  # "ancestors": the index array rather than its row pointers
                (n for n in self.TENSOR_ARRAYS if isinstance(name, str) and name and n.startswith(name)),
                key=lambda n: not n.endswith(("_index", "_mask", "_table")),
            )
            close = starts[:1] or difflib.get_close_matches(str(name), self.TENSOR_ARRAYS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"name: expected one of {', '.join(map(repr, self.TENSOR_ARRAYS))}, got {name!r}.{hint}")
        return torch.from_numpy(np.array(getattr(self, name))).to(device)

    # ---------------------------------------------------------------- queries
    def index(self, node: NodeLike) -> int:
        """The index of a node given by name (or an index, checked and returned).

        An index may be a Python or NumPy integer, or a 0-d or one-element 1-D integer tensor or
        array (``tax.name(pred[0])``).

        Raises:
            UnknownNodeError: the name is not in the taxonomy (the closest names are suggested),
                or the index is out of range.

        Examples:
            >>> tax = Taxonomy.from_paths(["root/ALL", "root/AML"])
            >>> tax.index("AML")
            2
        """
        if isinstance(node, str):
            try:
                return self._index[node]
            except KeyError:
                raise UnknownNodeError(self._unknown_message([node])) from None
        if _is_scalar_integer_array(node):  # tax.name(preds[0]) with a tensor or an array of predictions
            node = node.item()
        if isinstance(node, (int, np.integer)) and not isinstance(node, bool):
            i = int(node)
            if 0 <= i < self.num_nodes:
                return i
            raise UnknownNodeError(
                f"Node index {i} is out of range: this taxonomy has {self.num_nodes} nodes (0..{self.num_nodes - 1})."
            )
        raise UnknownNodeError(
            f"node: expected a node name (str) or index (int), got {node!r} ({type(node).__name__})."
        )

    def name(self, index: int) -> str:
        """The name of the node at ``index``."""
        return self._nodes[self.index(index)]

    def __contains__(self, node: object) -> bool:
        if isinstance(node, str):
            return node in self._index
        if _is_scalar_integer_array(node):
            node = node.item()  # type: ignore[attr-defined]
        if isinstance(node, (int, np.integer)) and not isinstance(node, bool):
            return 0 <= int(node) < self.num_nodes
        return False

    def __len__(self) -> int:
        return self.num_nodes

    def __iter__(self):
        return iter(self._nodes)

    def parents(self, node: NodeLike) -> tuple[str, ...]:
        """Names of the node's parents (empty for the root; several in a DAG)."""
        i = self.index(node)
        return tuple(self._nodes[j] for j in self._parents_idx[self._parents_ptr[i] : self._parents_ptr[i + 1]])

    def parent(self, node: NodeLike) -> str | None:
        """Name of the node's parent, ``None`` for the root. Trees only."""
        self._require_tree("parent", "parents()")
        p = self._parent[self.index(node)]
        return None if p < 0 else self._nodes[p]

    def children(self, node: NodeLike) -> tuple[str, ...]:
        """Names of the node's children, in index order."""
        i = self.index(node)
        return tuple(self._nodes[j] for j in self._children_idx[self._children_ptr[i] : self._children_ptr[i + 1]])

    def ancestors(self, node: NodeLike, *, include_self: bool = False) -> tuple[str, ...]:
        """Names of the node's ancestors, root first (all of them, in a DAG)."""
        i = self.index(node)
        idx = self._anc_idx[self._anc_ptr[i] : self._anc_ptr[i + 1]]
        return tuple(self._nodes[j] for j in idx if include_self or j != i)

    def descendants(self, node: NodeLike, *, include_self: bool = False) -> tuple[str, ...]:
        """Names of the node's descendants, in index order."""
        i = self.index(node)
        idx = self._desc_idx[self._desc_ptr[i] : self._desc_ptr[i + 1]]
        return tuple(self._nodes[j] for j in idx if include_self or j != i)

    def siblings(self, node: NodeLike) -> tuple[str, ...]:
        """Names of the other children of the node's parent(s)."""
        i = self.index(node)
        out: dict[str, None] = {}
        for p in self.parents(i):
            for c in self.children(p):
                if c != self._nodes[i]:
                    out[c] = None
        return tuple(out)

    def depth(self, node: NodeLike) -> int:
        """Depth of a node (the root has depth 0)."""
        return int(self._depth[self.index(node)])

    def height(self, node: NodeLike | None = None) -> int:
        """Longest distance from ``node`` (default: the root) down to a leaf."""
        return int(self._height[0 if node is None else self.index(node)])

    def is_leaf(self, node: NodeLike) -> bool:
        """True if the node has no children."""
        return bool(self._is_leaf[self.index(node)])

    def path(self, node: NodeLike) -> tuple[str, ...]:
        """Names from the root down to the node, inclusive. Trees only (see :meth:`paths`).

        Examples:
            >>> Taxonomy.from_paths(["blood/leukemia/ALL"]).path("ALL")
            ('blood', 'leukemia', 'ALL')
        """
        self._require_tree("path", "paths()")
        return self.ancestors(node, include_self=True)

    def paths(self, node: NodeLike) -> list[tuple[str, ...]]:
        """Every root-to-node path (one for a tree, possibly several in a DAG)."""
        i = self.index(node)
        ptr, idx = self._parents_ptr, self._parents_idx
        memo: dict[int, list[tuple[str, ...]]] = {0: [(self.root,)]}
        stack = [i]  # memoised depth first over the ancestors, without recursion (deep chains)
        while stack:
            a = stack[-1]
            if a in memo:
                stack.pop()
                continue
            parents = [int(p) for p in idx[ptr[a] : ptr[a + 1]]]
            missing = [p for p in parents if p not in memo]
            if missing:
                stack.extend(missing)
                continue
            memo[a] = [prefix + (self._nodes[a],) for p in parents for prefix in memo[p]]
            stack.pop()
        return memo[i]

    def lca(self, a: LabelsLike, b: LabelsLike) -> np.ndarray | int:
        """Lowest common ancestors of node pairs, vectorised, O(1) per pair. Trees only.

        Uses an Euler tour with a sparse table of minimum-depth nodes built at
        construction (O(num_nodes log num_nodes) memory).

        Args:
            a: node names or indices, any shape.
            b: node names or indices, broadcastable with ``a``.

        Returns:
            int64 array of LCA node indices (a plain ``int`` for two scalars).

        Raises:
            TaxonomyError: the taxonomy is a DAG.
            UnknownNodeError: a node is not in the taxonomy.
            ValueError: the shapes of ``a`` and ``b`` do not broadcast.

        Examples:
            >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
            >>> tax.lca("a1", "a2") == tax.index("a")
            True
            >>> tax.lca([3, 3], [4, 2]).tolist()
            [1, 0]
        """
        self._require_tree("lca", "ancestors() for the set of common ancestors")
        scalar = np.ndim(a) == 0 and np.ndim(b) == 0
        ia, ib = self.encode(a), self.encode(b)
        try:
            ia, ib = np.broadcast_arrays(ia, ib)
        except ValueError:
            raise ValueError(
                f"a, b: shapes {ia.shape} and {ib.shape} do not broadcast; pass node arrays of the same shape."
            ) from None
        out = self._lca_unchecked(ia, ib)
        return int(out) if scalar else out

    def _lca_unchecked(self, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        fa = self._euler_first[ia]
        fb = self._euler_first[ib]
        lo = np.minimum(fa, fb)
        hi = np.maximum(fa, fb)
        k = self._log2[hi - lo + 1]
        x = self._sparse[k, lo]
        y = self._sparse[k, hi - (1 << k) + 1]
        return np.where(self._depth[x] <= self._depth[y], x, y)

    # --------------------------------------------------------------- encoding
    def encode(self, labels: LabelsLike) -> np.ndarray:
        """Node names or indices (any node, inner nodes included) -> int64 node indices.

        Accepts a name, an index, a sequence (names and indices may be mixed), a
        numpy array or a torch tensor; the output has the input's shape. An int64
        numpy array of valid indices is returned as is (no copy). Integers are
        always indices: a node named ``"9606"`` is encoded from the string
        ``"9606"``, never from the int ``9606`` (building such a taxonomy warns).

        Raises:
            UnknownNodeError: some names are unknown or indices out of range (the
                message counts them and shows the first few), or ``labels`` is a
                set or an iterator (pass a list), or holds booleans or floats.
            ValueError: ``labels`` is a ragged nested list (rows of different lengths).

        Examples:
            >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML"])
            >>> tax.encode(["ALL", "acute", 3]).tolist()
            [2, 1, 3]
        """
        if hasattr(labels, "detach") and hasattr(labels, "cpu"):  # torch tensor, without importing torch
            labels = labels.detach().cpu().numpy()
        if not isinstance(labels, (np.ndarray, list, tuple, str)):
            _refuse_unordered(labels)
        if isinstance(labels, (list, tuple)) and labels and isinstance(labels[0], str):
            arr = np.asarray(labels, dtype=object)  # skip numpy's fixed-width string copy
        else:
            try:
                arr = np.asarray(labels)
            except OverflowError:  # e.g. -2**70: no int64 holds it, so no node has that index
                raise UnknownNodeError(self._out_of_range_message(labels)) from None
            except ValueError as err:  # ragged nested lists
                raise ValueError(
                    "labels: nested lists of different lengths (a ragged list) do not make an array. "
                    "Give a flat list of labels, or rows of equal length (pad or flatten them first)."
                ) from err
            if arr.dtype.kind in "US" and not isinstance(labels, (np.ndarray, str)):
                # numpy turns a mixed list such as [3, "a"] into strings ("3"): look at the objects instead
                arr = np.asarray(labels, dtype=object)
            elif (  # numpy turns [3, True] into [3, 1]: a boolean would silently become node 1
                arr.dtype.kind in "iu" and isinstance(labels, (list, tuple)) and _holds_bools(labels)
            ):
                raise UnknownNodeError(
                    "labels: got booleans among the node indices (numpy would read True as node 1); "
                    "give node names or integer node indices."
                )
        if arr.dtype == object:
            flat = arr.ravel()
            kinds = {type(v) for v in flat}
            if all(issubclass(t, str) for t in kinds):
                return self._encode_names(flat.tolist(), arr.shape)
            if all(issubclass(t, (int, np.integer)) and not issubclass(t, bool) for t in kinds):
                try:
                    arr = flat.astype(np.int64).reshape(arr.shape)
                except OverflowError:
                    raise UnknownNodeError(self._out_of_range_message(flat.tolist())) from None
            else:
                self._refuse_mixed(flat, arr.shape)
                out = np.fromiter((self.index(v) for v in flat), dtype=np.int64, count=flat.size)
                return out.reshape(arr.shape)
        if arr.dtype.kind in "US":
            return self._encode_names((arr.astype(str) if arr.dtype.kind == "S" else arr).ravel().tolist(), arr.shape)
        if arr.dtype.kind in "iu":
            # one min/max pass on the hot path; the mask is built only to report an error
            if arr.size and (arr.min() < 0 or arr.max() >= self.num_nodes):
                bad = (arr < 0) | (arr >= self.num_nodes)
                vals = np.unique(arr[bad])[:5].tolist()
                raise UnknownNodeError(
                    f"{int(bad.sum())} node indices out of range [0, {self.num_nodes}): first {vals}. "
                    "Indices must come from this taxonomy's encode()."
                )
            return arr.astype(np.int64, copy=False)
        if arr.dtype.kind == "b":
            raise UnknownNodeError("labels: got booleans; expected node names or node indices.")
        if arr.size == 0:
            return arr.astype(np.int64)
        hint = ""
        if arr.dtype.kind == "f":
            known = arr[~np.isnan(arr)]
            if known.size and np.isfinite(known).all() and (known == np.round(known)).all():
                # a label tensor made float (torch.tensor([3., 4.])), or a pandas column with a NaN in it
                missing = " and drop the missing labels (NaN) first" if known.size < arr.size else ""
                hint = (
                    " These floats are whole numbers: cast them to integer node indices (y.long() in torch, "
                    f"y.astype(int) in numpy){missing}."
                )
        if arr.dtype.kind in "fc" and not hint:
            hint = (
                " Float values look like probabilities or scores: decode them into nodes first "
                "(hiercls.decoding.decode(probs, taxonomy))."
            )
        raise UnknownNodeError(f"labels: expected node names or integer node indices, got dtype {arr.dtype}.{hint}")

    def _refuse_mixed(self, flat: np.ndarray, shape: tuple[int, ...]) -> None:
        """Name the first label of a mixed object array that is neither a name nor an index, by position
        (a missing label, None or NaN as pandas gives it, said as such); only on the way to an error."""
        for i, value in enumerate(flat.tolist()):
            at = ", ".join(str(int(j)) for j in np.unravel_index(i, shape)) if len(shape) > 1 else str(i)
            if isinstance(value, str) or (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
                continue
            if _is_scalar_integer_array(value):
                continue  # read by index() as the index it holds
            if value is None or (isinstance(value, float) and value != value):
                raise UnknownNodeError(
                    f"labels[{at}]: got {value!r}, a missing label. For a sample with no label give the root "
                    f"({self.root!r}, index 0), which teaches no decision, or leave the sample out; e.g. "
                    f"[x if isinstance(x, str) else {self.root!r} for x in labels]."
                )
            raise UnknownNodeError(
                f"labels[{at}]: expected a node name (str) or index (int), got {value!r} ({type(value).__name__})."
            )

    def _out_of_range_message(self, labels: Any) -> str:
        """The message for integer labels that no int64 holds (only built on that error)."""
        flat = np.asarray(labels, dtype=object).ravel().tolist()
        bad = [v for v in flat if isinstance(v, (int, np.integer)) and not 0 <= v < self.num_nodes]
        return (
            f"labels: {len(bad)} node indices out of range [0, {self.num_nodes}): first {bad[:_SHOW]}. "
            "Indices must come from this taxonomy's encode()."
        )

    def _encode_names(self, names: list[str], shape: tuple[int, ...]) -> np.ndarray:
        try:  # one dict lookup per name: O(n), no sort
            out = np.fromiter(map(self._index.__getitem__, names), dtype=np.int64, count=len(names))
        except KeyError:
            missing = [str(n) for n in dict.fromkeys(n for n in names if n not in self._index)]
            raise UnknownNodeError(self._unknown_message(missing)) from None
        return out.reshape(shape)

    def names(self, indices: LabelsLike) -> list[str]:
        """Node indices -> node names (a flat list).

        Examples:
            >>> Taxonomy.from_paths(["r/a", "r/b"]).names([2, 0])
            ['b', 'r']
        """
        idx = self.encode(indices).ravel()
        return [self._nodes[i] for i in idx.tolist()]

    def multi_hot(self, labels: LabelsLike) -> np.ndarray:
        """Multi-hot ancestor targets: bool ``(B, num_nodes)``, True on each label's node and all its ancestors.

        Examples:
            >>> tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
            >>> tax.multi_hot(["a1", "b"]).astype(int).tolist()
            [[1, 1, 0, 1], [1, 0, 1, 0]]
        """
        idx = self.encode(labels).ravel()
        out = np.zeros((len(idx), self.num_nodes), dtype=bool)
        rows, cols = _gather_csr(self._anc_ptr, self._anc_idx, idx)
        out[rows, cols] = True
        return out

    def known_mask(self, labels: LabelsLike) -> np.ndarray:
        """Which nodes a label says something about: bool ``(B, num_nodes)``.

        True on the label's path (positives) and outside its subtree
        (negatives); False strictly below the label, where a partial label
        (a sample labelled at an inner node) says nothing. In a DAG, also False
        at the other ancestors of those nodes (a node that shares a descendant
        with the label is positive if the truth is that descendant). For leaf
        labels the row is all True. Losses use it to mask undetermined nodes.

        Examples:
            >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
            >>> tax.known_mask(["a"]).astype(int).tolist()
            [[1, 1, 1, 0, 0]]
        """
        idx = self.encode(labels).ravel()
        if not self._is_tree and len(idx):
            # one row per distinct label: the DAG rows cost (descendants x their ancestors)
            uniq, inverse = np.unique(idx, return_inverse=True)
            if len(uniq) < len(idx):
                return self._known_rows(uniq)[inverse]
        return self._known_rows(idx)

    def _known_rows(self, idx: np.ndarray) -> np.ndarray:
        out = np.ones((len(idx), self.num_nodes), dtype=bool)
        rows, cols = _gather_csr(self._desc_ptr, self._desc_idx, idx)
        keep = cols != idx[rows]
        rows, cols = rows[keep], cols[keep]
        out[rows, cols] = False
        if not self._is_tree and len(rows):  # the other ancestors of what lies below the label
            up_rows, up = _gather_csr(self._anc_ptr, self._anc_idx, cols)
            out[rows[up_rows], up] = False
            own_rows, own = _gather_csr(self._anc_ptr, self._anc_idx, idx)
            out[own_rows, own] = True  # the label's own path stays known (positive)
        return out

    # ------------------------------------------------------------ comparisons
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Taxonomy) and other._fingerprint == self._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __repr__(self) -> str:
        kind = "tree" if self._is_tree else "DAG"
        return (
            f"Taxonomy({kind}, num_nodes={self.num_nodes}, num_leaves={self.num_leaves}, "
            f"max_depth={self.max_depth}, root={self.root!r}, fingerprint={self._fingerprint[:12]!r})"
        )

    def __str__(self) -> str:
        lines = [repr(self)]
        limit = _REPR_LINES
        shown = 0
        stack: list[tuple[int, str, str]] = [(0, "", "")]
        cptr, cidx = self._children_ptr, self._children_idx
        multi = np.diff(self._parents_ptr) > 1
        while stack and shown < limit:
            node, prefix, branch = stack.pop()
            mark = " *" if multi[node] else ""
            lines.append(f"{prefix}{branch}{self._nodes[node]}{mark}")
            shown += 1
            kids = cidx[cptr[node] : cptr[node + 1]].tolist()
            child_prefix = prefix + ("" if not branch else ("    " if branch.startswith("└") else "│   "))
            for k, c in reversed(list(enumerate(kids))):
                stack.append((c, child_prefix, "└── " if k == len(kids) - 1 else "├── "))
        if stack:
            more = f"{self.num_nodes - shown} more nodes" if self._is_tree else "more nodes"
            lines.append(f"... ({more} not shown)")
        if not self._is_tree:
            lines.append("(* = node with several parents, shown under each)")
        return "\n".join(lines)

    # ---------------------------------------------------------------- helpers
    def _require_tree(self, what: str, instead: str) -> None:
        if not self._is_tree:
            several = [self._nodes[i] for i in np.flatnonzero(np.diff(self._parents_ptr) > 1)[:3]]
            raise TaxonomyError(
                f"{what} needs a tree, but this taxonomy is a DAG (nodes with several parents, e.g. {_names_list(several)}). "
                f"Use {instead} instead."
            )

    def _unknown_message(self, missing: Sequence[str]) -> str:
        first = missing[0]
        close = difflib.get_close_matches(str(first), self._nodes, n=3, cutoff=0.6)
        # spelt the same but for case or surrounding blanks ('all' for 'ALL'): difflib scores those low
        folded = str(first).strip().casefold()
        same = [n for n in self._nodes if n.casefold() == folded]
        close = [*same, *(n for n in close if n not in same)][:3]
        hint = f" Closest known names: {_names_list(close)}." if close else ""
        for sep in ("/", ".", ">", "|", ":"):  # a label path ("blood/leukemia/ALL") rather than a node name
            parts = str(first).split(sep)
            if len(parts) > 1 and parts[-1] in self._index:
                hint = (
                    f" {first!r} looks like a path of names separated by {sep!r}; encode takes node names: "
                    f"pass its last name ({parts[-1]!r}), e.g. tax.encode([p.split({sep!r})[-1] for p in paths])."
                )
                break
        many = (
            f"{len(missing)} unknown node names, first {_names_list(missing[:5])}"
            if len(missing) > 1
            else f"Unknown node {first!r}"
        )
        return f"{many}: not in this taxonomy ({self.num_nodes} nodes, root {self.root!r}).{hint}"


def _refuse_unordered(labels: Any) -> None:
    """Sets and one-shot iterators are not label arrays: say so, naming ``labels``."""
    if isinstance(labels, AbstractSet):
        raise UnknownNodeError(
            f"labels: got a {type(labels).__name__}, which has no order: the encoded labels would line up with "
            "nothing. Pass a list, e.g. list(labels), or sorted(labels) for a fixed order."
        )
    if isinstance(labels, (Iterator, MappingView)):
        raise UnknownNodeError(
            f"labels: got a {type(labels).__name__}, not a sequence or an array. Pass a list, e.g. list(labels)."
        )


def _edges_graph(
    edges: Iterable[Any], *, sort: bool, dag: bool = True, where: str = "edges", dag_fix: str = "pass dag=True"
) -> nx.DiGraph:
    """The graph of ``(parent, child)`` pairs, validated (``Taxonomy.from_edges``)."""
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
        raise TaxonomyError(
            f"{where}: expected an iterable of (parent, child) pairs, got {type(edges).__name__} {edges!r:.80}."
        )
    unordered = isinstance(edges, (set, frozenset))  # no order of its own: read it sorted
    pairs = list(edges)  # a (k, 2) numpy array of names gives k rows
    for k, edge in enumerate(pairs):
        if isinstance(edge, (str, bytes)) or not isinstance(edge, (tuple, list, np.ndarray)) or len(edge) != 2:
            raise TaxonomyError(f"{where}[{k}]: expected a (parent, child) pair, got {edge!r}.")
        _validate_names(edge, where=f"{where}[{k}]")
        pairs[k] = tuple(edge)
    first_row: dict[tuple[str, str], int] = {}  # where each edge first came, for the dag=False message
    pairs_in = list(pairs)
    if not dag:
        for k, edge in enumerate(pairs):
            first_row.setdefault(edge, k)
    if sort or unordered:
        pairs.sort()
    g = nx.DiGraph()
    g.add_edges_from(pairs)
    if not dag:
        several = [n for n, d in g.in_degree() if d > 1]
        if several:
            child = str(several[0])  # a plain str: names from a numpy array print as np.str_('x') otherwise
            rows = sorted(k for (p, c), k in first_row.items() if c == child)
            ref = "" if unordered else f" ({where}[{{}}])"  # a set has no positions to point at
            parents = ", ".join(f"{str(pairs_in[k][0])!r}{ref.format(k)}" for k in rows[:4])
            raise TaxonomyError(
                f"{where}: expected a tree (dag=False), but {child!r} has {len(rows)} parents: {parents}"
                f"{', ...' if len(rows) > 4 else ''}"
                f"{f' ({len(several)} such children)' if len(several) > 1 else ''}. "
                f"Remove the wrong edge, or {dag_fix} if it is one node with several parents."
            )
    return g


def _parent_map_graph(parents: Mapping[Any, Any], *, where: str = "parents") -> nx.DiGraph:
    """The graph of a ``{child: parent}`` mapping, validated (``Taxonomy.from_parent_map``)."""
    if not isinstance(parents, Mapping):
        raise TaxonomyError(f"{where}: expected a mapping {{child: parent}}, got {type(parents).__name__}.")
    for child, parent in parents.items():
        _validate_names([child], where=f"{where}: the key with parent {parent!r}")
        if parent is None:
            continue
        if isinstance(parent, str):
            _validate_names([parent], where=f"{where}[{child!r}]")
            continue
        fix = (
            " The mapping goes child -> parent; for {parent: [children]} use Taxonomy.from_dict, "
            "e.g. Taxonomy.from_dict({'root': {'a': ['a1', 'a2']}})."
            if isinstance(parent, (list, tuple, set, Mapping))
            else ""
        )
        raise TaxonomyError(
            f"{where}[{child!r}]: expected the name of the parent of {child!r} (a str, or None for the root), "
            f"got {type(parent).__name__} {parent!r}.{fix}"
        )
    explicit = [c for c, p in parents.items() if p is None]
    g = nx.DiGraph()
    g.add_nodes_from(parents.keys())
    for child, parent in parents.items():
        if parent is None:
            continue
        if explicit and parent not in parents:
            close = difflib.get_close_matches(str(parent), [str(k) for k in parents], n=3)
            hint = f" Did you mean {_names_list(close)}?" if close else ""
            raise TaxonomyError(
                f"Unknown parent {parent!r} of {child!r}: it is not a node of the mapping.{hint} "
                f"Add it as a key (with its own parent) or fix the name."
            )
        g.add_edge(parent, child)
    return g


def _dict_graph(tree: Mapping[Any, Any], *, dag: bool, prefix: str = "", dag_fix: str = "pass dag=True") -> nx.DiGraph:
    """The graph of a nested dict, validated (``Taxonomy.from_dict``); ``prefix`` starts each message."""
    if not isinstance(tree, Mapping):
        raise TaxonomyError(f"{prefix}tree: expected a nested dict, got {type(tree).__name__}.")
    g = nx.DiGraph()
    seen_at: dict[str, str] = {}

    def items_of(value: Any, at: str) -> list[tuple[Any, Any]]:
        if isinstance(value, Mapping):
            return list(value.items())
        if isinstance(value, (list, tuple)):
            items: list[tuple[Any, Any]] = []
            for v in value:
                if isinstance(v, Mapping):
                    items.extend(v.items())
                else:
                    items.append((v, None))
            return items
        raise TaxonomyError(f"{prefix}tree{at}: expected a dict, a list or None, got {value!r}.")

    # depth first with an explicit stack (no recursion limit on deep trees), nodes met in preorder
    stack: list[tuple[str | None, str, Any]] = [(None, "", iter(items_of(tree, "")))]
    while stack:
        parent, at, todo = stack[-1]
        item = next(todo, None)
        if item is None:
            stack.pop()
            continue
        name, sub = item
        _validate_names([name], where=f"{prefix}tree{at}")  # where the name sits: under its parent's path
        here = f"{at}[{name!r}]"
        if name in seen_at and not dag:
            raise TaxonomyError(
                f"{prefix}Duplicate name {name!r} at tree{seen_at[name]} and tree{here}: ambiguous. "
                f"Rename one of them, or {dag_fix} if it is one node with two parents."
            )
        seen_at.setdefault(name, here)
        g.add_node(name)
        if parent is not None:
            g.add_edge(parent, name)
        if sub is not None:
            stack.append((name, here, iter(items_of(sub, here))))
    return g


def _path_key(path: Any) -> Any:
    """A hashable stand-in for a path, equal for equal paths (lists and 1-d arrays become tuples)."""
    if isinstance(path, list) or (isinstance(path, np.ndarray) and path.ndim == 1):
        return tuple(path)
    return path


def _check_flag(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy's bools too): a string such as ``"false"`` would read as true."""
    if not isinstance(value, (bool, np.bool_)):
        raise TaxonomyError(f"{name}: expected True or False, got {type(value).__name__} {value!r}.")
    return bool(value)


#: set by callers whose names are opaque labels, kept as given (the scikit-learn estimators' y): names with
#: blanks at an end are then taken, not refused as a typo
_PADDED_NAMES_OK: contextvars.ContextVar[bool] = contextvars.ContextVar("padded_names_ok", default=False)


def _paths_graph(paths: Iterable[Any], *, sep: str, dag: bool, sort: bool) -> nx.DiGraph:
    """The graph of label paths, validated (``Taxonomy.from_paths``)."""
    if not isinstance(sep, str) or not sep:
        raise TaxonomyError(f"sep: expected a non-empty string separator such as '/', got {sep!r}.")
    if isinstance(paths, str):
        raise TaxonomyError(f"paths: expected a list of paths, got the single string {paths!r}; wrap it in a list.")
    if isinstance(paths, Mapping) or hasattr(paths, "columns"):  # a dict or a DataFrame iterates over its keys
        keys = list(paths.columns if hasattr(paths, "columns") else paths.keys())
        raise TaxonomyError(
            f"paths: expected a list of paths, got a {type(paths).__name__} (keys {_names_list(keys[:5])}), which "
            "would be read as its keys, not its values. Pass the column of paths, e.g. paths=df['path'], or "
            "Taxonomy.from_dict / from_parent_map for a nested dict or a {child: parent} mapping."
        )
    if isinstance(paths, (set, frozenset)):  # no order of its own: read it sorted
        sort = True
    items = paths if isinstance(paths, list) else list(paths)
    # One path per sample is the common case: keep the first of each distinct path (C-level dict
    # building), in first-seen order and with its index for messages; the graph comes out the same.
    keys = items if set(map(type, items)) <= {str, tuple} else list(map(_path_key, items))
    try:  # reversed, so that the first index of each path is the one that stays
        first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1)))
    except TypeError:  # an unhashable path (say a list holding a list): validation below names it
        order: Iterable[int] = range(len(items))
    else:
        order = sorted(first.values())
    split: list[tuple[int, list[Any]]] = []
    for k in order:
        path = items[k]
        if isinstance(path, (bytes, bytearray)):
            raise TaxonomyError(
                f"paths[{k}]: got bytes {path!r}; node names must be str, bytes are not accepted. "
                "Decode them first, e.g. [p.decode('utf-8') for p in paths]."
            )
        if isinstance(path, str):
            parts = path.split(sep)
            if len(parts) > 1 and "" in parts:  # an empty name between separators: say where it came from
                if "" in parts[1:-1]:  # named first: stripping the ends would not fix it
                    what = f"holds the separator {sep!r} twice in a row"
                    fix = "remove the doubled separator"
                else:
                    what = f"{'starts' if parts[0] == '' else 'ends'} with the separator {sep!r}"
                    fix = f"strip it (e.g. [p.removeprefix({sep!r}).removesuffix({sep!r}) for p in paths])"
                # str(): a numpy string (np.unique of labels) would print as np.str_('...')
                raise TaxonomyError(f"paths[{k}]: {str(path)!r} {what}, which makes an empty node name: {fix}.")
        elif isinstance(path, (Sequence, np.ndarray)):
            parts = [str(p) if isinstance(p, str) else p for p in path]  # np.str_ -> str
        else:
            raise TaxonomyError(
                f"paths[{k}]: expected a tuple of node names or a {sep.join('abc')!r} string, got {path!r}."
            )
        if not parts:
            raise TaxonomyError(f"paths[{k}]: empty path. Each path names at least one node.")
        _validate_names(parts, where=f"paths[{k}]")
        padded = next((p for p in parts if p != p.strip()), None) if not _PADDED_NAMES_OK.get() else None
        if padded is not None:  # 'leukemia ' beside 'leukemia' would be a second node, a sibling branch
            raise TaxonomyError(
                f"paths[{k}]: the name {padded!r} starts or ends with blanks, which would make it another node "
                f"than {padded.strip()!r}. Strip each name, e.g. [{sep!r}.join(x.strip() for x in p.split({sep!r})) "
                "for p in paths]."
            )
        split.append((k, parts))
    if sep != "\\" and not any(sep in str(items[k]) for k, _ in split if isinstance(items[k], str)):
        windows = [items[k] for k, _ in split if isinstance(items[k], str) and "\\" in items[k]]
        if windows:  # 'blood\\leukemia\\ALL' read with sep='/' is one node named so
            raise TaxonomyError(
                f"paths: no path holds the separator {sep!r}, and {len(windows)} hold"
                f"{'s' if len(windows) == 1 else ''} backslashes (first "
                f"{str(windows[0])!r}): Windows-style paths? Pass sep='\\\\', or convert them, e.g. "
                "[p.replace('\\\\', '/') for p in paths]."
            )
    if sort:
        split.sort(key=lambda item: item[1])
    # the distinct nodes and edges, in order of first appearance, go to networkx once: an add_node and
    # add_edge per name of every path (each clearing networkx's caches) took 3.2 s for the 1,501 paths of
    # a depth-1,500 tree, 0.5 s this way; the graph is the same, node and edge order included
    nodes: dict[str, None] = {}
    edges: dict[tuple[str, str], None] = {}
    first_parent: dict[str, Any] = {}
    for k, parts in split:
        if len(set(parts)) != len(parts):  # a cycle within one path, e.g. 'a/a' or 'r/a/b/a'
            name = next(n for n, c in Counter(parts).items() if c > 1)
            raise TaxonomyError(
                f"paths[{k}]: {name!r} appears twice in the path {sep.join(map(str, parts))!r}: a node cannot be "
                "its own ancestor. Rename one of them (e.g. 'a/a_sub')."
            )
        prev = None
        for name in parts:
            if name in first_parent and first_parent[name] != prev and not dag:
                raise TaxonomyError(
                    f"paths[{k}]: {name!r} has parent {prev!r} here but {first_parent[name]!r} in an earlier path: "
                    "ambiguous. Rename one of them, or pass dag=True if it is one node with two parents."
                )
            first_parent.setdefault(name, prev)
            nodes[name] = None
            if prev is not None:
                edges[(prev, name)] = None
            prev = name
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return g


def _write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A failure at any point leaves an existing file at ``path`` untouched. The new
    file gets the old one's permissions, or the default ones (umask) for a new file.
    A ``path`` that exists but is not a regular file (``/dev/stdout``, a FIFO) is
    written directly: there is nothing to replace.
    """
    target = os.path.realpath(path) if os.path.islink(path) else os.fspath(path)  # write through a symlink
    if os.path.exists(target) and not os.path.isfile(target):  # /dev/stdout, a FIFO: no file to replace
        with open(target, "wb") as fh:
            fh.write(data)
        return
    folder, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):  # a new file keeps the umask's permissions
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _restore(nodes: list[str], edges: list[tuple[str, str]]) -> Taxonomy:
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return Taxonomy(g, _order=nodes, _owned=True, _warn_numeric=False)  # warned when it was built


def _names_list(names: Iterable[Any], limit: int | None = None) -> str:
    """``'a', 'b', 'c'``; with ``limit``, the first ``limit`` names and ``and N more``."""
    if limit is None:
        return ", ".join(repr(n) for n in names)
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


def _in_hiercls(frame: Any) -> bool:
    name = frame.f_globals.get("__name__", "")
    return name == "hiercls" or name.startswith("hiercls.")


def _warn_case_twins(tax: Taxonomy) -> None:
    """Warn about siblings whose names differ only in case ('Leukemia' beside 'leukemia'): a label typed
    two ways makes a second branch, and half the samples train it. One set of the folded names when
    there is none (the common case); the sibling test runs only for names that fold together."""
    names = tax._nodes
    folded = [n.casefold() for n in names]
    if len(set(folded)) == len(folded):
        return
    by_fold: dict[str, list[int]] = {}
    for i, f in enumerate(folded):
        by_fold.setdefault(f, []).append(i)
    ptr, idx = tax._parents_ptr, tax._parents_idx
    pairs = []
    for group in by_fold.values():
        if len(group) < 2:
            continue
        seen: dict[int, int] = {}
        for i in group:
            for p in idx[ptr[i] : ptr[i + 1]].tolist():
                if p in seen:
                    pairs.append(f"{names[seen[p]]!r} and {names[i]!r} under {names[p]!r}")
                seen.setdefault(p, i)
    if pairs:
        warnings.warn(
            f"{len(pairs)} pair(s) of sibling nodes differ only in case: {'; '.join(pairs[:3])}. A label spelt two "
            "ways makes a second branch that half the samples train; if they are one class, spell them alike "
            "(e.g. lower-case the labels first).",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside hiercls.

    Counted from the function that calls this one and then ``warnings.warn``
    (level 1), out through every hiercls frame (``from_folder`` -> ``from_dict``
    -> ``__init__``, say), so the warning names the user's line whatever the path.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None and _in_hiercls(frame):
        frame = frame.f_back
        level += 1
    return level


def _validate_names(names: Iterable[Any], where: str = "") -> None:
    for n in names:
        if not isinstance(n, str):
            at = f"{where}: " if where else ""
            if isinstance(n, (bytes, bytearray)):  # str(b"a") is "b'a'": decoding is the fix
                raise TaxonomyError(
                    f"{at}node names must be strings, got bytes {n!r}. Decode them first, e.g. name.decode('utf-8')."
                )
            if n is None or (isinstance(n, float) and n != n):  # an empty cell of a per-level table
                raise TaxonomyError(
                    f"{at}node names must be strings, got {n!r}: an empty cell (a missing level?). Drop the empty "
                    "cells of each path (a shorter path is fine), e.g. [tuple(x for x in row if isinstance(x, str)) "
                    "for row in rows]; str() would make a node named 'None' or 'nan'."
                )
            raise TaxonomyError(
                f"{at}node names must be strings, got {n!r} ({type(n).__name__}). Convert them with str() first."
            )
        if not n:
            at = f"{where}: " if where else ""
            raise TaxonomyError(f"{at}node names must be non-empty strings, got ''.")


def _is_scalar_integer_array(value: object) -> bool:
    """A 0-d or one-element 1-D integer (not bool) tensor or NumPy array: a node index in a container."""
    if isinstance(value, np.ndarray):
        return value.size == 1 and value.ndim <= 1 and value.dtype.kind in "iu"
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        return (
            value.numel() == 1
            and value.ndim <= 1
            and value.device.type != "meta"  # no value to read
            and not value.is_floating_point()
            and not value.is_complex()
            and value.dtype != torch.bool
        )
    return False
