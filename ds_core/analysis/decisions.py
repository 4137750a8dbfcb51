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

Regret (`regret_summary`): per episode, at its first decision, the value of the verdict the model
chose and of the better one, both estimated the same way (so the comparison is not between an
estimate and one observed outcome): own = Q(chosen), optimal = max(Q(STOP), Q(RESAMPLE)), regret =
optimal - own >= 0 (a one-step policy improvement: the later decisions stay the model's own). The
regret splits exactly into *wrong kept* (STOP after a wrong attempt: regret Q(RESAMPLE)) and
*correct revised* (RESAMPLE after a correct one: regret 1 - Q(RESAMPLE)); wrong attempts where no
verdict can help (Q(RESAMPLE) = 0: the sampling policy's limit, not the decision's) are counted
apart. Intervals: a bootstrap over episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from ds_core.analysis.metrics import wilson_interval as wilson  # the project's Wilson interval
from ds_core.errors import UserError

VERSION = 1
KIND = "decision_values"
DEFAULT_N = 32
# rows per rollout batch for the continuations: rows are sorted by length, and at the default 256
# one batch pads every continuation to the longest prefix (measured on rl, 3x5, 176 continuations,
# one thread: 8.9 s at 256, 4.8 s at 64, 4.9 s at 32, 6.1 s at 16). Sampling does not depend on it.
CONTINUATION_BATCH = 64
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


def _verdict_ids(ckpt) -> dict:
    from ds_core.episodes.tokenizer import decision_token_ids

    ids = decision_token_ids(ckpt.tokenizer)
    if not ids:
        raise DecisionValueError(
            "this checkpoint writes no [STOP]/[RESAMPLE] tokens: Q-values by resampling need DS-Lens' format "
            "(for text models, the explorer's 'force a revision' counterfactual is the single-sample version)"
        )
    return ids


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
    of it. `episodes` were sampled by `ckpt` with `cfg`; `streams` name them (default: their index)."""
    from ds_core.models.rollout import rollout
    from ds_core.models.sampling import Prefix
    from ds_core.models.teacher_forcing import score

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1024:
        raise DecisionValueError(f"the number of continuations must be in 1..1024, got {n!r}")
    ids = _verdict_ids(ckpt)
    streams = [str(i) for i in range(len(episodes))] if streams is None else [str(s) for s in streams]
    points, requests, names = [], [], []
    for e, ep in enumerate(episodes):
        for d in ep.decisions:
            k = d.index + 1
            at_cap = k >= cfg.max_attempts
            points.append((e, d, at_cap))
            if at_cap:
                continue
            prefix = Prefix(ep.problem, tuple(ep.token_ids[: d.start]) + (ids["RESAMPLE"],), ep.prompt_len)
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
            ckpt.model, ckpt.tokenizer, ckpt.format, requests, rcfg, seed=seed, streams=names, progress=tick
        )
    scores = score(ckpt, [ep.token_ids for ep in episodes]) if episodes else ()
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
        s = scores[e]
        ps, pr = s.p_stop[d.start], s.p_resample[d.start]
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
    from ds_core.models.sampling import Prefix

    ids = _verdict_ids(ckpt)
    d = next((x for x in episode.decisions if x.index + 1 == attempt), None)
    if d is None:
        raise DecisionValueError(f"the episode has no verdict after attempt {attempt}")
    if attempt >= cfg.max_attempts:
        return []
    prefix = Prefix(episode.problem, tuple(episode.token_ids[: d.start]) + (ids["RESAMPLE"],), episode.prompt_len)
    rcfg = replace(cfg, batch_size=min(cfg.batch_size, CONTINUATION_BATCH))
    names = [f"q:{stream}:{attempt}:{j}" for j in range(n)]
    return rollout(ckpt.model, ckpt.tokenizer, ckpt.format, [prefix] * n, rcfg, seed=seed, streams=names)


def episode_regret(values: pd.DataFrame) -> pd.DataFrame:
    """Per episode with a decision (its first one): own = Q(chosen), optimal = max Q, regret and its
    cause (module docstring): 'wrong kept', 'correct revised', 'none', and whether the attempt was
    wrong with Q(RESAMPLE) = 0 ('cannot succeed')."""
    first = values.sort_values(["episode", "attempt"]).groupby("episode", sort=True).head(1)
    out = first[["episode", "attempt_correct", "chosen", "q_stop", "q_resample"]].copy()
    own = np.where(out["chosen"] == "STOP", out["q_stop"], out["q_resample"])
    best = np.maximum(out["q_stop"], out["q_resample"])
    out["own"], out["optimal"], out["regret"] = own, best, best - own
    out["wrong_kept"] = np.where(~out["attempt_correct"] & (out["chosen"] == "STOP"), out["regret"], 0.0)
    out["correct_revised"] = np.where(out["attempt_correct"] & (out["chosen"] == "RESAMPLE"), out["regret"], 0.0)
    out["cannot_succeed"] = ~out["attempt_correct"] & (out["q_resample"] == 0)
    return out.reset_index(drop=True)


def _boot(x: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def regret_summary(per_episode: pd.DataFrame, size: str = "") -> dict:
    """Means over episodes with bootstrap 95% intervals: own and optimal accuracy (estimated),
    regret, and its parts (wrong kept + correct revised = regret), the share of episodes whose
    first attempt is wrong and cannot be saved by any verdict."""
    out: dict = {"size": size, "episodes": int(len(per_episode))}
    for name in ("own", "optimal", "regret", "wrong_kept", "correct_revised"):
        x = per_episode[name].to_numpy(dtype=float) if len(per_episode) else np.array([])
        out[name] = float(x.mean()) if len(x) else float("nan")
        out[f"{name}_lo"], out[f"{name}_hi"] = _boot(x)
    cs = per_episode["cannot_succeed"].to_numpy(dtype=float) if len(per_episode) else np.array([])
    out["cannot_succeed"] = float(cs.mean()) if len(cs) else float("nan")
    return out


def regret_run(
    ckpt,
    sizes: Sequence[str],
    *,
    n_problems: int,
    n: int = DEFAULT_N,
    seed: int = 0,
    cfg=None,
    store=None,
    progress: Callable[[str, int, int], None] | None = None,
    engine=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(decision values of every size, one regret_summary row per size) for `ckpt`'s evaluation runs
    (ds_core.analysis.evaluate: the same episodes the Calibration page shows), each size's values
    kept in `store` (a blob keyed by the run's digest, n and the version) and read back from it.
    `engine` (ds_core.engine): the runs and the values the store lacks are computed there as work
    units (the same rows; an interrupted job resumes from the units already stored)."""
    from ds_core.analysis.evaluate import episodes_without_store, evaluate
    from ds_core.episodes.tasks import TaskSpec
    from ds_core.models.sampling import SamplingConfig

    cfg = cfg or SamplingConfig()
    _verdict_ids(ckpt)
    all_values, rows = [], []
    for size in sizes:
        spec = TaskSpec.parse(size)
        res = evaluate(ckpt, [spec], n=n_problems, cfg=cfg, seed=seed, store=store, engine=engine)
        sr = res.sizes[0]
        key = {"version": VERSION, "run": sr.key.digest(), "n": n, "seed": seed}
        hit = store.get_blob(KIND, key) if store is not None else None
        if hit is not None:
            values = pd.DataFrame(hit["rows"], columns=list(COLUMNS))
        else:
            episodes = (
                store.load_episodes(sr.key)
                if store is not None
                else episodes_without_store(ckpt, spec, n_problems, cfg, seed)
            )
            streams = [f"{sr.key.task_spec}:{i}" for i in range(len(episodes))]
            tick = (lambda d, t, _s=spec.name: progress(_s, d, t)) if progress else None
            units = []
            if engine is not None:
                from ds_core.engine.jobs import decision_values as on_engine

                values, units = on_engine(
                    ckpt, episodes, cfg, n=n, seed=seed, streams=streams, engine=engine, store=store, progress=tick
                )
            else:
                values = decision_values(ckpt, episodes, cfg, n=n, seed=seed, streams=streams, progress=tick)
            if store is not None:
                store.put_blob(KIND, key, {"rows": values.to_dict("records")})
                if units:
                    from ds_core.engine.jobs import forget_units

                    forget_units(store, units)
        values.insert(0, "size", spec.name)
        all_values.append(values)
        rows.append(regret_summary(episode_regret(values), spec.name))
    return pd.concat(all_values, ignore_index=True) if all_values else pd.DataFrame(), pd.DataFrame(rows)
