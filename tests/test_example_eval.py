"""The leukemia example's evaluation side: evaluate, predict, explain and compare produce their files."""

from __future__ import annotations

import csv
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.leukemia import train as T
from examples.leukemia.data import PBC_CLASS_OF_NODE, load_taxonomy
from examples.leukemia.evaluate import evaluation_metrics, results_markdown
from tests.budget import examples
from tests.test_example_train import FAST, copy_pbc_subset

PNG = b"\x89PNG\r\n\x1a\n"
PBC = load_taxonomy("pbc")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs on generated (SYNTHETIC) images, one epoch each: hierarchical CNN, flat ViT, per-level CNN."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for method, backbone in (("hierarchical", "test_convnext"), ("flat", "test_vit"), ("per-level", "test_resnet")):
        out = root / f"{method}-{backbone}"
        T.run(
            T.parse_args(
                [
                    "--method",
                    method,
                    "--backbone",
                    backbone,
                    "--epochs",
                    "1",
                    "--synthetic-per-leaf",
                    "4",
                    "--output",
                    str(out),
                    *FAST,
                ]
            )
        )
        runs[method] = out
    return runs


# ---------------------------------------------------------------- the paper's numbers, against an oracle
def _oracle(t: list[int], p: list[int]) -> dict[str, float]:
    names = PBC.nodes
    leaf = [i for i in range(len(t)) if names[t[i]] in PBC.leaves]
    fine = sum(t[i] == p[i] for i in leaf) / len(leaf) if leaf else float("nan")
    hits, total = 0, 0
    for a, b in zip(t, p):
        if names[a] in PBC_CLASS_OF_NODE:
            total += 1
            hits += PBC_CLASS_OF_NODE[names[a]] == PBC_CLASS_OF_NODE.get(names[b])
    return {"fine_leaf_accuracy": fine, "eight_class_accuracy": hits / total if total else float("nan")}


labelled = st.sampled_from([PBC.index(n) for n in PBC_CLASS_OF_NODE])  # at or below the 8 classes
any_node = st.integers(1, PBC.num_nodes - 1)


@settings(examples(30), deadline=None)
@given(st.lists(st.tuples(labelled, any_node), min_size=1, max_size=40))
def test_evaluation_metrics_match_a_slow_oracle(pairs: list[tuple[int, int]]) -> None:
    t, p = [a for a, _ in pairs], [b for _, b in pairs]
    got = evaluation_metrics(np.array(t), np.array(p), PBC)
    want = _oracle(t, p)
    for key, value in want.items():
        assert (np.isnan(value) and np.isnan(got[key])) or got[key] == pytest.approx(value), key
    assert got["n"] == len(t) and got["n_partial_labels"] == sum(PBC.nodes[a] not in PBC.leaves for a in t)
    assert got["n_eight_class"] == len(t)  # every label drawn lies at or below the 8 classes
    assert 0 <= got["hierarchical_f1"] <= 1


def test_eight_class_accuracy_counts_the_images_it_covers() -> None:
    above = next(n for n in PBC.nodes[1:] if n not in PBC_CLASS_OF_NODE)  # a label above the 8 classes
    t = [PBC.index("lymphocyte"), PBC.index("monocyte"), PBC.index(above)]
    got = evaluation_metrics(np.array(t), np.array(t), PBC)
    assert got["n"] == 3 and got["n_eight_class"] == 2 and got["eight_class_accuracy"] == 1.0


def test_evaluation_metrics_without_pbc_nodes(paper_tax) -> None:
    got = evaluation_metrics([paper_tax.index("ALL")], [paper_tax.index("ALL")], paper_tax)
    assert "eight_class_accuracy" not in got and got["fine_leaf_accuracy"] == 1.0 and got["accuracy"] == 1.0


def test_results_markdown_is_a_methods_by_backbones_table() -> None:
    m = {"fine_leaf_accuracy": 0.5, "hierarchical_f1": 0.75, "mistake_severity": 1.5, "level_accuracy/1": 1.0, "n": 4}
    rows = [
        {"method": "flat", "backbone": "a", "metrics": m},
        {"method": "hierarchical", "backbone": "b", "metrics": m},
    ]
    md = results_markdown(rows, title="T")
    assert "| method | a | b |" in md and "| flat | 0.5000 |  |" in md and "| hierarchical |  | 0.5000 |" in md
    assert "acc@depth 1" in md and "8-class" not in md


def test_results_markdown_puts_one_method_on_several_backbones_on_one_line() -> None:
    """The paper's table: each method on each backbone. Each row was numbered apart ('flat #1', 'flat #2'),
    one line per run, because the labels were compared without their backbone."""
    rows = [
        {"method": meth, "backbone": b, "metrics": {"fine_leaf_accuracy": acc, "n": 4}}
        for meth, accs in (("flat", (0.5, 0.25)), ("hierarchical", (0.75, 1.0)))
        for b, acc in zip(("r18", "vit"), accs)
    ]
    md = results_markdown(rows, title="T")
    assert "| flat | 0.5000 | 0.2500 |" in md and "| hierarchical | 0.7500 | 1.0000 |" in md
    assert "#" not in md.split("| method |")[1].split("\n\n")[0] and "Several runs share" not in md


# ---------------------------------------------------------------------------------------- the scripts
def test_evaluate_writes_tables_and_figures(trained: dict[str, Path], tmp_path: Path) -> None:
    from examples.leukemia.evaluate import main

    result = main([str(trained["hierarchical"] / "best"), str(trained["flat"]), "--out", str(tmp_path)])
    assert [r["method"] for r in result["rows"]] == ["hierarchical", "flat"] and result["synthetic"]
    assert result["rows"][0]["decode"] == "top_down" and result["rows"][1]["decode"] == "argmax_leaf"
    md = (tmp_path / "results.md").read_text()
    assert "| method | test_convnext | test_vit |" in md and "SYNTHETIC" in md
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["metrics"]["n"] > 0
    for run in ("hierarchical-test_convnext", "flat-test_vit"):
        for kind in ("confusion", "taxonomy_recall"):
            assert (tmp_path / f"{run}_{kind}.png").read_bytes()[:8] == PNG
    # a rerun into the same --out with one of the runs: the other's figures (listed by the earlier
    # results.json) are removed, a PNG of the user's is not; they used to stay beside a table without them
    (tmp_path / "mine.png").write_bytes(PNG)
    again = main([str(trained["flat"]), "--out", str(tmp_path)])
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(["mine.png", *(Path(f).name for f in again["rows"][0]["figures"])]), pngs
    assert pngs == ["flat-test_vit_confusion.png", "flat-test_vit_taxonomy_recall.png", "mine.png"]


def test_evaluate_on_images_with_a_label_the_model_lacks_says_how_to_fix_it(
    trained: dict[str, Path], tmp_path: Path, capsys
) -> None:
    """The checkpoint's taxonomy is fixed, so the fix is to rename or leave out images, not to pass
    another --taxonomy (evaluate has no such option)."""
    from PIL import Image

    from examples.leukemia.evaluate import main

    for folder in ("Normal", "Normall"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (i * 90, 40, 200)).save(tmp_path / "data" / folder / f"{i}.png")
    run = trained["flat"]
    with pytest.raises(SystemExit) as err:
        main([str(run), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().err
    assert err.value.code == 2 and text.startswith("error: 1 folder name(s) not in the taxonomy of the checkpoint")
    assert "'Normall' (2 file(s)" in text and "closest node 'Normal'" in text and "leave those images out" in text
    assert "--taxonomy" not in text


def test_predict_writes_csv_with_cautious_answers(
    trained: dict[str, Path], tmp_path: Path, caplog, capsys, monkeypatch
) -> None:
    from examples.leukemia.predict import main

    images = sorted((trained["hierarchical"] / "SYNTHETIC_images").rglob("*.jpg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, src in enumerate(images):
        (folder / f"cell{i}.jpg").write_bytes(src.read_bytes())
    (folder / "notes.jpg").write_text("not an image")
    out = tmp_path / "pred.csv"
    with caplog.at_level(logging.WARNING):
        rows = main([str(trained["hierarchical"] / "best"), str(folder), "--out", str(out), "--threshold", "0.5"])
    assert "skipped 1 file(s)" in caplog.text and "notes.jpg" in caplog.text
    with open(out, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == len(rows) == 3
    tax = load_taxonomy("paper")
    for row in read:
        route = row["prediction_path"].split("/")
        assert route[-1] == row["prediction"] and route[0] == tax.root
        # with threshold >= 0.5 the cautious answer lies on the tiered (top-down) prediction's path
        assert route[: len(row["answer_path"].split("/"))] == row["answer_path"].split("/")
        assert float(row["answer_prob"]) >= 0.5
        probs = [float(row[f"p_depth{d}"]) for d in range(1, tax.max_depth + 1) if row[f"p_depth{d}"] != ""]
        assert len(probs) == len(route) - 1 and all(a >= b - 1e-6 for a, b in itertools.pairwise(probs))
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:  # a user error: "error: ..." and status 2, no traceback
        main([str(trained["hierarchical"] / "best"), str(tmp_path / "nope")])
    assert err.value.code == 2 and capsys.readouterr().err.startswith("error: inputs: ")
    monkeypatch.setenv("HIERCLS_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="inputs: .* does not exist"):
        main([str(trained["hierarchical"] / "best"), str(tmp_path / "nope")])
    with pytest.raises(SystemExit):
        main([str(trained["hierarchical"] / "best"), str(folder), "--threshold", "0"])
    assert "argument --threshold: expected a probability in (0, 1], got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["hierarchical", "flat", "per-level"])  # CNN, ViT, one CNN per level
def test_explain_writes_one_map_per_level(method: str, trained: dict[str, Path], tmp_path: Path) -> None:
    from examples.leukemia.explain import main

    images = trained[method] / "SYNTHETIC_images" / "Leukemia"
    rows = main([str(trained[method] / "best"), str(images), "--out", str(tmp_path), "--max-images", "2"])
    tax = load_taxonomy("paper")
    preds = {r["image"]: r["prediction"] for r in rows}
    assert len(preds) == 2 and len(rows) == sum(tax.depth(p) for p in preds.values())
    assert (tmp_path / "explain.png").read_bytes()[:8] == PNG
    for r in rows:
        assert Path(r["overlay"]).read_bytes()[:8] == PNG and r["node"] in tax.ancestors(
            r["prediction"], include_self=True
        )


def test_explain_keeps_images_with_the_same_name_apart(tmp_path: Path) -> None:
    from PIL import Image

    from examples.leukemia.checkpoint import save_checkpoint
    from examples.leukemia.explain import main
    from examples.leukemia.models import build_model

    tax = load_taxonomy("paper")
    model = build_model("test_convnext", tax, "hierarchical")
    config = {"model": model.config, "image_size": 32, "decode": "top_down"}
    save_checkpoint(tmp_path / "run" / "best", model, tax, config=config)
    rng = np.random.default_rng(0)
    images = [
        tmp_path / "cells" / "a" / "x.png",
        tmp_path / "cells" / "b" / "x.png",
        tmp_path / "cells" / "b" / "x.jpg",
    ]
    for file in images:
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(file)
    out = tmp_path / "out"
    rows = main([str(tmp_path / "run" / "best"), str(tmp_path / "cells"), "--out", str(out), "--device", "cpu"])
    preds = {r["image"]: r["prediction"] for r in rows}
    assert preds.keys() == {str(f) for f in images} and len(rows) == sum(tax.depth(p) for p in preds.values())
    overlays = [r["overlay"] for r in rows]
    assert len(set(overlays)) == len(rows), "two images wrote the same overlay file"
    assert all(Path(o).read_bytes()[:8] == PNG for o in overlays)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(["explain.png", *(Path(o).name for o in overlays)])
    assert all(Path(o).name.startswith(("000_x_d", "001_x_d", "002_x_d")) for o in overlays)


def test_compare_on_real_images(shared_data: Path, tmp_path: Path) -> None:
    from examples.leukemia.compare import main
    from examples.leukemia.pack import pack

    data = copy_pbc_subset(shared_data, tmp_path / "pbc")
    pk = tmp_path / "pbc32.npz"
    pack(data, pk, size=32, workers=1, progress=False)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"resnet18": {"test_acc": 0.9157, "test_acc_8class": 0.9847, "train_s": 16}}))
    out = tmp_path / "cmp"
    result = main(
        [
            "--pack",
            str(pk),
            "--runs",
            "hierarchical:test_resnet,flat:test_resnet,hierarchical:test_resnet:conditional",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--baseline-json",
            str(baseline),
            "--also-decode",
            "crm, hf_optimal,top_down",
            "--out",
            str(out),
        ]
    )
    assert [r["method"] for r in result["rows"]] == ["hierarchical", "flat", "hierarchical"] and not result["skipped"]
    # --also-decode: the same probabilities read out with other rules; a run's own rule is not repeated
    assert [sorted(r["metrics_by_decode"]) for r in result["rows"]] == [
        ["crm", "hf_optimal"],
        ["crm", "hf_optimal", "top_down"],
        ["crm", "hf_optimal"],
    ]
    flat_top_down = result["rows"][1]["metrics_by_decode"]["top_down"]
    assert {"fine_leaf_accuracy", "mistake_severity", "correct_rate"} <= set(flat_top_down)
    # another head on a method is its own row, folder and table line, trained with that head's loss
    assert [r["variant"] for r in result["rows"]] == ["hierarchical", "flat", "hierarchical (conditional head)"]
    assert [(r["head"], r["loss"]) for r in result["rows"]][2] == ("conditional", "conditional")
    assert [r["name"] for r in result["rows"]][2] == "hierarchical-conditional-test_resnet"
    for row in result["rows"]:
        assert {"eight_class_accuracy", "fine_leaf_accuracy", "hierarchical_f1", "mistake_severity"} <= set(
            row["metrics"]
        )
        assert row["train_seconds"] > 0 and row["img_per_s"] > 0
        assert row["img_per_s_after_first_epoch"] is None  # one epoch: nothing after the first
        assert all(Path(f).read_bytes()[:8] == PNG for f in row["figures"]) and len(row["figures"]) == 2
    assert "metrics_argmax_leaf" in result["rows"][0] and result["partial_labels_in_train"] > 0
    md = (out / "results.md").read_text()
    assert "read out with other decoding rules" in md and "| flat | test_resnet | top_down |" in md
    assert "| flat | test_resnet | argmax_leaf (its own) |" in md
    assert "| img/s after epoch 1 |" in md
    assert "| method | test_resnet |" in md and "**8-class acc**" in md and "Peer baseline" in md and "0.9157" in md
    # 4 headline tables + the detailed one + its own rule and the two --also-decode rules
    assert md.count("| hierarchical (conditional head) |") == 8
    # each run folder is self-contained: evaluate RUN/best finds the split without --pack/--data
    for name in ("hierarchical-test_resnet", "flat-test_resnet"):
        assert (out / "runs" / name / "splits.csv").read_text() == (out / "splits.csv").read_text()
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"][1]["method"] == "flat"
    assert (
        saved["command"].startswith("python -m examples.leukemia.compare --pack ")
        and "flat:test_resnet" in saved["command"]
    )
    assert all(r["best_metric"] == "leaf_accuracy" and 0 <= r["val_best"] <= 1 for r in saved["rows"])
    # the numbers behind the recall tree, by node name (None where no test image reaches the node)
    tax = load_taxonomy("pbc")
    for r in saved["rows"]:
        assert list(r["node_recall"]) == list(tax.nodes) and r["node_recall"][tax.root] == 1.0
        assert all(v is None or 0 <= v <= 1 for v in r["node_recall"].values()) and r["balance"] == 0.0
    from examples.leukemia.evaluate import main as evaluate

    again = evaluate([str(out / "runs" / "flat-test_resnet"), "--no-figures", "--out", str(tmp_path / "ev")])
    assert again["rows"][0]["node_recall"] == saved["rows"][1]["node_recall"]  # evaluate reproduces compare
    # runs that cannot finish before the deadline are skipped and say so
    skipped = main(
        [
            "--pack",
            str(pk),
            "--runs",
            "hierarchical:test_resnet",
            "--deadline",
            "1e-9",  # 0 is refused: a deadline is > 0 (or left out)
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "late"),
        ]
    )
    assert skipped["rows"] == [] and skipped["skipped"][0]["reason"].startswith("time")
    assert "Skipped: hierarchical:test_resnet" in (tmp_path / "late" / "results.md").read_text()


# ------------------------------------------------------------------------------------ aggregate
def _fake_results(path: Path, seed: int, rows: dict[tuple[str, str], dict[str, float]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    out = path / "results.json"
    out.write_text(
        json.dumps({"seed": seed, "rows": [{"method": m, "backbone": b, "metrics": v} for (m, b), v in rows.items()]})
    )
    return out


def test_evaluate_records_the_training_seed_so_aggregate_can_pool_readouts(
    trained: dict[str, Path], tmp_path: Path, capsys
) -> None:
    """The same checkpoints read out another way (here: TTA) pool over seeds like compare's results."""
    from examples.leukemia.aggregate import main as aggregate
    from examples.leukemia.evaluate import main as evaluate

    other = tmp_path / "flat-seed5"
    T.run(
        T.parse_args(
            [
                "--backbone",
                "test_vit",
                "--method",
                "flat",
                "--epochs",
                "1",
                "--synthetic-per-leaf",
                "4",
                "--seed",
                "5",
                "--output",
                str(other),
                *FAST,
            ]
        )
    )
    first = evaluate(
        [
            str(trained["hierarchical"]),
            str(trained["flat"]),
            "--tta",
            "flip",
            "--no-figures",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    seed0 = json.loads((trained["flat"] / "config.json").read_text())["seed"]
    assert first["seed"] == seed0 and [r["seed"] for r in first["rows"]] == [seed0, seed0]
    assert all(r["tta"] == "flip" for r in first["rows"])
    second = evaluate([str(other), "--tta", "flip", "--no-figures", "--out", str(tmp_path / "b")])
    assert second["seed"] == 5
    mixed = evaluate([str(trained["flat"]), str(other), "--no-figures", "--out", str(tmp_path / "c")])
    assert "seed" not in mixed and [r["seed"] for r in mixed["rows"]] == [seed0, 5]
    capsys.readouterr()
    pooled = aggregate([str(tmp_path / "a" / "results.json"), str(tmp_path / "b" / "results.json")])
    flat = next(e for e in pooled["summary"] if e["method"] == "flat")["fine_leaf_accuracy"]
    acc = [first["rows"][1]["metrics"]["fine_leaf_accuracy"], second["rows"][0]["metrics"]["fine_leaf_accuracy"]]
    assert flat["n"] == 2 and flat["mean"] == pytest.approx(sum(acc) / 2)
    with pytest.raises(SystemExit) as err:
        aggregate([str(tmp_path / "c" / "results.json")])
    assert err.value.code == 2 and "checkpoints that share one training seed" in capsys.readouterr().err


def test_aggregate_pools_seeds_and_pairs_them(tmp_path: Path, capsys) -> None:
    from examples.leukemia.aggregate import main

    acc = {0: (0.80, 0.82), 1: (0.70, 0.75), 2: (0.90, 0.89)}  # seed: (flat, hierarchical)
    files = [
        _fake_results(
            tmp_path / f"s{s}",
            s,
            {
                ("flat", "bb"): {"fine_leaf_accuracy": f, "mistake_severity": 3.0},
                ("hierarchical", "bb"): {"fine_leaf_accuracy": h, "mistake_severity": 2.5 + s},
            },
        )
        for s, (f, h) in acc.items()
    ]
    result = main([*map(str, files), "--out", str(tmp_path / "agg")])
    flat = next(e for e in result["summary"] if e["method"] == "flat")["fine_leaf_accuracy"]
    assert flat["n"] == 3 and flat["mean"] == pytest.approx(0.8) and flat["sd"] == pytest.approx(0.1)
    (pair,) = result["paired"]
    diffs = [h - f for f, h in acc.values()]  # +0.02, +0.05, -0.01
    mean = sum(diffs) / 3
    sd = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    assert pair["fine_leaf_accuracy"]["mean_diff"] == pytest.approx(mean)
    assert pair["fine_leaf_accuracy"]["se"] == pytest.approx(sd / 3**0.5)
    assert pair["fine_leaf_accuracy"]["wins"] == 2
    # lower severity is better: 2.5 < 3 wins, 3.5 and 4.5 lose
    assert pair["mistake_severity"]["wins"] == 1
    md = (tmp_path / "agg" / "aggregate.md").read_text()
    assert "0.8000 ± 0.1000" in md and "(2/3)" in md and md == capsys.readouterr().out.rstrip("\n") + "\n"


def test_aggregate_errors(tmp_path: Path, capsys, monkeypatch) -> None:
    from examples.leukemia.aggregate import main

    monkeypatch.delenv("HIERCLS_DEBUG", raising=False)
    a = _fake_results(tmp_path / "a", 0, {("flat", "bb"): {"fine_leaf_accuracy": 0.5}})
    b = _fake_results(tmp_path / "b", 0, {("flat", "bb"): {"fine_leaf_accuracy": 0.6}})
    (tmp_path / "x.json").write_text("[1, 2]")
    dup = tmp_path / "dup.json"  # two recipes of flat:bb in one file: pooling would keep one silently
    row = {"method": "flat", "backbone": "bb", "metrics": {"fine_leaf_accuracy": 0.5}}
    dup.write_text(json.dumps({"seed": 1, "rows": [row, {**row, "metrics": {"fine_leaf_accuracy": 0.9}}]}))
    for argv, said in (
        ([str(a), str(b)], "both have seed 0"),
        ([str(dup)], "flat:bb appear more than once"),
        ([str(tmp_path / "missing.json")], "no such file"),
        ([str(tmp_path / "x.json")], "expected a compare results.json"),
    ):
        with pytest.raises(SystemExit) as err:
            main(argv)
        text = capsys.readouterr().err
        assert err.value.code == 2 and text.startswith("error: ") and said in text


def test_aggregate_refuses_hand_edited_or_foreign_files_by_field(tmp_path: Path, capsys, monkeypatch) -> None:
    """'seed': null, a row without 'backbone', 'rows': "x"... each crashed with a traceback (TypeError,
    KeyError); now an error that names the file and the field."""
    from examples.leukemia.aggregate import main

    monkeypatch.delenv("HIERCLS_DEBUG", raising=False)
    row = {"method": "flat", "backbone": "bb", "metrics": {"fine_leaf_accuracy": 0.5}}
    cases = [
        ({"seed": None, "rows": [row]}, "seed: expected the whole number of the training seed (--seed), got None"),
        ({"seed": "0", "rows": [row]}, "seed: expected the whole number of the training seed (--seed), got '0'"),
        ({"seed": 0, "rows": "x"}, "rows: expected a list of runs, one object each, got 'x'"),
        ({"seed": 0, "rows": [3]}, "rows[0]: expected an object (one run), got 3"),
        ({"seed": 0, "rows": [{"method": "flat", "metrics": {}}]}, "rows[0].backbone: expected a name (text), got "
         "nothing (the field is missing)"),
        ({"seed": 0, "rows": [{**row, "method": None}]}, "rows[0].method: expected a name (text), got None"),
        ({"seed": 0, "rows": [{**row, "metrics": [0.5]}]}, "rows[0].metrics: expected an object of metric values"),
        ({"seed": 0, "rows": [{**row, "metrics": {"accuracy": "high"}}]}, "rows[0].metrics.accuracy: expected a "
         "number (or null), got 'high'"),
    ]  # fmt: skip
    for i, (content, said) in enumerate(cases):
        file = tmp_path / f"r{i}.json"
        file.write_text(json.dumps(content))
        with pytest.raises(SystemExit) as err:
            main([str(file)])
        text = capsys.readouterr().err
        assert err.value.code == 2 and text.startswith(f"error: {file}: ") and said in text, text
        assert "rerun compare (or evaluate)" in text
    # null metrics (not measured) are left out, as NaN ones are; a whole-number float seed is that seed
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps({"seed": 1.0, "rows": [{**row, "metrics": {"fine_leaf_accuracy": 0.5, "accuracy": None}}]})
    )
    result = main([str(good)])
    (entry,) = result["summary"]
    assert entry["seeds"] == [1] and "accuracy" not in entry and entry["fine_leaf_accuracy"]["mean"] == 0.5
    capsys.readouterr()


def test_evaluate_a_pack_run_from_anywhere(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """The checkpoint stores the pack's absolute path, so evaluate works from another folder; a pack
    that has gone is an error that says what to pass, not a crash on the pack-relative manifest."""
    from examples.leukemia import train as T
    from examples.leukemia.evaluate import main
    from examples.leukemia.pack import pack

    data = copy_pbc_subset(shared_data, tmp_path / "pbc", per_prefix=3)
    monkeypatch.chdir(tmp_path)
    pack(data, Path("pbc32.npz"), size=32, workers=1, progress=False)  # a relative path, as users type it
    args = ["--pack", "pbc32.npz", "--backbone", "test_convnext", "--epochs", "1", "--output", "run"]
    T.run(T.parse_args([*args, "--quiet", "--no-tensorboard", "--batch-size", "8", "--workers", "1"]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = main([str(tmp_path / "run" / "best"), "--no-figures", "--out", "eval"])
    assert result["rows"][0]["metrics"]["n"] > 0
    (tmp_path / "pbc32.npz").rename(tmp_path / "moved.npz")
    monkeypatch.setenv("HIERCLS_DEBUG", "1")  # the exception itself, not the clean exit
    with pytest.raises(FileNotFoundError, match="trained on the pack .*pbc32.npz, which is not there any more"):
        main([str(tmp_path / "run" / "best"), "--no-figures", "--out", "eval2"])
    moved = main(
        [str(tmp_path / "run" / "best"), "--pack", str(tmp_path / "moved.npz"), "--no-figures", "--out", "eval3"]
    )
    assert moved["rows"][0]["metrics"] == result["rows"][0]["metrics"]


def test_aggregate_keeps_two_heads_of_one_method_apart(tmp_path: Path, capsys) -> None:
    from examples.leukemia.aggregate import main

    files = []
    for seed, (flat, level, cond) in enumerate(((0.80, 0.81, 0.83), (0.82, 0.80, 0.84))):
        rows = [
            {"method": "flat", "backbone": "bb", "metrics": {"fine_leaf_accuracy": flat}},
            {
                "method": "hierarchical",
                "variant": "hierarchical",
                "backbone": "bb",
                "metrics": {"fine_leaf_accuracy": level},
            },
            {  # a row written before the 'variant' field: its head keeps it apart all the same
                "method": "hierarchical",
                "head": "conditional",
                "loss": "conditional",
                "backbone": "bb",
                "metrics": {"fine_leaf_accuracy": cond},
            },
        ]
        f = tmp_path / f"s{seed}.json"
        f.write_text(json.dumps({"seed": seed, "rows": rows}))
        files.append(str(f))
    result = main(files)
    pairs = {p["method"]: p["fine_leaf_accuracy"]["mean_diff"] for p in result["paired"]}
    assert pairs == pytest.approx({"hierarchical": -0.005, "hierarchical (conditional head)": 0.025})
    assert "| hierarchical (conditional head) | bb | 2 |" in capsys.readouterr().out


def test_evaluate_names_a_run_with_another_head_as_compare_does(tmp_path: Path) -> None:
    from examples.leukemia.evaluate import main as evaluate

    run = tmp_path / "cond"
    argv = ["--backbone", "test_vit", "--head", "conditional", "--epochs", "1", "--synthetic-per-leaf", "4"]
    T.run(T.parse_args([*argv, "--output", str(run), *FAST]))
    (row,) = evaluate([str(run), "--no-figures", "--out", str(tmp_path / "e")])["rows"]
    assert row["name"] == "hierarchical-conditional-test_vit" and row["variant"] == "hierarchical (conditional head)"


def test_evaluate_reads_out_with_the_checkpoints_threshold(tmp_path: Path, caplog) -> None:
    """A run trained with --decode threshold --threshold 0.2 is read out at 0.2 unless told otherwise
    (it used to be read at --threshold's default, 0.5, so evaluate disagreed with train's own test numbers)."""
    from examples.leukemia.evaluate import main

    run = tmp_path / "cautious"
    argv = ["--backbone", "test_resnet", "--decode", "threshold", "--threshold", "0.2", "--epochs", "1"]
    T.run(T.parse_args([*argv, "--synthetic-per-leaf", "4", "--output", str(run), *FAST]))
    trained_test = json.loads((run / "summary.json").read_text())["test"]
    default = main([str(run / "best"), "--out", str(tmp_path / "default"), "--no-figures"])["rows"][0]
    explicit = main([str(run / "best"), "--out", str(tmp_path / "at05"), "--no-figures", "--threshold", "0.5"])["rows"][
        0
    ]
    assert (default["decode"], default["threshold"], explicit["threshold"]) == ("threshold", 0.2, 0.5)
    for key in ("hierarchical_f1", "hierarchical_recall", "accuracy"):
        assert default["metrics"][key] == pytest.approx(trained_test[key]), key
    # a higher threshold stops on the path of the lower one's answer, never below it (here: above it)
    assert explicit["metrics"]["hierarchical_recall"] < default["metrics"]["hierarchical_recall"]
    # a --threshold that the rule does not read is said to have no effect, and has none
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.evaluate"):
        td = main([str(run / "best"), "--out", str(tmp_path / "td"), "--no-figures", "--decode", "top_down"])
        assert "no effect" not in caplog.text
        td_t = main(
            [
                str(run / "best"),
                "--out",
                str(tmp_path / "tdt"),
                "--no-figures",
                "--decode",
                "top_down",
                "--threshold",
                "0.3",
            ]
        )
    assert "--threshold 0.3 has no effect: the decoding rule is 'top_down'" in caplog.text
    assert td_t["rows"][0]["metrics"] == td["rows"][0]["metrics"] and td_t["rows"][0]["threshold"] is None


def test_checkpoint_decoding_prefers_the_command_line_then_the_run(caplog) -> None:
    """evaluate, explain and predict read a checkpoint out with one rule: the command line's rule and
    threshold, else the run's, else argmax_leaf at 0.5; a threshold the rule does not read is said to
    have no effect (except where asked not to: predict's 'answer' column always reads it)."""
    from examples.leukemia.evaluate import checkpoint_decoding

    run = {"decode": "threshold", "threshold": 0.2, "model": {"decode": "top_down"}}
    assert checkpoint_decoding(run) == ("threshold", 0.2)
    assert checkpoint_decoding(run, threshold=0.7) == ("threshold", 0.7)
    assert checkpoint_decoding({"model": {"decode": "top_down"}}) == ("top_down", 0.5)
    assert checkpoint_decoding({}) == ("argmax_leaf", 0.5)
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.evaluate"):
        assert checkpoint_decoding(run, "top_down") == ("top_down", 0.2)
        assert checkpoint_decoding(run, "top_down", 0.3, warn_unused=False) == ("top_down", 0.3)
        assert "no effect" not in caplog.text
        assert checkpoint_decoding(run, "argmax_leaf", 0.3) == ("argmax_leaf", 0.3)
    assert "--threshold 0.3 has no effect: the decoding rule is 'argmax_leaf'" in caplog.text


def test_save_figures_draws_the_recall_it_is_given_or_computes_the_same(
    paper_tax, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate and compare pass the node_recalls they already hold; without them the same values are
    computed (a node no image reaches: NaN, drawn blank)."""
    import hiercls.plot as plot
    from examples.leukemia.evaluate import node_recalls, save_figures

    drawn = []
    real = plot.plot_taxonomy
    monkeypatch.setattr(
        plot, "plot_taxonomy", lambda tax, values, **kw: (drawn.append(values), real(tax, values, **kw))[1]
    )
    t = paper_tax.encode(["ALL", "AML", "CLL", "Normal", "ALL"])
    p = paper_tax.encode(["ALL", "ALL", "CML", "Normal", "Reactive"])
    given = node_recalls(t, p, paper_tax)
    save_figures(t, p, paper_tax, tmp_path / "given", recall=given)
    save_figures(t, p, paper_tax, tmp_path / "computed")
    np.testing.assert_allclose(drawn[0], drawn[1], atol=1e-6, equal_nan=True)
    assert np.isnan(drawn[0]).any() and not np.isnan(drawn[0]).all()
    zeros = dict.fromkeys(paper_tax.nodes, 0.0)
    save_figures(t, p, paper_tax, tmp_path / "zeros", recall=zeros)
    assert (drawn[2] == 0).all()
    assert (tmp_path / "zeros_taxonomy_recall.png").is_file()


def test_compare_refuses_an_unknown_rule_to_also_decode_with(tmp_path: Path, capsys) -> None:
    from examples.leukemia.compare import main

    with pytest.raises(SystemExit):
        main(["--pack", str(tmp_path / "x.npz"), "--also-decode", "crm,beam", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "--also-decode: expected rules among argmax_leaf" in err and "'beam'" in err
    assert not (tmp_path / "o").exists()  # refused before anything is created


def test_evaluate_expands_a_checkpoint_pattern_the_shell_left_as_it_was(tmp_path: Path) -> None:
    """``runs/*/best`` matches no file in bash (a checkpoint is best.json + its weights), so bash passes it
    on unexpanded: it is read as runs/*/best.json; paths that exist and plain names are kept."""
    from examples.leukemia.evaluate import expand_checkpoints

    for run in ("b", "a"):
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "best.json").write_text("{}")
    runs = tmp_path / "runs"
    assert expand_checkpoints([f"{runs}/*/best"]) == [f"{runs}/a/best", f"{runs}/b/best"]
    assert expand_checkpoints([f"{runs}/*/best.json"]) == [f"{runs}/a/best.json", f"{runs}/b/best.json"]
    assert expand_checkpoints([f"{runs}/*"]) == [f"{runs}/a", f"{runs}/b"]
    assert expand_checkpoints(["plain/best", f"{runs}/a"]) == ["plain/best", f"{runs}/a"]  # no pattern: as given
    with pytest.raises(FileNotFoundError, match=r"the pattern .*nothing/\*/best.* matches no checkpoint"):
        expand_checkpoints([f"{tmp_path}/nothing/*/best"])


def test_flat_grad_cam_maps_say_so_in_the_figure() -> None:
    """explain.png showed flat maps as a uniform tint with nothing to tell them from real evidence."""
    from examples.leukemia.explain import panel_title

    assert panel_title(2, "ALL", 0.91, flat=False) == "depth 2: ALL\np=0.91"
    assert panel_title(2, "ALL", 0.91, flat=True).endswith("(flat map: no evidence)")


def test_two_runs_of_one_recipe_are_named_by_their_run_folders(trained: dict[str, Path], tmp_path: Path) -> None:
    """Two runs of one method and backbone (here the same run in two folders, as two image sizes would be)
    were 'flat-test_vit' and 'flat-test_vit-2', with a note to pool seeds though both were seed 0
    (helper-111). The second is now named by its folder, and the note says they differ in another way."""
    import shutil

    from examples.leukemia.evaluate import main

    other = tmp_path / "a64"
    shutil.copytree(trained["flat"], other)
    result = main([str(trained["flat"]), str(other), str(trained["hierarchical"]), "--out", str(tmp_path / "ev")])
    assert [r["name"] for r in result["rows"]] == ["flat-test_vit", "flat-test_vit-a64", "hierarchical-test_convnext"]
    md = (tmp_path / "ev" / "results.md").read_text()
    assert "flat-test_vit-a64" in md and "Some share a seed too" in md and "To pool seeds" not in md
    assert (tmp_path / "ev" / "flat-test_vit-a64_confusion.png").is_file()


def test_results_markdown_notes_two_seeds_of_one_method_beside_other_backbones() -> None:
    """The note on pooling seeds was missed when one method had two seeds on one backbone and the methods
    also spanned other backbones (it compared distinct labels with distinct (method, backbone) pairs)."""
    m = {"fine_leaf_accuracy": 0.5, "n": 4}
    rows = [
        {"method": "flat", "backbone": "r18", "name": "flat-r18", "seed": 0, "metrics": m},
        {"method": "flat", "backbone": "r18", "name": "flat-r18-2", "seed": 1, "metrics": m},
        {"method": "flat", "backbone": "vit", "metrics": m},
        {"method": "hierarchical", "backbone": "r18", "metrics": m},
        {"method": "hierarchical", "backbone": "vit", "metrics": m},
    ]
    text = results_markdown(rows, title="T")
    assert "Several runs share a method and backbone" in text and "To pool seeds" in text
