"""Arithmetic tasks: problems, seeded generators, fixed test sets, a parser for typed prompts.

A `Problem` is one question (a op b). A `TaskSpec` names a size such as "3x4" (a 3-digit times a
4-digit number) or "3+4" (addition). Test sets are fixed: version 1 lives in
`ds_core/data/testsets_v1.json` and is regenerated bit-for-bit by `generate_test_sets()`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ds_core.errors import UserError
from ds_core.paths import PACKAGE_DATA

OPS = {"*": "×", "+": "+"}
MIN_DIGITS, MAX_DIGITS = 1, 12
TEST_SET_VERSION = 1
TEST_SET_SIZES = tuple(f"3x{n}" for n in range(3, 10))
TRAIN_SIZES = ("3x3", "3x4")
OOD_SIZES = tuple(f"3x{n}" for n in range(5, 10))
TEST_SET_N = 100
_DATA = PACKAGE_DATA


class TaskError(UserError, ValueError):
    """A problem or size the user asked for cannot be read or is out of range."""


def _digits(x: int) -> int:
    return len(str(x))


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    op: str = "*"

    def __post_init__(self):
        if self.op not in OPS:
            raise TaskError(f"unknown operation {self.op!r}; supported: {', '.join(OPS)}")
        for name, v in (("a", self.a), ("b", self.b)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TaskError(f"operand {name} must be an integer, got {v!r}")
            if v < 0:
                raise TaskError(f"operand {name} must be non-negative, got {v}")
            if not MIN_DIGITS <= _digits(v) <= MAX_DIGITS:
                raise TaskError(f"operand {name}={v} has {_digits(v)} digits; supported {MIN_DIGITS}..{MAX_DIGITS}")

    @property
    def answer(self) -> int:
        return self.a * self.b if self.op == "*" else self.a + self.b

    @property
    def size(self) -> str:
        return f"{_digits(self.a)}{'x' if self.op == '*' else '+'}{_digits(self.b)}"

    @property
    def display(self) -> str:
        return f"{self.a} {OPS[self.op]} {self.b}"

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "op": self.op}

    @classmethod
    def from_dict(cls, d: dict) -> Problem:
        return cls(int(d["a"]), int(d["b"]), str(d.get("op", "*")))


@dataclass(frozen=True)
class TaskSpec:
    """A problem size: `a_digits` x `b_digits` digits, operation `op`."""

    a_digits: int
    b_digits: int
    op: str = "*"

    def __post_init__(self):
        if self.op not in OPS:
            raise TaskError(f"unknown operation {self.op!r}")
        for d in (self.a_digits, self.b_digits):
            if not MIN_DIGITS <= d <= MAX_DIGITS:
                raise TaskError(f"digit count {d} out of range {MIN_DIGITS}..{MAX_DIGITS}")

    @property
    def name(self) -> str:
        return f"{self.a_digits}{'x' if self.op == '*' else '+'}{self.b_digits}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        m = re.fullmatch(r"\s*([0-9]+)\s*([xX×*+])\s*([0-9]+)\s*", text or "")
        if not m:
            raise TaskError(f"cannot read size {text!r}: expected forms like '3x4' or '3+4'")
        return cls(int(m.group(1)), int(m.group(3)), "+" if m.group(2) == "+" else "*")

    def sample(self, rng: random.Random) -> Problem:
        def draw(d: int) -> int:
            return rng.randint(1 if d == 1 else 10 ** (d - 1), 10**d - 1)

        return Problem(draw(self.a_digits), draw(self.b_digits), self.op)


def parse_sizes(text: str) -> list[TaskSpec]:
    """'3x3-3x9' -> 3x3..3x9; '3x3,3x5' -> those two; ranges vary the second operand."""
    specs: list[TaskSpec] = []
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = TaskSpec.parse(lo_s), TaskSpec.parse(hi_s)
            if lo.op != hi.op or lo.a_digits != hi.a_digits or lo.b_digits > hi.b_digits:
                raise TaskError(f"cannot read range {part!r}: expected like '3x3-3x9'")
            specs += [TaskSpec(lo.a_digits, n, lo.op) for n in range(lo.b_digits, hi.b_digits + 1)]
        else:
            specs.append(TaskSpec.parse(part))
    if not specs:
        raise TaskError("no sizes given: expected forms like '3x3-3x9' or '3x3,3x4'")
    return specs


def sample_problems(spec: TaskSpec | str, n: int, seed: int) -> list[Problem]:
    """`n` problems of one size, the same for the same (spec, n, seed)."""
    spec = TaskSpec.parse(spec) if isinstance(spec, str) else spec
    rng = random.Random(f"ds-lens:{spec.name}:{seed}")
    return [spec.sample(rng) for _ in range(n)]


def sample_mixture(sizes: list[TaskSpec | str], n: int, seed: int) -> list[Problem]:
    """`n` problems with sizes drawn uniformly from `sizes` (a training distribution)."""
    specs = [TaskSpec.parse(s) if isinstance(s, str) else s for s in sizes]
    rng = random.Random(f"ds-lens:mix:{','.join(s.name for s in specs)}:{seed}")
    return [rng.choice(specs).sample(rng) for _ in range(n)]


def task_name(spec: TaskSpec | str, n: int, seed: int) -> str:
    """The task part of a run key: '3x4@test-v1' (the fixed test set, used when the size has one
    and n <= 100) or '3x10@sampled-0' (n problems sampled with `seed`)."""
    spec = TaskSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.name in TEST_SET_SIZES and n <= TEST_SET_N:
        return f"{spec.name}@test-v{TEST_SET_VERSION}"
    return f"{spec.name}@sampled-{seed}"


def task_size(task: str) -> str:
    """The size of a task name: '3x4@test-v1' -> '3x4'."""
    return task.split("@", 1)[0]


def generate_test_sets(version: int = TEST_SET_VERSION) -> dict[str, list[Problem]]:
    """Regenerate the fixed test sets from their seeds (used to build and to verify the file)."""
    return {size: sample_problems(size, TEST_SET_N, seed=10_000 * version) for size in TEST_SET_SIZES}


@lru_cache(maxsize=4)
def _load_test_sets(version: int) -> dict[str, tuple[Problem, ...]]:
    path = _DATA / f"testsets_v{version}.json"
    from ds_core.store import jsonread

    raw = jsonread.read(path, expect=dict)
    return {size: tuple(Problem.from_dict(p) for p in probs) for size, probs in raw["sets"].items()}


def test_set(size: str | TaskSpec, version: int = TEST_SET_VERSION) -> list[Problem]:
    """The fixed 100-problem test set of a size (3x3..3x9); other sizes raise TaskError."""
    name = size.name if isinstance(size, TaskSpec) else TaskSpec.parse(size).name
    sets = _load_test_sets(version)
    if name not in sets:
        raise TaskError(f"no fixed test set for {name}; available: {', '.join(sets)}")
    return list(sets[name])


def write_test_sets(version: int = TEST_SET_VERSION) -> Path:
    sets = generate_test_sets(version)
    path = _DATA / f"testsets_v{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": version, "n": TEST_SET_N, "sets": {k: [p.to_dict() for p in v] for k, v in sets.items()}}
    path.write_text(json.dumps(payload, indent=0, separators=(",", ":")) + "\n")
    return path


# --- typed prompts -----------------------------------------------------------------------------
_NUM = r"([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)"
_MUL = r"(?:\*|x|X|×|·|times|multiplied\s+by)"
_ADD = r"(?:\+|plus|added\s+to)"
_PROMPT_RE = re.compile(
    rf"^\s*(?:(?:what\s+is|what's|compute|calculate|evaluate)\s+)?{_NUM}\s*({_MUL}|{_ADD})\s*{_NUM}"
    r"\s*(?:=\s*\??)?\s*[?.!]?\s*$",
    re.IGNORECASE,
)
EXAMPLE_PROMPTS = ("123*4567", "123 x 4567", "123 × 4567 =", "What is 123 times 4567?", "12 + 345")


def parse_prompt(text: str) -> Problem:
    """Read a typed problem ('123*4567', '123 x 4567', '123 × 4567 =', 'What is 123 times 4567?').

    Raises TaskError with a message a user can act on for anything else.
    """
    if not isinstance(text, str):
        raise TaskError(f"expected text, got {type(text).__name__}")
    shown = text.strip()
    if len(shown) > 200:
        raise TaskError(f"prompt is {len(shown)} characters long; a problem fits in 200")
    m = _PROMPT_RE.match(text)
    if not m:
        if re.search(r"-\s*\d", shown):
            raise TaskError(f"cannot read {shown!r}: negative numbers and subtraction are not supported")
        raise TaskError(
            f"cannot read {shown!r} as a problem; expected forms like " + ", ".join(repr(e) for e in EXAMPLE_PROMPTS)
        )
    a_s, op_s, b_s = m.group(1), m.group(2), m.group(3)
    op = "+" if re.fullmatch(_ADD, op_s, re.IGNORECASE) else "*"
    a, b = (int(s.replace(",", "")) for s in (a_s, b_s))
    return Problem(a, b, op)


PROBLEM_SOURCES = ("test set", "typed", "random")


def pick_problem(source: str, *, size: str = "3x3", index: int = 0, text: str = "", seed: int = 0) -> Problem:
    """The problem a user picked: from a fixed test set (`size`, `index`), typed (`text`), or random
    of a `size` (drawn with `seed`). TaskError with a message a user can act on otherwise."""
    if source == "test set":
        probs = test_set(size)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(probs):
            raise TaskError(f"the {size} test set has problems 0..{len(probs) - 1}, not {index!r}")
        return probs[index]
    if source == "typed":
        if not str(text).strip():
            raise TaskError("type a problem first, e.g. 123*4567")
        return parse_prompt(str(text))
    if source == "random":
        return sample_problems(TaskSpec.parse(str(size)), 1, int(seed))[0]
    raise TaskError(f"unknown problem source {source!r}; choose one of {', '.join(PROBLEM_SOURCES)}")
