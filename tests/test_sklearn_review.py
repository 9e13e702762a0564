"""The scikit-learn front, after a review: failed fits, X handed to a given base estimator, label paths
for estimators fitted on names, unseen flat classes at score time, integer-coded 2-D label paths, and
the padding mask of 2-D object labels."""

from __future__ import annotations

import re
import sys
import warnings
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.multiclass import type_of_target
from threadpoolctl import threadpool_limits

import hiercls.metrics
import hiercls.sklearn._labels as labels_module
from hiercls import Taxonomy, TaxonomyError, UnknownNodeError
from hiercls.sklearn import (
    HierarchicalHeadClassifier,
    LocalClassifierPerLevel,
    LocalClassifierPerNode,
    LocalClassifierPerParentNode,
    hierarchical_f1_scorer,
    neg_mistake_severity_scorer,
)
from hiercls.sklearn._labels import _as_label_array, _is_missing, fit_codec
from tests.budget import examples
from tests.conftest import require
from tests.strategies import trees


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


LOCAL = [LocalClassifierPerParentNode, LocalClassifierPerLevel, LocalClassifierPerNode]
ESTIMATORS = [
    *(cls() for cls in LOCAL),
    HierarchicalHeadClassifier(max_iter=5, lr=0.1, batch_size=None, random_state=0),
]
PATHS = np.array(["animal/cat", "animal/dog", "plant"])


def three_blobs(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = PATHS[np.arange(n) % 3]
    return rng.normal(size=(n, 3)) + 3 * (np.arange(n) % 3)[:, None], y


# ---------------------------------------------------------------- 1. failed fits
def _negative_weight(est):
    X, _ = three_blobs()
    w = np.ones(len(X))
    w[0] = -1.0
    return (
        X,
        np.array(["p/q", "p/r", "s"] * 20),
        {"sample_weight": w},
        (ValueError, "sample_weight: expected weights >= 0"),
    )


def _dag_taxonomy(est):
    X, _ = three_blobs()
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")])
    est.set_params(taxonomy=dag)
    return X, np.array(["c", "a", "b"] * 20), {}, (TaxonomyError, "needs a tree")


def _base_estimator_fails(est):
    X, y = three_blobs()
    if isinstance(est, HierarchicalHeadClassifier):
        return X[:-1], y, {}, (ValueError, "found 59 samples in X but 60 labels in y")  # after reading labels
    est.set_params(base_estimator=LogisticRegression(C=-1.0))  # the clones raise inside fit
    return X, y, {}, (ValueError, "The 'C' parameter of LogisticRegression")  # sklearn's InvalidParameterError


@pytest.mark.parametrize("fitted_before", [False, True], ids=["fresh", "refit"])
@pytest.mark.parametrize("failure", [_negative_weight, _dag_taxonomy, _base_estimator_fails])
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_a_failed_fit_leaves_the_estimator_unfitted(estimator, failure, fitted_before):
    """A fit that raised used to leave the new labels (classes_, taxonomy_) next to the old model: predict
    then crashed on a shape, or silently wrote the old model's answers with the new label names."""
    est = clone(estimator)
    X, y = three_blobs()
    if fitted_before:
        est.fit(X, y)
    X2, y2, kwargs, (error, message) = failure(est)
    with pytest.raises(error, match=re.escape(message)):
        est.fit(X2, y2, **kwargs)
    left = [a for a in vars(est) if a.endswith("_") and not a.startswith("__")]
    assert left == [] and not hasattr(est, "_codec")
    for call in (est.predict, est.predict_proba, est.predict_marginals):
        with pytest.raises(NotFittedError):
            call(X[:3])
    with pytest.raises(NotFittedError):
        hierarchical_f1_scorer(est, X[:3], y[:3])
    est.set_params(**clone(estimator).get_params()).fit(X, y)  # a later good fit works
    assert est.predict(X[:3]).tolist() == y[:3].tolist()


def test_a_half_done_fit_does_not_count_as_fitted():
    est = LocalClassifierPerParentNode().fit(*three_blobs())
    del est.estimators_  # labels without a model
    with pytest.raises(NotFittedError):
        est.predict(three_blobs()[0])


# ------------------------------------------- 2. X as given to a given base estimator
TEXTS = np.array(["purring whiskers", "barking fetch", "leaf photosynthesis"])


@pytest.mark.parametrize("cls", LOCAL)
def test_a_given_base_pipeline_gets_text_as_given(cls):
    """Raw texts for a TfidfVectorizer pipeline: they used to be refused as 'Expected 2D array'."""
    X, y = TEXTS[np.arange(90) % 3].tolist(), PATHS[np.arange(90) % 3]
    clf = cls(make_pipeline(TfidfVectorizer(), LogisticRegression())).fit(X, y)
    assert clf.score(X, y) == 1.0
    assert not hasattr(clf, "n_features_in_")  # a list of texts has no feature count


@pytest.mark.parametrize("cls", LOCAL)
def test_a_given_base_pipeline_gets_string_columns(cls):
    """A string column for a OneHotEncoder: it used to fail 'could not convert string to float'. Each
    local classifier sees only its node's samples, so categories unseen there must be ignorable."""
    colour = np.array(["red", "green", "blue"])[np.arange(90) % 3]
    X = np.stack([colour, np.arange(90).astype(str)], axis=1).astype(object)
    y = PATHS[np.arange(90) % 3]
    base = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression())
    clf = cls(base).fit(X, y)
    assert clf.n_features_in_ == 2 and clf.score(X, y) == 1.0
    with pytest.raises(ValueError, match="X has 1 features"):
        clf.predict(X[:, :1])


def test_a_given_base_pipeline_selects_columns_by_name():
    pd = require("pandas")
    from sklearn.compose import make_column_transformer

    X, y = three_blobs(90)
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "colour": np.array(["r", "g", "b"] * 30)})
    base = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["colour"])), LogisticRegression()
    )
    clf = LocalClassifierPerParentNode(base).fit(frame, y)
    assert clf.feature_names_in_.tolist() == ["a", "b", "c", "colour"] and clf.score(frame, y) == 1.0


@pytest.mark.parametrize("cls", LOCAL)
def test_numeric_X_gives_the_same_model_with_a_given_or_the_default_base(cls):
    X, y = three_blobs(90, seed=1)
    w = np.random.default_rng(0).integers(0, 3, len(y)).astype(float)
    default = cls().fit(X, y, sample_weight=w)
    given_base = cls(LogisticRegression()).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(default.predict_marginals(X), given_base.predict_marginals(X))
    with pytest.raises(ValueError, match="string"):  # the default checks X here
        cls().fit(np.array([["a"]] * 6), y[:6])


class _ArrayLike:
    """Only ``__array__``: no shape, no row indexing (scikit-learn's checks pass such X)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)


@pytest.mark.parametrize("cls", LOCAL)
def test_a_given_base_gets_an_array_like_as_an_array(cls):
    X, y = three_blobs(90, seed=2)
    clf = cls(LogisticRegression()).fit(_ArrayLike(X), y)
    np.testing.assert_array_equal(clf.predict_marginals(_ArrayLike(X)), cls().fit(X, y).predict_marginals(X))


class _SeesX(LogisticRegression):
    """Records the type of X each node's classifier gets."""

    seen: ClassVar[list[type]] = []

    def fit(self, X, y, sample_weight=None):
        _SeesX.seen.append(type(X))
        return super().fit(X, y, sample_weight=sample_weight)

    def predict_proba(self, X):
        _SeesX.seen.append(type(X))
        return super().predict_proba(X)


@pytest.mark.parametrize("cls", LOCAL)
def test_a_given_base_gets_rows_of_numbers_from_a_list_as_one_array(cls):
    """A list of rows went on as a list: every node's classifier converted it again (predict 4x slower on 50k
    rows). Rows of numbers are converted once; the model is the same."""
    X, y = three_blobs(90, seed=3)
    _SeesX.seen.clear()
    clf = cls(_SeesX()).fit(X.tolist(), y)
    marginals = clf.predict_marginals(X.tolist())
    assert _SeesX.seen and set(_SeesX.seen) == {np.ndarray}
    np.testing.assert_array_equal(marginals, cls(_SeesX()).fit(X, y).predict_marginals(X))


# ------------------------------------ 3. label paths for an estimator fitted on names
@settings(examples(15), deadline=None)
@given(tax=trees(min_nodes=3, max_nodes=12), data=st.data())
def test_fitted_on_names_reads_paths_with_or_without_the_root(tax, data):
    n = data.draw(st.integers(6, 24))
    target = np.array(data.draw(st.lists(st.integers(1, tax.num_nodes - 1), min_size=n, max_size=n)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    X = rng.normal(size=(n, 2)) + target[:, None]
    names = np.array(tax.names(target))
    full = np.array(["/".join(tax.path(name)) for name in names])
    below_root = np.array(["/".join(tax.path(name)[1:]) for name in names])
    clf = LocalClassifierPerParentNode(taxonomy=tax).fit(X, names)
    for paths in (full, below_root):
        np.testing.assert_array_equal(clf._encode_labels(paths), target)
        assert clf.score(X, paths) == clf.score(X, names)


def test_a_wrong_path_for_names_shows_the_right_one():
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    X = np.array([[0.0], [0.1], [5.0], [5.1], [9.0], [9.1]] * 5)
    clf = LocalClassifierPerParentNode(taxonomy=tax).fit(X, np.array(["a1", "a1", "a2", "a2", "b", "b"] * 5))
    with pytest.raises(ValueError, match=r"y_true: label path 'b/a1' does not match .* 'a1' has path 'r/a/a1'"):
        clf.score(X[:1], ["b/a1"])


# ---------------------------------------------- 4. unseen flat classes at score time
@settings(examples(20), deadline=None)
@given(data=st.data(), as_strings=st.booleans())
def test_an_unseen_flat_class_scores_as_a_miss_like_accuracy(data, as_strings):
    n = 30
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    y_fit = np.arange(n) % 3
    X = rng.normal(size=(n, 2)) + 3 * y_fit[:, None]
    y_true = np.array(data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))  # 3, 4, 5: unseen
    if as_strings:
        y_fit, y_true = y_fit.astype(str), y_true.astype(str)
    clf = LocalClassifierPerParentNode().fit(X, y_fit)
    assert clf.score(X, y_true) == pytest.approx(accuracy_score(y_true, clf.predict(X)), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # node names that look like integers
        every = Taxonomy.from_edges([("root", str(c)) for c in range(6)])  # the classes, unseen ones included
    names = [str(v) for v in y_true.tolist()], [str(v) for v in clf.predict(X).tolist()]
    expected = -hiercls.metrics.mistake_severity(every.encode(names[0]), every.encode(names[1]), every)
    assert neg_mistake_severity_scorer(clf, X, y_true) == pytest.approx(expected, abs=1e-12)


def test_cross_validation_with_a_rare_numeric_class_scores_every_fold():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2] * 20 + [3])  # class 3 has one sample: one training fold lacks it
    X = rng.normal(size=(len(y), 2)) + 3 * y[:, None]
    cv = KFold(5, shuffle=True, random_state=0)
    ours = cross_val_score(LocalClassifierPerParentNode(), X, y, cv=cv, error_score="raise")
    np.testing.assert_allclose(ours, cross_val_score(LogisticRegression(), X, y, cv=cv), atol=1e-12)


def test_an_unseen_label_path_still_raises():
    X, y = three_blobs()
    clf = LocalClassifierPerParentNode().fit(X, y)
    with pytest.raises(UnknownNodeError, match="y_true"):
        clf.score(X[:2], ["animal/cat", "fungus"])


# ----------------------------------------------- 5. integer-coded 2-D label paths
@settings(examples(20), deadline=None)
@given(data=st.data())
def test_integer_coded_paths_padded_with_nan_equal_their_string_paths(data):
    n = 24
    codes = np.array(data.draw(st.lists(st.tuples(st.integers(1, 3), st.integers(10, 12)), min_size=n, max_size=n)))
    cut = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))  # the second level missing
    numeric = codes.astype(np.float64)
    numeric[cut, 1] = np.nan
    strings = np.where(cut[:, None] & (np.arange(2) == 1), "", codes.astype(str))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2)) + codes
    a = LocalClassifierPerParentNode().fit(X, numeric)
    b = LocalClassifierPerParentNode().fit(X, strings)
    assert a.taxonomy_ == b.taxonomy_ and all("." not in n and n != "nan" for n in a.taxonomy_.nodes)
    np.testing.assert_array_equal(a.classes_, b.classes_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.score(X, numeric) == b.score(X, strings)
    ints = LocalClassifierPerParentNode().fit(X, codes)  # integer dtype: the codes as strings
    np.testing.assert_array_equal(ints.classes_, LocalClassifierPerParentNode().fit(X, codes.astype(str)).classes_)


def test_nan_inside_a_numeric_path_is_refused():
    X, _ = three_blobs(4)
    y = np.array([[1.0, 10.0], [np.nan, 11.0]] * 2)
    with pytest.raises(ValueError, match=r"y\[1\]: label path .*padding '' only at the end"):
        LocalClassifierPerParentNode().fit(X, y)


@pytest.mark.parametrize(
    "y",
    [
        np.eye(3, dtype=np.int64)[np.arange(9) % 3],  # one-hot rows
        np.array([[0, 1], [1, 0], [0, 1]] * 3),  # one-hot binary: also nodes 0 and 1 nested in each other
        np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]] * 3, dtype=np.float64),  # multi-hot, as floats
        np.eye(3, dtype=bool)[np.arange(9) % 3],  # bools: the message advised astype(str), which fit nonsense
    ],
)
def test_a_multilabel_indicator_y_is_refused(y):
    """A 0/1 indicator matrix was read as label paths ('0/1/0'), a model of nonsense nodes, silently."""
    assert type_of_target(y) == "multilabel-indicator"
    X, _ = three_blobs(len(y))
    with pytest.raises(ValueError, match=r"y: .*multilabel indicator.*one label path or node per sample.*argmax"):
        LocalClassifierPerParentNode().fit(X, y)
    clf = LocalClassifierPerParentNode().fit(X, np.array([[1, 10], [1, 11], [2, 12]] * 3))
    with pytest.raises(ValueError, match=r"y_true: .*multilabel indicator"):
        clf.score(X, y)


@pytest.mark.parametrize(
    "codes",
    [
        np.array([[0, 0], [0, 1], [1, 2], [1, 3]] * 3),  # codes restarting per level (OrdinalEncoder's)
        np.array([[1.0, 1.0, 2.0], [1.0, 3.0, np.nan], [4.0, 5.0, 4.0]] * 4),  # a code twice in one path
    ],
)
def test_numeric_paths_whose_codes_repeat_read_as_the_same_paths_as_strings(codes):
    """Codes that restart at each level were refused for 'repeating a code within a path'; a repeated name is
    named by its path (as for strings), so the numeric and the string forms give one model."""
    X, _ = three_blobs(len(codes))
    as_text = np.where(np.isnan(codes.astype(float)), "", np.nan_to_num(codes).astype(np.int64).astype(str))
    numeric = LocalClassifierPerParentNode().fit(X, codes)
    text = LocalClassifierPerParentNode().fit(X, as_text)
    assert numeric.taxonomy_.fingerprint == text.taxonomy_.fingerprint
    np.testing.assert_array_equal(numeric.predict(X), text.predict(X))
    assert numeric.score(X, codes) == text.score(X, as_text)


def test_integer_codes_padded_with_none_read_as_numeric_paths():
    """pandas' nullable Int64 frame gives an object array of ints and NA: refused as 'not strings', while the
    same codes as floats padded with NaN worked."""
    X, _ = three_blobs(6)
    obj = np.array([[1, 10], [1, 11], [2, None]] * 2, dtype=object)
    floats = np.array([[1, 10], [1, 11], [2, np.nan]] * 2, dtype=float)
    a, b = LocalClassifierPerParentNode().fit(X, obj), LocalClassifierPerParentNode().fit(X, floats)
    assert a.taxonomy_.nodes == b.taxonomy_.nodes == ("root", "1", "2", "10", "11")
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    ones = np.array([[0, 1], [1, 0], [0, 1]] * 2, dtype=object)  # ints 0/1 alone: an indicator matrix
    with pytest.raises(ValueError, match=r"y: got a 2-D y of 0s and 1s .*multilabel indicator"):
        LocalClassifierPerParentNode().fit(X, ones)


def test_a_missing_true_label_is_refused_at_score_time_not_scored_as_a_miss():
    """NaN true labels (missing) and values between the classes became 'unseen classes' and lowered the
    score silently; accuracy_score refuses them, and so does score."""
    X, _ = three_blobs(30)
    y = np.arange(30) % 3
    clf = LocalClassifierPerParentNode().fit(X, y)
    for bad in (np.nan, 0.5, np.inf):
        y_true = y.astype(float)
        y_true[:3] = bad
        with pytest.raises(ValueError, match=r"y_true: got \[.*\] among the true labels: a missing label"):
            clf.score(X, y_true)
        with pytest.raises(ValueError, match=r"y_true: got"):
            hierarchical_f1_scorer(clf, X, y_true)
    y_true = y.astype(float)
    y_true[:3] = 7.0  # a whole number: a class unseen at fit, scored as a miss
    assert clf.score(X, y_true) == pytest.approx(accuracy_score(y_true, clf.predict(X)), abs=1e-12)


def test_numeric_paths_that_are_no_indicator_still_read_as_paths():
    """Codes 0 and 1 among others, and 0/1 paths padded with NaN, are no indicator matrix."""
    X, _ = three_blobs(6)
    clf = LocalClassifierPerParentNode().fit(X, np.array([[0, 1], [0, 2], [1, 3]] * 2))
    assert sorted(clf.classes_.tolist()) == ["0/1", "0/2", "1/3"]
    clf = LocalClassifierPerParentNode().fit(X, np.array([[0, 1], [1, np.nan], [0, 1]] * 2))
    assert sorted(clf.classes_.tolist()) == ["0/1", "1"]
    clf = LocalClassifierPerParentNode().fit(X, np.array([[1, 2, np.nan, np.nan], [1, 3, 4, np.nan]] * 3))
    assert sorted(clf.classes_.tolist()) == ["1/2", "1/3/4"]


# --------------------------------------------- 6. padding mask of 2-D object labels
class _NA:
    """pandas' NA as the labels see it: recognised by its type name, its truth value raises."""

    def __bool__(self) -> bool:
        raise TypeError("boolean value of NA is ambiguous")

    def __eq__(self, other):
        return self

    __hash__ = object.__hash__


_NA.__name__ = "NAType"
CELLS = st.sampled_from(["", "a", "b", "c", None, float("nan"), np.float64("nan"), _NA(), 7, np.float32(1.0), 1.5])


def _reference(arr: np.ndarray, name: str = "y"):
    """The old reading: one Python call per cell, np.unique over rows."""
    pad = np.vectorize(_is_missing, otypes=[bool])(arr)
    bad = [v for v in arr[~pad].tolist() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{name}: label paths must hold node names (strings) padded with '', got {bad[0]!r}.")
    rows, inverse = np.unique(np.where(pad, "", arr).astype(str), axis=0, return_inverse=True)
    first = np.zeros(len(rows), dtype=np.int64)
    first[inverse.reshape(-1)[::-1]] = np.arange(arr.shape[0])[::-1]
    paths = np.empty(len(rows), dtype=object)
    for k, row in enumerate(rows.tolist()):
        paths[k] = labels_module._strip_padding(row, name, int(first[k]))
    return paths[inverse.reshape(-1)]


def _outcome(fn, arr):
    try:
        return ("ok", fn(arr).tolist())
    except ValueError as err:
        return ("error", str(err))


@settings(examples(60), deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=n, max_size=n)))
def test_2d_object_labels_read_as_before(rows):
    arr = np.empty((len(rows), 3), dtype=object)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            arr[i, j] = cell
    assert _outcome(lambda a: _as_label_array(a, name="y"), arr) == _outcome(_reference, arr)


def test_2d_object_labels_test_padding_once_per_distinct_row(monkeypatch):
    """np.vectorize called a Python function on every cell: 1M x 3 labels took seconds per fit and per
    score. Now the Python test runs once per distinct row (stripping its padding), not per cell."""
    calls = []
    monkeypatch.setattr(labels_module, "_is_missing", lambda v: calls.append(v) or _is_missing(v))
    rng = np.random.default_rng(0)
    leaves = np.array([("g1", "s1", "l1"), ("g1", "s2", None), ("g2", "s3", "l2")], dtype=object)
    y = leaves[rng.integers(0, 3, 30_000)]
    codec, target = fit_codec(y, None)
    assert len(calls) < 100 and len(np.unique(target)) == 3
    calls.clear()
    codec.encode(y)
    assert len(calls) < 100


# ---------------------------------------------------------------- helper-119
def test_the_head_estimator_leaves_every_global_generator_alone(monkeypatch):
    """helper-119: fit called torch.manual_seed inside fork_rng(devices=[]): that also (re)seeds every CUDA
    generator (queued until CUDA starts on a CPU machine), which fork_rng does not restore, so fitting a
    probe reseeded the user's GPU training."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    X, y = three_blobs()
    before = torch.random.get_rng_state()
    a = HierarchicalHeadClassifier(max_iter=3, random_state=4).fit(X, y).predict_proba(X[:4])
    assert calls == [] and torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(123)  # the global state does not reach the fit: same seed, same model
    assert np.array_equal(a, HierarchicalHeadClassifier(max_iter=3, random_state=4).fit(X, y).predict_proba(X[:4]))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_predict_works_in_row_blocks_of_the_working_memory(estimator, monkeypatch):
    """helper-119: predict, predict_proba and score built several (n_samples, num_nodes) float64 arrays
    at once: 5-8 GiB at 10,000 samples on the iNat21-shaped tree. They now go block by block within
    scikit-learn's working_memory, with the same answers."""
    import sklearn

    X, y = three_blobs(90)
    est = clone(estimator).fit(X, y)
    whole = est.predict(X), est.predict_proba(X), est.score(X, y)
    seen = []
    inner = type(est).predict_marginals
    monkeypatch.setattr(type(est), "predict_marginals", lambda self, rows: seen.append(len(rows)) or inner(self, rows))
    rows = int(0.001 * 2**20 // (8 * 6 * est.taxonomy_.num_nodes))  # 5 nodes: 4,369 rows a MiB; here 4
    with sklearn.config_context(working_memory=0.001):
        blocks = est.predict(X), est.predict_proba(X), est.score(X, y)
    assert np.array_equal(blocks[0], whole[0]) and np.allclose(blocks[1], whole[1]) and blocks[2] == whole[2]
    assert max(seen) == rows and len(seen) == 3 * -(-90 // rows)
    import pandas as pd_  # a DataFrame is cut by rows too, keeping its column names

    frame = pd_.DataFrame(X, columns=["u", "v", "w"])
    named = clone(estimator).fit(frame, y)
    with sklearn.config_context(working_memory=0.001):
        assert np.array_equal(named.predict(frame), clone(estimator).fit(X, y).predict(X))


@pytest.mark.parametrize("cls", LOCAL)
def test_decoder_values_and_tree_only_rules_are_refused_at_fit(cls):
    """helper-119: decoder_options={'threshold': 1.5} or {'beta': -1}, and decoder='crm' on a DAG, passed
    fit and failed at the first predict after training, in terms of decode's rule=."""
    X, y = three_blobs()
    with pytest.raises(ValueError, match=r"decoder='threshold', decoder_options=\{'threshold': 1.5\}: threshold"):
        cls(decoder="threshold", decoder_options={"threshold": 1.5}).fit(X, y)
    with pytest.raises(ValueError, match=r"decoder='hf_optimal', decoder_options=\{'beta': -1\}: beta"):
        cls(decoder="hf_optimal", decoder_options={"beta": -1}).fit(X, y)
    est = cls(decoder="threshold", decoder_options={"threshold": 0.6}).fit(X, y)
    est.set_params(decoder_options={"threshold": 2.0})  # changed after fit: found at predict, in the same words
    with pytest.raises(ValueError, match="decoder_options=.*threshold"):
        est.predict(X[:2])
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c"), ("a", "d")])
    head = HierarchicalHeadClassifier(head="sigmoid", decoder="crm", taxonomy=dag, max_iter=2)
    with pytest.raises(TaxonomyError, match=r"decoder='crm'.*needs a tree.*Use decoder='argmax_leaf'"):
        head.fit(X, np.array(["c", "d", "b"] * 20))


def test_scorer_option_values_are_refused_when_the_scorer_is_made():
    """helper-119: average='macor' was accepted; cross_val_score then gave NaN in every fold, with a warning."""
    from hiercls.sklearn import make_hierarchical_scorer

    with pytest.raises(ValueError, match=r"make_hierarchical_scorer\('hierarchical_f1'\): average: expected one of"):
        make_hierarchical_scorer("hierarchical_f1", average="macor")
    with pytest.raises(ValueError, match=r"beta: expected a positive finite number"):
        make_hierarchical_scorer("hierarchical_fbeta", beta=-1)
    assert make_hierarchical_scorer("hierarchical_f1", average="macro").kwargs == {"average": "macro"}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11+")
@pytest.mark.parametrize("cls", LOCAL)
def test_a_base_estimators_error_names_the_node_or_level(cls):
    """helper-119: 'n_neighbors <= n_samples_fit = 3' named no node, its samples or its classes."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    y = np.array(["a/x"] * 10 + ["a/y"] * 10 + ["b/u", "b/u", "b/v"])
    X = rng.normal(size=(len(y), 3))
    est = cls(base_estimator=KNeighborsClassifier(n_neighbors=4))
    if cls is LocalClassifierPerLevel:  # every depth has enough samples: a small one made to fail
        est.set_params(base_estimator=KNeighborsClassifier(n_neighbors=30))
    with pytest.raises(ValueError) as err:
        est.fit(X, y).predict(X)
    notes = " ".join(getattr(err.value, "__notes__", []))
    want = {
        LocalClassifierPerParentNode: "while predicting with the classifier of parent node 'b'",
        LocalClassifierPerNode: "while predicting with the classifier of node 'u'",
        LocalClassifierPerLevel: "while predicting with the classifier of depth 1",
    }[cls]
    assert want in notes, notes


@pytest.mark.parametrize("cls", LOCAL)
def test_a_pipeline_that_routes_sample_weight_is_accepted(cls):
    """helper-119: with metadata routing on, a Pipeline asking for sample_weight on a step was refused as
    'does not take sample_weight' (its fit takes **params); one that asks for it nowhere is refused by the
    pipeline itself, with the node named."""
    import sklearn
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = three_blobs()
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(y))
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(
            StandardScaler().set_fit_request(sample_weight=False),
            LogisticRegression().set_fit_request(sample_weight=True),
        )
        weighted = cls(base_estimator=pipe).fit(X, y, sample_weight=w).predict_proba(X[:5])
        plain = cls(base_estimator=clone(pipe)).fit(X, y).predict_proba(X[:5])
        assert not np.allclose(weighted, plain)  # the weights reached the logistic regression
        with pytest.raises(ValueError, match="sample_weight"):
            cls(base_estimator=make_pipeline(StandardScaler(), LogisticRegression())).fit(X, y, sample_weight=w)
    with pytest.raises(ValueError, match="does not take sample_weight"):  # routing off: refused at the door
        cls(base_estimator=make_pipeline(StandardScaler(), LogisticRegression())).fit(X, y, sample_weight=w)
