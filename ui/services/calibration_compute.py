"""Calibration: sampling the cells a grid is missing (ds_core.analysis.evaluate), with progress.
The grid itself (what is stored, what eval.json answers, what is missing) is ui.services.calibration."""

from __future__ import annotations

from collections.abc import Callable

from ds_core.episodes.tasks import TaskSpec, task_size
from ds_core.store import ResultsStore, StoreError
from ui.services.calibration import Grid


def missing_episodes(grid: Grid) -> int:
    return len(grid.missing) * grid.settings.n


def measured_seconds(grid: Grid, store: ResultsStore | None) -> tuple[float | None, tuple[str, ...]]:
    """How long sampling the missing cells should take, from the wall time of the runs the store
    already holds for the same checkpoint (seconds per episode, the median over its runs of the same
    size, else over all its runs): (seconds, ()) or (None, the labels with no timed run)."""
    if store is None or not grid.missing:
        return (0.0 if not grid.missing else None), ()
    refs = {r.label: r for r in grid.refs}
    per_ckpt: dict[str, list] = {}
    untimed: list[str] = []
    total = 0.0
    for label, size in grid.missing:
        ref = refs[label]
        if ref.hash not in per_ckpt:
            try:
                per_ckpt[ref.hash] = [r for r in store.list_runs(ref.hash) if r.wall_s and r.n_episodes]
            except StoreError:
                per_ckpt[ref.hash] = []
        runs = per_ckpt[ref.hash]
        same = [r for r in runs if task_size(r.key.task_spec) == size] or runs
        if not same:
            if label not in untimed:
                untimed.append(label)
            continue
        rates = sorted(r.wall_s / r.n_episodes for r in same)
        total += rates[len(rates) // 2] * grid.settings.n
    return (None if untimed else total), tuple(untimed)


def compute_missing(
    grid: Grid,
    load: Callable[[str], object],
    store: ResultsStore,
    progress: Callable[[int, int, str], None] | None = None,
    n_boot: int = 100,
) -> frozenset[str]:
    """Sample every missing cell with ds_core.analysis.evaluate.evaluate and store it; returns the run
    digests written. `load(path)` gives a loaded checkpoint (the app's cached loader);
    `progress(done, total, label)` counts episodes over all checkpoints. With $DS_LENS_RAY_ADDRESS
    set the episodes are sampled on that Ray cluster (ds_core.engine.engines.app_engine)."""
    if store is None:
        raise StoreError("no results store: computed runs could not be kept")
    from ds_core.engine.engines import app_engine

    with app_engine() as engine:
        return _compute(grid, load, store, progress, n_boot, engine)


def _compute(grid, load, store, progress, n_boot, engine) -> frozenset[str]:
    from ds_core.analysis.evaluate import evaluate

    by_ckpt: dict[str, list[str]] = {}
    for label, size in grid.missing:
        by_ckpt.setdefault(label, []).append(size)
    refs = {r.label: r for r in grid.refs}
    total, offset = missing_episodes(grid), 0
    cfg = grid.settings.sampling_config()
    written: set[str] = set()
    n = grid.settings.n
    per_call = max(1, cfg.batch_size // n)  # sizes per evaluate call: about one rollout batch
    for label, sizes in by_ckpt.items():
        ckpt = load(refs[label].path)
        if refs[label].fmt_key is not None:
            from ds_core.episodes.text_format import with_text_settings

            ckpt = with_text_settings(ckpt, **dict(refs[label].fmt))
        # one evaluate call (and store write) per group of sizes: a run interrupted half-way
        # (the user changes a control, the server stops) keeps the groups already finished
        for g0 in range(0, len(sizes), per_call):
            specs = [TaskSpec.parse(s) for s in sizes[g0 : g0 + per_call]]

            def tick(done: int, _total: int, _off=offset, _label=label):
                if progress:
                    progress(_off + done, total, _label)

            res = evaluate(
                ckpt,
                specs,
                n=n,
                cfg=cfg,
                seed=grid.settings.seed,
                store=store,
                n_boot=n_boot,
                progress=tick,
                engine=engine,
            )
            written |= {s.key.digest() for s in res.sizes}
            offset += len(specs) * n
            if progress:
                progress(offset, total, label)
    return frozenset(written)
