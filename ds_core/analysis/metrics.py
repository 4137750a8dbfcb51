"""Metrics: accuracy with intervals, the calibration model, bootstrap intervals, transitions.

PAPER.md, "Calibration model" (section 4.2):
    p_s   = P(first attempt correct)            (an episode with no attempts: a wrong one)
    p_d|C = P(STOP | attempt correct)           pooled over attempts followed by a decision
    p_d|W = P(RESAMPLE | attempt wrong)         pooled over attempts followed by a decision
    predicted = p_s p_d|C / (1 - [p_s (1 - p_d|C) + (1 - p_s) p_d|W])
The denominator is computed as p_s p_d|C + (1 - p_s)(1 - p_d|W) (equal, a sum of two
non-negative terms), so "the denominator is 0" is an exact test and gives nan, never inf.

Functions take anything episode-like: `.attempts` (each `.index`, `.correct`), `.decisions` (each
`.index` = the attempt it follows, `.verdict` "STOP"/"RESAMPLE"), `.correct`, optionally
`.malformed`. Undefined quantities are nan, not exceptions; `to_dict()` is JSON-ready (nan -> None).
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, fields

import numpy as np

from ds_core.episodes.episode import RESAMPLE, STOP, TRANSITIONS, transition
from ds_core.store.jsonio import to_jsonable

ATTEMPT_MODES = ("all", "first")
QUANTITIES = ("p_s", "p_dC", "p_dW", "predicted", "observed")
Z95 = 1.96  # the paper's 95% Wald intervals
NAN = float("nan")


_json = to_jsonable  # ds_core.store.jsonio's policy: nan -> None


def _is_prob(x: float) -> bool:
    return math.isnan(x) or 0.0 <= x <= 1.0


def _ratio(k: int, n: int) -> float:
    return k / n if n else NAN


def _interval(lo: float, hi: float) -> tuple[float, float]:
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) != math.isnan(hi) or not (_is_prob(lo) and _is_prob(hi)) or lo > hi + 1e-12:
        raise ValueError(f"bad interval ({lo}, {hi})")
    return lo, hi


def _check_mode(attempts: str) -> None:
    if attempts not in ATTEMPT_MODES:
        raise ValueError(f"attempts must be one of {ATTEMPT_MODES}, got {attempts!r}")


class _Record:
    def to_dict(self) -> dict:
        return {
            f.name: (v.to_dict() if hasattr(v, "to_dict") else _json(v))
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }


# --- proportions -------------------------------------------------------------------------------
def wald_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """p +- z sqrt(p(1-p)/n), clipped to [0, 1]; (nan, nan) when n = 0."""
    if n == 0:
        return NAN, NAN
    p = k / n
    h = z * math.sqrt(p * (1 - p) / n)
    return max(0.0, p - h), min(1.0, p + h)


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval (statsmodels); (nan, nan) when n = 0."""
    if n == 0:
        return NAN, NAN
    from statsmodels.stats.proportion import proportion_confint  # 0.7 s to import: only when used

    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    lo = 0.0 if k == 0 else min(max(float(lo), 0.0), 1.0)  # exact at the ends (statsmodels gives 1e-17)
    hi = 1.0 if k == n else min(max(float(hi), 0.0), 1.0)
    return lo, hi


@dataclass(frozen=True)
class Proportion(_Record):
    k: int
    n: int
    p: float
    wald: tuple[float, float]
    wilson: tuple[float, float]

    def __post_init__(self):
        if not 0 <= self.k <= self.n:
            raise ValueError(f"need 0 <= k <= n, got k={self.k}, n={self.n}")
        if not (math.isnan(self.p) if self.n == 0 else abs(self.p - self.k / self.n) < 1e-12):
            raise ValueError(f"p={self.p} does not match {self.k}/{self.n}")
        object.__setattr__(self, "wald", _interval(*self.wald))
        object.__setattr__(self, "wilson", _interval(*self.wilson))


def accuracy(k: int, n: int) -> Proportion:
    """k correct of n, with the paper's 95% Wald interval and a Wilson interval."""
    if isinstance(k, bool) or isinstance(n, bool):
        raise TypeError("k and n must be integers, not bool")
    k, n = operator.index(k), operator.index(n)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return Proportion(k, n, _ratio(k, n), wald_interval(k, n), wilson_interval(k, n))


# --- the calibration model ---------------------------------------------------------------------
def predicted_accuracy(p_s, p_dC, p_dW):
    """Accuracy in the limit of unbounded independent retries; nan where undefined.

    Floats give a float, arrays an array (elementwise). Inputs must lie in [0, 1] or be nan.
    A term whose weight is exactly 0 is 0 even when its probability is undefined: with p_s = 1
    (no wrong first attempts) p_d|W does not matter, with p_s = 0 p_d|C does not.
    """
    ps, dc, dw = (np.asarray(x, dtype=float) for x in (p_s, p_dC, p_dW))
    for name, v in (("p_s", ps), ("p_dC", dc), ("p_dW", dw)):
        if np.any((v < 0) | (v > 1)):
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    num = np.where(ps == 0, 0.0, ps * dc)
    den = num + np.where(ps == 1, 0.0, (1 - ps) * (1 - dw))  # == 1 - [p_s(1-p_dC) + (1-p_s)p_dW]
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), NAN)
    return float(out) if out.ndim == 0 else out


def _decided(ep):
    """(attempt index, correct, verdict) for each attempt followed by a decision, in order."""
    verdicts: dict[int, str] = {}
    for d in ep.decisions:
        verdicts.setdefault(int(d.index), d.verdict)
    return [
        (int(a.index), bool(a.correct), verdicts[int(a.index)])
        for a in sorted(ep.attempts, key=lambda a: a.index)
        if int(a.index) in verdicts
    ]


def _episode_stats(episodes, attempts: str = "all") -> np.ndarray:
    """Per-episode counts (n, 6): first_correct, correct_stop, correct_decided, wrong_resample,
    wrong_decided, final_correct."""
    _check_mode(attempts)
    rows = []
    for ep in episodes:
        atts = sorted(ep.attempts, key=lambda a: a.index)
        row = [bool(atts[0].correct) if atts else False, 0, 0, 0, 0, bool(ep.correct)]
        for i, correct, verdict in _decided(ep):
            if attempts == "all" or i == atts[0].index:
                j = 1 if correct else 3
                row[j] += verdict == (STOP if correct else RESAMPLE)
                row[j + 1] += 1
        rows.append(row)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 6)


@dataclass(frozen=True)
class CalibrationCounts(_Record):
    """The numerators and denominators behind p_s, p_d|C, p_d|W and observed accuracy."""

    n: int  # episodes
    first_correct: int  # p_s = first_correct / n
    correct_stop: int  # p_dC = correct_stop / correct_decided
    correct_decided: int
    wrong_resample: int  # p_dW = wrong_resample / wrong_decided
    wrong_decided: int
    final_correct: int  # observed = final_correct / n

    def __post_init__(self):
        for a, b in (
            (self.first_correct, self.n),
            (self.correct_stop, self.correct_decided),
            (self.wrong_resample, self.wrong_decided),
            (self.final_correct, self.n),
        ):
            if not 0 <= a <= b:
                raise ValueError(f"inconsistent counts: {self}")

    p_s = property(lambda s: _ratio(s.first_correct, s.n))
    p_dC = property(lambda s: _ratio(s.correct_stop, s.correct_decided))
    p_dW = property(lambda s: _ratio(s.wrong_resample, s.wrong_decided))
    observed = property(lambda s: _ratio(s.final_correct, s.n))
    predicted = property(lambda s: predicted_accuracy(s.p_s, s.p_dC, s.p_dW))


def calibration_counts(episodes, attempts: str = "all") -> CalibrationCounts:
    s = _episode_stats(list(episodes), attempts)
    return CalibrationCounts(len(s), *(int(x) for x in s.sum(axis=0)))


# --- bootstrap ---------------------------------------------------------------------------------
def bootstrap_intervals(
    episodes, n_boot: int = 100, seed: int = 0, attempts: str = "all", _stats: np.ndarray | None = None
) -> dict[str, tuple[float, float]]:
    """{quantity: (2.5th, 97.5th percentile)} over `n_boot` resamples of the episodes.

    A resample where a quantity is undefined contributes nan and is skipped (nanpercentile);
    with no episodes, no resamples or no defined values the interval is (nan, nan).
    """
    if isinstance(n_boot, bool) or operator.index(n_boot) < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    stats = _episode_stats(list(episodes), attempts) if _stats is None else _stats
    n = len(stats)
    if n == 0 or n_boot == 0:
        return {q: (NAN, NAN) for q in QUANTITIES}
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    fc, cs, cd, wr, wd, fin = stats[idx].sum(axis=1).T.astype(float)  # each (n_boot,)
    with np.errstate(invalid="ignore", divide="ignore"):
        dc, dw = cs / cd, wr / wd  # 0/0 -> nan
    ps, obs = fc / n, fin / n
    values = {"p_s": ps, "p_dC": dc, "p_dW": dw, "observed": obs, "predicted": predicted_accuracy(ps, dc, dw)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan slices
        return {q: tuple(float(x) for x in np.nanpercentile(values[q], [2.5, 97.5])) for q in QUANTITIES}


# --- transitions -------------------------------------------------------------------------------
class _Counts:
    def __post_init__(self):
        if any(getattr(self, f.name) < 0 for f in fields(self)):
            raise ValueError(f"negative count: {self}")

    def to_dict(self) -> dict:
        return {f.name.replace("_to_", "->"): int(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class DecisionCounts(_Counts):
    """Attempts at one index by (correctness, verdict)."""

    correct_kept: int = 0  # correct, STOP
    wrong_revised: int = 0  # wrong, RESAMPLE
    wrong_kept: int = 0  # wrong, STOP
    correct_changed: int = 0  # correct, RESAMPLE


@dataclass(frozen=True)
class PairCounts(_Counts):
    """Correctness of attempt k -> attempt k+1 (C correct, W wrong); to_dict keys 'C->W' etc."""

    C_to_C: int = 0
    C_to_W: int = 0
    W_to_C: int = 0
    W_to_W: int = 0


def _total(cls, counts):
    return cls(*(sum(getattr(c, f.name) for c in counts) for f in fields(cls)))


@dataclass(frozen=True)
class Transitions:
    by_index: tuple[tuple[int, DecisionCounts], ...]  # (k, counts of attempts at index k)
    pairs: tuple[tuple[int, PairCounts], ...]  # (k, table of attempt k -> k+1)
    total: DecisionCounts
    pair_total: PairCounts

    def __post_init__(self):
        if (
            _total(DecisionCounts, [c for _, c in self.by_index]) != self.total
            or _total(PairCounts, [c for _, c in self.pairs]) != self.pair_total
        ):
            raise ValueError("totals do not match the per-index counts")

    def at(self, k: int) -> DecisionCounts:
        return dict(self.by_index).get(k, DecisionCounts())

    def pair(self, k: int) -> PairCounts:
        return dict(self.pairs).get(k, PairCounts())

    def to_dict(self) -> dict:
        return {
            "by_index": {str(k): c.to_dict() for k, c in self.by_index},
            "pairs": {f"{k}->{k + 1}": c.to_dict() for k, c in self.pairs},
            "total": self.total.to_dict(),
            "pair_total": self.pair_total.to_dict(),
        }


def transition_counts(episodes) -> Transitions:
    """Per attempt index: (correctness, verdict) counts; per pair k -> k+1: correctness table."""
    dec: dict[int, dict[str, int]] = {}
    pair: dict[int, dict[str, int]] = {}
    for ep in episodes:
        for i, correct, verdict in _decided(ep):
            dec.setdefault(i, dict.fromkeys(TRANSITIONS.values(), 0))[transition(correct, verdict)] += 1
        ok = {int(a.index): bool(a.correct) for a in ep.attempts}
        for k in (k for k in ok if k + 1 in ok):
            key = ("C" if ok[k] else "W") + "_to_" + ("C" if ok[k + 1] else "W")
            pair.setdefault(k, {f.name: 0 for f in fields(PairCounts)})[key] += 1
    by_index = tuple((k, DecisionCounts(**dec[k])) for k in sorted(dec))
    pairs = tuple((k, PairCounts(**pair[k])) for k in sorted(pair))
    return Transitions(
        by_index, pairs, _total(DecisionCounts, [c for _, c in by_index]), _total(PairCounts, [c for _, c in pairs])
    )


# --- the report --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate(_Record):
    """A point value with a bootstrap (lo, hi) interval and, for a ratio, its counts k/n."""

    value: float
    ci: tuple[float, float]
    k: int | None = None
    n: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "ci", _interval(*self.ci))
        if not _is_prob(self.value):
            raise ValueError(f"estimate {self.value} outside [0, 1]")
        if (self.k is None) != (self.n is None) or self.k is not None and not 0 <= self.k <= self.n:
            raise ValueError(f"bad counts k={self.k}, n={self.n}")


@dataclass(frozen=True)
class CalibrationReport(_Record):
    n: int  # episodes
    accuracy: Proportion  # observed accuracy with Wald/Wilson intervals
    observed: Estimate  # observed accuracy with its bootstrap interval
    p_s: Estimate
    p_dC: Estimate
    p_dW: Estimate
    predicted: Estimate
    counts: CalibrationCounts
    transitions: Transitions  # always over all attempts
    mean_attempts: float  # nan with no episodes
    malformed_fraction: float
    n_boot: int
    seed: int
    attempts: str  # "all" or "first": which attempts p_dC, p_dW pool

    def __post_init__(self):
        _check_mode(self.attempts)
        if not self.n == self.accuracy.n == self.counts.n:
            raise ValueError("n does not match the counts")
        if not _is_prob(self.malformed_fraction) or self.mean_attempts < 0:
            raise ValueError("bad malformed_fraction or mean_attempts")


def calibration(episodes, n_boot: int = 100, seed: int = 0, attempts: str = "all") -> CalibrationReport:
    """The calibration model on a list of episodes, with bootstrap intervals over episodes."""
    episodes = list(episodes)
    stats = _episode_stats(episodes, attempts)
    c = CalibrationCounts(len(stats), *(int(x) for x in stats.sum(axis=0)))
    ci = bootstrap_intervals(episodes, n_boot, seed, attempts, _stats=stats)
    n = len(episodes)
    return CalibrationReport(
        n=n,
        accuracy=accuracy(c.final_correct, n),
        observed=Estimate(c.observed, ci["observed"], c.final_correct, n),
        p_s=Estimate(c.p_s, ci["p_s"], c.first_correct, n),
        p_dC=Estimate(c.p_dC, ci["p_dC"], c.correct_stop, c.correct_decided),
        p_dW=Estimate(c.p_dW, ci["p_dW"], c.wrong_resample, c.wrong_decided),
        predicted=Estimate(c.predicted, ci["predicted"]),
        counts=c,
        transitions=transition_counts(episodes),
        mean_attempts=_ratio(sum(len(e.attempts) for e in episodes), n),
        malformed_fraction=_ratio(sum(bool(getattr(e, "malformed", False)) for e in episodes), n),
        n_boot=int(n_boot),
        seed=int(seed),
        attempts=attempts,
    )
