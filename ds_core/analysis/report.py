"""Evaluate the shipped conditions and write eval.json beside each checkpoint and a results table.

    python -m ds_core report [--checkpoints checkpoints/] [--out RESULTS_TABLES.md]

Evaluations go through the results store (computed once). The markdown holds our Table 1 next to
the paper's, with Wald intervals, and p_s / p_d|C / p_d|W / predicted per size with bootstrap
intervals; the judgement of which claims the toy reproduces is written by hand in RESULTS.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ds_core.analysis.evaluate import EvalResult, evaluate
from ds_core.episodes.tasks import parse_sizes
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.sampling import SamplingConfig
from ds_core.paper import LABELS, SIZES, TABLE1
from ds_core.store.jsonio import to_jsonable

CONDITIONS = ("base", "sft", "sft_reflection", "rl")


def _p(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}"


def evaluate_conditions(
    root: Path, store=None, n: int = 100, seed: int = 0, progress=None, engine=None
) -> dict[str, EvalResult]:
    out = {}
    for cond in CONDITIONS:
        d = Path(root) / cond
        if not (d / "config.json").is_file():
            continue
        ck = load_checkpoint(d)
        res = evaluate(
            ck,
            parse_sizes("3x3-3x9"),
            n=n,
            cfg=SamplingConfig(),
            seed=seed,
            store=store,
            progress=progress,
            engine=engine,
        )
        (d / "eval.json").write_text(json.dumps(_jsonable(res.to_dict()), indent=1) + "\n")
        out[cond] = res
    return out


_jsonable = to_jsonable


def accuracy_table(results: dict[str, EvalResult]) -> str:
    head = "| condition | " + " | ".join(SIZES) + " |\n|---|" + "---|" * len(SIZES) + "\n"
    rows = []
    for cond in CONDITIONS:
        paper = TABLE1[cond]
        rows.append(f"| {LABELS[cond]} (paper) | " + " | ".join(str(v) for v in paper) + " |")
        if cond in results:
            cells = []
            for s in results[cond].sizes:
                a = s.report.accuracy
                cells.append(f"**{_p(a.p)}** ({_p(a.wald[0])}–{_p(a.wald[1])})")
            rows.append(f"| {LABELS[cond]} (DS-Lens) | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def calibration_table(results: dict[str, EvalResult]) -> str:
    out = []
    for cond, res in results.items():
        out.append(f"\n**{LABELS[cond]}** — point (bootstrap 95%), mean attempts\n")
        out.append("| size | p_s | p_d\\|C | p_d\\|W | predicted | observed | attempts |")
        out.append("|---|---|---|---|---|---|---|")
        for s in res.sizes:
            r = s.report

            def e(x):
                return f"{_p(x.value)} ({_p(x.ci[0])}–{_p(x.ci[1])})"

            out.append(
                f"| {s.spec} | {e(r.p_s)} | {e(r.p_dC)} | {e(r.p_dW)} | {e(r.predicted)} | "
                f"{e(r.observed)} | {r.mean_attempts:.2f} |"
            )
    return "\n".join(out) + "\n"


def report_markdown(results: dict[str, EvalResult]) -> str:
    return (
        "## Accuracy (%), our toy next to the paper's Table 1\n\n"
        "Ours: bold, with the 95% Wald interval; temperature 1.0, one generation per query, "
        "up to 4 attempts, the fixed 100-problem test sets.\n\n"
        + accuracy_table(results)
        + "\n## Calibration per size\n"
        + calibration_table(results)
    )
