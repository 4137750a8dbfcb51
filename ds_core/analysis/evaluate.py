"""Evaluation runs: sample episodes for a grid of sizes, store them, compute Table-1 figures.

An evaluation of (checkpoint, size, sampling settings, seed, n) is computed once and stored in the
results store; every later call (the CLI, the app) reads it back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ds_core.analysis.metrics import CalibrationReport, calibration
from ds_core.episodes.episode import Episode
from ds_core.episodes.tasks import TEST_SET_VERSION, TaskSpec, sample_problems, task_name, test_set
from ds_core.models.rollout import rollout
from ds_core.models.sampling import SamplingConfig
from ds_core.store import ResultsStore, RunKey


def problems_for(spec: TaskSpec, n: int, seed: int):
    """The fixed test set when the size has one and n <= 100; else n seeded samples of the size."""
    task = task_name(spec, n, seed)
    if task.endswith(f"@test-v{TEST_SET_VERSION}"):
        return task, test_set(spec)[:n]
    return task, sample_problems(spec, n, seed=seed)


def episodes_without_store(ckpt, spec: TaskSpec, n: int, cfg, seed: int):
    """The episodes evaluate() samples for one size (the same problems and streams), without a store."""
    task, problems = problems_for(spec, n, seed)
    return rollout(
        ckpt.model,
        ckpt.tokenizer,
        ckpt.format,
        problems,
        cfg,
        seed=seed,
        streams=[f"{task}:{i}" for i in range(len(problems))],
    )


@dataclass(frozen=True)
class SizeResult:
    spec: str
    key: RunKey
    report: CalibrationReport
    from_store: bool
    wall_s: float | None

    def row(self) -> dict:
        r = self.report
        return {
            "size": self.spec,
            "n": r.n,
            "accuracy": r.accuracy.p,
            "wald_lo": r.accuracy.wald[0],
            "wald_hi": r.accuracy.wald[1],
            "wilson_lo": r.accuracy.wilson[0],
            "wilson_hi": r.accuracy.wilson[1],
            **{
                f"{name}{suffix}": v
                for name in ("p_s", "p_dC", "p_dW", "predicted")
                for suffix, v in (
                    ("", getattr(r, name).value),
                    ("_lo", getattr(r, name).ci[0]),
                    ("_hi", getattr(r, name).ci[1]),
                )
            },
            "mean_attempts": r.mean_attempts,
            "malformed": r.malformed_fraction,
            "from_store": self.from_store,
        }


@dataclass(frozen=True)
class EvalResult:
    checkpoint: str
    checkpoint_hash: str
    sampling: dict
    seed: int
    sizes: tuple[SizeResult, ...] = field(default_factory=tuple)

    def rows(self) -> list[dict]:
        return [s.row() for s in self.sizes]

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "checkpoint_hash": self.checkpoint_hash,
            "sampling": self.sampling,
            "seed": self.seed,
            "sizes": {s.spec: s.report.to_dict() for s in self.sizes},
        }


def format_key(fmt) -> dict | None:
    """The format's own settings when not its default (EpisodeFormat.key), else None."""
    key = getattr(fmt, "key", None)
    return key() if callable(key) else None


def run_key(
    ckpt_hash: str,
    task: str,
    n: int,
    cfg: SamplingConfig,
    seed: int,
    fmt_key: dict | None = None,
    placement: dict | None = None,
) -> RunKey:
    """The store key of a run. `fmt_key`: the episode format's settings when they differ from the
    checkpoint's default (a custom prompt samples different episodes); None keeps the plain key.
    `placement`: {"device", "dtype"} when the model does not run in float32 on the CPU (a GPU or
    half precision samples different episodes, so its runs are kept apart)."""
    extra = {}
    if fmt_key:
        extra["format"] = fmt_key
    if placement:
        extra["placement"] = placement
    return RunKey(ckpt_hash, task, cfg.key(), seed, n, extra)


def placement_key(model) -> dict | None:
    """{"device": type, "dtype": name} of a model's weights, or None for float32 on the CPU."""
    from ds_core.models.device import placement

    p = next(model.parameters())
    return placement(p.device.type, p.dtype)


def evaluate(
    ckpt,
    sizes: list[TaskSpec],
    n: int = 100,
    cfg: SamplingConfig | None = None,
    seed: int = 0,
    store: ResultsStore | None = None,
    n_boot: int = 100,
    progress: Callable[[int, int], None] | None = None,
    recompute: bool = False,
    engine=None,
) -> EvalResult:
    """Evaluate a loaded checkpoint on `sizes`; episodes come from the store when present.

    `progress(done, total)` is called as episodes finish (only for the ones being sampled).
    `engine` (ds_core.engine): sample the missing runs as work units there (the same episodes;
    finished units are kept in the store, so an interrupted job resumes) instead of in-process.
    """
    cfg = cfg or SamplingConfig()
    placement = placement_key(ckpt.model)
    if engine is not None:  # the runs are keyed by where the workers sample (a GPU worker: its device)
        from ds_core.engine.jobs import worker_where

        placement = worker_where(ckpt, engine)["placement"]
    plans = []
    for spec in sizes:
        task, problems = problems_for(spec, n, seed)
        key = run_key(ckpt.hash, task, n, cfg, seed, format_key(ckpt.format), placement)
        plans.append((spec, task, problems, key))
    cached: dict[str, list[Episode]] = {}
    if store is not None and not recompute:
        for spec, _, _, key in plans:
            if store.has_run(key):
                cached[spec.name] = store.load_episodes(key)
    todo = [(spec, task, problems, key) for spec, task, problems, key in plans if spec.name not in cached]
    sampled: dict[str, list[Episode]] = {}
    walls: dict[str, float] = {}
    if todo:
        flat = [p for _, _, problems, _ in todo for p in problems]
        total, done = len(flat), 0

        def tick(k: int):
            nonlocal done
            done += k
            if progress:
                progress(done, total)

        t0 = time.perf_counter()
        units: dict = {}
        if engine is not None:
            from ds_core.engine.jobs import sample_runs

            by_task, units = sample_runs(
                ckpt, [(task, problems) for _, task, problems, _ in todo], cfg, seed, engine, store, progress=progress
            )
            episodes = [e for _, task, _, _ in todo for e in by_task[task]]
        else:
            # one random stream per (task, problem index): a run's episodes do not depend on which
            # other sizes were sampled in the same call
            streams = [f"{task}:{i}" for _, task, problems, _ in todo for i in range(len(problems))]
            episodes = rollout(
                ckpt.model, ckpt.tokenizer, ckpt.format, flat, cfg, seed=seed, progress=tick, streams=streams
            )
        wall = time.perf_counter() - t0
        i = 0
        for spec, task, problems, key in todo:
            eps = episodes[i : i + len(problems)]
            i += len(problems)
            sampled[spec.name] = eps
            walls[spec.name] = wall * len(problems) / max(total, 1)
            if store is not None:
                report = calibration(eps, n_boot=n_boot, seed=seed)
                store.put_run(
                    key,
                    eps,
                    meta={"checkpoint": str(ckpt.path), "task": task, "sampling": cfg.to_dict()},
                    summary=report.to_dict(),
                    wall_s=walls[spec.name],
                )
                if units:
                    from ds_core.engine.jobs import forget_units

                    forget_units(store, units[task])
    results = []
    for spec, _task, _problems, key in plans:
        eps = cached.get(spec.name) or sampled.get(spec.name, [])
        results.append(
            SizeResult(
                spec.name, key, calibration(eps, n_boot=n_boot, seed=seed), spec.name in cached, walls.get(spec.name)
            )
        )
    return EvalResult(str(ckpt.path), ckpt.hash, cfg.to_dict(), seed, tuple(results))


def _pct(x: float) -> str:
    return "  -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}"


def format_table(result: EvalResult) -> str:
    """A Table-1-style text table: accuracy with Wald and Wilson intervals, calibration values."""
    head = (
        f"{'size':>5} {'n':>4}  {'acc%':>5} {'Wald 95%':>13}  {'Wilson 95%':>13}  "
        f"{'p_s':>17}  {'p_d|C':>17}  {'p_d|W':>17}  {'predicted':>17}  {'att':>4}  src"
    )
    lines = [head, "-" * len(head)]
    for s in result.sizes:
        r = s.report

        def est(e) -> str:
            return f"{_pct(e.value)} ({_pct(e.ci[0])},{_pct(e.ci[1])})"

        lines.append(
            f"{s.spec:>5} {r.n:>4}  {_pct(r.accuracy.p)} ({_pct(r.accuracy.wald[0])},{_pct(r.accuracy.wald[1])})"
            f"  ({_pct(r.accuracy.wilson[0])},{_pct(r.accuracy.wilson[1])})  {est(r.p_s)}  {est(r.p_dC)}"
            f"  {est(r.p_dW)}  {est(r.predicted)}  {r.mean_attempts:4.2f}  "
            f"{'store' if s.from_store else 'new'}"
        )
    return "\n".join(lines)
