"""Pool several ``compare`` runs that differ only in their seed: mean, spread and paired differences.

One seed cannot say whether a 0.3-point gap between two methods is real. Run ``compare`` once per
seed (same data, same split, same flags), then::

    python -m examples.leukemia.aggregate results/seed0/results.json results/seed1/results.json ...

prints (and with ``--out`` writes) a markdown table of mean ± sample standard deviation per
(method, backbone) and metric, and the paired difference of every method against ``--reference``
(default ``flat`` when the files hold it; a method they do not hold is an error) on the same backbone,
seed by seed: the mean difference, its standard error and how many seeds it wins. Runs are paired by
seed, so a method missing for a seed is left out of that seed's pair, and the count of pairs is shown.
``aggregate.json`` is strict JSON: a number that is not defined (the spread of one seed) is ``null``.

``evaluate``'s results.json pools the same way when its checkpoints share one training seed (it then
records that seed): e.g. the same checkpoints read out with ``evaluate --tta d4``, one file per seed.

Files that differ in anything but the seed are refused, naming the field and the files: the data,
taxonomy, split, image size, crop, epochs, batch size and ``--train-args`` that they record, and per
method and backbone the decoding rule, threshold, TTA, EMA, balance and the number of images scored
(:func:`check_same_setting`; a field that only one of two files records, as in older files, is not
compared).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from examples.leukemia.cli import ArgumentParser, exits_cleanly, output_folder


def row_variant(row: dict[str, Any]) -> str | None:
    """A row's ``variant``; only a row written before that field loads the model code (torch and timm,
    ~8 s on a laptop's CPU) to name it with :func:`examples.leukemia.models.row_variant`.

    Examples:
        >>> row_variant({"method": "flat", "variant": "flat"})
        'flat'
    """
    if isinstance(row.get("variant"), str):
        return row["variant"]
    from examples.leukemia.models import row_variant as from_fields

    return from_fields(row)


METRICS = ("fine_leaf_accuracy", "eight_class_accuracy", "hierarchical_f1", "mistake_severity", "accuracy")
LOWER_IS_BETTER = frozenset({"mistake_severity"})
LABELS = {
    "fine_leaf_accuracy": "fine-leaf acc",
    "eight_class_accuracy": "8-class acc",
    "hierarchical_f1": "hier. F1",
    "mistake_severity": "mistake sev.",
    "accuracy": "exact acc",
}


#: recorded at the top of a results.json: the same in every file pooled (compare writes them all)
FILE_FIELDS = (
    "data",
    "data_source",  # older compare files: instead of "data"
    "taxonomy",
    "split",
    "split_seed",
    "split_id",
    "group_duplicates",
    "split_by_group",
    "split_sizes",
    "synthetic",
    "image_size",
    "crop",
    "epochs",
    "batch_size",
    "train_args",
)
#: recorded per row (evaluate: all of them; compare: some, the rest at the top): the same for every
#: seed of one method and backbone
ROW_FIELDS = (
    "data",
    "split",
    "split_seed",
    "group_duplicates",
    "split_by_group",
    "scored_id",  # evaluate: which images, with their targets (a pack made again at the same path differs)
    "taxonomy",
    "image_size",
    "crop",
    "epochs",
    "batch_size",
    "decode",
    "threshold",
    "tta",
    "ema",
    "balance",
    "images scored",
)


def _file_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of :data:`FILE_FIELDS` a results.json records (``split``: ``test`` when not recorded, as
    compare scores the test split; ``train_args`` as the flags it holds, so spacing does not count)."""
    out = {k: data[k] for k in FILE_FIELDS if k in data}
    if "data" in out:
        out.pop("data_source", None)  # the absolute path says it; the text names the path as typed
    for key in ("data", "data_source"):  # the same images from another checkout or folder: by file name
        if isinstance(out.get(key), str):
            out[key] = _by_name(out[key])
    out.setdefault("split", "test")
    if isinstance(out.get("train_args"), str):
        out["train_args"] = shlex.split(out["train_args"])
    return out


def _by_name(text: str) -> str:
    """A data path (``/work/x/.carry/pbc.npz``, or compare's ``"pack .carry/pbc.npz"``) by its last part.

    Examples:
        >>> _by_name("pack /work/main/.carry/pbc128.npz") == _by_name("pack .carry/pbc128.npz")
        True
    """
    kind, _, path = text.partition(" ") if text.startswith(("pack ", "data ")) else ("", "", text)
    return f"{kind} {os.path.basename(path.rstrip('/'))}".strip()


def _row_settings(data: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The fields of :data:`ROW_FIELDS` of one row, from the row, else from its file's top."""
    top = _file_settings(data)
    row = {**row, "data": _by_name(row["data"])} if isinstance(row.get("data"), str) else row
    out = {k: row[k] if k in row else top[k] for k in ROW_FIELDS if k in row or k in top}
    if "group_duplicates" not in out and out.get("split_seed") is not None:
        out["group_duplicates"] = False  # a data folder's split, recorded before the field: drawn without grouping
    if "split_by_group" not in out and out.get("split_seed") is not None:
        out["split_by_group"] = False  # the same: drawn image by image
    if isinstance(row.get("metrics"), dict) and "n" in row["metrics"]:
        out["images scored"] = row["metrics"]["n"]
    return out


def _shown(value: Any) -> str:
    text = repr(shlex.join(value) if isinstance(value, list) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_same_setting(files: list[tuple[str, dict[str, Any]]]) -> None:
    """Refuse to pool results.json files that differ in more than their seed.

    Compared: the top-level :data:`FILE_FIELDS` of every file against the first file that records each,
    and the :data:`ROW_FIELDS` of every (method, backbone) against its first file. A field only one of
    two files records is not compared (older files record fewer). What differs between seeds by nature
    (the seed, times, device, best epoch, checkpoint paths, synthetic images made with the seed) is not
    among them.

    Args:
        files: ``(path, parsed results.json)`` in the order given.

    Raises:
        ValueError: the fields that differ, each with its values and files, and what to do.
    """
    problems: list[str] = []
    first: dict[str, tuple[Any, str]] = {}
    for path, data in files:
        for key, value in _file_settings(data).items():
            if key not in first:
                first[key] = (value, path)
            elif first[key][0] != value:
                problems.append(f"{key}: {_shown(first[key][0])} in {first[key][1]}, {_shown(value)} in {path}")
    differing = {p.partition(":")[0] for p in problems}
    by_run: dict[tuple[Any, Any, str], tuple[Any, str]] = {}
    for path, data in files:
        for row in data["rows"]:
            run = (row_variant(row), row.get("backbone"))
            for key, value in _row_settings(data, row).items():
                if key in differing:  # said once, for the whole file
                    continue
                seen = by_run.setdefault((*run, key), (value, path))
                if seen[1] != path and seen[0] != value:
                    problems.append(
                        f"{key} of {run[0]}:{run[1]}: {_shown(seen[0])} in {seen[1]}, {_shown(value)} in {path}"
                    )
    if problems:
        raise ValueError(
            f"results: expected files that differ only in their seed (same data, taxonomy, split and flags), got "
            f"{len(problems)} difference(s): {'; '.join(dict.fromkeys(problems))}. Pooling them would average "
            "different experiments. Rerun the odd file's compare (or evaluate) with the others' settings and "
            "another --seed, or pool each setting in its own aggregate call."
        )


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_results(path: str | Path, data: dict[str, Any]) -> int:
    """The seed of a parsed results.json, after checking the fields aggregate reads (a hand-edited or
    foreign file failed with a traceback): ``seed`` a whole number, ``rows`` a list of objects, each with a
    ``backbone`` and a ``method`` (or ``variant``) text and ``metrics``, an object of numbers.

    Raises:
        ValueError: the file, the field, what it holds, and what compare writes there.

    Examples:
        >>> check_results("r.json", {"seed": 0, "rows": [{"method": "flat", "backbone": "b", "metrics": {"n": 3}}]})
        0
    """
    redo = "rerun compare (or evaluate) to write it again, or fix the file by hand"
    missing = object()

    def bad(field: str, expected: str, got: Any) -> ValueError:
        shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
        shown = "nothing (the field is missing)" if got is missing else shown
        return ValueError(f"{path}: {field}: expected {expected}, got {shown}; {redo}.")

    seed = data["seed"]
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if not _whole(seed):
        raise bad("seed", "the whole number of the training seed (--seed)", seed)
    rows = data["rows"]
    if not isinstance(rows, list):
        raise bad("rows", "a list of runs, one object each", rows)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad(f"rows[{i}]", "an object (one run)", row)
        for key in ("backbone", *(() if isinstance(row.get("variant"), str) else ("method",))):
            if not isinstance(row.get(key), str) or not row[key]:
                raise bad(f"rows[{i}].{key}", "a name (text)", row.get(key, missing))
        metrics = row.get("metrics")
        if not isinstance(metrics, dict):
            raise bad(f"rows[{i}].metrics", "an object of metric values", metrics if "metrics" in row else missing)
        for key in METRICS:
            value = metrics.get(key)
            if (
                key in metrics
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, (int, float)))
            ):
                raise bad(f"rows[{i}].metrics.{key}", "a number (or null)", value)
    return seed


def load_runs(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One record per (results.json, row): method, backbone, seed, metrics.

    Raises:
        FileNotFoundError / ValueError: a path that is missing or not a ``compare`` results.json,
            two files with the same seed (the pairing would be ambiguous), or files that differ in more
            than their seed (:func:`check_same_setting`).
    """
    records: list[dict[str, Any]] = []
    seen: dict[int, str] = {}
    files: list[tuple[str, dict[str, Any]]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; give the results.json that compare wrote (its --out).")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err.msg}); give a compare results.json.") from None
        if not isinstance(data, dict) or "rows" not in data or "seed" not in data:
            raise ValueError(
                f"{path}: expected a compare results.json with 'rows' and 'seed' (or an evaluate results.json of "
                "checkpoints that share one training seed)."
            )
        seed = check_results(path, data)
        if seed in seen:
            raise ValueError(
                f"{path} and {seen[seed]} both have seed {seed}: pool runs that differ in --seed, one file per seed."
            )
        seen[seed] = str(path)
        files.append((str(path), data))
        keys = [(row_variant(row), row["backbone"]) for row in data["rows"]]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(
                f"{path}: {', '.join(f'{m}:{b}' for m, b in twice)} appear more than once (e.g. two recipes of one "
                "method and backbone); pooling would keep only one of them. Pool one run per method and backbone "
                "per file: evaluate each recipe's checkpoints into its own --out."
            )
        for row in data["rows"]:
            records.append(  # a method with another head or loss is its own group (compare's "variant")
                {
                    "method": row_variant(row),
                    "backbone": row["backbone"],
                    "seed": seed,
                    "metrics": row["metrics"],
                }
            )
    if not records:
        raise ValueError("no runs found in the given files.")
    check_same_setting(files)
    return records


def aggregate(records: list[dict[str, Any]], reference: str = "flat") -> dict[str, Any]:
    """Mean and spread per (method, backbone), and paired differences against ``reference``."""
    groups: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(dict)
    for r in records:
        groups[(r["method"], r["backbone"])][r["seed"]] = r["metrics"]
    summary = []
    for (method, backbone), by_seed in groups.items():
        entry: dict[str, Any] = {"method": method, "backbone": backbone, "seeds": sorted(by_seed)}
        for m in METRICS:
            values = [float(v[m]) for v in by_seed.values() if v.get(m) is not None and not math.isnan(float(v[m]))]
            if values:
                mean, sd = _mean_sd(values)
                entry[m] = {"mean": mean, "sd": sd, "n": len(values)}
        summary.append(entry)
    paired = []
    for (method, backbone), by_seed in groups.items():
        ref = groups.get((reference, backbone))
        if method == reference or ref is None:
            continue
        seeds = sorted(set(by_seed) & set(ref))
        entry = {"method": method, "reference": reference, "backbone": backbone, "seeds": seeds}
        for m in METRICS:
            diffs = [
                float(by_seed[s][m]) - float(ref[s][m])
                for s in seeds
                if by_seed[s].get(m) is not None
                and ref[s].get(m) is not None
                and not math.isnan(float(by_seed[s][m]) - float(ref[s][m]))
            ]
            if diffs:
                mean, sd = _mean_sd(diffs)
                better = [d < 0 if m in LOWER_IS_BETTER else d > 0 for d in diffs]
                entry[m] = {
                    "mean_diff": mean,
                    "se": sd / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan,
                    "wins": sum(better),
                    "n": len(diffs),
                }
        paired.append(entry)
    return {"reference": reference, "summary": summary, "paired": paired}


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.4f}" if math.isnan(sd) else f"{mean:.4f} ± {sd:.4f}"


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float made ``None``: ``null`` in strict JSON (``NaN`` is not JSON).

    Examples:
        >>> strict_json({"sd": float("nan"), "n": [1, 0.5]})
        {'sd': None, 'n': [1, 0.5]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def markdown(result: dict[str, Any]) -> str:
    """The two tables: mean ± sd per run, and the paired differences (the metrics some run has: PBC's 8-class
    accuracy only for the PBC taxonomy, as in compare's and evaluate's tables)."""
    shown = [m for m in METRICS if any(m in e for e in result["summary"])]
    head = "| method | backbone | seeds | " + " | ".join(LABELS[m] for m in shown) + " |"
    lines = [head, "|" + "---|" * (3 + len(shown))]
    for e in result["summary"]:
        cells = [_pm(e[m]["mean"], e[m]["sd"]) if m in e else "—" for m in shown]
        lines.append(f"| {e['method']} | {e['backbone']} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    if result["paired"]:
        lines += [
            "",
            f"Paired by seed, method minus `{result['reference']}` (mean difference ± standard error; "
            "seeds where the method is better / seeds):",
            "",
            "| method | backbone | " + " | ".join(LABELS[m] for m in shown) + " |",
            "|" + "---|" * (2 + len(shown)),
        ]
        for e in result["paired"]:
            cells = []
            for m in shown:
                if m not in e:
                    cells.append("—")
                    continue
                d = e[m]
                se = "" if math.isnan(d["se"]) else f" ± {d['se']:.4f}"
                cells.append(f"{d['mean_diff']:+.4f}{se} ({d['wins']}/{d['n']})")
            lines.append(f"| {e['method']} | {e['backbone']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@exits_cleanly
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m examples.leukemia.aggregate``."""
    p = ArgumentParser(
        prog="python -m examples.leukemia.aggregate",
        description="Pool compare runs over seeds: mean ± sd and paired differences against a reference method.",
    )
    p.add_argument("results", nargs="+", help="results.json files written by examples.leukemia.compare")
    p.add_argument(
        "--reference",
        default=None,
        help="method the others are paired against, as the tables name it (default: flat, when there is one)",
    )
    p.add_argument(
        "--out",
        "--output",
        type=output_folder,
        default=None,
        help="folder for aggregate.json (strict JSON: a standard deviation of one seed is null) and aggregate.md",
    )
    args = p.parse_args(argv)
    records = load_runs(args.results)
    methods = list(dict.fromkeys(r["method"] for r in records))
    if args.reference is not None and args.reference not in methods:
        raise ValueError(
            f"--reference: expected one of the methods in the files, {', '.join(map(repr, methods))}, got "
            f"{args.reference!r}; pass one of them (quoted when it holds spaces), e.g. --reference {methods[0]!r}."
        )
    result = aggregate(records, reference=args.reference or "flat")
    result["inputs"] = list(args.results)
    md = markdown(result)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "aggregate.json").write_text(json.dumps(strict_json(result), indent=1, allow_nan=False) + "\n")
        (out / "aggregate.md").write_text(md)
    return result


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
