"""GRPO with a KL penalty to a frozen reference, CleanRL-style: one readable loop.

Each step:
  1. draw `prompts_per_step` problems from the training sizes;
  2. roll out `group_size` episodes per problem with the current policy (ds_core.models.rollout);
  3. reward = 1 if the final answer is correct, else 0 (nothing else is rewarded);
  4. advantage A_i = (R_i - mean_group) / (std_group + eps) (ds_core.objectives.group_advantages);
  5. for `epochs` passes over minibatches: loss = token mean of surrogate(r, A) + kl_coef * k3
     over every generated token — sampling and decision tokens alike (ds_core.objectives.grpo_loss,
     the same per-token terms the attribution engine differentiates).
     `mask_decisions=True` (the lab's `rl_sampling_only`) drops the surrogate term on the decision
     tokens (they keep the KL term).
Every `split_every` steps the first minibatch's applied gradient is split into sampling /
decision / other tokens (ds_core.training.split) and logged (the lab uses one minibatch a step).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ds_core.analysis.metrics import calibration_counts
from ds_core.episodes.tasks import TRAIN_SIZES, sample_mixture
from ds_core.models.rollout import rollout
from ds_core.models.sampling import SamplingConfig
from ds_core.objectives.terms import group_advantages, grpo_loss, token_logprobs
from ds_core.training.split import ROLE_CODE, log_row, role_codes, split_backward


@dataclass(frozen=True)
class GRPOConfig:
    steps: int = 100
    prompts_per_step: int = 16
    group_size: int = 8
    lr: float = 1e-4
    clip_eps: float = 0.2
    kl_coef: float = 0.001
    epochs: int = 1
    minibatch: int = 64
    temperature: float = 1.0
    max_attempts: int = 4
    max_new_tokens: int | None = None  # None: the rollout's per-problem budget
    sizes: tuple[str, ...] = TRAIN_SIZES
    grad_clip: float = 1.0
    seed: int = 0
    time_budget_s: float | None = None
    eval_every: int = 0
    mask_decisions: bool = False  # surrogate on sampling/other tokens only (KL on every token)
    split_every: int = 0  # 0: no gradient split in the log

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2 (advantages are group-relative)")
        if min(self.steps, self.prompts_per_step, self.epochs, self.minibatch) < 1:
            raise ValueError("steps, prompts_per_step, epochs and minibatch must be positive")
        if not self.lr > 0 or self.kl_coef < 0 or not 0 < self.clip_eps < 1:
            raise ValueError("lr must be positive, kl_coef >= 0, clip_eps in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


def episode_batch(episodes, pad_id: int):
    """Right-padded token ids and a mask over every generated token of each episode."""
    width = max(len(e.token_ids) for e in episodes)
    x = torch.full((len(episodes), width), pad_id, dtype=torch.long)
    m = torch.zeros((len(episodes), width))
    for i, e in enumerate(episodes):
        x[i, : len(e.token_ids)] = torch.tensor(e.token_ids)
        m[i, e.prompt_len : len(e.token_ids)] = 1.0
    return x, m


@torch.no_grad()
def _logprobs(model, x):
    return token_logprobs(model, x)


def train_grpo(
    model,
    ref_model,
    tokenizer,
    fmt,
    cfg: GRPOConfig,
    evaluate: Callable[[int], dict] | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Train `model` in place; `ref_model` stays frozen. Returns one log row per step."""
    ref_model.eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    sampling = SamplingConfig(
        temperature=cfg.temperature, max_attempts=cfg.max_attempts, max_new_tokens=cfg.max_new_tokens
    )
    rng = random.Random(f"grpo:{cfg.seed}")
    log: list[dict] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        if cfg.time_budget_s is not None and time.perf_counter() - t0 >= cfg.time_budget_s:
            break
        # 1-3. sample groups and score them
        model.eval()
        problems = sample_mixture(list(cfg.sizes), cfg.prompts_per_step, seed=rng.randrange(2**31))
        requests = [p for p in problems for _ in range(cfg.group_size)]
        t_roll = time.perf_counter()
        episodes = rollout(model, tokenizer, fmt, requests, sampling, seed=rng.randrange(2**31))
        t_roll = time.perf_counter() - t_roll
        rewards = torch.tensor([float(e.correct) for e in episodes])
        # 4. group-relative advantages
        adv = group_advantages(rewards.view(cfg.prompts_per_step, cfg.group_size)).reshape(-1)
        x, m = episode_batch(episodes, tokenizer.pad_token_id)
        old_logp, ref_logp = _logprobs(model, x), _logprobs(ref_model, x)
        # 5. policy update over minibatches
        codes_all = role_codes([e.roles for e in episodes], x.shape[1])
        split_step = bool(cfg.split_every) and (step % cfg.split_every == 0 or step == cfg.steps - 1)
        split_row: dict = {}
        model.train()
        stats_sum: dict[str, float] = {}
        n_mb = 0
        for _ in range(cfg.epochs):
            order = torch.randperm(len(episodes), generator=torch.Generator().manual_seed(rng.randrange(2**31)))
            for i in range(0, len(order), cfg.minibatch):
                idx = order[i : i + cfg.minibatch]
                width = int(m[idx].nonzero()[:, 1].max()) + 1 if m[idx].any() else 1
                xb, mb = x[idx, :width], m[idx, :width]
                logp = token_logprobs(model, xb)
                codes = codes_all[idx, :width]
                loss, stats, terms = grpo_loss(
                    logp,
                    old_logp[idx, :width],
                    ref_logp[idx, :width],
                    adv[idx],
                    mb,
                    clip_eps=cfg.clip_eps,
                    kl_coef=cfg.kl_coef,
                    surrogate_mask=(codes != ROLE_CODE["decision"]) if cfg.mask_decisions else None,
                    per_token=True,
                )
                opt.zero_grad(set_to_none=True)
                if split_step and not split_row:
                    split_row = log_row(split_backward(model, terms / mb.sum().clamp(min=1), codes))
                else:
                    loss.backward()
                stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
                opt.step()
                for k, v in stats.items():
                    stats_sum[k] = stats_sum.get(k, 0.0) + v
                n_mb += 1
        model.eval()
        counts = calibration_counts(episodes)
        row = {
            "step": step,
            "reward": float(rewards.mean()),
            "p_s": counts.p_s,
            "p_dC": counts.p_dC,
            "p_dW": counts.p_dW,
            "attempts": sum(e.n_attempts for e in episodes) / len(episodes),
            "gen_tokens": float(m.sum() / len(episodes)),
            "rollout_s": t_roll,
            "elapsed_s": time.perf_counter() - t0,
            **{k: v / max(n_mb, 1) for k, v in stats_sum.items()},
            **split_row,
        }
        if evaluate and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps - 1):
            row.update(evaluate(step))
        log.append(row)
        if progress:
            progress(step, row)
    return log
