"""Figures for hierarchical predictions (needs the optional ``matplotlib``: ``pip install hiercls[plot]``).

Every ``plot_*`` function returns a matplotlib ``Figure`` (:func:`taxonomy_layout` returns the
node positions it draws at); matplotlib is imported inside
the functions, so ``import hiercls`` never imports it. Pass ``ax=`` to draw
into an existing axes where the function draws one panel.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hiercls.decoding import OperatingCurve
from hiercls.errors import UnknownNodeError
from hiercls.metrics.functional import (
    Distance,
    _check_taxonomy,
    _distance,
    _encode_pair,
    _pair_stats,
    _require_tree,
    _resolve_distance,
    _scalar,
    level_confusion_matrix,
)
from hiercls.taxonomy import LabelsLike, Taxonomy

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

__all__ = [
    "plot_level_confusion_matrices",
    "plot_mistake_severity_histogram",
    "plot_operating_curve",
    "plot_taxonomy",
    "taxonomy_layout",
]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "hiercls.plot needs matplotlib: pip install 'hiercls[plot]' (or pip install matplotlib)."
        ) from err
    return plt


def _root_figure(ax: Axes) -> Figure:
    """The Figure an axes belongs to, through any SubFigures."""
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig:
        fig = fig.figure
    return fig


def _check_count(name: str, value: Any) -> float:
    """A whole number >= 0, or ``math.inf`` for no limit (checked before a figure exists: nothing is left
    open). 0-d arrays and tensors count as their number; a whole float (``1e6``) is taken as the integer."""
    value = _scalar(value)
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not value >= 0 or (value != math.inf and value != int(value)):  # NaN fails `>= 0`
        raise ValueError(
            f"{name}: expected a whole number >= 0, or math.inf for no limit, got {value!r}. Pass e.g. {name}=100."
        )
    return math.inf if value == math.inf else int(value)


def _check_colour_options(cmap: Any, vmin: Any, vmax: Any) -> tuple[float | None, float | None]:
    """A colormap matplotlib knows (None: matplotlib's default) and numeric (or None) limits, checked before
    a figure exists. Returns the limits as Python numbers (0-d arrays and tensors read as theirs)."""
    _pyplot()  # matplotlib, or the install hint rather than a bare ModuleNotFoundError
    import matplotlib

    if cmap is None:
        pass
    elif isinstance(cmap, str):
        if cmap not in matplotlib.colormaps:
            import difflib

            close = difflib.get_close_matches(cmap, list(matplotlib.colormaps), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"cmap: {cmap!r} is not a matplotlib colormap (see matplotlib.colormaps).{hint}")
    elif not isinstance(cmap, matplotlib.colors.Colormap):
        raise ValueError(
            f"cmap: expected a colormap name such as 'viridis', a Colormap or None (the default), got {cmap!r}."
        )
    limits = []
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        value = _scalar(value)
        ok = value is None or (
            isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        )
        if not ok or (value is not None and not np.isfinite(value)):
            raise ValueError(f"{name}: expected a finite number or None (the data's own range), got {value!r}.")
        limits.append(None if value is None else float(value))
    if limits[0] is not None and limits[1] is not None and limits[0] >= limits[1]:
        raise ValueError(
            f"vmin, vmax: expected vmin < vmax, got vmin={limits[0]:g} and vmax={limits[1]:g}. Swap them, or pass one "
            "and the data set the other."
        )
    return limits[0], limits[1]


def _axes_size(ax: Axes) -> tuple[float, float]:
    """``ax``'s width and height in inches, also inside a SubFigure (whose axes positions are fractions of
    the SubFigure, not of the figure)."""
    box = ax.get_window_extent()
    dpi = _root_figure(ax).dpi
    return box.width / dpi, box.height / dpi


def _figure_and_axes(
    ax: Axes | None, figsize: tuple[float, float], margins: tuple[float, float, float, float] | None = None
) -> tuple[Figure, Axes]:
    """``ax``'s figure and ``ax``, or a new figure of ``figsize`` whose axes leaves ``margins`` (left, right,
    bottom, top, in inches; default: matplotlib's fractions)."""
    if ax is not None:
        return _root_figure(ax), ax
    fig, new_ax = _pyplot().subplots(figsize=figsize)
    if margins is not None and fig.get_layout_engine() is None:  # a layout engine (rcParams) places it itself
        (w, h), (left, right, bottom, top) = figsize, margins
        fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)
    return fig, new_ax


def plot_level_confusion_matrices(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    depths: Sequence[int] | None = None,
    normalize: Literal["true", "none"] = "true",
    max_classes: int = 40,
    annotate_up_to: float = 10,
) -> Figure:
    """One confusion matrix per depth, side by side (the true and predicted ancestors at that depth).

    Rows are true classes, columns predicted classes, plus a last column
    "ends above" for predictions with no node at that depth: an inner node
    chosen by non-mandatory decoding, or a leaf shallower than the depth (a
    mistake into another branch of a ragged tree). With ``normalize="true"`` the row of each class
    with test samples sums to 1 (per-class recall on the diagonal), on one colour scale from 0 to 1
    shared by every panel; a class without test samples has a blank row, not a row of zeros. With
    ``normalize="none"`` the panels share one count scale. A colour bar gives the scale. Depths
    left out by default (wider than ``max_classes``) are named under the panels.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree.
        depths: the depths to draw (default: every depth with at most ``max_classes`` nodes).
        normalize: ``"true"`` (rows sum to 1) or ``"none"`` (counts).
        max_classes: refuse levels wider than this (a 10,000-class matrix is unreadable).
            Tick labels longer than 32 characters end in an ellipsis.
        annotate_up_to: write the values in the cells of matrices at most this wide (``math.inf``: all).

    Returns:
        A Figure with one axes per depth, titled ``"depth d"``, then the colour bar's axes.

    Raises:
        ValueError: the taxonomy has only its root, no depth fits ``max_classes``, a requested depth is
            wider, or a bad ``normalize``.
        TaxonomyError: the taxonomy is a DAG.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> fig = plot_level_confusion_matrices(["ALL", "AML", "CLL"], ["ALL", "CLL", "acute"], tax)
        >>> [ax.get_title() for ax in fig.axes[:-1]]  # the last axes is the colour bar
        ['depth 1', 'depth 2']
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    if normalize not in ("true", "none"):
        raise ValueError(f"normalize: expected 'true' or 'none', got {normalize!r}.")
    annotate_up_to = _check_count("annotate_up_to", annotate_up_to)
    max_classes = _check_count("max_classes", max_classes)
    _require_tree(taxonomy, "plot_level_confusion_matrices")  # before a figure exists: nothing left open
    if taxonomy.max_depth == 0:
        raise ValueError(
            "plot_level_confusion_matrices: the taxonomy has only its root, so there is no depth >= 1 to draw."
        )
    levels = taxonomy.levels()
    left_out: list[int] = []
    if depths is None:
        depths = [d for d in range(1, taxonomy.max_depth + 1) if len(levels[d]) <= max_classes]
        left_out = [d for d in range(1, taxonomy.max_depth + 1) if len(levels[d]) > max_classes]
        if not depths:
            raise ValueError(
                f"No depth has at most max_classes={max_classes} nodes; pass depths=[...] and a larger max_classes."
            )
    if isinstance(depths, (int, np.integer)) or not isinstance(depths, (Sequence, np.ndarray)) or not len(depths):
        raise ValueError(f"depths: expected a non-empty list of depths such as [1, 2], got {depths!r}.")
    for d in depths:
        if isinstance(d, (bool, np.bool_)) or not (isinstance(d, (int, np.integer)) and 1 <= d <= taxonomy.max_depth):
            raise ValueError(f"depths: expected depths in [1, {taxonomy.max_depth}], got {d!r}.")
        if len(levels[d]) > max_classes:
            raise ValueError(
                f"depths: depth {d} has {len(levels[d])} nodes, more than max_classes={max_classes}; raise max_classes to draw it."
            )
    matrices, all_names = [], []
    for d in depths:
        matrix = level_confusion_matrix(t, p, taxonomy, int(d), abstain_column=True).astype(np.float64)
        if normalize == "true":
            rows = matrix.sum(axis=1, keepdims=True)
            matrix = np.divide(matrix, rows, out=np.full_like(matrix, np.nan), where=rows > 0)  # no samples: blank
        matrices.append(matrix)
        # tick labels: names past _TICK_CHARS characters are cut (one long name made every panel that much wider)
        all_names.append([_cut_name(taxonomy.nodes[i], _TICK_CHARS) for i in levels[d]])
    top = 1.0 if normalize == "true" else max(1.0, max(float(np.nanmax(m, initial=0.0)) for m in matrices))
    # each panel grows with its classes and the length of its own names (tick labels at 8 pt)
    panel = [
        max(3.5, 0.32 * (len(names) + 1) + 0.07 * max(len(name) for name in [*names, "ends above"]) + 1.0)
        for names in all_names
    ]
    plt = _pyplot()
    fig, axes = plt.subplots(
        1,
        len(depths),
        figsize=(sum(panel) + 1.2, max(panel) + 0.4),
        squeeze=False,
        width_ratios=panel,
        layout="constrained",
    )
    cmap = plt.get_cmap("Blues").with_extremes(bad="0.93")  # the row of a class without test samples
    for ax, d, matrix, names in zip(axes[0], depths, matrices, all_names):
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0, vmax=top, aspect="auto")
        ax.set_title(f"depth {d}")
        # names drawn as written: a '$' is not matplotlib math
        ax.set_xticks(range(len(names) + 1), [*names, "ends above"], rotation=90, fontsize=8, parse_math=False)
        ax.set_yticks(range(len(names)), names, fontsize=8, parse_math=False)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if len(names) <= annotate_up_to:
            for (i, j), value in np.ndenumerate(matrix):
                if np.isnan(value):
                    continue
                text = f"{value:.2f}" if normalize == "true" else f"{int(value)}"
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7, color="white" if value > 0.6 * top else "black"
                )
    fig.colorbar(image, ax=list(axes[0]), label="fraction of the true class" if normalize == "true" else "samples")
    if left_out:
        shown = ", ".join(map(str, left_out[:8])) + (", ..." if len(left_out) > 8 else "")
        fig.supxlabel(f"not shown: depth {shown} (more than max_classes={max_classes} nodes)", fontsize=7)
    return fig


def taxonomy_layout(taxonomy: Taxonomy) -> np.ndarray:
    """Node positions ``(num_nodes, 2)`` for drawing: y = -depth, x from the leaves' order.

    For a tree, leaves take x = 0, 1, 2, ... in depth-first order and each
    inner node sits at the mean x of its children, so edges never cross. For
    a DAG, the nodes of each depth are spread evenly in index order.

    Raises:
        TypeError: ``taxonomy`` is not a :class:`~hiercls.Taxonomy`.

    Examples:
        >>> from hiercls import Taxonomy
        >>> taxonomy_layout(Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])).tolist()
        [[1.25, 0.0], [0.5, -1.0], [2.0, -1.0], [0.0, -2.0], [1.0, -2.0]]
    """
    _check_taxonomy(taxonomy, order="taxonomy_layout(taxonomy)")
    n = taxonomy.num_nodes
    pos = np.zeros((n, 2))
    pos[:, 1] = -taxonomy.depth_index
    ptr, kids = taxonomy.children_ptr, taxonomy.children_index
    if taxonomy.is_tree:
        order = []
        stack = [0]
        while stack:  # depth-first, children in index order
            node = stack.pop()
            order.append(node)
            stack.extend(kids[ptr[node] : ptr[node + 1]][::-1].tolist())
        leaf_rank = 0
        for node in order:
            if ptr[node] == ptr[node + 1]:
                pos[node, 0] = leaf_rank
                leaf_rank += 1
        for node in range(n - 1, -1, -1):  # children have larger indices
            if ptr[node] != ptr[node + 1]:
                pos[node, 0] = pos[kids[ptr[node] : ptr[node + 1]], 0].mean()
        return pos
    width = max(len(level) for level in taxonomy.levels())
    for level in taxonomy.levels():
        pos[level, 0] = (np.arange(len(level)) + 0.5) * width / len(level)
    return pos


def plot_taxonomy(
    taxonomy: Taxonomy,
    values: np.ndarray | Sequence[float] | Mapping[str, float] | None = None,
    *,
    ax: Axes | None = None,
    cmap: str | Colormap | None = "viridis",
    value_label: str = "value",
    vmin: float | None = None,
    vmax: float | None = None,
    label_up_to: float = 60,
    title: str | None = None,
) -> Figure:
    """Draw the taxonomy top-down, colouring each node by a per-node value (e.g. recall or error counts).

    Get per-node recall from :func:`hiercls.metrics.node_recall`; NaN values
    (nodes without data) are drawn grey, and so are ``inf`` and ``-inf`` (written under the name,
    left out of the colour scale). The layout is computed from depths
    (:func:`taxonomy_layout`): no graphviz. Inner-node names too long for their room are cut, with
    an ellipsis, to the width between their neighbours and the lines that fit above the next depth.

    The figure made for it (``ax=None``) is at most 24 inches wide and 30 tall; close it when done
    (``plt.close(fig)``): pyplot keeps every figure open until then.

    Args:
        taxonomy: a tree or a DAG.
        values: ``(num_nodes,)`` numbers (an array, a list or a tensor of any float dtype), or
            ``{node name: number}`` (missing names are NaN), or None.
        ax: draw into this axes (default: a new figure).
        cmap: the matplotlib colormap of the values: a name or a ``Colormap``; None is matplotlib's
            default (``rcParams["image.cmap"]``, viridis unless changed).
        value_label: the colour bar's label.
        vmin: the value at the bottom of the colour scale (default: the smallest value). Pass
            ``vmin=0, vmax=1`` for rates such as recall, so that 0.99 does not look like a failure.
            Values past either end are drawn in its colour, and the colour bar ends in an arrow there.
        vmax: the value at the top of the colour scale (default: the largest value). ``vmin`` and
            ``vmax`` also take 0-d numpy arrays and tensors. With one limit given, the data set the
            other; where they leave no room (every value 1 with ``vmax=1``) the scale starts from 0.
        label_up_to: write node names (and values) only when the taxonomy has at most this many nodes
            (``math.inf``: always; a larger taxonomy warns that its names are left out, except with 0).
            Names are drawn as written (a ``$`` is not matplotlib math).
        title: the axes title.

    Returns:
        The Figure: one axes for the tree, plus a colour bar axes when ``values`` are given.

    Raises:
        ValueError: ``values`` has the wrong length or holds something other than numbers, or
            ``vmin >= vmax``.
        UnknownNodeError: a name in a ``values`` mapping is not in the taxonomy.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> fig = plot_taxonomy(tax, {"a1": 0.9, "a2": 0.4}, value_label="recall")
        >>> len(fig.axes), sorted(t.get_text().split()[0] for t in fig.axes[0].texts)
        (2, ['a', 'a1', 'a2', 'b', 'r'])
    """
    _check_taxonomy(taxonomy, order="plot_taxonomy(taxonomy, values)")
    vmin, vmax = _check_colour_options(cmap, vmin, vmax)
    label_up_to = _check_count("label_up_to", label_up_to)
    n = taxonomy.num_nodes
    data = None if values is None else _node_values(values, taxonomy)
    if 0 < label_up_to < n:
        warnings.warn(
            f"plot_taxonomy: node names are not drawn: the taxonomy has {n} nodes, more than "
            f"label_up_to={label_up_to}. Pass label_up_to=math.inf to draw them (long names then run downwards "
            "or are cut to their room), or label_up_to=0 to draw none without this warning.",
            UserWarning,
            stacklevel=2,
        )
    from matplotlib.collections import LineCollection

    pos = taxonomy_layout(taxonomy)
    width = float(np.ptp(pos[:, 0])) + 1.0
    labels = [_wrap_name(name) for name in taxonomy.nodes] if n <= label_up_to else []
    # each label with the value line written under it (an 8-figure value under a short name needs its own room)
    with_values = (
        labels
        if data is None or not labels
        else [f"{label}\n{_format_value(v)}" if not np.isnan(v) else label for label, v in zip(labels, data.tolist())]
    )

    # room for the longest label line under each leaf slot, plus the y tick labels and the colour bar
    def room(texts: list[str]) -> float:  # inches for the widest line (about 0.068 inch a character at 8 pt)
        return max([0.5] + [0.068 * len(line) + 0.1 for text in texts for line in text.split("\n")])

    per_slot = room(with_values)
    leaf_slot = room([with_values[i] for i in taxonomy.leaf_index]) if labels else 0.5
    # the axes' share of the drawing width: all of it, less the colour bar's when values are drawn
    share = 0.85 if values is not None else 1.0
    # inches: the depth ticks; the colour bar's tick labels; the title
    margins = (_LEFT, _RIGHT_BAR if values is not None else _RIGHT, _BOTTOM, _TOP if title else _BOTTOM)
    if ax is None:
        fig_width = min(max(per_slot * (width + 1.4) / share + margins[0] + margins[1], 4.0), _MAX_WIDTH)
        axes_inches = share * (fig_width - margins[0] - margins[1])
    else:
        fig_width = _root_figure(ax).get_figwidth()
        axes_inches = _axes_size(ax)[0] * share
    slot_inches = axes_inches / (width + 1.4)  # inches per unit of x (one leaf)
    # leaf labels that would not fit side by side turn to run downwards, below their leaf, where the
    # layout leaves nothing else; inner nodes keep horizontal labels, shortened to the room they have;
    # the axes grows to hold the turned labels
    vertical = bool(labels) and slot_inches < leaf_slot - 1e-6
    valued = np.zeros(n, bool) if data is None else ~np.isnan(data)  # a value line under the name (inf too)
    # turned leaf labels stand side by side, one line (about 0.11 inch at 7 pt) each: in a slot narrower
    # than that they would overlap, so they are left out, and the value line too when it has no room
    leaf_lines = 2 if slot_inches >= 0.24 else 1 if slot_inches >= 0.12 else 0
    leaf_values = bool(valued[taxonomy.leaf_index].any())  # a leaf with a value line to leave out
    if vertical and (leaf_lines == 0 or (leaf_lines == 1 and leaf_values)):
        left = (
            "the values under the leaf names"
            if leaf_lines
            else "leaf names and values"
            if leaf_values
            else "leaf names"
        )
        need = (0.24 if leaf_values else 0.12) * (width + 1.4)  # inches of drawing area for every leaf's lines
        # the axes a user makes holds the drawing area and, with values, the colour bar: its width is need / share
        need_ax = math.ceil(need / share)
        if ax is None:
            where = (
                f"the figure reached its maximum width ({_MAX_WIDTH:.0f} inches), where {taxonomy.num_leaves} "
                f"leaves have {slot_inches:.2f} inch each. Draw into an axes about {need_ax} inches wide, e.g. "
                f"ax=plt.subplots(figsize=({math.ceil(need / (0.775 * share))}, 8))[1],"
            )
        else:
            where = (
                f"{taxonomy.num_leaves} leaves in an axes {axes_inches / share:.1f} inches wide leave "
                f"{slot_inches:.2f} inch each. Draw into a wider ax (about {need_ax} inches; ax=None sizes the "
                f"figure, up to {_MAX_WIDTH:.0f} inches),"
            )
        warnings.warn(
            f"plot_taxonomy: {left} left out: {where} or pass label_up_to=0 to draw no names.",
            UserWarning,
            stacklevel=2,
        )
    if vertical and leaf_lines < 2:
        valued_leaves = valued & taxonomy.is_leaf_mask
        valued = valued & ~valued_leaves
    leaf_text = {
        i: 0.065 * len(taxonomy.nodes[i]) + (0.15 if valued[i] else 0.0)
        for i in (taxonomy.leaf_index.tolist() if vertical and leaf_lines else [])
    }
    extra = max(leaf_text.values(), default=0.0)
    height = min(0.8 + 1.2 * taxonomy.max_depth + extra + margins[2] + margins[3], _MAX_HEIGHT)
    fig, ax = _figure_and_axes(ax, (fig_width, height), margins)
    bottom = -taxonomy.max_depth - 0.8
    if leaf_text:  # data units per inch of the axes, then room under each leaf for its label
        axes_inches = max(_axes_size(ax)[1], 0.5)
        units_per_inch = (taxonomy.max_depth + 1.3 + extra) / axes_inches
        for i, inches in leaf_text.items():
            bottom = min(bottom, pos[i, 1] - 0.25 - inches * units_per_inch)
    if labels:  # one depth step in inches: the axes' height over the y range drawn (0.5 down to bottom)
        step_inches = _axes_size(ax)[1] / (0.5 - bottom)
        if step_inches < 0.3:
            warnings.warn(
                f"plot_taxonomy: {taxonomy.max_depth} depths in an axes "
                f"{_axes_size(ax)[1]:.1f} inches tall leave {step_inches:.2f} inch a "
                "depth: names overlap. Draw into a taller ax, or pass label_up_to=0 to draw no names.",
                UserWarning,
                stacklevel=2,
            )
        labels = _fit_inner_labels(taxonomy, pos, labels, slot_inches, step_inches, valued)
    edges = taxonomy.edges_index()
    ax.add_collection(LineCollection(pos[edges], colors="0.6", linewidths=0.8, zorder=1))
    size = 300 if n <= label_up_to else max(2.0, 3000.0 / n)
    size = min(size, max(2.0, (0.8 * slot_inches * 72) ** 2))  # markers no wider than 0.8 of a leaf's slot
    if data is None:
        ax.scatter(pos[:, 0], pos[:, 1], s=size, c="tab:blue", zorder=2)
    else:
        missing = ~np.isfinite(data)  # NaN (no data) and +/-inf, which a colour scale cannot place: grey
        ax.scatter(pos[missing, 0], pos[missing, 1], s=size, c="0.85", edgecolors="0.5", zorder=2)
        shown = data[~missing]
        lo, hi = _colour_range(shown, vmin, vmax)
        points = ax.scatter(pos[~missing, 0], pos[~missing, 1], s=size, c=shown, cmap=cmap, vmin=lo, vmax=hi, zorder=3)
        below, above = bool((shown < lo).any()), bool((shown > hi).any())  # drawn in the end colours: say so
        extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}.get((below, above), "both")
        # what grey means, where no names are written too
        label = f"{value_label} (grey: no value)" if missing.any() else value_label
        fig.colorbar(points, ax=ax, label=label, extend=extend)
    if n <= label_up_to:
        for i, name in enumerate(labels):
            down = i in leaf_text
            if down:
                name = taxonomy.nodes[i]
            elif vertical and taxonomy.is_leaf_mask[i]:  # no room for turned leaf labels (warned above)
                continue
            if not name:  # an inner label cut to nothing: its value alone would run into its neighbours'
                continue
            text = f"{name}\n{_format_value(data[i])}" if valued[i] else name
            ax.text(
                pos[i, 0],
                pos[i, 1] - 0.18,
                text,
                ha="center",
                va="top",
                fontsize=7 if down else 8,
                rotation=90 if down else 0,
                zorder=4,
                parse_math=False,  # names as written: a '$' is not matplotlib math
                bbox={"boxstyle": "square,pad=0.05", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
            )
    ax.set_xlim(pos[:, 0].min() - 0.7, pos[:, 0].max() + 0.7)
    ax.set_ylim(bottom, 0.5)
    # one "depth d" label per level, or about 20 evenly spaced ones for a deep tree (a tick per level of a
    # depth-3,000 chain took 14 of its 15.6 s to draw)
    step = max(1, math.ceil((taxonomy.max_depth + 1) / _MAX_DEPTH_TICKS))
    shown = np.arange(0, taxonomy.max_depth + 1, step)
    ax.set_yticks(-shown, [f"depth {d}" for d in shown])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    return fig


_MAX_WIDTH = 24.0  # inches: a wider tree turns its labels to run downwards
_MAX_DEPTH_TICKS = 20  # "depth d" labels drawn at most (every level up to this many)
_MAX_HEIGHT = 30.0  # inches: a deeper tree gets shorter depth steps (names cut to fewer lines)
_LEFT, _RIGHT, _BOTTOM, _TOP = 0.8, 0.3, 0.3, 0.55  # inches around plot_taxonomy's axes ("depth 10", a title)
_RIGHT_BAR = 1.0  # inches right of the axes with a colour bar: its tick labels ("-123456") and label


def _node_values(values: Any, taxonomy: Taxonomy) -> np.ndarray:
    """``plot_taxonomy``'s ``values`` as ``(num_nodes,)`` float64 (NaN: no value), checked before a figure exists."""
    n = taxonomy.num_nodes
    if isinstance(values, Mapping):
        data = np.full(n, np.nan)
        for name, value in values.items():
            if name not in taxonomy:
                raise UnknownNodeError(f"values: {name!r} is not a node of this taxonomy; give {{node name: value}}.")
            number = _scalar(value)
            if isinstance(number, (bool, np.bool_)) or not isinstance(number, (int, float, np.integer, np.floating)):
                raise ValueError(
                    f"values[{name!r}]: expected a number (NaN for no value), got {value!r}. Leave the node out of the "
                    "mapping to draw it without a value."
                )
            data[taxonomy.index(name)] = float(number)
        return data
    if hasattr(values, "detach"):  # a tensor: float64 on the CPU (numpy has no bfloat16)
        values = values.detach().cpu()
        values = values.double() if values.is_floating_point() else values
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise ValueError(
            f"values: expected numbers (NaN for no value), got an array of {array.dtype}. Pass floats, e.g. "
            "np.asarray(values, dtype=float), or a {node name: number} mapping that leaves out nodes without one."
        )
    data = array.astype(np.float64).ravel()
    if data.shape != (n,):
        hint = (
            " That is one per leaf (num_leaves): pass {leaf name: value}, or a per-node vector with NaN for the "
            "inner nodes."
            if data.shape == (taxonomy.num_leaves,)
            else ""
        )
        raise ValueError(f"values: expected {n} per-node values (num_nodes), got shape {np.shape(array)}.{hint}")
    return data


def _fit_inner_labels(
    taxonomy: Taxonomy,
    pos: np.ndarray,
    labels: list[str],
    slot_inches: float,
    step_inches: float,
    valued: np.ndarray,
) -> list[str]:
    """Inner-node labels cut, with an ellipsis, to the room they have; leaves keep theirs (they fit, or
    run downwards).

    Across: the distance to the nearest node at the same depth, inner node or leaf (about 0.068 inch
    a character at 8 pt); a label wider than that becomes one line. Down: the lines (about 0.135 inch
    each at 8 pt, one of them the value when the node has one) that fit between the label's top,
    0.18 of a depth step under the node, and the top of the markers one depth step lower (0.12 inch
    above their centre); at least one line of the name is kept.
    """
    out = list(labels)
    room_down = (1.0 - 0.18) * step_inches - 0.12 - 0.03  # inches under the label's top, with a margin
    for level in taxonomy.levels():
        xs = sorted((pos[i, 0], i) for i in level.tolist())
        for k, (x, i) in enumerate(xs):
            if taxonomy.is_leaf_mask[i]:
                continue
            gaps = [abs(x - xs[k + d][0]) for d in (-1, 1) if 0 <= k + d < len(xs)]
            room = (min(gaps) if gaps else np.inf) * slot_inches - 0.1  # inches for this label
            chars = int(room / 0.068) if np.isfinite(room) else 10**6
            name = taxonomy.nodes[i]
            if max(len(line) for line in out[i].split("\n")) > chars:
                out[i] = "" if chars < 3 else (name if len(name) <= chars else name[: chars - 1] + "\u2026")
            lines = out[i].split("\n")
            most = max(1, int(room_down / 0.135) - int(valued[i]))
            if len(lines) > most:
                last = lines[most - 1][: max(chars - 1, 1)]
                out[i] = "\n".join([*lines[: most - 1], last + "\u2026"])
    return out


def _colour_range(values: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """The colour scale: the limits given, the data's own end for a limit not given. A scale the data
    leave empty (equal values, or values all at or past the one limit given) ends at that value and
    starts from 0 (a recall of 1 everywhere is drawn at the top, not in the middle of 0.9 to 1.1), or
    starts there and ends at 0, 1 or one more.

    Examples:
        >>> _colour_range(np.array([0.2, 0.7]), None, None), _colour_range(np.array([1.0, 1.0]), None, 1.0)
        ((0.2, 0.7), (0.0, 1.0))
    """
    finite = values[np.isfinite(values)]
    lo = vmin if vmin is not None else float(finite.min()) if len(finite) else None
    hi = vmax if vmax is not None else float(finite.max()) if len(finite) else None
    if lo is not None and hi is not None and lo < hi:
        return lo, hi
    if vmax is not None:  # the data sit at or above the top given
        return (0.0 if vmax > 0 else vmax - 1.0), vmax
    if vmin is not None:  # the data sit at or below the bottom given
        return vmin, (1.0 if 0 <= vmin < 1 else vmin + 1.0 if vmin >= 1 else 0.0)
    if lo is None:  # nothing to place: the scale of a rate
        return 0.0, 1.0
    v = lo  # every value equal
    return (min(0.0, v), max(v, 1.0 if v >= 0 else 0.0)) if v != 0 else (0.0, 1.0)


_TICK_CHARS = 32  # characters of a confusion matrix's tick label; a longer name ends in an ellipsis


def _cut_name(name: str, chars: int) -> str:
    """``name``, or its start and end around an ellipsis, ``chars`` characters in all (the end kept: names
    that differ only there, such as ``..._NPM1`` and ``..._CEBPA``, stay apart).

    Examples:
        >>> _cut_name("Acute_myeloid_leukemia_with_recurrent_abnormality_NPM1", 24), _cut_name("ALL", 16)
        ('Acute_myeloid_le…ty_NPM1', 'ALL')
    """
    if len(name) <= chars:
        return name
    tail = (chars - 1) // 3
    return name[: chars - 1 - tail] + "\u2026" + name[len(name) - tail :]


def _format_value(value: float) -> str:
    """A node's value under its name: integers whole, rates with two decimals, never rounded up to 1
    (0.996 reads 0.996) or down to 0 (0.004 reads <0.01)."""
    if not np.isfinite(value):
        return str(value)
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    text = f"{value:.2f}"
    if 0.99 < abs(value) < 1 and text.lstrip("-") == "1.00":
        text = f"{value:.3f}" if f"{value:.3f}".lstrip("-") != "1.000" else (">0.999" if value > 0 else "<-0.999")
    elif 0 < abs(value) < 0.005:
        text = "<0.01" if value > 0 else ">-0.01"
    return text


def _wrap_name(name: str, width: int = 12) -> str:
    """A long node name broken after ``_``, ``-`` or spaces into lines of about ``width`` characters
    (a run of more than ``width + 4`` characters with no such break is cut into even pieces)."""
    if len(name) <= width:
        return name
    import re

    lines, line = [], ""
    for part in re.findall(r"[^_\- ]*[_\- ]|[^_\- ]+", name):
        if len(part) > width + 4:  # no break inside, and well over the width: cut it into even pieces
            if line:
                lines.append(line)
                line = ""
            pieces = -(-len(part) // width)
            size = -(-len(part) // pieces)
            cut = [part[k : k + size] for k in range(0, len(part), size)]
            lines.extend(cut[:-1])
            part = cut[-1]
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    lines.append(line)
    return "\n".join(line for line in lines if line)


def plot_operating_curve(
    curves: OperatingCurve | Mapping[str, OperatingCurve], *, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """Correct rate against specificity for one or several :class:`~hiercls.decoding.OperatingCurve`.

    Each curve is drawn as its operating points joined in threshold order, the
    legend giving its ``auc``: the area under its Pareto front, which for
    incoherent marginals can differ from the area under the drawn line. Compare models at every operating point,
    not only at the leaves (Valmadre 2022).

    Args:
        curves: one curve, or ``{label: curve}``.
        ax: draw into this axes (default: a new figure).
        title: the axes title.

    Returns:
        The Figure (one axes, one line per curve).

    Raises:
        ValueError: no curve given, or a value that is not an OperatingCurve.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> from hiercls import Taxonomy
        >>> from hiercls.decoding import operating_curve
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> curve = operating_curve(np.array([[1.0, 0.9, 0.1, 0.6, 0.3]]), ["a2"], tax)
        >>> fig = plot_operating_curve({"flat softmax": curve})
        >>> fig.axes[0].get_legend().get_texts()[0].get_text()
        'flat softmax (AUC 0.369)'
    """
    if isinstance(curves, OperatingCurve):
        named = {"curve": curves}
    elif isinstance(curves, Mapping):
        named = dict(curves)
    else:
        raise ValueError(
            f"curves: expected an OperatingCurve or a {{label: OperatingCurve}} mapping, got {type(curves).__name__}. "
            "Name each curve: plot_operating_curve({'model a': curve_a, 'model b': curve_b})."
        )
    if not named or not all(isinstance(c, OperatingCurve) for c in named.values()):
        raise ValueError("curves: expected an OperatingCurve or a non-empty {label: OperatingCurve} mapping.")
    fig, ax = _figure_and_axes(ax, (5.5, 4.5))
    styles = ("-", "--", ":", "-.")  # after the 10 colours of the default cycle, change the line style
    for k, (label, curve) in enumerate(named.items()):
        ax.plot(
            curve.specificity,
            curve.correct,
            marker=".",
            markersize=3,
            linestyle=styles[(k // 10) % len(styles)],
            label=f"{label} (AUC {curve.auc:.3f})",
        )
    ax.set_xlabel("specificity (mean LCA recall)")
    ax.set_ylabel("correct rate (truth or an ancestor)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    for text in ax.legend(loc="best", fontsize=8).get_texts():
        text.set_parse_math(False)  # labels as written: "cost $5 vs $6" is not matplotlib math
    if title:
        ax.set_title(title)
    return fig


def plot_mistake_severity_histogram(
    y_true: LabelsLike,
    y_pred: LabelsLike,
    taxonomy: Taxonomy,
    *,
    distance: Distance = "auto",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Histogram of the LCA distances of the mistakes (the distribution behind mistake severity).

    One bar per distance value with its count written above it; the title
    gives the mean (:func:`hiercls.metrics.mistake_severity`) and the number
    of mistakes. See :func:`hiercls.metrics.lca_distance` for ``distance``.

    Args:
        y_true: true nodes ``(B,)``.
        y_pred: predicted nodes ``(B,)``.
        taxonomy: a tree or a DAG.
        distance: ``"auto"``, ``"height"`` or ``"path"``.
        ax: draw into this axes (default: a new figure).
        title: the axes title (default: the mean severity).

    Returns:
        The Figure (one axes).

    Raises:
        ValueError: empty or mismatched inputs, or an unknown ``distance``.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
        >>> fig = plot_mistake_severity_histogram(["ALL", "ALL", "ALL"], ["ALL", "AML", "CLL"], tax)
        >>> fig.axes[0].get_title()
        'mistake severity 1.50 (height, 2 mistakes)'
    """
    t, p = _encode_pair(y_true, y_pred, taxonomy)
    kind = _resolve_distance(taxonomy, distance)
    wrong = t != p
    dist = _distance(taxonomy, t[wrong], p[wrong], _pair_stats(taxonomy, t[wrong], p[wrong]).lca, kind)
    fig, ax = _figure_and_axes(ax, (5.5, 4.0))
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(dist):
        values, counts = np.unique(dist, return_counts=True)
        ax.bar(values, counts, width=0.8, color="tab:red", alpha=0.8)
        for v, c in zip(values.tolist(), counts.tolist()):
            ax.text(v, c, str(c), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(values)
        noun = "mistake" if len(dist) == 1 else "mistakes"
        default_title = f"mistake severity {float(dist.mean()):.2f} ({kind}, {len(dist)} {noun})"
    else:  # no mistake: nothing to average (severity is 0/0), and no bar to draw
        ax.set_xticks([])
        ax.text(0.5, 0.5, f"no mistakes among {len(t)} samples", ha="center", va="center", transform=ax.transAxes)
        default_title = f"mistake severity: no mistakes ({kind})"
    ax.set_xlabel(f"LCA distance ({kind})")
    ax.set_ylabel("mistakes")
    ax.set_title(title or default_title)
    return fig
