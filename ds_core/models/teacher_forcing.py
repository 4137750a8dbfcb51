"""Teacher forcing: one model's log-probabilities on fixed transcripts, no sampling.

`score(ckpt, transcripts)` runs left-padded batches through the model under the model lock and
returns, per transcript, log p(token_t | tokens_<t) and the probabilities of [STOP]/[RESAMPLE]
at every position (NaN for a tokenizer without them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ds_core.episodes.tokenizer import decision_token_ids
from ds_core.errors import UserError
from ds_core.models.locks import MODEL_LOCK
from ds_core.models.model import context_length


class TeacherForcingError(UserError, ValueError):
    """A transcript that cannot be scored by this model (empty, too long, ids outside its vocabulary)."""


@dataclass(frozen=True)
class TokenScores:
    """One model on one transcript, per position t: logp[t] = log p(token_t | tokens_<t) (NaN at
    t = 0), p_stop[t] / p_resample[t] = the probability of [STOP] / [RESAMPLE] as token t (NaN
    when the tokenizer has no decision tokens)."""

    logp: tuple[float, ...]
    p_stop: tuple[float, ...]
    p_resample: tuple[float, ...]


def score(ckpt, transcripts: Sequence[Sequence[int]], batch_size: int = 16) -> tuple[TokenScores, ...]:
    """Teacher-force every transcript (token ids) through `ckpt`'s model: one left-padded forward
    pass per batch, no sampling. TeacherForcingError for ids outside the model or longer than its context."""
    model = ckpt.model
    ctx = context_length(model)
    vocab = int(model.get_input_embeddings().num_embeddings)
    seqs = [[int(t) for t in s] for s in transcripts]
    for s in seqs:
        if not s:
            raise TeacherForcingError("an empty transcript cannot be scored")
        if len(s) > ctx:
            raise TeacherForcingError(f"a transcript of {len(s)} tokens does not fit the model's context of {ctx}")
        if max(s) >= vocab or min(s) < 0:
            raise TeacherForcingError(f"the transcript has token ids outside the model's vocabulary of {vocab}")
    dec = decision_token_ids(ckpt.tokenizer) or {}
    stop_id, res_id = dec.get("STOP"), dec.get("RESAMPLE")
    pad = ckpt.tokenizer.pad_token_id if ckpt.tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out: list[TokenScores] = []
    nan = float("nan")
    for b0 in range(0, len(seqs), batch_size):
        batch = seqs[b0 : b0 + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, s in enumerate(batch):
            ids[r, width - len(s) :] = torch.tensor(s)
            mask[r, width - len(s) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with MODEL_LOCK, torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts columns 1..
            tok = lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).double().cpu()
            ps = lp[..., stop_id].exp().double().cpu() if stop_id is not None else None
            pr = lp[..., res_id].exp().double().cpu() if res_id is not None else None
        for r, s in enumerate(batch):
            off = width - len(s)  # token t of s sits in column off + t; predicted at off + t - 1
            sl = slice(off, width - 1)
            logp = (nan,) + tuple(float(x) for x in tok[r, sl])
            p_s = (nan,) + tuple(float(x) for x in ps[r, sl]) if ps is not None else (nan,) * len(s)
            p_r = (nan,) + tuple(float(x) for x in pr[r, sl]) if pr is not None else (nan,) * len(s)
            out.append(TokenScores(logp, p_s, p_r))
    return tuple(out)
