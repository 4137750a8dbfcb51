"""ds_core.episodes.tokenizer, ds_core.episodes.formats (DSFormat) and ds_core.episodes.episode (parse_episode,
Episode).

Tests named `test_regression_*` pin bugs that these tests found and that were fixed.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

import ds_core.episodes.episode as E
from ds_core.episodes.episode import Attempt, Decision, Episode, parse_episode
from ds_core.episodes.formats import DSFormat, Step, TextFormat, format_for, rev, running_mod9, unrev, worked_steps
from ds_core.episodes.tasks import Problem
from ds_core.episodes.tokenizer import (
    BOS,
    CHARS,
    DECISION_TOKENS,
    EOS,
    PAD,
    RESAMPLE_TOKEN,
    SPECIAL_TOKENS,
    STOP_TOKEN,
    UNK,
    decision_token_ids,
)

REPO = Path(__file__).resolve().parents[2]

FMT = DSFormat()
EXAMPLE = Problem(123, 4567)
EXAMPLE_ATTEMPT = "3:10731;2:04319+140501;1:007654+147165=147165#356*7404>6,153416"


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def rand_operand(r: random.Random, d: int) -> int:
    return r.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)


def rand_problem(r: random.Random, op: str | None = None) -> Problem:
    return Problem(rand_operand(r, r.randint(1, 12)), rand_operand(r, r.randint(1, 12)), op or r.choice("*+"))


def wrong_answer(r: random.Random, p: Problem, same_residue: bool | None = None) -> int:
    while True:
        w = max(0, p.answer + r.choice([-1, 1]) * r.choice([1, 2, 9, 10, 18, 100, 1000, 27, 81]))
        if w == p.answer:
            continue
        if same_residue is None or ((w - p.answer) % 9 == 0) == same_residue:
            return w


def ds_episode(tok, problem: Problem, gen: str | list[int], **kw) -> tuple[Episode, int]:
    """Parse prompt_text(problem) followed by `gen` (text, or token ids)."""
    prompt = enc(tok, FMT.prompt_text(problem))
    gen_ids = enc(tok, gen) if isinstance(gen, str) else list(gen)
    return FMT.parse(problem, prompt + gen_ids, len(prompt), tok, **kw), len(prompt)


# =============================================================================================
# tokenizer
# =============================================================================================
def test_char_level_every_printable_ascii_is_one_token(char_tokenizer):
    tok = char_tokenizer
    assert len(CHARS) == 95 and CHARS[0] == " " and CHARS[-1] == "~"
    ids = [enc(tok, c) for c in CHARS]
    assert all(len(i) == 1 for i in ids)
    flat = [i[0] for i in ids]
    assert flat == list(range(6, 6 + 95))  # 0-3 specials, 4-5 decisions, then printable ASCII
    assert len(tok) == 4 + 2 + 95
    assert tok.convert_ids_to_tokens(flat) == list(CHARS)


def test_char_level_round_trip_random_strings(char_tokenizer):
    tok = char_tokenizer
    r = random.Random(0)
    tricky = [" .", " ,", " 's", " n't", "  ", " ?", " !", "\\", "''", " ' "]
    for _ in range(300):
        s = "".join(r.choice(CHARS) if r.random() < 0.8 else r.choice(tricky) for _ in range(r.randint(0, 60)))
        ids = enc(tok, s)
        assert len(ids) == len(s)
        assert tok.decode(ids) == s
        assert tok.decode(ids, skip_special_tokens=False) == s


def test_special_tokens_are_single_tokens(char_tokenizer):
    tok = char_tokenizer
    expected = {PAD: 0, BOS: 1, EOS: 2, UNK: 3, STOP_TOKEN: 4, RESAMPLE_TOKEN: 5}
    for t, i in expected.items():
        assert enc(tok, t) == [i], t
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = enc(tok, "12[STOP]3[RESAMPLE]<eos>")
    assert tok.convert_ids_to_tokens(ids) == ["1", "2", STOP_TOKEN, "3", RESAMPLE_TOKEN, EOS]
    assert set(DECISION_TOKENS) <= set(tok.all_special_tokens)
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)
    # decoding keeps special tokens unless asked not to
    assert tok.decode(ids, skip_special_tokens=False) == "12[STOP]3[RESAMPLE]<eos>"
    assert tok.decode(ids, skip_special_tokens=True) == "123"


def test_non_ascii_is_unk(char_tokenizer):
    assert enc(char_tokenizer, "é×\n") == [3, 3, 3]


def test_save_pretrained_autotokenizer_round_trip(char_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    char_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded.get_vocab() == char_tokenizer.get_vocab()
    assert decision_token_ids(loaded) == {"STOP": 4, "RESAMPLE": 5}
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.unk_token) == (BOS, EOS, PAD, UNK)
    assert loaded.padding_side == "left"
    r = random.Random(1)
    texts = [FMT.trace_text(EXAMPLE, [EXAMPLE_ATTEMPT]), "<pad><bos>x[STOP]<unk>", ""]
    texts += ["".join(r.choice(CHARS) for _ in range(40)) for _ in range(20)]
    for s in texts:
        assert enc(loaded, s) == enc(char_tokenizer, s)
        assert loaded.decode(enc(loaded, s), skip_special_tokens=False) == s
    assert loaded.encode("hi") == char_tokenizer.encode("hi")  # same post-processing
    assert format_for(loaded).name == "ds"


def test_decision_token_ids(char_tokenizer, bpe_tokenizer):
    assert decision_token_ids(char_tokenizer) == {"STOP": 4, "RESAMPLE": 5}
    assert decision_token_ids(bpe_tokenizer) is None

    class OnlyStop:
        def get_vocab(self):
            return {STOP_TOKEN: 0, "a": 1}

    assert decision_token_ids(OnlyStop()) is None
    assert isinstance(format_for(char_tokenizer), DSFormat)
    assert isinstance(format_for(bpe_tokenizer), TextFormat)


# =============================================================================================
# DSFormat: writing
# =============================================================================================
def test_rev_unrev_running_mod9():
    assert rev(123) == "321" and rev(0) == "0" and rev(100) == "001"
    assert unrev("321") == 123 and unrev("001") == 100 and unrev("0") == 0
    assert running_mod9("356") == "385"  # 3, 3+5, 3+5+6=14 -> 5
    assert running_mod9("9") == "0" and running_mod9("") == ""
    r = random.Random(0)
    for _ in range(200):
        x = r.randint(0, 10**24)
        assert unrev(rev(x)) == x
        assert int(running_mod9(rev(x))[-1]) == x % 9


def test_example_attempt_and_trace_match_docstring():
    assert FMT.prompt_text(EXAMPLE) == "<bos>321*7654="
    assert FMT.attempt_text(EXAMPLE) == EXAMPLE_ATTEMPT
    assert FMT.trace_text(EXAMPLE, [EXAMPLE_ATTEMPT]) == ("<bos>321*7654=" + EXAMPLE_ATTEMPT + "[STOP]<eos>")
    assert FMT.trace_text(EXAMPLE, ["A", "B"], final_stop=False) == "<bos>321*7654=A[RESAMPLE]B[RESAMPLE]"
    assert FMT.verdict_token(True) == STOP_TOKEN and FMT.verdict_token(False) == RESAMPLE_TOKEN
    steps = worked_steps(EXAMPLE)
    assert steps == [Step(3, 13701, None), Step(2, 91340, 105041), Step(1, 456700, 561741)]
    assert worked_steps(Problem(12, 34, "+")) == []


def test_addition_attempt_has_no_steps():
    assert FMT.attempt_text(Problem(5, 7, "+")) == "=21#5+7>3,23"
    assert FMT.attempt_text(Problem(12, 345, "+")) == "=753#23+503>6,736"


_STEP = re.compile(r"^(\d):(\d+)(?:\+(\d+))?$")
_ATT = re.compile(r"^(?P<steps>[^=]*)=(?P<ans>\d+)#(?P<ra>\d+)(?P<op>[*+])(?P<rb>\d+)>(?P<p>\d),(?P<rans>\d+)$")


def _check_structure(p: Problem, text: str, answer: int):
    m = _ATT.match(text)
    assert m, text
    if p.op == "*":
        parts = m.group("steps").split(";")
        assert len(parts) == len(str(p.a))
        total = 0
        for i, (part, digit) in enumerate(zip(parts, rev(p.a))):
            sm = _STEP.match(part)
            assert sm, part
            assert sm.group(1) == digit
            partial = int(digit) * p.b * 10**i
            assert unrev(sm.group(2)) == partial
            assert sm.group(2).startswith("0" * i)  # the shift is written as leading zeros
            total += partial
            if i == 0:
                assert sm.group(3) is None
            else:
                assert unrev(sm.group(3)) == total
        assert total == p.answer
    else:
        assert m.group("steps") == ""
    assert m.group("ans") == rev(answer)
    assert m.group("op") == p.op
    assert m.group("ra") == running_mod9(rev(p.a))
    assert m.group("rb") == running_mod9(rev(p.b))
    assert m.group("rans") == running_mod9(rev(answer))
    # the check's residue is the true residue of the problem
    assert int(m.group("p")) == p.answer % 9
    assert int(m.group("ra")[-1]) == p.a % 9 and int(m.group("rb")[-1]) == p.b % 9
    assert int(m.group("rans")[-1]) == answer % 9


def test_attempt_structure_and_true_residue_random():
    r = random.Random(0)
    for _ in range(400):
        p = rand_problem(r)
        _check_structure(p, FMT.attempt_text(p), p.answer)
        w = wrong_answer(r, p)
        _check_structure(p, FMT.attempt_text(p, answer=w), w)


@pytest.mark.parametrize(
    "a,b", [(100, 4567), (1000000, 5), (9, 9), (0, 123), (123, 0), (999_999_999_999, 999_999_999_999), (10**11, 1)]
)
def test_attempt_structure_edge_operands(a, b):
    for op in "*+":
        p = Problem(a, b, op)
        _check_structure(p, FMT.attempt_text(p), p.answer)
        reading = FMT.read_attempt(FMT.attempt_text(p), p)
        assert (reading.answer, reading.malformed, reading.check_ok) == (p.answer, False, True)


# =============================================================================================
# DSFormat: reading
# =============================================================================================
def test_read_attempt_correct_and_wrong_random():
    r = random.Random(1)
    n_same = n_diff = 0
    for _ in range(400):
        p = rand_problem(r)
        ok = FMT.read_attempt(FMT.attempt_text(p), p)
        assert (ok.answer, ok.malformed, ok.check_ok) == (p.answer, False, True)
        same = r.random() < 0.3
        w = wrong_answer(r, p, same_residue=same)
        bad = FMT.read_attempt(FMT.attempt_text(p, answer=w), p)
        assert bad.answer == w and bad.malformed is False
        # check_ok is True iff the written answer is congruent to the true product mod 9
        assert bad.check_ok is ((w - p.answer) % 9 == 0)
        n_same += same
        n_diff += not same
    assert n_same > 50 and n_diff > 50


def test_read_attempt_with_wrong_steps():
    p = EXAMPLE
    steps = worked_steps(p)
    bad = [steps[0], Step(2, 91340, 105041), Step(1, 456700, 561742)]  # off-by-one running sum
    text = FMT.attempt_text(p, steps=bad)
    assert "=247165#" in text
    reading = FMT.read_attempt(text, p)
    assert reading.answer == 561742 and reading.check_ok is False and not reading.malformed


@pytest.mark.parametrize(
    "text,answer,malformed,check_ok",
    [
        ("=147165", 561741, True, None),  # no check
        ("3:10731=147165#356*7404>6", 561741, True, None),  # check cut short
        ("garbage", None, True, None),
        ("", None, True, None),
        ("=#1*1>1,1", None, True, None),
        ("=" + "1" * 26 + "#1*1>1,1", None, True, True),  # longer than max_digits_per_number
        ("=0100#1*1>1,1", 10, False, True),  # leading zeros of a reversed number
    ],
)
def test_read_attempt_malformed(text, answer, malformed, check_ok):
    reading = FMT.read_attempt(text, EXAMPLE)
    assert (reading.answer, reading.malformed, reading.check_ok) == (answer, malformed, check_ok)


def test_attempt_text_decodes_ids(char_tokenizer):
    ids = enc(char_tokenizer, EXAMPLE_ATTEMPT + "[STOP]")
    assert FMT.attempt_text(ids, char_tokenizer) == EXAMPLE_ATTEMPT + "[STOP]"


# =============================================================================================
# parse_episode on DS traces
# =============================================================================================
def test_parse_single_correct_attempt(char_tokenizer):
    ep, pl = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + "[STOP]<eos>")
    assert ep.prompt_len == pl == len("<bos>321*7654=") - len("<bos>") + 1
    assert ep.flags == () and not ep.malformed
    assert ep.correct and ep.final_answer == 561741
    assert ep.n_attempts == 1
    a = ep.attempts[0]
    assert (a.index, a.start, a.end, a.text, a.answer, a.correct, a.malformed, a.check_ok) == (
        0,
        pl,
        pl + len(EXAMPLE_ATTEMPT),
        EXAMPLE_ATTEMPT,
        561741,
        True,
        False,
        True,
    )
    assert ep.decisions == (Decision(0, pl + len(EXAMPLE_ATTEMPT), pl + len(EXAMPLE_ATTEMPT) + 1, "STOP"),)
    assert ep.roles == ("prompt",) * pl + ("sampling",) * len(EXAMPLE_ATTEMPT) + ("decision", "other")
    assert ep.segments == ("prompt",) * pl + ("attempt:0",) * len(EXAMPLE_ATTEMPT) + ("decision:0", "other")
    assert ep.text == EXAMPLE_ATTEMPT + "[STOP]<eos>"
    assert ep.generated_ids == tuple(enc(char_tokenizer, EXAMPLE_ATTEMPT + "[STOP]<eos>"))
    assert ep.tokens[0] == BOS and ep.tokens[-2:] == (STOP_TOKEN, EOS)


def test_parse_multi_attempt_trace(char_tokenizer):
    tok = char_tokenizer
    p = EXAMPLE
    w1 = FMT.attempt_text(p, answer=p.answer + 1)  # check catches it
    w2 = FMT.attempt_text(p, answer=p.answer + 9)  # check cannot catch it
    right = FMT.attempt_text(p)
    trace = FMT.trace_text(p, [w1, w2, right])
    prompt = enc(tok, FMT.prompt_text(p))
    ids = enc(tok, trace)
    ep = FMT.parse(p, ids, len(prompt), tok)
    assert ep.flags == ()
    assert [a.answer for a in ep.attempts] == [p.answer + 1, p.answer + 9, p.answer]
    assert [a.correct for a in ep.attempts] == [False, False, True]
    assert [a.check_ok for a in ep.attempts] == [False, True, True]
    assert [a.text for a in ep.attempts] == [w1, w2, right]
    assert [d.verdict for d in ep.decisions] == ["RESAMPLE", "RESAMPLE", "STOP"]
    assert [d.index for d in ep.decisions] == [0, 1, 2]
    assert (ep.verdict_after(0), ep.verdict_after(2), ep.verdict_after(3)) == ("RESAMPLE", "STOP", None)
    assert ep.final_answer == p.answer and ep.correct
    # role counts: exactly one decision token per attempt
    n_att_chars = len(w1) + len(w2) + len(right)
    assert ep.roles.count("decision") == ep.n_attempts == 3
    assert ep.roles.count("sampling") == n_att_chars
    assert ep.roles.count("prompt") == len(prompt)
    assert ep.roles.count("other") == 1 and ep.roles[-1] == "other"
    assert ep.positions("decision") == [d.start for d in ep.decisions]
    for k, a in enumerate(ep.attempts):
        assert set(ep.segments[a.start : a.end]) == {f"attempt:{k}"}
        assert tok.decode(ids[a.start : a.end]) == a.text
        assert ep.decisions[k].start == a.end  # the verdict follows its attempt immediately
        assert ep.segments[ep.decisions[k].start] == f"decision:{k}"
    assert ep.attempts[1].start == ep.decisions[0].end


def test_parse_final_wrong_answer(char_tokenizer):
    p = EXAMPLE
    trace_gen = FMT.attempt_text(p) + "[RESAMPLE]" + FMT.attempt_text(p, answer=p.answer + 2) + "[STOP]<eos>"
    ep, _ = ds_episode(char_tokenizer, p, trace_gen)
    assert ep.flags == ()
    assert [a.correct for a in ep.attempts] == [True, False]
    assert ep.final_answer == p.answer + 2 and not ep.correct  # reward follows the final answer


def test_parse_without_problem(char_tokenizer):
    ids = enc(char_tokenizer, FMT.trace_text(EXAMPLE, [EXAMPLE_ATTEMPT]))
    ep = parse_episode(None, ids, 10, char_tokenizer, FMT)
    assert ep.final_answer == 561741 and ep.correct is False and ep.problem is None
    assert Episode.from_dict(ep.to_dict()) == ep


def test_addition_episode(char_tokenizer):
    p = Problem(12, 345, "+")
    ep, _ = ds_episode(char_tokenizer, p, FMT.attempt_text(p) + "[STOP]<eos>")
    assert ep.flags == () and ep.correct and ep.final_answer == 357


# --- malformed generations ---------------------------------------------------------------------
def test_empty_generation(char_tokenizer):
    ep, pl = ds_episode(char_tokenizer, EXAMPLE, "")
    assert ep.flags == (E.EMPTY,)
    assert ep.malformed and ep.attempts == () and ep.decisions == ()
    assert ep.final_answer is None and not ep.correct
    assert ep.roles == ("prompt",) * pl


def test_empty_generation_prompt_len_clamped(char_tokenizer):
    ids = enc(char_tokenizer, "<bos>321*7654=")
    ep = FMT.parse(EXAMPLE, ids, 999, char_tokenizer)
    assert ep.prompt_len == len(ids) and E.EMPTY in ep.flags
    ep = FMT.parse(EXAMPLE, ids, -5, char_tokenizer)
    assert ep.prompt_len == 0 and E.EMPTY not in ep.flags


def test_garbage_tokens(char_tokenizer):
    ep, pl = ds_episode(char_tokenizer, EXAMPLE, "hello world!!")
    assert set(ep.flags) == {E.MALFORMED_ATTEMPT, E.MISSING_DECISION, E.NO_ANSWER}
    assert ep.n_attempts == 1 and ep.attempts[0].malformed and ep.attempts[0].answer is None
    assert ep.final_answer is None and not ep.correct
    ep, _ = ds_episode(char_tokenizer, EXAMPLE, "hello[STOP]<eos>")
    assert set(ep.flags) == {E.MALFORMED_ATTEMPT, E.NO_ANSWER}


def test_truncated_generation(char_tokenizer):
    cut = EXAMPLE_ATTEMPT[:20]
    ep, _ = ds_episode(char_tokenizer, EXAMPLE, cut, truncated=True)
    assert E.TRUNCATED in ep.flags and E.MISSING_DECISION in ep.flags
    assert E.NO_ANSWER in ep.flags and ep.final_answer is None and ep.malformed
    # a runaway after a RESAMPLE
    ep, _ = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + "[RESAMPLE]" + cut, truncated=True, max_attempts=4)
    assert E.TRUNCATED in ep.flags and E.CAP_REACHED not in ep.flags
    assert ep.n_attempts == 2 and ep.attempts[0].answer == EXAMPLE.answer
    # truncated=True is not reported for a generation that ended properly
    ep, _ = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + "[STOP]<eos>", truncated=True)
    assert E.TRUNCATED not in ep.flags


@pytest.mark.parametrize("tail", ["<eos>", ""])
def test_missing_decision(char_tokenizer, tail):
    ep, _ = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + tail)
    assert ep.flags == (E.MISSING_DECISION,)
    assert ep.malformed and ep.decisions == ()
    assert ep.n_attempts == 1 and ep.final_answer == EXAMPLE.answer
    assert ep.attempts[0].text == EXAMPLE_ATTEMPT  # the eos is not part of the attempt
    assert ep.roles.count("decision") == 0


def test_resample_then_end_without_cap_is_missing_decision(char_tokenizer):
    ep, _ = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + "[RESAMPLE]<eos>")
    assert ep.flags == (E.MISSING_DECISION,)
    ep, _ = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + "[RESAMPLE]<eos>", max_attempts=2)
    assert ep.flags == (E.MISSING_DECISION,)


def test_tokens_after_stop(char_tokenizer):
    ep, pl = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + "[STOP]12345<eos>")
    assert ep.flags == (E.TRAILING_TOKENS,)
    assert ep.final_answer == EXAMPLE.answer and ep.correct and ep.n_attempts == 1
    stop = ep.decisions[0].end
    assert ep.roles[stop:] == ("other",) * 6
    assert ep.segments[stop:] == ("other",) * 6
    assert ep.roles.count("sampling") == len(EXAMPLE_ATTEMPT)


def test_cap_reached(char_tokenizer):
    p = EXAMPLE
    w = FMT.attempt_text(p, answer=p.answer + 1)
    gen = w + "[RESAMPLE]" + w + "[RESAMPLE]"
    ep, _ = ds_episode(char_tokenizer, p, gen, max_attempts=2)
    assert ep.flags == (E.CAP_REACHED,)
    assert not ep.malformed  # an outcome, not a malformed generation
    assert [d.verdict for d in ep.decisions] == ["RESAMPLE", "RESAMPLE"]
    assert ep.final_answer == p.answer + 1 and not ep.correct
    ep, _ = ds_episode(char_tokenizer, p, gen + "<eos>", max_attempts=2)
    assert ep.flags == (E.CAP_REACHED,)
    ep, _ = ds_episode(char_tokenizer, p, gen + "<eos>", max_attempts=3)
    assert ep.flags == (E.MISSING_DECISION,)


@pytest.mark.parametrize(
    "gen,n_dec", [("[STOP]<eos>", 1), ("[RESAMPLE][STOP]<eos>", 2), (EXAMPLE_ATTEMPT + "[RESAMPLE][STOP]<eos>", 2)]
)
def test_decision_without_attempt(char_tokenizer, gen, n_dec):
    ep, pl = ds_episode(char_tokenizer, EXAMPLE, gen)
    assert E.EMPTY_ATTEMPT in ep.flags and E.NO_ANSWER in ep.flags
    assert len(ep.decisions) == n_dec == ep.n_attempts
    empty = ep.attempts[-1]
    assert empty.start == empty.end and empty.text == "" and empty.answer is None and empty.malformed
    assert ep.final_answer is None and not ep.correct


@pytest.mark.parametrize("bad", ["<pad>", "<bos>", "<unk>", "é"])
def test_pad_bos_unk_inside_generation(char_tokenizer, bad):
    half = len(EXAMPLE_ATTEMPT) // 2
    gen = EXAMPLE_ATTEMPT[:half] + bad + EXAMPLE_ATTEMPT[half:] + "[STOP]<eos>"
    ep, pl = ds_episode(char_tokenizer, EXAMPLE, gen)
    assert E.UNEXPECTED_TOKEN in ep.flags and ep.malformed
    assert ep.roles[pl + half] == "other"
    assert ep.roles.count("decision") == 1


def test_bos_in_prompt_is_not_unexpected(char_tokenizer):
    ep, _ = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + "[STOP]<eos>")
    assert E.UNEXPECTED_TOKEN not in ep.flags


# --- fuzz ---------------------------------------------------------------------------------------
def _check_invariants(ep: Episode, ids: list[int], tok):
    n = len(ids)
    pl = ep.prompt_len
    assert ep.token_ids == tuple(ids)
    assert len(ep.roles) == len(ep.segments) == len(ep.tokens) == n
    assert set(ep.roles) <= set(E.ROLES)
    assert ep.roles[:pl] == ("prompt",) * pl and "prompt" not in ep.roles[pl:]
    assert set(ep.flags) <= set(E.FLAGS) and len(set(ep.flags)) == len(ep.flags)
    assert (E.EMPTY in ep.flags) == (n == pl)
    # decisions: ordered, disjoint, in the generation, tagged as decisions
    prev_end = pl
    for j, d in enumerate(ep.decisions):
        assert pl <= prev_end <= d.start < d.end <= n
        assert set(ep.roles[d.start : d.end]) == {"decision"}
        assert set(ep.segments[d.start : d.end]) == {f"decision:{d.index}"}
        assert 0 <= d.index < ep.n_attempts
        if d.verdict == "STOP":
            assert j == len(ep.decisions) - 1
        prev_end = d.end
    assert len(ep.decisions) <= ep.n_attempts <= len(ep.decisions) + 1
    # attempts: ordered, in the generation; every sampling token lies in exactly one attempt
    covered = set()
    for k, a in enumerate(ep.attempts):
        assert a.index == k and pl <= a.start <= a.end <= n
        assert "decision" not in ep.roles[a.start : a.end] and "prompt" not in ep.roles[a.start : a.end]
        if a.end > a.start:
            assert set(ep.segments[a.start : a.end]) == {f"attempt:{k}"}
            assert ep.roles[a.start] == "sampling" and ep.roles[a.end - 1] == "sampling"
        covered |= set(range(a.start, a.end))
        if k:
            assert a.start >= ep.attempts[k - 1].end
    assert set(ep.positions("sampling")) <= covered
    assert ep.final_answer == (ep.attempts[-1].answer if ep.attempts else None)
    if ep.correct:
        assert ep.problem is not None and ep.final_answer == ep.problem.answer
    assert ep.text == tok.decode(ids[pl:], skip_special_tokens=False)
    back = Episode.from_dict(json.loads(json.dumps(ep.to_dict())))
    assert back == ep and back.tokens == ep.tokens


def test_random_token_sequences_never_raise(char_tokenizer):
    tok = char_tokenizer
    r = random.Random(1234)
    alphabet = [i for i in range(len(tok))]
    structural = enc(tok, "0123456789:;+=#*>,") + [4, 4, 5, 5, 2, 0, 1, 3]
    good = 0
    for i in range(500):
        p = rand_problem(r) if r.random() < 0.8 else None
        prompt = enc(tok, FMT.prompt_text(p)) if p else enc(tok, "<bos>12*3=")
        if r.random() < 0.3 and p is not None:  # realistic: pieces of real attempts, mutated
            pieces = [
                FMT.attempt_text(p, answer=(wrong_answer(r, p) if r.random() < 0.5 else None))
                for _ in range(r.randint(1, 3))
            ]
            gen = enc(tok, RESAMPLE_TOKEN.join(pieces) + r.choice(["[STOP]<eos>", "[RESAMPLE]", "", "<eos>"]))
            for _ in range(r.randint(0, 3)):
                if gen:
                    gen[r.randrange(len(gen))] = r.choice(structural)
        else:
            pool = structural if r.random() < 0.6 else alphabet
            gen = [r.choice(pool) for _ in range(r.randint(0, 80))]
        ids = prompt + gen
        pl = r.choice([len(prompt)] * 6 + [0, len(ids), len(ids) + 3, r.randint(0, len(ids))])
        ep = FMT.parse(p, ids, pl, tok, truncated=r.random() < 0.3, max_attempts=r.choice([None, 1, 2, 4]))
        _check_invariants(ep, ids, tok)
        good += ep.flags == ()
    assert good >= 3  # the realistic branch produces some clean episodes


# =============================================================================================
# Episode: serialisation and validation
# =============================================================================================
def test_episode_round_trip(char_tokenizer):
    p = EXAMPLE
    trace = FMT.trace_text(p, [FMT.attempt_text(p, answer=p.answer + 1), FMT.attempt_text(p)])
    ids = enc(char_tokenizer, trace)
    ep = FMT.parse(p, ids, len(enc(char_tokenizer, FMT.prompt_text(p))), char_tokenizer)
    d = ep.to_dict()
    assert json.loads(json.dumps(d)) == d
    back = Episode.from_dict(json.loads(json.dumps(d)))
    assert back == ep
    assert back.tokens == ep.tokens and back.text == ep.text
    assert back.attempts[0] == ep.attempts[0] and isinstance(back.attempts[0], Attempt)
    assert back.decisions == ep.decisions
    assert back.to_dict() == d
    ep2, _ = ds_episode(char_tokenizer, p, "")
    assert Episode.from_dict(ep2.to_dict()) == ep2


def _mini(**kw) -> Episode:
    base = dict(
        problem=None,
        token_ids=(1, 7, 4),
        roles=("prompt", "sampling", "decision"),
        segments=("prompt", "attempt:0", "decision:0"),
        prompt_len=1,
        attempts=(Attempt(0, 1, 2, "a", None, False),),
        decisions=(Decision(0, 2, 3, "STOP"),),
        final_answer=None,
        correct=False,
    )
    base.update(kw)
    return Episode(**base)


def test_episode_validation():
    assert _mini().n_attempts == 1
    with pytest.raises(ValueError, match="3 tokens but 2 roles"):
        _mini(roles=("prompt", "sampling"))
    with pytest.raises(ValueError, match="3 tokens but 3 roles, 4 segments"):
        _mini(segments=("prompt", "attempt:0", "decision:0", "other"))
    with pytest.raises(ValueError, match="unknown roles"):
        _mini(roles=("prompt", "thinking", "decision"))
    with pytest.raises(ValueError, match="prompt_len 4 outside"):
        _mini(prompt_len=4)
    with pytest.raises(ValueError, match="prompt_len -1 outside"):
        _mini(prompt_len=-1)
    with pytest.raises(ValueError, match="unknown flags"):
        _mini(flags=("weird",))
    with pytest.raises(ValueError, match="bad attempt span"):
        Attempt(0, 3, 2, "", None, False)
    with pytest.raises(ValueError, match="verdict must be one of"):
        Decision(0, 2, 3, "MAYBE")
    with pytest.raises(ValueError, match="bad decision span"):
        Decision(0, 2, 2, "STOP")
    d = _mini().to_dict()
    d["roles"] = d["roles"][:-1]
    with pytest.raises(ValueError):
        Episode.from_dict(d)


def test_episode_malformed_property():
    assert not _mini().malformed
    assert not _mini(flags=(E.CAP_REACHED,)).malformed
    for f in E.FLAGS:
        if f not in E.OUTCOME_FLAGS:
            assert _mini(flags=(f,)).malformed


# =============================================================================================
# Exposed bugs (expected to fail until fixed in ds_core)
# =============================================================================================
@pytest.mark.parametrize("tail", ["[STOP]<eos>", "[RESAMPLE]<eos>", "[RESAMPLE]12[STOP]<eos>"])
def test_regression_decision_tokens_after_stop(char_tokenizer, tail):
    # Regression (was a bug, fixed): ds_core/episodes/episode.py, parse_episode, the `if ended:` block (lines 200-205)
    # only turns
    # *sampling* tokens after the first STOP into 'other'. Decision tokens there keep
    # role 'decision' although no Decision covers them, and TRAILING_TOKENS is not flagged when the
    # tail holds only decision tokens. Input: a correct attempt + "[STOP]" + tail.
    # Expected: flags contain 'trailing_tokens'; roles.count('decision') == len(decisions) == 1.
    # Got (tail "[STOP]<eos>"): flags == (), roles.count('decision') == 2.
    ep, pl = ds_episode(char_tokenizer, EXAMPLE, EXAMPLE_ATTEMPT + "[STOP]" + tail)
    assert len(ep.decisions) == 1
    assert E.TRAILING_TOKENS in ep.flags
    assert ep.roles.count("decision") == len(ep.decisions) == 1
    assert ep.positions("decision") == [ep.decisions[0].start]


def test_regression_out_of_vocab_ids_are_unexpected(char_tokenizer):
    # Regression (was a bug, fixed): ds_core/episodes/roles.py SpecialTokenTagger.tag (lines 63-77) treats an id
    # outside the tokenizer's vocabulary (e.g. from a model whose embedding matrix is padded past
    # len(tokenizer) = 101) as an ordinary 'sampling' token: Episode.tokens holds None for it, the
    # decoded text silently drops it, and UNEXPECTED_TOKEN ("padding/bos/unknown tokens inside the
    # generation") is not flagged. Input: attempt with id 120 inserted, then [STOP]<eos>.
    # Expected: 'unexpected_token' in flags and the id's role 'other'. Got: flags == (), role
    # 'sampling', tokens[pl + half] is None, and the attempt text silently lacks the token.
    half = len(EXAMPLE_ATTEMPT) // 2
    gen = (
        enc(char_tokenizer, EXAMPLE_ATTEMPT[:half])
        + [120]
        + enc(char_tokenizer, EXAMPLE_ATTEMPT[half:] + "[STOP]<eos>")
    )
    ep, pl = ds_episode(char_tokenizer, EXAMPLE, gen)
    assert E.UNEXPECTED_TOKEN in ep.flags
    assert ep.roles[pl + half] == "other"
