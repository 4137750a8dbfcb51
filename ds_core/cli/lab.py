"""`python -m ds_core train lab` and `python -m ds_core report --lab` (ds_core.training.lab,
ds_core.analysis.lab_report)."""

from __future__ import annotations

import sys
from pathlib import Path

from ds_core.paths import REPO_ROOT, SHIPPED_DIR


def int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise ValueError(f"{what} must be non-negative integers, got {text!r}")
    return vals


def lab_train_cmd(args) -> int:
    from ds_core.training.lab import LAB_DIR, LabRunError, run_lab

    only = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else None
    seeds = int_list(args.seeds, "--seeds")
    if not 1 <= args.workers <= 64:
        raise ValueError(f"--workers must be in 1..64, got {args.workers}")
    out = Path(args.out) if args.out else LAB_DIR

    def progress(summary: dict) -> None:
        if not args.quiet:
            print(
                f"{summary['condition']} seed {summary['seed']}: {summary['dir']} ({summary['wall_s']:.0f} s)",
                flush=True,
            )

    try:
        run_lab(
            out,
            conditions=only,
            seeds=seeds,
            workers=args.workers,
            smoke=args.smoke,
            parents=Path(args.parents) if args.parents else None,
            progress=progress,
        )
    except LabRunError as e:  # the finished runs are kept; rerun with --only for the rest
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def float_list(text: str, what: str, n: int, sizes: str = "3x5..3x9") -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(vals) != n or any(not v >= 0 for v in vals):
        raise ValueError(f"{what} must be {n} non-negative numbers (one per size of {sizes}), got {text!r}")
    return vals


def base_trial_cmd(args) -> int:
    """`train base-trial`: one candidate recipe for the lab's base, trained and evaluated; prints p_s per size."""
    from ds_core.training.lab import CONDITIONS, base_trial
    from ds_core.training.recipes import LAB_ID_WEIGHTS, LAB_OOD_WEIGHTS

    base = CONDITIONS["base"].sft
    weights = float_list(args.ood_weights, "--ood-weights", 5) if args.ood_weights else LAB_OOD_WEIGHTS
    id_weights = float_list(args.id_weights, "--id-weights", 2, "3x3, 3x4") if args.id_weights else LAB_ID_WEIGHTS
    lr = base.lr if args.lr is None else args.lr
    steps = base.steps if args.steps is None else args.steps
    name = f"id{'_'.join(f'{w:g}' for w in id_weights)}_w{'_'.join(f'{w:g}' for w in weights)}_lr{lr:g}_{steps}"
    out = Path(args.out) if args.out else REPO_ROOT / "data" / "base_trials" / name
    p_s = base_trial(weights, lr, steps, out, smoke=args.smoke, threads=args.threads or 1, id_weights=id_weights)
    row = " ".join(f"{s} {100 * v:.0f}" for s, v in p_s.items())
    print(f"base trial {name} (seed 0): p_s % {row}; checkpoint, card, log and eval.json in {out}")
    return 0


def lab_report_cmd(args) -> int:
    from tqdm import tqdm

    from ds_core.analysis.lab_report import collect, dump, lab_markdown, write_section
    from ds_core.store import ResultsStore
    from ds_core.training.lab import LAB_DIR

    root = Path(args.checkpoints) if args.checkpoints != str(SHIPPED_DIR) else LAB_DIR
    out = Path(args.out) if args.out else REPO_ROOT / "RESULTS.md"
    bar = tqdm(total=0, desc="episodes", unit="ep", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int):
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    from ds_core.cli.commands import engine_of

    with engine_of(args) as engine:
        res = collect(root, store=ResultsStore(args.data_dir), verify=args.verify, progress=progress, engine=engine)
    bar.close()
    if not res.runs:
        raise ValueError(f"no lab runs (<condition>/seed<N>/eval.json) under {root}; run python -m ds_core train lab")
    text = lab_markdown(res)
    write_section(out, text)
    dump(res, root / "lab_report.json")
    print(text)
    print(f"wrote the lab section of {out} and {root / 'lab_report.json'}")
    return 0
