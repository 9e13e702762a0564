"""Labels in the user's format <-> node indices of a taxonomy, for the scikit-learn front.

scikit-learn users give ``y`` in one of three shapes, and get predictions back
in that shape (label paths given as tuples or a 2-D array come back as
``"a/b/c"`` strings):

- **flat labels** (``0, 1, 2`` or ``"cat", "dog"``) without a taxonomy: a
  one-level taxonomy ``root -> classes`` is inferred (this is how scikit-learn's
  own estimator checks call us);
- **node names** (strings) of a given taxonomy, inner nodes allowed (partial labels);
- **label paths**: strings ``"a/b/c"``, tuples ``("a", "b", "c")``, or a 2-D
  array with one column per level padded with ``""`` (HiClass' format; a 2-D
  array of integer codes, NaN as padding, reads as the codes' strings). The
  taxonomy is inferred from the paths when none is given; when the paths do
  not share a first node, a root is added above them and left out of the
  predicted paths again. A name found under several parents (``a/other``,
  ``b/other``) becomes one node per parent, named by its path (``"a/other"``);
  the predicted paths still read ``"a/other"``.

Everything here runs once per fit or per call on the *unique* labels; the
per-sample work is a vectorised lookup.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from hiercls.errors import TaxonomyError, UnknownNodeError
from hiercls.taxonomy import Taxonomy

SEP = "/"
"""Separator of label paths given as strings (``"a/b/c"``)."""

LabelMode = Literal["flat", "name", "path"]


@dataclass(frozen=True)
class LabelCodec:
    """How a fitted estimator reads and writes labels (private; pickles with the estimator).

    Attributes:
        mode: ``"flat"`` (numeric class labels, taxonomy ``root -> classes``),
            ``"name"`` (node names) or ``"path"`` (label paths).
        taxonomy: the taxonomy the node indices refer to.
        node_labels: ``(num_nodes,)`` label written for each node by ``decode``.
        root_has_label: False in flat mode, where the root has no label of
            ``y``'s type (a decoder must then always predict a leaf).
        virtual_root: path mode: the user's paths leave the root out.
        flat_classes: flat mode: the sorted class values; ``flat_nodes`` their node indices.
        inferred_flat: the taxonomy was inferred as ``root -> classes`` from flat labels (numbers in
            flat mode, strings in name mode); a true label unseen at fit is then scored as a miss.
    """

    mode: LabelMode
    taxonomy: Taxonomy
    node_labels: np.ndarray
    root_has_label: bool = True
    virtual_root: bool = False
    flat_classes: np.ndarray | None = None
    flat_nodes: np.ndarray | None = None
    inferred_flat: bool = False

    # ------------------------------------------------------------- reading
    def encode(self, y: Any, *, name: str = "y") -> np.ndarray:
        """Labels in this codec's format (or node names / paths) -> int64 node indices ``(n,)``.

        Raises:
            ValueError: the labels are malformed, unknown (``UnknownNodeError``)
                or a path does not match the taxonomy.
        """
        labels = _as_label_array(y, name=name)
        if self.mode == "flat":
            return self._encode_flat(labels, name)
        if not _is_text(labels):
            raise ValueError(
                f"{name}: expected node names or label paths as strings, got dtype {labels.dtype}. "
                "Numeric class labels are accepted only when the estimator was fitted on numeric labels "
                "with taxonomy=None."
            )
        return self._encode_strings(labels, name)

    def _encode_flat(self, labels: np.ndarray, name: str) -> np.ndarray:
        uniq, inverse, pos, unknown = self._flat_positions(labels, name)
        if np.any(unknown):
            shown = uniq[unknown][:5].tolist()
            raise UnknownNodeError(
                f"{name}: {int(unknown.sum())} labels were not seen at fit, first {shown}; "
                f"known classes: {self.flat_classes[:10].tolist()}."
            )
        return self.flat_nodes[pos][inverse].reshape(-1)

    def _flat_positions(self, labels: np.ndarray, name: str) -> tuple[np.ndarray, ...]:
        """Flat mode: the distinct labels, each sample's position among them, their positions in
        ``flat_classes`` and which of them are unknown."""
        if self.flat_classes is None or self.flat_nodes is None:
            raise ValueError(f"{name}: numeric class labels need an estimator fitted on numeric labels.")
        if _is_text(labels) or labels.dtype.kind not in "biuf":
            raise ValueError(
                f"{name}: the estimator was fitted on numeric class labels ({self.flat_classes.dtype}); "
                f"got labels of dtype {labels.dtype}. Pass labels of the same kind as at fit."
            )
        uniq, inverse = np.unique(labels, return_inverse=True)
        pos = np.searchsorted(self.flat_classes, uniq)
        pos = np.clip(pos, 0, len(self.flat_classes) - 1)
        return uniq, inverse.reshape(-1), pos, self.flat_classes[pos] != uniq

    def encode_scored(self, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, Taxonomy]:
        """``(y_true, y_pred)`` -> their node indices and the taxonomy to score them on.

        With a taxonomy inferred from flat labels (``root -> classes``), a true class that was not seen at
        fit (a rare class missing from a training fold) is scored as a miss, as scikit-learn's accuracy
        scores it: it becomes one more child of the root, in a copy of the taxonomy, that no prediction
        reaches. Its place in a hierarchy would be unknown, so any other unknown label raises.
        """
        pred = self.encode(y_pred, name="y_pred")
        if not (self.inferred_flat or self.mode == "flat"):
            return self.encode(y_true, name="y_true"), pred, self.taxonomy
        labels = _as_label_array(y_true, name="y_true")
        if self.mode == "flat":
            uniq, inverse, pos, unknown = self._flat_positions(labels, "y_true")
            new_values = uniq[unknown]
            if new_values.dtype.kind == "f":  # NaN (a missing label) or 0.5 is no class: refused, not a miss
                whole_classes = self.flat_classes.dtype.kind != "f" or bool(
                    np.all(self.flat_classes == np.round(self.flat_classes))
                )
                bad = ~np.isfinite(new_values) | ((new_values != np.round(new_values)) & whole_classes)
                if bad.any():
                    raise ValueError(
                        f"y_true: got {new_values[bad][:5].tolist()} among the true labels: a missing label (NaN), "
                        "an infinity or a value between the whole-number classes seen at fit "
                        f"({self.flat_classes[:10].tolist()}) is no class, and cannot be scored (scikit-learn's "
                        "accuracy_score refuses it too). Drop those samples, or fix their labels."
                    )
            unseen = [str(u) for u in new_values.tolist()]
        elif _is_text(labels):
            distinct, inverse = _unique_labels(labels)
            unseen = [u for u in distinct if isinstance(u, str) and u and SEP not in u and u not in self.taxonomy]
        else:
            unseen = []
        if not unseen:
            return self.encode(labels, name="y_true"), pred, self.taxonomy
        tax = self.taxonomy
        classes = list(tax.nodes[1:])  # the children of the root, named as at fit
        root = _fresh_root(set(classes) | set(unseen))
        with _numeric_names_ok():
            extended = Taxonomy.from_edges([(root, n) for n in classes + unseen])
        to_extended = extended.encode([root, *classes])  # node index at fit -> index in the copy
        if self.mode == "flat":
            nodes = np.empty(len(uniq), dtype=np.int64)
            nodes[~unknown] = to_extended[self.flat_nodes[pos[~unknown]]]
            nodes[unknown] = extended.encode(unseen)
        else:
            new = set(unseen)  # once per distinct label
            nodes = np.asarray(
                [extended.index(u) if u in new else to_extended[self._node_of(u, "y_true")] for u in distinct],
                dtype=np.int64,
            )
        return nodes[inverse], to_extended[pred], extended

    def _encode_strings(self, labels: np.ndarray, name: str) -> np.ndarray:
        uniq, inverse = _unique_labels(labels)
        out = np.empty(len(uniq), dtype=np.int64)
        for k, label in enumerate(uniq):  # once per distinct label, not per sample
            out[k] = self._node_of(label, name)
        return out[inverse]

    @functools.cached_property
    def _node_paths(self) -> np.ndarray | None:
        """Each node's label path as messages show it: path mode, as ``predict`` writes it; name mode on a
        tree, from the root (``"r/a/a1"``); None where labels cannot be paths (flat mode, a DAG)."""
        if self.mode == "path":
            return self.node_labels
        if self.mode != "name" or not self.taxonomy.is_tree:
            return None
        tax = self.taxonomy
        names = np.asarray(tax.nodes, dtype=object)
        anc = tax.ancestor_table
        # once per node, over the taxonomy (cached: built at the first path label, not at every encode)
        return np.asarray(
            [SEP.join(names[anc[i, : tax.depth_index[i] + 1]].tolist()) for i in range(tax.num_nodes)], dtype=str
        )

    @functools.cached_property
    def _path_index(self) -> dict[str, int]:
        """Each node's label path (as ``predict`` writes it, and with or without the root) -> index; in name
        mode on a tree too, so that paths are read wherever the guide promises them."""
        index: dict[str, int] = {}
        paths = self._node_paths
        if paths is None:
            return index
        root = self.taxonomy.root
        virtual = self.virtual_root and self.mode == "path"
        for i, label in enumerate(paths.tolist()):
            parts = label.split(SEP)
            if i == 0:
                index.setdefault(label, 0)
                continue
            full = parts if (not virtual and parts[0] == root) else [root, *parts]
            for form in (SEP.join(full), SEP.join(full[1:])):
                index.setdefault(form, i)
        return index

    def _node_of(self, label: Any, name: str) -> int:
        tax = self.taxonomy
        joined = SEP.join(label) if isinstance(label, tuple) else label
        if self.mode == "name" and isinstance(label, str) and label in tax:  # a node name, exactly
            return tax.index(label)
        if joined in self._path_index:
            return self._path_index[joined]
        if isinstance(label, str) and label in tax:
            return tax.index(label)
        path = _split(label)
        under = [lab for lab in self._path_index if lab.split(SEP)[-1] == path[-1]]
        if len(path) == 1 and len(set(map(self._path_index.get, under))) > 1:
            shown = sorted({str(self.node_labels[self._path_index[lab]]) for lab in under})
            raise UnknownNodeError(
                f"{name}: {path[-1]!r} is under several parents here ({', '.join(map(repr, shown[:5]))}); "
                "give its label path instead of the bare name."
            )
        try:
            node = tax.index(path[-1]) if path[-1] in tax or not under else self._path_index[under[0]]
        except UnknownNodeError as err:  # raises with close matches
            raise UnknownNodeError(f"{name}: {err.args[0] if err.args else err}") from None
        if len(path) == 1:
            return node
        if not tax.is_tree:
            raise TaxonomyError(f"{name}: label paths need a tree taxonomy; give node names instead of {label!r}.")
        paths = self._node_paths if self._node_paths is not None else self.node_labels
        known = sorted({str(paths[self._path_index[lab]]) for lab in under}) or [str(paths[node])]
        where = f"has path {known[0]!r}" if len(known) == 1 else f"has the paths {', '.join(map(repr, known[:5]))}"
        raise ValueError(
            f"{name}: label path {joined!r} does not match the taxonomy, where {path[-1]!r} {where} "
            f"(a path may start at the root {tax.root!r} or below it). Fix the label or the taxonomy."
        )

    # ------------------------------------------------------------- writing
    def decode(self, node_index: np.ndarray) -> np.ndarray:
        """int node indices ``(n,)`` -> labels in this codec's format ``(n,)``."""
        return self.node_labels[np.asarray(node_index, dtype=np.int64)]

    def classes(self, node_index: np.ndarray) -> np.ndarray:
        """The distinct training labels, sorted, in the user's format (scikit-learn's ``classes_``)."""
        return np.unique(self.decode(np.unique(node_index)))


def fit_codec(y: Any, taxonomy: Taxonomy | None, *, name: str = "y") -> tuple[LabelCodec, np.ndarray]:
    """Read ``y`` at fit: infer the taxonomy if needed, return the codec and the target node indices.

    Raises:
        ValueError: ``y`` is None, continuous, mixed, has NaN, or does not fit ``taxonomy``.
        TaxonomyError: inferred paths are ambiguous (a name under two parents).
    """
    if y is None:
        raise ValueError(
            f"{name}: this estimator requires y to be passed, but the target y is None. "
            "Pass class labels, node names or label paths."
        )
    if taxonomy is not None and not isinstance(taxonomy, Taxonomy):
        raise TypeError(
            f"taxonomy: expected a hiercls.Taxonomy or None, got {type(taxonomy).__name__}. "
            "Build one with Taxonomy.from_paths / from_edges / from_json, or pass None to infer it from y."
        )
    labels = _as_label_array(y, name=name)
    if labels.size == 0:
        raise ValueError(f"{name}: got 0 labels; fit needs at least one labelled sample.")
    has_tuples = labels.dtype == object and any(isinstance(v, tuple) for v in labels.tolist())
    if labels.dtype == object:
        text = [isinstance(v, (str, tuple)) for v in labels.tolist()]
        if any(text) and not all(text):
            row = text.index(False)  # the first label that is not a string
            raise ValueError(
                f"{name}: mixes strings and other values (e.g. {name}[{row}] = {_shown(labels[row])!r}, "
                f"{type(labels[row]).__name__}); give every label as a string (str() the numbers)."
            )
    if not _is_text(labels):
        if taxonomy is not None:
            raise ValueError(
                f"{name}: got {labels.dtype} labels with a taxonomy. With taxonomy=..., give node names or "
                "label paths as strings; numeric class labels are accepted with taxonomy=None (a taxonomy "
                "root -> classes is then inferred). If you did give names, a meta-estimator may have encoded "
                "them as 0..K-1 first (cross_val_predict with method='predict_proba', VotingClassifier, "
                "StackingClassifier): fit the estimator directly, one fold at a time."
            )
        check_classification_targets(labels)  # raises on continuous, NaN, mixed types
        return _fit_flat(labels)
    if taxonomy is not None:
        codec = _codec_for(taxonomy, labels)
        return codec, codec.encode(labels, name=name)
    uniq, inverse = _unique_labels(labels)
    paths = [_split(u) for u in uniq]
    for k, path in enumerate(paths):
        if not all(path):
            row = int(np.flatnonzero(inverse == k)[0])
            raise ValueError(
                f"{name}[{row}]: the label path {_shown(labels[row])!r} has an empty node name (two {SEP!r} in a "
                f"row, or one at an end); write it as {SEP.join(n for n in path if n)!r}."
            )
    if not has_tuples and all(len(p) == 1 for p in paths):
        return _fit_names(uniq, inverse)
    _check_no_separator(uniq, paths, labels, inverse, name)
    firsts = {p[0] for p in paths}
    virtual = len(firsts) > 1
    nodes = _qualified(paths)
    root = _fresh_root({n for p in nodes for n in p}) if virtual else None
    with _numeric_names_ok():
        tax = Taxonomy.from_paths(nodes, root=root)
    node_labels = _path_labels(tax, virtual, qualified=True)
    codec = LabelCodec("path", tax, node_labels, virtual_root=virtual)
    leaf_of_path = tax.encode([p[-1] for p in nodes])
    return codec, leaf_of_path[inverse]


# ---------------------------------------------------------------- helpers
@contextlib.contextmanager
def _numeric_names_ok() -> Iterator[None]:
    """Build an inferred taxonomy without the numeric-names warning: the codec maps y's labels (int class
    labels become names '0', '1', ...), so no user ever passes those integers to ``encode``."""
    from hiercls.taxonomy import _PADDED_NAMES_OK

    token = _PADDED_NAMES_OK.set(True)  # y's labels are kept as given, blanks included
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*node name\(s\) look like integers", category=UserWarning)
            yield
    finally:
        _PADDED_NAMES_OK.reset(token)


def _qualified(paths: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Node names for label paths: a name found under two parents becomes one node per path, named by it.

    HiClass data often repeats a name under several parents (``a/other``, ``b/other``). A ``Taxonomy``
    needs unique names, so such a node is named by its label path (``"a/other"``, which no user name can
    be: names are refused if they contain the separator); every other node keeps its name. Qualifying a
    node can make its children ambiguous in turn (``a/x/p``, ``b/x/p``), so repeat until none is.
    """
    ambiguous: set[str] = set()
    while True:
        parent: dict[str, str | None] = {}
        found: set[str] = set()
        out = []
        for path in paths:  # once per distinct label
            named: list[str] = []
            for depth, node in enumerate(path):
                key = SEP.join(path[: depth + 1]) if node in ambiguous else node
                above = named[-1] if named else None
                if parent.setdefault(key, above) != above:
                    found.add(node)
                named.append(key)
            out.append(tuple(named))
        if not found:
            return out
        ambiguous |= found


def _check_no_separator(
    uniq: list[Any], paths: list[tuple[str, ...]], labels: np.ndarray, inverse: np.ndarray, name: str
) -> None:
    """Predictions are written as ``"a/b/c"``: a node name holding the separator could not be read back."""
    for k, path in enumerate(paths):
        clash = [node for node in path if SEP in node]
        if clash:
            row = int(np.flatnonzero(inverse == k)[0])
            fixed = tuple(node.replace(SEP, "-") for node in path)
            raise ValueError(
                f"{name}[{row}]: node {clash[0]!r} of the label path {_shown(labels[row])!r} contains {SEP!r}, "
                f"which predict writes between node names, so its predictions could not be read back. Replace "
                f"it in y, e.g. {fixed!r} (for a 2-D array: np.char.replace(y.astype(str), {SEP!r}, '-'))."
            )


def _shown(label: Any) -> Any:
    """A label as the user wrote it (numpy scalars as plain Python values)."""
    return label.item() if isinstance(label, np.generic) else label


def _fit_flat(labels: np.ndarray) -> tuple[LabelCodec, np.ndarray]:
    classes, inverse = np.unique(labels, return_inverse=True)
    names = [str(c) for c in classes.tolist()]  # distinct: str() of distinct numbers differs
    root = _fresh_root(set(names))
    with _numeric_names_ok():
        tax = Taxonomy.from_edges([(root, n) for n in names])
    nodes = tax.encode(names)
    node_labels = np.empty(tax.num_nodes, dtype=classes.dtype)
    node_labels[nodes] = classes
    node_labels[0] = classes[0]  # placeholder: the root has no label of y's type
    codec = LabelCodec(
        "flat", tax, node_labels, root_has_label=False, flat_classes=classes, flat_nodes=nodes, inferred_flat=True
    )
    return codec, nodes[inverse.reshape(-1)]


def _fit_names(uniq: list[Any], inverse: np.ndarray) -> tuple[LabelCodec, np.ndarray]:
    names = [str(u) for u in uniq]
    root = _fresh_root(set(names))
    with _numeric_names_ok():
        tax = Taxonomy.from_edges([(root, n) for n in names])
    codec = LabelCodec("name", tax, np.asarray(tax.nodes, dtype=str), inferred_flat=True)
    return codec, tax.encode(names)[inverse]


def _codec_for(taxonomy: Taxonomy, labels: np.ndarray) -> LabelCodec:
    """Codec for a given taxonomy: name mode, or path mode if some label is a path."""
    uniq, _ = _unique_labels(labels)
    path_like = [u for u in uniq if isinstance(u, tuple) or (u not in taxonomy and SEP in u)]
    if not path_like:
        return LabelCodec("name", taxonomy, np.asarray(taxonomy.nodes, dtype=str))
    if not taxonomy.is_tree:
        raise TaxonomyError(
            "y: label paths need a tree taxonomy (a node of a DAG has several paths). Give node names instead."
        )
    first = _split(path_like[0])
    virtual = first[0] != taxonomy.root
    return LabelCodec("path", taxonomy, _path_labels(taxonomy, virtual), virtual_root=virtual)


def _path_labels(tax: Taxonomy, virtual_root: bool, *, qualified: bool = False) -> np.ndarray:
    """Each node's label path as ``predict`` writes it. ``qualified``: inferred node names, where a
    name holding the separator is a qualified one (see :func:`_qualified`) and only its last part is shown."""
    clash = [] if qualified else [n for n in tax.nodes if SEP in n]
    if clash:
        raise ValueError(
            f"y: label paths are written with {SEP!r} between node names, but node {clash[0]!r} contains it, so "
            f"its paths could not be read back. Rename the node(s) ({len(clash)} contain {SEP!r}), or give y as "
            "node names instead of paths."
        )
    anc = tax.ancestor_table
    names = np.asarray([n.rsplit(SEP, 1)[-1] for n in tax.nodes] if qualified else tax.nodes, dtype=object)
    out = []
    for i in range(tax.num_nodes):  # once per fit, over the taxonomy
        path = names[anc[i, : tax.depth_index[i] + 1]].tolist()
        if virtual_root and len(path) > 1:
            path = path[1:]
        out.append(SEP.join(path))
    return np.asarray(out, dtype=str)


def _as_label_array(y: Any, *, name: str) -> np.ndarray:
    """``y`` -> 1-D numpy array (tuples as objects; a 2-D HiClass-style array -> tuples)."""
    if hasattr(y, "detach") and hasattr(y, "cpu"):  # torch tensor, without importing torch here
        y = y.detach().cpu().numpy()
    if isinstance(y, (list, tuple)) and any(isinstance(v, (tuple, list)) for v in y):
        out = np.empty(len(y), dtype=object)
        for k, v in enumerate(y):
            if isinstance(v, (tuple, list)):
                out[k] = _strip_padding(v, name, k)
            elif isinstance(v, str):
                out[k] = v
            else:
                raise ValueError(f"{name}[{k}]: expected a label path (tuple of names) or a string, got {v!r}.")
        return out
    arr = np.asarray(y)
    if arr.ndim == 2:
        if arr.shape[1] == 1:
            return column_or_1d(arr, warn=True)  # scikit-learn's DataConversionWarning
        if arr.dtype.kind == "b":
            raise _indicator_error(arr, name)
        if arr.dtype.kind in "iuf":
            arr = _numeric_path_cells(arr, name)
        elif arr.dtype == object:
            arr = _integer_object_paths(arr, name)
        if arr.dtype.kind not in "USO":
            raise ValueError(
                f"{name}: a 2-D y of shape {arr.shape} is read as label paths (one column per level, padded with "
                f"'' or NaN), whose cells must be node names (strings) or integer codes; got dtype {arr.dtype}. "
                f"Give the node names as strings, e.g. {name}.astype(str); multi-output is not supported."
            )
        if arr.dtype.kind in "US":
            pad = arr == ""
        else:
            pad, text = _pad_and_text(arr)
            bad = ~pad & ~text
            if bad.any():
                first_bad = arr[bad][0]  # as written (tolist() of an object array keeps the objects)
                raise ValueError(
                    f"{name}: label paths must hold node names (strings) padded with '', got {first_bad!r}."
                )
        # one Python step per distinct row, not per sample
        rows, inverse = _unique_rows(np.where(pad, "", arr).astype(str))
        first = np.zeros(len(rows), dtype=np.int64)
        first[inverse[::-1]] = np.arange(arr.shape[0])[::-1]  # a sample showing each row
        paths = np.empty(len(rows), dtype=object)
        for k, row in enumerate(rows.tolist()):
            paths[k] = _strip_padding(row, name, int(first[k]))
        return paths[inverse]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels (or 2-D label paths), got shape {arr.shape}.")
    if arr.dtype.kind == "S" or (arr.dtype == object and any(isinstance(v, bytes) for v in arr.tolist())):
        raise ValueError(
            f"{name}: got byte-string labels (such as {arr.tolist()[0]!r}); predictions come back as str, which would never "
            f"equal them. Decode them first, e.g. {name}.astype(str) or [v.decode() for v in {name}]."
        )
    if arr.dtype == object and any(isinstance(v, (tuple, list)) for v in arr):
        return _as_label_array(list(arr), name=name)
    return arr


def _integer_object_paths(arr: np.ndarray, name: str) -> np.ndarray:
    """A 2-D object y of integer codes padded with None or pandas' NA (a frame of nullable ``Int64``
    columns, ``convert_dtypes()``) -> the same paths as strings, as a float frame padded with NaN reads;
    any other object array is returned as it came."""
    cell_types = np.frompyfunc(type, 1, 1)(arr)  # read in C; the Python tests below run once per type
    types = set(cell_types.ravel().tolist())
    whole = [t for t in types if issubclass(t, (int, np.integer)) and not issubclass(t, (bool, np.bool_))]
    padding = [t for t in types if t is type(None) or t.__name__ == "NAType"]
    if not whole or len(whole) + len(padding) != len(types):
        return arr
    pad = np.zeros(arr.shape, dtype=bool)
    for kind in padding:
        boxed = np.empty((), dtype=object)
        boxed[()] = kind  # compared as an object, not read as a dtype
        pad |= cell_types == boxed
    codes = np.where(pad, 0, arr).astype(np.int64)
    if not pad.any() and np.isin(codes, (0, 1)).all():
        raise _indicator_error(codes, name)
    return np.where(pad, "", codes.astype(str))


def _is_missing(v: Any) -> bool:
    """A padding cell: '', None, NaN or pandas' NA (``convert_dtypes()``, ``dtype="string"``), whose truth
    value raises, so it is recognised by type before any comparison."""
    if v is None or type(v).__name__ == "NAType":
        return True
    if isinstance(v, float):
        return bool(np.isnan(v))
    return isinstance(v, str) and v == ""


def _pad_and_text(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padding cells ('', None, NaN, pandas' NA: as :func:`_is_missing` reads them) and string cells of an
    object array. Each cell's type is read in C; the Python tests run once per distinct type, vectorised
    over its cells (a per-cell Python call took seconds on a million rows)."""
    types = np.frompyfunc(type, 1, 1)(arr)
    pad = np.zeros(arr.shape, dtype=bool)
    text = np.zeros(arr.shape, dtype=bool)
    for kind in set(types.ravel().tolist()):  # once per distinct type of cell
        boxed = np.empty((), dtype=object)
        boxed[()] = kind  # compared as an object: `types == np.float32` would read the type as a dtype
        cells = types == boxed
        if kind is type(None) or kind.__name__ == "NAType":
            pad[cells] = True
        elif issubclass(kind, float):
            pad[cells] = np.isnan(arr[cells].astype(np.float64))
        elif issubclass(kind, str):
            text[cells] = True
            pad[cells] = arr[cells] == ""
    return pad, text


def _indicator_error(arr: np.ndarray, name: str) -> ValueError:
    """The error for a 2-D y of 0s and 1s or of bools: scikit-learn's multilabel indicator matrix."""
    return ValueError(
        f"{name}: got a 2-D y of {'bools' if arr.dtype.kind == 'b' else '0s and 1s'} (shape {arr.shape}), a "
        "multilabel indicator matrix (scikit-learn's type_of_target says 'multilabel-indicator'), but these "
        "estimators take one label path or node per sample, not an indicator matrix. For one-hot rows give each "
        f"sample's class, e.g. np.asarray(classes)[{name}.argmax(axis=1)]; multi-label targets are not "
        "supported. Label paths coded with the integers 0 and 1 alone are ambiguous with it: give them as "
        "node-name strings."
    )


def _numeric_path_cells(arr: np.ndarray, name: str) -> np.ndarray:
    """A 2-D numeric y (label paths of integer codes, e.g. a pandas frame whose missing deeper levels are
    NaN) -> the same paths as strings: a whole number ``v`` as ``str(int(v))`` (``1.0`` -> ``"1"``, as the
    codes read), NaN as padding ``""``. Converted once per distinct value.

    A code may repeat within a path (codes that restart at each level, as ``OrdinalEncoder`` gives): the
    node is then named by its path, as a repeated name is. Refused: a value that is not a whole number,
    and a matrix of 0s and 1s alone without NaN (scikit-learn's multilabel indicator matrix, which reads as
    paths only as nodes ``0`` and ``1`` nested in each other: a one-hot binary target)."""
    values, inverse = np.unique(arr, return_inverse=True)
    missing = np.isnan(values) if values.dtype.kind == "f" else np.zeros(len(values), dtype=bool)
    whole = np.isfinite(values) & (values == np.round(values)) if values.dtype.kind == "f" else ~missing
    bad = ~missing & ~whole
    if bad.any():
        cell = np.argwhere(np.isin(arr, values[bad]))[0]
        value = arr[tuple(cell)].item()
        raise ValueError(
            f"{name}: a 2-D numeric y is read as label paths of integer codes (one column per level, NaN as "
            f"padding), but {name}[{cell[0]}, {cell[1]}] = {value!r} is not a whole number. Give the label paths "
            "as strings (one node name per cell, '' as padding); continuous or multi-output targets are not "
            "supported."
        )
    if not missing.any() and np.isin(values, (0, 1)).all():
        raise _indicator_error(arr, name)
    names = ["" if gap else str(int(v)) for v, gap in zip(values.tolist(), missing.tolist())]  # once per value
    return np.asarray(names, dtype=str)[inverse.reshape(-1)].reshape(arr.shape)


def _unique_rows(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(cells, axis=0, return_inverse=True)`` of a 2-D str array, the same rows in the same
    (lexicographic) order, faster: each column is factorised on its own (sorted codes keep the order of
    the strings) and a row's codes are combined into one int64 key."""
    codes = np.empty(cells.shape, dtype=np.int64)
    columns = []
    for j in range(cells.shape[1]):  # once per level
        uniq, inv = np.unique(cells[:, j], return_inverse=True)
        columns.append(uniq)
        codes[:, j] = inv.reshape(-1)
    sizes = [len(u) for u in columns]
    if float(np.prod(np.asarray(sizes, dtype=np.float64))) < 2.0**62:
        key = np.zeros(cells.shape[0], dtype=np.int64)
        for j, size in enumerate(sizes):  # mixed radix: lexicographic order of the codes
            key = key * size + codes[:, j]
        ukey, inverse = np.unique(key, return_inverse=True)
        ucodes = np.empty((len(ukey), len(sizes)), dtype=np.int64)
        for j in range(len(sizes) - 1, -1, -1):
            ucodes[:, j] = ukey % sizes[j]
            ukey = ukey // sizes[j]
    else:
        ucodes, inverse = np.unique(codes, axis=0, return_inverse=True)
    rows = np.stack([columns[j][ucodes[:, j]] for j in range(len(sizes))], axis=1)
    return rows, inverse.reshape(-1)


def _strip_padding(path: Any, name: str, k: int) -> tuple[str, ...]:
    parts = list(path)
    while parts and _is_missing(parts[-1]):
        parts.pop()
    if not parts:
        raise ValueError(f"{name}[{k}]: empty label path. Each label names at least one node.")
    bad = [p for p in parts if not isinstance(p, str) or not p]
    if bad:
        raise ValueError(
            f"{name}[{k}]: label path {tuple(parts)!r} has {bad[0]!r}; path elements must be non-empty "
            "strings (padding '' only at the end)."
        )
    return tuple(parts)


def _split(label: Any) -> tuple[str, ...]:
    if isinstance(label, tuple):
        return label
    return tuple(str(label).split(SEP))


def _unique_labels(labels: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """Distinct labels (strings or tuples), sorted, and each sample's position among them.

    Sorted, so that the inferred taxonomy (and the column order of
    ``predict_proba``) does not depend on the order of the samples.
    """
    values = labels.tolist()
    if all(isinstance(v, str) for v in values):
        uniq, inverse = np.unique(np.asarray(values, dtype=str), return_inverse=True)
        return uniq.tolist(), inverse.reshape(-1)
    keys = sorted(set(values), key=lambda v: (_split(v), isinstance(v, tuple)))
    pos = {v: k for k, v in enumerate(keys)}
    return keys, np.asarray([pos[v] for v in values], dtype=np.int64)


def _is_text(labels: np.ndarray) -> bool:
    """Strings, or objects that are all strings or tuples (label paths)."""
    if labels.dtype.kind in "US":
        return True
    return labels.dtype == object and all(isinstance(v, (str, tuple)) for v in labels.tolist())


def _fresh_root(names: set[str]) -> str:
    root = "root"
    while root in names:
        root += "_"
    return root
