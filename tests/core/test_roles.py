"""ds_core.episodes.roles: SpecialTokenTagger, LexicalMarkerTagger, token_char_spans, and TextFormat on a
byte-level BPE tokenizer (the `bpe_tokenizer` fixture), i.e. on a tokenizer that is not char-level.

Expected decision tokens are computed independently here: per-token character spans from decoding
prefixes one token at a time, markers located with str/regex search, and "a token is a decision
token when its characters overlap a marker" applied by hand.

Tests named `test_regression_*` pin bugs that these tests found and that were fixed.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

import ds_core.episodes.episode as E
from ds_core.episodes.episode import Episode
from ds_core.episodes.formats import DSFormat, TextFormat
from ds_core.episodes.roles import (
    DEFAULT_RESAMPLE_MARKERS,
    LexicalMarkerTagger,
    SpecialTokenTagger,
    TaggerError,
    TagResult,
    token_char_spans,
)
from ds_core.episodes.tasks import Problem

REPO = Path(__file__).resolve().parents[2]

P = Problem(12, 34)  # 408
TF = TextFormat()


def prefix_spans(tok, ids: list[int]) -> list[tuple[int, int]]:
    spans, prev = [], 0
    for i in range(len(ids)):
        cur = len(tok.decode(ids[: i + 1], skip_special_tokens=False))
        spans.append((prev, cur))
        prev = cur
    return spans


def overlapping(spans, c0: int, c1: int, offset: int = 0) -> list[int]:
    return [offset + i for i, (s, e) in enumerate(spans) if s < c1 and e > c0 and e > s]


def text_episode(tok, gen: str, fmt: TextFormat = TF, problem: Problem = P, eos: bool = True, **kw):
    prompt = tok.encode(fmt.prompt_text(problem))
    gen_ids = tok.encode(gen) + ([tok.eos_token_id] if eos else [])
    ids = prompt + gen_ids
    return fmt.parse(problem, ids, len(prompt), tok, **kw), ids, len(prompt)


# =============================================================================================
# the BPE fixture itself
# =============================================================================================
def test_bpe_fixture_is_not_char_level(bpe_tokenizer):
    tok = bpe_tokenizer
    ids = tok.encode(" times")
    assert len(ids) == 1  # a multi-character token with a leading space
    assert tok.decode(tok.encode("12 times 34 is 408.")) == "12 times 34 is 408."
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert tok.eos_token_id != tok.pad_token_id
    assert "[STOP]" not in tok.get_vocab()


# =============================================================================================
# SpecialTokenTagger
# =============================================================================================
def test_special_token_tagger_requires_decision_tokens(bpe_tokenizer):
    tagger = SpecialTokenTagger()
    with pytest.raises(TaggerError) as ei:
        tagger.tag(bpe_tokenizer.encode("12 times 34"), 0, bpe_tokenizer)
    msg = str(ei.value)
    assert "[STOP]/[RESAMPLE]" in msg and "lexical-marker" in msg
    assert issubclass(TaggerError, ValueError)
    with pytest.raises(TaggerError):
        DSFormat().parse(P, bpe_tokenizer.encode("1 2"), 1, bpe_tokenizer)


def test_special_token_tagger_custom_names_missing(char_tokenizer):
    with pytest.raises(TaggerError, match=r"no <done>/\[RESAMPLE\] tokens"):
        SpecialTokenTagger("<done>", "[RESAMPLE]").tag([6, 7], 0, char_tokenizer)


def test_special_token_tagger_roles(char_tokenizer):
    tok = char_tokenizer
    ids = tok.encode("<bos>21*3=", add_special_tokens=False)
    pl = len(ids)
    ids += tok.encode("36=63[RESAMPLE]=63[STOP]<eos>", add_special_tokens=False)
    res = SpecialTokenTagger().tag(ids, pl, tok)
    assert isinstance(res, TagResult)
    assert res.roles == ("prompt",) * pl + ("sampling",) * 5 + ("decision",) + ("sampling",) * 3 + ("decision", "other")
    assert res.decisions == ((pl + 5, pl + 6, "RESAMPLE"), (pl + 9, pl + 10, "STOP"))
    assert res.unexpected is False
    # a decision token inside the prompt is prompt
    assert SpecialTokenTagger().tag(ids, len(ids), tok).decisions == ()


# =============================================================================================
# token_char_spans
# =============================================================================================
ASCII_TEXTS = [
    "12 times 34 is 418. Wait, let me recompute. 12 times 34 is 408.",
    "I made a mistake. I'll go back and check: 1,234 plus 5 is 1,239!",
    "  double  spaces\tand\nnewlines  ",
    "Question: What is 7 times 8? Answer: 56<|endoftext|>",
    "",
]


@pytest.mark.parametrize("text", ASCII_TEXTS)
def test_token_char_spans_ascii(bpe_tokenizer, text):
    tok = bpe_tokenizer
    ids = tok.encode(text)
    decoded, spans = token_char_spans(ids, tok, 0)
    assert decoded == tok.decode(ids, skip_special_tokens=False) == text
    assert len(spans) == len(ids)
    assert "".join(decoded[s:e] for s, e in spans) == decoded
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    for (s, e), i in zip(spans, ids):
        assert decoded[s:e] == tok.decode([i], skip_special_tokens=False)
    assert spans == prefix_spans(tok, ids)


def test_token_char_spans_start_offset(bpe_tokenizer):
    tok = bpe_tokenizer
    prompt = tok.encode("Question: What is 12 times 34? Answer:")
    gen = tok.encode(" 408. Wait")
    text, spans = token_char_spans(prompt + gen, tok, len(prompt))
    assert text == " 408. Wait" and len(spans) == len(gen)
    assert "".join(text[s:e] for s, e in spans) == text


def test_token_char_spans_non_canonical_ids_fallback(bpe_tokenizer):
    # single-character ids for a word that BPE would merge: re-encoding the text does not give
    # these ids back, so the function must fall back to prefix decoding
    tok = bpe_tokenizer
    ids = [tok.convert_tokens_to_ids(c) for c in "times"] + tok.encode(" 34")
    assert tok.encode("times 34") != ids
    text, spans = token_char_spans(ids, tok, 0)
    assert text == "times 34"
    assert spans[:5] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert "".join(text[s:e] for s, e in spans) == text


def test_token_char_spans_char_tokenizer(char_tokenizer):
    tok = char_tokenizer
    ids = tok.encode("12[STOP]<eos>", add_special_tokens=False)
    text, spans = token_char_spans(ids, tok, 0)
    assert text == "12[STOP]<eos>"
    assert spans == [(0, 1), (1, 2), (2, 8), (8, 13)]


def test_token_char_spans_non_ascii_covers_text(bpe_tokenizer):
    # multi-byte characters are split into several byte tokens; spans stay in order, inside the
    # text, and together cover every character (tokens of one character may share its span)
    tok = bpe_tokenizer
    ids = tok.encode("Café × 3 is 4. Wait 5 — ok")
    text, spans = token_char_spans(ids, tok, 0)
    assert text == "Café × 3 is 4. Wait 5 — ok"
    assert len(spans) == len(ids)
    covered = set()
    for i, (s, e) in enumerate(spans):
        assert 0 <= s <= e <= len(text)
        if i:
            assert s >= spans[i - 1][0] and e >= spans[i - 1][1]
        covered |= set(range(s, e))
    assert covered == set(range(len(text)))
    # the marker still maps onto its own tokens
    res = LexicalMarkerTagger(eos_is_stop=False).tag(ids, 0, tok)
    assert len(res.decisions) == 1
    s, e, v = res.decisions[0]
    assert v == "RESAMPLE" and tok.decode(ids[s:e]).strip() == "Wait"


# =============================================================================================
# LexicalMarkerTagger
# =============================================================================================
def test_lexical_tagger_needs_a_marker():
    with pytest.raises(TaggerError, match="at least one resample marker"):
        LexicalMarkerTagger(resample_markers=())
    with pytest.raises(TaggerError):
        LexicalMarkerTagger(resample_markers=("  ", ""))
    assert LexicalMarkerTagger().resample_markers == DEFAULT_RESAMPLE_MARKERS


def _expect_marker(tok, gen_text: str, marker_re: str, prompt_len_ids: list[int]):
    """The token positions overlapping each match of marker_re in gen_text (independent of ds_core)."""
    gen_ids = tok.encode(gen_text)
    spans = prefix_spans(tok, gen_ids)
    assert tok.decode(gen_ids) == gen_text
    out = []
    for m in re.finditer(marker_re, gen_text, re.IGNORECASE):
        out.append(overlapping(spans, m.start(), m.end(), offset=len(prompt_len_ids)))
    return out


@pytest.mark.parametrize(
    "marker",
    list(DEFAULT_RESAMPLE_MARKERS)
    + ["let me recompute", "LET ME RECOMPUTE", "wait", "WAIT", "i made a mistake", "I'LL GO BACK AND CHECK"],
)
def test_each_marker_maps_to_exactly_overlapping_tokens(bpe_tokenizer, marker):
    tok = bpe_tokenizer
    gen = f" 12 times 34 is 418. {marker}. 12 times 34 is 408."
    ep, ids, pl = text_episode(tok, gen)
    prompt = ids[:pl]
    (expected,) = _expect_marker(tok, gen, r"(?<!\w)" + re.escape(marker) + r"(?!\w)", prompt)
    assert expected, "marker must overlap some token"
    eos_pos = len(ids) - 1
    assert [(d.start, d.end, d.verdict) for d in ep.decisions] == [
        (expected[0], expected[-1] + 1, "RESAMPLE"),
        (eos_pos, eos_pos + 1, "STOP"),
    ]
    assert ep.positions("decision") == expected + [eos_pos]
    assert tok.decode(ids[expected[0] : expected[-1] + 1]).strip() == marker
    assert ep.flags == ()
    assert [a.answer for a in ep.attempts] == [418, 408]
    assert [a.correct for a in ep.attempts] == [False, True]
    assert ep.final_answer == 408 and ep.correct
    # one decision span per attempt; decision tokens are exactly the decisions' spans
    assert ep.roles.count("decision") == sum(d.end - d.start for d in ep.decisions)
    assert len(ep.decisions) == ep.n_attempts == 2


@pytest.mark.parametrize("phrase", ["Waiting for it,", "He awaits:", "Waited,", "wait3 is", "Waits."])
def test_marker_word_boundaries(bpe_tokenizer, phrase):
    ep, ids, pl = text_episode(bpe_tokenizer, f" 12 times 34 is 418. {phrase} 408.")
    assert [d.verdict for d in ep.decisions] == ["STOP"]
    assert ep.decisions[0].start == len(ids) - 1
    assert ep.n_attempts == 1 and ep.final_answer == 408 and ep.flags == ()
    assert ep.roles.count("decision") == 1


@pytest.mark.parametrize(
    "joined",
    ["Wait, let me recompute", "Wait. I made a mistake!", "wait -- Let me recompute", "I made a mistake. Wait,"],
)
def test_adjacent_markers_are_one_decision(bpe_tokenizer, joined):
    tok = bpe_tokenizer
    gen = f" 12 times 34 is 418. {joined} 12 times 34 is 408."
    ep, ids, pl = text_episode(tok, gen)
    alts = "|".join(re.escape(m) for m in DEFAULT_RESAMPLE_MARKERS)
    groups = _expect_marker(tok, gen, rf"(?<!\w)(?:{alts})(?!\w)", ids[:pl])
    assert len(groups) == 2
    expected = list(range(groups[0][0], groups[1][-1] + 1))  # first marker through second
    assert [d.verdict for d in ep.decisions] == ["RESAMPLE", "STOP"]
    d = ep.decisions[0]
    assert list(range(d.start, d.end)) == expected
    assert ep.n_attempts == 2 and ep.final_answer == 408 and ep.correct and ep.flags == ()


def test_markers_separated_by_words_are_two_decisions(bpe_tokenizer):
    gen = " 12 times 34 is 418. Wait, 12 times 34 is 410. Let me recompute. 12 times 34 is 408."
    ep, ids, pl = text_episode(bpe_tokenizer, gen)
    assert [d.verdict for d in ep.decisions] == ["RESAMPLE", "RESAMPLE", "STOP"]
    assert [a.answer for a in ep.attempts] == [418, 410, 408]
    assert [a.correct for a in ep.attempts] == [False, False, True]
    assert [d.index for d in ep.decisions] == [0, 1, 2]
    assert ep.flags == () and ep.correct


def test_configurable_markers(bpe_tokenizer):
    fmt = TextFormat(LexicalMarkerTagger(resample_markers=("Hmm",)))
    ep, ids, pl = text_episode(bpe_tokenizer, " 12 times 34 is 418. Wait, hmm, 12 times 34 is 408.", fmt=fmt)
    assert [d.verdict for d in ep.decisions] == ["RESAMPLE", "STOP"]
    d = ep.decisions[0]
    assert bpe_tokenizer.decode(ids[d.start : d.end]).strip().lower() == "hmm"
    assert [a.answer for a in ep.attempts] == [418, 408]
    assert "Wait" in ep.attempts[0].text  # no longer a marker


def test_stop_marker(bpe_tokenizer):
    tok = bpe_tokenizer
    fmt = TextFormat(LexicalMarkerTagger(stop_markers=("Done",)))
    gen = " 12 times 34 is 418. Wait, 12 times 34 is 408. Done"
    ep, ids, pl = text_episode(tok, gen, fmt=fmt)
    (done,) = _expect_marker(tok, gen, r"(?<!\w)Done(?!\w)", ids[:pl])
    assert [(d.start, d.end, d.verdict) for d in ep.decisions][-1] == (done[0], done[-1] + 1, "STOP")
    assert len(ep.decisions) == 2  # no second STOP at the eos right after the stop marker
    assert ep.roles[-1] == "other"
    assert ep.flags == () and ep.final_answer == 408 and ep.correct


def test_eos_is_stop_and_its_absence(bpe_tokenizer):
    tok = bpe_tokenizer
    ep, ids, pl = text_episode(tok, " 12 times 34 is 408.")
    assert ep.decisions[-1].verdict == "STOP" and ep.decisions[-1].start == len(ids) - 1
    assert ep.roles[-1] == "decision" and ep.segments[-1] == "decision:0"
    assert ep.flags == () and ep.correct
    # generation cut before eos: no STOP
    ep, ids, pl = text_episode(tok, " 12 times 34 is 408.", eos=False, truncated=True)
    assert ep.decisions == ()
    assert set(ep.flags) == {E.MISSING_DECISION, E.TRUNCATED}
    # eos_is_stop=False: eos is just 'other'
    fmt = TextFormat(LexicalMarkerTagger(eos_is_stop=False))
    ep, ids, pl = text_episode(tok, " 12 times 34 is 408.", fmt=fmt)
    assert ep.decisions == () and ep.roles[-1] == "other" and E.MISSING_DECISION in ep.flags


def test_only_first_eos_is_stop(bpe_tokenizer):
    tok = bpe_tokenizer
    prompt = tok.encode(TF.prompt_text(P))
    ids = prompt + tok.encode(" 408.") + [tok.eos_token_id, tok.eos_token_id, tok.eos_token_id]
    ep = TF.parse(P, ids, len(prompt), tok)
    assert [d.verdict for d in ep.decisions] == ["STOP"]
    assert ep.roles[-3:] == ("decision", "other", "other")
    assert ep.flags == () and ep.correct


def test_marker_in_prompt_ignored(bpe_tokenizer):
    fmt = TextFormat(template="Wait! Let me recompute: what is {a} {word} {b}? Answer:")
    ep, ids, pl = text_episode(bpe_tokenizer, " 408.", fmt=fmt)
    assert [d.verdict for d in ep.decisions] == ["STOP"]
    assert ep.roles[:pl] == ("prompt",) * pl
    assert ep.flags == () and ep.correct


def test_marker_first_is_empty_attempt(bpe_tokenizer):
    ep, ids, pl = text_episode(bpe_tokenizer, " Wait, 408.")
    assert E.EMPTY_ATTEMPT in ep.flags
    assert ep.attempts[0].text == "" and ep.attempts[0].answer is None
    assert ep.final_answer == 408


def test_lexical_tagger_on_char_tokenizer_is_exact(char_tokenizer):
    # any tokenizer works; on a char-level one the marker maps to exactly its characters
    tok = char_tokenizer
    gen = "418 Wait, let me recompute: 408"
    prompt = tok.encode("<bos>Q:", add_special_tokens=False)
    ids = prompt + tok.encode(gen, add_special_tokens=False) + [tok.eos_token_id]
    res = LexicalMarkerTagger().tag(ids, len(prompt), tok)
    c0, c1 = gen.index("Wait"), gen.index("recompute") + len("recompute")
    assert res.decisions == ((len(prompt) + c0, len(prompt) + c1, "RESAMPLE"), (len(ids) - 1, len(ids), "STOP"))
    assert res.roles.count("decision") == (c1 - c0) + 1


# =============================================================================================
# TextFormat
# =============================================================================================
@pytest.mark.parametrize(
    "text,answer,malformed",
    [
        ("12 times 34 is 408.", 408, False),
        ("so 1,234 plus 5 is 1,239!", 1239, False),
        ("the answer: 408, I think", 408, False),
        ("no numbers here", None, True),
        ("", None, True),
        ("it is -5", None, False),
        ("99999999999999999999999999999999999999999", None, False),  # over 40 digits
    ],
)
def test_text_format_reads_last_number(text, answer, malformed):
    r = TF.read_attempt(text, P)
    assert (r.answer, r.malformed, r.check_ok) == (answer, malformed, None)


def test_text_format_prompt():
    assert TF.prompt_text(P) == "Question: What is 12 times 34? Answer:"
    assert TF.prompt_text(Problem(12, 34, "+")) == "Question: What is 12 plus 34? Answer:"
    assert TextFormat(template="{a}{op}{b}=").prompt_text(P) == "12*34="


def test_text_format_attempt_text_skips_special(bpe_tokenizer):
    tok = bpe_tokenizer
    ids = tok.encode(" 408.") + [tok.eos_token_id]
    assert TF.attempt_text(ids, tok) == " 408."


def test_text_episode_round_trip(bpe_tokenizer):
    ep, ids, pl = text_episode(bpe_tokenizer, " 12 times 34 is 418. Wait, 408.")
    back = Episode.from_dict(json.loads(json.dumps(ep.to_dict())))
    assert back == ep and back.tokens == ep.tokens


def test_random_bpe_sequences_never_raise(bpe_tokenizer):
    tok = bpe_tokenizer
    r = random.Random(7)
    vocab = len(tok)
    words = tok.encode(" Wait, let me recompute. I made a mistake. 12 times 34 is 408. Waiting")
    prompt = tok.encode(TF.prompt_text(P))
    for _ in range(200):
        pool = words + [tok.eos_token_id, tok.pad_token_id] if r.random() < 0.6 else list(range(vocab))
        gen = [r.choice(pool) for _ in range(r.randint(0, 40))]
        ids = prompt + gen
        pl = r.choice([len(prompt)] * 4 + [0, len(ids)])
        ep = TF.parse(
            P if r.random() < 0.8 else None,
            ids,
            pl,
            tok,
            truncated=r.random() < 0.3,
            max_attempts=r.choice([None, 1, 3]),
        )
        assert len(ep.roles) == len(ep.segments) == len(ep.tokens) == len(ids)
        assert ep.roles[: ep.prompt_len] == ("prompt",) * ep.prompt_len
        assert set(ep.flags) <= set(E.FLAGS)
        for d in ep.decisions:
            assert set(ep.roles[d.start : d.end]) == {"decision"}
        assert ep.final_answer == (ep.attempts[-1].answer if ep.attempts else None)
        assert Episode.from_dict(json.loads(json.dumps(ep.to_dict()))) == ep


# =============================================================================================
# Exposed bugs (expected to fail until fixed in ds_core)
# =============================================================================================
def test_regression_lexical_decisions_unsorted_when_marker_after_eos(bpe_tokenizer):
    # Regression (was a bug, fixed): ds_core/episodes/roles.py LexicalMarkerTagger.tag, lines 164-171: the STOP at the
    # first eos is
    # *appended* after the marker decisions, so a marker that comes after that eos (e.g. a
    # sequence not cut at eos) yields decisions out of order, breaking TagResult's "sorted by
    # start" contract. parse_episode (ds_core/episodes/episode.py lines 184-198) then walks backwards:
    # input ' 12 times 34 is 408.' <eos> ' Wait, 418' gives decisions
    # [RESAMPLE@23..25, STOP@22..23], a spurious empty attempt, flags
    # ('empty_attempt', 'trailing_tokens', 'no_answer'), final_answer None, correct False.
    # Expected: decisions sorted by start; the generation ends at the eos STOP, so the answer
    # before it (408) is final and correct.
    tok = bpe_tokenizer
    prompt = tok.encode(TF.prompt_text(P))
    ids = prompt + tok.encode(" 12 times 34 is 408.") + [tok.eos_token_id] + tok.encode(" Wait, 418")
    res = TF.tagger.tag(ids, len(prompt), tok)
    starts = [d[0] for d in res.decisions]
    assert starts == sorted(starts)
    ep = TF.parse(P, ids, len(prompt), tok)
    assert E.EMPTY_ATTEMPT not in ep.flags
    assert ep.final_answer == 408 and ep.correct


@pytest.mark.parametrize("bad", ["pad", "bos"])
def test_regression_lexical_tagger_never_reports_unexpected(bpe_tokenizer, bad):
    # Regression (was a bug, fixed): ds_core/episodes/roles.py LexicalMarkerTagger.tag sets `unexpected = False`
    # (line 136) and never changes it, so padding/bos tokens inside a text model's generation are
    # never flagged UNEXPECTED_TOKEN (TagResult.unexpected: "pad/bos/unknown tokens inside the
    # generation"; SpecialTokenTagger does flag them). bos is even tagged 'sampling' (so it counts
    # as an attempt token in gradient attribution). Input: ' 12 times 34 is' + <pad or bos> +
    # ' 408.' + eos (pad id != eos id). Expected: 'unexpected_token' in flags and the token's role
    # 'other'. Got: flags == () (and role 'sampling' for bos).
    tok = bpe_tokenizer
    bad_id = tok.pad_token_id if bad == "pad" else tok.bos_token_id
    prompt = tok.encode(TF.prompt_text(P))
    ids = prompt + tok.encode(" 12 times 34 is") + [bad_id] + tok.encode(" 408.") + [tok.eos_token_id]
    ep = TF.parse(P, ids, len(prompt), tok)
    assert E.UNEXPECTED_TOKEN in ep.flags
    assert ep.roles[ids.index(bad_id, len(prompt))] == "other"


def test_regression_stop_marker_then_punctuation_second_stop(bpe_tokenizer):
    # Regression (was a bug, fixed): with a stop marker followed by punctuation ("... 408. Done." <eos>),
    # LexicalMarkerTagger
    # (ds_core/episodes/roles.py lines 164-171) emits a second STOP at the eos because '.' is 'sampling';
    # parse_episode (ds_core/episodes/episode.py lines 200-205) ends at the first STOP, turns '.' into
    # 'other' and flags TRAILING_TOKENS, but leaves the eos with role 'decision' although no
    # Decision covers it (same root cause as tests/core/test_formats.py::test_regression_decision_tokens_after_stop).
    # Expected: roles.count('decision') == total length of ep.decisions' spans.
    # Got: 4 decision-role tokens for one 3-token Decision.
    fmt = TextFormat(LexicalMarkerTagger(stop_markers=("Done",)))
    ep, ids, pl = text_episode(bpe_tokenizer, " 12 times 34 is 408. Done.", fmt=fmt)
    assert ep.final_answer == 408 and ep.correct
    assert ep.roles.count("decision") == sum(d.end - d.start for d in ep.decisions)
