"""Shared fixtures: small taxonomies and the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from hiercls import Taxonomy
from tests.budget import profile_name

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# ten times the examples of every property test (tests/budget.py scales the budgets that tests name)
settings.register_profile("deep", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(profile_name())

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HIERCLS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data. Required in CI (CI=true); skipped with a reason elsewhere."""
    if not (SHARED_DATA / "pbc").is_dir():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
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
