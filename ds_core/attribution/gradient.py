"""Gradient attribution: how an objective's gradient splits between decision and sampling tokens.

Design notes: docs/DESIGN.md, section `ds_core.attribution.gradient`.
"""

from __future__ import annotations

import math
import time

import torch

from ds_core.attribution.engine import (
    COMPONENTS,
    GENERATED_ROLES,
    JVP_METHODS,
    NORMS_MEMORY_BUDGET,
    NORMS_METHODS,
    AttributionError,
    Engine,
    autodiff_attention,
    check_finite,
    unwrap_checkpoint,
)
from ds_core.attribution.groups import head_is_tied, parameter_groups
from ds_core.attribution.result import AttributionResult, ComponentFigures
from ds_core.attribution.selection import normalise
from ds_core.objectives.terms import group_advantages

__all__ = [
    "AttributionError",
    "AttributionResult",
    "ComponentFigures",
    "attribute",
    "autodiff_attention",
    "grpo_advantage",
    "token_products",
    "COMPONENTS",
    "GENERATED_ROLES",
    "JVP_METHODS",
    "NORMS_METHODS",
    "NORMS_MEMORY_BUDGET",
]


GRAM_CHUNK = 1 << 16  # elements per float64 slice of a Gram product (bounds the float64 copy)


def component_grams(comp, names) -> dict[str, torch.Tensor]:
    """Per parameter, the 3x3 float64 Gram matrix of its (G_S, G_D, G_O) slices: every figure of
    any group is a function of the sum of its parameters' Gram matrices. An absent component (no
    tokens of that role: None in `comp`) has a zero row and column. Each product is accumulated
    over float64 slices of GRAM_CHUNK elements: exact to float64 rounding without a float64 copy
    of the whole gradient (a single [3, n] float64 GEMM took ~5 s at 135M parameters, this ~0.4 s for two components).
    Raises on NaN/inf."""
    keys = [k for k, _ in COMPONENTS]
    present = [j for j, k in enumerate(keys) if comp.get(k) is not None]
    out = {}
    for i, n in enumerate(names):
        x = [comp[keys[j]][i].reshape(-1) for j in present]
        g = torch.zeros(len(present), len(present), dtype=torch.float64, device=x[0].device)
        for c in range(0, x[0].numel(), GRAM_CHUNK):
            xc = torch.stack([v[c : c + GRAM_CHUNK] for v in x]).double()
            g += xc @ xc.T
        if not torch.isfinite(g).all():
            bad = [f"G_{keys[j]}" for r, j in enumerate(present) if not torch.isfinite(x[r]).all()]
            check_finite(g, f"the gradient of {' and '.join(bad) or 'a component'} in parameter {n}")
        m = torch.zeros(3, 3, dtype=torch.float64)
        idx = torch.tensor(present)
        m[idx.unsqueeze(1), idx.unsqueeze(0)] = g.cpu()
        out[n] = m
    return out


def component_figures(name, gram, n_params, n_S, n_D, n_O, params=()) -> ComponentFigures:
    m = gram.tolist()
    nS, nD, nO = (math.sqrt(max(m[k][k], 0.0)) for k in range(3))
    g2 = float(gram.sum())
    nG = math.sqrt(max(g2, 0.0))
    nan, inf = float("nan"), float("inf")
    ratio = nS / nD if nD > 0 else (inf if nS > 0 else nan)
    per_tok = (nS / n_S) / (nD / n_D) if n_S and n_D and nD > 0 else (inf if n_S and nS > 0 else nan)
    cos = m[0][1] / (nS * nD) if nS > 0 and nD > 0 else nan
    share = [sum(m[k]) / g2 if g2 > 0 else nan for k in range(3)]
    return ComponentFigures(
        name,
        int(n_params),
        n_S,
        n_D,
        n_O,
        nS,
        nD,
        nO,
        nG,
        ratio,
        per_tok,
        cos,
        share[0],
        share[1],
        share[2],
        tuple(params),
    )


# ------------------------------------------------------------------------------- public API
def attribute(
    model,
    episode,
    objective: str,
    *,
    advantage: float | None = None,
    ref_model=None,
    clip_eps: float = 0.2,
    norms: bool = True,
    jvp_method: str = "auto",
    norms_method: str = "auto",
    chunk_size: int = 64,
    tokenizer=None,
    ref_tokenizer=None,
    model_hash: str | None = None,
    ref_hash: str | None = None,
    parameters: str = "all",
) -> AttributionResult:
    """Attribute `objective`'s gradient on `episode` to its tokens and components (module docstring).

    `model`/`ref_model` may be transformers causal LMs or ds_core Checkpoints (their content hash
    and tokenizer are then taken from the checkpoint). `advantage` is required by the surrogate
    (a value, or grpo_advantage(...)); `ref_model` by kl_k1/kl_k3. `jvp_method`: "forward"
    (forward-mode JVP), "double_backward", or "auto" (double backward, falling back to forward mode).
    `norms=False` skips the per-token gradient norms (the expensive part); `norms_method`:
    "batched" (is_grads_batched, `chunk_size` tokens at once), "loop", or "auto" (loop on CPU,
    batched elsewhere). `parameters`: which parameters the gradient covers (a spec of
    ds_core.attribution.selection: "all", "last:4", "head", "attn", ...); the rest are held fixed.
    Raises AttributionError on input that cannot give a trustworthy number.
    """
    t_start = time.perf_counter()
    model, h, tok = unwrap_checkpoint(model)
    model_hash, tokenizer = model_hash or h, tokenizer or tok
    if ref_model is not None:
        ref_model, rh, rtok = unwrap_checkpoint(ref_model)
        ref_hash, ref_tokenizer = ref_hash or rh, ref_tokenizer or rtok
    if jvp_method not in JVP_METHODS:
        raise AttributionError(f"jvp_method must be one of {JVP_METHODS}, got {jvp_method!r}")
    if norms_method not in NORMS_METHODS:
        raise AttributionError(f"norms_method must be one of {NORMS_METHODS}, got {norms_method!r}")
    if int(chunk_size) < 1:
        raise AttributionError(f"chunk_size must be >= 1, got {chunk_size}")
    timing = {}
    with autodiff_attention(model) as attn:
        t = time.perf_counter()
        eng = Engine(
            model,
            episode,
            objective,
            advantage=advantage,
            ref_model=ref_model,
            clip_eps=clip_eps,
            tokenizer=tokenizer,
            ref_tokenizer=ref_tokenizer,
            parameters=parameters,
        )
        timing["setup"] = time.perf_counter() - t
        t = time.perf_counter()
        leaves, l = eng.forward()
        timing["forward"] = time.perf_counter() - t
        t = time.perf_counter()
        present = [k for k, _ in COMPONENTS if eng.positions[k]]
        comp, graph = eng.components(l, leaves, present, jvp_method)
        grams = component_grams(comp, eng.names)
        sizes = {n: p.numel() for n, p in leaves.items()}
        n = {k: len(eng.positions[k]) for k, _ in COMPONENTS}
        fig = component_figures("model", sum(grams.values()), sum(sizes.values()), n["S"], n["D"], n["O"])
        if not fig.norm_G > 0:
            raise AttributionError(
                f"the gradient of {objective!r} on this episode is zero (|G| = 0): shares are "
                "undefined. A surrogate with advantage 0 (a GRPO group whose rewards are all equal) "
                "or a KL against an identical reference gives this."
            )
        timing["components"] = time.perf_counter() - t
        t = time.perf_counter()
        prods, pmethod = eng.products(l, leaves, [comp[k] for k in present], jvp_method, graph)
        del graph
        prods = prods.detach().double()
        check_finite(prods, "a per-token inner product <grad l_t, G_k>")
        timing["products"] = time.perf_counter() - t
        a = {k: prods[i] for i, k in enumerate(present)}
        zero_row = torch.zeros(eng.T, dtype=torch.float64, device=prods.device)
        share = sum(a.values()) / (fig.norm_G**2)
        align_D = a["D"] / fig.norm_G_D if fig.norm_G_D > 0 else zero_row + float("nan")
        align_S = a.get("S", zero_row) / fig.norm_G_S if fig.norm_G_S > 0 else zero_row + float("nan")
        gnorm, nmethod, chunk = None, None, None
        if norms:
            t = time.perf_counter()
            gn, nmethod, chunk = eng.norms(l, leaves, chunk_size, norms_method)
            check_finite(gn, "a per-token gradient norm")
            gnorm = tuple(float(x) for x in gn.cpu())
            timing["norms"] = time.perf_counter() - t
        groups = []
        for gname, names in parameter_groups(model, eng.names).items():
            groups.append(
                component_figures(
                    gname, sum(grams[x] for x in names), sum(sizes[x] for x in names), n["S"], n["D"], n["O"], names
                )
            )
        term = l.detach().double().cpu()
        del l, leaves
    timing["total"] = time.perf_counter() - t_start
    tokens = tuple(getattr(episode, "tokens", ()) or ())
    if len(tokens) != eng.T:
        tokens = (
            tuple(tokenizer.convert_ids_to_tokens(list(episode.token_ids)))
            if tokenizer is not None
            else tuple(str(i) for i in episode.token_ids)
        )
    params = {
        "advantage": None if advantage is None else float(advantage),
        "clip_eps": float(clip_eps) if objective == "surrogate" else None,
        "ref_model": ref_hash if "ref_logp" in eng.obj.needs else None,
        "parameters": normalise(parameters),
    }
    method = {
        "products": pmethod,
        "norms": nmethod,
        "chunk_size": chunk,
        "attention": attn,
        "dtype": str(eng.primals[eng.names[0]].dtype).replace("torch.", ""),
    }
    info = {
        "arch": getattr(getattr(model, "config", None), "model_type", None),
        "n_params": fig.n_params,
        "n_params_model": sum(p.numel() for p in eng.fixed.values()),
        "device": str(eng.device),
    }
    as_t = lambda x: tuple(float(v) for v in x.cpu())  # noqa: E731
    return AttributionResult(
        objective=objective,
        params=params,
        method=method,
        tokens=tokens,
        token_ids=tuple(int(i) for i in episode.token_ids),
        roles=tuple(episode.roles),
        segments=tuple(getattr(episode, "segments", ()) or ("",) * eng.T),
        term=as_t(term),
        share=as_t(share),
        align_D=as_t(align_D),
        align_S=as_t(align_S),
        grad_norm=gnorm,
        figures=fig,
        groups=tuple(groups),
        tied_head=head_is_tied(model),
        timing=timing,
        model_hash=model_hash,
        ref_hash=ref_hash if params["ref_model"] else None,
        model_info=info,
    )


def token_products(
    model,
    episode,
    objective: str,
    tangents,
    *,
    advantage=None,
    ref_model=None,
    clip_eps: float = 0.2,
    jvp_method: str = "auto",
) -> torch.Tensor:
    """[k, T] float64: <grad l_t, v_k> for every position t and each tangent v_k (a dict
    {parameter name: tensor} over the model's trainable parameters, missing names = 0)."""
    model, _, _ = unwrap_checkpoint(model)
    if ref_model is not None:
        ref_model = unwrap_checkpoint(ref_model)[0]
    if jvp_method not in JVP_METHODS:
        raise AttributionError(f"jvp_method must be one of {JVP_METHODS}, got {jvp_method!r}")
    with autodiff_attention(model):
        eng = Engine(
            model,
            episode,
            objective,
            advantage=advantage,
            ref_model=ref_model,
            clip_eps=clip_eps,
            tokenizer=None,
            ref_tokenizer=None,
        )
        tans = [[v.get(n, torch.zeros_like(p)).to(p) for n, p in eng.primals.items()] for v in tangents]
        leaves, l = eng.forward()
        prods, _ = eng.products(l, leaves, tans, jvp_method)
    return prods.detach().double()


def grpo_advantage(model, tokenizer, fmt, episode, n: int = 8, seed: int = 0, cfg=None) -> float:
    """The episode's GRPO group-relative advantage: sample `n` rollouts of its problem
    (ds_core.models.rollout, `cfg` default SamplingConfig()) and put the episode in the group with them.

    Choice (documented): the group is the n fresh samples *plus this episode* (n + 1 members), as
    if the episode had been one of the GRPO rollouts of its prompt; rewards are correctness (1/0);
    A = (R - mean) / (std + eps) by ds_core.objectives.group_advantages (unbiased std). A group
    whose rewards are all equal gives A = 0 (the surrogate's gradient then vanishes).
    """
    from ds_core.models.rollout import rollout
    from ds_core.models.sampling import SamplingConfig

    model, _, _ = unwrap_checkpoint(model)
    if getattr(episode, "problem", None) is None:
        raise AttributionError("grpo_advantage needs an episode with a problem (to sample its group)")
    if int(n) < 1:
        raise AttributionError(f"n must be >= 1, got {n}")
    samples = rollout(model, tokenizer, fmt, [episode.problem] * int(n), cfg or SamplingConfig(), seed=seed)
    rewards = [[float(episode.correct)] + [float(s.correct) for s in samples]]
    return float(group_advantages(rewards)[0, 0])
