"""Training: data recipes, the SFT trainer, the GRPO loop and the stage runner (tiny budgets)."""

import json
import random

import torch

from ds_core.analysis.report import evaluate_conditions, report_markdown
from ds_core.episodes.formats import DSFormat, worked_steps
from ds_core.episodes.tasks import Problem, TaskSpec
from ds_core.episodes.traces import corrupt_steps, wrong_attempt
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.model import init_model
from ds_core.objectives.terms import token_logprobs
from ds_core.training.grpo import GRPOConfig, episode_batch, train_grpo
from ds_core.training.recipes import base_examples, reflection_examples, sft_examples
from ds_core.training.sft import SFTConfig, encode, make_batch, train_sft
from ds_core.training.stages import STAGES, run_all

FMT = DSFormat()


def parse(tok, problem, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pl = len(tok(FMT.prompt_text(problem), add_special_tokens=False)["input_ids"])
    return FMT.parse(problem, ids, pl, tok)


def test_recipes_are_deterministic_and_sized():
    assert [e.text for e in base_examples(20, 3)] == [e.text for e in base_examples(20, 3)]
    assert [e.text for e in base_examples(20, 3)] != [e.text for e in base_examples(20, 4)]
    assert {e.problem.size for e in sft_examples(200, 0)} == {"3x3", "3x4"}
    sizes = {e.problem.size for e in base_examples(2000, 0)}
    assert {"1x1", "2x9", "3x4"} <= sizes
    assert not sizes & {f"3x{n}" for n in range(5, 10)}  # 3x5..3x9 stay out of distribution


def test_corruption_changes_one_partial_and_propagates():
    rng = random.Random(0)
    for _ in range(300):
        p = TaskSpec(3, rng.randint(1, 9)).sample(rng)
        good, bad = worked_steps(p), corrupt_steps(p, rng)
        changed = [i for i, (g, b) in enumerate(zip(good, bad)) if g.partial != b.partial]
        assert len(changed) == 1
        i = changed[0]
        diff = abs(bad[i].partial - good[i].partial) // 10**i
        assert len(str(diff).strip("0")) == 1 and diff % 9 != 0  # one digit, not a multiple of 9
        assert bad[-1].running != p.answer
        assert bad[-1].running - p.answer == bad[i].partial - good[i].partial
        assert len(str(bad[i].partial // 10**i)) == len(str(good[i].partial // 10**i)) or good[i].partial == 0


def test_reflection_traces_parse_with_checks_that_decide(char_tokenizer):
    n_wrong = 0
    for e in reflection_examples(300, 0):
        ep = parse(char_tokenizer, e.problem, e.text)
        assert ep.correct and not ep.flags
        assert ep.n_attempts == e.n_wrong + 1
        for a, d in zip(ep.attempts, ep.decisions):
            assert a.check_ok == a.correct == (d.verdict == "STOP")
        n_wrong += e.n_wrong
    assert 0.6 < n_wrong / 300 < 1.0  # 0.4*1 + 0.2*2 = 0.8 expected


def test_wrong_addition_attempt_is_caught_by_the_check(char_tokenizer):
    rng = random.Random(1)
    p = Problem(123, 456, "+")
    for _ in range(50):
        text = FMT.trace_text(p, [wrong_attempt(FMT, p, rng)])
        ep = parse(char_tokenizer, p, text)
        assert not ep.correct and ep.attempts[0].check_ok is False


def test_sft_overfits_a_few_traces(char_tokenizer):
    model = init_model(char_tokenizer, "llama", hidden=32, layers=1, heads=2)
    ex = sft_examples(4, 0)
    cfg = SFTConfig(steps=150, batch_size=4, lr=1e-2, warmup=1, log_every=10)
    log = train_sft(model, char_tokenizer, FMT, ex, cfg)
    assert log[0]["loss"] > 4.0 and log[-1]["loss"] < log[0]["loss"] / 2
    x, m = make_batch(encode(char_tokenizer, FMT, ex), char_tokenizer.pad_token_id)
    assert m.sum() == sum(len(ids) - pl for ids, pl in encode(char_tokenizer, FMT, ex))


def test_grpo_raises_logprob_of_rewarded_episodes(char_tokenizer, monkeypatch):
    """A GRPO step raises sum_i A_i log p(episode_i): with one correct and one wrong episode in the
    group (A = +-0.707) and kl_coef=0, log p(correct) - log p(wrong) must grow."""
    torch.manual_seed(0)
    model = init_model(char_tokenizer, "llama", hidden=32, layers=1, heads=2)
    ref = init_model(char_tokenizer, "llama", hidden=32, layers=1, heads=2)
    ref.load_state_dict(model.state_dict())
    p = Problem(123, 456)
    good, bad = (
        parse(char_tokenizer, p, FMT.trace_text(p, [FMT.attempt_text(p)])),
        parse(char_tokenizer, p, FMT.trace_text(p, [FMT.attempt_text(p, answer=p.answer + 1)])),
    )
    fake = [good, bad]

    def fake_rollout(model, tokenizer, fmt, requests, cfg, seed=0, **kw):
        return fake * (len(requests) // 2)

    monkeypatch.setattr("ds_core.training.grpo.rollout", fake_rollout)
    x, m = episode_batch(fake, char_tokenizer.pad_token_id)
    before = (token_logprobs(model, x) * m).sum(-1).detach()
    cfg = GRPOConfig(steps=1, prompts_per_step=1, group_size=2, lr=1e-3, kl_coef=0.0, minibatch=2)
    log = train_grpo(model, ref, char_tokenizer, FMT, cfg)
    after = (token_logprobs(model, x) * m).sum(-1).detach()
    assert log[0]["reward"] == 0.5 and abs(log[0]["ratio_mean"] - 1) < 1e-6
    assert (after[0] - after[1]) > (before[0] - before[1]) + 1e-3


def test_stage_runner_smoke(tmp_path):
    dirs = run_all(tmp_path, seed=0, smoke=True)
    assert [d.name for d in dirs] == ["base", "sft", "sft_reflection", "rl"]
    for d, stage in zip(dirs, STAGES):
        ck = load_checkpoint(d)
        assert ck.card.condition == d.name and ck.card.wall_time_s is not None
        rows = json.loads((d / "train_log.json").read_text())
        assert rows and (d / "train_log.csv").is_file()
        json.loads((d / "card.json").read_text())  # strict JSON (no NaN)
    assert load_checkpoint(dirs[3]).card.parent == load_checkpoint(dirs[2]).hash
    assert load_checkpoint(dirs[1]).card.parent == load_checkpoint(dirs[0]).hash
    # the report stage: eval.json beside every checkpoint, our table next to the paper's
    results = evaluate_conditions(tmp_path, store=None, n=2)
    assert list(results) == ["base", "sft", "sft_reflection", "rl"]
    for d in dirs:
        ev = json.loads((d / "eval.json").read_text())
        assert set(ev["sizes"]) == {f"3x{n}" for n in range(3, 10)}
    md = report_markdown(results)
    assert "| RL (paper) | 98 | 91 | 92 | 90 | 72 | 53 | 34 |" in md and "RL (DS-Lens)" in md
