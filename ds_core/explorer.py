"""The episode explorer's service: one episode, its gradient attribution, its decisions.

Everything the page `pages/1_Episode_explorer.py` shows comes from here as Episodes, frozen
dataclasses or DataFrames; nothing here imports Streamlit.

    problem = pick_problem("test set", size="3x4", index=0)           # ds_core.tasks
    ep = run_episode(ckpt, problem, sampling_config(1.0, 1.0, 4), seed=0)
    atts = attribute_objectives(ckpt, ep, OBJECTIVE_NAMES, advantage=1.0, ref=ref_ckpt, store=store)
    figures_frame(atts); groups_frame(atts); token_table(ep, atts)
    inp = decision_input_attribution(ckpt, ep, position, method="ig")      # ds_core.input_attribution
    cf = counterfactual(ckpt, ep, decision_index=0, cfg=cfg, seed=0)      # the opposite verdict, rolled on

Choices (documented for the page):
- the GRPO group of the surrogate's advantage is `n` fresh rollouts of the episode's problem with
  the episode's own sampling settings, drawn from seed GROUP_SEED_OFFSET + seed (so the group never
  replays the episode itself), plus the episode (ds_core.attribution.grpo_advantage);
- gradient attribution runs with norms=False (the per-token |grad l_t| costs ~2 s per objective on
  one CPU thread against ~0.1 s without); norms are computed only for the objectives asked for;
- a counterfactual keeps the transcript up to the chosen decision token, puts the opposite verdict
  token there and rolls on with the same sampling settings and seed. A forced [STOP] ends the
  episode there (as a sampled [STOP] does in ds_core.rollout). A forced [RESAMPLE] after the last
  allowed attempt raises the retry cap by one, so the model does get the extra attempt.
- model calls are serialised by one lock: attribution switches the model's attention mode and
  the loaded checkpoints are shared by every browser session.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .episode import RESAMPLE, STOP, Episode
from .explorer_decisions import (MODEL_LOCK as _LOCK, Counterfactual, ExplorerError, comparison_frame,
                                 counterfactual, decision_input_attribution, input_frames)
from .tasks import Problem

# torch, transformers and captum are imported inside the functions that run a model, so the page
# draws its controls (the cold start) without them.

__all__ = ["ExplorerError", "Attributions", "Counterfactual", "sampling_key",
           "sampling_config", "warm_up", "run_episode", "episode_frame", "attempts_frame",
           "episode_summary", "decision_choices", "reference_for", "group_advantage",
           "attribute_objectives", "skipped_lines", "figures_frame", "groups_frame", "token_table",
           "shading_scale", "view_frame", "has_decision_tokens", "decision_input_attribution",
           "input_frames", "counterfactual", "comparison_frame", "STOP", "RESAMPLE"]

OBJECTIVE_NAMES = ("surrogate", "kl_k1", "kl_k3", "sft_sum", "sft_mean", "dft")
OBJECTIVE_LABELS = {"surrogate": "surrogate", "kl_k1": "KL k1", "kl_k3": "KL k3",
                    "sft_sum": "SFT sum", "sft_mean": "SFT mean", "dft": "DFT"}
# view label -> per-token column of AttributionResult.to_pandas()
VIEWS = {"share": "share", "norm": "grad_norm", "alignment with G_D": "align_D",
         "alignment with G_S": "align_S"}
SIGNED_VIEWS = {"share": True, "norm": False, "alignment with G_D": True, "alignment with G_S": True}
PER_TOKEN = ("term", "share", "align_D", "align_S", "grad_norm")
FIGURE_COLUMNS = ("objective", "label", "n_S", "n_D", "n_O", "norm_G_S", "norm_G_D", "norm_G_O",
                  "ratio_SD", "ratio_SD_per_token", "cos_SD", "share_S", "share_D", "share_O")
GROUP_COLUMNS = ("objective", "group", "n_params", "norm_G_S", "norm_G_D", "ratio_SD",
                 "ratio_SD_per_token", "cos_SD", "share_S", "share_D", "share_O")
MAX_ATTEMPTS = 8          # the page's cap on the retry cap (longer episodes only grow the context)
MAX_GROUP = 64
GROUP_SEED_OFFSET = 1_000_000
# label -> ds_core.input_attribution method; the first is the page's default (cheap: one forward
# and backward; IG costs n_steps of them and, on these models, converges erratically, see the delta)
INPUT_METHODS = {"input x gradient": "input_x_gradient", "saliency": "saliency", "integrated gradients": "ig"}
IG_DELTA_WARN = 0.1       # warn when IG's |convergence delta| exceeds this share of f(x) - f(baseline)


def sampling_key(temperature, top_p, max_attempts) -> tuple[float, float, int]:
    """Validated sampling settings as a plain (temperature, top_p, max_attempts) tuple (a cache
    key); ExplorerError for values out of range. Cheap: no model code is imported."""
    try:
        t, p, m = float(temperature), float(top_p), int(max_attempts)
    except (TypeError, ValueError):
        raise ExplorerError(f"sampling settings must be numbers, got {temperature!r}, {top_p!r}, "
                            f"{max_attempts!r}") from None
    if not (math.isfinite(t) and 0 <= t <= 100):
        raise ExplorerError(f"temperature must be in [0, 100], got {temperature!r}")
    if not (math.isfinite(p) and 0 < p <= 1):
        raise ExplorerError(f"top-p must be in (0, 1], got {top_p!r}")
    if not 1 <= m <= MAX_ATTEMPTS:
        raise ExplorerError(f"max attempts must be in 1..{MAX_ATTEMPTS}, got {max_attempts!r}")
    return t, p, m


def sampling_config(temperature, top_p, max_attempts):
    """A ds_core.rollout.SamplingConfig from validated settings (sampling_key)."""
    from .rollout import SamplingConfig
    t, p, m = sampling_key(temperature, top_p, max_attempts)
    return SamplingConfig(temperature=t, top_p=p, max_attempts=m)


def warm_up() -> None:
    """Import the model code (torch, transformers, captum: several seconds on a cold process) so
    that a page can do it in a background thread while the user is still choosing settings."""
    from . import attribution, attribution_runs, input_attribution, rollout  # noqa: F401
    import captum.attr  # noqa: F401


# ------------------------------------------------------------------------------- episodes
def run_episode(ckpt, problem: Problem, cfg, seed: int = 0) -> Episode:
    """One episode of `problem` sampled from checkpoint `ckpt` with SamplingConfig `cfg`
    (ds_core.rollout, stream 0)."""
    from .rollout import rollout
    with _LOCK:
        return rollout(ckpt.model, ckpt.tokenizer, ckpt.format, [problem], cfg, seed=int(seed))[0]


def _attempt_of(segment: str) -> int:
    kind, _, k = segment.partition(":")
    return int(k) if kind in ("attempt", "decision") and k.isdigit() else -1


def episode_frame(ep: Episode) -> pd.DataFrame:
    """One row per token: pos, token, token_id, role, segment, attempt (-1 outside attempts)."""
    n = len(ep.token_ids)
    tokens = list(ep.tokens) if len(ep.tokens) == n else [str(t) for t in ep.token_ids]
    return pd.DataFrame({"pos": range(n), "token": tokens, "token_id": list(ep.token_ids),
                         "role": list(ep.roles), "segment": list(ep.segments),
                         "attempt": [_attempt_of(s) for s in ep.segments]})


def attempts_frame(ep: Episode) -> pd.DataFrame:
    """One row per attempt: its text, answer, whether it is correct, the model's own check, the
    verdict that follows it."""
    rows = [{"attempt": a.index + 1, "answer": a.answer, "correct": a.correct,
             "check agrees": a.check_ok, "verdict": ep.verdict_after(a.index) or "(none)",
             "malformed": a.malformed, "tokens": a.end - a.start, "text": a.text}
            for a in ep.attempts]
    return pd.DataFrame(rows, columns=["attempt", "answer", "correct", "check agrees", "verdict",
                                       "malformed", "tokens", "text"])


def episode_summary(ep: Episode) -> dict:
    p = ep.problem
    return {"problem": p.display if p else "", "answer": p.answer if p else None,
            "final answer": ep.final_answer, "correct": ep.correct, "attempts": ep.n_attempts,
            "decisions": " ".join(d.verdict for d in ep.decisions) or "(none)",
            "tokens": len(ep.token_ids) - ep.prompt_len, "flags": ", ".join(ep.flags) or "none"}


def decision_choices(ep: Episode) -> list[tuple[int, str]]:
    """(token position, label) of every decision token, in order."""
    out = []
    for d in ep.decisions:
        for pos in range(d.start, d.end):
            tok = ep.tokens[pos] if pos < len(ep.tokens) else d.verdict
            out.append((pos, f"after attempt {d.index + 1}: {tok} (token {pos})"))
    return out


# ------------------------------------------------------------------------------- attribution
def reference_for(ckpt) -> tuple[str | None, str]:
    """(directory of the checkpoint's KL reference = its card's parent, or None; a note why)."""
    from .attribution_runs import parent_checkpoint
    card = getattr(ckpt, "card", None)
    if card is None or not card.parent:
        return None, "this checkpoint's card names no parent, so it has no default KL reference"
    d = parent_checkpoint(ckpt)
    if d is None:
        return None, (f"this checkpoint's parent (hash {card.parent}) is not among the checkpoints "
                      "next to it")
    return str(d), f"KL reference: {d.name}, the checkpoint's parent (hash {card.parent})"


def group_advantage(ckpt, ep: Episode, cfg, n: int = 8, seed: int = 0) -> float:
    """The episode's GRPO group-relative advantage among `n` fresh rollouts of its problem (module
    docstring: seed GROUP_SEED_OFFSET + seed, the episode's sampling settings)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_GROUP:
        raise ExplorerError(f"the GRPO group size must be in 1..{MAX_GROUP}, got {n!r}")
    from .attribution import grpo_advantage
    with _LOCK:
        return grpo_advantage(ckpt.model, ckpt.tokenizer, ckpt.format, ep, n=n,
                              seed=GROUP_SEED_OFFSET + int(seed), cfg=cfg)


@dataclass(frozen=True)
class Attributions:
    """Attribution results of one episode per objective; `skipped` says why an objective is
    missing (no reference, a zero gradient, ...)."""
    results: dict = field(default_factory=dict)      # objective -> AttributionResult
    skipped: dict = field(default_factory=dict)      # objective -> reason
    advantage: float | None = None

    def get(self, objective: str):
        return self.results.get(objective)


def attribute_objectives(ckpt, ep: Episode, objectives=OBJECTIVE_NAMES, *, advantage: float | None,
                         ref=None, store=None, norms_for=(), progress=None) -> Attributions:
    """attribute() each objective on `ep` (served from `store` when it holds the result). The
    surrogate needs `advantage`, the KL terms `ref` (a Checkpoint); an objective whose input is
    missing or whose gradient is zero/non-finite lands in `skipped` with the reason instead of
    failing the others. `norms_for`: objectives that also get per-token gradient norms."""
    from .attribution import AttributionError, attribute
    from .attribution_runs import cached_attribute, needs_ref
    from .objectives import OBJECTIVES
    results, skipped = {}, {}
    objectives = list(objectives)
    for i, o in enumerate(objectives):
        if o not in OBJECTIVES:
            raise ExplorerError(f"unknown objective {o!r}; valid: {', '.join(OBJECTIVES)}")
        kw = {"norms": o in norms_for}
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
            with _LOCK:
                results[o] = (cached_attribute(ckpt, ep, o, store, **kw) if store is not None
                              else attribute(ckpt, ep, o, **kw))
        except AttributionError as e:
            skipped[o] = str(e)
        if progress:
            progress(i + 1, len(objectives))
    return Attributions(results, skipped, None if advantage is None else float(advantage))


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
        rows.append({"objective": o, "label": OBJECTIVE_LABELS.get(o, o), "n_S": f.n_S, "n_D": f.n_D,
                     "n_O": f.n_O, "norm_G_S": f.norm_G_S, "norm_G_D": f.norm_G_D,
                     "norm_G_O": f.norm_G_O, "ratio_SD": f.ratio_SD,
                     "ratio_SD_per_token": f.ratio_SD_per_token, "cos_SD": f.cos_SD,
                     "share_S": f.share_S, "share_D": f.share_D, "share_O": f.share_O})
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


SHADING = {"largest value": None, "95th percentile": 95.0}   # label -> percentile of |value|


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
    from .tokenizer import decision_token_ids
    return decision_token_ids(ckpt.tokenizer) is not None
