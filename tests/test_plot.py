"""Figures: contents (axes, titles, texts, artists), the layout, errors, and lazy matplotlib import."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hiercls import Taxonomy
from hiercls.decoding import operating_curve
from hiercls.metrics import level_confusion_matrix, node_recall
from hiercls.plot import (
    plot_level_confusion_matrices,
    plot_mistake_severity_histogram,
    plot_operating_curve,
    plot_taxonomy,
    taxonomy_layout,
)
from tests.strategies import trees

Y_TRUE = ["ALL", "AML", "APL", "CLL", "CML", "Normal", "Reactive", "APL"]
Y_PRED = ["ALL", "ALL", "AML", "CLL", "Acute", "Normal", "Normal", "APL"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_importing_hiercls_does_not_import_matplotlib() -> None:
    code = "import sys, hiercls, hiercls.metrics, hiercls.decoding, hiercls.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_figure_without_matplotlib_says_how_to_install_it(paper_tax: Taxonomy) -> None:
    """plot_taxonomy (the guide's first figure) checked its colormap with a bare `import matplotlib` first:
    a core-only install got ModuleNotFoundError instead of the install hint the other figures give."""
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.pyplot'] = None\n"
        "from hiercls import Taxonomy; from hiercls import plot as P\n"
        "tax = Taxonomy.from_paths(['r/a/a1', 'r/a/a2', 'r/b'])\n"
        "calls = {'plot_taxonomy': lambda: P.plot_taxonomy(tax),\n"
        "         'plot_taxonomy cmap': lambda: P.plot_taxonomy(tax, {'a1': 0.5}, cmap='viridis'),\n"
        "         'plot_level_confusion_matrices': lambda: P.plot_level_confusion_matrices([3], [3], tax),\n"
        "         'plot_mistake_severity_histogram': lambda: P.plot_mistake_severity_histogram([3], [4], tax)}\n"
        "for name, call in calls.items():\n"
        "    try:\n"
        "        call()\n"
        "    except ImportError as err:\n"
        "        print(name, 'hiercls[plot]' in str(err))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.split("\n")[:-1]
    assert len(lines) == 4 and all(line.endswith(" True") for line in lines), out.stdout + out.stderr


def test_level_confusion_matrices_contents(paper_tax: Taxonomy) -> None:
    fig = plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, normalize="none")
    assert [ax.get_title() for ax in fig.axes] == ["depth 1", "depth 2", "depth 3", "depth 4", ""]  # + colour bar
    ax = fig.axes[2]  # depth 3: ALL, AML, CLL, CML (+ ends above)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["ALL", "AML", "CLL", "CML", "ends above"]
    matrix = level_confusion_matrix(Y_TRUE, Y_PRED, paper_tax, 3, abstain_column=True)
    cells = [t.get_text() for t in ax.texts]
    assert len(cells) == matrix.size and cells == [str(v) for v in matrix.ravel().tolist()]
    assert ax.images[0].get_array().tolist() == matrix.tolist()
    normalized = plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, depths=[1])
    assert len(normalized.axes) == 2  # the matrix and its colour bar
    np.testing.assert_allclose(normalized.axes[0].images[0].get_array().sum(axis=1), 1.0)


def test_taxonomy_plot_with_recall_values(paper_tax: Taxonomy) -> None:
    recall = node_recall(Y_TRUE, Y_PRED, paper_tax)
    fig = plot_taxonomy(paper_tax, recall, value_label="recall", title="per-node recall")
    assert len(fig.axes) == 2  # the tree and its colour bar
    assert fig.axes[1].get_ylabel() == "recall"
    texts = {t.get_text().split("\n")[0]: t.get_text() for t in fig.axes[0].texts}
    assert set(texts) == set(paper_tax.nodes)
    assert texts["CML"] == "CML\n0"  # CML was predicted as Acute
    assert texts["Reactive"] == "Reactive\n0" and texts["ALL"] == "ALL\n1"
    assert fig.axes[0].get_title() == "per-node recall"
    assert len(fig.axes[0].collections) == 3  # edges, grey (no value), coloured
    plain = plot_taxonomy(paper_tax)
    assert len(plain.axes) == 1 and len(plain.axes[0].texts) == paper_tax.num_nodes
    segments = plain.axes[0].collections[0].get_segments()
    assert len(segments) == paper_tax.num_nodes - 1


def test_taxonomy_plot_skips_labels_on_large_trees_and_accepts_a_mapping() -> None:
    tax = Taxonomy.from_paths([f"r/g{i}/l{i}_{j}" for i in range(10) for j in range(10)])
    with pytest.warns(
        UserWarning, match="node names are not drawn: the taxonomy has 111 nodes, more than label_up_to=60"
    ):
        fig = plot_taxonomy(tax, {"g0": 1.0, "l3_3": 0.5})
    assert len(fig.axes[0].texts) == 0
    coloured = fig.axes[0].collections[2]
    assert sorted(coloured.get_array().tolist()) == [0.5, 1.0]


@given(tax=trees(max_nodes=30))
def test_layout_puts_parents_between_children_and_leaves_apart(tax: Taxonomy) -> None:
    pos = taxonomy_layout(tax)
    assert (pos[:, 1] == -tax.depth_index).all()
    leaves_x = np.sort(pos[tax.leaf_index, 0])
    assert leaves_x.tolist() == list(range(tax.num_leaves))
    for node in range(tax.num_nodes):
        kids = [tax.index(c) for c in tax.children(node)]
        if kids:
            assert pos[node, 0] == pytest.approx(pos[kids, 0].mean())


def test_operating_curve_plot(paper_tax: Taxonomy) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((20, paper_tax.num_nodes))
    probs[:, 0] = 1.0  # the root's marginal
    target = rng.integers(0, paper_tax.num_nodes, 20)
    a = operating_curve(probs, target, paper_tax)
    b = operating_curve(probs[::-1], target, paper_tax)
    fig = plot_operating_curve({"model A": a, "model B": b}, title="operating points")
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"model A (AUC {a.auc:.3f})", f"model B (AUC {b.auc:.3f})"]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), a.specificity)
    assert ax.get_title() == "operating points"
    assert len(plot_operating_curve(a).axes[0].lines) == 1


def test_mistake_severity_histogram(paper_tax: Taxonomy) -> None:
    fig = plot_mistake_severity_histogram(Y_TRUE, Y_PRED, paper_tax, distance="path")
    ax = fig.axes[0]
    # mistakes: AML->ALL 2, APL->AML 1, CML->Acute 3, Reactive->Normal 2
    assert sorted((round(p.get_x() + p.get_width() / 2), int(p.get_height())) for p in ax.patches) == [
        (1, 1),
        (2, 2),
        (3, 1),
    ]
    assert [t.get_text() for t in ax.texts] == ["1", "2", "1"]
    assert ax.get_title() == "mistake severity 2.00 (path, 4 mistakes)"
    fig2, ax2 = plt.subplots()
    assert plot_mistake_severity_histogram(Y_TRUE, Y_TRUE, paper_tax, ax=ax2) is fig2
    assert ax2.get_title() == "mistake severity: no mistakes (path)"  # a ragged tree: path distance


def test_plot_errors(paper_tax: Taxonomy) -> None:
    with pytest.raises(ValueError, match=r"values: expected 11 per-node values"):
        plot_taxonomy(paper_tax, [1.0, 2.0])
    with pytest.raises(ValueError, match="normalize: expected 'true' or 'none'"):
        plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, normalize="all")
    with pytest.raises(ValueError, match="depth 3 has 4 nodes, more than max_classes=3"):
        plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, depths=[3], max_classes=3)
    wide = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1"])
    with pytest.raises(ValueError, match="No depth has at most max_classes=1 nodes"):
        plot_level_confusion_matrices(["a1"], ["b1"], wide, max_classes=1)
    with pytest.raises(ValueError, match=r"depths: expected depths in \[1, 4\]"):
        plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, depths=[0])
    with pytest.raises(ValueError, match="curves: expected an OperatingCurve"):
        plot_operating_curve({})


def test_plot_taxonomy_colour_scale_can_be_fixed(paper_tax) -> None:
    values = {"Normal": 0.99, "Reactive": 1.0}
    fig = plot_taxonomy(paper_tax, values, vmin=0.0, vmax=1.0)
    norm = fig.axes[0].collections[-1].norm
    assert (norm.vmin, norm.vmax) == (0.0, 1.0)
    auto = plot_taxonomy(paper_tax, values).axes[0].collections[-1].norm
    assert (auto.vmin, auto.vmax) == (0.99, 1.0)


@given(st.text(alphabet="ab_- ", min_size=0, max_size=40))
def test_long_node_names_wrap_without_losing_characters(name: str) -> None:
    from hiercls.plot import _wrap_name

    wrapped = _wrap_name(name)
    assert wrapped.replace("\n", "") == name
    if len(name) <= 12:
        assert wrapped == name


def test_taxonomy_figure_widens_for_long_names() -> None:
    short = Taxonomy.from_paths([f"r/n{i}" for i in range(8)])
    long = Taxonomy.from_paths([f"r/segmented_neutrophil_{i}" for i in range(8)])
    w_short = plot_taxonomy(short).get_size_inches()[0]
    w_long = plot_taxonomy(long).get_size_inches()[0]
    assert w_long > w_short
    texts = [t.get_text() for t in plot_taxonomy(long).axes[0].texts]
    assert "segmented_\nneutrophil_0" in texts
    plt.close("all")


def test_confusion_panels_share_one_scale_with_a_colour_bar_and_blank_unseen_rows(paper_tax: Taxonomy) -> None:
    """Colours were scaled to each panel's own maximum (a best recall of 0.5 drawn as dark as 1.0) with no
    colour bar; a class without test samples showed a row of zeros, like a class always missed."""
    fig = plot_level_confusion_matrices(["ALL", "CML", "Normal"], ["AML", "CML", "Normal"], paper_tax)
    *panels, bar = fig.axes
    assert bar.get_ylabel() == "fraction of the true class"
    assert {ax.images[0].get_clim() for ax in panels} == {(0.0, 1.0)}
    depth1 = panels[0].images[0].get_array()
    reactive = paper_tax.levels()[1].tolist().index(paper_tax.index("Reactive"))
    assert depth1.mask[reactive].all()  # no Reactive sample: a blank row, no numbers written in it
    counts = plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, normalize="none")
    tops = {ax.images[0].get_clim()[1] for ax in counts.axes[:-1]}
    assert len(tops) == 1 and counts.axes[-1].get_ylabel() == "samples"
    plt.close("all")


def test_confusion_figure_grows_with_classes_and_names_and_says_what_it_left_out() -> None:
    small = Taxonomy.from_paths([f"r/g{i // 5}/c{i}" for i in range(10)])
    wide = Taxonomy.from_paths([f"r/g{i // 5}/segmented_neutrophil_{i:02d}" for i in range(30)])
    y = [f"c{i}" for i in range(10)]
    w_small = plot_level_confusion_matrices(y, y, small, depths=[2]).get_size_inches()[0]
    y_wide = [f"segmented_neutrophil_{i:02d}" for i in range(30)]
    w_wide = plot_level_confusion_matrices(y_wide, y_wide, wide, depths=[2]).get_size_inches()[0]
    assert w_wide > 2 * w_small
    fig = plot_level_confusion_matrices(y_wide, y_wide, wide, max_classes=10)  # depth 2 (30 nodes) is left out
    assert any("not shown: depth 2" in t.get_text() for t in fig.texts)
    plt.close("all")


def test_confusion_matrix_errors_leave_no_figure_open(paper_tax: Taxonomy) -> None:
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    plt.close("all")
    with pytest.raises(Exception, match="needs a tree"):
        plot_level_confusion_matrices(["x"], ["x"], dag)
    for bad in ([], 2, [True]):
        with pytest.raises(ValueError, match="depths: expected"):
            plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, depths=bad)
    assert plt.get_fignums() == []


def test_taxonomy_values_read_as_they_are(paper_tax: Taxonomy) -> None:
    """Values printed with :.2g read 0.996 as "1" and 999 as "1e+03"; equal values got a scale of 0.9 to 1.1."""
    from hiercls.plot import _format_value

    assert [_format_value(v) for v in (0.996, 0.9999, 0.0049, 0.5, 999.0, 1234.0, 560.4, 1.0, 0.0)] == [
        "0.996",
        ">0.999",
        "<0.01",
        "0.50",
        "999",
        "1234",
        "560",
        "1",
        "0",
    ]
    fig = plot_taxonomy(paper_tax, np.ones(paper_tax.num_nodes), value_label="recall")
    assert fig.axes[0].collections[-1].get_clim() == (0.0, 1.0)
    with pytest.raises(Exception, match="values: 'nope' is not a node"):
        plot_taxonomy(paper_tax, {"nope": 1.0})
    plt.close("all")


def test_crowded_or_unbreakable_labels_do_not_overlap() -> None:
    """A 24-inch cap with labels drawn up to 60 nodes let names run into each other; a name without
    ``_``, ``-`` or spaces was never wrapped."""
    from hiercls.plot import _wrap_name

    assert _wrap_name("B" * 30) == "\n".join(["B" * 10] * 3)  # even pieces
    assert _wrap_name("metamyelocyte") == "metamyelocyte"  # a little over the width: no one-letter orphan
    crowded = Taxonomy.from_paths([f"root/group{g}/leafname{g}{k:02d}x" for g in range(5) for k in range(10)])
    fig = plot_taxonomy(crowded)
    rotation = {t.get_text().split("\n")[0]: t.get_rotation() for t in fig.axes[0].texts}
    assert {rotation[name] for name in crowded.leaves} == {90.0}  # the leaves' labels run downwards
    assert rotation["group0"] == 0.0 and rotation["root"] == 0.0  # inner nodes keep theirs
    # and the axes reaches below them: no label leaves the figure
    fig.canvas.draw()
    box = fig.get_window_extent()
    assert all(t.get_window_extent().y0 >= box.y0 - 1 for t in fig.axes[0].texts)
    few = plot_taxonomy(Taxonomy.from_paths(["r/a/a1", "r/b"])).axes[0].texts
    assert {t.get_rotation() for t in few} == {0.0}
    plt.close("all")


def test_operating_curves_beyond_ten_and_a_list_given_by_mistake(paper_tax: Taxonomy) -> None:
    probs = np.tile(np.linspace(1.0, 0.1, paper_tax.num_nodes), (2, 1))
    curve = operating_curve(probs, ["ALL", "AML"], paper_tax)
    fig = plot_operating_curve({f"m{k}": curve for k in range(12)})
    lines = fig.axes[0].get_lines()
    assert lines[0].get_color() == lines[10].get_color() and lines[0].get_linestyle() != lines[10].get_linestyle()
    with pytest.raises(ValueError, match=r"curves: expected .* got list.*Name each curve"):
        plot_operating_curve([curve, curve])
    sub = plt.figure().subfigures(1, 2)[0].subplots()
    assert isinstance(plot_operating_curve(curve, ax=sub), matplotlib.figure.Figure)
    plt.close("all")


def test_one_mistake_reads_in_the_singular(paper_tax: Taxonomy) -> None:
    fig = plot_mistake_severity_histogram(["ALL", "AML"], ["ALL", "ALL"], paper_tax)
    assert fig.axes[0].get_title().endswith("1 mistake)")
    assert all(float(tick).is_integer() for tick in fig.axes[0].get_yticks())
    plt.close("all")


def _overlapping_labels(fig) -> int:
    import itertools

    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].texts if t.get_text().strip()]
    return sum(1 for a, b in itertools.combinations(boxes, 2) if a.overlaps(b))


def test_tree_labels_do_not_overlap_on_crowded_or_valued_trees() -> None:
    """Inner-node labels kept their full width when the leaves turned downwards (27 overlapping pairs on
    a row of 28 long inner names), and the room for labels ignored the axes' margins and colour bar."""
    many_inner = Taxonomy.from_paths([f"r/categoryname{k:02d}x/leaf{k}" for k in range(28)])
    valued = Taxonomy.from_paths(
        [f"r/g{a}/h{a}{b}/leaf_name_number_{a}_{b}_{c}" for a in range(3) for b in range(3) for c in range(2)]
    )
    pbc = Taxonomy.from_json("examples/leukemia/taxonomies/pbc.json")
    for tax in (many_inner, valued, pbc):
        assert _overlapping_labels(plot_taxonomy(tax)) == 0
        assert _overlapping_labels(plot_taxonomy(tax, np.linspace(0, 1, tax.num_nodes), vmin=0, vmax=1)) == 0
    texts = [t.get_text() for t in plot_taxonomy(many_inner).axes[0].texts]
    assert any(t.endswith("\u2026") for t in texts)  # inner names shortened to their room, visibly
    sub = plt.figure().subfigures(1, 2)[0].subplots()
    assert isinstance(plot_taxonomy(pbc, ax=sub), matplotlib.figure.Figure)  # it read a SubFigure's width
    plt.close("all")


def test_infinite_values_are_drawn_grey_with_their_value_and_left_out_of_the_colour_scale() -> None:
    """A node whose value was +/-inf went to the coloured scatter, which does not draw non-finite
    colours: the node vanished."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])  # nodes r, a, b, a1, a2
    fig = plot_taxonomy(tax, np.array([np.inf, 0.5, 0.2, 0.9, np.nan]))
    ax = fig.axes[0]
    grey, coloured = ax.collections[1], ax.collections[2]
    pos = taxonomy_layout(tax)
    assert sorted(map(tuple, np.asarray(grey.get_offsets()).tolist())) == sorted(map(tuple, pos[[0, 4]].tolist()))
    assert np.isfinite(np.asarray(coloured.get_array())).all() and len(coloured.get_offsets()) == 3
    assert coloured.get_clim() == (0.2, 0.9)  # inf left out of the scale
    assert "r\ninf" in [t.get_text() for t in ax.texts]
    fig = plot_taxonomy(tax, np.array([-np.inf, 0.5, 0.2, 0.9, 0.4]))
    assert len(fig.axes[0].collections[1].get_offsets()) == 1 and fig.axes[0].collections[2].get_clim() == (0.2, 0.9)
    plt.close("all")


@pytest.mark.parametrize("with_values", [False, True])
def test_long_wrapped_inner_label_stops_above_the_next_depth(with_values: bool) -> None:
    """An 80-character inner name wrapped to 9 lines ran down past the markers of the next depth."""
    inner = "Acute_lymphoblastic_leukemia_B_cell_precursor_with_recurrent_genetic_abnormalities"
    tax = Taxonomy.from_paths([f"root/{inner}/ALL1", f"root/{inner}/ALL2", "root/CLL"])
    fig = plot_taxonomy(tax, np.linspace(0, 1, tax.num_nodes) if with_values else None)
    fig.canvas.draw()
    ax = fig.axes[0]
    label = next(t for t in ax.texts if t.get_text().startswith("Acute"))
    marker_top = ax.transData.transform((0.0, -2.0))[1] + np.sqrt(300) / 2 * fig.dpi / 72  # 300 pt^2 markers
    assert label.get_window_extent().y0 > marker_top
    name_lines = label.get_text().split("\n")[: -1 if with_values else None]
    assert name_lines[-1].endswith("\u2026")  # visibly shortened
    plt.close("all")


def test_confusion_matrices_of_a_root_only_taxonomy_say_there_is_no_depth() -> None:
    """A one-node taxonomy was told to pass a larger max_classes, or that depths lie in [1, 0]."""
    one = Taxonomy.from_paths(["r"])
    for kw in ({}, {"max_classes": 10**6}, {"depths": [1]}):
        with pytest.raises(ValueError, match=r"only its root, so there is no depth >= 1 to draw"):
            plot_level_confusion_matrices(["r"], ["r"], one, **kw)
    assert plt.get_fignums() == []


def test_a_tree_drawn_into_a_narrow_axes_leaves_labels_out_rather_than_overlap() -> None:
    """Into the left half of a 12 x 5 figure, a 60-node tree had 84 overlapping label pairs: turned leaf
    labels side by side in 0.1-inch slots, and inner names cut to nothing that still printed their value."""
    paths = [
        f"root/group_{g}_longish_name/sub_{g}_{s}_intermediate/leaf_{g}_{s}_{leaf}_species"
        for g in range(6)
        for s in range(3)
        for leaf in range(2)
    ][:-1]
    tax = Taxonomy.from_paths(paths)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    with pytest.warns(UserWarning, match=r"leaf names and values left out: 35 leaves in .* Draw into a wider ax"):
        plot_taxonomy(tax, np.linspace(0, 1, tax.num_nodes), ax=axes[0])
    fig.canvas.draw()
    texts = [t for t in axes[0].texts if t.get_text().strip()]
    assert texts and not any(t.get_text().startswith("\n") for t in texts)  # no value without its name
    boxes = [t.get_window_extent() for t in texts]
    assert sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]) == 0
    # markers fit their slots: diameter (points) at most 0.8 of a leaf's slot
    slot_points = axes[0].get_window_extent().width / (fig.dpi / 72) / (tax.num_leaves + 0.4)
    assert max(np.sqrt(c.get_sizes()).max() for c in axes[0].collections[1:3]) <= 0.8 * slot_points * 1.05
    # a slot for one line keeps the names and drops only their values
    fig, axes = plt.subplots(1, 1, figsize=(7.5, 5))
    with pytest.warns(UserWarning, match="the values under the leaf names left out"):
        plot_taxonomy(tax, np.linspace(0, 1, tax.num_nodes), ax=axes)
    leaf_texts = [t.get_text() for t in axes.texts if t.get_rotation() == 90]
    assert len(leaf_texts) == tax.num_leaves and all("\n" not in t for t in leaf_texts)
    assert _overlapping_labels(fig) == 0
    plt.close("all")


def test_bad_colour_and_count_options_are_refused_before_a_figure_exists(paper_tax: Taxonomy) -> None:
    plt.close("all")
    values = np.linspace(0, 1, paper_tax.num_nodes)
    for kw, msg in (
        ({"cmap": "viridiss"}, r"cmap: 'viridiss' is not a matplotlib colormap .*Did you mean 'viridis'"),
        ({"vmin": "zero"}, r"vmin: expected a finite number or None"),
        ({"vmax": float("nan")}, r"vmax: expected a finite number"),
        ({"label_up_to": -1}, r"label_up_to: expected a whole number >= 0"),
    ):
        with pytest.raises(ValueError, match=msg):
            plot_taxonomy(paper_tax, values, **kw)
    with pytest.raises(
        ValueError, match=r"annotate_up_to: expected a whole number >= 0, or math.inf for no limit, got '10'"
    ):
        plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, annotate_up_to="10")
    assert plt.get_fignums() == []


def test_counts_take_inf_and_large_numbers_and_colour_options_take_none_and_0d_arrays(paper_tax) -> None:
    """``label_up_to=math.inf`` and ``annotate_up_to=math.inf`` (no limit), ``cmap=None`` (matplotlib's
    default) and 0-d numpy/torch limits were refused by the checks added before a figure exists."""
    import math

    import torch

    values = np.linspace(0, 1, paper_tax.num_nodes)
    for up_to in (math.inf, 10**30, 1e9, np.int64(100), torch.tensor(100)):
        fig = plot_taxonomy(paper_tax, values, label_up_to=up_to)
        assert len(fig.axes[0].texts) == paper_tax.num_nodes
        fig = plot_level_confusion_matrices(Y_TRUE, Y_PRED, paper_tax, annotate_up_to=up_to)
        assert fig.axes[0].texts
    fig = plot_taxonomy(paper_tax, values, cmap=None)
    assert fig.axes[0].collections[-1].get_cmap().name == plt.rcParams["image.cmap"]
    fig = plot_taxonomy(paper_tax, values, vmin=np.array(0.2), vmax=torch.tensor(0.8, dtype=torch.float64))
    norm = fig.axes[0].collections[-1].norm
    assert (norm.vmin, norm.vmax) == (0.2, 0.8) and type(norm.vmin) is float
    plt.close("all")
    for kw, msg in (
        ({"label_up_to": 2.5}, r"label_up_to: expected a whole number >= 0, or math.inf for no limit, got 2.5"),
        ({"label_up_to": float("nan")}, r"label_up_to: expected a whole number"),
        ({"label_up_to": -math.inf}, r"label_up_to: expected a whole number"),
        ({"vmin": np.array([0.0, 1.0])}, r"vmin: expected a finite number or None"),
        ({"vmax": torch.tensor(float("inf"))}, r"vmax: expected a finite number or None .*, got inf"),
    ):
        with pytest.raises(ValueError, match=msg):
            plot_taxonomy(paper_tax, values, **kw)
    assert plt.get_fignums() == []


def test_the_leaves_left_out_warning_fits_who_sized_the_figure_and_mentions_values_only_when_given() -> None:
    """With ax=None the figure is sized by plot_taxonomy: it was told to draw into a wider ax, and the
    warning spoke of values that were never given."""
    import math
    import warnings

    tax = Taxonomy.from_paths([f"r/g{g}/leaf_{g}_{k}_name" for g in range(30) for k in range(10)])  # 300 leaves
    with pytest.warns(
        UserWarning, match=r"^plot_taxonomy: leaf names left out: the figure reached its maximum width"
    ) as got:
        plot_taxonomy(tax, label_up_to=math.inf)
    assert "value" not in str(got[0].message) and "figsize=" in str(got[0].message)
    values = np.linspace(0, 1, tax.num_nodes)
    with pytest.warns(UserWarning, match=r"^plot_taxonomy: leaf names and values left out: the figure reached its max"):
        plot_taxonomy(tax, values, label_up_to=math.inf)
    _, ax = plt.subplots(figsize=(8, 5))
    with pytest.warns(
        UserWarning, match=r"^plot_taxonomy: leaf names left out: 300 leaves in .* Draw into a wider ax"
    ) as got:
        plot_taxonomy(tax, ax=ax, label_up_to=math.inf)
    assert "value" not in str(got[0].message)
    # a slot with room for one line loses nothing when there are no values: no warning
    tax = Taxonomy.from_paths([f"r/g{g}/leaf_{g}_{k}" for g in range(12) for k in range(10)])  # 120 leaves
    _, ax = plt.subplots(figsize=(24, 5))
    with pytest.warns(UserWarning, match="the values under the leaf names left out"):
        plot_taxonomy(tax, np.linspace(0, 1, tax.num_nodes), ax=ax, label_up_to=math.inf)
    _, ax = plt.subplots(figsize=(24, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_taxonomy(tax, ax=ax, label_up_to=math.inf)
    assert all(t.get_text() for t in ax.texts if t.get_rotation() == 90)


@pytest.mark.parametrize("with_values", [True, False])
def test_following_the_narrow_leaves_advice_clears_the_warning(with_values):
    """The warning gave the width of the drawing area without the colour bar, so an axes of that width was
    still too narrow and warned again; the width it names is the axes' own."""
    import math
    import re
    import warnings

    tax = Taxonomy.from_paths([f"r/g{i // 10}/leaf{i}" for i in range(120)])
    values = np.linspace(0, 1, tax.num_nodes) if with_values else None
    fig, ax = plt.subplots(figsize=(8, 6))
    with pytest.warns(UserWarning, match=r"leaves in an axes [\d.]+ inches wide") as caught:
        plot_taxonomy(tax, values, ax=ax, label_up_to=math.inf)
    plt.close(fig)
    need = float(re.search(r"about (\d+) inches", str(caught[0].message)).group(1))
    fig = plt.figure(figsize=(need / 0.775, 6))  # 0.775: the share of a figure a default subplot spans
    ax = fig.add_subplot(111)
    assert ax.get_position().width * fig.get_figwidth() == pytest.approx(need)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_taxonomy(tax, values, ax=ax, label_up_to=math.inf)
    plt.close(fig)


# ------------------------------------------------------------------ helper-113's review of the figures


def test_names_with_dollar_signs_are_drawn_as_written() -> None:
    """'$' in a name was matplotlib math: 'x$$y' crashed savefig, '$5-$10' lost its dollar signs."""
    import io

    tax = Taxonomy.from_paths(["price/low/$5-$10", "price/high/x$$y", "price/high/$_$"])
    for fig in (
        plot_taxonomy(tax, np.linspace(0, 1, tax.num_nodes)),
        plot_level_confusion_matrices(["$5-$10", "x$$y"], ["x$$y", "x$$y"], tax),
    ):
        fig.savefig(io.BytesIO(), format="png")  # raised a ParseSyntaxException
        texts = [t for ax in fig.axes for t in [*ax.texts, *ax.get_xticklabels(), *ax.get_yticklabels()]]
        drawn = {t.get_text() for t in texts if not t.get_parse_math()}
        assert {"$5-$10", "x$$y"} <= {line for text in drawn for line in text.split("\n")}
    curve = operating_curve(np.array([[1.0, 0.4, 0.6, 0.4, 0.3, 0.3]]), ["$_$"], tax)
    fig = plot_operating_curve({"cost $5 vs $6": curve})
    fig.savefig(io.BytesIO(), format="png")
    (label,) = fig.axes[0].get_legend().get_texts()
    assert label.get_text().startswith("cost $5 vs $6") and not label.get_parse_math()


def test_colour_limits_are_checked_together_and_one_limit_keeps_the_scale_readable() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    with pytest.raises(ValueError, match="vmin, vmax: expected vmin < vmax, got vmin=1 and vmax=0. Swap them"):
        plot_taxonomy(tax, np.linspace(0, 1, 5), vmin=1, vmax=0)
    assert not plt.get_fignums()

    def scale(values, **limits):
        fig = plot_taxonomy(tax, values, **limits)
        (points,) = [c for c in fig.axes[0].collections if c.get_array() is not None]
        return points.get_clim(), fig.axes[1]._colorbar.extend

    assert scale(np.ones(5), vmax=1) == ((0.0, 1.0), "neither")  # perfect recall at the top (was 0.9..1.1)
    assert scale(np.linspace(0, 1, 5), vmin=2) == ((2.0, 3.0), "min")  # every value below: the bar says so
    assert scale(np.linspace(0, 1, 5), vmin=0.5) == ((0.5, 1.0), "min")
    assert scale(np.linspace(0, 1, 5), vmax=0.5) == ((0.0, 0.5), "max")
    assert scale(np.array([0.2, 0.5, 1.5, np.nan, 0.7]), vmin=0, vmax=1) == ((0.0, 1.0), "max")
    assert scale(np.full(5, np.nan)) == ((0.0, 1.0), "neither")
    assert scale(np.full(5, 0.5)) == ((0.0, 1.0), "neither")  # equal values, no limits: as before


def test_a_node_without_a_value_is_explained_beside_the_colour_bar() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    with_gap = plot_taxonomy(tax, {"a1": 0.5, "b": 0.9})
    assert with_gap.axes[1].get_ylabel() == "value (grey: no value)"
    assert plot_taxonomy(tax, np.linspace(0, 1, 5), value_label="recall").axes[1].get_ylabel() == "recall"


def test_deep_trees_are_capped_in_height_and_the_depth_labels_stay_inside_the_figure() -> None:
    chain = Taxonomy.from_paths(["/".join(f"n{i}" for i in range(101))])
    with pytest.warns(
        UserWarning, match=r"100 depths in an axes .* inches tall leave 0\.\d\d inch a depth: names overlap"
    ):
        fig = plot_taxonomy(chain, label_up_to=math.inf)
    assert fig.get_figheight() <= 30  # was 121 inches
    small = plot_taxonomy(Taxonomy.from_paths(["r/a", "r/b"]))
    small.canvas.draw()
    ticks = [t.get_window_extent() for t in small.axes[0].get_yticklabels()]
    assert min(b.x0 for b in ticks) >= 0  # "depth 0" read "epth 0": its first letters were cut off
    # no wide blank bands above and below a tall tree
    tall = plot_taxonomy(Taxonomy.from_paths(["/".join(f"n{i}" for i in range(16))]))
    pos = tall.axes[0].get_position()
    assert (1 - pos.y1) * tall.get_figheight() < 0.6 and pos.y0 * tall.get_figheight() < 0.6


def test_a_long_value_under_a_short_name_gets_its_own_room() -> None:
    tax = Taxonomy.from_paths([f"r/g{i // 6}/x{i}" for i in range(24)])
    rates = plot_taxonomy(tax, np.linspace(0, 1, tax.num_nodes)).get_figwidth()
    counts = plot_taxonomy(tax, np.linspace(1e9, 2e9, tax.num_nodes))
    assert counts.get_figwidth() > rates + 2  # ten-figure values side by side overlapped
    # and the names sit on a white box, above the edges drawn through them
    assert all(t.get_bbox_patch() is not None for t in counts.axes[0].texts)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (["a"] * 5, r"values: expected numbers \(NaN for no value\), got an array of <U1"),
        ([0.1, None, 0.2, 0.3, 0.4], "values: expected numbers .* got an array of object"),
        (np.ones(5, bool), "got an array of bool"),
        ({"a1": None}, r"values\['a1'\]: expected a number \(NaN for no value\), got None. Leave the node out"),
        ({"a1": "0.5"}, r"values\['a1'\]: expected a number"),
        ([0.5, 0.5, 0.5], r"expected 5 per-node values \(num_nodes\), got shape \(3,\). That is one per leaf"),
    ],
)
def test_bad_values_name_the_argument_and_leave_no_figure(values, said) -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    with pytest.raises(ValueError, match=said):
        plot_taxonomy(tax, values)
    assert not plt.get_fignums()


def test_values_as_a_bfloat16_tensor_are_drawn() -> None:
    import torch

    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    fig = plot_taxonomy(tax, torch.linspace(0, 1, 5, dtype=torch.bfloat16))  # raised numpy's TypeError
    (points,) = [c for c in fig.axes[0].collections if c.get_array() is not None]
    assert points.get_array().tolist() == pytest.approx(np.linspace(0, 1, 5).tolist(), abs=1e-2)


def test_other_bad_arguments_are_named() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    for bad in (None, 2.5):
        with pytest.raises(ValueError, match="max_classes: expected a whole number >= 0"):
            plot_level_confusion_matrices(["a1"], ["a1"], tax, max_classes=bad)
    with pytest.raises(TypeError, match=r"the taxonomy comes first, plot_taxonomy\(taxonomy, values\)"):
        plot_taxonomy(np.ones(5), tax)
    assert not plt.get_fignums()


def test_long_names_are_cut_in_the_confusion_matrices_and_widen_only_their_own_panel() -> None:
    """One 150-character name made a 30.6 x 15.3 inch figure for a 3x4 and a 1x3 matrix (helper-113)."""
    long = "y" * 150
    tax = Taxonomy.from_paths(["root/a/x", f"root/{long}", "root/a/z"])
    fig = plot_level_confusion_matrices(["x", long], ["x", "x"], tax)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["a", "y" * 21 + "\u2026" + "y" * 10]
    assert fig.get_figwidth() < 12 and fig.get_figheight() < 8
    short = Taxonomy.from_paths(["root/a/x", "root/b", "root/a/z"])
    plain = plot_level_confusion_matrices(["x", "b"], ["x", "x"], short)
    # the depth-2 panel, whose names are short, is as wide as without the long name at depth 1
    width = [ax.get_position().width * f.get_figwidth() for f in (fig, plain) for ax in f.axes[1:2]]
    assert width[0] == pytest.approx(width[1], rel=0.25)


def test_cut_names_that_differ_at_the_end_stay_apart_and_the_figures_respect_a_layout_engine() -> None:
    """helper-116: two subtypes cut to their first 31 characters read the same; a user's constrained layout
    (rcParams) got matplotlib's incompatibility warning at every call."""
    stem = "Acute_myeloid_leukemia_with_recurrent_genetic_abnormality_"
    tax = Taxonomy.from_paths([f"r/AML/{stem}NPM1", f"r/AML/{stem}CEBPA", "r/ALL"])
    fig = plot_level_confusion_matrices([f"{stem}NPM1"], [f"{stem}CEBPA"], tax, depths=[2])
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(set(ticks)) == 2 and all(len(t) == 32 for t in ticks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with plt.rc_context({"figure.constrained_layout.use": True}):
            plot_taxonomy(tax, np.linspace(0, 1, tax.num_nodes), title="recall")


def test_the_colour_bars_tick_labels_stay_inside_the_figure() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    fig = plot_taxonomy(tax, np.array([-123456.0, 0, 1, 2, 3]))
    fig.canvas.draw()
    right = max(t.get_window_extent().x1 for t in fig.axes[1].get_yticklabels() if t.get_text())
    assert right <= fig.bbox.width  # the 0.3-inch margin clipped them without bbox_inches="tight"
    with pytest.raises(TypeError, match=r"the taxonomy comes first, taxonomy_layout\(taxonomy\)"):
        taxonomy_layout([1, 2])


def test_an_axes_inside_a_subfigure_is_measured_as_it_is_drawn() -> None:
    """helper-116: positions inside a SubFigure are fractions of the SubFigure, and were read as fractions of
    the whole figure: a 1.5-inch-tall axes was taken for 4.6 inches, so names overlapped with no warning."""
    tax = Taxonomy.from_paths([f"r/g{i}/s{i}/l{i}_{j}" for i in range(3) for j in range(2)])
    with pytest.warns(UserWarning, match=r"names overlap"):
        plot_taxonomy(tax, ax=plt.subplots(3, 1, figsize=(12, 4))[1][1])
    with pytest.warns(UserWarning, match=r"3 depths in an axes [01]\.\d inches tall .* names overlap"):
        fig = plt.figure(figsize=(12, 4))
        plot_taxonomy(tax, ax=fig.subfigures(3, 1)[1].subplots())


def test_a_deep_tree_gets_about_twenty_depth_labels_not_one_per_level() -> None:
    """helper-121: one y tick per level made a depth-3,000 chain take 15.6 s, 14.1 of them drawing ticks."""
    import warnings

    from hiercls.plot import plot_taxonomy

    deep = Taxonomy.from_edges([(f"n{i}", f"n{i + 1}") for i in range(300)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # too many nodes to name, names overlap: said elsewhere
        fig = plot_taxonomy(deep, label_up_to=0)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "depth 0" and 15 <= len(labels) <= 21 and labels[1] == "depth 16"  # 301 levels: every 16th
    shallow = plot_taxonomy(Taxonomy.from_paths(["r/a/a1", "r/b"]))
    assert [t.get_text() for t in shallow.axes[0].get_yticklabels()] == ["depth 0", "depth 1", "depth 2"]
    import matplotlib.pyplot as plt

    plt.close("all")
