"""ds_core.attribution: the gradient attribution engine against a naive per-token autograd loop on
random-init Llama / Qwen2 / GPT-2 models, the paper's attribution properties on DSFormat episodes,
the result object, parameter groups, and every bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ds_core.attribution.gradient import AttributionError, attribute, grpo_advantage, token_products
from ds_core.attribution.groups import group_of, head_is_tied, parameter_groups
from ds_core.attribution.result import AttributionResult
from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import Problem
from ds_core.models.model import init_model, tiny_config
from ds_core.models.rollout import prompt_prefix, rollout
from ds_core.models.sampling import SamplingConfig
from ds_core.objectives import OBJECTIVES
from ds_core.objectives.terms import group_advantages, token_logprobs

FMT = DSFormat()
SMALL = dict(hidden=32, layers=2, heads=2)


@pytest.fixture(scope="module")
def tok(char_tokenizer):
    return char_tokenizer


_MODELS: dict = {}


def model_of(tok, arch, seed=0, **kw):
    key = (arch, seed, tuple(sorted(kw.items())))
    if key not in _MODELS:
        _MODELS[key] = init_model(tok, arch, seed=seed, **{**SMALL, **kw})
    return _MODELS[key]


def episode(tok, problem, attempts, decisions=True):
    """A DSFormat episode: prompt, the attempts joined by [RESAMPLE], then [STOP]<eos>."""
    text = FMT.trace_text(problem, attempts) if decisions else FMT.prompt_text(problem) + attempts[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return FMT.parse(problem, ids, prompt_prefix(FMT, tok, problem).prompt_len, tok)


@pytest.fixture(scope="module")
def ep(tok):
    p = Problem(47, 86)  # a wrong attempt, [RESAMPLE], the right one, [STOP], <eos>: S, D and O
    e = episode(tok, p, [FMT.attempt_text(p, answer=p.answer + 1), FMT.attempt_text(p)])
    assert {"sampling", "decision", "other"} <= set(e.roles) and e.correct
    return e


# ------------------------------------------------------------------------- the naive reference
def naive(model, ep, objective, advantage=None, ref_model=None, clip_eps=0.2):
    """One torch.autograd.grad per token on the model's own parameters (eager attention):
    terms [T] and the per-token gradient matrix J [T, P] (float64), parameter names, offsets."""
    models = [m for m in (model, ref_model) if m is not None]
    prev = [m.config._attn_implementation for m in models]
    for m in models:
        m.set_attn_implementation("eager")
    try:
        ids = torch.tensor([ep.token_ids])
        T = ids.shape[1]
        gen = [i for i, r in enumerate(ep.roles) if r != "prompt" and i > 0]
        mask = torch.zeros(1, T)
        mask[0, gen] = 1
        named = list(model.named_parameters())
        params = [p for _, p in named]
        kw = {}
        if ref_model is not None:
            with torch.no_grad():
                kw["ref_logp"] = token_logprobs(ref_model, ids)
        if advantage is not None:
            kw["advantages"] = torch.tensor([advantage])
        logp = token_logprobs(model, ids)
        terms = OBJECTIVES[objective].terms(logp, mask, old_logp=logp.detach(), clip_eps=clip_eps, **kw)[0]
        J = torch.zeros(T, sum(p.numel() for p in params), dtype=torch.float64)
        for t in gen:
            g = torch.autograd.grad(terms[t], params, retain_graph=True, allow_unused=True)
            J[t] = torch.cat(
                [(torch.zeros_like(p) if x is None else x).reshape(-1).double() for x, p in zip(g, params)]
            )
    finally:
        for m, impl in zip(models, prev):
            m.set_attn_implementation(impl)
    offsets, o = {}, 0
    for n, p in named:
        offsets[n] = (o, o + p.numel())
        o += p.numel()
    return terms.detach().double(), J, offsets


def naive_figures(J, roles, cols=None):
    Jc = J if cols is None else J[:, cols]
    r = np.array(roles)
    GS, GD, GO = (Jc[torch.tensor(r == x)].sum(0) for x in ("sampling", "decision", "other"))
    G = GS + GD + GO
    nS, nD = GS.norm().item(), GD.norm().item()
    return dict(
        norm_G_S=nS,
        norm_G_D=nD,
        norm_G_O=GO.norm().item(),
        norm_G=G.norm().item(),
        ratio_SD=nS / nD,
        ratio_SD_per_token=(nS / (r == "sampling").sum()) / (nD / (r == "decision").sum()),
        cos_SD=(GS @ GD).item() / (nS * nD),
        share_S=(GS @ G).item() / (G @ G).item(),
        share_D=(GD @ G).item() / (G @ G).item(),
        share_O=(GO @ G).item() / (G @ G).item(),
    ), (GS, GD, G)


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


CASES = [
    ("llama", "surrogate", 0.7),
    ("llama", "surrogate", -1.3),
    ("llama", "kl_k1", None),
    ("llama", "kl_k3", None),
    ("llama", "sft_sum", None),
    ("llama", "sft_mean", None),
    ("llama", "dft", None),
    ("qwen2", "surrogate", -1.3),
    ("qwen2", "kl_k3", None),
    ("qwen2", "sft_mean", None),
    ("qwen2", "dft", None),
    ("gpt2", "surrogate", 0.7),
    ("gpt2", "kl_k1", None),
    ("gpt2", "kl_k3", None),
    ("gpt2", "sft_sum", None),
]


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{a}-{o}-{v}" for a, o, v in CASES])
def test_engine_equals_naive_per_token_loop(tok, ep, case):
    arch, objective, adv = CASES[case]
    model = model_of(tok, arch)
    ref = model_of(tok, arch, seed=1) if objective.startswith("kl") else None
    terms, J, offsets = naive(model, ep, objective, adv, ref)
    fig, (GS, GD, G) = naive_figures(J, ep.roles)
    share, aD, aS = J @ G / (G @ G), J @ GD / GD.norm(), J @ GS / GS.norm()
    norms = J.norm(dim=1)
    gen = [i for i, r in enumerate(ep.roles) if r != "prompt" and i > 0]

    fwd = attribute(
        model,
        ep,
        objective,
        advantage=adv,
        ref_model=ref,
        jvp_method="forward",
        norms_method="batched" if case % 2 else "loop",
        chunk_size=16,
    )
    dbl = attribute(model, ep, objective, advantage=adv, ref_model=ref, jvp_method="double_backward", norms=False)
    assert fwd.method["products"].startswith("jvp_forward") and dbl.method["products"] == "double_backward"
    assert fwd.method["norms"] == ("batched" if case % 2 else "loop") and dbl.grad_norm is None
    for r in (fwd, dbl):
        assert abs(sum(r.share) - 1) < 1e-5
        assert rel(r.share, share) < 1e-5
        assert rel(r.align_D, aD) < 1e-5 and rel(r.align_S, aS) < 1e-5
        assert rel(r.term, terms) < 1e-5
        for k in ("norm_G_S", "norm_G_D", "norm_G_O", "norm_G", "ratio_SD", "ratio_SD_per_token"):
            assert getattr(r.figures, k) == pytest.approx(fig[k], rel=1e-5), k
        for k in ("cos_SD", "share_S", "share_D", "share_O"):
            assert getattr(r.figures, k) == pytest.approx(fig[k], abs=1e-5), k
        # component figures are the naive sums over each role's tokens
        roles = np.array(r.roles)
        for role, k in (("sampling", "share_S"), ("decision", "share_D"), ("other", "share_O")):
            assert np.array(r.share)[roles == role].sum() == pytest.approx(getattr(r.figures, k), abs=1e-6)
        for g in r.groups:  # per-group figures against the naive columns of that group
            cols = torch.cat([torch.arange(*offsets[n]) for n in g.params])
            gfig, _ = naive_figures(J, ep.roles, cols)
            assert g.n_params == len(cols)
            for k in ("norm_G_S", "norm_G_D", "norm_G"):
                assert getattr(g, k) == pytest.approx(gfig[k], rel=1e-5), (g.name, k)
            assert g.cos_SD == pytest.approx(gfig["cos_SD"], abs=1e-5)
    np.testing.assert_allclose(np.array(fwd.grad_norm)[gen], norms[gen].numpy(), rtol=1e-5)
    assert all(fwd.grad_norm[i] == 0 for i, r in enumerate(ep.roles) if r == "prompt")


@pytest.mark.parametrize(
    "arch,objective,adv", [("llama", "sft_sum", None), ("qwen2", "surrogate", -0.8), ("qwen2", "kl_k3", None)]
)
def test_chat_episode_equals_naive_loop(chat_tokenizer, arch, objective, adv):
    """A natural-language chat episode (ChatML prompt through the template, a lexical-marker
    revision, <|im_end|>) on a random-init model over a byte-level BPE vocabulary: the engine's
    figures and per-token numbers equal the naive per-token loop to 1e-4 (fp32)."""
    from ds_core.episodes.formats import format_for

    tok, p = chat_tokenizer, Problem(12, 34)
    fmt = format_for(tok)
    prompt = fmt.prompt_ids(tok, p)
    gen = "12 times 34 is 418. Wait, let me recompute that. So it is 408."
    ids = prompt + tok.encode(gen, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    ep = fmt.parse(p, ids, len(prompt), tok)
    assert {"sampling", "decision"} <= set(ep.roles) and ep.prompt_len > 10
    model = init_model(tok, arch, seed=0, **SMALL)
    ref = init_model(tok, arch, seed=1, **SMALL) if objective.startswith("kl") else None
    terms, J, _ = naive(model, ep, objective, adv, ref)
    fig, (GS, GD, G) = naive_figures(J, ep.roles)
    r = attribute(model, ep, objective, advantage=adv, ref_model=ref, norms=True)
    assert rel(r.term, terms) < 1e-4 and rel(r.share, J @ G / (G @ G)) < 1e-4
    assert rel(r.align_D, J @ GD / GD.norm()) < 1e-4 and rel(r.align_S, J @ GS / GS.norm()) < 1e-4
    gen_pos = [i for i, x in enumerate(ep.roles) if x != "prompt" and i > 0]
    np.testing.assert_allclose(np.array(r.grad_norm)[gen_pos], J.norm(dim=1)[gen_pos].numpy(), rtol=1e-4)
    for k in ("norm_G_S", "norm_G_D", "norm_G_O", "norm_G", "ratio_SD"):
        assert getattr(r.figures, k) == pytest.approx(fig[k], rel=1e-4), k
    for k in ("cos_SD", "share_S", "share_D", "share_O"):
        assert getattr(r.figures, k) == pytest.approx(fig[k], abs=1e-4), k


@pytest.mark.parametrize("spec", ["last:1", "head", "attn", "layers:0-0.mlp,final_norm", "layer.1.attn"])
def test_a_parameter_subset_is_the_naive_loop_on_its_columns(tok, ep, spec):
    """attribute(parameters=spec) is the full per-token Jacobian restricted to the selected
    parameters' columns: every figure and per-token number, and the per-group rows it reports."""
    from ds_core.attribution.selection import describe_selection, select

    model = model_of(tok, "llama")
    terms, J, offsets = naive(model, ep, "sft_sum")
    names = select(model, spec)
    cols = torch.cat([torch.arange(*offsets[n]) for n in names])
    fig, (GS, GD, G) = naive_figures(J, ep.roles, cols)
    Jc = J[:, cols]
    r = attribute(model, ep, "sft_sum", parameters=spec)
    assert r.params["parameters"] == spec and r.figures.n_params == len(cols) < J.shape[1]
    assert rel(r.share, Jc @ G / (G @ G)) < 1e-5 and rel(r.align_D, Jc @ GD / GD.norm()) < 1e-5
    gen = [i for i, x in enumerate(ep.roles) if x != "prompt" and i > 0]
    np.testing.assert_allclose(np.array(r.grad_norm)[gen], Jc.norm(dim=1)[gen].numpy(), rtol=1e-5)
    for k in ("norm_G_S", "norm_G_D", "norm_G", "ratio_SD"):
        assert getattr(r.figures, k) == pytest.approx(fig[k], rel=1e-5), k
    assert sorted(n for g in r.groups for n in g.params) == sorted(names)
    assert describe_selection(model, spec).startswith(f"{spec}: {len(cols):,} of {J.shape[1]:,} parameters")


def test_bad_parameter_specs_say_what_is_wrong(tok, ep):
    from ds_core.attribution.selection import SelectionError, normalise, select

    model = model_of(tok, "llama")
    assert (
        normalise(" Last:1 , attn,attn ") == "last:1,attn" and normalise("") == "all" and normalise("head,all") == "all"
    )
    assert select(model, "last:99") == select(model, "attn,mlp")  # more layers than the model has: all of them
    for spec, msg in [
        ("last:0", "at least 1"),
        ("layers:3-1", "low to high"),
        ("lastk", "last:K"),
        ("layer.7.attn", "layers 0..1"),
        ("wte!", "cannot read"),
    ]:
        with pytest.raises(SelectionError, match=msg):
            attribute(model, ep, "sft_sum", parameters=spec)


# ------------------------------------------------------------------------- theory checks
def test_surrogate_weights_every_token_by_the_advantage(tok, ep):
    """Theorem 3.1: on-policy, grad l_t = -A grad log p_t for every generated token, i.e. the
    surrogate's term gradient is A times the NLL's (sft_sum) along any direction."""
    model = model_of(tok, "llama")
    gen = torch.tensor([i for i, r in enumerate(ep.roles) if r != "prompt"])
    g = torch.Generator().manual_seed(0)
    tangents = [{n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()} for _ in range(2)]
    nll = token_products(model, ep, "sft_sum", tangents)
    for A in (0.7, -1.3):
        surr = token_products(model, ep, "surrogate", tangents, advantage=A)
        assert rel(surr, A * nll) < 1e-5
        big = nll[:, gen].abs() > 1e-3 * nll.abs().max()
        weight = surr[:, gen][big] / nll[:, gen][big]  # the weight of each token: A, for every token
        assert torch.allclose(weight, torch.full_like(weight, A), rtol=1e-4)
        r_s, r_n = (attribute(model, ep, o, advantage=A, norms=False) for o in ("surrogate", "sft_sum"))
        assert rel(r_s.share, r_n.share) < 1e-5  # same shares: G scales by A too
        assert r_s.figures.ratio_SD == pytest.approx(r_n.figures.ratio_SD, rel=1e-5)
    db = token_products(model, ep, "surrogate", tangents, advantage=0.7, jvp_method="double_backward")
    assert rel(db, 0.7 * nll) < 1e-5


LENGTH_PROBLEMS = [
    Problem(7, 8),
    Problem(97, 8),
    Problem(987, 88),
    Problem(987, 8888),
    Problem(987, 888888),
    Problem(987, 888888888),
]


def test_kl_ratio_grows_with_attempt_length(tok):
    """Theorem 3.2: under the k1 KL the sampling:decision ratio |G_S|/|G_D| grows with the attempt
    length L (one attempt, one decision); averaged over two random-init models, fit vs L."""
    Ls, ratios = [], []
    for p in LENGTH_PROBLEMS:
        e = episode(tok, p, [FMT.attempt_text(p)])
        Ls.append(e.roles.count("sampling"))
        ratios.append(
            np.mean(
                [
                    attribute(
                        model_of(tok, "llama", seed=s),
                        e,
                        "kl_k1",
                        ref_model=model_of(tok, "llama", seed=s + 10),
                        norms=False,
                    ).ratio
                    for s in (0, 1)
                ]
            )
        )
    Ls, ratios = np.array(Ls), np.array(ratios)
    slope, _ = np.polyfit(Ls, ratios, 1)
    r2 = np.corrcoef(Ls, ratios)[0, 1] ** 2
    assert slope > 0 and r2 > 0.9, (Ls, ratios, slope, r2)
    assert ratios[-1] > 2.5 * ratios[0]


def test_sft_decision_share_shrinks_as_one_over_length(tok):
    """SFT sum weighs every token by 1, so the decision token's part of the gradient falls as 1/N:
    its share of the per-token gradient norms, sum_D |grad l_t| / sum_t |grad l_t|, fits
    N^-1 (log-log slope); the signed share s_D also falls (it is noisy on a random model)."""
    Ns, norm_share, signed = [], [], []
    model = model_of(tok, "llama", seed=1)
    for p in LENGTH_PROBLEMS[::2] + LENGTH_PROBLEMS[-1:]:
        e = episode(tok, p, [FMT.attempt_text(p)])
        r = attribute(model, e, "sft_sum", norms=True)
        roles, gn = np.array(r.roles), np.array(r.grad_norm)
        Ns.append((roles != "prompt").sum())
        norm_share.append(gn[roles == "decision"].sum() / gn.sum())
        signed.append(r.decision_share)
    slope, _ = np.polyfit(np.log(Ns), np.log(norm_share), 1)
    assert -1.2 < slope < -0.75, (Ns, norm_share, slope)
    # the signed share s_D = <G_D, G>/|G|^2 carries a random-direction cross term on a random-init
    # model (it can even be negative for other seeds); on this one it falls monotonically, ~1/N
    assert all(a > b for a, b in zip(signed, signed[1:])), signed
    assert all(0.25 < s * n < 2 for s, n in zip(signed, Ns)), (signed, Ns)


# ------------------------------------------------------------------------- groups
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_parameter_groups(tok, arch):
    model = model_of(tok, arch)
    groups = parameter_groups(model)
    assert list(groups) == ["embeddings", "layer.0.attn", "layer.0.mlp", "layer.1.attn", "layer.1.mlp", "final_norm"]
    names = [n for n, _ in model.named_parameters()]
    assert sorted(sum(groups.values(), [])) == sorted(names)  # each parameter exactly once
    assert head_is_tied(model)
    if arch == "gpt2":
        assert "transformer.h.0.ln_1.weight" in groups["layer.0.attn"]
        assert "transformer.h.0.ln_2.bias" in groups["layer.0.mlp"]
        assert "transformer.wpe.weight" in groups["embeddings"]
    else:
        assert "model.layers.1.input_layernorm.weight" in groups["layer.1.attn"]
        assert "model.layers.1.post_attention_layernorm.weight" in groups["layer.1.mlp"]
    assert group_of("some.unknown.thing") == "other"
    assert group_of("model.layers.3.weird.weight") == "other"


def test_untied_head_is_its_own_group(tok, ep):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tok, "llama", **SMALL)
    cfg.tie_word_embeddings = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    assert not head_is_tied(model)
    assert parameter_groups(model)["head"] == ["lm_head.weight"]
    r = attribute(model, ep, "sft_sum", norms=False)
    assert not r.tied_head and r.groups[-1].name == "head" and r.group("head").norm_G > 0
    assert attribute(model_of(tok, "llama"), ep, "sft_sum", norms=False).tied_head


# ------------------------------------------------------------------------- result object
def test_result_roundtrip_and_frames(tok, ep):
    model = model_of(tok, "qwen2")
    r = attribute(model, ep, "surrogate", advantage=0.5, model_hash="abc123")
    assert isinstance(r, AttributionResult) and r.model_hash == "abc123"
    assert r.params["advantage"] == 0.5 and r.objective == "surrogate"
    assert {"setup", "forward", "components", "products", "norms", "total"} <= set(r.timing)
    assert r.tokens[-2:] == ("[STOP]", "<eos>") and len(r.tokens) == len(ep.token_ids)
    back = AttributionResult.from_json(r.to_json())
    assert back == r
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.share = ()
    df = r.to_pandas()
    assert len(df) == len(ep.token_ids) and df["share"].sum() == pytest.approx(1, abs=1e-6)
    assert list(df.columns[:5]) == ["pos", "token", "token_id", "role", "segment"]
    assert df.loc[df.role == "prompt", "share"].eq(0).all()
    gf = r.groups_frame()
    assert list(gf["name"]) == [g.name for g in r.groups] + ["model"]
    # non-finite figures survive JSON as strings
    odd = dataclasses.replace(r, figures=dataclasses.replace(r.figures, ratio_SD=float("inf"), cos_SD=float("nan")))
    again = AttributionResult.from_json(odd.to_json())
    assert again.figures.ratio_SD == float("inf") and math.isnan(again.figures.cos_SD)


def test_model_settings_restored_and_checkpoint_hash(tok, ep, tmp_path):
    from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint

    model = model_of(tok, "llama")
    model.train()
    try:
        attribute(model, ep, "dft", norms=False)
        assert model.training and model.config._attn_implementation == "sdpa"
    finally:
        model.eval()
    save_checkpoint(tmp_path / "ck", model, tok, Card(condition="test", code_version="test"))
    ck = load_checkpoint(tmp_path / "ck")
    r = attribute(ck, ep, "kl_k1", ref_model=ck, norms=False)
    assert r.model_hash == ck.hash and r.ref_hash == ck.hash and r.params["ref_model"] == ck.hash


class _NoForwardAD(torch.autograd.Function):
    """Identity with a backward but no forward-mode rule."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g


class _NanGrad(torch.autograd.Function):
    """Identity whose backward is NaN: finite terms, NaN gradients."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_auto_falls_back_to_double_backward(tok, ep):
    model = init_model(tok, "llama", **SMALL)
    ref = attribute(model, ep, "sft_mean", norms=False)
    h = model.model.layers[0].mlp.register_forward_hook(lambda m, i, o: _NoForwardAD.apply(o))
    try:
        r = attribute(model, ep, "sft_mean", jvp_method="auto", norms=False)
        assert r.method["products"] == "double_backward"
        assert rel(r.share, ref.share) < 1e-5
        with pytest.raises(AttributionError, match="double_backward"):
            attribute(model, ep, "sft_mean", jvp_method="forward", norms=False)
    finally:
        h.remove()


def test_auto_falls_back_to_forward_mode(tok, ep, monkeypatch):
    """ "auto" is the double-backward JVP; a graph that cannot be differentiated twice gets forward mode."""
    import ds_core.attribution.engine as A

    model = model_of(tok, "llama")
    want = attribute(model, ep, "sft_sum", norms=False)
    assert want.method["products"] == "double_backward"

    def no_double(*a, **k):
        raise RuntimeError("derivative for this op is not implemented twice")

    monkeypatch.setattr(A.Engine, "products_double_backward", no_double)
    got = attribute(model, ep, "sft_sum", norms=False)
    assert got.method["products"].startswith("jvp_forward") and rel(got.share, want.share) < 1e-5


def test_forward_ad_loop_when_vmap_fails(tok, ep, monkeypatch):
    """Without vmap (an op with no batching rule) the tangents go one at a time through
    torch.autograd.forward_ad; a single tangent always does."""
    import ds_core.attribution.engine as A

    model = model_of(tok, "qwen2")
    want = attribute(model, ep, "kl_k1", ref_model=model_of(tok, "qwen2", seed=1), norms=False)

    def no_vmap(*a, **k):
        raise RuntimeError("no batching rule")

    monkeypatch.setattr(A, "vmap", no_vmap)
    got = attribute(model, ep, "kl_k1", ref_model=model_of(tok, "qwen2", seed=1), norms=False, jvp_method="forward")
    assert got.method["products"] == "jvp_forward"
    assert rel(got.share, want.share) < 1e-5 and rel(got.align_D, want.align_D) < 1e-5
    v = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    one = token_products(model, ep, "dft", [v], jvp_method="forward")
    assert rel(one, token_products(model, ep, "dft", [v], jvp_method="double_backward")) < 1e-5


# ------------------------------------------------------------------------- bad input
def test_bad_inputs(tok, ep, bpe_tokenizer):
    model = model_of(tok, "llama")
    short = init_model(tok, "llama", max_positions=32, **SMALL)
    with pytest.raises(AttributionError, match="context"):
        attribute(short, ep, "sft_sum")
    p = Problem(47, 86)
    undecided = episode(tok, p, [FMT.attempt_text(p)], decisions=False)
    with pytest.raises(AttributionError, match="checkpoint/tagger has no decision tokens"):
        attribute(model, undecided, "sft_sum")
    prompt_only = FMT.parse(p, list(ep.token_ids[: ep.prompt_len]), ep.prompt_len, tok)
    with pytest.raises(AttributionError, match="no generated tokens"):
        attribute(model, prompt_only, "sft_sum")
    other_vocab = init_model(bpe_tokenizer, "llama", **SMALL)
    with pytest.raises(AttributionError, match="vocabulary"):
        attribute(model, ep, "kl_k1", ref_model=other_vocab)
    with pytest.raises(AttributionError, match="unknown objective"):
        attribute(model, ep, "ppo")
    with pytest.raises(AttributionError, match="advantage"):
        attribute(model, ep, "surrogate")
    with pytest.raises(AttributionError, match="ref_model"):
        attribute(model, ep, "kl_k3")
    with pytest.raises(AttributionError, match="zero"):
        attribute(model, ep, "surrogate", advantage=0.0)
    with pytest.raises(AttributionError, match="jvp_method"):
        attribute(model, ep, "sft_sum", jvp_method="reverse")
    assert issubclass(AttributionError, ValueError)


def test_nan_weights_and_nan_gradients_raise(tok, ep):
    model = init_model(tok, "gpt2", **SMALL)
    h = model.transformer.h[1].mlp.register_forward_hook(lambda m, i, o: _NanGrad.apply(o))
    try:
        with pytest.raises(AttributionError, match="gradient of G_S .* not finite"):
            attribute(model, ep, "sft_sum", jvp_method="double_backward")
    finally:
        h.remove()
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(AttributionError, match="not finite"):
        attribute(model, ep, "sft_sum")


# ------------------------------------------------------------------------- GRPO advantage
def test_grpo_advantage_puts_the_episode_in_its_group(tok, ep):
    model = model_of(tok, "llama")
    cfg = SamplingConfig(max_attempts=1)
    a = grpo_advantage(model, tok, FMT, ep, n=3, seed=5, cfg=cfg)
    samples = rollout(model, tok, FMT, [ep.problem] * 3, cfg, seed=5)
    expect = group_advantages([[float(ep.correct)] + [float(s.correct) for s in samples]])[0, 0]
    assert a == pytest.approx(float(expect))
    assert a > 0  # the episode is correct; a random model's samples are not
    with pytest.raises(AttributionError, match="problem"):
        grpo_advantage(model, tok, FMT, dataclasses.replace(ep, problem=None), n=2)
