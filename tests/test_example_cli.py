"""The leukemia example's command lines: flag checks at parse time, clean user errors, help texts, run folders."""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from examples.leukemia import train as T
from examples.leukemia.__main__ import COMMANDS
from examples.leukemia.cli import DEBUG_ENV, exits_cleanly
from examples.leukemia.data import DataWarning, load_taxonomy, scan
from hiercls import UnknownNodeError
from tests.strategies import trees

REPO = Path(__file__).resolve().parents[1]
FAST = ["--quiet", "--no-tensorboard", "--img-size", "32", "--batch-size", "8", "--workers", "1"]


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run (SYNTHETIC, test_convnext at 32 px, one epoch): a run folder holding best.json."""
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["--backbone", "test_convnext", "--epochs", "1", "--synthetic-per-leaf", "2", "--output", str(out), *FAST]
    T.run(T.parse_args(args))
    return out


# ------------------------------------------------------------------ 1. flag values, at parse time
@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--epochs", "0"], "argument --epochs: expected a whole number >= 1, got '0'"),
        # both used to surface only after the first epoch (--eval-batch-size) or never (-1 read as 0)
        (["--eval-batch-size", "0"], "argument --eval-batch-size: expected a whole number >= 1, got '0'"),
        (["--checkpoint-every", "-1"], "argument --checkpoint-every: expected a whole number >= 0, got '-1'"),
        (["--stop-after", "0"], "argument --stop-after: expected a whole number >= 1, got '0'"),
        (["--weight-decay", "-1"], "argument --weight-decay: expected a number >= 0, got '-1'"),
        (["--clip-grad", "-1"], "argument --clip-grad: expected a number >= 0, got '-1'; 0 turns it off"),
        (["--warmup", "nan"], "argument --warmup: expected a number >= 0, got 'nan'"),
        (["--drop-path", "1.5"], "argument --drop-path: expected a number in [0, 1), got '1.5'"),
        (["--label-smoothing", "2"], "argument --label-smoothing: expected a number in [0, 1], got '2'"),
        (["--threads", "-2"], "argument --threads: expected a whole number >= 1, got '-2'"),
        (["--img-size", "4"], "argument --img-size: expected a whole number >= 8, got '4'"),
        (["--limit", "0"], "argument --limit: expected a whole number >= 1, got '0'; leave --limit out"),
        (["--batch-size", "0"], "argument --batch-size: expected a whole number >= 1, got '0'"),
        (["--batch-size", "two"], "argument --batch-size: expected a whole number >= 1, got 'two'"),
        (["--lr", "0"], "argument --lr: expected a number > 0, got '0'"),
        (["--lr=-1e-3"], "argument --lr: expected a number > 0, got '-1e-3'"),
        (["--threshold", "0"], "argument --threshold: expected a probability in (0, 1], got '0'"),
        (["--threshold", "1.5"], "argument --threshold: expected a probability in (0, 1], got '1.5'"),
        (["--threshold", "0.8"], "--threshold 0.8: only the 'threshold' rule reads it, and --decode is 'auto'"),
        (["--decode", "top_down", "--threshold", "0.8"], "add --decode threshold, or drop --threshold"),
        (["--data", "imgs", "--pack", "p.npz"], "--data and --pack: expected one source of images, got both"),
    ],
)
def test_train_refuses_bad_flag_values_when_parsing(argv: list[str], said: str, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        T.parse_args(argv)
    assert err.value.code == 2 and said in capsys.readouterr().err


def test_a_device_the_machine_lacks_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from examples.leukemia.cli import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(argparse.ArgumentTypeError, match="no CUDA device; use --device cpu"):
        device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device("cuda:1") == "cuda:1" and device("cpu") == "cpu"
    with pytest.raises(argparse.ArgumentTypeError, match=r"2 CUDA device\(s\), cuda:0 to cuda:1"):
        device("cuda:2")
    with pytest.raises(SystemExit):
        T.parse_args(["--device", "gpu"])


def test_train_keeps_good_flag_values() -> None:
    argv = [
        "--epochs",
        "1",
        "--limit",
        "5",
        "--batch-size",
        "1",
        "--lr",
        "1e-4",
        "--decode",
        "threshold",
        "--threshold",
        "1",
    ]
    args = T.parse_args(argv)
    assert (args.epochs, args.limit, args.batch_size, args.lr, args.threshold) == (1, 5, 1, 1e-4, 1.0)
    assert T.parse_args(["--pack", "p.npz"]).limit == 0  # no --limit: every image


@pytest.mark.parametrize(
    ("script", "argv", "said"),
    [
        ("explain", ["ckpt", "img", "--max-images", "0"], "argument --max-images: expected a whole number >= 1"),
        ("explain", ["ckpt", "img", "--threshold", "0"], "argument --threshold: expected a probability in (0, 1]"),
        ("predict", ["ckpt", "img", "--threshold", "2"], "argument --threshold: expected a probability in (0, 1]"),
        ("evaluate", ["ckpt", "--threshold", "0"], "argument --threshold: expected a probability in (0, 1]"),
        # these failed with a torch traceback, predict's and explain's after every image had been read
        ("predict", ["ckpt", "img", "--decode", "topdown"], "argument --decode: expected one of auto, argmax_leaf"),
        ("explain", ["ckpt", "img", "--decode", "topdown"], "argument --decode: expected one of auto, argmax_leaf"),
        *[
            (script, [*pos, "--device", "gpu"], "argument --device: expected a torch device such as cpu, cuda")
            for script, pos in (
                ("predict", ["ckpt", "img"]),
                ("explain", ["ckpt", "img"]),
                ("evaluate", ["ckpt"]),
                ("compare", ["--pack", "p.npz"]),
            )
        ],
    ],
)
def test_other_scripts_refuse_bad_flag_values_when_parsing(script: str, argv: list[str], said: str, capsys) -> None:
    module = importlib.import_module(f"examples.leukemia.{script}")
    with pytest.raises(SystemExit) as err:
        module.build_parser().parse_args(argv)
    text = capsys.readouterr().err
    assert err.value.code == 2 and said in text
    # two lines: the error and where every option is, not the whole usage block first
    assert "usage:" not in text and text.strip().endswith("--help)") and len(text.strip().splitlines()) == 2


# ------------------------------------------------------------------ 2. model flags, before any data
@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def read(*args, **kwargs):
        raise AssertionError("data was read before the model flags were checked")

    monkeypatch.setattr(T, "load_data", read)


def test_mistyped_backbone_is_refused_before_any_data(no_data, tmp_path: Path, capsys) -> None:
    argv = [
        "--data",
        str(tmp_path / "images"),
        "--taxonomy",
        "paper",
        "--backbone",
        "convnext_tiy",
        "--output",
        str(tmp_path / "run"),
    ]
    with pytest.raises(SystemExit) as err:
        T.main(argv)
    text = capsys.readouterr().err
    assert err.value.code == 2 and "error: backbone: timm has no model 'convnext_tiy'" in text
    assert "closest names: 'convnext_tiny'" in text, "difflib's closest name comes first"


def test_head_loss_pair_is_refused_before_any_data(no_data, tmp_path: Path, capsys) -> None:
    argv = ["--data", str(tmp_path / "images"), "--taxonomy", "paper", "--head", "conditional", "--loss", "bce"]
    with pytest.raises(SystemExit) as err:
        T.main([*argv, "--backbone", "test_convnext", "--output", str(tmp_path / "run")])
    assert err.value.code == 2 and "error: head/loss: --head 'conditional' and --loss 'bce'" in capsys.readouterr().err


# ------------------------------------------------------------------ 3. a CSV listing an image twice
def test_csv_duplicates_kept_once_or_left_out(tmp_path: Path) -> None:
    rows = [("a.png", "Normal"), ("b.png", "CLL"), ("c.png", "APL"), ("d.png", "ALL")]
    for i, (name, _) in enumerate(rows):
        _image(tmp_path / name, i)
    rows += [("a.png", "Normal"), ("./a.png", "Normal"), ("b.png", "CML"), ("c.png", "APL"), ("c.png", "Reactive")]
    manifest = tmp_path / "labels.csv"
    with open(manifest, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label"), *rows])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples, report = scan(manifest, "paper", layout="csv", workers=1)
    assert sorted((Path(s.path).name, s.label) for s in samples) == [("a.png", "Normal"), ("d.png", "ALL")]
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    same = [m for m in said if "found more than once with the same label (listed twice in a CSV" in m]
    differ = [m for m in said if "listed more than once in the CSV with different labels" in m]
    assert len(same) == 1 and "1 image(s)" in same[0] and "a.png" in same[0]
    assert len(differ) == 1 and "skipped 2 file(s)" in differ[0] and "b.png" in differ[0] and "c.png" in differ[0]
    assert report.repeated == [str(tmp_path / "a.png")]


# ------------------------------------------------------------------ 4. a clean exit for user errors
def test_every_script_exits_cleanly() -> None:
    for command in COMMANDS:
        main = importlib.import_module(f"examples.leukemia.{command}").main
        assert getattr(main, "__wrapped__", None) is not None, f"{command}.main is not decorated with exits_cleanly"


def test_user_error_is_one_line_exit_2_and_debug_reraises(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    argv = [
        "--data",
        str(tmp_path),
        "--taxonomy",
        str(tmp_path / "no_tree.json"),
        "--output",
        str(tmp_path.parent / f"{tmp_path.name}-run"),
    ]
    with pytest.raises(SystemExit) as err:
        T.main([*argv, "--backbone", "test_convnext", *FAST])
    text = capsys.readouterr().err
    assert err.value.code == 2 and text.startswith("error: taxonomy: ") and "Traceback" not in text
    assert DEBUG_ENV not in text, "our own message says what to do: no debug hint"
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(FileNotFoundError, match="neither a bundled taxonomy"):
        T.main([*argv, "--backbone", "test_convnext", *FAST])


def test_clean_exit_hints_at_the_traceback_only_for_foreign_errors_and_keeps_bugs(monkeypatch, capsys) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    @exits_cleanly
    def foreign(argv=None):
        return int("x")  # a ValueError raised outside the example and hiercls

    @exits_cleanly
    def bug(argv=None):
        raise RuntimeError("a genuine bug")

    with pytest.raises(SystemExit) as err:
        foreign()
    text = capsys.readouterr().err.splitlines()
    assert err.value.code == 2 and text[0].startswith("error: invalid literal") and f"{DEBUG_ENV}=1" in text[-1]
    with pytest.raises(RuntimeError, match="a genuine bug"):
        bug()


def test_module_exits_with_status_2_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "examples.leukemia.predict", str(tmp_path / "nope"), str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": "", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ 5. Grad-CAM on a 1x1 feature grid
def test_explain_warns_once_on_a_1x1_feature_grid(caplog) -> None:
    from examples.leukemia.explain import explain
    from examples.leukemia.models import build_model

    tax = load_taxonomy("paper")
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    cnn = build_model("test_convnext", tax, "hierarchical", img_size=32).eval()
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.explain"):
        explain(cnn, images, rule="top_down")
    said = [r.getMessage() for r in caplog.records if "feature grid" in r.getMessage()]
    assert len(said) == 1 and "1x1 for 32x32 px" in said[0] and "--img-size" in said[0] and "ViT" in said[0]
    caplog.clear()
    vit = build_model("test_vit", tax, "hierarchical", img_size=32, backbone_kwargs={"patch_size": 8}).eval()
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.explain"):
        explain(vit, images, rule="top_down")
    assert "feature grid" not in caplog.text, "a 4x4 patch grid has spatial information"


def test_explain_reads_a_vit_at_another_size_than_it_was_built_for() -> None:
    """``explain --img-size`` on a ViT: the patch grid is that of the input (8x8 at 64 px), not the one the
    model was built with (4x4 at 32 px); the reshape raised a RuntimeError."""
    from examples.leukemia.explain import explain
    from examples.leukemia.models import build_model

    tax = load_taxonomy("paper")
    torch.manual_seed(0)
    vit = build_model("test_vit", tax, "hierarchical", img_size=32, backbone_kwargs={"patch_size": 8}).eval()
    _, maps = explain(vit, torch.randn(1, 3, 64, 64), rule="top_down")
    assert maps[0] and all(m.shape == (64, 64) and m.min() >= 0.0 and m.max() <= 1.0 for *_, m in maps[0])


def test_explain_looks_past_unreadable_files_for_max_images(run_dir: Path, tmp_path: Path) -> None:
    """It read only the first 2 x --max-images files, so a folder whose first files are not images gave none."""
    from examples.leukemia import explain

    good = sorted((run_dir / "SYNTHETIC_images").rglob("*.jpg"))[0]
    for i in range(3):
        (tmp_path / "in" / f"a{i}.jpg").parent.mkdir(exist_ok=True)
        (tmp_path / "in" / f"a{i}.jpg").write_bytes(b"not an image")
    shutil.copy(good, tmp_path / "in" / "z.jpg")
    explain.main([str(run_dir), str(tmp_path / "in"), "--max-images", "1", "--out", str(tmp_path / "ex")])
    with open(tmp_path / "ex" / "explain.csv", newline="") as fh:
        assert {Path(r["image"]).name for r in csv.DictReader(fh)} == {"z.jpg"}


# ------------------------------------------------------------------ 6. naming the taxonomy in label errors
def test_unknown_label_message_names_the_taxonomy_given(tmp_path: Path) -> None:
    _image(tmp_path / "data" / "Lymphoma" / "x.png")
    _image(tmp_path / "data" / "Normal" / "y.png", 1)
    args = T.parse_args(["--data", str(tmp_path / "data"), "--taxonomy", "paper", "--output", str(tmp_path), *FAST])
    with pytest.raises(UnknownNodeError) as err:
        T.load_data(args, T.init_distributed("cpu"), tmp_path)
    assert "folder name(s) not in the taxonomy 'paper' (" in str(err.value)
    with pytest.raises(UnknownNodeError) as err:  # a Taxonomy object: no name to give, and no doubled phrase
        scan(tmp_path / "data", load_taxonomy("paper"), layout="folder", workers=1)
    assert "not in the taxonomy (root 'root', 11 nodes)" in str(err.value) and "the given" not in str(err.value)


# ------------------------------------------------------------------ 7. run folders for predict and explain
def test_predict_and_explain_take_a_run_folder(run_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from examples.leukemia import explain, predict

    images = sorted((run_dir / "SYNTHETIC_images").rglob("*.jpg"))[:2]
    rows = predict.main([str(run_dir), *map(str, images), "--out", str(tmp_path / "p.csv")])
    assert [r["path"] for r in rows] == list(map(str, images))
    # the command line keeps no rows (a big folder's would fill memory); the CSV is the same
    assert predict.main([str(run_dir), *map(str, images), "--out", str(tmp_path / "p2.csv")], keep_rows=False) == []
    assert (tmp_path / "p2.csv").read_text() == (tmp_path / "p.csv").read_text()
    from examples.leukemia.__main__ import main as dispatch

    calls = []
    monkeypatch.setattr(predict, "main", lambda argv, **kw: calls.append(kw) or [])
    assert dispatch(["predict", str(run_dir), str(images[0])]) == 0 and calls == [{"keep_rows": False}]
    monkeypatch.undo()
    assert len(explain.main([str(run_dir), str(images[0]), "--out", str(tmp_path / "ex")])) >= 1
    with open(tmp_path / "ex" / "explain.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert table and all(r["map_is_flat"] in ("True", "False") for r in table)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit):
        predict.main([str(tmp_path), str(images[0]), "--out", str(tmp_path / "q.csv")])
    assert "has no best.json" in capsys.readouterr().err


# ------------------------------------------------------------------ 8. help texts
def test_help_texts(capsys) -> None:
    from examples.leukemia.cli import HelpFormatter

    parser = T.build_parser()
    text = " ".join(parser.format_help().split())
    assert "(default: inferred from the data)" not in text and "Required for a folder or CSV layout" in text
    assert "(default: None)" not in text
    # the --no-... switches: no "(default: True)" (their dest is True unless given)
    assert "--no-augment no flips/rotations/shifts/colour jitter --ema" in text
    assert "no --resume then) --stop-after" in text and "--no-test skip the final test-split evaluation --no" in text
    helps = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    for flag in ("--split-seed", "--seed", "--weight-decay", "--label-smoothing"):
        assert helps[flag].help, f"{flag} has no help"
    formatter = HelpFormatter("train")
    for flag, action in helps.items():  # the default said once at most
        assert (formatter._get_help_string(action) or "").replace("%(default)s", "").count("default") <= 1, flag
    from examples.leukemia import pack

    with pytest.raises(SystemExit):
        pack.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "so 0.7 zooms in" in out and "required for a folder or CSV layout" in out


# ------------------------------------------------------------------ 9. predict's answer 'root'
def test_answer_is_the_root_when_no_first_level_node_reaches_the_threshold() -> None:
    from examples.leukemia.predict import predict_rows

    tax = load_taxonomy("paper")
    probs = torch.zeros(1, tax.num_nodes)
    probs[0, tax.index("root")] = 1.0
    for node in ("Normal", "Reactive", "Leukemia"):  # 1/3 each: none reaches 0.5
        probs[0, tax.index(node)] = 1 / 3
    probs[0, tax.index("Acute")] = probs[0, tax.index("ALL")] = 1 / 3
    (row,) = predict_rows(probs, tax, ["x.png"], rule="top_down", threshold=0.5)
    assert row["answer"] == row["answer_path"] == "root" and row["answer_is_leaf"] is False


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_cautious_answer_walks_down_the_predictions_path(data) -> None:
    """The answer is where a walk down the prediction's path stops (loop oracle), so always the prediction
    or one of its ancestors: at a low threshold the global threshold rule jumped to another branch."""
    from examples.leukemia.predict import cautious_answer, predict_rows
    from hiercls.marginals import conditional_marginals, sigmoid_marginals

    tax = data.draw(trees(max_nodes=12))
    n = data.draw(st.integers(1, 5))
    logits = torch.tensor(data.draw(st.lists(st.floats(-4, 4), min_size=n * tax.num_nodes, max_size=n * tax.num_nodes)))
    head = data.draw(st.sampled_from([conditional_marginals, sigmoid_marginals]))  # coherent or not
    probs = head(logits.reshape(n, tax.num_nodes), tax)
    threshold = data.draw(st.floats(0.01, 0.99))
    rule = data.draw(st.sampled_from(["argmax_leaf", "top_down", "crm"]))
    rows = predict_rows(probs, tax, [f"{i}.png" for i in range(n)], rule=rule, threshold=threshold)
    for i, row in enumerate(rows):
        route = tax.path(row["prediction"])
        stop = route[0]
        for node in route[1:]:
            if float(probs[i, tax.index(node)]) < threshold:
                break
            stop = node
        assert row["answer"] == stop and row["answer_path"] == "/".join(tax.path(stop))
        assert row["prediction_path"].startswith(row["answer_path"])
    table = np.asarray(tax.ancestor_table)
    pred = np.array([tax.index(r["prediction"]) for r in rows])
    assert [tax.nodes[a] for a in cautious_answer(probs.numpy(), table[pred], threshold)] == [r["answer"] for r in rows]


def test_the_cautious_answer_compares_the_threshold_exactly() -> None:
    """float32(0.7) is below 0.7: decode's threshold rule says it does not reach 0.7, so must predict."""
    from examples.leukemia.predict import cautious_answer

    probs = np.array([[1.0, 0.7, 0.7]], dtype=np.float32)  # root, a, a1: the last two at float32(0.7)
    assert cautious_answer(probs, np.array([[0, 1, 2]]), 0.7).tolist() == [0]
    assert cautious_answer(probs, np.array([[0, 1, 2]]), float(np.float32(0.7))).tolist() == [2]


def test_the_cautious_answer_stays_on_the_predictions_branch() -> None:
    """The reviewer's case: P(Reactive) = 0.35 is the top first-level node; Leukemia/Acute reach 0.1 too."""
    from examples.leukemia.predict import predict_rows

    tax = load_taxonomy("paper")
    probs = torch.zeros(1, tax.num_nodes)
    for node, p in {"root": 1.0, "Normal": 0.3, "Reactive": 0.35, "Leukemia": 0.35, "Acute": 0.2, "ALL": 0.17}.items():
        probs[0, tax.index(node)] = p
    probs[0, tax.index("Chronic")] = 0.15
    (row,) = predict_rows(probs, tax, ["x.png"], rule="top_down", threshold=0.1)
    assert row["prediction"] == "Reactive" and row["answer"] == "Reactive"


def test_compare_refuses_a_mistyped_backbone_before_any_run(tmp_path: Path, capsys) -> None:
    """The typo is in the last run: it must stop the comparison at once, not after the runs before it
    (the pack does not even exist: it is never read)."""
    from examples.leukemia.compare import main

    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as err:
        main(
            ["--pack", str(tmp_path / "missing.npz"), "--runs", "flat:test_resnet,flat:convnext_tiy", "--out", str(out)]
        )
    text = capsys.readouterr().err
    assert err.value.code == 2 and re.search(r"^error: --backbones/--runs: .*'convnext_tiy'.*convnext_tiny", text)
    assert not out.exists()
    for argv, said in (
        (["--runs", "flat:test_resnet"], "error: --pack or --data: expected a source of real images, got neither"),
        (["--pack", "x.npz", "--runs", "flatt:test_resnet"], "error: --methods/--runs: unknown method 'flatt'"),
    ):
        with pytest.raises(SystemExit) as err:
            main([*argv, "--out", str(out)])
        assert err.value.code == 2 and said in capsys.readouterr().err


def test_a_data_error_leaves_no_empty_run_folder(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    out = tmp_path / "run"
    with pytest.raises(ValueError):
        T.run(
            T.parse_args(
                ["--data", str(empty), "--taxonomy", "paper", "--backbone", "test_convnext", "--output", str(out)]
            )
        )
    assert not out.exists()
    kept = tmp_path / "existing"
    kept.mkdir()  # a folder the user made stays, even empty
    with pytest.raises(ValueError):
        T.run(
            T.parse_args(
                ["--data", str(empty), "--taxonomy", "paper", "--backbone", "test_convnext", "--output", str(kept)]
            )
        )
    assert kept.is_dir()


def test_data_warnings_print_as_one_line_while_a_script_runs() -> None:
    """A skipped file is news for the user: 'warning: <message>', not 'data.py:532: DataWarning: ...'
    followed by the source line; other warnings keep Python's format, and the format is restored after."""
    code = (
        "import warnings\n"
        "from examples.leukemia.cli import exits_cleanly\n"
        "from examples.leukemia.data import DataWarning\n"
        "@exits_cleanly\n"
        "def main():\n"
        "    warnings.warn('skipped 1 file(s): not an image; first: a/.DS_1.jpg', DataWarning)\n"
        "    warnings.warn('something else', RuntimeWarning)\n"
        "main()\n"
        "warnings.warn('after main', DataWarning)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    lines = done.stderr.splitlines()
    assert "warning: skipped 1 file(s): not an image; first: a/.DS_1.jpg" in lines
    assert any("RuntimeWarning: something else" in line for line in lines)
    assert any("DataWarning: after main" in line for line in lines)  # outside main: Python's own format


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_stay_out_of_redirected_output(tmp_path: Path, monkeypatch, terminal: bool) -> None:
    """On a terminal the bars draw ('\\r' updates); redirected to a file they are off, so a log holds the
    per-epoch lines only, not carriage-return fragments of a bar."""
    from examples.leukemia.pack import pack

    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    fast = [a for a in FAST if a != "--quiet"]
    T.run(T.parse_args([*fast, "--epochs", "1", "--synthetic-per-leaf", "3", "--output", str(tmp_path / "run")]))
    pack(tmp_path / "run" / "SYNTHETIC_images", tmp_path / "p.npz", taxonomy="paper", size=16, workers=1)
    text = err.getvalue()
    assert ("\r" in text) is terminal
    assert ("epoch 1/1:" in text) is terminal and ("pack 16px" in text) is terminal


def test_compare_run_specs_with_a_head() -> None:
    from argparse import Namespace

    from examples.leukemia.compare import _runs

    def parse(runs: str):
        return _runs(Namespace(runs=runs, methods="", backbones=""))

    assert parse("hierarchical:test_resnet:conditional,flat:test_resnet") == [
        ("hierarchical", "test_resnet", "conditional"),
        ("flat", "test_resnet", None),
    ]
    # a hub name keeps its ':'; a head after it is still read as the head
    assert parse("flat:hf-hub:timm/resnet18.a1_in1k") == [("flat", "hf-hub:timm/resnet18.a1_in1k", None)]
    assert parse("hierarchical:hf-hub:timm/x:sigmoid") == [("hierarchical", "hf-hub:timm/x", "sigmoid")]
    for runs, said in (
        ("hierarchical:test_resnet:condtional", "unknown head 'condtional'; expected one of"),
        ("per-level:test_resnet:conditional", "per-level method is one softmax per level"),
        ("flat:", "names no backbone"),
        ("flat:test_resnet,flat:test_resnet", "are the same run"),
        ("hierarchical:test_resnet,hierarchical:test_resnet:level", "are the same run .hierarchical on test_resnet"),
    ):
        with pytest.raises(ValueError, match=said):
            parse(runs)


@pytest.mark.parametrize("extra", [[], ["--split-seed", "0", "--limit", "40"]], ids=["plain", "seed0-limit"])
def test_a_moved_run_folder_is_still_evaluated(tmp_path: Path, caplog, extra: list[str]) -> None:
    """splits.csv keeps paths relative to the run folder; once the folder moves, evaluate scans the run's
    own data again (the same split, by its seed), and says what it does."""
    from examples.leukemia.evaluate import main as evaluate_main

    common = ["--backbone", "test_convnext", "--epochs", "1", *FAST]
    T.run(T.parse_args([*common, "--synthetic-per-leaf", "6", "--output", str(tmp_path / "gen")]))
    data = tmp_path / "data"  # a folder of images of one's own, outside the run folder
    shutil.copytree(tmp_path / "gen" / "SYNTHETIC_images", data)
    run = tmp_path / "runs" / "r"
    T.run(T.parse_args([*common, *extra, "--data", str(data), "--taxonomy", "paper", "--output", str(run)]))
    before = evaluate_main([str(run / "best"), "--out", str(tmp_path / "ev0"), "--no-figures"])["rows"][0]
    moved = tmp_path / "elsewhere" / "deeper" / "r"
    moved.parent.mkdir(parents=True)
    shutil.move(str(run), str(moved))
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.evaluate"):
        after = evaluate_main([str(moved / "best"), "--out", str(tmp_path / "ev1"), "--no-figures"])["rows"][0]
    assert "a moved run folder?" in caplog.text
    assert after["metrics"] == before["metrics"]  # the same test images (a seed of 0 and --limit included)
    # --data naming the run's own data repeats its --limit draw and seed too
    again = evaluate_main([str(moved / "best"), "--data", str(data), "--out", str(tmp_path / "ev3"), "--no-figures"])
    assert again["rows"][0]["metrics"] == before["metrics"]
    # when the run's data cannot stand in (here: gone), the error says what to pass
    shutil.rmtree(data)
    with pytest.raises(FileNotFoundError, match=r"moving the folder loses them: pass --data"):
        evaluate_main.__wrapped__([str(moved / "best"), "--out", str(tmp_path / "ev2"), "--no-figures"])


def test_image_counts_read_as_english() -> None:
    """The run summary said "(1 images)"."""
    assert [T._images(k) for k in (0, 1, 2)] == ["0 images", "1 image", "2 images"]


# ------------------------------------------------------------------ 10. predict's and explain's inputs and outputs
def test_a_bad_out_is_refused_when_parsing_before_any_model(tmp_path: Path, capsys) -> None:
    """A folder for predict's CSV, a file for explain's folder, or a file in the way of either: refused when
    the command line is read. They failed when the results were written, after inference."""
    from examples.leukemia import explain, predict

    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (predict, str(tmp_path / "folder"), "is a folder; give a file name"),
        (predict, str(tmp_path / "file.txt" / "p.csv"), "is a file, not a folder"),
        (predict, "", "expected a file name"),
        (explain, str(tmp_path / "file.txt"), "is a file, not a folder; give a folder"),
        (explain, str(tmp_path / "file.txt" / "deeper"), "is a file, not a folder"),
        (explain, str(tmp_path / "dangling"), "which does not exist; make that folder"),
    ]
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")  # explain's mkdir raised FileExistsError after the work
    for module, out, said in cases:
        with pytest.raises(SystemExit) as err:
            module.build_parser().parse_args(["ckpt", "img", "--out", out])
        assert err.value.code == 2 and said in capsys.readouterr().err, (module.__name__, out)
    # good ones pass, and nothing is made while parsing
    assert predict.build_parser().parse_args(["c", "i", "--out", str(tmp_path / "new" / "p.csv")]).out
    assert explain.build_parser().parse_args(["c", "i", "--out", str(tmp_path / "new2" / "ex")]).out
    assert predict.build_parser().parse_args(["c", "i", "--out", "-"]).out == "-"
    assert not (tmp_path / "new").exists() and not (tmp_path / "new2").exists()
    home = str(Path.home())  # --out=~/...: the shell leaves a ~ after '=' as it is
    assert predict.build_parser().parse_args(["c", "i", "--out=~/p.csv"]).out == str(Path(home) / "p.csv")
    assert explain.build_parser().parse_args(["c", "i", "--out=~/ex"]).out == str(Path(home) / "ex")


def test_an_out_in_a_folder_that_cannot_be_written_is_refused(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked of the nearest folder that exists (os.access is faked: the suite may run as root)."""
    from examples.leukemia import cli, explain, predict

    locked = tmp_path / "locked"
    locked.mkdir()
    asked: list[str] = []
    monkeypatch.setattr(cli.os, "access", lambda path, mode: asked.append(str(path)) or str(path) != str(locked))
    for module, out in ((predict, locked / "p.csv"), (explain, locked / "ex" / "deeper"), (explain, locked)):
        with pytest.raises(SystemExit):
            module.build_parser().parse_args(["ckpt", "img", "--out", str(out)])
        assert "no permission" in capsys.readouterr().err and asked[-1] == str(locked)
    assert predict.build_parser().parse_args(["c", "i", "--out", str(tmp_path / "p.csv")]).out


def test_predict_writes_into_a_new_folder_in_chunks_and_leaves_nothing_half_written(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images are read and predicted CHUNK at a time (all of them were held in memory at once): the rows
    are those of one pass; the CSV goes to a temporary file moved into place at the end."""
    from examples.leukemia import predict

    images = sorted((run_dir / "SYNTHETIC_images").rglob("*.jpg"))[:5]
    whole = predict.main([str(run_dir), *map(str, images), "--out", str(tmp_path / "whole.csv"), "--device", "cpu"])
    monkeypatch.setattr(predict, "CHUNK", 2)
    out = tmp_path / "made" / "here" / "p.csv"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    rows = predict.main([str(run_dir), str(images[0]), str(bad), *map(str, images[1:]), "--out", str(out)])
    assert [r["path"] for r in rows] == list(map(str, images))
    for a, b in zip(rows, whole):
        assert a["prediction"] == b["prediction"] and abs(a["prediction_prob"] - b["prediction_prob"]) < 1e-5
    with open(out, newline="") as fh:
        assert [r["path"] for r in csv.DictReader(fh)] == list(map(str, images))
    assert sorted(p.name for p in out.parent.iterdir()) == ["p.csv"]
    # a symlinked --out is written through, its target keeping its permissions
    target, link = tmp_path / "results" / "real.csv", tmp_path / "latest.csv"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    link.symlink_to(target)
    predict.main([str(run_dir), str(images[0]), "--out", str(link)])
    assert link.is_symlink() and target.read_text().startswith("path,") and (target.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["real.csv"]
    # nothing readable: an error, the earlier CSV left as it was, no temporary file
    before = out.read_text()
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="expected readable images"):
        predict.main([str(run_dir), str(bad), "--out", str(out)])
    assert out.read_text() == before and sorted(p.name for p in out.parent.iterdir()) == ["p.csv"]


def test_find_images_expands_patterns_reads_each_image_once_and_lists_what_it_left_out(tmp_path: Path, caplog) -> None:
    from examples.leukemia.predict import find_images

    a, b = _image(tmp_path / "cells" / "a.png"), _image(tmp_path / "cells" / "sub" / "b.jpg", 1)
    (tmp_path / "cells" / "notes.txt").write_text("x")
    (tmp_path / "cells" / ".DS_Store").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.predict"):
        found = find_images([str(tmp_path / "cells"), str(a), str(tmp_path / "cells" / "**" / "*.jpg")])
    assert found == [str(a), str(b)]  # a folder, the same file again, a quoted pattern: each image once
    assert "left out 1 file(s)" in caplog.text and "notes.txt" in caplog.text and ".DS_Store" not in caplog.text
    assert "2 image(s) were given more than once" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.predict"):  # a pattern's files: as a folder's
        assert find_images([str(tmp_path / "cells" / "*")]) == [str(a), str(b)]
    assert "left out 1 file(s)" in caplog.text and "notes.txt" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.predict"):  # '**' lists every file itself
        assert sorted(find_images([str(tmp_path / "cells" / "**")])) == sorted([str(a), str(b)])
    assert "left out 1 file(s)" in caplog.text and "more than once" not in caplog.text
    with pytest.raises(FileNotFoundError, match=r"no file or folder matches the pattern .*\*\.tif"):
        find_images([str(tmp_path / "cells" / "*.tif")])


def test_find_images_reads_folders_as_the_scan_does_and_names_what_it_leaves_out(tmp_path: Path, caplog) -> None:
    """helper-115: a linked subfolder was skipped without a word (the scan reads it); a link to a file beside
    it hid the file's own row, naming neither; a name that is not UTF-8 stopped the whole run when the CSV
    was written."""
    from examples.leukemia.predict import find_images

    top = tmp_path / "top"
    own = _image(top / "own.jpg")
    real = _image(tmp_path / "real" / "r.jpg", 1)
    (top / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (top / "linked" / "loop").symlink_to(top, target_is_directory=True)  # a loop: read once, no hang
    (top / "z_link.jpg").symlink_to(own)
    bad = os.path.join(os.fsencode(top), b"caf\xe9.jpg")
    shutil.copy(own, bad)
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.predict"):
        found = find_images([str(top)])
    assert found == [str(top / "linked" / "r.jpg"), str(own)]
    assert os.path.realpath(found[0]) == str(real.resolve())
    assert f"left out {top / 'z_link.jpg'} (the file of {own})" in caplog.text
    assert (
        "left out 1 image(s): file or folder name is not valid UTF-8" in caplog.text and "caf\\xe9.jpg" in caplog.text
    )


def test_a_double_star_pattern_stops_at_a_link_back_up_as_the_folder_walk_does(
    tmp_path: Path, caplog, monkeypatch
) -> None:
    """helper-116: glob's '**' follows a link to a folder above it until the system's link limit, so one
    image came back ~40 times, the deepest copy kept (first in sorted order) and the others listed in a
    warning of kilobytes. A link named in the pattern itself is the user's choice and is read."""
    from examples.leukemia.predict import find_images

    x = _image(tmp_path / "top" / "a" / "b" / "x.png")
    (tmp_path / "top" / "a" / "b" / "loop").symlink_to("../../a", target_is_directory=True)
    _image(tmp_path / "other" / "y.png", 1)
    (tmp_path / "top" / "side").symlink_to(tmp_path / "other", target_is_directory=True)  # not a loop: read
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.predict"):
        found = find_images([str(tmp_path / "top" / "**" / "*.png")])
    assert found == [str(x), str(tmp_path / "top" / "side" / "y.png")]
    assert "more than once" not in caplog.text
    inside = find_images([str(tmp_path / "top" / "a" / "b" / "loop" / "**" / "*.png")])
    assert inside == [str(tmp_path / "top" / "a" / "b" / "loop" / "b" / "x.png")]
    monkeypatch.chdir(tmp_path / "top")  # a relative pattern, from the working folder
    assert find_images(["**/*.png"]) == ["a/b/x.png", "side/y.png"]


def test_an_image_over_pils_size_limit_is_listed_and_the_others_are_read(tmp_path: Path, monkeypatch) -> None:
    """A DecompressionBombError is not an OSError: it stopped predict and explain with a traceback."""
    from PIL import Image as PILImage

    from examples.leukemia.predict import _read_images

    small, big = _image(tmp_path / "small.png"), tmp_path / "big.png"
    PILImage.new("RGB", (64, 64)).save(big)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 24 * 24)  # 64x64 is over twice that: PIL refuses it
    kept, images, bad = _read_images([str(big), str(small)], 16)
    assert kept == [str(small)] and images.shape == (1, 16, 16, 3)
    assert bad[str(big)].startswith("image too large (PIL decompression-bomb limit; raise PIL.Image.MAX_IMAGE_PIXELS")


def test_a_vit_size_its_patches_do_not_divide_is_refused_before_the_images_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timm asserted it at the first forward pass, after every image had been decoded."""
    from examples.leukemia import explain, predict
    from examples.leukemia.models import build_model, check_input_size

    tax = load_taxonomy("paper")
    vit = build_model("test_vit", tax, "per-level", img_size=32, backbone_kwargs={"patch_size": 8})
    check_input_size(vit, 48)
    with pytest.raises(ValueError, match=r"--img-size: test_vit cuts images into 8x8 px patches.*got 30; use 24 or 32"):
        check_input_size(vit, 30)
    check_input_size(build_model("test_convnext", tax, "hierarchical", img_size=32), 30)  # a CNN takes any size
    pvt = build_model("pvt_v2_b0", tax, "hierarchical", img_size=32).eval()  # overlapping 7x7 stride-4 patches
    check_input_size(pvt, 32)  # not a multiple of 7, and fine: it was refused as '7x7 px patches'
    assert pvt(torch.zeros(1, 3, 32, 32)).shape[0] == 1
    pad = {"patch_size": 8, "dynamic_img_size": True, "dynamic_img_pad": True}  # pads to a multiple: any size
    padded = build_model("test_vit", tax, "hierarchical", img_size=32, backbone_kwargs=pad).eval()
    check_input_size(padded, 30)
    assert padded(torch.zeros(1, 3, 30, 30)).shape[0] == 1

    out = tmp_path / "vit"
    T.run(T.parse_args(["--backbone", "test_vit", "--backbone-kwargs", '{"patch_size": 8}', "--epochs", "1",
                        "--synthetic-per-leaf", "1", "--output", str(out), *FAST]))  # fmt: skip
    image = str(sorted((out / "SYNTHETIC_images").rglob("*.jpg"))[0])

    def read(*args, **kwargs):
        raise AssertionError("images were read before --img-size was checked")

    monkeypatch.setattr(predict, "_read_images", read)
    monkeypatch.setenv(DEBUG_ENV, "1")
    for module, dest in ((predict, "p.csv"), (explain, "ex")):
        with pytest.raises(ValueError, match="must be a multiple of 8, got 30"):
            module.main([str(out), image, "--img-size", "30", "--out", str(tmp_path / dest)])


def test_predict_warns_of_another_size_than_the_training_size(run_dir: Path, tmp_path: Path, caplog) -> None:
    from examples.leukemia import predict

    image = str(sorted((run_dir / "SYNTHETIC_images").rglob("*.jpg"))[0])
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.predict"):
        predict.main([str(run_dir), image, "--out", str(tmp_path / "a.csv")])
        assert "px images" not in caplog.text
        predict.main([str(run_dir), image, "--img-size", "48", "--out", str(tmp_path / "b.csv")])
    assert "--img-size 48: the checkpoint was trained on 32 px images" in caplog.text


def test_predict_and_explain_name_dim_16_bit_images(run_dir: Path, tmp_path: Path, caplog) -> None:
    """The training scan names 16-bit images that use 12 bits or fewer (they load nearly black), but
    predict answered them (at 98% in the review, helper-111) and explain drew them without a word."""
    import numpy as np
    from PIL import Image

    from examples.leukemia import explain, predict

    cells = tmp_path / "cells"
    cells.mkdir()
    twelve = np.random.default_rng(0).integers(0, 4096, (40, 40)).astype(np.uint16)
    Image.fromarray(twelve).save(cells / "cam12.png")
    Image.fromarray(twelve * 16).save(cells / "cam16.png")  # the same picture over the full range: not named
    _image(cells / "rgb.png")
    for command in (
        lambda: predict.main([str(run_dir), str(cells), "--out", str(tmp_path / "p.csv")]),
        lambda: explain.main([str(run_dir), str(cells), "--out", str(tmp_path / "ex"), "--device", "cpu"]),
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            command()
        said = [r.getMessage() for r in caplog.records if "brightest value at most 4095" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("1 image(s): 16-bit") and "cam12.png" in said[0], said
        assert "cam16.png" not in said[0] and "nearly black pixels" in said[0]


def test_explain_names_the_images_it_leaves_out_at_the_root(
    run_dir: Path, tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images predicted the root were left out of explain.csv without a word when others had maps (the
    README says explain says so)."""
    from examples.leukemia import explain

    images = [str(p) for p in sorted((run_dir / "SYNTHETIC_images").rglob("*.jpg"))[:3]]
    real = explain.explain

    def first_at_root(*args, **kwargs):  # as the threshold rule gives when the first image is unsure
        pred, maps = real(*args, **kwargs)
        pred[0] = 0
        return pred, [[], *maps[1:]]

    monkeypatch.setattr(explain, "explain", first_at_root)
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.explain"):
        rows = explain.main([str(run_dir), *images, "--out", str(tmp_path / "a")])
    assert {r["image"] for r in rows} == set(images[1:])
    assert "1 of the 3 image(s) are predicted the taxonomy's root" in caplog.text and images[0] in caplog.text


def test_explain_says_why_it_draws_nothing_and_keeps_its_figure_to_a_size(
    run_dir: Path, tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every prediction at the root (the threshold rule, no first-level node sure enough) gave an empty
    explain.csv without a word; --max-images 220 drew a figure 550 inches tall."""
    from examples.leukemia import explain

    images = [str(p) for p in sorted((run_dir / "SYNTHETIC_images").rglob("*.jpg"))[:3]]
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.explain"):
        rows = explain.main(
            [str(run_dir), *images, "--decode", "threshold", "--threshold", "1", "--out", str(tmp_path / "a")]
        )
    assert rows == [] and "every prediction is the taxonomy's root" in caplog.text and "--threshold 1" in caplog.text
    monkeypatch.setattr(explain, "FIGURE_ROWS", 2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="examples.leukemia.explain"):
        rows = explain.main([str(run_dir), *images, "--out", str(tmp_path / "b")])
    assert {r["image"] for r in rows} == set(images)  # every image explained, overlays and CSV rows
    assert "explain.png shows the first 2 of the 3 images" in caplog.text
    from PIL import Image as PILImage

    with PILImage.open(tmp_path / "b" / "explain.png") as fig:
        assert fig.height < 2.5 * 3 * 120  # two rows of panels, not three


def test_evaluate_warns_that_training_split_scores_are_optimistic(run_dir: Path, tmp_path: Path, caplog) -> None:
    from examples.leukemia.evaluate import main

    with caplog.at_level(logging.WARNING, logger="examples.leukemia.evaluate"):
        main([str(run_dir), "--split", "train", "--out", str(tmp_path / "ev"), "--no-figures", "--device", "cpu"])
    assert "--split train: the models learnt from these images" in caplog.text


def test_the_mixed_taxonomy_refusal_names_a_taxonomy_implied_by_the_data(tmp_path: Path) -> None:
    """A run whose taxonomy came from its data's layout has no --taxonomy: it was named '?'."""
    import json

    from examples.leukemia.evaluate import check_one_taxonomy

    paths = []
    for name, nodes, named in (("a", ["blood_cell", "x", "y"], None), ("b", ["root", "p", "q"], "paper")):
        sidecar = {"taxonomy_fingerprint": name * 12, "taxonomy": {"nodes": nodes}, "config": {"taxonomy": named}}
        (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
        paths.append(tmp_path / f"{name}.json")
    with pytest.raises(ValueError) as err:
        check_one_taxonomy(paths)
    text = str(err.value)
    assert "the taxonomy of root 'blood_cell' (3 nodes)" in text and "taxonomy 'paper'" in text
    assert "'?'" not in text and "--out eval/blood_cell" in text


def test_evaluate_scores_a_checkpoint_named_twice_once(run_dir: Path, tmp_path: Path, caplog) -> None:
    """RUN and RUN/best.json are one checkpoint: it got two lines (two runs of one method, as for seeds)."""
    from examples.leukemia.evaluate import main

    argv = [str(run_dir), str(run_dir / "best.json"), "--out", str(tmp_path / "ev"), "--no-figures", "--split", "train"]
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.evaluate"):
        result = main(argv)
    assert len(result["rows"]) == 1 and "1 checkpoint(s) were named more than once" in caplog.text


# ------------------------------------------------------------------ 11. evaluate's training-image check, other layouts
def test_the_training_image_check_in_folder_and_csv_layouts_and_external_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A folder tree packed from its own folder and scored on --data one folder above; a CSV manifest that
    lists absolute paths (pack names then start with '../'); a --limit run scored on a copy: each missed
    a leak, or refused its own split. Another dataset whose file names repeat the run's is refused too,
    and --external scores it whole."""
    from examples.leukemia.evaluate import main as evaluate_main
    from examples.leukemia.pack import pack

    monkeypatch.setenv(DEBUG_ENV, "1")
    labels = ("Normal", "Reactive", "ALL", "CLL")
    for top, seed in (("A", 0), ("B", 100)):  # B: other images under the same names
        for k, label in enumerate(labels):
            for i in range(10):
                _image(tmp_path / top / "imgs" / label / f"img_{i}.png", seed + 10 * k + i)
    fast = [*FAST, "--backbone", "test_resnet", "--epochs", "1", "--stop-after", "1", "--device", "cpu"]
    refused = "images of the 'test' split were in the run's training split"
    n = 0

    def ev(run: Path, *source: str) -> dict:
        nonlocal n
        n += 1
        return evaluate_main([str(run / "best"), *source, "--out", str(tmp_path / f"ev{n}"), "--no-figures"])

    def train(out: str, *source: str) -> Path:
        T.run(T.parse_args([*source, "--taxonomy", "paper", "--output", str(tmp_path / out), *fast]))
        return tmp_path / out

    # a folder tree: packed from A/imgs, scored on --data A (one folder above the packed root)
    pack(tmp_path / "A" / "imgs", tmp_path / "a1.npz", taxonomy="paper", size=32, seed=1, progress=False)
    on_pack = train("on_pack", "--pack", str(tmp_path / "a1.npz"))
    assert ev(on_pack, "--data", str(tmp_path / "A" / "imgs"))["rows"]  # the pack's seed: its own split
    for data in ("A/imgs", "A"):
        with pytest.raises(ValueError, match=refused):
            ev(on_pack, "--data", str(tmp_path / data), "--split-seed", "2", "--layout", "folder")

    # a CSV manifest with absolute paths, packed (names '../A/imgs/...') and scanned
    (tmp_path / "csv").mkdir()
    rows = [f"{p},{p.parent.name}" for p in sorted((tmp_path / "A" / "imgs").rglob("*.png"))]
    (tmp_path / "csv" / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    for seed in (1, 2):
        pack(
            tmp_path / "csv" / "m.csv", tmp_path / f"c{seed}.npz", taxonomy="paper", size=32, seed=seed, progress=False
        )
    csv_pack = train("csv_pack", "--pack", str(tmp_path / "c1.npz"))
    with pytest.raises(ValueError, match=refused):
        ev(csv_pack, "--data", str(tmp_path / "csv" / "m.csv"), "--split-seed", "2")
    csv_data = train("csv_data", "--data", str(tmp_path / "csv" / "m.csv"), "--split-seed", "1")
    assert ev(csv_data, "--pack", str(tmp_path / "c1.npz"))["rows"]
    with pytest.raises(ValueError, match=refused):
        ev(csv_data, "--pack", str(tmp_path / "c2.npz"))

    # a --limit run scored on a copy of its folder: the draw is repeated there too
    limited = train("limited", "--data", str(tmp_path / "A" / "imgs"), "--limit", "30")
    shutil.copytree(tmp_path / "A", tmp_path / "Acopy")
    assert ev(limited, "--data", str(tmp_path / "Acopy" / "imgs"))["rows"][0]["metrics"]["n"] == 6

    # another dataset under the same names: refused as a split, scored whole with --external
    with pytest.raises(ValueError, match=r"refused|--external") as err:
        ev(limited, "--data", str(tmp_path / "B" / "imgs"), "--split-seed", "5")
    assert "score all of them with --external" in str(err.value)
    result = ev(limited, "--data", str(tmp_path / "B" / "imgs"), "--external")
    assert result["split"] == "external" and result["rows"][0]["metrics"]["n"] == 40
    assert result["rows"][0]["split_seed"] is None
    for extra, said in (
        (["--split", "val"], "--split with --external: every image is scored"),
        ([], "--external: expected the images to score"),
    ):
        with pytest.raises(SystemExit):
            evaluate_main([str(limited / "best"), "--external", *extra, *([] if not extra else ["--data", "x"])])
        assert said in capsys.readouterr().err


def test_the_training_image_check_tells_nested_names_apart_and_knows_other_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """Matching every tail of the paths refused a run's own split when one name ends with another
    (ALL/img_0.png and batch2/ALL/img_0.png, two images); the --limit draw cut another dataset's images;
    --external on the run's own images said nothing; a pack of images beside their CSV (names of one part)
    was never checked. Names are now aligned once for the whole dataset, then compared exactly."""
    from examples.leukemia.evaluate import main as evaluate_main
    from examples.leukemia.pack import pack

    monkeypatch.setenv(DEBUG_ENV, "1")
    labels = ("Normal", "Reactive", "ALL", "CLL")
    for top, seed in (("C", 0), ("C/batch2", 50), ("other", 200)):
        for k, label in enumerate(labels):
            for i in range(5):
                name = f"img_{i}.png" if top != "other" else f"x{i}.png"
                _image(tmp_path / top / label / name, seed + 10 * k + i)
    fast = [*FAST, "--backbone", "test_resnet", "--epochs", "1", "--stop-after", "1", "--device", "cpu"]
    fast += ["--taxonomy", "paper"]
    refused = "images of the 'test' split were in the run's training split"
    n = 0

    def ev(run: Path, *source: str) -> dict:
        nonlocal n
        n += 1
        argv = [str(run / "best"), "--layout", "folder", *source, "--out", str(tmp_path / f"ev{n}"), "--no-figures"]
        return evaluate_main(argv)

    def train(out: str, *source: str) -> Path:
        T.run(T.parse_args([*source, "--output", str(tmp_path / out), *fast]))
        return tmp_path / out

    pack(tmp_path / "C", tmp_path / "c.npz", taxonomy="paper", layout="folder", size=32, seed=1, progress=False)
    nested_pack = train("nested_pack", "--pack", str(tmp_path / "c.npz"))
    assert ev(nested_pack)["rows"]  # its own pack
    assert ev(nested_pack, "--data", str(tmp_path / "C"))["rows"]  # the images it was packed from, the pack's seed
    nested = train("nested", "--data", str(tmp_path / "C"), "--layout", "folder")
    assert ev(nested, "--data", str(tmp_path / "C"))["rows"]  # its own split
    with pytest.raises(ValueError, match=refused):
        ev(nested, "--pack", str(tmp_path / "c.npz"))  # another seed's split

    # a --limit run: the draw is repeated on its own images only, never on another dataset's
    limited = train("limited", "--data", str(tmp_path / "C"), "--layout", "folder", "--limit", "30")
    with pytest.raises(ValueError, match="the run trained with --limit, so only its own source repeats its split"):
        ev(limited, "--pack", str(tmp_path / "c.npz"))
    other = ev(limited, "--data", str(tmp_path / "other"))  # 20 images, not the run's: no draw of 30
    assert other["rows"][0]["metrics"]["n"] == 4  # the test fifth of all 20
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.evaluate"):
        own = ev(limited, "--data", str(tmp_path / "C"), "--external")
    assert own["rows"][0]["metrics"]["n"] == 40 and "have the names of the run's training images" in caplog.text

    # images beside their CSV: pack names of one part
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted((tmp_path / "C").glob("[!b]*/*.png"))):
        shutil.copy(path, flat / f"{path.parent.name}_{i}.png")
    lines = [f"{p.name},{p.name.split('_')[0]}" for p in sorted(flat.glob("*.png"))]
    (flat / "m.csv").write_text("path,label\n" + "\n".join(lines) + "\n")
    pack(flat / "m.csv", tmp_path / "f.npz", taxonomy="paper", size=32, seed=1, progress=False)
    flat_pack = train("flat_pack", "--pack", str(tmp_path / "f.npz"))
    assert ev(flat_pack, "--data", str(flat / "m.csv"), "--layout", "csv")["rows"]
    with pytest.raises(ValueError, match=refused):
        ev(flat_pack, "--data", str(flat / "m.csv"), "--layout", "csv", "--split-seed", "2")


def test_the_training_image_check_finds_a_few_copies_and_a_moved_runs_changed_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies of some training images among other images (under half of the run's: 'another dataset')
    were not checked by name; a moved run folder whose data folder changed since was scanned and split
    again, its training images compared by their old paths only; a run folder moved deep lost its names
    (at most 12 leading parts were dropped)."""
    from examples.leukemia.data import read_manifest, scan, split
    from examples.leukemia.evaluate import main as evaluate_main

    monkeypatch.setenv(DEBUG_ENV, "1")
    labels = ("Normal", "Reactive", "ALL", "CLL")
    for k, label in enumerate(labels):
        for i in range(10):
            _image(tmp_path / "D" / label / f"img_{i}.png", 10 * k + i)
    fast = [*FAST, "--backbone", "test_resnet", "--epochs", "1", "--stop-after", "1", "--device", "cpu"]
    refused = "images of the 'test' split were in the run's training split"
    run = tmp_path / "run"
    T.run(T.parse_args(["--data", str(tmp_path / "D"), "--taxonomy", "paper", "--output", str(run), *fast]))
    trained = read_manifest(run / "splits.csv")["train"]

    # folder M: copies of 8 training images among 80 other images
    for s in trained[:8]:
        folder = tmp_path / "M" / Path(s.path).parent.name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(s.path, folder / Path(s.path).name)
    for k, label in enumerate(labels):
        for i in range(20):
            _image(tmp_path / "M" / label / f"other_{i}.png", 500 + 20 * k + i)
    samples, _ = scan(tmp_path / "M", "paper", layout="folder", workers=1)
    copies = {f"{Path(s.path).parent.name}/{Path(s.path).name}" for s in trained[:8]}
    test = {f"{Path(s.path).parent.name}/{Path(s.path).name}" for s in split(samples, seed=20261126)["test"]}
    assert copies & test, "the test needs a copied training image in M's test split"
    argv = ["--layout", "folder", "--no-figures", "--out"]
    with pytest.raises(ValueError, match=refused):
        evaluate_main([str(run / "best"), "--data", str(tmp_path / "M"), *argv, str(tmp_path / "e1")])

    # the run folder moved deep; then its data folder grows
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(14)], "run")
    shutil.move(run, deep)
    assert evaluate_main([str(deep / "best"), *argv, str(tmp_path / "e2")])["rows"]  # the same data: its split
    for k, label in enumerate(labels):
        for i in range(10, 20):
            _image(tmp_path / "D" / label / f"img_{i}.png", 10 * k + i)
    with pytest.raises(ValueError, match=refused):
        evaluate_main([str(deep / "best"), *argv, str(tmp_path / "e3")])
    with pytest.raises(ValueError, match=refused):  # and named through --data
        evaluate_main([str(deep / "best"), "--data", str(tmp_path / "D"), *argv, str(tmp_path / "e4")])


# ------------------------------------------------------------------ 11. review C: outputs, inputs and flags
def test_evaluate_compare_and_aggregate_check_out_when_parsing(tmp_path: Path, capsys, monkeypatch) -> None:
    """Their --out was a plain string: a path under a file failed with a NotADirectoryError traceback, an
    existing file with a bare '[Errno 17]', both after the work (evaluate: after every checkpoint)."""
    from examples.leukemia import aggregate, compare, evaluate

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    (tmp_path / "file.txt").write_text("x")
    for out, said in (
        (tmp_path / "file.txt", "is a file, not a folder; give a folder to write into"),
        (tmp_path / "file.txt" / "deeper", f"{str(tmp_path / 'file.txt')!r} is a file, not a folder"),
    ):
        for parse in (
            lambda o: evaluate.build_parser().parse_args(["ckpt", "--out", str(o)]),
            lambda o: compare.build_parser().parse_args(["--pack", "p.npz", "--out", str(o)]),
            lambda o: aggregate.main(["results.json", "--out", str(o)]),  # refused before the file is read
        ):
            with pytest.raises(SystemExit) as err:
                parse(out)
            text = capsys.readouterr().err
            assert err.value.code == 2 and f"argument --out/--output: '{out}'" in text and said in text
            assert "Traceback" not in text and "Errno" not in text
    assert evaluate.build_parser().parse_args(["c", "--out", str(tmp_path / "new" / "e")]).out
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("script", "argv", "said"),
    [
        # 'up to 8' in the help; negatives refused only by data.py, after the checkpoints were loaded
        ("evaluate", ["ckpt", "--workers", "0"], "argument --workers: expected a whole number >= 1, got '0'"),
        ("compare", ["--workers", "-2"], "argument --workers: expected a whole number >= 1, got '-2'"),
        # as train's --img-size: 0 passed compare and failed in train
        ("compare", ["--img-size", "0"], "argument --img-size: expected a whole number >= 8, got '0'"),
        ("compare", ["--layout", "folders"], "argument --layout: invalid choice: 'folders'"),
        # nan meant no deadline at all, a negative one skipped every run
        ("compare", ["--deadline", "nan"], "argument --deadline: expected a number > 0, got 'nan'"),
        ("compare", ["--deadline", "-5"], "argument --deadline: expected a number > 0, got '-5'"),
        ("compare", ["--deadline", "0"], "argument --deadline: expected a number > 0, got '0'"),
        ("compare", ["--deadline", "inf"], "leave --deadline out for no deadline"),
    ],
)
def test_compare_and_evaluate_refuse_bad_numbers_and_layouts_when_parsing(
    script: str, argv: list[str], said: str, capsys
) -> None:
    module = importlib.import_module(f"examples.leukemia.{script}")
    base = [] if script == "evaluate" else ["--pack", "p.npz"]
    with pytest.raises(SystemExit) as err:
        module.build_parser().parse_args([*base, *argv])
    assert err.value.code == 2 and said in capsys.readouterr().err


def test_workers_help_says_the_real_default() -> None:
    from examples.leukemia import compare, evaluate

    for module in (evaluate, compare):
        text = " ".join(module.build_parser().format_help().split())
        assert "up to 8" not in text and "(default: the usable CPU cores, at most 16)" in text, module.__name__
    assert "auto, folder, csv, pbc, all4" in " ".join(compare.build_parser().format_help().split())


@pytest.mark.parametrize(
    ("train_args", "said"),
    [
        # argparse took '--quiet' for a flag of compare's: 'expected one argument', and no way out was said
        (["--train-args", "--quiet"], "--train-args: expected the training flags as its value, got '--quiet'"),
        (["--train-args", "--quiet"], "write it with '=': --train-args=--quiet"),
        # train's own parser spoke: 'python -m examples.leukemia.train: error', train's --help
        (["--train-args=--warmupp 1"], "--train-args: train refuses these flags: unrecognized arguments: --warmupp 1"),
        (["--train-args=--threshold 0.3"], "--train-args: train refuses these flags: --threshold 0.3: only the"),
        (["--train-args", "--warmup x"], "--train-args: train refuses these flags: argument --warmup:"),
        (["--train-args=--help"], "--train-args: train refuses these flags: --help asks for train's help"),
        (["--train-args", "--init-checkpoint 'a b"], "--train-args: expected training flags as a shell would split"),
    ],
)
def test_compare_reports_bad_train_args_as_its_own_error(train_args: list[str], said: str, tmp_path: Path, capsys):
    from examples.leukemia import compare

    argv = ["--pack", str(tmp_path / "none.npz"), "--runs", "flat:test_resnet", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as err:
        compare.main([*argv, *train_args])
    captured = capsys.readouterr()
    text = captured.err
    assert err.value.code == 2 and said in text, text
    assert "examples.leukemia.train: error" not in text and "usage:" not in captured.out + text
    assert text.startswith(("python -m examples.leukemia.compare: error: ", "error: --train-args"))
    assert not (tmp_path / "o").exists()


def test_compare_takes_a_single_train_flag_written_with_equals(tmp_path: Path, monkeypatch) -> None:
    """--train-args=--quiet passes the check and reaches the runs (the data load is stopped right there)."""
    from examples.leukemia import compare

    def stop(args, env, out):
        raise RuntimeError(f"loaded with {args.warmup}")

    monkeypatch.setattr(T, "load_data", stop)
    argv = ["--pack", str(tmp_path / "none.npz"), "--runs", "flat:test_resnet", "--out", str(tmp_path / "o")]
    with pytest.raises(RuntimeError, match="loaded with 2.0"):
        compare.main([*argv, "--train-args=--quiet", "--device", "cpu"])
    with pytest.raises(RuntimeError, match="loaded with 3.0"):
        compare.main([*argv, "--train-args", "--warmup 3", "--device", "cpu"])


def test_find_images_skips_hidden_folders_and_macosx_as_scan_does(tmp_path: Path, caplog) -> None:
    """Images inside '.thumbs/' and '__MACOSX/' (a zip's resource forks, '._x.png') were read as cells,
    while data.scan (train's --data) leaves those folders out; the README says hidden entries are."""
    from examples.leukemia.predict import find_images

    cells = tmp_path / "cells"
    a = _image(cells / "a.png")
    _image(cells / ".thumbs" / "a.png", 1)
    _image(cells / "__MACOSX" / "sub" / "b.png", 2)
    (cells / "__MACOSX" / "sub" / "._b.png").write_bytes(b"\0\5\26\7")
    (cells / ".git" / "notes.txt").parent.mkdir()
    (cells / ".git" / "notes.txt").write_text("x")  # not listed as left out either
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.predict"):
        assert find_images([str(cells)]) == [str(a)]
        assert find_images([str(cells / "**" / "*.png")]) == [str(a)]
        assert find_images([str(cells / "*")]) == [str(a)]  # a pattern's folder match: __MACOSX
    assert "left out" not in caplog.text
    # a hidden folder named on its own is read: it was asked for
    assert find_images([str(cells / ".thumbs")]) == [str(cells / ".thumbs" / "a.png")]


def test_explain_rerun_removes_the_earlier_overlays_only(run_dir: Path, tmp_path: Path) -> None:
    """A rerun into the same --out kept the earlier run's overlays beside its own, and explain.csv listed
    only the new ones: the folder held maps of images the CSV did not mention."""
    from examples.leukemia import explain

    images = sorted((run_dir / "SYNTHETIC_images").rglob("*.jpg"))[:3]
    out = tmp_path / "ex"
    out.mkdir()
    (out / "mine.png").write_bytes(b"keep")  # not an overlay an explain.csv lists: left alone
    first = explain.main([str(run_dir), *map(str, images), "--out", str(out), "--device", "cpu"])
    second = explain.main([str(run_dir), str(images[2]), "--out", str(out), "--device", "cpu"])
    assert {Path(r["overlay"]).name for r in first} - {Path(r["overlay"]).name for r in second}
    with open(out / "explain.csv", newline="") as fh:
        listed = {Path(r["overlay"]).name for r in csv.DictReader(fh)}
    assert listed == {Path(r["overlay"]).name for r in second}
    assert sorted(p.name for p in out.iterdir()) == sorted({*listed, "explain.png", "explain.csv", "mine.png"})


def test_explain_refuses_an_out_inside_the_images(tmp_path: Path, capsys, monkeypatch) -> None:
    """Its overlays (PNG files) were written among the user's images, and read as cells by the next run."""
    from examples.leukemia import explain

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    cells = tmp_path / "cells"
    _image(cells / "a" / "x.png")
    for inputs, out in (
        ([str(cells)], cells),
        ([str(cells)], cells / "a" / "explain"),
        ([str(tmp_path / "other.png"), str(cells / "a")], cells / "a" / "ex"),
        ([str(cells / "**" / "*.png")], cells / "ex"),
    ):
        with pytest.raises(SystemExit) as err:  # before the checkpoint (none here) is read
            explain.main(["no-such-checkpoint", *inputs, "--out", str(out)])
        text = capsys.readouterr().err
        assert err.value.code == 2 and f"--out {str(out)!r}: expected a folder outside the images" in text, text
        assert "Give another --out, e.g. --out" in text
        assert not (out / "explain.csv").exists()
    explain.refuse_out_among_inputs(str(tmp_path / "cells_explain"), [str(cells), str(cells / "a" / "x.png")])


def test_predict_help_shows_its_defaults_and_the_rules(capsys) -> None:
    from examples.leukemia import evaluate, explain, predict

    for module in (predict, explain):
        text = " ".join(module.build_parser().format_help().split())
        assert ", ".join(evaluate.DECODE_CHOICES) in text, module.__name__
        assert "cuda when there is one" in text
    text = " ".join(predict.build_parser().format_help().split())
    assert "images per inference batch (default: 128)" in text and "(default: the training resolution)" in text


def test_readme_says_when_answer_and_the_threshold_rule_agree() -> None:
    """The README said they 'agree unless a sigmoid head gives a child more probability than its parent':
    false at thresholds of 0.5 and below (here 0.3: the threshold rule goes to CML, the answer stays on
    Acute), and for a prediction outside the threshold rule's node. What it says now is checked here."""
    from examples.leukemia.predict import predict_rows
    from hiercls.decoding import decode

    readme = " ".join((REPO / "examples" / "leukemia" / "README.md").read_text().split())
    assert "agree unless a sigmoid head" not in readme
    assert "with `--threshold` above 0.5 and consistent marginals" in readme
    assert "At 0.5 or below, nodes of several branches can reach the threshold" in readme
    tax = load_taxonomy("paper")
    marginals = {"root": 1.0, "Leukemia": 1.0, "Acute": 0.6, "ALL": 0.31, "AML": 0.29, "Chronic": 0.4, "CML": 0.4}
    probs = torch.tensor([[marginals.get(n, 0.0) for n in tax.nodes]])
    (row,) = predict_rows(probs, tax, ["x.png"], rule="top_down", threshold=0.3)
    assert row["answer"] == "ALL" and tax.nodes[int(decode(probs, tax, "threshold", threshold=0.3)[0])] == "CML"
    # above 0.5, consistent marginals (a distribution over nodes, summed up the tree): the answer is the
    # threshold rule's node or an ancestor of it, the node itself exactly when the prediction lies below it
    rng = np.random.default_rng(0)
    table = np.asarray(tax.ancestor_table)
    for _ in range(300):
        mass = rng.dirichlet(np.full(tax.num_nodes, rng.choice([0.05, 0.5])))
        p = np.zeros(tax.num_nodes)
        for node in range(tax.num_nodes):
            p[table[node][table[node] >= 0]] += mass[node]
        tau = float(rng.uniform(0.5 + 1e-6, 1.0))
        marg = torch.tensor(p[None])
        rule_node = int(decode(marg, tax, "threshold", threshold=tau)[0])
        for rule in ("top_down", "argmax_leaf", "crm", "hf_optimal"):
            (row,) = predict_rows(marg, tax, ["x.png"], rule=rule, threshold=tau)
            answer, pred = tax.index(row["answer"]), tax.index(row["prediction"])
            assert answer in table[rule_node]
            assert (answer == rule_node) == (rule_node in table[pred])
            if rule == "top_down":
                assert answer == rule_node


def test_a_pattern_that_spells_a_dot_reads_the_hidden_folders_it_asks_for(tmp_path: Path) -> None:
    """glob matches dot-folders only when the pattern spells the dot: 'cells/.*/*.png' asks for them, yet
    its matches were skipped as hidden and the message said the pattern matched no image."""
    from examples.leukemia.predict import find_images

    cells = tmp_path / "cells"
    thumb = _image(cells / ".thumb" / "c.png")
    _image(cells / "__MACOSX" / "d.png", 1)
    assert find_images([str(cells / ".*" / "*.png")]) == [str(thumb)]
    with pytest.raises(ValueError, match="no image files"):
        find_images([str(cells / "*" / "*.png")])  # __MACOSX is still left out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_output_for_its_output(command: str, capsys) -> None:
    """train's flag is --output and the others' --out: `evaluate RUN --output eval` (as after train) was refused
    with "unrecognized arguments". Each command now takes both spellings."""
    module = importlib.import_module(f"examples.leukemia.{command}")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    flags = re.findall(r"(?<![\w-])--out(?:put)?\b", capsys.readouterr().out)
    assert "--output" in flags, command


def test_run_folders_and_dag_taxonomies_are_refused_when_the_command_line_is_read(tmp_path: Path, capsys) -> None:
    """From a review as a user with their own images: a DAG taxonomy trained the whole run and then failed
    at the test (tax.lca) and in predict/explain; --output inside --data broke the next scan (the run's
    figures read as images of an unknown class 'run1'); --output naming a file failed after the scan."""
    from examples.leukemia import compare as C
    from examples.leukemia import pack as P

    data = tmp_path / "images"
    _image(data / "a" / "x.png")
    dag = tmp_path / "dag.json"
    dag.write_text(json.dumps({"root": "r", "edges": [["r", "a"], ["r", "b"], ["a", "c"], ["b", "c"]]}))
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    cases = [
        (
            T.parse_args,
            ["--data", str(data), "--taxonomy", str(dag)],
            r"--taxonomy .*dag.json: is a DAG \(nodes with several parents: 'c'\)",
        ),
        (T.parse_args, ["--data", str(data), "--output", str(data / "run1")], r"--output .*run1: lies inside --data"),
        (T.parse_args, ["--output", str(taken)], r"--output .*notes.txt: is a file, not a folder"),
        (P.main, ["--data", str(data), "--taxonomy", str(dag), "--out", str(tmp_path / "p.npz")], "is a DAG"),
        (C.main, ["--data", str(data), "--out", str(data / "cmp")], r"--out .*cmp: lies inside --data"),
    ]
    for call, argv, refusal in cases:
        with pytest.raises(SystemExit) as stop:
            call(argv)
        assert stop.value.code == 2
        assert re.search(refusal, capsys.readouterr().err), argv
    assert not (data / "run1").exists() and not (data / "cmp").exists() and taken.read_text() == "mine"
    assert T.parse_args(["--data", str(data), "--output", str(tmp_path / "run")]).output == str(tmp_path / "run")


def test_ctrl_c_says_how_to_resume_and_resume_says_where_it_goes_on(
    tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    """Ctrl-C printed a ~40-line KeyboardInterrupt traceback and nothing about --resume; --resume then said
    nothing about where it went on."""
    out = tmp_path / "run"
    argv = ["--backbone", "test_convnext", "--epochs", "3", "--synthetic-per-leaf", "2", "--output", str(out), *FAST]
    argv += ["--checkpoint-every", "1"]
    saved = T.save_checkpoint

    def save_then_interrupt(path, *args, **kwargs):
        saved(path, *args, **kwargs)
        if Path(path).name == "last":
            raise KeyboardInterrupt

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setattr(T, "save_checkpoint", save_then_interrupt)
    with pytest.raises(SystemExit) as stop:
        T.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 130 and "Traceback" not in err
    assert f"interrupted (Ctrl-C): the run in {out} keeps its last checkpoint; continue it with" in err
    monkeypatch.setattr(T, "save_checkpoint", saved)
    with caplog.at_level(logging.INFO, logger=T.log.name):
        T.main([*argv, "--resume"])
    assert f"--resume: continuing {out} after epoch 1 of 3" in caplog.text
    with pytest.raises(SystemExit) as stop:  # before any checkpoint: no hint to resume
        monkeypatch.setattr(T, "load_data", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        T.main([*argv[:-4], "--output", str(tmp_path / "other"), *FAST])
    assert stop.value.code == 130 and capsys.readouterr().err.strip().endswith("interrupted (Ctrl-C)")


def test_a_warm_up_as_long_as_the_run_is_warned(tmp_path: Path, caplog) -> None:
    """--epochs 2 under the default --warmup 2 peaked at 38% of --lr, with nothing said."""
    argv = ["--backbone", "test_convnext", "--synthetic-per-leaf", "2", *FAST]
    with caplog.at_level(logging.WARNING, logger=T.log.name):
        T.main([*argv, "--epochs", "2", "--warmup", "2", "--output", str(tmp_path / "short")])
    assert re.search(r"--warmup 2 of --epochs 2: the learning rate peaks at \d+% of --lr", caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=T.log.name):
        T.main([*argv, "--epochs", "2", "--warmup", "0.2", "--output", str(tmp_path / "fine")])
    assert "the learning rate peaks" not in caplog.text


def test_aggregate_pools_json_without_loading_torch(tmp_path: Path) -> None:
    """``aggregate`` reads only results.json files: it used to import torch and timm through ``cli`` and
    ``models`` (about 8 s before its first line on 2 cores, twice per seeds job of benchmarks/gpu_run.sh).
    A checkpoint error still exits cleanly: it is a ``ValueError``."""
    from examples.leukemia.checkpoint import CheckpointError
    from examples.leukemia.cli import USER_ERRORS

    assert issubclass(CheckpointError, USER_ERRORS)
    files = []
    for seed in (0, 1):
        rows = [{"method": "flat", "variant": "flat", "backbone": "bb", "metrics": {"accuracy": 0.5 + seed / 10}}]
        (tmp_path / f"s{seed}.json").write_text(json.dumps({"seed": seed, "rows": rows}))
        files.append(str(tmp_path / f"s{seed}.json"))
    probe = (
        "import sys; from examples.leukemia.aggregate import main; main(sys.argv[1:]); "
        "print('LOADED', sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *files, "--out", str(tmp_path / "pooled")],
        cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout and "| flat | bb | 2 |" in done.stdout, done.stdout[-2000:]
