"""Benchmark: DS-Lens on a real 135M chat model (SmolLM2-135M-Instruct, `make real-model`).

    .venv/bin/python bench/real_model.py [--threads 2] [--repeats 2] [--naive-tokens 12]

All in one process, methods interleaved within each round, minimum over --repeats rounds:
- episodes: two chat episodes sampled with the explorer's prompting (chat template, default system
  prompt and instruction), the ones closest to ~120 and ~280 tokens among a seeded batch;
- `fwd+bwd`: one forward + backward of the summed objective (sft_sum) through the same per-token
  term function as the engine (the unit of cost);
- `attribute(norms=False)`: the full public call (G_S, G_D[, G_O], the per-token products,
  alignments, whole-model and per-group figures), and the same restricted to `last:4` layers;
- `attribute(norms=True)` on the short episode: the per-token gradient norms (one backward per
  generated token) on top;
- `naive loop`: one torch.autograd.grad per generated token (Captum-style), dotted with G; timed
  on the first --naive-tokens generated tokens and projected linearly to all of them (said so in
  the output); the shares of those tokens are compared with attribute()'s (max relative error);
- input attribution of the last decision token (captum integrated gradients, 32 steps);
- rollout tokens/s of ds_core's KV-cached rollout against `model.generate` on the same prompts
  (same temperature/top-p, same max new tokens, batch of 4);
- peak RSS growth of each method (VmHWM reset to the current RSS just before it).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from attribution import _reset_peak, _status_kb  # bench/attribution.py: the peak-RSS readers

REPO = Path(__file__).resolve().parents[1]


def peak_growth(fn) -> tuple[float, object]:
    base = _reset_peak()
    out = fn()
    return _status_kb("VmHWM") / 1024 - base, out


def pick_episodes(ck, cfg, targets=(120, 280)):
    from ds_core.episodes.tasks import sample_problems
    from ds_core.models.rollout import rollout

    probs = sample_problems("3x3", 8, seed=0) + sample_problems("2x2", 4, seed=0)
    eps = rollout(ck.model, ck.tokenizer, ck.format, probs, cfg, seed=0)
    eps = [e for e in eps if "decision" in e.roles]
    return [min(eps, key=lambda e: abs(len(e.token_ids) - t)) for t in targets]


def fwd_bwd(ck, ep):
    from ds_core.attribution.engine import Engine, autodiff_attention

    with autodiff_attention(ck.model):
        e = Engine(
            ck.model, ep, "sft_sum", advantage=None, ref_model=None, clip_eps=0.2, tokenizer=None, ref_tokenizer=None
        )
        leaves, l = e.forward()
        torch.autograd.grad(l.sum(), list(leaves.values()))


def naive_shares(ck, ep, k: int):
    """One backward per generated token for the first k generated tokens: their shares and time."""
    from ds_core.attribution.engine import Engine, autodiff_attention

    with autodiff_attention(ck.model):
        e = Engine(
            ck.model, ep, "sft_sum", advantage=None, ref_model=None, clip_eps=0.2, tokenizer=None, ref_tokenizer=None
        )
        leaves, l = e.forward()
        plist = list(leaves.values())
        G = torch.cat([g.reshape(-1) for g in torch.autograd.grad(l.sum(), plist, retain_graph=True)]).double()
        t = time.perf_counter()
        out = {}
        for pos in e.gen[:k]:
            g = torch.autograd.grad(l[pos], plist, retain_graph=True)
            out[pos] = float(torch.cat([x.reshape(-1) for x in g]).double() @ G / (G @ G))
        per_token = (time.perf_counter() - t) / max(1, len(out))
    return out, per_token, len(e.gen)


def rollout_vs_generate(ck, cfg, n_new: int = 64):
    from ds_core.episodes.tasks import sample_problems
    from ds_core.models.rollout import rollout

    probs = sample_problems("3x3", 4, seed=1)
    cfg1 = type(cfg)(**{**cfg.__dict__, "max_new_tokens": n_new, "max_attempts": 1})
    t = time.perf_counter()
    eps = rollout(ck.model, ck.tokenizer, ck.format, probs, cfg1, seed=0)
    t_roll = time.perf_counter() - t
    n_roll = sum(len(e.generated_ids) for e in eps)
    tok = ck.tokenizer
    prompts = [ck.format.prompt_ids(tok, p) for p in probs]
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.no_grad():
        out = ck.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=n_new,
            pad_token_id=pad,
        )
    t_gen = time.perf_counter() - t
    new = out[:, width:]
    eos = (
        set(ck.model.generation_config.eos_token_id or [])
        if isinstance(ck.model.generation_config.eos_token_id, list)
        else {ck.model.generation_config.eos_token_id}
    )
    n_gen = 0
    for row in new.tolist():
        for x in row:
            n_gen += 1
            if x in eos:
                break
    return n_roll / t_roll, n_gen / t_gen, n_roll, n_gen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "data" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--naive-tokens", type=int, default=12)
    args = ap.parse_args()
    if not Path(args.checkpoint).is_dir():
        sys.exit(f"{args.checkpoint} does not exist: build it with `make real-model` (about a minute)")
    torch.set_num_threads(args.threads)
    from ds_core.attribution.gradient import attribute
    from ds_core.attribution.inputs import input_attribution
    from ds_core.models.checkpoint import load_checkpoint
    from ds_core.models.sampling import SamplingConfig

    ck = load_checkpoint(args.checkpoint)
    n_params = sum(p.numel() for p in ck.model.parameters())
    cfg = SamplingConfig(temperature=0.7, top_p=0.95, max_attempts=2, max_new_tokens=256)
    print(
        f"# {ck.path.name}: {n_params:,} parameters, torch {torch.__version__}, {args.threads} threads, "
        f"{platform.machine()} nproc {os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
    )
    eps = pick_episodes(ck, cfg)
    methods = {
        "fwd+bwd": lambda ep: fwd_bwd(ck, ep),
        "attribute": lambda ep: attribute(ck, ep, "sft_sum", norms=False),
        "attribute last:4": lambda ep: attribute(ck, ep, "sft_sum", norms=False, parameters="last:4"),
    }
    for ep in eps:
        roles = {r: ep.roles.count(r) for r in ("sampling", "decision", "other")}
        print(
            f"\n## episode: T = {len(ep.token_ids)} (prompt {ep.prompt_len}; {roles}); "
            f"verdicts {[d.verdict for d in ep.decisions]}"
        )
        best = {k: float("inf") for k in methods}
        mem, res = {}, {}
        for fn in methods.values():  # warm-up
            fn(ep)
        for _ in range(args.repeats):
            for k, fn in methods.items():
                t = time.perf_counter()
                res[k] = fn(ep)
                best[k] = min(best[k], time.perf_counter() - t)
        for k, fn in methods.items():
            mem[k] = peak_growth(lambda fn=fn: fn(ep))[0]
        unit = best["fwd+bwd"]
        for k in methods:
            print(f"{k:22s} {best[k]:7.2f} s  {best[k] / unit:5.2f}x fwd+bwd  peak RSS +{mem[k]:,.0f} MB")
        r = res["attribute"]
        print("attribute phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r.timing.items()))
        if ep is eps[0]:
            t = time.perf_counter()
            rn = attribute(ck, ep, "sft_sum", norms=True)
            t_norms = time.perf_counter() - t
            ratio = t_norms / unit
            print(f"attribute(norms=True)  {t_norms:7.2f} s  {ratio:5.2f}x fwd+bwd (norms: {rn.method['norms']})")
            shares, per_tok, n_gen = naive_shares(ck, ep, args.naive_tokens)
            err = max(abs(r.share[p] - v) for p, v in shares.items()) / max(abs(v) for v in shares.values())
            proj = unit + per_tok * n_gen
            print(
                f"naive loop             {proj:7.2f} s  (projected: {per_tok:.2f} s/token measured on {len(shares)} "
                f"of {n_gen} generated tokens, + one fwd+bwd); attribute is {proj / best['attribute']:.1f}x faster"
            )
            print(f"max rel err of attribute's shares vs the naive loop on those tokens: {err:.2e}")
            rd = attribute(ck, ep, "sft_sum", norms=False, jvp_method="forward")
            err_d = max(abs(rd.share[p] - v) for p, v in shares.items()) / max(abs(v) for v in shares.values())
            err_fd = max(abs(rd.share[p] - r.share[p]) for p in shares) / max(abs(v) for v in shares.values())
            print(f"  forward-mode products: {err_d:.2e} (vs attribute's {r.method['products']}: {err_fd:.2e})")
            t = time.perf_counter()
            ia = input_attribution(ck.model, ck.tokenizer, ep, "ig", "logprob", targets=[ep.decisions[-1].start])
            print(
                f"input attribution (IG, 32 steps, logprob of the last decision token): "
                f"{time.perf_counter() - t:.2f} s ({len(ia.targets)} target)"
            )
    r_tps, g_tps, n_r, n_g = rollout_vs_generate(ck, cfg)
    print(
        f"\nrollout {r_tps:.1f} tokens/s ({n_r} tokens) vs model.generate {g_tps:.1f} tokens/s ({n_g} tokens): "
        f"{r_tps / g_tps:.2f}x, batch of 4, up to 64 new tokens each"
    )


if __name__ == "__main__":
    main()
