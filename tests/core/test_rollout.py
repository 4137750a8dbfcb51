"""Batched rollout with a KV cache: determinism, batch independence, greedy = argmax, the
GrowingCache against transformers' DynamicCache, stopping rules (retry cap, STOP, budget),
prefix continuation and request validation. Tiny random models (hidden 32, 2 layers)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from transformers.cache_utils import DynamicCache

from ds_core.episodes.episode import CAP_REACHED, EMPTY_ATTEMPT, TRUNCATED
from ds_core.episodes.formats import DSFormat, TextFormat
from ds_core.episodes.tasks import Problem, sample_problems
from ds_core.episodes.tokenizer import RESAMPLE_TOKEN, decision_token_ids
from ds_core.models.kvcache import GrowingCache
from ds_core.models.model import init_model
from ds_core.models.rollout import _sample, budget, prompt_prefix, rollout
from ds_core.models.sampling import Prefix, RolloutError, SamplingConfig

REPO = Path(__file__).resolve().parents[2]

TINY = dict(hidden=32, layers=2, heads=2)


@pytest.fixture(scope="module")
def tok(char_tokenizer):
    return char_tokenizer


@pytest.fixture(scope="module")
def fmt():
    return DSFormat()


@pytest.fixture(scope="module")
def dec(tok):
    return decision_token_ids(tok)


@pytest.fixture(scope="module")
def model(tok):
    return init_model(tok, "llama", seed=0, **TINY)


@pytest.fixture(scope="module")
def mixed():
    """Problems of different prompt lengths, so batches are left-padded."""
    return (
        sample_problems("3x3", 3, seed=1)
        + sample_problems("3x8", 3, seed=1)
        + sample_problems("1x2", 2, seed=1)
        + [Problem(12, 34, "+")]
    )


def _cache_kw(model, cache):
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


class Forced(torch.nn.Module):
    """Wraps a causal LM so that one token always wins (its logit raised by 1e4)."""

    def __init__(self, inner, token_id: int):
        super().__init__()
        self.inner, self.token_id = inner, token_id
        self.config, self.generation_config = inner.config, inner.generation_config

    def forward(
        self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None, logits_to_keep=0, **kw
    ):
        out = self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kw,
        )
        out.logits[..., self.token_id] += 1e4
        return out


def _ids(episodes):
    return [e.token_ids for e in episodes]


# --- determinism ----------------------------------------------------------------------------------
def test_same_seed_same_episodes(model, tok, fmt, mixed):
    cfg = SamplingConfig(max_new_tokens=60)
    a = rollout(model, tok, fmt, mixed, cfg, seed=7)
    b = rollout(model, tok, fmt, mixed, cfg, seed=7)
    assert _ids(a) == _ids(b)
    assert [e.flags for e in a] == [e.flags for e in b]
    assert a == b  # Episode equality (all parsed fields)
    for e, p in zip(a, mixed):
        assert e.problem == p
        assert 1 <= len(e.generated_ids) <= 60


def test_different_seed_different_episodes(model, tok, fmt, mixed):
    cfg = SamplingConfig(max_new_tokens=60)
    a = rollout(model, tok, fmt, mixed, cfg, seed=1)
    b = rollout(model, tok, fmt, mixed, cfg, seed=2)
    differ = sum(x.token_ids != y.token_ids for x, y in zip(a, b))
    assert differ >= len(mixed) // 2
    # the prompts are the same; only the generations differ
    assert all(x.token_ids[: x.prompt_len] == y.token_ids[: y.prompt_len] for x, y in zip(a, b))


def test_batch_size_independence(model, tok, fmt, mixed):
    cfg = SamplingConfig(max_new_tokens=80)
    runs = {
        bs: _ids(rollout(model, tok, fmt, mixed, SamplingConfig(max_new_tokens=80, batch_size=bs), seed=3))
        for bs in (1, 3, 256)
    }
    assert runs[1] == runs[3] == runs[256]
    assert cfg.key() == SamplingConfig(max_new_tokens=80, batch_size=3).key()  # batch size not in key


def test_batch_size_independence_default_budget(model, tok, fmt):
    probs = sample_problems("3x3", 2, seed=5) + sample_problems("3x6", 2, seed=5)
    a = rollout(model, tok, fmt, probs, SamplingConfig(max_attempts=2, batch_size=1), seed=0)
    b = rollout(model, tok, fmt, probs, SamplingConfig(max_attempts=2), seed=0)
    assert _ids(a) == _ids(b)


def test_batch_composition_independence(model, tok, fmt, mixed):
    """Episode i depends on (seed, i, its request) only, not on the other requests."""
    cfg = SamplingConfig(max_new_tokens=60)
    base = rollout(model, tok, fmt, mixed, cfg, seed=4)
    others = sample_problems("3x9", len(mixed), seed=99)
    for i in (0, 3, len(mixed) - 1):
        reqs = list(others)
        reqs[i] = mixed[i]
        got = rollout(model, tok, fmt, reqs, cfg, seed=4)
        assert got[i].token_ids == base[i].token_ids, i
    # a shorter request list: the first episodes keep their streams
    head = rollout(model, tok, fmt, mixed[:2], cfg, seed=4)
    assert _ids(head) == _ids(base[:2])


def test_problem_and_its_prompt_prefix_are_the_same_request(model, tok, fmt, mixed):
    cfg = SamplingConfig(max_new_tokens=40)
    a = rollout(model, tok, fmt, mixed, cfg, seed=0)
    b = rollout(model, tok, fmt, [prompt_prefix(fmt, tok, p) for p in mixed], cfg, seed=0)
    assert a == b


# --- greedy ------------------------------------------------------------------------------------------
def _manual_greedy(model, prompt, n_max, stop_ids, resample_id, max_attempts):
    """Cache-free reference: recompute the whole sequence at every step, take the argmax."""
    ids, resamples = list(prompt), 0
    with torch.no_grad():
        for _ in range(n_max):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            t = int(logits.argmax())
            ids.append(t)
            if t in stop_ids:
                break
            if t == resample_id:
                resamples += 1
                if resamples >= max_attempts:
                    break
    return tuple(ids)


def test_temperature_zero_is_greedy(model, tok, fmt, mixed, dec):
    n = 30
    cfg = SamplingConfig(temperature=0, max_new_tokens=n, max_attempts=3)
    eps = rollout(model, tok, fmt, mixed, cfg, seed=0)
    stop_ids = {dec["STOP"], tok.eos_token_id}
    for e in eps[:4] + eps[-2:]:
        want = _manual_greedy(model, e.token_ids[: e.prompt_len], n, stop_ids, dec["RESAMPLE"], 3)
        assert e.token_ids == want
    # every generated token is the argmax of one full (cache-free) forward pass
    with torch.no_grad():
        for e in eps:
            logits = model(input_ids=torch.tensor([e.token_ids])).logits[0]
            for k in range(e.prompt_len, len(e.token_ids)):
                assert e.token_ids[k] == int(logits[k - 1].argmax())
    # greedy does not depend on the seed
    assert _ids(rollout(model, tok, fmt, mixed, cfg, seed=123)) == _ids(eps)


def test_tiny_top_p_equals_greedy(model, tok, fmt, mixed):
    greedy = rollout(model, tok, fmt, mixed, SamplingConfig(temperature=0, max_new_tokens=40), seed=0)
    for seed in (0, 1):
        nucleus = rollout(
            model, tok, fmt, mixed, SamplingConfig(temperature=1.0, top_p=1e-6, max_new_tokens=40), seed=seed
        )
        assert _ids(nucleus) == _ids(greedy)


def test_sample_one_token_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]] * 3)
    u = torch.tensor([0.01, 0.5, 0.999])
    cfg = SamplingConfig()
    got = _sample(logits, u, cfg).tolist()
    cdf = torch.softmax(logits[0], -1).cumsum(-1)
    assert got == [int(torch.searchsorted(cdf, x)) for x in u.tolist()]
    assert _sample(logits, u, SamplingConfig(temperature=0)).tolist() == [2, 2, 2]
    # probabilities .644, .237, .087, .032: top_p 0.6 keeps only the first, top_p 0.7 the first two
    rows, us = logits[:1].repeat(200, 1), torch.linspace(0.001, 0.999, 200)
    assert set(_sample(rows, us, SamplingConfig(top_p=0.6)).tolist()) == {2}
    picked = _sample(rows, us, SamplingConfig(top_p=0.7)).tolist()
    assert set(picked) == {1, 2}
    assert abs(picked.count(2) / 200 - 0.644 / (0.644 + 0.237)) < 0.02  # renormalised
    # a high temperature flattens the distribution: every token can come out
    assert set(_sample(rows, us, SamplingConfig(temperature=100)).tolist()) == {0, 1, 2, 3}


def test_sample_never_picks_a_zero_probability_token():
    # Regression (was a bug, fixed): ds_core/models/rollout.py:97 (_sample): `torch.searchsorted(cdf, u)` with u == 0
    # returns index 0
    # even when token 0 has probability 0 (cut by top_p, or underflowed), because cdf[0] == 0 >= 0.
    # random.random() can return exactly 0.0 (probability 2**-53 per draw, so it is very rare).
    # Input: logits [[0., 1.]], u = [0.0], top_p = 0.1 -> expected token 1 (the only token kept,
    # i.e. greedy); got token 0. Fix: searchsorted(..., right=True) or draw u from (0, 1].
    logits = torch.tensor([[0.0, 1.0]])
    assert _sample(logits, torch.tensor([0.0]), SamplingConfig(top_p=0.1)).tolist() == [1]
    logits = torch.tensor([[-1e9, 0.0, 1.0]])
    assert _sample(logits, torch.tensor([0.0]), SamplingConfig()).tolist() != [0]


# --- the KV cache -------------------------------------------------------------------------------------
def _step(model, ids, cache, mask=None):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, **_cache_kw(model, cache))
    return out.logits[:, -1]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_growing_cache_matches_dynamic_cache(tok, arch):
    model = init_model(tok, arch, seed=2, **TINY)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(6, len(tok), (3, 7), generator=g)
    grow, dyn = GrowingCache(), DynamicCache()
    assert torch.allclose(_step(model, prompt, grow), _step(model, prompt, dyn), atol=1e-5)
    steps = torch.randint(6, len(tok), (60, 3), generator=g)
    for s in range(60):  # 7 + 60 > 64: the buffer doubles along the way
        a = _step(model, steps[s].unsqueeze(-1), grow)
        b = _step(model, steps[s].unsqueeze(-1), dyn)
        assert torch.allclose(a, b, atol=1e-5, rtol=0), s
    assert grow.get_seq_length() == dyn.get_seq_length() == 67
    # and both agree with a cache-free forward pass
    full = torch.cat([prompt, steps.T], dim=1)
    with torch.no_grad():
        ref = model(input_ids=full).logits[:, -1]
    assert torch.allclose(a, ref, atol=1e-4)

    # batch_select_indices: keep rows 2 and 0
    sel = torch.tensor([2, 0])
    grow.batch_select_indices(sel)
    dyn.batch_select_indices(sel)
    more = torch.randint(6, len(tok), (5, 2), generator=g)
    for s in range(5):
        a, b = _step(model, more[s].unsqueeze(-1), grow), _step(model, more[s].unsqueeze(-1), dyn)
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert grow.get_seq_length() == dyn.get_seq_length() == 72
    with torch.no_grad():
        ref = model(input_ids=torch.cat([full[sel], more.T], dim=1)).logits[:, -1]
    assert torch.allclose(a, ref, atol=1e-4)

    # crop(-k) removes the last k tokens; the next tokens overwrite them
    grow.crop(-3)
    dyn.crop(-3)
    assert grow.get_seq_length() == dyn.get_seq_length() == 69
    for layer in grow.layers:
        assert layer.keys.shape[-2] == 69
    new = torch.randint(6, len(tok), (2, 4), generator=g)
    a, b = _step(model, new, grow), _step(model, new, dyn)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert grow.get_seq_length() == 73
    with torch.no_grad():
        ref = model(input_ids=torch.cat([full[sel], more.T[:, :2], new], dim=1)).logits[:, -1]
    assert torch.allclose(a, ref, atol=1e-4)
    grow.crop(0)
    assert grow.get_seq_length() == 73


def test_growing_cache_batch_select_before_growth_and_reset(tok, model):
    prompt = torch.randint(6, len(tok), (4, 5), generator=torch.Generator().manual_seed(1))
    grow, dyn = GrowingCache(), DynamicCache()
    _step(model, prompt, grow), _step(model, prompt, dyn)
    sel = torch.tensor([3])
    grow.batch_select_indices(sel)
    dyn.batch_select_indices(sel)
    t = torch.tensor([[9]])
    assert torch.allclose(_step(model, t, grow), _step(model, t, dyn), atol=1e-5)
    grow.reset()
    assert grow.get_seq_length() == 0
    assert torch.allclose(_step(model, prompt, grow), _step(model, prompt, DynamicCache()), atol=1e-5)


# --- stopping rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("max_attempts", [1, 3])
def test_retry_cap(model, tok, fmt, dec, max_attempts):
    forced = Forced(model, dec["RESAMPLE"])
    probs = sample_problems("3x4", 3, seed=0)
    eps = rollout(forced, tok, fmt, probs, SamplingConfig(max_attempts=max_attempts), seed=0)
    for e in eps:
        assert e.generated_ids == (dec["RESAMPLE"],) * max_attempts
        assert CAP_REACHED in e.flags and TRUNCATED not in e.flags
        assert len(e.decisions) == max_attempts
        assert all(d.verdict == "RESAMPLE" for d in e.decisions)
        assert not e.correct


def test_immediate_stop_is_empty_attempt(model, tok, fmt, dec):
    forced = Forced(model, dec["STOP"])
    probs = sample_problems("3x3", 2, seed=0)
    for e in rollout(forced, tok, fmt, probs, SamplingConfig(), seed=0):
        assert e.generated_ids == (dec["STOP"],)
        assert EMPTY_ATTEMPT in e.flags
        assert [d.verdict for d in e.decisions] == ["STOP"]
        assert e.final_answer is None and not e.correct


def test_eos_ends_the_episode(model, tok, fmt):
    forced = Forced(model, tok.eos_token_id)
    e = rollout(forced, tok, fmt, [Problem(123, 456)], SamplingConfig(), seed=0)[0]
    assert e.generated_ids == (tok.eos_token_id,)
    assert TRUNCATED not in e.flags


def test_budget_truncation(model, tok, fmt):
    one = tok.convert_tokens_to_ids("1")
    forced = Forced(model, one)
    probs = [Problem(123, 456), Problem(123, 45678901)]
    eps = rollout(forced, tok, fmt, probs, SamplingConfig(max_new_tokens=7), seed=0)
    for e in eps:
        assert e.generated_ids == (one,) * 7
        assert TRUNCATED in e.flags
    # the default budget: 1.5x a correct attempt per allowed attempt
    cfg = SamplingConfig(max_attempts=2)
    eps = rollout(forced, tok, fmt, probs, cfg, seed=0)
    for e, p in zip(eps, probs):
        assert len(e.generated_ids) == budget(fmt, p, cfg)
        assert budget(fmt, p, cfg) == int(2 * (1.5 * len(fmt.attempt_text(p)) + 2)) + 8
        assert TRUNCATED in e.flags


def test_budget_capped_by_context(tok, fmt):
    model = init_model(tok, "llama", seed=0, max_positions=40, **TINY)
    forced = Forced(model, tok.convert_tokens_to_ids("7"))
    p = Problem(123, 4567)
    plen = len(prompt_prefix(fmt, tok, p).ids)
    e = rollout(forced, tok, fmt, [p], SamplingConfig(max_new_tokens=1000), seed=0)[0]
    assert len(e.token_ids) == 40 and len(e.generated_ids) == 40 - plen
    assert TRUNCATED in e.flags


def test_natural_stops_are_not_truncated(model, tok, fmt, dec, mixed):
    eps = rollout(model, tok, fmt, mixed, SamplingConfig(max_new_tokens=50), seed=0)
    for e in eps:
        last = e.generated_ids[-1]
        if TRUNCATED in e.flags:
            assert len(e.generated_ids) == 50
            assert last not in (dec["STOP"], tok.eos_token_id)
        else:
            assert last in (dec["STOP"], dec["RESAMPLE"], tok.eos_token_id)
        # nothing after the first STOP / eos
        gen = list(e.generated_ids)
        for t in (dec["STOP"], tok.eos_token_id):
            if t in gen:
                assert gen.index(t) == len(gen) - 1


# --- prefixes ------------------------------------------------------------------------------------------
def _retry_prefix(fmt, tok, problem) -> Prefix:
    base = prompt_prefix(fmt, tok, problem)
    text = fmt.attempt_text(problem) + RESAMPLE_TOKEN
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return Prefix(problem, base.ids + tuple(ids), base.prompt_len)


def test_prefix_continuation_keeps_prefix(model, tok, fmt, dec):
    probs = [Problem(123, 4567), Problem(405, 99)]
    prefixes = [_retry_prefix(fmt, tok, p) for p in probs]
    eps = rollout(model, tok, fmt, prefixes, SamplingConfig(max_new_tokens=40), seed=0)
    for e, px, p in zip(eps, prefixes, probs):
        assert e.token_ids[: len(px.ids)] == px.ids
        assert e.prompt_len == px.prompt_len
        assert len(e.token_ids) > len(px.ids)
        assert e.attempts[0].answer == p.answer and e.attempts[0].correct
        assert e.decisions[0].verdict == "RESAMPLE"
    # continuing with a forced STOP: the second attempt is empty, the first is intact
    stop = rollout(Forced(model, dec["STOP"]), tok, fmt, prefixes, SamplingConfig(), seed=0)
    for e, px in zip(stop, prefixes):
        assert e.token_ids == px.ids + (dec["STOP"],)
        assert [d.verdict for d in e.decisions] == ["RESAMPLE", "STOP"]
        assert e.attempts[0].correct


def test_prefix_retry_cap_counts_prefix_resamples(model, tok, fmt, dec):
    # Regression (was a bug, fixed): ds_core/models/rollout.py:153 (`resamples = [0] * n` in _rollout_batch) counts
    # only the
    # RESAMPLE tokens generated in this call, not those already in a Prefix's continuation
    # (ids[prompt_len:]). The episode is parsed from prompt_len, so the prefix's attempts count.
    # Input: prefix = prompt + one attempt + [RESAMPLE], max_attempts=3, a model that always
    # emits [RESAMPLE]. Expected: 2 more RESAMPLEs (3 in the episode, 3 attempts, cap_reached);
    # got 3 more (4 RESAMPLEs, 4 attempts: more than max_attempts allows).
    p = Problem(123, 4567)
    px = _retry_prefix(fmt, tok, p)
    e = rollout(Forced(model, dec["RESAMPLE"]), tok, fmt, [px], SamplingConfig(max_attempts=3), seed=0)[0]
    assert e.token_ids[: len(px.ids)] == px.ids
    assert CAP_REACHED in e.flags
    assert e.generated_ids.count(dec["RESAMPLE"]) == 3
    assert len(e.attempts) == 3


def test_repeated_prefixes_share_one_prefill_and_sample_as_alone(model, tok, fmt):
    """Continuations of one transcript (the same prefix, many streams) are prefilled once and copied:
    each row samples what it samples alone, and lazy compaction (compact_at) changes nothing."""
    probs = [Problem(123, 4567), Problem(405, 99)]
    prefixes = [_retry_prefix(fmt, tok, p) for p in probs]
    reqs = [prefixes[i % 2] for i in range(10)]
    names = [f"q:{i}" for i in range(10)]
    cfg = SamplingConfig(max_new_tokens=60)
    together = rollout(model, tok, fmt, reqs, cfg, seed=3, streams=names)
    alone = [rollout(model, tok, fmt, [r], cfg, seed=3, streams=[s])[0] for r, s in zip(reqs, names)]
    assert _ids(together) == _ids(alone)
    assert len({e.token_ids for e in together}) > 2  # the streams differ, not one continuation copied
    for c in (0.25, 0.5, 0.9):
        assert _ids(rollout(model, tok, fmt, reqs, cfg, seed=3, streams=names, compact_at=c)) == _ids(alone)
    with pytest.raises(RolloutError, match="compact_at"):
        rollout(model, tok, fmt, reqs, cfg, compact_at=1.0)


def test_until_verdict_stops_at_the_next_resample(model, tok, fmt, dec):
    p = Problem(123, 4567)
    px = _retry_prefix(fmt, tok, p)
    e = rollout(Forced(model, dec["RESAMPLE"]), tok, fmt, [px], SamplingConfig(), seed=0, until_verdict=True)[0]
    assert e.token_ids == px.ids + (dec["RESAMPLE"],)  # one more verdict, then the row ends
    full = rollout(model, tok, fmt, [px], SamplingConfig(max_new_tokens=200), seed=1)[0]
    cut = rollout(model, tok, fmt, [px], SamplingConfig(max_new_tokens=200), seed=1, until_verdict=True)[0]
    new = [d for d in full.decisions if d.start >= len(px.ids)]
    end = new[0].start + 1 if new else len(full.token_ids)
    assert cut.token_ids == full.token_ids[:end]  # the same tokens up to the first new verdict


def test_verdict_hook_rewrites_the_verdict_and_ends_or_goes_on(model, tok, fmt, dec):
    """(The hook's new stream and fresh budget against one rollout call per round: test_regret's
    optimal-continuation replay.)"""
    p = Problem(123, 4567)
    px = _retry_prefix(fmt, tok, p)
    forced = Forced(model, dec["RESAMPLE"])  # every sampled token a [RESAMPLE]
    calls = []

    def hook(i, ids):
        calls.append((i, list(ids)))
        return (dec["RESAMPLE"], "next") if len(calls) == 1 else (dec["STOP"], None)

    e = rollout(forced, tok, fmt, [px], SamplingConfig(), seed=0, verdict=hook)[0]
    res, stop = dec["RESAMPLE"], dec["STOP"]
    assert calls == [(0, list(px.ids) + [res]), (0, list(px.ids) + [res, res])]
    assert e.token_ids == px.ids + (res, stop)  # the second verdict rewritten to [STOP], the row ended there
    # without the hook the forced row goes on to the retry cap
    plain = rollout(forced, tok, fmt, [px], SamplingConfig(), seed=0)[0]
    assert plain.token_ids == px.ids + (res,) * (SamplingConfig().max_attempts - 1)


# --- validation -------------------------------------------------------------------------------------------
def test_prompt_longer_than_context(tok, fmt):
    model = init_model(tok, "llama", seed=0, max_positions=12, **TINY)
    long = Problem(123, 123456789012)  # prompt: <bos> + 3 + op + 12 + '=' = 18 tokens
    with pytest.raises(RolloutError, match="context"):
        rollout(model, tok, fmt, [Problem(1, 2), long], SamplingConfig(), seed=0)
    exact = Prefix(None, tuple([7] * 12), 12)  # exactly the context: nothing left to generate
    with pytest.raises(RolloutError, match="context"):
        rollout(model, tok, fmt, [exact], SamplingConfig(), seed=0)
    fits = Prefix(None, tuple([7] * 11), 11)  # one token left
    e = rollout(model, tok, fmt, [fits], SamplingConfig(), seed=0)[0]
    assert len(e.token_ids) == 12


def test_empty_prefix_refused(model, tok, fmt):
    with pytest.raises(RolloutError, match="empty"):
        rollout(model, tok, fmt, [Prefix(None, (), 0)], SamplingConfig(), seed=0)


@pytest.mark.parametrize(
    "kw,word",
    [
        (dict(temperature=-1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=101), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=-0.1), "top_p"),
        (dict(max_attempts=0), "max_attempts"),
        (dict(max_attempts=33), "max_attempts"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=-5), "max_new_tokens"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_sampling_config_validation(kw, word):
    with pytest.raises(RolloutError, match=word):
        SamplingConfig(**kw)


def test_sampling_config_accepts_edges():
    SamplingConfig(temperature=0, top_p=1.0, max_attempts=1, max_new_tokens=1, batch_size=1)
    SamplingConfig(temperature=100, top_p=1e-9, max_attempts=32)
    assert issubclass(RolloutError, ValueError)
    assert "batch_size" not in SamplingConfig().key()
    assert SamplingConfig(temperature=0.5).key() != SamplingConfig().key()


def test_empty_request_list(model, tok, fmt):
    assert rollout(model, tok, fmt, [], SamplingConfig(), seed=0) == []


def test_progress_totals_episodes(model, tok, fmt, mixed):
    calls = []
    eps = rollout(
        model, tok, fmt, mixed, SamplingConfig(max_new_tokens=30, batch_size=4), seed=0, progress=calls.append
    )
    assert sum(calls) == len(eps) == len(mixed)
    assert all(isinstance(k, int) and k >= 1 for k in calls)


# --- other architectures and tokenizers --------------------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_other_architectures(tok, fmt, mixed, arch):
    m = init_model(tok, arch, seed=0, **TINY)
    cfg = SamplingConfig(max_new_tokens=40)
    a = rollout(m, tok, fmt, mixed, cfg, seed=5)
    b = rollout(m, tok, fmt, mixed, SamplingConfig(max_new_tokens=40, batch_size=1), seed=5)
    assert _ids(a) == _ids(b)
    assert _ids(rollout(m, tok, fmt, mixed, cfg, seed=5)) == _ids(a)
    greedy = rollout(m, tok, fmt, mixed[:4], SamplingConfig(temperature=0, max_new_tokens=20), seed=0)
    with torch.no_grad():
        for e in greedy:
            logits = m(input_ids=torch.tensor([e.token_ids])).logits[0]
            for k in range(e.prompt_len, len(e.token_ids)):
                assert e.token_ids[k] == int(logits[k - 1].argmax())


def test_bpe_tokenizer_text_format(bpe_tokenizer):
    m = init_model(bpe_tokenizer, "llama", seed=0, **TINY)
    fmt = TextFormat()
    probs = [Problem(123, 45), Problem(7, 8901, "+"), Problem(12, 3)]
    cfg = SamplingConfig(max_new_tokens=20)
    a = rollout(m, bpe_tokenizer, fmt, probs, cfg, seed=0)
    b = rollout(m, bpe_tokenizer, fmt, probs, SamplingConfig(max_new_tokens=20, batch_size=1), seed=0)
    assert _ids(a) == _ids(b)
    for e, p in zip(a, probs):
        assert e.token_ids[: e.prompt_len] == tuple(bpe_tokenizer(fmt.prompt_text(p))["input_ids"])
        gen = e.generated_ids
        assert 1 <= len(gen) <= 20
        assert bpe_tokenizer.eos_token_id not in gen[:-1]
        assert (TRUNCATED in e.flags) == (len(gen) == 20 and gen[-1] != bpe_tokenizer.eos_token_id)
    forced = Forced(m, bpe_tokenizer.eos_token_id)
    for e in rollout(forced, bpe_tokenizer, fmt, probs, cfg, seed=0):
        assert e.generated_ids == (bpe_tokenizer.eos_token_id,)


# --- cascade attention over shared prefixes (ds_core.models.shared_prefix) -----------------------------
def test_shared_prefix_attention_equals_attention_over_the_whole_cache():
    """The prefix part (once per prefix, rows side by side) merged with each row's own part by
    log-sum-exp equals SDPA over each row's concatenated cache, with left padding in the prefixes,
    grouped-query heads, rows of unequal groups in any order, and after a compaction."""
    from ds_core.models.shared_prefix import SharedPrefix, shared_prefix_attention

    g = torch.Generator().manual_seed(0)
    n_prefix, hkv, rep, lp, ls, d = 3, 2, 2, 9, 5, 8
    kp, vp = torch.randn(n_prefix, hkv, lp, d, generator=g), torch.randn(n_prefix, hkv, lp, d, generator=g)
    valid = torch.ones(n_prefix, lp, dtype=torch.bool)
    valid[1, :4] = valid[2, :1] = False  # left padding
    group = torch.tensor([0, 0, 2, 1, 2, 2, 0])
    rows = len(group)
    q = torch.randn(rows, hkv * rep, 1, d, generator=g)
    ks, vs = torch.randn(rows, hkv, ls, d, generator=g), torch.randn(rows, hkv, ls, d, generator=g)

    class Layer:
        layer_idx = 0

    def reference(q, ks, vs, group):
        k = torch.cat([kp[group], ks], dim=2).repeat_interleave(rep, dim=1)
        v = torch.cat([vp[group], vs], dim=2).repeat_interleave(rep, dim=1)
        m = torch.cat([valid[group], torch.ones(len(group), ls, dtype=torch.bool)], dim=1)[:, None, None, :]
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m).transpose(1, 2)

    sp = SharedPrefix([kp], [vp], valid, group)
    assert sp.slot.tolist() == [0, 1, 0, 0, 1, 2, 2] and sp.width == 3
    out, _ = shared_prefix_attention(Layer(), q, ks, vs, None, scaling=d**-0.5, ds_lens_prefix=sp)
    assert out.shape == (rows, 1, hkv * rep, d)
    assert torch.allclose(out, reference(q, ks, vs, group), atol=1e-6)
    keep = torch.tensor([1, 3, 4])  # a compaction
    sp.select(keep)
    assert sp.group.tolist() == [0, 1, 2] and sp.width == 1
    out, _ = shared_prefix_attention(Layer(), q[keep], ks[keep], vs[keep], None, scaling=d**-0.5, ds_lens_prefix=sp)
    assert torch.allclose(out, reference(q[keep], ks[keep], vs[keep], group[keep]), atol=1e-6)


def test_shared_prefix_rollout_samples_what_copied_caches_sample(tok, fmt, monkeypatch):
    """Rollout over repeated prefixes with the prefixes' cache shared (llama) samples the same
    tokens as with a copy per row, with grouped-query heads too; the model's attention setting is
    put back afterwards."""
    import ds_core.models.rollout as R

    m = init_model(tok, "llama", seed=4, **TINY)
    m.config.num_key_value_heads = 1
    gqa = type(m)(m.config).eval()  # 2 query heads on 1 kv head
    probs = [Problem(123, 4567), Problem(405, 99), Problem(7, 8)]
    reqs = [_retry_prefix(fmt, tok, probs[i % 3]) for i in range(24)]
    names = [f"q:{i}" for i in range(24)]
    cfg = SamplingConfig(max_new_tokens=50)
    for model in (init_model(tok, "llama", seed=4, **TINY), gqa):
        before = model.config._attn_implementation
        shared = rollout(model, tok, fmt, reqs, cfg, seed=2, streams=names, compact_at=0.25)
        assert model.config._attn_implementation == before
        monkeypatch.setattr(R, "supports_shared_prefix", lambda _m: False)
        copies = rollout(model, tok, fmt, reqs, cfg, seed=2, streams=names, compact_at=0.25)
        monkeypatch.undo()
        assert _ids(shared) == _ids(copies)
        assert len({e.token_ids for e in shared}) > 3
