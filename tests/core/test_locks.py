"""Two browser sessions share each cached model: attribution (which switches the model to eager
attention) and rollouts from several threads must neither deadlock nor change each other's numbers."""

import threading

import pytest

from ds_core.attribution.gradient import attribute
from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import Problem
from ds_core.models.model import init_model
from ds_core.models.rollout import rollout
from ds_core.models.sampling import SamplingConfig


@pytest.fixture(scope="module")
def models(char_tokenizer):
    kw = dict(hidden=32, layers=2, heads=2)
    a = init_model(char_tokenizer, "llama", seed=0, **kw)
    b = init_model(char_tokenizer, "llama", seed=1, **kw)
    for m in (a, b):
        m.set_attn_implementation("sdpa")
    return a, b


def test_concurrent_attribution_and_rollout(models, char_tokenizer):
    a, b = models
    fmt = DSFormat()
    cfg = SamplingConfig(max_new_tokens=60, max_attempts=2)
    ep = rollout(a, char_tokenizer, fmt, [Problem(12, 34)], cfg, seed=0)[0]
    if not any(r == "decision" for r in ep.roles):  # random weights: force a verdict into the episode
        from ds_core.episodes.traces import demo_episode

        ep = demo_episode(Problem(12, 34), tokenizer=char_tokenizer)
    serial_ab = attribute(a, ep, "kl_k1", ref_model=b, norms=False)
    serial_ba = attribute(b, ep, "kl_k1", ref_model=a, norms=False)
    serial_roll = rollout(a, char_tokenizer, fmt, [Problem(123, 45)] * 3, cfg, seed=5)

    results, errors = {}, []

    def run(name, fn):
        try:
            for _ in range(3):
                results.setdefault(name, []).append(fn())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=("ab", lambda: attribute(a, ep, "kl_k1", ref_model=b, norms=False))),
        threading.Thread(target=run, args=("ba", lambda: attribute(b, ep, "kl_k1", ref_model=a, norms=False))),
        threading.Thread(
            target=run, args=("roll", lambda: rollout(a, char_tokenizer, fmt, [Problem(123, 45)] * 3, cfg, seed=5))
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock: a thread did not finish"
    assert not errors, errors
    for r in results["ab"]:
        assert r.figures.norm_G_S == pytest.approx(serial_ab.figures.norm_G_S, rel=1e-5)
        assert r.share == pytest.approx(serial_ab.share, rel=1e-4, abs=1e-7)
    for r in results["ba"]:
        assert r.figures.norm_G_D == pytest.approx(serial_ba.figures.norm_G_D, rel=1e-5)
    for eps in results["roll"]:
        assert [e.token_ids for e in eps] == [e.token_ids for e in serial_roll]
    assert a.config._attn_implementation == "sdpa" and b.config._attn_implementation == "sdpa"
