"""The group view of Theorem 3.1: one objective's gradient over a GRPO group (several episodes of
one prompt, each weighted by its own advantage, both signs), split into sampling, decision and
other tokens, with each episode's contribution.

Theorem 3.1 is a statement about the expected surrogate gradient over sampled groups. On one
episode alone the on-policy surrogate's gradient is -A * (the SFT token-sum gradient): its
sampling:decision split is exactly SFT's whatever A is. Only the group sum, where episodes with
advantages of opposite signs add up, can split differently; this module computes that sum.

The group's gradient uses the training loss's reduction (ds_core.training.grpo: the token mean
over the batch): G = (1/N) sum_i sum_t grad l_{i,t}, N the group's generated tokens, so |G| is the
size of the gradient one GRPO step on this group would apply through this objective. G_S, G_D, G_O
sum the tokens of each role over every episode. Episode i's contribution of role k is
c_{i,k} = <G_{i,k}, G>/|G|^2 (they add to 1 over episodes and roles). Every figure is a float64
accumulation over the attributed parameters, as in ds_core.attribution.gradient.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ds_core.attribution.engine import COMPONENTS, AttributionError, Engine, autodiff_attention, unwrap_checkpoint
from ds_core.attribution.gradient import component_figures, component_grams
from ds_core.attribution.result import ComponentFigures
from ds_core.objectives.terms import group_advantages

KEEP_BUDGET = 1 << 30  # bytes of per-episode gradients kept between the two passes (else recomputed)
KEYS = tuple(k for k, _ in COMPONENTS)


@dataclass(frozen=True)
class GroupAttribution:
    """One objective's gradient over a group (module docstring). `figures` is None when the group's
    gradient is zero (`note` says why: e.g. every reward equal, so every advantage is 0).
    Per episode: `contributions` (c_S, c_D, c_O) and `norms` (|G_{i,S}|, |G_{i,D}|, |G_{i,O}|, on
    the group's 1/N scale, nan where the episode has no token of that role)."""

    objective: str
    advantages: tuple[float, ...]
    rewards: tuple[float, ...]
    figures: ComponentFigures | None
    contributions: tuple[tuple[float, float, float], ...]
    norms: tuple[tuple[float, float, float], ...]
    n_tokens: int
    seconds: float
    note: str = ""

    def __post_init__(self):
        n = len(self.rewards)
        if not (len(self.advantages) == len(self.contributions) == len(self.norms) == n) or n == 0:
            raise ValueError("a GroupAttribution needs one advantage, contribution and norm row per episode")
        if self.figures is None and not self.note:
            raise ValueError("a GroupAttribution without figures must say why (note)")


def _dot(a, b) -> float:
    return float(sum((x.reshape(-1).double() @ y.reshape(-1).double()) for x, y in zip(a, b)))


def _n_generated(episode) -> int:
    return sum(1 for i, r in enumerate(episode.roles) if i > 0 and r in ("sampling", "decision", "other"))


def attribute_group(
    model,
    episodes,
    objective: str,
    *,
    rewards=None,
    advantages=None,
    ref_model=None,
    clip_eps: float = 0.2,
    parameters: str = "all",
    tokenizer=None,
    ref_tokenizer=None,
    keep_budget: int = KEEP_BUDGET,
    progress=None,
) -> GroupAttribution:
    """`objective`'s gradient over the group `episodes` (module docstring). Rewards default to
    correctness (1/0) and advantages to GRPO's (R - mean)/std (ds_core.objectives.group_advantages);
    the surrogate weights each episode by its own. `ref_model` is needed by the KL objectives.
    `progress(done, total)` is called after each episode of each pass. Per-episode gradients are
    kept for the contributions when they fit in `keep_budget` bytes, else recomputed in a second
    pass (the same numbers, twice the time)."""
    t0 = time.perf_counter()
    episodes = list(episodes)
    if not episodes:
        raise AttributionError("a group needs at least one episode")
    model, _, tok = unwrap_checkpoint(model)
    tokenizer = tokenizer or tok
    if ref_model is not None:
        ref_model, _, rtok = unwrap_checkpoint(ref_model)
        ref_tokenizer = ref_tokenizer or rtok
    rewards = [float(ep.correct) for ep in episodes] if rewards is None else [float(r) for r in rewards]
    if advantages is None:
        advantages = group_advantages([rewards])[0].tolist()
    advantages = [float(a) for a in advantages]
    if not (len(rewards) == len(advantages) == len(episodes)):
        raise AttributionError("one reward and one advantage per episode of the group")
    if not all(math.isfinite(a) for a in advantages):
        raise AttributionError("the group's advantages must be finite")
    weighted = objective == "surrogate"
    N = sum(_n_generated(ep) for ep in episodes)
    n_of = {k: 0 for k in KEYS}
    for ep in episodes:
        for i, r in enumerate(ep.roles):
            for k, role in COMPONENTS:
                n_of[k] += i > 0 and r == role

    def engine(i):
        return Engine(
            model,
            episodes[i],
            objective,
            advantage=advantages[i],
            ref_model=ref_model,
            clip_eps=clip_eps,
            tokenizer=tokenizer,
            ref_tokenizer=ref_tokenizer,
            parameters=parameters,
            require_decision=False,
        )

    def episode_grads(eng) -> dict:
        leaves, l = eng.forward()
        return {k: eng.grads(l, leaves, eng.indicator(eng.positions[k])) for k in KEYS if eng.positions[k]}

    active = [i for i in range(len(episodes)) if not (weighted and advantages[i] == 0.0)]
    total_steps = len(active)
    with autodiff_attention(model):
        names = None
        G: dict = {}
        kept: dict[int, dict] = {}
        own_sq: dict[int, dict] = {}
        keep = None
        for step, i in enumerate(active):
            eng = engine(i)
            names = eng.names
            if keep is None:
                per_ep = 3 * sum(eng.primals[n].numel() * eng.primals[n].element_size() for n in names)
                keep = per_ep * len(active) <= keep_budget
                total_steps = len(active) * (1 if keep else 2)
            comp = episode_grads(eng)
            own_sq[i] = {k: _dot(v, v) for k, v in comp.items()}
            for k, v in comp.items():
                G[k] = v if k not in G else [a + b for a, b in zip(G[k], v)]
            if keep:
                kept[i] = comp
            del comp, eng
            if progress:
                progress(step + 1, total_steps)
        fig, note = None, ""
        if not G:
            note = (
                "every advantage is 0 (all rewards in the group are equal): the surrogate has no "
                "relative signal, its gradient on this group is 0"
            )
        else:
            gram = sum(component_grams(G, names).values()) / float(N * N)
            n_params = sum(p.numel() for p in G[next(iter(G))])
            fig = component_figures("group", gram, n_params, n_of["S"], n_of["D"], n_of["O"])
            if not fig.norm_G > 0:
                fig, note = None, "the group's gradient is exactly 0 (|G| = 0)"
        total = [sum(G[k][j] for k in G) for j in range(len(G[next(iter(G))]))] if G else []
        g2 = _dot(total, total) if G else 0.0
        contributions, norms = [], []
        for i in range(len(episodes)):
            if i not in own_sq:  # a zero advantage: no gradient at all
                contributions.append((0.0, 0.0, 0.0))
                norms.append((0.0, 0.0, 0.0))
                continue
            norms.append(tuple(math.sqrt(own_sq[i][k]) / N if k in own_sq[i] else float("nan") for k in KEYS))
            if fig is None:
                contributions.append((float("nan"),) * 3)
                continue
            comp = kept.pop(i) if keep else episode_grads(engine(i))
            contributions.append(tuple(_dot(comp[k], total) / g2 if k in comp else 0.0 for k in KEYS))
            del comp
            if progress and not keep:
                progress(len(active) + active.index(i) + 1, total_steps)
        del G, total, kept
    return GroupAttribution(
        objective=objective,
        advantages=tuple(advantages),
        rewards=tuple(rewards),
        figures=fig,
        contributions=tuple(contributions),
        norms=tuple(norms),
        n_tokens=int(N),
        seconds=time.perf_counter() - t0,
        note=note,
    )
