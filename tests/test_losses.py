"""hiercls.losses: oracles, masking, invariances, scale, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hiercls import Taxonomy, TaxonomyError, UnknownNodeError
from hiercls import losses as L
from hiercls.losses import balanced_weight, create_loss
from hiercls.marginals import _tables_for, conditional_log_marginals, flat_log_marginals
from tests import oracles_losses as O
from tests.budget import examples
from tests.device_probe import HostTraffic
from tests.strategies import dags, trees


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: OpenMP regions only add latency (tens of ms each on an oversubscribed 2-core runner)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# kind -> (function, module class, oracle, logits width, DAGs allowed, extra options)
KINDS = {
    "conditional": (L.conditional_softmax_nll, L.ConditionalSoftmaxLoss, O.conditional_nll, "nodes", False, {}),
    "level": (L.level_cross_entropy, L.LevelCrossEntropyLoss, O.level_cross_entropy, "nodes", False, {}),
    "bce": (L.node_bce, L.NodeBCELoss, O.node_bce, "nodes", True, {}),
    "bce_siblings": (L.node_bce, L.NodeBCELoss, O.node_bce, "nodes", True, {"negatives": "siblings"}),
    "max_constraint": (L.max_constraint_loss, L.MaxConstraintLoss, O.max_constraint_loss, "nodes", True, {}),
    "flat": (L.flat_cross_entropy, L.FlatCrossEntropyLoss, O.flat_cross_entropy, "leaves", True, {}),
    "hxe": (L.hxe_loss, L.HXELoss, O.hxe_loss, "leaves", False, {"alpha": 0.5}),
    "soft_label": (L.soft_label_loss, L.SoftLabelLoss, O.soft_label_loss, "leaves", False, {"beta": 3.0}),
}
TREE_KINDS = list(KINDS)
DAG_KINDS = [k for k, v in KINDS.items() if v[4]]


def _width(tax: Taxonomy, kind: str) -> int:
    return tax.num_nodes if KINDS[kind][3] == "nodes" else tax.num_leaves


@st.composite
def cases(draw, kind: str, dag: bool = False, max_batch: int = 6):
    """(taxonomy, float64 logits, target, weight or None, smoothing)."""
    tax = draw(dags(max_nodes=14) if dag else trees(max_nodes=18))
    batch = draw(st.integers(1, max_batch))
    target = torch.tensor(draw(st.lists(st.integers(0, tax.num_nodes - 1), min_size=batch, max_size=batch)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.5, 2.0, 6.0]))
    logits = torch.randn(batch, _width(tax, kind), generator=gen, dtype=torch.float64) * scale
    which = draw(st.sampled_from(["none", "node", "level"]))
    weight = None
    if which == "node":
        weight = torch.rand(tax.num_nodes, generator=gen, dtype=torch.float64) * 2
    elif which == "level":
        weight = torch.rand(tax.max_depth + 1, generator=gen, dtype=torch.float64) * 2
        if _width(tax, kind) == tax.num_leaves == tax.max_depth + 1 != tax.num_nodes:
            # as many leaves as levels: a leaf-logit loss refuses the ambiguous shape; given per node instead
            weight = weight[tax.as_tensor("depth_index")]
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.2]))
    return tax, logits, target, weight, smoothing


def _call(kind: str, logits, target, tax, **kwargs):
    fn, _, _, _, _, extra = KINDS[kind]
    return fn(logits, target, tax, **{**extra, **kwargs})


def _oracle(kind: str, logits, target, tax, weight, smoothing):
    _, _, oracle, _, _, extra = KINDS[kind]
    return torch.tensor(
        oracle(logits, target.tolist(), tax, weight=weight, smoothing=smoothing, **extra), dtype=torch.float64
    )


# ---------------------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("kind", TREE_KINDS)
@settings(examples(25))
@given(data=st.data())
def test_equals_oracle_on_trees(kind, data):
    tax, logits, target, weight, smoothing = data.draw(cases(kind))
    got = _call(kind, logits, target, tax, weight=weight, label_smoothing=smoothing, reduction="none")
    torch.testing.assert_close(got, _oracle(kind, logits, target, tax, weight, smoothing), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", DAG_KINDS)
@settings(examples(25))
@given(data=st.data())
def test_equals_oracle_on_dags(kind, data):
    tax, logits, target, weight, smoothing = data.draw(cases(kind, dag=True))
    got = _call(kind, logits, target, tax, weight=weight, label_smoothing=smoothing, reduction="none")
    torch.testing.assert_close(got, _oracle(kind, logits, target, tax, weight, smoothing), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("path", [True, False])
@settings(examples(30))
@given(data=st.data())
def test_conditional_nll_both_strategies_equal_oracle(path, data):
    tax, logits, target, weight, smoothing = data.draw(cases("conditional"))
    tables = _tables_for(tax, "cpu")
    node_weight = None if weight is None else L._node_weight(weight, tax, torch.device("cpu"), True).double()
    got = L._conditional_nll(logits, target, tables, node_weight, smoothing, path=path)
    want = torch.tensor(
        O.conditional_nll(logits, target.tolist(), tax, weight=weight, smoothing=smoothing), dtype=torch.float64
    )
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def test_paper_taxonomy_values(paper_tax):
    # uniform logits: each decision on the path costs log(group size)
    logits = torch.zeros(3, paper_tax.num_nodes)
    target = torch.tensor([paper_tax.index(n) for n in ["APL", "Normal", "Acute"]])
    got = L.conditional_softmax_nll(logits, target, paper_tax, reduction="none")
    # APL: root(3) -> Leukemia, Leukemia(2) -> Acute, Acute(2) -> AML, AML(1) -> APL
    want = torch.tensor([math.log(3) + 2 * math.log(2), math.log(3), math.log(3) + math.log(2)])
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------- relations between losses/marginals


@settings(examples(30))
@given(data=st.data())
def test_conditional_nll_is_minus_log_marginal(data):
    tax, logits, target, _, _ = data.draw(cases("conditional"))
    nll = L.conditional_softmax_nll(logits, target, tax, reduction="none")
    log_marginal = conditional_log_marginals(logits, tax).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(nll, -log_marginal)


def test_hxe_weighs_the_coarse_decisions_more_as_alpha_grows() -> None:
    """The authors' weighting, exp(-alpha * depth): a larger alpha makes a coarse mistake cost more than a fine one.

    Two predictions with the same total uncertainty: one unsure only of the first decision (A or B), one unsure
    only of the last (a1 or a2). With alpha = 0 they cost the same (-log 1/2); with alpha > 0 the coarse doubt
    costs more, by exp(alpha) (the weighting of the heights, the reverse, gave the opposite).
    """
    tax = Taxonomy.from_paths(["r/A/a1", "r/A/a2", "r/B/b1", "r/B/b2"])
    target = torch.tensor([tax.index("a1")])
    leaves = list(tax.leaves)
    coarse = torch.full((1, 4), -1e4)
    coarse[0, [leaves.index("a1"), leaves.index("b1")]] = 0.0  # P(A) = 1/2, P(a1 | A) = 1
    fine = torch.full((1, 4), -1e4)
    fine[0, [leaves.index("a1"), leaves.index("a2")]] = 0.0  # P(A) = 1, P(a1 | A) = 1/2
    half = math.log(2)
    for alpha in (0.0, 0.5, 2.0):
        c = L.hxe_loss(coarse, target, tax, alpha=alpha).item()
        f = L.hxe_loss(fine, target, tax, alpha=alpha).item()
        assert c == pytest.approx(half, rel=1e-5) and f == pytest.approx(half * math.exp(-alpha), rel=1e-5)


@settings(examples(30))
@given(data=st.data())
def test_flat_ce_is_minus_log_marginal_and_hxe_alpha0(data):
    tax, logits, target, _, _ = data.draw(cases("flat"))
    flat = L.flat_cross_entropy(logits, target, tax, reduction="none")
    log_marginal = flat_log_marginals(logits, tax).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(flat, -log_marginal)
    torch.testing.assert_close(L.hxe_loss(logits, target, tax, alpha=0.0, reduction="none"), flat)


@settings(examples(30))
@given(data=st.data())
def test_flat_ce_on_leaves_is_cross_entropy_and_soft_label_limit(data):
    tax, logits, _, _, smoothing = data.draw(cases("flat"))
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(0, tax.num_leaves, (logits.shape[0],), generator=gen)
    target = torch.as_tensor(tax.leaf_index.copy())[pos]
    want = F.cross_entropy(logits, pos, reduction="none", label_smoothing=smoothing)
    torch.testing.assert_close(
        L.flat_cross_entropy(logits, target, tax, reduction="none", label_smoothing=smoothing), want
    )
    if tax.height() <= 20:  # beta -> infinity: one-hot soft labels
        got = L.soft_label_loss(logits, target, tax, beta=1e4, reduction="none", label_smoothing=smoothing)
        torch.testing.assert_close(got, want)


def test_soft_label_beta0_is_uniform_target(paper_tax):
    logits = torch.randn(4, paper_tax.num_leaves, dtype=torch.float64)
    target = torch.tensor([0, 3, 5, 9])
    want = -torch.log_softmax(logits, 1).mean(1)
    torch.testing.assert_close(L.soft_label_loss(logits, target, paper_tax, beta=0.0, reduction="none"), want)


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_per_level_weight_equals_expanded_per_node_weight(kind, paper_tax):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, _width(paper_tax, kind), generator=gen)
    target = torch.tensor([0, 1, 4, 6, 9])
    per_level = torch.tensor([0.3, 1.0, 2.0, 0.5, 1.5])
    per_node = per_level[torch.as_tensor(paper_tax.depth_index.copy())]
    a = _call(kind, logits, target, paper_tax, weight=per_level, reduction="none")
    b = _call(kind, logits, target, paper_tax, weight=per_node, reduction="none")
    c = _call(kind, logits, target, paper_tax, weight=torch.ones(paper_tax.num_nodes), reduction="none")
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, _call(kind, logits, target, paper_tax, reduction="none"))


# ------------------------------------------------------------------------------------- masking


def _masked_nodes(kind: str, tax: Taxonomy, t: int) -> set[int]:
    """Logits that must not influence the loss of a sample with target t."""
    path = [tax.index(n) for n in tax.ancestors(t, include_self=True)]
    below = {tax.index(n) for n in tax.descendants(t)}
    everything = set(range(tax.num_nodes))
    if kind == "conditional":
        used = {tax.index(c) for n in path[1:] for c in tax.children(tax.parent(n))}
        return everything - used
    if kind == "level":
        return {n for n in everything if tax.depth(n) == 0 or tax.depth(n) > tax.depth(t)}
    if kind == "bce_siblings":
        near = {tax.index(c) for a in path[:-1] for c in tax.children(a)}
        return everything - (near - below)
    return below | {0}  # bce, max_constraint


@pytest.mark.parametrize("moved_by", ["noise", "-inf"])
@pytest.mark.parametrize("kind", ["conditional", "level", "bce", "bce_siblings", "max_constraint"])
@settings(examples(30))
@given(data=st.data())
def test_masked_logits_change_nothing_and_get_zero_gradient(kind, moved_by, data):
    """Logits a sample's loss must not read can move anywhere, to -inf too (``logits + log(mask)``
    masking a whole sibling group or level): the loss stays and their gradient is exactly 0, not NaN."""
    tax, logits, target, weight, smoothing = data.draw(cases(kind))
    logits = logits.float()
    mask = torch.zeros_like(logits, dtype=torch.bool)
    for b, t in enumerate(target.tolist()):
        mask[b, sorted(_masked_nodes(kind, tax, t))] = True
    x = logits.clone().requires_grad_(True)
    loss = _call(kind, x, target, tax, weight=weight, label_smoothing=smoothing, reduction="sum")
    loss.backward()
    assert torch.equal(x.grad[mask], torch.zeros_like(x.grad[mask]))
    if moved_by == "noise":
        noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3)) * 50
        moved = torch.where(mask, logits + noise, logits)
    else:
        moved = logits.masked_fill(mask, -math.inf)
    y = moved.clone().requires_grad_(True)
    again = _call(kind, y, target, tax, weight=weight, label_smoothing=smoothing, reduction="sum")
    again.backward()
    assert (
        torch.allclose(loss.detach(), again.detach(), rtol=1e-6, atol=1e-6)
        if moved_by == "-inf"
        else torch.equal(loss.detach(), again.detach())
    )
    assert torch.isfinite(y.grad).all()
    assert torch.equal(y.grad[mask], torch.zeros_like(y.grad[mask]))


@pytest.mark.parametrize("path", [True, False])
def test_conditional_nll_with_a_masked_subtree_has_no_nan_in_either_strategy(path, paper_tax):
    """Both NLL strategies: a subtree masked with -inf leaves the loss of targets outside it as it was
    and gives its logits gradient 0; a target inside it costs +inf, never NaN."""
    tables = _tables_for(paper_tax, torch.device("cpu"))
    inside = paper_tax.index("Leukemia")
    masked = [inside] + [paper_tax.index(n) for n in paper_tax.descendants("Leukemia")]
    logits = torch.randn(3, paper_tax.num_nodes, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = torch.tensor([paper_tax.index("Normal"), paper_tax.index("Reactive"), paper_tax.index("Normal")])
    x = logits.clone().requires_grad_(True)
    reference = L._conditional_nll(x, target, tables, None, 0.0, path=path)
    y = logits.clone()
    y[:, masked] = -math.inf
    y.requires_grad_(True)
    got = L._conditional_nll(y, target, tables, None, 0.0, path=path)
    got.sum().backward()
    # P(Normal) and P(Reactive) renormalise without Leukemia: the loss can only drop, and stays finite
    assert torch.isfinite(got).all() and (got <= reference.detach() + 1e-12).all()
    assert torch.isfinite(y.grad).all() and (y.grad[:, masked] == 0).all()
    impossible = L._conditional_nll(
        y.detach(), torch.tensor([paper_tax.index("CLL")]).repeat(3), tables, None, 0.0, path=path
    )
    assert torch.isinf(impossible).all() and (impossible > 0).all()


@pytest.mark.parametrize("path", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_conditional_nll_with_a_plus_inf_logit_is_finite_as_the_level_loss_is(path, smoothing):
    """With validate_args=False a +inf logit (a float16 overflow) on or beside a target's path gave
    inf - inf = NaN in both NLL strategies, loss and gradient. It is clamped to the dtype's finite range
    with the gradient passed through, as level_cross_entropy does: on a tree whose deepest level is one
    sibling group the two losses are the same, and so are their values and gradients."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    tables = _tables_for(tax, torch.device("cpu"))
    target = torch.tensor([tax.index(n) for n in ("a1", "a2", "a", "b")])
    for column in range(1, tax.num_nodes):
        logits = torch.zeros(len(target), tax.num_nodes)
        logits[:, column] = math.inf
        x = logits.clone().requires_grad_(True)
        got = L._conditional_nll(x, target, tables, None, smoothing, path=path)
        got.sum().backward()
        y = logits.clone().requires_grad_(True)
        level = L.level_cross_entropy(y, target, tax, label_smoothing=smoothing, reduction="none", validate_args=False)
        level.sum().backward()
        assert torch.isfinite(got).all() and torch.isfinite(x.grad).all(), (column, got, x.grad)
        assert torch.equal(got.detach(), level.detach()), (column, got, level)
        assert torch.allclose(x.grad, y.grad, atol=1e-6), (column, x.grad, y.grad)
    public = L.conditional_softmax_nll(logits, target, tax, label_smoothing=smoothing, validate_args=False)
    assert torch.isfinite(public)


@pytest.mark.parametrize("name", ["flat_cross_entropy", "hxe_loss", "soft_label_loss"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_leaf_logit_losses_read_a_plus_inf_logit_as_the_dtypes_largest_value(name, dtype, smoothing):
    """With validate_args=False a +inf leaf logit (a float16 overflow) gave NaN (flat, HXE: loss and
    gradient) or +inf with NaN gradients (soft labels), where the node losses read it as the dtype's largest
    value with the gradient passed through. Now all do: the same value and gradient as that finite logit."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    loss = getattr(L, name)
    target = torch.tensor([tax.index(n) for n in ("a1", "a2", "a", "b")])
    for column in range(tax.num_leaves):
        logits = torch.zeros(len(target), tax.num_leaves, dtype=dtype)
        logits[:, 0] = 2.0
        logits[:, column] = math.inf
        x = logits.clone().requires_grad_(True)
        got = loss(x, target, tax, label_smoothing=smoothing, reduction="none", validate_args=False)
        got.sum().backward()
        # the losses compute in float32 (float16 logits are read into it): +inf is float32's largest value
        y = logits.float().nan_to_num(posinf=torch.finfo(torch.float32).max).requires_grad_(True)
        want = loss(y, target, tax, label_smoothing=smoothing, reduction="none", validate_args=False)
        want.sum().backward()
        # the value may round to +inf (the limit: a leaf at +inf leaves the others at log P = -inf, and the
        # smoothing term averages them), never to NaN; the gradient stays finite
        assert not torch.isnan(got).any() and torch.isfinite(x.grad).all(), (column, got, x.grad)
        assert torch.equal(got.detach(), want.detach()), (column, got, want)
        assert torch.equal(x.grad, y.grad.to(dtype)), (column, x.grad, y.grad)
        if not smoothing and name != "soft_label_loss":
            assert torch.isfinite(got).all()
        if name == "flat_cross_entropy":  # the dense strategy (GPU, torch.compile) too, not only the CPU's
            tables = _tables_for(tax, torch.device("cpu"))
            z = logits.float().requires_grad_(True)
            dense = L._flat_cross_entropy(z, target, tables, None, smoothing, dense=True)
            dense.sum().backward()
            assert torch.equal(dense.detach(), want.detach()) and torch.equal(z.grad, y.grad), (column, dense)


def test_soft_labels_on_float16_logits_do_not_overflow_their_ring_sums():
    """The ring sums add many logits: in float16, 800 leaves at about -50 summed past -65504 to -inf and
    the loss came out +inf. They are summed in float32; the loss equals the float32 logits' loss."""
    tax = Taxonomy.from_edges([("r", f"l{i}") for i in range(800)])
    logits = -100 * torch.rand(3, tax.num_leaves, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 5, 0])  # two leaves and the root
    half = L.soft_label_loss(logits.half(), target, tax, reduction="none")
    full = L.soft_label_loss(logits.half().float(), target, tax, reduction="none")
    assert torch.isfinite(half).all() and torch.allclose(half, full, rtol=1e-6), (half, full)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_empty_list_target_with_an_empty_batch_is_an_empty_batch(kind, paper_tax):
    """torch.as_tensor([]) is float32, so [] was refused as 'expected integer node indices' while [1, 2]
    was taken; np.array([]) too (float64). Empty, they are an empty batch of indices."""
    function, _, _, _, _, options = KINDS[kind]
    width = _width(paper_tax, kind)
    for target in ([], np.array([])):
        got = function(torch.zeros(0, width), target, paper_tax, **options)
        assert got.item() == 0.0, (kind, got)
    with pytest.raises(ValueError, match="expected integer node indices"):
        function(torch.zeros(1, width), [0.5], paper_tax, **options)


@pytest.mark.parametrize("path", [True, False])
def test_conditional_nll_with_two_plus_inf_logits_in_a_group_and_smoothing_is_not_minus_inf(path):
    """The group mean summed two clamped +inf logits (each the dtype's max) to +inf, so the smoothing term
    eps * (logit - mean) was -inf: a loss that looked perfect. The level loss gives a finite value."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    tables = _tables_for(tax, torch.device("cpu"))
    target = torch.tensor([tax.index("a1"), tax.index("b")])
    logits = torch.zeros(2, tax.num_nodes)
    logits[:, [tax.index("a"), tax.index("b")]] = math.inf
    got = L._conditional_nll(logits, target, tables, None, 0.1, path=path)
    level = L.level_cross_entropy(logits, target, tax, label_smoothing=0.1, reduction="none", validate_args=False)
    assert torch.isfinite(got).all() and (got > 0).all(), got
    assert torch.allclose(got, level, rtol=1e-5), (got, level)


def test_conditional_nll_works_under_torch_func_per_sample_gradients():
    """The +inf clamp is an autograd.Function: without setup_context and a vmap rule, torch.func.grad and
    vmap(grad) (per-sample gradients) refused every input, finite included. (Forward mode, torch.func.jvp,
    would need a jvp method, which torch.compile cannot trace: not supported.)"""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/a/a3", "r/b/b1", "r/b/b2", "r/c"])
    x = torch.randn(3, tax.num_nodes, dtype=torch.float64)
    y = torch.tensor([tax.index(n) for n in ("a2", "b1", "c")])

    def loss(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return L.conditional_softmax_nll(z, t, tax, reduction="sum", validate_args=False)

    x_ = x.clone().requires_grad_(True)
    loss(x_, y).backward()
    torch.testing.assert_close(torch.func.grad(loss)(x, y), x_.grad)
    per_sample = torch.func.vmap(torch.func.grad(lambda z, t: loss(z[None], t[None])))(x, y)
    torch.testing.assert_close(per_sample, x_.grad)  # the rows of a summed loss are the per-sample gradients


def test_normal_image_teaches_only_the_first_level(paper_tax):
    x = torch.zeros(1, paper_tax.num_nodes, requires_grad=True)
    L.conditional_softmax_nll(x, torch.tensor([paper_tax.index("Normal")]), paper_tax).backward()
    first = [paper_tax.index(n) for n in ("Normal", "Reactive", "Leukemia")]
    assert torch.count_nonzero(x.grad) == 3 and torch.count_nonzero(x.grad[0, first]) == 3


# ---------------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("kind", TREE_KINDS)
@settings(examples(15))
@given(data=st.data())
def test_batch_permutation_invariance(kind, data):
    tax, logits, target, weight, smoothing = data.draw(cases(kind))
    perm = torch.randperm(logits.shape[0], generator=torch.Generator().manual_seed(7))
    kw = {"weight": weight, "label_smoothing": smoothing}
    per_sample = _call(kind, logits, target, tax, reduction="none", **kw)
    torch.testing.assert_close(_call(kind, logits[perm], target[perm], tax, reduction="none", **kw), per_sample[perm])
    torch.testing.assert_close(_call(kind, logits[perm], target[perm], tax, **kw), per_sample.mean())
    torch.testing.assert_close(_call(kind, logits[perm], target[perm], tax, reduction="sum", **kw), per_sample.sum())


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_a_samples_loss_does_not_depend_on_its_batch_bit_for_bit(kind) -> None:
    """A sample's loss (reduction="none") is the same number alone and in a batch of 64. max_constraint_loss
    summed its per-node terms down node-major columns, whose order of additions changed with the batch size:
    21 of 64 samples moved by up to an ulp (0.0078 on 35,000)."""
    from hiercls.synthetic import layered_taxonomy

    tax = layered_taxonomy([3, 13, 51, 273, 1103], seed=0)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, _width(tax, kind), generator=g) * 3
    target = torch.as_tensor(tax.leaf_index)[torch.randint(0, tax.num_leaves, (64,), generator=g)]
    together = _call(kind, logits, target, tax, reduction="none")
    alone = torch.cat([_call(kind, logits[i : i + 1], target[i : i + 1], tax, reduction="none") for i in range(64)])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("kind", TREE_KINDS)
@settings(examples(10))
@given(data=st.data())
def test_functional_equals_module(kind, data):
    tax, logits, target, weight, smoothing = data.draw(cases(kind))
    _, cls, _, _, _, extra = KINDS[kind]
    for reduction in ("mean", "sum", "none"):
        kw = {"weight": weight, "label_smoothing": smoothing, "reduction": reduction}
        module = cls(tax, **extra, **kw)
        torch.testing.assert_close(module(logits, target), _call(kind, logits, target, tax, **kw), rtol=1e-12, atol=0)
        assert type(L.create_loss(kind.replace("bce_siblings", "bce"), tax, **extra, **kw)) is cls


@pytest.mark.parametrize("kind", TREE_KINDS)
@settings(examples(15))
@given(data=st.data())
def test_finite_and_nonnegative_at_extreme_logits(kind, data):
    tax, logits, target, weight, smoothing = data.draw(cases(kind))
    x = (torch.sign(logits) * 1e4).float().requires_grad_(True)
    loss = _call(kind, x, target, tax, weight=weight, label_smoothing=smoothing, reduction="none")
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind", TREE_KINDS)
@settings(examples(10))
@given(data=st.data())
def test_extreme_float32_logits_match_the_float64_oracle(kind, data):
    tax, logits, target, weight, smoothing = data.draw(cases(kind))
    x = torch.sign(logits) * 1e4 + logits  # ±1e4 plus a little spread, exactly representable in float32
    x = x.float().double()
    got = _call(kind, x.float(), target, tax, weight=weight, label_smoothing=smoothing, reduction="none")
    want = _oracle(kind, x, target, tax, weight, smoothing)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("kind", DAG_KINDS)
@settings(examples(15))
@given(data=st.data())
def test_finite_at_extreme_logits_on_dags(kind, data):
    tax, logits, target, weight, smoothing = data.draw(cases(kind, dag=True))
    x = (torch.sign(logits) * 1e4).float().requires_grad_(True)
    loss = _call(kind, x, target, tax, weight=weight, label_smoothing=smoothing, reduction="none")
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind", ["bce", "bce_siblings", "max_constraint", "flat"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_fused_backward_passes_gradcheck(kind, smoothing, paper_tax):
    # the fused autograd Functions (masked BCE, flat NLL) against finite differences
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, _width(paper_tax, kind), generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([paper_tax.index(n) for n in ["APL", "Leukemia", "Normal", "Chronic"]])
    weight = torch.rand(paper_tax.num_nodes, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda v: _call(kind, v, target, paper_tax, weight=weight, label_smoothing=smoothing, reduction="none"), (x,)
    )


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_empty_batch(kind, paper_tax):
    x = torch.zeros(0, _width(paper_tax, kind), requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    mean = _call(kind, x, target, paper_tax)
    assert mean.item() == 0.0 and mean.shape == ()
    mean.backward()
    assert _call(kind, x, target, paper_tax, reduction="sum").item() == 0.0
    assert _call(kind, x, target, paper_tax, reduction="none").shape == (0,)


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_bf16_logits_give_float32_loss(kind, paper_tax):
    x = torch.randn(3, _width(paper_tax, kind)).bfloat16().requires_grad_(True)
    loss = _call(kind, x, torch.tensor([3, 0, 9]), paper_tax)
    assert loss.dtype == torch.float32
    loss.backward()
    assert x.grad.dtype == torch.bfloat16


def test_module_moves_with_to_and_keeps_no_state(paper_tax):
    module = L.ConditionalSoftmaxLoss(paper_tax, weight=torch.ones(5))
    assert module.state_dict() == {}
    assert all(b.device.type == "cpu" for b in module.buffers())
    module = module.to(torch.float64)  # integer index buffers stay integer
    assert module.tables.path_node.dtype == torch.int64
    x = torch.randn(2, paper_tax.num_nodes, dtype=torch.float64)
    assert module(x, torch.tensor([1, 9])).dtype == torch.float64


def test_default_loss_and_create_loss(paper_tax):
    assert [L.default_loss(k) for k in ("conditional", "level", "sigmoid", "flat")] == [
        "conditional",
        "level",
        "bce",
        "flat",
    ]
    assert isinstance(L.create_loss("max_constraint", paper_tax), L.MaxConstraintLoss)
    assert L.create_loss("bce", paper_tax, negatives="siblings").options == {"negatives": "siblings"}


# ---------------------------------------------------------------------------------------- errors


def test_wrong_width_names_expected_shape(paper_tax):
    with pytest.raises(ValueError, match=r"expects shape \(B, num_nodes\) = \(B, 11\), got \(2, 7\)"):
        L.conditional_softmax_nll(torch.zeros(2, 7), torch.tensor([1, 2]), paper_tax)
    with pytest.raises(ValueError, match=r"\(B, num_leaves\) = \(B, 6\), got \(2, 11\).*leaf_index order"):
        L.flat_cross_entropy(torch.zeros(2, 11), torch.tensor([1, 2]), paper_tax)
    with pytest.raises(ValueError, match=r"expects shape \(B, num_nodes\)"):
        L.ConditionalSoftmaxLoss(paper_tax)(torch.zeros(11), torch.tensor([1]))
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        L.node_bce([[0.0] * 11], torch.tensor([1]), paper_tax)
    with pytest.raises(ValueError, match="floating-point"):
        L.node_bce(torch.zeros(1, 11, dtype=torch.long), torch.tensor([1]), paper_tax)


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_target_out_of_range_raises_unknown_node(kind, paper_tax):
    x = torch.zeros(2, _width(paper_tax, kind))
    with pytest.raises(
        UnknownNodeError, match=r"first \[-100\].*An unlabelled sample: leave it out of the batch, or give the root"
    ):
        L.conditional_softmax_nll(torch.zeros(1, paper_tax.num_nodes), torch.tensor([-100]), paper_tax)
    with pytest.raises(UnknownNodeError, match=r"out of range \[0, 11\).*first \[11\]"):
        _call(kind, x, torch.tensor([1, 11]), paper_tax)
    with pytest.raises(UnknownNodeError, match=r"first \[-1\]"):
        _call(kind, x, torch.tensor([-1, 2]), paper_tax)


@pytest.mark.parametrize("kind", TREE_KINDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_and_plus_inf_logits_raise(kind, bad, paper_tax):
    x = torch.zeros(2, _width(paper_tax, kind))
    x[1, 0] = bad
    with pytest.raises(ValueError, match=r"NaN or \+inf values \(first at \[sample, column\] \[\[1, 0\]\]\)"):
        _call(kind, x, torch.tensor([1, 2]), paper_tax)
    _, cls, _, _, _, extra = KINDS[kind]
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        cls(paper_tax, **extra)(x, torch.tensor([1, 2]))


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_minus_inf_masks_a_logit_and_passes_validation(kind, paper_tax):
    """-inf is how a class is masked (``logits + log(mask)``): validation accepts it, and the loss
    equals the limit of a very negative logit, with a finite gradient that is 0 at the mask."""
    x = torch.randn(2, _width(paper_tax, kind), generator=torch.Generator().manual_seed(1))
    column = _width(paper_tax, kind) - 1  # the last node (APL) or the last leaf: never on the targets' paths
    target = torch.tensor([1, 2])  # Normal, Reactive
    far = x.clone()
    far[:, column] = -1e4
    y = x.clone()
    y[:, column] = -math.inf
    y.requires_grad_(True)
    loss = _call(kind, y, target, paper_tax)
    if kind == "soft_label":  # its soft target gives every leaf some mass, the masked one too
        assert loss.item() == math.inf
        return
    loss.backward()
    assert torch.allclose(loss.detach(), _call(kind, far, target, paper_tax), atol=1e-6)
    assert torch.isfinite(y.grad).all() and (y.grad[:, column] == 0).all()


def test_huge_finite_logits_are_not_mistaken_for_infinite(paper_tax):
    x = torch.full((2, paper_tax.num_nodes), 3e38)  # the sum overflows, every value is finite
    assert torch.isfinite(L.conditional_softmax_nll(x, torch.tensor([1, 9]), paper_tax))


def test_validate_args_false_skips_value_checks(paper_tax):
    x = torch.full((1, paper_tax.num_nodes), math.nan)
    assert torch.isnan(L.conditional_softmax_nll(x, torch.tensor([9]), paper_tax, validate_args=False))


def test_target_errors(paper_tax):
    x = torch.zeros(2, paper_tax.num_nodes)
    with pytest.raises(ValueError, match=r"target: expected shape \(B,\) = \(2,\)"):
        L.conditional_softmax_nll(x, torch.tensor([1, 2, 3]), paper_tax)
    with pytest.raises(ValueError, match="integer node indices, got dtype torch.float32"):
        L.conditional_softmax_nll(x, torch.tensor([1.0, 2.0]), paper_tax)
    with pytest.raises(ValueError, match="integer node indices, got dtype torch.bool"):
        L.conditional_softmax_nll(x, torch.tensor([True, False]), paper_tax)
    with pytest.raises(ValueError, match="taxonomy.encode"):
        L.conditional_softmax_nll(x, ["ALL", "AML"], paper_tax)
    # lists of indices are accepted
    assert torch.isfinite(L.conditional_softmax_nll(x, [1, 2], paper_tax))


def test_option_errors(paper_tax):
    x, t = torch.zeros(1, paper_tax.num_nodes), torch.tensor([1])
    with pytest.raises(ValueError, match="reduction: expected one of 'mean', 'sum', 'none', got 'avg'"):
        L.conditional_softmax_nll(x, t, paper_tax, reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing: expected a float in \[0, 1\], got 1.5"):
        L.ConditionalSoftmaxLoss(paper_tax, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"label_smoothing: expected a float in \[0, 1\], got True"):
        L.ConditionalSoftmaxLoss(paper_tax, label_smoothing=True)
    with pytest.raises(
        ValueError, match=r"weight: expected a per-node tensor of shape \(num_nodes,\) = \(11,\) or a per-level"
    ):
        L.level_cross_entropy(x, t, paper_tax, weight=torch.ones(3))
    with pytest.raises(ValueError, match="weight: expected finite, non-negative"):
        L.LevelCrossEntropyLoss(paper_tax, weight=-torch.ones(5))
    with pytest.raises(ValueError, match="negatives: expected 'all' or 'siblings', got 'cousins'"):
        L.node_bce(x, t, paper_tax, negatives="cousins")
    with pytest.raises(ValueError, match="alpha: expected a finite float >= 0, got -1"):
        L.HXELoss(paper_tax, alpha=-1)
    with pytest.raises(ValueError, match="beta: expected a finite float >= 0"):
        L.soft_label_loss(torch.zeros(1, 6), t, paper_tax, beta=math.nan)
    with pytest.raises(ValueError, match="kind: unknown loss 'focal'; expected one of 'conditional'"):
        L.create_loss("focal", paper_tax)
    # an option of another loss is named with its owner, not a bare TypeError from __init__
    with pytest.raises(
        ValueError, match=r"create_loss\('conditional'\): unknown option\(s\) 'alpha' \('alpha' belongs to 'hxe'\)"
    ):
        L.create_loss("conditional", paper_tax, alpha=0.5)
    with pytest.raises(
        ValueError, match=r"'negatives' belongs to 'bce'.*'gamma' is an option of no loss.*'soft_label' takes 'beta'"
    ):
        L.create_loss("soft_label", paper_tax, negatives="siblings", gamma=2)
    with pytest.raises(ValueError, match="head_kind: unknown head kind 'tree'"):
        L.default_loss("tree")
    with pytest.raises(TypeError, match="taxonomy: expected a hiercls.Taxonomy, got dict"):
        L.node_bce(x, t, {"root": None})


@pytest.mark.parametrize("kind", ["conditional", "level", "hxe", "soft_label"])
def test_tree_only_losses_refuse_dags(kind):
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    x = torch.zeros(1, _width(dag, kind))
    with pytest.raises(TaxonomyError, match="needs a tree.*DAG.*SigmoidHead"):
        _call(kind, x, torch.tensor([1]), dag)
    _, cls, _, _, _, extra = KINDS[kind]
    with pytest.raises(TaxonomyError, match="needs a tree"):
        cls(dag, **extra)


@pytest.mark.parametrize("kind, options", [("bce", {}), ("bce", {"negatives": "siblings"}), ("max_constraint", {})])
def test_sigmoid_loss_modules_build_and_match_the_functions_on_a_dag(kind, options) -> None:
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("x", "y"), ("b", "z")])
    logits = torch.randn(5, dag.num_nodes, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([5, 1, 3, 4, 2])  # y, a, then partial labels at inner nodes
    module = L.create_loss(kind, dag, **options)
    function = {"bce": L.node_bce, "max_constraint": L.max_constraint_loss}[kind]
    torch.testing.assert_close(module(logits, target), function(logits, target, dag, **options))


@settings(examples(40))
@given(data=st.data())
def test_nll_losses_are_never_negative_and_zero_at_the_root(data):
    """-log P(t) >= 0, and P(root) = 1: a root label carries no information, so it costs 0 up to rounding,
    never below (the flat loss, whose root sums every leaf's probability, once gave -1.5e-8)."""
    kind, fn = data.draw(
        st.sampled_from(
            [
                ("flat", L.flat_cross_entropy),
                ("flat", L.hxe_loss),
                ("conditional", L.conditional_softmax_nll),
                ("level", L.level_cross_entropy),
            ]
        )
    )
    tax, logits, target, _, _ = data.draw(cases(kind))
    if kind == "level" and not tax.is_tree:
        return
    losses = fn(logits, target, tax, reduction="none")
    assert bool((losses >= 0).all()), losses
    root = torch.full_like(target, tax.index(tax.root))
    at_root = fn(logits, root, tax, reduction="none")
    assert bool((at_root >= 0).all()) and float(at_root.max()) <= 16 * torch.finfo(logits.dtype).eps, at_root


def test_flat_loss_of_a_root_label_is_not_negative_in_float32():
    """A deterministic case for the property above: before the clamp, hundreds of these 4,096 root
    labels cost -1e-7 to -2e-7 in float32."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b", "r/c/c1", "r/c/c2", "r/c/c3"])
    logits = torch.randn(4096, tax.num_leaves, generator=torch.Generator().manual_seed(0)).requires_grad_()
    root = torch.full((4096,), tax.index("r"))
    losses = L.flat_cross_entropy(logits, root, tax, reduction="none")
    assert bool((losses >= 0).all()) and float(losses.detach().max()) <= 1e-6
    losses.sum().backward()  # P(root) = 1 whatever the logits: the gradient is 0 up to rounding
    assert float(logits.grad.abs().max()) <= 1e-6


# ------------------------------------------------------------------ balanced_weight
@st.composite
def _labelled(draw: st.DrawFn, dag: bool = False):
    tax = draw(dags(max_nodes=15) if dag else trees(max_nodes=15))
    names = draw(st.lists(st.sampled_from(list(tax.nodes)), min_size=1, max_size=40))
    return tax, names


@settings(examples(40))
@given(
    case=_labelled(),
    within=st.sampled_from(["siblings", "levels", "leaves"]),
    power=st.sampled_from([1.0, 0.5, 0.0, 2.0]),
)
def test_balanced_weight_matches_the_oracle_on_trees(case, within, power) -> None:
    tax, names = case
    got = balanced_weight(tax, names, within=within, power=power)
    want = O.balanced_weight(tax, names, within, power)
    assert got.dtype == torch.float32 and got.shape == (tax.num_nodes,)
    torch.testing.assert_close(got, torch.tensor([want[v] for v in tax.nodes]), rtol=1e-5, atol=0)


@settings(examples(30))
@given(case=_labelled(dag=True))
def test_balanced_weight_matches_the_oracle_on_dags(case) -> None:
    tax, names = case
    want = O.balanced_weight(tax, names, "leaves")
    got = balanced_weight(tax, tax.encode(names), within="leaves")  # indices too, not only names
    torch.testing.assert_close(got, torch.tensor([want[v] for v in tax.nodes]), rtol=1e-5, atol=0)


@settings(examples(40))
@given(case=_labelled(), within=st.sampled_from(["siblings", "levels", "leaves"]))
def test_balanced_weight_gives_each_option_of_a_decision_the_same_total(case, within) -> None:
    """With power 1, n(v) * w(v) is one value per decision, and the decision's total weight is its count.
    With "leaves", a partial label's weight is the total weight of the leaf targets below it, shared by
    them and the partial labels at that node."""
    tax, names = case
    w = balanced_weight(tax, names, within=within).double().numpy()
    idx = tax.encode(names)
    leaf = np.asarray(tax.is_leaf_mask)
    if within == "leaves":
        count = np.where(leaf, np.bincount(idx, minlength=tax.num_nodes), 0)
        groups = [np.flatnonzero(leaf).tolist()]
        for u in np.flatnonzero(~leaf):  # inner nodes: their leaves' total weight over those targets and u's own
            below = [v for v in np.flatnonzero(leaf) if u in tax.encode(tax.ancestors(tax.nodes[v]))]
            total, own = count[below].sum(), int(np.sum(idx == u))
            want = (count[below] * w[below]).sum() / (total + own) if total else 1.0
            assert w[u] == pytest.approx(want, rel=1e-5)
    else:
        count = np.array([sum(1 for t in names if t == v or v in tax.ancestors(t)) for v in tax.nodes])
        if within == "levels":
            groups = [list(level) for level in tax.levels()]
        else:
            groups = [tax.encode(tax.children(v)).tolist() for v in tax.nodes if tax.children(v)]
        assert np.all(w[count == 0] == 1.0)
    for g in groups:
        present = [v for v in g if count[v] > 0]
        if present:
            totals = count[present] * w[present]
            assert np.allclose(totals, totals[0], rtol=1e-5)
            assert totals.sum() == pytest.approx(count[present].sum(), rel=1e-5)


def test_balanced_weight_leaves_does_not_let_rare_partial_labels_dominate() -> None:
    """A partial label is not a class of its own among the leaves: 2 images labelled only 'neutrophil'
    weigh like the band and segmented images below it, not 25 times the mean (the PBC case)."""
    tax = Taxonomy.from_paths(["r/neutrophil/band", "r/neutrophil/segmented", "r/lymphocyte"])
    names = ["band"] * 40 + ["segmented"] * 60 + ["neutrophil"] * 2 + ["lymphocyte"] * 100
    w = balanced_weight(tax, names, within="leaves")
    leaves = {v: float(w[tax.index(v)]) for v in ("band", "segmented", "lymphocyte")}
    assert leaves == pytest.approx({"band": 200 / 3 / 40, "segmented": 200 / 3 / 60, "lymphocyte": 200 / 3 / 100})
    # the weight of band and segmented samples, 2 * 200 / 3, shared by them and the 2 partial labels
    assert float(w[tax.index("neutrophil")]) == pytest.approx(2 * (200 / 3) / 102)


def test_balanced_weight_leaves_does_not_let_common_partial_labels_above_a_rare_leaf_dominate() -> None:
    """1,000 images labelled only 'leukemia' above a single 'ALL' each took ALL's weight (500.5): the
    leukemia side weighed 1,000 times the 'normal' side and the loss scale grew 250-fold."""
    tax = Taxonomy.from_paths(["r/normal", "r/leukemia/ALL", "r/leukemia/AML"])
    names = ["normal"] * 1000 + ["ALL"] + ["leukemia"] * 1000
    w = balanced_weight(tax, names, within="leaves")
    per_sample = w[torch.as_tensor(tax.encode(names))]
    normal_side, leukemia_side = float(per_sample[:1000].sum()), float(per_sample[1000:].sum())
    assert normal_side == pytest.approx(500.5)
    # ALL's 500.5, and the 1,000 partial labels below 500.5 together: less than twice the leaves' side
    assert leukemia_side == pytest.approx(500.5 + 1000 * 500.5 / 1001)
    assert leukemia_side < 2 * 500.5 and float(per_sample.mean()) < 1.0


def test_balanced_weight_trains_a_loss_and_refuses_bad_input(paper_tax) -> None:
    names = ["Normal"] * 8 + ["ALL"] * 3 + ["APL"]
    w = balanced_weight(paper_tax, names)
    target = torch.as_tensor(paper_tax.encode(names))
    plain, balanced = create_loss("conditional", paper_tax), create_loss("conditional", paper_tax, weight=w)
    # at uniform logits every term of a decision is the same, and a decision's total weight is its count:
    # the loss keeps its scale
    uniform = torch.zeros(len(names), paper_tax.num_nodes)
    assert balanced(uniform, target).item() == pytest.approx(plain(uniform, target).item(), rel=1e-6)
    logits = torch.randn(len(names), paper_tax.num_nodes, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_(True)
    weighted = balanced(logits, target)
    weighted.backward()
    assert weighted.item() != pytest.approx(plain(logits, target).item()) and logits.grad is not None
    # leaves: the mean weight over the (leaf-labelled) training samples is 1, as with scikit-learn's "balanced"
    wl = balanced_weight(paper_tax, names, within="leaves")
    assert float(wl[target].mean()) == pytest.approx(1.0)
    assert torch.equal(balanced_weight(paper_tax, names, power=0), torch.ones(paper_tax.num_nodes))
    with pytest.raises(ValueError, match="targets: expected a non-empty 1-D"):
        balanced_weight(paper_tax, [])
    with pytest.raises(ValueError, match="targets: expected a non-empty 1-D"):
        balanced_weight(paper_tax, [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="within: expected 'siblings', 'levels' or 'leaves', got 'labels'"):
        balanced_weight(paper_tax, names, within="labels")
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="power: expected a finite real number >= 0"):
            balanced_weight(paper_tax, names, power=bad)
    assert torch.equal(balanced_weight(paper_tax, names, power=np.float32(1.0)), w)  # numpy scalars are numbers
    with pytest.raises(ValueError, match="power: expected a power whose weights fit float32, got 60"):
        balanced_weight(paper_tax, ["Normal"] * 99 + ["ALL"], power=60)
    with pytest.raises(UnknownNodeError):
        balanced_weight(paper_tax, ["Normal", "Lymphoma"])
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")])
    for within in ("siblings", "levels"):
        with pytest.raises(TaxonomyError, match=f"within: '{within}' needs a tree .* use within='leaves'"):
            balanced_weight(dag, ["c", "a"], within=within)
    assert balanced_weight(dag, ["c", "a", "c"], within="leaves").shape == (dag.num_nodes,)
    # swapped or wrong arguments are named at the door (they raised AttributeError: no attribute 'is_tree')
    with pytest.raises(TypeError, match=r"the taxonomy comes first: balanced_weight\(taxonomy, targets\)"):
        balanced_weight(target, paper_tax)
    with pytest.raises(TypeError, match=r"taxonomy: expected a hiercls.Taxonomy, got dict\. Build one with"):
        balanced_weight({"r": ["a"]}, names)


# ------------------------------------------------------------------------------ no device sync


@settings(examples(40))
@given(data=st.data())
def test_flat_ce_dense_mask_equals_the_csr_pairs(data):
    """Off the CPU, flat CE reads the leaves below each target from a preorder range on a tree, from a pass
    over the edges on a DAG (no sync); on the CPU it gathers CSR pairs. Both give the same losses and
    gradients, -inf masks included."""
    from hiercls.losses import _flat_cross_entropy

    tax, logits, target, _, smoothing = data.draw(cases("flat", dag=data.draw(st.booleans(), label="dag")))
    if data.draw(st.booleans(), label="mask a leaf") and logits.shape[1] > 1:
        logits = logits.clone()
        logits[:, data.draw(st.integers(0, logits.shape[1] - 1), label="masked leaf")] = -math.inf
    t = _tables_for(tax, "cpu")
    out = []
    for dense in (False, True):
        x = logits.clone().requires_grad_(True)
        loss = _flat_cross_entropy(x, target, t, None, smoothing, dense=dense)
        finite = torch.isfinite(loss)
        loss[finite].sum().backward()
        out.append((loss.detach(), x.grad))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_tree_losses_need_no_device_sync_without_validation(kind, paper_tax):
    """With ``validate_args=False`` nothing reads a value back to the host on a tree (the docs' promise).

    The meta device holds no values, so any ``.item()``/``int()`` of a tensor raises there: a loss that
    runs through on meta tensors does not sync a GPU either.
    """
    width = _width(paper_tax, kind)
    logits = torch.randn(3, width, device="meta")
    target = torch.tensor([1, 9, 0], device="meta")
    _, _, _, _, _, extra = KINDS[kind]
    loss = _call(kind, logits, target, paper_tax, validate_args=False)
    assert loss.device.type == "meta" and loss.shape == ()
    module = KINDS[kind][1](paper_tax, validate_args=False, **extra).to("meta")
    assert module(logits, target).device.type == "meta"
    with HostTraffic() as traffic:  # no host-to-device copy per call either (the tables are cached)
        _call(kind, logits, target, paper_tax, validate_args=False)
        module(logits, target)
    assert traffic.ops == []
    # nor with a per-level weight on the device, which was expanded per call with a fresh depth index
    # copied from the host (the per-node weight had no copy)
    for weight in (torch.ones(paper_tax.max_depth + 1, device="meta"), torch.ones(paper_tax.num_nodes, device="meta")):
        if kind in ("flat", "hxe", "soft_label") and weight.shape[0] != paper_tax.num_nodes:
            continue  # the leaf losses take per-node weights only
        _call(kind, logits, target, paper_tax, validate_args=False, weight=weight)
        with HostTraffic() as traffic:
            _call(kind, logits, target, paper_tax, validate_args=False, weight=weight)
        assert traffic.ops == [], tuple(weight.shape)


def _wide_fan_tree() -> Taxonomy:
    """300 small sibling groups and one of 301: the conditional loss takes its dense strategy here."""
    edges = [("r", f"a{i}") for i in range(300)] + [(f"a{i}", f"a{i}x") for i in range(300)]
    return Taxonomy.from_edges(edges + [("a0", f"w{j}") for j in range(300)])


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_no_sync_with_smoothing_and_on_a_wide_fan_tree(kind):
    """The same promise with label smoothing, the siblings-only BCE, and the conditional loss's dense strategy."""
    from hiercls.marginals import _TaxonomyTables

    tax = _wide_fan_tree()
    assert not _TaxonomyTables(tax).nll_path
    logits = torch.randn(3, _width(tax, kind), device="meta")
    target = torch.tensor([0, 5, tax.num_nodes - 1], device="meta")
    extra = {"negatives": "siblings"} if kind == "bce" else {}
    loss = _call(kind, logits, target, tax, validate_args=False, label_smoothing=0.1, **extra)
    assert loss.device.type == "meta"


def test_the_meta_probe_sees_a_sync(paper_tax):
    """Guards the test above against passing vacuously: a host read-back fails on meta tensors."""
    with pytest.raises(Exception, match="meta"):
        L.flat_cross_entropy(
            torch.randn(3, paper_tax.num_leaves, device="meta"),
            torch.tensor([1, 9, 0], device="meta"),
            paper_tax,
            validate_args=True,
        )


@pytest.mark.parametrize(("kind", "options"), [("bce", {}), ("bce", {"negatives": "siblings"}), ("max_constraint", {})])
def test_learned_weights_get_their_gradient(kind, options, paper_tax):
    """The fused BCE passes the gradient on to a weight that requires it, like the autograd losses."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, paper_tax.num_nodes, generator=gen, dtype=torch.float64)
    target = torch.tensor([1, 5, 9, 3])
    fn = KINDS[kind][0]
    for shape in (paper_tax.num_nodes, paper_tax.max_depth + 1):  # per node and per level
        w = (torch.rand(shape, generator=gen) + 0.5).requires_grad_(True)
        fn(x, target, paper_tax, weight=w, **options).backward()
        # the loss is linear in the weight: its gradient is the loss of each unit weight
        unit = torch.eye(shape)
        want = torch.stack([fn(x, target, paper_tax, weight=e, **options) for e in unit]).float()
        torch.testing.assert_close(w.grad, want, rtol=1e-5, atol=1e-6)
    plain = (torch.rand(paper_tax.num_nodes, dtype=torch.float64) + 0.5).requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    fn(xg, target, paper_tax, weight=plain, **options).backward()
    assert plain.grad is not None and xg.grad is not None


def test_a_loss_left_on_another_device_says_to_move_it(paper_tax):
    loss = L.ConditionalSoftmaxLoss(paper_tax)  # its index tables stay on the CPU
    logits = torch.randn(2, paper_tax.num_nodes, device="meta")
    with pytest.raises(
        ValueError,
        match=r"logits are on meta, but this ConditionalSoftmaxLoss's index tables are on cpu.*loss.to\('meta'\)",
    ):
        loss(logits, torch.tensor([1, 2], device="meta"))


def test_soft_labels_stay_finite_for_inner_targets_at_large_beta() -> None:
    """The ring weights exp(-beta h / H) underflowed together for an inner-node (or root) target once
    beta h / H passed ~100: 0 / 0 = NaN, and -inf gradients. They are now relative to the target's ring."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([[0.0, 2.0, 1.0]], dtype=dtype, requires_grad=True)
        for target, beta in ((tax.index("a"), 200.0), (0, 100.0), (tax.index("a"), 1e4)):
            loss = L.soft_label_loss(x, torch.tensor([target]), tax, beta=beta)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
            x.grad = None
        # target "a" at a huge beta: the mass sits evenly on a's two leaves
        got = L.soft_label_loss(x.detach(), torch.tensor([tax.index("a")]), tax, beta=1e4)
        leaves = [tax.nodes[i] for i in tax.leaf_index]
        a_leaves = [k for k, n in enumerate(leaves) if n in ("a1", "a2")]
        want = torch.logsumexp(x.detach()[0], 0) - x.detach()[0, a_leaves].mean()
        assert torch.allclose(got, want, atol=1e-6)


def test_soft_labels_with_a_masked_leaf_are_inf_not_nan() -> None:
    """Every leaf has target mass, so a -inf leaf makes the loss +inf (documented); a masked leaf under a
    node of the target's own path gave -inf - -inf = NaN instead."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2"])
    x = torch.zeros(1, 4)
    x[0, [tax.nodes[i] for i in tax.leaf_index].index("a2")] = -math.inf
    for target in ("a1", "b1", "a"):
        assert L.soft_label_loss(x, torch.tensor([tax.index(target)]), tax, beta=3.0).item() == math.inf


def test_dag_partial_labels_leave_shared_parents_unknown() -> None:
    """In a DAG, b shares a's child c: labelled only "a", the truth may be c, which makes b positive. BCE and
    the max-constraint loss pushed b down; flat cross-entropy already left it alone."""
    tax = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c"), ("a", "d"), ("b", "e")])
    for kind in ("bce", "max_constraint"):
        x = torch.zeros(1, tax.num_nodes, requires_grad=True)
        _call(kind, x, torch.tensor([tax.index("a")]), tax, reduction="sum").backward()
        grad = dict(zip(tax.nodes, x.grad[0].tolist()))
        assert grad["b"] == 0.0 and grad["c"] == 0.0 and grad["a"] < 0 and grad["e"] > 0, (kind, grad)


def test_hand_written_backwards_refuse_double_backward(paper_tax) -> None:
    """They gave silently wrong Hessian-vector products (the second-order term through the loss dropped) when
    a network sits before the logits; now a backward that builds a graph raises. A plain backward works."""
    torch.manual_seed(0)
    for kind in ("flat", "bce", "max_constraint"):
        X = torch.randn(4, 3, dtype=torch.float64)
        W = torch.randn(3, _width(paper_tax, kind), dtype=torch.float64, requires_grad=True)
        target = torch.tensor([3, 5, 7, 9])
        with pytest.raises(RuntimeError, match="no second derivative"):
            torch.autograd.grad(_call(kind, torch.tanh(X @ W), target, paper_tax), W, create_graph=True)
        (grad,) = torch.autograd.grad(_call(kind, torch.tanh(X @ W), target, paper_tax), W)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_float64_logits_keep_float64_weights(paper_tax) -> None:
    """Weights were rounded to float32 whatever the logits: float64 losses were off by ~1e-8 relative."""
    x = torch.randn(3, paper_tax.num_leaves, dtype=torch.float64)
    w = torch.rand(paper_tax.num_nodes, dtype=torch.float64) + 0.5
    target = torch.tensor([3, 5, 7])
    plain = L.flat_cross_entropy(x, target, paper_tax, reduction="none")
    got = L.flat_cross_entropy(x, target, paper_tax, weight=w, reduction="none")  # the flat loss: loss * w[target]
    assert got.dtype == torch.float64 and torch.equal(got, plain * w[target])
    assert torch.equal(L.FlatCrossEntropyLoss(paper_tax, weight=w, reduction="none")(x, target), got)


def test_soft_labels_with_a_masked_leaf_and_a_zero_weight_are_zero() -> None:
    """inf * 0 gave NaN, and a 'mean' over the batch NaN with it: a sample of weight 0 adds 0."""
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1", "r/b/b2"])
    x = torch.zeros(2, 4)
    x[0, 1] = -math.inf
    weight = torch.ones(tax.num_nodes)
    weight[tax.index("a1")] = 0.0
    target = torch.tensor([tax.index("a1"), tax.index("b1")])
    losses = L.soft_label_loss(x, target, tax, weight=weight, reduction="none", beta=3.0)
    assert losses[0].item() == 0.0 and torch.isfinite(losses[1])


@pytest.mark.parametrize("kind", ["bce", "max_constraint", "flat"])
def test_dag_masks_need_no_device_sync_and_no_descendant_lists(kind) -> None:
    """On a DAG, BCE, the max-constraint loss and (off the CPU) flat CE gathered descendant and ancestor
    lists of data-dependent size (a device sync per call; 0.37 s a step with labels near the root of an
    11,111-node DAG). Their masks now come from passes over the edges: no read-back, no host-to-device
    copy, the same values."""
    tax = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c"), ("a", "d"), ("b", "e"), ("c", "f")])
    logits = torch.randn(4, _width(tax, kind), device="meta")
    target = torch.tensor([1, 3, 5, 6], device="meta")
    _call(kind, logits, target, tax, validate_args=False)  # tables move to the device once
    with HostTraffic() as traffic:
        loss = _call(kind, logits, target, tax, validate_args=False)
        _call(kind, logits, target, tax, validate_args=False, negatives="siblings") if kind == "bce" else None
    assert loss.device.type == "meta" and traffic.ops == []
    module = KINDS[kind][1](tax, validate_args=False)
    assert not any(name.startswith(("desc_", "anc_")) for name in module.tables._buffers)


@pytest.mark.parametrize("kind", ["flat", "conditional", "level", "bce"])
def test_a_weighted_mean_divides_by_the_batch_size_as_documented(kind, paper_tax) -> None:
    # the docs say "mean" divides by B with or without a weight (torch's weighted mean divides by the weights' sum)
    g = torch.Generator().manual_seed(0)
    loss = L.create_loss(kind, paper_tax)
    width = paper_tax.num_leaves if kind == "flat" else paper_tax.num_nodes
    logits = torch.randn(6, width, generator=g)
    target = torch.tensor(paper_tax.leaf_index)[torch.randint(0, paper_tax.num_leaves, (6,), generator=g)]
    weight = torch.rand(paper_tax.max_depth + 1, generator=g) + 0.5
    weighted = L.create_loss(kind, paper_tax, weight=weight)
    per_sample = weighted.__class__(paper_tax, weight=weight, reduction="none")(logits, target)
    assert torch.allclose(weighted(logits, target), per_sample.sum() / 6)
    if kind == "flat":  # unweighted at the leaves it is F.cross_entropy; weighted, torch's mean differs
        leaf = torch.as_tensor(np.searchsorted(paper_tax.leaf_index, target.numpy()))
        assert torch.allclose(loss(logits, target), F.cross_entropy(logits, leaf))
        w = weight[torch.tensor(paper_tax.depth_index)[torch.tensor(paper_tax.leaf_index)]]
        torch_mean = F.cross_entropy(logits, leaf, weight=w)
        assert torch.allclose(torch_mean * w[leaf].sum() / 6, weighted(logits, target))


@examples(30)
@given(tax=dags(min_nodes=4), seed=st.integers(0, 2**16))
def test_max_constraint_gives_no_gradient_below_a_partial_label_in_a_dag(tax: Taxonomy, seed: int) -> None:
    """The docstring's promise: nodes strictly below a partial label learn nothing from it, in DAGs too
    (a node with one of them below it could be positive, so it is left out and its MCM never reaches them)."""
    gen = torch.Generator().manual_seed(seed)
    targets = torch.arange(tax.num_nodes)  # every node, inner ones are partial labels
    logits = (torch.randn(tax.num_nodes, tax.num_nodes, generator=gen) * 3).requires_grad_(True)
    L.max_constraint_loss(logits, targets, tax, reduction="sum").backward()
    for u in range(tax.num_nodes):
        below = [v for v in tax.encode(tax.descendants(tax.nodes[u])) if v != u]
        assert torch.all(logits.grad[u, below] == 0), (tax.nodes[u], below)


def _walked_paths():
    """Every taxonomy built inside reads its paths by walking up (as a badly padded tree does)."""
    import contextlib

    from hiercls import marginals as M

    real = M._TaxonomyTables.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.paths_tabled = False

    @contextlib.contextmanager
    def patched():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(M._TaxonomyTables, "__init__", init)
            M._CACHE.clear()
            try:
                yield
            finally:
                M._CACHE.clear()

    return patched()


@pytest.mark.parametrize("kind", TREE_KINDS)
@settings(examples(20))
@given(data=st.data())
def test_walked_paths_equal_the_oracle(kind, data):
    """Where the padded (num_nodes, depth + 1) ancestor table would be mostly padding, the tree losses walk
    each target's path up instead; both ways must give the oracle's values, module and function."""
    tax, logits, target, weight, smoothing = data.draw(cases(kind))
    want = _oracle(kind, logits, target, tax, weight, smoothing)
    with _walked_paths():
        got = _call(kind, logits, target, tax, weight=weight, label_smoothing=smoothing, reduction="none")
        module = KINDS[kind][1](tax, weight=weight, label_smoothing=smoothing, reduction="none", **KINDS[kind][5])
        assert "path_node" not in dict(module.tables.named_buffers())
        by_module = module(logits, target)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(by_module, want, rtol=1e-7, atol=1e-9)


def test_a_wide_tree_with_one_deep_branch_keeps_no_padded_path_table() -> None:
    """A review: every tree loss held (num_nodes, max_depth + 1) path tables, four of them for the
    conditional loss; 20,000 shallow leaves beside one 400-deep branch made that 8 million entries."""
    chain = [(f"c{i}", f"c{i + 1}") for i in range(400)]
    tax = Taxonomy.from_edges([("c0", f"leaf{i}") for i in range(20_000)] + chain)
    module = L.ConditionalSoftmaxLoss(tax, reduction="none")
    held = sum(b.numel() for b in module.tables.buffers())
    assert held < 10 * tax.num_nodes, held
    target = torch.tensor([tax.index("c400"), tax.index("leaf7"), tax.index("c200")])
    logits = torch.randn(3, tax.num_nodes, dtype=torch.float64)
    want = _oracle("conditional", logits, target, tax, None, 0.0)
    torch.testing.assert_close(module(logits, target), want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", ["conditional", "level", "bce", "max_constraint", "flat"])
@pytest.mark.parametrize("cast", ["half", "bfloat16"])
def test_a_dtype_cast_of_the_module_keeps_the_weight_precision(kind: str, cast: str) -> None:
    """``loss.half()`` (Lightning's "16-true") made the weight float16: a balanced weight of a rare node
    (83,334 here) became inf, and every weighted loss inf (NaN for a root target of node_bce)."""
    tax = Taxonomy.from_paths(["r/normal", "r/leukemia/ALL", "r/leukemia/AML"])
    weight = balanced_weight(tax, ["normal"] * 500_000 + ["ALL"] * 2 + ["AML"])
    loss = create_loss(kind, tax, weight=weight)
    width = tax.num_leaves if kind == "flat" else tax.num_nodes
    logits = torch.randn(4, width, generator=torch.Generator().manual_seed(0))
    target = torch.tensor(tax.encode(["ALL", "AML", "normal", "r"]))
    want = loss(logits, target)
    cast_loss = loss.half() if cast == "half" else loss.to(torch.bfloat16)
    assert cast_loss.weight.dtype == torch.float32
    got = cast_loss(logits, target)
    assert torch.isfinite(got) and torch.allclose(got, want)
    if kind == "bce":
        assert float(cast_loss(logits[:1], torch.tensor([0]))) == 0.0  # a root target adds nothing, not NaN


def test_alpha_and_beta_refuse_bools_and_bad_weights_are_named() -> None:
    tax = Taxonomy.from_paths(["r/a/x", "r/a/y", "r/b"])
    with pytest.raises(ValueError, match=r"alpha: expected a finite float >= 0, got True"):
        create_loss("hxe", tax, alpha=True)
    with pytest.raises(ValueError, match=r"beta: expected a finite float >= 0, got False"):
        create_loss("soft_label", tax, beta=False)
    bad = torch.ones(tax.num_nodes)
    bad[2], bad[4] = -1.0, float("inf")
    with pytest.raises(
        ValueError, match=r"weight: expected finite, non-negative values, got 2 other\(s\): \[2\] = -1.0"
    ):
        create_loss("conditional", tax, weight=bad)
    multi_hot = torch.zeros(2, tax.num_nodes, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"multi-hot target is multi-label data, which the losses do not take"):
        create_loss("bce", tax)(torch.randn(2, tax.num_nodes), multi_hot)


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_one_weight_per_class_is_never_read_as_one_per_level(kind):
    """nn.CrossEntropyLoss takes one weight per class; on a taxonomy with as many leaves as levels such a
    weight was read per level (the deep leaf weighted as the 4th value, whatever its class), with nothing
    said. The leaf-logit losses refuse the shape, with both spreads to per node; the node losses, whose
    terms are per node, still read it per level."""
    tax = Taxonomy.from_paths(["r/normal", "r/leukemia/acute/ALL", "r/leukemia/acute/AML", "r/leukemia/chronic"])
    assert tax.num_leaves == tax.max_depth + 1 == 4 != tax.num_nodes
    fn, module, _, width, _, extra = KINDS[kind]
    logits = torch.randn(3, _width(tax, kind), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = torch.tensor(tax.encode(["normal", "ALL", "chronic"]))
    four = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    leaf_weight = torch.zeros(tax.num_nodes, dtype=torch.float64)
    leaf_weight[tax.as_tensor("leaf_index")] = four
    level_weight = four[tax.as_tensor("depth_index")]
    if width == "leaves":
        for call in (
            lambda: fn(logits, target, tax, weight=four, **extra),
            lambda: module(tax, weight=four, **extra),
        ):
            with pytest.raises(ValueError, match=r"one per level .* and also one per leaf .* cannot be told") as err:
                call()
            # the two recipes the message gives run as written
            assert "w[taxonomy.as_tensor('leaf_index')] = leaf_weight" in str(err.value)
            assert "level_weight[taxonomy.as_tensor('depth_index')]" in str(err.value)
        assert not torch.equal(
            fn(logits, target, tax, weight=leaf_weight, reduction="none", **extra),
            fn(logits, target, tax, weight=level_weight, reduction="none", **extra),
        )
    else:
        torch.testing.assert_close(
            fn(logits, target, tax, weight=four, **extra), fn(logits, target, tax, weight=level_weight, **extra)
        )
    other = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])  # 3 leaves, 3 levels: a 5-value weight fits neither
    wrong = torch.ones(other.num_leaves + 1)
    with pytest.raises(ValueError, match=r"got \(4,\)\.$"):  # not one per leaf: no spread offered
        module(other, weight=wrong, **extra)
    bigger = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b", "r/c"])  # 4 leaves, 3 levels, 7 nodes
    with pytest.raises(ValueError, match=r"got \(4,\)\. For one weight per leaf"):
        module(bigger, weight=torch.ones(4), **extra)


class _ReadBacks:
    """Counts the tensor-to-Python read-backs (each one a device sync off the CPU) made inside it."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __enter__(self):
        self.count, self._saved = 0, {n: getattr(torch.Tensor, n) for n in self.NAMES}

        def counted(original):
            def wrapper(tensor, *args, **kwargs):
                self.count += 1
                return original(tensor, *args, **kwargs)

            return wrapper

        for name, original in self._saved.items():
            setattr(torch.Tensor, name, counted(original))
        return self

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_validation_costs_one_read_back_per_call(kind, paper_tax):
    """The docs promise one device synchronisation for validate_args=True; the finiteness of the logits
    and the range of the targets were read back apart (two), and a functional weight= a third."""
    fn, module, _, _, _, extra = KINDS[kind]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, _width(paper_tax, kind), generator=gen)
    target = torch.tensor([1, 5, 9, 3, 0, 2])
    weight = torch.rand(paper_tax.num_nodes, generator=gen) + 0.5
    counts = {}
    for validate in (True, False):
        loss = module(paper_tax, weight=weight, validate_args=validate, **extra)
        loss(logits, target)  # tables built and cached
        fn(logits, target, paper_tax, weight=weight, validate_args=validate, **extra)
        with _ReadBacks() as calls:
            loss(logits, target)
        with _ReadBacks() as functional:
            fn(logits, target, paper_tax, weight=weight, validate_args=validate, **extra)
        counts[validate] = (calls.count, functional.count)
    # the same count off the CPU, where the flat loss takes its dense path: the difference is validation's
    assert counts[True][0] - counts[False][0] == 1, counts
    assert counts[True][1] - counts[False][1] == 1, counts


@pytest.mark.parametrize("dag", [False, True])
def test_flat_loss_compiles_to_one_graph_on_the_cpu(dag, paper_tax):
    """On the CPU the flat loss lists the leaves below each target (a size read back to the host): under
    torch.compile that broke the step into 5 graphs. Traced, it takes the dense path the GPU takes, and
    the functional form finds that path's tables built by its eager calls."""
    import torch._dynamo

    tax = (
        Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("a", "y"), ("b", "z")])
        if dag
        else paper_tax
    )
    gen = torch.Generator().manual_seed(0)
    module = L.FlatCrossEntropyLoss(tax, validate_args=False)
    z = torch.randn(4, tax.num_leaves, generator=gen)
    t = torch.tensor([0, 1, tax.num_nodes - 1, 2])  # partial labels too
    eager = L.flat_cross_entropy(z, t, tax, validate_args=False)
    for form in (module, lambda z, t: L.flat_cross_entropy(z, t, tax, validate_args=False)):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(form)(z, t)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
        torch.testing.assert_close(torch.compile(form, backend="eager")(z, t), eager)
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", TREE_KINDS)
def test_every_loss_module_compiles_to_one_graph(kind, paper_tax):
    """What the docs promise for validate_args=False: a loss module is one graph under torch.compile, in
    training and under no_grad (the level loss's straight-through Function split a no-grad call into 4)."""
    import torch._dynamo

    _, module, _, _, _, extra = KINDS[kind]
    loss = module(paper_tax, validate_args=False, **extra)
    target = torch.tensor([1, 5, 9, 3, 0, 2])
    for needs_grad in (True, False):
        logits = torch.randn(6, _width(paper_tax, kind), requires_grad=needs_grad)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(loss)(logits, target)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (needs_grad, explained.break_reasons)
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", ["conditional", "level", "bce", "max_constraint"])
def test_marginals_passed_for_logits_are_warned(kind, paper_tax):
    """head.marginals(logits) given to a loss in place of the logits gave a normal-looking loss."""
    import warnings as w

    from hiercls.heads import create_head

    head_kind = {"conditional": "conditional", "level": "level"}.get(kind, "sigmoid")
    head = create_head(head_kind, 8, paper_tax)
    logits = head(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)))
    target = torch.tensor([1, 5, 9, 3, 2])
    fn, module, _, _, _, extra = KINDS[kind]
    with pytest.warns(UserWarning, match=r"look like node marginals .* not head.marginals"):
        fn(head.marginals(logits).detach(), target, paper_tax, **extra)
    with pytest.warns(UserWarning, match="look like node marginals"):
        module(paper_tax, **extra)(head.marginals(logits).detach(), target)
    with w.catch_warnings():
        w.simplefilter("error")
        fn(logits, target, paper_tax, **extra)  # real logits: nothing to say
        fn(head.marginals(logits).detach(), target, paper_tax, validate_args=False, **extra)  # not checked
