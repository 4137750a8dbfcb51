"""The episode explorer's decision tools: input attribution of a decision token (captum, through
ds_core.attribution.inputs) and the counterfactual that forces the opposite verdict.

Imported through ui.services.explorer; see its docstring for the choices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from ds_core.attribution.input_methods import INPUT_METHODS
from ds_core.episodes.episode import RESAMPLE, STOP, Episode
from ds_core.episodes.forcing import ForcingError, revision_ids
from ds_core.episodes.forcing import end_of_turn_token as forced_end_of_turn
from ds_core.errors import UserError
from ds_core.models.locks import MODEL_LOCK  # every model call of the explorer runs under it
from ui.services.episodes import segment_label, verdicts_text

# model code (torch, transformers, captum) is imported inside the functions that need it


MAX_IG_STEPS = 256


class ExplorerError(UserError, ValueError):
    """A request the explorer cannot serve; the message says why and what to do instead."""


def _role_of_segment(segment: str) -> str:
    """The role of a segment as segment_label names it ('attempt 2', 'decision after attempt 1')."""
    kind = segment.split(" ")[0].partition(":")[0]
    return {"prompt": "prompt", "attempt": "sampling", "decision": "decision"}.get(kind, "other")


def _check_position(ep: Episode, position) -> int:
    if isinstance(position, bool) or not isinstance(position, int):
        raise ExplorerError(f"a decision token position must be an integer, got {position!r}")
    if not 0 < position < len(ep.token_ids) or ep.roles[position] != "decision":
        raise ExplorerError(
            f"token {position} is not a decision token of this episode; decision "
            f"tokens are at {ep.positions('decision') or 'no position'}"
        )
    return position


# ------------------------------------------------------------------------------- input attribution
def decision_input_attribution(
    ckpt, ep: Episode, position: int, method: str = "ig", target: str = "contrastive", n_steps: int = 32
):
    """Attribute the decision token at `position` to every earlier token. target 'contrastive':
    log p([STOP]) - log p([RESAMPLE]) there (needs the decision tokens); 'logprob': the log-prob
    of the token the model wrote. method: 'ig' | 'saliency' | 'input_x_gradient'. Returns a
    ds_core.attribution.inputs.InputAttributionResult."""
    from ds_core.attribution.inputs import input_attribution
    from ds_core.episodes.tokenizer import decision_token_ids

    position = _check_position(ep, position)
    if method not in INPUT_METHODS:
        raise ExplorerError(f"unknown method {method!r}; choose one of {', '.join(INPUT_METHODS)}")
    if target == "contrastive" and decision_token_ids(ckpt.tokenizer) is None:
        raise ExplorerError(
            "this checkpoint's tokenizer has no [STOP]/[RESAMPLE] tokens, so the "
            "contrastive target is undefined; use the log-prob target"
        )
    if method == "ig" and (
        isinstance(n_steps, bool) or not isinstance(n_steps, int) or not 1 <= n_steps <= MAX_IG_STEPS
    ):
        raise ExplorerError(f"IG steps must be in 1..{MAX_IG_STEPS}, got {n_steps!r}")
    with MODEL_LOCK:
        return input_attribution(
            ckpt.model, ckpt.tokenizer, ep, method=method, target=target, targets=[position], n_steps=int(n_steps)
        )


def input_frames(res, position: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per token: pos, token, role, segment, attribution of the target at `position`, 0 at and
    after it; per segment before the target: segment, role, attribution, |attribution| sums)."""
    row = res.row(position)
    n = res.n_tokens
    tokens = pd.DataFrame(
        {
            "pos": range(n),
            "token": list(res.tokens),
            "role": list(res.roles),
            "segment": [segment_label(x) for x in res.segments],
            "attribution": row,
        }
    )
    before = tokens[tokens["pos"] < position].copy()
    before["abs"] = before["attribution"].abs()
    segs = (
        before.groupby("segment", sort=False)
        .agg(attribution=("attribution", "sum"), abs_attribution=("abs", "sum"), tokens=("pos", "size"))
        .reset_index()
    )
    segs.insert(1, "role", [_role_of_segment(s) for s in segs["segment"]])
    return tokens, segs


# ------------------------------------------------------------------------------- counterfactual
@dataclass(frozen=True)
class Counterfactual:
    """The episode rolled on after forcing `forced` (the opposite verdict) at token `position`."""

    episode: Episode
    decision_index: int
    position: int
    original: str
    forced: str
    max_attempts: int
    note: str


def counterfactual(ckpt, ep: Episode, decision_index: int, cfg, seed: int = 0) -> Counterfactual:
    """Keep `ep` up to its decision number `decision_index` (0-based), put the opposite verdict
    there and let the model continue (ds_core.models.rollout with a Prefix, SamplingConfig `cfg`,
    same seed). With [STOP]/[RESAMPLE] tokens the verdict token is swapped; on a text model
    (lexical markers) a stop becomes a revision sentence and a revision becomes the end of the turn
    (_text_counterfactual)."""
    from ds_core.episodes.tokenizer import decision_token_ids
    from ds_core.models.model import context_length
    from ds_core.models.rollout import rollout
    from ds_core.models.sampling import Prefix

    if ep.problem is None:
        raise ExplorerError("the episode has no problem to continue")
    if (
        isinstance(decision_index, bool)
        or not isinstance(decision_index, int)
        or not 0 <= decision_index < len(ep.decisions)
    ):
        raise ExplorerError(
            f"decision {decision_index!r} does not exist; the episode has {len(ep.decisions)} decision(s)"
        )
    ids = decision_token_ids(ckpt.tokenizer)
    if ids is None:
        return _text_counterfactual(ckpt, ep, decision_index, ep.decisions[decision_index], cfg, seed)
    d = ep.decisions[decision_index]
    forced = RESAMPLE if d.verdict == STOP else STOP
    prefix = tuple(ep.token_ids[: d.start]) + (ids[forced],)
    if len(prefix) >= context_length(ckpt.model):
        raise ExplorerError(
            f"the transcript up to this decision ({len(prefix)} tokens) fills the model's context: nothing can follow"
        )
    fmt = ckpt.format
    if forced == STOP:
        cf = fmt.parse(ep.problem, list(prefix), ep.prompt_len, ckpt.tokenizer, max_attempts=cfg.max_attempts)
        return Counterfactual(
            cf,
            decision_index,
            d.start,
            d.verdict,
            forced,
            cfg.max_attempts,
            f"[STOP] forced after attempt {d.index + 1}: the episode ends there with that attempt's answer",
        )
    n_resample = sum(1 for t in prefix[ep.prompt_len :] if t == ids[RESAMPLE])
    attempts = max(cfg.max_attempts, n_resample + 1)
    cfg2 = replace(cfg, max_attempts=attempts)
    with MODEL_LOCK:
        cf = rollout(
            ckpt.model, ckpt.tokenizer, fmt, [Prefix(ep.problem, prefix, ep.prompt_len)], cfg2, seed=int(seed)
        )[0]
    note = f"[RESAMPLE] forced after attempt {d.index + 1}; the model wrote the rest (seed {seed})"
    if attempts > cfg.max_attempts:
        note += f"; the retry cap was raised from {cfg.max_attempts} to {attempts} for the extra attempt"
    return Counterfactual(cf, decision_index, d.start, d.verdict, forced, attempts, note)


def _revision_ids(ckpt, ep: Episode, d) -> tuple[list[int], str]:
    try:
        return revision_ids(ckpt, ep, d)
    except ForcingError as e:
        raise ExplorerError(str(e)) from None


def end_of_turn_token(ckpt) -> int:
    try:
        return forced_end_of_turn(ckpt)
    except ForcingError as e:
        raise ExplorerError(str(e)) from None


def _text_counterfactual(ckpt, ep: Episode, decision_index: int, d, cfg, seed: int) -> Counterfactual:
    """A text model's decisions are sentences, not tokens: 'force a revision' appends a revision
    sentence where the model stopped and lets it continue; 'force a stop' ends the turn (its
    end-of-turn token) where the model started to revise."""
    from ds_core.models.model import context_length
    from ds_core.models.rollout import rollout
    from ds_core.models.sampling import Prefix

    tok = ckpt.tokenizer
    if d.verdict == RESAMPLE:
        ids = list(ep.token_ids[: d.start]) + [end_of_turn_token(ckpt)]
        cf = ckpt.format.parse(ep.problem, ids, ep.prompt_len, tok, max_attempts=cfg.max_attempts)
        note = (
            f"stop forced after attempt {d.index + 1}: the turn ends ({tok.convert_ids_to_tokens(ids[-1])}) "
            "where the model began to revise, with that attempt's answer"
        )
        return Counterfactual(cf, decision_index, d.start, d.verdict, STOP, cfg.max_attempts, note)
    ids, sentence = _revision_ids(ckpt, ep, d)
    if len(ids) >= context_length(ckpt.model):
        raise ExplorerError(
            f"the transcript with the revision ({len(ids)} tokens) fills the model's context: nothing can follow"
        )
    attempts = max(cfg.max_attempts, len(ep.attempts) + 1)
    cfg2 = replace(cfg, max_attempts=attempts)
    with MODEL_LOCK:
        cf = rollout(
            ckpt.model, tok, ckpt.format, [Prefix(ep.problem, tuple(ids), ep.prompt_len)], cfg2, seed=int(seed)
        )[0]
    note = (
        f"revision forced after attempt {d.index + 1}: {sentence!r} was written there and the model went on "
        f"(seed {seed})"
    )
    return Counterfactual(cf, decision_index, d.start, d.verdict, RESAMPLE, attempts, note)


def comparison_frame(original: Episode, cf: Counterfactual) -> pd.DataFrame:
    """Side by side: what happened and what happens with the opposite verdict."""

    def row(ep: Episode) -> dict:
        return {
            "final answer": ep.final_answer,
            "correct": ep.correct,
            "attempts": ep.n_attempts,
            "decisions": verdicts_text(ep, " "),
            "generated tokens": len(ep.token_ids) - ep.prompt_len,
            "flags": ", ".join(ep.flags) or "none",
        }

    a, b = row(original), row(cf.episode)
    return pd.DataFrame(
        {"": list(a), "original": [str(v) for v in a.values()], "counterfactual": [str(v) for v in b.values()]}
    )
