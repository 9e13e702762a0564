"""Learning tests: every head + loss trains a tiny MLP to near-perfect accuracy on separable hierarchical data.

Not a shape test: the head, its loss and its marginals must work together for
the argmax leaf of the marginals to reach the true leaf. A quarter of the
training labels are partial (the label is the leaf's parent), so the losses'
partial-label handling takes part too.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hiercls import Taxonomy
from hiercls import heads as H
from hiercls import losses as L
from hiercls.synthetic import layered_taxonomy


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(tax: Taxonomy, per_leaf: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features = the sum of random prototypes along the leaf's path + noise (hierarchical, separable)."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(tax.num_nodes, 16, generator=torch.Generator().manual_seed(0))
    leaves = torch.as_tensor(tax.leaf_index.copy()).repeat_interleave(per_leaf)
    paths = torch.as_tensor(tax.ancestor_table.copy())[leaves]
    features = torch.where(paths[..., None] >= 0, prototypes[paths.clamp_min(0)], 0.0).sum(1)
    features = features + 0.3 * torch.randn(features.shape, generator=gen)
    partial = torch.as_tensor(tax.parent_index.copy())[leaves]
    use_partial = (torch.rand(len(leaves), generator=gen) < 0.25) & (partial > 0)
    return features, leaves, torch.where(use_partial, partial, leaves)


COMBOS = [
    ("conditional", {}, "conditional", {}),
    ("level", {}, "level", {}),
    ("sigmoid", {}, "bce", {}),
    ("sigmoid", {}, "bce", {"negatives": "siblings"}),
    ("sigmoid", {"coherent": True}, "max_constraint", {}),
    ("flat", {}, "flat", {}),
    ("flat", {}, "hxe", {"alpha": 0.3}),
    ("flat", {}, "soft_label", {"beta": 8.0}),
]


@pytest.mark.parametrize(("head_kind", "head_kw", "loss_kind", "loss_kw"), COMBOS)
def test_head_and_loss_learn_separable_hierarchical_data(head_kind, head_kw, loss_kind, loss_kw, paper_tax):
    torch.manual_seed(0)
    tax = paper_tax
    features, _, labels = _data(tax, per_leaf=40, seed=1)
    test_features, test_leaves, _ = _data(tax, per_leaf=20, seed=2)
    head = H.create_head(head_kind, 32, tax, **head_kw)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), head)
    loss_fn = L.create_loss(loss_kind, tax, **loss_kw)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn(model(features), labels)
        loss.backward()
        opt.step()
    with torch.no_grad():
        probs = head.marginals(model(test_features))
    if loss_kw.get("negatives") == "siblings":
        # each sigmoid then learns P(node | parent) (its negatives are its siblings' samples): multiply down the path
        path = torch.as_tensor(tax.ancestor_table.copy())
        probs = torch.where(path >= 0, probs[:, path.clamp_min(0)], 1.0).prod(-1)
    leaf_index = torch.as_tensor(tax.leaf_index.copy())
    predicted = leaf_index[probs[:, leaf_index].argmax(1)]
    accuracy = (predicted == test_leaves).float().mean().item()
    assert accuracy >= 0.97, f"{head_kind}+{loss_kind}: accuracy {accuracy:.3f}"
    before = loss_fn(
        nn.Sequential(nn.Linear(16, 32), nn.ReLU(), H.create_head(head_kind, 32, tax, **head_kw))(features), labels
    )
    assert loss.item() < 0.2 * before.item()


def test_conditional_head_learns_a_deeper_tree():
    tax = layered_taxonomy((3, 8, 20), seed=1)
    torch.manual_seed(0)
    features, _, labels = _data(tax, per_leaf=12, seed=3)
    test_features, test_leaves, _ = _data(tax, per_leaf=6, seed=4)
    head = H.ConditionalHead(64, tax)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), head)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    loss_fn = L.ConditionalSoftmaxLoss(tax)
    for _ in range(200):
        opt.zero_grad()
        loss_fn(model(features), labels).backward()
        opt.step()
    with torch.no_grad():
        probs = head.marginals(model(test_features))
    leaf_index = torch.as_tensor(tax.leaf_index.copy())
    accuracy = (leaf_index[probs[:, leaf_index].argmax(1)] == test_leaves).float().mean().item()
    assert accuracy >= 0.95, accuracy
