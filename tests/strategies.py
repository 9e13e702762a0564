"""Hypothesis strategies shared by the test suite: random trees and DAGs."""

from __future__ import annotations

import networkx as nx
from hypothesis import strategies as st

from hiercls import Taxonomy


@st.composite
def trees(draw: st.DrawFn, min_nodes: int = 1, max_nodes: int = 30, prefix: str = "n") -> Taxonomy:
    """A random rooted tree: node k > 0 gets a parent drawn among nodes 0..k-1 (ragged depths)."""
    n = draw(st.integers(min_nodes, max_nodes))
    parents = [draw(st.integers(0, k - 1)) for k in range(1, n)]
    g = nx.DiGraph()
    g.add_node(f"{prefix}0")
    g.add_edges_from((f"{prefix}{p}", f"{prefix}{k}") for k, p in enumerate(parents, start=1))
    return Taxonomy(g)


@st.composite
def dags(draw: st.DrawFn, min_nodes: int = 2, max_nodes: int = 25) -> Taxonomy:
    """A random rooted DAG: each node k > 0 gets one or more parents among nodes 0..k-1; from 3 nodes on,
    at least one node has two parents (an extra parent drawn equal to the first collapsed, and about one
    draw in six came out a tree)."""
    n = draw(st.integers(min_nodes, max_nodes))
    g = nx.DiGraph()
    g.add_node("n0")
    for k in range(1, n):
        first = draw(st.integers(0, k - 1))
        extra = draw(st.lists(st.integers(0, k - 1), max_size=2))
        for p in {first, *extra}:
            g.add_edge(f"n{p}", f"n{k}")
    if n >= 3 and all(g.in_degree(v) < 2 for v in g):
        k = draw(st.integers(2, n - 1))
        (have,) = g.predecessors(f"n{k}")
        other = draw(st.sampled_from([p for p in range(k) if f"n{p}" != have]))
        g.add_edge(f"n{other}", f"n{k}")
    return Taxonomy(g)


def taxonomies(max_nodes: int = 25) -> st.SearchStrategy[Taxonomy]:
    """Trees or DAGs."""
    return st.one_of(trees(max_nodes=max_nodes), dags(max_nodes=max_nodes))


@st.composite
def tree_and_nodes(draw: st.DrawFn, size: int = 20, min_nodes: int = 1, max_nodes: int = 30, leaves_only: bool = False):
    """A tree and ``size`` node indices drawn from it (leaves only if asked)."""
    tax = draw(trees(min_nodes=min_nodes, max_nodes=max_nodes))
    pool = tax.leaf_index.tolist() if leaves_only else list(range(tax.num_nodes))
    nodes = draw(st.lists(st.sampled_from(pool), min_size=size, max_size=size))
    return tax, nodes
