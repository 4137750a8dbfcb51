"""Batch jobs cut into work units, run on an engine (ds_core.engine.engines), results into the store.

The batch functions (ds_core.analysis.evaluate.evaluate, ds_core.attribution.dataset.attribute_dataset,
ds_core.analysis.regret.regret_run) take `engine=`; with one they hand their missing work to
these functions instead of computing it in-process, then go on exactly as before.

Same numbers: every episode draws from its own seeded stream named by its place in its run
("<task>:<i>"), every continuation from "q:<task>:<i>:<k>:<j>", every attribution is computed per
episode, so neither the number of workers nor the chunking changes a result (tests check
equality with the in-process path; attribution figures are bit-equal given the same torch thread
count per process, as float reductions are split by thread).

Resume: a finished unit's result is kept in the store at once (a blob of kind UNIT_KIND keyed by
the unit's digest: the checkpoint's content hash and the unit's whole payload, i.e. its problems,
streams, sampling settings and seed). A run is written (one transaction, ds_core.store) only when
all its units are in, and its unit blobs are then deleted; attributions go straight to the
attribution cache, keyed one by one. A job interrupted as a whole therefore leaves whole units
and whole runs only, and its rerun (with the same chunk sizes) computes just the units missing.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence

from ds_core.engine.engines import EngineError
from ds_core.engine.units import CheckpointRef, WorkUnit, format_settings

UNIT_KIND = "engine_unit"
SAMPLE_CHUNK = 50  # problems per sampling unit (bench/engine.py: smaller units batch worse)
ATTRIBUTE_CHUNK = 8  # episodes per attribution unit
DECISION_CHUNK = 16  # episodes per decision-value unit (teacher forcing scores batches of 16)


def _check_chunk(chunk: int) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= 100_000:
        raise EngineError(f"a chunk is 1..100000 items, got {chunk!r}")
    return chunk


_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {(hash, format): where}


def worker_where(ckpt, engine) -> dict:
    """{"placement", "format"} of `ckpt` on the engine's workers (asked once per engine): a GPU
    worker runs the model on its device, so the runs it samples are keyed by that placement."""
    fmt = format_settings(ckpt.format)
    seen = _PROBED.setdefault(engine, {})
    k = (ckpt.hash, json.dumps(fmt, sort_keys=True))
    if k not in seen:
        probe = WorkUnit("probe", CheckpointRef.of(ckpt), {"format": fmt}, size=0)
        where = next(iter(engine.map([probe])))[1]
        seen[k] = {"placement": where.get("placement"), "format": where.get("format")}
    return seen[k]


def _expect_where(ckpt, result: dict, unit: WorkUnit, engine) -> None:
    """Every worker must run the model where the job's keys say (device, dtype, format)."""
    want = worker_where(ckpt, engine)
    got = {k: result.get(k) for k in want}
    if got != want:
        raise EngineError(
            f"a worker ran {unit.checkpoint.path} with {got}, the job's runs are keyed for {want}: "
            "workers of one job must run the model on the same kind of device and precision"
        )


def _run(ckpt, units: list[WorkUnit], engine, store, progress, total: int, done: int, on_result) -> None:
    """Units not yet stored go to the engine; each result is stored as it arrives, then handed on."""
    pending = []
    for u in units:
        hit = store.get_blob(UNIT_KIND, {"unit": u.digest}) if store is not None else None
        if hit is not None:
            on_result(u, hit)
            done += u.size
        else:
            pending.append(u)
    if progress:
        progress(done, total)
    for u, result in engine.map(pending):
        _expect_where(ckpt, result, u, engine)
        if store is not None:
            store.put_blob(UNIT_KIND, {"unit": u.digest}, result)
        on_result(u, result)
        done += u.size
        if progress:
            progress(done, total)


def forget_units(store, units: Sequence[WorkUnit]) -> None:
    """Delete the unit blobs of a run now stored whole."""
    if store is not None:
        for u in units:
            store.delete_blob(UNIT_KIND, {"unit": u.digest})


# ------------------------------------------------------------------------------ sampling
def sample_units(ckpt, task: str, problems: Sequence, cfg, seed: int, chunk: int = SAMPLE_CHUNK) -> list[WorkUnit]:
    ref, fmt = CheckpointRef.of(ckpt), format_settings(ckpt.format)
    out = []
    for i0 in range(0, len(problems), _check_chunk(chunk)):
        part = problems[i0 : i0 + chunk]
        payload = {
            "task": task,
            "start": i0,
            "problems": [p.to_dict() for p in part],
            "streams": [f"{task}:{i0 + i}" for i in range(len(part))],
            "cfg": cfg.to_dict(),
            "seed": int(seed),
            "format": fmt,
        }
        out.append(WorkUnit("sample", ref, payload, size=len(part)))
    return out


def sample_runs(
    ckpt,
    runs: Sequence[tuple[str, Sequence]],
    cfg,
    seed: int,
    engine,
    store=None,
    chunk: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, list], dict[str, list[WorkUnit]]]:
    """({task: its episodes in problem order}, {task: its units}) for runs given as (task, problems):
    the same episodes as one in-process rollout with streams "<task>:<i>". `chunk`: problems per
    unit (default SAMPLE_CHUNK, read at call time)."""
    from ds_core.episodes.episode import Episode

    chunk = SAMPLE_CHUNK if chunk is None else chunk

    units = {task: sample_units(ckpt, task, problems, cfg, seed, chunk) for task, problems in runs}
    parts: dict[str, dict[int, list]] = {task: {} for task in units}

    def got(u: WorkUnit, result: dict) -> None:
        parts[u.payload["task"]][u.payload["start"]] = result["episodes"]

    flat = [u for us in units.values() for u in us]
    _run(ckpt, flat, engine, store, progress, sum(u.size for u in flat), 0, got)
    episodes = {task: [Episode.from_dict(d) for i0 in sorted(p) for d in p[i0]] for task, p in parts.items()}
    return episodes, units


# ------------------------------------------------------------------------------ attribution
def attribute_pairs(
    ckpt,
    ref,
    pairs: Sequence[tuple[object, str, dict]],
    engine,
    store=None,
    chunk: int = ATTRIBUTE_CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> list:
    """AttributionResults of (episode, objective, attribute() keywords) pairs, in order, each kept
    in the store's attribution cache as it arrives (its own key: ds_core.attribution.cache)."""
    from ds_core.attribution.cache import CACHE_KIND, cache_key
    from ds_core.attribution.result import AttributionResult

    ckref = CheckpointRef.of(ckpt)
    refref = CheckpointRef.of(ref).to_dict() if ref is not None else None
    fmt = format_settings(ckpt.format)
    units, index = [], {}
    for i0 in range(0, len(pairs), _check_chunk(chunk)):
        part = pairs[i0 : i0 + chunk]
        body = []
        for ep, objective, kw in part:  # the reference travels once, as the unit's "ref"
            plain = {k: v for k, v in kw.items() if k != "ref_model"}
            plain["ref"] = kw.get("ref_model") is not None
            body.append({"episode": ep.to_dict(), "objective": objective, "kw": plain})
        u = WorkUnit("attribute", ckref, {"pairs": body, "ref": refref, "format": fmt}, size=len(part))
        units.append(u)
        index[u.digest] = i0
    out: list = [None] * len(pairs)

    def got(u: WorkUnit, result: dict) -> None:
        i0 = index[u.digest]
        for j, d in enumerate(result["results"]):
            ep, objective, kw = pairs[i0 + j]
            res = AttributionResult.from_dict(d)
            if store is not None:
                store.put_blob(CACHE_KIND, cache_key(ckpt, ep, objective, **kw), res.to_dict())
            out[i0 + j] = res

    _run(ckpt, units, engine, None, progress, len(pairs), 0, got)  # resume: the cache itself
    return out


# ------------------------------------------------------------------------------ decision values
def decision_values(
    ckpt,
    episodes: Sequence,
    cfg,
    *,
    n: int,
    seed: int,
    streams: Sequence[str],
    engine,
    store=None,
    chunk: int = DECISION_CHUNK,
    progress: Callable[[int, int], None] | None = None,
):
    """(ds_core.analysis.decisions.decision_values of `episodes` (named `streams`), their
    ds_core.analysis.regret.optimal_counts, the units) through `engine`, `chunk` episodes a unit: the
    same rows, the `episode` column counted over all of them."""
    import pandas as pd

    from ds_core.analysis.decisions import COLUMNS

    ref, fmt = CheckpointRef.of(ckpt), format_settings(ckpt.format)
    units, starts = [], {}
    for i0 in range(0, len(episodes), _check_chunk(chunk)):
        part = episodes[i0 : i0 + chunk]
        payload = {
            "episodes": [e.to_dict() for e in part],
            "streams": [str(s) for s in streams[i0 : i0 + chunk]],
            "n": int(n),
            "seed": int(seed),
            "cfg": cfg.to_dict(),
            "format": fmt,
            "optimal": True,
        }
        u = WorkUnit("decisions", ref, payload, size=len(part))
        units.append(u)
        starts[u.digest] = i0
    parts: dict[int, list] = {}
    counts: dict[int, list] = {}

    def got(u: WorkUnit, result: dict) -> None:
        i0 = starts[u.digest]
        parts[i0] = [{**r, "episode": int(r["episode"]) + i0} for r in result["rows"]]
        counts[i0] = list(result["counts"])

    _run(ckpt, units, engine, store, progress, len(episodes), 0, got)
    rows = [r for i0 in sorted(parts) for r in parts[i0]]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame, [c for i0 in sorted(counts) for c in counts[i0]], units
