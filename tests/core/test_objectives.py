"""ds_core.objectives: every per-token term against a hand-written formula, plus the paper's
attribution properties (Theorem 3.1 surrogate balance, Theorem 3.2 KL length effect, SFT's
1/length share) on synthetic cases, and token_logprobs against a naive loop on tiny models."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

import ds_core.objectives.terms as ob
from ds_core.objectives import INPUTS, OBJECTIVES, get_objective
from ds_core.objectives.terms import (
    dft_terms,
    group_advantages,
    grpo_loss,
    kl_k1_terms,
    kl_k3_terms,
    reduce_terms,
    sft_mean_terms,
    sft_terms,
    surrogate_terms,
    token_logprobs,
)

LN2 = math.log(2.0)

# ---------------------------------------------------------------- a hand-made "model"
# vocab 3, T = 4, B = 2. PROBS[b][t] is the next-token distribution after position t.
PROBS = [
    [[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]],
    [[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.4, 0.4, 0.2], [0.5, 0.5, 0.0 + 1e-9]],
]
IDS = [[2, 0, 1, 2], [1, 1, 2, 0]]
# logp[b, t] = log PROBS[b][t-1][IDS[b][t]]
HAND_LOGP = [[0.0, math.log(0.5), math.log(0.6), math.log(0.6)], [0.0, math.log(0.2), math.log(0.5), math.log(0.4)]]
MASK = [[0, 1, 1, 1], [0, 0, 1, 1]]


class FakeLM:
    """Returns logits = log(PROBS) + 7 (a per-row shift log_softmax must remove)."""

    def __call__(self, input_ids, attention_mask=None, position_ids=None):
        return SimpleNamespace(logits=torch.log(torch.tensor(PROBS, dtype=torch.float64)) + 7.0)


def hand_logp(requires_grad=False):
    return torch.tensor(HAND_LOGP, dtype=torch.float64, requires_grad=requires_grad)


def mask_f():
    return torch.tensor(MASK, dtype=torch.float64)


def test_token_logprobs_hand_logits():
    logp = token_logprobs(FakeLM(), torch.tensor(IDS))
    assert logp.shape == (2, 4)
    assert torch.allclose(logp.double(), hand_logp(), atol=1e-6)
    assert (logp[:, 0] == 0).all()


def test_sft_sum_and_mean_hand_values():
    logp, m = hand_logp(), mask_f()
    t = sft_terms(logp, m)
    for b in range(2):
        for i in range(4):
            assert t[b, i].item() == pytest.approx(-HAND_LOGP[b][i] * MASK[b][i], abs=1e-12)
    assert t[0].sum().item() == pytest.approx(-(math.log(0.5) + 2 * math.log(0.6)))
    mean = sft_mean_terms(logp, m)
    # each sequence's terms sum to its mean NLL over its scored tokens
    assert mean[0].sum().item() == pytest.approx(-(math.log(0.5) + 2 * math.log(0.6)) / 3)
    assert mean[1].sum().item() == pytest.approx(-(math.log(0.5) + math.log(0.4)) / 2)
    assert mean[1, 2].item() == pytest.approx(-math.log(0.5) / 2)
    assert (mean[m == 0] == 0).all() and (t[m == 0] == 0).all()
    # bool and float masks agree
    assert torch.equal(sft_terms(logp, m.bool()), t)
    assert torch.equal(sft_mean_terms(logp, m.bool()), mean)


def test_sft_decision_share_falls_as_one_over_length():
    """theta_s drives L sampling tokens, theta_d one decision token, both p = 0.5: the decision
    parameter's share of the SFT-sum gradient is exactly 1 / (L + 1)."""
    for L in (1, 4, 16, 64):
        th_s = torch.zeros((), dtype=torch.float64, requires_grad=True)
        th_d = torch.zeros((), dtype=torch.float64, requires_grad=True)
        logp = torch.cat(
            [
                torch.zeros(1, dtype=torch.float64),
                torch.nn.functional.logsigmoid(th_s).expand(L),
                torch.nn.functional.logsigmoid(th_d).reshape(1),
            ]
        ).unsqueeze(0)
        mask = torch.ones_like(logp)
        mask[0, 0] = 0
        sft_terms(logp, mask).sum().backward()
        share = th_d.grad.abs() / (th_d.grad.abs() + th_s.grad.abs())
        assert share.item() == pytest.approx(1 / (L + 1), rel=1e-12)
        assert th_d.grad.item() == pytest.approx(-0.5)  # -(1 - p_d), whatever L
        # and sft_mean weights every scored token by 1 / n_tokens
        lp = torch.zeros(1, L + 2, dtype=torch.float64, requires_grad=True)
        sft_mean_terms(lp, mask).sum().backward()
        assert torch.allclose(lp.grad, -mask / (L + 1))


def test_dft_values_and_weights_are_probabilities():
    logp, m = hand_logp(True), mask_f()
    t = dft_terms(logp, m)
    for b in range(2):
        for i in range(4):
            p = math.exp(HAND_LOGP[b][i])
            assert t[b, i].item() == pytest.approx(-p * HAND_LOGP[b][i] * MASK[b][i], abs=1e-12)
    t.sum().backward()
    assert torch.allclose(logp.grad, -torch.exp(logp.detach()) * m, atol=1e-15)
    assert logp.grad[0, 1].item() == pytest.approx(-0.5)


def test_group_advantages_hand_cases():
    a = group_advantages(torch.tensor([[1.0, 0, 0, 1]]))
    # mean 0.5, unbiased std sqrt(1/3): 0.5 / 0.57735 = 0.866025
    assert torch.allclose(a, torch.tensor([[0.866025, -0.866025, -0.866025, 0.866025]]), atol=1e-5)
    flat = group_advantages([1, 0, 0, 1, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1], group_size=4)
    assert flat.shape == (12,)
    assert torch.allclose(flat[:4], a[0])
    assert (flat[4:] == 0).all()  # all-equal groups: exactly 0, not nan
    assert torch.allclose(
        group_advantages(torch.tensor([[0.0, 1.0]])), torch.tensor([[-1 / math.sqrt(2), 1 / math.sqrt(2)]]), atol=1e-5
    )
    assert (group_advantages(torch.tensor([[3.0], [1.0]])) == 0).all()  # G = 1
    assert torch.allclose(
        group_advantages(torch.tensor([[0.0, 1.0]]), eps=1.0), torch.tensor([[-0.5, 0.5]]) / (1 / math.sqrt(2) + 1)
    )
    with pytest.raises(ValueError):
        group_advantages(torch.ones(6))
    with pytest.raises(ValueError):
        group_advantages(torch.ones(6), group_size=4)
    with pytest.raises(ValueError):
        group_advantages(torch.ones(2, 3), group_size=2)


def test_surrogate_on_policy_gradient_is_minus_advantage_for_every_token():
    """Theorem 3.1: at r = 1 every scored token (sampling or decision) gets weight A."""
    torch.manual_seed(0)
    logp = (-torch.rand(3, 6, dtype=torch.float64) * 3).requires_grad_()
    old = logp.detach().clone()
    adv = torch.tensor([1.5, -0.7, 0.0], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]])
    t = surrogate_terms(logp, old, adv, mask)
    assert torch.equal(t, -adv[:, None] * mask)
    t.sum().backward()
    assert torch.equal(logp.grad, -adv[:, None] * mask)


@pytest.mark.parametrize(
    "A, r, value, grad",
    [
        (1.0, 1.5, -1.2, 0.0),  # A > 0, r > 1 + eps: clipped, no gradient
        (1.0, 0.5, -0.5, -0.5),  # A > 0, r < 1 - eps: not clipped, grad -A r
        (-1.0, 0.5, 0.8, 0.0),  # A < 0, r < 1 - eps: clipped, no gradient
        (-1.0, 1.5, 1.5, 1.5),  # A < 0, r > 1 + eps: not clipped, grad -A r
        (2.0, 1.1, -2.2, -2.2),  # inside the trust region
    ],
)
def test_surrogate_clipping(A, r, value, grad):
    old = torch.tensor([[0.0, math.log(0.4)]], dtype=torch.float64)
    logp = torch.tensor([[0.0, math.log(0.4 * r)]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[0, 1]])
    t = surrogate_terms(logp, old, torch.tensor([A]), mask, clip_eps=0.2)
    assert t[0, 1].item() == pytest.approx(value, abs=1e-12) and t[0, 0] == 0
    t.sum().backward()
    assert logp.grad[0, 1].item() == pytest.approx(grad, abs=1e-12)


def test_kl_k1_values_and_gradient():
    logp = hand_logp(True)
    ref = torch.full((2, 4), math.log(0.25), dtype=torch.float64, requires_grad=True)
    t = kl_k1_terms(logp, ref, mask_f())
    assert t[0, 1].item() == pytest.approx(LN2)  # log(0.5 / 0.25)
    assert t[1, 3].item() == pytest.approx(math.log(0.4 / 0.25))
    assert t[0, 0] == 0 and t[1, 1] == 0
    t.sum().backward()
    assert torch.equal(logp.grad, mask_f()) and ref.grad is None  # ref is detached


def test_kl_k3_values_gradient_and_nonnegativity():
    logp = torch.tensor([[0.0, math.log(0.5), math.log(0.25)]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[0.0, math.log(0.25), math.log(0.5)]], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1]])
    t = kl_k3_terms(logp, ref, mask)
    assert t[0, 1].item() == pytest.approx(0.5 - math.log(0.5) - 1)  # 0.193147
    assert t[0, 1].item() == pytest.approx(0.193147, abs=1e-6)
    assert t[0, 2].item() == pytest.approx(2 - LN2 - 1)  # 0.306853
    t.sum().backward()
    assert logp.grad[0, 1].item() == pytest.approx(1 - 0.5)  # 1 - exp(ref - logp)
    assert logp.grad[0, 2].item() == pytest.approx(1 - 2)
    assert logp.grad[0, 0] == 0
    # >= 0 everywhere, exactly 0 iff equal
    g = torch.linspace(-6, 0, 41, dtype=torch.float64)
    lp, rf = torch.meshgrid(g, g, indexing="ij")
    k3 = kl_k3_terms(lp, rf, torch.ones_like(lp))
    assert (k3 >= 0).all()
    assert torch.equal(k3 == 0, lp == rf)
    # verl's clamps: log-ratio to [-20, 20], value to at most 10
    big = kl_k3_terms(torch.tensor([[0.0, -30.0]]), torch.tensor([[0.0, 0.0]]), mask[:, 1:])
    assert big[0, 1].item() == ob.K3_MAX == 10.0


def test_kl_length_effect_theorem_3_2():
    """L sampling tokens and 1 decision token, same per-token log-ratio delta: the trajectory's
    k1 penalty on sampling is L times the decision's, and so is its gradient on theta_s vs
    theta_d; the on-policy surrogate instead gives every token the same weight A."""
    delta = 0.3
    for L in (1, 5, 20, 100):
        th_s = torch.zeros((), dtype=torch.float64, requires_grad=True)
        th_d = torch.zeros((), dtype=torch.float64, requires_grad=True)
        logp = torch.cat(
            [
                torch.zeros(1, dtype=torch.float64),
                torch.nn.functional.logsigmoid(th_s).expand(L),
                torch.nn.functional.logsigmoid(th_d).reshape(1),
            ]
        ).unsqueeze(0)
        ref = logp.detach() - delta
        mask = torch.ones_like(logp)
        mask[0, 0] = 0
        k1 = kl_k1_terms(logp, ref, mask)
        assert k1[0, 1 : L + 1].sum().item() / k1[0, L + 1].item() == pytest.approx(L)
        k1.sum().backward()
        assert (th_s.grad / th_d.grad).item() == pytest.approx(L)
        lp = logp.detach().clone().requires_grad_()
        surrogate_terms(lp, lp.detach(), torch.tensor([0.8], dtype=torch.float64), mask).sum().backward()
        assert torch.equal(lp.grad[0, 1:], torch.full((L + 1,), -0.8, dtype=torch.float64))


def test_reduce_terms_modes():
    terms = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert reduce_terms(terms, mask, "sum").item() == pytest.approx(10.0)
    assert reduce_terms(terms, mask, "token_mean").item() == pytest.approx(10 / 4)
    # row means 2 and 4; the empty row is not counted
    assert reduce_terms(terms, mask, "seq_mean").item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="token_mean"):
        reduce_terms(terms, mask, "mean")


def test_grpo_loss_and_stats_hand_case():
    L = math.log
    logp = torch.tensor([[0.0, L(0.6), L(0.3)], [0.0, L(0.2), 0.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.0, L(0.4), L(0.3)], [0.0, L(0.4), 0.0]], dtype=torch.float64)
    ref = torch.tensor([[0.0, L(0.3), L(0.3)], [0.0, L(0.4), 0.0]], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    adv = torch.tensor([1.0, -1.0])
    # ratios 1.5 (clipped, A>0), 1.0, 0.5 (clipped, A<0); surrogate -1.2, -1, +0.8
    # k3: 0.5 - ln 0.5 - 1, 0, 2 - ln 2 - 1 (sum 0.5); k1: ln 2, 0, -ln 2
    k3 = [0.5 + LN2 - 1, 0.0, 1 - LN2]
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.1)
    per_tok = [-1.2 + 0.1 * k3[0], -1.0 + 0.1 * k3[1], 0.8 + 0.1 * k3[2]]
    assert loss.item() == pytest.approx(sum(per_tok) / 3)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["clip_frac"] == pytest.approx(2 / 3)
    assert stats["kl_k3"] == pytest.approx(0.5 / 3)
    assert stats["kl_k1"] == pytest.approx(0.0, abs=1e-12)
    assert stats["surrogate"] == pytest.approx(-1.4 / 3)
    assert stats["loss"] == pytest.approx(loss.item())
    seq, _ = grpo_loss(logp, old, ref, adv, mask, kl_coef=0.1, reduction="seq_mean")
    assert seq.item() == pytest.approx(((per_tok[0] + per_tok[1]) / 2 + per_tok[2]) / 2)
    tot, _ = grpo_loss(logp, old, ref, adv, mask, kl_coef=0.1, reduction="sum")
    assert tot.item() == pytest.approx(sum(per_tok))
    tot.backward()  # clipped tokens: only the k3 gradient 0.1 * (1 - exp(ref - logp)) is left
    assert logp.grad[0, 1].item() == pytest.approx(0.1 * (1 - 0.5))
    assert logp.grad[1, 1].item() == pytest.approx(0.1 * (1 - 2))
    assert logp.grad[0, 2].item() == pytest.approx(-1.0)


def test_shape_validation():
    logp, m = hand_logp(), mask_f()
    with pytest.raises(ValueError, match="mask"):
        sft_terms(logp, m[:, :3])
    with pytest.raises(ValueError, match="logp"):
        sft_terms(logp[0], m[0])
    with pytest.raises(ValueError, match="old_logp"):
        surrogate_terms(logp, logp[:1], torch.zeros(2), m)
    with pytest.raises(ValueError, match="advantages"):
        surrogate_terms(logp, logp, torch.zeros(2, 4), m)
    with pytest.raises(ValueError, match="ref_logp"):
        kl_k3_terms(logp, logp[:, :2], m)
    with pytest.raises(ValueError, match="ref_logp"):
        kl_k1_terms(logp, logp.T, m)


def test_registry():
    assert set(OBJECTIVES) == {"surrogate", "kl_k1", "kl_k3", "sft_sum", "sft_mean", "dft"}
    assert get_objective("dft") is OBJECTIVES["dft"]
    with pytest.raises(ValueError) as e:
        get_objective("ppo")
    assert all(n in str(e.value) for n in OBJECTIVES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        OBJECTIVES["dft"].name = "x"
    logp, m = hand_logp(), mask_f()
    with pytest.raises(ValueError, match="advantages"):
        get_objective("surrogate").terms(logp, m, old_logp=logp)
    with pytest.raises(ValueError, match="ref_logp"):
        get_objective("kl_k3").terms(logp, m)
    old, ref, adv = logp - 0.1, logp - 0.3, torch.tensor([1.0, -2.0])
    kw = dict(old_logp=old, ref_logp=ref, advantages=adv)
    assert torch.equal(
        OBJECTIVES["surrogate"].terms(logp, m, clip_eps=0.05, **kw), surrogate_terms(logp, old, adv, m, clip_eps=0.05)
    )
    assert torch.equal(OBJECTIVES["kl_k1"].terms(logp, m, **kw), kl_k1_terms(logp, ref, m))
    assert torch.equal(OBJECTIVES["kl_k3"].terms(logp, m, **kw), kl_k3_terms(logp, ref, m))
    assert torch.equal(OBJECTIVES["sft_sum"].terms(logp, m, **kw), sft_terms(logp, m))
    assert torch.equal(OBJECTIVES["sft_mean"].terms(logp, m, **kw), sft_mean_terms(logp, m))
    assert torch.equal(OBJECTIVES["dft"].terms(logp, m, **kw), dft_terms(logp, m))
    for o in OBJECTIVES.values():
        assert o.label and o.description and set(o.needs) <= set(INPUTS)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_masked_positions_are_zero_even_with_nonfinite_logp(name):
    logp = hand_logp().clone()
    logp[0, 0], logp[1, 1] = float("nan"), float("-inf")  # both masked
    logp.requires_grad_()
    t = OBJECTIVES[name].terms(
        logp,
        mask_f().bool(),
        old_logp=logp.detach() + 0.1,
        ref_logp=logp.detach() - 0.2,
        advantages=torch.tensor([1.0, 2.0]),
    )
    assert t.shape == (2, 4) and t[0, 0] == 0 and t[1, 1] == 0 and torch.isfinite(t).all()
    t.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 0] == 0 and logp.grad[1, 1] == 0


# ---------------------------------------------------------------- real tiny transformers models
@pytest.fixture(scope="module")
def tok():
    """The char-level tokenizer (torch is single-threaded in tests: tests/conftest.py)."""
    from ds_core.episodes.tokenizer import build_tokenizer

    return build_tokenizer()


def naive_logp(model, ids):
    """One forward per position on the unpadded prefix."""
    out = torch.zeros(ids.shape, dtype=torch.float32)
    with torch.no_grad():
        for t in range(1, ids.shape[1]):
            logits = model(input_ids=ids[:, :t]).logits[:, -1].float()
            out[:, t] = torch.log_softmax(logits, -1).gather(-1, ids[:, t : t + 1]).squeeze(-1)
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_token_logprobs_matches_naive_loop_and_left_padding(tok, arch):
    from ds_core.models.model import init_model

    m = init_model(tok, arch, hidden=32, layers=2, heads=2)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, len(tok), (2, 7), generator=g)
    with torch.no_grad():
        fast = token_logprobs(m, ids)
    assert torch.allclose(fast, naive_logp(m, ids), atol=1e-5)
    # left padding: row 1 is 3 pads + the last 4 tokens of a sequence
    short = ids[1:, 3:]
    batch = torch.stack([ids[0], torch.cat([torch.full((3,), tok.pad_token_id), short[0]])])
    am = torch.tensor([[1] * 7, [0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        padded = token_logprobs(m, batch, attention_mask=am)
        alone = token_logprobs(m, short)
    assert torch.allclose(padded[1, 3:], alone[0], atol=1e-5)
    assert (padded[1, :4] == 0).all()  # padding and the first real token
    assert torch.allclose(padded[0], fast[0], atol=1e-5)
    # differentiable
    lp = token_logprobs(m, batch, attention_mask=am)
    sft_terms(lp, am).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_token_logprobs_from_a_first_position_equals_the_full_pass(tok, arch):
    """`first=k` asks the model for the last T-k+1 positions' logits only: the log-probs from k on
    are those of the full pass, the ones before are 0; a model without logits_to_keep gives the same."""
    from ds_core.models.model import init_model

    m = init_model(tok, arch, hidden=32, layers=2, heads=2)
    ids = torch.randint(6, len(tok), (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = token_logprobs(m, ids)
        for k in (1, 2, 5, 8):
            part = token_logprobs(m, ids, first=k)
            assert torch.allclose(part[:, k:], full[:, k:], atol=1e-6) and (part[:, :k] == 0).all()
        plain = token_logprobs(lambda **kw: m(**{a: b for a, b in kw.items() if a != "logits_to_keep"}), ids, first=5)
    assert torch.allclose(plain[:, 5:], full[:, 5:], atol=1e-6)
