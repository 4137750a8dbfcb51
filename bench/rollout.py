"""Benchmark: batched rollout vs one-at-a-time `model.generate`, measured in the same process.

    .venv/bin/python bench/rollout.py [--checkpoint DIR] [--n 100] [--size 3x4] [--threads 2]

Prints episodes/s for both on the same problems and sampling settings, their ratio, and the wall
time of a full Table-1 evaluation (3x3..3x9 x 100 problems, no store). Without --checkpoint it
uses checkpoints/base when present, else a random-init tiny Llama (whose episodes are short:
it stops at random, so its ratio understates a trained model's).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import torch

from ds_core.analysis.evaluate import evaluate  # noqa: E402
from ds_core.episodes.tasks import parse_sizes, test_set  # noqa: E402
from ds_core.episodes.tokenizer import build_tokenizer, decision_token_ids  # noqa: E402
from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint  # noqa: E402
from ds_core.models.model import init_model, n_params  # noqa: E402
from ds_core.models.rollout import budget, prompt_prefix, rollout  # noqa: E402
from ds_core.models.sampling import SamplingConfig  # noqa: E402
from ds_core.paths import SHIPPED_DIR  # noqa: E402


class NoStop(torch.nn.Module):
    """Wraps a model so it never emits [STOP] or <eos>: every episode runs to its full token
    budget (4 attempts' worth). The worst case for rollout time, whatever the checkpoint."""

    def __init__(self, model, banned: list[int]):
        super().__init__()
        self.inner, self.banned, self.config = model, banned, model.config

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None, logits_to_keep=0
    ):
        out = self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
        )
        out.logits[..., self.banned] = float("-inf")
        return out


def one_at_a_time(ckpt, problems, cfg: SamplingConfig, seed: int, banned=None) -> tuple[float, int]:
    """transformers' generate, one problem at a time, stopping at [STOP]/eos or the retry cap."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    ids = decision_token_ids(ckpt.tokenizer) or {}
    resample = ids.get("RESAMPLE")

    class Cap(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            return (input_ids == resample).sum(-1) >= cfg.max_attempts

    eos = [i for i in (ids.get("STOP"), ckpt.tokenizer.eos_token_id) if i is not None]
    torch.manual_seed(seed)
    tokens = 0
    t0 = time.perf_counter()
    for p in problems:
        pre = prompt_prefix(ckpt.format, ckpt.tokenizer, p)
        inp = torch.tensor([pre.ids])
        out = ckpt.model.generate(
            inp,
            attention_mask=torch.ones_like(inp),
            do_sample=cfg.temperature > 0,
            temperature=cfg.temperature or None,
            top_p=cfg.top_p,
            top_k=0,
            max_new_tokens=budget(ckpt.format, p, cfg),
            eos_token_id=eos,
            pad_token_id=ckpt.tokenizer.pad_token_id,
            suppress_tokens=banned or None,
            stopping_criteria=StoppingCriteriaList([Cap()]) if resample is not None else None,
        )
        tokens += out.shape[1] - inp.shape[1]
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--size", default="3x4")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-table", action="store_true", help="skip the Table-1 timing")
    ap.add_argument(
        "--full-length",
        action="store_true",
        help="ban [STOP] and <eos> so every episode runs to its full budget (worst case)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    path = args.checkpoint or (SHIPPED_DIR / "base" if (SHIPPED_DIR / "base").is_dir() else None)
    if path is None:
        tok = build_tokenizer()
        path = Path(tempfile.mkdtemp()) / "random-llama"
        save_checkpoint(path, init_model(tok, "llama"), tok, Card(condition="random-init"))
    ckpt = load_checkpoint(path)
    problems = test_set(args.size)[: args.n]
    cfg = SamplingConfig()
    print(
        f"checkpoint {path} ({ckpt.arch}, {n_params(ckpt.model) / 1e6:.2f}M params); {len(problems)} "
        f"problems of {args.size}; temperature {cfg.temperature}, max_attempts {cfg.max_attempts}; "
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}"
    )

    banned = []
    if args.full_length:
        banned = [
            i
            for i in ((decision_token_ids(ckpt.tokenizer) or {}).get("STOP"), ckpt.tokenizer.eos_token_id)
            if i is not None
        ]
        ckpt = dataclasses.replace(ckpt, model=NoStop(ckpt.model, banned))
        print("full-length mode: [STOP] and <eos> banned, every episode runs to its budget")
    rollout(ckpt.model, ckpt.tokenizer, ckpt.format, problems[:4], cfg, seed=args.seed)  # warm-up
    t0 = time.perf_counter()
    eps = rollout(ckpt.model, ckpt.tokenizer, ckpt.format, problems, cfg, seed=args.seed)
    t_batch = time.perf_counter() - t0
    gen_tokens = sum(len(e.token_ids) - e.prompt_len for e in eps)
    print(
        f"batched rollout : {t_batch:7.2f} s  {len(eps) / t_batch:8.1f} episodes/s  "
        f"{gen_tokens / t_batch:9.0f} tokens/s  (mean {gen_tokens / len(eps):.0f} tokens, "
        f"{sum(e.n_attempts for e in eps) / len(eps):.2f} attempts, accuracy "
        f"{sum(e.correct for e in eps) / len(eps):.2f})"
    )
    t_one, tok_one = one_at_a_time(
        dataclasses.replace(ckpt, model=getattr(ckpt.model, "inner", ckpt.model)), problems, cfg, args.seed, banned
    )
    print(
        f"one-at-a-time   : {t_one:7.2f} s  {len(problems) / t_one:8.1f} episodes/s  "
        f"{tok_one / t_one:9.0f} tokens/s  (mean {tok_one / len(problems):.0f} tokens)"
    )
    print(
        f"speed-up (episodes/s, batched / one-at-a-time): {t_one / t_batch:.1f}x  "
        f"(tokens/s ratio {(gen_tokens / t_batch) / (tok_one / t_one):.1f}x)"
    )
    if not args.skip_table:
        sizes = parse_sizes("3x3-3x9")
        t0 = time.perf_counter()
        res = evaluate(ckpt, sizes, n=100, cfg=cfg, seed=args.seed, store=None)
        t_table = time.perf_counter() - t0
        acc = " ".join(f"{s.spec}:{100 * s.report.accuracy.p:.0f}%" for s in res.sizes)
        print(f"Table-1 evaluation (7 sizes x 100, no store): {t_table:.1f} s  [{acc}]")


if __name__ == "__main__":
    main()
