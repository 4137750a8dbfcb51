"""Custom prompts, running: run checkpoints on parsed rows (ui.services.custom_prompts_upload) and
tabulate what each checkpoint did on each row.

Design notes: docs/DESIGN.md, section `ui.services.custom_prompts_run`.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from ds_core.episodes.tasks import Problem, TaskError
from ds_core.models.sampling import SamplingConfig
from ds_core.store.jsonio import to_jsonable
from ui.services.custom_prompts_upload import ERROR_COLUMNS, ParsedPrompt, RowError
from ui.services.episodes import verdicts_text

CACHE_KIND = "custom_prompts"
CACHE_VERSION = 1
RESULT_COLUMNS = (
    "row",
    "prompt",
    "checkpoint",
    "size",
    "answer",
    "expected",
    "correct",
    "attempts",
    "decisions",
    "decision_tokens",
    "generated_tokens",
    "decision_share",
    "attempt_answers",
    "flags",
    "given_answer",
    "generation",
)
SUMMARY_COLUMNS = (
    "checkpoint",
    "n",
    "correct",
    "accuracy",
    "wald_lo",
    "wald_hi",
    "mean_attempts",
    "resampled",
    "decision_share",
    "malformed",
    "not_run",
    "from_store",
)
# row flags added to the episode's own flags (ds_core.episodes.episode.FLAGS)
GIVEN_DIFFERS = "given_answer_differs"  # the file's expected answer is not the true answer
GIVEN_UNREADABLE = "given_answer_unreadable"  # the file's expected answer is not a number


@dataclass(frozen=True)
class CustomRun:
    results: pd.DataFrame = field(compare=False)
    errors: pd.DataFrame = field(compare=False)
    summary: pd.DataFrame = field(compare=False)
    settings: dict = field(compare=False)
    wall_s: float = 0.0

    def to_json(self) -> str:
        """Settings, per-checkpoint summary, per-row results and errors as one JSON document."""

        def records(df: pd.DataFrame) -> list[dict]:
            return [{k: _jsonable(v) for k, v in r.items()} for r in df.to_dict(orient="records")]

        return json.dumps(
            {
                "settings": self.settings,
                "summary": records(self.summary),
                "results": records(self.results),
                "errors": records(self.errors),
            },
            indent=1,
            ensure_ascii=False,
        )


_jsonable = to_jsonable  # ds_core.store.jsonio's policy


# --- running -----------------------------------------------------------------------------------
def _given_flags(given: str | None, problem: Problem) -> list[str]:
    if given is None:
        return []
    s = re.sub(r"[\s,_]", "", given)
    if s.endswith(".0"):
        s = s[:-2]
    if not s.isdigit():
        return [GIVEN_UNREADABLE]
    return [] if int(s) == problem.answer else [GIVEN_DIFFERS]


def streams_for(prompts: Sequence[ParsedPrompt]) -> list[str]:
    """One random stream per row, named after its problem and how often it occurred before."""
    seen: Counter = Counter()
    out = []
    for p in prompts:
        name = f"{p.problem.a}{p.problem.op}{p.problem.b}"
        out.append(f"custom:{name}:{seen[name]}")
        seen[name] += 1
    return out


def min_tokens(ckpt, problem: Problem) -> int:
    """Tokens a problem needs at least: its prompt, one correct attempt and one decision token."""
    return ckpt.format.min_tokens(ckpt.tokenizer, problem)


def _label(ckpt) -> str:
    return getattr(getattr(ckpt, "path", None), "name", None) or getattr(ckpt, "name", "checkpoint")


def _episode_row(ep) -> dict:
    gen = len(ep.token_ids) - ep.prompt_len
    n_dec = sum(1 for r in ep.roles[ep.prompt_len :] if r == "decision")
    return {
        "answer": None if ep.final_answer is None else str(ep.final_answer),
        "correct": bool(ep.correct),
        "attempts": ep.n_attempts,
        "decisions": verdicts_text(ep, ",", ""),
        "decision_tokens": n_dec,
        "generated_tokens": gen,
        "decision_share": n_dec / gen if gen else float("nan"),
        "attempt_answers": ",".join("?" if a.answer is None else str(a.answer) for a in ep.attempts),
        "ep_flags": list(ep.flags),
        "malformed": bool(ep.malformed),
        "generation": ep.text,
    }


def _cache_key(ckpt, prompts, streams, cfg, seed) -> dict:
    from ds_core.analysis.evaluate import format_key

    key = {
        "v": CACHE_VERSION,
        "checkpoint": ckpt.hash,
        "problems": [[p.problem.a, p.problem.op, p.problem.b, s] for p, s in zip(prompts, streams)],
        "sampling": cfg.key(),
        "seed": int(seed),
    }
    fmt = format_key(getattr(ckpt, "format", None))
    if fmt:  # a text model prompted with edited settings writes other episodes
        key["format"] = fmt
    return key


def run_checkpoint(
    ckpt,
    prompts: Sequence[ParsedPrompt],
    cfg=None,
    seed: int = 0,
    store=None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict], bool]:
    """Model outputs (one dict per prompt, in order) of one checkpoint, from one batched rollout,
    or from the results store when this exact request ran before. Returns (rows, from_store)."""
    from ds_core.models.rollout import rollout

    cfg = SamplingConfig.coerce(cfg)
    streams = streams_for(prompts)
    key = _cache_key(ckpt, prompts, streams, cfg, seed)
    if store is not None and prompts:
        hit = store.get_blob(CACHE_KIND, key)
        if hit is not None and len(hit.get("rows", ())) == len(prompts):
            if progress:
                progress(len(prompts))
            return hit["rows"], True
    if not prompts:
        return [], False
    eps = rollout(
        ckpt.model,
        ckpt.tokenizer,
        ckpt.format,
        [p.problem for p in prompts],
        cfg,
        seed=seed,
        progress=progress,
        streams=streams,
    )
    rows = [_episode_row(ep) for ep in eps]
    if store is not None:
        store.put_blob(CACHE_KIND, key, {"rows": rows})
    return rows, False


def run_prompts(
    checkpoints: Sequence,
    prompts: Sequence[ParsedPrompt],
    cfg=None,
    seed: int = 0,
    store=None,
    parse_errors: Sequence[RowError] = (),
    progress: Callable[[str, int, int], None] | None = None,
) -> CustomRun:
    """Run every checkpoint on every prompt (one batched rollout per checkpoint). `cfg`: a
    SamplingConfig, a mapping of its fields, or None for the defaults.

    `progress(checkpoint_label, done, total)` is called as episodes finish, `done`/`total`
    counted over all checkpoints. Rows that do not fit a checkpoint's context become errors.
    """
    from ds_core.models.model import context_length

    cfg = SamplingConfig.coerce(cfg)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise TaskError(f"seed must be a non-negative integer, got {seed!r}")
    t0 = time.perf_counter()
    plans = []
    errors = [e.to_dict() for e in parse_errors]
    for ck in checkpoints:
        label, ctx = _label(ck), context_length(ck.model)
        runnable = []
        for p in prompts:
            need = min_tokens(ck, p.problem)
            if need > ctx:
                errors.append(
                    RowError(
                        p.row,
                        p.prompt,
                        f"needs at least {need} tokens (prompt, one "
                        f"attempt, one decision); the context of {label} is {ctx}",
                        label,
                        line=p.line,
                    ).to_dict()
                )
            else:
                runnable.append(p)
        plans.append((ck, label, runnable))
    total = sum(len(r) for _, _, r in plans)
    done = 0
    results, summary = [], []
    for ck, label, runnable in plans:

        def tick(k: int, label=label):
            nonlocal done
            done += k
            if progress:
                progress(label, min(done, total), total)

        before = done
        outs, from_store = run_checkpoint(ck, runnable, cfg, seed, store, tick)
        done = before + len(runnable)
        if progress:
            progress(label, done, total)
        for p, o in zip(runnable, outs):
            flags = list(o["ep_flags"]) + _given_flags(p.given, p.problem)
            results.append(
                {
                    "row": p.row,
                    "prompt": p.prompt,
                    "checkpoint": label,
                    "size": p.problem.size,
                    "answer": o["answer"],
                    "expected": str(p.problem.answer),
                    "correct": o["correct"],
                    "attempts": o["attempts"],
                    "decisions": o["decisions"],
                    "decision_tokens": o["decision_tokens"],
                    "generated_tokens": o["generated_tokens"],
                    "decision_share": o["decision_share"],
                    "attempt_answers": o["attempt_answers"],
                    "flags": ",".join(flags),
                    "given_answer": p.given,
                    "generation": o["generation"],
                    "_malformed": o["malformed"],
                }
            )
        summary.append(
            _summary_row(
                label, [r for r in results if r["checkpoint"] == label], len(prompts) - len(runnable), from_store
            )
        )
    res = pd.DataFrame(results, columns=list(RESULT_COLUMNS) + ["_malformed"])
    res = res.drop(columns="_malformed").sort_values(["row", "checkpoint"], kind="stable")
    res = res.reset_index(drop=True)
    err = pd.DataFrame(errors, columns=list(ERROR_COLUMNS)).sort_values(["row", "checkpoint"], kind="stable")
    settings = {
        "sampling": cfg.key(),
        "seed": int(seed),
        "checkpoints": {_label(c): {"path": str(getattr(c, "path", "")), "hash": c.hash} for c in checkpoints},
        "rows": len(prompts) + len(parse_errors),
        "parsed": len(prompts),
    }
    return CustomRun(
        res,
        err.reset_index(drop=True),
        pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)),
        settings,
        time.perf_counter() - t0,
    )


def _summary_row(label: str, rows: list[dict], not_run: int, from_store: bool) -> dict:
    from ds_core.analysis.metrics import accuracy

    n = len(rows)
    k = sum(1 for r in rows if r["correct"])
    acc = accuracy(k, n)
    gen = sum(r["generated_tokens"] for r in rows)
    return {
        "checkpoint": label,
        "n": n,
        "correct": k,
        "accuracy": acc.p,
        "wald_lo": acc.wald[0],
        "wald_hi": acc.wald[1],
        "mean_attempts": sum(r["attempts"] for r in rows) / n if n else float("nan"),
        "resampled": sum(1 for r in rows if "RESAMPLE" in r["decisions"]) / n if n else float("nan"),
        "decision_share": sum(r["decision_tokens"] for r in rows) / gen if gen else float("nan"),
        "malformed": sum(1 for r in rows if r["_malformed"]) / n if n else float("nan"),
        "not_run": not_run,
        "from_store": from_store,
    }
