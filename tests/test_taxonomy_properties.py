"""Hypothesis properties of hiercls.Taxonomy over random trees and DAGs (tests/strategies.py).

Every vectorised structure is checked against a slow, obviously-correct oracle:
walking parents one at a time, or networkx's own graph algorithms.
"""

from __future__ import annotations

import itertools
import os
import pickle
import tempfile
from functools import cache

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hiercls import Taxonomy, TaxonomyError
from hiercls.synthetic import layered_taxonomy
from tests.budget import examples
from tests.strategies import dags, taxonomies, tree_and_nodes, trees


# ---------------------------------------------------------------- slow oracles
def parents_of(tax: Taxonomy, i: int) -> list[int]:
    return [tax.index(p) for p in tax.parents(i)]


def oracle_ancestors(tax: Taxonomy, i: int) -> set[int]:
    """Ancestors of i (itself included) by walking parents one step at a time."""
    seen, todo = {i}, [i]
    while todo:
        for p in parents_of(tax, todo.pop()):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def oracle_lca(tax: Taxonomy, a: int, b: int) -> int:
    """Deepest common ancestor: the first node on b's walk up to the root that is also above a."""
    above_a = set()
    node = a
    while node >= 0:
        above_a.add(node)
        node = int(tax.parent_index[node])
    node = b
    while node not in above_a:
        node = int(tax.parent_index[node])
    return node


def oracle_depth(tax: Taxonomy) -> list[int]:
    """Longest distance from the root (the tree depth on trees), by memoised recursion over parents."""

    @cache
    def depth(i: int) -> int:
        ps = parents_of(tax, i)
        return 1 + max(depth(p) for p in ps) if ps else 0

    return [depth(i) for i in range(tax.num_nodes)]


def oracle_height(tax: Taxonomy) -> list[int]:
    @cache
    def height(i: int) -> int:
        kids = [tax.index(c) for c in tax.children(i)]
        return 1 + max(height(c) for c in kids) if kids else 0

    return [height(i) for i in range(tax.num_nodes)]


def csr_rows(ptr: np.ndarray, flat: np.ndarray) -> list[list[int]]:
    return [flat[ptr[i] : ptr[i + 1]].tolist() for i in range(len(ptr) - 1)]


def named_edges(tax: Taxonomy) -> set[tuple[str, str]]:
    return {(tax.nodes[p], tax.nodes[c]) for p, c in tax.edges_index().tolist()}


# ----------------------------------------------------------------- round trips
@given(taxonomies())
def test_json_round_trip(tax: Taxonomy) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tax.json")
        tax.to_json(path)
        back = Taxonomy.from_json(path)
    assert back == tax and back.nodes == tax.nodes and back.fingerprint == tax.fingerprint
    assert np.array_equal(back.edges_index(), tax.edges_index())
    assert back.to_json() == tax.to_json()


@given(taxonomies())
def test_pickle_round_trip(tax: Taxonomy) -> None:
    back = pickle.loads(pickle.dumps(tax))
    assert back == tax and back.nodes == tax.nodes and back.is_tree == tax.is_tree
    for name in ("depth_index", "height_index", "children_index", "ancestors_index", "descendants_index"):
        assert np.array_equal(getattr(back, name), getattr(tax, name)), name


@given(trees())
def test_leaf_paths_round_trip(tax: Taxonomy) -> None:
    """from_paths of every leaf path rebuilds the same tree (same nodes, edges, depths).

    Node order can differ: from_paths meets a parent's children in the order the
    leaf paths mention them, and a shallow leaf can come before a deep subtree.
    """
    leaf_paths = [tax.path(leaf) for leaf in tax.leaves]
    back = Taxonomy.from_paths(leaf_paths)
    assert set(back.nodes) == set(tax.nodes) and named_edges(back) == named_edges(tax)
    assert all(back.depth(n) == tax.depth(n) for n in tax.nodes)
    assert Taxonomy.from_paths(["/".join(p) for p in leaf_paths]) == back


@given(trees())
def test_all_paths_in_index_order_round_trip_exactly(tax: Taxonomy) -> None:
    """The path of every node, in index order, gives back the very same taxonomy (indices and fingerprint)."""
    assert Taxonomy.from_paths([tax.path(i) for i in range(tax.num_nodes)]) == tax


@given(dags())
def test_dag_paths_round_trip(tax: Taxonomy) -> None:
    all_paths = [p for i in range(tax.num_nodes) for p in tax.paths(i)]
    back = Taxonomy.from_paths(all_paths, dag=True)
    assert set(back.nodes) == set(tax.nodes) and named_edges(back) == named_edges(tax)
    assert back.is_tree == tax.is_tree


@given(taxonomies())
def test_rebuilding_from_its_own_edges_or_graph_gives_the_same_taxonomy(tax: Taxonomy) -> None:
    """A DAG rebuilt from its own edges (in index order), or from the graph of a JSON copy, used to get other
    indices within a depth (breadth-first discovery follows shortest paths): another fingerprint."""
    own = [(tax.nodes[p], tax.nodes[c]) for p, c in tax.edges_index().tolist()]
    if own:  # a lone root has no edges
        assert Taxonomy.from_edges(own, dag=not tax.is_tree) == tax
    assert Taxonomy.from_graph(Taxonomy.from_json(tax.to_json()).graph) == tax
    assert Taxonomy.from_graph(pickle.loads(pickle.dumps(tax)).graph) == tax


def oracle_order(edges: list[tuple[str, str]]) -> list[str]:
    """The documented node order: depth by depth (longest path), the children of each node of the level above
    in index order, as the edges list them; a node with several parents there goes with the first."""
    graph = nx.DiGraph(edges)
    depth = {n: 0 for n in graph if graph.in_degree(n) == 0}
    for n in nx.topological_sort(graph):
        if n not in depth:
            depth[n] = 1 + max(depth[p] for p in graph.predecessors(n))
    children: dict[str, list[str]] = {}
    for p, c in edges:
        children.setdefault(p, []).append(c)
    order = [n for n in depth if depth[n] == 0]
    for d in range(1, max(depth.values()) + 1):
        above = [n for n in order if depth[n] == d - 1]
        for p in above:
            order += [c for c in children.get(p, []) if depth[c] == d and c not in order]
    return order


@given(taxonomies(), st.randoms(use_true_random=False))
def test_node_order_follows_the_documented_rule(tax: Taxonomy, rnd) -> None:
    edges = sorted((tax.nodes[p], tax.nodes[c]) for p, c in tax.edges_index().tolist())
    rnd.shuffle(edges)
    if not edges:
        return
    assert list(Taxonomy.from_edges(edges, dag=not tax.is_tree).nodes) == oracle_order(edges)


# -------------------------------------------------------------------- indexing
@given(taxonomies())
def test_index_map_is_a_bijection(tax: Taxonomy) -> None:
    n = tax.num_nodes
    assert len(set(tax.nodes)) == n == len(tax)
    assert [tax.index(name) for name in tax.nodes] == list(range(n))
    assert [tax.name(i) for i in range(n)] == list(tax.nodes)
    assert tax.encode(list(tax.nodes)).tolist() == list(range(n))
    assert tax.names(np.arange(n)) == list(tax.nodes)


@given(taxonomies())
def test_parents_before_children_and_depth_order(tax: Taxonomy) -> None:
    edges = tax.edges_index()
    assert (edges[:, 0] < edges[:, 1]).all()
    assert tax.root == tax.nodes[0] and tax.parents(0) == ()
    assert (np.diff(tax.depth_index) >= 0).all()
    assert [i for lv in tax.levels() for i in lv.tolist()] == list(range(tax.num_nodes))
    assert all((tax.depth_index[lv] == d).all() for d, lv in enumerate(tax.levels()))


@given(taxonomies())
def test_depth_is_the_longest_path(tax: Taxonomy) -> None:
    assert tax.depth_index.tolist() == oracle_depth(tax)
    assert tax.depth_index.tolist() == [
        nx.dag_longest_path_length(tax.graph.subgraph(nx.ancestors(tax.graph, n) | {n})) for n in tax.nodes
    ]
    assert tax.max_depth == max(oracle_depth(tax))


@given(trees())
def test_tree_depth_is_parent_depth_plus_one(tax: Taxonomy) -> None:
    parent = tax.parent_index
    assert parent[0] == -1 and (parent[1:] >= 0).all()
    assert (tax.depth_index[1:] == tax.depth_index[parent[1:]] + 1).all()
    assert tax.is_tree and all(len(tax.parents(i)) == 1 for i in range(1, tax.num_nodes))


@given(taxonomies())
def test_height(tax: Taxonomy) -> None:
    assert tax.height_index.tolist() == oracle_height(tax)
    assert tax.height() == tax.max_depth  # longest root-to-leaf path, both ways
    assert (tax.height_index[tax.leaf_index] == 0).all()
    assert tax.leaf_index.tolist() == [i for i in range(tax.num_nodes) if not tax.children(i)]


@given(taxonomies())
def test_children_csr_matches_parents_csr(tax: Taxonomy) -> None:
    from_children = {(p, c) for p, kids in enumerate(csr_rows(tax.children_ptr, tax.children_index)) for c in kids}
    from_parents = {(p, c) for c, ps in enumerate(csr_rows(tax.parents_ptr, tax.parents_index)) for p in ps}
    assert from_children == from_parents == {tuple(e) for e in tax.edges_index().tolist()}
    assert named_edges(tax) == set(tax.graph.edges)
    for row in csr_rows(tax.children_ptr, tax.children_index):
        assert row == sorted(row)


# ---------------------------------------------------------- ancestors and LCA
@given(taxonomies())
def test_ancestor_csr_matches_networkx(tax: Taxonomy) -> None:
    anc_rows = csr_rows(tax.ancestors_ptr, tax.ancestors_index)
    desc_rows = csr_rows(tax.descendants_ptr, tax.descendants_index)
    for i, name in enumerate(tax.nodes):
        expected = sorted(tax.index(a) for a in nx.ancestors(tax.graph, name)) + [i]
        assert anc_rows[i] == expected  # root first, self last, ascending
        assert set(anc_rows[i]) == oracle_ancestors(tax, i)
        assert desc_rows[i] == sorted([i] + [tax.index(d) for d in nx.descendants(tax.graph, name)])


@given(taxonomies())
def test_ancestors_and_descendants_agree(tax: Taxonomy) -> None:
    n = tax.num_nodes
    anc = [set(tax.ancestors(i)) for i in range(n)]
    desc = [set(tax.descendants(i)) for i in range(n)]
    for a in range(n):
        for b in range(n):
            assert (tax.nodes[b] in anc[a]) == (tax.nodes[a] in desc[b])
    assert all(tax.nodes[i] not in anc[i] and tax.nodes[i] not in desc[i] for i in range(n))
    assert all(tax.root in anc[i] for i in range(1, n))


@given(trees())
def test_ancestor_table_rows_are_paths(tax: Taxonomy) -> None:
    table = tax.ancestor_table
    assert table.shape == (tax.num_nodes, tax.max_depth + 1)
    for i in range(tax.num_nodes):
        row = table[i].tolist()
        d = tax.depth(i)
        assert tax.names(row[: d + 1]) == list(tax.path(i)) and row[d + 1 :] == [-1] * (tax.max_depth - d)


@given(tree_and_nodes(size=30), st.data())
def test_lca_matches_the_parent_walk(tax_nodes: tuple[Taxonomy, list[int]], data: st.DataObject) -> None:
    tax, a = tax_nodes
    b = data.draw(st.lists(st.integers(0, tax.num_nodes - 1), min_size=len(a), max_size=len(a)))
    expected = [oracle_lca(tax, x, y) for x, y in zip(a, b)]
    assert tax.lca(np.array(a), np.array(b)).tolist() == expected
    assert tax.lca(b, a).tolist() == expected  # symmetric
    assert tax._lca_unchecked(np.array(a), np.array(b)).tolist() == expected
    assert [tax.lca(x, y) for x, y in zip(a[:3], b[:3])] == expected[:3]
    assert tax.lca(tax.names(a), tax.names(b)).tolist() == expected


@given(trees())
def test_lca_all_pairs(tax: Taxonomy) -> None:
    n = tax.num_nodes
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    out = tax.lca(a, b)
    assert out.shape == (n, n)
    assert all(out[x, y] == oracle_lca(tax, x, y) for x in range(n) for y in range(n))
    assert (np.diag(out) == np.arange(n)).all()


# ----------------------------------------------------------- targets and masks
@given(taxonomies(), st.data())
def test_multi_hot_rows_are_ancestor_sets(tax: Taxonomy, data: st.DataObject) -> None:
    labels = data.draw(st.lists(st.integers(0, tax.num_nodes - 1), max_size=12))
    mh = tax.multi_hot(labels)
    assert mh.shape == (len(labels), tax.num_nodes) and mh.dtype == bool
    for row, label in zip(mh, labels):
        assert set(np.flatnonzero(row).tolist()) == oracle_ancestors(tax, label)
    assert np.array_equal(tax.multi_hot(tax.names(labels)), mh)


@given(taxonomies(), st.data())
def test_known_mask_is_false_exactly_where_the_label_says_nothing(tax: Taxonomy, data: st.DataObject) -> None:
    """Unknown: strictly below the label, and (in a DAG) any other ancestor of a node below it."""
    labels = data.draw(st.lists(st.integers(0, tax.num_nodes - 1), max_size=12))
    km = tax.known_mask(labels)
    assert km.shape == (len(labels), tax.num_nodes) and km.dtype == bool
    for row, label in zip(km, labels):
        strictly_below = {j for j in range(tax.num_nodes) if j != label and label in oracle_ancestors(tax, j)}
        shared = {a for d in strictly_below for a in oracle_ancestors(tax, d) | {d}}
        positives = oracle_ancestors(tax, label) | {label}
        assert set(np.flatnonzero(~row).tolist()) == (strictly_below | shared) - positives
        if tax.is_tree:
            assert set(np.flatnonzero(~row).tolist()) == strictly_below
        assert row.all() == tax.is_leaf(label)


# -------------------------------------------------------------------- encoding
@given(taxonomies(), st.data())
def test_encode_round_trips_every_input_kind(tax: Taxonomy, data: st.DataObject) -> None:
    import torch

    idx = data.draw(st.lists(st.integers(0, tax.num_nodes - 1), max_size=10))
    expected = np.array(idx, dtype=np.int64)
    names = tax.names(idx)
    for form in (idx, names, np.array(idx, dtype=np.int32), np.array(names), torch.tensor(idx, dtype=torch.long)):
        out = tax.encode(form)
        assert out.dtype == np.int64 and np.array_equal(out, expected)
    mixed = [n if k % 2 else i for k, (i, n) in enumerate(zip(idx, names))]
    assert tax.encode(mixed).tolist() == idx


@given(taxonomies(max_nodes=12))
@settings(examples(20))
def test_str_shows_every_node_of_small_trees(tax: Taxonomy) -> None:
    lines = str(tax).splitlines()
    truncated = any(line.startswith("... (") for line in lines)
    drawn = [line.lstrip("│├└─ ").removesuffix(" *") for line in lines[1:] if not line.startswith(("(", "... ("))]
    assert drawn[0] == tax.root and len(drawn) <= 40
    if tax.is_tree:  # each node once
        assert sorted(drawn) == sorted(tax.nodes) and not truncated
    else:  # a shared node appears under each parent, marked; the drawing may be cut at 40 lines
        assert set(drawn) <= set(tax.nodes) and (truncated or set(drawn) == set(tax.nodes))
        shared = {tax.nodes[i] for i in range(tax.num_nodes) if len(tax.parents(i)) > 1}
        assert {line.lstrip("│├└─ ")[:-2] for line in lines[1:] if line.endswith(" *")} == shared & set(drawn)


@given(taxonomies())
def test_fingerprint_follows_structure_and_order(tax: Taxonomy) -> None:
    edges = [(tax.nodes[p], tax.nodes[c]) for p, c in tax.edges_index().tolist()]
    if not edges:
        return
    rebuilt = Taxonomy.from_edges(edges)
    if tax.is_tree:  # each parent's children listed in index order: the same indices, the same fingerprint
        assert rebuilt == tax and rebuilt.fingerprint == tax.fingerprint
    assert (rebuilt.fingerprint == tax.fingerprint) == (
        rebuilt.nodes == tax.nodes and named_edges(rebuilt) == named_edges(tax)
    )
    # another order of one parent's children -> other indices -> another fingerprint
    busy = [i for i in range(tax.num_nodes) if len(tax.children(i)) >= 2]
    if busy:
        parent, (k0, k1) = tax.nodes[busy[0]], tax.children(busy[0])[:2]
        swapped = list(edges)
        i0, i1 = swapped.index((parent, k0)), swapped.index((parent, k1))
        swapped[i0], swapped[i1] = swapped[i1], swapped[i0]
        other = Taxonomy.from_edges(swapped)
        assert named_edges(other) == named_edges(tax)  # same structure ...
        if tax.is_tree:  # ... but k1 now comes before k0
            assert other.index(k1) < other.index(k0) and other.nodes != tax.nodes
        assert (other.fingerprint == tax.fingerprint) == (other.nodes == tax.nodes)
    # another edge set -> another fingerprint
    leaf = tax.leaves[-1]
    grown = Taxonomy.from_edges(edges + [(leaf, leaf + "_new")])
    assert grown.fingerprint != tax.fingerprint


@given(
    tax=trees(max_nodes=20),
    order=st.randoms(use_true_random=False),
    copies=st.integers(1, 3),
)
@settings(examples(60))
def test_from_paths_sorted_does_not_depend_on_the_order_of_the_paths(tax, order, copies) -> None:
    """Per-sample labels in any order, with repeats, give one taxonomy (nodes, order, fingerprint)."""
    paths = ["/".join(tax.path(leaf)) for leaf in tax.leaves] * copies
    shuffled = list(paths)
    order.shuffle(shuffled)
    a, b = Taxonomy.from_paths(paths, sort=True), Taxonomy.from_paths(shuffled, sort=True)
    assert a.nodes == b.nodes and a.fingerprint == b.fingerprint
    assert set(a.graph.edges) == set(tax.graph.edges)  # the graph the paths came from, perhaps renumbered


# ------------------------------------------------------ repeats, order, sets
@given(
    tax=trees(max_nodes=20),
    rnd=st.randoms(use_true_random=False),
    copies=st.integers(1, 4),
    sort=st.booleans(),
)
@settings(examples(60))
def test_repeated_paths_change_nothing(tax, rnd, copies, sort) -> None:
    """Per-sample paths (repeats, mixed str / tuple / list forms) give the taxonomy of their distinct paths."""
    distinct = ["/".join(tax.path(leaf)) for leaf in tax.leaves]
    per_sample = [rnd.choice(distinct) for _ in range(copies * len(distinct))] + distinct
    forms = [p if k % 3 == 0 else tuple(p.split("/")) if k % 3 == 1 else p.split("/") for k, p in enumerate(per_sample)]
    first_seen = list(dict.fromkeys(per_sample))
    expected = Taxonomy.from_paths(first_seen, sort=sort)
    for paths in (per_sample, forms):
        got = Taxonomy.from_paths(paths, sort=sort)
        assert got.nodes == expected.nodes and got.fingerprint == expected.fingerprint


@given(tax=taxonomies(), rnd=st.randoms(use_true_random=False))
def test_sorted_edges_do_not_depend_on_their_order(tax: Taxonomy, rnd) -> None:
    edges = [(tax.nodes[p], tax.nodes[c]) for p, c in tax.edges_index().tolist()]
    if not edges:
        return
    shuffled = list(edges)
    rnd.shuffle(shuffled)
    a = Taxonomy.from_edges(edges, sort=True)
    assert Taxonomy.from_edges(shuffled, sort=True).fingerprint == a.fingerprint
    assert Taxonomy.from_edges(set(shuffled)).fingerprint == a.fingerprint  # a set is read sorted
    assert named_edges(a) == named_edges(tax)
    for i in range(a.num_nodes):  # siblings by name
        kids = list(a.children(i))
        assert kids == sorted(kids) or not a.is_tree


@given(tax=trees(max_nodes=20))
def test_a_set_of_paths_is_read_sorted(tax: Taxonomy) -> None:
    paths = ["/".join(tax.path(leaf)) for leaf in tax.leaves]
    expected = Taxonomy.from_paths(paths, sort=True)
    assert Taxonomy.from_paths(frozenset(paths)).fingerprint == expected.fingerprint
    assert Taxonomy.from_paths(set(paths), sort=False).fingerprint == expected.fingerprint


# ---------------------------------------------------------------- JSON files
_ODD_CHARS = ["a", "é", "\udce9", "\udc80", "\ud800", "\udfff", "😀", '"', "\\", "/", " ", "\n", "\t", "\u2028"]
_odd_names = st.lists(st.sampled_from(_ODD_CHARS), min_size=1, max_size=6).map("".join)


@given(names=st.lists(_odd_names, min_size=1, max_size=8, unique=True))
@settings(examples(60))
def test_to_json_file_round_trips_any_name(names: list[str]) -> None:
    """Any name, lone surrogates included, goes through a UTF-8 file and comes back to the same fingerprint;
    a surrogate pair (two code points JSON would read as one character) is refused and writes nothing."""
    tax = Taxonomy.from_edges([("r\udce9", n) for n in names if n != "r\udce9"] or [("r\udce9", "x")])
    paired = any(
        "\ud800" <= x <= "\udbff" and "\udc00" <= y <= "\udfff" for n in tax.nodes for x, y in itertools.pairwise(n)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tax.json")
        with open(path, "wb") as fh:
            fh.write(b"previous")
        if paired:
            try:
                tax.to_json(path)
            except ValueError as err:
                assert "surrogate pair" in str(err)
            else:
                raise AssertionError("a surrogate pair was written")
            with open(path, "rb") as fh:
                assert fh.read() == b"previous"
            return
        tax.to_json(path)
        with open(path, "rb") as fh:
            fh.read().decode("utf-8")  # strict: valid UTF-8
        back = Taxonomy.from_json(path)
        assert sorted(os.listdir(tmp)) == ["tax.json"]  # no temporary file left behind
    assert back.nodes == tax.nodes and back.fingerprint == tax.fingerprint
    assert Taxonomy.from_json(tax.to_json()).fingerprint == tax.fingerprint


# ---------------------------------------------------------------- messages
@given(n=st.integers(2, 3000))
@settings(examples(20))
def test_several_roots_messages_stay_short(n: int) -> None:
    names = [f"label_{i}" for i in range(n)]
    try:
        Taxonomy.from_paths(names)
    except ValueError as err:
        msg = str(err)
    else:
        raise AssertionError("several roots were accepted")
    assert len(msg) < 250 and msg.startswith(f"The taxonomy has {n} roots: ") and "Give root='...'" in msg
    assert (f"and {n - 5} more" in msg) == (n > 5)


# ---------------------------------------------------------------- synthetic
@given(
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(lambda ws: list(itertools.accumulate(ws))),
    bad=st.sampled_from([1.0, 2.5, True, "3", None]),
    at=st.integers(0, 3),
)
@settings(examples(30))
def test_layered_taxonomy_widths(widths: list[int], bad: object, at: int) -> None:
    tax = layered_taxonomy(widths, seed=0)
    assert [len(level) for level in tax.levels()] == [1, *widths] and tax.num_leaves == widths[-1]
    spoiled = list(widths)
    spoiled[at % len(spoiled)] = bad
    try:
        layered_taxonomy(spoiled)
    except ValueError as err:
        assert str(err).startswith(f"widths[{at % len(spoiled)}]: expected a positive int")
    else:
        raise AssertionError(f"{spoiled} was accepted")


@given(tax=taxonomies(max_nodes=15), seed=st.integers(0, 2**16))
def test_from_edges_dag_false_keeps_trees_and_refuses_each_dag(tax: Taxonomy, seed: int) -> None:
    """dag=False changes nothing for a tree's edges, in any order; for a DAG's it names a child with
    several parents and where those edges are (a tree-only check failing later was the only sign before)."""
    if tax.num_nodes == 1:  # no edges to build from
        return
    edges = [(tax.name(int(p)), tax.name(int(c))) for p, c in tax.edges_index()]
    np.random.default_rng(seed).shuffle(edges)
    if tax.is_tree:
        assert Taxonomy.from_edges(edges, dag=False, sort=True) == Taxonomy.from_edges(edges, sort=True)
        return
    with pytest.raises(TaxonomyError, match=r"expected a tree \(dag=False\), but '(.+)' has (\d+) parents") as err:
        Taxonomy.from_edges(edges, dag=False)
    child = err.value.args[0].split("but ")[1].split(" has")[0].strip("'")
    assert len(tax.parents(child)) == int(err.value.args[0].split(" has ")[1].split()[0]) >= 2
    for parent in tax.parents(child):
        k = edges.index((parent, child))
        assert f"{parent!r} (edges[{k}])" in err.value.args[0]
    assert Taxonomy.from_edges(edges, sort=True) == Taxonomy.from_edges(edges, sort=True, dag=True)


def test_from_edges_dag_must_be_a_bool() -> None:
    with pytest.raises(TaxonomyError, match="dag: expected True or False, got str 'no'"):
        Taxonomy.from_edges([("r", "a")], dag="no")


def test_from_edges_dag_false_names_numpy_names_plainly() -> None:
    edges = np.array([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    with pytest.raises(TaxonomyError, match=r"but 'x' has 2 parents: 'a' \(edges\[2\]\), 'b' \(edges\[3\]\)") as err:
        Taxonomy.from_edges(edges, dag=False)
    assert "np.str_" not in str(err.value)
