"""The episode explorer's service: one episode, its gradient attribution, its decisions.

Design notes: docs/DESIGN.md, section `ui.services.explorer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ds_core.attribution.input_methods import INPUT_METHODS as REGISTERED_INPUT_METHODS
from ds_core.attribution.result import FIGURE_FIELDS, PER_TOKEN
from ds_core.episodes.episode import RESAMPLE, STOP, Episode
from ds_core.episodes.tasks import Problem
from ds_core.models.locks import MODEL_LOCK
from ds_core.models.sampling import RolloutError, SamplingConfig
from ds_core.objectives import OBJECTIVE_NAMES, SHORT_LABELS
from ui.services.episodes import episode_frame, segmentation_frame, verdicts_text
from ui.services.explorer_decisions import (
    Counterfactual,
    ExplorerError,
    comparison_frame,
    counterfactual,
    decision_input_attribution,
    input_frames,
)

# torch, transformers and captum are imported inside the functions that run a model, so the page
# draws its controls (the cold start) without them.

__all__ = [
    "ExplorerError",
    "Attributions",
    "Counterfactual",
    "sampling_key",
    "sampling_config",
    "warm_up",
    "run_episode",
    "episode_frame",
    "segmentation_frame",
    "attempts_frame",
    "episode_summary",
    "decision_choices",
    "group_advantage",
    "attribute_objectives",
    "default_objective",
    "huge_ratio_notes",
    "skipped_lines",
    "figures_frame",
    "groups_frame",
    "token_table",
    "shading_scale",
    "view_frame",
    "has_decision_tokens",
    "decision_input_attribution",
    "input_frames",
    "counterfactual",
    "comparison_frame",
    "STOP",
    "RESAMPLE",
]

OBJECTIVE_NAMES = OBJECTIVE_NAMES  # every registered objective, in registry order
OBJECTIVE_LABELS = SHORT_LABELS
VIEWS = {"share": "share", "norm": "grad_norm", "alignment with G_D": "align_D", "alignment with G_S": "align_S"}
SIGNED_VIEWS = {"share": True, "norm": False, "alignment with G_D": True, "alignment with G_S": True}

FIGURE_COLUMNS = ("objective", "label", *FIGURE_FIELDS)
GROUP_COLUMNS = (
    "objective",
    "group",
    "n_params",
    "norm_G_S",
    "norm_G_D",
    "ratio_SD",
    "ratio_SD_per_token",
    "cos_SD",
    "share_S",
    "share_D",
    "share_O",
)
MAX_ATTEMPTS = 8  # the page's cap on the retry cap (longer episodes only grow the context)
MAX_GROUP = 64
GROUP_SEED_OFFSET = 1_000_000
# label -> input-attribution method (registry order: the first is the page's default)
INPUT_METHODS = {m.label: m.name for m in REGISTERED_INPUT_METHODS.values()}
IG_DELTA_WARN = 0.1  # warn when IG's |convergence delta| exceeds this share of f(x) - f(baseline)


def sampling_config(temperature, top_p, max_attempts, max_new_tokens=None) -> SamplingConfig:
    """The page's SamplingConfig; ExplorerError for values out of range (the page also caps the
    retry cap at MAX_ATTEMPTS). `max_new_tokens` None (or 0) keeps the format's per-problem budget.
    Cheap: no model code is imported."""
    try:
        cfg = SamplingConfig(
            temperature=temperature, top_p=top_p, max_attempts=max_attempts, max_new_tokens=max_new_tokens or None
        )
    except RolloutError as e:
        raise ExplorerError(str(e)) from None
    if cfg.max_attempts > MAX_ATTEMPTS:
        raise ExplorerError(f"max attempts must be in 1..{MAX_ATTEMPTS}, got {max_attempts!r}")
    return cfg


def sampling_key(temperature, top_p, max_attempts, max_new_tokens=None) -> tuple:
    """Validated sampling settings as a plain tuple, the page's cache key: (temperature, top_p,
    max_attempts), with max_new_tokens appended when the user capped the episode's length."""
    cfg = sampling_config(temperature, top_p, max_attempts, max_new_tokens)
    key = (cfg.temperature, cfg.top_p, cfg.max_attempts)
    return key if cfg.max_new_tokens is None else (*key, cfg.max_new_tokens)


def warm_up() -> None:
    """Import the model code (torch, transformers, captum: several seconds on a cold process) so
    that a page can do it in a background thread while the user is still choosing settings."""
    import captum.attr  # noqa: F401

    import ds_core.attribution.dataset  # noqa: F401
    import ds_core.attribution.gradient  # noqa: F401
    import ds_core.attribution.inputs  # noqa: F401
    import ds_core.models.rollout  # noqa: F401


# ------------------------------------------------------------------------------- episodes
def run_episode(ckpt, problem: Problem, cfg, seed: int = 0) -> Episode:
    """One episode of `problem` sampled from checkpoint `ckpt` with SamplingConfig `cfg`
    (ds_core.models.rollout, stream 0)."""
    from ds_core.models.rollout import rollout

    with MODEL_LOCK:
        return rollout(ckpt.model, ckpt.tokenizer, ckpt.format, [problem], cfg, seed=int(seed))[0]


def attempts_frame(ep: Episode) -> pd.DataFrame:
    """One row per attempt: its text, answer, whether it is correct, the model's own check, the
    verdict that follows it."""
    rows = [
        {
            "attempt": a.index + 1,
            "answer": a.answer,
            "correct": a.correct,
            "check agrees": a.check_ok,
            "verdict": ep.verdict_after(a.index) or "(none)",
            "malformed": a.malformed,
            "tokens": a.end - a.start,
            "text": a.text,
        }
        for a in ep.attempts
    ]
    return pd.DataFrame(
        rows, columns=["attempt", "answer", "correct", "check agrees", "verdict", "malformed", "tokens", "text"]
    )


def episode_summary(ep: Episode) -> dict:
    p = ep.problem
    return {
        "problem": p.display if p else "",
        "answer": p.answer if p else None,
        "final answer": ep.final_answer,
        "correct": ep.correct,
        "attempts": ep.n_attempts,
        "decisions": verdicts_text(ep, " "),
        "tokens": len(ep.token_ids) - ep.prompt_len,
        "flags": ", ".join(ep.flags) or "none",
    }


def decision_choices(ep: Episode) -> list[tuple[int, str]]:
    """(token position, label) of every decision token, in order."""
    out = []
    for d in ep.decisions:
        for pos in range(d.start, d.end):
            tok = ep.tokens[pos] if pos < len(ep.tokens) else d.verdict
            out.append((pos, f"after attempt {d.index + 1}: {tok} (token {pos})"))
    return out


# ------------------------------------------------------------------------------- attribution
def group_advantage(ckpt, ep: Episode, cfg, n: int = 8, seed: int = 0) -> float:
    """The episode's GRPO group-relative advantage among `n` fresh rollouts of its problem (module
    docstring: seed GROUP_SEED_OFFSET + seed, the episode's sampling settings)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_GROUP:
        raise ExplorerError(f"the GRPO group size must be in 1..{MAX_GROUP}, got {n!r}")
    from ds_core.attribution.gradient import grpo_advantage

    with MODEL_LOCK:
        return grpo_advantage(
            ckpt.model, ckpt.tokenizer, ckpt.format, ep, n=n, seed=GROUP_SEED_OFFSET + int(seed), cfg=cfg
        )


@dataclass(frozen=True)
class Attributions:
    """Attribution results of one episode per objective; `skipped` says why an objective is
    missing (no reference, a zero gradient, ...)."""

    results: dict = field(default_factory=dict)  # objective -> AttributionResult
    skipped: dict = field(default_factory=dict)  # objective -> reason
    advantage: float | None = None

    def get(self, objective: str):
        return self.results.get(objective)


def attribute_objectives(
    ckpt,
    ep: Episode,
    objectives=OBJECTIVE_NAMES,
    *,
    advantage: float | None,
    ref=None,
    store=None,
    norms_for=(),
    progress=None,
    parameters: str = "all",
) -> Attributions:
    """attribute() each objective on `ep` (served from `store` when it holds the result). The
    surrogate needs `advantage`, the KL terms `ref` (a Checkpoint); an objective whose input is
    missing or whose gradient is zero/non-finite lands in `skipped` with the reason instead of
    failing the others. `norms_for`: objectives that also get per-token gradient norms;
    `parameters`: the parameter spec every attribution covers (ds_core.attribution.selection)."""
    from ds_core.attribution.cache import cached_attribute
    from ds_core.attribution.gradient import AttributionError, attribute
    from ds_core.objectives import OBJECTIVES, needs_ref

    results, skipped = {}, {}
    objectives = list(objectives)
    for i, o in enumerate(objectives):
        if o not in OBJECTIVES:
            raise ExplorerError(f"unknown objective {o!r}; valid: {', '.join(OBJECTIVES)}")
        kw = {"norms": o in norms_for, "parameters": parameters}
        if "advantages" in OBJECTIVES[o].needs:
            if advantage is None or not math.isfinite(float(advantage)):
                skipped[o] = "the surrogate needs a finite advantage"
                continue
            kw["advantage"] = float(advantage)
        if needs_ref(o):
            if ref is None:
                skipped[o] = "no KL reference checkpoint"
                continue
            kw["ref_model"] = ref
        try:
            with MODEL_LOCK:
                results[o] = (
                    cached_attribute(ckpt, ep, o, store, **kw) if store is not None else attribute(ckpt, ep, o, **kw)
                )
        except AttributionError as e:
            skipped[o] = str(e)
        if progress:
            progress(i + 1, len(objectives))
    return Attributions(results, skipped, None if advantage is None else float(advantage))


DEFAULT_ORDER = ("kl_k3", "surrogate", "sft_sum")  # the explorer's first choice, when attributed


def default_objective(atts: Attributions) -> str:
    """The first of DEFAULT_ORDER (then of every objective) that `atts` holds a result for."""
    for o in (*DEFAULT_ORDER, *OBJECTIVE_NAMES):
        if o in atts.results:
            return o
    return DEFAULT_ORDER[0]


HUGE_RATIO = 1e6


def huge_ratio_notes(atts: Attributions) -> list[str]:
    """Why an objective's |G_S|/|G_D| is enormous, from its own per-token terms: a KL term whose
    decision tokens sit where the model and its reference agree has almost no gradient there."""
    out = []
    for o, r in atts.results.items():
        ratio = r.figures.ratio_SD
        if not (math.isfinite(ratio) and ratio > HUGE_RATIO):
            continue
        by = {role: [abs(t) for t, x in zip(r.term, r.roles) if x == role] for role in ("sampling", "decision")}
        if not by["sampling"] or not by["decision"]:
            continue
        ms, md = (sum(v) / len(v) for v in (by["sampling"], by["decision"]))
        line = (
            f"{OBJECTIVE_LABELS[o]}: |G_S|/|G_D| = {ratio:.2g} because its per-token term averages "
            f"{md:.2g} on the decision tokens against {ms:.2g} on the sampling tokens"
        )
        if o in ("kl_k1", "kl_k3"):
            line += (
                ": the model and its KL reference agree almost exactly on the decision tokens, and a KL term's "
                "gradient there (1 − π_ref/π for k3) is then almost 0"
            )
        out.append(line + ".")
    return out


def parameter_scope(ckpt, spec: str) -> tuple[str, str]:
    """(the canonical spec, one line saying which parameters a figure covers); a UserError that
    says what is wrong for a spec that selects nothing."""
    from ds_core.attribution.selection import describe_selection, normalise

    return normalise(spec), describe_selection(ckpt.model, spec)


def skipped_lines(atts: Attributions) -> list[str]:
    """One line per distinct reason: 'SFT sum, DFT: <why>' (objectives sharing a reason grouped)."""
    by: dict[str, list[str]] = {}
    for o, why in atts.skipped.items():
        by.setdefault(why, []).append(OBJECTIVE_LABELS.get(o, o))
    return [f"{', '.join(objs)}: {why}" for why, objs in by.items()]


def figures_frame(atts: Attributions) -> pd.DataFrame:
    """One row per computed objective: the whole-model decision vs sampling figures."""
    rows = []
    for o, r in atts.results.items():
        f = r.figures
        rows.append({"objective": o, "label": OBJECTIVE_LABELS.get(o, o), **f.row()})
    return pd.DataFrame(rows, columns=list(FIGURE_COLUMNS))


def groups_frame(atts: Attributions) -> pd.DataFrame:
    """Long format: one row per (objective, parameter group), plus each objective's 'model' row."""
    frames = []
    for o, r in atts.results.items():
        g = r.groups_frame().rename(columns={"name": "group"})
        g.insert(0, "objective", o)
        frames.append(g)
    if not frames:
        return pd.DataFrame(columns=list(GROUP_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(GROUP_COLUMNS)]


def token_table(ep: Episode, atts: Attributions) -> pd.DataFrame:
    """episode_frame(ep) plus, per computed objective o, columns `{col}[o]` for term, share,
    align_D, align_S and grad_norm (NaN when norms were not computed)."""
    df = episode_frame(ep)
    for o, r in atts.results.items():
        t = r.to_pandas()
        if len(t) != len(df):
            raise ExplorerError(f"the {o} attribution covers {len(t)} tokens, the episode {len(df)}")
        for c in PER_TOKEN:
            df[f"{c}[{o}]"] = t[c].to_numpy()
    return df


SHADING = {"largest value": None, "95th percentile": 95.0}  # label -> percentile of |value|


def shading_scale(values, mode: str = "largest value") -> float | None:
    """The |value| that gets full colour: None (ui.tokens: the largest in the episode) or a
    percentile of the finite non-zero |values|, so that one dominant token does not wash out the
    rest (those above it saturate)."""
    if mode not in SHADING:
        raise ExplorerError(f"unknown shading {mode!r}; choose one of {', '.join(SHADING)}")
    q = SHADING[mode]
    if q is None:
        return None
    v = pd.to_numeric(pd.Series(values), errors="coerce").abs()
    v = v[v.map(math.isfinite) & (v > 0)]
    if not len(v):
        return None
    return float(v.quantile(q / 100.0))


def view_frame(ep: Episode, atts: Attributions, objective: str, view: str) -> pd.DataFrame:
    """episode_frame(ep) plus the chosen objective's per-token columns and a `value` column with
    the chosen view (share, norm, alignment with G_D / G_S); KeyError-free: missing -> NaN."""
    if view not in VIEWS:
        raise ExplorerError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    df = episode_frame(ep)
    r = atts.get(objective)
    nan = [float("nan")] * len(df)
    t = r.to_pandas() if r is not None else None
    for c in PER_TOKEN:
        df[c] = t[c].to_numpy() if t is not None else nan
    df["value"] = df[VIEWS[view]]
    return df


def has_decision_tokens(ckpt) -> bool:
    """Whether the checkpoint's tokenizer has the [STOP]/[RESAMPLE] tokens (counterfactuals and
    contrastive input attribution need them)."""
    from ds_core.episodes.tokenizer import decision_token_ids

    return decision_token_ids(ckpt.tokenizer) is not None
