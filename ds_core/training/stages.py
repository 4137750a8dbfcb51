"""The four conditions, stage by stage: base -> sft, base -> reflection -> rl.

    python -m ds_core train all            # every stage, from seeds
    python -m ds_core train base           # one stage (later stages load the earlier checkpoints)

Each stage writes a checkpoint directory (safetensors, tokenizer, card.json) and its training log
(train_log.csv and train_log.json) under `out` (default: checkpoints/). `smoke=True` shrinks every
budget to seconds (tests use it; CI never trains the real thing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ds_core.analysis.metrics import calibration
from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import TRAIN_SIZES, sample_mixture
from ds_core.episodes.tokenizer import build_tokenizer
from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
from ds_core.models.locks import isolated
from ds_core.models.model import init_model, n_params
from ds_core.models.rollout import rollout
from ds_core.models.sampling import SamplingConfig
from ds_core.paths import SHIPPED_DIR
from ds_core.store.csvio import write_rows
from ds_core.training.grpo import GRPOConfig, train_grpo
from ds_core.training.recipes import RECIPES
from ds_core.training.sft import SFTConfig, train_sft

STAGES = ("base", "sft", "reflection", "rl")
PARENT = {"sft": "base", "reflection": "base", "rl": "reflection"}
CONDITION = {"base": "base", "sft": "sft", "reflection": "sft_reflection", "rl": "rl"}
MODEL = dict(arch="llama", hidden=128, layers=4, heads=4)
SMOKE_MODEL = dict(arch="llama", hidden=32, layers=1, heads=2)
SMOKE_MAX_NEW_TOKENS = 24


@dataclass(frozen=True)
class StagePlan:
    recipe: str | None  # data recipe (SFT stages)
    n_examples: int
    sft: SFTConfig | None = None
    grpo: GRPOConfig | None = None


PLANS = {
    "base": StagePlan(
        "base",
        200_000,
        SFTConfig(steps=100_000, batch_size=32, lr=2e-3, warmup=100, time_budget_s=7 * 60, eval_every=500),
    ),
    "sft": StagePlan("sft", 20_000, SFTConfig(steps=400, batch_size=32, lr=5e-4, warmup=20, eval_every=200)),
    "reflection": StagePlan(
        "reflection", 20_000, SFTConfig(steps=800, batch_size=32, lr=5e-4, warmup=20, eval_every=200)
    ),
    "rl": StagePlan(
        None,
        0,
        grpo=GRPOConfig(
            steps=10_000,
            prompts_per_step=16,
            group_size=8,
            lr=3e-5,
            kl_coef=0.001,
            time_budget_s=12 * 60,
            eval_every=10,
        ),
    ),
}


def smoke_sft(cfg: SFTConfig) -> SFTConfig:
    """An SFT config cut to seconds (tests; CI never trains the real thing)."""
    return replace(cfg, steps=3, batch_size=4, warmup=1, time_budget_s=None, eval_every=2, log_every=1)


def smoke_grpo(cfg: GRPOConfig) -> GRPOConfig:
    """A GRPO config cut to seconds."""
    return replace(
        cfg,
        steps=2,
        prompts_per_step=2,
        group_size=2,
        minibatch=4,
        time_budget_s=None,
        eval_every=1,
        max_new_tokens=SMOKE_MAX_NEW_TOKENS,
    )


def smoke_plan(stage: str) -> StagePlan:
    p = PLANS[stage]
    if p.sft:
        return replace(p, n_examples=64, sft=smoke_sft(p.sft))
    return replace(p, grpo=smoke_grpo(p.grpo))


def fresh_model(seed: int, smoke: bool = False):
    """(model, tokenizer) of a base stage: DS-Lens' tokenizer and a random init of MODEL (SMOKE_MODEL)."""
    tokenizer = build_tokenizer()
    spec = SMOKE_MODEL if smoke else MODEL
    model = init_model(
        tokenizer, spec["arch"], seed=seed, hidden=spec["hidden"], layers=spec["layers"], heads=spec["heads"]
    )
    return model, tokenizer


def heldout_eval(
    model, tokenizer, fmt, n: int = 64, seed: int = 12345, max_new_tokens: int | None = None
) -> Callable[[int], dict]:
    """p_s, p_d|C, p_d|W and accuracy on a held-out in-distribution set (3x3/3x4)."""
    problems = sample_mixture(list(TRAIN_SIZES), n, seed=seed)
    cfg = SamplingConfig(max_new_tokens=max_new_tokens)

    def run(step: int) -> dict:
        eps = rollout(model, tokenizer, fmt, problems, cfg, seed=seed)
        r = calibration(eps, n_boot=1)
        return {
            "eval_acc": r.accuracy.p,
            "eval_p_s": r.p_s.value,
            "eval_p_dC": r.p_dC.value,
            "eval_p_dW": r.p_dW.value,
            "eval_predicted": r.predicted.value,
        }

    return run


def model_spec(model) -> dict:
    c = model.config
    return {
        "arch": c.model_type,
        "hidden": c.hidden_size,
        "layers": c.num_hidden_layers,
        "heads": c.num_attention_heads,
    }


def write_log(path: Path, rows: list[dict]) -> None:
    (path / "train_log.json").write_text(json.dumps(rows, indent=0, default=float) + "\n")
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    write_rows(path / "train_log.csv", rows, keys)


@isolated  # the loaded parent is guarded (ds_core.models.locks): training holds the lock throughout
def run_stage(
    stage: str,
    out: Path = SHIPPED_DIR,
    seed: int = 0,
    smoke: bool = False,
    progress: Callable[[int, dict], None] | None = None,
    n_eval: int = 64,
) -> Path:
    """Train one stage from its parent checkpoint under `out` (base: from a random init)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    plan = smoke_plan(stage) if smoke else PLANS[stage]
    out = Path(out)
    fmt = DSFormat()
    t0 = time.perf_counter()
    if stage == "base":
        model, tokenizer = fresh_model(seed, smoke)
        parent = None
    else:
        parent_dir = out / CONDITION[PARENT[stage]]
        ck = load_checkpoint(parent_dir)
        model, tokenizer, parent = ck.model, ck.tokenizer, ck.hash
    evaluate = heldout_eval(
        model, tokenizer, fmt, n=4 if smoke else n_eval, max_new_tokens=SMOKE_MAX_NEW_TOKENS if smoke else None
    )
    if plan.sft is not None:
        cfg = replace(plan.sft, seed=seed)
        examples = RECIPES[plan.recipe](plan.n_examples, seed)
        log = train_sft(model, tokenizer, fmt, examples, cfg, evaluate=evaluate, progress=progress)
        training = {"algorithm": "sft", **cfg.to_dict()}
    else:
        cfg = replace(plan.grpo, seed=seed)
        ref = load_checkpoint(out / CONDITION[PARENT[stage]]).model
        log = train_grpo(model, ref, tokenizer, fmt, cfg, evaluate=evaluate, progress=progress)
        training = {"algorithm": "grpo", **cfg.to_dict()}
    wall = time.perf_counter() - t0
    dest = out / CONDITION[stage]
    card = Card(
        condition=CONDITION[stage],
        seed=seed,
        training={**training, "model": model_spec(model), "n_params": n_params(model)},
        data_recipe={
            "recipe": plan.recipe,
            "n_examples": plan.n_examples,
            "doc": RECIPES[plan.recipe].__doc__
            if plan.recipe
            else f"on-policy rollouts of {', '.join(cfg.sizes)} problems",
        },
        metrics={k: v for k, v in log[-1].items() if k.startswith("eval_")} if log else {},
        parent=parent,
        wall_time_s=round(wall, 1),
        notes="smoke run" if smoke else "",
    )
    save_checkpoint(dest, model, tokenizer, card)
    write_log(dest, log)
    return dest


def run_all(
    out: Path = SHIPPED_DIR,
    seed: int = 0,
    smoke: bool = False,
    progress: Callable[[str, int, dict], None] | None = None,
) -> list[Path]:
    torch.manual_seed(seed)
    dirs = []
    for stage in STAGES:
        cb = (lambda s, r, st=stage: progress(st, s, r)) if progress else None
        dirs.append(run_stage(stage, out, seed, smoke, cb))
    return dirs
