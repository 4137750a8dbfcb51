"""Episode formats: how a problem becomes a prompt, how an attempt is written and read.

Design notes: docs/DESIGN.md, section `ds_core.episodes.formats`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from ds_core.episodes.episode import AttemptReading, Episode, parse_episode
from ds_core.episodes.roles import SpecialTokenTagger
from ds_core.episodes.tasks import Problem
from ds_core.episodes.text_format import TextFormat
from ds_core.episodes.tokenizer import BOS, EOS, RESAMPLE_TOKEN, STOP_TOKEN, decision_token_ids


def rev(x: int) -> str:
    """123 -> '321' (least significant digit first)."""
    return str(x)[::-1]


def unrev(s: str) -> int:
    return int(s[::-1])


def running_mod9(digits: str) -> str:
    out, acc = [], 0
    for ch in digits:
        acc = (acc + int(ch)) % 9
        out.append(str(acc))
    return "".join(out)


@dataclass(frozen=True)
class Step:
    digit: int  # a_i
    partial: int  # a_i * b * 10^i (shifted)
    running: int | None  # running sum after this step (None for the first step)


def worked_steps(problem: Problem) -> list[Step]:
    """The correct worked steps of a multiplication (empty for addition)."""
    if problem.op != "*":
        return []
    steps, total = [], 0
    for i, ch in enumerate(rev(problem.a)):
        partial = int(ch) * problem.b * 10**i
        total += partial
        steps.append(Step(int(ch), partial, total if i else None))
    return steps


class EpisodeFormat(Protocol):
    """How a problem becomes a prompt and how a generation is read back into an Episode."""

    name: str
    tagger: object  # a ds_core.episodes.roles.RoleTagger
    writes_traces: bool  # can write worked attempts (teacher-forced traces, training data)

    def prompt_text(self, problem: Problem) -> str: ...

    def prompt_ids(self, tokenizer, problem: Problem) -> list[int]: ...

    def token_budget(self, problem: Problem | None, max_attempts: int) -> int: ...

    def min_tokens(self, tokenizer, problem: Problem) -> int: ...

    def attempt_text(self, ids, tokenizer) -> str: ...

    def read_attempt(self, text: str, problem: Problem | None) -> AttemptReading: ...

    def parse(self, problem, token_ids, prompt_len, tokenizer, **kw) -> Episode: ...

    def key(self) -> dict | None: ...  # its settings when not the default (part of a run's key)


_DS_ATTEMPT = re.compile(
    r"^(?:(?P<steps>\d:\d+(?:\+\d+)?(?:;\d:\d+(?:\+\d+)?)*))?=(?P<ans>\d+)"
    r"#(?P<ra>\d+)(?P<op>[*+])(?P<rb>\d+)>(?P<p>\d),(?P<rans>\d+)$"
)
_DS_ANSWER = re.compile(r"=(\d+)(?:#|$)")


class DSFormat:
    """DS-Lens' own format: reversed numbers, worked steps, a mod-9 check, one decision token."""

    name = "ds"
    writes_traces = True
    max_digits_per_number = 25

    def __init__(self):
        self.tagger = SpecialTokenTagger(STOP_TOKEN, RESAMPLE_TOKEN)

    # --- writing ---
    def prompt_text(self, problem: Problem) -> str:
        return f"{BOS}{rev(problem.a)}{problem.op}{rev(problem.b)}="

    def prompt_ids(self, tokenizer, problem: Problem) -> list[int]:
        return list(tokenizer(self.prompt_text(problem), add_special_tokens=False)["input_ids"])

    def token_budget(self, problem: Problem | None, max_attempts: int) -> int:
        """1.5x a correct attempt per try (256 tokens a try without a problem)."""
        if problem is None:
            return 256 * max_attempts
        return int(max_attempts * (1.5 * len(self.attempt_text(problem)) + 2)) + 8

    def min_tokens(self, tokenizer, problem: Problem) -> int:
        """Tokens a problem needs at least: its prompt, one correct attempt, one decision token."""
        return len(self.prompt_ids(tokenizer, problem)) + len(self.attempt_text(problem)) + 1

    def check_text(self, problem: Problem, answer: int) -> str:
        ra, rb, rans = running_mod9(rev(problem.a)), running_mod9(rev(problem.b)), running_mod9(rev(answer))
        p = (int(ra[-1]) * int(rb[-1]) if problem.op == "*" else int(ra[-1]) + int(rb[-1])) % 9
        return f"#{ra}{problem.op}{rb}>{p},{rans}"

    def steps_text(self, problem: Problem, steps: list[Step] | None = None) -> str:
        steps = worked_steps(problem) if steps is None else steps
        parts = []
        for i, s in enumerate(steps):
            written = "0" * i + rev(s.partial // 10**i) if s.partial else "0" * (i + 1)
            parts.append(f"{s.digit}:{written}" + (f"+{rev(s.running)}" if s.running is not None else ""))
        return ";".join(parts)

    def attempt_text(
        self, ids_or_problem, tokenizer=None, *, steps: list[Step] | None = None, answer: int | None = None
    ) -> str:
        """Two uses: attempt_text(ids, tokenizer) decodes an attempt's tokens; attempt_text(problem,
        steps=..., answer=...) writes one (correct by default; the check always matches the
        written answer, as a model that checks its own answer would write it)."""
        if not isinstance(ids_or_problem, Problem):
            return tokenizer.decode(list(ids_or_problem), skip_special_tokens=False)
        problem = ids_or_problem
        steps = worked_steps(problem) if steps is None else steps
        if answer is None:
            answer = (
                steps[-1].running
                if steps and steps[-1].running is not None
                else (steps[-1].partial if steps else problem.answer)
            )
        return f"{self.steps_text(problem, steps)}={rev(answer)}{self.check_text(problem, answer)}"

    def key(self) -> dict | None:
        return None  # one fixed format

    def verdict_token(self, stop: bool) -> str:
        return STOP_TOKEN if stop else RESAMPLE_TOKEN

    def trace_text(self, problem: Problem, attempts: list[str], final_stop: bool = True) -> str:
        """A full training trace: prompt, attempts joined by [RESAMPLE], then [STOP]<eos>."""
        body = RESAMPLE_TOKEN.join(attempts)
        return self.prompt_text(problem) + body + (STOP_TOKEN + EOS if final_stop else RESAMPLE_TOKEN)

    # --- reading ---
    def read_attempt(self, text: str, problem: Problem | None) -> AttemptReading:
        m = _DS_ATTEMPT.match(text)
        if m:
            ans = m.group("ans")
            answer = unrev(ans) if len(ans) <= self.max_digits_per_number else None
            check_ok = m.group("rans")[-1] == m.group("p")
            return AttemptReading(answer, answer is None, check_ok)
        found = _DS_ANSWER.findall(text)
        answer = unrev(found[0]) if found and len(found[0]) <= self.max_digits_per_number else None
        return AttemptReading(answer, True, None)

    def parse(self, problem, token_ids, prompt_len, tokenizer, **kw) -> Episode:
        return parse_episode(problem, token_ids, prompt_len, tokenizer, self, **kw)


def format_for(tokenizer) -> EpisodeFormat:
    """Our format when the tokenizer has DS-Lens' decision tokens; else the text format, through
    the tokenizer's chat template when it has one."""
    if decision_token_ids(tokenizer):
        return DSFormat()
    return TextFormat.for_tokenizer(tokenizer)
