"""The CLI's commands: eval, train, report, attribute, balance (ds_core.cli.main parses)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ds_core.models.sampling import SamplingConfig
from ds_core.paths import SHIPPED_DIR
from ds_core.store.csvio import to_csv


def set_threads(threads: int) -> None:
    """--threads: 0 leaves torch's choice; a positive count sets it."""
    if threads < 0 or threads > 1024:
        raise ValueError(f"--threads must be 0 (torch's choice) or a positive count, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def with_text_format(ckpt, args):
    """`ckpt` with the --system-prompt / --instruction / --resample-markers / --answer-readers
    settings applied to its text format (ds_core.episodes.text_format.customized)."""
    given = {
        "system": getattr(args, "system_prompt", None),
        "instruction": getattr(args, "instruction", None),
        "resample_markers": getattr(args, "resample_markers", None),
        "readers": getattr(args, "answer_readers", None),
    }
    if all(v is None for v in given.values()):
        return ckpt
    from ds_core.episodes.text_format import with_text_settings

    try:
        return with_text_settings(ckpt, **given)
    except ValueError as e:
        raise ValueError(
            f"{ckpt.path.name}: {e} (--system-prompt, --instruction, --resample-markers, --answer-readers)"
        ) from None


def sampling_config(args) -> SamplingConfig:
    """The sampling settings of a command (the options added by ds_core.cli.main.sampling_args)."""
    return SamplingConfig(
        temperature=args.temperature,
        top_p=args.top_p,
        max_attempts=args.max_attempts,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )


def engine_of(args):
    """A context holding the engine --engine/--address/--workers ask for (None: in-process)."""
    from contextlib import nullcontext

    from ds_core.engine.engines import make_engine

    if getattr(args, "engine", "local") == "local":
        return nullcontext(None)
    if getattr(args, "no_store", False):
        raise ValueError("--engine ray keeps finished work units in the results store: drop --no-store")
    threads = getattr(args, "threads", 0) or 1
    return make_engine(args.engine, args.address, args.workers, threads, args.gpus_per_worker)


def eval_cmd(args) -> int:
    from tqdm import tqdm

    from ds_core.analysis.evaluate import evaluate, format_table
    from ds_core.episodes.tasks import parse_sizes
    from ds_core.models.checkpoint import load_checkpoint
    from ds_core.store import ResultsStore

    set_threads(args.threads)
    sizes = parse_sizes(args.sizes)
    if not 1 <= args.n <= 100_000:
        raise ValueError(f"--n must be in 1..100000, got {args.n}")
    cfg = sampling_config(args)
    ckpt = with_text_format(load_checkpoint(args.checkpoint), args)
    store = None if args.no_store else ResultsStore(args.data_dir)
    bar = tqdm(total=0, desc="episodes", unit="ep", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int):
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    with engine_of(args) as engine:
        result = evaluate(
            ckpt,
            sizes,
            n=args.n,
            cfg=cfg,
            seed=args.seed,
            store=store,
            progress=progress,
            recompute=args.recompute,
            n_boot=args.n_boot,
            engine=engine,
        )
    bar.close()
    print(
        f"checkpoint {ckpt.path} ({ckpt.name}, {ckpt.arch}, hash {ckpt.hash}); "
        f"temperature {cfg.temperature}, top_p {cfg.top_p}, max_attempts {cfg.max_attempts}, "
        f"seed {args.seed}" + ("" if store is None else f"; store {store.path}")
    )
    print(format_table(result))
    print(
        "acc%: accuracy, 95% Wald and Wilson intervals; p_s, p_d|C, p_d|W, predicted: "
        f"point (bootstrap 2.5-97.5%, {args.n_boot} resamples); att: mean attempts; "
        "src: 'store' when read from the results store"
    )
    if args.json:
        Path(args.json).expanduser().write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return 0


def train_cmd(args) -> int:
    from tqdm import tqdm

    from ds_core.training.stages import STAGES, run_stage

    set_threads(args.threads)
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    for stage in stages:
        bar = tqdm(desc=stage, unit="step", disable=args.quiet, file=sys.stderr)

        def progress(step: int, row: dict, bar=bar):
            bar.update(step + 1 - bar.n)
            shown = {
                k: round(v, 4)
                for k, v in row.items()
                if k in ("loss", "reward", "kl_k3", "eval_acc", "eval_p_dW") and isinstance(v, float)
            }
            bar.set_postfix(shown, refresh=False)

        dest = run_stage(stage, Path(args.out or SHIPPED_DIR), seed=args.seed, smoke=args.smoke, progress=progress)
        bar.close()
        print(f"{stage}: wrote {dest}")
    return 0


def report_cmd(args) -> int:
    from tqdm import tqdm

    from ds_core.analysis.report import evaluate_conditions, report_markdown
    from ds_core.store import ResultsStore

    bar = tqdm(total=0, desc="episodes", unit="ep", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int):
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    with engine_of(args) as engine:
        results = evaluate_conditions(
            Path(args.checkpoints), store=ResultsStore(args.data_dir), progress=progress, engine=engine
        )
    bar.close()
    if not results:
        raise ValueError(f"no condition checkpoints (base, sft, sft_reflection, rl) under {args.checkpoints}")
    text = report_markdown(results)
    Path(args.out or "RESULTS_TABLES.md").expanduser().write_text(text)
    print(text)
    return 0


def attribute_cmd(args) -> int:
    from tqdm import tqdm

    from ds_core.analysis.evaluate import evaluate
    from ds_core.attribution.dataset import attribute_dataset, format_summary
    from ds_core.attribution.reference import resolve_ref
    from ds_core.episodes.tasks import parse_sizes
    from ds_core.models.checkpoint import load_checkpoint
    from ds_core.objectives import needs_ref, parse_objectives
    from ds_core.store import ResultsStore

    sizes = parse_sizes(args.sizes)
    objectives = parse_objectives(args.objectives)
    if not 1 <= args.n <= 100_000:
        raise ValueError(f"--n must be in 1..100000, got {args.n}")
    for name in ("advantage", "advantage_correct", "advantage_wrong"):
        v = getattr(args, name)
        if v is not None and not math.isfinite(v):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
    cfg = sampling_config(args)
    set_threads(args.threads)
    ckpt = with_text_format(load_checkpoint(args.checkpoint), args)
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

    with engine_of(args) as engine:
        runs = evaluate(ckpt, sizes, n=args.n, cfg=cfg, seed=args.seed, store=store, progress=progress, engine=engine)
        bar.close()
        bar = tqdm(total=0, desc="attribution", unit="ep*obj", disable=args.quiet, file=sys.stderr)
        result = attribute_dataset(
            ckpt,
            {s.spec: s.key for s in runs.sizes},
            objectives,
            store=store,
            ref=ref,
            advantage=args.advantage,
            advantage_correct=args.advantage_correct,
            advantage_wrong=args.advantage_wrong,
            norms=args.norms,
            jvp_method=args.jvp_method,
            parameters=args.params,
            progress=lambda done, total: progress(done, total, bar),
            recompute=args.recompute,
            engine=engine,
        )
    bar.close()
    print(
        f"checkpoint {ckpt.path} ({ckpt.name}, {ckpt.arch}, hash {ckpt.hash}); "
        f"sizes {','.join(s.name for s in sizes)}, n {args.n}, seed {args.seed}, "
        f"temperature {cfg.temperature}; store {store.path}"
    )
    print(
        f"objectives: {', '.join(result.objectives)}; {result.n_episodes} episodes, "
        f"{result.n_computed} attributions computed, {result.n_cached} from the store"
    )
    for note in result.notes:
        print(f"note: {note}")
    print(format_summary(result.summary))
    print(
        "ratio: |G_S|/|G_D| (sampling:decision gradient norms); share_D: the decision tokens' "
        "share <G_D, G>/|G|^2; outcome: first attempt's correctness and its decision; "
        "'all' rows pool sizes/outcomes"
    )
    if args.out:
        to_csv(result.frame, Path(args.out).expanduser())
        print(f"wrote {len(result.frame)} rows to {args.out}")
    return 0


def balance_cmd(args) -> int:
    """`balance precompute`: the shipped Gradient balance results (ds_core.analysis.balance)."""
    from ds_core.analysis.balance.shipped import precompute
    from ds_core.store import ResultsStore

    set_threads(args.threads)
    store = None if args.no_store else ResultsStore(args.data_dir)
    last = [-1.0]

    def progress(f, text):
        if f - last[0] >= 0.01 or f >= 1.0:
            last[0] = f
            print(f"{100 * f:5.1f}%  {text}", file=sys.stderr, flush=True)

    with engine_of(args) as engine:
        out = precompute(
            args.out,
            args.checkpoints,
            [n for n in args.names.split(",") if n],
            dataset_sizes=args.sizes,
            n=args.n,
            sweep_sizes=args.sweep_sizes,
            per_size=args.per_size,
            store=store,
            seed=args.seed,
            progress=progress,
            engine=engine,
        )
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


def real_model_cmd(args) -> int:
    """`real-model`: SmolLM2-135M-Instruct as a safetensors directory (ds_core.models.real_model)."""
    from ds_core.models.real_model import build_from_gguf, build_real_model, real_model_dir

    out = Path(args.out).expanduser() if args.out else real_model_dir()
    print(f"building {out} (dequantising the GGUF takes about a minute)", file=sys.stderr)
    path = build_real_model(out) if args.gguf is None else build_from_gguf(args.gguf, out)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**20
    print(f"wrote {path} ({size:.0f} MiB); it is listed on every page of the app")
    return 0
