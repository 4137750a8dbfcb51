"""The paper's claims next to DS-Lens' evidence: one row per claim with the measurement, the numbers
on the shipped checkpoints and a verdict (supported / contradicted / cannot tell) computed from
those numbers by the rule the row states. Nothing here is typed in: change the data and the verdict
follows (each rule is a plain function of its numbers, tested on both sides).

Sources: the checkpoints' eval.json (Table 1 and the calibration model, read through jsonread), the
shipped gradient-balance precompute (per-episode attribution and the length sweep's log-log slopes),
the Figure-1 toy run at its default settings, and the shipped decision values
(ds_core/data/decisions_v1.json, written by `python -m ds_core decisions --json`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ds_core.analysis.metrics import wilson_interval as wilson

SUPPORTED, CONTRADICTED, CANNOT_TELL = "supported", "contradicted", "cannot tell"
OOD = ("3x5", "3x6", "3x7", "3x8", "3x9")
IDENTITY_TOL = 1e-3  # Theorem 3.1's per-episode identity: relative difference of the two ratios
SLOPE_GROWS = 0.5  # a log-log slope above this: "grows with the attempt length"
TOY_BALANCED = (0.5, 2.0)  # the toy surrogate's median S:D "about 1:1"
TOY_KL = 2.0  # the toy KL's median S:D "above 2:1"


@dataclass(frozen=True)
class Claim:
    key: str
    claim: str
    measurement: str
    numbers: str
    verdict: str
    rule: str
    page: str  # the page that shows the evidence

    def __post_init__(self):
        if self.verdict not in (SUPPORTED, CONTRADICTED, CANNOT_TELL):
            raise ValueError(f"unknown verdict {self.verdict!r}")


def pooled(evals: Mapping[str, Mapping], condition: str, quantity: str, sizes=OOD) -> tuple[int, int]:
    """(k, n) of `quantity` ('accuracy', 'p_s', 'p_dW', ...) pooled over `sizes` of one condition's eval.json."""
    k = n = 0
    for s in sizes:
        cell = evals.get(condition, {}).get("sizes", {}).get(s, {}).get(quantity)
        if cell:
            k, n = k + int(cell.get("k", 0)), n + int(cell.get("n", 0))
    return k, n


def _pct(k: int, n: int) -> str:
    if not n:
        return "no data"
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / n:.0%} ({lo:.0%}–{hi:.0%})"


def above(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """a's Wilson interval lies entirely above b's."""
    return a[1] > 0 and b[1] > 0 and wilson(*a)[0] > wilson(*b)[1]


# ------------------------------------------------------------------------------- the claims
def theorem_3_1(dataset: pd.DataFrame) -> Claim:
    """Per episode the on-policy surrogate is -A x the SFT token-sum gradient: equal S:D ratios."""
    d = dataset[dataset["objective"].isin(["surrogate", "sft_sum"])]
    wide = d.pivot_table(index=["checkpoint", "size", "episode"], columns="objective", values="ratio_SD")
    wide = wide.dropna()
    if not len(wide) or not {"surrogate", "sft_sum"} <= set(wide.columns):
        verdict, numbers = CANNOT_TELL, "no episode attributed under both objectives"
    else:
        rel = ((wide["surrogate"] - wide["sft_sum"]).abs() / wide["sft_sum"].abs()).max()
        verdict = SUPPORTED if rel <= IDENTITY_TOL else CONTRADICTED
        numbers = (
            f"{len(wide)} episodes: largest relative difference of the surrogate's and SFT's |G_S|/|G_D| {rel:.1e}"
        )
    return Claim(
        "theorem_3_1",
        "Theorem 3.1: the GRPO surrogate weights every token of a trajectory by the same advantage A.",
        "On each shipped episode, the surrogate's |G_S|/|G_D| against SFT token-sum's (the same weight on "
        "every token gives the same ratio); the group-level sum is the GRPO group view.",
        numbers,
        verdict,
        f"supported if every episode's two ratios agree within {IDENTITY_TOL:g} (relative), else contradicted",
        "Gradient balance",
    )


def _slopes(sweep_slopes: pd.DataFrame, objective: str) -> dict[str, float]:
    s = sweep_slopes[(sweep_slopes["objective"] == objective) & (sweep_slopes["metric"] == "ratio_SD")]
    return {str(r.checkpoint): float(r.slope) for r in s.itertuples() if math.isfinite(float(r.slope))}


def _grows(slopes: Mapping[str, float]) -> str:
    if not slopes:
        return CANNOT_TELL
    if all(v > SLOPE_GROWS for v in slopes.values()):
        return SUPPORTED
    if all(v < 0 for v in slopes.values()):
        return CONTRADICTED
    return CANNOT_TELL


def _slope_text(slopes: Mapping[str, float]) -> str:
    return "; ".join(f"{k} {v:+.2f}" for k, v in slopes.items()) or "no sweep"


def _length_claim(key: str, claim: str, measurement: str, slopes: Mapping[str, float]) -> Claim:
    return Claim(
        key,
        claim,
        measurement,
        "slopes: " + _slope_text(slopes),
        _grows(slopes),
        f"supported if every checkpoint's slope > {SLOPE_GROWS:g}, contradicted if every slope < 0, else cannot tell",
        "Gradient balance",
    )


def theorem_3_2(sweep_slopes: pd.DataFrame) -> Claim:
    return _length_claim(
        "theorem_3_2",
        "Theorem 3.2: the KL penalty's sampling:decision ratio grows with the attempt length.",
        "Length sweep on the shipped checkpoints (teacher-forced correct traces of growing size): the "
        "log-log slope of KL k1's |G_S|/|G_D| against the number of sampling tokens. Size and length grow "
        "together there, so the problem's difficulty for the model changes too; the toy's same-states "
        "sweep (Gradient balance, Length sweep) holds the states fixed and is proportional to L by construction.",
        _slopes(sweep_slopes, "kl_k1"),
    )


def sft_length_weighting(sweep_slopes: pd.DataFrame) -> Claim:
    return _length_claim(
        "sft_length",
        "SFT sums its loss over every token, so the decision tokens' share falls as attempts grow (≈ 1/L).",
        "The same length sweep: the log-log slope of SFT token-sum's |G_S|/|G_D| (a share ≈ 1/L means "
        "a ratio ∝ L, a slope ≈ 1).",
        _slopes(sweep_slopes, "sft_sum"),
    )


def toy_figure_1(summary: Mapping[str, float]) -> Claim:
    s, k = float(summary.get("surrogate_ratio_median", math.nan)), float(summary.get("kl_ratio_median", math.nan))
    if not (math.isfinite(s) and math.isfinite(k)):
        verdict = CANNOT_TELL
    elif TOY_BALANCED[0] <= s <= TOY_BALANCED[1] and k > TOY_KL:
        verdict = SUPPORTED
    else:
        verdict = CONTRADICTED
    return Claim(
        "toy",
        "Figure 1: in the three-logit toy the surrogate's S:D ratio stays about 1:1, the KL's above 2:1.",
        "The toy at its default settings (ds_core.analysis.toy): median ratios over training.",
        f"surrogate median {s:.2f}, KL median {k:.2f}",
        verdict,
        f"supported if the surrogate's median is in [{TOY_BALANCED[0]:g}, {TOY_BALANCED[1]:g}] and the KL's > "
        f"{TOY_KL:g}, else contradicted",
        "Gradient balance",
    )


ORDER = ("rl", "sft_reflection", "sft")


def table_1_order(evals: Mapping[str, Mapping]) -> Claim:
    acc = {c: pooled(evals, c, "accuracy") for c in ORDER}
    pairs = list(zip(ORDER, ORDER[1:]))
    if any(acc[c][1] == 0 for c in ORDER):
        verdict = CANNOT_TELL
    elif all(above(acc[a], acc[b]) for a, b in pairs):
        verdict = SUPPORTED
    elif any(above(acc[b], acc[a]) for a, b in pairs):
        verdict = CONTRADICTED
    else:
        verdict = CANNOT_TELL
    return Claim(
        "table_1",
        "Table 1: out of distribution RL beats SFT with reflection, which beats SFT without it.",
        "Accuracy pooled over 3x5..3x9 from each checkpoint's eval.json (100 problems a size, T = 1).",
        "; ".join(f"{c} {_pct(*acc[c])}" for c in ORDER),
        verdict,
        "supported if each Wilson interval lies above the next one's, contradicted if a later one lies above "
        "an earlier one, else cannot tell",
        "Calibration",
    )


def pooled_regret(doc: Mapping | None, sizes=OOD) -> tuple[float, float, float, int] | None:
    """Mean decision regret over the episodes of `sizes` in a decisions document, with a bootstrap
    95% interval over those episodes: (mean, lo, hi, episodes); None without per-episode regret."""
    from ds_core.analysis.regret import bootstrap

    x = np.array([float(r["regret"]) for r in (doc or {}).get("regret", ()) if r.get("size") in sizes])
    if not len(x):
        return None
    lo, hi = bootstrap(x)
    return float(x.mean()), lo, hi, len(x)


def _regret_text(r) -> str:
    return "no regret run" if r is None else f"{r[0]:.1%} ({r[1]:.1%}–{r[2]:.1%}, {r[3]} episodes)"


def _combine(a: str, b: str) -> str:
    """Two pieces of evidence: supported if one supports and neither contradicts (and the mirror image)."""
    both = {a, b}
    if SUPPORTED in both and CONTRADICTED not in both:
        return SUPPORTED
    if CONTRADICTED in both and SUPPORTED not in both:
        return CONTRADICTED
    return CANNOT_TELL


def ood_gain_from_decisions(
    evals: Mapping[str, Mapping], values: Mapping[str, Mapping] | None = None, hashes: Mapping[str, str] | None = None
) -> Claim:
    """Two measurements: which rate carries the gain (p_d|W or p_s, from eval.json) and what
    sft_reflection's own decisions cost it out of distribution (its decision regret: the accuracy its
    attempts would reach with every verdict the Q-optimal one, minus its own)."""
    pair = ("rl", "sft_reflection")
    acc = {c: pooled(evals, c, "accuracy") for c in pair}
    pdw = {c: pooled(evals, c, "p_dW") for c in pair}
    ps = {c: pooled(evals, c, "p_s") for c in pair}
    values, hashes = values or {}, hashes or {}
    reg = {
        c: pooled_regret(values[c]) if c in values and hashes.get(c) == values[c].get("checkpoint_hash") else None
        for c in pair
    }
    if not above(acc["rl"], acc["sft_reflection"]):
        verdict = CANNOT_TELL  # no out-of-distribution gain to attribute
    else:
        if above(pdw["rl"], pdw["sft_reflection"]) and not above(ps["rl"], ps["sft_reflection"]):
            rates = SUPPORTED
        elif above(ps["rl"], ps["sft_reflection"]) and not above(pdw["rl"], pdw["sft_reflection"]):
            rates = CONTRADICTED
        else:
            rates = CANNOT_TELL
        # the least gain the two accuracy intervals allow
        least_gain = wilson(*acc["rl"])[0] - wilson(*acc["sft_reflection"])[1]
        r_rl, r_sr = reg["rl"], reg["sft_reflection"]
        if r_sr is None:
            regret = CANNOT_TELL
        elif r_sr[2] < least_gain:
            regret = CONTRADICTED  # optimal decisions could not give sft_reflection RL's gain
        elif r_rl is not None and r_sr[1] > r_rl[2]:
            regret = SUPPORTED
        else:
            regret = CANNOT_TELL
        verdict = _combine(rates, regret)
    return Claim(
        "ood_gain",
        "RL's out-of-distribution gain over SFT with reflection comes from the decision policy (p_d|W), "
        "not the sampling policy (p_s).",
        "3x5..3x9 pooled: accuracy, p_s and p_d|W of rl against sft_reflection (eval.json), and each one's "
        "decision regret (ds_core/data/decisions_v1.json: the accuracy of its own attempts with every verdict the "
        "Q-optimal one, minus its own accuracy).",
        "; ".join(
            f"{c}: accuracy {_pct(*acc[c])}, p_s {_pct(*ps[c])}, p_d|W {_pct(*pdw[c])}, regret {_regret_text(reg[c])}"
            for c in pair
        ),
        verdict,
        "cannot tell unless rl's accuracy interval lies above sft_reflection's (no gain to attribute). Then two "
        "tests: the rates (supports if p_d|W is higher, intervals apart, and p_s is not; contradicts if p_s is "
        "higher and p_d|W is not) and the regret (contradicts if sft_reflection's regret interval lies below the "
        "least gain the accuracy intervals allow: optimal decisions could not close the gap; supports if "
        "sft_reflection's regret interval lies above rl's). Supported if one test supports and neither "
        "contradicts, contradicted in the mirror case, else cannot tell",
        "Calibration",
    )


FOLLOWS_MIN_POINTS = 20
FOLLOWS_SUPPORTED = 0.8  # Wilson lower bound of the share of verdicts that pick the better value


def _provenance(values: Mapping[str, Mapping]) -> str:
    """What the shipped decision values were computed on, read from the documents themselves."""
    parts = []
    for name, doc in values.items():
        sizes = ", ".join(doc.get("sizes", ())) or "no sizes"
        parts.append(
            f"{name}: {doc.get('n', '?')} problems of {sizes}, {doc.get('continuations', '?')} continuations each"
        )
    return "; ".join(parts) or "no documents"


def decisions_follow_q(values: Mapping[str, Mapping], hashes: Mapping[str, str]) -> Claim:
    """`values`: per checkpoint, a `python -m ds_core decisions --json` document; `hashes`: the
    checkpoints' current content hashes (a document of another version is left out, said so).
    The claim has two halves, tested apart: keeping where STOP is worth more, revising where
    RESAMPLE is (a model that never revises passes the first half trivially and tests no second)."""
    pooled = {"STOP": [0, 0], "RESAMPLE": [0, 0]}
    parts, stale = [], []
    for name, doc in values.items():
        if hashes.get(name) != doc.get("checkpoint_hash"):
            stale.append(name)
            continue
        own = []
        for better, word in (("STOP", "keep"), ("RESAMPLE", "revise")):
            pts = [r for r in doc.get("rows", ()) if r.get("optimal") == better and not r.get("at_cap")]
            kk = sum(r.get("chosen") == better for r in pts)
            pooled[better][0] += kk
            pooled[better][1] += len(pts)
            own.append(f"{word} {_pct(kk, len(pts))}" if pts else f"{word}: none")
        parts.append(f"{name} {', '.join(own)}")
    halves = []
    for k, n in pooled.values():
        if n < FOLLOWS_MIN_POINTS:
            halves.append(CANNOT_TELL)
            continue
        lo, hi = wilson(k, n)
        halves.append(SUPPORTED if lo >= FOLLOWS_SUPPORTED else (CONTRADICTED if hi < 0.5 else CANNOT_TELL))
    verdict = (
        CONTRADICTED if CONTRADICTED in halves else (SUPPORTED if all(h == SUPPORTED for h in halves) else CANNOT_TELL)
    )
    numbers = (
        "verdicts that pick the higher Q where the two differ (keep: STOP worth more; revise: RESAMPLE worth "
        "more): "
        + ("; ".join(parts) or "no values")
        + f"; pooled keep {_pct(*pooled['STOP'])}, revise {_pct(*pooled['RESAMPLE'])}"
    )
    if stale:
        numbers += f" (left out, computed on another version: {', '.join(stale)})"
    return Claim(
        "follows_q",
        "Decisions follow Q-values: the model keeps an attempt when stopping is worth more and revises when "
        "a retry is.",
        "Monte-Carlo Q(STOP) and Q(RESAMPLE) at every verdict of the shipped checkpoints' evaluation episodes "
        f"(ds_core/data/decisions_v1.json: {_provenance(values)}).",
        numbers,
        verdict,
        "each half apart, pooled over the checkpoints, over the verdicts where Q differs (not at the retry cap): "
        f"a half supports if the Wilson lower bound of the share choosing the higher Q is >= {FOLLOWS_SUPPORTED:g} "
        f"(at least {FOLLOWS_MIN_POINTS} such verdicts) and contradicts if its upper bound is < 0.5; supported "
        "if both halves support, contradicted if either contradicts, else cannot tell",
        "Episode explorer",
    )


def claims(
    evals: Mapping[str, Mapping],
    dataset: pd.DataFrame,
    sweep_slopes: pd.DataFrame,
    toy_summary,
    decision_values: Mapping[str, Mapping] | None = None,
    hashes: Mapping[str, str] | None = None,
) -> list[Claim]:
    return [
        theorem_3_1(dataset),
        theorem_3_2(sweep_slopes),
        sft_length_weighting(sweep_slopes),
        toy_figure_1(toy_summary),
        table_1_order(evals),
        ood_gain_from_decisions(evals, decision_values, hashes),
        decisions_follow_q(decision_values or {}, hashes or {}),
    ]


def shipped_claims(checkpoints: Sequence[str] = ("base", "sft", "sft_reflection", "rl")) -> list[Claim]:
    """The claims on the shipped checkpoints' own files (eval.json, the balance precompute, the toy)."""
    from ds_core.analysis.balance.shipped import load_shipped
    from ds_core.analysis.regret import shipped_documents
    from ds_core.analysis.toy_sweeps import toy_view
    from ds_core.models.checkpoint import content_hash
    from ds_core.paths import SHIPPED_DIR
    from ds_core.store import jsonread

    evals = {}
    for c in checkpoints:
        p = SHIPPED_DIR / c / "eval.json"
        if p.is_file():
            evals[c] = jsonread.read(p, expect=dict)
    sh = load_shipped()
    values = shipped_documents()
    hashes = {c: content_hash(SHIPPED_DIR / c) for c in values if (SHIPPED_DIR / c / "config.json").is_file()}
    return claims(evals, sh.dataset, sh.sweep_slopes, toy_view().summary, values, hashes)


def claims_frame(rows: Sequence[Claim]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"claim": c.claim, "verdict": c.verdict, "numbers": c.numbers, "rule": c.rule, "evidence": c.page}
            for c in rows
        ]
    )
