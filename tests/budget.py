"""How many examples each property test draws, scaled by one knob.

A test names its usual budget, ``@settings(examples(30), deadline=None)``, rather than a fixed
``max_examples=30``: a fixed number would override every profile, so no run could ask for more.
``HIERCLS_HYPOTHESIS_SCALE`` (a positive number) multiplies every budget; the ``deep`` profile
(``HYPOTHESIS_PROFILE=deep``, registered in ``conftest.py``) sets it to 10 unless given, e.g. for a
nightly run: ``HYPOTHESIS_PROFILE=deep pytest -n 2``.
"""

from __future__ import annotations

import math
import os

from hypothesis import settings

DEEP_SCALE = 10.0


def profile_name() -> str:
    """The hypothesis profile ``conftest.py`` loads: ``ci`` under ``CI``, else ``HYPOTHESIS_PROFILE``, else ``dev``."""
    return "ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev")


def scale() -> float:
    """The multiplier of every budget: ``HIERCLS_HYPOTHESIS_SCALE``, else 10 when the loaded profile is
    ``deep``, else 1."""
    raw = os.environ.get("HIERCLS_HYPOTHESIS_SCALE")
    if raw is None:
        return DEEP_SCALE if profile_name() == "deep" else 1.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"HIERCLS_HYPOTHESIS_SCALE: expected a positive number, got {raw!r}; e.g. 10")
    return value


def examples(n: int) -> settings:
    """Settings drawing ``n`` examples times :func:`scale` (at least 1), on top of the loaded profile."""
    return settings(max_examples=max(1, round(n * scale())))
