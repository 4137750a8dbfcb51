"""An Episode as the pages show it: one row per token, and the verdicts as text."""

from __future__ import annotations

import pandas as pd

from ds_core.episodes.episode import Episode


def attempt_of(segment: str) -> int:
    """'attempt:2' / 'decision:2' -> 2; -1 outside attempts (prompt, other)."""
    kind, _, k = segment.partition(":")
    return int(k) if kind in ("attempt", "decision") and k.isdigit() else -1


def episode_frame(ep: Episode) -> pd.DataFrame:
    """One row per token: pos, token, token_id, role, segment, attempt (-1 outside attempts)."""
    n = len(ep.token_ids)
    tokens = list(ep.tokens) if len(ep.tokens) == n else [str(t) for t in ep.token_ids]
    return pd.DataFrame(
        {
            "pos": range(n),
            "token": tokens,
            "token_id": list(ep.token_ids),
            "role": list(ep.roles),
            "segment": list(ep.segments),
            "attempt": [attempt_of(s) for s in ep.segments],
        }
    )


def verdicts_text(ep: Episode, sep: str = " → ", empty: str = "(none)") -> str:
    """The episode's verdicts in order, 'RESAMPLE → STOP'; `empty` when it has none."""
    return sep.join(d.verdict for d in ep.decisions) or empty
