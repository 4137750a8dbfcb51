"""Benchmark: Q-values by resampling (ds_core.analysis.decisions) with every continuation of every
decision in batched, KV-cached rollout calls, against the same continuations done one at a time
(one rollout call per continuation), measured in the same process on the same episodes.

    .venv/bin/python bench/decisions.py [--checkpoint checkpoints/rl] [--size 3x5] [--episodes 8] [--n 16]

Prints the wall times and ratios against two one-at-a-time baselines: DS-Lens' own rollout with
one row (the same seeded streams, so the same Q-values: checked) and transformers' generate per
continuation (bench/rollout.py's baseline), and a projection of a full regret run (7 sizes x 100 problems,
N = 32) from the batched rate measured here (the projection scales by continuations only: longer
sizes have longer continuations, so it is a lower bound).
"""

from __future__ import annotations

import argparse
import time

import torch

from ds_core.analysis.decisions import decision_values
from ds_core.episodes.tasks import test_set
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.rollout import rollout
from ds_core.models.sampling import Prefix, SamplingConfig
from ds_core.paths import SHIPPED_DIR


def generate_one_at_a_time(ck, prefixes, cfg) -> float:
    """transformers' generate per continuation (the baseline of bench/rollout.py), stopping at
    [STOP]/eos or the retry cap (the prefix's [RESAMPLE]s count, as in rollout)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    from ds_core.episodes.tokenizer import decision_token_ids
    from ds_core.models.rollout import budget

    ids = decision_token_ids(ck.tokenizer)

    class Cap(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            return (input_ids == ids["RESAMPLE"]).sum(-1) >= cfg.max_attempts

    eos = [ids["STOP"], ck.tokenizer.eos_token_id]
    from ds_core.models.locks import MODEL_LOCK

    t0 = time.perf_counter()
    for p in prefixes:
        inp = torch.tensor([p.ids])
        with MODEL_LOCK:  # a loaded checkpoint refuses calls outside the lock (ds_core.models.locks)
            _ = ck.model.generate(
                inp,
                attention_mask=torch.ones_like(inp),
                do_sample=True,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=0,
                max_new_tokens=budget(ck.format, p.problem, cfg),
                eos_token_id=eos,
                pad_token_id=ck.tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([Cap()]),
            )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(SHIPPED_DIR / "rl"))
    ap.add_argument("--size", default="3x5")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ck = load_checkpoint(a.checkpoint)
    cfg = SamplingConfig()
    eps = rollout(ck.model, ck.tokenizer, ck.format, test_set(a.size)[: a.episodes], cfg, seed=0)
    streams = [str(i) for i in range(len(eps))]

    t0 = time.perf_counter()
    batched = decision_values(ck, eps, cfg, n=a.n, seed=0, streams=streams)
    t_batched = time.perf_counter() - t0

    from ds_core.episodes.tokenizer import decision_token_ids

    res_id = decision_token_ids(ck.tokenizer)["RESAMPLE"]
    t0 = time.perf_counter()
    ks, prefixes = [], []
    for e, ep in enumerate(eps):
        for d in ep.decisions:
            if d.index + 1 >= cfg.max_attempts:
                continue
            prefix = Prefix(ep.problem, tuple(ep.token_ids[: d.start]) + (res_id,), ep.prompt_len)
            prefixes += [prefix] * a.n
            k = 0
            for j in range(a.n):
                one = rollout(
                    ck.model,
                    ck.tokenizer,
                    ck.format,
                    [prefix],
                    cfg,
                    seed=0,
                    streams=[f"q:{streams[e]}:{d.index + 1}:{j}"],
                )[0]
                k += bool(one.correct)
            ks.append(k)
    t_single = time.perf_counter() - t0
    n_cont = len(ks) * a.n
    t_generate = generate_one_at_a_time(ck, prefixes, cfg)
    same = list(batched.loc[~batched["at_cap"], "k"]) == ks
    print(
        f"checkpoint {ck.path.name}, {len(eps)} episodes of {a.size}, "
        f"{len(ks)} decisions x {a.n} = {n_cont} continuations"
    )
    print(f"batched (decision_values): {t_batched:7.1f} s")
    print(
        f"one at a time (rollout)  : {t_single:7.1f} s  ({t_single / max(t_batched, 1e-9):.1f}x; same Q-values: {same})"
    )
    print(f"one at a time (generate) : {t_generate:7.1f} s  ({t_generate / max(t_batched, 1e-9):.1f}x)")
    per = t_batched / max(n_cont, 1)
    per_episode = n_cont / max(len(eps), 1) / a.n * 32  # continuations per episode at N = 32
    print(
        f"projection, full regret run (7 sizes x 100 problems, N = 32) at this size's rate: "
        f"{per * per_episode * 700 / 60:.0f} min (a lower bound for longer sizes)"
    )


if __name__ == "__main__":
    main()
