"""The GRPO group view (Theorem 3.1 at the level it is stated): sample a group of episodes of one
prompt, attribute each objective's gradient over the whole group (ds_core.attribution.group_gradient:
every episode weighted by its own advantage, both signs), and read from the numbers whether the
surrogate's split differs from SFT's on this group.

Used by the Episode explorer (the group is the explorer's episode plus the fresh rollouts its GRPO
advantage was computed from, so the A shown there is this group's) and the Gradient balance page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ds_core.errors import UserError
from ds_core.models.locks import MODEL_LOCK
from ds_core.objectives import LABELS, OBJECTIVES, needs_ref
from ui.services.episodes import verdicts_text

GROUP_OBJECTIVES = ("surrogate", "sft_sum", "kl_k3", "kl_k1")
MAX_GROUP = 64
SAME = 2.0  # ratios within this factor of each other read as "about the same"


class GroupViewError(UserError, ValueError):
    pass


def sample_group(ckpt, problem, cfg, n: int, seed: int, first=None) -> list:
    """`n` fresh rollouts of `problem` (streams of seed `seed`, ds_core.models.rollout), after
    `first` (an episode already sampled, e.g. the explorer's) when given."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_GROUP:
        raise GroupViewError(f"the group size must be in 1..{MAX_GROUP}, got {n!r}")
    from ds_core.models.rollout import rollout

    with MODEL_LOCK:
        fresh = rollout(ckpt.model, ckpt.tokenizer, ckpt.format, [problem] * n, cfg, seed=int(seed))
    return ([first] if first is not None else []) + list(fresh)


@dataclass(frozen=True)
class GroupView:
    """Each objective's GroupAttribution over one group; `skipped`: objective -> why not computed."""

    episodes: tuple
    results: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    @property
    def advantages(self) -> tuple[float, ...]:
        """The episodes' GRPO advantages: those the attributions used, else computed from the rewards."""
        for r in self.results.values():
            return tuple(r.advantages)
        from ds_core.objectives.terms import group_advantages

        return tuple(group_advantages([[float(e.correct) for e in self.episodes]])[0].tolist())


def attribute_group_objectives(
    ckpt, episodes, objectives=GROUP_OBJECTIVES, *, ref=None, parameters: str = "all", progress=None
) -> GroupView:
    """Every objective's gradient over the group (a KL objective needs `ref`, a Checkpoint).
    `progress(done, total, objective)` counts episodes over all objectives."""
    from ds_core.attribution.engine import AttributionError
    from ds_core.attribution.group_gradient import attribute_group

    episodes = tuple(episodes)
    if not episodes:
        raise GroupViewError("the group is empty")
    results, skipped = {}, {}
    todo = [o for o in objectives if o in OBJECTIVES]
    for j, o in enumerate(todo):
        if needs_ref(o) and ref is None:
            skipped[o] = "no KL reference checkpoint"
            continue

        def tick(done, total, _j=j, _o=o):
            if progress:
                progress(_j + done / max(total, 1), len(todo), _o)

        try:
            with MODEL_LOCK:
                results[o] = attribute_group(
                    ckpt, episodes, o, ref_model=ref if needs_ref(o) else None, parameters=parameters, progress=tick
                )
        except AttributionError as e:
            skipped[o] = str(e)
    return GroupView(episodes, results, skipped)


def group_figures_frame(view: GroupView) -> pd.DataFrame:
    """One row per objective: the group gradient's S/D/O figures (blank where it is zero)."""
    rows = []
    for o, r in view.results.items():
        f = r.figures
        row = {"objective": LABELS[o], "|G|": f.norm_G if f else 0.0}
        if f is not None:
            row.update(
                {
                    "|G_S|": f.norm_G_S,
                    "|G_D|": f.norm_G_D,
                    "|G_S|/|G_D|": f.ratio_SD,
                    "per-token ratio": f.ratio_SD_per_token,
                    "cos(G_S, G_D)": f.cos_SD,
                    "share S": f.share_S,
                    "share D": f.share_D,
                    "share O": f.share_O,
                }
            )
        row["seconds"] = r.seconds
        row["note"] = r.note
        rows.append(row)
    return pd.DataFrame(rows)


def group_episodes_frame(view: GroupView, tokenizer=None) -> pd.DataFrame:
    """One row per episode (numbered from 1): outcome, advantage, and per objective its
    contributions to the group's gradient from its sampling and decision tokens."""
    rows = []
    adv = view.advantages  # once: the property computes the group's advantages
    for i, ep in enumerate(view.episodes):
        row = {
            "episode": i + 1,
            "correct": bool(ep.correct),
            "verdicts": verdicts_text(ep, " "),
            "attempts": ep.n_attempts,
            "tokens": len(ep.token_ids) - ep.prompt_len,
            "A": adv[i],
        }
        for o, r in view.results.items():
            c = r.contributions[i]
            row[f"{OBJECTIVES[o].short}: S"] = c[0]
            row[f"{OBJECTIVES[o].short}: D"] = c[1]
        rows.append(row)
    return pd.DataFrame(rows)


def _ratio(view, o):
    r = view.results.get(o)
    return None if r is None or r.figures is None else r.figures.ratio_SD


def reading(view: GroupView) -> list[str]:
    """What the numbers of this group say about the surrogate's balance, in sentences (no claim of
    the paper's is repeated unless these numbers show it)."""
    out = []
    rewards = [float(e.correct) for e in view.episodes]
    surr, sft = view.results.get("surrogate"), view.results.get("sft_sum")
    if surr is None or surr.figures is None:
        k = int(sum(rewards))
        out.append(
            f"Every episode of this group has the same reward ({k} of {len(rewards)} correct), so every "
            "advantage is 0 and the surrogate's gradient on this group is 0: here the balance **cannot "
            "appear**. A larger group, a harder problem or a higher temperature mixes outcomes."
        )
    else:
        ident = _identity_holds(surr, sft)
        if ident is not None:
            out.append(
                "On each episode alone the surrogate's gradient is −A × SFT's (every token carries the same "
                f"A): its per-episode |G_S|/|G_D| equals SFT's on {ident} of "
                f"{sum(1 for a in surr.advantages if a != 0)} episodes with A ≠ 0 (Theorem 3.1's weighting, "
                "checked). Any difference comes from adding episodes of opposite sign."
            )
        rs, rf = surr.figures.ratio_SD, _ratio(view, "sft_sum")
        if rf is not None and math.isfinite(rs) and math.isfinite(rf) and rs > 0 and rf > 0:
            if rs * SAME < rf:
                verdict = (
                    f"smaller than SFT's {rf:.3g}: summing over the group moves the gradient toward the "
                    "decision tokens (what is shared by right and wrong attempts cancels), the balance "
                    "**appears** on this group"
                )
            elif rs > rf * SAME:
                verdict = f"larger than SFT's {rf:.3g}: on this group the surrogate is *less* decision-heavy than SFT"
            else:
                verdict = (
                    f"within {SAME:g}× of SFT's {rf:.3g}: on this group the surrogate's split is **not "
                    "different** from SFT's"
                )
            out.append(f"Group surrogate |G_S|/|G_D| = {rs:.3g}, {verdict}.")
        for o in ("kl_k3", "kl_k1"):
            rk = _ratio(view, o)
            if rk is not None and math.isfinite(rk) and math.isfinite(rs) and rs > 0:
                out.append(f"{LABELS[o]}: |G_S|/|G_D| = {rk:.3g} ({rk / rs:.3g}× the surrogate's).")
    return out


def _identity_holds(surr, sft) -> int | None:
    if sft is None:
        return None
    n = 0
    for a, ns, nf in zip(surr.advantages, surr.norms, sft.norms):
        if a == 0:
            continue
        if all(
            (math.isnan(x) and math.isnan(y)) or math.isclose(x, abs(a) * y, rel_tol=1e-4, abs_tol=1e-12)
            for x, y in zip(ns, nf)
        ):
            n += 1
    return n
