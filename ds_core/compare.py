"""Compare checkpoints on the same prompt and seed, and on the same transcript.

    eps = sample_all(ckpts, problem, SamplingConfig(), seed=0)     # {label: Episode}, same stream
    tf = teacher_force(ckpts, eps["rl"], "rl")                      # every model on rl's tokens
    tf.tokens     # one row per (position, checkpoint): logp, p, delta = logp - logp(transcript's model)
    tf.roles      # per checkpoint x role: mean/sum logp and delta (sampling vs decision tokens)
    tf.decisions  # per decision position x checkpoint: p(STOP), p(RESAMPLE), p(the verdict taken)
    ac = compare_attribution(ckpts, eps["rl"], "rl", "kl_k3", ref=sft_reflection)
    ac.figures    # per checkpoint: |G_S|, |G_D|, ratio, cosine, shares
    ac.tokens     # per (position, checkpoint): share s_t and its difference from the transcript's model

Why teacher forcing: two checkpoints sampled with the same seed usually write different episodes,
so any difference between them mixes the model with the sample. Scoring one fixed transcript
under every model (no sampling, one forward pass per model over all transcripts at once, padded
left) makes the difference about the model only.

Choices (documented):
- every checkpoint samples with the same seed and the same random stream (stream 0 of
  ds_core.rollout), so identical models write identical episodes;
- delta log-prob = log p_model(token | prefix) - log p_transcript_model(token | prefix); the first
  token (no prefix) has no log-prob (NaN);
- p(STOP) / p(RESAMPLE) at a decision position are the probabilities the model gives to the two
  decision tokens at the position's first token (NaN for a tokenizer without them); a decision
  span of several tokens (lexical markers) is scored by the sum of its tokens' log-probs;
- attribution: the surrogate's advantage defaults to +1 for a transcript whose final answer is
  correct and -1 otherwise (as ds_core.attribution_runs does); KL objectives take one reference
  checkpoint shared by all models; share difference = s_t(model) - s_t(transcript's model).
Checkpoints are teacher-forced together only when their tokenizers have the same vocabulary
(`check_shared_vocab` raises CompareError otherwise).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from .episode import Episode
from .tasks import Problem, TaskError, TaskSpec, parse_prompt, sample_problems, test_set

ROLE_ORDER = ("prompt", "sampling", "decision", "other")
GENERATED = "generated"   # the role summary's row over all generated tokens
PROBLEM_SOURCES = ("test set", "typed", "random")
FIGURE_COLUMNS = ("n_S", "n_D", "n_O", "norm_G_S", "norm_G_D", "norm_G_O", "norm_G", "ratio_SD",
                  "ratio_SD_per_token", "cos_SD", "share_S", "share_D", "share_O")


class CompareError(ValueError):
    """Checkpoints that cannot be compared the way asked (different vocabularies, too few)."""


# ------------------------------------------------------------------------------- problems
def pick_problem(source: str, *, size: str = "3x3", index: int = 0, text: str = "",
                 seed: int = 0) -> Problem:
    """A problem from a fixed test set (`size`, `index`), typed (`text`) or random of a `size`
    (drawn with `seed`). TaskError with a message a user can act on otherwise."""
    if source == "test set":
        probs = test_set(size)
        if not 0 <= int(index) < len(probs):
            raise TaskError(f"the {size} test set has problems 0..{len(probs) - 1}, not {index}")
        return probs[int(index)]
    if source == "typed":
        return parse_prompt(text)
    if source == "random":
        return sample_problems(TaskSpec.parse(size), 1, int(seed))[0]
    raise TaskError(f"unknown problem source {source!r}; choose one of {', '.join(PROBLEM_SOURCES)}")


# ------------------------------------------------------------------------------- sampling
def sample_episode(ckpt, problem: Problem, cfg, seed: int = 0) -> Episode:
    """One episode of `problem` from `ckpt` (stream 0 of `seed`: the same for every checkpoint)."""
    from .rollout import rollout
    return rollout(ckpt.model, ckpt.tokenizer, ckpt.format, [problem], cfg, seed=seed)[0]


def sample_all(ckpts: Mapping[str, object], problem: Problem, cfg, seed: int = 0,
               progress: Callable[[int, int, str], None] | None = None) -> dict[str, Episode]:
    """{label: episode} for every checkpoint, same problem, settings and seed."""
    out = {}
    for i, (label, ck) in enumerate(ckpts.items()):
        if progress:
            progress(i, len(ckpts), label)
        out[label] = sample_episode(ck, problem, cfg, seed)
    if progress:
        progress(len(ckpts), len(ckpts), "")
    return out


def _verdicts(ep: Episode) -> str:
    return " → ".join(d.verdict for d in ep.decisions) or "(none)"


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
        rows.append({
            "checkpoint": label,
            "problem": p.display if p is not None else "",
            # as text: a 12x12 product or a runaway answer overflows int64 (and Arrow)
            "true answer": str(p.answer) if p is not None else "",
            "answer": "" if ep.final_answer is None else str(ep.final_answer),
            "correct": bool(ep.correct),
            "attempts": ep.n_attempts,
            "verdicts": _verdicts(ep),
            "attempt answers": _attempt_answers(ep),
            "checks agree": ", ".join("?" if a.check_ok is None else ("yes" if a.check_ok else "no")
                                      for a in ep.attempts),
            "generated tokens": len(ep.token_ids) - ep.prompt_len,
            "flags": ", ".join(ep.flags),
        })
    cols = ["checkpoint", "problem", "true answer", "answer", "correct", "attempts", "verdicts",
            "attempt answers", "checks agree", "generated tokens", "flags"]
    return pd.DataFrame(rows, columns=cols)


def episode_frame(ep: Episode) -> pd.DataFrame:
    """One row per token: pos, token, token_id, role, segment."""
    n = len(ep.token_ids)
    tokens = list(ep.tokens) if len(ep.tokens) == n else [str(t) for t in ep.token_ids]
    return pd.DataFrame({"pos": range(n), "token": tokens, "token_id": list(ep.token_ids),
                         "role": list(ep.roles), "segment": list(ep.segments)})


def outcome_line(ep: Episode) -> str:
    """'answer 561741 ✓ (true 561741) · 2 attempts · RESAMPLE → STOP' for a heading."""
    p = ep.problem
    ans = "none" if ep.final_answer is None else str(ep.final_answer)
    mark = "✓ correct" if ep.correct else "✗ wrong"
    true = f" (true {p.answer})" if p is not None else ""
    flags = f" · flags: {', '.join(ep.flags)}" if ep.flags else ""
    return (f"answer {ans} {mark}{true} · {ep.n_attempts} attempt{'s' * (ep.n_attempts != 1)} · "
            f"verdicts {_verdicts(ep)}{flags}")


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
            what = (f"{len(v0)} vs {len(v)} tokens" if len(v0) != len(v) else
                    "same size, but different tokens or ids" if not (only0 or only1) else
                    f"{only0} tokens only in {first}, {only1} only in {label}")
            return (f"{label} and {first} do not share a tokenizer vocabulary ({what}): one "
                    "transcript's token ids mean different text to them, so they cannot be "
                    "teacher-forced together. Compare checkpoints trained with the same tokenizer.")
    return None


def check_shared_vocab(ckpts: Mapping[str, object]) -> None:
    msg = vocab_problem(ckpts)
    if msg:
        raise CompareError(msg)


# ------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class TokenScores:
    """One model on one transcript, per position t: logp[t] = log p(token_t | tokens_<t) (NaN at
    t = 0), p_stop[t] / p_resample[t] = the probability of [STOP] / [RESAMPLE] as token t (NaN
    when the tokenizer has no decision tokens)."""
    logp: tuple[float, ...]
    p_stop: tuple[float, ...]
    p_resample: tuple[float, ...]


def score(ckpt, transcripts: Sequence[Sequence[int]], batch_size: int = 16) -> tuple[TokenScores, ...]:
    """Teacher-force every transcript (token ids) through `ckpt`'s model: one left-padded forward
    pass per batch, no sampling. CompareError for ids outside the model or longer than its context."""
    import torch

    from .model import context_length
    from .tokenizer import decision_token_ids
    model = ckpt.model
    ctx = context_length(model)
    vocab = int(model.get_input_embeddings().num_embeddings)
    seqs = [[int(t) for t in s] for s in transcripts]
    for s in seqs:
        if not s:
            raise CompareError("an empty transcript cannot be scored")
        if len(s) > ctx:
            raise CompareError(f"a transcript of {len(s)} tokens does not fit the model's context "
                               f"of {ctx}")
        if max(s) >= vocab or min(s) < 0:
            raise CompareError(f"the transcript has token ids outside the model's vocabulary of {vocab}")
    dec = decision_token_ids(ckpt.tokenizer) or {}
    stop_id, res_id = dec.get("STOP"), dec.get("RESAMPLE")
    pad = ckpt.tokenizer.pad_token_id if ckpt.tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out: list[TokenScores] = []
    nan = float("nan")
    for b0 in range(0, len(seqs), batch_size):
        batch = seqs[b0:b0 + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, s in enumerate(batch):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)          # predicts columns 1..
            tok = lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).double().cpu()
            ps = lp[..., stop_id].exp().double().cpu() if stop_id is not None else None
            pr = lp[..., res_id].exp().double().cpu() if res_id is not None else None
        for r, s in enumerate(batch):
            off = width - len(s)   # token t of s sits in column off + t; predicted at off + t - 1
            sl = slice(off, width - 1)
            logp = (nan,) + tuple(float(x) for x in tok[r, sl])
            p_s = (nan,) + tuple(float(x) for x in ps[r, sl]) if ps is not None else (nan,) * len(s)
            p_r = (nan,) + tuple(float(x) for x in pr[r, sl]) if pr is not None else (nan,) * len(s)
            out.append(TokenScores(logp, p_s, p_r))
    return tuple(out)


# ------------------------------------------------------------------------------- teacher forcing
@dataclass(frozen=True, eq=False)
class TeacherForced:
    """Every model on one transcript (the episode `source` sampled). Frames in module docstring."""
    source: str
    labels: tuple[str, ...]
    episode: Episode
    tokens: pd.DataFrame      # pos, token, role, segment, checkpoint, logp, p, delta
    roles: pd.DataFrame       # checkpoint, role, n, mean_logp, sum_logp, mean_delta, sum_delta
    decisions: pd.DataFrame   # decision, pos, verdict, attempt_correct, check_ok, checkpoint,
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
        return pd.DataFrame({"pos": a["pos"], "token": a["token"], "role": a["role"],
                             "segment": a["segment"], "logp_transcript_model": a["logp"],
                             "logp_compared_model": b["logp"], "delta": delta})


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
            rows.append({"checkpoint": label, "role": role, "n": int(len(g)),
                         "mean_logp": float(g["logp"].mean()), "sum_logp": float(g["logp"].sum()),
                         "mean_delta": float(g["delta"].mean()), "sum_delta": float(g["delta"].sum())})
    roles = pd.DataFrame(rows, columns=["checkpoint", "role", "n", "mean_logp", "sum_logp",
                                        "mean_delta", "sum_delta"])

    drows = []
    atts = {a.index: a for a in episode.attempts}
    for d in episode.decisions:
        att = atts.get(d.index)
        src_lp = sum(scores[source].logp[d.start:d.end])
        for label in labels:
            s = scores[label]
            p_s, p_r = s.p_stop[d.start], s.p_resample[d.start]
            lp = sum(s.logp[d.start:d.end])
            p_v = (p_s if d.verdict == "STOP" else p_r) if d.end - d.start == 1 else math.exp(lp)
            drows.append({"decision": d.index, "pos": d.start, "verdict": d.verdict,
                          "attempt_correct": None if att is None else bool(att.correct),
                          "check_ok": None if att is None else att.check_ok,
                          "checkpoint": label, "p_STOP": p_s, "p_RESAMPLE": p_r, "p_verdict": p_v,
                          "logp_verdict": lp, "delta_logp_verdict": lp - src_lp})
    decisions = pd.DataFrame(drows, columns=["decision", "pos", "verdict", "attempt_correct",
                                             "check_ok", "checkpoint", "p_STOP", "p_RESAMPLE",
                                             "p_verdict", "logp_verdict", "delta_logp_verdict"])
    notes = []
    if not episode.decisions:
        notes.append(f"{source}'s episode has no decision token (flags: "
                     f"{', '.join(episode.flags) or 'none'}): no p(STOP)/p(RESAMPLE) to compare")
    elif decisions["p_STOP"].isna().all():
        notes.append("the tokenizer has no [STOP]/[RESAMPLE] tokens: decisions are lexical spans, "
                     "scored by their summed log-prob only")
    return TeacherForced(source, labels, episode, tokens, roles, decisions, tuple(notes))


def teacher_force(ckpts: Mapping[str, object], episode: Episode, source: str) -> TeacherForced:
    """Score `episode` (sampled by checkpoint `source`) under every checkpoint in `ckpts`."""
    check_shared_vocab(ckpts)
    scores = {label: score(ck, [episode.token_ids])[0] for label, ck in ckpts.items()}
    return teacher_force_scores(episode, source, scores)


def cross_likelihood(episodes: Mapping[str, Episode],
                     scores: Mapping[str, Sequence[TokenScores]]) -> pd.DataFrame:
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
                rows.append({"transcript": tlabel, "checkpoint": mlabel, "role": role, "n": len(vals),
                             "mean_logp": sum(vals) / len(vals) if vals else float("nan"),
                             "sum_logp": float(sum(vals))})
    return pd.DataFrame(rows, columns=["transcript", "checkpoint", "role", "n", "mean_logp", "sum_logp"])


# ------------------------------------------------------------------------------- attribution
def default_advantage(episode: Episode) -> float:
    """+1 for a transcript whose final answer is correct, -1 otherwise (the outcome reward's sign)."""
    return 1.0 if episode.correct else -1.0


@dataclass(frozen=True, eq=False)
class AttributionComparison:
    """One objective's attribution on one transcript under every model."""
    source: str
    objective: str
    labels: tuple[str, ...]
    figures: pd.DataFrame    # checkpoint, FIGURE_COLUMNS..., error
    tokens: pd.DataFrame     # pos, token, role, segment, checkpoint, term, share, share_diff, align_D, align_S
    errors: dict
    advantage: float | None = None
    ref: str | None = None

    def pair(self, other: str) -> pd.DataFrame:
        """One row per token: pos, token, role, segment, share_transcript_model (the source's),
        share_compared_model (`other`'s), share_diff (= the second - the first)."""
        t = self.tokens
        a = t[t["checkpoint"] == self.source].reset_index(drop=True)
        b = t[t["checkpoint"] == other].reset_index(drop=True)
        if not len(b):
            raise KeyError(f"no attribution for {other!r}")
        if not len(a):
            a = b.assign(share=float("nan"))
        return pd.DataFrame({"pos": b["pos"], "token": b["token"], "role": b["role"],
                             "segment": b["segment"], "share_transcript_model": a["share"],
                             "share_compared_model": b["share"], "share_diff": b["share_diff"]})


def attribution_comparison(episode: Episode, source: str, objective: str,
                           results: Mapping[str, object], *, advantage: float | None = None,
                           ref: str | None = None) -> AttributionComparison:
    """Frames from per-model results: `results[label]` is an AttributionResult or an error message
    (str) for a model whose attribution could not be computed."""
    labels = tuple(results)
    ef = episode_frame(episode)
    src = results.get(source)
    src_share = pd.Series(src.share, dtype=float) if not isinstance(src, str) and src is not None else None
    frows, tframes, errors = [], [], {}
    for label in labels:
        r = results[label]
        if isinstance(r, str):
            errors[label] = r
            frows.append({"checkpoint": label, **{c: float("nan") for c in FIGURE_COLUMNS}, "error": r})
            continue
        fg = r.figures
        frows.append({"checkpoint": label, **{c: getattr(fg, c) for c in FIGURE_COLUMNS}, "error": ""})
        f = ef[["pos", "token", "role", "segment"]].copy()
        f["checkpoint"] = label
        f["term"] = list(r.term)
        f["share"] = list(r.share)
        share = pd.Series(r.share, dtype=float)
        f["share_diff"] = share - src_share if src_share is not None else float("nan")
        f["align_D"] = list(r.align_D)
        f["align_S"] = list(r.align_S)
        tframes.append(f)
    figures = pd.DataFrame(frows, columns=["checkpoint", *FIGURE_COLUMNS, "error"])
    for c in ("n_S", "n_D", "n_O"):
        figures[c] = figures[c].astype("Int64")
    cols = ["pos", "token", "role", "segment", "checkpoint", "term", "share", "share_diff", "align_D",
            "align_S"]
    tokens = pd.concat(tframes, ignore_index=True) if tframes else pd.DataFrame(columns=cols)
    return AttributionComparison(source, objective, labels, figures, tokens[cols], errors,
                                 advantage, ref)


def compare_attribution(ckpts: Mapping[str, object], episode: Episode, source: str, objective: str, *,
                        advantage: float | None = None, ref=None, ref_label: str | None = None,
                        store=None, progress: Callable[[int, int, str], None] | None = None
                        ) -> AttributionComparison:
    """attribute(objective) on `episode` under every checkpoint (norms=False; the results store,
    when given, caches each). A model whose attribution fails (a KL against itself has a zero
    gradient, say) gets its error message in `errors` and NaN figures; the rest still compute."""
    from .attribution import AttributionError
    from .attribution_runs import cached_attribute, needs_ref
    from .objectives import OBJECTIVES
    if objective not in OBJECTIVES:
        raise CompareError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    check_shared_vocab(ckpts)
    kw: dict = {"norms": False}
    adv = None
    if "advantages" in OBJECTIVES[objective].needs:
        adv = default_advantage(episode) if advantage is None else float(advantage)
        if not math.isfinite(adv):
            raise CompareError(f"the advantage must be a finite number, got {advantage!r}")
        kw["advantage"] = adv
    if needs_ref(objective):
        if ref is None:
            raise CompareError(f"objective {objective!r} needs a KL reference checkpoint")
        if ref.tokenizer.get_vocab() != next(iter(ckpts.values())).tokenizer.get_vocab():
            raise CompareError("the KL reference does not share the compared checkpoints' tokenizer "
                               "vocabulary")
        kw["ref_model"] = ref
    results: dict[str, object] = {}
    for i, (label, ck) in enumerate(ckpts.items()):
        if progress:
            progress(i, len(ckpts), label)
        try:
            results[label] = cached_attribute(ck, episode, objective, store, **kw)
        except AttributionError as e:
            results[label] = str(e)
    if progress:
        progress(len(ckpts), len(ckpts), "")
    return attribution_comparison(episode, source, objective, results, advantage=adv,
                                  ref=ref_label if ref is not None and "ref_model" in kw else None)
