"""Models of the leukemia example: a timm backbone + a hiercls head (+ the loss to train it with).

The three methods of Hamdi et al. (AMAI 2023), all built from the library's parts:

- ``flat``: one backbone, :class:`hiercls.heads.FlatHead` (a softmax over the leaves), trained with
  :func:`hiercls.losses.flat_cross_entropy` (minus the log marginal of the labelled node, so images
  labelled at an inner node still train it); node marginals are sums of leaf probabilities.
- ``per-level`` (the paper's *Base Hierarchical Model*): one separate backbone per tree level, each
  ending in a softmax over that level's nodes; the per-level logits are laid side by side in the
  library's per-node layout and trained with :func:`hiercls.losses.level_cross_entropy`, whose
  level-``d`` term is the only one that reaches backbone ``d``, so each model is trained only by its
  own level's loss. At inference the levels are merged into node marginals by
  :func:`hiercls.marginals.level_marginals`.
- ``hierarchical`` (the paper's *Proposed Multi-label Hierarchical Model*): one shared backbone,
  :class:`hiercls.heads.LevelHead` (one softmax per level) trained with the same level loss, decoded
  tier by tier (``top_down``).

``--head`` / ``--loss`` swap in any head or loss of the library on a shared backbone, as long as the
loss trains the head's probability model (:data:`HEAD_LOSSES`; an incompatible pair is refused).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import timm
import torch
from timm.layers import PatchEmbed
from torch import Tensor, nn

from hiercls import Taxonomy
from hiercls.heads import create_head
from hiercls.losses import compatible_losses, create_loss, default_loss
from hiercls.marginals import conditional_log_marginals, level_marginals

if TYPE_CHECKING:
    from examples.leukemia.checkpoint import Checkpoint

__all__ = [
    "HEAD_LOSSES",
    "IMAGENET_NORMALIZE",
    "METHODS",
    "HierarchicalClassifier",
    "Method",
    "PerLevelClassifier",
    "backbone_normalize",
    "build_model",
    "check_backbone",
    "check_input_size",
    "create_backbone",
    "feature_dim",
    "load_init_weights",
    "method_defaults",
    "model_normalize",
    "row_variant",
    "variant_name",
]

log = logging.getLogger(__name__)

Method = Literal["flat", "per-level", "hierarchical"]
METHODS: tuple[str, ...] = get_args(Method)

# method -> (head kind, loss kind) when --head / --loss are not given
_DEFAULTS: dict[str, tuple[str, str]] = {
    "flat": ("flat", "flat"),
    "per-level": ("level", "level"),
    "hierarchical": ("level", "level"),
}
# tiered decoding for the paper's two hierarchical models, the plain argmax for the flat one
_DEFAULT_DECODE: dict[str, str] = {"flat": "argmax_leaf", "per-level": "top_down", "hierarchical": "top_down"}

HEAD_LOSSES: dict[str, tuple[str, ...]] = {
    kind: compatible_losses(kind) for kind in ("conditional", "level", "sigmoid", "flat")
}
"""Head kind -> the loss kinds that train the probability model its marginals read (first: its default),
from :func:`hiercls.losses.compatible_losses`:

- ``conditional`` and ``level`` heads both emit per-node logits whose marginals are sibling-group
  softmaxes multiplied down the path (a level softmax renormalised within sibling groups is the same
  thing, :func:`hiercls.marginals.level_marginals`), so ``conditional_softmax_nll`` and
  ``level_cross_entropy`` train either; ``bce``/``max_constraint`` would fit independent sigmoids.
- ``sigmoid``: per-node sigmoids, trained by ``node_bce``, or by ``max_constraint_loss`` (C-HMCNN;
  the head is then built with ``coherent=True`` so its marginals apply the max-constraint too).
- ``flat``: leaf logits ``(B, num_leaves)``; the per-node losses fail on their shape.
"""

_HEAD_LOGITS: dict[str, str] = {
    "conditional": "per-node logits read as one softmax per sibling group",
    "level": "per-node logits read as one softmax per depth level (sibling-group softmaxes once renormalised)",
    "sigmoid": "per-node logits read as independent sigmoids",
    "flat": "leaf logits (B, num_leaves) read as one softmax over the leaves",
}
# loss kind -> the head built for it when only --loss is given and the method's head does not fit it
_LOSS_HEAD: dict[str, str] = {
    "conditional": "conditional",
    "level": "level",
    "bce": "sigmoid",
    "max_constraint": "sigmoid",
    "flat": "flat",
    "hxe": "flat",
    "soft_label": "flat",
}


def _check_pair(method: str, head: str, loss: str, head_given: bool) -> None:
    """Refuse a head/loss pair outside :data:`HEAD_LOSSES` (named by the flags that chose them)."""
    if loss in HEAD_LOSSES[head]:
        return
    fits = [h for h, losses in HEAD_LOSSES.items() if loss in losses]
    if method == "per-level":
        flag = "--method per-level (head 'level')"
        fix = f"or use --method hierarchical --loss {loss} (head {_LOSS_HEAD[loss]!r})"
    else:
        flag = f"--head {head!r}" if head_given else f"--method {method} (head {head!r})"
        fix = f"or leave --head out to get the head that fits --loss {loss} ({_LOSS_HEAD[loss]!r})"
    raise ValueError(
        f"head/loss: {flag} and --loss {loss!r} do not fit: the {head} head's logits are {_HEAD_LOGITS[head]}, "
        f"and --loss {loss} is for {' or '.join(fits)} heads (it would fail on the logits' shape or train "
        f"another probability model than the one the head's marginals read). Valid --loss for the {head} "
        f"head: {', '.join(HEAD_LOSSES[head])}; {fix}."
    )


def method_defaults(method: str, head: str | None = None, loss: str | None = None) -> dict[str, str]:
    """The head kind, loss kind and decoding rule a method uses, after ``--head``/``--loss`` overrides.

    A head without a loss gets its default loss (:func:`hiercls.losses.default_loss`); a loss
    without a head keeps the method's head when it fits (:data:`HEAD_LOSSES`), else gets the head
    that fits the loss (``bce`` -> ``sigmoid``, ``hxe`` -> ``flat``...).

    Raises:
        ValueError: unknown method, head or loss; a head other than ``level`` for ``per-level``; or a
            head/loss pair outside :data:`HEAD_LOSSES`.
    """
    if method not in _DEFAULTS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}.")
    if head is not None and head not in HEAD_LOSSES:
        raise ValueError(f"head: expected one of {list(HEAD_LOSSES)}, got {head!r}.")
    if loss is not None and loss not in _LOSS_HEAD:
        raise ValueError(f"loss: expected one of {list(_LOSS_HEAD)}, got {loss!r}.")
    head_kind = head or _DEFAULTS[method][0]
    if method == "per-level" and head_kind != "level":
        raise ValueError(
            f"head: the per-level method is one softmax per level (head 'level'), got {head_kind!r}; "
            "use --method hierarchical to put another head on a shared backbone."
        )
    if head is None and loss is not None and method != "per-level" and loss not in HEAD_LOSSES[head_kind]:
        head_kind = _LOSS_HEAD[loss]
    loss_kind = loss or (_DEFAULTS[method][1] if head is None else default_loss(head_kind))
    _check_pair(method, head_kind, loss_kind, head is not None)
    decode = _DEFAULT_DECODE[method] if head_kind in ("flat", "level") else "top_down"
    return {"head": head_kind, "loss": loss_kind, "decode": decode}


def variant_name(method: str | None, head: str | None = None, loss: str | None = None) -> str | None:
    """How a run is named in results tables: its method, plus its head and loss where they are not the
    method's own, so two heads of one method are told apart (and pooled apart over seeds). An unknown
    method (or ``None``, from an old checkpoint) is returned as it is.

    Examples:
        >>> variant_name("hierarchical", "level", "level")
        'hierarchical'
        >>> variant_name("hierarchical", "conditional", "conditional")
        'hierarchical (conditional head)'
        >>> variant_name("flat", "flat", "hxe")
        'flat (hxe loss)'
        >>> variant_name("hierarchical", None, "bce")  # no head recorded: the loss still shows
        'hierarchical (bce loss)'
    """
    if method not in _DEFAULTS:
        return method
    own_head, own_loss = _DEFAULTS[method]
    if head is not None and head != own_head:
        try:
            own_loss = method_defaults(method, head=head)["loss"]  # the loss that goes with that head
        except ValueError:  # a pair training refuses (never in a checkpoint): name both parts
            own_loss = None
    parts = [f"{head} head"] if head and head != own_head else []
    parts += [f"{loss} loss"] if loss and loss != own_loss else []
    return f"{method} ({', '.join(parts)})" if parts else method


def row_variant(row: Mapping[str, Any]) -> str | None:
    """The variant of a results row: its ``variant``, or for rows written before that field, the one
    :func:`variant_name` makes of its ``method``, ``head`` and ``loss`` (so old runs with another head
    are not pooled with the method's own).

    Examples:
        >>> row_variant({"method": "hierarchical", "head": "conditional", "loss": "conditional"})
        'hierarchical (conditional head)'
        >>> row_variant({"method": "flat", "variant": "flat"})
        'flat'
    """
    return row.get("variant") or variant_name(row.get("method"), row.get("head"), row.get("loss"))


def check_backbone(name: str) -> None:
    """Refuse a backbone name timm does not know (``hf-hub:...`` names and ``.tag`` suffixes pass to timm).

    Raises:
        ValueError: an unknown name; the message suggests the closest of :func:`timm.list_models`.

    Examples:
        >>> check_backbone("convnext_tiny")
    """
    if ":" in name or timm.is_model(name.split(".")[0]):
        return
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=4, cutoff=0.6)
    hint = f"closest names: {', '.join(map(repr, close))}; " if close else ""
    raise ValueError(
        f"backbone: timm has no model {name!r}; {hint}pass --backbone with one of timm.list_models() "
        "(python -c \"import timm; print(timm.list_models('*convnext*'))\" lists a family)."
    )


#: ``timm.create_model`` options the example sets itself, and the flag that sets each one
BACKBONE_OPTIONS_TAKEN = {
    "num_classes": "nothing: the example always builds the backbone without a classifier (num_classes=0)",
    "pretrained": "--pretrained",
    "img_size": "--img-size (or the pack's size)",
    "in_chans": "nothing: the images are read as RGB, 3 channels",
    "features_only": "nothing: the head takes the backbone's pooled features (num_classes=0)",
}


def check_backbone_options(name: str, options: Mapping[str, Any] | None, *, flag: str = "--backbone-kwargs") -> None:
    """Refuse ``--backbone-kwargs`` (and a ``.tag``) that timm would refuse, before any data is read.

    The backbone is built once on the ``meta`` device (no memory, no weights, a fraction of a second),
    so a misspelt option or tag fails at the door rather than after the data has been decoded.
    ``hf-hub:`` names are not built here (that would reach the hub).

    ``flag`` is the command-line flag named in the message for an option the architecture refuses.

    Raises:
        ValueError: an option the example sets itself (named with the flag to use), an option the
            architecture does not take, or a pretrained tag timm does not know.

    Examples:
        >>> check_backbone_options("resnet10t", {"drop_path_rate": 0.1})
        >>> check_backbone_options("resnet10t", {"img_size": 64})
        Traceback (most recent call last):
        ...
        ValueError: --backbone-kwargs: 'img_size' is set by the example; use --img-size (or the pack's size) instead.
    """
    check_backbone(name)
    options = dict(options or {})
    taken = [k for k in options if k in BACKBONE_OPTIONS_TAKEN]
    if taken:
        raise ValueError(
            "--backbone-kwargs: "
            + "; ".join(
                f"{k!r} is set by the example; "
                + (
                    BACKBONE_OPTIONS_TAKEN[k][len("nothing: ") :]
                    if BACKBONE_OPTIONS_TAKEN[k].startswith("nothing: ")
                    else f"use {BACKBONE_OPTIONS_TAKEN[k]} instead"
                )
                for k in taken
            )
            + "."
        )
    if "global_pool" in options and not options["global_pool"]:
        raise ValueError(
            f"--backbone-kwargs: global_pool {options['global_pool']!r} turns the pooling off, but the head takes "
            "pooled features (B, width); give a pooling (e.g. 'avg', or 'token' for a ViT) or leave it out."
        )
    if ":" in name:
        return
    try:
        with torch.device("meta"):
            timm.create_model(name, num_classes=0, pretrained=False, **options)
    except TypeError as err:
        raise ValueError(
            f"{flag}: timm's {name!r} refused the option(s): {err}. Pass only options its model class takes "
            f'(python -c "import timm; help(type(timm.create_model({name.split(".")[0]!r})))" lists them).'
        ) from None
    except RuntimeError as err:
        if "pretrained tag" not in str(err):
            return  # an architecture that cannot be built on the meta device: the real build will tell
        tags = [m.split(".", 1)[1] for m in timm.list_pretrained(name.split(".")[0] + ".*")]
        raise ValueError(
            f"--backbone: {err} Known tags: {', '.join(tags) or 'none'}; or leave the '.tag' suffix out."
        ) from None
    except Exception:  # an architecture the meta device cannot build: the real build will tell
        return


def feature_dim(backbone: nn.Module) -> int:
    """The width of a timm backbone's output with ``num_classes=0``.

    ``head_hidden_size`` where timm gives it (models whose head has a hidden layer before the classifier,
    such as MambaOut: 256 there, against 64 for ``num_features``), else ``num_features``.

    Examples:
        >>> feature_dim(create_backbone("resnet10t"))
        512
    """
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


IMAGENET_NORMALIZE: dict[str, list[float]] = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
"""The input normalisation of a model trained from scratch (and of checkpoints older than ``normalize``)."""


def backbone_normalize(backbone: nn.Module) -> dict[str, list[float]]:
    """The mean/std the backbone's timm pretrained weights expect (``pretrained_cfg``), ImageNet's if none.

    A ViT's default weights (``augreg``) expect 0.5/0.5, not ImageNet's statistics: fed the wrong ones,
    pretrained weights see inputs about 2x too wide.

    Examples:
        >>> backbone_normalize(create_backbone("test_vit"))
        {'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}
    """
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        return {k: list(v) for k, v in IMAGENET_NORMALIZE.items()}
    return {"mean": [float(m) for m in mean], "std": [float(v) for v in std]}


def model_normalize(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the model's inputs are normalised with (``model.config["normalize"]``; ImageNet's
    for a model without one, as every checkpoint was before it was recorded).

    Examples:
        >>> model_normalize(nn.Identity())
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    """
    norm = (getattr(model, "config", None) or {}).get("normalize") or IMAGENET_NORMALIZE
    return tuple(norm["mean"]), tuple(norm["std"])


def create_backbone(name: str, *, pretrained: bool = False, img_size: int | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes=0, pretrained=...)``: pooled features ``(B, feature_dim)``.

    ``img_size`` is passed to models that take it (ViTs need it at sizes other than their default
    so the position embedding matches); convolutional models ignore it.

    Raises:
        ValueError: timm does not know the name; with ``pretrained``, the weights could not be fetched (named
            as ``--pretrained``, with the ways out: local weights, or training from scratch).
    """
    check_backbone(name)
    try:
        if img_size is not None:
            try:
                return timm.create_model(name, num_classes=0, pretrained=pretrained, img_size=img_size, **kwargs)
            except TypeError as err:  # the architecture takes any input size
                if "img_size" not in str(err):
                    raise
        return timm.create_model(name, num_classes=0, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError, ImportError) as err:
        if not pretrained:
            raise
        # offline, timm retries the hub and then raises a bare connection or "not found" error
        raise ValueError(
            f"--pretrained: could not get timm's pretrained weights for {name!r} ({type(err).__name__}: "
            f"{str(err)[:200]}). If this machine cannot reach the weights hub, pass --init-checkpoint FILE with "
            "local weights (a timm .safetensors/.pth file), or leave --pretrained out to train from scratch."
        ) from err


class HierarchicalClassifier(nn.Module):
    """A shared timm backbone followed by one hiercls head (the ``flat`` and ``hierarchical`` methods).

    Attributes:
        backbone: timm model with ``num_classes=0`` (pooled features ``(B, F)``).
        head: a :class:`hiercls.heads.HierarchicalHead`.
        criterion: the loss module, ``(logits, target) -> scalar``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, criterion: nn.Module, taxonomy: Taxonomy) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.criterion = criterion
        self.taxonomy = taxonomy

    def forward(self, images: Tensor) -> Tensor:
        """images ``(B, 3, H, W)`` float -> logits ``(B, head.out_features)``."""
        return self.head(self.backbone(images))

    def marginals(self, logits: Tensor) -> Tensor:
        """logits -> node marginals ``(B, num_nodes)`` float32."""
        return self.head.marginals(logits)

    def log_marginals(self, logits: Tensor) -> Tensor:
        """logits -> log node marginals ``(B, num_nodes)`` float32."""
        return self.head.log_marginals(logits)

    def backbones(self) -> list[nn.Module]:
        """The backbones; the one that feeds depth ``d`` is ``backbones()[min(d - 1, len - 1)]``."""
        return [self.backbone]


class PerLevelClassifier(nn.Module):
    """The paper's Base Hierarchical Model: one backbone and one softmax per tree level.

    Backbone ``d`` (``d = 1 .. max_depth``) feeds a linear layer over the nodes at depth ``d``. The
    level logits are concatenated in node-index order (nodes are stored depth by depth) with a zero
    for the root, giving the per-node layout ``(B, num_nodes)`` of :class:`hiercls.heads.LevelHead`;
    so :func:`hiercls.losses.level_cross_entropy` trains model ``d`` with level ``d``'s loss alone and
    :func:`hiercls.marginals.level_marginals` merges them at inference.
    """

    def __init__(self, backbones: list[nn.Module], taxonomy: Taxonomy, criterion: nn.Module) -> None:
        super().__init__()
        levels = taxonomy.levels()[1:]
        starts = [int(lv[0]) for lv in levels]
        if any(int(lv[-1]) - int(lv[0]) + 1 != len(lv) for lv in levels) or starts[0] != 1:
            raise ValueError("taxonomy: the per-level model needs nodes stored depth by depth (a tree).")
        if len(backbones) != len(levels):
            raise ValueError(f"backbones: expected one per level ({len(levels)}), got {len(backbones)}.")
        self.levels = nn.ModuleList(backbones)
        self.classifiers = nn.ModuleList(nn.Linear(feature_dim(b), len(lv)) for b, lv in zip(backbones, levels))
        self.criterion = criterion
        self.taxonomy = taxonomy

    def forward(self, images: Tensor) -> Tensor:
        """images ``(B, 3, H, W)`` -> per-node logits ``(B, num_nodes)`` (root entry 0)."""
        parts = [fc(bb(images)) for bb, fc in zip(self.levels, self.classifiers)]
        return torch.cat([parts[0].new_zeros(parts[0].shape[0], 1), *parts], dim=1)

    def marginals(self, logits: Tensor) -> Tensor:
        """Merge the level softmaxes into node marginals ``(B, num_nodes)`` float32."""
        return level_marginals(logits.float(), self.taxonomy)

    def log_marginals(self, logits: Tensor) -> Tensor:
        """Log of :meth:`marginals` (the level marginals equal the conditional ones of the same logits)."""
        return conditional_log_marginals(logits.float(), self.taxonomy)

    def backbones(self) -> list[nn.Module]:
        """One backbone per depth 1..max_depth."""
        return list(self.levels)


def build_model(
    backbone: str,
    taxonomy: Taxonomy,
    method: Method = "hierarchical",
    head: str | None = None,
    pretrained: bool = False,
    init_checkpoint: str | os.PathLike[str] | None = None,
    img_size: int | None = None,
    *,
    loss: str | None = None,
    label_smoothing: float = 0.0,
    loss_kwargs: Mapping[str, Any] | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    normalize: Mapping[str, Any] | None = None,
) -> HierarchicalClassifier | PerLevelClassifier:
    """Build the model of a method: timm backbone(s) + the library's head, with its loss attached.

    Args:
        backbone: any timm model name (``convnext_tiny``, ``vit_small_patch16_224``, ``resnet18``...).
        taxonomy: the label tree.
        method: ``flat``, ``per-level`` or ``hierarchical`` (see the module docstring).
        head: override the head kind (``conditional``, ``level``, ``sigmoid``, ``flat``); see
            :func:`method_defaults` for how ``head`` and ``loss`` are completed and checked.
        pretrained: download timm's pretrained weights (needs the weights hub).
        init_checkpoint: local weights for the backbone(s): a timm ``.safetensors``/``.pth`` file, a
            checkpoint of this example or a run folder (its ``best``); the head is loaded too only from a
            checkpoint of the same taxonomy, method and head kind (see :func:`load_init_weights`).
        img_size: input size for models that need it (ViTs).
        loss: override the loss kind (one that fits the head, :data:`HEAD_LOSSES`).
        label_smoothing: passed to the loss.
        loss_kwargs: extra loss options (``alpha`` of HXE, ``beta`` of soft labels...).
        backbone_kwargs: extra ``timm.create_model`` options (``drop_path_rate``...).
        normalize: the input ``{"mean": [...], "std": [...]}`` (``config["normalize"]``). Default: what
            the weights expect: the backbone's pretrained config with ``pretrained`` or a timm weights
            file, the checkpoint's own with a checkpoint of this example, ImageNet's from scratch.

    Returns:
        A module with ``forward(images) -> logits``, ``marginals(logits) -> (B, num_nodes)``,
        ``criterion`` (``(logits, target) -> loss``, built with ``validate_args=False``: the targets are
        checked once by ``Taxonomy.encode``, so a training step never waits on a host sync) and a
        ``config`` dict that rebuilds it.

    Raises:
        ValueError: unknown method/backbone/head/loss, or an incompatible head/method or head/loss pair.
    """
    choice = method_defaults(method, head, loss)
    bkw = dict(backbone_kwargs or {})
    # targets come from Taxonomy.encode (checked once): no per-step validation, no host sync on GPU
    lkw = {"validate_args": False, "label_smoothing": float(label_smoothing), **dict(loss_kwargs or {})}
    if not lkw["label_smoothing"]:
        lkw.pop("label_smoothing")
    criterion = create_loss(choice["loss"], taxonomy, **lkw)
    model: HierarchicalClassifier | PerLevelClassifier
    if method == "per-level":
        bbs = [
            create_backbone(backbone, pretrained=pretrained, img_size=img_size, **bkw)
            for _ in range(taxonomy.max_depth)
        ]
        model = PerLevelClassifier(bbs, taxonomy, criterion)
    else:
        bb = create_backbone(backbone, pretrained=pretrained, img_size=img_size, **bkw)
        # max_constraint_loss trains the max-constrained sigmoids: the head's marginals must apply it too
        hkw = {"coherent": True} if choice["loss"] == "max_constraint" else {}
        model = HierarchicalClassifier(
            bb, create_head(choice["head"], feature_dim(bb), taxonomy, **hkw), criterion, taxonomy
        )
    model.config = {
        "backbone": backbone,
        "method": method,
        "head": choice["head"],
        "loss": choice["loss"],
        "decode": choice["decode"],
        "img_size": img_size,
        "label_smoothing": float(label_smoothing),
        "loss_kwargs": dict(loss_kwargs or {}),
        "backbone_kwargs": bkw,
        "normalize": {k: [float(x) for x in v] for k, v in (normalize or IMAGENET_NORMALIZE).items()},
    }
    if normalize is None and pretrained:
        model.config["normalize"] = backbone_normalize(bbs[0] if method == "per-level" else bb)
    if init_checkpoint is not None:
        load_init_weights(model, init_checkpoint, set_normalize=normalize is None)
    return model


def check_input_size(model: nn.Module, size: int, arg: str = "--img-size") -> None:
    """Refuse an input size that a backbone of ``model`` cannot take, before any image is read.

    A ViT cuts the image into patches: the side must be a multiple of the patch size (timm asserts it at
    the first forward pass, after every image has been decoded), unless it pads the image to one
    (timm's ``dynamic_img_pad``); a ViT built with a fixed input size takes only that size.

    Raises:
        ValueError: names ``arg``, the patch size, and the nearest sizes it takes.

    Examples:
        >>> from examples.leukemia.data import load_taxonomy
        >>> vit = build_model("test_vit", load_taxonomy("paper"), img_size=32)  # 16 px patches
        >>> check_input_size(vit, 48)
        >>> check_input_size(vit, 40)
        Traceback (most recent call last):
        ValueError: --img-size: test_vit cuts images into 16x16 px patches, so the size must be a multiple of 16, got 40; use 32 or 48 (predict and explain: or leave it out, for the training size).
    """
    name = getattr(model, "config", {}).get("backbone", "the backbone")
    for bb in model.backbones():
        embed = getattr(bb, "patch_embed", None)
        # timm's plain PatchEmbed (ViT, DeiT, BEiT...) asserts the size; an overlapping patch embedding
        # (PVT-v2's 7x7 stride-4 convolution) takes any size
        if not isinstance(embed, PatchEmbed):
            continue
        patch = embed.patch_size
        ph, pw = (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))
        step = math.lcm(ph, pw)
        fixed = getattr(embed, "strict_img_size", False) and getattr(embed, "img_size", None)
        if fixed and tuple(fixed) != (size, size):
            raise ValueError(
                f"{arg}: {name} takes {fixed[0]}x{fixed[1]} px images only, got {size}; use {arg} {fixed[0]} "
                "(predict and explain: or leave it out, for the training size)."
            )
        if size % step and not getattr(embed, "dynamic_img_pad", False):  # a padding ViT takes any size
            lower, upper = size // step * step, (size // step + 1) * step
            nearest = f"{lower} or {upper}" if lower else str(upper)
            raise ValueError(
                f"{arg}: {name} cuts images into {ph}x{pw} px patches, so the size must be a multiple of {step}, "
                f"got {size}; use {nearest} (predict and explain: or leave it out, for the training size)."
            )


def model_from_config(config: Mapping[str, Any], taxonomy: Taxonomy) -> HierarchicalClassifier | PerLevelClassifier:
    """Rebuild (untrained, ``pretrained=False``) the model described by ``model.config``."""
    return build_model(
        config["backbone"],
        taxonomy,
        config["method"],
        head=config.get("head"),
        img_size=config.get("img_size"),
        loss=config.get("loss"),
        label_smoothing=config.get("label_smoothing", 0.0),
        loss_kwargs=config.get("loss_kwargs"),
        backbone_kwargs=config.get("backbone_kwargs"),
        normalize=config.get("normalize") or IMAGENET_NORMALIZE,
    )


def _read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a plain weights file (``.safetensors``, or ``.pth`` read with ``weights_only=True``)."""
    import pickle

    fix = (
        "pass a file of tensors: a timm/torch state_dict saved with torch.save(model.state_dict(), PATH), "
        "a .safetensors file, or a checkpoint of this example (RUN/best)"
    )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles objects
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # torch names the class of a pickled object; else not a pickle
            raise ValueError(f"init_checkpoint: {path} is not a readable torch.save file; {fix}.") from None
        # a pickled object (a whole model, an optimizer...), not tensors
        raise ValueError(
            f"init_checkpoint: {path} holds pickled Python objects (a whole model, or a training checkpoint that "
            f"also stores its arguments, as timm's train.py does), which are never unpickled here: that would run "
            f"code from the file. {fix[0].upper()}{fix[1:]}. From a file you trust: obj = torch.load(PATH, "
            "weights_only=False); torch.save(obj['state_dict'] if isinstance(obj, dict) else obj.state_dict(), "
            "NEW_PATH)."
        ) from None
    except Exception as err:  # not a torch/safetensors file: torch's reader of arbitrary bytes raises anything
        # (IndexError, TypeError, UnicodeDecodeError, ... on a CSV or a text file)
        from examples.leukemia.checkpoint import _run_folder_hint

        kind = "safetensors" if path.suffix == ".safetensors" else "torch.save"
        raise ValueError(
            f"init_checkpoint: {path} is not a readable {kind} file ({type(err).__name__}: {str(err)[:120]}); "
            f"{fix}{_run_folder_hint(path)}."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"init_checkpoint: {path} holds a {type(state).__name__}, expected a dict of tensors.")
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    # the prefixes of a wrapper the weights were saved through (DDP, torch.compile, a training module)
    stripped = True
    while stripped and tensors:
        stripped = False
        for prefix in ("module.", "_orig_mod.", "model."):
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
                stripped = True
    return tensors


def _run_folder_checkpoint(path: Path) -> Path:
    """A run folder's checkpoint, read as ``evaluate``/``predict`` read it (:func:`resolve_checkpoint`: RUN/best)."""
    from examples.leukemia.evaluate import resolve_checkpoint

    try:
        return resolve_checkpoint(path)
    except FileNotFoundError:
        last = path / "last.json"
        fix = f"pass {path / 'last'} (its last checkpoint)" if last.is_file() else "pass a weights file or RUN/best"
        raise FileNotFoundError(
            f"init_checkpoint: expected a timm .safetensors/.pth file, a checkpoint of this example (RUN/best, "
            f"RUN/last) or a run folder holding best.json, got the folder {str(path)!r}, which has no best.json; "
            f"{fix}."
        ) from None


def _open_init_source(path: Path) -> tuple[dict[str, Tensor], Checkpoint | None]:
    """``(tensors, checkpoint)`` of ``--init-checkpoint``: ``checkpoint`` is what the sidecar of this example's
    checkpoint says (taxonomy, config), None for a plain weights file.

    Raises:
        FileNotFoundError: nothing at ``path`` (or a run folder without ``best.json``).
        CheckpointError: this example's checkpoint, damaged.
    """
    from examples.leukemia.checkpoint import checkpoint_paths, load_checkpoint

    if path.is_dir():
        path = _run_folder_checkpoint(path)
    weights_file, _, sidecar = checkpoint_paths(path)
    if path.name.endswith(".state.safetensors") and path.is_file():  # torch would read its moments as weights
        owner = sidecar.with_suffix("")
        raise ValueError(
            f"init_checkpoint: {path} holds a checkpoint's training state (optimizer moments, random generators), "
            + (
                f"not weights; pass the checkpoint itself: {owner}."
                if sidecar.is_file()
                else "not weights; pass its checkpoint (RUN/best, RUN/last) or a weights file."
            )
        )
    # a checkpoint's own tensor file (RUN/best.<sha12>.safetensors) is read with its sidecar
    named = sidecar.is_file() and weights_file.is_file() and path.is_file() and weights_file.samefile(path)
    if path.is_file() and path.suffix != ".json" and not named:
        return _read_weights(path), None
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"init_checkpoint: {path} does not exist; give a timm .safetensors/.pth file, a checkpoint of this "
            "example (RUN/best, RUN/last) or a run folder (RUN, read as RUN/best)."
        )
    ckpt = load_checkpoint(path)
    return ckpt.weights, ckpt


def _resample_pos_embed(model: nn.Module, name: str, value: Tensor, own: Tensor) -> Tensor:
    """A ViT's absolute position embedding interpolated to this model's patch grid (weights made at
    224 px used at 128 px), as timm does for ``pretrained=True``; ``value`` unchanged if not a timm ViT."""
    from timm.layers import resample_abs_pos_embed

    owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    grid = getattr(getattr(owner, "patch_embed", None), "grid_size", None)
    if grid is None or value.ndim != 3 or own.ndim != 3:
        return value
    prefix = 0 if getattr(owner, "no_embed_class", False) else int(getattr(owner, "num_prefix_tokens", 1))
    return resample_abs_pos_embed(value, new_size=list(grid), num_prefix_tokens=prefix)


_LEVEL_KEY = re.compile(r"levels\.(\d+)\.(.+)", re.DOTALL)
_HEAD_PREFIXES = ("head.", "classifiers.")
_OUR_PREFIXES = ("backbone.", "levels.", *_HEAD_PREFIXES, "criterion.")
_FINGERPRINT = "taxonomy_fingerprint"


def _source_parts(
    weights: Mapping[str, Tensor], ours: bool
) -> tuple[dict[int | None, dict[str, tuple[str, Tensor]]], dict[str, Tensor]]:
    """``(backbones, heads)`` of the source tensors: ``backbones[None]`` the shared (or timm) backbone,
    ``backbones[d]`` the per-level model's level ``d``, each ``{key in the backbone: (source key, tensor)}``;
    ``heads`` the ``head.*``/``classifiers.*`` tensors. ``ours``: the keys are a model of this example's
    (``backbone.*``...), else the file is read as timm's (every key a backbone key)."""
    backbones: dict[int | None, dict[str, tuple[str, Tensor]]] = {}
    heads: dict[str, Tensor] = {}
    for key, value in weights.items():
        level = _LEVEL_KEY.fullmatch(key) if ours else None
        if not ours:
            backbones.setdefault(None, {})[key] = (key, value)
        elif key.startswith("backbone."):
            backbones.setdefault(None, {})[key[len("backbone.") :]] = (key, value)
        elif level:
            backbones.setdefault(int(level[1]), {})[level[2]] = (key, value)
        elif key.startswith(_HEAD_PREFIXES):
            heads[key] = value
    return backbones, heads


def _method_head(config: Any) -> tuple[str | None, str | None]:
    """``(method, head kind)`` a model config names (the head completed as :func:`method_defaults` does)."""
    if not isinstance(config, Mapping) or config.get("method") not in _DEFAULTS:
        return None, None
    head = config.get("head")
    if head is None:
        try:
            head = method_defaults(config["method"], None, config.get("loss"))["head"]
        except ValueError:
            return config["method"], None
    return config["method"], head


def _head_refusal(model: nn.Module, ckpt: Checkpoint | None) -> str | None:
    """Why the source's head tensors must not be loaded into ``model``'s head; None when they may be:
    the source is a checkpoint of this example with the model's taxonomy fingerprint, method and head kind."""
    if ckpt is None:
        return "the file has no checkpoint sidecar (NAME.json) saying which taxonomy and head they were trained for"
    tax = getattr(model, "taxonomy", None)
    if not isinstance(tax, Taxonomy) or tax.fingerprint != ckpt.taxonomy.fingerprint:
        ours = f"this model's {tax.fingerprint[:12]}..., {tax.num_nodes} nodes" if isinstance(tax, Taxonomy) else "?"
        return (
            f"they were trained on another taxonomy (fingerprint {ckpt.taxonomy.fingerprint[:12]}..., "
            f"{ckpt.taxonomy.num_nodes} nodes; {ours})"
        )
    theirs, ours_mh = _method_head(ckpt.config.get("model")), _method_head(getattr(model, "config", None))
    if None in theirs:
        return "the checkpoint's config['model'] does not name its method and head"
    if None in ours_mh:
        return "this model has no config naming its method and head (build it with build_model)"
    if theirs != ours_mh:
        why = " (its logits would be read as another probability model)" if theirs[1] != ours_mh[1] else ""
        return (
            f"they were trained for --method {theirs[0]} with a {theirs[1]} head, and this model is --method "
            f"{ours_mh[0]} with a {ours_mh[1]} head{why}"
        )
    return None


def _shared_from_per_level(path: Path, ckpt: Checkpoint | None, levels: list[int], method: str) -> ValueError:
    """The refusal to pick one of a per-level model's backbones for a shared backbone, with the recipe."""
    last = levels[-1]
    prefix = f"levels.{last}."
    out = f"level{last + 1}_backbone.safetensors"
    if ckpt is not None:
        load = (
            f"from examples.leukemia.checkpoint import load_checkpoint; w = load_checkpoint({str(ckpt.path)!r}).weights"
        )
    elif path.suffix == ".safetensors":
        load = f"from safetensors.torch import load_file; w = load_file({str(path)!r})"
    else:
        load = f"import torch; w = torch.load({str(path)!r}, weights_only=True)"
    code = (
        f"{load}; from safetensors.torch import save_file; "
        f"save_file({{k[{len(prefix)}:]: v for k, v in w.items() if k.startswith({prefix!r})}}, {out!r})"
    )
    return ValueError(
        f"init_checkpoint: {path} holds a per-level model's {len(levels)} backbones (levels.{levels[0]} .. "
        f"levels.{last}, one per depth) and this {method} model has one shared backbone; which level to start "
        "it from is a choice left to you: save that level's backbone as a weights file and pass the file as "
        f"--init-checkpoint. E.g. for the deepest level (levels.{last}, depth {last + 1}): "
        f'python -c "{code}", then --init-checkpoint {out}'
    )


def _warn_uncovered(
    model: nn.Module,
    path: Path,
    ckpt: Checkpoint | None,
    own: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    prefixes: list[str],
    mismatched: list[str],
) -> None:
    """Warn about backbone tensors the file does not hold (they stay as initialised), and another backbone.

    A timm file of another architecture shares many key names (a resnet18 file fills 120 of a resnet34's
    216 tensors): without this, the rest stayed random with only an INFO count.
    """
    ours = getattr(model, "config", {}).get("backbone")
    theirs = ((ckpt.config.get("model") or {}).get("backbone") if ckpt is not None else None) or None
    if ours and theirs and ours != theirs:
        log.warning(
            "init_checkpoint %s: it was trained with the backbone %r, this model is %r: only tensors of the same "
            "name and shape are loaded. Pass --backbone %s to continue from it whole.",
            path,
            theirs,
            ours,
            theirs,
        )
    backbone = [
        k
        for k in own
        if any(k.startswith(p) for p in prefixes) and not (prefixes == [""] and k.startswith(_HEAD_PREFIXES))
    ]
    missing = [k for k in backbone if k not in targets and not k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not any(m.startswith(k + " ") for m in mismatched)]  # warned already
    if missing:
        log.warning(
            "init_checkpoint %s: %d of the model's %d backbone tensor(s) are not in the file and stay as "
            "initialised (%s%s)%s",
            path,
            len(missing),
            len(backbone),
            ", ".join(missing[:4]),
            ", ..." if len(missing) > 4 else "",
            ": most of the backbone, so the file is probably for another architecture"
            if 2 * len(missing) > len(backbone)
            else "",
        )


def _is_ours(weights: Mapping[str, Tensor], ckpt: Checkpoint | None) -> bool:
    """Whether the source's keys are a model of this example's (``backbone.*``, ``levels.d.*``...), not timm's."""
    return ckpt is not None or (
        all(k.startswith(_OUR_PREFIXES) for k in weights)
        and any(k.startswith("backbone.") or _LEVEL_KEY.fullmatch(k) for k in weights)
    )


def _no_match(path: Path, weights: Mapping[str, Tensor]) -> ValueError:
    return ValueError(
        f"init_checkpoint: no tensor in {path} matches the model (first keys: {list(weights)[:5]}); "
        "is it for the same backbone?"
    )


def check_init_source(
    path: str | os.PathLike[str],
    backbone: str,
    method: str,
    *,
    img_size: int | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """What :func:`load_init_weights` would refuse, found before a run reads its data: an unreadable or
    missing file, a per-level checkpoint for a shared backbone, and a file none of whose backbone tensors
    fits ``backbone`` (by name and shape; a ViT's position embedding by name). The backbone is built on the
    meta device (no memory); an architecture that cannot be built there is left to the real load.

    Raises:
        FileNotFoundError, ValueError, CheckpointError: as :func:`load_init_weights`.
    """
    path = Path(path)
    weights, ckpt = _open_init_source(path)
    backbones, heads = _source_parts(weights, _is_ours(weights, ckpt))
    levels = sorted(b for b in backbones if b is not None)
    if method != "per-level" and None not in backbones and len(levels) > 1:
        raise _shared_from_per_level(path, ckpt, levels, method)
    if heads or ":" in backbone:  # a head alone may be loaded; a hub backbone's config is fetched: left to the load
        return
    try:
        with torch.device("meta"):
            own = create_backbone(backbone, img_size=img_size, **dict(backbone_kwargs or {})).state_dict()
    except Exception:  # an architecture the meta device cannot build: the real load will tell
        return
    for tensors in backbones.values():
        for suffix, (_, value) in tensors.items():
            if suffix in own and (own[suffix].shape == value.shape or suffix.endswith("pos_embed")):
                return
    raise _no_match(path, weights)


def load_init_weights(model: nn.Module, path: str | os.PathLike[str], *, set_normalize: bool = True) -> dict[str, int]:
    """Load local weights into the backbone(s), and into the head only from a checkpoint trained for it.

    ``path`` is a timm weights file (``.safetensors``, or ``.pth`` read with ``weights_only=True``; keys as
    in ``timm.create_model(name).state_dict()``, the classifier dropped), a checkpoint written by
    :func:`examples.leukemia.checkpoint.save_checkpoint` (``RUN/best``, ``RUN/best.json``), or a run folder
    (read as ``RUN/best``, as ``evaluate`` and ``predict`` do).

    Backbones: a timm file's or a shared-backbone checkpoint's (``flat``, ``hierarchical``: ``backbone.*``)
    backbone goes into every backbone of the model (each level of a ``per-level`` model); a ``per-level``
    checkpoint's level ``d`` (``levels.d.*``) into level ``d`` of a ``per-level`` model. Into a shared
    backbone a ``per-level`` checkpoint is refused (unless it has a single level): which level to start
    from is the user's choice, and the message shows how to save one level's backbone as a weights file
    to pass instead. A ViT's position embedding is interpolated to the model's patch grid (weights made at
    another image size); backbone tensors of another shape stay as initialised, with a warning.

    Heads (``head.*``, ``classifiers.*``): loaded only from a checkpoint of this example whose taxonomy
    fingerprint, method and head kind are the model's (same shapes are not enough: a head of another
    taxonomy or kind would read its logits as other nodes or another probability model); otherwise the
    head stays as initialised and an INFO log line names its tensors and says why.

    With ``set_normalize``, ``model.config["normalize"]`` becomes what the weights expect: the
    checkpoint's recorded normalisation (ImageNet's for one older than the record), or for a timm file
    its backbone's pretrained config.

    Returns:
        ``{"loaded": n, "skipped": m}``: tensors of the model set, tensors of the file used nowhere.

    Raises:
        FileNotFoundError: no such file or checkpoint, or a folder without ``best.json``.
        ValueError: no tensor of the file matches the model; a per-level checkpoint for a shared backbone.
        CheckpointError: a damaged checkpoint of this example (a ``ValueError``).
    """
    path = Path(path)
    weights, ckpt = _open_init_source(path)
    own = model.state_dict()
    if isinstance(model, PerLevelClassifier):
        prefixes = [f"levels.{d}." for d in range(len(model.levels))]
    elif isinstance(model, HierarchicalClassifier):
        prefixes = ["backbone."]
    else:  # a bare backbone: every key is a backbone key
        prefixes = [""]
    backbones, heads = _source_parts(weights, _is_ours(weights, ckpt))
    plan: list[tuple[str, dict[str, tuple[str, Tensor]]]] = []
    if None in backbones:  # one shared (or timm) backbone: into each backbone of the model
        plan = [(prefix, backbones[None]) for prefix in prefixes]
    elif backbones:
        levels = sorted(b for b in backbones if b is not None)
        if prefixes[0].startswith("levels."):  # per-level into per-level: level d into level d
            plan = [(prefix, backbones[d]) for d, prefix in enumerate(prefixes) if d in backbones]
            without = [prefix[:-1] for d, prefix in enumerate(prefixes) if d not in backbones]
            if without:
                log.warning(
                    "init_checkpoint %s: has backbones for levels %s only; %s stay as initialised",
                    path,
                    levels,
                    without,
                )
        elif len(levels) == 1:
            plan = [(prefix, backbones[levels[0]]) for prefix in prefixes]
        else:
            method = getattr(model, "config", {}).get("method", "shared-backbone")
            raise _shared_from_per_level(path, ckpt, levels, method)
    targets: dict[str, Tensor] = {}
    used: set[str] = set()
    mismatched: list[str] = []
    for prefix, tensors in plan:
        for suffix, (key, value) in tensors.items():
            name = prefix + suffix
            if name not in own:
                continue
            if own[name].shape != value.shape and name.endswith("pos_embed"):
                value = _resample_pos_embed(model, name, value, own[name])
            if own[name].shape == value.shape:
                targets[name] = value
                used.add(key)
            else:
                mismatched.append(f"{name} {tuple(value.shape)} -> {tuple(own[name].shape)}")
    if mismatched:
        log.warning(
            "init_checkpoint %s: %d backbone tensor(s) have another shape and stay as initialised, first: %s",
            path,
            len(mismatched),
            "; ".join(mismatched[:3]),
        )
    own_head = [k for k in own if prefixes != [""] and k.startswith(_HEAD_PREFIXES) and not k.endswith(_FINGERPRINT)]
    refusal = _head_refusal(model, ckpt) if heads else None
    if refusal is not None:
        log.info(
            "init_checkpoint %s: the head is not loaded, its %d tensor(s) stay as initialised (%s): %s",
            path,
            len(own_head),
            ", ".join(own_head[:6]) + (", ..." if len(own_head) > 6 else ""),
            refusal,
        )
    elif heads:
        misfit = []
        for key, value in heads.items():
            if key.endswith(_FINGERPRINT):  # the model's own is right by construction (same taxonomy)
                used.add(key)
            elif key in own and own[key].shape == value.shape:
                targets[key] = value
                used.add(key)
            else:
                misfit.append(f"{key} {tuple(value.shape)}" + (f" -> {tuple(own[key].shape)}" if key in own else ""))
        if misfit:
            log.warning(
                "init_checkpoint %s: %d head tensor(s) do not fit this model's head and stay as initialised: %s",
                path,
                len(misfit),
                "; ".join(misfit[:3]),
            )
    if not targets:
        raise _no_match(path, weights)
    _warn_uncovered(model, path, ckpt, own, targets, [prefix for prefix, _ in plan], mismatched)
    model.load_state_dict(targets, strict=False)
    config = getattr(model, "config", None)
    if set_normalize and isinstance(config, dict):
        if ckpt is not None:
            config["normalize"] = (ckpt.config.get("model") or {}).get("normalize") or dict(IMAGENET_NORMALIZE)
        else:
            first = model.levels[0] if isinstance(model, PerLevelClassifier) else getattr(model, "backbone", model)
            config["normalize"] = backbone_normalize(first)
    counts = {"loaded": len(targets), "skipped": len(weights) - len(used)}
    log.info("init_checkpoint %s: %s", path, counts)
    return counts
