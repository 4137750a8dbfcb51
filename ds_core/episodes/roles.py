"""Role taggers: which tokens of a generation are decisions (STOP / RESAMPLE).

A tagger gives every token a role — prompt, sampling, decision or other — and the decision spans
with their verdicts. Two implementations:
- `SpecialTokenTagger`: our format, where a decision is one explicit token ([STOP] / [RESAMPLE]).
- `LexicalMarkerTagger`: real reasoning traces, where a decision is a phrase ("Let me recompute",
  "Wait", ...) found in the decoded text and mapped back to tokens through character offsets.
Nothing here assumes DS-Lens' own tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from ds_core.episodes.episode import RESAMPLE, STOP
from ds_core.episodes.tokenizer import decision_token_ids, end_of_turn_ids
from ds_core.errors import UserError


@dataclass(frozen=True)
class TagResult:
    roles: tuple[str, ...]
    decisions: tuple[tuple[int, int, str], ...]  # (start, end, verdict), sorted by start
    unexpected: bool = False  # pad/bos/unknown tokens inside the generation


class RoleTagger(Protocol):
    name: str

    def tag(self, token_ids: list[int], prompt_len: int, tokenizer) -> TagResult: ...


class TaggerError(UserError, ValueError):
    """The tagger cannot work with this tokenizer (e.g. it has no decision tokens)."""


def _special(tokenizer, attr: str) -> int | None:
    return getattr(tokenizer, attr, None)


class SpecialTokenTagger:
    """Decisions are single special tokens (by default the format's [STOP] and [RESAMPLE])."""

    name = "special_tokens"

    def __init__(self, stop_token: str = "[STOP]", resample_token: str = "[RESAMPLE]"):
        self.stop_token, self.resample_token = stop_token, resample_token

    def ids(self, tokenizer) -> dict[int, str]:
        vocab = tokenizer.get_vocab()
        if self.stop_token not in vocab or self.resample_token not in vocab:
            have = decision_token_ids(tokenizer)
            raise TaggerError(
                f"tokenizer has no {self.stop_token}/{self.resample_token} tokens"
                + (
                    ""
                    if have
                    else ": this checkpoint does not use DS-Lens' decision tokens; "
                    "use the lexical-marker tagger for natural-language traces"
                )
            )
        return {vocab[self.stop_token]: STOP, vocab[self.resample_token]: RESAMPLE}

    def tag(self, token_ids, prompt_len, tokenizer) -> TagResult:
        dec = self.ids(tokenizer)
        other = end_of_turn_ids(tokenizer)  # eos and the generation config's end ids
        odd = {
            i
            for i in (
                _special(tokenizer, "pad_token_id"),
                _special(tokenizer, "bos_token_id"),
                _special(tokenizer, "unk_token_id"),
            )
            if i is not None
        } - other
        n_vocab = len(tokenizer)
        roles, decisions, unexpected = [], [], False
        for pos, t in enumerate(token_ids):
            if pos < prompt_len:
                roles.append("prompt")
            elif t in dec:
                roles.append("decision")
                decisions.append((pos, pos + 1, dec[t]))
            elif t in other:
                roles.append("other")
            elif t in odd or not 0 <= t < n_vocab:
                roles.append("other")
                unexpected = True
            else:
                roles.append("sampling")
        return TagResult(tuple(roles), tuple(decisions), unexpected)


SPANS = ("marker", "sentence")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n|\d")
DEFAULT_RESAMPLE_MARKERS = ("Let me recompute", "I made a mistake", "I'll go back and check", "Wait")
DEFAULT_STOP_MARKERS: tuple[str, ...] = ()  # by default the end-of-sequence token is STOP


def token_char_spans(token_ids: list[int], tokenizer, start: int) -> tuple[str, list[tuple[int, int]]]:
    """Decode token_ids[start:] and return (text, per-token (char_start, char_end) in that text).

    Uses the fast tokenizer's offsets when re-encoding the text gives back the same ids; otherwise
    decodes prefixes one token at a time (exact for any tokenizer, quadratic but only in the
    generation's length).
    """
    ids = list(token_ids[start:])
    text = tokenizer.decode(ids, skip_special_tokens=False)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids:
            return text, [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError):
        pass
    spans, prev = [], 0
    for i in range(len(ids)):
        cur = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False))
        cur = max(cur, prev)
        spans.append((prev, cur))
        prev = cur
    return text, spans


class LexicalMarkerTagger:
    """Decisions are marker phrases in the decoded text (the paper's lexical markers).

    A resample marker opens a new attempt; a stop marker, or the end of the generation (eos or the
    chat template's end-of-turn token) when `eos_is_stop`, is the STOP decision. Matching is
    case-insensitive on word boundaries; a token is a decision token when its characters overlap
    the decision span: the marker itself (`span="marker"`) or the marker's sentence, up to the next
    `.`, `!`, `?`, line break or digit (`span="sentence"`, the chat default).
    """

    name = "lexical_markers"

    def __init__(
        self,
        resample_markers=DEFAULT_RESAMPLE_MARKERS,
        stop_markers=DEFAULT_STOP_MARKERS,
        eos_is_stop: bool = True,
        span: str = "marker",
    ):
        self.resample_markers = tuple(m for m in resample_markers if m.strip())
        self.stop_markers = tuple(m for m in stop_markers if m.strip())
        if not self.resample_markers:
            raise TaggerError("at least one resample marker is needed")
        if span not in SPANS:
            raise TaggerError(f"span must be one of {SPANS}, got {span!r}")
        self.eos_is_stop, self.span = eos_is_stop, span

    @staticmethod
    def _sentence_end(text: str, c1: int) -> int:
        """The end of the sentence a marker ending at c1 starts: just after the next . ! ? (the
        marker's own trailing punctuation included), or before the next line break or digit (the
        numbers are the next attempt's work: in "Wait, 12 times 34 is 408." the answer 408 belongs
        to the revision, not to the decision)."""
        m = _SENTENCE_END.search(text, c1 - 1 if c1 and text[c1 - 1] in ".!?" else c1)
        if m is None:
            return len(text)
        if text[m.start()] in ".!?":
            return m.end()
        end = m.start()  # before a line break or digit: without the spaces (a token " 408" is the attempt's)
        while end > c1 and text[end - 1].isspace():
            end -= 1
        return end

    def _pattern(self, markers) -> re.Pattern | None:
        if not markers:
            return None
        alts = "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
        return re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)

    def tag(self, token_ids, prompt_len, tokenizer) -> TagResult:
        ids = list(token_ids)
        roles = ["prompt"] * prompt_len + ["sampling"] * (len(ids) - prompt_len)
        eos = getattr(tokenizer, "eos_token_id", None)
        ends = end_of_turn_ids(tokenizer)
        odd = {getattr(tokenizer, a, None) for a in ("pad_token_id", "bos_token_id", "unk_token_id")}
        odd.discard(None)
        odd -= ends
        n_vocab = len(tokenizer)
        unexpected = False
        # the first end-of-sequence ends the generation: later text is trailing, never a decision
        first_eos = next((p for p in range(prompt_len, len(ids)) if ids[p] in ends), len(ids))
        for pos in range(prompt_len, len(ids)):
            if ids[pos] in ends:
                roles[pos] = "other"
            elif ids[pos] in odd or not 0 <= ids[pos] < n_vocab:
                roles[pos] = "other"
                unexpected = True
        ids = [t if 0 <= t < n_vocab else (eos if eos is not None else 0) for t in ids]
        text, spans = token_char_spans(ids[:first_eos], tokenizer, prompt_len)
        marks: list[tuple[int, int, str]] = []
        for verdict, pat in (
            (RESAMPLE, self._pattern(self.resample_markers)),
            (STOP, self._pattern(self.stop_markers)),
        ):
            if pat is not None:
                marks += [(m.start(), m.end(), verdict) for m in pat.finditer(text)]
        marks.sort()
        # markers separated only by spaces/punctuation ("Wait, let me recompute") are one decision
        merged: list[list] = []
        for c0, c1, verdict in marks:
            if merged and c0 >= merged[-1][1] and not re.search(r"\w", text[merged[-1][1] : c0]):
                merged[-1][1] = max(merged[-1][1], c1)
                if verdict == STOP:
                    merged[-1][2] = STOP
            elif not merged or c0 >= merged[-1][1]:
                merged.append([c0, c1, verdict])
        if self.span == "sentence":
            for m in merged:
                m[1] = max(m[1], self._sentence_end(text, m[1]))
            # a sentence that swallowed the next marker is one decision (STOP if either says so)
            joined: list[list] = []
            for m in merged:
                if joined and m[0] < joined[-1][1]:
                    joined[-1][1] = max(joined[-1][1], m[1])
                    joined[-1][2] = STOP if STOP in (joined[-1][2], m[2]) else RESAMPLE
                else:
                    joined.append(m)
            merged = joined
        decisions: list[tuple[int, int, str]] = []
        for c0, c1, verdict in merged:
            toks = [prompt_len + i for i, (s, e) in enumerate(spans) if s < c1 and e > c0 and e > s]
            if not toks or (decisions and toks[0] < decisions[-1][1]):
                continue
            decisions.append((toks[0], toks[-1] + 1, verdict))
            for p in range(toks[0], toks[-1] + 1):
                roles[p] = "decision"
        if self.eos_is_stop and first_eos < len(ids) and not (decisions and decisions[-1][2] == STOP):
            decisions.append((first_eos, first_eos + 1, STOP))
            roles[first_eos] = "decision"
        return TagResult(tuple(roles), tuple(decisions), unexpected)
