"""torchmetrics classes: accumulation over batches equals the one-shot functional value; reset; errors."""

from __future__ import annotations

import copy
import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiercls import Taxonomy, TaxonomyError, UnknownNodeError
from hiercls import metrics as M
from hiercls.metrics import classes as metric_classes
from tests import oracles_metrics as O
from tests.budget import examples
from tests.device_probe import HostTraffic
from tests.strategies import taxonomies, trees

# the classes of update(preds, target) on (B,) node pairs -> a 0-d value (or a dict of them); the others
# (a per-node vector, top-k predictions, marginals) are tested in tests/test_metric_classes_extra.py
CLASSES = tuple(n for n in metric_classes.__all__ if n not in {"NodeRecall", "DistanceAtK", "InconsistencyRate"})


@st.composite
def split_case(draw, strategy=None):
    tax = draw(strategy if strategy is not None else taxonomies(max_nodes=15))
    n = draw(st.integers(1, 30))
    nodes = st.integers(0, tax.num_nodes - 1)
    y_true = draw(st.lists(nodes, min_size=n, max_size=n))
    y_pred = draw(st.lists(nodes, min_size=n, max_size=n))
    cuts = sorted(draw(st.lists(st.integers(1, n), max_size=4, unique=True)))
    bounds = [0, *[c for c in cuts if c < n], n]
    return tax, y_true, y_pred, list(itertools.pairwise(bounds))


def _feed(metric, y_true, y_pred, batches):
    for a, b in batches:
        metric.update(torch.tensor(y_pred[a:b]), torch.tensor(y_true[a:b]))
    return O.floats(metric.compute())


@settings(examples(30))
@given(case=split_case())
def test_batch_split_accumulation_equals_one_shot(case) -> None:
    tax, y_true, y_pred, batches = case
    report = _feed(M.HierarchicalMetrics(tax), y_true, y_pred, batches)
    want = M.summary(y_true, y_pred, tax)
    assert report.keys() == want.keys()
    assert report == pytest.approx(want)
    # zero_division=nan: a NaN ratio is left out of the macro means, in the classes as in the functions
    for average, zd in itertools.product(("micro", "macro"), (0.0, math.nan)):
        kw = {"average": average, "zero_division": zd}
        for cls, fn in (
            (M.HierarchicalPrecision, M.hierarchical_precision),
            (M.HierarchicalRecall, M.hierarchical_recall),
            (M.HierarchicalF1, M.hierarchical_f1),
        ):
            assert _feed(cls(tax, **kw), y_true, y_pred, batches) == pytest.approx(
                fn(y_true, y_pred, tax, **kw), nan_ok=True
            )
        assert _feed(M.HierarchicalFBeta(tax, beta=2.0, **kw), y_true, y_pred, batches) == pytest.approx(
            M.hierarchical_fbeta(y_true, y_pred, tax, beta=2.0, **kw), nan_ok=True
        )
    for (cls, fn), zd in itertools.product(
        ((M.LCAPrecision, M.lca_precision), (M.LCARecall, M.lca_recall), (M.LCAF1, M.lca_f1)), (0.0, math.nan)
    ):
        assert _feed(cls(tax, zero_division=zd), y_true, y_pred, batches) == pytest.approx(
            fn(y_true, y_pred, tax, zero_division=zd), nan_ok=True
        )
    assert _feed(M.MistakeSeverity(tax, distance="path"), y_true, y_pred, batches) == pytest.approx(
        M.mistake_severity(y_true, y_pred, tax, distance="path")
    )
    assert _feed(M.CorrectRate(tax), y_true, y_pred, batches) == pytest.approx(M.correct_rate(y_true, y_pred, tax))
    if tax.is_tree:
        assert _feed(M.LevelAccuracy(tax), y_true, y_pred, batches) == pytest.approx(
            M.level_accuracy(y_true, y_pred, tax)
        )


@given(case=split_case(trees(max_nodes=12)))
def test_reset_forgets_and_forward_returns_the_batch_value(case) -> None:
    tax, y_true, y_pred, _ = case
    metric = M.HierarchicalMetrics(tax)
    metric.update(torch.tensor(y_true), torch.tensor(y_pred))  # something else first
    metric.reset()
    batch_value = O.floats(metric(torch.tensor(y_pred), torch.tensor(y_true)))
    assert batch_value == pytest.approx(M.summary(y_true, y_pred, tax))
    assert O.floats(metric.compute()) == pytest.approx(M.summary(y_true, y_pred, tax))


def test_names_and_known_values(paper_tax: Taxonomy) -> None:
    metric = M.HierarchicalMetrics(paper_tax)
    metric.update(["ALL", "AML"], ["ALL", "APL"])
    metric.update(["CML"], ["CLL"])
    report = O.floats(metric.compute())
    assert report["accuracy"] == pytest.approx(1 / 3)
    assert report["hierarchical_recall"] == pytest.approx(8 / 10)
    assert report["correct_rate"] == pytest.approx(2 / 3)  # AML is APL's parent
    assert report["level_accuracy/4"] == 0.0  # only APL reaches depth 4, and AML stops above it
    assert set(report) >= {"level_accuracy/1", "level_accuracy/2", "level_accuracy/3", "level_accuracy/4"}


def test_states_are_summed_tensors() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    metric = M.HierarchicalMetrics(tax)
    for name, reduce in metric._reductions.items():
        assert getattr(reduce, "__name__", "") in ("dim_zero_sum", "sum"), name
    assert metric.level_correct.dtype == torch.int64


@pytest.mark.parametrize("name", CLASSES)
def test_empty_batches_add_nothing(name: str, paper_tax: Taxonomy) -> None:
    """An empty batch (every sample filtered out, an empty DDP shard) is not an error and changes nothing."""
    cls = getattr(M, name)
    y_true = torch.tensor([paper_tax.index(n) for n in ("ALL", "AML", "CLL", "Normal")])
    y_pred = torch.tensor([paper_tax.index(n) for n in ("ALL", "ALL", "Chronic", "Reactive")])
    empty = torch.zeros(0, dtype=torch.long)
    metric = cls(paper_tax)
    metric.update(empty, empty)
    metric.update(y_pred[:2], y_true[:2])
    metric.update(empty, empty)
    metric.update(y_pred[2:], y_true[2:])
    assert O.floats(metric.compute()) == O.floats(cls(paper_tax)(y_pred, y_true))


def test_errors(paper_tax: Taxonomy) -> None:
    metric = M.HierarchicalF1(paper_tax)
    with pytest.raises(UnknownNodeError, match="preds: Unknown node 'XYZ'"):
        metric.update(["XYZ"], ["ALL"])
    # marginals passed where nodes belong: one argument name, and the fix
    with pytest.raises(UnknownNodeError, match=r"^preds: expected node names .* got dtype float32\. .*decode them"):
        metric.update(torch.rand(2, paper_tax.num_nodes), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="target and preds must have the same length, got 0 and 1"):
        metric.update(torch.tensor([1]), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="target and preds must have the same length"):
        metric.update(torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError, match="average: expected one of"):
        M.HierarchicalPrecision(paper_tax, average="weighted")
    with pytest.raises(ValueError, match="distance: expected one of"):
        M.MistakeSeverity(paper_tax, distance="hops")
    with pytest.raises(ValueError, match="beta: expected a positive finite number"):
        M.HierarchicalFBeta(paper_tax, beta=0.0)
    with pytest.raises(TypeError, match="taxonomy: expected a hiercls.Taxonomy"):
        M.CorrectRate("root/ALL")
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    with pytest.raises(TaxonomyError, match="needs a tree"):
        M.LevelAccuracy(dag)
    assert "level_accuracy/1" not in M.HierarchicalMetrics(dag)(torch.tensor([3]), torch.tensor([3]))
    assert np.isfinite(float(M.HierarchicalMetrics(dag)(torch.tensor([1]), torch.tensor([3]))["hierarchical_f1"]))


@pytest.mark.parametrize("name", CLASSES)
def test_compute_returns_tensors_that_torchmetrics_wrappers_accept(name: str, paper_tax: Taxonomy) -> None:
    """torchmetrics' convention: 0-d tensors (or a dict of them) on the metric's device, float64 so the
    values equal the functional forms'; BootStrapper stacks them and MetricTracker ranks them (both
    failed on Python floats)."""
    from torchmetrics.wrappers import BootStrapper, MetricTracker

    cls = getattr(M, name)
    y_true = torch.tensor([paper_tax.index(n) for n in ("ALL", "AML", "CLL", "Normal", "APL", "CML")])
    y_pred = torch.tensor([paper_tax.index(n) for n in ("ALL", "ALL", "Chronic", "Reactive", "APL", "CML")])
    value = cls(paper_tax)(y_pred, y_true)
    for v in value.values() if isinstance(value, dict) else [value]:
        assert isinstance(v, torch.Tensor) and v.ndim == 0 and v.dtype == torch.float64
        assert v.device == torch.device("cpu")
    if isinstance(value, dict):
        return
    torch.manual_seed(0)  # BootStrapper resamples with the global generator
    boot = BootStrapper(cls(paper_tax), num_bootstraps=4)
    boot.update(y_pred, y_true)
    out = boot.compute()
    assert torch.isfinite(out["mean"]) and torch.isfinite(out["std"])
    tracker = MetricTracker(cls(paper_tax), maximize=bool(cls.higher_is_better))
    for cut in (3, 6):
        tracker.increment()
        tracker.update(y_pred[:cut], y_true[:cut])
    best = tracker.best_metric()
    assert isinstance(best, float) and best == pytest.approx(
        max(float(v) for v in tracker.compute_all())
        if cls.higher_is_better
        else min(float(v) for v in tracker.compute_all())
    )


def _all_metrics(tax: Taxonomy, **kw) -> list:
    out = [M.HierarchicalMetrics(tax, **kw), M.HierarchicalMetrics(tax, distance="path", **kw)]
    for average in ("micro", "macro"):
        for zd in (0.0, 1.0, math.nan):
            out += [
                M.HierarchicalPrecision(tax, average=average, zero_division=zd, **kw),
                M.HierarchicalRecall(tax, average=average, zero_division=zd, **kw),
                M.HierarchicalF1(tax, average=average, zero_division=zd, **kw),
                M.HierarchicalFBeta(tax, beta=0.5, average=average, zero_division=zd, **kw),
            ]
    out += [M.MistakeSeverity(tax, **kw), M.MistakeSeverity(tax, distance="path", **kw), M.CorrectRate(tax, **kw)]
    out += [cls(tax, zero_division=math.nan, **kw) for cls in (M.LCAPrecision, M.LCARecall, M.LCAF1)]
    if tax.is_tree:
        out.append(M.LevelAccuracy(tax, **kw))
    return out


@settings(examples(30))
@given(case=split_case(trees(max_nodes=15)))
def test_unchecked_device_counting_equals_the_checked_host_path(case) -> None:
    """With ``validate_args=False`` a tree's batches of index tensors are counted on their device (torch LCA
    tables); every state equals the host path's: integer states exactly, macro float64 sums to rounding."""
    tax, y_true, y_pred, batches = case
    for checked, unchecked in zip(_all_metrics(tax), _all_metrics(tax, validate_args=False), strict=True):
        for a, b in batches:
            checked.update(torch.tensor(y_pred[a:b]), torch.tensor(y_true[a:b], dtype=torch.int32))
            unchecked.update(torch.tensor(y_pred[a:b]), torch.tensor(y_true[a:b], dtype=torch.int32))
        for name in checked._defaults:
            want, got = getattr(checked, name), getattr(unchecked, name)
            assert got.dtype == want.dtype, name
            if want.dtype == torch.int64:
                assert torch.equal(got, want), (type(checked).__name__, name)
            else:
                assert float(got) == pytest.approx(float(want), rel=1e-12), (type(checked).__name__, name)
        assert O.floats(unchecked.compute()) == pytest.approx(O.floats(checked.compute()), nan_ok=True)


@pytest.mark.parametrize("name", CLASSES)
def test_unchecked_updates_need_no_device_sync(name: str, paper_tax: Taxonomy) -> None:
    """On the meta device any read-back of a value raises: an update that runs through there does not
    sync a GPU. With validation on (the default), the batch is checked and counted on the host."""
    cls = getattr(M, name)
    preds = torch.randint(0, paper_tax.num_nodes, (16,), device="meta")
    target = torch.randint(0, paper_tax.num_nodes, (16,), device="meta")
    metric = cls(paper_tax, validate_args=False).to("meta")
    metric.update(preds, target)  # first call: the cached LCA tables move to the device
    with HostTraffic() as traffic:  # and then nothing crosses from the host, per update
        metric.update(preds, target)
        metric.update(preds[:0], target[:0])  # an empty shard too
    assert traffic.ops == []
    assert all(getattr(metric, s).device.type == "meta" for s in metric._defaults)
    with pytest.raises((NotImplementedError, RuntimeError)):
        cls(paper_tax).to("meta").update(preds, target)


def test_unchecked_metrics_still_read_names_dags_and_other_devices() -> None:
    """The device path is only for index tensors on the metric's device and a tree; anything else is
    encoded and checked on the host as before, so names and DAGs keep working with validation off."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    metric = M.HierarchicalF1(tax, validate_args=False)
    metric.update(["a1", "b"], ["a2", "b"])
    assert float(metric.compute()) == pytest.approx(M.hierarchical_f1(["a2", "b"], ["a1", "b"], tax))
    with pytest.raises(UnknownNodeError):
        metric.update(["zzz"], ["a1"])
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    severity = M.MistakeSeverity(dag, validate_args=False)
    severity.update(torch.tensor([1]), torch.tensor([3]))
    assert float(severity.compute()) == M.mistake_severity([3], [1], dag)
    with pytest.raises(TypeError, match="validate_args: expected True or False"):
        M.CorrectRate(tax, validate_args="no")


def test_unchecked_negative_indices_fail_instead_of_wrapping(paper_tax: Taxonomy) -> None:
    """torch indexing wraps -1 (a common padding value) to the last node: counted silently, it gave an
    accuracy of 0.5 next to an F1 of 1.0 in one report. Negatives fail like any index out of range, and
    on the CPU the error names the value passed, not the num_nodes (11) it is sent to for the gather."""
    for name in CLASSES:
        metric = getattr(M, name)(paper_tax, validate_args=False)
        with pytest.raises(UnknownNodeError, match=r"^preds: 1 node indices out of range \[0, 11\): first \[-1\]\. "):
            metric.update(torch.tensor([-1, 3]), torch.tensor([5, 3]))
        with pytest.raises(UnknownNodeError, match=r"^target: 2 node indices out of range \[0, 11\): first \[-2, 11\]"):
            metric.update(torch.tensor([5, 3]), torch.tensor([11, -2]))
        with pytest.raises(UnknownNodeError, match=r"^target: 1 node indices out of range \[0, 11\): first \[-5\]"):
            metric.update(torch.tensor([-1, 3]), torch.tensor([-5, 3]))  # target first, as the checked path
        # the message is the checked path's, and nothing was counted
        with pytest.raises(UnknownNodeError) as checked:
            getattr(M, name)(paper_tax).update(torch.tensor([-1, 3]), torch.tensor([5, 3]))
        with pytest.raises(UnknownNodeError) as unchecked:
            metric.update(torch.tensor([-1, 3]), torch.tensor([5, 3]))
        assert str(unchecked.value) == str(checked.value)
        assert all(not getattr(metric, s).any() for s in metric._defaults), name
    checked = M.HierarchicalMetrics(paper_tax)
    with pytest.raises(UnknownNodeError):
        checked.update(torch.tensor([-1, 3]), torch.tensor([5, 3]))
    # a bool tensor is not read as node 0/1 on the device path: the checked host path refuses it
    with pytest.raises((UnknownNodeError, ValueError)):
        M.CorrectRate(paper_tax, validate_args=False).update(torch.tensor([1, 2]), torch.tensor([True, False]))


@pytest.mark.parametrize("zero_division", [0.0, 1.0, math.nan])
def test_hierarchical_metrics_before_any_sample_gives_zero_division_as_every_class(
    paper_tax: Taxonomy, zero_division: float
) -> None:
    """compute() before update() (a review asked whether 0.0 there should be NaN or a raise): every class
    gives its 0/0 value, zero_division, with torchmetrics' warning; HierarchicalMetrics does the same for
    every key, equal to the single-metric classes', so zero_division=nan tells "no data" from a 0 score."""
    report = M.HierarchicalMetrics(paper_tax, zero_division=zero_division)
    with pytest.warns(UserWarning, match=r"compute.*called before the ``update``"):
        got = O.floats(report.compute())
    assert set(got) == set(M.summary(["ALL"], ["ALL"], paper_tax))
    np.testing.assert_array_equal(list(got.values()), [zero_division] * len(got))
    singles = {
        "hierarchical_precision": M.HierarchicalPrecision,
        "hierarchical_recall": M.HierarchicalRecall,
        "hierarchical_f1": M.HierarchicalF1,
        "mistake_severity": M.MistakeSeverity,
    }
    for key, cls in singles.items():
        np.testing.assert_array_equal(got[key], float(cls(paper_tax, zero_division=zero_division).compute()))
    levels = O.floats(M.LevelAccuracy(paper_tax, zero_division=zero_division).compute())
    np.testing.assert_array_equal([got[f"level_accuracy/{d}"] for d in levels], list(levels.values()))
    report.update(["ALL"], ["AML"])
    report.reset()  # after reset() as before the first update
    np.testing.assert_array_equal(list(O.floats(report.compute()).values()), [zero_division] * len(got))


def test_micro_set_metrics_hold_no_float64_state(paper_tax: Taxonomy) -> None:
    """Apple's MPS has no float64: a micro-averaged metric keeps integer counts only, so it can move there."""
    for cls in (M.HierarchicalPrecision, M.HierarchicalRecall, M.HierarchicalF1):
        assert {getattr(cls(paper_tax), s).dtype for s in cls(paper_tax)._defaults} == {torch.int64}
        assert torch.float64 in {
            getattr(cls(paper_tax, average="macro"), s).dtype for s in cls(paper_tax, average="macro")._defaults
        }


def _collection_configs(tax: Taxonomy) -> dict[str, M.HierarchicalMetrics]:
    configs = {
        "sev_height": M.MistakeSeverity(tax, distance="height"),
        "sev_path": M.MistakeSeverity(tax, distance="path"),
        "lcap_info": M.LCAPrecision(tax),
        "lcap_depth": M.LCAPrecision(tax, measure="depth"),
        "lcar_info": M.LCARecall(tax),
        "lcaf_depth": M.LCAF1(tax, measure="depth"),
        "f1_macro": M.HierarchicalF1(tax, average="macro"),
        "f2_macro": M.HierarchicalFBeta(tax, beta=2.0, average="macro"),
        "p_macro_zd1": M.HierarchicalPrecision(tax, average="macro", zero_division=1.0),
        "p_macro": M.HierarchicalPrecision(tax, average="macro"),
        "p_micro": M.HierarchicalPrecision(tax),
        "r_micro": M.HierarchicalRecall(tax),
        "correct": M.CorrectRate(tax),
    }
    if tax.is_tree:
        configs["all_height"] = M.HierarchicalMetrics(tax, distance="height")
        configs["all_path"] = M.HierarchicalMetrics(tax, distance="path")
    return configs


@given(tax=taxonomies(max_nodes=12), seed=st.integers(0, 2**16))
@examples(15)
def test_a_metric_collection_never_merges_metrics_that_add_different_things(tax: Taxonomy, seed: int) -> None:
    """torchmetrics' compute groups merge metrics whose states have the same names and values after the
    first update, then update only one of them. A first batch without mistakes made MistakeSeverity(height)
    and (path), LCAPrecision(info) and (depth), macro F1 and F2 look alike: all reported the first one's numbers."""
    from torchmetrics import MetricCollection

    rng = np.random.default_rng(seed)
    exact = rng.integers(0, tax.num_nodes, 5)
    preds, target = rng.integers(0, tax.num_nodes, 9), rng.integers(0, tax.num_nodes, 9)
    batches = [(exact, exact), (preds, target)]
    collection = MetricCollection(_collection_configs(tax))  # compute_groups=True, torchmetrics' default
    alone = _collection_configs(tax)
    for p, t in batches:
        collection.update(torch.as_tensor(p), torch.as_tensor(t))
        for metric in alone.values():
            metric.update(torch.as_tensor(p), torch.as_tensor(t))
    for name, metric in alone.items():
        want, got = metric.compute(), collection[name].compute()  # HierarchicalMetrics gives a dict
        for key in want if isinstance(want, dict) else [None]:
            w, g = (want, got) if key is None else (want[key], got[key])
            assert torch.allclose(g, w, equal_nan=True), (name, key)
    # metrics that add the same thing still share their states: micro precision and recall are one group
    groups = [sorted(g) for g in collection.compute_groups.values()]
    assert ["p_micro", "r_micro"] in groups
    assert not any({"sev_height", "sev_path"} <= set(g) or {"f1_macro", "f2_macro"} <= set(g) for g in groups)


def test_states_saved_before_the_ratio_counts_load_to_the_same_value(paper_tax: Taxonomy) -> None:
    """A state_dict saved (persistent(True)) before the macro sums counted their ratios has no n_<ratio>
    (and LCAF1 had sum_f1): loaded, every mean was NaN, silently even with strict=True."""
    y_true, y_pred = ["ALL", "AML", "Normal", "CLL"], ["ALL", "APL", "Leukemia", "Normal"]
    for make in (
        lambda: M.HierarchicalF1(paper_tax, average="macro"),
        lambda: M.LCAF1(paper_tax),
        lambda: M.LCAPrecision(paper_tax),
    ):
        metric = make()
        metric.persistent(True)
        metric.update(y_pred, y_true)
        old = {k: v for k, v in metric.state_dict().items() if not k.startswith(("n_", "update_key_"))}
        if "sum_fscore" in old and isinstance(metric, M.LCAF1):
            old["sum_f1"] = old.pop("sum_fscore")
        fresh = make()
        fresh.persistent(True)
        fresh.load_state_dict(old, strict=True)
        assert float(fresh.compute()) == pytest.approx(float(metric.compute())), type(metric).__name__


def _build(name: str, tax: Taxonomy, **options):
    cls = getattr(M, name)
    return cls(tax, beta=2.0, **options) if name == "HierarchicalFBeta" else cls(tax, **options)


@settings(examples(20))
@given(case=split_case(trees(max_nodes=15)))
def test_merge_state_of_split_metrics_equals_one_metric(case) -> None:
    """Two metrics fed the halves of a batch, merged (as a metric and as a ``metric_state`` dict), give
    the value of one metric fed the whole batch."""
    tax, y_true, y_pred, _ = case
    half = len(y_true) // 2
    for name in CLASSES:
        whole = _build(name, tax)
        whole.update(torch.tensor(y_pred), torch.tensor(y_true))
        for as_dict in (False, True):
            first, second = _build(name, tax), _build(name, tax)
            first.update(torch.tensor(y_pred[:half]), torch.tensor(y_true[:half]))
            second.update(torch.tensor(y_pred[half:]), torch.tensor(y_true[half:]))
            first.merge_state(second.metric_state if as_dict else second)
            assert O.floats(first.compute()) == pytest.approx(O.floats(whole.compute()), nan_ok=True), name


def test_merge_state_names_what_differs() -> None:
    tax = Taxonomy.from_parent_map({"r": None, "a": "r", "b": "r", "d": "a", "e": "a"})
    other = Taxonomy.from_parent_map({"r": None, "a": "r", "b": "r", "d": "a", "f": "a"})
    height = M.MistakeSeverity(tax, distance="height")
    with pytest.raises(ValueError, match=r"incoming_state: .*distance='height' here, 'path' there"):
        height.merge_state(M.MistakeSeverity(tax, distance="path"))
    with pytest.raises(ValueError, match=r"incoming_state: .*same taxonomy"):
        height.merge_state(M.MistakeSeverity(other, distance="height"))
    with pytest.raises(ValueError, match=r"incoming_state: .*distance='height'.*got a dict with states"):
        height.merge_state(M.MistakeSeverity(tax, distance="path").metric_state)
    f1 = M.HierarchicalF1(tax, average="macro")
    with pytest.raises(ValueError, match=r"average='macro' here, 'micro' there"):
        f1.merge_state(M.HierarchicalF1(tax, average="micro"))
    # nothing was added by the refused merges
    height.update(["d"], ["e"])
    assert float(height.compute()) == pytest.approx(M.mistake_severity(["e"], ["d"], tax, distance="height"))


def test_module_to_half_precision_keeps_the_float64_sums() -> None:
    """``module.to(torch.bfloat16)`` (Lightning's ``precision="bf16-true"``) cast the macro sums to
    bfloat16: 20,000 ratios of 0.5 gave 0.2048. ``set_dtype`` still converts them when asked."""
    tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
    t, p = torch.full((20_000,), tax.index("ALL")), torch.full((20_000,), tax.index("AML"))
    holder = torch.nn.Module()
    holder.lca = M.LCAPrecision(tax, measure="depth")
    holder.hf1 = M.HierarchicalF1(tax, average="macro")
    holder.to(torch.bfloat16)
    for i in range(0, len(t), 32):
        holder.lca.update(p[i : i + 32], t[i : i + 32])
        holder.hf1.update(p[i : i + 32], t[i : i + 32])
    assert holder.lca.sum_precision.dtype == torch.float64 and holder.hf1.sum_fscore.dtype == torch.float64
    assert float(holder.lca.compute()) == pytest.approx(M.lca_precision(t, p, tax, measure="depth"), rel=1e-12)
    assert float(holder.hf1.compute()) == pytest.approx(M.hierarchical_f1(t, p, tax, average="macro"), rel=1e-12)
    holder.hf1.reset()  # the defaults stayed float64 too
    assert holder.hf1.sum_fscore.dtype == torch.float64
    assert holder.lca.set_dtype(torch.float32).sum_precision.dtype == torch.float32


def test_merge_state_takes_metrics_built_alike_with_nan_options() -> None:
    """``zero_division=nan`` on both sides was called a difference (nan != nan)."""
    tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
    for cls, kw in ((M.LCAPrecision, {}), (M.HierarchicalPrecision, {"average": "macro"})):
        a, b = cls(tax, zero_division=math.nan, **kw), cls(tax, zero_division=math.nan, **kw)
        a.update(torch.tensor([3]), torch.tensor([3]))
        b.update(torch.tensor([0]), torch.tensor([4]))
        a.merge_state(b)
        assert int(a.total) == 2 and float(a.compute()) == 1.0
        with pytest.raises(ValueError, match=r"zero_division=nan here, 0.0 there"):
            a.merge_state(cls(tax, zero_division=0.0, **kw))


def _as_old_pickle(metric, *, key_state: bool = True, ratio_counts: bool = True):
    """``metric`` as an older hiercls pickled it: no ``_update_key``/``_key_options`` (before merge_state
    compared them), optionally no ``update_key_`` state (before it existed) and no ``n_<ratio>`` counts."""
    old = copy.deepcopy(metric)
    key = old.__dict__.pop("_update_key")
    del old.__dict__["_key_options"]
    dropped = ([] if key_state else [key]) + ([] if ratio_counts else [k for k in old._defaults if k.startswith("n_")])
    for name in dropped:
        del old._defaults[name], old._reductions[name], old._persistent[name], old.__dict__[name]
    return pickle.loads(pickle.dumps(old))


def test_merge_state_takes_metrics_pickled_before_the_update_key() -> None:
    """A metric pickled before ``_update_key`` existed was refused ("differs ()"): it merges now, when
    its option attributes match, and is still refused, by name, when they do not."""
    tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
    t, p = torch.tensor([3, 4, 5, 3]), torch.tensor([3, 3, 4, 1])
    for make in (
        lambda **kw: M.MistakeSeverity(tax, **kw),
        lambda **kw: M.HierarchicalF1(tax, average="macro", **kw),
        lambda **kw: M.LCAF1(tax, zero_division=math.nan, **kw),
    ):
        whole = make()
        whole.update(p, t)
        for key_state, ratio_counts in ((True, True), (False, True), (False, False)):
            first, second = make(), make()
            first.update(p[:2], t[:2])
            second.update(p[2:], t[2:])
            first.merge_state(_as_old_pickle(second, key_state=key_state, ratio_counts=ratio_counts))
            assert O.floats(first.compute()) == pytest.approx(O.floats(whole.compute()), nan_ok=True)
    severity = M.MistakeSeverity(tax, distance="height")
    with pytest.raises(ValueError, match=r"incoming_state: .*distance='height' here, 'path' there"):
        severity.merge_state(_as_old_pickle(M.MistakeSeverity(tax, distance="path")))
    with pytest.raises(ValueError, match=r"incoming_state: .*distance='height' here, 'path' there"):
        severity.merge_state(_as_old_pickle(M.MistakeSeverity(tax, distance="path"), key_state=False))


def test_merge_state_takes_subclasses() -> None:
    """A subclass instance was passed to torchmetrics unchecked: options that differ came out as a
    missing hashed state. It is checked (and merged) like its base class now."""

    class Severity(M.MistakeSeverity):
        pass

    tax = Taxonomy.from_paths(["r/acute/ALL", "r/acute/AML", "r/chronic/CLL"])
    base, sub = M.MistakeSeverity(tax), Severity(tax)
    base.update(torch.tensor([4]), torch.tensor([3]))
    sub.update(torch.tensor([5]), torch.tensor([3]))
    base.merge_state(sub)
    assert int(base.mistakes) == 2
    with pytest.raises(ValueError, match=r"incoming_state: .*distance='height' here, 'path' there"):
        M.MistakeSeverity(tax, distance="height").merge_state(Severity(tax, distance="path"))
