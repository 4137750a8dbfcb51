"""Writing DS-format traces without a model: injected wrong attempts, teacher-forced episodes.

A wrong attempt is an *injected corruption*: one digit of one partial product is changed and
everything after it is recomputed from the wrong value, the way a slip propagates; the check is
then written faithfully, so it disagrees (a changed digit d*10^k with d in 1..8 always changes the
answer mod 9). The training recipes (ds_core.training.recipes), the length sweep and the home
page's picture of an episode are built from these.
"""

from __future__ import annotations

import random

from ds_core.episodes.episode import parse_episode
from ds_core.episodes.formats import DSFormat, Step, worked_steps
from ds_core.episodes.tasks import Problem
from ds_core.episodes.tokenizer import build_tokenizer


def corrupt_steps(problem: Problem, rng: random.Random) -> list[Step]:
    """The worked steps with one digit of one partial product changed, propagated to the end."""
    steps = worked_steps(problem)
    i = rng.randrange(len(steps))
    s = steps[i]
    shifted = s.partial // 10**i
    n_digits = len(str(shifted)) if shifted else 1
    k = rng.randrange(n_digits)
    digit = (shifted // 10**k) % 10
    choices = [d for d in range(10) if d != digit and (d - digit) % 9 != 0]
    if k == n_digits - 1 and n_digits > 1:
        choices = [d for d in choices if d != 0]  # keep the leading digit non-zero
    new_digit = rng.choice(choices)
    wrong = (shifted + (new_digit - digit) * 10**k) * 10**i
    out, total = [], 0
    for j, st in enumerate(steps):
        partial = wrong if j == i else st.partial
        total += partial
        out.append(Step(st.digit, partial, total if j else None))
    return out


def wrong_attempt(fmt: DSFormat, problem: Problem, rng: random.Random) -> str:
    if problem.op != "*":
        answer = problem.answer + rng.choice([d for d in range(-8, 9) if d % 9])
        return fmt.attempt_text(problem, steps=[], answer=max(answer, 0))
    steps = corrupt_steps(problem, rng)
    answer = steps[-1].running if steps[-1].running is not None else steps[-1].partial
    return fmt.attempt_text(problem, steps=steps, answer=answer)


def demo_episode(problem: Problem | None = None, seed: int = 3, tokenizer=None):
    """A real, parsed two-attempt episode (a corrupted attempt, RESAMPLE, the correct one, STOP):
    the DS picture the home page draws. Built from the format and tokenizer, no model needed."""
    tokenizer = tokenizer or build_tokenizer()
    fmt = DSFormat()
    problem = problem or Problem(321, 4567)
    text = fmt.trace_text(problem, [wrong_attempt(fmt, problem, random.Random(seed)), fmt.attempt_text(problem)])
    prompt_len = len(tokenizer(fmt.prompt_text(problem), add_special_tokens=False)["input_ids"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return parse_episode(problem, ids, prompt_len, tokenizer, fmt)


def trace_episode(problem, tokenizer, n_wrong: int = 0, seed: int = 0):
    """A teacher-forced DS-format episode of `problem`: `n_wrong` injected wrong attempts, each
    followed by [RESAMPLE], then the correct attempt, [STOP], <eos>. Roles from the format's
    tagger, as for a sampled episode."""
    fmt = DSFormat()
    rng = random.Random(f"balance:{problem.a}{problem.op}{problem.b}:{seed}")
    attempts = [wrong_attempt(fmt, problem, rng) for _ in range(int(n_wrong))] + [fmt.attempt_text(problem)]
    ids = tokenizer(fmt.trace_text(problem, attempts), add_special_tokens=False)["input_ids"]
    return fmt.parse(problem, ids, len(fmt.prompt_ids(tokenizer, problem)), tokenizer)
