"""Benchmark: per-token shares for all tokens via JVP vs the naive per-token backward loop.

    .venv/bin/python bench/attribution.py [--threads 1] [--repeats 3] [--no-memory]

On a random-init DS-Lens Llama at its default size (~0.8M parameters) and two DSFormat episodes
(T ~ 110: one 3x8 attempt; T ~ 500: four 3x9 attempts), all in one process:
- `fwd+bwd`: one forward + backward of the summed objective (the unit of cost);
- `shares (JVP)`: what shares alone need: forward + backward (G) + one forward-mode JVP along G;
- `shares (dbl-bwd)`: the same with the double-backward JVP;
- `attribute(norms=False)`: the full engine (G_S, G_D, G_O, three tangents, per-group table);
- `naive loop`: forward once, then one torch.autograd.grad per token (how Captum-style per-token
  gradient attribution works), each flattened and dotted with G;
- max relative error of the JVP shares against the loop (max |a-b| / max |b|), shares' sum;
- per-token norms at T ~ 110: chunked batched backward vs the loop;
- peak memory at T ~ 500: peak RSS (VmHWM, reset to the current RSS just before the method) growth
  in a fresh subprocess per method.
All timings are the minimum over --repeats rounds with the methods interleaved in each round (the
naive loop at T ~ 500: one run, in the middle of the first round), objective sft_sum, eager
attention for every method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from ds_core.attribution.engine import Engine, autodiff_attention  # noqa: E402
from ds_core.attribution.gradient import attribute  # noqa: E402
from ds_core.episodes.formats import DSFormat  # noqa: E402
from ds_core.episodes.tasks import sample_problems  # noqa: E402
from ds_core.episodes.tokenizer import build_tokenizer  # noqa: E402
from ds_core.models.model import init_model, n_params  # noqa: E402
from ds_core.models.rollout import prompt_prefix  # noqa: E402
from ds_core.objectives import OBJECTIVES  # noqa: E402
from ds_core.objectives.terms import token_logprobs  # noqa: E402

OBJ = "sft_sum"
LAYOUTS = {110: [("3x8", 1)], 500: [("3x9", 4), ("3x10", 4), ("3x11", 4)]}


def build_episode(tok, fmt, target: int):
    """The seeded problem of the layout whose trace length is closest to `target` tokens."""
    best = None
    for size, k in LAYOUTS[target]:
        for p in sample_problems(size, 40, seed=0):
            wrong = [fmt.attempt_text(p, answer=p.answer + d) for d in range(1, k)]
            ids = tok(fmt.trace_text(p, wrong + [fmt.attempt_text(p)]), add_special_tokens=False)["input_ids"]
            if best is None or abs(len(ids) - target) < abs(len(best[1]) - target):
                best = (p, ids)
    p, ids = best
    return fmt.parse(p, ids, prompt_prefix(fmt, tok, p).prompt_len, tok)


def tmin(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def interleaved(fns: dict, rounds: int, naive, naive_rounds: int):
    """Min time of each method over `rounds` rounds, the methods interleaved within a round so
    that load from other processes on a shared machine hits all of them alike; the naive loop
    runs in the middle of the first `naive_rounds` rounds."""
    for fn in fns.values():  # warm-up
        fn()
    best = {k: float("inf") for k in list(fns) + ["naive"]}
    out = {}
    for i in range(rounds):
        items = list(fns.items())
        half = len(items) // 2
        seq = items[:half] + ([("naive", naive)] if i < naive_rounds else []) + items[half:]
        for k, fn in seq:
            t = time.perf_counter()
            out[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best, out


def fwd_bwd(eng):
    leaves, l = eng.forward()
    return torch.autograd.grad(l.sum(), list(leaves.values()))


def shares_jvp(eng, method="forward"):
    """Shares only: forward + backward for G, then one JVP (forward or double backward) along G."""
    leaves, l = eng.forward()
    G = eng.grads(l, leaves, eng.mask[0])
    g2 = sum(float(x.double().pow(2).sum()) for x in G)
    if method == "forward":
        prods, _ = eng.products_forward([G])
    else:
        prods = eng.products_double_backward(l, leaves, [G])
    return prods[0].detach().double() / g2


def shares_naive(model, ep):
    """Forward once, one backward for G, then one backward per generated token, each flattened and
    dotted with G (per-token gradients are not kept: memory stays at one gradient)."""
    ids = torch.tensor([ep.token_ids])
    gen = [i for i, r in enumerate(ep.roles) if r != "prompt" and i > 0]
    mask = torch.zeros(1, ids.shape[1])
    mask[0, gen] = 1
    params = [p for p in model.parameters()]
    terms = OBJECTIVES[OBJ].terms(token_logprobs(model, ids), mask)[0]
    flat = lambda g: torch.cat(
        [
            (torch.zeros_like(p) if x is None else x).reshape(-1).double()  # noqa: E731
            for x, p in zip(g, params)
        ]
    )
    G = flat(torch.autograd.grad(terms.sum(), params, retain_graph=True, allow_unused=True))
    g2 = float(G @ G)
    out = torch.zeros(ids.shape[1], dtype=torch.float64)
    for t in gen:
        g = torch.autograd.grad(terms[t], params, retain_graph=True, allow_unused=True)
        out[t] = float(flat(g) @ G) / g2
    return out


def setup(threads):
    torch.set_num_threads(threads)
    tok, fmt = build_tokenizer(), DSFormat()
    return tok, fmt, init_model(tok, "llama")


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def _reset_peak() -> float:
    """Reset the peak RSS (VmHWM) to the current RSS where the kernel allows it; the baseline (MB)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS") / 1024
    except OSError:
        return _status_kb("VmHWM") / 1024


def mem_child(method: str, threads: int):
    """Run one method once at T ~ 500 in this fresh process; print the peak RSS growth (MB) as JSON."""
    tok, fmt, model = setup(threads)
    ep = build_episode(tok, fmt, 500)
    attribute(model, build_episode(tok, fmt, 110), OBJ, norms=False)  # warm-up: lazy imports, kernels
    with autodiff_attention(model):
        eng = Engine(model, ep, OBJ, advantage=None, ref_model=None, clip_eps=0.2, tokenizer=None, ref_tokenizer=None)
        base = _reset_peak()
        if method == "fwd_bwd":
            fwd_bwd(eng)
        elif method == "shares_jvp":
            shares_jvp(eng)
        elif method == "shares_dbl":
            shares_jvp(eng, "double_backward")
        elif method == "naive":
            shares_naive(model, ep)
    if method == "attribute":
        base = _reset_peak()
        attribute(model, ep, OBJ, norms=False)
    elif method == "attribute_norms_batched":
        base = _reset_peak()
        r = attribute(model, ep, OBJ, norms=True, norms_method="batched", chunk_size=64)
        method += f" (chunk {r.method['chunk_size']})"
    elif method == "attribute_norms_loop":
        base = _reset_peak()
        attribute(model, ep, OBJ, norms=True, norms_method="loop")
    peak = _status_kb("VmHWM") / 1024
    print(
        json.dumps(
            {"method": method, "T": len(ep.token_ids), "base_mb": base, "peak_mb": peak, "delta_mb": peak - base}
        )
    )


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.machine()}, nproc {os.cpu_count()}, CPU {cpu}, torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--mem-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mem_child:
        return mem_child(args.mem_child, args.threads)
    tok, fmt, model = setup(args.threads)
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")
    print(f"model: random-init llama, {n_params(model):,} parameters; objective {OBJ}")
    for target in (110, 500):
        ep = build_episode(tok, fmt, target)
        T = len(ep.token_ids)
        rep = args.repeats
        with autodiff_attention(model):
            eng = Engine(
                model, ep, OBJ, advantage=None, ref_model=None, clip_eps=0.2, tokenizer=None, ref_tokenizer=None
            )
            fns = {
                "fb": lambda: fwd_bwd(eng),
                "jvp": lambda: shares_jvp(eng),
                "dbl": lambda: shares_jvp(eng, "double_backward"),
                "attr": lambda: attribute(model, ep, OBJ, norms=False),
            }
            best, out = interleaved(fns, rep, naive=lambda: shares_naive(model, ep), naive_rounds=rep if T < 200 else 1)
        t_fb, t_jvp, t_dbl, t_attr, t_naive = (best[k] for k in ("fb", "jvp", "dbl", "attr", "naive"))
        s_jvp, s_dbl, r, s_naive = out["jvp"], out["dbl"], out["attr"], out["naive"]
        err = lambda a: float((a - s_naive).abs().max() / s_naive.abs().max())  # noqa: E731
        err_attr = err(torch.tensor(r.share, dtype=torch.float64))
        print(
            f"\nT = {T} tokens ({ep.problem.size}, {ep.n_attempts} attempt(s), "
            f"{len(ep.positions('sampling'))} sampling / {len(ep.positions('decision'))} decision)"
        )
        print(f"  fwd+bwd (unit)           {t_fb * 1e3:9.1f} ms")
        print(
            f"  shares (JVP)             {t_jvp * 1e3:9.1f} ms  = {t_jvp / t_fb:5.2f}x fwd+bwd  "
            f"speed-up vs loop {t_naive / t_jvp:6.1f}x  max rel err {err(s_jvp):.1e}  "
            f"sum {float(s_jvp.sum()):.6f}"
        )
        print(
            f"  shares (dbl-bwd)         {t_dbl * 1e3:9.1f} ms  = {t_dbl / t_fb:5.2f}x fwd+bwd  "
            f"speed-up vs loop {t_naive / t_dbl:6.1f}x  max rel err {err(s_dbl):.1e}"
        )
        print(
            f"  attribute(norms=False)   {t_attr * 1e3:9.1f} ms  = {t_attr / t_fb:5.2f}x fwd+bwd  "
            f"speed-up vs loop {t_naive / t_attr:6.1f}x  max rel err {err_attr:.1e}  "
            f"[{r.method['products']}]"
        )
        print(f"  naive per-token loop     {t_naive * 1e3:9.1f} ms  = {t_naive / t_fb:5.1f}x fwd+bwd")
        if target == 110:
            tl, _ = tmin(lambda: attribute(model, ep, OBJ, norms_method="loop"), 1)
            tb, _ = tmin(lambda: attribute(model, ep, OBJ, norms_method="batched", chunk_size=64), 1)
            print(f"  attribute(norms=True)    loop {tl * 1e3:.0f} ms, batched(chunk 64) {tb * 1e3:.0f} ms")
    if not args.no_memory:
        print("\npeak memory at T ~ 500 (peak RSS growth over the method, fresh process per method):")
        for m in (
            "fwd_bwd",
            "shares_jvp",
            "shares_dbl",
            "attribute",
            "attribute_norms_loop",
            "attribute_norms_batched",
            "naive",
        ):
            out = (
                subprocess.run(
                    [sys.executable, __file__, "--mem-child", m, "--threads", str(args.threads)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            d = json.loads(out)
            print(f"  {d['method']:34s} +{d['delta_mb']:7.1f} MB  (process peak {d['peak_mb']:.0f} MB, T = {d['T']})")


if __name__ == "__main__":
    main()
