"""Test-time augmentation (the 8 symmetries of the square) and the weight average (EMA) of the example.

TTA: the views against an explicit numpy oracle, the averaged marginals against a one-view-at-a-time
oracle, their invariance under the symmetries, and their consistency (a parent is the sum of its
children). EMA: the averaged weights after a resume against the update rule written out by hand,
what is saved as best, resume, and the errors.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from examples.leukemia import train as T
from examples.leukemia.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint
from examples.leukemia.gpu_data import TTA_MODES, tta_views
from examples.leukemia.models import build_model
from hiercls.decoding import decode
from tests.budget import examples
from tests.test_example_train import FAST


def _oracle_d4(x: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square on the last two axes, written with numpy."""
    out = []
    for base in (x, x[..., ::-1]):
        for k in range(4):
            out.append(np.rot90(base, k, axes=(-2, -1)))
    return out


def _key(a: np.ndarray | torch.Tensor) -> bytes:
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    return np.ascontiguousarray(a).tobytes()


@settings(examples(40), deadline=None)
@given(side=st.integers(1, 6), channels=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_d4_views_are_the_eight_symmetries_and_closed_under_them(side: int, channels: int, seed: int) -> None:
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (2, channels, side, side), dtype=np.uint8))
    views = list(tta_views(x, "d4"))
    assert len(views) == TTA_MODES["d4"] and torch.equal(views[0], x)
    assert all(v.shape == x.shape and v.dtype == x.dtype for v in views)
    oracle = _oracle_d4(x.numpy())
    assert sorted(_key(v) for v in views) == sorted(_key(o) for o in oracle)
    # the views of any symmetric image g(x) are the same set, so a TTA average cannot tell x from g(x)
    for g in oracle:
        assert sorted(_key(v) for v in tta_views(torch.from_numpy(g.copy()), "d4")) == sorted(_key(o) for o in oracle)


def test_flip_and_none_views_and_memory_format() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    none = list(tta_views(x, "none"))
    assert len(none) == 1 and none[0] is x
    flip = list(tta_views(x, "flip"))
    assert len(flip) == 2 and torch.equal(flip[1], torch.from_numpy(x.numpy()[..., ::-1].copy()))
    cl = torch.rand(2, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in tta_views(cl, "d4"))


def test_tta_errors() -> None:
    with pytest.raises(ValueError, match="tta: expected one of"):
        list(tta_views(torch.zeros(1, 3, 4, 4), "rot"))
    with pytest.raises(ValueError, match="needs square images"):
        list(tta_views(torch.zeros(1, 3, 4, 6), "d4"))
    assert len(list(tta_views(torch.zeros(1, 3, 4, 6), "flip"))) == 2
    with pytest.raises(ValueError, match="tta: expected one of"):
        T.predict(
            torch.nn.Identity(), torch.zeros(1, 3, 4, 4, dtype=torch.uint8), batch_size=1, device=torch.device("cpu"),
            amp=False, channels_last=False, tta="D4",
        )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(paper_tax_module):
    torch.manual_seed(0)
    model = build_model("test_convnext", paper_tax_module, "hierarchical", img_size=32).eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return model, images


@pytest.fixture(scope="module")
def paper_tax_module():
    from examples.leukemia.data import load_taxonomy

    return load_taxonomy("paper")


def _predict(model, images, tta: str) -> torch.Tensor:
    return T.predict(model, images, batch_size=2, device=torch.device("cpu"), amp=False, channels_last=False, tta=tta)


@pytest.mark.parametrize("tta", ["none", "flip", "d4"])
def test_predict_tta_matches_a_one_view_at_a_time_oracle(tta: str, tiny_model) -> None:
    from examples.leukemia.gpu_data import IMAGENET_MEAN, IMAGENET_STD

    model, images = tiny_model
    got = _predict(model, images, tta)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        for i in range(len(images)):  # slow: each image, each view, the mean of the marginals by hand
            x = images[i].numpy()
            views = {"none": [x], "flip": [x, x[..., ::-1]], "d4": _oracle_d4(x)}[tta]
            probs = [
                model.marginals(model(((torch.from_numpy(v.copy()).float() / 255 - mean) / std)[None]))[0]
                for v in views
            ]
            assert torch.allclose(got[i], torch.stack(probs).mean(0), atol=1e-5), (tta, i)


def test_d4_tta_marginals_are_invariant_and_consistent(tiny_model, paper_tax_module) -> None:
    model, images = tiny_model
    tax = paper_tax_module
    base = _predict(model, images, "d4")
    for g in (lambda x: torch.rot90(x, 1, (-2, -1)), lambda x: x.flip(-2), lambda x: x.transpose(-2, -1)):
        assert torch.allclose(_predict(model, g(images).contiguous(), "d4"), base, atol=1e-5)
    assert not torch.allclose(_predict(model, images.flip(-2).contiguous(), "none"), _predict(model, images, "none"))
    # an average of consistent marginals is consistent: root 1, every parent the sum of its children
    assert torch.allclose(base[:, tax.index(tax.root)], torch.ones(len(images)), atol=1e-5)
    for node in tax.nodes:
        children = list(tax.children(node))
        if children:
            kids = base[:, [tax.index(c) for c in children]].sum(1)
            assert torch.allclose(base[:, tax.index(node)], kids, atol=1e-5), node


# ------------------------------------------------------------------------------- training
SYN = ["--backbone", "test_convnext", "--synthetic-per-leaf", "4", "--seed", "5", *FAST]


def test_train_tta_is_what_evaluate_reproduces(tmp_path: Path) -> None:
    from examples.leukemia.evaluate import main as evaluate_main

    out = tmp_path / "run"
    res = T.run(T.parse_args([*SYN, "--epochs", "1", "--tta", "d4", "--output", str(out)]))
    assert res.config["tta"] == "d4" and json.loads((out / "config.json").read_text())["tta"] == "d4"
    got = evaluate_main([str(out), "--out", str(tmp_path / "eval"), "--no-figures", "--device", "cpu"])
    row = got["rows"][0]
    assert row["tta"] == "d4"
    assert math.isclose(row["metrics"]["hierarchical_f1"], res.test["hierarchical_f1"], abs_tol=1e-9)
    plain = evaluate_main([str(out), "--out", str(tmp_path / "e2"), "--no-figures", "--device", "cpu", "--tta", "none"])
    assert plain["rows"][0]["tta"] == "none"
    assert ", d4 TTA |" in (tmp_path / "eval" / "results.md").read_text()
    assert "TTA" not in (tmp_path / "e2" / "results.md").read_text()


def _float_items(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weights.items() if v.is_floating_point()}


def test_ema_after_a_resume_follows_the_update_rule(tmp_path: Path) -> None:
    """One step per epoch: after step 1 the average is the weights m1; after step 2 it is
    d * m1 + (1 - d) * m2 with timm's warmed-up decay d = min(ema, 1 - (1 + 1) ** -0.75)."""
    decay = 0.9  # test_resnet has BatchNorm: its running statistics are averaged too (float buffers below)
    common = [
        *SYN,
        "--backbone",
        "test_resnet",
        "--epochs",
        "2",
        "--batch-size",
        "100000",
        "--ema",
        str(decay),
        "--output",
        str(tmp_path / "r"),
    ]
    T.run(T.parse_args([*common, "--stop-after", "1"]))
    first = load_checkpoint(tmp_path / "r" / "last")
    m1 = _float_items(first.weights)
    ema1 = _float_items(first.state["ema"])
    assert ema1.keys() == m1.keys() and all(torch.allclose(ema1[k], m1[k], atol=1e-7) for k in m1)
    best = load_checkpoint(tmp_path / "r" / "best")  # epoch 0, the only one: the average is what is saved
    assert best.epoch == 0 and all(torch.equal(best.weights[k], first.state["ema"][k]) for k in first.state["ema"])
    T.run(T.parse_args([*common, "--resume"]))
    second = load_checkpoint(tmp_path / "r" / "last")
    assert second.epoch == 1
    m2, ema2 = _float_items(second.weights), _float_items(second.state["ema"])
    d = min(decay, 1 - (1 + 1) ** -0.75)
    moved = [k for k in m2 if not torch.equal(m1[k], m2[k])]
    assert moved and any("running_mean" in k for k in moved), "the second step must change weights and BN statistics"
    for k in m2:
        assert torch.allclose(ema2[k], d * m1[k] + (1 - d) * m2[k], atol=1e-6), k


def test_ema_weights_are_validated_saved_as_best_and_resume_exactly(tmp_path: Path) -> None:
    common = [*SYN, "--synthetic-per-leaf", "12", "--epochs", "2", "--ema", "0.99"]
    a = T.run(T.parse_args([*common, "--output", str(tmp_path / "a")]))
    last = load_checkpoint(tmp_path / "a" / "last")
    best = load_checkpoint(tmp_path / "a" / "best")
    # seeded: the second epoch validates best, so best holds that epoch's average, not its raw weights
    assert a.best["epoch"] == 1, "precondition of this test (seeded): the last epoch is the best"
    ema = _float_items(last.state["ema"])
    assert all(torch.equal(best.weights[k], ema[k]) for k in ema)
    assert any(not torch.equal(best.weights[k], last.weights[k]) for k in ema)
    # the validation metrics in the log are those of the weights saved as best
    from examples.leukemia.evaluate import main as evaluate_main

    row = evaluate_main(
        [str(tmp_path / "a"), "--split", "val", "--out", str(tmp_path / "ev"), "--no-figures", "--device", "cpu"]
    )["rows"][0]
    assert math.isclose(row["metrics"]["hierarchical_f1"], a.best["metrics"]["hierarchical_f1"], abs_tol=1e-9)
    # resume: the same weights, average, history and test as the uninterrupted run
    T.run(T.parse_args([*common, "--output", str(tmp_path / "b"), "--stop-after", "1"]))
    b = T.run(T.parse_args([*common, "--output", str(tmp_path / "b"), "--resume"]))
    la, lb = (load_checkpoint(tmp_path / r / "last") for r in ("a", "b"))
    assert all(torch.equal(la.weights[k], lb.weights[k]) for k in la.weights)
    assert all(torch.equal(la.state["ema"][k], lb.state["ema"][k]) for k in la.state["ema"])
    assert a.test == b.test and a.best["epoch"] == b.best["epoch"]
    wa, wb = (load_file(checkpoint_paths(tmp_path / r / "best")[0]) for r in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ema_errors(tmp_path: Path, capsys) -> None:
    for bad in ("1", "-0.1", "1.5"):
        with pytest.raises(SystemExit) as err:
            T.parse_args(["--ema", bad])
        assert err.value.code == 2 and "error: --ema: expected a decay in" in capsys.readouterr().err
    T.run(T.parse_args([*SYN, "--epochs", "2", "--stop-after", "1", "--output", str(tmp_path / "r")]))
    with pytest.raises(CheckpointError, match="saved without --ema"):
        T.run(T.parse_args([*SYN, "--epochs", "2", "--ema", "0.9", "--output", str(tmp_path / "r"), "--resume"]))


def test_resume_warns_about_a_changed_recipe_only(tmp_path: Path, caplog) -> None:
    import logging

    common = [*SYN, "--epochs", "2", "--output", str(tmp_path / "r")]
    T.run(T.parse_args([*common, "--stop-after", "1"]))
    with caplog.at_level(logging.WARNING):
        T.run(T.parse_args([*common, "--resume", "--stop-after", "1"]))
    assert "settings differ" not in caplog.text  # same flags: nothing to say
    with caplog.at_level(logging.WARNING):
        T.run(T.parse_args([*common, "--resume", "--tta", "flip"]))
    assert "settings differ" in caplog.text and "'tta': ('none', 'flip')" in caplog.text
    # another thread count changes CPU sums (about 1e-4 in the weights after an epoch): warned, not silent
    caplog.clear()
    T.run(T.parse_args([*SYN, "--epochs", "2", "--output", str(tmp_path / "t"), "--stop-after", "1"]))
    with caplog.at_level(logging.WARNING):
        T.run(T.parse_args([*SYN, "--epochs", "2", "--output", str(tmp_path / "t"), "--resume", "--threads", "2"]))
    assert "settings differ" in caplog.text and "'threads': (1, 2)" in caplog.text


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--lr", "1e-5"], "lr: 0.002 in the run, 1e-05 now"),  # ignored: the optimizer state wins
        (["--best-metric", "nll"], "best_metric: 'leaf_accuracy' in the run, 'nll' now"),  # two scales
        (["--clip-grad", "0.5"], "clip_grad: 1.0 in the run, 0.5 now"),
        (["--epochs", "3"], "epochs: 2 in the run, 3 now"),  # the cosine schedule would not finish
    ],
)
def test_resume_refuses_a_changed_training_setting(flags: list[str], said: str, tmp_path: Path) -> None:
    """A resumed run with another recipe was accepted: --lr and --weight-decay were ignored (the optimizer
    state wins) while config.json recorded them, and another --best-metric picked the wrong best."""
    common = [*SYN, "--epochs", "2", "--output", str(tmp_path / "r")]
    T.run(T.parse_args([*common, "--stop-after", "1"]))
    before = (tmp_path / "r" / "config.json").read_text()
    with pytest.raises(ValueError, match=re.escape(said) + r".*resume it with the run's own flags.*--init-checkpoint"):
        T.run(T.parse_args([*common, *flags, "--resume"]))
    assert (tmp_path / "r" / "config.json").read_text() == before
    T.run(T.parse_args([*common, "--resume", "--workers", "1", "--quiet"]))  # how it runs may change


def test_resume_refuses_changed_backbone_options_and_keeps_drop_path_apart(tmp_path: Path) -> None:
    """--backbone-kwargs were never compared on --resume: another drop_path_rate resumed silently."""
    common = [*SYN, "--epochs", "2", "--output", str(tmp_path / "r"), "--drop-path", "0.1"]
    T.run(T.parse_args([*common, "--backbone-kwargs", '{"ls_init_value": 0.5}', "--stop-after", "1"]))
    for other in ('{"ls_init_value": 0.25}', "{}"):
        with pytest.raises(ValueError, match=r"--resume: .* built its backbone with --backbone-kwargs"):
            T.run(T.parse_args([*common, "--backbone-kwargs", other, "--resume"]))
    with pytest.raises(ValueError, match=r"drop_path: 0.1 in the run, 0.2 now"):  # the flag, named as such
        T.run(T.parse_args([*SYN, "--epochs", "2", "--output", str(tmp_path / "r"), "--drop-path", "0.2",
                            "--backbone-kwargs", '{"ls_init_value": 0.5}', "--resume"]))  # fmt: skip
    T.run(T.parse_args([*common, "--backbone-kwargs", '{"ls_init_value": 0.5}', "--resume"]))


def test_a_refused_resume_leaves_the_synthetic_images_alone(tmp_path: Path) -> None:
    """--seed also seeds the SYNTHETIC images: a refused resume remade them with the new seed first."""
    common = [*SYN, "--epochs", "2", "--output", str(tmp_path / "r")]
    T.run(T.parse_args([*common, "--stop-after", "1"]))
    stamp = tmp_path / "r" / "SYNTHETIC_images.json"
    images = sorted((tmp_path / "r" / "SYNTHETIC_images").rglob("*.jpg"))
    before = stamp.read_text(), [p.read_bytes() for p in images]
    with pytest.raises(ValueError, match=r"--resume: the run.s SYNTHETIC images .*\(seed: 5 in the run, 6 now\)"):
        T.run(T.parse_args([*common, "--resume", "--seed", "6"]))
    assert (stamp.read_text(), [p.read_bytes() for p in images]) == before


def test_explain_decodes_the_tta_average_like_predict(tiny_model, paper_tax_module) -> None:
    from examples.leukemia.explain import explain
    from examples.leukemia.gpu_data import IMAGENET_MEAN, IMAGENET_STD

    model, images = tiny_model
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    normalised = (images.float() / 255 - mean) / std
    for tta in ("none", "d4"):
        pred, maps = explain(model, normalised, rule="top_down", tta=tta)
        want = decode(_predict(model, images, tta), paper_tax_module, "top_down")
        assert torch.equal(pred, want), tta
        probs = _predict(model, images, tta)
        for i, per_image in enumerate(maps):  # the probabilities shown are the averaged ones
            for _depth, node, p, cam in per_image:
                assert math.isclose(p, float(probs[i, node]), abs_tol=1e-5) and cam.shape == (32, 32)
    with pytest.raises(ValueError, match="tta: expected one of"):
        explain(model, normalised, rule="top_down", tta="x")
