"""Shared fixtures: small taxonomies and the real data in ../shared/data."""

from __future__ import annotations

import importlib
import os
from pathlib import Path


def _threads_per_worker() -> int | None:
    """Cores / workers under ``pytest -n N`` (N > 1), else None (torch's own choice).

    torch and its BLAS start one thread per core in every worker: on 2 cores with ``-n 2`` that is 4
    threads fighting for 2, and the example and benchmark-script tests took about 40% longer
    (tests/test_example_train.py + test_example_eval.py: 97 s, 59 s with one thread a worker).
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 2:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


# before torch is imported, and inherited by the scripts that tests start as subprocesses; a value the
# caller set wins
if (_THREADS := _threads_per_worker()) is not None:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(_THREADS))

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from hiercls import Taxonomy  # noqa: E402
from tests.budget import profile_name  # noqa: E402

if _THREADS is not None and os.environ["OMP_NUM_THREADS"].isdigit():  # in case torch came in first
    torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# ten times the examples of every property test (tests/budget.py scales the budgets that tests name)
settings.register_profile("deep", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(profile_name())

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HIERCLS_SHARED_DATA", REPO.parent / "shared" / "data"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str):
    """``pytest.importorskip(module)``, but a failure in CI (CI=true), where the dev extra installs it: a
    test skipped for a missing package there would pass unseen."""
    if _in_ci():
        try:
            return importlib.import_module(module)
        except ImportError as err:
            pytest.fail(f"CI=true but {module!r} cannot be imported ({err}); it is in the dev extra.")
    return pytest.importorskip(module)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data. Required in CI (CI=true); skipped with a reason elsewhere."""
    if not (SHARED_DATA / "pbc").is_dir():
        if _in_ci():
            pytest.fail(f"CI=true but the real data is missing at {SHARED_DATA} (set HIERCLS_SHARED_DATA).")
        pytest.skip(f"real data not found at {SHARED_DATA}; set HIERCLS_SHARED_DATA to run this test")
    return SHARED_DATA


@pytest.fixture
def paper_tax() -> Taxonomy:
    """The clinical taxonomy of Hamdi et al. (AMAI 2023): ragged, leaves at depths 1 to 4."""
    return Taxonomy.from_dict(
        {
            "root": {
                "Normal": None,
                "Reactive": None,
                "Leukemia": {"Acute": {"ALL": None, "AML": ["APL"]}, "Chronic": ["CLL", "CML"]},
            }
        }
    )
