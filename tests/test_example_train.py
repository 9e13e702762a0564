"""The leukemia example's training side: models, checkpoints, the train loop, resume, the synthetic main job.

Tiny timm models (``test_convnext``, ``test_vit``, ``test_resnet``; ``pretrained=False``) at 32 px on
a few dozen real PBC images (``../shared/data``, required in CI) and on generated ones.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from examples.leukemia import train as T
from examples.leukemia.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from examples.leukemia.data import load_taxonomy, read_manifest
from examples.leukemia.models import HEAD_LOSSES, PerLevelClassifier, build_model, method_defaults
from hiercls import Taxonomy
from tests.budget import examples

FAST = ["--quiet", "--no-tensorboard", "--img-size", "32", "--batch-size", "8", "--workers", "1"]


def copy_pbc_subset(shared_data: Path, dest: Path, per_prefix: int = 6) -> Path:
    """A PBC-layout copy with ``per_prefix`` images of every file-name prefix, plus the stray macOS file."""
    src = shared_data / "pbc" / "PBC_dataset_normal_DIB"
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dest / "PBC_dataset_normal_DIB" / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir()):
            key = (cls.name, f.name.split("_")[0])
            if f.name.startswith(".") or counts[key] < per_prefix:
                counts[key] += 1
                shutil.copy(f, dest / "PBC_dataset_normal_DIB" / cls.name / f.name)
    return dest


@pytest.fixture(scope="module")
def pbc_subset(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return copy_pbc_subset(shared_data, tmp_path_factory.mktemp("pbc"))


@pytest.fixture(scope="module")
def pbc_pack(pbc_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from examples.leukemia.pack import pack

    out = tmp_path_factory.mktemp("pack") / "pbc32.npz"
    pack(pbc_subset, out, size=32, workers=1, progress=False)
    return out


# ------------------------------------------------------------------------------------ models
def test_method_defaults_and_errors() -> None:
    assert method_defaults("flat") == {"head": "flat", "loss": "flat", "decode": "argmax_leaf"}
    assert method_defaults("hierarchical") == {"head": "level", "loss": "level", "decode": "top_down"}
    assert method_defaults("hierarchical", head="conditional")["loss"] == "conditional"
    assert method_defaults("hierarchical", head="conditional", loss="level")["loss"] == "level"
    with pytest.raises(ValueError, match="head/loss: --head 'conditional' and --loss 'bce' do not fit"):
        method_defaults("hierarchical", head="conditional", loss="bce")
    with pytest.raises(ValueError, match="method: expected one of"):
        method_defaults("tree")
    with pytest.raises(ValueError, match="per-level method is one softmax per level"):
        method_defaults("per-level", head="conditional")
    with pytest.raises(ValueError, match="backbone: timm has no model 'no_such_net'"):
        build_model("no_such_net", load_taxonomy("paper"), "flat")


HEADS = ("conditional", "level", "sigmoid", "flat")
LOSSES = ("conditional", "level", "bce", "flat", "hxe", "soft_label", "max_constraint")


def test_head_losses_table_matches_the_library() -> None:
    from hiercls.heads import _HEADS
    from hiercls.losses import _LOSSES, default_loss

    assert set(HEAD_LOSSES) == set(_HEADS) == set(HEADS) and set(_LOSSES) == set(LOSSES)
    assert {loss for losses in HEAD_LOSSES.values() for loss in losses} == set(LOSSES)
    assert all(losses[0] == default_loss(head) for head, losses in HEAD_LOSSES.items())


def _loss_step(model: torch.nn.Module, tax) -> float:
    """One SGD step of the model's criterion on the head's logits of random features; returns the loss."""
    torch.manual_seed(0)
    if isinstance(model, PerLevelClassifier):
        logits = model(torch.randn(3, 3, 32, 32))
        params = list(model.classifiers.parameters())
    else:
        logits = model.head(torch.randn(3, model.backbone.num_features))
        params = list(model.head.parameters())
    target = torch.tensor([tax.index("Normal"), tax.index("Leukemia"), tax.index("APL")])  # one partial label
    loss = model.criterion(logits, target)
    loss.backward()
    opt = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, params)), "the step moved nothing"
    probs = model.marginals(logits.detach())
    assert probs.shape == (3, tax.num_nodes) and torch.allclose(probs[:, 0], torch.ones(3))
    return float(loss.detach())


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("head", HEADS)
def test_every_head_loss_pair_builds_and_steps_or_is_refused(head: str, loss: str, paper_tax) -> None:
    if loss in HEAD_LOSSES[head]:
        model = build_model("test_convnext", paper_tax, "hierarchical", head=head, loss=loss)
        assert (model.config["head"], model.config["loss"]) == (head, loss)
        assert model.head.kind == head and getattr(model.head, "coherent", False) == (loss == "max_constraint")
        assert math.isfinite(_loss_step(model, paper_tax))
    else:
        msg = rf"--head '{head}' and --loss '{loss}' do not fit: .* Valid --loss for the {head} head: " + re.escape(
            ", ".join(HEAD_LOSSES[head])
        )
        with pytest.raises(ValueError, match=msg):
            build_model("test_convnext", paper_tax, "hierarchical", head=head, loss=loss)
        with pytest.raises(ValueError, match=msg):
            method_defaults("flat", head=head, loss=loss)


@pytest.mark.parametrize("loss", LOSSES)
def test_per_level_method_takes_only_the_level_head_losses(loss: str, paper_tax) -> None:
    if loss in HEAD_LOSSES["level"]:
        model = build_model("test_convnext", paper_tax, "per-level", loss=loss)
        assert model.config["loss"] == loss and math.isfinite(_loss_step(model, paper_tax))
    else:
        with pytest.raises(ValueError, match=rf"--method per-level \(head 'level'\) and --loss '{loss}' do not fit"):
            build_model("test_convnext", paper_tax, "per-level", loss=loss)


def test_loss_alone_picks_a_head_that_fits() -> None:
    # the method's head when it fits the loss, else the loss's own head
    assert method_defaults("hierarchical", loss="conditional")["head"] == "level"
    assert method_defaults("hierarchical", loss="bce")["head"] == "sigmoid"
    assert method_defaults("hierarchical", loss="max_constraint")["head"] == "sigmoid"
    assert method_defaults("hierarchical", loss="hxe")["head"] == "flat"
    assert method_defaults("flat", loss="soft_label")["head"] == "flat"
    assert method_defaults("flat", loss="level") == {"head": "level", "loss": "level", "decode": "argmax_leaf"}
    assert method_defaults("flat", loss="conditional")["head"] == "conditional"
    for loss in LOSSES:
        choice = method_defaults("hierarchical", loss=loss)
        assert loss in HEAD_LOSSES[choice["head"]]
    with pytest.raises(ValueError, match="head: expected one of .* got 'tree'"):
        method_defaults("hierarchical", head="tree")
    with pytest.raises(ValueError, match="loss: expected one of .* got 'nll'"):
        method_defaults("hierarchical", loss="nll")


def test_per_level_model_trains_each_backbone_only_by_its_level(paper_tax) -> None:
    torch.manual_seed(0)
    model = build_model("test_vit", paper_tax, "per-level", img_size=32)
    assert isinstance(model, PerLevelClassifier) and len(model.backbones()) == paper_tax.max_depth
    images = torch.randn(2, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (2, paper_tax.num_nodes)
    # targets at depth 1 ("Normal", "Reactive"): only the depth-1 backbone may receive a gradient
    target = torch.tensor([paper_tax.index("Normal"), paper_tax.index("Reactive")])
    model.criterion(logits, target).backward()
    grads = [sum(float(p.grad.abs().sum()) for p in bb.parameters() if p.grad is not None) for bb in model.backbones()]
    assert grads[0] > 0 and grads[1:] == [0.0] * (len(grads) - 1)
    probs = model.marginals(logits.detach())
    assert torch.allclose(probs[:, 0], torch.ones(2)) and torch.allclose(
        probs[:, list(paper_tax.levels()[1])].sum(1), torch.ones(2), atol=1e-5
    )


@pytest.mark.parametrize("method", ["hierarchical", "per-level"])
def test_a_backbone_whose_head_has_a_hidden_layer_builds(method: str, paper_tax) -> None:
    """MambaOut's pooled output is its head's hidden size (256), not num_features (64): the head was sized
    by num_features and the first batch failed with 'features: expected shape (B, 64), got (2, 256)'."""
    model = build_model("test_mambaout", paper_tax, method, img_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, paper_tax.num_nodes)


def test_split_identity_ignores_where_the_data_folder_is(paper_tax) -> None:
    """The id hashed absolute paths: resuming through a symlink to the data, or from a moved SYNTHETIC run
    folder, was refused as 'splits differently'. It must still change when an image changes split."""

    def data(root: str, swap: bool = False) -> T.Data:
        names = {"train": [f"{root}/ALL/a.jpg", f"{root}/CLL/b.jpg"], "val": [f"{root}/ALL/c.jpg"], "test": []}
        if swap:
            names["train"][0], names["val"][0] = names["val"][0], names["train"][0]
        targets = {k: torch.full((len(v),), paper_tax.index("ALL")) for k, v in names.items()}
        return T.Data(paper_tax, {k: torch.zeros(len(v), 3, 2, 2) for k, v in names.items()}, targets, names, "x")

    assert T.split_identity(data("/data/pbc")) == T.split_identity(data("/mnt/link/to/pbc"))
    assert T.split_identity(data("/data/pbc")) != T.split_identity(data("/data/pbc", swap=True))


def test_per_level_clipping_keeps_each_level_to_its_own_gradient(paper_tax) -> None:
    """--clip-grad over all parameters at once scaled the depth-1 backbone's step by the other levels'
    gradients; clipped per level, its step is the same whatever the deeper levels do."""
    import copy

    torch.manual_seed(0)
    model = build_model("test_resnet", paper_tax, "per-level", img_size=32)
    other = copy.deepcopy(model)
    with torch.no_grad():  # the depth-2 level only: much larger logits, so a much larger gradient
        other.classifiers[1].weight.mul_(50.0)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 32, 32, generator=gen), torch.randint(1, paper_tax.num_nodes, (8,), generator=gen))]
    env = T.init_distributed("cpu")
    for m in (model, other):
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        T.train_one_epoch(
            m,
            m,
            m.criterion,
            batches,
            opt,
            sched,
            env=env,
            amp=False,
            clip_grad=0.1,
            channels_last=False,
            epoch=0,
            epochs=1,
            progress=False,
        )
    for p, q in zip(model.levels[0].parameters(), other.levels[0].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    groups = T.clip_groups(model)
    assert len(groups) == paper_tax.max_depth and sum(map(len, groups)) == len(list(model.parameters()))


def test_init_checkpoint_loads_backbone(tmp_path: Path, paper_tax) -> None:
    torch.manual_seed(1)
    trained = build_model("test_convnext", paper_tax, "hierarchical")
    save_checkpoint(tmp_path / "ck", trained, paper_tax, config={"model": trained.config})
    # our checkpoint, and a plain timm state dict of the backbone
    fresh = build_model("test_convnext", paper_tax, "flat", init_checkpoint=tmp_path / "ck")
    key = "backbone.stem.0.weight"
    assert torch.equal(fresh.state_dict()[key], trained.state_dict()[key])
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trained.backbone.state_dict().items()}, tmp_path / "timm.safetensors")
    per_level = build_model("test_convnext", paper_tax, "per-level", init_checkpoint=tmp_path / "timm.safetensors")
    assert all(torch.equal(bb.stem[0].weight, trained.backbone.stem[0].weight) for bb in per_level.backbones())
    with pytest.raises(ValueError, match="no tensor in .* matches the model"):
        build_model("test_vit", paper_tax, "flat", init_checkpoint=tmp_path / "timm.safetensors")
    with pytest.raises(FileNotFoundError, match="init_checkpoint: .* does not exist"):
        build_model("test_vit", paper_tax, "flat", init_checkpoint=tmp_path / "missing.safetensors")


def test_init_checkpoint_from_another_taxonomy_keeps_the_backbone_and_starts_the_head_afresh(
    tmp_path: Path, paper_tax
) -> None:
    """Same node count, other taxonomy: the head's logits would mean other nodes, so only the backbone
    loads (before the heads carried a fingerprint, the head loaded silently)."""
    from hiercls import Taxonomy

    edges = [(paper_tax.nodes[p] + "_", paper_tax.nodes[c] + "_") for p, c in paper_tax.edges_index().tolist()]
    other = Taxonomy.from_edges(edges)
    torch.manual_seed(1)
    trained = build_model("test_convnext", other, "hierarchical")
    save_checkpoint(tmp_path / "ck", trained, other, config={"model": trained.config})
    torch.manual_seed(2)
    fresh = build_model("test_convnext", paper_tax, "hierarchical", init_checkpoint=tmp_path / "ck")
    state, source = fresh.state_dict(), trained.state_dict()
    assert torch.equal(state["backbone.stem.0.weight"], source["backbone.stem.0.weight"])
    assert not torch.equal(state["head.linear.weight"], source["head.linear.weight"])
    assert fresh.head.fingerprint == paper_tax.fingerprint
    same = build_model("test_convnext", other, "hierarchical", init_checkpoint=tmp_path / "ck")
    assert torch.equal(same.state_dict()["head.linear.weight"], source["head.linear.weight"])


def test_init_checkpoint_resizes_a_vit_position_embedding(tmp_path: Path, paper_tax, caplog) -> None:
    """Local ViT weights made at another size: the position embedding is interpolated (as timm does for
    pretrained=True), not silently left random."""
    import timm
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(2)
    src = timm.create_model("test_vit", num_classes=0, img_size=64)  # an 4x4 patch grid
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "vit64.safetensors")
    with caplog.at_level(logging.WARNING):
        model = build_model(
            "test_vit", paper_tax, "hierarchical", img_size=32, init_checkpoint=tmp_path / "vit64.safetensors"
        )
    got = model.backbone.pos_embed
    assert got.shape != src.pos_embed.shape
    want = resample_abs_pos_embed(
        src.pos_embed.detach(), new_size=list(model.backbone.patch_embed.grid_size), num_prefix_tokens=1
    )
    torch.testing.assert_close(got.detach(), want)
    assert "another shape" not in caplog.text
    # a backbone tensor that cannot be fitted is reported, not skipped in silence
    wide = timm.create_model("test_vit", num_classes=0, embed_dim=96, num_heads=2)
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, tmp_path / "wide.safetensors")
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="no tensor in .* matches"):
        build_model("test_vit", paper_tax, "hierarchical", img_size=32, init_checkpoint=tmp_path / "wide.safetensors")
    assert "backbone tensor(s) have another shape" in caplog.text


# ------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_without_pickle(tmp_path: Path, paper_tax) -> None:
    torch.manual_seed(0)
    model = build_model("test_convnext", paper_tax, "hierarchical")
    opt = T.build_optimizer(model, 1e-3, 0.05, fused=False)
    sched = T.cosine_with_warmup(opt, 10, 2)
    loss = model.criterion(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 5]))
    loss.backward()
    opt.step()
    sched.step()
    extra = {"best": {"epoch": 3, "value": 0.5}, "pair": (1, "a"), 7: [1.5, None]}
    saved_rng = torch.get_rng_state()  # save_checkpoint(rng=True) stores this state
    path = save_checkpoint(
        tmp_path / "run" / "last.json",
        model,
        paper_tax,
        config={"model": model.config, "lr": 1e-3},
        metrics={"accuracy": 0.25},
        epoch=3,
        optimizer=opt,
        scheduler=sched,
        state=extra,
        rng=True,
    )
    weights, state, sidecar = checkpoint_paths(path)
    assert path == sidecar and weights.is_file() and state.is_file()
    assert re.fullmatch(r"last\.[0-9a-f]{12}\.safetensors", weights.name), weights.name
    assert re.fullmatch(r"last\.[0-9a-f]{12}\.state\.safetensors", state.name), state.name
    assert checkpoint_paths(weights) == checkpoint_paths(state) == checkpoint_paths(tmp_path / "run" / "last")
    assert not list((tmp_path / "run").glob(".*tmp*")), "temporary files left behind"
    text = sidecar.read_text()
    assert "pickle" not in text and json.loads(text)["taxonomy_fingerprint"] == paper_tax.fingerprint

    model2 = build_model("test_convnext", paper_tax, "hierarchical")
    opt2 = T.build_optimizer(model2, 1e-3, 0.05, fused=False)
    sched2 = T.cosine_with_warmup(opt2, 10, 2)
    torch.manual_seed(123)  # the RNG moves on...
    assert not torch.equal(torch.get_rng_state(), saved_rng)
    ck = load_checkpoint(
        tmp_path / "run" / "last", model2, taxonomy=paper_tax, optimizer=opt2, scheduler=sched2, restore_rng=True
    )
    assert ck.epoch == 3 and ck.metrics == {"accuracy": 0.25} and ck.config["lr"] == 1e-3
    assert ck.state["pair"] == (1, "a") and ck.state[7] == [1.5, None] and ck.state["best"]["epoch"] == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert sched2.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"]
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) for k in s1)
    assert torch.equal(torch.get_rng_state(), saved_rng)  # ...and restore_rng brings it back
    # load_model rebuilds the model from the stored config
    rebuilt, _ = load_model(tmp_path / "run" / "last")
    assert not rebuilt.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))


def test_checkpoint_refuses_another_taxonomy(tmp_path: Path, paper_tax) -> None:
    model = build_model("test_convnext", paper_tax, "flat")
    save_checkpoint(tmp_path / "best", model, paper_tax, config={"model": model.config})
    with pytest.raises(CheckpointError, match="trained on another taxonomy"):
        load_checkpoint(tmp_path / "best", taxonomy=load_taxonomy("pbc"))
    with pytest.raises(CheckpointError, match="trained on another taxonomy"):
        load_model(tmp_path / "best", taxonomy=load_taxonomy("all4"))
    # same nodes in a different structure is refused too
    moved = type(paper_tax).from_paths(
        [
            "root/Normal",
            "root/Reactive",
            "root/Leukemia/Acute/ALL",
            "root/Leukemia/Acute/AML/APL",
            "root/Leukemia/Chronic/CLL",
            "root/Chronic2/CML",
        ]
    )
    with pytest.raises(CheckpointError, match="taxonomy: the checkpoint best.json"):
        load_checkpoint(tmp_path / "best", taxonomy=moved)


def test_checkpoint_errors(tmp_path: Path, paper_tax, monkeypatch: pytest.MonkeyPatch) -> None:
    import examples.leukemia.checkpoint as C

    model = build_model("test_convnext", paper_tax, "flat")
    save_checkpoint(tmp_path / "ck", model, paper_tax, epoch=0)
    weights = checkpoint_paths(tmp_path / "ck")[0]
    before = weights.read_bytes()
    with pytest.raises(CheckpointError, match="no checkpoint sidecar"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="cannot store a object without pickle"):
        save_checkpoint(tmp_path / "bad", model, paper_tax, state={"x": object()})
    assert not list(tmp_path.glob("bad*"))
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "ck", optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(CheckpointError, match="weights do not fit this model"):
        load_checkpoint(tmp_path / "ck", build_model("test_vit", paper_tax, "flat"))

    # a crash while writing leaves the previous checkpoint whole and no temporary file
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(C, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", build_model("test_convnext", paper_tax, "flat"), paper_tax, epoch=1)
    monkeypatch.undo()
    assert checkpoint_paths(tmp_path / "ck")[0] == weights and weights.read_bytes() == before
    assert load_checkpoint(tmp_path / "ck").epoch == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ck.json", weights.name]), (
        "temporary files left behind"
    )
    # tampered tensors are caught by the sidecar's hash
    weights.write_bytes(before[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")


def _stepped_flat_model(paper_tax) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model("test_convnext", paper_tax, "flat")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.criterion(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 5])).backward()
    opt.step()
    return model, opt


def _bump(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)


def test_checkpoint_failure_while_writing_the_state_keeps_the_previous_one(
    tmp_path: Path, paper_tax, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.leukemia.checkpoint as C

    model, opt = _stepped_flat_model(paper_tax)
    save_checkpoint(tmp_path / "last", model, paper_tax, epoch=0, optimizer=opt)
    first = C.model_state(model)
    files = sorted(p.name for p in tmp_path.iterdir())
    _bump(model)
    real_save_file = C.save_file

    def weights_then_full_disk(tensors, filename, metadata=None):
        if not any(k.startswith("backbone.") for k in tensors):  # the state file
            raise OSError(28, "No space left on device")
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(C, "save_file", weights_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "last", model, paper_tax, epoch=1, optimizer=opt)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == files, "the failed save must leave nothing behind"
    fresh = build_model("test_convnext", paper_tax, "flat")
    ck = load_checkpoint(tmp_path / "last", fresh, optimizer=torch.optim.SGD(fresh.parameters(), lr=0.1))
    assert ck.epoch == 0 and all(torch.equal(fresh.state_dict()[k], v) for k, v in first.items())
    # --resume's path: the run goes on from the intact checkpoint, and the next save succeeds
    save_checkpoint(tmp_path / "last", model, paper_tax, epoch=1, optimizer=opt)
    assert load_checkpoint(tmp_path / "last").epoch == 1


def test_checkpoint_saves_replace_files_and_read_the_earlier_layout(tmp_path: Path, paper_tax) -> None:
    model, opt = _stepped_flat_model(paper_tax)

    def sgd():
        return torch.optim.SGD(build_model("test_convnext", paper_tax, "flat").parameters(), lr=0.1, momentum=0.9)

    # a checkpoint of the earlier layout (version 1): NAME.safetensors + NAME.state.safetensors
    save_checkpoint(tmp_path / "last", model, paper_tax, epoch=0, optimizer=opt)
    weights, state, sidecar = checkpoint_paths(tmp_path / "last")
    weights.rename(tmp_path / "last.safetensors")
    state.rename(tmp_path / "last.state.safetensors")
    data = json.loads(sidecar.read_text())
    data["version"] = 1
    data["files"]["weights"]["file"], data["files"]["state"]["file"] = "last.safetensors", "last.state.safetensors"
    sidecar.write_text(json.dumps(data))
    assert checkpoint_paths(tmp_path / "last")[:2] == (
        tmp_path / "last.safetensors",
        tmp_path / "last.state.safetensors",
    )
    assert load_checkpoint(tmp_path / "last.safetensors", optimizer=sgd()).epoch == 0
    # a save killed before its clean-up left a hashed file; another checkpoint shares the folder
    (tmp_path / "last.0123456789ab.safetensors").write_bytes(b"orphan")
    save_checkpoint(tmp_path / "best", model, paper_tax, epoch=0)
    best = sorted(p.name for p in tmp_path.glob("best*"))
    assert len(best) == 2

    def last_files() -> list[str]:
        return sorted(p.name for p in tmp_path.glob("last*"))

    # the next save writes new files, commits the sidecar, then deletes what the old one named (and the orphan)
    _bump(model)
    save_checkpoint(tmp_path / "last", model, paper_tax, epoch=1, optimizer=opt)
    weights, state, _ = checkpoint_paths(tmp_path / "last")
    assert last_files() == sorted(["last.json", weights.name, state.name])
    assert sorted(p.name for p in tmp_path.glob("best*")) == best, "another checkpoint's files must stay"
    assert load_checkpoint(tmp_path / "last", optimizer=sgd()).epoch == 1
    # same weights: the same file, kept; no state: the state file goes
    save_checkpoint(tmp_path / "last", model, paper_tax, epoch=2)
    assert checkpoint_paths(tmp_path / "last")[0] == weights and last_files() == sorted(["last.json", weights.name])
    assert load_checkpoint(tmp_path / "last").epoch == 2 and load_checkpoint(tmp_path / "best").epoch == 0


def test_checkpoint_load_rereads_a_sidecar_replaced_meanwhile(
    tmp_path: Path, paper_tax, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.leukemia.checkpoint as C

    model, _ = _stepped_flat_model(paper_tax)
    save_checkpoint(tmp_path / "best", model, paper_tax, epoch=0)
    real_read = C._read_tensor_files
    calls = []

    def a_save_in_between(*args, **kwargs):  # a training run saves while evaluate is reading
        if not calls:
            _bump(model)
            save_checkpoint(tmp_path / "best", model, paper_tax, epoch=1)
        calls.append(1)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(C, "_read_tensor_files", a_save_in_between)
    ck = load_checkpoint(tmp_path / "best")
    assert ck.epoch == 1 and len(calls) == 2
    assert all(torch.equal(ck.weights[k], v) for k, v in C.model_state(model).items())


# ------------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    ("method", "backbone"), [("flat", "test_convnext"), ("hierarchical", "test_vit"), ("per-level", "test_resnet")]
)
def test_each_method_trains_on_real_images(method: str, backbone: str, pbc_pack: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = T.parse_args(
        [
            "--pack",
            str(pbc_pack),
            "--method",
            method,
            "--backbone",
            backbone,
            "--epochs",
            "1",
            "--output",
            str(out),
            *FAST,
        ]
    )
    res = T.run(args)
    tax = res.data.taxonomy
    assert tax.root == "root" and "band_neutrophil" in tax.nodes
    # images labelled only at an inner node (IG, NEUTROPHIL prefixes) are in the training split
    inner = ~torch.tensor(tax.is_leaf_mask)[res.data.targets["train"]]
    assert int(inner.sum()) >= 2
    assert len(res.history) == 1 and all(torch.isfinite(torch.tensor(h["train_loss"])) for h in res.history)
    for name in (
        "best.json",
        checkpoint_paths(out / "best")[0].name,
        "last.json",
        checkpoint_paths(out / "last")[0].name,
        checkpoint_paths(out / "last")[1].name,
        "log.csv",
        "splits.csv",
        "config.json",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthetic"] is False and 0 <= summary["test"]["hierarchical_f1"] <= 1
    assert summary["config"]["model"]["method"] == method
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 2 and "val_hierarchical_f1" in rows[0]
    _, ck = load_model(out / "best")
    assert ck.taxonomy == tax and ck.config["image_size"] == 32


def test_train_on_image_folder_with_bad_file(pbc_subset: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        T.main(["--data", str(pbc_subset), "--backbone", "test_convnext", "--epochs", "1", "--output", str(out), *FAST])
    manifest = (out / "splits.csv").read_text().splitlines()
    assert manifest[0] == "split,path,label"
    labels = {line.rsplit(",", 1)[1] for line in manifest[1:]}
    assert {"immature_granulocyte", "neutrophil", "myelocyte", "platelet"} <= labels
    assert not any(".DS_" in line for line in manifest), "the macOS metadata file must be skipped at scan time"
    assert json.loads((out / "config.json").read_text())["data_source"].startswith("data ")


def test_partial_labels_drop_and_taxonomy_errors(pbc_pack: Path, pbc_subset: Path, tmp_path: Path) -> None:
    args = T.parse_args(["--pack", str(pbc_pack), "--partial-labels", "drop", "--output", str(tmp_path), *FAST])
    env = T.init_distributed("cpu")
    kept = T.load_data(args, env, tmp_path)
    full = T.load_data(T.parse_args(["--pack", str(pbc_pack), "--output", str(tmp_path), *FAST]), env, tmp_path)
    leaf = torch.tensor(kept.taxonomy.is_leaf_mask)
    assert bool(leaf[kept.targets["train"]].all()) and len(kept.names["train"]) < len(full.names["train"])
    # a folder of class folders needs --taxonomy (PBC and ALL layouts imply theirs)
    plain = tmp_path / "plain"
    shutil.copytree(pbc_subset / "PBC_dataset_normal_DIB" / "basophil", plain / "basophil")
    with pytest.raises(ValueError, match="--taxonomy: required for a 'folder' layout"):
        T.load_data(T.parse_args(["--data", str(plain), "--output", str(tmp_path / "o"), *FAST]), env, tmp_path)


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    common = ["--backbone", "test_convnext", "--epochs", "2", "--synthetic-per-leaf", "4", "--seed", "3", *FAST]
    a = T.run(T.parse_args([*common, "--output", str(tmp_path / "a")]))
    T.run(T.parse_args([*common, "--output", str(tmp_path / "b"), "--stop-after", "1"]))
    assert json.loads((tmp_path / "b" / "last.json").read_text())["epoch"] == 0
    b = T.run(T.parse_args([*common, "--output", str(tmp_path / "b"), "--resume"]))
    wa, wb = (load_file(checkpoint_paths(tmp_path / run / "last")[0]) for run in ("a", "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.test == b.test and a.best["epoch"] == b.best["epoch"]

    def strip(rows):
        skip = ("seconds", "img_per_s", "first_in_process")
        return [{k: v for k, v in r.items() if not any(s in k for s in skip)} for r in rows]

    assert strip(a.history) == strip(b.history)
    # the resumed process's first epoch pays start-up too: marked, and left out of the speed
    assert [h["first_in_process"] for h in a.history] == [True, False]
    assert [h["first_in_process"] for h in b.history] == [True, True]
    assert b.img_per_s_after_first_epoch is None
    # two epochs in one process: the throughput after the first is the second epoch's, in the result and summary.json
    second = a.history[1]
    assert a.img_per_s_after_first_epoch == pytest.approx(second["train_images"] / second["train_seconds"])
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["train_img_per_s_after_first_epoch"] == pytest.approx(a.img_per_s_after_first_epoch)
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        T.run(T.parse_args([*common, "--output", str(tmp_path / "c"), "--resume"]))


def test_log_csv_survives_a_failed_write_and_a_resume_rebuilds_it(tmp_path: Path, monkeypatch) -> None:
    """log.csv was rewritten in place: a kill while writing left it empty, and --resume kept only what the
    file still held (the epochs before were lost for good). It is now replaced whole, and a resumed run
    writes it again from the checkpoint's history."""
    import csv

    common = ["--backbone", "test_convnext", "--epochs", "3", "--synthetic-per-leaf", "2", *FAST]
    out = tmp_path / "r"
    T.run(T.parse_args([*common, "--output", str(out), "--stop-after", "2"]))
    log_csv = out / "log.csv"
    kept = log_csv.read_text()
    assert [r["epoch"] for r in csv.DictReader(kept.splitlines())] == ["0", "1"]
    runlog = T.RunLog(out, True, False, history=[dict(r) for r in csv.DictReader(kept.splitlines())])

    def fail(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as mp:
        mp.setattr(csv.DictWriter, "writerows", fail)
        with pytest.raises(OSError, match="disk full"):
            runlog.write({"epoch": 2, "lr": 0.1})
    assert log_csv.read_text() == kept and not list(out.glob(".log.csv.tmp*"))
    log_csv.write_text("")  # what a kill in the middle of the old in-place write left
    T.run(T.parse_args([*common, "--output", str(out), "--resume"]))
    assert [r["epoch"] for r in csv.DictReader(log_csv.read_text().splitlines())] == ["0", "1", "2"]


@settings(examples(60), deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.floats(1e-3, 1e3, allow_nan=False)),
        min_size=0,
        max_size=6,
    )
)
def test_throughput_after_first_epoch_leaves_out_epoch_zero(epochs: list[tuple[int, float]]) -> None:
    history = [{"epoch": e, "train_images": n, "train_seconds": s} for e, (n, s) in enumerate(epochs)]
    got = T.throughput_after_first_epoch(history)
    if len(epochs) < 2:
        assert got is None
        return
    # oracle: one epoch at a time, the first one skipped
    images = seconds = 0.0
    for row in history[1:]:
        images += row["train_images"]
        seconds += row["train_seconds"]
    assert got == pytest.approx(images / seconds)
    # a first epoch 1000x slower (start-up) does not move it
    slow = [{**history[0], "train_seconds": history[0]["train_seconds"] * 1000}, *history[1:]]
    assert T.throughput_after_first_epoch(slow) == pytest.approx(got)
    # after --resume the first epoch of the new process is marked and left out too
    if len(epochs) >= 3:
        resumed = [*history[:2], {**history[2], "first_in_process": True}, *history[3:]]
        rest = [history[1], *history[3:]]
        want = sum(r["train_images"] for r in rest) / sum(r["train_seconds"] for r in rest)
        assert T.throughput_after_first_epoch(resumed) == pytest.approx(want)


def test_synthetic_defaults_leave_real_data_defaults_alone() -> None:
    args = T.parse_args([])
    assert args.synthetic and "SYNTHETIC" in args.output
    assert {k: getattr(args, k) for k in T.SYNTHETIC_DEFAULTS} == T.SYNTHETIC_DEFAULTS
    assert args.output == str(Path("runs") / "hierarchical-resnet10t-SYNTHETIC")
    real = T.parse_args(["--data", "somewhere"])
    assert not real.synthetic and real.threads is None
    real_defaults = (real.backbone, real.img_size, real.epochs, real.batch_size, real.lr)
    assert real_defaults == ("convnext_tiny", 128, 40, 256, 2e-3)
    assert T.parse_args(["--data", "x", "--backbone", "vit_small_patch16_224"]).lr == 5e-4
    # a flag given explicitly wins over the synthetic default
    assert T.parse_args(["--backbone", "test_vit", "--threads", "2", "--epochs", "3"]).backbone == "test_vit"


def test_synthetic_main_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, capsys) -> None:
    """The main job end to end on a smaller budget: it learns the generated set and says what to do next."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    with caplog.at_level(logging.INFO):
        rc = T.main(["--backbone", "test_resnet", "--epochs", "8", "--synthetic-per-leaf", "30", "--lr", "5e-3"])
    assert rc == 0 and torch.get_num_threads() == threads, "the run must give the process its thread count back"
    out = tmp_path / "runs" / "hierarchical-test_resnet-SYNTHETIC"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthetic"] is True and "SYNTHETIC" in summary["WARNING"]
    assert summary["config"]["threads"] == 1 and summary["config"]["image_size"] == 32
    assert (out / "SYNTHETIC_images").is_dir() and any((out / "tb").iterdir())
    assert "SYNTHETIC" in caplog.text and "[SYNTHETIC] test" in caplog.text
    text = capsys.readouterr().out
    assert "SYNTHETIC run finished" in text and f"Outputs in {Path('runs') / out.name}/" in text
    assert "--data PATH/TO/PBC_dataset_normal_DIB" in text and "not how well anything classifies blood cells" in text
    # partial labels are in the test split, and the tiny ResNet learns every level of the cartoons
    leaf = re.search(r"leaf accuracy \((\d+) images labelled at a leaf\)\s+([\d.]+)", text)
    partial = re.search(r"partial labels: prediction within the labelled node \((\d+) images\)\s+([\d.]+)", text)
    assert leaf and partial and int(partial.group(1)) > 0
    assert float(leaf.group(2)) >= 0.9, text
    assert summary["test"]["level_accuracy/1"] == 1.0


def test_module_entry_point_dispatches(capsys) -> None:
    from examples.leukemia.__main__ import main

    assert main(["--help"]) == 0 and "Commands" in capsys.readouterr().out
    assert main(["nope"]) == 2  # status 2 and an 'error: ...' line, like every other user error
    assert capsys.readouterr().err.startswith("error: unknown command 'nope'; expected one of train,")
    with pytest.raises(SystemExit):  # argparse's --help of the chosen script
        main(["evaluate", "--help"])
    assert "python -m examples.leukemia.evaluate" in capsys.readouterr().out


def test_pack_size_mismatch_is_an_error(pbc_pack: Path, tmp_path: Path) -> None:
    args = T.parse_args(["--pack", str(pbc_pack), "--output", str(tmp_path), "--quiet", "--img-size", "64"])
    with pytest.raises(ValueError, match="--img-size: the pack .* holds 32 px images, not 64"):
        T.load_data(args, T.init_distributed("cpu"), tmp_path)


# ------------------------------------------------------------------- model selection, backbone options
def test_best_metric_is_checked_before_training(paper_tax, capsys) -> None:
    for bad, said in (
        ("acc", r"error: --best-metric: expected one of leaf_accuracy.*got 'acc'"),
        ("level_accuracy/x", r"error: .*got 'level_accuracy/x'"),
    ):
        with pytest.raises(SystemExit) as err:
            T.parse_args(["--best-metric", bad])
        assert err.value.code == 2 and re.search(said, capsys.readouterr().err)
    assert T.parse_args([]).best_metric == "leaf_accuracy"
    assert T.parse_args(["--best-metric", "level_accuracy/2"]).best_metric == "level_accuracy/2"
    inner = torch.tensor([paper_tax.index("Leukemia"), paper_tax.index("Acute")])
    leafy = torch.tensor([paper_tax.index("Leukemia"), paper_tax.index("ALL")])
    # no validation image at a leaf: leaf accuracy would be NaN every epoch, so select by hF1 instead
    assert T.resolve_best_metric("leaf_accuracy", paper_tax, inner) == "hierarchical_f1"
    assert T.resolve_best_metric("leaf_accuracy", paper_tax, leafy) == "leaf_accuracy"
    depth = paper_tax.max_depth
    assert T.resolve_best_metric(f"level_accuracy/{depth}", paper_tax, leafy) == f"level_accuracy/{depth}"
    with pytest.raises(ValueError, match=f"needs a tree with a level {depth + 1}"):
        T.resolve_best_metric(f"level_accuracy/{depth + 1}", paper_tax, leafy)


def test_selection_score_direction() -> None:
    val = {"leaf_accuracy": 0.8, "mistake_severity": 2.5, "nll": 0.4, "hierarchical_f1": float("nan")}
    assert T.selection_score(val, "leaf_accuracy", 9.0) == 0.8
    # lower is better: a smaller severity or NLL must score higher
    assert T.selection_score(val, "mistake_severity", 9.0) == -2.5
    assert T.selection_score({**val, "mistake_severity": 2.0}, "mistake_severity", 9.0) > -2.5
    assert T.selection_score(val, "nll", 9.0) == -0.4
    assert T.selection_score(val, "hierarchical_f1", 9.0) == float("-inf")
    assert T.selection_score({}, "leaf_accuracy", 1.5) == -1.5  # no validation split: the training loss


def test_validation_leaf_accuracy_matches_a_per_sample_oracle(paper_tax) -> None:
    torch.manual_seed(0)
    model = build_model("test_convnext", paper_tax, "hierarchical", img_size=32).eval()
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    targets = torch.randint(0, paper_tax.num_nodes, (24,))
    env = T.init_distributed("cpu")
    kw = {"rule": "top_down", "threshold": 0.5, "env": env, "batch_size": 7, "amp": False, "channels_last": False}
    got = T.evaluate(model, images, targets, paper_tax, **kw)
    probs = T.predict(model, images, batch_size=7, device=env.device, amp=False, channels_last=False, env=env)
    preds = T.decode(probs, paper_tax, "top_down").tolist()
    hits = n = 0
    for t, p in zip(targets.tolist(), preds):
        if paper_tax.is_leaf(paper_tax.nodes[t]):
            n += 1
            hits += int(t == p)
    assert n > 0 and got["leaf_accuracy"] == pytest.approx(hits / n)
    only_inner = torch.full((5,), paper_tax.index("Acute"))
    assert math.isnan(T.evaluate(model, images[:5], only_inner, paper_tax, **kw)["leaf_accuracy"])


def test_backbone_kwargs_reach_timm_and_the_checkpoint(tmp_path: Path, capsys) -> None:
    common = ["--backbone", "test_vit", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    res = T.run(T.parse_args([*common, "--backbone-kwargs", '{"patch_size": 8}', "--output", str(tmp_path / "a")]))
    assert tuple(res.model.backbone.patch_embed.grid_size) == (4, 4)  # 32 px / 8
    model, ck = load_model(tmp_path / "a" / "best")
    assert ck.config["model"]["backbone_kwargs"] == {"patch_size": 8}
    assert tuple(model.backbone.patch_embed.grid_size) == (4, 4)
    for bad, why in (("[8]", "got a JSON list"), ("{patch_size: 8}", "Expecting property name")):
        with pytest.raises(SystemExit):
            T.parse_args([*common, "--backbone-kwargs", bad])
        assert why in capsys.readouterr().err


def test_loss_kwargs_reach_the_loss_and_the_checkpoint(tmp_path: Path) -> None:
    common = ["--backbone", "test_convnext", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    flat_hxe = [*common, "--method", "flat", "--loss", "hxe"]
    res = T.run(T.parse_args([*flat_hxe, "--loss-kwargs", '{"alpha": 0.5}', "--output", str(tmp_path / "a")]))
    assert res.model.criterion.options == {"alpha": 0.5}
    model, ck = load_model(tmp_path / "a" / "best")
    assert ck.config["loss_kwargs"] == {"alpha": 0.5} and model.criterion.options == {"alpha": 0.5}
    # refused before any data is read, with the reason and the fix
    for extra, why in (
        ('{"alpha": -1}', "--loss-kwargs: alpha: expected a finite float >= 0"),
        ('{"beta": 5}', "--loss-kwargs: create_loss('hxe'): unknown option(s) 'beta' ('beta' belongs to 'soft_label')"),
        ('{"weight": [1, 2]}', "'weight' is set by the training loop itself; use --balance"),
    ):
        with pytest.raises(ValueError, match=re.escape(why)):
            T.run(T.parse_args([*flat_hxe, "--loss-kwargs", extra, "--output", str(tmp_path / "b")]))
    assert not (tmp_path / "b").exists()


def test_backbone_options_and_tags_are_checked_before_any_data_is_read(tmp_path: Path) -> None:
    # these used to pass the door and fail with a raw traceback once the data had been decoded
    common = ["--backbone", "test_convnext", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    out = tmp_path / "b"
    for extra, why in (
        (["--backbone-kwargs", '{"num_classes": 5}'], "'num_classes' is set by the example"),
        (["--backbone-kwargs", '{"pretrained": true}'], "'pretrained' is set by the example; use --pretrained"),
        (["--backbone-kwargs", '{"img_size": 64}'], "'img_size' is set by the example; use --img-size"),
        (["--backbone-kwargs", '{"drop_path": 0.1}'], "timm's 'test_convnext' refused the option(s)"),
        (["--backbone", "dla34", "--drop-path", "0.1"], "--drop-path: timm's 'dla34' refused the option(s)"),
        (["--backbone", "test_convnext.bogus_tag"], "--backbone: Invalid pretrained tag (bogus_tag)"),
        (
            ["--drop-path", "0.1", "--backbone-kwargs", '{"drop_path_rate": 0.2}'],
            "--drop-path 0.1 and --backbone-kwargs drop_path_rate 0.2 both set",
        ),
    ):
        with pytest.raises(ValueError, match=re.escape(why)):
            T.run(T.parse_args([*common, *extra, "--output", str(out)]))
        assert not out.exists()
    ok = T.run(T.parse_args([*common, "--backbone-kwargs", '{"drop_path_rate": 0.1}', "--output", str(out)]))
    assert ok.config["model"]["backbone_kwargs"] == {"drop_path_rate": 0.1}


def test_synthetic_images_are_remade_when_their_flags_change(tmp_path: Path) -> None:
    # one run folder, run after run (--overwrite keeps the folder's SYNTHETIC_images: they are what is checked)
    common = ["--backbone", "test_convnext", "--epochs", "1", "--output", str(tmp_path / "run"), "--overwrite", *FAST]
    a = T.run(T.parse_args([*common, "--synthetic-per-leaf", "3"]))
    same = T.run(T.parse_args([*common, "--synthetic-per-leaf", "3"]))
    assert same.data.names == a.data.names
    more = T.run(T.parse_args([*common, "--synthetic-per-leaf", "5"]))
    assert sum(len(v) for v in more.data.names.values()) > sum(len(v) for v in a.data.names.values())
    pbc = T.run(T.parse_args([*common, "--synthetic-per-leaf", "2", "--taxonomy", "pbc"]))
    assert pbc.data.taxonomy.root == "root" and "band_neutrophil" in pbc.data.taxonomy.nodes


def test_config_keeps_a_bundled_taxonomy_name_and_makes_paths_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()  # a folder named like the bundled taxonomy must not be taken for it
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"tree": {"root": {"a": ["a1", "a2"], "b": None}}}))

    def config_taxonomy(taxonomy: str, output: str) -> str:
        args = ["--backbone", "test_convnext", "--epochs", "1", "--synthetic-per-leaf", "2", "--taxonomy", taxonomy]
        return T.run(T.parse_args([*args, "--output", output, *FAST])).config["taxonomy"]

    assert config_taxonomy("paper", "run") == "paper"
    assert config_taxonomy("tree.json", "run2") == str(tree.resolve())


def test_balance_weights_the_loss_from_the_training_split_and_travels_with_the_checkpoint(tmp_path: Path) -> None:
    """--balance: hiercls.losses.balanced_weight of the run's training targets, per decision of its loss,
    kept in the config so that a loaded checkpoint carries the same loss; refused for a loss it does not fit."""
    from examples.leukemia.checkpoint import load_model
    from hiercls.losses import balanced_weight

    base = ["--backbone", "test_resnet", "--epochs", "1", "--synthetic-per-leaf", "4", *FAST]
    res = T.run(T.parse_args([*base, "--balance", "--output", str(tmp_path / "b")]))
    tax, train = res.data.taxonomy, res.data.targets["train"]
    weight = res.config["model"]["loss_kwargs"]["weight"]
    assert res.config["balance"] == 1.0 and res.config["model"]["loss"] == "level"  # the hierarchical method
    assert weight == balanced_weight(tax, train, within="levels").tolist()
    assert len(set(weight)) > 1  # the paper's taxonomy is ragged: the levels' options are not equal
    model, _ = load_model(tmp_path / "b" / "best")
    logits = torch.randn(5, tax.num_nodes, generator=torch.Generator().manual_seed(0))
    target = train[:5].cpu()
    assert model.criterion(logits, target).item() == pytest.approx(res.model.criterion(logits, target).item())
    # the same run without --balance trains another loss
    plain = build_model("test_resnet", tax, "hierarchical").criterion
    assert plain(logits, target).item() != pytest.approx(model.criterion(logits, target).item())
    flat = T.parse_args([*base, "--method", "flat", "--balance", "0.5"])
    assert T.balance_weight(flat, tax, train) == balanced_weight(tax, train, within="leaves", power=0.5).tolist()
    assert T.balance_weight(T.parse_args(base), tax, train) is None
    with pytest.raises(ValueError, match="--balance: weights the decisions of the conditional, level, flat losses"):
        T.check_model_args(T.parse_args([*base, "--head", "sigmoid", "--balance"]))


def test_a_resumed_balanced_run_keeps_its_own_loss_weights(tmp_path: Path, monkeypatch, caplog) -> None:
    """The weights sit in a non-persistent buffer and were recomputed at every start: a library whose
    balanced_weight changed between the start and the --resume trained the later epochs under other
    weights, with nothing said (a review reproduced it across this session's partial-label change)."""
    common = ["--backbone", "test_resnet", "--epochs", "2", "--synthetic-per-leaf", "4", "--balance", *FAST]
    out = ["--output", str(tmp_path / "b")]
    first = T.run(T.parse_args([*common, *out, "--stop-after", "1"]))
    started = first.config["model"]["loss_kwargs"]["weight"]
    monkeypatch.setattr(T, "balance_weight", lambda *a, **k: [w * 2 for w in started])  # "another version"
    with caplog.at_level(logging.WARNING):
        resumed = T.run(T.parse_args([*common, *out, "--resume"]))
    assert resumed.config["model"]["loss_kwargs"]["weight"] == started
    assert torch.allclose(resumed.model.criterion.weight.cpu(), torch.tensor(started, dtype=torch.float32))
    assert "this version computes other loss weights" in caplog.text


@pytest.mark.parametrize("bad", ["-1", "nan", "inf"])
def test_balance_refuses_a_bad_power(bad: str, capsys) -> None:
    with pytest.raises(SystemExit):
        T.parse_args(["--balance", bad])
    assert "--balance: expected a power >= 0" in capsys.readouterr().err


def test_augment_chunk_reaches_the_training_batches_and_the_config(tmp_path: Path, caplog) -> None:
    """--augment-chunk K: the training batches are prepared K at a time (same batches, another augmentation
    stream), the config keeps K, and resuming with another K says the result will differ."""
    base = ["--backbone", "test_resnet", "--epochs", "1", "--synthetic-per-leaf", "4", "--batch-size", "4", *FAST]
    res = T.run(T.parse_args([*base, "--augment-chunk", "3", "--output", str(tmp_path / "k3")]))
    assert res.config["augment_chunk"] == 3
    assert json.loads((tmp_path / "k3" / "config.json").read_text())["augment_chunk"] == 3
    seen = []
    real = T._batches

    def spy(*args, **kwargs):
        batches = real(*args, **kwargs)
        seen.append(batches.chunk)
        return batches

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "_batches", spy)
        T.run(T.parse_args([*base, "--augment-chunk", "2", "--output", str(tmp_path / "k2"), "--epochs", "2"]))
        caplog.clear()
        T.run(
            T.parse_args([*base, "--augment-chunk", "5", "--output", str(tmp_path / "k2"), "--epochs", "2", "--resume"])
        )
    assert seen[0] == 2 and seen[-1] == 5
    assert "augment_chunk" in caplog.text and "the result will differ" in caplog.text
    # without augmentation the chunk changes no batch: nothing to warn about
    T.run(T.parse_args([*base, "--no-augment", "--augment-chunk", "2", "--output", str(tmp_path / "na")]))
    caplog.clear()
    T.run(T.parse_args([*base, "--no-augment", "--augment-chunk", "4", "--output", str(tmp_path / "na"), "--resume"]))
    assert "settings differ" not in caplog.text


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_augment_chunk_refuses_a_bad_value(bad: str, capsys) -> None:
    with pytest.raises(SystemExit):
        T.parse_args(["--augment-chunk", bad])
    assert "--augment-chunk: expected a whole number >= 1" in capsys.readouterr().err


def test_a_run_folder_is_never_mixed_with_another_run(tmp_path: Path, monkeypatch) -> None:
    """A second run into a folder that holds one is refused; --overwrite replaces it whole; the default
    folder steps aside (runs/x-2); --resume on other data is refused before anything is written."""
    common = ["--backbone", "test_convnext", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    out = tmp_path / "run"
    T.run(T.parse_args([*common, "--output", str(out)]))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(FileExistsError, match=r"already holds a run, last saved after epoch 1\. Pass --resume"):
        T.run(T.parse_args([*common, "--lr", "1e-3", "--no-last", "--output", str(out)]))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    # --overwrite: the old last.* goes too, so a later --resume cannot continue the old run
    (out / "my_notes.txt").write_text("mine")
    (out / "last.backup").mkdir()  # a user's own copy: not a run file
    T.run(T.parse_args([*common, "--lr", "1e-3", "--no-last", "--overwrite", "--output", str(out)]))
    assert not list(out.glob("last.*.safetensors")) and not (out / "last.json").exists()
    assert load_checkpoint(out / "best").config["lr"] == 1e-3
    assert (out / "my_notes.txt").is_file() and (out / "last.backup").is_dir()
    assert not list(out.glob(".overwritten-run-*"))
    with pytest.raises(FileNotFoundError, match=r"saved without its last checkpoint \(--no-last\).*--overwrite"):
        T.run(T.parse_args([*common, "--resume", "--output", str(out)]))
    # an --overwrite that cannot start puts the earlier run back as it was
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="No usable images"):
        (tmp_path / "empty").mkdir()
        T.run(
            T.parse_args(
                [*common, "--data", str(tmp_path / "empty"), "--taxonomy", "paper", "--overwrite", "--output", str(out)]
            )
        )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == kept
    assert not list(out.glob(".overwritten-run-*"))
    with pytest.raises(ValueError, match="lies in .*, the run --overwrite replaces"):
        T.run(T.parse_args([*common, "--init-checkpoint", str(out / "best"), "--overwrite", "--output", str(out)]))
    T.run(T.parse_args([*common, "--overwrite", "--output", str(out)]))
    with pytest.raises(
        ValueError,
        match=r"trains backbone 'test_convnext', not 'test_vit'\. Resume it with --method hierarchical --backbone test_convnext",
    ):
        T.run(T.parse_args([*common, "--backbone", "test_vit", "--resume", "--output", str(out)]))
    # resuming on other data: refused, and splits.csv is left as it was
    T.run(T.parse_args([*common, "--overwrite", "--output", str(out)]))
    splits = (out / "splits.csv").read_bytes()
    with pytest.raises(
        ValueError, match=r"--resume: the run in .* was trained on other data \(limit: 0 in the run, 5 now\)"
    ):
        T.run(T.parse_args([*common, "--limit", "5", "--epochs", "2", "--resume", "--output", str(out)]))
    assert (out / "splits.csv").read_bytes() == splits
    # the default folder: a second run lands next to the first
    monkeypatch.chdir(tmp_path)
    first = T.parse_args([*common])
    T.run(first)
    second = T.parse_args([*common])
    assert Path(second.output) == Path(first.output + "-2")
    assert Path(T.parse_args([*common, "--resume"]).output) == Path(first.output)  # the one run there is
    T.run(second)
    with pytest.raises(SystemExit):  # two runs could be meant: --output must say which
        T.parse_args([*common, "--resume"])
    with pytest.raises(SystemExit):
        T.parse_args([*common, "--resume", "--overwrite"])


def test_checkpoint_files_get_the_permissions_of_the_other_files(tmp_path: Path, paper_tax) -> None:
    """mkstemp's owner-only mode used to stay on the checkpoint files: a teammate could not load them."""
    import os

    model = build_model("test_convnext", paper_tax, "hierarchical")
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "ck", model, paper_tax, config={"model": model.config})
    finally:
        os.umask(old)
    files = list(tmp_path.glob("ck.*"))
    assert files and all(f.stat().st_mode & 0o777 == 0o644 for f in files), [
        (f.name, oct(f.stat().st_mode)) for f in files
    ]


def test_an_empty_validation_split_is_said_at_the_start_and_in_the_summary(tmp_path: Path, caplog) -> None:
    common = ["--backbone", "test_convnext", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.train"):
        res = T.run(T.parse_args([*common, "--limit", "4", "--output", str(tmp_path / "r")]))
    assert not len(res.data.names["val"])
    assert "the validation split is empty" in caplog.text
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["best_val"]["metric"] == "minus_train_loss" and summary["best_val"]["metrics"] == {}


def test_a_run_stopped_early_does_not_say_it_finished(tmp_path: Path) -> None:
    common = ["--backbone", "test_convnext", "--epochs", "2", "--synthetic-per-leaf", "2", *FAST]
    res = T.run(T.parse_args([*common, "--stop-after", "1", "--output", str(tmp_path / "r")]))
    text = T.format_summary(res, None, 1.0)
    assert "run stopped after epoch 1 of 2 (--stop-after)" in text and "run finished" not in text


def test_the_summary_says_how_many_images_each_depth_is_scored_on(tmp_path: Path) -> None:
    """The paper tree is ragged (Normal at depth 1, APL at depth 4): the deeper accuracies rest on fewer
    test images, which the summary's row did not say."""
    common = ["--backbone", "test_convnext", "--epochs", "1", "--synthetic-per-leaf", "4", *FAST]
    res = T.run(T.parse_args([*common, "--output", str(tmp_path / "r")]))
    report = T.final_test_metrics(res)
    text = T.format_summary(res, report, 1.0)
    tax, target = res.data.taxonomy, res.data.targets["test"].numpy()
    reach = [int(sum(tax.depth(tax.nodes[t]) >= d for t in target)) for d in range(1, tax.max_depth + 1)]
    assert reach[0] == len(target) > reach[-1] > 0  # ragged: fewer images reach the deepest level
    assert f"accuracy at depth 1 / 2 / 3 / 4 (of {' / '.join(map(str, reach))} images)" in text, text


def test_a_run_started_from_an_earlier_runs_weights_is_told_which_images_that_run_trained_on(
    tmp_path: Path, caplog
) -> None:
    """--resume after the data folder changed is refused, and the README's route is --init-checkpoint
    RUN/last: the split was drawn anew, and images the first run trained on landed in the second's val and
    test with nothing said (helper-111). Now they are counted and named; the same data, unchanged, is quiet."""
    from examples.leukemia.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "images", "paper", n_per_leaf=6, size=32)
    common = ["--data", str(data), "--taxonomy", "paper", "--backbone", "test_resnet", "--epochs", "1", *FAST]
    T.run(T.parse_args([*common, "--output", str(tmp_path / "a"), "--device", "cpu"]))
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.train"):
        T.run(T.parse_args([*common, "--output", str(tmp_path / "same"), "--init-checkpoint", str(tmp_path / "a")]))
    assert "training images of the run it comes from" not in caplog.text
    for extra in sorted(data.rglob("*.jpg"))[::5]:  # the folder changes: a few images gone
        extra.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.train"):
        res = T.run(
            T.parse_args([*common, "--output", str(tmp_path / "b"), "--init-checkpoint", str(tmp_path / "a" / "last")])
        )
    first = {x.path for x in read_manifest(tmp_path / "a" / "splits.csv")["train"]}
    moved = {s: sum(n in first for n in res.data.names[s]) for s in ("val", "test")}
    assert sum(moved.values()) > 0  # the new split did take some of the first run's training images
    said = " and ".join(f"{n} in {s}" for s, n in moved.items() if n)
    assert f"{said} of this run's images were training images of the run it comes from" in caplog.text, caplog.text
    assert T.init_leaks(tmp_path / "a" / "last", res.data) == {s: n for s, n in moved.items() if n}
    # recorded with the run, and repeated by evaluate beside the scores (a run read out later, or by someone
    # who never saw train's log); the clean run records nothing
    from examples.leukemia.evaluate import main as evaluate

    assert json.loads((tmp_path / "b" / "best.json").read_text())["config"]["init_leaks"] == res.config["init_leaks"]
    assert "init_leaks" not in json.loads((tmp_path / "same" / "best.json").read_text())["config"]
    split = "test" if moved["test"] else "val"
    out = evaluate([str(tmp_path / "b"), "--split", split, "--no-figures", "--out", str(tmp_path / "e")])
    assert [r.get("init_leaks") for r in out["rows"]] == [moved[split]]
    # another split of the images is not the one train counted on: nothing is repeated (helper-116)
    other = [str(tmp_path / "b"), "--split", split, "--split-seed", "7", "--no-figures", "--out", str(tmp_path / "e2")]
    assert [r.get("init_leaks") for r in evaluate(other)["rows"]] == [None]
    assert f"{moved[split]} of these images were training images" in (tmp_path / "e" / "results.md").read_text()


def test_a_label_with_too_few_images_for_the_test_split_is_named(tmp_path: Path, caplog) -> None:
    """A class of 1 or 2 images gets no test image (the split is stratified, about 80/10/10); the run's
    test table then said nothing about it, and nothing said so (helper-111)."""
    from PIL import Image

    data = tmp_path / "cells"
    for node, n in (("Normal", 10), ("Reactive", 10), ("ALL", 1), ("CLL", 2)):
        (data / node).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (32, 32), (20 * i, 90, len(node) * 20)).save(data / node / f"{i}.png")
    common = ["--data", str(data), "--taxonomy", "paper", "--backbone", "test_resnet", "--epochs", "1", *FAST]
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.train"):
        res = T.run(T.parse_args([*common, "--output", str(tmp_path / "r")]))
    assert T.untested_labels(res.data) == {"ALL": 1, "CLL": 2}
    assert "2 label(s) have no test image, too few images to reach every split: 'ALL' (1 image), 'CLL' (2 images)" in (
        caplog.text
    )
    assert "'Normal'" not in caplog.text.split("have no test image")[1].split("\n")[0]


class _Killed(BaseException):
    """A kill between two checkpoint writes (BaseException: nothing in the run catches it)."""


def _scores(monkeypatch, values):
    """Make the validation score of successive epochs ``values`` (then the last one again)."""
    it = iter(values)
    last = [values[-1]]

    def score(*args, **kwargs):
        last[0] = next(it, last[0])
        return last[0]

    monkeypatch.setattr(T, "selection_score", score)


def _kill_at(monkeypatch, name: str, epoch: int):
    real = T.save_checkpoint

    def save(path, *args, **kwargs):
        if Path(path).name == name and kwargs.get("epoch") == epoch:
            raise _Killed
        return real(path, *args, **kwargs)

    monkeypatch.setattr(T, "save_checkpoint", save)


def _tested_weights_are_the_best_json(out: Path, res) -> None:
    on_disk = load_file(checkpoint_paths(out / "best")[0])
    in_model = {k: v.cpu() for k, v in res.model.state_dict().items() if not k.startswith("criterion.")}
    assert on_disk.keys() == in_model.keys() and all(torch.equal(on_disk[k], in_model[k]) for k in on_disk)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_val"]["epoch"] == json.loads((out / "best.json").read_text())["epoch"]


def test_a_kill_between_best_and_last_keeps_the_best_record_and_weights_together(tmp_path: Path, monkeypatch) -> None:
    """best.json is written before last: a kill between them left a best checkpoint of an epoch that last's
    record did not know. If the replay of that epoch scored lower (a GPU is not bit-exact), the run tested
    best.json's weights but named last's older best epoch in summary.json."""
    common = ["--backbone", "test_convnext", "--epochs", "3", "--synthetic-per-leaf", "2", "--checkpoint-every", "2"]
    out = tmp_path / "r"
    with monkeypatch.context() as mp:
        _scores(mp, [1.0, 2.0, 3.0])
        _kill_at(mp, "last", 2)
        with pytest.raises(_Killed):
            T.run(T.parse_args([*common, *FAST, "--output", str(out)]))
    assert json.loads((out / "best.json").read_text())["epoch"] == 2
    assert json.loads((out / "last.json").read_text())["epoch"] == 1
    with monkeypatch.context() as mp:
        _scores(mp, [0.5])  # the replayed epoch scores lower than it did
        res = T.run(T.parse_args([*common, *FAST, "--output", str(out), "--resume"]))
    assert res.best["epoch"] == 2 and res.best["value"] == 3.0
    _tested_weights_are_the_best_json(out, res)
    # the same kill, and a replay that scores higher: its weights are new, so best.json is written again
    # (its epoch number was already on disk, which kept the first run's record and weights there)
    with monkeypatch.context() as mp:
        _scores(mp, [1.0, 2.0, 3.0])
        _kill_at(mp, "last", 2)
        with pytest.raises(_Killed):
            T.run(T.parse_args([*common, *FAST, "--output", str(out), "--overwrite"]))
    with monkeypatch.context() as mp:
        _scores(mp, [5.0])
        res = T.run(T.parse_args([*common, *FAST, "--output", str(out), "--resume"]))
    assert res.best["epoch"] == 2 and res.best["value"] == 5.0
    assert json.loads((out / "best.json").read_text())["state"]["best"]["value"] == 5.0
    _tested_weights_are_the_best_json(out, res)


def test_a_kill_between_last_and_best_at_the_end_loses_no_best_weights(tmp_path: Path, monkeypatch) -> None:
    """With --checkpoint-every 0 'last' was written before 'best' at the end: a kill between them left the
    previous process's best.json, and a --resume tested those weights under the newer best epoch's name."""
    common = ["--backbone", "test_convnext", "--epochs", "3", "--synthetic-per-leaf", "2", "--checkpoint-every", "0"]
    out = tmp_path / "r"
    with monkeypatch.context() as mp:
        _scores(mp, [1.0, 2.0, 3.0])
        T.run(T.parse_args([*common, *FAST, "--output", str(out), "--stop-after", "2"]))
        assert json.loads((out / "best.json").read_text())["epoch"] == 1
        _kill_at(mp, "best", 2)
        with pytest.raises(_Killed):
            T.run(T.parse_args([*common, *FAST, "--output", str(out), "--resume"]))
    with monkeypatch.context() as mp:
        _scores(mp, [3.0])  # the replay (if any) scores as the first time
        res = T.run(T.parse_args([*common, *FAST, "--output", str(out), "--resume"]))
    assert res.best["epoch"] == 2
    _tested_weights_are_the_best_json(out, res)
    # epoch 2 was the last one trained: its weights are last's
    final = load_file(checkpoint_paths(out / "last")[0])
    assert all(torch.equal(final[k], v.cpu()) for k, v in res.model.state_dict().items() if k in final)


def test_resumed_best_adopts_the_record_of_the_weights_on_disk(tmp_path: Path, caplog) -> None:
    from types import SimpleNamespace

    last = {"epoch": 3, "value": 0.8, "metric": "hierarchical_f1", "metrics": {"hierarchical_f1": 0.8}}
    same = SimpleNamespace(epoch=3, state={"best": last}, metrics=last["metrics"])
    assert T.resumed_best(last, same, "hierarchical_f1", tmp_path) is last
    newer = {"epoch": 5, "value": 0.9, "metric": "hierarchical_f1", "metrics": {"hierarchical_f1": 0.9}}
    assert T.resumed_best(last, SimpleNamespace(epoch=5, state={"best": newer}, metrics={}), "x", tmp_path) == newer
    # a best.json saved without its record: scored from its metrics (lower-is-better metrics negated)
    bare = SimpleNamespace(epoch=5, state={}, metrics={"mistake_severity": 0.25})
    got = T.resumed_best(last, bare, "mistake_severity", tmp_path)
    assert got["epoch"] == 5 and got["value"] == -0.25 and got["metrics"] == {"mistake_severity": 0.25}
    # ... or, without validation metrics, by nothing: the first replayed epoch replaces it
    assert T.resumed_best(last, SimpleNamespace(epoch=5, state={}, metrics={}), "x", tmp_path)["value"] == -math.inf
    with caplog.at_level(logging.WARNING):
        older = T.resumed_best(
            last, SimpleNamespace(epoch=1, state={}, metrics={"hierarchical_f1": 0.5}), "hierarchical_f1", tmp_path
        )
    assert older["epoch"] == 1 and older["value"] == 0.5
    assert "holds epoch 2: the run was stopped before the newer best weights were written" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        gone = T.resumed_best(last, None, "hierarchical_f1", tmp_path)
    assert gone["epoch"] == -1 and gone["value"] == -math.inf and "is missing, so its weights are lost" in caplog.text
    fresh = {"epoch": -1, "value": -math.inf, "metrics": {}}
    assert T.resumed_best(fresh, None, "hierarchical_f1", tmp_path) is fresh


def test_init_checkpoint_names_what_it_leaves_as_initialised(tmp_path: Path, paper_tax, caplog) -> None:
    """A file of another architecture shares many key names: the rest of the backbone stayed random with
    only an INFO count, and a checkpoint of another backbone was loaded without a word (a review)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    trained = build_model("test_convnext", paper_tax, "hierarchical")
    state = {k: v.contiguous() for k, v in trained.backbone.state_dict().items()}
    dropped = sorted(k for k in state if k.startswith("stages.1."))
    assert dropped
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "part.safetensors")
    with caplog.at_level(logging.WARNING):
        build_model("test_convnext", paper_tax, "flat", init_checkpoint=tmp_path / "part.safetensors")
    assert f"{len(dropped)} of the model's {len(state)} backbone tensor(s) are not in the file" in caplog.text
    assert "another architecture" not in caplog.text  # a part only
    caplog.clear()
    save_checkpoint(tmp_path / "ck", trained, paper_tax, config={"model": trained.config})
    with caplog.at_level(logging.WARNING):
        build_model("test_convnext2", paper_tax, "hierarchical", init_checkpoint=tmp_path / "ck")
    assert "it was trained with the backbone 'test_convnext', this model is 'test_convnext2'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the same backbone, whole: nothing to say
        build_model("test_convnext", paper_tax, "hierarchical", init_checkpoint=tmp_path / "ck")
    assert "init_checkpoint" not in caplog.text


def test_an_unreadable_init_checkpoint_is_named_before_the_data_is_read(tmp_path: Path, paper_tax, monkeypatch) -> None:
    """A text file named .pth failed with a 44-line KeyError traceback after the scan; a pickled whole model
    got torch's advice to load it with weights_only=False (which runs code from the file)."""
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    whole = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), whole)
    with pytest.raises(ValueError, match=r"notes.pth is not a readable torch.save file.*state_dict"):
        build_model("test_convnext", paper_tax, "flat", init_checkpoint=text)
    with pytest.raises(ValueError, match="holds pickled Python objects .* never unpickled") as err:
        build_model("test_convnext", paper_tax, "flat", init_checkpoint=whole)
    assert "weights_only=False" not in str(err.value).split("From a file you trust")[0]

    def no_scan(*args, **kwargs):
        raise AssertionError("the data was read before the bad --init-checkpoint was named")

    monkeypatch.setattr(T, "load_data", no_scan)
    args = T.parse_args(["--init-checkpoint", str(text), "--output", str(tmp_path / "run"), *FAST])
    with pytest.raises(ValueError, match="not a readable torch.save file"):
        T.run(args)


def test_an_unfit_init_checkpoint_is_refused_before_the_data_is_read(tmp_path: Path, paper_tax, monkeypatch) -> None:
    """Weights of another architecture, or a per-level checkpoint for a shared backbone, were refused only
    after the scan and split (minutes on a real folder, and a splits.csv left in the new run folder)."""
    from safetensors.torch import save_file

    from examples.leukemia.models import check_init_source, create_backbone

    vit = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in create_backbone("test_vit").state_dict().items()}, vit)
    per_level = tmp_path / "pl"
    save_checkpoint(per_level, build_model("test_convnext", paper_tax, "per-level"), paper_tax)

    def no_scan(*args, **kwargs):
        raise AssertionError("the data was read before the unfit --init-checkpoint was refused")

    monkeypatch.setattr(T, "load_data", no_scan)
    for source, method, refusal in (
        (vit, "flat", "no tensor in .*vit.safetensors matches the model"),
        (per_level, "hierarchical", "holds a per-level model's 4 backbones .* one shared backbone"),
    ):
        argv = ["--init-checkpoint", str(source), "--backbone", "test_convnext", "--method", method]
        args = T.parse_args([*argv, "--output", str(tmp_path / f"run-{method}"), *FAST])
        with pytest.raises(ValueError, match=refusal):
            T.run(args)
        assert not (tmp_path / f"run-{method}" / "splits.csv").exists()
    # what fits passes the door: the same architecture, a ViT at another size (its position embedding is
    # interpolated), a per-level checkpoint into a per-level model
    check_init_source(vit, "test_vit", "flat", img_size=64)
    check_init_source(per_level, "test_convnext", "per-level")
    with pytest.raises(ValueError, match="no tensor .* matches"):  # the door agrees with the load
        build_model("test_convnext", paper_tax, "flat", init_checkpoint=vit)


def test_a_run_file_that_is_not_a_checkpoint_names_the_run_to_pass(tmp_path: Path, paper_tax) -> None:
    """A run's other files given as a checkpoint: a CSV crashed --init-checkpoint with torch's IndexError
    traceback, the optimizer state was read as weights ("no tensor matches ... t0, t1"), config.json and a
    binary *.json got "not a sidecar (format=None)" or a UnicodeDecodeError, none naming what to pass."""
    from examples.leukemia.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    model = build_model("test_convnext", paper_tax, "flat")
    state = {"optimizer": {"m": torch.zeros(3)}}
    save_checkpoint(run / "last", model, paper_tax, config={"model": model.config}, state=state)
    save_checkpoint(run / "best", model, paper_tax, config={"model": model.config})
    (run / "log.csv").write_text("epoch,loss\n1,0.5\n")
    (run / "config.json").write_text(json.dumps({"epochs": 1}))
    (tmp_path / "noise.json").write_bytes(bytes(range(128, 256)))
    state_file = next(run.glob("last.*.state.safetensors"))
    fix = f"here: {run} (the run folder), or {run / 'best'} or {run / 'last'}"
    with pytest.raises(ValueError, match=re.escape("log.csv is not a readable torch.save file (IndexError")) as err:
        build_model("test_convnext", paper_tax, "flat", init_checkpoint=run / "log.csv")
    assert fix in str(err.value)
    with pytest.raises(
        ValueError,
        match=re.escape("training state (optimizer moments")
        + ".*"
        + re.escape(f"pass the checkpoint itself: {run / 'last'}."),
    ):
        build_model("test_convnext", paper_tax, "flat", init_checkpoint=state_file)
    for source in (run / "config.json", run / "log.csv"):
        for call in (
            lambda source=source: load_checkpoint(source),
            lambda source=source: build_model("test_convnext", paper_tax, "flat", init_checkpoint=source),
        ):
            with pytest.raises((CheckpointError, ValueError)) as err:
                call()
            assert fix in str(err.value), str(err.value)
    with pytest.raises(CheckpointError, match=r"noise.json is not a checkpoint: .*\(not UTF-8 text\)"):
        load_checkpoint(tmp_path / "noise.json")
    assert load_checkpoint(state_file).epoch == load_checkpoint(run / "last").epoch  # evaluate/predict: its checkpoint


def test_synthetic_images_warn_when_siblings_would_be_drawn_alike(tmp_path: Path, caplog) -> None:
    """Depth 2 has 6 nucleus shapes and depth 3 4 textures; more siblings were drawn alike (sibling 0 and
    6 identical) with no warning, so a user's wide taxonomy trained on classes nothing told apart."""
    from examples.leukemia.synthetic import make_synthetic
    from hiercls import Taxonomy

    wide = Taxonomy.from_edges([("r", "a"), *[("a", f"a{i}") for i in range(7)], ("r", "b"), ("b", "b1")])
    with caplog.at_level(logging.WARNING):
        make_synthetic(tmp_path / "wide", wide, n_per_leaf=1, size=16, n_partial=0)
    assert "the children of this node (1 node(s) at depth 1; first: a) are more than the 6 nucleus shapes" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_synthetic(tmp_path / "paper", "paper", n_per_leaf=1, size=16, n_partial=0)
    assert "drawn alike" not in caplog.text


def test_synthetic_leaves_below_depth_5_never_share_a_colour(tmp_path: Path, caplog) -> None:
    """Levels below depth 4 set one cue, the nucleus colour, as the mean of the places among siblings:
    (0/2, 1/2) and (1/2, 0/2) drew byte-identical images for two different leaves at depth 6. Read as one
    number in a fixed radix, every leaf has its own colour; the bundled trees (depth <= 5) draw as before."""
    import numpy as np

    from examples.leukemia.synthetic import _deep_radix, _deep_shade, _draw, _path_codes, make_synthetic
    from hiercls import Taxonomy
    from hiercls.synthetic import layered_taxonomy

    deep = Taxonomy.from_paths([f"r/a/b/c/d/P{i}/P{i}{x}" for i in range(2) for x in "xy"])
    radix = _deep_radix(deep)
    assert radix == (2, 2)
    shades = {leaf: _deep_shade(_path_codes(deep, deep.index(leaf))[4:], radix) for leaf in deep.leaves}
    assert sorted(shades.values()) == [0.0, 1 / 3, 2 / 3, 1.0]
    draw = {
        leaf: _draw(_path_codes(deep, deep.index(leaf)), 32, np.random.default_rng(0), radix) for leaf in deep.leaves
    }
    assert not np.array_equal(draw["P0y"], draw["P1x"])
    for name in ("paper", "pbc", "all4"):  # at most one level below depth 4: the places, as before
        assert _deep_radix(load_taxonomy(name)) is None
    assert _deep_shade([(1, 3)], None) == 0.5 and _deep_shade([], None) == 0.0
    ragged = layered_taxonomy([2, 2, 2, 2, 6, 12, 24], seed=0)  # families of uneven sizes below depth 4
    radix = _deep_radix(ragged)
    codes = {tuple(c for c, _ in _path_codes(ragged, leaf)[4:]) for leaf in ragged.leaf_index.tolist()}
    shades = {_deep_shade([(c, 0) for c in code], radix) for code in codes}
    assert len(codes) > 4 and len(shades) == len(codes)  # distinct places below depth 4, distinct colours
    with caplog.at_level(logging.WARNING):
        make_synthetic(tmp_path / "deep", deep, n_per_leaf=1, size=16, n_partial=0)
    assert "share one cue, the nucleus colour" not in caplog.text  # 4 shades
    wide = Taxonomy.from_paths([f"r/a/b/c/d/P{i}/P{i}_{j}" for i in range(5) for j in range(5)])  # 5 x 5
    with caplog.at_level(logging.WARNING):
        make_synthetic(tmp_path / "wide", wide, n_per_leaf=1, size=16, n_partial=0)
    assert "the 2 levels below depth 4 share one cue, the nucleus colour, in 25 shades" in caplog.text


def test_the_input_normalisation_follows_the_weights(tmp_path: Path, paper_tax) -> None:
    """Inputs were always normalised with ImageNet's statistics, so a ViT's timm weights (which expect
    0.5/0.5) saw inputs about 2x too wide after --pretrained or a timm --init-checkpoint (a review). From
    scratch it stays ImageNet's (the recorded results), and test time reads it from the checkpoint."""
    from safetensors.torch import save_file

    from examples.leukemia.models import IMAGENET_NORMALIZE, model_from_config, model_normalize

    scratch = build_model("test_vit", paper_tax, "flat", img_size=32)
    assert scratch.config["normalize"] == IMAGENET_NORMALIZE
    save_file({k: v.contiguous() for k, v in scratch.backbone.state_dict().items()}, tmp_path / "timm.safetensors")
    from_timm = build_model("test_vit", paper_tax, "flat", img_size=32, init_checkpoint=tmp_path / "timm.safetensors")
    assert from_timm.config["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3}  # test_vit's pretrained_cfg
    save_checkpoint(tmp_path / "ck", from_timm, paper_tax, config={"model": from_timm.config})
    again = build_model("test_vit", paper_tax, "hierarchical", img_size=32, init_checkpoint=tmp_path / "ck")
    assert again.config["normalize"] == from_timm.config["normalize"]  # a checkpoint's own record
    assert model_from_config(from_timm.config, paper_tax).config["normalize"] == from_timm.config["normalize"]
    old = {k: v for k, v in from_timm.config.items() if k != "normalize"}  # a checkpoint from before the record
    assert model_normalize(model_from_config(old, paper_tax)) == (
        tuple(IMAGENET_NORMALIZE["mean"]),
        tuple(IMAGENET_NORMALIZE["std"]),
    )
    # test time: the marginals are those of the recorded normalisation
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    from_timm.eval()
    got = T.predict(from_timm, images, batch_size=2, device=torch.device("cpu"), amp=False, channels_last=False)
    with torch.no_grad():
        want = from_timm.marginals(from_timm((images.float() / 255 - 0.5) / 0.5))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_run_from_before_the_normalisation_record_resumes_with_imagenet_statistics(tmp_path: Path) -> None:
    common = ["--backbone", "test_vit", "--epochs", "2", "--synthetic-per-leaf", "2", *FAST]
    out = tmp_path / "r"
    T.run(T.parse_args([*common, "--output", str(out), "--stop-after", "1"]))
    last = out / "last.json"
    sidecar = json.loads(last.read_text())
    assert sidecar["config"]["model"]["normalize"]["mean"] == [0.485, 0.456, 0.406]
    del sidecar["config"]["model"]["normalize"]
    last.write_text(json.dumps(sidecar))
    res = T.run(T.parse_args([*common, "--output", str(out), "--resume"]))
    assert res.config["model"]["normalize"]["mean"] == [0.485, 0.456, 0.406]


def _folder_with_copies(root: Path) -> Path:
    """24 distinct images in two classes of the paper taxonomy, and a copy under another name of six."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("Normal", "ALL"):
        (root / cls).mkdir(parents=True)
        for k in range(12):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{cls}_{k}.png")
        for k in range(3):
            shutil.copy(root / cls / f"{cls}_{k}.png", root / cls / f"copy_{cls}_{k}.png")
    return root


def test_a_pack_made_again_at_the_same_path_is_not_pooled_and_its_grouping_is_recorded(
    tmp_path: Path, caplog, capsys
) -> None:
    """Results scored on a pack, then on a pack made again at the same path with --group-duplicates, recorded
    the same data and no split seed: aggregate pooled two test sets. Rows now record the pack's grouping and
    which images they scored. A pack run also records no --group-duplicates of its own (the pack's split
    says it), so resuming it with or without the flag is the same run."""
    from examples.leukemia.aggregate import main as aggregate
    from examples.leukemia.evaluate import main as evaluate
    from examples.leukemia.pack import pack

    data = _folder_with_copies(tmp_path / "d")
    packed = tmp_path / "p.npz"
    args = ["--pack", str(packed), "--backbone", "test_convnext", "--epochs", "2", "--quiet", "--no-tensorboard"]
    args += ["--batch-size", "8", "--workers", "1"]
    rows = {}
    for seed, grouped in ((0, False), (1, True)):
        pack(data, packed, taxonomy="paper", size=32, workers=1, progress=False, group_duplicates=grouped)
        T.main([*args, "--seed", str(seed), "--stop-after", "1", "--output", str(tmp_path / f"run{seed}")])
        result = evaluate([str(tmp_path / f"run{seed}"), "--no-figures", "--out", str(tmp_path / f"e{seed}")])
        rows[seed] = result["rows"][0]
        assert rows[seed]["group_duplicates"] is grouped and rows[seed]["split_seed"] is None
    assert rows[0]["data"] == rows[1]["data"] and rows[0]["scored_id"] != rows[1]["scored_id"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        aggregate([str(tmp_path / f"e{seed}" / "results.json") for seed in (0, 1)])
    said = capsys.readouterr().err
    assert err.value.code == 2 and "group_duplicates" in said and "scored_id" in said
    # the same pack scored again: the same images, pooled
    again = evaluate([str(tmp_path / "run1"), "--no-figures", "--out", str(tmp_path / "e1b")])["rows"][0]
    assert again["scored_id"] == rows[1]["scored_id"]
    # the pack run's config holds the pack's grouping only; --group-duplicates on resume repeats the pack's
    config = json.loads((tmp_path / "run1" / "config.json").read_text())
    assert "group_duplicates" not in config and config["pack_group_duplicates"] is True
    with pytest.raises(ValueError, match="--resume: settings differ"):  # a real change is still refused
        T.run(T.parse_args([*args, "--seed", "1", "--output", str(tmp_path / "run1"), "--resume",
                            "--group-duplicates", "--lr", "0.5"]))  # fmt: skip
    T.main([*args, "--seed", "1", "--output", str(tmp_path / "run1"), "--resume", "--group-duplicates"])
    assert json.loads((tmp_path / "run1" / "last.json").read_text())["epoch"] == 1  # both epochs trained


def test_resume_reads_the_taxonomy_by_content_not_by_path(tmp_path: Path) -> None:
    """--resume compared the taxonomy's path: a copy of the file elsewhere was refused as 'other data', and a
    missing file too (both paths named the same absent file), instead of 'not found'."""
    data = _folder_with_copies(tmp_path / "d")
    first = tmp_path / "a" / "tree.json"
    first.parent.mkdir()
    shutil.copy(Path(T.__file__).parent / "taxonomies" / "paper.json", first)
    common = ["--data", str(data), "--backbone", "test_convnext", "--epochs", "2", *FAST]
    out = str(tmp_path / "run")
    T.main([*common, "--taxonomy", str(first), "--stop-after", "1", "--output", out])
    moved = tmp_path / "b" / "moved.json"
    moved.parent.mkdir()
    first.rename(moved)
    with pytest.raises(FileNotFoundError, match="tree.json"):
        T.run(T.parse_args([*common, "--taxonomy", str(first), "--resume", "--output", out]))
    T.main([*common, "--taxonomy", str(moved), "--resume", "--output", out])
    assert json.loads((tmp_path / "run" / "last.json").read_text())["epoch"] == 1
    other = tmp_path / "b" / "other.json"
    other.write_text(json.dumps({"tree": {"root": {"Normal": None, "ALL": None, "CLL": None}}}))
    with pytest.raises(ValueError, match="other data"):
        T.run(T.parse_args([*common, "--taxonomy", str(other), "--resume", "--output", out]))
    # the same file edited since the run started: the data was blamed ("the pack was made again, the data
    # folder changed..."); the taxonomy is named, with the way to write the run's own out of its checkpoint
    edited = Taxonomy.from_json(moved)
    moved.write_text(
        json.dumps({"tree": {edited.root: {**dict.fromkeys(edited.children(edited.root)), "Extra": None}}})
    )
    with pytest.raises(ValueError, match=r"--taxonomy .*moved.json has changed since the run .* started") as err:
        T.run(T.parse_args([*common, "--taxonomy", str(moved), "--resume", "--output", out]))
    exec(re.search(r'python -c "(.*?)"', str(err.value))[1], {})  # the recipe, as the message gives it
    assert Taxonomy.from_json(moved.with_suffix(".run.json")).fingerprint == edited.fingerprint


def test_a_tool_format_pack_refuses_group_duplicates_and_its_warning_names_the_peer_split(
    tmp_path: Path, caplog
) -> None:
    """A --tool-format pack holds no split, so --group-duplicates did nothing there, and its copies warning
    advised that very flag."""
    from examples.leukemia.pack import main as pack_main

    data = _folder_with_copies(tmp_path / "d")
    base = ["--data", str(data), "--taxonomy", "paper", "--size", "20", "--workers", "1", "--no-progress"]
    with pytest.raises(SystemExit) as err:
        pack_main([*base, "--out", str(tmp_path / "t.npz"), "--tool-format", "--group-duplicates"])
    assert err.value.code != 0 and not (tmp_path / "t.npz").exists()
    with caplog.at_level(logging.WARNING):  # another --seed: the peer tool still draws its own split
        pack_main([*base, "--out", str(tmp_path / "t.npz"), "--tool-format", "--seed", "5"])
    (said,) = [r.getMessage() for r in caplog.records if "byte-identical copies" in r.getMessage()]
    assert "peer tool" in said and "1 in val" in said and "--group-duplicates" not in said


def test_group_duplicates_keeps_copies_in_one_split_and_is_part_of_the_run(tmp_path: Path, caplog, capsys) -> None:
    """Copies across splits are counted in a warning; --group-duplicates keeps them together, is recorded,
    and a resume with the other setting is refused by name; a pack's split cannot be regrouped."""
    data = _folder_with_copies(tmp_path / "d")
    common = ["--data", str(data), "--taxonomy", "paper", "--backbone", "test_convnext", "--epochs", "1", *FAST]
    from examples.leukemia import data as D

    samples, report = D.scan(data, "paper", workers=1, warn=False)
    seed = next(s for s in range(50) if any(D.copies_in_train(D.split(samples, seed=s), report.duplicates).values()))
    with caplog.at_level(logging.WARNING):
        T.main([*common, "--split-seed", str(seed), "--output", str(tmp_path / "plain")])
    assert any("byte-identical copies of training images" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        T.main([*common, "--split-seed", str(seed), "--group-duplicates", "--output", str(tmp_path / "grouped")])
    assert not any("byte-identical copies" in r.getMessage() for r in caplog.records)
    rows = [line.split(",") for line in (tmp_path / "grouped" / "splits.csv").read_text().splitlines()[1:]]
    where = {Path(path).name: name for name, path, _ in rows}
    for cls in ("Normal", "ALL"):
        for k in range(3):
            assert where[f"{cls}_{k}.png"] == where[f"copy_{cls}_{k}.png"]
    assert json.loads((tmp_path / "grouped" / "config.json").read_text())["group_duplicates"] is True
    with pytest.raises(ValueError, match=r"--resume: .*other data \(group_duplicates: True in the run, False now\)"):
        T.run(T.parse_args([*common, "--split-seed", str(seed), "--resume", "--output", str(tmp_path / "grouped")]))
    # evaluate records which split it scored, and aggregate does not pool the two (their test images differ)
    from examples.leukemia.aggregate import main as aggregate
    from examples.leukemia.evaluate import main as evaluate

    for name in ("plain", "grouped"):
        (row,) = evaluate([str(tmp_path / name), "--no-figures", "--out", str(tmp_path / f"e-{name}")])["rows"]
        assert row["group_duplicates"] is (name == "grouped")
    results = [str(tmp_path / f"e-{name}" / "results.json") for name in ("plain", "grouped")]
    for name, flag in (("plain", False), ("grouped", True)):  # as if trained with another seed
        file = tmp_path / f"e-{name}" / "results.json"
        content = json.loads(file.read_text())
        content["seed"] = int(flag)
        content["rows"][0]["seed"] = int(flag)
        file.write_text(json.dumps(content))
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        aggregate(results)
    assert err.value.code == 2 and "group_duplicates" in capsys.readouterr().err
    # a pack holds its own split
    from examples.leukemia.pack import pack

    summary = pack(data, tmp_path / "p.npz", taxonomy="paper", size=32, seed=seed, workers=1, progress=False)
    assert sum(summary["copies_in_train"].values()) > 0
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # training on the pack repeats the warning
        T.main(["--pack", str(tmp_path / "p.npz"), "--backbone", "test_convnext", "--epochs", "1", "--output",
                str(tmp_path / "from-pack"), "--quiet", "--no-tensorboard", "--batch-size", "8", "--workers", "1"])  # fmt: skip
    (said,) = [r.getMessage() for r in caplog.records if "byte-identical copies" in r.getMessage()]
    assert ", ".join(f"{n} in {s}" for s, n in summary["copies_in_train"].items() if n) in said
    with pytest.raises(ValueError, match=r"--group-duplicates: the pack .* made without it"):
        T.run(
            T.parse_args(
                ["--pack", str(tmp_path / "p.npz"), "--group-duplicates", "--output", str(tmp_path / "x"), *FAST]
            )
        )
    summary = pack(
        data, tmp_path / "g.npz", taxonomy="paper", size=20, seed=seed, workers=1, progress=False, group_duplicates=True
    )
    assert summary["copies_in_train"] == {"val": 0, "test": 0}


def _folder_of_patients(root: Path, patients: int = 10) -> Path:
    """Images of two classes of the paper taxonomy, in one folder per patient below each class folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls in ("Normal", "ALL"):
        for p in range(patients):
            (root / cls / f"patient{p:02d}").mkdir(parents=True)
            for k in range(2):
                image = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / cls / f"patient{p:02d}" / f"{k}.png")
    return root


def test_split_by_group_keeps_each_patient_in_one_split_through_train_evaluate_and_pack(tmp_path: Path, caplog) -> None:
    """Without the flag a warning counts the patients split across; with it no patient is in two splits,
    the run records it, resuming without it is refused by name, evaluate scores the same test images from
    the data folder, and a pack records its grouping (a pack made image by image refuses the flag)."""
    data = _folder_of_patients(tmp_path / "d")
    common = ["--data", str(data), "--taxonomy", "paper", "--backbone", "test_convnext", "--epochs", "1", *FAST]
    with caplog.at_level(logging.WARNING):
        T.main([*common, "--output", str(tmp_path / "plain")])
    (said,) = [r.getMessage() for r in caplog.records if "groups" in r.getMessage()]
    assert "of the 10 groups (folders" in said and "--split-by-group" in said
    caplog.clear()
    with caplog.at_level(logging.INFO):
        T.main([*common, "--split-by-group", "--output", str(tmp_path / "grouped")])
    assert not any("more than one split" in r.getMessage() for r in caplog.records)
    assert any("split by group (folders), each of 10 group(s) in one split" in r.getMessage() for r in caplog.records)
    rows = [line.split(",") for line in (tmp_path / "grouped" / "splits.csv").read_text().splitlines()[1:]]
    split_of: dict[str, set[str]] = defaultdict(set)
    for name, path, _ in rows:
        split_of[Path(path).parent.name].add(name)
    assert len(split_of) == 10 and all(len(v) == 1 for v in split_of.values())
    assert {n for v in split_of.values() for n in v} == {"train", "val", "test"}
    config = json.loads((tmp_path / "grouped" / "config.json").read_text())
    assert config["split_by_group"] is True
    with pytest.raises(ValueError, match=r"--resume: .*other data \(split_by_group: True in the run, False now\)"):
        T.run(T.parse_args([*common, "--resume", "--output", str(tmp_path / "grouped")]))
    # evaluate from the data folder (the manifest aside) splits by group again: the same test images
    from examples.leukemia.evaluate import main as evaluate

    (first,) = evaluate([str(tmp_path / "grouped"), "--no-figures", "--out", str(tmp_path / "e1")])["rows"]
    (tmp_path / "grouped" / "splits.csv").rename(tmp_path / "splits.csv")
    (row,) = evaluate([str(tmp_path / "grouped"), "--data", str(data), "--no-figures", "--out", str(tmp_path / "e")])[
        "rows"
    ]
    assert row["split_by_group"] is True and first["split_by_group"] is True
    assert row["scored_id"] == first["scored_id"] and row["metrics"]["n"] == sum(r[0] == "test" for r in rows)
    # a pack records its grouping; a pack split image by image refuses the flag
    from examples.leukemia.pack import main as pack_main
    from examples.leukemia.pack import read_pack_meta

    pack_main(["--data", str(data), "--taxonomy", "paper", "--size", "20", "--workers", "1", "--no-progress",
               "--out", str(tmp_path / "g.npz"), "--split-by-group"])  # fmt: skip
    assert read_pack_meta(tmp_path / "g.npz")["split_by_group"] is True
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pack_main(["--data", str(data), "--taxonomy", "paper", "--size", "20", "--workers", "1", "--no-progress",
                   "--out", str(tmp_path / "p.npz")])  # fmt: skip
    assert any("have images in more than one split of" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match=r"--split-by-group: the pack .* made image by image"):
        T.run(T.parse_args(["--pack", str(tmp_path / "p.npz"), "--split-by-group", "--output", str(tmp_path / "x"),
                            *FAST]))  # fmt: skip
    from examples.leukemia.pack import pack

    with pytest.raises(ValueError, match=r"split_by_group: a --tool-format pack holds no split"):
        pack(data, tmp_path / "t.npz", taxonomy="paper", tool_format=True, split_by_group=True)


def test_group_log_counts_the_groups_drawn_and_warns_when_one_patient_takes_most_images(caplog) -> None:
    """With --limit the log counted every group of the scan, not the ones drawn; and a split whose share of
    the images was far from its fraction (one patient with most of them) went unsaid."""
    from examples.leukemia.data import Sample, ScanReport

    big = [Sample(f"/d/a/p1/{i}.jpg", "a") for i in range(16)]
    rest = [Sample(f"/d/a/p{g}/0.jpg", "a") for g in range(2, 6)]
    groups = {"p1": [s.path for s in big], **{f"p{g}": [f"/d/a/p{g}/0.jpg"] for g in range(2, 9)}}  # p6-p8 not drawn
    report = ScanReport("/d", "folder", "/d", "t", groups=groups, group_source="folders")
    splits = {"train": rest[:2], "val": rest[2:3], "test": [*big, rest[3]]}
    with caplog.at_level(logging.INFO):
        T._log_groups(splits, report, True, "data /d")
    said = [r.getMessage() for r in caplog.records]
    assert any("each of 5 group(s) in one split: train 2 images in 2 group(s)" in m for m in said), said
    (lopsided,) = [m for m in said if "differ much in size" in m]
    assert "test holds 85% of the images (20% asked)" in lopsided and "the largest: p1 (16 images, 80%)" in lopsided


def test_evaluate_without_the_runs_groups_suggests_the_runs_folder_or_external_not_a_flag_it_lacks() -> None:
    from examples.leukemia.data import Sample, ScanReport
    from examples.leukemia.evaluate import _split_like_the_run

    samples = [Sample(f"/d/a/{i}.jpg", "a") for i in range(6)]
    with pytest.raises(ValueError, match=r"the run's --split-by-group: no groups .* or pass --data the folder the "
                       r"run was trained on .* or --external") as err:  # fmt: skip
        _split_like_the_run(samples, {"split_by_group": True}, "test", 0, runs_images=False,
                            report=ScanReport("/d", "folder", "/d", "t"))  # fmt: skip
    assert "drop the flag" not in str(err.value)


# ------------------------------------------------------- review of 29 November: resume and run folders
def test_resume_does_not_reread_where_the_weights_started_and_keeps_it_recorded(tmp_path: Path, caplog) -> None:
    """--resume read --init-checkpoint again (a moved file stopped the resume; --pretrained offline failed on
    the hub) and then overwrote what it loaded; resumed without the flag, every file recorded null."""
    common = ["--backbone", "test_resnet", "--epochs", "2", "--synthetic-per-leaf", "3", *FAST]
    T.run(T.parse_args([*common, "--output", str(tmp_path / "src")]))
    shutil.copytree(tmp_path / "src", tmp_path / "moved")
    init = str(tmp_path / "moved" / "best")
    out = ["--output", str(tmp_path / "run")]
    T.run(T.parse_args([*common, *out, "--init-checkpoint", init, "--stop-after", "1"]))
    shutil.rmtree(tmp_path / "moved")
    with caplog.at_level(logging.WARNING):
        done = T.run(T.parse_args([*common, *out, "--init-checkpoint", init, "--resume"]))
    assert done.config["init_checkpoint"] == init and "--init-checkpoint" not in caplog.text  # the same source
    T.run(
        T.parse_args(
            [
                *common,
                *out,
                "--epochs",
                "3",
                "--overwrite",
                "--init-checkpoint",
                str(tmp_path / "src" / "best"),
                "--stop-after",
                "1",
            ]
        )
    )
    with caplog.at_level(logging.WARNING):
        resumed = T.run(T.parse_args([*common, *out, "--epochs", "3", "--resume", "--pretrained"]))
    assert (
        "--resume: --pretrained is not read: the run's weights come from its checkpoint (it started from" in caplog.text
    )
    for record in (resumed.config, json.loads((tmp_path / "run" / "config.json").read_text())):
        assert record["init_checkpoint"] == str(tmp_path / "src" / "best") and record["pretrained"] is False


def test_a_damaged_last_checkpoint_is_named_with_the_way_out(tmp_path: Path) -> None:
    common = ["--backbone", "test_resnet", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    out = tmp_path / "run"
    T.run(T.parse_args([*common, "--output", str(out)]))
    for text, what in (
        ("garbage{", "JSONDecodeError"),
        ("[]", "a JSON list, not the object save_checkpoint writes"),
        ('{"epoch": null, "config": null}', 'its "config" is null, not an object'),
    ):
        (out / "last.json").write_text(text)
        with pytest.raises(ValueError, match=rf"--resume: {re.escape(str(out / 'last.json'))} is damaged \({what}"):
            T.run(T.parse_args([*common, "--resume", "--output", str(out)]))
        with pytest.raises(FileExistsError, match=r"already holds a run\. Pass --resume"):  # no traceback
            T.run(T.parse_args([*common, "--output", str(out)]))


def test_a_run_set_aside_by_a_killed_overwrite_is_not_buried(tmp_path: Path) -> None:
    """A hard kill between setting the old run aside and the new run's start left the folder looking empty;
    a later run went ahead and the hidden folder was never mentioned."""
    common = ["--backbone", "test_resnet", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    out = tmp_path / "run"
    T.run(T.parse_args([*common, "--output", str(out)]))
    aside = T._set_aside_run(out)  # what --overwrite does first; the kill comes before the new run starts
    assert not T.holds_run(out)
    with pytest.raises(FileExistsError, match=rf"set aside in {re.escape(str(aside))} and never put back.*mv "):
        T.run(T.parse_args([*common, "--output", str(out)]))
    for item in aside.iterdir():
        item.rename(out / item.name)
    aside.rmdir()
    T.run(T.parse_args([*common, "--output", str(out), "--overwrite"]))


def test_overwrite_removes_the_old_layouts_tensor_files_too(tmp_path: Path) -> None:
    common = ["--backbone", "test_resnet", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    out = tmp_path / "run"
    T.run(T.parse_args([*common, "--output", str(out)]))
    for name in ("best.safetensors", "last.safetensors", "last.state.safetensors"):  # before content names
        (out / name).write_bytes(b"old run")
    (out / "mine.safetensors").write_bytes(b"not a run file")
    T.run(T.parse_args([*common, "--output", str(out), "--overwrite"]))
    assert not (out / "best.safetensors").exists() and not (out / "last.state.safetensors").exists()
    assert (out / "mine.safetensors").is_file()


def test_a_cpu_run_records_its_thread_count_so_a_resume_elsewhere_is_told(tmp_path: Path, caplog) -> None:
    """Without --threads the count was torch's choice and unrecorded: resumed on a machine with another core
    count, the weights differed from an uninterrupted run's (2e-3 after 3 epochs) with nothing said."""
    from examples.leukemia.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "images", "paper", n_per_leaf=3, size=32)  # real-data defaults: no --threads
    common = ["--data", str(data), "--taxonomy", "paper", "--backbone", "test_resnet", "--epochs", "2", *FAST]
    out = ["--output", str(tmp_path / "run"), "--device", "cpu"]
    before = torch.get_num_threads()
    try:
        first = T.run(T.parse_args([*common, *out, "--stop-after", "1"]))
        assert first.config["threads"] == before
        with caplog.at_level(logging.WARNING):
            T.run(T.parse_args([*common, *out, "--resume", "--threads", str(before + 1)]))
        assert f"settings differ from the checkpoint's {{'threads': ({before}, {before + 1})}}" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_input_sizes_and_backbone_options_that_break_the_model_are_refused_before_the_data(tmp_path: Path) -> None:
    common = ["--epochs", "1", "--synthetic-per-leaf", "2", "--quiet", "--no-tensorboard", "--batch-size", "8"]
    out = tmp_path / "r"
    for extra, why in (
        (["--backbone", "test_vit", "--img-size", "40"], "--img-size: test_vit cuts images into 16x16 px patches"),
        (["--backbone", "resnet10t", "--backbone-kwargs", '{"in_chans": 1}'], "'in_chans' is set by the example"),
        (["--backbone", "resnet10t", "--backbone-kwargs", '{"features_only": true}'], "'features_only' is set"),
        (
            ["--backbone", "resnet10t", "--backbone-kwargs", '{"global_pool": ""}'],
            "global_pool '' turns the pooling off",
        ),
    ):
        with pytest.raises(ValueError, match=re.escape(why)):
            T.run(T.parse_args([*common, *extra, "--output", str(out)]))
        assert not out.exists()


def test_pretrained_weights_that_cannot_be_fetched_stop_the_run_before_the_data(tmp_path: Path, monkeypatch) -> None:
    """Offline, --pretrained failed after the data was read, with the hub's bare message. The hub is not
    reached here: timm's loader is replaced by one that fails as an offline one does."""
    import timm

    real = timm.create_model

    def offline(name, *args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
        return real(name, *args, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    out = tmp_path / "run"
    args = ["--backbone", "resnet10t", "--pretrained", "--epochs", "1", "--synthetic-per-leaf", "2", *FAST]
    with pytest.raises(
        ValueError, match=r"--pretrained: could not get timm's pretrained weights for 'resnet10t' \(OSError"
    ):
        T.run(T.parse_args([*args, "--output", str(out)]))
    assert not out.exists()  # nothing read, nothing written
