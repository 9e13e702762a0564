"""The leukemia example's checkpoints as --init-checkpoint sources, after a hard kill, and damaged.

Tiny timm models (``test_resnet``, ``pretrained=False``) and small ``nn.Linear`` models; no data.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from examples.leukemia import checkpoint as C
from examples.leukemia.checkpoint import CheckpointError, load_checkpoint, model_state, save_checkpoint
from examples.leukemia.data import load_taxonomy
from examples.leukemia.models import build_model
from hiercls import Taxonomy

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "test_resnet"


def trained(tax: Taxonomy, method: str, seed: int = 1, **kwargs) -> nn.Module:
    """A model standing for a trained one (its own random weights, seeded)."""
    torch.manual_seed(seed)
    return build_model(BACKBONE, tax, method, **kwargs)


def save(model: nn.Module, tax: Taxonomy, path: Path) -> Path:
    save_checkpoint(path, model, tax, config={"model": model.config})
    return path


def fresh(tax: Taxonomy, method: str, init: Path | None = None, **kwargs) -> nn.Module:
    """A model built with seed 7, from ``init`` or not: what "stays as initialised" is compared with."""
    torch.manual_seed(7)
    return build_model(BACKBONE, tax, method, init_checkpoint=init, **kwargs)


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------- 1. per-level <-> shared backbone
def test_init_per_level_from_a_shared_backbone_checkpoint_fills_every_level(tmp_path: Path, paper_tax, caplog) -> None:
    source = trained(paper_tax, "hierarchical")
    save(source, paper_tax, tmp_path / "hier" / "best")
    with caplog.at_level(logging.INFO):
        model = fresh(paper_tax, "per-level", tmp_path / "hier" / "best")
    assert len(model.levels) == paper_tax.max_depth
    assert all(same(level, source.backbone) for level in model.levels)
    # its level head was trained as a hierarchical model's: the per-level classifiers start afresh
    assert same(model.classifiers, fresh(paper_tax, "per-level").classifiers)
    assert "--method hierarchical with a level head, and this model is --method per-level" in caplog.text


def test_init_shared_from_a_per_level_checkpoint_is_refused_with_a_recipe_that_works(tmp_path: Path, paper_tax) -> None:
    source = trained(paper_tax, "per-level")
    save(source, paper_tax, tmp_path / "pl" / "best")
    last = paper_tax.max_depth - 1
    with pytest.raises(ValueError, match=r"holds a per-level model's 4 backbones .* one shared backbone") as err:
        fresh(paper_tax, "hierarchical", tmp_path / "pl" / "best")
    message = str(err.value)
    assert f"init_checkpoint: {tmp_path / 'pl' / 'best'}" in message and f"levels.{last}" in message
    code = re.search(r'python -c "(.+?)", then --init-checkpoint (\S+)', message)
    assert code, message
    subprocess.run(
        [sys.executable, "-c", code[1]], check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    model = fresh(paper_tax, "hierarchical", tmp_path / code[2])
    assert same(model.backbone, source.levels[last])


def test_init_shared_from_a_single_level_per_level_checkpoint(tmp_path: Path) -> None:
    """One level: nothing to choose, its backbone is the one."""
    tax = Taxonomy.from_paths(["r/a", "r/b", "r/c"])
    source = trained(tax, "per-level")
    save(source, tax, tmp_path / "pl" / "best")
    model = fresh(tax, "flat", tmp_path / "pl" / "best")
    assert same(model.backbone, source.levels[0])


def test_init_per_level_from_its_own_kind_loads_every_level_and_the_classifiers(tmp_path: Path, paper_tax) -> None:
    source = trained(paper_tax, "per-level")
    save(source, paper_tax, tmp_path / "pl" / "best")
    model = fresh(paper_tax, "per-level", tmp_path / "pl" / "best")
    assert same(model, source)


# ------------------------------------------------------- 2. heads only from a head trained for them
@pytest.mark.parametrize(
    ("source_method", "source_kwargs", "reason"),
    [
        ("hierarchical", {"loss": "bce"}, "trained for --method hierarchical with a sigmoid head"),
        ("flat", {}, "trained for --method flat with a flat head"),
        ("hierarchical", {"head": "conditional"}, "with a conditional head"),
    ],
)
def test_init_leaves_a_head_of_another_kind_as_initialised(
    tmp_path: Path, paper_tax, caplog, source_method, source_kwargs, reason
) -> None:
    """Same taxonomy, a head of another kind (same shapes for sigmoid/conditional): backbone only."""
    source = trained(paper_tax, source_method, **source_kwargs)
    save(source, paper_tax, tmp_path / "src" / "best")
    with caplog.at_level(logging.INFO):
        model = fresh(paper_tax, "hierarchical", tmp_path / "src" / "best")
    assert same(model.backbone, source.backbone)
    assert same(model.head, fresh(paper_tax, "hierarchical").head)
    assert "the head is not loaded, its 2 tensor(s) stay as initialised (head.linear.weight, head.linear.bias)" in (
        caplog.text
    )
    assert reason in caplog.text
    assert "backbone tensor(s) have another shape" not in caplog.text


def test_init_per_level_from_another_taxonomy_keeps_its_classifiers(tmp_path: Path, paper_tax, caplog) -> None:
    """The paper taxonomy's per-level classifiers into a pbc model: some shapes agree, none may load."""
    pbc = load_taxonomy("pbc")
    source = trained(paper_tax, "per-level")
    save(source, paper_tax, tmp_path / "pl" / "best")
    with caplog.at_level(logging.INFO):
        model = fresh(pbc, "per-level", tmp_path / "pl" / "best")
    shared = min(len(model.levels), len(source.levels))
    assert all(same(model.levels[d], source.levels[d]) for d in range(shared))
    assert any(a.weight.shape == b.weight.shape for a, b in zip(model.classifiers, source.classifiers))
    assert same(model.classifiers, fresh(pbc, "per-level").classifiers)
    assert "trained on another taxonomy" in caplog.text
    assert "backbone tensor(s) have another shape" not in caplog.text


def test_init_from_tensors_without_a_sidecar_loads_the_backbone_only(tmp_path: Path, paper_tax, caplog) -> None:
    """A model's tensors saved bare: nothing says what its head was trained for."""
    source = trained(paper_tax, "hierarchical")
    save_file(model_state(source), tmp_path / "bare.safetensors")
    with caplog.at_level(logging.INFO):
        model = fresh(paper_tax, "hierarchical", tmp_path / "bare.safetensors")
    assert same(model.backbone, source.backbone)
    assert same(model.head, fresh(paper_tax, "hierarchical").head)
    assert "no checkpoint sidecar" in caplog.text


def test_init_from_a_checkpoints_own_tensor_file_reads_its_sidecar(tmp_path: Path, paper_tax) -> None:
    source = trained(paper_tax, "hierarchical")
    save(source, paper_tax, tmp_path / "run" / "best")
    (weights,) = (tmp_path / "run").glob("best.*.safetensors")
    assert same(fresh(paper_tax, "hierarchical", weights), source)


# ------------------------------------------------------- 5. a run folder, as evaluate/predict read it
def test_init_checkpoint_accepts_a_run_folder(tmp_path: Path, paper_tax) -> None:
    best, other = trained(paper_tax, "hierarchical", seed=1), trained(paper_tax, "hierarchical", seed=2)
    save(best, paper_tax, tmp_path / "run" / "best")
    save(other, paper_tax, tmp_path / "run" / "last")
    assert same(fresh(paper_tax, "hierarchical", tmp_path / "run"), best)
    (tmp_path / "run" / "best.json").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"init_checkpoint: .* run folder holding best.json, got the folder .*; pass .*last"
    ):
        fresh(paper_tax, "hierarchical", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"init_checkpoint: .*nothing.* does not exist"):
        fresh(paper_tax, "hierarchical", tmp_path / "nothing")


# ------------------------------------------------------- 3. temporary files of a killed save
KILL = """
import os, signal, sys
import torch
from torch import nn
import examples.leukemia.checkpoint as C
from hiercls import Taxonomy

folder, when = sys.argv[1], sys.argv[2]
real = os.replace
def replace(src, dst):
    if str(dst).endswith(when):  # the temporary file is written and fsync-ed: die before its rename
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
torch.manual_seed(1)
C.save_checkpoint(folder + "/best", nn.Linear(2, 3), Taxonomy.from_paths(["r/a", "r/b"]), state={"x": torch.ones(2)})
"""


@pytest.mark.parametrize("killed_at", [".safetensors", ".json"])
def test_a_save_after_a_hard_kill_removes_the_killed_saves_temporary_files(tmp_path: Path, killed_at: str) -> None:
    tax = Taxonomy.from_paths(["r/a", "r/b"])
    save_checkpoint(tmp_path / "best", nn.Linear(2, 3), tax)
    save_checkpoint(tmp_path / "last", nn.Linear(2, 3), tax)
    run = subprocess.run(
        [sys.executable, "-c", KILL, str(tmp_path), killed_at],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert run.returncode == -9, run.stderr
    temp = re.compile(r"\.best(\.json)?\.[a-z0-9_]{8}\.tmp")
    left = [p.name for p in tmp_path.iterdir() if temp.fullmatch(p.name)]
    assert len(left) == 1, sorted(p.name for p in tmp_path.iterdir())
    # files that are not this checkpoint's temporary files, some of them close to it
    keep = [".last.abcd_123.tmp", ".best.abc.tmp", ".best.abcdefgh.tmp.bak", "best.abcdefgh.tmp", ".bestx.abcdefgh.tmp"]
    keep += [".best.abcdefgh.state.tmp", "notes.tmp"]
    for name in keep:
        (tmp_path / name).write_text("mine")
    (tmp_path / ".best.dir12345.tmp").mkdir()
    save_checkpoint(tmp_path / "best", nn.Linear(2, 3), tax)
    assert not any(temp.fullmatch(p.name) for p in tmp_path.iterdir() if p.is_file())
    assert all((tmp_path / name).read_text() == "mine" for name in keep)
    assert (tmp_path / ".best.dir12345.tmp").is_dir()
    load_checkpoint(tmp_path / "best")
    load_checkpoint(tmp_path / "last")


def test_temporary_file_names_are_the_ones_a_later_save_looks_for(tmp_path: Path) -> None:
    names = []
    for prefix in ("best", "best.json"):
        tmp = C._write_tmp(tmp_path, prefix, lambda t: Path(t).write_text("x"))
        names.append(Path(tmp).name)
    assert sorted(p.name for p in C._stale_temp_files(tmp_path, "best")) == sorted(names)
    assert C._stale_temp_files(tmp_path, "last") == []


# ------------------------------------------------------- 4. damaged sidecars
def _drop(*keys):
    def edit(side):
        target = side
        for key in keys[:-1]:
            target = target[key]
        target.pop(keys[-1])

    return edit


def _set(key, value):
    return lambda side: side.__setitem__(key, value)


DAMAGE = {
    "no taxonomy": (_drop("taxonomy"), "'taxonomy' is missing"),
    "taxonomy null": (_set("taxonomy", None), "'taxonomy' is null"),
    "taxonomy a path": (_set("taxonomy", "/etc/hostname"), "'taxonomy' is a string"),
    "taxonomy invalid": (_set("taxonomy", {"edges": 5}), "'taxonomy' is not a valid taxonomy"),
    "no fingerprint": (_drop("taxonomy_fingerprint"), "'taxonomy_fingerprint' is missing"),
    "other fingerprint": (_set("taxonomy_fingerprint", "ab" * 32), "does not match its fingerprint"),
    "version a string": (_set("version", "2"), "its version is '2', expected a whole number"),
    "state names a missing tensor": (_set("state", {"x": {"__tensor__": "t9"}}), "state.x names the tensor 't9'"),
    "state tuple not a list": (_set("state", {"x": {"__tuple__": 3}}), "state.x: a __tuple__ entry"),
    "state unhashable key": (_set("state", {"x": {"__items__": [[[1], 2]]}}), "cannot key a dict"),
    "state a list": (_set("state", [1]), "'state' is an array"),
    "no sha256": (_drop("files", "weights", "sha256"), "its weights entry has no 'sha256'"),
    "files a list": (_set("files", []), "names no weights file"),
    "config a list": (_set("config", []), "'config' is an array"),
    "epoch a string": (_set("epoch", "3"), "'epoch' is a string"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_sidecar_raises_checkpoint_error_naming_the_file_and_the_fix(tmp_path: Path, case: str) -> None:
    tax = Taxonomy.from_paths(["r/a", "r/b"])
    save_checkpoint(tmp_path / "best", nn.Linear(2, 3), tax, state={"x": torch.ones(2)}, config={"model": {}})
    side = json.loads((tmp_path / "best.json").read_text())
    edit, what = DAMAGE[case]
    edit(side)
    (tmp_path / "best.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "best")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'best.json'}: ") and what in message, message
    assert "the checkpoint is damaged" in message and "(RUN/best or RUN/last), or retrain" in message


def test_a_newer_version_is_not_called_damaged(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "best", nn.Linear(2, 3), Taxonomy.from_paths(["r/a", "r/b"]))
    side = json.loads((tmp_path / "best.json").read_text())
    side["version"] = C.VERSION + 1
    (tmp_path / "best.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=r"version 3 is newer than this code \(2\)"):
        load_checkpoint(tmp_path / "best")


def test_init_from_a_damaged_checkpoint_says_so(tmp_path: Path, paper_tax) -> None:
    save(trained(paper_tax, "hierarchical"), paper_tax, tmp_path / "run" / "best")
    side = json.loads((tmp_path / "run" / "best.json").read_text())
    side.pop("taxonomy")
    (tmp_path / "run" / "best.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="'taxonomy' is missing.*damaged"):
        fresh(paper_tax, "hierarchical", tmp_path / "run")


# ------------------------------------------------------- resume: optimizer state in the parameters' layout


def test_a_resumed_optimizer_state_has_its_parameters_strides_and_values(tmp_path: Path) -> None:
    """safetensors stores tensors contiguous: the AdamW moments of a ``channels_last`` convolution came back
    with other strides than the weight, and CUDA's fused AdamW refused the first step after ``--resume``
    ("params, grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout"; seen on an H200,
    thirteenth session). The CPU kernels accept mixed strides, so the layout itself is checked here."""
    tax = Taxonomy.from_paths(["r/a", "r/b"])

    def model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
        model(torch.zeros(1, 3, 5, 5))
        model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.AdamW(model.parameters(), lr=0.1)

    model, opt = model_and_optimizer()
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    conv = model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    save_checkpoint(tmp_path / "last", model, tax, optimizer=opt)

    model2, opt2 = model_and_optimizer()
    load_checkpoint(tmp_path / "last", model2, taxonomy=tax, optimizer=opt2)
    for p, p2 in zip(model.parameters(), model2.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            saved, loaded = opt.state[p][key], opt2.state[p2][key]
            assert loaded.stride() == p2.stride(), (key, loaded.stride(), p2.stride())
            assert torch.equal(loaded, saved)
    assert C.match_param_layout(opt2) == 0  # nothing left to change


def test_match_param_layout_counts_what_it_changed_and_leaves_scalars() -> None:
    weight = nn.Parameter(torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last))
    opt = torch.optim.AdamW([weight])
    moments = torch.randn(2, 3, 4, 4)  # contiguous: other strides than the weight
    opt.state[weight] = {"step": torch.tensor(3.0), "exp_avg": moments.clone(), "exp_avg_sq": moments.abs()}
    assert C.match_param_layout(opt) == 2
    state = opt.state[weight]
    assert state["exp_avg"].stride() == weight.stride() and torch.equal(state["exp_avg"], moments)
    assert state["step"].shape == () and state["step"].item() == 3.0


@pytest.mark.parametrize(("saved", "present", "restored"), [(3, 1, [0]), (1, 2, [0]), (2, 2, [0, 1])])
def test_cuda_random_states_are_restored_for_the_devices_present(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, saved: int, present: int, restored: list[int]
) -> None:
    """A run saved where more GPUs were visible resumed with ``torch.cuda.set_rng_state_all``, which raised on
    the first device this machine lacks; now each device present gets its state, and a mismatch is said."""
    state = {**C.get_rng_state(), "cuda": [torch.zeros(8, dtype=torch.uint8)] * saved}
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: present)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda rng, device: calls.append(device))
    with caplog.at_level(logging.WARNING):
        C.set_rng_state(state)
    assert calls == restored
    assert ("CUDA device(s)" in caplog.text) == (saved != present)


# ------------------------------------------------------- review of 29 November
def test_a_plain_submodule_named_module_is_not_taken_for_a_wrapper(tmp_path: Path) -> None:
    """Unwrapped by attribute name, a model with ``self.module`` was saved as that submodule alone: its other
    weights were dropped without a word, and the load 'succeeded'. Wrappers are unwrapped by type."""
    from timm.utils import ModelEmaV3

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module, self.fc = nn.Linear(4, 4), nn.Linear(4, 2)

    tax = Taxonomy.from_paths(["r/a", "r/b"])
    net = Net()
    save_checkpoint(tmp_path / "ck", net, tax)
    assert set(load_checkpoint(tmp_path / "ck").weights) == {"module.weight", "module.bias", "fc.weight", "fc.bias"}
    other = Net()
    load_checkpoint(tmp_path / "ck", other)
    assert same(other, net)
    inner = nn.Linear(3, 3)
    for wrapper in (nn.DataParallel(inner), ModelEmaV3(inner), torch.compile(inner)):
        assert C._unwrap(wrapper) is not wrapper and set(model_state(wrapper)) == {"weight", "bias"}


def test_load_checkpoint_refuses_a_model_of_another_taxonomy_or_head(tmp_path: Path, paper_tax) -> None:
    """A per-level checkpoint loaded into a per-level model on another tree with as many nodes per level (the
    classifiers have no fingerprint buffer), and a level head's into a sigmoid head, loaded silently."""
    renamed = Taxonomy.from_edges([(a if a == paper_tax.root else f"x{a}", f"x{b}") for a, b in paper_tax.graph.edges])
    source = trained(paper_tax, "per-level")
    save(source, paper_tax, tmp_path / "pl" / "best")
    with pytest.raises(CheckpointError, match=r"model: built on a taxonomy .* that is not best\.json's .*\(load_model"):
        load_checkpoint(tmp_path / "pl" / "best", trained(renamed, "per-level"))
    load_checkpoint(tmp_path / "pl" / "best", target := trained(paper_tax, "per-level", seed=3))
    assert same(target, source)
    save(trained(paper_tax, "hierarchical", head="level", loss="level"), paper_tax, tmp_path / "lv" / "best")
    with pytest.raises(CheckpointError, match=r"model: head 'sigmoid', but best\.json was trained as head 'level'"):
        load_checkpoint(tmp_path / "lv" / "best", trained(paper_tax, "hierarchical", head="sigmoid", loss="bce"))


def test_load_checkpoint_takes_the_run_folder_its_error_offers(tmp_path: Path, paper_tax) -> None:
    model = trained(paper_tax, "flat")
    save(model, paper_tax, tmp_path / "run" / "best")
    assert set(load_checkpoint(tmp_path / "run").weights) == set(load_checkpoint(tmp_path / "run" / "best").weights)
    from examples.leukemia.checkpoint import load_model

    assert same(load_model(tmp_path / "run")[0], model)
    with pytest.raises(CheckpointError, match="or the run folder RUN itself"):
        load_checkpoint(tmp_path / "nothing")


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model.", "module._orig_mod."])
def test_init_from_a_state_dict_saved_through_a_wrapper(tmp_path: Path, paper_tax, prefix: str) -> None:
    """Weights saved from a DDP, compiled or wrapped model carry the wrapper's prefix: 'no tensor matches'
    said nothing of it. The prefix is dropped, as timm's own loader does for 'module.'."""
    source = trained(paper_tax, "hierarchical")
    torch.save({prefix + k: v for k, v in source.backbone.state_dict().items()}, tmp_path / "w.pth")
    model = fresh(paper_tax, "hierarchical", tmp_path / "w.pth")
    assert same(model.backbone, source.backbone)


def test_a_pickled_training_checkpoint_gets_a_recipe_that_works_on_a_dict(tmp_path: Path, paper_tax) -> None:
    import argparse

    source = trained(paper_tax, "hierarchical")
    torch.save(
        {"state_dict": source.backbone.state_dict(), "args": argparse.Namespace(model=BACKBONE)}, tmp_path / "t.pth"
    )
    with pytest.raises(ValueError, match=r"as timm's train\.py does.*obj\['state_dict'\] if isinstance\(obj, dict\)"):
        fresh(paper_tax, "hierarchical", tmp_path / "t.pth")
    obj = torch.load(tmp_path / "t.pth", weights_only=False)  # the recipe, as the message gives it
    torch.save(obj["state_dict"] if isinstance(obj, dict) else obj.state_dict(), tmp_path / "new.pth")
    assert same(fresh(paper_tax, "hierarchical", tmp_path / "new.pth").backbone, source.backbone)
