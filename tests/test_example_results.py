"""The leukemia example's result files: what compare writes into --out and its run folders, what evaluate
tables show, and what aggregate agrees to pool.

One small comparison on generated (SYNTHETIC) images, a folder of class folders read with --data, is
shared by the tests: two tiny runs (``test_resnet``, one epoch, 32 px) on the CPU.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from examples.leukemia.data import load_taxonomy, read_manifest

RUNS = ("flat-test_resnet", "hierarchical-test_resnet")
COMPARE = [
    "--taxonomy",
    "paper",
    "--epochs",
    "1",
    "--img-size",
    "32",
    "--batch-size",
    "16",
    "--device",
    "cpu",
    "--workers",
    "1",
]


@pytest.fixture(autouse=True)
def _clean_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    """User errors end as 'error: ...' and status 2 (HIERCLS_DEBUG would re-raise them instead)."""
    monkeypatch.delenv("HIERCLS_DEBUG", raising=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from examples.leukemia.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("data") / "syn", "paper", n_per_leaf=6, size=32, seed=0)


@pytest.fixture(scope="module")
def compared(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """compare's --out: a flat and a hierarchical run on --data, with their figures."""
    from examples.leukemia.compare import main

    out = tmp_path_factory.mktemp("cmp") / "out"
    argv = ["--data", str(images), "--runs", "flat:test_resnet,hierarchical:test_resnet", *COMPARE]
    main([*argv, "--train-args", "--quiet --warmup 1", "--out", str(out)])  # --quiet: compare passes it too
    return out


def _evaluate(*argv: str) -> dict[str, Any]:
    from examples.leukemia.evaluate import main

    return main([*argv, "--device", "cpu", "--workers", "1", "--no-figures"])


# ------------------------------------------------------------------ 1. the run folder's split manifest
def test_compare_run_folder_manifest_leads_to_the_images(compared: Path, images: Path, tmp_path: Path, caplog, capsys):
    """The copy of splits.csv in runs/<name>/ had the paths of --out's copy, relative to --out: from the
    run folder they led nowhere, so evaluate warned of a moved folder and scanned again, and its check
    that no scored image was a training image compared against files that do not exist."""
    top = read_manifest(compared / "splits.csv")
    for run in RUNS:
        assert read_manifest(compared / "runs" / run / "splits.csv") == top  # the same files, resolved
    assert all(Path(s.path).is_file() for samples in top.values() for s in samples)
    with caplog.at_level(logging.WARNING, logger="examples.leukemia.evaluate"):
        result = _evaluate(str(compared / "runs" / "*" / "best.json"), "--out", str(tmp_path / "own"))
    assert "moved run folder" not in caplog.text
    assert [r["metrics"]["n"] for r in result["rows"]] == [len(top["test"])] * 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:  # another split of the same images: its test split holds train images
        _evaluate(
            str(compared / "runs" / RUNS[0] / "best"),
            "--data",
            str(images),
            "--split-seed",
            "5",
            "--out",
            str(tmp_path / "other"),
        )
    text = capsys.readouterr().err
    assert err.value.code == 2 and "were in the run's training split" in text and RUNS[0] in text


def test_compare_copies_a_pack_runs_manifest_as_it_is(tmp_path: Path) -> None:
    """A pack run's manifest lists names inside the pack, not files: nothing to rewrite."""
    from examples.leukemia.compare import copy_manifest

    src = tmp_path / "out" / "splits.csv"
    src.parent.mkdir()
    src.write_text("split,path,label\ntrain,ALL/a.jpg,ALL\ntest,CLL/b.jpg,CLL\n")
    (tmp_path / "out" / "runs" / "r").mkdir(parents=True)
    copy_manifest(src, tmp_path / "out" / "runs" / "r" / "splits.csv", pack=True)
    assert (tmp_path / "out" / "runs" / "r" / "splits.csv").read_text() == src.read_text()


# ------------------------------------------------------------------ 2. aggregate pools one setting only
def _copy(results: Path, dest: Path, seed: int, **changes: Any) -> Path:
    """A copy of a results.json with another seed and ``changes`` (``row__KEY``: in every row)."""
    data = json.loads(results.read_text())
    data["seed"] = seed
    for key, value in changes.items():
        if key.startswith("row__"):
            for row in data["rows"]:
                row[key[5:]] = value
        else:
            data[key] = value
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(data))
    return dest


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"data": "/elsewhere/pbc"}, "data: "),
        ({"taxonomy": "0" * 64}, "taxonomy: "),
        ({"split_id": "0123456789abcdef"}, "split_id: "),
        ({"split_seed": 7}, "split_seed: "),
        ({"group_duplicates": True}, "group_duplicates: False in "),
        ({"split_by_group": True}, "split_by_group: False in "),
        ({"image_size": 64}, "image_size: 32 in "),
        ({"crop": 0.7}, "crop: 1.0 in "),
        ({"epochs": 30}, "epochs: 1 in "),
        ({"train_args": "--warmup 2"}, "train_args: '--quiet --warmup 1' in "),
        ({"row__tta": "d4"}, "tta of flat:test_resnet: 'none' in "),
        ({"row__decode": "crm"}, "decode of hierarchical:test_resnet: 'top_down' in "),
    ],
)
def test_aggregate_refuses_files_of_other_data_split_or_flags(
    compared: Path, tmp_path: Path, capsys, change: dict[str, Any], said: str
) -> None:
    from examples.leukemia.aggregate import main

    first = compared / "results.json"
    other = _copy(first, tmp_path / "s1" / "results.json", 1, **change)
    with pytest.raises(SystemExit) as err:
        main([str(first), str(other)])
    text = capsys.readouterr().err
    assert err.value.code == 2 and text.startswith("error: results: expected files that differ only in their seed")
    assert said in text and str(first) in text and str(other) in text and "another --seed" in text


def test_aggregate_reads_a_split_recorded_without_its_grouping_as_ungrouped(compared: Path, tmp_path: Path, capsys):
    """A file written before splits recorded whether they kept copies together was pooled with one that
    did (other test images): a data folder's split without the field was drawn without grouping."""
    from examples.leukemia.aggregate import main

    first = compared / "results.json"
    assert json.loads(first.read_text())["group_duplicates"] is False
    old = json.loads(first.read_text())
    del old["group_duplicates"]
    older = tmp_path / "old" / "results.json"
    older.parent.mkdir()
    older.write_text(json.dumps(old))
    grouped = _copy(first, tmp_path / "g" / "results.json", 1, group_duplicates=True)
    plain = _copy(first, tmp_path / "p" / "results.json", 1)
    assert len(main([str(older), str(plain)])["summary"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(older), str(grouped)])
    assert "group_duplicates of flat:test_resnet: False in " in capsys.readouterr().err
    # the same for a split recorded before it said whether it kept each patient's images together
    del old["split_by_group"]
    older.write_text(json.dumps(old))
    by_group = _copy(first, tmp_path / "b" / "results.json", 1, split_by_group=True)
    assert len(main([str(older), str(plain)])["summary"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(older), str(by_group)])
    assert "split_by_group of flat:test_resnet: False in " in capsys.readouterr().err


def test_aggregate_pools_the_same_data_named_from_another_folder(compared: Path, tmp_path: Path) -> None:
    """Seeds run from two checkouts name one pack two ways ("pack /work/main/.carry/p.npz", "pack
    .carry/p.npz"): the project's own committed seed files were refused as other data."""
    from examples.leukemia.aggregate import main

    first = compared / "results.json"
    data = json.loads(first.read_text())
    moved = str(Path("/elsewhere/checkout") / Path(data["data"]).name)
    other = _copy(first, tmp_path / "s1" / "results.json", 1, data=moved, data_source=f"data {moved}")
    assert len(main([str(first), str(other)])["summary"]) == 2


def test_aggregate_pools_what_differs_only_by_seed(compared: Path, tmp_path: Path, capsys) -> None:
    """Times, the device, the command and the title differ between seeds and do not count; so does the
    kind of file: evaluate's rows record the same settings as compare's."""
    from examples.leukemia.aggregate import main

    first = compared / "results.json"
    other = _copy(
        first, tmp_path / "s1" / "results.json", 1, wall_seconds=1.0, device="cuda", command="x", title="seed 1"
    )
    pooled = main([str(first), str(other)])
    assert len(pooled["summary"]) == 2
    # the paper taxonomy has no PBC 8 classes: no column of dashes for them (compare and evaluate show none)
    from examples.leukemia.aggregate import markdown

    text = markdown(pooled)
    assert "8-class acc" not in text and "fine-leaf acc" in text and "hier. F1" in text
    evaluated = _evaluate(str(compared / "runs" / "*" / "best.json"), "--out", str(tmp_path / "ev"))
    assert evaluated["rows"][0]["data"] == json.loads(first.read_text())["data"]
    again = _copy(tmp_path / "ev" / "results.json", tmp_path / "ev1" / "results.json", 1)
    assert len(main([str(first), str(again)])["summary"]) == 2
    flip = _evaluate(str(compared / "runs" / "*" / "best.json"), "--tta", "flip", "--out", str(tmp_path / "flip"))
    assert flip["seed"] == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):  # the same checkpoints read out with TTA are another setting
        main([str(again), str(tmp_path / "flip" / "results.json")])
    assert "tta of flat:test_resnet: 'none' in " in capsys.readouterr().err


# ------------------------------------------------------------------ 3. every run has its line
def test_results_markdown_keeps_two_runs_of_one_method_and_backbone_apart() -> None:
    from examples.leukemia.evaluate import results_markdown

    rows = [
        {"name": "flat-bb", "seed": 0, "method": "flat", "backbone": "bb", "metrics": {"fine_leaf_accuracy": 0.25}},
        {"name": "flat-bb-2", "seed": 1, "method": "flat", "backbone": "bb", "metrics": {"fine_leaf_accuracy": 0.75}},
        {"method": "hierarchical", "backbone": "bb", "metrics": {"fine_leaf_accuracy": 0.5}},
    ]
    md = results_markdown(rows)
    assert "| flat [flat-bb, seed 0] | 0.2500 |" in md and "| flat [flat-bb-2, seed 1] | 0.7500 |" in md
    assert "| hierarchical | 0.5000 |" in md and "python -m examples.leukemia.aggregate" in md
    assert "| run | seed | method | backbone | decode |" in md
    assert (
        "| flat-bb | 0 | flat | bb |" in md
        and "| flat-bb-2 | 1 | flat | bb |" in md
        and "| — | — | hierarchical |" in md
    )
    same = [{k: v for k, v in r.items() if k not in ("name", "seed")} for r in rows[:2]]  # nothing tells them apart
    md = results_markdown(same)
    assert "| flat [run 1] | 0.2500 |" in md and "| flat [run 2] | 0.7500 |" in md


def test_evaluate_shows_two_runs_of_one_name_on_two_lines(compared: Path, tmp_path: Path) -> None:
    """Two run folders of the same name (a copy of the run beside the other: the same checkpoint named
    twice is scored once) get a line each."""
    run = str(compared / "runs" / RUNS[0])
    other = tmp_path / "copy" / "runs" / RUNS[0]
    shutil.copytree(run, other)
    result = _evaluate(run, str(other), "--out", str(tmp_path / "e"))
    assert [r["name"] for r in result["rows"]] == [RUNS[0], f"{RUNS[0]}-2"]
    md = (tmp_path / "e" / "results.md").read_text()
    assert f"| flat [{RUNS[0]}, seed 0] |" in md and f"| flat [{RUNS[0]}-2, seed 0] |" in md


# ------------------------------------------------------------------ 4. a rerun replaces compare's runs
def test_compare_rerun_removes_its_earlier_runs_and_figures_only(compared: Path, images: Path, tmp_path: Path) -> None:
    from examples.leukemia.compare import main

    out = tmp_path / "out"
    shutil.copytree(compared, out)
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        f"{r}_{k}.png" for r in RUNS for k in ("confusion", "taxonomy_recall")
    )
    (out / "notes.txt").write_text("mine")
    (out / "figures" / "mine.png").write_bytes(b"mine")
    (out / "runs" / RUNS[1] / "mine.txt").write_text("mine")
    (out / "runs" / "by-hand").mkdir()
    (out / "runs" / "by-hand" / "best.json").write_text("{}")  # not compare's: no results.json names it
    argv = ["--data", str(images), "--runs", "flat:test_resnet", *COMPARE, "--figures", "none"]
    result = main([*argv, "--train-args", "--quiet --warmup 1", "--out", str(out)])
    assert result["run_names"] == [RUNS[0]] and [r["name"] for r in result["rows"]] == [RUNS[0]]
    assert (out / "runs" / RUNS[0] / "best.json").is_file()
    assert sorted(p.name for p in (out / "runs" / RUNS[1]).iterdir()) == ["mine.txt"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["mine.png"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "runs" / "by-hand" / "best.json").is_file()


def test_evaluate_refuses_checkpoints_of_two_taxonomies(tmp_path: Path, capsys) -> None:
    from examples.leukemia.checkpoint import save_checkpoint
    from examples.leukemia.models import build_model

    paths = []
    for name in ("paper", "pbc"):
        tax = load_taxonomy(name)
        model = build_model("test_resnet", tax, "flat")
        path = tmp_path / name / "best"
        save_checkpoint(path, model, tax, config={"model": model.config, "image_size": 32, "taxonomy": name})
        paths.append(str(path))
    with pytest.raises(SystemExit) as err:
        _evaluate(*paths, "--out", str(tmp_path / "e"))
    text = capsys.readouterr().err
    assert err.value.code == 2 and "expected checkpoints of one taxonomy" in text
    assert "taxonomy 'paper'" in text and "taxonomy 'pbc'" in text and all(p in text for p in paths)
    assert "in its own call with its own --out" in text
    assert not (tmp_path / "e").exists()  # refused before anything was loaded or written


def test_compare_says_where_the_weights_started(compared: Path) -> None:
    """results.md said "N epochs from scratch" even when --train-args loaded other weights."""
    from examples.leukemia.compare import weights_start

    result = json.loads((compared / "results.json").read_text())
    assert (
        result["weights_start"] == "from scratch" and "epochs from scratch at" in (compared / "results.md").read_text()
    )
    assert weights_start(["--init-checkpoint", "runs/x/best", "--warmup", "1"]) == "from the weights of runs/x/best"
    assert weights_start(["--pretrained"]) == "from timm pretrained weights"


# ------------------------------------------------------------------ 5. --train-args may not override compare
@pytest.mark.parametrize(
    ("train_args", "flags", "instead"),
    [
        ("--seed 7", "--seed", "--seed -> compare's own --seed"),
        ("--warmup 1 --epoch 2", "--epochs", "--epochs -> compare's own --epochs"),  # train's abbreviation
        ("--batch-size 4 --img-size 64", "--batch-size, --img-size", "--img-size -> compare's own --img-size"),
        ("--backbone resnet18", "--backbone", "--runs method:backbone"),
        ("--output elsewhere", "--output", "--out"),
        # a run stopped early was reported as trained for --epochs
        ("--stop-after 1", "--stop-after", "--stop-after -> compare's own --epochs"),
    ],
)
def test_compare_refuses_train_args_it_sets_itself(
    tmp_path: Path, capsys, train_args: str, flags: str, instead: str
) -> None:
    from examples.leukemia.compare import main

    out = tmp_path / "o"
    with pytest.raises(SystemExit) as err:
        main(
            [
                "--pack",
                str(tmp_path / "x.npz"),
                "--runs",
                "flat:test_resnet",
                "--train-args",
                train_args,
                "--out",
                str(out),
            ]
        )
    text = capsys.readouterr().err
    assert err.value.code == 2 and text.startswith("error: --train-args: expected training flags that compare does")
    assert f"got {flags} (in {train_args!r})" in text and instead in text
    assert not out.exists()  # refused before anything is created


def test_compare_checks_train_args_options_against_every_run_before_reading_data(tmp_path: Path, capsys) -> None:
    from examples.leukemia.compare import main

    out = tmp_path / "o"
    options = "--backbone-kwargs '{\"drop_path\": 0.1}'"
    with pytest.raises(SystemExit) as err:
        main(
            [
                "--pack",
                str(tmp_path / "missing.npz"),
                "--runs",
                "flat:test_resnet",
                "--train-args",
                options,
                "--out",
                str(out),
            ]
        )
    text = capsys.readouterr().err
    assert err.value.code == 2 and "error: --train-args, run flat:test_resnet: --backbone-kwargs: timm's" in text
    assert not out.exists()  # refused before the (missing) pack is read or anything is created


# ------------------------------------------------------------------ 6. small ones
def _results(path: Path, seed: int, rows: list[tuple[str, float]]) -> str:
    path.mkdir(parents=True, exist_ok=True)
    data = {
        "seed": seed,
        "rows": [{"method": m, "backbone": "bb", "metrics": {"fine_leaf_accuracy": v}} for m, v in rows],
    }
    (path / "results.json").write_text(json.dumps(data))
    return str(path / "results.json")


def test_aggregate_json_is_strict_json(tmp_path: Path, capsys) -> None:
    """One seed has no standard deviation: NaN in memory, null in the file (NaN is not JSON)."""
    from examples.leukemia.aggregate import main

    main([_results(tmp_path / "s0", 0, [("flat", 0.5), ("hierarchical", 0.6)]), "--out", str(tmp_path / "agg")])

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in aggregate.json")

    saved = json.loads((tmp_path / "agg" / "aggregate.json").read_text(), parse_constant=refuse)
    assert saved["summary"][0]["fine_leaf_accuracy"]["sd"] is None
    assert saved["paired"][0]["fine_leaf_accuracy"]["se"] is None


def test_aggregate_reference_must_be_a_method_of_the_files(tmp_path: Path, capsys) -> None:
    from examples.leukemia.aggregate import main

    files = [_results(tmp_path / f"s{s}", s, [("flat", 0.5 + s / 10), ("hierarchical", 0.6)]) for s in (0, 1)]
    with pytest.raises(SystemExit) as err:
        main([*files, "--reference", "Flat"])
    text = capsys.readouterr().err
    assert (
        err.value.code == 2 and "--reference: expected one of the methods in the files, 'flat', 'hierarchical'" in text
    )
    assert "got 'Flat'" in text
    assert main([*files, "--reference", "hierarchical"])["paired"][0]["method"] == "flat"
    # no flat in the files and no --reference: the means alone, as before
    alone = [_results(tmp_path / f"h{s}", s, [("hierarchical", 0.6)]) for s in (0, 1)]
    assert main(alone)["paired"] == []


def test_evaluate_refuses_an_unknown_rule_before_loading_anything(tmp_path: Path, capsys) -> None:
    from examples.leukemia.evaluate import checkpoint_decoding

    with pytest.raises(SystemExit) as err:
        _evaluate(str(tmp_path / "missing" / "best"), "--decode", "beam", "--out", str(tmp_path / "e"))
    text = capsys.readouterr().err
    assert err.value.code == 2 and "argument --decode: expected one of auto, argmax_leaf, top_down" in text
    assert "got 'beam'" in text and "missing" not in text and not (tmp_path / "e").exists()
    # train's 'auto': the method's own rule, not the rule the run validated with
    assert checkpoint_decoding({"decode": "crm", "model": {"decode": "top_down"}}, "auto") == ("top_down", 0.5)
