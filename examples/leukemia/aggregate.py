"""Pool several ``compare`` runs that differ only in their seed: mean, spread and paired differences.

One seed cannot say whether a 0.3-point gap between two methods is real. Run ``compare`` once per
seed (same data, same split, same flags), then::

    python -m examples.leukemia.aggregate results/seed0/results.json results/seed1/results.json ...

prints (and with ``--out`` writes) a markdown table of mean ± sample standard deviation per
(method, backbone) and metric, and the paired difference of every method against ``--reference``
(default ``flat``) on the same backbone, seed by seed: the mean difference, its standard error and
how many seeds it wins. Runs are paired by seed, so a method missing for a seed is left out of that
seed's pair, and the count of pairs is shown.

``evaluate``'s results.json pools the same way when its checkpoints share one training seed (it then
records that seed): e.g. the same checkpoints read out with ``evaluate --tta d4``, one file per seed.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from examples.leukemia.cli import ArgumentParser, exits_cleanly
from examples.leukemia.models import row_variant

METRICS = ("fine_leaf_accuracy", "eight_class_accuracy", "hierarchical_f1", "mistake_severity", "accuracy")
LOWER_IS_BETTER = frozenset({"mistake_severity"})
LABELS = {
    "fine_leaf_accuracy": "fine-leaf acc",
    "eight_class_accuracy": "8-class acc",
    "hierarchical_f1": "hier. F1",
    "mistake_severity": "mistake sev.",
    "accuracy": "exact acc",
}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def load_runs(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One record per (results.json, row): method, backbone, seed, metrics.

    Raises:
        FileNotFoundError / ValueError: a path that is missing or not a ``compare`` results.json,
            or two files with the same seed (the pairing would be ambiguous).
    """
    records: list[dict[str, Any]] = []
    seen: dict[int, str] = {}
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
        seed = int(data["seed"])
        if seed in seen:
            raise ValueError(
                f"{path} and {seen[seed]} both have seed {seed}: pool runs that differ in --seed, one file per seed."
            )
        seen[seed] = str(path)
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
            values = [float(v[m]) for v in by_seed.values() if m in v and not math.isnan(float(v[m]))]
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
                if m in by_seed[s] and m in ref[s] and not math.isnan(float(by_seed[s][m]) - float(ref[s][m]))
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


def markdown(result: dict[str, Any]) -> str:
    """The two tables: mean ± sd per run, and the paired differences."""
    head = "| method | backbone | seeds | " + " | ".join(LABELS[m] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for e in result["summary"]:
        cells = [_pm(e[m]["mean"], e[m]["sd"]) if m in e else "—" for m in METRICS]
        lines.append(f"| {e['method']} | {e['backbone']} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    if result["paired"]:
        lines += [
            "",
            f"Paired by seed, method minus `{result['reference']}` (mean difference ± standard error; "
            "seeds where the method is better / seeds):",
            "",
            "| method | backbone | " + " | ".join(LABELS[m] for m in METRICS) + " |",
            "|" + "---|" * (2 + len(METRICS)),
        ]
        for e in result["paired"]:
            cells = []
            for m in METRICS:
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
    p.add_argument("--reference", default="flat", help="method the others are paired against")
    p.add_argument("--out", default=None, help="folder for aggregate.json and aggregate.md")
    args = p.parse_args(argv)
    result = aggregate(load_runs(args.results), reference=args.reference)
    result["inputs"] = list(args.results)
    md = markdown(result)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "aggregate.json").write_text(json.dumps(result, indent=1))
        (out / "aggregate.md").write_text(md)
    return result


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
