"""The DS lab: the balanced weighting and the masked surrogate against hand-computed losses, the
logged training split against the attribution engine on the same batch, and every lab stage
running a few steps (CI never trains the real thing)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from ds_core.attribution.group_gradient import attribute_group
from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import Problem, sample_mixture
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.model import init_model
from ds_core.models.rollout import prompt_prefix, rollout
from ds_core.models.sampling import SamplingConfig
from ds_core.objectives.terms import balanced_weights, grpo_loss, sft_terms, token_logprobs, weighted_token_mean
from ds_core.training import lab
from ds_core.training.grpo import GRPOConfig, episode_batch, train_grpo
from ds_core.training.recipes import Example, lab_base_examples
from ds_core.training.sft import SFTConfig, batch_codes, batch_loss, encode, make_batch, train_sft
from ds_core.training.split import ROLE_CODE, role_codes, split_backward

FMT = DSFormat()


@pytest.fixture(scope="module")
def tok(char_tokenizer):
    return char_tokenizer


def _model(tok, seed=3):
    return init_model(tok, "llama", seed=seed, hidden=32, layers=2, heads=2)


def test_balanced_weights_by_hand():
    # row 0: 4 sampling, 2 decision, 1 other; row 1: 3 sampling, no decision
    s = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
    d = torch.tensor([[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0]])
    w = balanced_weights(s, d)
    assert w.tolist() == [[1, 1, 1, 1, 2, 2, 1], [1, 1, 1, 1, 1, 1, 1]]
    assert float((w * d)[0].sum()) == float((w * s)[0].sum()) == 4.0  # decisions carry the sampling total
    terms = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7], [1, 1, 1, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]])
    # (1+2+3+4 + 2*5 + 2*6 + 7 + 1+1+1) / (4 + 4 + 1 + 3)
    assert float(weighted_token_mean(terms, mask, w)) == pytest.approx(42 / 12)


def test_balanced_sft_loss_on_a_trace_by_hand(tok):
    model = _model(tok)
    p = Problem(123, 456)
    ex = Example(p, FMT.trace_text(p, [FMT.attempt_text(p, answer=p.answer + 9), FMT.attempt_text(p)]), 1)
    rows = encode(tok, FMT, [ex])
    x, m = make_batch(rows, tok.pad_token_id)
    codes = batch_codes(rows, x.shape[1], tok)
    n_s, n_d = int((codes == 1).sum()), int((codes == 2).sum())
    assert n_d == 2 and n_s > 20  # [RESAMPLE] and [STOP]
    cfg = SFTConfig(steps=1, weighting="balanced")
    with torch.no_grad():
        nll = -token_logprobs(model, x)
        loss, contrib = batch_loss(sft_terms(-nll, m), m, cfg, codes)
    dec = nll[codes == 2].sum() * (n_s / n_d)
    rest = nll[(codes == 1) | (codes == 3)].sum()
    n_o = int((codes == 3).sum())
    assert float(loss) == pytest.approx(float((dec + rest) / (2 * n_s + n_o)), rel=1e-6)
    assert float(contrib.sum()) == pytest.approx(float(loss), rel=1e-6)


def test_masked_surrogate_by_hand():
    torch.manual_seed(0)
    logp = torch.randn(2, 5) * 0.1 - 1
    old = logp + torch.randn(2, 5) * 0.05
    ref = logp + torch.randn(2, 5) * 0.05
    adv = torch.tensor([1.0, -0.5])
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 1, 0]]).float()
    dec = torch.tensor([[0, 0, 1, 0, 1], [0, 0, 0, 1, 0]]).float()
    loss, stats, terms = grpo_loss(logp, old, ref, adv, mask, kl_coef=0.1, surrogate_mask=1 - dec, per_token=True)
    want = 0.0
    for b in range(2):
        for t in range(5):
            if not mask[b, t]:
                continue
            r, a = math.exp(float(logp[b, t] - old[b, t])), float(adv[b])
            surr = max(-r * a, -min(max(r, 0.8), 1.2) * a) if not dec[b, t] else 0.0
            d = float(ref[b, t] - logp[b, t])
            want += surr + 0.1 * (math.exp(d) - d - 1)
    assert float(loss) == pytest.approx(want / 7, rel=1e-5)
    assert float(terms.sum() / 7) == pytest.approx(float(loss), rel=1e-6)
    full, _ = grpo_loss(logp, old, ref, adv, mask, kl_coef=0.1)
    assert float(full) != pytest.approx(float(loss))  # the mask changes the loss


def _episodes(model, tok, n=4, seed=0):
    probs = sample_mixture(["1x2", "2x2"], n, seed=seed)
    return rollout(model, tok, FMT, probs, SamplingConfig(max_new_tokens=40), seed=seed)


def _with_decisions(model, tok):
    """Rollout episodes plus a written two-attempt trace, so every role is present."""
    p = Problem(47, 86)
    ids = tok(
        FMT.trace_text(p, [FMT.attempt_text(p, answer=p.answer + 9), FMT.attempt_text(p)]), add_special_tokens=False
    )["input_ids"]
    written = FMT.parse(p, ids, prompt_prefix(FMT, tok, p).prompt_len, tok)
    return [written, *_episodes(model, tok)]


def test_sft_split_equals_the_engine_on_the_same_batch(tok):
    model = _model(tok)
    eps = _with_decisions(model, tok)
    x, m = episode_batch(eps, tok.pad_token_id)
    codes = role_codes([e.roles for e in eps], x.shape[1])
    terms = sft_terms(token_logprobs(model, x), m)
    fig = split_backward(model, terms / m.sum(), codes)
    want = attribute_group(model, eps, "sft_sum").figures
    for k in ("norm_G_S", "norm_G_D", "norm_G_O", "norm_G", "ratio_SD", "cos_SD", "share_S", "share_D", "share_O"):
        assert getattr(fig, k) == pytest.approx(getattr(want, k), rel=1e-4, abs=1e-7), k
    # and .grad is the whole loss's gradient
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss = sft_terms(token_logprobs(model, x), m).sum() / m.sum()
    loss.backward()
    for a, p in zip(got, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_grpo_split_equals_the_engine_surrogate_on_policy(tok):
    model = _model(tok)
    eps = _with_decisions(model, tok)
    adv = torch.tensor([1.0, -0.5, 0.25, 0.8, -1.2])
    x, m = episode_batch(eps, tok.pad_token_id)
    codes = role_codes([e.roles for e in eps], x.shape[1])
    logp = token_logprobs(model, x)
    _, _, terms = grpo_loss(logp, logp.detach(), logp.detach(), adv, m, kl_coef=0.0, per_token=True)
    fig = split_backward(model, terms / m.sum(), codes)
    want = attribute_group(model, eps, "surrogate", advantages=adv.tolist()).figures
    for k in ("norm_G_S", "norm_G_D", "norm_G", "ratio_SD", "cos_SD", "share_D"):
        assert getattr(fig, k) == pytest.approx(getattr(want, k), rel=1e-4, abs=1e-7), k


def test_split_refuses_an_unroled_contribution(tok):
    c = torch.ones(1, 3, requires_grad=True)
    with pytest.raises(ValueError, match="without a role"):
        split_backward(torch.nn.Linear(1, 1), c * 1.0, torch.tensor([[0, 1, 1]]))
    assert ROLE_CODE == {"sampling": 1, "decision": 2, "other": 3}


def test_trainers_log_the_split_and_the_masked_surrogate_trains(tok):
    model = _model(tok)
    exs = lab_base_examples(40, 0)
    log = train_sft(model, tok, FMT, exs, SFTConfig(steps=3, batch_size=4, warmup=1, split_every=2, log_every=1))
    split_rows = [r for r in log if "split_ratio_SD" in r]
    assert [r["step"] for r in split_rows] == [0, 2]
    assert all(r["split_share_S"] + r["split_share_D"] + r["split_share_O"] == pytest.approx(1) for r in split_rows)
    ref = _model(tok, seed=4)
    cfg = GRPOConfig(
        steps=2,
        prompts_per_step=2,
        group_size=2,
        minibatch=4,
        max_new_tokens=24,
        split_every=1,
        mask_decisions=True,
        sizes=("1x2",),
    )
    log = train_grpo(model, ref, tok, FMT, cfg)
    assert all("split_n_D" in r for r in log)


def test_lab_base_recipe_practises_only_the_two_longest_sizes():
    """The lab's base (recipe N1): 3x8/3x9 practised (7.6 % of the traces together), 3x5..3x7 never."""
    sizes = Counter(e.problem.size for e in lab_base_examples(20_000, 0))
    assert not {"3x5", "3x6", "3x7"} & set(sizes) and sizes["3x8"] > 0
    assert 0.06 < (sizes["3x8"] + sizes["3x9"]) / 20_000 < 0.09
    assert lab.CONDITIONS["base"].recipe_options == (("ood_weights", (0, 0, 0, 0.5, 4)), ("id_weights", (4, 1)))


def test_lab_base_in_distribution_weights_move_only_3x3_and_3x4():
    """`id_weights` change the shares of 3x3/3x4 by the ratio asked for (the default is the lab's
    4, 1), and a bad weight is refused."""
    default = lab_base_examples(3000, 0)
    assert [e.text for e in lab_base_examples(3000, 0, id_weights=(4.0, 1.0))] == [e.text for e in default]
    n = 40_000
    sizes = Counter(e.problem.size for e in lab_base_examples(n, 0, ood_weights=(0, 0, 0, 0.5, 4), id_weights=(2, 0.5)))
    # 1-/2-digit x 1..4-digit at 4, x 5..9-digit at 1; 3x1, 3x2 at 4; 3x3, 3x4 at 2, 0.5; 3x8, 3x9 at 0.5, 4
    total = 2 * (4 * 4 + 5 * 1) + 2 * 4 + 2 + 0.5 + 0.5 + 4
    for size, w in (("3x3", 2), ("3x4", 0.5), ("3x2", 4), ("3x9", 4), ("3x5", 0)):
        assert abs(sizes[size] / n - w / total) < 4 * (w / total / n) ** 0.5 + 1e-9, size
    with pytest.raises(ValueError, match="id_weights"):
        lab_base_examples(10, 0, id_weights=(1.0,))


def test_lab_plan_is_consistent():
    assert set(lab.CONDITIONS) >= {
        "sft",
        "sft_reflection",
        "rl",
        "reflection_balanced",
        "reflection_dft",
        "rl_no_kl",
        "rl_strong_kl",
        "rl_sampling_only",
        "rl_from_sft",
    }
    c = lab.CONDITIONS
    assert c["rl_no_kl"].grpo.kl_coef == 0 and c["rl_strong_kl"].grpo.kl_coef == pytest.approx(
        30 * c["rl"].grpo.kl_coef
    )
    assert c["rl_sampling_only"].grpo.mask_decisions and c["rl_from_sft"].parent == "sft"
    assert c["reflection_balanced"].sft.weighting == "balanced" and c["reflection_dft"].sft.objective == "dft"
    for cond in c.values():  # budgets are steps, never wall time
        cfg = cond.sft or cond.grpo
        assert cfg.time_budget_s is None
    order = lab.jobs()
    for i, (cond, seed) in enumerate(order):
        if c[cond].parent:
            assert (c[cond].parent, lab.parent_seed(cond, seed)) in order[:i]
    with pytest.raises(ValueError, match="unknown lab condition"):
        lab.jobs(["nope"])


def test_every_lab_stage_runs_and_is_reproducible(tmp_path):
    out = tmp_path / "lab"
    res = lab.run_lab(out, seeds=(0,), workers=2, smoke=True)
    assert {r["condition"] for r in res} == set(lab.CONDITIONS)
    for cond in lab.CONDITIONS:
        d = out / cond / "seed0"
        log = json.loads((d / "train_log.json").read_text())
        assert any("split_norm_G" in r for r in log) and any("eval_ood_p_s" in r for r in log), cond
        ev = json.loads((d / "eval.json").read_text())
        assert ev["checkpoint"] == f"{cond}/seed0" and "3x3" in ev["sizes"]
        assert load_checkpoint(d).card.condition == cond
    # one stage rerun from the same parent gives the same weights
    again = tmp_path / "again"
    lab.run_lab(again, conditions=["rl_no_kl"], seeds=(0,), workers=1, smoke=True, parents=out)
    a = load_checkpoint(out / "rl_no_kl" / "seed0").model.state_dict()
    b = load_checkpoint(again / "rl_no_kl" / "seed0").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="needs its parent"):
        lab.run_lab(tmp_path / "orphan", conditions=["rl"], seeds=(1,), smoke=True)


def test_base_trial_trains_the_recipe_it_is_given_and_refuses_bad_ones(tmp_path, capsys):
    """`train base-trial` trains the lab base with the given 3x5..3x9 weights and lr (smoke
    budget here), writes the run like a lab run and prints p_s per size from its eval.json; bad
    weights are a one-line error (exit 2) and nothing is written."""
    from ds_core.cli.main import main

    out = tmp_path / "trial"
    argv = ["train", "base-trial", "--ood-weights", "0,0.05,0.3,1,4", "--lr", "1e-3", "--steps", "2000"]
    assert main([*argv, "--id-weights", "4,1", "--smoke", "--out", str(out), "--quiet"]) == 0
    card = load_checkpoint(out).card
    assert card.data_recipe["options"]["ood_weights"] == [0.0, 0.05, 0.3, 1.0, 4.0]
    assert card.data_recipe["options"]["id_weights"] == [4.0, 1.0]
    assert card.training["lr"] == 1e-3 and card.condition == "base"
    ev = json.loads((out / "eval.json").read_text())
    printed = capsys.readouterr().out
    assert f"3x3 {100 * ev['sizes']['3x3']['p_s']['value']:.0f}" in printed and str(out) in printed
    for bad in ("1,2,3", "0,0,0,-1,1", "a,b,c,d,e"):
        assert main([*argv[:2], "--ood-weights", bad, "--smoke", "--out", str(tmp_path / "bad")]) == 2
        assert "--ood-weights" in capsys.readouterr().err
    assert main([*argv, "--id-weights", "4", "--smoke", "--out", str(tmp_path / "bad")]) == 2
    assert "--id-weights" in capsys.readouterr().err
    assert main([*argv[:2], "--lr", "0", "--smoke", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
