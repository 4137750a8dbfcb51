"""`python -m ds_core decisions`: Q-values at every verdict of a checkpoint's evaluation episodes and
its decision regret per size (ds_core.analysis.decisions), with a progress bar; kept in the store."""

from __future__ import annotations

import math
import sys


def _pct(x: float, lo: float, hi: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>17}"
    return f"{100 * x:5.1f} ({100 * lo:4.1f},{100 * hi:5.1f})"


def format_regret(table) -> str:
    head = (
        f"{'size':>5} {'eps':>4}  {'own acc':>17}  {'optimal acc':>17}  {'regret':>17}  "
        f"{'wrong kept':>17}  {'correct revised':>17}  {'kept/revised':>12}  {'no save':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in table.to_dict("records"):
        lines.append(
            f"{r['size']:>5} {r['episodes']:>4}  "
            + "  ".join(
                _pct(r[k], r[f"{k}_lo"], r[f"{k}_hi"])
                for k in ("own", "optimal", "regret", "wrong_kept", "correct_revised")
            )
            + f"  {r['n_wrong_kept']:>5}/{r['n_correct_revised']:<6}"
            + f"  {100 * r['cannot_succeed']:6.1f}%"
        )
    return "\n".join(lines)


def decisions_cmd(args) -> int:
    from tqdm import tqdm

    from ds_core.analysis import regret
    from ds_core.analysis.regret import regret_run
    from ds_core.cli.commands import engine_of, sampling_config, set_threads
    from ds_core.episodes.tasks import parse_sizes
    from ds_core.models.checkpoint import load_checkpoint
    from ds_core.store import ResultsStore

    set_threads(args.threads)
    sizes = [s.name for s in parse_sizes(args.sizes)]
    if not 1 <= args.n <= 100_000:
        raise ValueError(f"--n must be in 1..100000, got {args.n}")
    cfg = sampling_config(args)
    ckpt = load_checkpoint(args.checkpoint)
    store = None if args.no_store else ResultsStore(args.data_dir)
    bar = tqdm(total=0, desc="continuations", unit="ep", disable=args.quiet, file=sys.stderr)

    def progress(size: str, done: int, total: int):
        if bar.total != total or done < bar.n:  # a new phase: the Q-values, then each optimal round
            bar.reset(total=total)
            bar.set_description(f"{size} continuations")
        bar.update(done - bar.n)

    with engine_of(args) as engine:
        values, per_episode, table = regret_run(
            ckpt,
            sizes,
            n_problems=args.n,
            n=args.continuations,
            seed=args.seed,
            cfg=cfg,
            store=store,
            progress=progress,
            engine=engine,
        )
    bar.close()
    print(
        f"checkpoint {ckpt.path} ({ckpt.name}, hash {ckpt.hash}); {args.continuations} continuations per "
        f"decision; temperature {cfg.temperature}, max_attempts {cfg.max_attempts}, seed {args.seed}"
        + ("" if store is None else f"; store {store.path}")
    )
    print(format_regret(table))
    print(
        "own = the episodes' accuracy; optimal = the accuracy with every verdict the Q-optimal one (keep a "
        "correct attempt, revise a wrong one; where the model kept a wrong attempt, the revision's "
        "continuations resampled with optimal verdicts); regret = optimal - own = wrong kept + correct "
        "revised (bootstrap 95% over episodes); kept/revised: episodes where the model kept a wrong "
        "attempt / revised a correct one; no save: the share of all episodes that were kept wrong and that no optimal "
        "continuation saved."
    )
    if args.json or args.ship:  # the values with where they came from (what the pages read when shipped)
        import json
        from pathlib import Path

        from ds_core.store.jsonio import to_jsonable

        doc = {
            "checkpoint": ckpt.name,
            "checkpoint_hash": ckpt.hash,
            "regret_version": regret.VERSION,
            "command": (
                f"python -m ds_core decisions --checkpoint {args.checkpoint} --sizes {args.sizes} --n {args.n} "
                f"--continuations {args.continuations} --seed {args.seed} --temperature {cfg.temperature:g}"
            ),
            "sizes": sizes,
            "n": args.n,
            "continuations": args.continuations,
            "seed": args.seed,
            "sampling": cfg.key(),
            "rows": to_jsonable(values.to_dict("records")),
            "regret": to_jsonable(per_episode.to_dict("records")),
            "summary": to_jsonable(table.to_dict("records")),
        }
        if args.json:
            Path(args.json).expanduser().write_text(json.dumps(doc) + "\n")
            print(f"wrote {args.json}")
        if args.ship:
            from ds_core.analysis.regret import ship_document

            print(f"shipped as {ship_document(doc, ckpt.path)!r} in {args.ship}")
    if args.csv:
        from ds_core.store.csvio import to_csv

        to_csv(values, args.csv)
        print(f"wrote {args.csv} ({len(values)} decisions)")
    return 0
