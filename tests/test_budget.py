"""tests/budget.py: one knob scales every property test's budget, and a bad value is refused."""

from __future__ import annotations

import pytest

from tests.budget import DEEP_SCALE, examples, profile_name, scale


def test_the_budget_follows_the_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIERCLS_HYPOTHESIS_SCALE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "dev")
    assert scale() == 1.0 and examples(30).max_examples == 30
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "deep")
    assert scale() == DEEP_SCALE and examples(30).max_examples == 300
    monkeypatch.setenv("CI", "true")  # CI loads its own profile whatever HYPOTHESIS_PROFILE says, unscaled
    assert profile_name() == "ci" and scale() == 1.0
    monkeypatch.delenv("CI")
    monkeypatch.setenv("HIERCLS_HYPOTHESIS_SCALE", "0.01")  # an explicit scale wins, and keeps at least 1
    assert examples(30).max_examples == 1
    monkeypatch.setenv("HIERCLS_HYPOTHESIS_SCALE", "2.5")
    assert examples(4).max_examples == 10


@pytest.mark.parametrize("bad", ["0", "-1", "many", "nan", "inf"])
def test_a_bad_scale_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("HIERCLS_HYPOTHESIS_SCALE", bad)
    with pytest.raises(ValueError, match="HIERCLS_HYPOTHESIS_SCALE: expected a positive number"):
        examples(10)
