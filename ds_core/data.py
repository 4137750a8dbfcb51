"""Training-data recipes: which traces each condition is trained on.

- `base`: "pretraining" — one correct attempt then [STOP]; 1- and 2-digit first operands times
  1..9-digit numbers, 3-digit first operands only up to 3x4; sizes with a <= 4-digit second
  operand 4x as likely. A short budget leaves it imperfect in distribution, and 3x5..3x9 are new
  compositions of known steps, so its accuracy falls with size.
- `sft`: SFT without reflection — one correct attempt then [STOP], on 3x3/3x4 only.
- `reflection`: SFT with reflection — on 3x3/3x4, 0..2 wrong attempts, each followed by
  [RESAMPLE], then a correct attempt and [STOP]. Wrong attempts are *injected corruptions*: one
  digit of one partial product is changed and everything after it is recomputed from the wrong
  value, the way a slip propagates; the check is then written faithfully, so it disagrees
  (a changed digit d·10^k with d in 1..8 always changes the answer mod 9). This is the "SFT echo
  chamber" design decision: the model only ever sees errors of this one kind, with a check that
  catches them, never its own mistakes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .formats import DSFormat, Step, worked_steps
from .tasks import Problem, TaskSpec

# 1- and 2-digit first operands with up to 9-digit second operands, 3-digit ones only up to 3x4:
# 3x5..3x9 stay out of distribution for every condition (the base can compose what it knows,
# but has never practised it)
BASE_SIZES = tuple((a, b) for a in (1, 2) for b in range(1, 10)) + tuple((3, b) for b in range(1, 5))
TRAIN_SIZES = ((3, 3), (3, 4))


@dataclass(frozen=True)
class Example:
    problem: Problem
    text: str                 # the full trace, prompt included
    n_wrong: int = 0          # injected wrong attempts before the correct one


def corrupt_steps(problem: Problem, rng: random.Random) -> list[Step]:
    """The worked steps with one digit of one partial product changed, propagated to the end."""
    steps = worked_steps(problem)
    i = rng.randrange(len(steps))
    s = steps[i]
    shifted = s.partial // 10 ** i
    n_digits = len(str(shifted)) if shifted else 1
    k = rng.randrange(n_digits)
    digit = (shifted // 10 ** k) % 10
    choices = [d for d in range(10) if d != digit and (d - digit) % 9 != 0]
    if k == n_digits - 1 and n_digits > 1:
        choices = [d for d in choices if d != 0]  # keep the leading digit non-zero
    new_digit = rng.choice(choices)
    wrong = (shifted + (new_digit - digit) * 10 ** k) * 10 ** i
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


def _draw(sizes, weights, rng) -> Problem:
    a, b = rng.choices(sizes, weights)[0]
    return TaskSpec(a, b).sample(rng)


def base_examples(n: int, seed: int, fmt: DSFormat | None = None) -> list[Example]:
    fmt = fmt or DSFormat()
    rng = random.Random(f"base:{seed}")
    weights = [4.0 if b <= 4 else 1.0 for _, b in BASE_SIZES]
    out = []
    for _ in range(n):
        p = _draw(BASE_SIZES, weights, rng)
        out.append(Example(p, fmt.trace_text(p, [fmt.attempt_text(p)])))
    return out


def sft_examples(n: int, seed: int, fmt: DSFormat | None = None) -> list[Example]:
    fmt = fmt or DSFormat()
    rng = random.Random(f"sft:{seed}")
    out = []
    for _ in range(n):
        p = _draw(TRAIN_SIZES, [1, 1], rng)
        out.append(Example(p, fmt.trace_text(p, [fmt.attempt_text(p)])))
    return out


def reflection_examples(n: int, seed: int, fmt: DSFormat | None = None,
                        wrong_weights=(0.4, 0.4, 0.2)) -> list[Example]:
    """0, 1 or 2 injected wrong attempts (probabilities `wrong_weights`), then a correct one."""
    fmt = fmt or DSFormat()
    rng = random.Random(f"reflection:{seed}")
    out = []
    for _ in range(n):
        p = _draw(TRAIN_SIZES, [1, 1], rng)
        k = rng.choices(range(len(wrong_weights)), wrong_weights)[0]
        attempts = [wrong_attempt(fmt, p, rng) for _ in range(k)] + [fmt.attempt_text(p)]
        out.append(Example(p, fmt.trace_text(p, attempts), k))
    return out


RECIPES = {"base": base_examples, "sft": sft_examples, "reflection": reflection_examples}


def demo_episode(problem: Problem | None = None, seed: int = 3, tokenizer=None):
    """A real, parsed two-attempt episode (a corrupted attempt, RESAMPLE, the correct one, STOP):
    the DS picture the home page draws. Built from the format and tokenizer, no model needed."""
    from .episode import parse_episode
    from .tokenizer import build_tokenizer
    tokenizer = tokenizer or build_tokenizer()
    fmt = DSFormat()
    problem = problem or Problem(321, 4567)
    text = fmt.trace_text(problem, [wrong_attempt(fmt, problem, random.Random(seed)),
                                    fmt.attempt_text(problem)])
    prompt_len = len(tokenizer(fmt.prompt_text(problem), add_special_tokens=False)["input_ids"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return parse_episode(problem, ids, prompt_len, tokenizer, fmt)
