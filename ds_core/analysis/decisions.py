"""What each decision is worth: Monte-Carlo Q-values at every verdict of an episode, and the decision
regret of a checkpoint over a test set.

At decision k (the verdict after attempt k) of an episode sampled with SamplingConfig `cfg`:
- Q(STOP) = 1 if attempt k is correct, else 0 (stopping keeps its answer);
- Q(RESAMPLE) = P(the episode ends correct | [RESAMPLE] is written there and the model goes on),
  estimated by N continuations of the transcript up to the decision plus [RESAMPLE] (the same
  sampling settings, seeded streams "q:<stream>:<k>:<j>", all continuations of all decisions in
  batched, KV-cached rollout calls) with a Wilson 95% interval. At the retry cap a RESAMPLE ends
  the episode with attempt k's answer, so there Q(RESAMPLE) = Q(STOP) exactly (`at_cap`).
The model's own probability of STOP there is q = p([STOP]) / (p([STOP]) + p([RESAMPLE])) given the
transcript (teacher forcing). The optimal verdict is the one with the larger Q ("either" when they
are equal); its advantage is Q(chosen) - Q(other).

Decision regret over a test set (every verdict replaced by the optimal one): ds_core.analysis.regret.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pandas as pd

from ds_core.analysis.metrics import wilson_interval as wilson  # the project's Wilson interval
from ds_core.errors import UserError

VERSION = 1
KIND = "decision_values"
DEFAULT_N = 32
# rows per rollout batch for the continuations: rows are sorted by length, and at the default 256
# one batch pads every continuation to the longest prefix (measured on rl, 3x5, 176 continuations,
# one thread: 8.9 s at 256, 4.8 s at 64, 4.9 s at 32, 6.1 s at 16). Sampling does not depend on it.
CONTINUATION_BATCH = 256
COMPACT_AT = 0.25
COLUMNS = (
    "episode",
    "attempt",
    "attempt_correct",
    "chosen",
    "p_stop",
    "q_stop",
    "q_resample",
    "k",
    "n",
    "q_resample_lo",
    "q_resample_hi",
    "at_cap",
    "optimal",
    "advantage_chosen",
    "p_optimal",
)


class DecisionValueError(UserError, ValueError):
    pass


def verdict_ids(ckpt) -> dict:
    """The [STOP]/[RESAMPLE] token ids; a text model has none (the decision regret needs them)."""
    from ds_core.episodes.tokenizer import decision_token_ids

    ids = decision_token_ids(ckpt.tokenizer)
    if not ids:
        raise DecisionValueError(
            "this checkpoint writes no [STOP]/[RESAMPLE] tokens: the decision regret needs DS-Lens' format "
            "(for a text model the explorer estimates Q-values from a forced revision sentence)"
        )
    return ids


def revision_prefix(ckpt, ep, d):
    """The transcript up to decision `d` with a revision written there: [RESAMPLE], or for a text model
    a revision sentence its resample markers read as one (ds_core.episodes.forcing)."""
    from ds_core.episodes.forcing import ForcingError, revision_ids
    from ds_core.episodes.tokenizer import decision_token_ids
    from ds_core.models.sampling import Prefix

    ids = decision_token_ids(ckpt.tokenizer)
    if ids:
        return Prefix(ep.problem, tuple(ep.token_ids[: d.start]) + (ids["RESAMPLE"],), ep.prompt_len)
    try:
        toks, _ = revision_ids(ckpt, ep, d)
    except ForcingError as e:
        raise DecisionValueError(str(e)) from None
    return Prefix(ep.problem, tuple(toks), ep.prompt_len)


def decision_values(
    ckpt,
    episodes: Sequence,
    cfg,
    *,
    n: int = DEFAULT_N,
    seed: int = 0,
    streams: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """One row (COLUMNS) per decision of every episode: Q(STOP), Q(RESAMPLE) from `n` continuations
    with its Wilson interval, the model's p(STOP), the optimal verdict and the model's probability
    of it. `episodes` were sampled by `ckpt` with `cfg`; `streams` name them (default: their index).
    A text model (no decision tokens): the revision is a forced revision sentence and a stop ends the
    turn with the attempt's answer; its verdicts are sentences, so p(STOP) is not one token's
    probability and is left undefined (nan), as is p(optimal)."""
    from ds_core.episodes.tokenizer import decision_token_ids
    from ds_core.models.rollout import rollout
    from ds_core.models.teacher_forcing import score

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1024:
        raise DecisionValueError(f"the number of continuations must be in 1..1024, got {n!r}")
    tokens = bool(decision_token_ids(ckpt.tokenizer))
    streams = [str(i) for i in range(len(episodes))] if streams is None else [str(s) for s in streams]
    points, requests, names = [], [], []
    for e, ep in enumerate(episodes):
        for d in ep.decisions:
            k = d.index + 1
            at_cap = k >= cfg.max_attempts
            points.append((e, d, at_cap))
            if at_cap:
                continue
            prefix = revision_prefix(ckpt, ep, d)
            for j in range(n):
                requests.append(prefix)
                names.append(f"q:{streams[e]}:{k}:{j}")
    done = [0]

    def tick(m: int):
        done[0] += m
        if progress:
            progress(done[0], len(requests))

    conts = []
    rcfg = replace(cfg, batch_size=min(cfg.batch_size, CONTINUATION_BATCH))
    if requests:  # rollout takes the model lock per batch: other sessions are not held up for the whole run
        conts = rollout(
            ckpt.model,
            ckpt.tokenizer,
            ckpt.format,
            requests,
            rcfg,
            seed=seed,
            streams=names,
            progress=tick,
            compact_at=COMPACT_AT,
        )
    scores = score(ckpt, [ep.token_ids for ep in episodes]) if episodes and tokens else ()
    rows, c = [], 0
    for e, d, at_cap in points:
        ep = episodes[e]
        correct = bool(ep.attempts[d.index].correct)
        q_stop = 1.0 if correct else 0.0
        if at_cap:  # no continuation: a RESAMPLE here ends the episode with this attempt's answer
            k_ok, m, q_res = 0, 0, q_stop
            lo = hi = q_stop
        else:
            k_ok = sum(bool(x.correct) for x in conts[c : c + n])
            c += n
            m, q_res = n, k_ok / n
            lo, hi = wilson(k_ok, n)
        p_stop = float("nan")
        if tokens:
            ps, pr = scores[e].p_stop[d.start], scores[e].p_resample[d.start]
            p_stop = ps / (ps + pr) if ps + pr > 0 else float("nan")
        optimal = "STOP" if q_stop > q_res else ("RESAMPLE" if q_res > q_stop else "either")
        q_chosen, q_other = (q_stop, q_res) if d.verdict == "STOP" else (q_res, q_stop)
        p_opt = p_stop if optimal == "STOP" else (1 - p_stop if optimal == "RESAMPLE" else 1.0)
        rows.append(
            {
                "episode": e,
                "attempt": d.index + 1,
                "attempt_correct": correct,
                "chosen": d.verdict,
                "p_stop": float(p_stop),
                "q_stop": q_stop,
                "q_resample": float(q_res),
                "k": int(k_ok),
                "n": int(m),
                "q_resample_lo": float(lo),
                "q_resample_hi": float(hi),
                "at_cap": bool(at_cap),
                "optimal": optimal,
                "advantage_chosen": float(q_chosen - q_other),
                "p_optimal": float(p_opt),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def continuations(ckpt, episode, attempt: int, cfg, *, n: int = DEFAULT_N, seed: int = 0, stream: str = "0") -> list:
    """The `n` continuations behind Q(RESAMPLE) after attempt `attempt` (from 1) of `episode`: the same
    seeded streams and batching as decision_values (episode named `stream`), so they are exactly the
    episodes it counted. Empty at the retry cap (no continuation is rolled there)."""
    from ds_core.models.rollout import rollout

    d = next((x for x in episode.decisions if x.index + 1 == attempt), None)
    if d is None:
        raise DecisionValueError(f"the episode has no verdict after attempt {attempt}")
    if attempt >= cfg.max_attempts:
        return []
    prefix = revision_prefix(ckpt, episode, d)
    rcfg = replace(cfg, batch_size=min(cfg.batch_size, CONTINUATION_BATCH))
    names = [f"q:{stream}:{attempt}:{j}" for j in range(n)]
    return rollout(
        ckpt.model, ckpt.tokenizer, ckpt.format, [prefix] * n, rcfg, seed=seed, streams=names, compact_at=COMPACT_AT
    )
