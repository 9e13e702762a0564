"""Merge the stages of ``benchmarks/gpu_run.sh`` into one results.json + results.md and print a summary.

    python benchmarks/leukemia_gpu_report.py WORK_DIR OUT_DIR [paper|seeds]

Reads (each optional: a stage that timed out or failed is reported as missing):
``OUT_DIR/pbc_flat_baseline.json`` (the peer baseline), ``WORK_DIR/pbc/results.json``,
``WORK_DIR/all4/results.json`` (examples.leukemia.compare), ``WORK_DIR/pbc_seeds/seed*/results.json`` and
``WORK_DIR/pbc_seeds/aggregate.{json,md}`` and the same under ``WORK_DIR/pbc_seeds_tta`` (the ``JOB=seeds``
job; the latter from ``evaluate --tta d4``), ``WORK_DIR/pbc_side/side*/results.{json,md}`` (its ``SIDE_RUNS``), ``WORK_DIR/gpu_step.json``
(benchmarks/gpu_step.py, which rewrites it after every model: ``"complete": false`` while, or if stopped
while, models remain) and ``WORK_DIR/throughput.json`` (benchmarks/leukemia_throughput.py),
plus ``WORK_DIR/stages.json`` (exit codes and seconds of each stage).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _f(v: Any, d: int = 4) -> str:
    return f"{v:.{d}f}" if isinstance(v, (int, float)) else "—"


def _per_seed(folder: Path, prefix: str = "seed") -> dict[str, Any]:
    """``{"seed<N>": results}`` of ``folder/seed<N>/results.json``, in the order of N (another prefix: the
    same for ``folder/<prefix><N>``)."""
    found = {}
    for path in folder.glob(f"{prefix}*/results.json"):
        data = _load(path)
        if data is not None:
            found[path.parent.name] = data

    def order(name: str) -> tuple[int, str]:
        digits = name.removeprefix(prefix)
        return (int(digits), "") if digits.isdigit() else (1 << 30, name)

    return {name: found[name] for name in sorted(found, key=order)}


def summary_table(merged: dict[str, Any]) -> str:
    """One line per trained model: the numbers BENCHMARKS.md asks for."""
    lines = [
        "| dataset | method | backbone | 8-class | fine-leaf | hF1 | mistake sev. | train s | img/s | img/s after epoch 1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = merged.get("baseline") or {}
    for name, v in base.items():
        if isinstance(v, dict) and "test_acc" in v:
            fine = v.get("classes") != 8  # the tool's --fine mode (its own split); else 8 classes, our split
            label = "peer flat (tool, --fine)" if fine else "peer flat (tool, 8 classes)"
            lines.append(
                f"| pbc | {label} | {name} | {_f(v.get('test_acc_8class'))} | "
                f"{_f(v.get('test_acc')) if fine else '—'} | — | — | {_f(v.get('train_s'), 1)} | {_f(v.get('img_per_s'), 0)} | — |"
            )
    sets = [("pbc", merged.get("pbc")), ("all4", merged.get("all4"))]
    sets += [(f"pbc {name}", res) for name, res in (merged.get("pbc_seeds") or {}).items()]
    sets += [(f"pbc {name} d4 TTA", res) for name, res in (merged.get("pbc_seeds_tta") or {}).items()]
    sets += [(f"pbc {name}", res) for name, res in (merged.get("pbc_side") or {}).items()]
    for ds, res in sets:
        for r in (res or {}).get("rows", []):
            m = r["metrics"]
            variant = r.get("variant") or r["method"]
            lines.append(
                f"| {ds} | {variant} | {r['backbone']} | {_f(m.get('eight_class_accuracy'))} | "
                f"{_f(m.get('fine_leaf_accuracy'))} | {_f(m.get('hierarchical_f1'))} | "
                f"{_f(m.get('mistake_severity'), 3)} | {_f(r.get('train_seconds'), 1)} | "
                f"{_f(r.get('img_per_s'), 0)} | {_f(r.get('img_per_s_after_first_epoch'), 0)} |"
            )
            for rule, o in (r.get("metrics_by_decode") or {}).items():  # compare --also-decode: same model
                lines.append(
                    f"| {ds} | {variant}, read out with {rule} | {r['backbone']} | "
                    f"{_f(o.get('eight_class_accuracy'))} | {_f(o.get('fine_leaf_accuracy'))} | "
                    f"{_f(o.get('hierarchical_f1'))} | {_f(o.get('mistake_severity'), 3)} | — | — | — |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    work, out = Path(argv[0]), Path(argv[1])
    job = argv[2] if len(argv) > 2 else "paper"
    merged: dict[str, Any] = {
        "stages": _load(work / "stages.json"),
        "baseline": _load(out / "pbc_flat_baseline.json"),
        "pbc": _load(work / "pbc" / "results.json"),
        "all4": _load(work / "all4" / "results.json"),
        # gpu_step.py writes this after every model, so a stage stopped part-way leaves the models it finished
        # (with "complete": false); a stage stopped during its first model leaves none
        "gpu_step": _load(work / "gpu_step.json"),
        "throughput": _load(work / "throughput.json"),
        "pbc_seeds": _per_seed(work / "pbc_seeds"),
        "pbc_seeds_aggregate": _load(work / "pbc_seeds" / "aggregate.json"),
        "pbc_seeds_tta": _per_seed(work / "pbc_seeds_tta"),
        "pbc_seeds_tta_aggregate": _load(work / "pbc_seeds_tta" / "aggregate.json"),
        "pbc_side": _per_seed(work / "pbc_side", prefix="side"),
    }
    md = ["# Leukemia example on the lent GPU", ""]
    dev = next(
        (merged[k].get("device") for k in ("pbc", "all4", "throughput") if isinstance(merged.get(k), dict)), None
    )
    md += [f"Device: {dev or 'unknown'}. All numbers below come from one job (`benchmarks/gpu_run.sh`).", ""]
    md += ["## Summary (test split)", "", summary_table(merged)]
    for ds in ("pbc", "all4"):
        path = work / ds / "results.md"
        if path.is_file() or job != "seeds":  # the seeds job runs neither
            md += [path.read_text() if path.is_file() else f"## {ds}\n\n(stage missing: see gpu_run.log)\n", ""]
    for key, title in (
        ("pbc_seeds", "PBC over seeds (examples.leukemia.aggregate)"),
        ("pbc_seeds_tta", "PBC over seeds, the same checkpoints with d4 test-time augmentation (evaluate --tta d4)"),
    ):
        if merged[key] or job == "seeds":
            agg = work / key / "aggregate.md"
            md += [f"## {title}", ""]
            md += [agg.read_text() if agg.is_file() else "(aggregate missing: see gpu_run.log)", ""]
    for name in merged["pbc_side"]:
        path = work / "pbc_side" / name / "results.md"
        md += [path.read_text() if path.is_file() else f"## PBC {name}\n\n(results.md missing)\n", ""]
    tp = merged.get("throughput")
    if isinstance(tp, dict):
        md += [
            "## Feeding the GPU (real packed data vs synthetic input, same model and step)",
            "",
            "| backbone | size | synthetic img/s | real img/s | real / synthetic | host ms per step getting a batch "
            "(synthetic / real) | data path alone, ms per batch | profiled host / device ms per step (synthetic; real) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for size, r in tp.get("results", {}).items():
            prof = r.get("profile") or {}
            cost = "; ".join(
                f"{_f(prof[k].get('host_ms_per_step'), 1)} / {_f(prof[k].get('device_ms_per_step'), 1)}"
                for k in ("synthetic", "real")
                if k in prof
            )
            md.append(
                f"| {tp.get('backbone')} | {size} | {r['synthetic']['img_per_s']} | {r['real']['img_per_s']} | "
                f"{r['real_over_synthetic']} | {_f(r['synthetic'].get('host_data_ms'), 2)} / "
                f"{_f(r['real'].get('host_data_ms'), 2)} | {_f((r.get('data_path_only') or {}).get('ms_per_batch'), 2)} | "
                f"{cost or '—'} |"
            )
            for chunk, c in (r.get("chunks") or {}).items():  # the real input prepared CHUNK batches at a time
                md.append(
                    f"| {tp.get('backbone')} | {size}, chunk {chunk} | {r['synthetic']['img_per_s']} | "
                    f"{c['real']['img_per_s']} | {c['real_over_synthetic']} | "
                    f"{_f(r['synthetic'].get('host_data_ms'), 2)} / {_f(c['real'].get('host_data_ms'), 2)} | "
                    f"{_f((c.get('data_path_only') or {}).get('ms_per_batch'), 2)} | — |"
                )
        md.append("")
    step = merged.get("gpu_step")
    ran = {row.get("name") for row in merged.get("stages") or [] if isinstance(row, dict)}
    if step is not None:
        md += ["## Head overhead (benchmarks/gpu_step.py)", ""]
        if isinstance(step, dict) and step.get("complete") is False:
            md += [
                f"(partial: still running, or stopped before every model was timed; finished: "
                f"{', '.join(step.get('models') or {}) or 'none'}; see the stages table)",
                "",
            ]
        md += ["```json", json.dumps(step, indent=1)[:4000], "```", ""]
    elif "gpu_step" in ran:
        md += [
            "## Head overhead (benchmarks/gpu_step.py)",
            "",
            "(stage missing: no model finished; see gpu_run.log)",
            "",
        ]
    if merged.get("stages"):
        md += ["## Stages", "", "| stage | exit | seconds |", "|---|---|---|"]
        md += [f"| {s['name']} | {s['rc']} | {s['seconds']} |" for s in merged["stages"]]
        md.append("")
    text = "\n".join(md)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(merged, indent=1, default=str) + "\n")
    print(summary_table(merged))
    if isinstance(tp, dict):
        for size, r in tp.get("results", {}).items():
            print(f"throughput {tp.get('backbone')} @{size}px: real/synthetic = {r['real_over_synthetic']}")
            for chunk, c in (r.get("chunks") or {}).items():
                print(
                    f"throughput {tp.get('backbone')} @{size}px, chunk {chunk}: real/synthetic = {c['real_over_synthetic']}"
                )
    return merged


if __name__ == "__main__":
    main()
