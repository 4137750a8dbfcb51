"""Memory of attribute() on a 1B-parameter model at 2,000 tokens, on the CPU.

    .venv/bin/python bench/memory_1b.py [--tokens 2000] [--params last:2] [--threads 2]

A random-init Llama with Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 heads / 8 KV heads,
MLP 8192, vocabulary 128,256, tied head: 1.24B parameters, float32), and a synthetic episode of
--tokens tokens (a 100-token prompt, then sampling tokens, a decision token every 400 and at the
end). Prints the peak RSS of the whole process (VmHWM) after loading and after attribute(), and the
time. Random weights: the numbers are about memory and time, not about what a trained model does.

How memory is bounded: with `parameters=` a subset (ds_core.attribution.selection), the other
parameters enter the pass as constants, so autograd records a graph only from the first selected
layer up, and the component gradients are the subset's size. The whole parameter vector at 2,000
tokens needs the weights (5 GB), two or three gradient copies (5 GB each) and the graph of every
layer with eager attention (32 heads x 2000^2 floats = 0.5 GB of attention weights per layer): more
than 20 GB, so a 1B model is attributed on a subset (the last layers, the MLPs, ...).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 2**20  # GiB
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--params", default="last:2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--objective", default="sft_sum")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ds_core.attribution.gradient import attribute

    cfg = LlamaConfig(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    t = time.perf_counter()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {n / 1e9:.2f}B parameters, built in {time.perf_counter() - t:.0f} s; peak RSS {vm('VmHWM'):.1f} GiB")
    T = args.tokens
    ids = torch.randint(1000, 100000, (T,), generator=torch.Generator().manual_seed(0)).tolist()
    roles = ["prompt"] * 100 + ["sampling"] * (T - 100)
    for i in list(range(500, T, 400)) + [T - 1]:
        roles[i] = "decision"
    ep = SimpleNamespace(token_ids=ids, roles=roles, flags=(), tokens=(), segments=())
    t = time.perf_counter()
    r = attribute(model, ep, args.objective, norms=False, parameters=args.params)
    dt = time.perf_counter() - t
    print(
        f"attribute({args.objective}, T={T}, parameters={args.params}): {dt:.0f} s "
        f"({', '.join(f'{k} {v:.0f}' for k, v in r.timing.items())}); {r.figures.n_params / 1e6:.1f}M parameters "
        f"attributed; ratio |G_S|/|G_D| {r.figures.ratio_SD:.3g}; products {r.method['products']}"
    )
    print(f"peak RSS of the process: {vm('VmHWM'):.1f} GiB (current {vm('VmRSS'):.1f} GiB)")


if __name__ == "__main__":
    main()
