"""conformal_threshold: against a sample-by-sample oracle, its defining counts, and its guarantees by simulation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiercls import Taxonomy
from hiercls.decoding import _allowed_wrong, _records, conformal_threshold, decode
from hiercls.synthetic import layered_taxonomy
from tests import oracles_decoding as oracle
from tests.budget import examples
from tests.strategies import taxonomies

seeds = st.integers(0, 2**32 - 1)
errors = st.sampled_from([0.05, 0.1, 0.2, 0.29, 0.5, 0.9])


def _calibration(tax: Taxonomy, seed: int, n: int, step: float = 0.01) -> tuple[np.ndarray, list[int]]:
    """Marginals rounded to ``step``: ties between nodes (quarters: between levels too; helper-122's tie
    of a wrong shallow node with a right deeper one has its own test below)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    probs = np.concatenate(
        [oracle.random_marginals(tax, rng, half, leaves_only=True), oracle.random_marginals(tax, rng, n - half)]
    )
    return np.round(probs / step) * step, rng.integers(0, tax.num_nodes, n).tolist()


def _wrong(probs, target: list[int], tax: Taxonomy, tau: float) -> int:
    preds = decode(probs, tax, "threshold", threshold=tau)
    return sum(tax.nodes[p] not in tax.ancestors(t, include_self=True) for p, t in zip(preds.tolist(), target))


@settings(examples(25))
@given(
    tax=taxonomies(max_nodes=12),
    seed=seeds,
    n=st.integers(1, 40),
    error=errors,
    confidence=st.sampled_from([None, None, 0.5, 0.9]),
    step=st.sampled_from([0.01, 0.25]),
)
def test_matches_the_sample_by_sample_oracle(
    tax: Taxonomy, seed: int, n: int, error: float, confidence, step: float
) -> None:
    probs, target = _calibration(tax, seed, n, step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # too few samples: inf, checked below
        got = conformal_threshold(probs, target, tax, error=error, confidence=confidence)
    assert got == oracle.conformal_threshold(probs, target, tax, error, confidence)


@settings(examples(25))
@given(tax=taxonomies(max_nodes=12), seed=seeds, n=st.integers(10, 60), error=st.sampled_from([0.1, 0.2, 0.5]))
def test_at_most_k_minus_1_calibration_answers_wrong_at_and_above_it(
    tax: Taxonomy, seed: int, n: int, error: float
) -> None:
    """Through decode itself: at the threshold and at every higher one, at most k - 1 calibration answers are
    wrong (the rule's error need not fall as the threshold rises, hence "every")."""
    probs, target = _calibration(tax, seed, n)
    k = math.floor(round(error * (n + 1), 9))
    tau = conformal_threshold(probs, target, tax, error=error)
    above = [tau] + [v for v in np.unique(probs).tolist() if v >= tau]
    assert max(_wrong(probs, target, tax, t) for t in above) <= k - 1


def test_float32_marginals_decode_as_calibrated() -> None:
    """The threshold is just above a float32 score: decoding the float32 marginals must not let that
    marginal qualify again (decode compares exactly in the marginals' dtype)."""
    tax = layered_taxonomy([3, 9], seed=0)
    rng = np.random.default_rng(1)
    probs = torch.as_tensor(oracle.random_marginals(tax, rng, 200), dtype=torch.float32)
    target = rng.integers(0, tax.num_nodes, 200).tolist()
    tau = conformal_threshold(probs, target, tax, error=0.2)
    assert _wrong(probs, target, tax, tau) <= math.floor(0.2 * 201) - 1


def _scores_pool(seed: int, size: int) -> np.ndarray:
    """Scores of a miscalibrated model's answers on many samples: any model, any marginals, same guarantee."""
    tax = layered_taxonomy([3, 8, 20], seed=seed)
    rng = np.random.default_rng(seed)
    probs = oracle.random_marginals(tax, rng, size)
    target = rng.integers(0, tax.num_nodes, size)
    target = np.where(rng.random(size) < 0.6, tax.leaf_index[rng.integers(0, tax.num_leaves, size)], target)
    scores = np.full(size, -np.inf)
    for sample, thr, _nodes, pairs in _records(torch.as_tensor(probs), target, tax):
        wrong = pairs.inter != pairs.size_pred
        for i, v in zip(sample[wrong], thr[wrong]):
            scores[i] = max(scores[i], v)
    return scores


@pytest.mark.parametrize(("n", "error"), [(19, 0.1), (50, 0.1), (99, 0.05), (200, 0.2)])
def test_marginal_guarantee_by_simulation(n: int, error: float) -> None:
    """Draw calibration sets from a fixed population, choose the threshold, measure its error rate on the whole
    population: on average it is at most error, and no more than 1 / (n + 1) below it (not needlessly cautious)."""
    pool = _scores_pool(0, 4000)
    rng = np.random.default_rng(n)
    k = _allowed_wrong(n, error, None)
    assert k == math.floor(round(error * (n + 1), 9))
    sorted_pool = np.sort(pool)
    rates = []
    for _ in range(3000):
        cal = rng.choice(pool, n, replace=True)
        kth = np.partition(cal, n - k)[n - k]
        tau = 0.0 if kth < 0 else np.nextafter(kth, np.inf)
        rates.append(1.0 - np.searchsorted(sorted_pool, tau, side="left") / len(pool))  # P(score >= tau)
    mean, se = float(np.mean(rates)), float(np.std(rates) / np.sqrt(len(rates)))
    assert mean <= error + 3 * se
    assert mean >= error - 1.0 / (n + 1) - 3 * se - 0.01  # ties in the pool make it a little more cautious


def test_allowed_wrong_keeps_an_exact_binomial_tie() -> None:
    """helper-120: with n=11, error=0.5, P(Binomial <= 1) = 12/2048 exactly; at confidence 1 - 12/2048 the
    bound holds with equality, so k = 2. The float sum lands a hair above it: without the slack k was 1,
    and no test said so."""
    assert _allowed_wrong(11, 0.5, 1 - 12 / 2048) == 2
    assert _allowed_wrong(11, 0.5, 1 - 12 / 2048 + 1e-6) == 1  # just past the tie: one fewer
    assert _allowed_wrong(11, 0.5, 1 - 1 / 2048) == 1  # P(Binomial <= 0) = 1/2048, exactly on the bound


@pytest.mark.parametrize(("n", "error", "confidence"), [(100, 0.1, 0.9), (300, 0.05, 0.8)])
def test_pac_guarantee_by_simulation(n: int, error: float, confidence: float) -> None:
    """With confidence, the share of calibration sets whose threshold errs more than `error` is at most
    1 - confidence (and k is the binomial sum's, term by term)."""
    k = _allowed_wrong(n, error, confidence)
    binom = [math.comb(n, j) * error**j * (1 - error) ** (n - j) for j in range(n + 1)]
    assert sum(binom[:k]) <= 1 - confidence < sum(binom[: k + 1])
    pool = _scores_pool(1, 4000)
    sorted_pool = np.sort(pool)
    rng = np.random.default_rng(n)
    failures = []
    for _ in range(2000):
        cal = rng.choice(pool, n, replace=True)
        kth = np.partition(cal, n - k)[n - k]
        tau = 0.0 if kth < 0 else np.nextafter(kth, np.inf)
        failures.append(1.0 - np.searchsorted(sorted_pool, tau, side="left") / len(pool) > error)
    share = float(np.mean(failures))
    assert share <= (1 - confidence) + 3 * math.sqrt(confidence * (1 - confidence) / 2000)


def test_too_few_samples_warn_and_answer_the_root() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = np.array([[1.0, 0.9, 0.1, 0.6, 0.3]] * 8)
    with pytest.warns(UserWarning, match=r"8 calibration samples are too few for error=0\.1: at least 9 are needed"):
        assert conformal_threshold(probs, ["a1"] * 8, tax, error=0.1) == math.inf
    with pytest.warns(UserWarning, match=r"at confidence=0\.9: about 22 or more"):
        assert conformal_threshold(np.repeat(probs[:1], 21, 0), ["a1"] * 21, tax, error=0.1, confidence=0.9) == (
            math.inf
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert conformal_threshold(np.repeat(probs[:1], 22, 0), ["a1"] * 22, tax, error=0.1, confidence=0.9) == 0.0


def test_errors_name_the_argument() -> None:
    tax = Taxonomy.from_paths(["r/a/a1", "r/a/a2", "r/b"])
    probs = np.array([[1.0, 0.9, 0.1, 0.6, 0.3]] * 20)
    target = ["a1"] * 20
    for bad in (0, 1, 1.5, -0.1, math.nan, True, "0.1", None):
        with pytest.raises(ValueError, match=r"error: expected a number strictly between 0 and 1 \(e\.g\. 0\.05\)"):
            conformal_threshold(probs, target, tax, error=bad)
    for bad in (0.0, 1.0, 95, True):
        with pytest.raises(ValueError, match=r"confidence: expected a number strictly between 0 and 1 \(e\.g\. 0\.9\)"):
            conformal_threshold(probs, target, tax, error=0.1, confidence=bad)
    with pytest.raises(ValueError, match="same number of samples, got 20 and 19"):
        conformal_threshold(probs, target[:19], tax, error=0.1)
    with pytest.raises(ValueError, match="look like logits"):
        conformal_threshold(probs * 5, target, tax, error=0.1)
    with pytest.raises(ValueError, match="is empty"):
        conformal_threshold(probs[:0], [], tax, error=0.1)
    with pytest.raises(TypeError, match="positional argument"):
        conformal_threshold(probs, target, tax, 0.1)  # error is keyword-only: a positional 0.1 is ambiguous


def test_a_shallow_node_tied_with_a_deeper_one_is_never_counted_as_the_answer() -> None:
    """helper-122: with a wrong shallow node ('a', 0.5) tied with the right deeper one ('b1', 0.5), the rule
    answers the root above 0.5 and b1 at or below it, never wrong; the score counted 'a' as an answer at
    0.5 and the threshold came out 0.5 instead of 0. With saturated sigmoid marginals (1.0 at several
    depths) the threshold went above 1: every answer the root."""
    tax = Taxonomy.from_paths(["r/a", "r/b/b1", "r/b/b2"])  # nodes r, a, b, b1, b2
    tie = [1.0, 0.5, 0.5, 0.5, 0.0]
    for tau in (1.0, 0.75, 0.5000001, 0.5, 0.25, 0.0):
        assert tax.name(int(decode(np.array([tie]), tax, "threshold", threshold=tau)[0])) in ("r", "b1")
    easy = [1.0, 0.0, 1.0, 0.9, 0.1]
    probs = np.array([tie] + [easy] * 9)
    target = [tax.index("b1")] * 10
    assert conformal_threshold(probs, target, tax, error=0.1) == 0.0
    assert oracle.conformal_threshold(probs, target, tax, 0.1) == 0.0
    saturated = np.array([[1.0, 1.0, 1.0, 1.0, 0.0]] * 5 + [easy] * 5)  # a, b and b1 all at 1.0 (float32)
    assert conformal_threshold(saturated, target, tax, error=0.1) <= 1.0
    assert conformal_threshold(saturated, target, tax, error=0.1) == oracle.conformal_threshold(
        saturated, target, tax, 0.1
    )


def test_rates_from_numpy_and_torch_scalars_are_read_as_they_print() -> None:
    """helper-122: a 0-d tensor error was refused (threshold, beta and k took one); np.float32(0.7) was read
    as 0.69999998807907 (k = 6 of 9 where 0.7 gives 7); the too-few warning for error=1/3 with 2 samples
    said 'at least 2 are needed'."""
    from hiercls.decoding import _check_rate

    assert _check_rate(np.float32(0.7), "error", "0.05") == 0.7
    assert _allowed_wrong(9, _check_rate(np.float32(0.7), "error", "0.05"), None) == _allowed_wrong(9, 0.7, None) == 7
    assert _check_rate(torch.tensor(0.1), "error", "0.05") == 0.1 and _check_rate(np.array(0.3), "e", "x") == 0.3
    with pytest.raises(ValueError, match="error: expected a number strictly between 0 and 1"):
        _check_rate(torch.tensor([0.1, 0.2]), "error", "0.05")
    tax = Taxonomy.from_paths(["r/a", "r/b/b1", "r/b/b2"])
    probs = np.array([[1.0, 0.2, 0.8, 0.5, 0.3]] * 3)
    with pytest.warns(UserWarning, match="2 calibration samples are too few .*: at least 3 are needed"):
        conformal_threshold(probs[:2], [3, 3], tax, error=1 / 3)
    assert _allowed_wrong(3, 1 / 3, None) == 1  # and 3 are enough
