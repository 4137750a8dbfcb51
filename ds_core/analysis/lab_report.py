"""The DS lab's results: every condition and seed on the fixed test sets, with seeds, and a verdict
per prediction of the paper computed from them by a stated rule.

    python -m ds_core report --lab      # evaluates (through the results store) and writes RESULTS.md

A seed whose weights are present is evaluated again through the results store (computed once) and
compared with its committed eval.json: the report says whether they agree. A seed shipped without
weights (git keeps seed 0's only) is read from its eval.json, and the report says so.

The verdict rule, for a prediction "condition X is above condition Y on figure f": with every
seed's f for X and for Y, the prediction is *supported* when min over X's seeds > max over Y's
seeds (the across-seed ranges do not overlap, in the predicted direction), *contradicted* when
max over X < min over Y, and *cannot tell* otherwise. Out-of-distribution figures pool the counts
of 3x5..3x9 per seed (sum of k over sum of n).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ds_core.analysis.metrics import wald_interval
from ds_core.episodes.tasks import OOD_SIZES, TEST_SET_SIZES, TRAIN_SIZES
from ds_core.store import jsonread
from ds_core.training.lab_index import lab_runs

FIGURES = ("accuracy", "p_s", "p_dC", "p_dW")
_COUNTS = {  # figure -> (numerator, denominator) in a size's counts
    "accuracy": ("final_correct", "n"),
    "p_s": ("first_correct", "n"),
    "p_dC": ("correct_stop", "correct_decided"),
    "p_dW": ("wrong_resample", "wrong_decided"),
}


@dataclass(frozen=True)
class SeedRun:
    condition: str
    seed: int
    counts: dict  # size -> the eval.json counts
    source: str  # "recomputed, equal to eval.json" / "eval.json (no weights)" / ...
    log: tuple = ()  # the training log rows

    def kn(self, figure: str, sizes) -> tuple[int, int]:
        num, den = _COUNTS[figure]
        k = sum(self.counts[s][num] for s in sizes if s in self.counts)
        n = sum(self.counts[s][den] for s in sizes if s in self.counts)
        return k, n

    def value(self, figure: str, sizes) -> float:
        k, n = self.kn(figure, sizes)
        return k / n if n else math.nan


@dataclass(frozen=True)
class Verdict:
    claim: str
    measurement: str
    rule: str
    numbers: str
    verdict: str  # supported / contradicted / cannot tell


@dataclass
class LabResults:
    runs: dict = field(default_factory=dict)  # condition -> {seed: SeedRun}

    def seeds(self, condition: str) -> list[SeedRun]:
        return [self.runs[condition][s] for s in sorted(self.runs.get(condition, {}))]

    def values(self, condition: str, figure: str, sizes) -> list[float]:
        return [r.value(figure, sizes) for r in self.seeds(condition)]


def _counts_of(doc: dict) -> dict:
    return {size: dict(v["counts"]) for size, v in doc["sizes"].items()}


VERIFY = ("all", "seed0", "none")


def collect(root: Path, store=None, verify: str = "all", progress=None, engine=None) -> LabResults:
    """Every <root>/<condition>/seed<s>/ with an eval.json. `verify`: which runs with weights are
    evaluated again through the store and compared with their eval.json ("all", "seed0", "none");
    `engine` (ds_core.engine): where those evaluations sample."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {', '.join(VERIFY)}, got {verify!r}")
    res = LabResults()
    for run in lab_runs(root):
        d, cond, seed = run.path, run.condition, run.seed
        ev = d / "eval.json"
        if not ev.is_file():
            continue
        committed = _counts_of(jsonread.read(ev, expect=dict))
        source = "eval.json (weights not here)" if not run.has_weights else "eval.json"
        counts = committed
        if run.has_weights and (verify == "all" or (verify == "seed0" and seed == 0)):
            counts = _recompute(d, store, progress, engine)
            source = "recomputed: equal to eval.json" if counts == committed else "recomputed: DIFFERS from eval.json"
        log_path = d / "train_log.json"
        log = tuple(jsonread.read(log_path, expect=list)) if log_path.is_file() else ()
        res.runs.setdefault(cond, {})[seed] = SeedRun(cond, seed, counts, source, log)
    return res


def _recompute(d: Path, store, progress, engine=None) -> dict:
    from ds_core.analysis.evaluate import evaluate
    from ds_core.episodes.tasks import parse_sizes
    from ds_core.models.checkpoint import load_checkpoint
    from ds_core.models.sampling import SamplingConfig

    ck = load_checkpoint(d)
    r = evaluate(
        ck, parse_sizes("3x3-3x9"), n=100, cfg=SamplingConfig(), seed=0, store=store, progress=progress, engine=engine
    )
    return {s.spec: s.report.to_dict()["counts"] for s in r.sizes}


# ------------------------------------------------------------------------------ verdicts
def compare(res: LabResults, x: str, y: str, figure: str, sizes) -> tuple[str, str]:
    """(verdict, numbers) for "x above y on figure over sizes" by the module's rule."""
    a = [v for v in res.values(x, figure, sizes) if not math.isnan(v)]
    b = [v for v in res.values(y, figure, sizes) if not math.isnan(v)]
    if not a or not b:
        return "cannot tell", f"{x} or {y} has no {figure} here"
    return above(a, b), f"{x} {_seeds(a)} vs {y} {_seeds(b)}"


def above(a, b) -> str:
    """The module's rule for "a above b" on per-seed values."""
    return "supported" if min(a) > max(b) else "contradicted" if max(a) < min(b) else "cannot tell"


def _seeds(vals) -> str:
    return "[" + ", ".join(f"{100 * v:.1f}" for v in vals) + "] %"


def _split_median(run: SeedRun, key: str = "split_ratio_SD") -> float:
    vals = sorted(float(r[key]) for r in run.log if key in r and math.isfinite(float(r[key])))
    return vals[len(vals) // 2] if vals else math.nan


def verdicts(res: LabResults) -> list[Verdict]:
    out = []
    ood, idd = list(OOD_SIZES), list(TRAIN_SIZES)
    rule = (
        "supported if every seed of the first is above every seed of the second (ranges do not "
        "overlap), contradicted if below, else cannot tell"
    )

    v, nums = compare(res, "rl", "sft_reflection", "accuracy", ood)
    out.append(
        Verdict(
            "RL generalises out of distribution better than SFT with reflection",
            "accuracy pooled over 3x5..3x9, per seed",
            rule,
            nums,
            v,
        )
    )
    v, nums = compare(res, "rl", "sft_reflection", "p_dW", ood)
    out.append(
        Verdict(
            "RL's OOD gain comes through the decision policy: p_d|W higher than SFT with reflection's",
            "p_d|W pooled over 3x5..3x9",
            rule,
            nums,
            v,
        )
    )
    v, nums = compare(res, "rl", "rl_sampling_only", "accuracy", ood)
    out.append(
        Verdict(
            "RL's OOD gain needs the decision tokens' gradient (rl above rl_sampling_only)",
            "accuracy pooled over 3x5..3x9",
            rule,
            nums,
            v,
        )
    )
    v, nums = compare(res, "reflection_balanced", "sft_reflection", "p_dW", ood)
    out.append(
        Verdict(
            "SFT's length asymmetry: giving the decision tokens the sampling tokens' weight raises OOD p_d|W",
            "p_d|W pooled over 3x5..3x9",
            rule,
            nums,
            v,
        )
    )
    # Theorem 3.2: a strong KL restrains sampling more than decisions -> rl_no_kl moves p_s more
    v, nums = compare(res, "rl_no_kl", "rl_strong_kl", "p_s", idd)
    out.append(
        Verdict(
            "Theorem 3.2: the KL penalty restrains the sampling policy (without KL, p_s rises more)",
            "p_s pooled over 3x3/3x4",
            rule,
            nums,
            v,
        )
    )
    v2, nums2 = compare(res, "rl_no_kl", "rl_strong_kl", "p_dW", idd)
    if v != "supported":  # the KL restrained nothing measurable: "alike" would say nothing
        v2 = "cannot tell"
    else:  # the KL restrains p_s: overlapping p_d|W ranges are the predicted asymmetry
        v2 = "supported" if v2 == "cannot tell" else "contradicted"
    out.append(
        Verdict(
            "Theorem 3.2's other half: the KL penalty barely restrains the decision policy (p_d|W alike)",
            "p_d|W pooled over 3x3/3x4",
            "only when the row above is supported (the KL measurably restrains p_s): supported if the two "
            "conditions' p_d|W seed ranges overlap, contradicted if they do not; otherwise cannot tell",
            nums2,
            v2,
        )
    )
    # Theorem 3.1 on real training runs: the logged split of RL's applied gradient vs SFT's
    a = [_split_median(r) for r in res.seeds("rl")]
    b = [_split_median(r) for r in res.seeds("sft_reflection")]
    a, b = [x for x in a if math.isfinite(x)], [x for x in b if math.isfinite(x)]
    if a and b:
        v = above(b, a)  # predicted: rl below sft_reflection
        nums = (
            "rl [" + ", ".join(f"{x:.3g}" for x in a) + "] vs sft_reflection [" + ", ".join(f"{x:.3g}" for x in b) + "]"
        )
    else:
        v, nums = "cannot tell", "no logged split"
    out.append(
        Verdict(
            "Theorem 3.1: RL's applied gradient is more balanced toward decisions than SFT's (lower |G_S|/|G_D|)",
            "median over logged steps of the applied gradient's |G_S|/|G_D|, per seed",
            "supported if every rl seed is below every sft_reflection seed, contradicted if above, else cannot tell",
            nums,
            v,
        )
    )
    return out


# ------------------------------------------------------------------------------ markdown
def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}"


def table1(res: LabResults) -> str:
    sizes = list(TEST_SET_SIZES)
    head = "| condition | seeds | " + " | ".join(sizes) + " |\n|---|---|" + "---|" * len(sizes) + "\n"
    rows = []
    for cond, runs in res.runs.items():
        cells = []
        for s in sizes:
            vals = [r.value("accuracy", [s]) for r in res.seeds(cond)]
            cells.append(f"**{_pct(sum(vals) / len(vals))}** ({_pct(min(vals))}–{_pct(max(vals))})")
        rows.append(f"| {cond} | {len(runs)} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def seed_table(res: LabResults) -> str:
    sizes = list(TEST_SET_SIZES)
    head = "| condition | seed | source | " + " | ".join(sizes) + " |\n|---|---|---|" + "---|" * len(sizes) + "\n"
    rows = []
    for cond in res.runs:
        for r in res.seeds(cond):
            cells = []
            for s in sizes:
                k, n = r.kn("accuracy", [s])
                lo, hi = wald_interval(k, n)
                cells.append(f"{_pct(k / n if n else math.nan)} ({_pct(lo)}–{_pct(hi)})")
            rows.append(f"| {cond} | {r.seed} | {r.source} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def calibration_tables(res: LabResults) -> str:
    sizes = list(TEST_SET_SIZES)
    parts = []
    for fig, label in (("p_s", "p_s"), ("p_dC", "p_d|C"), ("p_dW", "p_d|W")):
        head = (
            f"**{label}** (%): mean over seeds (across-seed range)\n\n| condition | "
            + " | ".join(sizes)
            + " |\n|---|"
            + "---|" * len(sizes)
            + "\n"
        )
        rows = []
        for cond in res.runs:
            cells = []
            for s in sizes:
                vals = [v for v in res.values(cond, fig, [s]) if not math.isnan(v)]
                cells.append(f"{_pct(sum(vals) / len(vals))} ({_pct(min(vals))}–{_pct(max(vals))})" if vals else "–")
            rows.append(f"| {cond} | " + " | ".join(cells) + " |")
        parts.append(head + "\n".join(rows) + "\n")
    return "\n".join(parts)


def verdict_table(vs: list[Verdict]) -> str:
    head = "| prediction | measurement | numbers (per seed) | verdict |\n|---|---|---|---|\n"
    return head + "\n".join(f"| {v.claim} | {v.measurement} | {v.numbers} | **{v.verdict}** |" for v in vs) + "\n"


def lab_markdown(res: LabResults) -> str:
    vs = verdicts(res)
    rules = sorted({v.rule for v in vs})
    return (
        "### Accuracy (%) per condition: mean over seeds (across-seed range)\n\n"
        + table1(res)
        + "\n### Accuracy (%) per seed, with the 95% Wald interval\n\n"
        + seed_table(res)
        + "\n### Calibration per size\n\n"
        + calibration_tables(res)
        + "\n### The paper's predictions, decided by the data\n\n"
        + verdict_table(vs)
        + "\nRules: "
        + "; ".join(rules)
        + ". Out-of-distribution figures pool 3x5..3x9 (sum of k over sum of n per seed).\n"
    )


BEGIN, END = "<!-- lab:begin (written by python -m ds_core report --lab) -->", "<!-- lab:end -->"


def write_section(path: Path, text: str) -> None:
    """Replace the generated lab section of `path` (between BEGIN and END), or append one."""
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    block = f"{BEGIN}\n{text}{END}\n"
    if BEGIN in old and END in old:
        pre, rest = old.split(BEGIN, 1)
        new = pre + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block
    path.write_text(new)


def to_json(res: LabResults) -> dict:
    return {
        "runs": {
            c: {str(s): {"counts": r.counts, "source": r.source} for s, r in runs.items()}
            for c, runs in res.runs.items()
        },
        "verdicts": [v.__dict__ for v in verdicts(res)],
    }


def dump(res: LabResults, path: Path) -> None:
    Path(path).write_text(json.dumps(to_json(res), indent=1) + "\n")
