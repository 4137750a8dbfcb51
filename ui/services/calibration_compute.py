"""Calibration: sampling the cells a grid is missing (ds_core.analysis.evaluate), with progress.
The grid itself (what is stored, what eval.json answers, what is missing) is ui.services.calibration."""

from __future__ import annotations

from collections.abc import Callable

from ds_core.episodes.tasks import TaskSpec
from ds_core.store import ResultsStore, StoreError
from ui.services.calibration import Grid


def missing_episodes(grid: Grid) -> int:
    return len(grid.missing) * grid.settings.n


def compute_missing(
    grid: Grid,
    load: Callable[[str], object],
    store: ResultsStore,
    progress: Callable[[int, int, str], None] | None = None,
    n_boot: int = 100,
) -> frozenset[str]:
    """Sample every missing cell with ds_core.analysis.evaluate.evaluate and store it; returns the run
    digests written. `load(path)` gives a loaded checkpoint (the app's cached loader);
    `progress(done, total, label)` counts episodes over all checkpoints."""
    if store is None:
        raise StoreError("no results store: computed runs could not be kept")
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
                ckpt, specs, n=n, cfg=cfg, seed=grid.settings.seed, store=store, n_boot=n_boot, progress=tick
            )
            written |= {s.key.digest() for s in res.sizes}
            offset += len(specs) * n
            if progress:
                progress(offset, total, label)
    return frozenset(written)
