"""Sessions sharing cached models never change each other's results (issue 11.1).

The app shares each loaded model between browser sessions; attribution switches a model to eager
attention (and the math SDPA kernel, a process-wide setting), captum hooks its embedding layer,
torch.func.functional_call swaps its parameters for the duration of a call. Every model-using
service runs here in threads at once, twice each, on the same model objects; every result must be
bit-equal to the same call made alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ds_core.episodes.tasks import Problem, TaskSpec
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.sampling import SamplingConfig
from ds_core.paths import SHIPPED_DIR

CFG = SamplingConfig(temperature=1.0, max_attempts=3)
P = Problem(123, 45)


@pytest.fixture(scope="module")
def models():
    return {name: load_checkpoint(SHIPPED_DIR / name) for name in ("rl", "sft_reflection")}


def _jobs(models):
    import ui.services.explorer as ex
    from ds_core.analysis.balance.dataset import dataset_balance
    from ds_core.analysis.evaluate import evaluate
    from ui.services.compare_teacher_forcing import score
    from ui.services.custom_prompts_run import run_prompts
    from ui.services.custom_prompts_upload import parse_rows, read_text

    rl, ref = models["rl"], models["sft_reflection"]
    eps = [ex.run_episode(rl, Problem(100 + i, 37 + i), CFG, seed=i) for i in range(4)]
    ep = next(e for e in eps if e.decisions)
    transcripts = [e.token_ids for e in eps]
    prompts, _ = parse_rows(read_text("12*34\n567*89\n3 x 4"))

    def shares(att):
        return {o: (r.share, r.align_D, r.figures.row()) for o, r in sorted(att.results.items())} | {
            "skipped": att.skipped
        }

    return {
        "teacher forcing (policy)": lambda: [s.logp for s in score(rl, transcripts)],
        "teacher forcing (reference)": lambda: [s.logp for s in score(ref, transcripts)],
        "rollout": lambda: ex.run_episode(rl, P, CFG, seed=7).token_ids,
        "attribution with a KL reference": lambda: shares(
            ex.attribute_objectives(rl, ep, ["surrogate", "kl_k3", "sft_sum"], advantage=1.0, ref=ref)
        ),
        "input attribution": lambda: ex.decision_input_attribution(
            rl, ep, ep.decisions[0].start, method="input_x_gradient"
        ).matrix.tolist(),
        "counterfactual": lambda: ex.counterfactual(rl, ep, 0, CFG, seed=3).episode.token_ids,
        "group advantage": lambda: ex.group_advantage(rl, ep, CFG, n=4, seed=1),
        "custom prompts": lambda: run_prompts([rl, ref], prompts, CFG, seed=2).results.to_dict("list"),
        "calibration (evaluate)": lambda: (
            evaluate(rl, [TaskSpec.parse("3x3")], n=3, cfg=CFG, store=None, n_boot=10).sizes[0].report.to_dict()
        ),
        "dataset balance": lambda: (
            dataset_balance(rl, "3x3", 2, ("sft_sum", "kl_k1"), cfg=CFG)
            .frame.drop(columns=["wall_s"], errors="ignore")
            .to_dict("list")
        ),
    }


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return (np.isnan(a) and np.isnan(b)) or a == b  # bit-equal, nan included
    return a == b


def test_every_model_service_at_once_equals_each_alone(models):
    """Two threads per service, all started at once, on the same model objects."""
    jobs = _jobs(models)
    alone = {name: fn() for name, fn in jobs.items()}
    names = [n for n in jobs for _ in range(2)]
    start = threading.Barrier(len(names))

    def go(name):
        start.wait()  # all at once
        return name, jobs[name]()

    with ThreadPoolExecutor(len(names)) as pool:
        got = list(pool.map(go, names))
    changed = sorted({name for name, value in got if not _same(value, alone[name])})
    assert not changed, f"results changed when run beside the others: {changed}"
    for ck in models.values():  # left as loaded: eval mode, their own attention
        assert not ck.model.training and ck.model.config._attn_implementation != "eager"


def test_no_service_runs_while_another_call_holds_the_models_in_eager_mode(models):
    """An adversary thread keeps switching both models to eager attention (attribution's switch,
    with the math SDPA kernel) and back; every service, called meanwhile, returns exactly what it
    returns alone (eager attention gives other numbers: ~2e-5 nats on these models), so none of
    them runs a forward pass outside MODEL_LOCK."""
    import time

    from ds_core.attribution.engine import autodiff_attention

    jobs = _jobs(models)
    alone = {name: fn() for name, fn in jobs.items()}
    stop, switches = threading.Event(), [0]

    def adversary():
        while not stop.is_set():
            with autodiff_attention(models["rl"].model), autodiff_attention(models["sft_reflection"].model):
                switches[0] += 1
                time.sleep(0.02)
            time.sleep(0.002)

    t = threading.Thread(target=adversary)
    t.start()
    try:
        time.sleep(0.05)
        changed = [name for name, fn in jobs.items() if not _same(fn(), alone[name])]
    finally:
        stop.set()
        t.join()
    assert switches[0] > len(jobs)
    assert not changed, f"results changed beside a call that switched the models' attention: {changed}"


def test_a_loaded_model_refuses_a_forward_pass_outside_the_lock(models):
    import torch

    from ds_core.models.locks import MODEL_LOCK, UnisolatedModelCall

    x = torch.tensor([[1, 2, 3]])
    with pytest.raises(UnisolatedModelCall, match="MODEL_LOCK"):
        models["rl"].model(input_ids=x)
    with MODEL_LOCK, torch.no_grad():
        assert models["rl"].model(input_ids=x).logits.shape[:2] == (1, 3)
