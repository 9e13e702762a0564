"""hiercls.marginals: oracles, consistency (children sum to parent, root 1), coherence, batch independence."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiercls import Taxonomy, TaxonomyError
from hiercls import marginals as M
from hiercls.synthetic import layered_taxonomy
from tests import oracles_losses as O
from tests.budget import examples
from tests.strategies import dags, trees


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: OpenMP regions only add latency on an oversubscribed runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@st.composite
def logits_for(draw, tax_strategy, leaves: bool = False, max_batch: int = 5):
    tax = draw(tax_strategy)
    batch = draw(st.integers(1, max_batch))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from([0.3, 2.0, 8.0]))
    width = tax.num_leaves if leaves else tax.num_nodes
    return tax, torch.randn(batch, width, generator=gen, dtype=torch.float64) * scale


def _children_sum(tax: Taxonomy, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inner node marginals, sums of their children's marginals)."""
    inner = [n for n in range(tax.num_nodes) if not tax.is_leaf(n)]
    sums = torch.stack([probs[:, [tax.index(c) for c in tax.children(n)]].sum(1) for n in inner], 1)
    return probs[:, inner], sums


# ---------------------------------------------------------------------------------------- oracles


@settings(examples(30))
@given(case=logits_for(trees(max_nodes=20)))
def test_conditional_and_level_marginals_equal_oracle(case):
    tax, logits = case
    want = torch.tensor(O.conditional_marginals(logits, tax), dtype=torch.float64)
    torch.testing.assert_close(M.conditional_marginals(logits, tax), want)
    torch.testing.assert_close(M.level_marginals(logits, tax), want)


@pytest.mark.parametrize("coherent", [False, True])
@settings(examples(25))
@given(case=logits_for(st.one_of(trees(max_nodes=20), dags(max_nodes=16))))
def test_sigmoid_marginals_equal_oracle(coherent, case):
    tax, logits = case
    want = torch.tensor(O.sigmoid_marginals(logits, tax, coherent), dtype=torch.float64)
    torch.testing.assert_close(M.sigmoid_marginals(logits, tax, coherent=coherent), want)


@settings(examples(30))
@given(case=logits_for(st.one_of(trees(max_nodes=20), dags(max_nodes=16)), leaves=True))
def test_flat_marginals_equal_oracle(case):
    tax, logits = case
    want = torch.tensor(O.flat_marginals(logits, tax), dtype=torch.float64)
    torch.testing.assert_close(M.flat_marginals(logits, tax), want)


# ------------------------------------------------------------------------------------ consistency


@settings(examples(40))
@given(case=logits_for(trees(max_nodes=30)), leaves=st.booleans())
def test_children_sum_to_parent_and_root_is_one(case, leaves):
    tax, logits = case
    if leaves:
        logits = logits[:, : tax.num_leaves]
        probs = M.flat_marginals(logits, tax)
    else:
        probs = M.conditional_marginals(logits, tax)
    assert torch.allclose(probs[:, 0], torch.ones(len(probs), dtype=probs.dtype))
    assert ((probs >= 0) & (probs <= 1 + 1e-12)).all()
    parents, sums = _children_sum(tax, probs) if tax.num_nodes > 1 else (probs[:, :0], probs[:, :0])
    torch.testing.assert_close(parents, sums)
    leaf_total = probs[:, torch.as_tensor(tax.leaf_index.copy())].sum(1)
    torch.testing.assert_close(leaf_total, torch.ones_like(leaf_total))


@pytest.mark.parametrize("coherent", [False, True])
@settings(examples(30))
@given(case=logits_for(st.one_of(trees(max_nodes=25), dags(max_nodes=20))))
def test_sigmoid_coherence(coherent, case):
    tax, logits = case
    probs = M.sigmoid_marginals(logits, tax, coherent=coherent)
    assert (probs[:, 0] == 1).all()
    edges = torch.as_tensor(tax.edges_index().copy())
    violated = (probs[:, edges[:, 1]] > probs[:, edges[:, 0]]).any()
    if coherent:
        assert not violated
    if not coherent:  # plain sigmoids below the root
        torch.testing.assert_close(probs[:, 1:], torch.sigmoid(logits[:, 1:]))


@settings(examples(40))
@given(case=logits_for(st.one_of(trees(max_nodes=20), dags(max_nodes=16)), leaves=True), data=st.data())
def test_flat_marginals_with_masked_leaves(case, data):
    """Leaves masked with -inf (whole subtrees, too) get probability 0, the rest equals the oracle, and
    a loss on the unmasked nodes sends finite gradients back: 0 to every masked logit, NaN nowhere."""
    tax, logits = case
    masked = torch.tensor(data.draw(st.lists(st.booleans(), min_size=tax.num_leaves, max_size=tax.num_leaves)))
    keep = data.draw(st.integers(0, tax.num_leaves - 1))
    masked[keep] = False  # at least one class stays
    x = logits.masked_fill(masked, -math.inf).requires_grad_(True)
    want = torch.tensor(O.flat_marginals(x.detach(), tax), dtype=torch.float64)
    got = M.flat_marginals(x, tax)
    torch.testing.assert_close(got, want)
    log = M.flat_log_marginals(x, tax)
    finite = torch.isfinite(log)
    assert torch.equal(finite, want > 0)
    (log[finite] * torch.rand(int(finite.sum()), dtype=torch.float64)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[:, masked] == 0).all()


def test_dag_flat_marginals_count_shared_leaves_once():
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("b", "y")])
    probs = M.flat_marginals(torch.zeros(1, 2), dag)  # leaves x, y at 1/2 each
    assert dag.leaves == ("x", "y")
    torch.testing.assert_close(probs[0], torch.tensor([1.0, 0.5, 1.0, 0.5, 0.5]))


# ---------------------------------------------------------------------- batch independence, scale


@settings(examples(20))
@given(case=logits_for(trees(max_nodes=25), max_batch=6))
def test_batch_independent(case):
    tax, logits = case
    for fn, width in (
        (M.conditional_marginals, tax.num_nodes),
        (M.sigmoid_marginals, tax.num_nodes),
        (M.flat_marginals, tax.num_leaves),
    ):
        x = logits[:, :width].contiguous()
        whole = fn(x, tax)
        one_by_one = torch.cat([fn(x[i : i + 1], tax) for i in range(len(x))])
        torch.testing.assert_close(whole, one_by_one, rtol=1e-12, atol=1e-12)


def test_extreme_logits_stay_finite(paper_tax):
    sign = torch.where(torch.rand(4, paper_tax.num_nodes, generator=torch.Generator().manual_seed(0)) > 0.5, 1.0, -1.0)
    x = sign * 1e4
    for log_probs in (
        M.conditional_log_marginals(x, paper_tax),
        M.sigmoid_log_marginals(x, paper_tax, coherent=True),
        M.flat_log_marginals(x[:, : paper_tax.num_leaves], paper_tax),
    ):
        assert torch.isfinite(log_probs).all() and (log_probs <= 0).all()
    probs = M.conditional_marginals(x, paper_tax)
    parents, sums = _children_sum(paper_tax, probs)
    torch.testing.assert_close(parents, sums)


@settings(examples(25))
@given(tax=st.one_of(trees(max_nodes=20), dags(max_nodes=20)), shift=st.sampled_from([1e2, 1e3, 1e4, -1e4]))
def test_flat_marginals_ignore_a_shift_of_every_logit_on_trees_and_dags(tax, shift):
    """Softmax over the leaves is shift-invariant, and so must the float32 marginals be. On a DAG each node's
    log-mass was shifted by its own top leaf and the shift added back before dividing by the root's, so
    log P carried an ulp of the largest logit: 1.6e-4 off at logits ~1e4 (the tree path subtracted the row
    max first and was exact)."""
    x = torch.randn(3, tax.num_leaves, generator=torch.Generator().manual_seed(tax.num_nodes)) + shift
    exact = M.flat_marginals(x.double(), tax)  # the same float32 logits, computed in float64
    torch.testing.assert_close(M.flat_marginals(x, tax).double(), exact, rtol=0, atol=2e-6)


def test_bf16_logits_give_float32_marginals(paper_tax):
    x = torch.randn(2, paper_tax.num_nodes).bfloat16()
    assert M.conditional_marginals(x, paper_tax).dtype == torch.float32
    assert M.sigmoid_marginals(x, paper_tax, coherent=True).dtype == torch.float32
    assert M.flat_marginals(x[:, : paper_tax.num_leaves], paper_tax).dtype == torch.float32


def test_inat_shaped_tree_marginals_are_consistent():
    tax = layered_taxonomy((3, 13, 51, 273))
    logits = torch.randn(8, tax.num_nodes, generator=torch.Generator().manual_seed(2))
    probs = M.conditional_marginals(logits, tax)
    parents, sums = _children_sum(tax, probs)
    torch.testing.assert_close(parents, sums, rtol=1e-5, atol=1e-6)
    flat = M.flat_marginals(logits[:, : tax.num_leaves], tax)
    torch.testing.assert_close(flat[:, 0], torch.ones(8))


def test_dense_tables_are_linear_in_size():
    # nothing num_nodes x num_nodes: every index table is O(num_nodes x depth)
    tax = layered_taxonomy((3, 13, 51, 273, 1103))
    tables = M._TaxonomyTables(tax)
    names = [*M._SIMPLE, *M._GROUPED]
    sizes = {n: getattr(tables, n).numel() for n in names}
    assert max(sizes.values()) <= 16 * tax.num_nodes * (tax.max_depth + 1)


# ---------------------------------------------------------------------------------------- errors


def test_errors(paper_tax):
    # each function names itself (the non-log ones named their log twin)
    for f, width in ((M.conditional_marginals, 6), (M.level_marginals, 6), (M.sigmoid_marginals, 6)):
        for name in (f.__name__, f.__name__.replace("_marginals", "_log_marginals")):
            g = getattr(M, name, None)
            if g is None:  # level_marginals has no log twin
                continue
            with pytest.raises(
                ValueError, match=rf"logits: {name} expects shape \(B, num_nodes\) = \(B, 11\), got \(2, 6\)"
            ):
                g(torch.zeros(2, width), paper_tax)
    for name in ("flat_marginals", "flat_log_marginals"):
        with pytest.raises(ValueError, match=rf"{name} expects shape \(B, num_leaves\) = \(B, 6\), got \(2, 11\)"):
            getattr(M, name)(torch.zeros(2, 11), paper_tax)
    with pytest.raises(ValueError, match="expected a torch.Tensor"):
        M.sigmoid_marginals([[0.0] * 11], paper_tax)
    with pytest.raises(ValueError, match="floating-point"):
        M.sigmoid_marginals(torch.zeros(1, 11, dtype=torch.long), paper_tax)
    dag = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])
    for f in (M.conditional_log_marginals, M.conditional_marginals, M.level_marginals):
        with pytest.raises(TaxonomyError, match=f"{f.__name__} needs a tree.*DAG"):
            f(torch.zeros(1, 4), dag)
    with pytest.raises(TypeError, match="taxonomy: expected a hiercls.Taxonomy"):
        M.flat_marginals(torch.zeros(1, 3), "root/a")


def test_root_only_taxonomy():
    tax = Taxonomy.from_edges([]) if False else Taxonomy.from_paths(["root"])
    assert tax.num_nodes == 1
    for fn in (M.conditional_marginals, M.sigmoid_marginals, M.flat_marginals):
        assert fn(torch.randn(2, 1), tax).tolist() == [[1.0], [1.0]]
    assert math.isclose(M.flat_log_marginals(torch.randn(1, 1), tax).item(), 0.0)


@settings(examples(40))
@given(case=logits_for(trees(min_nodes=2, max_nodes=20)), data=st.data())
def test_conditional_marginals_with_a_masked_subtree(case, data):
    """Masking a whole subtree with -inf (its root and every node below, so whole sibling groups are
    -inf) gives it probability 0 and leaves every other marginal as if only its root were masked;
    gradients are finite everywhere and 0 at the masked logits (no 0/0 from an all -inf group)."""
    tax, logits = case
    top = data.draw(st.integers(1, tax.num_nodes - 1))
    subtree = [top] + [tax.index(n) for n in tax.descendants(top)]
    only_top = logits.clone()
    only_top[:, top] = -math.inf
    want = M.conditional_marginals(only_top, tax)
    x = logits.clone()
    x[:, subtree] = -math.inf
    x.requires_grad_(True)
    got = M.conditional_marginals(x, tax)
    assert (got[:, subtree] == 0).all()
    rest = [n for n in range(tax.num_nodes) if n not in subtree]
    torch.testing.assert_close(got[:, rest], want[:, rest])
    for fn in (M.conditional_log_marginals, M.level_marginals):
        x.grad = None
        out = fn(x, tax)
        (out[torch.isfinite(out)] * torch.rand(int(torch.isfinite(out).sum()), dtype=torch.float64)).sum().backward()
        assert torch.isfinite(x.grad).all() and (x.grad[:, subtree] == 0).all()


@settings(examples(40), deadline=None)
@given(tax=st.one_of(trees(min_nodes=2, max_nodes=20), dags(max_nodes=20)), data=st.data())
def test_a_nan_leaf_logit_leaves_only_the_root_of_its_row_known_under_the_flat_softmax(tax: Taxonomy, data) -> None:
    # every leaf competes in one softmax: a NaN used to be skipped by the log-sum-exp (P(a) = 0, P(b) = 1)
    rows = data.draw(st.integers(2, 4))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    logits = torch.randn(rows, tax.num_leaves, generator=g, dtype=torch.float64)
    bad = data.draw(st.integers(0, rows - 1))
    logits[bad, data.draw(st.integers(0, tax.num_leaves - 1))] = math.nan
    out = M.flat_marginals(logits, tax)
    assert out[bad, 0] == 1.0 and torch.isnan(out[bad, 1:]).all()
    for r in set(range(rows)) - {bad}:  # the other rows are those of a batch without the NaN row
        assert torch.equal(out[r], M.flat_marginals(logits[r : r + 1], tax)[0])
        assert not torch.isnan(out[r]).any()


class _ElementsWritten(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the elements every operation writes (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(x, torch.Tensor):
                self.total += x.numel()
        return out


def _caterpillar_dag(depth: int) -> Taxonomy:
    edges = [(f"c{i}", f"c{i + 1}") for i in range(depth)] + [(f"c{i}", f"l{i}") for i in range(depth)]
    return Taxonomy.from_edges([*edges, ("c0", "l1")])  # one shortcut: a DAG


def test_dag_max_passes_grow_linearly_with_depth() -> None:
    """Each level was concatenated with all the levels before it, so a DAG's coherent marginals and its
    masks cost O(depth x nodes x B): 15x slower than a tree of the same size at depth 4000 (a review).
    The work written, forward and backward, must double (not quadruple) when the depth does."""
    written = []
    for depth in (200, 400):
        tax = _caterpillar_dag(depth)
        logits = torch.randn(8, tax.num_nodes, requires_grad=True)
        target = torch.randint(0, tax.num_nodes, (8,))
        t = M._tables_for(tax, "cpu")
        with _ElementsWritten() as mode:
            M.sigmoid_marginals(logits, tax, coherent=True).sum().backward()
            M._dag_descend_nm(torch.nn.functional.one_hot(target, tax.num_nodes).T.float(), t)
        written.append(mode.total / tax.num_nodes)
    assert written[1] < 1.25 * written[0], written


@settings(examples(40))
@given(tax=dags(max_nodes=20), seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 12))
def test_dag_flat_marginals_in_chunks_of_samples_are_the_same(tax: Taxonomy, seed: int, batch: int) -> None:
    """The DAG's leaf log-sum-exp runs in chunks of samples (a deep DAG gathered 1.3 GB at B=256 in one go):
    chunks of one sample give the same values and gradients, bit for bit."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, tax.num_leaves, generator=g) * 3).requires_grad_(True)
    whole = M.flat_log_marginals(logits, tax)
    (grad_whole,) = torch.autograd.grad(whole.sum(), logits)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(M, "_DAG_PAIR_ELEMENTS", 1)
        parts = M.flat_log_marginals(logits, tax)
        (grad_parts,) = torch.autograd.grad(parts.sum(), logits)
    assert torch.equal(whole, parts) and torch.equal(grad_whole, grad_parts)
