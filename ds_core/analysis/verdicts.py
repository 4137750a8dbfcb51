"""Verdicts across checkpoints over a test set: the episodes one checkpoint sampled (an evaluation
run, from the results store) are teacher-forced through every compared model, and each model's
verdict is read at every decision point of every episode.

At a decision point (the [STOP]/[RESAMPLE] token after attempt k) a model's verdict probability is
q = p(STOP) / (p(STOP) + p(RESAMPLE)) given the transcript so far, its verdict STOP when q >= 1/2.
Per model: p(STOP | wrong attempt) = the mean q over the decision points after a wrong attempt,
p(RESAMPLE | correct attempt) = the mean 1 - q after a correct one, with 95% intervals by a
bootstrap over episodes (the decision points of one episode are resampled together); and how often
its verdict differs from the one the source model wrote, by attempt outcome, with Wilson intervals.
Needs checkpoints with [STOP]/[RESAMPLE] tokens and one vocabulary. The per-decision rows are
stored as a blob keyed by the source runs' digests and every model's content hash.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ds_core.analysis.metrics import wilson_interval as _wilson
from ds_core.errors import UserError

VERSION = 1
KIND = "verdict_comparison"
ROW_COLUMNS = ("size", "episode", "attempt", "attempt_correct", "written", "model", "q_stop", "verdict")
N_BOOT = 1000


class VerdictError(UserError, ValueError):
    pass


def decision_points(episodes: Sequence, size: str) -> list[dict]:
    """One dict per decision of every episode: its size, episode index, attempt number (from 1),
    whether that attempt is correct, the verdict written, and the decision token's position."""
    out = []
    for i, ep in enumerate(episodes):
        for d in ep.decisions:
            out.append(
                {
                    "size": size,
                    "episode": i,
                    "attempt": d.index + 1,
                    "attempt_correct": bool(ep.attempts[d.index].correct),
                    "written": d.verdict,
                    "pos": d.start,
                }
            )
    return out


def _check_models(models: Mapping[str, object]) -> None:
    from ds_core.episodes.tokenizer import decision_token_ids

    vocab = None
    for label, ck in models.items():
        if not decision_token_ids(ck.tokenizer):
            raise VerdictError(
                f"{label} has no [STOP]/[RESAMPLE] tokens: the test-set comparison reads the probability of "
                "those tokens, so it needs checkpoints in DS-Lens' format"
            )
        v = ck.tokenizer.get_vocab()
        if vocab is not None and v != vocab:
            raise VerdictError(f"{label}'s vocabulary differs from the others: one transcript cannot be scored by both")
        vocab = v


def compare_verdicts(
    source_label: str,
    models: Mapping[str, object],
    sizes: Sequence[str],
    *,
    n: int,
    seed: int,
    cfg,
    store,
    progress: Callable[[float, str], None] | None = None,
) -> pd.DataFrame:
    """The per-decision rows (ROW_COLUMNS) for the source model `models[source_label]`'s evaluation
    run at each size (sampled and stored when the store lacks it) teacher-forced through every model
    in `models` (label -> Checkpoint). Served from the store when computed before."""
    from ds_core.analysis.evaluate import evaluate
    from ds_core.episodes.tasks import TaskSpec
    from ds_core.models.teacher_forcing import score

    if store is None:
        raise VerdictError("the test-set comparison is kept in the results store, which is unavailable")
    if source_label not in models:
        raise VerdictError(f"the source {source_label!r} is not among the compared models")
    _check_models(models)
    src = models[source_label]
    specs = [TaskSpec.parse(s) for s in sizes]
    if progress:
        progress(0.0, f"sampling {source_label}'s episodes")
    res = evaluate(src, specs, n=n, cfg=cfg, seed=seed, store=store)
    runs = [(sr.spec, sr.key.digest()) for sr in res.sizes]
    key = {"version": VERSION, "runs": runs, "models": {lab: ck.hash for lab, ck in models.items()}}
    hit = store.get_blob(KIND, key)
    if hit is not None:
        return pd.DataFrame(hit["rows"], columns=list(ROW_COLUMNS))
    rows = []
    for j, (size, digest) in enumerate(runs):
        eps = store.load_episodes(digest)
        points = decision_points(eps, size)
        for m, (label, ck) in enumerate(models.items()):
            if progress:
                progress((j * len(models) + m) / (len(runs) * len(models)), f"teacher-forcing {size} through {label}")
            scores = score(ck, [ep.token_ids for ep in eps])
            for p in points:
                s = scores[p["episode"]]
                ps, pr = s.p_stop[p["pos"]], s.p_resample[p["pos"]]
                q = ps / (ps + pr) if ps + pr > 0 else float("nan")
                rows.append(
                    {
                        **{k: p[k] for k in ("size", "episode", "attempt", "attempt_correct", "written")},
                        "model": label,
                        "q_stop": float(q),
                        "verdict": "STOP" if q >= 0.5 else "RESAMPLE",
                    }
                )
    store.put_blob(KIND, key, {"rows": rows})
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


def _boot_mean(values: np.ndarray, groups: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of `values`, resampling whole groups (episodes)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    keys = np.unique(groups)
    by = [values[groups == k] for k in keys]
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(N_BOOT):
        pick = rng.integers(0, len(by), len(by))
        v = np.concatenate([by[i] for i in pick])
        means.append(v.mean())
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def verdict_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: p(STOP | wrong attempt) and p(RESAMPLE | correct attempt) (mean verdict
    probabilities, bootstrap over episodes), with the decision points counted."""
    out = []
    for model, g in rows.groupby("model", sort=False):
        row = {"model": model}
        for name, correct, value in (
            ("p(STOP | wrong attempt)", False, lambda d: d["q_stop"]),
            ("p(RESAMPLE | correct attempt)", True, lambda d: 1 - d["q_stop"]),
        ):
            d = g[(g["attempt_correct"] == correct) & g["q_stop"].notna()]
            v = value(d).to_numpy(dtype=float)
            groups = (d["size"].astype(str) + "#" + d["episode"].astype(str)).to_numpy()
            lo, hi = _boot_mean(v, groups)
            row[name] = float(v.mean()) if len(v) else float("nan")
            row[f"{name} lo"], row[f"{name} hi"] = lo, hi
            row[f"n {'correct' if correct else 'wrong'}"] = len(v)
        out.append(row)
    return pd.DataFrame(out)


def disagreement(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and attempt outcome: how often its verdict differs from the written one (the source
    model's), with Wilson intervals, and what it would say instead."""
    out = []
    for (model, correct), g in rows.groupby(["model", "attempt_correct"], sort=False):
        differ = g["verdict"] != g["written"]
        k, n = int(differ.sum()), len(g)
        lo, hi = _wilson(k, n)
        out.append(
            {
                "model": model,
                "attempt": "correct" if correct else "wrong",
                "decision points": n,
                "differs from written": k,
                "rate": k / n if n else math.nan,
                "lo": lo,
                "hi": hi,
                "would STOP where written RESAMPLE": int(((g["verdict"] == "STOP") & differ).sum()),
                "would RESAMPLE where written STOP": int(((g["verdict"] == "RESAMPLE") & differ).sum()),
            }
        )
    return pd.DataFrame(out)
