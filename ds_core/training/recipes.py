"""Training-data recipes: which traces each condition is trained on.

- `base`: "pretraining" — one correct attempt then [STOP]; 1- and 2-digit first operands times
  1..9-digit numbers, 3-digit first operands only up to 3x4; sizes with a <= 4-digit second
  operand 4x as likely. A short budget leaves it imperfect in distribution, and 3x5..3x9 are new
  compositions of known steps, so its accuracy falls with size.
- `lab_base`: the DS lab's base (ds_core.training.lab): `base`'s sizes, 3x4 at a quarter of its
  weight, plus practice on the two longest sizes only (3x8 at 0.5, 3x9 at 4: LAB_OOD_WEIGHTS, against
  4 for a <= 4-digit second operand); 3x5..3x7 are never practised. Trained briefly (the lab's base
  condition), its out-of-distribution sampling is weak but alive, like the paper's base (RESULTS.md,
  "The base recipe: what was tried", recipe N1).
- `sft`: SFT without reflection — one correct attempt then [STOP], on 3x3/3x4 only.
- `reflection`: SFT with reflection — on 3x3/3x4, 0..2 wrong attempts, each followed by
  [RESAMPLE], then a correct attempt and [STOP]. Wrong attempts are injected corruptions
  (ds_core.episodes.traces). This is the "SFT echo chamber" design decision: the model only ever
  sees errors of this one kind, with a check that catches them, never its own mistakes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import Problem, TaskSpec
from ds_core.episodes.traces import wrong_attempt

# 1- and 2-digit first operands with up to 9-digit second operands, 3-digit ones only up to 3x4:
# 3x5..3x9 stay out of distribution for every condition (the base can compose what it knows,
# but has never practised it)
BASE_SIZES = tuple((a, b) for a in (1, 2) for b in range(1, 10)) + tuple((3, b) for b in range(1, 5))
TRAIN_SIZES = ((3, 3), (3, 4))
LAB_OOD_SIZES = tuple((3, b) for b in range(5, 10))
LAB_OOD_WEIGHTS = (0.0, 0.0, 0.0, 0.5, 4.0)  # 3x5..3x9, against 4 for a <= 4-digit second operand
LAB_ID_SIZES = ((3, 3), (3, 4))
LAB_ID_WEIGHTS = (4.0, 1.0)  # 3x3, 3x4 (4, 4: like every other size with a <= 4-digit second operand)


@dataclass(frozen=True)
class Example:
    problem: Problem
    text: str  # the full trace, prompt included
    n_wrong: int = 0  # injected wrong attempts before the correct one


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


def lab_base_examples(
    n: int,
    seed: int,
    fmt: DSFormat | None = None,
    ood_weights: tuple[float, ...] = LAB_OOD_WEIGHTS,
    id_weights: tuple[float, ...] = LAB_ID_WEIGHTS,
) -> list[Example]:
    """`base`'s sizes plus 3x5..3x9 at `ood_weights`, with 3x3 and 3x4 at `id_weights` (4, 4 is
    `base`'s own weighting)."""
    if len(ood_weights) != len(LAB_OOD_SIZES) or min(ood_weights) < 0:
        raise ValueError(f"ood_weights: one non-negative weight per size of {LAB_OOD_SIZES}")
    if len(id_weights) != len(LAB_ID_SIZES) or min(id_weights) < 0:
        raise ValueError(f"id_weights: one non-negative weight per size of {LAB_ID_SIZES}")
    fmt = fmt or DSFormat()
    rng = random.Random(f"base:{seed}")
    sizes = BASE_SIZES + LAB_OOD_SIZES
    own = dict(zip(LAB_ID_SIZES, id_weights))
    weights = [own.get(s, 4.0 if s[1] <= 4 else 1.0) for s in BASE_SIZES] + list(ood_weights)
    out = []
    for _ in range(n):
        p = _draw(sizes, weights, rng)
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


def reflection_examples(n: int, seed: int, fmt: DSFormat | None = None, wrong_weights=(0.4, 0.4, 0.2)) -> list[Example]:
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


RECIPES = {"base": base_examples, "lab_base": lab_base_examples, "sft": sft_examples, "reflection": reflection_examples}
