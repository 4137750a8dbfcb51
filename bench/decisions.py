"""Benchmark: decision regret (ds_core.analysis.decisions Q-values + ds_core.analysis.regret optimal
continuations) with every continuation in batched, KV-cached rollout calls, against the same
continuations done one at a time (one rollout call per continuation), in the same process.

    .venv/bin/python bench/decisions.py [--checkpoint checkpoints/rl] [--size 3x5] [--episodes 6] [--n 32]
    .venv/bin/python bench/decisions.py --full [--checkpoint checkpoints/rl] [--sample 16]

Default: a few episodes of one size, every continuation both ways (the same seeded streams, so the
same Q-values and optimal counts: checked), and transformers' generate per Q continuation
(bench/rollout.py's baseline). --full: a whole regret run (7 sizes x 100 problems, N = 32) timed
batched, against one at a time estimated per size from `--sample` continuations of each kind done
singly (their mean time x the run's count of that kind: doing all of them singly takes hours).
"""

from __future__ import annotations

import argparse
import time

import torch

from ds_core.analysis.decisions import decision_values
from ds_core.analysis.regret import optimal_continuations, optimal_counts, optimal_requests
from ds_core.episodes.tasks import test_set
from ds_core.episodes.tokenizer import decision_token_ids
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


def one_at_a_time(ck, eps, cfg, n, streams) -> tuple[float, list, list]:
    """(seconds, Q successes per decision below the cap, optimal successes per wrong kept episode),
    every continuation its own rollout call with the stream decision_values / optimal_counts use."""

    res_id = decision_token_ids(ck.tokenizer)["RESAMPLE"]
    t0 = time.perf_counter()
    ks = []
    for e, ep in enumerate(eps):
        for d in ep.decisions:
            if d.index + 1 >= cfg.max_attempts:
                continue
            prefix = Prefix(ep.problem, tuple(ep.token_ids[: d.start]) + (res_id,), ep.prompt_len)
            ks.append(
                sum(
                    bool(
                        rollout(
                            ck.model,
                            ck.tokenizer,
                            ck.format,
                            [prefix],
                            cfg,
                            seed=0,
                            streams=[f"q:{streams[e]}:{d.index + 1}:{j}"],
                        )[0].correct
                    )
                    for j in range(n)
                )
            )
    which, prefixes, names = optimal_requests(eps, cfg, ck, n=n, streams=streams)
    opt: dict[int, int] = {}
    for e, p, name in zip(which, prefixes, names):
        opt[e] = opt.get(e, 0) + int(optimal_continuations(ck, [p], cfg, seed=0, streams=[name])[0])
    return time.perf_counter() - t0, ks, [opt[e] for e in sorted(opt)]


def small(ck, cfg, a) -> None:
    eps = rollout(ck.model, ck.tokenizer, ck.format, test_set(a.size)[: a.episodes], cfg, seed=0)
    streams = [str(i) for i in range(len(eps))]
    t0 = time.perf_counter()
    values = decision_values(ck, eps, cfg, n=a.n, seed=0, streams=streams)
    t_q = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = optimal_counts(eps, cfg, ck, n=a.n, seed=0, streams=streams)
    t_opt = time.perf_counter() - t0
    t_single, ks, opt = one_at_a_time(ck, eps, cfg, a.n, streams)
    same = list(values.loc[~values["at_cap"], "k"]) == ks and [c for c in counts if c is not None] == opt
    _, prefixes, _ = optimal_requests(eps, cfg, ck, n=a.n, streams=streams)
    n_q = len(ks) * a.n
    res_id = decision_token_ids(ck.tokenizer)["RESAMPLE"]
    q_prefixes = [
        Prefix(ep.problem, tuple(ep.token_ids[: d.start]) + (res_id,), ep.prompt_len)
        for ep in eps
        for d in ep.decisions
        if d.index + 1 < cfg.max_attempts
        for _ in range(a.n)
    ]
    t_generate = generate_one_at_a_time(ck, q_prefixes, cfg)
    t_b = t_q + t_opt
    print(
        f"checkpoint {ck.path.name}, {len(eps)} episodes of {a.size}: {len(ks)} decisions x {a.n} = {n_q} Q "
        f"continuations, {len(opt)} wrong kept x {a.n} = {len(prefixes)} optimal continuations"
    )
    print(f"batched: {t_b:7.1f} s  (Q-values {t_q:.1f} s, optimal continuations {t_opt:.1f} s)")
    print(f"one at a time (rollout): {t_single:7.1f} s  ({t_single / max(t_b, 1e-9):.1f}x; same numbers: {same})")
    print(
        f"one at a time (generate), the Q continuations only: {t_generate:7.1f} s  "
        f"({t_generate / max(t_q, 1e-9):.1f}x the batched Q-values)"
    )


def full(ck, cfg, a) -> None:
    import random

    from ds_core.analysis.evaluate import episodes_without_store
    from ds_core.episodes.tasks import TaskSpec

    res_id = decision_token_ids(ck.tokenizer)["RESAMPLE"]
    rng = random.Random(0)
    tot_b = tot_s = 0.0
    print(f"checkpoint {ck.path.name}: full regret run, 7 sizes x 100 problems, N = {a.n}")
    print(f"{'size':>5} {'Q conts':>8} {'opt conts':>9} {'batched s':>10} {'1-at-a-time s (est.)':>21} {'ratio':>6}")
    for size in ("3x3", "3x4", "3x5", "3x6", "3x7", "3x8", "3x9"):
        spec = TaskSpec.parse(size)
        eps = episodes_without_store(ck, spec, 100, cfg, 0)
        streams = [f"{size}:{i}" for i in range(len(eps))]
        t0 = time.perf_counter()
        decision_values(ck, eps, cfg, n=a.n, seed=0, streams=streams)
        optimal_counts(eps, cfg, ck, n=a.n, seed=0, streams=streams)
        t_b = time.perf_counter() - t0
        q = [
            (
                Prefix(ep.problem, tuple(ep.token_ids[: d.start]) + (res_id,), ep.prompt_len),
                f"q:{streams[e]}:{d.index + 1}:{j}",
            )
            for e, ep in enumerate(eps)
            for d in ep.decisions
            if d.index + 1 < cfg.max_attempts
            for j in range(a.n)
        ]
        _, prefixes, names = optimal_requests(eps, cfg, ck, n=a.n, streams=streams)
        t_s = 0.0
        for p, name in rng.sample(q, min(a.sample, len(q))):
            t0 = time.perf_counter()
            rollout(ck.model, ck.tokenizer, ck.format, [p], cfg, seed=0, streams=[name])
            t_s += (time.perf_counter() - t0) / min(a.sample, len(q)) * len(q)
        pick = rng.sample(range(len(prefixes)), min(a.sample, len(prefixes)))
        for i in pick:
            t0 = time.perf_counter()
            optimal_continuations(ck, [prefixes[i]], cfg, seed=0, streams=[names[i]])
            t_s += (time.perf_counter() - t0) / len(pick) * len(prefixes)
        tot_b, tot_s = tot_b + t_b, tot_s + t_s
        print(f"{size:>5} {len(q):>8} {len(prefixes):>9} {t_b:>10.1f} {t_s:>21.0f} {t_s / max(t_b, 1e-9):>6.1f}")
    print(
        f"total: batched {tot_b / 60:.1f} min, one at a time (estimated from {a.sample} of each kind per size) "
        f"{tot_s / 60:.0f} min: {tot_s / max(tot_b, 1e-9):.1f}x (the episodes' own sampling not counted)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(SHIPPED_DIR / "rl"))
    ap.add_argument("--size", default="3x5")
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="a whole regret run (7 sizes x 100) against estimated singles")
    ap.add_argument("--sample", type=int, default=16, help="--full: continuations of each kind timed singly per size")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ck = load_checkpoint(a.checkpoint)
    cfg = SamplingConfig()
    (full if a.full else small)(ck, cfg, a)


if __name__ == "__main__":
    main()
