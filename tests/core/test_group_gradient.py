"""ds_core.attribution.group_gradient: the group's gradient against a naive per-token autograd loop,
Theorem 3.1's per-episode identity (surrogate = -A x SFT sum on each episode), the contributions
adding up, the zero-advantage group, and the recompute path giving the kept path's numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ds_core.attribution.engine import AttributionError
from ds_core.attribution.group_gradient import GroupAttribution, attribute_group
from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import Problem
from ds_core.models.model import init_model
from ds_core.models.rollout import prompt_prefix
from ds_core.objectives.terms import group_advantages
from tests.core.test_attribution import naive

FMT = DSFormat()


@pytest.fixture(scope="module")
def tok(char_tokenizer):
    return char_tokenizer


@pytest.fixture(scope="module")
def model(tok):
    return init_model(tok, "llama", seed=3, hidden=32, layers=2, heads=2)


@pytest.fixture(scope="module")
def ref(tok):
    return init_model(tok, "llama", seed=4, hidden=32, layers=2, heads=2)


def _episode(tok, p, answers, stop=True):
    attempts = [FMT.attempt_text(p, answer=a) for a in answers]
    text = FMT.trace_text(p, attempts) if stop else FMT.prompt_text(p) + attempts[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return FMT.parse(p, ids, prompt_prefix(FMT, tok, p).prompt_len, tok)


@pytest.fixture(scope="module")
def group(tok):
    """Four episodes of one prompt: right at once, wrong then right, wrong kept, and one that never
    reaches a verdict (no decision token: it still belongs to the group)."""
    p = Problem(47, 86)
    eps = [
        _episode(tok, p, [p.answer]),
        _episode(tok, p, [p.answer + 10, p.answer]),
        _episode(tok, p, [p.answer + 1]),
        _episode(tok, p, [p.answer + 2], stop=False),
    ]
    assert [e.correct for e in eps] == [True, True, False, False]
    assert "decision" not in eps[3].roles
    return eps


def _naive_group(model, eps, objective, advs, ref=None):
    """Per-role sums over the group of each token's gradient (one autograd call per token)."""
    comps, n = [], 0
    for ep, a in zip(eps, advs):
        _, J, _ = naive(model, ep, objective, advantage=a if objective == "surrogate" else None, ref_model=ref)
        r = np.array(ep.roles)
        roles = zip("SDO", ("sampling", "decision", "other"))
        comps.append({k: J[torch.tensor(r == role)].sum(0) for k, role in roles})
        n += sum(1 for i, x in enumerate(ep.roles) if i > 0 and x != "prompt")
    G = {k: sum(c[k] for c in comps) / n for k in "SDO"}
    return comps, G, n


@pytest.mark.parametrize("objective", ["surrogate", "sft_sum", "kl_k3"])
def test_group_figures_and_contributions_match_a_naive_loop(model, ref, group, objective):
    res = attribute_group(model, group, objective, ref_model=ref if objective == "kl_k3" else None)
    advs = group_advantages([[float(e.correct) for e in group]])[0].tolist()
    assert res.advantages == pytest.approx(advs) and res.rewards == (1.0, 1.0, 0.0, 0.0)
    comps, G, n = _naive_group(model, group, objective, advs, ref if objective == "kl_k3" else None)
    assert res.n_tokens == n
    tot = G["S"] + G["D"] + G["O"]
    f = res.figures
    assert f.norm_G_S == pytest.approx(G["S"].norm().item(), rel=1e-5)
    assert f.norm_G_D == pytest.approx(G["D"].norm().item(), rel=1e-5)
    assert f.norm_G == pytest.approx(tot.norm().item(), rel=1e-5)
    assert f.cos_SD == pytest.approx((G["S"] @ G["D"]).item() / (G["S"].norm() * G["D"].norm()).item(), abs=1e-5)
    assert f.share_D == pytest.approx((G["D"] @ tot).item() / (tot @ tot).item(), abs=1e-5)
    for i, c in enumerate(comps):  # each episode's contribution <G_{i,k}, G>/|G|^2 (unscaled both)
        want = [(c[k] @ tot).item() / n / (tot @ tot).item() for k in "SDO"]
        assert res.contributions[i] == pytest.approx(want, abs=1e-5)
        assert res.norms[i][0] == pytest.approx(c["S"].norm().item() / n, rel=1e-5)
    assert sum(map(sum, res.contributions)) == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(res.norms[3][1])  # the episode without a verdict has no decision gradient


def test_surrogate_is_minus_a_times_sft_on_each_episode(model, group):
    """Theorem 3.1 per episode: every token weighted by the same A, so each episode's split is SFT's."""
    surr = attribute_group(model, group, "surrogate")
    sft = attribute_group(model, group, "sft_sum")
    for a, ns, nf in zip(surr.advantages, surr.norms, sft.norms):
        for x, y in zip(ns, nf):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(abs(a) * y, rel=1e-5)
    # the group sum is where they differ: opposite-sign advantages cancel what the episodes share
    assert surr.figures.ratio_SD != pytest.approx(sft.figures.ratio_SD, rel=1e-3)


def test_recomputing_gives_the_kept_numbers(model, group):
    calls = []
    kept = attribute_group(model, group, "sft_sum")
    again = attribute_group(model, group, "sft_sum", keep_budget=0, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_allclose(again.contributions, kept.contributions, atol=1e-9)
    assert again.figures.ratio_SD == pytest.approx(kept.figures.ratio_SD, rel=1e-9)
    assert calls[-1] == (8, 8)  # two passes over four episodes


def test_a_group_with_equal_rewards_has_no_surrogate_gradient(model, group):
    res = attribute_group(model, group[:2], "surrogate")  # both correct: A = 0, 0
    assert res.figures is None and "every advantage is 0" in res.note
    assert res.contributions == ((0.0, 0.0, 0.0),) * 2
    assert attribute_group(model, group[:2], "sft_sum").figures is not None  # SFT does not care


def test_bad_groups_are_refused(model, group):
    with pytest.raises(AttributionError, match="at least one episode"):
        attribute_group(model, [], "sft_sum")
    with pytest.raises(AttributionError, match="one reward and one advantage"):
        attribute_group(model, group, "surrogate", advantages=[1.0])
    with pytest.raises(AttributionError, match="finite"):
        attribute_group(model, group[:1], "surrogate", advantages=[float("nan")])
    with pytest.raises(AttributionError, match="ref_model"):
        attribute_group(model, group, "kl_k3")
    with pytest.raises(ValueError, match="must say why"):
        GroupAttribution("sft_sum", (0.0,), (1.0,), None, ((0, 0, 0),), ((0, 0, 0),), 3, 0.1)
