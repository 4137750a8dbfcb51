"""The text format: natural-language episodes of any causal LM, chat models included.

Prompting: through the tokenizer's chat template when it has one (a system prompt and a user
instruction, both editable), else a plain template. Answers: `\\boxed{N}`, "the answer is N", a
final "= N", else the last number (the order is configurable); the text after a `</think>` block is
read first. Decisions: the paper's lexical markers (ds_core.episodes.roles.LexicalMarkerTagger); for
chat models a decision span is the marker's sentence, and the end of the turn is STOP.
"""

from __future__ import annotations

import re

from ds_core.episodes.episode import AttemptReading, Episode, parse_episode
from ds_core.episodes.roles import LexicalMarkerTagger
from ds_core.episodes.tasks import Problem
from ds_core.errors import UserError

PLAIN_TEMPLATE = "Question: What is {a} {word} {b}? Answer:"
SYSTEM_PROMPT = (
    "You are a careful assistant. Solve the problem step by step, then check your result. If the "
    'check fails, write "Wait, let me recompute." and solve it again.'
)
USER_TEMPLATE = "What is {a} {word} {b}? Work it out step by step and check it. End with a line: The answer is N."

_NUM = r"-?\d[\d,]*"
ANSWER_READERS = {  # name -> the pattern whose LAST match is the answer
    "boxed": re.compile(r"\\boxed\{\s*(" + _NUM + r")\s*\}"),
    "answer_is": re.compile(
        r"answer\s*(?:is|:|=)\s*\**\s*(" + _NUM + r")|(" + _NUM + r")\s*is\s*the\s*(?:final\s*)?answer", re.IGNORECASE
    ),
    "equals": re.compile(r"=\s*(" + _NUM + r")\s*\.?\s*$", re.MULTILINE),
    "last_number": re.compile("(" + _NUM + ")"),
}
DEFAULT_READERS = ("boxed", "answer_is", "equals", "last_number")
THINK_END = "</think>"


class FormatError(UserError, ValueError):
    """Text-format settings that cannot be used (an unknown reader, a broken template, a DS checkpoint)."""


def _number(text: str) -> tuple[int | None, bool]:
    """(value, readable) of a matched number: None for negatives and absurd lengths."""
    digits = text.rstrip(",").replace(",", "")
    if not digits or digits == "-":
        return None, False
    try:
        value = int(digits)
    except ValueError:
        return None, False
    return (value if value >= 0 and len(digits) <= 40 else None), True


class TextFormat:
    """Natural-language prompts for any causal LM; decisions by lexical markers."""

    name = "text"
    writes_traces = False

    def __init__(
        self,
        tagger: LexicalMarkerTagger | None = None,
        template: str = PLAIN_TEMPLATE,
        *,
        chat: bool = False,
        system: str | None = SYSTEM_PROMPT,
        instruction: str = USER_TEMPLATE,
        readers: tuple[str, ...] = DEFAULT_READERS,
    ):
        unknown = [r for r in readers if r not in ANSWER_READERS]
        if unknown or not readers:
            raise FormatError(f"unknown answer readers {unknown}; choose from {', '.join(ANSWER_READERS)}")
        for name, t in (("template", template), ("instruction", instruction)):
            try:
                t.format(a=1, b=2, word="times", op="*")
            except (KeyError, IndexError, ValueError) as e:
                raise FormatError(
                    f"the {name} {t!r} is not a template of {{a}}, {{b}}, {{word}}, {{op}}: {e}"
                ) from None
        self.tagger = tagger or LexicalMarkerTagger()
        self.template, self.chat, self.system, self.instruction = template, chat, system, instruction
        self.readers = tuple(readers)

    @classmethod
    def for_tokenizer(cls, tokenizer, **kw) -> TextFormat:
        """Chat prompting and sentence-long decision spans when the tokenizer has a chat template."""
        if getattr(tokenizer, "chat_template", None):
            kw.setdefault("tagger", LexicalMarkerTagger(span="sentence"))
            return cls(chat=True, **kw)
        return cls(**kw)

    def settings(self) -> dict:
        t = self.tagger
        return {
            "chat": self.chat,
            "template": self.template,
            "system": self.system,
            "instruction": self.instruction,
            "readers": list(self.readers),
            "resample_markers": list(getattr(t, "resample_markers", ())),
            "stop_markers": list(getattr(t, "stop_markers", ())),
            "eos_is_stop": getattr(t, "eos_is_stop", None),
            "span": getattr(t, "span", None),
        }

    def key(self) -> dict | None:
        """The settings when they differ from the default text format of the same kind (plain or
        chat), else None: a run with a custom prompt or markers is stored under its own key."""
        default = TextFormat(tagger=LexicalMarkerTagger(span="sentence") if self.chat else None, chat=self.chat)
        s = self.settings()
        return None if s == default.settings() else s

    # --- writing ---
    @staticmethod
    def _fill(template: str, problem: Problem) -> str:
        word = "times" if problem.op == "*" else "plus"
        return template.format(a=problem.a, b=problem.b, word=word, op=problem.op)

    def messages(self, problem: Problem) -> list[dict]:
        """The chat messages of a problem: the system prompt (when set) and the user instruction."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self._fill(self.instruction, problem)}]

    def prompt_text(self, problem: Problem) -> str:
        """The plain prompt, or (chat) the user instruction; prompt_ids renders the chat template."""
        return self._fill(self.instruction if self.chat else self.template, problem)

    def prompt_ids(self, tokenizer, problem: Problem) -> list[int]:
        if self.chat and getattr(tokenizer, "chat_template", None):
            out = tokenizer.apply_chat_template(
                self.messages(problem), add_generation_prompt=True, tokenize=True, return_dict=True
            )
            return list(out["input_ids"])
        return list(tokenizer(self.prompt_text(problem), add_special_tokens=True)["input_ids"])

    def token_budget(self, problem: Problem | None, max_attempts: int) -> int:
        return 256 * max_attempts

    def min_tokens(self, tokenizer, problem: Problem) -> int:
        """The prompt and one token: a free-text answer has no minimum length."""
        return len(self.prompt_ids(tokenizer, problem)) + 1

    # --- reading ---
    def attempt_text(self, ids, tokenizer) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=True)

    def _read(self, text: str) -> tuple[int | None, bool]:
        for name in self.readers:
            found = [next(g for g in m.groups() if g) for m in ANSWER_READERS[name].finditer(text)]
            if found:
                return _number(found[-1])
        return None, False

    def read_attempt(self, text: str, problem: Problem | None) -> AttemptReading:
        """The answer of an attempt (module docstring); after a `</think>` block its tail first."""
        parts = text.rsplit(THINK_END, 1) if THINK_END in text else [text]
        for part in reversed(parts):
            value, readable = self._read(part)
            if readable:
                return AttemptReading(value, False, None)
        return AttemptReading(None, True, None)

    def parse(self, problem, token_ids, prompt_len, tokenizer, **kw) -> Episode:
        return parse_episode(problem, token_ids, prompt_len, tokenizer, self, **kw)


def customized(fmt, tokenizer, *, system=None, instruction=None, resample_markers=None, readers=None) -> TextFormat:
    """`fmt` (a TextFormat) with the given settings replaced; None keeps a setting. `system=""`
    drops the system prompt; `instruction` is the user message (chat) or the plain template.
    ValueError for a format that is not a TextFormat or a bad setting."""
    if not isinstance(fmt, TextFormat):
        raise ValueError(
            "prompt and marker settings apply to text-format checkpoints; this one uses DS-Lens' own format"
        )
    kw: dict = {"system": fmt.system, "readers": fmt.readers}
    kw["instruction" if fmt.chat else "template"] = fmt.instruction if fmt.chat else fmt.template
    if system is not None:
        kw["system"] = system or None
    if instruction is not None:
        kw["instruction" if fmt.chat else "template"] = instruction
    if readers is not None:
        kw["readers"] = tuple(
            r.strip() for r in (readers.split(",") if isinstance(readers, str) else readers) if r.strip()
        )
    t = fmt.tagger
    markers = t.resample_markers if resample_markers is None else resample_markers
    if isinstance(markers, str):
        markers = [m.strip() for m in markers.split(",")]
    kw["tagger"] = LexicalMarkerTagger(markers, t.stop_markers, t.eos_is_stop, t.span)
    return TextFormat.for_tokenizer(tokenizer, **kw) if fmt.chat else TextFormat(**kw)


def with_text_settings(ckpt, **settings):
    """A copy of a loaded checkpoint (sharing its model) whose text format has `settings`
    (customized's keywords) applied."""
    import dataclasses

    return dataclasses.replace(ckpt, format=customized(ckpt.format, ckpt.tokenizer, **settings))
