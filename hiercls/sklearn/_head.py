"""A global estimator: a linear or MLP network with a hiercls head, trained with a hiercls loss."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from hiercls.errors import TaxonomyError
from hiercls.sklearn._base import DecoderRule, HierarchicalClassifierBase, _checked_sample_weight, _fit_or_forget
from hiercls.taxonomy import Taxonomy, _gather_csr

HeadKind = Literal["conditional", "level", "sigmoid", "flat"]
_HEADS = ("conditional", "level", "sigmoid", "flat")


class HeadNetwork(nn.Module):
    """Features -> optional hidden layers (Linear + ReLU) -> a :class:`hiercls.heads.HierarchicalHead`.

    Args:
        body: the hidden layers (an empty ``nn.Sequential`` for a linear probe).
        head: the hierarchical head; its ``marginals`` turn logits into node marginals.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from hiercls import Taxonomy
        >>> from hiercls.heads import ConditionalHead
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> net = HeadNetwork(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), ConditionalHead(8, tax))
        >>> net(torch.randn(3, 4)).shape
        torch.Size([3, 5])
    """

    def __init__(self, body: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(B, n_features)`` -> head logits ``(B, head.out_features)``."""
        return self.head(self.body(features))


class HierarchicalHeadClassifier(HierarchicalClassifierBase):
    """A linear (or MLP) network with a hiercls head, trained on given features with a hiercls loss.

    One global model for the whole taxonomy: ``hidden_layer_sizes`` Linear +
    ReLU layers (none: a linear probe, e.g. on frozen timm embeddings), then
    :func:`hiercls.heads.create_head` ``(head, in_features, taxonomy)``,
    trained with :func:`hiercls.losses.create_loss` (``loss``, or
    :func:`hiercls.losses.default_loss` of the head) by AdamW for ``max_iter``
    epochs, full-batch when ``batch_size`` is None or at least the number of
    samples, else on shuffled minibatches. Labels at inner nodes (partial
    labels) are handled by the loss's masking.

    ``predict_marginals`` returns the head's node marginals (``predict_proba``
    their columns of ``classes_``); ``predict`` decodes them with :func:`hiercls.decoding.decode`; ``score`` is the hierarchical F1
    (micro). Inference runs in float64 so that a sample's output does not
    depend on the rest of its batch beyond float64 rounding.

    A given ``taxonomy`` may have leaves that no training label stands for
    (absent from ``y``, e.g. a rare class missing from a CV fold). Such a
    leaf is in no column of ``classes_``, so, as in the local estimators,
    it and every node with only such leaves below it get marginal 0: the
    conditional, level and flat heads renormalise over the remaining leaves
    (``P(node | the label is one that training labels stand for)``), so
    ``predict_proba`` rows still sum to 1 when every class is a leaf and a
    leaf rule predicts one of ``classes_``; the sigmoid head's other
    marginals stay as they are. The leaves below a partial label count as
    seen.

    Deterministic for a given ``random_state`` (initialisation and shuffling
    use their own generators; the global torch RNG is left untouched).

    Args:
        head: ``"conditional"``, ``"level"``, ``"sigmoid"`` or ``"flat"`` (see :mod:`hiercls.heads`).
        loss: a :func:`hiercls.losses.create_loss` kind, or None for the head's default.
        hidden_layer_sizes: widths of the hidden layers; ``()`` for a linear model.
        max_iter: training epochs (passes over the data).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: minibatch size; None for full-batch.
        random_state: seed (int), ``numpy.random.RandomState``, or None (not reproducible).
        decoder: the :func:`hiercls.decoding.decode` rule used by ``predict``.
        taxonomy: a :class:`hiercls.Taxonomy`, or None to infer one from ``y``.
        device: torch device for training and inference (``"cpu"``, ``"cuda"``, ...).
        decoder_options: keyword arguments for the decoder rule (e.g. ``{"threshold": 0.6}``).

    Attributes:
        taxonomy_ (Taxonomy): the taxonomy used (given or inferred).
        nodes_ (np.ndarray): node names, shape ``(num_nodes,)``: the columns of ``predict_marginals``.
        classes_ (np.ndarray): the distinct labels seen at fit, sorted, in ``y``'s format.
        module_ (HeadNetwork): the trained network (on ``device``).
        loss_curve_ (list[float]): mean training loss of each epoch.
        n_iter_ (int): epochs run.
        n_features_in_ (int): number of features seen at fit.
        feature_names_in_ (np.ndarray): feature names, when ``X`` had string column names.

    Raises:
        ValueError: (at fit) a parameter is invalid, or ``y`` does not fit the taxonomy.

    Examples:
        >>> import numpy as np
        >>> from hiercls.sklearn import HierarchicalHeadClassifier
        >>> rng = np.random.default_rng(0)
        >>> y = np.array(["animal/cat", "animal/dog", "plant"] * 20)
        >>> X = rng.normal(size=(60, 3)) + 3 * (np.arange(60) % 3)[:, None]
        >>> clf = HierarchicalHeadClassifier(max_iter=20, lr=0.3, random_state=0).fit(X, y)
        >>> clf.predict_marginals(X[:2]).shape  # every node: root, animal, plant, cat, dog
        (2, 5)
        >>> clf.classes_.tolist(), clf.predict_proba(X[:2]).sum(axis=1).round(6).tolist()
        (['animal/cat', 'animal/dog', 'plant'], [1.0, 1.0])
        >>> clf.predict(X[:3]).tolist()
        ['animal/cat', 'animal/dog', 'plant']
    """

    _model_attribute = "module_"

    def __init__(
        self,
        head: HeadKind = "conditional",
        loss: str | None = None,
        hidden_layer_sizes: Sequence[int] = (),
        max_iter: int = 200,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        batch_size: int | None = 256,
        random_state: Any = None,
        decoder: DecoderRule = "argmax_leaf",
        taxonomy: Taxonomy | None = None,
        device: str = "cpu",
        decoder_options: dict[str, Any] | None = None,
    ) -> None:
        self.head = head
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state
        self.decoder = decoder
        self.taxonomy = taxonomy
        self.device = device
        self.decoder_options = decoder_options

    # ---------------------------------------------------------------- fit
    @_fit_or_forget
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> HierarchicalHeadClassifier:
        """Train the network.

        Args:
            X: features, float array ``(n_samples, n_features)``.
            y: labels, shape ``(n_samples,)`` (or ``(n_samples, depth)`` label paths).
            sample_weight: per-sample weights ``(n_samples,)``, all >= 0, or None. Each batch's loss is the mean of
                ``w_i * loss_i`` with the weights scaled to mean 1 over the training set, so with
                full-batch training (``batch_size=None``) integer weights act like repeated samples;
                with mini-batches only roughly (an epoch then has another number of steps).

        Returns:
            self.
        """
        from hiercls.heads import create_head
        from hiercls.losses import create_loss, default_loss

        hidden, device = self._check_params()
        X = validate_data(self, X, dtype=(np.float64, np.float32))
        target = self._fit_labels(y)
        if len(target) != X.shape[0]:
            raise ValueError(
                f"X and y: found {X.shape[0]} samples in X but {len(target)} labels in y; give one label per sample."
            )
        weights = None
        if sample_weight is not None:
            sw = _checked_sample_weight(sample_weight, X, dtype=np.float64)
            weights = torch.tensor(sw / sw.mean(), dtype=torch.float32, device=device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        # seeded init on the CPU, without touching a global RNG: torch.manual_seed would also (re)seed every
        # CUDA generator, which fork_rng(devices=[]) does not restore; the layers are built on the CPU
        # whatever the default device, so only the CPU generator draws
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.default_generator.manual_seed(seed)
            layers: list[nn.Module] = []
            width = X.shape[1]
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            # max_constraint trains C-HMCNN's coherent model: the head's marginals apply the same constraint
            options = {"coherent": True} if self.loss == "max_constraint" else {}
            if not self.taxonomy_.is_tree and self.head in ("conditional", "level"):
                raise TaxonomyError(
                    f"head: {self.head!r} needs a tree (one sibling group per node), but the taxonomy is a DAG. "
                    "Use head='sigmoid' or head='flat', which work on DAGs."
                )
            module = HeadNetwork(nn.Sequential(*layers), create_head(self.head, width, self.taxonomy_, **options))
        module = module.to(device)
        reduction = "mean" if weights is None else "none"
        loss_fn = create_loss(self.loss or default_loss(self.head), self.taxonomy_, reduction=reduction).to(device)
        features = torch.tensor(X, dtype=torch.float32, device=device)  # a copy: X may be read-only
        labels = torch.as_tensor(target, dtype=torch.int64, device=device)
        n = features.shape[0]
        step = n if self.batch_size is None else min(int(self.batch_size), n)
        shuffle = torch.Generator().manual_seed(seed + 1)
        optimizer = torch.optim.AdamW(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        module.train()
        curve: list[float] = []
        for _ in range(int(self.max_iter)):
            order = torch.randperm(n, generator=shuffle).to(device) if step < n else None
            total = torch.zeros((), device=device)
            for start in range(0, n, step):
                idx = order[start : start + step] if order is not None else slice(None)
                batch_loss = loss_fn(module(features[idx]), labels[idx])
                if weights is not None:
                    batch_loss = (batch_loss * weights[idx]).mean()
                optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
                optimizer.step()
                total += batch_loss.detach() * (min(start + step, n) - start)
            curve.append(float(total) / n)
        module.eval()
        self.module_ = module
        # a sample of weight 0 is a removed sample, as in the local estimators: its class counts as unseen
        self._kept_leaves = _leaves_reached(self.taxonomy_, target if sample_weight is None else target[sw > 0])
        self.loss_curve_ = curve
        self.n_iter_ = int(self.max_iter)
        return self

    # ------------------------------------------------------------ predict
    def predict_marginals(self, X: Any) -> np.ndarray:
        """Node marginals ``P(node)`` from the head, float64 ``(n_samples, num_nodes)``, columns ``nodes_``.

        When the taxonomy has leaves that no training label stands for, those
        leaves and the nodes with only such leaves below them are 0, and the
        conditional, level and flat heads' marginals are renormalised over the
        other leaves (see the class docstring); otherwise the head's marginals
        as they are.

        Args:
            X: features, shape ``(n_samples, n_features)``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        module = self.module_
        device = next(iter(module.parameters())).device
        # float64 copies of the weights (buffers such as index tensors stay as they are)
        state = {k: (v.double() if v.is_floating_point() else v) for k, v in module.state_dict().items()}
        if not hasattr(self, "_kept_leaves"):  # pickled before the rule: its classes are its labels
            self._kept_leaves = _leaves_reached(self.taxonomy_, np.asarray(self._class_nodes))
        kept = self._kept_leaves  # None: every leaf can be a training label's
        softmax = kept is not None and module.head.kind != "sigmoid"
        with torch.no_grad():
            features = torch.tensor(X, dtype=torch.float64, device=device)
            logits = torch.func.functional_call(module, state, (features,))
            if softmax:  # P(leaf | one of the kept leaves), from the log marginals: no underflow to 0/0
                log_probs = module.head.log_marginals(logits)[:, torch.as_tensor(kept, device=device)]
                probs = torch.softmax(log_probs, dim=1)
            else:
                probs = module.head.marginals(logits)
        probs = probs.detach().to("cpu", torch.float64).numpy()
        if kept is None:
            return probs
        below = _leaves_below(self.taxonomy_, kept)  # (kept leaves, nodes): leaf is below the node
        if not softmax:  # independent sigmoids: a node no label reaches gets 0, the others stay
            probs[:, np.diff(below.tocsc().indptr) == 0] = 0.0
            return probs
        marg = np.asarray(below.T @ probs.T).T  # a node's marginal: the sum of its leaves (each once)
        marg[:, 0] = 1.0  # the root (the sum of every kept leaf)
        return marg

    def __getstate__(self) -> dict[str, Any]:
        """Pickle with the network's weights on the CPU, so that a model trained on a GPU loads on a
        machine without one (move it back with ``clf.module_.to("cuda")``)."""
        state = super().__getstate__()
        module = state.get("module_")
        if module is not None and any(t.device.type != "cpu" for t in module.state_dict().values()):
            state = {**state, "module_": copy.deepcopy(module).to("cpu")}
        return state

    # ------------------------------------------------------------ helpers
    def _check_params(self) -> tuple[tuple[int, ...], torch.device]:
        if self.head not in _HEADS:
            raise ValueError(f"head: expected one of {', '.join(map(repr, _HEADS))}, got {self.head!r}.")
        if self.loss is not None and not isinstance(self.loss, str):
            raise ValueError(
                f"loss: expected a hiercls.losses.create_loss kind (a string) or None, got {type(self.loss).__name__}."
            )
        from hiercls.losses import compatible_losses

        fits = compatible_losses(self.head)
        if self.loss is not None and self.loss not in fits:
            raise ValueError(
                f"loss: {self.loss!r} does not train a head={self.head!r} (its marginals read another model); "
                f"expected one of {', '.join(map(repr, fits))} or None for {fits[0]!r}, "
                f"or pick the head that {self.loss!r} trains."
            )
        try:
            hidden = tuple(int(h) for h in self.hidden_layer_sizes)
        except (TypeError, ValueError):
            hidden = None
        if hidden is None or any(h < 1 for h in hidden):
            raise ValueError(
                f"hidden_layer_sizes: expected a tuple of positive ints (() for a linear model), "
                f"got {self.hidden_layer_sizes!r}."
            )
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter: expected an int >= 1 (training epochs), got {self.max_iter!r}.")
        if not isinstance(self.lr, numbers.Real) or not self.lr > 0:
            raise ValueError(f"lr: expected a float > 0, got {self.lr!r}.")
        if not isinstance(self.weight_decay, numbers.Real) or self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected a float >= 0, got {self.weight_decay!r}.")
        if self.batch_size is not None and (not isinstance(self.batch_size, numbers.Integral) or self.batch_size < 1):
            raise ValueError(f"batch_size: expected an int >= 1 or None (full batch), got {self.batch_size!r}.")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda', got {self.device!r}.") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device: {self.device!r} was asked for, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}). Use device='cpu', or install "
                "a CUDA build of torch on a machine with a GPU."
            )
        return hidden, device


def _leaves_reached(tax: Taxonomy, target: np.ndarray) -> np.ndarray | None:
    """The leaves a training label can stand for: the targets that are leaves and the leaves below a
    partial label; None when that is every leaf of the taxonomy (nothing to leave out)."""
    _, nodes = _gather_csr(tax.descendants_ptr, tax.descendants_index, np.unique(target))  # each label and below
    below = np.zeros(tax.num_nodes, dtype=bool)
    below[nodes] = True
    kept = tax.leaf_index[below[tax.leaf_index]]
    return None if len(kept) == tax.num_leaves else kept.astype(np.int64)


def _leaves_below(tax: Taxonomy, leaves: np.ndarray) -> sp.csr_matrix:
    """0/1 sparse ``(len(leaves), num_nodes)``: entry ``[k, v]`` is 1 where ``leaves[k]`` is ``v`` or below it."""
    rows, cols = _gather_csr(tax.ancestors_ptr, tax.ancestors_index, leaves)  # each leaf and its ancestors
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(leaves), tax.num_nodes))
