"""The `Episode`: one generation parsed into attempts, decisions and a role for every token.

    prompt -> attempt 1 (sampling) -> decision (STOP | RESAMPLE) -> attempt 2 -> ... -> STOP

`parse_episode` turns any token sequence into an Episode. It never raises on what a model
generated: malformed generations come back as an Episode whose `flags` say what was wrong.
Which tokens are decisions is the `RoleTagger`'s business (ds_core.episodes.roles); how an attempt's
answer is read is the `EpisodeFormat`'s (ds_core.episodes.formats).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ds_core.episodes.tasks import Problem

ROLES = ("prompt", "sampling", "decision", "other")
STOP, RESAMPLE = "STOP", "RESAMPLE"
VERDICTS = (STOP, RESAMPLE)

# Flags. CAP_REACHED and OUT_OF_CONTEXT are outcomes; the rest say the generation was malformed.
NO_ANSWER = "no_answer"  # the final attempt has no readable answer
MALFORMED_ATTEMPT = "malformed_attempt"  # some attempt does not follow the format
EMPTY_ATTEMPT = "empty_attempt"  # a decision with no attempt text before it
MISSING_DECISION = "missing_decision"  # the generation ended after an attempt without a verdict
TRUNCATED = "truncated"  # runaway: hit the length limit before ending
TRAILING_TOKENS = "trailing_tokens"  # tokens after STOP other than end-of-sequence
UNEXPECTED_TOKEN = "unexpected_token"  # padding/bos/unknown tokens inside the generation
EMPTY = "empty"  # nothing was generated
CAP_REACHED = "cap_reached"  # RESAMPLE after the last allowed attempt
FLAGS = (
    NO_ANSWER,
    MALFORMED_ATTEMPT,
    EMPTY_ATTEMPT,
    MISSING_DECISION,
    TRUNCATED,
    TRAILING_TOKENS,
    UNEXPECTED_TOKEN,
    EMPTY,
    CAP_REACHED,
)
OUTCOME_FLAGS = frozenset({CAP_REACHED})

# what a verdict did with an attempt: the four cells of (attempt correct?, verdict)
TRANSITIONS = {
    (True, STOP): "correct_kept",
    (False, RESAMPLE): "wrong_revised",
    (False, STOP): "wrong_kept",
    (True, RESAMPLE): "correct_changed",
}
UNDECIDED = "undecided"  # an attempt with no verdict after it
OUTCOMES = (*TRANSITIONS.values(), UNDECIDED)


def transition(correct: bool, verdict: str | None) -> str:
    """'correct_kept', 'wrong_revised', 'wrong_kept', 'correct_changed', or 'undecided' (no verdict)."""
    return UNDECIDED if verdict is None else TRANSITIONS[(bool(correct), verdict)]


@dataclass(frozen=True)
class AttemptReading:
    """What a format reads from an attempt's text."""

    answer: int | None
    malformed: bool
    check_ok: bool | None


@dataclass(frozen=True)
class Attempt:
    index: int  # 0-based attempt number
    start: int  # token span [start, end) in Episode.token_ids
    end: int
    text: str
    answer: int | None  # the attempt's answer, None when unreadable
    correct: bool
    malformed: bool = False
    check_ok: bool | None = None  # the model's own written check agrees (None: no check read)

    def __post_init__(self):
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad attempt span [{self.start}, {self.end})")


@dataclass(frozen=True)
class Decision:
    index: int  # the attempt this verdict follows
    start: int  # token span [start, end) of the decision tokens
    end: int
    verdict: str  # STOP or RESAMPLE

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if not 0 <= self.start < self.end:
            raise ValueError(f"bad decision span [{self.start}, {self.end})")


@dataclass(frozen=True)
class Episode:
    problem: Problem | None
    token_ids: tuple[int, ...]
    roles: tuple[str, ...]
    segments: tuple[str, ...]  # per token: 'prompt', 'attempt:k', 'decision:k' or 'other'
    prompt_len: int
    attempts: tuple[Attempt, ...]
    decisions: tuple[Decision, ...]
    final_answer: int | None
    correct: bool
    flags: tuple[str, ...] = ()
    text: str = ""
    tokens: tuple[str, ...] = field(default=(), compare=False)  # token strings, for display

    def __post_init__(self):
        n = len(self.token_ids)
        if len(self.roles) != n or len(self.segments) != n:
            raise ValueError(f"{n} tokens but {len(self.roles)} roles, {len(self.segments)} segments")
        bad = set(self.roles) - set(ROLES)
        if bad:
            raise ValueError(f"unknown roles {sorted(bad)}")
        if not 0 <= self.prompt_len <= n:
            raise ValueError(f"prompt_len {self.prompt_len} outside 0..{n}")
        unknown = set(self.flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"unknown flags {sorted(unknown)}")

    # --- views ---------------------------------------------------------------------------------
    @property
    def malformed(self) -> bool:
        return any(f not in OUTCOME_FLAGS for f in self.flags)

    @property
    def n_attempts(self) -> int:
        return len(self.attempts)

    def verdict_after(self, k: int) -> str | None:
        for d in self.decisions:
            if d.index == k:
                return d.verdict
        return None

    def positions(self, role: str) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r == role]

    @property
    def generated_ids(self) -> tuple[int, ...]:
        return self.token_ids[self.prompt_len :]

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "problem": self.problem.to_dict() if self.problem else None,
            "token_ids": list(self.token_ids),
            "roles": list(self.roles),
            "segments": list(self.segments),
            "prompt_len": self.prompt_len,
            "attempts": [a.__dict__.copy() for a in self.attempts],
            "decisions": [d.__dict__.copy() for d in self.decisions],
            "final_answer": self.final_answer,
            "correct": self.correct,
            "flags": list(self.flags),
            "text": self.text,
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Episode:
        return cls(
            problem=Problem.from_dict(d["problem"]) if d.get("problem") else None,
            token_ids=tuple(d["token_ids"]),
            roles=tuple(d["roles"]),
            segments=tuple(d["segments"]),
            prompt_len=int(d["prompt_len"]),
            attempts=tuple(Attempt(**a) for a in d["attempts"]),
            decisions=tuple(Decision(**x) for x in d["decisions"]),
            final_answer=d["final_answer"],
            correct=bool(d["correct"]),
            flags=tuple(d["flags"]),
            text=d.get("text", ""),
            tokens=tuple(d.get("tokens", ())),
        )


def parse_episode(
    problem: Problem | None,
    token_ids,
    prompt_len: int,
    tokenizer,
    fmt,
    *,
    truncated: bool = False,
    max_attempts: int | None = None,
) -> Episode:
    """Parse prompt + generated tokens into an Episode. Never raises on generated content.

    `fmt` is an EpisodeFormat (ds_core.episodes.formats): its tagger finds decision spans, its
    `read_attempt` reads each attempt's answer. `truncated` says the generation hit its length
    limit; `max_attempts` lets the parser tell a retry cap from a cut-off generation.
    """
    ids = [int(t) for t in token_ids]
    prompt_len = max(0, min(int(prompt_len), len(ids)))
    tags = fmt.tagger.tag(ids, prompt_len, tokenizer)
    roles = list(tags.roles)
    flags: list[str] = []

    def flag(f: str):
        if f not in flags:
            flags.append(f)

    vocab_size = len(tokenizer)
    tokens = tuple(tokenizer.convert_ids_to_tokens(t) if 0 <= t < vocab_size else None for t in ids)
    if any(t is None for t in tokens[prompt_len:]):
        flag(UNEXPECTED_TOKEN)
    tokens = tuple("" if t is None else t for t in tokens)

    if len(ids) == prompt_len:
        flag(EMPTY)
    if tags.unexpected:
        flag(UNEXPECTED_TOKEN)

    segments = ["prompt"] * prompt_len + ["other"] * (len(ids) - prompt_len)
    attempts: list[Attempt] = []
    decisions: list[Decision] = []
    cursor = prompt_len
    ended = False

    def close_attempt(start: int, end: int) -> None:
        k = len(attempts)
        span = [i for i in range(start, end) if roles[i] == "sampling"]
        if not span:
            return
        s, e = span[0], span[-1] + 1
        text = fmt.attempt_text(ids[s:e], tokenizer)
        reading = fmt.read_attempt(text, problem)
        for i in range(s, e):
            segments[i] = f"attempt:{k}"
        correct = problem is not None and reading.answer is not None and reading.answer == problem.answer
        attempts.append(Attempt(k, s, e, text, reading.answer, correct, reading.malformed, reading.check_ok))
        if reading.malformed:
            flag(MALFORMED_ATTEMPT)

    for start, end, verdict in tags.decisions:
        if ended:
            break
        before = len(attempts)
        close_attempt(cursor, start)
        if len(attempts) == before:
            flag(EMPTY_ATTEMPT)
            attempts.append(Attempt(before, start, start, "", None, False, True, None))
        k = len(attempts) - 1
        decisions.append(Decision(k, start, end, verdict))
        for i in range(start, end):
            segments[i] = f"decision:{k}"
        cursor = end
        if verdict == STOP:
            ended = True

    if ended:
        tail = range(cursor, len(roles))
        eos = getattr(tokenizer, "eos_token_id", None)
        if any(roles[i] != "other" or (ids[i] != eos and i > cursor) for i in tail):
            flag(TRAILING_TOKENS)
        for i in tail:
            roles[i] = "other"
    else:
        before = len(attempts)
        close_attempt(cursor, len(ids))
        if len(attempts) > before:
            flag(MISSING_DECISION)
        elif decisions and decisions[-1].verdict == RESAMPLE:
            if max_attempts is not None and len(attempts) >= max_attempts:
                flag(CAP_REACHED)
            else:
                flag(MISSING_DECISION)
        if truncated:
            flag(TRUNCATED)

    final = attempts[-1].answer if attempts else None
    if attempts and final is None:
        flag(NO_ANSWER)
    if not attempts and len(ids) > prompt_len:
        flag(NO_ANSWER)
    correct = problem is not None and final is not None and final == problem.answer
    text = tokenizer.decode([t for t in ids[prompt_len:] if 0 <= t < vocab_size], skip_special_tokens=False)
    return Episode(
        problem,
        tuple(ids),
        tuple(roles),
        tuple(segments),
        prompt_len,
        tuple(attempts),
        tuple(decisions),
        final,
        correct,
        tuple(flags),
        text,
        tokens,
    )
