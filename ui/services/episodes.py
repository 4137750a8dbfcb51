"""An Episode as the pages show it: one row per token, and the verdicts as text."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ds_core.episodes.episode import Episode


def attempt_of(segment: str) -> int:
    """'attempt:2' / 'decision:2' -> 3: the attempt's number as every page shows it (from 1);
    0 outside attempts (prompt, other)."""
    kind, _, k = segment.partition(":")
    return int(k) + 1 if kind in ("attempt", "decision") and k.isdigit() else 0


def segment_label(segment: str) -> str:
    """An episode segment as the pages name it, attempts numbered from 1: 'attempt:0' -> 'attempt 1',
    'decision:0' -> 'decision after attempt 1'; 'prompt' and 'other' unchanged."""
    kind, _, k = str(segment).partition(":")
    if not k.isdigit():
        return str(segment)
    if kind == "attempt":
        return f"attempt {int(k) + 1}"
    if kind == "decision":
        return f"decision after attempt {int(k) + 1}"
    return str(segment)


def episode_frame(ep: Episode) -> pd.DataFrame:
    """One row per token: pos, token, token_id, role, segment (segment_label), attempt (from 1; 0
    outside attempts)."""
    n = len(ep.token_ids)
    tokens = list(ep.tokens) if len(ep.tokens) == n else [str(t) for t in ep.token_ids]
    return pd.DataFrame(
        {
            "pos": range(n),
            "token": tokens,
            "token_id": list(ep.token_ids),
            "role": list(ep.roles),
            "segment": [segment_label(s) for s in ep.segments],
            "attempt": [attempt_of(s) for s in ep.segments],
        }
    )


def verdicts_text(ep: Episode, sep: str = " → ", empty: str = "(none)") -> str:
    """The episode's verdicts in order, 'RESAMPLE → STOP'; `empty` when it has none."""
    return sep.join(d.verdict for d in ep.decisions) or empty


def segmentation_frame(ep: Episode, tokenizer) -> pd.DataFrame:
    """How the trace was split, in reading order: every attempt (its span, text and the answer
    read from it) and every decision (its span, the text the tagger matched, the verdict)."""
    rows = []
    for a in ep.attempts:
        rows.append(
            {
                "segment": f"attempt {a.index + 1}",
                "tokens": f"{a.start}..{a.end}",
                "text": a.text,
                "answer read": a.answer,
                "correct": a.correct,
                "verdict": "",
                "_start": a.start,
            }
        )
    for d in ep.decisions:
        rows.append(
            {
                "segment": f"decision after attempt {d.index + 1}",
                "tokens": f"{d.start}..{d.end}",
                "text": tokenizer.decode(list(ep.token_ids[d.start : d.end])),
                "answer read": None,
                "correct": None,
                "verdict": d.verdict,
                "_start": d.start + 0.5,
            }
        )
    cols = ["segment", "tokens", "text", "answer read", "correct", "verdict"]
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows).sort_values("_start", kind="stable")[cols].reset_index(drop=True)


def with_prompt_settings(checkpoints: Sequence, fmt: tuple) -> list:
    """The checkpoints with the page's text-format settings ((name, value) pairs, see
    ui.common.text_format_inputs) applied to the text-format ones; DS-format checkpoints, which
    write [STOP]/[RESAMPLE] tokens, are left as they are."""
    from ds_core.episodes.text_format import with_text_settings

    if not fmt:
        return list(checkpoints)
    return [with_text_settings(ck, **dict(fmt)) if ck.format.name == "text" else ck for ck in checkpoints]
