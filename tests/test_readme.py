"""The README's commands and quick start must stay true."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CI = Path(__file__).resolve().parents[1] / ".ci" / "run"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    bash = _blocks("bash")
    test_cmd = next(b.strip() for b in bash if "pytest" in b)
    install_and_test = test_cmd.split("&& ", 2)[2]  # after creating and activating the venv
    assert install_and_test in CI.read_text(), f"{install_and_test!r} not in .ci/run"


def test_main_job_command_runs_the_leukemia_example() -> None:
    bash = _blocks("bash")
    main = next(b.strip() for b in bash if "examples.leukemia" in b)
    assert main.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e")
    module = main.rsplit("python -m ", 1)[1].split()[0]
    assert (Path(__file__).resolve().parents[1] / (module.replace(".", "/") + ".py")).is_file()


def test_quick_start_runs(capsys) -> None:
    (code,) = _blocks("python")
    assert len([line for line in code.splitlines() if line.strip()]) <= 16
    exec(compile(code, "README quick start", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("[") and "]" in out


def test_ci_stops_on_every_failure() -> None:
    """Under `set -e`, a command on the left of `&&` may fail without stopping the script: every `&&` line of
    .ci/run must end in `|| exit 1` (a lint error once passed CI through `ruff check . && ruff format ...`)."""
    lines = [line.strip() for line in CI.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in lines
    chained = [line for line in lines if "&&" in line]
    assert chained and all(line.endswith("|| exit 1") for line in chained), chained
