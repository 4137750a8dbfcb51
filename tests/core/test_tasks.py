"""ds_core.episodes.tasks: Problem validation, sizes, seeded generators, the fixed test sets, typed prompts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import ds_core.episodes.tasks as tasks
from ds_core.episodes.tasks import (
    EXAMPLE_PROMPTS,
    MAX_DIGITS,
    OOD_SIZES,
    TEST_SET_N,
    TEST_SET_SIZES,
    TRAIN_SIZES,
    Problem,
    TaskError,
    TaskSpec,
    generate_test_sets,
    parse_prompt,
    parse_sizes,
    sample_mixture,
    sample_problems,
)
from ds_core.episodes.tasks import test_set as load_test_set
from ds_core.paths import PACKAGE_DATA

REPO = Path(__file__).resolve().parents[2]


# --- Problem ----------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [(0, 0), (1, 9), (9, 1), (10**11, 10**12 - 1), (123, 4567)])
def test_problem_accepts_1_to_12_digits(a, b):
    p = Problem(a, b)
    assert (p.a, p.b, p.op) == (a, b, "*")


@pytest.mark.parametrize(
    "a,b,needle",
    [
        (10**12, 1, "13 digits"),
        (1, 10**12, "13 digits"),
        (10**20, 5, "21 digits"),
        (-1, 5, "non-negative"),
        (5, -123, "non-negative"),
        (True, 5, "integer"),
        (5, False, "integer"),
        (2.0, 3, "integer"),
        ("12", 3, "integer"),
        (None, 3, "integer"),
    ],
)
def test_problem_rejects_bad_operands(a, b, needle):
    with pytest.raises(TaskError) as ei:
        Problem(a, b)
    assert needle in str(ei.value)


@pytest.mark.parametrize("op", ["-", "/", "x", "×", "", "**", None])
def test_problem_rejects_bad_op(op):
    with pytest.raises(TaskError, match="unknown operation"):
        Problem(2, 3, op)


def test_task_error_is_value_error():
    assert issubclass(TaskError, ValueError)


@pytest.mark.parametrize(
    "a,b,op,answer,size,display",
    [
        (123, 4567, "*", 561741, "3x4", "123 × 4567"),
        (12, 345, "+", 357, "2+3", "12 + 345"),
        (0, 7, "*", 0, "1x1", "0 × 7"),
        (999_999_999_999, 999_999_999_999, "*", 999_999_999_999**2, "12x12", None),
        (999_999_999_999, 1, "+", 10**12, "12+1", None),
    ],
)
def test_problem_answer_size_display(a, b, op, answer, size, display):
    p = Problem(a, b, op)
    assert p.answer == answer
    assert p.size == size
    if display is not None:
        assert p.display == display


def test_problem_frozen_hashable_and_dict_round_trip():
    p = Problem(12, 345, "+")
    assert Problem.from_dict(p.to_dict()) == p
    assert Problem.from_dict({"a": "12", "b": 345}) == Problem(12, 345, "*")  # op defaults to *
    assert len({p, Problem(12, 345, "+"), Problem(12, 345)}) == 2
    with pytest.raises(Exception):
        p.a = 5  # frozen
    with pytest.raises(TaskError):
        Problem.from_dict({"a": -3, "b": 4})


# --- TaskSpec / parse_sizes --------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("3x4", TaskSpec(3, 4, "*")),
        ("3*4", TaskSpec(3, 4, "*")),
        (" 3 x 4 ", TaskSpec(3, 4, "*")),
        ("3+4", TaskSpec(3, 4, "+")),
        ("12x12", TaskSpec(12, 12, "*")),
        ("1x1", TaskSpec(1, 1, "*")),
    ],
)
def test_taskspec_parse(text, expected):
    spec = TaskSpec.parse(text)
    assert spec == expected
    assert TaskSpec.parse(spec.name) == spec
    assert str(spec) == spec.name


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "expected forms like '3x4'"),
        (None, "expected forms like '3x4'"),
        ("3x", "cannot read size '3x'"),
        ("x4", "cannot read size 'x4'"),
        ("3-4", "cannot read size '3-4'"),
        ("three x four", "cannot read size"),
        ("3x13", "digit count 13 out of range 1..12"),
        ("0x3", "digit count 0 out of range"),
        ("3/4", "cannot read size"),
    ],
)
def test_taskspec_parse_rejects(text, needle):
    with pytest.raises(TaskError) as ei:
        TaskSpec.parse(text)
    assert needle in str(ei.value)


def test_taskspec_validation():
    with pytest.raises(TaskError):
        TaskSpec(0, 3)
    with pytest.raises(TaskError):
        TaskSpec(3, MAX_DIGITS + 1)
    with pytest.raises(TaskError, match="unknown operation"):
        TaskSpec(3, 3, "-")
    assert TaskSpec(3, 4, "+").name == "3+4"


def test_parse_sizes_range_and_list():
    specs = parse_sizes("3x3-3x9")
    assert len(specs) == 7
    assert [s.name for s in specs] == [f"3x{n}" for n in range(3, 10)] == list(TEST_SET_SIZES)
    assert [s.name for s in parse_sizes("3x3,3x5")] == ["3x3", "3x5"]
    assert [s.name for s in parse_sizes(" 3x3 , 3x5 ,")] == ["3x3", "3x5"]
    assert [s.name for s in parse_sizes("2+2-2+4")] == ["2+2", "2+3", "2+4"]
    assert [s.name for s in parse_sizes("1x1,3x3-3x4")] == ["1x1", "3x3", "3x4"]
    assert [s.name for s in parse_sizes("3x5-3x5")] == ["3x5"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "no sizes given"),
        (None, "no sizes given"),
        (",,", "no sizes given"),
        ("3x9-3x3", "cannot read range '3x9-3x3'"),  # descending
        ("3x3-4x5", "cannot read range"),  # first operand varies
        ("3x3-3+5", "cannot read range"),  # op changes
        ("3x3-", "cannot read size ''"),
        ("3x3-3x9-3x10", "cannot read size '3x9-3x10'"),
        ("abc", "cannot read size 'abc'"),
        ("3x3,foo", "cannot read size 'foo'"),
        ("3x3-3x13", "digit count 13"),
    ],
)
def test_parse_sizes_rejects_with_helpful_message(text, needle):
    with pytest.raises(TaskError) as ei:
        parse_sizes(text)
    msg = str(ei.value)
    assert needle in msg
    assert "expected" in msg or "digit count" in msg


# --- seeded generators -------------------------------------------------------------------------
def test_sample_problems_deterministic():
    a = sample_problems("3x4", 50, seed=1)
    assert a == sample_problems("3x4", 50, seed=1)
    assert a == sample_problems(TaskSpec(3, 4), 50, seed=1)
    assert a != sample_problems("3x4", 50, seed=2)
    assert sample_problems("3x4", 10, seed=1) == a[:10]  # prefix-stable in n
    # different sizes with the same seed are not the same stream shifted
    assert [p.a for p in sample_problems("3x5", 50, seed=1)] != [p.a for p in a]
    assert sample_problems("3x4", 0, seed=1) == []


def test_sample_problems_pinned_values():
    # string seeds make random.Random deterministic across processes and Python versions
    assert sample_problems("3x4", 3, seed=0) == [Problem(762, 4798), Problem(192, 8656), Problem(849, 4909)]


@pytest.mark.parametrize("op", ["*", "+"])
def test_sample_problems_digit_counts_exact(op):
    for d in range(1, MAX_DIGITS + 1):
        e = MAX_DIGITS + 1 - d
        spec = TaskSpec(d, e, op)
        probs = sample_problems(spec, 60, seed=d)
        assert len(probs) == 60
        for p in probs:
            assert (len(str(p.a)), len(str(p.b)), p.op) == (d, e, op)
            assert p.size == spec.name
        assert len(set(probs)) > 1
    ones = {p.a for p in sample_problems("1x1", 300, seed=0)}
    assert ones == set(range(1, 10))  # one-digit draws are 1..9 (never 0)


def test_sample_mixture():
    mix = sample_mixture(["3x3", "3x4"], 2000, seed=0)
    assert mix == sample_mixture([TaskSpec(3, 3), "3x4"], 2000, seed=0)
    assert mix != sample_mixture(["3x3", "3x4"], 2000, seed=1)
    counts = Counter(p.size for p in mix)
    assert set(counts) == {"3x3", "3x4"}
    assert 850 <= counts["3x3"] <= 1150  # ~uniform
    assert sample_mixture(["3x3", "3x4"], 3, seed=0) == [Problem(175, 362), Problem(520, 8807), Problem(574, 1712)]
    ops = Counter(p.op for p in sample_mixture(["2+2", "2x2"], 400, seed=3))
    assert ops["+"] > 100 and ops["*"] > 100
    with pytest.raises(TaskError):
        sample_mixture(["3x3", "nope"], 5, seed=0)


def test_size_constants():
    assert TRAIN_SIZES + OOD_SIZES == TEST_SET_SIZES
    assert TEST_SET_SIZES == tuple(f"3x{n}" for n in range(3, 10))


# --- fixed test sets -------------------------------------------------------------------------
FIRST_LAST = {  # pins the generator itself, not just file == generator
    "3x3": ((182, 575), (418, 847)),
    "3x4": ((328, 5189), (243, 3751)),
    "3x5": ((899, 22037), (335, 39904)),
    "3x6": ((602, 559869), (262, 501606)),
    "3x7": ((536, 5961202), (977, 2830791)),
    "3x8": ((349, 17335742), (759, 94685331)),
    "3x9": ((763, 861524094), (870, 297241257)),
}


@pytest.mark.parametrize("size", TEST_SET_SIZES)
def test_fixed_test_set_shape(size):
    probs = load_test_set(size)
    assert len(probs) == TEST_SET_N == 100
    assert all(isinstance(p, Problem) and p.op == "*" and p.size == size for p in probs)
    assert len(set(probs)) == len(probs), f"duplicate problems in test set {size}"
    first, last = FIRST_LAST[size]
    assert ((probs[0].a, probs[0].b), (probs[-1].a, probs[-1].b)) == (first, last)
    assert load_test_set(TaskSpec.parse(size)) == probs


def test_generated_test_sets_equal_file():
    gen = generate_test_sets()
    assert list(gen) == list(TEST_SET_SIZES)
    for size, probs in gen.items():
        assert probs == load_test_set(size), f"testsets_v1.json drifted from generate_test_sets() ({size})"
    raw = json.loads((PACKAGE_DATA / "testsets_v1.json").read_text())
    assert raw["version"] == 1 and raw["n"] == 100
    assert list(raw["sets"]) == list(TEST_SET_SIZES)


def test_write_test_sets_reproduces_file_bytes(tmp_path, monkeypatch):
    real = PACKAGE_DATA / "testsets_v1.json"
    monkeypatch.setattr(tasks, "_DATA", tmp_path)
    out = tasks.write_test_sets()
    assert out == tmp_path / "testsets_v1.json"
    assert out.read_bytes() == real.read_bytes()


def test_test_sets_disjoint_and_copy_safe():
    seen = set()
    for size in TEST_SET_SIZES:
        s = set(load_test_set(size))
        assert not (s & seen)
        seen |= s
    probs = load_test_set("3x3")
    probs.clear()
    assert len(load_test_set("3x3")) == 100  # returns a copy; the cache is not mutated


@pytest.mark.parametrize(
    "size,needle",
    [
        ("3x10", "no fixed test set for 3x10"),
        ("2x3", "available: 3x3"),
        ("3+3", "no fixed test set for 3+3"),
        ("bogus", "cannot read size"),
    ],
)
def test_test_set_unknown_size(size, needle):
    with pytest.raises(TaskError) as ei:
        load_test_set(size)
    assert needle in str(ei.value)


# --- typed prompts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("123*4567", Problem(123, 4567)),
        ("123 x 4567", Problem(123, 4567)),
        ("123x4567", Problem(123, 4567)),
        ("123 × 4567 =", Problem(123, 4567)),
        ("123 × 4567 = ?", Problem(123, 4567)),
        ("What is 123 times 4567?", Problem(123, 4567)),
        ("what is 123 times 4567", Problem(123, 4567)),
        ("WHAT IS 123 TIMES 4567?", Problem(123, 4567)),
        ("123 X 4567", Problem(123, 4567)),
        ("123 multiplied by 4567", Problem(123, 4567)),
        ("compute 2*3", Problem(2, 3)),
        ("Calculate 2 · 3.", Problem(2, 3)),
        ("12 + 345", Problem(12, 345, "+")),
        ("12+345=", Problem(12, 345, "+")),
        ("what's 12 plus 345", Problem(12, 345, "+")),
        ("What's 12 plus 345?", Problem(12, 345, "+")),
        ("12 added to 345", Problem(12, 345, "+")),
        ("1,234 * 56", Problem(1234, 56)),
        ("999,999,999,999 * 1", Problem(999_999_999_999, 1)),
        ("  123   *   4567  ", Problem(123, 4567)),
        ("\t123*4567\n", Problem(123, 4567)),
        ("123\t×\t4567", Problem(123, 4567)),
        ("12*3\n\n", Problem(12, 3)),
        ("0 * 5", Problem(0, 5)),
    ],
)
def test_parse_prompt_accepts(text, expected):
    assert parse_prompt(text) == expected


def test_example_prompts_all_parse():
    for e in EXAMPLE_PROMPTS:
        assert isinstance(parse_prompt(e), Problem)


@pytest.mark.parametrize(
    "text,needles",
    [
        ("", ["cannot read ''", "expected forms like", "'123*4567'"]),
        ("   ", ["cannot read ''", "expected forms like"]),
        ("hello", ["cannot read 'hello'", "expected forms like", "'12 + 345'"]),
        ("12 - 3", ["subtraction", "not supported"]),
        ("-5 * 3", ["negative", "not supported"]),
        ("5 * -3", ["negative", "not supported"]),
        ("123*", ["cannot read '123*'", "expected forms like"]),
        ("*4567", ["cannot read", "expected forms like"]),
        ("12*3*4", ["cannot read", "expected forms like"]),
        ("12 / 3", ["cannot read", "expected forms like"]),
        ("1e3*2", ["cannot read", "expected forms like"]),
        ("1234567890123 * 2", ["13 digits", "1..12"]),
        ("2 * 1234567890123", ["13 digits", "1..12"]),
        ("\x00\xff", ["cannot read", "expected forms like"]),
        ("x" * 10_000, ["10000 characters", "200"]),
        ("9" * 10_000, ["10000 characters", "200"]),
        ("1" * 150 + "*2", ["150 digits", "1..12"]),
    ],
)
def test_parse_prompt_rejects_informatively(text, needles):
    with pytest.raises(TaskError) as ei:
        parse_prompt(text)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, f"message {msg!r} lacks {n!r}"
    assert len(msg) < 400  # a 10k-char input is not echoed back


@pytest.mark.parametrize("value", [None, 5, b"12*3", ["12*3"]])
def test_parse_prompt_rejects_non_text(value):
    with pytest.raises(TaskError, match="expected text"):
        parse_prompt(value)


# --- the problem a page's user picks (Episode explorer, Compare checkpoints) ---------------------
def test_pick_problem_sources():
    from ds_core.episodes.tasks import pick_problem

    assert pick_problem("test set", size="3x5", index=7) == load_test_set("3x5")[7]
    assert pick_problem("typed", text="What is 123 times 4567?") == Problem(123, 4567)
    assert pick_problem("random", size="3x6", seed=5) == sample_problems("3x6", 1, 5)[0]
    assert pick_problem("random", size="2+7", seed=5) == sample_problems("2+7", 1, 5)[0]
    assert pick_problem("random", size="2+3", seed=1).op == "+"


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"source": "typed", "text": "the meaning of life"}, "cannot read"),
        ({"source": "typed", "text": "  "}, "type a problem"),
        ({"source": "typed", "text": "1234567890123*4"}, "digits"),
        ({"source": "random", "size": "3x99"}, "out of range"),
        ({"source": "random", "size": "3x50"}, "digit count"),
        ({"source": "random", "size": "banana"}, "cannot read size"),
        ({"source": "test set", "size": "3x12"}, "no fixed test set"),
        ({"source": "test set", "size": "3x3", "index": 100}, "0..99"),
        ({"source": "nowhere"}, "unknown problem source"),
    ],
)
def test_pick_problem_bad_input_is_a_task_error(kw, word):
    from ds_core.episodes.tasks import pick_problem

    with pytest.raises(TaskError, match=word):
        pick_problem(**kw)
