"""Supervised fine-tuning on traces (base "pretraining", SFT, SFT with reflection), nanoGPT-style.

The loss is a per-token objective from ds_core.objectives (token-level NLL `sft_sum` by default,
or `sft_mean` / `dft`) on the generated part of each trace (everything after the prompt).
`weighting="balanced"` weights each trace's decision tokens so they carry as much total weight as
its sampling tokens (ds_core.objectives.terms.balanced_weights; a weighted token mean). Every
`split_every` steps the applied gradient is split into sampling / decision / other tokens
(ds_core.training.split) and logged.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ds_core.episodes.roles import SpecialTokenTagger
from ds_core.objectives import get_objective
from ds_core.objectives.terms import balanced_weights, reduce_terms, token_logprobs, weighted_token_mean
from ds_core.training.recipes import Example
from ds_core.training.split import log_row, role_codes, split_backward

WEIGHTINGS = ("none", "balanced")


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_frac: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    objective: str = "sft_sum"
    seed: int = 0
    time_budget_s: float | None = None  # stop early when this much wall time has passed
    log_every: int = 50
    eval_every: int = 0  # 0: no periodic evaluation
    weighting: str = "none"  # "balanced": decision tokens weighted to the sampling tokens' total
    split_every: int = 0  # 0: no gradient split in the log

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if not self.lr > 0 or not 0 <= self.min_lr_frac <= 1:
            raise ValueError("lr must be positive and min_lr_frac in [0, 1]")
        if self.objective not in ("sft_mean", "sft_sum", "dft"):
            raise ValueError(f"objective must be sft_mean, sft_sum or dft, got {self.objective!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.weighting == "balanced" and self.objective == "sft_mean":
            raise ValueError("balanced weighting is a weighted token mean: use it with sft_sum or dft")

    def to_dict(self) -> dict:
        return asdict(self)


def encode(tokenizer, fmt, examples: list[Example]) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per example."""
    out = []
    for e in examples:
        ids = tokenizer(e.text, add_special_tokens=False)["input_ids"]
        pl = len(tokenizer(fmt.prompt_text(e.problem), add_special_tokens=False)["input_ids"])
        out.append((ids, pl))
    return out


def batch_codes(batch: list[tuple[list[int], int]], width: int, tokenizer) -> torch.Tensor:
    """[B, width] role codes of the traces (ds_core.training.split.role_codes)."""
    tagger = SpecialTokenTagger()
    return role_codes([tagger.tag(ids, pl, tokenizer).roles for ids, pl in batch], width)


def batch_loss(terms, m, cfg: SFTConfig, codes=None):
    """(loss, per-token contributions whose sum is the loss) for one batch's objective terms."""
    if cfg.weighting == "balanced":
        w = balanced_weights(codes == 1, codes == 2)
        return weighted_token_mean(terms, m, w), terms * w / (w * m).sum().clamp(min=1e-12)
    if cfg.objective == "sft_mean":  # each sequence's terms sum to its mean NLL: average over the batch
        return terms.sum() / terms.shape[0], terms / terms.shape[0]
    return reduce_terms(terms, m, "token_mean"), terms / m.sum().clamp(min=1)


def make_batch(rows: list[tuple[list[int], int]], pad_id: int):
    """Right-padded ids and a mask over the generated tokens (padding and prompt are 0)."""
    width = max(len(ids) for ids, _ in rows)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    m = torch.zeros((len(rows), width))
    for i, (ids, pl) in enumerate(rows):
        x[i, : len(ids)] = torch.tensor(ids)
        m[i, pl : len(ids)] = 1.0
    return x, m


def _bucketed_batches(
    rows, order: list[int], batch_size: int, rng: random.Random, pool_batches: int = 8
) -> list[list[int]]:
    """The next `pool_batches` batches: a shuffled pool sorted by length and cut into batches
    (less padding), the batches themselves in random order."""
    need = batch_size * pool_batches
    while len(order) < need:
        perm = list(range(len(rows)))
        rng.shuffle(perm)
        order += perm
    pool = sorted(order[:need], key=lambda i: len(rows[i][0]))
    del order[:need]
    batches = [pool[i : i + batch_size] for i in range(0, need, batch_size)]
    rng.shuffle(batches)
    return batches


def lr_at(step: int, cfg: SFTConfig, frac_done: float) -> float:
    warm = min(1.0, (step + 1) / max(cfg.warmup, 1))
    cos = cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(frac_done, 1.0)))
    return cfg.lr * warm * cos


def train_sft(
    model,
    tokenizer,
    fmt,
    examples: list[Example],
    cfg: SFTConfig,
    evaluate: Callable[[int], dict] | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Train `model` in place on `examples` (cycled, reshuffled every pass); returns the log rows.

    `evaluate(step)` (optional) is called every `eval_every` steps and at the end; its dict is
    merged into that step's log row. `progress(step, row)` is called on every logged row.
    """
    rows = encode(tokenizer, fmt, examples)
    rng = random.Random(f"sft-order:{cfg.seed}")
    torch.manual_seed(cfg.seed)
    objective = get_objective(cfg.objective)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    order: list[int] = []
    pending: list[list[int]] = []
    log: list[dict] = []
    t0 = time.perf_counter()
    tokens = 0
    model.train()
    for step in range(cfg.steps):
        elapsed = time.perf_counter() - t0
        if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
            break
        frac = step / cfg.steps
        if cfg.time_budget_s is not None:
            frac = max(frac, elapsed / cfg.time_budget_s)
        lr = lr_at(step, cfg, frac)
        for g in opt.param_groups:
            g["lr"] = lr
        if not pending:
            pending = _bucketed_batches(rows, order, cfg.batch_size, rng)
        batch = [rows[i] for i in pending.pop()]
        x, m = make_batch(batch, tokenizer.pad_token_id)
        logp = token_logprobs(model, x)
        terms = objective.terms(logp, m)
        split = cfg.split_every and (step % cfg.split_every == 0 or step == cfg.steps - 1)
        codes = batch_codes(batch, x.shape[1], tokenizer) if split or cfg.weighting != "none" else None
        loss, contributions = batch_loss(terms, m, cfg, codes)
        opt.zero_grad(set_to_none=True)
        fig = split_backward(model, contributions, codes) if split else loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        tokens += int(m.sum())
        last = step == cfg.steps - 1
        if step % cfg.log_every == 0 or last or split or (cfg.eval_every and step % cfg.eval_every == 0):
            row = {
                "step": step,
                "loss": float(loss.detach()),
                "lr": lr,
                "grad_norm": gnorm,
                "tokens": tokens,
                "elapsed_s": time.perf_counter() - t0,
                **(log_row(fig) if split else {}),
            }
            if evaluate and cfg.eval_every and step % cfg.eval_every == 0 and step > 0:
                model.eval()
                row.update(evaluate(step))
                model.train()
            log.append(row)
            if progress:
                progress(step, row)
    model.eval()
    if evaluate:
        row = {
            "step": step,
            "loss": float(loss.detach()),
            "lr": lr,
            "tokens": tokens,
            "elapsed_s": time.perf_counter() - t0,
            **evaluate(step),
        }
        log.append(row)
        if progress:
            progress(step, row)
    return log
