"""Compare checkpoints' gradient attribution on the same transcript (delta attribution).

    ac = compare_attribution(ckpts, eps["rl"], "rl", "kl_k3", ref=sft_reflection)
    ac.figures    # per checkpoint: |G_S|, |G_D|, ratio, cosine, shares
    ac.tokens     # per (position, checkpoint): share s_t and its difference from the transcript's model

Choices (documented): the surrogate's advantage defaults to +1 for a transcript whose final
answer is correct and -1 otherwise (as ds_core.attribution.dataset does); KL objectives take one
reference checkpoint shared by all models; share difference = s_t(model) - s_t(transcript's model).
The checkpoints and the reference must share a tokenizer vocabulary (CompareError otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from ds_core.attribution.result import FIGURE_FIELDS
from ds_core.episodes.episode import Episode
from ui.services.compare import CompareError, check_shared_vocab
from ui.services.episodes import episode_frame

FIGURE_COLUMNS = FIGURE_FIELDS  # ds_core.attribution.result


# ------------------------------------------------------------------------------- attribution
def default_advantage(episode: Episode) -> float:
    """+1 for a transcript whose final answer is correct, -1 otherwise (the outcome reward's sign)."""
    return 1.0 if episode.correct else -1.0


@dataclass(frozen=True, eq=False)
class AttributionComparison:
    """One objective's attribution on one transcript under every model."""

    source: str
    objective: str
    labels: tuple[str, ...]
    figures: pd.DataFrame  # checkpoint, FIGURE_COLUMNS..., error
    tokens: pd.DataFrame  # pos, token, role, segment, checkpoint, term, share, share_diff, align_D, align_S
    errors: dict
    advantage: float | None = None
    ref: str | None = None

    def pair(self, other: str) -> pd.DataFrame:
        """One row per token: pos, token, role, segment, share_transcript_model (the source's),
        share_compared_model (`other`'s), share_diff (= the second - the first)."""
        t = self.tokens
        a = t[t["checkpoint"] == self.source].reset_index(drop=True)
        b = t[t["checkpoint"] == other].reset_index(drop=True)
        if not len(b):
            raise KeyError(f"no attribution for {other!r}")
        if not len(a):
            a = b.assign(share=float("nan"))
        return pd.DataFrame(
            {
                "pos": b["pos"],
                "token": b["token"],
                "role": b["role"],
                "segment": b["segment"],
                "share_transcript_model": a["share"],
                "share_compared_model": b["share"],
                "share_diff": b["share_diff"],
            }
        )


def attribution_comparison(
    episode: Episode,
    source: str,
    objective: str,
    results: Mapping[str, object],
    *,
    advantage: float | None = None,
    ref: str | None = None,
) -> AttributionComparison:
    """Frames from per-model results: `results[label]` is an AttributionResult or an error message
    (str) for a model whose attribution could not be computed."""
    labels = tuple(results)
    ef = episode_frame(episode)
    src = results.get(source)
    src_share = pd.Series(src.share, dtype=float) if not isinstance(src, str) and src is not None else None
    frows, tframes, errors = [], [], {}
    for label in labels:
        r = results[label]
        if isinstance(r, str):
            errors[label] = r
            frows.append({"checkpoint": label, **{c: float("nan") for c in FIGURE_COLUMNS}, "error": r})
            continue
        fg = r.figures
        frows.append({"checkpoint": label, **fg.row(), "error": ""})
        f = ef[["pos", "token", "role", "segment"]].copy()
        f["checkpoint"] = label
        f["term"] = list(r.term)
        f["share"] = list(r.share)
        share = pd.Series(r.share, dtype=float)
        f["share_diff"] = share - src_share if src_share is not None else float("nan")
        f["align_D"] = list(r.align_D)
        f["align_S"] = list(r.align_S)
        tframes.append(f)
    figures = pd.DataFrame(frows, columns=["checkpoint", *FIGURE_COLUMNS, "error"])
    for c in ("n_S", "n_D", "n_O"):
        figures[c] = figures[c].astype("Int64")
    cols = ["pos", "token", "role", "segment", "checkpoint", "term", "share", "share_diff", "align_D", "align_S"]
    tokens = pd.concat(tframes, ignore_index=True) if tframes else pd.DataFrame(columns=cols)
    return AttributionComparison(source, objective, labels, figures, tokens[cols], errors, advantage, ref)


def attribute_one(
    ckpt, episode: Episode, objective: str, store=None, *, advantage: float | None = None, ref=None
) -> tuple[object | None, str | None]:
    """(AttributionResult, None), or (None, the reason it cannot be computed): `objective` on
    `episode` under one checkpoint, norms off, cached in `store` when given."""
    from ds_core.attribution.cache import cached_attribute
    from ds_core.attribution.engine import AttributionError

    kw: dict = {"norms": False}
    if advantage is not None:
        kw["advantage"] = advantage
    if ref is not None:
        kw["ref_model"] = ref
    try:
        return cached_attribute(ckpt, episode, objective, store, **kw), None
    except AttributionError as e:
        return None, str(e)


def compare_attribution(
    ckpts: Mapping[str, object],
    episode: Episode,
    source: str,
    objective: str,
    *,
    advantage: float | None = None,
    ref=None,
    ref_label: str | None = None,
    store=None,
    progress: Callable[[int, int, str], None] | None = None,
) -> AttributionComparison:
    """attribute(objective) on `episode` under every checkpoint (norms=False; the results store,
    when given, caches each). A model whose attribution fails (a KL against itself has a zero
    gradient, say) gets its error message in `errors` and NaN figures; the rest still compute."""
    from ds_core.objectives import OBJECTIVES, needs_ref

    if objective not in OBJECTIVES:
        raise CompareError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    check_shared_vocab(ckpts)
    kw: dict = {"norms": False}
    adv = None
    if "advantages" in OBJECTIVES[objective].needs:
        adv = default_advantage(episode) if advantage is None else float(advantage)
        if not math.isfinite(adv):
            raise CompareError(f"the advantage must be a finite number, got {advantage!r}")
        kw["advantage"] = adv
    if needs_ref(objective):
        if ref is None:
            raise CompareError(f"objective {objective!r} needs a KL reference checkpoint")
        if ref.tokenizer.get_vocab() != next(iter(ckpts.values())).tokenizer.get_vocab():
            raise CompareError("the KL reference does not share the compared checkpoints' tokenizer vocabulary")
        kw["ref_model"] = ref
    results: dict[str, object] = {}
    for i, (label, ck) in enumerate(ckpts.items()):
        if progress:
            progress(i, len(ckpts), label)
        res, err = attribute_one(ck, episode, objective, store, advantage=kw.get("advantage"), ref=kw.get("ref_model"))
        results[label] = res if res is not None else err
    if progress:
        progress(len(ckpts), len(ckpts), "")
    return attribution_comparison(
        episode,
        source,
        objective,
        results,
        advantage=adv,
        ref=ref_label if ref is not None and "ref_model" in kw else None,
    )
