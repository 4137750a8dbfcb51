"""Forcing a verdict into a transcript: what follows a decision when the other verdict is written.

With DS-Lens' tokens the verdict is one token ([STOP] / [RESAMPLE]). A text model's decisions are
sentences found by the format's resample markers: a forced revision is a revision sentence the
tagger reads as one ("Wait, let me check that again.", else one built from each marker), a forced
stop is the end of the turn (the chat template's end-of-turn token) where the model began to revise.
The explorer's counterfactuals and the Q-values (ds_core.analysis.decisions) both use these.
"""

from __future__ import annotations

from ds_core.episodes.episode import RESAMPLE
from ds_core.errors import UserError

REVISION_SENTENCE = "Wait, let me check that again."


class ForcingError(UserError, ValueError):
    pass


def end_of_turn_token(ckpt) -> int:
    """The token that ends the model's turn: the chat template's end of turn before a bare eos."""
    from ds_core.episodes.tokenizer import END_OF_TURN_TOKENS, end_of_turn_ids

    tok = ckpt.tokenizer
    ids = end_of_turn_ids(tok, getattr(ckpt.model, "generation_config", None))
    if not ids:
        raise ForcingError("the tokenizer has no end-of-sequence or end-of-turn token to end the turn with")
    by_name = {tok.convert_ids_to_tokens(int(i)): int(i) for i in ids}
    for name in END_OF_TURN_TOKENS:
        if name in by_name:
            return by_name[name]
    return int(tok.eos_token_id) if tok.eos_token_id in ids else min(ids)


def revision_ids(ckpt, ep, d) -> tuple[list[int], str]:
    """The transcript up to decision `d` with a revision sentence appended that the format's
    tagger reads as RESAMPLE: 'Wait, let me check that again.', else one built from each of its
    resample markers in turn. (ids, the sentence)."""
    fmt, tok = ckpt.format, ckpt.tokenizer
    head = list(ep.token_ids[: d.start])
    before = tok.decode(head[ep.prompt_len :])
    sep = "" if not before or before[-1].isspace() else " "
    markers = getattr(getattr(fmt, "tagger", None), "resample_markers", ())
    candidates = [REVISION_SENTENCE] + [f"{m[:1].upper()}{m[1:]}, let me check that again." for m in markers]
    eot = end_of_turn_token(ckpt)
    for sentence in candidates:
        ids = head + tok.encode(sep + sentence, add_special_tokens=False)
        probe = fmt.parse(ep.problem, ids + [eot], ep.prompt_len, tok)
        if any(x.verdict == RESAMPLE and x.end > d.start for x in probe.decisions):
            return ids, sentence
    raise ForcingError(
        "none of the revision sentences tried is read as a revision by the resample markers "
        f"({', '.join(markers) or 'none'}): add a marker such as 'wait' under 'Prompt and markers'"
    )
