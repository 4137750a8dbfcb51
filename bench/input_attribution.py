"""Benchmark: batched input attribution vs Captum's LLMGradientAttribution, measured in one run.

    .venv/bin/python bench/input_attribution.py [--threads 1] [--n-steps 32] [--repeats 3] [--quick]

Same model (ds_core.models.model.init_model(tok, "llama") defaults, random init, ~0.8M parameters),
same episode (123 x 4567, two attempts: a wrong one, [RESAMPLE], the right one, [STOP]) and the
same targets (its decision tokens, log-prob target). Captum is run two ways:

  as designed   LLMGradientAttribution.attribute(TextTokenInput(prompt), target=generation up to
                the last target): it attributes every generated token up to there (one forward
                and backward per token, on a growing prefix) and only to the PROMPT; the decision
                rows are read off.
  per prefix    one LLMGradientAttribution call per target with everything before the target as
                its input: the only way to make it attribute to earlier generated tokens, i.e.
                the same output as ds_core.attribution.inputs.

Methods that coincide: input_x_gradient = LayerGradientXActivation on the embedding layer (on the
prompt for "as designed", on every earlier token for "per prefix"); ig = LayerIntegratedGradients
on the embedding layer with the <pad> baseline (per prefix only: as designed, captum keeps earlier
generated tokens fixed on the path). Saliency has no LLMGradientAttribution counterpart; its time
is printed for reference. A second table uses every generated token as a target (input x
gradient), where the batching has more to share.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from ds_core.attribution.inputs import input_attribution  # noqa: E402
from ds_core.episodes.formats import DSFormat  # noqa: E402
from ds_core.episodes.tasks import Problem  # noqa: E402
from ds_core.episodes.tokenizer import build_tokenizer  # noqa: E402
from ds_core.models.model import init_model, n_params  # noqa: E402


def build_episode(tok, problem: Problem):
    f = DSFormat()
    text = f.trace_text(problem, [f.attempt_text(problem, answer=problem.answer + 10), f.attempt_text(problem)])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pl = len(tok(f.prompt_text(problem), add_special_tokens=False)["input_ids"])
    return f.parse(problem, ids, pl, tok)


def timed(fn, repeats: int):
    """(median seconds, last result) over `repeats` calls after one warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


class Captum:
    """Captum's LLMGradientAttribution on the model's embedding layer, the two ways above."""

    def __init__(self, model, tok, method: str, n_steps: int):
        from captum.attr import LayerGradientXActivation, LayerIntegratedGradients, LLMGradientAttribution

        layer = model.get_input_embeddings()
        algo = LayerIntegratedGradients(model, layer) if method == "ig" else LayerGradientXActivation(model, layer)
        self.llm, self.tok, self.method = LLMGradientAttribution(algo, tok), tok, method
        self.kw = {"n_steps": n_steps} if method == "ig" else {}

    def _inp(self, ids):
        from captum.attr import TextTokenInput

        return TextTokenInput(self.tok.decode(ids), self.tok, baselines=self.tok.pad_token_id)

    def as_designed(self, ids, pl: int, targets: list[int]) -> np.ndarray:
        """[n_targets, pl]: the prompt attributions of the requested target rows."""
        gen = torch.tensor(ids[pl : max(targets) + 1])
        res = self.llm.attribute(self._inp(ids[:pl]), target=gen, **self.kw)
        return res.token_attr.detach().double().numpy()[[t - pl for t in targets]]

    def per_prefix(self, ids, targets: list[int]) -> np.ndarray:
        """[n_targets, T]: one call per target, all earlier tokens."""
        out = np.zeros((len(targets), len(ids)))
        for i, t in enumerate(targets):
            res = self.llm.attribute(self._inp(ids[:t]), target=torch.tensor([ids[t]]), **self.kw)
            out[i, :t] = res.token_attr[0].detach().double().numpy()
        return out


def max_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = float(np.abs(a - b).max())
    return d, d / max(float(np.abs(b).max()), 1e-30)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (median) for the fast runs")
    ap.add_argument(
        "--quick", action="store_true", help="skip the slowest run (IG through LLMGradientAttribution as designed)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import captum

    tok = build_tokenizer()
    model = init_model(tok, "llama")
    ep = build_episode(tok, Problem(123, 4567))
    ids, pl = list(ep.token_ids), ep.prompt_len
    targets = ep.positions("decision")
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} "
        f"torch thread(s); python {platform.python_version()}, torch {torch.__version__}, "
        f"captum {captum.__version__}"
    )
    print(
        f"model: random-init llama, {n_params(model):,} parameters; episode: 123x4567, 2 attempts, "
        f"{len(ids)} tokens (prompt {pl}); targets: decision tokens at {targets} "
        f"({', '.join(ep.tokens[t] for t in targets)}), log-prob target; IG n_steps={args.n_steps}"
    )
    print()
    header = f"{'method':<18}{'ours s':>9}{'captum s':>10}{'ratio':>8}  {'max |diff| (rel)':<22}captum run"
    print(header)
    print("-" * len(header))

    def row(name, ours_s, theirs_s, diff, how):
        ratio = f"{theirs_s / ours_s:7.1f}x" if theirs_s else "      -"
        cap = f"{theirs_s:10.3f}" if theirs_s else f"{'-':>10}"
        d = f"{diff[0]:.1e} ({diff[1]:.1e})" if diff else "-"
        print(f"{name:<18}{ours_s:9.3f}{cap}{ratio}  {d:<22}{how}")

    for method in ("input_x_gradient", "ig"):
        ours_s, ours = timed(
            lambda: input_attribution(model, tok, ep, method, "logprob", targets, n_steps=args.n_steps), args.repeats
        )
        cap = Captum(model, tok, method, args.n_steps)
        pre_s, pre = timed(lambda: cap.per_prefix(ids, targets), args.repeats)
        row(method, ours_s, pre_s, max_diff(ours.matrix, pre), "per prefix (all earlier tokens)")
        if method == "ig" and args.quick:
            row(method, ours_s, None, None, "as designed: skipped (--quick)")
            continue
        cap.as_designed(ids, pl, [pl])  # warm-up
        t0 = time.perf_counter()
        des = cap.as_designed(ids, pl, targets)
        des_s = time.perf_counter() - t0
        diff = max_diff(ours.matrix[:, :pl], des) if method == "input_x_gradient" else None
        row(
            method,
            ours_s,
            des_s,
            diff,
            f"as designed ({max(targets) - pl + 1} generated targets, prompt only"
            + ("" if diff else "; IG path differs")
            + ")",
        )
    sal_s, _ = timed(lambda: input_attribution(model, tok, ep, "saliency", "logprob", targets), args.repeats)
    row("saliency", sal_s, None, None, "no LLMGradientAttribution counterpart")
    fmt = lambda r: ", ".join(f"{d:+.2e} (rel {x:.1e})" for d, x in zip(r.deltas, r.relative_deltas))  # noqa: E731
    print(f"\nIG convergence delta per target (ours, n_steps={args.n_steps}): <pad> baseline {fmt(ours)}")
    unk = input_attribution(model, tok, ep, "ig", "logprob", targets, n_steps=args.n_steps, baseline=tok.unk_token_id)
    print(
        f"  (<pad> is the zero vector in a random-init Llama, where IG cannot converge: "
        f"see ds_core/attribution/inputs.py; <unk> baseline: {fmt(unk)})"
    )

    # every generated token as a target: where batching has the most to share
    allt = list(range(pl, len(ids)))
    print(f"\nall {len(allt)} generated tokens as targets, input_x_gradient:")
    ours_s, ours = timed(lambda: input_attribution(model, tok, ep, "input_x_gradient", "logprob", allt), args.repeats)
    cap = Captum(model, tok, "input_x_gradient", args.n_steps)
    t0 = time.perf_counter()
    pre = cap.per_prefix(ids, allt)
    pre_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    des = cap.as_designed(ids, pl, allt)
    des_s = time.perf_counter() - t0
    print(header)
    print("-" * len(header))
    row("input_x_gradient", ours_s, pre_s, max_diff(ours.matrix, pre), "per prefix (all earlier tokens)")
    row("input_x_gradient", ours_s, des_s, max_diff(ours.matrix[:, :pl], des), "as designed (prompt only)")
    print(
        f"(ours: {ours.timing['chunks']} forward+backward chunks of "
        f"{'/'.join(map(str, sorted(set(ours.timing['chunk_sizes']))))} targets, "
        f"jacobian={ours.params['jacobian']})"
    )


if __name__ == "__main__":
    main()
