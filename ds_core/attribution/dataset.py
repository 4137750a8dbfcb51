"""Attribution at dataset level, cached in the results store.

Design notes: docs/DESIGN.md, section `ds_core.attribution.dataset`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ds_core.attribution.cache import cached_with_source, objective_needs
from ds_core.attribution.reference import resolve_ref
from ds_core.attribution.result import AttributionResult
from ds_core.episodes.episode import OUTCOMES, Episode, transition
from ds_core.episodes.tasks import task_size
from ds_core.objectives import DEFAULT_OBJECTIVES, needs_ref, parse_objectives

FRAME_COLUMNS = (
    "size",
    "episode",
    "problem",
    "outcome",
    "correct",
    "n_attempts",
    "objective",
    "advantage",
    "ratio_SD",
    "ratio_SD_per_token",
    "cos_SD",
    "share_D",
    "share_S",
    "share_O",
    "norm_G_S",
    "norm_G_D",
    "n_sampling",
    "n_decision",
    "n_other",
    "cached",
)
SUMMARY_METRICS = ("ratio_SD", "share_D")
SUMMARY_STATS = ("median", "q1", "q3", "iqr", "mean")
ALL = "all"


# ------------------------------------------------------------------------------- episodes
def outcome_of(episode) -> str:
    """The episode's stratum from its first attempt: correct_kept, wrong_revised, wrong_kept,
    correct_changed, or 'undecided' (no attempt, or no decision after the first one)."""
    atts = sorted(episode.attempts, key=lambda a: a.index)
    if not atts:
        return "undecided"
    verdict = episode.verdict_after(atts[0].index)
    return transition(atts[0].correct, verdict)


def size_of(episode) -> str:
    p = getattr(episode, "problem", None)
    return "?" if p is None else p.size


def has_decision(episode) -> bool:
    return any(r == "decision" for i, r in enumerate(episode.roles) if i > 0)


def _load(source, store) -> tuple[str | None, list[Episode]]:
    """(size label or None, episodes) of a list of episodes, a RunKey or a run digest."""
    from ds_core.store import RunKey

    if isinstance(source, (RunKey, str)):
        if store is None:
            raise ValueError("reading a stored run needs store=")
        rec = store.get_run(source)
        if rec is None:
            name = source.task_spec if isinstance(source, RunKey) else source[:12]
            raise ValueError(f"no stored run {name} in {store.path}; evaluate the checkpoint first")
        return task_size(rec.key.task_spec), store.load_episodes(rec.digest)
    eps = list(source)
    bad = [type(e).__name__ for e in eps if not isinstance(e, Episode)]
    if bad:
        raise TypeError(f"expected Episodes, got {bad[0]}")
    return None, eps


def _episodes(episodes, store) -> list[tuple[str, int, Episode]]:
    """(size, index within its source, episode) for every episode of every source."""
    sources = episodes.items() if isinstance(episodes, Mapping) else [(None, episodes)]
    out = []
    for label, src in sources:
        size, eps = _load(src, store)
        for i, ep in enumerate(eps):
            out.append((str(label) if label is not None else size or size_of(ep), i, ep))
    return out


# ------------------------------------------------------------------------------- dataset level
@dataclass
class DatasetAttribution:
    """frame: one row per (episode, objective) (FRAME_COLUMNS); summary: summarize(frame);
    objectives: those computed; skipped_objectives: name -> why; skipped: reason -> episodes;
    notes: human-readable lines (the reference used, what was skipped)."""

    frame: object
    summary: object
    objectives: tuple[str, ...]
    skipped_objectives: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    n_episodes: int = 0
    n_cached: int = 0
    n_computed: int = 0
    notes: list[str] = field(default_factory=list)
    model_hash: str | None = None
    ref_hash: str | None = None


def _row(size, idx, ep, objective, adv, res: AttributionResult, cached: bool) -> dict:
    f = res.figures
    p = ep.problem
    return {
        "size": size,
        "episode": idx,
        "problem": f"{p.a}{p.op}{p.b}" if p is not None else "",
        "outcome": outcome_of(ep),
        "correct": bool(ep.correct),
        "n_attempts": ep.n_attempts,
        "objective": objective,
        "advantage": adv if adv is not None else float("nan"),
        "ratio_SD": f.ratio_SD,
        "ratio_SD_per_token": f.ratio_SD_per_token,
        "cos_SD": f.cos_SD,
        "share_D": f.share_D,
        "share_S": f.share_S,
        "share_O": f.share_O,
        "norm_G_S": f.norm_G_S,
        "norm_G_D": f.norm_G_D,
        "n_sampling": f.n_S,
        "n_decision": f.n_D,
        "n_other": f.n_O,
        "cached": cached,
    }


def attribute_dataset(
    ckpt,
    episodes,
    objectives: str | Sequence[str] | None = DEFAULT_OBJECTIVES,
    *,
    store=None,
    ref=None,
    advantage: float | None = None,
    advantage_correct: float = 1.0,
    advantage_wrong: float = -1.0,
    clip_eps: float = 0.2,
    norms: bool = False,
    jvp_method: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    recompute: bool = False,
    parameters: str = "all",
    engine=None,
) -> DatasetAttribution:
    """Attribute every episode under every objective; return the per-episode frame and summary.

    `episodes`: a list of Episodes, a stored run (RunKey or digest, read from `store`), or a dict
    {size label: either of those}. Sizes come from the dict's keys, a run's task spec, or else
    each episode's problem. `store` also caches every result (cached_attribute). `parameters`:
    the parameter spec every attribution covers (ds_core.attribution.selection). `ref`: the KL
    reference (Checkpoint or directory; default the checkpoint's parent, see resolve_ref).
    `advantage`: one value for every episode, default +advantage_correct / advantage_wrong by the
    episode's final correctness. `progress(done, total)` counts (episode, objective) pairs,
    skipped ones included. `engine` (ds_core.engine): the attributions the store does not hold are
    computed there as work units (the same figures; each kept in the store as it arrives) before
    the frame is built. Choices are in the module docstring.
    """
    import pandas as pd

    objectives = parse_objectives(objectives)
    items = _episodes(episodes, store)
    notes: list[str] = []
    skipped_obj: dict[str, str] = {}
    ref_obj = None
    kl = [o for o in objectives if needs_ref(o)]
    if kl:
        ref_obj, note = resolve_ref(ckpt, ref)
        notes.append(note)
        if ref_obj is None:
            for o in kl:
                skipped_obj[o] = "no KL reference checkpoint"
            notes.append(f"skipped {', '.join(kl)}: no KL reference checkpoint")
    todo = [o for o in objectives if o not in skipped_obj]
    if "surrogate" in todo:
        notes.append(
            f"surrogate advantage: {advantage:+g} for every episode"
            if advantage is not None
            else f"surrogate advantage: {advantage_correct:+g} for a correct episode, "
            f"{advantage_wrong:+g} for a wrong one"
        )
    rows: list[dict] = []
    skipped = {"no_decision": 0}
    n_cached = n_computed = 0
    total, done = len(items) * len(objectives), 0
    if progress:
        progress(0, total)

    def settings(ep, o) -> dict:
        adv = (
            float(advantage)
            if advantage is not None
            else (float(advantage_correct) if ep.correct else float(advantage_wrong))
        )
        needs = objective_needs(o)
        kw = {"clip_eps": clip_eps, "norms": norms, "jvp_method": jvp_method, "parameters": parameters}
        if "advantages" in needs:
            kw["advantage"] = adv
        if "ref_logp" in needs:
            kw["ref_model"] = ref_obj
        return kw

    remote = _on_engine(ckpt, ref_obj, items, todo, settings, engine, store, recompute, progress)
    for n_item, (size, idx, ep) in enumerate(items):
        if not has_decision(ep):
            skipped["no_decision"] += 1
            done += len(objectives)
            if progress:
                progress(done, total)
            continue
        for o in objectives:
            if o in todo:
                kw = settings(ep, o)
                if (n_item, o) in remote:
                    res, hit = remote[(n_item, o)], False
                else:
                    res, hit = cached_with_source(ckpt, ep, o, store, recompute=recompute, **kw)
                n_cached += hit
                n_computed += not hit
                rows.append(_row(size, idx, ep, o, kw.get("advantage"), res, hit))
            done += 1
            if progress:
                progress(done, total)
    if skipped["no_decision"]:
        notes.append(
            f"skipped {skipped['no_decision']} of {len(items)} episodes without decision "
            "tokens (no sampling:decision split)"
        )
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    return DatasetAttribution(
        frame=frame,
        summary=summarize(frame),
        objectives=tuple(todo),
        skipped_objectives=skipped_obj,
        skipped=skipped,
        n_episodes=len(items),
        n_cached=n_cached,
        n_computed=n_computed,
        notes=notes,
        model_hash=getattr(ckpt, "hash", None),
        ref_hash=getattr(ref_obj, "hash", None),
    )


def _on_engine(ckpt, ref_obj, items, todo, settings, engine, store, recompute, progress) -> dict:
    """{(item index, objective): AttributionResult} for the pairs the store lacks, computed on `engine`."""
    if engine is None:
        return {}
    from ds_core.attribution.cache import CACHE_KIND, cache_key
    from ds_core.engine.jobs import attribute_pairs

    want = []
    for n_item, (_, _, ep) in enumerate(items):
        if not has_decision(ep):
            continue
        for o in todo:
            kw = settings(ep, o)
            if store is None or recompute or store.get_blob(CACHE_KIND, cache_key(ckpt, ep, o, **kw)) is None:
                want.append(((n_item, o), (ep, o, kw)))
    if not want:
        return {}
    # progress counts the engine's pairs first, then the whole frame (read back from the results)
    results = attribute_pairs(ckpt, ref_obj, [p for _, p in want], engine, store, progress=progress)
    return {k: r for (k, _), r in zip(want, results)}


# ------------------------------------------------------------------------------- summary
def _size_order(s: str):
    from ds_core.episodes.tasks import TaskError, TaskSpec

    if s == ALL:
        return (2, 0, 0, "")
    try:
        t = TaskSpec.parse(s)
        return (0, t.a_digits, t.b_digits, t.op)
    except TaskError:
        return (1, 0, 0, s)


def _stats(x) -> dict:
    import numpy as np

    v = np.asarray(x, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return {
            "median": float("nan"),
            "q1": float("nan"),
            "q3": float("nan"),
            "iqr": float("nan"),
            "mean": float("nan"),
        }
    q1, med, q3 = (float(q) for q in np.quantile(v, [0.25, 0.5, 0.75]))
    return {"median": med, "q1": q1, "q3": q3, "iqr": q3 - q1, "mean": float(v.mean())}


def summarize(frame):
    """Distribution of ratio_SD and share_D per objective x size x outcome, with 'all' margins
    over sizes and outcomes: columns objective, size, outcome, n, and for each metric its median,
    q1, q3 (the quartiles), iqr = q3 - q1, mean (NaNs left out)."""
    import pandas as pd

    cols = ["objective", "size", "outcome", "n"] + [f"{m}_{s}" for m in SUMMARY_METRICS for s in SUMMARY_STATS]
    rows = []
    if len(frame):
        objectives = list(dict.fromkeys(frame["objective"]))
        sizes = sorted(set(frame["size"]), key=_size_order) + [ALL]
        outcomes = [o for o in OUTCOMES if o in set(frame["outcome"])] + [ALL]
        for o in objectives:
            fo = frame[frame["objective"] == o]
            for s in sizes:
                fs = fo if s == ALL else fo[fo["size"] == s]
                for c in outcomes:
                    fc = fs if c == ALL else fs[fs["outcome"] == c]
                    if not len(fc):
                        continue
                    row = {"objective": o, "size": s, "outcome": c, "n": int(len(fc))}
                    for m in SUMMARY_METRICS:
                        row.update({f"{m}_{k}": v for k, v in _stats(fc[m]).items()})
                    rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _num(x: float, w: int = 7) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{w}}"
    return f"{x:>{w}.3g}" if abs(x) < 1e4 else f"{x:>{w}.2e}"


def format_summary(summary) -> str:
    """A text table of summarize(...): per row n, then median [q1, q3] and mean of each metric."""
    head = (
        f"{'objective':<10} {'size':>5} {'outcome':<15} {'n':>4}  "
        f"{'ratio |G_S|/|G_D|: median [q1, q3] mean':<40}  {'share_D: median [q1, q3] mean':<36}"
    )
    lines = [head, "-" * len(head)]
    if not len(summary):
        lines.append("(no attributed episodes)")
    for r in summary.itertuples(index=False):
        d = r._asdict()
        cells = []
        for m, w in (("ratio_SD", 40), ("share_D", 36)):
            txt = (
                f"{_num(d[f'{m}_median'])} [{_num(d[f'{m}_q1']).strip()}, "
                f"{_num(d[f'{m}_q3']).strip()}] {_num(d[f'{m}_mean']).strip()}"
            )
            cells.append(f"{txt:<{w}}")
        lines.append(f"{d['objective']:<10} {d['size']:>5} {d['outcome']:<15} {d['n']:>4}  {cells[0]}  {cells[1]}")
    return "\n".join(lines)
