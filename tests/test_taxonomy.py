"""Unit tests for hiercls.Taxonomy: constructors, validation errors, queries, encoding, I/O, scale."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import tracemalloc
import warnings

import networkx as nx
import numpy as np
import pytest
import torch

from hiercls import Taxonomy, TaxonomyError, UnknownNodeError
from hiercls.synthetic import INAT21_WIDTHS, layered_taxonomy

PAPER_NODES = ("root", "Normal", "Reactive", "Leukemia", "Acute", "Chronic", "ALL", "AML", "CLL", "CML", "APL")
PAPER_EDGES = [
    ("root", "Normal"),
    ("root", "Reactive"),
    ("root", "Leukemia"),
    ("Leukemia", "Acute"),
    ("Leukemia", "Chronic"),
    ("Acute", "ALL"),
    ("Acute", "AML"),
    ("AML", "APL"),
    ("Chronic", "CLL"),
    ("Chronic", "CML"),
]


@pytest.fixture
def dag() -> Taxonomy:
    """r -> a, b; a -> x; b -> x (x has two parents); x -> y; r -> z."""
    return Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("x", "y"), ("r", "z")])


def structure(tax: Taxonomy) -> tuple[tuple[str, ...], set[tuple[str, str]]]:
    return tax.nodes, {(tax.nodes[p], tax.nodes[c]) for p, c in tax.edges_index().tolist()}


# ------------------------------------------------------------------ constructors
class TestConstructors:
    def test_paper_fixture(self, paper_tax: Taxonomy) -> None:
        assert paper_tax.nodes == PAPER_NODES
        assert set(structure(paper_tax)[1]) == set(PAPER_EDGES)
        assert paper_tax.is_tree and paper_tax.root == "root"

    def test_from_graph_and_init(self, paper_tax: Taxonomy) -> None:
        g = nx.DiGraph(PAPER_EDGES)
        assert Taxonomy.from_graph(g) == paper_tax
        assert Taxonomy(g) == paper_tax
        g.add_edge("Normal", "late")  # the taxonomy copied the graph: later edits do not leak in
        assert paper_tax.num_nodes == 11

    def test_from_graph_rejects_other_types(self) -> None:
        with pytest.raises(TaxonomyError, match=r"graph: expected a networkx.DiGraph.*got Graph"):
            Taxonomy(nx.Graph([("a", "b")]))
        with pytest.raises(TaxonomyError, match=r"graph: expected a networkx.DiGraph.*got list"):
            Taxonomy([("a", "b")])  # type: ignore[arg-type]

    def test_from_graph_single_node(self) -> None:
        g = nx.DiGraph()
        g.add_node("only")
        tax = Taxonomy.from_graph(g)
        assert tax.nodes == ("only",) and tax.leaves == ("only",) and tax.max_depth == 0
        assert tax.lca(0, 0) == 0

    def test_from_edges(self, paper_tax: Taxonomy) -> None:
        assert Taxonomy.from_edges(PAPER_EDGES) == paper_tax
        assert Taxonomy.from_edges([list(e) for e in PAPER_EDGES]) == paper_tax
        assert Taxonomy.from_edges(iter(PAPER_EDGES)) == paper_tax  # any iterable, even one-shot

    def test_integer_looking_names_warn_once_and_encode_as_strings(self) -> None:
        """NCBI-style ids: ints are indices, so the int 2 is *not* the node '2'; building says so once,
        unpickling (a DataLoader worker, a DDP rank) does not say it again."""
        with pytest.warns(UserWarning, match=r"2 node name\(s\) look like integers \(first: '2', '1'\).*'2', not 2"):
            tax = Taxonomy.from_paths(["root/2", "root/1"])
        assert list(tax.names(tax.encode(["2", "1"]))) == ["2", "1"]
        assert list(tax.names(tax.encode([2, 1]))) == ["1", "2"]  # indices: the int 2 is the node '1' here
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert pickle.loads(pickle.dumps(tax)) == tax
            Taxonomy.from_paths(["root/a2", "root/b"])  # digits inside a name are fine

    def test_numpy_names_become_plain_strings(self, paper_tax: Taxonomy) -> None:
        """A (k, 2) array of names, or np.str_ anywhere, builds the same taxonomy with plain str names."""
        built = [
            Taxonomy.from_edges(np.array(PAPER_EDGES)),
            Taxonomy.from_parent_map({np.str_(c): np.str_(p) for p, c in PAPER_EDGES}),
            Taxonomy.from_edges([(np.str_(p), np.str_(c)) for p, c in PAPER_EDGES], root=np.str_("root")),
        ]
        for tax in built:
            assert tax == paper_tax
            assert all(type(n) is str for n in tax.nodes) and type(tax.root) is str
            assert tax.fingerprint == paper_tax.fingerprint
        with pytest.raises(TaxonomyError, match=r"edges\[0\]: expected a \(parent, child\) pair"):
            Taxonomy.from_edges(np.array([["r", "a", "b"]]))

    @pytest.mark.parametrize("bad", ["ab", ("a",), ("a", "b", "c"), 3, None])
    def test_from_edges_bad_pair(self, bad: object) -> None:
        with pytest.raises(TaxonomyError, match=r"edges\[1\]: expected a \(parent, child\) pair"):
            Taxonomy.from_edges([("r", "a"), bad])  # type: ignore[list-item]

    def test_from_edges_non_string_names(self) -> None:
        with pytest.raises(TaxonomyError, match=r"edges\[0\]: node names must be strings, got 1 \(int\)"):
            Taxonomy.from_edges([(1, 2)])  # type: ignore[list-item]
        with pytest.raises(TaxonomyError, match=r"edges\[0\]: node names must be strings, got \['a'\] \(list\)"):
            Taxonomy.from_edges([(["a"], "b")])  # type: ignore[list-item]
        with pytest.raises(TaxonomyError, match=r"node names must be non-empty strings, got ''"):
            Taxonomy.from_edges([("r", "")])

    def test_non_string_names_in_graph(self) -> None:
        with pytest.raises(
            TaxonomyError, match=r"node names must be strings, got 0 \(int\). Convert them with str\(\)"
        ):
            Taxonomy(nx.DiGraph([(0, 1)]))

    def test_from_parent_map(self, paper_tax: Taxonomy) -> None:
        parents = {c: p for p, c in PAPER_EDGES}
        assert Taxonomy.from_parent_map(parents) == paper_tax  # root left out
        # explicit root mapped to None, keys in another order: same structure, maybe other order
        explicit = {"root": None, **parents}
        assert structure(Taxonomy.from_parent_map(explicit)) == structure(paper_tax)

    def test_from_parent_map_unknown_parent(self) -> None:
        with pytest.raises(TaxonomyError, match=r"Unknown parent 'rot' of 'a'.*Did you mean 'root'\?.*Add it as a key"):
            Taxonomy.from_parent_map({"root": None, "a": "rot"})

    def test_from_parent_map_not_a_mapping(self) -> None:
        with pytest.raises(TaxonomyError, match=r"parents: expected a mapping \{child: parent\}, got list"):
            Taxonomy.from_parent_map([("a", "r")])  # type: ignore[arg-type]

    def test_from_parent_map_two_explicit_roots(self) -> None:
        with pytest.raises(TaxonomyError, match=r"2 roots: 'r1', 'r2'"):
            Taxonomy.from_parent_map({"r1": None, "r2": None})
        assert Taxonomy.from_parent_map({"r1": None, "r2": None}, root="top").children("top") == ("r1", "r2")

    def test_from_dict(self, paper_tax: Taxonomy) -> None:
        nested = {
            "root": {
                "Normal": None,
                "Reactive": {},
                "Leukemia": {"Acute": ["ALL", {"AML": ["APL"]}], "Chronic": ("CLL", "CML")},
            }
        }
        assert Taxonomy.from_dict(nested) == paper_tax

    def test_from_dict_errors(self) -> None:
        with pytest.raises(TaxonomyError, match=r"tree: expected a nested dict, got list"):
            Taxonomy.from_dict(["a"])  # type: ignore[arg-type]
        with pytest.raises(TaxonomyError, match=r"tree\['r'\]\['a'\]: expected a dict, a list or None, got 3"):
            Taxonomy.from_dict({"r": {"a": 3}})
        with pytest.raises(TaxonomyError, match=r"node names must be strings, got 1 \(int\)"):
            Taxonomy.from_dict({"r": [1]})

    def test_from_dict_duplicates(self) -> None:
        tree = {"r": {"a": ["x"], "b": ["x"]}}
        with pytest.raises(
            TaxonomyError,
            match=r"Duplicate name 'x' at tree\['r'\]\['a'\]\['x'\] and tree\['r'\]\['b'\]\['x'\]: ambiguous.*dag=True",
        ):
            Taxonomy.from_dict(tree)
        tax = Taxonomy.from_dict(tree, dag=True)
        assert not tax.is_tree and tax.parents("x") == ("a", "b")

    def test_from_dict_several_roots(self) -> None:
        with pytest.raises(TaxonomyError, match=r"2 roots: 'a', 'b'. Give root='...'"):
            Taxonomy.from_dict({"a": ["a1"], "b": None})
        tax = Taxonomy.from_dict({"a": ["a1"], "b": None}, root="all")
        assert tax.nodes == ("all", "a", "b", "a1")

    def test_from_paths_tuples_and_strings(self, paper_tax: Taxonomy) -> None:
        leaf_paths = [paper_tax.path(leaf) for leaf in paper_tax.leaves]
        as_strings = ["/".join(p) for p in leaf_paths]
        as_dots = [".".join(p) for p in leaf_paths]
        a = Taxonomy.from_paths(leaf_paths)
        assert structure(a)[1] == structure(paper_tax)[1]
        assert Taxonomy.from_paths(as_strings) == a
        assert Taxonomy.from_paths(as_dots, sep=".") == a
        assert Taxonomy.from_paths([list(p) for p in leaf_paths]) == a
        assert Taxonomy.from_paths(np.array([["r", "a"], ["r", "b"]])).nodes == ("r", "a", "b")

    def test_from_paths_ragged_and_prefixes(self) -> None:
        tax = Taxonomy.from_paths(["r/a/a1/a11", "r/b", ("r", "a", "a2"), "r"])
        assert tax.nodes == ("r", "a", "b", "a1", "a2", "a11")
        assert tax.depth("a11") == 3 and tax.is_leaf("b")

    def test_from_paths_errors(self) -> None:
        with pytest.raises(
            TaxonomyError, match=r"paths\[1\]: 'x' has parent 'b' here but 'a' in an earlier path: ambiguous"
        ):
            Taxonomy.from_paths(["r/a/x", "r/b/x"])
        with pytest.raises(TaxonomyError, match=r"paths\[1\]: 'a' has parent None here but 'r'"):
            Taxonomy.from_paths(["r/a", "a/b"])
        with pytest.raises(TaxonomyError, match=r"paths\[0\]: empty path"):
            Taxonomy.from_paths([()])
        # an empty name from the separator says where it came from (it said "got ''")
        with pytest.raises(TaxonomyError, match=r"paths\[0\]: 'r//a' holds the separator '/' twice in a row"):
            Taxonomy.from_paths(["r//a"])
        with pytest.raises(TaxonomyError, match=r"paths\[1\]: '/r/b' starts with the separator '/'.*removeprefix"):
            Taxonomy.from_paths(["r/a", "/r/b"])
        with pytest.raises(TaxonomyError, match=r"paths\[0\]: 'r//a/' holds the separator '/' twice in a row"):
            Taxonomy.from_paths(np.array(["r//a/"]))  # a numpy string prints plainly
        with pytest.raises(TaxonomyError, match=r"paths\[0\]: 'r\.a\.' ends with the separator '\.'"):
            Taxonomy.from_paths(["r.a."], sep=".")
        with pytest.raises(TaxonomyError, match=r"paths\[0\]: node names must be non-empty strings"):
            Taxonomy.from_paths([("r", "")])
        with pytest.raises(TaxonomyError, match=r"paths\[0\]: node names must be strings, got 3"):
            Taxonomy.from_paths([("r", 3)])
        with pytest.raises(
            TaxonomyError, match=r"paths\[0\]: expected a tuple of node names or a 'a/b/c' string, got 7"
        ):
            Taxonomy.from_paths([7])  # type: ignore[list-item]
        with pytest.raises(TaxonomyError, match=r"paths: expected a list of paths, got the single string 'r/a'"):
            Taxonomy.from_paths("r/a")
        with pytest.raises(TaxonomyError, match=r"sep: expected a non-empty string separator"):
            Taxonomy.from_paths(["r/a"], sep="")

    def test_from_paths_dag(self) -> None:
        tax = Taxonomy.from_paths(["r/a/x", "r/b/x/y"], dag=True)
        assert not tax.is_tree
        assert sorted(tax.paths("y")) == [("r", "a", "x", "y"), ("r", "b", "x", "y")]

    def test_from_paths_several_roots(self) -> None:
        with pytest.raises(TaxonomyError, match=r"2 roots: 'cat', 'dog'"):
            Taxonomy.from_paths(["cat/siamese", "dog/pug"])
        tax = Taxonomy.from_paths(["cat/siamese", "dog/pug"], root="pet")
        assert tax.path("pug") == ("pet", "dog", "pug")

    def test_from_folder(self, tmp_path) -> None:
        top = tmp_path / "blood"
        for sub in ["leukemia/ALL", "leukemia/AML", "normal", ".git/objects", "__pycache__", "leukemia/.hidden"]:
            (top / sub).mkdir(parents=True)
        (top / "normal" / "img1.jpg").write_bytes(b"\xff")
        (top / "README.txt").write_text("not a class")
        tax = Taxonomy.from_folder(top)
        assert tax.nodes == ("blood", "leukemia", "normal", "ALL", "AML")
        assert tax.leaves == ("normal", "ALL", "AML")
        assert Taxonomy.from_folder(str(top), root="cells").root == "cells"

    def test_from_folder_errors(self, tmp_path) -> None:
        with pytest.raises(TaxonomyError, match=r"path: '.*nope' is not a folder"):
            Taxonomy.from_folder(tmp_path / "nope")
        (tmp_path / "f.txt").write_text("x")
        with pytest.raises(TaxonomyError, match=r"is not a folder"):
            Taxonomy.from_folder(tmp_path / "f.txt")
        for sub in ["top/a/x", "top/b/x"]:
            (tmp_path / sub).mkdir(parents=True)
        with pytest.raises(TaxonomyError, match=r"Duplicate name 'x'.*ambiguous"):
            Taxonomy.from_folder(tmp_path / "top")
        tax = Taxonomy.from_folder(tmp_path / "top", dag=True)
        assert tax.parents("x") == ("a", "b")

    def test_from_folder_symlinks(self, tmp_path) -> None:
        (tmp_path / "top" / "a" / "a1").mkdir(parents=True)
        (tmp_path / "elsewhere" / "b1").mkdir(parents=True)
        (tmp_path / "top" / "b").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        assert Taxonomy.from_folder(tmp_path / "top").path("b1") == ("top", "b", "b1")  # links are followed
        (tmp_path / "top" / "a" / "a1" / "loop").symlink_to(tmp_path / "top" / "a", target_is_directory=True)
        with pytest.raises(
            TaxonomyError, match=r"path: '.*loop' links back to its ancestor folder '.*a' \(a symlink loop\)"
        ):
            Taxonomy.from_folder(tmp_path / "top")


# --------------------------------------------------------------------- JSON I/O
class TestJson:
    def test_round_trip_exact(self, tmp_path, paper_tax: Taxonomy, dag: Taxonomy) -> None:
        for tax in (paper_tax, dag, layered_taxonomy((2, 5, 9), seed=3), Taxonomy.from_paths(["solo"])):
            f = tmp_path / "tax.json"
            tax.to_json(f)
            back = Taxonomy.from_json(f)
            assert back == tax and back.nodes == tax.nodes and back.fingerprint == tax.fingerprint
            assert np.array_equal(back.edges_index(), tax.edges_index())
            assert back.to_json() == tax.to_json() == f.read_text(encoding="utf-8").rstrip("\n")

    def test_round_trip_keeps_order_that_the_graph_would_not_give(self, tmp_path) -> None:
        # children listed b before a: indices follow the input, and the file keeps them
        tax = Taxonomy.from_edges([("r", "b"), ("r", "a"), ("a", "a1")])
        assert tax.nodes == ("r", "b", "a", "a1")
        tax.to_json(tmp_path / "t.json")
        assert Taxonomy.from_json(tmp_path / "t.json").nodes == ("r", "b", "a", "a1")

    def test_unicode_names(self, tmp_path) -> None:
        tax = Taxonomy.from_paths(["règne/éspèce", 'r"quoted/x'], root="всё")
        tax.to_json(tmp_path / "u.json")
        assert Taxonomy.from_json(tmp_path / "u.json") == tax

    def test_from_json_reads_the_text_or_its_parsed_object(self, paper_tax: Taxonomy, dag: Taxonomy) -> None:
        for tax in (paper_tax, dag, Taxonomy.from_edges([("r", "b"), ("r", "a")])):
            text = tax.to_json()
            for source in (text, "\n  " + text, json.loads(text)):
                back = Taxonomy.from_json(source)
                assert back == tax and back.nodes == tax.nodes and back.fingerprint == tax.fingerprint
        # the hand-written forms too, as text
        assert Taxonomy.from_json(json.dumps({"edges": PAPER_EDGES})) == paper_tax
        with pytest.raises(TaxonomyError, match="the JSON text given is not valid JSON"):
            Taxonomy.from_json('{"nodes": ["r"],')
        with pytest.raises(TaxonomyError, match="the JSON object: expected keys 'nodes' and 'edges'"):
            Taxonomy.from_json({"node": ["r"]})
        with pytest.raises(TaxonomyError, match="source: expected a JSON file's path, the JSON text"):
            Taxonomy.from_json(3)
        with pytest.raises(FileNotFoundError):  # not JSON text: still read as a path
            Taxonomy.from_json("no/such/taxonomy.json")

    def test_to_json_text(self, paper_tax: Taxonomy) -> None:
        data = json.loads(paper_tax.to_json())
        assert data["format"] == "hiercls-taxonomy" and data["version"] == 1 and data["root"] == "root"
        assert data["nodes"] == list(PAPER_NODES)
        assert {tuple(e) for e in data["edges"]} == set(PAPER_EDGES)

    def _write(self, tmp_path, data: object) -> str:
        f = tmp_path / "t.json"
        f.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        return str(f)

    def test_hand_written_forms(self, tmp_path, paper_tax: Taxonomy) -> None:
        tree = {
            "root": {
                "Normal": None,
                "Reactive": None,
                "Leukemia": {"Acute": {"ALL": None, "AML": ["APL"]}, "Chronic": ["CLL", "CML"]},
            }
        }
        assert Taxonomy.from_json(self._write(tmp_path, {"tree": tree})) == paper_tax
        assert Taxonomy.from_json(self._write(tmp_path, {"edges": PAPER_EDGES})) == paper_tax
        parents = {c: p for p, c in PAPER_EDGES}
        assert Taxonomy.from_json(self._write(tmp_path, {"parents": parents})) == paper_tax
        # nodes + edges without format/version is accepted
        assert (
            Taxonomy.from_json(self._write(tmp_path, {"nodes": list(PAPER_NODES), "edges": PAPER_EDGES})) == paper_tax
        )

    def test_hand_written_root_and_dag(self, tmp_path) -> None:
        tax = Taxonomy.from_json(self._write(tmp_path, {"tree": {"a": ["x"], "b": ["y"]}, "root": "top"}))
        assert tax.root == "top" and tax.children("top") == ("a", "b")
        tax = Taxonomy.from_json(self._write(tmp_path, {"edges": [["a", "x"], ["b", "y"]], "root": "top"}))
        assert tax.root == "top"
        tax = Taxonomy.from_json(self._write(tmp_path, {"parents": {"x": "a", "y": "b"}, "root": "top"}))
        assert tax.root == "top"
        tax = Taxonomy.from_json(self._write(tmp_path, {"tree": {"r": {"a": ["x"], "b": ["x"]}}, "dag": True}))
        assert tax.parents("x") == ("a", "b")
        with pytest.raises(TaxonomyError, match="Duplicate name 'x'"):
            Taxonomy.from_json(self._write(tmp_path, {"tree": {"r": {"a": ["x"], "b": ["x"]}}}))

    def test_bad_json(self, tmp_path) -> None:
        with pytest.raises(TaxonomyError, match=r"t.json' is not valid JSON: Expecting"):
            Taxonomy.from_json(self._write(tmp_path, "{not json"))
        with pytest.raises(TaxonomyError, match=r"expected a JSON object, got list"):
            Taxonomy.from_json(self._write(tmp_path, [["r", "a"]]))
        with pytest.raises(
            TaxonomyError, match=r"expected keys 'nodes' and 'edges' \(as written by to_json\).*got \['nodes'\]"
        ):
            Taxonomy.from_json(self._write(tmp_path, {"nodes": ["r"]}))
        with pytest.raises(TaxonomyError, match=r"'format'/'version' are 'other'/None.*not a hiercls taxonomy file"):
            Taxonomy.from_json(self._write(tmp_path, {"format": "other", "nodes": ["r"], "edges": []}))
        with pytest.raises(
            TaxonomyError, match=r"written by a newer hiercls \(format version 2, this one reads up to 1\)"
        ):
            Taxonomy.from_json(self._write(tmp_path, {"version": 2, "nodes": ["r"], "edges": []}))

    def test_bad_nodes_edges_file(self, tmp_path) -> None:
        w = lambda d: self._write(tmp_path, d)  # noqa: E731
        with pytest.raises(TaxonomyError, match=r"t.json': 'root' = 'a' names a node that has parents \('r'\)"):
            Taxonomy.from_json(w({"root": "a", "nodes": ["r", "a"], "edges": [["r", "a"]]}))
        with pytest.raises(TaxonomyError, match=r"'nodes' must be a list of node names, got dict"):
            Taxonomy.from_json(w({"nodes": {"r": 1}, "edges": []}))
        with pytest.raises(TaxonomyError, match=r"'nodes': node names must be strings, got 1"):
            Taxonomy.from_json(w({"nodes": ["r", 1], "edges": []}))
        with pytest.raises(TaxonomyError, match=r"'edges' must be a list of \[parent, child\] pairs"):
            Taxonomy.from_json(w({"nodes": ["r"], "edges": "ra"}))
        with pytest.raises(TaxonomyError, match=r"edges\[0\] must be a \[parent, child\] pair, got \['r', 'a', 'x'\]"):
            Taxonomy.from_json(w({"nodes": ["r", "a"], "edges": [["r", "a", "x"]]}))
        with pytest.raises(TaxonomyError, match=r"does not list: 'b' \('nodes' also repeats 'a'\)"):
            Taxonomy.from_json(w({"nodes": ["r", "a", "a"], "edges": [["r", "a"], ["r", "b"]]}))
        with pytest.raises(TaxonomyError, match=r"t.json': 'nodes' lists 'a' more than once"):
            Taxonomy.from_json(w({"nodes": ["r", "a", "a"], "edges": [["r", "a"]]}))
        with pytest.raises(TaxonomyError, match=r"every parent must come before its children"):
            Taxonomy.from_json(w({"nodes": ["a", "r"], "edges": [["r", "a"]]}))
        with pytest.raises(TaxonomyError, match=r"must be in depth order"):
            Taxonomy.from_json(w({"nodes": ["r", "a", "a1", "b"], "edges": [["r", "a"], ["a", "a1"], ["r", "b"]]}))
        with pytest.raises(TaxonomyError, match=r"edges\[0\]: expected a \(parent, child\) pair, got 'ra'"):
            Taxonomy.from_json(w({"edges": ["ra"]}))


# ------------------------------------------------------------------- validation
class TestValidation:
    def test_empty(self) -> None:
        with pytest.raises(TaxonomyError, match=r"The taxonomy is empty: give at least one node"):
            Taxonomy.from_edges([])
        with pytest.raises(TaxonomyError, match=r"empty"):
            Taxonomy(nx.DiGraph())
        with pytest.raises(TaxonomyError, match=r"empty"):
            Taxonomy.from_dict({})

    def test_self_loop(self) -> None:
        with pytest.raises(TaxonomyError, match=r"Self-loop on 'a': an edge \(x, x\) would make a node its own parent"):
            Taxonomy.from_edges([("r", "a"), ("a", "a")])

    def test_cycle_is_shown(self) -> None:
        with pytest.raises(
            TaxonomyError, match=r"has a cycle: '(a|b|c)' -> '(a|b|c)' -> '(a|b|c)' -> '(a|b|c)'\."
        ) as info:
            Taxonomy.from_edges([("r", "a"), ("a", "b"), ("b", "c"), ("c", "a")])
        msg = str(info.value)
        assert all(f"'{n}'" in msg for n in "abc") and "'r'" not in msg
        with pytest.raises(TaxonomyError, match=r"has a cycle: 'x' -> 'y' -> 'x'|has a cycle: 'y' -> 'x' -> 'y'"):
            Taxonomy.from_edges([("x", "y"), ("y", "x")])  # no root at all: still reported as the cycle

    def test_several_roots_named(self) -> None:
        with pytest.raises(TaxonomyError, match=r"The taxonomy has 3 roots: 'a', 'b', 'c'. Give root='...' to join"):
            Taxonomy.from_edges([("a", "a1"), ("b", "b1"), ("c", "c1")])

    def test_root_joins_several_roots(self) -> None:
        tax = Taxonomy.from_edges([("a", "a1"), ("b", "b1")], root="all")
        assert tax.root == "all" and tax.children("all") == ("a", "b") and tax.depth("a1") == 2

    def test_root_above_single_root(self) -> None:
        tax = Taxonomy.from_edges([("a", "a1")], root="top")
        assert tax.nodes == ("top", "a", "a1")

    def test_root_names_existing_single_root(self) -> None:
        assert Taxonomy.from_edges([("a", "a1")], root="a").nodes == ("a", "a1")

    def test_root_names_a_non_root(self) -> None:
        with pytest.raises(TaxonomyError, match=r"root='a1' names a node that has parents \('a'\)"):
            Taxonomy.from_edges([("a", "a1")], root="a1")

    def test_root_is_one_of_several(self) -> None:
        with pytest.raises(TaxonomyError, match=r"root='a' is one of 2 roots \('a', 'b'\). Pass a new name"):
            Taxonomy.from_edges([("a", "a1"), ("b", "b1")], root="a")

    @pytest.mark.parametrize("bad", ["", 5])
    def test_root_not_a_string(self, bad: object) -> None:
        with pytest.raises(TaxonomyError, match=r"root: expected a non-empty string"):
            Taxonomy.from_edges([("a", "a1")], root=bad)  # type: ignore[arg-type]

    def test_errors_are_value_errors(self) -> None:
        assert issubclass(TaxonomyError, ValueError)
        assert issubclass(UnknownNodeError, TaxonomyError) and issubclass(UnknownNodeError, KeyError)


# ---------------------------------------------------------------------- queries
class TestQueries:
    def test_index_and_names(self, paper_tax: Taxonomy) -> None:
        assert [paper_tax.index(n) for n in PAPER_NODES] == list(range(11))
        assert paper_tax.index(np.int64(3)) == 3 and paper_tax.index(np.str_("AML")) == 7
        assert paper_tax.name(7) == "AML"
        assert list(paper_tax) == list(PAPER_NODES) and len(paper_tax) == 11 and paper_tax.num_nodes == 11
        assert "AML" in paper_tax and 10 in paper_tax and "nope" not in paper_tax and 11 not in paper_tax
        assert -1 not in paper_tax and 2.0 not in paper_tax and True not in paper_tax

    def test_unknown_name_suggests_closest(self, paper_tax: Taxonomy) -> None:
        with pytest.raises(
            UnknownNodeError,
            match=r"Unknown node 'Acuet': not in this taxonomy \(11 nodes, root 'root'\). Closest known names: 'Acute'",
        ):
            paper_tax.index("Acuet")
        with pytest.raises(
            UnknownNodeError, match=r"Unknown node 'zzzz': not in this taxonomy \(11 nodes, root 'root'\)\.$"
        ):
            paper_tax.index("zzzz")
        with pytest.raises(KeyError):
            paper_tax.index("zzzz")

    @pytest.mark.parametrize("bad", [11, -1, np.int64(100)])
    def test_index_out_of_range(self, paper_tax: Taxonomy, bad: int) -> None:
        with pytest.raises(
            UnknownNodeError, match=r"Node index -?\d+ is out of range: this taxonomy has 11 nodes \(0..10\)"
        ):
            paper_tax.index(bad)

    @pytest.mark.parametrize("bad", [1.0, True, None, ("a",)])
    def test_index_bad_type(self, paper_tax: Taxonomy, bad: object) -> None:
        with pytest.raises(UnknownNodeError, match=r"node: expected a node name \(str\) or index \(int\), got"):
            paper_tax.index(bad)  # type: ignore[arg-type]

    def test_tree_queries(self, paper_tax: Taxonomy) -> None:
        t = paper_tax
        assert t.root == "root" and t.parents("root") == () and t.parent("root") is None
        assert t.parents("APL") == ("AML",) and t.parent("APL") == "AML" and t.parent(10) == "AML"
        assert t.children("Leukemia") == ("Acute", "Chronic") and t.children("APL") == ()
        assert t.ancestors("APL") == ("root", "Leukemia", "Acute", "AML")
        assert t.ancestors("APL", include_self=True)[-1] == "APL" and t.ancestors("root") == ()
        assert t.descendants("Acute") == ("ALL", "AML", "APL")
        assert t.descendants("Acute", include_self=True) == ("Acute", "ALL", "AML", "APL")
        assert t.siblings("ALL") == ("AML",) and t.siblings("root") == () and t.siblings("APL") == ()
        assert set(t.siblings("Normal")) == {"Reactive", "Leukemia"}
        assert [t.depth(n) for n in PAPER_NODES] == [0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4]
        assert t.height() == 4 and t.height("Leukemia") == 3 and t.height("Chronic") == 1 and t.height("CML") == 0
        assert t.leaves == ("Normal", "Reactive", "ALL", "CLL", "CML", "APL")
        assert t.num_leaves == 6 and t.leaf_index.tolist() == [1, 2, 6, 8, 9, 10]
        assert t.is_leaf_mask.tolist() == [n in t.leaves for n in PAPER_NODES]
        assert t.is_leaf("ALL") and not t.is_leaf("AML")
        assert t.path("APL") == ("root", "Leukemia", "Acute", "AML", "APL") and t.path("root") == ("root",)
        assert t.paths("APL") == [t.path("APL")] and t.paths(0) == [("root",)]
        assert t.is_tree and t.max_depth == 4

    def test_index_arrays(self, paper_tax: Taxonomy) -> None:
        t = paper_tax
        assert t.parent_index.tolist() == [-1, 0, 0, 0, 3, 3, 4, 4, 5, 5, 7]
        assert t.depth_index.tolist() == [0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4]
        assert t.height_index.tolist() == [4, 0, 0, 3, 2, 1, 0, 1, 0, 0, 0]
        for arr in (t.parent_index, t.depth_index, t.height_index, t.children_index, t.ancestors_index, t.leaf_index):
            assert arr.dtype == np.int64
        assert t.is_leaf_mask.dtype == bool
        assert t.children_ptr.tolist() == [0, 3, 3, 3, 5, 7, 9, 9, 10, 10, 10, 10]
        assert t.children_index.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        assert t.ancestor_table[10].tolist() == [0, 3, 4, 7, 10]
        assert t.ancestor_table[1].tolist() == [0, 1, -1, -1, -1]
        assert t.ancestors_index[t.ancestors_ptr[10] : t.ancestors_ptr[11]].tolist() == [0, 3, 4, 7, 10]
        assert t.descendants_index[t.descendants_ptr[4] : t.descendants_ptr[5]].tolist() == [4, 6, 7, 10]
        assert t.parents_ptr.tolist() == [0] + list(range(11))
        assert t.edges_index().tolist() == [
            [0, 1],
            [0, 2],
            [0, 3],
            [3, 4],
            [3, 5],
            [4, 6],
            [4, 7],
            [5, 8],
            [5, 9],
            [7, 10],
        ]

    def test_levels(self, paper_tax: Taxonomy) -> None:
        levels = paper_tax.levels()
        assert [lv.tolist() for lv in levels] == [[0], [1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
        assert all(lv.dtype == np.int64 for lv in levels)
        assert [lv.tolist() for lv in Taxonomy.from_paths(["solo"]).levels()] == [[0]]

    def test_graph_is_frozen(self, paper_tax: Taxonomy) -> None:
        assert set(paper_tax.graph.edges) == set(PAPER_EDGES)
        with pytest.raises(nx.NetworkXError, match="Frozen graph"):
            paper_tax.graph.add_edge("ALL", "new")

    def test_lca(self, paper_tax: Taxonomy) -> None:
        t = paper_tax
        assert t.lca("APL", "ALL") == t.index("Acute") and isinstance(t.lca("APL", "ALL"), int)
        assert t.lca("APL", "CML") == t.index("Leukemia") and t.lca("Normal", "APL") == 0
        assert t.lca("AML", "APL") == t.index("AML") and t.lca(5, 5) == 5
        out = t.lca(np.array([[10, 6], [8, 1]]), np.array([[6, 9], [9, 2]]))
        assert out.shape == (2, 2) and out.tolist() == [[4, 3], [5, 0]]
        assert t.lca([10, 6, 8], 9).tolist() == [3, 3, 5]  # broadcast
        assert t.lca(torch.tensor([10]), ["ALL"]).tolist() == [4]
        assert t.lca([], []).shape == (0,)

    def test_lca_errors(self, paper_tax: Taxonomy) -> None:
        with pytest.raises(ValueError, match=r"a, b: shapes \(3,\) and \(2,\) do not broadcast"):
            paper_tax.lca([1, 2, 3], [1, 2])
        with pytest.raises(UnknownNodeError, match=r"Unknown node 'ALX'.*Closest known names: .*'ALL'"):
            paper_tax.lca("ALX", "ALL")
        with pytest.raises(UnknownNodeError, match=r"1 node indices out of range \[0, 11\): first \[11\]"):
            paper_tax.lca([1], [11])

    def test_lca_trusted_path_equals_public(self, paper_tax: Taxonomy) -> None:
        a, b = np.meshgrid(np.arange(11), np.arange(11))
        assert np.array_equal(paper_tax._lca_unchecked(a.ravel(), b.ravel()), paper_tax.lca(a.ravel(), b.ravel()))


class TestDag:
    def test_queries(self, dag: Taxonomy) -> None:
        assert dag.nodes == ("r", "a", "b", "z", "x", "y") and not dag.is_tree
        assert dag.parents("x") == ("a", "b") and dag.children("a") == ("x",)
        assert dag.ancestors("y") == ("r", "a", "b", "x")
        assert dag.descendants("b") == ("x", "y") and dag.descendants("r") == ("a", "b", "z", "x", "y")
        assert set(dag.siblings("x")) == set() and set(dag.siblings("a")) == {"b", "z"}
        assert sorted(dag.paths("y")) == [("r", "a", "x", "y"), ("r", "b", "x", "y")]
        assert dag.height() == 3 and dag.height("b") == 2
        assert dag.leaves == ("z", "y")

    def test_longest_path_depth(self) -> None:
        # y hangs off r directly and via a->b: its depth is the longest path (3), so every parent precedes it
        tax = Taxonomy.from_edges([("r", "y"), ("r", "a"), ("a", "b"), ("b", "y")])
        assert tax.nodes == ("r", "a", "b", "y") and tax.depth("y") == 3
        assert [lv.tolist() for lv in tax.levels()] == [[0], [1], [2], [3]]

    @pytest.mark.parametrize(
        "call",
        [
            lambda t: t.lca("a", "b"),
            lambda t: t.parent_index,
            lambda t: t.ancestor_table,
            lambda t: t.path("y"),
            lambda t: t.parent("x"),
        ],
        ids=["lca", "parent_index", "ancestor_table", "path", "parent"],
    )
    def test_tree_only_operations_raise(self, dag: Taxonomy, call) -> None:
        with pytest.raises(
            TaxonomyError,
            match=r"needs a tree, but this taxonomy is a DAG \(nodes with several parents, e\.g\. 'x'\)\. "
            r"Use .* instead",
        ):
            call(dag)

    def test_encode_multi_hot_known_mask(self, dag: Taxonomy) -> None:
        assert dag.multi_hot(["y"]).astype(int).tolist() == [[1, 1, 1, 0, 1, 1]]
        # below b: x and y; a shares them (the truth x or y would make a positive): unknown too
        assert dag.known_mask(["b"]).astype(int).tolist() == [[1, 0, 1, 1, 0, 0]]

    def test_str_marks_shared_nodes(self, dag: Taxonomy) -> None:
        text = str(dag)
        assert text.splitlines()[1:] == [
            "r",
            "├── a",
            "│   └── x *",
            "│       └── y",
            "├── b",
            "│   └── x *",
            "│       └── y",
            "└── z",
            "(* = node with several parents, shown under each)",
        ]
        assert repr(dag).startswith("Taxonomy(DAG, num_nodes=6, num_leaves=2, max_depth=3, root='r'")

    def test_str_truncates_exponential_dag(self) -> None:
        # 20 diamonds in a row: 2**20 root-to-leaf paths; the drawing must stay short
        edges = []
        for k in range(20):
            edges += [(f"j{k}", f"l{k}"), (f"j{k}", f"r{k}"), (f"l{k}", f"j{k + 1}"), (f"r{k}", f"j{k + 1}")]
        text = str(Taxonomy.from_edges(edges))
        lines = text.splitlines()
        assert len(lines) == 1 + 40 + 2 and lines[-2] == "... (more nodes not shown)"


# --------------------------------------------------------------------- encoding
class TestEncode:
    def test_names_ints_and_shapes(self, paper_tax: Taxonomy) -> None:
        t = paper_tax
        assert t.encode(["ALL", "Acute", "root"]).tolist() == [6, 4, 0]
        assert t.encode("APL").shape == () and int(t.encode("APL")) == 10
        assert t.encode(3).tolist() == 3
        assert t.encode(np.array([[1, 2], [3, 4]], dtype=np.int32)).tolist() == [[1, 2], [3, 4]]
        assert t.encode(np.array([[1, 2], [3, 4]], dtype=np.int32)).dtype == np.int64
        assert t.encode(np.array([10], dtype=np.uint8)).tolist() == [10]
        assert t.encode(np.array([["ALL"], ["CML"]])).tolist() == [[6], [9]]
        assert t.encode(np.array([b"ALL"])).tolist() == [6]
        assert t.encode(("ALL", "ALL")).tolist() == [6, 6]

    def test_mixed_names_and_indices(self, paper_tax: Taxonomy) -> None:
        # numpy would turn ["ALL", 3] into ["ALL", "3"]; 3 must stay an index
        assert paper_tax.encode(["ALL", 3, np.int64(0)]).tolist() == [6, 3, 0]
        assert paper_tax.encode([3, "ALL"]).tolist() == [3, 6]
        assert paper_tax.encode([np.str_("AML"), "ALL"]).tolist() == [7, 6]
        assert paper_tax.encode([["ALL", 1], [2, "AML"]]).tolist() == [[6, 1], [2, 7]]
        assert paper_tax.encode(np.array(["ALL", 3], dtype=object)).tolist() == [6, 3]
        assert paper_tax.encode(np.array(["ALL", "AML"], dtype=object)).tolist() == [6, 7]
        assert paper_tax.encode(np.array([1, 2], dtype=object)).tolist() == [1, 2]

    def test_torch_tensors(self, paper_tax: Taxonomy) -> None:
        for dtype in (torch.int64, torch.int32, torch.uint8):
            out = paper_tax.encode(torch.tensor([[1, 10]], dtype=dtype))
            assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.tolist() == [[1, 10]]
        assert paper_tax.encode(torch.tensor(4, requires_grad=False)).tolist() == 4
        with pytest.raises(UnknownNodeError, match=r"got dtype float32"):
            paper_tax.encode(torch.tensor([1.0]))

    def test_empty(self, paper_tax: Taxonomy) -> None:
        for empty in (
            [],
            (),
            np.array([], dtype=np.int64),
            np.array([], dtype=object),
            np.array([], dtype=str),
            torch.tensor([], dtype=torch.long),
            torch.tensor([]),
        ):
            out = paper_tax.encode(empty)
            assert out.dtype == np.int64 and out.shape == (0,)
        assert paper_tax.encode(np.zeros((0, 3), dtype=np.int32)).shape == (0, 3)
        assert paper_tax.multi_hot([]).shape == (0, 11) and paper_tax.known_mask([]).shape == (0, 11)
        assert paper_tax.names([]) == []

    def test_int64_is_not_copied(self, paper_tax: Taxonomy) -> None:
        idx = np.array([1, 2, 3], dtype=np.int64)
        assert np.shares_memory(paper_tax.encode(idx), idx)

    def test_unknown_names(self, paper_tax: Taxonomy) -> None:
        with pytest.raises(
            UnknownNodeError,
            match=r"2 unknown node names, first 'Acuet', 'zz': not in this taxonomy.*Closest known names: 'Acute'",
        ):
            paper_tax.encode(["ALL", "Acuet", "zz", "zz"])
        with pytest.raises(UnknownNodeError, match=r"2 unknown node names, first 'zz', 'Acuet'"):  # order of appearance
            paper_tax.encode(np.array([["zz", "ALL"], ["Acuet", "zz"]]))
        with pytest.raises(UnknownNodeError, match=r"Unknown node 'AXL'"):
            paper_tax.encode(["ALL", 1, "AXL"])  # mixed list goes through index()

    def test_out_of_range(self, paper_tax: Taxonomy) -> None:
        with pytest.raises(
            UnknownNodeError,
            match=r"3 node indices out of range \[0, 11\): first \[-1, 11, 12\]\. Indices must come from",
        ):
            paper_tax.encode([0, -1, 11, 12, 5])
        with pytest.raises(UnknownNodeError, match=r"out of range"):
            paper_tax.encode(np.array([2**64 - 1], dtype=np.uint64))
        with pytest.raises(UnknownNodeError, match=r"Node index 11 is out of range"):
            paper_tax.encode(["ALL", 11])

    def test_bad_types(self, paper_tax: Taxonomy) -> None:
        with pytest.raises(UnknownNodeError, match=r"labels: got booleans; expected node names or node indices"):
            paper_tax.encode(np.array([True, False]))
        # numpy reads [3, True] as [3, 1]: a mixed list used to score True as node 1
        for mixed in ([3, True], [[1, np.True_]], (0, False)):
            with pytest.raises(UnknownNodeError, match=r"got booleans among the node indices"):
                paper_tax.encode(mixed)
        with pytest.raises(
            UnknownNodeError, match=r"labels: expected node names or integer node indices, got dtype float64"
        ):
            paper_tax.encode([1.0, 2.0])
        with pytest.raises(
            UnknownNodeError, match=r"labels\[1\]: expected a node name \(str\) or index \(int\), got 1.5"
        ):
            paper_tax.encode(np.array(["ALL", 1.5], dtype=object))
        with pytest.raises(UnknownNodeError, match=r"got True \(bool\)"):
            paper_tax.encode(np.array([1, True], dtype=object))

    def test_names(self, paper_tax: Taxonomy) -> None:
        assert paper_tax.names([10, 0]) == ["APL", "root"]
        assert paper_tax.names(np.array([[1], [2]])) == ["Normal", "Reactive"]
        assert paper_tax.names(["AML"]) == ["AML"]
        with pytest.raises(UnknownNodeError, match="out of range"):
            paper_tax.names([99])

    def test_multi_hot(self, paper_tax: Taxonomy) -> None:
        mh = paper_tax.multi_hot(["APL", "Normal", "root", 5])
        assert mh.dtype == bool and mh.shape == (4, 11)
        assert mh.astype(int).tolist() == [
            [1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1],
            [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0],
        ]
        assert paper_tax.multi_hot(np.array([["APL"], ["ALL"]])).shape == (2, 11)  # flattened

    def test_known_mask(self, paper_tax: Taxonomy) -> None:
        km = paper_tax.known_mask(["Acute", "root", "CLL", "AML"])
        assert km.dtype == bool
        assert km.astype(int).tolist() == [
            [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0],
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [1] * 11,
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
        ]


# ----------------------------------------------------- identity, immutability, repr
class TestIdentity:
    def test_fingerprint_same_structure(self, paper_tax: Taxonomy) -> None:
        again = Taxonomy.from_edges(PAPER_EDGES)
        assert again.fingerprint == paper_tax.fingerprint and again == paper_tax and hash(again) == hash(paper_tax)
        assert len(paper_tax.fingerprint) == 64 and int(paper_tax.fingerprint, 16) >= 0
        # edges listed bottom-up, each parent's children still in the same order: same indices, same fingerprint
        bottom_up = [PAPER_EDGES[i] for i in (7, 8, 9, 5, 6, 3, 4, 0, 1, 2)]
        assert Taxonomy.from_edges(bottom_up) == paper_tax

    def test_fingerprint_is_a_stable_constant(self) -> None:
        # checkpoints store it: the hash of a fixed structure must not change between runs or versions
        tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
        assert tax.fingerprint == "3198ea2fb2d56010963649313dd609c6784b80abe4c5db922f9b91d91fe075b2"
        assert pickle.loads(pickle.dumps(tax)).fingerprint == tax.fingerprint

    def test_fingerprint_differs(self, paper_tax: Taxonomy) -> None:
        reordered = Taxonomy.from_edges([PAPER_EDGES[1], PAPER_EDGES[0]] + PAPER_EDGES[2:])  # Reactive before Normal
        assert reordered.nodes[1:3] == ("Reactive", "Normal")
        assert reordered.fingerprint != paper_tax.fingerprint and reordered != paper_tax
        moved = Taxonomy.from_edges([e if e != ("AML", "APL") else ("ALL", "APL") for e in PAPER_EDGES])
        assert moved.fingerprint != paper_tax.fingerprint
        renamed = Taxonomy.from_edges([(p, "APML" if c == "APL" else c) for p, c in PAPER_EDGES])
        assert renamed.fingerprint != paper_tax.fingerprint
        assert paper_tax != "root" and paper_tax != None  # noqa: E711

    def test_hashable(self, paper_tax: Taxonomy) -> None:
        assert {paper_tax, Taxonomy.from_edges(PAPER_EDGES)} == {paper_tax}

    def test_immutable(self, paper_tax: Taxonomy) -> None:
        with pytest.raises(AttributeError, match=r"Taxonomy is immutable: cannot set '_nodes'"):
            paper_tax._nodes = ("x",)  # type: ignore[misc]
        with pytest.raises(AttributeError, match=r"Taxonomy is immutable: cannot set 'extra'"):
            paper_tax.extra = 1  # type: ignore[attr-defined]
        with pytest.raises(AttributeError, match=r"Taxonomy is immutable: cannot delete '_depth'"):
            del paper_tax._depth
        with pytest.raises(AttributeError):
            paper_tax.num_nodes = 3  # type: ignore[misc]
        assert isinstance(paper_tax.nodes, tuple)

    def test_arrays_read_only(self, paper_tax: Taxonomy) -> None:
        for name in type(paper_tax).__slots__:
            value = getattr(paper_tax, name)
            if isinstance(value, np.ndarray):
                assert not value.flags.writeable, name
                with pytest.raises(ValueError, match="read-only"):
                    value.reshape(-1)[0] = value.reshape(-1)[0]
        for arr in paper_tax.levels():
            arr[:] = 0  # levels() returns fresh arrays: writing them cannot corrupt the taxonomy
        assert paper_tax.levels()[1].tolist() == [1, 2, 3]

    def test_pickle_and_copy(self, paper_tax: Taxonomy, dag: Taxonomy) -> None:
        for tax in (paper_tax, dag):
            back = pickle.loads(pickle.dumps(tax))
            assert back == tax and back.nodes == tax.nodes and back.is_tree == tax.is_tree
            assert np.array_equal(back.ancestors_index, tax.ancestors_index)
            assert copy.deepcopy(tax) == tax and copy.copy(tax) == tax
        assert pickle.loads(pickle.dumps(paper_tax)).lca("ALL", "APL") == 4

    def test_str_draws_the_tree(self, paper_tax: Taxonomy) -> None:
        assert str(paper_tax).splitlines()[1:] == [
            "root",
            "├── Normal",
            "├── Reactive",
            "└── Leukemia",
            "    ├── Acute",
            "    │   ├── ALL",
            "    │   └── AML",
            "    │       └── APL",
            "    └── Chronic",
            "        ├── CLL",
            "        └── CML",
        ]

    def test_repr(self, paper_tax: Taxonomy) -> None:
        assert repr(paper_tax) == (
            "Taxonomy(tree, num_nodes=11, num_leaves=6, max_depth=4, root='root', "
            f"fingerprint={paper_tax.fingerprint[:12]!r})"
        )
        assert str(paper_tax).splitlines()[0] == repr(paper_tax)

    def test_str_truncates_big_tree(self) -> None:
        tax = layered_taxonomy()
        lines = str(tax).splitlines()
        assert len(lines) == 1 + 40 + 1
        assert lines[1] == "root" and lines[-1] == f"... ({tax.num_nodes - 40} more nodes not shown)"
        assert len(repr(tax)) < 200


# ------------------------------------------------------------------------ scale
class TestSynthetic:
    def test_inat21_shape(self) -> None:
        start = time.perf_counter()
        tax = layered_taxonomy()
        elapsed = time.perf_counter() - start
        assert elapsed < 3.0, f"building the iNat21-shaped tree took {elapsed:.2f} s (goal < 1 s)"
        assert tax.num_nodes == 16328 == 1 + sum(INAT21_WIDTHS) and tax.num_leaves == 10000
        assert [len(lv) for lv in tax.levels()] == [1, *INAT21_WIDTHS]
        assert tax.is_tree and tax.max_depth == 7 and set(tax.depth_index[tax.leaf_index].tolist()) == {7}
        assert (np.diff(tax.children_ptr)[: tax.num_nodes - 10000] > 0).all()  # every inner node has a child

    def test_no_quadratic_arrays(self) -> None:
        tax = layered_taxonomy()
        n = tax.num_nodes
        arrays = {
            name: getattr(tax, name) for name in type(tax).__slots__ if isinstance(getattr(tax, name), np.ndarray)
        }
        assert len(arrays) >= 15  # the test inspects the real storage
        for name, arr in arrays.items():
            assert arr.size < n * n // 100, f"{name} has {arr.size} elements (shape {arr.shape})"
        total = sum(arr.nbytes for arr in arrays.values())
        assert total < 64 * n * (tax.max_depth + 16), f"{total} bytes held"  # O(n x (depth + log n)), tiny vs n^2

    def test_seed(self) -> None:
        assert layered_taxonomy((2, 4, 8), seed=1) == layered_taxonomy((2, 4, 8), seed=1)
        assert layered_taxonomy((2, 4, 8), seed=1) != layered_taxonomy((2, 4, 8), seed=2)

    def test_every_parent_gets_a_child(self) -> None:
        tax = layered_taxonomy((3, 3, 3), seed=5)
        assert tax.num_leaves == 3 and set(np.diff(tax.children_ptr)[1:7].tolist()) == {1}

    @pytest.mark.parametrize(
        ("widths", "message"),
        [
            ((), r"widths: expected at least one level width, got an empty sequence"),
            ((2, 0), r"widths\[1\]: expected a positive int \(a number of nodes\), got int 0"),
            ((-1,), r"widths\[0\]: expected a positive int .*got int -1"),
            ((2.9, 3.5), r"widths\[0\]: expected a positive int .*got float 2.9\. Give whole"),
            ((True, True), r"widths\[0\]: expected a positive int .*got bool True"),
            ((np.True_,), r"widths\[0\]: expected a positive int .*got bool (np\.)?True"),
            ("23", r"widths: expected a sequence of positive ints .*got str '23'"),
            (5, r"widths: expected a sequence of level widths, got the int 5\. For one level .* pass \(5,\)"),
            (np.array([[2, 3]]), r"widths: expected a sequence of positive ints .*got ndarray"),
            ({2: 1}, r"widths: expected a sequence of positive ints .*got dict"),
        ],
    )
    def test_bad_widths(self, widths: object, message: str) -> None:
        """Floats, bools and strings used to be converted with int() (2.9 -> 2, "23" -> (2, 3))."""
        with pytest.raises(TaxonomyError, match=message):
            layered_taxonomy(widths)  # type: ignore[arg-type]

    def test_widths_as_an_integer_array(self) -> None:
        assert layered_taxonomy(np.array([2, 4]), seed=0) == layered_taxonomy((2, 4), seed=0)
        assert layered_taxonomy([np.int64(2), 3], seed=0) == layered_taxonomy((2, 3), seed=0)

    def test_shrinking_widths(self) -> None:
        with pytest.raises(TaxonomyError, match=r"widths: each level needs at least as many nodes as the one above"):
            layered_taxonomy((4, 2))


def test_copy_and_deepcopy_return_the_same_immutable_object() -> None:
    import copy

    tax = Taxonomy.from_paths(["r/a/x", "r/b"])
    assert copy.copy(tax) is tax
    assert copy.deepcopy({"t": tax})["t"] is tax


def test_deep_chains_pass_the_recursion_limit() -> None:
    """Nothing recurses per level: a chain deeper than Python's recursion limit builds and answers."""
    import sys

    n = sys.getrecursionlimit() + 500
    names = [f"n{k}" for k in range(n)]
    nested: dict = {}
    cur = nested
    for name in names:
        cur[name] = {}
        cur = cur[name]
    for tax in (Taxonomy.from_dict(nested), Taxonomy.from_paths([tuple(names)])):
        assert tax.max_depth == n - 1 and tax.nodes == tuple(names)
        assert tax.paths(names[-1]) == [tuple(names)] and tax.path(names[-1]) == tuple(names)


def test_encoding_a_label_path_says_to_pass_the_last_name() -> None:
    tax = Taxonomy.from_paths(["blood/leukemia/acute/ALL", "blood/normal"])
    with pytest.raises(
        UnknownNodeError, match=r"looks like a path of names separated by '/'.*pass its last name \('ALL'\)"
    ):
        tax.encode(["blood/leukemia/acute/ALL", "blood/normal"])
    assert tax.encode([p.split("/")[-1] for p in ["blood/leukemia/acute/ALL", "blood/normal"]]).tolist() == [
        tax.index("ALL"),
        tax.index("normal"),
    ]


def test_a_parent_map_given_children_lists_points_to_from_dict() -> None:
    with pytest.raises(
        TaxonomyError,
        match=r"parents\['root'\]: expected the name of the parent of 'root'.*got list.*use Taxonomy.from_dict",
    ):
        Taxonomy.from_parent_map({"root": ["a", "b"]})
    with pytest.raises(
        TaxonomyError,
        match=r"parents\['a'\]: expected the name of the parent of 'a' \(a str, or None for the root\), got int 3\.$",
    ):
        Taxonomy.from_parent_map({"a": 3})


# ------------------------------------------------------- writing files safely
class TestToJsonFile:
    def test_lone_surrogates_are_escaped_and_round_trip(self, tmp_path) -> None:
        """A Latin-1 folder name reads as 'caf\\udce9' on Linux; to_json(path) used to raise UnicodeEncodeError."""
        tax = Taxonomy.from_paths(["cells/caf\udce9", "cells/ok"])
        f = tmp_path / "tax.json"
        tax.to_json(f)
        raw = f.read_bytes()
        raw.decode("utf-8")  # valid UTF-8: strict decoding does not raise
        assert b"caf\\udce9" in raw
        back = Taxonomy.from_json(f)
        assert back == tax and back.nodes == tax.nodes and back.fingerprint == tax.fingerprint
        assert Taxonomy.from_json(tax.to_json()) == tax  # the text holds the same escapes
        tax.to_json().encode("utf-8")

    @pytest.mark.skipif(os.name != "posix" or sys.platform == "darwin", reason="needs byte file names")
    def test_a_latin1_folder_name_round_trips_through_a_file(self, tmp_path) -> None:
        os.makedirs(os.path.join(os.fsencode(tmp_path), b"cells", b"caf\xe9"))
        tax = Taxonomy.from_folder(tmp_path / "cells")
        assert tax.nodes == ("cells", "caf\udce9")
        tax.to_json(tmp_path / "tax.json")
        assert Taxonomy.from_json(tmp_path / "tax.json").fingerprint == tax.fingerprint

    def test_a_failed_write_keeps_the_old_file(self, tmp_path, monkeypatch) -> None:
        """The file used to be opened (emptied) before the text was built."""
        f = tmp_path / "tax.json"
        good = Taxonomy.from_paths(["cells/ok"])
        good.to_json(f)
        before = f.read_bytes()
        # a name JSON cannot carry: refused before anything is written
        with pytest.raises(TaxonomyError, match=r"surrogate pair, which JSON reads back as one character"):
            Taxonomy.from_paths(["cells/x\ud83d\ude00"]).to_json(f)
        assert f.read_bytes() == before

        def broken(fd: int) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(os, "fsync", broken)  # fails after the bytes went out, before the rename
        with pytest.raises(OSError, match="disk full"):
            Taxonomy.from_paths(["cells/other"]).to_json(f)
        assert f.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["tax.json"]
        monkeypatch.undo()
        Taxonomy.from_paths(["cells/other"]).to_json(f)
        assert Taxonomy.from_json(f).leaves == ("other",)

    @pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
    def test_permissions_and_symlinks(self, tmp_path) -> None:
        """A new file gets the usual permissions (not a private temp file's); an old one keeps its own;
        a symlink is written through, not replaced."""
        tax = Taxonomy.from_paths(["r/a"])
        umask = os.umask(0o022)
        try:
            tax.to_json(tmp_path / "new.json")
        finally:
            os.umask(umask)
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
        (tmp_path / "old.json").write_text("{}")
        (tmp_path / "old.json").chmod(0o600)
        tax.to_json(tmp_path / "old.json")
        assert (tmp_path / "old.json").stat().st_mode & 0o777 == 0o600
        (tmp_path / "link.json").symlink_to(tmp_path / "old.json")
        Taxonomy.from_paths(["r/b"]).to_json(tmp_path / "link.json")
        assert (tmp_path / "link.json").is_symlink()
        assert Taxonomy.from_json(tmp_path / "old.json").leaves == ("b",)


# ------------------------------------------------------------ per-sample paths
class _CountingStr(str):
    """A path that counts how often it is split."""

    splits = 0

    def split(self, *args, **kwargs):  # type: ignore[override]
        type(self).splits += 1
        return super().split(*args, **kwargs)


class TestPerSamplePaths:
    def test_repeated_paths_are_read_once(self) -> None:
        """One path per sample: 400k samples took 6.9 s (every repeat split and validated) vs 0.3 s."""
        distinct = [_CountingStr(p) for p in ("cell/wbc/lym", "cell/rbc", "cell/wbc/mono")]
        per_sample = [distinct[k % 3] for k in range(3000)]
        _CountingStr.splits = 0
        tax = Taxonomy.from_paths(per_sample, sort=True)
        assert _CountingStr.splits == 3
        assert tax == Taxonomy.from_paths([str(p) for p in distinct], sort=True)

    def test_same_result_and_messages_as_without_repeats(self) -> None:
        paths = ["r/b", ("r", "a"), "r/b", ["r", "a"], np.array(["r", "c"]), "r/b"]
        tax = Taxonomy.from_paths(paths)
        assert tax.nodes == ("r", "b", "a", "c")
        # errors name the index of the first offending path in the caller's list
        with pytest.raises(TaxonomyError, match=r"paths\[4\]: 'a' has parent 'x' here but 'r'"):
            Taxonomy.from_paths(["r/a", "r/a", "r/a", "x", "x/a", "r/a"])
        with pytest.raises(TaxonomyError, match=r"paths\[3\]: expected a tuple of node names"):
            Taxonomy.from_paths(["r/a", "r/a", "r/a", 7, 7])
        with pytest.raises(TaxonomyError, match=r"paths\[2\]: node names must be strings, got \['a'\]"):
            Taxonomy.from_paths(["r/a", "r/a", ["r", ["a"]]])  # unhashable: read without deduplication


# ----------------------------------------------------------- short root errors
def test_several_roots_message_is_short_with_the_fix_first() -> None:
    flat = [f"class_{i}" for i in range(5000)]  # a flat label list without its common root
    with pytest.raises(TaxonomyError) as info:
        Taxonomy.from_paths(flat)
    msg = str(info.value)
    assert len(msg) < 250 and "and 4995 more" in msg and "'class_5'" not in msg
    assert msg.index("Give root='...'") < 160
    with pytest.raises(TaxonomyError) as info:
        Taxonomy.from_paths(flat, root="class_3")
    msg = str(info.value)
    assert len(msg) < 250 and msg.startswith("root='class_3' is one of 5000 roots") and "and 4995 more" in msg


# -------------------------------------------------------- unordered collections
class _Reversed(set):
    """A set that iterates in reverse sorted order: another PYTHONHASHSEED, made deterministic."""

    def __iter__(self):
        return iter(sorted(set.__iter__(self), reverse=True))


class _ReversedFrozen(frozenset):
    def __iter__(self):
        return iter(sorted(frozenset.__iter__(self), reverse=True))


class TestUnorderedInputs:
    LABELS = ("cell/wbc/lymphocyte", "cell/rbc", "cell/wbc/monocyte", "cell/platelet")
    EDGES = (("cell", "wbc"), ("cell", "rbc"), ("wbc", "lym"), ("wbc", "mono"))

    @pytest.mark.parametrize("kind", [_Reversed, _ReversedFrozen, set, frozenset])
    def test_sets_are_read_sorted(self, kind: type) -> None:
        expected = Taxonomy.from_paths(self.LABELS, sort=True)
        assert expected.nodes == ("cell", "platelet", "rbc", "wbc", "lymphocyte", "monocyte")
        assert Taxonomy.from_paths(kind(self.LABELS)).fingerprint == expected.fingerprint
        assert Taxonomy.from_paths(kind(self.LABELS), sort=False).fingerprint == expected.fingerprint
        edges = Taxonomy.from_edges(kind(self.EDGES))
        assert edges.nodes == ("cell", "rbc", "wbc", "lym", "mono")
        assert edges.fingerprint == Taxonomy.from_edges(self.EDGES, sort=True).fingerprint

    def test_from_edges_sort(self) -> None:
        a = Taxonomy.from_edges(self.EDGES, sort=True)
        assert a == Taxonomy.from_edges(self.EDGES[::-1], sort=True)
        assert a.nodes == ("cell", "rbc", "wbc", "lym", "mono")
        assert Taxonomy.from_edges(self.EDGES).nodes == ("cell", "wbc", "rbc", "lym", "mono")  # default: as given
        assert Taxonomy.from_edges(np.array(self.EDGES), sort=True) == a
        assert Taxonomy.from_edges({("a", "a1"), ("b", "b1")}, root="top").children("top") == ("a", "b")

    def test_the_set_order_does_not_depend_on_the_hash_seed(self) -> None:
        code = (
            "from hiercls import Taxonomy;"
            f"print(Taxonomy.from_paths(set({self.LABELS!r})).fingerprint,"
            f" Taxonomy.from_edges(set({self.EDGES!r})).fingerprint)"
        )
        outs = {
            subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for seed in ("1", "2", "3")
        }
        assert len(outs) == 1


# -------------------------------------------------------- "root" in JSON files
class TestJsonRoot:
    @pytest.mark.parametrize(
        "data",
        [
            {"edges": [["a", "a1"], ["b", "b1"]]},
            {"tree": {"a": ["a1"], "b": ["b1"]}},
            {"parents": {"a1": "a", "b1": "b"}},
            {"nodes": ["a", "b", "a1", "b1"], "edges": [["a", "a1"], ["b", "b1"]]},
        ],
        ids=["edges", "tree", "parents", "nodes+edges"],
    )
    def test_root_joins_several_roots_in_every_form(self, data: dict) -> None:
        tax = Taxonomy.from_json({**data, "root": "top"})
        assert tax.root == "top" and tax.children("top") == ("a", "b") and tax.depth("b1") == 2
        with pytest.raises(TaxonomyError) as info:  # without it: the fix is the key, not an argument
            Taxonomy.from_json(data)
        msg = str(info.value)
        assert msg.startswith("the JSON object: The taxonomy has 2 roots: 'a', 'b'.")
        assert 'Add a key "root": "..."' in msg and "root=" not in msg
        with pytest.raises(TaxonomyError) as info:
            Taxonomy.from_json({**data, "root": "a"})
        msg = str(info.value)
        assert "'root' = 'a' is one of 2 roots ('a', 'b'). Use a new name as 'root'" in msg and "root=" not in msg
        with pytest.raises(TaxonomyError, match=r"'root' = 'a1' names a node that has parents \('a'\)") as info:
            Taxonomy.from_json({**data, "root": "a1"})
        assert "root=" not in str(info.value)

    def test_root_of_a_written_file_is_its_root(self, tmp_path, paper_tax: Taxonomy) -> None:
        back = Taxonomy.from_json(paper_tax.to_json())
        assert back.nodes == paper_tax.nodes and back.fingerprint == paper_tax.fingerprint
        data = json.loads(paper_tax.to_json())
        with pytest.raises(TaxonomyError, match=r"'root' is 'sample' but the node without parents is 'root'"):
            Taxonomy.from_json({**data, "root": "sample"})  # a damaged file: it would renumber every node
        with pytest.raises(TaxonomyError, match=r"'root' must be a non-empty string \(the root's name\), got 3"):
            Taxonomy.from_json({**data, "root": 3})

    def test_dag_as_0_or_1_and_to_json_into_a_pipe(self, tmp_path) -> None:
        """Older tools wrote "dag": 1; and to_json('/dev/stdout') failed making a temporary file in /proc."""
        assert Taxonomy.from_json({"tree": {"r": {"a": ["x"], "b": ["x"]}}, "dag": 1}).parents("x") == ("a", "b")
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        import threading

        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
        reader.start()
        tax = Taxonomy.from_paths(["r/a", "r/b"])
        tax.to_json(fifo)
        reader.join(10)
        assert Taxonomy.from_json(got[0]) == tax

    @pytest.mark.parametrize("bad", ["false", "true", 2, -1, None, [True]])
    def test_dag_must_be_a_json_bool(self, bad: object) -> None:
        """bool("false") is True: "dag": "false" used to accept a node under two parents."""
        with pytest.raises(TaxonomyError, match=r"'dag' must be true or false \(a JSON boolean\), got "):
            Taxonomy.from_json({"tree": {"r": {"a": ["x"], "b": ["x"]}}, "dag": bad})
        assert Taxonomy.from_json('{"tree": {"r": {"a": ["x"], "b": ["x"]}}, "dag": true}').parents("x") == ("a", "b")
        with pytest.raises(TaxonomyError, match=r"^the JSON text: Duplicate name 'x' .*or add \"dag\": true if"):
            Taxonomy.from_json('{"tree": {"r": {"a": ["x"], "b": ["x"]}}, "dag": false}')


# ---------------------------------------------------- deep trees: lazy ancestor table
def caterpillar(depth: int) -> Taxonomy:
    """A spine of ``depth`` nodes, each with one extra leaf: ``2 * depth`` nodes, max depth ``depth``."""
    spine = [(f"s{i}", f"s{i + 1}") for i in range(depth - 1)]
    return Taxonomy.from_edges(spine + [(f"s{i}", f"leaf{i}") for i in range(depth)])


class TestLazyAncestorTable:
    def test_built_on_first_access_only(self) -> None:
        """It is num_nodes x (max_depth + 1): 244 MiB for an 8,000-node caterpillar, built by every
        constructor before, though only some metrics and heads use it."""
        tracemalloc.start()
        try:
            tax = caterpillar(400)
            built = tracemalloc.get_traced_memory()[0]
            table = tax.ancestor_table
            grown = tracemalloc.get_traced_memory()[0] - built
        finally:
            tracemalloc.stop()
        assert table.shape == (800, 401) and grown >= 0.9 * table.nbytes  # it did not exist before
        assert tax.ancestor_table is table and not table.flags.writeable  # cached, read-only
        for i in (0, 1, 399, 400, 799):
            d = tax.depth(i)
            assert tax.names(table[i, : d + 1]) == list(tax.path(i)) and (table[i, d + 1 :] == -1).all()
        rebuilt = pickle.loads(pickle.dumps(tax))  # not pickled, not part of equality
        assert rebuilt == tax and len(pickle.dumps(tax)) == len(pickle.dumps(rebuilt))
        assert np.array_equal(rebuilt.ancestor_table, table)

    def test_deep_build_is_linear_in_the_csr(self) -> None:
        tax = caterpillar(2000)
        n = tax.num_nodes
        assert tax.max_depth == 2000
        assert tax.ancestors_index.size == int((tax.depth_index + 1).sum())
        rows = [tax.ancestors_index[tax.ancestors_ptr[i] : tax.ancestors_ptr[i + 1]] for i in (n - 1, n // 2)]
        assert [tax.names(r) for r in rows] == [list(tax.path(n - 1)), list(tax.path(n // 2))]


# --------------------------------------------------------- from_folder details
class TestFromFolder:
    def test_root_is_named_after_the_folder_as_given(self, tmp_path, monkeypatch) -> None:
        (tmp_path / "v2_final" / "a").mkdir(parents=True)
        link = tmp_path / "cells"
        try:
            link.symlink_to(tmp_path / "v2_final", target_is_directory=True)
        except OSError:
            pytest.skip("no symlinks here")
        assert Taxonomy.from_folder(link).root == "cells"  # not the link's target, 'v2_final'
        assert Taxonomy.from_folder(str(link) + os.sep).root == "cells"
        assert Taxonomy.from_folder(link / "a" / "..").root == "cells"  # '..' taken as written, like a shell
        monkeypatch.chdir(tmp_path / "v2_final")  # the working folder has no symlinked name: getcwd() is real
        assert Taxonomy.from_folder(".").root == "v2_final"
        assert Taxonomy.from_folder(".", root="blood").nodes == ("blood", "a")

    def test_files_are_not_statted(self, tmp_path, monkeypatch) -> None:
        """Path.is_dir() stat()ed every image; DirEntry.is_dir() reads the type from the listing."""
        (tmp_path / "top" / "a").mkdir(parents=True)
        for k in range(50):
            (tmp_path / "top" / "a" / f"img{k}.jpg").write_bytes(b"")
        statted: list[str] = []
        real_stat = os.stat

        def counting_stat(path, *args, **kwargs):
            statted.append(os.fsdecode(path))
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", counting_stat)
        assert Taxonomy.from_folder(tmp_path / "top").nodes == ("top", "a")
        assert not [p for p in statted if p.endswith(".jpg")]

    def test_bad_root(self, tmp_path) -> None:
        for bad in ("", 3):
            with pytest.raises(TaxonomyError, match=r"root: expected a non-empty string \(the root's name\), got"):
                Taxonomy.from_folder(tmp_path, root=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------- error messages
@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: Taxonomy.from_dict({"r": {"a": {"x": None, 7: None}}}),
            TaxonomyError,
            r"^tree\['r'\]\['a'\]: node names must be strings, got 7 \(int\)\. Convert them with str\(\)",
        ),
        (
            lambda: Taxonomy.from_parent_map({"a": "r", 3: "a"}),
            TaxonomyError,
            r"^parents: the key with parent 'a': node names must be strings, got 3 \(int\)\. Convert them with str",
        ),
        (
            lambda: Taxonomy.from_parent_map({"a": "r", "b": ""}),
            TaxonomyError,
            r"^parents\['b'\]: node names must be non-empty strings",
        ),
        (
            lambda: Taxonomy.from_paths([b"r/a"]),
            TaxonomyError,
            r"^paths\[0\]: got bytes b'r/a'; node names must be str, bytes are not accepted\. Decode them first",
        ),
        (
            lambda: Taxonomy.from_paths([("r", b"a")]),
            TaxonomyError,
            r"^paths\[0\]: node names must be strings, got bytes b'a'\. Decode them first",
        ),
        (
            lambda: Taxonomy.from_json('[["r", "a"]]'),
            TaxonomyError,
            r"^the JSON text: expected a JSON object, got list.*wrap it: \{\"edges\": \[\.\.\.\]\}",
        ),
    ],
    ids=["dict-key", "parent-map-key", "parent-map-empty", "paths-bytes", "path-part-bytes", "json-list-text"],
)
def test_constructor_messages_say_where_and_how_to_fix(call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        ((n for n in ["a"]), UnknownNodeError, r"^labels: got a generator, .*Pass a list, e\.g\. list\(labels\)"),
        (iter(["a"]), UnknownNodeError, r"^labels: got a list_iterator, .*list\(labels\)"),
        ({"a", "b"}, UnknownNodeError, r"^labels: got a set, which has no order.*list\(labels\)"),
        (frozenset({"a"}), UnknownNodeError, r"^labels: got a frozenset, which has no order"),
        ({"a": 1}.keys(), UnknownNodeError, r"^labels: got a dict_keys, which has no order"),
        ([-(2**70), 1], UnknownNodeError, r"^labels: 1 node indices out of range \[0, 3\): first \[-1180"),
        ([[2**70]], UnknownNodeError, r"^labels: 1 node indices out of range"),
        (np.array([2**70, 1], dtype=object), UnknownNodeError, r"^labels: 1 node indices out of range"),
        ([["a"], ["a", "b"]], ValueError, r"^labels: nested lists of different lengths \(a ragged list\)"),
    ],
    ids=["generator", "iterator", "set", "frozenset", "keys", "huge-negative", "huge-nested", "huge-object", "ragged"],
)
def test_encode_messages_name_labels(labels: object, error: type, message: str) -> None:
    tax = Taxonomy.from_paths(["r/a", "r/b"])
    with pytest.raises(error, match=message):
        tax.encode(labels)


# ------------------------------------------------------------- warning location
def test_integer_names_warning_points_at_the_callers_line(tmp_path) -> None:
    """The warning pointed inside hiercls for from_folder and from_json (a fixed stacklevel=3)."""
    for c in ("0", "1"):
        (tmp_path / "digits" / c).mkdir(parents=True)
    calls = [
        lambda: Taxonomy.from_paths(["r/0"]),
        lambda: Taxonomy.from_edges([("r", "0")]),
        lambda: Taxonomy.from_dict({"r": ["0"]}),
        lambda: Taxonomy.from_parent_map({"0": "r"}),
        lambda: Taxonomy.from_folder(tmp_path / "digits"),
        lambda: Taxonomy.from_json({"tree": {"r": ["0"]}}),
        lambda: Taxonomy.from_json('{"nodes": ["r", "0"], "edges": [["r", "0"]]}'),
        lambda: Taxonomy(nx.DiGraph([("r", "0")])),
        lambda: layered_taxonomy((1,)).from_paths(["r/0"]),
    ]
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert [(w.filename, w.category) for w in caught] == [(__file__, UserWarning)]


def test_a_one_element_integer_tensor_or_array_is_a_node_index() -> None:
    # tax.name(preds[0]) used to raise "expected a node name (str) or index (int)" for a tensor element
    import torch

    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2"])
    preds = torch.tensor([3, 5], dtype=torch.int32)
    assert tax.name(preds[0]) == "a1" and tax.index(preds[1]) == 5 and tax.path(preds[0]) == ("r", "a", "a1")
    assert tax.name(np.array(4)) == "a2" and tax.name(torch.tensor([2])) == "b"
    assert preds[0] in tax and torch.tensor(7) not in tax and np.array([6]) in tax
    meta = torch.tensor(3, device="meta")
    assert meta not in tax  # no value to read: not an index (it raised from .item())
    for bad in (torch.tensor(1.0), torch.tensor(True), torch.tensor([1, 2]), np.array([1.0]), np.array([[2]]), meta):
        with pytest.raises(UnknownNodeError, match=r"node: expected a node name \(str\) or index \(int\)"):
            tax.name(bad)
        assert bad not in tax
    with pytest.raises(UnknownNodeError, match="Node index 99 is out of range"):
        tax.name(torch.tensor(99))


def test_a_multidigraph_is_read_as_its_edges() -> None:
    """MultiDiGraph subclasses DiGraph, but its .edges iterates (parent, child, key): the key was read as
    an attribute dict and the constructor died with a bare TypeError."""
    graph = nx.MultiDiGraph([("r", "a"), ("r", "b"), ("r", "a")])  # a parallel edge too
    tax = Taxonomy(graph)
    assert tax == Taxonomy.from_edges([("r", "a"), ("r", "b")]) and tax.is_tree


def test_from_json_names_edge_ends_missing_from_the_node_list() -> None:
    """An unlisted parent showed up as a second root, with advice (add a 'root' key) that failed again."""
    for edges in ([["r", "a"], ["typo", "b"]], [["r", "a"], ["r", "typo"]]):
        data = {"nodes": ["r", "a", "b"], "edges": edges}
        with pytest.raises(TaxonomyError, match=r"edges name 1 node\(s\) that 'nodes' does not list: 'typo'"):
            Taxonomy.from_json(data)
        with pytest.raises(TaxonomyError, match="'nodes' does not list: 'typo'"):
            Taxonomy.from_json({**data, "root": "top"})


def test_names_that_json_escapes_alike_get_different_fingerprints() -> None:
    """ensure_ascii writes U+1F600 and the two surrogates typed as code points as the same escapes: two
    different taxonomies compared equal, and a checkpoint's fingerprint check would pass across them."""
    emoji, pair = "\U0001f600", "\ud83d\ude00"
    a, b = Taxonomy.from_paths([f"r/{emoji}"]), Taxonomy.from_paths([f"r/{pair}"])
    assert a.fingerprint != b.fingerprint and a != b
    # names without surrogates hash as before: a fingerprint recorded by an earlier version still matches
    plain = Taxonomy.from_paths(["r/a", f"r/{emoji}"])
    edges = sorted(map(tuple, plain.edges_index().tolist()))
    payload = json.dumps({"nodes": list(plain.nodes), "edges": edges}, separators=(",", ":"))
    assert plain.fingerprint == hashlib.sha256(payload.encode()).hexdigest()


def test_an_empty_input_with_root_says_what_root_does() -> None:
    with pytest.raises(TaxonomyError, match=r"empty.*root='r' names a new root above the input's top nodes"):
        Taxonomy.from_paths([], root="r")


def test_flags_are_checked_by_every_constructor(tmp_path) -> None:
    """``dag="false"`` (a truthy string) silently built a DAG in from_paths/from_dict/from_folder, and
    ``sort="no"`` sorted; only from_edges checked its ``dag``."""
    (tmp_path / "top" / "a").mkdir(parents=True)
    calls = {
        "from_paths dag": lambda v: Taxonomy.from_paths(["r/a"], dag=v),
        "from_paths sort": lambda v: Taxonomy.from_paths(["r/a"], sort=v),
        "from_edges sort": lambda v: Taxonomy.from_edges([("r", "a")], sort=v),
        "from_dict dag": lambda v: Taxonomy.from_dict({"r": ["a"]}, dag=v),
        "from_folder dag": lambda v: Taxonomy.from_folder(tmp_path / "top", dag=v),
    }
    for what, call in calls.items():
        name = what.split()[1]
        with pytest.raises(TaxonomyError, match=rf"^{name}: expected True or False, got str 'false'"):
            call("false")
        assert call(np.bool_(True)) == call(True), what


def test_from_paths_refuses_a_mapping_instead_of_reading_its_keys() -> None:
    with pytest.raises(
        TaxonomyError, match=r"^paths: expected a list of paths, got a dict \(keys 'path'\).*df\['path'\]"
    ):
        Taxonomy.from_paths({"path": ["r/a/x", "r/a/y", "r/b"]})


def test_from_json_edges_form_honours_dag_false() -> None:
    edges = [["r", "a"], ["r", "b"], ["a", "x"], ["b", "x"]]
    assert not Taxonomy.from_json({"edges": edges}).is_tree  # like from_edges: a DAG unless told otherwise
    with pytest.raises(TaxonomyError, match=r"'x' has 2 parents.*write \"dag\": true"):
        Taxonomy.from_json({"edges": edges, "dag": False})


def test_from_folder_order_does_not_depend_on_the_os(tmp_path, monkeypatch) -> None:
    """Siblings were sorted with os.path.normcase: case-blind on Windows, another order and fingerprint."""
    import ntpath

    for name in ("alpha", "Beta", "Zeta"):
        (tmp_path / "cells" / name).mkdir(parents=True)
    here = Taxonomy.from_folder(tmp_path / "cells")
    assert here.nodes == ("cells", "Beta", "Zeta", "alpha")
    monkeypatch.setattr(os.path, "normcase", ntpath.normcase)  # Windows' case folding
    assert Taxonomy.from_folder(tmp_path / "cells") == here


def test_empty_cells_of_a_path_table_are_named_with_a_fix_that_works() -> None:
    """None/NaN padding got "Convert them with str() first", which makes nodes named 'None' and 'nan'."""
    for empty in (None, float("nan")):
        rows = [("blood", "leukemia", "ALL"), ("blood", "normal", empty)]
        with pytest.raises(TaxonomyError, match=r"paths\[1\]: .*an empty cell .*Drop the empty cells") as err:
            Taxonomy.from_paths(rows)
        assert "Convert them with str()" not in str(err.value)
        fixed = Taxonomy.from_paths([tuple(x for x in row if isinstance(x, str)) for row in rows])
        assert fixed.leaves == ("normal", "ALL")


def test_from_json_dict_takes_tuples_and_names_repeated_nodes_with_the_source() -> None:
    tax = Taxonomy.from_paths(["r/a/x", "r/b"])
    parsed = json.loads(tax.to_json())
    as_tuples = {**parsed, "nodes": tuple(parsed["nodes"]), "edges": [tuple(e) for e in parsed["edges"]]}
    assert Taxonomy.from_json(as_tuples) == tax
    with pytest.raises(TaxonomyError, match=r"^the JSON object: 'nodes' lists 'a' more than once"):
        Taxonomy.from_json({**parsed, "nodes": [*parsed["nodes"], "a"]})


def test_a_name_twice_in_one_path_is_named_as_such() -> None:
    """'a/a' was reported as "'a' has parent 'a' here but None in an earlier path"."""
    for path in ("a/a", "r/a/b/a"):
        with pytest.raises(TaxonomyError, match=rf"^paths\[0\]: 'a' appears twice in the path '{path}'"):
            Taxonomy.from_paths([path])
        with pytest.raises(TaxonomyError, match="appears twice"):
            Taxonomy.from_paths([path], dag=True)


def test_a_huge_numeric_name_warns_without_crashing() -> None:
    """The warning called int() on the name: over 4,300 digits that raises ValueError."""
    with pytest.warns(UserWarning, match="look like integers"):
        tax = Taxonomy.from_paths(["r/" + "9" * 5000])
    assert tax.num_nodes == 2


def test_two_roots_from_a_misspelt_parent_name_say_so_instead_of_only_offering_a_root() -> None:
    """A typo in a parent name ('mamal') made a second root, and the message offered only root='...',
    which would have accepted the typo."""
    with pytest.raises(
        TaxonomyError, match=r"2 roots: 'animal', 'mamal'.* misspelt parent name \('mamal' for 'mammal'\)"
    ):
        Taxonomy.from_parent_map({"mammal": "animal", "dog": "mammal", "cat": "mamal"})
    with pytest.raises(
        TaxonomyError, match=r"2 roots: 'a', 'c'\. Give root='\.\.\.' to join them under a common root\.$"
    ):
        Taxonomy.from_edges([("a", "b"), ("c", "d")])  # nothing close: no hint
    # systematic names are not typos, nor is the root of the largest part
    for edges in ([("n0", "x"), ("n10", "y")], [("node_0", "node_1"), ("node_1", "node_2"), ("node_90", "z")]):
        with pytest.raises(TaxonomyError) as err:
            Taxonomy.from_edges(edges)
        assert "misspelt" not in str(err.value), err.value


def test_as_tensor_gives_each_index_array_as_a_writable_tensor_without_a_warning() -> None:
    """torch.as_tensor(tax.parent_index) warns that the array is not writable; users had to copy by hand."""
    import warnings

    import torch

    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in Taxonomy.TENSOR_ARRAYS:
            t = tax.as_tensor(name, device="cpu")
            np.testing.assert_array_equal(t.numpy(), getattr(tax, name))
            assert t.device.type == "cpu" and t.dtype == (torch.bool if name == "is_leaf_mask" else torch.int64)
    t = tax.as_tensor("parent_index")
    t[0] = 7  # the caller's copy
    assert tax.parent_index[0] == -1
    with pytest.raises(
        ValueError, match=r"name: expected one of 'parent_index'.*got 'parent'\. Did you mean 'parent_index'\?"
    ):
        tax.as_tensor("parent")
    with pytest.raises(ValueError, match=r"Did you mean 'ancestors_index'\?"):  # the array, not its row pointers
        tax.as_tensor("ancestors")
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")], dag=True)
    with pytest.raises(TaxonomyError):
        dag.as_tensor("parent_index")


class TestNewUserMistakes:
    """A fresh-user review's mistakes that built a wrong taxonomy, or got a message naming neither the
    argument nor the fix."""

    def test_a_name_with_blanks_around_it_is_refused(self) -> None:
        # 'leukemia ' (a CSV cell) made a second 'leukemia' branch beside the first
        with pytest.raises(TaxonomyError, match=r"paths\[1\]: the name 'leukemia ' starts or ends with blanks"):
            Taxonomy.from_paths(["blood/leukemia/ALL", "blood/leukemia /AML"])
        with pytest.raises(TaxonomyError, match=r"paths\[0\]: the name ' AML'"):
            Taxonomy.from_paths([("blood", " AML")])
        assert "a b" in Taxonomy.from_paths(["r/a b"])  # blanks inside a name are fine

    def test_backslash_paths_are_named_with_sep(self) -> None:
        # one such path made a one-node taxonomy named 'blood\\leukemia\\ALL'
        for paths in (["blood\\leukemia\\ALL"], ["blood\\leukemia\\ALL", "blood\\normal"]):
            with pytest.raises(TaxonomyError, match=r"Windows-style paths\? Pass sep='\\\\'"):
                Taxonomy.from_paths(paths)
        assert Taxonomy.from_paths(["blood\\leukemia\\ALL"], sep="\\").max_depth == 2
        assert Taxonomy.from_paths(["r/a\\b"]).max_depth == 1  # a backslash in a name, with '/' paths

    def test_reversed_edges_are_named_even_with_a_root(self) -> None:
        upside_down = [("ALL", "leukemia"), ("AML", "leukemia"), ("leukemia", "blood")]
        for root in (None, "sample"):  # root= joined the 2 'roots' into an upside-down DAG with one leaf
            with pytest.raises(
                TaxonomyError, match=r"2 roots \('ALL', 'AML'\) and only 1 leaf: the edges look reversed"
            ):
                Taxonomy.from_edges(upside_down, root=root)
        tax = Taxonomy.from_edges([(p, c) for c, p in upside_down])
        assert tax.root == "blood" and set(tax.leaves) == {"ALL", "AML"}
        with pytest.raises(TaxonomyError, match=r"2 roots: 'a', 'c'\. Give root="):  # a forest: not reversed
            Taxonomy.from_edges([("a", "b"), ("c", "d")])

    def test_missing_labels_are_named_by_position(self, paper_tax: Taxonomy) -> None:
        for missing in (None, float("nan")):
            with pytest.raises(UnknownNodeError, match=r"labels\[1\]: got (None|nan), a missing label\. .* root"):
                paper_tax.encode(["ALL", missing])
        with pytest.raises(UnknownNodeError, match=r"labels\[1, 0\]: got None"):
            paper_tax.encode(np.array([["ALL", "AML"], [None, "ALL"]], dtype=object))
        assert paper_tax.encode(["ALL", 0]).tolist() == [paper_tax.index("ALL"), 0]  # names and indices mixed

    def test_a_name_in_another_case_is_suggested(self, paper_tax: Taxonomy) -> None:
        for typed in ("all", "ALL ", "aml"):
            with pytest.raises(UnknownNodeError, match=rf"Closest known names: '{typed.strip().upper()}'"):
                paper_tax.encode([typed])


def test_siblings_spelt_alike_but_for_case_are_warned() -> None:
    """'blood/Leukemia/AML' beside 'blood/leukemia/ALL' built two leukemia branches with nothing said."""
    with pytest.warns(
        UserWarning, match=r"1 pair\(s\) of sibling nodes differ only in case: 'leukemia' and 'Leukemia' under 'blood'"
    ):
        tax = Taxonomy.from_paths(["blood/leukemia/ALL", "blood/Leukemia/AML"])
    assert tax.num_nodes == 5  # warned, not refused: case may carry meaning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Taxonomy.from_paths(["blood/x/ALL", "blood/y/all"])  # alike in case only, but not siblings
        Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])  # one node, two parents


def test_from_json_reads_a_file_saved_with_a_byte_order_mark(tmp_path, paper_tax: Taxonomy) -> None:
    """Windows Notepad saves UTF-8 with a BOM: json refused it ('Unexpected UTF-8 BOM')."""
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + paper_tax.to_json().encode("utf-8"))
    assert Taxonomy.from_json(path).fingerprint == paper_tax.fingerprint


def test_from_paths_hands_networkx_the_distinct_edges_once(monkeypatch) -> None:
    """helper-121: an add_node and add_edge per name of every path (each clearing networkx's caches) took
    3.2 s for the 1,501 paths of a depth-1,500 tree. The distinct edges now go in one add_edges_from,
    giving the same taxonomy (the fingerprint covers node order) as the edges given directly."""
    import networkx as nx

    depth = 200
    paths = ["/".join(f"s{j}" for j in range(i + 1)) + f"/l{i}" for i in range(depth)]
    calls = []
    original = nx.DiGraph.add_edge
    monkeypatch.setattr(nx.DiGraph, "add_edge", lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    tax = Taxonomy.from_paths(paths)
    assert calls == []
    monkeypatch.undo()
    edges = []  # in order of first appearance along the paths
    for i in range(depth):
        edges += [(f"s{i - 1}", f"s{i}")] if i else []
        edges.append((f"s{i}", f"l{i}"))
    assert tax.num_nodes == 2 * depth and tax.max_depth == depth
    assert tax == Taxonomy.from_edges(edges) and tax.fingerprint == Taxonomy.from_edges(edges).fingerprint
