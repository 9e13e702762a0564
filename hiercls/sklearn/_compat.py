"""The scikit-learn version the estimators need (checked when :mod:`hiercls.sklearn` is imported)."""

from __future__ import annotations

import re


def _check_sklearn_version(version: str) -> None:
    """scikit-learn 1.6 brought ``validate_data`` and ``__sklearn_tags__``, which the estimators use:
    an older one failed with an ImportError naming a private function."""
    found = re.match(r"(\d+)\.(\d+)", version)  # leading digits only: "1.5rc1" is 1.5, "1.10.dev0" is 1.10
    major, minor = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    if (major, minor) < (1, 6):
        raise ImportError(
            f"hiercls.sklearn needs scikit-learn >= 1.6, found {version}: pip install -U 'scikit-learn>=1.6'."
        )
