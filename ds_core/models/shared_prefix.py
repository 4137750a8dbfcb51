"""Cascade attention for rows that continue the same transcripts (the continuations behind Q-values).

A batch of continuations holds N rows per transcript. With an ordinary KV cache every row keeps its
own copy of its transcript's keys and values, and at every decoding step attention reads all of
them: on the long test sets that memory traffic is half of a regret run (bench/RESULTS.md). Here the
transcripts' cache is kept once per distinct prefix (`SharedPrefix`, from the prefill), each row's
cache holds only what the row generated, and attention is computed in two parts merged by their
log-sum-exp: the prefix part as one matrix product per transcript (its rows' queries side by side,
the prefix read once), the suffix part per row. The result equals attention over the concatenated
cache up to float rounding.

It runs through transformers' attention interface (registered as `ATTENTION`), so it applies to
llama models (DS-Lens' checkpoints, SmolLM2), whose attention layers call that interface with the
rotary positions already in the cached keys; `supports(model)` says which (others keep SDPA). The model's
`_attn_implementation` is switched for the call and put back (`attention_switched`); the caller
holds the model lock.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION = "ds_lens_shared_prefix"
# architectures whose attention layers call the attention interface with cached, rotated keys and
# nothing else to apply (mistral, qwen2, qwen3 may pass a sliding window: left on SDPA)
SUPPORTED_TYPES = ("llama",)


@dataclass
class SharedPrefix:
    """The prefill's cache of the distinct prefixes and which of them each batch row continues."""

    keys: list[torch.Tensor]  # per layer (prefixes, kv heads, prefix length, head dim)
    values: list[torch.Tensor]
    valid: torch.Tensor  # (prefixes, prefix length) bool: False on left padding
    group: torch.Tensor  # (rows,) long: the prefix of each row
    slot: torch.Tensor = None  # (rows,) long: the row's place among its prefix's rows
    width: int = 0  # the most rows of one prefix

    def __post_init__(self):
        self._index()

    @classmethod
    def from_prefill(cls, cache, mask: torch.Tensor, of_row: torch.Tensor) -> SharedPrefix:
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        return cls(keys, values, mask.bool(), of_row)

    def _index(self):
        g = len(self.valid)
        one_hot = torch.nn.functional.one_hot(self.group, g)
        self.slot = (one_hot.cumsum(0) - 1).gather(1, self.group[:, None]).squeeze(1)
        self.width = int(one_hot.sum(0).max()) if len(self.group) else 0

    def select(self, rows: torch.Tensor) -> None:
        """Keep these batch rows (a compaction of the rows' own cache)."""
        self.group = self.group[rows]
        self._index()


def supports(model) -> bool:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "model_type", None) in SUPPORTED_TYPES and hasattr(cfg, "_attn_implementation")


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (rows, heads, 1, d); key/value: the rows' own cache (rows, kv heads, suffix, d); the
    prefixes' cache comes in `ds_lens_prefix`. Without it: transformers' SDPA attention."""
    sp: SharedPrefix | None = kwargs.pop("ds_lens_prefix", None)
    if sp is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    b, hq, q_len, d = query.shape
    if q_len != 1:  # rollout's decoding steps; a prefill runs with the model's own attention
        raise ValueError(f"shared-prefix attention decodes one token per row, got {q_len}")
    kp, vp = sp.keys[module.layer_idx], sp.values[module.layer_idx]
    g, hkv, lp, _ = kp.shape
    rq = hq // hkv  # the query heads of one kv head (grouped-query attention)
    scaling = d**-0.5 if scaling is None else scaling
    q = query.reshape(b, hkv, rq, d)
    # the prefix part: each prefix's rows side by side, one product per prefix and kv head
    qg = q.new_zeros(g, sp.width, hkv, rq, d)
    qg[sp.group, sp.slot] = q
    qg = qg.permute(0, 2, 1, 3, 4).reshape(g, hkv, sp.width * rq, d)
    s_p = (qg @ kp.transpose(-1, -2)).mul_(scaling)
    s_p = s_p.masked_fill_(~sp.valid[:, None, None, :], float("-inf"))
    s_p = s_p.reshape(g, hkv, sp.width, rq, lp).permute(0, 2, 1, 3, 4)[sp.group, sp.slot]  # (rows, hkv, rq, lp)
    s_s = (q @ key.transpose(-1, -2)).mul_(scaling)  # (rows, hkv, rq, suffix)
    m = torch.maximum(s_p.amax(-1, keepdim=True), s_s.amax(-1, keepdim=True))
    e_p, e_s = (s_p - m).exp_(), (s_s - m).exp_()
    den = e_p.sum(-1, keepdim=True) + e_s.sum(-1, keepdim=True)
    eg = e_p.new_zeros(g, sp.width, hkv, rq, lp)
    eg[sp.group, sp.slot] = e_p
    o_p = eg.permute(0, 2, 1, 3, 4).reshape(g, hkv, sp.width * rq, lp) @ vp
    o_p = o_p.reshape(g, hkv, sp.width, rq, d).permute(0, 2, 1, 3, 4)[sp.group, sp.slot]
    out = (o_p + e_s @ value) / den  # (rows, hkv, rq, d)
    return out.reshape(b, hq, q_len, d).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, shared_prefix_attention)


@contextmanager
def attention_switched(model):
    """The model's attention layers use `shared_prefix_attention` inside the block."""
    cfg = model.config
    before = cfg._attn_implementation
    cfg._attn_implementation = ATTENTION
    try:
        yield
    finally:
        cfg._attn_implementation = before
