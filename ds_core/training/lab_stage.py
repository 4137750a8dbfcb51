"""One DS-lab run: train a condition's seed from its parent, write the checkpoint, its card, its
training log and its evaluation on the fixed test sets (ds_core.training.lab has the plan)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from ds_core.analysis.evaluate import evaluate
from ds_core.analysis.metrics import calibration
from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import OOD_SIZES, TRAIN_SIZES, parse_sizes, sample_mixture
from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
from ds_core.models.locks import isolated
from ds_core.models.model import n_params
from ds_core.models.rollout import rollout
from ds_core.models.sampling import SamplingConfig
from ds_core.store.jsonio import to_jsonable
from ds_core.training.grpo import train_grpo
from ds_core.training.recipes import RECIPES
from ds_core.training.sft import train_sft
from ds_core.training.stages import SMOKE_MAX_NEW_TOKENS, fresh_model, model_spec, write_log

HELDOUT_SEED = 12345
HELDOUT_N = {"id": 48, "ood": 40}  # problems drawn from 3x3/3x4 and from 3x5..3x9


def heldout_eval(model, tokenizer, fmt, n=HELDOUT_N, max_new_tokens=None):
    """p_s, p_d|C, p_d|W, accuracy on a held-out in-distribution set (eval_*) and an
    out-of-distribution one (eval_ood_*), the same problems and streams at every step."""
    sets = {
        "eval_": sample_mixture(list(TRAIN_SIZES), n["id"], seed=HELDOUT_SEED),
        "eval_ood_": sample_mixture(list(OOD_SIZES), n["ood"], seed=HELDOUT_SEED),
    }
    cfg = SamplingConfig(max_new_tokens=max_new_tokens)

    def run(step: int) -> dict:
        row = {}
        for prefix, problems in sets.items():
            eps = rollout(model, tokenizer, fmt, problems, cfg, seed=HELDOUT_SEED)
            r = calibration(eps, n_boot=1)
            row.update(
                {
                    f"{prefix}acc": r.accuracy.p,
                    f"{prefix}p_s": r.p_s.value,
                    f"{prefix}p_dC": r.p_dC.value,
                    f"{prefix}p_dW": r.p_dW.value,
                    f"{prefix}attempts": r.mean_attempts,
                }
            )
        return row

    return run


@isolated  # loaded checkpoints are guarded (ds_core.models.locks): training holds the lock throughout
def train_condition(c, seed: int, dest: Path, parent: Path | None, smoke: bool = False, evaluate_n: int = 100) -> Path:
    """Train condition `c` (a ds_core.training.lab.Condition) with `seed` into `dest`."""
    fmt = DSFormat()
    t0 = time.perf_counter()
    if parent is None:
        model, tokenizer = fresh_model(seed, smoke)
        parent_hash = None
    else:
        ck = load_checkpoint(parent)
        model, tokenizer, parent_hash = ck.model, ck.tokenizer, ck.hash
    cap = SMOKE_MAX_NEW_TOKENS if smoke else None
    n = {"id": 4, "ood": 2} if smoke else HELDOUT_N
    held = heldout_eval(model, tokenizer, fmt, n, max_new_tokens=cap)
    if c.sft is not None:
        cfg = replace(c.sft, seed=seed)
        examples = RECIPES[c.recipe](c.n_examples, seed, **dict(c.recipe_options))
        log = train_sft(model, tokenizer, fmt, examples, cfg, evaluate=held)
        training = {"algorithm": "sft", **cfg.to_dict()}
        doc = RECIPES[c.recipe].__doc__ or c.recipe
    else:
        cfg = replace(c.grpo, seed=seed)
        ref = load_checkpoint(parent).model
        log = train_grpo(model, ref, tokenizer, fmt, cfg, evaluate=held)
        training = {"algorithm": "grpo", "reference": parent_hash, **cfg.to_dict()}
        doc = f"on-policy rollouts of {', '.join(cfg.sizes)} problems"
    train_s = time.perf_counter() - t0
    card = Card(
        condition=c.name,
        seed=seed,
        training={**training, "model": model_spec(model), "n_params": n_params(model)},
        data_recipe={"recipe": c.recipe, "n_examples": c.n_examples, "options": dict(c.recipe_options), "doc": doc},
        metrics={k: v for k, v in log[-1].items() if k.startswith("eval_")} if log else {},
        parent=parent_hash,
        wall_time_s=round(train_s, 1),
        notes=f"DS lab: {c.doc}" + (" (smoke run)" if smoke else ""),
    )
    dest = Path(dest)
    save_checkpoint(dest, model, tokenizer, card)
    write_log(dest, log)
    ck = load_checkpoint(dest)
    sizes = parse_sizes("3x3" if smoke else "3x3-3x9")
    res = evaluate(ck, sizes, n=2 if smoke else evaluate_n, cfg=SamplingConfig(max_new_tokens=cap), seed=0)
    doc = to_jsonable(res.to_dict())
    doc["checkpoint"] = f"{c.name}/seed{seed}"
    (dest / "eval.json").write_text(json.dumps(doc, indent=1) + "\n")
    return dest


def main(argv: list[str]) -> int:
    """`python -m ds_core.training.lab_stage '{"condition": ..., "seed": ..., "out": ..., ...}'`: one
    lab run (ds_core.training.lab.job_process starts it); prints its summary as a JSON line."""
    from ds_core.training.lab import run_job

    a = json.loads(argv[0])
    summary = run_job(
        a["condition"], int(a["seed"]), Path(a["out"]), Path(a["parents"]), bool(a["smoke"]), int(a["evaluate_n"])
    )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
