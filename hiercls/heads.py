"""Classification heads over a taxonomy: features ``(B, F)`` -> logits -> node marginals.

Each head is one ``nn.Linear`` plus the taxonomy's index tensors, registered
as (non-persistent) buffers so that ``.to(device)`` and ``torch.compile`` just
work. The maths lives in :mod:`hiercls.marginals` and :mod:`hiercls.losses`;
a head only knows its logit layout and how to turn logits into node marginals
``P(node)`` of shape ``(B, num_nodes)`` (float32, even for bf16 logits; float64
for float64 logits).

===============  ====================  =====================================  =====================
kind             logits                marginals                              default loss
===============  ====================  =====================================  =====================
``conditional``  ``(B, num_nodes)``    sibling-group softmax, product down    ``conditional``
``level``        ``(B, num_nodes)``    as ``conditional`` (see LevelHead)     ``level``
``sigmoid``      ``(B, num_nodes)``    independent sigmoids (max-constrained  ``bce`` (coherent:
                                       when ``coherent=True``); DAGs too      ``max_constraint``)
``flat``         ``(B, num_leaves)``   leaf softmax summed up the tree        ``flat``
===============  ====================  =====================================  =====================

Build one by name with :func:`create_head` and its loss with
:func:`hiercls.losses.create_loss` (``default_loss(head.kind)``; for a coherent
sigmoid head pick ``"max_constraint"`` yourself, as ``default_loss`` sees only the kind).
"""

from __future__ import annotations

import difflib
import inspect
import numbers
from abc import ABCMeta, abstractmethod
from typing import Any, Literal

import torch
from torch import Tensor, nn

from hiercls.marginals import (
    _check_coherent,
    _check_flag,
    _check_logits,
    _check_taxonomy,
    _conditional_log_marginals,
    _default_device,
    _finite_above,
    _flat_log_marginals,
    _refill_buffers,
    _require_tree,
    _sigmoid_log_marginals,
    _TaxonomyBuffers,
    _upcast,
)
from hiercls.taxonomy import Taxonomy

__all__ = ["ConditionalHead", "FlatHead", "HeadKind", "HierarchicalHead", "LevelHead", "SigmoidHead", "create_head"]

HeadKind = Literal["conditional", "level", "sigmoid", "flat"]
"""The head types :func:`create_head` builds: :class:`ConditionalHead`, :class:`LevelHead`,
:class:`SigmoidHead`, :class:`FlatHead`."""


def _autocast_on(device: torch.device) -> bool:
    """Whether autocast is on for ``device``'s type (it casts the head's matmul inputs to one dtype)."""
    try:
        return bool(torch.is_autocast_enabled(device.type))
    except TypeError:  # torch < 2.4: no device argument
        return bool(torch.is_autocast_cpu_enabled() if device.type == "cpu" else torch.is_autocast_enabled())
    except RuntimeError:  # a device type autocast does not know (meta): no autocast there
        return False


class HierarchicalHead(nn.Module, metaclass=ABCMeta):
    """Base class: a linear layer from features to the head's logits, plus node marginals.

    Attributes:
        kind: the head kind (``"conditional"``, ``"level"``, ``"sigmoid"`` or ``"flat"``).
        taxonomy: the :class:`~hiercls.Taxonomy` the head was built for.
        fingerprint: ``taxonomy.fingerprint``, to check a checkpoint against a taxonomy. It is
            also saved in the ``state_dict`` (buffer ``taxonomy_fingerprint``, 32 bytes), and
            ``load_state_dict`` refuses weights saved from a head on another taxonomy, even one
            with as many nodes (a state dict without it, from before, loads as it did).
        in_features: feature width ``F``.
        out_features: logit width (``num_nodes``, or ``num_leaves`` for the flat head).
        linear: the ``nn.Linear(in_features, out_features)``.
        tables: the taxonomy's index tensors the head reads, as non-persistent buffers (they move with
            ``.to()`` and are rebuilt from the taxonomy, never saved).

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> from hiercls.heads import create_head
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> for kind in ("conditional", "level", "sigmoid", "flat"):
        ...     head = create_head(kind, 8, tax)
        ...     print(kind, head.out_features, tuple(head.marginals(head(torch.randn(2, 8))).shape))
        conditional 5 (2, 5)
        level 5 (2, 5)
        sigmoid 5 (2, 5)
        flat 3 (2, 5)
    """

    kind: str = ""

    def __init__(
        self, in_features: int, taxonomy: Taxonomy, out_features: int, tables: tuple[str, ...], bias: bool
    ) -> None:
        super().__init__()
        _check_taxonomy(taxonomy)
        bias = _check_flag(bias, "bias")
        if isinstance(in_features, bool) or not isinstance(in_features, numbers.Integral) or in_features < 1:
            raise ValueError(
                f"in_features: expected a positive int (the backbone's feature width), got {in_features!r}."
            )
        self.taxonomy = taxonomy
        self.fingerprint = taxonomy.fingerprint
        self.in_features = in_features = int(in_features)  # np.int64 from a shape is fine
        self.out_features = out_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.tables = _TaxonomyBuffers(taxonomy, tables)
        self.register_buffer("taxonomy_fingerprint", self._digest().to(_default_device()))  # beside the weights

    def _digest(self) -> Tensor:
        """The taxonomy's fingerprint as the bytes the ``taxonomy_fingerprint`` buffer holds (on CPU)."""
        return torch.tensor(list(bytes.fromhex(self.fingerprint)), dtype=torch.uint8, device="cpu")

    def _apply(self, fn: Any, recurse: bool = True) -> HierarchicalHead:
        # to_empty() (a head built on the meta device) leaves the fingerprint uninitialised: write it again
        before = dict(self._buffers)
        super()._apply(fn, recurse)
        _refill_buffers(self, {"taxonomy_fingerprint": self._digest()}, before)
        return self

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "taxonomy_fingerprint"
        if key not in state_dict:  # saved before heads carried their taxonomy: nothing to compare
            state_dict[key] = self.taxonomy_fingerprint
        else:
            stored = state_dict[key]
            mine = self._digest()  # from the taxonomy itself, not the buffer (garbage after to_empty)
            if isinstance(stored, Tensor) and stored.device.type == "meta" and stored.shape == mine.shape:
                # a state dict of a model built on meta holds no bytes to compare: this head's own are kept
                state_dict[key] = mine.to(self.taxonomy_fingerprint.device)
                stored = None
            same = stored is None or (
                isinstance(stored, Tensor) and stored.shape == mine.shape and bool((stored.cpu() == mine).all())
            )
            if not same:
                theirs = bytes(stored.tolist()).hex()[:12] if isinstance(stored, Tensor) else repr(stored)
                error_msgs.append(
                    f"{key}: these weights were saved from a head on another taxonomy (fingerprint {theirs}...; "
                    f"this head's {self.fingerprint[:12]}..., {self.taxonomy.num_nodes} nodes). Their logits "
                    "would be read as the wrong nodes: build the head on the taxonomy they were trained with."
                )
                # torch loads the children (linear) after this call and raises only at the end: hand them
                # their own current values, so that a refused load leaves the head as it was
                for name, value in [*self.named_parameters(), *self.named_buffers()]:
                    if prefix + name in state_dict:
                        state_dict[prefix + name] = value.detach()
                return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, features: Tensor) -> Tensor:
        """Logits of the head.

        Args:
            features: ``(B, in_features)`` floating tensor (e.g. a timm backbone with ``num_classes=0``).

        Returns:
            ``(B, out_features)`` logits, in the dtype of the computation (bf16 under autocast).

        Raises:
            TypeError: ``features`` is not a floating tensor of the head's dtype (outside autocast).
            ValueError: ``features`` is not ``(B, in_features)``.
        """
        if not isinstance(features, Tensor):
            raise TypeError(
                f"features: expected a torch.Tensor of shape (B, {self.in_features}), got {type(features).__name__}. "
                "Convert it first: torch.as_tensor(features, dtype=torch.float32)."
            )
        if features.ndim != 2 or features.shape[1] != self.in_features:
            got = f"features: expected shape (B, in_features) = (B, {self.in_features}), got {tuple(features.shape)}. "
            if features.ndim == 1 and features.shape[0] == self.in_features:
                fix = "For one sample, add the batch dimension: features.unsqueeze(0)."
            elif features.ndim > 2:
                fix = (
                    "That is a feature map, not pooled features: pool it first (features.mean(dim=(2, 3)) for "
                    "(B, C, H, W), or the backbone's forward_head(x, pre_logits=True) in timm), then build the head "
                    "with in_features = the pooled width."
                )
            else:
                width = f", {features.shape[-1]} here" if features.ndim else ""
                fix = (
                    f"Build the head with in_features = the width of the backbone's pooled output{width} "
                    "(a timm model's head_hidden_size where it has one, else its num_features)."
                )
            raise ValueError(got + fix)
        weight = self.linear.weight
        if not features.is_floating_point():
            raise TypeError(
                f"features: expected a floating tensor ({weight.dtype}, the head's weights), got {features.dtype}. "
                "A head reads a backbone's pooled features; class indices or counts must be embedded or "
                "one-hot encoded first (or cast: features.float())."
            )
        castable = (torch.float16, torch.bfloat16, torch.float32)  # what autocast casts (never float64)
        if features.dtype != weight.dtype and not (
            features.dtype in castable and weight.dtype in castable and _autocast_on(features.device)
        ):
            # autocast mixes the half types and float32 only: suggested only where it would help
            autocast = (
                ", or run under torch.autocast"
                if features.dtype in castable and weight.dtype in castable and not _autocast_on(features.device)
                else ""
            )
            raise TypeError(
                f"features: expected {weight.dtype} (the head's weights), got {features.dtype}. Convert the "
                f"features (features.to({weight.dtype!s}); arrays from numpy are float64) or the head "
                f"(head.to({features.dtype!s})){autocast}."
            )
        return self.linear(features)

    def log_marginals(self, logits: Tensor) -> Tensor:
        """Log node marginals ``log P(node)``: float32 ``(B, num_nodes)`` (float64 for float64 logits).

        Raises:
            ValueError: ``logits`` is not a floating tensor of shape ``(B, out_features)``, or is on another
                device than the head.
        """
        _check_logits(logits, self.out_features, self._width_name, f"{type(self).__name__}.log_marginals")
        here = self.taxonomy_fingerprint.device
        if logits.device != here:
            raise ValueError(
                f"logits: on {logits.device}, but this {type(self).__name__} is on {here}. Move the head with "
                f"head.to({str(logits.device)!r}) (its index tables move with it)."
            )
        return self._log_marginals(_finite_above(_upcast(logits)))

    def marginals(self, logits: Tensor) -> Tensor:
        """Node marginals ``P(node)``: ``(B, num_nodes)``, float32 (float64 logits: float64), root 1.

        They are batch-independent.

        ``-inf`` masks a logit (probability 0); ``+inf`` (a float16 overflow) is read as its limit, a
        certain choice; NaN stays NaN.

        Raises:
            ValueError: ``logits`` is not a floating tensor of shape ``(B, out_features)``, or is on another
                device than the head.
        """
        return self.log_marginals(logits).exp()

    _width_name = "num_nodes"

    @abstractmethod
    def _log_marginals(self, logits: Tensor) -> Tensor:
        """Log node marginals of already-checked logits (each head's own parameterisation)."""

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_nodes={self.taxonomy.num_nodes}, fingerprint={self.fingerprint[:12]!r}"


class ConditionalHead(HierarchicalHead):
    """One logit per node, softmax within each sibling group (the paper's tiered classifier as one layer).

    ``P(node | parent) = softmax(logits[children of parent])[node]`` and
    ``P(node)`` is the product of conditionals down the path; the root's logit
    is ignored (DESIGN.md's per-node layout). Train with
    :func:`hiercls.losses.conditional_softmax_nll`.

    Args:
        in_features: feature width.
        taxonomy: a tree.
        bias: add a bias to the linear layer.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        TypeError: ``bias`` is not a bool.
        ValueError: ``in_features`` is not a positive int.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/Normal", "r/Leukemia/ALL", "r/Leukemia/AML"])
        >>> head = ConditionalHead(8, tax)
        >>> logits = head(torch.randn(4, 8))
        >>> logits.shape, head.marginals(logits).shape
        (torch.Size([4, 5]), torch.Size([4, 5]))
    """

    kind = "conditional"

    def __init__(self, in_features: int, taxonomy: Taxonomy, *, bias: bool = True) -> None:
        _require_tree(taxonomy, "ConditionalHead", _DAG_INSTEAD)
        super().__init__(in_features, taxonomy, taxonomy.num_nodes, ("parent_group", "parent_local"), bias)

    def _log_marginals(self, logits: Tensor) -> Tensor:
        return _conditional_log_marginals(logits, self.tables)


class LevelHead(HierarchicalHead):
    """One softmax per depth level (the paper's per-level classifiers as one multi-head layer).

    Logits ``(B, num_nodes)``: the nodes of depth ``d`` are a contiguous block
    (nodes are indexed by depth) and form one softmax, trained with
    :func:`hiercls.losses.level_cross_entropy`. Its marginals renormalise each
    level's softmax within sibling groups, which equals the conditional
    marginals of the same logits (see :func:`hiercls.marginals.level_marginals`),
    so they are consistent and tiered/top-down decoding works on them.

    Args:
        in_features: feature width.
        taxonomy: a tree.
        bias: add a bias to the linear layer.

    Raises:
        TaxonomyError: the taxonomy is a DAG.
        TypeError: ``bias`` is not a bool.
        ValueError: ``in_features`` is not a positive int.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b/b1"])
        >>> head = LevelHead(8, tax)
        >>> p = head.marginals(head(torch.randn(2, 8)))
        >>> torch.allclose(p[:, 1] + p[:, 2], torch.ones(2))
        True
    """

    kind = "level"

    def __init__(self, in_features: int, taxonomy: Taxonomy, *, bias: bool = True) -> None:
        _require_tree(taxonomy, "LevelHead", _DAG_INSTEAD)
        super().__init__(in_features, taxonomy, taxonomy.num_nodes, ("parent_group", "parent_local"), bias)

    def _log_marginals(self, logits: Tensor) -> Tensor:
        return _conditional_log_marginals(logits, self.tables)


#: what a tree-only head's error offers on a DAG (the same choices as the losses' message)
_DAG_INSTEAD = "Use a SigmoidHead (with node_bce or max_constraint_loss) or a FlatHead (with flat_cross_entropy)."


class SigmoidHead(HierarchicalHead):
    """One independent sigmoid per node (multi-label hierarchical model); trees and DAGs.

    ``P(node) = sigmoid(logits[node])``. With ``coherent=True`` the
    max-constraint module of C-HMCNN (Giunchiglia & Lukasiewicz 2020) is
    applied to the marginals: ``P(node) = max`` of the sigmoids over the node's
    descendants and itself, so no child is ever more probable than its parent.
    ``forward`` returns raw logits in both cases: train with
    :func:`hiercls.losses.node_bce`, or with
    :func:`hiercls.losses.max_constraint_loss` when ``coherent=True``. The
    root's marginal is 1.

    Args:
        in_features: feature width.
        taxonomy: a tree or a DAG.
        coherent: apply the max-constraint in :meth:`marginals`.
        bias: add a bias to the linear layer.

    Attributes:
        coherent: whether :meth:`marginals` applies the max-constraint (as built).

    Raises:
        TypeError: ``coherent`` or ``bias`` is not a bool.
        ValueError: ``in_features`` is not a positive int.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_edges([("r", "a"), ("r", "b"), ("a", "x"), ("b", "x")])  # a DAG
        >>> head = SigmoidHead(8, tax, coherent=True)
        >>> p = head.marginals(head(torch.randn(3, 8)))
        >>> bool((p[:, 1] >= p[:, 3]).all() and (p[:, 2] >= p[:, 3]).all())
        True
    """

    kind = "sigmoid"

    def __init__(self, in_features: int, taxonomy: Taxonomy, *, coherent: bool = False, bias: bool = True) -> None:
        _check_taxonomy(taxonomy)
        coherent = _check_coherent(coherent)
        # only the coherent head reads the tree (a maximum over each subtree); on a DAG, over the edges
        tables: tuple[str, ...] = ()
        if coherent:
            tables = ("parent_local",) if taxonomy.is_tree else ("edge_parent_sorted", "edge_child_sorted")
        super().__init__(in_features, taxonomy, taxonomy.num_nodes, tables, bias)
        self.coherent = bool(coherent)

    def _log_marginals(self, logits: Tensor) -> Tensor:
        return _sigmoid_log_marginals(logits, self.tables, self.coherent)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", coherent={self.coherent}"


class FlatHead(HierarchicalHead):
    """One logit per leaf (the flat baseline), made hierarchy-aware by its marginals.

    Logits ``(B, num_leaves)`` in ``taxonomy.leaf_index`` order; ``P(node)`` is
    the sum of the leaf softmax over the leaves below the node (in a DAG, each
    leaf counted once: the probability that the true leaf is below the node).
    Train with :func:`hiercls.losses.flat_cross_entropy` (partial labels
    allowed), :func:`~hiercls.losses.hxe_loss` or
    :func:`~hiercls.losses.soft_label_loss`.

    Args:
        in_features: feature width.
        taxonomy: a tree or a DAG.
        bias: add a bias to the linear layer.

    Raises:
        TypeError: ``bias`` is not a bool.
        ValueError: ``in_features`` is not a positive int.

    Examples:
        >>> import torch
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
        >>> head = FlatHead(8, tax)
        >>> logits = head(torch.randn(2, 8))
        >>> logits.shape, head.marginals(logits).shape
        (torch.Size([2, 3]), torch.Size([2, 5]))
    """

    kind = "flat"
    _width_name = "num_leaves"

    def __init__(self, in_features: int, taxonomy: Taxonomy, *, bias: bool = True) -> None:
        _check_taxonomy(taxonomy)
        tables = ("leaf_index",) + (
            ("parent_local", "is_leaf") if taxonomy.is_tree else ("leafdesc_owner", "leafdesc_pos")
        )
        super().__init__(in_features, taxonomy, taxonomy.num_leaves, tables, bias)

    def _log_marginals(self, logits: Tensor) -> Tensor:
        return _flat_log_marginals(logits, self.tables)


_HEADS: dict[str, type[HierarchicalHead]] = {
    "conditional": ConditionalHead,
    "level": LevelHead,
    "sigmoid": SigmoidHead,
    "flat": FlatHead,
}


def create_head(kind: HeadKind, in_features: int, taxonomy: Taxonomy, **kwargs: Any) -> HierarchicalHead:
    """Build a head by name.

    Args:
        kind: ``"conditional"``, ``"level"``, ``"sigmoid"`` or ``"flat"``.
        in_features: feature width.
        taxonomy: the taxonomy.
        **kwargs: the head's options (``bias``; ``coherent`` for ``"sigmoid"``).

    Returns:
        the head module.

    Raises:
        ValueError: unknown ``kind`` (the message lists the known ones), or an option the head does not
            take (the message names the heads that take it and the options this head takes), as
            :func:`hiercls.losses.create_loss` does.

    Examples:
        >>> from hiercls import Taxonomy
        >>> tax = Taxonomy.from_paths(["r/a/a1", "r/b"])
        >>> head = create_head("sigmoid", 16, tax, coherent=True)
        >>> head.kind, head.out_features
        ('sigmoid', 4)
    """
    if not isinstance(kind, str) or kind not in _HEADS:
        raise ValueError(f"kind: unknown head {kind!r}; expected one of {', '.join(map(repr, _HEADS))}.")
    takes = _head_options(kind)
    unknown = [name for name in kwargs if name not in takes]
    if unknown:
        owners = {name: [k for k in _HEADS if name in _head_options(k)] for name in unknown}
        every = sorted({name for k in _HEADS for name in _head_options(k)})
        where = "; ".join(
            f"{name!r} belongs to {', '.join(map(repr, owners[name]))}"
            if owners[name]
            else f"{name!r} is an option of no head"
            + "".join(f", perhaps {close!r}" for close in difflib.get_close_matches(name, every, 1))
            for name in unknown
        )
        raise ValueError(
            f"create_head({kind!r}): unknown option(s) {', '.join(map(repr, unknown))} ({where}); "
            f"{kind!r} takes {', '.join(map(repr, takes))}: pass only those, or choose the kind that takes the rest."
        )
    return _HEADS[kind](in_features, taxonomy, **kwargs)


def _head_options(kind: str) -> tuple[str, ...]:
    """The keyword options of a head kind's class (all but the feature width and the taxonomy)."""
    params = inspect.signature(_HEADS[kind].__init__).parameters
    return tuple(name for name in params if name not in ("self", "in_features", "taxonomy"))
