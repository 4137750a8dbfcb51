"""Decision regret: the accuracy a checkpoint's own verdicts reach against the accuracy of the
Q-optimal verdicts on the same attempts, with the continuations those verdicts lead to resampled.

The Q-optimal verdict is the one with the larger value (ds_core.analysis.decisions). Q(STOP) is 0 or 1
(stopping keeps the attempt's answer), so it is always: STOP after a correct attempt (nothing beats
1), RESAMPLE after a wrong one below the retry cap (nothing is worse than 0); where Q(RESAMPLE) is
exactly 0 or 1 the two tie and either choice has the same value. The policy that takes the optimal
verdict everywhere is therefore the correctness oracle: stop iff the attempt is right.

Per episode, its own attempts are walked with the optimal verdicts (`departure`):
- attempt i correct: the optimal episode ends here, correct. If the model revised it, that is
  where the two part ("correct revised"); optimal = 1.
- attempt i wrong and the model revised it: the optimal verdict agrees; on to its own attempt i+1.
- attempt i wrong and the model kept it ("wrong kept"): the optimal verdict revises, and what
  follows was never sampled: `n` continuations of the transcript + [RESAMPLE] in which every later
  verdict is the optimal one too (`optimal_continuations`: sample until the next verdict, write the
  oracle's, go on); optimal = the share ending correct (Wilson interval).
- attempt i wrong at the retry cap, or no verdict after it (the generation ended): nothing to
  replace; optimal = own.
own = the episode's outcome (1 correct, 0 not). regret = optimal - own >= 0 and it is either all wrong
kept or all correct revised, so regret = wrong kept + correct revised exactly. *Cannot succeed*: the
wrong kept episodes where no optimal continuation is correct (the sampling policy's limit, not the
decision's). Intervals: a bootstrap over episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from ds_core.analysis.metrics import wilson_interval as wilson

WRONG_KEPT, CORRECT_REVISED, NONE = "wrong kept", "correct revised", "none"
COLUMNS = (
    "episode",
    "own",
    "departure",
    "attempt",
    "k",
    "n",
    "optimal",
    "optimal_lo",
    "optimal_hi",
    "regret",
    "wrong_kept",
    "correct_revised",
    "cannot_succeed",
)


def departure(episode, max_attempts: int) -> tuple[str, int | None]:
    """(WRONG_KEPT | CORRECT_REVISED | NONE, the 0-based attempt where the episode's own verdict
    first differs from the optimal one; None for NONE)."""
    verdicts = {d.index: d for d in episode.decisions}
    for a in episode.attempts:
        d = verdicts.get(a.index)
        if d is None or a.index + 1 >= max_attempts:  # nothing to replace / a revision keeps this answer
            return NONE, None
        if a.correct:
            return (CORRECT_REVISED, a.index) if d.verdict == "RESAMPLE" else (NONE, None)
        if d.verdict == "STOP":
            return WRONG_KEPT, a.index
    return NONE, None


def optimal_continuations(
    ckpt,
    prefixes: Sequence,
    cfg,
    *,
    seed: int,
    streams: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> list[bool]:
    """Whether each prefix (a transcript ending in [RESAMPLE]) ends correct when every later verdict
    is the optimal one: sample until the model's next verdict, then keep a correct attempt, revise a
    wrong one below the retry cap. Round r of a row (after r written revisions) draws from the stream
    "<stream>:<r>" with a fresh token budget, as if each round were its own rollout call of the
    transcript so far; all rounds run in one call (`rollout(verdict=...)`), no prefill repeated.
    `progress(done, total)`: the rows whose continuation has ended, of all of them."""
    from ds_core.analysis.decisions import COMPACT_AT, CONTINUATION_BATCH, verdict_ids
    from ds_core.models.rollout import rollout

    ids = verdict_ids(ckpt)
    rcfg = replace(cfg, batch_size=min(cfg.batch_size, CONTINUATION_BATCH))
    ended: dict[int, bool] = {}
    rounds = [0] * len(prefixes)

    def oracle(i: int, tokens: list[int]):
        p = prefixes[i]
        ep = ckpt.format.parse(p.problem, tokens, p.prompt_len, ckpt.tokenizer, max_attempts=cfg.max_attempts)
        # the verdict just sampled, and the attempt it judges (a verdict the parser does not read as
        # one, or one after no attempt, ends the row: the episode's own outcome)
        d = next((x for x in ep.decisions if x.start == len(tokens) - 1), None)
        last = ep.attempts[d.index] if d is not None and d.index < len(ep.attempts) else None
        if last is None:
            ended[i] = bool(ep.correct)
            return tokens[-1], None
        if last.correct or last.index + 1 >= cfg.max_attempts:
            ended[i] = bool(last.correct)
            return (ids["STOP"] if last.correct else tokens[-1]), None
        rounds[i] += 1
        return ids["RESAMPLE"], f"{streams[i]}:{rounds[i]}"

    done = [0]

    def rows_done(k: int):
        done[0] += k
        progress(done[0], len(prefixes))

    eps = rollout(
        ckpt.model,
        ckpt.tokenizer,
        ckpt.format,
        list(prefixes),
        rcfg,
        seed=seed,
        streams=[f"{s}:0" for s in streams],
        compact_at=COMPACT_AT,
        verdict=oracle,
        progress=rows_done if progress else None,
    )
    # rows that ended without a verdict (end of turn, budget): their episode's outcome
    return [ended[i] if i in ended else bool(ep.correct) for i, ep in enumerate(eps)]


def optimal_requests(episodes: Sequence, cfg, ckpt, *, n: int, streams: Sequence[str]) -> tuple[list, list, list]:
    """(episode index, prefixes, stream names) of the optimal continuations the wrong kept episodes need."""
    from ds_core.analysis.decisions import revision_prefix, verdict_ids

    verdict_ids(ckpt)  # the regret needs verdict tokens
    which, prefixes, names = [], [], []
    for e, ep in enumerate(episodes):
        kind, i = departure(ep, cfg.max_attempts)
        if kind != WRONG_KEPT:
            continue
        d = next(x for x in ep.decisions if x.index == i)
        p = revision_prefix(ckpt, ep, d)
        for j in range(n):
            which.append(e)
            prefixes.append(p)
            names.append(f"opt:{streams[e]}:{i + 1}:{j}")
    return which, prefixes, names


def optimal_counts(episodes: Sequence, cfg, ckpt, *, n: int, seed: int, streams: Sequence[str], progress=None) -> list:
    """Per episode, how many of its `n` optimal continuations end correct (None: not wrong kept)."""
    which, prefixes, names = optimal_requests(episodes, cfg, ckpt, n=n, streams=streams)
    ok = optimal_continuations(ckpt, prefixes, cfg, seed=seed, streams=names, progress=progress) if prefixes else []
    counts: list[int | None] = [None] * len(episodes)
    for e, good in zip(which, ok):
        counts[e] = (counts[e] or 0) + int(good)
    return counts


def episode_regret(episodes: Sequence, counts: Sequence, cfg, n: int) -> pd.DataFrame:
    """One row (COLUMNS) per episode: own, the departure, the optimal value (from `counts`, the
    optimal continuations' successes of the wrong kept episodes) and the regret split."""
    rows = []
    for e, (ep, k) in enumerate(zip(episodes, counts)):
        kind, i = departure(ep, cfg.max_attempts)
        own = float(ep.correct)
        m, kk = (n, int(k or 0)) if kind == WRONG_KEPT else (0, 0)
        if kind == WRONG_KEPT:
            opt = kk / n
            lo, hi = wilson(kk, n)
        else:
            opt = lo = hi = 1.0 if kind == CORRECT_REVISED else own
        regret = opt - own
        rows.append(
            {
                "episode": e,
                "own": own,
                "departure": kind,
                "attempt": None if i is None else i + 1,
                "k": kk,
                "n": m,
                "optimal": opt,
                "optimal_lo": float(lo),
                "optimal_hi": float(hi),
                "regret": regret,
                "wrong_kept": regret if kind == WRONG_KEPT else 0.0,
                "correct_revised": regret if kind == CORRECT_REVISED else 0.0,
                "cannot_succeed": kind == WRONG_KEPT and kk == 0,
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def bootstrap(x: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def regret_summary(per_episode: pd.DataFrame, size: str = "") -> dict:
    """Means over episodes with bootstrap 95% intervals: own and optimal accuracy, regret and its parts
    (wrong kept + correct revised = regret), the shares of wrong kept and correct revised episodes,
    and the share of episodes kept wrong that no optimal continuation saves."""
    out: dict = {"size": size, "episodes": int(len(per_episode))}
    for name in ("own", "optimal", "regret", "wrong_kept", "correct_revised"):
        x = per_episode[name].to_numpy(dtype=float) if len(per_episode) else np.array([])
        out[name] = float(x.mean()) if len(x) else float("nan")
        out[f"{name}_lo"], out[f"{name}_hi"] = bootstrap(x)
    for name, kind in (("n_wrong_kept", WRONG_KEPT), ("n_correct_revised", CORRECT_REVISED)):
        out[name] = int((per_episode["departure"] == kind).sum()) if len(per_episode) else 0
    cs = per_episode["cannot_succeed"].to_numpy(dtype=float) if len(per_episode) else np.array([])
    out["cannot_succeed"] = float(cs.mean()) if len(cs) else float("nan")
    return out


KIND = "decision_regret"
VERSION = 2  # 2: a round's verdict is one after its prefix (1 re-continued rows that ended their turn right after it)


def regret_run(
    ckpt,
    sizes: Sequence[str],
    *,
    n_problems: int,
    n: int | None = None,
    seed: int = 0,
    cfg=None,
    store=None,
    progress: Callable[[str, int, int], None] | None = None,
    engine=None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(decision values of every size, episode_regret rows of every size, one regret_summary row per
    size) for `ckpt`'s evaluation runs (ds_core.analysis.evaluate: the episodes the Calibration page
    shows). Each size's Q-values and optimal continuation counts are kept in `store` (blobs keyed by
    the run's digest, n, the seed and the version) and read back from it. `engine`
    (ds_core.engine): what the store lacks is computed there as work units (the same numbers; an
    interrupted job resumes from the units already stored)."""
    from ds_core.analysis import decisions as dv
    from ds_core.analysis.evaluate import episodes_without_store, evaluate
    from ds_core.episodes.tasks import TaskSpec
    from ds_core.models.sampling import SamplingConfig

    cfg = cfg or SamplingConfig()
    n = dv.DEFAULT_N if n is None else n
    dv.verdict_ids(ckpt)
    all_values, all_eps, rows = [], [], []
    for size in sizes:
        spec = TaskSpec.parse(size)
        res = evaluate(ckpt, [spec], n=n_problems, cfg=cfg, seed=seed, store=store, engine=engine)
        sr = res.sizes[0]
        vkey = {"version": dv.VERSION, "run": sr.key.digest(), "n": n, "seed": seed}
        ckey = {"version": VERSION, "run": sr.key.digest(), "n": n, "seed": seed}
        vhit = store.get_blob(dv.KIND, vkey) if store is not None else None
        chit = store.get_blob(KIND, ckey) if store is not None else None
        episodes = (
            store.load_episodes(sr.key)
            if store is not None
            else episodes_without_store(ckpt, spec, n_problems, cfg, seed)
        )
        units: list = []
        if vhit is not None and chit is not None:
            values, counts = pd.DataFrame(vhit["rows"], columns=list(dv.COLUMNS)), chit["counts"]
        else:
            streams = [f"{sr.key.task_spec}:{i}" for i in range(len(episodes))]
            tick = (lambda d, t, _s=spec.name: progress(_s, d, t)) if progress else None
            if engine is not None:
                from ds_core.engine.jobs import decision_values as on_engine

                values, counts, units = on_engine(
                    ckpt, episodes, cfg, n=n, seed=seed, streams=streams, engine=engine, store=store, progress=tick
                )
            else:
                values = dv.decision_values(ckpt, episodes, cfg, n=n, seed=seed, streams=streams, progress=tick)
                counts = optimal_counts(episodes, cfg, ckpt, n=n, seed=seed, streams=streams, progress=tick)
        per = episode_regret(episodes, counts, cfg, n)
        if store is not None and (vhit is None or chit is None):
            store.put_blob(dv.KIND, vkey, {"rows": values.to_dict("records")})
            # the summary too: the Calibration page reads it without loading the episodes
            store.put_blob(KIND, ckey, {"counts": list(counts), "summary": regret_summary(per, spec.name)})
            if units:
                from ds_core.engine.jobs import forget_units

                forget_units(store, units)
        values.insert(0, "size", spec.name)
        per.insert(0, "size", spec.name)
        all_values.append(values)
        all_eps.append(per)
        rows.append(regret_summary(per, spec.name))

    def cat(frames):
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    return cat(all_values), cat(all_eps), pd.DataFrame(rows)


SHIPPED_FILE = "decisions_v1.json"  # package data: the shipped checkpoints' `decisions --json` documents


def shipped_documents() -> dict[str, dict]:
    """{checkpoint name: its `python -m ds_core decisions --json` document} shipped with the package
    (ds_core/data/decisions_v1.json): the Q-values ("rows"), the regret per episode ("regret") and
    per size ("summary"), with the checkpoint's content hash and the settings they were computed with."""
    from ds_core.paths import PACKAGE_DATA
    from ds_core.store import jsonread

    path = PACKAGE_DATA / SHIPPED_FILE
    docs = jsonread.read(path, expect=dict).get("checkpoints", {}) if path.is_file() else {}
    # a document of another version of the computation is left out (its cells then read "missing")
    return {name: doc for name, doc in docs.items() if doc.get("regret_version", 1) == VERSION}


def ship_document(doc: dict, checkpoint_dir, path=None) -> str:
    """Put a `decisions --json` document into the shipped file (default: the package's), under the
    checkpoint's path relative to checkpoints/ (its name elsewhere); returns that name."""
    import json
    from pathlib import Path

    from ds_core.paths import PACKAGE_DATA, SHIPPED_DIR

    path = Path(path) if path is not None else PACKAGE_DATA / SHIPPED_FILE
    try:
        name = Path(checkpoint_dir).resolve().relative_to(SHIPPED_DIR.resolve()).as_posix()
    except ValueError:
        name = str(doc.get("checkpoint"))
    data = json.loads(path.read_text()) if path.is_file() else {"version": 1, "checkpoints": {}}
    data.setdefault("checkpoints", {})[name] = doc
    path.write_text(json.dumps(data) + "\n")
    return name
