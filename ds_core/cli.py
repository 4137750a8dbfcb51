"""Command line: `python -m ds_core eval --checkpoint DIR --sizes 3x3-3x9 --n 100`,
`python -m ds_core train base|sft|reflection|rl|all`,
`python -m ds_core attribute --checkpoint DIR --sizes 3x3,3x4 --n 20 --out results.csv`.

Errors a user can cause (a bad path, a bad size, a bad setting) print one clear line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _eval(args) -> int:
    import torch
    from tqdm import tqdm

    from .checkpoint import load_checkpoint
    from .evaluate import evaluate, format_table
    from .rollout import SamplingConfig
    from .store import ResultsStore
    from .tasks import parse_sizes

    if args.threads < 0 or args.threads > 1024:
        raise ValueError(f"--threads must be 0 (torch's choice) or a positive count, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = parse_sizes(args.sizes)
    if not 1 <= args.n <= 100_000:
        raise ValueError(f"--n must be in 1..100000, got {args.n}")
    cfg = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_attempts=args.max_attempts,
                         max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    ckpt = load_checkpoint(args.checkpoint)
    store = None if args.no_store else ResultsStore(args.data_dir)
    bar = tqdm(total=0, desc="episodes", unit="ep", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int):
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    result = evaluate(ckpt, sizes, n=args.n, cfg=cfg, seed=args.seed, store=store,
                      progress=progress, recompute=args.recompute, n_boot=args.n_boot)
    bar.close()
    print(f"checkpoint {ckpt.path} ({ckpt.name}, {ckpt.arch}, hash {ckpt.hash}); "
          f"temperature {cfg.temperature}, top_p {cfg.top_p}, max_attempts {cfg.max_attempts}, "
          f"seed {args.seed}" + ("" if store is None else f"; store {store.path}"))
    print(format_table(result))
    print("acc%: accuracy, 95% Wald and Wilson intervals; p_s, p_d|C, p_d|W, predicted: "
          f"point (bootstrap 2.5-97.5%, {args.n_boot} resamples); att: mean attempts; "
          "src: 'store' when read from the results store")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return 0


def _train(args) -> int:
    import torch
    from tqdm import tqdm

    from .train import STAGES, run_stage

    if args.threads:
        torch.set_num_threads(args.threads)
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    for stage in stages:
        bar = tqdm(desc=stage, unit="step", disable=args.quiet, file=sys.stderr)

        def progress(step: int, row: dict, bar=bar):
            bar.update(step + 1 - bar.n)
            shown = {k: round(v, 4) for k, v in row.items()
                     if k in ("loss", "reward", "kl_k3", "eval_acc", "eval_p_dW") and isinstance(v, float)}
            bar.set_postfix(shown, refresh=False)

        dest = run_stage(stage, Path(args.out), seed=args.seed, smoke=args.smoke, progress=progress)
        bar.close()
        print(f"{stage}: wrote {dest}")
    return 0


def _report(args) -> int:
    from tqdm import tqdm

    from .report import evaluate_conditions, report_markdown
    from .store import ResultsStore

    bar = tqdm(total=0, desc="episodes", unit="ep", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int):
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    results = evaluate_conditions(Path(args.checkpoints), store=ResultsStore(args.data_dir),
                                  progress=progress)
    bar.close()
    if not results:
        raise ValueError(f"no condition checkpoints (base, sft, sft_reflection, rl) under {args.checkpoints}")
    text = report_markdown(results)
    Path(args.out).write_text(text)
    print(text)
    return 0


def _attribute(args) -> int:
    import torch
    from tqdm import tqdm

    from .attribution_runs import (attribute_dataset, format_summary, needs_ref, parse_objectives,
                                   resolve_ref)
    from .checkpoint import load_checkpoint
    from .evaluate import evaluate
    from .rollout import SamplingConfig
    from .store import ResultsStore
    from .tasks import parse_sizes

    if args.threads < 0 or args.threads > 1024:
        raise ValueError(f"--threads must be 0 (torch's choice) or a positive count, got {args.threads}")
    sizes = parse_sizes(args.sizes)
    objectives = parse_objectives(args.objectives)
    if not 1 <= args.n <= 100_000:
        raise ValueError(f"--n must be in 1..100000, got {args.n}")
    for name in ("advantage", "advantage_correct", "advantage_wrong"):
        v = getattr(args, name)
        if v is not None and not math.isfinite(v):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
    if args.out and not Path(args.out).expanduser().parent.is_dir():
        raise ValueError(f"--out {args.out}: the directory {Path(args.out).expanduser().parent} "
                         "does not exist")
    cfg = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_attempts=args.max_attempts,
                         max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    ref = None
    if any(needs_ref(o) for o in objectives):
        ref, note = resolve_ref(ckpt, args.ref)
        if ref is None and all(needs_ref(o) for o in objectives):
            raise ValueError(f"{note}; every objective asked for ({', '.join(objectives)}) needs it")
    store = ResultsStore(args.data_dir)
    bar = tqdm(total=0, desc="episodes", unit="ep", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int, bar=bar):
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    runs = evaluate(ckpt, sizes, n=args.n, cfg=cfg, seed=args.seed, store=store, progress=progress)
    bar.close()
    bar = tqdm(total=0, desc="attribution", unit="ep*obj", disable=args.quiet, file=sys.stderr)
    result = attribute_dataset(
        ckpt, {s.spec: s.key for s in runs.sizes}, objectives, store=store, ref=ref,
        advantage=args.advantage, advantage_correct=args.advantage_correct,
        advantage_wrong=args.advantage_wrong, norms=args.norms, jvp_method=args.jvp_method,
        progress=lambda done, total: progress(done, total, bar), recompute=args.recompute)
    bar.close()
    print(f"checkpoint {ckpt.path} ({ckpt.name}, {ckpt.arch}, hash {ckpt.hash}); "
          f"sizes {','.join(s.name for s in sizes)}, n {args.n}, seed {args.seed}, "
          f"temperature {cfg.temperature}; store {store.path}")
    print(f"objectives: {', '.join(result.objectives)}; {result.n_episodes} episodes, "
          f"{result.n_computed} attributions computed, {result.n_cached} from the store")
    for note in result.notes:
        print(f"note: {note}")
    print(format_summary(result.summary))
    print("ratio: |G_S|/|G_D| (sampling:decision gradient norms); share_D: the decision tokens' "
          "share <G_D, G>/|G|^2; outcome: first attempt's correctness and its decision; "
          "'all' rows pool sizes/outcomes")
    if args.out:
        result.frame.to_csv(Path(args.out).expanduser(), index=False)
        print(f"wrote {len(result.frame)} rows to {args.out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ds_core", description="DS-Lens core commands")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="evaluate a checkpoint on a grid of sizes (Table 1 style)")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory (any local HF causal LM)")
    e.add_argument("--sizes", default="3x3-3x9", help="e.g. 3x3-3x9 or 3x3,3x5 (default 3x3-3x9)")
    e.add_argument("--n", type=int, default=100, help="problems per size (default 100: the fixed test set)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--top-p", type=float, default=1.0)
    e.add_argument("--max-attempts", type=int, default=4)
    e.add_argument("--max-new-tokens", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples (default 100)")
    e.add_argument("--data-dir", default=None, help="results store directory (default $DS_LENS_DATA or ./data)")
    e.add_argument("--no-store", action="store_true", help="do not read or write the results store")
    e.add_argument("--recompute", action="store_true", help="sample again even if the store has the run")
    e.add_argument("--json", default=None, help="also write the full report as JSON to this file")
    e.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    t = sub.add_parser("train", help="train the shipped conditions (base, sft, reflection, rl)")
    t.add_argument("stage", choices=["base", "sft", "reflection", "rl", "all"])
    t.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "checkpoints"),
                   help="where checkpoint directories go (default: checkpoints/)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--smoke", action="store_true", help="tiny budgets: seconds, for tests")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    r = sub.add_parser("report", help="evaluate the four conditions; write eval.json files and tables")
    r.add_argument("--checkpoints", default=str(Path(__file__).resolve().parent.parent / "checkpoints"))
    r.add_argument("--out", default="RESULTS_TABLES.md", help="markdown tables (RESULTS.md holds the written analysis)")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--quiet", action="store_true")
    a = sub.add_parser("attribute",
                       help="gradient attribution (sampling vs decision) over evaluation episodes")
    a.add_argument("--checkpoint", required=True, help="checkpoint directory")
    a.add_argument("--ref", default=None,
                   help="KL reference checkpoint (default: the checkpoint's parent when it is in the "
                        "same folder; without one the KL objectives are skipped)")
    a.add_argument("--sizes", default="3x3,3x4", help="e.g. 3x3,3x4 or 3x3-3x9 (default 3x3,3x4)")
    a.add_argument("--n", type=int, default=20, help="episodes per size (default 20)")
    a.add_argument("--objectives", default=None,
                   help="comma-separated (default: surrogate,kl_k3,kl_k1,sft_sum,sft_mean,dft)")
    a.add_argument("--advantage", type=float, default=None,
                   help="surrogate advantage for every episode (default: by final correctness)")
    a.add_argument("--advantage-correct", type=float, default=1.0,
                   help="surrogate advantage of a correct episode (default +1)")
    a.add_argument("--advantage-wrong", type=float, default=-1.0,
                   help="surrogate advantage of a wrong episode (default -1)")
    a.add_argument("--norms", action="store_true", help="also compute per-token gradient norms (slow)")
    a.add_argument("--jvp-method", choices=["auto", "forward", "double_backward"], default="auto")
    a.add_argument("--seed", type=int, default=0, help="sampling seed of the evaluation run")
    a.add_argument("--temperature", type=float, default=1.0)
    a.add_argument("--top-p", type=float, default=1.0)
    a.add_argument("--max-attempts", type=int, default=4)
    a.add_argument("--max-new-tokens", type=int, default=None)
    a.add_argument("--batch-size", type=int, default=256)
    a.add_argument("--data-dir", default=None,
                   help="results store directory (default $DS_LENS_DATA or ./data)")
    a.add_argument("--recompute", action="store_true",
                   help="attribute again even if the store has the result")
    a.add_argument("--out", default=None, help="write the per-episode table as CSV to this file")
    a.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    from .checkpoint import CheckpointError
    from .rollout import RolloutError
    from .store import StoreError
    from .tasks import TaskError
    try:
        return {"eval": _eval, "train": _train, "report": _report,
                "attribute": _attribute}[args.cmd](args)
    except (CheckpointError, RolloutError, StoreError, TaskError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was stored", file=sys.stderr)
        return 130
