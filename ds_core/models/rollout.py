"""Batched rollout: sample self-correction episodes for many problems at once with a KV cache.

    episodes = rollout(ckpt.model, ckpt.tokenizer, ckpt.format, problems, SamplingConfig(), seed=0)

Every episode draws its random numbers from its own stream, seeded by (seed, index), so the same
seed gives the same episodes whatever the batch size or the other problems in the batch (up to
float rounding of padded batches, which does not change a sampled token in practice). A row stops
at [STOP], at end-of-sequence, at the retry cap (RESAMPLE after `max_attempts` attempts) or at its
token budget (flagged `truncated`). Finished rows leave the batch so the cache shrinks as it goes.
Rows with the same prefix share one prefill, and on llama models its cache too
(ds_core.models.shared_prefix: attention reads the shared part once per prefix).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch

from ds_core.episodes.episode import Episode
from ds_core.episodes.tasks import Problem
from ds_core.episodes.tokenizer import decision_token_ids, end_of_turn_ids
from ds_core.models.kvcache import GrowingCache
from ds_core.models.locks import MODEL_LOCK
from ds_core.models.model import context_length
from ds_core.models.shared_prefix import SharedPrefix, attention_switched
from ds_core.models.shared_prefix import supports as supports_shared_prefix

from .sampling import Prefix, RolloutError, SamplingConfig


def budget(fmt, problem: Problem | None, cfg: SamplingConfig) -> int:
    """Token budget of one episode: explicit max_new_tokens, else the format's budget."""
    if cfg.max_new_tokens is not None:
        return cfg.max_new_tokens
    return fmt.token_budget(problem, cfg.max_attempts)


def prompt_prefix(fmt, tokenizer, problem: Problem) -> Prefix:
    ids = fmt.prompt_ids(tokenizer, problem)
    return Prefix(problem, tuple(ids), len(ids))


def _sample(logits: torch.Tensor, u: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Inverse-CDF sampling with one uniform per row (temperature, nucleus)."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1:
        sp, si = probs.sort(dim=-1, descending=True)
        drop = (sp.cumsum(-1) - sp) >= cfg.top_p
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, si, sp)
    cdf = probs.cumsum(-1)
    u = u.unsqueeze(-1) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # never a zero-probability token
    return idx.clamp_(max=logits.shape[-1] - 1)


@torch.no_grad()
def rollout(
    model,
    tokenizer,
    fmt,
    requests: Sequence[Problem | Prefix],
    cfg: SamplingConfig | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    streams: Sequence[str | int] | None = None,
    compact_at: float = 0.0,
    until_verdict: bool = False,
    verdict: Callable[[int, list[int]], tuple[int, str | int | None]] | None = None,
) -> list[Episode]:
    """Sample one episode per request. `progress(k)` is called as k more episodes finish.

    Episode i draws its random numbers from the stream (seed, streams[i]); streams default to
    the request's index. Give explicit streams to batch several independent runs together.
    `compact_at`: finished rows leave the batch's cache once they are more than this share of the
    batch (0: at once). A compaction copies the cache; many short rows that finish one by one (the
    continuations behind Q-values) run faster with 0.25. The sampled tokens do not depend on it
    beyond float rounding of the batch's matrix products. `until_verdict`: a row also ends at its
    next [RESAMPLE] below the retry cap (the caller writes what follows the verdict).
    `verdict(i, ids)`: called when request i's row samples [STOP] or [RESAMPLE] (`ids`: its whole
    transcript, the sampled verdict last); returns (the verdict token to write instead, the stream
    the row goes on from, or None to end the row there). A row that goes on draws from that stream
    with a fresh token budget, exactly as a new call with its transcript as the prefix would: many
    rounds of "sample to the next verdict, write another" run in one call, no prefill repeated.
    """
    if not 0 <= compact_at < 1:
        raise RolloutError(f"compact_at must be in [0, 1), got {compact_at!r}")
    cfg = cfg or SamplingConfig()
    streams = list(range(len(requests))) if streams is None else list(streams)
    if len(streams) != len(requests):
        raise RolloutError(f"{len(streams)} streams for {len(requests)} requests")
    prefixes = [r if isinstance(r, Prefix) else prompt_prefix(fmt, tokenizer, r) for r in requests]
    ctx = context_length(model)
    for p in prefixes:
        if len(p.ids) >= ctx:
            raise RolloutError(f"a prompt of {len(p.ids)} tokens does not fit the model's context of {ctx}")
        if not p.ids:
            raise RolloutError("an empty prompt cannot be continued")
    budgets = [min(budget(fmt, p.problem, cfg), ctx - len(p.ids)) for p in prefixes]
    out: list[Episode | None] = [None] * len(prefixes)
    # batch rows of similar length together: fewer wasted steps and less padding
    order = sorted(range(len(prefixes)), key=lambda i: (len(prefixes[i].ids) + budgets[i], i))
    for b0 in range(0, len(order), cfg.batch_size):
        rows = order[b0 : b0 + cfg.batch_size]
        with MODEL_LOCK:  # another session may be attributing with this model (ds_core.models.locks)
            batch = _rollout_batch(
                model,
                tokenizer,
                fmt,
                [prefixes[i] for i in rows],
                [budgets[i] for i in rows],
                [streams[i] for i in rows],
                cfg,
                seed,
                progress,
                compact_at,
                until_verdict,
                None if verdict is None else (lambda r, ids, _rows=rows: verdict(_rows[r], ids)),
            )
        for i, ep in zip(rows, batch):
            out[i] = ep
    return out  # type: ignore[return-value]


def _cache_arg(model) -> str:
    """transformers 5.x names the KV cache `cache`; older model classes call it `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(outp):
    c = getattr(outp, "cache", None)
    return c if c is not None else outp.past_key_values


def _rollout_batch(
    model,
    tokenizer,
    fmt,
    prefixes,
    budgets,
    streams,
    cfg,
    seed,
    progress,
    compact_at=0.0,
    until_verdict=False,
    verdict=None,
):
    device = next(model.parameters()).device
    dec = decision_token_ids(tokenizer) or {}
    stop_id, resample_id = dec.get("STOP"), dec.get("RESAMPLE")
    # eos, the generation config's eos ids and the chat template's end-of-turn tokens
    eos_ids = end_of_turn_ids(tokenizer, getattr(model, "generation_config", None))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    n = len(prefixes)
    rngs = [random.Random(f"ds-lens-rollout:{seed}:{s}") for s in streams]
    generated: list[list[int]] = [[] for _ in range(n)]
    used = [0] * n  # tokens generated before the row's current budget began (a `verdict` restart)
    ctx = context_length(model)
    # a prefix may already hold attempts: they count toward the retry cap
    resamples = [sum(1 for t in p.ids[p.prompt_len :] if t == resample_id) for p in prefixes]
    truncated = [False] * n
    # rows with the same prefix (continuations of one transcript) share one prefill: the prompt is
    # run once per distinct prefix and its cache copied to the rows (batches without repeats run as before)
    first: dict[tuple, int] = {}
    distinct, of_row = [], []
    for p in prefixes:
        of_row.append(first.setdefault(tuple(p.ids), len(distinct)))
        if of_row[-1] == len(distinct):
            distinct.append(p)
    width = max(len(p.ids) for p in distinct)
    ids = torch.full((len(distinct), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(distinct), width), dtype=torch.long)
    for r, p in enumerate(distinct):
        ids[r, width - len(p.ids) :] = torch.tensor(p.ids)
        mask[r, width - len(p.ids) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    outp = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        use_cache=True,
        logits_to_keep=1,
        **{_cache_arg(model): GrowingCache()},
    )
    cache, logits = _cache_of(outp), outp.logits[:, -1]
    next_pos = pos[:, -1] + 1
    shared = None  # the distinct prefixes' cache, once each (ds_core.models.shared_prefix)
    if len(distinct) < n:
        sel = torch.tensor(of_row, device=device)
        if supports_shared_prefix(model):
            shared, cache = SharedPrefix.from_prefill(cache, mask, sel), GrowingCache()
        else:
            cache.batch_select_indices(sel)
        logits, next_pos = logits[sel], next_pos[sel]
        mask = None if shared is not None else mask[sel]
    extra = {} if shared is None else {"ds_lens_prefix": shared}
    slots: list[int | None] = list(range(n))  # batch row -> episode row (None: finished, awaiting compaction)
    live = n
    # decoding steps only: the prefill above ran with the model's own attention
    with attention_switched(model) if shared is not None else nullcontext():
        while live:
            u = torch.tensor(
                [rngs[r].random() if r is not None else 0.0 for r in slots], dtype=torch.float32, device=device
            )
            tok = _sample(logits, u, cfg).tolist()
            finished = 0
            for j, r in enumerate(slots):
                if r is None:
                    tok[j] = pad_id
                    continue
                t = int(tok[j])
                if verdict is not None and t in (stop_id, resample_id):
                    t, stream = verdict(r, list(prefixes[r].ids) + generated[r] + [t])
                    tok[j] = t
                    generated[r].append(t)
                    if stream is None:
                        slots[j], finished = None, finished + 1
                        continue
                    resamples[r] += t == resample_id
                    rngs[r] = random.Random(f"ds-lens-rollout:{seed}:{stream}")
                    used[r] = len(generated[r])
                    total = len(prefixes[r].ids) + used[r]
                    budgets[r] = min(budget(fmt, prefixes[r].problem, cfg), ctx - total)
                    if budgets[r] <= 0 or total >= ctx:
                        slots[j], finished, truncated[r] = None, finished + 1, True
                    continue
                generated[r].append(t)
                done = False
                if t == stop_id or t in eos_ids:
                    done = True
                elif t == resample_id:
                    resamples[r] += 1
                    done = until_verdict or resamples[r] >= cfg.max_attempts
                if not done and len(generated[r]) - used[r] >= budgets[r]:
                    done, truncated[r] = True, True
                if done:
                    slots[j], finished = None, finished + 1
            live -= finished
            if progress and finished:
                progress(finished)
            if not live:
                break
            # drop finished rows from the cache; with `compact_at` > 0 only once they are that share of
            # the batch (a compaction copies the whole cache: about the cost of a decoding step)
            if finished and len(slots) - live > compact_at * len(slots):
                keep = [j for j, r in enumerate(slots) if r is not None]
                sel = torch.tensor(keep, device=device)
                cache.batch_select_indices(sel)
                if shared is not None:
                    shared.select(sel)
                else:
                    mask = mask[sel]
                next_pos = next_pos[sel]
                tok = [tok[j] for j in keep]
                slots = [slots[j] for j in keep]
            if shared is None:  # with a shared prefix its padding is in `shared` and there is no mask
                mask = torch.cat([mask, torch.ones((len(slots), 1), dtype=mask.dtype, device=device)], dim=1)
            inp = torch.tensor(tok, dtype=torch.long, device=device).unsqueeze(-1)
            outp = model(
                input_ids=inp,
                attention_mask=mask,
                position_ids=next_pos.unsqueeze(-1),
                use_cache=True,
                **{_cache_arg(model): cache},
                **extra,
            )
            cache, logits = _cache_of(outp), outp.logits[:, -1]
            next_pos = next_pos + 1
    episodes = []
    for r, p in enumerate(prefixes):
        episodes.append(
            fmt.parse(
                p.problem,
                list(p.ids) + generated[r],
                p.prompt_len,
                tokenizer,
                truncated=truncated[r],
                max_attempts=cfg.max_attempts,
            )
        )
    return episodes
