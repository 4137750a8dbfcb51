"""The DS lab: training conditions that test the DS hypothesis causally, each with 3 seeds.

    python -m ds_core train lab [--only rl_no_kl,...] [--seeds 0,1,2] [--workers 2]
    python -m ds_core train base-trial --ood-weights 0,0,0,0.5,4 --id-weights 4,1 --lr 1e-3 --steps 2200

Every condition is a named stage trained from the lab's own base (one base, seed 0, recipe
`lab_base`: practice on 3x8/3x9 only, 3x4 at a quarter weight, 2200 steps, so its
out-of-distribution sampling is weak but alive) with the same data where the condition allows:

- `sft`, `sft_reflection`: SFT on correct traces / on reflection traces (ds_core.training.recipes);
- `reflection_balanced`: the reflection traces, each trace's decision tokens weighted to carry as
  much loss weight as its sampling tokens (the paper's length-weighting explanation, tested head on);
- `reflection_dft`: DFT on the reflection traces;
- `rl` (GRPO from `sft_reflection`, k3 KL 0.001), `rl_no_kl` (KL 0), `rl_strong_kl` (KL 0.03, 30x),
  `rl_sampling_only` (the surrogate with the decision tokens masked out: does RL's gain need the
  decision gradient?), `rl_from_sft` (GRPO from `sft`, which never writes [RESAMPLE]).

Seed s of a condition starts from seed s of its parent (the base is shared) and draws its data,
order and rollouts from s. Budgets are step counts, never wall time: a rerun on another machine
trains the same checkpoints (every worker runs torch with one thread, so the float reductions are
ordered the same way). Each run's folder is <out>/<condition>/seed<s>/: the checkpoint, card.json,
train_log.json/.csv (held-out p_s, p_d|C, p_d|W and the applied gradient's split every few steps)
and eval.json (the fixed test sets 3x3..3x9, 100 problems each). Git keeps seed 0's weights and
every seed's card, log and eval.json (.gitignore).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from ds_core.training.grpo import GRPOConfig
from ds_core.training.lab_index import LAB_DIR, SEEDS
from ds_core.training.recipes import LAB_ID_WEIGHTS, LAB_OOD_WEIGHTS
from ds_core.training.sft import SFTConfig
from ds_core.training.stages import smoke_grpo, smoke_sft

__all__ = ["CONDITIONS", "LAB_DIR", "SEEDS", "Condition", "LabRunError", "base_trial", "jobs", "run_job", "run_lab"]


@dataclass(frozen=True)
class Condition:
    name: str
    parent: str | None  # the lab condition it starts from (seed-matched); None: a random init
    doc: str
    recipe: str | None = None  # SFT stages: the data recipe (ds_core.training.recipes)
    n_examples: int = 0
    sft: SFTConfig | None = None
    grpo: GRPOConfig | None = None
    seeds: tuple[int, ...] = SEEDS
    recipe_options: tuple[tuple[str, object], ...] = ()  # keyword settings of the recipe

    def __post_init__(self):
        if (self.sft is None) == (self.grpo is None):
            raise ValueError(f"condition {self.name!r} needs exactly one of an SFT or a GRPO config")
        if self.sft is not None and not self.recipe:
            raise ValueError(f"SFT condition {self.name!r} needs a data recipe")

    @property
    def algorithm(self) -> str:
        return "sft" if self.sft is not None else "grpo"


_SFT = SFTConfig(steps=400, batch_size=32, lr=5e-4, warmup=20, eval_every=100, split_every=100, log_every=100)
_RL = GRPOConfig(
    steps=40,
    prompts_per_step=12,
    group_size=8,
    minibatch=96,  # one minibatch a step: the logged split is the whole step's gradient
    lr=5e-5,
    kl_coef=0.001,
    eval_every=5,
    split_every=5,
)

CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition(
            "base",
            None,
            "lab base: correct traces of 1-/2-digit x 1..9-digit and 3x1..3x4 problems (3x4 at a quarter weight),"
            " plus 3x8/3x9 practice; 3x5..3x7 never practised",
            "lab_base",
            200_000,
            SFTConfig(steps=2200, batch_size=32, lr=1e-3, warmup=100, eval_every=500, split_every=500, log_every=100),
            seeds=(0,),
            recipe_options=(("ood_weights", LAB_OOD_WEIGHTS), ("id_weights", LAB_ID_WEIGHTS)),
        ),
        Condition(
            "sft", "base", "SFT on correct 3x3/3x4 traces (no reflection)", "sft", 20_000, replace(_SFT, steps=300)
        ),
        Condition(
            "sft_reflection",
            "base",
            "SFT on reflection traces (0-2 injected wrong attempts)",
            "reflection",
            20_000,
            _SFT,
        ),
        Condition(
            "reflection_balanced",
            "base",
            "SFT on the reflection traces, decision tokens weighted to the sampling tokens' total",
            "reflection",
            20_000,
            replace(_SFT, weighting="balanced"),
        ),
        Condition(
            "reflection_dft",
            "base",
            "DFT on the reflection traces",
            "reflection",
            20_000,
            replace(_SFT, objective="dft"),
        ),
        Condition("rl", "sft_reflection", "GRPO from sft_reflection, k3 KL 0.001", grpo=_RL),
        Condition("rl_no_kl", "sft_reflection", "GRPO from sft_reflection without KL", grpo=replace(_RL, kl_coef=0.0)),
        Condition(
            "rl_strong_kl",
            "sft_reflection",
            "GRPO from sft_reflection, k3 KL 0.03 (30x)",
            grpo=replace(_RL, kl_coef=0.03),
        ),
        Condition(
            "rl_sampling_only",
            "sft_reflection",
            "GRPO from sft_reflection, surrogate masked on the decision tokens",
            grpo=replace(_RL, mask_decisions=True),
        ),
        Condition("rl_from_sft", "sft", "GRPO from sft (no reflection), k3 KL 0.001", grpo=_RL),
    )
}
RL_CONDITIONS = tuple(n for n, c in CONDITIONS.items() if c.algorithm == "grpo")


def run_dir(out: Path, condition: str, seed: int) -> Path:
    return Path(out) / condition / f"seed{seed}"


def parent_seed(condition: str, seed: int) -> int:
    """The seed of the parent run a seed starts from (the base has one seed)."""
    parent = CONDITIONS[condition].parent
    return seed if parent is not None and seed in CONDITIONS[parent].seeds else 0


def jobs(conditions=None, seeds=SEEDS) -> list[tuple[str, int]]:
    """(condition, seed) pairs in an order where every parent comes before its children."""
    names = list(CONDITIONS) if conditions is None else list(conditions)
    bad = [n for n in names if n not in CONDITIONS]
    if bad:
        raise ValueError(
            f"unknown lab condition{'s' * (len(bad) > 1)} {', '.join(bad)}; conditions: {', '.join(CONDITIONS)}"
        )
    order = list(CONDITIONS)  # the declaration order is topological
    return [(n, s) for n in sorted(names, key=order.index) for s in CONDITIONS[n].seeds if s in seeds]


def smoke_condition(c: Condition) -> Condition:
    """Seconds-long budgets (ds_core.training.stages' smoke settings), the split logged at every logged step."""
    if c.sft is not None:
        return replace(c, n_examples=64, sft=replace(smoke_sft(c.sft), split_every=2))
    return replace(c, grpo=replace(smoke_grpo(c.grpo), split_every=1))


def run_job(
    condition: str,
    seed: int,
    out: Path = LAB_DIR,
    parents: Path | None = None,
    smoke: bool = False,
    evaluate_n: int = 100,
    threads: int = 1,
) -> dict:
    """Train one (condition, seed) run into run_dir(out, ...) and evaluate it on the test sets.
    The parent is read from `parents` (default `out`). Returns a summary dict."""
    import torch

    from ds_core.training.lab_stage import train_condition

    torch.set_num_threads(threads)
    c = CONDITIONS[condition]
    c = smoke_condition(c) if smoke else c
    t0 = time.perf_counter()
    parent = run_dir(parents or out, c.parent, parent_seed(condition, seed)) if c.parent else None
    dest = train_condition(c, seed, run_dir(out, condition, seed), parent, smoke=smoke, evaluate_n=evaluate_n)
    return {"condition": condition, "seed": seed, "dir": str(dest), "wall_s": round(time.perf_counter() - t0, 1)}


class LabRunError(RuntimeError):
    """A lab run's process failed; the message carries the end of its own error output."""


def job_process(condition: str, seed: int, out: Path, parents: Path, smoke: bool, evaluate_n: int) -> dict:
    """run_job in its own Python process (`python -m ds_core.training.lab_stage ARGS`): a fresh
    interpreter per run, one torch thread, whatever the calling process is. Raises LabRunError
    with the run's own error when it fails."""
    args = {"condition": condition, "seed": seed, "out": str(out), "parents": str(parents), "smoke": smoke}
    args["evaluate_n"] = evaluate_n
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ds_core.training.lab_stage", json.dumps(args)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise LabRunError(f"lab run {condition} seed {seed} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_lab(
    out: Path = LAB_DIR,
    conditions=None,
    seeds=SEEDS,
    workers: int = 2,
    smoke: bool = False,
    parents: Path | None = None,
    evaluate_n: int = 100,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Every (condition, seed) job, `workers` at a time (one Python process each, one torch thread),
    each started once its parent run is done. A job whose parent is not part of this call must
    already exist under `parents` (default `out`)."""
    todo = jobs(conditions, seeds)
    names = {j for j in todo}
    parents = Path(parents) if parents else Path(out)

    def dep(job):
        cond, seed = job
        p = CONDITIONS[cond].parent
        return (p, parent_seed(cond, seed)) if p else None

    for job in todo:
        d = dep(job)
        if d and d not in names and not (run_dir(parents, *d) / "config.json").is_file():
            raise ValueError(
                f"{job[0]} seed {job[1]} needs its parent {d[0]} seed {d[1]} (not under {parents}, not in this run)"
            )
    done: set = set()
    results = []
    pending = list(todo)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        running = {}
        while pending or running:
            ready = [j for j in pending if dep(j) is None or dep(j) in done or dep(j) not in names]
            for job in ready[: max(0, workers - len(running))]:
                pending.remove(job)
                par = out if dep(job) in names else parents
                running[pool.submit(job_process, job[0], job[1], out, par, smoke, evaluate_n)] = job
            if not running:
                raise RuntimeError(f"lab jobs cannot start (their parents failed): {pending}")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                job = running.pop(f)
                summary = f.result()  # a failed job fails the lab with its own error
                done.add(job)
                results.append(summary)
                if progress:
                    progress(summary)
    index = Path(out) / "lab_runs.json"
    kept = {(r["condition"], r["seed"]): r for r in (json.loads(index.read_text()) if index.is_file() else [])}
    kept.update({(r["condition"], r["seed"]): r for r in results})
    index.write_text(json.dumps([kept[k] for k in sorted(kept)], indent=1) + "\n")
    return results


def base_trial(
    ood_weights: tuple[float, ...],
    lr: float,
    steps: int,
    out: Path,
    smoke: bool = False,
    evaluate_n: int = 100,
    threads: int = 1,
    id_weights: tuple[float, ...] = LAB_ID_WEIGHTS,
) -> dict[str, float]:
    """One candidate recipe for the lab's base (RESULTS.md, "The base recipe: what was tried"):
    the `base` condition with other 3x5..3x9 and 3x3/3x4 weights, peak learning rate and step
    count (warm-up, then cosine over the steps), trained with seed 0 and evaluated like a lab run
    into `out`. Returns p_s per size on the fixed test sets. Budgets are steps: a rerun gives the
    same numbers."""
    import torch

    from ds_core.training.lab_stage import train_condition

    torch.set_num_threads(threads)
    base = CONDITIONS["base"]
    options = (
        ("ood_weights", tuple(float(w) for w in ood_weights)),
        ("id_weights", tuple(float(w) for w in id_weights)),
    )
    c = replace(base, recipe_options=options, sft=replace(base.sft, lr=lr, steps=steps))
    c = smoke_condition(c) if smoke else c
    dest = train_condition(c, 0, Path(out), None, smoke=smoke, evaluate_n=evaluate_n)
    ev = json.loads((dest / "eval.json").read_text())
    return {size: v["p_s"]["value"] for size, v in ev["sizes"].items()}
