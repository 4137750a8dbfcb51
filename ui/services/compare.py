"""Compare checkpoints on the same prompt and seed: the problem, every checkpoint's episode of it,
and whether checkpoints can be compared at all.

    problem = pick_problem("test set", size="3x3", index=0)        # or typed, or random of a size
    eps = sample_all(ckpts, problem, SamplingConfig(), seed=0)     # {label: Episode}, same stream
    outcome_frame(eps)   # one row per checkpoint: answer, correct, attempts, verdicts, flags

Every checkpoint samples with the same seed and the same random stream (stream 0 of
ds_core.models.rollout), so identical models write identical episodes. Different checkpoints usually
still write different episodes, so a difference between them mixes the model with the sample:
ui.services.compare_teacher_forcing scores one fixed transcript under every model, and
ui.services.compare_attribution compares their gradient attribution on it. Checkpoints are
teacher-forced together only when their tokenizers have the same vocabulary
(`check_shared_vocab` raises CompareError otherwise, the error of all three modules).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from ds_core.episodes.episode import Episode
from ds_core.episodes.tasks import Problem
from ds_core.errors import UserError
from ui.services.episodes import verdicts_text


class CompareError(UserError, ValueError):
    """Checkpoints that cannot be compared the way asked (different vocabularies, too few)."""


# ------------------------------------------------------------------------------- sampling
def sample_episode(ckpt, problem: Problem, cfg, seed: int = 0) -> Episode:
    """One episode of `problem` from `ckpt` (stream 0 of `seed`: the same for every checkpoint)."""
    from ds_core.models.rollout import rollout

    return rollout(ckpt.model, ckpt.tokenizer, ckpt.format, [problem], cfg, seed=seed)[0]


def sample_all(
    ckpts: Mapping[str, object],
    problem: Problem,
    cfg,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Episode]:
    """{label: episode} for every checkpoint, same problem, settings and seed."""
    out = {}
    for i, (label, ck) in enumerate(ckpts.items()):
        if progress:
            progress(i, len(ckpts), label)
        out[label] = sample_episode(ck, problem, cfg, seed)
    if progress:
        progress(len(ckpts), len(ckpts), "")
    return out


def _attempt_answers(ep: Episode) -> str:
    parts = []
    for a in ep.attempts:
        ans = "?" if a.answer is None else str(a.answer)
        parts.append(f"{ans} {'✓' if a.correct else '✗'}")
    return ", ".join(parts) or "(none)"


def outcome_frame(episodes: Mapping[str, Episode]) -> pd.DataFrame:
    """One row per checkpoint: its answer, correctness, attempts and verdicts (answers as text)."""
    rows = []
    for label, ep in episodes.items():
        p = ep.problem
        rows.append(
            {
                "checkpoint": label,
                "problem": p.display if p is not None else "",
                # as text: a 12x12 product or a runaway answer overflows int64 (and Arrow)
                "true answer": str(p.answer) if p is not None else "",
                "answer": "" if ep.final_answer is None else str(ep.final_answer),
                "correct": bool(ep.correct),
                "attempts": ep.n_attempts,
                "verdicts": verdicts_text(ep),
                "attempt answers": _attempt_answers(ep),
                "checks agree": ", ".join(
                    "?" if a.check_ok is None else ("yes" if a.check_ok else "no") for a in ep.attempts
                ),
                "generated tokens": len(ep.token_ids) - ep.prompt_len,
                "flags": ", ".join(ep.flags),
            }
        )
    cols = [
        "checkpoint",
        "problem",
        "true answer",
        "answer",
        "correct",
        "attempts",
        "verdicts",
        "attempt answers",
        "checks agree",
        "generated tokens",
        "flags",
    ]
    return pd.DataFrame(rows, columns=cols)


def outcome_line(ep: Episode) -> str:
    """'answer 561741 ✓ (true 561741) · 2 attempts · RESAMPLE → STOP' for a heading."""
    p = ep.problem
    ans = "none" if ep.final_answer is None else str(ep.final_answer)
    mark = "✓ correct" if ep.correct else "✗ wrong"
    true = f" (true {p.answer})" if p is not None else ""
    flags = f" · flags: {', '.join(ep.flags)}" if ep.flags else ""
    return (
        f"answer {ans} {mark}{true} · {ep.n_attempts} attempt{'s' * (ep.n_attempts != 1)} · "
        f"verdicts {verdicts_text(ep)}{flags}"
    )


# ------------------------------------------------------------------------------- vocabulary
def vocab_problem(ckpts: Mapping[str, object]) -> str | None:
    """Why these checkpoints cannot be teacher-forced together, or None when they can."""
    items = list(ckpts.items())
    if len(items) < 2:
        return "pick at least two checkpoints to compare"
    first, ck0 = items[0]
    v0 = ck0.tokenizer.get_vocab()
    for label, ck in items[1:]:
        v = ck.tokenizer.get_vocab()
        if v != v0:
            only0 = len(set(v0) - set(v))
            only1 = len(set(v) - set(v0))
            what = (
                f"{len(v0)} vs {len(v)} tokens"
                if len(v0) != len(v)
                else "same size, but different tokens or ids"
                if not (only0 or only1)
                else f"{only0} tokens only in {first}, {only1} only in {label}"
            )
            return (
                f"{label} and {first} do not share a tokenizer vocabulary ({what}): one "
                "transcript's token ids mean different text to them, so they cannot be "
                "teacher-forced together. Compare checkpoints trained with the same tokenizer."
            )
    return None


def check_shared_vocab(ckpts: Mapping[str, object]) -> None:
    msg = vocab_problem(ckpts)
    if msg:
        raise CompareError(msg)
