"""The GPU job's scripts, run on CPU: the throughput check and the report that merges the job's stages.

They run unattended on a lent GPU with minutes to spare, so a broken option or a report that drops a
stage must show up here, not there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import batches_host_cost  # noqa: E402
import decoding  # noqa: E402
import gpu_step  # noqa: E402
import leukemia_gpu_report as report  # noqa: E402
import leukemia_throughput as throughput  # noqa: E402
import metrics as metrics_bench  # noqa: E402

from tests.test_example_train import copy_pbc_subset  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    from examples.leukemia.pack import pack

    out = tmp_path_factory.mktemp("pack") / "pbc32.npz"
    pack(copy_pbc_subset(shared_data, tmp_path_factory.mktemp("pbc")), out, size=32, workers=1, progress=False)
    return out


def test_throughput_reports_host_data_time_and_a_profile(
    tiny_pack: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tp.json"
    argv = ["--pack", str(tiny_pack), "--backbone", "test_vit", "--batch-size", "4", "--steps", "2"]
    res = throughput.main([*argv, "--warmup", "1", "--device", "cpu", "--profile", "--chunks", "3", "--out", str(out)])
    assert json.loads(out.read_text()) == res
    # stdout is exactly the one JSON object (the per-size progress line goes to stderr)
    assert json.loads(capsys.readouterr().out) == res
    (size, r), *_ = res["results"].items()
    assert size == "32" and r["real_over_synthetic"] > 0
    for kind in ("synthetic", "real"):
        assert r[kind]["img_per_s"] > 0 and r[kind]["host_data_ms"] >= 0
        prof = r["profile"][kind]
        assert prof["steps"] == 6 and prof["host_ms_per_step"] > 0 and prof["device_ms_per_step"] == 0  # CPU
        assert prof["by_kernel"] == []  # no device kernels on CPU
        assert prof["by_host"] and all(
            set(row) == {"name", "calls", "self_host_us", "device_us"} for row in prof["by_host"]
        )
        assert prof["recorded_steps"] == 6  # the 3 warm-up steps (optimizer set-up) stay out of the profile
        hosts = [row["self_host_us"] for row in prof["by_host"]]
        assert hosts == sorted(hosts, reverse=True)
    data = r["data_path_only"]  # the real batches alone, no model
    assert data["steps"] == 2 and data["ms_per_batch"] > 0 and data["img_per_s"] > 0
    # the real input runs the data path (indexing, augmentation); the reused synthetic batch does not
    assert r["real"]["host_data_ms"] > r["synthetic"]["host_data_ms"]
    # the job's report shows both, next to the ratio
    work, report_out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    report_out.mkdir()
    (work / "throughput.json").write_text(json.dumps(res))
    report.main([str(work), str(report_out)])
    row = next(line for line in (report_out / "results.md").read_text().splitlines() if line.startswith("| test_vit |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "32" and cells[5] == f"{r['synthetic']['host_data_ms']:.2f} / {r['real']['host_data_ms']:.2f}"
    assert cells[6] == f"{data['ms_per_batch']:.2f}"
    assert cells[7].count("/") == 2 and "—" not in cells[7]
    # --chunks 3: the real input again, prepared 3 batches at a time, against the same synthetic figure
    (chunk,) = r["chunks"].values()
    assert list(r["chunks"]) == ["3"] and chunk["real"]["img_per_s"] > 0 and chunk["data_path_only"]["steps"] == 2
    assert chunk["real_over_synthetic"] == round(chunk["real"]["img_per_s"] / r["synthetic"]["img_per_s"], 4)
    md = (report_out / "results.md").read_text()
    assert f"| test_vit | 32, chunk 3 | {r['synthetic']['img_per_s']} | {chunk['real']['img_per_s']} |" in md


@pytest.mark.parametrize("bad", ["0", "a", "1,,x", "-2"])
def test_throughput_refuses_bad_chunks(tiny_pack: Path, bad: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        throughput.main(["--pack", str(tiny_pack), "--backbone", "test_vit", "--device", "cpu", "--chunks", bad])
    assert "--chunks: expected whole numbers >= 1" in capsys.readouterr().err


def _compare_result(seed: int, fine: dict[str, float]) -> dict:
    rows = [
        {
            "method": method,
            "backbone": "resnet18",
            "metrics": {
                "fine_leaf_accuracy": acc,
                "eight_class_accuracy": acc + 0.05,
                "hierarchical_f1": acc,
                "mistake_severity": 2.0,
                "accuracy": acc,
            },
            "train_seconds": 20.0,
            "img_per_s": 20000.0,
            "img_per_s_after_first_epoch": 21000.0,
        }
        for method, acc in fine.items()
    ]
    return {"seed": seed, "split_sizes": {"train": 10, "val": 2, "test": 4}, "device": "cpu", "rows": rows}


def test_report_of_the_seeds_job_lists_every_seed_and_the_pooled_table(tmp_path: Path, capsys) -> None:
    from examples.leukemia.aggregate import main as aggregate

    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    for folder in ("pbc_seeds", "pbc_seeds_tta"):  # compare's results, then the same checkpoints with TTA
        files = []
        for seed, fine in ((0, {"flat": 0.90, "hierarchical": 0.91}), (1, {"flat": 0.92, "hierarchical": 0.92})):
            f = work / folder / f"seed{seed}" / "results.json"
            f.parent.mkdir(parents=True)
            f.write_text(json.dumps(_compare_result(seed, fine)))
            files.append(str(f))
        aggregate([*files, "--out", str(work / folder)])
    (work / "stages.json").write_text(json.dumps([{"name": "compare_pbc_seed0", "rc": "0", "seconds": "50"}]))
    capsys.readouterr()
    merged = report.main([str(work), str(out), "seeds"])
    assert set(merged["pbc_seeds"]) == {"seed0", "seed1"} and merged["pbc_seeds_aggregate"]["reference"] == "flat"
    table = capsys.readouterr().out
    assert table.count("| pbc seed0 |") == 2 and table.count("| pbc seed1 |") == 2 and "| 21000 |" in table
    assert table.count("| pbc seed0 d4 TTA |") == 2 and set(merged["pbc_seeds_tta"]) == {"seed0", "seed1"}
    md = (out / "results.md").read_text()
    assert "## PBC over seeds (" in md and "(stage missing" not in md  # the seeds job runs no pbc/all4 stage
    assert "## PBC over seeds, the same checkpoints with d4 test-time augmentation" in md
    assert (work / "pbc_seeds" / "aggregate.md").read_text() in md
    assert json.loads((out / "results.json").read_text())["pbc_seeds"]["seed1"]["seed"] == 1
    # compare --also-decode: the same model read out with another rule is a line of the summary too
    res = _compare_result(2, {"flat": 0.93})
    res["rows"][0]["metrics_by_decode"] = {"crm": dict(res["rows"][0]["metrics"], mistake_severity=1.5)}
    (work / "pbc_seeds" / "seed2").mkdir()
    (work / "pbc_seeds" / "seed2" / "results.json").write_text(json.dumps(res))
    report.main([str(work), str(out), "seeds"])
    assert "| pbc seed2 | flat, read out with crm | resnet18 | 0.9800 | 0.9300 | 0.9300 | 1.500 | — | — | — |" in (
        capsys.readouterr().out
    )


def test_report_of_the_paper_job_says_which_stage_is_missing(tmp_path: Path, capsys) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "pbc").mkdir()
    (work / "pbc" / "results.json").write_text(json.dumps(_compare_result(0, {"flat": 0.9})))
    (work / "pbc" / "results.md").write_text("## PBC\n\ntable\n")
    merged = report.main([str(work), str(out)])
    md = (out / "results.md").read_text()
    assert merged["pbc_seeds"] == {} and "## PBC\n\ntable" in md and "## all4\n\n(stage missing" in md
    assert "| pbc | flat | resnet18 |" in capsys.readouterr().out


def test_report_of_a_seeds_job_that_finished_no_seed_and_seed_order(tmp_path: Path, capsys) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "pbc_seeds").mkdir(parents=True)
    out.mkdir()
    report.main([str(work), str(out), "seeds"])
    md = (out / "results.md").read_text()
    # the sections of this job say what is missing; the paper job's PBC/ALL stages are not listed as missing
    assert md.count("(aggregate missing: see gpu_run.log)") == 2 and "stage missing" not in md
    for seed in (10, 2):  # seed10 after seed2, not before it as text would sort
        f = work / "pbc_seeds" / f"seed{seed}" / "results.json"
        f.parent.mkdir()
        f.write_text(json.dumps(_compare_result(seed, {"flat": 0.9})))
    capsys.readouterr()
    assert list(report.main([str(work), str(out), "seeds"])["pbc_seeds"]) == ["seed2", "seed10"]


SCRIPT = ROOT / "benchmarks" / "gpu_run.sh"


@pytest.fixture(scope="session")
def smoke_packs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The smoke runs' two tiny packs, made once (benchmarks/smoke_packs.sh, ~12 s a time, was run by every
    smoke case); each run copies them."""
    import os
    import subprocess

    folder = tmp_path_factory.mktemp("smoke_packs")
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "smoke_packs.sh"), str(shared_data), str(folder)],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return folder


def _gpu_job(tmp_path: Path, shared_data: Path, *, smoke: bool = True, packs: Path | None = None, **env: str):
    import os
    import subprocess

    out = tmp_path / "out"
    full = {**os.environ, "OUT": str(out), "TMPDIR": str(tmp_path), "HIERCLS_SHARED_DATA": str(shared_data), **env}
    if packs is not None:
        full["SMOKE_PACKS"] = str(packs)
    done = subprocess.run(
        ["bash", str(SCRIPT), *(["--smoke"] if smoke else [])],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done, out


@pytest.mark.parametrize(
    ("env", "ran", "not_ran"),
    [
        ({}, ["baseline", "compare_pbc", "compare_all4", "gpu_step", "throughput"], []),
        # a selection (newline-separated), and compare_pbc without the baseline stage that feeds it; the
        # reporter's sleep (REPORT_EVERY) must not hold the job's end (it once did, by holding the log's pipe)
        (
            {"STAGES": "compare_pbc\nthroughput", "REPORT_EVERY": "600"},
            ["compare_pbc", "throughput"],
            ["baseline", "compare_all4", "gpu_step"],
        ),
        # the seeds job's own selection (the AT_ONCE case below runs its throughput stage)
        (
            {"JOB": "seeds", "SEEDS": "0 1", "EPOCHS": "2", "STAGES": "baseline\nseeds"},
            [
                "baseline",
                "compare_pbc_seed0",
                "tta_seed0",
                "compare_pbc_seed1",
                "aggregate_pbc_seeds_tta",
            ],
            ["compare_pbc", "compare_all4", "throughput"],
        ),
        (
            {
                "JOB": "seeds",
                "SEEDS": "0 1",
                "AT_ONCE": "1",
                "SIDE_RUNS": "per-level:test_resnet,\nflat:test_vit",  # newlines and blanks are allowed
                "SIDE_EPOCHS": "2",
            },
            ["baseline", "compare_pbc_seed0", "compare_pbc_seed1", "side1", "side2", "tta_seed1", "throughput"],
            ["compare_pbc", "compare_all4"],
        ),
    ],
)
def test_the_gpu_job_runs_end_to_end_on_cpu(
    tmp_path: Path, shared_data: Path, smoke_packs: Path, env, ran, not_ran
) -> None:
    """``benchmarks/gpu_run.sh --smoke``: every stage asked for exits 0 and lands in the results; the
    GPU session that runs it for real has minutes, not time to debug."""
    # the first case makes its packs as a GPU session would (no SMOKE_PACKS); the others copy the suite's
    start = time.monotonic()
    done, out = _gpu_job(tmp_path, shared_data, packs=smoke_packs if env else None, **env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if "REPORT_EVERY" in env:  # ~50 s of work: it returned long before the reporter's next report was due
        assert time.monotonic() - start < int(env["REPORT_EVERY"]) / 2
    stages = {s["name"]: s for s in json.loads((out / "results.json").read_text())["stages"]}
    assert all(stages[name]["rc"] == "0" for name in ran), stages
    assert not set(not_ran) & set(stages)
    assert (out / "gpu_run.log").is_file() and (out / "results.md").is_file()
    assert not list(tmp_path.glob("gpu_run.*"))  # the work folder is removed
    if env.get("JOB") == "seeds":  # flat first (the reference), then the two hierarchical heads, each pooled
        merged = json.loads((out / "results.json").read_text())
        assert merged["pbc_seeds"]["seed0"]["epochs"] == int(env.get("EPOCHS", 1))  # EPOCHS reaches every run
        variants = ["flat", "hierarchical", "hierarchical (conditional head)"]
        assert [r["variant"] for r in merged["pbc_seeds"]["seed0"]["rows"]] == variants
        assert sorted(r["variant"] for r in merged["pbc_seeds_tta"]["seed1"]["rows"]) == sorted(variants)
        assert {e["method"] for e in merged["pbc_seeds_tta_aggregate"]["summary"]} == set(variants)
        # smoke limits are 4x the GPU job's (SMOKE_SLOWER): the seed loops once overwrote the factor's variable
        assert "== aggregate_pbc_seeds (timeout 60s" in (out / "gpu_run.log").read_text()
        if env.get("AT_ONCE") == "1":  # side by side: each line of the log says which process wrote it
            log = (out / "gpu_run.log").read_text()
            assert "[seed0] == compare_pbc_seed0" in log and "[seed1] == compare_pbc_seed1" in log
            assert "[baseline] == baseline" in log
            # and they overlap: every process starts before any of them ends
            procs = [("baseline", "baseline"), ("seed0", "compare_pbc_seed0"), ("seed1", "compare_pbc_seed1")]
            procs += [("side1", "side1"), ("side2", "side2")]  # SIDE_RUNS: each in its own process, beside the seeds
            starts = [log.index(f"[{p}] == {s} (timeout") for p, s in procs]
            ends = [log.index(f"[{p}] == {s}: exit") for p, s in procs]
            assert max(starts) < min(ends)
            # merged into the report, at SIDE_EPOCHS (not EPOCHS) epochs
            side = merged["pbc_side"]
            runs = [r["method"] + ":" + r["backbone"] for n in ("side1", "side2") for r in side[n]["rows"]]
            assert runs == ["per-level:test_resnet", "flat:test_vit"]
            assert side["side1"]["epochs"] == side["side2"]["epochs"] == 2 != merged["pbc_seeds"]["seed0"]["epochs"]
            assert "| pbc side1 | per-level | test_resnet |" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"JOB": "all"}, "JOB=all: expected paper or seeds"),
        ({"STAGES": "compare_pbc typo"}, "STAGES: unknown stage 'typo'"),
        ({"PBC_PACK": "no_such_pack.npz", "smoke": False}, "no_such_pack.npz: pack it first"),
        ({"STAGES": " "}, "STAGES: no stage named"),
        ({"STAGES": "compare_pbc\tbogus"}, "STAGES: unknown stage 'bogus'"),
        (
            {"JOB": "seeds", "STAGES": "compare_pbc"},
            "STAGES: unknown stage 'compare_pbc'; expected some of baseline seeds",
        ),
        ({"BUDGET": "9m"}, "BUDGET: expected whole seconds, got '9m'"),
        ({"JOB": "seeds", "SEEDS": "0,1"}, "SEEDS: expected whole numbers separated by spaces"),
        ({"EPOCHS": "0"}, "EPOCHS: expected a whole number >= 1, got '0'"),
        ({"JOB": "seeds", "AT_ONCE": "yes"}, "AT_ONCE: expected 0 or 1, got 'yes'"),
        ({"AT_ONCE": "1"}, "AT_ONCE=1: only the seeds job (JOB=seeds) runs side by side"),
        ({"JOB": "seeds", "SIDE_RUNS": "per-level:resnet18"}, "SIDE_RUNS: only the seeds job with AT_ONCE=1"),
        ({"JOB": "seeds", "AT_ONCE": "1", "SIDE_RUNS": "per-level resnet18"}, "SIDE_RUNS: expected METHOD:BACKBONE"),
        ({"JOB": "seeds", "AT_ONCE": "1", "SIDE_EPOCHS": "x"}, "SIDE_EPOCHS: expected a whole number >= 1, got 'x'"),
    ],
)
def test_the_gpu_job_refuses_a_bad_setting_before_it_starts(tmp_path: Path, shared_data: Path, env, said) -> None:
    """Nothing is created (no output folder, no work folder) and no device time would be spent."""
    done, out = _gpu_job(tmp_path, shared_data, **env)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not out.exists() and not list(tmp_path.glob("gpu_run.*"))


def test_a_gpu_job_killed_mid_way_leaves_nothing_holding_its_output(tmp_path: Path, shared_data: Path) -> None:
    """The background reporter stops once the job is gone. Before, a job that died other than through its
    ``finish`` (killed, or a shell error) left the reporter and its ``tee`` alive, holding the output
    pipe: the caller (here ``subprocess.run``, on the device the ``run`` call) waited until its timeout."""
    import os
    import subprocess

    fake = tmp_path / "python-that-kills-its-job"
    fake.write_text("#!/bin/bash\nkill -KILL $PPID\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path), "PYTHON": str(fake)}
    env |= {"HIERCLS_SHARED_DATA": str(shared_data), "REPORT_EVERY": "1"}
    start = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), "--smoke"], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == -9 and time.monotonic() - start < 10


def test_prepare_carry_makes_what_the_gpu_job_reads(tmp_path: Path, shared_data: Path) -> None:
    """``benchmarks/prepare_carry.sh``: a session starts without .carry; this makes it in one command
    (here from a few real images per class) and refuses a SHARED that is not ../shared."""
    import os
    import shutil
    import subprocess

    shared = tmp_path / "shared"
    copy_pbc_subset(shared_data, shared / "data" / "pbc", per_prefix=2)
    for cls in sorted((shared_data / "all4" / "Original").iterdir()):
        (shared / "data" / "all4" / "Original" / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:3]:
            shutil.copy(f, shared / "data" / "all4" / "Original" / cls.name / f.name)
    shutil.copytree(shared_data.parent / "tools", shared / "tools")
    script = ROOT / "benchmarks" / "prepare_carry.sh"
    carry = tmp_path / "carry"
    env = {**os.environ, "SHARED": str(shared), "CARRY": str(carry), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert sorted(p.name for p in carry.iterdir()) == ["all4_128.npz", "pbc128_c70.npz", "tools"]
    assert (carry / "tools" / "flat_baseline_gpu_data.py").is_file()
    from examples.leukemia.pack import load_pack

    assert load_pack(carry / "pbc128_c70.npz").images.shape[-1] == 128
    bad = subprocess.run(
        ["bash", str(script)],
        cwd=ROOT,
        env={**env, "SHARED": str(tmp_path / "nowhere")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "expected data/pbc, data/all4 and tools/" in bad.stderr
    # relative paths are read from the caller's folder, not the repo's
    again = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env={**env, "SHARED": "shared", "CARRY": "rel"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and (tmp_path / "rel" / "all4_128.npz").is_file(), again.stderr[-2000:]


def test_throughput_batches_restart_each_epoch_and_an_empty_factory_is_refused() -> None:
    """The timed loops draw past the end of an epoch (the real run covers about one) by starting the
    iterator again; a factory that gives nothing is an error, not an endless loop."""
    it = throughput._endless(lambda: iter([1, 2, 3]))
    assert [next(it) for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]
    with pytest.raises(ValueError, match="got an empty pass"):
        next(throughput._endless(lambda: iter([])))


def test_batches_host_cost_counts_fewer_calls_per_batch_with_chunks(capsys: pytest.CaptureFixture) -> None:
    res = batches_host_cost.main(
        ["--sizes", "2", "--batch-sizes", "4", "--chunks", "1,4", "--batches", "8", "--epochs", "1"]
    )
    one, four = res["rows"]
    assert (one["chunk"], four["chunk"]) == (1, 4) and one["ms_per_batch"] > 0 and four["ms_per_batch"] > 0
    # calls are counted over a whole epoch (its shuffle, every preparation, every batch handed out) per batch
    for row in (one, four):
        assert row["batches_per_epoch"] == 8
        assert row["operator_calls_per_batch"] == round(row["operator_calls_per_epoch"] / 8, 2)
    assert one["operator_calls_per_batch"] >= 40  # a preparation makes a few dozen calls
    # a chunk shares its preparation's calls among its batches, but each batch is still handed out (two
    # views): more than a quarter of chunk 1's. The first preparation alone, divided by the chunk, had
    # counted the epoch's shuffle as a preparation's calls and left the handing out out
    assert one["operator_calls_per_batch"] / 4 + 1 < four["operator_calls_per_batch"]
    assert four["operator_calls_per_batch"] < one["operator_calls_per_batch"] / 3
    assert json.loads(capsys.readouterr().out) == res  # the JSON printed is the result


@pytest.mark.parametrize("flag", ["--chunks", "--sizes", "--batch-sizes"])
def test_batches_host_cost_refuses_bad_lists(flag: str) -> None:
    with pytest.raises(SystemExit, match=f"{flag}: expected whole numbers >= 1"):
        batches_host_cost.main([flag, "0,x"])


def test_eval_sync_times_both_variants_and_checks_they_agree(tmp_path: Path) -> None:
    """The evaluation-loop benchmark (prepared for a GPU session) runs on CPU and reports equal metrics."""
    out = tmp_path / "eval_sync.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/eval_sync.py",
            "--batch",
            "8",
            "--batches",
            "2",
            "--rounds",
            "1",
            "--features",
            "8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["same_metrics"] is True
    assert set(report["seconds_per_pass"]) == {"checked", "unchecked"} and report["device"] == "cpu"


def test_losses_benchmark_prints_json_and_counts_temporaries(tmp_path: Path) -> None:
    """--repeats 1 raised StatisticsError, a misspelt --only ended in 'no median for empty data', and the
    memory column missed the temporaries an operation frees inside itself (a logsumexp's, for one)."""
    script = [sys.executable, str(ROOT / "benchmarks" / "losses.py")]
    small = ["--batch", "64", "--repeats", "1", "--warmup", "1", "--weight-targets", "100", "--threads", "1"]
    proc = subprocess.run([*script, *small, "--only", "flat_cross_entropy"], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout)
    flat = out["losses"]["flat_cross_entropy"]
    assert flat["ratio_iqr"][0] == flat["ratio_iqr"][1] == flat["ratio_to_cross_entropy"]
    if out["memory_method"].startswith("VmHWM"):  # Linux: F.cross_entropy's (64, 10000) float32 softmax and
        # gradient are 2.4 MiB each; the profiler's per-operation sums reported less than one of them
        assert out["baseline"]["peak_extra_mib"] >= 4.0
    bad = subprocess.run([*script, *small, "--only", "node-bce"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--only: unknown name(s) ['node-bce']" in bad.stderr


_GPU_STEP_CPU = ["--device", "cpu", "--batch", "4", "--steps", "1", "--warmup", "1", "--rounds", "1"]


def test_gpu_step_prints_one_json_object_and_writes_it(tmp_path: Path, monkeypatch, capsys) -> None:
    """stdout is the JSON alone (a progress line per model used to come first: ``test_vit {...}``)."""
    monkeypatch.setenv("OUT", str(tmp_path))
    res = gpu_step.main([*_GPU_STEP_CPU, "--model", "test_vit", "--variants", "flat9", "paper"])
    assert json.loads(capsys.readouterr().out) == res
    assert res["complete"] is True and set(res["models"]["test_vit"]["variants"]) == {"flat9", "paper"}
    assert json.loads((tmp_path / "gpu_step.json").read_text()) == res


def test_a_gpu_step_stopped_mid_way_keeps_the_models_it_finished(tmp_path: Path, monkeypatch, capsys) -> None:
    """gpu_run.sh gives the stage a timeout: the file is written after every model, so a stage stopped during
    the second model still reports the first (it used to be written at the end only), and the report says
    the result is partial."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    monkeypatch.setenv("OUT", str(work))
    real = gpu_step.bench_model

    def stopped_after_the_first(name, args, device):
        if name != "test_vit":
            raise KeyboardInterrupt  # as a timeout's signal would stop it (not an error recorded per model)
        return real(name, args, device)

    monkeypatch.setattr(gpu_step, "bench_model", stopped_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        gpu_step.main([*_GPU_STEP_CPU, "--model", "test_vit", "test_resnet", "--variants", "flat9", "paper"])
    kept = json.loads((work / "gpu_step.json").read_text())
    assert kept["complete"] is False and list(kept["models"]) == ["test_vit"]
    assert "paper/flat9" in kept["models"]["test_vit"]["ratio_img_per_s"]
    assert not list(work.glob("*.tmp"))  # written whole, through a rename
    (work / "stages.json").write_text(json.dumps([{"name": "gpu_step", "rc": "124", "seconds": "60"}]))
    merged = report.main([str(work), str(out)])
    assert merged["gpu_step"] == kept
    md = (out / "results.md").read_text()
    assert "## Head overhead" in md and "(partial: still running, or stopped before every model" in md
    assert "finished: test_vit;" in md
    # a stage stopped during its first model leaves no file: the report says so
    (work / "gpu_step.json").unlink()
    report.main([str(work), str(out)])
    assert "(stage missing: no model finished" in (out / "results.md").read_text()


def test_profile_counts_host_steps_only_and_syncs_at_each_step(monkeypatch) -> None:
    """On a GPU each profiler step shows twice, on the host and as a device annotation: recorded_steps read
    2x the steps. And the step hook syncs the device before the profiler's step, so a step's kernels stay
    in its own window (warm-up kernels used to leak into the recorded steps)."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(key, device_type, count, **times):
        base = {"self_cpu_time_total": 0.0, "device_time_total": 0.0, "self_device_time_total": 0.0}
        return SimpleNamespace(key=key, device_type=device_type, count=count, **{**base, **times})

    events = [
        event("ProfilerStep*", DeviceType.CPU, 6, self_cpu_time_total=600.0, is_user_annotation=False),
        event("ProfilerStep*", DeviceType.CUDA, 6, self_device_time_total=9e5, is_user_annotation=True),
        event("aten::mm", DeviceType.CPU, 12, self_cpu_time_total=1200.0, device_time_total=3000.0),
        event("gemm_kernel", DeviceType.CUDA, 12, self_device_time_total=3000.0, is_user_annotation=False),
        # the host's wait in the boundary syncs the profile adds: not a training step's host time
        event("cudaDeviceSynchronize", DeviceType.CPU, 6, self_cpu_time_total=6e4, is_user_annotation=False),
    ]
    out = throughput.profile_readout(events, 6)
    assert out["recorded_steps"] == 6
    assert out["device_ms_per_step"] == 0.5 and out["host_ms_per_step"] == 0.3  # annotations are not kernels
    assert out["boundary_sync_ms_per_step"] == 10.0
    assert [r["name"] for r in out["by_kernel"]] == ["gemm_kernel"]
    assert "cudaDeviceSynchronize" not in [r["name"] for r in out["by_host"]]
    calls = []
    monkeypatch.setattr(throughput, "_sync", lambda device: calls.append("sync"))
    hook = throughput.synced_step(lambda: calls.append("step"), throughput.torch.device("cpu"))
    hook()
    hook()
    assert calls == ["sync", "step", "sync", "step"]


def test_decoding_runs_on_one_sample_and_repeats_the_operating_curve(monkeypatch, capsys) -> None:
    """``--samples 1`` raised 'some elements of the input tensor and the written-to tensor refer to a single
    memory location' while summing the marginals up the tree; and ``operating_curve`` ran once whatever
    ``--repeats`` said, while the docstring promised medians over the repeats."""
    from hiercls.synthetic import layered_taxonomy

    probs = decoding.coherent_marginals(layered_taxonomy(), 1)
    assert probs[0, 0].item() == pytest.approx(1.0, abs=1e-5)  # the root holds the whole mass
    calls = []
    real = decoding.operating_curve
    monkeypatch.setattr(decoding, "operating_curve", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = decoding.main(["--samples", "1", "--repeats", "2"])
    assert json.loads(capsys.readouterr().out) == res
    assert len(calls) == 2 and res["repeats"] == 2 and "operating_curve(1 samples)" in res["seconds"]


def test_decoding_depth_sweep_times_every_rule_at_each_depth(capsys) -> None:
    """``--depths``: the run behind the decoding page's depth figures (it quoted two unbacked numbers)."""
    res = decoding.main(["--depths", "3,12", "--nodes", "300", "--samples", "4", "--repeats", "1"])
    assert json.loads(capsys.readouterr().out) == res
    assert [r["max_depth"] for r in res["rows"]] == [3, 12]
    assert all(abs(r["num_nodes"] - 301) < 20 for r in res["rows"])  # about --nodes, plus the root
    assert all(set(r["seconds"]) == {"argmax_leaf", "top_down", "threshold", "crm", "hf_optimal"} for r in res["rows"])
    with pytest.raises(SystemExit, match="--depths: expected whole numbers >= 2"):
        decoding.main(["--depths", "5.5"])


def _metrics_argv(python: str, rounds: int = 1) -> list[str]:
    return ["--samples", "2000", "--repeats", "1", "--hiclass-python", python, "--hiclass-rounds", str(rounds)]


def test_metrics_compares_precision_recall_and_f1_with_hiclass(tmp_path: Path, capsys) -> None:
    """All three of HiClass' values are compared (only F1 was, while the page claimed all three), and the
    two sides alternate: hiercls is timed before and after each HiClass call. HiClass is faked here."""
    fake = tmp_path / "fake-hiclass-python"
    fake.write_text(
        '#!/bin/sh\necho \'{"version": "fake", "f1": 0.5, "precision": 0.25, "recall": 0.75, "seconds": 2.0}\'\n'
    )
    fake.chmod(0o755)
    res = metrics_bench.main(_metrics_argv(str(fake), rounds=2))
    assert json.loads(capsys.readouterr().out) == res
    h, v = res["hiclass"], res["values"]
    assert h["abs_difference"] == pytest.approx(
        {
            "precision": abs(v["hierarchical_precision"] - 0.25),
            "recall": abs(v["hierarchical_recall"] - 0.75),
            "f1": abs(v["hierarchical_f1"] - 0.5),
        }
    )
    assert h["values_equal"] is False and h["rounds"] == 2 and h["seconds_each"] == [2.0, 2.0]
    assert len(h["hiercls_seconds_each"]) == 3  # before, between and after the two HiClass calls
    assert h["speedup"] == pytest.approx(2.0 / h["hiercls_seconds"], rel=0.1)  # seconds rounded to 10 µs


def test_metrics_values_equal_hiclass_when_it_is_installed(capsys) -> None:
    python = metrics_bench.find_hiclass_python(None)
    if python is None:
        pytest.skip("HiClass not found (set HICLASS_PYTHON to a python with hiclass==5.0.8)")
    h = metrics_bench.main(_metrics_argv(python))["hiclass"]
    assert "skipped" not in h, h
    assert h["values_equal"] is True and set(h["abs_difference"]) == {"precision", "recall", "f1"}


def test_metrics_equal_the_recorded_hiclass_values_without_hiclass() -> None:
    """HiClass is rarely installed, so the live comparison above skips (helper-120: the only check of the
    metrics against an outside implementation never ran in CI). The recorded run holds HiClass 5.0.8's
    micro P/R/F1 on the benchmark's seeded inputs (1M samples, iNat21-shaped tree): ours must still give
    them, to the last digit, whenever the suite runs."""
    from hiercls import metrics as M
    from hiercls.synthetic import layered_taxonomy

    record = json.loads((ROOT / "docs" / "assets" / "benchmarks" / "metrics_cpu_2026-11-27_s11.json").read_text())
    theirs = record["hiclass"]
    assert theirs["version"] == "v5.0.8" and theirs["samples"] == record["samples"] == 1_000_000
    tax = layered_taxonomy()
    assert {k: getattr(tax, k) for k in ("num_nodes", "num_leaves", "max_depth")} == record["taxonomy"]
    y_true, y_pred = metrics_bench.make_inputs(tax, record["samples"], seed=0)
    ours = M.hierarchical_precision_recall_fscore(y_true, y_pred, tax)
    assert ours == pytest.approx((theirs["precision"], theirs["recall"], theirs["f1"]), rel=1e-12, abs=0)


QUEUE_SCRIPT = ROOT / "benchmarks" / "gpu_queue.sh"


def _queue(tmp_path: Path, shared_data: Path, *, smoke: bool = True, **env: str) -> subprocess.CompletedProcess:
    import os

    full = {**os.environ, "OUT": str(tmp_path / "out"), "QUEUE": str(tmp_path / "queue"), "TMPDIR": str(tmp_path)}
    full |= {"HIERCLS_SHARED_DATA": str(shared_data), **env}
    return subprocess.run(
        ["bash", str(QUEUE_SCRIPT), *(["--smoke"] if smoke else [])],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_queue_resumes_a_run_cut_in_one_call_in_the_next(tmp_path: Path, shared_data: Path) -> None:
    """``benchmarks/gpu_queue.sh --smoke`` twice, as on a warm GPU machine: the first call's per-level run is
    cut after one epoch (a stand-in for the call's time limit: train stops as an interruption would, and
    the python in front of it exits 124 like ``timeout``); the second call resumes it from its checkpoint,
    keeps what the first finished, and reads every run out with both rules."""
    import os

    cut = tmp_path / "cut-once"
    python = tmp_path / "python-that-cuts-one-run-once"
    python.write_text(
        "#!/bin/bash\n"
        f'if [[ "$*" == *examples.leukemia.train*per-level* && ! -e {cut} ]]; then\n'
        f'  touch {cut}; {sys.executable} "$@" --stop-after 1; exit 124\n'
        "fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    env = {"PYTHON": str(python), "LANE_A": "pbc:per-level:test_resnet", "LANE_B": "baseline all4:flat:test_resnet"}
    env |= {"EPOCHS": "2", "DEADLINE": "500"}

    first = _queue(tmp_path, shared_data, **env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    log = (tmp_path / "out" / "queue.log").read_text()
    assert "pbc:per-level:test_resnet: train exit 124, 1 epochs logged" in log
    assert "pbc-per-level-test_resnet: resumable (checkpoint after 1 epochs)" in log
    state = json.loads((tmp_path / "out" / "queue.json").read_text())
    assert not state["pbc-per-level-test_resnet"]["done"] and "eval_auto" not in state["pbc-per-level-test_resnet"]
    assert state["baseline"]["done"] and state["all4-flat-test_resnet"]["done"]
    assert state["baseline"]["pbc_flat_baseline.json"]["epochs"] == 1

    # a readout cut mid-write in an earlier call (no done marker, half a JSON) is done again, not kept
    cut_readout = tmp_path / "queue" / "all4-flat-test_resnet" / "eval_auto"
    (cut_readout / "done").unlink()
    (cut_readout / "results.json").write_text('{"split": "test", "rows": [')

    second = _queue(tmp_path, shared_data, **env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    log = (tmp_path / "out" / "queue.log").read_text()
    assert "pbc:per-level:test_resnet: resume" in log and "train exit 0, 2 epochs logged" in log
    assert "baseline: done in an earlier call" in log
    assert "all4:flat:test_resnet: train" not in log  # finished in the first call: not trained again
    assert "all4:flat:test_resnet: auto readout exit 0" in log
    assert "all4:flat:test_resnet: argmax_leaf readout" not in log
    state = json.loads((tmp_path / "out" / "queue.json").read_text())
    run = state["pbc-per-level-test_resnet"]
    assert run["done"] and run["epochs_logged"] == 2
    header = run["log_csv"][0].split(",")
    assert [line.split(",")[header.index("first_in_process")] for line in run["log_csv"][1:]] == ["True", "True"]
    seconds = sum(float(line.split(",")[header.index("train_seconds")]) for line in run["log_csv"][1:])
    assert run["summary.json"]["train_seconds"] == pytest.approx(seconds, abs=1e-4)  # both processes' epochs
    for name, rule in (("pbc-per-level-test_resnet", "top_down"), ("all4-flat-test_resnet", "argmax_leaf")):
        assert state[name]["eval_auto"]["rows"][0]["decode"] == rule
        assert state[name]["eval_argmax_leaf"]["rows"][0]["decode"] == "argmax_leaf"
        assert state[name]["eval_auto"]["rows"][0]["split"] == "test"
    assert "smoke_carry" not in state
    assert (tmp_path / "out" / "queue.tar.gz").is_file()
    assert not os.path.exists(tmp_path / "out" / "smoke_carry")

    # another schedule with the same QUEUE: the finished runs are refused by name, not kept as if done
    third = _queue(tmp_path, shared_data, **{**env, "EPOCHS": "3"})
    assert third.returncode == 1
    assert "pbc:per-level:test_resnet: " + str(tmp_path / "queue" / "pbc-per-level-test_resnet") in third.stdout
    assert "holds a run started with other settings (pack=pbc128.npz epochs=2" in third.stdout
    assert "train exit" not in third.stdout and "failed in this call:" in third.stdout


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"LANE_A": "pbc:per-level"}, "LANE_A/LANE_B: expected items DATA:METHOD:BACKBONE"),
        ({"LANE_B": "baseline cifar:flat:resnet18"}, "got 'cifar:flat:resnet18'"),
        ({"DEADLINE": "9m"}, "DEADLINE: expected whole seconds"),
        ({"EPOCHS": "0"}, "EPOCHS: expected a whole number >= 1, got '0'"),
        ({"EXTRA_DECODES": "crm greedy"}, "EXTRA_DECODES: expected rules among"),
        ({"LANE_A": "baseline", "LANE_B": "pbc:flat:x baseline"}, "'baseline' is named twice"),
        ({"PBC_PACK": "no_such_pack.npz", "smoke": False}, "no_such_pack.npz: make it first"),
    ],
)
def test_the_queue_refuses_a_bad_setting_before_it_starts(tmp_path: Path, shared_data: Path, env, said) -> None:
    """Nothing is created (no queue, no output folder) and no device time would be spent."""
    env = dict(env)
    smoke = env.pop("smoke", True)
    done = _queue(tmp_path, shared_data, smoke=smoke, **env)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "queue").exists()
