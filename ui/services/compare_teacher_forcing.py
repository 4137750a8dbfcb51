"""Compare checkpoints on the same transcript: every model teacher-forced on one episode's tokens.

Design notes: docs/DESIGN.md, section `ui.services.compare_teacher_forcing`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from ds_core.episodes.episode import Episode
from ds_core.models import teacher_forcing
from ds_core.models.teacher_forcing import TokenScores
from ui.services.compare import CompareError, check_shared_vocab
from ui.services.episodes import episode_frame

ROLE_ORDER = ("prompt", "sampling", "decision", "other")
GENERATED = "generated"  # the role summary's row over all generated tokens


def score(ckpt, transcripts: Sequence[Sequence[int]], batch_size: int = 16) -> tuple[TokenScores, ...]:
    """ds_core.models.teacher_forcing.score, with its refusals as CompareError (the page's error)."""
    try:
        return teacher_forcing.score(ckpt, transcripts, batch_size)
    except teacher_forcing.TeacherForcingError as e:
        raise CompareError(str(e)) from None


# ------------------------------------------------------------------------------- teacher forcing
@dataclass(frozen=True, eq=False)
class TeacherForced:
    """Every model on one transcript (the episode `source` sampled). Frames in module docstring."""

    source: str
    labels: tuple[str, ...]
    episode: Episode
    tokens: pd.DataFrame  # pos, token, role, segment, checkpoint, logp, p, delta
    roles: pd.DataFrame  # checkpoint, role, n, mean_logp, sum_logp, mean_delta, sum_delta
    decisions: pd.DataFrame  # decision, pos, verdict, attempt_correct, check_ok, checkpoint,
    #                           p_STOP, p_RESAMPLE, p_verdict, logp_verdict, delta_logp_verdict
    notes: tuple[str, ...] = ()

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(x for x in self.labels if x != self.source)

    def pair(self, other: str, include_prompt: bool = True) -> pd.DataFrame:
        """One row per token: pos, token, role, segment, logp_transcript_model (the source's),
        logp_compared_model (`other`'s), delta (= the second - the first): for token shading.
        `include_prompt=False` leaves the prompt tokens' delta NaN (unshaded)."""
        t = self.tokens
        a = t[t["checkpoint"] == self.source].reset_index(drop=True)
        b = t[t["checkpoint"] == other].reset_index(drop=True)
        if not len(b):
            raise KeyError(f"no checkpoint {other!r}; compared: {', '.join(self.labels)}")
        delta = b["delta"].where(b["role"] != "prompt") if not include_prompt else b["delta"]
        return pd.DataFrame(
            {
                "pos": a["pos"],
                "token": a["token"],
                "role": a["role"],
                "segment": a["segment"],
                "logp_transcript_model": a["logp"],
                "logp_compared_model": b["logp"],
                "delta": delta,
            }
        )


def teacher_force_scores(episode: Episode, source: str, scores: Mapping[str, TokenScores]) -> TeacherForced:
    """Build the teacher-forcing frames from each model's TokenScores on `episode` (the transcript
    that checkpoint `source` sampled). `scores` maps every label (source included) to its scores."""
    if source not in scores:
        raise CompareError(f"the transcript's checkpoint {source!r} is not among the scored ones")
    labels = tuple(scores)
    n = len(episode.token_ids)
    ef = episode_frame(episode)
    base = pd.Series(scores[source].logp, dtype=float)
    frames = []
    for label in labels:
        s = scores[label]
        if len(s.logp) != n:
            raise CompareError(f"{label}'s scores cover {len(s.logp)} tokens, the transcript {n}")
        lp = pd.Series(s.logp, dtype=float)
        f = ef[["pos", "token", "role", "segment"]].copy()
        f["checkpoint"] = label
        f["logp"] = lp
        f["p"] = lp.map(math.exp)
        f["delta"] = lp - base
        frames.append(f)
    tokens = pd.concat(frames, ignore_index=True)

    rows = []
    for label in labels:
        f = tokens[tokens["checkpoint"] == label]
        groups = [(r, f[f["role"] == r]) for r in ROLE_ORDER]
        groups.append((GENERATED, f[(f["pos"] >= episode.prompt_len) & (f["pos"] > 0)]))
        for role, g in groups:
            g = g[g["logp"].notna()]
            if not len(g):
                continue
            rows.append(
                {
                    "checkpoint": label,
                    "role": role,
                    "n": int(len(g)),
                    "mean_logp": float(g["logp"].mean()),
                    "sum_logp": float(g["logp"].sum()),
                    "mean_delta": float(g["delta"].mean()),
                    "sum_delta": float(g["delta"].sum()),
                }
            )
    roles = pd.DataFrame(rows, columns=["checkpoint", "role", "n", "mean_logp", "sum_logp", "mean_delta", "sum_delta"])

    drows = []
    atts = {a.index: a for a in episode.attempts}
    for d in episode.decisions:
        att = atts.get(d.index)
        src_lp = sum(scores[source].logp[d.start : d.end])
        for label in labels:
            s = scores[label]
            p_s, p_r = s.p_stop[d.start], s.p_resample[d.start]
            lp = sum(s.logp[d.start : d.end])
            p_v = (p_s if d.verdict == "STOP" else p_r) if d.end - d.start == 1 else math.exp(lp)
            drows.append(
                {
                    "after attempt": d.index + 1,  # attempts numbered from 1, as on every page
                    "pos": d.start,
                    "verdict": d.verdict,
                    "attempt_correct": None if att is None else bool(att.correct),
                    "check_ok": None if att is None else att.check_ok,
                    "checkpoint": label,
                    "p_STOP": p_s,
                    "p_RESAMPLE": p_r,
                    "p_verdict": p_v,
                    "logp_verdict": lp,
                    "delta_logp_verdict": lp - src_lp,
                }
            )
    decisions = pd.DataFrame(
        drows,
        columns=[
            "after attempt",
            "pos",
            "verdict",
            "attempt_correct",
            "check_ok",
            "checkpoint",
            "p_STOP",
            "p_RESAMPLE",
            "p_verdict",
            "logp_verdict",
            "delta_logp_verdict",
        ],
    )
    notes = []
    if not episode.decisions:
        notes.append(
            f"{source}'s episode has no decision token (flags: "
            f"{', '.join(episode.flags) or 'none'}): no p(STOP)/p(RESAMPLE) to compare"
        )
    elif decisions["p_STOP"].isna().all():
        notes.append(
            "the tokenizer has no [STOP]/[RESAMPLE] tokens: decisions are lexical spans, "
            "scored by their summed log-prob only"
        )
    return TeacherForced(source, labels, episode, tokens, roles, decisions, tuple(notes))


def teacher_force(ckpts: Mapping[str, object], episode: Episode, source: str) -> TeacherForced:
    """Score `episode` (sampled by checkpoint `source`) under every checkpoint in `ckpts`."""
    check_shared_vocab(ckpts)
    scores = {label: score(ck, [episode.token_ids])[0] for label, ck in ckpts.items()}
    return teacher_force_scores(episode, source, scores)


def cross_likelihood(episodes: Mapping[str, Episode], scores: Mapping[str, Sequence[TokenScores]]) -> pd.DataFrame:
    """Every model on every transcript: rows transcript x checkpoint x role (sampling, decision,
    generated) with the mean and sum log-prob. `scores[model][i]` scores the i-th episode."""
    rows = []
    for i, (tlabel, ep) in enumerate(episodes.items()):
        gen = [t for t in range(max(1, ep.prompt_len), len(ep.token_ids))]
        for mlabel, ss in scores.items():
            lp = ss[i].logp
            for role in ("sampling", "decision", GENERATED):
                pos = gen if role == GENERATED else [t for t in gen if ep.roles[t] == role]
                vals = [lp[t] for t in pos if not math.isnan(lp[t])]
                rows.append(
                    {
                        "transcript": tlabel,
                        "checkpoint": mlabel,
                        "role": role,
                        "n": len(vals),
                        "mean_logp": sum(vals) / len(vals) if vals else float("nan"),
                        "sum_logp": float(sum(vals)),
                    }
                )
    return pd.DataFrame(rows, columns=["transcript", "checkpoint", "role", "n", "mean_logp", "sum_logp"])
