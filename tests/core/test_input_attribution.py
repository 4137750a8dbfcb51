"""Input attribution (ds_core.attribution.inputs): batched target x source attributions.

Checked against a naive autograd loop (one forward and one backward per target on the full
episode), against captum used the plain way (one call per target), against captum's own
LLMGradientAttribution where the methods coincide, and against IG's completeness axiom; on
random-init Llama, Qwen2 and GPT-2 configs.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import ds_core.attribution.inputs as ia
from ds_core.attribution.inputs import InputAttributionError, InputAttributionResult, input_attribution
from ds_core.episodes.formats import DSFormat, TextFormat
from ds_core.episodes.tasks import Problem
from ds_core.episodes.tokenizer import decision_token_ids
from ds_core.models.model import init_model

ARCHS = ("llama", "qwen2", "gpt2")
PROBLEM = Problem(123, 4567)


@pytest.fixture(scope="module")
def tok(char_tokenizer):
    return char_tokenizer


@pytest.fixture(scope="module")
def episode(tok):
    """3x4, two attempts (the first wrong, then [RESAMPLE]), [STOP] <eos>: 139 tokens."""
    f = DSFormat()
    text = f.trace_text(PROBLEM, [f.attempt_text(PROBLEM, answer=PROBLEM.answer + 10), f.attempt_text(PROBLEM)])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pl = len(tok(f.prompt_text(PROBLEM), add_special_tokens=False)["input_ids"])
    ep = f.parse(PROBLEM, ids, pl, tok)
    assert [d.verdict for d in ep.decisions] == ["RESAMPLE", "STOP"]
    return ep


@pytest.fixture(scope="module")
def models(tok):
    return {a: init_model(tok, a, hidden=32, layers=2, heads=2) for a in ARCHS}


def naive(model, tok, ids, t, kind):
    """One target the slow obvious way: full-episode forward with inputs_embeds requiring
    grad, backward of the target function. Returns (grad [T, H], embeds [T, H])."""
    emb = model.get_input_embeddings()
    E = emb(torch.tensor([ids])).detach().requires_grad_(True)
    logits = model(inputs_embeds=E).logits[0, t - 1].float()
    if kind == "logprob":
        f = logits.log_softmax(-1)[ids[t]]
    else:
        d = decision_token_ids(tok)
        f = logits[d["STOP"]] - logits[d["RESAMPLE"]]
    (g,) = torch.autograd.grad(f, E)
    return g[0].double().numpy(), E[0].detach().double().numpy()


def close(actual, desired, tol=1e-5, scale=None):
    """Equal to `tol` relative to the scale of `desired` (max |desired|, or `scale`): summed-over-
    hidden attributions cancel, so elementwise relative error is meaningless near 0."""
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape
    if desired.ndim == 2:  # a matrix: row by row (each target has its own scale)
        for a, d in zip(actual, desired):
            close(a, d, tol)
        return
    scale = max(np.abs(desired).max() if scale is None else scale, 1e-12)
    err = np.abs(actual - desired).max()
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol} x scale {scale:.3g}"


def logprob_targets(ep):
    pl = ep.prompt_len
    return [pl, pl + 1, pl + 17, *ep.positions("decision"), len(ep.token_ids) - 1]


# ------------------------------------------------------------------------------ equal to naive
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["logprob", "contrastive"])
def test_saliency_and_input_x_gradient_equal_naive_autograd(models, tok, episode, arch, kind):
    model = models[arch]
    ids = list(episode.token_ids)
    targets = logprob_targets(episode) if kind == "logprob" else None
    sal_l2 = input_attribution(model, tok, episode, "saliency", kind, targets)
    sal_sum = input_attribution(model, tok, episode, "saliency", kind, targets, aggregate="sum")
    ixg = input_attribution(model, tok, episode, "input_x_gradient", kind, targets)
    assert sal_l2.targets == sal_sum.targets == ixg.targets
    if kind == "contrastive":
        assert sal_l2.targets == tuple(episode.positions("decision"))
    for i, t in enumerate(sal_l2.targets):
        g, e = naive(model, tok, ids, t, kind)
        close(sal_l2.matrix[i], np.linalg.norm(g, axis=-1))
        # GPT-2: every path from the embeddings goes through a LayerNorm, whose input gradient
        # sums to 0 over the hidden dim, so the signed sum is rounding noise: compare at the
        # scale of the gradient itself
        close(sal_sum.matrix[i], g.sum(-1), scale=np.abs(g).sum(-1).max())
        close(ixg.matrix[i], (g * e).sum(-1))
    # the target values are the function itself
    lp = model(torch.tensor([ids])).logits[0].float()
    for i, t in enumerate(ixg.targets):
        if kind == "logprob":
            want = lp[t - 1].log_softmax(-1)[ids[t]].item()
        else:
            d = decision_token_ids(tok)
            want = (lp[t - 1, d["STOP"]] - lp[t - 1, d["RESAMPLE"]]).item()
        assert ixg.target_values[i] == pytest.approx(want, abs=1e-5)
    assert ixg.params["jacobian"] in ("vmap", "single")


def test_chunking_order_and_loop_fallback_give_the_same_matrix(models, tok, episode, monkeypatch):
    model = models["llama"]
    targets = [episode.positions("decision")[-1], episode.prompt_len + 3, 5, 40]  # unsorted
    auto = input_attribution(model, tok, episode, "input_x_gradient", "logprob", targets)
    assert auto.targets == tuple(targets)  # the caller's order is kept
    one = input_attribution(model, tok, episode, "input_x_gradient", "logprob", targets, target_chunk=1)
    two = input_attribution(model, tok, episode, "input_x_gradient", "logprob", targets, target_chunk=2)
    monkeypatch.setattr(ia, "JACOBIAN", "loop")
    loop = input_attribution(model, tok, episode, "input_x_gradient", "logprob", targets)
    assert loop.params["jacobian"] == "loop/single" and auto.params["jacobian"] == "single/vmap"
    assert two.timing["chunk_sizes"] == [2, 2] and one.timing["chunks"] == 4
    assert auto.timing["chunk_sizes"] == [3, 1]  # planned: the far target gets its own forward
    for r in (one, two, loop):
        close(r.matrix, auto.matrix)


def test_chunk_planner():
    plan = ia._plan_chunks
    # decision targets of a 139-token episode: one shared forward for single-row methods, two
    # 32-row IG forwards (the backward over tokens 73..137 for the first would cost more)
    assert plan([73, 137], 1, 16, 75.0) == [[73, 137]]
    assert plan([73, 137], 32, 2, 75.0) == [[73], [137]]
    assert plan([73, 137], 32, 2, 4096.0) == [[73, 137]]  # GPU-like overhead: share
    chunks = plan(list(range(10, 139)), 1, 16, 75.0)
    assert [t for c in chunks for t in c] == list(range(10, 139))
    assert max(map(len, chunks)) == 16 and len(chunks) == 9
    assert all(len(c) <= 2 for c in plan(list(range(10, 139)), 32, 2, 75.0))


# ------------------------------------------------------------------------------ IG
def captum_ig_per_target(model, tok, ids, t, kind, n_steps, baseline="pad"):
    """captum used the plain way: one IntegratedGradients call per target on inputs_embeds."""
    from captum.attr import IntegratedGradients

    emb = model.get_input_embeddings()
    E = emb(torch.tensor([ids])).detach()
    B = (
        torch.zeros_like(E)
        if baseline == "zeros"
        else emb(torch.full_like(torch.tensor([ids]), tok.pad_token_id)).detach()
    )
    d = decision_token_ids(tok)

    def f(x):
        logits = model(inputs_embeds=x).logits[:, t - 1].float()
        if kind == "logprob":
            return logits.log_softmax(-1)[:, ids[t]]
        return logits[:, d["STOP"]] - logits[:, d["RESAMPLE"]]

    attr, delta = IntegratedGradients(f).attribute(E, baselines=B, n_steps=n_steps, return_convergence_delta=True)
    return attr[0].sum(-1).double().numpy(), float(delta[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_ig_equals_plain_captum_per_target(models, tok, episode, arch):
    model = models[arch]
    ids = list(episode.token_ids)
    for kind, baseline in (("contrastive", "pad"), ("logprob", "zeros")):
        targets = None if kind == "contrastive" else [episode.prompt_len + 5, episode.positions("decision")[0]]
        res = input_attribution(model, tok, episode, "ig", kind, targets, n_steps=16, baseline=baseline)
        assert res.params["n_steps"] == 16 and res.params["baseline"] == baseline
        for i, t in enumerate(res.targets):
            want, delta = captum_ig_per_target(model, tok, ids, t, kind, 16, baseline)
            close(res.matrix[i], want)
            assert res.deltas[i] == pytest.approx(delta, abs=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_ig_completeness(models, tok, episode, arch):
    model = models[arch]
    targets = [episode.prompt_len, *episode.positions("decision")]
    res = input_attribution(model, tok, episode, "ig", "logprob", targets, n_steps=256)
    gap = res.target_values - res.baseline_values
    # the delta is what it says it is
    np.testing.assert_allclose(res.deltas, res.matrix.sum(1) - gap, atol=1e-9)
    # and small: sum of attributions = f(input) - f(baseline)
    np.testing.assert_allclose(res.matrix.sum(1), gap, rtol=1e-3, atol=1e-5)
    assert np.all(res.relative_deltas < 1e-3)


def test_ig_delta_shrinks_with_steps(models, tok, episode):
    """GPT-2 (learned positions, pad embedding not zero) converges fast: < 1% at 64 steps. The
    Llama/Qwen2 pad embedding is the zero vector, where the RMSNorms make f jump (f(0) = 0 but
    f(a e) is O(1) for tiny a): on this shallow model Gauss-Legendre still gets there, slowly;
    with a non-zero token baseline (<unk>) it converges at once."""
    gpt = input_attribution(models["gpt2"], tok, episode, "ig", "logprob", logprob_targets(episode), n_steps=64)
    assert np.all(gpt.relative_deltas < 1e-2)
    llama = models["llama"]
    d = [
        np.abs(input_attribution(llama, tok, episode, "ig", "contrastive", n_steps=n, baseline="pad").deltas).max()
        for n in (16, 64, 256)
    ]
    assert d[0] > d[1] > d[2] and d[2] < 1e-5
    unk = input_attribution(llama, tok, episode, "ig", "contrastive", n_steps=16, baseline=tok.unk_token_id)
    assert np.all(unk.relative_deltas < 1e-3)
    default = input_attribution(llama, tok, episode, "ig", "contrastive", n_steps=16)  # <unk> default
    np.testing.assert_allclose(default.matrix, unk.matrix, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------ causality
@pytest.mark.parametrize("method", ia.METHODS)
def test_causality_zeros_and_earlier_generated_tokens_count(models, tok, episode, method):
    model = models["qwen2"]
    targets = logprob_targets(episode)
    # one chunk: the forward runs to the last target, so every earlier target's row covers
    # tokens at and after it and they must come out exactly zero
    res = input_attribution(model, tok, episode, method, "logprob", targets, n_steps=8, target_chunk=len(targets))
    assert res.timing["chunks"] == 1
    for i, t in enumerate(res.targets):
        assert np.all(res.matrix[i, t:] == 0)
        assert np.any(res.matrix[i, :t] != 0)
    # unlike LLMGradientAttribution, earlier generated tokens get attributions
    last = res.row(episode.positions("decision")[-1])
    assert np.abs(last[episode.prompt_len : episode.positions("decision")[-1]]).sum() > 0


def test_non_causal_model_is_an_error(models, tok, episode):
    class Leaky(torch.nn.Module):  # mixes the whole sequence into every position
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, inputs_embeds=None, **kw):
            kw.pop("logits_to_keep", None)
            return self.inner(inputs_embeds=inputs_embeds + inputs_embeds.mean(1, keepdim=True), **kw)

    with pytest.raises(InputAttributionError, match="not causal"):
        input_attribution(Leaky(models["llama"]), tok, episode, "saliency", "logprob", [20, 30], target_chunk=2)


# ------------------------------------------------------------------------------ captum's LLM attr
def test_input_x_gradient_equals_llm_gradient_attribution_on_the_prompt(models, tok, episode):
    """LLMGradientAttribution(LayerGradientXActivation on the embedding layer) = grad x embedding
    summed over the hidden dim, for every generated target, on the prompt tokens (all it
    attributes to)."""
    from captum.attr import LayerGradientXActivation, LLMGradientAttribution, TextTokenInput

    model, ids, pl = models["llama"], list(episode.token_ids), episode.prompt_len
    k = 12
    llm = LLMGradientAttribution(LayerGradientXActivation(model, model.get_input_embeddings()), tok)
    theirs = (
        llm.attribute(TextTokenInput(tok.decode(ids[:pl]), tok), target=torch.tensor(ids[pl : pl + k]))
        .token_attr.double()
        .numpy()
    )
    ours = input_attribution(model, tok, episode, "input_x_gradient", "logprob", list(range(pl, pl + k)))
    assert theirs.shape == (k, pl)
    close(ours.matrix[:, :pl], theirs)


@pytest.mark.parametrize("arch,baseline", [("llama", "pad"), ("gpt2", 3)])
def test_ig_equals_llm_gradient_attribution_layer_ig(models, tok, episode, arch, baseline):
    """LLMGradientAttribution(LayerIntegratedGradients on the embedding layer), baseline token 0
    (<pad>, captum's default) or 3 (<unk>): (a) the first generated token, whose input is exactly
    the prompt; (b) a decision token, giving captum the whole prefix as its input (the way to make
    it attribute to earlier generated tokens: one call per target)."""
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    model, ids, pl = models[arch], list(episode.token_ids), episode.prompt_len
    assert tok.pad_token_id == 0
    llm = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), tok)
    t_dec = episode.positions("decision")[0]
    ours = input_attribution(model, tok, episode, "ig", "logprob", [pl, t_dec], n_steps=32, baseline=baseline)
    bid = tok.pad_token_id if baseline == "pad" else baseline
    assert ours.params["baseline"] == ("pad" if baseline == "pad" else "token")
    assert ours.params["baseline_token_id"] == bid
    first = llm.attribute(
        TextTokenInput(tok.decode(ids[:pl]), tok, baselines=bid), target=torch.tensor(ids[pl : pl + 1]), n_steps=32
    ).token_attr
    close(ours.matrix[0, :pl], first[0].double().numpy())
    prefix = llm.attribute(
        TextTokenInput(tok.decode(ids[:t_dec]), tok, baselines=bid), target=torch.tensor([ids[t_dec]]), n_steps=32
    ).token_attr
    assert prefix.shape == (1, t_dec)
    close(ours.matrix[1, :t_dec], prefix[0].double().numpy())


# ------------------------------------------------------------------------------ result object
def test_segment_and_source_aggregation(models, tok, episode):
    res = input_attribution(models["llama"], tok, episode, "ig", "contrastive", n_steps=8)
    assert res.segment_labels == ("prompt", "attempt:0", "decision:0", "attempt:1", "decision:1", "other")
    seg = res.segment_matrix()
    assert seg.shape == (2, 6)
    np.testing.assert_allclose(seg.sum(1), res.matrix.sum(1), rtol=1e-12, atol=1e-12)
    segs = np.array(episode.segments)
    for j, s in enumerate(res.segment_labels):
        np.testing.assert_allclose(seg[:, j], res.matrix[:, segs == s].sum(1), atol=1e-12)
    assert res.per_segment()["prompt"] == pytest.approx(res.matrix[:, : episode.prompt_len].sum())
    # the STOP target sees the first [RESAMPLE]; nobody sees [STOP] or <eos>
    assert res.segment_matrix(absolute=True)[1, 2] > 0
    assert res.per_segment(absolute=True)["decision:1"] == 0 and res.per_segment()["other"] == 0
    np.testing.assert_allclose(res.per_source(), res.matrix.sum(0))
    np.testing.assert_allclose(res.per_source(absolute=True), np.abs(res.matrix).sum(0))
    assert sum(res.per_segment().values()) == pytest.approx(res.matrix.sum())


def test_result_round_trip_and_pandas(models, tok, episode):
    res = input_attribution(models["gpt2"], tok, episode, "ig", "logprob", [3, 50, 137], n_steps=4)
    d = json.loads(json.dumps(res.to_dict()))
    back = InputAttributionResult.from_dict(d)
    assert back == res and back.matrix.dtype == np.float64
    assert back.target_tokens == (res.tokens[3], res.tokens[50], "[STOP]")
    with pytest.raises(ValueError):
        res.matrix[0, 0] = 1.0  # read-only: the result is frozen
    with pytest.raises(Exception):
        res.method = "saliency"
    sal = input_attribution(models["gpt2"], tok, episode, "saliency", "logprob", [3, 50])
    assert sal.deltas is None and sal.relative_deltas is None
    assert InputAttributionResult.from_dict(json.loads(json.dumps(sal.to_dict()))) == sal
    df = res.to_pandas()
    assert len(df) == 3 + 50 + 137
    assert set(df.columns) >= {"target", "source", "attribution", "source_segment", "delta"}
    assert (df.source < df.target).all()
    np.testing.assert_allclose(df.groupby("target").attribution.sum().to_numpy(), res.matrix.sum(1))
    assert res.timing["total_s"] > 0 and res.timing["forwards"] >= 2
    with pytest.raises(InputAttributionError):
        res.row(4)


# ------------------------------------------------------------------------------ other tokenizers
def test_text_format_tokenizer_logprob_works_contrastive_refused(bpe_tokenizer):
    tok = bpe_tokenizer
    model = init_model(tok, "llama", hidden=32, layers=2, heads=2)
    fmt, p = TextFormat(), Problem(12, 34)
    prompt = tok.encode(fmt.prompt_text(p))
    ids = prompt + tok.encode(" 12 times 34 is 418. Let me recompute. 12 times 34 is 408.") + [tok.eos_token_id]
    ep = fmt.parse(p, ids, len(prompt), tok)
    assert ep.positions("decision")
    res = input_attribution(model, tok, ep, "input_x_gradient", "logprob")  # default: decisions
    assert res.targets == tuple(ep.positions("decision"))
    g, e = naive(model, tok, ids, res.targets[0], "logprob")
    close(res.matrix[0], (g * e).sum(-1))
    with pytest.raises(InputAttributionError, match="decision tokens"):
        input_attribution(model, tok, ep, "saliency", "contrastive")


# ------------------------------------------------------------------------------ errors
def test_errors(models, tok, episode):
    model = models["llama"]
    n = len(episode.token_ids)
    assert issubclass(InputAttributionError, ValueError)
    cases = [
        (dict(targets=[0], target="logprob"), "position 0"),
        (dict(targets=[n], target="logprob"), "out of range"),
        (dict(targets=[-1], target="logprob"), "out of range"),
        (dict(targets=[2.0], target="logprob"), "integers"),
        (dict(targets=[5, 5], target="logprob"), "duplicate"),
        (dict(targets=[], target="logprob"), "empty"),
        (dict(targets=[episode.prompt_len + 2]), "decision positions only"),
        (dict(method="lime"), "unknown method"),
        (dict(target="prob"), "unknown target"),
        (dict(aggregate="max"), "unknown aggregate"),
        (dict(n_steps=0), "n_steps"),
        (dict(baseline="nonsense"), "unknown baseline"),
        (dict(baseline=10_000), "vocabulary"),
        (dict(ig_method="simpson"), "ig_method"),
        (dict(target_chunk=0), "target_chunk"),
    ]
    for kw, msg in cases:
        with pytest.raises(InputAttributionError, match=msg):
            input_attribution(model, tok, episode, **kw)
    short = init_model(tok, "llama", hidden=32, layers=2, heads=2, max_positions=64)
    with pytest.raises(InputAttributionError, match="longer than the model's context of 64"):
        input_attribution(short, tok, episode, "saliency")
    no_decision = DSFormat().parse(PROBLEM, list(episode.token_ids[:40]), episode.prompt_len, tok)
    with pytest.raises(InputAttributionError, match="no decision tokens"):
        input_attribution(model, tok, no_decision, "saliency", "logprob")
    with pytest.raises(InputAttributionError, match="Episode"):
        input_attribution(model, tok, list(episode.token_ids), "saliency")


def test_non_finite_is_an_error_and_model_state_is_restored(tok, episode):
    model = init_model(tok, "llama", hidden=32, layers=2, heads=2)
    model.train()
    res = input_attribution(model, tok, episode, "saliency", "logprob", [30])
    assert model.training  # restored
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(InputAttributionError, match="non-finite"):
        input_attribution(model, tok, episode, "saliency", "logprob", [30])
    assert model.training
    assert res.matrix.shape == (1, len(episode.token_ids))


def test_no_warnings(models, tok, episode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        input_attribution(models["gpt2"], tok, episode, "ig", n_steps=4)
        input_attribution(models["gpt2"], tok, episode, "saliency")
